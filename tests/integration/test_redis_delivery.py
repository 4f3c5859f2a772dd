"""The Redis bus delivers across nodes (PROTOCOL.md sections 2, 3 and 6):
room messages, `send` and `broadcast` reach every matching connection on
every node exactly once and in one order, also with several publishers on
different nodes at once; echo:false leaves out only the publishing
connection (not a connection of another node with the same session id);
ephemeral messages cross nodes without an offset and stay out of history;
every PUBLISH payload is the envelope of section 6; anything may publish
`{"data":..}` to a room, user or all channel with a plain Redis client (from
null); invalid payloads are dropped and logged, and the node keeps serving.

A real redis-server (Debian's) on a free loopback port and three wsfan nodes
on it, started by the tests."""

import asyncio
import json
import re
import time

import pytest

from conftest import SLOW, publish_many, redis_node, run
from protocol_client import assert_ts, connect, offset_key, short, uniq

NS = "wsfan"


@pytest.fixture(scope="module")
def redis_srv(redis_factory_module):
    return redis_factory_module()


@pytest.fixture(scope="module")
def nodes(redis_srv, wsfan_module):
    ns = [redis_node(wsfan_module, redis_srv, f"d{i}", "--workers", "2", "--allow-broadcast") for i in range(3)]
    yield ns
    for n in ns:
        assert n.alive(), f"node {n.node_id} died during the module; log:\n{n.log_tail()}"


def room_msgs(c, room):
    return [m for m in c.log if m["type"] == "message" and m.get("room") == room]


async def close_all(cs):
    await asyncio.gather(*(c.close() for c in cs), return_exceptions=True)


async def end_with_sentinel(r, channel, cs, pred, label="sentinel"):
    """Publishes {"data": label} to channel with redis-py: Redis delivers it
    to each node after everything published before; each client of cs must
    get it (pred(m) tells its event), then a short quiet period is read."""
    r.publish(channel, json.dumps({"data": label}))
    for c in cs:
        await c.recv_match(lambda m: pred(m) and m.get("data") == label, f"the {label} on {channel}", 5.0)
    await asyncio.gather(*(c.drain(0.15) for c in cs))


# ---- rooms ----------------------------------------------------------------------------

