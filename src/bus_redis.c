/* bus_redis.c - the Redis engine of the bus (PROTOCOL.md section 6): any
 * number of processes on any number of machines act as one server.
 * - One publishing connection and one subscriber connection per process.
 * - Subscriptions follow local interest: one SUBSCRIBE per room channel
 *   while the process has a member, per user channel while it has a
 *   connection of the user, NS:all always. Each channel has at most one
 *   SUBSCRIBE or UNSUBSCRIBE in flight; a change of mind meanwhile is acted
 *   on when the reply comes, so churn never leaks or loses a subscription.
 * - Every PUBLISH payload is the envelope of section 6; what arrives is
 *   checked, turned into a client event once, and handed to bus_deliver().
 * - Presence lives in NS:presence:{ROOM} (a hash: user -> the nodes that
 *   have connections of the user, each with a count and an expiry that the
 *   node refreshes); a node that dies stops being refreshed, and any node
 *   still in the room sweeps its users out and announces presence_leave.
 * Runs on the bus thread (the main loop). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "config.h"
#include "envelope.h"
#include "log.h"
#include "map.h"
#include "presence.h"
#include "redis.h"
#include "server.h"

enum sub_state { SUB_IDLE, SUB_SUBSCRIBING, SUB_SUBSCRIBED, SUB_UNSUBSCRIBING };

/* One channel this process wants, or is still leaving. */
struct channel {
    enum sub_state state;
    int want;
    enum bus_target target;
    char name[NAME_MAX_LEN + 1];
};

/* KEYS: presence hash. ARGV: node, user, count, now ms, expiry ms.
 * Sets this node's count of the user; returns "join" when the user was
 * present on no node before, "leave" when on none after, else "". */
