"""History and recovery (PROTOCOL.md section 2): the history command (limit
1..1000, default 50, before, oldest first, the same message events as live),
the ring of --history-length, join `since` (the missed messages in order right
after joined, recovered/missed, no gap and no duplicate even while others
publish), since older than the history (the ring of --history-length, or
the Redis stream trimmed by length), malformed since, --history-length 0,
and history trimmed by age (--history-ttl) never reported as recovered.

Every test runs on both engines (the `engine` fixture of conftest.py): the
memory bus and store, and Redis; but for a malformed limit, before or
since, which the command parser refuses before any engine sees it
(@engine_independent). Where a test takes two nodes, the Redis engine runs
two processes in one namespace and the memory engine, where one process is
the whole server, one process twice."""

import asyncio

import pytest

from conftest import engine_independent, publish_many, run
from protocol_client import clients, connect, offset_key, settle, short, uniq


@pytest.fixture(scope="module")
def server(engine, wsfan_module):
    # Publishes faster than --rate-limit's default on purpose; the limit has its own tests (test_limits.py).
    srv = engine.node(wsfan_module, "--workers", "2", "--rate-limit", "0")
    yield srv
    assert srv.alive(), f"server died during the module; log:\n{srv.log_tail()}"


@pytest.fixture(scope="module")
def ring10(engine, wsfan_module):
    """Two nodes of one server with --history-length 10."""
    # Publishes faster than --rate-limit's default on purpose (500 messages).
    nodes = engine.nodes(wsfan_module, 2, "--workers", "2", "--history-length", "10", "--rate-limit", "0")
    yield nodes
    for srv in nodes:
        assert srv.alive(), f"server died during the module; log:\n{srv.log_tail()}"


# Publishes into a room of ring10: Redis trims its stream with MAXLEN ~ 10,
# by whole stream nodes (of 100 entries), so it takes a few hundred to trim.
N_RING = 500


async def publish_n(p, room, n, start=0):
    """n persisted messages {"i": start..}; returns their acks."""
    return [await p.publish(room, {"i": i}) for i in range(start, start + n)]


def datas(msgs):
    return [m["data"]["i"] for m in msgs]


def pairs(msgs):
    return [(m["offset"], m["data"]["i"]) for m in msgs]


def kept_by_the_store(engine, node, room, acks, hist):
    """Checks what the store still holds of a room of ring10 after N_RING
    publishes (acks, in order), and returns it as (offset, i) pairs, oldest
    first. hist is the room's history with limit 1000.
    Memory: a ring, exactly the newest 10, all of them in hist.
    Redis: the stream NS:history:{ROOM}, trimmed with MAXLEN ~ 10: at least
    10 and fewer than N_RING entries, the newest acks; hist is the newest
    entries of the stream, at least 10."""
    sent = [(a["offset"], i) for i, a in enumerate(acks)]
    if not engine.is_redis:
        assert datas(hist["messages"]) == list(range(N_RING - 10, N_RING)), \
            f"--history-length 10 keeps the newest 10 of {N_RING}: {datas(hist['messages'])}"
        assert pairs(hist["messages"]) == sent[-10:]
        return sent[-10:]
    stream = [e[0] for e in engine.redis.client().xrange(f"{node.namespace}:history:{{{room}}}")]
    assert 10 <= len(stream) < N_RING, \
        f"precondition: MAXLEN ~ 10 trims {N_RING} entries to at least 10 and fewer than {N_RING}: {len(stream)}"
    kept = sent[-len(stream):]
    assert [o for o, _ in kept] == stream, "the stream holds the newest acknowledged publishes, in order"
    got = pairs(hist["messages"])
    assert got and got == kept[-len(got):] and len(got) >= 10, \
        f"history returns the newest entries of the stream (at least the configured 10): {len(got)} {got[:3]}"
    return kept


# ---- the history command -------------------------------------------------------------

