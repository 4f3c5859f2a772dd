"""permessage-deflate (RFC 7692, docs/protocol.md "Compression"): what the
server answers to the offers of python3-websockets and of hand-made
upgrades, which frames carry RSV1 (events from --compress-min bytes up),
compressed client messages (whole, fragmented, and the violations closed
with 1002), a compression bomb closed with 1009 without the memory it
would inflate to, and one fan-out to deflate and plain clients at once,
intact and in order, compressed once per worker."""

import asyncio
import json
import time
import zlib

import pytest
import websockets

from conftest import (OP_CONT, OP_PING, OP_PONG, OP_TEXT, RSV1, SANITIZED, SLOW, RawClient, cmd,
                      frame, json_client, run)
from test_limits import MB, scrape, status_kb

ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
BROWSER_OFFER = "permessage-deflate; client_max_window_bits"


def compress(data: bytes, level: int = 6) -> bytes:
    """A message payload as a client compresses it: raw deflate, sync flush,
    the 00 00 FF FF tail dropped."""
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflate(payload: bytes) -> bytes:
    d = zlib.decompressobj(-15)
    return d.decompress(payload + b"\x00\x00\xff\xff")


def open_raw(server, offer=BROWSER_OFFER) -> RawClient:
    """A raw client whose upgrade offers offer (None: no header); 101 and the
    welcome asserted."""
    return RawClient.open(server, headers=[("Sec-WebSocket-Extensions", offer)] if offer is not None else None)


def recv_any(c: RawClient, timeout: float = 5.0):
    """The next data frame, RSV bits allowed (RawClient.recv_frame refuses
    them); pings answered."""
    deadline = time.monotonic() + timeout * SLOW
    for _ in range(10000):
        f = c._parse_frame()
        if f is None:
            c._fill(deadline)
            continue
        assert not f.masked
        if f.opcode == OP_PING:
            c.send_frame(OP_PONG, f.payload)
            continue
        if f.opcode != OP_PONG:
            return f
    raise AssertionError("too many control frames")


def recv_text(c: RawClient):
    """(rsv, JSON) of the next data frame, inflated when RSV1 is set."""
    f = recv_any(c)
    assert f.opcode == OP_TEXT and f.fin, f
    return f.rsv, json.loads(inflate(f.payload) if f.rsv == RSV1 else f.payload)


def recv_type(c: RawClient, type_: str):
    for _ in range(50):
        rsv, msg = recv_text(c)
        if msg.get("type") == type_:
            return rsv, msg
    raise AssertionError(f"no {type_} within 50 frames")


@pytest.fixture(scope="module")
def server(wsfan_module):
    srv = wsfan_module("--compress-min", "256", "--workers", "2")
    yield srv
    assert srv.alive(), f"server died during the module; log:\n{srv.log_tail()}"


# ---- negotiation -----------------------------------------------------------------------

def test_python_websockets_negotiates_deflate_by_default(server):
    async def main():
        async with json_client(server) as c:
            assert c.ws.response_headers.get("Sec-WebSocket-Extensions") == ANSWER
            assert [e.name for e in c.ws.extensions] == ["permessage-deflate"]
            big = "x" * 2000
            await c.request({"type": "join", "room": "neg", "ref": 1})
            await c.send({"type": "publish", "room": "neg", "data": big, "ref": 2})
            got = [await c.recv(), await c.recv()]
            assert {m["type"] for m in got} == {"ack", "message"}, got
            assert [m for m in got if m["type"] == "message"][0]["data"] == big
    run(main())


@pytest.mark.parametrize("offer,answer", [
    (BROWSER_OFFER, ANSWER),
    ("permessage-deflate", ANSWER),
    ("permessage-deflate; server_max_window_bits=15; client_no_context_takeover", ANSWER + "; server_max_window_bits=15"),
    ("permessage-deflate; server_max_window_bits=10, permessage-deflate; client_max_window_bits=12", ANSWER),
    ("x-webkit-deflate-frame, permessage-deflate", ANSWER),
])
def test_answer_to_offers(server, offer, answer):
    with open_raw(server, offer) as c:
        assert c.response.header("sec-websocket-extensions") == answer


