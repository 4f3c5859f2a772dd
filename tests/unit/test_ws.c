/* test_ws.c - unit tests of ws.c: the client-frame parser (every malformed
 * frame gets its close code; any split of the input yields the same events),
 * the UTF-8 validator of core/utf8.c (its cases serve the parser's tests
 * too), the server-frame encoder and Sec-WebSocket-Accept. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "codec/deflate.h"
#include "codec/ws.h"
#include "core/utf8.h"

/* ---- Building client frames --------------------------------------------- */

static const uint8_t test_mask[4] = {0x37, 0xfa, 0x21, 0x3d};

enum {
    F_FIN = 1 << 0,
    F_NOMASK = 1 << 1,
    F_RSV1 = 1 << 2,
    F_RSV2 = 1 << 3,
    F_RSV3 = 1 << 4,
    F_LEN16 = 1 << 5, /* force the 16-bit length form */
    F_LEN64 = 1 << 6, /* force the 64-bit length form */
};

/* Writes the header of a client frame announcing len payload bytes (masked
 * with test_mask unless F_NOMASK) and returns its size. */
static size_t client_header(uint8_t *out, unsigned flags, uint8_t op, uint64_t len)
{
    uint8_t mask_bit = (flags & F_NOMASK) ? 0 : 0x80;
    size_t n = 2;

    out[0] = (uint8_t)(op | ((flags & F_FIN) ? 0x80 : 0) | ((flags & F_RSV1) ? 0x40 : 0) |
                       ((flags & F_RSV2) ? 0x20 : 0) | ((flags & F_RSV3) ? 0x10 : 0));
    if ((flags & F_LEN64) || len > 0xFFFF) {
        out[1] = mask_bit | 127;
        for (int i = 0; i < 8; i++)
            out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
        n = 10;
    } else if ((flags & F_LEN16) || len >= 126) {
        out[1] = mask_bit | 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        n = 4;
    } else {
        out[1] = (uint8_t)(mask_bit | len);
    }
    if (mask_bit) {
        memcpy(out + n, test_mask, 4);
        n += 4;
    }
    return n;
}

/* Writes a whole client frame (header, then the masked payload). */
static size_t client_frame(uint8_t *out, unsigned flags, uint8_t op, const void *payload,
                           size_t len)
{
    size_t n = client_header(out, flags, op, len);
    const uint8_t *src = payload;

    for (size_t i = 0; i < len; i++)
        out[n + i] = src[i] ^ ((flags & F_NOMASK) ? 0 : test_mask[i & 3]);
    return n + len;
}

static size_t text_frame(uint8_t *out, const char *s)
{
    return client_frame(out, F_FIN, WS_OP_TEXT, s, strlen(s));
}

/* ---- Feeding a stream and recording what happens ------------------------ */

#define TRACE_MAX 16
#define TRACE_DATA 512

struct trace_event {
    enum ws_event_type type;
    uint16_t close_code;
    size_t len;
    uint8_t data[TRACE_DATA]; /* the first TRACE_DATA bytes */
};

struct trace {
    size_t n;
    struct trace_event ev[TRACE_MAX];
    int error;
    uint16_t close_code;
    size_t consumed;
};

static void trace_add(struct trace *t, const struct ws_event *ev)
{
    struct trace_event *te;

    assert_true(t->n < TRACE_MAX);
    assert_non_null(ev->data);
    te = &t->ev[t->n++];
    te->type = ev->type;
    te->close_code = ev->type == WS_EV_CLOSE ? ev->close_code : 0;
    te->len = ev->len;
    memcpy(te->data, ev->data, ev->len < TRACE_DATA ? ev->len : TRACE_DATA);
}

/* The streams of the parsers run() makes: set while a test plays a
 * connection that negotiated permessage-deflate, else NULL. */
static struct deflate_streams *run_deflate;

/* Feeds buf the way a connection would, in pieces of at most chunk bytes
 * with an extra cut at split, until an error, a close or the end. */
static void run(struct trace *t, const uint8_t *buf, size_t len, size_t max_message,
                size_t chunk, size_t split)
{
    struct ws_parser p;
    size_t start = 0;

    memset(t, 0, sizeof(*t));
    ws_parser_init(&p, max_message);
    if (run_deflate)
        ws_parser_use_deflate(&p, run_deflate);
    while (start < len) {
        size_t end = len - start > chunk ? start + chunk : len;
        if (split > start && split < end)
            end = split;
        while (start < end) {
            struct ws_event ev;
            uint16_t code = 0;
            size_t used = SIZE_MAX;
            int r = ws_parser_feed(&p, buf + start, end - start, &used, &ev, &code);
            assert_true(used <= end - start);
            start += used;
            t->consumed = start;
            if (r == WS_PARSE_ERROR) {
                t->error = 1;
                t->close_code = code;
                goto done;
            }
            if (r == WS_PARSE_NEED_MORE) {
                assert_int_equal(start, end);
                break;
            }
            assert_int_equal(r, WS_PARSE_EVENT);
            trace_add(t, &ev);
            if (ev.type == WS_EV_CLOSE)
                goto done;
        }
    }
done:
    ws_parser_free(&p);
}

static void run_whole(struct trace *t, const uint8_t *buf, size_t len, size_t max_message)
{
    run(t, buf, len, max_message, SIZE_MAX, 0);
}

static void assert_same_trace(const struct trace *a, const struct trace *b)
{
    assert_int_equal(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        assert_int_equal(a->ev[i].type, b->ev[i].type);
        assert_int_equal(a->ev[i].close_code, b->ev[i].close_code);
        assert_int_equal(a->ev[i].len, b->ev[i].len);
        assert_memory_equal(a->ev[i].data, b->ev[i].data,
                            a->ev[i].len < TRACE_DATA ? a->ev[i].len : TRACE_DATA);
    }
    assert_int_equal(a->error, b->error);
    assert_int_equal(a->close_code, b->close_code);
    /* Where an error is found inside a piece depends on the split. */
    if (!a->error)
        assert_int_equal(a->consumed, b->consumed);
}

/* Feeds buf whole, one byte at a time, split in two at every position and
 * in pieces of 2..9 bytes: each must give the same trace, stored in *t. */
static void run_every_split(struct trace *t, const uint8_t *buf, size_t len, size_t max_message)
{
    struct trace *other = malloc(sizeof(*other));

    assert_non_null(other);
    run_whole(t, buf, len, max_message);
    run(other, buf, len, max_message, 1, 0);
    assert_same_trace(t, other);
    for (size_t split = 1; split < len; split++) {
        run(other, buf, len, max_message, SIZE_MAX, split);
        assert_same_trace(t, other);
    }
    for (size_t chunk = 2; chunk < 10; chunk++) {
        run(other, buf, len, max_message, chunk, 0);
        assert_same_trace(t, other);
    }
    free(other);
}

/* buf must fail with code, whole and in every split, after no events. */
static void expect_error(const uint8_t *buf, size_t len, size_t max_message, uint16_t code)
{
    struct trace t;

    run_every_split(&t, buf, len, max_message);
    assert_int_equal(t.n, 0);
    assert_int_equal(t.error, 1);
    assert_int_equal(t.close_code, code);
}

/* buf must give exactly one text event carrying text[0..len). */
static void expect_text(const uint8_t *buf, size_t n, size_t max_message, const void *text,
                        size_t len)
{
    struct trace t;

    run_every_split(&t, buf, n, max_message);
    assert_int_equal(t.error, 0);
    assert_int_equal(t.n, 1);
    assert_int_equal(t.ev[0].type, WS_EV_TEXT);
    assert_int_equal(t.ev[0].len, len);
    assert_memory_equal(t.ev[0].data, text, len < TRACE_DATA ? len : TRACE_DATA);
}

/* ---- Parser: well-formed input ------------------------------------------ */

