/* store_redis.c - the Redis Streams engine of the store: a room's history
 * is the stream NS:history:{ROOM} (in a tenant's namespace for a room key
 * of a tenant), its entry ids are the offsets. A
 * persisted message is appended (and, on the bus's own Redis, published) by
 * one script, so history order is delivery order; recovery reads the
 * stream in one script so that "latest", "recovered" and the missed
 * entries agree. Runs on the bus thread over its own connection. */
#include <jansson.h>
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
 * head, envelope tail, the publishing command (PUBLISH, or SPUBLISH on a
 * cluster; "": none), key window in seconds, age limit in ms
 * or "", the seal's pads ipad and opad. The envelope published is sealed
 * as codec/envelope.h says, of the channel, a newline and the text with
 * the mac's value left empty. Returns {offset, 1} for a key already used (nothing is stored or
 * published), else {new offset, 0}. The length trim is exact, so that
 * history never holds more entries than it should; the age trim is
 * approximate (whole internal nodes, much cheaper), and reads leave out or
 * trim exactly what is past the age limit. With an age limit the stream expires once its
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
    "  redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[2])\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[10])\n"
    "end\n"
    "if KEYS[3] then redis.call('SET', KEYS[3], id, 'EX', ARGV[9]) end\n"
    "if ARGV[8] ~= '' then\n"
    "  local before, after = ARGV[6] .. id .. '\",\"mac\":\"', '\"' .. ARGV[7]\n"
    "  local inner = redis.sha1hex(ARGV[11] .. KEYS[2] .. '\\n' .. before .. after)\n"
    "  redis.call(ARGV[8], KEYS[2], before .. redis.sha1hex(ARGV[12] .. inner) .. after)\n"
    "end\n"
    "return {id, 0}\n";

/* Compares two stream ids a and b: -1, 0 or 1. */
#define LUA_CMP                                                                 \
    "local function cmp(a, b)\n"                                                \
    "  local am, as = string.match(a, '^(%d+)-(%d+)$')\n"                       \
    "  local bm, bs = string.match(b, '^(%d+)-(%d+)$')\n"                       \
    "  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)\n" \
    "  if am ~= bm then return am < bm and -1 or 1 end\n"                       \
    "  if as ~= bs then return as < bs and -1 or 1 end\n"                       \
    "  return 0\n"                                                              \
    "end\n"

/* KEYS: stream. ARGV: since ("" for the latest only), min id of the age
 * limit or "", the age limit in ms or "", slice. Returns {latest,
 * recovered, the first slice of entries after since}. Entries past the age
 * limit are trimmed first, exactly, so that they count as trimmed.
 * Recovered when since is not past the latest and nothing after it was
 * trimmed: the stream's first entry is not newer than since, or nothing was
 * ever trimmed. A stream that expired (an idle room past the age limit) and
 * was created again looks untrimmed, but every entry of its earlier life is
 * older than the age limit before its first entry: a since before that
 * cannot be recovered. */
static const char recover_source[] =
    LUA_CMP
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
    "if first == false then first = nil end\n"
    "local whole = f['entries-added'] == f['length']\n"
    "if whole and first and ARGV[3] ~= '' and since ~= '0-0' and\n"
    "   tonumber(string.match(since, '^%d+')) + tonumber(ARGV[3]) < tonumber(string.match(first[1], '^%d+')) then\n"
    "  whole = false\n"
    "end\n"
    "if not whole and (first == nil or cmp(first[1], since) > 0) then\n"
    "  return {latest, 0, {}}\n"
    "end\n"
    "return {latest, 1, redis.call('XRANGE', KEYS[1], '(' .. since, latest, 'COUNT', ARGV[4])}\n";

/* The next slice of a replay. KEYS: stream. ARGV: the last id read, the
 * latest id of the replay, slice. Returns the entries after the last id
 * read, or false when trimming has since reached past it (the replay can
 * no longer be whole). */
static const char replay_slice_source[] =
    LUA_CMP
    "local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]\n"
    "if first == nil or cmp(first[1], ARGV[1]) > 0 then return false end\n"
    "return redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], ARGV[2], 'COUNT', ARGV[3])\n";

