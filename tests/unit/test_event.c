/* test_event.c - unit tests of codec/event.c: the exact JSON text of each
 * server event (docs/protocol.md section 3), that it parses back as the
 * same values, that data is spliced verbatim by its length, what the
 * shared block says besides its text (target, kind, name, offset, no echo
 * skip), copies of stored text, and the reference count; events of a
 * tenant's key (core/names.h) and presence_join with info. The clock is in
 * test_clock.c. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "codec/event.h"

/* Checks that ev is a fresh event (one reference, no echo skip) whose
 * text (of len bytes, NUL-terminated) is exactly expected and valid JSON;
 * returns the parsed object for more checks. */
static json_t *expect_event(struct event *ev, const char *expected)
{
    json_error_t err;
    json_t *v;

    assert_non_null(ev);
    assert_int_equal(atomic_load(&ev->refs), 1);
    assert_int_equal(ev->skip_worker, -1);
    assert_string_equal(ev->json, expected);
    assert_int_equal(ev->len, strlen(expected));
    assert_int_equal(ev->json[ev->len], '\0');
    v = json_loadb(ev->json, ev->len, 0, &err);
    if (!v)
        fail_msg("not JSON: %s at %d: %s", err.text, err.position, ev->json);
    assert_true(json_is_object(v));
    return v;
}

/* Checks what ev says besides its text. */
static void expect_head(const struct event *ev, enum event_target target, enum event_kind kind, const char *name)
{
    assert_int_equal(ev->target, target);
    assert_int_equal(ev->kind, kind);
    assert_string_equal(ev->key, name);
}

static void expect_offset(const struct event *ev, uint64_t ms, uint64_t seq)
{
    assert_int_equal(ev->has_offset, 1);
    assert_true(ev->offset.ms == ms);
    assert_true(ev->offset.seq == seq);
}

