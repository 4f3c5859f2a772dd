"""Tenants and info (docs/protocol.md sections 1a, 3, 6 and 7): a tenant's
rooms, users, presence, history and broadcasts never meet another tenant's,
nor those of connections without a tenant, on one node and across nodes;
the HTTP API names the tenant (`tenant` in a publish's body, `?tenant=` on
every /api/ endpoint; an invalid one is 400); with Redis a tenant's keys and
channels are under <namespace>:<tenant> and the names without a tenant are
unchanged; presence_join and presence lists carry the `info` of the user's
newest connection.

Every test runs on both engines (the `engine` fixture of conftest.py). Where
a test takes two nodes, the Redis engine runs two processes in one
namespace, and the memory engine one process twice.

WebSocket clients are put in a tenant by their token (`--auth jwt`, claims
`tenant` and `info`, tokens minted with Debian's python3-jwt); the tests of
the HTTP API use servers without `--auth`, whose WebSocket clients have no
tenant."""

import asyncio
import json
import time
import urllib.parse

import pytest

from conftest import SLOW, await_until, connect_json, http_request, request_head, run
from protocol_client import Client, connect, settle, uniq

SECRET = "tenants-test-secret-0123456789abcdef"


def api_request(method, path, body=None):
    """Raw bytes of one request on a new connection; body an object (JSON)."""
    pairs = [("Connection", "close")]
    raw = b""
    if body is not None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        pairs += [("Content-Type", "application/json"), ("Content-Length", str(len(raw)))]
    return request_head(method, path, pairs) + raw


def call(srv, method, path, body=None):
    """(status, parsed JSON body) of one API request."""
    resp = http_request(srv.port, api_request(method, path, body))
    return resp.status, json.loads(resp.body) if resp.body else None


def ok(srv, method, path, body=None):
    status, reply = call(srv, method, path, body)
    assert status == 200, f"{method} {path} {body!r}: expected 200, got {status} {reply!r}"
    return reply


def publish(srv, body, query=""):
    return ok(srv, "POST", "/api/publish" + query, body)


def q(**params) -> str:
    return "?" + urllib.parse.urlencode(params)


def text(v) -> str:
    return v.decode() if isinstance(v, bytes) else v


def datas(msgs):
    return [m["data"] for m in msgs]


@pytest.fixture(scope="module")
def nodes(engine, wsfan_module):
    """Two nodes of one server (one process twice on the memory engine)."""
    srvs = engine.nodes(wsfan_module, 2, "--workers", "2")
    yield srvs
    for s in srvs:
        assert s.alive(), f"server died during the module; log:\n{s.log_tail()}"


@pytest.fixture(scope="module")
def server(nodes):
    return nodes[0]


# ---- the HTTP API names the tenant ---------------------------------------------------

def test_api_publish_to_a_tenant_never_reaches_a_room_of_the_same_name_without_one(server):
    room = uniq("tr")

    async def scenario():
        c = await connect(server, uniq("alice"))
        try:
            await c.join(room)
            await settle([c])
            c.take()
            publish(server, {"room": room, "tenant": "acme", "data": "acme body"})
            publish(server, {"room": room, "data": "acme query"}, q(tenant="acme"))
            publish(server, {"room": room, "tenant": "acme", "data": "both"}, q(tenant="acme"))
            publish(server, {"room": room, "data": "no tenant"})
            await c.recv_until("message", data="no tenant")
            await settle([c])
            return c.take(lambda m: m["type"] == "message")
        finally:
            await c.close()

    got = run(scenario())
    assert datas(got) == [], f"the room without a tenant got a tenant's messages: {got!r}"


