/* deflate.h - permessage-deflate (RFC 7692): the choice among a client's
 * Sec-WebSocket-Extensions offers and the answer to it, the inflation of
 * one compressed client message under a limit, and the compression of one
 * server frame (RSV1 set) that every recipient with the extension shares.
 * The server always answers server_no_context_takeover and
 * client_no_context_takeover: each message is compressed and inflated on
 * its own, so that one compressed frame suits every recipient and a
 * connection keeps no zlib state between messages. The two zlib streams
 * belong to a worker (struct deflate_streams) and serve all its
 * connections, one whole message at a time.
 * A struct deflate_streams belongs to one worker thread. No sockets, no
 * event loop, no JSON. */
#ifndef WSFAN_DEFLATE_H
#define WSFAN_DEFLATE_H

#include <stddef.h>
#include <stdint.h>

struct frame;

#define DEFLATE_EXTENSION "permessage-deflate"
#define DEFLATE_ANSWER_MAX 112

/* Chooses the first acceptable permessage-deflate offer of header (the
 * Sec-WebSocket-Extensions value, repeated lines joined with ", "; NULL
 * when absent) and writes the value of the answer's
 * Sec-WebSocket-Extensions header into answer (NUL-terminated). Returns 1
 * when an offer was accepted, 0 when none was: no offer, a header that is
 * not a valid extension list (the whole header is declined), or offers
 * each with an unknown or repeated parameter, a malformed value, or a
 * server_max_window_bits under 15 (the shared frames use a 32 KiB
 * window). Other extensions are ignored. */
int deflate_negotiate(const char *header, char answer[DEFLATE_ANSWER_MAX]);

/* The most bytes a message of len bytes takes once compressed (zlib's
 * compressBound): the wire limit of a compressed client message whose
 * inflated form is held to len. */
size_t deflate_bound(size_t len);

struct deflate_streams;

/* A worker's streams; zlib's own state is allocated at first use (about
 * 200 KiB). NULL when out of memory. */
struct deflate_streams *deflate_streams_create(void);
void deflate_streams_destroy(struct deflate_streams *d);

enum {
    DEFLATE_OK = 0,
    DEFLATE_TOO_BIG = -1,  /* inflates past the limit */
    DEFLATE_BAD = -2,      /* not a valid deflate stream */
    DEFLATE_NOMEM = -3,
};

/* Inflates the payload of one compressed message (the 00 00 FF FF tail
 * that RFC 7692 section 7.2.2 strips is put back here) into *out, a
 * malloc'ed buffer of *out_len bytes that the caller frees. Stops as soon
 * as the output passes max: a message that inflates past it costs at
 * most max + 1 bytes. Returns DEFLATE_OK, DEFLATE_TOO_BIG, DEFLATE_BAD or
 * DEFLATE_NOMEM (*out is NULL unless DEFLATE_OK). */
int deflate_inflate(struct deflate_streams *d, const uint8_t *in, size_t len, size_t max,
                    uint8_t **out, size_t *out_len);

/* A final text frame with RSV1 set whose payload is text compressed on
 * its own (refs 1), or NULL when out of memory. */
struct frame *deflate_frame_create(struct deflate_streams *d, const void *text, size_t len);

#endif
