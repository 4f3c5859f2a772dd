"""One client must never hurt the others (docs/protocol.md section 1a
"Limits", docs/operations.md "Limits"): --rate-limit (rate_limited, then
1008 after 10 s of refusals), --max-data (too_large; 413 over the API),
--max-connections-per-ip (429; connections still in the HTTP phase count)
with X-Forwarded-For from --trusted-proxies only, --max-connections
counting from accept, pipelined requests from a client that never reads,
a slowloris head, a ping flood from a client that never reads (1013), and
the open-file limit (refusals counted, no spinning). Memory is read from
/proc/PID/status; every load is bounded in count and time."""

import json
import os
import resource
import socket
import subprocess
import time

import pytest

from conftest import (HOST, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, SANITIZED, SLOW, PeerClosed, RawClient,
                      assert_one_line_body, cmd, frame, free_port, http_request, request_head, sanitizer_report,
                      server_env, upgrade_headers, wsfan_bin)

MB = 1024 * 1024


def status_kb(pid, field):
    """VmRSS, VmHWM, ... of pid in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def cpu_seconds(pid):
    """User plus system CPU time of pid so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get(port, path, headers=()):
    return http_request(port, request_head("GET", path, list(headers) + [("Connection", "close")]))


def scrape(port):
    """{name or name{labels}: value} of GET /metrics."""
    resp = get(port, "/metrics")
    assert resp.status == 200, resp.head
    values = {}
    for line in resp.body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def wait_metric(port, name, pred, timeout=5.0):
    """The scrape in which pred(name's value) holds. A scrape refused
    meanwhile (429 or 503: a connection just closed by the test may still
    hold its slot until the server reads the close) is tried again."""
    deadline = time.monotonic() + timeout * SLOW
    values = {}
    while True:
        try:
            values = scrape(port)
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
            values = None
        if values is not None and (pred(values.get(name, 0)) or time.monotonic() >= deadline):
            break
        time.sleep(0.05)
    assert pred(values.get(name, 0)), f"{name} = {values.get(name)}"
    return values


def ping_pong(port, ref="alive"):
    """A fresh client is served: upgrade, welcome, ping, pong."""
    with RawClient.open(port) as c:
        assert c.request({"type": "ping", "ref": ref}) == {"type": "pong", "ref": ref}


def settle():
    """Lets the workers accept the connections just made: a connect returns
    once the kernel has queued it, before any worker took it."""
    time.sleep(0.3 * SLOW)


def upgrade_status(port, headers=()):
    c = RawClient(port)
    try:
        return c.upgrade("/ws", headers=list(headers))
    finally:
        c.close()


# ---- --rate-limit --------------------------------------------------------------------------------

def test_rate_limit_refuses_past_the_bucket_then_refills(wsfan):
    srv = wsfan("--rate-limit", "5")
    with RawClient.open(srv) as c:
        # One burst of 12: the bucket holds 5, the rest are refused in order,
        # each with its ref, and not run.
        c.send(b"".join(frame(OP_TEXT, cmd({"type": "ping", "ref": i})) for i in range(12)))
        replies = [c.recv_json() for _ in range(12)]
        assert replies[:5] == [{"type": "pong", "ref": i} for i in range(5)], replies
        for i, r in enumerate(replies[5:], 5):
            assert r["type"] == "error" and r["code"] == "rate_limited" and r["ref"] == i, r
            assert "--rate-limit" in r["message"], r
        # A second later the bucket is full again.
        time.sleep(1.1)
        c.send(b"".join(frame(OP_TEXT, cmd({"type": "ping", "ref": i})) for i in range(5)))
        assert [c.recv_json() for _ in range(5)] == [{"type": "pong", "ref": i} for i in range(5)]
    assert scrape(srv.port)["wsfan_commands_rate_limited_total"] == 7


