/* fuzz_deflate.c - libFuzzer target for deflate.c.
 * Input: byte 0 picks what is fuzzed. Even: the rest is a
 * Sec-WebSocket-Extensions value for the offer parser; an answer must name
 * permessage-deflate and, offered back, give the same answer. Odd: byte 1
 * picks the limit and the rest is a compressed message to inflate; the
 * output must keep the limit and, compressed as a shared frame (RSV1
 * set), inflate back to itself. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/deflate.h"
#include "codec/ws.h"

static struct deflate_streams *streams;

static void require(int cond)
{
    if (!cond)
        abort();
}

static void fuzz_offer(const uint8_t *data, size_t size)
{
    char *header = malloc(size + 1), answer[DEFLATE_ANSWER_MAX], again[DEFLATE_ANSWER_MAX];
    require(header != NULL);
    memcpy(header, data, size);
    header[size] = '\0';
    if (deflate_negotiate(header, answer)) {
        require(!strncmp(answer, DEFLATE_EXTENSION ";", sizeof DEFLATE_EXTENSION));
        require(deflate_negotiate(answer, again) == 1 && !strcmp(answer, again));
    }
    free(header);
}

/* The payload of frame f, whose header is 2, 4 or 10 bytes. */
static const uint8_t *frame_payload(const struct frame *f, size_t *len)
{
    size_t hdr = (f->bytes[1] & 0x7F) == 127 ? 10 : (f->bytes[1] & 0x7F) == 126 ? 4 : 2;
    *len = f->len - hdr;
    return f->bytes + hdr;
}

static void fuzz_inflate(const uint8_t *data, size_t size)
{
    if (size < 1)
        return;
    size_t max = (size_t)data[0] * 64, len, again_len, zlen;
    uint8_t *out, *again;
    int r = deflate_inflate(streams, data + 1, size - 1, max, &out, &len);
    require(r == DEFLATE_OK || r == DEFLATE_TOO_BIG || r == DEFLATE_BAD);
    if (r != DEFLATE_OK) {
        require(out == NULL);
        return;
    }
    require(len <= max);
    struct frame *f = deflate_frame_create(streams, out, len);
    require(f != NULL && f->bytes[0] == (0x80 | WS_RSV1 | WS_OP_TEXT));
    const uint8_t *z = frame_payload(f, &zlen);
    require(deflate_inflate(streams, z, zlen, max, &again, &again_len) == DEFLATE_OK);
    require(again_len == len && !memcmp(again, out, len));
    free(again);
    frame_unref(f);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!streams)
        streams = deflate_streams_create();
    require(streams != NULL);
    if (size < 1)
        return 0;
    if (data[0] & 1)
        fuzz_inflate(data + 1, size - 1);
    else
        fuzz_offer(data + 1, size - 1);
    return 0;
}
