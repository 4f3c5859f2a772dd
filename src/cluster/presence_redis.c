/* presence_redis.c - the Redis engine of presence (docs/protocol.md
 * section 6): NS:presence:{ROOM} is a hash of user -> the nodes that have
 * connections of the user, each with a count and an expiry that the node
 * refreshes every third of --presence-ttl, then the user's info after a
 * '|' when it has one (the newest join's, on any node). A node that dies
 * stops being refreshed, and any node still in the room sweeps its users
 * out and announces presence_leave. The same refresh keeps this node's
 * member count of each room for GET /api/rooms, in NS:rooms:{NODE}, of
 * which it writes only what changed; NS:rooms:nodes says which nodes are
 * alive. A tenant's keys are under <namespace>:<tenant> (rooms are keys,
 * core/names.h), so each tenant has its own. Runs on the bus thread; uses
 * the store's link for the hashes and the bus's for announcements. */
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

/* A presence hash value: "node=count@expiry,node=count@expiry..." for the
 * nodes, then "|" and the info's JSON when the user has one. Node ids and
 * numbers never hold '|', so the first one starts the info. */
#define SPLIT_VALUE                                                                   \
    "local function split(v)\n"                                                       \
    "  local bar = string.find(v, '|', 1, true)\n"                                    \
    "  if bar then return string.sub(v, 1, bar - 1), string.sub(v, bar + 1) end\n"    \
    "  return v, ''\n"                                                                \
    "end\n"                                                                           \
    "local function value(kept, info)\n"                                              \
    "  local v = table.concat(kept, ',')\n"                                           \
    "  if info ~= '' then v = v .. '|' .. info end\n"                                 \
    "  return v\n"                                                                    \
    "end\n"

/* KEYS: presence hash. ARGV: node, user, count, now ms, expiry ms, joined
 * ("1" when a connection joined, "0" when one left), the joiner's info
 * ("" for none). Sets this node's count of the user, and on a join the
 * user's info (newest wins); returns "join" when the user was present on
 * no node before, "leave" when on none after, else "". */
static const char presence_set_source[] =
    SPLIT_VALUE
    "local node, user, count, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "local v = redis.call('HGET', KEYS[1], user)\n"
    "local before, kept, counts, info = false, {}, '', ''\n"
    "if v then counts, info = split(v) end\n"
    "for n, c, e in string.gmatch(counts, '([^,=]+)=(%d+)@(%d+)') do\n"
    "  if tonumber(e) > now then\n"
    "    before = true\n"
    "    if n ~= node then kept[#kept + 1] = n .. '=' .. c .. '@' .. e end\n"
    "  end\n"
    "end\n"
    "if ARGV[6] == '1' then info = ARGV[7] end\n"
    "if count > 0 then kept[#kept + 1] = node .. '=' .. count .. '@' .. ARGV[5] end\n"
    "if #kept > 0 then redis.call('HSET', KEYS[1], user, value(kept, info))\n"
    "else redis.call('HDEL', KEYS[1], user) end\n"
    "if #kept > 0 and not before then return 'join' end\n"
    "if before and #kept == 0 then return 'leave' end\n"
    "return ''\n";

/* KEYS: presence hash. ARGV: node, now ms, expiry ms, then user, count,
 * info ("" for none) triples of this node. Refreshes this node's entries
 * (the info of a user that has an entry stays; one this node writes anew,
 * the store having lost it, gets this node's), drops expired ones of dead
 * nodes, returns the users no node has any more. */