def test_rate_limit_abuse_for_10_seconds_is_closed_with_1008(wsfan):
    """A client that keeps sending at 4 times the rate is refused, then closed
    with 1008 once it has been refused for 10 s; one that stays under the
    rate meanwhile is never refused. About 11 s."""
    srv = wsfan("--rate-limit", "5")
    abuser, polite = RawClient.open(srv), RawClient.open(srv)
    t0 = time.monotonic()
    closed_at, code, reason = None, None, b""
    refused = pongs = polite_pongs = 0
    next_polite = t0
    try:
        while time.monotonic() - t0 < 15 * SLOW and closed_at is None:
            if not abuser.send_quietly(frame(OP_TEXT, cmd({"type": "ping"}))):
                break
            if time.monotonic() >= next_polite:  # 4 a second
                next_polite += 0.25
                assert polite.request({"type": "ping", "ref": "p"}) == {"type": "pong", "ref": "p"}
                polite_pongs += 1
            deadline = time.monotonic() + 0.05
            while closed_at is None:
                try:
                    f = abuser.recv_frame(max(0.001, deadline - time.monotonic()) / SLOW)
                except socket.timeout:
                    break
                if f.opcode == OP_CLOSE:
                    closed_at, code, reason = time.monotonic() - t0, f.close_code, f.close_reason
                elif f.opcode == OP_TEXT:
                    msg = f.json()
                    if msg["type"] == "pong":
                        pongs += 1
                    else:
                        assert msg["code"] == "rate_limited", msg
                        refused += 1
    finally:
        abuser.close()
    assert closed_at is not None, f"still open after {time.monotonic() - t0:.1f}s: {pongs} pongs, {refused} refused"
    assert code == 1008 and reason == b"rate limit exceeded", (code, reason)
    assert 10.0 <= closed_at <= 12.5 * SLOW, f"closed after {closed_at:.1f}s; refused for 10 s should close"
    assert refused > pongs, (refused, pongs)
    assert polite_pongs >= 30, polite_pongs
    assert polite.request({"type": "ping", "ref": "after"}) == {"type": "pong", "ref": "after"}
    polite.close()
    values = scrape(srv.port)
    assert values['wsfan_connections_closed_total{code="1008"}'] == 1, values


# ---- --max-data ------------------------------------------------------------------------------------

def test_max_data_is_too_large_over_websocket_and_413_over_the_api(wsfan):
    srv = wsfan("--max-data", "100")
    with RawClient.open(srv) as c:
        assert c.request({"type": "join", "room": "md", "ref": 1})["type"] == "joined"
        c.send_json({"type": "publish", "room": "md", "data": "x" * 98, "ref": "fits", "echo": False})
        reply = c.recv_json()
        while reply["type"] == "presence_join":
            reply = c.recv_json()
        assert reply == {"type": "ack", "ref": "fits", "offset": reply["offset"]}, reply
        reply = c.request({"type": "publish", "room": "md", "data": "x" * 99, "ref": "big"})
        assert reply["type"] == "error" and reply["code"] == "too_large" and reply["ref"] == "big", reply
        reply = c.request({"type": "send", "user": "u", "data": {"k": "y" * 100}, "ref": "s"})
        assert reply["code"] == "too_large", reply
        assert c.request({"type": "ping", "ref": 2}) == {"type": "pong", "ref": 2}

    def publish(data):
        body = json.dumps({"room": "md", "data": data}).encode()
        head = request_head("POST", "/api/publish", [("Content-Type", "application/json"),
                                                     ("Content-Length", str(len(body))), ("Connection", "close")])
        return http_request(srv.port, head + body)

    resp = publish("x" * 99)
    assert resp.status == 413, resp.head
    assert json.loads(resp.body)["error"] == "too_large", resp.body
    assert publish("x" * 98).status == 200


# ---- connections per address and in all ----------------------------------------------------------