static void test_ws_parses_masked_text_frame(void **state)
{
    uint8_t buf[64];
    size_t n = text_frame(buf, "Hello");
    struct ws_parser p;
    struct ws_event ev;
    uint16_t code = 0;
    size_t used;

    (void)state;
    ws_parser_init(&p, 1024);
    assert_int_equal(ws_parser_feed(&p, buf, n, &used, &ev, &code), WS_PARSE_EVENT);
    assert_int_equal(used, n);
    assert_int_equal(ev.type, WS_EV_TEXT);
    assert_int_equal(ev.len, 5);
    assert_memory_equal(ev.data, "Hello", 5);
    ws_parser_free(&p);
}

static void test_ws_parses_rfc_masked_hello_example(void **state)
{
    /* RFC 6455 section 5.7: a single-frame masked text message. */
    static const uint8_t buf[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};

    (void)state;
    expect_text(buf, sizeof(buf), 1024, "Hello", 5);
}

static void test_ws_needs_more_for_partial_frame(void **state)
{
    uint8_t buf[64];
    size_t n = text_frame(buf, "Hello");
    struct ws_parser p;
    struct ws_event ev;
    uint16_t code = 0;
    size_t used;

    (void)state;
    ws_parser_init(&p, 1024);
    assert_int_equal(ws_parser_feed(&p, buf, n - 1, &used, &ev, &code), WS_PARSE_NEED_MORE);
    assert_int_equal(used, n - 1);
    assert_int_equal(ws_parser_feed(&p, buf + n - 1, 1, &used, &ev, &code), WS_PARSE_EVENT);
    assert_int_equal(used, 1);
    assert_memory_equal(ev.data, "Hello", 5);
    assert_int_equal(ws_parser_feed(&p, buf, 0, &used, &ev, &code), WS_PARSE_NEED_MORE);
    assert_int_equal(used, 0);
    ws_parser_free(&p);
}

static void test_ws_parses_several_frames_in_one_buffer(void **state)
{
    uint8_t buf[256];
    size_t n = 0, ends[4];
    static const uint8_t bye[] = {0x03, 0xE8, 'b', 'y', 'e'};
    struct ws_parser p;
    struct ws_event ev;
    uint16_t code = 0;
    size_t used, off = 0;

    (void)state;
    n += text_frame(buf + n, "a");
    ends[0] = n;
    n += client_frame(buf + n, F_FIN, WS_OP_PING, "", 0);
    ends[1] = n;
    n += text_frame(buf + n, "bc");
    ends[2] = n;
    n += client_frame(buf + n, F_FIN, WS_OP_CLOSE, bye, sizeof(bye));
    ends[3] = n;
    ws_parser_init(&p, 1024);

    assert_int_equal(ws_parser_feed(&p, buf, n, &used, &ev, &code), WS_PARSE_EVENT);
    off += used;
    assert_int_equal(off, ends[0]);
    assert_int_equal(ev.type, WS_EV_TEXT);
    assert_int_equal(ev.len, 1);
    assert_memory_equal(ev.data, "a", 1);

    assert_int_equal(ws_parser_feed(&p, buf + off, n - off, &used, &ev, &code), WS_PARSE_EVENT);
    off += used;
    assert_int_equal(off, ends[1]);
    assert_int_equal(ev.type, WS_EV_PING);
    assert_int_equal(ev.len, 0);

    assert_int_equal(ws_parser_feed(&p, buf + off, n - off, &used, &ev, &code), WS_PARSE_EVENT);
    off += used;
    assert_int_equal(off, ends[2]);
    assert_int_equal(ev.type, WS_EV_TEXT);
    assert_int_equal(ev.len, 2);
    assert_memory_equal(ev.data, "bc", 2);

    assert_int_equal(ws_parser_feed(&p, buf + off, n - off, &used, &ev, &code), WS_PARSE_EVENT);
    off += used;
    assert_int_equal(off, ends[3]);
    assert_int_equal(ev.type, WS_EV_CLOSE);
    assert_int_equal(ev.close_code, 1000);
    assert_int_equal(ev.len, 3);
    assert_memory_equal(ev.data, "bye", 3);
    ws_parser_free(&p);
}

static void test_ws_reports_ping_and_pong_payloads(void **state)
{
    uint8_t buf[512];
    uint8_t big[125];
    size_t n = 0;
    struct trace t;

    (void)state;
    memset(big, 'x', sizeof(big));
    n += client_frame(buf + n, F_FIN, WS_OP_PING, "are you there", 13);
    n += client_frame(buf + n, F_FIN, WS_OP_PONG, "yes", 3);
    n += client_frame(buf + n, F_FIN, WS_OP_PING, big, sizeof(big));
    run_every_split(&t, buf, n, 1024);
    assert_int_equal(t.error, 0);
    assert_int_equal(t.n, 3);
    assert_int_equal(t.ev[0].type, WS_EV_PING);
    assert_int_equal(t.ev[0].len, 13);
    assert_memory_equal(t.ev[0].data, "are you there", 13);
    assert_int_equal(t.ev[1].type, WS_EV_PONG);
    assert_int_equal(t.ev[1].len, 3);
    assert_memory_equal(t.ev[1].data, "yes", 3);
    assert_int_equal(t.ev[2].type, WS_EV_PING);
    assert_int_equal(t.ev[2].len, 125);
    assert_memory_equal(t.ev[2].data, big, 125);
}

static void test_ws_reassembles_fragmented_message_with_interleaved_control(void **state)
{
    uint8_t buf[256];
    size_t n = 0;
    struct trace t;

    (void)state;
    n += client_frame(buf + n, 0, WS_OP_TEXT, "Hel", 3);
    n += client_frame(buf + n, F_FIN, WS_OP_PING, "p", 1);
    n += client_frame(buf + n, 0, WS_OP_CONT, "lo", 2);
    n += client_frame(buf + n, F_FIN, WS_OP_PONG, "q", 1);
    n += client_frame(buf + n, 0, WS_OP_CONT, "", 0);
    n += client_frame(buf + n, F_FIN, WS_OP_CONT, " world", 6);
    n += text_frame(buf + n, "next");
    run_every_split(&t, buf, n, 1024);
    assert_int_equal(t.error, 0);
    assert_int_equal(t.n, 4);
    assert_int_equal(t.ev[0].type, WS_EV_PING);
    assert_memory_equal(t.ev[0].data, "p", 1);
    assert_int_equal(t.ev[1].type, WS_EV_PONG);
    assert_memory_equal(t.ev[1].data, "q", 1);
    assert_int_equal(t.ev[2].type, WS_EV_TEXT);
    assert_int_equal(t.ev[2].len, 11);
    assert_memory_equal(t.ev[2].data, "Hello world", 11);
    assert_int_equal(t.ev[3].type, WS_EV_TEXT);
    assert_int_equal(t.ev[3].len, 4);
    assert_memory_equal(t.ev[3].data, "next", 4);
}

static void test_ws_accepts_empty_text_frames_and_messages(void **state)
{
    uint8_t buf[64];
    size_t n = 0;
    struct trace t;

    (void)state;
    n += client_frame(buf + n, F_FIN, WS_OP_TEXT, "", 0);
    n += client_frame(buf + n, 0, WS_OP_TEXT, "", 0);
    n += client_frame(buf + n, 0, WS_OP_CONT, "", 0);
    n += client_frame(buf + n, F_FIN, WS_OP_CONT, "", 0);
    run_every_split(&t, buf, n, 0);
    assert_int_equal(t.error, 0);
    assert_int_equal(t.n, 2);
    assert_int_equal(t.ev[0].type, WS_EV_TEXT);
    assert_int_equal(t.ev[0].len, 0);
    assert_int_equal(t.ev[1].type, WS_EV_TEXT);
    assert_int_equal(t.ev[1].len, 0);
}

