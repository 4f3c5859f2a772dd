/* store_memory.c - the memory store engine: a ring of the last
 * --history-length events per room, expired after --history-ttl. Offsets
 * are "<ms>-<seq>" like Redis stream ids, so clients see one format. Each
 * room remembers the newest offset it dropped, which is what decides whether
 * a join `since` can be recovered exactly. Bus thread only. */
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/map.h"
#include "store/store.h"

/* One message of history: the same event the workers fan out. */
struct entry {
    uint64_t ts;
    struct event *event;
};

struct room_history {
    struct entry *ring;   /* length slots, allocated on first append */
    uint32_t head, count;
    struct offset last;     /* newest offset given out */
    struct offset trimmed;  /* newest offset dropped; 0-0 when none */
};

struct store_memory {
    struct store base;
    int length;
    uint64_t ttl_ms;
    struct offset origin;
    struct map rooms;  /* room key -> struct room_history */
    uint32_t appends;  /* since the last sweep */
};

#define SWEEP_EVERY 4096 /* appends between sweeps of expired rooms */

static struct entry *entry_at(struct store_memory *m, struct room_history *h, uint32_t i)
{
    return &h->ring[(h->head + i) % (uint32_t)m->length];
}

static void drop_oldest(struct store_memory *m, struct room_history *h)
{
    struct entry *e = entry_at(m, h, 0);
    h->trimmed = e->event->offset;
    event_unref(e->event);
    h->head = (h->head + 1) % (uint32_t)m->length;
    h->count--;
}

static void expire(struct store_memory *m, struct room_history *h, uint64_t now_ms)
{
    while (m->ttl_ms && h->count && entry_at(m, h, 0)->ts + m->ttl_ms <= now_ms)
        drop_oldest(m, h);
}

/* The room's history, created when create is set; NULL otherwise or when
 * out of memory. Expired entries are gone when it returns. */
static struct room_history *room_get(struct store_memory *m, const char *room, int create)
{
    struct room_history *h = map_get(&m->rooms, room, strlen(room));
    if (!h && create) {
        h = calloc(1, sizeof *h);
        if (!h || map_put(&m->rooms, room, strlen(room), h)) {
            free(h);
            return NULL;
        }
        h->trimmed = m->origin;
    }
    if (h)
        expire(m, h, clock_wall_ms());
    return h;
}

/* The offset a client can resume from: the newest given out, or the
 * origin for a room without any. */
static struct offset latest(const struct store_memory *m, const struct room_history *h)
{
    struct offset last = h ? h->last : (struct offset){0, 0};
    return offset_cmp(last, m->origin) > 0 ? last : m->origin;
}

static void room_free(struct store_memory *m, struct room_history *h)
{
    while (h->count)
        drop_oldest(m, h);
    free(h->ring);
    free(h);
}

/* Frees the rooms whose history has all expired, so that memory follows
 * the rooms in use, not every room ever written. A freed room answers like
 * a new one: a `since` from it is not recovered. */
static void sweep(struct store_memory *m)
{
    uint64_t now = clock_wall_ms();
    const struct map_slot *slot;
    for (size_t i = 0; map_next(&m->rooms, &i, &slot);) {
        struct room_history *h = slot->value;
        expire(m, h, now);
        if (h->count == 0) {
            room_free(m, h);
            map_remove(&m->rooms, slot->key, slot->len);
            i--; /* the backward shift may have moved an entry into this slot */
        }
    }
}

static void memory_append(struct store *s, struct store_call *call)
{
    struct store_memory *m = (struct store_memory *)s;
    if (m->ttl_ms && ++m->appends >= SWEEP_EVERY) {
        m->appends = 0;
        sweep(m);
    }
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
        call->error = WSFAN_ENOMEM;
        call->done(call);
        return;
    }
    struct offset id = {call->ts, 0};
    if (offset_cmp(id, h->last) <= 0)
        id = (struct offset){h->last.ms, h->last.seq + 1};
    offset_format(id, call->offset);
    call->event = event_message(call->room, &id, call->from, call->data, call->data_len, call->ts);
    if (!call->event) {
        call->error = WSFAN_ENOMEM;
        call->done(call);
        return;
    }
    if (h->count == (uint32_t)m->length)
        drop_oldest(m, h);
    *entry_at(m, h, h->count) = (struct entry){call->ts, event_ref(call->event)};
    h->count++;
    h->last = id;
    call->done(call);
}

static void memory_latest(struct store *s, struct store_call *call)
{
    struct store_memory *m = (struct store_memory *)s;
    struct room_history *h = room_get(m, call->room, 0);
    offset_format(latest(m, h), call->offset);
    call->done(call);
}

static void memory_recover(struct store *s, struct store_call *call)
{
    struct store_memory *m = (struct store_memory *)s;
    struct room_history *h = room_get(m, call->room, 0);
    struct offset last = latest(m, h);
    struct offset trimmed = h ? h->trimmed : m->origin;
    offset_format(last, call->offset);
    /* Exact only when nothing after `since` was dropped and since is not
     * from a future this store never saw. */
    call->recovered = m->length > 0 && offset_cmp(call->since, trimmed) >= 0 && offset_cmp(call->since, last) <= 0;
    for (uint32_t i = 0; call->recovered && h && i < h->count; i++) {
        struct entry *e = entry_at(m, h, i);
        if (offset_cmp(e->event->offset, call->since) > 0 && store_batch_add(&call->batch, e->event->json, e->event->len, e->event->offset)) {
            store_batch_free(&call->batch);
            call->error = WSFAN_ENOMEM;
            break;
        }
    }
    call->done(call);
}

static void memory_history(struct store *s, struct store_call *call)
{
    struct store_memory *m = (struct store_memory *)s;
    if (m->length == 0) {
        call->error = WSFAN_EHISTORY_UNAVAILABLE;
        call->done(call);
        return;
    }
    struct room_history *h = room_get(m, call->room, 0);
    uint32_t end = h ? h->count : 0;
    while (end > 0 && call->has_before && offset_cmp(entry_at(m, h, end - 1)->event->offset, call->before) >= 0)
        end--;
    uint32_t start = end > (uint32_t)call->limit ? end - (uint32_t)call->limit : 0;
    for (uint32_t i = start; i < end; i++) {
        struct entry *e = entry_at(m, h, i);
        if (store_batch_add(&call->batch, e->event->json, e->event->len, e->event->offset)) {
            store_batch_free(&call->batch);
            call->error = WSFAN_ENOMEM;
            break;
        }
    }
    call->done(call);
}

static void memory_destroy(struct store *s)
{
    struct store_memory *m = (struct store_memory *)s;
    const struct map_slot *slot;
    for (size_t i = 0; map_next(&m->rooms, &i, &slot);)
        room_free(m, slot->value);
    map_free(&m->rooms);
    free(m);
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

struct store *store_memory_create(int length, int ttl_s, struct offset origin)
{
    struct store_memory *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->base.ops = &memory_ops;
    m->length = length;
    m->ttl_ms = (uint64_t)ttl_s * 1000;
    m->origin = origin;
    map_init(&m->rooms);
    return &m->base;
}
