/* store_redis.c - the Redis Streams engine of the store: a room's history
 * is the stream NS:history:{ROOM} (in a tenant's namespace for a room key
 * of a tenant), its entry ids are the offsets. A
 * persisted message is appended (and, on the bus's own Redis, published) by
 * one script, so history order is delivery order; recovery reads the
 * stream in one script so that "latest", "recovered" and the missed
 * entries agree. Runs on the bus thread over its own connection. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "codec/command.h"
#include "codec/event.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/names.h"
#include "net/redis.h"
#include "store/store.h"

/* KEYS: stream, channel, and the publish's idempotency key when it has one.
 * ARGV: maxlen, min id for the age trim or "", from, ts, data, envelope
 * head, envelope tail, publish flag, key window in seconds, age limit in ms
 * or "". Returns {offset, 1} for a key already used (nothing is stored or
 * published), else {new offset, 0}. Trims are exact, so that history never
 * holds more than it should. With an age limit the stream expires once its
 * newest entry is that old: an idle room's history and key go away by
 * themselves. Without one, the key never expires: trimmed empty, it still
 * knows its last id and how many entries it ever had, which is what
 * recovery relies on. */
static const char append_source[] =
    "if KEYS[3] then\n"
    "  local first = redis.call('GET', KEYS[3])\n"
    "  if first then return {first, 1} end\n"
    "end\n"
    "local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', 'f', ARGV[3], 't', ARGV[4], 'd', ARGV[5])\n"
    "if ARGV[2] ~= '' then\n"
    "  redis.call('XTRIM', KEYS[1], 'MINID', ARGV[2])\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[10])\n"
    "end\n"
    "if KEYS[3] then redis.call('SET', KEYS[3], id, 'EX', ARGV[9]) end\n"
    "if ARGV[8] == '1' then redis.call('PUBLISH', KEYS[2], ARGV[6] .. id .. ARGV[7]) end\n"
    "return {id, 0}\n";

/* KEYS: stream. ARGV: since ("" for the latest only), min id of the age
 * limit or "". Returns {latest, recovered, entries}. Entries past the age
 * limit are trimmed first, exactly, so that they count as trimmed.
 * Recovered when since is not past the latest and nothing after it was
 * trimmed: the stream's first entry is not newer than since, or nothing was
 * ever trimmed. */
static const char recover_source[] =
    "local function cmp(a, b)\n"
    "  local am, as = string.match(a, '^(%d+)-(%d+)$')\n"
    "  local bm, bs = string.match(b, '^(%d+)-(%d+)$')\n"
    "  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)\n"
    "  if am ~= bm then return am < bm and -1 or 1 end\n"
    "  if as ~= bs then return as < bs and -1 or 1 end\n"
    "  return 0\n"
    "end\n"
    "if redis.call('EXISTS', KEYS[1]) == 0 then\n"
    "  return {'0-0', (ARGV[1] == '0-0') and 1 or 0, {}}\n"
    "end\n"
    "if ARGV[2] ~= '' then redis.call('XTRIM', KEYS[1], 'MINID', ARGV[2]) end\n"
    "local info = redis.call('XINFO', 'STREAM', KEYS[1])\n"
    "local f = {}\n"
    "for i = 1, #info, 2 do f[info[i]] = info[i + 1] end\n"
    "local latest = f['last-generated-id']\n"
    "if ARGV[1] == '' then return {latest, 0, {}} end\n"
    "local since = ARGV[1]\n"
    "local c = cmp(since, latest)\n"
    "if c >= 0 then return {latest, c == 0 and 1 or 0, {}} end\n"
    "local first = f['first-entry']\n"
    "local whole = f['entries-added'] == f['length']\n"
    "if not whole and (first == nil or first == false or cmp(first[1], since) > 0) then\n"
    "  return {latest, 0, {}}\n"
    "end\n"
    "return {latest, 1, redis.call('XRANGE', KEYS[1], '(' .. since, '+')}\n";

struct store_redis {
    struct store base;
    const struct config *cfg;
    struct redis_link link;
    struct redis_script append, recover;
    int same_redis;  /* history lives on the bus's Redis: publish in the script */
};

/* NS:history:{ROOM} of a room key: NS has the key's tenant. */
static void history_key(const struct store_redis *r, const char *room, char out[ENVELOPE_CHANNEL_MAX])
{
    envelope_redis_name(r->cfg->ns, "history", room, out);
}

static void fail(struct store_call *call, int code)
{
    call->error = code;
    call->done(call);
}

/* Age limit of history in milliseconds, 0 for none. */
static uint64_t ttl_ms(const struct store_redis *r)
{
    return (uint64_t)r->cfg->history_ttl * 1000;
}

/* Adds a stream entry [id, [field, value, ...]] to the batch as a message
 * event; with now set, entries past the age limit are skipped (a history
 * page; recovery trims them in its script instead, so that they count).
 * Returns 0, or -1 when the entry is not one of ours or memory ran out. */
