/* map.c - open-addressing string map with backward-shift deletion, keyed
 * SipHash-1-3 over the process's hash key. */
#include "core/map.h"

#include <stdlib.h>
#include <string.h>

#include "core/siphash.h"

/* Written once at start (map_hash_key_set), read-only afterwards. */
static uint8_t hash_key[SIPHASH_KEY_LEN];

void map_hash_key_set(const uint8_t key[16])
{
    memcpy(hash_key, key, sizeof hash_key);
}

uint64_t map_hash(const char *key, size_t len)
{
    return siphash13(hash_key, key, len);
}

static inline uint32_t hash_bytes(const char *s, size_t len)
{
    return (uint32_t)siphash13(hash_key, s, len);
}

void map_init(struct map *m)
{
    m->slots = NULL;
    m->cap = m->count = 0;
}

void map_free(struct map *m)
{
    for (size_t i = 0; i < m->cap; i++)
        if (!m->slots[i].key_in_value)
            free(m->slots[i].key);
    free(m->slots);
    map_init(m);
}

static struct map_slot *find(const struct map *m, const char *key, size_t len, uint32_t h)
{
    if (!m->cap)
        return NULL;
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        struct map_slot *s = &m->slots[i];
        if (!s->key)
            return NULL;
        if (s->hash == h && s->len == len && !memcmp(s->key, key, len))
            return s;
    }
}

void *map_get(const struct map *m, const char *key, size_t len)
{
    struct map_slot *s = find(m, key, len, hash_bytes(key, len));
    return s ? s->value : NULL;
}

const char *map_key(const struct map *m, const char *key, size_t len)
{
    struct map_slot *s = find(m, key, len, hash_bytes(key, len));
    return s ? s->key : NULL;
}

static void insert_slot(struct map *m, struct map_slot slot)
{
    size_t i = slot.hash & (m->cap - 1);
    while (m->slots[i].key)
        i = (i + 1) & (m->cap - 1);
    m->slots[i] = slot;
}

static int grow(struct map *m)
{
    size_t cap = m->cap ? m->cap * 2 : 8;
    struct map_slot *old = m->slots;
    size_t old_cap = m->cap;
    m->slots = calloc(cap, sizeof *m->slots);
    if (!m->slots) {
        m->slots = old;
        return -1;
    }
    m->cap = cap;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].key)
            insert_slot(m, old[i]);
    free(old);
    return 0;
}

/* Places a new key (not in m) with value, the table grown first if needed. */
static int insert(struct map *m, char *key, size_t len, uint32_t h, void *value, int key_in_value)
{
    if ((m->count + 1) * 4 > m->cap * 3 && grow(m))
        return -1;
    insert_slot(m, (struct map_slot){.key = key, .value = value, .len = (uint32_t)len,
                                     .key_in_value = key_in_value != 0, .hash = h});
    m->count++;
    return 0;
}

int map_put(struct map *m, const char *key, size_t len, void *value)
{
    if (len >= INT32_MAX)
        return -1;
    uint32_t h = hash_bytes(key, len);
    struct map_slot *s = find(m, key, len, h);
    if (s) {
        s->value = value;
        return 0;
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return -1;
    memcpy(copy, key, len);
    copy[len] = '\0';
    if (insert(m, copy, len, h, value, 0)) {
        free(copy);
        return -1;
    }
    return 0;
}

void *map_add(struct map *m, const char *key, size_t len, size_t size)
{
    if (len >= INT32_MAX)
        return NULL;
    char *value = calloc(1, size + len + 1);
    if (!value)
        return NULL;
    char *copy = value + size;
    memcpy(copy, key, len);
    if (insert(m, copy, len, hash_bytes(key, len), value, 1)) {
        free(value);
        return NULL;
    }
    return value;
}

void *map_remove(struct map *m, const char *key, size_t len)
{
    struct map_slot *s = find(m, key, len, hash_bytes(key, len));
    if (!s)
        return NULL;
    void *value = s->value;
    if (!s->key_in_value)
        free(s->key);
    m->count--;
    /* Backward shift: move later entries of the probe run into the hole. */
    size_t mask = m->cap - 1, hole = (size_t)(s - m->slots);
    for (size_t i = (hole + 1) & mask; m->slots[i].key; i = (i + 1) & mask) {
        size_t home = m->slots[i].hash & mask;
        if (((i - home) & mask) >= ((i - hole) & mask)) {
            m->slots[hole] = m->slots[i];
            hole = i;
        }
    }
    m->slots[hole] = (struct map_slot){0};
    return value;
}

int map_next(const struct map *m, size_t *i, const struct map_slot **slot)
{
    for (; *i < m->cap; (*i)++)
        if (m->slots[*i].key) {
            *slot = &m->slots[(*i)++];
            return 1;
        }
    return 0;
}
