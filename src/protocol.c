/* protocol.c - JSON commands in, JSON events out (PROTOCOL.md sections 1-4).
 * Parses with jansson, checks every field, and either answers at once (ping,
 * errors) or submits a request to the bus and answers when it comes back.
 * A command error never closes the connection. Worker thread only. */
#include "protocol.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "conn.h"
#include "hub.h"
#include "log.h"
#include "names.h"
#include "server.h"


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

/* The join never happened: forget the pending membership, and let the bus
 * forget its count of it. */
static void join_failed(struct conn *c, struct bus_request *req)
{
    if (hub_room_remove(c->worker->hub, c, req->room) != HUB_OK)
        return;
    struct bus_request *leave = bus_request_create(BUS_LEAVE);
    if (!leave) {
        log_error("out of memory: room %s keeps a member until restart", req->room);
        return;
    }
    leave->worker = req->worker;
    strcpy(leave->room, req->room);
    strcpy(leave->user, req->user);
    bus_submit(c->worker->server->bus, leave);
}

static void send_joined(struct conn *c, struct bus_request *req, const char *ref)
{
    /* Live events up to the joined offset were in the replay, or before
     * the connection's time. */
    struct offset after;
    int has_after = offset_parse(req->store.offset, &after) == 0;
    if (hub_room_activate(c->worker->hub, c, req->room, has_after ? &after : NULL) == HUB_NOMEM) {
        conn_close(c, WS_CLOSE_INTERNAL, "out of memory");
        return;
    }
    struct store_batch *missed = &req->store.batch;
    send_fmt(c, "{\"type\":\"joined\"%s,\"room\":\"%s\",\"offset\":\"%s\",\"recovered\":%s,\"missed\":%zu}", ref,
             req->room, req->store.offset, req->store.recovered ? "true" : "false", missed->count);
    for (char *ev = missed->text, *end = missed->text + missed->len; ev && ev < end;) {
        char *nl = memchr(ev, '\n', (size_t)(end - ev));
        conn_send_text(c, ev, (size_t)(nl - ev));
        ev = nl + 1;
    }
}

static void send_rejoined(struct conn *c, const char *ref, const char *room)
{
    send_fmt(c, "{\"type\":\"joined\"%s,\"room\":\"%s\",\"offset\":null,\"recovered\":true,\"missed\":0}", ref,
             room);
}

static void send_history(struct conn *c, struct bus_request *req, const char *ref)
{
    size_t len;
    const char *events = store_batch_join(&req->store.batch, &len);
    send_fmt(c, "{\"type\":\"history\"%s,\"room\":\"%s\",\"messages\":[%.*s]}", ref, req->room, (int)len, events);
}

/* Runs on the asking worker when the bus is done with req. */
static void on_reply(struct task *t, void *ctx)
{
    (void)ctx;
    struct bus_request *req = (struct bus_request *)t;
    struct conn *c = req->conn;
    char refbuf[REF_TEXT_MAX + 8];
    const char *ref = ref_field(req->ref, refbuf, sizeof refbuf);
    if (c->state != CONN_WS || c->closed) {
        /* Closed meanwhile: nobody to answer. */
    } else if (req->error) {
        static const char *const what[] = {
            [BUS_JOIN] = "the join could not complete",   [BUS_LEAVE] = "the leave could not complete",
            [BUS_PUBLISH] = "the message was not published", [BUS_HISTORY] = "history is not available",
            [BUS_PRESENCE] = "presence is not available",
        };
        if (req->op == BUS_JOIN)
            join_failed(c, req);
        send_error(c, req->ref, req->error, what[req->op]);
    } else if (req->op == BUS_JOIN) {
        send_joined(c, req, ref);
    } else if (req->op == BUS_REJOIN && hub_is_member(c, req->room)) {
        send_rejoined(c, ref, req->room);
    } else if (req->op == BUS_REJOIN) {
        send_error(c, req->ref, "unavailable", "the join could not complete");
    } else if (req->op == BUS_LEAVE) {
        send_fmt(c, "{\"type\":\"left\"%s,\"room\":\"%s\"}", ref, req->room);
    } else if (req->op == BUS_PUBLISH && req->target != BUS_ROOM) {
        send_fmt(c, "{\"type\":\"ack\"%s}", ref);
    } else if (req->op == BUS_PUBLISH) {
        char offset[OFFSET_MAX_LEN + 2] = "null";
        if (req->store.offset[0])
            snprintf(offset, sizeof offset, "\"%s\"", req->store.offset);
        send_fmt(c, "{\"type\":\"ack\"%s,\"offset\":%s}", ref, offset);
    } else if (req->op == BUS_HISTORY) {
        send_history(c, req, ref);
    } else if (req->op == BUS_PRESENCE) {
        send_fmt(c, "{\"type\":\"presence\"%s,\"room\":\"%s\",\"users\":%s}", ref, req->room, req->users);
    }
    c->pending--;
    conn_unref(c);
    bus_request_free(req);
}

/* ---- running commands ------------------------------------------------------ */

