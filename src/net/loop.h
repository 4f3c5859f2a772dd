/* loop.h - what one worker's event loop does for its connections: the list
 * of them, the epoll set that watches their sockets, the dirty list and
 * the flusher that writes a slice of them per loop turn, the ticker that
 * runs heartbeats and timeouts, and the scratch buffers every read and
 * writev of the loop shares. Knows nothing of
 * what the connections carry. One thread: the loop's. */
#ifndef WSFAN_LOOP_H
#define WSFAN_LOOP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/config.h"
#include "metrics/metrics.h"
#include "net/tls.h"

#define NET_IOV_MAX 1024
#define NET_READ_BUF (64 * 1024)

struct conn;
struct frame;

struct net_loop {
    uv_loop_t *uv;
    int index;                   /* the worker's number, in session ids and logs */
    const struct config *cfg;
    struct metrics_worker *metrics;
    void *data;                  /* the owner's */
    /* Whether another thread waits for this core (the bus): the flusher
     * yields between slices when it does. NULL: never. */
    int (*busy)(void *arg);
    void *busy_arg;
    /* The connections' sockets are in an epoll set of the loop's own (one
     * uv_poll_t on it), each event carrying its struct conn: a libuv
     * handle per connection would cost more than the rest of it. */
    int epfd;
    uv_poll_t io;
    uv_prepare_t flusher;        /* flushes a slice of dirty connections per loop turn */
    uv_idle_t flush_more;        /* active while dirty connections remain */
    uv_timer_t ticker;           /* heartbeats, handshake and linger timeouts */
    struct conn *conns;          /* every connection of this loop (list head) */
    struct conn *dirty;          /* connections with output to flush, oldest first */
    struct conn *dirty_tail;
    uint64_t next_seq;
    struct frame *ping;          /* the one ping frame every connection shares */
    struct frame *pong;          /* and the one answer to an empty ping */
    struct frame *keepalive;     /* and the one keep-alive comment of every stream */
    struct tls_ctx *tls;         /* new connections speak TLS with it; NULL: plaintext.
                                    The owner's (a reload swaps it), sessions hold their own */
    uv_buf_t iov[NET_IOV_MAX];   /* scratch for one writev */
    char read_buf[NET_READ_BUF]; /* reads are parsed before the next one */
    char tls_gather[TLS_RECORD_MAX]; /* small queued frames gathered into one TLS record */
};

/* Opens the epoll set and starts the flusher and the ticker on uv.
 * Returns 0 or a uv error. */
int net_loop_init(struct net_loop *l, uv_loop_t *uv, int index, const struct config *cfg,
                  struct metrics_worker *metrics);

/* Closes the loop's handles (their callbacks run on uv). */
void net_loop_close(struct net_loop *l);

/* Marks c to be flushed by the flusher. */
void net_loop_mark_dirty(struct net_loop *l, struct conn *c);

/* Starts closing up to n of the connections still open with code (oldest
 * last: the newest go first), for a shutdown; returns how many it began to
 * close. n = SIZE_MAX closes every one. */
size_t net_loop_close_some(struct net_loop *l, size_t n, uint16_t code, const char *reason);

/* The connections not closing yet. */
size_t net_loop_open_count(const struct net_loop *l);

/* Drops every connection now (a shutdown's grace time is over). */
void net_loop_drop_all(struct net_loop *l);

/* Runs the ticks of every connection now. */
void net_loop_tick(struct net_loop *l);

#endif
