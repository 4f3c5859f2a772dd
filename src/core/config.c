/* config.c - defaults, WSFAN_* environment variables and flags, validated
 * from one table so that every option is parsed and reported the same way. */
#include "core/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/names.h"
#include "core/redis_url.h"

enum opt_kind {
    OPT_INT, OPT_SIZE, OPT_LISTEN, OPT_CHOICE, OPT_BOOL, OPT_NAME, OPT_REDIS_URL, OPT_SECRET, OPT_TEXT, OPT_PATH,
    OPT_PATTERNS, OPT_ORIGINS, OPT_CIDRS,
};

struct option_spec {
    const char *name;  /* flag without the dashes; the env var is derived */
    enum opt_kind kind;
    size_t offset, size; /* of the field in struct config */
    long long min, max;
    const char *help;
    unsigned flags;
};

enum {
    OPT_LIVE = 1,         /* a SIGHUP applies it to the running server */
    OPT_HOST_DEFAULT = 2, /* the default depends on the machine or the process */
};

static const char *const level_names[] = {"error", "warn", "info", "debug", NULL};
static const char *const format_names[] = {"text", "json", NULL};
static const char *const auth_names[] = {"none", "jwt", NULL};
_Static_assert(sizeof(enum log_level) == sizeof(int) && sizeof(enum log_format) == sizeof(int) &&
                   sizeof(enum config_auth) == sizeof(int),
               "an OPT_CHOICE field is an enum the size of an int");

#define FIELD(f) offsetof(struct config, f), sizeof(((struct config *)0)->f)
#define OFFSET(f) offsetof(struct config, f)

