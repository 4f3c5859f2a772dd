/* token.c - JSON Web Tokens: keys, verification, claims, signing. See
 * token.h. libjwt 1.10 verifies signatures but checks nothing else: it
 * takes the alg the token names, whatever the key, and compares HMACs with
 * strcmp. So the token's shape and alg are checked here first (an HS256
 * token is never checked against a public key used as a secret, "none" is
 * never taken), an HMAC is compared in constant time before libjwt sees
 * it, and the claims are read here from the payload with jansson. */
#include "codec/token.h"

#include <errno.h>
#include <jansson.h>
#include <jwt.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct token_key {
    enum token_alg alg;
    size_t len;
    unsigned char bytes[]; /* the secret, or the PEM text, as libjwt takes them */
};

static const char *const alg_names[] = {[TOKEN_HS256] = "HS256", [TOKEN_RS256] = "RS256", [TOKEN_ES256] = "ES256"};

const char *token_alg_name(enum token_alg alg) { return alg_names[alg]; }

enum token_alg token_key_alg(const struct token_key *key) { return key->alg; }

static struct token_key *key_create(enum token_alg alg, const void *bytes, size_t len)
{
    struct token_key *key = malloc(sizeof *key + len);
    if (!key)
        return NULL;
    key->alg = alg;
    key->len = len;
    memcpy(key->bytes, bytes, len);
    return key;
}

struct token_key *token_key_secret(const char *secret, size_t len)
{
    return key_create(TOKEN_HS256, secret, len);
}

/* The alg a public key is for, or -1 with *why set. */
static int pem_alg(EVP_PKEY *pkey, const char **why)
{
    char group[32];
    switch (EVP_PKEY_get_base_id(pkey)) {
    case EVP_PKEY_RSA:
        if (EVP_PKEY_get_bits(pkey) >= 2048)
            return TOKEN_RS256;
        *why = "an RSA key of fewer than 2048 bits: use a key of 2048 bits or more";
        return -1;
    case EVP_PKEY_EC:
        if (EVP_PKEY_get_group_name(pkey, group, sizeof group, NULL) && !strcmp(group, "prime256v1"))
            return TOKEN_ES256;
        *why = "an EC key on a curve other than P-256: ES256 needs a P-256 (prime256v1) key";
        return -1;
    default:
        *why = "neither an RSA nor an EC key: RS256 needs an RSA key, ES256 an EC P-256 key";
        return -1;
    }
}

struct token_key *token_key_pem(const char *pem, size_t len, const char **why)
{
    struct token_key *key = NULL;
    EVP_PKEY *pkey = NULL;
    BIO *bio = len <= 1 << 20 ? BIO_new_mem_buf(pem, (int)len) : NULL;
    *why = "not a PEM public key (-----BEGIN PUBLIC KEY-----); from a private key, make one with "
           "openssl pkey -in KEY -pubout";
    if (!bio || !(pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL)))
        goto done;
    int alg = pem_alg(pkey, why);
    if (alg < 0)
        goto done;
    if (!(key = key_create((enum token_alg)alg, pem, len)))
        *why = "out of memory";
done:
    EVP_PKEY_free(pkey);
    BIO_free(bio);
    ERR_clear_error();
    return key;
}

void token_key_destroy(struct token_key *key)
{
    if (key)
        OPENSSL_cleanse(key->bytes, key->len);
    free(key);
}

/* ---- verification ---------------------------------------------------------- */

static int refuse(char why[TOKEN_WHY_MAX], int result, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int refuse(char why[TOKEN_WHY_MAX], int result, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, TOKEN_WHY_MAX, fmt, ap);
    va_end(ap);
    return result;
}

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '-' ? 62 : c == '_' ? 63 : -1;
}

/* Decodes s[0..len), base64url without padding (RFC 7515 section 2), into
 * out (room for len bytes). Returns the bytes decoded, or -1 unless s is
 * the one canonical encoding of them. */
static long b64url_decode(const char *s, size_t len, unsigned char *out)
{
    uint32_t acc = 0;
    int bits = 0;
    long n = 0;
    if (len % 4 == 1)
        return -1;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_value((unsigned char)s[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
        }
        acc &= (1u << bits) - 1;
    }
    return acc ? -1 : n;
}

/* The JSON object that part[0..len) encodes, or NULL. Duplicate keys are
 * refused: two readers of one token must not see two different claims. */
