"""History on Redis Streams (PROTOCOL.md sections 2 and 6): NS:history:{ROOM}
holds the persisted messages of a room, shared by every node, in delivery
order, the stream entry id being the offset; `history` and `join since`
read it from any node; recovery is exact across nodes (no gap, no
duplicate, replay before live); the persist-and-publish script survives
SCRIPT FLUSH (NOSCRIPT); --store-redis puts history and presence on another
Redis.

History on one Redis node, as on the memory engines, is in test_history.py,
which runs on both: among it `recovered` false once the stream was trimmed
by length (test_join_since_in_the_ring_and_older_than_the_ring) and by age
(test_history_trimmed_by_age_never_reports_a_gap_as_recovered)."""

import asyncio
import json

import pytest

from conftest import SLOW, numsub, publish_many, redis_node, run
from protocol_client import connect, offset_key, short, uniq

NS = "wsfan"


def stream_key(room, ns=NS):
    return f"{ns}:history:{{{room}}}"


def stream_messages(r, room, ns=NS):
    """The stream's entries as (offset, from, data, ts)."""
    return [(i, f.get("f") or None, json.loads(f["d"]), int(f["t"])) for i, f in r.xrange(stream_key(room, ns))]


def as_tuples(msgs):
    return [(m["offset"], m["from"], m["data"], m["ts"]) for m in msgs]


@pytest.fixture
def two(redis_server, wsfan):
    # Publishes faster than --rate-limit's default on purpose; the limit has its own tests (test_limits.py).
    # History keeps every message of these tests (trimming is exact: the default 100 would cut them).
    args = ("--workers", "2", "--rate-limit", "0", "--history-length", "1000")
    a = redis_node(wsfan, redis_server, "hist-a", *args)
    b = redis_node(wsfan, redis_server, "hist-b", *args)
    yield a, b
    for n in (a, b):
        assert n.alive(), f"node {n.node_id} died; log:\n{n.log_tail()}"


def test_history_is_shared_by_the_nodes_and_equals_the_stream_in_order(redis_server, two):
    a, b = two
    room = uniq("hshared")
    r = redis_server.client()
    K = 20

    async def scenario():
        pa = await connect(a, uniq("pa"), label="pa")
        pb = await connect(b, uniq("pb"), label="pb")
        watcher = await connect(b, uniq("w"), label="watcher")
        try:
            for c in (pa, pb, watcher):
                await c.join(room)
            await asyncio.gather(publish_many(pa, room, [{"a": k} for k in range(K)], window=3),
                                 publish_many(pb, room, [{"b": k} for k in range(K)], window=3))
            live = await watcher.recv_n(lambda m: m["type"] == "message", 2 * K, "live messages", 10)
            ha = await pa.history(room, limit=1000)
            hb = await pb.history(room, limit=1000)
            mid = live[K]["offset"]
            before_a = await pa.history(room, limit=7, before=mid)
            before_b = await pb.history(room, limit=7, before=mid)
            return live, ha, hb, mid, before_a, before_b
        finally:
            for c in (pa, pb, watcher):
                await c.close()

    live, ha, hb, mid, before_a, before_b = run(scenario())
    stream = stream_messages(r, room)
    assert len(stream) == 2 * K, f"the stream should hold the {2 * K} messages: {len(stream)}"
    assert as_tuples(ha["messages"]) == stream, \
        f"history on node a should equal XRANGE of {stream_key(room)} in order:\n{short(ha['messages'])}\n{stream[:5]}"
    assert ha["messages"] == hb["messages"], "history is the same on both nodes"
    assert as_tuples(live) == stream, "live delivery order equals the stream's order"
    assert before_a["messages"] == before_b["messages"], "history before an offset is the same on both nodes"
    want = [s for s in stream if offset_key(s[0]) < offset_key(mid)][-7:]
    assert as_tuples(before_a["messages"]) == want, f"history before {mid} limit 7: the 7 stream entries before it"


def test_join_since_on_one_node_while_another_node_publishes_is_exact(redis_server, two):
    """A publisher on node a publishes continuously; clients on node b join
    with since at various points: each gets exactly the messages after its
    since, the replay first (missed of them), then the live ones."""
    a, b = two
    room = uniq("hsince")
    N = 150
    r = redis_server.client()

    async def scenario():
        pub = await connect(a, uniq("pub"), label="pub")
        await pub.join(room)
        acks = []
        done = asyncio.Event()

        async def publish():
            for start in range(0, N, 3):
                acks.extend(await publish_many(pub, room, [{"n": k} for k in range(start, min(N, start + 3))]))
            done.set()

        joiners = []

        async def join_at(i, at, back):
            for _ in range(10_000):
                if len(acks) >= at:
                    break
                await asyncio.sleep(0.001)
            since = acks[at - back]["offset"] if back else acks[at - 1]["offset"]
            c = await connect(b, uniq(f"j{i}"), label=f"joiner{i}(since #{at - back if back else at - 1})")
            joiners.append(c)
            j = await c.join(room, since=since)
            return c, since, j

        task = asyncio.create_task(publish())
        results = await asyncio.gather(*(join_at(i, at, back) for i, (at, back) in
                                         enumerate([(10, 10), (30, 5), (50, 1), (70, 0), (90, 40), (110, 25),
                                                    (130, 3)])))
        await asyncio.wait_for(task, 30 * SLOW)
        try:
            out = []
            for c, since, j in results:
                want = sum(1 for x in acks if offset_key(x["offset"]) > offset_key(since))
                await c.recv_n(lambda m: m["type"] == "message" and m.get("room") == room, want,
                               f"messages after {since}", 10)
                await c.drain(0.1)
                out.append((c.label, since, j, list(c.log)))
            return [x["offset"] for x in acks], out
        finally:
            await pub.close()
            for c in joiners:
                await c.close()

    offsets, out = run(scenario(), 60)
    assert [e[0] for e in r.xrange(stream_key(room))] == offsets, "the stream holds every acknowledged publish"
    for label, since, j, log in out:
        assert j.get("recovered") is True, f"{label}: joined since a recent offset should be recovered: {j!r}"
        idx = next(i for i, m in enumerate(log) if m["type"] == "joined")
        before = [m for m in log[:idx] if m["type"] == "message"]
        assert not before, f"{label}: messages before the joined reply: {short(before)}"
        got = [m["offset"] for m in log[idx + 1:] if m["type"] == "message" and m.get("room") == room]
        want = [o for o in offsets if offset_key(o) > offset_key(since)]
        assert got == want, (f"{label}: should get exactly the messages after {since} in order, no gap, no "
                             f"duplicate; missing {sorted(set(want) - set(got))[:5]}, unexpected "
                             f"{sorted(set(got) - set(want))[:5]}, duplicates "
                             f"{sorted({o for o in got if got.count(o) > 1})[:5]}")
        missed = j.get("missed")
        latest = j.get("offset")
        replay = got[:missed]
        assert all(offset_key(o) <= offset_key(latest) for o in replay) and \
            (not replay or replay[-1] == latest), \
            f"{label}: the {missed} replayed messages end at the joined offset {latest}: {replay[-3:]}"
        assert all(offset_key(o) > offset_key(latest) for o in got[missed:]), \
            f"{label}: live messages come after the replay (offset above {latest})"


