/* clock.h - the two clocks of wsfan: wall-clock milliseconds for what
 * clients see ("ts" of events, offsets of the memory store, uptime) and
 * monotonic milliseconds for durations. Any thread. */
#ifndef WSFAN_CLOCK_H
#define WSFAN_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Milliseconds since the epoch. */
static inline uint64_t clock_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Milliseconds on a clock that never jumps. */
static inline uint64_t clock_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Where only the time since a recent moment matters (heartbeats, timeouts,
 * the linger of a close), a millisecond time is kept as its low 32 bits:
 * half the bytes, and the elapsed time stays right across the wrap for up
 * to 49 days. */
static inline uint32_t clock_ms32_since(uint64_t now_ms, uint32_t then_ms)
{
    return (uint32_t)now_ms - then_ms;
}

#endif
