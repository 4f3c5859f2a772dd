"""The Redis link fails and comes back (issue 5, PROTOCOL.md sections 3, 6
and 7): a bad --redis URL is refused at start (exit 2, one line); an
unreachable Redis at start is retried (/healthz 200, /readyz 503 until it is
up); while the bus or store link is down, publish/send/broadcast are answered
with `unavailable` and clients stay connected; the nodes reconnect by
themselves (backoff with jitter), resubscribe, and fill the gap: messages
persisted meanwhile through another node reach the members of a node whose
subscriber link was down, in order, before live ones, without any client
reconnecting.

/readyz is checked where it exists; while the build answers 404 for it,
those checks end the test with pytest.skip (after every other check)."""

import asyncio
import json
import re
import time

import pytest

from conftest import (SLOW, await_ready, await_until, free_port, http_get, numsub, publish_many, readyz, redis_node,
                      run, run_wsfan, wait_until)
from protocol_client import connect, connect_on_other_worker, offset_key, uniq

NS = "wsfan"
LIVE = ("ack", "error")


def room_ch(room):
    return f"{NS}:room:{{{room}}}"


def room_offsets(c, room):
    return [m["offset"] for m in c.log if m["type"] == "message" and m.get("room") == room and "offset" in m]


def skip_if_no_readyz(statuses):
    if 404 in statuses:
        pytest.skip("GET /readyz answers 404 in this build: the /readyz checks were skipped "
                    "(every other check of this test passed)")


@pytest.mark.parametrize("flag,url", [
    ("--redis", "http://127.0.0.1:6379"),
    ("--redis", "redis://127.0.0.1:notaport"),
    ("--redis", "redis://"),
    ("--store-redis", "127.0.0.1:6379"),
])
def test_a_bad_redis_url_is_refused_at_start_with_one_line(flag, url):
    args = [flag, url] if flag == "--redis" else ["--redis", "redis://127.0.0.1:1", flag, url]
    p = run_wsfan(*args)
    assert p.returncode == 2, f"wsfan {' '.join(args)}: exit status should be 2, got {p.returncode}: {p.stderr!r}"
    lines = [ln for ln in (p.stderr + p.stdout).splitlines() if ln.strip()]
    assert len(lines) == 1 and url in lines[0], f"one clear line naming the bad URL, got {lines!r}"


def test_an_unreachable_redis_at_start_is_retried_until_it_is_up(redis_factory, wsfan):
    port = free_port()
    node = wsfan("--redis", f"redis://127.0.0.1:{port}", "--node-id", "late-redis", "--redis-backoff-min", "50",
                 "--redis-backoff-max", "200")  # the factory waits for /healthz 200: served without Redis
    room = uniq("late")
    statuses = []

    async def scenario():
        c = await connect(node, uniq("u"))
        try:
            statuses.append(readyz(node))
            down_send = await c.request({"type": "send", "user": "nobody", "data": 1, "ref": "s0"})
            down_join = await c.request({"type": "join", "room": room, "ref": "j0"})
            redis_srv = redis_factory(port=port)
            await await_ready(node, 5)
            statuses.append(readyz(node))
            await c.join(room)
            ack = await c.publish(room, {"after": "redis came up"})
            got = await c.recv_until("message", data={"after": "redis came up"})
            stream = redis_srv.client().xrange(f"{NS}:history:{{{room}}}")
            return c.session, down_send, down_join, ack, got, stream, c.ws.open
        finally:
            await c.close()

    session, down_send, down_join, ack, got, stream, still_open = run(scenario())
    assert node.alive(), f"an unreachable Redis at start must not be fatal; log:\n{node.log_tail()}"
    assert http_get(node.port, "/healthz").status == 200
    assert down_send.get("type") == "error" and down_send.get("code") == "unavailable", \
        f"send before Redis is up: unavailable, got {down_send!r}"
    assert down_join.get("type") == "error" and down_join.get("code") == "unavailable", \
        f"join before Redis is up (it cannot read the room's offset): unavailable, got {down_join!r}"
    assert still_open, "the client stays connected until Redis is up"
    assert got["offset"] == ack["offset"] and [e[0] for e in stream] == [ack["offset"]], (ack, got, stream)
    skip_if_no_readyz(statuses)
    assert statuses == [503, 200], f"/readyz: 503 while Redis is unreachable, 200 once connected: {statuses}"


