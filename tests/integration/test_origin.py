"""Who may connect, and to what (docs/protocol.md section 1a "Origin",
section 7 "API access"): the Origin of browser handshakes (the server's own
origin, --allowed-origins with exact origins, *.subdomains and *, no Origin
at all), the API and /metrics without --api-key (loopback client and
loopback Host only: DNS rebinding), with a key (401 / 200 from anywhere),
--admin-listen (the admin routes on that port only, 404 on the public one),
and keys too short to start with."""

import json

import pytest

from conftest import (HOST, RawClient, assert_one_line_body, http_request, json_client, request_head, run,
                      run_wsfan)

KEY = "origin-test-key-0123456789"


def upgrade_with(srv, headers=(), host=None, port=None):
    """One upgrade of /ws with extra headers (and Host replaced when given);
    returns the response (the body read for a refusal)."""
    c = RawClient(port or srv.port)
    try:
        replace = {"Host": host} if host is not None else None
        return c.upgrade("/ws", headers=list(headers), replace=replace)
    finally:
        c.close()


def assert_refused(resp, status, what):
    assert resp.status == status, f"{what}: expected {status}, got {resp.status}: {resp.head!r}"
    assert_one_line_body(resp)
    assert resp.header("connection") == "close", f"{what}: a refused upgrade closes: {resp.head!r}"


def get(port, path, headers=(), host=None):
    """GET path; Host is 127.0.0.1 unless host is given."""
    pairs = [("Host", host)] if host is not None else []
    return http_request(port, request_head("GET", path, pairs + list(headers) + [("Connection", "close")]))


def metric(srv, name):
    text = get(srv.port, "/metrics").body.decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


# ---- Origin -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(wsfan_module):
    return wsfan_module()


def test_same_origin_handshake_is_accepted(server):
    own = f"http://{HOST}:{server.port}"
    resp = upgrade_with(server, [("Origin", own)], host=f"{HOST}:{server.port}")
    assert resp.status == 101, f"the server's own origin {own}: {resp.head!r}"
    # The pages the server serves open their WebSocket this way.
    resp = upgrade_with(server, [("Origin", f"http://localhost:{server.port}")], host=f"localhost:{server.port}")
    assert resp.status == 101, resp.head


def test_handshake_without_origin_is_not_checked(server):
    assert upgrade_with(server).status == 101


def test_own_origin_is_host_and_port_whatever_the_scheme(server):
    # Behind a TLS proxy the page is https while the server sees plain
    # HTTP: host and port decide, as the protocol says.
    resp = upgrade_with(server, [("Origin", "https://chat.example.com")], host="chat.example.com")
    assert resp.status == 101, resp.head
    resp = upgrade_with(server, [("Origin", "http://chat.example.com")], host="chat.example.com:8443")
    assert_refused(resp, 403, "another port")


def test_foreign_origin_is_refused_with_403(server):
    before = metric(server, 'wsfan_connections_refused_total{reason="origin"}')
    for origin in ("http://evil.example", f"http://{HOST}:{server.port + 1}", "http://localhost",
                   "null", "not an origin"):
        resp = upgrade_with(server, [("Origin", origin)], host=f"{HOST}:{server.port}")
        assert_refused(resp, 403, f"Origin {origin}")
        assert b"origin" in resp.body, resp.body
    assert metric(server, 'wsfan_connections_refused_total{reason="origin"}') == before + 5


def test_foreign_origin_is_refused_for_a_websocket_library(server):
    from websockets.exceptions import InvalidStatusCode

    async def scenario():
        with pytest.raises(InvalidStatusCode) as info:
            async with json_client(server, origin="http://evil.example"):
                pass
        assert info.value.status_code == 403
        async with json_client(server, origin=f"http://{HOST}:{server.port}") as c:
            assert (await c.request({"type": "ping", "ref": 1}))["type"] == "pong"

    run(scenario())


def test_allowed_origins_list_and_wildcard(wsfan):
    srv = wsfan("--allowed-origins", "https://app.example.com, https://*.example.org")
    host = f"ws.example.net:{srv.port}"
    for origin in ("https://app.example.com", "https://APP.example.com:443", "https://a.example.org",
                   "https://a.b.example.org"):
        assert upgrade_with(srv, [("Origin", origin)], host=host).status == 101, origin
    for origin in ("http://app.example.com", "https://app.example.com:8443", "https://example.org",
                   "https://evilexample.org", "https://other.example.com"):
        assert_refused(upgrade_with(srv, [("Origin", origin)], host=host), 403, f"Origin {origin}")
    # The server's own origin stays allowed alongside the list.
    assert upgrade_with(srv, [("Origin", f"http://{host}")], host=host).status == 101


def test_allowed_origins_star_allows_all(wsfan):
    srv = wsfan(env={"WSFAN_ALLOWED_ORIGINS": "*"})
    for origin in ("http://evil.example", "null"):
        assert upgrade_with(srv, [("Origin", origin)]).status == 101, origin


def test_bad_allowed_origins_stop_the_start():
    p = run_wsfan("--listen", f"{HOST}:1", "--allowed-origins", "app.example.com", timeout=5)
    assert p.returncode == 2 and "--allowed-origins=app.example.com" in p.stderr, p.stderr


# ---- the API and /metrics without a key --------------------------------------------------------

GUARDED = ("/api/stats", "/api/rooms", "/api/history?room=r", "/api/presence?room=r", "/metrics")


