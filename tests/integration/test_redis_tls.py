"""TLS to Redis (rediss://, --redis-ca, --redis-cert, --redis-key;
docs/operations.md): every Redis connection of a node speaks TLS, checks the
server's certificate against --redis-ca and its name against the url's host,
and shows a client certificate when the server asks for one.

A real redis-server (Debian's, built with TLS) listens on a plain port, which
the tests read and write with redis-py, and on a tls-port with a certificate
of a test CA made by the openssl CLI, which the wsfan nodes use. Covers:
delivery across two nodes and history recovery over rediss:// (the stream
checked on the server); a Redis Cluster whose nodes and bus speak TLS
(rediss+cluster://), rooms on every shard crossing two nodes and each
node's sharded subscription on the owning master; a server that asks for client certificates (mutual
TLS) refusing a node without one and serving a node with one; a server whose
certificate is of another CA never reached, the node saying why and still
serving WebSocket clients; a name mismatch refused the same way; the start
refusing bad TLS settings with what to fix."""

import pytest

from conftest import HOST, free_port, http_get, redis_node, run, run_wsfan, wait_ready, wait_until
from protocol_client import connect, uniq
from test_origin import metric
from test_redis_cluster import NS, RedisCluster, rooms_on_every_shard, shard_numsub
from test_tls import make_cert, openssl


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
            f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN=wsfan test {name}", cwd=d)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("redis-certs")
    make_ca(d, "ca")
    make_ca(d, "other")
    make_cert(d, "redis")               # the server's, for localhost and 127.0.0.1
    make_cert(d, "node")                # a client certificate of the same CA
    make_cert(d, "stranger", ca="other")  # a server certificate nobody trusts
    make_cert(d, "misnamed", san="DNS:redis.example.com")  # trusted, for another name
    return d


def tls_redis(factory, certs, cert="redis", auth_clients="no"):
    """A redis-server with a plain port (for redis-py) and a tls-port; its
    .tls_port is set."""
    tls_port = free_port()
    srv = factory(args=["--tls-port", str(tls_port), "--tls-cert-file", str(certs / f"{cert}.pem"),
                        "--tls-key-file", str(certs / f"{cert}.key"), "--tls-ca-cert-file", str(certs / "ca.pem"),
                        "--tls-auth-clients", auth_clients])
    srv.tls_port = tls_port
    return srv


def rediss(srv):
    return f"rediss://{HOST}:{srv.tls_port}"


def test_two_nodes_deliver_and_recover_history_over_rediss(redis_factory, wsfan, certs):
    redis = tls_redis(redis_factory, certs)
    args = ["--redis", rediss(redis), "--redis-ca", str(certs / "ca.pem")]
    a = wsfan(*args, "--node-id", "ta")
    b = wsfan(*args, "--node-id", "tb")
    wait_ready(a)
    wait_ready(b)
    room = uniq("tls")
    r = redis.client()

    async def scenario():
        listener = await connect(a, uniq("l"), label="listener@ta")
        pub = await connect(b, uniq("p"), label="publisher@tb")
        try:
            await listener.join(room)
            await pub.join(room)
            acks = [await pub.publish(room, {"n": k}) for k in range(20)]
            got = await listener.recv_n(lambda m: m["type"] == "message" and m.get("room") == room, 20,
                                        "20 messages from the other node")
            late = await connect(a, uniq("late"), label="late joiner@ta")
            joined = await late.join(room, since=acks[4]["offset"])
            replay = await late.recv_n(lambda m: m["type"] == "message" and m.get("room") == room, 15,
                                       "the 15 messages after the 5th")
            await late.close()
            return acks, got, joined, replay
        finally:
            await listener.close()
            await pub.close()

    acks, got, joined, replay = run(scenario(), 30)
    assert [m["data"]["n"] for m in got] == list(range(20)), "every message once, in order, across nodes"
    stream = r.xrange(f"wsfan:history:{{{room}}}")
    assert [e[0] for e in stream] == [x["offset"] for x in acks], "history on the server equals the acks"
    assert joined.get("recovered") is True and joined.get("missed") == 15, joined
    assert [m["offset"] for m in replay] == [x["offset"] for x in acks[5:]], "recovery is exact over TLS"
    assert metric(a, "wsfan_bus_up") == 1