static void test_ws_same_events_for_every_split(void **state)
{
    uint8_t *buf = malloc(4096), *text = malloc(300);
    size_t n = 0;
    struct trace t;

    (void)state;
    assert_non_null(buf);
    assert_non_null(text);
    for (size_t i = 0; i < 300; i++)
        text[i] = (uint8_t)('a' + i % 26);
    n += client_frame(buf + n, F_FIN, WS_OP_TEXT, text, 300);          /* 16-bit length */
    n += client_frame(buf + n, 0, WS_OP_TEXT, text, 37);               /* odd sizes move */
    n += client_frame(buf + n, F_FIN, WS_OP_PING, "pi", 2);            /* the mask phase */
    n += client_frame(buf + n, F_FIN, WS_OP_CONT, text + 37, 201);
    n += text_frame(buf + n, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5 \xe2\x82\xac \xf0\x9d\x84\x9e");
    run_every_split(&t, buf, n, 4096);
    assert_int_equal(t.error, 0);
    assert_int_equal(t.n, 4);
    assert_int_equal(t.ev[0].len, 300);
    assert_memory_equal(t.ev[0].data, text, 300);
    assert_int_equal(t.ev[1].type, WS_EV_PING);
    assert_int_equal(t.ev[2].len, 238);
    assert_memory_equal(t.ev[2].data, text, 238);
    assert_int_equal(t.ev[3].len, 20);
    free(text);
    free(buf);
}

static void test_ws_releases_message_buffer_after_delivery(void **state)
{
    uint8_t buf[64];
    size_t n = 0, used;
    struct ws_parser p;
    struct ws_event ev;
    uint16_t code = 0;

    (void)state;
    n += client_frame(buf + n, 0, WS_OP_TEXT, "ab", 2);
    n += client_frame(buf + n, F_FIN, WS_OP_CONT, "cd", 2);
    ws_parser_init(&p, 1024);
    assert_int_equal(ws_parser_feed(&p, buf, n, &used, &ev, &code), WS_PARSE_EVENT);
    assert_memory_equal(ev.data, "abcd", 4);
    /* The event's data lives until the next feed, which frees the buffer so
     * that an idle connection holds none. */
    assert_int_equal(ws_parser_feed(&p, buf + used, 0, &used, &ev, &code), WS_PARSE_NEED_MORE);
    assert_null(p.msg);
    /* A message cut short is freed by ws_parser_free (ASan checks leaks). */
    assert_int_equal(ws_parser_feed(&p, buf, 8, &used, &ev, &code), WS_PARSE_NEED_MORE);
    ws_parser_free(&p);
    assert_null(p.msg);
}

/* ---- Parser: permessage-deflate ------------------------------------------ */

/* Compresses text as a client does (raw deflate at level, sync flush, the
 * 00 00 FF FF tail dropped) into out (room for len + 64); returns its size. */
static size_t client_deflate(uint8_t *out, const void *text, size_t len, int level)
{
    z_stream z = {0};
    assert_int_equal(deflateInit2(&z, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = (Bytef *)text;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)(len + 64);
    assert_int_equal(deflate(&z, Z_SYNC_FLUSH), Z_OK);
    assert_int_equal(z.avail_in, 0);
    size_t n = len + 64 - z.avail_out - 4;
    deflateEnd(&z);
    return n;
}

static int setup_deflate(void **state)
{
    (void)state;
    run_deflate = deflate_streams_create();
    return run_deflate ? 0 : -1;
}

static int teardown_deflate(void **state)
{
    (void)state;
    deflate_streams_destroy(run_deflate);
    run_deflate = NULL;
    return 0;
}

static void test_ws_inflates_compressed_message(void **state)
{
    static const char text[] = "{\"type\":\"publish\",\"room\":\"a\",\"data\":\"\xe2\x82\xac \xe2\x82\xac \xe2\x82\xac\"}";
    uint8_t z[256], buf[512];
    size_t zn = client_deflate(z, text, sizeof text - 1, 6), n = 0;
    struct trace t;

    (void)state;
    n += client_frame(buf + n, F_FIN | F_RSV1, WS_OP_TEXT, z, zn);
    n += text_frame(buf + n, "plain");  /* RSV1 is per message */
    run_every_split(&t, buf, n, 1024);
    assert_int_equal(t.error, 0);
    assert_int_equal(t.n, 2);
    assert_int_equal(t.ev[0].len, sizeof text - 1);
    assert_memory_equal(t.ev[0].data, text, sizeof text - 1);
    assert_int_equal(t.ev[1].len, 5);
    assert_memory_equal(t.ev[1].data, "plain", 5);
}

static void test_ws_inflates_fragmented_compressed_message(void **state)
{
    char text[600];
    uint8_t z[700], buf[900];
    size_t n = 0;
    struct trace t;

    (void)state;
    for (size_t i = 0; i < sizeof text; i++)
        text[i] = (char)('a' + (i * i) % 26);
    size_t zn = client_deflate(z, text, sizeof text, 6);
    /* RSV1 on the first frame only; a ping between the fragments. */
    n += client_frame(buf + n, F_RSV1, WS_OP_TEXT, z, 10);
    n += client_frame(buf + n, F_FIN, WS_OP_PING, "p", 1);
    n += client_frame(buf + n, 0, WS_OP_CONT, z + 10, zn - 20);
    n += client_frame(buf + n, F_FIN, WS_OP_CONT, z + zn - 10, 10);
    run_every_split(&t, buf, n, sizeof text);
    assert_int_equal(t.error, 0);
    assert_int_equal(t.n, 2);
    assert_int_equal(t.ev[0].type, WS_EV_PING);
    assert_int_equal(t.ev[1].type, WS_EV_TEXT);
    assert_int_equal(t.ev[1].len, sizeof text);
    assert_memory_equal(t.ev[1].data, text, TRACE_DATA);
}

static void test_ws_rejects_rsv1_on_control_and_continuation(void **state)
{
    uint8_t buf[64];
    size_t n;

    (void)state;
    n = client_frame(buf, F_FIN | F_RSV1, WS_OP_PING, "", 0);
    expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);
    n = client_frame(buf, 0, WS_OP_TEXT, "ab", 2);
    n += client_frame(buf + n, F_FIN | F_RSV1, WS_OP_CONT, "cd", 2);
    expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);
    /* RSV2 and RSV3 stay errors with the extension. */
    n = client_frame(buf, F_FIN | F_RSV1 | F_RSV2, WS_OP_TEXT, "ab", 2);
    expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);
}

static void test_ws_closes_compression_bomb_with_1009(void **state)
{
    /* 1 MiB of spaces compress to about 1 KiB; the limit is 4 KiB. */
    size_t big = 1 << 20;
    char *spaces = malloc(big);
    uint8_t *z = malloc(big + 64), *buf = malloc(big + 64);
    assert_non_null(spaces);
    assert_non_null(z);
    assert_non_null(buf);
    memset(spaces, ' ', big);
    size_t zn = client_deflate(z, spaces, big, 9);
    size_t n = client_frame(buf, F_FIN | F_RSV1, WS_OP_TEXT, z, zn);
    struct trace t;

    (void)state;
    assert_true(zn < 4096);
    run_whole(&t, buf, n, 4096);
    assert_int_equal(t.n, 0);
    assert_int_equal(t.error, 1);
    assert_int_equal(t.close_code, WS_CLOSE_TOO_BIG);
    run(&t, buf, n, 4096, 7, 0);
    assert_int_equal(t.close_code, WS_CLOSE_TOO_BIG);
    free(spaces);
    free(z);
    free(buf);
}

static void test_ws_checks_inflated_text(void **state)
{
    uint8_t z[64], buf[128];
    size_t zn = client_deflate(z, "ab\xc3(", 5, 6);
    size_t n = client_frame(buf, F_FIN | F_RSV1, WS_OP_TEXT, z, zn);

    (void)state;
    expect_error(buf, n, 1024, WS_CLOSE_BAD_DATA);
    zn = client_deflate(z, "ab\xc3", 3, 6);  /* cut inside a character */
    n = client_frame(buf, F_FIN | F_RSV1, WS_OP_TEXT, z, zn);
    expect_error(buf, n, 1024, WS_CLOSE_BAD_DATA);
    /* Not a deflate stream at all (block type 3). */
    n = client_frame(buf, F_FIN | F_RSV1, WS_OP_TEXT, "\x07\x00", 2);
    expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);
}

