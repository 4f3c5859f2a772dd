/* bus.c - the bus, on the main thread's loop: takes requests from the
 * workers' inboxes in one order, keeps local interest (which workers have
 * members of which rooms and users) and local presence counts, hands
 * publishing to the engine and delivers what the engine brings back to the
 * interested workers. Never touches a connection: replies travel back in
 * the request.
 *
 * Exactness of joins and of gap fill rests on two rules here:
 * - while a room has a history read in flight (a join's, or a gap fill's),
 *   its live events are held back, and released after the read's reply, so
 *   nothing published meanwhile can reach a worker before the replay;
 * - `seen` is the newest persisted offset delivered for the room; held
 *   events at or below it were already delivered (by a gap fill) or
 *   replayed to every member (by the first join), and are dropped.
 * A joined connection itself skips live events at or below its replay's
 * offset (hub.c), which covers a live event overtaken by its history read. */
#include "cluster/bus.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/presence.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/map.h"

/* Which workers have local interest in a room or a user (or a tenant's
 * broadcasts), and how much: memberships, or a user's connections. A user
 * needs no more than this, which it costs once per user of the process. */
struct interest {
    uint32_t total;
    uint32_t per_worker[];
};

/* A room with local interest. */
struct bus_room {
    int subscribed;               /* the engine confirmed the subscription */
    int gap_fill;                 /* the link came back: read what was missed */
    int gap_waiting;              /* subscribed again, holding, waiting for the store */
    uint32_t holds;               /* history reads in flight: live events wait */
    struct held_event *held, *held_tail;
    struct bus_join *waiting;     /* joins waiting for the subscription */
    struct bus_join *rejoins;     /* answered when the holds end */
    int has_seen;
    struct offset seen;
    int checking;                 /* a position check is on its way */
    uint64_t behind_since_ms;     /* history was at behind_top then, ahead of seen; 0: it was not */
    struct offset behind_top;
    struct interest in;           /* last: its per_worker array follows */
};

struct held_event {
    struct held_event *next;
    struct event *ev;
};

#define RATE_ROLL_MS METRICS_RATE_WINDOW_MS

struct bus {
    uv_loop_t *loop;
    const struct config *cfg;
    struct bus_hooks hooks;
    struct metrics_bus *metrics;
    uv_timer_t rates;  /* ends each window of the busiest rooms' rates */
    uv_timer_t positions;  /* compares what rooms delivered with their history */
    struct inbox inbox;
    const struct bus_engine *engine;
    void *engine_data;
    struct store *store;
    struct presence *presence;
    struct map rooms;  /* room key -> struct bus_room */
    struct map users;  /* user key, or a tenant's "T/" (its broadcasts) -> struct interest */
    int stopping;      /* workers are gone: replies and deliveries are dropped */
    atomic_int ready;  /* engine->ready, for readers on other threads */
};

/* An event on its way to one worker. */
struct delivery {
    struct task task;
    const struct bus_hooks *hooks;
    struct event *ev;
};

/* The store call inside req, for the ops that have one; else NULL. */
static struct store_call *store_call_of(struct bus_request *req)
{
    switch (req->op) {
    case BUS_JOIN:
    case BUS_REJOIN: return &((struct bus_join *)req)->store;
    case BUS_PUBLISH: return &((struct bus_publish *)req)->store;
    case BUS_HISTORY: return &((struct bus_history *)req)->store;
    default: return NULL;
    }
}

void bus_request_free(struct bus_request *req)
{
    struct store_call *call = store_call_of(req);
    if (call) {
        if (call->event)
            event_unref(call->event);
        store_batch_free(&call->batch);
    }
    if (req->op == BUS_JOIN || req->op == BUS_REJOIN) {
        free(((struct bus_join *)req)->info);
    } else if (req->op == BUS_PUBLISH) {
        free(((struct bus_publish *)req)->data);
        free(((struct bus_publish *)req)->users);
    } else if (req->op == BUS_PRESENCE) {
        free(((struct bus_presence *)req)->users);
    } else if (req->op == BUS_ROOMS) {
        free(((struct bus_rooms *)req)->rooms);
    }
    free(req);
}

