/* conn.h - one client connection from accept to close: the HTTP phase and
 * the upgrade, the WebSocket phase (frames in, commands to protocol), the
 * output queue of shared frames with its byte limit, heartbeats, and the one
 * close path. Lives on its worker's loop only. */
#ifndef WSFAN_CONN_H
#define WSFAN_CONN_H

#include <stdint.h>
#include <uv.h>

#include "hub.h"
#include "ws.h"

struct worker;
struct http_reader;

enum conn_state {
    CONN_HTTP,     /* reading request heads */
    CONN_WS,       /* upgraded */
    CONN_CLOSING,  /* our last bytes are queued; input is read and dropped */
};

/* A ring of frames waiting to be written. The first frame may be partly
 * written (head_offset bytes of it are gone). Small rings live inline so
 * that an idle connection allocates nothing. */
#define OUTQ_INLINE 4
struct outq {
    struct frame **items;
    uint32_t head, count, cap;
    uint32_t head_offset;
    uint32_t inflight;     /* items handed to a uv_write still running */
    size_t inflight_bytes; /* and their bytes */
    size_t bytes;          /* unsent bytes in the queue */
    struct frame *inline_items[OUTQ_INLINE];
};

/* A write to a full socket or the final half-close: never both at once
 * (the half-close waits for an empty queue), and rare, so allocated when
 * needed rather than carried by every idle connection. */
union conn_req {
    uv_write_t write;
    uv_shutdown_t shutdown;
};

struct conn {
    uv_tcp_t tcp;
    struct worker *worker;
    struct conn *prev, *next;   /* the worker's list of connections */
    struct conn *dirty_next;
    enum conn_state state;
    uint8_t dirty;
    uint8_t closed;             /* uv_close called; freed in its callback */
    uint8_t shutdown_sent;
    uint8_t counted;            /* holds a slot of --max-connections */
    uint8_t deferred;           /* HTTP: the request's answer comes later; reading waits */
    uint32_t refs;              /* the worker's own plus one per pending reply */
    uint32_t pending;           /* commands waiting for the bus */
    int fd;                     /* the socket, for the flush's writev */
    uint64_t seq;
    uint64_t phase_ms;           /* when the current request or the close began */
    uint64_t last_rx_ms, last_ping_ms;
    struct http_reader *http;   /* during CONN_HTTP only */
    char *held;                 /* HTTP: bytes read past a deferred request (owned) */
    size_t held_len;
    struct ws_parser parser;
    struct outq out;
    union conn_req *req;        /* the write or shutdown libuv is doing (slow path only) */
    char *user;                 /* NULL when anonymous */
    struct hub_conn hub;        /* this conn's rooms and user slot */
};

/* Accepts a new connection from the worker's listener. */
void conn_accept(struct worker *w, uv_stream_t *listener);

/* Queues f for sending and marks the connection for the end-of-turn flush.
 * Takes one reference; the caller keeps its own. Dropped silently when the
 * connection is closing. Past --send-queue-limit closes with 1013. */
void conn_enqueue(struct conn *c, struct frame *f);

/* Queues a text frame carrying the bytes of json (copied). */
void conn_send_text(struct conn *c, const char *json, size_t len);

/* Writes as much of the queue as the socket takes now; the rest waits for a
 * uv_write. Called by the worker's flusher, a slice of connections per turn. */
void conn_flush(struct conn *c);

/* HTTP phase: answers the request being handled with status, the extra
 * header lines (each ending in "\r\n", may be NULL) and body (copied; left
 * out for HEAD, Content-Length kept), then closes unless keep_alive. When
 * the answer was deferred, the next pipelined request is read now. */
void conn_respond(struct conn *c, int status, const char *content_type, const char *extra_headers,
                  const char *body, size_t len, int keep_alive);

/* The same with text and a newline as a text/plain body. */
void conn_respond_text(struct conn *c, int status, const char *extra_headers, const char *text, int keep_alive);

/* HTTP phase, from the router: the answer to the request being handled
 * comes later (from the bus). The request stays readable and no later
 * request is read until conn_respond() answers it, so that pipelined
 * requests are answered in order. The caller holds its own reference. */
void conn_defer(struct conn *c);

/* Starts the close handshake with code (WebSocket) or closes after the
 * queued response (HTTP). Input is read and dropped until the peer closes
 * or the linger time passes. Safe to call more than once. */
void conn_close(struct conn *c, uint16_t code, const char *reason);

/* Closes the socket now, without a close frame; frees when libuv is done. */
void conn_drop(struct conn *c);

/* Heartbeat, handshake timeout and linger checks; called by the worker's
 * ticker for each connection. */
void conn_tick(struct conn *c, uint64_t now_ms);

/* The session id "<worker>.<seq>" into buf (at least 32 bytes). */
void conn_session_id(const struct conn *c, char *buf, size_t cap);

/* A pending reply holds a reference so that the conn outlives it. */
static inline void conn_ref(struct conn *c) { c->refs++; }
void conn_unref(struct conn *c);

#endif
