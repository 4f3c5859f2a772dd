/* store_memory.c - the memory store engine: a ring of the last
 * --history-length events per room, expired after --history-ttl, all rooms
 * within --history-memory bytes (the least recently used rooms lose their
 * history first), and the publish keys of --idempotency-window. Offsets are
 * "<ms>-<seq>" like Redis stream ids, so clients see one format. Each room
 * remembers the newest offset it dropped, which is what decides whether a
 * join `since` can be recovered exactly. A timer on the bus loop sweeps a
 * slice of rooms per tick, so expiry does not wait for a room to be used
 * again, and frees the rooms left with nothing. Bus thread only. */
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "core/map.h"
#include "store/store.h"

#define SWEEP_MS 100      /* between sweep ticks */
#define SWEEP_SLICE 1024  /* rooms a tick looks at: the most one tick costs */
#define FLOOR_SLOTS 4096  /* a power of two */

/* A node of an intrusive circular list; the list's head is a node too. */
struct link {
    struct link *prev, *next;
};

static void link_init(struct link *l)
{
    l->prev = l->next = l;
}

static int linked(const struct link *l)
{
    return l->next != l;
}

static void link_remove(struct link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    link_init(l);
}

/* Puts l first in the list of head. */
static void link_push(struct link *head, struct link *l)
{
    l->prev = head;
    l->next = head->next;
    head->next->prev = l;
    head->next = l;
}

/* One message of history: the same event the workers fan out. */
struct entry {
    uint64_t ts;
    struct event *event;
};

/* A publish key, remembered for --idempotency-window. */
struct key_use {
    struct key_use *newer;
    const char *key;  /* the room's map's copy */
    size_t len;
    uint64_t ts;
    struct offset offset;  /* the first publish's */
};

struct room_history {
    struct link all;      /* every room, in the order they were created */
    struct link lru;      /* linked while the room keeps events */
    const char *key;      /* the rooms map's copy */
    size_t key_len;
    struct entry *ring;   /* length slots, allocated on first append */
    uint32_t head, count;
    struct offset last;     /* newest offset given out */
    struct offset trimmed;  /* newest offset dropped */
    struct map keys;        /* publish key -> struct key_use */
    struct key_use *keys_oldest, *keys_newest;
};

struct store_memory {
    struct store base;
    int length;
    uint64_t ttl_ms, window_ms;
    size_t budget;  /* --history-memory, 0 for none */
    uint32_t max_replay;
    struct map rooms;   /* room key -> struct room_history */
    struct link all;    /* the rooms, newest first */
    struct link *next_swept;  /* in all; all itself to start a round */
    struct link lru;    /* the rooms with events, most recently used first */
    size_t bytes;       /* of the events kept */
    uint64_t evicted;   /* rooms whose history --history-memory dropped */
    struct log_limit evict_log;
    uv_timer_t sweep;
    /* The newest offset of the freed rooms, per slot of their key's hash
     * (the origin until one is freed). A room without state answers from
     * its slot: nothing it had is newer, so a `since` from before the
     * freeing is not recovered, while the memory stays fixed. */
    struct offset floors[FLOOR_SLOTS];
};

static struct room_history *room_of_all(struct link *l)
{
    return (struct room_history *)((char *)l - offsetof(struct room_history, all));
}

static struct room_history *room_of_lru(struct link *l)
{
    return (struct room_history *)((char *)l - offsetof(struct room_history, lru));
}

static struct offset *floor_of(struct store_memory *m, const char *room, size_t len)
{
    return &m->floors[map_hash(room, len) & (FLOOR_SLOTS - 1)];
}

/* What an event costs the budget: its whole block. */
static size_t event_bytes(const struct event *ev)
{
    return sizeof *ev + ev->len + 1 + ev->key_len + 1;
}

static struct entry *entry_at(struct store_memory *m, struct room_history *h, uint32_t i)
{
    return &h->ring[(h->head + i) % (uint32_t)m->length];
}

static void drop_oldest(struct store_memory *m, struct room_history *h)
{
    struct entry *e = entry_at(m, h, 0);
    h->trimmed = e->event->offset;
    m->bytes -= event_bytes(e->event);
    event_unref(e->event);
    h->head = (h->head + 1) % (uint32_t)m->length;
    if (--h->count == 0)
        link_remove(&h->lru);
}