def test_api_history_is_per_tenant(nodes):
    a, b = nodes
    room = uniq("th")
    offsets = {}
    for tenant, data in (("acme", 1), ("globex", 10), ("acme", 2), (None, 20)):
        body = {"room": room, "data": data}
        if tenant:
            body["tenant"] = tenant
        offsets.setdefault(tenant, []).append(publish(a, body)["offset"])
    # Read through the other node: the tenant's history is shared like any other.
    for tenant, want in (("acme", [1, 2]), ("globex", [10]), (None, [20]), ("initech", [])):
        query = q(room=room, tenant=tenant) if tenant else q(room=room)
        hist = ok(b, "GET", "/api/history" + query)
        assert hist["room"] == room, hist
        assert datas(hist["messages"]) == want, f"history of {room} in tenant {tenant}: {hist!r}"
        assert all(m["room"] == room for m in hist["messages"]), hist
        assert [m["offset"] for m in hist["messages"]] == offsets.get(tenant, []), hist


def test_api_presence_and_rooms_are_per_tenant(server):
    room, alice = uniq("tp"), uniq("alice")

    async def scenario():
        c = await connect(server, alice)
        try:
            await c.join(room)
            await settle([c])
            return (ok(server, "GET", "/api/presence" + q(room=room)),
                    ok(server, "GET", "/api/presence" + q(room=room, tenant="acme")),
                    ok(server, "GET", "/api/rooms"),
                    ok(server, "GET", "/api/rooms" + q(tenant="acme")))
        finally:
            await c.close()

    pres, pres_acme, rooms, rooms_acme = run(scenario())
    assert [u["user"] for u in pres["users"]] == [alice], pres
    assert pres_acme == {"room": room, "users": []}, f"acme has nobody in its {room}: {pres_acme!r}"
    assert room in [r["room"] for r in rooms["rooms"]], rooms
    assert room not in [r["room"] for r in rooms_acme["rooms"]], f"acme has no room {room}: {rooms_acme!r}"


def test_api_broadcast_to_a_tenant_never_reaches_connections_without_one(server):
    async def scenario():
        c = await connect(server, uniq("alice"))
        try:
            publish(server, {"all": True, "tenant": "acme", "data": "acme only"})
            publish(server, {"all": True, "data": "everyone"})
            await c.recv_until("broadcast", data="everyone")
            await settle([c])
            return c.take(lambda m: m["type"] == "broadcast")
        finally:
            await c.close()

    assert run(scenario()) == [], "a connection without a tenant got a tenant's broadcast"


def test_api_send_to_a_tenants_user_never_reaches_the_user_without_one(server):
    alice = uniq("alice")

    async def scenario():
        c = await connect(server, alice)
        try:
            publish(server, {"user": alice, "tenant": "acme", "data": "acme's alice"})
            publish(server, {"user": alice, "data": "this alice"})
            await c.recv_until("direct", data="this alice")
            await settle([c])
            return c.take(lambda m: m["type"] == "direct")
        finally:
            await c.close()

    assert run(scenario()) == [], "a user without a tenant got a direct message for a tenant's user of that name"


BAD_TENANTS = ["", "a b", "a/b", "caf\u00e9", "t" * 65, "a*", "{a}"]


@pytest.mark.parametrize("path", ["/api/history?room=r&tenant=", "/api/presence?room=r&tenant=",
                                  "/api/rooms?tenant=", "/api/stats?tenant="])
def test_api_invalid_tenant_in_the_query_is_400(server, path):
    for bad in BAD_TENANTS + ["%zz"]:
        full = path + (bad if bad == "%zz" else urllib.parse.quote(bad, safe=""))
        status, reply = call(server, "GET", full)
        assert status == 400, f"GET {full}: expected 400, got {status} {reply!r}"
        assert reply["error"] == "bad_command" and "tenant" in reply["message"], reply


def test_api_invalid_tenant_of_a_publish_is_400(server):
    for bad in BAD_TENANTS:
        status, reply = call(server, "POST", "/api/publish" + "?tenant=" + urllib.parse.quote(bad, safe=""),
                             {"room": "r", "data": 1})
        assert status == 400 and "tenant" in reply["message"], (bad, status, reply)
    for bad in BAD_TENANTS + [None, 5, ["acme"], {"t": "acme"}]:
        status, reply = call(server, "POST", "/api/publish", {"room": "r", "tenant": bad, "data": 1})
        assert status == 400, f"tenant {bad!r}: expected 400, got {status} {reply!r}"
        assert reply["error"] == "bad_command" and "tenant" in reply["message"], reply
    # The body and the query may both name it, but must agree.
    status, reply = call(server, "POST", "/api/publish" + q(tenant="globex"), {"room": "r", "tenant": "acme",
                                                                                "data": 1})
    assert status == 400 and "tenant" in reply["message"], (status, reply)
    # The longest tenant and all the characters of a name are fine.
    for good in ["t" * 64, "a:b.c-d_E9"]:
        publish(server, {"room": "r", "tenant": good, "data": 1})


