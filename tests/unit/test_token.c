/* test_token.c - unit tests of codec/token.c (docs/protocol.md section 1a):
 * keys from a secret or a PEM public key (RSA, EC P-256; others refused),
 * and every kind of bad token with HS256, RS256 and ES256: malformed, bad
 * signature, wrong algorithm (none and every confusion), expired, not yet
 * valid, the leeway, wrong audience or issuer, missing sub, claims of the
 * wrong type; the claims of good ones; and signing. Tokens are made here
 * with libcrypto (HMAC, EVP_DigestSign), not with the code under test. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/token.h"

#define NOW 1800000000LL
#define SECRET "unit-test-secret-0123456789abcdef"

/* ---- making tokens ------------------------------------------------------------ */

static EVP_PKEY *rsa_key, *rsa_other, *ec_key, *ec_other;
static struct token_key *hs_key, *rs_key, *es_key;

static char *b64url(const void *data, size_t len)
{
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    assert_non_null(out);
    int n = EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    while (n > 0 && out[n - 1] == '=')
        n--;
    out[n] = '\0';
    for (char *p = out; *p; p++)
        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
    return out;
}

/* "<b64 header>.<b64 payload>" */
static char *signing_input(const char *header, const char *payload)
{
    char *h = b64url(header, strlen(header)), *p = b64url(payload, strlen(payload));
    char *out;
    assert_true(asprintf(&out, "%s.%s", h, p) > 0);
    free(h);
    free(p);
    return out;
}

static char *with_signature(char *input, const unsigned char *sig, size_t sig_len)
{
    char *s = b64url(sig, sig_len), *out;
    assert_true(asprintf(&out, "%s.%s", input, s) > 0);
    free(s);
    free(input);
    return out;
}

/* An HMAC-SHA256 token of header and payload keyed with key. */
static char *hmac_token(const char *header, const char *payload, const void *key, size_t key_len)
{
    char *input = signing_input(header, payload);
    unsigned char mac[32];
    unsigned int mac_len = 0;
    HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)input, strlen(input), mac, &mac_len);
    return with_signature(input, mac, mac_len);
}

static char *hs(const char *payload)
{
    return hmac_token("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, SECRET, strlen(SECRET));
}

/* An RS256 or ES256 token (the header's alg is alg) signed with pkey;
 * ECDSA signatures become the raw R||S of RFC 7518 section 3.4. */
static char *pkey_token(EVP_PKEY *pkey, const char *alg, const char *payload)
{
    char header[64];
    snprintf(header, sizeof header, "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
    char *input = signing_input(header, payload);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char sig[512], raw[64];
    size_t sig_len = sizeof sig;
    assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pkey), 1);
    assert_int_equal(EVP_DigestSign(md, sig, &sig_len, (const unsigned char *)input, strlen(input)), 1);
    EVP_MD_CTX_free(md);
    if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_EC)
        return with_signature(input, sig, sig_len);
    const unsigned char *p = sig;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)sig_len);
    assert_non_null(es);
    BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32);
    ECDSA_SIG_free(es);
    return with_signature(input, raw, sizeof raw);
}

static char *pem_public(EVP_PKEY *pkey)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data;
    assert_int_equal(PEM_write_bio_PUBKEY(bio, pkey), 1);
    long len = BIO_get_mem_data(bio, &data);
    char *out = strndup(data, (size_t)len);
    BIO_free(bio);
    return out;
}

static struct token_key *key_of(EVP_PKEY *pkey)
{
    char *pem = pem_public(pkey);
    const char *why = NULL;
    struct token_key *key = token_key_pem(pem, strlen(pem), &why);
    free(pem);
    assert_non_null(key);
    return key;
}

static int setup_keys(void **state)
{
    (void)state;
    rsa_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    rsa_other = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    ec_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    ec_other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (!rsa_key || !rsa_other || !ec_key || !ec_other)
        return -1;
    hs_key = token_key_secret(SECRET, strlen(SECRET));
    rs_key = key_of(rsa_key);
    es_key = key_of(ec_key);
    return 0;
}

