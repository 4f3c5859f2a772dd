/* test_client.c - unit tests of app/client.c: one WebSocket session's
 * commands and their replies, without a server. The test wires one worker
 * by hand on a uv loop in the test thread: a struct app (settings, a
 * net_loop whose data points to it, a hub, an atomic connection count) and
 * a real bus with the memory engine and memory store, whose hooks post to
 * a worker inbox on the same loop (delivery goes through the hub). Each
 * client is a calloc'ed struct client over one end of a socketpair, opened
 * with conn_open, upgraded with conn_upgrade(&client_handler) and started
 * with client_start. The test is the peer: it writes masked text frames
 * (commands) and reads the server's frames back (a small frame reader),
 * decoding each reply with jansson. The loop runs with UV_RUN_NOWAIT
 * between reads, and every wait has a deadline.
 * Covered: welcome; ping and pong; join, joined and presence; publish, its
 * ack and the message (echo:false leaves out the publisher only); command
 * errors (bad_json, bad_command, unknown_type, not_member, too_many_rooms,
 * forbidden, rate_limited) with their codes and refs; leave; rejoin;
 * history; clients of two tenants in rooms of one name; and what closing
 * gives back (rooms, presence, the connection slot), with every client
 * freed (LeakSanitizer checks). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client_frame.h"
#include "app/app.h"
#include "app/auth.h"
#include "app/client.h"
#include "app/hub.h"
#include "cluster/bus.h"
#include "codec/ws.h"
#include "core/clock.h"
#include "core/inbox.h"
#include "net/conn.h"
#include "net/loop.h"
#include "store/store.h"

#define DEADLINE_MS 5000
#define PEER_BUF (1 << 20)
#define NPEERS 2
#define ORIGIN ((struct offset){1000, 0})
#define ORIGIN_TEXT "1000-0"

/* The test's end of one client's socket. */
struct peer {
    int fd;                 /* -1 once closed */
    struct client *c;       /* the server's side; freed by the conn */
    uint8_t *in;            /* read, not yet parsed */
    size_t in_len, in_pos;
    int eof;
};

struct fixture {
    uv_loop_t loop;
    struct config cfg;
    struct metrics_worker wm;
    struct metrics_bus bm;
    struct net_loop *net;
    struct inbox inbox;     /* the worker's: bus replies and deliveries */
    struct app app;
    atomic_int connections;
    atomic_int draining;
    struct peer peers[NPEERS];
};

/* ---- The worker's hooks -------------------------------------------------- */

static int post(void *arg, int worker, struct task *t)
{
    struct fixture *f = arg;
    assert_int_equal(worker, 0);
    return inbox_post(&f->inbox, t);
}

static int busy(void *arg)
{
    return bus_busy(arg);
}

static void deliver(void *ctx, const struct event *ev)
{
    struct app *app = ctx;
    hub_deliver(app->hub, ev);
}

/* ---- Running ------------------------------------------------------------- */

static void pump(struct fixture *f)
{
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

/* Runs the loop until the worker has no connection left. */
static void pump_until_no_conns(struct fixture *f)
{
    uint64_t end = clock_mono_ms() + DEADLINE_MS;
    while (f->net->conns) {
        if (clock_mono_ms() > end)
            fail_msg("a connection was not freed within %d ms", DEADLINE_MS);
        pump(f);
        poll(NULL, 0, 1);
    }
}

/* ---- The peer ------------------------------------------------------------ */

static void peer_write(struct fixture *f, struct peer *p, const void *buf, size_t len)
{
    const uint8_t *b = buf;
    uint64_t end = clock_mono_ms() + DEADLINE_MS;
    while (len) {
        ssize_t n = send(p->fd, b, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            b += n;
            len -= (size_t)n;
            continue;
        }
        assert_true(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR));
        if (clock_mono_ms() > end)
            fail_msg("the server does not read");
        pump(f);
    }
}

/* Sends one command as a masked text frame. */
static void send_cmd(struct fixture *f, struct peer *p, const char *text)
{
    size_t len = strlen(text);
    uint8_t *buf = malloc(len + 14);
    assert_non_null(buf);
    peer_write(f, p, buf, client_frame(buf, WS_OP_TEXT, text, len));
    free(buf);
}

struct frame_in {
    uint8_t op;
    const uint8_t *payload;
    size_t len;
};

/* One server frame (unmasked, final) at buf: its size, or 0 when
 * incomplete. */
