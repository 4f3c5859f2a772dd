/* test_envelope.c - unit tests of envelope.c: the Redis channel names of a
 * namespace (PROTOCOL.md section 6) and envelopes turned into client
 * events (section 3): the minimal {"data":..} from other services, full
 * envelopes from other nodes, direct and broadcast channels, the presence
 * extension, echo_skip, and every envelope that must be refused with a
 * reason instead of forwarded. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "event.h"

#define NODE "node-1"
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---- helpers ---------------------------------------------------------------- */

/* The event for payload (from a buffer of exactly its size, so ASan sees
 * any over-read); fails the test when refused. */
static struct bus_event *event_len(enum bus_target target, const char *name, const char *payload, size_t len)
{
    const char *why = NULL;
    char *copy = malloc(len ? len : 1);
    struct bus_event *ev;

    assert_non_null(copy);
    memcpy(copy, payload, len);
    ev = envelope_to_event(NODE, target, name, copy, len, &why);
    free(copy);
    if (!ev)
        fail_msg("refused %.*s: %s", (int)len, payload, why ? why : "(no reason)");
    assert_int_equal(ev->target, target);
    assert_string_equal(ev->name, name);
    assert_int_equal(ev->len, strlen(ev->json));
    return ev;
}

static struct bus_event *event_of(enum bus_target target, const char *name, const char *payload)
{
    return event_len(target, name, payload, strlen(payload));
}

/* Expects payload on target/name to be refused with a reason. */
static const char *refused_len(enum bus_target target, const char *name, const char *payload, size_t len)
{
    const char *why = NULL;
    char *copy = malloc(len ? len : 1);
    struct bus_event *ev;

    assert_non_null(copy);
    memcpy(copy, payload, len);
    ev = envelope_to_event(NODE, target, name, copy, len, &why);
    free(copy);
    if (ev) {
        char text[512];
        snprintf(text, sizeof text, "%s", ev->json);
        bus_event_unref(ev);
        fail_msg("accepted %.*s as %s", (int)len, payload, text);
    }
    assert_non_null(why);
    assert_true(why[0] != '\0');
    assert_null(strchr(why, '\n'));
    return why;
}

static const char *refused(enum bus_target target, const char *name, const char *payload)
{
    return refused_len(target, name, payload, strlen(payload));
}

