/* event.c - server events as JSON text, spliced from trusted parts: names
 * are validated ids (no character needs escaping) and data is JSON text that
 * jansson produced or checked. See event.h. */
#include "event.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* printf into a fresh buffer of the exact size. */
static char *build(size_t *len, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *build(size_t *len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = n < 0 ? NULL : malloc((size_t)n + 1);
    if (!s)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    *len = (size_t)n;
    return s;
}

/* "\"name\"" or "null", into buf. */
static const char *quoted_or_null(const char *name, char *buf, size_t cap)
{
    if (!name)
        return "null";
    snprintf(buf, cap, "\"%s\"", name);
    return buf;
}

char *event_message(const char *room, const char *offset, const char *from, const char *data, size_t data_len,
                    uint64_t ts, size_t *len)
{
    char from_buf[160], offset_buf[80] = "";
    if (offset)
        snprintf(offset_buf, sizeof offset_buf, "\"offset\":\"%s\",", offset);
    return build(len, "{\"type\":\"message\",\"room\":\"%s\",%s\"from\":%s,\"data\":%.*s,\"ts\":%llu}", room,
                 offset_buf, quoted_or_null(from, from_buf, sizeof from_buf), (int)data_len, data,
                 (unsigned long long)ts);
}

char *event_direct(const char *type, const char *from, const char *data, size_t data_len, uint64_t ts, size_t *len)
{
    char from_buf[160];
    return build(len, "{\"type\":\"%s\",\"from\":%s,\"data\":%.*s,\"ts\":%llu}", type,
                 quoted_or_null(from, from_buf, sizeof from_buf), (int)data_len, data, (unsigned long long)ts);
}

char *event_presence(const char *type, const char *room, const char *user, size_t *len)
{
    return build(len, "{\"type\":\"%s\",\"room\":\"%s\",\"user\":\"%s\"}", type, room, user);
}

uint64_t event_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}