@pytest.mark.parametrize("offer", [
    "permessage-deflate; server_max_window_bits=10",
    "permessage-deflate; client_max_window_bits=20",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; unknown_param",
    "permessage-deflate; client_max_window_bits=\"15",
    ";;,permessage-deflate",
    "x-webkit-deflate-frame",
])
def test_declined_offers_upgrade_without_the_extension(server, offer):
    with open_raw(server, offer) as c:
        assert c.response.header("sec-websocket-extensions") is None
        c.send_json({"type": "join", "room": "declined", "ref": 1})
        recv_type(c, "joined")
        c.send_json({"type": "publish", "room": "declined", "data": "y" * 1000, "ref": 2})
        rsv, msg = recv_type(c, "message")
        assert rsv == 0 and msg["data"] == "y" * 1000
        # RSV1 without the extension stays a protocol error.
        c.send(frame(OP_TEXT, compress(cmd({"type": "ping"})), rsv=RSV1))
        c.expect_close(1002, allow_data=True)


def test_client_with_compression_none_gets_no_extension(server):
    async def main():
        async with json_client(server, compression=None) as c:
            assert c.ws.response_headers.get("Sec-WebSocket-Extensions") is None
            assert c.ws.extensions == []
            assert (await c.request({"type": "ping", "ref": 1}))["type"] == "pong"
    run(main())


def test_compression_off_declines_every_offer(wsfan):
    srv = wsfan("--compression", "off")
    with open_raw(srv) as c:
        assert c.response.header("sec-websocket-extensions") is None


# ---- which frames are compressed -------------------------------------------------------

def test_events_from_compress_min_up_carry_rsv1(server):
    with open_raw(server) as c:
        c.send_json({"type": "join", "room": "sizes", "ref": 1})
        recv_type(c, "joined")
        for data, compressed in (("s" * 10, False), ("b" * 2000, True), ("t" * 100, False), ("q" * 300, True)):
            c.send_json({"type": "publish", "room": "sizes", "data": data, "ref": data[:3]})
            rsv, msg = recv_type(c, "message")
            assert msg["data"] == data
            assert rsv == (RSV1 if compressed else 0), f"{len(data)}-byte data: rsv {rsv}"


def test_compress_min_zero_compresses_every_event(wsfan):
    srv = wsfan("--compress-min", "0")
    with open_raw(srv) as c:
        c.send_json({"type": "join", "room": "z", "ref": 1})
        recv_type(c, "joined")
        c.send_json({"type": "publish", "room": "z", "data": 1, "ref": 2})
        rsv, msg = recv_type(c, "message")
        assert rsv == RSV1 and msg["data"] == 1


# ---- compressed client messages --------------------------------------------------------