/* Checks that ev's text is exactly expected and valid JSON. */
static void expect_json(const struct bus_event *ev, const char *expected)
{
    json_error_t err;
    json_t *v;

    if (strcmp(ev->json, expected))
        fail_msg("event [%s], expected [%s]", ev->json, expected);
    v = json_loadb(ev->json, ev->len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    if (!v)
        fail_msg("not JSON: %s: %s", err.text, ev->json);
    assert_true(json_is_object(v));
    json_decref(v);
}

/* For events stamped with the current time: the text before "ts" must be
 * prefix, and ts within [lo, hi] followed by "}". */
static void expect_json_now(const struct bus_event *ev, const char *prefix, uint64_t lo, uint64_t hi)
{
    size_t n = strlen(prefix);
    char *end;
    unsigned long long ts;

    if (strncmp(ev->json, prefix, n))
        fail_msg("event [%s], expected it to start with [%s]", ev->json, prefix);
    assert_memory_equal(ev->json + n, "\"ts\":", 5);
    ts = strtoull(ev->json + n + 5, &end, 10);
    assert_string_equal(end, "}");
    assert_true(ts >= lo && ts <= hi);
}

static void expect_no_skip(const struct bus_event *ev)
{
    assert_int_equal(ev->skip_worker, -1);
    assert_true(ev->skip_seq == 0);
}

/* ---- channels --------------------------------------------------------------- */

static void test_envelope_channel_room_user_all(void **state)
{
    enum bus_target target = BUS_ALL;
    char name[NAME_MAX_LEN + 1];

    (void)state;
    assert_int_equal(envelope_channel_parse("wsfan", "wsfan:room:{general}", &target, name), 0);
    assert_int_equal(target, BUS_ROOM);
    assert_string_equal(name, "general");

    assert_int_equal(envelope_channel_parse("wsfan", "wsfan:user:{alice}", &target, name), 0);
    assert_int_equal(target, BUS_USER);
    assert_string_equal(name, "alice");

    strcpy(name, "leftover");
    assert_int_equal(envelope_channel_parse("wsfan", "wsfan:all", &target, name), 0);
    assert_int_equal(target, BUS_ALL);
    assert_string_equal(name, "");

    /* Names may hold every allowed character, including ':'. */
    assert_int_equal(envelope_channel_parse("wsfan", "wsfan:room:{org:42:A-Z_a.z}", &target, name), 0);
    assert_int_equal(target, BUS_ROOM);
    assert_string_equal(name, "org:42:A-Z_a.z");
}

static void test_envelope_channel_namespace_with_colons(void **state)
{
    enum bus_target target;
    char name[NAME_MAX_LEN + 1];

    (void)state;
    assert_int_equal(envelope_channel_parse("prod:chat", "prod:chat:room:{r}", &target, name), 0);
    assert_int_equal(target, BUS_ROOM);
    assert_string_equal(name, "r");
    assert_int_equal(envelope_channel_parse("prod:chat:t1", "prod:chat:t1:all", &target, name), 0);
    assert_int_equal(target, BUS_ALL);
    /* A shorter namespace does not own the longer one's channels. */
    assert_int_equal(envelope_channel_parse("prod", "prod:chat:room:{r}", &target, name), -1);
    assert_int_equal(envelope_channel_parse("prod", "prod:chat:all", &target, name), -1);
    assert_int_equal(envelope_channel_parse("prod:chat", "prod:all", &target, name), -1);
}

static void test_envelope_channel_refuses_other_namespaces(void **state)
{
    static const char *bad[] = {
        "other:room:{r}", "wsfanx:room:{r}", "wsfa:room:{r}", "WSFAN:room:{r}", "xwsfan:room:{r}",
        ":room:{r}",      "wsfan",           "wsfan:",        "",               "wsfan;room:{r}",
        "wsfan:wsfan:all", "wsfan:all:", "wsfanall",
    };
    enum bus_target target;
    char name[NAME_MAX_LEN + 1];

    (void)state;
    for (size_t i = 0; i < COUNT(bad); i++)
        if (envelope_channel_parse("wsfan", bad[i], &target, name) != -1)
            fail_msg("accepted channel [%s]", bad[i]);
}

static void test_envelope_channel_refuses_bad_shapes(void **state)
{
    static const char *bad[] = {
        "wsfan:room:general", "wsfan:room:{general", "wsfan:room:general}", "wsfan:room{general}",
        "wsfan:room:{{general}}", "wsfan:room:{gen}eral}", "wsfan:room:x{general}", "wsfan:room::{general}",
        "wsfan:room:{general}x", "wsfan:room:{general} ", "wsfan:room:{}", "wsfan:user:{}", "wsfan:room:{",
        "wsfan:room:}", "wsfan:room:", "wsfan:room", "wsfan:user", "wsfan:{r}", "wsfan:rooms:{r}",
        "wsfan:Room:{r}", "wsfan:history:{r}", "wsfan:presence:{r}", "wsfan:all:{r}", "wsfan:ALL", "wsfan:all ",
        "wsfan: all", "wsfan:allx", "wsfan:room:{a b}", "wsfan:room:{a*}", "wsfan:room:{a?}", "wsfan:room:{[a]}",
        "wsfan:room:{a\\b}", "wsfan:room:{caf\xc3\xa9}", "wsfan:user:{a/b}", "wsfan:user:{a\tb}", "{", "}", "{}",
    };
    enum bus_target target;
    char name[NAME_MAX_LEN + 1];

    (void)state;
    for (size_t i = 0; i < COUNT(bad); i++)
        if (envelope_channel_parse("wsfan", bad[i], &target, name) != -1)
            fail_msg("accepted channel [%s]", bad[i]);
}

static void test_envelope_channel_name_length(void **state)
{
    char channel[NAME_MAX_LEN + 64], name[NAME_MAX_LEN + 1];
    enum bus_target target;

    (void)state;
    snprintf(channel, sizeof channel, "wsfan:user:{%.*s}", NAME_MAX_LEN,
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    assert_int_equal(envelope_channel_parse("wsfan", channel, &target, name), 0);
    assert_int_equal(target, BUS_USER);
    assert_int_equal(strlen(name), NAME_MAX_LEN);
    snprintf(channel, sizeof channel, "wsfan:room:{%.*sy}", NAME_MAX_LEN,
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    assert_int_equal(envelope_channel_parse("wsfan", channel, &target, name), -1);
    assert_int_equal(envelope_channel_parse("wsfan", "wsfan:room:{x}", &target, name), 0);
    assert_string_equal(name, "x");
}

/* ---- messages --------------------------------------------------------------- */

static void test_envelope_minimal_data_is_a_message_from_null(void **state)
{
    uint64_t before = event_now_ms();
    struct bus_event *ev = event_of(BUS_ROOM, "general", "{\"data\":{\"text\":\"hi\"}}");

    (void)state;
    expect_json_now(ev, "{\"type\":\"message\",\"room\":\"general\",\"from\":null,\"data\":{\"text\":\"hi\"},", before,
                    event_now_ms());
    assert_int_equal(ev->has_offset, 0);
    expect_no_skip(ev);
    bus_event_unref(ev);
}

static void test_envelope_full_envelope_is_the_exact_event(void **state)
{
    struct bus_event *ev = event_of(BUS_ROOM, "general",
                                    "{\"v\":1,\"room\":\"general\",\"from\":\"alice\",\"offset\":\"1732312345678-0\","
                                    "\"ts\":1732312345678,\"origin\":\"node-2\",\"echo_skip\":null,"
                                    "\"data\":{\"text\":\"hi\"}}");

    (void)state;
    expect_json(ev, "{\"type\":\"message\",\"room\":\"general\",\"offset\":\"1732312345678-0\",\"from\":\"alice\","
                    "\"data\":{\"text\":\"hi\"},\"ts\":1732312345678}");
    assert_int_equal(ev->has_offset, 1);
    assert_true(ev->offset.ms == 1732312345678ULL && ev->offset.seq == 0);
    expect_no_skip(ev);
    bus_event_unref(ev);

    ev = event_of(BUS_ROOM, "r", "{\"offset\":\"18446744073709551615-7\",\"ts\":0,\"data\":[]}");
    expect_json(ev, "{\"type\":\"message\",\"room\":\"r\",\"offset\":\"18446744073709551615-7\",\"from\":null,"
                    "\"data\":[],\"ts\":0}");
    assert_true(ev->offset.ms == UINT64_MAX && ev->offset.seq == 7);
    bus_event_unref(ev);
}

static void test_envelope_room_comes_from_the_channel(void **state)
{
    struct bus_event *ev = event_of(BUS_ROOM, "general", "{\"room\":\"elsewhere\",\"ts\":1,\"data\":1}");

    (void)state;
    expect_json(ev, "{\"type\":\"message\",\"room\":\"general\",\"from\":null,\"data\":1,\"ts\":1}");
    bus_event_unref(ev);
}

static void test_envelope_data_is_any_json_kept_compact(void **state)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"null", "null"},
        {"0", "0"},
        {"false", "false"},
        {"\"\"", "\"\""},
        {"{}", "{}"},
        {"[]", "[]"},
        {"{ \"a\" : [ 1 , 2 ] }", "{\"a\":[1,2]}"},
        {"\"x\\u0000y\"", "\"x\\u0000y\""},
        {"\"</script>\"", "\"</script>\""},
        {"\"\\u2028\"", "\"\xe2\x80\xa8\""},
    };
    char payload[256], expected[256];

    (void)state;
    for (size_t i = 0; i < COUNT(cases); i++) {
        snprintf(payload, sizeof payload, "{\"ts\":9,\"data\":%s}", cases[i].in);
        snprintf(expected, sizeof expected, "{\"type\":\"message\",\"room\":\"r\",\"from\":null,\"data\":%s,\"ts\":9}",
                 cases[i].out);
        struct bus_event *ev = event_of(BUS_ROOM, "r", payload);
        expect_json(ev, expected);
        bus_event_unref(ev);
    }
}

