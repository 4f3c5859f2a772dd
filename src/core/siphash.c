/* siphash.c - SipHash-c-d from the paper's description: four 64-bit words
 * of state, c compression rounds per 8-byte block and d finalization
 * rounds. See siphash.h. */
#include "core/siphash.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

static inline uint64_t rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

static inline uint64_t load_le64(const uint8_t *p)
{
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
           (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}

struct sip_state {
    uint64_t v0, v1, v2, v3;
};

static inline void sip_round(struct sip_state *s)
{
    s->v0 += s->v1;
    s->v1 = rotl(s->v1, 13);
    s->v1 ^= s->v0;
    s->v0 = rotl(s->v0, 32);
    s->v2 += s->v3;
    s->v3 = rotl(s->v3, 16);
    s->v3 ^= s->v2;
    s->v0 += s->v3;
    s->v3 = rotl(s->v3, 21);
    s->v3 ^= s->v0;
    s->v2 += s->v1;
    s->v1 = rotl(s->v1, 17);
    s->v1 ^= s->v2;
    s->v2 = rotl(s->v2, 32);
}

/* Always inlined with constant round counts, so that each variant's
 * loops unroll. */
static inline __attribute__((always_inline)) uint64_t sip(const uint8_t key[SIPHASH_KEY_LEN], const uint8_t *p,
                                                         size_t len, int c_rounds, int d_rounds)
{
    uint64_t k0 = load_le64(key), k1 = load_le64(key + 8);
    struct sip_state s = {
        .v0 = 0x736f6d6570736575ULL ^ k0,
        .v1 = 0x646f72616e646f6dULL ^ k1,
        .v2 = 0x6c7967656e657261ULL ^ k0,
        .v3 = 0x7465646279746573ULL ^ k1,
    };
    const uint8_t *end = p + (len & ~(size_t)7);
    for (; p != end; p += 8) {
        uint64_t m = load_le64(p);
        s.v3 ^= m;
        for (int i = 0; i < c_rounds; i++)
            sip_round(&s);
        s.v0 ^= m;
    }
    /* The last block: the bytes left, and the length's low byte on top. */
    uint64_t b = (uint64_t)len << 56;
    switch (len & 7) {
    case 7: b |= (uint64_t)p[6] << 48; /* fall through */
    case 6: b |= (uint64_t)p[5] << 40; /* fall through */
    case 5: b |= (uint64_t)p[4] << 32; /* fall through */
    case 4: b |= (uint64_t)p[3] << 24; /* fall through */
    case 3: b |= (uint64_t)p[2] << 16; /* fall through */
    case 2: b |= (uint64_t)p[1] << 8; /* fall through */
    case 1: b |= (uint64_t)p[0]; break;
    case 0: break;
    }
    s.v3 ^= b;
    for (int i = 0; i < c_rounds; i++)
        sip_round(&s);
    s.v0 ^= b;
    s.v2 ^= 0xff;
    for (int i = 0; i < d_rounds; i++)
        sip_round(&s);
    return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

uint64_t siphash13(const uint8_t key[SIPHASH_KEY_LEN], const void *data, size_t len)
{
    return sip(key, data, len, 1, 3);
}

uint64_t siphash24(const uint8_t key[SIPHASH_KEY_LEN], const void *data, size_t len)
{
    return sip(key, data, len, 2, 4);
}

/* /dev/urandom, for kernels older than getrandom(2) (3.17). */
static int read_urandom(uint8_t *out, size_t len)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, out + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    return got == len ? 0 : -1;
}

int siphash_key_random(uint8_t key[SIPHASH_KEY_LEN])
{
    size_t got = 0;
    while (got < SIPHASH_KEY_LEN) {
        ssize_t n = getrandom(key + got, SIPHASH_KEY_LEN - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == ENOSYS ? read_urandom(key, SIPHASH_KEY_LEN) : -1;
        got += (size_t)n;
    }
    return 0;
}
