/* event.c - server events as JSON text, spliced from trusted parts: names
 * are validated ids (no character needs escaping) and data is JSON text that
 * command.c or jansson checked. See event.h. */
#include "event.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Events are spliced with memcpy, not printf: a message event is built once
 * per published message, and printf cost more than the rest of the path. */
struct piece {
    const char *s;
    size_t n;
};

#define LIT(text) ((struct piece){text, sizeof text - 1})
#define STR(text) ((struct piece){text, strlen(text)})
/* "name" quoted, or null: three pieces. */
#define NULLABLE(name) (name) ? LIT("\"") : LIT("null"), (name) ? STR(name) : LIT(""), (name) ? LIT("\"") : LIT("")

/* The decimal digits of v in buf. */
static struct piece decimal(uint64_t v, char buf[24])
{
    char *p = buf + 24;
    do
        *--p = (char)('0' + v % 10);
    while (v /= 10);
    return (struct piece){p, (size_t)(buf + 24 - p)};
}

/* The n pieces joined into a fresh NUL-terminated buffer. */
static char *splice(size_t *len, const struct piece *pieces, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += pieces[i].n;
    char *s = malloc(total + 1), *w = s;
    if (!s)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        memcpy(w, pieces[i].s, pieces[i].n);
        w += pieces[i].n;
    }
    *w = '\0';
    *len = total;
    return s;
}

#define SPLICE(len, ...) \
    splice(len, (const struct piece[]){__VA_ARGS__}, sizeof((const struct piece[]){__VA_ARGS__}) / sizeof(struct piece))

char *event_message(const char *room, const char *offset, const char *from, const char *data, size_t data_len,
                    uint64_t ts, size_t *len)
{
    char ts_buf[24];
    return SPLICE(len, LIT("{\"type\":\"message\",\"room\":\""), STR(room),
                  offset ? LIT("\",\"offset\":\"") : LIT(""), offset ? STR(offset) : LIT(""),
                  LIT("\",\"from\":"), NULLABLE(from), LIT(",\"data\":"), ((struct piece){data, data_len}),
                  LIT(",\"ts\":"), decimal(ts, ts_buf), LIT("}"));
}

char *event_direct(const char *type, const char *from, const char *data, size_t data_len, uint64_t ts, size_t *len)
{
    char ts_buf[24];
    return SPLICE(len, LIT("{\"type\":\""), STR(type), LIT("\",\"from\":"), NULLABLE(from),
                  LIT(",\"data\":"), ((struct piece){data, data_len}), LIT(",\"ts\":"), decimal(ts, ts_buf),
                  LIT("}"));
}

char *event_presence(const char *type, const char *room, const char *user, size_t *len)
{
    return SPLICE(len, LIT("{\"type\":\""), STR(type), LIT("\",\"room\":\""), STR(room), LIT("\",\"user\":\""),
                  STR(user), LIT("\"}"));
}

uint64_t event_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}
