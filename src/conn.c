/* conn.c - one client connection: accept, the HTTP phase and the upgrade,
 * WebSocket frames in, the output queue of shared frames out (gathered into
 * one writev per loop turn), heartbeats, timeouts and the one close path.
 * Runs on the owning worker's loop only. Commands go to protocol.c, HTTP
 * requests other than the upgrade to api.c. Counts what it sees in the
 * worker's metrics. */
#include "conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "api.h"
#include "http.h"
#include "log.h"
#include "names.h"
#include "protocol.h"
#include "server.h"

#define HTTP_MAX_HEAD 8192
#define CLOSE_LINGER_MS 5000

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
    struct worker *w = c->worker;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    outq_truncate(&c->out, 0, &w->metrics);
    outq_shrink(&c->out);
    ws_parser_free(&c->parser);
    http_reader_destroy(c->http);
    free(c->held);
    free(c->user);
    free(c);
}

void conn_unref(struct conn *c)
{
    if (--c->refs == 0)
        conn_free(c);
}

static void on_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

/* Gives back the --max-connections slot as soon as the conn starts
 * closing, not when the peer finally lets go. */
static void release_slot(struct conn *c)
{
    if (c->counted)
        atomic_fetch_sub(&c->worker->server->ws_connections, 1);
    c->counted = 0;
}

