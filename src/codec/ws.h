/* ws.h - RFC 6455: the incremental client-frame parser, the server-frame
 * encoder into shared reference-counted frames and the
 * Sec-WebSocket-Accept computation.
 * Pure functions over caller-owned state: no sockets, no event loop, no JSON.
 * A parser and the frames it builds belong to one worker thread; frame
 * reference counts are not atomic. */
#ifndef WSFAN_WS_H
#define WSFAN_WS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum ws_close_code {
    WS_CLOSE_NORMAL = 1000,
    WS_CLOSE_GOING_AWAY = 1001,
    WS_CLOSE_PROTOCOL = 1002,
    WS_CLOSE_UNSUPPORTED = 1003, /* binary frames */
    WS_CLOSE_NO_STATUS = 1005,   /* never on the wire */
    WS_CLOSE_ABNORMAL = 1006,    /* never on the wire */
    WS_CLOSE_BAD_DATA = 1007,    /* invalid UTF-8 */
    WS_CLOSE_POLICY = 1008,
    WS_CLOSE_TOO_BIG = 1009,
    WS_CLOSE_INTERNAL = 1011,
    WS_CLOSE_TRY_AGAIN = 1013, /* overloaded or too slow a reader */
};

/* The first header byte's RSV1 bit: a compressed message (RFC 7692). */
#define WS_RSV1 0x40