def test_redis_killed_and_restarted_mid_traffic(redis_server, wsfan):
    """Two nodes, members and publishers on both, publishing all along.
    Redis is killed (SIGKILL) and restarted on the same port (empty). Node b
    reconnects fast; node a waits 1.5-3 s (its backoff): messages published
    through b meanwhile must reach a's members once a is back, in order,
    before the live ones."""
    fast = ("--redis-backoff-min", "100", "--redis-backoff-max", "300")
    slow = ("--redis-backoff-min", "3000", "--redis-backoff-max", "3000")
    # History keeps every message of the test: trimming is exact.
    keep = ("--history-length", "10000")
    a = redis_node(wsfan, redis_server, "fo-a", "--workers", "2", "--allow-broadcast", *keep, *slow)
    b = redis_node(wsfan, redis_server, "fo-b", "--workers", "2", "--allow-broadcast", *keep, *fast)
    room = uniq("fo")
    ua, ub = uniq("ua"), uniq("ub")
    statuses = {}

    async def traffic(c, stop, log):
        for k in range(100_000):
            if stop.is_set():
                return
            ref = c.ref()
            await c.send({"type": "publish", "room": room, "data": {"bg": c.label, "k": k}, "ref": ref})
            rep = await c.recv_match(lambda m, ref=ref: m.get("ref") == ref, f"the reply to publish {ref} "
                                     f"(a publish is never left unanswered)", 5)
            log.append((time.monotonic(), rep))
            await asyncio.sleep(0.02)

    async def scenario():
        ma = await connect(a, ua, label="member@a")
        mb = await connect(b, ub, label="member@b")
        pa = await connect(a, uniq("pa"), label="pub@a")
        pb = await connect(b, uniq("pb"), label="pub@b")
        gb = await connect(b, uniq("gap"), label="gapper@b")
        la = await connect(a, uniq("live"), label="live@a")
        cs = [ma, mb, pa, pb, gb, la]
        sessions = {c.label: c.session for c in cs}
        stop = asyncio.Event()
        logs = {"pub@a": [], "pub@b": []}
        tasks = []
        out = {}
        try:
            for c in cs:
                await c.join(room)
            tasks = [asyncio.create_task(traffic(pa, stop, logs["pub@a"])),
                     asyncio.create_task(traffic(pb, stop, logs["pub@b"]))]
            await await_until(lambda: (all(len(v) >= 5 for v in logs.values()), {k: len(v) for k, v in
                                                                                   logs.items()}),
                              "traffic before the kill", 5)
            redis_server.kill()
            t_kill = time.monotonic()
            # -- while Redis is down
            statuses["down"] = await await_until(
                lambda: (all(s in (503, 404) for s in (readyz(a), readyz(b))), (readyz(a), readyz(b))),
                "/readyz of both nodes should answer 503 once Redis is gone", 3)
            await asyncio.sleep(0.05)
            out["healthz down"] = (http_get(a.port, "/healthz").status, http_get(b.port, "/healthz").status)
            out["down replies"] = [
                await ma.request({"type": "publish", "room": room, "data": "down", "ref": "down-pub"}),
                await mb.request({"type": "publish", "room": room, "data": "down", "ephemeral": True,
                                  "ref": "down-eph"}),
                await mb.request({"type": "send", "user": ua, "data": "down", "ref": "down-send"}),
                await ma.request({"type": "broadcast", "data": "down", "ref": "down-bc"}),
            ]
            out["pings down"] = [await c.request({"type": "ping", "ref": "ping-down"}) for c in (ma, mb, gb, la)]
            await asyncio.sleep(max(0.0, 0.5 - (time.monotonic() - t_kill)))
            redis_server.restart()
            t_restart = time.monotonic()
            # -- node b is back first; node a still waits for its backoff
            await await_ready(b, 5)
            out["b back after"] = time.monotonic() - t_restart
            statuses["a while b back"] = readyz(a)
            gap = await publish_many(gb, room, [{"gap": k} for k in range(6)])
            statuses["a after gap"] = readyz(a)
            out["a down during gap"] = statuses["a after gap"] == 503
            await await_ready(a, 8)
            out["a back after"] = time.monotonic() - t_restart
            statuses["up"] = (readyz(a), readyz(b))
            live_a = await publish_many(la, room, [{"live_a": k} for k in range(4)])
            live_b = await publish_many(gb, room, [{"live_b": k} for k in range(4)])
            await await_until(lambda: (all(any(rep.get("type") == "ack" and t > t_restart for t, rep in v)
                                           for v in logs.values()), "acks after the restart"),
                              "both background publishers are acknowledged again after the restart", 8)
            stop.set()
            await asyncio.gather(*tasks)
            r = redis_server.client()
            r.publish(room_ch(room), json.dumps({"data": "end"}))
            for c in cs:
                await c.recv_until("message", data="end", timeout=5)
            await asyncio.gather(*(c.drain(0.15) for c in cs))
            out["send up"] = await mb.request({"type": "send", "user": ua, "data": "up", "ref": "up-send"})
            out["direct"] = await ma.recv_until("direct", data="up")
            out["pings up"] = [await c.request({"type": "ping", "ref": "ping-up"}) for c in cs]
            out["open"] = {c.label: c.ws.open for c in cs}
            out["sessions"] = sessions == {c.label: c.session for c in cs}
            out["stream"] = [e[0] for e in r.xrange(f"{NS}:history:{{{room}}}")]
            out["gap"] = [x["offset"] for x in gap]
            out["live"] = [x["offset"] for x in live_a + live_b]
            out["logs"] = {k: [rep for _, rep in v] for k, v in logs.items()}
            out["received"] = {c.label: room_offsets(c, room) for c in (ma, mb, la)}
            return out
        finally:
            stop.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*(c.close() for c in cs), return_exceptions=True)

    out = run(scenario(), 60)
    assert out["healthz down"] == (200, 200), f"/healthz stays 200 while Redis is down: {out['healthz down']}"
    for rep in out["down replies"]:
        assert rep.get("type") == "error" and rep.get("code") == "unavailable", \
            f"while Redis is down publish/send/broadcast are answered with the unavailable error: {rep!r}"
    assert all(p.get("type") == "pong" for p in out["pings down"] + out["pings up"]), "clients keep being served"
    assert all(out["open"].values()) and out["sessions"], \
        f"no client was disconnected or had to reconnect: open {out['open']}, same sessions {out['sessions']}"
    for name, replies in out["logs"].items():
        kinds = {(x["type"], x.get("code")) for x in replies}
        assert kinds <= {("ack", None), ("error", "unavailable")}, f"{name}: only acks and unavailable: {kinds}"
        assert ("error", "unavailable") in kinds, f"{name}: publishing during the outage saw no unavailable"
    assert out["a back after"] <= 3.0 * SLOW + 2.0, \
        f"node a (backoff 3 s) should be back within a few seconds of Redis: {out['a back after']:.1f}s"
    assert out["direct"]["from"] is not None, "user channels are subscribed again"
    stream = out["stream"]
    assert set(out["gap"]) <= set(stream) and set(out["live"]) <= set(stream), "the stream after the restart"
    for label, offs in out["received"].items():
        assert all(offset_key(x) < offset_key(y) for x, y in zip(offs, offs[1:])), \
            f"{label}: messages out of order or duplicated across the outage: {offs}"
        after = [o for o in offs if o in set(stream)]
        missing = [o for o in stream if o not in set(offs)]
        lost = [ln for ln in a.log().splitlines()
                if "missed while disconnected" in ln or "no longer reaches back" in ln]
        assert after == stream and not missing, (
            f"{label}: should get every message persisted after the restart exactly once, in stream order; "
            f"missing {len(missing)}: {missing[:8]}... (the gap messages published through node b while node a "
            f"was still reconnecting among them: {[o for o in missing if o in out['gap']]}; node a was down "
            f"then: {out['a down during gap']}); node a's log: {lost}")
    skip_if_no_readyz([s for v in statuses.values() for s in (v if isinstance(v, tuple) else (v,))])
    assert statuses["down"] == (503, 503), f"/readyz while Redis is down: {statuses['down']}"
    assert statuses["a while b back"] == 503 and statuses["a after gap"] == 503, \
        f"precondition: node a still reconnecting while the gap messages were published: {statuses}"
    assert statuses["up"] == (200, 200), f"/readyz after both reconnected: {statuses['up']}"


