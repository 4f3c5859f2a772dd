/* api.c - plain HTTP on the port of /ws (PROTOCOL.md section 7): one route
 * table, the --api-key check (Bearer, compared in constant time), the API
 * endpoints, /metrics, the health checks and the built-in pages. Publish,
 * history, presence and rooms travel through the bus like a client's
 * commands (a publish has no user, so its "from" is null); the connection
 * defers the answer until the reply is back, which keeps pipelined answers
 * in order. Worker thread only. Does not parse HTTP (http.c) or build
 * events (the bus and the store do). */
#include "api.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bus.h"
#include "command.h"
#include "conn.h"
#include "http.h"
#include "metrics.h"
#include "names.h"
#include "server.h"
#include "web.h"

enum { M_GET = 1, M_HEAD = 2, M_POST = 4 };

struct route {
    const char *path;
    unsigned methods;  /* M_* */
    int guarded;       /* needs the API key when one is set */
    void (*serve)(struct conn *c, const struct http_request *req);
};

/* ---- answers ---------------------------------------------------------------- */

static int is_api_path(const char *path)
{
    return path && !strncmp(path, "/api/", 5);
}

/* The one JSON error builder of the API: {"error":code,"message":message}. */
static void api_error(struct conn *c, int status, const char *extra_headers, const char *code,
                      const char *message, int keep_alive)
{
    json_t *body = json_pack("{s:s,s:s}", "error", code, "message", message);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        conn_drop(c);
        return;
    }
    conn_respond(c, status, "application/json", extra_headers, text, strlen(text), keep_alive);
    free(text);
}

static void respond_json(struct conn *c, const char *json, size_t len, int keep_alive)
{
    conn_respond(c, 200, "application/json", "Cache-Control: no-store\r\n", json, len, keep_alive);
}

