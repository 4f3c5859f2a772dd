"""HTTP and the WebSocket opening handshake (PROTOCOL.md section 1): routing,
Sec-WebSocket-Accept, the wsfan.v1 subprotocol, refusals with their statuses,
the head size limit, the connection limit and the handshake timeout."""

import select
import socket
import time

import pytest

from conftest import (SLOW, PeerClosed, RawClient, assert_one_line_body, cmd, frame, http_get,
                      http_request, json_client, request_head, run, upgrade_headers, ws_accept, ws_key,
                      OP_TEXT)


@pytest.fixture(scope="module")
def server(wsfan_module):
    srv = wsfan_module()
    yield srv
    assert srv.alive(), f"server died during the module; log:\n{srv.log_tail()}"


@pytest.fixture(autouse=True)
def _server_survives(request):
    """A test that crashes the shared server fails itself, not the next one."""
    yield
    if "server" in request.fixturenames:
        srv = request.getfixturevalue("server")
        assert srv.alive(), f"server died during this test; log:\n{srv.log_tail()}"


# ---- plain HTTP ----------------------------------------------------------------

def test_healthz_answers_200(server):
    resp = http_get(server.port, "/healthz")
    assert resp.status == 200, f"GET /healthz answered {resp.status}: {resp.head!r}"


def test_unknown_path_answers_404(server):
    resp = http_get(server.port, "/no-such-path")
    assert resp.status == 404, f"GET /no-such-path answered {resp.status}: {resp.head!r}"


def test_upgrade_to_unknown_path_answers_404(server):
    raw = request_head("GET", "/not-ws", upgrade_headers())
    resp = http_request(server.port, raw)
    assert resp.status == 404, f"upgrade of /not-ws answered {resp.status}: {resp.head!r}"


def test_head_request_gets_headers_without_body(server):
    raw = request_head("HEAD", "/healthz", [("Connection", "close")])
    with socket.create_connection(("127.0.0.1", server.port), timeout=5 * SLOW) as s:
        s.sendall(raw)
        data = b""
        for _ in range(100):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    head, sep, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), f"HEAD /healthz: expected 200, got {data[:200]!r}"
    assert body == b"", f"a response to HEAD must not carry a body (RFC 9110 9.3.2), got {body!r} after {head!r}"


def test_pipelined_requests_are_answered_in_order(server):
    raw = (request_head("GET", "/healthz") + request_head("GET", "/no-such-path")
           + request_head("GET", "/healthz", [("Connection", "close")]))
    statuses = [r.status for r in http_request(server.port, raw, count=3)]
    assert statuses == [200, 404, 200], f"three pipelined requests answered {statuses}"


# ---- a successful upgrade ----------------------------------------------------------

def test_upgrade_answers_101_with_correct_accept(server):
    c = RawClient(server.port)
    key = ws_key()
    resp = c.upgrade("/ws", key=key)
    assert resp.status == 101, f"upgrade answered {resp.status}: {resp.head!r}"
    assert resp.header("sec-websocket-accept") == ws_accept(key), (
        f"Sec-WebSocket-Accept for key {key} should be {ws_accept(key)}: {resp.head!r}")
    assert (resp.header("upgrade") or "").lower() == "websocket", f"101 needs Upgrade: websocket: {resp.head!r}"
    assert "upgrade" in (resp.header("connection") or "").lower(), f"101 needs Connection: Upgrade: {resp.head!r}"
    assert resp.header("sec-websocket-protocol") is None, (
        f"no subprotocol was offered, so none may be answered: {resp.head!r}")
    assert resp.header("sec-websocket-extensions") is None, f"no extension was offered: {resp.head!r}"


@pytest.mark.parametrize("offer", ["wsfan.v1", "foo, wsfan.v1", "wsfan.v1, foo", "foo,wsfan.v1"])
def test_offered_subprotocol_is_echoed(server, offer):
    c = RawClient(server.port)
    resp = c.upgrade("/ws", protocols=offer)
    assert resp.status == 101, f"upgrade offering {offer!r} answered {resp.status}: {resp.head!r}"
    assert resp.header("sec-websocket-protocol") == "wsfan.v1", (
        f"offer {offer!r} should be answered with Sec-WebSocket-Protocol: wsfan.v1: {resp.head!r}")


