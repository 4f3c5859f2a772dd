#!/bin/bash
# run.sh - `make bench`: wsfan and its peers (nchan, Socket.IO 4) measured by
# the same load generator in the same run, plus the physical-limit probe,
# then docs/benchmarks.md and docs/bench-fanout.png from the results.
#
# Servers run pinned to core $BENCH_SERVER_CPU (0), the load generator to
# $BENCH_LOADGEN_CPU (1); wsfan with --workers 1. Every peer is started here,
# on a free port of 127.0.0.1, and stopped by its PID. Scenarios are
# interleaved per repeat so that a noisy moment hits every peer alike.
# Results: one JSON line per step in bench/results/<UTC stamp>.jsonl (kept
# out of git), with the exact commands as {"mode":"command"} lines.
#
# Knobs (environment): BENCH_REPEATS (3), BENCH_PEERS ("wsfan nchan socketio"),
# BENCH_SCENARIOS ("fanout limit rooms idle storm twonode deploy profile"; profile runs
# once, deploy is wsfan's alone),
# BENCH_STEP (seconds per ladder step, 1), BENCH_NO_SETUP=1 (skip installs),
# BENCH_NO_REPORT=1 (leave docs/ alone); BENCH_WSFAN_ARGS and
# BENCH_LOADGEN_ARGS, more words for every wsfan and load generator started
# (bench/tls.sh: --tls-cert ... and --tls).
#
# Sourced (by bench/compare.sh) it only sets its knobs, the trap and the
# functions, and runs nothing: `main` is the run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

REPEATS=${BENCH_REPEATS:-3}
PEERS=${BENCH_PEERS:-"wsfan nchan socketio"}
SCENARIOS=${BENCH_SCENARIOS:-"fanout limit rooms idle storm twonode deploy profile"}
STEP=${BENCH_STEP:-1}
SCPU=${BENCH_SERVER_CPU:-0}
LCPU=${BENCH_LOADGEN_CPU:-1}
WSFAN=$PWD/build/wsfan
# The load generator sends faster than --rate-limit's default and opens more
# connections per address than --max-connections-per-ip's: both off, as
# variables so that binaries older than the flags (bench-compare) ignore them.
export WSFAN_RATE_LIMIT=0 WSFAN_MAX_CONNECTIONS_PER_IP=0
LOADGEN=$PWD/build/bench/loadgen
LIMIT=$PWD/build/bench/limit
PY=/usr/bin/python3
mkdir -p bench/results
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RES=$PWD/bench/results/$STAMP.jsonl
WORK=$(mktemp -d)
T0=$(date +%s)

log() { printf 'bench [%4ds] %s\n' $(($(date +%s) - T0)) "$*" >&2; }

# ---------- setup: idempotent, quiet when everything is there ----------
setup() {
    local missing="" p
    for p in nginx libnginx-mod-nchan redis-server gnuplot-nox; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        log "installing$missing"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
    if [ ! -f bench/peers/node_modules/.package-lock.json ] ||
       [ bench/peers/package-lock.json -nt bench/peers/node_modules/.package-lock.json ]; then
        log "npm ci in bench/peers"
        (cd bench/peers && npm ci --no-audit --no-fund --loglevel=error)
    fi
}

# 10,000 connections on each side of loopback, and then some.
raise_nofile() {
    ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    if [ "$(ulimit -n)" -lt 11000 ]; then
        log "ulimit -n is $(ulimit -n): the 10,000-connection scenarios need more (run as root)"
    fi
    NOFILE=$(ulimit -n)
}

# ---------- process control: everything started here is stopped by PID ----------
STARTED=()
cleanup() {
    local p
    for p in "${STARTED[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.3
    for p in "${STARTED[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    $PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() { # port pid
    local i
    for i in $(seq 100); do
        if $PY -c "import socket; socket.create_connection(('127.0.0.1', $1), 0.2).close()" 2>/dev/null; then
            return 0
        fi
        kill -0 "$2" 2>/dev/null || break
        sleep 0.1
    done
    log "server pid $2 did not listen on 127.0.0.1:$1"
    return 1
}

stop() { # pid...
    local p i
    for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "$@"; do
        for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
}