struct store_redis {
    struct store base;
    const struct config *cfg;
    struct redis_link link;
    struct redis_script append, recover, replay_slice;
    struct log_limit bad_entry_log;
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

/* The message event of a stream entry [id, [field, value, ...]], or NULL
 * when it is not a message: anything can XADD to a room's stream, so an
 * entry is checked like a published payload (a valid sender or none, a
 * decimal ts, data that is JSON) and its event rebuilt, never pasted.
 * *offset is the entry's id whenever it has one. */
static struct event *entry_event(const char *room, const redisReply *entry, struct offset *offset, uint64_t *ts)
{
    if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 || entry->element[0]->type != REDIS_REPLY_STRING ||
        offset_parse(entry->element[0]->str, offset) || entry->element[1]->type != REDIS_REPLY_ARRAY)
        return NULL;
    const redisReply *fields = entry->element[1];
    const redisReply *from = NULL, *t = NULL, *d = NULL;
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *k = fields->element[i], *v = fields->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            return NULL;
        const redisReply **slot = !strcmp(k->str, "f") ? &from : !strcmp(k->str, "t") ? &t : !strcmp(k->str, "d") ? &d : NULL;
        if (slot && *slot)
            return NULL;  /* a field twice */
        if (slot)
            *slot = v;
    }
    char *end;
    if (!d || !t || !t->len || t->str[0] < '0' || t->str[0] > '9' || (*ts = strtoull(t->str, &end, 10), *end) ||
        (from && from->len && !name_valid(from->str, from->len)))
        return NULL;
    json_t *data = json_loadb(d->str, d->len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
    char *text = data ? json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(data);
    struct event *ev = text ? event_message(room, offset, from && from->len ? from->str : NULL, text, strlen(text), *ts)
                            : NULL;
    free(text);
    return ev;
}

/* Says now and then that a stream entry was left out: it is not a message. */
static void entry_refused(struct store_redis *r, const char *room, const struct offset *id)
{
    uint32_t suppressed;
    char text[OFFSET_MAX_LEN];
    offset_format(*id, text);
    if (log_limit_allow(&r->bad_entry_log, clock_wall_ms(), &suppressed))
        log_warn("redis store: room %s: history entry %s is not a message; left out (%u more not logged)", room,
                 text, suppressed);
}

static void on_appended(struct redis_link *link, void *reply, void *privdata)
{
    (void)link;
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
                          call->envelope->head, call->envelope->tail, !call->published ? "" : r->link.url.nnodes ? "SPUBLISH" : "PUBLISH", window, ttl,
                          (const char *)call->seal->ipad, (const char *)call->seal->opad};
    size_t lens[15];
    for (int i = 0; i < 15; i++)
        lens[i] = i == 7 ? call->data_len : i == 2 ? idem_len : i >= 13 ? sizeof call->seal->ipad : strlen(args[i]);
    /* Without a key, KEYS[3] is left out: the args shift by one. */
    int nkeys = keyed ? 3 : 2;
    if (!keyed) {
        memmove(&args[2], &args[3], sizeof args[0] * 12);
        memmove(&lens[2], &lens[3], sizeof lens[0] * 12);
    }
    if (redis_script_call(&r->link, &r->append, nkeys, 12 + nkeys, args, lens, on_appended, call))
        fail(call, WSFAN_EUNAVAILABLE);
}

/* A replay or a history page, read SLICE entries at a time: no single
 * command holds Redis or the bus thread for long, and the slices of
 * concurrent reads take turns on the connection. */
#define SLICE 100

struct sliced_read {
    struct store_redis *r;
    struct store_call *call;
    char key[ENVELOPE_CHANNEL_MAX];
    char latest[OFFSET_MAX_LEN];  /* replay: where it ends */
    struct offset last;           /* the last entry read */
    size_t read;                  /* entries read so far */
    size_t asked;                 /* entries the slice on its way asked for */
    struct event **page;          /* history: the page, newest first */
    size_t npage;
    uint64_t now;                 /* history: entries past the age limit end the page */
};

static void read_finish(struct sliced_read *sr, int error)
{
    struct store_call *call = sr->call;
    for (size_t i = sr->npage; i-- > 0;) {
        if (!error && store_batch_add(&call->batch, sr->page[i]->json, sr->page[i]->len, sr->page[i]->offset))
            error = WSFAN_ENOMEM;
        event_unref(sr->page[i]);
    }
    free(sr->page);
    free(sr);
    if (error)
        store_batch_free(&call->batch);
    call->error = error;
    call->done(call);
}