static const struct option_spec options[] = {
    {"config", OPT_PATH, FIELD(config_file), 1, 4095,
     "a file of options, one NAME VALUE a line (docs/operations.md); variables and flags win over it", 0},
    {"listen", OPT_LISTEN, FIELD(listen_host), 0, 0, "HOST:PORT to listen on (default 127.0.0.1:8080)", 0},
    {"admin-listen", OPT_LISTEN, FIELD(admin_host), 0, 0,
     "HOST:PORT that alone serves /api/*, /metrics and /dashboard (default: none, they are on --listen)", 0},
    {"workers", OPT_INT, FIELD(workers), 1, 256, "worker threads (default: number of cores)", OPT_HOST_DEFAULT},
    {"max-message", OPT_SIZE, FIELD(max_message), 128, 1LL << 30,
     "largest client message in bytes, e.g. 64k (default 1m)", 0},
    {"compression", OPT_BOOL, FIELD(compression), 0, 1,
     "negotiate permessage-deflate with clients that offer it, and compress the events they get "
     "(default on)", OPT_LIVE},
    {"compress-min", OPT_SIZE, FIELD(compress_min), 0, 1LL << 30,
     "events shorter than this many bytes go uncompressed, e.g. 1k (default 256)", OPT_LIVE},
    {"max-connections", OPT_INT, FIELD(max_connections), 1, 10000000,
     "connections, WebSocket or still in HTTP, before 503 (default 1000000)", OPT_LIVE},
    {"max-connections-per-ip", OPT_INT, FIELD(max_connections_per_ip), 0, 10000000,
     "connections from one client address before 429, 0 for no limit (default 1000)", OPT_LIVE},
    {"heartbeat", OPT_INT, FIELD(heartbeat), 1, 3600, "seconds between pings (default 25)", 0},
    {"send-queue-limit", OPT_SIZE, FIELD(send_queue_limit), 1024, 1LL << 32,
     "bytes queued for a client before it is closed with 1013 (default 4m)", 0},
    {"handshake-timeout", OPT_INT, FIELD(handshake_timeout), 1, 3600,
     "seconds to complete the TLS handshake and to send a complete request head (default 10)", 0},
    {"tls-cert", OPT_PATH, FIELD(tls_cert), 1, 4095,
     "PEM file of the certificate, then its chain: --listen and --admin-listen serve https:// and wss:// only, "
     "TLS 1.2 and 1.3; SIGHUP reloads it (default: none, plaintext)", OPT_LIVE},
    {"tls-key", OPT_PATH, FIELD(tls_key), 1, 4095, "PEM file of the private key of --tls-cert", OPT_LIVE},
    {"allowed-origins", OPT_ORIGINS, FIELD(allowed_origins), 0, 0,
     "origins besides the server's own whose pages may open WebSockets: https://app.example.com,"
     "https://*.example.com or * (default: none)", OPT_LIVE},
    {"trusted-proxies", OPT_CIDRS, FIELD(trusted_proxies), 0, 0,
     "CIDR,.. of proxies whose X-Forwarded-For names the client, e.g. 10.0.0.0/8,::1 (default: none)", 0},
    {"log-level", OPT_CHOICE, FIELD(log_level), 0, 0, "error, warn, info or debug (default info)", OPT_LIVE},
    {"log-format", OPT_CHOICE, FIELD(log_format), 0, 0,
     "text, or json for one JSON object a line (default text)", OPT_LIVE},
    {"log-connections", OPT_BOOL, FIELD(log_connections), 0, 1,
     "log WebSocket sessions opened and closed and refused handshakes at info, not debug (default off)", OPT_LIVE},
    {"max-rooms", OPT_INT, FIELD(max_rooms), 1, 100000, "rooms one connection may join (default 100)", 0},
    {"rate-limit", OPT_INT, FIELD(rate_limit), 0, 1000000,
     "commands per second per connection, 0 for no limit (default 100)", OPT_LIVE},
    {"max-data", OPT_SIZE, FIELD(max_data), 16, 1LL << 30,
     "longest data of one message as JSON text, e.g. 16k (default 64k)", OPT_LIVE},
    {"history-length", OPT_INT, FIELD(history_length), 0, 1000000,
     "messages kept per room, 0 for none (default 100)", 0},
    {"history-ttl", OPT_INT, FIELD(history_ttl), 0, 100000000,
     "seconds a message stays in history, 0 for no limit (default 3600)", 0},
    {"history-memory", OPT_SIZE, FIELD(history_memory), 0, 1LL << 40,
     "bytes of history the memory store keeps over all rooms, least recently used rooms go first, "
     "0 for no limit (default 256m)", 0},
    {"max-replay", OPT_INT, FIELD(max_replay), 1, 1000000,
     "most messages one join since replays; more answers recovered:false (default 1000)", 0},
    {"idempotency-window", OPT_INT, FIELD(idempotency_window), 0, 86400,
     "seconds a publish key is remembered in its room, 0 to ignore keys (default 300)", 0},
    {"allow-broadcast", OPT_BOOL, FIELD(allow_broadcast), 0, 1,
     "let clients use the broadcast command (default off)", 0},
    {"node-id", OPT_NAME, FIELD(node_id), 1, 128, "this node's id (default: host name and pid)", OPT_HOST_DEFAULT},
    {"redis", OPT_REDIS_URL, FIELD(redis_url), 0, 0,
     "redis://[user:pass@]host:port[/db] (or redis+sentinel://, redis+cluster://; rediss:// and the like over TLS): "
     "share rooms, users and history with other nodes (default: none)", 0},
    {"store-redis", OPT_REDIS_URL, FIELD(store_redis_url), 0, 0,
     "a different Redis for history and presence (default: the --redis one)", 0},
    {"redis-ca", OPT_PATH, FIELD(redis_ca), 1, 4095,
     "PEM file of the CAs a rediss:// server's certificate must chain to (default: the system's)", 0},
    {"redis-cert", OPT_PATH, FIELD(redis_cert), 1, 4095,
     "PEM file of the client certificate (then its chain) for a rediss:// server that asks for one "
     "(default: none)", 0},
    {"redis-key", OPT_PATH, FIELD(redis_key), 1, 4095, "PEM file of the private key of --redis-cert", 0},
    {"namespace", OPT_NAME, FIELD(ns), 1, 128, "prefix of every Redis key and channel (default wsfan)", 0},
    {"redis-backoff-min", OPT_INT, FIELD(redis_backoff_min), 10, 600000,
     "milliseconds before the first Redis reconnect (default 100)", 0},
    {"redis-backoff-max", OPT_INT, FIELD(redis_backoff_max), 10, 600000,
     "longest wait between Redis reconnects in milliseconds (default 5000)", 0},
    {"redis-timeout", OPT_INT, FIELD(redis_timeout), 100, 600000,
     "milliseconds a Redis link may take to connect or to answer its health check before it is "
     "reconnected (default 3000)", 0},
    {"position-sync", OPT_INT, FIELD(position_sync), 0, 600000,
     "milliseconds between checks that every room delivered what its Redis history holds; a room behind "
     "for two checks fills the gap (default 1000, 0: no checks)", 0},
    {"presence-ttl", OPT_INT, FIELD(presence_ttl), 2, 3600,
     "seconds after which a dead node's users leave presence (default 15)", 0},
    {"request-timeout", OPT_INT, FIELD(request_timeout), 0, 600000,
     "milliseconds a command or API request waits for the bus before it is answered unavailable "
     "(default 10000, 0: no limit)", 0},
    {"drain-seconds", OPT_INT, FIELD(drain_seconds), 0, 3600,
     "on SIGTERM, close connections spread over this many seconds, so that clients do not all reconnect "
     "at once (default 0: all at once)", 0},
    {"api-key", OPT_SECRET, FIELD(api_key), 16, 256,
     "require Authorization: Bearer <key> (16 to 256 characters) on /api/* and /metrics; prefer the variable, ps "
     "shows flags (default: none, and they answer loopback clients only)", OPT_LIVE},
    {"auth", OPT_CHOICE, FIELD(auth), 0, 0, "none (?user= names the user) or jwt (a token on /ws) (default none)", 0},
    {"jwt-secret", OPT_SECRET, FIELD(jwt_secret), 1, 512,
     "the HS256 key of --auth jwt; prefer the variable, ps shows flags", 0},
    {"jwt-public-key", OPT_PATH, FIELD(jwt_public_key), 1, 4095,
     "PEM file of the public key of --auth jwt: RSA for RS256, EC P-256 for ES256", 0},
    {"jwt-leeway", OPT_INT, FIELD(jwt_leeway), 0, 3600, "seconds of clock slack on a token's exp and nbf (default 5)", 0},
    {"jwt-audience", OPT_TEXT, FIELD(jwt_audience), 1, 256, "a token's aud must name this (default: not checked)", 0},
    {"jwt-issuer", OPT_TEXT, FIELD(jwt_issuer), 1, 256, "a token's iss must be this (default: not checked)", 0},
    {"allow-anonymous", OPT_BOOL, FIELD(allow_anonymous), 0, 1,
     "with --auth jwt, let a connection without a token in, anonymous (default: 401)", 0},
    {"anonymous-rooms", OPT_PATTERNS, FIELD(anonymous_rooms), 0, 1024,
     "room patterns anonymous connections may join and read, e.g. 'lobby,public:*' (default: none)", 0},
};