const char *bus_publish_next_key(const struct bus_publish *req, const char *key)
{
    if (!req->users)
        return key ? NULL : req->name;
    const char *next = key ? key + strlen(key) + 1 : req->users;
    return next < req->users + req->users_len ? next : NULL;
}

const struct config *bus_config(struct bus *b) { return b->cfg; }
uv_loop_t *bus_loop(struct bus *b) { return b->loop; }
struct store *bus_store(struct bus *b) { return b->store; }
struct presence *bus_presence(struct bus *b) { return b->presence; }
struct metrics_bus *bus_metrics(struct bus *b) { return b->metrics; }
void *bus_engine_data(struct bus *b) { return b->engine_data; }
void bus_set_engine_data(struct bus *b, void *data) { b->engine_data = data; }

void bus_each_room_count(struct bus *b, void (*fn)(const char *room, unsigned long members, void *arg), void *arg)
{
    const struct map_slot *slot;
    for (size_t i = 0; map_next(&b->rooms, &i, &slot);)
        if (((struct bus_room *)slot->value)->in.total)
            fn(slot->key, ((struct bus_room *)slot->value)->in.total, arg);
}

static int by_room(const void *a, const void *b)
{
    return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "room")),
                  json_string_value(json_object_get(*(json_t *const *)b, "room")));
}

/* True when key is a key of tenant (of length tlen; 0: no tenant). */
static int key_in_tenant(const char *key, const char *tenant, size_t tlen)
{
    return tlen ? !strncmp(key, tenant, tlen) && key[tlen] == '/' : !strchr(key, '/');
}

char *bus_rooms_format(struct bus *b, const struct map *cluster, const char *tenant)
{
    json_t *list = json_array();
    size_t tlen = strlen(tenant);
    const struct map_slot *slot;
    for (size_t i = 0; list && map_next(&b->rooms, &i, &slot);) {
        const struct bus_room *r = slot->value;
        if (!r->in.total || !key_in_tenant(slot->key, tenant, tlen))
            continue;
        const char *name = slot->key + (tlen ? tlen + 1 : 0);
        uintptr_t total = cluster ? (uintptr_t)map_get(cluster, name, strlen(name)) : r->in.total;
        json_array_append_new(list, json_pack("{s:s, s:I, s:I}", "room", name, "local", (json_int_t)r->in.total,
                                              "cluster", (json_int_t)(total > r->in.total ? total : r->in.total)));
    }
    for (size_t i = 0; list && cluster && map_next(cluster, &i, &slot);) {
        char buf[KEY_MAX_LEN + 1];
        const char *key = name_key(tenant, slot->key, buf);
        const struct bus_room *r = map_get(&b->rooms, key, strlen(key));
        if (!r || !r->in.total)
            json_array_append_new(list, json_pack("{s:s, s:I, s:I}", "room", slot->key, "local", (json_int_t)0,
                                                  "cluster", (json_int_t)(uintptr_t)slot->value));
    }
    size_t n = list ? json_array_size(list) : 0;
    json_t **items = malloc(sizeof *items * (n ? n : 1));
    char *text = NULL;
    if (items) {
        for (size_t i = 0; i < n; i++)
            items[i] = json_array_get(list, i);
        qsort(items, n, sizeof *items, by_room);
        json_t *sorted = json_array();
        for (size_t i = 0; sorted && i < n; i++)
            json_array_append(sorted, items[i]);
        text = sorted ? json_dumps(sorted, JSON_COMPACT) : NULL;
        json_decref(sorted);
    }
    free(items);
    json_decref(list);
    return text;
}

int bus_ready(struct bus *b)
{
    return atomic_load_explicit(&b->ready, memory_order_relaxed);
}

void bus_ready_changed(struct bus *b)
{
    /* While stopping, the engine's state may be gone already (its links
     * stop one by one): the bus is not ready, whatever they say. */
    atomic_store_explicit(&b->ready, !b->stopping && b->engine->ready(b), memory_order_relaxed);
}

/* ---- rooms --------------------------------------------------------------- */

/* The entry of name in index, of size bytes (which end with the per-worker
 * counts), created zeroed when missing and create is set; or NULL. */
