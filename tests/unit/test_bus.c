/* test_bus.c - unit tests of cluster/bus.c on its own: a real bus on a uv
 * loop in the test thread, with a fake engine (a struct bus_engine defined
 * here whose functions record what the bus asks of it: interest on and off,
 * publishes, presence changes) that the test plays by calling
 * bus_subscribed, bus_deliver, bus_link_changed and bus_reply itself, and
 * the memory store behind a gate: a store that forwards every call to it
 * and can hold the calls' completions, so that a history read stays in
 * flight until the test releases it. The hooks queue what the bus posts to
 * each worker; the test runs those tasks as the workers would and records
 * the replies and events of each worker in order.
 * Covered: interest follows the first join and the last leave; a join reads
 * the store only once the subscription is confirmed; live events wait while
 * a history read is in flight and follow its reply in order, less those
 * the read already had; a rejoin is answered when the first join's hold
 * ends; gap fill after the link comes back delivers the missed persisted
 * events before the held live ones; who gets room, user and everyone
 * events; an unavailable engine; replies to one worker in request order;
 * tenants: rooms of one name in two tenants (keys) kept apart in interest,
 * delivery, presence, history and the rooms list, and a tenant's
 * broadcast reaching only the workers of its connections; presence_join
 * and the presence list with the info of the newest connection;
 * and that requests, held events and waiting joins are all freed (the
 * binary runs under ASan and LeakSanitizer). Runs the loop with
 * UV_RUN_NOWAIT a bounded number of times: never waits. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/bus.h"
#include "cluster/presence.h"
#include "core/error.h"
#include "store/store.h"

#define NWORKERS 3
#define MAX_RECS 64
#define MAX_CALLS 64
#define ORIGIN ((struct offset){100, 0})
#define ORIGIN_TEXT "100-0"

/* ---- What each worker saw ------------------------------------------------ */

enum rec_kind { REC_REPLY, REC_EVENT };

struct rec {
    enum rec_kind kind;
    enum bus_op op;                 /* replies */
    int error;
    char offset[OFFSET_MAX_LEN];    /* join: the latest; publish: the ack's */
    int recovered;
    size_t count;                   /* join: missed; history: messages */
    char text[1024];                /* event JSON; join and history: the batch */
    int has_offset;                 /* events */
    struct offset ev_offset;
};

struct worker {
    int index;
    int exited;                     /* post refuses, as for a worker that ended */
    struct task *head, *tail;       /* posted and not yet run */
    struct rec recs[MAX_RECS];
    int n;
};

/* ---- The gate store ------------------------------------------------------ */

struct gate_call {
    struct store_call *call;
    void (*done)(struct store_call *call);
    int completed;
};

struct gate {
    struct store base;
    struct store *inner;   /* the memory store */
    int hold;              /* completions wait for gate_release */
    int ready;
    int appends, recovers, histories, latests;
    struct gate_call calls[MAX_CALLS];
    int ncalls;
};

static struct gate *gate_of(struct store *s)
{
    return (struct gate *)s;
}

static void gate_done(struct store_call *call)
{
    struct gate *g = call->engine;
    for (int i = 0; i < g->ncalls; i++) {
        if (g->calls[i].call != call)
            continue;
        if (g->hold) {
            g->calls[i].completed = 1;
            return;
        }
        void (*done)(struct store_call *) = g->calls[i].done;
        memmove(&g->calls[i], &g->calls[i + 1], sizeof g->calls[0] * (size_t)(g->ncalls - i - 1));
        g->ncalls--;
        call->done = done;
        call->engine = NULL;
        done(call);
        return;
    }
    fail_msg("gate: completion of a call it never saw");
}

/* Hands call to the memory store, keeping its completion when the gate
 * holds. The memory store finishes in the call, so the result is what the
 * store held at that moment, as a read whose answer is still on its way. */
static void gate_forward(struct gate *g, struct store_call *call,
                         void (*op)(struct store *s, struct store_call *call))
{
    assert_true(g->ncalls < MAX_CALLS);
    g->calls[g->ncalls++] = (struct gate_call){call, call->done, 0};
    call->done = gate_done;
    /* The memory store leaves call->engine alone; the gate keeps itself there. */
    call->engine = g;
    op(g->inner, call);
}

static void gate_append(struct store *s, struct store_call *call)
{
    gate_of(s)->appends++;
    gate_forward(gate_of(s), call, gate_of(s)->inner->ops->append);
}

static void gate_recover(struct store *s, struct store_call *call)
{
    gate_of(s)->recovers++;
    gate_forward(gate_of(s), call, gate_of(s)->inner->ops->recover);
}

static void gate_history(struct store *s, struct store_call *call)
{
    gate_of(s)->histories++;
    gate_forward(gate_of(s), call, gate_of(s)->inner->ops->history);
}

static void gate_latest(struct store *s, struct store_call *call)
{
    gate_of(s)->latests++;
    gate_forward(gate_of(s), call, gate_of(s)->inner->ops->latest);
}

/* Completes up to max held calls, oldest first; returns how many. */
static int gate_release(struct gate *g, int max)
{
    int n = 0;
    while (n < max) {
        int i = 0;
        while (i < g->ncalls && !g->calls[i].completed)
            i++;
        if (i == g->ncalls)
            break;
        struct store_call *call = g->calls[i].call;
        void (*done)(struct store_call *) = g->calls[i].done;
        memmove(&g->calls[i], &g->calls[i + 1], sizeof g->calls[0] * (size_t)(g->ncalls - i - 1));
        g->ncalls--;
        call->done = done;
        call->engine = NULL;
        done(call);
        n++;
    }
    return n;
}

/* As a store that disconnects: calls still in flight finish first. */
static void gate_destroy(struct store *s)
{
    struct gate *g = gate_of(s);
    gate_release(g, MAX_CALLS);
    assert_int_equal(g->ncalls, 0);
    g->inner->ops->destroy(g->inner);
    free(g);
}

static int gate_ready(struct store *s)
{
    return gate_of(s)->ready;
}

static const struct store_ops gate_ops = {
    .append = gate_append,
    .recover = gate_recover,
    .history = gate_history,
    .latest = gate_latest,
    .destroy = gate_destroy,
    .ready = gate_ready,
};

/* ---- The fake engine ----------------------------------------------------- */

struct interest_rec {
    enum event_target target;
    char name[KEY_MAX_LEN + 1];
    int on;
};

struct presence_rec {
    char room[KEY_MAX_LEN + 1];
    char user[NAME_MAX_LEN + 1];
    unsigned long before, count;
    char info[256];  /* of a join, "" for none */
};

struct engine_log {
    int ready;
    int started, stopped;
    struct interest_rec interest[MAX_RECS];
    int ninterest;
    struct presence_rec presence[MAX_RECS];
    int npresence;
    struct bus_publish *publishes[MAX_RECS];  /* waiting for the test's bus_reply */
    int npublishes;
};

struct fixture {
    uv_loop_t loop;
    struct config cfg;
    struct metrics_bus metrics;
    struct gate *store;
    struct bus *bus;
    struct worker workers[NWORKERS];
    struct engine_log eng;
    uint64_t ts;  /* of the last message stored */
};

static struct fixture *starting;  /* for fake_start, which only gets the bus */

static struct engine_log *eng(struct bus *b)
{
    return &((struct fixture *)bus_engine_data(b))->eng;
}

static int fake_start(struct bus *b)
{
    bus_set_engine_data(b, starting);
    starting->eng.started++;
    return 0;
}

static void fake_stop(struct bus *b)
{
    struct engine_log *e = eng(b);
    e->stopped++;
    /* Publishes still out are answered, as an engine's last callbacks are. */
    for (int i = 0; i < e->npublishes; i++)
        bus_reply(b, &e->publishes[i]->base);
    e->npublishes = 0;
}

static int fake_ready(struct bus *b)
{
    return eng(b)->ready;
}

