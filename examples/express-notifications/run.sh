#!/usr/bin/env bash
# Runs the example: a Redis of its own (unless REDIS_URL names one), wsfan on
# it (--redis, --auth jwt) and the Express server, until Ctrl-C or SIGTERM,
# which stops them all. The secret is made fresh unless it is set already.
# APP_PORT (3000), WSFAN_PORT (8080) and REDIS_PORT (6390) choose the ports.
set -euo pipefail
cd "$(dirname "$0")"
wsfan_bin=${WSFAN_BIN:-../../build/wsfan}
app_port=${APP_PORT:-3000}
wsfan_port=${WSFAN_PORT:-8080}
redis_port=${REDIS_PORT:-6390}

export WSFAN_JWT_SECRET=${WSFAN_JWT_SECRET:-$(openssl rand -hex 32)}
export APP_PORT=$app_port APP_WSFAN_WS_URL=ws://127.0.0.1:$wsfan_port/ws

pids=()
trap 'exit 0' INT TERM
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT

if [ -z "${REDIS_URL:-}" ]; then
  export REDIS_URL=redis://127.0.0.1:$redis_port
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --loglevel warning &
  pids+=($!)
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
"$wsfan_bin" --listen "127.0.0.1:$wsfan_port" --redis "$REDIS_URL" --auth jwt &
pids+=($!)
node server.mjs &
pids+=($!)
wait -n  # one of them stopped: stop the others
