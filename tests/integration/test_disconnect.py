"""POST /api/disconnect (docs/protocol.md section 7): every connection of a
user, WebSocket and SSE, on every node, closes with 1008 "disconnected by
an operator", and nobody else's does; the reply counts the user's
connections on the node that answered. It is guarded like the rest of the
API (401 with a wrong key, 403 from a non-loopback Host without one, 404
on the public port with --admin-listen). With Redis it travels as a sealed
control envelope on the user's channel (section 6): one that any other
Redis client publishes, unsealed, badly sealed or copied from another
user's channel, closes nothing. Bad bodies are 400 with a one-line
message."""

import asyncio
import json
from types import SimpleNamespace

import pytest

from conftest import HOST, SLOW, assert_one_line_body, engine_independent, free_port, run
from protocol_client import connect, uniq
from test_api import KEY, assert_error, call
from test_publish_users import user_channel, wait_subscribed
from test_sse import stream

REASON = "disconnected by an operator"


@pytest.fixture(scope="module")
def nodes(engine, wsfan_module):
    a, b = engine.nodes(wsfan_module, 2, "--workers", "2")
    yield a, b
    assert a.alive() and b.alive(), f"a node died during the module; log:\n{a.log_tail()}\n{b.log_tail()}"


def disconnect(srv, body, **kw):
    status, reply, _ = call(srv, "POST", "/api/disconnect", body, **kw)
    assert status == 200, f"disconnect {body!r}: expected 200, got {status} {reply!r}"
    return reply


async def closed_with(c, timeout=5.0):
    """(code, reason) of the server's close of c's connection."""
    await asyncio.wait_for(c.ws.wait_closed(), timeout * SLOW)
    return c.ws.close_code, c.ws.close_reason


async def still_open(c):
    """A round trip through the bus after the disconnect: c was left alone."""
    await c.barrier()
    return c.ws.close_code is None


async def heard(r, c, channel):
    """A plain payload published on channel after those before it reaches c,
    which is therefore still open: the subscriber link keeps their order."""
    marker = uniq("marker")
    r.publish(channel, json.dumps({"data": marker}))
    await c.recv_until("direct", data=marker)
    return c.ws.close_code is None


def test_every_connection_of_the_user_closes_on_every_node(engine, nodes):
    a, b = nodes
    bob, carol = uniq("bob"), uniq("carol")

    async def scenario():
        bob_a1, bob_a2 = await connect(a, bob, label="bob@a1"), await connect(a, bob, label="bob@a2")
        bob_b, carol_a, anon = await connect(b, bob, label="bob@b"), await connect(a, carol), await connect(b)
        sse = stream(b, query=f"user={bob}")
        others = [carol_a, anon]
        try:
            assert sse.resp.status == 200, sse.resp
            wait_subscribed(engine, a, {bob: 1 if a is b else 2, carol: 1})
            reply = disconnect(a, {"user": bob})
            codes = [await closed_with(c) for c in (bob_a1, bob_a2, bob_b)]
            return reply, codes, sse.ended(), [await still_open(c) for c in others]
        finally:
            sse.close()
            await asyncio.gather(*(c.close() for c in [bob_a1, bob_a2, bob_b] + others), return_exceptions=True)

    reply, codes, ended, open_ = run(scenario(), 40)
    # This node's connections of bob: on memory all four (one process), on
    # Redis the two of node a.
    assert reply == {"local": 4 if a is b else 2}, reply
    assert codes == [(1008, REASON)] * 3, f"every WebSocket of bob closes with 1008: {codes}"
    assert ended, "bob's SSE stream ends too"
    assert open_ == [True, True], "carol and the anonymous connection stay connected"


def test_a_user_without_connections_is_no_error(engine, nodes):
    a, _ = nodes
    assert disconnect(a, {"user": uniq("nobody")}) == {"local": 0}


def test_the_tenant_comes_from_the_body_or_the_query(engine, nodes):
    """As for a publish: either place, and the two must agree."""
    a, _ = nodes
    assert disconnect(a, {"user": "bob", "tenant": "acme"}) == {"local": 0}
    status, reply, _ = call(a, "POST", "/api/disconnect?tenant=acme", {"user": "bob"})
    assert status == 200 and reply == {"local": 0}, (status, reply)
    assert_error(a, "POST", "/api/disconnect?tenant=acme", {"user": "bob", "tenant": "other"}, 400, "bad_command")


