/* router.c - the HTTP phase: request heads in, answers out, the upgrade to
 * a WebSocket session, and the request timeout. See router.h. */
#include "app/router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/access_log.h"
#include "app/admission.h"
#include "app/api.h"
#include "app/app.h"
#include "app/auth.h"
#include "app/client.h"
#include "app/sse.h"
#include "codec/deflate.h"
#include "codec/http.h"
#include "core/clock.h"
#include "core/log.h"

#define HTTP_MAX_HEAD 8192

static const struct conn_handler http_handler;

/* ---- answers ---------------------------------------------------------------- */

/* A deferred request was answered: the next request starts, and the
 * connection hands over the input it kept meanwhile (conn_resume). */
static void resume(struct client *c)
{
    c->deferred = 0;
    if (!c->conn.closed && c->conn.state == CONN_HTTP) {
        http_reader_reset(c->http);
        c->http_since_ms = (uint32_t)uv_now(c->conn.loop->uv);
    }
    conn_resume(&c->conn);
}

/* router_respond, with the reason of a refusal for the log (or NULL). */
static void respond(struct client *c, int status, const char *content_type, const char *extra_headers,
                    const char *body, size_t len, int keep_alive, const char *reason)
{
    access_log_answer(c, status, reason);
    struct frame *f = http_response_create(status, content_type, extra_headers, body, len, keep_alive);
    if (!f) {
        conn_drop(&c->conn);
        return;
    }
    if (body && c->http && http_reader_request(c->http)->method == HTTP_HEAD) {
        /* HEAD: the same head, without the body (RFC 9110 9.3.2). */
        f->len -= (uint32_t)len;
    }
    conn_enqueue(&c->conn, f);
    frame_unref(f);
    if (!keep_alive)
        conn_close(&c->conn, 0, NULL);
    if (c->deferred)
        resume(c);
}

void router_respond(struct client *c, int status, const char *content_type, const char *extra_headers,
                    const char *body, size_t len, int keep_alive)
{
    respond(c, status, content_type, extra_headers, body, len, keep_alive, NULL);
}

void router_respond_text(struct client *c, int status, const char *extra_headers, const char *text, int keep_alive)
{
    char body[256];
    int n = snprintf(body, sizeof body, "%s\n", text);
    respond(c, status, "text/plain; charset=utf-8", extra_headers, body,
            (size_t)n < sizeof body ? (size_t)n : sizeof body - 1, keep_alive, text);
}

void router_defer(struct client *c)
{
    c->deferred = 1;
    c->http_since_ms = (uint32_t)uv_now(c->conn.loop->uv);
}

/* ---- the upgrade ------------------------------------------------------------ */

/* A refusal of admission.h (403, 429, 503): one line, then the close. */
static void refuse(struct client *c, int status)
{
    router_respond_text(c, status, status == 503 ? "Retry-After: 5\r\n" : NULL, admission_reason(status), 0);
}

/* The handshake's Origin (docs/protocol.md section 1a, "Origin"). True
 * when it was refused. */
static int refuse_origin(struct client *c, const struct http_request *req)
{
    int status = admission_origin(c, req);
    if (status)
        refuse(c, status);
    return status != 0;
}

/* The connection slots an upgrade needs (section 1a, "Limits"). True when
 * it was refused. */
static int refuse_slots(struct client *c, const struct http_request *req)
{
    int status = admission_upgrade(c, req);
    if (status)
        refuse(c, status);
    return status != 0;
}

int router_admit(struct client *c, const struct http_request *req, struct auth_result *who)
{
    struct app *app = client_app(c);
    memset(who, 0, sizeof *who);
    if (refuse_origin(c, req))
        return -1;
    auth_handshake(app->cfg, app->token_key, req, (int64_t)(clock_wall_ms() / 1000), who);
    if (who->status) {
        router_respond_text(c, who->status, who->headers, who->reason, 0);
        return -1;
    }
    if (atomic_load_explicit(app->draining, memory_order_relaxed)) {
        router_respond_text(c, 503, "Retry-After: 5\r\n", "server shutting down", 0);
        return -1;
    }
    return refuse_slots(c, req) ? -1 : 0;
}