def test_room_messages_from_publishers_on_three_nodes_reach_every_member_once_in_one_order(nodes, redis_srv):
    room = uniq("xroom")
    K = 30
    r = redis_srv.client()

    async def scenario():
        members, pubs = [], []
        try:
            for i, n in enumerate(nodes):
                for j in range(2):
                    c = await connect(n, uniq(f"m{i}"), label=f"member{i}.{j}@{n.node_id}")
                    await c.join(room)
                    members.append(c)
                p = await connect(n, uniq(f"p{i}"), label=f"publisher@{n.node_id}")
                await p.join(room)
                pubs.append(p)
            everyone = members + pubs
            acks = await asyncio.gather(*(publish_many(p, room, [{"p": i, "k": k} for k in range(K)], window=4)
                                          for i, p in enumerate(pubs)))
            got = {}
            for c in everyone:
                got[c.label] = await c.recv_n(lambda m: m["type"] == "message" and m.get("room") == room and
                                              isinstance(m.get("data"), dict), 3 * K,
                                              f"messages of {room}", 15.0)
            await end_with_sentinel(r, f"{NS}:room:{{{room}}}", everyone,
                                    lambda m: m["type"] == "message" and m.get("room") == room)
            extra = {c.label: [m for m in c.inbox if m["type"] == "message" and m.get("data") != "sentinel"]
                     for c in everyone}
            return [p.user for p in pubs], acks, got, extra
        finally:
            await close_all(members + pubs)

    users, acks, got, extra = run(scenario(), 60)
    stream = r.xrange(f"{NS}:history:{{{room}}}", "-", "+")

    ack_offset = {(i, k): acks[i][k]["offset"] for i in range(3) for k in range(K)}
    for key, off in ack_offset.items():
        assert isinstance(off, str), f"the ack of persisted publish {key} should carry its offset: {off!r}"
    ref_label = next(iter(got))
    ref = [(m["data"]["p"], m["data"]["k"]) for m in got[ref_label]]
    for label, msgs in got.items():
        seq = [(m["data"]["p"], m["data"]["k"]) for m in msgs]
        assert len(set(seq)) == len(seq) == 3 * K, \
            f"{label} should get each of the {3 * K} messages exactly once; duplicates: " \
            f"{[s for s in set(seq) if seq.count(s) > 1][:10]}"
        assert seq == ref, (f"{label} and {ref_label} saw the messages in different orders; first difference at "
                            f"#{next(i for i, (a, b) in enumerate(zip(seq, ref)) if a != b)}")
        offs = [m.get("offset") for m in msgs]
        assert all(offset_key(a) < offset_key(b) for a, b in zip(offs, offs[1:])), \
            f"{label}: offsets should increase in delivery order: {offs}"
        for m in msgs:
            p, k = m["data"]["p"], m["data"]["k"]
            assert m["offset"] == ack_offset[(p, k)], \
                f"{label}: message {(p, k)} has offset {m['offset']}, its publisher's ack said {ack_offset[(p, k)]}"
            assert m["from"] == users[p], f"{label}: message {(p, k)} should be from {users[p]}: {m!r}"
            assert_ts(m["ts"], f"{label}: ts of {m!r}")
        for p in range(3):
            ks = [k for (pp, k) in seq if pp == p]
            assert ks == list(range(K)), f"{label}: publisher {p}'s messages out of its publish order: {ks}"
        assert not extra[label], f"{label}: messages after the set (duplicates?): {short(extra[label])}"
    ids = [e[0] for e in stream]
    assert ids == [m["offset"] for m in got[ref_label]], \
        "the stream NS:history:{ROOM} (XRANGE) should hold exactly the delivered messages, in delivery order"
    for (sid, fields), m in zip(stream, got[ref_label]):
        assert fields.get("f") == m["from"] and json.loads(fields.get("d")) == m["data"] \
            and int(fields.get("t")) == m["ts"], f"stream entry {sid} {fields} differs from the delivered {m!r}"


def test_echo_false_skips_only_the_publishing_connection_not_its_namesake_on_another_node(redis_srv, wsfan):
    """With one worker each, a connection of each node has the same session
    id ("0.N"): the skip must hold on the publisher's node only."""
    room = uniq("echo")
    e0 = redis_node(wsfan, redis_srv, "echo-a", "--workers", "1")
    e1 = redis_node(wsfan, redis_srv, "echo-b", "--workers", "1")
    alice, bob = uniq("alice"), uniq("bob")

    async def scenario():
        cs = []
        try:
            # Readiness probes also take connection ids: step the node that is
            # behind until both have the same session id.
            p = await connect(e0, alice, label="publisher@a")
            twin = await connect(e1, bob, label="twin@b")
            for _ in range(20):
                if p.session == twin.session:
                    break
                behind_twin = int(twin.session.split(".")[1]) < int(p.session.split(".")[1])
                if behind_twin:
                    await twin.close()
                    twin = await connect(e1, bob, label="twin@b")
                else:
                    await p.close()
                    p = await connect(e0, alice, label="publisher@a")
            a2 = await connect(e0, alice, label="alice2@a")
            other = await connect(e1, uniq("carol"), label="carol@b")
            cs = [p, twin, a2, other]
            for c in cs:
                await c.join(room)
            await p.publish(room, {"n": 1}, echo=False)
            await p.publish(room, {"n": 2}, echo=False, ephemeral=True)
            await p.publish(room, {"n": 3})
            for c in cs[1:]:
                await c.recv_n(lambda m: m["type"] == "message" and m.get("data", {}).get("n") == 3, 1, "n=3")
            await p.recv_until("message", data={"n": 3})
            await asyncio.gather(*(c.drain(0.15) for c in cs))
            return p.session, twin.session, {c.label: [m["data"]["n"] for m in room_msgs(c, room)] for c in cs}
        finally:
            await close_all(cs)

    ps, ts, seen = run(scenario())
    assert seen["publisher@a"] == [3], \
        f"echo:false should leave out the publishing connection (echo true by default): {seen['publisher@a']}"
    for label in ("twin@b", "alice2@a", "carol@b"):
        assert seen[label] == [1, 2, 3], f"{label} should get every message once, echo:false ones included: " \
                                         f"{seen[label]} (publisher session {ps}, twin session {ts})"
    assert ps == ts, f"precondition: the twin on the other node should have the publisher's session id: {ps} {ts}"


