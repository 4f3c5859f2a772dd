/* conn.h - one client socket from accept to close: reads, the WebSocket
 * framing after the upgrade (frames in, pings, pongs and the close
 * handshake) or the stream of server-sent events, the output queue of shared frames with its memory limit,
 * input flow control (no input is handled while the output is over the
 * limit or the application paused it), heartbeats, and the one close
 * path. Knows nothing of what the bytes mean: the application reaches it
 * through a struct conn_handler, set at accept (the HTTP phase) and again
 * at the upgrade (the WebSocket session), and embeds struct conn in a
 * struct of its own. Lives on its loop only. */
#ifndef WSFAN_CONN_H
#define WSFAN_CONN_H

#include <stdint.h>

#include "codec/ws.h"

struct conn;
struct tls;
struct net_loop;

enum conn_state {
    CONN_HTTP,     /* before the upgrade: bytes go to handler->on_bytes */
    CONN_WS,       /* upgraded: text messages go to handler->on_text */
    CONN_STREAM,   /* a response streamed until the close (server-sent
                      events): output only, input is read and dropped */
    CONN_CLOSING,  /* our last bytes are queued; input is read and dropped */
};

/* What the application does with a connection. Every function is called
 * on the connection's loop; c stays valid until the call returns. */
struct conn_handler {
    /* HTTP phase: bytes read from the socket (borrowed until return).
     * Returns how many it used: all of them, unless the connection paused
     * meanwhile (c->paused: conn_pause, or answers that filled the output
     * past --send-queue-limit) or left the HTTP phase (an upgrade: the
     * rest goes to the WebSocket parser; a close: the rest is dropped).
     * The connection keeps the bytes not used until it resumes. */
    size_t (*on_bytes)(struct conn *c, const char *buf, size_t len);
    /* HTTP and WebSocket phases: once per tick, for the application's
     * own deadlines (now_ms is the loop's time). May be NULL. */
    void (*on_tick)(struct conn *c, uint64_t now_ms);
    /* WebSocket phase: one complete, UTF-8-valid text message (borrowed). */
    void (*on_text)(struct conn *c, const char *text, size_t len);
    /* The connection stopped being usable (closing or dropped), in any
     * phase; called once. */
    void (*on_close)(struct conn *c);
    /* The last reference is gone: free the struct that embeds c. */
    void (*on_free)(struct conn *c);
};

/* A ring of frames waiting to be written. The first frame may be partly
 * written (head_offset bytes of it are gone). Small rings live inline so
 * that an idle connection allocates nothing. bytes is what is left to
 * write; what the queue holds in memory (outq_cost), which
 * --send-queue-limit bounds, follows from it and count. */
#define OUTQ_INLINE 2
struct outq {
    struct frame **items;
    uint32_t head, count, cap;
    uint32_t head_offset;
    size_t bytes;          /* unsent bytes in the queue */
    struct frame *inline_items[OUTQ_INLINE];
};

/* Why a connection's input waits (struct conn's paused). */
enum {
    CONN_PAUSED_BY_APP = 1,     /* conn_pause: an answer the application owes first */
    CONN_PAUSED_BY_OUTPUT = 2,  /* HTTP phase: the output is over --send-queue-limit */
};

/* The socket is watched by its loop's own epoll set (net/loop.h), not by
 * a libuv handle: a uv_tcp_t would be 248 bytes of every idle connection. */
struct conn {
    struct net_loop *loop;
    const struct conn_handler *handler;
    struct conn *prev, *next;   /* the loop's list of connections */
    struct conn *dirty_next;
    uint8_t state;              /* enum conn_state */
    /* Flags in bits: every idle connection carries them */
    uint8_t dirty : 1;
    uint8_t closed : 1;         /* the socket is closed; freed once unreferenced */
    uint8_t shutdown_sent : 1;
    uint8_t close_told : 1;     /* handler->on_close has run */
    uint8_t read_off : 1;       /* the socket's reading is stopped */
    uint8_t want_write : 1;     /* the socket was full: the flush goes on once it is writable */
    uint8_t paused;             /* CONN_PAUSED_*: input is not handled now */
    uint8_t polled;             /* the events the loop's epoll set watches for it */
    uint16_t close_code;        /* the first conn_close's code (the peer's when it began),
                                   1006 when dropped without one; 0 while open */
    uint32_t refs;              /* the loop's own plus one per pending reply */
    int fd;                     /* the socket */
    uint64_t seq;               /* unique on its loop */
    uint64_t opened_ms;         /* when it was accepted */
    /* Loop times, low 32 bits (clock_ms32_since) */
    uint32_t closing_ms;        /* when the close began */
    uint32_t last_rx_ms, last_ping_ms;
    uint32_t held_len;          /* bytes in held (at most one read's) */
    uint64_t bytes_in, bytes_out; /* read from and written to the socket */
    const char *close_reason;   /* the first conn_close's reason: a literal, or NULL */
    struct ws_parser parser;
    struct outq out;
    char *held;                 /* input read but not handled yet, while paused (owned) */
    struct tls *tls;            /* the TLS session, with the ciphertext not written yet; NULL: plaintext */
};