static void fake_publish(struct bus *b, struct bus_publish *req)
{
    struct engine_log *e = eng(b);
    assert_true(e->npublishes < MAX_RECS);
    e->publishes[e->npublishes++] = req;
}

static void fake_interest(struct bus *b, enum event_target target, const char *name, int on)
{
    struct engine_log *e = eng(b);
    assert_true(e->ninterest < MAX_RECS);
    struct interest_rec *r = &e->interest[e->ninterest++];
    r->target = target;
    snprintf(r->name, sizeof r->name, "%s", name);
    r->on = on;
}

/* Records the change and announces it as the memory engine does. */
static void fake_presence(struct bus *b, const char *room, const char *user, unsigned long before,
                          unsigned long count, const char *info)
{
    struct engine_log *e = eng(b);
    assert_true(e->npresence < MAX_RECS);
    struct presence_rec *r = &e->presence[e->npresence++];
    snprintf(r->room, sizeof r->room, "%s", room);
    snprintf(r->user, sizeof r->user, "%s", user);
    r->before = before;
    r->count = count;
    snprintf(r->info, sizeof r->info, "%s", info ? info : "");
    presence_memory_changed(b, room, user, before, count, info);
}

static void fake_presence_list(struct bus *b, struct bus_presence *req)
{
    presence_memory_list(b, req);
}

static void fake_rooms(struct bus *b, struct bus_rooms *req)
{
    if (!(req->rooms = bus_rooms_format(b, NULL, req->tenant)))
        req->base.error = WSFAN_ENOMEM;
    bus_reply(b, &req->base);
}

static const struct bus_engine fake_engine = {
    .name = "fake",
    .start = fake_start,
    .stop = fake_stop,
    .ready = fake_ready,
    .publish = fake_publish,
    .interest = fake_interest,
    .presence = fake_presence,
    .presence_list = fake_presence_list,
    .rooms = fake_rooms,
};

/* ---- Hooks: the workers -------------------------------------------------- */

static struct rec *rec_add(struct worker *w, enum rec_kind kind)
{
    if (w->n >= MAX_RECS)
        fail_msg("worker %d: more than %d records", w->index, MAX_RECS);
    struct rec *r = &w->recs[w->n++];
    memset(r, 0, sizeof *r);
    r->kind = kind;
    return r;
}

static int post(void *arg, int worker, struct task *t)
{
    struct fixture *f = arg;
    assert_true(worker >= 0 && worker < NWORKERS);
    struct worker *w = &f->workers[worker];
    if (w->exited)
        return -1;
    t->next = NULL;
    if (w->tail)
        w->tail->next = t;
    else
        w->head = t;
    w->tail = t;
    return 0;
}

static void deliver(void *ctx, const struct event *ev)
{
    struct worker *w = ctx;
    struct rec *r = rec_add(w, REC_EVENT);
    snprintf(r->text, sizeof r->text, "%s", ev->json);
    r->has_offset = ev->has_offset;
    r->ev_offset = ev->offset;
}

static void copy_batch(struct rec *r, const struct store_batch *b)
{
    r->count = b->count;
    snprintf(r->text, sizeof r->text, "%.*s", (int)b->len, b->text ? b->text : "");
}

/* The on_reply of every request the test submits: records and frees. */
static void on_reply(struct task *t, void *ctx)
{
    struct worker *w = ctx;
    struct bus_request *req = (struct bus_request *)t;
    struct rec *r = rec_add(w, REC_REPLY);
    r->op = req->op;
    r->error = req->error;
    switch (req->op) {
    case BUS_JOIN:
    case BUS_REJOIN: {
        struct bus_join *j = (struct bus_join *)req;
        snprintf(r->offset, sizeof r->offset, "%s", j->store.offset);
        r->recovered = j->store.recovered;
        copy_batch(r, &j->store.batch);
        break;
    }
    case BUS_PUBLISH:
        snprintf(r->offset, sizeof r->offset, "%s", ((struct bus_publish *)req)->store.offset);
        break;
    case BUS_HISTORY:
        copy_batch(r, &((struct bus_history *)req)->store.batch);
        break;
    case BUS_PRESENCE: {
        const char *users = ((struct bus_presence *)req)->users;
        snprintf(r->text, sizeof r->text, "%s", users ? users : "");
        break;
    }
    case BUS_ROOMS: {
        const char *rooms = ((struct bus_rooms *)req)->rooms;
        snprintf(r->text, sizeof r->text, "%s", rooms ? rooms : "");
        break;
    }
    default:
        break;
    }
    bus_request_free(req);
}

/* Runs every task posted to the workers; returns how many ran. */
static int run_workers(struct fixture *f)
{
    int ran = 0;
    for (int i = 0; i < NWORKERS; i++) {
        struct worker *w = &f->workers[i];
        while (w->head) {
            struct task *t = w->head;
            w->head = t->next;
            if (!w->head)
                w->tail = NULL;
            t->run(t, w);
            ran++;
        }
    }
    return ran;
}

/* Runs the bus's loop and the workers' tasks until nothing is left to do. */
static void settle(struct fixture *f)
{
    for (int i = 0; i < 100; i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        if (!run_workers(f) && !bus_busy(f->bus))
            return;
    }
    fail_msg("the bus did not settle in 100 turns");
}

static void clear_recs(struct fixture *f)
{
    for (int i = 0; i < NWORKERS; i++)
        f->workers[i].n = 0;
}

/* ---- Setup --------------------------------------------------------------- */

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(metrics_bus_init(&f->metrics), 0);
    f->cfg.history_length = 100;
    f->cfg.max_replay = 1000;
    snprintf(f->cfg.node_id, sizeof f->cfg.node_id, "test");
    f->eng.ready = 1;
    f->ts = 1000;
    for (int i = 0; i < NWORKERS; i++)
        f->workers[i].index = i;
    f->store = calloc(1, sizeof *f->store);
    assert_non_null(f->store);
    f->store->base.ops = &gate_ops;
    f->store->base.ordered = 1; /* the fake engine delivers in append order, like Redis's script */
    f->store->ready = 1;
    f->store->inner = store_memory_create(&f->loop, &f->cfg, ORIGIN);
    assert_non_null(f->store->inner);
    struct bus_hooks hooks = {.arg = f, .nworkers = NWORKERS, .post = post, .deliver = deliver};
    starting = f;
    f->bus = bus_create(&f->loop, &f->cfg, &hooks, &f->metrics, &fake_engine, &f->store->base);
    starting = NULL;
    assert_non_null(f->bus);
    assert_int_equal(f->eng.started, 1);
    assert_true(bus_ready(f->bus));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    settle(f);
    f->store->hold = 0;
    bus_stop(f->bus);  /* the gate completes what it held */
    for (int i = 0; i < 100 && uv_run(&f->loop, UV_RUN_NOWAIT); i++)
        ;
    run_workers(f);
    assert_int_equal(f->eng.stopped, 1);
    bus_free(f->bus);
    metrics_bus_close(&f->metrics);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

/* ---- Requests ------------------------------------------------------------ */

static void *request(size_t size, enum bus_op op, int worker, int reply)
{
    struct bus_request *req = calloc(1, size);
    assert_non_null(req);
    req->op = op;
    req->worker = worker;
    req->on_reply = reply ? on_reply : NULL;
    return req;
}

static void submit_join_full(struct fixture *f, enum bus_op op, int worker, const char *room, const char *user,
                             const struct offset *since)
{
    struct bus_join *j = request(sizeof *j, op, worker, 1);
    snprintf(j->room, sizeof j->room, "%s", room);
    snprintf(j->user, sizeof j->user, "%s", user ? user : "");
    if (since) {
        j->has_since = 1;
        j->store.since = *since;
    }
    bus_submit(f->bus, &j->base);
}

static void submit_join(struct fixture *f, int worker, const char *room, const char *user)
{
    submit_join_full(f, BUS_JOIN, worker, room, user, NULL);
}

