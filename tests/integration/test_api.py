"""The server HTTP API (PROTOCOL.md section 7): publish to a room, a user or
everyone with from null, history, presence, rooms, health checks, the API
key, every error as the JSON and status it should be, keep-alive, pipelined
requests answered in order, bodies in many pieces, and the built-in pages."""

import json
import socket
import time

import pytest

from conftest import HOST, SLOW, RawClient, http_request, json_client, request_head, run, run_wsfan

KEY = "s3cret-key-0123456789"  # --api-key takes 16 characters at least


def api_request(method, path, body=None, headers=None, content_type="application/json", keep_alive=False):
    """Raw bytes of one request; body is an object (sent as JSON) or bytes."""
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
    pairs = list(headers or [])
    if body is not None:
        if content_type:
            pairs.append(("Content-Type", content_type))
        pairs.append(("Content-Length", str(len(body))))
    if not keep_alive:
        pairs.append(("Connection", "close"))
    return request_head(method, path, pairs) + (body or b"")


def call(srv, method, path, body=None, **kw):
    """One request on a new connection: (status, parsed JSON or text, response)."""
    resp = http_request(srv.port, api_request(method, path, body, **kw))
    ctype = resp.header("content-type") or ""
    parsed = json.loads(resp.body) if ctype.startswith("application/json") else resp.body.decode()
    return resp.status, parsed, resp


def assert_error(srv, method, path, body, status, code, **kw):
    got, parsed, resp = call(srv, method, path, body, **kw)
    what = f"{method} {path} {body!r}"
    assert got == status, f"{what}: expected {status}, got {got} {parsed!r}"
    assert (resp.header("content-type") or "").startswith("application/json"), f"{what}: errors are JSON: {resp.head!r}"
    assert set(parsed) == {"error", "message"}, f"{what}: expected {{error, message}}, got {parsed!r}"
    assert parsed["error"] == code, f"{what}: expected error {code!r}, got {parsed!r}"
    assert parsed["message"], f"{what}: the message should say what is wrong"
    return resp


async def recv_type(c, type_):
    """The next event of type_ (presence events of one's own join are skipped)."""
    for _ in range(20):
        ev = await c.recv()
        if ev["type"] == type_:
            return ev
    raise AssertionError(f"no {type_} event in 20")


@pytest.fixture(scope="module")
def server(wsfan_module):
    return wsfan_module("--workers", "2", "--max-message", "4k")


# ---- publish ----------------------------------------------------------------------

def test_publish_to_a_room_reaches_members_with_from_null_and_lands_in_history(server):
    async def scenario():
        async with json_client(server, "/ws?user=alice") as c:
            await c.request({"type": "join", "room": "api-room"})
            status, reply, _ = call(server, "POST", "/api/publish", {"room": "api-room", "data": {"text": "hi"}})
            assert status == 200 and set(reply) == {"offset"}, f"publish answered {status} {reply!r}"
            return reply, await recv_type(c, "message")
    reply, msg = run(scenario())
    assert msg["type"] == "message" and msg["room"] == "api-room", msg
    assert msg["from"] is None, f"a message published over the API has from null: {msg!r}"
    assert msg["data"] == {"text": "hi"} and msg["offset"] == reply["offset"], (msg, reply)
    status, hist, _ = call(server, "GET", "/api/history?room=api-room")
    assert status == 200 and hist["room"] == "api-room", hist
    assert hist["messages"] == [msg], f"history should hold exactly the message delivered: {hist!r}"


def test_publish_ephemeral_is_delivered_without_offset_or_history(server):
    async def scenario():
        async with json_client(server, "/ws") as c:
            await c.request({"type": "join", "room": "api-eph"})
            status, reply, _ = call(server, "POST", "/api/publish",
                                    {"room": "api-eph", "data": "typing", "ephemeral": True})
            return status, reply, await recv_type(c, "message")
    status, reply, msg = run(scenario())
    assert status == 200 and reply == {"offset": None}, reply
    assert msg["data"] == "typing" and "offset" not in msg and msg["from"] is None, msg
    assert call(server, "GET", "/api/history?room=api-eph")[1]["messages"] == []


