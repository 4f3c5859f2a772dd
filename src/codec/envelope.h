/* envelope.h - what travels on the Redis channels (docs/protocol.md
 * section 6), in both directions: channel names, the envelopes this node
 * publishes, and the checks that turn an envelope that arrives into a
 * client event. Every payload that arrives is hostile until checked: a
 * bad one is refused with a reason, never forwarded. Pure: no I/O; any
 * thread. */
#ifndef WSFAN_ENVELOPE_H
#define WSFAN_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include "codec/event.h"

#define ENVELOPE_CHANNEL_MAX (NAME_MAX_LEN + 160) /* a channel or key name, with its NUL */

/* "NS:room:{R}", "NS:user:{U}" or "NS:all" into out. */
void envelope_channel_name(const char *ns, enum event_target target, const char *name,
                           char out[ENVELOPE_CHANNEL_MAX]);

/* "NS:probe:{NODE}": the channel a node's subscriber link hears its own
 * liveness probes on (never a client's). */
void envelope_probe_channel(const char *ns, const char *node, char out[ENVELOPE_CHANNEL_MAX]);

/* Reads a channel name of namespace ns. Returns 0, or -1 when channel is
 * none of this namespace's. */
int envelope_channel_parse(const char *ns, const char *channel, enum event_target *target,
                           char name[NAME_MAX_LEN + 1]);

/* What a published message says besides its data. */
struct envelope_fields {
    enum event_target target;
    const char *room;       /* the room of EVENT_ROOM, else NULL */
    const char *from;       /* the publishing user, or NULL */
    uint64_t ts;
    const char *origin;     /* this node's id */
    const char *echo_skip;  /* "<worker>.<seq>" of an echo:false publisher, or NULL */
    const char *data;       /* JSON text */
    size_t data_len;
};

/* A message envelope split around the place of its offset, which the store
 * learns only when it appends: head + offset + tail, or head + tail when
 * the message is not persisted (then head carries no offset field). */
struct envelope_parts {
    char *head, *tail;  /* malloc'ed */
};

/* Builds the parts of f's envelope, with room for an offset when
 * persisted. Returns 0 or -1 when out of memory. */
int envelope_build(const struct envelope_fields *f, int persisted, struct envelope_parts *out);

/* head + offset + tail (offset NULL: head + tail), malloc'ed; NULL when
 * out of memory. */
char *envelope_join(const struct envelope_parts *p, const char *offset);

void envelope_parts_free(struct envelope_parts *p);

/* The envelope announcing that user joined or left room (kind
 * EVENT_PRESENCE_JOIN or EVENT_PRESENCE_LEAVE), malloc'ed; NULL when out
 * of memory. */
char *envelope_presence(const char *room, const char *user, enum event_kind kind, const char *origin);

/* The client event for one envelope arriving on a channel of target/name:
 * a message, direct or broadcast event, or a presence event (the
 * "presence" extension). An envelope from node_id itself with echo_skip
 * names the connection to leave out. Returns the event (one reference), or
 * NULL with *why set to a one-line reason. */
struct event *envelope_to_event(const char *node_id, enum event_target target, const char *name,
                                const char *payload, size_t len, const char **why);

#endif