def test_history_is_oldest_first_and_equals_the_live_events(server):
    room = uniq("h")

    async def scenario():
        async with clients(server, uniq("hp"), None) as (p, member):
            await p.join(room)
            await member.join(room)
            acks = await publish_n(p, room, 5)
            live = await member.recv_n(lambda m: m["type"] == "message", 5, "messages")
            return acks, live, await member.history(room)

    acks, live, h = run(scenario())
    assert h["messages"] == live, f"history should hold the same message events, oldest first:\n{h['messages']}\n" \
                                  f"live:\n{live}"
    assert [m["offset"] for m in h["messages"]] == [a["offset"] for a in acks]


def test_history_limit_and_before(server):
    room = uniq("hl")

    async def scenario():
        async with clients(server, uniq("hl")) as (p,):
            await p.join(room)
            acks = await publish_n(p, room, 20)
            return (acks, await p.history(room, limit=5), await p.history(room, limit=1),
                    await p.history(room, limit=5, before=acks[10]["offset"]),
                    await p.history(room, before=acks[3]["offset"]),
                    await p.history(room, before=acks[0]["offset"]),
                    await p.history(room, limit=1000), await p.history(room, limit=3, before=acks[19]["offset"]))

    acks, last5, last1, before10, before3, before0, all_, before19 = run(scenario())
    assert datas(last5["messages"]) == [15, 16, 17, 18, 19], f"limit 5: the newest 5, oldest first: {last5}"
    assert datas(last1["messages"]) == [19], f"limit 1: the newest one: {last1}"
    assert datas(before10["messages"]) == [5, 6, 7, 8, 9], \
        f"limit 5 before the 11th offset: the 5 messages strictly before it: {before10}"
    assert datas(before3["messages"]) == [0, 1, 2], f"before the 4th offset: the first 3: {before3}"
    assert before0["messages"] == [], f"nothing is before the first offset: {before0}"
    assert datas(all_["messages"]) == list(range(20)), f"limit 1000 (allowed) returns all 20: {all_}"
    assert datas(before19["messages"]) == [16, 17, 18], before19


def test_history_default_limit_is_50(server):
    room = uniq("h50")

    async def scenario():
        async with clients(server, uniq("h50")) as (p,):
            await p.join(room)
            for k in range(6):  # 60 messages, pipelined in batches of 10
                for i in range(k * 10, k * 10 + 10):
                    await p.send({"type": "publish", "room": room, "data": {"i": i}, "ref": f"b{i}"})
                for i in range(k * 10, k * 10 + 10):
                    await p.recv_until("ack", ref=f"b{i}")
            return await p.history(room), await p.history(room, limit=60)

    default, sixty = run(scenario())
    assert datas(default["messages"]) == list(range(10, 60)), \
        f"without limit: the newest 50, got {len(default['messages'])}: {datas(default['messages'])[:5]}..."
    assert datas(sixty["messages"]) == list(range(60)), f"limit 60 returns all 60"


@engine_independent
@pytest.mark.parametrize("limit", [0, 1001, -1, 100000, "10", 2.5, None, True],
                         ids=["0", "1001", "-1", "100000", "string", "float", "null", "true"])
def test_history_limit_out_of_range_is_bad_command(server, limit):
    room = uniq("hbad")

    async def scenario():
        async with clients(server, None) as (p,):
            await p.join(room)
            await p.publish(room, 1)
            return await p.request({"type": "history", "room": room, "limit": limit, "ref": "l"})

    r = run(scenario())
    assert r["type"] == "error" and r["code"] == "bad_command" and r["ref"] == "l", \
        f"history limit {limit!r} should be bad_command, got {r!r}"


@engine_independent
@pytest.mark.parametrize("before", ["abc", "", "1-", "-1", "1-2-3", "x-1", 5, ["1-0"]])
def test_history_before_malformed_is_bad_command(server, before):
    room = uniq("hbb")

    async def scenario():
        async with clients(server, None) as (p,):
            await p.join(room)
            return await p.request({"type": "history", "room": room, "before": before, "ref": "b"})

    r = run(scenario())
    assert r["type"] == "error" and r["code"] == "bad_command" and r["ref"] == "b", \
        f"history before {before!r} should be bad_command, got {r!r}"