static void submit_rejoin(struct fixture *f, int worker, const char *room)
{
    submit_join_full(f, BUS_REJOIN, worker, room, NULL, NULL);
}

static void submit_leave(struct fixture *f, int worker, const char *room, const char *user, int reply)
{
    struct bus_leave *l = request(sizeof *l, BUS_LEAVE, worker, reply);
    snprintf(l->room, sizeof l->room, "%s", room);
    snprintf(l->user, sizeof l->user, "%s", user ? user : "");
    bus_submit(f->bus, &l->base);
}

static void submit_user(struct fixture *f, enum bus_op op, int worker, const char *user)
{
    struct bus_user *u = request(sizeof *u, op, worker, 0);
    snprintf(u->user, sizeof u->user, "%s", user);
    bus_submit(f->bus, &u->base);
}

static void submit_publish(struct fixture *f, int worker, enum event_target target, const char *name,
                           const char *data)
{
    struct bus_publish *p = request(sizeof *p, BUS_PUBLISH, worker, 1);
    p->target = target;
    snprintf(p->name, sizeof p->name, "%s", name);
    p->data = strdup(data);
    assert_non_null(p->data);
    p->data_len = strlen(data);
    bus_submit(f->bus, &p->base);
}

static void submit_history(struct fixture *f, int worker, const char *room, int limit)
{
    struct bus_history *h = request(sizeof *h, BUS_HISTORY, worker, 1);
    snprintf(h->room, sizeof h->room, "%s", room);
    h->store.limit = limit;
    bus_submit(f->bus, &h->base);
}

/* A first join of room by worker, answered: subscribes and settles. */
static void joined(struct fixture *f, int worker, const char *room)
{
    submit_join(f, worker, room, NULL);
    settle(f);
    bus_subscribed(f->bus, room);
    settle(f);
}

/* ---- Events -------------------------------------------------------------- */

static void no_done(struct store_call *call)
{
    (void)call;
}

/* Stores a message with data "tag" in room's history, as an engine does on
 * a publish, straight in the memory store; returns its event (one
 * reference: the caller delivers or drops it). */
static struct event *persist(struct fixture *f, const char *room, const char *tag)
{
    char data[64];
    snprintf(data, sizeof data, "\"%s\"", tag);
    struct store_call call = {.room = room, .data = data, .data_len = strlen(data), .ts = ++f->ts, .done = no_done};
    f->store->inner->ops->append(f->store->inner, &call);
    assert_int_equal(call.error, 0);
    assert_non_null(call.event);
    assert_true(call.event->has_offset);
    return call.event;
}

/* A room message that is not stored (ephemeral): no offset. */
static struct event *ephemeral(const char *room, const char *tag)
{
    char data[64];
    snprintf(data, sizeof data, "\"%s\"", tag);
    struct event *ev = event_message(room, NULL, NULL, data, strlen(data), 1);
    assert_non_null(ev);
    return ev;
}

static struct event *direct(enum event_target target, const char *user, const char *tag)
{
    char data[64];
    snprintf(data, sizeof data, "\"%s\"", tag);
    struct event *ev = event_direct(target, user, NULL, data, strlen(data), 1);
    assert_non_null(ev);
    return ev;
}

static void offset_text(const struct event *ev, char out[OFFSET_MAX_LEN])
{
    offset_format(ev->offset, out);
}

/* ---- Checks -------------------------------------------------------------- */

static void assert_reply(const struct worker *w, int i, enum bus_op op, int error)
{
    if (i >= w->n)
        fail_msg("worker %d: no record %d (has %d)", w->index, i, w->n);
    const struct rec *r = &w->recs[i];
    if (r->kind != REC_REPLY)
        fail_msg("worker %d record %d: expected a reply of op %d, got the event %s", w->index, i, op, r->text);
    if (r->op != op)
        fail_msg("worker %d record %d: expected a reply of op %d, got op %d", w->index, i, op, r->op);
    assert_int_equal(r->error, error);
}

/* Record i of w is the event whose text holds needle. */
static void assert_event_text(const struct worker *w, int i, const char *needle)
{
    if (i >= w->n)
        fail_msg("worker %d: no record %d (has %d), expected an event with %s", w->index, i, w->n, needle);
    const struct rec *r = &w->recs[i];
    if (r->kind != REC_EVENT)
        fail_msg("worker %d record %d: expected an event with %s, got a reply of op %d", w->index, i, needle, r->op);
    if (!strstr(r->text, needle))
        fail_msg("worker %d record %d: expected an event with %s, got %s", w->index, i, needle, r->text);
}

/* Record i of w is the message event whose data is the string tag. */
static void assert_event(const struct worker *w, int i, const char *tag)
{
    char needle[80];
    snprintf(needle, sizeof needle, "\"data\":\"%s\"", tag);
    assert_event_text(w, i, needle);
}

static void assert_interest(const struct fixture *f, int i, enum event_target target, const char *name, int on)
{
    if (i >= f->eng.ninterest)
        fail_msg("no interest change %d (there are %d)", i, f->eng.ninterest);
    const struct interest_rec *r = &f->eng.interest[i];
    assert_int_equal(r->target, target);
    assert_string_equal(r->name, name);
    assert_int_equal(r->on, on);
}

static void count_room(const char *room, unsigned long members, void *arg)
{
    (void)room;
    *(unsigned long *)arg += members;
}

static unsigned long local_members(struct fixture *f)
{
    unsigned long n = 0;
    bus_each_room_count(f->bus, count_room, &n);
    return n;
}

/* ---- Interest ------------------------------------------------------------ */

static void test_bus_first_join_asks_engine_for_interest_and_last_leave_drops_it(void **state)
{
    struct fixture *f = *state;

    submit_join(f, 0, "a", NULL);
    settle(f);
    assert_int_equal(f->eng.ninterest, 1);
    assert_interest(f, 0, EVENT_ROOM, "a", 1);
    bus_subscribed(f->bus, "a");
    settle(f);
    assert_reply(&f->workers[0], 0, BUS_JOIN, 0);

    /* A second member, on another worker: no new interest. */
    submit_join(f, 1, "a", NULL);
    settle(f);
    assert_int_equal(f->eng.ninterest, 1);
    assert_reply(&f->workers[1], 0, BUS_JOIN, 0);
    assert_int_equal(local_members(f), 2);

    submit_leave(f, 0, "a", NULL, 1);
    settle(f);
    assert_int_equal(f->eng.ninterest, 1);
    assert_reply(&f->workers[0], 1, BUS_LEAVE, 0);

    submit_leave(f, 1, "a", NULL, 0);
    settle(f);
    assert_int_equal(f->eng.ninterest, 2);
    assert_interest(f, 1, EVENT_ROOM, "a", 0);
    assert_int_equal(local_members(f), 0);
    assert_int_equal(f->workers[1].n, 1); /* no reply wanted, none posted */

    /* The room was forgotten: the next first join asks again and waits for
     * a new confirmation. */
    submit_join(f, 2, "a", NULL);
    settle(f);
    assert_int_equal(f->eng.ninterest, 3);
    assert_interest(f, 2, EVENT_ROOM, "a", 1);
    assert_int_equal(f->workers[2].n, 0);
    bus_subscribed(f->bus, "a");
    settle(f);
    assert_reply(&f->workers[2], 0, BUS_JOIN, 0);
    submit_leave(f, 2, "a", NULL, 0);
}

/* A join the worker answered itself (app/client.c, join_locally): the bus
 * counts the interest and the presence, reads nothing, holds nothing and
 * posts no reply; the leave that follows undoes it. */