static void test_envelope_offset_and_from_may_be_null(void **state)
{
    struct bus_event *ev = event_of(BUS_ROOM, "r", "{\"from\":null,\"offset\":null,\"ts\":3,\"data\":2}");

    (void)state;
    expect_json(ev, "{\"type\":\"message\",\"room\":\"r\",\"from\":null,\"data\":2,\"ts\":3}");
    assert_int_equal(ev->has_offset, 0);
    bus_event_unref(ev);
}

static void test_envelope_bad_ts_means_now(void **state)
{
    static const char *bad[] = {"-1", "1.5", "\"5\"", "null", "true", "{}"};
    char payload[128];

    (void)state;
    for (size_t i = 0; i < COUNT(bad); i++) {
        uint64_t before = event_now_ms();
        snprintf(payload, sizeof payload, "{\"ts\":%s,\"data\":0}", bad[i]);
        struct bus_event *ev = event_of(BUS_ROOM, "r", payload);
        expect_json_now(ev, "{\"type\":\"message\",\"room\":\"r\",\"from\":null,\"data\":0,", before, event_now_ms());
        bus_event_unref(ev);
    }
}

/* ---- direct and broadcast --------------------------------------------------- */

static void test_envelope_user_channel_is_direct(void **state)
{
    struct bus_event *ev = event_of(BUS_USER, "bob", "{\"v\":1,\"from\":\"alice\",\"ts\":5,\"origin\":\"node-2\","
                                                     "\"echo_skip\":null,\"data\":{\"t\":\"psst\"}}");

    (void)state;
    expect_json(ev, "{\"type\":\"direct\",\"from\":\"alice\",\"data\":{\"t\":\"psst\"},\"ts\":5}");
    expect_no_skip(ev);
    bus_event_unref(ev);

    uint64_t before = event_now_ms();
    ev = event_of(BUS_USER, "bob", "{\"data\":null}");
    expect_json_now(ev, "{\"type\":\"direct\",\"from\":null,\"data\":null,", before, event_now_ms());
    bus_event_unref(ev);
}