def test_gap_fill_after_the_subscriber_link_was_dropped(redis_server, wsfan):
    """CLIENT KILL TYPE pubsub drops the subscriber links of both nodes;
    node b is back within ~0.1 s, node a after 1-2 s (its backoff).
    Messages persisted through node b meanwhile reach a's members when a
    resubscribes: in order, exactly once, before the live messages published
    the moment a is subscribed again."""
    a = redis_node(wsfan, redis_server, "gap-a", "--workers", "2", "--redis-backoff-min", "2000",
                   "--redis-backoff-max", "2000")
    b = redis_node(wsfan, redis_server, "gap-b", "--workers", "2")
    r = redis_server.client()
    r1, r2 = uniq("gap1"), uniq("gap2")

    async def scenario():
        ma1 = await connect(a, uniq("ma1"), label="ma1@a")
        ma2 = await connect_on_other_worker(a, uniq("ma2"), {ma1.worker})
        ma2.label = "ma2@a"
        mb = await connect(b, uniq("mb"), label="mb@b")
        pb = await connect(b, uniq("pb"), label="pb@b")
        cs = [ma1, ma2, mb, pb]
        sessions = {c.label: c.session for c in cs}
        out = {}
        try:
            for c in cs:
                await c.join(r1)
            await ma1.join(r2)
            await pb.join(r2)
            pre = await publish_many(pb, r1, [{"pre": k} for k in range(3)])
            for c in (ma1, ma2, mb):
                await c.recv_n(lambda m: m["type"] == "message" and m.get("room") == r1, 3, "pre messages")
            killed = r.client_kill_filter(_type="pubsub")
            t_kill = time.monotonic()
            # b resubscribes within its 100 ms backoff; a is still away
            await await_until(lambda: (numsub(r, room_ch(r1))[room_ch(r1)] == 1, numsub(r, room_ch(r1))),
                              "node b should resubscribe within its backoff", 2)
            out["a readyz down"] = readyz(a)
            gap1 = await publish_many(pb, r1, [{"gap": k} for k in range(10)])
            gap2 = await publish_many(pb, r2, [{"gap2": k} for k in range(4)])
            out["a still away"] = numsub(r, room_ch(r1))[room_ch(r1)] == 1
            out["gap window"] = time.monotonic() - t_kill
            # the moment a is subscribed again, live messages
            await await_until(lambda: (numsub(r, room_ch(r1))[room_ch(r1)] == 2, numsub(r, room_ch(r1))),
                              "node a should resubscribe after its backoff (1-2 s)", 4)
            live = await publish_many(pb, r1, [{"live": k} for k in range(5)])
            await await_ready(a, 5)
            want = [x["offset"] for x in pre + gap1 + live]
            for c in (ma1, ma2, mb):
                await c.recv_n(lambda m: m["type"] == "message" and m.get("room") == r1 and
                               m.get("offset") == want[-1], 1, "the last live message", 5)
            await ma1.recv_n(lambda m: m["type"] == "message" and m.get("room") == r2 and
                             m.get("offset") == gap2[-1]["offset"], 1, "the gap messages of the second room", 5)
            await asyncio.gather(*(c.drain(0.2) for c in cs))
            out["want1"] = want
            out["want2"] = [x["offset"] for x in gap2]
            out["got1"] = {c.label: room_offsets(c, r1) for c in (ma1, ma2, mb)}
            out["got2"] = room_offsets(ma1, r2)
            out["killed"] = killed
            out["open"] = all(c.ws.open for c in cs) and sessions == {c.label: c.session for c in cs}
            return out
        finally:
            await asyncio.gather(*(c.close() for c in cs), return_exceptions=True)

    out = run(scenario(), 40)
    assert out["killed"] >= 2, f"CLIENT KILL TYPE pubsub should have dropped both nodes' subscriber links: " \
                               f"{out['killed']}"
    assert out["a still away"], \
        f"precondition: node a was still resubscribing when the gap messages were published " \
        f"({out['gap window']:.2f}s after the drop)"
    for label, got in out["got1"].items():
        assert got == out["want1"], (
            f"{label}: should get the 3 messages before the drop, the 10 persisted through node b while node "
            f"a's subscriber link was down, then the 5 live ones, each once, in this order; missing "
            f"{[o for o in out['want1'] if o not in got]}, got {got}")
    assert out["got2"] == out["want2"], f"the gap of a second room is filled too: {out['got2']} vs {out['want2']}"
    assert out["open"], "no client was disconnected"
    skip_if_no_readyz([out["a readyz down"]])
    assert out["a readyz down"] == 503, f"/readyz of node a while its subscriber link is down: {out['a readyz down']}"