def test_ephemeral_crosses_nodes_without_offset_and_stays_out_of_history(nodes, redis_srv):
    room = uniq("eph")
    r = redis_srv.client()

    async def scenario():
        p = await connect(nodes[0], uniq("typist"))
        m = await connect(nodes[1], uniq("watcher"))
        try:
            await p.join(room)
            await m.join(room)
            eph = await p.publish(room, {"typing": True}, ephemeral=True)
            got_eph = await m.recv_until("message", data={"typing": True})
            kept = await p.publish(room, {"text": "kept"})
            got_kept = await m.recv_until("message", data={"text": "kept"})
            h = await m.history(room)
            return eph, got_eph, kept, got_kept, h
        finally:
            await close_all([p, m])

    eph, got_eph, kept, got_kept, h = run(scenario())
    assert eph.get("offset") is None, f"an ephemeral publish has no offset: {eph!r}"
    assert "offset" not in got_eph, f"an ephemeral message carries no offset: {got_eph!r}"
    assert got_kept.get("offset") == kept["offset"], f"{got_kept!r} vs ack {kept!r}"
    assert [x["data"] for x in h["messages"]] == [{"text": "kept"}], f"history holds only persisted ones: {h!r}"
    stream = r.xrange(f"{NS}:history:{{{room}}}")
    assert [json.loads(f["d"]) for _, f in stream] == [{"text": "kept"}], \
        f"the stream should hold only the persisted message: {stream}"


# ---- users and everyone ---------------------------------------------------------------

def test_send_reaches_every_connection_of_the_user_on_every_node_once_in_one_order(nodes):
    bob = uniq("bob")
    K = 15

    async def scenario():
        cs = []
        try:
            bobs = [await connect(n, bob, label=f"bob@{n.node_id}") for n in nodes]
            bobs.append(await connect(nodes[1], bob, label=f"bob2@{nodes[1].node_id}"))
            not_bob = await connect(nodes[1], uniq("bobby"), label="bobby")
            senders = [await connect(nodes[0], uniq("alice"), label="alice"),
                       await connect(nodes[2], uniq("carol"), label="carol")]
            cs = bobs + [not_bob] + senders

            async def send_all(s, i):
                for k in range(K):
                    await s.ok({"type": "send", "user": bob, "data": {"s": i, "k": k}}, "ack")

            await asyncio.gather(*(send_all(s, i) for i, s in enumerate(senders)))
            got = {b.label: await b.recv_n(lambda m: m["type"] == "direct", 2 * K, "directs", 10.0) for b in bobs}
            await asyncio.gather(*(c.drain(0.2) for c in cs))
            extra = {c.label: [m for m in c.inbox if m["type"] == "direct"] for c in cs}
            return [s.user for s in senders], got, extra
        finally:
            await close_all(cs)

    senders, got, extra = run(scenario())
    ref_label = next(iter(got))
    ref = [(m["data"]["s"], m["data"]["k"]) for m in got[ref_label]]
    for label, msgs in got.items():
        seq = [(m["data"]["s"], m["data"]["k"]) for m in msgs]
        assert sorted(seq) == sorted((s, k) for s in range(2) for k in range(K)), \
            f"{label}: each direct exactly once: {seq}"
        assert seq == ref, f"{label} and {ref_label} got the directs in different orders:\n{seq}\n{ref}"
        for s in range(2):
            assert [k for (ss, k) in seq if ss == s] == list(range(K)), f"{label}: sender {s} out of order"
        for m in msgs:
            assert m["from"] == senders[m["data"]["s"]] and "room" not in m and "offset" not in m, \
                f"{label}: a direct from the sender, without room or offset: {m!r}"
            assert_ts(m["ts"], f"{label}: {m!r}")
    for label, e in extra.items():
        assert not e, f"{label}: unexpected directs (duplicates, or not for this user): {short(e)}"


