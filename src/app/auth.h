/* auth.h - who a connection is and what it may do (docs/protocol.md
 * section 1a). At the handshake: the user named by ?user= (--auth none),
 * or the token of ?token= or Authorization: Bearer verified with the
 * server's key (--auth jwt), or an anonymous connection. After it: whether
 * one command is within the connection's rights. Decisions only, over the
 * settings and the token's claims: router.c and client.c act on them.
 * Any thread; nothing here is shared or kept. */
#ifndef WSFAN_AUTH_H
#define WSFAN_AUTH_H

#include <stdint.h>

#include "codec/http.h"
#include "codec/token.h"
#include "core/config.h"

/* What the handshake found: a connection to let in, or the refusal. */
struct auth_result {
    int status;                   /* 0: let in; else the HTTP status to refuse with (400, 401, 503) */
    const char *headers;          /* extra header lines of the refusal (WWW-Authenticate), or NULL */
    char reason[TOKEN_WHY_MAX];   /* the refusal's one-line body */
    char user[NAME_MAX_LEN + 1];  /* "" when anonymous */
    int has_token;
    struct token_claims claims;   /* with a token: the caller owns its strings (token_claims_free) */
};

/* Decides who the upgrade request req is, under cfg with key (the server's
 * key; NULL with --auth none) at now (unix seconds). */
void auth_handshake(const struct config *cfg, const struct token_key *key, const struct http_request *req,
                    int64_t now, struct auth_result *out);

/* The rules a token is verified with under cfg and key at now. */
struct token_rules auth_rules(const struct config *cfg, const struct token_key *key, int64_t now);

enum auth_action {
    AUTH_JOIN,
    AUTH_READ,      /* history and presence of a room */
    AUTH_PUBLISH,
    AUTH_SEND,
    AUTH_BROADCAST,
};

/* Whether a connection may do action (on room, for JOIN, READ and
 * PUBLISH) under cfg. rights are its token's, NULL when it has none (mode
 * none, or an anonymous connection in mode jwt); member tells whether it
 * has joined room or is joining it. Returns 0, WSFAN_EFORBIDDEN with *why
 * set (a static line), or WSFAN_ENOT_MEMBER: rights first, then
 * membership. Publishing always needs membership; reading needs it
 * unless a token's rooms allow the room (docs/protocol.md section 2). */
int auth_check(const struct config *cfg, const struct token_rights *rights, enum auth_action action,
               const char *room, int member, const char **why);

#endif
