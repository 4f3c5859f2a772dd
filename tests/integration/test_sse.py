"""GET /sse: server-sent event streams (docs/protocol.md section 8).

A stream is read over a raw socket, as curl would: the head, then blocks
of "id:", "event:" and "data:" lines, and ": ping" comments. It gets the
events of its rooms, its user's direct events and broadcasts; its id
("room=offset;room2=offset") resumes every room with Last-Event-ID or
?since=, with no gap and no duplicate while messages keep coming. It is
admitted like a WebSocket handshake (token, Origin, connection limits),
counts as a connection, is closed when it reads too slowly, and ends on
SIGTERM. Room tests run on both engines.
"""

import http.client
import json
import socket
import threading
import time
from signal import SIGTERM
from urllib.parse import quote

import jwt
import pytest

from conftest import HOST, SLOW, assert_one_line_body, engine_independent, parse_http_head, request_head
from protocol_client import uniq

SECRET = "test-secret-0123456789abcdef-0123456789"


def token(sub="alice", **claims):
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + 3600, **claims}, SECRET, algorithm="HS256")


class Stream:
    """One GET /sse over a socket. .resp is the response head (and the body
    of a refusal); event() reads one block."""

    def __init__(self, port, path, headers=(), rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(5 * SLOW)
        self.sock.connect((HOST, port))
        self.sock.sendall(request_head("GET", path, list(headers)))
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            assert chunk, f"closed before a head: {self.buf!r}"
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.resp = parse_http_head(head + b"\r\n\r\n")
        if self.resp.status != 200:
            self.resp = self.resp._replace(body=self.rest())

    def rest(self) -> bytes:
        """Everything until the server closes."""
        out = self.buf
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                return out
            out += chunk

    def event(self, timeout=5.0) -> dict:
        """The next block: {"id", "event", "data" (parsed), "comment"}."""
        self.sock.settimeout(timeout * SLOW)
        while b"\n\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"stream closed, {self.buf!r} left")
            self.buf += chunk
        block, self.buf = self.buf.split(b"\n\n", 1)
        out = {}
        for line in block.decode().split("\n"):
            name, _, value = line.partition(": ")
            out["comment" if name == "" else name] = value
        if "data" in out:
            out["data"] = json.loads(out["data"])
        return out

    def events_until(self, pred, limit=10000, timeout=5.0):
        """Blocks up to and including the first for which pred is true,
        within timeout in all (keep-alive comments do not extend it)."""
        out = []
        deadline = time.monotonic() + timeout * SLOW
        while len(out) < limit and time.monotonic() < deadline:
            ev = self.event(max(0.01, (deadline - time.monotonic()) / SLOW))
            out.append(ev)
            if pred(ev):
                return out
        raise AssertionError(f"not found in {len(out)} events within {timeout * SLOW:.1f}s: {out[-5:]!r}")

    def ended(self, timeout=5.0) -> bool:
        """True when the server closes the stream within timeout."""
        self.sock.settimeout(timeout * SLOW)
        deadline = time.monotonic() + timeout * SLOW
        try:
            while time.monotonic() < deadline:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, socket.timeout):
            return False
        return False

    def close(self):
        self.sock.close()


def stream(srv, rooms=(), query="", headers=(), **kw) -> Stream:
    q = "&".join([f"room={r}" for r in rooms] + ([query] if query else []))
    return Stream(srv.port, f"/sse?{q}", headers, **kw)


def publish(srv, body):
    conn = http.client.HTTPConnection(HOST, srv.port, timeout=5 * SLOW)
    try:
        conn.request("POST", "/api/publish", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        reply = json.loads(resp.read())
        assert resp.status == 200, (resp.status, reply)
        return reply
    finally:
        conn.close()


def metrics(srv) -> dict:
    conn = http.client.HTTPConnection(HOST, srv.port, timeout=5 * SLOW)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        text = resp.read().decode()
    finally:
        conn.close()
    if resp.status != 200:
        return {}  # a full server (503) answers again once a slot is back
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line[:1] != "#"}


def wait_metric(srv, name, want, timeout=5.0):
    deadline = time.monotonic() + timeout * SLOW
    while True:
        values = metrics(srv)
        if values.get(name) == want or time.monotonic() > deadline:
            assert values.get(name) == want, (name, values.get(name), want)
            return values
        time.sleep(0.05)


def not_presence(ev) -> bool:
    return not ev.get("event", "").startswith("presence_")


@pytest.fixture(scope="module")
def server(engine, wsfan_module):
    return engine.node(wsfan_module, "--allow-broadcast", "--heartbeat", "1")


