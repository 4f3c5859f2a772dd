/* conn.c - one client socket: accept, reads handed to the phase's handler
 * or through the WebSocket parser, input that waits while the connection
 * is paused, the output queue of shared frames (gathered into one writev
 * per flush, or over TLS into records of the engine, net/tls.c) and the
 * memory it may hold, heartbeats, the linger after a close, and the one
 * close path. Runs on its loop only. Counts what it sees in the loop's
 * metrics. See conn.h. */
#include "net/conn.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "codec/http.h"
#include "codec/sse.h"
#include "core/clock.h"
#include "core/log.h"
#include "net/loop.h"
#include "net/tls.h"

#define CLOSE_LINGER_MS 5000
/* Plaintext encrypted per flush of one TLS connection: four full records,
 * then the next connection's turn. */
#define TLS_FLUSH_MAX (4 * TLS_RECORD_MAX)

/* ---- output queue ------------------------------------------------------ */

static void outq_init(struct outq *q)
{
    memset(q, 0, sizeof *q);
    q->items = q->inline_items;
    q->cap = OUTQ_INLINE;
}

static struct frame *outq_at(const struct outq *q, uint32_t i)
{
    return q->items[(q->head + i) & (q->cap - 1)];
}

/* Appends f with a new reference. Returns 0, or -1 when out of memory.
 * m counts the worker's queued bytes, here and below. */
static int outq_push(struct outq *q, struct frame *f, struct metrics_worker *m)
{
    if (q->count == q->cap) {
        struct frame **items = malloc(sizeof *items * q->cap * 2);
        if (!items)
            return -1;
        for (uint32_t i = 0; i < q->count; i++)
            items[i] = outq_at(q, i);
        if (q->items != q->inline_items)
            free(q->items);
        q->items = items;
        q->head = 0;
        q->cap *= 2;
    }
    q->items[(q->head + q->count) & (q->cap - 1)] = frame_ref(f);
    q->count++;
    q->bytes += f->len;
    metrics_queued(m, f->len);
    return 0;
}

/* Forgets the first n bytes of the queue: they were written. */
static void outq_consume(struct outq *q, size_t n, struct metrics_worker *m)
{
    metrics_queued(m, -(int64_t)n);
    while (n) {
        struct frame *f = q->items[q->head];
        size_t left = f->len - q->head_offset;
        if (n < left) {
            q->head_offset += (uint32_t)n;
            q->bytes -= n;
            return;
        }
        n -= left;
        q->bytes -= left;
        frame_unref(f);
        q->head = (q->head + 1) & (q->cap - 1);
        q->count--;
        q->head_offset = 0;
    }
}

/* Drops every frame after the first keep ones. */
static void outq_truncate(struct outq *q, uint32_t keep, struct metrics_worker *m)
{
    size_t before = q->bytes;
    while (q->count > keep) {
        struct frame *f = outq_at(q, q->count - 1);
        q->bytes -= f->len - (q->count == 1 ? q->head_offset : 0);
        frame_unref(f);
        q->count--;
    }
    if (q->count == 0)
        q->head_offset = 0;
    metrics_queued(m, -(int64_t)(before - q->bytes));
}

/* Returns a drained heap ring to the inline slots, so that idle
 * connections hold no buffer. Called from the ticker, not per message. */
static void outq_shrink(struct outq *q)
{
    if (q->count == 0 && q->items != q->inline_items) {
        free(q->items);
        outq_init(q);
    }
}

/* Fills iov from the queue; returns the count and sets *bytes. */
static unsigned outq_iov(const struct outq *q, uv_buf_t *iov, unsigned max, size_t *bytes)
{
    unsigned n = q->count < max ? q->count : max;
    uint32_t mask = q->cap - 1;
    size_t total = 0;
    for (unsigned i = 0; i < n; i++) {
        struct frame *f = q->items[(q->head + i) & mask];
        iov[i].base = (char *)f->bytes;
        iov[i].len = f->len;
        total += f->len;
    }
    if (n) {
        iov[0].base += q->head_offset;
        iov[0].len -= q->head_offset;
        total -= q->head_offset;
    }
    *bytes = total;
    return n;
}

