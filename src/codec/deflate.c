/* deflate.c - permessage-deflate (RFC 7692): the offer parser and answer,
 * the inflation of a client message under a limit and the compression of
 * shared server frames, with zlib.
 * Owns a worker's two zlib streams (allocated at first use, reset before
 * each message: no context is taken over between messages) and the
 * buffers it returns until the caller takes them.
 * Runs on the worker that owns the streams; the offer parser is pure and
 * runs anywhere. Does not touch sockets, queues or JSON. */
#include "codec/deflate.h"
#include "codec/ws.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

/* ---- the offer -------------------------------------------------------------
 * Sec-WebSocket-Extensions = 1#( token *( OWS ";" OWS token [ "=" ( token /
 * quoted-string ) ] ) ), RFC 6455 section 9.1, with the empty list
 * elements of RFC 9110's #rule allowed. */

/* The window the server compresses with, in bits: 32 KiB. */
#define SERVER_WINDOW_BITS 15

struct scan {
    const char *p;
};

static int is_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static void skip_ows(struct scan *s)
{
    while (*s->p == ' ' || *s->p == '\t')
        s->p++;
}

/* A token into *tok, *len. Returns -1 when there is none here. */
static int scan_token(struct scan *s, const char **tok, size_t *len)
{
    const char *start = s->p;
    while (is_tchar(*s->p))
        s->p++;
    *tok = start;
    *len = (size_t)(s->p - start);
    return *len ? 0 : -1;
}

/* A token or a quoted-string; *val and *len are its text, quotes excluded
 * (escapes are left in: a value with one is never a valid number).
 * Returns -1 when there is neither. */
static int scan_value(struct scan *s, const char **val, size_t *len)
{
    if (*s->p != '"')
        return scan_token(s, val, len);
    const char *start = ++s->p;
    for (; *s->p != '"'; s->p++) {
        if (!*s->p || (unsigned char)*s->p < 0x20 || *s->p == 0x7F)
            return -1;
        if (*s->p == '\\' && !*++s->p)
            return -1;
    }
    *val = start;
    *len = (size_t)(s->p++ - start);
    return 0;
}

/* One offer's parameters; bad marks an offer the server declines. */
struct offer {
    uint8_t server_no_context_takeover, client_no_context_takeover;
    uint8_t server_max_window_bits, client_max_window_bits; /* 0: absent */
    uint8_t bad;
};

static int name_is(const char *s, size_t len, const char *name)
{
    return strlen(name) == len && !strncasecmp(s, name, len);
}

/* A window size: a decimal from 8 to 15 without a leading zero. Returns
 * it, or 0 for anything else. */
static uint8_t window_bits(const char *val, size_t len)
{
    if (len == 1 && val[0] >= '8' && val[0] <= '9')
        return (uint8_t)(val[0] - '0');
    if (len == 2 && val[0] == '1' && val[1] >= '0' && val[1] <= '5')
        return (uint8_t)(10 + val[1] - '0');
    return 0;
}

/* Records one parameter of a permessage-deflate offer (RFC 7692 section
 * 7.1); an unknown or repeated one, or a bad value, marks it bad. val is
 * NULL when the parameter has no value. */
static void offer_param(struct offer *o, const char *name, size_t name_len, const char *val, size_t val_len)
{
    uint8_t *flag = NULL;
    if (name_is(name, name_len, "server_no_context_takeover"))
        flag = &o->server_no_context_takeover;
    else if (name_is(name, name_len, "client_no_context_takeover"))
        flag = &o->client_no_context_takeover;
    if (flag) {
        if (*flag || val)
            o->bad = 1;
        *flag = 1;
        return;
    }
    uint8_t *bits = NULL;
    if (name_is(name, name_len, "server_max_window_bits"))
        bits = &o->server_max_window_bits;
    else if (name_is(name, name_len, "client_max_window_bits"))
        bits = &o->client_max_window_bits;
    if (!bits || *bits) {
        o->bad = 1;
        return;
    }
    /* client_max_window_bits may come without a value: the client can
     * take a limit. server_max_window_bits always has one. */
    if (!val && bits == &o->client_max_window_bits) {
        *bits = SERVER_WINDOW_BITS;
        return;
    }
    *bits = val ? window_bits(val, val_len) : 0;
    if (!*bits)
        o->bad = 1;
}

