/* origin.c - origin patterns, the same-origin test and the loopback Host
 * test. See origin.h. */
#include "core/origin.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "core/list.h"

#include "core/netaddr.h"

static uint16_t default_port(const char *scheme)
{
    if (!strcmp(scheme, "http") || !strcmp(scheme, "ws"))
        return 80;
    if (!strcmp(scheme, "https") || !strcmp(scheme, "wss"))
        return 443;
    return 0;
}

static int host_char(char c)
{
    return isalnum((unsigned char)c) || c == '-' || c == '.' || c == '_';
}

/* ":port" at s (len bytes); 1 to 65535. */
static int parse_port(const char *s, size_t len, uint16_t *out)
{
    if (len < 2 || len > 6 || s[0] != ':')
        return -1;
    unsigned v = 0;
    for (size_t i = 1; i < len; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v == 0 || v > 65535)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

/* host[:port] of len bytes into host (lower case) and *port (0 when
 * absent). An IPv6 host keeps its brackets. */
static int parse_authority(const char *s, size_t len, char host[ORIGIN_HOST_MAX + 1], uint16_t *port)
{
    size_t host_len;
    if (len && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close)
            return -1;
        host_len = (size_t)(close - s) + 1;
        for (size_t i = 1; i + 1 < host_len; i++)
            if (!isxdigit((unsigned char)s[i]) && s[i] != ':' && s[i] != '.')
                return -1;
    } else {
        host_len = 0;
        while (host_len < len && host_char(s[host_len]))
            host_len++;
    }
    if (host_len == 0 || host_len > ORIGIN_HOST_MAX)
        return -1;
    *port = 0;
    if (host_len < len && parse_port(s + host_len, len - host_len, port))
        return -1;
    for (size_t i = 0; i < host_len; i++)
        host[i] = (char)tolower((unsigned char)s[i]);
    host[host_len] = '\0';
    return 0;
}

/* scheme://[*.]host[:port] of len bytes; wildcard: "*." is allowed. */
static int parse_origin(const char *s, size_t len, int wildcard, struct origin_pattern *out)
{
    const char *sep = NULL;
    for (size_t i = 0; i + 2 < len; i++)
        if (s[i] == ':' && s[i + 1] == '/' && s[i + 2] == '/') {
            sep = s + i;
            break;
        }
    size_t scheme_len = sep ? (size_t)(sep - s) : 0;
    if (scheme_len == 0 || scheme_len > ORIGIN_SCHEME_MAX || !isalpha((unsigned char)s[0]))
        return -1;
    for (size_t i = 0; i < scheme_len; i++) {
        char c = s[i];
        if (!isalnum((unsigned char)c) && c != '+' && c != '-' && c != '.')
            return -1;
        out->scheme[i] = (char)tolower((unsigned char)c);
    }
    out->scheme[scheme_len] = '\0';
    const char *auth = sep + 3;
    size_t auth_len = len - scheme_len - 3;
    out->subdomains = 0;
    if (wildcard && auth_len > 2 && auth[0] == '*' && auth[1] == '.') {
        out->subdomains = 1;
        auth += 2;
        auth_len -= 2;
    }
    uint16_t port;
    if (parse_authority(auth, auth_len, out->host, &port))
        return -1;
    out->port = port ? port : default_port(out->scheme);
    return 0;
}

int origin_list_parse(const char *text, struct origin_list *out)
{
    out->any = 0;
    out->count = 0;
    if (list_empty(text))
        return 0;
    for (const char *p = text; p;) {
        const char *item;
        size_t len;
        p = list_next(p, &item, &len);
        if (len == 1 && *item == '*') {
            out->any = 1;
        } else {
            if (out->count == ORIGIN_LIST_MAX || parse_origin(item, len, 1, &out->items[out->count]))
                return -1;
            out->count++;
        }
    }
    return 0;
}

/* True when name is a subdomain of domain: it ends in "." domain. */
static int is_subdomain(const char *name, const char *domain)
{
    size_t n = strlen(name), d = strlen(domain);
    return n > d + 1 && name[n - d - 1] == '.' && !strcmp(name + n - d, domain);
}

static int pattern_matches(const struct origin_pattern *p, const struct origin_pattern *o)
{
    if (strcmp(p->scheme, o->scheme) || p->port != o->port)
        return 0;
    return p->subdomains ? is_subdomain(o->host, p->host) : !strcmp(p->host, o->host);
}

int origin_allowed(const struct origin_list *l, const char *origin, const char *host)
{
    if (l->any)
        return 1;
    struct origin_pattern o;
    if (!origin || parse_origin(origin, strlen(origin), 0, &o))
        return 0;
    char own[ORIGIN_HOST_MAX + 1];
    uint16_t own_port;
    if (host && parse_authority(host, strlen(host), own, &own_port) == 0 && !strcmp(own, o.host) &&
        (own_port ? own_port : default_port(o.scheme)) == o.port)
        return 1;
    for (size_t i = 0; i < l->count; i++)
        if (pattern_matches(&l->items[i], &o))
            return 1;
    return 0;
}

int host_is_loopback(const char *host)
{
    char name[ORIGIN_HOST_MAX + 1];
    uint16_t port;
    if (!host || parse_authority(host, strlen(host), name, &port))
        return 0;
    if (!strcmp(name, "localhost"))
        return 1;
    struct net_addr a;
    size_t len = strlen(name);
    int parsed = name[0] == '[' ? net_addr_parse(name + 1, len - 2, &a) : net_addr_parse(name, len, &a);
    return parsed == 0 && net_addr_is_loopback(&a);
}