static void test_ws_compressed_message_may_exceed_limit_on_the_wire(void **state)
{
    /* Stored blocks (level 0) add 5 bytes: 1024 bytes of text take 1029 on
     * the wire, and are held to 1024 once inflated. */
    char text[1025];
    uint8_t z[1100], buf[1200];
    struct trace t;

    (void)state;
    memset(text, 'x', sizeof text);
    size_t zn = client_deflate(z, text, 1024, 0);
    assert_true(zn > 1024);
    size_t n = client_frame(buf, F_FIN | F_RSV1, WS_OP_TEXT, z, zn);
    run_whole(&t, buf, n, 1024);
    assert_int_equal(t.error, 0);
    assert_int_equal(t.ev[0].len, 1024);
    zn = client_deflate(z, text, 1025, 0);
    n = client_frame(buf, F_FIN | F_RSV1, WS_OP_TEXT, z, zn);
    run_whole(&t, buf, n, 1024);
    assert_int_equal(t.close_code, WS_CLOSE_TOO_BIG);
}

/* ---- Parser: malformed frames ------------------------------------------- */

static void test_ws_rejects_unmasked_client_frame(void **state)
{
    uint8_t buf[64];
    size_t n = client_frame(buf, F_FIN | F_NOMASK, WS_OP_TEXT, "Hello", 5);

    (void)state;
    expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);
    n = client_frame(buf, F_FIN | F_NOMASK, WS_OP_PING, "", 0);
    expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);
    /* Known from the two base bytes alone. */
    expect_error(buf, 2, 1024, WS_CLOSE_PROTOCOL);
}

static void test_ws_rejects_reserved_bits(void **state)
{
    static const unsigned rsv[] = {F_RSV1, F_RSV2, F_RSV3, F_RSV1 | F_RSV3};
    uint8_t buf[64];

    (void)state;
    for (size_t i = 0; i < sizeof(rsv) / sizeof(rsv[0]); i++) {
        size_t n = client_frame(buf, F_FIN | rsv[i], WS_OP_TEXT, "Hello", 5);
        expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);
        n = client_frame(buf, F_FIN | rsv[i], WS_OP_PING, "", 0);
        expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);
    }
}

static void test_ws_rejects_unknown_opcodes(void **state)
{
    static const uint8_t ops[] = {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF};
    uint8_t buf[64];

    (void)state;
    for (size_t i = 0; i < sizeof(ops); i++) {
        size_t n = client_frame(buf, F_FIN, ops[i], "x", 1);
        expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);
        expect_error(buf, 2, 1024, WS_CLOSE_PROTOCOL);
    }
}

static void test_ws_rejects_binary_message_at_first_header(void **state)
{
    uint8_t buf[64];
    size_t n = client_frame(buf, F_FIN, WS_OP_BINARY, "\x00\x01", 2);

    (void)state;
    expect_error(buf, n, 1024, WS_CLOSE_UNSUPPORTED);
    expect_error(buf, 2, 1024, WS_CLOSE_UNSUPPORTED);
    n = client_frame(buf, 0, WS_OP_BINARY, "\x00\x01", 2);
    expect_error(buf, n, 1024, WS_CLOSE_UNSUPPORTED);
}

static void test_ws_rejects_control_frame_over_125_bytes(void **state)
{
    static const uint8_t ops[] = {WS_OP_CLOSE, WS_OP_PING, WS_OP_PONG};
    uint8_t buf[512], payload[200];

    (void)state;
    memset(payload, 'x', sizeof(payload));
    payload[0] = 0x03;
    payload[1] = 0xE8;
    for (size_t i = 0; i < sizeof(ops); i++) {
        size_t n = client_frame(buf, F_FIN, ops[i], payload, 126);
        expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);
        expect_error(buf, 2, 1024, WS_CLOSE_PROTOCOL);
        /* A short payload in the 16-bit form is refused the same way. */
        n = client_frame(buf, F_FIN | F_LEN16, ops[i], payload, 5);
        expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);
        n = client_frame(buf, F_FIN, ops[i], payload, 125);
        struct trace t;
        run_every_split(&t, buf, n, 1024);
        assert_int_equal(t.error, 0);
        assert_int_equal(t.n, 1);
        assert_int_equal(t.ev[0].len, ops[i] == WS_OP_CLOSE ? 123 : 125);
    }
}

static void test_ws_rejects_fragmented_control_frame(void **state)
{
    static const uint8_t ops[] = {WS_OP_CLOSE, WS_OP_PING, WS_OP_PONG};
    uint8_t buf[64];

    (void)state;
    for (size_t i = 0; i < sizeof(ops); i++) {
        size_t n = client_frame(buf, 0, ops[i], "", 0);
        expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);
    }
}

static void test_ws_rejects_continuation_without_message(void **state)
{
    uint8_t buf[64];
    size_t n = client_frame(buf, F_FIN, WS_OP_CONT, "x", 1);

    (void)state;
    expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);
    n = client_frame(buf, 0, WS_OP_CONT, "x", 1);
    expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);
    /* Also right after a complete message. */
    n = text_frame(buf, "done");
    n += client_frame(buf + n, F_FIN, WS_OP_CONT, "x", 1);
    struct trace t;
    run_every_split(&t, buf, n, 1024);
    assert_int_equal(t.n, 1);
    assert_int_equal(t.error, 1);
    assert_int_equal(t.close_code, WS_CLOSE_PROTOCOL);
}

static void test_ws_rejects_new_message_inside_fragmented_one(void **state)
{
    uint8_t buf[64];
    size_t n;

    (void)state;
    n = client_frame(buf, 0, WS_OP_TEXT, "ab", 2);
    n += text_frame(buf + n, "cd");
    expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);
    n = client_frame(buf, 0, WS_OP_TEXT, "ab", 2);
    n += client_frame(buf + n, F_FIN, WS_OP_BINARY, "cd", 2);
    expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);
}

static void test_ws_rejects_non_minimal_lengths(void **state)
{
    uint8_t *buf = malloc(70000), *payload = calloc(1, 65536);
    size_t n;

    (void)state;
    assert_non_null(buf);
    assert_non_null(payload);
    n = client_frame(buf, F_FIN | F_LEN16, WS_OP_TEXT, "hi", 2);
    expect_error(buf, n, 1 << 20, WS_CLOSE_PROTOCOL);
    n = client_frame(buf, F_FIN | F_LEN16, WS_OP_TEXT, payload, 125);
    expect_error(buf, n, 1 << 20, WS_CLOSE_PROTOCOL);
    n = client_frame(buf, F_FIN | F_LEN64, WS_OP_TEXT, "hi", 2);
    expect_error(buf, n, 1 << 20, WS_CLOSE_PROTOCOL);
    n = client_header(buf, F_FIN | F_LEN64, WS_OP_TEXT, 65535);
    expect_error(buf, n, 1 << 20, WS_CLOSE_PROTOCOL);
    /* The smallest lengths of each form are fine. */
    n = client_frame(buf, F_FIN, WS_OP_TEXT, payload, 126);
    assert_int_equal(buf[1], 0x80 | 126);
    expect_text(buf, n, 1 << 20, payload, 126);
    n = client_frame(buf, F_FIN, WS_OP_TEXT, payload, 65536);
    assert_int_equal(buf[1], 0x80 | 127);
    struct trace t;
    run_whole(&t, buf, n, 1 << 20);
    assert_int_equal(t.error, 0);
    assert_int_equal(t.n, 1);
    assert_int_equal(t.ev[0].len, 65536);
    free(payload);
    free(buf);
}

static void test_ws_rejects_64bit_length_with_high_bit(void **state)
{
    uint8_t buf[16];
    size_t n = client_header(buf, F_FIN, WS_OP_TEXT, UINT64_C(1) << 63);

    (void)state;
    expect_error(buf, n, SIZE_MAX, WS_CLOSE_PROTOCOL);
    n = client_header(buf, F_FIN, WS_OP_TEXT, UINT64_MAX);
    expect_error(buf, n, SIZE_MAX, WS_CLOSE_PROTOCOL);
    /* Without the high bit, a huge length is only too big. */
    n = client_header(buf, F_FIN, WS_OP_TEXT, UINT64_MAX >> 1);
    expect_error(buf, n, 1 << 20, WS_CLOSE_TOO_BIG);
}