def test_subprotocol_offered_in_two_header_lines_is_found(server):
    c = RawClient(server.port)
    resp = c.upgrade("/ws", headers=[("Sec-WebSocket-Protocol", "foo"), ("Sec-WebSocket-Protocol", "wsfan.v1")])
    assert resp.status == 101, resp.head
    assert resp.header("sec-websocket-protocol") == "wsfan.v1", resp.head


def test_unsupported_subprotocol_is_never_echoed(server):
    c = RawClient(server.port)
    resp = c.upgrade("/ws", protocols="chat, superchat")
    assert resp.status in (101, 400), f"unexpected status {resp.status}: {resp.head!r}"
    if resp.status == 101:
        assert resp.header("sec-websocket-protocol") is None, (
            f"the server must not pick a subprotocol the client did not offer: {resp.head!r}")


def test_real_client_negotiates_subprotocol_and_deflate(server):
    # websockets offers permessage-deflate by default; wsfan accepts it
    # beside the subprotocol (test_deflate.py has the rest).
    async def scenario():
        async with json_client(server, "/ws", subprotocols=["wsfan.v1"]) as c:
            assert c.subprotocol == "wsfan.v1"
            assert [e.name for e in c.ws.extensions] == ["permessage-deflate"], c.ws.extensions
            return await c.request({"type": "ping", "ref": 1})

    assert run(scenario()) == {"type": "pong", "ref": 1}


@pytest.mark.parametrize("name,value", [
    ("Upgrade", "WebSocket"),
    ("Connection", "keep-alive, Upgrade"),
    ("Connection", "upgrade"),
])
def test_header_values_are_matched_case_insensitively_and_as_tokens(server, name, value):
    c = RawClient(server.port)
    resp = c.upgrade("/ws", replace={name: value})
    assert resp.status == 101, f"{name}: {value} should be accepted, got {resp.status}: {resp.head!r}"


def test_head_sent_byte_by_byte_still_upgrades(wsfan):
    srv = wsfan("--handshake-timeout", "3")
    c = RawClient(srv.port)
    t0 = time.monotonic()
    resp = c.upgrade("/ws?user=alice", bytewise=True)
    took = time.monotonic() - t0
    assert resp.status == 101, f"a head sent one byte at a time ({took:.2f}s) answered {resp.status}"
    assert c.recv_json()["user"] == "alice"
    assert c.request({"type": "ping", "ref": 1}) == {"type": "pong", "ref": 1}


def test_frames_sent_with_the_head_are_not_lost(server):
    # The client's first frame arrives in the same TCP segment as the request head.
    c = RawClient(server.port)
    resp = c.upgrade("/ws", then=frame(OP_TEXT, cmd({"type": "ping", "ref": "early"})))
    assert resp.status == 101, resp.head
    assert c.recv_json()["type"] == "welcome", "the welcome must come first"
    assert c.recv_json() == {"type": "pong", "ref": "early"}, "the frame sent right after the head was lost"


# ---- refusals ----------------------------------------------------------------

REFUSALS_400 = {
    "missing Upgrade": dict(omit=["Upgrade"]),
    "Upgrade: h2c": dict(replace={"Upgrade": "h2c"}),
    "Connection: keep-alive": dict(replace={"Connection": "keep-alive"}),
    "missing Connection": dict(omit=["Connection"]),
    "missing key": dict(omit=["Sec-WebSocket-Key"]),
    "key not base64": dict(replace={"Sec-WebSocket-Key": "not a key!!"}),
    "key of 15 bytes": dict(replace={"Sec-WebSocket-Key": ws_key(15)}),
    "key of 17 bytes": dict(replace={"Sec-WebSocket-Key": ws_key(17)}),
    "empty key": dict(replace={"Sec-WebSocket-Key": ""}),
}


@pytest.mark.parametrize("case", list(REFUSALS_400))
def test_bad_upgrade_request_answers_400_with_one_line_body(server, case):
    raw = request_head("GET", "/ws", upgrade_headers(**REFUSALS_400[case]))
    resp = http_request(server.port, raw)
    assert resp.status == 400, f"{case}: expected 400, got {resp.status}: {resp.head!r}"
    assert_one_line_body(resp)


@pytest.mark.parametrize("user", ["bad%20name", "a" * 129, "", "%zz", "x*y"],
                         ids=["space", "129 bytes", "empty", "bad escape", "star"])
