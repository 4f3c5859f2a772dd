/* test_redis.c - unit tests of redis.c, URL parsing only (the connection
 * needs a server: tests/integration). redis_url_parse reads
 * redis://[[user]:pass@]host[:port][/db] and redis://secret@host (a
 * password alone, as redis-cli reads it), and refuses anything else; redis_url_mask hides
 * the password. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "net/redis.h"
#include "net/redis_cluster.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static void expect_url(const char *s, const char *host, int port, const char *user, const char *pass, int db)
{
    struct redis_url u;

    if (redis_url_parse(s, &u) != 0)
        fail_msg("refused %s", s);
    assert_string_equal(u.host, host);
    assert_int_equal(u.port, port);
    assert_string_equal(u.user, user);
    assert_string_equal(u.pass, pass);
    assert_int_equal(u.db, db);
}

static void expect_refused(const char *s)
{
    struct redis_url u;

    if (redis_url_parse(s, &u) != -1)
        fail_msg("accepted [%s] as host=%s port=%d user=%s pass=%s db=%d", s, u.host, u.port, u.user, u.pass, u.db);
}

/* "redis://" + prefix + n copies of ch + suffix. */
static const char *url_with(const char *prefix, char ch, size_t n, const char *suffix)
{
    static char buf[1024];
    size_t len = (size_t)snprintf(buf, sizeof buf, "redis://%s", prefix);

    assert_true(len + n + strlen(suffix) < sizeof buf);
    memset(buf + len, ch, n);
    snprintf(buf + len + n, sizeof buf - len - n, "%s", suffix);
    return buf;
}

static void test_redis_url_host_alone_takes_the_defaults(void **state)
{
    (void)state;
    expect_url("redis://localhost", "localhost", 6379, "", "", 0);
    expect_url("redis://127.0.0.1", "127.0.0.1", 6379, "", "", 0);
    expect_url("redis://redis.internal.example.com", "redis.internal.example.com", 6379, "", "", 0);
    expect_url("redis://h", "h", 6379, "", "", 0);
}

static void test_redis_url_host_port(void **state)
{
    (void)state;
    expect_url("redis://localhost:6380", "localhost", 6380, "", "", 0);
    expect_url("redis://10.0.0.5:1", "10.0.0.5", 1, "", "", 0);
    expect_url("redis://h:65535", "h", 65535, "", "", 0);
}

static void test_redis_url_host_port_db(void **state)
{
    (void)state;
    expect_url("redis://localhost:6379/0", "localhost", 6379, "", "", 0);
    expect_url("redis://localhost:6379/2", "localhost", 6379, "", "", 2);
    expect_url("redis://localhost:6379/15", "localhost", 6379, "", "", 15);
    expect_url("redis://localhost/3", "localhost", 6379, "", "", 3);
    /* An empty path is database 0. */
    expect_url("redis://localhost:6379/", "localhost", 6379, "", "", 0);
}

static void test_redis_url_credentials(void **state)
{
    (void)state;
    expect_url("redis://:s3cret@localhost:6379", "localhost", 6379, "", "s3cret", 0);
    expect_url("redis://app:s3cret@localhost:6379/2", "localhost", 6379, "app", "s3cret", 2);
    expect_url("redis://app:s3cret@localhost", "localhost", 6379, "app", "s3cret", 0);
    /* A password alone, as redis-cli reads it. */
    expect_url("redis://s3cret@localhost", "localhost", 6379, "", "s3cret", 0);
    expect_url("redis://s3cret@localhost:7000/1", "localhost", 7000, "", "s3cret", 1);
    /* The password runs to the last '@' and may hold ':' and '@'. */
    expect_url("redis://:p@ss:w0rd@localhost", "localhost", 6379, "", "p@ss:w0rd", 0);
    expect_url("redis://app:a:b@c@h:1/1", "h", 1, "app", "a:b@c", 1);
    /* An empty password after a user. */
    expect_url("redis://app:@h", "h", 6379, "app", "", 0);
}

