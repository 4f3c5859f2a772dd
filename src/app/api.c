/* api.c - plain HTTP on the port of /ws (docs/protocol.md section 7): one route
 * table, which routes each port serves (--admin-listen), the --api-key check
 * (Bearer, compared in constant time) or without a key the loopback rule,
 * the API endpoints, /metrics, the health checks and the built-in pages. Publish,
 * disconnect, history, presence and rooms travel through the bus like a client's
 * commands (a publish has no user, so its "from" is null); the router
 * defers the answer until the reply is back, which keeps pipelined answers
 * in order. Every /api/ request may name a tenant with ?tenant= (a publish
 * also with "tenant" in its body): its rooms and users are then that
 * tenant's keys (core/names.h). Worker thread only. Does not parse HTTP
 * (http.c) or build events (the bus and the store do). */
#include "app/api.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app/admission.h"
#include "app/app.h"
#include "app/client.h"
#include "app/router.h"
#include "app/web.h"
#include "codec/http.h"
#include "codec/reply.h"
#include "core/error.h"
#include "core/names.h"

enum { M_GET = 1, M_HEAD = 2, M_POST = 4 };

/* Which port serves a route when --admin-listen is set; without it, the
 * one port serves everything. */
enum { ON_PUBLIC = 1, ON_ADMIN = 2, ON_BOTH = 3 };

struct route {
    const char *path;
    unsigned methods;  /* M_* */
    int guarded;       /* needs the API key, or without one a loopback client */
    unsigned on;       /* ON_* */
    /* tenant: the request's ("" for none), checked; API routes only */
    void (*serve)(struct client *c, const struct http_request *req, const char *tenant);
};

/* The most users one publish may name. */
enum { PUBLISH_USERS_MAX = 1000 };

static const char tenant_invalid[] = "tenant must be 1 to 64 characters of A-Z a-z 0-9 _ . : -";

/* ---- answers ---------------------------------------------------------------- */

/* /api itself and every path under it: their errors are JSON. */
static int is_api_path(const char *path)
{
    return path && !strncmp(path, "/api", 4) && (path[4] == '\0' || path[4] == '/');
}

/* The one JSON error answer of the API: {"error":code,"message":message},
 * with the status of err. message NULL: err's own line. */
static void api_error(struct client *c, int err, const char *extra_headers, const char *message, int keep_alive)
{
    size_t len;
    char *text = reply_api_error(wsfan_error_code(err), message ? message : wsfan_strerror(err), &len);
    if (!text) {
        conn_drop(&c->conn);
        return;
    }
    int status = wsfan_error_status(err);
    if (status == 503 && !extra_headers)
        extra_headers = "Retry-After: 1\r\n";
    router_respond(c, status, "application/json", extra_headers, text, len, keep_alive);
    free(text);
}

/* A JSON 200 answer of text (malloc'ed by a reply builder, NULL when that
 * ran out of memory) of *len bytes, which is freed. len is read here, after
 * the builder in the caller's argument list has set it. */
static void respond_json(struct client *c, char *text, const size_t *len, int keep_alive)
{
    if (!text) {
        api_error(c, WSFAN_ENOMEM, NULL, NULL, keep_alive);
        return;
    }
    router_respond(c, 200, "application/json", "Cache-Control: no-store\r\n", text, *len, keep_alive);
    free(text);
}

void api_refuse(struct client *c, const struct http_request *req, int status)
{
    int err = status == 431 || status == 413 ? WSFAN_ETOO_LARGE : status == 500 ? WSFAN_ENOMEM : WSFAN_EBAD_REQUEST;
    const char *message = status == 431   ? "request head too large"
                          : status == 413 ? "request body too large"
                          : status == 500 ? "out of memory"
                                          : "malformed request";
    if (!is_api_path(req->path)) {
        router_respond_text(c, status, NULL, message, 0);
        return;
    }
    size_t len;
    char *text = reply_api_error(wsfan_error_code(err), message, &len);
    if (!text) {
        conn_drop(&c->conn);
        return;
    }
    router_respond(c, status, "application/json", NULL, text, len, 0);
    free(text);
}

/* ---- answers that come back from the bus ------------------------------------- */

/* A call for the HTTP request c is handling, answered by on_reply on this
 * worker. NULL (after answering 503) when out of memory. */
