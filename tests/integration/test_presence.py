"""Presence (PROTOCOL.md sections 2 and 3): presence_join when a user's first
connection joins a room (not for the second, even on another worker),
presence_leave when the last one leaves or disconnects (never twice), the
presence command's users with connection counts, and anonymous connections
never listed nor announced.

Every test runs on both engines (the `engine` fixture of conftest.py): the
memory bus and store, and Redis (one node; several nodes and a killed node
are in test_redis_presence.py)."""

import pytest

from conftest import run
from protocol_client import clients, connect, connect_on_other_worker, events, settle, uniq


@pytest.fixture(scope="module")
def server(engine, wsfan_module):
    srv = engine.node(wsfan_module, "--workers", "4")
    yield srv
    assert srv.alive(), f"server died during the module; log:\n{srv.log_tail()}"


def presence_events(c, user):
    return [m["type"] for m in c.inbox if m["type"] in ("presence_join", "presence_leave") and m.get("user") == user]


def sorted_users(p):
    return sorted(p["users"], key=lambda u: u["user"])


def test_two_connections_of_one_user_on_different_workers(server):
    room = uniq("pres")
    alice, bob = uniq("alice"), uniq("bob")

    async def scenario():
        async with clients(server, bob) as (b,):
            await b.join(room)
            a1 = await connect(server, alice, label="a1")
            a2 = await connect_on_other_worker(server, alice, {a1.worker})
            a2.label = "a2"
            try:
                steps = {}
                await a1.join(room)
                b.inbox.append(await b.recv_until("presence_join", user=alice))  # wait, keep it counted
                await settle([a1, a2, b])
                steps["first join"] = (presence_events(b, alice), presence_events(a1, alice),
                                       presence_events(a2, alice))
                b.take(), a1.take(), a2.take()

                await a2.join(room)
                await settle([a1, a2, b])
                steps["second join"] = (presence_events(b, alice), presence_events(a1, alice),
                                        presence_events(a2, alice))
                steps["presence both"] = sorted_users(await b.presence(room))
                b.take(), a1.take(), a2.take()

                await a1.leave(room)
                await settle([a2, b])
                steps["first leave"] = (presence_events(b, alice), presence_events(a2, alice))
                steps["presence one"] = sorted_users(await b.presence(room))
                b.take(), a2.take()

                await a2.close()   # disconnect, no leave command
                b.inbox.append(await b.recv_until("presence_leave", user=alice))  # wait, keep it counted
                await settle([b, a1])
                steps["last gone"] = (presence_events(b, alice), presence_events(a1, alice))
                steps["presence none"] = sorted_users(await b.presence(room))
                b.take()

                await a1.close()   # alice's other connection, no longer in the room
                await settle([b])
                steps["after"] = presence_events(b, alice)
                steps["a1 order"] = [m["type"] for m in a1.log if m["type"] in ("joined", "presence_join")]
                return (a1.worker, a2.worker), steps
            finally:
                await a1.close()
                await a2.close()

    workers, s = run(scenario())
    assert workers[0] != workers[1], f"the two connections should be on different workers: {workers}"
    assert s["first join"] == (["presence_join"], ["presence_join"], []), \
        f"the first connection's join: bob and alice's joining connection see one presence_join; " \
        f"the connection not in the room sees none: {s['first join']}"
    assert s["a1 order"] == ["joined", "presence_join"], \
        f"the joining connection gets joined first, then its own presence_join: {s['a1 order']}"
    assert s["second join"] == ([], [], []), \
        f"the second connection (worker {workers[1]}) of a user already present must not announce: {s['second join']}"
    assert s["presence both"] == [{"user": alice, "connections": 2}, {"user": bob, "connections": 1}], \
        s["presence both"]
    assert s["first leave"] == ([], []), f"alice still has a connection in the room: no presence_leave: " \
                                         f"{s['first leave']}"
    assert s["presence one"] == [{"user": alice, "connections": 1}, {"user": bob, "connections": 1}], \
        s["presence one"]
    assert s["last gone"] == (["presence_leave"], []), \
        f"when the last connection disconnects, exactly one presence_leave to the members: {s['last gone']}"
    assert s["presence none"] == [{"user": bob, "connections": 1}], s["presence none"]
    assert s["after"] == [], f"presence_leave must never come twice: {s['after']}"


def test_presence_leave_on_leave_command_and_rejoin_announces_again(server):
    room = uniq("pres-lv")
    carol = uniq("carol")

    async def scenario():
        async with clients(server, uniq("watch"), carol) as (w, c):
            await w.join(room)
            await c.join(room)
            await c.leave(room)
            await w.recv_until("presence_leave", user=carol)
            await c.join(room)
            await w.recv_until("presence_join", user=carol)
            await settle([w, c])
            seq = [m["type"] for m in w.log if m["type"] in ("presence_join", "presence_leave")
                   and m["user"] == carol]
            return seq

    assert run(scenario()) == ["presence_join", "presence_leave", "presence_join"]


