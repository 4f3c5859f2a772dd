/* test_map.c - unit tests of map.c: lookups by (bytes, length), copied
 * keys, replacement, growth, removal that keeps every other key reachable
 * (backward shift), and iteration that visits each entry once. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/map.h"

/* A value that is not NULL and tells keys apart. */
#define VAL(i) ((void *)(uintptr_t)((i) + 1))

static void key_of(char *buf, size_t cap, unsigned i)
{
    snprintf(buf, cap, "key-%u", i);
}

/* ---- Basics ------------------------------------------------------------- */

static void test_map_empty_map_finds_nothing(void **state)
{
    struct map m;
    const struct map_slot *slot;
    size_t i = 0;

    (void)state;
    map_init(&m);
    assert_null(map_get(&m, "a", 1));
    assert_null(map_key(&m, "a", 1));
    assert_null(map_remove(&m, "a", 1));
    assert_int_equal(map_next(&m, &i, &slot), 0);
    assert_int_equal(m.count, 0);
    map_free(&m);
    map_free(&m); /* freeing twice is harmless: map_free re-inits */
}

static void test_map_put_then_get_returns_value(void **state)
{
    struct map m;

    (void)state;
    map_init(&m);
    assert_int_equal(map_put(&m, "alpha", 5, VAL(1)), 0);
    assert_int_equal(map_put(&m, "beta", 4, VAL(2)), 0);
    assert_ptr_equal(map_get(&m, "alpha", 5), VAL(1));
    assert_ptr_equal(map_get(&m, "beta", 4), VAL(2));
    assert_null(map_get(&m, "gamma", 5));
    assert_int_equal(m.count, 2);
    map_free(&m);
}

static void test_map_put_replaces_value_of_existing_key(void **state)
{
    struct map m;

    (void)state;
    map_init(&m);
    assert_int_equal(map_put(&m, "room", 4, VAL(1)), 0);
    const char *stored = map_key(&m, "room", 4);
    assert_int_equal(map_put(&m, "room", 4, VAL(2)), 0);
    assert_ptr_equal(map_get(&m, "room", 4), VAL(2));
    assert_int_equal(m.count, 1);
    /* The stored key is kept, not re-copied. */
    assert_ptr_equal(map_key(&m, "room", 4), stored);
    map_free(&m);
}

static void test_map_copies_keys(void **state)
{
    struct map m;
    char buf[16] = "general";

    (void)state;
    map_init(&m);
    assert_int_equal(map_put(&m, buf, 7, VAL(7)), 0);
    const char *stored = map_key(&m, "general", 7);
    assert_non_null(stored);
    assert_ptr_not_equal(stored, buf);
    assert_string_equal(stored, "general");
    memcpy(buf, "xxxxxxx", 7);
    assert_ptr_equal(map_get(&m, "general", 7), VAL(7));
    assert_null(map_get(&m, buf, 7));
    map_free(&m);
}

static void test_map_key_is_bytes_and_length_not_c_string(void **state)
{
    struct map m;
    /* Not NUL-terminated after the length given. */
    static const char abc[] = {'a', 'b', 'c', 'd'};

    (void)state;
    map_init(&m);
    assert_int_equal(map_put(&m, abc, 2, VAL(2)), 0);
    assert_int_equal(map_put(&m, abc, 3, VAL(3)), 0);
    assert_int_equal(m.count, 2);
    assert_ptr_equal(map_get(&m, "ab", 2), VAL(2));
    assert_ptr_equal(map_get(&m, "abc", 3), VAL(3));
    assert_null(map_get(&m, "abcd", 4));
    assert_null(map_get(&m, "a", 1));
    /* The copy is NUL-terminated at the length. */
    assert_string_equal(map_key(&m, "ab", 2), "ab");
    assert_string_equal(map_key(&m, "abc", 3), "abc");
    /* The empty key is a key like any other. */
    assert_int_equal(map_put(&m, "", 0, VAL(0)), 0);
    assert_ptr_equal(map_get(&m, "zzz", 0), VAL(0));
    assert_string_equal(map_key(&m, "", 0), "");
    map_free(&m);
}

