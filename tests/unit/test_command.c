/* test_command.c - unit tests of codec/command.c: client commands
 * (docs/protocol.md section 2) from JSON text to a checked struct command.
 * Every malformed shape is refused with its error (WSFAN_EBAD_JSON,
 * WSFAN_EBAD_COMMAND, WSFAN_EUNKNOWN_TYPE, WSFAN_EROOM_INVALID,
 * WSFAN_EUSER_INVALID of core/error.h: bad_json, bad_command, ... to the
 * client), refs are echoed as their exact JSON text, defaults are filled
 * in, and names follow section 4. Every parse is followed by command_free
 * (LeakSanitizer watches). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/command.h"

/* ---- helpers ---------------------------------------------------------------- */

/* Parses text of len bytes from a buffer of exactly that size (no NUL
 * after it, so ASan sees any over-read); fails the test when refused. */
static void parse_ok_len(const char *text, size_t len, struct command *cmd)
{
    struct command_error err = {0};
    char *copy = malloc(len ? len : 1);
    int rc;

    assert_non_null(copy);
    memcpy(copy, text, len);
    rc = command_parse(copy, len, cmd, &err);
    free(copy);
    if (rc != 0)
        fail_msg("refused %.*s: %s: %s", (int)len, text, wsfan_error_code(err.code), err.message);
}

static void parse_ok(const char *text, struct command *cmd)
{
    parse_ok_len(text, strlen(text), cmd);
}

/* Expects text of len bytes to be refused with code, and the error to
 * carry ref (JSON text, "" for none). */
static void refused_len(const char *text, size_t len, int code, const char *ref)
{
    struct command cmd;
    struct command_error err = {0};
    char *copy = malloc(len ? len : 1);
    int rc;

    assert_non_null(copy);
    memcpy(copy, text, len);
    rc = command_parse(copy, len, &cmd, &err);
    free(copy);
    if (rc == 0)
        fail_msg("accepted %.*s (expected %s)", (int)len, text, wsfan_error_code(code));
    if (err.code != code)
        fail_msg("%.*s: got %s (%s), expected %s", (int)len, text, wsfan_error_code(err.code), err.message,
                 wsfan_error_code(code));
    assert_true(err.message[0] != '\0');
    assert_non_null(memchr(err.message, '\0', sizeof err.message));
    if (strcmp(cmd.ref, ref))
        fail_msg("%.*s: error carries ref [%s], expected [%s]", (int)len, text, cmd.ref, ref);
    command_free(&cmd);
}

static void refused(const char *text, int code)
{
    refused_len(text, strlen(text), code, "");
}

static void refused_ref(const char *text, int code, const char *ref)
{
    refused_len(text, strlen(text), code, ref);
}

/* A string of n copies of ch (static buffer, valid until the next call
 * with the same slot). */
static const char *repeat(int slot, char ch, size_t n)
{
    static char buf[4][1024];

    assert_true(slot >= 0 && slot < 4 && n < sizeof buf[0]);
    memset(buf[slot], ch, n);
    buf[slot][n] = '\0';
    return buf[slot];
}

/* The commands that take a room, and a body for each that has every other
 * required field, with %s for the room's JSON text. */
static const char *const room_commands[] = {
    "{\"type\":\"join\",\"room\":%s}",
    "{\"type\":\"leave\",\"room\":%s}",
    "{\"type\":\"publish\",\"room\":%s,\"data\":1}",
    "{\"type\":\"history\",\"room\":%s}",
    "{\"type\":\"presence\",\"room\":%s}",
};
static const char *const room_less_commands[] = {
    "{\"type\":\"join\"}",
    "{\"type\":\"leave\"}",
    "{\"type\":\"publish\",\"data\":1}",
    "{\"type\":\"history\"}",
    "{\"type\":\"presence\"}",
};

