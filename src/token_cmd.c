/* token_cmd.c - `wsfan token`. See token_cmd.h. The claims come from the
 * flags, and the signed token is then verified as the server verifies
 * one, so that a value the server would refuse is reported here, with the
 * server's own words, rather than as a 401 later. */
#include "token_cmd.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec/token.h"
#include "core/list.h"

#define TTL_DEFAULT 3600
#define TTL_MAX (10LL * 366 * 24 * 3600)

struct token_flags {
    const char *sub, *rooms, *publish, *tenant, *info, *aud, *iss, *secret, *ttl;
    int send, broadcast;
};

static const char usage[] =
    "usage: wsfan token --sub USER [--rooms PATTERNS] [--publish PATTERNS] [--ttl SECONDS] [--send]\n"
    "                   [--broadcast] [--tenant NAME] [--info JSON] [--aud AUDIENCE] [--iss ISSUER]\n"
    "                   [--jwt-secret SECRET]\n\n"
    "Prints an HS256 token for a server run with --auth jwt and the same secret. The secret comes from\n"
    "WSFAN_JWT_SECRET, or --jwt-secret (ps shows flags). PATTERNS are room patterns separated by commas,\n"
    "such as 'general,team-42:*'. --ttl 0 makes a token without exp (default 3600 seconds).\n";

static int fail(const char *flag, const char *what)
{
    fprintf(stderr, "wsfan token: %s: %s\n", flag, what);
    return 2;
}

/* The flag that takes a value, by name, or NULL. */
static const char **value_flag(struct token_flags *f, const char *name, size_t len)
{
    static const char *const names[] = {"sub", "rooms", "publish", "tenant", "info", "aud", "iss", "jwt-secret", "ttl"};
    const char **fields[] = {&f->sub, &f->rooms, &f->publish, &f->tenant, &f->info,
                             &f->aud, &f->iss,   &f->secret,  &f->ttl};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == len && !strncmp(names[i], name, len))
            return fields[i];
    return NULL;
}

/* Returns 0, 1 after --help, or 2 after an error. */
static int parse_flags(int argc, char **argv, struct token_flags *f)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            fputs(usage, stdout);
            return 1;
        }
        if (strncmp(arg, "--", 2))
            return fail(arg, "unexpected argument; options start with -- (see wsfan token --help)");
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        if (!eq && (!strcmp(name, "send") || !strcmp(name, "broadcast"))) {
            *(!strcmp(name, "send") ? &f->send : &f->broadcast) = 1;
            continue;
        }
        const char **field = value_flag(f, name, len);
        if (!field)
            return fail(arg, "unknown option (see wsfan token --help)");
        if (!eq && i + 1 >= argc)
            return fail(arg, "missing value (see wsfan token --help)");
        *field = eq ? eq + 1 : argv[++i];
    }
    if (!f->sub)
        return fail("--sub", "required: the user id the token is for");
    if (!f->secret && !(f->secret = getenv("WSFAN_JWT_SECRET")))
        return fail("--jwt-secret", "no secret: set WSFAN_JWT_SECRET (or pass --jwt-secret) to the server's secret");
    if (!*f->secret)
        return fail("--jwt-secret", "the secret is empty");
    return 0;
}

/* The items of a comma list as a JSON array of strings. */
static json_t *list_array(const char *list)
{
    json_t *a = json_array();
    for (const char *p = *list ? list : NULL; a && p;) {
        const char *item;
        size_t len;
        p = list_next(p, &item, &len);
        json_array_append_new(a, json_stringn(item, len));
    }
    return a;
}

static void set_string(json_t *claims, const char *name, const char *value)
{
    if (value)
        json_object_set_new(claims, name, json_string(value));
}

/* The claims of the flags as compact JSON text (malloc'ed), or NULL after
 * an error line. */
static char *claims_text(const struct token_flags *f, long long now)
{
    char *end;
    errno = 0;
    long long ttl = f->ttl ? strtoll(f->ttl, &end, 10) : TTL_DEFAULT;
    if (f->ttl && (errno || end == f->ttl || *end || ttl < 0 || ttl > TTL_MAX)) {
        fail("--ttl", "expected seconds from 0 (no exp) to ten years");
        return NULL;
    }
    json_error_t jerr;
    json_t *info = f->info ? json_loads(f->info, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    if (f->info && !json_is_object(info)) {
        fail("--info", info ? "must be a JSON object, such as '{\"name\":\"Alice\"}'" : jerr.text);
        json_decref(info);
        return NULL;
    }
    json_t *claims = json_object();
    set_string(claims, "sub", f->sub);
    json_object_set_new(claims, "iat", json_integer(now));
    if (ttl > 0)
        json_object_set_new(claims, "exp", json_integer(now + ttl));
    if (f->rooms)
        json_object_set_new(claims, "rooms", list_array(f->rooms));
    if (f->publish)
        json_object_set_new(claims, "publish", list_array(f->publish));
    if (f->send)
        json_object_set_new(claims, "send", json_true());
    if (f->broadcast)
        json_object_set_new(claims, "broadcast", json_true());
    set_string(claims, "tenant", f->tenant);
    if (info)
        json_object_set_new(claims, "info", info);
    set_string(claims, "aud", f->aud);
    set_string(claims, "iss", f->iss);
    char *text = claims ? json_dumps(claims, JSON_COMPACT) : NULL;
    json_decref(claims);
    if (!text)
        fail("token", "out of memory");
    return text;
}

int token_cmd_main(int argc, char **argv)
{
    struct token_flags f = {0};
    int r = parse_flags(argc, argv, &f);
    if (r)
        return r == 1 ? 0 : r;
    long long now = (long long)time(NULL);
    struct token_key *key = token_key_secret(f.secret, strlen(f.secret));
    char *claims = key ? claims_text(&f, now) : NULL;
    char *token = claims ? token_sign(key, claims) : NULL;
    r = 2;
    if (claims && !token) {
        fail("token", "out of memory");
    } else if (token) {
        struct token_rules rules = {.key = key, .now = now, .audience = f.aud, .issuer = f.iss};
        struct token_claims check;
        char why[TOKEN_WHY_MAX];
        if (token_verify(token, strlen(token), &rules, &check, why)) {
            fprintf(stderr, "wsfan token: the server would refuse this token: %s\n", why);
        } else {
            printf("%s\n", token);
            r = 0;
        }
        token_claims_free(&check);
    }
    free(token);
    free(claims);
    token_key_destroy(key);
    return r;
}