static size_t frame_parse(const uint8_t *buf, size_t n, struct frame_in *fr)
{
    if (n < 2)
        return 0;
    assert_int_equal(buf[0] & 0xF0, 0x80); /* FIN, no reserved bits */
    assert_int_equal(buf[1] & 0x80, 0);    /* not masked */
    size_t len = buf[1] & 0x7F, h = 2;
    if (len == 126) {
        if (n < 4)
            return 0;
        len = (size_t)buf[2] << 8 | buf[3];
        h = 4;
    } else if (len == 127) {
        if (n < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | buf[2 + i];
        h = 10;
    }
    if (n - h < len)
        return 0;
    fr->op = buf[0] & 0x0F;
    fr->payload = buf + h;
    fr->len = len;
    return h + len;
}

/* The next frame from the server, or 0 when none came within wait_ms
 * (fails at the end of the stream). */
static int peer_try_frame(struct fixture *f, struct peer *p, struct frame_in *fr, int wait_ms)
{
    uint64_t end = clock_mono_ms() + (uint64_t)wait_ms;
    for (;;) {
        size_t used = frame_parse(p->in + p->in_pos, p->in_len - p->in_pos, fr);
        if (used) {
            p->in_pos += used;
            return 1;
        }
        if (p->in_pos) {
            memmove(p->in, p->in + p->in_pos, p->in_len - p->in_pos);
            p->in_len -= p->in_pos;
            p->in_pos = 0;
        }
        pump(f);
        assert_true(p->in_len < PEER_BUF);
        ssize_t n = recv(p->fd, p->in + p->in_len, PEER_BUF - p->in_len, MSG_DONTWAIT);
        if (n > 0) {
            p->in_len += (size_t)n;
            continue;
        }
        if (n == 0)
            fail_msg("the server ended the stream (%zu bytes pending)", p->in_len);
        assert_true(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
        if (clock_mono_ms() > end)
            return 0;
        poll(NULL, 0, 1);
    }
}

/* The next message from the server as JSON (the caller decrefs). */
static json_t *next_msg(struct fixture *f, struct peer *p)
{
    struct frame_in fr;
    if (!peer_try_frame(f, p, &fr, DEADLINE_MS))
        fail_msg("no message within %d ms", DEADLINE_MS);
    if (fr.op != WS_OP_TEXT)
        fail_msg("expected a text frame, got opcode %d", fr.op);
    json_error_t err;
    json_t *msg = json_loadb((const char *)fr.payload, fr.len, 0, &err);
    if (!msg)
        fail_msg("not JSON: %.*s (%s)", (int)fr.len, (const char *)fr.payload, err.text);
    return msg;
}

/* True when nothing more arrives within wait_ms. */
static int quiet(struct fixture *f, struct peer *p, int wait_ms)
{
    struct frame_in fr;
    if (!peer_try_frame(f, p, &fr, wait_ms))
        return 1;
    print_message("unexpected: %.*s\n", (int)fr.len, (const char *)fr.payload);
    return 0;
}

static const char *str(const json_t *msg, const char *key)
{
    const char *s = json_string_value(json_object_get(msg, key));
    if (!s) {
        char *text = json_dumps(msg, JSON_COMPACT);
        print_message("no string %s in %s\n", key, text);
        free(text);
        fail();
    }
    return s;
}

static void assert_type(const json_t *msg, const char *type)
{
    const char *t = json_string_value(json_object_get(msg, "type"));
    if (!t || strcmp(t, type)) {
        char *text = json_dumps(msg, JSON_COMPACT);
        print_message("expected a %s, got %s\n", type, text);
        free(text);
        fail();
    }
}

/* The next message is of type with ref (a JSON text, or NULL for none);
 * returned for more checks (the caller decrefs). */
static json_t *expect(struct fixture *f, struct peer *p, const char *type, const char *ref)
{
    json_t *msg = next_msg(f, p);
    assert_type(msg, type);
    json_t *got = json_object_get(msg, "ref");
    if (!ref) {
        assert_null(got);
    } else {
        json_t *want = json_loads(ref, JSON_DECODE_ANY, NULL);
        assert_non_null(want);
        if (!got || !json_equal(got, want)) {
            char *text = json_dumps(msg, JSON_COMPACT);
            print_message("expected ref %s in %s\n", ref, text);
            free(text);
            json_decref(want);
            fail();
        }
        json_decref(want);
    }
    return msg;
}

static void expect_error(struct fixture *f, struct peer *p, const char *code, const char *ref)
{
    json_t *msg = expect(f, p, "error", ref);
    assert_string_equal(str(msg, "code"), code);
    assert_true(strlen(str(msg, "message")) > 0);
    json_decref(msg);
}

/* ---- Setup --------------------------------------------------------------- */

/* The memory engine, but a room's subscription is confirmed only when the
 * test calls bus_subscribed (as with Redis, where it takes a round trip). */
static struct bus_engine slow_engine;

static void slow_interest(struct bus *b, enum event_target target, const char *name, int on)
{
    (void)b;
    (void)target;
    (void)name;
    (void)on;
}

static int setup_with(void **state, const struct bus_engine *engine)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->cfg.max_message = 1 << 16;
    f->cfg.heartbeat = 30;
    f->cfg.send_queue_limit = 4 << 20;
    f->cfg.max_rooms = 2;
    f->cfg.history_length = 100;
    f->cfg.max_replay = 1000;
    f->cfg.max_connections = 100;
    f->cfg.max_data = 1 << 10;
    f->cfg.rate_limit = 0; /* the test of --rate-limit sets it */
    snprintf(f->cfg.node_id, sizeof f->cfg.node_id, "test-node");
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(metrics_bus_init(&f->bm), 0);
    f->net = calloc(1, sizeof *f->net);
    assert_non_null(f->net);
    assert_int_equal(net_loop_init(f->net, &f->loop, 0, &f->cfg, &f->wm), 0);
    assert_int_equal(inbox_init(&f->inbox, &f->loop, &f->app), 0);
    struct bus_hooks hooks = {.arg = f, .nworkers = 1, .post = post, .deliver = deliver};
    struct bus *bus = bus_create(&f->loop, &f->cfg, &hooks, &f->bm, engine,
                                 store_memory_create(&f->loop, &f->cfg, ORIGIN));
    assert_non_null(bus);
    f->app = (struct app){
        .cfg = &f->cfg,
        .net = f->net,
        .hub = hub_create(f->net),
        .bus = bus,
        .connections = &f->connections,
        .draining = &f->draining,
    };
    assert_non_null(f->app.hub);
    f->net->data = &f->app;
    f->net->busy = busy;
    f->net->busy_arg = bus;
    for (int i = 0; i < NPEERS; i++)
        f->peers[i].fd = -1;
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, &bus_memory_engine);
}

static int setup_slow(void **state)
{
    slow_engine = bus_memory_engine;
    slow_engine.interest = slow_interest;
    return setup_with(state, &slow_engine);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < NPEERS; i++)
        if (f->peers[i].fd >= 0) {
            close(f->peers[i].fd);
            f->peers[i].fd = -1;
        }
    pump_until_no_conns(f);
    for (int i = 0; i < 20; i++)
        pump(f);
    assert_int_equal(atomic_load(&f->connections), 0);
    net_loop_close(f->net);
    inbox_close(&f->inbox);
    bus_stop(f->app.bus);
    for (int i = 0; i < 100 && uv_run(&f->loop, UV_RUN_NOWAIT); i++)
        ;
    assert_int_equal(uv_loop_close(&f->loop), 0);
    bus_free(f->app.bus);
    hub_destroy(f->app.hub);
    metrics_bus_close(&f->bm);
    assert_int_equal(atomic_load(&f->wm.queued_bytes), 0);
    for (int i = 0; i < NPEERS; i++)
        free(f->peers[i].in);
    free(f->net);
    free(f);
    return 0;
}