static void test_map_remove_returns_value_and_forgets_key(void **state)
{
    struct map m;

    (void)state;
    map_init(&m);
    assert_int_equal(map_put(&m, "a", 1, VAL(1)), 0);
    assert_int_equal(map_put(&m, "b", 1, VAL(2)), 0);
    assert_ptr_equal(map_remove(&m, "a", 1), VAL(1));
    assert_null(map_get(&m, "a", 1));
    assert_null(map_key(&m, "a", 1));
    assert_null(map_remove(&m, "a", 1));
    assert_ptr_equal(map_get(&m, "b", 1), VAL(2));
    assert_int_equal(m.count, 1);
    /* A removed key can come back. */
    assert_int_equal(map_put(&m, "a", 1, VAL(3)), 0);
    assert_ptr_equal(map_get(&m, "a", 1), VAL(3));
    assert_int_equal(m.count, 2);
    map_free(&m);
}

/* ---- Growth and removal --------------------------------------------------- */

static void test_map_grows_and_keeps_every_key(void **state)
{
    struct map m;
    char key[32];

    (void)state;
    map_init(&m);
    for (unsigned i = 0; i < 5000; i++) {
        key_of(key, sizeof key, i);
        assert_int_equal(map_put(&m, key, strlen(key), VAL(i)), 0);
        assert_int_equal(m.count, i + 1);
        /* cap stays a power of two with free slots left for probing. */
        assert_true(m.cap && (m.cap & (m.cap - 1)) == 0);
        assert_true(m.count * 4 <= m.cap * 3);
    }
    for (unsigned i = 0; i < 5000; i++) {
        key_of(key, sizeof key, i);
        assert_ptr_equal(map_get(&m, key, strlen(key)), VAL(i));
        assert_string_equal(map_key(&m, key, strlen(key)), key);
    }
    map_free(&m);
    assert_int_equal(m.cap, 0);
    assert_int_equal(m.count, 0);
}

static void test_map_removal_keeps_other_keys_reachable(void **state)
{
    struct map m;
    char key[32];
    enum { N = 2000 };

    (void)state;
    map_init(&m);
    for (unsigned i = 0; i < N; i++) {
        key_of(key, sizeof key, i);
        assert_int_equal(map_put(&m, key, strlen(key), VAL(i)), 0);
    }
    /* Remove every third key, from the end backwards, then check all. */
    for (unsigned i = N; i-- > 0;) {
        if (i % 3)
            continue;
        key_of(key, sizeof key, i);
        assert_ptr_equal(map_remove(&m, key, strlen(key)), VAL(i));
    }
    for (unsigned i = 0; i < N; i++) {
        key_of(key, sizeof key, i);
        if (i % 3)
            assert_ptr_equal(map_get(&m, key, strlen(key)), VAL(i));
        else
            assert_null(map_get(&m, key, strlen(key)));
    }
    assert_int_equal(m.count, N - (N + 2) / 3);
    map_free(&m);
}

/* map_add's entries keep their key after the zeroed value, survive the
 * table's growth and backward shifts beside map_put's, and are freed with
 * their value; map_free frees only map_put's keys (the unit tests run
 * under AddressSanitizer and LeakSanitizer, which check both). */
static void test_map_add_keeps_the_key_in_the_value(void **state)
{
    struct map m;
    char key[32];
    enum { N = 500, SIZE = 12 };

    (void)state;
    map_init(&m);
    for (unsigned i = 0; i < N; i++) {
        key_of(key, sizeof key, i);
        if (i % 2) {
            assert_int_equal(map_put(&m, key, strlen(key), VAL(i)), 0);
            continue;
        }
        char *v = map_add(&m, key, strlen(key), SIZE);
        assert_non_null(v);
        for (int b = 0; b < SIZE; b++)
            assert_int_equal(v[b], 0);
        assert_string_equal(v + SIZE, key);
        assert_ptr_equal(map_key(&m, key, strlen(key)), v + SIZE);
    }
    for (unsigned i = 0; i < N; i += 4) {
        key_of(key, sizeof key, i);
        char *v = map_remove(&m, key, strlen(key));
        assert_non_null(v);
        assert_string_equal(v + SIZE, key);
        free(v);
    }
    for (unsigned i = 0; i < N; i++) {
        key_of(key, sizeof key, i);
        void *v = map_get(&m, key, strlen(key));
        if (i % 4 == 0)
            assert_null(v);
        else if (i % 2)
            assert_ptr_equal(v, VAL(i));
        else
            assert_string_equal((char *)v + SIZE, key);
    }
    const struct map_slot *slot;
    for (size_t i = 0; map_next(&m, &i, &slot);)
        if (slot->key_in_value)
            free(slot->value);
    map_free(&m);
}

