/* bus.h - the way every message travels: workers submit requests (join,
 * leave, publish, history, presence, user online/offline) to the bus, which
 * runs on the main thread's loop; the bus engine publishes, and every event
 * comes back through bus_deliver() to the inboxes of the workers with local
 * interest, in one order for all of them. Replies go back to the asking
 * worker through the same inbox, so a join's replay always comes before the
 * live messages after it.
 * Engines: memory (bus_memory.c: the workers of this process) and Redis
 * (between nodes). The bus tracks local interest in rooms and users and
 * tells the engine when it starts and ends; it also keeps presence. */
#ifndef WSFAN_BUS_H
#define WSFAN_BUS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "inbox.h"
#include "names.h"
#include "protocol.h"
#include "store.h"

struct presence;

struct server;
struct conn;

enum bus_target { BUS_ROOM, BUS_USER, BUS_ALL };

/* A client event ready to send, shared read-only by the workers that
 * deliver it; the last one to finish frees it. */
struct bus_event {
    atomic_uint refs;
    enum bus_target target;
    char name[NAME_MAX_LEN + 1];  /* room or user; empty for all */
    int skip_worker;              /* echo:false: the publisher's worker, or -1 */
    uint64_t skip_seq;            /* and its connection */
    int has_offset;               /* a persisted room message */
    struct offset offset;
    size_t len;
    char json[];
};

/* Makes an event of json (copied) with one reference. NULL when out of memory. */
struct bus_event *bus_event_create(enum bus_target target, const char *name, const char *json, size_t len);
void bus_event_unref(struct bus_event *ev);

/* BUS_REJOIN: a join of a room whose first join is still on its way; it is
 * answered after that one, so the client sees its replies in order. */
enum bus_op { BUS_JOIN, BUS_LEAVE, BUS_PUBLISH, BUS_HISTORY, BUS_PRESENCE, BUS_ONLINE, BUS_OFFLINE, BUS_ROOMS, BUS_REJOIN };

struct bus;

/* One request from a worker, and its reply on the way back. */
struct bus_request {
    struct task task;
    struct bus *bus;
    struct bus_request *next_waiting; /* joins waiting for a subscription */
    task_fn on_reply;       /* runs on the origin worker; NULL: the bus frees req */
    enum bus_op op;
    struct conn *conn;      /* origin (a reference is held); never touched by the bus */
    int worker;             /* origin worker index */
    uint64_t conn_seq;
    char ref[REF_TEXT_MAX]; /* the command's ref as JSON text, or "" */
    char room[NAME_MAX_LEN + 1];
    char user[NAME_MAX_LEN + 1];  /* the connection's user, or "" when anonymous */
    /* publish */
    enum bus_target target;
    char to[NAME_MAX_LEN + 1];    /* the user of a send */
    int ephemeral;
    int echo;
    char *data;                   /* JSON text (owned) */
    size_t data_len;
    /* join */
    int has_since;
    /* join, history and publish go through the store; results land here */
    struct store_call store;
    /* results */
    const char *error;            /* NULL or an error code of PROTOCOL.md */
    char *users;                  /* presence: JSON array text (owned) */
    char *rooms;                  /* rooms: [{"room":..,"local":N,"cluster":N}] (owned) */
};

/* An engine: how messages leave this process and come back. Every
 * function runs on the bus thread. */
struct bus_engine {
    const char *name;
    /* Creates the engine's state (bus_engine_data) and connects. */
    int (*start)(struct bus *b);
    /* Disconnects and frees the state; the loop can then end. */
    void (*stop)(struct bus *b);
    /* True while publishing and subscribing work. */
    int (*ready)(struct bus *b);
    /* Publishes a room message (persisted through the store unless
     * ephemeral), a direct message or a broadcast. Delivery comes back
     * through bus_deliver(); the engine answers with bus_reply() after
     * setting req->error or req->store.offset. */
    void (*publish)(struct bus *b, struct bus_request *req);
    /* This process gained its first local interest in a room or user
     * (on = 1) or lost its last (on = 0). The engine calls
     * bus_subscribed() once events of a room are sure to arrive. */
    void (*interest)(struct bus *b, enum bus_target target, const char *name, int on);
    /* This process now has `count` connections of user in room (it had
     * `before`). The engine makes presence_join/presence_leave happen. */
    void (*presence)(struct bus *b, const char *room, const char *user, unsigned long before, unsigned long count);
    /* Fills req->users with the room's users across the cluster. */
    void (*presence_list)(struct bus *b, struct bus_request *req);
    /* Fills req->rooms (bus_rooms_format) with member counts. */
    void (*rooms)(struct bus *b, struct bus_request *req);
};

extern const struct bus_engine bus_memory_engine;
extern const struct bus_engine bus_redis_engine;

/* For engines: the bus's store, presence counts, server and engine state. */
struct store *bus_store(struct bus *b);
struct presence *bus_presence(struct bus *b);
struct server *bus_server(struct bus *b);
void *bus_engine_data(struct bus *b);
void bus_set_engine_data(struct bus *b, void *data);

/* From the engine: events of the room are sure to arrive from now on
 * (the subscription is confirmed). */
void bus_subscribed(struct bus *b, const char *room);

/* From the engine: the link that brings events went down (up = 0) or came
 * back (up = 1). While down, rooms are marked to be filled from history
 * when their subscription is confirmed again. */
void bus_link_changed(struct bus *b, int up);

/* Calls fn(room, local members, arg) for every room with local members. */
void bus_each_room_count(struct bus *b, void (*fn)(const char *room, unsigned long members, void *arg), void *arg);

/* The rooms reply: every room of cluster (room -> count, may be NULL:
 * the local counts then stand for the cluster) or with local members,
 * sorted, as JSON text. malloc'ed; NULL when out of memory. */
struct map;
char *bus_rooms_format(struct bus *b, const struct map *cluster);

/* Calls fn for every room with local members. */
void bus_each_room(struct bus *b, void (*fn)(const char *room, void *arg), void *arg);

/* True while the bus and the store can serve (for /readyz). Any thread. */
int bus_ready(struct bus *b);

/* From the engine: a link went up or down; bus_ready follows. */
void bus_ready_changed(struct bus *b);

/* Creates the bus on the server's main loop: the Redis engine and store
 * when --redis is set, else the memory ones. */
struct bus *bus_create(struct server *s);

/* Stops the bus once the workers have stopped: disconnects the engine and
 * the store; their last callbacks run on the loop after this returns. */
void bus_stop(struct bus *b);

/* Frees the bus after its loop has ended. */
void bus_free(struct bus *b);

/* Allocates a zeroed request. NULL when out of memory. */
struct bus_request *bus_request_create(enum bus_op op);
void bus_request_free(struct bus_request *req);

/* From a worker: hands req to the bus (ownership passes). */
void bus_submit(struct bus *b, struct bus_request *req);

/* Whether requests wait for the bus thread. Any thread. */
int bus_busy(struct bus *b);

/* From the bus's engine: delivers ev to every worker with local interest.
 * Takes the caller's reference. */
void bus_deliver(struct bus *b, struct bus_event *ev);

/* From the engine or the store: req is done; sends it back to its worker. */
void bus_reply(struct bus *b, struct bus_request *req);

#endif
