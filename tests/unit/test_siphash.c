/* test_siphash.c - unit tests of core/siphash.c: SipHash-2-4 against the 64
 * test vectors of the reference implementation (key 00 01 .. 0f, messages
 * 00 01 .. of length 0 to 63), SipHash-1-3 against vectors of the same
 * reference built with one compression and three finalization rounds (all-
 * zero key), the same result for a message wherever it sits in memory,
 * and random keys that differ from call to call. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "core/map.h"
#include "core/siphash.h"

/* SipHash-2-4, key 000102..0f, message 000102.. of length i. */
static const uint64_t vectors_24[64] = {
    0x726fdb47dd0e0e31ULL, 0x74f839c593dc67fdULL, 0x0d6c8009d9a94f5aULL, 0x85676696d7fb7e2dULL,
    0xcf2794e0277187b7ULL, 0x18765564cd99a68dULL, 0xcbc9466e58fee3ceULL, 0xab0200f58b01d137ULL,
    0x93f5f5799a932462ULL, 0x9e0082df0ba9e4b0ULL, 0x7a5dbbc594ddb9f3ULL, 0xf4b32f46226bada7ULL,
    0x751e8fbc860ee5fbULL, 0x14ea5627c0843d90ULL, 0xf723ca908e7af2eeULL, 0xa129ca6149be45e5ULL,
    0x3f2acc7f57c29bdbULL, 0x699ae9f52cbe4794ULL, 0x4bc1b3f0968dd39cULL, 0xbb6dc91da77961bdULL,
    0xbed65cf21aa2ee98ULL, 0xd0f2cbb02e3b67c7ULL, 0x93536795e3a33e88ULL, 0xa80c038ccd5ccec8ULL,
    0xb8ad50c6f649af94ULL, 0xbce192de8a85b8eaULL, 0x17d835b85bbb15f3ULL, 0x2f2e6163076bcfadULL,
    0xde4daaaca71dc9a5ULL, 0xa6a2506687956571ULL, 0xad87a3535c49ef28ULL, 0x32d892fad841c342ULL,
    0x7127512f72f27cceULL, 0xa7f32346f95978e3ULL, 0x12e0b01abb051238ULL, 0x15e034d40fa197aeULL,
    0x314dffbe0815a3b4ULL, 0x027990f029623981ULL, 0xcadcd4e59ef40c4dULL, 0x9abfd8766a33735cULL,
    0x0e3ea96b5304a7d0ULL, 0xad0c42d6fc585992ULL, 0x187306c89bc215a9ULL, 0xd4a60abcf3792b95ULL,
    0xf935451de4f21df2ULL, 0xa9538f0419755787ULL, 0xdb9acddff56ca510ULL, 0xd06c98cd5c0975ebULL,
    0xe612a3cb9ecba951ULL, 0xc766e62cfcadaf96ULL, 0xee64435a9752fe72ULL, 0xa192d576b245165aULL,
    0x0a8787bf8ecb74b2ULL, 0x81b3e73d20b49b6fULL, 0x7fa8220ba3b2eceaULL, 0x245731c13ca42499ULL,
    0xb78dbfaf3a8d83bdULL, 0xea1ad565322a1a0bULL, 0x60e61c23a3795013ULL, 0x6606d7e446282b93ULL,
    0x6ca4ecb15c5f91e1ULL, 0x9f626da15c9625f3ULL, 0xe51b38608ef25f57ULL, 0x958a324ceb064572ULL,
};

