/* presence_redis.c - the Redis engine of presence (docs/protocol.md
 * section 6): NS:presence:{ROOM} is a hash of user -> the nodes that have
 * connections of the user, each with a count and an expiry that the node
 * refreshes every third of --presence-ttl. A node that dies stops being
 * refreshed, and any node still in the room sweeps its users out and
 * announces presence_leave. The same refresh keeps NS:rooms, this node's
 * member count of each room, for GET /api/rooms. Runs on the bus thread;
 * uses the store's link for the hashes and the bus's for announcements. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/presence.h"
#include "codec/envelope.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/map.h"
#include "net/redis.h"

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



struct presence_redis {
    struct bus *bus;
    const struct config *cfg;
    struct redis_link *pub;       /* the bus's publishing link */
    struct redis_script presence_set, presence_sync, rooms_sync;
    uv_timer_t timer;
    uint64_t scripts_loaded_for;  /* store-link connection the scripts were loaded on, plus one */
};

static struct redis_link *data_link(struct presence_redis *e)
{
    return store_redis_link(bus_store(e->bus));
}

static void presence_key(const struct presence_redis *e, char out[ENVELOPE_CHANNEL_MAX], const char *room)
{
    snprintf(out, ENVELOPE_CHANNEL_MAX, "%s:presence:{%s}", e->cfg->ns, room);
}

static void publish_presence(struct presence_redis *e, const char *room, const char *user, const char *kind)
{
    char channel[ENVELOPE_CHANNEL_MAX];
    envelope_channel_name(e->cfg->ns, EVENT_ROOM, room, channel);
    char *payload = envelope_presence(room, user, !strcmp(kind, "join") ? EVENT_PRESENCE_JOIN : EVENT_PRESENCE_LEAVE,
                                      e->cfg->node_id);
    if (!payload)
        return;
    const char *argv[] = {"PUBLISH", channel, payload};
    if (redis_link_command(e->pub, NULL, NULL, 3, argv, NULL))
        log_warn("redis: presence_%s of %s in %s not announced: the bus is down", kind, user, room);
    free(payload);
}

/* What a presence script call needs when its reply comes. */
struct presence_call {
    struct presence_redis *e;
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

static uint64_t presence_expiry(const struct presence_redis *e, uint64_t now)
{
    return now + (uint64_t)e->cfg->presence_ttl * 1000;
}

void presence_redis_changed(struct presence_redis *e, const char *room, const char *user, unsigned long count)
{
    struct presence_call *pc = calloc(1, sizeof *pc);
    if (!pc)
        return;
    pc->e = e;
    strcpy(pc->room, room);
    strcpy(pc->user, user);
    char key[ENVELOPE_CHANNEL_MAX], count_text[24], now_text[24], exp_text[24];
    presence_key(e, key, room);
    uint64_t now = clock_wall_ms();
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
    struct bus_presence *req = privdata;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        req->base.error = WSFAN_EUNAVAILABLE;
        bus_reply(req->base.bus, &req->base);
        return;
    }
    /* HGETALL: user, "node=count@expiry,..."; counts of live nodes add up.
     * Redis keeps fields in no order: sort by user as the memory engine does. */
    uint64_t now = clock_wall_ms();
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
        req->base.error = WSFAN_ENOMEM;
    bus_reply(req->base.bus, &req->base);
}

void presence_redis_list(struct presence_redis *e, struct bus_presence *req)
{
    char key[ENVELOPE_CHANNEL_MAX];
    presence_key(e, key, req->room);
    const char *argv[] = {"HGETALL", key};
    if (redis_link_command(data_link(e), on_presence_list, req, 2, argv, NULL)) {
        req->base.error = WSFAN_EUNAVAILABLE;
        bus_reply(e->bus, &req->base);
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
static int sync_args_init(struct sync_args *a, struct presence_redis *e, const char *key, size_t pairs)
{
    a->cap = 4 + 2 * (int)pairs;
    a->n = 0;
    a->args = calloc((size_t)a->cap, sizeof *a->args);
    a->lens = calloc((size_t)a->cap, sizeof *a->lens);
    a->counts = calloc((size_t)a->cap, sizeof *a->counts);
    if (!a->args || !a->lens || !a->counts)
        return -1;
    uint64_t now = clock_wall_ms();
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
static void sync_room(const char *room, unsigned long members, void *arg)
{
    (void)members;
    struct presence_redis *e = arg;
    struct presence *p = bus_presence(e->bus);
    char key[ENVELOPE_CHANNEL_MAX];
    presence_key(e, key, room);
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

static void rooms_key(const struct presence_redis *e, char *out, size_t cap)
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
static void sync_rooms(struct presence_redis *e)
{
    size_t rooms = 0;
    bus_each_room_count(e->bus, count_one, &rooms);
    char key[ENVELOPE_CHANNEL_MAX];
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
    struct bus_rooms *req = privdata;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        req->base.error = WSFAN_EUNAVAILABLE;
        bus_reply(req->base.bus, &req->base);
        return;
    }
    /* "room|node" -> "members@expiry": live counts add up per room. */
    struct map cluster;
    map_init(&cluster);
    uint64_t now = clock_wall_ms();
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
    if (!(req->rooms = bus_rooms_format(req->base.bus, &cluster)))
        req->base.error = WSFAN_ENOMEM;
    map_free(&cluster);
    bus_reply(req->base.bus, &req->base);
}

void presence_redis_rooms(struct presence_redis *e, struct bus_rooms *req)
{
    char key[ENVELOPE_CHANNEL_MAX];
    rooms_key(e, key, sizeof key);
    const char *argv[] = {"HGETALL", key};
    if (redis_link_command(data_link(e), on_rooms, req, 2, argv, NULL)) {
        req->base.error = WSFAN_EUNAVAILABLE;
        bus_reply(e->bus, &req->base);
    }
}

static void on_presence_timer(uv_timer_t *t)
{
    struct presence_redis *e = t->data;
    struct redis_link *data = data_link(e);
    /* Load the presence scripts once per connection of the store link. */
    if (data->up && e->scripts_loaded_for != data->reconnects + 1) {
        e->scripts_loaded_for = data->reconnects + 1;
        redis_script_load(data, &e->presence_set);
        redis_script_load(data, &e->presence_sync);
        redis_script_load(data, &e->rooms_sync);
    }
    bus_each_room_count(e->bus, sync_room, e);
    sync_rooms(e);
}

struct presence_redis *presence_redis_create(struct bus *b, struct redis_link *pub)
{
    struct presence_redis *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->bus = b;
    e->cfg = bus_config(b);
    e->pub = pub;
    e->presence_set.source = presence_set_source;
    e->presence_sync.source = presence_sync_source;
    e->rooms_sync.source = rooms_sync_source;
    redis_script_init(&e->presence_set);
    redis_script_init(&e->presence_sync);
    redis_script_init(&e->rooms_sync);
    uv_timer_init(bus_loop(b), &e->timer);
    e->timer.data = e;
    uint64_t every = (uint64_t)e->cfg->presence_ttl * 1000 / 3;
    uv_timer_start(&e->timer, on_presence_timer, 100, every);
    return e;
}

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

void presence_redis_destroy(struct presence_redis *e)
{
    uv_close((uv_handle_t *)&e->timer, on_timer_closed);
}
