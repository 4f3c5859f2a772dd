/* test_netaddr.c - unit tests of core/netaddr.c: IPv4 and IPv6 addresses
 * (and what is not one), the loopback test, CIDR ranges (prefixes of
 * every length, IPv4 inside IPv6, host bits), lists for
 * --trusted-proxies, and the client address behind trusted proxies
 * (X-Forwarded-For: the right-most untrusted entry, ports, forged
 * entries, garbage, untrusted peers). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "core/netaddr.h"

static struct net_addr addr(const char *text)
{
    struct net_addr a;
    if (net_addr_parse(text, strlen(text), &a))
        fail_msg("%s should be an address", text);
    return a;
}

static void assert_addr(const struct net_addr *a, const char *want)
{
    char text[NETADDR_TEXT_MAX];
    net_addr_format(a, text);
    assert_string_equal(text, want);
}

static int in_range(const char *cidr, const char *a)
{
    struct net_cidr c;
    if (net_cidr_parse(cidr, strlen(cidr), &c))
        fail_msg("%s should be a range", cidr);
    struct net_addr x = addr(a);
    return net_cidr_match(&c, &x);
}

/* ---- Addresses ------------------------------------------------------------ */

static void test_netaddr_parses_ipv4_and_ipv6(void **state)
{
    (void)state;
    struct net_addr a = addr("192.0.2.1");
    assert_true(net_addr_is_v4(&a));
    assert_addr(&a, "192.0.2.1");
    a = addr("2001:DB8::1");
    assert_false(net_addr_is_v4(&a));
    assert_addr(&a, "2001:db8::1");
    /* An IPv4-mapped IPv6 address is the IPv4 address. */
    a = addr("::ffff:198.51.100.7");
    assert_true(net_addr_is_v4(&a));
    assert_addr(&a, "198.51.100.7");

    static const char *const bad[] = {"", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.4 ", " 1.2.3.4", "::g",
                                      "[::1]", "1.2.3.4:80", "fe80::1%eth0", "localhost", "01234567890123456789012345678901234567890123456789"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct net_addr x;
        if (net_addr_parse(bad[i], strlen(bad[i]), &x) == 0)
            fail_msg("%s is not an address", bad[i]);
    }
}

static void test_netaddr_from_sockaddr(void **state)
{
    (void)state;
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(80)};
    inet_pton(AF_INET, "203.0.113.9", &in.sin_addr);
    struct net_addr a;
    assert_int_equal(net_addr_from_sockaddr((struct sockaddr *)&in, &a), 0);
    assert_addr(&a, "203.0.113.9");
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "2001:db8::5", &in6.sin6_addr);
    assert_int_equal(net_addr_from_sockaddr((struct sockaddr *)&in6, &a), 0);
    assert_addr(&a, "2001:db8::5");
    struct sockaddr other = {.sa_family = AF_UNIX};
    assert_int_equal(net_addr_from_sockaddr(&other, &a), -1);
}

static void test_netaddr_loopback_is_127_8_and_v6_one(void **state)
{
    (void)state;
    static const char *const yes[] = {"127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1"};
    static const char *const no[] = {"128.0.0.1", "10.0.0.1", "0.0.0.0", "::", "::2", "fe80::1", "::127.0.0.1"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        struct net_addr a = addr(yes[i]);
        if (!net_addr_is_loopback(&a))
            fail_msg("%s is loopback", yes[i]);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        struct net_addr a = addr(no[i]);
        if (net_addr_is_loopback(&a))
            fail_msg("%s is not loopback", no[i]);
    }
}

/* ---- Ranges --------------------------------------------------------------- */

