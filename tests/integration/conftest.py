"""Shared helpers for wsfan's integration tests (real sockets, real clients).

What is here:
- free_port(), run_wsfan() for one-shot CLI runs, and the `wsfan` / `wsfan_module`
  fixtures: factories that start build/wsfan (or $WSFAN_BIN) on 127.0.0.1 and,
  at teardown, stop every server with SIGTERM and assert that it exited 0 and
  that its log holds no sanitizer report.
- http_request()/http_get() and request_head() for plain HTTP.
- frame() and RawClient: hand-made WebSocket frames over a raw socket, for what
  a well-behaved library refuses to send (unmasked frames, bad lengths, ...).
- json_client() and run(): a JSON-level client on python3-websockets (asyncio;
  the sync client does not exist in websockets 10.4, pytest-asyncio is absent).
- Server.kill(): SIGKILL on purpose; the teardown then expects -9, not 0.
- The `engine` fixture (module scope, params "memory" and "redis"): the
  room, history and presence tests take it to run once on each engine, and
  start their servers with engine.node(factory, *args) or a server of
  several nodes with engine.nodes(factory, n, *args) (see Engine); a test
  marked @engine_independent (what the parser refuses) runs on memory only.
- For the Redis engines (test_redis_*.py): the `redis_factory` /
  `redis_factory_module` / `redis_server` fixtures (Debian's redis-server on a
  free loopback port, --save '' --appendonly no, stopped by PID; kill() and
  restart() on the same port), redis_node() (wsfan with --redis and
  --node-id, waiting until it is connected), readyz(), await_ready(),
  wait_until()/await_until(), numsub() and publish_many(). python3-redis is
  imported only when used. The `proxies` fixture makes TcpProxy instances
  between a node and its Redis, which a test turns down (reset) or into a
  black hole (a partition: open, silent).

Test files import these with `from conftest import ...`.
Every wait is bounded in time; every loop is bounded in count.
"""

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import os
from signal import SIGKILL, SIGTERM
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import NamedTuple, Optional

import pytest
import websockets

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"

# Under ASan/UBSan everything is slower: scale the generous upper bounds.
SANITIZED = os.environ.get("WSFAN_SANITIZED", "") not in ("", "0")
SLOW = 2.0 if SANITIZED else 1.0

SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:")

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

RSV1, RSV2, RSV3 = 4, 2, 1  # values for frame(rsv=...)


def wsfan_bin() -> str:
    return os.environ.get("WSFAN_BIN") or str(REPO / "build" / "wsfan")


def repo_version() -> str:
    return (REPO / "VERSION").read_text().strip()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def server_env(env: Optional[dict] = None) -> dict:
    """The test process environment without any WSFAN_* setting (so that the
    runner's WSFAN_BIN/WSFAN_SANITIZED never reach the server), plus env."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("WSFAN_")}
    out.update(env or {})
    return out


def sanitizer_report(text: str) -> Optional[str]:
    for marker in SANITIZER_MARKERS:
        if marker in text:
            return marker
    return None


def run_wsfan(*args, env: Optional[dict] = None, timeout: float = 10.0) -> subprocess.CompletedProcess:
    """Runs wsfan to completion (for --help, --version, bad options).
    Fails the test (rather than hanging) if it is still running after timeout."""
    try:
        return subprocess.run([wsfan_bin(), *args], env=server_env(env), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout * SLOW)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"wsfan {' '.join(args)} (env {env}) still running after {timeout * SLOW:.0f}s; "
                    f"it should have exited. stdout={e.stdout!r} stderr={e.stderr!r}")


# ---- plain HTTP --------------------------------------------------------------

class HttpResponse(NamedTuple):
    status: int
    reason: str
    headers: dict   # lower-cased names; repeated headers joined with ", "
    body: bytes
    head: bytes     # the raw head, for messages

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name.lower())


def parse_http_head(head: bytes) -> HttpResponse:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise AssertionError(f"not an HTTP/1.x status line: {lines[0]!r} (head {head[:300]!r})")
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        assert sep, f"malformed header line {line!r} in {head[:300]!r}"
        name = name.strip().lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return HttpResponse(int(parts[1]), parts[2] if len(parts) > 2 else "", headers, b"", head)


def request_head(method: str = "GET", path: str = "/", headers=None, http_version: str = "1.1") -> bytes:
    """A request head; headers is a list of (name, value) pairs, sent in order."""
    lines = [f"{method} {path} HTTP/{http_version}"]
    have_host = False
    for name, value in headers or []:
        have_host |= name.lower() == "host"
        lines.append(f"{name}: {value}")
    if not have_host:
        lines.insert(1, f"Host: {HOST}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def ws_key(nbytes: int = 16) -> str:
    return base64.b64encode(os.urandom(nbytes)).decode()


def ws_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def upgrade_headers(key: Optional[str] = None, protocols: Optional[str] = None, version: Optional[str] = "13",
                    extra=None, omit=(), replace: Optional[dict] = None):
    """Header pairs of a valid client upgrade request, with changes: omit names,
    replace values ({name: value}), add extra pairs at the end."""
    pairs = [("Host", f"{HOST}"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
             ("Sec-WebSocket-Key", key if key is not None else ws_key())]
    if version is not None:
        pairs.append(("Sec-WebSocket-Version", version))
    if protocols is not None:
        pairs.append(("Sec-WebSocket-Protocol", protocols))
    omit_l = {o.lower() for o in omit}
    repl = {k.lower(): v for k, v in (replace or {}).items()}
    pairs = [(n, repl.get(n.lower(), v)) for n, v in pairs if n.lower() not in omit_l]
    return pairs + list(extra or [])


def _read_http_response(sock: socket.socket, buf: bytearray, deadline: float, with_body: bool) -> HttpResponse:
    """Reads one response head from sock (buf holds bytes already read and keeps
    what follows the response). The body is read by Content-Length, or to EOF
    when there is none."""
    eof = False
    while b"\r\n\r\n" not in buf:
        assert len(buf) < 65536, f"response head too long: {bytes(buf[:300])!r}"
        chunk = _recv_some(sock, deadline)
        if not chunk:
            raise PeerClosed(f"connection closed before a complete response head; got {bytes(buf)!r}")
        buf += chunk
    end = buf.index(b"\r\n\r\n") + 4
    resp = parse_http_head(bytes(buf[:end]))
    del buf[:end]
    if not with_body or resp.status == 101 or resp.status in (204, 304):
        return resp
    clen = resp.header("content-length")
    if clen is not None:
        n = int(clen)
        while len(buf) < n:
            chunk = _recv_some(sock, deadline)
            if not chunk:
                break
            buf += chunk
        body = bytes(buf[:n])
        del buf[:n]
    else:
        while not eof:
            chunk = _recv_some(sock, deadline)
            eof = not chunk
            buf += chunk
        body = bytes(buf)
        del buf[:]
    return resp._replace(body=body)


def _recv_some(sock: socket.socket, deadline: float) -> bytes:
    """One recv bounded by deadline; b"" on EOF or reset; raises socket.timeout."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise socket.timeout("deadline passed")
    sock.settimeout(remaining)
    try:
        return sock.recv(65536)
    except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
        return b""