/* The names of an OPT_CHOICE option's enum values, in order, then NULL. */
static const char *const *choices_of(const struct option_spec *o)
{
    if (o->offset == OFFSET(log_level))
        return level_names;
    return o->offset == OFFSET(log_format) ? format_names : auth_names;
}

static void config_defaults(struct config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    strcpy(cfg->listen_host, "127.0.0.1");
    cfg->listen_port = 8080;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->workers = cores > 0 ? (cores > 256 ? 256 : (int)cores) : 1;
    cfg->max_message = 1 << 20;
    cfg->compression = 1;
    cfg->compress_min = 256;
    cfg->max_connections = 1000000;
    cfg->max_connections_per_ip = 1000;
    cfg->heartbeat = 25;
    cfg->send_queue_limit = 4 << 20;
    cfg->handshake_timeout = 10;
    cfg->log_level = LOG_INFO;
    cfg->max_rooms = 100;
    cfg->rate_limit = 100;
    cfg->max_data = 64 << 10;
    cfg->history_length = 100;
    cfg->history_ttl = 3600;
    cfg->history_memory = (size_t)256 << 20;
    cfg->max_replay = 1000;
    cfg->idempotency_window = 300;
    cfg->allow_broadcast = 0;
    strcpy(cfg->ns, "wsfan");
    cfg->redis_backoff_min = 100;
    cfg->redis_backoff_max = 5000;
    cfg->redis_timeout = 3000;
    cfg->position_sync = 1000;
    cfg->request_timeout = 10000;
    cfg->presence_ttl = 15;
    cfg->auth = CONFIG_AUTH_NONE;
    cfg->jwt_leeway = 5;
    char host[64] = "wsfan";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    snprintf(cfg->node_id, sizeof cfg->node_id, "%s-%ld", host, (long)getpid());
}

static int parse_integer(const char *s, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end)
        return -1;
    *out = v;
    return 0;
}

/* "64k", "1m", "2g" or plain bytes. */
static int parse_size(const char *s, long long *out)
{
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)*s))
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    unsigned shift = 0;
    switch (tolower((unsigned char)*end)) {
    case '\0': break;
    case 'k': shift = 10; end++; break;
    case 'm': shift = 20; end++; break;
    case 'g': shift = 30; end++; break;
    default: return -1;
    }
    if (*end == 'b' || *end == 'B')
        end++;
    if (*end || v > (1ULL << 40) >> shift)
        return -1;
    *out = (long long)(v << shift);
    return 0;
}

/* HOST:PORT into host (cap bytes) and *port. */
static int parse_listen(const char *s, char *host, size_t cap, uint16_t *port_out)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || (size_t)(colon - s) >= cap)
        return -1;
    long long port;
    if (parse_integer(colon + 1, &port) || port < 1 || port > 65535)
        return -1;
    /* [::1]:8080 names an IPv6 host. */
    if (s[0] == '[' && colon[-1] == ']') {
        s++;
        colon--;
    }
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    *port_out = (uint16_t)port;
    return 0;
}

static int parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (!strcasecmp(s, yes[i])) {
            *out = 1;
            return 0;
        }
        if (!strcasecmp(s, no[i])) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