static void test_netaddr_cidr_matches_its_prefix(void **state)
{
    (void)state;
    assert_true(in_range("10.0.0.0/8", "10.255.1.2"));
    assert_false(in_range("10.0.0.0/8", "11.0.0.0"));
    assert_true(in_range("192.168.1.0/24", "192.168.1.255"));
    assert_false(in_range("192.168.1.0/24", "192.168.2.0"));
    assert_true(in_range("172.16.0.0/12", "172.31.255.255"));
    assert_false(in_range("172.16.0.0/12", "172.32.0.0"));
    assert_true(in_range("203.0.113.5", "203.0.113.5"));
    assert_false(in_range("203.0.113.5", "203.0.113.6"));
    assert_true(in_range("203.0.113.5/32", "203.0.113.5"));
    assert_true(in_range("0.0.0.0/0", "198.51.100.1"));
    /* An IPv4 range holds IPv4 addresses only, /0 included. */
    assert_false(in_range("0.0.0.0/0", "2001:db8::1"));
    assert_true(in_range("2001:db8::/32", "2001:db8:ffff::1"));
    assert_false(in_range("2001:db8::/32", "2001:db9::1"));
    assert_true(in_range("2001:db8::/33", "2001:db8:7fff::1"));
    assert_false(in_range("2001:db8::/33", "2001:db8:8000::1"));
    assert_true(in_range("::1/128", "::1"));
    assert_true(in_range("::/0", "2001:db8::1"));
    assert_true(in_range("::/0", "10.0.0.1")); /* mapped addresses are IPv6 too */
    /* Bits past the prefix are ignored. */
    assert_true(in_range("10.1.2.3/8", "10.9.9.9"));
}

static void test_netaddr_cidr_refuses_bad_ranges(void **state)
{
    (void)state;
    static const char *const bad[] = {"10.0.0.0/33", "10.0.0.0/", "/8", "10.0.0.0/-1", "10.0.0.0/8/8",
                                      "2001:db8::/129", "10.0.0.0/a", "10.0.0.0 /8", "example.com/8", "10.0.0.0/0008"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct net_cidr c;
        if (net_cidr_parse(bad[i], strlen(bad[i]), &c) == 0)
            fail_msg("%s is not a range", bad[i]);
    }
}

