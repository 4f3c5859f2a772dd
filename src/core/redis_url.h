/* redis_url.h - the redis:// URLs of --redis and --store-redis. Pure: no
 * I/O; any thread. */
#ifndef WSFAN_REDIS_URL_H
#define WSFAN_REDIS_URL_H

struct redis_url {
    char host[256];
    int port;
    char user[128];   /* "" when none */
    char pass[256];   /* "" when none */
    int db;
};

/* Parses redis://[user:pass@]host:port[/db] (also redis://host with port
 * 6379 and redis://:pass@host). Returns 0 or -1 when s is not such a URL. */
int redis_url_parse(const char *s, struct redis_url *out);

#endif
