/* token.h - the JSON Web Tokens of docs/protocol.md section 1a: the server's
 * key (an HS256 secret, or an RSA or EC P-256 public key in PEM), the
 * verification of one token (its shape, its alg against the key, the
 * signature through libjwt, exp, nbf, aud, iss) with its claims read into a
 * struct token_claims, and the signing of an HS256 token (`wsfan token`).
 * Pure: the caller reads the key file and says what time it is. A key is
 * read-only once made, so any thread may verify with it. Does not know
 * connections or rooms: app/auth.c decides what the claims allow. */
#ifndef WSFAN_TOKEN_H
#define WSFAN_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include "core/names.h"

#define TOKEN_MAX_LEN 8192   /* longer tokens are malformed (a request head holds 8 KiB) */
#define TOKEN_TENANT_MAX 64  /* bytes of the tenant claim */
#define TOKEN_INFO_MAX 1024  /* bytes of the info claim as compact JSON */
#define TOKEN_WHY_MAX 160    /* a refusal's line, NUL included */

enum token_alg { TOKEN_HS256, TOKEN_RS256, TOKEN_ES256 };

/* Why a token is refused. Each has its own line (token_verify's why), which
 * the 401 body and the token_invalid error carry. */
enum token_result {
    TOKEN_OK = 0,
    TOKEN_MALFORMED = -1,       /* not three base64url parts of JSON objects, or too long */
    TOKEN_WRONG_ALG = -2,       /* alg is not the one of the server's key ("none" included) */
    TOKEN_BAD_SIGNATURE = -3,
    TOKEN_EXPIRED = -4,         /* exp + leeway has passed */
    TOKEN_NOT_YET_VALID = -5,   /* nbf - leeway has not come */
    TOKEN_WRONG_AUDIENCE = -6,
    TOKEN_WRONG_ISSUER = -7,
    TOKEN_BAD_SUB = -8,         /* sub missing or not a user id (section 4) */
    TOKEN_BAD_CLAIM = -9,       /* a claim of the wrong type or out of its limits */
    TOKEN_NOMEM = -10,
};

struct token_key;

/* An HS256 key of the len bytes of secret (copied). NULL when out of
 * memory. */
struct token_key *token_key_secret(const char *secret, size_t len);

/* A key from the PEM text of a public key (copied): RSA of 2048 bits or
 * more for RS256, EC on P-256 for ES256. NULL with *why set (a static line
 * that says what to fix) when it is neither. */
struct token_key *token_key_pem(const char *pem, size_t len, const char **why);

void token_key_destroy(struct token_key *key);

enum token_alg token_key_alg(const struct token_key *key);

/* "HS256", "RS256" or "ES256". */
const char *token_alg_name(enum token_alg alg);

/* What a verification checks besides the signature. */
struct token_rules {
    const struct token_key *key;
    int64_t now;           /* unix seconds */
    int leeway;            /* seconds of slack on exp and nbf */
    const char *audience;  /* aud must be it or list it; NULL or "": not checked */
    const char *issuer;    /* iss must be it; NULL or "": not checked */
};

/* What a token allows (app/auth.c reads them). Room patterns are comma
 * lists (core/names.h), owned; NULL when the claim is absent: none. */
struct token_rights {
    char *rooms;
    char *publish;
    uint8_t send, broadcast;
};

/* The claims of a verified token. Strings are owned: token_claims_free. */
struct token_claims {
    char sub[NAME_MAX_LEN + 1];
    int has_exp;
    int64_t exp;                /* unix seconds, when has_exp */
    char *tenant;               /* NULL when absent */
    char *info;                 /* the object as compact JSON text, NULL when absent */
    struct token_rights rights;
};

/* Verifies the len bytes of token against rules and reads its claims into
 * *claims. Returns TOKEN_OK, or a TOKEN_* with why set to one line that
 * names the reason ("token expired", "bad signature", ...); claims then
 * holds nothing to free. The token is borrowed until return. */
int token_verify(const char *token, size_t len, const struct token_rules *rules, struct token_claims *claims,
                 char why[TOKEN_WHY_MAX]);

/* Frees the strings of claims and clears them; the struct is the caller's. */
void token_claims_free(struct token_claims *claims);

/* Frees the strings of rights; the struct is the caller's. */
void token_rights_free(struct token_rights *rights);

/* An HS256 token of the JSON object text claims, signed with key (an
 * HS256 key). Returns malloc'ed text, or NULL when claims is not a JSON
 * object or memory ran out. */
char *token_sign(const struct token_key *key, const char *claims);

#endif