/* The server's shared frames are compressed with a 32 KiB window: an
 * offer that asks for a smaller one cannot take them. */
static int offer_acceptable(const struct offer *o)
{
    return !o->bad && (!o->server_max_window_bits || o->server_max_window_bits == SERVER_WINDOW_BITS);
}

int deflate_negotiate(const char *header, char answer[DEFLATE_ANSWER_MAX])
{
    struct offer chosen = {0};
    int found = 0;
    if (!header)
        return 0;
    struct scan s = {header};
    for (;;) {
        skip_ows(&s);
        if (*s.p == ',') {
            s.p++;
            continue;
        }
        if (!*s.p)
            break;
        const char *name, *pname, *val;
        size_t name_len, pname_len, val_len;
        if (scan_token(&s, &name, &name_len) < 0)
            return 0;
        struct offer o = {0};
        for (skip_ows(&s); *s.p == ';'; skip_ows(&s)) {
            s.p++;
            skip_ows(&s);
            if (scan_token(&s, &pname, &pname_len) < 0)
                return 0;
            skip_ows(&s);
            val = NULL;
            val_len = 0;
            if (*s.p == '=') {
                s.p++;
                skip_ows(&s);
                if (scan_value(&s, &val, &val_len) < 0)
                    return 0;
            }
            offer_param(&o, pname, pname_len, val, val_len);
        }
        if (*s.p && *s.p != ',')
            return 0;
        if (!found && name_is(name, name_len, DEFLATE_EXTENSION) && offer_acceptable(&o)) {
            chosen = o;
            found = 1;
        }
    }
    if (!found)
        return 0;
    /* An offer of server_max_window_bits must be answered with it (RFC 7692
     * section 7.1.2.1); client_max_window_bits needs no answer, as any
     * window inflates with the server's 32 KiB one. */
    snprintf(answer, DEFLATE_ANSWER_MAX, "%s; server_no_context_takeover; client_no_context_takeover%s",
             DEFLATE_EXTENSION, chosen.server_max_window_bits ? "; server_max_window_bits=15" : "");
    return 1;
}

size_t deflate_bound(size_t len)
{
    return len + (len >> 12) + (len >> 14) + (len >> 25) + 13;
}

/* ---- the streams ------------------------------------------------------------ */

/* zlib's default level: an event is compressed once per worker, however
 * many recipients share it, so the smaller frame is worth the time. A
 * memory level of 5 (zlib's default is 8) shrinks the hash table that each
 * message's reset clears from 64 to 8 KiB: a quarter fewer instructions
 * per event of 1 KiB, the same output (docs/benchmarks.md). */
#define COMPRESSION_LEVEL 6
#define COMPRESSION_MEM_LEVEL 5

struct deflate_streams {
    uint8_t inflate_ready, deflate_ready;
    z_stream inflate, deflate;
};

struct deflate_streams *deflate_streams_create(void)
{
    return calloc(1, sizeof(struct deflate_streams));
}

void deflate_streams_destroy(struct deflate_streams *d)
{
    if (!d)
        return;
    if (d->inflate_ready)
        inflateEnd(&d->inflate);
    if (d->deflate_ready)
        deflateEnd(&d->deflate);
    free(d);
}

/* The tail that ends every compressed message, stripped on the wire. */
static const uint8_t sync_tail[4] = {0x00, 0x00, 0xFF, 0xFF};

static int inflate_ready(struct deflate_streams *d)
{
    if (d->inflate_ready)
        return inflateReset(&d->inflate) == Z_OK ? 0 : -1;
    if (inflateInit2(&d->inflate, -SERVER_WINDOW_BITS) != Z_OK)
        return -1;
    d->inflate_ready = 1;
    return 0;
}

/* Grows *buf to the next capacity: doubled, at most limit bytes. */
static int grow(uint8_t **buf, size_t *cap, size_t limit)
{
    size_t next = *cap > limit / 2 ? limit : *cap * 2;
    uint8_t *p = realloc(*buf, next);
    if (!p)
        return -1;
    *buf = p;
    *cap = next;
    return 0;
}