static struct call *api_call(struct client *c, const struct http_request *req, enum bus_op op, task_fn on_reply)
{
    struct call *call = call_create(c, op, on_reply);
    if (!call)
        api_error(c, WSFAN_ENOMEM, NULL, NULL, req->keep_alive);
    return call;
}

/* Hands call to the bus; c answers nothing else until the reply is in
 * (or --request-timeout passes: api_expire). */
static void api_call_submit(struct client *c, struct call *call)
{
    router_defer(c);
    c->deferred_seq = call->seq;
    bus_submit(client_app(c)->bus, &call->req.base);
}

/* The client a reply is for, or NULL when it closed, or was answered
 * already (api_expire), meanwhile. */
static struct client *reply_client(struct call *call)
{
    struct client *c = call->client;
    return c->deferred && c->deferred_seq == call->seq && !call->expired && !c->conn.closed &&
                   c->conn.state == CONN_HTTP
               ? c
               : NULL;
}

void api_expire(struct client *c)
{
    for (struct call *call = c->flight; call; call = call->flight_next)
        if (call->seq == c->deferred_seq)
            call->expired = 1;
    api_error(c, WSFAN_EUNAVAILABLE, NULL, "no answer from the bus in time (--request-timeout)",
              http_reader_request(c->http)->keep_alive);
}

static int reply_keep_alive(struct client *c)
{
    return http_reader_request(c->http)->keep_alive;
}

/* A bus error as the answer that fits. True when there was one. */
static int answer_error(struct client *c, struct call *call, const char *message)
{
    if (!call->req.base.error)
        return 0;
    api_error(c, call->req.base.error, NULL, message, reply_keep_alive(c));
    return 1;
}

/* ---- POST /api/publish ------------------------------------------------------- */

