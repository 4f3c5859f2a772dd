/* bucket.c - the token bucket. See bucket.h. */
#include "core/bucket.h"

#define MILLI 1000u

int bucket_take(struct bucket *b, uint64_t now_ms, uint32_t rate)
{
    uint64_t cap = (uint64_t)rate * MILLI;
    if (b->last_ms == 0) {
        b->level = (uint32_t)cap;
    } else {
        /* rate tokens a second are rate thousandths a millisecond. */
        uint64_t elapsed = now_ms > b->last_ms ? now_ms - b->last_ms : 0;
        uint64_t level = elapsed >= MILLI ? cap : b->level + elapsed * rate;
        b->level = (uint32_t)(level < cap ? level : cap);
    }
    b->last_ms = now_ms ? now_ms : 1;
    if (b->level < MILLI)
        return 0;
    b->level -= MILLI;
    return 1;
}
