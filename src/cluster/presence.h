/* presence.h - who is in each room. The counts: users with their
 * connection counts in this process, kept by the bus; a user is present
 * from their first connection in the room to their last. Rooms are keys
 * (core/names.h), so each tenant has its own. Each user also has the info
 * (docs/protocol.md section 1a) of its newest connection in the room: the
 * last join sets it, with or without an info, and it stays until the next
 * join or until the user has left. And the two
 * engines that announce and list presence: memory (this process is the
 * cluster) here, Redis (a hash per room shared by every node) in
 * presence_redis.c. Bus thread only. */
#ifndef WSFAN_PRESENCE_H
#define WSFAN_PRESENCE_H

#include <stddef.h>

#include "cluster/bus.h"

struct presence;

struct presence *presence_create(void);
void presence_destroy(struct presence *p);

/* Counts one more connection of user in room, whose info (JSON text of an
 * object, copied; NULL for none) becomes the user's there. Returns 1 when
 * it is the user's first there, 0 otherwise, -1 when out of memory. */
int presence_add(struct presence *p, const char *room, const char *user, const char *info);

/* Counts one connection less. Returns 1 when it was the user's last there,
 * 0 otherwise (also when the user was not counted). */
int presence_remove(struct presence *p, const char *room, const char *user);

/* How many connections of user this process counts in room. */
unsigned long presence_count(const struct presence *p, const char *room, const char *user);

/* The info of user's newest connection in room, or NULL. Borrowed until
 * the next change of the counts. */
const char *presence_info(const struct presence *p, const char *room, const char *user);

/* Calls fn for every room with at least one user counted. */
void presence_each_room(const struct presence *p, void (*fn)(const char *room, void *arg), void *arg);

/* Users counted in room, and each of them with its count and info (NULL
 * when none). */
size_t presence_user_count(const struct presence *p, const char *room);
void presence_each_user(const struct presence *p, const char *room,
                        void (*fn)(const char *user, unsigned long count, const char *info, void *arg), void *arg);

/* The room's users as JSON text:
 * [{"user":"alice","connections":2,"info":{..}},..] ("info" only for a
 * user that has one), sorted by user. malloc'ed; NULL when out of memory. */
char *presence_list(const struct presence *p, const char *room);

/* The memory engine (bus_engine.presence and .presence_list): announces
 * presence_join (with the joiner's info) when a user's count goes from 0
 * and presence_leave when it goes to 0; lists this process's counts. */
void presence_memory_changed(struct bus *b, const char *room, const char *user, unsigned long before,
                             unsigned long count, const char *info);
void presence_memory_list(struct bus *b, struct bus_presence *req);

/* The Redis engine: its state, created by the Redis bus engine with the
 * link it publishes announcements on, and freed by destroy (after its
 * timer closes). */
struct presence_redis;
struct redis_link;
struct presence_redis *presence_redis_create(struct bus *b, struct redis_link *pub);
void presence_redis_destroy(struct presence_redis *p);
/* This node now has count connections of user in room; joined: a
 * connection joined (its info, or NULL, becomes the user's), else one
 * left. */
void presence_redis_changed(struct presence_redis *p, const char *room, const char *user, unsigned long count,
                            int joined, const char *info);
void presence_redis_list(struct presence_redis *p, struct bus_presence *req);
/* The rooms reply with every node's member counts. */
void presence_redis_rooms(struct presence_redis *p, struct bus_rooms *req);

#endif