static void test_envelope_all_channel_is_broadcast(void **state)
{
    struct bus_event *ev = event_of(BUS_ALL, "", "{\"v\":1,\"from\":\"ops\",\"ts\":77,\"data\":\"restart at 5\"}");

    (void)state;
    expect_json(ev, "{\"type\":\"broadcast\",\"from\":\"ops\",\"data\":\"restart at 5\",\"ts\":77}");
    expect_no_skip(ev);
    bus_event_unref(ev);

    ev = event_of(BUS_ALL, "", "{\"data\":{},\"ts\":1}");
    expect_json(ev, "{\"type\":\"broadcast\",\"from\":null,\"data\":{},\"ts\":1}");
    bus_event_unref(ev);
}

/* ---- refusals --------------------------------------------------------------- */

static void test_envelope_refuses_unknown_versions(void **state)
{
    static const char *bad[] = {"2", "0", "-1", "\"1\"", "1.0", "1.5", "null", "true", "[1]", "{}"};
    char payload[128];

    (void)state;
    for (size_t i = 0; i < COUNT(bad); i++) {
        snprintf(payload, sizeof payload, "{\"v\":%s,\"data\":1}", bad[i]);
        refused(BUS_ROOM, "r", payload);
        refused(BUS_USER, "u", payload);
        refused(BUS_ALL, "", payload);
    }
    struct bus_event *ev = event_of(BUS_ROOM, "r", "{\"v\":1,\"data\":1}");
    bus_event_unref(ev);
}

static void test_envelope_refuses_missing_data(void **state)
{
    static const char *bad[] = {"{}", "{\"v\":1}", "{\"v\":1,\"from\":\"a\",\"ts\":1}", "{\"Data\":1}",
                                "{\"payload\":{\"data\":1}}"};

    (void)state;
    for (size_t i = 0; i < COUNT(bad); i++) {
        refused(BUS_ROOM, "r", bad[i]);
        refused(BUS_ALL, "", bad[i]);
    }
}

static void test_envelope_refuses_what_is_not_a_json_object(void **state)
{
    static const char *bad[] = {
        "",       " ",   "[]",   "[{\"data\":1}]", "\"data\"", "1",     "null",
        "true",   "{",   "}",    "{\"data\":}",   "data",     "{\"data\":1}x", "{\"data\":1}{\"data\":1}",
        "{\"data\":1,}", "{'data':1}", "{\"data\":\"\xff\"}", "{\"data\":1,\"data\":2}", "{\"data\":{\"a\":1,\"a\":1}}",
        "{\"data\":99999999999999999999}",
    };

    (void)state;
    for (size_t i = 0; i < COUNT(bad); i++)
        refused(BUS_ROOM, "r", bad[i]);
    refused_len(BUS_ROOM, "r", "{\"data\":1}\0", 11);
    refused_len(BUS_ROOM, "r", "{\"data\":\"a\0b\"}", 14);
}

