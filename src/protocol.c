/* protocol.c - JSON commands in, JSON events out (PROTOCOL.md sections 1-4).
 * Parses with jansson, checks every field, and either answers at once (ping,
 * errors) or submits a request to the bus and answers when it comes back.
 * A command error never closes the connection. Worker thread only. */
#include "protocol.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "conn.h"
#include "hub.h"
#include "log.h"
#include "names.h"
#include "server.h"

#define REF_MAX_LEN 64
#define HISTORY_DEFAULT_LIMIT 50
#define HISTORY_MAX_LIMIT 1000

/* printf into one text frame for c. */
static void send_fmt(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void send_fmt(struct conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *text = NULL;
    int n = vasprintf(&text, fmt, ap);
    va_end(ap);
    if (n < 0) {
        conn_close(c, WS_CLOSE_INTERNAL, "out of memory");
        return;
    }
    conn_send_text(c, text, (size_t)n);
    free(text);
}

/* ",\"ref\":<ref>" when the command had a ref, else "". */
static const char *ref_field(const char *ref, char *buf, size_t cap)
{
    if (!ref[0])
        return "";
    snprintf(buf, cap, ",\"ref\":%s", ref);
    return buf;
}

/* The one error event builder. ref is JSON text or "". */
static void send_error(struct conn *c, const char *ref, const char *code, const char *message)
{
    char refbuf[REF_TEXT_MAX + 8];
    json_t *m = json_string(message);
    char *quoted = m ? json_dumps(m, JSON_ENCODE_ANY) : NULL;
    json_decref(m);
    send_fmt(c, "{\"type\":\"error\"%s,\"code\":\"%s\",\"message\":%s}", ref_field(ref, refbuf, sizeof refbuf), code,
             quoted ? quoted : "\"\"");
    free(quoted);
}

void protocol_welcome(struct conn *c)
{
    char session[32], user[NAME_MAX_LEN + 3] = "null";
    conn_session_id(c, session, sizeof session);
    const struct config *cfg = c->worker->server->cfg;
    if (c->user)
        snprintf(user, sizeof user, "\"%s\"", c->user);
    send_fmt(c, "{\"type\":\"welcome\",\"session\":\"%s\",\"user\":%s,\"node\":\"%s\",\"heartbeat\":%d}", session, user,
             cfg->node_id, cfg->heartbeat);
    if (!c->user)
        return;
    struct bus_request *req = bus_request_create(BUS_ONLINE);
    if (!req || hub_user_add(c->worker->hub, c)) {
        free(req);
        conn_close(c, WS_CLOSE_INTERNAL, "out of memory");
        return;
    }
    req->worker = c->worker->index;
    strcpy(req->user, c->user);
    bus_submit(c->worker->server->bus, req);
}

/* ---- replies from the bus ------------------------------------------------- */

/* The connection a reply is for, or NULL when it has closed meanwhile. */
static struct conn *reply_conn(struct bus_request *req)
{
    return req->conn->state == CONN_WS && !req->conn->closed ? req->conn : NULL;
}

static void reply_done(struct bus_request *req)
{
    conn_unref(req->conn);
    bus_request_free(req);
}

static void on_joined(struct task *t, void *ctx)
{
    (void)ctx;
    struct bus_request *req = (struct bus_request *)t;
    struct conn *c = reply_conn(req);
    char refbuf[REF_TEXT_MAX + 8];
    if (!c)
        goto done;
    if (req->error) {
        /* The join never happened: forget the pending membership. */
        if (hub_room_remove(c->worker->hub, c, req->room) == HUB_OK) {
            struct bus_request *leave = bus_request_create(BUS_LEAVE);
            if (leave) {
                leave->worker = req->worker;
                strcpy(leave->room, req->room);
                strcpy(leave->user, req->user);
                bus_submit(c->worker->server->bus, leave);
            }
        }
        send_error(c, req->ref, req->error, "the join could not complete");
        goto done;
    }
    if (hub_room_activate(c->worker->hub, c, req->room) == HUB_NOMEM) {
        conn_close(c, WS_CLOSE_INTERNAL, "out of memory");
        goto done;
    }
    struct store_batch *missed = &req->store.batch;
    send_fmt(c, "{\"type\":\"joined\"%s,\"room\":\"%s\",\"offset\":\"%s\",\"recovered\":%s,\"missed\":%zu}",
             ref_field(req->ref, refbuf, sizeof refbuf), req->room, req->store.offset,
             req->store.recovered ? "true" : "false", missed->count);
    for (char *ev = missed->text, *end = missed->text + missed->len; ev && ev < end;) {
        char *nl = memchr(ev, '\n', (size_t)(end - ev));
        conn_send_text(c, ev, (size_t)(nl - ev));
        ev = nl + 1;
    }
done:
    reply_done(req);
}

static void on_left(struct task *t, void *ctx)
{
    (void)ctx;
    struct bus_request *req = (struct bus_request *)t;
    struct conn *c = reply_conn(req);
    char refbuf[REF_TEXT_MAX + 8];
    if (c)
        send_fmt(c, "{\"type\":\"left\"%s,\"room\":\"%s\"}", ref_field(req->ref, refbuf, sizeof refbuf), req->room);
    reply_done(req);
}

static void on_acked(struct task *t, void *ctx)
{
    (void)ctx;
    struct bus_request *req = (struct bus_request *)t;
    struct conn *c = reply_conn(req);
    char refbuf[REF_TEXT_MAX + 8], offset[OFFSET_MAX_LEN + 2] = "null";
    if (!c)
        goto done;
    if (req->error) {
        send_error(c, req->ref, req->error, "the message was not published");
        goto done;
    }
    if (req->target != BUS_ROOM) {
        send_fmt(c, "{\"type\":\"ack\"%s}", ref_field(req->ref, refbuf, sizeof refbuf));
        goto done;
    }
    if (req->store.offset[0])
        snprintf(offset, sizeof offset, "\"%s\"", req->store.offset);
    send_fmt(c, "{\"type\":\"ack\"%s,\"offset\":%s}", ref_field(req->ref, refbuf, sizeof refbuf), offset);
done:
    reply_done(req);
}

static void on_history(struct task *t, void *ctx)
{
    (void)ctx;
    struct bus_request *req = (struct bus_request *)t;
    struct conn *c = reply_conn(req);
    char refbuf[REF_TEXT_MAX + 8];
    if (!c)
        goto done;
    if (req->error) {
        send_error(c, req->ref, req->error, "history is not available for this room");
        goto done;
    }
    /* The batch is newline-separated events: commas make it an array. */
    struct store_batch *b = &req->store.batch;
    for (size_t i = 0; i < b->len; i++)
        if (b->text[i] == '\n')
            b->text[i] = i + 1 == b->len ? ' ' : ',';
    send_fmt(c, "{\"type\":\"history\"%s,\"room\":\"%s\",\"messages\":[%.*s]}",
             ref_field(req->ref, refbuf, sizeof refbuf), req->room, (int)(b->len ? b->len - 1 : 0),
             b->text ? b->text : "");
done:
    reply_done(req);
}

static void on_presence(struct task *t, void *ctx)
{
    (void)ctx;
    struct bus_request *req = (struct bus_request *)t;
    struct conn *c = reply_conn(req);
    char refbuf[REF_TEXT_MAX + 8];
    if (!c)
        goto done;
    if (req->error)
        send_error(c, req->ref, req->error, "presence is not available");
    else
        send_fmt(c, "{\"type\":\"presence\"%s,\"room\":\"%s\",\"users\":%s}",
                 ref_field(req->ref, refbuf, sizeof refbuf), req->room, req->users);
done:
    reply_done(req);
}

/* ---- commands ----------------------------------------------------------- */

struct command {
    struct conn *c;
    json_t *body;
    char ref[REF_TEXT_MAX]; /* JSON text or "" */
};

/* A request from c that comes back to on_reply, or NULL (error sent). */
static struct bus_request *request(struct command *cmd, enum bus_op op, task_fn on_reply)
{
    struct conn *c = cmd->c;
    struct bus_request *req = bus_request_create(op);
    if (!req) {
        send_error(c, cmd->ref, "unavailable", "out of memory");
        return NULL;
    }
    req->on_reply = on_reply;
    req->conn = c;
    conn_ref(c);
    req->worker = c->worker->index;
    req->conn_seq = c->seq;
    strcpy(req->ref, cmd->ref);
    if (c->user)
        strcpy(req->user, c->user);
    return req;
}

/* Reads a name field into out. Returns 0, or -1 after sending the error:
 * bad_command when missing or not a string, invalid_code when it breaks
 * the rules of PROTOCOL.md section 4. */
static int name_field(struct command *cmd, const char *key, const char *invalid_code, char out[NAME_MAX_LEN + 1])
{
    json_t *v = json_object_get(cmd->body, key);
    char msg[96];
    if (!json_is_string(v)) {
        snprintf(msg, sizeof msg, "%s is required and must be a string", key);
        send_error(cmd->c, cmd->ref, "bad_command", msg);
        return -1;
    }
    if (!name_valid(json_string_value(v), json_string_length(v))) {
        snprintf(msg, sizeof msg, "%s must be 1 to 128 characters of A-Z a-z 0-9 _ . : -", key);
        send_error(cmd->c, cmd->ref, invalid_code, msg);
        return -1;
    }
    strcpy(out, json_string_value(v));
    return 0;
}

/* A room field naming a room that c has joined. */
static int member_room(struct command *cmd, char out[NAME_MAX_LEN + 1])
{
    if (name_field(cmd, "room", "room_invalid", out))
        return -1;
    if (!hub_is_member(cmd->c, out)) {
        send_error(cmd->c, cmd->ref, "not_member", "join the room first");
        return -1;
    }
    return 0;
}

/* An optional boolean; returns 0 or 1, or -1 after sending bad_command. */
static int bool_field(struct command *cmd, const char *key, int dflt)
{
    json_t *v = json_object_get(cmd->body, key);
    if (!v)
        return dflt;
    if (json_is_boolean(v))
        return json_is_true(v);
    char msg[64];
    snprintf(msg, sizeof msg, "%s must be true or false", key);
    send_error(cmd->c, cmd->ref, "bad_command", msg);
    return -1;
}

/* An optional offset; returns 1 when present, 0 when absent, -1 after
 * sending bad_command. */
static int offset_field(struct command *cmd, const char *key, struct offset *out)
{
    json_t *v = json_object_get(cmd->body, key);
    if (!v)
        return 0;
    if (json_is_string(v) && offset_parse(json_string_value(v), out) == 0)
        return 1;
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be an offset string such as \"1732312345678-0\"", key);
    send_error(cmd->c, cmd->ref, "bad_command", msg);
    return -1;
}

