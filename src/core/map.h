/* map.h - a string-keyed hash map (open addressing, linear probing) used for
 * the hub's room and user indexes and the bus's and store's room tables.
 * Keys are copied into the map (map_put), or into the value's own block
 * (map_add); values are the caller's. Not thread-safe:
 * each map belongs to one thread. Keys are chosen by clients (room and
 * user ids), so they are hashed with SipHash-1-3 under a key of the
 * process's own (map_hash_key_set): nobody outside can compute a set of
 * ids that share a probe run. */
#ifndef WSFAN_MAP_H
#define WSFAN_MAP_H

#include <stddef.h>
#include <stdint.h>

/* 24 bytes: keys are names (core/names.h), far below 2 GiB, and the low 32
 * bits of the hash place and tell apart any table this process can hold. */
struct map_slot {
    char *key;      /* NULL when empty */
    void *value;
    uint32_t len : 31;
    uint32_t key_in_value : 1; /* map_add's: the key is freed with the value */
    uint32_t hash;  /* the low 32 bits of map_hash(key) */
};

struct map {
    struct map_slot *slots;
    size_t cap;   /* a power of two, or 0 */
    size_t count;
};

/* Sets the SipHash key of every map of the process. Call it once at start,
 * before any map holds an entry and before other threads exist. Without a
 * call the key is all zeros, which only the unit tests rely on. */
void map_hash_key_set(const uint8_t key[16]);

/* The hash a map uses for key (for tests and benchmarks). */
uint64_t map_hash(const char *key, size_t len);

void map_init(struct map *m);
/* Frees the keys map_put copied and the table, not the values. */
void map_free(struct map *m);

/* The value for key, or NULL. */
void *map_get(const struct map *m, const char *key, size_t len);

/* Sets key (shorter than 2 GiB) to value (replacing). Returns 0 or -1 when
 * out of memory. */
int map_put(struct map *m, const char *key, size_t len, void *value);

/* Adds key, which m must not hold, with a new value: a zeroed block of size
 * bytes followed by the key's copy (NUL-terminated, at value + size), in one
 * allocation. Free the value (once removed) to free both. Returns the value,
 * or NULL when out of memory. One allocation per entry instead of two: for
 * maps with an entry per user or connection. */
void *map_add(struct map *m, const char *key, size_t len, size_t size);

/* Removes key; returns its value or NULL. */
void *map_remove(struct map *m, const char *key, size_t len);

/* The stored copy of key (NUL-terminated, lives as long as the entry). */
const char *map_key(const struct map *m, const char *key, size_t len);

/* Iteration: for (size_t i = 0; map_next(m, &i, &slot);) ... The map must
 * not change during iteration. */
int map_next(const struct map *m, size_t *i, const struct map_slot **slot);

#endif