def test_publishing_survives_script_flush(redis_server, two):
    """The persist-and-publish script is called with EVALSHA; after SCRIPT
    FLUSH (NOSCRIPT) it must be loaded again, not fail the publish."""
    a, b = two
    room = uniq("hflush")
    r = redis_server.client()

    async def scenario():
        pub = await connect(a, uniq("pub"))
        m = await connect(b, uniq("m"))
        try:
            await pub.join(room)
            await m.join(room)
            first = await pub.publish(room, "before")
            r.script_flush()
            replies = []
            for k in range(3):
                replies.append(await pub.request({"type": "publish", "room": room, "data": f"after{k}",
                                                  "ref": f"p{k}"}))
            got = await m.recv_n(lambda x: x["type"] == "message", 4, "messages", 5)
            late = await connect(b, uniq("late"))
            j = await late.join(room, since=first["offset"])
            await late.close()
            return replies, got, j
        finally:
            await pub.close()
            await m.close()

    replies, got, j = run(scenario())
    assert all(x["type"] == "ack" and x.get("offset") for x in replies), \
        f"publishes after SCRIPT FLUSH should be acknowledged with an offset (NOSCRIPT -> load again): {replies}"
    assert [x["data"] for x in got] == ["before", "after0", "after1", "after2"], short(got)
    assert j.get("missed") == 3 and j.get("recovered") is True, f"the stream holds them: {j!r}"
    assert r.xlen(stream_key(room)) == 4


def test_store_redis_puts_history_and_presence_on_another_redis(redis_factory, wsfan):
    bus_redis, store_redis = redis_factory(), redis_factory()
    args = ("--store-redis", store_redis.url, "--workers", "2")
    a = redis_node(wsfan, bus_redis, "store-a", *args)
    b = redis_node(wsfan, bus_redis, "store-b", *args)
    room = uniq("hstore")
    rb, rs = bus_redis.client(), store_redis.client()

    async def scenario():
        pub = await connect(a, uniq("pub"))
        m = await connect(b, uniq("m"))
        try:
            await pub.join(room)
            await m.join(room)
            acks = await publish_many(pub, room, [{"k": k} for k in range(5)])
            got = await m.recv_n(lambda x: x["type"] == "message", 5, "messages", 5)
            h = await m.history(room)
            late = await connect(b, uniq("late"))
            j = await late.join(room, since=acks[1]["offset"])
            replay = await late.recv_n(lambda x: x["type"] == "message", 3, "replay", 5)
            p = await late.presence(room)
            keys = (rs.exists(f"{NS}:presence:{{{room}}}"), rb.exists(f"{NS}:presence:{{{room}}}"))
            await late.close()
            return acks, got, h, j, replay, p, keys, numsub(rb, f"{NS}:room:{{{room}}}"), \
                numsub(rs, f"{NS}:room:{{{room}}}")
        finally:
            await pub.close()
            await m.close()

    acks, got, h, j, replay, p, keys, subs_bus, subs_store = run(scenario())
    offsets = [x["offset"] for x in acks]
    assert [x["offset"] for x in got] == offsets, "delivered across nodes with the acked offsets"
    assert [e[0] for e in rs.xrange(stream_key(room))] == offsets, "the stream is on the --store-redis"
    assert not rb.exists(stream_key(room)), "no history on the bus Redis"
    assert [x["offset"] for x in h["messages"]] == offsets
    assert j.get("recovered") is True and [x["offset"] for x in replay] == offsets[2:], f"{j!r} {short(replay)}"
    assert keys == (1, 0), f"presence is on the --store-redis (exists on store, bus): {keys}"
    assert len(p["users"]) == 3, f"presence across nodes from the store Redis: {p!r}"
    assert subs_bus[f"{NS}:room:{{{room}}}"] == 2 and subs_store[f"{NS}:room:{{{room}}}"] == 0, \
        f"pub/sub stays on the bus Redis: bus {subs_bus}, store {subs_store}"