/* printf into a JSON 200 answer. */
static void respond_fmt(struct conn *c, int keep_alive, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void respond_fmt(struct conn *c, int keep_alive, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *text = NULL;
    int n = vasprintf(&text, fmt, ap);
    va_end(ap);
    if (n < 0) {
        conn_drop(c);
        return;
    }
    respond_json(c, text, (size_t)n, keep_alive);
    free(text);
}

void api_refuse(struct conn *c, const struct http_request *req, int status)
{
    const char *message = status == 431   ? "request head too large"
                          : status == 413 ? "request body too large"
                          : status == 500 ? "out of memory"
                                          : "malformed request";
    if (is_api_path(req->path))
        api_error(c, status, NULL, status == 400 ? "bad_request" : status == 500 ? "unavailable" : "too_large",
                  message, 0);
    else
        conn_respond_text(c, status, NULL, message, 0);
}

/* ---- answers that come back from the bus ------------------------------------- */

/* A bus request for the HTTP request c is handling, answered by on_reply
 * on this worker. NULL (after answering 503) when out of memory. */
static struct bus_request *bus_call(struct conn *c, const struct http_request *req, enum bus_op op,
                                    task_fn on_reply)
{
    struct bus_request *breq = bus_request_create(op);
    if (!breq) {
        api_error(c, 503, NULL, "unavailable", "out of memory", req->keep_alive);
        return NULL;
    }
    breq->on_reply = on_reply;
    breq->conn = c;
    breq->worker = c->worker->index;
    breq->conn_seq = c->seq;
    breq->echo = 1;
    return breq;
}

/* Hands breq to the bus; c answers nothing else until the reply is in. */
static void bus_call_submit(struct conn *c, struct bus_request *breq)
{
    conn_ref(c);
    conn_defer(c);
    bus_submit(c->worker->server->bus, breq);
}

/* The connection a reply is for, or NULL when it closed meanwhile. */
static struct conn *reply_conn(struct bus_request *breq)
{
    struct conn *c = breq->conn;
    return c->deferred && !c->closed && c->state == CONN_HTTP ? c : NULL;
}

static int reply_keep_alive(struct conn *c)
{
    return http_reader_request(c->http)->keep_alive;
}

static void reply_done(struct bus_request *breq)
{
    conn_unref(breq->conn);
    bus_request_free(breq);
}

/* A bus error as the status that fits. True when there was one. */
static int reply_error(struct conn *c, struct bus_request *breq, const char *message)
{
    if (!breq->error)
        return 0;
    int status = !strcmp(breq->error, "unavailable") || !strcmp(breq->error, "history_unavailable") ? 503
                 : !strcmp(breq->error, "rate_limited")                                             ? 429
                 : !strcmp(breq->error, "too_large")                                                ? 413
                                                                                                    : 400;
    api_error(c, status, status == 503 ? "Retry-After: 1\r\n" : NULL, breq->error, message, reply_keep_alive(c));
    return 1;
}

/* ---- POST /api/publish ------------------------------------------------------- */

static void on_published(struct task *t, void *ctx)
{
    (void)ctx;
    struct bus_request *breq = (struct bus_request *)t;
    struct conn *c = reply_conn(breq);
    if (c && !reply_error(c, breq, "the message was not published")) {
        if (breq->store.offset[0])
            respond_fmt(c, reply_keep_alive(c), "{\"offset\":\"%s\"}", breq->store.offset);
        else
            respond_fmt(c, reply_keep_alive(c), "{\"offset\":null}");
    }
    reply_done(breq);
}

/* True when the Content-Type is application/json, parameters allowed. */
static int is_json_type(const char *type)
{
    static const char json_type[] = "application/json";
    if (!type || strncasecmp(type, json_type, sizeof json_type - 1))
        return 0;
    char next = type[sizeof json_type - 1];
    return next == '\0' || next == ';' || next == ' ' || next == '\t';
}

/* Exactly one of room, user and all:true. Fills breq's target and name, or
 * answers 400 and returns -1. */
static int publish_target(struct conn *c, const struct http_request *req, json_t *body, struct bus_request *breq)
{
    json_t *room = json_object_get(body, "room"), *user = json_object_get(body, "user"),
           *all = json_object_get(body, "all");
    if ((room != NULL) + (user != NULL) + (all != NULL) != 1) {
        api_error(c, 400, NULL, "bad_command", "exactly one of room, user or all is required", req->keep_alive);
        return -1;
    }
    if (all) {
        if (!json_is_true(all)) {
            api_error(c, 400, NULL, "bad_command", "all must be true", req->keep_alive);
            return -1;
        }
        breq->target = BUS_ALL;
        return 0;
    }
    json_t *name = room ? room : user;
    if (!json_is_string(name) || !name_valid(json_string_value(name), json_string_length(name))) {
        api_error(c, 400, NULL, room ? "room_invalid" : "user_invalid",
                  room ? "room must be 1 to 128 characters of A-Z a-z 0-9 _ . : -"
                       : "user must be 1 to 128 characters of A-Z a-z 0-9 _ . : -",
                  req->keep_alive);
        return -1;
    }
    breq->target = room ? BUS_ROOM : BUS_USER;
    strcpy(room ? breq->room : breq->to, json_string_value(name));
    return 0;
}

static void serve_publish(struct conn *c, const struct http_request *req)
{
    if (!is_json_type(req->content_type)) {
        api_error(c, 415, NULL, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)",
                  req->keep_alive);
        return;
    }
    json_error_t jerr;
    json_t *body = json_loadb(req->body ? req->body : "", req->body_len,
                              JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    struct bus_request *breq = NULL;
    if (!json_is_object(body)) {
        api_error(c, 400, NULL, "bad_json", body ? "the body must be a JSON object" : jerr.text, req->keep_alive);
        goto done;
    }
    json_t *data = json_object_get(body, "data"), *ephemeral = json_object_get(body, "ephemeral");
    if (!data) {
        api_error(c, 400, NULL, "bad_command", "data is required", req->keep_alive);
        goto done;
    }
    if (ephemeral && !json_is_boolean(ephemeral)) {
        api_error(c, 400, NULL, "bad_command", "ephemeral must be true or false", req->keep_alive);
        goto done;
    }
    if (!(breq = bus_call(c, req, BUS_PUBLISH, on_published)))
        goto done;
    if (publish_target(c, req, body, breq))
        goto done;
    breq->ephemeral = json_is_true(ephemeral);
    if (!(breq->data = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY))) {
        api_error(c, 503, NULL, "unavailable", "out of memory", req->keep_alive);
        goto done;
    }
    breq->data_len = strlen(breq->data);
    bus_call_submit(c, breq);
    breq = NULL;
done:
    if (breq)
        bus_request_free(breq);
    json_decref(body);
}

/* ---- GET /api/history, /api/presence, /api/rooms -------------------------------- */

