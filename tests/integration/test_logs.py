"""The log (docs/operations.md, "Logs"): --log-format json writes one JSON
object a line with ts, level, msg and the fields of each event; WebSocket
sessions opened and closed carry the session and the client address (at
info with --log-connections, at debug without); /api/ requests are logged
at info with method, path, status and duration; refused handshakes with
their status and reason; the text format writes the same events as
key=value; no API key, token or Redis password ever reaches the log."""

import json
import time

import jwt

from conftest import SLOW, RawClient, http_request, request_head, run_wsfan, wait_until

KEY = "logs-api-key-0123456789"
SECRET = "logs-secret-0123456789abcdef-0123456789"


def json_lines(srv):
    """Every line of the server's log, parsed: each must be one JSON object."""
    out = []
    for line in srv.log().splitlines():
        obj = json.loads(line)
        assert isinstance(obj, dict), line
        assert {"ts", "level", "msg"} <= obj.keys(), line
        out.append(obj)
    return out


def events(srv, msg):
    return [e for e in json_lines(srv) if e["msg"] == msg]


def wait_event(srv, msg, pred=lambda e: True):
    return wait_until(lambda: (any(pred(e) for e in events(srv, msg)), events(srv, msg)),
                      f"a {msg!r} line", timeout=5.0)


def publish(srv, headers=()):
    body = json.dumps({"room": "lobby", "data": {"n": 1}}).encode()
    pairs = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Connection", "close"),
             *headers]
    return http_request(srv.port, request_head("POST", "/api/publish", pairs) + body)


def token(user):
    return jwt.encode({"sub": user, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")


def test_json_lines_for_a_session_and_an_api_call(wsfan):
    srv = wsfan("--log-format", "json", "--log-connections", "--api-key", KEY)
    c = RawClient.open(srv, "/ws?user=alice")
    session = c.welcome["session"]
    c.send_close(1000, b"bye")
    wait_event(srv, "websocket closed")
    c.close()
    assert publish(srv, [("Authorization", f"Bearer {KEY}")]).status == 200
    wait_event(srv, "http request")

    opened = events(srv, "websocket opened")
    assert len(opened) == 1, opened
    o = opened[0]
    assert o["level"] == "info"
    assert (o["session"], o["addr"], o["path"], o["user"]) == (session, "127.0.0.1", "/ws", "alice"), o
    assert o["ts"].endswith("Z") and len(o["ts"]) == 24, o
    closed = events(srv, "websocket closed")[0]
    assert (closed["session"], closed["addr"], closed["user"], closed["code"]) == (session, "127.0.0.1", "alice",
                                                                                    1000), closed
    assert closed["duration_ms"] >= 0 and closed["bytes_in"] > 0 and closed["bytes_out"] > 0, closed
    api = events(srv, "http request")[0]
    assert api["level"] == "info"
    assert (api["method"], api["path"], api["status"], api["addr"]) == ("POST", "/api/publish", 200,
                                                                        "127.0.0.1"), api
    assert api["duration_ms"] >= 0 and "session" in api, api
    assert KEY not in srv.log()


def test_server_closes_carry_code_and_reason(wsfan):
    srv = wsfan("--log-format", "json", "--log-connections", "--max-message", "128")
    c = RawClient.open(srv)
    c.send_json({"type": "ping", "pad": "x" * 200})
    wait_event(srv, "websocket closed")
    c.close()
    closed = events(srv, "websocket closed")[0]
    assert (closed["code"], closed["reason"]) == (1009, "message too large"), closed


def test_sessions_are_debug_without_log_connections_but_api_is_info(wsfan):
    srv = wsfan("--log-format", "json")
    c = RawClient.open(srv)
    c.send_close(1000)
    c.close()
    assert publish(srv).status == 200
    wait_event(srv, "http request")
    assert not events(srv, "websocket opened") and not events(srv, "websocket closed"), srv.log_tail()

    debug = wsfan("--log-format", "json", "--log-level", "debug")
    c = RawClient.open(debug)
    c.close()
    wait_event(debug, "websocket closed", lambda e: e["level"] == "debug" and e["code"] == 1006)


def test_refused_handshakes_give_status_and_reason_and_no_token(wsfan):
    srv = wsfan("--log-format", "json", "--log-connections", "--auth", "jwt", env={"WSFAN_JWT_SECRET": SECRET})
    bad = token("mallory")[:-4] + "AAAA"
    c = RawClient(srv.port)
    assert c.upgrade(f"/ws?token={bad}").status == 401
    c.close()
    c = RawClient(srv.port)
    assert c.upgrade("/ws", headers=[("Origin", "https://evil.example.com")]).status == 403
    c.close()
    good = token("bob")
    c = RawClient.open(srv, f"/ws?token={good}")
    c.close()
    wait_event(srv, "websocket closed")
    refused = events(srv, "handshake refused")
    assert [(e["status"], e["level"]) for e in refused] == [(401, "info"), (403, "info")], refused
    assert all(e["reason"] and e["session"] and e["addr"] == "127.0.0.1" for e in refused), refused
    assert refused[1]["origin"] == "https://evil.example.com", refused
    assert events(srv, "websocket opened")[0]["user"] == "bob"
    log = srv.log()
    assert bad not in log and good not in log and SECRET not in log
    assert bad.split(".")[2] not in log and good.split(".")[2] not in log


def test_bytes_that_are_not_utf8_are_escaped(wsfan):
    srv = wsfan("--log-format", "json", "--log-connections")
    c = RawClient(srv.port)
    c.send(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://x\xff\xc3\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert c.read_http_response().status == 403
    c.close()
    e = wait_event(srv, "handshake refused")
    assert events(srv, "handshake refused")[0]["origin"] == "https://x\ufffd\ufffd", e


def test_text_format_writes_key_value(wsfan):
    srv = wsfan("--log-connections")
    c = RawClient.open(srv, "/ws?user=carol")
    session = c.welcome["session"]
    c.close()
    assert publish(srv).status == 200

    def lines():
        return [ln for ln in srv.log().splitlines() if " websocket closed " in ln or " http request " in ln]
    wait_until(lambda: (len(lines()) == 2, srv.log_tail()), "the two lines")
    closed, api = lines()
    assert f" info websocket closed session={session} addr=127.0.0.1 user=carol code=1006 " in closed, closed
    assert " info http request " in api and " method=POST path=/api/publish status=200 " in api, api
    assert " listening on " in srv.log()  # the lines of before keep their text


def test_sighup_switches_the_format(wsfan, tmp_path):
    conf = tmp_path / "wsfan.conf"
    conf.write_text("log-format text\n")
    srv = wsfan("--config", str(conf))
    conf.write_text("log-format json\n")
    srv.signal(__import__("signal").SIGHUP)
    wait_until(lambda: ("config: log-format text -> json" in srv.log(), srv.log_tail()), "the reload line")
    assert publish(srv).status == 200
    wait_until(lambda: ('"msg":"http request"' in srv.log(), srv.log_tail()), "a JSON line after the reload")
    last = srv.log().splitlines()[-1]
    assert json.loads(last)["path"] == "/api/publish"


def test_a_bad_redis_url_is_not_echoed_with_its_password():
    for flag in ("--redis", "--store-redis"):
        p = run_wsfan(flag, "redis://user:hunter2@localhost:99999")
        assert p.returncode == 2
        assert "hunter2" not in p.stderr and "redis://user:***@localhost:99999" in p.stderr, p.stderr