static void *entry_get(struct bus *b, struct map *index, const char *name, size_t size, int create)
{
    size_t len = strlen(name);
    void *e = map_get(index, name, len);
    if (e || !create)
        return e;
    if (!(e = map_add(index, name, len, size + sizeof(uint32_t) * (size_t)b->hooks.nworkers)))
        log_error("bus: out of memory tracking %s", name);
    return e;
}

static struct bus_room *room_get(struct bus *b, const char *name, int create)
{
    return entry_get(b, &b->rooms, name, sizeof(struct bus_room), create);
}

/* Frees a room nobody is interested in and nothing waits on. */
static void room_maybe_free(struct bus *b, const char *name, struct bus_room *r)
{
    if (r->in.total == 0 && r->holds == 0 && !r->waiting && !r->rejoins)
        free(map_remove(&b->rooms, name, strlen(name)));
}

/* ---- delivery and replies ---------------------------------------------- */

static void run_delivery(struct task *t, void *ctx)
{
    struct delivery *d = (struct delivery *)t;
    d->hooks->deliver(ctx, d->ev);
    event_unref(d->ev);
    free(d);
}

/* Posts ev to every worker with local interest (in: the room's, user's
 * or tenant's, NULL when none; r: the room, for a room's event); a
 * broadcast without a tenant goes to every worker. Takes the caller's ref. */
static void deliver_to(struct bus *b, const struct interest *in, struct bus_room *r, struct event *ev)
{
    /* The busiest rooms' rates count messages, not presence events. */
    if (ev->kind == EVENT_MESSAGE)
        metrics_room_event(b->metrics, ev->key);
    if (r && ev->has_offset && (!r->has_seen || offset_cmp(ev->offset, r->seen) > 0)) {
        r->seen = ev->offset;
        r->has_seen = 1;
    }
    int everyone = ev->target == EVENT_ALL && !ev->key_len;
    for (int i = 0; !b->stopping && i < b->hooks.nworkers; i++) {
        if (!everyone && (!in || !in->per_worker[i]))
            continue;
        struct delivery *d = malloc(sizeof *d);
        if (!d) {
            log_error("bus: out of memory delivering to worker %d", i);
            continue;
        }
        d->task.run = run_delivery;
        d->hooks = &b->hooks;
        d->ev = event_ref(ev);
        if (b->hooks.post(b->hooks.arg, i, &d->task)) {
            /* That worker has exited (shutdown). */
            event_unref(ev);
            free(d);
        }
    }
    event_unref(ev);
}

static void deliver_now(struct bus *b, struct bus_room *r, struct event *ev)
{
    deliver_to(b, r ? &r->in : NULL, r, ev);
}

void bus_deliver(struct bus *b, struct event *ev)
{
    if (ev->target != EVENT_ROOM) {
        /* A tenant's broadcast goes where its connections are ("T/" in users). */
        deliver_to(b, ev->key_len ? map_get(&b->users, ev->key, ev->key_len) : NULL, NULL, ev);
        return;
    }
    struct bus_room *r = ev->key_len ? map_get(&b->rooms, ev->key, ev->key_len) : NULL;
    /* A gap fill may have read a message whose live copy was still on its
     * way (history and pub/sub come on two connections): when deliveries
     * come in history order, one at or below seen was delivered already. */
    if (r && ev->has_offset && r->has_seen && b->store->ordered && offset_cmp(ev->offset, r->seen) <= 0) {
        event_unref(ev);
        return;
    }
    if (r && r->holds) {
        struct held_event *h = malloc(sizeof *h);
        if (h) {
            h->next = NULL;
            h->ev = ev;
            if (r->held_tail)
                r->held_tail->next = h;
            else
                r->held = h;
            r->held_tail = h;
            return;
        }
        log_error("bus: out of memory holding an event of %s; delivering it now", ev->key);
    }
    deliver_now(b, r, ev);
}

/* A history read of the room finished: once none is left, the held
 * events go out in order, less those already delivered or replayed. */
