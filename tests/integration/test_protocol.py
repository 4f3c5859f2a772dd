"""The client commands, their replies and the events (PROTOCOL.md sections 2
and 3): the exact fields of every reply and event, ref echo (string and
integer, at most 64 bytes; anything else is bad_command and the command is not
run), and every error code where this server can produce it. Delivery rules,
names, history and presence have their own files."""

import pytest

from conftest import run
from protocol_client import (OFFSET_RE, ANY, assert_keys, assert_ts, clients, connect, offset_key, same_json,
                             settle, uniq)

NOREF = object()


@pytest.fixture(scope="module")
def server(wsfan_module):
    srv = wsfan_module("--workers", "2", "--allow-broadcast")
    yield srv
    assert srv.alive(), f"server died during the module; log:\n{srv.log_tail()}"


@pytest.fixture(scope="module")
def limited(wsfan_module):
    """No broadcast permission, two rooms per connection, no history."""
    srv = wsfan_module("--workers", "2", "--max-rooms", "2", "--history-length", "0")
    yield srv
    assert srv.alive(), f"server died during the module; log:\n{srv.log_tail()}"


async def alive(c):
    """A command error never closes the connection: it still answers ping."""
    r = await c.request({"type": "ping", "ref": "still-there"})
    assert r == {"type": "pong", "ref": "still-there"}, f"{c.label}: after an error, ping answered {r!r}"


# ---- every command: the reply's fields, exactly ------------------------------------

COMMANDS = ["join", "leave", "publish", "send", "broadcast", "history", "presence", "ping"]
REPLY = {"join": "joined", "leave": "left", "publish": "ack", "send": "ack", "broadcast": "ack",
         "history": "history", "presence": "presence", "ping": "pong"}
REFS = [NOREF, "req-1", 7, 0, -12, "", "ünï 🙂"]
REF_IDS = ["no-ref", "string", "int", "zero", "negative", "empty-string", "unicode-string"]


async def command_reply(server, command, ref):
    user = uniq("cmd")
    room = uniq("cmd-room")
    async with clients(server, user) as (c,):
        if command in ("leave", "publish", "history", "presence"):
            await c.join(room)
        hist = None
        if command == "history":
            await c.publish(room, {"n": 1})
            hist = await c.recv_until("message")
        obj = {"type": command}
        if command in ("join", "leave", "publish", "history", "presence"):
            obj["room"] = room
        if command in ("publish", "send", "broadcast"):
            obj["data"] = {"k": [1, "two"]}
        if command == "send":
            obj["user"] = user
        if ref is not NOREF:
            obj["ref"] = ref
        await c.send(obj)
        reply = await c.recv_match(lambda m: m["type"] in (REPLY[command], "error") and
                                   (ref is NOREF or "ref" in m), f"the reply to {obj!r}")
        return obj, reply, user, room, hist


@pytest.mark.parametrize("ref", REFS, ids=REF_IDS)
@pytest.mark.parametrize("command", COMMANDS)
def test_reply_fields_exactly(server, command, ref):
    obj, r, user, room, hist = run(command_reply(server, command, ref))
    what = f"reply to {obj!r}"
    assert r["type"] == REPLY[command], f"{what}: expected type {REPLY[command]!r}, got {r!r}"
    fields = {"joined": ["room", "offset", "recovered", "missed"], "left": ["room"], "ack": [],
              "history": ["room", "messages"], "presence": ["room", "users"], "pong": []}[r["type"]]
    if command == "publish":
        fields = ["offset"]
    keys = ["type", *fields] + ([] if ref is NOREF else ["ref"])
    assert_keys(r, keys, what)
    if ref is not NOREF:
        assert same_json(r["ref"], ref), f"{what}: ref should be echoed as {ref!r} (same JSON type), got {r['ref']!r}"
    if "room" in fields:
        assert r["room"] == room, f"{what}: room should be {room!r}, got {r['room']!r}"
    if command == "join":
        assert OFFSET_RE.fullmatch(r["offset"]), f"{what}: a room without history still has an offset, got {r['offset']!r}"
        assert r["recovered"] is False and r["missed"] == 0 and type(r["missed"]) is int, \
            f"{what}: a join without since has recovered false and missed 0, got {r!r}"
    if command == "publish":
        assert isinstance(r["offset"], str) and OFFSET_RE.fullmatch(r["offset"]), \
            f"{what}: a persisted publish acks with its offset string, got {r['offset']!r}"
    if command == "history":
        assert r["messages"] == [hist], f"{what}: history should hold the one message event {hist!r}: {r!r}"
    if command == "presence":
        assert r["users"] == [{"user": user, "connections": 1}], f"{what}: users should list {user!r} once: {r!r}"