static const char presence_sync_source[] =
    SPLIT_VALUE
    "local node, now, exp = ARGV[1], tonumber(ARGV[2]), ARGV[3]\n"
    "local mine, mine_info = {}, {}\n"
    "for i = 4, #ARGV, 3 do mine[ARGV[i]] = ARGV[i + 1]; mine_info[ARGV[i]] = ARGV[i + 2] end\n"
    "local left = {}\n"
    "local all = redis.call('HGETALL', KEYS[1])\n"
    "for i = 1, #all, 2 do\n"
    "  local user, kept = all[i], {}\n"
    "  local counts, info = split(all[i + 1])\n"
    "  for n, c, e in string.gmatch(counts, '([^,=]+)=(%d+)@(%d+)') do\n"
    "    if n ~= node and tonumber(e) > now then kept[#kept + 1] = n .. '=' .. c .. '@' .. e end\n"
    "  end\n"
    "  if mine[user] then kept[#kept + 1] = node .. '=' .. mine[user] .. '@' .. exp; mine[user] = nil end\n"
    "  if #kept > 0 then redis.call('HSET', KEYS[1], user, value(kept, info))\n"
    "  else redis.call('HDEL', KEYS[1], user); left[#left + 1] = user end\n"
    "end\n"
    "for user, c in pairs(mine) do\n"
    "  redis.call('HSET', KEYS[1], user, value({node .. '=' .. c .. '@' .. exp}, mine_info[user]))\n"
    "end\n"
    "return left\n";

/* KEYS: this node's NS:rooms:{NODE}. ARGV: node, now ms, expiry ms,
 * "full" or how many rooms the hash holds, then room, members pairs (0:
 * the room has gone). Writes the pairs, after emptying the hash when
 * full, and keeps the hash alive until expiry. Returns 1, writing nothing,
 * when the hash does not hold as many rooms as the node wrote (it was lost
 * or expired): the node then writes it all. One key, tagged by the node:
 * on a cluster, each node's counts live on the shard of its id. */
static const char rooms_sync_source[] =
    "local now, exp = tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "if ARGV[4] == 'full' then redis.call('DEL', KEYS[1])\n"
    "elseif redis.call('HLEN', KEYS[1]) ~= tonumber(ARGV[4]) then return 1 end\n"
    "for i = 5, #ARGV, 2 do\n"
    "  if ARGV[i + 1] == '0' then redis.call('HDEL', KEYS[1], ARGV[i])\n"
    "  else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end\n"
    "end\n"
    "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], exp - now) end\n"
    "return 0\n";

/* KEYS: NS:rooms:nodes. ARGV: node, now ms, expiry ms, "1" when the node
 * has rooms. Drops the nodes that expired, and lists this one until
 * expiry, or takes it out. */
static const char nodes_sync_source[] =
    "local now, exp = tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
    "if ARGV[4] == '1' then\n"
    "  redis.call('ZADD', KEYS[1], exp, ARGV[1])\n"
    "  redis.call('PEXPIRE', KEYS[1], exp - now)\n"
    "else redis.call('ZREM', KEYS[1], ARGV[1]) end\n"
    "return 0\n";

/* This node's rooms of one tenant, as the refreshes write them to its
 * NS:rooms:{NODE}. */
struct tenant_rooms {
    struct map written;  /* room name -> members, as the last refresh wrote them */
    struct map now;      /* room name -> members, this refresh */
    int full;            /* the hash may be lost or wrong: write it all */
};

struct presence_redis {
    struct bus *bus;
    const struct config *cfg;
    struct redis_link *pub;       /* the bus's publishing link */
    struct redis_script presence_set, presence_sync, rooms_sync, nodes_sync;
    uv_timer_t timer;
    uint64_t scripts_loaded_for;  /* store-link connection the scripts were loaded on, plus one */
    struct map tenants;           /* tenant ("" for none) -> struct tenant_rooms */
};

static struct redis_link *data_link(struct presence_redis *e)
{
    return store_redis_link(bus_store(e->bus));
}

static void publish_presence(struct presence_redis *e, const char *room, const char *user, const char *kind,
                             const char *info)
{
    char channel[ENVELOPE_CHANNEL_MAX];
    envelope_channel_name(e->cfg->ns, EVENT_ROOM, room, channel);
    char *payload = envelope_presence(room, user, !strcmp(kind, "join") ? EVENT_PRESENCE_JOIN : EVENT_PRESENCE_LEAVE,
                                      e->cfg->node_id, info);
    if (!payload)
        return;
    /* A room's channel is sharded on a cluster. */
    const char *argv[] = {e->pub->url.nnodes ? "SPUBLISH" : "PUBLISH", channel, payload};
    if (redis_link_command(e->pub, NULL, NULL, 3, argv, NULL))
        log_warn("redis: presence_%s of %s in %s not announced: the bus is down", kind, user, room);
    free(payload);
}

