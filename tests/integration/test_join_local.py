"""A join of a room its worker follows already (a member of it joined
there before) is answered by the worker, without a bus round trip
(docs/architecture.md, "Joins answered by the worker"; counted in
wsfan_joins_local_total). Its joined offset is the newest the worker knows;
every message after it reaches the joiner exactly once, the ones at or
before it never do, and its presence is announced as for any join. A join
with `since`, or of a room nobody on the worker is in, still goes through
the bus. Both engines (the `engine` fixture of conftest.py)."""

import pytest

from conftest import http_get, run
from protocol_client import connect, connect_on_other_worker, settle, uniq


@pytest.fixture(scope="module")
def server(engine, wsfan_module):
    srv = engine.node(wsfan_module, "--workers", "2")
    yield srv
    assert srv.alive(), f"server died during the module; log:\n{srv.log_tail()}"


def joins_local(srv):
    body = http_get(srv.port, "/metrics").body.decode()
    line = next(ln for ln in body.splitlines() if ln.startswith("wsfan_joins_local_total "))
    return int(float(line.split()[1]))


async def connect_on_worker(server, user, worker, attempts=40):
    """A connection on worker (a session prefix)."""
    tried = []
    try:
        for _ in range(attempts):
            c = await connect(server, user)
            if c.worker == worker:
                return c
            tried.append(c)
        raise AssertionError(f"{attempts} connections, none on worker {worker}")
    finally:
        for t in tried:
            await t.close()


def room_messages(c, room):
    return [m for m in c.inbox if m.get("type") == "message" and m.get("room") == room]


def test_join_of_a_followed_room_is_answered_locally_and_misses_nothing(server):
    room = uniq("local")

    async def scenario():
        a = await connect(server, uniq("a"))
        other = await connect_on_other_worker(server, uniq("c"), {a.worker})
        b = await connect_on_worker(server, uniq("b"), a.worker)
        try:
            await a.join(room)
            await other.join(room)
            before = [(await other.publish(room, f"before-{i}"))["offset"] for i in range(3)]
            await a.drain()  # a has the messages: its worker knows the newest offset
            local0 = joins_local(server)
            joined = await b.join(room)
            # Another member, on another worker, publishes at once after the reply.
            after = [(await other.publish(room, f"after-{i}"))["offset"] for i in range(3)]
            await settle([a, b, other])
            return a, b, before, after, joined, joins_local(server) - local0
        finally:
            for c in (a, b, other):
                await c.close()

    a, b, before, after, joined, local = run(scenario())
    assert local == 1, "the join of a room its worker follows should not go through the bus"
    assert joined["offset"] == before[-1] and joined["recovered"] is False and joined["missed"] == 0, joined
    got = room_messages(b, room)
    assert [m["data"] for m in got] == ["after-0", "after-1", "after-2"], got
    assert [m["offset"] for m in got] == after
    # Presence is announced as for a join through the bus.
    assert any(m.get("type") == "presence_join" and m.get("user") == b.label for m in a.inbox), a.inbox


def test_presence_and_leave_after_a_local_join(server):
    room = uniq("pres")

    async def scenario():
        a = await connect(server, uniq("a"))
        b = await connect_on_worker(server, uniq("b"), a.worker)
        try:
            await a.join(room)
            local0 = joins_local(server)
            await b.join(room)
            assert joins_local(server) - local0 == 1
            listed = sorted(u["user"] for u in (await a.presence(room))["users"])
            await b.leave(room)
            await a.barrier()
            left = sorted(u["user"] for u in (await a.presence(room))["users"])
            # Joined again after leaving: the worker still follows the room (a).
            await b.join(room)
            again = sorted(u["user"] for u in (await a.presence(room))["users"])
            return a.label, b.label, listed, left, again, joins_local(server) - local0
        finally:
            await a.close()
            await b.close()

    a, b, listed, left, again, local = run(scenario())
    assert listed == sorted([a, b]) and left == [a] and again == sorted([a, b])
    assert local == 2


def test_join_with_since_or_of_an_unfollowed_room_goes_through_the_bus(server):
    room, alone = uniq("since"), uniq("alone")

    async def scenario():
        a = await connect(server, uniq("a"))
        b = await connect_on_worker(server, uniq("b"), a.worker)
        try:
            await a.join(room)
            first = (await a.publish(room, "one"))["offset"]
            await a.publish(room, "two")
            local0 = joins_local(server)
            joined = await b.join(room, since=first)
            await b.join(alone)
            await settle([a, b])
            return b, joined, joins_local(server) - local0
        finally:
            await a.close()
            await b.close()

    b, joined, local = run(scenario())
    assert local == 0
    assert joined["recovered"] is True and joined["missed"] == 1
    assert [m["data"] for m in room_messages(b, room)] == ["two"]
