"""History on Redis Streams (PROTOCOL.md sections 2 and 6): NS:history:{ROOM}
holds the persisted messages of a room, shared by every node, in delivery
order, the stream entry id being the offset; `history` and `join since`
read it from any node; recovery is exact across nodes (no gap, no
duplicate, replay before live) and `recovered` is false once the stream no
longer reaches back; trimming by length and age; the persist-and-publish
script survives SCRIPT FLUSH (NOSCRIPT); --store-redis puts history and
presence on another Redis."""

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
    a = redis_node(wsfan, redis_server, "hist-a", "--workers", "2", "--rate-limit", "0")
    b = redis_node(wsfan, redis_server, "hist-b", "--workers", "2", "--rate-limit", "0")
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


def test_recovered_is_false_once_the_stream_was_trimmed(redis_factory, wsfan):
    redis_srv = redis_factory()
    # Publishes faster than --rate-limit's default on purpose; the limit has its own tests (test_limits.py).
    a = redis_node(wsfan, redis_srv, "trim-a", "--history-length", "10", "--rate-limit", "0")
    b = redis_node(wsfan, redis_srv, "trim-b", "--history-length", "10", "--rate-limit", "0")
    room = uniq("htrim")
    r = redis_srv.client()
    N = 500

    async def scenario():
        pub = await connect(a, uniq("pub"))
        c1 = await connect(b, uniq("late1"))
        c2 = await connect(b, uniq("late2"))
        try:
            await pub.join(room)
            acks = await publish_many(pub, room, [{"n": k} for k in range(N)], window=100)
            length = r.xlen(stream_key(room))
            first = r.xrange(stream_key(room), count=1)[0][0]
            old = await c1.join(room, since=acks[0]["offset"])
            await c1.drain(0.2)
            replayed_old = [m for m in c1.inbox if m["type"] == "message"]
            ok = await c2.join(room, since=first)
            msgs = await c2.recv_n(lambda m: m["type"] == "message", ok.get("missed") or 0, "replay", 5)
            h = await c2.history(room, limit=1000)
            return acks, length, first, old, replayed_old, ok, msgs, h
        finally:
            for c in (pub, c1, c2):
                await c.close()

    acks, length, first, old, replayed_old, ok, msgs, h = run(scenario(), 60)
    stream = [e[0] for e in r.xrange(stream_key(room))]
    assert 10 <= length < N, f"precondition: MAXLEN ~ 10 trims 500 entries to at least 10 and fewer than 500: {length}"
    assert old.get("recovered") is False and old.get("missed") == 0, \
        f"since an offset trimmed from the stream: recovered false and nothing missed counted: {old!r}"
    assert not replayed_old, f"nothing is replayed when not recovered: {short(replayed_old)}"
    assert old.get("offset") == acks[-1]["offset"], f"joined offset is the latest: {old!r} vs {acks[-1]!r}"
    assert ok.get("recovered") is True, f"since the stream's first entry {first}: recovered: {ok!r}"
    assert [m["offset"] for m in msgs] == stream[1:], "the replay is every entry after the since, in order"
    hist = [m["offset"] for m in h["messages"]]
    assert hist and hist == stream[-len(hist):] and len(hist) >= 10, \
        f"history returns the newest entries of the stream (at least the configured 10): {len(hist)} {hist[:3]}"


@pytest.mark.parametrize("case", ["stream_expired", "entries_aged"])
def test_history_trimmed_by_age_never_reports_a_gap_as_recovered(redis_server, wsfan, case):
    """--history-ttl 1: messages older than a second are out of history. A
    join since m1 after m2 aged out either says recovered false, or replays
    every message after m1 (m2 included): never recovered true with m2
    silently missing.
    stream_expired: m1 and m2, then nothing for 1.5 s (the stream key's own
    expiry passes), then m3. entries_aged: m1, m2, m3 0.75 s later (the key
    lives on), then the join 0.45 s after that (m1 and m2 are older than 1 s,
    m3 is not)."""
    a = redis_node(wsfan, redis_server, "age-a", "--history-ttl", "1")
    b = redis_node(wsfan, redis_server, "age-b", "--history-ttl", "1")
    room = uniq("hage")

    async def scenario():
        pub = await connect(a, uniq("pub"))
        late = await connect(b, uniq("late"))
        try:
            await pub.join(room)
            m1 = await pub.publish(room, "m1")
            await pub.publish(room, "m2")
            if case == "stream_expired":
                await asyncio.sleep(1.5)
                await pub.publish(room, "m3")
            else:
                await asyncio.sleep(0.75)
                await pub.publish(room, "m3")
                await asyncio.sleep(0.45)
            h = await pub.history(room)  # before the join: m3 is under a second old
            j = await late.join(room, since=m1["offset"])
            await late.drain(0.3)
            replay = [m["data"] for m in late.inbox if m["type"] == "message"]
            return m1, j, replay, h
        finally:
            await pub.close()
            await late.close()

    m1, j, replay, h = run(scenario())
    assert [m["data"] for m in h["messages"]] == ["m3"], \
        f"with --history-ttl 1, messages older than a second are out of history: {short(h['messages'])}"
    if j.get("recovered"):
        assert replay == ["m2", "m3"], \
            f"join since m1 ({m1['offset']}) answered recovered:true but replayed {replay}: m2 is silently lost " \
            f"(joined {j!r}); with m2 aged out of history the answer must be recovered:false"
    else:
        assert replay == [] and j.get("missed") == 0, f"recovered false replays nothing: {replay} {j!r}"


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