/* The commands that take data, with %s for the data's JSON text. */
static const char *const data_commands[] = {
    "{\"type\":\"publish\",\"room\":\"r\",\"data\":%s}",
    "{\"type\":\"send\",\"user\":\"u\",\"data\":%s}",
    "{\"type\":\"broadcast\",\"data\":%s}",
};
static const char *const data_less_commands[] = {
    "{\"type\":\"publish\",\"room\":\"r\"}",
    "{\"type\":\"send\",\"user\":\"u\"}",
    "{\"type\":\"broadcast\"}",
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static char *fmt(const char *format, const char *arg)
{
    static char buf[2048];

    assert_true((size_t)snprintf(buf, sizeof buf, format, arg) < sizeof buf);
    return buf;
}

/* ---- not JSON, not an object ------------------------------------------------ */

static void test_command_refuses_text_that_is_not_json(void **state)
{
    static const char *bad[] = {
        "", " ", "{", "}", "not json", "{\"type\":\"ping\"", "{'type':'ping'}", "{type:\"ping\"}",
        "{\"type\":\"ping\",}", "{\"type\":\"ping\"} x", "{\"type\":\"ping\"}{\"type\":\"ping\"}",
        "{\"type\":\"ping\" \"ref\":1}", "{\"type\":\"pi\xffng\"}", "{\"type\":\"ping\",\"ref\":\"\\ud800\"}",
        "{\"type\":\"ping\",\"ref\":99999999999999999999}", "{\"type\":\"broadcast\",\"data\":NaN}",
        "{\"type\":\"broadcast\",\"data\":1e999}", "{\"type\":\"ping\",\"ref\":\"tab\there\"}",
    };

    (void)state;
    for (size_t i = 0; i < COUNT(bad); i++)
        refused(bad[i], WSFAN_EBAD_JSON);
}

static void test_command_refuses_raw_nul_bytes(void **state)
{
    (void)state;
    /* A raw NUL inside a string or after the object is not JSON. */
    refused_len("{\"type\":\"ping\"}\0", 16, WSFAN_EBAD_JSON, "");
    refused_len("{\"type\":\"ping\",\"ref\":\"a\0b\"}", 27, WSFAN_EBAD_JSON, "");
    refused_len("\0{\"type\":\"ping\"}", 16, WSFAN_EBAD_JSON, "");
}

static void test_command_refuses_json_that_is_not_an_object(void **state)
{
    static const char *bad[] = {
        "[]", "[{\"type\":\"ping\"}]", "\"ping\"", "\"{\\\"type\\\":\\\"ping\\\"}\"", "0", "42", "-1.5",
        "null", "true", "false",
    };

    (void)state;
    for (size_t i = 0; i < COUNT(bad); i++)
        refused(bad[i], WSFAN_EBAD_JSON);
}

static void test_command_refuses_duplicate_keys(void **state)
{
    (void)state;
    refused("{\"type\":\"ping\",\"type\":\"ping\"}", WSFAN_EBAD_JSON);
    refused("{\"type\":\"join\",\"room\":\"a\",\"room\":\"b\"}", WSFAN_EBAD_JSON);
    refused("{\"type\":\"ping\",\"ref\":1,\"ref\":1}", WSFAN_EBAD_JSON);
    refused("{\"type\":\"broadcast\",\"data\":{\"k\":1,\"k\":2}}", WSFAN_EBAD_JSON);
}

static void test_command_accepts_surrounding_whitespace_and_extra_fields(void **state)
{
    struct command cmd;

    (void)state;
    parse_ok(" \t\r\n{\"type\":\"ping\"}\n ", &cmd);
    assert_int_equal(cmd.type, CMD_PING);
    command_free(&cmd);
    parse_ok("{\"type\":\"leave\",\"room\":\"r\",\"extra\":[1,{\"x\":null}],\"since\":\"bogus\"}", &cmd);
    assert_int_equal(cmd.type, CMD_LEAVE);
    assert_string_equal(cmd.room, "r");
    command_free(&cmd);
}

/* ---- type ------------------------------------------------------------------- */

static void test_command_refuses_missing_or_non_string_type(void **state)
{
    static const char *bad[] = {
        "{}", "{\"room\":\"r\"}", "{\"type\":null}", "{\"type\":1}", "{\"type\":true}", "{\"type\":[\"ping\"]}",
        "{\"type\":{\"ping\":1}}", "{\"Type\":\"ping\"}",
    };

    (void)state;
    for (size_t i = 0; i < COUNT(bad); i++)
        refused(bad[i], WSFAN_EBAD_COMMAND);
}

static void test_command_refuses_unknown_type(void **state)
{
    static const char *bad[] = {
        "", "JOIN", "Ping", " ping", "ping ", "joined", "pong", "ack", "message", "error", "subscribe", "pingx",
    };

    (void)state;
    for (size_t i = 0; i < COUNT(bad); i++) {
        char text[128];
        snprintf(text, sizeof text, "{\"type\":\"%s\",\"room\":\"r\",\"user\":\"u\",\"data\":1}", bad[i]);
        refused(text, WSFAN_EUNKNOWN_TYPE);
    }
}

/* JSON strings may hold NUL (\u0000) and the parser accepts it: a string
 * must then be judged whole, not up to its first NUL. "join\u0000x" is
 * not "join", and "1-2\u0000x" is not the offset 1-2. */
static void test_command_strings_with_nul_are_judged_whole(void **state)
{
    static const struct {
        const char *text;
        int code;
    } cases[] = {
        {"{\"type\":\"ping\\u0000\"}", WSFAN_EUNKNOWN_TYPE},
        {"{\"type\":\"join\\u0000x\",\"room\":\"r\"}", WSFAN_EUNKNOWN_TYPE},
        {"{\"type\":\"\\u0000\"}", WSFAN_EUNKNOWN_TYPE},
        {"{\"type\":\"join\",\"room\":\"r\",\"since\":\"1-2\\u0000x\"}", WSFAN_EBAD_COMMAND},
        {"{\"type\":\"history\",\"room\":\"r\",\"before\":\"1-2\\u0000\"}", WSFAN_EBAD_COMMAND},
        /* names already are (name_valid gets the length) */
        {"{\"type\":\"join\",\"room\":\"r\\u0000x\"}", WSFAN_EROOM_INVALID},
        {"{\"type\":\"send\",\"user\":\"u\\u0000\",\"data\":1}", WSFAN_EUSER_INVALID},
    };
    char failures[1024] = "";
    size_t n = 0;

    (void)state;
    for (size_t i = 0; i < COUNT(cases); i++) {
        struct command cmd;
        struct command_error err = {0};
        int rc = command_parse(cases[i].text, strlen(cases[i].text), &cmd, &err);
        if (rc == 0 || err.code != cases[i].code)
            n += (size_t)snprintf(failures + n, sizeof failures - n, "\n  %s: %s, expected %s", cases[i].text,
                                  rc == 0 ? "accepted" : wsfan_error_code(err.code), wsfan_error_code(cases[i].code));
        command_free(&cmd);
    }
    if (n)
        fail_msg("strings cut at their NUL:%s", failures);
}

static void test_command_accepts_every_type(void **state)
{
    static const struct {
        const char *text;
        enum command_type type;
    } good[] = {
        {"{\"type\":\"join\",\"room\":\"r\"}", CMD_JOIN},
        {"{\"type\":\"leave\",\"room\":\"r\"}", CMD_LEAVE},
        {"{\"type\":\"publish\",\"room\":\"r\",\"data\":{}}", CMD_PUBLISH},
        {"{\"type\":\"send\",\"user\":\"u\",\"data\":{}}", CMD_SEND},
        {"{\"type\":\"broadcast\",\"data\":{}}", CMD_BROADCAST},
        {"{\"type\":\"history\",\"room\":\"r\"}", CMD_HISTORY},
        {"{\"type\":\"presence\",\"room\":\"r\"}", CMD_PRESENCE},
        {"{\"type\":\"ping\"}", CMD_PING},
        {"{\"type\":\"refresh\",\"token\":\"a.b.c\"}", CMD_REFRESH},
    };
    struct command cmd;

    (void)state;
    for (size_t i = 0; i < COUNT(good); i++) {
        parse_ok(good[i].text, &cmd);
        assert_int_equal(cmd.type, good[i].type);
        assert_string_equal(cmd.ref, "");
        command_free(&cmd);
    }
}

static void test_command_key_order_does_not_matter(void **state)
{
    struct command cmd;

    (void)state;
    parse_ok("{\"data\":[1],\"ref\":\"x\",\"room\":\"r\",\"echo\":false,\"type\":\"publish\"}", &cmd);
    assert_int_equal(cmd.type, CMD_PUBLISH);
    assert_string_equal(cmd.ref, "\"x\"");
    assert_string_equal(cmd.room, "r");
    assert_string_equal(cmd.data, "[1]");
    assert_int_equal(cmd.echo, 0);
    command_free(&cmd);
}

/* ---- ref -------------------------------------------------------------------- */

static void expect_ref(const char *ref_json, const char *expected_text)
{
    struct command cmd;
    char text[1024];

    snprintf(text, sizeof text, "{\"type\":\"ping\",\"ref\":%s}", ref_json);
    parse_ok(text, &cmd);
    if (strcmp(cmd.ref, expected_text))
        fail_msg("ref %s gave [%s], expected [%s]", ref_json, cmd.ref, expected_text);
    command_free(&cmd);
}

static void test_command_ref_string_up_to_64_bytes(void **state)
{
    char json[128], text[512];

    (void)state;
    expect_ref("\"\"", "\"\"");
    expect_ref("\"r1\"", "\"r1\"");
    snprintf(json, sizeof json, "\"%s\"", repeat(0, 'a', 64));
    expect_ref(json, json);

    snprintf(text, sizeof text, "{\"type\":\"ping\",\"ref\":\"%s\"}", repeat(0, 'a', 65));
    refused(text, WSFAN_EBAD_COMMAND);
    snprintf(text, sizeof text, "{\"type\":\"ping\",\"ref\":\"%s\"}", repeat(0, 'a', 200));
    refused(text, WSFAN_EBAD_COMMAND);
}

static void test_command_ref_length_counts_bytes_not_characters(void **state)
{
    char ok[512], bad[512];
    size_t n;

    (void)state;
    /* 32 x "é" is 64 bytes; 33 x is 66 bytes but only 33 characters. */
    n = (size_t)snprintf(ok, sizeof ok, "{\"type\":\"ping\",\"ref\":\"");
    for (int i = 0; i < 32; i++)
        n += (size_t)snprintf(ok + n, sizeof ok - n, "\xc3\xa9");
    snprintf(ok + n, sizeof ok - n, "\"}");
    strcpy(bad, ok);
    memmove(bad + n + 2, bad + n, strlen(bad + n) + 1);
    memcpy(bad + n, "\xc3\xa9", 2);

    struct command cmd;
    parse_ok(ok, &cmd);
    assert_int_equal(strlen(cmd.ref), 64 + 2);
    command_free(&cmd);
    refused(bad, WSFAN_EBAD_COMMAND);

    /* "\u00e9" escapes count as the two bytes they decode to. */
    n = (size_t)snprintf(ok, sizeof ok, "{\"type\":\"ping\",\"ref\":\"");
    for (int i = 0; i < 33; i++)
        n += (size_t)snprintf(ok + n, sizeof ok - n, "\\u00e9");
    snprintf(ok + n, sizeof ok - n, "\"}");
    refused(ok, WSFAN_EBAD_COMMAND);
}

static void test_command_ref_integer(void **state)
{
    (void)state;
    expect_ref("0", "0");
    expect_ref("-0", "0");
    expect_ref("7", "7");
    expect_ref("-42", "-42");
    expect_ref("9223372036854775807", "9223372036854775807");
    expect_ref("-9223372036854775808", "-9223372036854775808");
}

static void test_command_ref_of_other_types_is_refused_without_ref(void **state)
{
    static const char *bad[] = {"1.5", "1.0", "1e2", "-0.0", "{}", "{\"a\":1}", "[]", "[1]", "true", "false", "null"};

    (void)state;
    for (size_t i = 0; i < COUNT(bad); i++) {
        char text[128];
        snprintf(text, sizeof text, "{\"type\":\"ping\",\"ref\":%s}", bad[i]);
        refused_ref(text, WSFAN_EBAD_COMMAND, "");
        /* Also when the rest of the command is fine or missing. */
        snprintf(text, sizeof text, "{\"ref\":%s}", bad[i]);
        refused_ref(text, WSFAN_EBAD_COMMAND, "");
    }
}

static void test_command_ref_is_serialized_exactly(void **state)
{
    (void)state;
    expect_ref("\"a\\\"b\"", "\"a\\\"b\"");
    expect_ref("\"back\\\\slash\"", "\"back\\\\slash\"");
    expect_ref("\"line\\nbreak\"", "\"line\\nbreak\"");
    expect_ref("\"\\u0000\"", "\"\\u0000\"");
    expect_ref("\"\\u0001\\u001f\"", "\"\\u0001\\u001F\"");
    expect_ref("\"\\u00e9\"", "\"\xc3\xa9\"");
    expect_ref("\"\xc3\xa9\"", "\"\xc3\xa9\"");
    expect_ref("\"</script>\"", "\"</script>\"");
    expect_ref("\"\\/\"", "\"/\"");
}

static void test_command_ref_of_64_escaped_bytes_fits(void **state)
{
    char text[1024], expected[1024];
    size_t n = 0, m = 0;
    struct command cmd;

    (void)state;
    /* The worst case: every byte a control character, escaped as \u00XX. */
    n += (size_t)snprintf(text + n, sizeof text - n, "{\"type\":\"ping\",\"ref\":\"");
    m += (size_t)snprintf(expected + m, sizeof expected - m, "\"");
    for (int i = 0; i < REF_MAX_LEN; i++) {
        n += (size_t)snprintf(text + n, sizeof text - n, "\\u%04x", 1 + i % 7);
        m += (size_t)snprintf(expected + m, sizeof expected - m, "\\u%04x", 1 + i % 7);
    }
    snprintf(text + n, sizeof text - n, "\"}");
    snprintf(expected + m, sizeof expected - m, "\"");
    parse_ok(text, &cmd);
    assert_string_equal(cmd.ref, expected);
    assert_true(strlen(cmd.ref) < REF_TEXT_MAX);
    command_free(&cmd);
}

static void test_command_error_carries_a_good_ref(void **state)
{
    (void)state;
    refused_ref("{\"ref\":\"q1\"}", WSFAN_EBAD_COMMAND, "\"q1\"");
    refused_ref("{\"ref\":5,\"type\":7}", WSFAN_EBAD_COMMAND, "5");
    refused_ref("{\"ref\":\"q\\\"2\",\"type\":\"nope\"}", WSFAN_EUNKNOWN_TYPE, "\"q\\\"2\"");
    refused_ref("{\"ref\":3,\"type\":\"join\"}", WSFAN_EBAD_COMMAND, "3");
    refused_ref("{\"ref\":3,\"type\":\"join\",\"room\":\"a b\"}", WSFAN_EROOM_INVALID, "3");
    refused_ref("{\"ref\":3,\"type\":\"send\",\"user\":\"\",\"data\":1}", WSFAN_EUSER_INVALID, "3");
    refused_ref("{\"ref\":3,\"type\":\"history\",\"room\":\"r\",\"limit\":0}", WSFAN_EBAD_COMMAND, "3");
    /* No ref can be read from text that does not parse. */
    refused_ref("{\"ref\":3,\"type\":\"ping\"", WSFAN_EBAD_JSON, "");
    refused_ref("[{\"ref\":3,\"type\":\"ping\"}]", WSFAN_EBAD_JSON, "");
}

/* ---- rooms and users --------------------------------------------------------- */

static void test_command_room_missing_or_not_a_string_is_bad_command(void **state)
{
    static const char *bad[] = {"null", "1", "true", "[\"r\"]", "{\"r\":1}"};

    (void)state;
    for (size_t c = 0; c < COUNT(room_commands); c++) {
        refused(room_less_commands[c], WSFAN_EBAD_COMMAND);
        for (size_t i = 0; i < COUNT(bad); i++)
            refused(fmt(room_commands[c], bad[i]), WSFAN_EBAD_COMMAND);
    }
}

static const char *const bad_names[] = {
    "\"\"", "\"a b\"", "\"a/b\"", "\"{r}\"", "\"r*\"", "\"r?\"", "\"[r]\"", "\"a\\\\b\"", "\"caf\xc3\xa9\"",
    "\"caf\\u00e9\"", "\"tab\\t\"", "\"new\\nline\"", "\"a\\u0000b\"", "\"\\u0000\"", "\"r\\u0000\"", "\"%41\"",
    "\"a+b\"", "\"a@b\"", "\"a#b\"", "\"a,b\"", "\"a\\\"b\"",
};

static void test_command_room_invalid_is_room_invalid(void **state)
{
    char json[256];

    (void)state;
    for (size_t c = 0; c < COUNT(room_commands); c++) {
        for (size_t i = 0; i < COUNT(bad_names); i++)
            refused(fmt(room_commands[c], bad_names[i]), WSFAN_EROOM_INVALID);
        snprintf(json, sizeof json, "\"%s\"", repeat(0, 'r', NAME_MAX_LEN + 1));
        refused(fmt(room_commands[c], json), WSFAN_EROOM_INVALID);
    }
}

static void test_command_room_valid_names_are_kept_verbatim(void **state)
{
    const char *names[] = {"r", "general", "A-Z_a.z:0-9", "org:42:room", "-", "...", repeat(1, 'x', NAME_MAX_LEN)};
    char json[256];
    struct command cmd;

    (void)state;
    for (size_t c = 0; c < COUNT(room_commands); c++) {
        for (size_t i = 0; i < COUNT(names); i++) {
            snprintf(json, sizeof json, "\"%s\"", names[i]);
            parse_ok(fmt(room_commands[c], json), &cmd);
            assert_string_equal(cmd.room, names[i]);
            assert_string_equal(cmd.user, "");
            command_free(&cmd);
        }
    }
}

static void test_command_send_user_checks(void **state)
{
    static const char *not_strings[] = {"null", "1", "false", "[]", "{}"};
    char text[512], json[256];
    struct command cmd;

    (void)state;
    refused("{\"type\":\"send\",\"data\":1}", WSFAN_EBAD_COMMAND);
    /* room instead of user is not a user */
    refused("{\"type\":\"send\",\"room\":\"r\",\"data\":1}", WSFAN_EBAD_COMMAND);
    for (size_t i = 0; i < COUNT(not_strings); i++) {
        snprintf(text, sizeof text, "{\"type\":\"send\",\"user\":%s,\"data\":1}", not_strings[i]);
        refused(text, WSFAN_EBAD_COMMAND);
    }
    for (size_t i = 0; i < COUNT(bad_names); i++) {
        snprintf(text, sizeof text, "{\"type\":\"send\",\"user\":%s,\"data\":1}", bad_names[i]);
        refused(text, WSFAN_EUSER_INVALID);
    }
    snprintf(text, sizeof text, "{\"type\":\"send\",\"user\":\"%s\",\"data\":1}", repeat(0, 'u', NAME_MAX_LEN + 1));
    refused(text, WSFAN_EUSER_INVALID);

    snprintf(json, sizeof json, "%s", repeat(0, 'u', NAME_MAX_LEN));
    snprintf(text, sizeof text, "{\"type\":\"send\",\"user\":\"%s\",\"data\":1}", json);
    parse_ok(text, &cmd);
    assert_int_equal(cmd.type, CMD_SEND);
    assert_string_equal(cmd.user, json);
    assert_string_equal(cmd.room, "");
    assert_string_equal(cmd.data, "1");
    command_free(&cmd);
}

static void test_command_names_allow_exactly_the_alphabet(void **state)
{
    char text[128];

    (void)state;
    for (int ch = 1; ch < 256; ch++) {
        int ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' ||
                 ch == '.' || ch == ':' || ch == '-';
        struct command cmd;
        struct command_error err = {0};
        /* As an escape so that control characters and bytes >= 0x80 make
         * valid JSON; those >= 0x80 become two UTF-8 bytes. */
        snprintf(text, sizeof text, "{\"type\":\"leave\",\"room\":\"a\\u%04xb\"}", ch);
        int rc = command_parse(text, strlen(text), &cmd, &err);
        if (ok) {
            assert_int_equal(rc, 0);
            assert_int_equal((unsigned char)cmd.room[1], ch);
        } else {
            assert_int_equal(rc, -1);
            assert_int_equal(err.code, WSFAN_EROOM_INVALID);
        }
        command_free(&cmd);
    }
}

/* ---- data ------------------------------------------------------------------- */

static void test_command_data_missing_is_bad_command(void **state)
{
    (void)state;
    for (size_t c = 0; c < COUNT(data_less_commands); c++)
        refused(data_less_commands[c], WSFAN_EBAD_COMMAND);
    refused("{\"type\":\"broadcast\",\"Data\":1}", WSFAN_EBAD_COMMAND);
}

static void test_command_data_is_any_json_kept_compact(void **state)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"null", "null"},
        {"0", "0"},
        {"false", "false"},
        {"true", "true"},
        {"\"\"", "\"\""},
        {"{}", "{}"},
        {"[]", "[]"},
        {"-12", "-12"},
        {"1.5", "1.5"},
        {"\"hi\"", "\"hi\""},
        {"{ \"text\" : \"hi\" , \"n\" : [ 1 , 2 ] }", "{\"text\":\"hi\",\"n\":[1,2]}"},
        {"{\"b\":1,\"a\":2}", "{\"b\":1,\"a\":2}"},
        {"{\"a\":[1,{\"b\":null,\"c\":[[],{}]}]}", "{\"a\":[1,{\"b\":null,\"c\":[[],{}]}]}"},
        {"\"x\\u0000y\"", "\"x\\u0000y\""},
        {"{\"k\":\"\\u0000\"}", "{\"k\":\"\\u0000\"}"},
        {"\"a\\\"b\\\\c\\n\"", "\"a\\\"b\\\\c\\n\""},
        {"\"\\u00e9\"", "\"\xc3\xa9\""},
        {"\"\\ud83d\\ude00\"", "\"\xf0\x9f\x98\x80\""},
    };
    struct command cmd;

    (void)state;
    for (size_t c = 0; c < COUNT(data_commands); c++) {
        for (size_t i = 0; i < COUNT(cases); i++) {
            parse_ok(fmt(data_commands[c], cases[i].in), &cmd);
            assert_non_null(cmd.data);
            if (strcmp(cmd.data, cases[i].out))
                fail_msg("data %s became [%s], expected [%s]", cases[i].in, cmd.data, cases[i].out);
            assert_int_equal(cmd.data_len, strlen(cases[i].out));
            command_free(&cmd);
            assert_null(cmd.data);
        }
    }
}