static void describe_allowed(const struct option_spec *o, char *buf, size_t cap)
{
    switch (o->kind) {
    case OPT_INT:
        snprintf(buf, cap, "expected a whole number from %lld to %lld", o->min, o->max);
        break;
    case OPT_SIZE:
        snprintf(buf, cap, "expected a size from %lld to %lld bytes, such as 64k or 1m", o->min, o->max);
        break;
    case OPT_LISTEN: snprintf(buf, cap, "expected HOST:PORT with a port from 1 to 65535"); break;
    case OPT_CHOICE: {
        size_t n = (size_t)snprintf(buf, cap, "expected");
        const char *const *names = choices_of(o);
        for (size_t i = 0; names[i] && n < cap; i++)
            n += (size_t)snprintf(buf + n, cap - n, "%s %s", !i ? "" : names[i + 1] ? "," : " or", names[i]);
        break;
    }
    case OPT_BOOL: snprintf(buf, cap, "expected true or false"); break;
    case OPT_NAME: snprintf(buf, cap, "expected 1 to 128 characters of A-Z a-z 0-9 _ . : -"); break;
    case OPT_REDIS_URL:
        snprintf(buf, cap, "expected redis://[user:pass@]host:port[/db], "
                           "redis+sentinel://[user:pass@]host:port[,host:port..]/MASTER[/db] or "
                           "redis+cluster://[user:pass@]host:port[,host:port..]");
        break;
    case OPT_SECRET:
        snprintf(buf, cap, "expected %lld to %lld printable characters without spaces%s", o->min, o->max,
                 o->min >= 16 ? " (a shorter key is too easy to guess)" : "");
        break;
    case OPT_TEXT:
        snprintf(buf, cap, "expected %lld to %lld printable characters without spaces", o->min, o->max);
        break;
    case OPT_ORIGINS:
        snprintf(buf, cap, "expected * or a comma-separated list of origins such as https://app.example.com or "
                           "https://*.example.com (no path; at most %d)", ORIGIN_LIST_MAX);
        break;
    case OPT_CIDRS:
        snprintf(buf, cap, "expected a comma-separated list of addresses or CIDR ranges such as 10.0.0.0/8 or "
                           "2001:db8::/32 (at most %d)", NETADDR_LIST_MAX);
        break;
    case OPT_PATH: snprintf(buf, cap, "expected a file name of at most %lld bytes", o->max); break;
    case OPT_PATTERNS:
        snprintf(buf, cap, "expected room patterns separated by commas (an id, a prefix ending in *, or *), "
                           "at most %lld bytes", o->max);
        break;
    }
}

/* Applies one value; returns 0, or -1 when it is not allowed. */
static int apply(struct config *cfg, const struct option_spec *o, const char *value)
{
    char *field = (char *)cfg + o->offset;
    long long v;
    switch (o->kind) {
    case OPT_INT:
        if (parse_integer(value, &v) || v < o->min || v > o->max)
            return -1;
        *(int *)field = (int)v;
        return 0;
    case OPT_SIZE:
        if (parse_size(value, &v) || v < o->min || v > o->max)
            return -1;
        *(size_t *)field = (size_t)v;
        return 0;
    case OPT_LISTEN:
        if (o->offset == OFFSET(admin_host))
            return parse_listen(value, cfg->admin_host, sizeof cfg->admin_host, &cfg->admin_port);
        return parse_listen(value, cfg->listen_host, sizeof cfg->listen_host, &cfg->listen_port);
    case OPT_ORIGINS:
        return origin_list_parse(value, (struct origin_list *)field);
    case OPT_CIDRS:
        return net_cidr_list_parse(value, (struct net_cidr_list *)field);
    case OPT_CHOICE:
        /* The field is an enum, an int in size. */
        for (int i = 0; choices_of(o)[i]; i++)
            if (!strcmp(value, choices_of(o)[i])) {
                *(int *)field = i;
                return 0;
            }
        return -1;
    case OPT_BOOL:
        return parse_bool(value, (int *)field);
    case OPT_NAME:
        if (!name_valid(value, strlen(value)))
            return -1;
        strcpy(field, value);
        return 0;
    case OPT_SECRET:
    case OPT_TEXT: {
        size_t len = strlen(value);
        if (len < (size_t)o->min || len > (size_t)o->max)
            return -1;
        for (size_t i = 0; i < len; i++)
            if (!isgraph((unsigned char)value[i]))
                return -1;
        strcpy(field, value);
        return 0;
    }
    case OPT_PATH:
    case OPT_PATTERNS: {
        size_t len = strlen(value);
        if (len < (size_t)o->min || len > (size_t)o->max || (o->kind == OPT_PATTERNS && !name_patterns_valid(value)))
            return -1;
        strcpy(field, value);
        return 0;
    }
    case OPT_REDIS_URL: {
        struct redis_url url;
        if (strlen(value) >= sizeof cfg->redis_url || redis_url_parse(value, &url))
            return -1;
        strcpy(field, value);
        return 0;
    }
    }
    return -1;
}

/* Where a refusal's one line goes (config_parse prints it, a reload logs
 * it), and what the flags asked for besides options. */
enum action { ACTION_NONE, ACTION_HELP, ACTION_VERSION, ACTION_CHECK, ACTION_PRINT };

struct parse {
    char *err;
    size_t cap;
    enum action action;
};

static int fail(struct parse *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(struct parse *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err, p->cap, fmt, ap);
    va_end(ap);
    return CONFIG_ERROR;
}

static int report(struct parse *p, const char *source, const char *value, const struct option_spec *o)
{
    char allowed[256], masked[sizeof ((struct config *)0)->redis_url];
    describe_allowed(o, allowed, sizeof allowed);
    /* A secret, or a Redis URL's password, is not repeated where logs
     * would keep it. */
    if (o->kind == OPT_REDIS_URL)
        redis_url_mask(value, masked, sizeof masked);
    return fail(p, "%s=%s: %s", source, o->kind == OPT_SECRET ? "(hidden)" : o->kind == OPT_REDIS_URL ? masked : value,
                allowed);
}

