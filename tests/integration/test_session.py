"""The session right after the upgrade (PROTOCOL.md sections 1 and 3): the
welcome frame, ping/pong with ref, and command errors that keep the
connection open."""

import re

import pytest

from conftest import OP_TEXT, RawClient, cmd, frame, json_client, run


@pytest.fixture(scope="module")
def server(wsfan_module):
    srv = wsfan_module()
    yield srv
    assert srv.alive(), f"server died during the module; log:\n{srv.log_tail()}"


@pytest.fixture(autouse=True)
def _server_survives(request):
    yield
    if "server" in request.fixturenames:
        srv = request.getfixturevalue("server")
        assert srv.alive(), f"server died during this test; log:\n{srv.log_tail()}"


# ---- welcome ----------------------------------------------------------------

def test_first_frame_is_text_welcome_with_session_user_node_heartbeat(server):
    c = RawClient(server.port)
    assert c.upgrade("/ws?user=alice").status == 101
    f = c.recv_frame()
    assert f.opcode == OP_TEXT and f.fin, f"the first frame should be one final text frame, got {f!r}"
    w = f.json()
    assert w["type"] == "welcome", w
    assert re.fullmatch(r"\d+\.\d+", w["session"] or ""), f"session should be '<worker>.<seq>': {w!r}"
    assert w["user"] == "alice", f"?user=alice should give user 'alice': {w!r}"
    assert isinstance(w["node"], str) and w["node"], f"node should be a non-empty string: {w!r}"
    assert type(w["heartbeat"]) is int and w["heartbeat"] == 25, f"default heartbeat is 25 (an int): {w!r}"


def test_anonymous_welcome_has_null_user(server):
    c = RawClient.open(server, "/ws")
    assert "user" in c.welcome and c.welcome["user"] is None, f"without ?user the user is null: {c.welcome!r}"


def test_sessions_are_unique_and_node_is_shared(server):
    a = RawClient.open(server, "/ws?user=alice")
    b = RawClient.open(server, "/ws?user=alice")
    assert a.welcome["session"] != b.welcome["session"], "two connections got the same session id"
    assert a.welcome["node"] == b.welcome["node"], "one process should report one node id"


def test_subprotocol_client_gets_welcome(server):
    async def scenario():
        async with json_client(server, "/ws?user=bob", subprotocols=["wsfan.v1"]) as c:
            return c.welcome

    assert run(scenario())["user"] == "bob"


# ---- ping ----------------------------------------------------------------

@pytest.mark.parametrize("ref", [1, 0, -7, 9007199254740991, "abc", "", "ünïcødé"],
                         ids=["1", "0", "-7", "2^53-1", "abc", "empty", "unicode"])
def test_ping_echoes_ref(server, ref):
    async def scenario():
        async with json_client(server) as c:
            return await c.request({"type": "ping", "ref": ref})

    assert run(scenario()) == {"type": "pong", "ref": ref}


def test_ping_without_ref_gets_pong_without_ref(server):
    async def scenario():
        async with json_client(server) as c:
            return await c.request({"type": "ping"})

    r = run(scenario())
    assert r["type"] == "pong", r
    assert r.get("ref") is None, f"a ping without ref should get a pong without ref (or ref null): {r!r}"


def test_many_commands_in_one_tcp_send_are_answered_in_order(server):
    c = RawClient.open(server)
    c.send(b"".join(frame(OP_TEXT, cmd({"type": "ping", "ref": i})) for i in range(50)))
    got = [c.recv_json()["ref"] for _ in range(50)]
    assert got == list(range(50)), f"pongs out of order or missing: {got}"


# ---- command errors keep the connection open ---------------------------------------

def test_unknown_type_is_an_error_and_connection_stays_open(server):
    async def scenario():
        async with json_client(server) as c:
            err = await c.request({"type": "nope", "ref": "x"})
            pong = await c.request({"type": "ping", "ref": 2})
            return err, pong

    err, pong = run(scenario())
    assert err.get("type") == "error" and err.get("code") == "unknown_type", f"got {err!r}"
    assert err.get("ref") == "x", f"the error should echo ref 'x': {err!r}"
    assert isinstance(err.get("message"), str) and err["message"], f"error needs a message: {err!r}"
    assert pong == {"type": "pong", "ref": 2}, f"connection unusable after the error: {pong!r}"


@pytest.mark.parametrize("text", ['[1,2]', '"str"', '42', 'null', 'true', '{"type":', 'not json', '',
                                  '{"type":"ping"} trailing', '{"type":"ping","ref":1'],
                         ids=["array", "string", "number", "null", "true", "truncated", "garbage", "empty",
                              "trailing-garbage", "unterminated"])
def test_non_object_or_invalid_json_is_bad_json_and_connection_stays_open(server, text):
    async def scenario():
        async with json_client(server) as c:
            err = await c.request(text)
            pong = await c.request({"type": "ping", "ref": "after"})
            return err, pong

    err, pong = run(scenario())
    assert err.get("type") == "error" and err.get("code") == "bad_json", f"{text!r} gave {err!r}"
    assert isinstance(err.get("message"), str), f"error needs a message: {err!r}"
    assert pong == {"type": "pong", "ref": "after"}, f"connection unusable after {text!r}: {pong!r}"


@pytest.mark.parametrize("obj", [{}, {"type": 5}, {"type": None}, {"ref": 1}],
                         ids=["empty-object", "type-number", "type-null", "no-type"])
def test_object_without_string_type_is_an_error_and_connection_stays_open(server, obj):
    async def scenario():
        async with json_client(server) as c:
            err = await c.request(obj)
            pong = await c.request({"type": "ping", "ref": 3})
            return err, pong

    err, pong = run(scenario())
    assert err.get("type") == "error" and err.get("code") in ("bad_command", "unknown_type"), (
        f"{obj!r} gave {err!r}; expected an error with code bad_command (or unknown_type)")
    assert pong == {"type": "pong", "ref": 3}