static const char presence_set_source[] =
    "local node, user, count, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "local v = redis.call('HGET', KEYS[1], user)\n"
    "local before, kept = false, {}\n"
    "if v then\n"
    "  for n, c, e in string.gmatch(v, '([^,=]+)=(%d+)@(%d+)') do\n"
    "    if tonumber(e) > now then\n"
    "      before = true\n"
    "      if n ~= node then kept[#kept + 1] = n .. '=' .. c .. '@' .. e end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "if count > 0 then kept[#kept + 1] = node .. '=' .. count .. '@' .. ARGV[5] end\n"
    "if #kept > 0 then redis.call('HSET', KEYS[1], user, table.concat(kept, ','))\n"
    "else redis.call('HDEL', KEYS[1], user) end\n"
    "if #kept > 0 and not before then return 'join' end\n"
    "if before and #kept == 0 then return 'leave' end\n"
    "return ''\n";

/* KEYS: presence hash. ARGV: node, now ms, expiry ms, then user, count
 * pairs of this node. Refreshes this node's entries, drops expired ones of
 * dead nodes, returns the users no node has any more. */
static const char presence_sync_source[] =
    "local node, now, exp = ARGV[1], tonumber(ARGV[2]), ARGV[3]\n"
    "local mine = {}\n"
    "for i = 4, #ARGV, 2 do mine[ARGV[i]] = ARGV[i + 1] end\n"
    "local left = {}\n"
    "local all = redis.call('HGETALL', KEYS[1])\n"
    "for i = 1, #all, 2 do\n"
    "  local user, kept = all[i], {}\n"
    "  for n, c, e in string.gmatch(all[i + 1], '([^,=]+)=(%d+)@(%d+)') do\n"
    "    if n ~= node and tonumber(e) > now then kept[#kept + 1] = n .. '=' .. c .. '@' .. e end\n"
    "  end\n"
    "  if mine[user] then kept[#kept + 1] = node .. '=' .. mine[user] .. '@' .. exp; mine[user] = nil end\n"
    "  if #kept > 0 then redis.call('HSET', KEYS[1], user, table.concat(kept, ','))\n"
    "  else redis.call('HDEL', KEYS[1], user); left[#left + 1] = user end\n"
    "end\n"
    "for user, c in pairs(mine) do redis.call('HSET', KEYS[1], user, node .. '=' .. c .. '@' .. exp) end\n"
    "return left\n";

/* KEYS: the rooms hash. ARGV: node, now ms, expiry ms, then room, members
 * pairs of this node. Field "room|node" -> "members@expiry": replaces this
 * node's fields and drops every expired one. */
static const char rooms_sync_source[] =
    "local node, now, exp = ARGV[1], tonumber(ARGV[2]), ARGV[3]\n"
    "local suffix = '|' .. node\n"
    "local all = redis.call('HGETALL', KEYS[1])\n"
    "for i = 1, #all, 2 do\n"
    "  local e = tonumber(string.match(all[i + 1], '@(%d+)$') or '0')\n"
    "  if e <= now or string.sub(all[i], -#suffix) == suffix then redis.call('HDEL', KEYS[1], all[i]) end\n"
    "end\n"
    "for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i] .. suffix, ARGV[i + 1] .. '@' .. exp) end\n"
    "return 0\n";

struct redis_bus {
    struct bus *bus;
    const struct config *cfg;
    struct redis_link pub, sub;
    struct map channels;          /* channel name -> struct channel */
    struct redis_script presence_set, presence_sync, rooms_sync;
    uv_timer_t presence_timer;
    struct log_limit bad_envelope_log;
    uint64_t bad_envelopes;
    uint64_t scripts_loaded_for;  /* store-link connection the presence scripts were loaded on, plus one */
    int links_stopped;
};

static struct redis_bus *engine(struct bus *b)
{
    return bus_engine_data(b);
}

static void channel_name(const struct redis_bus *e, enum bus_target target, const char *name, char *out,
                         size_t cap)
{
    if (target == BUS_ROOM)
        snprintf(out, cap, "%s:room:{%s}", e->cfg->ns, name);
    else if (target == BUS_USER)
        snprintf(out, cap, "%s:user:{%s}", e->cfg->ns, name);
    else
        snprintf(out, cap, "%s:all", e->cfg->ns);
}

static struct redis_link *data_link(struct redis_bus *e)
{
    return store_redis_link(bus_store(e->bus));
}

/* ---- envelopes in ---------------------------------------------------------- */

static void bad_envelope(struct redis_bus *e, const char *channel, const char *why)
{
    e->bad_envelopes++;
    metrics_invalid_envelope(&bus_server(e->bus)->metrics);
    uint32_t suppressed;
    if (log_limit_allow(&e->bad_envelope_log, event_now_ms(), &suppressed))
        log_warn("redis: dropped a payload on %s: %s (%llu dropped in all, %u not logged)", channel, why,
                 (unsigned long long)e->bad_envelopes, suppressed);
}

static void on_payload(struct redis_bus *e, const char *channel, const char *payload, size_t len)
{
    enum bus_target target;
    char name[NAME_MAX_LEN + 1];
    const char *why = "not a channel of this namespace";
    struct bus_event *ev = envelope_channel_parse(e->cfg->ns, channel, &target, name) == 0
                               ? envelope_to_event(e->cfg->node_id, target, name, payload, len, &why)
                               : NULL;
    if (ev)
        bus_deliver(e->bus, ev);
    else
        bad_envelope(e, channel, why);
}

/* ---- subscriptions ---------------------------------------------------------- */

static void on_sub_reply(redisAsyncContext *ac, void *reply, void *privdata);

static void channel_command(struct redis_bus *e, const char *verb, const char *channel)
{
    const char *argv[] = {verb, channel};
    if (redis_link_command(&e->sub, on_sub_reply, e, 2, argv, NULL))
        log_debug("redis: %s %s: the subscriber link is down; done when it is back", verb, channel);
}

/* Moves a channel one step towards what is wanted, if nothing is in
 * flight; frees it when it is neither wanted nor subscribed. */
static void channel_drive(struct redis_bus *e, const char *key)
{
    struct channel *c = map_get(&e->channels, key, strlen(key));
    if (!c)
        return;
    if (c->state == SUB_IDLE && !c->want) {
        free(map_remove(&e->channels, key, strlen(key)));
        return;
    }
    if (!e->sub.up)
        return;
    if (c->want && c->state == SUB_IDLE) {
        c->state = SUB_SUBSCRIBING;
        channel_command(e, "SUBSCRIBE", key);
    } else if (!c->want && c->state == SUB_SUBSCRIBED) {
        c->state = SUB_UNSUBSCRIBING;
        channel_command(e, "UNSUBSCRIBE", key);
    }
}

static void on_sub_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    struct redis_bus *e = privdata;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 3 || r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = r->element[0]->str, *channel = r->element[1]->str;
    if (!strcmp(kind, "message")) {
        if (r->element[2]->type == REDIS_REPLY_STRING)
            on_payload(e, channel, r->element[2]->str, r->element[2]->len);
        return;
    }
    struct channel *c = map_get(&e->channels, channel, strlen(channel));
    if (!c)
        return;
    if (!strcmp(kind, "subscribe")) {
        c->state = SUB_SUBSCRIBED;
        if (c->want && c->target == BUS_ROOM)
            bus_subscribed(e->bus, c->name);
    } else if (!strcmp(kind, "unsubscribe")) {
        c->state = SUB_IDLE;
    }
    channel_drive(e, channel);
}