static void on_published(struct task *t, void *ctx)
{
    (void)ctx;
    struct call *call = (struct call *)t;
    struct client *c = reply_client(call);
    size_t len;
    const char *failed = call->req.publish.users
                             ? "not every user's channel was published: some users may have the message"
                             : "the message was not published";
    if (c && !answer_error(c, call, failed))
        respond_json(c, reply_api_published(call->req.publish.store.offset, &len), &len, reply_keep_alive(c));
    call_done(call);
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

static int by_string(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* "users": an array of 1 to PUBLISH_USERS_MAX ids. Fills pub's users with
 * the keys (of tenant) of the distinct ones, or answers 400 (503 when out
 * of memory) and returns -1. */
static int publish_users(struct client *c, const struct http_request *req, json_t *users, const char *tenant,
                         struct bus_publish *pub)
{
    size_t n = json_array_size(users), bytes = 0;
    char message[128];
    if (json_is_array(users))
        snprintf(message, sizeof message, "users must name 1 to %d users, not %zu", PUBLISH_USERS_MAX, n);
    else
        snprintf(message, sizeof message, "users must be an array of user ids");
    if (!json_is_array(users) || n == 0 || n > PUBLISH_USERS_MAX) {
        api_error(c, WSFAN_EBAD_COMMAND, NULL, message, req->keep_alive);
        return -1;
    }
    const char **names = malloc(n * sizeof *names);
    if (!names) {
        api_error(c, WSFAN_ENOMEM, NULL, NULL, req->keep_alive);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(users, i);
        if (!json_is_string(v) || !name_valid(json_string_value(v), json_string_length(v))) {
            snprintf(message, sizeof message, "users[%zu]: %s", i, wsfan_strerror(WSFAN_EUSER_INVALID));
            api_error(c, WSFAN_EUSER_INVALID, NULL, message, req->keep_alive);
            free(names);
            return -1;
        }
        names[i] = json_string_value(v);
        bytes += strlen(tenant) + 1 + json_string_length(v) + 1;
    }
    /* Sorted, a name's repeats are next to it: each user is published once. */
    qsort(names, n, sizeof *names, by_string);
    char *out = pub->users = malloc(bytes);
    for (size_t i = 0; out && i < n; i++) {
        if (i && !strcmp(names[i], names[i - 1]))
            continue;
        char buf[KEY_MAX_LEN + 1];
        const char *key = name_key(tenant, names[i], buf);
        size_t len = strlen(key) + 1;
        memcpy(out, key, len);
        out += len;
    }
    free(names);
    if (!out) {
        api_error(c, WSFAN_ENOMEM, NULL, NULL, req->keep_alive);
        return -1;
    }
    pub->users_len = (size_t)(out - pub->users);
    pub->target = EVENT_USER;
    return 0;
}

/* Exactly one of room, user, users and all:true. Fills pub's target and
 * name (a key of tenant) or users, or answers 400 and returns -1. */
static int publish_target(struct client *c, const struct http_request *req, json_t *body, const char *tenant,
                          struct bus_publish *pub)
{
    json_t *room = json_object_get(body, "room"), *user = json_object_get(body, "user"),
           *users = json_object_get(body, "users"), *all = json_object_get(body, "all");
    if ((room != NULL) + (user != NULL) + (users != NULL) + (all != NULL) != 1) {
        api_error(c, WSFAN_EBAD_COMMAND, NULL, "exactly one of room, user, users or all is required",
                  req->keep_alive);
        return -1;
    }
    if (users)
        return publish_users(c, req, users, tenant, pub);
    if (all) {
        if (!json_is_true(all)) {
            api_error(c, WSFAN_EBAD_COMMAND, NULL, "all must be true", req->keep_alive);
            return -1;
        }
        char buf[KEY_MAX_LEN + 1];
        pub->target = EVENT_ALL;
        strcpy(pub->name, name_key(tenant, "", buf));
        return 0;
    }
    json_t *name = room ? room : user;
    if (!json_is_string(name) || !name_valid(json_string_value(name), json_string_length(name))) {
        api_error(c, room ? WSFAN_EROOM_INVALID : WSFAN_EUSER_INVALID, NULL, NULL, req->keep_alive);
        return -1;
    }
    pub->target = room ? EVENT_ROOM : EVENT_USER;
    char buf[KEY_MAX_LEN + 1];
    strcpy(pub->name, name_key(tenant, json_string_value(name), buf));
    return 0;
}

/* --max-data (docs/protocol.md section 1a, "Limits"): 413 past it. */
static int data_fits(struct client *c, const struct http_request *req, size_t len)
{
    size_t max = client_app(c)->cfg->max_data;
    if (len <= max)
        return 1;
    char message[96];
    snprintf(message, sizeof message, "data is longer than --max-data (%zu bytes as JSON)", max);
    api_error(c, WSFAN_ETOO_LARGE, NULL, message, req->keep_alive);
    return 0;
}

/* The tenant of a POST: "tenant" in the body, which must agree with
 * ?tenant= when both are there, into out. Or answers 400 and returns -1. */
static int body_tenant(struct client *c, const struct http_request *req, json_t *body, const char *query,
                          char out[TENANT_MAX_LEN + 1])
{
    json_t *v = json_object_get(body, "tenant");
    strcpy(out, query);
    if (!v)
        return 0;
    if (!json_is_string(v) || !name_tenant_valid(json_string_value(v), json_string_length(v))) {
        api_error(c, WSFAN_EBAD_COMMAND, NULL, tenant_invalid, req->keep_alive);
        return -1;
    }
    if (query[0] && strcmp(query, json_string_value(v))) {
        api_error(c, WSFAN_EBAD_COMMAND, NULL, "the tenant of the body and that of the query differ",
                  req->keep_alive);
        return -1;
    }
    strcpy(out, json_string_value(v));
    return 0;
}

/* The body of a POST as a JSON object (a new reference), or NULL after
 * answering 415 (not JSON's Content-Type) or 400. */
static json_t *json_body(struct client *c, const struct http_request *req)
{
    if (!is_json_type(req->content_type)) {
        api_error(c, WSFAN_EUNSUPPORTED_MEDIA_TYPE, NULL, NULL, req->keep_alive);
        return NULL;
    }
    json_error_t jerr;
    json_t *body = json_loadb(req->body ? req->body : "", req->body_len,
                              JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (json_is_object(body))
        return body;
    api_error(c, WSFAN_EBAD_JSON, NULL, body ? "the body must be a JSON object" : jerr.text, req->keep_alive);
    json_decref(body);
    return NULL;
}

static void serve_publish(struct client *c, const struct http_request *req, const char *query_tenant)
{
    json_t *body = json_body(c, req);
    if (!body)
        return;
    struct call *call = NULL;
    json_t *data = json_object_get(body, "data"), *ephemeral = json_object_get(body, "ephemeral");
    if (!data) {
        api_error(c, WSFAN_EBAD_COMMAND, NULL, "data is required", req->keep_alive);
        goto done;
    }
    if (ephemeral && !json_is_boolean(ephemeral)) {
        api_error(c, WSFAN_EBAD_COMMAND, NULL, "ephemeral must be true or false", req->keep_alive);
        goto done;
    }
    char tenant[TENANT_MAX_LEN + 1], key[PUBLISH_KEY_MAX + 1];
    int has_key;
    struct command_error key_err;
    if (command_parse_key(body, &has_key, key, &key_err)) {
        api_error(c, key_err.code, NULL, key_err.message, req->keep_alive);
        goto done;
    }
    if (body_tenant(c, req, body, query_tenant, tenant))
        goto done;
    if (!(call = api_call(c, req, BUS_PUBLISH, on_published)))
        goto done;
    struct bus_publish *pub = &call->req.publish;
    if (publish_target(c, req, body, tenant, pub))
        goto done;
    pub->ephemeral = pub->target == EVENT_ROOM && json_is_true(ephemeral);
    pub->has_key = has_key;
    strcpy(pub->key, has_key ? key : "");
    if (!(pub->data = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY))) {
        api_error(c, WSFAN_ENOMEM, NULL, NULL, req->keep_alive);
        goto done;
    }
    pub->data_len = strlen(pub->data);
    if (!data_fits(c, req, pub->data_len))
        goto done;
    api_call_submit(c, call);
    call = NULL;
done:
    if (call)
        call_done(call);
    json_decref(body);
}

/* ---- POST /api/disconnect ---------------------------------------------------- */

static void on_disconnected(struct task *t, void *ctx)
{
    (void)ctx;
    struct call *call = (struct call *)t;
    struct client *c = reply_client(call);
    size_t len;
    if (c && !answer_error(c, call, "the disconnect was not sent"))
        respond_json(c, reply_api_disconnected(call->req.publish.local, &len), &len, reply_keep_alive(c));
    call_done(call);
}

/* {"user":U} with an optional "tenant": every connection of the user, on
 * every node, closes with 1008. It travels as a publish to the user does
 * (bus_publish.disconnect), so with Redis it reaches every node that has
 * one of them. */
static void serve_disconnect(struct client *c, const struct http_request *req, const char *query_tenant)
{
    json_t *body = json_body(c, req);
    if (!body)
        return;
    json_t *user = json_object_get(body, "user");
    char tenant[TENANT_MAX_LEN + 1], buf[KEY_MAX_LEN + 1];
    struct call *call;
    if (body_tenant(c, req, body, query_tenant, tenant))
        goto done;
    if (!user) {
        api_error(c, WSFAN_EBAD_COMMAND, NULL, "user is required", req->keep_alive);
        goto done;
    }
    if (!json_is_string(user) || !name_valid(json_string_value(user), json_string_length(user))) {
        api_error(c, WSFAN_EUSER_INVALID, NULL, NULL, req->keep_alive);
        goto done;
    }
    if (!(call = api_call(c, req, BUS_PUBLISH, on_disconnected)))
        goto done;
    call->req.publish.target = EVENT_USER;
    call->req.publish.disconnect = 1;
    strcpy(call->req.publish.name, name_key(tenant, json_string_value(user), buf));
    api_call_submit(c, call);
done:
    json_decref(body);
}

/* ---- GET /api/history, /api/presence, /api/rooms -------------------------------- */

/* The room of the query into room; or answers 400 and returns -1. */
static int query_room(struct client *c, const struct http_request *req, char room[NAME_MAX_LEN + 1])
{
    int n = http_query_get(req->query, "room", room, NAME_MAX_LEN + 1);
    if (n == -1) {
        api_error(c, WSFAN_EBAD_COMMAND, NULL, "the query must name a room: ?room=<room>", req->keep_alive);
        return -1;
    }
    if (n < 0 || !name_valid(room, (size_t)n)) {
        api_error(c, WSFAN_EROOM_INVALID, NULL, NULL, req->keep_alive);
        return -1;
    }
    return 0;
}

static void on_history(struct task *t, void *ctx)
{
    (void)ctx;
    struct call *call = (struct call *)t;
    struct client *c = reply_client(call);
    if (c && !answer_error(c, call, "history is not available for this room")) {
        size_t events_len, len;
        const char *events = store_batch_join(&call->req.history.store.batch, &events_len);
        respond_json(c, reply_api_history(name_of_key(call->req.history.room), events, events_len, &len), &len,
                     reply_keep_alive(c));
    }
    call_done(call);
}

static void serve_history(struct client *c, const struct http_request *req, const char *tenant)
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
        api_error(c, WSFAN_EBAD_COMMAND, NULL, "limit must be a whole number from 1 to 1000", req->keep_alive);
        return;
    }
    struct offset before_offset;
    n = http_query_get(req->query, "before", before, sizeof before);
    if (n == -2 || (n >= 0 && offset_parse(before, &before_offset))) {
        api_error(c, WSFAN_EBAD_COMMAND, NULL, "before must be an offset such as 1732312345678-0", req->keep_alive);
        return;
    }
    struct call *call = api_call(c, req, BUS_HISTORY, on_history);
    if (!call)
        return;
    struct bus_history *history = &call->req.history;
    char buf[KEY_MAX_LEN + 1];
    strcpy(history->room, name_key(tenant, room, buf));
    history->store.limit = (int)value;
    history->store.has_before = n >= 0;
    if (n >= 0)
        history->store.before = before_offset;
    api_call_submit(c, call);
}

