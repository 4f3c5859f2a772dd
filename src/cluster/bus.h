/* bus.h - the way every message travels: workers submit requests (join,
 * leave, publish, history, presence, rooms, user online/offline) to the
 * bus, which runs on the main thread's loop; the bus engine publishes, and
 * every event comes back through bus_deliver() to the workers with local
 * interest, in one order for all of them. Replies go back to the asking
 * worker through the same path, so a join's replay always comes before the
 * live messages after it.
 * The bus reaches workers only through the hooks the server gives it: it
 * knows worker numbers, never a worker, hub or connection.
 * Engines: memory (bus_memory.c: the workers of this process) and Redis
 * (bus_redis.c: between nodes). The bus tracks local interest in rooms and
 * users and tells the engine when it starts and ends; presence counts live
 * in presence.c. */
#ifndef WSFAN_BUS_H
#define WSFAN_BUS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "codec/command.h"
#include "codec/event.h"
#include "core/config.h"
#include "core/inbox.h"
#include "core/names.h"
#include "metrics/metrics.h"
#include "store/store.h"

struct bus;
struct presence;

/* BUS_REJOIN: a join of a room whose first join is still on its way; it is
 * answered after that one, so the client sees its replies in order.
 * Rooms and users in requests are keys (core/names.h): the asker, which
 * knows the tenant, makes them once per request; from here down everything
 * is per key, so a tenant's rooms, users, presence and history never meet
 * another's. */
enum bus_op { BUS_JOIN, BUS_REJOIN, BUS_LEAVE, BUS_PUBLISH, BUS_HISTORY, BUS_PRESENCE, BUS_ROOMS, BUS_ONLINE, BUS_OFFLINE };

/* What every request starts with. The asker allocates the request as the
 * first member of a malloc'ed block of its own (which may carry what the
 * asker needs when the reply comes, such as a command's ref); whoever
 * ends the request frees that block with bus_request_free(). */
struct bus_request {
    struct task task;
    struct bus *bus;
    enum bus_op op;
    int worker;        /* the asking worker */
    int error;         /* result: 0 or a WSFAN_E* */
    task_fn on_reply;  /* runs on the asking worker; NULL: the bus frees the request */
};

/* BUS_JOIN and BUS_REJOIN. */
struct bus_join {
    struct bus_request base;
    struct bus_join *next_waiting;  /* joins waiting for a subscription or a hold */
    char room[KEY_MAX_LEN + 1];     /* the room's key */
    char user[NAME_MAX_LEN + 1];    /* the connection's user, or "" */
    char *info;                     /* the connection's info, JSON text (owned), or NULL */
    int has_since;
    int answered;                   /* the worker answered joined from what it knows
                                       (app/hub.h, hub_room_top): the bus only counts
                                       the interest and the presence, and frees it */
    struct store_call store;        /* the replay read: since in, offset and batch out */
};

/* BUS_LEAVE. */
struct bus_leave {
    struct bus_request base;
    char room[KEY_MAX_LEN + 1];   /* the room's key */
    char user[NAME_MAX_LEN + 1];  /* the connection's user, or "" */
};

/* BUS_PUBLISH: a room message, a direct message (to one user, or to the
 * users of a list: the API's) or a broadcast; or, with disconnect, the
 * order to close every connection of a user, which travels to the user's
 * connections as a direct message would (POST /api/disconnect). */
struct bus_publish {
    struct bus_request base;
    enum event_target target;
    char name[KEY_MAX_LEN + 1];   /* the room's or the user's key; all: "" or "T/" */
    char *users;                  /* EVENT_USER to many: distinct keys, each ended by '\0' (owned); else NULL */
    size_t users_len;             /* bytes of users */
    unsigned pending;             /* the engine's: PUBLISHes not answered yet */
    char from[NAME_MAX_LEN + 1];  /* the publishing user, or "" */
    int ephemeral;
    uint64_t skip_seq;            /* echo:false: the publisher's connection, else 0 */
    int has_key;                  /* an idempotency key (persisted room messages only) */
    char key[PUBLISH_KEY_MAX + 1];
    char *data;                   /* JSON text (owned); NULL for a disconnect */
    size_t data_len;
    int disconnect;               /* EVENT_USER: close the user's connections, on every node */
    uint32_t local;               /* disconnect: result: this process's connections of the user */
    struct store_call store;      /* the append: offset out */
};

/* BUS_HISTORY. */
struct bus_history {
    struct bus_request base;
    char room[KEY_MAX_LEN + 1];   /* the room's key */
    struct store_call store;      /* limit and before in, batch out */
};

/* BUS_PRESENCE. */
struct bus_presence {
    struct bus_request base;
    char room[KEY_MAX_LEN + 1];  /* the room's key */
    char *users;  /* result: [{"user":..,"connections":N[,"info":{..}]},..] (owned) */
};

/* BUS_ROOMS. */
struct bus_rooms {
    struct bus_request base;
    char tenant[TENANT_MAX_LEN + 1];  /* whose rooms; "" without a tenant */
    char *rooms;  /* result: [{"room":..,"local":N,"cluster":N},..] (owned) */
};

/* BUS_ONLINE and BUS_OFFLINE: a connection of user opened or closed. user
 * is the user's key; a connection of tenant T counts for T's broadcasts
 * too, and one of T without a user comes as "T/". */
struct bus_user {
    struct bus_request base;
    char user[KEY_MAX_LEN + 1];
};

/* Frees what req owns and the block it starts. */
void bus_request_free(struct bus_request *req);

/* The keys req goes to, one per call: its name, or each of its users.
 * key is the previous one, NULL for the first; returns NULL after the
 * last. */