# Each start_* sets PIDS (comma-separated: the processes whose CPU and RSS count),
# KILL (the PIDs to stop) and returns once the port accepts connections.
start_redis() { # port
    taskset -c "$SCPU" redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize no --logfile "$WORK/redis-$1.log" &
    local pid=$!
    STARTED+=("$pid")
    PIDS=$pid KILL=$pid
    wait_port "$1" "$pid"
}

start_wsfan() { # port [redis port]
    local extra=()
    [ -z "${2:-}" ] || extra=(--redis "redis://127.0.0.1:$2")
    # shellcheck disable=SC2086 # BENCH_WSFAN_ARGS: words
    taskset -c "$SCPU" "$WSFAN" --listen "127.0.0.1:$1" --workers 1 --log-level warn "${extra[@]}" ${BENCH_WSFAN_ARGS:-} \
        >>"$WORK/wsfan-$1.log" 2>&1 &
    local pid=$!
    STARTED+=("$pid")
    PIDS=$pid KILL=$pid
    wait_port "$1" "$pid"
}

start_socketio() { # port [redis port]
    local extra=()
    [ -z "${2:-}" ] || extra=(--redis "redis://127.0.0.1:$2")
    taskset -c "$SCPU" node bench/peers/socketio-server.js --port "$1" "${extra[@]}" \
        >>"$WORK/socketio-$1.log" 2>&1 &
    local pid=$!
    STARTED+=("$pid")
    PIDS=$pid KILL=$pid
    wait_port "$1" "$pid"
}

# nginx with one worker process (the per-core comparison); the master only
# supervises. Both are measured. With a redis port, nchan's Redis mode.
start_nchan() { # port [redis port]
    local d=$WORK/nchan-$1 up="" pass=""
    mkdir -p "$d/logs"
    if [ -n "${2:-}" ]; then
        up="upstream bench_redis { nchan_redis_server redis://127.0.0.1:$2; }"
        pass="nchan_redis_pass bench_redis;"
    fi
    cat >"$d/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes 1;
daemon off;
worker_rlimit_nofile $NOFILE;
error_log $d/logs/error.log warn;
pid $d/nginx.pid;
events { worker_connections 100000; use epoll; multi_accept on; }
http {
  access_log off;
  client_body_temp_path $d/body;
  proxy_temp_path $d/proxy;
  fastcgi_temp_path $d/fastcgi;
  uwsgi_temp_path $d/uwsgi;
  scgi_temp_path $d/scgi;
  nchan_shared_memory_size 256M;
  $up
  server {
    listen 127.0.0.1:$1 backlog=4096;
    location ~ ^/sub/([A-Za-z0-9_]+)\$ {
      nchan_subscriber websocket;
      nchan_channel_id \$1;
      nchan_subscriber_first_message newest;
      $pass
    }
    location ~ ^/pub/([A-Za-z0-9_]+)\$ {
      nchan_publisher websocket http;
      nchan_channel_id \$1;
      $pass
    }
  }
}
EOF
    taskset -c "$SCPU" nginx -p "$d" -c "$d/nginx.conf" &
    local pid=$!
    STARTED+=("$pid")
    wait_port "$1" "$pid" || return 1
    local worker
    worker=$(pgrep -P "$pid" | head -n 1)
    PIDS=$pid${worker:+,$worker} KILL=$pid
}

# ---------- recording ----------
record_command() { # scenario peer repeat cmd...
    local s=$1 p=$2 r=$3 cmd
    shift 3
    cmd=$(printf '%q ' "$@")
    $PY - "$s" "$p" "$r" "${cmd% }" >>"$RES" <<'EOF'
import json, sys
print(json.dumps({"mode": "command", "scenario": sys.argv[1], "peer": sys.argv[2],
                  "repeat": int(sys.argv[3]), "cmd": sys.argv[4]}))
EOF
}

