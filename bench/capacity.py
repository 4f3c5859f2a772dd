#!/usr/bin/python3
"""capacity.py - how many wsfan nodes, cores, gigabytes and Redis shards a
workload needs, from per-core figures measured on this project's machine
(docs/benchmarks.md, bench/idle_memory.py, bench/redis_cost.py) and the
assumptions docs/scaling.md states. Every figure is an option, so anyone
can rerun the model with their own measurements:

    bench/capacity.py                         # the scenarios of docs/scaling.md
    bench/capacity.py --connections 2e6 --publish-rate 5e4 --fanout 20

The model, per second of peak load:
- deliveries = publishes x fan-out (recipients per message);
- worker cores = deliveries / deliveries per core, over the target core
  utilisation; nodes = the larger of that over the cores per node and of
  the connections over the connections per node, and at least --min-nodes;
- memory per node = its connections x (wsfan's bytes + the kernel's bytes
  per connection), plus a fixed base;
- Redis: every message is one PUBLISH (persisted ones run the append
  script instead) and reaches every node with a member of its room, so
  pub/sub deliveries = publishes x nodes per room; Redis CPU = persisted x
  script cost + publishes x publish cost + pub/sub deliveries x the cost of
  one delivery; shards = that CPU over the target utilisation of one
  Redis core (sharded pub/sub spreads rooms over shards: docs/protocol.md
  section 6)."""

import argparse
import math

MEASURED = {
    # docs/benchmarks.md, section 2 (rooms: 100 rooms x 50 subscribers), one core,
    # 100-byte payloads on loopback; the fan-out scenario reaches 9.95M with one big room.
    "deliveries_per_core": 5.2e6,
    # bench/idle_memory.py --connections 9000 (fresh server, one user per connection)
    "wsfan_bytes_per_connection": 720,
    # bench/scale.py (make bench-scale), 100,000 connections on 6 nodes: kernel slab per
    # socket (TCP 2,413, sock_inode_cache 848, proc_inode_cache 702, dentry 374, filp 196,
    # eventpoll_epi 127); an idle socket holds no buffer pages (26 bytes measured)
    "kernel_bytes_per_connection": 5126,
    # bench/redis_cost.py: redis-server CPU per persisted publish with an idempotency key
    "redis_script_us": 20.0,
}
ASSUMED = {
    # a PUBLISH without history (ephemeral, direct): assumed a third of the script
    "redis_publish_us": 7.0,
    # one pub/sub delivery to one subscribed node: Centrifugo's published figure of about
    # 650k deliveries per second per Redis instance (not measured here)
    "redis_delivery_us": 1.5,
    "cores_per_node": 8,
    "connections_per_node": 500_000,  # descriptors and one node's blast radius, not a limit
    "min_nodes": 2,                   # one may fail; 1 to plan a single machine
    "target_utilisation": 0.5,        # headroom for bursts, reconnect storms and failover
    "node_base_bytes": 512 << 20,
    "send_buffer_bytes_busy": 16384,  # kernel send buffer of a connection with traffic in flight
}

SCENARIOS = [
    # name, connections, publishes/s, fan-out, persisted share, nodes per room, busy share
    ("chat, 1M users: 1% send a message a minute into rooms of 50", 1e6, 1e6 * 0.01 / 60, 50, 1.0, 8, 0.05),
    ("chat, 10M users: the same", 10e6, 10e6 * 0.01 / 60, 50, 1.0, 16, 0.05),
    ("notifications, 10M users: 2,000 per second to one user each", 10e6, 2000, 1.5, 0.0, 1, 0.01),
    ("live dashboard, 1M viewers of 100 boards, 10 updates/s each", 1e6, 1000, 10_000, 0.0, 20, 1.0),
]


def plan(p, connections, publishes, fanout, persisted, nodes_per_room, busy):
    deliveries = publishes * fanout
    cores = deliveries / p["deliveries_per_core"] / p["target_utilisation"]
    nodes = max(math.ceil(cores / p["cores_per_node"]), math.ceil(connections / p["connections_per_node"]),
                int(p["min_nodes"]))
    per_node = connections / nodes
    memory = p["node_base_bytes"] + per_node * (p["wsfan_bytes_per_connection"] + p["kernel_bytes_per_connection"] +
                                                busy * p["send_buffer_bytes_busy"])
    nodes_reached = min(nodes_per_room, nodes)
    redis_us = (publishes * persisted * p["redis_script_us"] + publishes * (1 - persisted) * p["redis_publish_us"] +
                publishes * nodes_reached * p["redis_delivery_us"])
    shards = max(1, math.ceil(redis_us / 1e6 / p["target_utilisation"]))
    return {
        "deliveries/s": deliveries,
        "worker cores": cores,
        "nodes": nodes,
        "GiB per node": memory / 2**30,
        "Redis cores busy": redis_us / 1e6,
        "Redis shards": shards,
    }


def fmt(v):
    return f"{v:,.0f}" if v >= 100 or isinstance(v, int) else f"{v:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for k, v in {**MEASURED, **ASSUMED}.items():
        ap.add_argument("--" + k.replace("_", "-"), type=float, default=v)
    ap.add_argument("--connections", type=float, help="one scenario of your own instead of the built-in ones")
    ap.add_argument("--publish-rate", type=float, default=1000)
    ap.add_argument("--fanout", type=float, default=50)
    ap.add_argument("--persisted", type=float, default=1.0, help="share of publishes kept in history")
    ap.add_argument("--nodes-per-room", type=float, default=8)
    ap.add_argument("--busy", type=float, default=0.05, help="share of connections with traffic in flight")
    args = ap.parse_args()
    p = {k: getattr(args, k) for k in {**MEASURED, **ASSUMED}}
    for k in ("deliveries_per_core", "cores_per_node", "connections_per_node", "min_nodes", "target_utilisation"):
        if p[k] <= 0:
            ap.error("--%s %g: expected a number above 0" % (k.replace("_", "-"), p[k]))
    scenarios = SCENARIOS if args.connections is None else [
        ("your workload", args.connections, args.publish_rate, args.fanout, args.persisted, args.nodes_per_room,
         args.busy)]
    rows = [(s[0], plan(p, *s[1:])) for s in scenarios]
    keys = list(rows[0][1])
    print("| scenario | " + " | ".join(keys) + " |")
    print("| --- " * (len(keys) + 1) + "|")
    for name, r in rows:
        print(f"| {name} | " + " | ".join(fmt(r[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