/* One writev of iov; returns the bytes written, 0 when the socket is full,
 * or a negative uv error. uv_buf_t is laid out as struct iovec on Unix. */
static ssize_t write_now(struct conn *c, uv_buf_t *iov, unsigned n)
{
    ssize_t r;
    do
        r = writev(c->fd, (const struct iovec *)iov, (int)n);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : uv_translate_sys_error(errno);
    return r;
}

/* ---- lifetime ---------------------------------------------------------- */

static void conn_free(struct conn *c)
{
    struct net_loop *l = c->loop;
    if (c->prev)
        c->prev->next = c->next;
    else
        l->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    outq_truncate(&c->out, 0, l->metrics);
    outq_shrink(&c->out);
    ws_parser_free(&c->parser);
    free(c->held);
    tls_destroy(c->tls);
    c->handler->on_free(c);
}

void conn_unref(struct conn *c)
{
    if (--c->refs == 0)
        conn_free(c);
}

/* Tells the application, once, that c is no longer usable. */
static void tell_closed(struct conn *c)
{
    if (c->close_told)
        return;
    c->close_told = 1;
    if (c->handler->on_close)
        c->handler->on_close(c);
}

/* A WebSocket or a stream ends with code (counted). */
static void count_closed(struct conn *c, uint16_t code)
{
    if (c->state == CONN_STREAM)
        metrics_stream_closed(c->loop->metrics);
    if (c->state == CONN_WS || c->state == CONN_STREAM)
        metrics_conn_closed(c->loop->metrics, code);
}

void conn_drop(struct conn *c)
{
    if (c->closed)
        return;
    if (!c->close_code)
        c->close_code = WS_CLOSE_ABNORMAL;
    count_closed(c, WS_CLOSE_ABNORMAL);
    c->closed = 1;
    tell_closed(c);
    close(c->fd); /* which takes it out of the epoll set */
    c->fd = -1;
    /* The loop's reference goes to the dirty list: the flusher frees c
     * after this turn's events, which may still name it. */
    net_loop_mark_dirty(c->loop, c);
    conn_unref(c);
}

/* ---- writing ----------------------------------------------------------- */

/* Sets the events the epoll set watches c's socket for: input unless
 * reading is off, and writability while the socket is full. */
static void watch(struct conn *c)
{
    uint8_t events = (uint8_t)((c->read_off ? 0 : EPOLLIN) | (c->want_write ? EPOLLOUT : 0));
    if (c->closed || events == c->polled)
        return;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(c->loop->epfd, EPOLL_CTL_MOD, c->fd, &ev)) {
        log_warn("conn %d.%llu: epoll_ctl: %s", c->loop->index, (unsigned long long)c->seq, strerror(errno));
        conn_drop(c);
        return;
    }
    c->polled = events;
}

/* The socket was full (on): nothing is written until the epoll set says
 * it is writable again, as the kernel wakes writers only once a good
 * share of the buffer is free. Off: it has taken everything. */
static void want_write(struct conn *c, int on)
{
    c->want_write = on != 0;
    watch(c);
}

/* Once a closing connection's last bytes are out, half-close so the peer
 * sees the end; the socket is closed when the peer closes or lingers out. */
static int output_pending(const struct conn *c)
{
    return c->out.count || (c->tls && tls_out_pending(c->tls));
}

static void shutdown_if_drained(struct conn *c)
{
    if (c->state != CONN_CLOSING || c->shutdown_sent || output_pending(c) || c->closed)
        return;
    c->shutdown_sent = 1;
    if (shutdown(c->fd, SHUT_WR))
        conn_drop(c);
}

static void output_drained(struct conn *c);

/* n bytes went to the socket: counted. Then they leave the ciphertext
 * waiting over TLS, or the queue on plain TCP. */
static void wrote(struct conn *c, size_t n)
{
    metrics_bytes_out(c->loop->metrics, n);
    c->bytes_out += n;
    if (!c->tls) {
        outq_consume(&c->out, n, c->loop->metrics);
        return;
    }
    tls_out_consume(c->tls, n);
}

/* After a write: the rest on the next flush, or the half-close once all is
 * out; and input that waited for the output may go on. */
