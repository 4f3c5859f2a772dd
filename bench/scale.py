#!/usr/bin/python3
"""scale.py - `make bench-scale`: many connections held at once across several
wsfan nodes that share one redis-server, and one message to everyone.

    bench/scale.py [--connections 100000] [--nodes 6] [--loadgens 6] [--rooms 1000]

Every process here may open a limited number of descriptors (`ulimit -Hn`,
20,000 on the project's machine), so the connections are spread over
--nodes wsfan processes (--workers 1 each, one Redis) and --loadgens load
generator processes (bench/loadgen.c --mode hold); each one's share must fit
under that limit, and the script says so before it starts anything.
Connections are anonymous (no presence), each joined to one of --rooms
rooms, and spread over every node and over the source addresses
127.0.0.1..127.0.0.4. Once all are held, the script reads:
- user-space memory: the nodes' VmRSS, before any connection and with all
  of them held, over the number of connections;
- kernel memory: /proc/meminfo Slab and the /proc/slabinfo caches, and the
  TCP buffer pages of /proc/net/sockstat, before and with all held; both ends
  of every connection are on this machine, so they cover 2N sockets and are
  divided by 2N;
- Redis: INFO commandstats, stats and CPU, over the connect phase and over
  the message to everyone;
then sends one message to everyone (POST /api/publish {"all":true} on the
first node) stamped with CLOCK_MONOTONIC, and each load generator reports
when its connections received it: the delivery time to the last connection
is the largest of them. Everything started here is stopped by its PID; the
run is bounded by --max-seconds. Results: one JSON line in
bench/results/scale-<stamp>.jsonl, a Markdown table on stdout, and the
section between the scale markers of docs/benchmarks.md (bench/report.py
keeps it when `make bench` rewrites the file)."""

import argparse
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import report  # noqa: E402  (bench/report.py: the kept sections of docs/benchmarks.md)

SCALE_BEGIN = "<!-- scale:begin (bench/scale.py writes this section; make bench keeps it) -->"
SCALE_END = "<!-- scale:end -->"
DESCRIPTOR_MARGIN = 1024  # listening socket, epoll, Redis links, logs, loadgen's own
IDLE_WINDOW_S = 2


def fail(msg):
    print("scale: " + msg, file=sys.stderr)
    sys.exit(2)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what):
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    fail("%s did not listen on 127.0.0.1:%d" % (what, port))


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M).group(1)) * 1024


def kernel_sample():
    """Slab bytes in all, bytes per slab cache (objects x size), TCP sockets and buffer pages."""
    with open("/proc/meminfo") as f:
        slab = int(re.search(r"^Slab:\s+(\d+) kB", f.read(), re.M).group(1)) * 1024
    caches = {}
    with open("/proc/slabinfo") as f:
        for line in f:
            if line.startswith(("slabinfo", "#")):
                continue
            parts = line.split()
            caches[parts[0]] = int(parts[2]) * int(parts[3])
    with open("/proc/net/sockstat") as f:
        m = re.search(r"^TCP: inuse (\d+) orphan \d+ tw (\d+) alloc \d+ mem (\d+)", f.read(), re.M)
    return {"slab": slab, "caches": caches, "tcp_inuse": int(m.group(1)), "tcp_tw": int(m.group(2)),
            "tcp_mem_bytes": int(m.group(3)) * os.sysconf("SC_PAGE_SIZE")}


def redis_info(port):
    out = subprocess.run(["redis-cli", "-p", str(port), "info", "everything"], capture_output=True, text=True,
                         timeout=10, check=True).stdout
    info, calls = {}, {}
    for line in out.splitlines():
        if ":" not in line or line.startswith("#"):
            continue
        k, v = line.split(":", 1)
        if k.startswith("cmdstat_"):
            calls[k[8:]] = int(dict(kv.split("=") for kv in v.split(","))["calls"])
        else:
            info[k] = v
    cpu = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return {"calls": calls, "cpu_s": cpu, "commands": int(info["total_commands_processed"]),
            "net_in": int(info["total_net_input_bytes"]), "net_out": int(info["total_net_output_bytes"]),
            "clients": int(info["connected_clients"]), "channels": int(info["pubsub_channels"]),
            "memory": int(info["used_memory"])}