def test_invalid_user_in_query_is_refused_with_400(server, user):
    resp = http_request(server.port, request_head("GET", f"/ws?user={user}", upgrade_headers()))
    assert resp.status == 400, f"?user={user}: expected 400 (PROTOCOL.md section 4), got {resp.status}"
    assert_one_line_body(resp)


def test_post_upgrade_answers_400(server):
    raw = request_head("POST", "/ws", upgrade_headers(extra=[("Content-Length", "0")]))
    resp = http_request(server.port, raw)
    assert resp.status == 400, f"POST /ws with upgrade headers: expected 400, got {resp.status}: {resp.head!r}"
    assert_one_line_body(resp)


def test_http_1_0_upgrade_answers_400_and_closes(server):
    """RFC 6455 section 4.1: the opening handshake is HTTP/1.1 or later."""
    raw = request_head("GET", "/ws", upgrade_headers(extra=[("Connection", "keep-alive")]), http_version="1.0")
    resp = http_request(server.port, raw)
    assert resp.status == 400, f"an HTTP/1.0 upgrade: expected 400, got {resp.status}: {resp.head!r}"
    assert resp.body == b"WebSocket upgrade requires HTTP/1.1\n", resp.body
    assert resp.header("connection") == "close", resp.head


def test_version_8_answers_426_naming_version_13(server):
    raw = request_head("GET", "/ws", upgrade_headers(version="8"))
    resp = http_request(server.port, raw)
    assert resp.status == 426, f"Sec-WebSocket-Version: 8: expected 426, got {resp.status}: {resp.head!r}"
    assert resp.header("sec-websocket-version") == "13", f"426 must carry Sec-WebSocket-Version: 13: {resp.head!r}"
    assert_one_line_body(resp)


def test_missing_version_is_refused(server):
    raw = request_head("GET", "/ws", upgrade_headers(version=None))
    resp = http_request(server.port, raw)
    assert resp.status in (400, 426), f"no Sec-WebSocket-Version: expected 400 or 426, got {resp.status}"


def test_oversized_request_head_answers_431(server):
    raw = request_head("GET", "/ws", upgrade_headers(extra=[("X-Filler", "a" * 16384)]))
    try:
        resp = http_request(server.port, raw)
    except PeerClosed as e:
        pytest.fail(f"a 16 KiB head got no response at all (expected 431): {e}")
    assert resp.status == 431, f"a 16 KiB request head: expected 431, got {resp.status}: {resp.head!r}"


def test_many_small_headers_over_the_limit_answer_431(server):
    extra = [(f"X-H{i}", "v" * 40) for i in range(300)]  # ~15 KiB in 300 lines
    try:
        resp = http_request(server.port, request_head("GET", "/healthz", extra))
    except PeerClosed as e:
        pytest.fail(f"a 15 KiB head got no response at all (expected 431): {e}")
    assert resp.status == 431, f"expected 431, got {resp.status}: {resp.head!r}"


def test_head_just_under_the_limit_is_accepted(server):
    raw = request_head("GET", "/ws", upgrade_headers(extra=[("X-Filler", "a" * 6000)]))
    c = RawClient(server.port)
    c.send(raw)
    resp = c.read_http_response()
    assert resp.status == 101, f"a ~6 KiB head is under the 8 KiB limit: got {resp.status}: {resp.head!r}"


def test_server_full_answers_503_and_keeps_existing_connections(wsfan):
    srv = wsfan("--max-connections", "2")
    first = RawClient.open(srv)
    second = RawClient.open(srv)
    third = RawClient(srv.port)
    resp = third.upgrade("/ws")
    assert resp.status == 503, f"third upgrade with --max-connections 2: expected 503, got {resp.status}"
    assert_one_line_body(resp)
    for name, c in (("first", first), ("second", second)):
        assert c.request({"type": "ping", "ref": name}) == {"type": "pong", "ref": name}, (
            f"{name} connection stopped working after the server refused a third")
    # A slot freed by a clean close can be used again.
    first.send_close(1000)
    first.expect_close(1000, what="client close")
    status = None
    deadline = time.monotonic() + 3 * SLOW
    while time.monotonic() < deadline:
        again = RawClient(srv.port)
        status = again.upgrade("/ws").status
        again.close()
        if status == 101:
            break
        time.sleep(0.1)
    assert status == 101, f"after one of two connections closed, a new upgrade still got {status}"