static int teardown_keys(void **state)
{
    (void)state;
    token_key_destroy(hs_key);
    token_key_destroy(rs_key);
    token_key_destroy(es_key);
    EVP_PKEY_free(rsa_key);
    EVP_PKEY_free(rsa_other);
    EVP_PKEY_free(ec_key);
    EVP_PKEY_free(ec_other);
    return 0;
}

/* ---- verifying ----------------------------------------------------------------- */

static struct token_rules rules_of(const struct token_key *key)
{
    return (struct token_rules){.key = key, .now = NOW, .leeway = 5};
}

/* Verifies token (freed here) with rules; expects result, and why to
 * contain words when it is refused. */
static void expect_rules(char *token, const struct token_rules *rules, int result, const char *words)
{
    struct token_claims claims;
    char why[TOKEN_WHY_MAX] = "";
    int r = token_verify(token, strlen(token), rules, &claims, why);
    if (r != result)
        fail_msg("token %.120s: expected %d, got %d (%s)", token, result, r, why);
    if (words && !strstr(why, words))
        fail_msg("token %.120s: why \"%s\" does not say \"%s\"", token, why, words);
    if (r)
        assert_null(claims.rights.rooms);
    token_claims_free(&claims);
    free(token);
}

static void expect(char *token, const struct token_key *key, int result, const char *words)
{
    struct token_rules rules = rules_of(key);
    expect_rules(token, &rules, result, words);
}

static void test_token_hs256_claims_are_read(void **state)
{
    (void)state;
    char *token = hs("{\"sub\":\"alice\",\"exp\":1800003600,\"iat\":1800000000,\"rooms\":[\"general\",\"team-42:*\","
                     "\"*\"],\"publish\":[\"general\"],\"send\":true,\"broadcast\":false,\"tenant\":\"acme\","
                     "\"info\":{\"name\":\"Alice\", \"avatar\":\"https://x/a.png\"}}");
    struct token_rules rules = rules_of(hs_key);
    struct token_claims c;
    char why[TOKEN_WHY_MAX];
    assert_int_equal(token_verify(token, strlen(token), &rules, &c, why), TOKEN_OK);
    assert_string_equal(c.sub, "alice");
    assert_true(c.has_exp);
    assert_int_equal(c.exp, 1800003600);
    assert_string_equal(c.rights.rooms, "general,team-42:*,*");
    assert_string_equal(c.rights.publish, "general");
    assert_int_equal(c.rights.send, 1);
    assert_int_equal(c.rights.broadcast, 0);
    assert_string_equal(c.tenant, "acme");
    assert_string_equal(c.info, "{\"name\":\"Alice\",\"avatar\":\"https://x/a.png\"}");
    token_claims_free(&c);
    assert_null(c.info);
    free(token);

    /* absent claims: none of the rights, no exp */
    token = hs("{\"sub\":\"bob\"}");
    assert_int_equal(token_verify(token, strlen(token), &rules, &c, why), TOKEN_OK);
    assert_false(c.has_exp);
    assert_null(c.rights.rooms);
    assert_null(c.rights.publish);
    assert_null(c.tenant);
    assert_null(c.info);
    assert_int_equal(c.rights.send | c.rights.broadcast, 0);
    token_claims_free(&c);
    free(token);
    expect(hs("{\"sub\":\"bob\",\"rooms\":[]}"), hs_key, TOKEN_OK, NULL);
}

static void test_token_rs256_and_es256_verify(void **state)
{
    (void)state;
    expect(pkey_token(rsa_key, "RS256", "{\"sub\":\"alice\"}"), rs_key, TOKEN_OK, NULL);
    expect(pkey_token(ec_key, "ES256", "{\"sub\":\"alice\"}"), es_key, TOKEN_OK, NULL);
    assert_int_equal(token_key_alg(rs_key), TOKEN_RS256);
    assert_int_equal(token_key_alg(es_key), TOKEN_ES256);
    assert_int_equal(token_key_alg(hs_key), TOKEN_HS256);
}