# ---- ref: string or integer, at most 64 bytes -----------------------------------

GOOD_REFS = {
    "ascii-64": "r" * 64,
    "utf8-64-bytes": "é" * 32,
    "utf8-64-bytes-3byte-chars": "€" * 21 + "x",
    "quotes-64": '"' * 64,
    "backslashes-64": "\\" * 64,
    "control-64": "\x01" * 64,
    "newlines-64": "\n" * 64,
    "int-2^53-1": 2 ** 53 - 1,
    "int-2^63-1": 2 ** 63 - 1,
    "int-negative-big": -(2 ** 63),
}


@pytest.mark.parametrize("ref", list(GOOD_REFS.values()), ids=list(GOOD_REFS))
@pytest.mark.parametrize("command", ["ping", "join"])
def test_ref_at_the_limit_is_echoed(server, command, ref):
    async def scenario():
        async with clients(server, None) as (c,):
            obj = {"type": command, "ref": ref}
            if command == "join":
                obj["room"] = uniq("refroom")
            return obj, await c.request(obj)

    obj, r = run(scenario())
    assert r["type"] == REPLY[command], f"{obj!r} should be answered with {REPLY[command]}, got {r!r}"
    assert same_json(r["ref"], ref), f"ref {ref!r} should be echoed unchanged, got {r.get('ref')!r}"


BAD_REFS = {
    "ascii-65": "r" * 65,
    "utf8-66-bytes-33-chars": "é" * 33,
    "utf8-65-bytes-22-chars": "€" * 21 + "xy",
    "float": 1.5,
    "negative-float": -0.25,
    "object": {"id": 1},
    "empty-object": {},
    "array": [1],
    "true": True,
    "null": None,
}


@pytest.mark.parametrize("ref", list(BAD_REFS.values()), ids=list(BAD_REFS))
def test_bad_ref_is_bad_command_and_the_command_is_not_run(server, ref):
    room = uniq("badref")

    async def scenario():
        async with clients(server, uniq("badref-u"), None) as (c, watcher):
            await watcher.join(room)
            await c.send({"type": "join", "room": room, "ref": ref})
            err = await c.recv_until("error")
            await alive(c)
            # The join did not happen: publishing there is not_member, nobody saw a presence_join.
            nm = await c.request({"type": "publish", "room": room, "data": 1, "ref": "after"})
            await settle([c, watcher])
            return err, nm, watcher.inbox

    err, nm, watcher_inbox = run(scenario())
    assert err["code"] == "bad_command", f"ref {ref!r} should be refused with bad_command, got {err!r}"
    assert isinstance(err["message"], str) and err["message"], f"error needs a human message: {err!r}"
    assert nm.get("code") == "not_member", f"a join with ref {ref!r} was refused, yet it joined: publish got {nm!r}"
    assert not [m for m in watcher_inbox if m["type"] in ("presence_join", "message")], \
        f"the refused join had effects on the room: {watcher_inbox!r}"


# ---- errors: fields, ref echo, every code ------------------------------------------

