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

/* A channel or key name with its NUL: the namespace, a tenant, the
 * longest kind and a name in braces. */
#define ENVELOPE_CHANNEL_MAX (NAME_MAX_LEN + 1 + TENANT_MAX_LEN + 1 + 16 + NAME_MAX_LEN + 3)

/* The Redis name of kind ("room", "user", "all", "history", "presence",
 * "rooms") for key (core/names.h) into out: "NS:kind:{name}", or "NS:kind"
 * when the key's name is empty; in tenant T, NS is "ns:T" (docs/protocol.md
 * section 6). */
void envelope_redis_name(const char *ns, const char *kind, const char *key, char out[ENVELOPE_CHANNEL_MAX]);

/* The channel of target and key: "NS:room:{R}", "NS:user:{U}" or "NS:all"
 * (key "" or "T/"), NS with the key's tenant. */
void envelope_channel_name(const char *ns, enum event_target target, const char *key,
                           char out[ENVELOPE_CHANNEL_MAX]);

/* "NS:probe:{NODE}": the channel a node's subscriber link hears its own
 * liveness probes on (never a client's). */
void envelope_probe_channel(const char *ns, const char *node, char out[ENVELOPE_CHANNEL_MAX]);

/* Reads a channel name of namespace ns or of any tenant of it
 * ("ns:T:room:{R}"): its target, and the key of its room, user or
 * everyone. Returns 0, or -1 when channel is none of these. */
int envelope_channel_parse(const char *ns, const char *channel, enum event_target *target,
                           char key[KEY_MAX_LEN + 1]);

/* The namespace's secret, as the key that seals persisted envelopes: a
 * node believes an envelope's offset only when its seal proves that a
 * wsfan node of the namespace wrote it, in that channel (docs/protocol.md
 * section 6). The seal is HMAC-SHA1 with its inner hash passed on in hex:
 * sha1hex(opad . sha1hex(ipad . text)), ipad and opad being the secret
 * (zero-padded to 64 bytes) XOR 0x36 and 0x5c, which the Redis script that
 * seals what it appends computes the same way. */
#define ENVELOPE_SEAL_HEX 40
struct envelope_seal {
    size_t len;  /* of the secret; 0: none yet */
    unsigned char ipad[64], opad[64];
};

/* Returns 0, or -1 when secret is empty or longer than 64 bytes. */
int envelope_seal_init(struct envelope_seal *s, const char *secret, size_t len);

/* What a published message says besides its data. */
struct envelope_fields {
    enum event_target target;
    const char *room;       /* the room's key for EVENT_ROOM, else NULL */
    const char *from;       /* the publishing user, or NULL */
    uint64_t ts;
    const char *origin;     /* this node's id */
    const char *echo_skip;  /* "<worker>.<seq>" of an echo:false publisher, or NULL */
    const char *data;       /* JSON text; NULL for a disconnect */
    size_t data_len;
    int disconnect;         /* a control envelope (EVENT_USER): close the user's connections */
};

/* A message envelope split around the place of its offset, which the store
 * learns only when it appends: head + offset + "mac" + tail, or head +
 * tail when the message is not persisted (then head carries no offset
 * field). The "mac" field is the seal, of the channel and of the whole
 * text with the mac's value left empty:
 *   head OFFSET ","mac":"HEX" tail  sealed as  CHANNEL \n head OFFSET ","mac":"" tail
 * A control envelope is sealed the same way with its control in the head
 * (head ends ..."control":"disconnect) and no offset: a node acts on it
 * only when the seal proves that a node of the namespace sent it. */
struct envelope_parts {
    char *head, *tail;  /* malloc'ed */
    int control;        /* sealed without an offset */
};

/* Builds the parts of f's envelope, with room for an offset when
 * persisted. Returns 0 or -1 when out of memory. */
int envelope_build(const struct envelope_fields *f, int persisted, struct envelope_parts *out);

/* The envelope to publish on channel: head + offset + its seal + tail
 * (offset NULL: head + tail, sealed only for a control envelope),
 * malloc'ed; NULL when out of memory. */
char *envelope_join(const struct envelope_parts *p, const struct envelope_seal *seal, const char *channel,
                    const char *offset);

void envelope_parts_free(struct envelope_parts *p);

/* The envelope announcing that user joined or left room (a key; kind
 * EVENT_PRESENCE_JOIN or EVENT_PRESENCE_LEAVE), with the joiner's info
 * (JSON text of an object, or NULL), malloc'ed; NULL when out of memory. */
char *envelope_presence(const char *room, const char *user, enum event_kind kind, const char *origin,
                        const char *info);

/* The client event for one envelope arriving on channel, of target/key:
 * a message, direct or broadcast event, a presence event (the
 * "presence" extension, whose join may carry an "info" object of at most
 * EVENT_INFO_MAX bytes as compact JSON), or EVENT_DISCONNECT for the
 * "control":"disconnect" extension on a user channel, which needs a seal
 * that proves it (without one it is refused). An envelope from node_id itself
 * with echo_skip names the connection to leave out. An offset without a
 * seal is left out: the message is delivered, but it cannot move anyone's
 * position in history. An envelope whose seal does not prove it is
 * refused with *why == envelope_unproven: a node that holds another
 * secret (NS:secret was replaced) reads it from history instead. Returns
 * the event (one reference), or NULL with *why set to a one-line reason. */
extern const char envelope_unproven[];
struct event *envelope_to_event(const char *node_id, const struct envelope_seal *seal, const char *channel,
                                enum event_target target, const char *key, const char *payload, size_t len,
                                const char **why);

#endif
