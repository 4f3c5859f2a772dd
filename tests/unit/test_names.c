/* test_names.c - unit tests of names.c: the one check of room, user and
 * node ids (PROTOCOL.md section 4): 1 to 128 bytes of A-Z a-z 0-9 _ . : -;
 * tenant names (at most 64 of the same), and the keys of a tenant's rooms
 * and users. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "core/names.h"

static int in_alphabet(int ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' ||
           ch == '.' || ch == ':' || ch == '-';
}

static void test_names_accepts_typical_ids(void **state)
{
    static const char *good[] = {"general", "alice", "room-1", "team_a.chat", "org:42:room", "A", "0",
                                 "-", "...", "a-b_c.d:e"};

    (void)state;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        assert_true(name_valid(good[i], strlen(good[i])));
}

static void test_names_accepts_each_allowed_character_alone(void **state)
{
    (void)state;
    for (int ch = 0; ch < 256; ch++) {
        char s[1] = {(char)ch};
        assert_int_equal(name_valid(s, 1), in_alphabet(ch));
    }
}

static void test_names_rejects_any_other_byte_anywhere(void **state)
{
    char s[8];

    (void)state;
    for (int ch = 0; ch < 256; ch++) {
        if (in_alphabet(ch))
            continue;
        for (size_t pos = 0; pos < sizeof s; pos++) {
            memset(s, 'a', sizeof s);
            s[pos] = (char)ch;
            assert_false(name_valid(s, sizeof s));
        }
    }
}

static void test_names_rejects_common_lookalikes(void **state)
{
    static const char *bad[] = {"has space", "slash/room", "back\\slash", "quote\"", "at@host", "café",
                                "tab\t", "new\nline", "percent%20", "plus+", "star*", "hash#", "{json}"};

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(name_valid(bad[i], strlen(bad[i])));
}

static void test_names_length_from_1_to_128(void **state)
{
    char s[NAME_MAX_LEN + 2];

    (void)state;
    assert_int_equal(NAME_MAX_LEN, 128);
    memset(s, 'x', sizeof s);
    assert_false(name_valid(s, 0));
    assert_false(name_valid("", 0));
    assert_true(name_valid(s, 1));
    assert_true(name_valid(s, NAME_MAX_LEN));
    assert_false(name_valid(s, NAME_MAX_LEN + 1));
    assert_false(name_valid(s, NAME_MAX_LEN + 2));
}

static void test_names_checks_only_the_given_length(void **state)
{
    (void)state;
    /* Bytes past len do not count, and a NUL inside len is refused. */
    assert_true(name_valid("room with space", 4));
    assert_false(name_valid("room with space", 5));
    assert_false(name_valid("ab\0cd", 5));
    assert_true(name_valid("ab\0cd", 2));
}

static void test_names_tenant_is_an_id_of_at_most_64(void **state)
{
    char s[TENANT_MAX_LEN + 2];

    (void)state;
    assert_int_equal(TENANT_MAX_LEN, 64);
    memset(s, 'x', sizeof s);
    assert_false(name_tenant_valid(s, 0));
    assert_true(name_tenant_valid(s, 1));
    assert_true(name_tenant_valid(s, TENANT_MAX_LEN));
    assert_false(name_tenant_valid(s, TENANT_MAX_LEN + 1));
    assert_true(name_tenant_valid("acme:eu-1_a.b", 13));
    assert_false(name_tenant_valid("a/b", 3));
    assert_false(name_tenant_valid("a b", 3));
}

static void test_names_keys_of_tenants_never_meet(void **state)
{
    char buf[KEY_MAX_LEN + 1], tenant[TENANT_MAX_LEN + 1], name[NAME_MAX_LEN + 1];
    const char *key;

    (void)state;
    /* Without a tenant the key is the name itself, not a copy. */
    const char *room = "general";
    assert_ptr_equal(name_key("", room, buf), room);
    assert_string_equal(name_of_key("general"), "general");
    assert_int_equal(name_key_tenant_len("general"), 0);
    assert_string_equal(name_key("", "", buf), "");

    key = name_key("acme", "general", buf);
    assert_ptr_equal(key, buf);
    assert_string_equal(key, "acme/general");
    assert_string_equal(name_of_key(key), "general");
    assert_int_equal(name_key_tenant_len(key), 4);
    /* Everyone of a tenant, and names with ':' on both sides. */
    assert_string_equal(name_key("acme", "", buf), "acme/");
    assert_string_equal(name_of_key(buf), "");
    assert_string_equal(name_key("a:b", "c:d", buf), "a:b/c:d");
    assert_string_equal(name_of_key(buf), "c:d");
    assert_int_equal(name_key_tenant_len(buf), 3);
    /* Tenant "a" room "b:c" and tenant "a:b" room "c" stay apart, and no
     * name without a tenant can look like a key of one. */
    char other[KEY_MAX_LEN + 1];
    assert_string_not_equal(name_key("a", "b:c", buf), name_key("a:b", "c", other));
    assert_false(name_valid(buf, strlen(buf)));

    /* The longest of both fits. */
    memset(tenant, 't', TENANT_MAX_LEN);
    tenant[TENANT_MAX_LEN] = '\0';
    memset(name, 'n', NAME_MAX_LEN);
    name[NAME_MAX_LEN] = '\0';
    key = name_key(tenant, name, buf);
    assert_int_equal(strlen(key), KEY_MAX_LEN);
    assert_string_equal(name_of_key(key), name);
    assert_int_equal(name_key_tenant_len(key), TENANT_MAX_LEN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_accepts_typical_ids),
        cmocka_unit_test(test_names_accepts_each_allowed_character_alone),
        cmocka_unit_test(test_names_rejects_any_other_byte_anywhere),
        cmocka_unit_test(test_names_rejects_common_lookalikes),
        cmocka_unit_test(test_names_length_from_1_to_128),
        cmocka_unit_test(test_names_checks_only_the_given_length),
        cmocka_unit_test(test_names_tenant_is_an_id_of_at_most_64),
        cmocka_unit_test(test_names_keys_of_tenants_never_meet),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