@pytest.mark.parametrize("ref", REFS, ids=REF_IDS)
def test_error_fields_exactly_and_ref_echoed(server, ref):
    async def scenario():
        async with clients(server, None) as (c,):
            obj = {"type": "no-such-command"}
            if ref is not NOREF:
                obj["ref"] = ref
            await c.send(obj)
            r = await c.recv_until("error")
            await alive(c)
            return r

    r = run(scenario())
    assert_keys(r, ["type", "code", "message"] + ([] if ref is NOREF else ["ref"]), "error reply")
    assert r["code"] == "unknown_type", r
    assert isinstance(r["message"], str) and r["message"].strip(), f"message should be human text: {r!r}"
    if ref is not NOREF:
        assert same_json(r["ref"], ref), f"the error should echo ref {ref!r}, got {r['ref']!r}"


BAD_JSON = ["{", "not json", '{"type":"ping"', "{}x", "", " ", '{"type":"ping",}', "{'type':'ping'}", "nul"]


@pytest.mark.parametrize("text", BAD_JSON, ids=[repr(t) for t in BAD_JSON])
def test_bad_json(server, text):
    async def scenario():
        async with clients(server, None) as (c,):
            await c.send(text)
            r = await c.recv_until("error")
            await alive(c)
            return r

    r = run(scenario())
    assert r["code"] == "bad_json", f"text frame {text!r} should give bad_json, got {r!r}"
    assert "ref" not in r, f"nothing was parsed, so there is no ref to echo: {r!r}"


NOT_OBJECTS = ["[]", '[{"type":"ping"}]', "42", '"ping"', "null", "true"]


@pytest.mark.parametrize("text", NOT_OBJECTS)
def test_json_that_is_not_an_object_is_refused(server, text):
    # "Every command is a JSON object": valid JSON of another kind is not a command.
    async def scenario():
        async with clients(server, None) as (c,):
            await c.send(text)
            r = await c.recv_until("error")
            await alive(c)
            return r

    r = run(scenario())
    assert r["code"] in ("bad_json", "bad_command"), f"{text!r} is not a command object; got {r!r}"


BAD_COMMANDS = {
    "empty-object": {},
    "no-type": {"room": "x"},
    "type-int": {"type": 5},
    "type-null": {"type": None},
    "type-object": {"type": {"join": 1}},
    "join-no-room": {"type": "join"},
    "leave-no-room": {"type": "leave"},
    "publish-no-room": {"type": "publish", "data": 1},
    "history-no-room": {"type": "history"},
    "presence-no-room": {"type": "presence"},
    "send-no-user": {"type": "send", "data": 1},
    "send-no-data": {"type": "send", "user": "someone"},
    "broadcast-no-data": {"type": "broadcast"},
    "publish-no-data": {"type": "publish", "room": "@joined"},
    "publish-ephemeral-string": {"type": "publish", "room": "@joined", "data": 1, "ephemeral": "yes"},
    "publish-ephemeral-int": {"type": "publish", "room": "@joined", "data": 1, "ephemeral": 1},
    "publish-echo-string": {"type": "publish", "room": "@joined", "data": 1, "echo": "false"},
    "publish-echo-int": {"type": "publish", "room": "@joined", "data": 1, "echo": 0},
    "history-limit-0": {"type": "history", "room": "@joined", "limit": 0},
    "history-limit-1001": {"type": "history", "room": "@joined", "limit": 1001},
    "history-limit-negative": {"type": "history", "room": "@joined", "limit": -1},
    "history-limit-string": {"type": "history", "room": "@joined", "limit": "5"},
    "history-limit-float": {"type": "history", "room": "@joined", "limit": 2.5},
    "history-before-garbage": {"type": "history", "room": "@joined", "before": "yesterday"},
    "history-before-int": {"type": "history", "room": "@joined", "before": 17},
    "join-since-garbage": {"type": "join", "room": "@fresh", "since": "abc"},
    "join-since-int": {"type": "join", "room": "@fresh", "since": 1732312345678},
    "join-since-empty": {"type": "join", "room": "@fresh", "since": ""},
}