/* A client of user (NULL: anonymous) in tenant ("" for none) with info
 * (NULL for none), as the router leaves it after the upgrade and the
 * authentication, started; its welcome is read and checked. */
static struct peer *connect_client_in(struct fixture *f, int i, const char *user, const char *tenant,
                                      const char *info)
{
    struct peer *p = &f->peers[i];
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
    p->fd = sv[1];
    p->in = malloc(PEER_BUF);
    assert_non_null(p->in);
    p->in_len = p->in_pos = 0;
    p->c = calloc(1, sizeof *p->c);
    assert_non_null(p->c);
    p->c->conn.handler = &client_handler;
    assert_int_equal(conn_open(f->net, sv[0], &p->c->conn), 0);
    atomic_fetch_add(&f->connections, 1);
    p->c->adm.slot = 1;
    struct auth_result who = {0};
    if (user)
        snprintf(who.user, sizeof who.user, "%s", user);
    /* A tenant or info comes with a token, here one that grants everything. */
    if (tenant[0] || info) {
        who.has_token = 1;
        who.claims.tenant = tenant[0] ? strdup(tenant) : NULL;
        who.claims.info = info ? strdup(info) : NULL;
        who.claims.rights = (struct token_rights){.rooms = strdup("*"), .publish = strdup("*"), .send = 1,
                                                  .broadcast = 1};
    }
    conn_upgrade(&p->c->conn, &client_handler, f->cfg.max_message);
    client_start(p->c, &who);
    token_claims_free(&who.claims);

    json_t *msg = expect(f, p, "welcome", NULL);
    char session[32];
    snprintf(session, sizeof session, "0.%llu", (unsigned long long)p->c->conn.seq);
    assert_string_equal(str(msg, "session"), session);
    if (user)
        assert_string_equal(str(msg, "user"), user);
    else
        assert_true(json_is_null(json_object_get(msg, "user")));
    assert_string_equal(str(msg, "node"), "test-node");
    assert_int_equal(json_integer_value(json_object_get(msg, "heartbeat")), 30);
    json_decref(msg);
    return p;
}

static struct peer *connect_client(struct fixture *f, int i, const char *user)
{
    return connect_client_in(f, i, user, "", NULL);
}

/* Joins room with ref and checks the joined reply. */
static void join(struct fixture *f, struct peer *p, const char *room, const char *ref)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "{\"type\":\"join\",\"room\":\"%s\",\"ref\":%s}", room, ref);
    send_cmd(f, p, cmd);
    json_t *msg = expect(f, p, "joined", ref);
    assert_string_equal(str(msg, "room"), room);
    json_decref(msg);
}

/* ---- Tests --------------------------------------------------------------- */

static void test_client_start_sends_welcome(void **state)
{
    struct fixture *f = *state;
    struct peer *p = connect_client(f, 0, NULL);
    assert_true(quiet(f, p, 20));
}

static void test_client_ping_answers_pong_with_ref(void **state)
{
    struct fixture *f = *state;
    struct peer *p = connect_client(f, 0, NULL);

    send_cmd(f, p, "{\"type\":\"ping\",\"ref\":7}");
    json_decref(expect(f, p, "pong", "7"));
    send_cmd(f, p, "{\"type\":\"ping\",\"ref\":\"a-b\"}");
    json_decref(expect(f, p, "pong", "\"a-b\""));
    send_cmd(f, p, "{\"type\":\"ping\"}");
    json_decref(expect(f, p, "pong", NULL));
}

static void test_client_join_answers_joined_with_latest_offset(void **state)
{
    struct fixture *f = *state;
    struct peer *p = connect_client(f, 0, NULL);

    send_cmd(f, p, "{\"type\":\"join\",\"room\":\"lobby\",\"ref\":1}");
    json_t *msg = expect(f, p, "joined", "1");
    assert_string_equal(str(msg, "room"), "lobby");
    assert_string_equal(str(msg, "offset"), ORIGIN_TEXT);
    assert_true(json_is_false(json_object_get(msg, "recovered")));
    assert_int_equal(json_integer_value(json_object_get(msg, "missed")), 0);
    json_decref(msg);
    assert_int_equal(hub_room_members(f->app.hub, "lobby"), 0); /* fresh until the first message */
    assert_true(hub_is_member(p->c, "lobby"));
    assert_false(hub_is_pending(p->c, "lobby"));
    assert_true(quiet(f, p, 20)); /* anonymous: no presence */
}

static void test_client_join_again_answers_joined_at_once(void **state)
{
    struct fixture *f = *state;
    struct peer *p = connect_client(f, 0, NULL);

    join(f, p, "lobby", "1");
    send_cmd(f, p, "{\"type\":\"join\",\"room\":\"lobby\",\"ref\":2}");
    json_t *msg = expect(f, p, "joined", "2");
    assert_true(json_is_null(json_object_get(msg, "offset")));
    assert_true(json_is_true(json_object_get(msg, "recovered")));
    assert_int_equal(json_integer_value(json_object_get(msg, "missed")), 0);
    json_decref(msg);
    assert_int_equal(hub_room_count(p->c), 1);
}