static void after_write(struct conn *c)
{
    if (output_pending(c))
        net_loop_mark_dirty(c->loop, c);
    else
        shutdown_if_drained(c);
    if (c->paused & CONN_PAUSED_BY_OUTPUT)
        output_drained(c);
}

/* A write failed: the peer is gone. */
static void write_failed(struct conn *c, ssize_t r)
{
    log_debug("conn %d.%llu: write: %s", c->loop->index, (unsigned long long)c->seq, uv_strerror((int)r));
    conn_drop(c);
}

static void flush_now(struct conn *c)
{
    struct outq *q = &c->out;
    if (c->closed || c->want_write)
        return;
    if (q->count == 0) {
        want_write(c, 0);
        shutdown_if_drained(c);
        return;
    }
    uv_buf_t *iov = c->loop->iov;
    size_t bytes;
    unsigned n = outq_iov(q, iov, NET_IOV_MAX, &bytes);
    ssize_t r = write_now(c, iov, n);
    if (r < 0) {
        write_failed(c, r);
        return;
    }
    if (r > 0)
        wrote(c, (size_t)r);
    if (q->count) {
        /* What the socket did not take waits in the queue until the
         * socket is writable (conn_ready); more than one writev's worth
         * goes on in the next slice. */
        if ((size_t)r < bytes)
            want_write(c, 1);
        else
            net_loop_mark_dirty(c->loop, c);
        return;
    }
    want_write(c, 0);
    shutdown_if_drained(c);
}

/* ---- TLS --------------------------------------------------------------- */

/* Encrypts up to TLS_FLUSH_MAX bytes of the queue once the handshake is
 * done. Small frames are gathered into one record's worth of plaintext
 * per tls_write, so that a fan-out of many small messages costs a record
 * per 16k, not one per message; a frame of a record or more is encrypted
 * where it is, without the copy. Returns 0, or -1 on an engine error. */
static int encrypt_queue(struct conn *c)
{
    struct outq *q = &c->out;
    size_t done = 0;
    while (q->count && done < TLS_FLUSH_MAX && tls_handshake_done(c->tls)) {
        struct frame *first = outq_at(q, 0);
        const void *plain = first->bytes + q->head_offset;
        size_t len = first->len - q->head_offset;
        if (len < TLS_RECORD_MAX) {
            char *gather = c->loop->tls_gather;
            len = 0;
            for (uint32_t i = 0; i < q->count && len < TLS_RECORD_MAX; i++) {
                struct frame *f = outq_at(q, i);
                size_t offset = i ? 0 : q->head_offset;
                size_t take = f->len - offset < TLS_RECORD_MAX - len ? f->len - offset : TLS_RECORD_MAX - len;
                memcpy(gather + len, f->bytes + offset, take);
                len += take;
            }
            plain = gather;
        }
        if (tls_write(c->tls, plain, len) != (ssize_t)len)
            return -1;
        outq_consume(q, len, c->loop->metrics);
        done += len;
    }
    /* A closing connection's last record is the close_notify alert. */
    if (c->state == CONN_CLOSING && !q->count)
        tls_close_notify(c->tls);
    return 0;
}

/* The TLS flush: a share of the queue through the engine, then its
 * ciphertext (and what the handshake left) in one write; what the socket
 * does not take waits for it to be writable, as plaintext does. */
static void flush_tls(struct conn *c)
{
    if (c->closed || c->want_write)
        return;
    if (!tls_out_pending(c->tls) && encrypt_queue(c)) {
        conn_drop(c);
        return;
    }
    size_t len;
    const char *out = tls_out_peek(c->tls, &len);
    if (!out) {
        want_write(c, 0);
        shutdown_if_drained(c);
        return;
    }
    uv_buf_t buf = uv_buf_init((char *)out, (unsigned)(len > UINT_MAX ? UINT_MAX : len));
    ssize_t r = write_now(c, &buf, 1);
    if (r < 0) {
        write_failed(c, r);
        return;
    }
    wrote(c, (size_t)r);
    if (tls_out_pending(c->tls)) {
        want_write(c, 1); /* the socket is full */
        return;
    }
    /* More of the queue: the next slice encrypts it. */
    after_write(c);
}

/* A handshake that could not complete: counted, logged with why, and the
 * engine's alert (if any) sent on a best-effort basis before the drop. */