/* A request from c for cmd that comes back to on_reply, or NULL (error
 * sent). Takes cmd's data. */
static struct bus_request *request(struct conn *c, struct command *cmd, enum bus_op op)
{
    if (c->pending >= PENDING_MAX) {
        /* A client that does not wait for replies must not queue work
         * without bound on the bus. */
        send_error(c, cmd->ref, "rate_limited", "too many commands waiting for replies; wait for some");
        return NULL;
    }
    struct bus_request *req = bus_request_create(op);
    if (!req) {
        send_error(c, cmd->ref, "unavailable", "out of memory");
        return NULL;
    }
    req->on_reply = on_reply;
    req->conn = c;
    conn_ref(c);
    c->pending++;
    req->worker = c->worker->index;
    req->conn_seq = c->seq;
    strcpy(req->ref, cmd->ref);
    strcpy(req->room, cmd->room);
    if (c->user)
        strcpy(req->user, c->user);
    req->data = cmd->data;
    req->data_len = cmd->data_len;
    cmd->data = NULL;
    return req;
}

/* True when c is in the command's room; else sends not_member. */
static int require_member(struct conn *c, const struct command *cmd)
{
    if (hub_is_member(c, cmd->room))
        return 1;
    send_error(c, cmd->ref, "not_member", "join the room first");
    return 0;
}

static void run_join(struct conn *c, struct command *cmd)
{
    char refbuf[REF_TEXT_MAX + 8];
    if (hub_is_member(c, cmd->room)) {
        /* Already a member: nothing was missed, nothing changes. While the
         * first join is still on its way, the answer waits behind it. */
        struct bus_request *req;
        if (!hub_is_pending(c, cmd->room))
            send_rejoined(c, ref_field(cmd->ref, refbuf, sizeof refbuf), cmd->room);
        else if ((req = request(c, cmd, BUS_REJOIN)))
            bus_submit(c->worker->server->bus, req);
        return;
    }
    if (hub_room_count(c) >= (uint32_t)c->worker->server->cfg->max_rooms) {
        send_error(c, cmd->ref, "too_many_rooms", "this connection is in as many rooms as allowed");
        return;
    }
    if (hub_room_add(c->worker->hub, c, cmd->room) != HUB_OK) {
        send_error(c, cmd->ref, "unavailable", "out of memory");
        return;
    }
    struct bus_request *req = request(c, cmd, BUS_JOIN);
    if (!req) {
        hub_room_remove(c->worker->hub, c, cmd->room);
        return;
    }
    req->has_since = cmd->has_since;
    req->store.since = cmd->since;
    bus_submit(c->worker->server->bus, req);
}

static void run_command(struct conn *c, struct command *cmd)
{
    struct bus_request *req;
    char refbuf[REF_TEXT_MAX + 8];
    switch (cmd->type) {
    case CMD_PING:
        send_fmt(c, "{\"type\":\"pong\"%s}", ref_field(cmd->ref, refbuf, sizeof refbuf));
        return;
    case CMD_JOIN:
        run_join(c, cmd);
        return;
    case CMD_LEAVE:
        if (!require_member(c, cmd) || !(req = request(c, cmd, BUS_LEAVE)))
            return;
        hub_room_remove(c->worker->hub, c, cmd->room);
        break;
    case CMD_PUBLISH:
        if (!require_member(c, cmd) || !(req = request(c, cmd, BUS_PUBLISH)))
            return;
        req->target = BUS_ROOM;
        req->ephemeral = cmd->ephemeral;
        req->echo = cmd->echo;
        break;
    case CMD_SEND:
        if (!(req = request(c, cmd, BUS_PUBLISH)))
            return;
        req->target = BUS_USER;
        req->echo = 1;
        strcpy(req->to, cmd->user);
        break;
    case CMD_BROADCAST:
        if (!c->worker->server->cfg->allow_broadcast) {
            send_error(c, cmd->ref, "forbidden", "broadcast is not allowed on this server");
            return;
        }
        if (!(req = request(c, cmd, BUS_PUBLISH)))
            return;
        req->target = BUS_ALL;
        req->echo = 1;
        break;
    case CMD_HISTORY:
        if (!require_member(c, cmd) || !(req = request(c, cmd, BUS_HISTORY)))
            return;
        req->store.limit = cmd->limit;
        req->store.has_before = cmd->has_before;
        req->store.before = cmd->before;
        break;
    case CMD_PRESENCE:
        if (!require_member(c, cmd) || !(req = request(c, cmd, BUS_PRESENCE)))
            return;
        break;
    default:
        return;
    }
    bus_submit(c->worker->server->bus, req);
}

void protocol_handle(struct conn *c, const char *text, size_t len)
{
    struct command cmd;
    struct command_error err;
    if (command_parse(text, len, &cmd, &err)) {
        metrics_message_in(&c->worker->metrics, METRICS_IN_INVALID);
        send_error(c, cmd.ref, err.code, err.message);
    } else {
        metrics_message_in(&c->worker->metrics, (int)cmd.type);
        run_command(c, &cmd);
    }
    command_free(&cmd);
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
