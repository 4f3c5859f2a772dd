/* test_reply.c - unit tests of codec/reply.c: the exact JSON text of every
 * reply to one client (docs/protocol.md sections 1 and 2: welcome, joined,
 * left, ack, history, presence, pong, error) and of every HTTP API body
 * (section 7), byte for byte what protocol.c and api.c sent before the
 * replies moved to codec: a "ref" key only when the command had one, null
 * for a missing offset or user, lists spliced by their length, and error
 * messages escaped as JSON strings. Every text is checked to be one JSON
 * object without duplicate keys, and *len to be its length. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/reply.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Checks that text is exactly expected, that *len (set by the builder that
 * made text: read after it ran) is its length, and that it is one JSON
 * object; then frees it. */
static void expect_reply(char *text, const size_t *len, const char *expected)
{
    json_error_t err;
    json_t *v;

    assert_non_null(text);
    if (strcmp(text, expected))
        fail_msg("reply [%s], expected [%s]", text, expected);
    assert_int_equal(*len, strlen(expected));
    v = json_loadb(text, *len, JSON_REJECT_DUPLICATES, &err);
    if (!v)
        fail_msg("not JSON: %s: %s", err.text, text);
    assert_true(json_is_object(v));
    json_decref(v);
    free(text);
}

/* ---- welcome ---------------------------------------------------------------- */

static void test_reply_welcome_with_user_and_anonymous(void **state)
{
    size_t len = 0;

    (void)state;
    expect_reply(reply_welcome("1.42", "alice", "node-1", 25, NULL, &len), &len,
                 "{\"type\":\"welcome\",\"session\":\"1.42\",\"user\":\"alice\",\"node\":\"node-1\",\"heartbeat\":25}");
    expect_reply(reply_welcome("0.1", NULL, "myhost-4242", 0, NULL, &len), &len,
                 "{\"type\":\"welcome\",\"session\":\"0.1\",\"user\":null,\"node\":\"myhost-4242\",\"heartbeat\":0}");
}

/* With a token, exp follows: the token's exp, or null (docs/protocol.md
 * section 1, "Welcome"). */
static void test_reply_welcome_with_token_has_exp(void **state)
{
    size_t len = 0;

    (void)state;
    expect_reply(reply_welcome("1.2", "alice", "n", 25, "1795433500", &len), &len,
                 "{\"type\":\"welcome\",\"session\":\"1.2\",\"user\":\"alice\",\"node\":\"n\",\"heartbeat\":25,"
                 "\"exp\":1795433500}");
    expect_reply(reply_welcome("1.3", "bob", "n", 25, "null", &len), &len,
                 "{\"type\":\"welcome\",\"session\":\"1.3\",\"user\":\"bob\",\"node\":\"n\",\"heartbeat\":25,"
                 "\"exp\":null}");
}

static void test_reply_refreshed_with_exp_or_null(void **state)
{
    size_t len = 0;

    (void)state;
    expect_reply(reply_refreshed("\"r1\"", "1795433500", &len), &len,
                 "{\"type\":\"refreshed\",\"ref\":\"r1\",\"exp\":1795433500}");
    expect_reply(reply_refreshed("", "null", &len), &len, "{\"type\":\"refreshed\",\"exp\":null}");
}

/* ---- joined ----------------------------------------------------------------- */

static void test_reply_joined_with_offset_recovered_or_not(void **state)
{
    size_t len = 0;

    (void)state;
    expect_reply(reply_joined("\"j1\"", "general", "1732312345678-0", 1, 3, &len), &len,
                 "{\"type\":\"joined\",\"ref\":\"j1\",\"room\":\"general\",\"offset\":\"1732312345678-0\","
                 "\"recovered\":true,\"missed\":3}");
    expect_reply(reply_joined("", "general", "0-0", 0, 0, &len), &len,
                 "{\"type\":\"joined\",\"room\":\"general\",\"offset\":\"0-0\",\"recovered\":false,\"missed\":0}");
    expect_reply(reply_joined("7", "r", "18446744073709551615-18446744073709551615", 1, 1000, &len), &len,
                 "{\"type\":\"joined\",\"ref\":7,\"room\":\"r\","
                 "\"offset\":\"18446744073709551615-18446744073709551615\","
                 "\"recovered\":true,\"missed\":1000}");
}