static void on_presence(struct task *t, void *ctx)
{
    (void)ctx;
    struct call *call = (struct call *)t;
    struct client *c = reply_client(call);
    size_t len;
    if (c && !answer_error(c, call, "presence is not available"))
        respond_json(c, reply_api_presence(name_of_key(call->req.presence.room), call->req.presence.users, &len), &len,
                     reply_keep_alive(c));
    call_done(call);
}

static void serve_presence(struct client *c, const struct http_request *req, const char *tenant)
{
    char room[NAME_MAX_LEN + 1];
    if (query_room(c, req, room))
        return;
    struct call *call = api_call(c, req, BUS_PRESENCE, on_presence);
    if (!call)
        return;
    char buf[KEY_MAX_LEN + 1];
    strcpy(call->req.presence.room, name_key(tenant, room, buf));
    api_call_submit(c, call);
}

static void on_rooms(struct task *t, void *ctx)
{
    (void)ctx;
    struct call *call = (struct call *)t;
    struct client *c = reply_client(call);
    size_t len;
    if (c && !answer_error(c, call, "the room list is not available"))
        respond_json(c, reply_api_rooms(client_app(c)->cfg->node_id, call->req.rooms.rooms, &len), &len,
                     reply_keep_alive(c));
    call_done(call);
}