def test_disconnect_of_a_member_in_several_rooms_leaves_each_once(server):
    r1, r2 = uniq("pr1"), uniq("pr2")
    dave = uniq("dave")

    async def scenario():
        async with clients(server, uniq("w1"), uniq("w2")) as (w1, w2):
            await w1.join(r1)
            await w2.join(r2)
            d = await connect(server, dave)
            await d.join(r1)
            await d.join(r2)
            await d.close()
            await w1.recv_until("presence_leave", user=dave)
            await w2.recv_until("presence_leave", user=dave)
            await settle([w1, w2])
            return ([(m["type"], m["room"]) for m in w1.log if m.get("user") == dave],
                    [(m["type"], m["room"]) for m in w2.log if m.get("user") == dave])

    got1, got2 = run(scenario())
    assert got1 == [("presence_join", r1), ("presence_leave", r1)], f"room 1 watcher: {got1}"
    assert got2 == [("presence_join", r2), ("presence_leave", r2)], f"room 2 watcher: {got2}"


def test_presence_lists_users_with_connection_counts(server):
    room = uniq("plist")
    u1, u2, u3 = uniq("u1"), uniq("u2"), uniq("u3")

    async def scenario():
        async with clients(server, u1, u1, u1, u2, u3, None, None) as cs:
            for c in cs[:5]:
                await c.join(room)
            await cs[5].join(room)   # anonymous members are not users
            p = await cs[5].presence(room)
            other = uniq("plist-other")
            await cs[4].join(other)
            p_other = await cs[4].presence(other)
            await cs[0].leave(room)
            p_after = await cs[3].presence(room)
            return p, p_other, p_after

    p, p_other, p_after = run(scenario())
    assert p["room"] == room
    assert sorted_users(p) == sorted([{"user": u1, "connections": 3}, {"user": u2, "connections": 1},
                                      {"user": u3, "connections": 1}], key=lambda u: u["user"]), p
    assert len(p["users"]) == 3, f"each user is listed once: {p}"
    assert p_other["users"] == [{"user": u3, "connections": 1}], \
        f"another room lists only its own members (connections of other rooms are not counted): {p_other}"
    assert sorted_users(p_after)[0] == {"user": u1, "connections": 2}, p_after


def test_anonymous_connections_are_not_listed_nor_announced(server):
    room = uniq("panon")

    async def scenario():
        async with clients(server, uniq("w"), None) as (w, anon):
            await w.join(room)
            await anon.join(room)
            p = await anon.presence(room)
            await anon.publish(room, "anon is here")
            await anon.leave(room)
            await anon.join(room)
            await anon.close()
            await settle([w])
            return w.user, p, [m for m in w.inbox if m["type"] in ("presence_join", "presence_leave")]

    w_user, p, pres = run(scenario())
    assert p["users"] == [{"user": w_user, "connections": 1}], f"anonymous connections are not listed: {p}"
    assert [m for m in pres if m["user"] != w_user] == [], \
        f"anonymous joins and leaves must not be announced: {pres}"


def test_presence_events_go_only_to_the_rooms_members(server):
    room = uniq("pmem")
    eve = uniq("eve")

    async def scenario():
        async with clients(server, uniq("in"), uniq("out"), eve) as (inside, outside, e):
            await inside.join(room)
            await outside.join(uniq("pmem-other"))
            await e.join(room)
            # With Redis the joiner's own presence_join comes back through
            # Redis after `joined`; a leave read before it arrives would stop
            # it (events stop at the leave): wait for it, and keep it counted.
            e.inbox.append(await e.recv_until("presence_join", user=eve))
            await e.leave(room)
            await inside.recv_until("presence_leave", user=eve)
            await settle([inside, outside, e])
            return presence_events(outside, eve), presence_events(e, eve)

    out_seen, own_seen = run(scenario())
    assert out_seen == [], f"a connection outside the room saw presence events: {out_seen}"
    assert own_seen == ["presence_join"], \
        f"the joining connection sees its own presence_join, and not its presence_leave after leaving: {own_seen}"


def test_presence_of_an_empty_room_after_everyone_left(server):
    room = uniq("pempty")

    async def scenario():
        async with clients(server, uniq("x"), uniq("y")) as (x, y):
            await x.join(room)
            await y.join(room)
            await y.leave(room)
            p = await x.presence(room)
            return x.user, p

    x_user, p = run(scenario())
    assert p["users"] == [{"user": x_user, "connections": 1}], p
