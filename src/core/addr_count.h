/* addr_count.h - open connections per client address for the whole
 * process (--max-connections-per-ip): every worker takes and gives back
 * under a lock striped by address, held for one lookup. An IPv6 address
 * counts by its /64, which one host usually has to itself. Any thread. */
#ifndef WSFAN_ADDR_COUNT_H
#define WSFAN_ADDR_COUNT_H

#include "core/netaddr.h"

struct addr_count;

/* NULL when out of memory. */
struct addr_count *addr_count_create(void);
void addr_count_destroy(struct addr_count *t);

/* Counts one more connection of a, unless limit of them are open already
 * (limit > 0). Returns 0, or -1 at the limit or when out of memory. */
int addr_count_take(struct addr_count *t, const struct net_addr *a, int limit);

/* Gives back one connection of a that addr_count_take counted. */
void addr_count_give(struct addr_count *t, const struct net_addr *a);

/* The connections of a counted now. */
int addr_count_get(struct addr_count *t, const struct net_addr *a);

#endif