def http_request(port: int, raw: bytes, timeout: float = 5.0, count: int = 1):
    """Sends raw bytes on a new connection and returns the first response, or
    a list of the first count responses (for pipelined requests). A body is
    read by Content-Length (to EOF without one); 101/204/304 have none."""
    deadline = time.monotonic() + timeout * SLOW
    with socket.create_connection((HOST, port), timeout=timeout * SLOW) as s:
        try:
            s.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before reading everything
        buf = bytearray()
        out = [_read_http_response(s, buf, deadline, with_body=True) for _ in range(count)]
        return out[0] if count == 1 else out


def http_get(port: int, path: str, headers=None, timeout: float = 5.0) -> HttpResponse:
    hdrs = list(headers or []) + [("Connection", "close")]
    return http_request(port, request_head("GET", path, hdrs), timeout)


def assert_one_line_body(resp: HttpResponse):
    text = resp.body.decode("utf-8", "replace").strip()
    assert text, f"expected a one-line body with the {resp.status} response, got an empty body; head {resp.head!r}"
    assert "\n" not in text, f"expected a one-line body, got {resp.body!r}"


# ---- the server process ----------------------------------------------------------

class Server:
    """One running wsfan, started with --listen 127.0.0.1:<free port> plus args.
    stdout and stderr go to one log file."""

    def __init__(self, args, env: Optional[dict], log_dir: Path, ready_timeout: float = 10.0):
        self.port = free_port()
        self.args = ["--listen", f"{HOST}:{self.port}", *args]
        self.env = env
        self.log_path = log_dir / f"wsfan-{self.port}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([wsfan_bin(), *self.args], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT, env=server_env(env))
        self.returncode: Optional[int] = None
        self._wait_ready(ready_timeout * SLOW)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str = "/ws", scheme: str = "ws") -> str:
        return f"{scheme}://{HOST}:{self.port}{path}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-n:])

    def describe(self) -> str:
        return f"wsfan {' '.join(self.args)} (pid {self.pid}, env {self.env})"

    def _wait_ready(self, timeout: float):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                raise ServerStartError(f"{self.describe()} exited with {self.returncode} before answering "
                                       f"/healthz; log:\n{self.log_tail()}")
            try:
                resp = http_get(self.port, "/healthz", timeout=1.0)
                if resp.status == 200:
                    return
                last = f"status {resp.status}"
            except (OSError, PeerClosed, AssertionError) as e:
                last = repr(e)
            time.sleep(0.02)
        self.proc.kill()
        self.proc.wait(5)
        self.returncode = self.proc.returncode
        raise ServerStartError(f"{self.describe()}: GET /healthz did not answer 200 within {timeout:.0f}s "
                               f"(last: {last}); log:\n{self.log_tail()}")

    def signal(self, sig=SIGTERM):
        """Sends sig to the server's PID (never by name)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 10.0) -> int:
        """Waits for exit; on timeout kills with SIGKILL and fails."""
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            self.returncode = self.proc.returncode
            raise AssertionError(f"{self.describe()} did not exit within {timeout:.1f}s; killed it. "
                                 f"log:\n{self.log_tail()}")
        return self.returncode

    def stop(self, sig=SIGTERM, timeout: float = 10.0) -> int:
        """Sends sig and returns the exit status (fails if it does not exit in time)."""
        if self.proc.poll() is None:
            self.signal(sig)
        return self.wait(timeout * SLOW)

    def kill(self, timeout: float = 10.0) -> int:
        """SIGKILL by PID (a crash on purpose): the teardown then expects the
        status of a SIGKILL instead of 0."""
        self.killed = True
        return self.stop(SIGKILL, timeout)

    def check_clean_exit(self):
        """The teardown assertion: exit status 0 (or killed by SIGKILL after
        kill()) and a sanitizer-clean log."""
        if getattr(self, "killed", False):
            assert self.returncode == -9, (f"{self.describe()} was killed with SIGKILL but exited with "
                                           f"{self.returncode}; log:\n{self.log_tail()}")
        else:
            assert self.returncode == 0, (f"{self.describe()} exited with status {self.returncode}, expected 0; "
                                          f"log:\n{self.log_tail()}")
        marker = sanitizer_report(self.log())
        assert marker is None, f"{self.describe()}: log contains {marker!r}:\n{self.log_tail(80)}"

    def close_log(self):
        with contextlib.suppress(Exception):
            self._log.close()


class ServerStartError(AssertionError):
    pass


class ServerFactory:
    """wsfan(*args, env=None) -> Server. Keeps every server it started and, at
    finalize(), stops the running ones with SIGTERM and checks all of them.
    server_class: Server, or a subclass (test_tls.py's TlsServer)."""

    def __init__(self, log_dir: Path, server_class=None):
        self.log_dir = log_dir
        self.server_class = server_class or Server
        self.servers = []

    def __call__(self, *args, env: Optional[dict] = None) -> Server:
        last = None
        for _ in range(3):  # a port grabbed between free_port() and bind: retry
            try:
                srv = self.server_class([str(a) for a in args], env, self.log_dir)
            except ServerStartError as e:
                last = e
                if "in use" in str(e).lower():
                    continue
                raise
            self.servers.append(srv)
            return srv
        raise last

    def finalize(self):
        errors = []
        for srv in self.servers:
            try:
                if srv.returncode is None:
                    srv.stop(SIGTERM, timeout=10)
                srv.check_clean_exit()
            except AssertionError as e:
                errors.append(str(e))
            finally:
                srv.close_log()
        self.servers = []
        if errors:
            raise AssertionError("\n\n".join(errors))


@pytest.fixture
def wsfan(tmp_path):
    """Factory of servers for one test: srv = wsfan("--heartbeat", "1", env={...})."""
    factory = ServerFactory(tmp_path)
    yield factory
    factory.finalize()


@pytest.fixture(scope="module")
def wsfan_module(tmp_path_factory):
    """Like wsfan, but the servers live for the whole test module."""
    factory = ServerFactory(tmp_path_factory.mktemp("wsfan"))
    yield factory
    factory.finalize()


# ---- WebSocket frames ----------------------------------------------------------

def mask_bytes(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def frame(opcode: int, payload=b"", fin: bool = True, mask: bool = True, rsv: int = 0,
          length_form: Optional[int] = None, length: Optional[int] = None,
          mask_key: Optional[bytes] = None) -> bytes:
    """A client frame. rsv is the 3-bit RSV field (RSV1=4, RSV2=2, RSV3=1).
    length_form forces the length encoding (7, 16 or 64 bits: non-minimal
    forms allowed); length overrides the declared payload length (to lie, e.g.
    set the 64th bit) while payload is what is actually sent."""
    if isinstance(payload, str):
        payload = payload.encode()
    declared = len(payload) if length is None else length
    form = length_form or (7 if declared < 126 else 16 if declared < 65536 else 64)
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0x0F)
    mbit = 0x80 if mask else 0
    if form == 7:
        assert declared < 126, "7-bit form holds at most 125"
        head = bytes([b0, mbit | declared])
    elif form == 16:
        head = bytes([b0, mbit | 126]) + struct.pack("!H", declared)
    elif form == 64:
        head = bytes([b0, mbit | 127]) + struct.pack("!Q", declared)
    else:
        raise ValueError(f"length_form must be 7, 16 or 64, not {form}")
    if not mask:
        return head + payload
    key = mask_key if mask_key is not None else os.urandom(4)
    return head + key + mask_bytes(payload, key)


def close_payload(code: Optional[int] = None, reason=b"") -> bytes:
    if isinstance(reason, str):
        reason = reason.encode()
    if code is None:
        return b""
    return struct.pack("!H", code) + reason


def cmd(obj) -> bytes:
    """A command as compact UTF-8 JSON (non-ASCII kept as UTF-8, not \\u escapes)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class Frame(NamedTuple):
    fin: bool
    rsv: int
    opcode: int
    payload: bytes
    masked: bool

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8")

    def json(self):
        return json.loads(self.payload)

    @property
    def close_code(self) -> Optional[int]:
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> bytes:
        return self.payload[2:]

    def __repr__(self):
        p = self.payload if len(self.payload) <= 80 else self.payload[:80] + b"..."
        return f"Frame(op={self.opcode:#x}, fin={self.fin}, rsv={self.rsv}, len={len(self.payload)}, {p!r})"


class PeerClosed(Exception):
    """The server closed the TCP connection (EOF or reset)."""


class RawClient:
    """A WebSocket client over a raw socket: the upgrade by hand, frames built
    by frame(), server frames parsed (and checked to be unmasked)."""

    def __init__(self, port: int, timeout: float = 5.0, rcvbuf: Optional[int] = None):
        self.port = port
        self.timeout = timeout * SLOW
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(self.timeout)
        self.sock.connect((HOST, port))
        self.buf = bytearray()
        self.welcome = None
        self.response: Optional[HttpResponse] = None

    @classmethod
    def open(cls, server, path: str = "/ws", **kw) -> "RawClient":
        """Connects, upgrades (asserting 101) and reads the welcome frame."""
        port = server.port if isinstance(server, Server) else server
        ctor = {k: kw.pop(k) for k in ("timeout", "rcvbuf") if k in kw}
        c = cls(port, **ctor)
        resp = c.upgrade(path, **kw)
        assert resp.status == 101, f"upgrade of {path} answered {resp.status}, expected 101: {resp.head!r}"
        f = c.recv_frame()
        assert f.opcode == OP_TEXT, f"first frame after the upgrade should be the text welcome, got {f!r}"
        c.welcome = f.json()
        assert c.welcome.get("type") == "welcome", f"first frame should be the welcome, got {c.welcome!r}"
        return c

    # -- sending

    def send(self, data: bytes):
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    def send_quietly(self, data: bytes) -> bool:
        """Sends, ignoring a server that has already closed. True if sent."""
        try:
            self.send(data)
            return True
        except (OSError, socket.timeout):
            return False

    def send_bytewise(self, data: bytes, delay: float = 0.001, max_bytes: int = 8192):
        """One byte per send() with TCP_NODELAY, to test incremental parsing."""
        assert len(data) <= max_bytes, "bytewise sends are bounded"
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(data)):
            self.sock.sendall(data[i:i + 1])
            if delay:
                time.sleep(delay)

    def send_frame(self, opcode: int, payload=b"", **kw):
        self.send(frame(opcode, payload, **kw))

    def send_json(self, obj):
        self.send_frame(OP_TEXT, cmd(obj))

    def send_close(self, code: Optional[int] = None, reason=b"") -> bool:
        return self.send_quietly(frame(OP_CLOSE, close_payload(code, reason)))

    # -- HTTP

    def upgrade(self, path: str = "/ws", key: Optional[str] = None, protocols: Optional[str] = None,
                version: Optional[str] = "13", headers=None, omit=(), replace=None, method: str = "GET",
                bytewise: bool = False, then: bytes = b"") -> HttpResponse:
        """Sends an upgrade request (then bytes right after it in the same send)
        and reads the response head. On 101 the bytes after the head stay in
        self.buf for recv_frame(); otherwise the body is read too."""
        self.key = key if key is not None else ws_key()
        pairs = upgrade_headers(self.key, protocols, version, headers, omit, replace)
        raw = request_head(method, path, pairs) + then
        if bytewise:
            self.send_bytewise(raw, delay=0.002)
        else:
            self.send(raw)
        return self.read_http_response()

    def read_http_response(self, timeout: Optional[float] = None) -> HttpResponse:
        deadline = time.monotonic() + (timeout * SLOW if timeout else self.timeout)
        resp = _read_http_response(self.sock, self.buf, deadline, with_body=False)
        if resp.status != 101:
            clen = int(resp.header("content-length") or 0)
            while len(self.buf) < clen:
                chunk = _recv_some(self.sock, deadline)
                if not chunk:
                    break
                self.buf += chunk
            resp = resp._replace(body=bytes(self.buf[:clen]))
            del self.buf[:clen]
        self.response = resp
        return resp

    # -- receiving

    def _fill(self, deadline: float):
        chunk = _recv_some(self.sock, deadline)
        if not chunk:
            raise PeerClosed(f"server closed the TCP connection (buffered: {bytes(self.buf[:200])!r})")
        self.buf += chunk

    def _parse_frame(self) -> Optional[Frame]:
        b = self.buf
        if len(b) < 2:
            return None
        masked = bool(b[1] & 0x80)
        n = b[1] & 0x7F
        pos = 2
        if n == 126:
            if len(b) < 4:
                return None
            n = struct.unpack("!H", b[2:4])[0]
            pos = 4
        elif n == 127:
            if len(b) < 10:
                return None
            n = struct.unpack("!Q", b[2:10])[0]
            pos = 10
        key = None
        if masked:
            if len(b) < pos + 4:
                return None
            key = bytes(b[pos:pos + 4])
            pos += 4
        if len(b) < pos + n:
            return None
        payload = bytes(b[pos:pos + n])
        if key:
            payload = mask_bytes(payload, key)
        f = Frame(bool(b[0] & 0x80), (b[0] >> 4) & 7, b[0] & 0x0F, payload, masked)
        del b[:pos + n]
        return f

    def recv_frame(self, timeout: Optional[float] = None) -> Frame:
        """The next server frame. Raises PeerClosed on EOF, socket.timeout."""
        deadline = time.monotonic() + (timeout * SLOW if timeout else self.timeout)
        while True:
            f = self._parse_frame()
            if f is not None:
                assert not f.masked, f"server frames must not be masked: {f!r}"
                assert f.rsv == 0, f"server frame has RSV bits set: {f!r}"
                return f
            self._fill(deadline)

    def recv_data(self, timeout: Optional[float] = None, answer_pings: bool = True) -> Frame:
        """The next data frame; pings are answered (or ignored), pongs skipped.
        A close frame fails the test."""
        deadline = time.monotonic() + (timeout * SLOW if timeout else self.timeout)
        for _ in range(10000):
            f = self.recv_frame(max(0.001, deadline - time.monotonic()) / SLOW)
            if f.opcode == OP_PING:
                if answer_pings:
                    self.send_frame(OP_PONG, f.payload)
                continue
            if f.opcode == OP_PONG:
                continue
            assert f.opcode != OP_CLOSE, (f"server closed with {f.close_code} {f.close_reason!r} "
                                          f"while a data frame was expected")
            return f
        raise AssertionError("too many control frames")

    def recv_json(self, timeout: Optional[float] = None):
        f = self.recv_data(timeout)
        assert f.opcode == OP_TEXT and f.fin, f"expected one final text frame, got {f!r}"
        return f.json()

    def request(self, obj, timeout: Optional[float] = None):
        self.send_json(obj)
        return self.recv_json(timeout)

    def read_until_close(self, timeout: Optional[float] = None, max_frames: int = 100000):
        """Reads frames until the server's close frame. Returns (code or None,
        reason, frames received before it). Raises PeerClosed if TCP closes
        first, socket.timeout if nothing closes."""
        deadline = time.monotonic() + (timeout * SLOW if timeout else self.timeout)
        before = []
        for _ in range(max_frames):
            f = self.recv_frame(max(0.001, deadline - time.monotonic()) / SLOW)
            if f.opcode == OP_CLOSE:
                return f.close_code, f.close_reason, before
            before.append(f)
        raise AssertionError(f"no close frame within {max_frames} frames")

    def wait_eof(self, timeout: float = 3.0) -> bool:
        """True when the server closes TCP within timeout (bytes are dropped)."""
        deadline = time.monotonic() + timeout * SLOW
        try:
            for _ in range(100000):
                if not _recv_some(self.sock, deadline):
                    return True
        except socket.timeout:
            return False
        return False

    def expect_close(self, code, timeout: Optional[float] = None, allow_data: bool = False,
                     reply: bool = True, what: str = ""):
        """Asserts the server sends a close frame with code (an int, a set of
        ints, None for an empty payload), answers with a close frame, and
        asserts the server then closes TCP. Returns the close reason."""
        codes = code if isinstance(code, (set, frozenset, tuple, list)) else {code}
        what = f" after {what}" if what else ""
        try:
            got, reason, before = self.read_until_close(timeout)
        except PeerClosed:
            raise AssertionError(f"expected close {sorted(codes, key=str)}{what}, but the server closed TCP "
                                 f"without a close frame")
        except socket.timeout:
            raise AssertionError(f"expected close {sorted(codes, key=str)}{what}, but nothing closed within "
                                 f"{(timeout or self.timeout / SLOW) * SLOW:.1f}s")
        data = [f for f in before if f.opcode not in (OP_PING, OP_PONG)]
        assert got in codes, f"expected close {sorted(codes, key=str)}{what}, got close {got} {reason!r}"
        if not allow_data:
            assert not data, f"server sent data before closing{what} (it processed the bad input?): {data!r}"
        if reply:
            self.send_close(got if got not in (None, 1005) else None)
        assert self.wait_eof(3.0), f"server sent close {got}{what} but did not close TCP within {3 * SLOW:.0f}s"
        self.close()  # as a real client does on EOF, so the server need not linger
        return reason

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---- JSON-level client on python3-websockets ----------------------------------------

class JsonClient:
    """A connected websockets client that speaks JSON; .welcome is the first frame."""

    def __init__(self, ws, welcome):
        self.ws = ws
        self.welcome = welcome

    @property
    def subprotocol(self):
        return self.ws.subprotocol

    async def send(self, obj):
        await self.ws.send(obj if isinstance(obj, str) else json.dumps(obj))

    async def recv(self, timeout: float = 5.0):
        msg = await asyncio.wait_for(self.ws.recv(), timeout * SLOW)
        assert isinstance(msg, str), f"expected a text frame, got binary {msg[:80]!r}"
        return json.loads(msg)

    async def request(self, obj, timeout: float = 5.0):
        await self.send(obj)
        return await self.recv(timeout)


async def connect_json(server, path: str = "/ws", subprotocols=None, **kw) -> JsonClient:
    opts = dict(ping_interval=None, open_timeout=10 * SLOW, close_timeout=5 * SLOW, max_size=None)
    if getattr(server, "client_ssl", None):  # a server over TLS (test_tls.py)
        opts["ssl"] = server.client_ssl
    opts.update(kw)
    ws = await websockets.connect(server.url(path), subprotocols=subprotocols, **opts)
    try:
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 5 * SLOW))
    except BaseException:
        await ws.close()
        raise
    assert welcome.get("type") == "welcome", f"first frame should be the welcome, got {welcome!r}"
    return JsonClient(ws, welcome)


@contextlib.asynccontextmanager
async def json_client(server, path: str = "/ws", subprotocols=None, **kw):
    """async with json_client(srv, "/ws?user=alice") as c: pong = await c.request({...})"""
    c = await connect_json(server, path, subprotocols, **kw)
    try:
        yield c
    finally:
        await c.ws.close()


def run(coro, timeout: float = 30.0):
    """Runs a coroutine from a plain test function, bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, timeout * SLOW))


