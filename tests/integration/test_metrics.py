"""GET /metrics (Prometheus text, checked with promtool from Debian's
prometheus package) and GET /api/stats: what the counters say after real
traffic: connections by close code, bytes, replies, slow readers, the send
queue gauge, fan-out, commands by kind and the busiest rooms. Then, on both
engines, `promtool check metrics` on a server that has served every kind of
traffic, and the Grafana dashboard (packaging/grafana/wsfan-dashboard.json):
importable, and naming only metrics that such a server exposes."""

import json
import re
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import (OP_TEXT, REPO, SLOW, RawClient, cmd, frame, http_get, http_request, json_client,
                      request_head, run, upgrade_headers)

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def scrape(srv):
    """(raw text, {name or name{labels}: float})."""
    resp = http_get(srv.port, "/metrics")
    assert resp.status == 200, resp.head
    assert resp.header("content-type").startswith("text/plain; version=0.0.4"), resp.head
    text = resp.body.decode()
    values = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        values[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return text, values


def promtool():
    """The path of promtool, or the test is skipped."""
    path = shutil.which("promtool")
    if not path:
        pytest.skip("promtool is missing: it comes with Debian's prometheus package (scripts/install-deps)")
    return path


def promtool_check(text):
    """promtool check metrics must accept text and print nothing: it prints
    each naming problem (lint) it finds, one a line."""
    p = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    problems = (p.stdout + p.stderr).strip()
    assert p.returncode == 0 and not problems, \
        f"promtool check metrics (exit {p.returncode}):\n{problems}\n--- metrics:\n{text}"


def wait_metric(srv, key, want, timeout=5.0):
    """Polls until the sample key satisfies want(value); returns the values."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        _, values = scrape(srv)
        if key in values and want(values[key]):
            return values
        if time.monotonic() > deadline:
            raise AssertionError(f"{key} = {values.get(key)} did not reach the expected value within "
                                 f"{timeout * SLOW:.0f}s")
        time.sleep(0.05)


def stats(srv):
    resp = http_get(srv.port, "/api/stats")
    assert resp.status == 200 and resp.header("content-type") == "application/json", resp.head
    return json.loads(resp.body)


def test_exposition_is_valid_prometheus_text_before_and_after_traffic(wsfan):
    srv = wsfan("--workers", "3")
    text, values = scrape(srv)
    promtool_check(text)
    assert values["wsfan_connections"] == 0
    assert values["wsfan_bus_up"] == 1
    assert sum(v for k, v in values.items() if k.startswith("wsfan_worker_connections{")) == 0
    assert len([k for k in values if k.startswith("wsfan_worker_connections{")]) == 3

    async def traffic():
        async with json_client(srv, "/ws?user=a") as a, json_client(srv, "/ws?user=b") as b:
            for c in (a, b):
                await c.request({"type": "join", "room": "m-room"})
            for i in range(20):
                await a.send({"type": "publish", "room": "m-room", "data": i})
            await a.request({"type": "ping"})
            await a.request({"type": "not-a-command"})
    run(traffic())
    text, values = scrape(srv)
    promtool_check(text)


def test_connections_are_counted_by_close_code(wsfan):
    srv = wsfan("--workers", "2")
    a = RawClient.open(srv)
    b = RawClient.open(srv)
    c = RawClient.open(srv)
    values = wait_metric(srv, "wsfan_connections", lambda v: v == 3)
    assert values["wsfan_connections_opened_total"] == 3
    assert sum(v for k, v in values.items() if k.startswith("wsfan_worker_connections{")) == 3

    a.send_close(1000)
    a.expect_close(1000)
    b.send_close()  # an empty close: 1005
    b.expect_close(None)
    c.close()  # no close handshake at all: 1006
    values = wait_metric(srv, "wsfan_connections", lambda v: v == 0)
    assert values['wsfan_connections_closed_total{code="1000"}'] == 1, values
    assert values['wsfan_connections_closed_total{code="1005"}'] == 1, values
    assert values['wsfan_connections_closed_total{code="1006"}'] == 1, values
    assert values["wsfan_received_bytes_total"] > 0 and values["wsfan_sent_bytes_total"] > 0
    # The three welcomes are replies to their own connections.
    assert values['wsfan_messages_out_total{kind="reply"}'] >= 3


def test_bytes_and_replies_grow_with_traffic(wsfan):
    srv = wsfan()
    _, before = scrape(srv)
    with RawClient.open(srv) as c:
        for i in range(10):
            assert c.request({"type": "ping", "ref": i})["type"] == "pong"
    _, after = scrape(srv)
    assert after['wsfan_messages_out_total{kind="reply"}'] - before['wsfan_messages_out_total{kind="reply"}'] >= 11
    assert after["wsfan_received_bytes_total"] - before["wsfan_received_bytes_total"] > 10 * 20
    assert after["wsfan_sent_bytes_total"] - before["wsfan_sent_bytes_total"] > 10 * 10
    assert after["wsfan_http_requests_total"] > before["wsfan_http_requests_total"]


def test_slow_reader_is_counted_and_the_queue_gauge_returns_to_zero(wsfan):
    srv = wsfan("--send-queue-limit", "64k", "--workers", "1")
    slow = RawClient.open(srv, rcvbuf=4096)
    batch = b"".join(frame(OP_TEXT, cmd({"type": "ping", "ref": "r" * 60})) for _ in range(200))
    slow.sock.settimeout(0.5)
    t0 = time.monotonic()
    for _ in range(100):  # as in test_server.py: at most 20k pings that are never read
        if time.monotonic() - t0 > 10:
            break
        try:
            slow.sock.sendall(batch)
        except (socket.timeout, OSError):
            break
    values = wait_metric(srv, "wsfan_slow_readers_closed_total", lambda v: v == 1, timeout=10)
    assert values['wsfan_connections_closed_total{code="1013"}'] == 1, values
    slow.close()
    values = wait_metric(srv, "wsfan_connections", lambda v: v == 0, timeout=10)
    wait_metric(srv, "wsfan_send_queue_bytes", lambda v: v == 0, timeout=10)


def test_stats_json_for_the_dashboard(wsfan):
    srv = wsfan("--workers", "2")
    with RawClient.open(srv), RawClient.open(srv):
        deadline = time.monotonic() + 5 * SLOW
        while (s := stats(srv))["connections"] != 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert s["connections"] == 2, s
    assert [w["worker"] for w in s["workers"]] == [0, 1], s
    assert sum(w["connections"] for w in s["workers"]) == 2, s
    for key in ("node", "version", "uptime_s", "messages_in", "messages_out", "bytes_in", "bytes_out",
                "fanout_deliveries", "send_queue_bytes", "slow_readers_closed", "room_messages_per_s",
                "rate_window_s", "busiest_rooms"):
        assert key in s, f"/api/stats lacks {key}: {s}"
    assert s["bus"] == {"engine": "memory", "up": True, "reconnects": 0, "invalid_envelopes": 0, "store_errors": 0,
                        "position_repairs": 0}
    head = http_request(srv.port, request_head("HEAD", "/api/stats", [("Connection", "close")]))
    assert head.status == 200 and head.body == b""


# ---- counted where the bus, the hub and protocol.c call metrics.h -------------------------

def test_commands_are_counted_by_kind(wsfan):
    srv = wsfan()

    async def traffic():
        async with json_client(srv, "/ws") as c:
            await c.request({"type": "ping"})
            await c.request({"type": "ping"})
            await c.request({"type": "join", "room": "k"})
            await c.request({"type": "nope"})
            await c.request("not json")
    run(traffic())
    _, values = scrape(srv)
    assert values['wsfan_messages_in_total{kind="ping"}'] == 2, values
    assert values['wsfan_messages_in_total{kind="join"}'] == 1, values
    assert values['wsfan_messages_in_total{kind="invalid"}'] == 2, values


def test_fanout_counts_one_event_per_worker_and_one_delivery_per_member(wsfan):
    srv = wsfan("--workers", "1")

    async def traffic():
        async with json_client(srv, "/ws") as a, json_client(srv, "/ws") as b, json_client(srv, "/ws") as c:
            for x in (a, b, c):
                await x.request({"type": "join", "room": "fan"})
            await a.request({"type": "publish", "room": "fan", "data": 1, "echo": True})
            for x in (b, c):
                await x.recv()
    run(traffic())
    _, values = scrape(srv)
    assert values['wsfan_fanout_events_total{target="room"}'] >= 1, values
    assert values["wsfan_fanout_deliveries_total"] >= 3, values
    assert values['wsfan_messages_out_total{kind="room"}'] >= 3, values


def test_busiest_rooms_show_their_rate_top_n_only(wsfan):
    srv = wsfan()
    raw = b"".join(request_head("POST", "/api/publish", [("Content-Type", "application/json"),
                                                         ("Content-Length", str(len(body)))]) + body
                   for body in (json.dumps({"room": f"r{i % 12}", "data": i}).encode() for i in range(12 * 12 + 48)))
    # Rooms count while they have members: keep one in each.
    clients = [RawClient.open(srv) for _ in range(12)]
    for i, c in enumerate(clients):
        assert c.request({"type": "join", "room": f"r{i}"})["type"] == "joined"
    http_request(srv.port, raw, count=12 * 12 + 48, timeout=20)
    values = wait_metric(srv, "wsfan_room_messages_per_second", lambda v: v > 0, timeout=15)
    rooms = {k: v for k, v in values.items() if k.startswith("wsfan_busiest_room_messages_per_second{")}
    assert 0 < len(rooms) <= 10, rooms
    s = stats(srv)
    assert s["busiest_rooms"][0]["room"] in {f"r{i}" for i in range(12)}, s
    for c in clients:
        c.close()


# ---- both engines: promtool after every kind of traffic, and the Grafana dashboard ----------

DASHBOARD = REPO / "packaging" / "grafana" / "wsfan-dashboard.json"


def api_publish_many(srv, room, n):
    """n pipelined POST /api/publish to room; asserts every one is 200."""
    bodies = [json.dumps({"room": room, "data": i}).encode() for i in range(n)]
    raw = b"".join(request_head("POST", "/api/publish", [("Content-Type", "application/json"),
                                                         ("Content-Length", str(len(b)))]) + b for b in bodies)
    for resp in http_request(srv.port, raw, count=n, timeout=20):
        assert resp.status == 200, resp.head


async def ask(client, obj, max_frames=100):
    """Sends obj with a ref and returns the reply that carries it, past the
    room messages that arrive in between."""
    ref = f"r{id(obj)}"
    await client.send({**obj, "ref": ref})
    for _ in range(max_frames):
        reply = await client.recv()
        if reply.get("ref") == ref:
            return reply
    raise AssertionError(f"no reply to {obj!r} in {max_frames} frames")


def serve_every_kind_of_traffic(srv):
    """Commands of each type (an invalid one too), room and user fan-out,
    API publishes, a refused upgrade and closes with and without a close
    handshake, then waits for the busiest rooms of a complete window: every
    labelled family has samples."""
    async def clients():
        async with json_client(srv, "/ws?user=ann") as a, json_client(srv, "/ws?user=bob") as b:
            for c in (a, b):
                assert (await ask(c, {"type": "join", "room": "prom"}))["type"] == "joined"
            for i in range(5):
                await ask(a, {"type": "publish", "room": "prom", "data": i})
            await ask(a, {"type": "send", "user": "bob", "data": "hi"})
            await ask(a, {"type": "history", "room": "prom"})
            await ask(a, {"type": "presence", "room": "prom"})
            assert (await ask(a, {"type": "ping"}))["type"] == "pong"
            assert (await ask(a, {"type": "no-such-command"}))["type"] == "error"
            await ask(b, {"type": "leave", "room": "prom"})
    run(clients())

    refused = http_request(srv.port, request_head("GET", "/ws", upgrade_headers(
        extra=[("Origin", "https://elsewhere.example")])))
    assert refused.status == 403, refused.head
    member = RawClient.open(srv)  # rooms count while they have members
    assert member.request({"type": "join", "room": "prom"})["type"] == "joined"
    api_publish_many(srv, "prom", 20)
    member.send_close(1000)
    member.expect_close(1000, allow_data=True)
    RawClient.open(srv).close()  # no close handshake: 1006
    wait_metric(srv, 'wsfan_busiest_room_messages_per_second{room="prom"}', lambda v: v > 0, timeout=15)
    return wait_metric(srv, "wsfan_connections", lambda v: v == 0)


@pytest.fixture(scope="module")
def busy_server(engine, wsfan_module):
    """A server on each engine after serve_every_kind_of_traffic: (server, /metrics text)."""
    srv = engine.node(wsfan_module, "--workers", "2")
    serve_every_kind_of_traffic(srv)
    text, _ = scrape(srv)
    return srv, text


def test_promtool_accepts_the_exposition_after_every_kind_of_traffic(busy_server):
    srv, text = busy_server
    promtool_check(text)
    _, values = scrape(srv)
    for key in ('wsfan_connections_closed_total{code="1000"}', 'wsfan_connections_closed_total{code="1006"}',
                'wsfan_connections_refused_total{reason="origin"}', 'wsfan_messages_in_total{kind="invalid"}',
                'wsfan_messages_out_total{kind="user"}', 'wsfan_fanout_events_total{target="room"}'):
        assert values[key] >= 1, f"{key} = {values[key]}: the traffic did not reach it"


# PromQL's functions, aggregations and keywords: names in an expression that
# are not metric names.
PROMQL_WORDS = frozenset("""
    abs absent absent_over_time avg_over_time ceil changes clamp clamp_max clamp_min count_over_time
    day_of_month day_of_week day_of_year days_in_month delta deriv exp floor histogram_quantile
    holt_winters hour idelta increase irate label_join label_replace last_over_time ln log10 log2
    max_over_time min_over_time minute month predict_linear present_over_time quantile_over_time rate
    resets round scalar sgn sort sort_desc sqrt stddev_over_time stdvar_over_time sum_over_time time
    timestamp vector year
    avg bottomk count count_values group max min quantile stddev stdvar sum topk
    and bool by group_left group_right ignoring offset on or unless without
    """.split())
NAME_IN_EXPR = re.compile(r"(?<![a-zA-Z0-9_:$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?=[{\[\s()]|$)")


def metric_names(expr):
    """The metric names an expression reads. Strings, label matchers, range
    durations and the labels of by (...), without (...), on (...) are taken
    out first, so that only names remain."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "{}", expr)
    expr = re.sub(r"\[[^\]]*\]", "[]", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1 ", expr)
    return {n for n in NAME_IN_EXPR.findall(expr) if n not in PROMQL_WORDS}


def test_metric_names_are_read_from_promql():
    assert metric_names('sum by (instance, code) (rate(wsfan_a_total{job=~"$job",x="y{"}[$__rate_interval]))') \
        == {"wsfan_a_total"}
    assert metric_names("topk(10, wsfan_b) / on (instance) group_left (node) wsfan_c") == {"wsfan_b", "wsfan_c"}


def load_dashboard():
    with open(DASHBOARD, encoding="utf-8") as f:
        return json.load(f)


def dashboard_panels(dash):
    """Every panel, those inside collapsed rows too."""
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])


