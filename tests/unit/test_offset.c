/* test_offset.c - unit tests of codec/offset.c: offsets "<ms>-<seq>" of
 * persisted messages (docs/protocol.md section 2, "Offsets, history and
 * recovery"): both parts required, 1 to 20 digits each, at most 2^64-1;
 * formatted back to the same text; ordered by ms, then seq. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "codec/offset.h"

static void test_offset_parse_accepts_ms_dash_seq(void **state)
{
    struct offset o;

    (void)state;
    assert_int_equal(offset_parse("0-0", &o), 0);
    assert_true(o.ms == 0 && o.seq == 0);
    assert_int_equal(offset_parse("1732312345678-5", &o), 0);
    assert_true(o.ms == 1732312345678ULL && o.seq == 5);
    assert_int_equal(offset_parse("18446744073709551615-18446744073709551615", &o), 0);
    assert_true(o.ms == UINT64_MAX && o.seq == UINT64_MAX);
}

static void test_offset_parse_rejects_everything_else(void **state)
{
    static const char *bad[] = {
        "", "-", "1", "1-", "-1", "a-1", "1-a", "1-2-3", " 1-2", "1-2 ", "+1-2", "1-+2", "1--2", "1.5-2", "0x1-0",
        "18446744073709551616-0", /* 2^64 */
        "1-18446744073709551616",
        "99999999999999999999-0", /* 20 digits, past 2^64 */
        "100000000000000000000-0", /* 21 digits */
        "\xef\xbc\x91-0",          /* a full-width digit */
    };
    struct offset o = {77, 88};

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (offset_parse(bad[i], &o) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
        /* o is left alone */
        assert_true(o.ms == 77 && o.seq == 88);
    }
}

static void test_offset_format_round_trips(void **state)
{
    struct offset in[] = {{0, 0}, {1, 2}, {1732312345678ULL, 0}, {UINT64_MAX, UINT64_MAX}};
    const char *text[] = {"0-0", "1-2", "1732312345678-0", "18446744073709551615-18446744073709551615"};
    char buf[OFFSET_MAX_LEN];
    struct offset out;

    (void)state;
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        memset(buf, 'x', sizeof buf);
        offset_format(in[i], buf);
        assert_string_equal(buf, text[i]);
        assert_int_equal(offset_parse(buf, &out), 0);
        assert_int_equal(offset_cmp(in[i], out), 0);
    }
}

static void test_offset_cmp_orders_by_ms_then_seq(void **state)
{
    (void)state;
    assert_int_equal(offset_cmp((struct offset){1, 0}, (struct offset){1, 0}), 0);
    assert_int_equal(offset_cmp((struct offset){1, 0}, (struct offset){1, 1}), -1);
    assert_int_equal(offset_cmp((struct offset){1, 1}, (struct offset){1, 0}), 1);
    assert_int_equal(offset_cmp((struct offset){1, 99}, (struct offset){2, 0}), -1);
    assert_int_equal(offset_cmp((struct offset){2, 0}, (struct offset){1, 99}), 1);
    assert_int_equal(offset_cmp((struct offset){0, UINT64_MAX}, (struct offset){UINT64_MAX, 0}), -1);
    assert_int_equal(offset_cmp((struct offset){UINT64_MAX, UINT64_MAX}, (struct offset){UINT64_MAX, UINT64_MAX}),
                     0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_offset_parse_accepts_ms_dash_seq),
        cmocka_unit_test(test_offset_parse_rejects_everything_else),
        cmocka_unit_test(test_offset_format_round_trips),
        cmocka_unit_test(test_offset_cmp_orders_by_ms_then_seq),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