static void redis_interest(struct bus *b, enum bus_target target, const char *name, int on)
{
    struct redis_bus *e = engine(b);
    char key[NAME_MAX_LEN + 160];
    channel_name(e, target, name, key, sizeof key);
    struct channel *c = map_get(&e->channels, key, strlen(key));
    if (!c && on) {
        c = calloc(1, sizeof *c);
        if (!c || map_put(&e->channels, key, strlen(key), c)) {
            free(c);
            log_error("redis: out of memory subscribing to %s", key);
            return;
        }
        c->target = target;
        snprintf(c->name, sizeof c->name, "%s", name);
    }
    if (!c)
        return;
    c->want = on;
    channel_drive(e, key);
}

static void on_sub_up(struct redis_link *l)
{
    struct redis_bus *e = l->data;
    if (l->reconnects)
        metrics_bus_reconnect(&bus_server(e->bus)->metrics);
    /* Subscribe everything wanted again; rooms fill their gap on confirmation. */
    const struct map_slot *slot;
    for (size_t i = 0; map_next(&e->channels, &i, &slot);)
        ((struct channel *)slot->value)->state = SUB_IDLE;
    char **keys = malloc(sizeof *keys * (e->channels.count + 1));
    size_t n = 0;
    for (size_t i = 0; keys && map_next(&e->channels, &i, &slot);)
        keys[n++] = strdup(slot->key);
    for (size_t i = 0; i < n; i++) {
        if (keys[i])
            channel_drive(e, keys[i]);
        free(keys[i]);
    }
    free(keys);
    bus_ready_changed(e->bus);
    bus_link_changed(e->bus, 1);
}

static void on_sub_down(struct redis_link *l)
{
    struct redis_bus *e = l->data;
    bus_ready_changed(e->bus);
    bus_link_changed(e->bus, 0);
}

static void on_pub_changed(struct redis_link *l)
{
    struct redis_bus *e = l->data;
    bus_ready_changed(e->bus);
}

/* ---- publishing ----------------------------------------------------------- */

/* The envelope around the offset: head .. offset .. tail, or head .. tail
 * with no offset field when offset is NULL. */
struct envelope {
    char *head, *tail;
};

static int envelope_build(struct redis_bus *e, const struct bus_request *req, int persisted, uint64_t ts,
                          struct envelope *env)
{
    char from[NAME_MAX_LEN + 3] = "null", skip[48] = "null", room[NAME_MAX_LEN + 16] = "";
    if (req->user[0])
        snprintf(from, sizeof from, "\"%s\"", req->user);
    if (!req->echo && req->conn)
        snprintf(skip, sizeof skip, "\"%d.%llu\"", req->worker, (unsigned long long)req->conn_seq);
    if (req->target == BUS_ROOM)
        snprintf(room, sizeof room, "\"room\":\"%s\",", req->room);
    int n = asprintf(&env->head, "{\"v\":1,%s\"from\":%s,\"ts\":%llu,\"origin\":\"%s\",\"echo_skip\":%s%s", room,
                     from, (unsigned long long)ts, e->cfg->node_id, skip, persisted ? ",\"offset\":\"" : "");
    if (n < 0)
        return -1;
    if (asprintf(&env->tail, "%s,\"data\":%.*s}", persisted ? "\"" : "", (int)req->data_len, req->data) < 0) {
        free(env->head);
        return -1;
    }
    return 0;
}

static void envelope_free(struct envelope *env)
{
    free(env->head);
    free(env->tail);
}

static void on_published(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    struct bus_request *req = privdata;
    redisReply *r = reply;
    if (!r || r->type == REDIS_REPLY_ERROR)
        req->error = "unavailable";
    bus_reply(req->bus, req);
}