def dashboard_exprs(dash):
    return [t["expr"] for p in dashboard_panels(dash) for t in p.get("targets", [])]


def test_grafana_dashboard_is_importable():
    dash = load_dashboard()
    inputs = {i["name"]: i for i in dash["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["type"] == "datasource"
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    assert dash["id"] is None and dash["uid"] and dash["title"]
    ours = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    ids = [p["id"] for p in dashboard_panels(dash)]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {ids}"
    for p in dashboard_panels(dash):
        g = p["gridPos"]
        assert g["h"] > 0 and g["w"] > 0 and 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"] == ours, f"panel {p['title']!r}: {p['datasource']}"
        assert p["targets"], f"panel {p['title']!r} has no query"
        for t in p["targets"]:
            assert t["datasource"] == ours and t["expr"].strip(), f"panel {p['title']!r}: {t}"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert {"job", "instance"} <= set(variables), variables.keys()
    for v in variables.values():
        assert v["datasource"] == ours, v
    for expr in dashboard_exprs(dash):
        assert 'job=~"$job"' in expr and 'instance=~"$instance"' in expr, f"not filtered by job and instance: {expr}"


def test_grafana_dashboard_queries_parse():
    """promtool check rules parses each query (Grafana's variables replaced
    by what they stand for) as a recording rule: a typo in PromQL fails here."""
    exprs = dashboard_exprs(load_dashboard())
    rules = [{"record": f"wsfan_dashboard:query_{i}",
              "expr": e.replace("$__rate_interval", "1m").replace("$job", ".*").replace("$instance", ".*")}
             for i, e in enumerate(exprs)]
    tool = promtool()
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
        json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)  # JSON is YAML
        f.flush()
        p = subprocess.run([tool, "check", "rules", f.name], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, f"promtool check rules:\n{p.stdout}{p.stderr}"
    assert f"SUCCESS: {len(rules)} rules found" in p.stdout, p.stdout


def exposed_names(text):
    """Sample names in an exposition, and the families its TYPE lines declare."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(SAMPLE.match(line).group(1))
    return names


def test_grafana_dashboard_reads_only_metrics_the_server_exposes(busy_server):
    _, text = busy_server
    exposed = exposed_names(text)
    dash = load_dashboard()
    used = set()
    for expr in dashboard_exprs(dash):
        names = metric_names(expr)
        assert names, f"no metric name found in {expr}"
        assert names <= exposed, f"{expr} reads {sorted(names - exposed)}, which /metrics does not expose"
        used |= names
    for v in dash["templating"]["list"]:
        m = re.match(r"label_values\(([a-zA-Z_:][a-zA-Z0-9_:]*)", v["query"])
        assert m and m.group(1) in exposed, f"variable {v['name']}: {v['query']}"
    # What the dashboard is for: connections, traffic, send queues, the bus, repairs and drops.
    for name in ("wsfan_connections", "wsfan_connections_opened_total", "wsfan_connections_closed_total",
                 "wsfan_fanout_deliveries_total", "wsfan_messages_in_total", "wsfan_send_queue_bytes",
                 "wsfan_bus_up", "wsfan_position_repairs_total", "wsfan_invalid_envelopes_total",
                 "wsfan_connections_refused_total", "wsfan_commands_rate_limited_total",
                 "wsfan_slow_readers_closed_total"):
        assert name in used, f"the dashboard does not show {name}"