static void test_bus_answered_join_counts_interest_and_presence_only(void **state)
{
    struct fixture *f = *state;

    joined(f, 0, "a");
    int latests = f->store->latests;
    struct bus_join *j = request(sizeof *j, BUS_JOIN, 0, 0);
    snprintf(j->room, sizeof j->room, "a");
    snprintf(j->user, sizeof j->user, "bob");
    j->answered = 1;
    bus_submit(f->bus, &j->base);
    settle(f);
    assert_int_equal(f->store->latests, latests);
    /* the first join's reply, then bob's presence_join: no second reply */
    assert_int_equal(f->workers[0].n, 2);
    assert_reply(&f->workers[0], 0, BUS_JOIN, 0);
    assert_event_text(&f->workers[0], 1, "presence_join");
    assert_int_equal(local_members(f), 2);
    assert_int_equal(f->eng.ninterest, 1);
    assert_int_equal(f->eng.npresence, 1);
    assert_string_equal(f->eng.presence[0].user, "bob");
    assert_int_equal(f->eng.presence[0].count, 1);
    /* nothing holds the room's live events */
    bus_deliver(f->bus, ephemeral("a", "live"));
    settle(f);
    assert_event(&f->workers[0], 2, "live");
    submit_leave(f, 0, "a", "bob", 0);
    submit_leave(f, 0, "a", NULL, 0);
    settle(f);
    assert_int_equal(local_members(f), 0);
    assert_int_equal(f->eng.npresence, 2);
    assert_int_equal(f->eng.presence[1].count, 0);
}

static void test_bus_leave_without_join_changes_nothing(void **state)
{
    struct fixture *f = *state;

    submit_leave(f, 0, "a", NULL, 1);
    settle(f);
    assert_int_equal(f->eng.ninterest, 0);
    assert_reply(&f->workers[0], 0, BUS_LEAVE, 0);
    assert_int_equal(local_members(f), 0);
}

static void test_bus_join_waits_for_subscription_before_reading_store(void **state)
{
    struct fixture *f = *state;

    submit_join(f, 0, "a", NULL);
    settle(f);
    assert_int_equal(f->store->latests, 0);
    assert_int_equal(f->workers[0].n, 0);

    bus_subscribed(f->bus, "other"); /* a room nobody asked for: nothing */
    settle(f);
    assert_int_equal(f->store->latests, 0);
    assert_int_equal(f->workers[0].n, 0);

    bus_subscribed(f->bus, "a");
    assert_int_equal(f->store->latests, 1);
    settle(f);
    assert_reply(&f->workers[0], 0, BUS_JOIN, 0);
    assert_string_equal(f->workers[0].recs[0].offset, ORIGIN_TEXT);
    assert_int_equal(f->workers[0].recs[0].recovered, 0);
    assert_int_equal(f->workers[0].recs[0].count, 0);

    /* A second confirmation reads nothing again. */
    bus_subscribed(f->bus, "a");
    settle(f);
    assert_int_equal(f->store->latests, 1);
    assert_int_equal(f->workers[0].n, 1);
}

static void test_bus_join_since_replays_what_followed_it(void **state)
{
    struct fixture *f = *state;
    char o1[OFFSET_MAX_LEN], o3[OFFSET_MAX_LEN];

    struct event *m1 = persist(f, "a", "m1");
    struct event *m2 = persist(f, "a", "m2");
    struct event *m3 = persist(f, "a", "m3");
    offset_text(m1, o1);
    offset_text(m3, o3);
    struct offset since = m1->offset;
    event_unref(m1);
    event_unref(m2);
    event_unref(m3);

    submit_join_full(f, BUS_JOIN, 0, "a", NULL, &since);
    settle(f);
    bus_subscribed(f->bus, "a");
    settle(f);
    assert_int_equal(f->store->recovers, 1);
    assert_int_equal(f->store->latests, 0);
    const struct rec *r = &f->workers[0].recs[0];
    assert_reply(&f->workers[0], 0, BUS_JOIN, 0);
    assert_string_equal(r->offset, o3);
    assert_int_equal(r->recovered, 1);
    assert_int_equal(r->count, 2);
    char *m2_at = strstr(r->text, "\"data\":\"m2\""), *m3_at = strstr(r->text, "\"data\":\"m3\"");
    assert_non_null(m2_at);
    assert_non_null(m3_at);
    assert_true(m2_at < m3_at);
    assert_null(strstr(r->text, "\"data\":\"m1\""));
}

/* ---- Holds --------------------------------------------------------------- */

static void test_bus_holds_live_events_during_join_read_and_delivers_them_after_reply(void **state)
{
    struct fixture *f = *state;
    struct worker *w = &f->workers[0];
    char o1[OFFSET_MAX_LEN];

    struct event *m1 = persist(f, "a", "m1");
    offset_text(m1, o1);
    event_unref(m1);

    f->store->hold = 1;
    submit_join(f, 0, "a", "alice");
    settle(f);
    /* The join's presence_join is held with the room's events. */
    assert_int_equal(f->eng.npresence, 1);
    assert_int_equal(f->eng.presence[0].before, 0);
    assert_int_equal(f->eng.presence[0].count, 1);
    bus_subscribed(f->bus, "a");
    assert_int_equal(f->store->latests, 1); /* read, answer on its way */

    struct event *m2 = persist(f, "a", "m2");
    bus_deliver(f->bus, m2);
    bus_deliver(f->bus, ephemeral("a", "e1"));
    struct event *m3 = persist(f, "a", "m3");
    bus_deliver(f->bus, m3);
    settle(f);
    assert_int_equal(w->n, 0);

    assert_int_equal(gate_release(f->store, 1), 1);
    settle(f);
    assert_int_equal(w->n, 5);
    assert_reply(w, 0, BUS_JOIN, 0);
    assert_string_equal(w->recs[0].offset, o1);
    assert_event_text(w, 1, "\"type\":\"presence_join\",\"room\":\"a\",\"user\":\"alice\"");
    assert_event(w, 2, "m2");
    assert_event(w, 3, "e1");
    assert_event(w, 4, "m3");

    /* The hold is over: live events go out at once. */
    bus_deliver(f->bus, ephemeral("a", "e2"));
    settle(f);
    assert_int_equal(w->n, 6);
    assert_event(w, 5, "e2");
}

static void test_bus_drops_held_events_at_or_below_first_join_latest(void **state)
{
    struct fixture *f = *state;
    struct worker *w = &f->workers[0];
    char o2[OFFSET_MAX_LEN];

    /* m1 and m2 are stored before the join's read, but their live copies
     * arrive while the read is in flight (two sockets, as with Redis). */
    struct event *m1 = persist(f, "a", "m1");
    struct event *m2 = persist(f, "a", "m2");
    offset_text(m2, o2);
    f->store->hold = 1;
    submit_join(f, 0, "a", NULL);
    settle(f);
    bus_subscribed(f->bus, "a");
    bus_deliver(f->bus, m1);
    bus_deliver(f->bus, m2);
    struct event *m3 = persist(f, "a", "m3");
    bus_deliver(f->bus, m3);
    settle(f);
    assert_int_equal(w->n, 0);

    assert_int_equal(gate_release(f->store, 1), 1);
    settle(f);
    assert_reply(w, 0, BUS_JOIN, 0);
    assert_string_equal(w->recs[0].offset, o2);
    assert_event(w, 1, "m3");
    assert_int_equal(w->n, 2);
}

static void test_bus_second_join_holds_events_for_every_member(void **state)
{
    struct fixture *f = *state;
    struct worker *w0 = &f->workers[0], *w1 = &f->workers[1];

    joined(f, 0, "a");
    f->store->hold = 1;
    submit_join(f, 1, "a", NULL);
    settle(f);
    assert_int_equal(f->store->latests, 2); /* subscribed already: read at once */
    struct event *m1 = persist(f, "a", "m1");
    bus_deliver(f->bus, m1);
    settle(f);
    /* Held for the old member too: one order for all workers. */
    assert_int_equal(w0->n, 1);
    assert_int_equal(w1->n, 0);

    gate_release(f->store, 1);
    settle(f);
    assert_reply(w1, 0, BUS_JOIN, 0);
    assert_event(w1, 1, "m1");
    assert_int_equal(w1->n, 2);
    assert_event(w0, 1, "m1");
    assert_int_equal(w0->n, 2);
}