# ---- Redis: names under <namespace>:<tenant> -----------------------------------------

def test_redis_keys_and_channels_of_a_tenant(engine, server):
    if not engine.is_redis:
        pytest.skip("Redis names: the memory engine has none")
    ns, room = server.namespace, uniq("tk")
    r = engine.redis.client()
    ps = r.pubsub()
    ps.subscribe(f"{ns}:acme:room:{{{room}}}", f"{ns}:acme:all", f"{ns}:room:{{{room}}}")
    for _ in range(3):
        assert ps.get_message(timeout=2 * SLOW)["type"] == "subscribe"
    try:
        publish(server, {"room": room, "tenant": "acme", "data": "a"})
        publish(server, {"all": True, "tenant": "acme", "data": "b"})
        publish(server, {"room": room, "data": "c"})
        got = []
        deadline = time.monotonic() + 5 * SLOW
        while len(got) < 3 and time.monotonic() < deadline:
            m = ps.get_message(timeout=0.5)
            if m and m["type"] == "message":
                got.append((text(m["channel"]), json.loads(m["data"])["data"]))
    finally:
        ps.close()
    assert sorted(got) == sorted([(f"{ns}:acme:room:{{{room}}}", "a"), (f"{ns}:acme:all", "b"),
                                  (f"{ns}:room:{{{room}}}", "c")]), got
    # The history of each under its own namespace; nothing else of the tenant
    # outside <namespace>:acme.
    assert r.xlen(f"{ns}:acme:history:{{{room}}}") == 1
    assert r.xlen(f"{ns}:history:{{{room}}}") == 1
    keys = [text(k) for k in r.scan_iter(f"{ns}:*{room}*")]
    stray = [k for k in keys if not k.startswith(f"{ns}:acme:") and k != f"{ns}:history:{{{room}}}"]
    assert stray == [], stray


def test_redis_a_service_publishing_to_a_tenants_channel_reaches_nobody_else(engine, server):
    """The subscriber reads the channels of its namespace only: a payload on
    a tenant's channel is that tenant's, never the room without a tenant."""
    if not engine.is_redis:
        pytest.skip("Redis channels: the memory engine has none")
    ns, room = server.namespace, uniq("ts")
    r = engine.redis.client()

    async def scenario():
        c = await connect(server, uniq("alice"))
        try:
            await c.join(room)
            await settle([c])
            c.take()
            r.publish(f"{ns}:acme:room:{{{room}}}", json.dumps({"data": "acme"}))
            r.publish(f"{ns}:room:{{{room}}}", json.dumps({"data": "mine"}))
            await c.recv_until("message", data="mine")
            await settle([c])
            return c.take(lambda m: m["type"] == "message")
        finally:
            await c.close()

    assert run(scenario()) == []


# ---- WebSocket clients in tenants (--auth jwt) ------------------------------------------

def token(user, tenant=None, info=None, **claims):
    import jwt  # Debian's python3-jwt; only the tests that mint tokens need it
    body = {"sub": user, "rooms": ["*"], "publish": ["*"], "send": True, "broadcast": True,
            "exp": int(time.time()) + 3600, **claims}
    if tenant is not None:
        body["tenant"] = tenant
    if info is not None:
        body["info"] = info
    return jwt.encode(body, SECRET, algorithm="HS256")


async def connect_as(server, user, tenant=None, info=None, label=None):
    jc = await connect_json(server, f"/ws?token={token(user, tenant, info)}", max_queue=None)
    c = Client(jc, label or f"{user}@{tenant or '-'}")
    assert c.user == user, c.welcome
    return c


