/* netaddr.h - client addresses: IPv4 and IPv6 addresses in one 16-byte
 * form (IPv4 as ::ffff:a.b.c.d), CIDR ranges and lists of them
 * (--trusted-proxies), the loopback test, and the client address of a
 * request that came through trusted proxies (X-Forwarded-For).
 * Pure functions over caller-owned values: any thread. */
#ifndef WSFAN_NETADDR_H
#define WSFAN_NETADDR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define NETADDR_TEXT_MAX 46   /* INET6_ADDRSTRLEN */
#define NETADDR_LIST_MAX 64   /* ranges in one list */

struct net_addr {
    uint8_t b[16];   /* network order; IPv4 mapped to ::ffff:0:0/96 */
};

struct net_cidr {
    struct net_addr addr;   /* the bits past the prefix are zero */
    uint8_t bits;           /* prefix length over the 128 bits */
};

struct net_cidr_list {
    size_t count;
    struct net_cidr items[NETADDR_LIST_MAX];
};

/* Reads an IPv4 or IPv6 address of len bytes (no brackets, no port, no
 * zone). Returns 0, or -1 when it is not one. */
int net_addr_parse(const char *s, size_t len, struct net_addr *out);

/* The address of an AF_INET or AF_INET6 socket address; -1 otherwise. */
int net_addr_from_sockaddr(const struct sockaddr *sa, struct net_addr *out);

/* Writes a as text (a.b.c.d for IPv4). */
void net_addr_format(const struct net_addr *a, char out[NETADDR_TEXT_MAX]);

/* True for 127.0.0.0/8 and ::1. */
int net_addr_is_loopback(const struct net_addr *a);

/* True for an IPv4 address (mapped). */
int net_addr_is_v4(const struct net_addr *a);

/* Reads "ADDR" or "ADDR/BITS" of len bytes: BITS up to 32 for IPv4, 128
 * for IPv6; a lone address is a range of one. Bits past the prefix are
 * cleared. Returns 0 or -1. */
int net_cidr_parse(const char *s, size_t len, struct net_cidr *out);

/* True when a is in range c. */
int net_cidr_match(const struct net_cidr *c, const struct net_addr *a);

/* Reads a comma-separated list of ranges ("10.0.0.0/8, ::1"; spaces
 * around items allowed; "" is the empty list). Returns 0, or -1 when an
 * item is not a range or there are more than NETADDR_LIST_MAX. */
int net_cidr_list_parse(const char *text, struct net_cidr_list *out);

/* True when a is in one of l's ranges. */
int net_cidr_list_match(const struct net_cidr_list *l, const struct net_addr *a);

/* The client address of a request from peer. When peer is in trusted and
 * forwarded_for (the X-Forwarded-For value, or NULL) names addresses, it
 * is the right-most of them that is not in trusted: proxies append the
 * address they received the request from, so everything right of it was
 * written by trusted proxies and everything left of it may be forged. An
 * entry that is not an address ends the walk at the last trusted hop.
 * Otherwise it is peer. Entries may carry a port ("1.2.3.4:5678",
 * "[2001:db8::1]:80"). Returns 1 when the address came from the header,
 * else 0. */
int net_addr_forwarded(const struct net_cidr_list *trusted, const struct net_addr *peer,
                       const char *forwarded_for, struct net_addr *out);

#endif