def test_publish_to_a_user_and_to_everyone(server):
    async def scenario():
        async with json_client(server, "/ws?user=bob") as bob, json_client(server, "/ws") as anon:
            s1, r1, _ = call(server, "POST", "/api/publish", {"user": "bob", "data": {"n": 1}})
            direct = await bob.recv()
            s2, r2, _ = call(server, "POST", "/api/publish", {"all": True, "data": {"n": 2}})
            return (s1, r1, direct), (s2, r2, await bob.recv(), await anon.recv())
    (s1, r1, direct), (s2, r2, b_all, a_all) = run(scenario())
    assert s1 == 200 and r1 == {"offset": None}, r1
    assert direct["type"] == "direct" and direct["from"] is None and direct["data"] == {"n": 1}, direct
    assert s2 == 200 and r2 == {"offset": None}, r2
    for ev in (b_all, a_all):
        assert ev["type"] == "broadcast" and ev["from"] is None and ev["data"] == {"n": 2}, ev


def test_content_type_with_charset_is_json(server):
    status, reply, _ = call(server, "POST", "/api/publish", {"room": "api-ct", "data": 1},
                            content_type="Application/JSON; charset=utf-8")
    assert status == 200, reply


BAD_PUBLISH = [
    (b"{not json", 400, "bad_json"),
    (b"[1,2]", 400, "bad_json"),
    (b"", 400, "bad_json"),
    ({"data": 1}, 400, "bad_command"),
    ({"room": "r"}, 400, "bad_command"),
    ({"room": "r", "user": "u", "data": 1}, 400, "bad_command"),
    ({"all": False, "data": 1}, 400, "bad_command"),
    ({"room": "r", "data": 1, "ephemeral": "yes"}, 400, "bad_command"),
    ({"room": "no spaces", "data": 1}, 400, "room_invalid"),
    ({"room": 5, "data": 1}, 400, "room_invalid"),
    ({"room": "x" * 129, "data": 1}, 400, "room_invalid"),
    ({"user": "a/b", "data": 1}, 400, "user_invalid"),
]


@pytest.mark.parametrize("body,status,code", BAD_PUBLISH, ids=[c + "-" + str(i) for i, (_, _, c) in enumerate(BAD_PUBLISH)])
def test_bad_publish_is_a_json_error(server, body, status, code):
    assert_error(server, "POST", "/api/publish", body, status, code)


def test_publish_needs_a_json_content_type(server):
    assert_error(server, "POST", "/api/publish", {"room": "r", "data": 1}, 415, "unsupported_media_type",
                 content_type=None)
    assert_error(server, "POST", "/api/publish", {"room": "r", "data": 1}, 415, "unsupported_media_type",
                 content_type="text/plain")
    assert_error(server, "POST", "/api/publish", {"room": "r", "data": 1}, 415, "unsupported_media_type",
                 content_type="application/jsonx")


def test_body_over_the_limit_is_413_json_and_closes(server):
    body = json.dumps({"room": "r", "data": "x" * 5000}).encode()
    resp = assert_error(server, "POST", "/api/publish", body, 413, "too_large", keep_alive=True)
    assert resp.header("connection") == "close", resp.head


def test_chunked_body_over_the_limit_is_413(server):
    raw = request_head("POST", "/api/publish", [("Content-Type", "application/json"),
                                                ("Transfer-Encoding", "chunked")])
    raw += b"%x\r\n%s\r\n" % (5000, b"x" * 5000)
    resp = http_request(server.port, raw)
    assert resp.status == 413 and json.loads(resp.body)["error"] == "too_large", resp


def test_wrong_method_is_405_with_allow(server):
    resp = assert_error(server, "GET", "/api/publish", None, 405, "method_not_allowed")
    assert resp.header("allow") == "POST", resp.head
    for path in ("/api/history?room=r", "/api/presence?room=r", "/api/rooms", "/api/stats"):
        resp = assert_error(server, "POST", path, {}, 405, "method_not_allowed")
        assert resp.header("allow") == "GET, HEAD", resp.head
    resp = http_request(server.port, api_request("DELETE", "/healthz"))
    assert resp.status == 405 and resp.header("allow") == "GET, HEAD", resp.head


def test_unknown_paths_are_404(server):
    assert_error(server, "GET", "/api/nothing", None, 404, "not_found")
    resp = http_request(server.port, api_request("GET", "/nothing-here"))
    assert resp.status == 404, resp.head


@pytest.mark.parametrize("method,path", [("GET", "/api"), ("POST", "/api"), ("GET", "/api?tenant=acme"),
                                         ("GET", "/api/"), ("DELETE", "/api/xyz"), ("GET", "/api/publish/")])
def test_api_itself_and_every_path_under_it_answer_json_404(server, method, path):
    assert_error(server, method, path, {} if method == "POST" else None, 404, "not_found")


