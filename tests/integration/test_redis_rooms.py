"""GET /api/rooms with Redis (PROTOCOL.md section 7, docs/protocol.md
sections 6 and 7): every node keeps its member count of each room in
NS:rooms:{NODE}, and its place in NS:rooms:nodes, refreshed every
--presence-ttl/3 s. A refresh writes only the rooms whose count changed
(and those gone), the counts of all live nodes add up, a killed node's
counts vanish within --presence-ttl, a hash that Redis lost, or that
holds other counts after a reconnection, is written again, and each
tenant has keys of its own."""

import json
import time

from conftest import SLOW, connect_json, http_get, readyz, redis_node, run, run_wsfan, wait_until
from protocol_client import Client, connect, uniq

NS = "wsfan"
TTL = 2   # --presence-ttl: a refresh every 2/3 s
SECRET = "redis-rooms-test-secret-0123456789ab"


def node(wsfan, redis_server, name, *args):
    return redis_node(wsfan, redis_server, name, "--workers", "2", "--presence-ttl", str(TTL), *args)


def rooms(srv, tenant=None):
    """GET /api/rooms as {room: (local, cluster)}."""
    resp = http_get(srv.port, "/api/rooms" + (f"?tenant={tenant}" if tenant else ""))
    assert resp.status == 200, resp
    return {r["room"]: (r["local"], r["cluster"]) for r in json.loads(resp.body)["rooms"]}


def counts(r, node_id, ns=NS):
    """What NS:rooms:{NODE} holds, as {room: members}."""
    return {k: int(v) for k, v in r.hgetall(f"{ns}:rooms:{{{node_id}}}").items()}


def wait_counts(r, node_id, want, what, timeout=3 * TTL):
    """Waits until NS:rooms:{NODE} holds want."""
    wait_until(lambda: (counts(r, node_id) == want, counts(r, node_id)), what, timeout=timeout)


async def members(srv, room, n):
    cs = [await connect(srv, uniq("u")) for _ in range(n)]
    for c in cs:
        await c.join(room)
    return cs


async def close_all(cs):
    for c in cs:
        await c.close()


def test_counts_of_two_nodes_add_up(redis_server, wsfan):
    a, b = node(wsfan, redis_server, "rooms-a"), node(wsfan, redis_server, "rooms-b")
    both, only_a, only_b = uniq("both"), uniq("only-a"), uniq("only-b")
    r = redis_server.client()

    async def scenario():
        cs = await members(a, both, 2) + await members(b, both, 1) + await members(a, only_a, 1) + \
            await members(b, only_b, 3)
        try:
            want = {both: 3, only_a: 1, only_b: 3}

            def settled():
                seen = rooms(a), rooms(b)
                return all({k: v[1] for k, v in s.items()} == want for s in seen), seen
            on_a, on_b = wait_until(settled, "the cluster counts of both nodes", timeout=3 * TTL)
            return on_a, on_b, counts(r, "rooms-a"), counts(r, "rooms-b"), r.zrange(f"{NS}:rooms:nodes", 0, -1,
                                                                                     withscores=True)
        finally:
            await close_all(cs)

    on_a, on_b, hash_a, hash_b, alive = run(scenario(), 30)
    assert on_a == {both: (2, 3), only_a: (1, 1), only_b: (0, 3)}, on_a
    assert on_b == {both: (1, 3), only_a: (0, 1), only_b: (3, 3)}, on_b
    assert hash_a == {both: 2, only_a: 1} and hash_b == {both: 1, only_b: 3}, (hash_a, hash_b)
    now_ms = time.time() * 1000
    assert sorted(n for n, _ in alive) == ["rooms-a", "rooms-b"], alive
    assert all(now_ms < score <= now_ms + TTL * 1000 + 100 for _, score in alive), \
        f"each node is alive in {NS}:rooms:nodes until its last refresh plus --presence-ttl: {alive}"


def test_a_killed_nodes_counts_vanish_within_the_ttl(redis_server, wsfan):
    survivor, victim = node(wsfan, redis_server, "rooms-s"), node(wsfan, redis_server, "rooms-v")
    room = uniq("kill")
    r = redis_server.client()

    async def scenario():
        mine = await members(survivor, room, 1)
        theirs = await members(victim, room, 2)
        try:
            wait_until(lambda: (rooms(survivor).get(room) == (1, 3), rooms(survivor)), "3 members counted",
                       timeout=3 * TTL)
            t0 = time.monotonic()
            victim.kill()
            wait_until(lambda: (rooms(survivor).get(room) == (1, 1), rooms(survivor)),
                       "the killed node's members no longer counted", timeout=TTL + 2)
            gone_after = time.monotonic() - t0
            # its hash expires by itself, and a refresh of the survivor takes it out of the index
            wait_until(lambda: (not r.exists(f"{NS}:rooms:{{rooms-v}}"), counts(r, "rooms-v")),
                       "the killed node's hash expired", timeout=TTL + 2)
            wait_until(lambda: (r.zscore(f"{NS}:rooms:nodes", "rooms-v") is None,
                                r.zrange(f"{NS}:rooms:nodes", 0, -1)), "the killed node out of the index",
                       timeout=2)
            return gone_after, counts(r, "rooms-s")
        finally:
            await close_all(mine + theirs)

    gone_after, hash_s = run(scenario(), 30)
    assert gone_after <= (TTL + 1) * SLOW, f"the dead node's counts should go within --presence-ttl: {gone_after:.2f}s"
    assert hash_s == {room: 1}, hash_s


