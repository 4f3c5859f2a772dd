"""The wsfan process: command line and environment, many connections over
several workers, slow readers, and shutdown on SIGTERM/SIGINT."""

import asyncio
import signal
import socket
import time

import pytest

from conftest import (OP_TEXT, SLOW, PeerClosed, RawClient, cmd, connect_json, free_port, frame, http_get,
                      json_client, repo_version, request_head, run, run_wsfan, sanitizer_report, upgrade_headers)


# ---- command line ----------------------------------------------------------------

def test_help_prints_usage_and_exits_zero():
    p = run_wsfan("--help")
    assert p.returncode == 0, f"--help exited {p.returncode}; stderr {p.stderr!r}"
    assert "--listen" in p.stdout, f"--help should list the options, got {p.stdout!r}"
    assert sanitizer_report(p.stderr) is None, p.stderr


def test_version_prints_name_and_version_and_exits_zero():
    p = run_wsfan("--version")
    assert p.returncode == 0, f"--version exited {p.returncode}; stderr {p.stderr!r}"
    assert p.stdout.strip() == f"wsfan {repo_version()}", f"--version printed {p.stdout!r}"


BAD_FLAGS = [
    (["--workers", "0"], "--workers", "0"),
    (["--workers", "abc"], "--workers", "abc"),
    (["--workers", "-3"], "--workers", "-3"),
    (["--max-message", "12q"], "--max-message", "12q"),
    (["--max-message", "0"], "--max-message", "0"),
    (["--send-queue-limit", "lots"], "--send-queue-limit", "lots"),
    (["--max-connections", "many"], "--max-connections", "many"),
    (["--heartbeat", "-1"], "--heartbeat", "-1"),
    (["--heartbeat", "1.5x"], "--heartbeat", "1.5x"),
    (["--handshake-timeout", "soon"], "--handshake-timeout", "soon"),
    (["--log-level", "loud"], "--log-level", "loud"),
    (["--listen", "nope"], "--listen", "nope"),
    (["--listen", "127.0.0.1:99999"], "--listen", "127.0.0.1:99999"),
    (["--no-such-option"], "--no-such-option", "--no-such-option"),
]


def assert_one_error_line(p, names, value, what):
    assert p.returncode == 2, (f"{what}: expected exit status 2, got {p.returncode}; "
                               f"stdout {p.stdout!r} stderr {p.stderr!r}")
    lines = p.stderr.splitlines()
    assert len(lines) == 1, f"{what}: expected exactly one line on stderr, got {len(lines)}: {p.stderr!r}"
    assert any(n in lines[0] for n in names), f"{what}: stderr line should name {' or '.join(names)}: {lines[0]!r}"
    assert value in lines[0], f"{what}: stderr line should quote the bad value {value!r}: {lines[0]!r}"


@pytest.mark.parametrize("args,name,value", BAD_FLAGS, ids=[" ".join(a) for a, _, _ in BAD_FLAGS])
def test_bad_flag_exits_2_with_one_line_naming_option_and_value(args, name, value):
    # A valid --listen first, so that a wrongly accepted value cannot take port 8080.
    listen = [] if name == "--listen" else ["--listen", f"127.0.0.1:{free_port()}"]
    p = run_wsfan(*listen, *args, timeout=5)
    assert_one_error_line(p, [name], value, " ".join(args))


def test_flag_without_value_exits_2_naming_the_option():
    p = run_wsfan("--listen", f"127.0.0.1:{free_port()}", "--workers", timeout=5)
    assert p.returncode == 2, f"'--workers' without a value: exit {p.returncode}, stderr {p.stderr!r}"
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and "--workers" in lines[0], f"expected one line naming --workers: {p.stderr!r}"


BAD_ENV = [
    ("WSFAN_WORKERS", "abc", "--workers"),
    ("WSFAN_MAX_MESSAGE", "12q", "--max-message"),
    ("WSFAN_HEARTBEAT", "-1", "--heartbeat"),
    ("WSFAN_SEND_QUEUE_LIMIT", "4x", "--send-queue-limit"),
]


@pytest.mark.parametrize("var,value,flag", BAD_ENV, ids=[f"{v}={x}" for v, x, _ in BAD_ENV])
def test_bad_env_value_exits_2_with_one_line_naming_variable_and_value(var, value, flag):
    p = run_wsfan("--listen", f"127.0.0.1:{free_port()}", env={var: value}, timeout=5)
    assert_one_error_line(p, [var, flag], value, f"{var}={value}")