static void room_release(struct bus *b, const char *name)
{
    struct bus_room *r = map_get(&b->rooms, name, strlen(name));
    if (!r || --r->holds)
        return;
    struct bus_join *req = r->rejoins;
    r->rejoins = NULL;
    while (req) {
        struct bus_join *next = req->next_waiting;
        bus_reply(b, &req->base);
        req = next;
    }
    struct held_event *h = r->held;
    r->held = r->held_tail = NULL;
    while (h) {
        struct held_event *next = h->next;
        if (h->ev->has_offset && r->has_seen && offset_cmp(h->ev->offset, r->seen) <= 0)
            event_unref(h->ev);
        else
            deliver_now(b, r, h->ev);
        free(h);
        h = next;
    }
    room_maybe_free(b, name, r);
}

void bus_reply(struct bus *b, struct bus_request *req)
{
    if (!req->on_reply || b->stopping) {
        bus_request_free(req);
        return;
    }
    req->task.run = req->on_reply;
    if (b->hooks.post(b->hooks.arg, req->worker, &req->task))
        bus_request_free(req);
}

/* ---- interest ------------------------------------------------------------ */

static void join_read(struct bus *b, struct bus_join *req);

/* Counts a worker's interest up or down; tells the engine when the
 * process's first interest begins or its last ends. */
static void interest_change(struct bus *b, enum event_target target, const char *name, int worker, int delta)
{
    struct bus_room *r = NULL;
    struct interest *in;
    if (target == EVENT_ROOM)
        in = (r = room_get(b, name, delta > 0)) ? &r->in : NULL;
    else
        in = entry_get(b, &b->users, name, sizeof *in, delta > 0);
    if (!in || (delta < 0 && in->per_worker[worker] == 0))
        return;
    in->per_worker[worker] += (uint32_t)delta;
    in->total += (uint32_t)delta;
    if (in->total == 0 && !r) {
        free(map_remove(&b->users, name, strlen(name)));
        b->engine->interest(b, target, name, 0);
    } else if (in->total == 0) {
        r->subscribed = 0;
        r->gap_fill = 0;
        /* Joins still waiting for the subscription will get no live event
         * now (they were left meanwhile): their reads go ahead, so that
         * they are answered and release their holds. */
        struct bus_join *waiting = r->waiting;
        r->waiting = NULL;
        room_maybe_free(b, name, r);
        b->engine->interest(b, target, name, 0);
        while (waiting) {
            struct bus_join *next = waiting->next_waiting;
            join_read(b, waiting);
            waiting = next;
        }
    } else if (in->total == 1 && delta > 0) {
        b->engine->interest(b, target, name, 1);
    }
}

/* ---- presence ------------------------------------------------------------ */

/* A connection of user joined (delta 1, with its info) or left (-1) room. */
static void presence_changed(struct bus *b, const char *room, const char *user, int delta, const char *info)
{
    unsigned long before = presence_count(b->presence, room, user);
    if (delta > 0 && presence_add(b->presence, room, user, info) < 0) {
        log_error("bus: out of memory counting %s in %s", user, room);
        return;
    }
    if (delta < 0)
        presence_remove(b->presence, room, user);
    unsigned long after = presence_count(b->presence, room, user);
    if (after != before)
        b->engine->presence(b, room, user, before, after, delta > 0 ? presence_info(b->presence, room, user) : NULL);
}

/* ---- joins and gap fill -------------------------------------------------- */

static struct bus_join *join_of(struct store_call *call)
{
    return (struct bus_join *)((char *)call - offsetof(struct bus_join, store));
}

static void join_done(struct store_call *call)
{
    struct bus_join *req = join_of(call);
    struct bus *b = req->base.bus;
    char room[KEY_MAX_LEN + 1];
    strcpy(room, req->room);
    struct bus_room *r = map_get(&b->rooms, room, strlen(room));
    struct offset latest;
    if (call->error)
        metrics_store_error(b->metrics);
    if (!call->error && r && !r->has_seen && offset_parse(call->offset, &latest) == 0) {
        r->seen = latest;
        r->has_seen = 1;
    }
    req->base.error = call->error;
    bus_reply(b, &req->base);
    room_release(b, room);
}

static void join_read(struct bus *b, struct bus_join *req)
{
    req->store.done = join_done;
    if (req->has_since)
        b->store->ops->recover(b->store, &req->store);
    else
        b->store->ops->latest(b->store, &req->store);
}

