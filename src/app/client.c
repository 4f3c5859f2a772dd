/* client.c - one WebSocket session: commands in (docs/protocol.md section 2),
 * replies and events out (section 3). Parses each text message
 * (codec/command.c), checks membership and limits, and either answers at
 * once (ping, errors) or hands a call to the bus and answers when it comes
 * back to this worker. A command error never closes the connection. See
 * client.h. */
#include "app/client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "codec/http.h"
#include "codec/reply.h"
#include "core/error.h"
#include "core/log.h"
#include "net/loop.h"

/* A connection that goes on sending while refused by --rate-limit for
 * longer than this is closed with 1008; a pause of RATE_PAUSE_MS without
 * a refusal ends the count (docs/protocol.md section 1a, "Limits"). */
#define RATE_ABUSE_MS 10000
#define RATE_PAUSE_MS 1000

/* ---- sending -------------------------------------------------------------- */

/* Sends text (malloc'ed by a reply builder, NULL when that ran out of
 * memory) of *len bytes and frees it. len is read here, after the builder
 * in the caller's argument list has set it. */
static void send_reply(struct client *c, char *text, const size_t *len)
{
    if (!text) {
        conn_close(&c->conn, WS_CLOSE_INTERNAL, "out of memory");
        return;
    }
    conn_send_text(&c->conn, text, *len);
    free(text);
}

/* The one error event sender. message NULL: the error's own line. */
static void send_error(struct client *c, const char *ref, int err, const char *message)
{
    size_t len;
    send_reply(c, reply_error(ref, wsfan_error_code(err), message ? message : wsfan_strerror(err), &len), &len);
}

/* ---- calls ---------------------------------------------------------------- */

struct call *call_create(struct client *c, enum bus_op op, task_fn on_reply)
{
    struct call *call = calloc(1, sizeof *call);
    if (!call)
        return NULL;
    call->req.base.op = op;
    call->req.base.worker = c->conn.loop->index;
    call->req.base.on_reply = on_reply;
    call->client = c;
    conn_ref(&c->conn);
    return call;
}

void call_done(struct call *call)
{
    conn_unref(&call->client->conn);
    bus_request_free(&call->req.base);
}

struct bus_request *app_request(size_t size, enum bus_op op, int worker)
{
    struct bus_request *req = calloc(1, size);
    if (req) {
        req->op = op;
        req->worker = worker;
    }
    return req;
}

/* Tells the bus, without wanting an answer, that c left room. */
static void submit_leave(struct client *c, const char *room)
{
    struct bus_leave *req = (struct bus_leave *)app_request(sizeof *req, BUS_LEAVE, c->conn.loop->index);
    if (!req) {
        log_error("out of memory: room %s keeps a member until restart", room);
        return;
    }
    strcpy(req->room, room);
    if (c->user)
        strcpy(req->user, c->user);
    bus_submit(client_app(c)->bus, &req->base);
}

/* Tells the bus that a connection of c's user opened or closed. */
static int submit_user(struct client *c, enum bus_op op)
{
    struct bus_user *req = (struct bus_user *)app_request(sizeof *req, op, c->conn.loop->index);
    if (!req)
        return -1;
    strcpy(req->user, c->user);
    bus_submit(client_app(c)->bus, &req->base);
    return 0;
}

/* ---- welcome -------------------------------------------------------------- */

void client_start(struct client *c)
{
    const struct config *cfg = client_app(c)->cfg;
    char session[48];
    snprintf(session, sizeof session, "%d.%llu", c->conn.loop->index, (unsigned long long)c->conn.seq);
    size_t len;
    send_reply(c, reply_welcome(session, c->user, cfg->node_id, cfg->heartbeat, &len), &len);
    if (!c->user)
        return;
    if (hub_user_add(client_app(c)->hub, c) || submit_user(c, BUS_ONLINE))
        conn_close(&c->conn, WS_CLOSE_INTERNAL, "out of memory");
}

/* ---- replies from the bus ------------------------------------------------- */

/* The join never happened: forget the pending membership, and let the bus
 * forget its count of it. */
static void join_failed(struct client *c, const char *room)
{
    if (hub_room_remove(client_app(c)->hub, c, room) == HUB_OK)
        submit_leave(c, room);
}