/* jansson cannot hold a NUL in an object key: such data is refused as
 * bad_json (not cut short, not a crash). */
static void test_command_data_with_nul_in_a_key_is_bad_json(void **state)
{
    (void)state;
    for (size_t c = 0; c < COUNT(data_commands); c++)
        refused(fmt(data_commands[c], "{\"k\\u0000x\":1}"), WSFAN_EBAD_JSON);
}

static void test_command_data_is_ignored_where_not_used(void **state)
{
    struct command cmd;

    (void)state;
    parse_ok("{\"type\":\"ping\",\"data\":{\"a\":1}}", &cmd);
    assert_null(cmd.data);
    command_free(&cmd);
    parse_ok("{\"type\":\"join\",\"room\":\"r\",\"data\":1}", &cmd);
    assert_null(cmd.data);
    command_free(&cmd);
}

/* ---- publish ---------------------------------------------------------------- */

static void test_command_publish_defaults(void **state)
{
    struct command cmd;

    (void)state;
    parse_ok("{\"type\":\"publish\",\"room\":\"general\",\"data\":{\"text\":\"hi\"}}", &cmd);
    assert_int_equal(cmd.type, CMD_PUBLISH);
    assert_string_equal(cmd.room, "general");
    assert_string_equal(cmd.data, "{\"text\":\"hi\"}");
    assert_int_equal(cmd.ephemeral, 0);
    assert_int_equal(cmd.echo, 1);
    command_free(&cmd);
}