static void publish_text(struct redis_bus *e, struct bus_request *req, const char *channel, const char *payload)
{
    const char *argv[] = {"PUBLISH", channel, payload};
    if (redis_link_command(&e->pub, on_published, req, 3, argv, NULL)) {
        req->error = "unavailable";
        bus_reply(e->bus, req);
    }
}

static void on_appended(struct store_call *call)
{
    struct bus_request *req = (struct bus_request *)((char *)call - offsetof(struct bus_request, store));
    struct redis_bus *e = engine(req->bus);
    struct envelope env = {(char *)call->envelope_head, (char *)call->envelope_tail};
    call->envelope_head = call->envelope_tail = NULL;
    if (call->error) {
        req->error = call->error;
        bus_reply(req->bus, req);
    } else if (call->published) {
        bus_reply(req->bus, req);
    } else {
        /* History lives on another Redis: publish after persisting. */
        char *payload = NULL;
        if (asprintf(&payload, "%s%s%s", env.head, call->offset, env.tail) < 0) {
            req->error = "unavailable";
            bus_reply(req->bus, req);
        } else {
            publish_text(e, req, call->channel, payload);
            free(payload);
        }
    }
    free((char *)call->channel);
    envelope_free(&env);
}

static void redis_publish(struct bus *b, struct bus_request *req)
{
    struct redis_bus *e = engine(b);
    uint64_t ts = event_now_ms();
    char channel[NAME_MAX_LEN + 160];
    channel_name(e, req->target, req->target == BUS_ROOM ? req->room : req->to, channel, sizeof channel);
    int persisted = req->target == BUS_ROOM && !req->ephemeral && e->cfg->history_length > 0;
    struct envelope env;
    if (envelope_build(e, req, persisted, ts, &env)) {
        req->error = "unavailable";
        bus_reply(b, req);
        return;
    }
    if (!persisted) {
        char *payload = NULL;
        if (asprintf(&payload, "%s%s", env.head, env.tail) < 0) {
            req->error = "unavailable";
            bus_reply(b, req);
        } else {
            publish_text(e, req, channel, payload);
            free(payload);
        }
        envelope_free(&env);
        return;
    }
    struct store *s = bus_store(b);
    req->store.from = req->user[0] ? req->user : NULL;
    req->store.data = req->data;
    req->store.data_len = req->data_len;
    req->store.ts = ts;
    req->store.channel = strdup(channel);
    req->store.envelope_head = env.head;
    req->store.envelope_tail = env.tail;
    req->store.done = on_appended;
    if (!req->store.channel) {
        envelope_free(&env);
        req->error = "unavailable";
        bus_reply(b, req);
        return;
    }
    s->ops->append(s, &req->store);
}

/* ---- presence --------------------------------------------------------------- */

static void publish_presence(struct redis_bus *e, const char *room, const char *user, const char *kind)
{
    char channel[NAME_MAX_LEN + 160], *payload = NULL;
    channel_name(e, BUS_ROOM, room, channel, sizeof channel);
    if (asprintf(&payload, "{\"v\":1,\"room\":\"%s\",\"presence\":\"%s\",\"user\":\"%s\",\"origin\":\"%s\",\"data\":null}",
                 room, kind, user, e->cfg->node_id) < 0)
        return;
    const char *argv[] = {"PUBLISH", channel, payload};
    if (redis_link_command(&e->pub, NULL, NULL, 3, argv, NULL))
        log_warn("redis: presence_%s of %s in %s not announced: the bus is down", kind, user, room);
    free(payload);
}

/* What a presence script call needs when its reply comes. */
struct presence_call {
    struct redis_bus *e;
    char room[NAME_MAX_LEN + 1];
    char user[NAME_MAX_LEN + 1];
};

static void on_presence_set(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    struct presence_call *pc = privdata;
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_STRING && r->len)
        publish_presence(pc->e, pc->room, pc->user, r->str);
    else if (!r || r->type == REDIS_REPLY_ERROR)
        log_warn("redis: presence of %s in %s not recorded: %s", pc->user, pc->room, r ? r->str : "store down");
    free(pc);
}

static uint64_t presence_expiry(const struct redis_bus *e, uint64_t now)
{
    return now + (uint64_t)e->cfg->presence_ttl * 1000;
}