def test_size_suffixes_are_accepted(wsfan):
    srv = wsfan("--max-message", "64k", "--send-queue-limit", "1m")
    c = RawClient.open(srv)
    assert c.request({"type": "ping", "ref": 1}) == {"type": "pong", "ref": 1}
    # 64k means 65536: a message of exactly that size is allowed, one byte more is not.
    pad = "x" * (65536 - len(cmd({"type": "ping", "ref": 2, "pad": ""})))
    c.send_frame(OP_TEXT, cmd({"type": "ping", "ref": 2, "pad": pad}))
    assert c.recv_json() == {"type": "pong", "ref": 2}, "a 65536-byte message must pass --max-message 64k"
    c.send_quietly(frame(OP_TEXT, cmd({"type": "ping", "ref": 3, "pad": pad + "x"})))
    c.expect_close(1009, what="a 65537-byte message with --max-message 64k")


def test_env_var_sets_option(wsfan):
    srv = wsfan(env={"WSFAN_HEARTBEAT": "7"})
    c = RawClient.open(srv)
    assert c.welcome["heartbeat"] == 7, f"WSFAN_HEARTBEAT=7 should show in the welcome: {c.welcome!r}"


def test_env_size_option_is_applied(wsfan):
    srv = wsfan(env={"WSFAN_MAX_MESSAGE": "1k"})
    c = RawClient.open(srv)
    c.send_quietly(frame(OP_TEXT, cmd({"type": "ping", "pad": "x" * 2000})))
    c.expect_close(1009, what="a 2000-byte message with WSFAN_MAX_MESSAGE=1k")


def test_flag_beats_env_var(wsfan):
    srv = wsfan("--heartbeat", "9", env={"WSFAN_HEARTBEAT": "7"})
    c = RawClient.open(srv)
    assert c.welcome["heartbeat"] == 9, f"--heartbeat 9 should beat WSFAN_HEARTBEAT=7: {c.welcome!r}"


# ---- many connections, several workers ---------------------------------------------

def test_200_concurrent_connections_spread_over_workers(wsfan):
    srv = wsfan("--workers", "4")
    n = 200

    async def scenario():
        clients = await asyncio.gather(*[connect_json(srv, f"/ws?user=u{i}") for i in range(n)])
        try:
            replies = await asyncio.gather(*[c.request({"type": "ping", "ref": i}, timeout=10)
                                             for i, c in enumerate(clients)])
            for i, r in enumerate(replies):
                assert r == {"type": "pong", "ref": i}, f"client {i} got {r!r}"
            return [c.welcome for c in clients]
        finally:
            await asyncio.gather(*[c.ws.close() for c in clients], return_exceptions=True)

    welcomes = run(scenario(), timeout=40)
    sessions = [w["session"] for w in welcomes]
    assert len(set(sessions)) == n, "every connection should get its own session id"
    assert [w["user"] for w in welcomes] == [f"u{i}" for i in range(n)]
    workers = {s.split(".")[0] for s in sessions}
    assert len(workers) >= 2, f"200 connections to --workers 4 all landed on worker(s) {workers}"
    assert workers <= {"0", "1", "2", "3"}, f"worker indexes should be 0..3: {sorted(workers)}"


# ---- slow readers ----------------------------------------------------------------

def test_slow_reader_is_closed_1013_and_others_are_not_delayed(wsfan):
    # One worker, so that the slow reader and the normal client share a loop.
    srv = wsfan("--send-queue-limit", "64k", "--workers", "1")
    slow = RawClient.open(srv, rcvbuf=4096)
    normal = RawClient.open(srv)
    normal.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ref = "r" * 60
    batch = b"".join(frame(OP_TEXT, cmd({"type": "ping", "ref": ref})) for _ in range(200))

    sent = 0
    latencies = []
    stopped_by = "limit"
    t0 = time.monotonic()
    slow.sock.settimeout(0.5)
    for i in range(100):  # at most 20k commands
        if time.monotonic() - t0 > 10:
            stopped_by = "time"
            break
        try:
            slow.sock.sendall(batch)
        except (socket.timeout, OSError) as e:
            stopped_by = repr(e)
            break
        sent += 200
        if i % 5 == 0:
            t = time.monotonic()
            r = normal.request({"type": "ping", "ref": i}, timeout=5)
            latencies.append(time.monotonic() - t)
            assert r == {"type": "pong", "ref": i}, f"normal client got {r!r}"

    # The normal connection on the same worker still answers promptly.
    t = time.monotonic()
    assert normal.request({"type": "ping", "ref": "after"}) == {"type": "pong", "ref": "after"}
    latencies.append(time.monotonic() - t)
    assert max(latencies) < 0.5 * SLOW, (f"a slow reader delayed another connection's pong by "
                                         f"{max(latencies):.3f}s (latencies {[round(x, 3) for x in latencies]})")

    # Now read everything the slow reader was sent: it must end in close 1013 or a closed socket.
    pongs = 0
    outcome = None
    deadline = time.monotonic() + 10 * SLOW
    try:
        for _ in range(sent + 10):
            f = slow.recv_frame(timeout=max(0.001, deadline - time.monotonic()) / SLOW)
            if f.opcode == 0x8:
                outcome = f"close {f.close_code}"
                assert f.close_code == 1013, (f"slow reader was closed with {f.close_code} "
                                              f"{f.close_reason!r}, expected 1013")
                break
            pongs += 1
    except PeerClosed:
        outcome = "tcp closed"
    except socket.timeout:
        outcome = "timeout"
    assert outcome is not None and outcome != "timeout", (
        f"slow reader (sent {sent} pings, stopped by {stopped_by}) was never closed: read {pongs} pongs "
        f"then nothing for 10s; --send-queue-limit 64k should close it with 1013")
    assert pongs < sent, f"slow reader got all {sent} pongs: the queue limit was never reached"