def test_per_ip_limit_answers_429_and_counts_the_http_phase(wsfan):
    srv = wsfan("--max-connections-per-ip", "2")
    ws = RawClient.open(srv)
    idle = socket.create_connection((HOST, srv.port))  # never sends: still in the HTTP phase
    settle()
    try:
        resp = upgrade_status(srv.port)
        assert resp.status == 429, f"a third connection from 127.0.0.1: {resp.status} {resp.head!r}"
        assert_one_line_body(resp)
        assert b"too many connections" in resp.body, resp.body
        assert ws.request({"type": "ping", "ref": 1}) == {"type": "pong", "ref": 1}
    finally:
        idle.close()
    # The idle one's slot comes back when it closes.
    deadline = time.monotonic() + 3 * SLOW
    status = None
    while time.monotonic() < deadline:
        status = upgrade_status(srv.port).status
        if status == 101:
            break
        time.sleep(0.05)
    assert status == 101, status
    ws.close()
    values = wait_metric(srv.port, "wsfan_connections", lambda v: v == 0)
    assert values['wsfan_connections_refused_total{reason="per_ip"}'] >= 1, values


def test_max_connections_counts_connections_still_in_http(wsfan):
    srv = wsfan("--max-connections", "2")
    idle = [socket.create_connection((HOST, srv.port)) for _ in range(2)]
    settle()
    try:
        resp = upgrade_status(srv.port)
        assert resp.status == 503 and resp.header("retry-after") == "5", resp.head
        assert_one_line_body(resp)
    finally:
        for s in idle:
            s.close()
    deadline = time.monotonic() + 3 * SLOW
    while time.monotonic() < deadline and upgrade_status(srv.port).status != 101:
        time.sleep(0.05)
    ping_pong(srv.port)


def test_forwarded_for_from_a_trusted_proxy_counts_per_client(wsfan):
    srv = wsfan("--trusted-proxies", "127.0.0.1", "--max-connections-per-ip", "1")
    held = []
    try:
        # The proxy itself is not limited: three idle connections from it.
        held += [socket.create_connection((HOST, srv.port)) for _ in range(3)]
        settle()
        for addr in ("198.51.100.1", "198.51.100.2"):
            c = RawClient(srv.port)
            held.append(c)
            resp = c.upgrade("/ws", headers=[("X-Forwarded-For", addr)])
            assert resp.status == 101, f"first connection of {addr}: {resp.head!r}"
        # The same client again: over its limit, whatever it forged on the left.
        for xff in ("198.51.100.1", "6.6.6.6, 198.51.100.1", "198.51.100.1:4444"):
            resp = upgrade_status(srv.port, [("X-Forwarded-For", xff)])
            assert resp.status == 429, f"X-Forwarded-For {xff}: {resp.head!r}"
        # A proxy behind the proxy (trusted too) is skipped.
        resp = upgrade_status(srv.port, [("X-Forwarded-For", "198.51.100.2, 127.0.0.1")])
        assert resp.status == 429, resp.head
    finally:
        for h in held:
            h.close()


def test_forwarded_for_from_an_untrusted_peer_is_ignored(wsfan):
    srv = wsfan("--trusted-proxies", "10.0.0.0/8", "--max-connections-per-ip", "2")
    held = []
    try:
        for addr in ("198.51.100.1", "198.51.100.2"):
            c = RawClient(srv.port)
            held.append(c)
            assert c.upgrade("/ws", headers=[("X-Forwarded-For", addr)]).status == 101
        # Counted as 127.0.0.1, the peer: the third is over the limit.
        resp = upgrade_status(srv.port, [("X-Forwarded-For", "198.51.100.3")])
        assert resp.status == 429, resp.head
    finally:
        for h in held:
            h.close()


# ---- clients that do not read --------------------------------------------------------------------

# Memory the server may gain while one client misbehaves, over its RSS
# before: --send-queue-limit (4 MiB) plus room for what else moves. Before
# the limits, 175 KB of pipelined GETs took 58 MB, a ping flood 84 MB.
RSS_GROWTH_MAX = (64 if SANITIZED else 24) * MB