static void tls_failed(struct conn *c, enum metrics_tls_failure why, const char *detail)
{
    metrics_tls_failure(c->loop->metrics, why);
    log_debug("conn %d.%llu: TLS handshake failed: %s", c->loop->index, (unsigned long long)c->seq, detail);
    size_t len;
    const char *alert = tls_out_peek(c->tls, &len);
    uv_buf_t buf = uv_buf_init((char *)alert, (unsigned)len);
    if (alert)
        write_now(c, &buf, 1);
    conn_drop(c);
}

/* A plain HTTP request on the TLS port (a method's capital letter where a
 * TLS record starts with 0x16): answered in plain text, then closed. */
static void refuse_plaintext(struct conn *c)
{
    static const char body[] = "this port speaks TLS only: use https:// or wss://\n";
    metrics_tls_failure(c->loop->metrics, METRICS_TLS_PLAINTEXT_HTTP);
    tls_destroy(c->tls);
    c->tls = NULL;
    struct frame *f = http_response_create(400, "text/plain", NULL, body, sizeof body - 1, 0);
    if (!f) {
        conn_drop(c);
        return;
    }
    conn_enqueue(c, f);
    frame_unref(f);
    conn_close(c, 0, NULL);
}

/* Ciphertext read from the socket: the handshake advances, and the
 * plaintext goes to the phase as if it had been read. */
static void read_tls(struct conn *c, const char *buf, size_t len)
{
    if (c->bytes_in == len && buf[0] >= 'A' && buf[0] <= 'Z') {
        refuse_plaintext(c);
        return;
    }
    int was_done = tls_handshake_done(c->tls);
    if (tls_feed(c->tls, buf, len)) {
        conn_drop(c);
        return;
    }
    conn_ref(c);
    /* Fed (copied) already: the read buffer takes the plaintext. */
    char *plain = c->loop->read_buf;
    for (;;) {
        ssize_t n = tls_read(c->tls, plain, NET_READ_BUF);
        if (n > 0) {
            if (!was_done) {
                was_done = 1;
                metrics_tls_handshake(c->loop->metrics);
            }
            conn_receive(c, plain, (size_t)n);
            if (c->closed)
                break;
            continue;
        }
        if (n == TLS_WANT) {
            if (!was_done && tls_handshake_done(c->tls))
                metrics_tls_handshake(c->loop->metrics);
            /* Handshake records to answer, or frames that waited for it. */
            if (output_pending(c))
                net_loop_mark_dirty(c->loop, c);
        } else if (!was_done)
            tls_failed(c, n == TLS_CLOSED ? METRICS_TLS_CLOSED : METRICS_TLS_ERROR,
                       n == TLS_CLOSED ? "closed by the peer" : tls_error(c->tls));
        else
            conn_drop(c); /* close_notify or a broken record: the end, as EOF is */
        break;
    }
    conn_unref(c);
}

void conn_flush(struct conn *c)
{
    if (c->tls)
        flush_tls(c);
    else
        flush_now(c);
    if (c->paused & CONN_PAUSED_BY_OUTPUT)
        output_drained(c);
}

/* The queue passed --send-queue-limit: keep what is already on its way,
 * drop the rest, and close with 1013. Others never wait for this one. */
static void conn_overflow(struct conn *c)
{
    struct outq *q = &c->out;
    uint32_t keep = q->head_offset ? 1 : 0;
    outq_truncate(q, keep, c->loop->metrics);
    metrics_slow_reader(c->loop->metrics);
    log_info("conn %d.%llu: send queue over %zu bytes, closing with 1013", c->loop->index,
             (unsigned long long)c->seq, c->loop->cfg->send_queue_limit);
    conn_close(c, WS_CLOSE_TRY_AGAIN, "send queue over limit");
}

static void read_off(struct conn *c);
static void read_on(struct conn *c);

