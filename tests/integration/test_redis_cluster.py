"""wsfan on a real Redis Cluster (PROTOCOL.md section 6, 1.1): three masters
and three replicas of Debian's redis-server on free loopback ports, made by
`redis-cli --cluster create` and stopped by PID; wsfan nodes on
`--redis redis+cluster://...`.

- Room messages cross three nodes for rooms on every shard, published with
  SPUBLISH on the room's shard (never PUBLISH), and any Redis client can
  SPUBLISH {"data":..} into a room.
- A node holds a sharded subscription (PUBSUB SHARDNUMSUB on the owning
  shard) exactly while it has a member of the room, under join/leave churn.
- History and recovery equal XRANGE of NS:history:{R} on the owning shard.
- A busy room's slot migrated to another master mid-traffic (CLUSTER SETSLOT
  IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE): no message lost, and the node
  is subscribed on the new owner.
- A master killed mid-traffic and its replica promoted: the node follows,
  and gap fill delivers every acknowledged message.
Every wait is bounded; the cluster is built once for the module."""

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest

from conftest import HOST, REPO, SLOW, await_until, redis_lib, redis_node, run, wait_until
from protocol_client import connect, uniq

sys.path.insert(0, str(REPO / "bench"))
from cluster_cost import cluster_port  # noqa: E402  (a port whose cluster bus port is free too)

NS = "wsfan"
REDIS_SERVER = "/usr/bin/redis-server"
REDIS_CLI = "/usr/bin/redis-cli"


