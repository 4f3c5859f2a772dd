/* client.c - one WebSocket session: commands in (docs/protocol.md section 2),
 * replies and events out (section 3). Parses each text message
 * (codec/command.c), checks membership and limits, and either answers at
 * once (ping, errors) or hands a call to the bus and answers when it comes
 * back to this worker. A command error never closes the connection. Rooms
 * and users of a command become keys of the client's tenant
 * (core/names.h) once, here: the hub and the bus know only keys, and the
 * replies name rooms by the key's name. See client.h. */
#include "app/client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/access_log.h"
#include "app/app.h"
#include "app/auth.h"
#include "app/sse.h"
#include "codec/http.h"
#include "codec/reply.h"
#include "core/clock.h"
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
    call->seq = c->next_call++;
    call->sent_ms = uv_now(c->conn.loop->uv);
    call->flight_prev = c->flight_tail;
    if (c->flight_tail)
        c->flight_tail->flight_next = call;
    else
        c->flight = call;
    c->flight_tail = call;
    conn_ref(&c->conn);
    return call;
}

void call_done(struct call *call)
{
    struct client *c = call->client;
    if (call->flight_prev)
        call->flight_prev->flight_next = call->flight_next;
    else
        c->flight = call->flight_next;
    if (call->flight_next)
        call->flight_next->flight_prev = call->flight_prev;
    else
        c->flight_tail = call->flight_prev;
    conn_unref(&c->conn);
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

/* Tells the bus, without wanting an answer, that c left room (a key). */
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

/* Tells the bus that a connection of c's user, of c's tenant, or both
 * opened or closed. */
static int submit_user(struct client *c, enum bus_op op)
{
    struct bus_user *req = (struct bus_user *)app_request(sizeof *req, op, c->conn.loop->index);
    if (!req)
        return -1;
    char buf[KEY_MAX_LEN + 1];
    strcpy(req->user, name_key(client_tenant(c), c->user ? c->user : "", buf));
    bus_submit(client_app(c)->bus, &req->base);
    return 0;
}

/* ---- welcome -------------------------------------------------------------- */

/* exp as the JSON text of welcome and refreshed: a number, or null. */
static void exp_text(const struct token_claims *claims, char out[24])
{
    if (claims->has_exp)
        snprintf(out, 24, "%lld", (long long)claims->exp);
    else
        strcpy(out, "null");
}

/* What c's token allows; NULL without a token (auth_check's rules then). */
static const struct token_rights *client_rights(const struct client *c)
{
    return c->claims ? &c->claims->rights : NULL;
}

/* Takes the rights, tenant and info of claims (left empty), and sets the
 * deadline of its exp on the loop's clock, so that the tick compares two
 * numbers. Returns 0, or -1 when out of memory (nothing taken). */
static int take_claims(struct client *c, struct token_claims *claims)
{
    struct client_claims *mine = c->claims;
    if (!mine && !(mine = c->claims = calloc(1, sizeof *mine)))
        return -1;
    token_rights_free(&mine->rights);
    mine->rights = claims->rights;
    memset(&claims->rights, 0, sizeof claims->rights);
    free(mine->tenant);
    free(mine->info);
    mine->tenant = claims->tenant;
    mine->info = claims->info;
    claims->tenant = claims->info = NULL;
    mine->expires_ms = 0;
    if (claims->has_exp) {
        int64_t left_ms = (claims->exp + client_app(c)->cfg->jwt_leeway) * 1000 - (int64_t)clock_wall_ms();
        mine->expires_ms = uv_now(c->conn.loop->uv) + (uint64_t)(left_ms > 0 ? left_ms : 0);
    }
    return 0;
}

void client_start(struct client *c, struct auth_result *who)
{
    const struct config *cfg = client_app(c)->cfg;
    char session[CONN_ID_MAX], exp[24];
    /* The session's replies are counted from here: calls of the HTTP phase
     * (API requests on the same connection) were answered by api.c. */
    c->next_reply = c->next_call;
    /* The user last: a client closed here must not tell the bus that a
     * user it never announced went offline. */
    if ((who->has_token && take_claims(c, &who->claims)) || (who->user[0] && !(c->user = strdup(who->user)))) {
        conn_close(&c->conn, WS_CLOSE_INTERNAL, "out of memory");
        return;
    }
    if (!c->sse) {
        exp_text(&who->claims, exp);
        conn_id(&c->conn, session);
        size_t len;
        send_reply(c,
                   reply_welcome(session, c->user, cfg->node_id, cfg->heartbeat, who->has_token ? exp : NULL, &len),
                   &len);
    }
    const char *tenant = client_tenant(c);
    if (!c->user && !tenant)
        return;
    struct hub *hub = client_app(c)->hub;
    if ((c->user && hub_user_add(hub, c)) || (tenant && hub_tenant_add(hub, c)) || submit_user(c, BUS_ONLINE))
        conn_close(&c->conn, WS_CLOSE_INTERNAL, "out of memory");
    else
        c->online = 1;
}

/* ---- replies from the bus ------------------------------------------------- */

/* The join of room (a key) never happened: forget the pending membership,
 * and let the bus forget its count of it. A stream cannot ask again: it
 * ends (after its error event), and its client reconnects and joins again
 * from where it was (docs/protocol.md section 8). */
static void join_failed(struct client *c, const char *room)
{
    if (hub_room_remove(client_app(c)->hub, c, room) == HUB_OK)
        submit_leave(c, room);
    if (c->sse)
        conn_close(&c->conn, WS_CLOSE_TRY_AGAIN, "the join could not complete");
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
    size_t len, i = 0;
    /* A stream's id moves with what it was sent: to since when the replay
     * follows, else to the joined offset. */
    if (req->store.recovered && req->has_since)
        sse_mark(c, req->room, req->store.since);
    else if (has_after)
        sse_mark(c, req->room, after);
    send_reply(c,
               reply_joined(call->ref, name_of_key(req->room), req->store.offset, req->store.recovered, missed->count,
                            &len),
               &len);
    for (char *ev = missed->text, *end = missed->text + missed->len; ev && ev < end; i++) {
        char *nl = memchr(ev, '\n', (size_t)(end - ev));
        sse_mark(c, req->room, missed->offsets[i]);
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
            send_rejoined(c, call->ref, name_of_key(call->req.join.room));
        else
            send_error(c, call->ref, WSFAN_EUNAVAILABLE, "the join could not complete");
        return;
    case BUS_LEAVE:
        send_reply(c, reply_left(call->ref, name_of_key(call->req.leave.room), NULL, &len), &len);
        return;
    case BUS_PUBLISH:
        send_reply(c, reply_ack(call->ref, call->req.publish.target == EVENT_ROOM, call->req.publish.store.offset, &len), &len);
        return;
    case BUS_HISTORY: {
        size_t events_len;
        const char *events = store_batch_join(&call->req.history.store.batch, &events_len);
        send_reply(c, reply_history(call->ref, name_of_key(call->req.history.room), events, events_len, &len), &len);
        return;
    }
    case BUS_PRESENCE:
        send_reply(c, reply_presence(call->ref, name_of_key(call->req.presence.room), call->req.presence.users, &len),
                   &len);
        return;
    default:
        return;
    }
}

/* The room a call reads from (its name), for a join, history or
 * presence; or NULL. */
static const char *read_room(struct call *call)
{
    switch (call->req.base.op) {
    case BUS_JOIN:
    case BUS_REJOIN: return name_of_key(call->req.join.room);
    case BUS_HISTORY: return name_of_key(call->req.history.room);
    case BUS_PRESENCE: return name_of_key(call->req.presence.room);
    default: return NULL;
    }
}

/* A refresh may have taken the right to read the call's room away while
 * the call was on the bus: then its answer is forbidden, not the room's
 * messages or presence. */
static int withdrawn(struct client *c, struct call *call)
{
    const char *room = read_room(call), *why;
    return room && auth_check(client_app(c)->cfg, client_rights(c), AUTH_READ, room, 1, &why);
}

/* Answers one call that came back, in its turn, and ends it. */
static void answer(struct client *c, struct call *call)
{
    if (!conn_is_open(&c->conn)) {
        /* Closed meanwhile: nobody to answer. */
    } else if (withdrawn(c, call)) {
        send_error(c, call->ref, WSFAN_EFORBIDDEN, "the connection's token no longer allows this room");
    } else if (call->req.base.error) {
        send_error(c, call->ref, call->req.base.error, failed_what(call->req.base.op));
        if (call->req.base.op == BUS_JOIN)
            join_failed(c, call->req.join.room);
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
/* Answers the parked replies whose turn has come. */
static void answer_parked(struct client *c)
{
    while (c->parked && c->parked->seq == c->next_reply) {
        struct call *next = c->parked;
        c->parked = next->next_parked;
        answer(c, next);
        c->next_reply++;
    }
}

/* A WebSocket whose input waited for its pending calls (command_call)
 * reads again once half of them are answered; not at once, so that it
 * does not stop and go with every reply. Runs after a reply's bookkeeping
 * is done: the input it hands over may run commands at once. */
static void input_after_replies(struct client *c)
{
    if (c->conn.state == CONN_WS && (c->conn.paused & CONN_PAUSED_BY_APP) && c->pending <= PENDING_MAX / 2)
        conn_resume(&c->conn);
}

static void on_reply(struct task *t, void *ctx)
{
    (void)ctx;
    struct call *call = (struct call *)t;
    struct client *c = call->client;
    conn_ref(&c->conn); /* the last call's end may be the client's */
    if (call->expired) {
        /* Answered unavailable when it took too long: only freed now. */
        c->pending--;
        call_done(call);
    } else if (call->seq != c->next_reply) {
        park(c, call);
    } else {
        answer(c, call);
        c->next_reply++;
        answer_parked(c);
    }
    input_after_replies(c);
    conn_unref(&c->conn);
}

/* --request-timeout: the call whose turn it is has waited too long for
 * the bus (a reply that never comes must not hold every later one): it is
 * answered unavailable now, and the replies behind it follow. Its own
 * reply, when it comes, is only freed. */
static void expire_calls(struct client *c, uint64_t now_ms)
{
    uint64_t limit = (uint64_t)client_app(c)->cfg->request_timeout;
    if (!limit)
        return;
    conn_ref(&c->conn);
    for (;;) {
        struct call *h = c->flight;
        while (h && h->expired)
            h = h->flight_next;
        if (!h || h->seq != c->next_reply || now_ms - h->sent_ms < limit)
            break;
        h->expired = 1;
        if (conn_is_open(&c->conn))
            send_error(c, h->ref, WSFAN_EUNAVAILABLE, "no answer from the bus in time (--request-timeout)");
        if (h->req.base.op == BUS_JOIN) /* its room is only read: the bus never writes it */
            join_failed(c, h->req.join.room);
        c->next_reply++;
        answer_parked(c);
    }
    conn_unref(&c->conn);
}

/* ---- running commands ------------------------------------------------------ */

/* A call from c for cmd that comes back to on_reply, or NULL (error sent). */
static struct call *command_call(struct client *c, const struct command *cmd, enum bus_op op)
{
    if (c->pending >= PENDING_MAX) {
        /* Only a stream's joins can get here: a WebSocket's input has
         * waited since its pending calls reached the bound. */
        send_error(c, cmd->ref, WSFAN_ERATE_LIMITED, NULL);
        return NULL;
    }
    struct call *call = call_create(c, op, on_reply);
    if (!call) {
        send_error(c, cmd->ref, WSFAN_ENOMEM, NULL);
        return NULL;
    }
    /* A client that does not wait for its replies must not queue work
     * without bound on the bus: its input waits (TCP pushes back on it)
     * until half of them are answered (input_after_replies). No command
     * is refused for this. */
    if (++c->pending == PENDING_MAX && c->conn.state == CONN_WS)
        conn_pause(&c->conn);
    strcpy(call->ref, cmd->ref);
    return call;
}

/* True when c may run cmd as action (app/auth.c decides: its rights on the
 * command's room, then its membership of it; room is the room's key);
 * else sends the error. */
static int permit(struct client *c, const struct command *cmd, enum auth_action action, const char *room)
{
    const char *why = NULL;
    int err = auth_check(client_app(c)->cfg, client_rights(c), action, cmd->room,
                         action != AUTH_SEND && action != AUTH_BROADCAST && hub_is_member(c, room), &why);
    if (err)
        send_error(c, cmd->ref, err, err == WSFAN_EFORBIDDEN ? why : NULL);
    return !err;
}

/* True when c is in the command's room (room: its key); else sends
 * not_member. */
static int require_member(struct client *c, const struct command *cmd, const char *room)
{
    if (hub_is_member(c, room))
        return 1;
    send_error(c, cmd->ref, WSFAN_ENOT_MEMBER, NULL);
    return 0;
}

/* The join of room (a key, where c has a pending membership) answered
 * here, starting at top (hub_room_top); info (owned) goes to the bus,
 * which is only told, for the interest and the presence. */
static void join_locally(struct client *c, const char *ref, const char *room, struct offset top, char *info)
{
    struct app *app = client_app(c);
    struct bus_join *req = (struct bus_join *)app_request(sizeof *req, BUS_JOIN, c->conn.loop->index);
    if (!req || hub_room_activate(app->hub, c, room, &top) != HUB_OK) {
        free(req);
        free(info);
        hub_room_remove(app->hub, c, room);
        send_error(c, ref, WSFAN_ENOMEM, NULL);
        return;
    }
    strcpy(req->room, room);
    if (c->user)
        strcpy(req->user, c->user);
    req->info = info;
    req->answered = 1;
    bus_submit(app->bus, &req->base);
    metrics_join_local(c->conn.loop->metrics);
    char offset[OFFSET_MAX_LEN];
    offset_format(top, offset);
    sse_mark(c, room, top);
    size_t len;
    send_reply(c, reply_joined(ref, name_of_key(room), offset, 0, 0, &len), &len);
}

/* room: the key of cmd's room. */
static void run_join(struct client *c, struct command *cmd, const char *room)
{
    struct app *app = client_app(c);
    struct call *call;
    if (!permit(c, cmd, AUTH_JOIN, room))
        return;
    if (hub_is_member(c, room)) {
        /* Already a member: nothing was missed, nothing changes. While the
         * first join, or any call before this one, is still on its way, the
         * answer goes through the bus and waits behind them. */
        if (!hub_is_pending(c, room) && c->next_reply == c->next_call) {
            send_rejoined(c, cmd->ref, cmd->room);
        } else if ((call = command_call(c, cmd, BUS_REJOIN))) {
            strcpy(call->req.join.room, room);
            bus_submit(app->bus, &call->req.base);
        }
        return;
    }
    if (hub_room_count(c) >= (uint32_t)app->cfg->max_rooms) {
        send_error(c, cmd->ref, WSFAN_ETOO_MANY_ROOMS, NULL);
        return;
    }
    /* Presence shows the info of the user's newest connection (section 3). */
    const char *claim = c->claims ? c->claims->info : NULL;
    char *info = NULL;
    if ((c->user && claim && !(info = strdup(claim))) || hub_room_add(app->hub, c, room) != HUB_OK) {
        free(info);
        send_error(c, cmd->ref, WSFAN_ENOMEM, NULL);
        return;
    }
    /* A join without since of a room this worker follows already, with no
     * earlier reply owed (replies keep the order of the commands), starts
     * from the newest offset the worker knows: no bus round trip. */
    struct offset top;
    if (!cmd->has_since && c->next_reply == c->next_call && hub_room_top(app->hub, room, &top)) {
        join_locally(c, cmd->ref, room, top, info);
        return;
    }
    if (!(call = command_call(c, cmd, BUS_JOIN))) {
        free(info);
        hub_room_remove(app->hub, c, room);
        return;
    }
    struct bus_join *req = &call->req.join;
    strcpy(req->room, room);
    if (c->user)
        strcpy(req->user, c->user);
    req->info = info;
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

/* A publish, send or broadcast of cmd to target, key (the room's, the
 * user's or everyone's of c's tenant); takes cmd's data. */
static void run_publish(struct client *c, struct command *cmd, enum event_target target, const char *key)
{
    if (!data_fits(c, cmd))
        return;
    struct call *call = command_call(c, cmd, BUS_PUBLISH);
    if (!call)
        return;
    struct bus_publish *req = &call->req.publish;
    req->target = target;
    strcpy(req->name, key);
    if (c->user)
        strcpy(req->from, c->user);
    req->ephemeral = target == EVENT_ROOM && cmd->ephemeral;
    req->skip_seq = target == EVENT_ROOM && !cmd->echo ? c->conn.seq : 0;
    req->has_key = cmd->has_key;
    strcpy(req->key, cmd->key);
    req->data = cmd->data;
    req->data_len = cmd->data_len;
    cmd->data = NULL;
    bus_submit(client_app(c)->bus, &req->base);
}

/* Leaves room (a key), which c's new token no longer allows: the event,
 * then the bus is told as for a leave. */
static void leave_forbidden(struct client *c, const char *room)
{
    size_t len;
    send_reply(c, reply_left("", name_of_key(room), "forbidden", &len), &len);
    submit_leave(c, room);
}

/* Whether c's token still allows room (a key). */
static int may_stay(struct client *c, const char *room)
{
    const char *why;
    return auth_check(client_app(c)->cfg, client_rights(c), AUTH_JOIN, name_of_key(room), 1, &why) == 0;
}

/* refresh (docs/protocol.md section 1a): a new token of the same sub and
 * tenant replaces the rights and the expiry of the old one; the rooms it no
 * longer allows are left before the reply. */
static void run_refresh(struct client *c, struct command *cmd)
{
    struct app *app = client_app(c);
    if (app->cfg->auth != CONFIG_AUTH_JWT) {
        send_error(c, cmd->ref, WSFAN_EFORBIDDEN, "this server does not use tokens (--auth none)");
        return;
    }
    struct token_rules rules = auth_rules(app->cfg, app->token_key, (int64_t)(clock_wall_ms() / 1000));
    struct token_claims claims;
    char why[TOKEN_WHY_MAX], exp[24];
    int r = token_verify(cmd->token, cmd->token_len, &rules, &claims, why);
    if (r) {
        send_error(c, cmd->ref, r == TOKEN_NOMEM ? WSFAN_ENOMEM : WSFAN_ETOKEN_INVALID, r == TOKEN_NOMEM ? NULL : why);
        return;
    }
    const char *tenant = client_tenant(c);
    if (!c->claims || strcmp(claims.sub, c->user) || !claims.tenant != !tenant ||
        (tenant && strcmp(claims.tenant, tenant))) {
        send_error(c, cmd->ref, WSFAN_EFORBIDDEN, "a refresh must name the connection's sub and tenant");
    } else if (take_claims(c, &claims)) {
        send_error(c, cmd->ref, WSFAN_ENOMEM, NULL);
    } else {
        hub_conn_leave_some(app->hub, c, may_stay, leave_forbidden);
        exp_text(&claims, exp);
        size_t len;
        send_reply(c, reply_refreshed(cmd->ref, exp, &len), &len);
    }
    token_claims_free(&claims);
}

static void run_command(struct client *c, struct command *cmd)
{
    struct app *app = client_app(c);
    struct call *call;
    size_t len;
    /* The key of the command's room (of everyone when it has none). */
    char buf[KEY_MAX_LEN + 1];
    const char *room = name_key(client_tenant(c), cmd->room, buf);
    switch (cmd->type) {
    case CMD_PING:
        send_reply(c, reply_pong(cmd->ref, &len), &len);
        return;
    case CMD_JOIN:
        run_join(c, cmd, room);
        return;
    case CMD_LEAVE:
        if (!require_member(c, cmd, room) || !(call = command_call(c, cmd, BUS_LEAVE)))
            return;
        hub_room_remove(app->hub, c, room);
        strcpy(call->req.leave.room, room);
        if (c->user)
            strcpy(call->req.leave.user, c->user);
        break;
    case CMD_PUBLISH:
        if (permit(c, cmd, AUTH_PUBLISH, room))
            run_publish(c, cmd, EVENT_ROOM, room);
        return;
    case CMD_SEND:
        if (permit(c, cmd, AUTH_SEND, room))
            run_publish(c, cmd, EVENT_USER, name_key(client_tenant(c), cmd->user, buf));
        return;
    case CMD_BROADCAST:
        if (permit(c, cmd, AUTH_BROADCAST, room))
            run_publish(c, cmd, EVENT_ALL, room);
        return;
    case CMD_REFRESH:
        run_refresh(c, cmd);
        return;
    case CMD_HISTORY:
        if (!permit(c, cmd, AUTH_READ, room) || !(call = command_call(c, cmd, BUS_HISTORY)))
            return;
        strcpy(call->req.history.room, room);
        call->req.history.store.limit = cmd->limit;
        call->req.history.store.has_before = cmd->has_before;
        call->req.history.store.before = cmd->before;
        break;
    case CMD_PRESENCE:
        if (!permit(c, cmd, AUTH_READ, room) || !(call = command_call(c, cmd, BUS_PRESENCE)))
            return;
        strcpy(call->req.presence.room, room);
        break;
    default:
        return;
    }
    bus_submit(app->bus, &call->req.base);
}

void client_join(struct client *c, const char *room, const struct offset *since)
{
    struct command cmd = {.type = CMD_JOIN, .has_since = since != NULL};
    strcpy(cmd.room, room);
    if (since)
        cmd.since = *since;
    run_command(c, &cmd);
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
    if (clock_ms32_since(now_ms, c->last_refused_ms) > RATE_PAUSE_MS)
        c->refused_since_ms = (uint32_t)now_ms;
    c->last_refused_ms = (uint32_t)now_ms;
    if (clock_ms32_since(now_ms, c->refused_since_ms) > RATE_ABUSE_MS) {
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
    const char *tenant = client_tenant(c);
    access_log_closed(c);
    admission_release(c);
    hub_conn_leave_all(app->hub, c, leave_silently);
    if (c->user)
        hub_user_remove(app->hub, c);
    if (tenant)
        hub_tenant_remove(app->hub, c);
    /* Only what was announced: the bus's counts of the user and the tenant
     * stay exact when the start ran out of memory. */
    if (!c->online)
        return;
    c->online = 0;
    if (submit_user(c, BUS_OFFLINE))
        log_error("out of memory: user %s of tenant %s stays routed here until restart", c->user ? c->user : "-",
                  tenant ? tenant : "-");
}

static void on_free(struct conn *conn)
{
    client_free(client_of(conn));
}

/* A token's exp (with the leeway) has passed: docs/protocol.md section 1a. */
static void on_tick(struct conn *conn, uint64_t now_ms)
{
    struct client *c = client_of(conn);
    if (c->claims && c->claims->expires_ms && now_ms >= c->claims->expires_ms)
        conn_close(conn, WS_CLOSE_POLICY, "token expired");
    else
        expire_calls(c, now_ms);
}

const struct conn_handler client_handler = {
    .on_tick = on_tick,
    .on_text = on_text,
    .on_close = on_close,
    .on_free = on_free,
};

void client_free(struct client *c)
{
    http_reader_destroy(c->http);
    free(c->user);
    if (c->claims) {
        token_rights_free(&c->claims->rights);
        free(c->claims->tenant);
        free(c->claims->info);
        free(c->claims);
    }
    sse_free(c->sse);
    free(c);
}