static void test_client_join_twice_in_a_row_answers_both_in_order(void **state)
{
    struct fixture *f = *state;
    struct peer *p = connect_client(f, 0, NULL);
    const char *j1 = "{\"type\":\"join\",\"room\":\"x\",\"ref\":4}";
    const char *j2 = "{\"type\":\"join\",\"room\":\"x\",\"ref\":5}";
    uint8_t both[256];

    /* The second join is read before the first is answered: its reply (a
     * rejoin through the bus) comes right after the first's. */
    size_t len = client_frame(both, WS_OP_TEXT, j1, strlen(j1));
    len += client_frame(both + len, WS_OP_TEXT, j2, strlen(j2));
    peer_write(f, p, both, len);
    json_t *msg = expect(f, p, "joined", "4");
    assert_string_equal(str(msg, "offset"), ORIGIN_TEXT);
    json_decref(msg);
    msg = expect(f, p, "joined", "5");
    assert_true(json_is_null(json_object_get(msg, "offset")));
    assert_true(json_is_true(json_object_get(msg, "recovered")));
    json_decref(msg);
    assert_int_equal(hub_room_count(p->c), 1);
}

static void test_client_publish_answers_ack_and_delivers_message(void **state)
{
    struct fixture *f = *state;
    struct peer *p = connect_client(f, 0, NULL);

    join(f, p, "lobby", "1");
    send_cmd(f, p, "{\"type\":\"publish\",\"room\":\"lobby\",\"data\":{\"x\":1},\"ref\":2}");
    /* The ack and the message, in either order. */
    json_t *a = next_msg(f, p), *b = next_msg(f, p);
    const char *ta = json_string_value(json_object_get(a, "type"));
    json_t *ack = ta && !strcmp(ta, "ack") ? a : b, *ev = ack == a ? b : a;
    assert_type(ack, "ack");
    assert_type(ev, "message");
    assert_int_equal(json_integer_value(json_object_get(ack, "ref")), 2);
    assert_string_equal(str(ev, "room"), "lobby");
    assert_string_equal(str(ev, "offset"), str(ack, "offset"));
    assert_string_not_equal(str(ev, "offset"), ORIGIN_TEXT);
    assert_true(json_is_null(json_object_get(ev, "from")));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(ev, "data"), "x")), 1);
    assert_true(json_is_integer(json_object_get(ev, "ts")));
    json_decref(a);
    json_decref(b);
}

static void test_client_publish_echo_false_leaves_out_publisher_only(void **state)
{
    struct fixture *f = *state;
    struct peer *p = connect_client(f, 0, "alice");
    struct peer *q = connect_client(f, 1, "bob");

    join(f, p, "lobby", "1");
    json_decref(expect(f, p, "presence_join", NULL));
    join(f, q, "lobby", "1");
    json_decref(expect(f, q, "presence_join", NULL));
    json_decref(expect(f, p, "presence_join", NULL)); /* bob's */

    send_cmd(f, p, "{\"type\":\"publish\",\"room\":\"lobby\",\"data\":\"quiet\",\"echo\":false,\"ref\":2}");
    /* The memory bus delivers before it acks: an echo would come first. */
    json_t *ack = expect(f, p, "ack", "2");
    assert_true(json_is_string(json_object_get(ack, "offset")));
    json_t *ev = expect(f, q, "message", NULL);
    assert_string_equal(str(ev, "data"), "quiet");
    assert_string_equal(str(ev, "from"), "alice");
    assert_string_equal(str(ev, "offset"), str(ack, "offset"));
    json_decref(ack);
    json_decref(ev);
    send_cmd(f, p, "{\"type\":\"ping\",\"ref\":3}");
    json_decref(expect(f, p, "pong", "3"));
    assert_true(quiet(f, p, 20));
}

static void test_client_ephemeral_publish_has_no_offset(void **state)
{
    struct fixture *f = *state;
    struct peer *p = connect_client(f, 0, NULL);

    join(f, p, "lobby", "1");
    send_cmd(f, p, "{\"type\":\"publish\",\"room\":\"lobby\",\"data\":1,\"ephemeral\":true,\"echo\":false,\"ref\":2}");
    json_t *ack = expect(f, p, "ack", "2");
    assert_true(json_is_null(json_object_get(ack, "offset")));
    json_decref(ack);
}

static void test_client_bad_json_is_an_error_without_ref(void **state)
{
    struct fixture *f = *state;
    struct peer *p = connect_client(f, 0, NULL);

    send_cmd(f, p, "not json");
    expect_error(f, p, "bad_json", NULL);
    send_cmd(f, p, "[1,2]");
    expect_error(f, p, "bad_json", NULL);
    /* The connection stays usable. */
    send_cmd(f, p, "{\"type\":\"ping\",\"ref\":1}");
    json_decref(expect(f, p, "pong", "1"));
}

static void test_client_unknown_type_is_an_error_with_ref(void **state)
{
    struct fixture *f = *state;
    struct peer *p = connect_client(f, 0, NULL);

    send_cmd(f, p, "{\"type\":\"nope\",\"ref\":3}");
    expect_error(f, p, "unknown_type", "3");
    send_cmd(f, p, "{\"ref\":4}");
    expect_error(f, p, "bad_command", "4");
    send_cmd(f, p, "{\"type\":\"join\",\"room\":\"no spaces\",\"ref\":5}");
    expect_error(f, p, "room_invalid", "5");
}

/* --max-data counts the data as the compact JSON that is passed on: at
 * the limit it is published, one byte over it is too_large, for publish,
 * send and broadcast. */
