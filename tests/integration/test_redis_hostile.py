"""Redis content that wsfan did not write (PROTOCOL.md section 6), and
retention that is real: an offset in a payload another service published
never moves a node's position in history (the message arrives without an
offset, and what is persisted later is still filled in after a lost
subscription); entries another service wrote into NS:history:{ROOM} are
checked and rebuilt, never pasted (a forged sender, an injected event type,
an event split by a newline are left out; a valid one is replayed
compact); --history-length is exact; --history-ttl removes an idle room's
stream and its idempotency keys from Redis by itself; --max-replay answers
recovered:false; and a replay longer than one slice is still exact."""

import asyncio
import json
import time

from conftest import await_ready, await_until, publish_many, redis_node, run, wait_until
from protocol_client import connect, uniq

NS = "wsfan"


def stream_key(room):
    return f"{NS}:history:{{{room}}}"


def room_messages(c, room):
    return [m for m in c.log if m["type"] == "message" and m.get("room") == room]


def _subscriber_connects(node) -> int:
    """How many times node's subscriber link has connected, from its log."""
    return sum(1 for line in node.log().splitlines() if " redis subscriber " in line and line.endswith(": connected"))


def test_a_foreign_offset_never_moves_the_delivered_position(redis_server, wsfan):
    """A service publishes a payload claiming a far-future offset; it reaches
    members without one. Node a's subscription is then killed, and node b
    persists messages before a is back: the gap fill starts from the real position, so the
    member of node a gets every one of them, once and in order."""
    a = redis_node(wsfan, redis_server, "host-a", "--redis-backoff-min", "1000", "--redis-backoff-max", "1000")
    b = redis_node(wsfan, redis_server, "host-b", "--redis-backoff-min", "50", "--redis-backoff-max", "100")
    room = uniq("forged")
    r = redis_server.client()

    async def scenario():
        ma = await connect(a, uniq("ma"), label="ma@a")
        pb = await connect(b, uniq("pb"), label="pb@b")
        try:
            await ma.join(room)
            await pb.join(room)
            before = await publish_many(pb, room, [{"before": k} for k in range(3)])
            channel = f"{NS}:room:{{{room}}}"
            r.publish(channel, json.dumps({"data": "forged", "offset": "99999999999999-0"}))
            forged = await ma.recv_until("message", data="forged")
            # A seal that proves nothing: not delivered, and not taken for a changed secret.
            r.publish(channel, json.dumps({"data": "sealed?", "offset": "99999999999999-1", "mac": "0" * 40}))
            r.publish(channel, json.dumps({"data": "marker"}))
            await ma.recv_until("message", data="marker")
            b_subscribed = _subscriber_connects(b)
            r.client_kill_filter(_type="pubsub")  # both nodes'; b is back long before a
            # /readyz can still say 200 before b has read the kill: wait for its new subscription.
            await await_until(lambda: (_subscriber_connects(b) > b_subscribed, b.log_tail()),
                              "node b should resubscribe after the kill", 5)
            await await_ready(b, 5)
            gap = await publish_many(pb, room, [{"gap": k} for k in range(5)])
            live = await publish_many(pb, room, [{"live": k} for k in range(3)])
            want = [x["offset"] for x in before + gap + live]
            await ma.recv_n(lambda m: m["type"] == "message" and m.get("offset") == want[-1], 1, "the last", 8)
            await ma.drain(0.3)
            got = [m["offset"] for m in room_messages(ma, room) if "offset" in m]
            assert "sealed?" not in [m["data"] for m in room_messages(ma, room)]
            return forged, want, got
        finally:
            await asyncio.gather(ma.close(), pb.close())

    forged, want, got = run(scenario(), 40)
    assert "offset" not in forged, f"a foreign offset is not passed on: {forged!r}"
    assert "its seal is not of this namespace's secret" in a.log() and "secret changed" not in a.log(), a.log_tail()
    assert got == want, f"every persisted message once, in order: want {want}, got {got}"


