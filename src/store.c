/* store.c - what both store engines share: offsets and event batches. */
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
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

int store_batch_add(struct store_batch *b, const char *event, size_t len, struct offset offset)
{
    struct offset *offsets = realloc(b->offsets, sizeof *offsets * (b->count + 1));
    if (!offsets)
        return -1;
    b->offsets = offsets;
    offsets[b->count] = offset;
    char *text = realloc(b->text, b->len + len + 1);
    if (!text)
        return -1;
    memcpy(text + b->len, event, len);
    text[b->len + len] = '\n';
    b->text = text;
    b->len += len + 1;
    b->count++;
    return 0;
}

void store_batch_free(struct store_batch *b)
{
    free(b->text);
    free(b->offsets);
    memset(b, 0, sizeof *b);
}

const char *store_batch_join(struct store_batch *b, size_t *len)
{
    if (!b->len) {
        *len = 0;
        return "";
    }
    /* Event JSON never holds a raw newline, so each one is a separator. */
    for (size_t i = 0; i + 1 < b->len; i++)
        if (b->text[i] == '\n')
            b->text[i] = ',';
    *len = b->len - 1;
    return b->text;
}