/* The data field as JSON text into req. Returns 0 or -1 (error sent). */
static int data_field(struct command *cmd, struct bus_request *req)
{
    json_t *v = json_object_get(cmd->body, "data");
    if (!v) {
        send_error(cmd->c, cmd->ref, "bad_command", "data is required");
        return -1;
    }
    req->data = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!req->data) {
        send_error(cmd->c, cmd->ref, "unavailable", "out of memory");
        return -1;
    }
    req->data_len = strlen(req->data);
    return 0;
}

static void cmd_ping(struct command *cmd)
{
    char refbuf[REF_TEXT_MAX + 8];
    send_fmt(cmd->c, "{\"type\":\"pong\"%s}", ref_field(cmd->ref, refbuf, sizeof refbuf));
}

static void cmd_join(struct command *cmd)
{
    struct conn *c = cmd->c;
    char room[NAME_MAX_LEN + 1];
    struct offset since;
    if (name_field(cmd, "room", "room_invalid", room))
        return;
    int has_since = offset_field(cmd, "since", &since);
    if (has_since < 0)
        return;
    if (hub_is_member(c, room)) {
        /* Already a member: nothing was missed, nothing changes. */
        char refbuf[REF_TEXT_MAX + 8];
        send_fmt(c, "{\"type\":\"joined\"%s,\"room\":\"%s\",\"offset\":null,\"recovered\":true,\"missed\":0}",
                 ref_field(cmd->ref, refbuf, sizeof refbuf), room);
        return;
    }
    if (hub_room_count(c) >= (uint32_t)c->worker->server->cfg->max_rooms) {
        send_error(c, cmd->ref, "too_many_rooms", "this connection is in as many rooms as allowed");
        return;
    }
    struct bus_request *req = request(cmd, BUS_JOIN, on_joined);
    if (!req)
        return;
    if (hub_room_add(c->worker->hub, c, room) != HUB_OK) {
        conn_unref(c);
        bus_request_free(req);
        send_error(c, cmd->ref, "unavailable", "out of memory");
        return;
    }
    strcpy(req->room, room);
    req->has_since = has_since;
    req->store.since = since;
    bus_submit(c->worker->server->bus, req);
}