static void test_command_publish_flags(void **state)
{
    static const struct {
        const char *flags;
        int ephemeral, echo;
    } cases[] = {
        {"\"ephemeral\":true", 1, 1},   {"\"ephemeral\":false", 0, 1},
        {"\"echo\":false", 0, 0},       {"\"echo\":true", 0, 1},
        {"\"ephemeral\":true,\"echo\":false", 1, 0},
    };
    char text[256];
    struct command cmd;

    (void)state;
    for (size_t i = 0; i < COUNT(cases); i++) {
        snprintf(text, sizeof text, "{\"type\":\"publish\",\"room\":\"r\",\"data\":0,%s}", cases[i].flags);
        parse_ok(text, &cmd);
        assert_int_equal(cmd.ephemeral, cases[i].ephemeral);
        assert_int_equal(cmd.echo, cases[i].echo);
        command_free(&cmd);
    }
}

static void test_command_publish_flags_must_be_booleans(void **state)
{
    static const char *bad[] = {"1", "0", "\"true\"", "\"false\"", "null", "[]", "{}", "1.0"};
    char text[256];

    (void)state;
    for (size_t i = 0; i < COUNT(bad); i++) {
        snprintf(text, sizeof text, "{\"type\":\"publish\",\"room\":\"r\",\"data\":1,\"ephemeral\":%s}", bad[i]);
        refused(text, WSFAN_EBAD_COMMAND);
        snprintf(text, sizeof text, "{\"type\":\"publish\",\"room\":\"r\",\"data\":1,\"echo\":%s}", bad[i]);
        refused(text, WSFAN_EBAD_COMMAND);
    }
}