@pytest.fixture(scope="module")
def jwt_server(wsfan_module):
    return wsfan_module("--auth", "jwt", "--allow-anonymous", "--anonymous-rooms", "lobby",
                        env={"WSFAN_JWT_SECRET": SECRET})


# ---- the stream -------------------------------------------------------------------

def test_stream_carries_joined_then_room_direct_and_broadcast_events(server):
    a, b, bob = uniq("a"), uniq("b"), uniq("bob")
    s = stream(server, [a, b], f"user={bob}")
    try:
        assert s.resp.status == 200
        assert s.resp.header("content-type") == "text/event-stream"
        assert s.resp.header("cache-control") == "no-cache"
        assert s.resp.header("content-length") is None
        first = [ev for ev in s.events_until(lambda ev: ev.get("event") == "joined" and ev["data"]["room"] == b)
                 if not_presence(ev)]
        assert [ev["data"]["room"] for ev in first] == [a, b]
        ja, jb = first[0]["data"], first[1]["data"]
        assert ja["recovered"] is False and ja["missed"] == 0
        assert first[0]["id"] == f"{a}={ja['offset']}"
        assert first[1]["id"] == f"{a}={ja['offset']};{b}={jb['offset']}"

        off = publish(server, {"room": a, "data": {"n": 1}})["offset"]
        publish(server, {"user": bob, "data": "to bob"})
        publish(server, {"all": True, "data": "to all"})
        publish(server, {"room": b, "data": "fleeting", "ephemeral": True})
        got = [ev for ev in s.events_until(lambda ev: ev.get("event") == "message" and ev["data"]["room"] == b)
               if not_presence(ev) and "comment" not in ev]
        kinds = [(ev["event"], ev["data"]["data"]) for ev in got]
        assert ("message", {"n": 1}) in kinds and ("direct", "to bob") in kinds
        assert ("broadcast", "to all") in kinds and ("message", "fleeting") in kinds
        for ev in got:
            if ev["event"] == "message" and ev["data"]["room"] == a:
                assert ev["id"] == f"{a}={off};{b}={jb['offset']}"
                assert ev["data"]["offset"] == off
            else:
                assert "id" not in ev, ev
    finally:
        s.close()


def test_stream_sees_presence_of_other_members(server):
    room = uniq("room")
    s = stream(server, [room], f"user={uniq('watcher')}")
    carol = uniq("carol")
    try:
        s.events_until(lambda ev: ev.get("event") == "joined")
        other = stream(server, [room], f"user={carol}")
        s.events_until(lambda ev: ev.get("event") == "presence_join" and ev["data"]["user"] == carol)
        other.close()
        s.events_until(lambda ev: ev.get("event") == "presence_leave" and ev["data"]["user"] == carol)
    finally:
        s.close()


def test_idle_stream_gets_keep_alive_comments(server):
    s = stream(server, [uniq("quiet")])
    try:
        s.events_until(lambda ev: ev.get("comment") == "ping", timeout=3)
    finally:
        s.close()


# ---- recovery -----------------------------------------------------------------------

def test_last_event_id_resumes_every_room_without_gap_or_duplicate(server):
    """Messages go to two rooms all along, while the stream is cut and
    opened again with the last id it saw, four times: each room's messages
    arrive once each, in order."""
    rooms = [uniq("r1"), uniq("r2")]
    total = 150
    done = threading.Event()
    errors = []

    def publisher():
        try:
            for i in range(total):
                for r in rooms:
                    publish(server, {"room": r, "data": i})
                time.sleep(0.002)
        except Exception as e:  # the assertion below reports it
            errors.append(e)
        finally:
            done.set()

    last_id = None
    seen = {r: [] for r in rooms}
    recovered = []

    def take(ev) -> int:
        """Notes ev; 1 for a message."""
        nonlocal last_id
        if "id" in ev:
            last_id = ev["id"]
        if ev.get("event") == "joined":
            recovered.append(ev["data"]["recovered"])
        if ev.get("event") == "message":
            seen[ev["data"]["room"]].append(ev["data"]["data"])
            return 1
        return 0

    # The first message is published once both rooms are joined: what
    # comes before a join's answer is not the stream's.
    s = stream(server, rooms)
    for ev in s.events_until(lambda ev: ev.get("event") == "joined" and ev["data"]["room"] == rooms[1]):
        take(ev)
    t = threading.Thread(target=publisher)
    t.start()
    try:
        for cut in range(5):
            if cut:
                s = stream(server, rooms, headers=[("Last-Event-ID", last_id)])
                assert s.resp.status == 200, s.resp
            count = 0
            deadline = time.monotonic() + 10 * SLOW  # keep-alive comments come every second: not a timeout
            while cut == 4 or count < 40:
                if cut == 4 and (all(len(v) >= total for v in seen.values()) or time.monotonic() > deadline):
                    break
                count += take(s.event())
            s.close()
    finally:
        t.join(30)
    assert not errors, errors
    assert recovered == [False, False] + [True] * 8, recovered
    for r in rooms:
        assert seen[r] == list(range(total)), (r, seen[r])