class RedisCluster:
    """redis-server processes in cluster mode: 3 masters, and a replica each
    unless replicas is 0. With certs (a directory holding ca.pem, redis.pem
    and redis.key), each node also has a tls-port (self.tls_ports[port]),
    the cluster bus speaks TLS, and url() is rediss+cluster:// on the TLS
    ports; the plain ports stay for the tests' own clients."""

    def __init__(self, log_dir: Path, replicas: int = 1, certs: Optional[Path] = None):
        self.log_dir = log_dir
        self.certs = certs
        self.procs = {}  # port -> Popen
        self.ports = [cluster_port() for _ in range(3 * (1 + replicas))]
        self.tls_ports = {p: cluster_port() for p in self.ports} if certs else {}  # Redis wants them low too
        for port in self.ports:
            self.start(port)
        cmd = [REDIS_CLI, "--cluster", "create", *[f"{HOST}:{p}" for p in self.ports], "--cluster-replicas",
               str(replicas), "--cluster-yes"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"redis-cli --cluster create failed: {out.stdout}\n{out.stderr}"
        wait_until(lambda: (self.state_ok(), self.client(self.ports[0]).execute_command("CLUSTER", "INFO")),
                   "the cluster to be ok on every node", 20.0)
        # Replicas show in CLUSTER SLOTS once they have synced.
        wait_until(lambda: (all(rs for _, _, _, rs in self.slots()) or not replicas, self.slots()),
                   "every master to have a synced replica", 20.0)

    def start(self, port: int):
        d = self.log_dir / f"cluster-{port}"
        d.mkdir(exist_ok=True)
        log = open(d / "redis.log", "wb")
        tls = ["--tls-port", str(self.tls_ports[port]), "--tls-cluster", "yes", "--tls-auth-clients", "no",
               "--tls-cert-file", str(self.certs / "redis.pem"), "--tls-key-file", str(self.certs / "redis.key"),
               "--tls-ca-cert-file", str(self.certs / "ca.pem")] if self.certs else []
        self.procs[port] = subprocess.Popen(
            [REDIS_SERVER, "--port", str(port), "--bind", HOST, "--cluster-enabled", "yes",
             "--cluster-config-file", str(d / "nodes.conf"), "--cluster-node-timeout", "1000",
             "--save", "", "--appendonly", "no", "--dir", str(d), "--daemonize", "no", *tls],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client(port).ping():
                    return
            except Exception:
                time.sleep(0.05)
        raise AssertionError(f"redis-server {port} did not start")

    def client(self, port: int):
        return redis_lib().Redis(host=HOST, port=port, decode_responses=True, socket_timeout=5.0,
                                 socket_connect_timeout=2.0)

    def alive_ports(self):
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def state_ok(self) -> bool:
        for p in self.alive_ports():
            info = self.client(p).execute_command("CLUSTER", "INFO")
            if "cluster_state:ok" not in (info if isinstance(info, str) else str(info)):
                return False
        return True

    def url(self) -> str:
        if self.certs:
            return "rediss+cluster://" + ",".join(f"{HOST}:{self.tls_ports[p]}" for p in self.ports[:2])
        return "redis+cluster://" + ",".join(f"{HOST}:{p}" for p in self.ports[:2])

    def slots(self):
        """[(start, end, master port, [replica ports])] from a live node."""
        for p in self.alive_ports():
            try:
                raw = self.client(p).execute_command("CLUSTER", "SLOTS")
            except Exception:
                continue
            return [(int(r[0]), int(r[1]), int(r[2][1]), [int(x[1]) for x in r[3:]]) for r in raw]
        raise AssertionError("no cluster node answers")

    def masters(self):
        return sorted({m for _, _, m, _ in self.slots()})

    def keyslot(self, key: str) -> int:
        return int(self.client(self.alive_ports()[0]).execute_command("CLUSTER", "KEYSLOT", key))

    def owner(self, key: str) -> int:
        s = self.keyslot(key)
        for a, b, m, _ in self.slots():
            if a <= s <= b:
                return m
        raise AssertionError(f"no owner for slot {s}")

    def node_id(self, port: int) -> str:
        return self.client(port).execute_command("CLUSTER", "MYID")

    def kill(self, port: int):
        self.procs[port].kill()
        self.procs[port].wait(10)

    def stop(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = RedisCluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.stop()


@pytest.fixture(scope="module")
def nodes(cluster, wsfan_module):
    ns = [redis_node(wsfan_module, cluster.url(), f"c{i}", "--workers", "1", "--redis-timeout", "1000")
          for i in range(3)]
    yield ns
    for n in ns:
        assert n.alive(), f"node {n.node_id} died during the module; log:\n{n.log_tail()}"


def rooms_on_every_shard(cluster, prefix: str):
    """One room name per master, found by asking the cluster for slots."""
    found = {}
    for i in range(2000):
        room = f"{prefix}{i}"
        m = cluster.owner(f"{NS}:room:{{{room}}}")
        found.setdefault(m, room)
        if len(found) == len(cluster.masters()):
            return found
    raise AssertionError(f"could not find a room on every shard: {found}")


def shard_numsub(cluster, room: str) -> int:
    channel = f"{NS}:room:{{{room}}}"
    res = cluster.client(cluster.owner(channel)).execute_command("PUBSUB", "SHARDNUMSUB", channel)
    return int(res[1])


def msgs(c, room):
    return [m for m in c.log if m["type"] == "message" and m.get("room") == room]


def test_rooms_on_every_shard_reach_members_on_three_nodes(cluster, nodes):
    rooms = rooms_on_every_shard(cluster, uniq("shard"))

    async def scenario():
        cs = [await connect(n, uniq("m")) for n in nodes]
        try:
            for room in rooms.values():
                for c in cs:
                    await c.join(room)
            for i, room in enumerate(rooms.values()):
                await cs[i % 3].publish(room, {"i": i})
            for i, room in enumerate(rooms.values()):
                for c in cs:
                    m = await c.recv_match(lambda m: m["type"] == "message" and m.get("room") == room,
                                           f"the message of {room}", 5.0)
                    assert m["data"] == {"i": i} and m.get("offset"), m
            # Any Redis client publishes into a room with SPUBLISH on its shard.
            room = next(iter(rooms.values()))
            channel = f"{NS}:room:{{{room}}}"
            cluster.client(cluster.owner(channel)).execute_command("SPUBLISH", channel,
                                                                   json.dumps({"data": "from redis"}))
            for c in cs:
                await c.recv_match(lambda m: m.get("room") == room and m.get("data") == "from redis",
                                   "the SPUBLISHed message", 5.0)
        finally:
            for c in cs:
                await c.close()

    run(scenario(), 40)
    # The messages went by SPUBLISH on each room's shard, not by PUBLISH.
    for m in cluster.masters():
        stats = cluster.client(m).info("commandstats")
        assert "cmdstat_publish" not in stats or stats["cmdstat_publish"]["calls"] < 50, stats.get("cmdstat_publish")


def test_sharded_subscription_follows_local_interest(cluster, nodes):
    rooms = list(rooms_on_every_shard(cluster, uniq("churn")).values())

    async def scenario():
        for round_ in range(3):
            cs = [await connect(n, uniq("u")) for n in nodes[:2]]
            for room in rooms:
                for c in cs:
                    await c.join(room)
            await await_until(lambda: (all(shard_numsub(cluster, r) == 2 for r in rooms),
                                {r: shard_numsub(cluster, r) for r in rooms}),
                       f"round {round_}: two nodes subscribed to every room", 5.0)
            await cs[0].leave(rooms[0])
            await cs[0].close()
            await await_until(lambda: (shard_numsub(cluster, rooms[0]) == 1, shard_numsub(cluster, rooms[0])),
                       "one node left after the other's last member left", 5.0)
            await cs[1].close()
            await await_until(lambda: (all(shard_numsub(cluster, r) == 0 for r in rooms),
                                {r: shard_numsub(cluster, r) for r in rooms}),
                       "no subscription left once no node has a member", 5.0)

    run(scenario(), 60)


def test_history_and_recovery_equal_xrange_on_the_owning_shard(cluster, nodes):
    rooms = rooms_on_every_shard(cluster, uniq("hist"))

    async def scenario():
        c = await connect(nodes[0], uniq("h"))
        try:
            first = {}
            for room in rooms.values():
                await c.join(room)
                acks = [await c.publish(room, {"k": k}) for k in range(5)]
                first[room] = acks[0]["offset"]
            out = {}
            for room in rooms.values():
                out[room] = await c.history(room, limit=10)
            return out
        finally:
            await c.close()

    got = run(scenario(), 30)
    for master, room in rooms.items():
        key = f"{NS}:history:{{{room}}}"
        ids = [i for i, _ in cluster.client(master).xrange(key)]
        assert len(ids) == 5
        offsets = sorted(m["offset"] for m in got[room]["messages"])
        assert offsets == ids, (room, offsets, ids)


def migrate_slot(cluster, slot: int, src: int, dst: int):
    """Moves a slot from master src to master dst with its keys."""
    s, d = cluster.client(src), cluster.client(dst)
    src_id, dst_id = cluster.node_id(src), cluster.node_id(dst)
    d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    for _ in range(100):
        keys = s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
        if not keys:
            break
        s.execute_command("MIGRATE", HOST, dst, "", 0, 5000, "KEYS", *keys)
    time.sleep(0.3)  # keys on dst, slot still src's: the publishes meanwhile are redirected with ASK
    # The source gives the slot up first. Until the destination hears of
    # it, each sends the slot's commands to the other (MOVED both ways): a
    # window any resharding may open, held open here.
    s.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    time.sleep(0.3)
    for port in cluster.masters():
        if port != src:
            cluster.client(port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)


async def publish_steadily(c, room, n, pause=0.01):
    acks = []
    for k in range(n):
        try:
            acks.append((k, await c.publish(room, {"k": k})))
        except AssertionError:
            pass  # refused (unavailable) while the shard moves: not acknowledged, not expected
        await asyncio.sleep(pause)
    return acks


async def collect(sub, room, acks, seconds):
    """What was acknowledged, and what sub received of it within seconds."""
    want = {json.dumps({"k": k}) for k, _ in acks}
    got = set()
    deadline = time.monotonic() + seconds * SLOW
    while not want <= got and time.monotonic() < deadline:
        try:
            m = await sub.recv_match(lambda m: m["type"] == "message" and m.get("room") == room,
                                     "the room's messages", max(0.1, deadline - time.monotonic()) / SLOW)
        except AssertionError:
            break
        got.add(json.dumps(m["data"]))
    return want, got


def test_slot_migration_mid_traffic_loses_nothing(cluster, nodes):
    room = uniq("moving")
    channel = f"{NS}:room:{{{room}}}"
    src = cluster.owner(channel)
    dst = next(m for m in cluster.masters() if m != src)
    slot = cluster.keyslot(channel)

    def asking():
        return int(cluster.client(dst).info("commandstats").get("cmdstat_asking", {}).get("calls", 0))
    asking_before = asking()

    async def scenario():
        sub = await connect(nodes[1], uniq("sub"))
        pub = await connect(nodes[0], uniq("pub"))
        try:
            await sub.join(room)
            await pub.join(room)
            traffic = asyncio.ensure_future(publish_steadily(pub, room, 80))
            await asyncio.sleep(0.3)
            await asyncio.get_running_loop().run_in_executor(None, migrate_slot, cluster, slot, src, dst)
            acks = await traffic
            out = await collect(sub, room, acks, 10.0)
            # Both nodes with members are subscribed on the new owner.
            await await_until(lambda: (shard_numsub(cluster, room) == 2, shard_numsub(cluster, room)),
                              "both nodes subscribed on the new owner", 5.0)
            return out
        finally:
            await sub.close()
            await pub.close()

    want, got = run(scenario(), 60)
    assert len(want) == 80, f"every publish is acknowledged during a migration (TRYAGAIN is retried): {len(want)}"
    assert want <= got, f"lost in the migration: {len(want - got)} of {len(want)}: {sorted(want - got)[:10]}"
    assert cluster.owner(channel) == dst
    assert asking() > asking_before, "publishes during the migration were sent to the new owner after ASKING"
    wait_until(lambda: (shard_numsub(cluster, room) == 0, shard_numsub(cluster, room)),
               "subscriptions follow the slot (none left once the members are gone)", 5.0)


def test_master_failover_mid_traffic_gap_fill(cluster, nodes):
    room = uniq("failover")
    channel = f"{NS}:room:{{{room}}}"
    victim = cluster.owner(channel)
    replica = next(r for a, b, m, rs in cluster.slots() if m == victim for r in rs)

    async def scenario():
        sub = await connect(nodes[2], uniq("sub"))
        pub = await connect(nodes[0], uniq("pub"))
        try:
            await sub.join(room)
            await pub.join(room)
            traffic = asyncio.ensure_future(publish_steadily(pub, room, 200, pause=0.03))
            await asyncio.sleep(0.5)
            cluster.kill(victim)
            acks = await traffic
            return await collect(sub, room, acks, 15.0)
        finally:
            await sub.close()
            await pub.close()

    want, got = run(scenario(), 90)
    assert cluster.owner(channel) == replica, "the replica was promoted"
    assert len(want) >= 30, f"publishes are acknowledged again after the failover: {len(want)}"
    assert want <= got, f"acknowledged but not delivered: {sorted(want - got)[:10]}"


def test_room_counts_and_presence_across_shards(cluster, nodes):
    """GET /api/rooms adds up the nodes' counts, each kept under its own node
    id's tag (NS:rooms:{NODE}, spread over the shards); presence lives in the
    room's hash on the room's shard."""
    from conftest import http_get
    rooms = list(rooms_on_every_shard(cluster, uniq("count")).values())

    async def scenario():
        cs = []
        for i, room in enumerate(rooms):
            for n in nodes[: i + 1]:
                c = await connect(n, uniq("p"))
                await c.join(room)
                cs.append(c)
        try:
            def settled():
                got = json.loads(http_get(nodes[0].port, "/api/rooms").body)["rooms"]
                seen = {r["room"]: r["cluster"] for r in got if r["room"] in rooms}
                return seen == {room: i + 1 for i, room in enumerate(rooms)}, seen
            await await_until(settled, "every node's counts added up", 10.0)
            for n in nodes:
                key = f"{NS}:rooms:{{{n.node_id}}}"
                assert cluster.client(cluster.owner(key)).exists(key), f"{key} on the shard of its tag"
            return await cs[-1].presence(rooms[-1])
        finally:
            for c in cs:
                await c.close()

    listed = run(scenario(), 40)
    assert len(listed.get("users", listed.get("presence", []))) == 3, listed
