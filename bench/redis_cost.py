#!/usr/bin/python3
"""redis_cost.py - CPU time per persisted publish, in wsfan and in Redis,
for two wsfan binaries alternated in one sitting:

    bench/redis_cost.py BEFORE_BIN AFTER_BIN [--messages N] [--repeats R] [--keys]

Each run starts a fresh redis-server and one wsfan node on free loopback
ports, joins one room with one member, publishes N persisted messages (64
in flight, each acknowledged; with --keys, each with an idempotency key),
waits for the member to receive them all, and reads the CPU time (user +
system, from /proc) that wsfan and redis-server spent meanwhile. The
binaries alternate, their order swapped every other repeat; the report
gives microseconds per message, the median over the repeats, and the
ratio after/before. CPU time, not wall time: the machine is shared."""

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import websockets

TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wait_port(port, proc, what):
    for _ in range(200):
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen on {port}")


async def publish_all(port, n, keys, rooms=("bench",), member_port=None):
    """Joins a publisher (on port) and a member (on member_port, default
    port) to rooms, publishes n persisted messages round-robin over them (64
    in flight, each acknowledged) and waits until the member has them all.
    Also used by bench/cluster_cost.py."""
    url = "ws://127.0.0.1:{}/ws?user={}"
    nonce = os.urandom(4).hex()  # keys of one run only: a repeat would publish nothing
    async with websockets.connect(url.format(port, "pub"), max_size=None) as pub, \
            websockets.connect(url.format(member_port or port, "member"), max_size=None) as member:
        for ws in (pub, member):
            await ws.recv()  # welcome
            for room in rooms:
                await ws.send(json.dumps({"type": "join", "room": room, "ref": room}))
                while json.loads(await ws.recv()).get("type") != "joined":
                    pass
        received = 0

        async def read_member():
            nonlocal received
            while received < n:
                if json.loads(await member.recv()).get("type") == "message":
                    received += 1

        reader = asyncio.create_task(read_member())
        sent = acked = 0
        while acked < n:
            while sent < n and sent - acked < 64:
                cmd = {"type": "publish", "room": rooms[sent % len(rooms)], "data": {"n": sent, "text": "x" * 64},
                       "ref": sent}
                if keys:
                    cmd["key"] = f"{nonce}-{sent}"
                await pub.send(json.dumps(cmd))
                sent += 1
            reply = json.loads(await pub.recv())
            if reply.get("type") == "ack":
                acked += 1
            elif reply.get("type") == "error":
                sys.exit(f"publish refused: {reply}")
        try:
            await asyncio.wait_for(reader, 60)
        except asyncio.TimeoutError:
            sys.exit(f"the member received {received} of {n} messages")


def one_run(binary, n, keys):
    with tempfile.TemporaryDirectory() as tmp:
        rport, wport = free_port(), free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
        wait_port(rport, redis, "redis-server")
        node = subprocess.Popen([binary, "--listen", f"127.0.0.1:{wport}", "--workers", "1", "--rate-limit", "0",
                                 "--redis", f"redis://127.0.0.1:{rport}", "--log-level", "warn"],
                                stderr=subprocess.DEVNULL)
        try:
            wait_port(wport, node, binary)
            time.sleep(0.5)  # the Redis links come up
            asyncio.run(publish_all(wport, 200, keys))  # warm up: scripts loaded, room subscribed
            w0, r0 = cpu_seconds(node.pid), cpu_seconds(redis.pid)
            asyncio.run(publish_all(wport, n, keys))
            return (cpu_seconds(node.pid) - w0) / n * 1e6, (cpu_seconds(redis.pid) - r0) / n * 1e6
        finally:
            for p in (node, redis):
                p.terminate()
                p.wait(10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keys", action="store_true", help="an idempotency key on every publish")
    args = ap.parse_args()
    runs = {"before": [], "after": []}
    for i in range(args.repeats):
        order = ["before", "after"] if i % 2 == 0 else ["after", "before"]
        for which in order:
            runs[which].append(one_run(getattr(args, which), args.messages, args.keys))
    print(f"CPU microseconds per persisted publish ({args.messages} messages{', each with a key' if args.keys else ''}, "
          f"median of {args.repeats})")
    print("| binary | wsfan | redis-server |")
    print("| --- | --- | --- |")
    med = {}
    for which in ("before", "after"):
        med[which] = [statistics.median(r[k] for r in runs[which]) for k in (0, 1)]
        print(f"| {which} | {med[which][0]:.1f} | {med[which][1]:.1f} |")
    print(f"| after/before | {med['after'][0] / med['before'][0]:.2f} | {med['after'][1] / med['before'][1]:.2f} |")


if __name__ == "__main__":
    main()