# ---- a node whose store link comes back after its subscriber link -------------------------

def test_gap_fill_waits_for_the_store_link_when_the_subscriber_link_is_back_first(redis_server, wsfan, proxies):
    """Node a reaches Redis through two proxies, one for its bus links
    (--redis) and one for its store link (--store-redis, the same Redis):
    both drop; node b persists messages meanwhile; a's subscriber link comes
    back first and the store link only later. The messages persisted while a
    was away must still reach a's members, in order, before the live ones:
    the gap fill must not be given up because the store was not back yet.
    While only the store link is down, publishing on a answers unavailable."""
    bus_px, store_px = proxies(redis_server.port), proxies(redis_server.port)
    a = redis_node(wsfan, f"redis://127.0.0.1:{bus_px.port}", "px-a", "--store-redis",
                   f"redis://127.0.0.1:{store_px.port}", "--redis-backoff-min", "100", "--redis-backoff-max", "200")
    b = redis_node(wsfan, redis_server, "px-b")
    r = redis_server.client()
    room = uniq("pxgap")

    async def scenario():
        ma = await connect(a, uniq("ma"), label="ma@a")
        pa = await connect(a, uniq("pa"), label="pa@a")
        pb = await connect(b, uniq("pb"), label="pb@b")
        cs = [ma, pa, pb]
        out = {}
        try:
            for c in cs:
                await c.join(room)
            pre = await publish_many(pb, room, [{"pre": k} for k in range(3)])
            await ma.recv_n(lambda m: m["type"] == "message" and m.get("room") == room, 3, "pre messages")
            bus_px.down()
            store_px.down()
            await await_until(lambda: (numsub(r, room_ch(room))[room_ch(room)] == 1, numsub(r, room_ch(room))),
                              "node a's subscriber link should be gone once its proxy drops", 3)
            gap = await publish_many(pb, room, [{"gap": k} for k in range(5)])
            bus_px.restore()
            await await_until(lambda: (numsub(r, room_ch(room))[room_ch(room)] == 2, numsub(r, room_ch(room))),
                              "node a should resubscribe once its bus proxy is back", 3)
            await asyncio.sleep(0.3)
            out["readyz store down"] = readyz(a)
            out["publish store down"] = await pa.request({"type": "publish", "room": room, "data": "x",
                                                          "ref": "store-down"})
            store_px.restore()
            await await_ready(a, 5)
            live = await publish_many(pb, room, [{"live": k} for k in range(3)])
            want = [x["offset"] for x in pre + gap + live]
            try:
                await ma.recv_n(lambda m: m["type"] == "message" and m.get("offset") == want[-1], 1,
                                "the last live message", 5)
            except AssertionError:
                pass
            await ma.drain(0.2)
            out["want"] = want
            out["gap"] = [x["offset"] for x in gap]
            out["got"] = room_offsets(ma, room)
            out["open"] = all(c.ws.open for c in cs)
            return out
        finally:
            await asyncio.gather(*(c.close() for c in cs), return_exceptions=True)

    out = run(scenario(), 40)
    lost = [ln for ln in a.log().splitlines()
            if "missed while disconnected" in ln or "no longer reaches back" in ln]
    assert out["got"] == out["want"], (
        f"ma@a should get the 3 messages before the drop, the 5 persisted through node b while node a was away, "
        f"then the 3 live ones, in order; missing the gap messages "
        f"{[o for o in out['gap'] if o not in out['got']]}; node a's log: {lost}")
    assert out["publish store down"].get("code") == "unavailable", \
        f"publish while node a's store link is down: unavailable, got {out['publish store down']!r}"
    assert out["open"], "no client was disconnected"
    skip_if_no_readyz([out["readyz store down"]])
    assert out["readyz store down"] == 503, f"/readyz while the store link is down: {out['readyz store down']}"