# ---- Redis: a real redis-server for the tests of the Redis engines (test_redis_*.py) ----

REDIS_SERVER_BIN = "/usr/bin/redis-server"


def redis_lib():
    """Debian's python3-redis, imported on first use so that the tests that do
    not use Redis never need it."""
    import redis
    return redis


class RedisServer:
    """One redis-server on 127.0.0.1:<free port>, without persistence
    (--save '' --appendonly no), with args added to its command line (say a
    tls-port). kill() is SIGKILL by PID; restart() starts a new one on the
    same port (empty: nothing was persisted)."""

    def __init__(self, log_dir: Path, port: Optional[int] = None, ready_timeout: float = 10.0, args=()):
        self.port = port or free_port()
        self.args = list(args)
        self.log_dir = log_dir
        self.proc: Optional[subprocess.Popen] = None
        self.log_paths = []
        self._log = None
        self._clients = []
        self.start(ready_timeout)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0):
        assert not self.alive(), f"redis-server on port {self.port} is already running (pid {self.pid})"
        self.close_log()
        path = self.log_dir / f"redis-{self.port}-{time.monotonic_ns()}.log"
        self.log_paths.append(path)
        self._log = open(path, "wb")
        self.proc = subprocess.Popen(
            [REDIS_SERVER_BIN, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", str(self.log_dir), "--loglevel", "notice", *self.args],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout * SLOW
        last = None
        probe = redis_lib().Redis(host=HOST, port=self.port, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"redis-server on port {self.port} exited with {self.proc.returncode} "
                                         f"at start; log:\n{self.log_tail()}")
                try:
                    if probe.ping():
                        return
                except Exception as e:  # not listening yet
                    last = repr(e)
                time.sleep(0.02)
        finally:
            probe.close()
        self.kill()
        raise AssertionError(f"redis-server on port {self.port} did not answer PING within "
                             f"{timeout * SLOW:.0f}s (last: {last}); log:\n{self.log_tail()}")

    def client(self, **kw):
        """A redis-py client (decoded strings) closed at teardown."""
        opts = dict(host=HOST, port=self.port, decode_responses=True, socket_timeout=5.0 * SLOW,
                    socket_connect_timeout=2.0)
        opts.update(kw)
        c = redis_lib().Redis(**opts)
        self._clients.append(c)
        return c

    def log(self) -> str:
        if self._log and not self._log.closed:
            self._log.flush()
        return "".join(p.read_text(errors="replace") for p in self.log_paths)

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-n:])

    def _wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def kill(self) -> int:
        """SIGKILL by PID and wait for the exit."""
        if self.alive():
            os.kill(self.proc.pid, SIGKILL)
        return self._wait(5.0)

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM by PID (SIGKILL if it does not exit in time)."""
        if self.alive():
            os.kill(self.proc.pid, SIGTERM)
        return self._wait(timeout)

    def restart(self, timeout: float = 10.0):
        """A new, empty redis-server on the same port (after kill() or stop())."""
        assert not self.alive(), "restart() needs the old redis-server stopped first"
        last = None
        for _ in range(20):  # the port can take a moment to be free again
            try:
                self.start(timeout)
                return
            except AssertionError as e:
                last = e
                if "in use" not in self.log_tail(5).lower():
                    raise
                time.sleep(0.1)
        raise last

    def close_clients(self):
        for c in self._clients:
            with contextlib.suppress(Exception):
                c.close()
        self._clients = []

    def close_log(self):
        if self._log:
            with contextlib.suppress(Exception):
                self._log.close()


class RedisFactory:
    """redis_factory() -> RedisServer; at finalize() every one still running is
    stopped by PID."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.servers = []

    def __call__(self, port: Optional[int] = None, args=()) -> RedisServer:
        """A started redis-server, on port when given (else a free one), with
        args added to its command line."""
        last = None
        for _ in range(1 if port else 3):  # a port grabbed between free_port() and bind: retry
            try:
                srv = RedisServer(self.log_dir, port, args=args)
            except AssertionError as e:
                last = e
                continue
            self.servers.append(srv)
            return srv
        raise last

    def finalize(self):
        for srv in self.servers:
            srv.close_clients()
            srv.stop()
            srv.close_log()
        self.servers = []