int deflate_inflate(struct deflate_streams *d, const uint8_t *in, size_t len, size_t max,
                    uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (len > UINT_MAX || max >= UINT_MAX)
        return DEFLATE_TOO_BIG;
    if (inflate_ready(d) < 0)
        return DEFLATE_NOMEM;
    /* One byte past max tells a message that is too big. Text compresses
     * to about a quarter: start there, and double. */
    size_t limit = max + 1, cap = len < limit / 4 ? 4 * len + 64 : limit, used = 0;
    if (cap > limit)
        cap = limit;
    uint8_t *buf = malloc(cap);
    if (!buf)
        return DEFLATE_NOMEM;
    z_stream *z = &d->inflate;
    z->next_in = (Bytef *)in;
    z->avail_in = (uInt)len;
    int tail_fed = 0, r = DEFLATE_OK;
    for (;;) {
        if (!z->avail_in && !tail_fed) {
            z->next_in = (Bytef *)sync_tail;
            z->avail_in = sizeof sync_tail;
            tail_fed = 1;
        }
        if (used == cap && grow(&buf, &cap, limit) < 0) {
            r = DEFLATE_NOMEM;
            break;
        }
        z->next_out = buf + used;
        z->avail_out = (uInt)(cap - used);
        int zr = inflate(z, Z_SYNC_FLUSH);
        used = cap - z->avail_out;
        if (used > max) {
            r = DEFLATE_TOO_BIG;
            break;
        }
        if (zr == Z_STREAM_END)
            break;
        if (zr == Z_MEM_ERROR) {
            r = DEFLATE_NOMEM;
            break;
        }
        if (zr != Z_OK && zr != Z_BUF_ERROR) {
            r = DEFLATE_BAD;
            break;
        }
        /* Everything is in and the output has room: nothing is pending. */
        if (!z->avail_in && tail_fed && z->avail_out)
            break;
        /* No progress with input left and room for output. */
        if (zr == Z_BUF_ERROR && z->avail_in && z->avail_out) {
            r = DEFLATE_BAD;
            break;
        }
    }
    if (r != DEFLATE_OK) {
        free(buf);
        return r;
    }
    *out = buf;
    *out_len = used;
    return DEFLATE_OK;
}

static int deflate_ready(struct deflate_streams *d)
{
    if (d->deflate_ready)
        return deflateReset(&d->deflate) == Z_OK ? 0 : -1;
    if (deflateInit2(&d->deflate, COMPRESSION_LEVEL, Z_DEFLATED, -SERVER_WINDOW_BITS, COMPRESSION_MEM_LEVEL,
                     Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    d->deflate_ready = 1;
    return 0;
}

struct frame *deflate_frame_create(struct deflate_streams *d, const void *text, size_t len)
{
    /* The payload is compressed behind room for the largest header, then
     * moved up against the header once its length is known. A sync flush
     * wants a few bytes past deflateBound's (zlib.h, deflate()). */
    enum { HDR_MAX = 10, FLUSH_ROOM = 16 };
    if (len > UINT_MAX / 2 || deflate_ready(d) < 0)
        return NULL;
    size_t bound = deflateBound(&d->deflate, (uLong)len) + FLUSH_ROOM;
    if (bound > UINT32_MAX - HDR_MAX)
        return NULL;
    struct frame *f = malloc(sizeof *f + HDR_MAX + bound);
    if (!f)
        return NULL;
    z_stream *z = &d->deflate;
    z->next_in = (Bytef *)text;
    z->avail_in = (uInt)len;
    z->next_out = f->bytes + HDR_MAX;
    z->avail_out = (uInt)bound;
    if (deflate(z, Z_SYNC_FLUSH) != Z_OK || z->avail_in || bound - z->avail_out < sizeof sync_tail) {
        free(f);
        return NULL;
    }
    /* A sync flush ends with the empty stored block 00 00 FF FF, which the
     * wire leaves out (RFC 7692 section 7.2.1). */
    size_t n = bound - z->avail_out - sizeof sync_tail;
    size_t hdr = ws_frame_header_write(f->bytes, WS_OP_TEXT, n);
    f->bytes[0] |= WS_RSV1;
    memmove(f->bytes + hdr, f->bytes + HDR_MAX, n);
    f->refs = 1;
    f->len = (uint32_t)(hdr + n);
    struct frame *shrunk = realloc(f, sizeof *f + f->len);
    return shrunk ? shrunk : f;
}
