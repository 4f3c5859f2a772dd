/* metrics.h - counters for operators: one struct per worker, written only by
 * its worker with plain (relaxed) stores, and one for the bus thread; readers
 * on any thread sum them with relaxed atomic loads, so the hot path takes no
 * lock and no atomic read-modify-write. Also the message rate of the busiest
 * rooms (top METRICS_TOP_ROOMS only) and the two exports built from all of
 * it: the Prometheus text exposition (GET /metrics) and the JSON of
 * GET /api/stats. The exports read a struct metrics_view that the server
 * fills in; this module knows no worker, bus or server. Does not decide
 * what is counted where: callers do. */
#ifndef WSFAN_METRICS_H
#define WSFAN_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/map.h"
#include "core/names.h"

#define METRICS_TOP_ROOMS 10
#define METRICS_RATE_WINDOW_MS 5000
#define METRICS_ROOMS_TRACKED 10000 /* distinct rooms counted per window */

/* A counter with one writer: a plain load and store, no locked add. */
typedef _Atomic uint64_t metrics_counter;

static inline void metrics_add(metrics_counter *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n, memory_order_relaxed);
}

/* Close codes counted one by one; any other lands in the last slot. */
enum {
    METRICS_CLOSE_1000, METRICS_CLOSE_1001, METRICS_CLOSE_1002, METRICS_CLOSE_1003,
    METRICS_CLOSE_1005, METRICS_CLOSE_1006, METRICS_CLOSE_1007, METRICS_CLOSE_1008, METRICS_CLOSE_1009,
    METRICS_CLOSE_1011, METRICS_CLOSE_1013, METRICS_CLOSE_OTHER, METRICS_CLOSE_COUNT,
};

/* Kinds of client messages in: the caller numbers them from 0 and names
 * them in the view (the command types, then invalid ones). */
#define METRICS_IN_MAX 16

/* Why a connection was refused before it was served. */
enum metrics_refused {
    METRICS_REFUSED_FD_LIMIT,        /* accept failed: out of file descriptors */
    METRICS_REFUSED_MAX_CONNECTIONS, /* 503: --max-connections */
    METRICS_REFUSED_PER_IP,          /* 429: --max-connections-per-ip */
    METRICS_REFUSED_ORIGIN,          /* 403: an Origin not allowed */
    METRICS_REFUSED_COUNT,
};

/* Why a TLS handshake did not complete. */
enum metrics_tls_failure {
    METRICS_TLS_ERROR,          /* refused: version, ciphers, a certificate the client distrusts, garbage */
    METRICS_TLS_TIMEOUT,        /* not done within --handshake-timeout */
    METRICS_TLS_PLAINTEXT_HTTP, /* a plain HTTP request: answered 400 */
    METRICS_TLS_CLOSED,         /* the peer left in the middle */
    METRICS_TLS_FAILURE_COUNT,
};

/* Kinds of messages out: fan-out to a room, a user or everyone, and the
 * replies to one connection's own commands. */
enum metrics_out { METRICS_OUT_ROOM, METRICS_OUT_USER, METRICS_OUT_ALL, METRICS_OUT_REPLY, METRICS_OUT_COUNT };

/* One worker's counters; embedded in struct worker, zeroed at start. */
struct metrics_worker {
    metrics_counter opened, closed[METRICS_CLOSE_COUNT];
    metrics_counter streams_opened, streams_closed; /* the server-sent event streams among them */
    metrics_counter http_requests;
    metrics_counter in[METRICS_IN_MAX], out[METRICS_OUT_COUNT];
    metrics_counter fanout_events[3], fanout_deliveries;
    metrics_counter bytes_in, bytes_out;
    metrics_counter queued_bytes;   /* a gauge: added to and taken from */
    metrics_counter slow_readers;
    metrics_counter refused[METRICS_REFUSED_COUNT];
    metrics_counter rate_limited;   /* commands refused by --rate-limit */
    metrics_counter deflate_conns;  /* upgrades that negotiated permessage-deflate */
    metrics_counter deflate_frames, deflate_bytes_in, deflate_bytes_out; /* compressed shared frames */
    metrics_counter joins_local;    /* joins answered by the worker without the bus */
    metrics_counter tls_handshakes, tls_failures[METRICS_TLS_FAILURE_COUNT];
};

/* A room and its count over one window. */
struct metrics_room {
    char name[KEY_MAX_LEN + 1];  /* the room's key (core/names.h): "T/room" in tenant T */
    uint64_t count;
};

/* What the bus thread counts. Room events are counted into a table only
 * the bus thread touches; at the end of each window (metrics_bus_roll,
 * from the bus's timer) the busiest rooms are copied out under the lock,
 * which readers take to copy them again: no lock per message. */
struct metrics_bus {
    uint64_t started_ms;             /* wall clock at start, for uptime */
    metrics_counter reconnects, invalid_envelopes, store_errors, position_repairs;
    struct map counts;               /* bus thread: room -> (uintptr_t) count, this window */
    uint64_t window_total;           /* bus thread */
    uv_mutex_t lock;                 /* guards the last complete window below */
    uint64_t last_total;
    struct metrics_room last[METRICS_TOP_ROOMS];
    size_t nlast;
};

/* ---- the worker's hot path (its own struct only) ------------------------- */

static inline void metrics_conn_opened(struct metrics_worker *m) { metrics_add(&m->opened, 1); }
/* A WebSocket connection stopped being open: code is the close code it
 * sent or echoed, 1005 for a peer's empty close, 1006 when it ended without
 * a close handshake. */
