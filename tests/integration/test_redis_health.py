"""Redis links never hang on a Redis that stopped answering (docs/operations.md,
"Redis links"): a link whose health check (PING, or the subscriber's probe
through pub/sub) does not come back within --redis-timeout is torn down and
reconnected, /readyz answers 503 within about that time instead of when TCP
notices, a publish meanwhile is refused at once with `unavailable` instead of
waiting for Redis, and everything comes back by itself when Redis answers
again. A Redis paused with CLIENT PAUSE and one stopped with SIGSTOP (packets
accepted by the kernel, never answered: what a partition looks like) are
both covered, and so is a TCP proxy that black-holes every byte without
closing anything, for all of a node's links or for its bus links only
(pub/sub silent while history writes still succeed): members of the cut-off
node then get every message persisted meanwhile through another node, once
and in order, before the live ones."""

import asyncio
import os
import signal
import time

import pytest

from conftest import SLOW, await_ready, http_get, publish_many, readyz, redis_node, run, wait_until
from protocol_client import connect, offset_key, uniq

TIMEOUT_MS = 1000


def health_node(wsfan, redis_server, node_id, *args):
    return redis_node(wsfan, redis_server, node_id, "--redis-timeout", str(TIMEOUT_MS),
                      "--redis-backoff-min", "100", "--redis-backoff-max", "300", *args)


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


def room_offsets(c, room):
    return [m["offset"] for m in c.log if m["type"] == "message" and m.get("room") == room]


@pytest.mark.parametrize("cut", ["all links", "bus links only"])
def test_a_black_holed_link_is_noticed_and_the_gap_is_filled_exactly_once(redis_server, wsfan, proxies, cut):
    """Node a reaches Redis through a proxy that, mid-traffic, swallows every
    byte both ways and closes nothing (a partition). With "bus links only"
    its store link goes straight to Redis, so its history writes and reads
    keep working while pub/sub is silent. Node b persists messages
    meanwhile. Node a must notice by itself (its health checks, not TCP),
    answer 503 on /readyz within the bound, refuse a publish at once rather
    than hang, and once the proxy forwards again deliver to its member every
    message persisted while it was cut off, exactly once and in order,
    before the live ones, without the member reconnecting."""
    px = proxies(redis_server.port)
    store = ["--store-redis", redis_server.url] if cut == "bus links only" else []
    a = health_node(wsfan, px.url, "hole-a", *store)
    b = redis_node(wsfan, redis_server, "hole-b")
    room = uniq("hole")

    async def scenario():
        ma = await connect(a, uniq("ma"), label="ma@a")
        pa = await connect(a, uniq("pa"), label="pa@a")
        pb = await connect(b, uniq("pb"), label="pb@b")
        cs = [ma, pa, pb]
        out = {}
        try:
            for c in cs:
                await c.join(room)
            pre = await publish_many(pb, room, [{"pre": k} for k in range(3)])
            await ma.recv_n(lambda m: m["type"] == "message" and m.get("room") == room, 3, "pre messages")
            px.black_hole()
            gap = await publish_many(pb, room, [{"gap": k} for k in range(8)])
            out["took"] = await asyncio.to_thread(seconds_until_not_ready, a, 4)
            out["during"] = await publish_answer(pa, room, {"during": 1})
            gap += await publish_many(pb, room, [{"gap": k} for k in range(8, 12)])
            out["noticed"] = "no answer in 1000 ms, reconnecting" in a.log()
            px.restore()
            await await_ready(a, 8)
            live = await publish_many(pb, room, [{"live": k} for k in range(4)])
            want = [x["offset"] for x in pre + gap + live]
            await ma.recv_n(lambda m: m["type"] == "message" and m.get("offset") == want[-1], 1,
                            "the last live message", 8)
            await ma.drain(0.3)
            out["want"] = want
            out["got"] = room_offsets(ma, room)
            out["open"] = all(c.ws.open for c in cs)
            return out
        finally:
            await asyncio.gather(*(c.close() for c in cs), return_exceptions=True)

    out = run(scenario(), 60)
    assert out["noticed"], f"node a should give up its silent links by itself: {a.log_tail()}"
    assert out["took"] < 4 * SLOW, f"/readyz took {out['took']:.1f} s to fail"
    reply, took = out["during"]
    assert reply["type"] == "error" and reply["code"] == "unavailable", reply
    assert took < 1.0 * SLOW, f"a publish while the link is cut off waited {took:.1f} s"
    got, want = out["got"], out["want"]
    assert got == want, (f"ma@a: every message once, in order; missing {[o for o in want if o not in got]}, "
                         f"duplicated {sorted({o for o in got if got.count(o) > 1})}, got {got}")
    assert out["open"], "no client was disconnected"
