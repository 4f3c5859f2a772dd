/* server.h - the process: N worker threads, each with its own libuv loop and
 * its own SO_REUSEPORT listener, and the main thread whose loop handles
 * signals and shutdown. A worker owns its connections outright; threads meet
 * only through inboxes. */
#ifndef WSFAN_SERVER_H
#define WSFAN_SERVER_H

#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "inbox.h"
#include "metrics.h"

#define WORKER_IOV_MAX 1024
#define WORKER_READ_BUF (64 * 1024)

struct conn;
struct frame;
struct hub;
struct bus;

struct worker {
    struct server *server;
    int index;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_tcp_t listener;
    struct inbox inbox;
    uv_prepare_t flusher;   /* flushes a slice of dirty connections per loop turn */
    uv_idle_t flush_more;   /* active while dirty connections remain */
    uv_timer_t ticker;      /* heartbeats, handshake and linger timeouts */
    uv_timer_t stop_timer;  /* bounds a graceful shutdown */
    struct conn *conns;     /* every connection of this worker (list head) */
    struct conn *dirty;     /* connections with output to flush, oldest first */
    struct conn *dirty_tail;
    uint64_t next_seq;      /* for session ids "<worker>.<seq>" */
    int stopping;
    struct frame *ping;     /* the one ping frame every connection shares */
    struct hub *hub;
    struct metrics_worker metrics;   /* written by this worker only */
    uv_buf_t iov[WORKER_IOV_MAX];    /* scratch for one writev */
    char read_buf[WORKER_READ_BUF];  /* reads are parsed before the next one */
};

struct server {
    const struct config *cfg;
    uv_loop_t *loop;             /* the main thread's loop */
    struct worker *workers;
    int nworkers;
    atomic_int ws_connections;   /* upgraded connections, for --max-connections */
    uv_signal_t sigterm, sigint;
    int stopping;
    struct bus *bus;             /* runs on the main loop */
    struct metrics_bus metrics;  /* written by the bus thread */
    uv_async_t workers_done;     /* a worker has exited */
    atomic_int workers_exited;
};

/* Binds, starts the workers and runs until SIGTERM/SIGINT has shut every
 * connection down. Returns the process exit status. */
int server_run(const struct config *cfg);

/* Marks c to be flushed at the end of this loop turn. Worker thread only. */
void worker_mark_dirty(struct worker *w, struct conn *c);

#endif
