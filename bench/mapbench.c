/* mapbench.c - the cost of one map_get (core/map.c) on ids like the ones
 * clients choose: `make bench-map` builds it twice, against this tree's
 * map.c (keyed SipHash-1-3) and against the FNV-1a map.c of an older
 * revision (bench/map-compare.sh), and runs each in a timing loop and
 * under callgrind. Prints one line: keys in the map, key length, lookups,
 * best ns per lookup of 5 runs. Under callgrind, bench/map-compare.sh counts the
 * instructions of lookups() only (--toggle-collect). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/map.h"

#define NKEYS 10000

static char keys[NKEYS][80];
static size_t lens[NKEYS];
static size_t nkeys = NKEYS;

/* Every key once per round, in a scattered order; returns a sum so that
 * nothing is optimized away. */
__attribute__((noinline)) static uintptr_t lookups(const struct map *m, long rounds)
{
    uintptr_t sum = 0;
    for (long r = 0; r < rounds; r++)
        for (size_t i = 0; i < nkeys; i++) {
            size_t k = (i * 7919) % nkeys;
            sum += (uintptr_t)map_get(m, keys[k], lens[k]);
        }
    return sum;
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    /* key length (short room ids by default), rounds, keys in the map
     * (10,000: more than the caches hold; 100: all in L1). */
    int len = argc > 1 ? atoi(argv[1]) : 10;
    long rounds = argc > 2 ? atol(argv[2]) : 300;
    nkeys = argc > 3 ? (size_t)atol(argv[3]) : NKEYS;
    if (len < 6 || len > 64 || rounds < 1 || nkeys < 1 || nkeys > NKEYS) {
        fprintf(stderr, "usage: mapbench [key length 6..64] [rounds] [keys 1..10000]\n");
        return 2;
    }
    struct map m;
    map_init(&m);
    for (size_t i = 0; i < nkeys; i++) {
        int n = snprintf(keys[i], sizeof keys[i], "room-%zu", i);
        while (n < len)
            keys[i][n++] = (char)('a' + (i + (size_t)n) % 26);
        keys[i][len] = '\0';
        lens[i] = (size_t)len;
        if (map_put(&m, keys[i], lens[i], (void *)(i + 1))) {
            fprintf(stderr, "out of memory\n");
            return 1;
        }
    }
    double best = 1e30;
    uintptr_t sum = 0;
    for (int run = 0; run < 5; run++) {
        double t0 = now_ns();
        sum += lookups(&m, rounds);
        double ns = (now_ns() - t0) / ((double)rounds * (double)nkeys);
        if (ns < best)
            best = ns;
    }
    printf("keys=%zu key_bytes=%d lookups_per_run=%ld best_ns_per_get=%.2f (checksum %lu)\n", nkeys, len,
           rounds * (long)nkeys, best, (unsigned long)(sum % 1000));
    map_free(&m);
    return 0;
}
