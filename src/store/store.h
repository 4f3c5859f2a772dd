/* store.h - room history behind one interface, with a memory engine
 * (store_memory.c: a ring per room) and a Redis Streams engine. Offsets are
 * "<ms>-<seq>" in both, increasing in publish order within a room. Runs on
 * the bus thread; calls finish through call->done, possibly before the
 * engine function returns. */
#ifndef WSFAN_STORE_H
#define WSFAN_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "codec/envelope.h"
#include "codec/event.h"
#include "codec/offset.h"
#include "core/error.h"

/* Events of a replay or a history page: count event texts, each ending in
 * '\n' (event JSON never holds a raw newline). */
struct store_batch {
    char *text;              /* malloc'ed, or NULL when empty */
    size_t len;
    size_t count;
    struct offset *offsets;  /* offsets[i] is the offset of event i */
};

/* Appends one event with its offset to b. Returns 0 or -1 when out of
 * memory. */
int store_batch_add(struct store_batch *b, const char *event, size_t len, struct offset offset);
void store_batch_free(struct store_batch *b);

/* Turns the batch into the inside of a JSON array ("ev,ev,ev", no
 * brackets), in place; returns that text ("" for an empty batch) and sets
 * *len. The batch can only be freed afterwards. */
const char *store_batch_join(struct store_batch *b, size_t *len);

/* One operation on the store. The caller owns the call and its strings
 * until done() runs; the results belong to the caller after it. */
struct store_call {
    const char *room;  /* the room's key (core/names.h): each tenant's rooms are its own */
    /* append */
    const char *from;  /* NULL when published by a service */
    const char *data;  /* JSON text */
    size_t data_len;
    uint64_t ts;
    /* append, Redis only: the envelope to publish on channel around the new
     * offset, in the same atomic step when the store shares the bus's Redis */
    const char *channel;
    const struct envelope_parts *envelope;
    const struct envelope_seal *seal;  /* seals the envelope (codec/envelope.h) */
    int published;                   /* result: the store published it */
    /* append: the publish's idempotency key (docs/protocol.md section 2),
     * NULL for none. A key already used in the room within
     * --idempotency-window stores nothing: offset is the first publish's,
     * duplicate is set, nothing is published and event stays NULL. */
    const char *key;
    size_t key_len;
    int duplicate;
    /* recover (join since) */
    struct offset since;
    /* history */
    int limit;
    int has_before;
    struct offset before;
    /* results */
    int error;                       /* 0, or a WSFAN_E* of core/error.h */
    char offset[OFFSET_MAX_LEN];     /* append: the new offset; recover: the latest */
    int recovered;
    struct store_batch batch;        /* recover: missed events; history: the page */
    struct event *event;             /* append, memory engine: the message event with
                                        its offset, one reference for the caller; the
                                        store keeps its own for history */
    void (*done)(struct store_call *call);
    void *engine;                    /* the engine's own, while the call runs */
};

struct store;
struct store_ops {
    /* Stores the message; sets offset, and event in the memory engine. */
    void (*append)(struct store *s, struct store_call *call);
    /* Sets offset to the room's latest, recovered, and the events after
     * since when the history reaches back that far. */
    void (*recover)(struct store *s, struct store_call *call);
    /* The last limit events before `before` (or the newest), oldest first. */
    void (*history)(struct store *s, struct store_call *call);
    /* The room's latest offset ("0-0" for a room without history). */
    void (*latest)(struct store *s, struct store_call *call);
    /* Starts disconnecting and frees the engine once its last callback
     * has run. */
    void (*destroy)(struct store *s);
    int (*ready)(struct store *s);
};

struct store {
    const struct store_ops *ops;
    /* Set by the owner: called when the store goes down or comes back. */
    void (*on_change)(void *arg);
    void *change_arg;
};

struct config;
struct uv_loop_s;

/* The Redis Streams engine on --store-redis (or --redis): its own
 * connection on loop. NULL when out of memory. */
struct store *store_redis_create(struct uv_loop_s *loop, const struct config *cfg);

struct redis_link;
/* The Redis store's connection, which presence shares. */
struct redis_link *store_redis_link(struct store *s);

/* The memory engine, on cfg's --history-length (0 disables history),
 * --history-ttl, --history-memory, --max-replay and --idempotency-window;
 * its sweep timer runs on loop. Offsets below origin are from before this
 * store existed (a previous process): a join since one of them is not
 * recovered. cfg is read here only. NULL when out of memory. */
struct store *store_memory_create(struct uv_loop_s *loop, const struct config *cfg, struct offset origin);

#endif