static void test_bus_two_joins_in_flight_release_events_after_both_replies(void **state)
{
    struct fixture *f = *state;
    struct worker *w0 = &f->workers[0], *w1 = &f->workers[1];

    f->store->hold = 1;
    submit_join(f, 0, "a", NULL);
    submit_join(f, 1, "a", NULL);
    settle(f);
    bus_subscribed(f->bus, "a");
    assert_int_equal(f->store->latests, 2);
    bus_deliver(f->bus, ephemeral("a", "e1"));

    gate_release(f->store, 1);
    settle(f);
    assert_reply(w0, 0, BUS_JOIN, 0);
    assert_int_equal(w0->n, 1); /* the second read still holds e1 */
    assert_int_equal(w1->n, 0);

    gate_release(f->store, 1);
    settle(f);
    assert_reply(w1, 0, BUS_JOIN, 0);
    assert_event(w0, 1, "e1");
    assert_event(w1, 1, "e1");
    assert_int_equal(w0->n, 2);
    assert_int_equal(w1->n, 2);
}

/* ---- Rejoins ------------------------------------------------------------- */

static void test_bus_rejoin_is_answered_after_first_join_hold_ends(void **state)
{
    struct fixture *f = *state;
    struct worker *w = &f->workers[0];

    f->store->hold = 1;
    submit_join(f, 0, "a", NULL);
    submit_rejoin(f, 0, "a");
    settle(f);
    assert_int_equal(w->n, 0);
    bus_subscribed(f->bus, "a");
    bus_deliver(f->bus, ephemeral("a", "e1"));
    settle(f);
    assert_int_equal(w->n, 0);

    gate_release(f->store, 1);
    settle(f);
    assert_int_equal(w->n, 3);
    assert_reply(w, 0, BUS_JOIN, 0);
    assert_reply(w, 1, BUS_REJOIN, 0);
    assert_event(w, 2, "e1");
    /* A rejoin counts no interest and reads nothing. */
    assert_int_equal(f->eng.ninterest, 1);
    assert_int_equal(f->store->latests, 1);
    assert_int_equal(local_members(f), 1);
}

static void test_bus_rejoin_without_hold_is_answered_at_once(void **state)
{
    struct fixture *f = *state;
    struct worker *w = &f->workers[0];

    joined(f, 0, "a");
    submit_rejoin(f, 0, "a");
    settle(f);
    assert_reply(w, 1, BUS_REJOIN, 0);
    /* A room the bus does not know (its join failed and was left). */
    submit_rejoin(f, 1, "gone");
    settle(f);
    assert_reply(&f->workers[1], 0, BUS_REJOIN, 0);
    assert_int_equal(f->eng.ninterest, 1);
}

/* ---- Gap fill ------------------------------------------------------------ */

static void test_bus_gap_fill_delivers_missed_events_before_held_live_ones(void **state)
{
    struct fixture *f = *state;
    struct worker *w = &f->workers[0], *other = &f->workers[1];

    joined(f, 0, "a");
    joined(f, 1, "b"); /* nothing delivered, but seen since its join: filled too */
    bus_deliver(f->bus, persist(f, "a", "m1"));
    settle(f);
    assert_event(w, 1, "m1");

    bus_link_changed(f->bus, 0);
    struct event *m2 = persist(f, "a", "m2");
    struct event *m3 = persist(f, "a", "m3");
    event_unref(m2); /* missed: published while the link was down */
    bus_link_changed(f->bus, 1);
    settle(f);
    assert_int_equal(w->n, 2);

    f->store->hold = 1;
    bus_subscribed(f->bus, "b");
    bus_subscribed(f->bus, "a");
    assert_int_equal(f->store->recovers, 2);
    /* Live events after the new subscription wait for the fill, the late
     * live copy of m3 among them. */
    bus_deliver(f->bus, m3);
    bus_deliver(f->bus, persist(f, "a", "m4"));
    bus_deliver(f->bus, ephemeral("a", "e1"));
    settle(f);
    assert_int_equal(w->n, 2);

    assert_int_equal(gate_release(f->store, MAX_CALLS), 2);
    settle(f);
    assert_event(w, 2, "m2");
    assert_event(w, 3, "m3");
    assert_event(w, 4, "m4");
    assert_event(w, 5, "e1");
    assert_int_equal(w->n, 6);
    assert_int_equal(other->n, 1); /* its join only: "b" missed nothing */

    /* Filled once: a second confirmation reads nothing. */
    bus_subscribed(f->bus, "a");
    settle(f);
    assert_int_equal(f->store->recovers, 2);
}

/* History and pub/sub come on two connections: the fill may read a message
 * whose live copy arrives only after the fill is done. It is not delivered
 * twice. */
static void test_bus_live_copy_after_the_gap_fill_is_not_delivered_again(void **state)
{
    struct fixture *f = *state;
    struct worker *w = &f->workers[0];

    joined(f, 0, "a");
    bus_deliver(f->bus, persist(f, "a", "m1"));
    bus_link_changed(f->bus, 0);
    struct event *m2 = persist(f, "a", "m2");
    bus_link_changed(f->bus, 1);
    bus_subscribed(f->bus, "a");
    settle(f);
    assert_event(w, 1, "m1");
    assert_event(w, 2, "m2"); /* from the fill */
    bus_deliver(f->bus, m2);  /* its live copy, late */
    bus_deliver(f->bus, persist(f, "a", "m3"));
    settle(f);
    assert_event(w, 3, "m3");
    assert_int_equal(w->n, 4);
}

static void test_bus_gap_fill_waits_for_store_to_come_back(void **state)
{
    struct fixture *f = *state;
    struct worker *w = &f->workers[0];

    joined(f, 0, "a");
    bus_deliver(f->bus, persist(f, "a", "m1"));
    bus_link_changed(f->bus, 0);
    event_unref(persist(f, "a", "m2"));
    f->store->ready = 0;
    bus_subscribed(f->bus, "a");
    bus_deliver(f->bus, ephemeral("a", "e1"));
    settle(f);
    assert_int_equal(f->store->recovers, 0);
    assert_int_equal(w->n, 2); /* joined, m1: e1 waits for the fill */

    f->store->ready = 1;
    f->store->base.on_change(f->store->base.change_arg);
    settle(f);
    assert_int_equal(f->store->recovers, 1);
    assert_event(w, 2, "m2");
    assert_event(w, 3, "e1");
    assert_int_equal(w->n, 4);
}

static void test_bus_join_during_link_down_waits_for_new_subscription(void **state)
{
    struct fixture *f = *state;

    joined(f, 0, "a");
    bus_link_changed(f->bus, 0);
    submit_join(f, 1, "a", NULL);
    settle(f);
    assert_int_equal(f->workers[1].n, 0);
    bus_subscribed(f->bus, "a");
    settle(f);
    assert_reply(&f->workers[1], 0, BUS_JOIN, 0);
}

/* ---- Who gets what ------------------------------------------------------- */

static void test_bus_delivers_room_events_only_to_workers_with_interest(void **state)
{
    struct fixture *f = *state;

    joined(f, 0, "a");
    joined(f, 2, "a");
    joined(f, 1, "b");
    clear_recs(f);

    bus_deliver(f->bus, ephemeral("a", "e1"));
    settle(f);
    assert_event(&f->workers[0], 0, "e1");
    assert_event(&f->workers[2], 0, "e1");
    assert_int_equal(f->workers[1].n, 0);

    submit_leave(f, 2, "a", NULL, 0);
    bus_deliver(f->bus, ephemeral("a", "e2"));  /* before the leave is read */
    settle(f);
    bus_deliver(f->bus, ephemeral("a", "e3"));
    settle(f);
    assert_event(&f->workers[0], 1, "e2");
    assert_event(&f->workers[0], 2, "e3");
    assert_event(&f->workers[2], 1, "e2");
    assert_int_equal(f->workers[2].n, 2);
    assert_int_equal(f->workers[1].n, 0);

    bus_deliver(f->bus, ephemeral("nobody", "e4"));
    settle(f);
    assert_int_equal(f->workers[0].n, 3);
    assert_int_equal(f->workers[1].n, 0);
    assert_int_equal(f->workers[2].n, 2);
}