def redis_delta(a, b):
    calls = {k: b["calls"].get(k, 0) - a["calls"].get(k, 0) for k in b["calls"]}
    return {"calls": {k: v for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v > 0},
            "commands": b["commands"] - a["commands"], "cpu_s": round(b["cpu_s"] - a["cpu_s"], 3),
            "net_in": b["net_in"] - a["net_in"], "net_out": b["net_out"] - a["net_out"]}


def broadcast(port):
    """One message to everyone through the first node's HTTP API, stamped with
    CLOCK_MONOTONIC in the load generator's marker format."""
    stamp = time.monotonic_ns()
    body = json.dumps({"all": True, "data": "~B0.0.1.%d~" % stamp}).encode()
    req = urllib.request.Request("http://127.0.0.1:%d/api/publish" % port, body,
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()
    return stamp


def read_line(proc, mode, deadline):
    """The next JSON line of a load generator with this mode, or None at its end or the deadline."""
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            return None
        d = json.loads(line)
        if d.get("mode") == mode:
            return d
    return None


def stop(procs):
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=100000)
    ap.add_argument("--nodes", type=int, default=6, help="wsfan processes (default 6)")
    ap.add_argument("--loadgens", type=int, default=6, help="load generator processes (default 6)")
    ap.add_argument("--rooms", type=int, default=1000, help="rooms the connections join, one each (default 1000)")
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "wsfan"))
    ap.add_argument("--loadgen", default=os.path.join(ROOT, "build", "bench", "loadgen"))
    ap.add_argument("--max-seconds", type=float, default=300, help="hard limit on the whole run (default 300)")
    ap.add_argument("--md", default=os.path.join(ROOT, "docs", "benchmarks.md"),
                    help="the file whose scale section is rewritten ('-': none)")
    args = ap.parse_args()
    for name in ("connections", "nodes", "loadgens", "rooms"):
        if getattr(args, name) < 1:
            fail("--%s %d: expected at least 1" % (name, getattr(args, name)))
    if args.nodes > 8:
        fail("--nodes %d: the load generator connects to at most 8 servers" % args.nodes)
    for path in (args.bin, args.loadgen):
        if not os.access(path, os.X_OK):
            fail("%s is not an executable: run make -s all first" % path)
    for tool in ("redis-server", "redis-cli"):
        if not shutil.which(tool):
            fail("%s is not installed: apt-get install redis-server (make bench installs it)" % tool)
    return args