/* What a presence script call needs when its reply comes. */
struct presence_call {
    struct presence_redis *e;
    char room[KEY_MAX_LEN + 1];
    char user[NAME_MAX_LEN + 1];
    char *info;  /* the joiner's (owned), for its presence_join */
};

static void presence_call_free(struct presence_call *pc)
{
    if (pc)
        free(pc->info);
    free(pc);
}

static void on_presence_set(struct redis_link *link, void *reply, void *privdata)
{
    (void)link;
    struct presence_call *pc = privdata;
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_STRING && r->len)
        publish_presence(pc->e, pc->room, pc->user, r->str, pc->info);
    else if (!r || r->type == REDIS_REPLY_ERROR)
        log_warn("redis: presence of %s in %s not recorded: %s", pc->user, pc->room, r ? r->str : "store down");
    presence_call_free(pc);
}

static uint64_t presence_expiry(const struct presence_redis *e, uint64_t now)
{
    return now + (uint64_t)e->cfg->presence_ttl * 1000;
}

void presence_redis_changed(struct presence_redis *e, const char *room, const char *user, unsigned long count,
                            int joined, const char *info)
{
    struct presence_call *pc = calloc(1, sizeof *pc);
    if (!pc || (joined && info && !(pc->info = strdup(info)))) {
        log_error("redis: out of memory recording the presence of %s in %s", user, room);
        presence_call_free(pc);
        return;
    }
    pc->e = e;
    strcpy(pc->room, room);
    strcpy(pc->user, user);
    char key[ENVELOPE_CHANNEL_MAX], count_text[24], now_text[24], exp_text[24];
    envelope_redis_name(e->cfg->ns, "presence", room, key);
    uint64_t now = clock_wall_ms();
    snprintf(count_text, sizeof count_text, "%lu", count);
    snprintf(now_text, sizeof now_text, "%llu", (unsigned long long)now);
    snprintf(exp_text, sizeof exp_text, "%llu", (unsigned long long)presence_expiry(e, now));
    const char *args[] = {key, e->cfg->node_id, user, count_text, now_text, exp_text, joined ? "1" : "0",
                          pc->info ? pc->info : ""};
    size_t lens[8];
    for (int i = 0; i < 8; i++)
        lens[i] = strlen(args[i]);
    if (redis_script_call(data_link(e), &e->presence_set, 1, 8, args, lens, on_presence_set, pc)) {
        log_warn("redis: presence of %s in %s not recorded: the store is down", user, room);
        presence_call_free(pc);
    }
}

static int by_user(const void *a, const void *b, void *arg)
{
    const redisReply *r = arg;
    return strcmp(r->element[*(const size_t *)a]->str, r->element[*(const size_t *)b]->str);
}

/* One user's entry of the presence list from its hash value, or NULL when
 * no live node has it (or out of memory). An info that is not a JSON object
 * of at most EVENT_INFO_MAX bytes (something else wrote it) is left out. */