static void test_bus_delivers_event_all_to_every_worker(void **state)
{
    struct fixture *f = *state;

    joined(f, 0, "a");
    clear_recs(f);
    bus_deliver(f->bus, direct(EVENT_ALL, NULL, "all"));
    settle(f);
    for (int i = 0; i < NWORKERS; i++) {
        assert_int_equal(f->workers[i].n, 1);
        assert_event_text(&f->workers[i], 0, "\"type\":\"broadcast\"");
    }
}

static void test_bus_delivers_user_events_to_workers_where_user_is_online(void **state)
{
    struct fixture *f = *state;

    submit_user(f, BUS_ONLINE, 1, "bob");
    settle(f);
    assert_int_equal(f->eng.ninterest, 1);
    assert_interest(f, 0, EVENT_USER, "bob", 1);
    bus_deliver(f->bus, direct(EVENT_USER, "bob", "d1"));
    bus_deliver(f->bus, direct(EVENT_USER, "carol", "d2"));
    settle(f);
    assert_int_equal(f->workers[0].n, 0);
    assert_int_equal(f->workers[1].n, 1);
    assert_int_equal(f->workers[2].n, 0);
    assert_event_text(&f->workers[1], 0, "\"data\":\"d1\"");

    submit_user(f, BUS_OFFLINE, 1, "bob");
    settle(f);
    assert_interest(f, 1, EVENT_USER, "bob", 0);
    bus_deliver(f->bus, direct(EVENT_USER, "bob", "d3"));
    settle(f);
    assert_int_equal(f->workers[1].n, 1);
}

static void test_bus_drops_deliveries_to_exited_worker(void **state)
{
    struct fixture *f = *state;

    joined(f, 0, "a");
    joined(f, 1, "a");
    f->workers[1].exited = 1;
    bus_deliver(f->bus, ephemeral("a", "e1"));
    submit_history(f, 1, "a", 10);  /* its reply is refused too: freed */
    settle(f);
    assert_event(&f->workers[0], 1, "e1");
    assert_int_equal(f->workers[1].n, 1);
    f->workers[1].exited = 0;
}

/* ---- Engine down --------------------------------------------------------- */

static void test_bus_unavailable_engine_answers_join_and_still_counts_interest(void **state)
{
    struct fixture *f = *state;
    struct worker *w = &f->workers[0];

    f->eng.ready = 0;
    bus_ready_changed(f->bus);
    assert_false(bus_ready(f->bus));

    submit_join(f, 0, "a", "alice");
    settle(f);
    assert_reply(w, 0, BUS_JOIN, WSFAN_EUNAVAILABLE);
    /* The worker counts as interested until its LEAVE: the join's own
     * presence_join follows the reply (the client's hub, where the failed
     * join left no membership, drops it). */
    assert_event_text(w, 1, "\"type\":\"presence_join\"");
    assert_int_equal(f->store->latests, 0);
    assert_int_equal(f->eng.ninterest, 1);
    assert_interest(f, 0, EVENT_ROOM, "a", 1);
    assert_int_equal(f->eng.npresence, 1);
    assert_int_equal(local_members(f), 1);

    submit_publish(f, 0, EVENT_ROOM, "a", "1");
    settle(f);
    assert_reply(w, 2, BUS_PUBLISH, WSFAN_EUNAVAILABLE);
    assert_int_equal(f->eng.npublishes, 0);

    /* The one LEAVE that follows a failed join undoes its counts. */
    submit_leave(f, 0, "a", "alice", 0);
    settle(f);
    assert_int_equal(f->eng.ninterest, 2);
    assert_interest(f, 1, EVENT_ROOM, "a", 0);
    assert_int_equal(f->eng.npresence, 2);
    assert_int_equal(f->eng.presence[1].before, 1);
    assert_int_equal(f->eng.presence[1].count, 0);
    assert_int_equal(local_members(f), 0);
    /* presence_leave went nowhere: no worker is interested any more. */
    assert_int_equal(w->n, 3);

    f->eng.ready = 1;
    bus_ready_changed(f->bus);
    assert_true(bus_ready(f->bus));
}

/* ---- Publishing and other requests --------------------------------------- */

static void test_bus_publish_goes_to_engine_and_ack_follows_engine_reply(void **state)
{
    struct fixture *f = *state;
    struct worker *w = &f->workers[0];

    submit_publish(f, 0, EVENT_ROOM, "a", "{\"x\":1}");
    settle(f);
    assert_int_equal(f->eng.npublishes, 1);
    struct bus_publish *req = f->eng.publishes[0];
    assert_string_equal(req->store.room, "a");
    assert_memory_equal(req->data, "{\"x\":1}", req->data_len);
    assert_int_equal(w->n, 0);

    snprintf(req->store.offset, sizeof req->store.offset, "5-0");
    f->eng.npublishes = 0;
    bus_reply(f->bus, &req->base);
    settle(f);
    assert_reply(w, 0, BUS_PUBLISH, 0);
    assert_string_equal(w->recs[0].offset, "5-0");
}

static void test_bus_history_presence_and_rooms_are_answered(void **state)
{
    struct fixture *f = *state;
    struct worker *w = &f->workers[0];

    submit_join(f, 0, "a", "alice");
    settle(f);
    bus_subscribed(f->bus, "a");
    event_unref(persist(f, "a", "m1"));
    event_unref(persist(f, "a", "m2"));
    settle(f);
    clear_recs(f);

    submit_history(f, 0, "a", 1);
    struct bus_presence *p = request(sizeof *p, BUS_PRESENCE, 0, 1);
    snprintf(p->room, sizeof p->room, "a");
    bus_submit(f->bus, &p->base);
    bus_submit(f->bus, request(sizeof(struct bus_rooms), BUS_ROOMS, 0, 1));
    settle(f);
    assert_reply(w, 0, BUS_HISTORY, 0);
    assert_int_equal(w->recs[0].count, 1);
    assert_non_null(strstr(w->recs[0].text, "\"data\":\"m2\""));
    assert_reply(w, 1, BUS_PRESENCE, 0);
    assert_string_equal(w->recs[1].text, "[{\"user\":\"alice\",\"connections\":1}]");
    assert_reply(w, 2, BUS_ROOMS, 0);
    assert_string_equal(w->recs[2].text, "[{\"room\":\"a\",\"local\":1,\"cluster\":1}]");
}

/* A join waiting for the engine's confirmation holds back its room's
 * events, not the worker's other requests: a later history is answered
 * first. The client puts its replies back in the order of its commands
 * (test_client.c, test_client_replies_keep_command_order_while_join_waits). */
static void test_bus_join_waiting_for_subscription_does_not_hold_other_requests(void **state)
{
    struct fixture *f = *state;
    struct worker *w = &f->workers[0];

    submit_join(f, 0, "a", NULL);
    submit_history(f, 0, "a", 10);
    settle(f);
    assert_int_equal(w->n, 1);
    assert_reply(w, 0, BUS_HISTORY, 0);
    bus_subscribed(f->bus, "a");
    settle(f);
    assert_int_equal(w->n, 2);
    assert_reply(w, 1, BUS_JOIN, 0);
}

/* docs/protocol.md, leave: "A room whose join is still on its way can be
 * left. The client then gets joined (and any replay), then left." Here the
 * leave ends the interest before the engine confirmed the subscription; an
 * engine does not confirm a subscription nobody wants any more
 * (bus_redis.c calls bus_subscribed only while the channel is wanted). */
