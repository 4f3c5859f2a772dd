"""RFC 6455 framing as wsfan reads it: incremental parsing, fragmentation,
control frames, size limits, UTF-8, and the close codes of PROTOCOL.md
section 5 for every protocol violation (after which the server closes TCP)."""

import time

import pytest

from conftest import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RSV1, RSV2, RSV3, SLOW,
                      PeerClosed, RawClient, close_payload, cmd, frame)

PING = cmd({"type": "ping", "ref": 1})
PONG = {"type": "pong", "ref": 1}


@pytest.fixture(scope="module")
def server(wsfan_module):
    srv = wsfan_module()
    yield srv
    assert srv.alive(), f"server died during the module; log:\n{srv.log_tail()}"


@pytest.fixture(autouse=True)
def _server_survives(request):
    yield
    if "server" in request.fixturenames:
        srv = request.getfixturevalue("server")
        assert srv.alive(), f"server died during this test; log:\n{srv.log_tail()}"


def expect_pong_frame(c: RawClient, payload: bytes):
    f = c.recv_frame()
    assert f.opcode == OP_PONG, f"expected a pong frame answering a ping, got {f!r}"
    assert f.payload == payload, f"pong payload {f.payload!r} should equal the ping's {payload!r}"


# ---- incremental parsing and fragmentation ---------------------------------------

def test_text_frame_sent_byte_by_byte_is_processed(server):
    c = RawClient.open(server)
    c.send_bytewise(frame(OP_TEXT, PING))
    assert c.recv_json() == PONG


def test_ping_frame_sent_byte_by_byte_gets_pong(server):
    c = RawClient.open(server)
    c.send_bytewise(frame(OP_PING, b"abc"))
    expect_pong_frame(c, b"abc")


def test_fragmented_message_with_interleaved_ping(server):
    c = RawClient.open(server)
    msg = cmd({"type": "ping", "ref": "frag"})
    a, b, rest = msg[:7], msg[7:15], msg[15:]
    c.send(frame(OP_TEXT, a, fin=False))
    c.send(frame(OP_PING, b"mid-message"))
    expect_pong_frame(c, b"mid-message")
    c.send(frame(OP_CONT, b, fin=False) + frame(OP_CONT, rest))
    assert c.recv_json() == {"type": "pong", "ref": "frag"}


def test_whole_fragmented_sequence_byte_by_byte(server):
    c = RawClient.open(server)
    msg = cmd({"type": "ping", "ref": "bytes"})
    data = (frame(OP_TEXT, msg[:5], fin=False) + frame(OP_PING, b"p") + frame(OP_CONT, msg[5:12], fin=False)
            + frame(OP_CONT, msg[12:]))
    c.send_bytewise(data)
    expect_pong_frame(c, b"p")
    assert c.recv_json() == {"type": "pong", "ref": "bytes"}


def test_empty_fragments_are_allowed(server):
    c = RawClient.open(server)
    c.send(frame(OP_TEXT, b"", fin=False) + frame(OP_CONT, PING, fin=False) + frame(OP_CONT, b""))
    assert c.recv_json() == PONG


def test_minimal_16_and_64_bit_lengths_are_accepted(server):
    c = RawClient.open(server)
    c.send_frame(OP_TEXT, cmd({"type": "ping", "ref": 16, "pad": "x" * 200}))       # 16-bit form
    assert c.recv_json() == {"type": "pong", "ref": 16}
    c.send_frame(OP_TEXT, cmd({"type": "ping", "ref": 64, "pad": "x" * 70000}))     # 64-bit form
    assert c.recv_json() == {"type": "pong", "ref": 64}


def test_ping_payloads_up_to_125_bytes_are_echoed(server):
    c = RawClient.open(server)
    for payload in (b"", b"x", bytes(range(125))):
        c.send_frame(OP_PING, payload)
        expect_pong_frame(c, payload)


def test_unsolicited_pong_is_ignored(server):
    c = RawClient.open(server)
    c.send_frame(OP_PONG, b"unasked")
    assert c.request({"type": "ping", "ref": 1}) == PONG


