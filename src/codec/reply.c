/* reply.c - answers to one client or one request. See reply.h. Replies are
 * one per command, so printf is cheap enough here. */
#include "codec/reply.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static char *format(size_t *len, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *format(size_t *len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *text = NULL;
    int n = vasprintf(&text, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    *len = (size_t)n;
    return text;
}

/* ",\"ref\":<ref>" when there is a ref, else "". */
#define REF_FIELD(ref) (ref)[0] ? ",\"ref\":" : "", (ref)

/* "offset" quoted, or null. */
#define NULLABLE(s) (s) && (s)[0] ? "\"" : "", (s) && (s)[0] ? (s) : "null", (s) && (s)[0] ? "\"" : ""

char *reply_welcome(const char *session, const char *user, const char *node, int heartbeat, const char *exp,
                    size_t *len)
{
    return format(len,
                  "{\"type\":\"welcome\",\"session\":\"%s\",\"user\":%s%s%s,\"node\":\"%s\",\"heartbeat\":%d%s%s}",
                  session, NULLABLE(user), node, heartbeat, exp ? ",\"exp\":" : "", exp ? exp : "");
}

char *reply_joined(const char *ref, const char *room, const char *offset, int recovered, size_t missed,
                   size_t *len)
{
    return format(len, "{\"type\":\"joined\"%s%s,\"room\":\"%s\",\"offset\":%s%s%s,\"recovered\":%s,\"missed\":%zu}",
                  REF_FIELD(ref), room, NULLABLE(offset), recovered ? "true" : "false", missed);
}

char *reply_left(const char *ref, const char *room, const char *reason, size_t *len)
{
    return format(len, "{\"type\":\"left\"%s%s,\"room\":\"%s\"%s%s%s}", REF_FIELD(ref), room,
                  reason ? ",\"reason\":\"" : "", reason ? reason : "", reason ? "\"" : "");
}

char *reply_refreshed(const char *ref, const char *exp, size_t *len)
{
    return format(len, "{\"type\":\"refreshed\"%s%s,\"exp\":%s}", REF_FIELD(ref), exp);
}

char *reply_ack(const char *ref, int room_ack, const char *offset, size_t *len)
{
    if (!room_ack)
        return format(len, "{\"type\":\"ack\"%s%s}", REF_FIELD(ref));
    return format(len, "{\"type\":\"ack\"%s%s,\"offset\":%s%s%s}", REF_FIELD(ref), NULLABLE(offset));
}

char *reply_history(const char *ref, const char *room, const char *events, size_t events_len, size_t *len)
{
    return format(len, "{\"type\":\"history\"%s%s,\"room\":\"%s\",\"messages\":[%.*s]}", REF_FIELD(ref), room,
                  (int)events_len, events);
}

char *reply_presence(const char *ref, const char *room, const char *users, size_t *len)
{
    return format(len, "{\"type\":\"presence\"%s%s,\"room\":\"%s\",\"users\":%s}", REF_FIELD(ref), room, users);
}

char *reply_pong(const char *ref, size_t *len)
{
    return format(len, "{\"type\":\"pong\"%s%s}", REF_FIELD(ref));
}

/* message as a JSON string literal (malloc'ed), or NULL. */
static char *quote(const char *message)
{
    json_t *m = json_string(message);
    char *quoted = m ? json_dumps(m, JSON_ENCODE_ANY) : NULL;
    json_decref(m);
    return quoted;
}

char *reply_error(const char *ref, const char *code, const char *message, size_t *len)
{
    char *quoted = quote(message);
    char *text = quoted ? format(len, "{\"type\":\"error\"%s%s,\"code\":\"%s\",\"message\":%s}", REF_FIELD(ref), code,
                                 quoted)
                        : NULL;
    free(quoted);
    return text;
}

char *reply_api_error(const char *code, const char *message, size_t *len)
{
    char *quoted = quote(message);
    char *text = quoted ? format(len, "{\"error\":\"%s\",\"message\":%s}", code, quoted) : NULL;
    free(quoted);
    return text;
}

char *reply_api_published(const char *offset, size_t *len)
{
    return format(len, "{\"offset\":%s%s%s}", NULLABLE(offset));
}

char *reply_api_disconnected(unsigned long local, size_t *len)
{
    return format(len, "{\"local\":%lu}", local);
}

char *reply_api_history(const char *room, const char *events, size_t events_len, size_t *len)
{
    return format(len, "{\"room\":\"%s\",\"messages\":[%.*s]}", room, (int)events_len, events);
}

char *reply_api_presence(const char *room, const char *users, size_t *len)
{
    return format(len, "{\"room\":\"%s\",\"users\":%s}", room, users);
}

char *reply_api_rooms(const char *node, const char *rooms, size_t *len)
{
    return format(len, "{\"node\":\"%s\",\"rooms\":%s}", node, rooms);
}