@pytest.fixture
def redis_factory(tmp_path):
    """Factory of redis-servers for one test, stopped by PID at teardown.
    Request it before `wsfan` so that pytest stops the nodes first."""
    factory = RedisFactory(tmp_path)
    yield factory
    factory.finalize()


@pytest.fixture(scope="module")
def redis_factory_module(tmp_path_factory):
    factory = RedisFactory(tmp_path_factory.mktemp("redis"))
    yield factory
    factory.finalize()


@pytest.fixture
def redis_server(redis_factory) -> RedisServer:
    """One redis-server for one test."""
    return redis_factory()


class TcpProxy:
    """A loopback TCP proxy to a Redis, in threads, that a test turns off in
    one of two ways until restore():
    - down(): drops every connection through it (reset) and refuses new ones
      (accepts and closes them at once), so that a test decides when each
      Redis link of one node comes back;
    - black_hole(): what a partition looks like: every connection stays
      open, new ones are accepted, and every byte either way is swallowed:
      no reply, no reset, no FIN. Only the node's own checks can notice."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind((HOST, 0))
        self.listener.listen(64)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.swallowing = False
        self.closed = False
        self.lock = threading.Lock()
        self.socks = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            if not self.up:
                c.close()
                continue
            try:
                t = socket.create_connection((HOST, self.target_port), timeout=2)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.socks += [c, t]
            for x, y in ((c, t), (t, c)):
                threading.Thread(target=self._pump, args=(x, y), daemon=True).start()

    def _pump(self, src, dst):
        src.settimeout(None)
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not self.swallowing:
                    dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def down(self):
        self.up = False
        with self.lock:
            socks, self.socks = self.socks, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def black_hole(self):
        self.swallowing = True

    def restore(self):
        """Forwards again. After a black hole, a connection whose bytes were
        swallowed is out of step with Redis, so it is dropped; the node has
        given it up already if its checks work."""
        if self.swallowing:
            self.down()
            self.swallowing = False
        self.up = True

    def close(self):
        self.down()
        self.closed = True
        self.thread.join(2)
        self.listener.close()


@pytest.fixture
def proxies():
    """A factory of TcpProxy to a port, closed at teardown."""
    made = []

    def make(port):
        p = TcpProxy(port)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def redis_node(factory: ServerFactory, redis_server, node_id: str, *args, env: Optional[dict] = None,
               ready: bool = True) -> Server:
    """A wsfan node on redis_server (a RedisServer or a redis:// URL) with
    --node-id node_id. With ready, waits until it is connected (wait_ready)."""
    url = redis_server if isinstance(redis_server, str) else redis_server.url
    srv = factory("--redis", url, "--node-id", node_id, *args, env=env)
    srv.node_id = node_id
    if ready:
        wait_ready(srv)
    return srv


def readyz(srv: Server, timeout: float = 2.0) -> int:
    """The status of GET /readyz (404 while the build has no /readyz)."""
    return http_get(srv.port, "/readyz", timeout=timeout).status


async def _probe_send(client) -> Optional[dict]:
    await client.send({"type": "send", "user": "ready.probe", "data": None, "ref": "ready-probe"})
    for _ in range(100):
        m = await client.recv(5.0)
        if m.get("ref") == "ready-probe":
            return m
    return None


async def await_ready(srv: Server, timeout: float = 10.0, probe=None):
    """Waits until the node's Redis links are up: /readyz 200, or, while the
    build has no /readyz (404), until a `send` is acknowledged rather than
    refused with `unavailable`. Fails after timeout (scaled by SLOW)."""
    deadline = time.monotonic() + timeout * SLOW
    last = None
    own = None
    try:
        for _ in range(100_000):
            if time.monotonic() >= deadline:
                break
            status = readyz(srv)
            if status == 200:
                return
            last = f"/readyz {status}"
            if status == 404:
                if probe is None:
                    own = probe = await connect_json(srv)
                reply = await _probe_send(probe)
                if reply and reply.get("type") == "ack":
                    return
                last = f"/readyz 404 and a send answered {reply!r}"
            await asyncio.sleep(0.02)
    finally:
        if own is not None:
            await own.ws.close()
    raise AssertionError(f"{srv.describe()}: not connected to Redis within {timeout * SLOW:.0f}s "
                         f"(last: {last}); log:\n{srv.log_tail()}")


def wait_ready(srv: Server, timeout: float = 10.0):
    run(await_ready(srv, timeout), timeout + 5)


def wait_until(fn, what: str, timeout: float = 5.0, interval: float = 0.02):
    """Polls fn() -> (ok, detail) until ok; fails after timeout (scaled by
    SLOW) with what and the last detail. Returns the last detail."""
    deadline = time.monotonic() + timeout * SLOW
    detail = None
    for _ in range(1_000_000):
        ok, detail = fn()
        if ok:
            return detail
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"{what}: not true within {timeout * SLOW:.1f}s; last: {detail!r}")


async def await_until(fn, what: str, timeout: float = 5.0, interval: float = 0.02):
    """wait_until for async tests: fn() -> (ok, detail), a plain function."""
    deadline = time.monotonic() + timeout * SLOW
    detail = None
    for _ in range(1_000_000):
        ok, detail = fn()
        if ok:
            return detail
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(interval)
    raise AssertionError(f"{what}: not true within {timeout * SLOW:.1f}s; last: {detail!r}")


def numsub(r, *channels) -> dict:
    """PUBSUB NUMSUB as {channel: subscribers}."""
    return dict(r.pubsub_numsub(*channels)) if channels else {}


async def publish_many(client, room: str, datas, window: int = 64, **kw):
    """Publishes every item of datas to room from a protocol_client.Client,
    up to window commands in flight (below the server's limit of pending
    commands), in order; returns the acks in publish order. Fails on any
    other reply."""
    datas = list(datas)
    acks = []
    for start in range(0, len(datas), window):
        refs = []
        for d in datas[start:start + window]:
            ref = client.ref()
            refs.append(ref)
            await client.send({"type": "publish", "room": room, "data": d, "ref": ref, **kw})
        for ref in refs:
            r = await client.recv_match(lambda m, ref=ref: m.get("ref") == ref and m.get("type") in
                                        ("ack", "error"), f"reply to publish {ref}", 10.0)
            assert r["type"] == "ack", f"{client.label}: publish {ref} to {room} should be acknowledged, got {r!r}"
            acks.append(r)
    return acks


# ---- the engines: one test, run on the memory and on the Redis engines ----------

ENGINES = ("memory", "redis")

_namespaces = itertools.count(1)


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory) -> RedisServer:
    """One redis-server for the whole session, for the tests parametrized by
    `engine`. Every server started on it has a namespace of its own, so no
    test sees another's keys or channels. Started only if a test needs it."""
    factory = RedisFactory(tmp_path_factory.mktemp("redis-shared"))
    yield factory()
    factory.finalize()


class Engine:
    """Starts wsfan on one engine. "memory": the in-process bus and store
    (no option). "redis": --redis on the session's shared redis-server with a
    fresh --namespace (and --node-id) per server, waiting until connected.
    str(engine) is its name; .redis is the RedisServer (None for memory)."""

    def __init__(self, name: str, redis=None):
        assert name in ENGINES, name
        self.name = name
        self.redis = redis

    def __str__(self):
        return self.name

    def __repr__(self):
        return f"<Engine {self.name}>"

    @property
    def is_redis(self) -> bool:
        return self.name == "redis"

    def node(self, factory: ServerFactory, *args, env: Optional[dict] = None) -> Server:
        """One server (a ServerFactory such as `wsfan` or `wsfan_module`
        starts it). On Redis it is alone in its namespace; .namespace names it
        (None for memory)."""
        return self.nodes(factory, 1, *args, env=env)[0]

    def nodes(self, factory: ServerFactory, n: int, *args, env: Optional[dict] = None):
        """n nodes that act as one server, each with args: with Redis, n
        processes in one fresh namespace; with memory, where one process is the
        whole server, that one process n times."""
        if not self.is_redis:
            srv = factory(*args, env=env)
            srv.namespace = None
            return [srv] * n
        ns = f"t{os.getpid()}.{next(_namespaces)}"
        out = []
        for i in range(n):
            srv = redis_node(factory, self.redis, f"{ns}-n{i}", "--namespace", ns, *args, env=env)
            srv.namespace = ns
            out.append(srv)
        return out


# For a test of what the command parser refuses before any engine sees it
# (bad names, limits, offsets): the same code on every engine, so it runs
# once, on the memory engine (with the module's memory server).
engine_independent = pytest.mark.parametrize("engine", ["memory"], indirect=True)


@pytest.fixture(scope="module", params=ENGINES)
def engine(request) -> Engine:
    """The engine a test runs on: every test that takes it runs once with the
    memory engines and once with Redis (module scope, so that a module's
    shared servers are started once per engine)."""
    if request.param == "redis":
        return Engine("redis", request.getfixturevalue("shared_redis"))
    return Engine("memory")
