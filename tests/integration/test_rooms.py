"""Who receives what (PROTOCOL.md sections 2-4): room messages reach exactly
the room's members, `send` every connection of one user, `broadcast` every
connection (only with --allow-broadcast); the name rules for rooms and users;
not_member; --max-rooms; ephemeral and echo:false; and a slow reader that is
closed with 1013 while the other members get every message; a join sent
again while the first is on its way is answered after it.

Every test runs on both engines (the `engine` fixture of conftest.py): the
memory bus and store, and Redis; but for the refused names, which the
command parser refuses before any engine sees them (@engine_independent)."""

import asyncio
import time

import pytest

from conftest import SLOW, PeerClosed, RawClient, engine_independent, run
from protocol_client import (assert_keys, clients, connect, connect_on_other_worker, events, settle, uniq)


@pytest.fixture(scope="module")
def server(engine, wsfan_module):
    srv = engine.node(wsfan_module, "--workers", "4", "--allow-broadcast")
    yield srv
    assert srv.alive(), f"server died during the module; log:\n{srv.log_tail()}"


def messages(c, type_="message"):
    return [m for m in c.inbox if m["type"] == type_]


# ---- rooms -----------------------------------------------------------------

def test_room_message_reaches_exactly_the_members(server):
    r1, r2 = uniq("r1"), uniq("r2")

    async def scenario():
        async with clients(server, uniq("a"), uniq("b"), uniq("c"), uniq("d"), None, None,
                           labels=["a", "b", "c", "d", "anon-r1", "anon-none"]) as cs:
            a, b, c, d, anon, anon2 = cs
            await a.join(r1)
            await a.join(r2)
            await b.join(r1)
            await c.join(r2)
            await anon.join(r1)
            await d.join(r1)
            await d.leave(r1)  # joined and left: no longer a member
            await a.publish(r1, "to-r1")
            await c.publish(r2, "to-r2")
            await anon.publish(r1, "anon-to-r1")
            await settle(cs)
            return {x.label: [(m["room"], m["data"]) for m in messages(x)] for x in cs}, \
                sorted({x.worker for x in cs})

    got, workers = run(scenario())
    expect = {
        "a": [(r1, "to-r1"), (r2, "to-r2"), (r1, "anon-to-r1")],
        "b": [(r1, "to-r1"), (r1, "anon-to-r1")],
        "c": [(r2, "to-r2")],
        "d": [],
        "anon-r1": [(r1, "to-r1"), (r1, "anon-to-r1")],
        "anon-none": [],
    }
    for label, want in expect.items():
        assert got[label] == want, f"{label} should have received exactly {want}, got {got[label]} (workers {workers})"


def test_room_message_reaches_members_on_every_worker(server):
    room = uniq("spread")

    async def scenario():
        cs = [await connect(server, None, label=f"m{i}") for i in range(16)]
        outsiders = [await connect(server, None, label=f"out{i}") for i in range(4)]
        try:
            for c in cs:
                await c.join(room)
            await cs[0].publish(room, "all-workers")
            got = [await c.recv_until("message", data="all-workers") for c in cs]
            await settle(cs + outsiders)
            return ({c.worker for c in cs}, [len(messages(c)) for c in cs],
                    [len(messages(o)) for o in outsiders], got)
        finally:
            await asyncio.gather(*(c.close() for c in cs + outsiders))

    workers, extra, outside, got = run(scenario())
    assert len(workers) >= 2, f"16 connections should spread over more than one of 4 workers: {workers}"
    assert all(m["room"] == room for m in got)
    assert extra == [0] * 16, f"each member should get the message exactly once; extra copies: {extra}"
    assert outside == [0] * 4, f"connections outside the room received it: {outside}"


# ---- users (send) -------------------------------------------------------------------

