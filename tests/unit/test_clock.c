/* test_clock.c - unit tests of core/clock.h: clock_wall_ms is the wall
 * clock in milliseconds since the epoch (the "ts" of events, offsets of the
 * memory store), and clock_mono_ms never goes back. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <time.h>

#include "core/clock.h"

static void test_clock_wall_ms_is_wall_clock_milliseconds(void **state)
{
    uint64_t before = (uint64_t)time(NULL) * 1000;
    uint64_t now = clock_wall_ms();
    uint64_t after = ((uint64_t)time(NULL) + 1) * 1000;

    (void)state;
    assert_true(now >= before);
    assert_true(now <= after);
}

static void test_clock_mono_ms_never_goes_back_and_counts_milliseconds(void **state)
{
    uint64_t first = clock_mono_ms(), last = first;

    (void)state;
    for (int i = 0; i < 1000; i++) {
        uint64_t now = clock_mono_ms();
        assert_true(now >= last);
        last = now;
    }
    /* 20 ms of sleep is at least 20 ms on it, and not seconds */
    nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    last = clock_mono_ms();
    assert_true(last - first >= 20);
    assert_true(last - first < 10 * 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clock_wall_ms_is_wall_clock_milliseconds),
        cmocka_unit_test(test_clock_mono_ms_never_goes_back_and_counts_milliseconds),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
