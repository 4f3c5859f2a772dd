/* fuzz_ws.c - libFuzzer target for the ws.c client-frame parser.
 * Input: byte 0 picks the chunk sizes (and, bit 0x40, a connection that
 * negotiated permessage-deflate), byte 1 picks max_message, the rest is
 * the client's byte stream. The stream is fed in chunks and all at once, the
 * way a connection would (until an error or a close); both runs must give
 * the same events, and every event must keep the parser's promises. Text
 * and close events also go through the frame encoder. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/deflate.h"
#include "codec/ws.h"
#include "core/utf8.h"

static struct deflate_streams *streams;

struct outcome {
    uint64_t hash; /* FNV-1a over every event */
    size_t events;
    int error;
    uint16_t close_code;
    size_t consumed;
};

static void require(int cond)
{
    if (!cond)
        abort();
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;

    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * UINT64_C(0x100000001b3);
    return h;
}

static int utf8_ok(const uint8_t *p, size_t n)
{
    uint8_t st = UTF8_ACCEPT;

    return utf8_feed(&st, p, n) == 0 && utf8_complete(st);
}

static void check_text_frame(const struct ws_event *ev)
{
    struct frame *f = ws_frame_create(WS_OP_TEXT, ev->data, ev->len);
    size_t hdr = ws_frame_header_len(ev->len);

    require(f != NULL);
    require(f->len == hdr + ev->len);
    require(f->bytes[0] == 0x81);
    require(memcmp(f->bytes + hdr, ev->data, ev->len) == 0);
    frame_unref(f);
}

static void check_close_frame(const struct ws_event *ev)
{
    char reason[126];
    struct frame *f;

    memcpy(reason, ev->data, ev->len);
    reason[ev->len] = '\0';
    f = ws_close_frame_create(ev->close_code, reason);
    require(f != NULL);
    require(f->len >= 2 && f->len <= 127);
    require(f->bytes[0] == 0x88 && f->bytes[1] == f->len - 2);
    if (f->len > 2)
        require(utf8_ok(f->bytes + 4, f->len - 4u));
    frame_unref(f);
}

static void check_event(const struct ws_event *ev, size_t max_message)
{
    require(ev->data != NULL);
    switch (ev->type) {
    case WS_EV_TEXT:
        require(ev->len <= max_message);
        require(utf8_ok(ev->data, ev->len));
        check_text_frame(ev);
        break;
    case WS_EV_PING:
    case WS_EV_PONG:
        require(ev->len <= 125);
        break;
    case WS_EV_CLOSE:
        if (ev->close_code == WS_CLOSE_NO_STATUS) {
            require(ev->len == 0);
        } else {
            require(ws_close_code_valid(ev->close_code));
            require(ev->len <= 123 && utf8_ok(ev->data, ev->len));
        }
        check_close_frame(ev);
        break;
    default:
        require(0);
    }
}

/* Feeds buf in chunks of 1..max_chunk bytes drawn from seed (the whole
 * buffer at once when max_chunk is 0). */
static struct outcome run(const uint8_t *buf, size_t len, size_t max_message, uint32_t seed,
                          uint32_t max_chunk, struct deflate_streams *d)
{
    struct outcome out = {.hash = UINT64_C(0xcbf29ce484222325)};
    struct ws_parser p;
    size_t start = 0;

    ws_parser_init(&p, max_message);
    if (d)
        ws_parser_use_deflate(&p, d);
    while (start < len) {
        size_t end = len;
        if (max_chunk > 0) {
            seed = seed * 1103515245u + 12345u;
            size_t chunk = 1 + (seed >> 16) % max_chunk;
            if (chunk < len - start)
                end = start + chunk;
        }
        while (start < end) {
            struct ws_event ev;
            uint16_t code = 0;
            size_t used = SIZE_MAX;
            int r = ws_parser_feed(&p, buf + start, end - start, &used, &ev, &code);
            require(used <= end - start);
            start += used;
            out.consumed = start;
            if (r == WS_PARSE_ERROR) {
                require(code == WS_CLOSE_PROTOCOL || code == WS_CLOSE_UNSUPPORTED ||
                        code == WS_CLOSE_BAD_DATA || code == WS_CLOSE_TOO_BIG);
                out.error = 1;
                out.close_code = code;
                goto done;
            }
            if (r == WS_PARSE_NEED_MORE) {
                require(start == end);
                break;
            }
            require(r == WS_PARSE_EVENT);
            check_event(&ev, max_message);
            uint8_t type = (uint8_t)ev.type;
            out.hash = fnv(out.hash, &type, 1);
            out.hash = fnv(out.hash, &ev.close_code, sizeof(ev.close_code));
            out.hash = fnv(out.hash, &ev.len, sizeof(ev.len));
            out.hash = fnv(out.hash, ev.data, ev.len);
            out.events++;
            if (ev.type == WS_EV_CLOSE)
                goto done;
        }
    }
done:
    ws_parser_free(&p);
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct outcome whole, chunked, bytewise;
    size_t max_message;

    if (!streams)
        streams = deflate_streams_create();
    require(streams != NULL);
    if (size < 2)
        return 0;
    struct deflate_streams *d = data[0] & 0x40 ? streams : NULL;
    /* 0..4064, or 128 KiB so that 64-bit lengths can be accepted too. */
    max_message = data[1] == 0xFF ? (size_t)1 << 17 : (size_t)data[1] * 16;
    whole = run(data + 2, size - 2, max_message, 0, 0, d);
    chunked = run(data + 2, size - 2, max_message, data[0], 1 + (data[0] & 0x1F), d);
    bytewise = run(data + 2, size - 2, max_message, 0, 1, d);
    require(whole.events == chunked.events && whole.hash == chunked.hash);
    require(whole.events == bytewise.events && whole.hash == bytewise.hash);
    require(whole.error == chunked.error && whole.close_code == chunked.close_code);
    require(whole.error == bytewise.error && whole.close_code == bytewise.close_code);
    if (!whole.error) {
        require(whole.consumed == chunked.consumed);
        require(whole.consumed == bytewise.consumed);
    }
    return 0;
}
