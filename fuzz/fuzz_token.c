/* fuzz_token.c - libFuzzer target for the handshake with tokens: the request
 * head goes through the HTTP reader, then app/auth.c takes the token from
 * ?token= or Authorization: Bearer and codec/token.c verifies it and reads
 * its claims. The first byte chooses: bit 0 the key (an HS256 secret or an
 * ES256 public key), bit 1 --allow-anonymous, bit 2 --jwt-audience and
 * --jwt-issuer, bit 3 whether the token is signed again with the secret,
 * so that mutated claims get past the signature to the claim checks.
 * Checks: a refusal has a status and a one-line reason; an accepted token
 * has a valid sub and claims within their limits. */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/auth.h"
#include "codec/http.h"
#include "core/names.h"

#define FUZZ_SECRET "fuzz-secret-0123456789abcdef-0123"
#define FUZZ_NOW 1800000000LL

static const char ec_public[] = "-----BEGIN PUBLIC KEY-----\n"
                                "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEnlDdOomMfne8Sd6zoSLq1W/LsdQr\n"
                                "XAeO/fLElpKKiWNLu9RW07PG3xG2y1jFfDaW0kea2FPoJpRxj5w+ou/xTg==\n"
                                "-----END PUBLIC KEY-----\n";

static struct token_key *hs_key, *es_key;

static void check(const struct auth_result *r)
{
    if (r->status) {
        if ((r->status != 400 && r->status != 401 && r->status != 503) || !r->reason[0] || strchr(r->reason, '\n') ||
            r->has_token)
            abort();
        return;
    }
    if (!r->has_token) {
        if (r->user[0])
            abort();
        return;
    }
    const struct token_claims *c = &r->claims;
    if (strcmp(r->user, c->sub) || !name_valid(c->sub, strlen(c->sub)) ||
        (c->rights.rooms && !name_patterns_valid(c->rights.rooms)) ||
        (c->rights.publish && !name_patterns_valid(c->rights.publish)) ||
        (c->tenant && (strlen(c->tenant) > TOKEN_TENANT_MAX || !name_valid(c->tenant, strlen(c->tenant)))) ||
        (c->info && (strlen(c->info) > TOKEN_INFO_MAX || c->info[0] != '{')) ||
        (c->has_exp && c->exp + 5 <= FUZZ_NOW))
        abort();
}

static void decide(const struct config *cfg, const struct token_key *key, const struct http_request *req)
{
    struct auth_result r;
    auth_handshake(cfg, key, req, FUZZ_NOW, &r);
    check(&r);
    token_claims_free(&r.claims);
}

/* The request with its token's first two parts signed with the secret, in
 * ?token=. */
static void resigned(const struct config *cfg, const struct http_request *req)
{
    char token[TOKEN_MAX_LEN + 1];
    const char *t = http_query_get(req->query, "token", token, sizeof token) >= 0 ? token : http_bearer(req);
    const char *dot = t ? strrchr(t, '.') : NULL;
    if (!dot || (size_t)(dot - t) > TOKEN_MAX_LEN)
        return;
    unsigned char mac[32];
    unsigned int mac_len = 0;
    HMAC(EVP_sha256(), FUZZ_SECRET, sizeof FUZZ_SECRET - 1, (const unsigned char *)t, (size_t)(dot - t), mac,
         &mac_len);
    char sig[48], query[TOKEN_MAX_LEN + 64];
    int n = EVP_EncodeBlock((unsigned char *)sig, mac, (int)mac_len);
    while (n > 0 && sig[n - 1] == '=')
        sig[--n] = '\0';
    for (char *p = sig; *p; p++)
        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
    snprintf(query, sizeof query, "token=%.*s.%s", (int)(dot - t), t, sig);
    struct http_request copy = *req;
    copy.query = query;
    copy.authorization = NULL;
    decide(cfg, hs_key, &copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!hs_key) {
        const char *why;
        hs_key = token_key_secret(FUZZ_SECRET, sizeof FUZZ_SECRET - 1);
        es_key = token_key_pem(ec_public, sizeof ec_public - 1, &why);
        if (!hs_key || !es_key)
            abort();
    }
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    static struct config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.auth = CONFIG_AUTH_JWT;
    cfg.jwt_leeway = 5;
    cfg.allow_anonymous = (flags & 2) != 0;
    strcpy(cfg.anonymous_rooms, "lobby,public:*");
    if (flags & 4) {
        strcpy(cfg.jwt_audience, "fuzz");
        strcpy(cfg.jwt_issuer, "fuzzer");
    }

    struct http_reader *r = http_reader_create(TOKEN_MAX_LEN + 512, 0);
    size_t used;
    if (!r)
        return 0;
    if (http_reader_feed(r, (const char *)data + 1, size - 1, &used) == HTTP_READ_DONE) {
        const struct http_request *req = http_reader_request(r);
        decide(&cfg, flags & 1 ? es_key : hs_key, req);
        if (flags & 8)
            resigned(&cfg, req);
    }
    http_reader_destroy(r);
    return 0;
}
