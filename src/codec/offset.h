/* offset.h - the position of a persisted message in its room's history
 * (docs/protocol.md section 3): "<ms>-<seq>", two decimal 64-bit numbers,
 * increasing in publish order within a room, the same in the memory store
 * and in Redis Streams. Pure; any thread. */
#ifndef WSFAN_OFFSET_H
#define WSFAN_OFFSET_H

#include <stdint.h>

#define OFFSET_MAX_LEN 48 /* "<ms>-<seq>" of two 64-bit numbers, and NUL */

struct offset {
    uint64_t ms, seq;
};

/* Parses "<ms>-<seq>"; returns 0 or -1 when s is not an offset. */
int offset_parse(const char *s, struct offset *o);
void offset_format(struct offset o, char out[OFFSET_MAX_LEN]);
/* <0, 0 or >0 as a is before, equal to or after b. */
int offset_cmp(struct offset a, struct offset b);

#endif
