/* presence.c - per-room user counts for one process, and the memory
 * engine of presence. See presence.h. */
#include "cluster/presence.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/map.h"

struct presence {
    struct map rooms; /* room -> struct map of user -> count (as a pointer-sized integer) */
};

struct presence *presence_create(void)
{
    struct presence *p = calloc(1, sizeof *p);
    if (p)
        map_init(&p->rooms);
    return p;
}

void presence_destroy(struct presence *p)
{
    const struct map_slot *slot;
    for (size_t i = 0; map_next(&p->rooms, &i, &slot);) {
        map_free(slot->value);
        free(slot->value);
    }
    map_free(&p->rooms);
    free(p);
}

int presence_add(struct presence *p, const char *room, const char *user)
{
    size_t room_len = strlen(room), user_len = strlen(user);
    struct map *users = map_get(&p->rooms, room, room_len);
    if (!users) {
        users = calloc(1, sizeof *users);
        if (!users || map_put(&p->rooms, room, room_len, users)) {
            free(users);
            return -1;
        }
    }
    uintptr_t n = (uintptr_t)map_get(users, user, user_len);
    if (map_put(users, user, user_len, (void *)(n + 1)))
        return -1;
    return n == 0;
}

int presence_remove(struct presence *p, const char *room, const char *user)
{
    size_t room_len = strlen(room), user_len = strlen(user);
    struct map *users = map_get(&p->rooms, room, room_len);
    uintptr_t n = users ? (uintptr_t)map_get(users, user, user_len) : 0;
    if (n == 0)
        return 0;
    if (n > 1) {
        map_put(users, user, user_len, (void *)(n - 1));
        return 0;
    }
    map_remove(users, user, user_len);
    if (users->count == 0) {
        map_free(users);
        free(map_remove(&p->rooms, room, room_len));
    }
    return 1;
}

unsigned long presence_count(const struct presence *p, const char *room, const char *user)
{
    const struct map *users = map_get(&p->rooms, room, strlen(room));
    return users ? (unsigned long)(uintptr_t)map_get(users, user, strlen(user)) : 0;
}

void presence_each_room(const struct presence *p, void (*fn)(const char *room, void *arg), void *arg)
{
    const struct map_slot *slot;
    for (size_t i = 0; map_next(&p->rooms, &i, &slot);)
        fn(slot->key, arg);
}

size_t presence_user_count(const struct presence *p, const char *room)
{
    const struct map *users = map_get(&p->rooms, room, strlen(room));
    return users ? users->count : 0;
}

void presence_each_user(const struct presence *p, const char *room,
                        void (*fn)(const char *user, unsigned long count, void *arg), void *arg)
{
    const struct map *users = map_get(&p->rooms, room, strlen(room));
    const struct map_slot *slot;
    for (size_t i = 0; users && map_next(users, &i, &slot);)
        fn(slot->key, (unsigned long)(uintptr_t)slot->value, arg);
}

static int by_key(const void *a, const void *b)
{
    return strcmp((*(const struct map_slot *const *)a)->key, (*(const struct map_slot *const *)b)->key);
}

char *presence_list(const struct presence *p, const char *room)
{
    const struct map *users = map_get(&p->rooms, room, strlen(room));
    size_t n = users ? users->count : 0;
    const struct map_slot **sorted = malloc(sizeof *sorted * (n ? n : 1));
    /* Each item is at most {"user":"<128>","connections":<20>}, plus a comma. */
    char *out = malloc(2 + n * 176 + 1);
    if (!sorted || !out) {
        free(sorted);
        free(out);
        return NULL;
    }
    size_t k = 0;
    const struct map_slot *slot;
    for (size_t i = 0; users && map_next(users, &i, &slot);)
        sorted[k++] = slot;
    qsort(sorted, k, sizeof *sorted, by_key);
    size_t len = 0;
    out[len++] = '[';
    for (size_t i = 0; i < k; i++)
        len += (size_t)sprintf(out + len, "%s{\"user\":\"%s\",\"connections\":%lu}", i ? "," : "", sorted[i]->key,
                               (unsigned long)(uintptr_t)sorted[i]->value);
    out[len++] = ']';
    out[len] = '\0';
    free(sorted);
    return out;
}

void presence_memory_changed(struct bus *b, const char *room, const char *user, unsigned long before,
                             unsigned long count)
{
    if (before && count)
        return;
    struct event *ev = event_presence(count ? EVENT_PRESENCE_JOIN : EVENT_PRESENCE_LEAVE, room, user);
    if (ev)
        bus_deliver(b, ev);
    else
        log_error("bus: out of memory announcing the presence of %s in %s", user, room);
}

void presence_memory_list(struct bus *b, struct bus_presence *req)
{
    if (!(req->users = presence_list(bus_presence(b), req->room)))
        req->base.error = WSFAN_ENOMEM;
    bus_reply(b, &req->base);
}