BAD_BODIES = [
    (b"{not json", 400, "bad_json"),
    (b"[1]", 400, "bad_json"),
    ({}, 400, "bad_command"),
    ({"user": 5}, 400, "user_invalid"),
    ({"user": "no spaces"}, 400, "user_invalid"),
    ({"user": ""}, 400, "user_invalid"),
    ({"user": "bob", "tenant": "a b"}, 400, "bad_command"),
]


@engine_independent
@pytest.mark.parametrize("body,status,code", BAD_BODIES)
def test_bad_bodies_are_400_with_one_line_reasons(engine, nodes, body, status, code):
    resp = assert_error(nodes[0], "POST", "/api/disconnect", body, status, code)
    assert_one_line_body(resp)


@engine_independent
def test_content_type_and_method(engine, nodes):
    srv = nodes[0]
    assert_error(srv, "POST", "/api/disconnect", {"user": "bob"}, 415, "unsupported_media_type",
                 content_type="text/plain")
    resp = assert_error(srv, "GET", "/api/disconnect", None, 405, "method_not_allowed")
    assert resp.header("allow") == "POST", resp.head


def test_guarded_like_the_rest_of_the_api(wsfan):
    keyed = wsfan(env={"WSFAN_API_KEY": KEY})
    for headers in ([], [("Authorization", "Bearer wrong-key-0123456789")]):
        resp = assert_error(keyed, "POST", "/api/disconnect", {"user": "bob"}, 401, "unauthorized", headers=headers)
        assert (resp.header("www-authenticate") or "").startswith("Bearer"), resp.head
    auth = [("Authorization", f"Bearer {KEY}")]
    assert disconnect(keyed, {"user": "bob"}, headers=auth) == {"local": 0}
    # Without a key: the loopback rule, Host included (DNS rebinding).
    open_ = wsfan()
    assert_error(open_, "POST", "/api/disconnect", {"user": "bob"}, 403, "forbidden",
                 headers=[("Host", "evil.example")])
    # With --admin-listen, only there.
    admin_port = free_port()
    split = wsfan("--admin-listen", f"{HOST}:{admin_port}")
    assert_error(split, "POST", "/api/disconnect", {"user": "bob"}, 404, "not_found")
    assert disconnect(SimpleNamespace(port=admin_port), {"user": "bob"}) == {"local": 0}


@pytest.mark.parametrize("engine", ["redis"], indirect=True)
def test_forged_control_envelopes_close_nothing(engine, nodes):
    """A PUBLISH by any Redis client: without a seal, with a seal of nothing,
    and a node's real sealed envelope copied from bob's channel to carol's.
    Each is dropped and counted; only bob's real one closes bob."""
    a, b = nodes
    bob, carol = uniq("bob"), uniq("carol")
    r = engine.redis.client()
    bob_ch, carol_ch = user_channel(a, bob), user_channel(a, carol)

    async def scenario():
        bob_b, carol_b = await connect(b, bob), await connect(b, carol)
        watch = r.pubsub()
        try:
            wait_subscribed(engine, a, {bob: 1, carol: 1})
            for forged in ({"v": 1, "control": "disconnect", "data": None},
                           {"v": 1, "control": "disconnect", "mac": "0" * 40, "data": None}):
                for ch in (bob_ch, carol_ch):
                    r.publish(ch, json.dumps(forged, separators=(",", ":")))
            forged_open = [await heard(r, bob_b, bob_ch), await heard(r, carol_b, carol_ch)]
            watch.subscribe(bob_ch)
            watch.get_message(timeout=5)  # the subscribe confirmation
            assert disconnect(a, {"user": bob}) == {"local": 0}
            sealed = None
            for _ in range(50):
                m = watch.get_message(timeout=0.1 * SLOW)
                if m and m["type"] == "message":
                    sealed = m["data"]
                    break
            assert sealed and '"control":"disconnect"' in sealed and '"mac":"' in sealed, sealed
            r.publish(carol_ch, sealed)
            bob_closed = await closed_with(bob_b)
            return forged_open, bob_closed, await heard(r, carol_b, carol_ch)
        finally:
            watch.close()
            await asyncio.gather(bob_b.close(), carol_b.close(), return_exceptions=True)

    forged_open, bob_closed, carol_open = run(scenario(), 40)
    assert forged_open == [True, True], "unsealed or badly sealed disconnects close nothing"
    assert bob_closed == (1008, REASON), bob_closed
    assert carol_open, "a sealed disconnect of bob copied to carol's channel does not close carol"
    assert "control envelope without a seal" in b.log(), "the unsealed one is dropped with its reason"