/* What the room missed while the link was down, delivered in order to
 * every local member before the events held meanwhile. */
struct gap_fill {
    struct bus *b;
    char room[KEY_MAX_LEN + 1];
    struct store_call call;
};

static void gap_fill_done(struct store_call *call)
{
    struct gap_fill *g = (struct gap_fill *)((char *)call - offsetof(struct gap_fill, call));
    struct bus *b = g->b;
    struct bus_room *r = map_get(&b->rooms, g->room, strlen(g->room));
    if (call->error && r && r->in.total && !b->stopping) {
        /* The store is down: keep holding and try again when it is back. */
        log_warn("bus: room %s: history unavailable, filling the gap when the store is back", g->room);
        r->gap_waiting = 1;
        store_batch_free(&call->batch);
        free(g);
        return;
    }
    if (call->error || !call->recovered)
        log_warn("bus: room %s: %s", g->room,
                 call->error ? "history unavailable, messages missed while disconnected are lost"
                             : "history no longer reaches back to the last delivered message");
    struct store_batch *batch = &call->batch;
    const char *ev_text = batch->text;
    for (size_t i = 0; r && i < batch->count; i++) {
        const char *nl = memchr(ev_text, '\n', (size_t)(batch->text + batch->len - ev_text));
        /* Two fills of one room may overlap: what one delivered, the other skips. */
        int delivered = r->has_seen && offset_cmp(batch->offsets[i], r->seen) <= 0;
        struct event *ev = delivered ? NULL : event_copy(EVENT_ROOM, g->room, ev_text, (size_t)(nl - ev_text));
        if (ev) {
            ev->has_offset = 1;
            ev->offset = batch->offsets[i];
            deliver_now(b, r, ev);
        }
        ev_text = nl + 1;
    }
    if (batch->count)
        log_info("bus: room %s: delivered %zu messages missed while disconnected", g->room, batch->count);
    /* Everything up to the latest was read: history entries that are not
     * messages were left out, and must not look like a gap again. */
    struct offset latest;
    if (r && !call->error && call->recovered && offset_parse(call->offset, &latest) == 0 &&
        (!r->has_seen || offset_cmp(latest, r->seen) > 0)) {
        r->seen = latest;
        r->has_seen = 1;
    }
    store_batch_free(batch);
    room_release(b, g->room);
    free(g);
}

/* Reads what the room missed; the caller has put a hold on the room, which
 * the read releases. While the store is down, the hold stays and the read
 * waits for store_ready(). */
static void gap_fill_start(struct bus *b, const char *room, struct bus_room *r)
{
    if (!b->store->ops->ready(b->store)) {
        r->gap_waiting = 1;
        return;
    }
    struct gap_fill *g = calloc(1, sizeof *g);
    if (!g) {
        log_error("bus: out of memory filling the gap of %s", room);
        room_release(b, room);
        return;
    }
    r->gap_waiting = 0;
    g->b = b;
    strcpy(g->room, room);
    g->call.room = g->room;
    g->call.since = r->seen;
    g->call.done = gap_fill_done;
    b->store->ops->recover(b->store, &g->call);
}

static void store_changed(void *arg)
{
    struct bus *b = arg;
    bus_ready_changed(b);
    if (b->stopping)
        return;
    if (!b->store->ops->ready(b->store))
        return;
    const struct map_slot *slot;
    for (size_t i = 0; map_next(&b->rooms, &i, &slot);) {
        struct bus_room *r = slot->value;
        if (r->gap_waiting)
            gap_fill_start(b, slot->key, r);
    }
}

void bus_subscribed(struct bus *b, const char *room)
{
    struct bus_room *r = map_get(&b->rooms, room, strlen(room));
    if (!r || r->subscribed)
        return;
    r->subscribed = 1;
    if (r->gap_fill && !r->gap_waiting) {
        r->gap_fill = 0;
        r->holds++;
        gap_fill_start(b, room, r);
    }
    struct bus_join *req = r->waiting;
    r->waiting = NULL;
    while (req) {
        struct bus_join *next = req->next_waiting;
        join_read(b, req);
        req = next;
    }
}