static int add_entry(struct store_redis *r, struct store_call *call, const redisReply *entry, uint64_t now)
{
    if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 || entry->element[0]->type != REDIS_REPLY_STRING ||
        entry->element[1]->type != REDIS_REPLY_ARRAY)
        return -1;
    const char *id = entry->element[0]->str;
    const redisReply *fields = entry->element[1];
    const char *from = NULL, *data = NULL;
    size_t data_len = 0;
    uint64_t ts = 0;
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *k = fields->element[i], *v = fields->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        if (!strcmp(k->str, "f"))
            from = v->len ? v->str : NULL;
        else if (!strcmp(k->str, "t"))
            ts = strtoull(v->str, NULL, 10);
        else if (!strcmp(k->str, "d")) {
            data = v->str;
            data_len = v->len;
        }
    }
    struct offset offset;
    if (!data || offset_parse(id, &offset))
        return -1;
    if (now && ttl_ms(r) && ts + ttl_ms(r) <= now)
        return 0;
    struct event *event = event_message(call->room, &offset, from, data, data_len, ts);
    int rc = event ? store_batch_add(&call->batch, event->json, event->len, offset) : -1;
    if (event)
        event_unref(event);
    return rc;
}

static void on_appended(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    struct store_call *call = privdata;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[0]->len >= OFFSET_MAX_LEN || r->element[1]->type != REDIS_REPLY_INTEGER) {
        if (r && r->type == REDIS_REPLY_ERROR)
            log_error("redis store: append: %s", r->str);
        fail(call, WSFAN_EUNAVAILABLE);
        return;
    }
    memcpy(call->offset, r->element[0]->str, r->element[0]->len + 1);
    call->duplicate = r->element[1]->integer == 1;
    if (call->duplicate)
        call->published = 0;
    call->done(call);
}

static void redis_append(struct store *s, struct store_call *call)
{
    struct store_redis *r = (struct store_redis *)s;
    char key[ENVELOPE_CHANNEL_MAX], idem[ENVELOPE_CHANNEL_MAX + PUBLISH_KEY_MAX], maxlen[24], minid[48] = "",
        ts[24], window[24], ttl[24] = "";
    history_key(r, call->room, key);
    if (r->cfg->history_length == 0) {
        /* History is off: nothing is stored; the bus publishes as is. */
        call->offset[0] = '\0';
        call->done(call);
        return;
    }
    snprintf(maxlen, sizeof maxlen, "%d", r->cfg->history_length);
    if (ttl_ms(r)) {
        snprintf(minid, sizeof minid, "%llu-0", (unsigned long long)(call->ts - ttl_ms(r)));
        snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)ttl_ms(r));
    }
    snprintf(ts, sizeof ts, "%llu", (unsigned long long)call->ts);
    snprintf(window, sizeof window, "%d", r->cfg->idempotency_window);
    int keyed = call->key && r->cfg->idempotency_window > 0;
    size_t idem_len = 0;
    if (keyed) {
        /* NS:idem:{ROOM}:KEY: in the room's hash slot, like its stream. */
        envelope_redis_name(r->cfg->ns, "idem", call->room, idem);
        idem_len = strlen(idem);
        idem[idem_len++] = ':';
        memcpy(idem + idem_len, call->key, call->key_len);
        idem_len += call->key_len;
    }
    call->published = r->same_redis;
    const char *from = call->from ? call->from : "";
    const char *args[] = {key, call->channel, idem, maxlen, minid, from, ts, call->data,
                          call->envelope->head, call->envelope->tail, call->published ? "1" : "0", window, ttl};
    size_t lens[13];
    for (int i = 0; i < 13; i++)
        lens[i] = i == 7 ? call->data_len : i == 2 ? idem_len : strlen(args[i]);
    /* Without a key, KEYS[3] is left out: the args shift by one. */
    int nkeys = keyed ? 3 : 2;
    if (!keyed) {
        memmove(&args[2], &args[3], sizeof args[0] * 10);
        memmove(&lens[2], &lens[3], sizeof lens[0] * 10);
    }
    if (redis_script_call(&r->link, &r->append, nkeys, 10 + nkeys, args, lens, on_appended, call))
        fail(call, WSFAN_EUNAVAILABLE);
}

static void on_recovered(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    struct store_call *call = privdata;
    struct store_redis *r = call->engine;
    redisReply *rep = reply;
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 || rep->element[0]->type != REDIS_REPLY_STRING ||
        rep->element[0]->len >= OFFSET_MAX_LEN) {
        if (rep && rep->type == REDIS_REPLY_ERROR)
            log_error("redis store: recover: %s", rep->str);
        fail(call, WSFAN_EUNAVAILABLE);
        return;
    }
    memcpy(call->offset, rep->element[0]->str, rep->element[0]->len + 1);
    call->recovered = rep->element[1]->type == REDIS_REPLY_INTEGER && rep->element[1]->integer == 1;
    const redisReply *entries = rep->element[2];
    for (size_t i = 0; entries->type == REDIS_REPLY_ARRAY && i < entries->elements; i++)
        if (add_entry(r, call, entries->element[i], 0)) {
            store_batch_free(&call->batch);
            fail(call, WSFAN_EUNAVAILABLE);
            return;
        }
    call->done(call);
}

