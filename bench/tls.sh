#!/bin/bash
# tls.sh - fan-out over wss:// against ws:// in one sitting (make bench-tls):
#
#     bench/tls.sh
#
# With the functions of bench/run.sh (sourced: same pinning, free ports,
# process control and ladder settings as `make bench`), one wsfan (--workers
# 1, pinned to $BENCH_SERVER_CPU) per run, plaintext or with --tls-cert (a
# self-signed P-256 certificate made here), and build/bench/loadgen (with
# --tls for the TLS runs, pinned to $BENCH_LOADGEN_CPU), alternating the two
# in each repeat and swapping their order every other repeat. Per run:
#   - the fan-out ladder of `make bench` (1,000 subscribers in one room, one
#     publisher, 100-byte messages, doubling rates then --bisect 3): the
#     highest rate without loss, deliveries/s and server CPU there;
#   - one step at a fixed rate (TLS_FIXED_RATE messages/s, default 200:
#     200,000 deliveries/s) for TLS_FIXED_SECONDS (3): the server's CPU for
#     the same work.
# Prints a Markdown table of the medians (for docs/benchmarks.md); the JSON
# lines go to bench/results/tls-<UTC stamp>.jsonl.
#
# Knobs (environment): TLS_REPEATS (3), TLS_FIXED_RATE (200),
# TLS_FIXED_SECONDS (3), and run.sh's BENCH_FANOUT_RATES, BENCH_STEP,
# BENCH_SERVER_CPU, BENCH_LOADGEN_CPU. Every load generator run has its own
# --max-seconds; loopback only.
set -euo pipefail

# shellcheck source=bench/run.sh
source "$(dirname "${BASH_SOURCE[0]}")/run.sh"  # cd to the repository; sets the EXIT trap

TREPEATS=${TLS_REPEATS:-3}
FIXED_RATE=${TLS_FIXED_RATE:-200}
FIXED_SECONDS=${TLS_FIXED_SECONDS:-3}
RES=$PWD/bench/results/tls-$STAMP.jsonl
[ -x "$LOADGEN" ] || { log "no load generator at $LOADGEN: make build/bench/loadgen"; exit 2; }

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/key.pem" \
    -out "$WORK/cert.pem" -days 1 -subj /CN=localhost 2>/dev/null

start_wsfan_tls() { # port
    taskset -c "$SCPU" "$WSFAN" --listen "127.0.0.1:$1" --workers 1 --log-level warn \
        --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem" >>"$WORK/wsfan-$1.log" 2>&1 &
    local pid=$!
    STARTED+=("$pid")
    PIDS=$pid KILL=$pid
    wait_port "$1" "$pid"
}

run_one() { # plain|tls repeat
    local port tls=()
    port=$(free_port)
    if [ "$1" = tls ]; then
        start_wsfan_tls "$port" || return 0
        tls=(--tls)
    else
        start_wsfan "$port" || return 0
    fi
    TAG=$1 loadgen tls-fanout wsfan "$2" --connect "127.0.0.1:$port" --server-pid "$PIDS" --subs 1000 \
        --rooms 1 --pubs 1 --size 100 --rates "$FANOUT_RATES" "${LADDER[@]}" --bisect 3 --max-seconds 120 \
        "${tls[@]}"
    TAG=$1 loadgen tls-fixed wsfan "$2" --connect "127.0.0.1:$port" --server-pid "$PIDS" --subs 1000 \
        --rooms 1 --pubs 1 --size 100 --rates "$FIXED_RATE" --duration "$FIXED_SECONDS" --drain 1 \
        --max-seconds 60 "${tls[@]}"
    stop $KILL
}

raise_nofile
log "results: $RES"
for r in $(seq "$TREPEATS"); do
    order="plain tls"
    [ $((r % 2)) = 1 ] || order="tls plain"
    for t in $order; do
        log "repeat $r: $t"
        run_one "$t" "$r"
    done
done
log "done in $(($(date +%s) - T0)) s"

$PY - "$RES" "$FIXED_RATE" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(values):
    return statistics.median(values) if values else float("nan")
out = {}
for t in ("plain", "tls"):
    summ = [r for r in rows if r.get("mode") == "summary" and r["label"].startswith(f"tls-fanout/{t}/")]
    fixed = [r for r in rows if r.get("mode") == "ladder" and r["label"].startswith(f"tls-fixed/{t}/")]
    out[t] = {
        "max_rate": med([r["max_ok_rate"] for r in summ]),
        "deliveries": med([r["delivered_per_s_at_max"] for r in summ]),
        "cpu_max": med([r["cpu_pct_at_max"] for r in summ]),
        "loadgen_max": med([r["loadgen_cpu_pct"] for r in rows if r.get("mode") == "ladder"
                            and any(r["label"] == m["label"] and r["offered_rate"] == m["max_ok_rate"] for m in summ)]),
        "cpu_fixed": med([r["server_cpu_pct"] for r in fixed]),
        "lost_fixed": sum(r["loss"] for r in fixed),
        "n": len(summ),
    }
p, t = out["plain"], out["tls"]
print(f"| | ws:// | wss:// | wss / ws |")
print(f"| --- | ---: | ---: | ---: |")
print(f"| highest rate without loss, messages/s (median of {p['n']} and {t['n']}) | {p['max_rate']:,.0f} | {t['max_rate']:,.0f} | {t['max_rate'] / p['max_rate']:.2f} |")
print(f"| deliveries/s there | {p['deliveries']:,.0f} | {t['deliveries']:,.0f} | {t['deliveries'] / p['deliveries']:.2f} |")
print(f"| server CPU there, % of one core | {p['cpu_max']:.0f} | {t['cpu_max']:.0f} | |")
print(f"| load generator CPU there, % of one core | {p['loadgen_max']:.0f} | {t['loadgen_max']:.0f} | |")
rate = int(sys.argv[2])
print(f"| server CPU at {rate} messages/s ({rate * 1000:,} deliveries/s), % of one core | {p['cpu_fixed']:.1f} | {t['cpu_fixed']:.1f} | {t['cpu_fixed'] / p['cpu_fixed']:.2f} |")
print(f"| messages lost at that rate | {p['lost_fixed']} | {t['lost_fixed']} | |")
EOF
