"""Subscriptions of the Redis bus follow local interest (PROTOCOL.md section
6): a node is subscribed to NS:room:{R} while it has at least one local
member of R, to NS:user:{U} while it has a local connection of U, and to
NS:all always; join/leave churn from many clients on many workers of two
nodes leaves each node subscribed to exactly the rooms with local members
(no leak, none missing, checked with PUBSUB CHANNELS / PUBSUB NUMSUB and by
delivering); the namespace prefixes every channel and key.

One subscriber connection per node: PUBSUB NUMSUB of a channel is the number
of nodes subscribed to it."""

import asyncio
import json
import random
import time

import pytest

from conftest import await_until, numsub, redis_node, run, wait_until
from protocol_client import connect, connect_on_other_worker, short, uniq

NS = "wsfan"


def room_ch(room, ns=NS):
    return f"{ns}:room:{{{room}}}"


def user_ch(user, ns=NS):
    return f"{ns}:user:{{{user}}}"


def bus_channels(r):
    """PUBSUB CHANNELS less the nodes' own liveness probe channels
    (NS:probe:{NODE}, one per node, always subscribed)."""
    return {c for c in r.pubsub_channels() if ":probe:{" not in c}


@pytest.fixture
def two(redis_server, wsfan):
    a = redis_node(wsfan, redis_server, "sub-a", "--workers", "4")
    b = redis_node(wsfan, redis_server, "sub-b", "--workers", "4")
    yield a, b
    for n in (a, b):
        assert n.alive(), f"node {n.node_id} died; log:\n{n.log_tail()}"


def test_all_channel_is_subscribed_always_once_per_node(redis_server, two):
    r = redis_server.client()
    wait_until(lambda: (numsub(r, f"{NS}:all")[f"{NS}:all"] == 2, numsub(r, f"{NS}:all")),
               "NS:all should have one subscriber per node (2) without any client", 5)
    chans = bus_channels(r)
    assert chans == {f"{NS}:all"}, f"with no client connected, only NS:all is subscribed: {chans}"
    probes = set(r.pubsub_channels(f"{NS}:probe:*"))
    assert probes == {f"{NS}:probe:{{sub-a}}", f"{NS}:probe:{{sub-b}}"}, f"one probe channel per node: {probes}"


def test_room_channel_is_subscribed_while_the_node_has_a_local_member(redis_server, two):
    a, b = two
    room = uniq("subroom")
    r = redis_server.client()
    ch = room_ch(room)

    def expect(n, what):
        return await_until(lambda: (numsub(r, ch)[ch] == n, (numsub(r, ch), sorted(bus_channels(r)))),
                           f"{what}: NUMSUB {ch} should be {n}", 5)

    async def scenario():
        a1 = await connect(a, uniq("u"), label="a1")
        a2 = await connect_on_other_worker(a, uniq("u"), {a1.worker})
        b1 = await connect(b, None, label="b1")
        cs = [a1, a2, b1]
        try:
            assert numsub(r, ch)[ch] == 0, "nobody joined yet"
            await a1.join(room)
            assert numsub(r, ch)[ch] == 1, \
                f"the joined reply comes once the node is subscribed: NUMSUB {numsub(r, ch)}"
            await a2.join(room)       # a second member on another worker: no second subscription
            await asyncio.sleep(0.1)
            assert numsub(r, ch)[ch] == 1, f"one subscription per node, however many members: {numsub(r, ch)}"
            await b1.join(room)
            assert numsub(r, ch)[ch] == 2, f"members on both nodes: {numsub(r, ch)}"
            await a1.leave(room)      # a2 is still a member on node a
            await asyncio.sleep(0.1)
            assert numsub(r, ch)[ch] == 2, f"node a still has a2: its subscription stays: {numsub(r, ch)}"
            await a2.close()          # the last member of node a goes away without leaving
            await expect(1, "after node a's last member disconnected")
            await b1.leave(room)
            await expect(0, "after the last member of node b left")
            assert ch not in r.pubsub_channels(), f"{ch} is in PUBSUB CHANNELS with no member anywhere"
            await b1.join(room)       # and again
            assert numsub(r, ch)[ch] == 1, f"a join after the unsubscribe subscribes again: {numsub(r, ch)}"
            r.publish(ch, json.dumps({"data": "again"}))
            await b1.recv_until("message", data="again")
        finally:
            await asyncio.gather(*(c.close() for c in cs), return_exceptions=True)
        await expect(0, "after every client closed")

    run(scenario())


