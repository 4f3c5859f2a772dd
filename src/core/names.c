/* names.c - the one check of room, user and node ids, and of room patterns.
 * See names.h. */
#include "core/names.h"

#include <string.h>

#include "core/list.h"

static const unsigned char allowed[256] = {
    ['_'] = 1, ['.'] = 1, [':'] = 1, ['-'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1,
    ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
    ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1,
    ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
    ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

int name_valid(const char *s, size_t len)
{
    if (len == 0 || len > NAME_MAX_LEN)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!allowed[(unsigned char)s[i]])
            return 0;
    return 1;
}

int name_pattern_valid(const char *s, size_t len)
{
    if (len > 0 && s[len - 1] == '*')
        return len == 1 || name_valid(s, len - 1);
    return name_valid(s, len);
}

int name_patterns_valid(const char *list)
{
    if (!*list)
        return 1;
    for (const char *p = list; p;) {
        const char *item;
        size_t len;
        p = list_next(p, &item, &len);
        if (!name_pattern_valid(item, len))
            return 0;
    }
    return 1;
}

/* True when room matches the one pattern p[0..len). */
static int pattern_match(const char *p, size_t len, const char *room, size_t room_len)
{
    if (len > 0 && p[len - 1] == '*')
        return room_len >= len - 1 && !memcmp(p, room, len - 1);
    return room_len == len && !memcmp(p, room, len);
}

int name_patterns_match(const char *list, const char *room)
{
    size_t room_len = strlen(room);
    for (const char *p = *list ? list : NULL; p;) {
        const char *item;
        size_t len;
        p = list_next(p, &item, &len);
        if (pattern_match(item, len, room, room_len))
            return 1;
    }
    return 0;
}

int name_tenant_valid(const char *s, size_t len)
{
    return len <= TENANT_MAX_LEN && name_valid(s, len);
}

const char *name_key(const char *tenant, const char *name, char buf[KEY_MAX_LEN + 1])
{
    if (!tenant || !tenant[0])
        return name;
    size_t t = strlen(tenant), n = strlen(name);
    memcpy(buf, tenant, t);
    buf[t] = '/';
    memcpy(buf + t + 1, name, n + 1);
    return buf;
}

const char *name_of_key(const char *key)
{
    const char *slash = strchr(key, '/');
    return slash ? slash + 1 : key;
}

size_t name_key_tenant_len(const char *key)
{
    const char *slash = strchr(key, '/');
    return slash ? (size_t)(slash - key) : 0;
}
