/* offset.c - offsets "<ms>-<seq>" of persisted messages. See offset.h. */
#include "codec/offset.h"

#include <string.h>

static int parse_u64(const char *s, const char *end, uint64_t *out)
{
    if (s == end || end - s > 20)
        return -1;
    uint64_t v = 0;
    for (; s < end; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        uint64_t next = v * 10 + (uint64_t)(*s - '0');
        if (next / 10 != v)
            return -1;
        v = next;
    }
    *out = v;
    return 0;
}

int offset_parse(const char *s, struct offset *o)
{
    const char *dash = strchr(s, '-');
    if (!dash)
        return -1;
    struct offset r;
    if (parse_u64(s, dash, &r.ms) || parse_u64(dash + 1, dash + 1 + strlen(dash + 1), &r.seq))
        return -1;
    *o = r;
    return 0;
}

/* Writes n in decimal at out; returns the end. */
static char *format_u64(uint64_t n, char *out)
{
    char digits[20];
    size_t len = 0;
    do
        digits[len++] = (char)('0' + n % 10);
    while ((n /= 10));
    while (len)
        *out++ = digits[--len];
    return out;
}

/* By hand, not snprintf: the bus formats one per persisted publish, and
 * printf was a tenth of its time (bench/sequencer.c). */
void offset_format(struct offset o, char out[OFFSET_MAX_LEN])
{
    char *end = format_u64(o.ms, out);
    *end++ = '-';
    *format_u64(o.seq, end) = '\0';
}

int offset_cmp(struct offset a, struct offset b)
{
    if (a.ms != b.ms)
        return a.ms < b.ms ? -1 : 1;
    if (a.seq != b.seq)
        return a.seq < b.seq ? -1 : 1;
    return 0;
}