/* The room's events stopped arriving: it fills its gap from history when
 * subscribed again. */
static void room_unsubscribed(struct bus_room *r)
{
    r->subscribed = 0;
    r->gap_fill = r->has_seen && r->in.total > 0;
}

void bus_link_changed(struct bus *b, int up)
{
    if (up)
        return;
    const struct map_slot *slot;
    for (size_t i = 0; map_next(&b->rooms, &i, &slot);)
        room_unsubscribed(slot->value);
}

void bus_unsubscribed(struct bus *b, const char *room)
{
    struct bus_room *r = map_get(&b->rooms, room, strlen(room));
    if (r)
        room_unsubscribed(r);
}

void bus_fill_gaps(struct bus *b)
{
    const struct map_slot *slot;
    for (size_t i = 0; map_next(&b->rooms, &i, &slot);) {
        struct bus_room *r = slot->value;
        if (r->in.total && r->has_seen && r->subscribed && !r->gap_waiting) {
            r->holds++;
            gap_fill_start(b, slot->key, r);
        }
    }
}

/* ---- position sync --------------------------------------------------------
 * With an engine whose deliveries can be lost on their own (pub/sub: a
 * dropped subscriber buffer, a link that failed silently), every
 * --position-sync milliseconds each room with local members compares the
 * newest offset it delivered with the newest of its history. When what was
 * in history at one check is still not delivered at the next, the room
 * fills the gap from history, as after a reconnect: a message that is in
 * history reaches every live member. (Under steady traffic history is
 * always a little ahead, by the messages on their way: those arrive before
 * the next check.) */

struct position_check {
    struct bus *b;
    char room[KEY_MAX_LEN + 1];  /* the room's key */
    struct store_call call;
};

static void position_checked(struct store_call *call)
{
    struct position_check *pc = (struct position_check *)((char *)call - offsetof(struct position_check, call));
    struct bus *b = pc->b;
    struct bus_room *r = b->stopping ? NULL : map_get(&b->rooms, pc->room, strlen(pc->room));
    struct offset top;
    if (r)
        r->checking = 0;
    if (r && !call->error && r->has_seen && r->in.total && !r->holds && offset_parse(call->offset, &top) == 0 &&
        offset_cmp(top, r->seen) > 0) {
        uint64_t now = uv_now(b->loop);
        if (!r->behind_since_ms || offset_cmp(r->seen, r->behind_top) >= 0) {
            r->behind_since_ms = now;
            r->behind_top = top;
        } else if (now - r->behind_since_ms >= (uint64_t)b->cfg->position_sync) {
            log_warn("bus: room %s: history is at %s but delivery stopped before it; filling the gap", pc->room,
                     call->offset);
            metrics_position_repair(b->metrics);
            r->behind_since_ms = 0;
            r->holds++;
            gap_fill_start(b, pc->room, r);
        }
    } else if (r) {
        r->behind_since_ms = 0;
    }
    free(pc);
}

static void on_positions(uv_timer_t *t)
{
    struct bus *b = t->data;
    if (!b->store->ops->ready(b->store))
        return;
    const struct map_slot *slot;
    for (size_t i = 0; map_next(&b->rooms, &i, &slot);) {
        struct bus_room *r = slot->value;
        if (!r->in.total || !r->has_seen || !r->subscribed || r->holds || r->checking)
            continue;
        struct position_check *pc = calloc(1, sizeof *pc);
        if (!pc)
            return;
        pc->b = b;
        strcpy(pc->room, slot->key);
        pc->call.room = pc->room;
        pc->call.done = position_checked;
        r->checking = 1;
        b->store->ops->latest(b->store, &pc->call);
    }
}

/* ---- requests ------------------------------------------------------------ */

static void history_done(struct store_call *call)
{
    struct bus_history *req = (struct bus_history *)((char *)call - offsetof(struct bus_history, store));
    req->base.error = call->error;
    if (call->error && call->error != WSFAN_EHISTORY_UNAVAILABLE)
        metrics_store_error(req->base.bus->metrics);
    bus_reply(req->base.bus, &req->base);
}

