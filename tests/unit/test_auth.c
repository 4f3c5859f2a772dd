/* test_auth.c - unit tests of app/auth.c and the room patterns it uses
 * (core/names.c; docs/protocol.md section 1a): matching exact ids,
 * prefixes and "*"; the rights of each command in mode none, in mode jwt
 * with a token, and for an anonymous connection; and the handshake's
 * decision (?user=, ?token=, Authorization: Bearer, 400 and 401). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/auth.h"
#include "core/error.h"
#include "core/names.h"

#define SECRET "auth-test-secret-0123456789abcdef"

/* ---- patterns ---------------------------------------------------------------- */

static void test_auth_patterns_match_exact_prefix_and_star(void **state)
{
    (void)state;
    const char *list = "general,team-42:*";
    assert_true(name_patterns_match(list, "general"));
    assert_true(name_patterns_match(list, "team-42:ops"));
    assert_true(name_patterns_match(list, "team-42:"));
    assert_false(name_patterns_match(list, "team-42"));
    assert_false(name_patterns_match(list, "generals"));
    assert_false(name_patterns_match(list, "genera"));
    assert_false(name_patterns_match(list, "team-43:ops"));
    assert_true(name_patterns_match("*", "anything"));
    assert_true(name_patterns_match("a,*", "z"));
    assert_false(name_patterns_match("", "general"));
    assert_true(name_patterns_match("t*", "t"));
}