def test_since_in_the_query_replays_after_each_room_offset(server):
    a, b = uniq("a"), uniq("b")
    oa = publish(server, {"room": a, "data": "a0"})["offset"]
    ob = publish(server, {"room": b, "data": "b0"})["offset"]
    publish(server, {"room": a, "data": "a1"})
    publish(server, {"room": b, "data": "b1"})
    s = stream(server, [a, b], "since=" + quote(f"{a}={oa};{b}={ob}"))
    try:
        got = [ev for ev in s.events_until(lambda ev: ev.get("data", {}).get("data") == "b1") if not_presence(ev)]
        assert [(ev["event"], ev["data"].get("data")) for ev in got] == [
            ("joined", None), ("message", "a1"), ("joined", None), ("message", "b1")]
        assert got[0]["data"]["recovered"] is True and got[0]["data"]["missed"] == 1
        assert got[0]["id"] == f"{a}={oa}"
    finally:
        s.close()


@engine_independent
def test_malformed_last_event_id_is_refused(server):
    s = stream(server, ["x"], headers=[("Last-Event-ID", "x=12")])
    assert s.resp.status == 400
    assert_one_line_body(s.resp)


# ---- admission ------------------------------------------------------------------------

def test_refusals_are_those_of_a_websocket_handshake(jwt_server):
    def status(rooms, query="", headers=()):
        s = stream(jwt_server, rooms, query, headers)
        assert s.resp.status == 200 or s.resp.body.count(b"\n") == 1, s.resp
        s.close()
        return s.resp.status, s.resp.body.decode()

    assert status(["lobby"])[0] == 200
    assert status(["a"]) == (403, "room a: anonymous connections may not join or read this room\n")
    assert status(["lobby"], "user=bob")[0] == 400
    assert status(["lobby"], "token=nonsense")[0] == 401
    ok = token(rooms=["team:*"])
    assert status(["team:1", "team:2"], f"token={ok}")[0] == 200
    assert status(["team:1"], headers=[("Authorization", f"Bearer {ok}")])[0] == 200
    st, body = status(["team:1", "other"], f"token={ok}")
    assert st == 403 and "other" in body
    assert status(["bad room"], f"token={ok}")[0] == 400
    assert status(["team:1"], f"token={ok}", [("Origin", "http://evil.example")]) == (403, "origin not allowed\n")
    conn = http.client.HTTPConnection(HOST, jwt_server.port, timeout=5)
    conn.request("POST", "/sse?room=lobby", "")
    resp = conn.getresponse()
    assert resp.status == 405 and resp.getheader("allow") == "GET"
    conn.close()


def test_streams_count_in_the_connection_limits(wsfan):
    srv = wsfan("--max-connections", "2", "--max-connections-per-ip", "0")
    one, two = stream(srv, ["a"]), stream(srv, ["a"])
    try:
        third = stream(srv, ["a"])
        assert third.resp.status == 503
        third.close()
        one.close()
        values = wait_metric(srv, "wsfan_sse_streams", 1)
        assert values["wsfan_connections"] == 1
    finally:
        two.close()


def test_streams_count_per_address(wsfan):
    srv = wsfan("--max-connections-per-ip", "1")
    one = stream(srv, ["a"])
    try:
        two = stream(srv, ["a"])
        assert two.resp.status == 429
        two.close()
    finally:
        one.close()


def test_slow_reader_stream_is_closed(wsfan):
    srv = wsfan("--send-queue-limit", "64k")
    room = uniq("big")
    s = stream(srv, [room], rcvbuf=4096)
    try:
        s.event()  # joined
        # The kernel's buffers take megabytes on the loopback before the
        # server's queue fills.
        for i in range(400):
            publish(srv, {"room": room, "data": "x" * 60000, "ephemeral": True})
            if i % 20 == 19 and metrics(srv)["wsfan_slow_readers_closed_total"] == 1:
                break
        wait_metric(srv, "wsfan_slow_readers_closed_total", 1)
        s.rest()  # ends: the server closed it
    finally:
        s.close()


def test_sigterm_ends_streams(wsfan):
    srv = wsfan()
    s = stream(srv, [uniq("a")])
    try:
        s.event()
        srv.signal(SIGTERM)
        assert s.ended(5), "the stream did not end on SIGTERM"
        assert srv.wait(10) == 0
    finally:
        s.close()