def test_broadcast_reaches_every_connection_on_every_node_once_in_one_order(nodes):
    K = 10

    async def scenario():
        cs = []
        try:
            for n in nodes:
                cs.append(await connect(n, uniq("u"), label=f"user@{n.node_id}"))
                cs.append(await connect(n, None, label=f"anon@{n.node_id}"))
            casters = [cs[0], cs[2]]

            async def cast(c, i):
                for k in range(K):
                    await c.ok({"type": "broadcast", "data": {"b": i, "k": k}}, "ack")

            await asyncio.gather(*(cast(c, i) for i, c in enumerate(casters)))
            got = {c.label: await c.recv_n(lambda m: m["type"] == "broadcast", 2 * K, "broadcasts", 10.0)
                   for c in cs}
            await asyncio.gather(*(c.drain(0.2) for c in cs))
            extra = {c.label: [m for m in c.inbox if m["type"] == "broadcast"] for c in cs}
            return [c.user for c in casters], got, extra
        finally:
            await close_all(cs)

    casters, got, extra = run(scenario())
    ref_label = next(iter(got))
    ref = [(m["data"]["b"], m["data"]["k"]) for m in got[ref_label]]
    for label, msgs in got.items():
        seq = [(m["data"]["b"], m["data"]["k"]) for m in msgs]
        assert sorted(seq) == sorted((b, k) for b in range(2) for k in range(K)), f"{label}: each once: {seq}"
        assert seq == ref, f"{label} and {ref_label}: different orders:\n{seq}\n{ref}"
        for m in msgs:
            assert m["from"] == casters[m["data"]["b"]], f"{label}: from the broadcaster: {m!r}"
    for label, e in extra.items():
        assert not e, f"{label}: broadcasts beyond the {2 * K} sent: {short(e)}"


# ---- the envelope on the wire ------------------------------------------------------------

def _next_payload(ps, what, timeout=5.0):
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        m = ps.get_message(timeout=0.1)
        if m and m["type"] == "message":
            env = json.loads(m["data"])
            if "presence" not in env:  # the join's presence_join also travels on the room channel
                return m["channel"], env
    raise AssertionError(f"no PUBLISH payload for {what} within {timeout * SLOW:.0f}s")


