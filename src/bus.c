/* bus.c - the bus, on the main thread's loop: takes requests from the
 * workers' inboxes in one order, keeps local interest (which workers have
 * members of which rooms and users) and presence, hands publishing to the
 * engine and delivers what the engine brings back to the interested
 * workers. Never touches a connection: replies travel back in the request. */
#include "bus.h"

#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "hub.h"
#include "log.h"
#include "map.h"
#include "presence.h"
#include "server.h"

/* Which workers have local members of one room or connections of one user. */
struct interest {
    uint32_t total;
    uint32_t per_worker[];
};

struct bus {
    struct server *server;
    struct inbox inbox;
    const struct bus_engine *engine;
    struct store *store;
    struct presence *presence;
    struct map rooms;  /* room -> struct interest */
    struct map users;  /* user -> struct interest */
    int stopping;      /* workers are gone: replies and deliveries are dropped */
};

/* A bus event on its way to one worker. */
struct delivery {
    struct task task;
    struct bus_event *ev;
};

struct bus_event *bus_event_create(enum bus_target target, const char *name, const char *json, size_t len)
{
    struct bus_event *ev = malloc(sizeof *ev + len + 1);
    if (!ev)
        return NULL;
    atomic_init(&ev->refs, 1);
    ev->target = target;
    snprintf(ev->name, sizeof ev->name, "%s", name ? name : "");
    ev->skip_worker = -1;
    ev->skip_seq = 0;
    ev->len = len;
    memcpy(ev->json, json, len);
    ev->json[len] = '\0';
    return ev;
}

void bus_event_unref(struct bus_event *ev)
{
    if (atomic_fetch_sub(&ev->refs, 1) == 1)
        free(ev);
}

struct bus_request *bus_request_create(enum bus_op op)
{
    struct bus_request *req = calloc(1, sizeof *req);
    if (req)
        req->op = op;
    return req;
}

void bus_request_free(struct bus_request *req)
{
    free(req->data);
    free(req->users);
    free(req->store.event);
    store_batch_free(&req->store.batch);
    free(req);
}

struct store *bus_store(struct bus *b)
{
    return b->store;
}

/* ---- delivery and replies ------------------------------------------------ */

static void run_delivery(struct task *t, void *ctx)
{
    struct worker *w = ctx;
    struct delivery *d = (struct delivery *)t;
    hub_deliver(w->hub, d->ev);
    bus_event_unref(d->ev);
    free(d);
}

void bus_deliver(struct bus *b, struct bus_event *ev)
{
    struct map *index = ev->target == BUS_ROOM ? &b->rooms : &b->users;
    struct interest *in = ev->target == BUS_ALL ? NULL : map_get(index, ev->name, strlen(ev->name));
    for (int i = 0; !b->stopping && i < b->server->nworkers; i++) {
        if (ev->target != BUS_ALL && (!in || !in->per_worker[i]))
            continue;
        struct delivery *d = malloc(sizeof *d);
        if (!d) {
            log_error("bus: out of memory delivering to worker %d", i);
            continue;
        }
        d->task.run = run_delivery;
        atomic_fetch_add(&ev->refs, 1);
        d->ev = ev;
        inbox_post(&b->server->workers[i].inbox, &d->task);
    }
    bus_event_unref(ev);
}

void bus_reply(struct bus *b, struct bus_request *req)
{
    if (!req->on_reply || b->stopping) {
        bus_request_free(req);
        return;
    }
    req->task.run = req->on_reply;
    inbox_post(&b->server->workers[req->worker].inbox, &req->task);
}

/* ---- interest ------------------------------------------------------------ */

/* Counts a worker's interest up or down; tells the engine when the
 * process's first interest begins or its last ends. */
static void interest_change(struct bus *b, enum bus_target target, const char *name, int worker, int delta)
{
    struct map *index = target == BUS_ROOM ? &b->rooms : &b->users;
    size_t len = strlen(name);
    struct interest *in = map_get(index, name, len);
    if (!in) {
        if (delta < 0)
            return;
        in = calloc(1, sizeof *in + sizeof in->per_worker[0] * (size_t)b->server->nworkers);
        if (!in || map_put(index, name, len, in)) {
            free(in);
            log_error("bus: out of memory tracking %s", name);
            return;
        }
    }
    in->per_worker[worker] += (uint32_t)delta;
    in->total += (uint32_t)delta;
    if (in->total == 0) {
        free(map_remove(index, name, len));
        b->engine->interest(b, target, name, 0);
    } else if (in->total == 1 && delta > 0) {
        b->engine->interest(b, target, name, 1);
    }
}

