/* presence.h - who is in each room: users with their connection counts,
 * kept by the bus for this process (the memory engine). A user is present
 * from their first connection in the room to their last. Bus thread only. */
#ifndef WSFAN_PRESENCE_H
#define WSFAN_PRESENCE_H

#include <stddef.h>

struct presence;

struct presence *presence_create(void);
void presence_destroy(struct presence *p);

/* Counts one more connection of user in room. Returns 1 when it is the
 * user's first there, 0 otherwise, -1 when out of memory. */
int presence_add(struct presence *p, const char *room, const char *user);

/* Counts one connection less. Returns 1 when it was the user's last there,
 * 0 otherwise (also when the user was not counted). */
int presence_remove(struct presence *p, const char *room, const char *user);

/* How many connections of user this process counts in room. */
unsigned long presence_count(const struct presence *p, const char *room, const char *user);

/* Calls fn for every room with at least one user counted. */
void presence_each_room(const struct presence *p, void (*fn)(const char *room, void *arg), void *arg);

/* Users counted in room, and each of them with its count. */
size_t presence_user_count(const struct presence *p, const char *room);
void presence_each_user(const struct presence *p, const char *room,
                        void (*fn)(const char *user, unsigned long count, void *arg), void *arg);

/* The room's users as JSON text: [{"user":"alice","connections":2},..],
 * sorted by user. malloc'ed; NULL when out of memory. */
char *presence_list(const struct presence *p, const char *room);

#endif