/* Puts req at the end of a room's list of waiting joins. */
static void join_wait(struct bus_join **list, struct bus_join *req)
{
    while (*list)
        list = &(*list)->next_waiting;
    req->next_waiting = NULL;
    *list = req;
}

/* Every JOIN counts interest and presence, failed or not: exactly one
 * LEAVE follows from the worker (the failed join's, the client's, or the
 * close's). A join the worker answered itself needs nothing else. Presence events of the join are held with the room's live
 * events, so the joiner sees joined, then its replay, then them. */
static void on_join(struct bus *b, struct bus_join *req)
{
    interest_change(b, EVENT_ROOM, req->room, req->base.worker, 1);
    if (req->answered) {
        /* The worker had members in the room already: its interest never
         * dropped to 0 meanwhile (their leaves come after this), and its
         * joiner gets the events after the offset it was answered. */
        if (req->user[0])
            presence_changed(b, req->room, req->user, 1, req->info);
        bus_reply(b, &req->base);
        return;
    }
    struct bus_room *r = map_get(&b->rooms, req->room, strlen(req->room));
    if (!r) {
        req->base.error = WSFAN_ENOMEM;
        bus_reply(b, &req->base);
        return;
    }
    r->holds++; /* released when the join's read is done */
    if (req->user[0])
        presence_changed(b, req->room, req->user, 1, req->info);
    if (!b->engine->ready(b)) {
        char room[KEY_MAX_LEN + 1];
        strcpy(room, req->room);
        req->base.error = WSFAN_EUNAVAILABLE;
        bus_reply(b, &req->base);
        room_release(b, room);
        return;
    }
    if (r->subscribed)
        join_read(b, req);
    else
        join_wait(&r->waiting, req);
}

static void on_rejoin(struct bus *b, struct bus_join *req)
{
    struct bus_room *r = map_get(&b->rooms, req->room, strlen(req->room));
    if (r && r->holds)
        join_wait(&r->rejoins, req);
    else
        bus_reply(b, &req->base);
}

static void on_leave(struct bus *b, struct bus_leave *req)
{
    interest_change(b, EVENT_ROOM, req->room, req->base.worker, -1);
    if (req->user[0])
        presence_changed(b, req->room, req->user, -1, NULL);
    bus_reply(b, &req->base);
}

static void on_publish(struct bus *b, struct bus_publish *req)
{
    if (!b->engine->ready(b)) {
        req->base.error = WSFAN_EUNAVAILABLE;
        bus_reply(b, &req->base);
        return;
    }
    /* What the store needs of a persisted message; ts stamps every kind. */
    req->store.room = req->name;
    req->store.from = req->from[0] ? req->from : NULL;
    req->store.data = req->data;
    req->store.data_len = req->data_len;
    req->store.ts = clock_wall_ms();
    req->store.key = req->has_key ? req->key : NULL;
    req->store.key_len = req->has_key ? strlen(req->key) : 0;
    if (req->disconnect) {
        /* The user's interest counts its connections here (BUS_ONLINE). */
        const struct interest *in = map_get(&b->users, req->name, strlen(req->name));
        req->local = in ? in->total : 0;
    }
    b->engine->publish(b, req);
}

static void on_history(struct bus *b, struct bus_history *req)
{
    req->store.room = req->room;
    req->store.done = history_done;
    b->store->ops->history(b->store, &req->store);
}

/* A connection of a user, of a tenant, or both: interest in the user's
 * channel, and in the tenant's broadcasts ("T/"). */
static void on_user(struct bus *b, struct bus_user *req)
{
    int delta = req->base.op == BUS_ONLINE ? 1 : -1;
    if (name_of_key(req->user)[0])
        interest_change(b, EVENT_USER, req->user, req->base.worker, delta);
    size_t tenant = name_key_tenant_len(req->user);
    if (tenant) {
        char all[TENANT_MAX_LEN + 2];
        memcpy(all, req->user, tenant + 1);
        all[tenant + 1] = '\0';
        interest_change(b, EVENT_ALL, all, req->base.worker, delta);
    }
    bus_reply(b, &req->base);
}