static void upgrade(struct client *c, const struct http_request *req)
{
    struct app *app = client_app(c);
    const char *reason;
    int status = http_ws_check(req, &reason);
    if (status) {
        router_respond_text(c, status, status == 426 ? "Sec-WebSocket-Version: 13\r\n" : NULL, reason, 0);
        return;
    }
    struct auth_result who;
    if (router_admit(c, req, &who))
        goto done;
    char accept[29], headers[384], deflate[DEFLATE_ANSWER_MAX];
    int deflates = app->cfg->compression && deflate_negotiate(req->ws_extensions, deflate);
    ws_accept_key(req->ws_key, strlen(req->ws_key), accept);
    snprintf(headers, sizeof headers,
             "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s%s%s%s", accept,
             http_header_has_token(req->ws_protocol, CLIENT_SUBPROTOCOL)
                 ? "Sec-WebSocket-Protocol: " CLIENT_SUBPROTOCOL "\r\n"
                 : "",
             deflates ? "Sec-WebSocket-Extensions: " : "", deflates ? deflate : "", deflates ? "\r\n" : "");
    struct frame *f = http_response_create(101, NULL, headers, NULL, 0, 1);
    if (!f) {
        conn_drop(&c->conn);
        goto done;
    }
    conn_enqueue(&c->conn, f);
    frame_unref(f);
    access_log_opened(c, req, &who);
    http_reader_destroy(c->http);
    c->http = NULL;
    conn_upgrade(&c->conn, &client_handler, app->cfg->max_message);
    if (deflates) {
        ws_parser_use_deflate(&c->conn.parser, app->deflate);
        metrics_deflate_conn(c->conn.loop->metrics);
    }
    client_start(c, &who);
done:
    token_claims_free(&who.claims);
}

/* ---- reading ---------------------------------------------------------------- */

static void route(struct client *c, const struct http_request *req)
{
    metrics_http_request(c->conn.loop->metrics);
    c->http_since_ms = (uint32_t)uv_now(c->conn.loop->uv); /* the answer's duration starts */
    if (!strcmp(req->path, "/ws"))
        upgrade(c, req);
    else if (!strcmp(req->path, "/sse"))
        sse_open(c, req);
    else
        api_route(c, req);
}

/* Requests from buf, one after the other, until the connection pauses (an
 * answer waits for the bus, or the output is over its limit) or leaves
 * the HTTP phase. Returns the bytes used; the connection keeps the rest. */
static size_t read_requests(struct client *c, const char *buf, size_t len)
{
    size_t total = len;
    if (!c->http && !(c->http = http_reader_create(HTTP_MAX_HEAD, client_app(c)->cfg->max_message))) {
        conn_drop(&c->conn);
        return total;
    }
    while (len && c->conn.state == CONN_HTTP && !c->conn.closed && !c->conn.paused) {
        size_t used;
        int r = http_reader_feed(c->http, buf, len, &used);
        buf += used;
        len -= used;
        if (r == HTTP_READ_NEED_MORE)
            break;
        if (r < 0) {
            api_refuse(c, http_reader_request(c->http), -r);
            return total;
        }
        route(c, http_reader_request(c->http));
        if (c->deferred) {
            conn_pause(&c->conn);
            break;
        }
        if (c->conn.state == CONN_HTTP) {
            http_reader_reset(c->http);
            c->http_since_ms = (uint32_t)uv_now(c->conn.loop->uv);
        }
    }
    return total - len;
}

static size_t on_bytes(struct conn *conn, const char *buf, size_t len)
{
    return read_requests(client_of(conn), buf, len);
}

static void on_tick(struct conn *conn, uint64_t now_ms)
{
    struct client *c = client_of(conn);
    const struct config *cfg = client_app(c)->cfg;
    /* A deferred request waits for the bus, up to --request-timeout. */
    uint32_t waited_ms = clock_ms32_since(now_ms, c->http_since_ms);
    if (c->deferred && cfg->request_timeout && waited_ms >= (uint64_t)cfg->request_timeout)
        api_expire(c);
    else if (!c->deferred && waited_ms >= (uint64_t)cfg->handshake_timeout * 1000)
        router_respond_text(c, 408, NULL, "request not completed in time", 0);
}

static void on_free(struct conn *conn)
{
    client_free(client_of(conn));
}

/* The connection slots are held from accept: give them back. */
static void on_close(struct conn *conn)
{
    admission_release(client_of(conn));
}

static const struct conn_handler http_handler = {
    .on_bytes = on_bytes,
    .on_tick = on_tick,
    .on_close = on_close,
    .on_free = on_free,
};

void router_accept(struct app *app, int fd, const struct sockaddr *peer, int admin)
{
    struct client *c = calloc(1, sizeof *c);
    if (!c) {
        log_error("worker %d: out of memory accepting a connection", app->net->index);
        close(fd);
        return;
    }
    c->conn.handler = &http_handler;
    if (conn_open(app->net, fd, &c->conn))
        return;
    c->http_since_ms = (uint32_t)uv_now(app->net->uv);
    /* Over a limit: answered before anything is read, and closed. */
    int status = admission_accept(c, peer, admin);
    if (status)
        refuse(c, status);
}