@pytest.mark.parametrize("name", list(BAD_COMMANDS))
def test_bad_command(server, name):
    ref = "s-ref" if list(BAD_COMMANDS).index(name) % 2 else 99  # both kinds of ref, alternately

    async def scenario():
        async with clients(server, uniq("bc")) as (c,):
            joined = uniq("bc-room")
            await c.join(joined)
            obj = {k: (joined if v == "@joined" else uniq("bc-fresh") if v == "@fresh" else v)
                   for k, v in BAD_COMMANDS[name].items()}
            obj["ref"] = ref
            r = await c.request(obj)
            await alive(c)
            after = None
            if obj.get("type") == "join" and "room" in obj:
                # The refused join must not have happened.
                after = await c.request({"type": "publish", "room": obj["room"], "data": 1, "ref": "after"})
            await settle([c])
            return obj, r, after, c.take(lambda m: m["type"] == "message")

    obj, r, after, msgs = run(scenario())
    assert r["type"] == "error" and r["code"] == "bad_command", f"{obj!r} should be bad_command, got {r!r}"
    assert same_json(r.get("ref"), ref), f"the error should echo ref {ref!r}: {r!r}"
    if after is not None:
        assert after.get("code") == "not_member", f"{obj!r} was refused but the room was joined: {after!r}"
    assert not msgs, f"a refused command published something: {msgs!r}"


WRONG_TYPE_NAMES = {
    "join-room-int": {"type": "join", "room": 5},
    "join-room-null": {"type": "join", "room": None},
    "publish-room-array": {"type": "publish", "room": ["a"], "data": 1},
    "send-user-int": {"type": "send", "user": 12, "data": 1},
}


@pytest.mark.parametrize("name", list(WRONG_TYPE_NAMES))
def test_name_of_the_wrong_json_type_is_refused(server, name):
    # Not a string at all: a malformed command or an invalid name; either way refused.
    obj = WRONG_TYPE_NAMES[name]

    async def scenario():
        async with clients(server, None) as (c,):
            r = await c.request({**obj, "ref": "wt"})
            await alive(c)
            return r

    r = run(scenario())
    field = "user" if "user" in obj else "room"
    assert r["type"] == "error" and r["code"] in ("bad_command", f"{field}_invalid"), \
        f"{obj!r} should be refused with bad_command or {field}_invalid, got {r!r}"
    assert r["ref"] == "wt", r


@pytest.mark.parametrize("type_", ["subscribe", "JOIN", "Ping", "", "pong", "message", "joined", "ping "])
def test_unknown_type(server, type_):
    async def scenario():
        async with clients(server, None) as (c,):
            r = await c.request({"type": type_, "ref": 3})
            await alive(c)
            return r

    r = run(scenario())
    assert r == {"type": "error", "ref": 3, "code": "unknown_type", "message": r.get("message")} and \
        isinstance(r.get("message"), str), f"type {type_!r} should give unknown_type with ref 3, got {r!r}"


ROOM_COMMANDS = {
    "join": {"type": "join"},
    "leave": {"type": "leave"},
    "publish": {"type": "publish", "data": 1},
    "history": {"type": "history"},
    "presence": {"type": "presence"},
}


@pytest.mark.parametrize("command", list(ROOM_COMMANDS))
def test_room_invalid_for_every_room_command(server, command):
    async def scenario():
        async with clients(server, None) as (c,):
            r = await c.request({**ROOM_COMMANDS[command], "room": "a b", "ref": "ri"})
            await alive(c)
            return r

    r = run(scenario())
    assert r["type"] == "error" and r["code"] == "room_invalid" and r["ref"] == "ri", \
        f"{command} of room 'a b' should be room_invalid with ref 'ri', got {r!r}"


def test_user_invalid_for_send(server):
    async def scenario():
        async with clients(server, None) as (c,):
            r = await c.request({"type": "send", "user": "a b", "data": 1, "ref": 8})
            await alive(c)
            return r

    r = run(scenario())
    assert r["type"] == "error" and r["code"] == "user_invalid" and r["ref"] == 8, r