static void test_netaddr_cidr_list_parses_commas_and_spaces(void **state)
{
    (void)state;
    struct net_cidr_list l;
    assert_int_equal(net_cidr_list_parse("", &l), 0);
    assert_int_equal(l.count, 0);
    assert_int_equal(net_cidr_list_parse("  ", &l), 0);
    assert_int_equal(l.count, 0);
    assert_int_equal(net_cidr_list_parse("10.0.0.0/8, 192.168.0.1 ,::1", &l), 0);
    assert_int_equal(l.count, 3);
    struct net_addr a = addr("10.2.3.4"), b = addr("192.168.0.1"), c = addr("::1"), d = addr("192.168.0.2");
    assert_true(net_cidr_list_match(&l, &a));
    assert_true(net_cidr_list_match(&l, &b));
    assert_true(net_cidr_list_match(&l, &c));
    assert_false(net_cidr_list_match(&l, &d));
    static const char *const bad[] = {"10.0.0.0/8,", ",10.0.0.0/8", "10.0.0.0/8,,::1", "10.0.0.0/8 ::1", "x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (net_cidr_list_parse(bad[i], &l) == 0)
            fail_msg("\"%s\" is not a list of ranges", bad[i]);
    char many[NETADDR_LIST_MAX * 16 + 16] = "";
    for (int i = 0; i <= NETADDR_LIST_MAX; i++)
        sprintf(many + strlen(many), "%s10.0.%d.0/24", i ? "," : "", i);
    assert_int_equal(net_cidr_list_parse(many, &l), -1);
}

/* ---- X-Forwarded-For -------------------------------------------------------- */

static const char *client_of(const char *trusted, const char *peer, const char *xff, int *from_header)
{
    static char text[NETADDR_TEXT_MAX];
    struct net_cidr_list l;
    assert_int_equal(net_cidr_list_parse(trusted, &l), 0);
    struct net_addr p = addr(peer), out;
    *from_header = net_addr_forwarded(&l, &p, xff, &out);
    net_addr_format(&out, text);
    return text;
}

static void test_netaddr_forwarded_takes_rightmost_untrusted(void **state)
{
    (void)state;
    int h;
    /* One proxy: the entry it appended. */
    assert_string_equal(client_of("10.0.0.0/8", "10.0.0.2", "203.0.113.7", &h), "203.0.113.7");
    assert_true(h);
    /* The client forged entries on the left: they are never reached. */
    assert_string_equal(client_of("10.0.0.0/8", "10.0.0.2", "1.1.1.1, 2.2.2.2, 203.0.113.7", &h), "203.0.113.7");
    /* Two proxies: the inner one's entry is trusted and skipped. */
    assert_string_equal(client_of("10.0.0.0/8", "10.0.0.2", "1.1.1.1, 203.0.113.7, 10.0.0.9", &h), "203.0.113.7");
    /* Every entry trusted: the left-most. */
    assert_string_equal(client_of("10.0.0.0/8", "10.0.0.2", "10.1.1.1, 10.0.0.9", &h), "10.1.1.1");
    /* Ports and brackets, IPv6. */
    assert_string_equal(client_of("10.0.0.0/8", "10.0.0.2", "203.0.113.7:5555", &h), "203.0.113.7");
    assert_string_equal(client_of("10.0.0.0/8", "10.0.0.2", "[2001:db8::7]:443", &h), "2001:db8::7");
    assert_string_equal(client_of("::1", "::1", " 2001:db8::7 ", &h), "2001:db8::7");
}

static void test_netaddr_forwarded_ignores_what_it_cannot_trust(void **state)
{
    (void)state;
    int h;
    /* A peer that is not a trusted proxy: its header is ignored. */
    assert_string_equal(client_of("10.0.0.0/8", "198.51.100.4", "203.0.113.7", &h), "198.51.100.4");
    assert_false(h);
    /* No list, no header. */
    assert_string_equal(client_of("", "10.0.0.2", "203.0.113.7", &h), "10.0.0.2");
    assert_false(h);
    assert_string_equal(client_of("10.0.0.0/8", "10.0.0.2", NULL, &h), "10.0.0.2");
    assert_false(h);
    assert_string_equal(client_of("10.0.0.0/8", "10.0.0.2", "", &h), "10.0.0.2");
    assert_false(h);
    /* Garbage ends the walk at the last trusted hop, never beyond. */
    assert_string_equal(client_of("10.0.0.0/8", "10.0.0.2", "203.0.113.7, unknown", &h), "10.0.0.2");
    assert_false(h);
    assert_string_equal(client_of("10.0.0.0/8", "10.0.0.2", "unknown, 10.0.0.9", &h), "10.0.0.9");
    assert_true(h);
    assert_string_equal(client_of("10.0.0.0/8", "10.0.0.2", "203.0.113.7,,10.0.0.9", &h), "10.0.0.9");
    assert_string_equal(client_of("10.0.0.0/8", "10.0.0.2", "1.2.3.4:99999x", &h), "10.0.0.2");
    assert_string_equal(client_of("10.0.0.0/8", "10.0.0.2", "2001:db8::1:80:90", &h), "2001:db8::1:80:90");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_netaddr_parses_ipv4_and_ipv6),
        cmocka_unit_test(test_netaddr_from_sockaddr),
        cmocka_unit_test(test_netaddr_loopback_is_127_8_and_v6_one),
        cmocka_unit_test(test_netaddr_cidr_matches_its_prefix),
        cmocka_unit_test(test_netaddr_cidr_refuses_bad_ranges),
        cmocka_unit_test(test_netaddr_cidr_list_parses_commas_and_spaces),
        cmocka_unit_test(test_netaddr_forwarded_takes_rightmost_untrusted),
        cmocka_unit_test(test_netaddr_forwarded_ignores_what_it_cannot_trust),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
