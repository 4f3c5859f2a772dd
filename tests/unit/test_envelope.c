/* test_envelope.c - unit tests of codec/envelope.c: the Redis channel names
 * of a namespace (docs/protocol.md section 6), built and read; the
 * envelopes this node publishes (message parts joined around an offset,
 * presence), exactly as section 6 writes them and read back as the same
 * event; and envelopes turned into client events (section 3): the minimal
 * {"data":..} from other services, full envelopes from other nodes, direct
 * and broadcast channels, the presence extension, echo_skip, and every
 * envelope that must be refused with a reason instead of forwarded. With
 * tenants: names under <namespace>:<tenant> built and read back as keys
 * (core/names.h), bad tenants refused, and info in presence announcements.
 * Seals: an offset is believed only from an envelope sealed with the
 * namespace's secret for its channel, checked against the seal written out
 * from its definition. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/envelope.h"
#include "codec/event.h"
#include "core/clock.h"

#define NODE "node-1"
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define SECRET "0123456789abcdef-test-secret"
#define CHANNEL "ns:room:{r}" /* every envelope of these tests is sealed and read on it */

static struct envelope_seal seal;

/* ---- helpers ---------------------------------------------------------------- */

/* The event for payload (from a buffer of exactly its size, so ASan sees
 * any over-read); fails the test when refused. */
static struct event *event_len(enum event_target target, const char *name, const char *payload, size_t len)
{
    const char *why = NULL;
    char *copy = malloc(len ? len : 1);
    struct event *ev;

    assert_non_null(copy);
    memcpy(copy, payload, len);
    ev = envelope_to_event(NODE, &seal, CHANNEL, target, name, copy, len, &why);
    free(copy);
    if (!ev)
        fail_msg("refused %.*s: %s", (int)len, payload, why ? why : "(no reason)");
    assert_int_equal(ev->target, target);
    assert_string_equal(ev->key, name);
    assert_int_equal(ev->len, strlen(ev->json));
    return ev;
}

static struct event *event_of(enum event_target target, const char *name, const char *payload)
{
    return event_len(target, name, payload, strlen(payload));
}

/* Expects payload on target/name to be refused with a reason. */
static const char *refused_len(enum event_target target, const char *name, const char *payload, size_t len)
{
    const char *why = NULL;
    char *copy = malloc(len ? len : 1);
    struct event *ev;

    assert_non_null(copy);
    memcpy(copy, payload, len);
    ev = envelope_to_event(NODE, &seal, CHANNEL, target, name, copy, len, &why);
    free(copy);
    if (ev) {
        char text[512];
        snprintf(text, sizeof text, "%s", ev->json);
        event_unref(ev);
        fail_msg("accepted %.*s as %s", (int)len, payload, text);
    }
    assert_non_null(why);
    assert_true(why[0] != '\0');
    assert_null(strchr(why, '\n'));
    return why;
}

static const char *refused(enum event_target target, const char *name, const char *payload)
{
    return refused_len(target, name, payload, strlen(payload));
}

/* Checks that ev's text is exactly expected and valid JSON. */
static void expect_json(const struct event *ev, const char *expected)
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
static void expect_json_now(const struct event *ev, const char *prefix, uint64_t lo, uint64_t hi)
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

static void expect_no_skip(const struct event *ev)
{
    assert_int_equal(ev->skip_worker, -1);
    assert_true(ev->skip_seq == 0);
}

/* ---- channels --------------------------------------------------------------- */

static void test_envelope_channel_room_user_all(void **state)
{
    enum event_target target = EVENT_ALL;
    char name[KEY_MAX_LEN + 1];

    (void)state;
    assert_int_equal(envelope_channel_parse("wsfan", "wsfan:room:{general}", &target, name), 0);
    assert_int_equal(target, EVENT_ROOM);
    assert_string_equal(name, "general");

    assert_int_equal(envelope_channel_parse("wsfan", "wsfan:user:{alice}", &target, name), 0);
    assert_int_equal(target, EVENT_USER);
    assert_string_equal(name, "alice");

    strcpy(name, "leftover");
    assert_int_equal(envelope_channel_parse("wsfan", "wsfan:all", &target, name), 0);
    assert_int_equal(target, EVENT_ALL);
    assert_string_equal(name, "");

    /* Names may hold every allowed character, including ':'. */
    assert_int_equal(envelope_channel_parse("wsfan", "wsfan:room:{org:42:A-Z_a.z}", &target, name), 0);
    assert_int_equal(target, EVENT_ROOM);
    assert_string_equal(name, "org:42:A-Z_a.z");
}

static void test_envelope_channel_namespace_with_colons(void **state)
{
    enum event_target target;
    char name[KEY_MAX_LEN + 1];

    (void)state;
    assert_int_equal(envelope_channel_parse("prod:chat", "prod:chat:room:{r}", &target, name), 0);
    assert_int_equal(target, EVENT_ROOM);
    assert_string_equal(name, "r");
    assert_int_equal(envelope_channel_parse("prod:chat:t1", "prod:chat:t1:all", &target, name), 0);
    assert_int_equal(target, EVENT_ALL);
    /* A tenant's NS is <namespace>:<tenant>: to a shorter namespace, the
     * longer one's channels are a tenant's. */
    assert_int_equal(envelope_channel_parse("prod", "prod:chat:room:{r}", &target, name), 0);
    assert_int_equal(target, EVENT_ROOM);
    assert_string_equal(name, "chat/r");
    assert_int_equal(envelope_channel_parse("prod", "prod:chat:all", &target, name), 0);
    assert_int_equal(target, EVENT_ALL);
    assert_string_equal(name, "chat/");
    /* A longer namespace does not own the shorter one's channels. */
    assert_int_equal(envelope_channel_parse("prod:chat", "prod:all", &target, name), -1);
}

static void test_envelope_channel_refuses_other_namespaces(void **state)
{
    static const char *bad[] = {
        "other:room:{r}", "wsfanx:room:{r}", "wsfa:room:{r}", "WSFAN:room:{r}", "xwsfan:room:{r}",
        ":room:{r}",      "wsfan",           "wsfan:",        "",               "wsfan;room:{r}",
        "wsfan:all:", "wsfanall",
    };
    enum event_target target;
    char name[KEY_MAX_LEN + 1];

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
    enum event_target target;
    char name[KEY_MAX_LEN + 1];

    (void)state;
    for (size_t i = 0; i < COUNT(bad); i++)
        if (envelope_channel_parse("wsfan", bad[i], &target, name) != -1)
            fail_msg("accepted channel [%s]", bad[i]);
}

