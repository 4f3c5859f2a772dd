"""TLS (--tls-cert, --tls-key): the one port serves wss:// and https:// only
(docs/protocol.md section 1, docs/security.md). A test CA and server
certificates are made by the openssl CLI; clients are python3-websockets and
http.client over Python's ssl, and the openssl CLI where a client must offer
what Python's ssl refuses to (TLS 1.1).

Covers: WebSocket welcome, join, publish and delivery over wss; /healthz,
/api with a key, /metrics (promtool clean) and /sse over https; --admin-listen
over TLS too; TLS 1.1 refused; ALPN http/1.1 (and a client offering only h2
refused); the certificate reloaded on SIGHUP while a wss client stays
connected (a new client gets the new certificate, the old one keeps
working); a bad certificate at reload keeps the old one; a plain HTTP request
answered 400; a client that says nothing cut by --handshake-timeout; a
fan-out of 500 messages to 20 clients complete and in order; --check-config
loading the files."""

import asyncio
import functools
import http.client
import json
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest
import websockets

from conftest import HOST, SLOW, Server, ServerFactory, free_port, run, run_wsfan
from protocol_client import connect, uniq
from test_config_file import wait_for_log
from test_metrics import promtool_check

KEY = "tls-test-api-key-0123456789"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_cert(d, name, ca="ca", san="DNS:localhost,IP:127.0.0.1"):
    """name.key and name.pem: a P-256 certificate for san (localhost and
    127.0.0.1) signed by the test CA."""
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN=localhost/O={name}", cwd=d)
    (d / "san.ext").write_text(f"subjectAltName={san}\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", f"{name}.pem", cwd=d)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
            "-out", "ca.pem", "-days", "2", "-subj", "/CN=wsfan test CA", cwd=d)
    make_cert(d, "a")
    make_cert(d, "b")
    return d


def client_context(certs, alpn=None, maximum=None):
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if maximum:
        ctx.maximum_version = maximum
    return ctx


class TlsServer(Server):
    """A Server whose port speaks TLS: ready once GET /healthz answers over
    https; url() is wss://; connect_json (conftest) uses client_ssl."""

    def __init__(self, args, env, log_dir, client_ssl):
        self.client_ssl = client_ssl
        super().__init__(args, env, log_dir)

    def url(self, path="/ws", scheme="wss"):
        return super().url(path, scheme)

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.describe()} exited; log:\n{self.log_tail()}"
            try:
                status, _, _ = https(self.port, self.client_ssl, "GET", "/healthz", timeout=1.0)
                if status == 200:
                    return
                last = status
            except OSError as e:
                last = repr(e)
            time.sleep(0.02)
        raise AssertionError(f"{self.describe()}: https /healthz not 200 in {timeout}s ({last}):\n{self.log_tail()}")


@pytest.fixture
def tls_wsfan(tmp_path, certs):
    """tls_wsfan(*args) -> a TlsServer on copies of certificate a (live.pem,
    live.key in tmp_path, which a test may replace before a SIGHUP)."""
    shutil.copy(certs / "a.pem", tmp_path / "live.pem")
    shutil.copy(certs / "a.key", tmp_path / "live.key")
    factory = ServerFactory(tmp_path, functools.partial(TlsServer, client_ssl=client_context(certs)))

    def start(*args, env=None):
        return factory("--tls-cert", tmp_path / "live.pem", "--tls-key", tmp_path / "live.key", *args, env=env)

    start.dir = tmp_path
    yield start
    factory.finalize()


def https(port, ctx, method, path, body=None, headers=None, timeout=5.0):
    conn = http.client.HTTPSConnection(HOST, port, context=ctx, timeout=timeout * SLOW)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(), conn.sock.version()
    finally:
        conn.close()


def peer_cert(port, ctx):
    with socket.create_connection((HOST, port), timeout=5 * SLOW) as raw:
        with ctx.wrap_socket(raw, server_hostname=HOST) as s:
            return s.getpeercert(binary_form=True)


def wait_for_cert(srv, der, timeout=5.0):
    """New handshakes get der: each worker takes the reloaded certificate
    from its inbox a moment after the log line, so two workers may differ
    for that moment."""
    deadline = time.monotonic() + timeout * SLOW
    while peer_cert(srv.port, srv.client_ssl) != der:
        assert time.monotonic() < deadline, "new connections still get the old certificate"
        time.sleep(0.02)
    for _ in range(10):  # and every worker does
        assert peer_cert(srv.port, srv.client_ssl) == der