@pytest.mark.parametrize("command", ["leave", "publish", "history", "presence"])
def test_not_member(server, command):
    async def scenario():
        async with clients(server, uniq("nm")) as (c,):
            r = await c.request({**ROOM_COMMANDS[command], "room": uniq("nm-room"), "ref": "nm"})
            await alive(c)
            return r

    r = run(scenario())
    assert r["type"] == "error" and r["code"] == "not_member" and r["ref"] == "nm", \
        f"{command} of a room not joined should be not_member, got {r!r}"


def test_forbidden_broadcast_without_permission(limited):
    async def scenario():
        async with clients(limited, uniq("fb"), None) as (c, other):
            r = await c.request({"type": "broadcast", "data": "x", "ref": "fb"})
            await alive(c)
            await settle([c, other])
            return r, c.inbox + other.inbox

    r, seen = run(scenario())
    assert r["type"] == "error" and r["code"] == "forbidden" and r["ref"] == "fb", r
    assert not [m for m in seen if m["type"] == "broadcast"], f"a forbidden broadcast was delivered: {seen!r}"


def test_too_many_rooms(limited):
    async def scenario():
        async with clients(limited, uniq("tmr")) as (c,):
            await c.join(uniq("tmr-a"))
            await c.join(uniq("tmr-b"))
            r = await c.request({"type": "join", "room": uniq("tmr-c"), "ref": "third"})
            await alive(c)
            return r

    r = run(scenario())
    assert r["type"] == "error" and r["code"] == "too_many_rooms" and r["ref"] == "third", \
        f"a third join with --max-rooms 2 should be too_many_rooms, got {r!r}"


def test_history_unavailable(limited):
    async def scenario():
        async with clients(limited, uniq("hu")) as (c,):
            room = uniq("hu-room")
            await c.join(room)
            await c.publish(room, 1)
            r = await c.request({"type": "history", "room": room, "ref": "h"})
            await alive(c)
            return r

    r = run(scenario())
    assert r["type"] == "error" and r["code"] == "history_unavailable" and r["ref"] == "h", \
        f"history with --history-length 0 should be history_unavailable, got {r!r}"


def test_many_command_errors_never_close_the_connection(server):
    bad = [b for b in BAD_COMMANDS.values()] + [{"type": "zzz"}, {"type": "send", "user": "a*", "data": 1},
                                                 {"type": "publish", "room": "not-joined-here", "data": 1}]

    async def scenario():
        async with clients(server, uniq("many"), uniq("many-peer")) as (c, peer):
            room = uniq("many-room")
            await c.join(room)
            await peer.join(room)
            for text in BAD_JSON + NOT_OBJECTS:
                await c.send(text)
            for i, b in enumerate(bad):
                await c.send({**{k: (room if v == "@joined" else v) for k, v in b.items()}, "ref": i})
            await alive(c)
            ack = await c.publish(room, "still works")
            got = await peer.recv_until("message", data="still works")
            return ack, got, c.ws.open

    ack, got, still_open = run(scenario())
    assert still_open and got["offset"] == ack["offset"], (ack, got)


# ---- events: the fields, exactly ---------------------------------------------------

def test_message_event_fields_exactly(server):
    room = uniq("ev-room")
    alice, bob = uniq("alice"), uniq("bob")

    async def scenario():
        async with clients(server, alice, bob) as (a, b):
            await a.join(room)
            await b.join(room)
            ack = await a.publish(room, {"text": "hi"})
            return ack, await b.recv_until("message"), await a.recv_until("message")

    ack, m, own = run(scenario())
    assert_keys(m, ["type", "room", "offset", "from", "data", "ts"], "message event")
    assert m["room"] == room and m["from"] == alice and m["data"] == {"text": "hi"}, m
    assert m["offset"] == ack["offset"], f"the event's offset {m['offset']!r} should be the ack's {ack['offset']!r}"
    assert_ts(m["ts"], "message event")
    assert own == m, f"the publisher (echo by default) should get the same event: {own!r} vs {m!r}"


