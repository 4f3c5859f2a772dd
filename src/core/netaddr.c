/* netaddr.c - IPv4 and IPv6 addresses in one form, CIDR ranges, and the
 * X-Forwarded-For walk. See netaddr.h. */
#include "core/netaddr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "core/list.h"

static const uint8_t v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

int net_addr_is_v4(const struct net_addr *a)
{
    return memcmp(a->b, v4_prefix, sizeof v4_prefix) == 0;
}

int net_addr_parse(const char *s, size_t len, struct net_addr *out)
{
    char text[NETADDR_TEXT_MAX];
    if (len == 0 || len >= sizeof text)
        return -1;
    memcpy(text, s, len);
    text[len] = '\0';
    struct in_addr v4;
    if (inet_pton(AF_INET, text, &v4) == 1) {
        memcpy(out->b, v4_prefix, sizeof v4_prefix);
        memcpy(out->b + 12, &v4, 4);
        return 0;
    }
    return inet_pton(AF_INET6, text, out->b) == 1 ? 0 : -1;
}

int net_addr_from_sockaddr(const struct sockaddr *sa, struct net_addr *out)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        memcpy(out->b, v4_prefix, sizeof v4_prefix);
        memcpy(out->b + 12, &in->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(out->b, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return 0;
    }
    return -1;
}

void net_addr_format(const struct net_addr *a, char out[NETADDR_TEXT_MAX])
{
    if (net_addr_is_v4(a))
        inet_ntop(AF_INET, a->b + 12, out, NETADDR_TEXT_MAX);
    else
        inet_ntop(AF_INET6, a->b, out, NETADDR_TEXT_MAX);
}

int net_addr_is_loopback(const struct net_addr *a)
{
    static const uint8_t v6_loopback[16] = {[15] = 1};
    if (net_addr_is_v4(a))
        return a->b[12] == 127;
    return memcmp(a->b, v6_loopback, 16) == 0;
}

/* Clears the bits of a past the first bits. */
static void mask(struct net_addr *a, unsigned bits)
{
    for (unsigned i = 0; i < 16; i++) {
        unsigned keep = bits > i * 8 ? bits - i * 8 : 0;
        if (keep < 8)
            a->b[i] &= (uint8_t)(0xff00 >> keep);
    }
}

static int parse_bits(const char *s, size_t len, unsigned max, unsigned *out)
{
    if (len == 0 || len > 3)
        return -1;
    unsigned v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

int net_cidr_parse(const char *s, size_t len, struct net_cidr *out)
{
    const char *slash = memchr(s, '/', len);
    size_t addr_len = slash ? (size_t)(slash - s) : len;
    if (net_addr_parse(s, addr_len, &out->addr))
        return -1;
    int v4 = net_addr_is_v4(&out->addr);
    unsigned bits = v4 ? 32 : 128;
    if (slash && parse_bits(slash + 1, len - addr_len - 1, bits, &bits))
        return -1;
    out->bits = (uint8_t)(v4 ? 96 + bits : bits);
    mask(&out->addr, out->bits);
    return 0;
}

int net_cidr_match(const struct net_cidr *c, const struct net_addr *a)
{
    struct net_addr m = *a;
    mask(&m, c->bits);
    return memcmp(m.b, c->addr.b, 16) == 0;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t';
}

int net_cidr_list_parse(const char *text, struct net_cidr_list *out)
{
    out->count = 0;
    if (list_empty(text))
        return 0;
    for (const char *p = text; p;) {
        const char *item;
        size_t len;
        p = list_next(p, &item, &len);
        if (out->count == NETADDR_LIST_MAX || net_cidr_parse(item, len, &out->items[out->count]))
            return -1;
        out->count++;
    }
    return 0;
}

int net_cidr_list_match(const struct net_cidr_list *l, const struct net_addr *a)
{
    for (size_t i = 0; i < l->count; i++)
        if (net_cidr_match(&l->items[i], a))
            return 1;
    return 0;
}

/* ":port" (1 to 5 digits) of len bytes, or nothing. */
static int port_ok(const char *s, size_t len)
{
    if (len == 0)
        return 1;
    if (s[0] != ':' || len < 2 || len > 6)
        return 0;
    for (size_t i = 1; i < len; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/* One X-Forwarded-For entry: an address, maybe with a port
 * ("a.b.c.d:port", "[v6]:port"). */
static int parse_hop(const char *s, size_t len, struct net_addr *out)
{
    if (len && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close)
            return -1;
        size_t addr_len = (size_t)(close - s) - 1;
        if (!port_ok(close + 1, len - addr_len - 2))
            return -1;
        return net_addr_parse(s + 1, addr_len, out);
    }
    if (net_addr_parse(s, len, out) == 0)
        return 0;
    const char *colon = memchr(s, ':', len);
    if (!colon || !port_ok(colon, len - (size_t)(colon - s)))
        return -1;
    return net_addr_parse(s, (size_t)(colon - s), out) == 0 && net_addr_is_v4(out) ? 0 : -1;
}

int net_addr_forwarded(const struct net_cidr_list *trusted, const struct net_addr *peer,
                       const char *forwarded_for, struct net_addr *out)
{
    *out = *peer;
    if (!forwarded_for || !net_cidr_list_match(trusted, peer))
        return 0;
    int from_header = 0;
    const char *end = forwarded_for + strlen(forwarded_for);
    while (end > forwarded_for) {
        const char *start = end;
        while (start > forwarded_for && start[-1] != ',')
            start--;
        const char *s = start, *e = end;
        while (s < e && is_space(*s))
            s++;
        while (e > s && is_space(e[-1]))
            e--;
        struct net_addr hop;
        if (parse_hop(s, (size_t)(e - s), &hop))
            break;
        *out = hop;
        from_header = 1;
        if (!net_cidr_list_match(trusted, &hop))
            break;
        end = start > forwarded_for ? start - 1 : start;
    }
    return from_header;
}