/* Opens c on fd, a connected, non-blocking stream socket (one the
 * listener accepted, or a socketpair in the tests), which c owns from then on; over TLS when
 * the loop has a context (l->tls): the handshake runs before the first
 * bytes reach the handler, and the queue is encrypted as it is flushed. The caller
 * allocated c zeroed (embedded in its own struct) with handler set; from
 * then on c is freed through handler->on_free. Returns 0, or -1 when the
 * socket could not be set up (c was dropped and will be freed). */
int conn_open(struct net_loop *l, int fd, struct conn *c);

/* Switches c to the WebSocket phase with handler; frames of at most
 * max_message bytes. The caller has queued the 101 answer. */
void conn_upgrade(struct conn *c, const struct conn_handler *handler, size_t max_message);

/* Switches c to the streaming phase with handler: the caller has queued a
 * response head without a length, and the frames queued from now on are
 * its body (conn_send_text writes server-sent events). The send queue's
 * limit closes, as on a WebSocket, and a keep-alive comment goes out every
 * --heartbeat seconds. */
void conn_stream(struct conn *c, const struct conn_handler *handler);

/* Hands bytes to the current phase, as if they had just been read (kept
 * for later while the connection is paused). */
void conn_receive(struct conn *c, const char *buf, size_t len);

/* Stops handing input to the application until conn_resume (HTTP: while
 * an answer waits for the bus): the socket is not read, and bytes read
 * already wait in the connection. The handler stops using bytes too. */
void conn_pause(struct conn *c);

/* Ends conn_pause. The bytes kept meanwhile are handed over first (now,
 * from this call), then the socket is read again, unless the output
 * still holds the input back. A closing connection reads (and drops)
 * input again in any case. */
void conn_resume(struct conn *c);

/* What a queued frame costs in memory besides its bytes: its header, the
 * allocator's word and, on average, half of its 16-byte rounding (glibc on
 * 64-bit), and two ring slots (the ring grows by doubling). A 2-byte pong
 * really takes 48; counted 42, within 15%. */
#define CONN_FRAME_OVERHEAD (sizeof(struct frame) + 8 + 8 + 2 * sizeof(struct frame *))

/* What frame f costs in memory while it is queued. A shared frame counts
 * in full on every connection that holds it: any of them may be the one
 * that keeps it alive. */
static inline size_t conn_frame_cost(const struct frame *f) { return f->len + CONN_FRAME_OVERHEAD; }

/* What the frames of q hold in memory: their bytes left to write and the
 * overhead of each (a partly written frame counts its rest only). Kept
 * from the counts the queue has anyway, so that the hot path pays one
 * multiply-add for it, not an update per frame. */
static inline size_t outq_cost(const struct outq *q) { return q->bytes + q->count * CONN_FRAME_OVERHEAD; }

/* Queues f for sending and marks the connection for the flush. Takes one
 * reference; the caller keeps its own. Dropped silently when the
 * connection is closing. On a WebSocket, a queue whose cost would pass
 * --send-queue-limit closes with 1013. In the HTTP phase the answer is
 * queued, and input waits until the queue has drained to half the limit:
 * pipelined requests cannot make a peer that does not read grow it. */
void conn_enqueue(struct conn *c, struct frame *f);

/* Queues text (copied) as the phase frames it: a WebSocket text frame, or
 * on a stream one server-sent event (codec/sse.h). */
void conn_send_text(struct conn *c, const char *text, size_t len);

/* Writes as much of the queue as the socket takes now; the rest waits
 * until the socket is writable again. Called by the loop's flusher. */
void conn_flush(struct conn *c);

/* The loop's epoll set reported events (EPOLLIN, EPOLLOUT, EPOLLHUP,
 * EPOLLERR) for c's socket. */
void conn_ready(struct conn *c, uint32_t events);

/* Starts the close handshake with code (WebSocket) or closes after the
 * queued response (HTTP, and a stream, for which code is only counted and
 * logged). Input is read and dropped until the peer closes or the linger
 * time passes. Safe to call more than once: the first call's code and
 * reason are kept (c->close_code, c->close_reason), so reason must live as
 * long as c (a literal). */
void conn_close(struct conn *c, uint16_t code, const char *reason);

/* Closes the socket now, without a close frame. c is freed by the loop's
 * next flush at the earliest, once nothing references it: a caller in the
 * middle of a batch of events may still look at it (c->closed). */
void conn_drop(struct conn *c);

/* Heartbeat and linger checks, and the handler's tick while the
 * connection is open (HTTP or WebSocket); called by the loop's ticker. */
void conn_tick(struct conn *c, uint64_t now_ms);

/* c's id, "<worker>.<seq>": the session of docs/protocol.md, and what log
 * lines name. */
#define CONN_ID_MAX 48
void conn_id(const struct conn *c, char out[CONN_ID_MAX]);

/* True while the connection can still send (not closing, not closed). */
static inline int conn_is_open(const struct conn *c) { return !c->closed && c->state != CONN_CLOSING; }

/* A pending reply holds a reference so that the conn outlives it. */
static inline void conn_ref(struct conn *c) { c->refs++; }
void conn_unref(struct conn *c);

#endif
