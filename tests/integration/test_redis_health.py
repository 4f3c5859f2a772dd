"""Redis links never hang on a Redis that stopped answering (docs/operations.md,
"Redis links"): a link whose health check (PING, or the subscriber's probe
through pub/sub) does not come back within --redis-timeout is torn down and
reconnected, /readyz answers 503 within about that time instead of when TCP
notices, a publish meanwhile is refused at once with `unavailable` instead of
waiting for Redis, and everything comes back by itself when Redis answers
again. A Redis paused with CLIENT PAUSE and one stopped with SIGSTOP (packets
accepted by the kernel, never answered: what a partition looks like) are
both covered."""

import os
import signal
import time

from conftest import SLOW, http_get, readyz, redis_node, run, wait_until
from protocol_client import connect, offset_key, uniq

TIMEOUT_MS = 1000


def health_node(wsfan, redis_server, node_id):
    return redis_node(wsfan, redis_server, node_id, "--redis-timeout", str(TIMEOUT_MS),
                      "--redis-backoff-min", "100", "--redis-backoff-max", "300")


def seconds_until_not_ready(srv, bound):
    """Polls /readyz until it answers 503; returns how long that took."""
    start = time.monotonic()
    wait_until(lambda: (readyz(srv, timeout=1.0) == 503, "still 200"),
               f"/readyz should answer 503 within {bound} s of Redis going silent", bound)
    return time.monotonic() - start


async def publish_answer(c, room, data):
    """The reply to one publish, and how long it took."""
    start = time.monotonic()
    reply = await c.request({"type": "publish", "room": room, "data": data}, timeout=10.0)
    return reply, time.monotonic() - start


def test_a_paused_redis_makes_the_node_unready_fast_and_it_recovers(redis_server, wsfan):
    node = health_node(wsfan, redis_server, "paused")
    room = uniq("paused")

    async def scenario():
        member = await connect(node, uniq("m"))
        try:
            await member.join(room)
            r = redis_server.client()
            # Commands wait until the pause ends; so would an UNPAUSE.
            r.execute_command("CLIENT", "PAUSE", str(int(4000 * SLOW)), "ALL")
            took = seconds_until_not_ready(node, 4)
            assert took < 4 * SLOW, f"/readyz took {took:.1f} s to fail"
            reply, took = await publish_answer(member, room, {"during": 1})
            assert reply["type"] == "error" and reply["code"] == "unavailable", reply
            assert took < 1.0 * SLOW, f"a publish while the link is down waited {took:.1f} s"
            wait_until(lambda: (readyz(node) == 200, "503"), "/readyz should be 200 again once Redis answers", 8)
            reply, _ = await publish_answer(member, room, {"after": 1})
            assert reply["type"] == "ack" and reply["offset"], reply
            await member.recv_until("message", room=room, data={"after": 1})
        finally:
            await member.close()

    run(scenario(), 40)
    assert "no answer in 1000 ms, reconnecting" in node.log(), node.log_tail()


def test_a_stopped_redis_is_noticed_without_tcp_and_the_node_recovers(redis_server, wsfan):
    """SIGSTOP: the kernel still accepts and acknowledges, nothing answers."""
    node = health_node(wsfan, redis_server, "stopped")
    room = uniq("stopped")

    async def scenario():
        member = await connect(node, uniq("m"))
        try:
            await member.join(room)
            os.kill(redis_server.pid, signal.SIGSTOP)
            try:
                took = seconds_until_not_ready(node, 4)
                assert took < 4 * SLOW, f"/readyz took {took:.1f} s to fail"
                assert http_get(node.port, "/healthz").status == 200
            finally:
                os.kill(redis_server.pid, signal.SIGCONT)
            wait_until(lambda: (readyz(node) == 200, "503"), "/readyz should be 200 again once Redis answers", 8)
            reply, _ = await publish_answer(member, room, {"after": 2})
            assert reply["type"] == "ack" and reply["offset"], reply
            await member.recv_until("message", room=room, data={"after": 2})
        finally:
            await member.close()

    run(scenario(), 40)


def test_healthy_links_are_not_reconnected(redis_server, wsfan):
    """The health checks themselves never make a healthy link look dead:
    PINGs and the subscriber's probes come back, for several timeouts."""
    node = health_node(wsfan, redis_server, "healthy")
    time.sleep(4 * TIMEOUT_MS / 1000)
    assert readyz(node) == 200
    assert "reconnecting" not in node.log(), node.log_tail()
    pubsub = redis_server.client().execute_command("PUBSUB", "CHANNELS", "wsfan:probe:*")
    assert [c.decode() if isinstance(c, bytes) else c for c in pubsub] == ["wsfan:probe:{healthy}"], pubsub


def test_a_message_in_history_reaches_members_without_its_pubsub_copy(redis_server, wsfan):
    """Position sync: a message that is in the room's history but whose
    pub/sub copy never arrived (here: written into the stream with XADD and
    never published) reaches every live member within about two checks,
    once, in order, and the repair is counted in /metrics."""
    node = redis_node(wsfan, redis_server, "positions", "--position-sync", "300")
    room = uniq("positions")
    r = redis_server.client()

    async def scenario():
        member = await connect(node, uniq("m"))
        try:
            await member.join(room)
            lost = r.xadd(f"wsfan:history:{{{room}}}", {"f": "", "t": str(int(time.time() * 1000)), "d": '{"lost":1}'})
            got = await member.recv_until("message", room=room, data={"lost": 1}, timeout=5)
            assert got["offset"] == lost, (got, lost)
            reply = await member.request({"type": "publish", "room": room, "data": {"next": 1}, "ref": 1})
            await member.recv_until("message", room=room, data={"next": 1})
            await member.drain(0.5)
            messages = [m for m in member.log if m["type"] == "message" and m.get("room") == room]
            assert [m["data"] for m in messages] == [{"lost": 1}, {"next": 1}], messages
            assert offset_key(reply["offset"]) > offset_key(lost), (reply, lost)
        finally:
            await member.close()

    run(scenario(), 30)
    metrics = http_get(node.port, "/metrics").body.decode()
    repairs = [ln for ln in metrics.splitlines() if ln.startswith("wsfan_position_repairs_total ")]
    assert repairs and int(repairs[0].split()[1]) >= 1, repairs