void metrics_conn_closed(struct metrics_worker *m, uint16_t code);
/* The connection opened or closed above is a server-sent event stream. */
static inline void metrics_stream_opened(struct metrics_worker *m) { metrics_add(&m->streams_opened, 1); }
static inline void metrics_stream_closed(struct metrics_worker *m) { metrics_add(&m->streams_closed, 1); }
static inline void metrics_http_request(struct metrics_worker *m) { metrics_add(&m->http_requests, 1); }
static inline void metrics_bytes_in(struct metrics_worker *m, size_t n) { metrics_add(&m->bytes_in, n); }
static inline void metrics_bytes_out(struct metrics_worker *m, size_t n) { metrics_add(&m->bytes_out, n); }
static inline void metrics_reply_out(struct metrics_worker *m) { metrics_add(&m->out[METRICS_OUT_REPLY], 1); }
/* Bytes joined (delta > 0) or left (delta < 0) the worker's send queues. */
static inline void metrics_queued(struct metrics_worker *m, int64_t delta) { metrics_add(&m->queued_bytes, (uint64_t)delta); }
static inline void metrics_slow_reader(struct metrics_worker *m) { metrics_add(&m->slow_readers, 1); }
static inline void metrics_refused(struct metrics_worker *m, enum metrics_refused why, unsigned n)
{
    metrics_add(&m->refused[why], n);
}
static inline void metrics_rate_limited(struct metrics_worker *m) { metrics_add(&m->rate_limited, 1); }
static inline void metrics_join_local(struct metrics_worker *m) { metrics_add(&m->joins_local, 1); }

/* An upgrade negotiated permessage-deflate. */
static inline void metrics_deflate_conn(struct metrics_worker *m) { metrics_add(&m->deflate_conns, 1); }
/* One shared frame compressed: text bytes in, frame bytes out. */
static inline void metrics_deflated(struct metrics_worker *m, size_t in, size_t out)
{
    metrics_add(&m->deflate_frames, 1);
    metrics_add(&m->deflate_bytes_in, in);
    metrics_add(&m->deflate_bytes_out, out);
}
static inline void metrics_tls_handshake(struct metrics_worker *m) { metrics_add(&m->tls_handshakes, 1); }
static inline void metrics_tls_failure(struct metrics_worker *m, enum metrics_tls_failure why)
{
    metrics_add(&m->tls_failures[why], 1);
}

/* One client message of kind (below METRICS_IN_MAX, named in the view). */
static inline void metrics_message_in(struct metrics_worker *m, int kind) { metrics_add(&m->in[kind], 1); }

/* One event fanned out by the worker's hub to recipients connections. */
static inline void metrics_fanout(struct metrics_worker *m, enum metrics_out target, uint32_t recipients)
{
    metrics_add(&m->fanout_events[target], 1);
    metrics_add(&m->fanout_deliveries, recipients);
    metrics_add(&m->out[target], recipients);
}

/* ---- the bus thread --------------------------------------------------------- */

/* Initializes mb (embedded); returns 0 or a uv error. */
int metrics_bus_init(struct metrics_bus *mb);
void metrics_bus_close(struct metrics_bus *mb);

static inline void metrics_bus_reconnect(struct metrics_bus *mb) { metrics_add(&mb->reconnects, 1); }
static inline void metrics_invalid_envelope(struct metrics_bus *mb) { metrics_add(&mb->invalid_envelopes, 1); }
static inline void metrics_store_error(struct metrics_bus *mb) { metrics_add(&mb->store_errors, 1); }
/* A room whose deliveries fell behind its history was filled from it. */
static inline void metrics_position_repair(struct metrics_bus *mb) { metrics_add(&mb->position_repairs, 1); }

/* One message reached room (for the busiest rooms' rates). Bus thread. */
void metrics_room_event(struct metrics_bus *mb, const char *room);

/* Ends the window (every METRICS_RATE_WINDOW_MS, from the bus thread):
 * its busiest rooms become the last complete window. */
void metrics_bus_roll(struct metrics_bus *mb);

/* The last complete window: the busiest rooms, busiest first, into top
 * (METRICS_TOP_ROOMS long), and all the room events in *total. Returns
 * how many rooms were written. Any thread. */
size_t metrics_busiest_rooms(struct metrics_bus *mb, struct metrics_room *top, uint64_t *total);

/* ---- exports (any thread) ------------------------------------------------- */

/* What the exports read, filled in by the server once at start. */
struct metrics_view {
    const char *node_id;
    const char *engine;                  /* "memory" or "redis" */
    int nworkers;
    struct metrics_worker *const *workers;
    struct metrics_bus *bus;
    const char *const *in_kinds;         /* names of the kinds of messages in */
    int n_in_kinds;                      /* at most METRICS_IN_MAX */
    int (*ready)(void *arg);             /* the bus and the store can serve */
    void *ready_arg;
};

/* The Prometheus text exposition (format 0.0.4) of the whole process.
 * malloc'ed, *len set; NULL when out of memory. */
char *metrics_prometheus(const struct metrics_view *v, size_t *len);

/* The JSON of GET /api/stats: per-worker load, totals, the busiest rooms'
 * rates and the bus state. malloc'ed, *len set; NULL when out of memory. */
char *metrics_stats_json(const struct metrics_view *v, size_t *len);

#endif