def raise_descriptors(args):
    """Raises this process's soft limit to the hard one (children inherit it) and
    checks that each node's and each load generator's share fits under it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for what, n in (("--nodes", args.nodes), ("--loadgens", args.loadgens)):
        per = -(-args.connections // n)
        if per + DESCRIPTOR_MARGIN > hard:
            fail("%d connections over %s %d is %d descriptors per process plus %d, over the limit of %d "
                 "(ulimit -Hn): raise %s" % (args.connections, what, n, per, DESCRIPTOR_MARGIN, hard, what))
    return hard


def main():
    args = parse_args()
    limit = raise_descriptors(args)
    t_begin = time.time()
    deadline = t_begin + args.max_seconds
    env = dict(os.environ, WSFAN_RATE_LIMIT="0", WSFAN_MAX_CONNECTIONS_PER_IP="0")
    procs = []
    try:
        rport = free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--logfile", ""], stdout=subprocess.DEVNULL)
        procs.append(redis)
        wait_port(rport, redis, "redis-server")
        nodes = []
        for i in range(args.nodes):
            port = free_port()
            p = subprocess.Popen([args.bin, "--listen", "127.0.0.1:%d" % port, "--workers", "1", "--log-level",
                                  "warn", "--redis", "redis://127.0.0.1:%d" % rport,
                                  "--max-connections", str(limit - DESCRIPTOR_MARGIN)], env=env)
            procs.append(p)
            wait_port(port, p, "wsfan node %d" % i)
            nodes.append((port, p))
        time.sleep(1)
        rss0 = [rss_bytes(p.pid) for _, p in nodes]
        k0, r0 = kernel_sample(), redis_info(rport)
        t0 = time.time()
        connect = ",".join("127.0.0.1:%d" % port for port, _ in nodes)
        share = [args.connections // args.loadgens + (1 if i < args.connections % args.loadgens else 0)
                 for i in range(args.loadgens)]
        loadgens = []
        for i, n in enumerate(share):
            cmd = [args.loadgen, "--mode", "hold", "--connect", connect, "--subs", str(n), "--rooms",
                   str(args.rooms), "--src-addrs", "4", "--concurrency", "200", "--settle", "3", "--setup-timeout",
                   str(int(args.max_seconds)), "--idle", str(int(args.max_seconds)), "--max-seconds",
                   str(int(args.max_seconds)), "--label", "scale/wsfan/%d" % (i + 1), "--quiet"]
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            procs.append(p)
            loadgens.append(p)
        ready = [read_line(p, "ready", deadline) for p in loadgens]
        if not all(ready):
            fail("a load generator did not set up all its connections (see its message above)")
        setup_s = time.time() - t0
        time.sleep(2)  # the last joins' subscriptions settle
        rss1 = [rss_bytes(p.pid) for _, p in nodes]
        k1, r1 = kernel_sample(), redis_info(rport)
        time.sleep(IDLE_WINDOW_S)  # what held connections cost Redis with no traffic
        r1b = redis_info(rport)
        stamp = broadcast(nodes[0][0])
        time.sleep(1)  # Redis's part is one PUBLISH, done by now; the load generators hold on for 3 s
        r2 = redis_info(rport)
        held = [read_line(p, "hold", deadline) for p in loadgens]
        if not all(held):
            fail("a load generator ended without its report (see its message above)")
        n = sum(d["conns"] for d in held)
        caches = {c: k1["caches"].get(c, 0) - k0["caches"].get(c, 0) for c in k1["caches"]}
        top = sorted(((c, v) for c, v in caches.items() if v > 0), key=lambda cv: -cv[1])[:6]
        result = {
            "mode": "scale", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "wsfan": subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                                    text=True).stdout.strip(),
            "connections": n, "nodes": args.nodes, "loadgens": args.loadgens, "rooms": args.rooms,
            "descriptor_limit": limit, "setup_s": round(setup_s, 2),
            "received": sum(d["received"] for d in held), "disconnects": sum(d["disconnects"] for d in held),
            "rss_bytes_each": rss1, "user_bytes_per_conn": round((sum(rss1) - sum(rss0)) / n),
            "slab_bytes_per_socket": round((k1["slab"] - k0["slab"]) / (2 * n)),
            "slab_caches_per_socket": {c: round(v / (2 * n)) for c, v in top},
            "tcp_buffer_bytes_per_socket": round((k1["tcp_mem_bytes"] - k0["tcp_mem_bytes"]) / (2 * n)),
            "tcp_inuse": [k0["tcp_inuse"], k1["tcp_inuse"]], "tcp_time_wait": [k0["tcp_tw"], k1["tcp_tw"]],
            "last_delivery_ms": max(d["lat_max_us"] for d in held) / 1e3,
            "p50_ms_each": [d["lat_p50_us"] / 1e3 for d in held],
            "p99_ms_each": [d["lat_p99_us"] / 1e3 for d in held],
            "sent_ns": stamp,
            "redis_connect": redis_delta(r0, r1), "redis_idle": redis_delta(r1, r1b),
            "redis_idle_s": IDLE_WINDOW_S, "redis_broadcast": redis_delta(r1b, r2),
            "redis_clients": r1["clients"], "redis_channels": r1["channels"],
            "redis_memory_bytes": [r0["memory"], r1["memory"]],
            "loadavg": open("/proc/loadavg").read().split()[0],
            "cmd": " ".join(sys.argv).replace(ROOT + "/", ""),
        }
    finally:
        stop(procs)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    res = os.path.join(ROOT, "bench", "results", "scale-%s.jsonl" % time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    with open(res, "w") as f:
        f.write(json.dumps(result) + "\n")
    section = section_lines(result)
    print("\n".join(section[1:-1]))
    if args.md != "-":
        report.replace_section(args.md, SCALE_BEGIN, SCALE_END, "\n".join(section))
        print("scale: wrote the scale section of %s; raw figures in %s" % (args.md, res))
    return 0 if result["received"] == n and not result["disconnects"] else 1


def section_lines(d):
    n = d["connections"]
    rb, rc, ri = d["redis_broadcast"], d["redis_connect"], d["redis_idle"]
    out = [SCALE_BEGIN, "## %s connections on %d nodes and one redis-server" % (format(n, ","), d["nodes"]), ""]
    out.append("`make bench-scale` (`bench/scale.py`), run once on %s (wsfan %s, load average %s at the end): "
               "%d wsfan processes (`--workers 1 --redis`, sharing one redis-server) and %d load generator "
               "processes (`bench/loadgen.c --mode hold`) on the same 2 cores, unpinned, because each process "
               "here may open at most %s descriptors. Every connection is anonymous (no presence) and joined "
               "to one of %d rooms; they are spread over every node. All %s were set up in %.1f s. Then one "
               "message to everyone (`POST /api/publish {\"all\":true}` on the first node) reached %s of them "
               "with %d closed." % (d["date"], d["wsfan"], d["loadavg"], d["nodes"], d["loadgens"],
                                    format(d["descriptor_limit"], ","), d["rooms"], format(n, ","), d["setup_s"],
                                    format(d["received"], ","), d["disconnects"]))
    out.append("")
    out.append("| figure | value |")
    out.append("| --- | --- |")
    out.append("| user-space memory per connection (the nodes' VmRSS with all held, less before any) | %s bytes |"
               % format(d["user_bytes_per_conn"], ","))
    out.append("| kernel slab per socket (/proc/meminfo Slab delta over the 2N sockets of both ends) | %s bytes |"
               % format(d["slab_bytes_per_socket"], ","))
    out.append("| of which, by slab cache (/proc/slabinfo, objects x size) | %s |"
               % ", ".join("%s %d" % (c, v) for c, v in d["slab_caches_per_socket"].items()))
    out.append("| TCP buffer pages per socket while idle (/proc/net/sockstat mem) | %s bytes |"
               % format(d["tcp_buffer_bytes_per_socket"], ","))
    out.append("| delivery of the message to everyone: to the last connection | %.1f ms |" % d["last_delivery_ms"])
    out.append("| the same: p50 / p99 per load generator process (lowest..highest) | %.1f..%.1f / %.1f..%.1f ms |"
               % (min(d["p50_ms_each"]), max(d["p50_ms_each"]), min(d["p99_ms_each"]), max(d["p99_ms_each"])))
    out.append("| Redis during the connect phase: commands, CPU | %s (%s), %.2f s |"
               % (format(rc["commands"], ","), ", ".join("%s %s" % (k, format(v, ","))
                                                       for k, v in list(rc["calls"].items())[:4]), rc["cpu_s"]))
    out.append("| Redis with all held and no traffic, per second (over %d s): commands, CPU | %s (%s), %.3f s |"
               % (d["redis_idle_s"], format(ri["commands"] // d["redis_idle_s"], ","),
                  ", ".join("%s %s" % (k, format(v // d["redis_idle_s"], ",")) for k, v in list(ri["calls"].items())[:4]),
                  ri["cpu_s"] / d["redis_idle_s"]))
    out.append("| Redis in the second of the message to everyone (background included): PUBLISH calls; all "
               "commands; bytes out; CPU | %d; %s (%s); %s bytes; %.3f s |"
               % (rb["calls"].get("publish", 0), format(rb["commands"], ","), ", ".join("%s %s" % (k, format(v, ","))
                                                       for k, v in list(rb["calls"].items())[:4]),
                  format(rb["net_out"], ","), rb["cpu_s"]))
    out.append("| Redis clients and pub/sub channels with all held | %d clients, %d channels |"
               % (d["redis_clients"], d["redis_channels"]))
    out.append("")
    out.append("Command: `%s`" % d["cmd"])
    out.append(SCALE_END)
    return out


if __name__ == "__main__":
    sys.exit(main())