static void test_client_data_over_max_data_is_too_large(void **state)
{
    struct fixture *f = *state;
    struct peer *p = connect_client(f, 0, "alice");
    char cmd[2200], data[1100];

    f->cfg.allow_broadcast = 1;
    join(f, p, "lobby", "1");
    json_decref(expect(f, p, "presence_join", NULL));
    /* A string of n bytes is n + 2 bytes of JSON. */
    memset(data, 'x', sizeof data);
    snprintf(cmd, sizeof cmd, "{\"type\":\"publish\",\"room\":\"lobby\",\"data\":\"%.*s\",\"ref\":\"ok\"}",
             (int)f->cfg.max_data - 2, data);
    send_cmd(f, p, cmd);
    json_decref(expect(f, p, "message", NULL));
    json_decref(expect(f, p, "ack", "\"ok\""));
    snprintf(cmd, sizeof cmd, "{\"type\":\"publish\",\"room\":\"lobby\",\"data\":\"%.*s\",\"ref\":\"big\"}",
             (int)f->cfg.max_data - 1, data);
    send_cmd(f, p, cmd);
    expect_error(f, p, "too_large", "\"big\"");
    /* Whitespace does not count: the data is measured compact. */
    snprintf(cmd, sizeof cmd, "{\"type\":\"send\",\"user\":\"bob\",\"data\":[ \"%.*s\" ],\"ref\":\"s\"}",
             (int)f->cfg.max_data - 4, data);
    send_cmd(f, p, cmd);
    json_decref(expect(f, p, "ack", "\"s\""));
    snprintf(cmd, sizeof cmd, "{\"type\":\"send\",\"user\":\"bob\",\"data\":[\"%.*s\"],\"ref\":\"s2\"}",
             (int)f->cfg.max_data - 3, data);
    send_cmd(f, p, cmd);
    expect_error(f, p, "too_large", "\"s2\"");
    snprintf(cmd, sizeof cmd, "{\"type\":\"broadcast\",\"data\":\"%.*s\",\"ref\":\"b\"}",
             (int)f->cfg.max_data, data);
    send_cmd(f, p, cmd);
    expect_error(f, p, "too_large", "\"b\"");
    assert_true(quiet(f, p, 50));
}

/* --rate-limit: a full bucket takes a burst of rate commands, valid or
 * not; the rest get rate_limited with their ref and are not run. Refused
 * for more than 10 s without a pause of a second, the connection is
 * closed with 1008. */
static void test_client_rate_limit_refuses_then_closes_with_1008(void **state)
{
    struct fixture *f = *state;
    struct peer *p = connect_client(f, 0, NULL);
    char cmd[64];

    f->cfg.rate_limit = 5;
    for (int i = 0; i < 4; i++) {
        snprintf(cmd, sizeof cmd, "{\"type\":\"ping\",\"ref\":%d}", i);
        send_cmd(f, p, cmd);
    }
    send_cmd(f, p, "not json");
    for (int i = 10; i < 13; i++) {
        snprintf(cmd, sizeof cmd, "{\"type\":\"ping\",\"ref\":%d}", i);
        send_cmd(f, p, cmd);
    }
    for (int i = 0; i < 4; i++) {
        snprintf(cmd, sizeof cmd, "%d", i);
        json_decref(expect(f, p, "pong", cmd));
    }
    expect_error(f, p, "bad_json", NULL);
    for (int i = 10; i < 13; i++) {
        snprintf(cmd, sizeof cmd, "%d", i);
        expect_error(f, p, "rate_limited", cmd);
    }
    assert_int_equal(atomic_load(&f->wm.rate_limited), 3);
    /* Ten seconds of refusals (the clock is moved, not waited for). */
    p->c->refused_since_ms -= 10001;
    send_cmd(f, p, "{\"type\":\"ping\",\"ref\":99}");
    struct frame_in fr;
    assert_true(peer_try_frame(f, p, &fr, DEADLINE_MS));
    assert_int_equal(fr.op, WS_OP_CLOSE);
    assert_int_equal(fr.len, 2 + strlen("rate limit exceeded"));
    assert_int_equal(fr.payload[0] << 8 | fr.payload[1], 1008);
}

static void test_client_publish_before_join_is_not_member(void **state)
{
    struct fixture *f = *state;
    struct peer *p = connect_client(f, 0, NULL);

    send_cmd(f, p, "{\"type\":\"publish\",\"room\":\"lobby\",\"data\":1,\"ref\":\"p\"}");
    expect_error(f, p, "not_member", "\"p\"");
    send_cmd(f, p, "{\"type\":\"history\",\"room\":\"lobby\",\"ref\":\"h\"}");
    expect_error(f, p, "not_member", "\"h\"");
    send_cmd(f, p, "{\"type\":\"presence\",\"room\":\"lobby\",\"ref\":\"pr\"}");
    expect_error(f, p, "not_member", "\"pr\"");
    send_cmd(f, p, "{\"type\":\"leave\",\"room\":\"lobby\",\"ref\":\"l\"}");
    expect_error(f, p, "not_member", "\"l\"");
}

static void test_client_join_past_max_rooms_is_too_many_rooms(void **state)
{
    struct fixture *f = *state;
    struct peer *p = connect_client(f, 0, NULL);

    join(f, p, "a", "1");
    join(f, p, "b", "2");
    send_cmd(f, p, "{\"type\":\"join\",\"room\":\"c\",\"ref\":3}");
    expect_error(f, p, "too_many_rooms", "3");
    assert_int_equal(hub_room_count(p->c), 2);
    /* A leave frees its place at once. */
    send_cmd(f, p, "{\"type\":\"leave\",\"room\":\"a\",\"ref\":4}");
    json_decref(expect(f, p, "left", "4"));
    join(f, p, "c", "5");
}

static void test_client_broadcast_not_allowed_is_forbidden(void **state)
{
    struct fixture *f = *state;
    struct peer *p = connect_client(f, 0, NULL);

    send_cmd(f, p, "{\"type\":\"broadcast\",\"data\":1,\"ref\":9}");
    expect_error(f, p, "forbidden", "9");
    assert_true(quiet(f, p, 20));
}

static void test_client_broadcast_allowed_reaches_everyone(void **state)
{
    struct fixture *f = *state;
    f->cfg.allow_broadcast = 1;
    struct peer *p = connect_client(f, 0, NULL);
    struct peer *q = connect_client(f, 1, NULL);

    send_cmd(f, p, "{\"type\":\"broadcast\",\"data\":\"all\",\"ref\":9}");
    json_t *ev = expect(f, p, "broadcast", NULL);
    assert_string_equal(str(ev, "data"), "all");
    json_decref(ev);
    json_t *ack = expect(f, p, "ack", "9");
    assert_null(json_object_get(ack, "offset"));
    json_decref(ack);
    json_decref(expect(f, q, "broadcast", NULL));
}

