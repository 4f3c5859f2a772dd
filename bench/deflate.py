#!/usr/bin/python3
"""deflate.py - what permessage-deflate costs and saves in a fan-out, with
and without it in one sitting:

    bench/deflate.py [--bin build/wsfan] [--loadgen build/bench/loadgen]
                     [--subs 500] [--rate 200] [--sizes 100,1000,4000]
                     [--seconds 5] [--repeats 3] [--callgrind]

For each repeat, size and mode (plain: the load generator offers no
extension; deflate: it offers permessage-deflate and inflates what it
gets), starts a fresh wsfan (--workers 1, pinned to core 0) on a free
loopback port and runs build/bench/loadgen (pinned to core 1) for one step:
--subs subscribers in one room, one publisher at --rate messages/s of
--size bytes of word padding (--pad-words; a run of x would compress
unrealistically well). Reports, per size and mode, the medians of:
- server CPU per delivery (the step's server CPU over its deliveries);
- bytes on the wire per delivery (wsfan_sent_bytes_total over
  wsfan_fanout_deliveries_total, from /metrics before and after);
- frames compressed per published message (wsfan_deflate_frames_total);
- with --callgrind, the server runs under valgrind's callgrind, counting
  only during the step (callgrind_control -i on/off from the load
  generator's hooks): user-space instructions per delivery, which other
  work on a shared machine does not move as it moves CPU time.
Every delivery is checked (loadgen --check). Loopback only, bounded by
--max-seconds; each server is stopped by its PID. Prints a Markdown table."""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        values = {}
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values


def start_server(binary, port, log, callgrind_out=None):
    env = dict(os.environ, WSFAN_RATE_LIMIT="0", WSFAN_MAX_CONNECTIONS_PER_IP="0")
    tool = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={callgrind_out}"] \
        if callgrind_out else []
    proc = subprocess.Popen(["taskset", "-c", "0", *tool, binary, "--listen", f"127.0.0.1:{port}", "--workers", "1",
                             "--log-level", "warn"], stdout=log, stderr=log, env=env)
    for _ in range(300):
        try:
            scrape(port)
            return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"deflate.py: wsfan did not start on port {port}")


def stop_server(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def callgrind_total(path):
    for line in open(path, errors="replace"):
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise SystemExit(f"deflate.py: no totals in {path}")


def one_run(args, size, mode, log, workdir):
    port = free_port()
    cg_out = os.path.join(workdir, f"callgrind.{size}.{mode}.{port}") if args.callgrind else None
    proc = start_server(args.bin, port, log, cg_out)
    try:
        before = scrape(port)
        cmd = ["taskset", "-c", "1", args.loadgen, "--adapter", "wsfan", "--connect", f"127.0.0.1:{port}",
               "--server-pid", str(proc.pid), "--subs", str(args.subs), "--rooms", "1", "--pubs", "1",
               "--size", str(size), "--rates", str(args.rate), "--duration", str(args.seconds), "--drain", "2",
               "--pad-words", "--check", "--quiet", "--max-seconds", "120"]
        if mode == "deflate":
            cmd.append("--deflate")
        if cg_out:
            cmd += ["--hook-start", f"callgrind_control -i on {proc.pid} >/dev/null",
                    "--hook-end", f"callgrind_control -i off {proc.pid} >/dev/null", "--setup-timeout", "120"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        after = scrape(port)
    finally:
        stop_server(proc)
    steps = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    step = next((s for s in steps if "server_cpu_pct" in s and "received" in s), None)
    if out.returncode != 0 or not step:
        raise SystemExit(f"deflate.py: loadgen failed ({out.returncode}): {out.stderr[-2000:]}\n{out.stdout[-2000:]}")

    def delta(name):
        return after.get(name, 0) - before.get(name, 0)
    deliveries = delta("wsfan_fanout_deliveries_total")
    published = delta("wsfan_fanout_events_total{target=\"room\"}")
    return {
        "size": size, "mode": mode, "command": " ".join(cmd),
        "instructions_per_delivery": callgrind_total(cg_out) / step["received"] if cg_out else None,
        "cpu_us_per_delivery": step["server_cpu_pct"] / 100 / step["delivered_per_s"] * 1e6,
        "wire_bytes_per_delivery": delta("wsfan_sent_bytes_total") / deliveries,
        "compressed_per_message": delta("wsfan_deflate_frames_total") / published if published else 0,
        "server_cpu_pct": step["server_cpu_pct"], "delivered_per_s": step["delivered_per_s"],
        "p99_us": step["lat_p99_us"],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(REPO, "build", "wsfan"))
    ap.add_argument("--loadgen", default=os.path.join(REPO, "build", "bench", "loadgen"))
    ap.add_argument("--subs", type=int, default=500)
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--sizes", default="100,1000,4000")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--callgrind", action="store_true")
    args = ap.parse_args()
    if args.subs > 5000 or args.rate * args.subs > 500000 or args.seconds > 30 or args.repeats > 10:
        raise SystemExit("deflate.py: keep it bounded: --subs <= 5000, rate x subs <= 500000/s, "
                         "--seconds <= 30, --repeats <= 10")
    sizes = [int(s) for s in args.sizes.split(",")]
    runs = []
    with tempfile.TemporaryFile() as log, tempfile.TemporaryDirectory() as workdir:
        for r in range(args.repeats):
            for size in sizes:
                for mode in ("plain", "deflate"):  # alternated: a noisy moment hits both
                    res = one_run(args, size, mode, log, workdir)
                    print(json.dumps(res), file=sys.stderr)
                    runs.append(res)
    cg = args.callgrind
    print(f"| data bytes | mode | {'instructions' if cg else 'server CPU (µs)'} per delivery | "
          f"bytes on the wire per delivery | compressions per message | server CPU % |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for size in sizes:
        for mode in ("plain", "deflate"):
            rs = [x for x in runs if x["size"] == size and x["mode"] == mode]

            def med(k):
                return statistics.median(x[k] for x in rs)
            cost = f"{med('instructions_per_delivery'):.0f}" if cg else f"{med('cpu_us_per_delivery'):.2f}"
            print(f"| {size} | {mode} | {cost} | {med('wire_bytes_per_delivery'):.0f} | "
                  f"{med('compressed_per_message'):.2f} | {med('server_cpu_pct'):.1f} |")


if __name__ == "__main__":
    main()
