/* sse.c - SSE events, id lines, the keep-alive comment and stream ids.
 * See sse.h. */
#include "codec/sse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TYPE_PREFIX "{\"type\":\""

/* A frame of len bytes, refs 1, bytes not written yet; NULL. */
static struct frame *frame_alloc(size_t len)
{
    if (len > UINT32_MAX)
        return NULL;
    struct frame *f = malloc(sizeof *f + len);
    if (f) {
        f->refs = 1;
        f->len = (uint32_t)len;
    }
    return f;
}

/* Appends n bytes of s at *p. */
static void put(uint8_t **p, const void *s, size_t n)
{
    memcpy(*p, s, n);
    *p += n;
}

struct frame *sse_frame_create(const char *json, size_t len)
{
    /* The type: the server's JSON is written with "type" first. */
    const char *type = NULL;
    size_t type_len = 0;
    if (len > sizeof TYPE_PREFIX - 1 && !memcmp(json, TYPE_PREFIX, sizeof TYPE_PREFIX - 1)) {
        type = json + sizeof TYPE_PREFIX - 1;
        const char *end = memchr(type, '"', len - (size_t)(type - json));
        type_len = end ? (size_t)(end - type) : 0;
    }
    size_t total = (type_len ? 7 + type_len + 1 : 0) + 6 + len + 2;
    struct frame *f = frame_alloc(total);
    if (!f)
        return NULL;
    uint8_t *p = f->bytes;
    if (type_len) {
        put(&p, "event: ", 7);
        put(&p, type, type_len);
        put(&p, "\n", 1);
    }
    put(&p, "data: ", 6);
    for (size_t i = 0; i < len; i++)
        *p++ = json[i] == '\n' || json[i] == '\r' ? ' ' : (uint8_t)json[i];
    put(&p, "\n\n", 2);
    return f;
}

struct frame *sse_id_frame_create(const char *id, size_t len)
{
    struct frame *f = frame_alloc(4 + len + 1);
    if (!f)
        return NULL;
    uint8_t *p = f->bytes;
    put(&p, "id: ", 4);
    put(&p, id, len);
    put(&p, "\n", 1);
    return f;
}

struct frame *sse_keepalive_create(void)
{
    static const char ping[] = ": ping\n\n";
    struct frame *f = frame_alloc(sizeof ping - 1);
    if (f)
        memcpy(f->bytes, ping, sizeof ping - 1);
    return f;
}

size_t sse_id_format(const struct sse_position *pos, size_t n, char *out)
{
    char *p = out;
    for (size_t i = 0; i < n; i++) {
        if (i)
            *p++ = ';';
        size_t len = strlen(pos[i].room);
        memcpy(p, pos[i].room, len);
        p += len;
        *p++ = '=';
        offset_format(pos[i].offset, p);
        p += strlen(p);
    }
    *p = '\0';
    return (size_t)(p - out);
}

int sse_id_parse(const char *id, struct sse_position *pos, size_t max)
{
    size_t n = 0;
    for (const char *p = id; *p;) {
        const char *end = strchr(p, ';'), *eq = strchr(p, '=');
        if (!end)
            end = p + strlen(p);
        size_t room_len = eq ? (size_t)(eq - p) : 0;
        size_t offset_len = eq && eq < end ? (size_t)(end - eq - 1) : 0;
        if (n == max || !eq || eq > end || !name_valid(p, room_len) || offset_len >= OFFSET_MAX_LEN)
            return -1;
        char offset[OFFSET_MAX_LEN];
        memcpy(offset, eq + 1, offset_len);
        offset[offset_len] = '\0';
        memcpy(pos[n].room, p, room_len);
        pos[n].room[room_len] = '\0';
        if (offset_parse(offset, &pos[n].offset))
            return -1;
        for (size_t i = 0; i < n; i++)
            if (!strcmp(pos[i].room, pos[n].room))
                return -1;
        n++;
        /* A ';' must be followed by another room. */
        if (*end == ';' && !end[1])
            return -1;
        p = *end ? end + 1 : end;
    }
    return (int)n;
}
