"""Presence shared by the nodes through Redis (PROTOCOL.md sections 2, 3 and
6): one presence_join when a user's first connection anywhere joins, no
early presence_leave while the user still has a connection in the room on
another node, the presence command counts connections on every node; a node
killed with SIGKILL stops counting within a bounded time (--presence-ttl)
and the members left on the other nodes receive exactly one presence_leave
for each of its users (no ghost users), while users that still have a
connection on a live node stay."""

import asyncio
import json
import time

from conftest import SLOW, redis_node, run
from protocol_client import connect, uniq

NS = "wsfan"


def pres(c, user=None):
    return [(m["type"], m["user"]) for m in c.inbox
            if m["type"] in ("presence_join", "presence_leave") and (user is None or m["user"] == user)]


def users_of(p):
    return {u["user"]: u["connections"] for u in p["users"]}


def test_a_user_on_two_nodes_joins_once_and_leaves_once(redis_server, wsfan):
    a = redis_node(wsfan, redis_server, "pres-a", "--workers", "2")
    b = redis_node(wsfan, redis_server, "pres-b", "--workers", "2")
    room = uniq("proom")
    alice, bob, carol = uniq("alice"), uniq("bob"), uniq("carol")
    r = redis_server.client()
    ps = r.pubsub()
    ps.subscribe(f"{NS}:room:{{{room}}}")
    ps.get_message(timeout=2)

    async def settle(cs):
        # a round trip through Redis from each node, then a quiet period
        r.publish(f"{NS}:room:{{{room}}}", json.dumps({"data": "tick"}))
        for c in cs:
            await c.recv_until("message", data="tick")
        await asyncio.gather(*(c.drain(0.15) for c in cs))

    async def scenario():
        ob = await connect(a, bob, label="bob@a")
        oc = await connect(b, carol, label="carol@b")
        a1 = a2 = None
        steps = {}
        try:
            await ob.join(room)
            await oc.join(room)
            await settle([ob, oc])
            ob.inbox.clear(), oc.inbox.clear()

            a1 = await connect(a, alice, label="alice@a")
            await a1.join(room)
            await ob.recv_until("presence_join", user=alice)
            await oc.recv_until("presence_join", user=alice)
            await settle([ob, oc, a1])
            a1.inbox.clear()
            steps["first join"] = (pres(ob, alice) + [("presence_join", alice)], pres(oc, alice) +
                                   [("presence_join", alice)])
            ob.inbox.clear(), oc.inbox.clear()

            a2 = await connect(b, alice, label="alice@b")
            await a2.join(room)
            await settle([ob, oc, a1])
            steps["second join, other node"] = (pres(ob, alice), pres(oc, alice), pres(a1, alice))
            steps["presence with both"] = (users_of(await ob.presence(room)), users_of(await oc.presence(room)))

            await a1.leave(room)
            await settle([ob, oc, a2])
            steps["first leave"] = (pres(ob, alice), pres(oc, alice), pres(a2, alice))
            steps["presence with one"] = (users_of(await ob.presence(room)), users_of(await oc.presence(room)))
            ob.inbox.clear(), oc.inbox.clear()

            await a2.close()
            await ob.recv_until("presence_leave", user=alice)
            await oc.recv_until("presence_leave", user=alice)
            await settle([ob, oc])
            steps["last leave"] = (pres(ob, alice) + [("presence_leave", alice)], pres(oc, alice) +
                                   [("presence_leave", alice)])
            steps["presence after"] = (users_of(await ob.presence(room)), users_of(await oc.presence(room)))
            steps["hash after"] = r.hgetall(f"{NS}:presence:{{{room}}}")
            envs = []
            for _ in range(200):
                m = ps.get_message(timeout=0.01)
                if m is None:
                    break
                if m["type"] == "message":
                    envs.append(json.loads(m["data"]))
            steps["envelopes"] = [e for e in envs if "presence" in e and e.get("user") == alice]
            return steps
        finally:
            for c in (ob, oc, a1, a2):
                if c:
                    await c.close()

    try:
        s = run(scenario())
    finally:
        ps.close()
    j = ("presence_join", alice)
    lv = ("presence_leave", alice)
    assert s["first join"] == ([j], [j]), f"one presence_join on each node for the first connection: {s['first join']}"
    assert s["second join, other node"] == ([], [], []), \
        f"alice's second connection (other node) joining: no second presence_join anywhere: " \
        f"{s['second join, other node']}"
    assert s["presence with both"][0].get(alice) == 2 and s["presence with both"][1].get(alice) == 2, \
        f"the presence command counts alice's connections on both nodes (2), from either node: " \
        f"{s['presence with both']}"
    assert s["first leave"] == ([], [], []), \
        f"alice still has a connection in the room on node b: no presence_leave yet: {s['first leave']}"
    assert s["presence with one"][0].get(alice) == 1 and s["presence with one"][1].get(alice) == 1, \
        f"presence after one of alice's connections left: {s['presence with one']}"
    assert s["last leave"] == ([lv], [lv]), f"exactly one presence_leave on each node: {s['last leave']}"
    assert alice not in s["presence after"][0] and alice not in s["presence after"][1], s["presence after"]
    assert alice not in s["hash after"], f"{NS}:presence:{{ROOM}} still has alice: {s['hash after']}"
    kinds = [e["presence"] for e in s["envelopes"]]
    assert kinds == ["join", "leave"], f"one join and one leave envelope on the room channel: {s['envelopes']}"
    for e in s["envelopes"]:
        assert e.get("v") == 1 and e.get("room") == room and "data" in e and e.get("origin") in ("pres-a", "pres-b"), \
            f"a presence envelope: {e!r}"