DATA = {
    "object": {"a": 1, "b": [True, False, None], "c": {"d": "e"}},
    "empty-object": {},
    "array": [1, "2", [3], {"4": 5}],
    "empty-array": [],
    "string": "hello",
    "empty-string": "",
    "unicode": "ünïcødé ✓ 🙂 \u2028",
    "escapes": "quote\" backslash\\ newline\n tab\t ctl\u001f",
    "nul-escape": "a\u0000b",
    "int": 42,
    "negative": -7,
    "zero": 0,
    "big-int": 2 ** 62,
    "float": 0.5,
    "true": True,
    "false": False,
    "null": None,
    "deep": {"l1": {"l2": {"l3": {"l4": [[[["deep"]]]]}}}},
    "long-string": "x" * 20000,
}


@pytest.mark.parametrize("data", list(DATA.values()), ids=list(DATA))
def test_data_is_any_json_delivered_unchanged(server, data):
    room = uniq("data-room")

    async def scenario():
        async with clients(server, uniq("dp"), None) as (p, member):
            await p.join(room)
            await member.join(room)
            await p.ok({"type": "publish", "room": room, "data": data}, "ack", timeout=2)
            m = await member.recv_until("message")
            h = await p.history(room)
            return m, h

    m, h = run(scenario())
    assert "data" in m and same_json(m["data"], data), f"data {data!r} arrived as {m.get('data')!r}"
    assert len(h["messages"]) == 1 and same_json(h["messages"][0]["data"], data), \
        f"history should keep data {data!r}: {h!r}"


def test_anonymous_publisher_has_null_from(server):
    room = uniq("anon-room")

    async def scenario():
        async with clients(server, None, uniq("anon-member")) as (anon, b):
            await anon.join(room)
            await b.join(room)
            await anon.publish(room, "from nobody")
            return await b.recv_until("message")

    m = run(scenario())
    assert "from" in m and m["from"] is None, f"an anonymous publisher's message has from null: {m!r}"


def test_direct_event_fields_exactly(server):
    alice, bob = uniq("alice"), uniq("bob")

    async def scenario():
        async with clients(server, alice, bob, None) as (a, b, anon):
            ack = await a.ok({"type": "send", "user": bob, "data": {"x": 1}}, "ack")
            m = await b.recv_until("direct")
            await anon.ok({"type": "send", "user": bob, "data": "anon"}, "ack")
            m2 = await b.recv_until("direct", data="anon")
            return ack, m, m2

    ack, m, m2 = run(scenario())
    assert "offset" not in ack, f"an ack for send has no offset: {ack!r}"
    assert_keys(m, ["type", "from", "data", "ts"], "direct event")
    assert m["from"] == alice and m["data"] == {"x": 1}, m
    assert_ts(m["ts"], "direct event")
    assert "from" in m2 and m2["from"] is None, f"a direct message from an anonymous connection has from null: {m2!r}"


def test_broadcast_event_fields_exactly(server):
    alice = uniq("alice")

    async def scenario():
        async with clients(server, alice, None) as (a, anon):
            ack = await a.ok({"type": "broadcast", "data": [1, 2]}, "ack")
            return ack, await anon.recv_until("broadcast", data=[1, 2])

    ack, m = run(scenario())
    assert "offset" not in ack, f"an ack for broadcast has no offset: {ack!r}"
    assert_keys(m, ["type", "from", "data", "ts"], "broadcast event")
    assert m["from"] == alice, m
    assert_ts(m["ts"], "broadcast event")