static void cmd_leave(struct command *cmd)
{
    char room[NAME_MAX_LEN + 1];
    if (member_room(cmd, room))
        return;
    struct bus_request *req = request(cmd, BUS_LEAVE, on_left);
    if (!req)
        return;
    hub_room_remove(cmd->c->worker->hub, cmd->c, room);
    strcpy(req->room, room);
    bus_submit(cmd->c->worker->server->bus, req);
}

static void cmd_publish(struct command *cmd)
{
    char room[NAME_MAX_LEN + 1];
    if (member_room(cmd, room))
        return;
    int ephemeral = bool_field(cmd, "ephemeral", 0);
    int echo = ephemeral < 0 ? -1 : bool_field(cmd, "echo", 1);
    if (echo < 0)
        return;
    struct bus_request *req = request(cmd, BUS_PUBLISH, on_acked);
    if (!req)
        return;
    if (data_field(cmd, req)) {
        conn_unref(cmd->c);
        bus_request_free(req);
        return;
    }
    req->target = BUS_ROOM;
    strcpy(req->room, room);
    req->ephemeral = ephemeral;
    req->echo = echo;
    bus_submit(cmd->c->worker->server->bus, req);
}

static void cmd_send(struct command *cmd)
{
    char user[NAME_MAX_LEN + 1];
    if (name_field(cmd, "user", "user_invalid", user))
        return;
    struct bus_request *req = request(cmd, BUS_PUBLISH, on_acked);
    if (!req)
        return;
    if (data_field(cmd, req)) {
        conn_unref(cmd->c);
        bus_request_free(req);
        return;
    }
    req->target = BUS_USER;
    req->echo = 1;
    strcpy(req->to, user);
    bus_submit(cmd->c->worker->server->bus, req);
}