def test_a_refresh_writes_only_the_counts_that_changed(redis_server, wsfan):
    """A count changed by hand in the node's hash stays as it is while its
    room does not change: the refreshes write the rooms that changed only
    (and take away those gone), not the whole hash."""
    a = node(wsfan, redis_server, "rooms-d")
    still, moving, going = uniq("still"), uniq("moving"), uniq("going")
    r = redis_server.client()
    key = f"{NS}:rooms:{{rooms-d}}"

    async def scenario():
        steps = {}
        cs = await members(a, still, 1)
        mover = await members(a, moving, 1)
        leaver = await members(a, going, 2)
        try:
            wait_counts(r, "rooms-d", {still: 1, moving: 1, going: 2}, "the node's counts in its hash")
            r.hset(key, still, 99)   # same number of rooms: only a rewrite would undo it
            mover += await members(a, moving, 1)
            await close_all(leaver)
            wait_counts(r, "rooms-d", {still: 99, moving: 2}, "the changed count written and the room gone taken away")
            time.sleep(2 * TTL / 3 + 0.2)   # one more refresh: nothing changed, nothing written
            steps["after"] = counts(r, "rooms-d")
            steps["api"] = rooms(a)
            await close_all(cs + mover)
            wait_until(lambda: (not r.exists(key), counts(r, "rooms-d")), "the hash of a node without rooms",
                       timeout=3 * TTL)
            steps["index"] = r.zrange(f"{NS}:rooms:nodes", 0, -1)
            return steps
        finally:
            await close_all(cs + mover + leaver)

    steps = run(scenario(), 30)
    assert steps["after"] == {still: 99, moving: 2}, f"a room whose count did not change was rewritten: {steps}"
    # the cluster count is Redis's: never below the local one
    assert steps["api"] == {still: (1, 99), moving: (2, 2)}, steps["api"]
    assert steps["index"] == [], f"a node without rooms leaves {NS}:rooms:nodes: {steps['index']}"


def test_a_lost_hash_is_written_again(redis_server, wsfan):
    """Redis loses the node's hash (deleted, or Redis restarted empty): the
    next refreshes notice and write every room again."""
    a = node(wsfan, redis_server, "rooms-l")
    one, two = uniq("one"), uniq("two")
    r = redis_server.client()
    want = {one: 1, two: 2}

    async def scenario():
        cs = await members(a, one, 1) + await members(a, two, 2)
        try:
            wait_counts(r, "rooms-l", want, "the counts written")
            r.delete(f"{NS}:rooms:{{rooms-l}}")
            wait_counts(r, "rooms-l", want, "the deleted hash written again")
            redis_server.kill()
            redis_server.restart()
            r2 = redis_server.client()
            wait_counts(r2, "rooms-l", want, "the counts written again to a Redis restarted empty", timeout=10)
            return rooms(a)
        finally:
            await close_all(cs)

    assert run(scenario(), 40) == {one: (1, 1), two: (2, 2)}


def test_counts_are_written_anew_when_the_link_comes_back(redis_server, wsfan, proxies):
    """While the node is cut off, its hash comes to hold other counts for
    the same rooms (as on a replica that lagged, after a failover): once
    back, the node writes every room again, changed or not."""
    px = proxies(redis_server.port)
    a = node(wsfan, px.url, "rooms-f")
    one, two = uniq("one"), uniq("two")
    r = redis_server.client()
    key = f"{NS}:rooms:{{rooms-f}}"
    want = {one: 1, two: 2}

    async def scenario():
        cs = await members(a, one, 1) + await members(a, two, 2)
        try:
            wait_counts(r, "rooms-f", want, "the counts written")
            px.down()
            wait_until(lambda: (readyz(a) == 503, None), "the node sees Redis gone", timeout=5)
            r.hset(key, mapping={one: 7, two: 9})
            r.pexpire(key, 60_000)
            px.restore()
            wait_counts(r, "rooms-f", want, "the counts written anew after the reconnection", timeout=10)
            return rooms(a)
        finally:
            await close_all(cs)

    assert run(scenario(), 40) == {one: (1, 1), two: (2, 2)}


def test_each_tenant_has_its_own_counts(redis_server, wsfan):
    a = node(wsfan, redis_server, "rooms-t", "--auth", "jwt", "--jwt-secret", SECRET)
    room = uniq("tr")
    r = redis_server.client()

    async def connect_in(tenant=None):
        claims = ("--tenant", tenant) if tenant else ()
        token = run_wsfan("token", "--sub", uniq("u"), "--rooms", "*", *claims,
                          env={"WSFAN_JWT_SECRET": SECRET}).stdout.strip()
        jc = await connect_json(a, f"/ws?token={token}", max_queue=None)
        return Client(jc, tenant or "-")

    async def scenario():
        cs = [await connect_in("acme"), await connect_in("acme"), await connect_in("globex"), await connect_in()]
        for c in cs:
            await c.join(room)
        try:
            def settled():
                seen = counts(r, "rooms-t", f"{NS}:acme"), counts(r, "rooms-t", f"{NS}:globex"), counts(r, "rooms-t")
                return seen == ({room: 2}, {room: 1}, {room: 1}), seen
            wait_until(settled, "each tenant's counts in its own hash", timeout=3 * TTL)
            return (rooms(a, "acme"), rooms(a, "globex"), rooms(a),
                    [r.zrange(f"{ns}:rooms:nodes", 0, -1) for ns in (f"{NS}:acme", f"{NS}:globex", NS)])
        finally:
            await close_all(cs)

    acme, globex, plain, indexes = run(scenario(), 30)
    assert (acme, globex, plain) == ({room: (2, 2)}, {room: (1, 1)}, {room: (1, 1)}), (acme, globex, plain)
    assert indexes == [["rooms-t"]] * 3, indexes