/* Adds the entries of one slice (an array reply): to the replay's batch,
 * or to the page. Returns -1 when out of memory, 1 when a history page
 * met an entry past the age limit (so are all older ones), else 0. */
static int read_entries(struct sliced_read *sr, const redisReply *entries)
{
    struct store_call *call = sr->call;
    for (size_t i = 0; i < entries->elements; i++) {
        uint64_t ts = 0;
        struct offset id = {0, 0};
        struct event *ev = entry_event(call->room, entries->element[i], &id, &ts);
        sr->read++;
        sr->last = id;
        if (!ev) {
            entry_refused(sr->r, call->room, &id);
            continue;
        }
        if (sr->now && ttl_ms(sr->r) && ts + ttl_ms(sr->r) <= sr->now) {
            event_unref(ev);
            return 1;
        }
        int rc;
        if (sr->page) {
            sr->page[sr->npage++] = ev;
            rc = 0;
        } else {
            rc = store_batch_add(&call->batch, ev->json, ev->len, id);
            event_unref(ev);
        }
        if (rc)
            return -1;
    }
    return 0;
}

static void on_replay_slice(struct redis_link *link, void *reply, void *privdata);

/* After a slice of a replay: the next one, or the end. More than
 * --max-replay entries after since are not replayed: recovered:false. */
static void replay_next(struct sliced_read *sr, size_t slice_len)
{
    struct store_call *call = sr->call;
    size_t max = (size_t)sr->r->cfg->max_replay;
    if (sr->read > max) {
        call->recovered = 0;
        store_batch_free(&call->batch);
        read_finish(sr, 0);
        return;
    }
    char last[OFFSET_MAX_LEN];
    offset_format(sr->last, last);
    if (slice_len < SLICE || !strcmp(last, sr->latest)) {
        read_finish(sr, 0);
        return;
    }
    char count[16];
    snprintf(count, sizeof count, "%zu", max + 1 - sr->read < SLICE ? max + 1 - sr->read : (size_t)SLICE);
    const char *args[] = {sr->key, last, sr->latest, count};
    size_t lens[] = {strlen(sr->key), strlen(last), strlen(sr->latest), strlen(count)};
    if (redis_script_call(&sr->r->link, &sr->r->replay_slice, 1, 4, args, lens, on_replay_slice, sr))
        read_finish(sr, WSFAN_EUNAVAILABLE);
}

static void on_replay_slice(struct redis_link *link, void *reply, void *privdata)
{
    (void)link;
    struct sliced_read *sr = privdata;
    redisReply *rep = reply;
    if (rep && rep->type == REDIS_REPLY_NIL) {
        /* Trimmed past what was read: the replay cannot be whole. */
        sr->call->recovered = 0;
        store_batch_free(&sr->call->batch);
        read_finish(sr, 0);
        return;
    }
    if (!rep || rep->type != REDIS_REPLY_ARRAY || read_entries(sr, rep) < 0) {
        read_finish(sr, rep && rep->type == REDIS_REPLY_ARRAY ? WSFAN_ENOMEM : WSFAN_EUNAVAILABLE);
        return;
    }
    replay_next(sr, rep->elements);
}

static void on_recovered(struct redis_link *link, void *reply, void *privdata)
{
    (void)link;
    struct sliced_read *sr = privdata;
    struct store_call *call = sr->call;
    redisReply *rep = reply;
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 || rep->element[0]->type != REDIS_REPLY_STRING ||
        rep->element[0]->len >= OFFSET_MAX_LEN || rep->element[2]->type != REDIS_REPLY_ARRAY) {
        if (rep && rep->type == REDIS_REPLY_ERROR)
            log_error("redis store: recover: %s", rep->str);
        read_finish(sr, WSFAN_EUNAVAILABLE);
        return;
    }
    memcpy(call->offset, rep->element[0]->str, rep->element[0]->len + 1);
    memcpy(sr->latest, call->offset, sizeof sr->latest);
    call->recovered = rep->element[1]->type == REDIS_REPLY_INTEGER && rep->element[1]->integer == 1;
    if (read_entries(sr, rep->element[2]) < 0) {
        read_finish(sr, WSFAN_ENOMEM);
        return;
    }
    replay_next(sr, rep->element[2]->elements);
}