static void cmd_broadcast(struct command *cmd)
{
    if (!cmd->c->worker->server->cfg->allow_broadcast) {
        send_error(cmd->c, cmd->ref, "forbidden", "broadcast is not allowed on this server");
        return;
    }
    struct bus_request *req = request(cmd, BUS_PUBLISH, on_acked);
    if (!req)
        return;
    if (data_field(cmd, req)) {
        conn_unref(cmd->c);
        bus_request_free(req);
        return;
    }
    req->target = BUS_ALL;
    req->echo = 1;
    bus_submit(cmd->c->worker->server->bus, req);
}

static void cmd_history(struct command *cmd)
{
    char room[NAME_MAX_LEN + 1];
    struct offset before;
    if (member_room(cmd, room))
        return;
    json_t *limit = json_object_get(cmd->body, "limit");
    json_int_t n = HISTORY_DEFAULT_LIMIT;
    if (limit) {
        if (!json_is_integer(limit) || json_integer_value(limit) < 1 || json_integer_value(limit) > HISTORY_MAX_LIMIT) {
            send_error(cmd->c, cmd->ref, "bad_command", "limit must be an integer from 1 to 1000");
            return;
        }
        n = json_integer_value(limit);
    }
    int has_before = offset_field(cmd, "before", &before);
    if (has_before < 0)
        return;
    struct bus_request *req = request(cmd, BUS_HISTORY, on_history);
    if (!req)
        return;
    strcpy(req->room, room);
    req->store.limit = (int)n;
    req->store.has_before = has_before;
    req->store.before = before;
    bus_submit(cmd->c->worker->server->bus, req);
}