# TAG, when set, names the run in the label instead of the peer (compare.sh:
# "before" and "after", both with the wsfan adapter).
loadgen() { # scenario peer repeat args...
    local s=$1 p=$2 r=$3 t=${TAG:-$2}
    shift 3
    # shellcheck disable=SC2206 # BENCH_LOADGEN_ARGS: words
    local cmd=(taskset -c "$LCPU" "$LOADGEN" --adapter "$p" --label "$s/$t/$r" --out "$RES" --quiet ${BENCH_LOADGEN_ARGS:-} "$@")
    record_command "$s" "$t" "$r" "${cmd[@]}"
    "${cmd[@]}" >/dev/null || log "loadgen $s/$t/$r exited with $?"
}

# ---------- scenarios ----------
# Publish-rate ladders (messages/s in total): doubling, then --bisect narrows
# the highest rate with loss < 0.1% and --half measures latency at half of it.
FANOUT_RATES=${BENCH_FANOUT_RATES:-100,200,400,800,1600,3200,6400,12800,25600}
ROOMS_RATES=${BENCH_ROOMS_RATES:-500,1000,2000,4000,8000,16000,32000,64000,128000}
TWO_RATES=${BENCH_TWO_RATES:-100,200,400,800,1600,3200,6400,12800}
LADDER=(--duration "$STEP" --drain 1 --stop-loss 1 --loss-ok 0.1)

scenario_fanout() { # peer repeat
    local port
    port=$(free_port)
    "start_$1" "$port" || return 0
    loadgen fanout "$1" "$2" --connect "127.0.0.1:$port" --server-pid "$PIDS" --subs 1000 --rooms 1 \
        --pubs 1 --size 100 --rates "$FANOUT_RATES" "${LADDER[@]}" --bisect 3 --half --max-seconds 120
    stop $KILL
}

scenario_rooms() {
    local port
    port=$(free_port)
    "start_$1" "$port" || return 0
    loadgen rooms "$1" "$2" --connect "127.0.0.1:$port" --server-pid "$PIDS" --subs 5000 --rooms 100 \
        --pubs 100 --size 100 --rates "$ROOMS_RATES" "${LADDER[@]}" --bisect 3 --half --max-seconds 120
    stop $KILL
}

scenario_idle() {
    local port
    port=$(free_port)
    "start_$1" "$port" || return 0
    loadgen idle "$1" "$2" --connect "127.0.0.1:$port" --server-pid "$PIDS" --mode idle --subs 10000 \
        --rooms 100 --pubs 100 --src-addrs 4 --idle 3 --settle 1 --max-seconds 90
    stop $KILL
}

scenario_storm() {
    local port
    port=$(free_port)
    "start_$1" "$port" || return 0
    loadgen storm "$1" "$2" --connect "127.0.0.1:$port" --server-pid "$PIDS" --mode storm --subs 10000 \
        --rooms 100 --src-addrs 4 --concurrency 500 --max-seconds 90
    stop $KILL
}

# Two servers of the same kind and one redis-server, all on the server core;
# subscribers alternate between the nodes, the publisher is on the first.
scenario_twonode() {
    local rport p1 p2 rpid pids kill
    rport=$(free_port)
    start_redis "$rport" || return 0
    rpid=$PIDS
    p1=$(free_port)
    "start_$1" "$p1" "$rport" || { stop "$rpid"; return 0; }
    pids=$PIDS kill=$KILL
    p2=$(free_port)
    "start_$1" "$p2" "$rport" || { stop $kill "$rpid"; return 0; }
    pids=$pids,$PIDS,$rpid kill="$kill $KILL"
    sleep 0.3
    redis-cli -p "$rport" config resetstat >/dev/null
    loadgen twonode "$1" "$2" --connect "127.0.0.1:$p1,127.0.0.1:$p2" --server-pid "$pids" --subs 1000 \
        --rooms 1 --pubs 1 --size 100 --rates "$TWO_RATES" "${LADDER[@]}" --bisect 2 --max-seconds 120
    # Redis commands per published message: what the bus costs per message.
    redis-cli -p "$rport" info commandstats | $PY -c '
import json, sys
stats = {}
for line in sys.stdin:
    if line.startswith("cmdstat_"):
        name, rest = line.strip()[8:].split(":", 1)
        stats[name] = int(dict(kv.split("=") for kv in rest.split(","))["calls"])
print(json.dumps({"mode": "redis", "label": sys.argv[1], "commandstats": stats}))' "twonode/$1/$2" >>"$RES"
    stop $kill "$rpid"
}