/* ---- requests ------------------------------------------------------------ */

static void deliver_presence(struct bus *b, const char *type, const char *room, const char *user)
{
    size_t len;
    char *json = event_presence(type, room, user, &len);
    struct bus_event *ev = json ? bus_event_create(BUS_ROOM, room, json, len) : NULL;
    free(json);
    if (ev)
        bus_deliver(b, ev);
    else
        log_error("bus: out of memory announcing %s of %s in %s", type, user, room);
}

static void join_done(struct store_call *call)
{
    struct bus_request *req = (struct bus_request *)((char *)call - offsetof(struct bus_request, store));
    struct bus *b = req->bus;
    char room[NAME_MAX_LEN + 1], user[NAME_MAX_LEN + 1];
    strcpy(room, req->room);
    strcpy(user, req->user);
    req->error = call->error;
    bus_reply(b, req);
    /* After the reply, so the joiner sees joined, then the replay, then this. */
    if (user[0] && presence_add(b->presence, room, user) == 1)
        deliver_presence(b, "presence_join", room, user);
}

static void store_done(struct store_call *call)
{
    struct bus_request *req = (struct bus_request *)((char *)call - offsetof(struct bus_request, store));
    req->error = call->error;
    bus_reply(req->bus, req);
}

static void on_request(struct task *t, void *ctx)
{
    struct bus *b = ctx;
    struct bus_request *req = (struct bus_request *)t;
    req->bus = b;
    req->store.room = req->room;
    switch (req->op) {
    case BUS_JOIN:
        interest_change(b, BUS_ROOM, req->room, req->worker, 1);
        req->store.done = join_done;
        if (req->has_since)
            b->store->ops->recover(b->store, &req->store);
        else
            b->store->ops->latest(b->store, &req->store);
        break;
    case BUS_LEAVE:
        interest_change(b, BUS_ROOM, req->room, req->worker, -1);
        if (req->user[0] && presence_remove(b->presence, req->room, req->user) == 1)
            deliver_presence(b, "presence_leave", req->room, req->user);
        bus_reply(b, req);
        break;
    case BUS_PUBLISH:
        b->engine->publish(b, req);
        break;
    case BUS_HISTORY:
        req->store.done = store_done;
        b->store->ops->history(b->store, &req->store);
        break;
    case BUS_PRESENCE:
        if (!(req->users = presence_list(b->presence, req->room)))
            req->error = "unavailable";
        bus_reply(b, req);
        break;
    case BUS_ONLINE:
    case BUS_OFFLINE:
        interest_change(b, BUS_USER, req->user, req->worker, req->op == BUS_ONLINE ? 1 : -1);
        bus_reply(b, req);
        break;
    }
}

void bus_submit(struct bus *b, struct bus_request *req)
{
    req->task.run = on_request;
    inbox_post(&b->inbox, &req->task);
}

struct bus *bus_create(struct server *s)
{
    struct bus *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->server = s;
    b->engine = &bus_memory_engine;
    map_init(&b->rooms);
    map_init(&b->users);
    b->store = store_memory_create(s->cfg->history_length, s->cfg->history_ttl);
    b->presence = presence_create();
    if (!b->store || !b->presence || inbox_init(&b->inbox, s->loop, b)) {
        if (b->store)
            b->store->ops->destroy(b->store);
        if (b->presence)
            presence_destroy(b->presence);
        free(b);
        return NULL;
    }
    return b;
}

void bus_destroy(struct bus *b)
{
    b->stopping = 1;
    inbox_close(&b->inbox);
    const struct map_slot *slot;
    for (size_t i = 0; map_next(&b->rooms, &i, &slot);)
        free(slot->value);
    for (size_t i = 0; map_next(&b->users, &i, &slot);)
        free(slot->value);
    map_free(&b->rooms);
    map_free(&b->users);
    presence_destroy(b->presence);
    b->store->ops->destroy(b->store);
    free(b);
}