static void test_redis_url_refuses_other_schemes(void **state)
{
    static const char *bad[] = {
        "localhost",      "localhost:6379", "//localhost",     "http://localhost", "https://localhost:6379",
        "redisss://localhost", "rediss:/localhost", "rediss+foo://h", "redis:/localhost", "redis:localhost", "redis//localhost", " redis://localhost",
        "tcp://localhost:6379", "", "unix:///tmp/redis.sock",
    };

    (void)state;
    for (size_t i = 0; i < COUNT(bad); i++)
        expect_refused(bad[i]);
}

/* rediss in place of redis: the same URL over TLS, for every scheme. */
static void test_redis_url_tls_schemes(void **state)
{
    struct redis_url u;

    (void)state;
    expect_url("rediss://:secret@cache.example.com:6380/2", "cache.example.com", 6380, "", "secret", 2);
    assert_int_equal(redis_url_parse("rediss://cache.example.com", &u), 0);
    assert_true(u.tls);
    assert_int_equal(redis_url_parse("redis://cache.example.com", &u), 0);
    assert_false(u.tls);
    assert_int_equal(redis_url_parse("rediss+sentinel://s1,s2:5000/mymaster/1", &u), 0);
    assert_true(u.tls);
    assert_int_equal(u.nsentinels, 2);
    assert_string_equal(u.master, "mymaster");
    assert_int_equal(u.db, 1);
    assert_int_equal(redis_url_parse("rediss+cluster://a:7000,b:7001", &u), 0);
    assert_true(u.tls);
    assert_int_equal(u.nnodes, 2);
    assert_int_equal(u.nodes[1].port, 7001);
    expect_refused("rediss://");
    expect_refused("rediss+cluster://a/1");
}

static void test_redis_url_refuses_empty_host(void **state)
{
    static const char *bad[] = {
        "redis://", "redis://:6379", "redis:///0", "redis://:6379/0", "redis://user:pass@", "redis://:pass@:6379",
        "redis://secret@", "redis://secret@/1", "redis://@",
    };

    (void)state;
    for (size_t i = 0; i < COUNT(bad); i++)
        expect_refused(bad[i]);
}

static void test_redis_url_refuses_bad_ports(void **state)
{
    static const char *bad[] = {
        "redis://h:0",    "redis://h:65536", "redis://h:99999", "redis://h:abc",  "redis://h:",
        "redis://h:-1",   "redis://h:6379x", "redis://h:63 79", "redis://h:6379:1", "redis://h:0x10",
        "redis://h:99999999999999999999", "redis://h:-6379", "redis://h::6379", "redis://h:6379/0:1",
    };

    (void)state;
    for (size_t i = 0; i < COUNT(bad); i++)
        expect_refused(bad[i]);
}

static void test_redis_url_refuses_bad_databases(void **state)
{
    static const char *bad[] = {
        "redis://h:6379/-1", "redis://h:6379/abc", "redis://h/abc", "redis://h/1x", "redis://h/1/2",
        "redis://h/1.5",     "redis://h/0x1",      "redis://h//1",  "redis://h/99999999999999999999",
    };

    (void)state;
    for (size_t i = 0; i < COUNT(bad); i++)
        expect_refused(bad[i]);
}

/* Numbers are digits only: strtol's leading blanks and signs are not URL
 * syntax. */
static void test_redis_url_refuses_signs_and_blanks_in_numbers(void **state)
{
    static const char *bad[] = {
        "redis://h:+6379", "redis://h: 6379", "redis://h:\t6379", "redis://h/+1", "redis://h/ 1", "redis://h/-0",
    };

    (void)state;
    for (size_t i = 0; i < COUNT(bad); i++)
        expect_refused(bad[i]);
}

static void test_redis_url_field_lengths(void **state)
{
    struct redis_url u;

    (void)state;
    /* host: up to 255 bytes */
    assert_int_equal(redis_url_parse(url_with("", 'h', 255, ":1"), &u), 0);
    assert_int_equal(strlen(u.host), 255);
    assert_int_equal(u.port, 1);
    expect_refused(url_with("", 'h', 256, ""));
    expect_refused(url_with("", 'h', 256, ":6379"));
    expect_refused(url_with("", 'h', 1000, ""));
    /* user: up to 127 bytes */
    assert_int_equal(redis_url_parse(url_with("", 'u', 127, ":p@h"), &u), 0);
    assert_int_equal(strlen(u.user), 127);
    assert_string_equal(u.pass, "p");
    expect_refused(url_with("", 'u', 128, ":p@h"));
    /* password: up to 255 bytes */
    assert_int_equal(redis_url_parse(url_with(":", 'p', 255, "@h"), &u), 0);
    assert_int_equal(strlen(u.pass), 255);
    assert_string_equal(u.host, "h");
    expect_refused(url_with(":", 'p', 256, "@h"));
    expect_refused(url_with("u:", 'p', 256, "@h"));
    expect_refused(url_with(":", 'p', 900, "@h"));
}

