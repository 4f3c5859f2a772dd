/* test_presence.c - unit tests of presence.c: per-room connection counts
 * per user, first-in and last-out reported once, and the JSON list of a
 * room sorted by user; the info of the newest connection in the list, and
 * the rooms of two tenants (keys) kept apart. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/presence.h"

/* Checks the room's list is exactly expected and valid JSON. */
static void expect_list(struct presence *p, const char *room, const char *expected)
{
    char *s = presence_list(p, room);
    json_error_t err;
    json_t *v;

    assert_non_null(s);
    assert_string_equal(s, expected);
    v = json_loads(s, 0, &err);
    if (!v)
        fail_msg("not JSON: %s: %s", err.text, s);
    assert_true(json_is_array(v));
    json_decref(v);
    free(s);
}

static void test_presence_first_connection_joins_and_last_leaves(void **state)
{
    struct presence *p = presence_create();

    (void)state;
    assert_non_null(p);
    assert_int_equal(presence_add(p, "general", "alice", NULL), 1);
    assert_int_equal(presence_add(p, "general", "alice", NULL), 0);
    assert_int_equal(presence_add(p, "general", "alice", NULL), 0);
    assert_int_equal(presence_remove(p, "general", "alice"), 0);
    assert_int_equal(presence_remove(p, "general", "alice"), 0);
    assert_int_equal(presence_remove(p, "general", "alice"), 1);
    /* Gone: removing again is not a second leave, adding is a new join. */
    assert_int_equal(presence_remove(p, "general", "alice"), 0);
    assert_int_equal(presence_add(p, "general", "alice", NULL), 1);
    assert_int_equal(presence_remove(p, "general", "alice"), 1);
    presence_destroy(p);
}

static void test_presence_remove_of_unknown_user_or_room_is_not_a_leave(void **state)
{
    struct presence *p = presence_create();

    (void)state;
    assert_int_equal(presence_remove(p, "nowhere", "alice"), 0);
    assert_int_equal(presence_add(p, "general", "alice", NULL), 1);
    assert_int_equal(presence_remove(p, "general", "bob"), 0);
    assert_int_equal(presence_remove(p, "other", "alice"), 0);
    /* alice is still counted once in general. */
    expect_list(p, "general", "[{\"user\":\"alice\",\"connections\":1}]");
    assert_int_equal(presence_remove(p, "general", "alice"), 1);
    presence_destroy(p);
}

static void test_presence_rooms_and_users_are_counted_apart(void **state)
{
    struct presence *p = presence_create();

    (void)state;
    assert_int_equal(presence_add(p, "a", "alice", NULL), 1);
    assert_int_equal(presence_add(p, "b", "alice", NULL), 1);
    assert_int_equal(presence_add(p, "a", "bob", NULL), 1);
    assert_int_equal(presence_add(p, "a", "alice", NULL), 0);
    expect_list(p, "a", "[{\"user\":\"alice\",\"connections\":2},{\"user\":\"bob\",\"connections\":1}]");
    expect_list(p, "b", "[{\"user\":\"alice\",\"connections\":1}]");
    assert_int_equal(presence_remove(p, "b", "alice"), 1);
    expect_list(p, "b", "[]");
    expect_list(p, "a", "[{\"user\":\"alice\",\"connections\":2},{\"user\":\"bob\",\"connections\":1}]");
    presence_destroy(p); /* with users still present: frees them all */
}

static void test_presence_list_of_empty_or_unknown_room_is_empty_array(void **state)
{
    struct presence *p = presence_create();

    (void)state;
    expect_list(p, "unknown", "[]");
    assert_int_equal(presence_add(p, "r", "u", NULL), 1);
    assert_int_equal(presence_remove(p, "r", "u"), 1);
    expect_list(p, "r", "[]");
    presence_destroy(p);
}