static const struct option_spec *find_option(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof options / sizeof options[0]; i++)
        if (strlen(options[i].name) == len && !strncmp(options[i].name, name, len))
            return &options[i];
    return NULL;
}

/* ---- values as text: what --print-config writes and a reload logs ---- */

#define VALUE_TEXT_MAX 20480 /* 64 origins of 256-byte hosts */

static void format_size(size_t v, char *buf, size_t cap)
{
    static const char units[] = "gmk";
    for (unsigned i = 0; i < 3; i++) {
        unsigned shift = 30 - 10 * i;
        if (v && !(v & (((size_t)1 << shift) - 1))) {
            snprintf(buf, cap, "%zu%c", v >> shift, units[i]);
            return;
        }
    }
    snprintf(buf, cap, "%zu", v);
}

static void format_origins(const struct origin_list *l, char *buf, size_t cap)
{
    size_t n = (size_t)snprintf(buf, cap, "%s", l->any ? "*" : "");
    for (size_t i = 0; i < l->count && n < cap; i++) {
        const struct origin_pattern *o = &l->items[i];
        n += (size_t)snprintf(buf + n, cap - n, "%s%s://%s%s", n ? "," : "", o->scheme, o->subdomains ? "*." : "",
                              o->host);
        if (o->port && n < cap)
            n += (size_t)snprintf(buf + n, cap - n, ":%u", o->port);
    }
}

static void format_cidrs(const struct net_cidr_list *l, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < l->count && n < cap; i++) {
        char addr[NETADDR_TEXT_MAX];
        net_addr_format(&l->items[i].addr, addr);
        /* An IPv4 range is kept over the 128 bits of its mapped form. */
        unsigned bits = l->items[i].bits - (net_addr_is_v4(&l->items[i].addr) ? 96 : 0);
        n += (size_t)snprintf(buf + n, cap - n, "%s%s/%u", i ? "," : "", addr, bits);
    }
}

/* o's value in cfg as apply() reads it back; "" when unset. */
static void format_value(const struct config *cfg, const struct option_spec *o, char *buf, size_t cap)
{
    const char *field = (const char *)cfg + o->offset;
    switch (o->kind) {
    case OPT_INT: snprintf(buf, cap, "%d", *(const int *)field); return;
    case OPT_SIZE: format_size(*(const size_t *)field, buf, cap); return;
    case OPT_LISTEN: {
        unsigned port = o->offset == OFFSET(admin_host) ? cfg->admin_port : cfg->listen_port;
        if (!*field)
            buf[0] = '\0';
        else
            snprintf(buf, cap, strchr(field, ':') ? "[%s]:%u" : "%s:%u", field, port);
        return;
    }
    case OPT_CHOICE: snprintf(buf, cap, "%s", choices_of(o)[*(const int *)field]); return;
    case OPT_BOOL: snprintf(buf, cap, "%s", *(const int *)field ? "yes" : "no"); return;
    case OPT_ORIGINS: format_origins((const struct origin_list *)field, buf, cap); return;
    case OPT_CIDRS: format_cidrs((const struct net_cidr_list *)field, buf, cap); return;
    case OPT_NAME:
    case OPT_REDIS_URL:
    case OPT_SECRET:
    case OPT_TEXT:
    case OPT_PATH:
    case OPT_PATTERNS: snprintf(buf, cap, "%s", field); return;
    }
}

/* A value as a config file holds it: quoted, with " and \ escaped, when it
 * is empty or has a blank, a quote or a backslash. */
static void print_value(const char *v)
{
    if (*v && !strpbrk(v, " \t\"\\")) {
        fputs(v, stdout);
        return;
    }
    putchar('"');
    for (; *v; v++) {
        if (*v == '"' || *v == '\\')
            putchar('\\');
        putchar(*v);
    }
    putchar('"');
}

/* cfg as a config file: every option with its help; those at their default
 * are commented out, so that with no options set this is the example file
 * (packaging/wsfan.conf). Secrets are not printed. */
static void print_config(const struct config *cfg)
{
    struct config dflt;
    char value[VALUE_TEXT_MAX], deflt[VALUE_TEXT_MAX];
    config_defaults(&dflt);
    printf("# wsfan configuration file, written by `wsfan --print-config`.\n"
           "# One option a line: NAME VALUE, NAME being the flag without its dashes.\n"
           "# A value with blanks goes in double quotes; \"include FILE\" reads another\n"
           "# file. A commented option keeps its default. WSFAN_* variables and flags\n"
           "# win over this file; SIGHUP reads it again (docs/operations.md).\n");
    for (size_t i = 0; i < sizeof options / sizeof options[0]; i++) {
        const struct option_spec *o = &options[i];
        if (o->offset == OFFSET(config_file))
            continue;
        format_value(cfg, o, value, sizeof value);
        format_value(&dflt, o, deflt, sizeof deflt);
        int is_default = !strcmp(value, deflt);
        printf("\n# %s\n", o->help);
        if (o->kind == OPT_SECRET && value[0])
            printf("# %s is set; not printed\n", o->name);
        else if (is_default && (!value[0] || (o->flags & OPT_HOST_DEFAULT)))
            printf("# %s\n", o->name);
        else {
            printf("%s%s ", is_default ? "# " : "", o->name);
            print_value(value);
            putchar('\n');
        }
    }
}