def pem_der(path):
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def metric(srv, name):
    _, text, _ = https(srv.port, srv.client_ssl, "GET", "/metrics")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


# ---- wss and https ------------------------------------------------------------------------------------------------

def test_wss_welcome_join_publish_and_delivery(tls_wsfan):
    srv = tls_wsfan()
    room = uniq("tls-room")

    async def scenario():
        a, b = await connect(srv, "alice"), await connect(srv, "bob")
        assert a.welcome["user"] == "alice"
        assert a.ws.transport.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
        await a.join(room)
        await b.join(room)
        await a.publish(room, {"text": "over tls"})
        got = await b.recv_until("message", room=room)
        assert got["data"] == {"text": "over tls"}
        await a.close()
        await b.close()

    run(scenario())


def test_https_serves_healthz_api_metrics_and_sse(tls_wsfan):
    srv = tls_wsfan("--api-key", KEY)
    ctx, auth = srv.client_ssl, {"Authorization": f"Bearer {KEY}"}
    status, body, version = https(srv.port, ctx, "GET", "/healthz")
    assert (status, body.strip()) == (200, "ok") and version in ("TLSv1.2", "TLSv1.3")
    assert https(srv.port, ctx, "GET", "/api/stats")[0] == 401
    status, body, _ = https(srv.port, ctx, "GET", "/api/stats", headers=auth)
    assert status == 200 and "connections" in json.loads(body)
    status, text, _ = https(srv.port, ctx, "GET", "/metrics", headers=auth)
    assert status == 200 and "wsfan_tls_handshakes_total" in text
    promtool_check(text)

    # /sse over TLS: the stream's head, then a message published over https.
    with socket.create_connection((HOST, srv.port), timeout=5 * SLOW) as raw:
        with ctx.wrap_socket(raw, server_hostname=HOST) as s:
            s.sendall(b"GET /sse?room=sse-tls HTTP/1.1\r\nHost: x\r\n\r\n")
            buf = b""
            deadline = time.monotonic() + 5 * SLOW
            while b"event: joined" not in buf and time.monotonic() < deadline:
                buf += s.recv(4096)
            assert buf.startswith(b"HTTP/1.1 200") and b"text/event-stream" in buf, buf[:300]
            status, _, _ = https(srv.port, ctx, "POST", "/api/publish", json.dumps({"room": "sse-tls", "data": 7}),
                                 {**auth, "Content-Type": "application/json"})
            assert status == 200
            while b"event: message" not in buf and time.monotonic() < deadline:
                buf += s.recv(4096)
            assert b"event: message" in buf, buf[-500:]


def test_admin_port_speaks_tls_too(tls_wsfan):
    admin = free_port()
    srv = tls_wsfan("--admin-listen", f"{HOST}:{admin}")
    status, text, _ = https(admin, srv.client_ssl, "GET", "/metrics")
    assert status == 200 and "wsfan_tls_handshakes_total" in text
    assert plain_request(admin).startswith(b"HTTP/1.1 400")


# ---- what the port refuses ------------------------------------------------------------------------------------------

def test_tls_1_1_is_refused_and_1_2_accepted(tls_wsfan):
    srv = tls_wsfan()
    # openssl's client, told to offer TLS 1.1 (its own floor lowered): the
    # server answers with the protocol_version alert.
    old = subprocess.run(["openssl", "s_client", "-connect", f"{HOST}:{srv.port}", "-tls1_1", "-cipher",
                          "DEFAULT:@SECLEVEL=0"], input=b"", capture_output=True, timeout=10 * SLOW)
    out = (old.stdout + old.stderr).decode(errors="replace")
    assert old.returncode != 0 and "alert protocol version" in out, out[-2000:]
    new = subprocess.run(["openssl", "s_client", "-connect", f"{HOST}:{srv.port}", "-tls1_2", "-CAfile",
                          str(tls_wsfan.dir / "live.pem")], input=b"", capture_output=True, timeout=10 * SLOW)
    assert b"Protocol  : TLSv1.2" in new.stdout or b"Protocol: TLSv1.2" in new.stdout, new.stdout[-2000:]
    assert metric(srv, 'wsfan_tls_handshake_failures_total{reason="error"}') >= 1