static void serve_rooms(struct client *c, const struct http_request *req, const char *tenant)
{
    struct call *call = api_call(c, req, BUS_ROOMS, on_rooms);
    if (!call)
        return;
    strcpy(call->req.rooms.tenant, tenant);
    api_call_submit(c, call);
}

/* ---- answered on the worker -------------------------------------------------- */

/* The whole process's numbers, whatever the tenant. */
static void serve_stats(struct client *c, const struct http_request *req, const char *tenant)
{
    (void)tenant;
    size_t len = 0;
    char *json = metrics_stats_json(client_app(c)->metrics, &len);
    respond_json(c, json, &len, req->keep_alive);
}

static void serve_metrics(struct client *c, const struct http_request *req, const char *tenant)
{
    (void)tenant;
    size_t len;
    char *text = metrics_prometheus(client_app(c)->metrics, &len);
    if (!text) {
        router_respond_text(c, 503, NULL, "out of memory", req->keep_alive);
        return;
    }
    router_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, text, len, req->keep_alive);
    free(text);
}

static void serve_healthz(struct client *c, const struct http_request *req, const char *tenant)
{
    (void)tenant;
    router_respond_text(c, 200, NULL, "ok", req->keep_alive);
}

static void serve_readyz(struct client *c, const struct http_request *req, const char *tenant)
{
    (void)tenant;
    struct app *app = client_app(c);
    if (atomic_load_explicit(app->draining, memory_order_relaxed))
        router_respond_text(c, 503, "Retry-After: 1\r\n", "not ready: shutting down", req->keep_alive);
    else if (bus_ready(app->bus))
        router_respond_text(c, 200, NULL, "ready", req->keep_alive);
    else
        router_respond_text(c, 503, "Retry-After: 1\r\n", "not ready: the bus or the store is not connected",
                          req->keep_alive);
}

static void serve_page(struct client *c, const struct http_request *req, const char *tenant)
{
    (void)tenant;
    const struct web_asset *a = web_asset_find(req->path);
    router_respond(c, 200, a->content_type, "Cache-Control: no-cache\r\n", (const char *)a->bytes, a->len,
                 req->keep_alive);
}

/* ---- routing ----------------------------------------------------------------- */