void conn_enqueue(struct conn *c, struct frame *f)
{
    if (c->state == CONN_CLOSING || c->closed)
        return;
    size_t limit = c->loop->cfg->send_queue_limit;
    if (outq_cost(&c->out) + conn_frame_cost(f) > limit && c->state != CONN_HTTP) {
        conn_overflow(c);
        return;
    }
    if (outq_push(&c->out, f, c->loop->metrics)) {
        conn_drop(c);
        return;
    }
    net_loop_mark_dirty(c->loop, c);
    if (c->state == CONN_HTTP && outq_cost(&c->out) > limit) {
        /* Stop reading, as nginx and h2o do: answers to pipelined requests
         * wait in the socket's buffers, not here. output_drained reads on. */
        c->paused |= CONN_PAUSED_BY_OUTPUT;
        read_off(c);
    }
}

void conn_send_text(struct conn *c, const char *json, size_t len)
{
    struct frame *f = c->state == CONN_STREAM ? sse_frame_create(json, len) : ws_frame_create(WS_OP_TEXT, json, len);
    if (!f) {
        conn_drop(c);
        return;
    }
    metrics_reply_out(c->loop->metrics);
    conn_enqueue(c, f);
    frame_unref(f);
}

void conn_close(struct conn *c, uint16_t code, const char *reason)
{
    if (c->state == CONN_CLOSING || c->closed)
        return;
    c->close_code = code;
    c->close_reason = reason;
    count_closed(c, code);
    if (c->state == CONN_WS) {
        struct frame *f = ws_close_frame_create(code, reason);
        int failed = !f || outq_push(&c->out, f, c->loop->metrics);
        if (f)
            frame_unref(f);
        if (failed) {
            conn_drop(c);
            return;
        }
    }
    c->state = CONN_CLOSING;
    c->closing_ms = (uint32_t)uv_now(c->loop->uv);
    tell_closed(c);
    net_loop_mark_dirty(c->loop, c);
    /* Input is dropped from now on, but read: the peer's end ends the
     * linger. */
    c->paused = 0;
    free(c->held);
    c->held = NULL;
    c->held_len = 0;
    read_on(c);
}

/* Leaves the HTTP phase for state (CONN_WS or CONN_STREAM) with handler. */
static void conn_enter(struct conn *c, const struct conn_handler *handler, enum conn_state state)
{
    c->handler = handler;
    c->state = state;
    /* From here the send queue's limit closes with 1013 instead. The
     * response head itself may have paused the input (answers queued
     * before it). */
    if (c->paused & CONN_PAUSED_BY_OUTPUT) {
        c->paused &= (uint8_t)~CONN_PAUSED_BY_OUTPUT;
        if (!c->paused)
            read_on(c);
    }
    metrics_conn_opened(c->loop->metrics);
    c->last_ping_ms = (uint32_t)uv_now(c->loop->uv);
}

void conn_upgrade(struct conn *c, const struct conn_handler *handler, size_t max_message)
{
    conn_enter(c, handler, CONN_WS);
    ws_parser_init(&c->parser, max_message);
}

void conn_stream(struct conn *c, const struct conn_handler *handler)
{
    conn_enter(c, handler, CONN_STREAM);
    metrics_stream_opened(c->loop->metrics);
}

/* ---- reading ----------------------------------------------------------- */

/* Stops and starts reading the socket; the flag knows which it is doing. */
static void read_off(struct conn *c)
{
    if (c->closed || c->read_off)
        return;
    c->read_off = 1;
    watch(c);
}

static void read_on(struct conn *c)
{
    if (c->closed || !c->read_off)
        return;
    c->read_off = 0;
    watch(c);
}

static const char *close_reason(uint16_t code)
{
    switch (code) {
    case WS_CLOSE_UNSUPPORTED: return "binary frames are not accepted";
    case WS_CLOSE_BAD_DATA: return "invalid UTF-8";
    case WS_CLOSE_TOO_BIG: return "message too large";
    default: return "protocol error";
    }
}

/* Frames from buf, until the parser wants more or the connection stops
 * taking them (closing, paused). Returns the bytes used. */