/* A small key space on a small table: long probe runs that wrap around the
 * end of the table, removals from their middle, against a plain array. */
static void test_map_matches_reference_under_random_puts_and_removes(void **state)
{
    enum { KEYS = 24, STEPS = 20000 };
    void *ref[KEYS] = {0};
    size_t ref_count = 0;
    struct map m;
    uint32_t rng = 12345;
    char key[32];

    (void)state;
    map_init(&m);
    for (unsigned step = 0; step < STEPS; step++) {
        rng = rng * 1103515245u + 12345u;
        unsigned k = (rng >> 16) % KEYS;
        int put = (rng >> 8) & 1;
        key_of(key, sizeof key, k);
        if (put) {
            void *v = VAL(step);
            assert_int_equal(map_put(&m, key, strlen(key), v), 0);
            ref_count += ref[k] == NULL;
            ref[k] = v;
        } else {
            assert_ptr_equal(map_remove(&m, key, strlen(key)), ref[k]);
            ref_count -= ref[k] != NULL;
            ref[k] = NULL;
        }
        assert_int_equal(m.count, ref_count);
        for (unsigned j = 0; j < KEYS; j++) {
            key_of(key, sizeof key, j);
            assert_ptr_equal(map_get(&m, key, strlen(key)), ref[j]);
        }
    }
    map_free(&m);
}

/* ---- Iteration ------------------------------------------------------------ */

static void test_map_next_visits_each_entry_once(void **state)
{
    enum { N = 300 };
    struct map m;
    char key[32];
    int seen[N] = {0};
    const struct map_slot *slot;
    size_t visited = 0;

    (void)state;
    map_init(&m);
    for (unsigned i = 0; i < N; i++) {
        key_of(key, sizeof key, i);
        assert_int_equal(map_put(&m, key, strlen(key), VAL(i)), 0);
    }
    for (unsigned i = 0; i < N; i += 2) {
        key_of(key, sizeof key, i);
        map_remove(&m, key, strlen(key));
    }
    for (size_t i = 0; map_next(&m, &i, &slot);) {
        unsigned k = (unsigned)((uintptr_t)slot->value - 1);
        assert_true(k < N);
        key_of(key, sizeof key, k);
        assert_string_equal(slot->key, key);
        assert_int_equal(slot->len, strlen(key));
        assert_int_equal(seen[k], 0);
        seen[k] = 1;
        visited++;
    }
    assert_int_equal(visited, N / 2);
    for (unsigned i = 0; i < N; i++)
        assert_int_equal(seen[i], i % 2);
    map_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map_empty_map_finds_nothing),
        cmocka_unit_test(test_map_put_then_get_returns_value),
        cmocka_unit_test(test_map_put_replaces_value_of_existing_key),
        cmocka_unit_test(test_map_copies_keys),
        cmocka_unit_test(test_map_key_is_bytes_and_length_not_c_string),
        cmocka_unit_test(test_map_remove_returns_value_and_forgets_key),
        cmocka_unit_test(test_map_grows_and_keeps_every_key),
        cmocka_unit_test(test_map_removal_keeps_other_keys_reachable),
        cmocka_unit_test(test_map_matches_reference_under_random_puts_and_removes),
        cmocka_unit_test(test_map_next_visits_each_entry_once),
        cmocka_unit_test(test_map_add_keeps_the_key_in_the_value),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