static void test_command_publish_key(void **state)
{
    static const struct {
        const char *json, *key;
    } cases[] = {
        {"\"k-1\"", "k-1"},
        {"\"\"", ""},
        {"\"a\\\"b\"", "a\"b"},
        {"\"0123456789012345678901234567890123456789012345678901234567890123\"",
         "0123456789012345678901234567890123456789012345678901234567890123"},
    };
    char text[256];
    struct command cmd;

    (void)state;
    parse_ok("{\"type\":\"publish\",\"room\":\"r\",\"data\":0}", &cmd);
    assert_int_equal(cmd.has_key, 0);
    command_free(&cmd);
    for (size_t i = 0; i < COUNT(cases); i++) {
        snprintf(text, sizeof text, "{\"type\":\"publish\",\"room\":\"r\",\"data\":0,\"key\":%s}", cases[i].json);
        parse_ok(text, &cmd);
        assert_int_equal(cmd.has_key, 1);
        assert_string_equal(cmd.key, cases[i].key);
        command_free(&cmd);
    }
}

static void test_command_publish_key_must_be_a_short_string(void **state)
{
    static const char *bad[] = {
        "1", "null", "[]", "{}", "true", "\"a\\u0000b\"",
        "\"01234567890123456789012345678901234567890123456789012345678901234\"",
    };
    char text[256];

    (void)state;
    for (size_t i = 0; i < COUNT(bad); i++) {
        snprintf(text, sizeof text, "{\"type\":\"publish\",\"room\":\"r\",\"data\":1,\"key\":%s}", bad[i]);
        refused(text, WSFAN_EBAD_COMMAND);
    }
}

