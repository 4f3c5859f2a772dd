/* utf8.h - the one UTF-8 validator, incremental: feed bytes in any pieces;
 * the state carries a partial sequence across calls. Rejects overlongs,
 * surrogates, code points past U+10FFFF and stray continuation bytes at the
 * first bad byte. Pure; any thread. WebSocket text (codec/ws.c), command
 * JSON (codec/command.c) and log lines (core/log.c) are checked with it. */
#ifndef WSFAN_UTF8_H
#define WSFAN_UTF8_H

#include <stddef.h>
#include <stdint.h>

#define UTF8_ACCEPT 0u

/* Returns 0 while the bytes so far can still be valid UTF-8, -1 at the first
 * byte that makes them invalid (and from then on). *state starts at
 * UTF8_ACCEPT. */
int utf8_feed(uint8_t *state, const uint8_t *p, size_t n);

/* True when the bytes fed so far end on a complete character. */
static inline int utf8_complete(uint8_t state) { return state == UTF8_ACCEPT; }

#endif