def test_rediss_cluster_delivers_on_every_shard(tmp_path, wsfan, certs):
    cluster = RedisCluster(tmp_path, replicas=0, certs=certs)
    try:
        args = ("--redis-ca", str(certs / "ca.pem"), "--workers", "1")
        a, b = (redis_node(wsfan, cluster.url(), f"tc{i}", *args) for i in range(2))
        rooms = list(rooms_on_every_shard(cluster, uniq("tshard")).values())

        async def scenario():
            ca, cb = await connect(a, uniq("a")), await connect(b, uniq("b"))
            try:
                for room in rooms:
                    await ca.join(room)
                    await cb.join(room)
                subscribed = [shard_numsub(cluster, room) for room in rooms]
                acks = [await cb.publish(room, {"i": i}) for i, room in enumerate(rooms)]
                got = [await ca.recv_match(lambda m, r=room: m["type"] == "message" and m.get("room") == r,
                                           f"the message of {room}") for room in rooms]
                return subscribed, acks, got
            finally:
                await ca.close()
                await cb.close()

        subscribed, acks, got = run(scenario(), 30)
        assert subscribed == [2] * len(rooms), f"both nodes SSUBSCRIBEd on each room's master: {subscribed}"
        assert [m["data"] for m in got] == [{"i": i} for i in range(len(rooms))]
        assert [m["offset"] for m in got] == [x["offset"] for x in acks]
        for room, ack in zip(rooms, acks):
            owner = cluster.client(cluster.owner(f"{NS}:history:{{{room}}}"))
            assert [e[0] for e in owner.xrange(f"{NS}:history:{{{room}}}")] == [ack["offset"]]
    finally:
        cluster.stop()


def test_mutual_tls_needs_the_client_certificate(redis_factory, wsfan, certs):
    redis = tls_redis(redis_factory, certs, auth_clients="yes")
    base = ["--redis", rediss(redis), "--redis-ca", str(certs / "ca.pem")]
    without = wsfan(*base, "--node-id", "anon", "--redis-timeout", "500")
    wait_until(lambda: ("certificate required" in without.log(), without.log_tail(5)),
               "the node without a client certificate says why it cannot connect", 10)
    assert http_get(without.port, "/readyz").status == 503, "not ready without Redis"
    assert http_get(without.port, "/healthz").status == 200, "still serving"
    withcert = wsfan(*base, "--redis-cert", str(certs / "node.pem"), "--redis-key", str(certs / "node.key"),
                     "--node-id", "mtls")
    wait_ready(withcert)
    clients = redis.client().client_list()
    assert len(clients) >= 3, f"the node with a certificate holds its links: {clients}"


@pytest.mark.parametrize("case", ["other CA", "name mismatch"])
def test_a_server_that_fails_verification_is_never_used(redis_factory, wsfan, certs, case):
    redis = tls_redis(redis_factory, certs, cert="stranger" if case == "other CA" else "misnamed")
    why = "certificate verify failed: " + ("unable to get local issuer certificate" if case == "other CA"
                                           else "IP address mismatch")
    node = wsfan("--redis", rediss(redis), "--redis-ca", str(certs / "ca.pem"), "--redis-timeout", "500", "--node-id", "v")
    wait_until(lambda: (why in node.log(), node.log_tail(5)), f"the log says {why!r}", 10)
    assert http_get(node.port, "/readyz").status == 503
    assert node.alive()
    before = redis.client().info("stats")["total_commands_processed"]

    async def refused():
        c = await connect(node, uniq("u"))
        try:
            return await c.error({"type": "send", "user": uniq("r"), "data": 1}, "unavailable")
        finally:
            await c.close()

    run(refused(), 15)
    assert redis.client().info("stats")["total_commands_processed"] <= before + 2, \
        "no command reached a server that failed verification"


def test_bad_tls_settings_stop_the_start_with_what_to_fix(certs, tmp_path):
    missing = tmp_path / "missing.pem"
    cases = [
        (["--redis", "redis://127.0.0.1:6379", "--redis-ca", str(certs / "ca.pem")],
         "--redis-ca: needs a rediss:// url"),
        (["--redis", "rediss://127.0.0.1:6379", "--redis-ca", str(missing)], str(missing)),
        (["--redis", "rediss://127.0.0.1:6379", "--redis-cert", str(certs / "node.pem")],
         "--redis-cert: needs --redis-key"),
        (["--redis", "rediss://127.0.0.1:6379", "--redis-cert", str(certs / "node.pem"), "--redis-key",
          str(certs / "redis.key")], "does not match"),
    ]
    for args, want in cases:
        p = run_wsfan(*args, "--check-config")
        assert p.returncode == 2 and want in p.stderr, f"{args}: exit {p.returncode}, stderr {p.stderr!r}"
    ok = run_wsfan("--redis", "rediss://127.0.0.1:6379", "--store-redis", "redis://127.0.0.1:6380",
                   "--redis-ca", str(certs / "ca.pem"), "--check-config")
    assert ok.returncode == 0, ok.stderr