void conn_drop(struct conn *c)
{
    if (c->closed)
        return;
    if (c->state == CONN_WS) {
        protocol_conn_closed(c);
        metrics_conn_closed(&c->worker->metrics, WS_CLOSE_ABNORMAL);
    }
    c->closed = 1;
    release_slot(c);
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

void conn_session_id(const struct conn *c, char *buf, size_t cap)
{
    snprintf(buf, cap, "%d.%llu", c->worker->index, (unsigned long long)c->seq);
}

/* ---- writing ----------------------------------------------------------- */

/* The request for a write or shutdown; NULL when out of memory. */
static union conn_req *req_take(struct conn *c)
{
    if (!c->req && !(c->req = malloc(sizeof *c->req)))
        return NULL;
    conn_ref(c);
    return c->req;
}

/* The request is done: the conn gives it back and drops its reference. */
static void req_done(struct conn *c)
{
    free(c->req);
    c->req = NULL;
    conn_unref(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    req_done(req->data);
}

/* Once a closing connection's last bytes are out, half-close so the peer
 * sees the end; the socket is closed when the peer closes or lingers out. */
static void shutdown_if_drained(struct conn *c)
{
    if (c->state != CONN_CLOSING || c->shutdown_sent || c->out.count || c->closed)
        return;
    c->shutdown_sent = 1;
    union conn_req *req = req_take(c);
    if (!req) {
        conn_drop(c);
        return;
    }
    req->shutdown.data = c;
    if (uv_shutdown(&req->shutdown, (uv_stream_t *)&c->tcp, on_shutdown)) {
        req_done(c);
        conn_drop(c);
    }
}

static void on_write(uv_write_t *req, int status)
{
    struct conn *c = req->data;
    struct outq *q = &c->out;
    /* Free the request now: what follows may start the next one. */
    free(c->req);
    c->req = NULL;
    size_t written = q->inflight_bytes;
    q->inflight = 0;
    q->inflight_bytes = 0;
    if (status < 0) {
        if (status != UV_ECANCELED)
            log_debug("conn %d.%llu: write: %s", c->worker->index, (unsigned long long)c->seq, uv_strerror(status));
        conn_drop(c);
    } else {
        metrics_bytes_out(&c->worker->metrics, written);
        outq_consume(q, written, &c->worker->metrics);
        if (q->count)
            worker_mark_dirty(c->worker, c);
        else
            shutdown_if_drained(c);
    }
    conn_unref(c);
}

void conn_flush(struct conn *c)
{
    struct outq *q = &c->out;
    if (c->closed || q->inflight)
        return;
    if (q->count == 0) {
        shutdown_if_drained(c);
        return;
    }
    uv_buf_t *iov = c->worker->iov;
    size_t bytes;
    unsigned n = outq_iov(q, iov, WORKER_IOV_MAX, &bytes);
    ssize_t r = write_now(c, iov, n);
    if (r < 0) {
        conn_drop(c);
        return;
    }
    if (r > 0) {
        metrics_bytes_out(&c->worker->metrics, (size_t)r);
        outq_consume(q, (size_t)r, &c->worker->metrics);
    }
    if (q->count == 0) {
        shutdown_if_drained(c);
        return;
    }
    /* The socket is full: hand the rest to libuv, which writes it when the
     * socket drains. The frames stay referenced by the queue meanwhile. */
    union conn_req *req = req_take(c);
    if (!req) {
        conn_drop(c);
        return;
    }
    q->inflight = outq_iov(q, iov, WORKER_IOV_MAX, &q->inflight_bytes);
    req->write.data = c;
    r = uv_write(&req->write, (uv_stream_t *)&c->tcp, iov, q->inflight, on_write);
    if (r) {
        q->inflight = 0;
        q->inflight_bytes = 0;
        req_done(c);
        conn_drop(c);
    }
}

/* The queue passed --send-queue-limit: keep what is already on its way,
 * drop the rest, and close with 1013. Others never wait for this one. */
static void conn_overflow(struct conn *c)
{
    struct outq *q = &c->out;
    uint32_t keep = q->inflight ? q->inflight : (q->head_offset ? 1 : 0);
    outq_truncate(q, keep, &c->worker->metrics);
    metrics_slow_reader(&c->worker->metrics);
    log_info("conn %d.%llu: send queue over %zu bytes, closing with 1013", c->worker->index,
             (unsigned long long)c->seq, c->worker->server->cfg->send_queue_limit);
    conn_close(c, WS_CLOSE_TRY_AGAIN, "send queue over limit");
}

void conn_enqueue(struct conn *c, struct frame *f)
{
    if (c->state == CONN_CLOSING || c->closed)
        return;
    if (c->out.bytes + f->len > c->worker->server->cfg->send_queue_limit && c->state == CONN_WS) {
        conn_overflow(c);
        return;
    }
    if (outq_push(&c->out, f, &c->worker->metrics)) {
        conn_drop(c);
        return;
    }
    worker_mark_dirty(c->worker, c);
}

void conn_send_text(struct conn *c, const char *json, size_t len)
{
    struct frame *f = ws_frame_create(WS_OP_TEXT, json, len);
    if (!f) {
        conn_drop(c);
        return;
    }
    metrics_reply_out(&c->worker->metrics);
    conn_enqueue(c, f);
    frame_unref(f);
}

void conn_close(struct conn *c, uint16_t code, const char *reason)
{
    if (c->state == CONN_CLOSING || c->closed)
        return;
    if (c->state == CONN_WS) {
        protocol_conn_closed(c);
        metrics_conn_closed(&c->worker->metrics, code);
        struct frame *f = ws_close_frame_create(code, reason);
        if (!f || outq_push(&c->out, f, &c->worker->metrics)) {
            if (f)
                frame_unref(f);
            conn_drop(c);
            return;
        }
        frame_unref(f);
    }
    c->state = CONN_CLOSING;
    c->phase_ms = uv_now(&c->worker->loop);
    release_slot(c);
    worker_mark_dirty(c->worker, c);
}

/* ---- HTTP phase -------------------------------------------------------- */

static void conn_read_http(struct conn *c, const char *buf, size_t len);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

/* A deferred request was answered: read the socket again (a closing
 * connection too, to see the peer's end) and, while the connection stays
 * in HTTP, the requests held back meanwhile. */
static void http_resume(struct conn *c)
{
    char *held = c->held;
    size_t held_len = c->held_len;
    c->deferred = 0;
    c->held = NULL;
    c->held_len = 0;
    conn_ref(c);
    if (!c->closed && uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read)) {
        conn_drop(c);
    } else if (c->state == CONN_HTTP) {
        http_reader_reset(c->http);
        c->phase_ms = uv_now(&c->worker->loop);
        if (held_len)
            conn_read_http(c, held, held_len);
    }
    conn_unref(c);
    free(held);
}

void conn_respond(struct conn *c, int status, const char *content_type, const char *extra_headers,
                  const char *body, size_t len, int keep_alive)
{
    struct frame *f = http_response_create(status, content_type, extra_headers, body, len, keep_alive);
    if (!f) {
        conn_drop(c);
        return;
    }
    if (body && c->http && http_reader_request(c->http)->method == HTTP_HEAD) {
        /* HEAD: the same head, without the body (RFC 9110 9.3.2). */
        f->len -= (uint32_t)len;
    }
    conn_enqueue(c, f);
    frame_unref(f);
    if (!keep_alive)
        conn_close(c, 0, NULL);
    if (c->deferred)
        http_resume(c);
}

void conn_respond_text(struct conn *c, int status, const char *extra_headers, const char *text, int keep_alive)
{
    char body[256];
    int n = snprintf(body, sizeof body, "%s\n", text);
    conn_respond(c, status, "text/plain; charset=utf-8", extra_headers, body,
                 (size_t)n < sizeof body ? (size_t)n : sizeof body - 1, keep_alive);
}

void conn_defer(struct conn *c)
{
    c->deferred = 1;
}

/* The request just routed was deferred: keep the bytes after it and stop
 * reading until its answer is out (http_resume). */
static void http_hold(struct conn *c, const char *buf, size_t len)
{
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (len == 0)
        return;
    char *held = malloc(len);
    if (!held) {
        conn_drop(c);
        return;
    }
    memcpy(held, buf, len);
    c->held = held;
    c->held_len = len;
}

static void conn_upgrade(struct conn *c, const struct http_request *req)
{
    struct server *s = c->worker->server;
    const char *reason;
    int status = http_ws_check(req, &reason);
    if (status) {
        conn_respond_text(c, status, status == 426 ? "Sec-WebSocket-Version: 13\r\n" : NULL, reason, 0);
        return;
    }
    char user[NAME_MAX_LEN + 1];
    int user_len = http_query_get(req->query, "user", user, sizeof user);
    if (user_len == -2 || (user_len >= 0 && !name_valid(user, (size_t)user_len))) {
        conn_respond_text(c, 400, NULL, "user must be 1 to 128 characters of A-Z a-z 0-9 _ . : -", 0);
        return;
    }
    if (atomic_fetch_add(&s->ws_connections, 1) >= s->cfg->max_connections) {
        atomic_fetch_sub(&s->ws_connections, 1);
        conn_respond_text(c, 503, "Retry-After: 5\r\n", "server full", 0);
        return;
    }
    c->counted = 1;
    if (user_len > 0 && !(c->user = strdup(user))) {
        conn_drop(c);
        return;
    }

    char accept[29], headers[256];
    ws_accept_key(req->ws_key, strlen(req->ws_key), accept);
    snprintf(headers, sizeof headers,
             "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s", accept,
             http_header_has_token(req->ws_protocol, PROTOCOL_SUBPROTOCOL)
                 ? "Sec-WebSocket-Protocol: " PROTOCOL_SUBPROTOCOL "\r\n"
                 : "");
    struct frame *f = http_response_create(101, NULL, headers, NULL, 0, 1);
    if (!f) {
        conn_drop(c);
        return;
    }
    conn_enqueue(c, f);
    frame_unref(f);
    http_reader_destroy(c->http);
    c->http = NULL;
    c->state = CONN_WS;
    metrics_conn_opened(&c->worker->metrics);
    c->last_ping_ms = uv_now(&c->worker->loop);
    ws_parser_init(&c->parser, s->cfg->max_message);
    protocol_welcome(c);
}

static void conn_route(struct conn *c, const struct http_request *req)
{
    metrics_http_request(&c->worker->metrics);
    if (!strcmp(req->path, "/ws"))
        conn_upgrade(c, req);
    else
        api_route(c, req);
}

static void conn_read_ws(struct conn *c, const uint8_t *buf, size_t len);

static void conn_read_http(struct conn *c, const char *buf, size_t len)
{
    if (!c->http && !(c->http = http_reader_create(HTTP_MAX_HEAD, c->worker->server->cfg->max_message))) {
        conn_drop(c);
        return;
    }
    while (len && c->state == CONN_HTTP) {
        size_t used;
        int r = http_reader_feed(c->http, buf, len, &used);
        buf += used;
        len -= used;
        if (r == HTTP_READ_NEED_MORE)
            return;
        if (r < 0) {
            api_refuse(c, http_reader_request(c->http), -r);
            return;
        }
        conn_route(c, http_reader_request(c->http));
        if (c->deferred) {
            http_hold(c, buf, len);
            return;
        }
        if (c->state == CONN_HTTP) {
            http_reader_reset(c->http);
            c->phase_ms = uv_now(&c->worker->loop);
        }
    }
    if (c->state == CONN_WS && len)
        conn_read_ws(c, (const uint8_t *)buf, len);
}

/* ---- WebSocket phase --------------------------------------------------- */

static const char *close_reason(uint16_t code)
{
    switch (code) {
    case WS_CLOSE_UNSUPPORTED: return "binary frames are not accepted";
    case WS_CLOSE_BAD_DATA: return "invalid UTF-8";
    case WS_CLOSE_TOO_BIG: return "message too large";
    default: return "protocol error";
    }
}

static void conn_read_ws(struct conn *c, const uint8_t *buf, size_t len)
{
    /* Runs until the parser wants more, so that a final call with nothing
     * left releases the buffer of the message just delivered. */
    while (c->state == CONN_WS) {
        size_t used;
        struct ws_event ev;
        uint16_t code;
        int r = ws_parser_feed(&c->parser, buf, len, &used, &ev, &code);
        buf += used;
        len -= used;
        if (r == WS_PARSE_ERROR) {
            conn_close(c, code, close_reason(code));
            return;
        }
        if (r == WS_PARSE_NEED_MORE)
            return;
        switch (ev.type) {
        case WS_EV_TEXT:
            protocol_handle(c, (const char *)ev.data, ev.len);
            break;
        case WS_EV_PING: {
            struct frame *f = ws_frame_create(WS_OP_PONG, ev.data, ev.len);
            if (!f) {
                conn_drop(c);
                return;
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
            return;
        }
    }
}

/* ---- reading ----------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct conn *c = h->data;
    /* One buffer per worker: every read is parsed (and copied where it is
     * kept) before the next one. */
    *buf = uv_buf_init(c->worker->read_buf, WORKER_READ_BUF);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = stream->data;
    if (nread < 0) {
        conn_drop(c);
        return;
    }
    if (nread == 0)
        return;
    c->last_rx_ms = uv_now(&c->worker->loop);
    metrics_bytes_in(&c->worker->metrics, (size_t)nread);
    conn_ref(c);
    if (c->state == CONN_HTTP)
        conn_read_http(c, buf->base, (size_t)nread);
    else if (c->state == CONN_WS)
        conn_read_ws(c, (const uint8_t *)buf->base, (size_t)nread);
    conn_unref(c);
}

void conn_accept(struct worker *w, uv_stream_t *listener)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        log_error("worker %d: out of memory accepting a connection", w->index);
        return;
    }
    c->worker = w;
    c->refs = 1;
    c->tcp.data = c;
    outq_init(&c->out);
    uv_tcp_init(&w->loop, &c->tcp);
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    int r = uv_accept(listener, (uv_stream_t *)&c->tcp);
    if (r == 0)
        r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (r) {
        log_warn("worker %d: accept: %s", w->index, uv_strerror(r));
        conn_drop(c);
        return;
    }
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd)) {
        conn_drop(c);
        return;
    }
    c->fd = fd;
    uv_tcp_nodelay(&c->tcp, 1);
    c->seq = ++w->next_seq;
    c->state = CONN_HTTP;
    c->phase_ms = c->last_rx_ms = uv_now(&w->loop);
}

/* ---- timers ------------------------------------------------------------ */

void conn_tick(struct conn *c, uint64_t now_ms)
{
    if (c->closed)
        return;
    const struct config *cfg = c->worker->server->cfg;
    switch (c->state) {
    case CONN_HTTP:
        /* A deferred request waits for the bus, which always answers. */
        if (!c->deferred && now_ms - c->phase_ms >= (uint64_t)cfg->handshake_timeout * 1000)
            conn_respond_text(c, 408, NULL, "request not completed in time", 0);
        break;
    case CONN_WS:
        if (now_ms - c->last_rx_ms >= (uint64_t)cfg->heartbeat * 2000) {
            log_debug("conn %d.%llu: silent for two heartbeats, dropped", c->worker->index,
                      (unsigned long long)c->seq);
            conn_drop(c);
        } else if (now_ms - c->last_ping_ms >= (uint64_t)cfg->heartbeat * 1000) {
            c->last_ping_ms = now_ms;
            conn_enqueue(c, c->worker->ping);
        }
        break;
    case CONN_CLOSING:
        if (now_ms - c->phase_ms >= CLOSE_LINGER_MS)
            conn_drop(c);
        break;
    }
    if (!c->closed && !c->out.inflight)
        outq_shrink(&c->out);
}