int config_apply_live(struct config *cfg, const struct config *fresh)
{
    char was[VALUE_TEXT_MAX], now[VALUE_TEXT_MAX];
    int changed = 0;
    for (size_t i = 0; i < sizeof options / sizeof options[0]; i++) {
        const struct option_spec *o = &options[i];
        format_value(cfg, o, was, sizeof was);
        format_value(fresh, o, now, sizeof now);
        if (!strcmp(was, now))
            continue;
        if (!(o->flags & OPT_LIVE)) {
            log_info("config: %s changed; takes effect after a restart", o->name);
            continue;
        }
        if (o->kind == OPT_SECRET)
            log_info("config: %s changed", o->name);
        else
            log_info("config: %s %s -> %s", o->name, was[0] ? was : "(none)", now[0] ? now : "(none)");
        memcpy((char *)cfg + o->offset, (const char *)fresh + o->offset, o->size);
        changed++;
    }
    return changed;
}

/* ---- the config file ---- */

#define INCLUDE_DEPTH_MAX 8

static int read_file(struct parse *p, struct config *cfg, const char *path, const char *place, char **chain,
                     int depth);

/* "include FILE" at place (FILE:LINE) of path: FILE is relative to path's
 * folder; a file that includes itself, directly or not, is refused. */
static int include(struct parse *p, struct config *cfg, const char *path, const char *place, const char *file,
                   char **chain, int depth)
{
    if (depth == INCLUDE_DEPTH_MAX)
        return fail(p, "%s: include %s: more than %d levels of include", place, file, INCLUDE_DEPTH_MAX);
    char target[PATH_MAX];
    const char *slash = strrchr(path, '/');
    int dir_len = file[0] != '/' && slash ? (int)(slash - path + 1) : 0;
    if (snprintf(target, sizeof target, "%.*s%s", dir_len, path, file) >= (int)sizeof target)
        return fail(p, "%s: include %s: the path is too long", place, file);
    char *real = realpath(target, NULL);
    for (int i = 0; real && i <= depth; i++)
        if (!strcmp(chain[i], real)) {
            free(real);
            return fail(p, "%s: include %s: a loop, %s is being read already", place, file, target);
        }
    free(real);
    char inner[PATH_MAX + 64];
    snprintf(inner, sizeof inner, "%s: include ", place);
    return read_file(p, cfg, target, inner, chain, depth + 1);
}

/* One line of path: blank, a # comment, NAME VALUE or include FILE. The
 * value is the rest of the line less surrounding blanks, or a string in
 * double quotes where \" and \\ stand for " and \. */
static int read_line(struct parse *p, struct config *cfg, const char *path, unsigned lineno, char *line,
                     char **chain, int depth)
{
    char *s = line + strspn(line, " \t\r\n");
    if (!*s || *s == '#')
        return CONFIG_OK;
    char place[PATH_MAX + 32];
    snprintf(place, sizeof place, "%s:%u", path, lineno);
    const char *name = s;
    int name_len = (int)strcspn(s, " \t\r\n");
    s += name_len;
    s += strspn(s, " \t");
    char *value = s;
    int quoted = *s == '"';
    if (quoted) {
        char *w = value = ++s;
        for (; *s != '"'; *w++ = *s++) {
            if (!*s || *s == '\n')
                return fail(p, "%s: %.*s: the value's closing quote is missing", place, name_len, name);
            if (*s == '\\' && (s[1] == '"' || s[1] == '\\'))
                s++;
        }
        *w = '\0';
        s++;
        if (s[strspn(s, " \t\r\n")])
            return fail(p, "%s: %.*s: text after the closing quote", place, name_len, name);
    } else {
        size_t len = strlen(value);
        while (len && strchr(" \t\r\n", value[len - 1]))
            len--;
        value[len] = '\0';
    }
    if (name_len == 7 && !strncmp(name, "include", 7))
        return *value ? include(p, cfg, path, place, value, chain, depth)
                      : fail(p, "%s: include: missing value; the file to read", place);
    const struct option_spec *o = find_option(name, (size_t)name_len);
    if (!o)
        return fail(p, "%s: %.*s: unknown option (see --help)", place, name_len, name);
    if (o->offset == OFFSET(config_file))
        return fail(p, "%s: config: not allowed in a config file; use include FILE", place);
    if (!*value && !quoted)
        return fail(p, "%s: %s: missing value; %s", place, o->name, o->help);
    char source[PATH_MAX + 64];
    snprintf(source, sizeof source, "%s: %s", place, o->name);
    return apply(cfg, o, value) ? report(p, source, value, o) : CONFIG_OK;
}

