/* redis_url.c - redis:// URLs, read once by config.c to check the flag and
 * again by each Redis link. See redis_url.h. */
#include "core/redis_url.h"

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

int redis_url_parse(const char *s, struct redis_url *out)
{
    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (strncmp(s, "redis://", 8))
        return -1;
    s += 8;
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
    const char *host_end = slash ? slash : s + strlen(s);
    const char *colon = memchr(s, ':', (size_t)(host_end - s));
    const char *name_end = colon ? colon : host_end;
    if (name_end == s || copy_part(out->host, sizeof out->host, s, name_end))
        return -1;
    long v;
    if (colon) {
        if (parse_number(colon + 1, host_end, &v) || v < 1 || v > 65535)
            return -1;
        out->port = (int)v;
    }
    if (slash && slash[1]) {
        if (parse_number(slash + 1, slash + strlen(slash), &v) || v > 100000)
            return -1;
        out->db = (int)v;
    }
    return 0;
}