def test_alpn_selects_http_1_1_and_refuses_h2_only(tls_wsfan, certs):
    srv = tls_wsfan()
    with socket.create_connection((HOST, srv.port), timeout=5 * SLOW) as raw:
        with client_context(certs, alpn=["h2", "http/1.1"]).wrap_socket(raw, server_hostname=HOST) as s:
            assert s.selected_alpn_protocol() == "http/1.1"
    with socket.create_connection((HOST, srv.port), timeout=5 * SLOW) as raw:
        with pytest.raises(ssl.SSLError, match="NO_APPLICATION_PROTOCOL|no application protocol"):
            client_context(certs, alpn=["h2"]).wrap_socket(raw, server_hostname=HOST)


def plain_request(port):
    """A plain-text GET /healthz; everything the server sent until it closed."""
    with socket.create_connection((HOST, port), timeout=5 * SLOW) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        out = b""
        while chunk := s.recv(4096):
            out += chunk
        return out


def test_plain_http_request_gets_400_saying_the_port_speaks_tls(tls_wsfan):
    srv = tls_wsfan()
    out = plain_request(srv.port)
    assert out.startswith(b"HTTP/1.1 400 "), out
    assert out.endswith(b"\r\n\r\nthis port speaks TLS only: use https:// or wss://\n"), out
    assert metric(srv, 'wsfan_tls_handshake_failures_total{reason="plaintext_http"}') == 1


def test_silent_client_is_cut_by_the_handshake_timeout(tls_wsfan):
    srv = tls_wsfan("--handshake-timeout", "1")
    with socket.create_connection((HOST, srv.port), timeout=10 * SLOW) as s:
        start = time.monotonic()
        assert s.recv(100) == b""
        took = time.monotonic() - start
    assert 0.9 <= took <= 1.0 + 1.5 * SLOW, f"cut after {took:.2f}s, --handshake-timeout 1"
    assert metric(srv, 'wsfan_tls_handshake_failures_total{reason="timeout"}') == 1


# ---- certificate reload ----------------------------------------------------------------------------------------------

def test_reload_serves_the_new_certificate_and_keeps_old_connections(tls_wsfan, certs):
    srv = tls_wsfan()
    room = uniq("reload")
    live = tls_wsfan.dir
    assert peer_cert(srv.port, srv.client_ssl) == pem_der(certs / "a.pem")

    async def scenario():
        old = await connect(srv, "old")
        await old.join(room)
        shutil.copy(certs / "b.pem", live / "live.pem")
        shutil.copy(certs / "b.key", live / "live.key")
        srv.signal(signal.SIGHUP)
        await asyncio.to_thread(wait_for_log, srv, "TLS certificate loaded from")
        await asyncio.to_thread(wait_for_cert, srv, pem_der(certs / "b.pem"))
        new = await connect(srv, "new")
        await new.join(room)
        # The connection opened on the old certificate still works both ways.
        await old.publish(room, "from-old")
        assert (await new.recv_until("message", room=room))["data"] == "from-old"
        await new.publish(room, "from-new")
        msgs = [(await old.recv_until("message", room=room))["data"] for _ in range(2)]
        assert msgs == ["from-old", "from-new"]
        await old.close()
        await new.close()

    run(scenario())


def test_bad_certificate_at_reload_keeps_the_old_one(tls_wsfan, certs):
    srv = tls_wsfan()
    live = tls_wsfan.dir
    (live / "live.pem").write_text("not a certificate\n")
    srv.signal(signal.SIGHUP)
    wait_for_log(srv, "cannot load the certificate chain")
    assert "keeping the certificate in use" in srv.log()
    assert peer_cert(srv.port, srv.client_ssl) == pem_der(certs / "a.pem")
    # A key that belongs to another certificate: refused the same way.
    shutil.copy(certs / "a.pem", live / "live.pem")
    shutil.copy(certs / "b.key", live / "live.key")
    srv.signal(signal.SIGHUP)
    wait_for_log(srv, "does not match the certificate of")
    assert peer_cert(srv.port, srv.client_ssl) == pem_der(certs / "a.pem")
    assert https(srv.port, srv.client_ssl, "GET", "/healthz")[0] == 200


def test_check_config_loads_the_certificate_and_key(certs):
    ok = run_wsfan("--tls-cert", certs / "a.pem", "--tls-key", certs / "a.key", "--check-config")
    assert ok.returncode == 0 and ok.stdout.strip() == "configuration OK", ok.stderr
    bad = run_wsfan("--tls-cert", certs / "a.pem", "--tls-key", certs / "b.key", "--check-config")
    assert bad.returncode == 2
    assert bad.stderr.startswith("wsfan: --tls-cert: ") and "b.key does not match the certificate of" in bad.stderr
    half = run_wsfan("--tls-cert", certs / "a.pem", "--check-config")
    assert half.returncode == 2 and "--tls-cert: needs --tls-key as well" in half.stderr


