/* client_frame.h - what a WebSocket client sends, for the unit tests that
 * play the peer of a conn: one final frame, masked as RFC 6455 requires of
 * clients. The server never builds these (codec/ws.c encodes server frames
 * only), so the tests share this one. */
#ifndef WSFAN_TEST_CLIENT_FRAME_H
#define WSFAN_TEST_CLIENT_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A final client frame of op around payload, masked; returns its size.
 * out must have room for len + 14 bytes. */
static inline size_t client_frame(uint8_t *out, uint8_t op, const void *payload, size_t len)
{
    static const uint8_t mask_key[4] = {0xa1, 0x5e, 0x07, 0xc3};
    size_t n = 0;
    out[n++] = (uint8_t)(0x80 | op);
    if (len < 126) {
        out[n++] = (uint8_t)(0x80 | len);
    } else if (len <= 0xFFFF) {
        out[n++] = 0x80 | 126;
        out[n++] = (uint8_t)(len >> 8);
        out[n++] = (uint8_t)len;
    } else {
        out[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            out[n++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    memcpy(out + n, mask_key, 4);
    n += 4;
    for (size_t i = 0; i < len; i++)
        out[n + i] = ((const uint8_t *)payload)[i] ^ mask_key[i & 3];
    return n + len;
}

#endif
