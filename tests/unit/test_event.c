/* test_event.c - unit tests of event.c: the exact JSON text of each server
 * event (PROTOCOL.md section 3), that it parses back as the same values,
 * that data is spliced verbatim by its length, and the clock. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "event.h"

/* Checks that text (of len bytes, NUL-terminated) is exactly expected and
 * valid JSON; returns the parsed object for more checks. */
static json_t *expect_event(char *text, size_t len, const char *expected)
{
    json_error_t err;
    json_t *v;

    assert_non_null(text);
    assert_string_equal(text, expected);
    assert_int_equal(len, strlen(expected));
    assert_int_equal(text[len], '\0');
    v = json_loadb(text, len, 0, &err);
    if (!v)
        fail_msg("not JSON: %s at %d: %s", err.text, err.position, text);
    assert_true(json_is_object(v));
    return v;
}

static const char *str_field(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

/* ---- message ---------------------------------------------------------------- */

static void test_event_message_with_offset_and_from(void **state)
{
    size_t len = 0;
    char *s = event_message("general", "1732312345678-0", "alice", "{\"text\":\"hi\"}", 13, 1732312345678ULL,
                            &len);
    json_t *v;

    (void)state;
    v = expect_event(s, len,
                     "{\"type\":\"message\",\"room\":\"general\",\"offset\":\"1732312345678-0\",\"from\":\"alice\","
                     "\"data\":{\"text\":\"hi\"},\"ts\":1732312345678}");
    assert_string_equal(str_field(v, "type"), "message");
    assert_string_equal(str_field(v, "room"), "general");
    assert_string_equal(str_field(v, "offset"), "1732312345678-0");
    assert_string_equal(str_field(v, "from"), "alice");
    assert_string_equal(json_string_value(json_object_get(json_object_get(v, "data"), "text")), "hi");
    assert_int_equal(json_integer_value(json_object_get(v, "ts")), 1732312345678LL);
    assert_int_equal(json_object_size(v), 6);
    json_decref(v);
    free(s);
}

static void test_event_message_without_offset_omits_the_field(void **state)
{
    size_t len = 0;
    char *s = event_message("r", NULL, "bob", "[1,2,3]", 7, 5, &len);
    json_t *v;

    (void)state;
    v = expect_event(s, len, "{\"type\":\"message\",\"room\":\"r\",\"from\":\"bob\",\"data\":[1,2,3],\"ts\":5}");
    assert_null(json_object_get(v, "offset"));
    assert_int_equal(json_object_size(v), 5);
    json_decref(v);
    free(s);
}

static void test_event_message_from_service_is_null(void **state)
{
    size_t len = 0;
    char *s = event_message("r", "7-3", NULL, "null", 4, 7, &len);
    json_t *v;

    (void)state;
    v = expect_event(s, len,
                     "{\"type\":\"message\",\"room\":\"r\",\"offset\":\"7-3\",\"from\":null,\"data\":null,\"ts\":7}");
    assert_true(json_is_null(json_object_get(v, "from")));
    assert_true(json_is_null(json_object_get(v, "data")));
    json_decref(v);
    free(s);
}

static void test_event_message_splices_data_verbatim_by_length(void **state)
{
    /* Only data_len bytes count: the buffer goes on and is not terminated. */
    static const char data[] = {'"', 'a', '%', 's', '\\', 'n', '"', 'X', 'Y'};
    size_t len = 0;
    char *s = event_message("r", NULL, NULL, data, 7, 0, &len);
    json_t *v;

    (void)state;
    v = expect_event(s, len, "{\"type\":\"message\",\"room\":\"r\",\"from\":null,\"data\":\"a%s\\n\",\"ts\":0}");
    assert_string_equal(str_field(v, "data"), "a%s\n");
    json_decref(v);
    free(s);
}

static void test_event_message_keeps_unicode_and_escapes_of_data(void **state)
{
    const char *data = "{\"s\":\"caf\xc3\xa9 \\u00e9 \\\"q\\\"\",\"n\":-1.5e3,\"b\":[true,false,{}]}";
    size_t len = 0;
    char *s = event_message("r", "1-0", "u", data, strlen(data), 1, &len);
    char expected[256];
    json_t *v;

    (void)state;
    snprintf(expected, sizeof expected,
             "{\"type\":\"message\",\"room\":\"r\",\"offset\":\"1-0\",\"from\":\"u\",\"data\":%s,\"ts\":1}", data);
    v = expect_event(s, len, expected);
    assert_string_equal(json_string_value(json_object_get(json_object_get(v, "data"), "s")),
                        "caf\xc3\xa9 \xc3\xa9 \"q\"");
    json_decref(v);
    free(s);
}

static void test_event_message_with_longest_names_and_offset(void **state)
{
    char room[129], user[129], expected[1024];
    const char *offset = "18446744073709551615-18446744073709551615";
    size_t len = 0;
    char *s;
    json_t *v;

    (void)state;
    memset(room, 'r', 128);
    room[128] = '\0';
    memset(user, 'u', 128);
    user[128] = '\0';
    s = event_message(room, offset, user, "{}", 2, UINT64_MAX, &len);
    snprintf(expected, sizeof expected,
             "{\"type\":\"message\",\"room\":\"%s\",\"offset\":\"%s\",\"from\":\"%s\",\"data\":{},"
             "\"ts\":18446744073709551615}",
             room, offset, user);
    /* ts past INT64_MAX is not something jansson reads: compare text only. */
    assert_non_null(s);
    assert_string_equal(s, expected);
    assert_int_equal(len, strlen(expected));
    free(s);

    s = event_message(room, offset, user, "{}", 2, 1, &len);
    snprintf(expected, sizeof expected,
             "{\"type\":\"message\",\"room\":\"%s\",\"offset\":\"%s\",\"from\":\"%s\",\"data\":{},\"ts\":1}", room,
             offset, user);
    v = expect_event(s, len, expected);
    assert_string_equal(str_field(v, "room"), room);
    assert_string_equal(str_field(v, "from"), user);
    json_decref(v);
    free(s);
}

/* ---- direct and broadcast --------------------------------------------------- */

static void test_event_direct_and_broadcast(void **state)
{
    size_t len = 0;
    char *s;
    json_t *v;

    (void)state;
    s = event_direct("direct", "alice", "{\"x\":1}", 7, 1732312345678ULL, &len);
    v = expect_event(s, len, "{\"type\":\"direct\",\"from\":\"alice\",\"data\":{\"x\":1},\"ts\":1732312345678}");
    assert_int_equal(json_object_size(v), 4);
    json_decref(v);
    free(s);

    s = event_direct("broadcast", NULL, "\"hello\"", 7, 42, &len);
    v = expect_event(s, len, "{\"type\":\"broadcast\",\"from\":null,\"data\":\"hello\",\"ts\":42}");
    assert_true(json_is_null(json_object_get(v, "from")));
    json_decref(v);
    free(s);

    /* data by length here too */
    s = event_direct("direct", "a", "123456", 3, 0, &len);
    v = expect_event(s, len, "{\"type\":\"direct\",\"from\":\"a\",\"data\":123,\"ts\":0}");
    json_decref(v);
    free(s);
}

/* ---- presence --------------------------------------------------------------- */

static void test_event_presence_join_and_leave(void **state)
{
    size_t len = 0;
    char *s;
    json_t *v;

    (void)state;
    s = event_presence("presence_join", "general", "alice", &len);
    v = expect_event(s, len, "{\"type\":\"presence_join\",\"room\":\"general\",\"user\":\"alice\"}");
    assert_int_equal(json_object_size(v), 3);
    json_decref(v);
    free(s);

    s = event_presence("presence_leave", "a:b.c-d_e", "u.1", &len);
    v = expect_event(s, len, "{\"type\":\"presence_leave\",\"room\":\"a:b.c-d_e\",\"user\":\"u.1\"}");
    json_decref(v);
    free(s);
}

/* ---- clock ------------------------------------------------------------------ */

static void test_event_now_ms_is_wall_clock_milliseconds(void **state)
{
    uint64_t before = (uint64_t)time(NULL) * 1000;
    uint64_t now = event_now_ms();
    uint64_t after = ((uint64_t)time(NULL) + 1) * 1000;

    (void)state;
    assert_true(now >= before);
    assert_true(now <= after);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_message_with_offset_and_from),
        cmocka_unit_test(test_event_message_without_offset_omits_the_field),
        cmocka_unit_test(test_event_message_from_service_is_null),
        cmocka_unit_test(test_event_message_splices_data_verbatim_by_length),
        cmocka_unit_test(test_event_message_keeps_unicode_and_escapes_of_data),
        cmocka_unit_test(test_event_message_with_longest_names_and_offset),
        cmocka_unit_test(test_event_direct_and_broadcast),
        cmocka_unit_test(test_event_presence_join_and_leave),
        cmocka_unit_test(test_event_now_ms_is_wall_clock_milliseconds),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