static void test_ws_rejects_message_over_max_before_buffering(void **state)
{
    uint8_t *buf = malloc(2048), *payload = malloc(1001);
    struct ws_parser p;
    struct ws_event ev;
    uint16_t code = 0;
    size_t n, used;

    (void)state;
    assert_non_null(buf);
    assert_non_null(payload);
    memset(payload, 'z', 1001);
    /* Exactly max_message is fine. */
    n = client_frame(buf, F_FIN, WS_OP_TEXT, payload, 1000);
    expect_text(buf, n, 1000, payload, 1000);
    /* One more is refused as soon as the length is known: no mask, no
     * payload, no buffer. */
    n = client_frame(buf, F_FIN, WS_OP_TEXT, payload, 1001);
    ws_parser_init(&p, 1000);
    assert_int_equal(ws_parser_feed(&p, buf, 4, &used, &ev, &code), WS_PARSE_ERROR);
    assert_int_equal(code, WS_CLOSE_TOO_BIG);
    assert_int_equal(used, 4);
    assert_null(p.msg);
    ws_parser_free(&p);
    expect_error(buf, n, 1000, WS_CLOSE_TOO_BIG);
    /* A 7-bit length too. */
    n = text_frame(buf, "hello");
    expect_error(buf, n, 4, WS_CLOSE_TOO_BIG);
    expect_text(buf, n, 5, "hello", 5);
    free(payload);
    free(buf);
}

static void test_ws_rejects_fragmented_message_over_max(void **state)
{
    uint8_t *buf = malloc(4096), *payload = malloc(1001);
    struct ws_parser p;
    struct ws_event ev;
    uint16_t code = 0;
    size_t n, first, used;

    (void)state;
    assert_non_null(buf);
    assert_non_null(payload);
    memset(payload, 'f', 1001);
    first = client_frame(buf, 0, WS_OP_TEXT, payload, 600);
    n = first + client_frame(buf + first, F_FIN, WS_OP_CONT, payload + 600, 400);
    expect_text(buf, n, 1000, payload, 1000);
    n = first + client_frame(buf + first, F_FIN, WS_OP_CONT, payload + 600, 401);
    expect_error(buf, n, 1000, WS_CLOSE_TOO_BIG);
    /* Refused at the second header, before its payload. */
    ws_parser_init(&p, 1000);
    assert_int_equal(ws_parser_feed(&p, buf, first + 4, &used, &ev, &code), WS_PARSE_ERROR);
    assert_int_equal(code, WS_CLOSE_TOO_BIG);
    ws_parser_free(&p);
    /* Control frames in between do not count. */
    n = first + client_frame(buf + first, F_FIN, WS_OP_PING, payload, 125);
    n += client_frame(buf + n, F_FIN, WS_OP_CONT, payload + 600, 400);
    struct trace t;
    run_whole(&t, buf, n, 1000);
    assert_int_equal(t.error, 0);
    assert_int_equal(t.n, 2);
    assert_int_equal(t.ev[1].len, 1000);
    free(payload);
    free(buf);
}

static void test_ws_accepts_64bit_length_near_limit(void **state)
{
    size_t max = 70000;
    uint8_t *buf = malloc(max + 16), *payload = malloc(max);
    size_t n;

    (void)state;
    assert_non_null(buf);
    assert_non_null(payload);
    for (size_t i = 0; i < max; i++)
        payload[i] = (uint8_t)(' ' + i % 90);
    n = client_frame(buf, F_FIN, WS_OP_TEXT, payload, max);
    assert_int_equal(buf[1], 0x80 | 127);
    struct trace t;
    run_whole(&t, buf, n, max);
    assert_int_equal(t.error, 0);
    assert_int_equal(t.n, 1);
    assert_int_equal(t.ev[0].len, max);
    run(&t, buf, n, max, 4093, 0);
    assert_int_equal(t.n, 1);
    assert_int_equal(t.ev[0].len, max);
    n = client_header(buf, F_FIN, WS_OP_TEXT, max + 1);
    expect_error(buf, n, max, WS_CLOSE_TOO_BIG);
    free(payload);
    free(buf);
}

/* ---- Parser: close frames ----------------------------------------------- */

static void test_ws_close_without_payload_reports_1005(void **state)
{
    uint8_t buf[64];
    size_t n = client_frame(buf, F_FIN, WS_OP_CLOSE, "", 0);
    struct trace t;

    (void)state;
    run_every_split(&t, buf, n, 1024);
    assert_int_equal(t.error, 0);
    assert_int_equal(t.n, 1);
    assert_int_equal(t.ev[0].type, WS_EV_CLOSE);
    assert_int_equal(t.ev[0].close_code, WS_CLOSE_NO_STATUS);
    assert_int_equal(t.ev[0].len, 0);
}

static void test_ws_close_reports_code_and_reason(void **state)
{
    static const uint8_t payload[] = {0x0F, 0xA0, 'g', 'o', 'o', 'd', 0xC3, 0xA9};
    uint8_t buf[64];
    size_t n = client_frame(buf, F_FIN, WS_OP_CLOSE, payload, sizeof(payload));
    struct trace t;

    (void)state;
    /* Bytes after a close frame are not read. */
    n += text_frame(buf + n, "ignored");
    run_every_split(&t, buf, n, 1024);
    assert_int_equal(t.error, 0);
    assert_int_equal(t.n, 1);
    assert_int_equal(t.ev[0].type, WS_EV_CLOSE);
    assert_int_equal(t.ev[0].close_code, 4000);
    assert_int_equal(t.ev[0].len, 6);
    assert_memory_equal(t.ev[0].data, "good\xc3\xa9", 6);
    assert_int_equal(t.consumed, 6 + sizeof(payload));
}

static void test_ws_rejects_close_with_one_byte_payload(void **state)
{
    uint8_t buf[64];
    size_t n = client_frame(buf, F_FIN, WS_OP_CLOSE, "\x03", 1);

    (void)state;
    expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);
}

static void test_ws_rejects_close_with_invalid_code(void **state)
{
    static const uint16_t bad[] = {0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999,
                                   5000, 65535};
    static const uint16_t good[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                    1013, 1014, 3000, 3999, 4000, 4999};
    uint8_t buf[64], payload[2];
    struct trace t;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        payload[0] = (uint8_t)(bad[i] >> 8);
        payload[1] = (uint8_t)bad[i];
        size_t n = client_frame(buf, F_FIN, WS_OP_CLOSE, payload, 2);
        expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);
    }
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        payload[0] = (uint8_t)(good[i] >> 8);
        payload[1] = (uint8_t)good[i];
        size_t n = client_frame(buf, F_FIN, WS_OP_CLOSE, payload, 2);
        run_whole(&t, buf, n, 1024);
        assert_int_equal(t.error, 0);
        assert_int_equal(t.ev[0].close_code, good[i]);
    }
}

static void test_ws_rejects_close_with_invalid_utf8_reason(void **state)
{
    static const uint8_t bad[] = {0x03, 0xE8, 'o', 'k', 0xFF};
    static const uint8_t cut[] = {0x03, 0xE8, 'o', 'k', 0xC3};
    static const uint8_t surrogate[] = {0x03, 0xE8, 0xED, 0xA0, 0x80};
    uint8_t buf[64];
    size_t n;

    (void)state;
    n = client_frame(buf, F_FIN, WS_OP_CLOSE, bad, sizeof(bad));
    expect_error(buf, n, 1024, WS_CLOSE_BAD_DATA);
    n = client_frame(buf, F_FIN, WS_OP_CLOSE, cut, sizeof(cut));
    expect_error(buf, n, 1024, WS_CLOSE_BAD_DATA);
    n = client_frame(buf, F_FIN, WS_OP_CLOSE, surrogate, sizeof(surrogate));
    expect_error(buf, n, 1024, WS_CLOSE_BAD_DATA);
}