/* A password alone is a password: it may be as long as one after a ':'
 * (255 bytes), not only as long as a user name. */
static void test_redis_url_password_alone_has_the_password_limit(void **state)
{
    struct redis_url u;

    (void)state;
    assert_int_equal(redis_url_parse(url_with("", 's', 127, "@h"), &u), 0);
    assert_int_equal(strlen(u.pass), 127);
    assert_string_equal(u.user, "");
    if (redis_url_parse(url_with("", 's', 200, "@h"), &u) != 0)
        fail_msg("refused a password alone of 200 bytes (redis://:<200 bytes>@h is accepted)");
    assert_int_equal(strlen(u.pass), 200);
    assert_int_equal(redis_url_parse(url_with("", 's', 255, "@h"), &u), 0);
    assert_int_equal(strlen(u.pass), 255);
    expect_refused(url_with("", 's', 256, "@h"));
}

/* The password, as redis_url_parse reads it, becomes ***, in URLs valid or
 * not: an error line about a bad --redis must not echo it. */
static void test_redis_url_mask_hides_the_password(void **state)
{
    static const char *const cases[][2] = {
        {"redis://user:hunter2@h:6379/1", "redis://user:***@h:6379/1"},
        {"redis://:hunter2@h", "redis://:***@h"},
        {"redis://hunter2@h", "redis://***@h"},
        {"redis+sentinel://u:p:w@s1,s2/m", "redis+sentinel://u:***@s1,s2/m"},
        {"redis://u:p@ss@h:99999", "redis://u:***@h:99999"},
        {"redsi://u:hunter2@h", "redsi://u:***@h"},
        {"u:hunter2@h", "u:***@h"},
        {"redis://h:6379", "redis://h:6379"},
    };
    char out[64];

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        redis_url_mask(cases[i][0], out, sizeof out);
        assert_string_equal(out, cases[i][1]);
    }
    redis_url_mask("redis://u:hunter2@a-long-host-name", out, 12);
    assert_string_equal(out, "redis://u:*");
}

static void test_redis_url_sentinels_and_master(void **state)
{
    (void)state;
    struct redis_url u;
    assert_int_equal(redis_url_parse("redis+sentinel://s1:26380,s2,10.0.0.3:5000/mymaster", &u), 0);
    assert_int_equal(u.nsentinels, 3);
    assert_string_equal(u.sentinels[0].host, "s1");
    assert_int_equal(u.sentinels[0].port, 26380);
    assert_string_equal(u.sentinels[1].host, "s2");
    assert_int_equal(u.sentinels[1].port, 26379);
    assert_string_equal(u.sentinels[2].host, "10.0.0.3");
    assert_int_equal(u.sentinels[2].port, 5000);
    assert_string_equal(u.master, "mymaster");
    assert_int_equal(u.db, 0);
    assert_string_equal(u.host, "");
    assert_int_equal(redis_url_parse("redis+sentinel://:secret@s1/m-1.x_y/3", &u), 0);
    assert_int_equal(u.nsentinels, 1);
    assert_string_equal(u.pass, "secret");
    assert_string_equal(u.master, "m-1.x_y");
    assert_int_equal(u.db, 3);
    assert_int_equal(redis_url_parse("redis://h:1", &u), 0);
    assert_int_equal(u.nsentinels, 0);
}