static void redis_presence(struct bus *b, const char *room, const char *user, unsigned long before,
                           unsigned long count)
{
    (void)before;
    struct redis_bus *e = engine(b);
    struct presence_call *pc = calloc(1, sizeof *pc);
    if (!pc)
        return;
    pc->e = e;
    strcpy(pc->room, room);
    strcpy(pc->user, user);
    char key[NAME_MAX_LEN + 160], count_text[24], now_text[24], exp_text[24];
    snprintf(key, sizeof key, "%s:presence:{%s}", e->cfg->ns, room);
    uint64_t now = event_now_ms();
    snprintf(count_text, sizeof count_text, "%lu", count);
    snprintf(now_text, sizeof now_text, "%llu", (unsigned long long)now);
    snprintf(exp_text, sizeof exp_text, "%llu", (unsigned long long)presence_expiry(e, now));
    const char *args[] = {key, e->cfg->node_id, user, count_text, now_text, exp_text};
    size_t lens[6];
    for (int i = 0; i < 6; i++)
        lens[i] = strlen(args[i]);
    if (redis_script_call(data_link(e), &e->presence_set, 1, 6, args, lens, on_presence_set, pc)) {
        log_warn("redis: presence of %s in %s not recorded: the store is down", user, room);
        free(pc);
    }
}

static int by_user(const void *a, const void *b, void *arg)
{
    const redisReply *r = arg;
    return strcmp(r->element[*(const size_t *)a]->str, r->element[*(const size_t *)b]->str);
}

static void on_presence_list(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    struct bus_request *req = privdata;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        req->error = "unavailable";
        bus_reply(req->bus, req);
        return;
    }
    /* HGETALL: user, "node=count@expiry,..."; counts of live nodes add up.
     * Redis keeps fields in no order: sort by user as the memory engine does. */
    uint64_t now = event_now_ms();
    size_t n = r->elements / 2;
    size_t *order = malloc(sizeof *order * (n ? n : 1));
    for (size_t i = 0; order && i < n; i++)
        order[i] = 2 * i;
    if (order)
        qsort_r(order, n, sizeof *order, by_user, r);
    json_t *users = order ? json_array() : NULL;
    for (size_t k = 0; users && k < n; k++) {
        size_t i = order[k];
        unsigned long total = 0;
        char *entries = strdup(r->element[i + 1]->str ? r->element[i + 1]->str : ""), *save = NULL;
        for (char *tok = entries ? strtok_r(entries, ",", &save) : NULL; tok; tok = strtok_r(NULL, ",", &save)) {
            unsigned long count;
            unsigned long long expiry;
            char *eq = strrchr(tok, '=');
            if (eq && sscanf(eq + 1, "%lu@%llu", &count, &expiry) == 2 && expiry > now)
                total += count;
        }
        free(entries);
        if (total)
            json_array_append_new(users, json_pack("{s:s, s:I}", "user", r->element[i]->str, "connections",
                                                   (json_int_t)total));
    }
    free(order);
    req->users = users ? json_dumps(users, JSON_COMPACT) : NULL;
    json_decref(users);
    if (!req->users)
        req->error = "unavailable";
    bus_reply(req->bus, req);
}

static void redis_presence_list(struct bus *b, struct bus_request *req)
{
    struct redis_bus *e = engine(b);
    char key[NAME_MAX_LEN + 160];
    snprintf(key, sizeof key, "%s:presence:{%s}", e->cfg->ns, req->room);
    const char *argv[] = {"HGETALL", key};
    if (redis_link_command(data_link(e), on_presence_list, req, 2, argv, NULL)) {
        req->error = "unavailable";
        bus_reply(b, req);
    }
}

static void on_presence_synced(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    struct presence_call *pc = privdata;
    redisReply *r = reply;
    for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING && name_valid(r->element[i]->str, r->element[i]->len))
            publish_presence(pc->e, pc->room, r->element[i]->str, "leave");
    free(pc);
}

/* Arguments of a sync script: KEYS[1], node, now, expiry, then name and
 * count pairs. Strings are borrowed; counts are printed here. */
struct sync_args {
    const char **args;
    size_t *lens;
    char (*counts)[24];
    int n, cap;
    char now[24], expiry[24];
};

