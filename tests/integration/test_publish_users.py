"""POST /api/publish to a list of users (docs/protocol.md section 7):
{"users":[..],"data":..} sends one `direct` event to every connection of
each distinct user named, in one call, on one node or across nodes, and is
answered {"offset":null}. With Redis each distinct user's channel gets one
PUBLISH (a tenant's under <namespace>:<tenant>), and a Redis that stops
answering midway makes the call 503. Every name is checked (the message
says which), as are an empty list, more than 1,000 users, a second target
and --max-data."""

import asyncio
import json
import time

import pytest

from conftest import SLOW, await_ready, engine_independent, numsub, redis_node, run, wait_until
from protocol_client import connect, settle, uniq
from test_api import assert_error, call


@pytest.fixture(scope="module")
def nodes(engine, wsfan_module):
    a, b = engine.nodes(wsfan_module, 2, "--workers", "2", "--max-message", "64k", "--max-data", "1k")
    yield a, b
    assert a.alive() and b.alive(), f"a node died during the module; log:\n{a.log_tail()}\n{b.log_tail()}"


def user_channel(srv, user, tenant=None):
    return f"{srv.namespace}:{tenant + ':' if tenant else ''}user:{{{user}}}"


def wait_subscribed(engine, srv, counts):
    """With Redis, until each user's channel has as many subscribed nodes as
    counts says: a direct event published earlier would reach nobody."""
    if not engine.is_redis:
        return
    r = engine.redis.client()
    chans = {user_channel(srv, u): n for u, n in counts.items()}
    wait_until(lambda: (numsub(r, *chans) == chans, numsub(r, *chans)), "the users' channels are subscribed")


def publish_users(srv, body):
    status, reply, _ = call(srv, "POST", "/api/publish", body)
    assert status == 200, f"publish {body!r}: expected 200, got {status} {reply!r}"
    return reply


def directs(c, data):
    return [m for m in c.inbox if m["type"] == "direct" and m.get("data") == data]


def test_every_connection_of_each_user_gets_one_direct_event(engine, nodes):
    a, b = nodes
    bob, carol, dave = uniq("bob"), uniq("carol"), uniq("dave")
    data = {"n": uniq("many")}

    async def scenario():
        bob_a, dave_a, anon = await connect(a, bob), await connect(a, dave), await connect(a)
        bob_b, carol_b = await connect(b, bob, label="bob@b"), await connect(b, carol)
        everyone = [bob_a, bob_b, carol_b, dave_a, anon]
        try:
            wait_subscribed(engine, a, {bob: 1 if a is b else 2, carol: 1, dave: 1})
            reply = publish_users(a, {"users": [bob, carol, bob, uniq("nobody")], "data": data})
            got = [await c.recv_until("direct", data=data) for c in (bob_a, bob_b, carol_b)]
            await settle(everyone)
            return reply, got, [len(directs(c, data)) for c in everyone]
        finally:
            await asyncio.gather(*(c.close() for c in everyone), return_exceptions=True)

    reply, got, extra = run(scenario(), 30)
    assert reply == {"offset": None}, f"a publish to users is answered with a null offset: {reply!r}"
    for ev in got:
        assert set(ev) == {"type", "from", "data", "ts"} and ev["from"] is None, ev
    assert extra == [0, 0, 0, 0, 0], \
        f"one event per connection of a named user (bob named twice), none to others: extra {extra}"


def test_a_tenants_users_are_not_the_users_without_one(engine, nodes):
    a, _ = nodes
    alice = uniq("alice")

    async def scenario():
        c = await connect(a, alice)
        try:
            wait_subscribed(engine, a, {alice: 1})
            publish_users(a, {"users": [alice], "tenant": "acme", "data": "acme's alice"})
            publish_users(a, {"users": [alice], "data": "this alice"})
            await c.recv_until("direct", data="this alice")
            await settle([c])
            return c.take(lambda m: m["type"] == "direct")
        finally:
            await c.close()

    assert run(scenario()) == [], "a user without a tenant got a direct event for a tenant's user of that name"