def test_1mib_message_in_64kib_fragments_is_accepted_under_max_message_2m(wsfan):
    srv = wsfan("--max-message", "2m")
    c = RawClient.open(srv)
    head = cmd({"type": "ping", "ref": 1, "pad": ""})
    msg = cmd({"type": "ping", "ref": 1, "pad": "x" * (1024 * 1024 - len(head))})
    assert len(msg) == 1024 * 1024
    chunk = 64 * 1024
    parts = [msg[i:i + chunk] for i in range(0, len(msg), chunk)]
    data = b"".join(frame(OP_TEXT if i == 0 else OP_CONT, p, fin=(i == len(parts) - 1))
                    for i, p in enumerate(parts))
    c.send(data)
    assert c.recv_json(timeout=10) == PONG, "a 1 MiB message in 16 fragments should be answered"
    c.send_frame(OP_TEXT, msg)  # and in one frame
    assert c.recv_json(timeout=10) == PONG, "a 1 MiB message in one frame should be answered"


# ---- size limits ----------------------------------------------------------------

@pytest.fixture(scope="module")
def small_server(wsfan_module):
    return wsfan_module("--max-message", "64k")


def test_frame_over_max_message_closes_1009(small_server):
    c = RawClient.open(small_server)
    c.send_quietly(frame(OP_TEXT, cmd({"type": "ping", "pad": "x" * 70000})))
    c.expect_close(1009, what="a 70000-byte frame with --max-message 64k")


def test_fragments_together_over_max_message_close_1009(small_server):
    c = RawClient.open(small_server)
    msg = cmd({"type": "ping", "pad": "x" * 90000})
    parts = [msg[:30000], msg[30000:60000], msg[60000:]]
    c.send_quietly(frame(OP_TEXT, parts[0], fin=False) + frame(OP_CONT, parts[1], fin=False)
                   + frame(OP_CONT, parts[2]))
    c.expect_close(1009, what="three fragments of 30000 bytes with --max-message 64k")


def test_fragments_totalling_exactly_max_message_are_accepted(small_server):
    c = RawClient.open(small_server)
    head = cmd({"type": "ping", "ref": 1, "pad": ""})
    msg = cmd({"type": "ping", "ref": 1, "pad": "x" * (65536 - len(head))})
    assert len(msg) == 65536
    c.send(frame(OP_TEXT, msg[:30000], fin=False) + frame(OP_CONT, msg[30000:60000], fin=False)
           + frame(OP_CONT, msg[60000:]))
    assert c.recv_json() == PONG, "65536 bytes in three fragments is not over --max-message 64k"


def test_huge_declared_length_closes_1009_without_waiting_for_payload(small_server):
    c = RawClient.open(small_server)
    c.send(frame(OP_TEXT, b"{}", length=1 << 40))
    c.expect_close(1009, timeout=3, what="a frame declaring 2^40 bytes")


# ---- UTF-8 ----------------------------------------------------------------

def test_utf8_character_split_across_fragments_is_accepted(server):
    c = RawClient.open(server)
    ref = "é€😀 ok"
    msg = cmd({"type": "ping", "ref": ref})
    # split inside the 2-byte é, inside the 3-byte €, and inside the 4-byte 😀
    cuts = [msg.index("é".encode()) + 1, msg.index("€".encode()) + 2, msg.index("😀".encode()) + 3]
    assert all(0 < x < len(msg) for x in cuts), msg
    pieces = [msg[:cuts[0]], msg[cuts[0]:cuts[1]], msg[cuts[1]:cuts[2]], msg[cuts[2]:]]
    c.send(b"".join(frame(OP_TEXT if i == 0 else OP_CONT, p, fin=(i == 3)) for i, p in enumerate(pieces)))
    assert c.recv_json() == {"type": "pong", "ref": ref}


BAD_UTF8 = {
    "0xff": b"\xff",
    "stray continuation": b"\x80",
    "overlong /": b"\xc0\xaf",
    "overlong 3-byte": b"\xe0\x80\xaf",
    "surrogate": b"\xed\xa0\x80",
    "above U+10FFFF": b"\xf4\x90\x80\x80",
    "0xf5": b"\xf5\x80\x80\x80",
}


@pytest.mark.parametrize("bad", list(BAD_UTF8))
def test_invalid_utf8_closes_1007(server, bad):
    c = RawClient.open(server)
    c.send_frame(OP_TEXT, b'{"type":"ping","ref":"a' + BAD_UTF8[bad] + b'b"}')
    c.expect_close(1007, what=f"text with {bad}")


