#!/bin/bash
# tls.sh - fan-out over wss:// against ws:// in one sitting (make bench-tls):
#
#     bench/tls.sh
#
# With the scenarios of bench/run.sh (sourced: same pinning, ports, process
# control, ladders and callgrind step as `make bench`), one wsfan (--workers
# 1, pinned to $BENCH_SERVER_CPU) per run, plaintext or with --tls-cert (a
# self-signed P-256 certificate made here; BENCH_WSFAN_ARGS), and
# build/bench/loadgen (with --tls for the TLS runs: BENCH_LOADGEN_ARGS),
# alternating the two in each repeat and swapping their order every other
# repeat. Per repeat and side:
#   - the fan-out ladder of `make bench` (1,000 subscribers in one room, one
#     publisher, 100-byte messages, doubling rates then --bisect 3): the
#     highest rate without loss, the deliveries/s and the CPU there. On a
#     shared machine this is noisy, and over TLS the load generator (which
#     decrypts everything) may be the limit: read its CPU too;
#   - the callgrind step at TLS_PROFILE_RATE messages/s (10) for
#     TLS_PROFILE_SECONDS (10): instructions per delivery, the figure that
#     other processes on the machine do not move, and the top functions.
# Prints a Markdown table of the medians (for docs/benchmarks.md); the JSON
# lines go to bench/results/tls-<UTC stamp>.jsonl.
#
# Knobs (environment): TLS_REPEATS (3), TLS_PROFILE_RATE (10),
# TLS_PROFILE_SECONDS (10), and run.sh's BENCH_FANOUT_RATES, BENCH_STEP,
# BENCH_SERVER_CPU, BENCH_LOADGEN_CPU. Every load generator run has its own
# --max-seconds; loopback only.
set -euo pipefail

# shellcheck source=bench/run.sh
source "$(dirname "${BASH_SOURCE[0]}")/run.sh"  # cd to the repository; sets the EXIT trap

TREPEATS=${TLS_REPEATS:-3}
export BENCH_PROFILE_RATE=${TLS_PROFILE_RATE:-10} BENCH_PROFILE_SECONDS=${TLS_PROFILE_SECONDS:-10}
RES=$PWD/bench/results/tls-$STAMP.jsonl
[ -x "$LOADGEN" ] || { log "no load generator at $LOADGEN: make build/bench/loadgen"; exit 2; }

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/key.pem" \
    -out "$WORK/cert.pem" -days 1 -subj /CN=localhost 2>/dev/null

run_side() { # plain|tls repeat
    BENCH_WSFAN_ARGS="" BENCH_LOADGEN_ARGS=""
    if [ "$1" = tls ]; then
        BENCH_WSFAN_ARGS="--tls-cert $WORK/cert.pem --tls-key $WORK/key.pem" BENCH_LOADGEN_ARGS=--tls
    fi
    TAG=$1 scenario_fanout wsfan "$2"
    TAG=$1 scenario_profile "$2"
}

raise_nofile
log "results: $RES"
for r in $(seq "$TREPEATS"); do
    order="plain tls"
    [ $((r % 2)) = 1 ] || order="tls plain"
    for t in $order; do
        log "repeat $r: $t"
        run_side "$t" "$r"
    done
done
log "done in $(($(date +%s) - T0)) s"

$PY - "$RES" <<'REPORT'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(values):
    return statistics.median(values) if values else float("nan")
out = {}
for t in ("plain", "tls"):
    summ = [r for r in rows if r.get("mode") == "summary" and r["label"].startswith(f"fanout/{t}/")]
    at_max = [r for r in rows if r.get("mode") == "ladder" and
              any(r["label"] == m["label"] and r["offered_rate"] == m["max_ok_rate"] for m in summ)]
    prof = [r for r in rows if r.get("mode") == "profile" and r["label"].startswith(f"profile/{t}/")]
    out[t] = {
        "n": len(summ),
        "max_rate": med([r["max_ok_rate"] for r in summ]),
        "deliveries": med([r["delivered_per_s_at_max"] for r in summ]),
        "cpu_max": med([r["server_cpu_pct"] for r in at_max]),
        "loadgen_max": med([r["loadgen_cpu_pct"] for r in at_max]),
        "ipd": med([r["instructions_per_delivery"] for r in prof if r.get("instructions_per_delivery")]),
        "top": prof[-1]["top"][:8] if prof else [],
    }
p, t = out["plain"], out["tls"]
print("| | ws:// | wss:// | wss / ws |")
print("| --- | ---: | ---: | ---: |")
print(f"| highest rate without loss, messages/s (median of {p['n']} and {t['n']} ladders) | "
      f"{p['max_rate']:,.0f} | {t['max_rate']:,.0f} | {t['max_rate'] / p['max_rate']:.2f} |")
print(f"| deliveries/s there | {p['deliveries']:,.0f} | {t['deliveries']:,.0f} | "
      f"{t['deliveries'] / p['deliveries']:.2f} |")
print(f"| server CPU there, % of one core | {p['cpu_max']:.0f} | {t['cpu_max']:.0f} | |")
print(f"| load generator CPU there, % of one core | {p['loadgen_max']:.0f} | {t['loadgen_max']:.0f} | |")
print(f"| server instructions per delivery (callgrind, median) | {p['ipd']:,.0f} | {t['ipd']:,.0f} | "
      f"{t['ipd'] / p['ipd']:.2f} |")
for side in ("plain", "tls"):
    print(f"\ntop functions, {side} (self instructions, last repeat):")
    for f in out[side]["top"]:
        print(f"  {f['pct']:5.1f}%  {f['fn'][:100]}")
REPORT