enum ws_opcode {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

/* ---- Parser --------------------------------------------------------------- */

enum ws_event_type {
    WS_EV_TEXT,  /* a complete, reassembled, UTF-8-valid text message */
    WS_EV_PING,  /* answer with a pong carrying the same payload */
    WS_EV_PONG,
    WS_EV_CLOSE, /* close_code is the peer's code, or 1005 when it sent none */
};

struct ws_event {
    enum ws_event_type type;
    const uint8_t *data; /* borrowed: valid until the next ws_parser_feed */
    size_t len;
    uint16_t close_code;
};

/* Result of ws_parser_feed. */
enum {
    WS_PARSE_EVENT = 1,      /* *ev is filled in */
    WS_PARSE_NEED_MORE = 0,  /* every byte consumed, no event yet */
    WS_PARSE_ERROR = -1,     /* protocol violation: close with *close_code */
};

struct deflate_streams;

/* Embedded in struct conn; its fields are private to ws.c. Both buffers
 * are allocated on demand, so that an idle connection carries neither: the
 * message buffer when a data frame arrives, the control-frame buffer (125
 * bytes) when a control frame does; each is released at the feed after
 * its event was delivered. */
struct ws_parser {
    uint8_t state;
    uint8_t opcode;          /* of the frame being read */
    uint8_t msg_opcode;      /* of the message being reassembled, 0 if none */
    uint8_t fin;
    uint8_t hdr_len;         /* header bytes collected so far */
    uint8_t hdr_need;        /* header bytes needed */
    uint8_t hdr[14];
    uint8_t mask[4];
    uint8_t ctl_len;
    uint8_t msg_compressed;  /* the message being reassembled had RSV1 */
    uint8_t utf8;            /* core/utf8.h's state of the text so far */
    /* Lengths fit in 32 bits: every one is held to the wire limit, at most
     * deflate_bound(WS_MESSAGE_MAX), before it is stored. */
    uint32_t frame_len;      /* payload length of the current frame */
    uint32_t frame_pos;      /* payload bytes of it read so far */
    uint32_t max_message;
    uint32_t msg_len, msg_cap;
    uint8_t *msg;            /* reassembled message (heap, on demand) */
    uint8_t *ctl;            /* a control frame's payload (heap, on demand) */
    struct deflate_streams *deflate; /* the worker's, once permessage-deflate
                                        is negotiated; NULL without it */
};

/* The largest max_message: a parser's lengths are 32-bit. */
#define WS_MESSAGE_MAX (1u << 30)

/* Prepares p for a new connection. max_message bounds a whole reassembled
 * message (WS_CLOSE_TOO_BIG past it); at most WS_MESSAGE_MAX. */
void ws_parser_init(struct ws_parser *p, size_t max_message);

/* The connection negotiated permessage-deflate: a message whose first
 * frame has RSV1 is inflated with d (borrowed; it outlives p) once it is
 * complete, and held to max_message inflated (WS_CLOSE_TOO_BIG past it,
 * before more than max_message bytes are spent on it). Its frames on the
 * wire may take deflate_bound(max_message) bytes. */
void ws_parser_use_deflate(struct ws_parser *p, struct deflate_streams *d);

/* True when the connection negotiated permessage-deflate: it takes
 * compressed frames. */
static inline int ws_parser_deflates(const struct ws_parser *p) { return p->deflate != NULL; }

/* Releases the message buffer. p can be initialized again afterwards. */
void ws_parser_free(struct ws_parser *p);

/* Consumes bytes of client frames from buf. Stops after one event.
 * *consumed is set to the bytes used (<= len) in every case.
 * Returns WS_PARSE_EVENT (ev filled; its data is valid until the next call),
 * WS_PARSE_NEED_MORE (all of buf consumed) or WS_PARSE_ERROR with
 * *close_code set to the code to close with (1002, 1003, 1007 or 1009;
 * 1011 when out of memory). RSV1 is a protocol error (1002) on a control
 * frame, a continuation frame or without ws_parser_use_deflate; a
 * compressed message that does not inflate is one too.
 * Never reads past buf+len; checks each length before it allocates.
 * After an error or a close event the parser must not be fed again. */
int ws_parser_feed(struct ws_parser *p, const uint8_t *buf, size_t len,
                   size_t *consumed, struct ws_event *ev, uint16_t *close_code);

/* True when the code may appear in a close frame on the wire
 * (1000-1003, 1007-1011, 1012-1014, 3000-4999). */
int ws_close_code_valid(uint16_t code);

/* ---- Frames ----------------------------------------------------------------
 * A server frame (unmasked), built once and shared by every connection that
 * sends it: each output queue holds one reference. */
struct frame {
    uint32_t refs;
    uint32_t len;      /* bytes in bytes[] */
    uint8_t bytes[];   /* header then payload */
};

/* Builds a final frame of the given opcode around payload (copied).
 * Returns a frame with one reference, or NULL when out of memory. */
struct frame *ws_frame_create(enum ws_opcode op, const void *payload, size_t len);

/* Builds a close frame carrying code and reason (reason truncated to fit
 * 125 bytes). Code 1005 builds a close frame with an empty payload. */
struct frame *ws_close_frame_create(uint16_t code, const char *reason);

/* Size of the frame header for a payload of len bytes (2, 4 or 10). */
size_t ws_frame_header_len(size_t len);

/* Writes the header of a final, unmasked frame into out (at least 10 bytes)
 * and returns its length. Lets a caller serialize the payload straight after
 * the header in one allocation. */
size_t ws_frame_header_write(uint8_t *out, enum ws_opcode op, size_t len);

static inline struct frame *frame_ref(struct frame *f) { f->refs++; return f; }
void frame_unref(struct frame *f);

/* ---- Handshake ------------------------------------------------------------- */

/* True when key is a valid Sec-WebSocket-Key: base64 of exactly 16 bytes. */
int ws_key_valid(const char *key, size_t len);

/* Writes the Sec-WebSocket-Accept value for key (NUL-terminated, 28 chars). */
void ws_accept_key(const char *key, size_t len, char out[29]);

/* Runs libcrypto's SHA-1 once, at start, before other threads: OpenSSL 3
 * loads its provider (about 2 MB of code and tables) at the first digest,
 * which the first handshake would otherwise pay for. Returns 0, or -1 when
 * libcrypto cannot digest. */
int ws_handshake_prepare(void);

#endif