/* The room of the query into room; or answers 400 and returns -1. */
static int query_room(struct conn *c, const struct http_request *req, char room[NAME_MAX_LEN + 1])
{
    int n = http_query_get(req->query, "room", room, NAME_MAX_LEN + 1);
    if (n == -1) {
        api_error(c, 400, NULL, "bad_command", "the query must name a room: ?room=<room>", req->keep_alive);
        return -1;
    }
    if (n < 0 || !name_valid(room, (size_t)n)) {
        api_error(c, 400, NULL, "room_invalid", "room must be 1 to 128 characters of A-Z a-z 0-9 _ . : -",
                  req->keep_alive);
        return -1;
    }
    return 0;
}

static void on_history(struct task *t, void *ctx)
{
    (void)ctx;
    struct bus_request *breq = (struct bus_request *)t;
    struct conn *c = reply_conn(breq);
    if (c && !reply_error(c, breq, "history is not available for this room")) {
        size_t len;
        const char *events = store_batch_join(&breq->store.batch, &len);
        respond_fmt(c, reply_keep_alive(c), "{\"room\":\"%s\",\"messages\":[%.*s]}", breq->room, (int)len,
                    events);
    }
    reply_done(breq);
}

static void serve_history(struct conn *c, const struct http_request *req)
{
    char room[NAME_MAX_LEN + 1], limit[16], before[OFFSET_MAX_LEN];
    if (query_room(c, req, room))
        return;
    int n = http_query_get(req->query, "limit", limit, sizeof limit);
    long value = HISTORY_DEFAULT_LIMIT;
    char *end = limit;
    if (n >= 0)
        value = strtol(limit, &end, 10);
    if (n == -2 || (n >= 0 && (end == limit || *end || value < 1 || value > HISTORY_MAX_LIMIT))) {
        api_error(c, 400, NULL, "bad_command", "limit must be a whole number from 1 to 1000", req->keep_alive);
        return;
    }
    struct offset before_offset;
    n = http_query_get(req->query, "before", before, sizeof before);
    if (n == -2 || (n >= 0 && offset_parse(before, &before_offset))) {
        api_error(c, 400, NULL, "bad_command", "before must be an offset such as 1732312345678-0", req->keep_alive);
        return;
    }
    struct bus_request *breq = bus_call(c, req, BUS_HISTORY, on_history);
    if (!breq)
        return;
    strcpy(breq->room, room);
    breq->store.limit = (int)value;
    breq->store.has_before = n >= 0;
    if (n >= 0)
        breq->store.before = before_offset;
    bus_call_submit(c, breq);
}

static void on_presence(struct task *t, void *ctx)
{
    (void)ctx;
    struct bus_request *breq = (struct bus_request *)t;
    struct conn *c = reply_conn(breq);
    if (c && !reply_error(c, breq, "presence is not available"))
        respond_fmt(c, reply_keep_alive(c), "{\"room\":\"%s\",\"users\":%s}", breq->room, breq->users);
    reply_done(breq);
}

static void serve_presence(struct conn *c, const struct http_request *req)
{
    char room[NAME_MAX_LEN + 1];
    if (query_room(c, req, room))
        return;
    struct bus_request *breq = bus_call(c, req, BUS_PRESENCE, on_presence);
    if (!breq)
        return;
    strcpy(breq->room, room);
    bus_call_submit(c, breq);
}

static void on_rooms(struct task *t, void *ctx)
{
    (void)ctx;
    struct bus_request *breq = (struct bus_request *)t;
    struct conn *c = reply_conn(breq);
    if (c && !reply_error(c, breq, "the room list is not available"))
        respond_fmt(c, reply_keep_alive(c), "{\"node\":\"%s\",\"rooms\":%s}", c->worker->server->cfg->node_id,
                    breq->rooms);
    reply_done(breq);
}

static void serve_rooms(struct conn *c, const struct http_request *req)
{
    struct bus_request *breq = bus_call(c, req, BUS_ROOMS, on_rooms);
    if (breq)
        bus_call_submit(c, breq);
}

/* ---- answered on the worker -------------------------------------------------- */

static void serve_stats(struct conn *c, const struct http_request *req)
{
    size_t len;
    char *json = metrics_stats_json(c->worker->server, &len);
    if (!json) {
        api_error(c, 503, NULL, "unavailable", "out of memory", req->keep_alive);
        return;
    }
    respond_json(c, json, len, req->keep_alive);
    free(json);
}

