/* event.h - the server events that fan out (docs/protocol.md section 3):
 * message, direct, broadcast, presence_join and presence_leave. An event is
 * built once per process, straight into a reference-counted block that the
 * store keeps for history and every worker reads while it fans out; the
 * last reference frees it. JSON is spliced from parts that are already
 * valid (validated names, data that command.c or jansson checked), never
 * printf'ed. Builders and refcounting are safe on any thread. */
#ifndef WSFAN_EVENT_H
#define WSFAN_EVENT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/offset.h"
#include "core/names.h"

/* The most an info object (docs/protocol.md section 1a) may take as JSON. */
#define EVENT_INFO_MAX 1024

/* Who gets an event: a room's members, a user's connections, everyone. */
enum event_target { EVENT_ROOM, EVENT_USER, EVENT_ALL };

/* What an event is, set by whoever builds it (metrics count messages by
 * it; nothing reads the JSON to find out). EVENT_DISCONNECT is no client
 * event: it travels to the user's connections like a direct message, and
 * the hub closes them (POST /api/disconnect). */
enum event_kind { EVENT_MESSAGE, EVENT_DIRECT, EVENT_BROADCAST, EVENT_PRESENCE_JOIN, EVENT_PRESENCE_LEAVE,
                  EVENT_DISCONNECT };

struct event {
    atomic_uint refs;
    enum event_target target;
    enum event_kind kind;
    const char *key;              /* the room's or the user's key (core/names.h):
                                     the name, or "T/name" in tenant T; for
                                     everyone "" or "T/". In the block, after
                                     the JSON */
    size_t key_len;
    int skip_worker;              /* echo:false: the publisher's worker, or -1 */
    uint64_t skip_seq;            /* and its connection */
    int has_offset;               /* a persisted room message */
    struct offset offset;
    size_t len;
    char json[];                  /* NUL-terminated, len bytes before the NUL */
};

/* Every builder takes the key of its room or user (core/names.h): the
 * event's JSON names the room by the key's name part, and its target by
 * the whole key. */

/* {"type":"message","room":R,["offset":O,]"from":F|null,"data":D,"ts":T}
 * for room. offset and from may be NULL; data is JSON text. */
struct event *event_message(const char *room, const struct offset *offset, const char *from, const char *data,
                            size_t data_len, uint64_t ts);

/* {"type":"direct"|"broadcast","from":F|null,"data":D,"ts":T}: direct
 * to user (target EVENT_USER) or broadcast to everyone (EVENT_ALL; user is
 * then the key of everyone: NULL or "" without a tenant, "T/" in T). */
struct event *event_direct(enum event_target target, const char *user, const char *from, const char *data,
                           size_t data_len, uint64_t ts);

/* {"type":"presence_join"|"presence_leave","room":R,"user":U[,"info":I]};
 * kind is EVENT_PRESENCE_JOIN or EVENT_PRESENCE_LEAVE. info is the JSON
 * text of the joining connection's info object (docs/protocol.md section
 * 3), or NULL; a leave never carries it. */
struct event *event_presence(enum event_kind kind, const char *room, const char *user, const char *info);

/* The order to close every connection of user (a key): EVENT_DISCONNECT,
 * with empty JSON. */
struct event *event_disconnect(const char *user);

/* An event of text that was built before (a replay from history): json
 * is copied. The kind is EVENT_MESSAGE. */
struct event *event_copy(enum event_target target, const char *name, const char *json, size_t len);

/* Every builder returns one reference, or NULL when out of memory. */
static inline struct event *event_ref(struct event *ev)
{
    atomic_fetch_add_explicit(&ev->refs, 1, memory_order_relaxed);
    return ev;
}
void event_unref(struct event *ev);

#endif
