#!/usr/bin/env bash
# Runs the example: wsfan (the WebSockets, --auth jwt, memory engine) and the
# FastAPI app (uvicorn, 2 workers), until Ctrl-C or SIGTERM, which stops both.
# Secrets are made fresh for each run unless they are set already.
# APP_PORT (8000) and WSFAN_PORT (8080) choose the ports.
set -euo pipefail
cd "$(dirname "$0")"
wsfan_bin=${WSFAN_BIN:-../../build/wsfan}
app_port=${APP_PORT:-8000}
wsfan_port=${WSFAN_PORT:-8080}

export WSFAN_JWT_SECRET=${WSFAN_JWT_SECRET:-$(openssl rand -hex 32)}
export WSFAN_API_KEY=${WSFAN_API_KEY:-$(openssl rand -hex 24)}
export APP_SESSION_SECRET=${APP_SESSION_SECRET:-$(openssl rand -hex 32)}
export APP_WSFAN_API_URL=http://127.0.0.1:$wsfan_port
export APP_WSFAN_WS_URL=ws://127.0.0.1:$wsfan_port/ws

pids=()
trap 'exit 0' INT TERM
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT

# The page is served by the app, so wsfan must accept its origin.
"$wsfan_bin" --listen "127.0.0.1:$wsfan_port" --auth jwt --jwt-issuer fastapi-chat \
  --allowed-origins "http://127.0.0.1:$app_port,http://localhost:$app_port" &
pids+=($!)
/usr/bin/python3 -m uvicorn app:app --host 127.0.0.1 --port "$app_port" --workers 2 &
pids+=($!)
echo "fastapi-chat: open http://127.0.0.1:$app_port/ (users alice, bob, carol; password ${APP_DEMO_PASSWORD:-demo})"
wait -n  # one of them stopped: stop the other