/* Room for pairs name/count pairs after the head. Returns 0 or -1. */
static int sync_args_init(struct sync_args *a, struct redis_bus *e, const char *key, size_t pairs)
{
    a->cap = 4 + 2 * (int)pairs;
    a->n = 0;
    a->args = calloc((size_t)a->cap, sizeof *a->args);
    a->lens = calloc((size_t)a->cap, sizeof *a->lens);
    a->counts = calloc((size_t)a->cap, sizeof *a->counts);
    if (!a->args || !a->lens || !a->counts)
        return -1;
    uint64_t now = event_now_ms();
    snprintf(a->now, sizeof a->now, "%llu", (unsigned long long)now);
    snprintf(a->expiry, sizeof a->expiry, "%llu", (unsigned long long)presence_expiry(e, now));
    const char *head[] = {key, e->cfg->node_id, a->now, a->expiry};
    for (int i = 0; i < 4; i++) {
        a->args[a->n] = head[i];
        a->lens[a->n++] = strlen(head[i]);
    }
    return 0;
}

/* Adds a name and its count; a callback of presence_each_user and
 * bus_each_room_count. */
static void sync_args_add(const char *name, unsigned long count, void *arg)
{
    struct sync_args *a = arg;
    if (a->n + 2 > a->cap)
        return;
    snprintf(a->counts[a->n], sizeof a->counts[0], "%lu", count);
    a->args[a->n] = name;
    a->lens[a->n] = strlen(name);
    a->args[a->n + 1] = a->counts[a->n];
    a->lens[a->n + 1] = strlen(a->counts[a->n]);
    a->n += 2;
}

static void sync_args_free(struct sync_args *a)
{
    free(a->args);
    free(a->lens);
    free(a->counts);
}

/* Refreshes this node's presence in room and sweeps out dead nodes. */
static void sync_room(const char *room, void *arg)
{
    struct redis_bus *e = arg;
    struct presence *p = bus_presence(e->bus);
    char key[NAME_MAX_LEN + 160];
    snprintf(key, sizeof key, "%s:presence:{%s}", e->cfg->ns, room);
    struct sync_args a = {0};
    struct presence_call *pc = calloc(1, sizeof *pc);
    if (pc && sync_args_init(&a, e, key, presence_user_count(p, room)) == 0) {
        presence_each_user(p, room, sync_args_add, &a);
        pc->e = e;
        snprintf(pc->room, sizeof pc->room, "%s", room);
        if (redis_script_call(data_link(e), &e->presence_sync, 1, a.n, a.args, a.lens, on_presence_synced, pc) == 0)
            pc = NULL;
    }
    free(pc);
    sync_args_free(&a);
}

static void count_one(const char *room, unsigned long members, void *arg)
{
    (void)room;
    (void)members;
    (*(size_t *)arg)++;
}

static void rooms_key(const struct redis_bus *e, char *out, size_t cap)
{
    snprintf(out, cap, "%s:rooms", e->cfg->ns);
}

static void on_rooms_synced(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    (void)privdata;
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_ERROR)
        log_warn("redis: room counts not recorded: %s", r->str);
}

/* Records this node's member count of each room for /api/rooms. */
static void sync_rooms(struct redis_bus *e)
{
    size_t rooms = 0;
    bus_each_room_count(e->bus, count_one, &rooms);
    char key[NAME_MAX_LEN + 160];
    rooms_key(e, key, sizeof key);
    struct sync_args a = {0};
    if (sync_args_init(&a, e, key, rooms) == 0) {
        bus_each_room_count(e->bus, sync_args_add, &a);
        redis_script_call(data_link(e), &e->rooms_sync, 1, a.n, a.args, a.lens, on_rooms_synced, NULL);
    }
    sync_args_free(&a);
}

static void on_rooms(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    struct bus_request *req = privdata;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        req->error = "unavailable";
        bus_reply(req->bus, req);
        return;
    }
    /* "room|node" -> "members@expiry": live counts add up per room. */
    struct map cluster;
    map_init(&cluster);
    uint64_t now = event_now_ms();
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *field = r->element[i]->str, *bar = field ? strrchr(field, '|') : NULL;
        unsigned long members;
        unsigned long long expiry;
        if (!bar || sscanf(r->element[i + 1]->str, "%lu@%llu", &members, &expiry) != 2 || expiry <= now)
            continue;
        size_t len = (size_t)(bar - field);
        uintptr_t sum = (uintptr_t)map_get(&cluster, field, len) + members;
        map_put(&cluster, field, len, (void *)sum);
    }
    if (!(req->rooms = bus_rooms_format(req->bus, &cluster)))
        req->error = "unavailable";
    map_free(&cluster);
    bus_reply(req->bus, req);
}