static void test_auth_patterns_validity(void **state)
{
    (void)state;
    const char *good[] = {"", "general", "team-42:*", "*", "a,b,c:*", "x*"};
    const char *bad[] = {",", "a,", ",a", "a,,b", "a*b", "**", "*a", "a b", "a;b", "room*,"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        assert_true(name_patterns_valid(good[i]));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (name_patterns_valid(bad[i]))
            fail_msg("pattern list \"%s\" accepted", bad[i]);
    assert_true(name_pattern_valid("a*", 2));
    assert_false(name_pattern_valid("", 0));
}

/* ---- rights ------------------------------------------------------------------- */

static struct config cfg_of(enum config_auth auth, int allow_broadcast, const char *anonymous_rooms)
{
    struct config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.auth = auth;
    cfg.allow_broadcast = allow_broadcast;
    cfg.allow_anonymous = anonymous_rooms != NULL;
    strcpy(cfg.anonymous_rooms, anonymous_rooms ? anonymous_rooms : "");
    cfg.jwt_leeway = 5;
    return cfg;
}

static int check(const struct config *cfg, const struct token_rights *rights, enum auth_action action,
                 const char *room, int member)
{
    const char *why = NULL;
    int r = auth_check(cfg, rights, action, room, member, &why);
    if (r == WSFAN_EFORBIDDEN)
        assert_non_null(why);
    return r;
}

static void test_auth_mode_none_allows_all_but_broadcast_and_wants_joins(void **state)
{
    (void)state;
    struct config cfg = cfg_of(CONFIG_AUTH_NONE, 0, NULL);
    assert_int_equal(check(&cfg, NULL, AUTH_JOIN, "any", 0), 0);
    assert_int_equal(check(&cfg, NULL, AUTH_SEND, NULL, 0), 0);
    assert_int_equal(check(&cfg, NULL, AUTH_PUBLISH, "any", 1), 0);
    assert_int_equal(check(&cfg, NULL, AUTH_PUBLISH, "any", 0), WSFAN_ENOT_MEMBER);
    assert_int_equal(check(&cfg, NULL, AUTH_READ, "any", 0), WSFAN_ENOT_MEMBER);
    assert_int_equal(check(&cfg, NULL, AUTH_READ, "any", 1), 0);
    assert_int_equal(check(&cfg, NULL, AUTH_BROADCAST, NULL, 0), WSFAN_EFORBIDDEN);
    cfg.allow_broadcast = 1;
    assert_int_equal(check(&cfg, NULL, AUTH_BROADCAST, NULL, 0), 0);
}

static void test_auth_token_claims_decide(void **state)
{
    (void)state;
    struct config cfg = cfg_of(CONFIG_AUTH_JWT, 1, NULL);
    struct token_rights rights = {.rooms = "general,team-42:*", .publish = "general"};
    assert_int_equal(check(&cfg, &rights, AUTH_JOIN, "general", 0), 0);
    assert_int_equal(check(&cfg, &rights, AUTH_JOIN, "team-42:x", 0), 0);
    assert_int_equal(check(&cfg, &rights, AUTH_JOIN, "secret", 0), WSFAN_EFORBIDDEN);
    /* the token's rooms grant reading without a join; other rooms never */
    assert_int_equal(check(&cfg, &rights, AUTH_READ, "team-42:x", 0), 0);
    assert_int_equal(check(&cfg, &rights, AUTH_READ, "secret", 1), WSFAN_EFORBIDDEN);
    /* publish: the claim, then the join */
    assert_int_equal(check(&cfg, &rights, AUTH_PUBLISH, "general", 1), 0);
    assert_int_equal(check(&cfg, &rights, AUTH_PUBLISH, "general", 0), WSFAN_ENOT_MEMBER);
    assert_int_equal(check(&cfg, &rights, AUTH_PUBLISH, "team-42:x", 1), WSFAN_EFORBIDDEN);
    /* send and broadcast: the claims; --allow-broadcast does not count */
    assert_int_equal(check(&cfg, &rights, AUTH_SEND, NULL, 0), WSFAN_EFORBIDDEN);
    assert_int_equal(check(&cfg, &rights, AUTH_BROADCAST, NULL, 0), WSFAN_EFORBIDDEN);
    rights.send = rights.broadcast = 1;
    cfg.allow_broadcast = 0;
    assert_int_equal(check(&cfg, &rights, AUTH_SEND, NULL, 0), 0);
    assert_int_equal(check(&cfg, &rights, AUTH_BROADCAST, NULL, 0), 0);
    /* no rooms claim: no room */
    struct token_rights nothing = {0};
    assert_int_equal(check(&cfg, &nothing, AUTH_JOIN, "general", 0), WSFAN_EFORBIDDEN);
    assert_int_equal(check(&cfg, &nothing, AUTH_PUBLISH, "general", 1), WSFAN_EFORBIDDEN);
}

static void test_auth_anonymous_joins_and_reads_anonymous_rooms_only(void **state)
{
    (void)state;
    struct config cfg = cfg_of(CONFIG_AUTH_JWT, 1, "lobby,public:*");
    assert_int_equal(check(&cfg, NULL, AUTH_JOIN, "lobby", 0), 0);
    assert_int_equal(check(&cfg, NULL, AUTH_JOIN, "public:news", 0), 0);
    assert_int_equal(check(&cfg, NULL, AUTH_JOIN, "private", 0), WSFAN_EFORBIDDEN);
    assert_int_equal(check(&cfg, NULL, AUTH_READ, "lobby", 0), WSFAN_ENOT_MEMBER);
    assert_int_equal(check(&cfg, NULL, AUTH_READ, "lobby", 1), 0);
    assert_int_equal(check(&cfg, NULL, AUTH_READ, "private", 0), WSFAN_EFORBIDDEN);
    assert_int_equal(check(&cfg, NULL, AUTH_PUBLISH, "lobby", 1), WSFAN_EFORBIDDEN);
    assert_int_equal(check(&cfg, NULL, AUTH_SEND, NULL, 0), WSFAN_EFORBIDDEN);
    assert_int_equal(check(&cfg, NULL, AUTH_BROADCAST, NULL, 0), WSFAN_EFORBIDDEN);
}

/* ---- the handshake ------------------------------------------------------------- */

static struct token_key *key;

static int setup_key(void **state)
{
    (void)state;
    key = token_key_secret(SECRET, strlen(SECRET));
    return key ? 0 : -1;
}

static int teardown_key(void **state)
{
    (void)state;
    token_key_destroy(key);
    return 0;
}

static char *mint(const char *claims)
{
    char *token = token_sign(key, claims);
    assert_non_null(token);
    return token;
}

static void handshake(const struct config *cfg, const char *query, const char *authorization,
                      struct auth_result *out)
{
    struct http_request req = {.method = HTTP_GET, .path = "/ws", .query = query, .authorization = authorization};
    auth_handshake(cfg, cfg->auth == CONFIG_AUTH_JWT ? key : NULL, &req, (int64_t)time(NULL), out);
}

static void test_auth_handshake_mode_none_takes_user(void **state)
{
    (void)state;
    struct config cfg = cfg_of(CONFIG_AUTH_NONE, 0, NULL);
    struct auth_result r;
    handshake(&cfg, "user=alice&token=ignored", NULL, &r);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.user, "alice");
    assert_false(r.has_token);
    handshake(&cfg, NULL, NULL, &r);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.user, "");
    handshake(&cfg, "user=a%20b", NULL, &r);
    assert_int_equal(r.status, 400);
    handshake(&cfg, "user=%zz", NULL, &r);
    assert_int_equal(r.status, 400);
}

