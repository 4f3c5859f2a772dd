/* test_bucket.c - unit tests of core/bucket.c: a zeroed bucket starts
 * full (a burst of rate), refills at rate tokens a second and never past
 * rate, keeps fractions of a token between calls, and gives nothing while
 * empty. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/bucket.h"

#define T0 1000000ULL

static int takes(struct bucket *b, uint64_t now, uint32_t rate, int n)
{
    int got = 0;
    for (int i = 0; i < n; i++)
        got += bucket_take(b, now, rate);
    return got;
}

static void test_bucket_starts_full_with_a_burst_of_rate(void **state)
{
    (void)state;
    struct bucket b = {0};
    assert_int_equal(takes(&b, T0, 100, 150), 100);
    assert_int_equal(bucket_take(&b, T0, 100), 0);
}

static void test_bucket_refills_at_rate(void **state)
{
    (void)state;
    struct bucket b = {0};
    assert_int_equal(takes(&b, T0, 100, 100), 100);
    /* 10 ms at 100 a second: one token. */
    assert_int_equal(takes(&b, T0 + 10, 100, 5), 1);
    /* Half a second: 50. */
    assert_int_equal(takes(&b, T0 + 510, 100, 80), 50);
    /* Fractions add up: 3 ms four times at 100/s is 1.2 tokens. */
    assert_int_equal(takes(&b, T0 + 513, 100, 1) + takes(&b, T0 + 516, 100, 1) + takes(&b, T0 + 519, 100, 1) +
                         takes(&b, T0 + 522, 100, 1),
                     1);
}

static void test_bucket_never_holds_more_than_rate(void **state)
{
    (void)state;
    struct bucket b = {0};
    assert_int_equal(takes(&b, T0, 5, 5), 5);
    /* An hour idle gives one second's worth. */
    assert_int_equal(takes(&b, T0 + 3600 * 1000, 5, 20), 5);
    /* A slow rate: 1 a second. */
    struct bucket slow = {0};
    assert_int_equal(takes(&slow, T0, 1, 3), 1);
    assert_int_equal(takes(&slow, T0 + 999, 1, 3), 0);
    assert_int_equal(takes(&slow, T0 + 1000, 1, 3), 1);
    /* The highest rate does not overflow. */
    struct bucket fast = {0};
    assert_int_equal(takes(&fast, T0, BUCKET_RATE_MAX, 10), 10);
    assert_true(fast.level <= (uint64_t)BUCKET_RATE_MAX * 1000);
}

static void test_bucket_clock_going_back_gives_nothing(void **state)
{
    (void)state;
    struct bucket b = {0};
    assert_int_equal(takes(&b, T0, 10, 10), 10);
    assert_int_equal(takes(&b, T0 - 500, 10, 10), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_starts_full_with_a_burst_of_rate),
        cmocka_unit_test(test_bucket_refills_at_rate),
        cmocka_unit_test(test_bucket_never_holds_more_than_rate),
        cmocka_unit_test(test_bucket_clock_going_back_gives_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