/* Keeps ev (the caller's reference) as the room's newest event. */
static void push(struct store_memory *m, struct room_history *h, struct event *ev, uint64_t ts)
{
    if (h->count == (uint32_t)m->length)
        drop_oldest(m, h);
    *entry_at(m, h, h->count) = (struct entry){ts, ev};
    if (h->count++ == 0)
        link_push(&m->lru, &h->lru);
    m->bytes += event_bytes(ev);
}

static void clear(struct store_memory *m, struct room_history *h)
{
    while (h->count)
        drop_oldest(m, h);
}

static void expire(struct store_memory *m, struct room_history *h, uint64_t now_ms)
{
    while (m->ttl_ms && h->count && entry_at(m, h, 0)->ts + m->ttl_ms <= now_ms)
        drop_oldest(m, h);
}

static void forget_oldest_key(struct room_history *h)
{
    struct key_use *k = h->keys_oldest;
    if (!(h->keys_oldest = k->newer))
        h->keys_newest = NULL;
    map_remove(&h->keys, k->key, k->len);
    free(k);
}

/* Keys are remembered in the order of their ts, so the expired ones are
 * the oldest. A room without keys gives its table back. */
static void expire_keys(struct store_memory *m, struct room_history *h, uint64_t now_ms)
{
    while (h->keys_oldest && h->keys_oldest->ts + m->window_ms <= now_ms)
        forget_oldest_key(h);
    if (!h->keys_oldest)
        map_free(&h->keys);
}

/* The room's history, created when create is set; NULL otherwise or when
 * out of memory. Expired entries are gone when it returns, and the room
 * counts as the most recently used. */
static struct room_history *room_get(struct store_memory *m, const char *room, int create)
{
    size_t len = strlen(room);
    struct room_history *h = map_get(&m->rooms, room, len);
    if (!h && create) {
        h = calloc(1, sizeof *h);
        if (!h || map_put(&m->rooms, room, len, h)) {
            free(h);
            return NULL;
        }
        h->key = map_key(&m->rooms, room, len);
        h->key_len = len;
        h->last = h->trimmed = *floor_of(m, room, len);
        map_init(&h->keys);
        link_init(&h->lru);
        link_push(&m->all, &h->all);
    }
    if (!h)
        return NULL;
    expire(m, h, clock_wall_ms());
    if (linked(&h->lru)) {
        link_remove(&h->lru);
        link_push(&m->lru, &h->lru);
    }
    return h;
}

static void room_free(struct store_memory *m, struct room_history *h)
{
    struct offset *floor = floor_of(m, h->key, h->key_len);
    if (offset_cmp(h->last, *floor) > 0)
        *floor = h->last;
    clear(m, h);
    while (h->keys_oldest)
        forget_oldest_key(h);
    map_free(&h->keys);
    if (m->next_swept == &h->all)
        m->next_swept = h->all.next;
    link_remove(&h->all);
    map_remove(&m->rooms, h->key, h->key_len);
    free(h->ring);
    free(h);
}

/* Looks at the next slice of rooms: drops what has expired and frees the
 * rooms left with neither events nor keys. New rooms go in behind the
 * round, so a round ends within (rooms / SWEEP_SLICE) ticks. */
static void on_sweep(uv_timer_t *t)
{
    struct store_memory *m = t->data;
    uint64_t now = clock_wall_ms();
    size_t todo = m->rooms.count < SWEEP_SLICE ? m->rooms.count : SWEEP_SLICE;
    for (size_t i = 0; i < todo && linked(&m->all); i++) {
        if (m->next_swept == &m->all)
            m->next_swept = m->all.next;
        struct room_history *h = room_of_all(m->next_swept);
        m->next_swept = h->all.next;
        expire(m, h, now);
        expire_keys(m, h, now);
        if (!h->count && !h->keys_oldest)
            room_free(m, h);
    }
}

/* Drops the whole history of the least recently used rooms until need
 * more bytes fit in --history-memory. */
