"""Idempotent publish (PROTOCOL.md section 2, `key`): a persisted publish
whose key was already used in its room within --idempotency-window
publishes nothing new and its ack carries the first offset, over WebSocket
and the HTTP API, on both engines; a client whose connection dropped before
the ack came retries with the same key and the message is in the room once.
Keys are per room, ephemeral publishes ignore them, and a bad key is
refused with bad_command (400 on the API)."""

import asyncio
import time

import pytest

from conftest import engine_independent, run
from protocol_client import connect, uniq
from test_api import call


@pytest.fixture(scope="module")
def server(engine, wsfan_module):
    srv = engine.node(wsfan_module, "--workers", "2", "--idempotency-window", "2")
    yield srv
    assert srv.alive(), f"server died during the module; log:\n{srv.log_tail()}"


def room_messages(msgs, room):
    return [m for m in msgs if m["type"] == "message" and m.get("room") == room]


def test_a_repeated_key_publishes_once_and_acks_the_first_offset(server):
    room = uniq("idem")

    async def scenario():
        pub = await connect(server, uniq("pub"))
        member = await connect(server, uniq("member"))
        try:
            await pub.join(room)
            await member.join(room)
            first = await pub.publish(room, {"n": 1}, key="k-1")
            again = await pub.publish(room, {"n": "changed"}, key="k-1")
            other = await pub.publish(room, {"n": 2}, key="k-2")
            plain = await pub.publish(room, {"n": 3})
            await member.barrier()
            await member.drain(0.2)
            hist = await member.history(room)
            return first, again, other, plain, room_messages(member.log, room), hist["messages"]
        finally:
            await asyncio.gather(pub.close(), member.close())

    first, again, other, plain, live, hist = run(scenario())
    assert first["offset"] and again["offset"] == first["offset"], (first, again)
    assert len({first["offset"], other["offset"], plain["offset"]}) == 3
    assert [m["data"] for m in live] == [{"n": 1}, {"n": 2}, {"n": 3}], live
    assert [m["offset"] for m in hist] == [first["offset"], other["offset"], plain["offset"]], hist


def test_keys_are_per_room_and_ephemeral_publishes_ignore_them(server):
    a, b = uniq("idem-a"), uniq("idem-b")

    async def scenario():
        c = await connect(server, uniq("pub"))
        try:
            await c.join(a)
            await c.join(b)
            in_a = await c.publish(a, 1, key="same")
            in_b = await c.publish(b, 2, key="same")
            e1 = await c.publish(a, "typing", key="eph", ephemeral=True)
            e2 = await c.publish(a, "typing", key="eph", ephemeral=True)
            await c.barrier()
            await c.drain(0.2)
            return in_a, in_b, e1, e2, room_messages(c.log, a), (await c.history(b))["messages"]
        finally:
            await c.close()

    in_a, in_b, e1, e2, live_a, hist_b = run(scenario())
    # Offsets belong to their room: the two may be equal; b's history shows b's message is its own.
    assert in_a["offset"] and [(m["offset"], m["data"]) for m in hist_b] == [(in_b["offset"], 2)], (in_b, hist_b)
    assert e1["offset"] is None and e2["offset"] is None
    assert [m["data"] for m in live_a] == [1, "typing", "typing"], live_a


def test_a_key_is_new_again_after_the_window(server):
    room = uniq("idem-window")

    async def scenario():
        c = await connect(server, uniq("pub"))
        try:
            await c.join(room)
            first = await c.publish(room, 1, key="w")
            await asyncio.sleep(2.5)
            later = await c.publish(room, 2, key="w")
            return first, later, (await c.history(room))["messages"]
        finally:
            await c.close()

    first, later, hist = run(scenario())
    assert later["offset"] != first["offset"]
    assert [m["data"] for m in hist] == [1, 2]


def test_a_publish_retried_after_a_dropped_connection_is_in_the_room_once(server):
    """The ack is lost with the connection (the socket is cut right after
    the publish is written, before anything is read); the retry on a new
    connection with the same key answers the first offset."""
    room, user = uniq("idem-retry"), uniq("alice")

    async def scenario():
        c = await connect(server, user)
        await c.join(room)
        await c.send({"type": "publish", "room": room, "data": {"text": "once"}, "key": "msg-42", "ref": 1})
        c.ws.transport.abort()
        await asyncio.sleep(0.2)
        c2 = await connect(server, user)
        try:
            await c2.join(room)
            ack = await c2.publish(room, {"text": "once"}, key="msg-42")
            return ack, (await c2.history(room))["messages"]
        finally:
            await c2.close()

    ack, hist = run(scenario())
    assert [m["data"] for m in hist] == [{"text": "once"}], hist
    assert ack["offset"] == hist[0]["offset"]


def test_the_api_takes_the_same_key(server):
    room = uniq("idem-api")
    s1, r1, _ = call(server, "POST", "/api/publish", {"room": room, "data": {"n": 1}, "key": "api-1"})
    s2, r2, _ = call(server, "POST", "/api/publish", {"room": room, "data": {"n": 1}, "key": "api-1"})
    assert (s1, s2) == (200, 200) and r1["offset"] and r2["offset"] == r1["offset"], (r1, r2)
    status, hist, _ = call(server, "GET", f"/api/history?room={room}")
    assert status == 200 and [m["offset"] for m in hist["messages"]] == [r1["offset"]], hist
    status, err, _ = call(server, "POST", "/api/publish", {"room": room, "data": 1, "key": "x" * 65})
    assert status == 400 and err["error"] == "bad_command" and "key" in err["message"], err


@engine_independent
def test_a_bad_key_is_refused(server):
    async def scenario():
        c = await connect(server, uniq("pub"))
        try:
            room = uniq("idem-bad")
            await c.join(room)
            return [await c.error({"type": "publish", "room": room, "data": 1, "key": k}, "bad_command")
                    for k in (1, None, "x" * 65)]
        finally:
            await c.close()

    for err in run(scenario()):
        assert "key" in err["message"], err
