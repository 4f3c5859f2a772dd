/* offset.c - offsets "<ms>-<seq>" of persisted messages. See offset.h. */
#include "codec/offset.h"

#include <stdio.h>
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

void offset_format(struct offset o, char out[OFFSET_MAX_LEN])
{
    snprintf(out, OFFSET_MAX_LEN, "%llu-%llu", (unsigned long long)o.ms, (unsigned long long)o.seq);
}

int offset_cmp(struct offset a, struct offset b)
{
    if (a.ms != b.ms)
        return a.ms < b.ms ? -1 : 1;
    if (a.seq != b.seq)
        return a.seq < b.seq ? -1 : 1;
    return 0;
}
