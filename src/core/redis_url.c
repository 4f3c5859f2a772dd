/* redis_url.c - redis:// URLs, read once by config.c to check the flag and
 * again by each Redis link. See redis_url.h. */
#include "core/redis_url.h"

#include <stdio.h>
#include <string.h>

/* A decimal number of 1 to 6 digits, nothing else (no sign, no blank). */
static int parse_number(const char *s, const char *end, long *out)
{
    if (end <= s || end - s > 6)
        return -1;
    long v = 0;
    for (; s < end; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
    }
    *out = v;
    return 0;
}

static int copy_part(char *out, size_t cap, const char *s, const char *end)
{
    if ((size_t)(end - s) >= cap)
        return -1;
    memcpy(out, s, (size_t)(end - s));
    out[end - s] = '\0';
    return 0;
}

/* "host[:port]" in s..end into a, with default_port when it has none. */
static int parse_addr(const char *s, const char *end, int default_port, struct redis_addr *a)
{
    const char *colon = memchr(s, ':', (size_t)(end - s));
    const char *name_end = colon ? colon : end;
    long v;
    if (name_end == s || copy_part(a->host, sizeof a->host, s, name_end))
        return -1;
    a->port = default_port;
    if (colon) {
        if (parse_number(colon + 1, end, &v) || v < 1 || v > 65535)
            return -1;
        a->port = (int)v;
    }
    return 0;
}

/* "host[:port][,host:port..]" in s..end into list (at most
 * REDIS_SENTINELS_MAX) and *n. */
static int parse_addrs(const char *s, const char *end, int default_port, struct redis_addr *list, int *n)
{
    for (const char *h = s; h <= end; (*n)++) {
        const char *comma = memchr(h, ',', (size_t)(end - h));
        const char *addr_end = comma ? comma : end;
        if (*n == REDIS_SENTINELS_MAX || parse_addr(h, addr_end, default_port, &list[*n]))
            return -1;
        h = addr_end + 1;
    }
    return 0;
}

/* A master name as sentinels know it: 1 to 127 of A-Z a-z 0-9 _ . - */
static int master_valid(const char *s, const char *end)
{
    if (end <= s || end - s > 127)
        return 0;
    for (; s < end; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' ||
              *s == '.' || *s == '-'))
            return 0;
    return 1;
}

int redis_url_parse(const char *s, struct redis_url *out)
{
    static const char plain[] = "://", sentinel[] = "+sentinel://", cluster[] = "+cluster://";
    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (!strncmp(s, "rediss", 6)) {
        out->tls = 1;
        s += 6;
    } else if (!strncmp(s, "redis", 5)) {
        s += 5;
    } else {
        return -1;
    }
    int with_sentinels = !strncmp(s, sentinel, sizeof sentinel - 1);
    int is_cluster = !strncmp(s, cluster, sizeof cluster - 1);
    if (with_sentinels)
        s += sizeof sentinel - 1;
    else if (is_cluster)
        s += sizeof cluster - 1;
    else if (!strncmp(s, plain, sizeof plain - 1))
        s += sizeof plain - 1;
    else
        return -1;
    const char *at = strrchr(s, '@');
    if (at) {
        const char *colon = memchr(s, ':', (size_t)(at - s));
        /* redis://secret@host: a password alone, as redis-cli reads it. */
        if (colon ? copy_part(out->user, sizeof out->user, s, colon) || copy_part(out->pass, sizeof out->pass, colon + 1, at)
                  : copy_part(out->pass, sizeof out->pass, s, at))
            return -1;
        s = at + 1;
    }
    const char *slash = strchr(s, '/');
    const char *hosts_end = slash ? slash : s + strlen(s);
    long v;
    if (is_cluster) {
        /* A cluster has database 0 only; a trailing "/" is allowed. */
        if (parse_addrs(s, hosts_end, 6379, out->nodes, &out->nnodes) || (slash && slash[1]))
            return -1;
        memcpy(out->host, out->nodes[0].host, sizeof out->host);
        out->port = out->nodes[0].port;
    } else if (with_sentinels) {
        if (parse_addrs(s, hosts_end, 26379, out->sentinels, &out->nsentinels))
            return -1;
        /* /MASTER[/db] */
        const char *name = slash ? slash + 1 : NULL;
        const char *name_end = name ? strchr(name, '/') : NULL;
        if (!name_end && name)
            name_end = name + strlen(name);
        if (!name || !master_valid(name, name_end) || copy_part(out->master, sizeof out->master, name, name_end))
            return -1;
        slash = *name_end ? name_end : NULL;
    } else {
        struct redis_addr a;
        if (parse_addr(s, hosts_end, 6379, &a))
            return -1;
        memcpy(out->host, a.host, sizeof out->host);
        out->port = a.port;
    }
    if (slash && slash[1]) {
        if (parse_number(slash + 1, slash + strlen(slash), &v) || v > 100000)
            return -1;
        out->db = (int)v;
    }
    return 0;
}

void redis_url_mask(const char *s, char *out, size_t cap)
{
    const char *scheme_end = strstr(s, "://");
    const char *rest = scheme_end ? scheme_end + 3 : s;
    const char *at = strrchr(rest, '@');
    if (!at) {
        snprintf(out, cap, "%s", s);
        return;
    }
    const char *colon = memchr(rest, ':', (size_t)(at - rest));
    const char *pass = colon ? colon + 1 : rest;
    snprintf(out, cap, "%.*s***%s", (int)(pass - s), s, at);
}