def test_send_reaches_every_connection_of_the_user_and_nobody_else(server):
    alice, bob, carol = uniq("alice"), uniq("bob"), uniq("carol")

    async def scenario():
        async with clients(server, alice, bob, carol, None, labels=["alice", "bob1", "carol", "anon"]) as cs:
            a, b1, carol_c, anon = cs
            room = uniq("send-room")
            for c in cs:
                await c.join(room)  # sharing a room must not matter
            b2 = await connect_on_other_worker(server, bob, {b1.worker})
            b2.label = "bob2"
            try:
                ack = await a.ok({"type": "send", "user": bob, "data": {"hi": "bob"}}, "ack")
                await anon.ok({"type": "send", "user": bob, "data": "from-anon"}, "ack")
                await settle(cs + [b2])
                return ack, {c.label: [(m["from"], m["data"]) for m in messages(c, "direct")] for c in cs + [b2]}, \
                    {c.label: messages(c) for c in cs + [b2]}, (b1.worker, b2.worker)
            finally:
                await b2.close()

    ack, got, room_msgs, workers = run(scenario())
    assert_keys(ack, ["type", "ref"], "ack of send")
    want_bob = [(alice, {"hi": "bob"}), (None, "from-anon")]
    assert got["bob1"] == want_bob, f"bob's first connection (worker {workers[0]}) should get both: {got['bob1']}"
    assert got["bob2"] == want_bob, f"bob's second connection (worker {workers[1]}) should get both: {got['bob2']}"
    for other in ("alice", "carol", "anon"):
        assert got[other] == [], f"{other} received a direct message meant for bob: {got[other]}"
    for label, msgs in room_msgs.items():
        assert msgs == [], f"a send must not go to the room: {label} got {msgs}"


def test_send_to_yourself_reaches_all_your_connections(server):
    alice = uniq("alice")

    async def scenario():
        async with clients(server, alice, alice, uniq("other"), labels=["a1", "a2", "other"]) as cs:
            await cs[0].ok({"type": "send", "user": alice, "data": "note to self"}, "ack")
            await settle(cs)
            return {c.label: [m["data"] for m in messages(c, "direct")] for c in cs}

    got = run(scenario())
    assert got == {"a1": ["note to self"], "a2": ["note to self"], "other": []}, \
        f"a send reaches every connection of the user, the sender's own included: {got}"


def test_send_to_a_user_with_no_connection_reaches_nobody(server):
    async def scenario():
        async with clients(server, uniq("x"), None) as cs:
            r = await cs[0].request({"type": "send", "user": uniq("ghost"), "data": 1, "ref": "g"})
            await settle(cs)
            return r, [m for c in cs for m in c.inbox]

    r, seen = run(scenario())
    assert r["type"] in ("ack", "error") and r["ref"] == "g", r
    assert not [m for m in seen if m["type"] == "direct"], seen


# ---- all (broadcast) ----------------------------------------------------------------

def test_broadcast_reaches_every_connection_once(server):
    async def scenario():
        cs = [await connect(server, uniq("bc") if i % 3 else None, label=f"c{i}") for i in range(12)]
        try:
            room = uniq("bc-room")
            for c in cs[:4]:
                await c.join(room)
            ack = await cs[5].ok({"type": "broadcast", "data": {"all": True}}, "ack")
            await cs[0].ok({"type": "broadcast", "data": "second"}, "ack")
            got = [await c.recv_until("broadcast", data="second") for c in cs]
            await settle(cs)
            return ack, {c.worker for c in cs}, \
                [[m["data"] for m in c.log if m["type"] == "broadcast"] for c in cs], got, \
                [messages(c) for c in cs]
        finally:
            await asyncio.gather(*(c.close() for c in cs))

    ack, workers, seen, got, room_msgs = run(scenario())
    assert_keys(ack, ["type", "ref"], "ack of broadcast")
    assert len(workers) >= 2, f"12 connections should spread over the 4 workers: {workers}"
    for i, s in enumerate(seen):
        assert s == [{"all": True}, "second"], f"connection c{i} should get each broadcast exactly once: {s}"
    assert all(not m for m in room_msgs), f"a broadcast is not a room message: {room_msgs}"


def test_broadcast_forbidden_without_allow_broadcast(engine, wsfan):
    srv = engine.node(wsfan, "--workers", "2")

    async def scenario():
        async with clients(srv, uniq("u"), None, uniq("v")) as cs:
            r = await cs[0].request({"type": "broadcast", "data": 1, "ref": "b"})
            r2 = await cs[1].request({"type": "broadcast", "data": 2, "ref": 5})
            await settle(cs)
            return r, r2, [m for c in cs for m in c.inbox]

    r, r2, seen = run(scenario())
    assert r["type"] == "error" and r["code"] == "forbidden" and r["ref"] == "b", r
    assert r2["type"] == "error" and r2["code"] == "forbidden" and r2["ref"] == 5, r2
    assert not [m for m in seen if m["type"] == "broadcast"], f"a refused broadcast was delivered: {seen}"