static void test_bus_join_left_before_subscription_is_answered_before_left(void **state)
{
    struct fixture *f = *state;
    struct worker *w = &f->workers[0];

    submit_join(f, 0, "a", NULL);
    submit_leave(f, 0, "a", NULL, 1);
    settle(f);
    assert_interest(f, 0, EVENT_ROOM, "a", 1);
    assert_interest(f, 1, EVENT_ROOM, "a", 0);
    assert_int_equal(w->n, 2);
    assert_reply(w, 0, BUS_JOIN, 0);
    assert_reply(w, 1, BUS_LEAVE, 0);
}

/* ---- Tenants and info ---------------------------------------------------- */

/* A join with the connection's info, as client.c submits it. */
static void submit_join_info(struct fixture *f, int worker, const char *room, const char *user, const char *info)
{
    struct bus_join *j = request(sizeof *j, BUS_JOIN, worker, 1);
    snprintf(j->room, sizeof j->room, "%s", room);
    snprintf(j->user, sizeof j->user, "%s", user);
    j->info = info ? strdup(info) : NULL;
    bus_submit(f->bus, &j->base);
}

static void submit_presence(struct fixture *f, int worker, const char *room)
{
    struct bus_presence *p = request(sizeof *p, BUS_PRESENCE, worker, 1);
    snprintf(p->room, sizeof p->room, "%s", room);
    bus_submit(f->bus, &p->base);
}

static void submit_rooms(struct fixture *f, int worker, const char *tenant)
{
    struct bus_rooms *r = request(sizeof *r, BUS_ROOMS, worker, 1);
    snprintf(r->tenant, sizeof r->tenant, "%s", tenant);
    bus_submit(f->bus, &r->base);
}

/* Three rooms named "general": acme's on worker 0, globex's on worker 1,
 * and the one without a tenant on worker 2. Keys keep them apart in
 * interest, delivery, presence (with info), history and the rooms list. */
static void test_bus_rooms_of_the_same_name_in_two_tenants_never_meet(void **state)
{
    struct fixture *f = *state;

    submit_join_info(f, 0, "acme/general", "alice", "{\"n\":\"acme\"}");
    submit_join_info(f, 1, "globex/general", "alice", "{\"n\":\"globex\"}");
    submit_join_info(f, 2, "general", "alice", NULL);
    settle(f);
    assert_int_equal(f->eng.ninterest, 3);
    assert_interest(f, 0, EVENT_ROOM, "acme/general", 1);
    assert_interest(f, 1, EVENT_ROOM, "globex/general", 1);
    assert_interest(f, 2, EVENT_ROOM, "general", 1);
    /* One first connection per tenant: three presence changes. */
    assert_int_equal(f->eng.npresence, 3);
    assert_string_equal(f->eng.presence[0].room, "acme/general");
    assert_string_equal(f->eng.presence[0].info, "{\"n\":\"acme\"}");
    assert_string_equal(f->eng.presence[2].info, "");
    bus_subscribed(f->bus, "acme/general");
    bus_subscribed(f->bus, "globex/general");
    bus_subscribed(f->bus, "general");
    settle(f);
    /* Each got its join, then its own presence_join only. */
    assert_int_equal(f->workers[0].n, 2);
    assert_reply(&f->workers[0], 0, BUS_JOIN, 0);
    assert_event_text(&f->workers[0], 1,
                      "{\"type\":\"presence_join\",\"room\":\"general\",\"user\":\"alice\",\"info\":{\"n\":\"acme\"}}");
    assert_event_text(&f->workers[1], 1, "\"info\":{\"n\":\"globex\"}");
    assert_int_equal(f->workers[2].n, 2);
    assert_event_text(&f->workers[2], 1, "{\"type\":\"presence_join\",\"room\":\"general\",\"user\":\"alice\"}");
    clear_recs(f);

    bus_deliver(f->bus, persist(f, "acme/general", "a1"));
    bus_deliver(f->bus, ephemeral("globex/general", "g1"));
    bus_deliver(f->bus, ephemeral("general", "n1"));
    settle(f);
    for (int i = 0; i < NWORKERS; i++)
        assert_int_equal(f->workers[i].n, 1);
    assert_event(&f->workers[0], 0, "a1");
    assert_event_text(&f->workers[0], 0, "\"room\":\"general\"");
    assert_event(&f->workers[1], 0, "g1");
    assert_event(&f->workers[2], 0, "n1");
    clear_recs(f);

    submit_history(f, 0, "acme/general", 10);
    submit_history(f, 1, "globex/general", 10);
    submit_history(f, 2, "general", 10);
    submit_presence(f, 0, "acme/general");
    submit_presence(f, 1, "globex/general");
    submit_presence(f, 2, "general");
    submit_rooms(f, 0, "acme");
    submit_rooms(f, 1, "");
    submit_rooms(f, 2, "initech");
    settle(f);
    assert_reply(&f->workers[0], 0, BUS_HISTORY, 0);
    assert_int_equal(f->workers[0].recs[0].count, 1);
    assert_non_null(strstr(f->workers[0].recs[0].text, "\"room\":\"general\""));
    assert_int_equal(f->workers[1].recs[0].count, 0);
    assert_int_equal(f->workers[2].recs[0].count, 0);
    assert_string_equal(f->workers[0].recs[1].text,
                        "[{\"user\":\"alice\",\"connections\":1,\"info\":{\"n\":\"acme\"}}]");
    assert_string_equal(f->workers[1].recs[1].text,
                        "[{\"user\":\"alice\",\"connections\":1,\"info\":{\"n\":\"globex\"}}]");
    assert_string_equal(f->workers[2].recs[1].text, "[{\"user\":\"alice\",\"connections\":1}]");
    assert_string_equal(f->workers[0].recs[2].text, "[{\"room\":\"general\",\"local\":1,\"cluster\":1}]");
    assert_string_equal(f->workers[1].recs[2].text, "[{\"room\":\"general\",\"local\":1,\"cluster\":1}]");
    assert_string_equal(f->workers[2].recs[2].text, "[]");
    clear_recs(f);

    /* acme's alice leaves: only acme's room hears it. */
    submit_leave(f, 0, "acme/general", "alice", 0);
    settle(f);
    assert_interest(f, 3, EVENT_ROOM, "acme/general", 0);
    assert_int_equal(f->workers[0].n, 0);
    assert_int_equal(f->workers[1].n, 0);
    assert_int_equal(f->workers[2].n, 0);
    submit_leave(f, 1, "globex/general", "alice", 0);
    submit_leave(f, 2, "general", "alice", 0);
    settle(f);
    assert_int_equal(local_members(f), 0);
}

/* A tenant's connections count for its broadcasts ("T/"), with or without
 * a user; its broadcast reaches the workers where they are, and a
 * broadcast without a tenant still reaches every worker. */