def test_history_ring_wraps_at_history_length(engine, ring10):
    a, b = ring10
    room = uniq("ring")

    async def scenario():
        p = await connect(a, uniq("rp"))
        rd = await connect(b, uniq("rd"))
        try:
            await p.join(room)
            await rd.join(room)
            acks = await publish_many(p, room, [{"i": i} for i in range(N_RING)], window=100)
            all_ = await rd.history(room, limit=1000)
            kept = kept_by_the_store(engine, b, room, acks, all_)
            return kept, all_, await rd.history(room), await rd.history(room, limit=3, before=kept[5][0]), \
                await rd.history(room, before=kept[0][0])
        finally:
            await p.close()
            await rd.close()

    kept, all_, default, mid, oldest = run(scenario())
    assert default["messages"] == all_["messages"][-50:], "without limit: the newest 50 (all that is kept, or 50)"
    assert pairs(mid["messages"]) == kept[2:5], f"limit 3 before the 6th message kept: {short(mid['messages'])}"
    assert oldest["messages"] == [], f"nothing older than what is kept is returned: {short(oldest['messages'])}"


def test_history_unavailable_with_history_length_0(engine, wsfan):
    srv = engine.node(wsfan, "--workers", "2", "--history-length", "0")
    room = uniq("h0")

    async def scenario():
        async with clients(srv, uniq("h0"), None) as (p, member):
            await p.join(room)
            await member.join(room)
            ack = await p.publish(room, "still delivered")
            m = await member.recv_until("message", data="still delivered")
            r = await p.request({"type": "history", "room": room, "ref": "h0"})
            r2 = await member.request({"type": "history", "room": room, "limit": 1, "ref": 4})
            j = await member.request({"type": "join", "room": uniq("h0-other"), "since": "1-0", "ref": "s"})
            return ack, m, r, r2, j

    ack, m, r, r2, j = run(scenario())
    assert r["type"] == "error" and r["code"] == "history_unavailable" and r["ref"] == "h0", \
        f"history with --history-length 0 should be history_unavailable, got {r!r}"
    assert r2["type"] == "error" and r2["code"] == "history_unavailable" and r2["ref"] == 4, r2
    assert j["type"] == "joined" and j["recovered"] is False and j["missed"] == 0, \
        f"without history nothing can be recovered: {j!r}"


# ---- join since ----------------------------------------------------------------------

def test_join_since_replays_exactly_the_missed_messages_before_live_ones(server):
    room = uniq("since")
    late_user = uniq("late")

    async def scenario():
        async with clients(server, uniq("sp")) as (p,):
            await p.join(room)
            acks = await publish_n(p, room, 3)
            seen_offset = acks[-1]["offset"]       # the client saw messages 0..2, then went away
            missed_acks = await publish_n(p, room, 7, start=3)
            late = await connect(server, late_user)
            try:
                await late.send({"type": "join", "room": room, "since": seen_offset, "ref": "rejoin"})
                j = await late.recv_until("joined", ref="rejoin")
                await p.publish(room, {"i": 100})   # live, after the join
                await late.recv_until("message", data={"i": 100})
                await settle([late, p])
                stream = [m for m in late.log if m["type"] in ("joined", "message")]
                return missed_acks, j, stream, late.inbox
            finally:
                await late.close()

    missed_acks, j, stream, inbox = run(scenario())
    assert j == {"type": "joined", "ref": "rejoin", "room": room, "offset": missed_acks[-1]["offset"],
                 "recovered": True, "missed": 7}, f"joined should report the latest offset, recovered, 7 missed: {j}"
    assert stream[0]["type"] == "joined", f"joined comes before any message: {stream[:3]}"
    replay = stream[1:8]
    assert datas(replay) == list(range(3, 10)), f"the 7 missed messages, in order, right after joined: {stream}"
    assert [m["offset"] for m in replay] == [a["offset"] for a in missed_acks]
    assert datas(stream[8:]) == [100], f"then the live message, once, and nothing else: {stream[8:]}"


