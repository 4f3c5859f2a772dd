/* hub.h - one worker's local index: room -> connections, user ->
 * connections, tenant -> connections, and (through the worker's list) all
 * connections; and the fan-out of one bus event to the local recipients
 * with one shared frame (one per framing: WebSocket, server-sent events).
 * Rooms and users are keys (core/names.h), so a
 * tenant's never meet another's; a tenant's connections are indexed under
 * "T/" beside the users, for its broadcasts.
 * Owns the index entries only; client.c owns the clients. Runs on the
 * owning worker's loop and is never shared between threads. Does not talk
 * to the bus or check permissions. */
#ifndef WSFAN_HUB_H
#define WSFAN_HUB_H

#include <stddef.h>
#include <stdint.h>

#include "codec/event.h"

struct client;
struct net_loop;
struct hub_room;

/* One room of one connection (its state: hub.c). */
struct hub_membership {
    struct hub_room *room;
    uint32_t slot;  /* index in the room's members (JOINED) or fresh (FRESH) */
    uint32_t state;
};

/* What a client carries for the hub; embedded in struct client. */
struct hub_conn {
    /* The rooms it joined or asked to: most clients have one, kept
     * inline; from the second on, a heap array of rooms_cap (0: inline). */
    union {
        struct hub_membership one;
        struct hub_membership *many;
    } rooms;
    uint32_t nrooms, rooms_cap;
    uint32_t user_slot;    /* index in the user's array, when the conn has a user */
    uint32_t tenant_slot;  /* index in the tenant's array, when the conn has a tenant */
};

struct hub;

/* The hub of the worker whose connections are on net (its number is
 * net->index, for echo:false). NULL when out of memory. */
struct hub *hub_create(struct net_loop *net);
void hub_destroy(struct hub *h);

enum { HUB_OK = 0, HUB_ALREADY = 1, HUB_NOT_MEMBER = 2, HUB_NOMEM = -1 };

/* Rooms below are the keys of c's tenant's rooms (name_key(client_tenant(c), ..)).
 * c asks to join room: a pending membership. Returns HUB_OK, HUB_ALREADY
 * (pending or joined) or HUB_NOMEM. */
int hub_room_add(struct hub *h, struct client *c, const char *room);

/* The join of room by c completed: c gets the room's events from now on,
 * except persisted ones at or below *after (its replay already had them);
 * after may be NULL. Returns HUB_OK, HUB_NOT_MEMBER when c left meanwhile,
 * or HUB_NOMEM. */
int hub_room_activate(struct hub *h, struct client *c, const char *room, const struct offset *after);

/* Whether this worker can answer a join of room (a key) without the bus:
 * it has a member in it whose join completed, so the room's events reach
 * the worker in order from some offset on, and it knows the newest of them
 * (*top, from a join's reply or a delivery). A join that starts at *top
 * misses nothing: every later message is still on its way here. Returns 1
 * and sets *top, or 0. */
int hub_room_top(const struct hub *h, const char *room, struct offset *top);

/* c leaves room (pending or joined). Returns HUB_OK or HUB_NOT_MEMBER. */
int hub_room_remove(struct hub *h, struct client *c, const char *room);

/* True when c has joined room or asked to. */
int hub_is_member(const struct client *c, const char *room);

/* True when c asked to join room and the join has not completed yet. */
int hub_is_pending(const struct client *c, const char *room);

/* Number of rooms c has joined or asked to. */
uint32_t hub_room_count(const struct client *c);

/* Calls fn for each of c's rooms, then removes them all. */
void hub_conn_leave_all(struct hub *h, struct client *c, void (*fn)(struct client *c, const char *room));

/* The same for the rooms that keep(c, room) refuses; keep NULL keeps none.
 * fn sees each room (its key) before it is removed. */
void hub_conn_leave_some(struct hub *h, struct client *c, int (*keep)(struct client *c, const char *room),
                         void (*fn)(struct client *c, const char *room));

/* Indexes c under its user's key (c->user must be set). Returns HUB_OK or
 * HUB_NOMEM. */
int hub_user_add(struct hub *h, struct client *c);
void hub_user_remove(struct hub *h, struct client *c);

/* Indexes c under its tenant (client_tenant(c) must not be empty), for the
 * tenant's broadcasts. Returns HUB_OK or HUB_NOMEM. */
int hub_tenant_add(struct hub *h, struct client *c);
void hub_tenant_remove(struct hub *h, struct client *c);

/* Local connections of the room (a key), joined ones only (for tests and
 * stats). */
uint32_t hub_room_members(const struct hub *h, const char *room);

/* Delivers ev to every local recipient (a broadcast without a tenant: the
 * connections without one): encodes one frame for all of them (and one
 * SSE event for all the streams among them) and queues a
 * reference to it on each; no per-recipient allocation, copy or JSON work.
 * Counts into the loop's metrics. A disconnect (EVENT_DISCONNECT) closes
 * the user's connections, streams included, with 1008 instead. */
void hub_deliver(struct hub *h, const struct event *ev);

#endif