@pytest.fixture(scope="module")
def auth_nodes(engine, wsfan_module):
    """Two nodes with --auth jwt (one process twice on the memory engine)."""
    srvs = engine.nodes(wsfan_module, 2, "--workers", "2", "--auth", "jwt", "--jwt-secret", SECRET)
    yield srvs
    for s in srvs:
        assert s.alive(), f"server died during the module; log:\n{s.log_tail()}"


def kinds(c, *types):
    return [(m["type"], m.get("user"), m.get("data")) for m in c.inbox if m["type"] in types]


@pytest.mark.parametrize("spread", ["one node", "two nodes"])
def test_ws_two_tenants_in_rooms_of_one_name_never_meet(auth_nodes, spread):
    a, b = auth_nodes if spread == "two nodes" else (auth_nodes[0], auth_nodes[0])
    room = uniq("general")
    alice, bob = uniq("alice"), uniq("bob")

    async def scenario():
        # alice in acme and in globex (the same name), and without a tenant
        acme = await connect_as(a, alice, "acme", {"name": "Alice of Acme"})
        globex = await connect_as(b, alice, "globex", {"name": "Alice of Globex"})
        plain = await connect_as(b, alice)
        everyone = [acme, globex, plain]
        try:
            for c in everyone:
                await c.join(room)
            await settle(everyone)
            joins = [kinds(c, "presence_join") for c in everyone]
            infos = [[m.get("info") for m in c.inbox if m["type"] == "presence_join"] for c in everyone]
            for c in everyone:
                c.take()

            # a second acme member on the other node: acme hears of bob, with his info
            bob_acme = await connect_as(b, bob, "acme", {"name": "Bob"})
            await bob_acme.join(room)
            first = await acme.recv_until("presence_join", user=bob)
            everyone.append(bob_acme)
            await settle(everyone)
            bob_join = [first] + [m for m in acme.inbox if m["type"] == "presence_join"]
            others_saw_bob = kinds(globex, "presence_join") + kinds(plain, "presence_join")
            for c in everyone:
                c.take()

            await acme.publish(room, "from acme")
            await globex.publish(room, "from globex")
            await plain.publish(room, "from nobody's tenant")
            publish(a, {"room": room, "tenant": "acme", "data": "api to acme"})
            bob_acme.inbox.append(await bob_acme.recv_until("message", data="api to acme"))  # kept
            await settle(everyone)
            msgs = [datas([m for m in c.inbox if m["type"] == "message"]) for c in everyone]
            hist = [datas((await c.history(room))["messages"]) for c in (acme, globex, plain)]
            pres = [(await c.presence(room))["users"] for c in (acme, globex, plain)]

            await bob_acme.close()
            await acme.recv_until("presence_leave", user=bob)
            everyone.remove(bob_acme)
            await settle(everyone)
            leaves = [kinds(c, "presence_leave") for c in (globex, plain)]
            return joins, infos, bob_join, others_saw_bob, msgs, hist, pres, leaves
        finally:
            await asyncio.gather(*(c.close() for c in everyone), return_exceptions=True)

    joins, infos, bob_join, others_saw_bob, msgs, hist, pres, leaves = run(scenario(), 60)
    # Each alice is the first of her tenant's room: one presence_join, her own.
    assert joins == [[("presence_join", alice, None)]] * 3, joins
    assert infos == [[{"name": "Alice of Acme"}], [{"name": "Alice of Globex"}], [None]], infos
    assert [(m["user"], m.get("info")) for m in bob_join] == [(bob, {"name": "Bob"})], bob_join
    assert others_saw_bob == [], f"other tenants heard of acme's bob: {others_saw_bob!r}"
    assert sorted(msgs[0]) == ["api to acme", "from acme"], msgs
    assert msgs[1] == ["from globex"], msgs
    assert msgs[2] == ["from nobody's tenant"], msgs
    assert sorted(msgs[3]) == ["api to acme", "from acme"], msgs
    assert hist == [["from acme", "api to acme"], ["from globex"], ["from nobody's tenant"]], hist
    assert pres[0] == [{"user": alice, "connections": 1, "info": {"name": "Alice of Acme"}},
                       {"user": bob, "connections": 1, "info": {"name": "Bob"}}], pres
    assert pres[1] == [{"user": alice, "connections": 1, "info": {"name": "Alice of Globex"}}], pres
    assert pres[2] == [{"user": alice, "connections": 1}], pres
    assert leaves == [[], []], f"other tenants heard acme's bob leave: {leaves!r}"