def test_join_since_the_latest_offset_misses_nothing(server):
    room = uniq("since-latest")

    async def scenario():
        async with clients(server, uniq("sl"), uniq("sl2")) as (p, late):
            await p.join(room)
            acks = await publish_n(p, room, 4)
            j = await late.join(room, since=acks[-1]["offset"])
            await settle([late])
            return acks, j, [m for m in late.inbox if m["type"] == "message"]

    acks, j, replay = run(scenario())
    assert j["recovered"] is True and j["missed"] == 0 and j["offset"] == acks[-1]["offset"], j
    assert replay == [], f"nothing was missed, nothing is replayed: {replay}"


def test_join_since_in_the_ring_and_older_than_the_ring(engine, ring10):
    """Published on one node, recovered on the other: since the oldest message
    kept, since the newest one dropped, and since older ones."""
    a, b = ring10
    room = uniq("since-ring")

    async def scenario():
        p = await connect(a, uniq("rp"))
        cs = []
        try:
            await p.join(room)
            acks = await publish_many(p, room, [{"i": i} for i in range(N_RING)], window=100)
            kept = kept_by_the_store(engine, a, room, acks, await p.history(room, limit=1000))
            first = [x["offset"] for x in acks].index(kept[0][0])
            joins = {}
            for label, since in (("oldest-kept", kept[0][0]), ("newest-dropped", acks[first - 1]["offset"]),
                                 ("old", acks[4]["offset"]), ("older", acks[0]["offset"])):
                c = await connect(b, None, label=label)
                cs.append(c)
                joins[label] = await c.join(room, since=since)
            live = await p.publish(room, {"i": "live"})
            for c in cs:
                await c.recv_until("message", data={"i": "live"})
            await settle(cs + [p])
            return acks, kept, (live["offset"], "live"), \
                {c.label: (joins[c.label], pairs([m for m in c.log if m["type"] == "message"])) for c in cs}
        finally:
            await p.close()
            await asyncio.gather(*(c.close() for c in cs))

    acks, kept, live, out = run(scenario())
    j, msgs = out["oldest-kept"]
    assert j["recovered"] is True and j["missed"] == len(kept) - 1, \
        f"since the oldest kept message: {len(kept) - 1} missed, recovered: {j}"
    assert msgs == kept[1:] + [live], f"replay of every message kept after it, in order, then live: {msgs}"
    j, msgs = out["newest-dropped"]
    if j["recovered"]:   # every message after it is still kept: recovering exactly is allowed
        assert j["missed"] == len(kept) and msgs == kept + [live], (j, msgs)
    else:
        assert j["missed"] == 0 and msgs == [live], f"not recovered: nothing replayed: {j} {msgs}"
    for label in ("old", "older"):
        j, msgs = out[label]
        assert j["type"] == "joined" and j["recovered"] is False and j["missed"] == 0, \
            f"since older than what is kept ({label}) should be recovered false, missed 0: {j}"
        assert j["offset"] == acks[-1]["offset"], f"joined offset is the latest: {j!r} vs {acks[-1]!r}"
        assert msgs == [live], f"nothing may be replayed when not recovered ({label}): {msgs}"


@engine_independent
@pytest.mark.parametrize("since", ["abc", "", "1-", "-1", "1-2-3", "x-1", "1.5-0", 5, 1.5, ["1-0"], {"o": "1-0"}],
                         ids=lambda v: repr(v))
def test_join_since_malformed_is_bad_command_and_does_not_join(server, since):
    room = uniq("since-bad")

    async def scenario():
        async with clients(server, None) as (c,):
            r = await c.request({"type": "join", "room": room, "since": since, "ref": "sb"})
            nm = await c.request({"type": "publish", "room": room, "data": 1, "ref": "nm"})
            return r, nm

    r, nm = run(scenario())
    assert r["type"] == "error" and r["code"] == "bad_command" and r["ref"] == "sb", \
        f"join since {since!r} should be bad_command, got {r!r}"
    assert nm.get("code") == "not_member", f"the refused join must not join: {nm!r}"