# A deploy: 10,000 clients of one node, 100 rooms, each warmed up with a
# persisted message; the node is stopped (SIGTERM: every connection closed
# with 1001 at once) and started again on the same port, and every client
# reconnects at once with `join since` its room's last offset (the load
# generator's resume mode). With the memory engine the history dies with
# the process, so the since cannot be honoured: the figure is the recovery
# handshake itself. With Redis the history is kept, and a second node, not
# restarted, publishes one message to every room while the first is down,
# so every client has one message to recover.
scenario_deploy() { # peer repeat
    [ "$1" = wsfan ] || return 0
    deploy_once memory "$2"
    deploy_once redis "$2"
}

deploy_once() { # engine repeat
    local engine=$1 r=$2 port rport="" bport="" rpid="" bpid="" pid lg i out=$WORK/deploy.out
    if [ "$engine" = redis ]; then
        rport=$(free_port)
        start_redis "$rport" || return 0
        rpid=$PIDS
        bport=$(free_port)
        start_wsfan "$bport" "$rport" || { stop "$rpid"; return 0; }
        bpid=$PIDS
    fi
    port=$(free_port)
    start_wsfan "$port" "$rport" || { stop $bpid $rpid; return 0; }
    pid=$PIDS
    local cmd=(taskset -c "$LCPU" "$LOADGEN" --adapter wsfan --label "deploy-$engine/wsfan/$r" --out "$RES"
               --quiet --connect "127.0.0.1:$port" --mode resume --subs 10000 --rooms 100 --pubs 100
               --src-addrs 4 --setup-timeout 30 --max-seconds 90)
    record_command "deploy-$engine" wsfan "$r" "${cmd[@]}"
    "${cmd[@]}" >"$out" &
    lg=$!
    STARTED+=("$lg")
    for i in $(seq 600); do
        grep -q '"mode":"ready"' "$out" 2>/dev/null && break
        kill -0 "$lg" 2>/dev/null || break
        sleep 0.1
    done
    stop "$pid"
    [ -z "$bport" ] || publish_each_room "$bport" 100
    start_wsfan "$port" "$rport" || true
    wait "$lg" || log "loadgen deploy-$engine/wsfan/$r exited with $?"
    stop $PIDS $bpid $rpid
}