def publish_compressed(c: RawClient, room: str, data: str, fragments: int = 1):
    """Publishes data with a compressed message, cut in fragments (RSV1 on
    the first only, a ping between the first two)."""
    z = compress(cmd({"type": "publish", "room": room, "data": data}))
    cut = [len(z) * i // fragments for i in range(fragments + 1)]
    for i in range(fragments):
        c.send(frame(OP_TEXT if i == 0 else OP_CONT, z[cut[i]:cut[i + 1]], fin=i == fragments - 1,
                     rsv=RSV1 if i == 0 else 0))
        if i == 0:
            c.send(frame(OP_PING, b"mid"))


def test_compressed_client_messages_are_inflated(server):
    with open_raw(server) as c:
        c.send(frame(OP_TEXT, compress(cmd({"type": "ping", "ref": "whole"})), rsv=RSV1))
        assert recv_text(c) == (0, {"type": "pong", "ref": "whole"})
        c.send_json({"type": "join", "room": "inflated", "ref": 1})
        recv_type(c, "joined")
        for fragments in (1, 3):
            data = "\u20ac frag %d " % fragments * 200
            publish_compressed(c, "inflated", data, fragments)
            rsv, msg = recv_type(c, "message")
            assert rsv == RSV1 and msg["data"] == data
        # Compressed and plain messages mix on one connection.
        c.send_json({"type": "ping", "ref": "plain"})
        assert recv_type(c, "pong") == (0, {"type": "pong", "ref": "plain"})


def test_python_websockets_sends_fragmented_compressed_messages(server):
    # websockets compresses what it sends once deflate is agreed; a list is
    # sent as one message in fragments, RSV1 on the first.
    async def main():
        async with json_client(server) as c:
            await c.request({"type": "join", "room": "frags", "ref": 1})
            parts = ['{"type":"publish","room":"frags","data":"', "\u00e9t\u00e9 " * 300, "fin " * 300, '"}']
            await c.ws.send(parts)
            for _ in range(2):
                m = await c.recv()
                if m["type"] == "message":
                    assert m["data"] == "\u00e9t\u00e9 " * 300 + "fin " * 300
                    return
            raise AssertionError("no message event")
    run(main())


@pytest.mark.parametrize("case", ["rsv1 on continuation", "rsv1 on ping", "not deflate data", "bad utf-8"])
def test_violations_in_compressed_messages_close(server, case):
    code = 1007 if case == "bad utf-8" else 1002
    data = {
        "rsv1 on continuation": frame(OP_TEXT, b"{", fin=False) + frame(OP_CONT, compress(b'"type":"ping"}'), rsv=RSV1),
        "rsv1 on ping": frame(OP_PING, b"x", rsv=RSV1),
        "not deflate data": frame(OP_TEXT, b"\x07\x00\x01", rsv=RSV1),
        "bad utf-8": frame(OP_TEXT, compress(b'{"type":"ping","ref":"\xc3("}'), rsv=RSV1),
    }[case]
    with open_raw(server) as c:
        c.send(data)
        c.expect_close(code, what=case)


def test_compression_bomb_closes_1009_without_inflating_it(wsfan):
    srv = wsfan("--max-message", "64k", "--workers", "1")
    bomb = compress(b"\0" * (16 * MB), 9)
    assert len(bomb) < 64 * 1024, len(bomb)
    with open_raw(srv) as c:
        c.send_json({"type": "ping", "ref": 1})
        recv_text(c)
        rss0 = status_kb(srv.pid, "VmRSS") * 1024
        c.send(frame(OP_TEXT, bomb, rsv=RSV1))
        c.expect_close(1009, what="a 16 MiB bomb", allow_data=True)
        grown = status_kb(srv.pid, "VmRSS") * 1024 - rss0
        assert grown < (8 if SANITIZED else 4) * MB, f"RSS grew {grown / MB:.1f} MB for a 16 MiB bomb"
    # The limit is on the inflated size: a message just under it passes.
    with open_raw(srv, "permessage-deflate") as c:
        c.send_json({"type": "join", "room": "bomb", "ref": 1})
        recv_type(c, "joined")
        publish_compressed(c, "bomb", "z" * 60000)
        rsv, msg = recv_type(c, "message")
        assert msg["data"] == "z" * 60000


# ---- fan-out ---------------------------------------------------------------------------

def test_fanout_to_deflate_and_plain_clients_is_intact_in_order_and_compressed_once(wsfan):
    srv = wsfan("--workers", "2", "--compress-min", "256")
    n_deflate, n_plain, n_msgs = 12, 6, 40
    datas = [("m%03d " % i) * (1 + (i * 37) % 150) for i in range(n_msgs)]  # 5 to 750 bytes
    surely_big = sum(1 for d in datas if len(json.dumps(d)) >= 256)  # events are longer than their data

    async def main():
        clients = [await websockets.connect(srv.url(), compression=None if i >= n_deflate else "deflate",
                                            max_size=None, ping_interval=None)
                   for i in range(n_deflate + n_plain)]
        try:
            for i, ws in enumerate(clients):
                assert json.loads(await ws.recv())["type"] == "welcome"
                await ws.send(json.dumps({"type": "join", "room": "fan", "ref": i}))
                assert json.loads(await ws.recv())["type"] == "joined"
            before = scrape(srv.port)
            pub = clients[0]
            for i, d in enumerate(datas):
                await pub.send(json.dumps({"type": "publish", "room": "fan", "data": d, "ref": f"p{i}"}))

            async def collect(ws):
                got = []
                while len(got) < n_msgs:
                    m = json.loads(await asyncio.wait_for(ws.recv(), 10 * SLOW))
                    if m["type"] == "message":
                        got.append(m["data"])
                return got
            results = await asyncio.gather(*(collect(ws) for ws in clients))
            for i, got in enumerate(results):
                assert got == datas, f"client {i} ({'deflate' if i < n_deflate else 'plain'}) got another sequence"
            after = scrape(srv.port)
            frames = after["wsfan_deflate_frames_total"] - before["wsfan_deflate_frames_total"]
            # Once per worker that has deflate recipients, not once per recipient.
            assert surely_big <= frames <= 2 * n_msgs, f"{frames} compressed frames for {n_msgs} events"
            ratio = (after["wsfan_deflate_output_bytes_total"] - before["wsfan_deflate_output_bytes_total"]) / \
                (after["wsfan_deflate_input_bytes_total"] - before["wsfan_deflate_input_bytes_total"])
            assert ratio < 0.5, f"repetitive text compressed to {ratio:.2f} of its size"
        finally:
            await asyncio.gather(*(ws.close() for ws in clients))
    run(main(), timeout=60)