static json_t *list_entry(const char *user, const char *value, uint64_t now)
{
    const char *bar = strchr(value, '|');
    char *counts = bar ? strndup(value, (size_t)(bar - value)) : strdup(value), *save = NULL;
    unsigned long total = 0;
    for (char *tok = counts ? strtok_r(counts, ",", &save) : NULL; tok; tok = strtok_r(NULL, ",", &save)) {
        unsigned long count;
        unsigned long long expiry;
        char *eq = strrchr(tok, '=');
        if (eq && sscanf(eq + 1, "%lu@%llu", &count, &expiry) == 2 && expiry > now)
            total += count;
    }
    free(counts);
    if (!total)
        return NULL;
    json_t *entry = json_pack("{s:s, s:I}", "user", user, "connections", (json_int_t)total);
    json_t *info = bar && strlen(bar + 1) <= EVENT_INFO_MAX ? json_loads(bar + 1, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (entry && json_is_object(info))
        json_object_set(entry, "info", info);
    json_decref(info);
    return entry;
}

static void on_presence_list(struct redis_link *link, void *reply, void *privdata)
{
    (void)link;
    struct bus_presence *req = privdata;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        req->base.error = WSFAN_EUNAVAILABLE;
        bus_reply(req->base.bus, &req->base);
        return;
    }
    /* HGETALL: user, value; counts of live nodes add up. Redis keeps fields
     * in no order: sort by user as the memory engine does. */
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
        json_t *entry = list_entry(r->element[i]->str, r->element[i + 1]->str ? r->element[i + 1]->str : "", now);
        if (entry)
            json_array_append_new(users, entry);
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
    envelope_redis_name(e->cfg->ns, "presence", req->room, key);
    const char *argv[] = {"HGETALL", key};
    if (redis_link_command(data_link(e), on_presence_list, req, 2, argv, NULL)) {
        req->base.error = WSFAN_EUNAVAILABLE;
        bus_reply(e->bus, &req->base);
    }
}

static void on_presence_synced(struct redis_link *link, void *reply, void *privdata)
{
    (void)link;
    struct presence_call *pc = privdata;
    redisReply *r = reply;
    for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING && name_valid(r->element[i]->str, r->element[i]->len))
            publish_presence(pc->e, pc->room, r->element[i]->str, "leave", NULL);
    presence_call_free(pc);
}

/* Arguments of a sync script: its keys (the first nkeys of key), node,
 * now, expiry, then an argument of the caller's when it has one, and
 * groups of a name, a count (printed here) and, for presence, an info.
 * Strings other than the keys are borrowed. */
struct sync_args {
    char key[2][ENVELOPE_CHANNEL_MAX];
    const char **args;
    size_t *lens;
    char (*counts)[24];
    int n, cap;
    char now[24], expiry[24];
};

static void sync_args_push(struct sync_args *a, const char *s)
{
    a->args[a->n] = s;
    a->lens[a->n++] = strlen(s);
}

/* Room for the head, with extra unless NULL, and groups of per (2 or 3)
 * arguments. Returns 0 or -1 when out of memory. */
static int sync_args_init(struct sync_args *a, struct presence_redis *e, int nkeys, const char *extra, size_t groups,
                          int per)
{
    a->cap = nkeys + 4 + per * (int)groups;
    a->n = 0;
    a->args = calloc((size_t)a->cap, sizeof *a->args);
    a->lens = calloc((size_t)a->cap, sizeof *a->lens);
    a->counts = calloc((size_t)a->cap, sizeof *a->counts);
    if (!a->args || !a->lens || !a->counts)
        return -1;
    uint64_t now = clock_wall_ms();
    snprintf(a->now, sizeof a->now, "%llu", (unsigned long long)now);
    snprintf(a->expiry, sizeof a->expiry, "%llu", (unsigned long long)presence_expiry(e, now));
    for (int i = 0; i < nkeys; i++)
        sync_args_push(a, a->key[i]);
    sync_args_push(a, e->cfg->node_id);
    sync_args_push(a, a->now);
    sync_args_push(a, a->expiry);
    if (extra)
        sync_args_push(a, extra);
    return 0;
}

/* Adds a name and its count, and the info when with_info. */
static void sync_args_add(struct sync_args *a, const char *name, unsigned long count, int with_info, const char *info)
{
    if (a->n + 2 + with_info > a->cap)
        return;
    snprintf(a->counts[a->n], sizeof a->counts[0], "%lu", count);
    const char *count_text = a->counts[a->n];
    sync_args_push(a, name);
    sync_args_push(a, count_text);
    if (with_info)
        sync_args_push(a, info ? info : "");
}

