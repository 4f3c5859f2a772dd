/* store.c - what both store engines share: event batches. */
#include "store/store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