static struct sliced_read *read_start(struct store_redis *r, struct store_call *call)
{
    struct sliced_read *sr = calloc(1, sizeof *sr);
    if (!sr) {
        fail(call, WSFAN_ENOMEM);
        return NULL;
    }
    sr->r = r;
    sr->call = call;
    history_key(r, call->room, sr->key);
    return sr;
}

static void recover_or_latest(struct store_redis *r, struct store_call *call, const char *since)
{
    struct sliced_read *sr = read_start(r, call);
    if (!sr)
        return;
    char minid[48] = "", ttl[24] = "", count[16];
    if (ttl_ms(r)) {
        snprintf(minid, sizeof minid, "%llu-0", (unsigned long long)(clock_wall_ms() - ttl_ms(r)));
        snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)ttl_ms(r));
    }
    size_t first = (size_t)r->cfg->max_replay + 1 < SLICE ? (size_t)r->cfg->max_replay + 1 : SLICE;
    snprintf(count, sizeof count, "%zu", first);
    const char *args[] = {sr->key, since, minid, ttl, count};
    size_t lens[5];
    for (int i = 0; i < 5; i++)
        lens[i] = strlen(args[i]);
    if (redis_script_call(&r->link, &r->recover, 1, 5, args, lens, on_recovered, sr))
        read_finish(sr, WSFAN_EUNAVAILABLE);
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

static void history_slice(struct sliced_read *sr, const char *end);

static void on_history_slice(struct redis_link *link, void *reply, void *privdata)
{
    (void)link;
    struct sliced_read *sr = privdata;
    redisReply *rep = reply;
    size_t before = sr->read;
    int rc = rep && rep->type == REDIS_REPLY_ARRAY ? read_entries(sr, rep) : -2;
    if (rc < 0) {
        read_finish(sr, rc == -1 ? WSFAN_ENOMEM : WSFAN_EUNAVAILABLE);
        return;
    }
    if (rc == 1 || sr->read - before < sr->asked || sr->npage >= (size_t)sr->call->limit) {
        read_finish(sr, 0);
        return;
    }
    char end[OFFSET_MAX_LEN + 1] = "(";
    offset_format(sr->last, end + 1);
    history_slice(sr, end);
}

/* XREVRANGE from end, newest first, as much of the page as one slice takes. */
static void history_slice(struct sliced_read *sr, const char *end)
{
    size_t left = (size_t)sr->call->limit - sr->npage;
    char count[16];
    sr->asked = left < SLICE ? left : SLICE;
    snprintf(count, sizeof count, "%zu", sr->asked);
    const char *argv[] = {"XREVRANGE", sr->key, end, "-", "COUNT", count};
    if (redis_link_command(&sr->r->link, on_history_slice, sr, 6, argv, NULL))
        read_finish(sr, WSFAN_EUNAVAILABLE);
}

static void redis_history(struct store *s, struct store_call *call)
{
    struct store_redis *r = (struct store_redis *)s;
    if (r->cfg->history_length == 0) {
        fail(call, WSFAN_EHISTORY_UNAVAILABLE);
        return;
    }
    struct sliced_read *sr = read_start(r, call);
    if (!sr)
        return;
    if (!(sr->page = malloc(sizeof *sr->page * (size_t)call->limit))) {
        read_finish(sr, WSFAN_ENOMEM);
        return;
    }
    sr->now = clock_wall_ms();
    char end[OFFSET_MAX_LEN + 1] = "+";
    if (call->has_before) {
        end[0] = '(';
        offset_format(call->before, end + 1);
    }
    history_slice(sr, end);
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
    redis_script_load(l, &r->replay_slice);
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
    r->base.ordered = r->same_redis;
    redis_link_configure(&r->link, url, "store", cfg);
    r->link.on_up = on_link_up;
    r->link.on_down = link_changed;
    r->link.on_stopped = on_link_stopped;
    r->link.data = r;
    r->append.source = append_source;
    r->recover.source = recover_source;
    r->replay_slice.source = replay_slice_source;
    redis_script_init(&r->append);
    redis_script_init(&r->recover);
    redis_script_init(&r->replay_slice);
    if (redis_link_start(&r->link, loop)) {
        free(r);
        return NULL;
    }
    return &r->base;
}