static void test_envelope_channel_name_length(void **state)
{
    char channel[NAME_MAX_LEN + 64], name[KEY_MAX_LEN + 1];
    enum event_target target;

    (void)state;
    snprintf(channel, sizeof channel, "wsfan:user:{%.*s}", NAME_MAX_LEN,
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    assert_int_equal(envelope_channel_parse("wsfan", channel, &target, name), 0);
    assert_int_equal(target, EVENT_USER);
    assert_int_equal(strlen(name), NAME_MAX_LEN);
    snprintf(channel, sizeof channel, "wsfan:room:{%.*sy}", NAME_MAX_LEN,
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    assert_int_equal(envelope_channel_parse("wsfan", channel, &target, name), -1);
    assert_int_equal(envelope_channel_parse("wsfan", "wsfan:room:{x}", &target, name), 0);
    assert_string_equal(name, "x");
}

/* ---- building channel names ------------------------------------------------ */

static void test_envelope_channel_name_of_each_target(void **state)
{
    char channel[ENVELOPE_CHANNEL_MAX];

    (void)state;
    envelope_channel_name("wsfan", EVENT_ROOM, "general", channel);
    assert_string_equal(channel, "wsfan:room:{general}");
    envelope_channel_name("prod:chat", EVENT_USER, "alice", channel);
    assert_string_equal(channel, "prod:chat:user:{alice}");
    envelope_channel_name("wsfan", EVENT_ALL, "", channel);
    assert_string_equal(channel, "wsfan:all");
}

static void test_envelope_channel_name_reads_back(void **state)
{
    char longest[NAME_MAX_LEN + 1], channel[ENVELOPE_CHANNEL_MAX], name[KEY_MAX_LEN + 1];
    const char *names[] = {"r", "org:42:A-Z_a.z", longest};
    const char *namespaces[] = {"wsfan", "prod:chat", "prod:chat:t1"};
    enum event_target target;

    (void)state;
    memset(longest, 'x', NAME_MAX_LEN);
    longest[NAME_MAX_LEN] = '\0';
    for (size_t n = 0; n < COUNT(namespaces); n++) {
        for (size_t i = 0; i < COUNT(names); i++) {
            for (enum event_target t = EVENT_ROOM; t <= EVENT_USER; t++) {
                envelope_channel_name(namespaces[n], t, names[i], channel);
                assert_int_equal(envelope_channel_parse(namespaces[n], channel, &target, name), 0);
                assert_int_equal(target, t);
                assert_string_equal(name, names[i]);
            }
        }
        envelope_channel_name(namespaces[n], EVENT_ALL, "", channel);
        strcpy(name, "leftover");
        assert_int_equal(envelope_channel_parse(namespaces[n], channel, &target, name), 0);
        assert_int_equal(target, EVENT_ALL);
        assert_string_equal(name, "");
    }
}

/* ---- building envelopes ----------------------------------------------------- */

/* f's envelope as the bus publishes it: the parts (with room for an offset
 * when offset is not NULL) joined around offset. The caller frees it. */
static char *build(const struct envelope_fields *f, const char *offset)
{
    struct envelope_parts parts;
    char *text;

    assert_int_equal(envelope_build(f, offset != NULL, &parts), 0);
    assert_non_null(parts.head);
    assert_non_null(parts.tail);
    text = envelope_join(&parts, &seal, CHANNEL, offset);
    assert_non_null(text);
    envelope_parts_free(&parts);
    assert_null(parts.head);
    assert_null(parts.tail);
    envelope_parts_free(&parts); /* freed parts free again fine */
    return text;
}

/* Checks text is exactly expected and one JSON object without duplicate
 * keys. */
static void expect_envelope(const char *text, const char *expected)
{
    json_error_t err;
    json_t *v;

    if (strcmp(text, expected))
        fail_msg("envelope [%s], expected [%s]", text, expected);
    v = json_loads(text, JSON_REJECT_DUPLICATES, &err);
    if (!v)
        fail_msg("not JSON: %s: %s", err.text, text);
    assert_true(json_is_object(v));
    json_decref(v);
}

/* The hex SHA-1 of the secret (zero-padded to 64 bytes) XOR x, then text. */
static void padded_sha1_hex(unsigned char x, const char *text, char hex[41])
{
    unsigned char buf[1100] = {0}, md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    size_t len = strlen(text);

    assert_true(64 + len <= sizeof buf);
    memcpy(buf, SECRET, strlen(SECRET));
    for (int i = 0; i < 64; i++)
        buf[i] ^= x;
    memcpy(buf + 64, text, len);
    assert_true(EVP_Digest(buf, 64 + len, md, &md_len, EVP_sha1(), NULL));
    assert_int_equal(md_len, 20);
    for (unsigned int i = 0; i < md_len; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

/* expected with "mac":"" sealed the way docs/protocol.md says, written out
 * here from its definition: sha1hex(opad . sha1hex(ipad . CHANNEL \n
 * text)). text must be expected with the seal's hex in the mac's value. */
static void expect_sealed(const char *text, const char *expected)
{
    const char *mac = strstr(expected, "\"mac\":\"\"");
    char msg[1024], inner[41], hex[41], want[1024];

    assert_non_null(mac);
    snprintf(msg, sizeof msg, "%s\n%s", CHANNEL, expected);
    padded_sha1_hex(0x36, msg, inner);
    padded_sha1_hex(0x5c, inner, hex);
    int at = (int)(mac - expected) + 7;
    snprintf(want, sizeof want, "%.*s%s%s", at, expected, hex, expected + at);
    expect_envelope(text, want);
}

static void test_envelope_build_room_message_is_the_documented_text(void **state)
{
    struct envelope_fields f = {
        .target = EVENT_ROOM, .room = "general", .from = "alice", .ts = 1732312345678ULL, .origin = NODE,
        .echo_skip = NULL, .data = "{\"text\":\"hi\"}", .data_len = 13,
    };
    char *text;

    (void)state;
    text = build(&f, "1732312345678-0");
    expect_sealed(text, "{\"v\":1,\"room\":\"general\",\"from\":\"alice\",\"ts\":1732312345678,\"origin\":\"" NODE
                        "\",\"echo_skip\":null,\"offset\":\"1732312345678-0\",\"mac\":\"\",\"data\":{\"text\":\"hi\"}}");
    free(text);

    /* not persisted: no offset field; anonymous; echo off */
    f.from = NULL;
    f.echo_skip = "3.42";
    f.ts = 5;
    text = build(&f, NULL);
    expect_envelope(text, "{\"v\":1,\"room\":\"general\",\"from\":null,\"ts\":5,\"origin\":\"" NODE
                          "\",\"echo_skip\":\"3.42\",\"data\":{\"text\":\"hi\"}}");
    free(text);
}

static void test_envelope_build_direct_and_broadcast_have_no_room(void **state)
{
    struct envelope_fields f = {
        .target = EVENT_USER, .room = NULL, .from = "alice", .ts = 5, .origin = NODE, .data = "\"psst\"",
        .data_len = 6,
    };
    char *text;

    (void)state;
    text = build(&f, NULL);
    expect_envelope(text, "{\"v\":1,\"from\":\"alice\",\"ts\":5,\"origin\":\"" NODE
                          "\",\"echo_skip\":null,\"data\":\"psst\"}");
    free(text);

    f.target = EVENT_ALL;
    f.from = NULL;
    f.data = "[1,2]xyz"; /* data is taken by its length */
    f.data_len = 5;
    text = build(&f, NULL);
    expect_envelope(text, "{\"v\":1,\"from\":null,\"ts\":5,\"origin\":\"" NODE "\",\"echo_skip\":null,\"data\":[1,2]}");
    free(text);
}

static void test_envelope_build_parts_surround_the_offset(void **state)
{
    struct envelope_fields f = {
        .target = EVENT_ROOM, .room = "r", .from = "u", .ts = 1, .origin = NODE, .data = "1", .data_len = 1,
    };
    struct envelope_parts parts;
    char *text;

    (void)state;
    /* The store learns the offset when it appends: the parts are written
     * once, the offset goes between them. */
    assert_int_equal(envelope_build(&f, 1, &parts), 0);
    assert_string_equal(parts.head, "{\"v\":1,\"room\":\"r\",\"from\":\"u\",\"ts\":1,\"origin\":\"" NODE
                                    "\",\"echo_skip\":null,\"offset\":\"");
    assert_string_equal(parts.tail, ",\"data\":1}");
    text = envelope_join(&parts, &seal, CHANNEL, "7-0");
    expect_sealed(text, "{\"v\":1,\"room\":\"r\",\"from\":\"u\",\"ts\":1,\"origin\":\"" NODE
                        "\",\"echo_skip\":null,\"offset\":\"7-0\",\"mac\":\"\",\"data\":1}");
    free(text);
    text = envelope_join(&parts, &seal, CHANNEL, "18446744073709551615-18446744073709551615");
    expect_sealed(text, "{\"v\":1,\"room\":\"r\",\"from\":\"u\",\"ts\":1,\"origin\":\"" NODE
                        "\",\"echo_skip\":null,\"offset\":\"18446744073709551615-18446744073709551615\",\"mac\":\"\","
                        "\"data\":1}");
    free(text);
    envelope_parts_free(&parts);

    assert_int_equal(envelope_build(&f, 0, &parts), 0);
    assert_string_equal(parts.head, "{\"v\":1,\"room\":\"r\",\"from\":\"u\",\"ts\":1,\"origin\":\"" NODE
                                    "\",\"echo_skip\":null");
    assert_string_equal(parts.tail, ",\"data\":1}");
    envelope_parts_free(&parts);
}

static void test_envelope_presence_is_the_documented_text(void **state)
{
    char *text;

    (void)state;
    text = envelope_presence("general", "alice", EVENT_PRESENCE_JOIN, NODE, NULL);
    assert_non_null(text);
    expect_envelope(text, "{\"v\":1,\"room\":\"general\",\"presence\":\"join\",\"user\":\"alice\",\"origin\":\"" NODE
                          "\",\"data\":null}");
    free(text);
    text = envelope_presence("r", "u.1", EVENT_PRESENCE_LEAVE, "node-2", NULL);
    assert_non_null(text);
    expect_envelope(text, "{\"v\":1,\"room\":\"r\",\"presence\":\"leave\",\"user\":\"u.1\",\"origin\":\"node-2\","
                          "\"data\":null}");
    free(text);
}

/* ---- built envelopes read back ---------------------------------------------- */

/* Checks that got is the same event as expected: text, target, kind, name,
 * offset. */
static void expect_same_event(const struct event *got, const struct event *expected)
{
    assert_non_null(expected);
    if (strcmp(got->json, expected->json))
        fail_msg("read back [%s], expected [%s]", got->json, expected->json);
    assert_int_equal(got->len, expected->len);
    assert_int_equal(got->target, expected->target);
    assert_int_equal(got->kind, expected->kind);
    assert_string_equal(got->key, expected->key);
    assert_int_equal(got->has_offset, expected->has_offset);
    assert_int_equal(offset_cmp(got->offset, expected->offset), 0);
}

static void test_envelope_built_message_reads_back_as_the_same_event(void **state)
{
    char longest[NAME_MAX_LEN + 1];
    static const char *datas[] = {
        "null", "0", "-1.5", "\"\"", "{}", "[]", "{\"text\":\"hi\"}",
        "{\"s\":\"caf\xc3\xa9 \\\"q\\\" \\\\ \\n \\u0000 </script>\",\"n\":-12,\"b\":[true,false,null,{}]}",
    };
    static const char *offsets[] = {NULL, "0-0", "1732312345678-3", "18446744073709551615-18446744073709551615"};

    (void)state;
    memset(longest, 'x', NAME_MAX_LEN);
    longest[NAME_MAX_LEN] = '\0';
    const char *froms[] = {NULL, "alice", longest};
    const char *rooms[] = {"general", "org:42:A-Z_a.z", longest};
    for (size_t d = 0; d < COUNT(datas); d++)
        for (size_t o = 0; o < COUNT(offsets); o++)
            for (size_t i = 0; i < COUNT(froms); i++) {
                const char *room = rooms[(d + o + i) % COUNT(rooms)];
                struct envelope_fields f = {
                    .target = EVENT_ROOM, .room = room, .from = froms[i], .ts = d * 1000 + o, .origin = "node-2",
                    .data = datas[d], .data_len = strlen(datas[d]),
                };
                struct offset offset;
                if (offsets[o])
                    assert_int_equal(offset_parse(offsets[o], &offset), 0);
                char *text = build(&f, offsets[o]);
                struct event *ev = event_of(EVENT_ROOM, room, text);
                struct event *expected =
                    event_message(room, offsets[o] ? &offset : NULL, froms[i], datas[d], strlen(datas[d]), f.ts);
                expect_same_event(ev, expected);
                expect_no_skip(ev);
                event_unref(expected);
                event_unref(ev);
                free(text);
            }
}

static void test_envelope_built_direct_and_broadcast_read_back_as_the_same_event(void **state)
{
    struct envelope_fields f = {
        .target = EVENT_USER, .from = "alice", .ts = INT64_MAX, .origin = "node-2", .data = "{\"t\":[1,\"x\"]}",
        .data_len = 13,
    };
    char *text;
    struct event *ev, *expected;

    (void)state;
    text = build(&f, NULL);
    ev = event_of(EVENT_USER, "bob", text);
    expected = event_direct(EVENT_USER, "bob", "alice", f.data, f.data_len, INT64_MAX);
    expect_same_event(ev, expected);
    expect_no_skip(ev);
    event_unref(expected);
    event_unref(ev);
    free(text);

    f.target = EVENT_ALL;
    f.from = NULL;
    f.ts = 0;
    text = build(&f, NULL);
    ev = event_of(EVENT_ALL, "", text);
    expected = event_direct(EVENT_ALL, NULL, NULL, f.data, f.data_len, 0);
    expect_same_event(ev, expected);
    expect_no_skip(ev);
    event_unref(expected);
    event_unref(ev);
    free(text);
}

static void test_envelope_built_echo_skip_reads_back_on_this_node_only(void **state)
{
    static const struct {
        const char *skip;
        int worker;
        uint64_t seq;
    } cases[] = {{"3.42", 3, 42}, {"0.0", 0, 0}, {"65535.18446744073709551615", 65535, UINT64_MAX}};
    static const enum event_target targets[] = {EVENT_ROOM, EVENT_USER, EVENT_ALL};
    static const char *names[] = {"r", "u", ""};

    (void)state;
    for (size_t i = 0; i < COUNT(cases); i++)
        for (size_t t = 0; t < COUNT(targets); t++)
            for (int persisted = 0; persisted <= (targets[t] == EVENT_ROOM); persisted++) {
                struct envelope_fields f = {
                    .target = targets[t], .room = targets[t] == EVENT_ROOM ? "r" : NULL, .from = "alice", .ts = 9,
                    .origin = NODE, .echo_skip = cases[i].skip, .data = "1", .data_len = 1,
                };
                char *text = build(&f, persisted ? "5-1" : NULL);
                struct event *ev = event_of(targets[t], names[t], text);
                assert_int_equal(ev->skip_worker, cases[i].worker);
                assert_true(ev->skip_seq == cases[i].seq);
                assert_int_equal(ev->has_offset, persisted);
                event_unref(ev);
                free(text);

                /* the same envelope from another node skips nobody */
                f.origin = "node-2";
                text = build(&f, persisted ? "5-1" : NULL);
                ev = event_of(targets[t], names[t], text);
                expect_no_skip(ev);
                event_unref(ev);
                free(text);
            }
}

static void test_envelope_built_presence_reads_back_as_the_same_event(void **state)
{
    char longest[NAME_MAX_LEN + 1];
    static const enum event_kind kinds[] = {EVENT_PRESENCE_JOIN, EVENT_PRESENCE_LEAVE};

    (void)state;
    memset(longest, 'x', NAME_MAX_LEN);
    longest[NAME_MAX_LEN] = '\0';
    const char *rooms[] = {"general", longest}, *users[] = {"u.1", longest};
    for (size_t k = 0; k < COUNT(kinds); k++)
        for (size_t i = 0; i < COUNT(rooms); i++) {
            /* from this node or another: presence has no echo to skip */
            for (int here = 0; here <= 1; here++) {
                char *text = envelope_presence(rooms[i], users[i], kinds[k], here ? NODE : "node-2", NULL);
                assert_non_null(text);
                struct event *ev = event_of(EVENT_ROOM, rooms[i], text);
                struct event *expected = event_presence(kinds[k], rooms[i], users[i], NULL);
                expect_same_event(ev, expected);
                expect_no_skip(ev);
                event_unref(expected);
                event_unref(ev);
                free(text);
            }
        }
}

/* ---- tenants ------------------------------------------------------------------ */

static void test_envelope_tenant_names_are_under_namespace_and_tenant(void **state)
{
    char out[ENVELOPE_CHANNEL_MAX];

    (void)state;
    /* Without a tenant, the names are those of section 6, unchanged. */
    envelope_channel_name("wsfan", EVENT_ROOM, "general", out);
    assert_string_equal(out, "wsfan:room:{general}");
    envelope_channel_name("wsfan", EVENT_ALL, "", out);
    assert_string_equal(out, "wsfan:all");
    envelope_redis_name("wsfan", "history", "general", out);
    assert_string_equal(out, "wsfan:history:{general}");
    envelope_redis_name("wsfan", "rooms", "", out);
    assert_string_equal(out, "wsfan:rooms");
    /* In tenant acme, NS is wsfan:acme. */
    envelope_channel_name("wsfan", EVENT_ROOM, "acme/general", out);
    assert_string_equal(out, "wsfan:acme:room:{general}");
    envelope_channel_name("prod:chat", EVENT_USER, "acme/alice", out);
    assert_string_equal(out, "prod:chat:acme:user:{alice}");
    envelope_channel_name("wsfan", EVENT_ALL, "acme/", out);
    assert_string_equal(out, "wsfan:acme:all");
    envelope_redis_name("wsfan", "history", "acme/general", out);
    assert_string_equal(out, "wsfan:acme:history:{general}");
    envelope_redis_name("wsfan", "presence", "a:b/r:1", out);
    assert_string_equal(out, "wsfan:a:b:presence:{r:1}");
    envelope_redis_name("wsfan", "rooms", "acme/", out);
    assert_string_equal(out, "wsfan:acme:rooms");
}

static void test_envelope_tenant_channels_read_back(void **state)
{
    char tenant[TENANT_MAX_LEN + 1], name[NAME_MAX_LEN + 1], ns[NAME_MAX_LEN + 1];
    char channel[ENVELOPE_CHANNEL_MAX], got[KEY_MAX_LEN + 1];
    /* Tenants named like the parts of a channel, with ':', the longest. */
    const char *tenants[] = {"acme", "room", "user", "all", "a:b:c", "room:{x", tenant};
    const char *names[] = {"r", "room:{x}", "all", name};
    const char *namespaces[] = {"wsfan", "prod:chat", ns};
    enum event_target target;

    (void)state;
    memset(tenant, 't', TENANT_MAX_LEN);
    tenant[TENANT_MAX_LEN] = '\0';
    memset(name, 'n', NAME_MAX_LEN);
    name[NAME_MAX_LEN] = '\0';
    memset(ns, 's', NAME_MAX_LEN);
    ns[NAME_MAX_LEN] = '\0';
    for (size_t n = 0; n < COUNT(namespaces); n++)
        for (size_t t = 0; t < COUNT(tenants); t++) {
            int valid = name_tenant_valid(tenants[t], strlen(tenants[t]));
            for (size_t i = 0; i < COUNT(names); i++) {
                int name_ok = name_valid(names[i], strlen(names[i]));
                char key[KEY_MAX_LEN + 1];
                if (!valid || !name_ok)
                    continue;
                snprintf(key, sizeof key, "%s/%s", tenants[t], names[i]);
                for (enum event_target k = EVENT_ROOM; k <= EVENT_USER; k++) {
                    envelope_channel_name(namespaces[n], k, key, channel);
                    assert_int_equal(strlen(channel),
                                     strlen(namespaces[n]) + strlen(tenants[t]) + strlen(names[i]) + 9);
                    assert_int_equal(envelope_channel_parse(namespaces[n], channel, &target, got), 0);
                    assert_int_equal(target, k);
                    assert_string_equal(got, key);
                }
                /* The longest Redis name of all fits. */
                envelope_redis_name(namespaces[n], "presence", key, channel);
                assert_int_equal(strlen(channel),
                                 strlen(namespaces[n]) + strlen(tenants[t]) + strlen(names[i]) + 13);
            }
            if (!valid)
                continue;
            char all[TENANT_MAX_LEN + 2];
            snprintf(all, sizeof all, "%s/", tenants[t]);
            envelope_channel_name(namespaces[n], EVENT_ALL, all, channel);
            assert_int_equal(envelope_channel_parse(namespaces[n], channel, &target, got), 0);
            assert_int_equal(target, EVENT_ALL);
            assert_string_equal(got, all);
        }
}

static void test_envelope_channel_refuses_bad_tenants(void **state)
{
    char too_long[TENANT_MAX_LEN + 32], longest[TENANT_MAX_LEN + 32];
    const char *bad[] = {
        "wsfan::room:{r}", "wsfan::user:{u}", "wsfan::all", "wsfan:a b:room:{r}", "wsfan:t/x:room:{r}",
        "wsfan:t/:all", "wsfan:troom:{r}", "wsfan:tuser:{u}", "wsfan:tall", "wsfan:t:rooms:{r}",
        "wsfan:t:history:{r}", "wsfan:t:presence:{r}", "wsfan:t:all:{r}", "wsfan:t:{r}", "wsfan:t:all:",
        "wsfan:t:room:{}", "wsfan:t:room:{a/b}", "wsfan:caf\xc3\xa9:all", "wsfan:t*:room:{r}", too_long,
    };
    enum event_target target;
    char key[KEY_MAX_LEN + 1];

    (void)state;
    snprintf(too_long, sizeof too_long, "wsfan:%0*d:room:{r}", TENANT_MAX_LEN + 1, 0);
    for (size_t i = 0; i < COUNT(bad); i++)
        if (envelope_channel_parse("wsfan", bad[i], &target, key) != -1)
            fail_msg("accepted channel [%s] as %s", bad[i], key);
    snprintf(longest, sizeof longest, "wsfan:%0*d:room:{r}", TENANT_MAX_LEN, 0);
    assert_int_equal(envelope_channel_parse("wsfan", longest, &target, key), 0);
    assert_int_equal(strlen(key), TENANT_MAX_LEN + 2);
}

static void test_envelope_tenant_message_names_the_room_alone(void **state)
{
    struct envelope_fields f = {
        .target = EVENT_ROOM, .room = "acme/general", .from = "alice", .ts = 7, .origin = NODE,
        .echo_skip = NULL, .data = "1", .data_len = 1,
    };
    char *text;

    (void)state;
    text = build(&f, NULL);
    expect_envelope(text, "{\"v\":1,\"room\":\"general\",\"from\":\"alice\",\"ts\":7,\"origin\":\"" NODE
                          "\",\"echo_skip\":null,\"data\":1}");
    /* On the tenant's channel it is the tenant's room's event. */
    struct event *ev = event_of(EVENT_ROOM, "acme/general", text);
    expect_json(ev, "{\"type\":\"message\",\"room\":\"general\",\"from\":\"alice\",\"data\":1,\"ts\":7}");
    event_unref(ev);
    free(text);
    ev = event_of(EVENT_ALL, "acme/", "{\"data\":2,\"ts\":8}");
    expect_json(ev, "{\"type\":\"broadcast\",\"from\":null,\"data\":2,\"ts\":8}");
    assert_int_equal(ev->kind, EVENT_BROADCAST);
    event_unref(ev);
}

/* ---- info in presence --------------------------------------------------------- */

static void test_envelope_presence_carries_info(void **state)
{
    char *text;
    struct event *ev;

    (void)state;
    text = envelope_presence("acme/r", "u", EVENT_PRESENCE_JOIN, NODE, "{\"name\":\"Ann\",\"n\":[1,2]}");
    assert_non_null(text);
    expect_envelope(text, "{\"v\":1,\"room\":\"r\",\"presence\":\"join\",\"user\":\"u\",\"origin\":\"" NODE
                          "\",\"info\":{\"name\":\"Ann\",\"n\":[1,2]},\"data\":null}");
    ev = event_of(EVENT_ROOM, "acme/r", text);
    expect_json(ev,
                "{\"type\":\"presence_join\",\"room\":\"r\",\"user\":\"u\",\"info\":{\"name\":\"Ann\",\"n\":[1,2]}}");
    struct event *expected = event_presence(EVENT_PRESENCE_JOIN, "acme/r", "u", "{\"name\":\"Ann\",\"n\":[1,2]}");
    expect_same_event(ev, expected);
    event_unref(expected);
    event_unref(ev);
    free(text);
    /* A leave never carries it. */
    text = envelope_presence("r", "u", EVENT_PRESENCE_LEAVE, NODE, "{\"name\":\"Ann\"}");
    expect_envelope(text, "{\"v\":1,\"room\":\"r\",\"presence\":\"leave\",\"user\":\"u\",\"origin\":\"" NODE
                          "\",\"data\":null}");
    free(text);
    ev = event_of(EVENT_ROOM, "r", "{\"presence\":\"leave\",\"user\":\"u\",\"info\":{\"a\":1},\"data\":null}");
    expect_json(ev, "{\"type\":\"presence_leave\",\"room\":\"r\",\"user\":\"u\"}");
    event_unref(ev);
    /* Other services' info is read and written compact; null is none. */
    ev = event_of(EVENT_ROOM, "r",
                  "{\"presence\":\"join\",\"user\":\"u\",\"info\": { \"a\" : \"\\u00e9\" },\"data\":0}");
    expect_json(ev, "{\"type\":\"presence_join\",\"room\":\"r\",\"user\":\"u\",\"info\":{\"a\":\"\xc3\xa9\"}}");
    event_unref(ev);
    ev = event_of(EVENT_ROOM, "r", "{\"presence\":\"join\",\"user\":\"u\",\"info\":null,\"data\":0}");
    expect_json(ev, "{\"type\":\"presence_join\",\"room\":\"r\",\"user\":\"u\"}");
    event_unref(ev);
}

static void test_envelope_presence_refuses_bad_info(void **state)
{
    static const char *bad[] = {
        "{\"presence\":\"join\",\"user\":\"u\",\"info\":\"Ann\",\"data\":null}",
        "{\"presence\":\"join\",\"user\":\"u\",\"info\":[1],\"data\":null}",
        "{\"presence\":\"join\",\"user\":\"u\",\"info\":1,\"data\":null}",
        "{\"presence\":\"join\",\"user\":\"u\",\"info\":true,\"data\":null}",
    };
    char big[EVENT_INFO_MAX + 128], at_limit[EVENT_INFO_MAX + 128];

    (void)state;
    for (size_t i = 0; i < COUNT(bad); i++)
        refused(EVENT_ROOM, "r", bad[i]);
    /* {"a":"xx..."} of 1025 bytes is over; of 1024 it is not. */
    snprintf(big, sizeof big, "{\"presence\":\"join\",\"user\":\"u\",\"info\":{\"a\":\"%0*d\"},\"data\":0}",
             EVENT_INFO_MAX - 8 + 1, 0);
    refused(EVENT_ROOM, "r", big);
    snprintf(at_limit, sizeof at_limit, "{\"presence\":\"join\",\"user\":\"u\",\"info\":{\"a\":\"%0*d\"},\"data\":0}",
             EVENT_INFO_MAX - 8, 0);
    struct event *ev = event_of(EVENT_ROOM, "r", at_limit);
    event_unref(ev);
}

/* ---- messages --------------------------------------------------------------- */

static void test_envelope_minimal_data_is_a_message_from_null(void **state)
{
    uint64_t before = clock_wall_ms();
    struct event *ev = event_of(EVENT_ROOM, "general", "{\"data\":{\"text\":\"hi\"}}");

    (void)state;
    expect_json_now(ev, "{\"type\":\"message\",\"room\":\"general\",\"from\":null,\"data\":{\"text\":\"hi\"},", before,
                    clock_wall_ms());
    assert_int_equal(ev->has_offset, 0);
    assert_int_equal(ev->kind, EVENT_MESSAGE);
    expect_no_skip(ev);
    event_unref(ev);
}

static void test_envelope_full_envelope_is_the_exact_event(void **state)
{
    struct envelope_fields f = {
        .target = EVENT_ROOM, .room = "general", .from = "alice", .ts = 1732312345678ULL, .origin = "node-2",
        .data = "{\"text\":\"hi\"}", .data_len = 13,
    };
    char *text = build(&f, "1732312345678-0");
    struct event *ev = event_of(EVENT_ROOM, "general", text);

    (void)state;
    expect_json(ev, "{\"type\":\"message\",\"room\":\"general\",\"offset\":\"1732312345678-0\",\"from\":\"alice\","
                    "\"data\":{\"text\":\"hi\"},\"ts\":1732312345678}");
    assert_int_equal(ev->has_offset, 1);
    assert_true(ev->offset.ms == 1732312345678ULL && ev->offset.seq == 0);
    expect_no_skip(ev);
    event_unref(ev);
    free(text);
}

/* An offset that no wsfan node sealed (another service's PUBLISH) is left
 * out: the message arrives, without a place in history. A seal that proves
 * nothing (a copy of a sealed envelope changed or moved to another
 * channel, another secret) refuses the envelope as envelope_unproven: the
 * bus reads such a message from history instead. */
static void test_envelope_unsealed_offsets_are_not_believed(void **state)
{
    struct envelope_fields f = {
        .target = EVENT_ROOM, .room = "r", .from = "alice", .ts = 5, .origin = "node-2", .data = "1", .data_len = 1,
    };
    char *sealed = build(&f, "7-1"), *text = strdup(sealed), *at;
    struct envelope_seal other;
    const char *why;
    struct event *ev;

    (void)state;
    assert_non_null(text);
    ev = event_of(EVENT_ROOM, "r", "{\"offset\":\"99999999999999-0\",\"data\":\"x\"}");
    assert_int_equal(ev->has_offset, 0);
    assert_null(strstr(ev->json, "\"offset\""));
    event_unref(ev);
    const char *forged[] = {
        "{\"offset\":\"5-0\",\"mac\":\"0000000000000000000000000000000000000000\",\"data\":1}",
        "{\"offset\":\"5-0\",\"mac\":\"short\",\"data\":1}",
        "{\"offset\": \"5-0\", \"mac\": \"0000000000000000000000000000000000000000\", \"data\": 1}",
        "{\"mac\":null,\"offset\":\"5-0\",\"data\":1}",
    };
    for (size_t i = 0; i < COUNT(forged); i++)
        assert_ptr_equal(refused(EVENT_ROOM, "r", forged[i]), envelope_unproven);
    /* the sealed text with its data changed */
    at = strstr(text, "\"data\":1");
    assert_non_null(at);
    at[7] = '2';
    assert_ptr_equal(refused(EVENT_ROOM, "r", text), envelope_unproven);
    /* the sealed text on another channel, or under another secret */
    assert_null(envelope_to_event(NODE, &seal, "ns:room:{s}", EVENT_ROOM, "s", sealed, strlen(sealed), &why));
    assert_ptr_equal(why, envelope_unproven);
    assert_int_equal(envelope_seal_init(&other, "another-secret", 14), 0);
    assert_null(envelope_to_event(NODE, &other, CHANNEL, EVENT_ROOM, "r", sealed, strlen(sealed), &why));
    assert_ptr_equal(why, envelope_unproven);
    /* and as sealed: believed */
    ev = event_of(EVENT_ROOM, "r", sealed);
    assert_int_equal(ev->has_offset, 1);
    event_unref(ev);
    free(text);
    free(sealed);
    assert_int_equal(envelope_seal_init(&other, "", 0), -1);
    char long_secret[66];
    memset(long_secret, 'k', 65);
    assert_int_equal(envelope_seal_init(&other, long_secret, 65), -1);
}

/* A disconnect is a control envelope, sealed as a persisted message is but
 * without an offset. A node acts on it only when the seal proves it on its
 * channel, and only on a user channel: any Redis client can publish there. */
static void test_envelope_disconnect_is_believed_only_sealed(void **state)
{
    struct envelope_fields f = {.target = EVENT_USER, .ts = 9, .origin = NODE, .disconnect = 1};
    char *sealed = build(&f, NULL);
    const char *why;
    struct event *ev;

    (void)state;
    expect_sealed(sealed, "{\"v\":1,\"from\":null,\"ts\":9,\"origin\":\"" NODE
                          "\",\"echo_skip\":null,\"control\":\"disconnect\",\"mac\":\"\",\"data\":null}");
    ev = event_of(EVENT_USER, "t/bob", sealed);
    assert_int_equal(ev->kind, EVENT_DISCONNECT);
    assert_int_equal(ev->len, 0);
    event_unref(ev);
    assert_string_equal(refused(EVENT_ROOM, "r", sealed), "control needs a user channel and disconnect");
    assert_string_equal(refused(EVENT_USER, "bob", "{\"control\":\"disconnect\",\"data\":null}"),
                        "a control envelope without a seal");
    assert_ptr_equal(refused(EVENT_USER, "bob",
                             "{\"control\":\"disconnect\",\"mac\":\"0000000000000000000000000000000000000000\","
                             "\"data\":null}"),
                     envelope_unproven);
    /* a node's own envelope, copied to another user's channel */
    assert_null(envelope_to_event(NODE, &seal, "ns:user:{carol}", EVENT_USER, "carol", sealed, strlen(sealed), &why));
    assert_ptr_equal(why, envelope_unproven);
    free(sealed);
}

static void test_envelope_room_comes_from_the_channel(void **state)
{
    struct event *ev = event_of(EVENT_ROOM, "general", "{\"room\":\"elsewhere\",\"ts\":1,\"data\":1}");

    (void)state;
    expect_json(ev, "{\"type\":\"message\",\"room\":\"general\",\"from\":null,\"data\":1,\"ts\":1}");
    event_unref(ev);
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
        struct event *ev = event_of(EVENT_ROOM, "r", payload);
        expect_json(ev, expected);
        event_unref(ev);
    }
}

static void test_envelope_offset_and_from_may_be_null(void **state)
{
    struct event *ev = event_of(EVENT_ROOM, "r", "{\"from\":null,\"offset\":null,\"ts\":3,\"data\":2}");

    (void)state;
    expect_json(ev, "{\"type\":\"message\",\"room\":\"r\",\"from\":null,\"data\":2,\"ts\":3}");
    assert_int_equal(ev->has_offset, 0);
    event_unref(ev);
}

static void test_envelope_bad_ts_means_now(void **state)
{
    static const char *bad[] = {"-1", "1.5", "\"5\"", "null", "true", "{}"};
    char payload[128];

    (void)state;
    for (size_t i = 0; i < COUNT(bad); i++) {
        uint64_t before = clock_wall_ms();
        snprintf(payload, sizeof payload, "{\"ts\":%s,\"data\":0}", bad[i]);
        struct event *ev = event_of(EVENT_ROOM, "r", payload);
        expect_json_now(ev, "{\"type\":\"message\",\"room\":\"r\",\"from\":null,\"data\":0,", before, clock_wall_ms());
        event_unref(ev);
    }
}

/* ---- direct and broadcast --------------------------------------------------- */

static void test_envelope_user_channel_is_direct(void **state)
{
    struct event *ev = event_of(EVENT_USER, "bob", "{\"v\":1,\"from\":\"alice\",\"ts\":5,\"origin\":\"node-2\","
                                                     "\"echo_skip\":null,\"data\":{\"t\":\"psst\"}}");

    (void)state;
    expect_json(ev, "{\"type\":\"direct\",\"from\":\"alice\",\"data\":{\"t\":\"psst\"},\"ts\":5}");
    assert_int_equal(ev->kind, EVENT_DIRECT);
    expect_no_skip(ev);
    event_unref(ev);

    uint64_t before = clock_wall_ms();
    ev = event_of(EVENT_USER, "bob", "{\"data\":null}");
    expect_json_now(ev, "{\"type\":\"direct\",\"from\":null,\"data\":null,", before, clock_wall_ms());
    event_unref(ev);
}

static void test_envelope_all_channel_is_broadcast(void **state)
{
    struct event *ev = event_of(EVENT_ALL, "", "{\"v\":1,\"from\":\"ops\",\"ts\":77,\"data\":\"restart at 5\"}");

    (void)state;
    expect_json(ev, "{\"type\":\"broadcast\",\"from\":\"ops\",\"data\":\"restart at 5\",\"ts\":77}");
    assert_int_equal(ev->kind, EVENT_BROADCAST);
    expect_no_skip(ev);
    event_unref(ev);

    ev = event_of(EVENT_ALL, "", "{\"data\":{},\"ts\":1}");
    expect_json(ev, "{\"type\":\"broadcast\",\"from\":null,\"data\":{},\"ts\":1}");
    event_unref(ev);
}

/* ---- refusals --------------------------------------------------------------- */

static void test_envelope_refuses_unknown_versions(void **state)
{
    static const char *bad[] = {"2", "0", "-1", "\"1\"", "1.0", "1.5", "null", "true", "[1]", "{}"};
    char payload[128];

    (void)state;
    for (size_t i = 0; i < COUNT(bad); i++) {
        snprintf(payload, sizeof payload, "{\"v\":%s,\"data\":1}", bad[i]);
        refused(EVENT_ROOM, "r", payload);
        refused(EVENT_USER, "u", payload);
        refused(EVENT_ALL, "", payload);
    }
    struct event *ev = event_of(EVENT_ROOM, "r", "{\"v\":1,\"data\":1}");
    event_unref(ev);
}

static void test_envelope_refuses_missing_data(void **state)
{
    static const char *bad[] = {"{}", "{\"v\":1}", "{\"v\":1,\"from\":\"a\",\"ts\":1}", "{\"Data\":1}",
                                "{\"payload\":{\"data\":1}}"};

    (void)state;
    for (size_t i = 0; i < COUNT(bad); i++) {
        refused(EVENT_ROOM, "r", bad[i]);
        refused(EVENT_ALL, "", bad[i]);
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
        refused(EVENT_ROOM, "r", bad[i]);
    refused_len(EVENT_ROOM, "r", "{\"data\":1}\0", 11);
    refused_len(EVENT_ROOM, "r", "{\"data\":\"a\0b\"}", 14);
}

static void test_envelope_reads_only_len_bytes(void **state)
{
    const char *payload = "{\"data\":1,\"ts\":2}garbage";
    struct event *ev = event_len(EVENT_ROOM, "r", payload, 17);

    (void)state;
    expect_json(ev, "{\"type\":\"message\",\"room\":\"r\",\"from\":null,\"data\":1,\"ts\":2}");
    event_unref(ev);
    refused_len(EVENT_ROOM, "r", payload, 16);
    refused_len(EVENT_ROOM, "r", payload, 0);
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
        refused(EVENT_ROOM, "r", payload);
        refused(EVENT_USER, "u", payload);
        refused(EVENT_ALL, "", payload);
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
        refused(EVENT_ROOM, "r", payload);
    }
}

/* ---- presence --------------------------------------------------------------- */

static void test_envelope_presence_join_and_leave(void **state)
{
    struct event *ev =
        event_of(EVENT_ROOM, "r", "{\"v\":1,\"room\":\"r\",\"presence\":\"join\",\"user\":\"u\",\"origin\":\"n\","
                                "\"data\":null}");

    (void)state;
    expect_json(ev, "{\"type\":\"presence_join\",\"room\":\"r\",\"user\":\"u\"}");
    assert_int_equal(ev->has_offset, 0);
    assert_int_equal(ev->kind, EVENT_PRESENCE_JOIN);
    expect_no_skip(ev);
    event_unref(ev);

    ev = event_of(EVENT_ROOM, "general", "{\"v\":1,\"presence\":\"leave\",\"user\":\"alice\",\"data\":null}");
    expect_json(ev, "{\"type\":\"presence_leave\",\"room\":\"general\",\"user\":\"alice\"}");
    assert_int_equal(ev->kind, EVENT_PRESENCE_LEAVE);
    event_unref(ev);

    /* An offset on a presence envelope does not make it a persisted message. */
    ev = event_of(EVENT_ROOM, "r", "{\"presence\":\"join\",\"user\":\"u\",\"offset\":\"5-5\",\"data\":{}}");
    expect_json(ev, "{\"type\":\"presence_join\",\"room\":\"r\",\"user\":\"u\"}");
    assert_int_equal(ev->has_offset, 0);
    event_unref(ev);
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
        refused(EVENT_ROOM, "r", bad_room[i]);
    /* Only a room channel carries presence. */
    refused(EVENT_USER, "u", good_elsewhere);
    refused(EVENT_ALL, "", good_elsewhere);
    struct event *ev = event_of(EVENT_ROOM, "r", good_elsewhere);
    event_unref(ev);
}

/* ---- echo_skip -------------------------------------------------------------- */

static void test_envelope_echo_skip_from_this_node(void **state)
{
    struct event *ev = event_of(EVENT_ROOM, "r", "{\"v\":1,\"room\":\"r\",\"from\":\"alice\",\"ts\":1,"
                                                   "\"origin\":\"" NODE "\",\"echo_skip\":\"3.42\",\"data\":1}");

    (void)state;
    expect_json(ev, "{\"type\":\"message\",\"room\":\"r\",\"from\":\"alice\",\"data\":1,\"ts\":1}");
    assert_int_equal(ev->skip_worker, 3);
    assert_true(ev->skip_seq == 42);
    event_unref(ev);

    ev = event_of(EVENT_ROOM, "r", "{\"origin\":\"" NODE "\",\"echo_skip\":\"0.18446744073709551615\",\"data\":1}");
    assert_int_equal(ev->skip_worker, 0);
    assert_true(ev->skip_seq == UINT64_MAX);
    event_unref(ev);

    /* On user and all channels too (a send or broadcast with echo off). */
    ev = event_of(EVENT_USER, "u", "{\"origin\":\"" NODE "\",\"echo_skip\":\"1.7\",\"data\":1}");
    assert_int_equal(ev->skip_worker, 1);
    assert_true(ev->skip_seq == 7);
    event_unref(ev);
    ev = event_of(EVENT_ALL, "", "{\"origin\":\"" NODE "\",\"echo_skip\":\"2.8\",\"data\":1}");
    assert_int_equal(ev->skip_worker, 2);
    assert_true(ev->skip_seq == 8);
    event_unref(ev);
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
        struct event *ev = event_of(EVENT_ROOM, "r", payloads[i]);
        if (ev->skip_worker != -1 || ev->skip_seq != 0)
            fail_msg("%s: skips %d.%llu", payloads[i], ev->skip_worker, (unsigned long long)ev->skip_seq);
        event_unref(ev);
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
    struct event *ev;

    (void)state;
    ev = envelope_to_event(NODE, &seal, CHANNEL, EVENT_ROOM, "r", skip, strlen(skip), &why);
    assert_non_null(ev);
    if (ev->skip_worker != -1 || ev->skip_seq != 0)
        n += (size_t)snprintf(failures + n, sizeof failures - n, "\n  %s: skips %d.%llu", skip, ev->skip_worker,
                              (unsigned long long)ev->skip_seq);
    event_unref(ev);
    for (size_t i = 0; i < COUNT(refuse); i++) {
        ev = envelope_to_event(NODE, &seal, CHANNEL, EVENT_ROOM, "r", refuse[i], strlen(refuse[i]), &why);
        if (ev) {
            n += (size_t)snprintf(failures + n, sizeof failures - n, "\n  %s: accepted as %s", refuse[i], ev->json);
            event_unref(ev);
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
        cmocka_unit_test(test_envelope_channel_name_of_each_target),
        cmocka_unit_test(test_envelope_channel_name_reads_back),
        cmocka_unit_test(test_envelope_build_room_message_is_the_documented_text),
        cmocka_unit_test(test_envelope_build_direct_and_broadcast_have_no_room),
        cmocka_unit_test(test_envelope_build_parts_surround_the_offset),
        cmocka_unit_test(test_envelope_presence_is_the_documented_text),
        cmocka_unit_test(test_envelope_built_message_reads_back_as_the_same_event),
        cmocka_unit_test(test_envelope_built_direct_and_broadcast_read_back_as_the_same_event),
        cmocka_unit_test(test_envelope_built_echo_skip_reads_back_on_this_node_only),
        cmocka_unit_test(test_envelope_built_presence_reads_back_as_the_same_event),
        cmocka_unit_test(test_envelope_minimal_data_is_a_message_from_null),
        cmocka_unit_test(test_envelope_full_envelope_is_the_exact_event),
        cmocka_unit_test(test_envelope_unsealed_offsets_are_not_believed),
        cmocka_unit_test(test_envelope_disconnect_is_believed_only_sealed),
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
        cmocka_unit_test(test_envelope_tenant_names_are_under_namespace_and_tenant),
        cmocka_unit_test(test_envelope_tenant_channels_read_back),
        cmocka_unit_test(test_envelope_channel_refuses_bad_tenants),
        cmocka_unit_test(test_envelope_tenant_message_names_the_room_alone),
        cmocka_unit_test(test_envelope_presence_carries_info),
        cmocka_unit_test(test_envelope_presence_refuses_bad_info),
    };

    if (envelope_seal_init(&seal, SECRET, strlen(SECRET)))
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
