#!/bin/bash
# compare.sh - two wsfan binaries measured in one sitting on one machine:
#
#     bench/compare.sh BEFORE_BIN AFTER_BIN      (or: make bench-compare BEFORE=...)
#
# runs, with the functions of bench/run.sh (sourced, so the same servers,
# pinning, ladders and callgrind step as `make bench`):
#   - the callgrind step of `make bench` (instructions per delivery, 1,000
#     subscribers at 100 msg/s for 2 s), COMPARE_PROFILE_REPEATS times per
#     binary, and the same step at a rate where wsfan under valgrind has time
#     to spare (COMPARE_PROFILE_LOW, "10:10": 10 msg/s for 10 s, 100,000
#     deliveries). At 100 msg/s the server under valgrind is 85 to 100% busy
#     here, so how many frames share one writev depends on how much of the
#     core valgrind got, and runs of one binary differ by 3 to 11% (more when
#     other work shares the core); at 25 msg/s still by up to 1.8% on a busy
#     machine; at 10 msg/s (about 22% busy) every message is one writev per
#     connection and runs of one binary agree within 0.1%, even with other
#     processes taking 58% of the core. That is the figure to judge by;
#   - the fan-out ladder and the rooms ladder of `make bench` (same rates,
#     steps and bisection), COMPARE_REPEATS times per binary;
# alternating the binaries in each repeat and swapping their order every
# other repeat (before, after, then after, before, ...), so that drift and a
# noisy moment of the shared machine hit both alike. Then bench/report.py
# --compare writes the section "Before and after ..." of docs/benchmarks.md
# (between its marker comments; `make bench` keeps that section).
#
# Time on the 2-core AMD EPYC machine: about 37 s per binary and repeat for
# the two ladders (18 to 20 s each), 4 s per callgrind run at 100 msg/s and
# 12 s at 10 msg/s; the defaults (7 ladder repeats, 3 callgrind repeats) take
# about 10.5 minutes. COMPARE_MAX_SECONDS (780) bounds the whole: no new
# repeat starts past it (a repeat always runs both binaries, about 75 s), and
# every load generator has its own --max-seconds.
#
# The ladders are noisy on a shared machine: one busy second fails a step and
# ends the ladder low. Two A/A runs (the same binary on both sides, load
# average 2 to 5 from other sessions' tests) moved the ratio of the medians
# by 18 to 33% and that of the best repeats by up to 15%: there they show
# only a large regression. Run it on a quiet machine and read the row
# "other processes on the server core"; the report gives both ratios.
#
# Knobs (environment): COMPARE_REPEATS (7), COMPARE_PROFILE_REPEATS (3),
# COMPARE_PROFILE_LOW ("10:10"; empty: only the step of `make bench`),
# COMPARE_SCENARIOS ("profile fanout rooms"), COMPARE_MAX_SECONDS (780),
# COMPARE_TITLE ("Before and after the layered refactor"), COMPARE_OUT
# (docs/benchmarks.md), COMPARE_NO_REPORT=1 (leave docs/ alone),
# BENCH_NO_SETUP=1 (do not install valgrind when it is missing),
# BENCH_LOADGEN (build/bench/loadgen; one load generator for both), and
# run.sh's BENCH_STEP, BENCH_FANOUT_RATES, BENCH_ROOMS_RATES,
# BENCH_SERVER_CPU, BENCH_LOADGEN_CPU. Results: bench/results/compare-<UTC
# stamp>.jsonl, labels <scenario>/before|after/<repeat>.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: bench/compare.sh BEFORE_WSFAN_BINARY AFTER_WSFAN_BINARY" >&2
    exit 2
fi
declare -A BIN
BIN[before]=$(realpath -e "$1") || { echo "compare: no binary $1" >&2; exit 2; }
BIN[after]=$(realpath -e "$2") || { echo "compare: no binary $2" >&2; exit 2; }
for t in before after; do
    [ -x "${BIN[$t]}" ] || { echo "compare: ${BIN[$t]} is not executable" >&2; exit 2; }
done
# Paths given relative to the caller's directory, resolved before run.sh's cd.
[ -z "${BENCH_LOADGEN:-}" ] || BENCH_LOADGEN=$(realpath -e "$BENCH_LOADGEN")
[ -z "${COMPARE_OUT:-}" ] || COMPARE_OUT=$(realpath -m "$COMPARE_OUT")
INVOKED="bench/compare.sh $*"

# shellcheck source=bench/run.sh
source "$(dirname "${BASH_SOURCE[0]}")/run.sh"  # cd to the repository; sets the EXIT trap