static void cmd_presence(struct command *cmd)
{
    char room[NAME_MAX_LEN + 1];
    if (member_room(cmd, room))
        return;
    struct bus_request *req = request(cmd, BUS_PRESENCE, on_presence);
    if (!req)
        return;
    strcpy(req->room, room);
    bus_submit(cmd->c->worker->server->bus, req);
}

static const struct {
    const char *type;
    void (*run)(struct command *cmd);
} commands[] = {
    {"join", cmd_join},         {"leave", cmd_leave},     {"publish", cmd_publish},   {"send", cmd_send},
    {"broadcast", cmd_broadcast}, {"history", cmd_history}, {"presence", cmd_presence}, {"ping", cmd_ping},
};

/* ref must be a string or an integer of at most 64 bytes; its JSON text
 * goes to out. Returns 0, or -1 when it is not allowed. */
static int ref_text(json_t *ref, char out[REF_TEXT_MAX])
{
    out[0] = '\0';
    if (!ref)
        return 0;
    if (!(json_is_string(ref) && json_string_length(ref) <= REF_MAX_LEN) && !json_is_integer(ref))
        return -1;
    /* A 64-byte string can grow with escapes; refuse what does not fit. */
    return json_dumpb(ref, out, REF_TEXT_MAX - 1, JSON_ENCODE_ANY) < REF_TEXT_MAX - 1 ? 0 : -1;
}

void protocol_handle(struct conn *c, const char *text, size_t len)
{
    json_error_t err;
    struct command cmd = {.c = c};
    cmd.body = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
    if (!json_is_object(cmd.body)) {
        send_error(c, "", "bad_json", cmd.body ? "a command must be a JSON object" : err.text);
        json_decref(cmd.body);
        return;
    }
    if (ref_text(json_object_get(cmd.body, "ref"), cmd.ref)) {
        send_error(c, "", "bad_command", "ref must be a string of at most 64 bytes or an integer");
        goto done;
    }
    json_t *type = json_object_get(cmd.body, "type");
    if (!json_is_string(type)) {
        send_error(c, cmd.ref, "bad_command", "type is required and must be a string");
        goto done;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(json_string_value(type), commands[i].type)) {
            commands[i].run(&cmd);
            goto done;
        }
    send_error(c, cmd.ref, "unknown_type", "unknown command type");
done:
    json_decref(cmd.body);
}

/* ---- closing ------------------------------------------------------------ */

static void leave_silently(struct conn *c, const char *room)
{
    struct bus_request *req = bus_request_create(BUS_LEAVE);
    if (!req) {
        log_error("out of memory: room %s keeps a member until restart", room);
        return;
    }
    req->worker = c->worker->index;
    strcpy(req->room, room);
    if (c->user)
        strcpy(req->user, c->user);
    bus_submit(c->worker->server->bus, req);
}

void protocol_conn_closed(struct conn *c)
{
    struct hub *h = c->worker->hub;
    hub_conn_leave_all(h, c, leave_silently);
    if (!c->user)
        return;
    hub_user_remove(h, c);
    struct bus_request *req = bus_request_create(BUS_OFFLINE);
    if (!req) {
        log_error("out of memory: user %s stays routed here until restart", c->user);
        return;
    }
    req->worker = c->worker->index;
    strcpy(req->user, c->user);
    bus_submit(c->worker->server->bus, req);
}
