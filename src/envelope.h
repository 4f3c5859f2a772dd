/* envelope.h - what travels on the Redis channels (PROTOCOL.md section 6):
 * channel names in, envelopes in, checked and turned into client events.
 * Every payload is hostile until checked: a bad one is refused with a
 * reason, never forwarded. Pure: no I/O; any thread. */
#ifndef WSFAN_ENVELOPE_H
#define WSFAN_ENVELOPE_H

#include <stddef.h>

#include "bus.h"

/* Reads "NS:room:{R}", "NS:user:{U}" or "NS:all" of namespace ns.
 * Returns 0, or -1 when channel is none of them. */
int envelope_channel_parse(const char *ns, const char *channel, enum bus_target *target, char name[NAME_MAX_LEN + 1]);

/* The client event for one envelope arriving on a channel of target/name:
 * a message, direct or broadcast event, or a presence event (the
 * "presence" extension). An envelope from node_id itself with echo_skip
 * names the connection to leave out. Returns the event (one reference), or
 * NULL with *why set to a one-line reason. */
struct bus_event *envelope_to_event(const char *node_id, enum bus_target target, const char *name,
                                    const char *payload, size_t len, const char **why);

#endif
