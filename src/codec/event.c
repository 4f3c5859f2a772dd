/* event.c - server events spliced into their shared block. See event.h. */
#include "codec/event.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* A new event whose JSON is the n pieces joined. */
static struct event *splice(enum event_target target, enum event_kind kind, const char *key,
                            const struct piece *pieces, size_t n)
{
    size_t total = 0, key_len = key ? strlen(key) : 0;
    for (size_t i = 0; i < n; i++)
        total += pieces[i].n;
    /* The header, the JSON and its NUL, then the key and its NUL. */
    struct event *ev = malloc(sizeof *ev + total + 1 + key_len + 1);
    if (!ev)
        return NULL;
    atomic_init(&ev->refs, 1);
    ev->target = target;
    ev->kind = kind;
    char *key_copy = ev->json + total + 1;
    memcpy(key_copy, key ? key : "", key_len + 1);
    ev->key = key_copy;
    ev->key_len = key_len;
    ev->skip_worker = -1;
    ev->skip_seq = 0;
    ev->has_offset = 0;
    ev->offset = (struct offset){0, 0};
    ev->len = total;
    char *w = ev->json;
    for (size_t i = 0; i < n; i++) {
        memcpy(w, pieces[i].s, pieces[i].n);
        w += pieces[i].n;
    }
    *w = '\0';
    return ev;
}

#define SPLICE(target, kind, key, ...)                                                                     \
    splice(target, kind, key, (const struct piece[]){__VA_ARGS__},                                      \
           sizeof((const struct piece[]){__VA_ARGS__}) / sizeof(struct piece))

struct event *event_message(const char *room, const struct offset *offset, const char *from, const char *data,
                            size_t data_len, uint64_t ts)
{
    char ts_buf[24], offset_buf[OFFSET_MAX_LEN] = "";
    if (offset)
        offset_format(*offset, offset_buf);
    struct event *ev = SPLICE(EVENT_ROOM, EVENT_MESSAGE, room, LIT("{\"type\":\"message\",\"room\":\""),
                              STR(name_of_key(room)),
                              offset ? LIT("\",\"offset\":\"") : LIT(""), STR(offset_buf), LIT("\",\"from\":"),
                              NULLABLE(from), LIT(",\"data\":"), ((struct piece){data, data_len}),
                              LIT(",\"ts\":"), decimal(ts, ts_buf), LIT("}"));
    if (ev && offset) {
        ev->has_offset = 1;
        ev->offset = *offset;
    }
    return ev;
}

struct event *event_direct(enum event_target target, const char *user, const char *from, const char *data,
                           size_t data_len, uint64_t ts)
{
    char ts_buf[24];
    int direct = target == EVENT_USER;
    return SPLICE(target, direct ? EVENT_DIRECT : EVENT_BROADCAST, user,
                  direct ? LIT("{\"type\":\"direct\",\"from\":") : LIT("{\"type\":\"broadcast\",\"from\":"),
                  NULLABLE(from), LIT(",\"data\":"), ((struct piece){data, data_len}), LIT(",\"ts\":"),
                  decimal(ts, ts_buf), LIT("}"));
}

struct event *event_presence(enum event_kind kind, const char *room, const char *user, const char *info)
{
    int join = kind == EVENT_PRESENCE_JOIN, with_info = join && info;
    return SPLICE(EVENT_ROOM, kind, room,
                  join ? LIT("{\"type\":\"presence_join\",\"room\":\"")
                       : LIT("{\"type\":\"presence_leave\",\"room\":\""),
                  STR(name_of_key(room)), LIT("\",\"user\":\""), STR(user),
                  with_info ? LIT("\",\"info\":") : LIT("\""), with_info ? STR(info) : LIT(""), LIT("}"));
}

struct event *event_disconnect(const char *user)
{
    return splice(EVENT_USER, EVENT_DISCONNECT, user, NULL, 0);
}

struct event *event_copy(enum event_target target, const char *name, const char *json, size_t len)
{
    return SPLICE(target, EVENT_MESSAGE, name, ((struct piece){json, len}));
}

void event_unref(struct event *ev)
{
    if (atomic_fetch_sub_explicit(&ev->refs, 1, memory_order_acq_rel) == 1)
        free(ev);
}