static void test_client_send_reaches_user_connections(void **state)
{
    struct fixture *f = *state;
    struct peer *p = connect_client(f, 0, "alice");
    struct peer *q = connect_client(f, 1, "bob");

    send_cmd(f, p, "{\"type\":\"send\",\"user\":\"bob\",\"data\":{\"hi\":true},\"ref\":1}");
    json_decref(expect(f, p, "ack", "1"));
    json_t *ev = expect(f, q, "direct", NULL);
    assert_string_equal(str(ev, "from"), "alice");
    json_decref(ev);
    assert_true(quiet(f, p, 20));
}

static void test_client_leave_answers_left_and_ends_membership(void **state)
{
    struct fixture *f = *state;
    struct peer *p = connect_client(f, 0, NULL);

    join(f, p, "lobby", "1");
    send_cmd(f, p, "{\"type\":\"leave\",\"room\":\"lobby\",\"ref\":2}");
    json_t *msg = expect(f, p, "left", "2");
    assert_string_equal(str(msg, "room"), "lobby");
    json_decref(msg);
    assert_false(hub_is_member(p->c, "lobby"));
    send_cmd(f, p, "{\"type\":\"publish\",\"room\":\"lobby\",\"data\":1,\"ref\":3}");
    expect_error(f, p, "not_member", "3");
}

static void test_client_join_then_leave_at_once_answers_joined_then_left(void **state)
{
    struct fixture *f = *state;
    struct peer *p = connect_client(f, 0, NULL);
    char both[256];
    const char *j = "{\"type\":\"join\",\"room\":\"lobby\",\"ref\":1}";
    const char *l = "{\"type\":\"leave\",\"room\":\"lobby\",\"ref\":2}";

    size_t len = client_frame((uint8_t *)both, WS_OP_TEXT, j, strlen(j));
    len += client_frame((uint8_t *)both + len, WS_OP_TEXT, l, strlen(l));
    peer_write(f, p, both, len);
    json_decref(expect(f, p, "joined", "1"));
    json_decref(expect(f, p, "left", "2"));
    assert_false(hub_is_member(p->c, "lobby"));
}

/* Replies that go through the bus keep the order of the commands
 * (docs/protocol.md section 2) although the bus answers the history first
 * while the join waits for its subscription. */
static void test_client_replies_keep_command_order_while_join_waits(void **state)
{
    struct fixture *f = *state;
    struct peer *p = connect_client(f, 0, NULL);
    send_cmd(f, p, "{\"type\":\"join\",\"room\":\"lobby\",\"ref\":1}");
    send_cmd(f, p, "{\"type\":\"join\",\"room\":\"other\",\"ref\":2}");
    send_cmd(f, p, "{\"type\":\"leave\",\"room\":\"other\",\"ref\":3}");
    assert_true(quiet(f, p, 50)); /* nothing overtakes the waiting join */
    bus_subscribed(f->app.bus, "lobby");
    json_decref(expect(f, p, "joined", "1"));
    /* "other" was left before it was confirmed: answered all the same. */
    json_decref(expect(f, p, "joined", "2"));
    json_decref(expect(f, p, "left", "3"));
    assert_true(hub_is_member(p->c, "lobby"));
    assert_false(hub_is_member(p->c, "other"));
}

/* --request-timeout: a join whose subscription never comes is answered
 * unavailable in time, the replies behind it follow, and when its reply
 * finally comes it is only freed (no second answer). */
static void test_client_call_without_answer_is_answered_unavailable_in_time(void **state)
{
    struct fixture *f = *state;
    f->cfg.request_timeout = 300;
    struct peer *p = connect_client(f, 0, NULL);
    send_cmd(f, p, "{\"type\":\"join\",\"room\":\"stuck\",\"ref\":1}");
    send_cmd(f, p, "{\"type\":\"history\",\"room\":\"stuck\",\"ref\":2}");
    uint64_t start = clock_mono_ms();
    json_t *err = expect(f, p, "error", "1");
    uint64_t took = clock_mono_ms() - start;
    assert_string_equal(str(err, "code"), "unavailable");
    json_decref(err);
    assert_true(took >= 250 && took < 2000);
    /* The history waited behind the join; it is answered in its turn. */
    json_decref(expect(f, p, "history", "2"));
    /* The join that timed out is undone: the connection is not a member. */
    assert_false(hub_is_member(p->c, "stuck"));
    bus_subscribed(f->app.bus, "stuck");
    assert_true(quiet(f, p, 100)); /* the late joined is not sent */
    send_cmd(f, p, "{\"type\":\"ping\",\"ref\":3}");
    json_decref(expect(f, p, "pong", "3"));
}

static void test_client_history_returns_what_was_published(void **state)
{
    struct fixture *f = *state;
    struct peer *p = connect_client(f, 0, NULL);

    join(f, p, "lobby", "1");
    for (int i = 0; i < 3; i++) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "{\"type\":\"publish\",\"room\":\"lobby\",\"data\":%d,\"echo\":false,\"ref\":%d}", i,
                 10 + i);
        send_cmd(f, p, cmd);
        char ref[16];
        snprintf(ref, sizeof ref, "%d", 10 + i);
        json_decref(expect(f, p, "ack", ref));
    }
    send_cmd(f, p, "{\"type\":\"history\",\"room\":\"lobby\",\"limit\":2,\"ref\":\"h\"}");
    json_t *msg = expect(f, p, "history", "\"h\"");
    assert_string_equal(str(msg, "room"), "lobby");
    json_t *messages = json_object_get(msg, "messages");
    assert_int_equal(json_array_size(messages), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *ev = json_array_get(messages, i);
        assert_type(ev, "message");
        assert_int_equal(json_integer_value(json_object_get(ev, "data")), (json_int_t)i + 1);
    }
    json_decref(msg);

    send_cmd(f, p, "{\"type\":\"history\",\"room\":\"lobby\",\"ref\":\"all\"}");
    msg = expect(f, p, "history", "\"all\"");
    assert_int_equal(json_array_size(json_object_get(msg, "messages")), 3);
    json_decref(msg);
}

