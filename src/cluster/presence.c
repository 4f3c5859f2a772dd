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
    struct map rooms; /* room key -> struct map of user -> struct presence_user */
};

struct presence_user {
    unsigned long count;  /* connections of this process */
    char *info;           /* of the newest one, or NULL */
};

struct presence *presence_create(void)
{
    struct presence *p = calloc(1, sizeof *p);
    if (p)
        map_init(&p->rooms);
    return p;
}

static void users_free(struct map *users)
{
    const struct map_slot *slot;
    for (size_t i = 0; map_next(users, &i, &slot);) {
        free(((struct presence_user *)slot->value)->info);
        free(slot->value);
    }
    map_free(users);
    free(users);
}

void presence_destroy(struct presence *p)
{
    const struct map_slot *slot;
    for (size_t i = 0; map_next(&p->rooms, &i, &slot);)
        users_free(slot->value);
    map_free(&p->rooms);
    free(p);
}

static struct presence_user *user_get(const struct presence *p, const char *room, const char *user)
{
    const struct map *users = map_get(&p->rooms, room, strlen(room));
    return users ? map_get(users, user, strlen(user)) : NULL;
}

int presence_add(struct presence *p, const char *room, const char *user, const char *info)
{
    size_t room_len = strlen(room), user_len = strlen(user);
    char *info_copy = NULL;
    if (info && !(info_copy = strdup(info)))
        return -1;
    struct map *users = map_get(&p->rooms, room, room_len);
    /* map_add's zeroed block is an empty map (map_init's state). */
    if (!users && !(users = map_add(&p->rooms, room, room_len, sizeof *users))) {
        free(info_copy);
        return -1;
    }
    struct presence_user *u = map_get(users, user, user_len);
    if (!u) {
        if (!(u = map_add(users, user, user_len, sizeof *u))) {
            free(info_copy);
            if (users->count == 0)
                users_free(map_remove(&p->rooms, room, room_len));
            return -1;
        }
    }
    free(u->info);
    u->info = info_copy;
    return u->count++ == 0;
}

int presence_remove(struct presence *p, const char *room, const char *user)
{
    size_t room_len = strlen(room), user_len = strlen(user);
    struct map *users = map_get(&p->rooms, room, room_len);
    struct presence_user *u = users ? map_get(users, user, user_len) : NULL;
    if (!u)
        return 0;
    if (--u->count > 0)
        return 0;
    free(u->info);
    free(map_remove(users, user, user_len));
    if (users->count == 0)
        users_free(map_remove(&p->rooms, room, room_len));
    return 1;
}

unsigned long presence_count(const struct presence *p, const char *room, const char *user)
{
    const struct presence_user *u = user_get(p, room, user);
    return u ? u->count : 0;
}

const char *presence_info(const struct presence *p, const char *room, const char *user)
{
    const struct presence_user *u = user_get(p, room, user);
    return u ? u->info : NULL;
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
                        void (*fn)(const char *user, unsigned long count, const char *info, void *arg), void *arg)
{
    const struct map *users = map_get(&p->rooms, room, strlen(room));
    const struct map_slot *slot;
    for (size_t i = 0; users && map_next(users, &i, &slot);) {
        const struct presence_user *u = slot->value;
        fn(slot->key, u->count, u->info, arg);
    }
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
    /* Each item is at most {"user":"<128>","connections":<20>,"info":<info>},
     * plus a comma. */
    size_t cap = 3;
    const struct map_slot *slot;
    for (size_t i = 0; users && map_next(users, &i, &slot);) {
        const struct presence_user *u = slot->value;
        cap += 176 + (u->info ? strlen(u->info) + 8 : 0);
    }
    char *out = malloc(cap);
    if (!sorted || !out) {
        free(sorted);
        free(out);
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; users && map_next(users, &i, &slot);)
        sorted[k++] = slot;
    qsort(sorted, k, sizeof *sorted, by_key);
    size_t len = 0;
    out[len++] = '[';
    for (size_t i = 0; i < k; i++) {
        const struct presence_user *u = sorted[i]->value;
        len += (size_t)sprintf(out + len, "%s{\"user\":\"%s\",\"connections\":%lu%s%s}", i ? "," : "",
                               sorted[i]->key, u->count, u->info ? ",\"info\":" : "", u->info ? u->info : "");
    }
    out[len++] = ']';
    out[len] = '\0';
    free(sorted);
    return out;
}

void presence_memory_changed(struct bus *b, const char *room, const char *user, unsigned long before,
                             unsigned long count, const char *info)
{
    if (before && count)
        return;
    struct event *ev = event_presence(count ? EVENT_PRESENCE_JOIN : EVENT_PRESENCE_LEAVE, room, user, info);
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