static void test_redis_url_refuses_bad_sentinel_urls(void **state)
{
    (void)state;
    expect_refused("redis+sentinel://s1:26379");          /* no master */
    expect_refused("redis+sentinel://s1:26379/");         /* empty master */
    expect_refused("redis+sentinel:///m");                /* no sentinel */
    expect_refused("redis+sentinel://s1,,s2/m");          /* empty sentinel */
    expect_refused("redis+sentinel://s1,/m");
    expect_refused("redis+sentinel://s1:0/m");
    expect_refused("redis+sentinel://s1:70000/m");
    expect_refused("redis+sentinel://s1/m*");             /* not a master name */
    expect_refused("redis+sentinel://s1/m/x");            /* not a database */
    expect_refused("redis+sentinel://a,b,c,d,e,f,g,h,i/m"); /* more than 8 sentinels */
    expect_refused("redis+cluster://s1/m");
}

static void test_redis_url_cluster_nodes(void **state)
{
    (void)state;
    struct redis_url u;
    assert_int_equal(redis_url_parse("redis+cluster://u:p@n1:7000,n2,10.0.0.3:7002", &u), 0);
    assert_int_equal(u.nnodes, 3);
    assert_string_equal(u.nodes[0].host, "n1");
    assert_int_equal(u.nodes[0].port, 7000);
    assert_int_equal(u.nodes[1].port, 6379);
    assert_string_equal(u.nodes[2].host, "10.0.0.3");
    assert_string_equal(u.user, "u");
    assert_string_equal(u.pass, "p");
    assert_int_equal(u.nsentinels, 0);
    assert_int_equal(redis_url_parse("redis+cluster://n1:7000/", &u), 0);
    assert_int_equal(u.nnodes, 1);
    assert_int_equal(redis_url_parse("redis://h:1", &u), 0);
    assert_int_equal(u.nnodes, 0);
    expect_refused("redis+cluster://n1/1");     /* a cluster has no other database */
    expect_refused("redis+cluster://");
    expect_refused("redis+cluster://n1,,n2");
    expect_refused("redis+cluster://a,b,c,d,e,f,g,h,i"); /* more than 8 */
}

/* Slots as Redis Cluster computes them (CLUSTER KEYSLOT on Redis 7). */
static void test_redis_cluster_slot_of_keys_and_hash_tags(void **state)
{
    (void)state;
    assert_int_equal(redis_cluster_slot("foo", 3), 12182);
    assert_int_equal(redis_cluster_slot("bar", 3), 5061);
    assert_int_equal(redis_cluster_slot("", 0), 0);
    /* The tag alone counts: a room's channel, stream and presence share a slot. */
    assert_int_equal(redis_cluster_slot("wsfan:room:{foo}", 16), 12182);
    assert_int_equal(redis_cluster_slot("wsfan:history:{foo}", 19), 12182);
    /* The first '{' and the next '}'; an empty tag means the whole key. */
    assert_int_equal(redis_cluster_slot("a{foo}b{bar}", 12), 12182);
    assert_int_not_equal(redis_cluster_slot("{}foo", 5), redis_cluster_slot("foo", 3));
    assert_int_not_equal(redis_cluster_slot("{foo", 4), 12182);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redis_url_host_alone_takes_the_defaults),
        cmocka_unit_test(test_redis_url_host_port),
        cmocka_unit_test(test_redis_url_host_port_db),
        cmocka_unit_test(test_redis_url_credentials),
        cmocka_unit_test(test_redis_url_refuses_other_schemes),
        cmocka_unit_test(test_redis_url_tls_schemes),
        cmocka_unit_test(test_redis_url_refuses_empty_host),
        cmocka_unit_test(test_redis_url_refuses_bad_ports),
        cmocka_unit_test(test_redis_url_refuses_bad_databases),
        cmocka_unit_test(test_redis_url_refuses_signs_and_blanks_in_numbers),
        cmocka_unit_test(test_redis_url_field_lengths),
        cmocka_unit_test(test_redis_url_password_alone_has_the_password_limit),
        cmocka_unit_test(test_redis_url_mask_hides_the_password),
        cmocka_unit_test(test_redis_url_sentinels_and_master),
        cmocka_unit_test(test_redis_url_refuses_bad_sentinel_urls),
        cmocka_unit_test(test_redis_url_cluster_nodes),
        cmocka_unit_test(test_redis_cluster_slot_of_keys_and_hash_tags),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