static void serve_metrics(struct conn *c, const struct http_request *req)
{
    size_t len;
    char *text = metrics_prometheus(c->worker->server, &len);
    if (!text) {
        conn_respond_text(c, 503, NULL, "out of memory", req->keep_alive);
        return;
    }
    conn_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, text, len, req->keep_alive);
    free(text);
}

static void serve_healthz(struct conn *c, const struct http_request *req)
{
    conn_respond_text(c, 200, NULL, "ok", req->keep_alive);
}

static void serve_readyz(struct conn *c, const struct http_request *req)
{
    if (bus_ready(c->worker->server->bus))
        conn_respond_text(c, 200, NULL, "ready", req->keep_alive);
    else
        conn_respond_text(c, 503, "Retry-After: 1\r\n", "not ready: the bus or the store is not connected",
                          req->keep_alive);
}

static void serve_page(struct conn *c, const struct http_request *req)
{
    const struct web_asset *a = web_asset_find(req->path);
    conn_respond(c, 200, a->content_type, "Cache-Control: no-cache\r\n", (const char *)a->bytes, a->len,
                 req->keep_alive);
}

/* ---- routing ----------------------------------------------------------------- */

static const struct route routes[] = {
    {"/api/publish", M_POST, 1, serve_publish},
    {"/api/history", M_GET | M_HEAD, 1, serve_history},
    {"/api/presence", M_GET | M_HEAD, 1, serve_presence},
    {"/api/rooms", M_GET | M_HEAD, 1, serve_rooms},
    {"/api/stats", M_GET | M_HEAD, 1, serve_stats},
    {"/metrics", M_GET | M_HEAD, 1, serve_metrics},
    {"/healthz", M_GET | M_HEAD, 0, serve_healthz},
    {"/readyz", M_GET | M_HEAD, 0, serve_readyz},
};

static const struct route page_route = {NULL, M_GET | M_HEAD, 0, serve_page};

static const struct route *route_find(const char *path)
{
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (!strcmp(routes[i].path, path))
            return &routes[i];
    return web_asset_find(path) ? &page_route : NULL;
}

/* True when no API key is set or req carries it. Both sides are hashed
 * first so that the comparison takes the same time whatever the length. */
static int authorized(const struct config *cfg, const struct http_request *req)
{
    static const char scheme[] = "Bearer ";
    if (!cfg->api_key[0])
        return 1;
    const char *h = req->authorization;
    if (!h || strncasecmp(h, scheme, sizeof scheme - 1))
        return 0;
    h += sizeof scheme - 1;
    unsigned char given[SHA256_DIGEST_LENGTH], want[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)h, strlen(h), given);
    SHA256((const unsigned char *)cfg->api_key, strlen(cfg->api_key), want);
    return CRYPTO_memcmp(given, want, sizeof want) == 0;
}

static unsigned method_bit(enum http_method_kind m)
{
    switch (m) {
    case HTTP_GET: return M_GET;
    case HTTP_HEAD: return M_HEAD;
    case HTTP_POST: return M_POST;
    default: return 0;
    }
}

void api_route(struct conn *c, const struct http_request *req)
{
    int json = is_api_path(req->path);
    const struct route *r = route_find(req->path);
    if (!r) {
        if (json)
            api_error(c, 404, NULL, "not_found", "no such API endpoint", req->keep_alive);
        else
            conn_respond_text(c, 404, NULL, "not found", req->keep_alive);
        return;
    }
    if (r->guarded && !authorized(c->worker->server->cfg, req)) {
        api_error(c, 401, "WWW-Authenticate: Bearer realm=\"wsfan\"\r\n", "unauthorized",
                  "send Authorization: Bearer <api key>", req->keep_alive);
        return;
    }
    if (!(method_bit(req->method) & r->methods)) {
        const char *allow = r->methods == M_POST ? "Allow: POST\r\n" : "Allow: GET, HEAD\r\n";
        if (json)
            api_error(c, 405, allow, "method_not_allowed", r->methods == M_POST ? "use POST" : "use GET",
                      req->keep_alive);
        else
            conn_respond_text(c, 405, allow, "method not allowed", req->keep_alive);
        return;
    }
    r->serve(c, req);
}
