"""Redis Sentinel (docs/protocol.md section 6, docs/operations.md "Redis
links"): with --redis redis+sentinel://S1,S2,S3/MASTER a node asks the
sentinels where the master is, follows a failover to the promoted replica
by itself while its clients stay connected, and serves again: joins,
publishes with offsets and deliveries work on the new master. Everything
runs on loopback: a master, a replica and three sentinels (redis-server in
sentinel mode), started and stopped by PID."""

import os
import signal
import subprocess
import time

import pytest

from conftest import HOST, REDIS_SERVER_BIN, SLOW, free_port, readyz, redis_lib, run, wait_ready, wait_until
from protocol_client import connect, uniq

MASTER = "wsfanmaster"


class Sentinel:
    def __init__(self, tmp_path, master_port):
        self.port = free_port()
        conf = tmp_path / f"sentinel-{self.port}.conf"
        conf.write_text(f"port {self.port}\nbind {HOST}\ndir {tmp_path}\n"
                        f"sentinel monitor {MASTER} {HOST} {master_port} 2\n"
                        f"sentinel down-after-milliseconds {MASTER} 1000\n"
                        f"sentinel failover-timeout {MASTER} 4000\n"
                        f"sentinel parallel-syncs {MASTER} 1\n")
        self.log = open(tmp_path / f"sentinel-{self.port}.log", "wb")
        self.proc = subprocess.Popen([REDIS_SERVER_BIN, str(conf), "--sentinel"], stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.client = redis_lib().Redis(host=HOST, port=self.port, decode_responses=True, socket_timeout=2.0)

    def master_addr(self):
        try:
            return tuple(self.client.execute_command("SENTINEL", "get-master-addr-by-name", MASTER) or ())
        except Exception:
            return ()

    def replicas(self):
        try:
            return self.client.execute_command("SENTINEL", "replicas", MASTER)
        except Exception:
            return []

    def stop(self):
        self.client.close()
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


@pytest.fixture
def sentinels(tmp_path):
    made = []

    def make(master_port, n=3):
        for _ in range(n):
            made.append(Sentinel(tmp_path, master_port))
        return made

    yield make
    for s in made:
        s.stop()


def test_a_node_follows_a_sentinel_failover_with_its_clients_connected(redis_factory, sentinels, wsfan):
    master, replica = redis_factory(), redis_factory()
    replica.client().execute_command("REPLICAOF", HOST, str(master.port))
    wait_until(lambda: (replica.client().info("replication").get("master_link_status") == "up",
                        "replica not in sync"), "the replica should sync with the master", 10)
    ss = sentinels(master.port)
    wait_until(lambda: (all(s.master_addr() == (HOST, str(master.port)) and s.replicas() for s in ss),
                        [(s.master_addr(), len(s.replicas())) for s in ss]),
               "every sentinel should know the master and its replica", 20)
    url = "redis+sentinel://" + ",".join(f"{HOST}:{s.port}" for s in ss) + f"/{MASTER}"
    node = wsfan("--redis", url, "--node-id", "sent-a", "--redis-timeout", "1000",
                 "--redis-backoff-min", "100", "--redis-backoff-max", "500")
    wait_ready(node)
    room = uniq("failover")

    async def scenario():
        member = await connect(node, uniq("m"))
        try:
            await member.join(room)
            before = await member.request({"type": "publish", "room": room, "data": {"n": 1}, "ref": 1})
            assert before["type"] == "ack" and before["offset"], before
            await member.recv_until("message", room=room, data={"n": 1})

            master.kill()
            wait_until(lambda: (readyz(node) == 503, "200"), "the node should be unready once the master is gone", 5)
            wait_until(lambda: (all(s.master_addr() == (HOST, str(replica.port)) for s in ss),
                                [s.master_addr() for s in ss]), "the sentinels should promote the replica", 30)
            wait_until(lambda: (readyz(node) == 200, "503"), "the node should follow the new master", 15)

            after = await member.request({"type": "publish", "room": room, "data": {"n": 2}, "ref": 2})
            assert after["type"] == "ack" and after["offset"], after
            await member.recv_until("message", room=room, data={"n": 2})
            other = await connect(node, uniq("o"))
            try:
                await other.join(room)
                history = await other.history(room)
                assert {"n": 2} in [m["data"] for m in history["messages"]], history
            finally:
                await other.close()
        finally:
            await member.close()

    run(scenario(), 90)
    assert f"{HOST}:{replica.port}" in node.log(), node.log_tail()


def test_unknown_master_name_is_retried_and_reported(redis_factory, sentinels, wsfan):
    master = redis_factory()
    ss = sentinels(master.port, n=1)
    wait_until(lambda: (ss[0].master_addr() == (HOST, str(master.port)), ss[0].master_addr()),
               "the sentinel should know the master", 10)
    node = wsfan("--redis", f"redis+sentinel://{HOST}:{ss[0].port}/nosuchmaster", "--node-id", "sent-b",
                 "--redis-timeout", "1000", "--redis-backoff-min", "100", "--redis-backoff-max", "200")
    time.sleep(1.0 * SLOW)
    assert readyz(node) == 503
    assert "does not know master nosuchmaster" in node.log(), node.log_tail()
