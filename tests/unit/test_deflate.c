/* test_deflate.c - unit tests of deflate.c: the choice among
 * Sec-WebSocket-Extensions offers and the answer (RFC 7692 section 7.1),
 * the inflation of a client message under its limit (a compression bomb
 * stops at the limit), and the compressed shared frame. Compressed input
 * is made with zlib here, as a client would. */
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

/* ---- the offer -------------------------------------------------------------- */

static const char plain_answer[] = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

static void expect_answer(const char *header, const char *answer)
{
    char out[DEFLATE_ANSWER_MAX];
    assert_int_equal(deflate_negotiate(header, out), 1);
    assert_string_equal(out, answer);
}

static void expect_declined(const char *header)
{
    char out[DEFLATE_ANSWER_MAX];
    assert_int_equal(deflate_negotiate(header, out), 0);
}

static void test_deflate_accepts_plain_offer(void **state)
{
    (void)state;
    expect_answer("permessage-deflate", plain_answer);
    expect_answer("  Permessage-Deflate  ", plain_answer);
    /* What browsers and python3-websockets send. */
    expect_answer("permessage-deflate; client_max_window_bits", plain_answer);
    expect_answer("permessage-deflate;client_max_window_bits=10", plain_answer);
    expect_answer("permessage-deflate; client_max_window_bits=\"12\"", plain_answer);
    expect_answer("permessage-deflate; server_no_context_takeover; client_no_context_takeover", plain_answer);
    expect_answer("permessage-deflate ; client_no_context_takeover\t;\tserver_no_context_takeover", plain_answer);
}