static void redis_rooms(struct bus *b, struct bus_request *req)
{
    struct redis_bus *e = engine(b);
    char key[NAME_MAX_LEN + 160];
    rooms_key(e, key, sizeof key);
    const char *argv[] = {"HGETALL", key};
    if (redis_link_command(data_link(e), on_rooms, req, 2, argv, NULL)) {
        req->error = "unavailable";
        bus_reply(b, req);
    }
}

static void on_presence_timer(uv_timer_t *t)
{
    struct redis_bus *e = t->data;
    struct redis_link *data = data_link(e);
    /* Load the presence scripts once per connection of the store link. */
    if (data->up && e->scripts_loaded_for != data->reconnects + 1) {
        e->scripts_loaded_for = data->reconnects + 1;
        redis_script_load(data, &e->presence_set);
        redis_script_load(data, &e->presence_sync);
        redis_script_load(data, &e->rooms_sync);
    }
    bus_each_room(e->bus, sync_room, e);
    sync_rooms(e);
}

/* ---- lifetime -------------------------------------------------------------- */

static int redis_start(struct bus *b)
{
    struct server *s = bus_server(b);
    struct redis_bus *e = calloc(1, sizeof *e);
    if (!e)
        return -1;
    e->bus = b;
    e->cfg = s->cfg;
    map_init(&e->channels);
    e->presence_set.source = presence_set_source;
    e->presence_sync.source = presence_sync_source;
    e->rooms_sync.source = rooms_sync_source;
    redis_script_init(&e->rooms_sync);
    redis_script_init(&e->presence_set);
    redis_script_init(&e->presence_sync);
    struct redis_link *links[] = {&e->pub, &e->sub};
    const char *names[] = {"bus", "subscriber"};
    for (int i = 0; i < 2; i++) {
        redis_url_parse(e->cfg->redis_url, &links[i]->url);
        links[i]->name = names[i];
        links[i]->min_backoff_ms = (uint64_t)e->cfg->redis_backoff_min;
        links[i]->max_backoff_ms = (uint64_t)e->cfg->redis_backoff_max;
        links[i]->data = e;
    }
    e->pub.on_up = e->pub.on_down = on_pub_changed;
    e->sub.on_up = on_sub_up;
    e->sub.on_down = on_sub_down;
    bus_set_engine_data(b, e);
    redis_interest(b, BUS_ALL, "", 1);
    uv_timer_init(s->loop, &e->presence_timer);
    e->presence_timer.data = e;
    uint64_t every = (uint64_t)e->cfg->presence_ttl * 1000 / 3;
    uv_timer_start(&e->presence_timer, on_presence_timer, 100, every);
    return redis_link_start(&e->pub, s->loop) || redis_link_start(&e->sub, s->loop) ? -1 : 0;
}

static void on_link_stopped(struct redis_link *l)
{
    struct redis_bus *e = l->data;
    if (++e->links_stopped < 2)
        return;
    const struct map_slot *slot;
    for (size_t i = 0; map_next(&e->channels, &i, &slot);)
        free(slot->value);
    map_free(&e->channels);
    free(e);
}

static void redis_stop(struct bus *b)
{
    struct redis_bus *e = engine(b);
    uv_close((uv_handle_t *)&e->presence_timer, NULL);
    e->pub.on_stopped = e->sub.on_stopped = on_link_stopped;
    redis_link_stop(&e->pub);
    redis_link_stop(&e->sub);
}

static int redis_ready(struct bus *b)
{
    struct redis_bus *e = engine(b);
    struct store *s = bus_store(b);
    return e->pub.up && e->sub.up && s->ops->ready(s);
}

const struct bus_engine bus_redis_engine = {
    .name = "redis",
    .start = redis_start,
    .stop = redis_stop,
    .ready = redis_ready,
    .publish = redis_publish,
    .interest = redis_interest,
    .presence = redis_presence,
    .presence_list = redis_presence_list,
    .rooms = redis_rooms,
};