def test_pipelined_requests_from_a_client_that_never_reads_stay_bounded(wsfan):
    srv = wsfan("--workers", "1")
    page = get(srv.port, "/wsfan.js")
    assert page.status == 200
    ping_pong(srv.port)
    rss0 = status_kb(srv.pid, "VmRSS") * 1024
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((HOST, srv.port))
    try:
        req = b"GET /wsfan.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        data = req * (175 * 1024 // len(req))
        s.setblocking(False)
        sent, t0 = 0, time.monotonic()
        while sent < len(data) and time.monotonic() - t0 < 5 * SLOW:
            try:
                sent += s.send(data[sent:sent + 65536])
            except BlockingIOError:
                time.sleep(0.01)
        time.sleep(1.0)
        grown = status_kb(srv.pid, "VmRSS") * 1024 - rss0
        queued = scrape(srv.port)["wsfan_send_queue_bytes"]
        assert queued <= 4 * MB + len(page.head) + len(page.body), f"{queued:.0f} bytes queued for one client"
        assert grown < RSS_GROWTH_MAX, f"RSS grew {grown / MB:.1f} MB for {sent} bytes of pipelined GETs"
        # The others are served meanwhile.
        ping_pong(srv.port)
        assert get(srv.port, "/healthz").status == 200
    finally:
        s.close()
    wait_metric(srv.port, "wsfan_send_queue_bytes", lambda v: v == 0)


def test_slowloris_head_is_cut_off_at_the_handshake_timeout_while_others_are_served(wsfan):
    srv = wsfan("--handshake-timeout", "2")
    slow = RawClient(srv.port)
    slow.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    other = RawClient.open(srv)
    raw = request_head("GET", "/ws", upgrade_headers())
    t0 = time.monotonic()
    status, cut_at = None, None
    try:
        for i in range(min(len(raw) - 1, 80)):  # one byte every 0.1 s: never a whole head in time
            if not slow.send_quietly(raw[i:i + 1]):
                break
            if i % 3 == 0:
                assert other.request({"type": "ping", "ref": i}) == {"type": "pong", "ref": i}
            slow.sock.settimeout(0.1)
            try:
                chunk = slow.sock.recv(4096)
            except socket.timeout:
                continue
            except ConnectionResetError:
                chunk = b""
            cut_at = time.monotonic() - t0
            if chunk.startswith(b"HTTP/1.1 "):
                status = int(chunk[9:12])
            break
    finally:
        slow.close()
    assert cut_at is not None, "a head dribbled for 8 s was never cut off (--handshake-timeout 2)"
    assert status in (None, 408), status
    assert 1.8 <= cut_at <= 3.5 * SLOW, f"cut off after {cut_at:.1f}s with --handshake-timeout 2"
    assert other.request({"type": "ping", "ref": "end"}) == {"type": "pong", "ref": "end"}
    other.close()


def test_ping_flood_from_a_client_that_never_reads_ends_with_1013(wsfan):
    srv = wsfan("--workers", "1")
    ping_pong(srv.port)
    hwm0 = status_kb(srv.pid, "VmHWM") * 1024
    flood = RawClient.open(srv, rcvbuf=4096)
    batch = frame(OP_PING, b"") * 10000
    flood.sock.setblocking(False)
    sent, off, t0 = 0, 0, time.monotonic()
    next_check = t0
    while time.monotonic() - t0 < 8 * SLOW:
        try:
            n = flood.sock.send(batch[off:])
            sent += n
            off = (off + n) % len(batch)
        except BlockingIOError:
            time.sleep(0.01)
        except OSError:
            break
        if time.monotonic() >= next_check:
            next_check += 0.2
            if scrape(srv.port).get('wsfan_connections_closed_total{code="1013"}', 0):
                break
    values = wait_metric(srv.port, 'wsfan_connections_closed_total{code="1013"}', lambda v: v == 1, timeout=10)
    assert values["wsfan_slow_readers_closed_total"] == 1, values
    grown = status_kb(srv.pid, "VmHWM") * 1024 - hwm0
    assert grown < RSS_GROWTH_MAX, f"peak RSS grew {grown / MB:.1f} MB for a ping flood ({sent} bytes)"
    # It ends with the close frame after the pongs that were queued: what
    # the kernel's send buffer took (at most tcp_wmem's maximum, of 2-byte
    # pongs) and the frame the socket had begun.
    with open("/proc/sys/net/ipv4/tcp_wmem") as f:
        max_frames = int(f.read().split()[2]) // 2 + 2
    flood.sock.setblocking(True)
    got_close, deadline = None, time.monotonic() + 30 * SLOW
    try:
        for _ in range(max_frames):
            f = flood.recv_frame(max(0.001, deadline - time.monotonic()) / SLOW)
            if f.opcode == OP_CLOSE:
                got_close = f.close_code
                break
            assert f.opcode == OP_PONG, f
        else:
            raise AssertionError(f"no close frame within {max_frames} frames")
    except PeerClosed:
        pass
    assert got_close in (None, 1013), got_close
    flood.close()
    ping_pong(srv.port)