static void test_reply_joined_again_has_null_offset(void **state)
{
    size_t len = 0;

    (void)state;
    /* a room already joined (docs/protocol.md section 2, "join") */
    expect_reply(reply_joined("\"j2\"", "general", NULL, 1, 0, &len), &len,
                 "{\"type\":\"joined\",\"ref\":\"j2\",\"room\":\"general\",\"offset\":null,\"recovered\":true,"
                 "\"missed\":0}");
    expect_reply(reply_joined("", "general", NULL, 1, 0, &len), &len,
                 "{\"type\":\"joined\",\"room\":\"general\",\"offset\":null,\"recovered\":true,\"missed\":0}");
    expect_reply(reply_joined("", "general", "", 1, 0, &len), &len,
                 "{\"type\":\"joined\",\"room\":\"general\",\"offset\":null,\"recovered\":true,\"missed\":0}");
}

/* ---- left, pong ------------------------------------------------------------- */

static void test_reply_left_with_and_without_ref(void **state)
{
    size_t len = 0;

    (void)state;
    expect_reply(reply_left("\"l\"", "a:b.c-d_e", NULL, &len), &len,
                 "{\"type\":\"left\",\"ref\":\"l\",\"room\":\"a:b.c-d_e\"}");
    expect_reply(reply_left("", "general", NULL, &len), &len, "{\"type\":\"left\",\"room\":\"general\"}");
}

/* A room the connection's new token no longer allows (docs/protocol.md
 * section 1a, "refresh"). */
static void test_reply_left_with_reason(void **state)
{
    size_t len = 0;

    (void)state;
    expect_reply(reply_left("", "team-42:ops", "forbidden", &len), &len,
                 "{\"type\":\"left\",\"room\":\"team-42:ops\",\"reason\":\"forbidden\"}");
}

static void test_reply_pong_with_and_without_ref(void **state)
{
    size_t len = 0;

    (void)state;
    expect_reply(reply_pong("", &len), &len, "{\"type\":\"pong\"}");
    expect_reply(reply_pong("-12", &len), &len, "{\"type\":\"pong\",\"ref\":-12}");
    /* a ref is JSON text already: it goes in as it is */
    expect_reply(reply_pong("\"q\\\"2 \xc3\xa9\"", &len), &len, "{\"type\":\"pong\",\"ref\":\"q\\\"2 \xc3\xa9\"}");
}

/* ---- ack -------------------------------------------------------------------- */

static void test_reply_ack_of_send_and_broadcast_has_no_offset(void **state)
{
    size_t len = 0;

    (void)state;
    expect_reply(reply_ack("", 0, NULL, &len), &len, "{\"type\":\"ack\"}");
    expect_reply(reply_ack("\"s1\"", 0, NULL, &len), &len, "{\"type\":\"ack\",\"ref\":\"s1\"}");
    /* an offset means nothing without room_ack */
    expect_reply(reply_ack("3", 0, "1-0", &len), &len, "{\"type\":\"ack\",\"ref\":3}");
}

static void test_reply_ack_of_publish_has_offset_or_null(void **state)
{
    size_t len = 0;

    (void)state;
    expect_reply(reply_ack("\"p1\"", 1, "1732312345678-0", &len), &len,
                 "{\"type\":\"ack\",\"ref\":\"p1\",\"offset\":\"1732312345678-0\"}");
    expect_reply(reply_ack("", 1, "1-2", &len), &len, "{\"type\":\"ack\",\"offset\":\"1-2\"}");
    /* ephemeral or history off */
    expect_reply(reply_ack("\"p2\"", 1, NULL, &len), &len, "{\"type\":\"ack\",\"ref\":\"p2\",\"offset\":null}");
    expect_reply(reply_ack("", 1, "", &len), &len, "{\"type\":\"ack\",\"offset\":null}");
}

/* ---- history, presence ------------------------------------------------------ */

static void test_reply_history_splices_events_by_length(void **state)
{
    const char *events = "{\"type\":\"message\",\"room\":\"r\",\"offset\":\"1-0\",\"from\":null,\"data\":1,\"ts\":1},"
                         "{\"type\":\"message\",\"room\":\"r\",\"offset\":\"1-1\",\"from\":\"u\",\"data\":2,\"ts\":1}"
                         ",GARBAGE";
    size_t events_len = strlen(events) - strlen(",GARBAGE");
    size_t len = 0;

    (void)state;
    expect_reply(reply_history("\"h\"", "r", events, events_len, &len), &len,
                 "{\"type\":\"history\",\"ref\":\"h\",\"room\":\"r\",\"messages\":["
                 "{\"type\":\"message\",\"room\":\"r\",\"offset\":\"1-0\",\"from\":null,\"data\":1,\"ts\":1},"
                 "{\"type\":\"message\",\"room\":\"r\",\"offset\":\"1-1\",\"from\":\"u\",\"data\":2,\"ts\":1}]}");
    expect_reply(reply_history("", "r", "", 0, &len), &len, "{\"type\":\"history\",\"room\":\"r\",\"messages\":[]}");
    expect_reply(reply_history("", "r", events, 0, &len), &len,
                 "{\"type\":\"history\",\"room\":\"r\",\"messages\":[]}");
}