@pytest.mark.parametrize("engine", ["redis"], indirect=True)
def test_each_distinct_users_channel_is_published_once(engine, nodes):
    a, _ = nodes
    users = [uniq("ch") for _ in range(3)]
    ps = engine.redis.client().pubsub()
    want = [user_channel(a, u) for u in users] + [user_channel(a, u, "acme") for u in users]
    ps.subscribe(*want)
    try:
        for _ in range(len(want)):
            assert ps.get_message(timeout=2)["type"] == "subscribe"
        publish_users(a, {"users": [users[0], users[1], users[0], users[2], users[1]], "data": "once"})
        publish_users(a, {"users": users + users, "tenant": "acme", "data": "acme once"})
        seen = []
        deadline = time.monotonic() + 1.0 * SLOW
        while time.monotonic() < deadline:
            m = ps.get_message(timeout=0.1)
            if m and m["type"] == "message":
                seen.append((m["channel"], json.loads(m["data"])["data"]))
    finally:
        ps.close()
    assert sorted(seen) == sorted([(ch, "once") for ch in want[:3]] + [(ch, "acme once") for ch in want[3:]]), \
        f"one PUBLISH per distinct user, on the tenant's channels for a tenant: {seen}"


BAD_USERS = [
    ({"users": [], "data": 1}, "bad_command", "1 to 1000 users, not 0"),
    ({"users": [f"u{i}" for i in range(1001)], "data": 1}, "bad_command", "1 to 1000 users, not 1001"),
    ({"users": "bob", "data": 1}, "bad_command", "array"),
    ({"users": {"bob": 1}, "data": 1}, "bad_command", "array"),
    ({"users": ["bob", 5], "data": 1}, "user_invalid", "users[1]"),
    ({"users": ["bob", "carol", "no spaces"], "data": 1}, "user_invalid", "users[2]"),
    ({"users": ["x" * 129], "data": 1}, "user_invalid", "users[0]"),
    ({"users": ["bob"], "room": "r", "data": 1}, "bad_command", "exactly one of room, user, users or all"),
    ({"users": ["bob"], "user": "bob", "data": 1}, "bad_command", "exactly one of room, user, users or all"),
    ({"users": ["bob"], "all": True, "data": 1}, "bad_command", "exactly one of room, user, users or all"),
    ({"users": ["bob"]}, "bad_command", "data"),
]


@engine_independent
@pytest.mark.parametrize("body,code,says", BAD_USERS, ids=[f"{c}-{i}" for i, (_, c, _) in enumerate(BAD_USERS)])
def test_a_bad_list_of_users_is_400_saying_what(engine, nodes, body, code, says):
    resp = assert_error(nodes[0], "POST", "/api/publish", body, 400, code)
    message = json.loads(resp.body)["message"]
    assert says in message and "\n" not in message, f"{body!r}: the message should say {says!r}: {message!r}"


@engine_independent
def test_a_thousand_users_and_max_data(engine, nodes):
    a, _ = nodes
    assert publish_users(a, {"users": [f"k{i}" for i in range(1000)], "data": 1}) == {"offset": None}
    assert_error(a, "POST", "/api/publish", {"users": ["bob"], "data": "x" * 1100}, 413, "too_large")


def test_a_redis_that_stops_answering_midway_is_503(redis_server, wsfan, proxies):
    px = proxies(redis_server.port)
    node = redis_node(wsfan, px.url, "users-hole", "--redis-timeout", "1000", "--redis-backoff-min", "100",
                      "--redis-backoff-max", "300")
    px.black_hole()  # the PUBLISHes go out and are never answered
    started = time.monotonic()
    status, reply, resp = call(node, "POST", "/api/publish", {"users": [uniq("u") for _ in range(50)], "data": 1})
    took = time.monotonic() - started
    assert status == 503 and reply["error"] == "unavailable", (status, reply)
    assert resp.header("retry-after") == "1", resp.head
    assert "some users may have the message" in reply["message"], reply
    assert took < 4 * SLOW, f"the answer took {took:.1f} s"
    px.restore()
    run(await_ready(node, 8))
    assert publish_users(node, {"users": ["again"], "data": 2}) == {"offset": None}