static void test_client_join_since_replays_missed_messages(void **state)
{
    struct fixture *f = *state;
    struct peer *p = connect_client(f, 0, NULL);
    struct peer *q = connect_client(f, 1, NULL);

    json_t *msg;
    join(f, p, "lobby", "1");
    send_cmd(f, p, "{\"type\":\"publish\",\"room\":\"lobby\",\"data\":\"first\",\"echo\":false,\"ref\":2}");
    msg = expect(f, p, "ack", "2");
    char since[OFFSET_MAX_LEN];
    snprintf(since, sizeof since, "%s", str(msg, "offset"));
    json_decref(msg);
    send_cmd(f, p, "{\"type\":\"publish\",\"room\":\"lobby\",\"data\":\"second\",\"echo\":false,\"ref\":3}");
    json_decref(expect(f, p, "ack", "3"));

    char cmd[256];
    snprintf(cmd, sizeof cmd, "{\"type\":\"join\",\"room\":\"lobby\",\"since\":\"%s\",\"ref\":1}", since);
    send_cmd(f, q, cmd);
    msg = expect(f, q, "joined", "1");
    assert_true(json_is_true(json_object_get(msg, "recovered")));
    assert_int_equal(json_integer_value(json_object_get(msg, "missed")), 1);
    json_decref(msg);
    msg = expect(f, q, "message", NULL);
    assert_string_equal(str(msg, "data"), "second");
    json_decref(msg);
}

static void test_client_presence_lists_users_of_room(void **state)
{
    struct fixture *f = *state;
    struct peer *p = connect_client(f, 0, "alice");

    join(f, p, "lobby", "1");
    json_t *msg = expect(f, p, "presence_join", NULL);
    assert_string_equal(str(msg, "user"), "alice");
    json_decref(msg);
    send_cmd(f, p, "{\"type\":\"presence\",\"room\":\"lobby\",\"ref\":2}");
    msg = expect(f, p, "presence", "2");
    json_t *users = json_object_get(msg, "users");
    assert_int_equal(json_array_size(users), 1);
    assert_string_equal(str(json_array_get(users, 0), "user"), "alice");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(users, 0), "connections")), 1);
    json_decref(msg);
}

static void test_client_close_leaves_rooms_and_gives_back_slot(void **state)
{
    struct fixture *f = *state;
    struct peer *p = connect_client(f, 0, "alice");
    struct peer *q = connect_client(f, 1, "bob");

    join(f, p, "lobby", "1");
    json_decref(expect(f, p, "presence_join", NULL));
    join(f, q, "lobby", "1");
    json_decref(expect(f, q, "presence_join", NULL));
    json_decref(expect(f, p, "presence_join", NULL));
    assert_int_equal(atomic_load(&f->connections), 2);

    /* alice closes: the close is echoed, her slot is given back at once,
     * bob sees her leave. */
    uint8_t buf[32];
    const uint8_t code[] = {0x03, 0xE8};
    peer_write(f, p, buf, client_frame(buf, WS_OP_CLOSE, code, 2));
    struct frame_in fr;
    assert_true(peer_try_frame(f, p, &fr, DEADLINE_MS));
    assert_int_equal(fr.op, WS_OP_CLOSE);
    assert_int_equal(atomic_load(&f->connections), 1);
    json_t *msg = expect(f, q, "presence_leave", NULL);
    assert_string_equal(str(msg, "user"), "alice");
    json_decref(msg);
    close(p->fd);
    p->fd = -1;
    uint64_t end = clock_mono_ms() + DEADLINE_MS;
    while (f->net->conns && f->net->conns->next && clock_mono_ms() < end)
        pump(f);
    assert_null(f->net->conns->next); /* alice's client is freed */

    send_cmd(f, q, "{\"type\":\"presence\",\"room\":\"lobby\",\"ref\":2}");
    msg = expect(f, q, "presence", "2");
    assert_int_equal(json_array_size(json_object_get(msg, "users")), 1);
    json_decref(msg);
}

static void test_client_close_with_replies_pending_frees_after_they_return(void **state)
{
    struct fixture *f = *state;
    struct peer *p = connect_client(f, 0, NULL);

    join(f, p, "lobby", "1");
    /* Commands in flight when the socket goes: their replies find the
     * client closed and drop their references. */
    send_cmd(f, p, "{\"type\":\"publish\",\"room\":\"lobby\",\"data\":1,\"ref\":2}");
    send_cmd(f, p, "{\"type\":\"history\",\"room\":\"lobby\",\"ref\":3}");
    close(p->fd);
    p->fd = -1;
    pump_until_no_conns(f);
}

/* More than PENDING_MAX commands read in one go, before the bus runs: the
 * input waits once PENDING_MAX are pending, and goes on when half of them
 * are answered; none is refused, and every reply comes in order. */
static void test_client_commands_past_pending_max_wait_for_replies(void **state)
{
    struct fixture *f = *state;
    struct peer *p = connect_client(f, 0, NULL);
    const int n = PENDING_MAX + 100;

    join(f, p, "r", "0");
    size_t cap = (size_t)n * 64, len = 0;
    uint8_t *buf = malloc(cap);
    assert_non_null(buf);
    for (int i = 0; i < n; i++) {
        char cmd[64];
        int m = snprintf(cmd, sizeof cmd, "{\"type\":\"presence\",\"room\":\"r\",\"ref\":%d}", i);
        len += client_frame(buf + len, WS_OP_TEXT, cmd, (size_t)m);
    }
    assert_true(len < NET_READ_BUF); /* one read: the bus cannot run in between */
    peer_write(f, p, buf, len);
    free(buf);

    for (int i = 0; i < n; i++) {
        char ref[16];
        snprintf(ref, sizeof ref, "%d", i);
        json_decref(expect(f, p, "presence", ref));
    }
    assert_int_equal(p->c->pending, 0);
    assert_false(p->c->conn.paused);
    send_cmd(f, p, "{\"type\":\"presence\",\"room\":\"r\",\"ref\":\"again\"}");
    json_decref(expect(f, p, "presence", "\"again\""));
}