# ---- jitter -----------------------------------------------------------------------------

LOG_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z .*redis (bus|subscriber|store) [^ ]+: (.*)$")


def _reconnect_delays(log: str):
    """Per link, milliseconds from "connection lost" to the next "connected"."""
    from datetime import datetime
    lost, delays = {}, {}
    for line in log.splitlines():
        m = LOG_TS.match(line)
        if not m:
            continue
        t = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").timestamp() * 1000
        link, what = m.group(2), m.group(3)
        if what.startswith("connection lost") and link not in lost:
            lost[link] = t
        elif what == "connected" and link in lost and link not in delays:
            delays[link] = t - lost[link]
    return delays


def test_reconnect_jitter_differs_between_nodes(redis_server, wsfan):
    """Two nodes with the same backoff lose Redis at the same moment: with
    jitter their reconnects spread out instead of coming in lockstep (the
    delays of the 3 links of each node, drawn in [500, 1000] ms, all equal
    within 3 ms between the nodes has a chance of about 1 in 300000)."""
    args = ("--redis-backoff-min", "1000", "--redis-backoff-max", "1000")
    a = redis_node(wsfan, redis_server, "jit-a", *args)
    b = redis_node(wsfan, redis_server, "jit-b", *args)
    redis_server.kill()
    time.sleep(0.2)
    redis_server.restart()
    wait_until(lambda: (len(_reconnect_delays(a.log())) == 3 and len(_reconnect_delays(b.log())) == 3,
                        (_reconnect_delays(a.log()), _reconnect_delays(b.log()))),
               "both nodes should reconnect their 3 links", 5)
    da, db = sorted(_reconnect_delays(a.log()).values()), sorted(_reconnect_delays(b.log()).values())
    assert all(450 <= d <= 2500 * SLOW for d in da + db), \
        f"reconnect delays with --redis-backoff-min 1000 should be about [500, 1000] ms (jitter in [d/2, d]): " \
        f"{da} {db}"
    assert not all(abs(x - y) <= 3 for x, y in zip(da, db)), \
        f"the two nodes reconnected after the same delays ({da} ms and {db} ms): the jitter is the same in " \
        f"every process (is the random generator seeded?), so nodes reconnect in lockstep"