/* Applies the options of path, read at place ("" or "FILE:LINE: include ");
 * chain holds the real paths of the files that include it. */
static int read_file(struct parse *p, struct config *cfg, const char *path, const char *place, char **chain,
                     int depth)
{
    FILE *f = fopen(path, "r");
    if (!f || !(chain[depth] = realpath(path, NULL))) {
        int err = errno;
        if (f)
            fclose(f);
        return fail(p, "%s%s: cannot read it: %s", *place ? place : "config file ", path, strerror(err));
    }
    char *line = NULL;
    size_t cap = 0;
    unsigned lineno = 0;
    int r = CONFIG_OK;
    while (r == CONFIG_OK && getline(&line, &cap, f) >= 0)
        r = read_line(p, cfg, path, ++lineno, line, chain, depth);
    if (r == CONFIG_OK && ferror(f))
        r = fail(p, "%s%s: cannot read it: %s", place, path, strerror(errno));
    free(line);
    fclose(f);
    free(chain[depth]);
    return r;
}

/* ---- variables and flags ---- */

static void env_name(const struct option_spec *o, char *buf, size_t cap)
{
    size_t n = (size_t)snprintf(buf, cap, "WSFAN_");
    for (const char *p = o->name; *p && n + 1 < cap; p++)
        buf[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    buf[n] = '\0';
}

static void print_help(void)
{
    printf("usage: wsfan [options]\n\n"
           "A WebSocket fan-out server: rooms, users and everyone, across threads and nodes.\n\n"
           "options (each also settable as WSFAN_<NAME>, e.g. WSFAN_MAX_MESSAGE=64k, and as NAME VALUE in the\n"
           "--config file; the flag wins over the variable, the variable over the file):\n");
    for (size_t i = 0; i < sizeof options / sizeof options[0]; i++) {
        char env[64];
        env_name(&options[i], env, sizeof env);
        printf("  --%-20s %s [%s]\n", options[i].name, options[i].help, env);
    }
    printf("  --%-20s %s\n  --%-20s %s\n  --%-20s %s\n  --%-20s %s\n", "check-config",
           "check the options and the config file, print \"configuration OK\" and exit", "print-config",
           "print the options in effect as a config file and exit", "help", "show this help", "version",
           "print the version");
}

static int apply_env(struct parse *p, struct config *cfg)
{
    for (size_t i = 0; i < sizeof options / sizeof options[0]; i++) {
        char env[64];
        env_name(&options[i], env, sizeof env);
        const char *value = getenv(env);
        if (value && apply(cfg, &options[i], value))
            return report(p, env, value, &options[i]);
    }
    return CONFIG_OK;
}

/* Returns CONFIG_EXIT at --help or --version. */
static int apply_flags(struct parse *p, struct config *cfg, int argc, char **argv)
{
    static const char *const actions[] = {"", "--help", "--version", "--check-config", "--print-config"};
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "-h"))
            arg = "--help";
        enum action a = ACTION_HELP;
        while (a <= ACTION_PRINT && strcmp(arg, actions[a]))
            a++;
        if (a <= ACTION_PRINT) {
            p->action = a;
            if (a == ACTION_HELP || a == ACTION_VERSION)
                return CONFIG_EXIT;
            continue;
        }
        if (strncmp(arg, "--", 2))
            return fail(p, "%s: unexpected argument; options start with -- (see --help)", arg);
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        const struct option_spec *o = find_option(name, name_len);
        if (!o)
            return fail(p, "%.*s: unknown option (see --help)", (int)(name_len + 2), arg);
        const char *value;
        if (eq)
            value = eq + 1;
        else if (o->kind == OPT_BOOL && (i + 1 >= argc || parse_bool(argv[i + 1], &(int){0})))
            value = "true";
        else if (i + 1 < argc)
            value = argv[++i];
        else
            return fail(p, "--%s: missing value; %s", o->name, o->help);
        if (apply(cfg, o, value)) {
            char flag[64];
            snprintf(flag, sizeof flag, "--%s", o->name);
            return report(p, flag, value, o);
        }
    }
    return CONFIG_OK;
}

/* The authentication flags fit together (docs/protocol.md section 1a). The
 * key file itself is read at start by the composition root. */
static int check_auth(struct parse *p, const struct config *cfg)
{
    if (cfg->auth == CONFIG_AUTH_NONE) {
        /* A key or an anonymous rule that has no effect would let an
         * operator believe clients are checked. */
        const char *set = cfg->jwt_secret[0]        ? "--jwt-secret (or WSFAN_JWT_SECRET)"
                          : cfg->jwt_public_key[0]  ? "--jwt-public-key"
                          : cfg->jwt_audience[0]    ? "--jwt-audience"
                          : cfg->jwt_issuer[0]      ? "--jwt-issuer"
                          : cfg->allow_anonymous    ? "--allow-anonymous"
                          : cfg->anonymous_rooms[0] ? "--anonymous-rooms"
                                                    : NULL;
        if (set)
            return fail(p, "%s: only applies with --auth jwt; add --auth jwt or remove it", set);
        return CONFIG_OK;
    }
    if (!cfg->jwt_secret[0] == !cfg->jwt_public_key[0])
        return fail(p,
                    "--auth jwt: needs exactly one key: --jwt-secret (better: WSFAN_JWT_SECRET) for "
                    "HS256, or --jwt-public-key FILE for RS256 or ES256%s",
                    cfg->jwt_secret[0] ? ", not both" : "");
    if (cfg->anonymous_rooms[0] && !cfg->allow_anonymous)
        return fail(p, "--anonymous-rooms=%s: needs --allow-anonymous as well", cfg->anonymous_rooms);
    return CONFIG_OK;
}