# ---- names ---------------------------------------------------------------------------

ALLOWED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-"
NAME_128 = (ALLOWED * 2)[:128]
assert len(NAME_128.encode()) == 128

BAD_NAMES = {
    "129-bytes": "r" * 129,
    "129-bytes-allowed-chars": (ALLOWED * 2)[:129],
    "empty": "",
    "space": "a b",
    "star": "a*",
    "braces": "{x}",
    "question": "a?",
    "brackets": "[a]",
    "backslash": "a\\b",
    "slash": "a/b",
    "comma": "a,b",
    "hash": "a#b",
    "at": "a@b",
    "tab": "a\tb",
    "newline": "a\nb",
    "non-ascii": "café",
    "nul": "a\u0000b",
    "del": "a\u007fb",
    "only-space": " ",
}


def rewrites(name: str):
    """Names a server that rewrites instead of refusing might have used."""
    keep = "".join(ch for ch in name if ch in ALLOWED)
    out = {keep, name[:128], name.strip(), name.replace(" ", "_"), name.replace(" ", "-"), name.lower()}
    out |= {"".join(ch if ch in ALLOWED else r for ch in name) for r in "_-."}
    return sorted(n for n in out if n and len(n) <= 128 and all(ch in ALLOWED for ch in n) and n != name)


@engine_independent
@pytest.mark.parametrize("name", list(BAD_NAMES.values()), ids=list(BAD_NAMES))
def test_bad_room_name_is_refused_never_rewritten(server, name):
    async def scenario():
        async with clients(server, uniq("rn"), None) as (c, anon):
            errs = {}
            for cmd in ({"type": "join"}, {"type": "publish", "data": 1}, {"type": "history"},
                        {"type": "presence"}, {"type": "leave"}):
                errs[cmd["type"]] = await c.request({**cmd, "room": name, "ref": cmd["type"]}, timeout=2)
            await anon.request({"type": "join", "room": name, "ref": "anon"}, timeout=2)
            # A rewritten join would have made c a member of one of these.
            after = {}
            for i, n in enumerate(rewrites(name)):
                after[n] = await c.request({"type": "publish", "room": n, "data": 1, "ref": f"rw-{i}"})
            return errs, after

    errs, after = run(scenario())
    for cmd, r in errs.items():
        assert r["type"] == "error" and r["code"] == "room_invalid" and r["ref"] == cmd, \
            f"{cmd} of room {name!r} should be room_invalid, got {r!r}"
    for n, r in after.items():
        assert r.get("code") == "not_member", f"join of {name!r} was refused, yet the connection is in {n!r}: {r!r}"


@engine_independent
@pytest.mark.parametrize("name", list(BAD_NAMES.values()), ids=list(BAD_NAMES))
def test_bad_user_name_in_send_is_refused_never_rewritten(server, name):
    candidates = rewrites(name)

    async def scenario():
        targets = [await connect(server, n) for n in candidates]
        try:
            async with clients(server, uniq("sender"), None) as (s, anon):
                r = await s.request({"type": "send", "user": name, "data": "x", "ref": "s"}, timeout=2)
                r2 = await anon.request({"type": "send", "user": name, "data": "x", "ref": 2}, timeout=2)
                await settle(targets + [s, anon])
                return r, r2, {t.user: messages(t, "direct") for t in targets}
        finally:
            await asyncio.gather(*(t.close() for t in targets))

    r, r2, got = run(scenario())
    assert r["type"] == "error" and r["code"] == "user_invalid" and r["ref"] == "s", \
        f"send to user {name!r} should be user_invalid, got {r!r}"
    assert r2["type"] == "error" and r2["code"] == "user_invalid" and r2["ref"] == 2, r2
    for user, msgs in got.items():
        assert not msgs, f"send to {name!r} was delivered to {user!r}: {msgs}"