static size_t read_ws(struct conn *c, const uint8_t *buf, size_t len)
{
    size_t total = len;
    /* Runs until the parser wants more, so that a final call with nothing
     * left releases the buffer of the message just delivered. */
    while (c->state == CONN_WS && !c->paused) {
        size_t used;
        struct ws_event ev;
        uint16_t code;
        int r = ws_parser_feed(&c->parser, buf, len, &used, &ev, &code);
        buf += used;
        len -= used;
        if (r == WS_PARSE_ERROR) {
            conn_close(c, code, close_reason(code));
            break;
        }
        if (r == WS_PARSE_NEED_MORE)
            break;
        switch (ev.type) {
        case WS_EV_TEXT:
            c->handler->on_text(c, (const char *)ev.data, ev.len);
            break;
        case WS_EV_PING: {
            /* Most pings are empty: their pong is the loop's shared one. */
            struct frame *f = ev.len ? ws_frame_create(WS_OP_PONG, ev.data, ev.len) : frame_ref(c->loop->pong);
            if (!f) {
                conn_drop(c);
                return total;
            }
            conn_enqueue(c, f);
            frame_unref(f);
            break;
        }
        case WS_EV_PONG:
            break;
        case WS_EV_CLOSE:
            /* Echo the peer's code; an empty close is answered empty. */
            conn_close(c, ev.close_code, "");
            return total;
        }
    }
    return total - len;
}

/* Keeps bytes for when the connection resumes. */
static void hold(struct conn *c, const char *buf, size_t len)
{
    char *held = len <= UINT32_MAX - c->held_len ? realloc(c->held, c->held_len + len) : NULL;
    if (!held) {
        conn_drop(c);
        return;
    }
    memcpy(held + c->held_len, buf, len);
    c->held = held;
    c->held_len += (uint32_t)len;
}

/* Hands buf to the phase the connection is in, phase after phase (the
 * bytes after an upgrade request are frames), until it is all used,
 * dropped (closing) or kept (paused). */
static void feed(struct conn *c, const char *buf, size_t len)
{
    /* A stream's client has nothing to say after its request: dropped. */
    while (len && !c->closed && c->state != CONN_CLOSING && c->state != CONN_STREAM) {
        if (c->paused) {
            hold(c, buf, len);
            return;
        }
        enum conn_state phase = c->state;
        size_t used = phase == CONN_HTTP ? c->handler->on_bytes(c, buf, len)
                                         : read_ws(c, (const uint8_t *)buf, len);
        if (used > len)
            used = len;
        buf += used;
        len -= used;
        /* A handler that used nothing, still in its phase and not paused,
         * would be fed the same bytes forever. */
        if (!used && c->state == phase && !c->paused)
            return;
    }
}

void conn_receive(struct conn *c, const char *buf, size_t len)
{
    conn_ref(c);
    feed(c, buf, len);
    conn_unref(c);
}

void conn_pause(struct conn *c)
{
    c->paused |= CONN_PAUSED_BY_APP;
    read_off(c);
}

/* Once nothing holds the input back: the bytes kept meanwhile first, then
 * the socket again. */
static void input_go(struct conn *c)
{
    if (c->paused || c->closed)
        return;
    conn_ref(c);
    if (c->held) {
        /* feed may keep part of it again. */
        char *held = c->held;
        size_t len = c->held_len;
        c->held = NULL;
        c->held_len = 0;
        feed(c, held, len);
        free(held);
    }
    if (!c->paused)
        read_on(c);
    conn_unref(c);
}

void conn_resume(struct conn *c)
{
    c->paused &= (uint8_t)~CONN_PAUSED_BY_APP;
    input_go(c);
}

/* After a write on a connection paused by its output: input goes on once
 * the queue is down to half the limit (not at once, so that it does not
 * stop and go with every answer). */
static void output_drained(struct conn *c)
{
    if (outq_cost(&c->out) > c->loop->cfg->send_queue_limit / 2)
        return;
    c->paused &= (uint8_t)~CONN_PAUSED_BY_OUTPUT;
    input_go(c);
}

/* One read of the socket into the loop's buffer (every read is parsed,
 * and copied where it is kept, before the next one), handed to the phase;
 * the end of the input or an error drops the connection. */