def test_a_body_over_the_limit_to_api_itself_is_a_json_413(server):
    resp = assert_error(server, "POST", "/api", b"x" * 5000, 413, "too_large")
    assert resp.header("connection") == "close", resp.head


def test_paths_that_only_start_like_api_get_the_plain_404(server):
    resp = http_request(server.port, api_request("GET", "/apiary"))
    assert resp.status == 404 and resp.header("content-type").startswith("text/plain"), resp.head


# ---- history, presence, rooms ---------------------------------------------------------

def test_history_pages_with_limit_and_before(server):
    offsets = [call(server, "POST", "/api/publish", {"room": "api-hist", "data": i})[1]["offset"] for i in range(5)]
    status, page, _ = call(server, "GET", "/api/history?room=api-hist&limit=2")
    assert status == 200 and [m["data"] for m in page["messages"]] == [3, 4], page
    status, page, _ = call(server, "GET", f"/api/history?room=api-hist&limit=2&before={offsets[3]}")
    assert [m["data"] for m in page["messages"]] == [1, 2], page
    status, page, _ = call(server, "GET", "/api/history?room=api-never")
    assert status == 200 and page == {"room": "api-never", "messages": []}, page


@pytest.mark.parametrize("query,code", [
    ("", "bad_command"), ("?limit=3", "bad_command"), ("?room=a%20b", "room_invalid"), ("?room=", "room_invalid"),
    ("?room=r&limit=0", "bad_command"), ("?room=r&limit=1001", "bad_command"), ("?room=r&limit=ten", "bad_command"),
    ("?room=r&before=yesterday", "bad_command"),
])
def test_bad_history_query_is_400(server, query, code):
    assert_error(server, "GET", "/api/history" + query, None, 400, code)


def test_presence_and_rooms_show_members(server):
    async def scenario():
        async with json_client(server, "/ws?user=carol") as c1, json_client(server, "/ws?user=carol") as c2, \
                json_client(server, "/ws?user=dave") as d:
            for c in (c1, c2, d):
                await c.request({"type": "join", "room": "api-pres"})
            return call(server, "GET", "/api/presence?room=api-pres"), call(server, "GET", "/api/rooms")
    (s1, pres, _), (s2, rooms, _) = run(scenario())
    assert s1 == 200 and pres == {"room": "api-pres", "users": [{"user": "carol", "connections": 2},
                                                                {"user": "dave", "connections": 1}]}, pres
    assert s2 == 200 and isinstance(rooms["rooms"], list), rooms
    entry = [r for r in rooms["rooms"] if r["room"] == "api-pres"]
    assert entry == [{"room": "api-pres", "local": 3, "cluster": 3}], rooms
    assert_error(server, "GET", "/api/presence", None, 400, "bad_command")


# ---- health ------------------------------------------------------------------------------

def test_healthz_and_readyz(server):
    for path, text in (("/healthz", "ok"), ("/readyz", "ready")):
        resp = http_request(server.port, api_request("GET", path))
        assert resp.status == 200 and resp.body.decode().strip() == text, resp
        head = http_request(server.port, api_request("HEAD", path))
        assert head.status == 200 and head.body == b"" and head.header("content-length") == str(len(text) + 1), head


# ---- the API key ---------------------------------------------------------------------------

def test_api_key_guards_the_api_and_metrics(wsfan):
    srv = wsfan(env={"WSFAN_API_KEY": KEY})
    body = {"room": "r", "data": 1}
    for headers in ([], [("Authorization", "Bearer wrong")], [("Authorization", f"Basic {KEY}")],
                    [("Authorization", f"Bearer {KEY}x")], [("Authorization", "Bearer ")]):
        resp = assert_error(srv, "POST", "/api/publish", body, 401, "unauthorized", headers=headers)
        assert (resp.header("www-authenticate") or "").startswith("Bearer"), resp.head
    for path in ("/api/history?room=r", "/api/presence?room=r", "/api/rooms", "/api/stats"):
        assert_error(srv, "GET", path, None, 401, "unauthorized")
    assert http_request(srv.port, api_request("GET", "/metrics")).status == 401
    auth = [("Authorization", f"bearer {KEY}")]
    assert call(srv, "POST", "/api/publish", body, headers=auth)[0] == 200
    assert call(srv, "GET", "/api/stats", headers=auth)[0] == 200
    assert http_request(srv.port, api_request("GET", "/metrics", headers=auth)).status == 200
    # Probes and pages stay open.
    for path in ("/healthz", "/readyz", "/", "/wsfan.js"):
        assert http_request(srv.port, api_request("GET", path)).status == 200, path