@pytest.mark.parametrize("spread", ["one node", "two nodes"])
def test_ws_send_and_broadcast_stay_within_a_tenant(auth_nodes, spread):
    a, b = auth_nodes if spread == "two nodes" else (auth_nodes[0], auth_nodes[0])
    alice, bob = uniq("alice"), uniq("bob")

    async def scenario():
        sender = await connect_as(a, alice, "acme")
        bob_acme = await connect_as(b, bob, "acme")
        bob_globex = await connect_as(b, bob, "globex")
        bob_plain = await connect_as(a, bob)
        everyone = [sender, bob_acme, bob_globex, bob_plain]
        try:
            await sender.ok({"type": "send", "user": bob, "data": "psst"}, "ack")
            await sender.ok({"type": "broadcast", "data": "acme all"}, "ack")
            publish(a, {"all": True, "tenant": "globex", "data": "globex all"})
            publish(b, {"all": True, "data": "no tenant all"})
            bob_acme.inbox.append(await bob_acme.recv_until("broadcast", data="acme all"))  # kept
            bob_globex.inbox.append(await bob_globex.recv_until("broadcast", data="globex all"))  # kept
            bob_plain.inbox.append(await bob_plain.recv_until("broadcast", data="no tenant all"))  # kept
            await settle(everyone)
            return [kinds(c, "direct", "broadcast") for c in everyone]
        finally:
            await asyncio.gather(*(c.close() for c in everyone), return_exceptions=True)

    got = run(scenario(), 60)
    assert sorted(got[0], key=str) == [("broadcast", None, "acme all")], got
    assert sorted(got[1], key=str) == [("broadcast", None, "acme all"), ("direct", None, "psst")], got
    assert got[2] == [("broadcast", None, "globex all")], got
    assert got[3] == [("broadcast", None, "no tenant all")], got


def test_ws_presence_lists_the_info_of_the_newest_connection(auth_nodes):
    a, b = auth_nodes
    room, alice = uniq("ti"), uniq("alice")

    async def scenario():
        first = await connect_as(a, alice, "acme", {"name": "Old"})
        second = None
        try:
            await first.join(room)
            await first.recv_until("presence_join", user=alice)
            second = await connect_as(b, alice, "acme", {"name": "New", "avatar": "https://x/a.png"})
            await second.join(room)
            await settle([first, second])
            after_second = (await first.presence(room))["users"]
            third = await connect_as(a, alice, "acme")  # no info: the newest has none
            await third.join(room)
            await settle([first, second, third])
            after_third = (await second.presence(room))["users"]
            await third.close()
            return after_second, after_third
        finally:
            await first.close()
            if second:
                await second.close()

    after_second, after_third = run(scenario(), 60)
    assert after_second == [{"user": alice, "connections": 2,
                             "info": {"name": "New", "avatar": "https://x/a.png"}}], after_second
    assert after_third == [{"user": alice, "connections": 3}], after_third


def test_ws_rooms_of_a_tenant_across_nodes(engine, auth_nodes):
    """/api/rooms?tenant= counts the tenant's members on every node (with
    Redis, from <namespace>:<tenant>:rooms:{NODE}, refreshed every --presence-ttl/3)."""
    a, b = auth_nodes
    room = uniq("tr")

    async def scenario():
        c = await connect_as(a, uniq("alice"), "acme")
        try:
            await c.join(room)

            def listed():
                rooms = ok(b, "GET", "/api/rooms" + q(tenant="acme"))["rooms"]
                return any(r["room"] == room and r["cluster"] == 1 for r in rooms), rooms
            acme = await await_until(listed, f"acme's {room} in /api/rooms of the other node", timeout=10)
            return (acme, ok(b, "GET", "/api/rooms")["rooms"], ok(a, "GET", "/api/rooms" + q(tenant="globex"))["rooms"])
        finally:
            await c.close()

    acme, plain, globex = run(scenario(), 30)
    mine = [r for r in acme if r["room"] == room]
    expect_local = 1 if not engine.is_redis else 0
    assert mine == [{"room": room, "local": expect_local, "cluster": 1}], acme
    assert room not in [r["room"] for r in plain], f"the rooms without a tenant list acme's: {plain!r}"
    assert room not in [r["room"] for r in globex], f"globex's rooms list acme's: {globex!r}"


