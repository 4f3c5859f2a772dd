/* bucket.c - the token bucket. See bucket.h. */
#include "core/bucket.h"

#define MILLI 1000u

int bucket_take(struct bucket *b, uint64_t now_ms, uint32_t rate)
{
    uint64_t cap = (uint64_t)rate * MILLI;
    uint32_t now = (uint32_t)now_ms;
    if (b->last_ms == 0) {
        b->level = (uint32_t)cap;
    } else {
        /* Differences of the low 32 bits are right across their wrap; a
         * negative one (the clock went back) counts as none. rate tokens
         * a second are rate thousandths a millisecond. */
        uint32_t elapsed = now - b->last_ms;
        if (elapsed > UINT32_MAX / 2)
            elapsed = 0;
        uint64_t level = elapsed >= MILLI ? cap : b->level + (uint64_t)elapsed * rate;
        b->level = (uint32_t)(level < cap ? level : cap);
    }
    b->last_ms = now ? now : 1;
    if (b->level < MILLI)
        return 0;
    b->level -= MILLI;
    return 1;
}