static void test_reply_presence_takes_the_users_list(void **state)
{
    size_t len = 0;

    (void)state;
    expect_reply(reply_presence("\"pr\"", "general", "[{\"user\":\"alice\",\"connections\":2}]", &len), &len,
                 "{\"type\":\"presence\",\"ref\":\"pr\",\"room\":\"general\","
                 "\"users\":[{\"user\":\"alice\",\"connections\":2}]}");
    expect_reply(reply_presence("", "general", "[]", &len), &len,
                 "{\"type\":\"presence\",\"room\":\"general\",\"users\":[]}");
}

/* ---- error ------------------------------------------------------------------ */

static void test_reply_error_with_and_without_ref(void **state)
{
    size_t len = 0;

    (void)state;
    expect_reply(reply_error("\"q1\"", "not_member", "join the room first", &len), &len,
                 "{\"type\":\"error\",\"ref\":\"q1\",\"code\":\"not_member\",\"message\":\"join the room first\"}");
    expect_reply(reply_error("", "bad_json", "a command must be a JSON object", &len), &len,
                 "{\"type\":\"error\",\"code\":\"bad_json\",\"message\":\"a command must be a JSON object\"}");
    expect_reply(reply_error("0", "unavailable", "", &len), &len,
                 "{\"type\":\"error\",\"ref\":0,\"code\":\"unavailable\",\"message\":\"\"}");
}

/* Messages carry names and offsets from the client (and jansson's own
 * texts): they are escaped as JSON strings, UTF-8 kept. */
static const struct {
    const char *message, *quoted;
} escapes[] = {
    {"since must be an offset string such as \"1732312345678-0\"",
     "\"since must be an offset string such as \\\"1732312345678-0\\\"\""},
    {"back\\slash", "\"back\\\\slash\""},
    {"line\nfeed\ttab\rreturn", "\"line\\nfeed\\ttab\\rreturn\""},
    {"\x01\x1f", "\"\\u0001\\u001F\""},
    {"caf\xc3\xa9 \xe2\x80\xa8", "\"caf\xc3\xa9 \xe2\x80\xa8\""},
    {"</script>", "\"</script>\""},
};

static void test_reply_error_escapes_the_message(void **state)
{
    char expected[512];
    size_t len = 0;

    (void)state;
    for (size_t i = 0; i < COUNT(escapes); i++) {
        snprintf(expected, sizeof expected,
                 "{\"type\":\"error\",\"ref\":\"r\",\"code\":\"bad_command\",\"message\":%s}", escapes[i].quoted);
        expect_reply(reply_error("\"r\"", "bad_command", escapes[i].message, &len), &len, expected);
    }
}

/* ---- HTTP API bodies -------------------------------------------------------- */

/* The API error body as api.c built it before the move: one jansson object,
 * dumped compact. */
static char *api_error_before_the_move(const char *code, const char *message)
{
    json_t *body = json_pack("{s:s,s:s}", "error", code, "message", message);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;

    json_decref(body);
    assert_non_null(text);
    return text;
}

static void test_reply_api_error_is_error_and_message(void **state)
{
    size_t len = 0;
    char *before;

    (void)state;
    expect_reply(reply_api_error("room_invalid", "room must be 1 to 128 characters of A-Z a-z 0-9 _ . : -", &len),
                 &len,
                 "{\"error\":\"room_invalid\","
                 "\"message\":\"room must be 1 to 128 characters of A-Z a-z 0-9 _ . : -\"}");
    expect_reply(reply_api_error("not_found", "no such API endpoint", &len), &len,
                 "{\"error\":\"not_found\",\"message\":\"no such API endpoint\"}");
    before = api_error_before_the_move("unauthorized", "send Authorization: Bearer <api key>");
    expect_reply(reply_api_error("unauthorized", "send Authorization: Bearer <api key>", &len), &len, before);
    free(before);
}