def test_ws_a_killed_nodes_tenant_users_leave_only_their_tenants_room(engine, wsfan):
    if not engine.is_redis:
        pytest.skip("a node of its own that dies: Redis only (the memory engine is one process)")
    ttl = 2
    args = ("--workers", "2", "--presence-ttl", str(ttl), "--auth", "jwt", "--jwt-secret", SECRET)
    survivor, victim = engine.nodes(wsfan, 2, *args)
    room, alice, bob = uniq("tk"), uniq("alice"), uniq("bob")

    async def scenario():
        acme_bob = await connect_as(survivor, bob, "acme")
        globex_bob = await connect_as(survivor, bob, "globex")
        doomed = await connect_as(victim, alice, "acme", {"name": "A"})
        try:
            for c in (acme_bob, globex_bob, doomed):
                await c.join(room)
            joined = await acme_bob.recv_until("presence_join", user=alice)
            await settle([acme_bob, globex_bob])
            acme_bob.take(), globex_bob.take()
            victim.kill()
            acme_bob.inbox.append(await acme_bob.recv_until("presence_leave", user=alice, timeout=2 * ttl + 3))
            await asyncio.sleep(2 * ttl / 3 + 0.5)  # one more sweep: no second leave
            await settle([acme_bob, globex_bob])
            return (joined, kinds(acme_bob, "presence_join", "presence_leave"),
                    kinds(globex_bob, "presence_join", "presence_leave"), (await acme_bob.presence(room))["users"])
        finally:
            for c in (acme_bob, globex_bob, doomed):
                await c.close()

    joined, acme_evs, globex_evs, users = run(scenario(), 60)
    assert joined.get("info") == {"name": "A"}, f"the info crossed the nodes: {joined!r}"
    assert acme_evs == [("presence_leave", alice, None)], acme_evs
    assert globex_evs == [], f"globex heard of acme's alice: {globex_evs!r}"
    assert users == [{"user": bob, "connections": 1}], users


def test_ws_longest_tenant_room_and_user_names(engine, auth_nodes):
    """A key of the longest tenant and room (193 bytes) everywhere a key
    goes: joins, messages, history, presence with info, the Redis names,
    and (Redis) the periodic checks of each room's position in history."""
    a, b = auth_nodes
    tenant, room, user = "t" * 64, "r" * 128, "u" * 128

    async def scenario():
        c1 = await connect_as(a, user, tenant, {"name": "x" * 900})
        c2 = await connect_as(b, user, tenant)
        try:
            await c1.join(room)
            await c2.join(room)
            await c1.publish(room, "one")
            await c2.recv_until("message", data="one")
            await asyncio.sleep(2.5 * SLOW)  # past two position checks (--position-sync 1000)
            await c2.publish(room, "two")
            await c1.recv_until("message", data="two")
            hist = datas((await c2.history(room))["messages"])
            pres = (await c1.presence(room))["users"]
            return hist, pres, ok(a, "GET", "/api/history" + q(room=room, tenant=tenant))
        finally:
            await c1.close()
            await c2.close()

    hist, pres, api_hist = run(scenario(), 60)
    assert hist == ["one", "two"], hist
    assert pres == [{"user": user, "connections": 2}], pres  # the newest join had no info
    assert datas(api_hist["messages"]) == ["one", "two"] and api_hist["room"] == room, api_hist
    if engine.is_redis:
        r = engine.redis.client()
        assert r.xlen(f"{a.namespace}:{tenant}:history:{{{room}}}") == 2