/* A callback of presence_each_user. */
static void sync_args_add_user(const char *user, unsigned long count, const char *info, void *arg)
{
    sync_args_add(arg, user, count, 1, info);
}

/* Frees the arrays (args NULL after: nothing to send). */
static void sync_args_free(struct sync_args *a)
{
    free(a->args);
    free(a->lens);
    free(a->counts);
    a->args = NULL;
    a->lens = NULL;
    a->counts = NULL;
}

/* Refreshes this node's presence in room (a key) and sweeps out dead
 * nodes. A callback of bus_each_room_count. */
static void sync_room(const char *room, unsigned long members, void *arg)
{
    (void)members;
    struct presence_redis *e = arg;
    struct presence *p = bus_presence(e->bus);
    struct sync_args a = {0};
    envelope_redis_name(e->cfg->ns, "presence", room, a.key[0]);
    struct presence_call *pc = calloc(1, sizeof *pc);
    if (pc && sync_args_init(&a, e, 1, NULL, presence_user_count(p, room), 3) == 0) {
        presence_each_user(p, room, sync_args_add_user, &a);
        pc->e = e;
        snprintf(pc->room, sizeof pc->room, "%s", room);
        if (redis_script_call(data_link(e), &e->presence_sync, 1, a.n, a.args, a.lens, on_presence_synced, pc) == 0)
            pc = NULL;
    }
    presence_call_free(pc);
    sync_args_free(&a);
}

/* A write of a tenant's room counts, until its reply. */
struct rooms_write {
    struct presence_redis *e;
    char tenant[TENANT_MAX_LEN + 1];
};

static void on_rooms_synced(struct redis_link *link, void *reply, void *privdata)
{
    (void)link;
    struct rooms_write *w = privdata;
    redisReply *r = reply;
    /* No reply: the link went down, and the next one gets every tenant's
     * counts anew. */
    if (r && (r->type != REDIS_REPLY_INTEGER || r->integer != 0)) {
        if (r->type == REDIS_REPLY_ERROR)
            log_warn("redis: room counts not recorded: %s", r->str);
        struct tenant_rooms *t = map_get(&w->e->tenants, w->tenant, strlen(w->tenant));
        if (t)
            t->full = 1;
    }
    free(w);
}

/* Puts a room's count in its tenant's map of this refresh. A callback of
 * bus_each_room_count. */
static void note_room(const char *room, unsigned long members, void *arg)
{
    struct presence_redis *e = arg;
    size_t tlen = name_key_tenant_len(room);
    struct tenant_rooms *t = map_get(&e->tenants, room, tlen);
    const char *name = name_of_key(room);
    if (!t) {
        /* New here: whatever its hash holds is another life's. */
        if (!(t = calloc(1, sizeof *t)) || map_put(&e->tenants, room, tlen, t)) {
            free(t);
            t = NULL;
        } else {
            map_init(&t->written);
            map_init(&t->now);
            t->full = 1;
        }
    }
    if (!t || map_put(&t->now, name, strlen(name), (void *)(uintptr_t)members))
        log_error("redis: out of memory: the member count of %s is left out of this refresh", room);
}

/* The rooms the refresh writes: all when full, else those whose count
 * changed and, with 0, those gone. Adds them to a unless it is NULL;
 * returns how many. */
static size_t each_change(const struct tenant_rooms *t, struct sync_args *a)
{
    size_t n = 0;
    const struct map_slot *slot;
    for (size_t i = 0; map_next(&t->now, &i, &slot);) {
        uintptr_t members = (uintptr_t)slot->value;
        if (t->full || (uintptr_t)map_get(&t->written, slot->key, slot->len) != members) {
            if (a)
                sync_args_add(a, slot->key, members, 0, NULL);
            n++;
        }
    }
    for (size_t i = 0; !t->full && map_next(&t->written, &i, &slot);) {
        if (!map_get(&t->now, slot->key, slot->len)) {
            if (a)
                sync_args_add(a, slot->key, 0, 0, NULL);
            n++;
        }
    }
    return n;
}