def test_truncated_utf8_at_message_end_closes_1007(server):
    c = RawClient.open(server)
    c.send_frame(OP_TEXT, b'{"type":"ping"}\xe2\x82')
    c.expect_close(1007, what="a message ending in half a 3-byte character")


def test_invalid_utf8_in_a_later_fragment_closes_1007(server):
    c = RawClient.open(server)
    c.send(frame(OP_TEXT, b'{"type":"ping","ref":"', fin=False) + frame(OP_CONT, b"abc\xc3\x28def", fin=False)
           + frame(OP_CONT, b'"}'))
    c.expect_close(1007, what="a bad byte in the middle of the second fragment")


def test_invalid_utf8_is_refused_before_the_message_ends(server):
    # Fail fast: the last fragment never comes, the server must not wait for it.
    c = RawClient.open(server)
    c.send(frame(OP_TEXT, b'{"type":"ping","ref":"', fin=False) + frame(OP_CONT, b"abc\xff\xfedef", fin=False))
    c.expect_close(1007, timeout=3, what="a bad byte in an unfinished message")


# ---- protocol violations ----------------------------------------------------------

VIOLATIONS_1002 = {
    "unmasked text frame": frame(OP_TEXT, PING, mask=False),
    "unmasked ping": frame(OP_PING, b"x", mask=False),
    "RSV1 on text": frame(OP_TEXT, PING, rsv=RSV1),
    "RSV2 on text": frame(OP_TEXT, PING, rsv=RSV2),
    "RSV3 on text": frame(OP_TEXT, PING, rsv=RSV3),
    "RSV1 on ping": frame(OP_PING, b"x", rsv=RSV1),
    "opcode 3": frame(0x3, PING),
    "opcode 7": frame(0x7, PING),
    "opcode 0xB": frame(0xB, b"x"),
    "opcode 0xF": frame(0xF, b""),
    "non-minimal 16-bit length": frame(OP_TEXT, PING, length_form=16),
    "non-minimal 64-bit length": frame(OP_TEXT, cmd({"type": "ping", "pad": "x" * 200}), length_form=64),
    "64-bit length with high bit": frame(OP_TEXT, PING, length_form=64, length=(1 << 63) | len(PING)),
    "ping with 126-byte payload": frame(OP_PING, b"x" * 126),
    "pong with 126-byte payload": frame(OP_PONG, b"x" * 126),
    "close with 126-byte payload": frame(OP_CLOSE, close_payload(1000, "r" * 124)),
    "fragmented ping": frame(OP_PING, b"x", fin=False),
    "fragmented close": frame(OP_CLOSE, close_payload(1000), fin=False),
    "continuation without start": frame(OP_CONT, PING),
    "unfinished continuation without start": frame(OP_CONT, PING, fin=False),
    "new text frame while fragmented": frame(OP_TEXT, PING[:5], fin=False) + frame(OP_TEXT, PING),
    "close with 1-byte payload": frame(OP_CLOSE, b"\x03"),
}


@pytest.mark.parametrize("case", list(VIOLATIONS_1002))
def test_protocol_violation_closes_1002(server, case):
    c = RawClient.open(server)
    c.send_quietly(VIOLATIONS_1002[case])
    c.expect_close(1002, what=case)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535])
def test_close_with_invalid_code_closes_1002(server, code):
    c = RawClient.open(server)
    c.send_frame(OP_CLOSE, close_payload(code))
    c.expect_close(1002, what=f"client close code {code}")


def test_binary_frame_closes_1003(server):
    c = RawClient.open(server)
    c.send_frame(OP_BINARY, b"\x00\x01\x02")
    c.expect_close(1003, what="a binary frame")


def test_fragmented_binary_message_closes_1003(server):
    c = RawClient.open(server)
    c.send_quietly(frame(OP_BINARY, b"\x00", fin=False) + frame(OP_CONT, b"\x01"))
    c.expect_close(1003, what="a fragmented binary message")


def test_server_closes_tcp_after_error_even_if_client_never_answers(server):
    c = RawClient.open(server)
    c.send_frame(OP_TEXT, PING, mask=False)
    code, _, _ = c.read_until_close()
    assert code == 1002
    t0 = time.monotonic()
    assert c.wait_eof(10), "after close 1002 the server kept TCP open for 10s waiting for the client's close"
    assert time.monotonic() - t0 < 10 * SLOW


