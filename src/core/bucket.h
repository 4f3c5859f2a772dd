/* bucket.h - a token bucket for --rate-limit: rate tokens a second, at
 * most rate in the bucket (a burst of one second's worth). Integer
 * arithmetic in thousandths of a token; time in the caller's milliseconds,
 * kept as 32 bits (8 bytes a bucket: one per connection). One owner; no
 * locks. */
#ifndef WSFAN_BUCKET_H
#define WSFAN_BUCKET_H

#include <stdint.h>

#define BUCKET_RATE_MAX 1000000   /* so that rate * 1000 fits the level */

/* A zeroed bucket is full the first time it is used. */
struct bucket {
    uint32_t last_ms;   /* the low 32 bits of when the level was brought up to date; 0: never */
    uint32_t level;     /* thousandths of a token */
};

/* Takes one token at now_ms from a bucket that fills at rate (1 to
 * BUCKET_RATE_MAX) tokens a second. Returns 1 when there was one, 0 when
 * the bucket was empty (nothing taken). now_ms must not go backwards;
 * calls more than 24 days apart may find the bucket less than full. */
int bucket_take(struct bucket *b, uint64_t now_ms, uint32_t rate);

#endif