static void make_room(struct store_memory *m, size_t need)
{
    uint32_t rooms = 0, messages = 0, suppressed;
    while (m->bytes + need > m->budget && linked(&m->lru)) {
        struct room_history *h = room_of_lru(m->lru.prev);
        messages += h->count;
        rooms++;
        clear(m, h);
    }
    m->evicted += rooms;
    if (rooms && log_limit_allow(&m->evict_log, clock_wall_ms(), &suppressed))
        log_info("store: --history-memory reached: dropped the history of %u least recently used rooms, %u "
                 "messages (%llu rooms in all, %u lines not logged)",
                 rooms, messages, (unsigned long long)m->evicted, suppressed);
}

/* Keeps the room's new event within --history-memory. An event larger
 * than the whole budget is not kept, and the room's history ends before
 * it, so that a recovery never skips it. */
static void keep(struct store_memory *m, struct room_history *h, struct event *ev, uint64_t ts)
{
    size_t need = event_bytes(ev);
    if (m->budget && need > m->budget) {
        clear(m, h);
        h->trimmed = ev->offset;
        return;
    }
    if (m->budget)
        make_room(m, need);
    push(m, h, event_ref(ev), ts);
}

static void answer_error(struct store_call *call, int error)
{
    call->error = error;
    call->done(call);
}

/* The key's earlier use in the room within the window, or NULL. */
static struct key_use *key_used(struct store_memory *m, struct room_history *h, const struct store_call *call)
{
    expire_keys(m, h, call->ts);
    return map_get(&h->keys, call->key, call->key_len);
}

/* Remembers the call's key for the publish at offset, newest last. */
static void key_remember(struct room_history *h, struct key_use *k, const struct store_call *call, struct offset offset)
{
    *k = (struct key_use){
        .key = map_key(&h->keys, call->key, call->key_len),
        .len = call->key_len,
        .ts = call->ts,
        .offset = offset,
    };
    if (h->keys_newest)
        h->keys_newest->newer = k;
    else
        h->keys_oldest = k;
    h->keys_newest = k;
}

static void memory_append(struct store *s, struct store_call *call)
{
    struct store_memory *m = (struct store_memory *)s;
    if (m->length == 0) {
        /* History is off: the message is delivered without an offset. */
        call->offset[0] = '\0';
        call->event = event_message(call->room, NULL, call->from, call->data, call->data_len, call->ts);
        if (!call->event)
            call->error = WSFAN_ENOMEM;
        call->done(call);
        return;
    }
    struct room_history *h = room_get(m, call->room, 1);
    if (!h || (!h->ring && !(h->ring = calloc((size_t)m->length, sizeof *h->ring)))) {
        answer_error(call, WSFAN_ENOMEM);
        return;
    }
    struct key_use *k = NULL;
    if (call->key && m->window_ms) {
        if ((k = key_used(m, h, call))) {
            offset_format(k->offset, call->offset);
            call->duplicate = 1;
            call->done(call);
            return;
        }
        /* In the map before the event exists: out of memory, nothing is
         * stored, rather than a message without its key. */
        if (!(k = malloc(sizeof *k)) || map_put(&h->keys, call->key, call->key_len, k)) {
            free(k);
            answer_error(call, WSFAN_ENOMEM);
            return;
        }
    }
    struct offset id = {call->ts, 0};
    if (offset_cmp(id, h->last) <= 0)
        id = (struct offset){h->last.ms, h->last.seq + 1};
    call->event = event_message(call->room, &id, call->from, call->data, call->data_len, call->ts);
    if (!call->event) {
        if (k)
            free(map_remove(&h->keys, call->key, call->key_len));
        answer_error(call, WSFAN_ENOMEM);
        return;
    }
    offset_format(id, call->offset);
    h->last = id;
    keep(m, h, call->event, call->ts);
    if (k)
        key_remember(h, k, call, id);
    call->done(call);
}

/* The offsets a room's state starts from and ends at: its own, or its
 * floor slot's when it has none. */
static void bounds(struct store_memory *m, const struct room_history *h, const char *room, struct offset *trimmed,
                   struct offset *last)
{
    if (h) {
        *trimmed = h->trimmed;
        *last = h->last;
    } else {
        *trimmed = *last = *floor_of(m, room, strlen(room));
    }
}