static void test_presence_list_is_sorted_by_user(void **state)
{
    static const char *users[] = {"zed", "alice", "Bob", "bob", "0day", "a.b", "a-b", "a:b", "a_b", "alice2"};
    struct presence *p = presence_create();

    (void)state;
    for (size_t i = 0; i < sizeof users / sizeof users[0]; i++)
        for (size_t k = 0; k <= i % 3; k++)
            assert_int_equal(presence_add(p, "room", users[i], NULL), k == 0);
    /* strcmp order: - . 0-9 : A-Z _ a-z */
    expect_list(p, "room",
                "[{\"user\":\"0day\",\"connections\":2},"
                "{\"user\":\"Bob\",\"connections\":3},"
                "{\"user\":\"a-b\",\"connections\":1},"
                "{\"user\":\"a.b\",\"connections\":3},"
                "{\"user\":\"a:b\",\"connections\":2},"
                "{\"user\":\"a_b\",\"connections\":3},"
                "{\"user\":\"alice\",\"connections\":2},"
                "{\"user\":\"alice2\",\"connections\":1},"
                "{\"user\":\"bob\",\"connections\":1},"
                "{\"user\":\"zed\",\"connections\":1}]");
    presence_destroy(p);
}

static void test_presence_list_of_many_users_with_longest_names(void **state)
{
    enum { USERS = 200 };
    struct presence *p = presence_create();
    char user[129];
    char *s;
    json_t *v;

    (void)state;
    for (int i = 0; i < USERS; i++) {
        memset(user, 'u', 128);
        snprintf(user, sizeof user, "%03d", i);
        user[3] = 'u';
        user[128] = '\0';
        for (int k = 0; k < 1 + i % 12; k++)
            assert_int_equal(presence_add(p, "big", user, NULL), k == 0);
    }
    s = presence_list(p, "big");
    assert_non_null(s);
    v = json_loads(s, 0, NULL);
    assert_non_null(v);
    assert_int_equal(json_array_size(v), USERS);
    for (int i = 0; i < USERS; i++) {
        json_t *item = json_array_get(v, (size_t)i);
        const char *name = json_string_value(json_object_get(item, "user"));
        char prefix[16];
        snprintf(prefix, sizeof prefix, "%03d", i);
        assert_non_null(name);
        assert_int_equal(strlen(name), 128);
        assert_memory_equal(name, prefix, 3);
        assert_int_equal(json_integer_value(json_object_get(item, "connections")), 1 + i % 12);
        assert_int_equal(json_object_size(item), 2);
    }
    json_decref(v);
    free(s);
    presence_destroy(p);
}

/* Each item can be {"user":"<128 bytes>","connections":<up to 20 digits>}
 * (154 bytes plus the digits), but presence_list budgets 161 bytes an item:
 * two users of 128 bytes with a million connections each in one room (legal
 * with --max-connections up to 10000000) write one byte past the buffer. */
static void test_presence_list_fits_counts_of_a_million_connections(void **state)
{
    struct presence *p = presence_create();
    char a[129], b[129];
    char *s;
    json_t *v;

    (void)state;
    memset(a, 'a', 128);
    a[128] = '\0';
    memset(b, 'b', 128);
    b[128] = '\0';
    for (int i = 0; i < 1000000; i++) {
        assert_int_equal(presence_add(p, "r", a, NULL), i == 0);
        assert_int_equal(presence_add(p, "r", b, NULL), i == 0);
    }
    s = presence_list(p, "r");
    assert_non_null(s);
    assert_int_equal(strlen(s), 1 + 2 * (154 + 7) + 1 + 1);
    v = json_loads(s, 0, NULL);
    assert_non_null(v);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(v, 1), "connections")), 1000000);
    json_decref(v);
    free(s);
    presence_destroy(p);
}