static void recover_or_latest(struct store_redis *r, struct store_call *call, const char *since)
{
    char key[ENVELOPE_CHANNEL_MAX], minid[48] = "";
    history_key(r, call->room, key);
    if (ttl_ms(r))
        snprintf(minid, sizeof minid, "%llu-0", (unsigned long long)(clock_wall_ms() - ttl_ms(r)));
    const char *args[] = {key, since, minid};
    size_t lens[] = {strlen(key), strlen(since), strlen(minid)};
    call->engine = r;
    if (redis_script_call(&r->link, &r->recover, 1, 3, args, lens, on_recovered, call))
        fail(call, WSFAN_EUNAVAILABLE);
}

static void redis_recover(struct store *s, struct store_call *call)
{
    char since[OFFSET_MAX_LEN];
    offset_format(call->since, since);
    recover_or_latest((struct store_redis *)s, call, since);
}

static void redis_latest(struct store *s, struct store_call *call)
{
    recover_or_latest((struct store_redis *)s, call, "");
}

static void on_history(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    struct store_call *call = privdata;
    struct store_redis *r = call->engine;
    redisReply *rep = reply;
    if (!rep || rep->type != REDIS_REPLY_ARRAY) {
        fail(call, WSFAN_EUNAVAILABLE);
        return;
    }
    /* XREVRANGE gives newest first; the page is oldest first. */
    uint64_t now = clock_wall_ms();
    for (size_t i = rep->elements; i-- > 0;)
        if (add_entry(r, call, rep->element[i], now)) {
            store_batch_free(&call->batch);
            fail(call, WSFAN_EUNAVAILABLE);
            return;
        }
    call->done(call);
}

static void redis_history(struct store *s, struct store_call *call)
{
    struct store_redis *r = (struct store_redis *)s;
    if (r->cfg->history_length == 0) {
        fail(call, WSFAN_EHISTORY_UNAVAILABLE);
        return;
    }
    char key[ENVELOPE_CHANNEL_MAX], end[OFFSET_MAX_LEN + 1] = "+", count[16];
    history_key(r, call->room, key);
    if (call->has_before) {
        end[0] = '(';
        offset_format(call->before, end + 1);
    }
    snprintf(count, sizeof count, "%d", call->limit);
    const char *argv[] = {"XREVRANGE", key, end, "-", "COUNT", count};
    call->engine = r;
    if (redis_link_command(&r->link, on_history, call, 6, argv, NULL))
        fail(call, WSFAN_EUNAVAILABLE);
}

static int redis_ready(struct store *s)
{
    return ((struct store_redis *)s)->link.up;
}

static void link_changed(struct redis_link *l)
{
    struct store_redis *r = l->data;
    if (r->base.on_change)
        r->base.on_change(r->base.change_arg);
}

static void on_link_up(struct redis_link *l)
{
    struct store_redis *r = l->data;
    redis_script_load(l, &r->append);
    redis_script_load(l, &r->recover);
    link_changed(l);
}

static void on_link_stopped(struct redis_link *l)
{
    free(l->data);
}

/* The struct lives until the link has answered every pending call. */
static void redis_destroy(struct store *s)
{
    redis_link_stop(&((struct store_redis *)s)->link);
}

struct redis_link *store_redis_link(struct store *s)
{
    return &((struct store_redis *)s)->link;
}

static const struct store_ops redis_ops = {
    .append = redis_append,
    .recover = redis_recover,
    .history = redis_history,
    .latest = redis_latest,
    .destroy = redis_destroy,
    .ready = redis_ready,
};

struct store *store_redis_create(uv_loop_t *loop, const struct config *cfg)
{
    struct store_redis *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->base.ops = &redis_ops;
    r->cfg = cfg;
    const char *url = cfg->store_redis_url[0] ? cfg->store_redis_url : cfg->redis_url;
    r->same_redis = !strcmp(url, cfg->redis_url);
    redis_url_parse(url, &r->link.url);
    r->link.name = "store";
    r->link.min_backoff_ms = (uint64_t)cfg->redis_backoff_min;
    r->link.max_backoff_ms = (uint64_t)cfg->redis_backoff_max;
    r->link.timeout_ms = (uint64_t)cfg->redis_timeout;
    r->link.on_up = on_link_up;
    r->link.on_down = link_changed;
    r->link.on_stopped = on_link_stopped;
    r->link.data = r;
    r->append.source = append_source;
    r->recover.source = recover_source;
    redis_script_init(&r->append);
    redis_script_init(&r->recover);
    if (redis_link_start(&r->link, loop)) {
        free(r);
        return NULL;
    }
    return &r->base;
}