# ---- handshake timeout (slowloris) -------------------------------------------------

def _time_until_dropped(c: RawClient, bound: float):
    """Seconds until the server closes TCP; also returns any HTTP status sent."""
    t0 = time.monotonic()
    status = None
    try:
        resp = c.read_http_response(timeout=bound)
        status = resp.status
        assert c.wait_eof(bound), f"server answered {status} but kept the connection open"
    except PeerClosed:
        pass
    except socket.timeout:
        return None, None
    return time.monotonic() - t0, status


@pytest.mark.parametrize("sent", [b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr", b""],
                         ids=["half a head", "nothing"])
def test_incomplete_head_is_dropped_after_handshake_timeout(wsfan, sent):
    srv = wsfan("--handshake-timeout", "1")
    c = RawClient(srv.port)
    if sent:
        c.send(sent)
    took, status = _time_until_dropped(c, 6)
    assert took is not None, "a client that stopped mid-head was still connected after 6s (--handshake-timeout 1)"
    assert status in (None, 408), f"expected a 408 or a plain close, got status {status}"
    assert 0.5 <= took <= 3.0 * SLOW, f"dropped after {took:.2f}s; expected about 1-3s with --handshake-timeout 1"


def test_head_trickling_past_the_timeout_is_refused(wsfan):
    # Slowloris proper: bytes keep coming (one every 0.25 s), but the head is
    # not complete within --handshake-timeout 1, so the server gives up.
    srv = wsfan("--handshake-timeout", "1")
    c = RawClient(srv.port)
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    raw = request_head("GET", "/ws", upgrade_headers())
    t0 = time.monotonic()
    answered = None
    for i in range(min(len(raw), 40)):  # 10 s at most
        r, _, _ = select.select([c.sock], [], [], 0.25)
        if r:
            try:
                answered = c.sock.recv(4096) or b"<EOF>"
            except OSError as e:
                answered = repr(e).encode()
            break
        if not c.send_quietly(raw[i:i + 1]):
            answered = b"<send failed>"
            break
    took = time.monotonic() - t0
    assert answered is not None, f"a head trickling in for {took:.1f}s was never refused (--handshake-timeout 1)"
    assert answered.startswith((b"HTTP/1.1 408", b"<")), f"expected a 408 or a close, got {answered[:80]!r}"
    assert took <= 3.0 * SLOW, f"a trickling head was refused only after {took:.2f}s (--handshake-timeout 1)"


def test_handshake_timeout_does_not_apply_after_upgrade(wsfan):
    srv = wsfan("--handshake-timeout", "1")
    c = RawClient.open(srv)
    time.sleep(2.5)
    assert c.request({"type": "ping", "ref": 1}) == {"type": "pong", "ref": 1}, (
        "an upgraded connection must not be closed by the handshake timeout")


# ---- hostile input, at random (deterministic seed) ------------------------------

def test_random_request_heads_never_break_the_server(server):
    import random
    rng = random.Random(2616)
    valid = request_head("GET", "/ws?user=alice", upgrade_headers())
    socks = []
    for _ in range(60):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 8)):  # flip, insert or delete bytes
            i = rng.randrange(len(data))
            r = rng.random()
            if r < 0.4:
                data[i] = rng.getrandbits(8)
            elif r < 0.7:
                data[i:i] = bytes(rng.choice([b"\r\n", b":", b" ", b"\x00", b"\xff", b"%", b"?"]))
            else:
                del data[i]
        s = socket.create_connection(("127.0.0.1", server.port), timeout=2 * SLOW)
        try:
            s.sendall(bytes(data))
        except OSError:
            pass
        socks.append(s)
    time.sleep(0.3 * SLOW)
    statuses = set()
    for s in socks:
        s.setblocking(False)
        try:
            head = s.recv(64)
            if head.startswith(b"HTTP/1.1 "):
                statuses.add(int(head[9:12]))
        except OSError:
            pass
        s.close()
    assert statuses <= {101, 400, 404, 405, 408, 426, 431, 505}, f"unexpected statuses for mangled heads: {statuses}"
    assert http_get(server.port, "/healthz").status == 200, "server unusable after mangled request heads"