/* ---- join since ------------------------------------------------------------- */

static void test_command_join_without_since(void **state)
{
    struct command cmd;

    (void)state;
    parse_ok("{\"type\":\"join\",\"room\":\"general\"}", &cmd);
    assert_int_equal(cmd.type, CMD_JOIN);
    assert_string_equal(cmd.room, "general");
    assert_int_equal(cmd.has_since, 0);
    command_free(&cmd);
}

static void test_command_join_since_is_parsed(void **state)
{
    static const struct {
        const char *since;
        uint64_t ms, seq;
    } good[] = {
        {"0-0", 0, 0},
        {"1732312345678-0", 1732312345678ULL, 0},
        {"1732312345678-17", 1732312345678ULL, 17},
        {"18446744073709551615-18446744073709551615", UINT64_MAX, UINT64_MAX},
    };
    char text[256];
    struct command cmd;

    (void)state;
    for (size_t i = 0; i < COUNT(good); i++) {
        snprintf(text, sizeof text, "{\"type\":\"join\",\"room\":\"r\",\"since\":\"%s\"}", good[i].since);
        parse_ok(text, &cmd);
        assert_int_equal(cmd.has_since, 1);
        assert_true(cmd.since.ms == good[i].ms);
        assert_true(cmd.since.seq == good[i].seq);
        command_free(&cmd);
    }
}

static const char *const bad_offsets[] = {
    "\"\"", "\"123\"", "\"a-1\"", "\"1-\"", "\"-1\"", "\"-\"", "\"1-a\"", "\"1-2-3\"", "\"1--2\"", "\" 1-2\"",
    "\"1-2 \"", "\"+1-2\"", "\"1.5-0\"", "\"0x1-0\"",
    "\"123456789012345678901-0\"", /* 21 digits */
    "\"0-123456789012345678901\"",
    "\"18446744073709551616-0\"", /* 2^64 */
    "\"0-18446744073709551616\"", "\"\\u0000\"", "\"\\u0000-0\"", "1", "1732312345678", "null", "true",
    "[\"1-2\"]", "{\"ms\":1}",
};

static void test_command_join_since_malformed_is_bad_command(void **state)
{
    char text[256];

    (void)state;
    for (size_t i = 0; i < COUNT(bad_offsets); i++) {
        snprintf(text, sizeof text, "{\"type\":\"join\",\"room\":\"r\",\"since\":%s}", bad_offsets[i]);
        refused(text, WSFAN_EBAD_COMMAND);
    }
}

/* ---- history ---------------------------------------------------------------- */

static void test_command_history_defaults(void **state)
{
    struct command cmd;

    (void)state;
    parse_ok("{\"type\":\"history\",\"room\":\"r\"}", &cmd);
    assert_int_equal(cmd.type, CMD_HISTORY);
    assert_int_equal(cmd.limit, HISTORY_DEFAULT_LIMIT);
    assert_int_equal(cmd.limit, 50);
    assert_int_equal(cmd.has_before, 0);
    command_free(&cmd);
}

static void test_command_history_limit_range(void **state)
{
    static const int good[] = {1, 2, 50, 999, 1000};
    static const char *bad[] = {"0",    "-1",   "1001", "100000", "9223372036854775807", "-9223372036854775808",
                                "1.5",  "1.0",  "50.0", "1e2",    "\"5\"",               "null",
                                "true", "[5]", "{}"};
    char text[256];
    struct command cmd;

    (void)state;
    assert_int_equal(HISTORY_MAX_LIMIT, 1000);
    for (size_t i = 0; i < COUNT(good); i++) {
        snprintf(text, sizeof text, "{\"type\":\"history\",\"room\":\"r\",\"limit\":%d}", good[i]);
        parse_ok(text, &cmd);
        assert_int_equal(cmd.limit, good[i]);
        command_free(&cmd);
    }
    for (size_t i = 0; i < COUNT(bad); i++) {
        snprintf(text, sizeof text, "{\"type\":\"history\",\"room\":\"r\",\"limit\":%s}", bad[i]);
        refused(text, WSFAN_EBAD_COMMAND);
    }
}

static void test_command_history_before(void **state)
{
    char text[256];
    struct command cmd;

    (void)state;
    parse_ok("{\"type\":\"history\",\"room\":\"r\",\"limit\":10,\"before\":\"1732312345678-3\"}", &cmd);
    assert_int_equal(cmd.limit, 10);
    assert_int_equal(cmd.has_before, 1);
    assert_true(cmd.before.ms == 1732312345678ULL && cmd.before.seq == 3);
    command_free(&cmd);
    for (size_t i = 0; i < COUNT(bad_offsets); i++) {
        snprintf(text, sizeof text, "{\"type\":\"history\",\"room\":\"r\",\"before\":%s}", bad_offsets[i]);
        refused(text, WSFAN_EBAD_COMMAND);
    }
}

/* ---- the order of checks ---------------------------------------------------- */

static void test_command_checks_in_a_stable_order(void **state)
{
    (void)state;
    /* bad ref before anything else; type before fields; room before data. */
    refused("{\"ref\":1.5,\"type\":\"nope\"}", WSFAN_EBAD_COMMAND);
    refused_ref("{\"ref\":1,\"type\":\"nope\",\"room\":\"a b\"}", WSFAN_EUNKNOWN_TYPE, "1");
    refused("{\"type\":\"publish\",\"room\":\"a b\"}", WSFAN_EROOM_INVALID);
    refused("{\"type\":\"send\",\"user\":\"a b\"}", WSFAN_EUSER_INVALID);
}

/* command.h: "Returns 0, or -1 with err filled in" - for every kind of
 * refusal, not only those found before the fields are read. */
