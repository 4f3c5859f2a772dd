/* utf8.c - the UTF-8 validator. See utf8.h. Keeps no state of its own. */
#include "core/utf8.h"

#include <string.h>

/* The state names what the next byte must be: ACCEPT expects a lead byte or
 * ASCII, the others a continuation byte in [utf8_lo, utf8_hi], after which
 * the state moves to utf8_next. The narrowed ranges after E0, ED, F0 and F4
 * are what rule out overlongs, surrogates and code points past U+10FFFF. */
enum utf8_state {
    S_ACCEPT = UTF8_ACCEPT,
    S_NEED1,     /* one continuation byte left: 80..BF */
    S_NEED2,     /* two left, next 80..BF */
    S_NEED2_E0,  /* two left, next A0..BF (no overlongs) */
    S_NEED2_ED,  /* two left, next 80..9F (no surrogates) */
    S_NEED3,     /* three left, next 80..BF */
    S_NEED3_F0,  /* three left, next 90..BF (no overlongs) */
    S_NEED3_F4,  /* three left, next 80..8F (nothing past U+10FFFF) */
    S_REJECT,
};

static const uint8_t utf8_lo[S_REJECT] = {
    [S_NEED1] = 0x80, [S_NEED2] = 0x80, [S_NEED2_E0] = 0xA0,
    [S_NEED2_ED] = 0x80, [S_NEED3] = 0x80, [S_NEED3_F0] = 0x90,
    [S_NEED3_F4] = 0x80,
};
static const uint8_t utf8_hi[S_REJECT] = {
    [S_NEED1] = 0xBF, [S_NEED2] = 0xBF, [S_NEED2_E0] = 0xBF,
    [S_NEED2_ED] = 0x9F, [S_NEED3] = 0xBF, [S_NEED3_F0] = 0xBF,
    [S_NEED3_F4] = 0x8F,
};
static const uint8_t utf8_next[S_REJECT] = {
    [S_NEED1] = S_ACCEPT, [S_NEED2] = S_NEED1,
    [S_NEED2_E0] = S_NEED1, [S_NEED2_ED] = S_NEED1,
    [S_NEED3] = S_NEED2, [S_NEED3_F0] = S_NEED2,
    [S_NEED3_F4] = S_NEED2,
};

/* The state after a non-ASCII lead byte c (C0, C1 and F5..FF are never
 * valid; 80..BF are stray continuation bytes). */
static enum utf8_state utf8_lead(uint8_t c)
{
    if (c >= 0xC2 && c <= 0xDF)
        return S_NEED1;
    if (c == 0xE0)
        return S_NEED2_E0;
    if (c == 0xED)
        return S_NEED2_ED;
    if (c >= 0xE1 && c <= 0xEF)
        return S_NEED2;
    if (c == 0xF0)
        return S_NEED3_F0;
    if (c >= 0xF1 && c <= 0xF3)
        return S_NEED3;
    if (c == 0xF4)
        return S_NEED3_F4;
    return S_REJECT;
}

/* Skips ASCII eight bytes at a time, then byte by byte. */
static const uint8_t *utf8_skip_ascii(const uint8_t *p, const uint8_t *end)
{
    while (end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, sizeof(w));
        if (w & UINT64_C(0x8080808080808080))
            break;
        p += 8;
    }
    while (p < end && *p < 0x80)
        p++;
    return p;
}

int utf8_feed(uint8_t *state, const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n;
    uint32_t s = *state;

    if (s == S_REJECT)
        return -1;
    while (p < end) {
        if (s == S_ACCEPT) {
            p = utf8_skip_ascii(p, end);
            if (p == end)
                break;
            s = utf8_lead(*p++);
            if (s == S_REJECT)
                break;
        } else {
            uint8_t c = *p++;
            if (c < utf8_lo[s] || c > utf8_hi[s]) {
                s = S_REJECT;
                break;
            }
            s = utf8_next[s];
        }
    }
    *state = (uint8_t)s;
    return s == S_REJECT ? -1 : 0;
}