static void send_joined(struct client *c, struct call *call)
{
    struct bus_join *req = &call->req.join;
    /* Live events up to the joined offset were in the replay, or before
     * the connection's time. */
    struct offset after;
    int has_after = offset_parse(req->store.offset, &after) == 0;
    if (hub_room_activate(client_app(c)->hub, c, req->room, has_after ? &after : NULL) == HUB_NOMEM) {
        conn_close(&c->conn, WS_CLOSE_INTERNAL, "out of memory");
        return;
    }
    struct store_batch *missed = &req->store.batch;
    size_t len;
    send_reply(c, reply_joined(call->ref, req->room, req->store.offset, req->store.recovered, missed->count, &len), &len);
    for (char *ev = missed->text, *end = missed->text + missed->len; ev && ev < end;) {
        char *nl = memchr(ev, '\n', (size_t)(end - ev));
        conn_send_text(&c->conn, ev, (size_t)(nl - ev));
        ev = nl + 1;
    }
}

static void send_rejoined(struct client *c, const char *ref, const char *room)
{
    size_t len;
    send_reply(c, reply_joined(ref, room, NULL, 1, 0, &len), &len);
}

/* What could not be done, for the error of a failed call. */
static const char *failed_what(enum bus_op op)
{
    switch (op) {
    case BUS_JOIN: return "the join could not complete";
    case BUS_LEAVE: return "the leave could not complete";
    case BUS_PUBLISH: return "the message was not published";
    case BUS_HISTORY: return "history is not available";
    case BUS_PRESENCE: return "presence is not available";
    default: return NULL;
    }
}

static void send_result(struct client *c, struct call *call)
{
    struct bus_request *req = &call->req.base;
    size_t len;
    switch (req->op) {
    case BUS_JOIN:
        send_joined(c, call);
        return;
    case BUS_REJOIN:
        if (hub_is_member(c, call->req.join.room))
            send_rejoined(c, call->ref, call->req.join.room);
        else
            send_error(c, call->ref, WSFAN_EUNAVAILABLE, "the join could not complete");
        return;
    case BUS_LEAVE:
        send_reply(c, reply_left(call->ref, call->req.leave.room, &len), &len);
        return;
    case BUS_PUBLISH:
        send_reply(c, reply_ack(call->ref, call->req.publish.target == EVENT_ROOM, call->req.publish.store.offset, &len), &len);
        return;
    case BUS_HISTORY: {
        size_t events_len;
        const char *events = store_batch_join(&call->req.history.store.batch, &events_len);
        send_reply(c, reply_history(call->ref, call->req.history.room, events, events_len, &len), &len);
        return;
    }
    case BUS_PRESENCE:
        send_reply(c, reply_presence(call->ref, call->req.presence.room, call->req.presence.users, &len), &len);
        return;
    default:
        return;
    }
}

/* Answers one call that came back, in its turn, and ends it. */
static void answer(struct client *c, struct call *call)
{
    if (c->conn.state != CONN_WS || c->conn.closed) {
        /* Closed meanwhile: nobody to answer. */
    } else if (call->req.base.error) {
        if (call->req.base.op == BUS_JOIN)
            join_failed(c, call->req.join.room);
        send_error(c, call->ref, call->req.base.error, failed_what(call->req.base.op));
    } else {
        send_result(c, call);
    }
    c->pending--;
    call_done(call);
}

/* Keeps call until the calls before it are answered; the list is in the
 * order of the calls. */
static void park(struct client *c, struct call *call)
{
    uint32_t distance = call->seq - c->next_reply;
    struct call **at = &c->parked;
    while (*at && (*at)->seq - c->next_reply < distance)
        at = &(*at)->next_parked;
    call->next_parked = *at;
    *at = call;
}

/* Runs on this worker when the bus is done with a command's call. Replies
 * that go through the bus keep the order of the commands (docs/protocol.md
 * section 2), although the bus may finish them in another (a join waiting
 * for its subscription, a read that takes longer): one that comes early
 * waits for those before it. */
static void on_reply(struct task *t, void *ctx)
{
    (void)ctx;
    struct call *call = (struct call *)t;
    struct client *c = call->client;
    if (call->seq != c->next_reply) {
        park(c, call);
        return;
    }
    conn_ref(&c->conn); /* the last call's end may be the client's */
    answer(c, call);
    c->next_reply++;
    while (c->parked && c->parked->seq == c->next_reply) {
        struct call *next = c->parked;
        c->parked = next->next_parked;
        answer(c, next);
        c->next_reply++;
    }
    conn_unref(&c->conn);
}

/* ---- running commands ------------------------------------------------------ */