/* Two tenants' clients in rooms of one name: replies and events name the
 * room alone, and nothing of one tenant reaches the other (messages,
 * presence with info, history, direct messages, broadcasts). */
static void test_client_tenants_share_room_names_and_nothing_else(void **state)
{
    struct fixture *f = *state;
    f->cfg.allow_broadcast = 1;
    struct peer *p = connect_client_in(f, 0, "alice", "acme", "{\"name\":\"Alice\"}");
    struct peer *q = connect_client_in(f, 1, "bob", "globex", NULL);

    join(f, p, "lobby", "1");
    json_t *msg = expect(f, p, "presence_join", NULL);
    assert_string_equal(str(msg, "room"), "lobby");
    assert_string_equal(str(json_object_get(msg, "info"), "name"), "Alice");
    json_decref(msg);
    join(f, q, "lobby", "1");
    msg = expect(f, q, "presence_join", NULL);
    assert_string_equal(str(msg, "user"), "bob");
    assert_null(json_object_get(msg, "info"));
    json_decref(msg);

    /* Each publish: its event and its ack, in either order. */
    const char *publishes[] = {
        "{\"type\":\"publish\",\"room\":\"lobby\",\"data\":\"acme only\",\"ref\":2}",
        "{\"type\":\"broadcast\",\"data\":\"acme all\",\"ref\":3}",
    };
    const char *events[] = {"message", "broadcast"};
    for (int i = 0; i < 2; i++) {
        send_cmd(f, p, publishes[i]);
        json_t *a = next_msg(f, p), *b = next_msg(f, p);
        const char *ta = json_string_value(json_object_get(a, "type"));
        json_t *ack = ta && !strcmp(ta, "ack") ? a : b, *ev = ack == a ? b : a;
        assert_type(ack, "ack");
        assert_type(ev, events[i]);
        if (i == 0)
            assert_string_equal(str(ev, "room"), "lobby");
        json_decref(a);
        json_decref(b);
    }
    send_cmd(f, p, "{\"type\":\"send\",\"user\":\"bob\",\"data\":1,\"ref\":4}");
    json_decref(expect(f, p, "ack", "4"));

    send_cmd(f, p, "{\"type\":\"presence\",\"room\":\"lobby\",\"ref\":5}");
    msg = expect(f, p, "presence", "5");
    assert_string_equal(str(msg, "room"), "lobby");
    json_t *users = json_object_get(msg, "users");
    assert_int_equal(json_array_size(users), 1);
    assert_string_equal(str(json_array_get(users, 0), "user"), "alice");
    assert_string_equal(str(json_object_get(json_array_get(users, 0), "info"), "name"), "Alice");
    json_decref(msg);

    send_cmd(f, q, "{\"type\":\"history\",\"room\":\"lobby\",\"ref\":6}");
    msg = expect(f, q, "history", "6");
    assert_string_equal(str(msg, "room"), "lobby");
    assert_int_equal(json_array_size(json_object_get(msg, "messages")), 0);
    json_decref(msg);
    send_cmd(f, q, "{\"type\":\"presence\",\"room\":\"lobby\",\"ref\":7}");
    msg = expect(f, q, "presence", "7");
    users = json_object_get(msg, "users");
    assert_int_equal(json_array_size(users), 1);
    assert_string_equal(str(json_array_get(users, 0), "user"), "bob");
    json_decref(msg);
    /* bob heard nothing of acme: no message, direct, broadcast or presence. */
    assert_true(quiet(f, q, 50));

    send_cmd(f, q, "{\"type\":\"leave\",\"room\":\"lobby\",\"ref\":8}");
    msg = expect(f, q, "left", "8");
    assert_string_equal(str(msg, "room"), "lobby");
    json_decref(msg);
    assert_true(quiet(f, p, 50));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        T(test_client_start_sends_welcome),
        T(test_client_ping_answers_pong_with_ref),
        T(test_client_join_answers_joined_with_latest_offset),
        T(test_client_join_again_answers_joined_at_once),
        T(test_client_join_twice_in_a_row_answers_both_in_order),
        T(test_client_publish_answers_ack_and_delivers_message),
        T(test_client_publish_echo_false_leaves_out_publisher_only),
        T(test_client_ephemeral_publish_has_no_offset),
        T(test_client_bad_json_is_an_error_without_ref),
        T(test_client_unknown_type_is_an_error_with_ref),
        T(test_client_publish_before_join_is_not_member),
        T(test_client_data_over_max_data_is_too_large),
        T(test_client_rate_limit_refuses_then_closes_with_1008),
        T(test_client_join_past_max_rooms_is_too_many_rooms),
        T(test_client_broadcast_not_allowed_is_forbidden),
        T(test_client_broadcast_allowed_reaches_everyone),
        T(test_client_send_reaches_user_connections),
        T(test_client_leave_answers_left_and_ends_membership),
        T(test_client_join_then_leave_at_once_answers_joined_then_left),
        T(test_client_history_returns_what_was_published),
        T(test_client_join_since_replays_missed_messages),
        T(test_client_presence_lists_users_of_room),
        T(test_client_tenants_share_room_names_and_nothing_else),
        T(test_client_close_leaves_rooms_and_gives_back_slot),
        T(test_client_close_with_replies_pending_frees_after_they_return),
        T(test_client_commands_past_pending_max_wait_for_replies),
        cmocka_unit_test_setup_teardown(test_client_replies_keep_command_order_while_join_waits, setup_slow, teardown),
        cmocka_unit_test_setup_teardown(test_client_call_without_answer_is_answered_unavailable_in_time, setup_slow,
                                        teardown),
#undef T
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