def test_user_channel_is_subscribed_while_the_user_has_a_local_connection(redis_server, two):
    a, b = two
    alice = uniq("alice")
    r = redis_server.client()
    ch = user_ch(alice)

    def expect(n, what):
        return await_until(lambda: (numsub(r, ch)[ch] == n, numsub(r, ch)), f"{what}: NUMSUB {ch} should be {n}", 5)

    async def scenario():
        a1 = await connect(a, alice, label="alice@a")
        await expect(1, "alice connected to node a")
        a2 = await connect_on_other_worker(a, alice, {a1.worker})
        b1 = await connect(b, alice, label="alice@b")
        await expect(2, "alice also connected to node b")
        await asyncio.sleep(0.1)
        assert numsub(r, ch)[ch] == 2, f"one subscription per node: {numsub(r, ch)}"
        anon = await connect(a, None, label="anon")
        await a1.close()
        await asyncio.sleep(0.1)
        assert numsub(r, ch)[ch] == 2, f"node a still has alice's second connection: {numsub(r, ch)}"
        r.publish(ch, json.dumps({"data": "to alice"}))
        got = [await c.recv_until("direct", data="to alice") for c in (a2, b1)]
        await a2.close()
        await expect(1, "alice's last connection on node a closed")
        await b1.close()
        await expect(0, "alice has no connection anywhere")
        chans = bus_channels(r)
        await anon.close()
        return got, chans

    got, chans = run(scenario())
    assert all(g["from"] is None for g in got), got
    assert chans == {f"{NS}:all"}, f"an anonymous connection subscribes no user channel; channels: {chans}"