def test_every_publish_is_the_envelope_of_section_6_on_the_named_channel(nodes, redis_srv):
    room, bob = uniq("env"), uniq("bob")
    node = nodes[0]
    r = redis_srv.client()
    ps = r.pubsub()
    ps.subscribe(f"{NS}:room:{{{room}}}", f"{NS}:user:{{{bob}}}", f"{NS}:all")
    for _ in range(3):
        m = ps.get_message(timeout=2.0)
        assert m and m["type"] == "subscribe", f"redis-py subscribe confirmation: {m!r}"

    async def scenario():
        a = await connect(node, uniq("alice"))
        try:
            await a.join(room)
            out = {}
            await a.barrier()
            out["persisted"] = (await a.publish(room, {"x": 1}, ref="r1"), _next_payload(ps, "a publish"))
            out["no echo"] = (await a.publish(room, {"x": 2}, echo=False), _next_payload(ps, "echo:false"))
            out["ephemeral"] = (await a.publish(room, [3], ephemeral=True), _next_payload(ps, "ephemeral"))
            out["send"] = (await a.ok({"type": "send", "user": bob, "data": "hi"}, "ack"), _next_payload(ps, "send"))
            out["broadcast"] = (await a.ok({"type": "broadcast", "data": None}, "ack"),
                                _next_payload(ps, "broadcast"))
            return a.user, a.session, out
        finally:
            await a.close()

    try:
        user, session, out = run(scenario())
    finally:
        ps.close()
    now = time.time() * 1000
    for what, (ack, (channel, env)) in out.items():
        assert env.get("v") == 1 and env.get("from") == user and env.get("origin") == node.node_id, \
            f"{what}: envelope {env!r} should have v 1, from {user!r}, origin {node.node_id!r}"
        assert type(env.get("ts")) is int and abs(env["ts"] - now) < 60_000, f"{what}: ts in ms: {env!r}"
        # "mac" seals a persisted envelope's offset (docs/protocol.md section 6).
        fields = {"v", "room", "from", "offset", "ts", "origin", "echo_skip", "data"} | ({"mac"} if "offset" in env else set())
        assert set(env) <= fields, f"{what}: only the fields of section 6: {env!r}"
    ch, env = out["persisted"][1]
    assert ch == f"{NS}:room:{{{room}}}" and env["room"] == room and env["data"] == {"x": 1}, env
    assert env["offset"] == out["persisted"][0]["offset"] and env.get("echo_skip") is None, \
        f"a persisted message's envelope carries its offset (as acked) and echo_skip null: {env!r}"
    assert re.fullmatch(r"[0-9a-f]{40}", env.get("mac", "")), f"a persisted envelope is sealed: {env!r}"
    ch, env = out["no echo"][1]
    assert env.get("echo_skip") == session, f"echo:false names the publishing connection in echo_skip: {env!r}"
    ch, env = out["ephemeral"][1]
    assert env.get("offset") is None and env["data"] == [3], f"ephemeral: no offset: {env!r}"
    ch, env = out["send"][1]
    assert ch == f"{NS}:user:{{{bob}}}" and env["data"] == "hi", f"send goes to NS:user:{{USER}}: {ch} {env!r}"
    ch, env = out["broadcast"][1]
    assert ch == f"{NS}:all" and "data" in env and env["data"] is None, f"broadcast goes to NS:all: {ch} {env!r}"


# ---- publishing from outside ------------------------------------------------------------

def test_any_redis_client_can_publish_to_room_user_and_all_channels(nodes, redis_srv):
    room, bob = uniq("ext"), uniq("bob")
    r = redis_srv.client()

    async def scenario():
        cs = []
        try:
            members = [await connect(nodes[0], uniq("m"), label="member@0"),
                       await connect(nodes[1], None, label="anon-member@1")]
            bobs = [await connect(nodes[1], bob, label="bob@1"), await connect(nodes[2], bob, label="bob@2")]
            others = [await connect(nodes[2], None, label="anon@2")]
            cs = members + bobs + others
            for m in members:
                await m.join(room)
            out = {"room receivers": r.publish(f"{NS}:room:{{{room}}}", json.dumps({"data": {"text": "hi"}}))}
            out["room"] = [await m.recv_until("message", room=room) for m in members]
            out["user receivers"] = r.publish(f"{NS}:user:{{{bob}}}", '{"data": [1, 2], "v": 1}')
            out["user"] = [await b.recv_until("direct") for b in bobs]
            r.publish(f"{NS}:all", json.dumps({"data": "everyone"}))
            # The nodes are shared by the module: a broadcast of an earlier
            # test may still be on its way; only this test's payloads count.
            out["all"] = [await c.recv_until("broadcast", data="everyone") for c in cs]
            await asyncio.gather(*(c.drain(0.15) for c in cs))
            mine = ({"text": "hi"}, [1, 2], "everyone")
            out["extra"] = {c.label: [m for m in c.inbox if m["type"] in ("message", "direct", "broadcast")
                                      and m.get("data") in mine] for c in cs}
            return out
        finally:
            await close_all(cs)

    out = run(scenario())
    assert out["room receivers"] == 2, \
        f"the room channel should have one subscriber per node with members (2): {out['room receivers']}"
    for m in out["room"]:
        assert m["from"] is None and m["data"] == {"text": "hi"} and "offset" not in m, \
            f"an external room message: from null, the data, no offset (not persisted): {m!r}"
        assert_ts(m["ts"], f"ts of {m!r}")
    assert out["user receivers"] == 2, f"bob's channel: one subscriber per node with bob: {out['user receivers']}"
    for m in out["user"]:
        assert m["from"] is None and m["data"] == [1, 2], f"an external direct: {m!r}"
    for m in out["all"]:
        assert m["from"] is None and m["data"] == "everyone", f"an external broadcast: {m!r}"
    for label, e in out["extra"].items():
        assert not e, f"{label}: more than one event per publish: {short(e)}"