static int uses_tls(const char *url)
{
    struct redis_url u;
    return url[0] && !redis_url_parse(url, &u) && u.tls;
}

int config_redis_tls(const struct config *cfg)
{
    return uses_tls(cfg->redis_url) || uses_tls(cfg->store_redis_url);
}

/* Options that must fit together. */
static int check(struct parse *p, const struct config *cfg)
{
    if (cfg->redis_backoff_min > cfg->redis_backoff_max)
        return fail(p, "--redis-backoff-min=%d: must not exceed --redis-backoff-max=%d", cfg->redis_backoff_min,
                    cfg->redis_backoff_max);
    if (cfg->admin_host[0] && cfg->admin_port == cfg->listen_port && !strcmp(cfg->admin_host, cfg->listen_host))
        return fail(p, "--admin-listen=%s:%u: must differ from --listen, or the API stays public", cfg->admin_host,
                    cfg->admin_port);
    if (!cfg->tls_cert[0] != !cfg->tls_key[0])
        return fail(p, "%s: needs %s as well (PEM files of the certificate and its key)",
                    cfg->tls_cert[0] ? "--tls-cert" : "--tls-key", cfg->tls_cert[0] ? "--tls-key" : "--tls-cert");
    if (cfg->store_redis_url[0] && !cfg->redis_url[0]) {
        char masked[sizeof cfg->store_redis_url];
        redis_url_mask(cfg->store_redis_url, masked, sizeof masked);
        return fail(p, "--store-redis=%s: needs --redis as well", masked);
    }
    if (!cfg->redis_cert[0] != !cfg->redis_key[0])
        return fail(p, "%s: needs %s as well (PEM files of the client certificate and its key)",
                    cfg->redis_cert[0] ? "--redis-cert" : "--redis-key",
                    cfg->redis_cert[0] ? "--redis-key" : "--redis-cert");
    const char *redis_tls_file = cfg->redis_ca[0] ? "--redis-ca" : cfg->redis_cert[0] ? "--redis-cert" : NULL;
    if (redis_tls_file && !config_redis_tls(cfg))
        return fail(p, "%s: needs a rediss:// url in --redis or --store-redis (TLS to Redis)", redis_tls_file);
    return check_auth(p, cfg);
}

/* Defaults, then the file (when given), the variables and the flags. */
static int load_layers(struct parse *p, struct config *cfg, int argc, char **argv, const char *file)
{
    char *chain[INCLUDE_DEPTH_MAX + 1];
    config_defaults(cfg);
    int r = file ? read_file(p, cfg, file, "", chain, 0) : CONFIG_OK;
    if (r == CONFIG_OK)
        r = apply_env(p, cfg);
    return r == CONFIG_OK ? apply_flags(p, cfg, argc, argv) : r;
}

/* The variables and flags are read twice: first to learn the file's name
 * (--config or WSFAN_CONFIG), then over the file, which they win over. */
static int load(struct parse *p, struct config *cfg, int argc, char **argv)
{
    int r = load_layers(p, cfg, argc, argv, NULL);
    if (r == CONFIG_OK && cfg->config_file[0]) {
        char file[sizeof cfg->config_file];
        strcpy(file, cfg->config_file);
        r = load_layers(p, cfg, argc, argv, file);
    }
    return r == CONFIG_OK ? check(p, cfg) : r;
}

int config_load(struct config *cfg, int argc, char **argv, char *err, size_t cap)
{
    struct parse p = {.err = err, .cap = cap};
    return load(&p, cfg, argc, argv) == CONFIG_ERROR ? CONFIG_ERROR : CONFIG_OK;
}

int config_parse(struct config *cfg, int argc, char **argv)
{
    char err[PATH_MAX + 1024];
    struct parse p = {.err = err, .cap = sizeof err};
    if (load(&p, cfg, argc, argv) == CONFIG_ERROR) {
        fprintf(stderr, "wsfan: %s\n", err);
        return CONFIG_ERROR;
    }
    switch (p.action) {
    case ACTION_HELP: print_help(); return CONFIG_EXIT;
    case ACTION_VERSION: printf("wsfan %s\n", WSFAN_VERSION); return CONFIG_EXIT;
    case ACTION_PRINT: print_config(cfg); return CONFIG_EXIT;
    case ACTION_CHECK: return CONFIG_CHECK;
    case ACTION_NONE: break;
    }
    return CONFIG_OK;
}