def test_room_name_of_128_allowed_bytes_is_accepted_unchanged(server):
    async def scenario():
        async with clients(server, uniq("long"), None) as (a, b):
            j = await a.join(NAME_128)
            await b.join(NAME_128)
            ack = await a.publish(NAME_128, "long room")
            m = await b.recv_until("message", data="long room")
            h = await a.history(NAME_128)
            p = await b.presence(NAME_128)
            lv = await a.leave(NAME_128)
            return j, ack, m, h, p, lv

    j, ack, m, h, p, lv = run(scenario())
    assert j["room"] == NAME_128 and m["room"] == NAME_128 and h["room"] == NAME_128 and p["room"] == NAME_128 \
        and lv["room"] == NAME_128, "a 128-byte room name must be kept unchanged in every reply and event"
    assert [x["offset"] for x in h["messages"]][-1:] == [ack["offset"]], h


def test_user_name_of_128_allowed_bytes_is_accepted_unchanged(server):
    async def scenario():
        async with clients(server, NAME_128, uniq("s")) as (u, s):
            await s.ok({"type": "send", "user": NAME_128, "data": "hi"}, "ack")
            m = await u.recv_until("direct")
            room = uniq("u128")
            await u.join(room)
            await s.join(room)
            await u.publish(room, "from long")
            m2 = await s.recv_until("message", data="from long")
            p = await s.presence(room)
            return u.welcome, m, m2, p

    welcome, m, m2, p = run(scenario())
    assert welcome["user"] == NAME_128, welcome
    assert m["data"] == "hi" and m2["from"] == NAME_128, (m, m2)
    assert {"user": NAME_128, "connections": 1} in p["users"], p


def test_names_are_case_sensitive_and_every_allowed_char_is_kept(server):
    upper = "Room_A.b:C-" + uniq("Z")
    lower = upper.lower()

    async def scenario():
        async with clients(server, None, None) as (up, low):
            j = await up.join(upper)
            await low.join(lower)
            await up.publish(upper, "upper")
            await settle([up, low])
            return j, messages(up), messages(low)

    j, up_msgs, low_msgs = run(scenario())
    assert j["room"] == upper, f"joined room should be exactly {upper!r}: {j!r}"
    assert [(m["room"], m["data"]) for m in up_msgs] == [(upper, "upper")], up_msgs
    assert low_msgs == [], f"{upper!r} and {lower!r} are different rooms, but {lower!r} got: {low_msgs}"


# ---- not_member ----------------------------------------------------------------------

@pytest.mark.parametrize("command", ["publish", "history", "presence", "leave"])
def test_not_member_of_a_room_others_are_in(server, command):
    room = uniq("nm")

    async def scenario():
        async with clients(server, uniq("in"), uniq("out")) as (inside, out):
            await inside.join(room)
            await inside.publish(room, "inside")
            obj = {"type": command, "room": room, "ref": command}
            if command == "publish":
                obj["data"] = "intruder"
            never = await out.request(obj)
            other = await out.request({**obj, "room": uniq("nobody-here"), "ref": "n2"})
            # Joined then left: not a member any more.
            await out.join(room)
            await out.leave(room)
            after_leave = await out.request({**obj, "ref": "n3"})
            await settle([inside, out])
            return never, other, after_leave, messages(inside)

    never, other, after_leave, inside_msgs = run(scenario())
    for r, ref in ((never, command), (other, "n2"), (after_leave, "n3")):
        assert r["type"] == "error" and r["code"] == "not_member" and r["ref"] == ref, \
            f"{command} of a room not joined should be not_member, got {r!r}"
    assert [m["data"] for m in inside_msgs] == ["inside"], f"a refused publish was delivered: {inside_msgs}"


def test_second_join_of_a_pending_room_is_answered_after_the_first(server):
    room = uniq("rj")

    async def scenario():
        async with clients(server, uniq("u")) as (c,):
            for ref in ("first", "second", "third"):
                await c.send({"type": "join", "room": room, "ref": ref})
            return await c.recv_n(lambda m: m["type"] == "joined", 3, "joined replies")

    replies = run(scenario())
    assert [m["ref"] for m in replies] == ["first", "second", "third"], \
        f"joined replies in the order of the joins: {replies}"
    assert isinstance(replies[0]["offset"], str), f"the first join is the real one: {replies[0]}"
    for m in replies[1:]:
        assert m["offset"] is None and m["recovered"] is True and m["missed"] == 0, \
            f"a join of a room already joined changes nothing: {m}"