/* A call from c for cmd that comes back to on_reply, or NULL (error sent). */
static struct call *command_call(struct client *c, const struct command *cmd, enum bus_op op)
{
    if (c->pending >= PENDING_MAX) {
        /* A client that does not wait for replies must not queue work
         * without bound on the bus. */
        send_error(c, cmd->ref, WSFAN_ERATE_LIMITED, NULL);
        return NULL;
    }
    struct call *call = call_create(c, op, on_reply);
    if (!call) {
        send_error(c, cmd->ref, WSFAN_ENOMEM, NULL);
        return NULL;
    }
    c->pending++;
    call->seq = c->next_call++;
    strcpy(call->ref, cmd->ref);
    return call;
}

/* True when c is in the command's room; else sends not_member. */
static int require_member(struct client *c, const struct command *cmd)
{
    if (hub_is_member(c, cmd->room))
        return 1;
    send_error(c, cmd->ref, WSFAN_ENOT_MEMBER, NULL);
    return 0;
}

static void run_join(struct client *c, struct command *cmd)
{
    struct app *app = client_app(c);
    struct call *call;
    if (hub_is_member(c, cmd->room)) {
        /* Already a member: nothing was missed, nothing changes. While the
         * first join is still on its way, the answer waits behind it. */
        if (!hub_is_pending(c, cmd->room)) {
            send_rejoined(c, cmd->ref, cmd->room);
        } else if ((call = command_call(c, cmd, BUS_REJOIN))) {
            strcpy(call->req.join.room, cmd->room);
            bus_submit(app->bus, &call->req.base);
        }
        return;
    }
    if (hub_room_count(c) >= (uint32_t)app->cfg->max_rooms) {
        send_error(c, cmd->ref, WSFAN_ETOO_MANY_ROOMS, NULL);
        return;
    }
    if (hub_room_add(app->hub, c, cmd->room) != HUB_OK) {
        send_error(c, cmd->ref, WSFAN_ENOMEM, NULL);
        return;
    }
    if (!(call = command_call(c, cmd, BUS_JOIN))) {
        hub_room_remove(app->hub, c, cmd->room);
        return;
    }
    struct bus_join *req = &call->req.join;
    strcpy(req->room, cmd->room);
    if (c->user)
        strcpy(req->user, c->user);
    req->has_since = cmd->has_since;
    req->store.since = cmd->since;
    bus_submit(app->bus, &req->base);
}

/* --max-data (docs/protocol.md section 1a, "Limits"): true when cmd's
 * data fits; otherwise too_large is sent. */
static int data_fits(struct client *c, const struct command *cmd)
{
    size_t max = client_app(c)->cfg->max_data;
    if (cmd->data_len <= max)
        return 1;
    char message[96];
    snprintf(message, sizeof message, "data is longer than --max-data (%zu bytes as JSON)", max);
    send_error(c, cmd->ref, WSFAN_ETOO_LARGE, message);
    return 0;
}

/* A publish, send or broadcast of cmd to target; takes cmd's data. */
static void run_publish(struct client *c, struct command *cmd, enum event_target target)
{
    if (!data_fits(c, cmd))
        return;
    struct call *call = command_call(c, cmd, BUS_PUBLISH);
    if (!call)
        return;
    struct bus_publish *req = &call->req.publish;
    req->target = target;
    strcpy(req->name, target == EVENT_ROOM ? cmd->room : target == EVENT_USER ? cmd->user : "");
    if (c->user)
        strcpy(req->from, c->user);
    req->ephemeral = target == EVENT_ROOM && cmd->ephemeral;
    req->skip_seq = target == EVENT_ROOM && !cmd->echo ? c->conn.seq : 0;
    req->data = cmd->data;
    req->data_len = cmd->data_len;
    cmd->data = NULL;
    bus_submit(client_app(c)->bus, &req->base);
}