static void test_ws_close_code_valid_matches_rfc_ranges(void **state)
{
    (void)state;
    for (uint32_t code = 0; code <= 0xFFFF; code++) {
        int want = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
                   (code >= 3000 && code <= 4999);
        assert_int_equal(ws_close_code_valid((uint16_t)code), want);
    }
    assert_false(ws_close_code_valid(1004));
    assert_false(ws_close_code_valid(1005));
    assert_false(ws_close_code_valid(1006));
    assert_false(ws_close_code_valid(1015));
    assert_true(ws_close_code_valid(1012));
    assert_true(ws_close_code_valid(1014));
}

/* ---- UTF-8 -------------------------------------------------------------- */

struct utf8_case {
    const char *s;
    size_t len; /* 0: strlen(s) */
};

static size_t case_len(const struct utf8_case *c)
{
    return c->len ? c->len : strlen(c->s);
}

static const struct utf8_case utf8_valid[] = {
    {"", 0},
    {"plain ascii, long enough for the eight-byte path", 0},
    {"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 0}, /* kosme */
    {"\x00", 1},                                        /* U+0000 */
    {"\x7f", 0},
    {"\xc2\x80", 0},             /* first of each length */
    {"\xe0\xa0\x80", 0},
    {"\xf0\x90\x80\x80", 0},
    {"\xdf\xbf", 0},             /* last of each length */
    {"\xef\xbf\xbf", 0},         /* U+FFFF, a noncharacter but valid */
    {"\xf4\x8f\xbf\xbf", 0},     /* U+10FFFF */
    {"\xed\x9f\xbf", 0},         /* U+D7FF, just below the surrogates */
    {"\xee\x80\x80", 0},         /* U+E000, just above */
    {"\xef\xbf\xbd", 0},         /* U+FFFD */
    {"\xef\xbf\xbe", 0},         /* U+FFFE */
    {"\xf3\xbf\xbf\xbf", 0},
    {"Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!", 0},
    {"aaaaaaa\xe2\x82\xac" "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\xf0\x9d\x84\x9e", 0},
};

static const struct utf8_case utf8_invalid[] = {
    {"\x80", 0},                 /* stray continuation bytes */
    {"\xbf", 0},
    {"\x80\xbf\x80", 0},
    {"abc\x80", 0},
    {"\xc0\x80", 0},             /* overlongs */
    {"\xc0\xaf", 0},
    {"\xc1\xbf", 0},
    {"\xe0\x80\xaf", 0},
    {"\xe0\x9f\xbf", 0},
    {"\xf0\x80\x80\xaf", 0},
    {"\xf0\x8f\xbf\xbf", 0},
    {"\xf8\x80\x80\x80\xaf", 0},
    {"\xfc\x80\x80\x80\x80\xaf", 0},
    {"\xed\xa0\x80", 0},         /* surrogates */
    {"\xed\xad\xbf", 0},
    {"\xed\xbf\xbf", 0},
    {"\xed\xa0\x80\xed\xb0\x80", 0},
    {"\xf4\x90\x80\x80", 0},     /* past U+10FFFF */
    {"\xf5\x80\x80\x80", 0},
    {"\xf7\xbf\xbf\xbf", 0},
    {"\xfe", 0},                 /* impossible bytes */
    {"\xff", 0},
    {"\xfe\xfe\xff\xff", 0},
    {"\xc2\x41", 0},             /* lead byte followed by ASCII */
    {"\xc0 ", 0},                /* lonely start characters */
    {"\xe0 ", 0},
    {"\xf0 ", 0},
    {"\xe1\x80\x41", 0},         /* last continuation byte missing */
    {"\xf1\x80\x80\x41", 0},
    {"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64", 0},
    {"0123456789abcdef\xff" "0123456789abcdef", 0},
};

static const struct utf8_case utf8_truncated[] = {
    {"\xc2", 0},
    {"\xe0\xa0", 0},
    {"\xe1", 0},
    {"\xf0\x90\x80", 0},
    {"\xf4\x8f", 0},
    {"ok\xce", 0},
};

static void test_ws_utf8_accepts_valid_text_split_anywhere(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(utf8_valid) / sizeof(utf8_valid[0]); i++) {
        const uint8_t *s = (const uint8_t *)utf8_valid[i].s;
        size_t len = case_len(&utf8_valid[i]);
        for (size_t split = 0; split <= len; split++) {
            uint8_t st = UTF8_ACCEPT;
            assert_int_equal(utf8_feed(&st, s, split), 0);
            assert_int_equal(utf8_feed(&st, s + split, len - split), 0);
            assert_true(utf8_complete(st));
        }
        uint8_t st = UTF8_ACCEPT;
        for (size_t j = 0; j < len; j++)
            assert_int_equal(utf8_feed(&st, s + j, 1), 0);
        assert_true(utf8_complete(st));
    }
}

static void test_ws_utf8_rejects_invalid_sequences(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(utf8_invalid) / sizeof(utf8_invalid[0]); i++) {
        const uint8_t *s = (const uint8_t *)utf8_invalid[i].s;
        size_t len = case_len(&utf8_invalid[i]);
        for (size_t split = 0; split <= len; split++) {
            uint8_t st = UTF8_ACCEPT;
            int r = utf8_feed(&st, s, split);
            if (r == 0)
                r = utf8_feed(&st, s + split, len - split);
            assert_int_equal(r, -1);
            assert_false(utf8_complete(st));
            /* Once rejected, it stays rejected. */
            assert_int_equal(utf8_feed(&st, (const uint8_t *)"a", 1), -1);
        }
    }
}

static void test_ws_utf8_rejects_bad_byte_anywhere_in_ascii_run(void **state)
{
    uint8_t buf[100];

    (void)state;
    for (size_t pos = 0; pos < sizeof(buf); pos++) {
        uint8_t st = UTF8_ACCEPT;
        memset(buf, 'a', sizeof(buf));
        buf[pos] = 0xFF;
        assert_int_equal(utf8_feed(&st, buf, sizeof(buf)), -1);
        st = UTF8_ACCEPT;
        buf[pos] = 0x80;
        assert_int_equal(utf8_feed(&st, buf, sizeof(buf)), -1);
        st = UTF8_ACCEPT;
        buf[pos] = 'b';
        assert_int_equal(utf8_feed(&st, buf, sizeof(buf)), 0);
        assert_true(utf8_complete(st));
    }
}

static void test_ws_utf8_truncated_sequence_is_incomplete(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(utf8_truncated) / sizeof(utf8_truncated[0]); i++) {
        uint8_t st = UTF8_ACCEPT;
        const char *s = utf8_truncated[i].s;
        assert_int_equal(utf8_feed(&st, (const uint8_t *)s, strlen(s)), 0);
        assert_false(utf8_complete(st));
    }
}

static void test_ws_rejects_invalid_utf8_text(void **state)
{
    uint8_t buf[128];

    (void)state;
    for (size_t i = 0; i < sizeof(utf8_invalid) / sizeof(utf8_invalid[0]); i++) {
        size_t n = client_frame(buf, F_FIN, WS_OP_TEXT, utf8_invalid[i].s,
                                case_len(&utf8_invalid[i]));
        expect_error(buf, n, 1024, WS_CLOSE_BAD_DATA);
    }
}

static void test_ws_rejects_utf8_truncated_at_message_end(void **state)
{
    uint8_t buf[128];
    size_t n;

    (void)state;
    for (size_t i = 0; i < sizeof(utf8_truncated) / sizeof(utf8_truncated[0]); i++) {
        n = text_frame(buf, utf8_truncated[i].s);
        expect_error(buf, n, 1024, WS_CLOSE_BAD_DATA);
    }
    /* Cut in the last fragment of a fragmented message as well. */
    n = client_frame(buf, 0, WS_OP_TEXT, "ok", 2);
    n += client_frame(buf + n, F_FIN, WS_OP_CONT, "\xe2\x82", 2);
    expect_error(buf, n, 1024, WS_CLOSE_BAD_DATA);
}

static void test_ws_accepts_valid_text_split_at_every_byte(void **state)
{
    uint8_t buf[256];

    (void)state;
    for (size_t i = 0; i < sizeof(utf8_valid) / sizeof(utf8_valid[0]); i++) {
        size_t len = case_len(&utf8_valid[i]);
        size_t n = client_frame(buf, F_FIN, WS_OP_TEXT, utf8_valid[i].s, len);
        expect_text(buf, n, 1024, utf8_valid[i].s, len);
    }
}

