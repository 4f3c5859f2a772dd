/* test_log.c - unit tests of core/log.c's lines: the text format (the
 * message as it is, then key=value, quoted and escaped where a value needs
 * it), the JSON format (one object: ts, level, msg, then the fields),
 * escaping of any bytes (control characters, invalid UTF-8 as U+FFFD),
 * fields left out, and lines cut short that stay well formed. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <string.h>

#include "core/log.h"

static const struct timespec ts = {.tv_sec = 1796457600, .tv_nsec = 7000000}; /* 2026-12-05T08:00:00.007Z */

static const char *line(char *buf, size_t cap, enum log_format format, const char *msg,
                        const struct log_field *fields, size_t n)
{
    log_format_line(buf, cap, format, &ts, LOG_INFO, msg, fields, n);
    return buf;
}

static void test_log_text_writes_message_then_fields(void **state)
{
    (void)state;
    char buf[512];
    const struct log_field f[] = {log_text("session", "1.2"), log_num("code", 1000), log_text("user", NULL),
                                  log_text("reason", "server shutting down"), log_text("path", "")};
    assert_string_equal(line(buf, sizeof buf, LOG_FORMAT_TEXT, "closed", f, 5),
                        "2026-12-05T08:00:00.007Z info closed session=1.2 code=1000 "
                        "reason=\"server shutting down\" path=\"\"");
}

static void test_log_text_keeps_a_plain_message_as_it_is(void **state)
{
    (void)state;
    char buf[512];
    assert_string_equal(line(buf, sizeof buf, LOG_FORMAT_TEXT, "conn 1.1: send queue over 64 bytes", NULL, 0),
                        "2026-12-05T08:00:00.007Z info conn 1.1: send queue over 64 bytes");
}

static void test_log_text_quotes_values_with_quotes_equals_and_controls(void **state)
{
    (void)state;
    char buf[512];
    const struct log_field f[] = {log_text("a", "x=y"), log_text("b", "say \"hi\"\n"), log_text("c", "caf\xc3\xa9")};
    assert_string_equal(line(buf, sizeof buf, LOG_FORMAT_TEXT, "m", f, 3),
                        "2026-12-05T08:00:00.007Z info m a=\"x=y\" b=\"say \\\"hi\\\"\\n\" c=\"caf\xc3\xa9\"");
}

static void test_log_json_is_one_object_with_ts_level_msg_and_fields(void **state)
{
    (void)state;
    char buf[512];
    const struct log_field f[] = {log_text("session", "1.2"), log_num("bytes_in", -5), log_text("user", NULL)};
    assert_string_equal(line(buf, sizeof buf, LOG_FORMAT_JSON, "closed", f, 3),
                        "{\"ts\":\"2026-12-05T08:00:00.007Z\",\"level\":\"info\",\"msg\":\"closed\","
                        "\"session\":\"1.2\",\"bytes_in\":-5}");
}

/* The escaped form of raw inside a JSON line's "v" field. */
static void assert_json_value(const char *raw, const char *escaped)
{
    char buf[512], want[512];
    const struct log_field f[] = {log_text("v", raw)};
    snprintf(want, sizeof want,
             "{\"ts\":\"2026-12-05T08:00:00.007Z\",\"level\":\"info\",\"msg\":\"m\",\"v\":\"%s\"}", escaped);
    assert_string_equal(line(buf, sizeof buf, LOG_FORMAT_JSON, "m", f, 1), want);
    json_t *j = json_loads(buf, 0, NULL);
    assert_non_null(j);
    json_decref(j);
}

static void test_log_json_escapes_quotes_backslashes_and_controls(void **state)
{
    (void)state;
    assert_json_value("a\"b\\c", "a\\\"b\\\\c");
    assert_json_value("\n\r\t\x01\x1f\x7f", "\\n\\r\\t\\u0001\\u001f\\u007f");
    assert_json_value("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
}

static void test_log_json_replaces_invalid_utf8(void **state)
{
    (void)state;
    /* A stray byte, a continuation without a lead, an overlong, a surrogate,
     * a cut character before ASCII and at the end. */
    assert_json_value("a\xff" "b", "a\xef\xbf\xbd" "b");
    assert_json_value("\x80", "\xef\xbf\xbd");
    assert_json_value("\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd");
    assert_json_value("\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    assert_json_value("\xe2\x82" "a", "\xef\xbf\xbd" "a");
    assert_json_value("a\xf0\x9f\x98", "a\xef\xbf\xbd");
}

static void test_log_json_escapes_the_message_too(void **state)
{
    (void)state;
    char buf[512];
    json_t *j = json_loads(line(buf, sizeof buf, LOG_FORMAT_JSON, "Origin \"x\"\n\xff", NULL, 0), 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "Origin \"x\"\n\xef\xbf\xbd");
    json_decref(j);
}

static void test_log_json_cut_short_stays_one_valid_object(void **state)
{
    (void)state;
    char value[300];
    memset(value, 'x', sizeof value - 1);
    value[sizeof value - 1] = '\0';
    memcpy(value + 100, "\"\n\xe2\x82\xac\xff", 7);
    const struct log_field f[] = {log_text("reason", value), log_num("code", 1000), log_text("path", value)};
    for (size_t cap = 64; cap < 800; cap++) {
        char buf[800];
        size_t len = log_format_line(buf, cap, LOG_FORMAT_JSON, &ts, LOG_WARN, "closed", f, 3);
        assert_true(len < cap);
        assert_int_equal(strlen(buf), len);
        json_error_t err;
        json_t *j = json_loads(buf, 0, &err);
        if (!j)
            fail_msg("cap %zu: %s: %s", cap, err.text, buf);
        assert_string_equal(json_string_value(json_object_get(j, "level")), "warn");
        json_decref(j);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_text_writes_message_then_fields),
        cmocka_unit_test(test_log_text_keeps_a_plain_message_as_it_is),
        cmocka_unit_test(test_log_text_quotes_values_with_quotes_equals_and_controls),
        cmocka_unit_test(test_log_json_is_one_object_with_ts_level_msg_and_fields),
        cmocka_unit_test(test_log_json_escapes_quotes_backslashes_and_controls),
        cmocka_unit_test(test_log_json_replaces_invalid_utf8),
        cmocka_unit_test(test_log_json_escapes_the_message_too),
        cmocka_unit_test(test_log_json_cut_short_stays_one_valid_object),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