/* Sends what changed in a tenant's counts since the last refresh, which
 * also keeps this node alive in the tenant's NS:rooms:nodes. */
static void write_tenant(struct presence_redis *e, const char *tenant, struct tenant_rooms *t)
{
    char buf[KEY_MAX_LEN + 1], held[24];
    struct sync_args a = {0};
    struct rooms_write *w = calloc(1, sizeof *w);
    int sent = 0;
    snprintf(held, sizeof held, "%zu", t->written.count);
    envelope_redis_name(e->cfg->ns, "rooms", name_key(tenant, e->cfg->node_id, buf), a.key[0]);
    envelope_redis_name(e->cfg->ns, "rooms:nodes", name_key(tenant, "", buf), a.key[1]);
    if (w && sync_args_init(&a, e, 1, t->full ? "full" : held, each_change(t, NULL), 2) == 0) {
        each_change(t, &a);
        w->e = e;
        strcpy(w->tenant, tenant);
        sent = redis_script_call(data_link(e), &e->rooms_sync, 1, a.n, a.args, a.lens, on_rooms_synced, w) == 0;
    }
    if (sent) {
        /* The node's place in NS:rooms:nodes: a second call, as the hash
         * and the list live on different shards of a cluster. */
        a.args[0] = a.key[1];
        a.lens[0] = strlen(a.key[1]);
        a.args[4] = t->now.count ? "1" : "0";
        a.lens[4] = 1;
        redis_script_call(data_link(e), &e->nodes_sync, 1, 5, a.args, a.lens, NULL, NULL);
    }
    /* Not sent: write it all next time. */
    t->full = !sent;
    if (!sent)
        free(w);
    sync_args_free(&a);
}

/* Writes this node's member count of each room for /api/rooms: in each
 * tenant's NS:rooms:{NODE}, what changed since the last refresh. A tenant
 * whose last room here has gone is written once more, then forgotten. */
static void sync_rooms(struct presence_redis *e)
{
    bus_each_room_count(e->bus, note_room, e);
    char (*gone)[TENANT_MAX_LEN + 1] = malloc(sizeof *gone * (e->tenants.count ? e->tenants.count : 1));
    size_t ngone = 0;
    const struct map_slot *slot;
    for (size_t i = 0; map_next(&e->tenants, &i, &slot);) {
        struct tenant_rooms *t = slot->value;
        write_tenant(e, slot->key, t);
        map_free(&t->written);
        t->written = t->now;
        map_init(&t->now);
        if (!t->written.count && !t->full && gone)
            strcpy(gone[ngone++], slot->key);
    }
    for (size_t i = 0; i < ngone; i++) {
        struct tenant_rooms *t = map_remove(&e->tenants, gone[i], strlen(gone[i]));
        map_free(&t->written);
        free(t);
    }
    free(gone);
}

/* A GET /api/rooms on its way: the nodes alive, then each one's counts,
 * added up as they come. */
struct rooms_read {
    struct presence_redis *e;
    struct bus_rooms *req;
    struct map totals;  /* room -> members on the nodes read so far */
    int pending;        /* node hashes still to come */
    int failed;
};

static void rooms_read_done(struct rooms_read *rr)
{
    struct bus_rooms *req = rr->req;
    if (rr->failed)
        req->base.error = WSFAN_EUNAVAILABLE;
    else if (!(req->rooms = bus_rooms_format(req->base.bus, &rr->totals, req->tenant)))
        req->base.error = WSFAN_ENOMEM;
    map_free(&rr->totals);
    bus_reply(req->base.bus, &req->base);
    free(rr);
}

/* One node's NS:rooms:{NODE}: room, members pairs. */
static void on_node_rooms(struct redis_link *link, void *reply, void *privdata)
{
    (void)link;
    struct rooms_read *rr = privdata;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY)
        rr->failed = 1;
    for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
        const redisReply *room = r->element[i], *count = r->element[i + 1];
        long long n = count->type == REDIS_REPLY_STRING ? atoll(count->str) : 0;
        if (room->type != REDIS_REPLY_STRING || !name_valid(room->str, room->len) || n <= 0)
            continue;
        uintptr_t before = (uintptr_t)map_get(&rr->totals, room->str, room->len);
        if (map_put(&rr->totals, room->str, room->len, (void *)(before + (uintptr_t)n)))
            rr->failed = 1;
    }
    if (--rr->pending == 0)
        rooms_read_done(rr);
}