static const struct route routes[] = {
    {"/api/publish", M_POST, 1, ON_ADMIN, serve_publish},
    {"/api/disconnect", M_POST, 1, ON_ADMIN, serve_disconnect},
    {"/api/history", M_GET | M_HEAD, 1, ON_ADMIN, serve_history},
    {"/api/presence", M_GET | M_HEAD, 1, ON_ADMIN, serve_presence},
    {"/api/rooms", M_GET | M_HEAD, 1, ON_ADMIN, serve_rooms},
    {"/api/stats", M_GET | M_HEAD, 1, ON_ADMIN, serve_stats},
    {"/metrics", M_GET | M_HEAD, 1, ON_ADMIN, serve_metrics},
    {"/healthz", M_GET | M_HEAD, 0, ON_BOTH, serve_healthz},
    {"/readyz", M_GET | M_HEAD, 0, ON_BOTH, serve_readyz},
    /* Pages: the dashboard is the admin's, and loads the client. */
    {"/dashboard", M_GET | M_HEAD, 0, ON_ADMIN, serve_page},
    {"/wsfan.js", M_GET | M_HEAD, 0, ON_BOTH, serve_page},
};

static const struct route page_route = {NULL, M_GET | M_HEAD, 0, ON_PUBLIC, serve_page};

/* The route of path on the port c came in on, or NULL. */
static const struct route *route_find(const struct client *c, const char *path)
{
    const struct route *r = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0] && !r; i++)
        if (!strcmp(routes[i].path, path))
            r = &routes[i];
    if (!r && web_asset_find(path))
        r = &page_route;
    if (r && client_app(c)->cfg->admin_host[0] && !(r->on & (c->adm.admin ? ON_ADMIN : ON_PUBLIC)))
        return NULL;
    return r;
}

/* True when req carries the API key. Both sides are hashed first so that
 * the comparison takes the same time whatever the length. */
static int authorized(const struct config *cfg, const struct http_request *req)
{
    if (!cfg->api_key[0])
        return 1;
    const char *h = http_bearer(req);
    if (!h)
        return 0;
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

/* Who may use a guarded route (docs/protocol.md section 7): with
 * --api-key, whoever shows it (401); without, a loopback client that
 * names a loopback Host, so that a page whose DNS name was rebound to
 * 127.0.0.1 cannot use the API through a browser on this host (403). True
 * when c may; otherwise the answer is given. */
static int allowed(struct client *c, const struct http_request *req)
{
    const struct config *cfg = client_app(c)->cfg;
    if (cfg->api_key[0] ? authorized(cfg, req) : admission_local(c, req))
        return 1;
    if (cfg->api_key[0])
        api_error(c, WSFAN_EUNAUTHORIZED, "WWW-Authenticate: Bearer realm=\"wsfan\"\r\n", NULL, req->keep_alive);
    else
        api_error(c, WSFAN_EFORBIDDEN, NULL,
                  "without --api-key, the API answers only loopback clients that name a loopback Host",
                  req->keep_alive);
    return 0;
}

void api_route(struct client *c, const struct http_request *req)
{
    int json = is_api_path(req->path);
    const struct route *r = route_find(c, req->path);
    if (!r) {
        if (json)
            api_error(c, WSFAN_ENOT_FOUND, NULL, NULL, req->keep_alive);
        else
            router_respond_text(c, 404, NULL, "not found", req->keep_alive);
        return;
    }
    if (r->guarded && !allowed(c, req))
        return;
    if (!(method_bit(req->method) & r->methods)) {
        const char *allow = r->methods == M_POST ? "Allow: POST\r\n" : "Allow: GET, HEAD\r\n";
        if (json)
            api_error(c, WSFAN_EMETHOD_NOT_ALLOWED, allow, r->methods == M_POST ? "use POST" : "use GET",
                      req->keep_alive);
        else
            router_respond_text(c, 405, allow, "method not allowed", req->keep_alive);
        return;
    }
    char tenant[TENANT_MAX_LEN + 1] = "";
    int n = json ? http_query_get(req->query, "tenant", tenant, sizeof tenant) : -1;
    if (n == -2 || (n >= 0 && !name_tenant_valid(tenant, (size_t)n))) {
        api_error(c, WSFAN_EBAD_COMMAND, NULL, tenant_invalid, req->keep_alive);
        return;
    }
    if (n < 0)
        tenant[0] = '\0';
    r->serve(c, req, tenant);
}