def test_api_answers_loopback_clients_naming_a_loopback_host(server):
    for host in (HOST, f"{HOST}:{server.port}", f"localhost:{server.port}", "[::1]", "127.1.2.3"):
        for path in GUARDED:
            resp = get(server.port, path, host=host)
            assert resp.status == 200, f"GET {path} with Host {host}: {resp.status} {resp.body[:200]!r}"


def test_api_refuses_a_host_that_is_not_loopback(server):
    # DNS rebinding: a page of evil.example whose name now points at
    # 127.0.0.1 reaches the port from the browser with its own Host.
    for host in ("evil.example", f"evil.example:{server.port}", "127.0.0.1.nip.io", "0.0.0.0"):
        for path in GUARDED:
            resp = get(server.port, path, host=host)
            assert resp.status == 403, f"GET {path} with Host {host}: {resp.status} {resp.body[:200]!r}"
            body = json.loads(resp.body)
            assert body["error"] == "forbidden" and body["message"], body
    publish = request_head("POST", "/api/publish", [("Host", "evil.example"), ("Content-Type", "application/json"),
                                                    ("Content-Length", "26"), ("Connection", "close")])
    resp = http_request(server.port, publish + b'{"room":"r","data":"hi!"}\n')
    assert resp.status == 403, resp.head
    # Probes, pages and WebSockets are not the API.
    for path in ("/healthz", "/readyz", "/", "/dashboard", "/wsfan.js"):
        assert get(server.port, path, host="evil.example").status == 200, path
    assert upgrade_with(server, host="evil.example").status == 101


def test_api_refuses_a_client_that_is_not_loopback(wsfan):
    # A client behind a proxy on this host is the address the proxy names.
    srv = wsfan("--trusted-proxies", "127.0.0.1")
    resp = get(srv.port, "/api/stats", [("X-Forwarded-For", "203.0.113.9")])
    assert resp.status == 403 and json.loads(resp.body)["error"] == "forbidden", resp.head
    assert get(srv.port, "/metrics", [("X-Forwarded-For", "203.0.113.9")]).status == 403
    assert get(srv.port, "/api/stats", [("X-Forwarded-For", "127.0.0.1")]).status == 200
    assert get(srv.port, "/api/stats").status == 200


# ---- with a key --------------------------------------------------------------------------------

def test_api_key_opens_the_api_to_whoever_shows_it(wsfan):
    srv = wsfan(env={"WSFAN_API_KEY": KEY})
    for path in GUARDED:
        for headers in ([], [("Authorization", "Bearer wrong-key-0123456789")]):
            resp = get(srv.port, path, headers, host="api.example.com")
            assert resp.status == 401, f"GET {path} {headers}: {resp.status}"
            assert json.loads(resp.body)["error"] == "unauthorized"
        resp = get(srv.port, path, [("Authorization", f"Bearer {KEY}")], host="api.example.com")
        assert resp.status == 200, f"GET {path} with the key: {resp.status} {resp.body[:200]!r}"


def test_short_api_key_is_refused_at_start():
    for args, env in ((["--api-key", "fifteen-chars!!"], None), ([], {"WSFAN_API_KEY": "short"})):
        p = run_wsfan("--listen", f"{HOST}:1", *args, env=env, timeout=5)
        assert p.returncode == 2, f"a key shorter than 16 characters must stop the start: {p.stderr!r}"
        assert "expected 16 to 256" in p.stderr and "(hidden)" in p.stderr, p.stderr
        assert "fifteen" not in p.stderr and "short" not in p.stderr.replace("shorter", ""), p.stderr
    p = run_wsfan("--listen", f"{HOST}:1", "--api-key", "sixteen-chars!!!", "--version", timeout=5)
    assert p.returncode == 0, p.stderr


# ---- --admin-listen ------------------------------------------------------------------------------

def test_admin_listen_moves_the_api_off_the_public_port(wsfan):
    from conftest import free_port
    admin = free_port()
    srv = wsfan("--admin-listen", f"{HOST}:{admin}")
    assert f"on {HOST}:{admin} only" in srv.log(), srv.log_tail()
    for path in GUARDED + ("/dashboard",):
        resp = get(admin, path)
        assert resp.status == 200, f"admin port: GET {path}: {resp.status} {resp.body[:200]!r}"
        resp = get(srv.port, path)
        assert resp.status == 404, f"public port: GET {path}: {resp.status}, expected 404"
        if path.startswith("/api/"):
            assert json.loads(resp.body)["error"] == "not_found", resp.body
    publish = request_head("POST", "/api/publish", [("Content-Type", "application/json"), ("Content-Length", "25"),
                                                    ("Connection", "close")]) + b'{"room":"r","data":"hi!"}'
    assert http_request(admin, publish).status == 200
    assert http_request(srv.port, publish).status == 404
    # Both answer the probes; the chat page is public, the client file and
    # /ws on both (the dashboard measures its round trip there).
    for path in ("/healthz", "/readyz", "/wsfan.js"):
        assert get(admin, path).status == 200 and get(srv.port, path).status == 200, path
    assert get(srv.port, "/").status == 200
    assert get(admin, "/").status == 404
    assert upgrade_with(srv, port=admin).status == 101
    assert upgrade_with(srv).status == 101
    # Without a key, the admin port keeps the loopback rule.
    assert get(admin, "/api/stats", host="evil.example").status == 403


def test_admin_listen_on_the_public_address_is_refused():
    p = run_wsfan("--listen", f"{HOST}:9", "--admin-listen", f"{HOST}:9", timeout=5)
    assert p.returncode == 2 and "--admin-listen" in p.stderr, p.stderr