/* SipHash-1-3, all-zero key, message 000102.. of length i. */
static const uint64_t vectors_13[64] = {
    0xd1fba762150c532cULL, 0x68a914128e01e473ULL, 0x010bac45c41e3669ULL, 0x4d4c9a4a8ef6e0adULL,
    0x7cc43f98813e4dbdULL, 0x5abe2169dff36275ULL, 0xe3c25f87624f1cdbULL, 0x2f098ab0c751325aULL,
    0xead411e67ebe2eeaULL, 0x75927f9d95124362ULL, 0xaf9f77a65ab51a1dULL, 0xfe64ce8b6617fcffULL,
    0xa6baf4fb0f9fe1c2ULL, 0xa0cf3211850f8e0dULL, 0x7f86049379fbfe67ULL, 0xf30eb725bb91c9eaULL,
    0x8972188433a5c5b7ULL, 0x4883c49a2c009c1dULL, 0xadc2c0b63044067dULL, 0x091f4a3329f87d19ULL,
    0x639e355ae68c0100ULL, 0xb17bef2cb5213239ULL, 0xf8aeb1066236ccfeULL, 0x37332b1389daa4ffULL,
    0x31185a47af932f3aULL, 0xebf352e82ae23e2fULL, 0xed36ff242fe478b2ULL, 0x2454d97d299299dfULL,
    0x8cd57fe8130d0ac7ULL, 0xbe98eb2faf0a0e85ULL, 0xd427c34ee09470c6ULL, 0x169739443111d49bULL,
    0x31ef8061c910629bULL, 0x7fb71d24dfa4c9f6ULL, 0x92771f49e836d389ULL, 0x3c393cf6f0853bc3ULL,
    0xac77921fcc642bd3ULL, 0x422a9751192ff266ULL, 0xc680ae8a8c584ddfULL, 0x6c76b6d34bb6d26bULL,
    0x95bc321ab41d8206ULL, 0x908a3a97a6d37669ULL, 0xfcaf3c64874dd0b4ULL, 0xf689479b32b84a44ULL,
    0xd857641079efd1fdULL, 0x8b581578722633f7ULL, 0x83cb09d35ea7bcd4ULL, 0x8485f7f5ae725a0dULL,
    0xfe1f2445ba50237fULL, 0x23cece041d7866b0ULL, 0x416687480b336c09ULL, 0xf15960da7e7f3892ULL,
    0xded6177b9826835aULL, 0xf80dae51668be6beULL, 0x17ecc6ee6647df18ULL, 0x5220d642b4a52110ULL,
    0xa4f0cf4ba4adc016ULL, 0xe5125bb26d1f2976ULL, 0x851b0e75f580d256ULL, 0x12605250a37e39acULL,
    0xd95a713568daebf1ULL, 0xcdcf4a42ec0dd605ULL, 0xa5c708712b617164ULL, 0x385d3e39e5f37359ULL,
};

static void test_siphash24_matches_reference_vectors(void **state)
{
    uint8_t key[16], msg[64];

    (void)state;
    for (int i = 0; i < 16; i++)
        key[i] = (uint8_t)i;
    for (int i = 0; i < 64; i++)
        msg[i] = (uint8_t)i;
    for (size_t len = 0; len < 64; len++)
        if (siphash24(key, msg, len) != vectors_24[len])
            fail_msg("SipHash-2-4 of %zu bytes: got %016llx, expected %016llx", len,
                     (unsigned long long)siphash24(key, msg, len), (unsigned long long)vectors_24[len]);
}

static void test_siphash13_matches_reference_vectors(void **state)
{
    uint8_t key[16] = {0}, msg[64];

    (void)state;
    for (int i = 0; i < 64; i++)
        msg[i] = (uint8_t)i;
    for (size_t len = 0; len < 64; len++)
        if (siphash13(key, msg, len) != vectors_13[len])
            fail_msg("SipHash-1-3 of %zu bytes: got %016llx, expected %016llx", len,
                     (unsigned long long)siphash13(key, msg, len), (unsigned long long)vectors_13[len]);
}

/* Words are read byte by byte: any alignment gives the same hash. */
static void test_siphash_does_not_depend_on_alignment(void **state)
{
    uint8_t key[16] = {1, 2, 3}, buf[80];

    (void)state;
    for (size_t shift = 1; shift < 8; shift++) {
        for (int i = 0; i < 64; i++)
            buf[shift + (size_t)i] = (uint8_t)(i * 7);
        for (size_t len = 0; len < 64; len += 5) {
            uint8_t aligned[64];
            memcpy(aligned, buf + shift, len);
            assert_true(siphash13(key, buf + shift, len) == siphash13(key, aligned, len));
        }
    }
}

static void test_siphash_key_random_gives_fresh_keys(void **state)
{
    uint8_t a[16], b[16];

    (void)state;
    assert_int_equal(siphash_key_random(a), 0);
    assert_int_equal(siphash_key_random(b), 0);
    assert_memory_not_equal(a, b, 16);
}

/* The map's hash is SipHash-1-3 under the key set for the process: the
 * same id hashes differently under another key. */
static void test_map_hash_follows_the_process_key(void **state)
{
    uint8_t zero[16] = {0}, other[16] = {0x5a};

    (void)state;
    map_hash_key_set(zero);
    assert_true(map_hash("general", 7) == siphash13(zero, "general", 7));
    map_hash_key_set(other);
    assert_true(map_hash("general", 7) == siphash13(other, "general", 7));
    assert_true(map_hash("general", 7) != siphash13(zero, "general", 7));
    map_hash_key_set(zero);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_siphash24_matches_reference_vectors),
        cmocka_unit_test(test_siphash13_matches_reference_vectors),
        cmocka_unit_test(test_siphash_does_not_depend_on_alignment),
        cmocka_unit_test(test_siphash_key_random_gives_fresh_keys),
        cmocka_unit_test(test_map_hash_follows_the_process_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