static void test_envelope_reads_only_len_bytes(void **state)
{
    const char *payload = "{\"data\":1,\"ts\":2}garbage";
    struct bus_event *ev = event_len(BUS_ROOM, "r", payload, 17);

    (void)state;
    expect_json(ev, "{\"type\":\"message\",\"room\":\"r\",\"from\":null,\"data\":1,\"ts\":2}");
    bus_event_unref(ev);
    refused_len(BUS_ROOM, "r", payload, 16);
    refused_len(BUS_ROOM, "r", payload, 0);
}

static void test_envelope_refuses_invalid_from(void **state)
{
    static const char *bad[] = {
        "\"\"",       "\"a b\"",   "\"a\\\"b\"", "\"caf\\u00e9\"", "\"a\\u0000\"", "\"{x}\"", "\"</script>\"",
        "1",          "true",      "[]",         "{}",
        ("\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\""), /* 129 */
    };
    char payload[512];

    (void)state;
    for (size_t i = 0; i < COUNT(bad); i++) {
        snprintf(payload, sizeof payload, "{\"from\":%s,\"data\":1}", bad[i]);
        refused(BUS_ROOM, "r", payload);
        refused(BUS_USER, "u", payload);
        refused(BUS_ALL, "", payload);
    }
}

static void test_envelope_refuses_invalid_offset(void **state)
{
    static const char *bad[] = {
        "\"\"",      "\"abc\"", "\"1\"",   "\"1-\"",  "\"-1\"",  "\"1-2-3\"", "\" 1-2\"", "\"+1-2\"",
        "\"18446744073709551616-0\"",      "\"123456789012345678901-0\"",  "1",         "1732312345678",
        "true",      "[]",      "{}",      "\"\\u0000\"",
    };
    char payload[256];

    (void)state;
    for (size_t i = 0; i < COUNT(bad); i++) {
        snprintf(payload, sizeof payload, "{\"offset\":%s,\"data\":1}", bad[i]);
        refused(BUS_ROOM, "r", payload);
    }
}

/* ---- presence --------------------------------------------------------------- */

static void test_envelope_presence_join_and_leave(void **state)
{
    struct bus_event *ev =
        event_of(BUS_ROOM, "r", "{\"v\":1,\"room\":\"r\",\"presence\":\"join\",\"user\":\"u\",\"origin\":\"n\","
                                "\"data\":null}");

    (void)state;
    expect_json(ev, "{\"type\":\"presence_join\",\"room\":\"r\",\"user\":\"u\"}");
    assert_int_equal(ev->has_offset, 0);
    expect_no_skip(ev);
    bus_event_unref(ev);

    ev = event_of(BUS_ROOM, "general", "{\"v\":1,\"presence\":\"leave\",\"user\":\"alice\",\"data\":null}");
    expect_json(ev, "{\"type\":\"presence_leave\",\"room\":\"general\",\"user\":\"alice\"}");
    bus_event_unref(ev);

    /* An offset on a presence envelope does not make it a persisted message. */
    ev = event_of(BUS_ROOM, "r", "{\"presence\":\"join\",\"user\":\"u\",\"offset\":\"5-5\",\"data\":{}}");
    expect_json(ev, "{\"type\":\"presence_join\",\"room\":\"r\",\"user\":\"u\"}");
    assert_int_equal(ev->has_offset, 0);
    bus_event_unref(ev);
}

