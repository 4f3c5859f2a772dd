"""Heartbeats (PROTOCOL.md section 1): the server pings every `heartbeat`
seconds and drops a peer that has sent nothing (any frame counts) for two
intervals. All tests use --heartbeat 1."""

import asyncio
import time

import pytest

from conftest import OP_CLOSE, OP_PING, OP_PONG, SLOW, PeerClosed, RawClient, json_client, run


@pytest.fixture(scope="module")
def server(wsfan_module):
    srv = wsfan_module("--heartbeat", "1")
    yield srv
    assert srv.alive(), f"server died during the module; log:\n{srv.log_tail()}"


def test_welcome_announces_heartbeat(server):
    assert RawClient.open(server).welcome["heartbeat"] == 1


def test_server_pings_about_every_interval(server):
    c = RawClient.open(server)
    t0 = time.monotonic()
    pings = []
    window = 4.2
    for _ in range(100):
        left = window - (time.monotonic() - t0)
        if left <= 0:
            break
        try:
            f = c.recv_frame(timeout=left / SLOW)
        except TimeoutError:
            break
        assert f.opcode in (OP_PING, OP_PONG), f"unexpected frame while idle: {f!r}"
        if f.opcode == OP_PING:
            pings.append(time.monotonic() - t0)
            c.send_frame(OP_PONG, f.payload)
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert len(pings) >= 3, f"expected a ping about every second over {window}s, got them at {pings}"
    assert len(pings) <= 6, f"too many pings for --heartbeat 1 over {window}s: {pings}"
    assert pings[0] <= 2.2, f"first ping came {pings[0]:.2f}s after the upgrade"
    assert all(0.5 <= g <= 2.2 for g in gaps), f"ping intervals {[round(g, 2) for g in gaps]} are not about 1s"
    assert c.request({"type": "ping", "ref": 1}) == {"type": "pong", "ref": 1}, "an answering client stays"


def test_silent_client_is_dropped_within_two_to_three_intervals(server):
    c = RawClient.open(server)
    t0 = time.monotonic()
    frames = []
    closed_at = None
    try:
        for _ in range(100):  # read, never answer; 8 s in all
            left = 8 - (time.monotonic() - t0)
            if left <= 0:
                break
            frames.append(c.recv_frame(timeout=left / SLOW))
    except PeerClosed:
        closed_at = time.monotonic() - t0
    except TimeoutError:
        pass
    assert closed_at is not None, f"a silent client was still connected after 8s (frames: {frames})"
    assert 1.5 <= closed_at <= 5.0 + (SLOW - 1), (
        f"silent client dropped after {closed_at:.2f}s; expected 2-3 intervals of 1s")
    closes = [f for f in frames if f.opcode == OP_CLOSE]
    assert len(closes) <= 1, f"more than one close frame: {closes}"


def test_client_answering_pings_stays_connected(server):
    # websockets answers pings by itself, even while nobody calls recv().
    async def scenario():
        async with json_client(server) as c:
            await asyncio.sleep(3.5)
            assert c.ws.open, f"a client answering pings was closed: {c.ws.close_code} {c.ws.close_reason}"
            return await c.request({"type": "ping", "ref": "alive"})

    assert run(scenario()) == {"type": "pong", "ref": "alive"}


def test_any_frame_counts_as_alive(server):
    # Never answers pings, but sends a command every 0.4 s.
    c = RawClient.open(server)
    t0 = time.monotonic()
    for i in range(20):
        if time.monotonic() - t0 > 3.5:
            break
        c.send_json({"type": "ping", "ref": i})
        for _ in range(10):
            f = c.recv_frame()
            if f.opcode == OP_PING:
                continue  # deliberately unanswered
            assert f.opcode != OP_CLOSE, (f"closed with {f.close_code} after {time.monotonic() - t0:.1f}s "
                                          f"although the client sent a command every 0.4s")
            assert f.json() == {"type": "pong", "ref": i}
            break
        time.sleep(0.4)
    assert time.monotonic() - t0 > 3.0