def test_frames_after_a_violation_are_not_processed(server):
    c = RawClient.open(server)
    c.send_quietly(frame(OP_BINARY, b"x") + frame(OP_TEXT, PING))
    c.expect_close(1003, what="a binary frame followed by a ping command")


# ---- the closing handshake ----------------------------------------------------------

@pytest.mark.parametrize("code", [1000, 3000, 4000, 4999])
def test_client_close_is_echoed_with_same_code(server, code):
    c = RawClient.open(server)
    c.send_frame(OP_CLOSE, close_payload(code, "bye"))
    c.expect_close(code, reply=False, what=f"client close {code}")


def test_client_close_with_125_byte_payload_is_echoed(server):
    c = RawClient.open(server)
    c.send_frame(OP_CLOSE, close_payload(1000, "r" * 123))
    c.expect_close(1000, reply=False, what="client close with a 123-byte reason")


def test_empty_close_is_answered_with_close(server):
    c = RawClient.open(server)
    c.send_frame(OP_CLOSE, b"")
    c.expect_close({None, 1000}, reply=False, what="an empty client close")


def test_close_reason_with_invalid_utf8_closes_1007(server):
    c = RawClient.open(server)
    c.send_frame(OP_CLOSE, close_payload(1000, b"bad \xff reason"))
    c.expect_close(1007, reply=False, what="a close reason with invalid UTF-8")


def test_close_during_fragmented_message_is_echoed(server):
    c = RawClient.open(server)
    c.send(frame(OP_TEXT, PING[:4], fin=False) + frame(OP_CLOSE, close_payload(1000)))
    c.expect_close(1000, reply=False, what="a close in the middle of a fragmented message")


def test_nothing_is_processed_after_client_close(server):
    c = RawClient.open(server)
    c.send_quietly(frame(OP_CLOSE, close_payload(1000)) + frame(OP_TEXT, PING))
    c.expect_close(1000, reply=False, what="a close followed by a ping command")


def test_raw_client_gone_without_close_does_not_hurt_server(server):
    c = RawClient.open(server)
    c.send(frame(OP_TEXT, PING[:10], fin=False))
    c.close()
    other = RawClient.open(server)
    assert other.request({"type": "ping", "ref": 1}) == PONG


# ---- hostile input, at random (deterministic seed) ------------------------------

def _random_frames(rng) -> bytes:
    out = b""
    for _ in range(rng.randint(1, 6)):
        op = rng.choice([OP_CONT, OP_TEXT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, 0x3, 0xB])
        kind = rng.random()
        if kind < 0.4:
            payload = cmd({"type": rng.choice(["ping", "nope"]), "ref": rng.randint(0, 9)})
        elif kind < 0.7:
            payload = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
        else:
            payload = rng.choice(["é😀", "\u20ac", "x" * 130]).encode()
            payload = payload[:rng.randint(0, len(payload))]
        form = rng.choice([None, None, None, 16, 64])
        if form is None and len(payload) >= 126:
            form = 16
        out += frame(op, payload, fin=rng.random() < 0.8, mask=rng.random() < 0.9,
                     rsv=rng.choice([0, 0, 0, 0, RSV1, RSV3]), length_form=form)
    # sometimes cut the last frame short, sometimes add raw garbage
    if rng.random() < 0.2:
        out = out[:rng.randint(1, len(out))]
    if rng.random() < 0.2:
        out += bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 20)))
    return out


def test_random_frames_never_break_the_server(server):
    import random
    rng = random.Random(6455)
    clients = []
    for _ in range(60):
        c = RawClient.open(server)
        c.send_quietly(_random_frames(rng))
        clients.append(c)
    time.sleep(0.3 * SLOW)
    codes = set()
    for c in clients:
        try:
            for _ in range(50):
                f = c.recv_frame(timeout=0.05)
                if f.opcode == OP_CLOSE:
                    codes.add(f.close_code)
                    break
        except (PeerClosed, OSError):
            pass
        c.close()
    assert codes <= {1000, 1002, 1003, 1007, 1009, None}, f"unexpected close codes for garbage: {codes}"
    fresh = RawClient.open(server)
    assert fresh.request({"type": "ping", "ref": 1}) == PONG, "server unusable after random frames"