static void test_command_refusal_returns_minus_one(void **state)
{
    static const char *bad[] = {
        "nope", "[]", "{}", "{\"type\":\"nope\"}", "{\"type\":\"ping\",\"ref\":1.5}",
        "{\"type\":\"join\"}", "{\"type\":\"join\",\"room\":\"a b\"}",
        "{\"type\":\"join\",\"room\":\"r\",\"since\":\"x\"}", "{\"type\":\"send\",\"user\":\"\",\"data\":1}",
        "{\"type\":\"broadcast\"}", "{\"type\":\"history\",\"room\":\"r\",\"limit\":0}",
        "{\"type\":\"publish\",\"room\":\"r\",\"data\":1,\"echo\":1}",
    };

    (void)state;
    for (size_t i = 0; i < COUNT(bad); i++) {
        struct command cmd;
        struct command_error err = {0};
        int rc = command_parse(bad[i], strlen(bad[i]), &cmd, &err);
        command_free(&cmd);
        if (rc != -1)
            fail_msg("%s: returned %d (%s), expected -1", bad[i], rc, wsfan_error_code(err.code));
    }
}

/* ---- inputs without a NUL terminator --------------------------------------- */

static void test_command_reads_only_len_bytes(void **state)
{
    const char *text = "{\"type\":\"ping\"}garbage";
    struct command cmd;

    (void)state;
    parse_ok_len(text, 15, &cmd);
    assert_int_equal(cmd.type, CMD_PING);
    command_free(&cmd);
    refused_len(text, 14, WSFAN_EBAD_JSON, "");
    refused_len(text, 0, WSFAN_EBAD_JSON, "");
}

static void test_command_free_twice_is_harmless(void **state)
{
    struct command cmd;

    (void)state;
    parse_ok("{\"type\":\"broadcast\",\"data\":[1,2,3]}", &cmd);
    assert_string_equal(cmd.data, "[1,2,3]");
    command_free(&cmd);
    command_free(&cmd);
}


/* ---- the fast path agrees with jansson ------------------------------------ */

/* command_parse reads compact commands in place (command_parse_compact)
 * and leaves the rest to jansson (command_parse_general). Each text here is
 * on a known side of the compact path's limits, and both paths must give the
 * same command or the same error. */
