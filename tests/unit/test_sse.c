/* test_sse.c - unit tests of codec/sse.c: server events as SSE events
 * (docs/protocol.md section 8), the id line and keep-alive comment, and
 * stream ids "room=offset;room2=offset" formatted and parsed back. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "codec/sse.h"

static void assert_frame(struct frame *f, const char *want)
{
    assert_non_null(f);
    assert_int_equal(f->len, strlen(want));
    assert_memory_equal(f->bytes, want, f->len);
    frame_unref(f);
}

static void test_sse_event_line_is_the_json_type(void **state)
{
    (void)state;
    const char *json = "{\"type\":\"message\",\"room\":\"a\",\"data\":1}";
    assert_frame(sse_frame_create(json, strlen(json)),
                 "event: message\ndata: {\"type\":\"message\",\"room\":\"a\",\"data\":1}\n\n");
}

static void test_sse_json_without_leading_type_has_no_event_line(void **state)
{
    (void)state;
    assert_frame(sse_frame_create("{\"a\":1}", 7), "data: {\"a\":1}\n\n");
}

static void test_sse_newlines_in_json_become_spaces(void **state)
{
    (void)state;
    const char *json = "{\"type\":\"direct\",\n\"data\":\r\n2}";
    assert_frame(sse_frame_create(json, strlen(json)), "event: direct\ndata: {\"type\":\"direct\", \"data\":  2}\n\n");
}

static void test_sse_id_line_and_keepalive(void **state)
{
    (void)state;
    assert_frame(sse_id_frame_create("a=1-0xx", 5), "id: a=1-0\n");
    assert_frame(sse_keepalive_create(), ": ping\n\n");
}

static void test_sse_id_formats_and_parses_back(void **state)
{
    (void)state;
    struct sse_position pos[2] = {{"general", {1732312345678ULL, 0}}, {"team:42", {5, 7}}}, back[3];
    char id[2 * SSE_ID_PER_ROOM + 1];
    size_t len = sse_id_format(pos, 2, id);
    assert_string_equal(id, "general=1732312345678-0;team:42=5-7");
    assert_int_equal(len, strlen(id));
    assert_int_equal(sse_id_parse(id, back, 3), 2);
    assert_string_equal(back[1].room, "team:42");
    assert_true(back[1].offset.ms == 5 && back[1].offset.seq == 7);
    assert_int_equal(sse_id_parse("", back, 3), 0);
}

static void test_sse_id_parse_refuses_what_format_never_writes(void **state)
{
    static const char *bad[] = {
        "a", "a=", "=1-0", "a=1", "a=1-0;", ";a=1-0", "a=1-0;;b=1-0", "a=1-0;a=2-0", "a b=1-0",
        "a=1-0=2", "a=1-0;b", "a=1-0;b=1-0;c=1-0",
    };
    struct sse_position pos[2];
    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(sse_id_parse(bad[i], pos, 2), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sse_event_line_is_the_json_type),
        cmocka_unit_test(test_sse_json_without_leading_type_has_no_event_line),
        cmocka_unit_test(test_sse_newlines_in_json_become_spaces),
        cmocka_unit_test(test_sse_id_line_and_keepalive),
        cmocka_unit_test(test_sse_id_formats_and_parses_back),
        cmocka_unit_test(test_sse_id_parse_refuses_what_format_never_writes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