static void run_command(struct client *c, struct command *cmd)
{
    struct app *app = client_app(c);
    struct call *call;
    size_t len;
    switch (cmd->type) {
    case CMD_PING:
        send_reply(c, reply_pong(cmd->ref, &len), &len);
        return;
    case CMD_JOIN:
        run_join(c, cmd);
        return;
    case CMD_LEAVE:
        if (!require_member(c, cmd) || !(call = command_call(c, cmd, BUS_LEAVE)))
            return;
        hub_room_remove(app->hub, c, cmd->room);
        strcpy(call->req.leave.room, cmd->room);
        if (c->user)
            strcpy(call->req.leave.user, c->user);
        break;
    case CMD_PUBLISH:
        if (require_member(c, cmd))
            run_publish(c, cmd, EVENT_ROOM);
        return;
    case CMD_SEND:
        run_publish(c, cmd, EVENT_USER);
        return;
    case CMD_BROADCAST:
        if (!app->cfg->allow_broadcast)
            send_error(c, cmd->ref, WSFAN_EFORBIDDEN, "broadcast is not allowed on this server");
        else
            run_publish(c, cmd, EVENT_ALL);
        return;
    case CMD_HISTORY:
        if (!require_member(c, cmd) || !(call = command_call(c, cmd, BUS_HISTORY)))
            return;
        strcpy(call->req.history.room, cmd->room);
        call->req.history.store.limit = cmd->limit;
        call->req.history.store.has_before = cmd->has_before;
        call->req.history.store.before = cmd->before;
        break;
    case CMD_PRESENCE:
        if (!require_member(c, cmd) || !(call = command_call(c, cmd, BUS_PRESENCE)))
            return;
        strcpy(call->req.presence.room, cmd->room);
        break;
    default:
        return;
    }
    bus_submit(app->bus, &call->req.base);
}

/* --rate-limit (docs/protocol.md section 1a, "Limits"): every message
 * takes a token, valid or not. True when the command may run; otherwise it
 * was answered rate_limited (ref is the command's, "" for none) or, after
 * RATE_ABUSE_MS of refusals, the connection is closing with 1008. */
static int rate_allows(struct client *c, const char *ref)
{
    int rate = client_app(c)->cfg->rate_limit;
    uint64_t now_ms = uv_now(c->conn.loop->uv);
    if (!rate || bucket_take(&c->rate, now_ms, (uint32_t)rate))
        return 1;
    metrics_rate_limited(c->conn.loop->metrics);
    /* 32-bit milliseconds: the differences are right across the wrap. */
    uint32_t now = (uint32_t)now_ms;
    if ((uint32_t)(now - c->last_refused_ms) > RATE_PAUSE_MS)
        c->refused_since_ms = now;
    c->last_refused_ms = now;
    if ((uint32_t)(now - c->refused_since_ms) > RATE_ABUSE_MS) {
        log_info("conn %d.%llu: over --rate-limit for %d s, closing with 1008", c->conn.loop->index,
                 (unsigned long long)c->conn.seq, RATE_ABUSE_MS / 1000);
        conn_close(&c->conn, WS_CLOSE_POLICY, "rate limit exceeded");
        return 0;
    }
    char message[96];
    snprintf(message, sizeof message, "more than %d commands a second (--rate-limit); this one was not run", rate);
    send_error(c, ref, WSFAN_ERATE_LIMITED, message);
    return 0;
}

static void on_text(struct conn *conn, const char *text, size_t len)
{
    struct client *c = client_of(conn);
    struct command cmd;
    struct command_error err;
    int bad = command_parse(text, len, &cmd, &err);
    if (!rate_allows(c, cmd.ref)) {
        command_free(&cmd);
        return;
    }
    if (bad) {
        metrics_message_in(conn->loop->metrics, CMD_COUNT); /* the kind after the commands: invalid */
        send_error(c, cmd.ref, err.code, err.message);
    } else {
        metrics_message_in(conn->loop->metrics, (int)cmd.type);
        run_command(c, &cmd);
    }
    command_free(&cmd);
}

/* ---- closing ------------------------------------------------------------ */

static void leave_silently(struct client *c, const char *room)
{
    submit_leave(c, room);
}

/* Forgets c's rooms and presence and gives back its --max-connections
 * slot as soon as the conn starts closing, not when the peer finally lets
 * go. */
static void on_close(struct conn *conn)
{
    struct client *c = client_of(conn);
    struct app *app = client_app(c);
    admission_release(c);
    hub_conn_leave_all(app->hub, c, leave_silently);
    if (!c->user)
        return;
    hub_user_remove(app->hub, c);
    if (submit_user(c, BUS_OFFLINE))
        log_error("out of memory: user %s stays routed here until restart", c->user);
}

static void on_free(struct conn *conn)
{
    client_free(client_of(conn));
}

const struct conn_handler client_handler = {
    .on_text = on_text,
    .on_close = on_close,
    .on_free = on_free,
};

void client_free(struct client *c)
{
    http_reader_destroy(c->http);
    free(c->user);
    free(c);
}