static void test_command_fast_path_agrees_with_the_general_path(void **state)
{
    /* {taken by the compact path, text} */
    static const struct {
        int compact;
        const char *text;
    } cases[] = {
        {1, "{\"type\":\"publish\",\"room\":\"r\",\"data\":{\"a\":[1,-2,true,false,null,\"x\"],\"b\":{}},\"ref\":7}"},
        {1, "{\"type\":\"publish\",\"room\":\"r\",\"data\":\"q\\\"uo\\\\te\\n\\t\\r\\b\\f\",\"echo\":false,\"ephemeral\":true}"},
        {1, "{\"type\":\"publish\",\"room\":\"r\",\"data\":\"caf\xc3\xa9 \xf0\x9f\x98\x80 \x7f\"}"},
        {0, "{\"type\":\"publish\",\"room\":\"r\",\"data\":\"\\u00e9\\/\"}"},
        {0, "{\"type\":\"publish\",\"room\":\"r\",\"data\":[1.5,1e2,-0,0,123456789012345678,1234567890123456789]}"},
        {0, "{\"type\":\"publish\",\"room\":\"r\",\"data\":{\"a\": 1}}"},
        {0, "{\"type\":\"publish\",\"room\":\"r\",\"data\":{\"a\":1,\"a\":2}}"},
        {0, "{\"type\":\"publish\",\"room\":\"r\",\"data\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"},
        {0, "{\"type\":\"publish\",\"room\":\"r\",\"data\":{\"k1\":1,\"k2\":2,\"k3\":3,\"k4\":4,\"k5\":5,\"k6\":6,\"k7\":7,"
                 "\"k8\":8,\"k9\":9,\"k10\":10,\"k11\":11,\"k12\":12,\"k13\":13,\"k14\":14,\"k15\":15,\"k16\":16,\"k17\":17}}"},
        {1, " {\"type\" : \"send\" ,\t\"user\":\"bob\",\n\"data\":null} \r\n"},
        {1, "{\"type\":\"broadcast\",\"data\":0,\"ref\":\"\xc3\xa9t\xc3\xa9\"}"},
        {1, "{\"type\":\"join\",\"room\":\"r\",\"since\":\"1732312345678-3\",\"ref\":-12}"},
        {0, "{\"type\":\"join\",\"room\":\"r\",\"since\":\"1-\"}"},
        {1, "{\"type\":\"history\",\"room\":\"r\",\"limit\":1000,\"before\":\"5-0\"}"},
        {0, "{\"type\":\"history\",\"room\":\"r\",\"limit\":1001}"},
        {0, "{\"type\":\"history\",\"room\":\"r\",\"limit\":1.0}"},
        {1, "{\"type\":\"leave\",\"room\":\"a:b.c-d_e\",\"ref\":\"" /* 64 bytes */
                 "0123456789012345678901234567890123456789012345678901234567890123\"}"},
        {0, "{\"type\":\"leave\",\"room\":\"r\",\"ref\":\"01234567890123456789012345678901234567890123456789012345678901234\"}"},
        {0, "{\"type\":\"leave\",\"room\":\"r\",\"ref\":1.5}"},
        {0, "{\"type\":\"presence\",\"room\":\"bad room\"}"},
        {1, "{\"type\":\"ping\",\"room\":5,\"extra\":[{\"x\":\"y\"}]}"},
        {0, "{\"type\":\"ping\",\"type\":\"ping\"}"},
        {0, "{\"type\":\"pin\\u0067\"}"},
        {0, "{\"type\":\"PING\"}"},
        {0, "{\"type\":\"ping\"}x"},
        {0, "{\"type\":\"ping\",}"},
        {0, "{\"type\":\"publish\",\"room\":\"r\",\"data\":[1,]}"},
        {0, "{\"type\":\"publish\",\"room\":\"r\",\"data\":tru}"},
        {0, "{\"type\":\"publish\",\"room\":\"r\",\"data\":\"\xff\"}"},
        {0, "{\"type\":\"publish\",\"room\":\"r\"}"},
        {0, "[\"type\",\"ping\"]"},
        {0, ""},
        {1, "{\"type\":\"refresh\",\"token\":\"eyJ.eyJ.sig-_\",\"ref\":3}"},
        {0, "{\"type\":\"refresh\",\"token\":\"a\\u002eb\"}"},
        {0, "{\"type\":\"refresh\",\"token\":\"a\\u0000b\"}"},
        {0, "{\"type\":\"refresh\",\"token\":7}"},
        {0, "{\"type\":\"refresh\"}"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *text = cases[i].text;
        struct command a, b;
        struct command_error ea = {0}, eb = {0};
        if ((command_parse_compact(text, strlen(text), &a) == 0) != cases[i].compact)
            fail_msg("text %zu: the compact path %s it", i, cases[i].compact ? "refused" : "took");
        command_free(&a);
        int ra = command_parse(text, strlen(text), &a, &ea);
        int rb = command_parse_general(text, strlen(text), &b, &eb);
        if (ra != rb || strcmp(a.ref, b.ref) || (ra && ea.code != eb.code))
            fail_msg("text %zu: %d %s / %d %s", i, ra, ra ? wsfan_error_code(ea.code) : a.ref, rb,
                     rb ? wsfan_error_code(eb.code) : b.ref);
        if (!ra) {
            assert_int_equal(a.type, b.type);
            assert_string_equal(a.room, b.room);
            assert_string_equal(a.user, b.user);
            assert_true((a.data == NULL) == (b.data == NULL));
            if (a.data)
                assert_string_equal(a.data, b.data);
            assert_int_equal(a.data_len, b.data_len);
            assert_int_equal(a.echo, b.echo);
            assert_int_equal(a.ephemeral, b.ephemeral);
            assert_int_equal(a.limit, b.limit);
            assert_int_equal(a.has_since, b.has_since);
            assert_int_equal(a.since.ms, b.since.ms);
            assert_int_equal(a.since.seq, b.since.seq);
            assert_int_equal(a.has_before, b.has_before);
            assert_int_equal(a.before.ms, b.before.ms);
            assert_true((a.token == NULL) == (b.token == NULL));
            if (a.token)
                assert_string_equal(a.token, b.token);
            assert_int_equal(a.token_len, b.token_len);
        }
        command_free(&a);
        command_free(&b);
    }
}

/* refresh (docs/protocol.md section 1a): a string token, kept whole; its
 * checks are the token's, when the command runs. */
static void test_command_refresh_takes_a_string_token(void **state)
{
    struct command cmd;

    (void)state;
    parse_ok("{\"type\":\"refresh\",\"token\":\"h.p.s\",\"ref\":\"r\"}", &cmd);
    assert_int_equal(cmd.type, CMD_REFRESH);
    assert_string_equal(cmd.token, "h.p.s");
    assert_int_equal(cmd.token_len, 5);
    command_free(&cmd);
    assert_null(cmd.token);
    parse_ok("{\"type\":\"refresh\",\"token\":\"\\u0068.p.s\"}", &cmd);
    assert_string_equal(cmd.token, "h.p.s");
    command_free(&cmd);
    refused("{\"type\":\"refresh\"}", WSFAN_EBAD_COMMAND);
    refused("{\"type\":\"refresh\",\"token\":null}", WSFAN_EBAD_COMMAND);
    refused("{\"type\":\"refresh\",\"token\":\"a\\u0000b\"}", WSFAN_EBAD_COMMAND);
    assert_string_equal(command_type_name(CMD_REFRESH), "refresh");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_command_refresh_takes_a_string_token),
        cmocka_unit_test(test_command_refuses_text_that_is_not_json),
        cmocka_unit_test(test_command_refuses_raw_nul_bytes),
        cmocka_unit_test(test_command_refuses_json_that_is_not_an_object),
        cmocka_unit_test(test_command_refuses_duplicate_keys),
        cmocka_unit_test(test_command_accepts_surrounding_whitespace_and_extra_fields),
        cmocka_unit_test(test_command_refuses_missing_or_non_string_type),
        cmocka_unit_test(test_command_refuses_unknown_type),
        cmocka_unit_test(test_command_strings_with_nul_are_judged_whole),
        cmocka_unit_test(test_command_accepts_every_type),
        cmocka_unit_test(test_command_key_order_does_not_matter),
        cmocka_unit_test(test_command_ref_string_up_to_64_bytes),
        cmocka_unit_test(test_command_ref_length_counts_bytes_not_characters),
        cmocka_unit_test(test_command_ref_integer),
        cmocka_unit_test(test_command_ref_of_other_types_is_refused_without_ref),
        cmocka_unit_test(test_command_ref_is_serialized_exactly),
        cmocka_unit_test(test_command_ref_of_64_escaped_bytes_fits),
        cmocka_unit_test(test_command_error_carries_a_good_ref),
        cmocka_unit_test(test_command_room_missing_or_not_a_string_is_bad_command),
        cmocka_unit_test(test_command_room_invalid_is_room_invalid),
        cmocka_unit_test(test_command_room_valid_names_are_kept_verbatim),
        cmocka_unit_test(test_command_send_user_checks),
        cmocka_unit_test(test_command_names_allow_exactly_the_alphabet),
        cmocka_unit_test(test_command_data_missing_is_bad_command),
        cmocka_unit_test(test_command_data_is_any_json_kept_compact),
        cmocka_unit_test(test_command_data_with_nul_in_a_key_is_bad_json),
        cmocka_unit_test(test_command_data_is_ignored_where_not_used),
        cmocka_unit_test(test_command_publish_defaults),
        cmocka_unit_test(test_command_publish_flags),
        cmocka_unit_test(test_command_publish_flags_must_be_booleans),
        cmocka_unit_test(test_command_publish_key),
        cmocka_unit_test(test_command_publish_key_must_be_a_short_string),
        cmocka_unit_test(test_command_join_without_since),
        cmocka_unit_test(test_command_join_since_is_parsed),
        cmocka_unit_test(test_command_join_since_malformed_is_bad_command),
        cmocka_unit_test(test_command_history_defaults),
        cmocka_unit_test(test_command_history_limit_range),
        cmocka_unit_test(test_command_history_before),
        cmocka_unit_test(test_command_checks_in_a_stable_order),
        cmocka_unit_test(test_command_refusal_returns_minus_one),
        cmocka_unit_test(test_command_reads_only_len_bytes),
        cmocka_unit_test(test_command_free_twice_is_harmless),
        cmocka_unit_test(test_command_fast_path_agrees_with_the_general_path),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