def test_presence_event_fields_exactly(server):
    room = uniq("pe-room")
    alice, bob = uniq("alice"), uniq("bob")

    async def scenario():
        async with clients(server, alice) as (a,):
            await a.join(room)
            b = await connect(server, bob)
            await b.join(room)
            j = await a.recv_until("presence_join", user=bob)
            await b.leave(room)
            lv = await a.recv_until("presence_leave", user=bob)
            await b.close()
            return j, lv

    j, lv = run(scenario())
    assert j == {"type": "presence_join", "room": room, "user": bob}, j
    assert lv == {"type": "presence_leave", "room": room, "user": bob}, lv


def test_offsets_increase_in_publish_order(server):
    room = uniq("off-room")

    async def scenario():
        async with clients(server, uniq("op"), None) as (p, member):
            await p.join(room)
            await member.join(room)
            acks = [await p.publish(room, i) for i in range(30)]
            msgs = await member.recv_n(lambda m: m["type"] == "message", 30, "messages")
            return acks, msgs

    acks, msgs = run(scenario())
    offsets = [a["offset"] for a in acks]
    keys = [offset_key(o) for o in offsets]
    assert keys == sorted(keys) and len(set(keys)) == 30, f"ack offsets should strictly increase: {offsets}"
    assert [m["offset"] for m in msgs] == offsets, "events should carry the acks' offsets, in publish order"
    assert [m["data"] for m in msgs] == list(range(30)), "events should arrive in publish order"


def test_joined_offset_is_the_latest_and_nothing_is_replayed_without_since(server):
    room = uniq("latest-room")

    async def scenario():
        async with clients(server, uniq("lp"), uniq("late")) as (p, late):
            await p.join(room)
            acks = [await p.publish(room, i) for i in range(3)]
            j = await late.join(room)
            await settle([p, late])
            return acks, j, late.inbox

    acks, j, inbox = run(scenario())
    assert j["offset"] == acks[-1]["offset"], f"joined offset should be the latest {acks[-1]['offset']!r}: {j!r}"
    assert j["recovered"] is False and j["missed"] == 0, f"no since: recovered false, missed 0: {j!r}"
    assert not [m for m in inbox if m["type"] == "message"], f"join without since replays nothing: {inbox!r}"


def test_join_of_a_room_already_joined_changes_nothing(server):
    room = uniq("again-room")
    alice = uniq("alice")

    async def scenario():
        async with clients(server, alice, uniq("watch")) as (a, w):
            await w.join(room)
            await a.join(room)
            await w.recv_until("presence_join", user=alice)
            again = await a.request({"type": "join", "room": room, "ref": "again"})
            p = await a.presence(room)
            await a.publish(room, "once")
            await settle([a, w])
            return again, p, a.inbox, w.inbox

    again, p, a_inbox, w_inbox = run(scenario())
    assert again == {"type": "joined", "ref": "again", "room": room, "offset": None, "recovered": True,
                     "missed": 0}, f"joining again should answer joined offset null recovered true missed 0: {again!r}"
    assert {"user": alice, "connections": 1} in p["users"], f"a second join must not count twice: {p!r}"
    assert len([m for m in a_inbox if m["type"] == "message"]) == 1, f"one message, once: {a_inbox!r}"
    assert len([m for m in w_inbox if m["type"] == "presence_join" and m["user"] == alice]) == 0, \
        f"a second join must not announce the user again: {w_inbox!r}"


def test_after_leave_no_more_messages_and_not_member(server):
    room = uniq("left-room")

    async def scenario():
        async with clients(server, uniq("lv"), uniq("stay")) as (c, stay):
            await c.join(room)
            await stay.join(room)
            r = await c.leave(room)
            await stay.publish(room, "after")
            nm = await c.request({"type": "publish", "room": room, "data": 1, "ref": "x"})
            await settle([c, stay])
            return r, nm, c.inbox

    r, nm, inbox = run(scenario())
    assert r["room"] == room, r
    assert nm.get("code") == "not_member", f"publish after leave should be not_member: {nm!r}"
    assert not [m for m in inbox if m["type"] == "message"], f"a message reached a connection that left: {inbox!r}"