CREPEATS=${COMPARE_REPEATS:-7}
PREPEATS=${COMPARE_PROFILE_REPEATS:-3}
PLOW=${COMPARE_PROFILE_LOW-10:10}
CSCENARIOS=${COMPARE_SCENARIOS:-"profile fanout rooms"}
BUDGET=${COMPARE_MAX_SECONDS:-780}
TITLE=${COMPARE_TITLE:-"Before and after the layered refactor"}
OUT=${COMPARE_OUT:-$PWD/docs/benchmarks.md}
LOADGEN=${BENCH_LOADGEN:-$LOADGEN}
RES=$PWD/bench/results/compare-$STAMP.jsonl
[ -x "$LOADGEN" ] || { log "no load generator at $LOADGEN: make build/bench/loadgen"; exit 2; }
case " $CSCENARIOS " in
*" profile "*)
    if ! command -v valgrind >/dev/null && [ "${BENCH_NO_SETUP:-0}" != 1 ]; then
        log "installing valgrind"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind >/dev/null
    fi
    command -v valgrind >/dev/null ||
        { log "valgrind is missing: install it, or leave profile out of COMPARE_SCENARIOS"; exit 2; }
    ;;
esac

# The command as it can be run again: the knobs that were set, then the call.
CMD=""
for v in COMPARE_REPEATS COMPARE_PROFILE_REPEATS COMPARE_PROFILE_LOW COMPARE_SCENARIOS COMPARE_MAX_SECONDS BENCH_LOADGEN \
         BENCH_STEP BENCH_FANOUT_RATES BENCH_ROOMS_RATES BENCH_SERVER_CPU BENCH_LOADGEN_CPU; do
    if [ -n "${!v+set}" ]; then CMD+="$v=$(printf '%q' "${!v}") "; fi
done
CMD+=$INVOKED

raise_nofile
log "results: $RES"
LOAD=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$LOAD" 'BEGIN { exit !(l > 0.5) }'; then
    log "load average $LOAD: other work on this machine will make the ladders noisy"
fi
record_machine
# What was compared: each binary's path, checksum and the source tree it sits in.
$PY - "$RES" "$CMD" "$TITLE" "$CREPEATS" "$PREPEATS" "$LOADGEN" "${BIN[before]}" "${BIN[after]}" <<'EOF'
import hashlib, json, subprocess, sys, os
res, cmd, title, reps, preps, loadgen = sys.argv[1:7]
def tree(path):
    try:
        return subprocess.run(["git", "-C", os.path.dirname(path), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=10).stdout.strip() or None
    except Exception:
        return None
def binary(path):
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    return {"path": path, "sha256": sha, "bytes": os.path.getsize(path), "tree": tree(path)}
info = {"mode": "compare", "title": title, "cmd": cmd, "repeats": int(reps), "profile_repeats": int(preps),
        "loadgen": loadgen, "before": binary(sys.argv[7]), "after": binary(sys.argv[8]),
        "same_binary": sys.argv[7] == sys.argv[8]}
with open(res, "a") as f:
    f.write(json.dumps(info) + "\n")
EOF

use() { # before|after: the binary run.sh's start_wsfan and scenario_profile start
    TAG=$1
    WSFAN=${BIN[$1]}
}

order() { # repeat: before after, then after before, ...
    if [ $(($1 % 2)) = 1 ]; then echo "before after"; else echo "after before"; fi
}

over_budget() {
    if [ $(($(date +%s) - T0)) -ge "$BUDGET" ]; then
        log "past COMPARE_MAX_SECONDS=$BUDGET: no further repeats"
        return 0
    fi
    return 1
}

case " $CSCENARIOS " in
*" profile "*)
    for r in $(seq "$PREPEATS"); do
        over_budget && break
        for t in $(order "$r"); do
            use "$t"
            log "profile $r: $t under callgrind"
            scenario_profile "$r"
            if [ -n "$PLOW" ]; then
                log "profile $r: $t under callgrind at ${PLOW%%:*} msg/s"
                BENCH_PROFILE_RATE=${PLOW%%:*} BENCH_PROFILE_SECONDS=${PLOW#*:} scenario_profile "$r" profile-low
            fi
        done
    done
    ;;
esac
for r in $(seq "$CREPEATS"); do
    over_budget && break
    for s in $CSCENARIOS; do
        [ "$s" != profile ] || continue
        case $s in fanout | rooms) ;; *) log "compare: unknown scenario $s"; exit 2 ;; esac
        for t in $(order "$r"); do
            use "$t"
            log "repeat $r: $s / $t"
            scenario_"$s" wsfan "$r"
        done
    done
done
unset TAG
log "done in $(($(date +%s) - T0)) s"
echo "{\"mode\": \"compare_done\", \"seconds\": $(($(date +%s) - T0))}" >>"$RES"
[ "${COMPARE_NO_REPORT:-0}" = 1 ] || $PY bench/report.py --compare "$RES" "$OUT"