static void test_bus_tenant_broadcast_reaches_only_its_workers(void **state)
{
    struct fixture *f = *state;

    submit_user(f, BUS_ONLINE, 1, "acme/alice");
    submit_user(f, BUS_ONLINE, 2, "acme/");
    submit_user(f, BUS_ONLINE, 0, "bob");
    settle(f);
    assert_int_equal(f->eng.ninterest, 3);
    assert_interest(f, 0, EVENT_USER, "acme/alice", 1);
    assert_interest(f, 1, EVENT_ALL, "acme/", 1);
    assert_interest(f, 2, EVENT_USER, "bob", 1);

    bus_deliver(f->bus, direct(EVENT_ALL, "acme/", "b1"));
    bus_deliver(f->bus, direct(EVENT_ALL, "globex/", "b2"));
    bus_deliver(f->bus, direct(EVENT_USER, "acme/alice", "d1"));
    bus_deliver(f->bus, direct(EVENT_USER, "alice", "d2"));
    bus_deliver(f->bus, direct(EVENT_USER, "globex/bob", "d3"));
    settle(f);
    assert_int_equal(f->workers[0].n, 0);
    assert_int_equal(f->workers[1].n, 2);
    assert_event(&f->workers[1], 0, "b1");
    assert_event(&f->workers[1], 1, "d1");
    assert_int_equal(f->workers[2].n, 1);
    assert_event(&f->workers[2], 0, "b1");
    clear_recs(f);

    bus_deliver(f->bus, direct(EVENT_ALL, "", "b3"));
    settle(f);
    for (int i = 0; i < NWORKERS; i++)
        assert_event(&f->workers[i], 0, "b3");
    clear_recs(f);

    submit_user(f, BUS_OFFLINE, 1, "acme/alice");
    settle(f);
    assert_int_equal(f->eng.ninterest, 4);
    assert_interest(f, 3, EVENT_USER, "acme/alice", 0);
    submit_user(f, BUS_OFFLINE, 2, "acme/");
    settle(f);
    assert_interest(f, 4, EVENT_ALL, "acme/", 0);
    bus_deliver(f->bus, direct(EVENT_ALL, "acme/", "b4"));
    settle(f);
    for (int i = 0; i < NWORKERS; i++)
        assert_int_equal(f->workers[i].n, 0);
    submit_user(f, BUS_OFFLINE, 0, "bob");
}

/* presence_join carries the info of the user's first connection; a second
 * connection announces nothing, but the list shows its newer info. */
static void test_bus_presence_info_of_the_newest_connection(void **state)
{
    struct fixture *f = *state;

    submit_join_info(f, 0, "r", "alice", "{\"v\":1}");
    settle(f);
    bus_subscribed(f->bus, "r");
    submit_join_info(f, 1, "r", "alice", "{\"v\":2}");
    settle(f);
    assert_int_equal(f->eng.npresence, 2);
    assert_string_equal(f->eng.presence[1].info, "{\"v\":2}");
    assert_int_equal(f->eng.presence[1].before, 1);
    assert_event_text(&f->workers[0], 1, "\"info\":{\"v\":1}");
    assert_int_equal(f->workers[1].n, 1); /* its join only */
    clear_recs(f);
    submit_presence(f, 0, "r");
    settle(f);
    assert_string_equal(f->workers[0].recs[0].text, "[{\"user\":\"alice\",\"connections\":2,\"info\":{\"v\":2}}]");
}

/* ---- Freeing ------------------------------------------------------------- */

static void test_bus_request_free_frees_what_each_request_owns(void **state)
{
    (void)state;
    struct store_batch batch = {0};

    struct bus_join *j = request(sizeof *j, BUS_JOIN, 0, 1);
    assert_int_equal(store_batch_add(&j->store.batch, "{}", 2, (struct offset){1, 0}), 0);
    bus_request_free(&j->base);

    struct bus_join *rj = request(sizeof *rj, BUS_REJOIN, 0, 1);
    rj->info = strdup("{}");
    bus_request_free(&rj->base);

    struct bus_publish *p = request(sizeof *p, BUS_PUBLISH, 0, 1);
    p->data = strdup("\"x\"");
    p->data_len = 3;
    p->store.event = event_message("a", NULL, NULL, "1", 1, 1);
    assert_non_null(p->store.event);
    assert_int_equal(store_batch_add(&p->store.batch, "{}", 2, (struct offset){1, 0}), 0);
    bus_request_free(&p->base);

    struct bus_history *h = request(sizeof *h, BUS_HISTORY, 0, 1);
    assert_int_equal(store_batch_add(&h->store.batch, "{}", 2, (struct offset){1, 0}), 0);
    bus_request_free(&h->base);

    struct bus_presence *pr = request(sizeof *pr, BUS_PRESENCE, 0, 1);
    pr->users = strdup("[]");
    bus_request_free(&pr->base);

    struct bus_rooms *ro = request(sizeof *ro, BUS_ROOMS, 0, 1);
    ro->rooms = strdup("[]");
    bus_request_free(&ro->base);

    bus_request_free(request(sizeof(struct bus_leave), BUS_LEAVE, 0, 0));
    bus_request_free(request(sizeof(struct bus_user), BUS_ONLINE, 0, 0));
    bus_request_free(request(sizeof(struct bus_user), BUS_OFFLINE, 0, 0));
    /* Empty ones too. */
    bus_request_free(request(sizeof(struct bus_publish), BUS_PUBLISH, 0, 0));
    bus_request_free(request(sizeof(struct bus_presence), BUS_PRESENCE, 0, 0));
    store_batch_free(&batch);
}

static void test_bus_frees_waiting_joins_held_events_and_reads_at_stop(void **state)
{
    struct fixture *f = *state;

    /* A join waiting for a confirmation that never comes, with held events. */
    submit_join(f, 0, "a", "alice");
    settle(f);
    bus_deliver(f->bus, ephemeral("a", "e1"));
    bus_deliver(f->bus, persist(f, "a", "m1"));
    /* A join whose read is in flight, with a rejoin behind it. */
    f->store->hold = 1;
    submit_join(f, 1, "b", NULL);
    submit_rejoin(f, 1, "b");
    settle(f);
    bus_subscribed(f->bus, "b");
    bus_deliver(f->bus, ephemeral("b", "e2"));
    /* A publish the engine never answered, and requests without replies. */
    submit_publish(f, 2, EVENT_ROOM, "c", "1");
    submit_user(f, BUS_ONLINE, 2, "carol");
    settle(f);
    assert_int_equal(f->workers[0].n, 0);
    assert_int_equal(f->workers[1].n, 0);
    assert_int_equal(f->workers[2].n, 0);
    /* teardown stops the bus: LeakSanitizer sees anything left. */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        T(test_bus_first_join_asks_engine_for_interest_and_last_leave_drops_it),
        T(test_bus_leave_without_join_changes_nothing),
        T(test_bus_answered_join_counts_interest_and_presence_only),
        T(test_bus_join_waits_for_subscription_before_reading_store),
        T(test_bus_join_since_replays_what_followed_it),
        T(test_bus_holds_live_events_during_join_read_and_delivers_them_after_reply),
        T(test_bus_drops_held_events_at_or_below_first_join_latest),
        T(test_bus_second_join_holds_events_for_every_member),
        T(test_bus_two_joins_in_flight_release_events_after_both_replies),
        T(test_bus_rejoin_is_answered_after_first_join_hold_ends),
        T(test_bus_rejoin_without_hold_is_answered_at_once),
        T(test_bus_gap_fill_delivers_missed_events_before_held_live_ones),
        T(test_bus_live_copy_after_the_gap_fill_is_not_delivered_again),
        T(test_bus_gap_fill_waits_for_store_to_come_back),
        T(test_bus_join_during_link_down_waits_for_new_subscription),
        T(test_bus_delivers_room_events_only_to_workers_with_interest),
        T(test_bus_delivers_event_all_to_every_worker),
        T(test_bus_delivers_user_events_to_workers_where_user_is_online),
        T(test_bus_drops_deliveries_to_exited_worker),
        T(test_bus_unavailable_engine_answers_join_and_still_counts_interest),
        T(test_bus_publish_goes_to_engine_and_ack_follows_engine_reply),
        T(test_bus_history_presence_and_rooms_are_answered),
        T(test_bus_join_waiting_for_subscription_does_not_hold_other_requests),
        T(test_bus_join_left_before_subscription_is_answered_before_left),
        T(test_bus_rooms_of_the_same_name_in_two_tenants_never_meet),
        T(test_bus_tenant_broadcast_reaches_only_its_workers),
        T(test_bus_presence_info_of_the_newest_connection),
        T(test_bus_request_free_frees_what_each_request_owns),
        T(test_bus_frees_waiting_joins_held_events_and_reads_at_stop),
#undef T
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