static json_t *decode_object(const char *part, size_t len, unsigned char *scratch)
{
    long n = b64url_decode(part, len, scratch);
    if (n < 0)
        return NULL;
    json_t *v = json_loadb((const char *)scratch, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
    if (v && !json_is_object(v)) {
        json_decref(v);
        return NULL;
    }
    return v;
}

/* Checks the protected header: its alg must be the key's, and nothing in it
 * may ask for processing this server does not do. */
static int check_header(json_t *head, const struct token_key *key, char why[TOKEN_WHY_MAX])
{
    json_t *alg = json_object_get(head, "alg");
    json_t *typ = json_object_get(head, "typ");
    if (!json_is_string(alg))
        return refuse(why, TOKEN_MALFORMED, "malformed token: the header has no alg");
    if (typ && !(json_is_string(typ) && !strcasecmp(json_string_value(typ), "JWT")))
        return refuse(why, TOKEN_MALFORMED, "malformed token: the header's typ is not JWT");
    if (json_object_get(head, "crit"))
        return refuse(why, TOKEN_MALFORMED, "malformed token: crit header extensions are not supported");
    if (strcmp(json_string_value(alg), token_alg_name(key->alg)))
        return refuse(why, TOKEN_WRONG_ALG, "wrong algorithm: this server takes %s tokens only",
                      token_alg_name(key->alg));
    return TOKEN_OK;
}

/* For HS256: the signature sig[0..sig_len) of signed[0..signed_len) is the
 * HMAC, compared in constant time (libjwt's strcmp would tell an attacker
 * how much of a guess was right). */
static int hmac_matches(const struct token_key *key, const char *signed_part, size_t signed_len, const char *sig,
                        size_t sig_len)
{
    unsigned char want[EVP_MAX_MD_SIZE], given[64];
    unsigned int want_len = 0;
    if (sig_len > 86 || !HMAC(EVP_sha256(), key->bytes, (int)key->len, (const unsigned char *)signed_part,
                              signed_len, want, &want_len))
        return 0;
    long n = b64url_decode(sig, sig_len, given);
    return n == (long)want_len && CRYPTO_memcmp(given, want, want_len) == 0;
}

/* libjwt checks the signature of the NUL-terminated token. */
static int signature_ok(const struct token_key *key, const char *token, size_t len, const char *sig)
{
    if (key->alg == TOKEN_HS256 && !hmac_matches(key, token, (size_t)(sig - 1 - token), sig, len - (size_t)(sig - token)))
        return TOKEN_BAD_SIGNATURE;
    char *text = strndup(token, len);
    if (!text)
        return TOKEN_NOMEM;
    jwt_t *jwt = NULL;
    int r = jwt_decode(&jwt, text, key->bytes, (int)key->len);
    jwt_free(jwt);
    free(text);
    ERR_clear_error();
    return r == 0 ? TOKEN_OK : r == ENOMEM ? TOKEN_NOMEM : TOKEN_BAD_SIGNATURE;
}

/* A NumericDate claim (RFC 7519 section 2): *present tells whether it is
 * there. Returns 0, or -1 when it is not a number. */
static int numeric_date(json_t *claims, const char *name, int *present, int64_t *out)
{
    json_t *v = json_object_get(claims, name);
    *present = v != NULL;
    if (!v)
        return 0;
    if (!json_is_number(v))
        return -1;
    double d = floor(json_number_value(v));
    /* Far past or future dates stay far, without overflow. */
    *out = d > 1e15 ? (int64_t)1e15 : d < -1e15 ? (int64_t)-1e15 : (int64_t)d;
    return 0;
}

static int check_times(json_t *claims, const struct token_rules *rules, struct token_claims *out,
                       char why[TOKEN_WHY_MAX])
{
    int has_nbf, has_iat;
    int64_t nbf, iat;
    if (numeric_date(claims, "exp", &out->has_exp, &out->exp))
        return refuse(why, TOKEN_BAD_CLAIM, "invalid claim exp: must be a number of seconds since 1970");
    if (numeric_date(claims, "nbf", &has_nbf, &nbf))
        return refuse(why, TOKEN_BAD_CLAIM, "invalid claim nbf: must be a number of seconds since 1970");
    if (numeric_date(claims, "iat", &has_iat, &iat))
        return refuse(why, TOKEN_BAD_CLAIM, "invalid claim iat: must be a number of seconds since 1970");
    if (out->has_exp && rules->now >= out->exp + rules->leeway)
        return refuse(why, TOKEN_EXPIRED, "token expired");
    if (has_nbf && rules->now + rules->leeway < nbf)
        return refuse(why, TOKEN_NOT_YET_VALID, "token not yet valid (nbf is in the future)");
    return TOKEN_OK;
}

/* aud (a string or an array of strings) must name the audience, when one
 * is set; iss (a string) must be the issuer, when one is set. */
static int check_audience_issuer(json_t *claims, const struct token_rules *rules, char why[TOKEN_WHY_MAX])
{
    json_t *aud = json_object_get(claims, "aud"), *iss = json_object_get(claims, "iss"), *item;
    size_t i;
    int named = 0;
    if (aud && !json_is_string(aud) && !json_is_array(aud))
        return refuse(why, TOKEN_BAD_CLAIM, "invalid claim aud: must be a string or an array of strings");
    if (json_is_string(aud))
        named = rules->audience && !strcmp(json_string_value(aud), rules->audience);
    json_array_foreach(aud, i, item) {
        if (!json_is_string(item))
            return refuse(why, TOKEN_BAD_CLAIM, "invalid claim aud: must be a string or an array of strings");
        named |= rules->audience && !strcmp(json_string_value(item), rules->audience);
    }
    if (iss && !json_is_string(iss))
        return refuse(why, TOKEN_BAD_CLAIM, "invalid claim iss: must be a string");
    if (rules->audience && rules->audience[0] && !named)
        return refuse(why, TOKEN_WRONG_AUDIENCE, "wrong audience: aud does not name this server's audience");
    if (rules->issuer && rules->issuer[0] && !(iss && !strcmp(json_string_value(iss), rules->issuer)))
        return refuse(why, TOKEN_WRONG_ISSUER, "wrong issuer: iss is not this server's issuer");
    return TOKEN_OK;
}

/* An array of room patterns as a comma list in *out (NULL when absent). */
static int read_patterns(json_t *claims, const char *name, char **out, char why[TOKEN_WHY_MAX])
{
    json_t *v = json_object_get(claims, name), *item;
    size_t i, total = 0;
    if (!v)
        return TOKEN_OK;
    if (!json_is_array(v))
        goto bad;
    json_array_foreach(v, i, item) {
        if (!json_is_string(item) || !name_pattern_valid(json_string_value(item), json_string_length(item)))
            goto bad;
        total += json_string_length(item) + 1;
    }
    if (!(*out = malloc(total + 1)))
        return refuse(why, TOKEN_NOMEM, "out of memory");
    char *p = *out;
    json_array_foreach(v, i, item) {
        if (i)
            *p++ = ',';
        memcpy(p, json_string_value(item), json_string_length(item));
        p += json_string_length(item);
    }
    *p = '\0';
    return TOKEN_OK;
bad:
    return refuse(why, TOKEN_BAD_CLAIM,
                  "invalid claim %s: must be an array of room patterns (an id, a prefix ending in *, or *)", name);
}

static int read_flag(json_t *claims, const char *name, uint8_t *out, char why[TOKEN_WHY_MAX])
{
    json_t *v = json_object_get(claims, name);
    if (v && !json_is_boolean(v))
        return refuse(why, TOKEN_BAD_CLAIM, "invalid claim %s: must be true or false", name);
    *out = json_is_true(v);
    return TOKEN_OK;
}

static int read_tenant(json_t *claims, struct token_claims *out, char why[TOKEN_WHY_MAX])
{
    json_t *v = json_object_get(claims, "tenant");
    if (!v)
        return TOKEN_OK;
    if (!json_is_string(v) || json_string_length(v) > TOKEN_TENANT_MAX ||
        !name_valid(json_string_value(v), json_string_length(v)))
        return refuse(why, TOKEN_BAD_CLAIM,
                      "invalid claim tenant: must be 1 to %d characters of A-Z a-z 0-9 _ . : -", TOKEN_TENANT_MAX);
    if (!(out->tenant = strdup(json_string_value(v))))
        return refuse(why, TOKEN_NOMEM, "out of memory");
    return TOKEN_OK;
}

static int read_info(json_t *claims, struct token_claims *out, char why[TOKEN_WHY_MAX])
{
    json_t *v = json_object_get(claims, "info");
    if (!v)
        return TOKEN_OK;
    if (!json_is_object(v))
        return refuse(why, TOKEN_BAD_CLAIM, "invalid claim info: must be a JSON object");
    if (!(out->info = json_dumps(v, JSON_COMPACT)))
        return refuse(why, TOKEN_NOMEM, "out of memory");
    if (strlen(out->info) > TOKEN_INFO_MAX)
        return refuse(why, TOKEN_BAD_CLAIM, "invalid claim info: at most %d bytes as JSON", TOKEN_INFO_MAX);
    return TOKEN_OK;
}

static int read_claims(json_t *claims, const struct token_rules *rules, struct token_claims *out,
                       char why[TOKEN_WHY_MAX])
{
    json_t *sub = json_object_get(claims, "sub");
    int r;
    if ((r = check_times(claims, rules, out, why)) || (r = check_audience_issuer(claims, rules, why)))
        return r;
    if (!json_is_string(sub) || !name_valid(json_string_value(sub), json_string_length(sub)))
        return refuse(why, TOKEN_BAD_SUB,
                      "missing or invalid sub: it must be a user id of 1 to 128 characters of A-Z a-z 0-9 _ . : -");
    strcpy(out->sub, json_string_value(sub));
    if ((r = read_patterns(claims, "rooms", &out->rights.rooms, why)) ||
        (r = read_patterns(claims, "publish", &out->rights.publish, why)) ||
        (r = read_flag(claims, "send", &out->rights.send, why)) ||
        (r = read_flag(claims, "broadcast", &out->rights.broadcast, why)) || (r = read_tenant(claims, out, why)) ||
        (r = read_info(claims, out, why)))
        return r;
    return TOKEN_OK;
}

int token_verify(const char *token, size_t len, const struct token_rules *rules, struct token_claims *claims,
                 char why[TOKEN_WHY_MAX])
{
    memset(claims, 0, sizeof *claims);
    if (len > TOKEN_MAX_LEN)
        return refuse(why, TOKEN_MALFORMED, "malformed token: longer than %d bytes", TOKEN_MAX_LEN);
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (!dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)))
        return refuse(why, TOKEN_MALFORMED, "malformed token: not three base64url parts separated by dots");
    const char *sig = dot2 + 1;
    unsigned char *scratch = malloc(len + 1);
    json_t *head = NULL, *payload = NULL;
    int r;
    if (!scratch) {
        r = refuse(why, TOKEN_NOMEM, "out of memory");
        goto done;
    }
    if (!(head = decode_object(token, (size_t)(dot1 - token), scratch))) {
        r = refuse(why, TOKEN_MALFORMED, "malformed token: the header is not base64url of a JSON object");
        goto done;
    }
    if ((r = check_header(head, rules->key, why)))
        goto done;
    if (!(payload = decode_object(dot1 + 1, (size_t)(dot2 - dot1 - 1), scratch)) ||
        b64url_decode(sig, len - (size_t)(sig - token), scratch) < 0) {
        r = refuse(why, TOKEN_MALFORMED, "malformed token: the payload is not base64url of a JSON object");
        goto done;
    }
    if ((r = signature_ok(rules->key, token, len, sig))) {
        refuse(why, r, "%s", r == TOKEN_NOMEM ? "out of memory" : "bad signature");
        goto done;
    }
    r = read_claims(payload, rules, claims, why);
done:
    if (r)
        token_claims_free(claims);
    json_decref(payload);
    json_decref(head);
    free(scratch);
    return r;
}

void token_rights_free(struct token_rights *rights)
{
    free(rights->rooms);
    free(rights->publish);
    rights->rooms = rights->publish = NULL;
}

void token_claims_free(struct token_claims *claims)
{
    token_rights_free(&claims->rights);
    free(claims->tenant);
    free(claims->info);
    claims->tenant = claims->info = NULL;
}

/* ---- signing ---------------------------------------------------------------- */

char *token_sign(const struct token_key *key, const char *claims)
{
    jwt_t *jwt = NULL;
    char *token = NULL;
    /* jwt_add_grants_json refuses anything but an object. */
    if (key->alg == TOKEN_HS256 && !jwt_new(&jwt) && !jwt_add_grants_json(jwt, claims) &&
        !jwt_set_alg(jwt, JWT_ALG_HS256, key->bytes, (int)key->len))
        token = jwt_encode_str(jwt);
    jwt_free(jwt);
    return token;
}
