/* siphash.h - SipHash (Aumasson and Bernstein, 2012): a keyed hash of
 * short strings. Without the key, nobody can compute which strings
 * collide, so the hash maps whose keys clients choose (room and user ids)
 * cannot be flooded with one bucket's worth of keys. SipHash-1-3 is the
 * variant for hash tables (Redis, Python and Rust use it); SipHash-2-4 is
 * the one of the paper, kept for its published test vectors.
 * Pure functions of their arguments: any thread. */
#ifndef WSFAN_SIPHASH_H
#define WSFAN_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

#define SIPHASH_KEY_LEN 16

/* The 64-bit SipHash-1-3 and SipHash-2-4 of len bytes at data under key
 * (read as two little-endian words), on any byte order. */
uint64_t siphash13(const uint8_t key[SIPHASH_KEY_LEN], const void *data, size_t len);
uint64_t siphash24(const uint8_t key[SIPHASH_KEY_LEN], const void *data, size_t len);

/* Fills key with random bytes from getrandom(2), or /dev/urandom where the
 * call does not exist. Returns 0, or -1 (errno set) when neither gave
 * enough bytes. Blocks only until the kernel's pool is initialized, once
 * after boot. */
int siphash_key_random(uint8_t key[SIPHASH_KEY_LEN]);

#endif