static void memory_latest(struct store *s, struct store_call *call)
{
    struct store_memory *m = (struct store_memory *)s;
    struct offset trimmed, last;
    bounds(m, room_get(m, call->room, 0), call->room, &trimmed, &last);
    offset_format(last, call->offset);
    call->done(call);
}

/* How many of the room's events come before o (or at it, when inclusive);
 * events are in offset order. */
static uint32_t count_before(struct store_memory *m, struct room_history *h, struct offset o, int inclusive)
{
    uint32_t lo = 0, hi = h->count;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int c = offset_cmp(entry_at(m, h, mid)->event->offset, o);
        if (c < 0 || (inclusive && c == 0))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Adds the room's events from index start to end to the call's batch. */
static void add_events(struct store_memory *m, struct room_history *h, uint32_t start, uint32_t end,
                       struct store_call *call)
{
    for (uint32_t i = start; i < end; i++) {
        struct entry *e = entry_at(m, h, i);
        if (store_batch_add(&call->batch, e->event->json, e->event->len, e->event->offset)) {
            store_batch_free(&call->batch);
            call->error = WSFAN_ENOMEM;
            return;
        }
    }
}

static void memory_recover(struct store *s, struct store_call *call)
{
    struct store_memory *m = (struct store_memory *)s;
    struct room_history *h = room_get(m, call->room, 0);
    struct offset trimmed, last;
    bounds(m, h, call->room, &trimmed, &last);
    offset_format(last, call->offset);
    uint32_t start = h ? count_before(m, h, call->since, 1) : 0, end = h ? h->count : 0;
    /* Exact only when nothing after `since` was dropped and since is not
     * from a future this store never saw; and short enough to replay. */
    call->recovered = m->length > 0 && offset_cmp(call->since, trimmed) >= 0 && offset_cmp(call->since, last) <= 0 &&
                      end - start <= m->max_replay;
    if (call->recovered)
        add_events(m, h, start, end, call);
    call->done(call);
}

static void memory_history(struct store *s, struct store_call *call)
{
    struct store_memory *m = (struct store_memory *)s;
    if (m->length == 0) {
        answer_error(call, WSFAN_EHISTORY_UNAVAILABLE);
        return;
    }
    struct room_history *h = room_get(m, call->room, 0);
    if (h) {
        uint32_t end = call->has_before ? count_before(m, h, call->before, 0) : h->count;
        add_events(m, h, end > (uint32_t)call->limit ? end - (uint32_t)call->limit : 0, end, call);
    }
    call->done(call);
}

static void on_closed(uv_handle_t *handle)
{
    free(handle->data);
}

static void memory_destroy(struct store *s)
{
    struct store_memory *m = (struct store_memory *)s;
    while (linked(&m->all))
        room_free(m, room_of_all(m->all.next));
    map_free(&m->rooms);
    uv_close((uv_handle_t *)&m->sweep, on_closed);
}

static int memory_ready(struct store *s)
{
    (void)s;
    return 1;
}

static const struct store_ops memory_ops = {
    .append = memory_append,
    .recover = memory_recover,
    .history = memory_history,
    .latest = memory_latest,
    .destroy = memory_destroy,
    .ready = memory_ready,
};

struct store *store_memory_create(struct uv_loop_s *loop, const struct config *cfg, struct offset origin)
{
    struct store_memory *m = calloc(1, sizeof *m);
    if (!m || uv_timer_init(loop, &m->sweep)) {
        free(m);
        return NULL;
    }
    m->base.ops = &memory_ops;
    m->length = cfg->history_length;
    m->ttl_ms = (uint64_t)cfg->history_ttl * 1000;
    m->window_ms = (uint64_t)cfg->idempotency_window * 1000;
    m->budget = cfg->history_memory;
    m->max_replay = (uint32_t)cfg->max_replay;
    map_init(&m->rooms);
    link_init(&m->all);
    link_init(&m->lru);
    m->next_swept = &m->all;
    for (size_t i = 0; i < FLOOR_SLOTS; i++)
        m->floors[i] = origin;
    m->sweep.data = m;
    /* Without an age, a budget or keys, nothing ever leaves a room. */
    if (m->length && (m->ttl_ms || m->window_ms || m->budget))
        uv_timer_start(&m->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    return &m->base;
}
