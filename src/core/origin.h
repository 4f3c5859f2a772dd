/* origin.h - the Origin header of browser handshakes (RFC 6454) checked
 * against the server's own origin (the request's Host) and the
 * --allowed-origins patterns, and whether a Host header names the
 * loopback (the API's defence against DNS rebinding). See
 * docs/protocol.md section 1a "Origin" and section 7.
 * Pure functions over caller-owned values: any thread. */
#ifndef WSFAN_ORIGIN_H
#define WSFAN_ORIGIN_H

#include <stddef.h>
#include <stdint.h>

#define ORIGIN_LIST_MAX 64
#define ORIGIN_SCHEME_MAX 15
#define ORIGIN_HOST_MAX 255

/* An origin, scheme "://" host [":" port]; as a pattern, host may start
 * with "*." for every subdomain of the rest (not the rest itself). */
struct origin_pattern {
    char scheme[ORIGIN_SCHEME_MAX + 1];   /* lower case */
    char host[ORIGIN_HOST_MAX + 1];       /* lower case; IPv6 in brackets */
    uint16_t port;                        /* given, or the scheme's (80, 443); 0: none */
    uint8_t subdomains;
};

struct origin_list {
    uint8_t any;                          /* "*": every origin */
    size_t count;
    struct origin_pattern items[ORIGIN_LIST_MAX];
};

/* Reads a comma-separated list of origin patterns, or "*" among them
 * ("" is the empty list). An item is scheme "://" host [":" port], with
 * no path; host may start with "*.". Returns 0, or -1 for a bad item or
 * more than ORIGIN_LIST_MAX. */
int origin_list_parse(const char *text, struct origin_list *out);

/* True when a browser page of origin (the Origin header's value) may open
 * a WebSocket on this server: origin is the server's own (its host and
 * port are those of host, the request's Host header; a Host without a
 * port has the default port of the origin's scheme), or l allows it.
 * Host names compare without regard to case. */
int origin_allowed(const struct origin_list *l, const char *origin, const char *host);

/* True when host (a Host header's value) is localhost, an address of
 * 127.0.0.0/8 or [::1], with or without a port. NULL is not. */
int host_is_loopback(const char *host);

#endif