const char *bus_publish_next_key(const struct bus_publish *req, const char *key);

/* How the bus reaches the workers, filled in by the server. */
struct bus_hooks {
    void *arg;
    int nworkers;
    /* Posts t to the inbox of worker; 0, or -1 when that worker has exited
     * (t was not taken). Bus thread. */
    int (*post)(void *arg, int worker, struct task *t);
    /* Runs on a worker (ctx is its inbox's): fans ev out to its local
     * recipients. ev is borrowed until return. */
    void (*deliver)(void *ctx, const struct event *ev);
};

/* An engine: how messages leave this process and come back. Every
 * function runs on the bus thread. */
struct bus_engine {
    const char *name;
    /* Deliveries can be lost apart from the store (pub/sub): the bus then
     * checks rooms' positions against history (--position-sync). */
    int position_sync;
    /* Creates the engine's state (bus_engine_data) and connects. */
    int (*start)(struct bus *b);
    /* Disconnects and frees the state; the loop can then end. */
    void (*stop)(struct bus *b);
    /* True while publishing and subscribing work. */
    int (*ready)(struct bus *b);
    /* Publishes a room message (persisted through the store unless
     * ephemeral), a direct message or a broadcast. Delivery comes back
     * through bus_deliver(); the engine answers with bus_reply() after
     * setting the error or req->store.offset. */
    void (*publish)(struct bus *b, struct bus_publish *req);
    /* This process gained its first local interest in a room or user, or
     * in a tenant's broadcasts (EVENT_ALL, key "T/") (on = 1) or lost its
     * last (on = 0); key as in bus_user. The engine calls bus_subscribed()
     * once events of a room are sure to arrive. */
    void (*interest)(struct bus *b, enum event_target target, const char *key, int on);
    /* This process now has count connections of user in room (a key; it
     * had before). When count > before, a connection joined with info (JSON
     * text, or NULL). The engine makes presence_join/presence_leave happen. */
    void (*presence)(struct bus *b, const char *room, const char *user, unsigned long before, unsigned long count,
                     const char *info);
    /* Fills req->users with the room's users across the cluster. */
    void (*presence_list)(struct bus *b, struct bus_presence *req);
    /* Fills req->rooms (bus_rooms_format) with member counts. */
    void (*rooms)(struct bus *b, struct bus_rooms *req);
};

extern const struct bus_engine bus_memory_engine;
extern const struct bus_engine bus_redis_engine;

/* For engines: the bus's settings, loop, store, presence counts, metrics
 * and engine state. */
const struct config *bus_config(struct bus *b);
uv_loop_t *bus_loop(struct bus *b);
struct store *bus_store(struct bus *b);
struct presence *bus_presence(struct bus *b);
struct metrics_bus *bus_metrics(struct bus *b);
void *bus_engine_data(struct bus *b);
void bus_set_engine_data(struct bus *b, void *data);

/* From the engine: events of the room (a key) are sure to arrive from now
 * on (the subscription is confirmed). */
void bus_subscribed(struct bus *b, const char *room);

/* From the engine: the link that brings events went down (up = 0) or came
 * back (up = 1). While down, rooms are marked to be filled from history
 * when their subscription is confirmed again. */
void bus_link_changed(struct bus *b, int up);

/* From the engine: the room's subscription was lost on its own (on a
 * cluster, its slot moved to another shard): like bus_link_changed(b, 0)
 * for this room alone. */
void bus_unsubscribed(struct bus *b, const char *room);

/* From the engine: a delivery could not be read (its seal was of another
 * secret): every subscribed room with local members fills its gap from
 * history now. */
void bus_fill_gaps(struct bus *b);

/* Calls fn(room key, local members, arg) for every room with local
 * members. */
void bus_each_room_count(struct bus *b, void (*fn)(const char *room, unsigned long members, void *arg), void *arg);

/* The rooms reply of tenant ("" for none): every room of cluster (room
 * name -> count, of that tenant; may be NULL: the local counts then stand
 * for the cluster) or with local members in the tenant, sorted, as JSON
 * text with room names. malloc'ed; NULL when out of memory. */
struct map;
char *bus_rooms_format(struct bus *b, const struct map *cluster, const char *tenant);

/* True while the bus and the store can serve (for /readyz). Any thread. */
int bus_ready(struct bus *b);

/* From the engine: a link went up or down; bus_ready follows. */
void bus_ready_changed(struct bus *b);

/* Creates the bus on loop (the main thread's) with engine and store
 * (taken: destroyed with the bus, or at once when this fails; NULL stands
 * for a store that could not be made). Counts into metrics, which
 * outlives the bus. NULL when out of memory or when the engine cannot
 * start. */
struct bus *bus_create(uv_loop_t *loop, const struct config *cfg, const struct bus_hooks *hooks,
                       struct metrics_bus *metrics, const struct bus_engine *engine, struct store *store);

/* Stops the bus once the workers have stopped: disconnects the engine and
 * the store; their last callbacks run on the loop after this returns. */
void bus_stop(struct bus *b);

/* Frees the bus after its loop has ended. */
void bus_free(struct bus *b);

/* From a worker: hands req to the bus (ownership passes). Any thread. */
void bus_submit(struct bus *b, struct bus_request *req);

/* Whether requests wait for the bus thread. Any thread. */
int bus_busy(struct bus *b);

/* From the engine: delivers ev to every worker with local interest.
 * Takes the caller's reference. */
void bus_deliver(struct bus *b, struct event *ev);

/* From the engine or the store: req is done; sends it back to its worker. */
void bus_reply(struct bus *b, struct bus_request *req);

#endif