static void test_envelope_presence_refusals(void **state)
{
    static const char *bad_room[] = {
        /* no user, null or invalid user */
        "{\"v\":1,\"presence\":\"join\",\"data\":null}",
        "{\"v\":1,\"presence\":\"join\",\"user\":null,\"data\":null}",
        "{\"v\":1,\"presence\":\"join\",\"user\":\"\",\"data\":null}",
        "{\"v\":1,\"presence\":\"join\",\"user\":\"a b\",\"data\":null}",
        "{\"v\":1,\"presence\":\"join\",\"user\":5,\"data\":null}",
        /* bad kind */
        "{\"v\":1,\"presence\":\"kick\",\"user\":\"u\",\"data\":null}",
        "{\"v\":1,\"presence\":\"\",\"user\":\"u\",\"data\":null}",
        "{\"v\":1,\"presence\":\"JOIN\",\"user\":\"u\",\"data\":null}",
        "{\"v\":1,\"presence\":\"joined\",\"user\":\"u\",\"data\":null}",
        "{\"v\":1,\"presence\":\"presence_join\",\"user\":\"u\",\"data\":null}",
        "{\"v\":1,\"presence\":null,\"user\":\"u\",\"data\":null}",
        "{\"v\":1,\"presence\":1,\"user\":\"u\",\"data\":null}",
        "{\"v\":1,\"presence\":true,\"user\":\"u\",\"data\":null}",
        "{\"v\":1,\"presence\":[\"join\"],\"user\":\"u\",\"data\":null}",
        /* the rest of the envelope still counts */
        "{\"v\":1,\"presence\":\"join\",\"user\":\"u\"}",
        "{\"v\":2,\"presence\":\"join\",\"user\":\"u\",\"data\":null}",
        "{\"v\":1,\"presence\":\"join\",\"user\":\"u\",\"from\":\"a b\",\"data\":null}",
    };
    static const char *good_elsewhere = "{\"v\":1,\"presence\":\"join\",\"user\":\"u\",\"data\":null}";

    (void)state;
    for (size_t i = 0; i < COUNT(bad_room); i++)
        refused(BUS_ROOM, "r", bad_room[i]);
    /* Only a room channel carries presence. */
    refused(BUS_USER, "u", good_elsewhere);
    refused(BUS_ALL, "", good_elsewhere);
    struct bus_event *ev = event_of(BUS_ROOM, "r", good_elsewhere);
    bus_event_unref(ev);
}

/* ---- echo_skip -------------------------------------------------------------- */

static void test_envelope_echo_skip_from_this_node(void **state)
{
    struct bus_event *ev = event_of(BUS_ROOM, "r", "{\"v\":1,\"room\":\"r\",\"from\":\"alice\",\"ts\":1,"
                                                   "\"origin\":\"" NODE "\",\"echo_skip\":\"3.42\",\"data\":1}");

    (void)state;
    expect_json(ev, "{\"type\":\"message\",\"room\":\"r\",\"from\":\"alice\",\"data\":1,\"ts\":1}");
    assert_int_equal(ev->skip_worker, 3);
    assert_true(ev->skip_seq == 42);
    bus_event_unref(ev);

    ev = event_of(BUS_ROOM, "r", "{\"origin\":\"" NODE "\",\"echo_skip\":\"0.18446744073709551615\",\"data\":1}");
    assert_int_equal(ev->skip_worker, 0);
    assert_true(ev->skip_seq == UINT64_MAX);
    bus_event_unref(ev);

    /* On user and all channels too (a send or broadcast with echo off). */
    ev = event_of(BUS_USER, "u", "{\"origin\":\"" NODE "\",\"echo_skip\":\"1.7\",\"data\":1}");
    assert_int_equal(ev->skip_worker, 1);
    assert_true(ev->skip_seq == 7);
    bus_event_unref(ev);
    ev = event_of(BUS_ALL, "", "{\"origin\":\"" NODE "\",\"echo_skip\":\"2.8\",\"data\":1}");
    assert_int_equal(ev->skip_worker, 2);
    assert_true(ev->skip_seq == 8);
    bus_event_unref(ev);
}

static void test_envelope_echo_skip_ignored_unless_origin_is_this_node(void **state)
{
    static const char *payloads[] = {
        "{\"origin\":\"node-2\",\"echo_skip\":\"3.42\",\"data\":1}",
        "{\"origin\":\"node-10\",\"echo_skip\":\"3.42\",\"data\":1}",
        "{\"origin\":\"node-\",\"echo_skip\":\"3.42\",\"data\":1}",
        "{\"origin\":\"NODE-1\",\"echo_skip\":\"3.42\",\"data\":1}",
        "{\"origin\":\"\",\"echo_skip\":\"3.42\",\"data\":1}",
        "{\"origin\":null,\"echo_skip\":\"3.42\",\"data\":1}",
        "{\"origin\":1,\"echo_skip\":\"3.42\",\"data\":1}",
        "{\"origin\":[\"" NODE "\"],\"echo_skip\":\"3.42\",\"data\":1}",
        "{\"echo_skip\":\"3.42\",\"data\":1}",
        /* this node, but no usable echo_skip */
        "{\"origin\":\"" NODE "\",\"data\":1}",
        "{\"origin\":\"" NODE "\",\"echo_skip\":null,\"data\":1}",
        "{\"origin\":\"" NODE "\",\"echo_skip\":\"\",\"data\":1}",
        "{\"origin\":\"" NODE "\",\"echo_skip\":\"3\",\"data\":1}",
        "{\"origin\":\"" NODE "\",\"echo_skip\":\"x.1\",\"data\":1}",
        "{\"origin\":\"" NODE "\",\"echo_skip\":\"3.x\",\"data\":1}",
        "{\"origin\":\"" NODE "\",\"echo_skip\":3.42,\"data\":1}",
        "{\"origin\":\"" NODE "\",\"echo_skip\":[3,42],\"data\":1}",
    };

    (void)state;
    for (size_t i = 0; i < COUNT(payloads); i++) {
        struct bus_event *ev = event_of(BUS_ROOM, "r", payloads[i]);
        if (ev->skip_worker != -1 || ev->skip_seq != 0)
            fail_msg("%s: skips %d.%llu", payloads[i], ev->skip_worker, (unsigned long long)ev->skip_seq);
        bus_event_unref(ev);
    }
}