static void test_token_malformed(void **state)
{
    char *long_token = malloc(TOKEN_MAX_LEN + 2);
    (void)state;
    memset(long_token, 'a', TOKEN_MAX_LEN + 1);
    long_token[TOKEN_MAX_LEN + 1] = '\0';
    long_token[10] = long_token[20] = '.';
    const char *bad[] = {"", "abc", "a.b", "a.b.c.d", "...", "e30.e30.", "!!!.e30.AA", "e30.e30.A", "e30.e30.+/"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect(strdup(bad[i]), hs_key, TOKEN_MALFORMED, "malformed token");
    expect(long_token, hs_key, TOKEN_MALFORMED, "longer than");
    /* a header that is not an object, not JSON, or without alg */
    expect(hmac_token("[1]", "{\"sub\":\"a\"}", SECRET, strlen(SECRET)), hs_key, TOKEN_MALFORMED, "header");
    expect(hmac_token("{\"alg\":", "{\"sub\":\"a\"}", SECRET, strlen(SECRET)), hs_key, TOKEN_MALFORMED, "header");
    expect(hmac_token("{\"typ\":\"JWT\"}", "{\"sub\":\"a\"}", SECRET, strlen(SECRET)), hs_key, TOKEN_MALFORMED,
           "alg");
    expect(hmac_token("{\"alg\":\"HS256\",\"typ\":\"JWE\"}", "{\"sub\":\"a\"}", SECRET, strlen(SECRET)), hs_key,
           TOKEN_MALFORMED, "typ");
    expect(hmac_token("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", "{\"sub\":\"a\"}", SECRET, strlen(SECRET)), hs_key,
           TOKEN_MALFORMED, "crit");
    /* a payload that is not an object, or repeats a claim */
    expect(hs("[\"sub\"]"), hs_key, TOKEN_MALFORMED, "payload");
    expect(hs("\"alice\""), hs_key, TOKEN_MALFORMED, "payload");
    expect(hs("{\"sub\":\"alice\",\"sub\":\"root\"}"), hs_key, TOKEN_MALFORMED, "payload");
    /* base64 with bits left over after the last byte is not canonical:
     * "e31" would decode to {} like "e30" */
    char *input = signing_input("{\"alg\":\"HS256\"}", "{}");
    assert_string_equal(input + strlen(input) - 4, ".e30");
    input[strlen(input) - 1] = '1';
    expect(with_signature(input, (const unsigned char *)"x", 1), hs_key, TOKEN_MALFORMED, "payload");
}

static void test_token_bad_signature(void **state)
{
    (void)state;
    expect(hmac_token("{\"alg\":\"HS256\"}", "{\"sub\":\"a\"}", "other", 5), hs_key, TOKEN_BAD_SIGNATURE,
           "bad signature");
    expect(pkey_token(rsa_other, "RS256", "{\"sub\":\"a\"}"), rs_key, TOKEN_BAD_SIGNATURE, "bad signature");
    expect(pkey_token(ec_other, "ES256", "{\"sub\":\"a\"}"), es_key, TOKEN_BAD_SIGNATURE, "bad signature");
    /* the right signature of other claims */
    char *good = hs("{\"sub\":\"alice\"}"), *other = hs("{\"sub\":\"admin\"}"), *forged;
    assert_true(asprintf(&forged, "%.*s%s", (int)(strrchr(other, '.') - other), other, strrchr(good, '.')) > 0);
    expect(forged, hs_key, TOKEN_BAD_SIGNATURE, NULL);
    free(good);
    free(other);
    /* no signature at all */
    char *bare = hs("{\"sub\":\"alice\"}");
    strrchr(bare, '.')[1] = '\0';
    expect(bare, hs_key, TOKEN_BAD_SIGNATURE, NULL);
}

static void test_token_wrong_algorithm(void **state)
{
    (void)state;
    char *pem = pem_public(rsa_key);
    /* alg none, whatever the key */
    const struct token_key *keys[] = {hs_key, rs_key, es_key};
    for (size_t i = 0; i < 3; i++) {
        char *none = signing_input("{\"alg\":\"none\",\"typ\":\"JWT\"}", "{\"sub\":\"root\"}");
        expect(with_signature(none, (const unsigned char *)"", 0), keys[i], TOKEN_WRONG_ALG, "wrong algorithm");
        none = signing_input("{\"alg\":\"None\"}", "{\"sub\":\"root\"}");
        expect(with_signature(none, (const unsigned char *)"", 0), keys[i], TOKEN_WRONG_ALG, "wrong algorithm");
    }
    /* HS256 keyed with the server's public key, the classic confusion */
    expect(hmac_token("{\"alg\":\"HS256\"}", "{\"sub\":\"root\"}", pem, strlen(pem)), rs_key, TOKEN_WRONG_ALG,
           "RS256");
    expect(hs("{\"sub\":\"a\"}"), es_key, TOKEN_WRONG_ALG, "ES256");
    expect(pkey_token(rsa_key, "RS256", "{\"sub\":\"a\"}"), hs_key, TOKEN_WRONG_ALG, "HS256");
    expect(pkey_token(rsa_key, "RS256", "{\"sub\":\"a\"}"), es_key, TOKEN_WRONG_ALG, NULL);
    expect(pkey_token(ec_key, "ES256", "{\"sub\":\"a\"}"), rs_key, TOKEN_WRONG_ALG, NULL);
    expect(pkey_token(rsa_key, "RS512", "{\"sub\":\"a\"}"), rs_key, TOKEN_WRONG_ALG, NULL);
    expect(pkey_token(rsa_key, "PS256", "{\"sub\":\"a\"}"), rs_key, TOKEN_WRONG_ALG, NULL);
    expect(hmac_token("{\"alg\":\"hs256\"}", "{\"sub\":\"a\"}", SECRET, strlen(SECRET)), hs_key, TOKEN_WRONG_ALG, NULL);
    expect(hmac_token("{\"alg\":\"HS512\"}", "{\"sub\":\"a\"}", SECRET, strlen(SECRET)), hs_key, TOKEN_WRONG_ALG, NULL);
    free(pem);
}

static char *hs_at(const char *claim, long long at)
{
    char payload[128];
    snprintf(payload, sizeof payload, "{\"sub\":\"alice\",\"%s\":%lld}", claim, at);
    return hs(payload);
}

static void test_token_exp_and_nbf_with_leeway(void **state)
{
    (void)state;
    expect(hs_at("exp", NOW - 10), hs_key, TOKEN_EXPIRED, "token expired");
    expect(hs_at("exp", NOW - 5), hs_key, TOKEN_EXPIRED, NULL);  /* exp + leeway is now: passed */
    expect(hs_at("exp", NOW - 4), hs_key, TOKEN_OK, NULL);       /* within the leeway */
    expect(hs_at("exp", NOW + 60), hs_key, TOKEN_OK, NULL);
    expect(hs_at("nbf", NOW + 10), hs_key, TOKEN_NOT_YET_VALID, "not yet valid");
    expect(hs_at("nbf", NOW + 5), hs_key, TOKEN_OK, NULL);
    expect(hs_at("nbf", NOW - 60), hs_key, TOKEN_OK, NULL);
    expect(hs("{\"sub\":\"alice\",\"exp\":1800000010.5}"), hs_key, TOKEN_OK, NULL);
    expect(hs("{\"sub\":\"alice\",\"exp\":1e300}"), hs_key, TOKEN_OK, NULL);
    struct token_rules strict = rules_of(hs_key);
    strict.leeway = 0;
    expect_rules(hs_at("exp", NOW), &strict, TOKEN_EXPIRED, NULL);
    expect_rules(hs_at("exp", NOW + 1), &strict, TOKEN_OK, NULL);
    expect_rules(hs_at("nbf", NOW + 1), &strict, TOKEN_NOT_YET_VALID, NULL);
    /* RS256 and ES256 go through the same checks */
    expect(pkey_token(rsa_key, "RS256", "{\"sub\":\"a\",\"exp\":1}"), rs_key, TOKEN_EXPIRED, NULL);
    expect(pkey_token(ec_key, "ES256", "{\"sub\":\"a\",\"nbf\":1900000000}"), es_key, TOKEN_NOT_YET_VALID, NULL);
}

static void test_token_audience_and_issuer(void **state)
{
    (void)state;
    struct token_rules r = rules_of(hs_key);
    r.audience = "chat";
    r.issuer = "auth";
    expect_rules(hs("{\"sub\":\"a\",\"aud\":\"chat\",\"iss\":\"auth\"}"), &r, TOKEN_OK, NULL);
    expect_rules(hs("{\"sub\":\"a\",\"aud\":[\"x\",\"chat\"],\"iss\":\"auth\"}"), &r, TOKEN_OK, NULL);
    expect_rules(hs("{\"sub\":\"a\",\"aud\":\"chatx\",\"iss\":\"auth\"}"), &r, TOKEN_WRONG_AUDIENCE, "wrong audience");
    expect_rules(hs("{\"sub\":\"a\",\"aud\":[],\"iss\":\"auth\"}"), &r, TOKEN_WRONG_AUDIENCE, NULL);
    expect_rules(hs("{\"sub\":\"a\",\"iss\":\"auth\"}"), &r, TOKEN_WRONG_AUDIENCE, NULL);
    expect_rules(hs("{\"sub\":\"a\",\"aud\":\"chat\",\"iss\":\"other\"}"), &r, TOKEN_WRONG_ISSUER, "wrong issuer");
    expect_rules(hs("{\"sub\":\"a\",\"aud\":\"chat\"}"), &r, TOKEN_WRONG_ISSUER, NULL);
    expect_rules(hs("{\"sub\":\"a\",\"aud\":[\"chat\",1],\"iss\":\"auth\"}"), &r, TOKEN_BAD_CLAIM, "aud");
    /* not set: anything well-typed goes, a wrong type does not */
    expect(hs("{\"sub\":\"a\",\"aud\":\"whatever\",\"iss\":\"whoever\"}"), hs_key, TOKEN_OK, NULL);
    expect(hs("{\"sub\":\"a\",\"aud\":{}}"), hs_key, TOKEN_BAD_CLAIM, "aud");
    expect(hs("{\"sub\":\"a\",\"iss\":1}"), hs_key, TOKEN_BAD_CLAIM, "iss");
}

static void test_token_sub_is_required_and_an_id(void **state)
{
    char payload[256];
    (void)state;
    expect(hs("{}"), hs_key, TOKEN_BAD_SUB, "missing or invalid sub");
    expect(hs("{\"sub\":42}"), hs_key, TOKEN_BAD_SUB, NULL);
    expect(hs("{\"sub\":\"\"}"), hs_key, TOKEN_BAD_SUB, NULL);
    expect(hs("{\"sub\":\"alice smith\"}"), hs_key, TOKEN_BAD_SUB, NULL);
    expect(hs("{\"sub\":\"a\\u0000b\"}"), hs_key, TOKEN_MALFORMED, NULL); /* jansson refuses NUL */
    snprintf(payload, sizeof payload, "{\"sub\":\"%0129d\"}", 0);
    expect(hs(payload), hs_key, TOKEN_BAD_SUB, NULL);
    snprintf(payload, sizeof payload, "{\"sub\":\"%0128d\"}", 0);
    expect(hs(payload), hs_key, TOKEN_OK, NULL);
}

static void test_token_claims_of_the_wrong_type(void **state)
{
    static const struct {
        const char *payload, *words;
    } bad[] = {
        {"{\"sub\":\"a\",\"rooms\":\"general\"}", "rooms"},
        {"{\"sub\":\"a\",\"rooms\":null}", "rooms"},
        {"{\"sub\":\"a\",\"rooms\":[1]}", "rooms"},
        {"{\"sub\":\"a\",\"rooms\":[\"a*b\"]}", "rooms"},
        {"{\"sub\":\"a\",\"rooms\":[\"\"]}", "rooms"},
        {"{\"sub\":\"a\",\"rooms\":[\"a,b\"]}", "rooms"},
        {"{\"sub\":\"a\",\"publish\":{}}", "publish"},
        {"{\"sub\":\"a\",\"send\":\"true\"}", "send"},
        {"{\"sub\":\"a\",\"broadcast\":1}", "broadcast"},
        {"{\"sub\":\"a\",\"tenant\":\"a b\"}", "tenant"},
        {"{\"sub\":\"a\",\"tenant\":\"\"}", "tenant"},
        {"{\"sub\":\"a\",\"tenant\":7}", "tenant"},
        {"{\"sub\":\"a\",\"info\":[]}", "info"},
        {"{\"sub\":\"a\",\"info\":\"Alice\"}", "info"},
        {"{\"sub\":\"a\",\"exp\":\"soon\"}", "exp"},
        {"{\"sub\":\"a\",\"nbf\":false}", "nbf"},
        {"{\"sub\":\"a\",\"iat\":\"now\"}", "iat"},
    };
    char payload[2048], tenant[80];
    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect(hs(bad[i].payload), hs_key, TOKEN_BAD_CLAIM, bad[i].words);
    /* tenant: 64 bytes at most; info: 1 KiB at most as compact JSON */
    memset(tenant, 't', 65);
    tenant[65] = '\0';
    snprintf(payload, sizeof payload, "{\"sub\":\"a\",\"tenant\":\"%s\"}", tenant);
    expect(hs(payload), hs_key, TOKEN_BAD_CLAIM, "tenant");
    tenant[64] = '\0';
    snprintf(payload, sizeof payload, "{\"sub\":\"a\",\"tenant\":\"%s\"}", tenant);
    expect(hs(payload), hs_key, TOKEN_OK, NULL);
    /* {"b":"x...x"} is 8 bytes plus the x's */
    snprintf(payload, sizeof payload, "{\"sub\":\"a\",\"info\":{\"b\" :  \"%01016d\"}}", 0);
    expect(hs(payload), hs_key, TOKEN_OK, NULL);
    snprintf(payload, sizeof payload, "{\"sub\":\"a\",\"info\":{\"b\":\"%01017d\"}}", 0);
    expect(hs(payload), hs_key, TOKEN_BAD_CLAIM, "info");
}

static void test_token_keys_from_pem(void **state)
{
    const char *why = NULL;
    (void)state;
    assert_null(token_key_pem("not a key", 9, &why));
    assert_non_null(strstr(why, "PEM public key"));

    /* a private key is not a public key */
    BIO *bio = BIO_new(BIO_s_mem());
    char *data;
    PEM_write_bio_PrivateKey(bio, ec_key, NULL, NULL, 0, NULL, NULL);
    long len = BIO_get_mem_data(bio, &data);
    assert_null(token_key_pem(data, (size_t)len, &why));
    assert_non_null(strstr(why, "-pubout"));
    BIO_free(bio);

    EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    struct {
        EVP_PKEY *key;
        const char *words;
    } refused[] = {{small, "2048"}, {p384, "P-256"}, {ed, "neither"}};
    for (size_t i = 0; i < 3; i++) {
        char *pem = pem_public(refused[i].key);
        assert_null(token_key_pem(pem, strlen(pem), &why));
        assert_non_null(strstr(why, refused[i].words));
        free(pem);
        EVP_PKEY_free(refused[i].key);
    }
}

static void test_token_sign_makes_what_verify_takes(void **state)
{
    (void)state;
    char *token = token_sign(hs_key, "{\"sub\":\"alice\",\"rooms\":[\"general\"],\"exp\":1800003600}");
    assert_non_null(token);
    assert_int_equal(strncmp(token, "eyJ", 3), 0);
    struct token_rules rules = rules_of(hs_key);
    struct token_claims c;
    char why[TOKEN_WHY_MAX];
    assert_int_equal(token_verify(token, strlen(token), &rules, &c, why), TOKEN_OK);
    assert_string_equal(c.sub, "alice");
    assert_string_equal(c.rights.rooms, "general");
    token_claims_free(&c);
    free(token);
    assert_null(token_sign(hs_key, "[1]"));
    assert_null(token_sign(hs_key, "{"));
    assert_null(token_sign(rs_key, "{\"sub\":\"a\"}")); /* HS256 only */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_hs256_claims_are_read),
        cmocka_unit_test(test_token_rs256_and_es256_verify),
        cmocka_unit_test(test_token_malformed),
        cmocka_unit_test(test_token_bad_signature),
        cmocka_unit_test(test_token_wrong_algorithm),
        cmocka_unit_test(test_token_exp_and_nbf_with_leeway),
        cmocka_unit_test(test_token_audience_and_issuer),
        cmocka_unit_test(test_token_sub_is_required_and_an_id),
        cmocka_unit_test(test_token_claims_of_the_wrong_type),
        cmocka_unit_test(test_token_keys_from_pem),
        cmocka_unit_test(test_token_sign_makes_what_verify_takes),
    };
    return cmocka_run_group_tests(tests, setup_keys, teardown_keys);
}
