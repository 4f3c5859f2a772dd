#!/bin/sh
# smoke.sh - `make bench-smoke`: the load generator against a freshly started
# wsfan on a free loopback port, a few seconds at a low rate. Passes only if
# every subscriber connected and joined, saw the warm-up, and every message
# arrived exactly once and in order (loadgen --check). Correctness only:
# no figure here is a speed and none is asserted.
set -eu
BIN=${WSFAN_BIN:-build/wsfan}
LOADGEN=${LOADGEN:-build/bench/loadgen}
PY=/usr/bin/python3
# Off for the load generator (see bench/run.sh), as variables.
export WSFAN_RATE_LIMIT=0 WSFAN_MAX_CONNECTIONS_PER_IP=0
out=$(mktemp -d)
port=$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN" --listen "127.0.0.1:$port" --workers 1 --log-level warn 2>"$out/wsfan.log" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$out"' EXIT INT TERM
i=0
until $PY -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2).close()" 2>/dev/null; do
    i=$((i + 1))
    if [ "$i" -ge 50 ] || ! kill -0 "$pid" 2>/dev/null; then
        echo "bench-smoke: wsfan did not start on 127.0.0.1:$port" >&2
        cat "$out/wsfan.log" >&2
        echo "bench-smoke: 0 passed, 1 failed"
        exit 1
    fi
    sleep 0.1
done
# 50 subscribers in one room and 40 in two more rooms with a publisher each:
# 200 messages/s for 2 s, then up to 3 s for the last ones to arrive.
if "$LOADGEN" --connect "127.0.0.1:$port" --server-pid "$pid" --src-addrs 2 --quiet --check \
        --subs 50 --rooms 1 --pubs 1 --rates 200 --duration 2 --drain 3 --max-seconds 30 >"$out/a.json" &&
   "$LOADGEN" --connect "127.0.0.1:$port" --server-pid "$pid" --src-addrs 2 --quiet --check \
        --subs 40 --rooms 2 --pubs 2 --rates 200 --duration 1 --drain 3 --max-seconds 30 >"$out/b.json"; then
    $PY - "$out/a.json" "$out/b.json" <<'PYEOF'
import json, sys
for path in sys.argv[1:]:
    for line in open(path):
        d = json.loads(line)
        if d["mode"] == "ladder":
            print("bench-smoke: %d subscribers in %d room(s): %d published, %d delivered of %d expected, "
                  "%d lost, %d duplicated, %d out of order, p99 %.2f ms"
                  % (d["subs"], d["rooms"], d["published"], d["received"], d["expected"], d["loss"],
                     d["dups"], d["order_violations"], d["lat_p99_us"] / 1000))
PYEOF
    echo "bench-smoke: 1 passed, 0 failed"
else
    cat "$out"/*.json >&2 || true
    cat "$out/wsfan.log" >&2
    echo "bench-smoke: 0 passed, 1 failed"
    exit 1
fi