# ---- the open-file limit ---------------------------------------------------------------------------

def fd_table_size(pid: int) -> int:
    """FDSize of /proc/PID/status: the slots of the process's descriptor table."""
    with open(f"/proc/{pid}/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("FDSize:")))


@pytest.mark.parametrize("max_connections", [3000, None])
def test_descriptor_table_is_sized_at_start(wsfan, max_connections):
    """The descriptor table is sized at start for what --max-connections
    needs, within the open-file limit (raised to the hard one): growing it
    later, with the threads running, stalls the worker for an RCU grace
    period at each doubling."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if max_connections:
        srv, want = wsfan("--max-connections", str(max_connections)), max_connections
    else:
        srv, want = wsfan(), min(hard, 1_000_000)  # the default --max-connections, or the limit
    assert want <= hard, f"the hard open-file limit {hard} is below {want}"
    size = fd_table_size(srv.pid)
    assert want <= size <= 2 * want + 64, f"FDSize {size}, wanted {want} to {2 * want + 64}"


def test_open_file_limit_is_counted_logged_and_does_not_spin(tmp_path):
    """wsfan under RLIMIT_NOFILE 64 (soft and hard): it warns at start that
    --max-connections cannot fit, and connections past the limit are
    refused (closed), counted and logged, with the CPU idle meanwhile."""
    port, log = free_port(), tmp_path / "wsfan-nofile.log"
    limit = 64

    def lower():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    with open(log, "wb") as out:
        proc = subprocess.Popen([wsfan_bin(), "--listen", f"{HOST}:{port}", "--workers", "1"],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=server_env(), preexec_fn=lower)
    socks = []
    try:
        deadline = time.monotonic() + 10 * SLOW
        while True:
            try:
                if get(port, "/healthz", ).status == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert "needs about" in log.read_text() and "--max-connections" in log.read_text(), log.read_text()
        # Twice the limit: the server takes what fits, refuses the rest.
        for _ in range(2 * limit):
            socks.append(socket.create_connection((HOST, port), timeout=5))
        time.sleep(0.5)
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        for s in socks[:10]:  # more keep arriving
            s.close()
        socks[:10] = [socket.create_connection((HOST, port), timeout=5) for _ in range(10)]
        time.sleep(1.0)
        busy = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
        assert busy < 0.3, f"the server used {busy:.0%} of a core while out of descriptors"
        refused = 0
        for s in socks:
            s.setblocking(False)
            try:
                refused += s.recv(1) == b""
            except BlockingIOError:
                pass
            except ConnectionResetError:
                refused += 1
        assert refused > 0, "no connection was refused past the open-file limit"
    finally:
        for s in socks:
            s.close()
    try:
        # Descriptors are free again: /metrics counts what was refused.
        deadline = time.monotonic() + 5 * SLOW
        values = {}
        while time.monotonic() < deadline:
            try:
                values = scrape(port)
                break
            except (OSError, AssertionError, PeerClosed):
                time.sleep(0.1)
        assert values.get('wsfan_connections_refused_total{reason="fd_limit"}', 0) >= refused, values
        text = log.read_text()
        lines = [line for line in text.splitlines() if "accept: Too many open files" in line]
        assert lines, text[-2000:]
        assert len(lines) <= 5 * 4, f"{len(lines)} lines: the log is rate-limited"
        assert "raise the open-file limit" in lines[0]
    finally:
        proc.terminate()
        assert proc.wait(10 * SLOW) == 0, log.read_text()[-2000:]
        assert not sanitizer_report(log.read_text()), log.read_text()[-4000:]