/* The nodes alive in the tenant's NS:rooms:nodes: each one's hash is read
 * on its own (on a cluster, they live on different shards). */
static void on_rooms_nodes(struct redis_link *link, void *reply, void *privdata)
{
    (void)link;
    struct rooms_read *rr = privdata;
    redisReply *r = reply;
    char buf[KEY_MAX_LEN + 1], hash[ENVELOPE_CHANNEL_MAX];
    rr->pending = 1; /* until every read is sent */
    if (!r || r->type != REDIS_REPLY_ARRAY)
        rr->failed = 1;
    for (size_t i = 0; !rr->failed && i < r->elements; i++) {
        const redisReply *node = r->element[i];
        if (node->type != REDIS_REPLY_STRING || node->len > NAME_MAX_LEN)
            continue;
        envelope_redis_name(rr->e->cfg->ns, "rooms", name_key(rr->req->tenant, node->str, buf), hash);
        const char *argv[] = {"HGETALL", hash};
        if (redis_link_command(data_link(rr->e), on_node_rooms, rr, 2, argv, NULL))
            rr->failed = 1;
        else
            rr->pending++;
    }
    if (--rr->pending == 0)
        rooms_read_done(rr);
}

void presence_redis_rooms(struct presence_redis *e, struct bus_rooms *req)
{
    char nodes[ENVELOPE_CHANNEL_MAX], now[24], buf[KEY_MAX_LEN + 1];
    envelope_redis_name(e->cfg->ns, "rooms:nodes", name_key(req->tenant, "", buf), nodes);
    snprintf(now, sizeof now, "(%llu", (unsigned long long)clock_wall_ms());
    const char *argv[] = {"ZRANGEBYSCORE", nodes, now, "+inf"};
    struct rooms_read *rr = calloc(1, sizeof *rr);
    if (rr) {
        rr->e = e;
        rr->req = req;
        map_init(&rr->totals);
    }
    if (!rr || redis_link_command(data_link(e), on_rooms_nodes, rr, 4, argv, NULL)) {
        req->base.error = rr ? WSFAN_EUNAVAILABLE : WSFAN_ENOMEM;
        free(rr);
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
        redis_script_load(data, &e->nodes_sync);
        /* The room counts written over the last connection may be lost. */
        const struct map_slot *slot;
        for (size_t i = 0; map_next(&e->tenants, &i, &slot);)
            ((struct tenant_rooms *)slot->value)->full = 1;
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
    map_init(&e->tenants);
    e->presence_set.source = presence_set_source;
    e->presence_sync.source = presence_sync_source;
    e->rooms_sync.source = rooms_sync_source;
    e->nodes_sync.source = nodes_sync_source;
    redis_script_init(&e->presence_set);
    redis_script_init(&e->presence_sync);
    redis_script_init(&e->rooms_sync);
    redis_script_init(&e->nodes_sync);
    uv_timer_init(bus_loop(b), &e->timer);
    e->timer.data = e;
    uint64_t every = (uint64_t)e->cfg->presence_ttl * 1000 / 3;
    uv_timer_start(&e->timer, on_presence_timer, 100, every);
    return e;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct presence_redis *e = h->data;
    const struct map_slot *slot;
    for (size_t i = 0; map_next(&e->tenants, &i, &slot);) {
        struct tenant_rooms *t = slot->value;
        map_free(&t->written);
        map_free(&t->now);
        free(t);
    }
    map_free(&e->tenants);
    free(e);
}

void presence_redis_destroy(struct presence_redis *e)
{
    uv_close((uv_handle_t *)&e->timer, on_timer_closed);
}