static void test_ws_accepts_characters_split_across_fragments(void **state)
{
    static const char text[] = "\xe2\x82\xac\xf0\x9d\x84\x9e\xc3\xa9";
    size_t len = sizeof(text) - 1;
    uint8_t buf[128];

    (void)state;
    for (size_t cut = 0; cut <= len; cut++) {
        size_t n = client_frame(buf, 0, WS_OP_TEXT, text, cut);
        n += client_frame(buf + n, F_FIN, WS_OP_PING, "", 0);
        n += client_frame(buf + n, F_FIN, WS_OP_CONT, text + cut, len - cut);
        struct trace t;
        run_every_split(&t, buf, n, 1024);
        assert_int_equal(t.error, 0);
        assert_int_equal(t.n, 2);
        assert_int_equal(t.ev[1].type, WS_EV_TEXT);
        assert_int_equal(t.ev[1].len, len);
        assert_memory_equal(t.ev[1].data, text, len);
    }
}

static void test_ws_fails_fast_on_invalid_utf8_in_fragment(void **state)
{
    /* Autobahn 6.4.x: valid first fragment, invalid byte in the second; the
     * error comes before the message (or even the frame) is complete. */
    static const char first[] = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5";
    static const char second[] = "\xf4\x90\x80\x80" "edited";
    uint8_t buf[128];
    struct ws_parser p;
    struct ws_event ev;
    uint16_t code = 0;
    size_t n, used, hdr;

    (void)state;
    n = client_frame(buf, 0, WS_OP_TEXT, first, sizeof(first) - 1);
    hdr = client_frame(buf + n, 0, WS_OP_CONT, second, sizeof(second) - 1);
    ws_parser_init(&p, 1024);
    assert_int_equal(ws_parser_feed(&p, buf, n, &used, &ev, &code), WS_PARSE_NEED_MORE);
    /* Header (6 bytes) and the first two payload bytes: F4 90 is already
     * past U+10FFFF. */
    assert_int_equal(ws_parser_feed(&p, buf + n, 8, &used, &ev, &code), WS_PARSE_ERROR);
    assert_int_equal(code, WS_CLOSE_BAD_DATA);
    ws_parser_free(&p);
    expect_error(buf, n + hdr, 1024, WS_CLOSE_BAD_DATA);
}

static void test_ws_fails_fast_on_invalid_utf8_across_fragments(void **state)
{
    uint8_t buf[128];
    struct ws_parser p;
    struct ws_event ev;
    uint16_t code = 0;
    size_t n, used;

    (void)state;
    /* F4 ends the first fragment; 90 starts the second. */
    n = client_frame(buf, 0, WS_OP_TEXT, "ab\xf4", 3);
    size_t second = client_frame(buf + n, 0, WS_OP_CONT, "\x90\x80\x80", 3);
    ws_parser_init(&p, 1024);
    assert_int_equal(ws_parser_feed(&p, buf, n, &used, &ev, &code), WS_PARSE_NEED_MORE);
    assert_int_equal(ws_parser_feed(&p, buf + n, 7, &used, &ev, &code), WS_PARSE_ERROR);
    assert_int_equal(code, WS_CLOSE_BAD_DATA);
    ws_parser_free(&p);
    expect_error(buf, n + second, 1024, WS_CLOSE_BAD_DATA);
}

static void test_ws_fails_fast_on_invalid_utf8_inside_frame(void **state)
{
    uint8_t buf[256], payload[100];
    struct ws_parser p;
    struct ws_event ev;
    uint16_t code = 0;
    size_t used;

    (void)state;
    memset(payload, 'a', sizeof(payload));
    payload[3] = 0xC0;
    client_frame(buf, F_FIN, WS_OP_TEXT, payload, sizeof(payload));
    ws_parser_init(&p, 1024);
    assert_int_equal(ws_parser_feed(&p, buf, 6 + 4, &used, &ev, &code), WS_PARSE_ERROR);
    assert_int_equal(code, WS_CLOSE_BAD_DATA);
    ws_parser_free(&p);
}

/* ---- Frame encoder ------------------------------------------------------ */

static void check_frame(size_t len, const uint8_t *hdr, size_t hdr_len)
{
    uint8_t *payload = malloc(len + 1);
    struct frame *f;

    assert_non_null(payload);
    for (size_t i = 0; i < len; i++)
        payload[i] = (uint8_t)(i * 7);
    f = ws_frame_create(WS_OP_TEXT, payload, len);
    assert_non_null(f);
    assert_int_equal(f->refs, 1);
    assert_int_equal(f->len, hdr_len + len);
    assert_int_equal(ws_frame_header_len(len), hdr_len);
    assert_memory_equal(f->bytes, hdr, hdr_len);
    if (len > 0)
        assert_memory_equal(f->bytes + hdr_len, payload, len);

    uint8_t out[10];
    assert_int_equal(ws_frame_header_write(out, WS_OP_TEXT, len), hdr_len);
    assert_memory_equal(out, hdr, hdr_len);
    frame_unref(f);
    free(payload);
}

static void test_ws_frame_create_uses_minimal_lengths(void **state)
{
    static const uint8_t h0[] = {0x81, 0x00};
    static const uint8_t h125[] = {0x81, 125};
    static const uint8_t h126[] = {0x81, 126, 0x00, 126};
    static const uint8_t h65535[] = {0x81, 126, 0xFF, 0xFF};
    static const uint8_t h65536[] = {0x81, 127, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00};

    (void)state;
    check_frame(0, h0, sizeof(h0));
    check_frame(125, h125, sizeof(h125));
    check_frame(126, h126, sizeof(h126));
    check_frame(65535, h65535, sizeof(h65535));
    check_frame(65536, h65536, sizeof(h65536));
}

static void test_ws_frame_create_sets_opcode_and_fin(void **state)
{
    struct frame *f = ws_frame_create(WS_OP_PONG, "hi", 2);

    (void)state;
    assert_non_null(f);
    assert_int_equal(f->len, 4);
    assert_memory_equal(f->bytes, "\x8a\x02hi", 4);
    frame_unref(f);
    f = ws_frame_create(WS_OP_PING, NULL, 0);
    assert_non_null(f);
    assert_memory_equal(f->bytes, "\x89\x00", 2);
    frame_unref(f);
}

static void test_ws_frame_refs_free_at_zero(void **state)
{
    struct frame *f = ws_frame_create(WS_OP_TEXT, "x", 1);

    (void)state;
    assert_non_null(f);
    assert_ptr_equal(frame_ref(f), f);
    assert_int_equal(f->refs, 2);
    frame_unref(f);
    assert_int_equal(f->refs, 1);
    frame_unref(f); /* ASan reports a leak if this does not free */
}

static void test_ws_close_frame_encodes_code_and_reason(void **state)
{
    struct frame *f = ws_close_frame_create(1000, "bye");

    (void)state;
    assert_non_null(f);
    assert_int_equal(f->len, 7);
    assert_memory_equal(f->bytes, "\x88\x05\x03\xe8" "bye", 7);
    frame_unref(f);
    f = ws_close_frame_create(4001, NULL);
    assert_non_null(f);
    assert_int_equal(f->len, 4);
    assert_memory_equal(f->bytes, "\x88\x02\x0f\xa1", 4);
    frame_unref(f);
    f = ws_close_frame_create(WS_CLOSE_NO_STATUS, "ignored");
    assert_non_null(f);
    assert_int_equal(f->len, 2);
    assert_memory_equal(f->bytes, "\x88\x00", 2);
    frame_unref(f);
}

/* The frame must be a close frame of code whose reason is reason[0..len). */
static void check_close_frame(const struct frame *f, uint16_t code, const char *reason, size_t len)
{
    uint8_t st = UTF8_ACCEPT;

    assert_non_null(f);
    assert_int_equal(f->len, 2 + 2 + len);
    assert_int_equal(f->bytes[0], 0x88);
    assert_int_equal(f->bytes[1], 2 + len);
    assert_int_equal(f->bytes[2] << 8 | f->bytes[3], code);
    assert_memory_equal(f->bytes + 4, reason, len);
    assert_int_equal(utf8_feed(&st, f->bytes + 4, len), 0);
    assert_true(utf8_complete(st));
}