static void test_presence_newest_connection_info_wins(void **state)
{
    struct presence *p = presence_create();

    (void)state;
    assert_non_null(p);
    assert_int_equal(presence_add(p, "r", "alice", "{\"name\":\"Alice\"}"), 1);
    assert_string_equal(presence_info(p, "r", "alice"), "{\"name\":\"Alice\"}");
    expect_list(p, "r", "[{\"user\":\"alice\",\"connections\":1,\"info\":{\"name\":\"Alice\"}}]");
    /* A newer connection's info replaces it; a leave keeps the newest. */
    assert_int_equal(presence_add(p, "r", "alice", "{\"name\":\"Alice B.\"}"), 0);
    assert_int_equal(presence_remove(p, "r", "alice"), 0);
    expect_list(p, "r", "[{\"user\":\"alice\",\"connections\":1,\"info\":{\"name\":\"Alice B.\"}}]");
    /* A newest connection without info: none. */
    assert_int_equal(presence_add(p, "r", "alice", NULL), 0);
    assert_null(presence_info(p, "r", "alice"));
    expect_list(p, "r", "[{\"user\":\"alice\",\"connections\":2}]");
    /* Each room keeps its own; one that is left entirely forgets it. */
    assert_int_equal(presence_add(p, "s", "alice", "{\"a\":1}"), 1);
    assert_int_equal(presence_add(p, "r", "bob", "{\"b\":[true,null]}"), 1);
    expect_list(p, "r", "[{\"user\":\"alice\",\"connections\":2},"
                        "{\"user\":\"bob\",\"connections\":1,\"info\":{\"b\":[true,null]}}]");
    assert_int_equal(presence_remove(p, "s", "alice"), 1);
    assert_null(presence_info(p, "s", "alice"));
    assert_int_equal(presence_add(p, "s", "alice", NULL), 1);
    expect_list(p, "s", "[{\"user\":\"alice\",\"connections\":1}]");
    presence_destroy(p); /* LeakSanitizer checks the infos are freed */
}

static void test_presence_rooms_of_two_tenants_are_apart(void **state)
{
    struct presence *p = presence_create();

    (void)state;
    assert_int_equal(presence_add(p, "acme/general", "alice", "{\"t\":\"acme\"}"), 1);
    assert_int_equal(presence_add(p, "globex/general", "alice", "{\"t\":\"globex\"}"), 1);
    assert_int_equal(presence_add(p, "general", "alice", NULL), 1);
    expect_list(p, "acme/general", "[{\"user\":\"alice\",\"connections\":1,\"info\":{\"t\":\"acme\"}}]");
    expect_list(p, "globex/general", "[{\"user\":\"alice\",\"connections\":1,\"info\":{\"t\":\"globex\"}}]");
    expect_list(p, "general", "[{\"user\":\"alice\",\"connections\":1}]");
    assert_int_equal(presence_remove(p, "acme/general", "alice"), 1);
    assert_int_equal(presence_count(p, "globex/general", "alice"), 1);
    assert_int_equal(presence_count(p, "general", "alice"), 1);
    presence_destroy(p);
}

/* The budget of an item holds an info of the largest size. */
static void test_presence_list_with_largest_infos(void **state)
{
    struct presence *p = presence_create();
    char info[EVENT_INFO_MAX + 1], user[NAME_MAX_LEN + 1];

    (void)state;
    snprintf(info, sizeof info, "{\"a\":\"%0*d\"}", EVENT_INFO_MAX - 8, 0);
    assert_int_equal(strlen(info), EVENT_INFO_MAX);
    for (int i = 0; i < 50; i++) {
        snprintf(user, sizeof user, "%0*d", NAME_MAX_LEN, i);
        assert_int_equal(presence_add(p, "r", user, info), 1);
    }
    char *s = presence_list(p, "r");
    json_t *v = json_loads(s, 0, NULL);
    assert_true(json_is_array(v));
    assert_int_equal(json_array_size(v), 50);
    assert_int_equal(json_object_size(json_object_get(json_array_get(v, 49), "info")), 1);
    json_decref(v);
    free(s);
    presence_destroy(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_presence_first_connection_joins_and_last_leaves),
        cmocka_unit_test(test_presence_remove_of_unknown_user_or_room_is_not_a_leave),
        cmocka_unit_test(test_presence_rooms_and_users_are_counted_apart),
        cmocka_unit_test(test_presence_list_of_empty_or_unknown_room_is_empty_array),
        cmocka_unit_test(test_presence_list_is_sorted_by_user),
        cmocka_unit_test(test_presence_list_of_many_users_with_longest_names),
        cmocka_unit_test(test_presence_list_fits_counts_of_a_million_connections),
        cmocka_unit_test(test_presence_newest_connection_info_wins),
        cmocka_unit_test(test_presence_rooms_of_two_tenants_are_apart),
        cmocka_unit_test(test_presence_list_with_largest_infos),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
