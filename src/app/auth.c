/* auth.c - the handshake's identity and the rights of each command. See
 * auth.h. */
#include "app/auth.h"

#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "core/names.h"

static const char challenge[] = "WWW-Authenticate: Bearer realm=\"wsfan\"\r\n";
static const char challenge_invalid[] = "WWW-Authenticate: Bearer realm=\"wsfan\", error=\"invalid_token\"\r\n";

static void refuse(struct auth_result *out, int status, const char *headers, const char *reason)
{
    out->status = status;
    out->headers = headers;
    snprintf(out->reason, sizeof out->reason, "%s", reason);
}

struct token_rules auth_rules(const struct config *cfg, const struct token_key *key, int64_t now)
{
    return (struct token_rules){
        .key = key,
        .now = now,
        .leeway = cfg->jwt_leeway,
        .audience = cfg->jwt_audience,
        .issuer = cfg->jwt_issuer,
    };
}

/* Mode jwt: the token of ?token= (first) or of Authorization: Bearer. */
static void handshake_jwt(const struct config *cfg, const struct token_key *key, const struct http_request *req,
                          int64_t now, struct auth_result *out)
{
    char query_token[TOKEN_MAX_LEN + 1];
    int len = http_query_get(req->query, "token", query_token, sizeof query_token);
    const char *token = len >= 0 ? query_token : http_bearer(req);
    if (len == -2) {
        refuse(out, 401, challenge_invalid, "malformed token: badly percent-encoded, or longer than 8192 bytes");
        return;
    }
    if (!token) {
        if (!cfg->allow_anonymous)
            refuse(out, 401, challenge, "token missing: send ?token=<jwt> or Authorization: Bearer <jwt>");
        return;
    }
    struct token_rules rules = auth_rules(cfg, key, now);
    int r = token_verify(token, len >= 0 ? (size_t)len : strlen(token), &rules, &out->claims, out->reason);
    if (r == TOKEN_NOMEM) {
        refuse(out, 503, NULL, "server out of memory");
    } else if (r) {
        out->status = 401;
        out->headers = challenge_invalid;
    } else {
        out->has_token = 1;
        strcpy(out->user, out->claims.sub);
    }
}

void auth_handshake(const struct config *cfg, const struct token_key *key, const struct http_request *req,
                    int64_t now, struct auth_result *out)
{
    memset(out, 0, sizeof *out);
    char user[NAME_MAX_LEN + 1];
    int user_len = http_query_get(req->query, "user", user, sizeof user);
    if (cfg->auth == CONFIG_AUTH_JWT) {
        /* The token says who the client is; a name beside it is a mistake
         * or an attempt. */
        if (user_len != -1)
            refuse(out, 400, NULL, "?user= is not accepted with --auth jwt: send ?token=<jwt> instead");
        else
            handshake_jwt(cfg, key, req, now, out);
        return;
    }
    if (user_len == -2 || (user_len >= 0 && !name_valid(user, (size_t)user_len)))
        refuse(out, 400, NULL, wsfan_strerror(WSFAN_EUSER_INVALID));
    else if (user_len > 0)
        strcpy(out->user, user);
}

/* ---- rights --------------------------------------------------------------- */

/* Mode jwt without a token: --anonymous-rooms to join and read, nothing else. */
static int check_anonymous(const struct config *cfg, enum auth_action action, const char *room, const char **why)
{
    switch (action) {
    case AUTH_JOIN:
    case AUTH_READ:
        if (name_patterns_match(cfg->anonymous_rooms, room))
            return 0;
        *why = "anonymous connections may not join or read this room";
        return WSFAN_EFORBIDDEN;
    case AUTH_PUBLISH: *why = "anonymous connections may not publish"; return WSFAN_EFORBIDDEN;
    case AUTH_SEND: *why = "anonymous connections may not send"; return WSFAN_EFORBIDDEN;
    case AUTH_BROADCAST: *why = "anonymous connections may not broadcast"; return WSFAN_EFORBIDDEN;
    }
    return WSFAN_EFORBIDDEN;
}

/* Mode jwt with a token: its claims decide, --allow-broadcast included. */
static int check_token(const struct token_rights *rights, enum auth_action action, const char *room,
                       const char **why)
{
    switch (action) {
    case AUTH_JOIN:
    case AUTH_READ:
        *why = "the token's rooms do not include this room";
        return rights->rooms && name_patterns_match(rights->rooms, room) ? 0 : WSFAN_EFORBIDDEN;
    case AUTH_PUBLISH:
        *why = "the token's publish does not include this room";
        return rights->publish && name_patterns_match(rights->publish, room) ? 0 : WSFAN_EFORBIDDEN;
    case AUTH_SEND:
        *why = "the token does not grant send";
        return rights->send ? 0 : WSFAN_EFORBIDDEN;
    case AUTH_BROADCAST:
        *why = "the token does not grant broadcast";
        return rights->broadcast ? 0 : WSFAN_EFORBIDDEN;
    }
    return WSFAN_EFORBIDDEN;
}

int auth_check(const struct config *cfg, const struct token_rights *rights, enum auth_action action,
               const char *room, int member, const char **why)
{
    int r = 0;
    if (rights)
        r = check_token(rights, action, room, why);
    else if (cfg->auth == CONFIG_AUTH_JWT)
        r = check_anonymous(cfg, action, room, why);
    else if (action == AUTH_BROADCAST && !cfg->allow_broadcast) {
        *why = "broadcast is not allowed on this server";
        r = WSFAN_EFORBIDDEN;
    }
    if (r)
        return r;
    int needs_member = action == AUTH_PUBLISH || (action == AUTH_READ && !rights);
    return needs_member && !member ? WSFAN_ENOT_MEMBER : 0;
}