static void test_ws_close_frame_truncates_reason_at_character(void **state)
{
    char reason[256];
    struct frame *f;

    (void)state;
    memset(reason, 'r', 200);
    reason[200] = '\0';
    f = ws_close_frame_create(1008, reason);
    check_close_frame(f, 1008, reason, 123);
    frame_unref(f);
    /* 123 bytes exactly fit. */
    reason[123] = '\0';
    f = ws_close_frame_create(1008, reason);
    check_close_frame(f, 1008, reason, 123);
    frame_unref(f);
    /* A two-byte character over bytes 122..123 is dropped whole. */
    strcpy(reason + 122, "\xc3\xa9tail");
    f = ws_close_frame_create(1011, reason);
    check_close_frame(f, 1011, reason, 122);
    frame_unref(f);
    /* So are three- and four-byte ones straddling the limit. */
    strcpy(reason + 121, "\xe2\x82\xac");
    f = ws_close_frame_create(1011, reason);
    check_close_frame(f, 1011, reason, 121);
    frame_unref(f);
    strcpy(reason + 120, "\xf0\x9d\x84\x9e");
    f = ws_close_frame_create(1011, reason);
    check_close_frame(f, 1011, reason, 120);
    frame_unref(f);
    /* A character ending exactly at byte 123 stays. */
    strcpy(reason + 120, "\xe2\x82\xac!");
    f = ws_close_frame_create(1011, reason);
    check_close_frame(f, 1011, reason, 123);
    frame_unref(f);
}

/* ---- Handshake ---------------------------------------------------------- */

static void test_ws_accept_key_matches_rfc_example(void **state)
{
    static const char key[] = "dGhlIHNhbXBsZSBub25jZQ==";
    char out[29];

    (void)state;
    memset(out, 'X', sizeof(out));
    ws_accept_key(key, sizeof(key) - 1, out);
    /* RFC 6455 section 1.3. */
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_ws_key_valid_requires_base64_of_16_bytes(void **state)
{
    static const char *good[] = {"dGhlIHNhbXBsZSBub25jZQ==", "AAAAAAAAAAAAAAAAAAAAAA==",
                                 "+/+/+/+/+/+/+/+/+/+/+w=="};
    static const char *bad[] = {
        "",
        "dGhlIHNhbXBsZSBub25jZQ=",    /* 23 characters */
        "dGhlIHNhbXBsZSBub25jZQ===",  /* 25 */
        "dGhlIHNhbXBsZSBub25jZQAA",   /* no padding: 18 bytes */
        "dGhlIHNhbXBsZSBub25jZQ=A",
        "dGhlIHNhbXBsZSBub25jZ===",   /* padding too early */
        "dGhlIHNhbXBsZSBub2 jZQ==",
        "dGhlIHNhbXBsZSBub2-jZQ==",   /* base64url is not base64 */
        "dGhlIHNhbXBsZSBub2_jZQ==",
        "=GhlIHNhbXBsZSBub25jZQ==",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_true(ws_key_valid(good[i], strlen(good[i])));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(ws_key_valid(bad[i], strlen(bad[i])));
    /* The length given counts, not the NUL. */
    assert_false(ws_key_valid("dGhlIHNhbXBsZSBub25jZQ==", 22));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ws_parses_masked_text_frame),
        cmocka_unit_test(test_ws_parses_rfc_masked_hello_example),
        cmocka_unit_test(test_ws_needs_more_for_partial_frame),
        cmocka_unit_test(test_ws_parses_several_frames_in_one_buffer),
        cmocka_unit_test(test_ws_reports_ping_and_pong_payloads),
        cmocka_unit_test(test_ws_reassembles_fragmented_message_with_interleaved_control),
        cmocka_unit_test(test_ws_accepts_empty_text_frames_and_messages),
        cmocka_unit_test(test_ws_same_events_for_every_split),
        cmocka_unit_test(test_ws_releases_message_buffer_after_delivery),
        cmocka_unit_test(test_ws_rejects_unmasked_client_frame),
        cmocka_unit_test(test_ws_rejects_reserved_bits),
        cmocka_unit_test(test_ws_rejects_unknown_opcodes),
        cmocka_unit_test(test_ws_rejects_binary_message_at_first_header),
        cmocka_unit_test(test_ws_rejects_control_frame_over_125_bytes),
        cmocka_unit_test(test_ws_rejects_fragmented_control_frame),
        cmocka_unit_test(test_ws_rejects_continuation_without_message),
        cmocka_unit_test(test_ws_rejects_new_message_inside_fragmented_one),
        cmocka_unit_test(test_ws_rejects_non_minimal_lengths),
        cmocka_unit_test(test_ws_rejects_64bit_length_with_high_bit),
        cmocka_unit_test(test_ws_rejects_message_over_max_before_buffering),
        cmocka_unit_test(test_ws_rejects_fragmented_message_over_max),
        cmocka_unit_test(test_ws_accepts_64bit_length_near_limit),
        cmocka_unit_test(test_ws_close_without_payload_reports_1005),
        cmocka_unit_test(test_ws_close_reports_code_and_reason),
        cmocka_unit_test(test_ws_rejects_close_with_one_byte_payload),
        cmocka_unit_test(test_ws_rejects_close_with_invalid_code),
        cmocka_unit_test(test_ws_rejects_close_with_invalid_utf8_reason),
        cmocka_unit_test(test_ws_close_code_valid_matches_rfc_ranges),
        cmocka_unit_test(test_ws_utf8_accepts_valid_text_split_anywhere),
        cmocka_unit_test(test_ws_utf8_rejects_invalid_sequences),
        cmocka_unit_test(test_ws_utf8_rejects_bad_byte_anywhere_in_ascii_run),
        cmocka_unit_test(test_ws_utf8_truncated_sequence_is_incomplete),
        cmocka_unit_test(test_ws_rejects_invalid_utf8_text),
        cmocka_unit_test(test_ws_rejects_utf8_truncated_at_message_end),
        cmocka_unit_test(test_ws_accepts_valid_text_split_at_every_byte),
        cmocka_unit_test(test_ws_accepts_characters_split_across_fragments),
        cmocka_unit_test(test_ws_fails_fast_on_invalid_utf8_in_fragment),
        cmocka_unit_test(test_ws_fails_fast_on_invalid_utf8_across_fragments),
        cmocka_unit_test(test_ws_fails_fast_on_invalid_utf8_inside_frame),
        cmocka_unit_test(test_ws_frame_create_uses_minimal_lengths),
        cmocka_unit_test(test_ws_frame_create_sets_opcode_and_fin),
        cmocka_unit_test(test_ws_frame_refs_free_at_zero),
        cmocka_unit_test_setup_teardown(test_ws_inflates_compressed_message, setup_deflate, teardown_deflate),
        cmocka_unit_test_setup_teardown(test_ws_inflates_fragmented_compressed_message, setup_deflate,
                                        teardown_deflate),
        cmocka_unit_test_setup_teardown(test_ws_rejects_rsv1_on_control_and_continuation, setup_deflate,
                                        teardown_deflate),
        cmocka_unit_test_setup_teardown(test_ws_closes_compression_bomb_with_1009, setup_deflate,
                                        teardown_deflate),
        cmocka_unit_test_setup_teardown(test_ws_checks_inflated_text, setup_deflate, teardown_deflate),
        cmocka_unit_test_setup_teardown(test_ws_compressed_message_may_exceed_limit_on_the_wire, setup_deflate,
                                        teardown_deflate),
        cmocka_unit_test(test_ws_close_frame_encodes_code_and_reason),
        cmocka_unit_test(test_ws_close_frame_truncates_reason_at_character),
        cmocka_unit_test(test_ws_accept_key_matches_rfc_example),
        cmocka_unit_test(test_ws_key_valid_requires_base64_of_16_bytes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
