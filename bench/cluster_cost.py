#!/usr/bin/python3
"""cluster_cost.py - what a persisted publish costs a Redis Cluster, per
shard: two wsfan nodes on a 3-master cluster (no replicas), rooms spread
over the shards, one member of each room on node b, a publisher on node a:

    bench/cluster_cost.py [--bin build/wsfan] [--rooms 30] [--messages 6000]

Starts three redis-server in cluster mode on free loopback ports (made one
cluster with redis-cli --cluster create, stopped by PID), the two nodes,
joins every room, publishes N persisted messages round-robin over the
rooms (64 in flight, each acknowledged), waits until the members have them
all, and reads each master's INFO commandstats and CPU time (from /proc)
before and after. Prints, per shard and in all: Redis commands per message
(by command), pub/sub messages published per shard, and CPU microseconds
per message. Counts, not speeds, are the point: they do not depend on the
machine. CPU time, not wall time: the machine is shared."""

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import tempfile
import time

from redis_cost import cpu_seconds, free_port, publish_all, wait_port

HOST = "127.0.0.1"


def cluster_port():
    """A free port whose cluster bus port (+10000) is free too: Redis
    refuses a port above 55535. Also used by tests/integration/test_redis_cluster.py."""
    for _ in range(200):
        port = random.randint(20000, 55000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind((HOST, p))
            return port
        except OSError:
            continue
    sys.exit("no free pair of ports")


def cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=30).stdout


def commandstats(port):
    """{command: calls} of one master."""
    out = {}
    for line in cli(port, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, rest = line[len("cmdstat_"):].split(":", 1)
            out[name] = int(rest.split("calls=")[1].split(",")[0])
    return out


def rooms_over_shards(ports, n):
    """n room names, n/3 on each master ({master port: [rooms]})."""
    import redis
    r = redis.Redis(host=HOST, port=ports[0], decode_responses=True)
    ranges = [(int(a), int(b), int(m[1])) for a, b, m, *_ in r.execute_command("CLUSTER", "SLOTS")]
    per = {p: [] for p in ports}
    for i in range(100000):
        room = f"r{i}"
        slot = int(r.execute_command("CLUSTER", "KEYSLOT", f"wsfan:room:{{{room}}}"))
        owner = next(m for a, b, m in ranges if a <= slot <= b)
        if len(per[owner]) < n // len(ports):
            per[owner].append(room)
        if all(len(v) == n // len(ports) for v in per.values()):
            r.close()
            return per
    sys.exit("could not spread the rooms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/wsfan")
    ap.add_argument("--rooms", type=int, default=30)
    ap.add_argument("--messages", type=int, default=6000)
    args = ap.parse_args()
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            ports = sorted(cluster_port() for _ in range(3))
            redis = {}
            for p in ports:
                d = os.path.join(tmp, str(p))
                os.mkdir(d)
                redis[p] = subprocess.Popen(
                    ["redis-server", "--port", str(p), "--bind", HOST, "--cluster-enabled", "yes",
                     "--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no", "--dir", d],
                    stdout=subprocess.DEVNULL)
                procs.append(redis[p])
                wait_port(p, redis[p], "redis-server")
            out = subprocess.run(["redis-cli", "--cluster", "create", *[f"{HOST}:{p}" for p in ports],
                                  "--cluster-yes"], capture_output=True, text=True, timeout=60)
            if out.returncode:
                sys.exit(out.stdout + out.stderr)
            for _ in range(200):
                if all("cluster_state:ok" in cli(p, "CLUSTER", "INFO") for p in ports):
                    break
                time.sleep(0.05)
            url = "redis+cluster://" + ",".join(f"{HOST}:{p}" for p in ports)
            nodes = []
            for name in ("a", "b"):
                port = free_port()
                node = subprocess.Popen([args.bin, "--listen", f"{HOST}:{port}", "--workers", "1", "--rate-limit",
                                         "0", "--redis", url, "--node-id", name, "--log-level", "warn"],
                                        stderr=subprocess.DEVNULL)
                procs.append(node)
                wait_port(port, node, args.bin)
                nodes.append(port)
            time.sleep(1.0)  # the links come up
            per_shard = rooms_over_shards(ports, args.rooms)
            rooms = [room for p in ports for room in per_shard[p]]
            asyncio.run(publish_all(nodes[0], 300, False, rooms, nodes[1]))  # warm up: scripts, subscriptions
            before = {p: (commandstats(p), cpu_seconds(redis[p].pid)) for p in ports}
            asyncio.run(publish_all(nodes[0], args.messages, False, rooms, nodes[1]))
            after = {p: (commandstats(p), cpu_seconds(redis[p].pid)) for p in ports}
        finally:
            for p in procs:
                p.terminate()
                p.wait(10)
    n = args.messages
    print(f"{n} persisted publishes over {len(rooms)} rooms on 3 masters, from node a to members on node b "
          f"(INFO commandstats and CPU of each master, after minus before; per message)")
    print("| shard | rooms | commands per message (all) | by command | CPU us per message |")
    print("| --- | --- | --- | --- | --- |")
    total, total_cpu = {}, 0.0
    for i, p in enumerate(ports):
        calls = {c: after[p][0].get(c, 0) - before[p][0].get(c, 0) for c in after[p][0]}
        calls = {c: v for c, v in calls.items() if v > 0}
        for c, v in calls.items():
            total[c] = total.get(c, 0) + v
        cpu = (after[p][1] - before[p][1]) / n * 1e6
        total_cpu += cpu
        by = ", ".join(f"{c} {v / n:.3f}" for c, v in sorted(calls.items(), key=lambda kv: -kv[1]))
        print(f"| {i + 1} | {len(per_shard[p])} | {sum(calls.values()) / n:.3f} | {by} | {cpu:.1f} |")
    by = ", ".join(f"{c} {v / n:.3f}" for c, v in sorted(total.items(), key=lambda kv: -kv[1]))
    print(f"| all | {len(rooms)} | {sum(total.values()) / n:.3f} | {by} | {total_cpu:.1f} |")


if __name__ == "__main__":
    main()