static void test_deflate_echoes_server_max_window_bits_15(void **state)
{
    (void)state;
    expect_answer("permessage-deflate; server_max_window_bits=15",
                  "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                  "server_max_window_bits=15");
    expect_answer("permessage-deflate; server_max_window_bits=\"15\"; client_max_window_bits=9",
                  "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                  "server_max_window_bits=15");
}

static void test_deflate_declines_unacceptable_offers(void **state)
{
    (void)state;
    expect_declined(NULL);
    expect_declined("");
    expect_declined(" , ,");
    expect_declined("x-webkit-deflate-frame");
    expect_declined("permessage-deflate; server_max_window_bits=10");  /* a smaller window than ours */
    expect_declined("permessage-deflate; server_max_window_bits");     /* the value is required */
    expect_declined("permessage-deflate; server_max_window_bits=8");
    expect_declined("permessage-deflate; client_max_window_bits=7");
    expect_declined("permessage-deflate; client_max_window_bits=16");
    expect_declined("permessage-deflate; client_max_window_bits=08");
    expect_declined("permessage-deflate; client_max_window_bits=abc");
    expect_declined("permessage-deflate; client_max_window_bits=\"1\\5\"");
    expect_declined("permessage-deflate; client_max_window_bits=150");
    expect_declined("permessage-deflate; server_no_context_takeover=1");
    expect_declined("permessage-deflate; client_no_context_takeover; client_no_context_takeover");
    expect_declined("permessage-deflate; client_max_window_bits; client_max_window_bits=10");
    expect_declined("permessage-deflate; mux");
    expect_declined("permessage-deflatex");
}

static void test_deflate_takes_first_acceptable_of_several_offers(void **state)
{
    (void)state;
    expect_answer("permessage-deflate; server_max_window_bits=10, permessage-deflate; client_max_window_bits",
                  plain_answer);
    expect_answer("x-webkit-deflate-frame, permessage-deflate; unknown, permessage-deflate", plain_answer);
    expect_answer("foo; a=\"x, permessage-deflate; b\", permessage-deflate; server_max_window_bits=15",
                  "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                  "server_max_window_bits=15");
    /* Repeated header lines arrive joined with ", ". */
    expect_answer("x-foo, , permessage-deflate", plain_answer);
}

static void test_deflate_declines_malformed_header_whole(void **state)
{
    (void)state;
    expect_declined("permessage-deflate; client_max_window_bits=\"15");  /* unterminated quote */
    expect_declined("permessage-deflate;");
    expect_declined("permessage-deflate; =15");
    expect_declined("permessage-deflate; client_max_window_bits=");
    expect_declined("permessage-deflate client_max_window_bits");
    expect_declined("permessage-deflate, ;x");
    expect_declined("permessage-deflate=1");
    expect_declined("permessage-deflate; a=\"\x01\"");
    expect_declined("\"permessage-deflate\"");
    /* Only the quoted comma makes this one offer. */
    expect_declined("foo; a=\"x, permessage-deflate; b");
}

/* ---- inflation -------------------------------------------------------------- */

/* Compresses in as a client does (raw deflate, sync flush, the 00 00 FF FF
 * tail dropped) into a malloc'ed buffer; *out_len gets its size. */
static uint8_t *client_compress(const void *in, size_t len, int level, size_t *out_len)
{
    z_stream z = {0};
    size_t cap = len + len / 100 + 64;
    uint8_t *out = malloc(cap);
    assert_non_null(out);
    assert_int_equal(deflateInit2(&z, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    assert_int_equal(deflate(&z, Z_SYNC_FLUSH), Z_OK);
    assert_int_equal(z.avail_in, 0);
    *out_len = cap - z.avail_out - 4;
    assert_memory_equal(out + *out_len, "\x00\x00\xff\xff", 4);
    deflateEnd(&z);
    return out;
}

static int setup_streams(void **state)
{
    *state = deflate_streams_create();
    return *state ? 0 : -1;
}

static int teardown_streams(void **state)
{
    deflate_streams_destroy(*state);
    return 0;
}

static void test_deflate_inflates_what_a_client_compressed(void **state)
{
    static const char text[] = "{\"type\":\"publish\",\"room\":\"lobby\",\"data\":\"hello hello hello hello\"}";
    size_t zlen, len;
    uint8_t *z = client_compress(text, sizeof text - 1, 6, &zlen), *out;

    assert_int_equal(deflate_inflate(*state, z, zlen, 1024, &out, &len), DEFLATE_OK);
    assert_int_equal(len, sizeof text - 1);
    assert_memory_equal(out, text, len);
    free(out);
    /* The stream is reset between messages: the same input again. */
    assert_int_equal(deflate_inflate(*state, z, zlen, 1024, &out, &len), DEFLATE_OK);
    assert_memory_equal(out, text, len);
    free(out);
    free(z);
    /* An empty message: the empty payload, and the final empty block. */
    assert_int_equal(deflate_inflate(*state, NULL, 0, 1024, &out, &len), DEFLATE_OK);
    assert_int_equal(len, 0);
    free(out);
    assert_int_equal(deflate_inflate(*state, (const uint8_t *)"\x03\x00", 2, 1024, &out, &len), DEFLATE_OK);
    assert_int_equal(len, 0);
    free(out);
}

static void test_deflate_inflate_limit_is_exact(void **state)
{
    size_t max = 5000, zlen, len;
    char *text = malloc(max + 1);
    uint8_t *out;
    assert_non_null(text);
    for (size_t i = 0; i <= max; i++)
        text[i] = (char)('a' + (i * 7 + i / 13) % 26);
    uint8_t *z = client_compress(text, max, 6, &zlen);
    assert_int_equal(deflate_inflate(*state, z, zlen, max, &out, &len), DEFLATE_OK);
    assert_int_equal(len, max);
    assert_memory_equal(out, text, max);
    free(out);
    free(z);
    z = client_compress(text, max + 1, 6, &zlen);
    assert_int_equal(deflate_inflate(*state, z, zlen, max, &out, &len), DEFLATE_TOO_BIG);
    assert_null(out);
    free(z);
    free(text);
}

static void test_deflate_stops_compression_bomb_at_limit(void **state)
{
    /* 16 MiB of zeros deflate to about 16 KiB; inflating stops once the
     * output passes the limit (its buffer is capped at max + 1 bytes). */
    size_t bomb = (size_t)16 << 20, zlen, len;
    uint8_t *zeros = calloc(1, bomb), *out;
    assert_non_null(zeros);
    uint8_t *z = client_compress(zeros, bomb, 9, &zlen);
    free(zeros);
    assert_true(zlen < 32 << 10);
    assert_int_equal(deflate_inflate(*state, z, zlen, 64 << 10, &out, &len), DEFLATE_TOO_BIG);
    assert_null(out);
    free(z);
}

static void test_deflate_rejects_corrupt_stream(void **state)
{
    uint8_t *out;
    size_t len;
    /* Block type 3 does not exist. */
    assert_int_equal(deflate_inflate(*state, (const uint8_t *)"\x07\x00", 2, 1024, &out, &len), DEFLATE_BAD);
    assert_null(out);
    /* A stored block whose length and its complement disagree. */
    static const uint8_t stored[] = {0x01, 0x01, 0x00, 0x00, 0x00};
    assert_int_equal(deflate_inflate(*state, stored, sizeof stored, 1024, &out, &len), DEFLATE_BAD);
    /* The streams still work afterwards. */
    size_t zlen;
    uint8_t *z = client_compress("ok", 2, 6, &zlen);
    assert_int_equal(deflate_inflate(*state, z, zlen, 1024, &out, &len), DEFLATE_OK);
    assert_memory_equal(out, "ok", 2);
    free(out);
    free(z);
}

/* ---- the shared frame ------------------------------------------------------- */

static void test_deflate_frame_is_compressed_text_with_rsv1(void **state)
{
    char text[2000];
    for (size_t i = 0; i < sizeof text; i++)
        text[i] = "{\"type\":\"message\",\"data\":\"abc\"}"[i % 32];
    struct frame *f = deflate_frame_create(*state, text, sizeof text);
    assert_non_null(f);
    assert_int_equal(f->refs, 1);
    assert_int_equal(f->bytes[0], 0x80 | WS_RSV1 | WS_OP_TEXT);
    size_t len = f->bytes[1] & 0x7F, hdr = 2;
    assert_true(len < 126);  /* 2000 repetitive bytes compress below 126 */
    assert_int_equal(f->len, hdr + len);
    uint8_t *out;
    size_t out_len;
    assert_int_equal(deflate_inflate(*state, f->bytes + hdr, len, sizeof text, &out, &out_len), DEFLATE_OK);
    assert_int_equal(out_len, sizeof text);
    assert_memory_equal(out, text, sizeof text);
    free(out);
    frame_unref(f);
    /* No context is taken over: the next frame inflates on its own. */
    struct frame *g = deflate_frame_create(*state, "hello", 5);
    assert_non_null(g);
    assert_int_equal(deflate_inflate(*state, g->bytes + 2, g->len - 2u, 5, &out, &out_len), DEFLATE_OK);
    assert_memory_equal(out, "hello", 5);
    free(out);
    frame_unref(g);
}

static void test_deflate_bound_covers_incompressible_input(void **state)
{
    (void)state;
    enum { N = 70000 };
    uint8_t *noise = malloc(N);
    size_t zlen;
    assert_non_null(noise);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < N; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        noise[i] = (uint8_t)x;
    }
    uint8_t *z = client_compress(noise, N, 0, &zlen);
    assert_true(zlen > N);
    assert_true(zlen <= deflate_bound(N));
    free(z);
    free(noise);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deflate_accepts_plain_offer),
        cmocka_unit_test(test_deflate_echoes_server_max_window_bits_15),
        cmocka_unit_test(test_deflate_declines_unacceptable_offers),
        cmocka_unit_test(test_deflate_takes_first_acceptable_of_several_offers),
        cmocka_unit_test(test_deflate_declines_malformed_header_whole),
        cmocka_unit_test_setup_teardown(test_deflate_inflates_what_a_client_compressed, setup_streams,
                                        teardown_streams),
        cmocka_unit_test_setup_teardown(test_deflate_inflate_limit_is_exact, setup_streams, teardown_streams),
        cmocka_unit_test_setup_teardown(test_deflate_stops_compression_bomb_at_limit, setup_streams,
                                        teardown_streams),
        cmocka_unit_test_setup_teardown(test_deflate_rejects_corrupt_stream, setup_streams, teardown_streams),
        cmocka_unit_test_setup_teardown(test_deflate_frame_is_compressed_text_with_rsv1, setup_streams,
                                        teardown_streams),
        cmocka_unit_test(test_deflate_bound_covers_incompressible_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
