/* ws.c - RFC 6455 framing: the incremental client-frame parser, the encoder
 * of shared server frames and Sec-WebSocket-Accept; text is checked with
 * core/utf8.h.
 * Owns a parser's message buffer (allocated per message, freed once the
 * message is delivered) and the frames it creates until their last unref.
 * Runs on whichever worker thread owns the parser or frame; keeps no global
 * state. Does not touch sockets, queues or JSON. */
#include "codec/ws.h"
#include "codec/deflate.h"
#include "core/utf8.h"

#include <assert.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

/* ---- Parser ----------------------------------------------------------------
 * A frame is read in four steps, each collecting a fixed number of bytes
 * (hdr_need) before it is checked: the two base bytes, the 2- or 8-byte
 * extended length, the 4-byte mask, then the payload. */
enum parse_state {
    ST_BASE,    /* FIN, RSV, opcode, MASK, 7-bit length */
    ST_LENGTH,  /* 16- or 64-bit extended length */
    ST_MASK,    /* masking key */
    ST_PAYLOAD,
    ST_DONE,    /* after an error or a close frame: feed no more */
};

#define WS_CONTROL_MAX 125

/* What an empty text message's event points at: it has no buffer. */
static const uint8_t empty_message[1];

static int is_control(uint8_t op)
{
    return op & 0x8;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

static int fail(struct ws_parser *p, uint16_t code, uint16_t *close_code)
{
    p->state = ST_DONE;
    *close_code = code;
    return WS_PARSE_ERROR;
}

/* Copies n payload bytes from src to dst, unmasking them. offset is the
 * position of src[0] in the frame's payload, which picks the mask byte. */
static void unmask_copy(uint8_t *dst, const uint8_t *src, size_t n,
                        const uint8_t mask[4], uint64_t offset)
{
    uint8_t key[8];
    uint64_t k;
    size_t i;

    for (i = 0; i < sizeof(key); i++)
        key[i] = mask[(offset + i) & 3];
    memcpy(&k, key, sizeof(k));
    for (i = 0; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, src + i, sizeof(w));
        w ^= k;
        memcpy(dst + i, &w, sizeof(w));
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ key[i & 7];
}

/* The most bytes the message being read may take on the wire: a
 * compressed one is held to max_message once inflated. */
static size_t wire_limit(const struct ws_parser *p)
{
    return p->msg_compressed ? deflate_bound(p->max_message) : p->max_message;
}

/* Makes room for need bytes of message. The first frame of a message gets
 * exactly its length; later fragments grow the buffer geometrically, never
 * past the wire limit. need has been checked against it. */
static int msg_reserve(struct ws_parser *p, size_t need)
{
    size_t cap = need, limit = wire_limit(p);
    uint8_t *msg;

    if (need <= p->msg_cap)
        return 0;
    if (p->msg_cap > 0) {
        size_t twice = p->msg_cap > limit / 2 ? limit : p->msg_cap * 2;
        if (twice > cap)
            cap = twice;
    }
    msg = realloc(p->msg, cap);
    if (!msg)
        return -1;
    p->msg = msg;
    p->msg_cap = (uint32_t)cap;
    return 0;
}

/* Sets the frame's payload length. A data frame must also fit, with what the
 * message holds already, in its wire limit: checked before anything is read
 * or allocated. */
static int set_frame_len(struct ws_parser *p, uint64_t len, uint16_t *close_code)
{
    if (!is_control(p->opcode) && len > wire_limit(p) - p->msg_len)
        return fail(p, WS_CLOSE_TOO_BIG, close_code);
    p->frame_len = (uint32_t)len;
    return 0;
}

/* Frees the buffers of a message or control frame already handed out in
 * an event (a control frame still being read keeps its buffer). */
static void release_delivered(struct ws_parser *p)
{
    if (p->msg && p->msg_opcode == 0) {
        free(p->msg);
        p->msg = NULL;
        p->msg_cap = 0;
    }
    if (p->ctl && !(p->state == ST_PAYLOAD && is_control(p->opcode))) {
        free(p->ctl);
        p->ctl = NULL;
    }
}

/* Checks the two base bytes and decides how many header bytes follow. */
static int read_base(struct ws_parser *p, uint16_t *close_code)
{
    uint8_t b0 = p->hdr[0], b1 = p->hdr[1];
    uint8_t len7 = b1 & 0x7F;

    p->fin = b0 >> 7;
    p->opcode = b0 & 0x0F;
    /* RSV2 and RSV3 mean nothing here; RSV1 marks the first frame of a
     * compressed message once permessage-deflate is negotiated. */
    if (b0 & 0x30)
        return fail(p, WS_CLOSE_PROTOCOL, close_code);
    if ((b0 & WS_RSV1) && (!p->deflate || p->opcode == WS_OP_CONT || is_control(p->opcode)))
        return fail(p, WS_CLOSE_PROTOCOL, close_code);
    if (!(b1 & 0x80))
        return fail(p, WS_CLOSE_PROTOCOL, close_code);
    switch (p->opcode) {
    case WS_OP_CONT:
        if (p->msg_opcode == 0)
            return fail(p, WS_CLOSE_PROTOCOL, close_code);
        break;
    case WS_OP_TEXT:
    case WS_OP_BINARY:
        if (p->msg_opcode != 0)
            return fail(p, WS_CLOSE_PROTOCOL, close_code);
        if (p->opcode == WS_OP_BINARY)
            return fail(p, WS_CLOSE_UNSUPPORTED, close_code);
        p->msg_compressed = (b0 & WS_RSV1) != 0;
        break;
    case WS_OP_CLOSE:
    case WS_OP_PING:
    case WS_OP_PONG:
        if (!p->fin || len7 > WS_CONTROL_MAX)
            return fail(p, WS_CLOSE_PROTOCOL, close_code);
        break;
    default:
        return fail(p, WS_CLOSE_PROTOCOL, close_code);
    }
    if (len7 == 126 || len7 == 127) {
        p->hdr_need = len7 == 126 ? 4 : 10;
        p->state = ST_LENGTH;
        return 0;
    }
    p->hdr_need = 6;
    p->state = ST_MASK;
    return set_frame_len(p, len7, close_code);
}

/* Checks the extended length: minimal encoding and no 64th bit. */
static int read_length(struct ws_parser *p, uint16_t *close_code)
{
    uint64_t len = 0;

    for (uint8_t i = 2; i < p->hdr_need; i++)
        len = len << 8 | p->hdr[i];
    if (p->hdr_need == 4 && len < 126)
        return fail(p, WS_CLOSE_PROTOCOL, close_code);
    if (p->hdr_need == 10 && (len < 65536 || len >> 63))
        return fail(p, WS_CLOSE_PROTOCOL, close_code);
    p->hdr_need += 4;
    p->state = ST_MASK;
    return set_frame_len(p, len, close_code);
}

/* The header is complete: take the mask and prepare for the payload. */
static int read_mask(struct ws_parser *p, uint16_t *close_code)
{
    memcpy(p->mask, p->hdr + p->hdr_need - 4, 4);
    p->frame_pos = 0;
    p->state = ST_PAYLOAD;
    if (is_control(p->opcode)) {
        p->ctl_len = (uint8_t)p->frame_len;
        /* An empty one (most pings and pongs) needs no buffer: a flood of
         * them allocates nothing. */
        if (p->ctl_len && !p->ctl && !(p->ctl = malloc(WS_CONTROL_MAX)))
            return fail(p, WS_CLOSE_INTERNAL, close_code);
        return 0;
    }
    if (p->opcode == WS_OP_TEXT) {
        p->msg_opcode = WS_OP_TEXT;
        p->utf8 = UTF8_ACCEPT;
    }
    if (msg_reserve(p, p->msg_len + (size_t)p->frame_len) < 0)
        return fail(p, WS_CLOSE_INTERNAL, close_code);
    return 0;
}

/* Unmasks n payload bytes into the control buffer or the message, checking
 * text as it arrives so that bad UTF-8 fails at once. */
static int read_payload(struct ws_parser *p, const uint8_t *src, size_t n,
                        uint16_t *close_code)
{
    uint8_t *dst;

    if (is_control(p->opcode)) {
        dst = p->ctl + p->frame_pos;
        unmask_copy(dst, src, n, p->mask, p->frame_pos);
    } else {
        dst = p->msg + p->msg_len;
        unmask_copy(dst, src, n, p->mask, p->frame_pos);
        p->msg_len += (uint32_t)n;
        /* Compressed text is checked once it is inflated. */
        if (!p->msg_compressed && utf8_feed(&p->utf8, dst, n) < 0)
            return fail(p, WS_CLOSE_BAD_DATA, close_code);
    }
    p->frame_pos += (uint32_t)n;
    return 0;
}

/* Checks a complete close frame and reports it. */
static int close_event(struct ws_parser *p, struct ws_event *ev, uint16_t *close_code)
{
    uint8_t utf8 = UTF8_ACCEPT;

    p->state = ST_DONE;
    ev->type = WS_EV_CLOSE;
    ev->data = p->ctl ? p->ctl : empty_message;
    ev->len = 0;
    if (p->ctl_len == 0) {
        ev->close_code = WS_CLOSE_NO_STATUS;
        return WS_PARSE_EVENT;
    }
    if (p->ctl_len == 1)
        return fail(p, WS_CLOSE_PROTOCOL, close_code);
    ev->close_code = (uint16_t)(p->ctl[0] << 8 | p->ctl[1]);
    if (!ws_close_code_valid(ev->close_code))
        return fail(p, WS_CLOSE_PROTOCOL, close_code);
    if (utf8_feed(&utf8, p->ctl + 2, p->ctl_len - 2u) < 0 || !utf8_complete(utf8))
        return fail(p, WS_CLOSE_BAD_DATA, close_code);
    ev->data = p->ctl + 2;
    ev->len = p->ctl_len - 2u;
    return WS_PARSE_EVENT;
}

/* A compressed message is complete: replaces it with its inflated text,
 * which must not pass max_message, and checks that text. */
static int inflate_message(struct ws_parser *p, uint16_t *close_code)
{
    uint8_t *text;
    size_t len;
    int r = deflate_inflate(p->deflate, p->msg, p->msg_len, p->max_message, &text, &len);

    p->msg_compressed = 0;
    if (r == DEFLATE_TOO_BIG)
        return fail(p, WS_CLOSE_TOO_BIG, close_code);
    if (r == DEFLATE_BAD)
        return fail(p, WS_CLOSE_PROTOCOL, close_code);
    if (r != DEFLATE_OK)
        return fail(p, WS_CLOSE_INTERNAL, close_code);
    free(p->msg);
    p->msg = text;
    p->msg_len = p->msg_cap = (uint32_t)len;
    if (utf8_feed(&p->utf8, text, len) < 0)
        return fail(p, WS_CLOSE_BAD_DATA, close_code);
    return 0;
}

/* The current frame's payload is complete: report what it finished, if
 * anything. Returns WS_PARSE_NEED_MORE for a non-final fragment. */
static int frame_end(struct ws_parser *p, struct ws_event *ev, uint16_t *close_code)
{
    p->state = ST_BASE;
    p->hdr_len = 0;
    p->hdr_need = 2;
    switch (p->opcode) {
    case WS_OP_PING:
    case WS_OP_PONG:
        ev->type = p->opcode == WS_OP_PING ? WS_EV_PING : WS_EV_PONG;
        ev->data = p->ctl ? p->ctl : empty_message;
        ev->len = p->ctl_len;
        ev->close_code = 0;
        return WS_PARSE_EVENT;
    case WS_OP_CLOSE:
        return close_event(p, ev, close_code);
    default:
        if (!p->fin)
            return WS_PARSE_NEED_MORE;
        if (p->msg_compressed && inflate_message(p, close_code) < 0)
            return WS_PARSE_ERROR;
        if (!utf8_complete(p->utf8))
            return fail(p, WS_CLOSE_BAD_DATA, close_code);
        ev->type = WS_EV_TEXT;
        ev->data = p->msg ? p->msg : empty_message;
        ev->len = p->msg_len;
        ev->close_code = 0;
        /* The buffer stays until the next feed, which frees it. */
        p->msg_opcode = 0;
        p->msg_len = 0;
        return WS_PARSE_EVENT;
    }
}

void ws_parser_init(struct ws_parser *p, size_t max_message)
{
    memset(p, 0, sizeof(*p));
    p->state = ST_BASE;
    p->hdr_need = 2;
    p->utf8 = UTF8_ACCEPT;
    p->max_message = (uint32_t)(max_message < WS_MESSAGE_MAX ? max_message : WS_MESSAGE_MAX);
}

void ws_parser_use_deflate(struct ws_parser *p, struct deflate_streams *d)
{
    p->deflate = d;
}

void ws_parser_free(struct ws_parser *p)
{
    free(p->msg);
    p->msg = NULL;
    p->msg_len = p->msg_cap = 0;
    free(p->ctl);
    p->ctl = NULL;
}

int ws_parser_feed(struct ws_parser *p, const uint8_t *buf, size_t len,
                   size_t *consumed, struct ws_event *ev, uint16_t *close_code)
{
    size_t pos = 0;
    int r = 0;

    assert(p->state != ST_DONE);
    release_delivered(p);
    for (;;) {
        if (p->state == ST_PAYLOAD) {
            size_t n = (size_t)min_u64(len - pos, p->frame_len - p->frame_pos);
            if (n > 0) {
                r = read_payload(p, buf + pos, n, close_code);
                pos += n;
                if (r < 0)
                    break;
            }
            if (p->frame_pos < p->frame_len)
                break;
            r = frame_end(p, ev, close_code);
            if (r != WS_PARSE_NEED_MORE)
                break;
            continue;
        }
        if (pos == len)
            break;
        size_t n = p->hdr_need - p->hdr_len;
        if (n > len - pos)
            n = len - pos;
        memcpy(p->hdr + p->hdr_len, buf + pos, n);
        p->hdr_len += (uint8_t)n;
        pos += n;
        if (p->hdr_len < p->hdr_need)
            break;
        switch (p->state) {
        case ST_BASE:
            r = read_base(p, close_code);
            break;
        case ST_LENGTH:
            r = read_length(p, close_code);
            break;
        default:
            r = read_mask(p, close_code);
            break;
        }
        if (r < 0)
            break;
    }
    *consumed = pos;
    return r;
}

int ws_close_code_valid(uint16_t code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

/* ---- Frames --------------------------------------------------------------- */

size_t ws_frame_header_len(size_t len)
{
    if (len < 126)
        return 2;
    if (len <= 0xFFFF)
        return 4;
    return 10;
}

size_t ws_frame_header_write(uint8_t *out, enum ws_opcode op, size_t len)
{
    size_t n = ws_frame_header_len(len);

    assert((unsigned)op <= 0xF);
    out[0] = (uint8_t)(0x80 | op);
    if (n == 2) {
        out[1] = (uint8_t)len;
    } else if (n == 4) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
    } else {
        out[1] = 127;
        for (int i = 0; i < 8; i++)
            out[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    }
    return n;
}

struct frame *ws_frame_create(enum ws_opcode op, const void *payload, size_t len)
{
    size_t hdr = ws_frame_header_len(len);
    struct frame *f;

    if (len > UINT32_MAX - hdr)
        return NULL;
    f = malloc(sizeof(*f) + hdr + len);
    if (!f)
        return NULL;
    f->refs = 1;
    f->len = (uint32_t)(hdr + len);
    ws_frame_header_write(f->bytes, op, len);
    if (len > 0)
        memcpy(f->bytes + hdr, payload, len);
    return f;
}

struct frame *ws_close_frame_create(uint16_t code, const char *reason)
{
    uint8_t payload[WS_CONTROL_MAX];
    size_t n = reason ? strlen(reason) : 0;

    assert(code == WS_CLOSE_NO_STATUS || ws_close_code_valid(code));
    if (code == WS_CLOSE_NO_STATUS)
        return ws_frame_create(WS_OP_CLOSE, NULL, 0);
    /* Cut at a character boundary: back up over continuation bytes. */
    if (n > WS_CONTROL_MAX - 2) {
        n = WS_CONTROL_MAX - 2;
        while (n > 0 && ((uint8_t)reason[n] & 0xC0) == 0x80)
            n--;
    }
    payload[0] = (uint8_t)(code >> 8);
    payload[1] = (uint8_t)code;
    if (n > 0)
        memcpy(payload + 2, reason, n);
    return ws_frame_create(WS_OP_CLOSE, payload, n + 2);
}

void frame_unref(struct frame *f)
{
    assert(f->refs > 0);
    if (--f->refs == 0)
        free(f);
}

/* ---- Handshake ------------------------------------------------------------- */

#define WS_KEY_LEN 24
static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

static int is_base64(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '/';
}

int ws_key_valid(const char *key, size_t len)
{
    if (len != WS_KEY_LEN || key[22] != '=' || key[23] != '=')
        return 0;
    for (size_t i = 0; i < 22; i++)
        if (!is_base64(key[i]))
            return 0;
    return 1;
}

/* The key must have passed ws_key_valid (the handshake refuses others), so it
 * fits the fixed buffer; a longer one is cut rather than overflow it. */
void ws_accept_key(const char *key, size_t len, char out[29])
{
    uint8_t buf[WS_KEY_LEN + sizeof(ws_guid) - 1];
    uint8_t digest[SHA_DIGEST_LENGTH];

    assert(len == WS_KEY_LEN);
    if (len > WS_KEY_LEN)
        len = WS_KEY_LEN;
    memcpy(buf, key, len);
    memcpy(buf + len, ws_guid, sizeof(ws_guid) - 1);
    SHA1(buf, len + sizeof(ws_guid) - 1, digest);
    EVP_EncodeBlock((unsigned char *)out, digest, sizeof(digest));
}

int ws_handshake_prepare(void)
{
    uint8_t digest[SHA_DIGEST_LENGTH];
    return SHA1((const uint8_t *)ws_guid, sizeof(ws_guid) - 1, digest) ? 0 : -1;
}