INVALID = [
    "not json",
    "[1, 2]",
    '"a string"',
    "42",
    "null",
    "{}",
    '{"text": "no data"}',
    '{"v": 2, "data": "unknown version"}',
    '{"v": "1", "data": "v as a string"}',
    '{"data": "bad from", "from": "not valid!"}',
    '{"data": "from a number", "from": 5}',
    '{"data": "bad offset", "offset": "yesterday"}',
    '{"data": 1',
    b"\xff\xfe",
]


def test_invalid_payloads_are_dropped_and_logged_and_the_node_keeps_serving(nodes, redis_srv):
    room, bob = uniq("bad"), uniq("bob")
    r = redis_srv.client()
    channels = [f"{NS}:room:{{{room}}}", f"{NS}:user:{{{bob}}}", f"{NS}:all"]

    async def scenario():
        cs = []
        try:
            m0 = await connect(nodes[0], bob, label="bob@0")
            m1 = await connect(nodes[1], uniq("m"), label="member@1")
            cs = [m0, m1]
            for c in cs:
                await c.join(room)
            for _ in range(20):
                pipe = r.pipeline(transaction=False)
                for ch in channels:
                    for bad in INVALID:
                        pipe.publish(ch, bad)
                pipe.execute()
            r.publish(channels[0], json.dumps({"data": "after"}))
            firsts = [await c.recv_match(lambda m: m["type"] in ("message", "direct", "broadcast"),
                                         "the first event after the invalid payloads") for c in cs]
            p = await m1.publish(room, {"still": "serving"})
            got = [await c.recv_until("message", data={"still": "serving"}) for c in cs]
            await asyncio.gather(*(c.drain(0.15) for c in cs))
            extra = [m for c in cs for m in c.inbox if m["type"] in ("message", "direct", "broadcast")]
            return firsts, p, got, extra
        finally:
            await close_all(cs)

    firsts, p, got, extra = run(scenario())
    for f in firsts:
        assert f["type"] == "message" and f["data"] == "after", \
            f"no invalid payload may reach a client; the first event should be the valid one: {f!r}"
    assert all(g["offset"] == p["offset"] for g in got), f"the nodes keep serving after invalid payloads: {got}"
    assert not extra, f"unexpected events: {short(extra)}"
    for n in nodes[:2]:
        assert n.alive(), f"node {n.node_id} died on invalid payloads; log:\n{n.log_tail()}"
        lines = [ln for ln in n.log().splitlines() if "drop" in ln.lower()]
        assert lines, f"node {n.node_id} should log the dropped payloads; log:\n{n.log_tail()}"
        assert any(room in ln for ln in lines), f"the log should name the channel: {lines[:5]}"
        sent = 20 * len(INVALID) * 3
        assert len(lines) < sent // 2, \
            f"node {n.node_id}: logging of dropped payloads should be rate limited: {len(lines)} lines for {sent}"