# ---- --max-rooms ---------------------------------------------------------------------------

def test_too_many_rooms(engine, wsfan):
    srv = engine.node(wsfan, "--workers", "2", "--max-rooms", "2")
    a, b, c = uniq("ra"), uniq("rb"), uniq("rc")
    xuser = uniq("tm")

    async def scenario():
        async with clients(srv, xuser, uniq("watch")) as (x, w):
            await w.join(c)
            await x.join(a)
            await x.join(b)
            third = await x.request({"type": "join", "room": c, "ref": "third"})
            third_since = await x.request({"type": "join", "room": c, "since": "0-0", "ref": "third-since"})
            again = await x.request({"type": "join", "room": a, "ref": "again"})
            pub = await x.request({"type": "publish", "room": c, "data": "no", "ref": "pub"})
            await x.leave(a)
            now = await x.request({"type": "join", "room": c, "ref": "now"})
            await settle([x, w])
            return third, third_since, again, pub, now, w.inbox

    third, third_since, again, pub, now, w_inbox = run(scenario())
    assert third["type"] == "error" and third["code"] == "too_many_rooms" and third["ref"] == "third", third
    assert third_since.get("code") == "too_many_rooms", third_since
    assert again["type"] == "joined", f"joining a room already joined is not a new room: {again!r}"
    assert pub.get("code") == "not_member", f"the refused join must not have joined: {pub!r}"
    assert now["type"] == "joined" and now["room"] == c, f"after a leave there is room for one more: {now!r}"
    joins = [m for m in w_inbox if m["type"] == "presence_join" and m["user"] == xuser]
    assert len(joins) == 1, f"only the join that succeeded may announce {xuser!r} in {c!r}: {w_inbox}"
    assert not [m for m in w_inbox if m["type"] == "message"], f"the refused publish was delivered: {w_inbox}"


# ---- ephemeral and echo ---------------------------------------------------------------------

def test_ephemeral_has_no_offset_and_skips_history(server):
    room = uniq("eph")
    alice = uniq("alice")

    async def scenario():
        async with clients(server, alice, None) as (a, b):
            await a.join(room)
            await b.join(room)
            first = await a.publish(room, "persisted-1")
            eph = await a.publish(room, {"typing": True}, ephemeral=True)
            explicit = await a.publish(room, "persisted-2", ephemeral=False)
            got = await b.recv_n(lambda m: m["type"] == "message", 3, "messages")
            own = await a.recv_n(lambda m: m["type"] == "message", 3, "own messages")
            h = await b.history(room)
            return first, eph, explicit, got, own, h

    first, eph, explicit, got, own, h = run(scenario())
    assert_keys(eph, ["type", "ref", "offset"], "ack of an ephemeral publish")
    assert eph["offset"] is None, f"an ephemeral publish acks with offset null: {eph!r}"
    assert isinstance(explicit["offset"], str), f"ephemeral:false is persisted: {explicit!r}"
    assert [m["data"] for m in got] == ["persisted-1", {"typing": True}, "persisted-2"], got
    assert_keys(got[1], ["type", "room", "from", "data", "ts"], "ephemeral message event (no offset)")
    assert got[1]["from"] == alice and got[1]["room"] == room, got[1]
    assert own[1] == got[1], f"the publisher gets its ephemeral message too (echo): {own}"
    assert [m["offset"] for m in got[::2]] == [first["offset"], explicit["offset"]], got
    assert [m["data"] for m in h["messages"]] == ["persisted-1", "persisted-2"], \
        f"history must not hold the ephemeral message: {h['messages']}"


def test_ephemeral_is_not_replayed_on_join_since(server):
    room = uniq("eph-since")

    async def scenario():
        async with clients(server, uniq("p"), uniq("late")) as (p, late):
            await p.join(room)
            base = await p.publish(room, "base")
            await p.publish(room, "eph", ephemeral=True)
            await p.publish(room, "kept")
            j = await late.join(room, since=base["offset"])
            await settle([p, late])
            return j, [m["data"] for m in messages(late)]

    j, replay = run(scenario())
    assert j["recovered"] is True and j["missed"] == 1, f"only the persisted message was missed: {j!r}"
    assert replay == ["kept"], f"the replay must not include the ephemeral message: {replay}"


