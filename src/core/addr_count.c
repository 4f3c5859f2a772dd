/* addr_count.c - a map of address -> count in each of STRIPES locked
 * stripes. See addr_count.h. */
#include "core/addr_count.h"

#include <stdint.h>
#include <stdlib.h>
#include <uv.h>

#include "core/map.h"

#define STRIPES 16

struct stripe {
    uv_mutex_t lock;
    struct map counts;   /* 16-byte key -> (uintptr_t) count, never 0 */
};

struct addr_count {
    struct stripe stripes[STRIPES];
};

struct addr_count *addr_count_create(void)
{
    struct addr_count *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    for (int i = 0; i < STRIPES; i++) {
        if (uv_mutex_init(&t->stripes[i].lock)) {
            while (i--)
                uv_mutex_destroy(&t->stripes[i].lock);
            free(t);
            return NULL;
        }
        map_init(&t->stripes[i].counts);
    }
    return t;
}

void addr_count_destroy(struct addr_count *t)
{
    if (!t)
        return;
    for (int i = 0; i < STRIPES; i++) {
        map_free(&t->stripes[i].counts);
        uv_mutex_destroy(&t->stripes[i].lock);
    }
    free(t);
}

/* The key a is counted under, and its stripe. */
static struct stripe *key_of(struct addr_count *t, const struct net_addr *a, struct net_addr *key)
{
    *key = *a;
    if (!net_addr_is_v4(a))
        for (int i = 8; i < 16; i++)
            key->b[i] = 0;
    uint64_t h = map_hash((const char *)key->b, sizeof key->b);
    return &t->stripes[h % STRIPES];
}

int addr_count_take(struct addr_count *t, const struct net_addr *a, int limit)
{
    struct net_addr key;
    struct stripe *s = key_of(t, a, &key);
    int r = 0;
    uv_mutex_lock(&s->lock);
    uintptr_t n = (uintptr_t)map_get(&s->counts, (const char *)key.b, sizeof key.b);
    if (limit > 0 && n >= (uintptr_t)limit)
        r = -1;
    else if (map_put(&s->counts, (const char *)key.b, sizeof key.b, (void *)(n + 1)))
        r = -1;
    uv_mutex_unlock(&s->lock);
    return r;
}

void addr_count_give(struct addr_count *t, const struct net_addr *a)
{
    struct net_addr key;
    struct stripe *s = key_of(t, a, &key);
    uv_mutex_lock(&s->lock);
    uintptr_t n = (uintptr_t)map_get(&s->counts, (const char *)key.b, sizeof key.b);
    if (n > 1)
        map_put(&s->counts, (const char *)key.b, sizeof key.b, (void *)(n - 1)); /* the key exists: no allocation */
    else if (n == 1)
        map_remove(&s->counts, (const char *)key.b, sizeof key.b);
    uv_mutex_unlock(&s->lock);
}

int addr_count_get(struct addr_count *t, const struct net_addr *a)
{
    struct net_addr key;
    struct stripe *s = key_of(t, a, &key);
    uv_mutex_lock(&s->lock);
    uintptr_t n = (uintptr_t)map_get(&s->counts, (const char *)key.b, sizeof key.b);
    uv_mutex_unlock(&s->lock);
    return (int)n;
}