def test_join_since_while_another_client_publishes_has_no_gap_and_no_duplicate(server):
    room = uniq("since-race")
    total = 300

    async def scenario():
        async with clients(server, uniq("racer"), uniq("early")) as (p, early):
            await p.join(room)
            first = await p.publish(room, {"i": -1})
            since = first["offset"]
            started = asyncio.Event()

            async def publisher():
                acks = []
                for k in range(0, total, 10):   # pipelined in batches of 10
                    for i in range(k, k + 10):
                        await p.send({"type": "publish", "room": room, "data": {"i": i}, "ref": f"r{i}"})
                    for i in range(k, k + 10):
                        acks.append(await p.recv_until("ack", ref=f"r{i}", timeout=10))
                    if k >= 50:
                        started.set()
                return acks

            async def joiner():
                await started.wait()
                c = await connect(server, uniq("rejoiner"))
                try:
                    await c.send({"type": "join", "room": room, "since": since, "ref": "rj"})
                    j = await c.recv_until("joined", ref="rj", timeout=10)
                    return c, j
                except BaseException:
                    await c.close()
                    raise

            acks, (c, j) = await asyncio.gather(publisher(), joiner())
            try:
                last = acks[-1]["offset"]
                await c.recv_until("message", timeout=10, offset=last)
                await settle([c])
                stream = [m for m in c.log if m["type"] in ("joined", "message")]
                return acks, j, stream
            finally:
                await c.close()

    acks, j, stream = run(scenario(), timeout=60)
    assert j["recovered"] is True, f"since is in the history: recovered should be true: {j}"
    assert stream[0]["type"] == "joined", stream[:2]
    got = [m["offset"] for m in stream[1:]]
    want = [a["offset"] for a in acks]
    dups = len(got) - len(set(got))
    assert dups == 0, f"{dups} duplicate messages across the replay and the live stream"
    missing = sorted(set(want) - set(got), key=offset_key)
    assert not missing, f"{len(missing)} messages missing (gap) between the replay and live: first {missing[:3]}"
    assert got == want, "replayed + live should be exactly the publisher's acks, in order"
    assert 0 < j["missed"] < total, (f"the join should have landed while publishing ({j['missed']} missed of "
                                     f"{total}); the test did not race")
    assert datas(stream[1:1 + j["missed"]]) == list(range(j["missed"])), "the replay is the first messages, in order"


AGE_CASES = ("stream_expired", "entries_aged")


def test_history_trimmed_by_age_never_reports_a_gap_as_recovered(engine, wsfan):
    """--history-ttl 1: messages older than a second are out of history. A
    join since m1 after m2 aged out either says recovered false, or replays
    every message after m1 (m2 included): never recovered true with m2
    silently missing. Published on one node, joined on the other.
    stream_expired: m1 and m2, then nothing for 1.5 s (on Redis, past the
    stream key's expiry, if it had one), then m3. entries_aged: m1, m2, m3
    0.75 s later, then the join 0.45 s after that (m1 and m2 are older than
    1 s, m3 is not). The two cases run at the same time, each in its own
    room."""
    a, b = engine.nodes(wsfan, 2, "--history-ttl", "1")

    async def case(name):
        room = uniq(f"hage-{name}")
        pub = await connect(a, uniq("pub"))
        late = await connect(b, uniq("late"))
        try:
            await pub.join(room)
            m1 = await pub.publish(room, "m1")
            await pub.publish(room, "m2")
            if name == "stream_expired":
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

    async def scenario():
        return dict(zip(AGE_CASES, await asyncio.gather(*(case(name) for name in AGE_CASES))))

    for name, (m1, j, replay, h) in run(scenario()).items():
        assert [m["data"] for m in h["messages"]] == ["m3"], \
            f"{name}: with --history-ttl 1, messages older than a second are out of history: {short(h['messages'])}"
        if j.get("recovered"):
            assert replay == ["m2", "m3"], \
                f"{name}: join since m1 ({m1['offset']}) answered recovered:true but replayed {replay}: m2 is " \
                f"silently lost (joined {j!r}); with m2 aged out of history the answer must be recovered:false"
        else:
            assert replay == [] and j.get("missed") == 0, f"{name}: recovered false replays nothing: {replay} {j!r}"