static void test_reply_api_error_escapes_the_message(void **state)
{
    char expected[512], *before;
    size_t len = 0;

    (void)state;
    for (size_t i = 0; i < COUNT(escapes); i++) {
        snprintf(expected, sizeof expected, "{\"error\":\"bad_json\",\"message\":%s}", escapes[i].quoted);
        before = api_error_before_the_move("bad_json", escapes[i].message);
        assert_string_equal(before, expected);
        free(before);
        expect_reply(reply_api_error("bad_json", escapes[i].message, &len), &len, expected);
    }
}

static void test_reply_api_published_offset_or_null(void **state)
{
    size_t len = 0;

    (void)state;
    expect_reply(reply_api_published("1795436015950-0", &len), &len, "{\"offset\":\"1795436015950-0\"}");
    /* ephemeral, history off, user and all */
    expect_reply(reply_api_published(NULL, &len), &len, "{\"offset\":null}");
    expect_reply(reply_api_published("", &len), &len, "{\"offset\":null}");
}

static void test_reply_api_disconnected_counts_this_nodes_connections(void **state)
{
    size_t len = 0;

    (void)state;
    expect_reply(reply_api_disconnected(0, &len), &len, "{\"local\":0}");
    expect_reply(reply_api_disconnected(4294967295UL, &len), &len, "{\"local\":4294967295}");
}

static void test_reply_api_history_splices_events_by_length(void **state)
{
    const char *events = "{\"type\":\"message\",\"room\":\"general\",\"offset\":\"1795436015950-0\",\"from\":null,"
                         "\"data\":{\"text\":\"deploy finished\"},\"ts\":1795436015950}]]]";
    size_t len = 0;

    (void)state;
    expect_reply(reply_api_history("general", events, strlen(events) - 3, &len), &len,
                 "{\"room\":\"general\",\"messages\":[{\"type\":\"message\",\"room\":\"general\","
                 "\"offset\":\"1795436015950-0\",\"from\":null,\"data\":{\"text\":\"deploy finished\"},"
                 "\"ts\":1795436015950}]}");
    expect_reply(reply_api_history("general", "", 0, &len), &len, "{\"room\":\"general\",\"messages\":[]}");
}

static void test_reply_api_presence_and_rooms(void **state)
{
    size_t len = 0;

    (void)state;
    expect_reply(reply_api_presence("general", "[]", &len), &len, "{\"room\":\"general\",\"users\":[]}");
    expect_reply(reply_api_presence("general", "[{\"user\":\"alice\",\"connections\":2}]", &len), &len,
                 "{\"room\":\"general\",\"users\":[{\"user\":\"alice\",\"connections\":2}]}");
    expect_reply(reply_api_rooms("myhost-4242", "[]", &len), &len, "{\"node\":\"myhost-4242\",\"rooms\":[]}");
    expect_reply(reply_api_rooms("n", "[{\"room\":\"r\",\"local\":1,\"cluster\":3}]", &len), &len,
                 "{\"node\":\"n\",\"rooms\":[{\"room\":\"r\",\"local\":1,\"cluster\":3}]}");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply_welcome_with_user_and_anonymous),
        cmocka_unit_test(test_reply_joined_with_offset_recovered_or_not),
        cmocka_unit_test(test_reply_joined_again_has_null_offset),
        cmocka_unit_test(test_reply_left_with_and_without_ref),
        cmocka_unit_test(test_reply_left_with_reason),
        cmocka_unit_test(test_reply_welcome_with_token_has_exp),
        cmocka_unit_test(test_reply_refreshed_with_exp_or_null),
        cmocka_unit_test(test_reply_pong_with_and_without_ref),
        cmocka_unit_test(test_reply_ack_of_send_and_broadcast_has_no_offset),
        cmocka_unit_test(test_reply_ack_of_publish_has_offset_or_null),
        cmocka_unit_test(test_reply_history_splices_events_by_length),
        cmocka_unit_test(test_reply_presence_takes_the_users_list),
        cmocka_unit_test(test_reply_error_with_and_without_ref),
        cmocka_unit_test(test_reply_error_escapes_the_message),
        cmocka_unit_test(test_reply_api_error_is_error_and_message),
        cmocka_unit_test(test_reply_api_error_escapes_the_message),
        cmocka_unit_test(test_reply_api_published_offset_or_null),
        cmocka_unit_test(test_reply_api_disconnected_counts_this_nodes_connections),
        cmocka_unit_test(test_reply_api_history_splices_events_by_length),
        cmocka_unit_test(test_reply_api_presence_and_rooms),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