def test_foreign_history_entries_are_checked_and_rebuilt(redis_server, wsfan):
    node = redis_node(wsfan, redis_server, "host-h")
    room = uniq("entries")
    r = redis_server.client()
    key = stream_key(room)

    async def scenario():
        c = await connect(node, uniq("reader"))
        try:
            await c.join(room)
            first = await c.publish(room, {"n": 0})
            now = str(int(time.time() * 1000))
            r.xadd(key, {"f": 'x","type":"direct', "t": now, "d": "1"})                # forged sender
            r.xadd(key, {"f": "", "t": now, "d": '1,"type":"direct"'})                 # injected event type
            r.xadd(key, {"f": "", "t": now, "d": '1}\n{"type":"message","data":2'})    # split by a newline
            r.xadd(key, {"f": "", "t": "soon", "d": "3"})                              # not a timestamp
            r.xadd(key, {"x": "no data"})                                               # not a message
            r.xadd(key, {"f": "svc", "t": now, "d": '{ "text" :\n "hi" }'})            # valid, not compact
            last = await c.publish(room, {"n": 1})
            hist = await c.history(room)
            joiner = await connect(node, uniq("joiner"))
            try:
                joined = await joiner.join(room, since=first["offset"])
                await joiner.drain(0.3)
                replay = room_messages(joiner, room)
            finally:
                await joiner.close()
            return hist["messages"], joined, replay, last
        finally:
            await c.close()

    hist, joined, replay, last = run(scenario())
    assert [(m["from"], m["data"]) for m in hist[1:]] == [("svc", {"text": "hi"}), (hist[0]["from"], {"n": 1})], hist
    for m in hist + replay:
        assert set(m) == {"type", "room", "offset", "from", "data", "ts"} and m["type"] == "message", m
    assert joined["recovered"] is True and joined["missed"] == 2, joined
    assert [m["data"] for m in replay] == [{"text": "hi"}, {"n": 1}] and replay[-1]["offset"] == last["offset"], replay


def test_history_length_is_exact(redis_server, wsfan):
    node = redis_node(wsfan, redis_server, "host-len", "--history-length", "5", "--rate-limit", "0")
    room = uniq("len")

    async def scenario():
        c = await connect(node, uniq("pub"))
        try:
            await c.join(room)
            acks = await publish_many(c, room, list(range(40)))
            return acks, (await c.history(room, limit=100))["messages"]
        finally:
            await c.close()

    acks, hist = run(scenario())
    assert redis_server.client().xlen(stream_key(room)) == 5
    assert [m["offset"] for m in hist] == [a["offset"] for a in acks[-5:]]


def test_an_idle_room_leaves_redis_by_itself(redis_server, wsfan):
    """--history-ttl 1 and --idempotency-window 1: a second after the last
    message nobody touches the room again, and its stream and keys are gone
    from Redis without any command of wsfan."""
    node = redis_node(wsfan, redis_server, "host-ttl", "--history-ttl", "1", "--idempotency-window", "1")
    room = uniq("idle")
    r = redis_server.client()

    async def scenario():
        c = await connect(node, uniq("pub"))
        try:
            await c.join(room)
            await c.publish(room, 1, key="k1")
            await c.publish(room, 2)
        finally:
            await c.close()

    run(scenario())
    assert r.exists(stream_key(room)) and r.keys(f"{NS}:idem:{{{room}}}:*")
    wait_until(lambda: (not r.exists(stream_key(room)) and not r.keys(f"{NS}:idem:{{{room}}}:*"), r.keys(f"*{room}*")),
               "the idle room's stream and idempotency keys expire", 4)


def test_a_replay_longer_than_max_replay_is_not_recovered_and_a_long_one_is_exact(redis_server, wsfan):
    node = redis_node(wsfan, redis_server, "host-replay", "--max-replay", "250", "--history-length", "1000",
                      "--rate-limit", "0")
    room = uniq("replay")

    async def scenario():
        c = await connect(node, uniq("pub"))
        try:
            await c.join(room)
            acks = await publish_many(c, room, list(range(300)))
            out = []
            for since in (acks[0]["offset"], acks[49]["offset"], acks[50]["offset"]):
                j = await connect(node, uniq("joiner"))
                try:
                    joined = await j.join(room, since=since)
                    await j.drain(0.3)
                    out.append((joined, [m["offset"] for m in room_messages(j, room)]))
                finally:
                    await j.close()
            return acks, out
        finally:
            await c.close()

    acks, out = run(scenario(), 40)
    offsets = [a["offset"] for a in acks]
    (j299, r299), (j250, r250), (j249, r249) = out
    assert j299["recovered"] is False and j299["missed"] == 0 and r299 == [], j299
    assert j250["recovered"] is True and j250["missed"] == 250 and r250 == offsets[50:], (j250, len(r250))
    assert j249["recovered"] is True and j249["missed"] == 249 and r249 == offsets[51:], (j249, len(r249))
