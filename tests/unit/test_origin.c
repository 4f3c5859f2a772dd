/* test_origin.c - unit tests of core/origin.c: same-origin handshakes
 * (host and port against Host, default ports, case), --allowed-origins
 * (exact origins, "*." subdomains, "*", schemes and ports that must
 * match), origins that are not origins ("null", paths, junk), lists that
 * are refused, and the loopback Host test of the API. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "core/origin.h"

static struct origin_list list(const char *text)
{
    struct origin_list l;
    if (origin_list_parse(text, &l))
        fail_msg("\"%s\" should be a list of origins", text);
    return l;
}

static void test_origin_same_origin_is_allowed_by_default(void **state)
{
    (void)state;
    struct origin_list none = list("");
    assert_true(origin_allowed(&none, "http://127.0.0.1:8080", "127.0.0.1:8080"));
    assert_true(origin_allowed(&none, "http://Chat.Example.COM", "chat.example.com"));
    assert_true(origin_allowed(&none, "https://chat.example.com", "chat.example.com"));
    assert_true(origin_allowed(&none, "https://chat.example.com:443", "chat.example.com"));
    assert_true(origin_allowed(&none, "http://chat.example.com", "chat.example.com:80"));
    assert_true(origin_allowed(&none, "http://[::1]:8080", "[::1]:8080"));
    /* Another host, another port: another origin. */
    assert_false(origin_allowed(&none, "http://evil.example", "chat.example.com"));
    assert_false(origin_allowed(&none, "http://127.0.0.1:9999", "127.0.0.1:8080"));
    assert_false(origin_allowed(&none, "http://127.0.0.1", "127.0.0.1:8080"));
    assert_false(origin_allowed(&none, "https://chat.example.com", "chat.example.com:80"));
    assert_false(origin_allowed(&none, "http://chat.example.com.evil.example", "chat.example.com"));
    assert_false(origin_allowed(&none, "http://localhost:8080", "127.0.0.1:8080"));
    /* Not an origin, or no Host to compare with. */
    assert_false(origin_allowed(&none, "null", "chat.example.com"));
    assert_false(origin_allowed(&none, "", "chat.example.com"));
    assert_false(origin_allowed(&none, "http://chat.example.com/", "chat.example.com"));
    assert_false(origin_allowed(&none, "chat.example.com", "chat.example.com"));
    assert_false(origin_allowed(&none, "http://user@chat.example.com", "chat.example.com"));
    assert_false(origin_allowed(&none, "http://chat.example.com", NULL));
    assert_false(origin_allowed(&none, "http://chat.example.com", "chat.example.com:abc"));
    assert_false(origin_allowed(&none, NULL, "chat.example.com"));
}

static void test_origin_list_allows_exact_origins(void **state)
{
    (void)state;
    struct origin_list l = list("https://app.example.com, http://localhost:3000");
    assert_int_equal(l.count, 2);
    assert_true(origin_allowed(&l, "https://app.example.com", "ws.example.com"));
    assert_true(origin_allowed(&l, "https://APP.example.com:443", "ws.example.com"));
    assert_true(origin_allowed(&l, "http://localhost:3000", "ws.example.com"));
    assert_false(origin_allowed(&l, "http://app.example.com", "ws.example.com"));
    assert_false(origin_allowed(&l, "https://app.example.com:8443", "ws.example.com"));
    assert_false(origin_allowed(&l, "http://localhost:3001", "ws.example.com"));
    assert_false(origin_allowed(&l, "https://x.app.example.com", "ws.example.com"));
    /* The server's own origin stays allowed. */
    assert_true(origin_allowed(&l, "https://ws.example.com", "ws.example.com"));
}

static void test_origin_wildcard_allows_subdomains_only(void **state)
{
    (void)state;
    struct origin_list l = list("https://*.example.com");
    assert_true(origin_allowed(&l, "https://app.example.com", "ws.other.org"));
    assert_true(origin_allowed(&l, "https://a.b.example.com", "ws.other.org"));
    assert_false(origin_allowed(&l, "https://example.com", "ws.other.org"));
    assert_false(origin_allowed(&l, "https://evilexample.com", "ws.other.org"));
    assert_false(origin_allowed(&l, "https://example.com.evil.org", "ws.other.org"));
    assert_false(origin_allowed(&l, "http://app.example.com", "ws.other.org"));
    assert_false(origin_allowed(&l, "https://app.example.com:8443", "ws.other.org"));
    l = list("http://*.example.com:8080");
    assert_true(origin_allowed(&l, "http://a.example.com:8080", "ws.other.org"));
    assert_false(origin_allowed(&l, "http://a.example.com", "ws.other.org"));
}

static void test_origin_star_allows_every_origin(void **state)
{
    (void)state;
    struct origin_list l = list("https://app.example.com,*");
    assert_true(l.any);
    assert_true(origin_allowed(&l, "http://evil.example", "ws.example.com"));
    assert_true(origin_allowed(&l, "null", "ws.example.com"));
}

static void test_origin_list_refuses_what_is_not_an_origin(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "app.example.com", "https://", "https://app.example.com/", "https://app.example.com/path",
        "https://app.example.com:0", "https://app.example.com:65536", "https://app.example.com:", "*.example.com",
        "https://*.", "https://a.*.example.com", "https://app.example.com,", ",https://app.example.com",
        "https://app.example.com,,http://b", "1http://a", "https://user@app.example.com", "https://[::1",
        "https://app example.com", "**",
    };
    struct origin_list l;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (origin_list_parse(bad[i], &l) == 0)
            fail_msg("\"%s\" is not a list of origins", bad[i]);
    char many[ORIGIN_LIST_MAX * 24 + 32] = "";
    for (int i = 0; i <= ORIGIN_LIST_MAX; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%shttps://a%d.example", i ? "," : "", i);
    assert_int_equal(origin_list_parse(many, &l), -1);
    assert_int_equal(origin_list_parse(" ", &l), 0);
    assert_int_equal(l.count, 0);
    assert_false(l.any);
}

static void test_origin_host_is_loopback(void **state)
{
    (void)state;
    static const char *const yes[] = {"localhost", "LOCALHOST:8080", "127.0.0.1", "127.0.0.1:8080", "127.9.8.7",
                                      "[::1]", "[::1]:8080", "[::ffff:127.0.0.1]:80"};
    static const char *const no[] = {"example.com", "localhost.example.com", "evil.localhost.com", "10.0.0.1",
                                     "0.0.0.0:8080", "[::2]", "::1", "127.0.0.1:x", "", "localhost.",
                                     "127.0.0.1.nip.io", "[::1"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (!host_is_loopback(yes[i]))
            fail_msg("Host %s is loopback", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        if (host_is_loopback(no[i]))
            fail_msg("Host %s is not loopback", no[i]);
    assert_false(host_is_loopback(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_origin_same_origin_is_allowed_by_default),
        cmocka_unit_test(test_origin_list_allows_exact_origins),
        cmocka_unit_test(test_origin_wildcard_allows_subdomains_only),
        cmocka_unit_test(test_origin_star_allows_every_origin),
        cmocka_unit_test(test_origin_list_refuses_what_is_not_an_origin),
        cmocka_unit_test(test_origin_host_is_loopback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