def test_a_node_killed_with_sigkill_leaves_presence_within_the_ttl(redis_server, wsfan):
    ttl = 2
    args = ("--workers", "2", "--presence-ttl", str(ttl))
    a = redis_node(wsfan, redis_server, "ttl-a", *args)
    c_node = redis_node(wsfan, redis_server, "ttl-c", *args)
    victim = redis_node(wsfan, redis_server, "ttl-victim", *args)
    room = uniq("pkill")
    alice, dave, erin, bob, carol = (uniq(x) for x in ("alice", "dave", "erin", "bob", "carol"))
    r = redis_server.client()

    async def scenario():
        ob = await connect(a, bob, label="bob@a")
        oc = await connect(c_node, carol, label="carol@c")
        ea = await connect(a, erin, label="erin@a")
        on_victim = [await connect(victim, alice), await connect(victim, dave), await connect(victim, erin),
                     await connect(victim, alice)]
        try:
            for c in (ob, oc, ea, *on_victim):
                await c.join(room)
            for c in (ob, oc, ea):
                for u in (alice, dave):
                    await c.recv_until("presence_join", user=u)
            await asyncio.gather(ob.drain(0.1), oc.drain(0.1), ea.drain(0.1))
            before = users_of(await ob.presence(room))
            ob.inbox.clear(), oc.inbox.clear(), ea.inbox.clear()
            t0 = time.monotonic()
            victim.kill()
            left_at = {}
            for c in (ob, oc):
                for u in (alice, dave):
                    c.inbox.append(await c.recv_until("presence_leave", user=u, timeout=(2 * ttl + 3)))
                    left_at[(c.label, u)] = time.monotonic() - t0
            await asyncio.sleep(2 * ttl / 3 + 0.5)   # one more sweep: no duplicate, no leave for erin
            await asyncio.gather(ob.drain(0.1), oc.drain(0.1), ea.drain(0.1))
            after = users_of(await ob.presence(room)), users_of(await oc.presence(room))
            hash_after = r.hgetall(f"{NS}:presence:{{{room}}}")
            # the survivors keep serving the room
            await ob.publish(room, "still here")
            await oc.recv_until("message", data="still here")
            return before, left_at, {c.label: pres(c) for c in (ob, oc, ea)}, after, hash_after
        finally:
            for c in (ob, oc, ea, *on_victim):
                await c.close()

    before, left_at, evs, after, hash_after = run(scenario(), 60)
    assert before.get(alice) == 2 and before.get(erin) == 2, f"presence before the kill: {before}"
    bound = 2 * ttl + 1.0
    slow = {k: round(v, 2) for k, v in left_at.items() if v > bound * SLOW}
    assert not slow, f"presence_leave of the killed node's users should come within ~2*ttl ({bound:.0f}s): {slow}"
    for label, e in evs.items():
        assert ("presence_leave", erin) not in e and ("presence_join", erin) not in e, \
            f"{label}: erin still has a connection on a live node: no presence event for her: {e}"
        assert ("presence_leave", bob) not in e and ("presence_leave", carol) not in e, f"{label}: {e}"
    for label in ("bob@a", "carol@c"):
        assert sorted(evs[label]) == [("presence_leave", alice), ("presence_leave", dave)], \
            f"{label}: exactly one presence_leave for each user of the killed node (none twice, though two " \
            f"nodes sweep): {evs[label]}"
    for who, users in zip(("node a", "node c"), after):
        assert users == {bob: 1, carol: 1, erin: 1}, \
            f"presence on {who} after the kill: the killed node's connections no longer count: {users}"
    assert set(hash_after) == {bob, carol, erin}, f"the presence hash keeps no ghost: {hash_after}"
    assert all("ttl-victim" not in v for v in hash_after.values()), f"the dead node is gone from {hash_after}"
