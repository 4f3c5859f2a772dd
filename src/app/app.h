/* app.h - what the application layer of one worker shares: its settings,
 * its loop of connections, its hub, the bus, the counters it writes and the
 * metrics view it exports; and the struct call that carries one bus request
 * of a client (a WebSocket command or an HTTP API request) until its reply
 * comes back. Filled in by the server; worker thread only. */
#ifndef WSFAN_APP_H
#define WSFAN_APP_H

#include <stdatomic.h>
#include <stdint.h>

#include "cluster/bus.h"
#include "codec/command.h"
#include "core/config.h"
#include "metrics/metrics.h"
#include "net/loop.h"

struct addr_count;
struct deflate_streams;
struct hub;
struct client;
struct token_key;

struct app {
    const struct config *cfg;
    struct net_loop *net;         /* net->data points back here */
    struct hub *hub;
    struct deflate_streams *deflate; /* permessage-deflate's zlib streams, for all its connections */
    struct bus *bus;
    atomic_int *connections;      /* the process's connections on the public port, for --max-connections */
    struct addr_count *per_ip;    /* the process's connections per client address */
    atomic_int *draining;         /* set when a shutdown began: /readyz fails from then on */
    const struct metrics_view *metrics;
    const struct token_key *token_key; /* --auth jwt: the key tokens are verified with; else NULL */
};

/* One bus request of a client with what its answer needs. The request
 * comes first, as the bus wants (bus.h); the bus never reads past it. */
struct call {
    union {
        struct bus_request base;
        struct bus_join join;
        struct bus_leave leave;
        struct bus_publish publish;
        struct bus_history history;
        struct bus_presence presence;
        struct bus_rooms rooms;
    } req;
    struct client *client;   /* holds a reference on the client's conn */
    uint32_t seq;            /* the client's count of its calls, for reply order */
    struct call *next_parked;
    struct call *flight_prev, *flight_next; /* the client's calls not back yet, oldest first */
    uint64_t sent_ms;        /* loop time it went to the bus, for --request-timeout */
    uint8_t expired;         /* answered unavailable already; its reply is only freed */
    char ref[REF_TEXT_MAX];  /* the command's ref as JSON text, or "" */
};

/* A zeroed call of op for c, answered by on_reply on c's worker; takes a
 * reference on c. NULL when out of memory. */
struct call *call_create(struct client *c, enum bus_op op, task_fn on_reply);

/* Ends a call that came back: drops its reference and frees it. */
void call_done(struct call *call);

/* Hands a zeroed request of op (no reply wanted) from worker to the bus;
 * size is that of op's struct. NULL when out of memory. */
struct bus_request *app_request(size_t size, enum bus_op op, int worker);

#endif
