/* test_addr_count.c - unit tests of core/addr_count.c: counts per address
 * up to a limit, given back one by one, IPv4 addresses apart, an IPv6
 * /64 counted as one, no limit with 0, and counts kept right by several
 * threads at once. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <uv.h>

#include "core/addr_count.h"

static struct net_addr addr(const char *text)
{
    struct net_addr a;
    assert_int_equal(net_addr_parse(text, strlen(text), &a), 0);
    return a;
}

static void test_addr_count_stops_at_the_limit(void **state)
{
    (void)state;
    struct addr_count *t = addr_count_create();
    struct net_addr a = addr("198.51.100.1"), b = addr("198.51.100.2");
    for (int i = 0; i < 3; i++)
        assert_int_equal(addr_count_take(t, &a, 3), 0);
    assert_int_equal(addr_count_take(t, &a, 3), -1);
    assert_int_equal(addr_count_get(t, &a), 3);
    assert_int_equal(addr_count_take(t, &b, 3), 0); /* another address */
    addr_count_give(t, &a);
    assert_int_equal(addr_count_take(t, &a, 3), 0);
    for (int i = 0; i < 3; i++)
        addr_count_give(t, &a);
    addr_count_give(t, &a); /* more gives than takes: stays at zero */
    assert_int_equal(addr_count_get(t, &a), 0);
    assert_int_equal(addr_count_get(t, &b), 1);
    addr_count_give(t, &b);
    addr_count_destroy(t);
}

static void test_addr_count_ipv6_counts_by_64(void **state)
{
    (void)state;
    struct addr_count *t = addr_count_create();
    struct net_addr a = addr("2001:db8:1:2::1"), b = addr("2001:db8:1:2:ffff::9"), c = addr("2001:db8:1:3::1");
    assert_int_equal(addr_count_take(t, &a, 2), 0);
    assert_int_equal(addr_count_take(t, &b, 2), 0);
    assert_int_equal(addr_count_take(t, &a, 2), -1);
    assert_int_equal(addr_count_take(t, &c, 2), 0);
    assert_int_equal(addr_count_get(t, &b), 2);
    addr_count_give(t, &b);
    addr_count_give(t, &a);
    addr_count_give(t, &c);
    assert_int_equal(addr_count_get(t, &a), 0);
    addr_count_destroy(t);
}

static void test_addr_count_zero_is_no_limit(void **state)
{
    (void)state;
    struct addr_count *t = addr_count_create();
    struct net_addr a = addr("127.0.0.1");
    for (int i = 0; i < 10000; i++)
        assert_int_equal(addr_count_take(t, &a, 0), 0);
    assert_int_equal(addr_count_get(t, &a), 10000);
    addr_count_destroy(t);
}

struct worker_arg {
    struct addr_count *t;
    int taken;
};

static void worker(void *arg)
{
    struct worker_arg *w = arg;
    struct net_addr a = addr("203.0.113.5");
    for (int i = 0; i < 20000; i++) {
        if (addr_count_take(w->t, &a, 1000) == 0)
            w->taken++;
        if (i % 3 == 0 && w->taken) {
            addr_count_give(w->t, &a);
            w->taken--;
        }
    }
}

static void test_addr_count_threads_keep_the_count(void **state)
{
    (void)state;
    struct addr_count *t = addr_count_create();
    struct worker_arg args[4];
    uv_thread_t threads[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct worker_arg){t, 0};
        assert_int_equal(uv_thread_create(&threads[i], worker, &args[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        uv_thread_join(&threads[i]);
        total += args[i].taken;
    }
    struct net_addr a = addr("203.0.113.5");
    assert_int_equal(addr_count_get(t, &a), total);
    assert_true(total <= 1000);
    addr_count_destroy(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addr_count_stops_at_the_limit),
        cmocka_unit_test(test_addr_count_ipv6_counts_by_64),
        cmocka_unit_test(test_addr_count_zero_is_no_limit),
        cmocka_unit_test(test_addr_count_threads_keep_the_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
