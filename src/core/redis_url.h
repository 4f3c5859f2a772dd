/* redis_url.h - the redis:// URLs of --redis and --store-redis. Pure: no
 * I/O; any thread. */
#ifndef WSFAN_REDIS_URL_H
#define WSFAN_REDIS_URL_H

#include <stddef.h>

#define REDIS_SENTINELS_MAX 8

struct redis_addr {
    char host[256];
    int port;
};

struct redis_url {
    char host[256];   /* the server; with sentinels, the master they named last */
    int port;
    char user[128];   /* "" when none */
    char pass[256];   /* "" when none */
    int db;
    int tls;          /* rediss://: every connection speaks TLS (net/redis.c) */
    int nsentinels;   /* 0: connect to host:port; else ask these for master */
    struct redis_addr sentinels[REDIS_SENTINELS_MAX];
    char master[128]; /* the master's name at the sentinels */
    int nnodes;       /* redis+cluster://: the nodes to learn the slot map from; else 0 */
    struct redis_addr nodes[REDIS_SENTINELS_MAX];
};

/* Parses redis://[user:pass@]host:port[/db] (also redis://host with port
 * 6379 and redis://:pass@host), and
 * redis+sentinel://[user:pass@]host:port[,host:port..]/MASTER[/db] (port
 * 26379 by default; user and password are the master's), and
 * redis+cluster://[user:pass@]host:port[,host:port..] (a Redis Cluster: any
 * of its nodes, port 6379 by default; no database). Each scheme with
 * rediss in place of redis (rediss://, rediss+sentinel://,
 * rediss+cluster://) is the same over TLS, to every server and sentinel.
 * Returns 0 or -1 when s is not such a URL. */
int redis_url_parse(const char *s, struct redis_url *out);

/* s, valid or not, with its password as *** (read as redis_url_parse
 * would), for a log or error line: in out (cap bytes), cut to fit. */
void redis_url_mask(const char *s, char *out, size_t cap);

#endif