publish_each_room() { # port rooms: one persisted message to r0..r<rooms-1> through POST /api/publish
    $PY - "$1" "$2" <<'EOF'
import json, sys, urllib.request
for room in range(int(sys.argv[2])):
    body = json.dumps({"room": "r%d" % room, "data": "~W%d.deploy~" % room}).encode()
    req = urllib.request.Request("http://127.0.0.1:%s/api/publish" % sys.argv[1], body,
                                 {"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=5).read()
EOF
}

# The physical-limit probe with the frame size wsfan really sends (from the
# first fan-out run: the payload the loadgen saw plus the frame header).
scenario_limit() { # repeat
    local size
    size=$($PY -c '
import json, sys
for line in open(sys.argv[1]):
    d = json.loads(line)
    if d.get("mode") == "ladder" and d.get("adapter") == "wsfan" and d.get("frame_bytes"):
        n = round(d["frame_bytes"])
        print(n + (2 if n < 126 else 4)); break
else:
    print(202)' "$RES")
    local cmd=("$LIMIT" --conns 1000 --size "$size" --batch 1,4,16 --seconds 1.5 --writer-cpu "$SCPU"
               --reader-cpu "$LCPU" --label "limit/probe/$1")
    record_command limit probe "$1" "${cmd[@]}"
    "${cmd[@]}" >>"$RES"
}

# User-space instructions per delivery in wsfan, from callgrind: collection
# is switched on only around one fixed step (1,000 subscribers, 100 msg/s, 2 s;
# BENCH_PROFILE_RATE and BENCH_PROFILE_SECONDS change the last two).
# Labelled profile/wsfan/1, or NAME/$TAG/REPEAT when TAG is set.
scenario_profile() { # [repeat [name]]
    command -v valgrind >/dev/null || { log "valgrind missing: no profile"; return 0; }
    local r=${1:-1} name=${2:-profile} label port pid out=$PWD/bench/results/callgrind.$STAMP.out
    label=$name/${TAG:-wsfan}/$r
    [ -z "${TAG:-}" ] || out=$PWD/bench/results/callgrind.$STAMP.$name.$TAG.$r.out
    port=$(free_port)
    taskset -c "$SCPU" valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
        "$WSFAN" --listen "127.0.0.1:$port" --workers 1 --log-level warn ${BENCH_WSFAN_ARGS:-} >>"$WORK/callgrind.log" 2>&1 &
    pid=$!
    STARTED+=("$pid")
    wait_port "$port" "$pid" || return 0
    loadgen "$name" wsfan "$r" --connect "127.0.0.1:$port" --server-pid "$pid" --subs 1000 --rooms 1 \
        --pubs 1 --size 100 --rates "${BENCH_PROFILE_RATE:-100}" --duration "${BENCH_PROFILE_SECONDS:-2}" \
        --drain 10 --setup-timeout 120 --warm-timeout 60 \
        --hook-start "callgrind_control -i on $pid >/dev/null" \
        --hook-end "callgrind_control -i off $pid >/dev/null" --max-seconds 240
    stop "$pid"
    if [ -s "$out" ]; then
        callgrind_annotate --inclusive=no "$out" 2>/dev/null | head -n 60 >"$out.txt" || true
        $PY - "$out" "$RES" "$label" <<'EOF' >>"$RES"
import json, re, sys
total = None
for line in open(sys.argv[1], errors="replace"):
    if line.startswith("totals:") or line.startswith("summary:"):
        total = int(line.split()[1])
deliveries = 0
for line in open(sys.argv[2]):
    d = json.loads(line)
    if d.get("label") == sys.argv[3] and d.get("mode") == "ladder":
        deliveries += d["received"]
top = []
txt = open(sys.argv[1] + ".txt", errors="replace").read().splitlines()
for line in txt:
    m = re.match(r"\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+(.*)", line)
    if m and "PROGRAM TOTALS" not in line:
        top.append({"ir": int(m.group(1).replace(",", "")), "pct": float(m.group(2)), "fn": m.group(3)})
print(json.dumps({"mode": "profile", "label": sys.argv[3], "instructions": total,
                  "deliveries": deliveries,
                  "instructions_per_delivery": round(total / deliveries, 1) if total and deliveries else None,
                  "top": top[:15]}))
EOF
    fi
}

# ---------- the run ----------
record_machine() {
$PY - "$RES" <<'EOF'
import json, os, platform, subprocess, sys, time
def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return ""
cpu = sh("lscpu | sed -n 's/^Model name: *//p'")
mem = sh("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo")
info = {"mode": "machine", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu, "cores": os.cpu_count(), "memory": mem, "kernel": platform.release(),
        "os": sh(". /etc/os-release && echo $PRETTY_NAME"),
        "wsfan": sh("git describe --always --dirty"),
        "nginx": sh("nginx -v 2>&1"), "nchan": sh("dpkg-query -W -f='${Version}' libnginx-mod-nchan"),
        "node": sh("node --version"),
        "socketio": sh("cd bench/peers && node -p \"require('socket.io/package.json').version\""),
        "redis": sh("redis-server --version"), "loadavg_at_start": open("/proc/loadavg").read().split()[0]}
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(info) + "\n")
EOF
}

main() {
    [ "${BENCH_NO_SETUP:-0}" = 1 ] || setup
    raise_nofile
    log "results: $RES"
    record_machine

    for r in $(seq "$REPEATS"); do
        for s in $SCENARIOS; do
            case $s in
            limit) log "repeat $r: limit probe"; scenario_limit "$r" ;;
            profile) ;;
            *)
                for p in $PEERS; do
                    log "repeat $r: $s / $p"
                    "scenario_$s" "$p" "$r"
                done
                ;;
            esac
        done
    done
    case " $SCENARIOS " in
    *" profile "*) log "profile: wsfan under callgrind"; scenario_profile ;;
    esac
    log "done in $(($(date +%s) - T0)) s"
    [ "${BENCH_NO_REPORT:-0}" = 1 ] || $PY bench/report.py "$RES"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