# ---- shutdown ----------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_closes_every_client_with_1001_and_exits_zero(wsfan, sig):
    srv = wsfan("--workers", "2")
    clients = [RawClient.open(srv, f"/ws?user=u{i}") for i in range(4)]
    for c in clients:
        assert c.request({"type": "ping", "ref": 1}) == {"type": "pong", "ref": 1}
    t0 = time.monotonic()
    srv.signal(sig)
    for i, c in enumerate(clients):
        c.expect_close(1001, timeout=5, what=f"{sig.name} (client {i})")
    rc = srv.wait(timeout=max(0.1, 5 * SLOW - (time.monotonic() - t0)))
    assert rc == 0, f"exit status after {sig.name} was {rc}; log:\n{srv.log_tail()}"


def test_shutdown_is_not_held_up_by_unresponsive_clients(wsfan):
    srv = wsfan("--workers", "2")
    # Never reads, never answers the close frame.
    mute = RawClient.open(srv)
    # Half a request head: still in the HTTP phase.
    half = RawClient(srv.port)
    half.send(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    rc = srv.wait(timeout=5 * SLOW)
    assert rc == 0, f"exit status after SIGTERM was {rc}"
    assert time.monotonic() - t0 < 5 * SLOW
    code, _, _ = mute.read_until_close(timeout=1)
    assert code == 1001, f"the mute client should still have been sent close 1001, got {code}"
    mute.close()
    half.close()


def test_drain_spreads_the_closes_and_reports_not_ready_first(wsfan):
    """--drain-seconds 2: /readyz answers 503 and new handshakes get 503 at
    once, while the open connections get 1001 spread over the 2 s (not all
    at once, so that they do not all reconnect elsewhere at the same
    moment); then the process exits 0."""
    srv = wsfan("--workers", "1", "--drain-seconds", "2")
    clients = [RawClient.open(srv, f"/ws?user=d{i}") for i in range(20)]
    for c in clients:
        assert c.request({"type": "ping", "ref": 1}) == {"type": "pong", "ref": 1}
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    # The signal reaches the main loop asynchronously: poll briefly.
    deadline = time.monotonic() + 0.5 * SLOW
    while http_get(srv.port, "/readyz").status != 503:
        assert time.monotonic() < deadline, "/readyz should answer 503 as soon as the drain begins"
        time.sleep(0.01)
    late = RawClient(srv.port)
    late.send(request_head("GET", "/ws", upgrade_headers()))
    assert late.read_http_response().status == 503
    late.close()
    closed_at = {}
    deadline = time.monotonic() + 5 * SLOW
    while len(closed_at) < len(clients) and time.monotonic() < deadline:
        for i, c in enumerate(clients):
            if i in closed_at:
                continue
            try:
                code, _, _ = c.read_until_close(timeout=0.01)
            except socket.timeout:
                continue
            assert code == 1001, f"client {i} was closed with {code}"
            closed_at[i] = time.monotonic() - t0
            c.close()
    assert len(closed_at) == len(clients), f"only {len(closed_at)} of {len(clients)} closed: {closed_at}"
    first, last = min(closed_at.values()), max(closed_at.values())
    closed_at = sorted(closed_at.values())
    assert last - first >= 1.0, f"the closes should spread over the drain: {sorted(closed_at)}"
    assert last <= 3.0 * SLOW, f"every connection should be closed by the end of the drain: {sorted(closed_at)}"
    assert srv.wait(timeout=5 * SLOW) == 0


def test_websockets_client_sees_1001_on_sigterm(wsfan):
    import websockets

    srv = wsfan()

    async def scenario():
        async with json_client(srv) as c:
            srv.signal(signal.SIGTERM)
            with pytest.raises(websockets.ConnectionClosed) as info:
                for _ in range(10):
                    await c.recv(timeout=5)
            return info.value

    exc = run(scenario(), timeout=15)
    assert exc.rcvd is not None and exc.rcvd.code == 1001, f"client saw {exc!r}, expected close 1001"
    assert srv.wait(timeout=5 * SLOW) == 0