static void on_request(struct task *t, void *ctx)
{
    struct bus *b = ctx;
    struct bus_request *req = (struct bus_request *)t;
    req->bus = b;
    switch (req->op) {
    case BUS_JOIN:
        ((struct bus_join *)req)->store.room = ((struct bus_join *)req)->room;
        on_join(b, (struct bus_join *)req);
        break;
    case BUS_REJOIN: on_rejoin(b, (struct bus_join *)req); break;
    case BUS_LEAVE: on_leave(b, (struct bus_leave *)req); break;
    case BUS_PUBLISH: on_publish(b, (struct bus_publish *)req); break;
    case BUS_HISTORY: on_history(b, (struct bus_history *)req); break;
    case BUS_PRESENCE: b->engine->presence_list(b, (struct bus_presence *)req); break;
    case BUS_ROOMS: b->engine->rooms(b, (struct bus_rooms *)req); break;
    case BUS_ONLINE:
    case BUS_OFFLINE: on_user(b, (struct bus_user *)req); break;
    }
}

void bus_submit(struct bus *b, struct bus_request *req)
{
    req->task.run = on_request;
    if (inbox_post(&b->inbox, &req->task))
        bus_request_free(req);
}

int bus_busy(struct bus *b)
{
    return inbox_pending(&b->inbox);
}

static void on_rates_timer(uv_timer_t *t)
{
    struct bus *b = t->data;
    metrics_bus_roll(b->metrics);
}

struct bus *bus_create(uv_loop_t *loop, const struct config *cfg, const struct bus_hooks *hooks,
                       struct metrics_bus *metrics, const struct bus_engine *engine, struct store *store)
{
    if (!store)
        return NULL;
    struct bus *b = calloc(1, sizeof *b);
    if (!b) {
        store->ops->destroy(store);
        return NULL;
    }
    b->loop = loop;
    b->cfg = cfg;
    b->hooks = *hooks;
    b->metrics = metrics;
    b->engine = engine;
    b->store = store;
    map_init(&b->rooms);
    map_init(&b->users);
    b->presence = presence_create();
    b->store->on_change = store_changed;
    b->store->change_arg = b;
    if (!b->presence || inbox_init(&b->inbox, loop, b))
        goto fail;
    if (b->engine->start(b)) {
        inbox_close(&b->inbox);
        goto fail;
    }
    uv_timer_init(loop, &b->rates);
    b->rates.data = b;
    uv_timer_start(&b->rates, on_rates_timer, RATE_ROLL_MS, RATE_ROLL_MS);
    uv_timer_init(loop, &b->positions);
    b->positions.data = b;
    if (engine->position_sync && cfg->position_sync)
        uv_timer_start(&b->positions, on_positions, (uint64_t)cfg->position_sync, (uint64_t)cfg->position_sync);
    bus_ready_changed(b);
    return b;
fail:
    b->store->ops->destroy(b->store);
    if (b->presence)
        presence_destroy(b->presence);
    free(b);
    return NULL;
}

static void free_rooms(struct map *rooms)
{
    const struct map_slot *slot;
    for (size_t i = 0; map_next(rooms, &i, &slot);) {
        struct bus_room *r = slot->value;
        for (struct held_event *h = r->held, *next; h; h = next) {
            next = h->next;
            event_unref(h->ev);
            free(h);
        }
        struct bus_join *lists[] = {r->waiting, r->rejoins};
        for (int k = 0; k < 2; k++)
            for (struct bus_join *req = lists[k], *next; req; req = next) {
                next = req->next_waiting;
                bus_request_free(&req->base);
            }
        free(r);
    }
    map_free(rooms);
}

void bus_stop(struct bus *b)
{
    b->stopping = 1;
    inbox_close(&b->inbox);
    uv_close((uv_handle_t *)&b->rates, NULL);
    uv_close((uv_handle_t *)&b->positions, NULL);
    b->engine->stop(b);
    b->store->ops->destroy(b->store);
}

void bus_free(struct bus *b)
{
    free_rooms(&b->rooms);
    const struct map_slot *slot;
    for (size_t i = 0; map_next(&b->users, &i, &slot);)
        free(slot->value);
    map_free(&b->users);
    presence_destroy(b->presence);
    free(b);
}