def test_echo_false_leaves_out_only_the_publishing_connection(server):
    room = uniq("echo")
    alice = uniq("alice")

    async def scenario():
        async with clients(server, alice, alice, uniq("bob"), None, labels=["a1", "a2", "bob", "anon"]) as cs:
            a1 = cs[0]
            for c in cs:
                await c.join(room)
            ack = await a1.publish(room, "quiet", echo=False)
            eph = await a1.publish(room, "quiet-eph", echo=False, ephemeral=True)
            loud = await a1.publish(room, "loud", echo=True)
            await cs[3].publish(room, "other")
            await settle(cs)
            h = await cs[2].history(room)
            return ack, eph, loud, {c.label: [m["data"] for m in messages(c)] for c in cs}, h

    ack, eph, loud, got, h = run(scenario())
    assert isinstance(ack["offset"], str) and eph["offset"] is None, (ack, eph)
    assert got["a1"] == ["loud", "other"], f"echo:false must leave out the publisher (only): {got['a1']}"
    for other in ("a2", "bob", "anon"):
        assert got[other] == ["quiet", "quiet-eph", "loud", "other"], \
            f"{other} (another connection) should get every message, echo:false ones included: {got[other]}"
    assert [m["data"] for m in h["messages"]] == ["quiet", "loud", "other"], \
        f"echo:false does not change history: {h['messages']}"


# ---- slow reader -----------------------------------------------------------------------------

def test_slow_reader_is_closed_with_1013_and_others_get_everything(engine, wsfan):
    # 512k: room for the fast member's reader to be scheduled out for a
    # while on a busy machine (64k was only 8 messages) without it being
    # taken for a slow reader itself. Publishes faster than --rate-limit's
    # default on purpose; the limit has its own tests (test_limits.py).
    srv = engine.node(wsfan, "--workers", "2", "--send-queue-limit", "512k", "--rate-limit", "0")
    room = uniq("slow")
    payload = "s" * 8000
    max_messages = 1500  # 12 MB at most: well past 512k plus any socket buffers

    slow = RawClient.open(srv, f"/ws?user={uniq('slowpoke')}", rcvbuf=4096)
    slow.send_json({"type": "join", "room": room, "ref": "j"})
    for _ in range(10):
        m = slow.recv_json()
        if m["type"] == "joined":
            break
    assert m["type"] == "joined", m
    slow_user = slow.welcome["user"]
    # From here on the slow client reads nothing.

    async def scenario():
        async with clients(srv, uniq("pub"), uniq("fast")) as (pub, fast):
            await pub.join(room)
            await fast.join(room)
            # websockets keeps reading the fast member's socket in the background
            # (max_queue=None), so it is never a slow reader itself.
            sent = 0
            for n in range(max_messages):
                await pub.publish(room, {"n": n, "pad": payload}, echo=False)
                sent = n + 1
                if n % 10 == 9:
                    await fast.drain(0.001)
                    if events(fast, "presence_leave", user=slow_user):
                        break
            got = await fast.recv_n(lambda m: m["type"] == "message", sent, "messages", timeout=20)
            await settle([fast])
            return sent, [m["data"]["n"] for m in got], events(fast, "presence_leave", user=slow_user), \
                messages(fast)

    sent, received, slow_left, extra = run(scenario(), timeout=90)
    assert len(slow_left) == 1, (f"the slow reader was not closed (no presence_leave) after {sent} messages of 8 kB "
                       f"with --send-queue-limit 512k")
    assert received == list(range(sent)), (f"the fast member should get all {sent} messages in order; got "
                                           f"{len(received)}, first gap at "
                                           f"{next((i for i, n in enumerate(received) if n != i), None)}")
    assert not extra, f"the fast member got more messages than were published: {extra[:3]}"
    # Now read what the slow client was sent: data frames, then close 1013.
    try:
        code, reason, before = slow.read_until_close(timeout=10, max_frames=max_messages + 10)
    except PeerClosed:
        raise AssertionError("the slow reader's TCP was closed without a close frame; expected close 1013")
    finally:
        slow.close()
    assert code == 1013, f"the slow reader should be closed with 1013, got {code} {reason!r}"
    n_data = len([f for f in before if f.opcode == 1])
    assert n_data < sent, f"the slow reader got all {sent} messages, so it was not slow? ({n_data})"