def test_api_key_flag_is_checked():
    p = run_wsfan("--listen", f"{HOST}:1", "--api-key", "has space", timeout=5)
    assert p.returncode == 2 and "--api-key" in p.stderr, p.stderr
    assert "has space" not in p.stderr, f"the bad key should not be echoed: {p.stderr!r}"


# ---- one connection, many requests ---------------------------------------------------------

def test_keep_alive_serves_requests_one_after_another(server):
    with RawClient(server.port) as c:
        for i in range(5):
            c.send(api_request("POST", "/api/publish", {"room": "api-ka", "data": i}, keep_alive=True))
            resp = c.read_http_response()
            assert resp.status == 200 and resp.header("connection") == "keep-alive", resp.head
            c.send(api_request("GET", "/api/history?room=api-ka&limit=1", keep_alive=True))
            resp = c.read_http_response()
            assert [m["data"] for m in json.loads(resp.body)["messages"]] == [i], resp.body


def test_pipelined_requests_are_answered_in_order(server):
    reqs = []
    for i in range(10):
        reqs.append(api_request("POST", "/api/publish", {"room": "api-pipe", "data": i}, keep_alive=True))
        reqs.append(api_request("GET", "/healthz", keep_alive=True))
        reqs.append(api_request("GET", "/api/history?room=api-pipe&limit=1", keep_alive=True))
    reqs.append(api_request("GET", "/api/nothing"))
    resps = http_request(server.port, b"".join(reqs), count=len(reqs))
    for i in range(10):
        pub, health, hist = resps[3 * i:3 * i + 3]
        assert pub.status == 200 and "offset" in json.loads(pub.body), (i, pub)
        assert health.status == 200 and health.body == b"ok\n", (i, health)
        last = json.loads(hist.body)["messages"]
        assert [m["data"] for m in last] == [i], f"request {3 * i + 2}: the history after publish {i} shows {last!r}"
        assert last[0]["offset"] == json.loads(pub.body)["offset"], (pub.body, hist.body)
    assert resps[-1].status == 404


def test_pipelined_requests_then_upgrade(server):
    """A deferred API answer holds back the bytes after it, upgrade included."""
    raw = api_request("POST", "/api/publish", {"room": "api-up", "data": 1}, keep_alive=True)
    with RawClient(server.port) as c:
        c.send(raw)
        resp = c.upgrade("/ws?user=erin")
        # The publish answer comes first, then the upgrade and the welcome.
        assert resp.status == 200 and "offset" in json.loads(resp.body), resp.head
        assert c.read_http_response().status == 101
        assert c.recv_json()["type"] == "welcome"


def test_body_arriving_in_many_pieces(server):
    raw = api_request("POST", "/api/publish", {"room": "api-slow", "data": {"text": "piece by piece"}},
                      keep_alive=True) + api_request("GET", "/api/history?room=api-slow")
    with RawClient(server.port) as c:
        c.send_bytewise(raw, delay=0.0005)
        first, second = c.read_http_response(), c.read_http_response()
    assert first.status == 200, first
    assert [m["data"] for m in json.loads(second.body)["messages"]] == [{"text": "piece by piece"}], second.body


def test_client_closing_while_its_answer_is_pending_is_harmless(server):
    raw = b"".join(api_request("POST", "/api/publish", {"room": "api-gone", "data": i}, keep_alive=True)
                   for i in range(50))
    for _ in range(10):
        s = socket.create_connection((HOST, server.port))
        s.sendall(raw)
        s.close()
    time.sleep(0.2 * SLOW)
    assert call(server, "GET", "/healthz")[0] == 200


# ---- the pages ---------------------------------------------------------------------------

@pytest.mark.parametrize("path,ctype,marker", [
    ("/", "text/html", b"wsfan chat"),
    ("/dashboard", "text/html", b"wsfan dashboard"),
    ("/wsfan.js", "text/javascript", b"export class WsfanClient"),
])
def test_built_in_pages(server, path, ctype, marker):
    resp = http_request(server.port, api_request("GET", path))
    assert resp.status == 200 and resp.header("content-type").startswith(ctype), resp.head
    assert marker in resp.body, f"{path} should be the built-in file"
    head = http_request(server.port, api_request("HEAD", path))
    assert head.status == 200 and head.body == b"" and head.header("content-length") == str(len(resp.body))
    assert http_request(server.port, api_request("POST", path, {})).status == 405