def test_join_leave_churn_leaves_each_node_subscribed_to_exactly_its_rooms(redis_server, two):
    """30 clients on 2 nodes x 4 workers join and leave 10 rooms at random
    (sometimes pipelined, sometimes by disconnecting) for a few seconds."""
    nodes = two
    r = redis_server.client()
    seed = random.randrange(1 << 30)
    rnd = random.Random(seed)
    rooms = [uniq("churn") for _ in range(10)]
    n_clients = 30
    duration = 2.5

    class Slot:
        def __init__(self, i):
            self.i = i
            self.node = nodes[i % 2]
            self.user = None if i % 6 == 5 else uniq(f"churner{i}")
            self.conn = None
            self.rooms = set()
            self.ops = 0

    slots = [Slot(i) for i in range(n_clients)]

    async def churn(s):
        s.conn = await connect(s.node, s.user, label=f"c{s.i}@{s.node.node_id}")
        deadline = time.monotonic() + duration
        for _ in range(100_000):
            if time.monotonic() >= deadline:
                break
            x = rnd.random()
            room = rnd.choice(rooms)
            if x < 0.04:       # disconnect without leaving, then come back
                await s.conn.close()
                s.rooms.clear()
                s.conn = await connect(s.node, s.user, label=f"c{s.i}@{s.node.node_id}")
            elif x < 0.25:     # join and leave back to back, pipelined
                c = s.conn
                if room in s.rooms:
                    first, second = "leave", "join"
                else:
                    first, second = "join", "leave"
                r1, r2 = c.ref(), c.ref()
                await c.send({"type": first, "room": room, "ref": r1})
                await c.send({"type": second, "room": room, "ref": r2})
                for ref, want in ((r1, "joined" if first == "join" else "left"),
                                  (r2, "joined" if second == "join" else "left")):
                    rep = await c.recv_match(lambda m, ref=ref: m.get("ref") == ref, f"reply {ref}", 10)
                    assert rep["type"] == want, f"{c.label}: {want} expected, got {rep!r}"
            elif room in s.rooms:
                await s.conn.leave(room)
                s.rooms.discard(room)
            else:
                await s.conn.join(room)
                s.rooms.add(room)
            s.ops += 1
            s.conn.inbox.clear()  # presence events: not looked at here
            await asyncio.sleep(rnd.random() * 0.003)

    def expected():
        return {room: {s.node.node_id for s in slots if room in s.rooms} for room in rooms}

    def state():
        subs = numsub(r, *[room_ch(x) for x in rooms])
        chans = {c for c in r.pubsub_channels(f"{NS}:room:*")}
        return subs, chans

    def matches():
        exp = expected()
        subs, chans = state()
        want_subs = {room_ch(x): len(exp[x]) for x in rooms}
        want_chans = {room_ch(x) for x in rooms if exp[x]}
        return subs == want_subs and chans == want_chans, {"numsub": subs, "want": want_subs,
                                                            "channels": sorted(chans)}

    async def scenario():
        try:
            await asyncio.gather(*(churn(s) for s in slots))
            detail = await await_until(matches, f"after the churn (seed {seed}) each room channel should have "
                                                f"one subscriber per node with members", 5)
            # the subscriptions are live ones: an external publish reaches exactly the members
            exp = expected()
            receivers = {x: r.publish(room_ch(x), json.dumps({"data": {"probe": x}})) for x in rooms}
            missing = []
            for s in slots:
                for x in sorted(s.rooms):
                    try:
                        await s.conn.recv_match(lambda m, x=x: m.get("type") == "message" and m.get("room") == x
                                                and m.get("data") == {"probe": x}, f"probe of {x}", 3)
                    except AssertionError as e:
                        missing.append(str(e)[:200])
            await asyncio.gather(*(s.conn.drain(0.1) for s in slots))
            stray = [(s.conn.label, m) for s in slots for m in s.conn.inbox
                     if m.get("type") == "message" and m.get("room") not in s.rooms]
            user_subs = numsub(r, *[user_ch(s.user) for s in slots if s.user])
            # everyone goes: half leave their rooms first, the others just close
            for s in slots[::2]:
                for x in sorted(s.rooms):
                    await s.conn.leave(x)
                s.rooms.clear()
            await asyncio.gather(*(s.conn.close() for s in slots))
            for s in slots:
                s.rooms.clear()
            end = await await_until(
                lambda: (bus_channels(r) == {f"{NS}:all"}, sorted(bus_channels(r))),
                "after every client left, only NS:all should remain subscribed (no leaked room or user "
                "channel)", 5)
            return detail, exp, receivers, missing, stray, user_subs, end
        finally:
            await asyncio.gather(*(s.conn.close() for s in slots if s.conn), return_exceptions=True)

    detail, exp, receivers, missing, stray, user_subs, end = run(scenario(), 60)
    ops = sum(s.ops for s in slots)
    assert ops >= 200, f"the churn should have done a few hundred joins and leaves, did {ops}"
    assert receivers == {x: len(exp[x]) for x in rooms}, \
        f"PUBLISH reached a number of subscribers different from the nodes with members (seed {seed}): " \
        f"{receivers} vs {exp}"
    assert not missing, f"members missed a message published after the churn (seed {seed}): {missing[:5]}"
    assert not stray, f"non-members got room messages (seed {seed}): {stray[:5]}"
    assert all(v == 1 for v in user_subs.values()), \
        f"each connected user's channel should have one subscriber (its node): " \
        f"{ {k: v for k, v in user_subs.items() if v != 1} }"
    assert numsub(r, f"{NS}:all")[f"{NS}:all"] == 2, "NS:all stays subscribed by both nodes"


def test_pipelined_join_leave_toggles_on_several_workers_end_in_the_right_subscription(redis_server, two):
    """Joins and leaves sent without waiting, on connections of different
    workers of one node: UNSUBSCRIBE and SUBSCRIBE cross in flight."""
    a, _ = two
    r = redis_server.client()

    async def toggle(c, room, n):
        refs = []
        for k in range(n):
            ref = c.ref()
            refs.append(ref)
            await c.send({"type": "join" if k % 2 == 0 else "leave", "room": room, "ref": ref})
        for ref in refs:
            rep = await c.recv_match(lambda m, ref=ref: m.get("ref") == ref, f"reply {ref}", 10)
            assert rep["type"] in ("joined", "left"), f"{c.label}: {rep!r}"

    async def scenario():
        cs = [await connect(a, uniq("t"), label="t0")]
        workers = {cs[0].worker}
        for i in range(3):
            c = await connect_on_other_worker(a, uniq("t"), workers)
            c.label = f"t{i + 1}"
            workers.add(c.worker)
            cs.append(c)
        out = {}
        try:
            for rounds, (n_odd, n_even) in enumerate([(41, 40), (40, 41), (61, 61)]):
                room = uniq("toggle")
                # cs[0] ends joined when its count is odd; the others end as their count says
                counts = [n_odd, n_even, n_even, n_even]
                await asyncio.gather(*(toggle(c, room, k) for c, k in zip(cs, counts)))
                joined = [c for c, k in zip(cs, counts) if k % 2 == 1]
                want = 1 if joined else 0
                ch = room_ch(room)
                await asyncio.sleep(0.3)  # let anything in flight settle, then it must be right and stay so
                out[room] = (numsub(r, ch)[ch], want, [c.label for c in joined])
                if joined:
                    r.publish(ch, json.dumps({"data": "toggled"}))
                    for c in joined:
                        await c.recv_until("message", room=room, data="toggled")
                for c in joined:
                    await c.leave(room)
        finally:
            await asyncio.gather(*(c.close() for c in cs), return_exceptions=True)
        return out

    out = run(scenario(), 60)
    for room, (got, want, joined) in out.items():
        assert got == want, f"{room}: after pipelined join/leave toggles (still joined: {joined}) NUMSUB should be " \
                            f"{want}, is {got}"