static void test_auth_handshake_mode_jwt(void **state)
{
    (void)state;
    struct config cfg = cfg_of(CONFIG_AUTH_JWT, 0, NULL);
    struct auth_result r;
    char query[2048], bearer[2048];
    char *token = mint("{\"sub\":\"alice\",\"rooms\":[\"general\"],\"tenant\":\"acme\",\"info\":{\"n\":1}}");

    snprintf(query, sizeof query, "token=%s", token);
    handshake(&cfg, query, NULL, &r);
    assert_int_equal(r.status, 0);
    assert_true(r.has_token);
    assert_string_equal(r.user, "alice");
    assert_string_equal(r.claims.rights.rooms, "general");
    assert_string_equal(r.claims.tenant, "acme");
    assert_string_equal(r.claims.info, "{\"n\":1}");
    token_claims_free(&r.claims);

    snprintf(bearer, sizeof bearer, "bearer %s", token);
    handshake(&cfg, NULL, bearer, &r);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.user, "alice");
    token_claims_free(&r.claims);

    /* ?user= is refused, with or without a token */
    handshake(&cfg, "user=alice", NULL, &r);
    assert_int_equal(r.status, 400);
    handshake(&cfg, "user=", bearer, &r);
    assert_int_equal(r.status, 400);
    /* no token: 401 with a challenge; another scheme is no token */
    handshake(&cfg, NULL, NULL, &r);
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.reason, "token missing"));
    assert_non_null(strstr(r.headers, "WWW-Authenticate: Bearer"));
    handshake(&cfg, NULL, "Basic YTpi", &r);
    assert_int_equal(r.status, 401);
    /* a bad token: 401 with its reason */
    handshake(&cfg, "token=abc", NULL, &r);
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.reason, "malformed"));
    assert_non_null(strstr(r.headers, "invalid_token"));
    handshake(&cfg, "token=%zz", NULL, &r);
    assert_int_equal(r.status, 401);
    assert_false(r.has_token);

    /* anonymous when allowed */
    cfg = cfg_of(CONFIG_AUTH_JWT, 0, "lobby");
    handshake(&cfg, NULL, NULL, &r);
    assert_int_equal(r.status, 0);
    assert_false(r.has_token);
    assert_string_equal(r.user, "");
    /* but a bad token is still refused, not taken as anonymous */
    handshake(&cfg, "token=abc", NULL, &r);
    assert_int_equal(r.status, 401);
    free(token);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auth_patterns_match_exact_prefix_and_star),
        cmocka_unit_test(test_auth_patterns_validity),
        cmocka_unit_test(test_auth_mode_none_allows_all_but_broadcast_and_wants_joins),
        cmocka_unit_test(test_auth_token_claims_decide),
        cmocka_unit_test(test_auth_anonymous_joins_and_reads_anonymous_rooms_only),
        cmocka_unit_test(test_auth_handshake_mode_none_takes_user),
        cmocka_unit_test(test_auth_handshake_mode_jwt),
    };
    return cmocka_run_group_tests(tests, setup_key, teardown_key);
}