static const char *str_field(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

/* ---- message ---------------------------------------------------------------- */

static void test_event_message_with_offset_and_from(void **state)
{
    struct event *ev = event_message("general", &(struct offset){1732312345678ULL, 0}, "alice",
                                     "{\"text\":\"hi\"}", 13, 1732312345678ULL);
    json_t *v;

    (void)state;
    v = expect_event(ev,
                     "{\"type\":\"message\",\"room\":\"general\",\"offset\":\"1732312345678-0\",\"from\":\"alice\","
                     "\"data\":{\"text\":\"hi\"},\"ts\":1732312345678}");
    assert_string_equal(str_field(v, "type"), "message");
    assert_string_equal(str_field(v, "room"), "general");
    assert_string_equal(str_field(v, "offset"), "1732312345678-0");
    assert_string_equal(str_field(v, "from"), "alice");
    assert_string_equal(json_string_value(json_object_get(json_object_get(v, "data"), "text")), "hi");
    assert_int_equal(json_integer_value(json_object_get(v, "ts")), 1732312345678LL);
    assert_int_equal(json_object_size(v), 6);
    json_decref(v);
    expect_head(ev, EVENT_ROOM, EVENT_MESSAGE, "general");
    expect_offset(ev, 1732312345678ULL, 0);
    event_unref(ev);
}

static void test_event_message_without_offset_omits_the_field(void **state)
{
    struct event *ev = event_message("r", NULL, "bob", "[1,2,3]", 7, 5);
    json_t *v;

    (void)state;
    v = expect_event(ev, "{\"type\":\"message\",\"room\":\"r\",\"from\":\"bob\",\"data\":[1,2,3],\"ts\":5}");
    assert_null(json_object_get(v, "offset"));
    assert_int_equal(json_object_size(v), 5);
    json_decref(v);
    expect_head(ev, EVENT_ROOM, EVENT_MESSAGE, "r");
    assert_int_equal(ev->has_offset, 0);
    event_unref(ev);
}

static void test_event_message_from_service_is_null(void **state)
{
    struct event *ev = event_message("r", &(struct offset){7, 3}, NULL, "null", 4, 7);
    json_t *v;

    (void)state;
    v = expect_event(ev,
                     "{\"type\":\"message\",\"room\":\"r\",\"offset\":\"7-3\",\"from\":null,\"data\":null,\"ts\":7}");
    assert_true(json_is_null(json_object_get(v, "from")));
    assert_true(json_is_null(json_object_get(v, "data")));
    json_decref(v);
    expect_offset(ev, 7, 3);
    event_unref(ev);
}

static void test_event_message_splices_data_verbatim_by_length(void **state)
{
    /* Only data_len bytes count: the buffer goes on and is not terminated. */
    static const char data[] = {'"', 'a', '%', 's', '\\', 'n', '"', 'X', 'Y'};
    struct event *ev = event_message("r", NULL, NULL, data, 7, 0);
    json_t *v;

    (void)state;
    v = expect_event(ev, "{\"type\":\"message\",\"room\":\"r\",\"from\":null,\"data\":\"a%s\\n\",\"ts\":0}");
    assert_string_equal(str_field(v, "data"), "a%s\n");
    json_decref(v);
    event_unref(ev);
}

static void test_event_message_keeps_unicode_and_escapes_of_data(void **state)
{
    const char *data = "{\"s\":\"caf\xc3\xa9 \\u00e9 \\\"q\\\"\",\"n\":-1.5e3,\"b\":[true,false,{}]}";
    struct event *ev = event_message("r", &(struct offset){1, 0}, "u", data, strlen(data), 1);
    char expected[256];
    json_t *v;

    (void)state;
    snprintf(expected, sizeof expected,
             "{\"type\":\"message\",\"room\":\"r\",\"offset\":\"1-0\",\"from\":\"u\",\"data\":%s,\"ts\":1}", data);
    v = expect_event(ev, expected);
    assert_string_equal(json_string_value(json_object_get(json_object_get(v, "data"), "s")),
                        "caf\xc3\xa9 \xc3\xa9 \"q\"");
    json_decref(v);
    event_unref(ev);
}

static void test_event_message_with_longest_names_and_offset(void **state)
{
    char room[129], user[129], expected[1024];
    const char *offset = "18446744073709551615-18446744073709551615";
    const struct offset max = {UINT64_MAX, UINT64_MAX};
    struct event *ev;
    json_t *v;

    (void)state;
    memset(room, 'r', 128);
    room[128] = '\0';
    memset(user, 'u', 128);
    user[128] = '\0';
    ev = event_message(room, &max, user, "{}", 2, UINT64_MAX);
    snprintf(expected, sizeof expected,
             "{\"type\":\"message\",\"room\":\"%s\",\"offset\":\"%s\",\"from\":\"%s\",\"data\":{},"
             "\"ts\":18446744073709551615}",
             room, offset, user);
    /* ts past INT64_MAX is not something jansson reads: compare text only. */
    assert_non_null(ev);
    assert_string_equal(ev->json, expected);
    assert_int_equal(ev->len, strlen(expected));
    expect_head(ev, EVENT_ROOM, EVENT_MESSAGE, room);
    expect_offset(ev, UINT64_MAX, UINT64_MAX);
    event_unref(ev);

    ev = event_message(room, &max, user, "{}", 2, 1);
    snprintf(expected, sizeof expected,
             "{\"type\":\"message\",\"room\":\"%s\",\"offset\":\"%s\",\"from\":\"%s\",\"data\":{},\"ts\":1}", room,
             offset, user);
    v = expect_event(ev, expected);
    assert_string_equal(str_field(v, "room"), room);
    assert_string_equal(str_field(v, "from"), user);
    json_decref(v);
    event_unref(ev);
}

/* ---- direct and broadcast --------------------------------------------------- */

static void test_event_direct_and_broadcast(void **state)
{
    struct event *ev;
    json_t *v;

    (void)state;
    ev = event_direct(EVENT_USER, "bob", "alice", "{\"x\":1}", 7, 1732312345678ULL);
    v = expect_event(ev, "{\"type\":\"direct\",\"from\":\"alice\",\"data\":{\"x\":1},\"ts\":1732312345678}");
    assert_int_equal(json_object_size(v), 4);
    json_decref(v);
    /* the user it goes to is not in the text */
    expect_head(ev, EVENT_USER, EVENT_DIRECT, "bob");
    assert_int_equal(ev->has_offset, 0);
    event_unref(ev);

    ev = event_direct(EVENT_ALL, NULL, NULL, "\"hello\"", 7, 42);
    v = expect_event(ev, "{\"type\":\"broadcast\",\"from\":null,\"data\":\"hello\",\"ts\":42}");
    assert_true(json_is_null(json_object_get(v, "from")));
    json_decref(v);
    expect_head(ev, EVENT_ALL, EVENT_BROADCAST, "");
    assert_int_equal(ev->has_offset, 0);
    event_unref(ev);

    /* data by length here too */
    ev = event_direct(EVENT_USER, "a", "a", "123456", 3, 0);
    v = expect_event(ev, "{\"type\":\"direct\",\"from\":\"a\",\"data\":123,\"ts\":0}");
    json_decref(v);
    expect_head(ev, EVENT_USER, EVENT_DIRECT, "a");
    event_unref(ev);
}

/* ---- presence --------------------------------------------------------------- */

static void test_event_presence_join_and_leave(void **state)
{
    struct event *ev;
    json_t *v;

    (void)state;
    ev = event_presence(EVENT_PRESENCE_JOIN, "general", "alice", NULL);
    v = expect_event(ev, "{\"type\":\"presence_join\",\"room\":\"general\",\"user\":\"alice\"}");
    assert_int_equal(json_object_size(v), 3);
    json_decref(v);
    expect_head(ev, EVENT_ROOM, EVENT_PRESENCE_JOIN, "general");
    assert_int_equal(ev->has_offset, 0);
    event_unref(ev);

    ev = event_presence(EVENT_PRESENCE_LEAVE, "a:b.c-d_e", "u.1", NULL);
    v = expect_event(ev, "{\"type\":\"presence_leave\",\"room\":\"a:b.c-d_e\",\"user\":\"u.1\"}");
    json_decref(v);
    expect_head(ev, EVENT_ROOM, EVENT_PRESENCE_LEAVE, "a:b.c-d_e");
    event_unref(ev);
}

/* ---- tenants and info ------------------------------------------------------- */

static void test_event_of_a_tenant_names_the_room_and_targets_the_key(void **state)
{
    static const struct offset off = {5, 1};
    char tenant[TENANT_MAX_LEN + 1], name[NAME_MAX_LEN + 1], key[KEY_MAX_LEN + 1];
    struct event *ev;
    json_t *v;

    (void)state;
    ev = event_message("acme/general", &off, "alice", "1", 1, 9);
    json_decref(expect_event(ev, "{\"type\":\"message\",\"room\":\"general\",\"offset\":\"5-1\",\"from\":\"alice\","
                                 "\"data\":1,\"ts\":9}"));
    expect_head(ev, EVENT_ROOM, EVENT_MESSAGE, "acme/general");
    event_unref(ev);

    ev = event_direct(EVENT_USER, "acme/bob", NULL, "2", 1, 9);
    json_decref(expect_event(ev, "{\"type\":\"direct\",\"from\":null,\"data\":2,\"ts\":9}"));
    expect_head(ev, EVENT_USER, EVENT_DIRECT, "acme/bob");
    event_unref(ev);

    /* A tenant's broadcast targets "T/"; one without a tenant "". */
    ev = event_direct(EVENT_ALL, "acme/", NULL, "3", 1, 9);
    json_decref(expect_event(ev, "{\"type\":\"broadcast\",\"from\":null,\"data\":3,\"ts\":9}"));
    expect_head(ev, EVENT_ALL, EVENT_BROADCAST, "acme/");
    event_unref(ev);
    ev = event_direct(EVENT_ALL, "", NULL, "3", 1, 9);
    expect_head(ev, EVENT_ALL, EVENT_BROADCAST, "");
    event_unref(ev);

    ev = event_presence(EVENT_PRESENCE_LEAVE, "a:b/c:d", "u", NULL);
    json_decref(expect_event(ev, "{\"type\":\"presence_leave\",\"room\":\"c:d\",\"user\":\"u\"}"));
    expect_head(ev, EVENT_ROOM, EVENT_PRESENCE_LEAVE, "a:b/c:d");
    event_unref(ev);

    /* The longest key fits whole. */
    memset(tenant, 't', TENANT_MAX_LEN);
    tenant[TENANT_MAX_LEN] = '\0';
    memset(name, 'r', NAME_MAX_LEN);
    name[NAME_MAX_LEN] = '\0';
    name_key(tenant, name, key);
    ev = event_message(key, NULL, NULL, "0", 1, 1);
    expect_head(ev, EVENT_ROOM, EVENT_MESSAGE, key);
    v = expect_event(ev, ev->json);
    assert_string_equal(str_field(v, "room"), name);
    json_decref(v);
    event_unref(ev);
}

static void test_event_presence_join_carries_info(void **state)
{
    struct event *ev;
    json_t *v;

    (void)state;
    ev = event_presence(EVENT_PRESENCE_JOIN, "acme/r", "alice", "{\"name\":\"Alice\",\"avatar\":\"https://x/a.png\"}");
    v = expect_event(ev, "{\"type\":\"presence_join\",\"room\":\"r\",\"user\":\"alice\","
                         "\"info\":{\"name\":\"Alice\",\"avatar\":\"https://x/a.png\"}}");
    assert_true(json_is_object(json_object_get(v, "info")));
    json_decref(v);
    expect_head(ev, EVENT_ROOM, EVENT_PRESENCE_JOIN, "acme/r");
    event_unref(ev);

    /* A leave never carries it. */
    ev = event_presence(EVENT_PRESENCE_LEAVE, "r", "alice", "{\"name\":\"Alice\"}");
    json_decref(expect_event(ev, "{\"type\":\"presence_leave\",\"room\":\"r\",\"user\":\"alice\"}"));
    event_unref(ev);
}

/* ---- copies ----------------------------------------------------------------- */

static void test_event_copy_takes_the_text_by_length(void **state)
{
    /* A replay line from history: only len bytes count, and the text is
     * copied, not kept. */
    char stored[] = "{\"type\":\"message\",\"room\":\"r\",\"offset\":\"1-0\",\"from\":null,\"data\":1,\"ts\":1}\nnext";
    size_t len = (size_t)(strchr(stored, '\n') - stored);
    struct event *ev = event_copy(EVENT_ROOM, "r", stored, len);
    json_t *v;

    (void)state;
    memset(stored, 'x', sizeof stored - 1);
    v = expect_event(ev, "{\"type\":\"message\",\"room\":\"r\",\"offset\":\"1-0\",\"from\":null,\"data\":1,\"ts\":1}");
    json_decref(v);
    expect_head(ev, EVENT_ROOM, EVENT_MESSAGE, "r");
    event_unref(ev);

    ev = event_copy(EVENT_ALL, NULL, "{}", 2);
    json_decref(expect_event(ev, "{}"));
    expect_head(ev, EVENT_ALL, EVENT_MESSAGE, "");
    event_unref(ev);
}

/* ---- references ------------------------------------------------------------- */

static void test_event_last_unref_frees_the_block(void **state)
{
    struct event *ev = event_presence(EVENT_PRESENCE_JOIN, "r", "u", NULL);

    (void)state;
    assert_non_null(ev);
    assert_ptr_equal(event_ref(ev), ev);
    assert_ptr_equal(event_ref(ev), ev);
    assert_int_equal(atomic_load(&ev->refs), 3);
    event_unref(ev);
    event_unref(ev);
    /* still readable with one reference left (ASan would see a free) */
    assert_int_equal(atomic_load(&ev->refs), 1);
    assert_string_equal(ev->json, "{\"type\":\"presence_join\",\"room\":\"r\",\"user\":\"u\"}");
    event_unref(ev); /* LeakSanitizer sees it was freed */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_message_with_offset_and_from),
        cmocka_unit_test(test_event_message_without_offset_omits_the_field),
        cmocka_unit_test(test_event_message_from_service_is_null),
        cmocka_unit_test(test_event_message_splices_data_verbatim_by_length),
        cmocka_unit_test(test_event_message_keeps_unicode_and_escapes_of_data),
        cmocka_unit_test(test_event_message_with_longest_names_and_offset),
        cmocka_unit_test(test_event_direct_and_broadcast),
        cmocka_unit_test(test_event_presence_join_and_leave),
        cmocka_unit_test(test_event_of_a_tenant_names_the_room_and_targets_the_key),
        cmocka_unit_test(test_event_presence_join_carries_info),
        cmocka_unit_test(test_event_copy_takes_the_text_by_length),
        cmocka_unit_test(test_event_last_unref_frees_the_block),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