static void read_socket(struct conn *c)
{
    char *buf = c->loop->read_buf;
    ssize_t nread;
    do
        nread = read(c->fd, buf, NET_READ_BUF);
    while (nread < 0 && errno == EINTR);
    if (nread < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return;
    if (nread <= 0) {
        if (c->tls && !tls_handshake_done(c->tls) && c->bytes_in)
            tls_failed(c, METRICS_TLS_CLOSED, "closed by the peer");
        conn_drop(c);
        return;
    }
    c->last_rx_ms = (uint32_t)uv_now(c->loop->uv);
    metrics_bytes_in(c->loop->metrics, (size_t)nread);
    c->bytes_in += (size_t)nread;
    if (c->tls)
        read_tls(c, buf, (size_t)nread);
    else
        conn_receive(c, buf, (size_t)nread);
}

void conn_ready(struct conn *c, uint32_t events)
{
    if (c->closed)
        return;
    if (events & EPOLLOUT) {
        /* Writable: the flush goes on (and stops watching for this once
         * the queue is out). */
        c->want_write = 0;
        net_loop_mark_dirty(c->loop, c);
    }
    if (!c->read_off && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        read_socket(c); /* which sees the end or the error */
    else if (events & (EPOLLHUP | EPOLLERR))
        conn_drop(c);   /* gone while its input waits: nothing more will come */
}

void conn_id(const struct conn *c, char out[CONN_ID_MAX])
{
    snprintf(out, CONN_ID_MAX, "%d.%llu", c->loop->index, (unsigned long long)c->seq);
}

/* Links c into l; its socket is set up by the caller. */
static void conn_init(struct net_loop *l, struct conn *c)
{
    c->loop = l;
    c->refs = 1;
    c->state = CONN_HTTP;
    outq_init(&c->out);
    c->next = l->conns;
    if (l->conns)
        l->conns->prev = c;
    l->conns = c;
    c->seq = ++l->next_seq;
    c->opened_ms = uv_now(l->uv);
    c->last_rx_ms = (uint32_t)c->opened_ms;
}

int conn_open(struct net_loop *l, int fd, struct conn *c)
{
    conn_init(l, c);
    c->fd = fd; /* with TCP_NODELAY from its listener */
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    const char *failed = NULL;
    if (l->tls && !(c->tls = tls_create(l->tls, NULL)))
        failed = "out of memory";
    else if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev))
        failed = strerror(errno);
    if (failed) {
        log_warn("worker %d: accept: %s", l->index, failed);
        conn_drop(c);
        return -1;
    }
    c->polled = EPOLLIN;
    return 0;
}

/* ---- timers ------------------------------------------------------------ */

void conn_tick(struct conn *c, uint64_t now_ms)
{
    if (c->closed)
        return;
    const struct config *cfg = c->loop->cfg;
    /* A TLS handshake has the time of a request head, from the accept. */
    if (c->tls && !tls_handshake_done(c->tls) && now_ms - c->opened_ms >= (uint64_t)cfg->handshake_timeout * 1000) {
        tls_failed(c, METRICS_TLS_TIMEOUT, "not done within --handshake-timeout");
        return;
    }
    switch (c->state) {
    case CONN_HTTP:
        break;
    case CONN_WS:
        if (clock_ms32_since(now_ms, c->last_rx_ms) >= (uint64_t)cfg->heartbeat * 2000) {
            log_debug("conn %d.%llu: silent for two heartbeats, dropped", c->loop->index,
                      (unsigned long long)c->seq);
            conn_drop(c);
        } else if (clock_ms32_since(now_ms, c->last_ping_ms) >= (uint64_t)cfg->heartbeat * 1000) {
            c->last_ping_ms = (uint32_t)now_ms;
            conn_enqueue(c, c->loop->ping);
        }
        break;
    case CONN_STREAM:
        /* Nothing is read from a stream's client, so silence says nothing;
         * a gone peer shows as a write error or a full send queue. */
        if (clock_ms32_since(now_ms, c->last_ping_ms) >= (uint64_t)cfg->heartbeat * 1000) {
            c->last_ping_ms = (uint32_t)now_ms;
            conn_enqueue(c, c->loop->keepalive);
        }
        break;
    case CONN_CLOSING:
        if (clock_ms32_since(now_ms, c->closing_ms) >= CLOSE_LINGER_MS)
            conn_drop(c);
        break;
    }
    if (conn_is_open(c) && c->handler->on_tick)
        c->handler->on_tick(c, now_ms);
    if (!c->closed)
        outq_shrink(&c->out);
    if (!c->closed && c->tls)
        tls_idle_tick(c->tls);
}