def test_namespace_prefixes_every_channel_and_key_and_separates_deployments(redis_server, wsfan):
    room = uniq("nsroom")
    r = redis_server.client()
    x = redis_node(wsfan, redis_server, "ns-x", "--namespace", "staging:chat")
    y = redis_node(wsfan, redis_server, "ns-y", "--namespace", "staging:chat")
    z = redis_node(wsfan, redis_server, "ns-z")  # the default namespace, wsfan

    async def scenario():
        cx = await connect(x, uniq("u"), label="x")
        cy = await connect(y, uniq("u"), label="y")
        cz = await connect(z, uniq("u"), label="z")
        try:
            for c in (cx, cy, cz):
                await c.join(room)
            chans = bus_channels(r)
            p = await cx.publish(room, {"from": "staging"})
            got_y = await cy.recv_until("message", room=room)
            await cz.drain(0.3)
            z_msgs = [m for m in cz.inbox if m["type"] == "message"]
            hz = await cz.history(room)
            return chans, p, got_y, z_msgs, hz
        finally:
            for c in (cx, cy, cz):
                await c.close()

    chans, p, got_y, z_msgs, hz = run(scenario())
    assert {"staging:chat:all", "staging:chat:room:{%s}" % room, "wsfan:all", "wsfan:room:{%s}" % room} <= chans, \
        f"channels should be NS:all and NS:room:{{ROOM}} for each namespace: {sorted(chans)}"
    assert got_y["offset"] == p["offset"], "nodes of one namespace act as one server"
    assert not z_msgs and not hz["messages"], \
        f"another namespace on the same Redis never sees the messages: {short(z_msgs)} {hz}"
    stream = r.xrange("staging:chat:history:{%s}" % room)
    assert [e[0] for e in stream] == [p["offset"]], f"history lives in NS:history:{{ROOM}}: {stream}"
    assert not r.exists("wsfan:history:{%s}" % room) or not r.xlen("wsfan:history:{%s}" % room)


def test_a_refused_subscription_is_logged_fails_the_join_and_is_asked_again_on_the_next(redis_factory, wsfan):
    """Redis refuses SUBSCRIBE to one room's channel (an ACL without it):
    the node logs why, the join is answered unavailable after
    --request-timeout (not left waiting), other rooms work, and once the
    ACL allows it the next join of that room subscribes."""
    allowed = [f"&{NS}:all", f"&{NS}:probe:*", f"&{NS}:user:*", f"&{NS}:room:{{open-*"]
    redis = redis_factory(args=["--user", "default", "on", "nopass", "~*", "+@all", "resetchannels", *allowed])
    node = redis_node(wsfan, redis, "acl-a", "--request-timeout", "1000")
    r = redis.client()
    open_room, shut_room = uniq("open-"), uniq("shut-")

    async def scenario():
        c = await connect(node, uniq("u"))
        try:
            await c.error({"type": "join", "room": shut_room}, "unavailable")
            await c.join(open_room)
            assert numsub(r, room_ch(open_room))[room_ch(open_room)] == 1
            await c.publish(open_room, "still here")
            r.execute_command("ACL", "SETUSER", "default", "allchannels")
            await c.join(shut_room)
            assert numsub(r, room_ch(shut_room))[room_ch(shut_room)] == 1
        finally:
            await c.close()

    run(scenario(), 20)
    assert f"subscribing to {room_ch(shut_room)} failed: NOPERM" in node.log(), node.log_tail()
    assert node.alive()