/* JSON strings may hold NUL (the parser accepts \u0000): a string must be
 * judged whole, not up to its first NUL. An origin of "node-1\u0000x" is
 * another node, and a presence kind of "join\u0000x" is not "join". */
static void test_envelope_strings_with_nul_are_judged_whole(void **state)
{
    static const char *refuse[] = {
        "{\"presence\":\"join\\u0000x\",\"user\":\"u\",\"data\":null}",
        "{\"offset\":\"1-2\\u0000x\",\"data\":1}",
    };
    const char *skip = "{\"origin\":\"" NODE "\\u0000x\",\"echo_skip\":\"3.42\",\"data\":1}";
    char failures[1024] = "";
    size_t n = 0;
    const char *why;
    struct bus_event *ev;

    (void)state;
    ev = envelope_to_event(NODE, BUS_ROOM, "r", skip, strlen(skip), &why);
    assert_non_null(ev);
    if (ev->skip_worker != -1 || ev->skip_seq != 0)
        n += (size_t)snprintf(failures + n, sizeof failures - n, "\n  %s: skips %d.%llu", skip, ev->skip_worker,
                              (unsigned long long)ev->skip_seq);
    bus_event_unref(ev);
    for (size_t i = 0; i < COUNT(refuse); i++) {
        ev = envelope_to_event(NODE, BUS_ROOM, "r", refuse[i], strlen(refuse[i]), &why);
        if (ev) {
            n += (size_t)snprintf(failures + n, sizeof failures - n, "\n  %s: accepted as %s", refuse[i], ev->json);
            bus_event_unref(ev);
        }
    }
    if (n)
        fail_msg("strings cut at their NUL:%s", failures);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_envelope_channel_room_user_all),
        cmocka_unit_test(test_envelope_channel_namespace_with_colons),
        cmocka_unit_test(test_envelope_channel_refuses_other_namespaces),
        cmocka_unit_test(test_envelope_channel_refuses_bad_shapes),
        cmocka_unit_test(test_envelope_channel_name_length),
        cmocka_unit_test(test_envelope_minimal_data_is_a_message_from_null),
        cmocka_unit_test(test_envelope_full_envelope_is_the_exact_event),
        cmocka_unit_test(test_envelope_room_comes_from_the_channel),
        cmocka_unit_test(test_envelope_data_is_any_json_kept_compact),
        cmocka_unit_test(test_envelope_offset_and_from_may_be_null),
        cmocka_unit_test(test_envelope_bad_ts_means_now),
        cmocka_unit_test(test_envelope_user_channel_is_direct),
        cmocka_unit_test(test_envelope_all_channel_is_broadcast),
        cmocka_unit_test(test_envelope_refuses_unknown_versions),
        cmocka_unit_test(test_envelope_refuses_missing_data),
        cmocka_unit_test(test_envelope_refuses_what_is_not_a_json_object),
        cmocka_unit_test(test_envelope_reads_only_len_bytes),
        cmocka_unit_test(test_envelope_refuses_invalid_from),
        cmocka_unit_test(test_envelope_refuses_invalid_offset),
        cmocka_unit_test(test_envelope_presence_join_and_leave),
        cmocka_unit_test(test_envelope_presence_refusals),
        cmocka_unit_test(test_envelope_echo_skip_from_this_node),
        cmocka_unit_test(test_envelope_echo_skip_ignored_unless_origin_is_this_node),
        cmocka_unit_test(test_envelope_strings_with_nul_are_judged_whole),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
