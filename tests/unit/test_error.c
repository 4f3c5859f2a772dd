/* test_error.c - unit tests of core/error.c, the one table of errors: every
 * WSFAN_E* has the code clients see (docs/protocol.md sections 3 and 7), an
 * HTTP status in 400..599 and a line for humans; the statuses are the ones
 * section 7 gives; out of memory is "unavailable" to clients; anything not
 * in the table still has a code and a line, and status 400. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "core/error.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static void test_error_every_code_has_a_code_a_status_and_a_line(void **state)
{
    (void)state;
    for (int err = -1; err > -WSFAN_ERROR_COUNT; err--) {
        const char *code = wsfan_error_code(err), *line = wsfan_strerror(err);
        assert_non_null(code);
        assert_non_null(line);
        if (!code[0] || !line[0])
            fail_msg("error %d: code [%s], line [%s]", err, code, line);
        /* codes are snake_case words */
        assert_int_equal(strspn(code, "abcdefghijklmnopqrstuvwxyz_"), strlen(code));
        int status = wsfan_error_status(err);
        if (status < 400 || status > 599)
            fail_msg("error %d (%s): status %d", err, code, status);
    }
}

static void test_error_ok_is_not_an_error(void **state)
{
    (void)state;
    assert_int_equal(WSFAN_OK, 0);
    assert_string_equal(wsfan_error_code(WSFAN_OK), "ok");
    assert_int_equal(wsfan_error_status(WSFAN_OK), 200);
    assert_true(wsfan_strerror(WSFAN_OK)[0] != '\0');
}

static void test_error_codes_and_statuses_are_the_protocol_ones(void **state)
{
    static const struct {
        int err;
        const char *code;
        int status;
    } rows[] = {
        {WSFAN_EBAD_JSON, "bad_json", 400},
        {WSFAN_EBAD_COMMAND, "bad_command", 400},
        {WSFAN_EUNKNOWN_TYPE, "unknown_type", 400},
        {WSFAN_EROOM_INVALID, "room_invalid", 400},
        {WSFAN_EUSER_INVALID, "user_invalid", 400},
        {WSFAN_ENOT_MEMBER, "not_member", 400},
        {WSFAN_ETOO_MANY_ROOMS, "too_many_rooms", 400},
        {WSFAN_ETOO_LARGE, "too_large", 413},
        {WSFAN_EFORBIDDEN, "forbidden", 403},
        {WSFAN_ERATE_LIMITED, "rate_limited", 429},
        {WSFAN_EUNAVAILABLE, "unavailable", 503},
        {WSFAN_EHISTORY_UNAVAILABLE, "history_unavailable", 503},
        {WSFAN_ENOMEM, "unavailable", 503},
        {WSFAN_EBAD_REQUEST, "bad_request", 400},
        {WSFAN_EUNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", 415},
        {WSFAN_ENOT_FOUND, "not_found", 404},
        {WSFAN_EMETHOD_NOT_ALLOWED, "method_not_allowed", 405},
        {WSFAN_EUNAUTHORIZED, "unauthorized", 401},
        {WSFAN_ETOKEN_INVALID, "token_invalid", 401},
    };

    (void)state;
    /* one row per error: a new error gets a row here too */
    assert_int_equal(COUNT(rows), WSFAN_ERROR_COUNT - 1);
    for (size_t i = 0; i < COUNT(rows); i++) {
        assert_string_equal(wsfan_error_code(rows[i].err), rows[i].code);
        assert_int_equal(wsfan_error_status(rows[i].err), rows[i].status);
    }
}

static void test_error_lines_that_clients_read_are_the_documented_ones(void **state)
{
    (void)state;
    /* docs/protocol.md section 2 (rate_limited) and section 7 (the
     * room_invalid example, the 401 answer) */
    assert_string_equal(wsfan_strerror(WSFAN_ERATE_LIMITED), "too many commands waiting for replies; wait for some");
    assert_string_equal(wsfan_strerror(WSFAN_EROOM_INVALID), "room must be 1 to 128 characters of A-Z a-z 0-9 _ . : -");
    assert_string_equal(wsfan_strerror(WSFAN_ENOMEM), "out of memory");
}

static void test_error_outside_the_table_is_a_400(void **state)
{
    static const int outside[] = {1, 2, -WSFAN_ERROR_COUNT, -WSFAN_ERROR_COUNT - 1, -1000, 1000};

    (void)state;
    for (size_t i = 0; i < COUNT(outside); i++) {
        assert_int_equal(wsfan_error_status(outside[i]), 400);
        assert_true(wsfan_error_code(outside[i])[0] != '\0');
        assert_true(wsfan_strerror(outside[i])[0] != '\0');
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_every_code_has_a_code_a_status_and_a_line),
        cmocka_unit_test(test_error_ok_is_not_an_error),
        cmocka_unit_test(test_error_codes_and_statuses_are_the_protocol_ones),
        cmocka_unit_test(test_error_lines_that_clients_read_are_the_documented_ones),
        cmocka_unit_test(test_error_outside_the_table_is_a_400),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
