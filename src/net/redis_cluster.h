/* redis_cluster.h - the Redis Cluster behind a redis+cluster:// link
 * (net/redis.c starts one for such a link, which then stands for the
 * whole cluster): learns the slot map with CLUSTER SLOTS from the seed
 * nodes, keeps one link per master, routes every command by its key's
 * slot (the CRC16 of the key's hash tag), follows MOVED (and refreshes
 * the map) and ASK (ASKING once), sends a command answered TRYAGAIN, or
 * redirected round in circles (a slot on the move), again shortly after,
 * and refreshes the map periodically and whenever a master link fails. The link is up while the map covers
 * every slot and every master's link is up. Runs on the link's loop. */
#ifndef WSFAN_REDIS_CLUSTER_H
#define WSFAN_REDIS_CLUSTER_H

#include <stddef.h>

#include "net/redis.h"

#define REDIS_CLUSTER_SLOTS 16384

struct redis_cluster;

/* The slot of a key: of the part between the first '{' and the next '}'
 * when that is not empty, else of the whole key. */
unsigned redis_cluster_slot(const char *key, size_t len);

/* Starts learning the cluster for link (its url names the seed nodes;
 * its name, timeouts, backoff, on_push and callbacks are the masters'
 * links' too). NULL when out of memory. */
struct redis_cluster *redis_cluster_create(struct redis_link *link);

/* Stops every master link, then calls done(link) and frees c. */
void redis_cluster_stop(struct redis_cluster *c, void (*done)(struct redis_link *link));

/* A command, sent to the master of its key's slot (EVAL and EVALSHA: of
 * their first key; argv[1] for the others). A command without a key
 * (SCRIPT LOAD) goes to every master, and fn gets each one's reply.
 * Returns 0 or -1 when the link is down (fn is not called then). */
int redis_cluster_command(struct redis_cluster *c, redis_reply_fn *fn, void *privdata, int argc,
                          const char **argv, const size_t *lens);

#endif