# ---- fan-out -----------------------------------------------------------------------------------------------------------

def test_large_fanout_arrives_complete_and_in_order(tls_wsfan):
    srv = tls_wsfan("--rate-limit", "0")
    room, n_clients, n_msgs = uniq("fan"), 20, 500

    async def receive_all(c):
        got = []
        while len(got) < n_msgs:
            m = json.loads(await asyncio.wait_for(c.ws.recv(), 20 * SLOW))
            if m["type"] == "message":
                got.append(m["data"]["n"])
        return got

    async def scenario():
        receivers = [await connect(srv, f"r{i}") for i in range(n_clients)]
        for r in receivers:
            await r.join(room)
        publisher = await connect(srv, "publisher")
        await publisher.join(room)
        tasks = [asyncio.create_task(receive_all(r)) for r in receivers]
        pad = "x" * 200
        for i in range(n_msgs):
            await publisher.send({"type": "publish", "room": room, "data": {"n": i, "pad": pad}})
        results = await asyncio.gather(*tasks)
        for r, got in zip(receivers, results):
            assert got == list(range(n_msgs)), f"{r.label}: {got[:20]}..."
        for c in receivers + [publisher]:
            await c.close()

    run(scenario(), timeout=120)


async def small_window_client(srv, user, rcvbuf=4096):
    """A wss client whose socket takes little at a time, so that the server
    meets a full socket and goes through its slow path (uv_write). Without
    permessage-deflate: the padded test messages would compress to almost
    nothing."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.connect((HOST, srv.port))
    raw.setblocking(False)
    ws = await websockets.connect(srv.url(f"/ws?user={user}"), sock=raw, ssl=srv.client_ssl,
                                  server_hostname=HOST, max_size=None, max_queue=1, ping_interval=None,
                                  compression=None)
    assert json.loads(await ws.recv())["type"] == "welcome"
    return ws


def test_slow_reader_over_tls_gets_everything_in_order(tls_wsfan):
    srv = tls_wsfan("--rate-limit", "0", "--send-queue-limit", "32m")
    room, n_msgs, pad = uniq("slow"), 300, "y" * 20000

    async def scenario():
        slow = await small_window_client(srv, "slow")
        await slow.send(json.dumps({"type": "join", "room": room}))
        assert json.loads(await slow.recv())["type"] == "joined"
        publisher = await connect(srv, "publisher")
        await publisher.join(room)
        for i in range(n_msgs):
            await publisher.send({"type": "publish", "room": room, "data": {"n": i, "pad": pad}})
        got = []
        while len(got) < n_msgs:
            m = json.loads(await asyncio.wait_for(slow.recv(), 20 * SLOW))
            if m["type"] == "message":
                got.append(m["data"]["n"])
                await asyncio.sleep(0.002)
        assert got == list(range(n_msgs))
        await slow.close()
        await publisher.close()

    run(scenario(), timeout=120)


def publish_over_https(srv, room, n, pad):
    """n messages to room through POST /api/publish on one keep-alive https connection."""
    conn = http.client.HTTPSConnection(HOST, srv.port, context=srv.client_ssl, timeout=10 * SLOW)
    try:
        for i in range(n):
            conn.request("POST", "/api/publish", json.dumps({"room": room, "data": {"n": i, "pad": pad}}),
                         {"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 200, resp.read()
            resp.read()
    finally:
        conn.close()


def test_reader_that_stops_reading_is_closed_with_1013_over_tls(tls_wsfan):
    srv = tls_wsfan("--rate-limit", "0", "--send-queue-limit", "256k")
    room, pad = uniq("stuck"), "z" * 20000

    async def scenario():
        stuck = await small_window_client(srv, "stuck")
        await stuck.send(json.dumps({"type": "join", "room": room}))
        assert json.loads(await stuck.recv())["type"] == "joined"
        await asyncio.to_thread(publish_over_https, srv, room, 400, pad)  # 8 MB
        deadline = time.monotonic() + 10 * SLOW
        while metric(srv, "wsfan_slow_readers_closed_total") < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert metric(srv, "wsfan_slow_readers_closed_total") == 1
        stuck.transport.abort()

    run(scenario(), timeout=60)
