/* config.c - defaults, WSFAN_* environment variables and flags, validated
 * from one table so that every option is parsed and reported the same way. */
#include "core/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/names.h"
#include "core/redis_url.h"

enum opt_kind {
    OPT_INT, OPT_SIZE, OPT_LISTEN, OPT_LEVEL, OPT_BOOL, OPT_NAME, OPT_REDIS_URL, OPT_SECRET, OPT_TEXT, OPT_PATH,
    OPT_AUTH, OPT_PATTERNS, OPT_ORIGINS, OPT_CIDRS,
};

struct option_spec {
    const char *name;  /* flag without the dashes; the env var is derived */
    enum opt_kind kind;
    size_t offset;     /* into struct config */
    long long min, max;
    const char *help;
};

#define FIELD(f) offsetof(struct config, f)

static const struct option_spec options[] = {
    {"listen", OPT_LISTEN, FIELD(listen_host), 0, 0, "HOST:PORT to listen on (default 127.0.0.1:8080)"},
    {"admin-listen", OPT_LISTEN, FIELD(admin_host), 0, 0,
     "HOST:PORT that alone serves /api/*, /metrics and /dashboard (default: none, they are on --listen)"},
    {"workers", OPT_INT, FIELD(workers), 1, 256, "worker threads (default: number of cores)"},
    {"max-message", OPT_SIZE, FIELD(max_message), 128, 1LL << 30,
     "largest client message in bytes, e.g. 64k (default 1m)"},
    {"max-connections", OPT_INT, FIELD(max_connections), 1, 10000000,
     "connections, WebSocket or still in HTTP, before 503 (default 1000000)"},
    {"max-connections-per-ip", OPT_INT, FIELD(max_connections_per_ip), 0, 10000000,
     "connections from one client address before 429, 0 for no limit (default 1000)"},
    {"heartbeat", OPT_INT, FIELD(heartbeat), 1, 3600, "seconds between pings (default 25)"},
    {"send-queue-limit", OPT_SIZE, FIELD(send_queue_limit), 1024, 1LL << 32,
     "bytes queued for a client before it is closed with 1013 (default 4m)"},
    {"handshake-timeout", OPT_INT, FIELD(handshake_timeout), 1, 3600,
     "seconds to send a complete request head (default 10)"},
    {"allowed-origins", OPT_ORIGINS, FIELD(allowed_origins), 0, 0,
     "origins besides the server's own whose pages may open WebSockets: https://app.example.com,"
     "https://*.example.com or * (default: none)"},
    {"trusted-proxies", OPT_CIDRS, FIELD(trusted_proxies), 0, 0,
     "CIDR,.. of proxies whose X-Forwarded-For names the client, e.g. 10.0.0.0/8,::1 (default: none)"},
    {"log-level", OPT_LEVEL, FIELD(log_level), 0, 0, "error, warn, info or debug (default info)"},
    {"max-rooms", OPT_INT, FIELD(max_rooms), 1, 100000, "rooms one connection may join (default 100)"},
    {"rate-limit", OPT_INT, FIELD(rate_limit), 0, 1000000,
     "commands per second per connection, 0 for no limit (default 100)"},
    {"max-data", OPT_SIZE, FIELD(max_data), 16, 1LL << 30,
     "longest data of one message as JSON text, e.g. 16k (default 64k)"},
    {"history-length", OPT_INT, FIELD(history_length), 0, 1000000,
     "messages kept per room, 0 for none (default 100)"},
    {"history-ttl", OPT_INT, FIELD(history_ttl), 0, 100000000,
     "seconds a message stays in history, 0 for no limit (default 3600)"},
    {"history-memory", OPT_SIZE, FIELD(history_memory), 0, 1LL << 40,
     "bytes of history the memory store keeps over all rooms, least recently used rooms go first, "
     "0 for no limit (default 256m)"},
    {"max-replay", OPT_INT, FIELD(max_replay), 1, 1000000,
     "most messages one join since replays; more answers recovered:false (default 1000)"},
    {"idempotency-window", OPT_INT, FIELD(idempotency_window), 0, 86400,
     "seconds a publish key is remembered in its room, 0 to ignore keys (default 300)"},
    {"allow-broadcast", OPT_BOOL, FIELD(allow_broadcast), 0, 1,
     "let clients use the broadcast command (default off)"},
    {"node-id", OPT_NAME, FIELD(node_id), 1, 128, "this node's id (default: host name and pid)"},
    {"redis", OPT_REDIS_URL, FIELD(redis_url), 0, 0,
     "redis://[user:pass@]host:port[/db]: share rooms, users and history with other nodes (default: none)"},
    {"store-redis", OPT_REDIS_URL, FIELD(store_redis_url), 0, 0,
     "a different Redis for history and presence (default: the --redis one)"},
    {"namespace", OPT_NAME, FIELD(ns), 1, 128, "prefix of every Redis key and channel (default wsfan)"},
    {"redis-backoff-min", OPT_INT, FIELD(redis_backoff_min), 10, 600000,
     "milliseconds before the first Redis reconnect (default 100)"},
    {"redis-backoff-max", OPT_INT, FIELD(redis_backoff_max), 10, 600000,
     "longest wait between Redis reconnects in milliseconds (default 5000)"},
    {"redis-timeout", OPT_INT, FIELD(redis_timeout), 100, 600000,
     "milliseconds a Redis link may take to connect or to answer its health check before it is "
     "reconnected (default 3000)"},
    {"position-sync", OPT_INT, FIELD(position_sync), 0, 600000,
     "milliseconds between checks that every room delivered what its Redis history holds; a room behind "
     "for two checks fills the gap (default 1000, 0: no checks)"},
    {"presence-ttl", OPT_INT, FIELD(presence_ttl), 2, 3600,
     "seconds after which a dead node's users leave presence (default 15)"},
    {"request-timeout", OPT_INT, FIELD(request_timeout), 0, 600000,
     "milliseconds a command or API request waits for the bus before it is answered unavailable "
     "(default 10000, 0: no limit)"},
    {"drain-seconds", OPT_INT, FIELD(drain_seconds), 0, 3600,
     "on SIGTERM, close connections spread over this many seconds, so that clients do not all reconnect "
     "at once (default 0: all at once)"},
    {"api-key", OPT_SECRET, FIELD(api_key), 16, 256,
     "require Authorization: Bearer <key> (16 to 256 characters) on /api/* and /metrics; prefer the variable, ps "
     "shows flags (default: none, and they answer loopback clients only)"},
    {"auth", OPT_AUTH, FIELD(auth), 0, 0, "none (?user= names the user) or jwt (a token on /ws) (default none)"},
    {"jwt-secret", OPT_SECRET, FIELD(jwt_secret), 1, 512,
     "the HS256 key of --auth jwt; prefer the variable, ps shows flags"},
    {"jwt-public-key", OPT_PATH, FIELD(jwt_public_key), 1, 4095,
     "PEM file of the public key of --auth jwt: RSA for RS256, EC P-256 for ES256"},
    {"jwt-leeway", OPT_INT, FIELD(jwt_leeway), 0, 3600, "seconds of clock slack on a token's exp and nbf (default 5)"},
    {"jwt-audience", OPT_TEXT, FIELD(jwt_audience), 1, 256, "a token's aud must name this (default: not checked)"},
    {"jwt-issuer", OPT_TEXT, FIELD(jwt_issuer), 1, 256, "a token's iss must be this (default: not checked)"},
    {"allow-anonymous", OPT_BOOL, FIELD(allow_anonymous), 0, 1,
     "with --auth jwt, let a connection without a token in, anonymous (default: 401)"},
    {"anonymous-rooms", OPT_PATTERNS, FIELD(anonymous_rooms), 0, 1024,
     "room patterns anonymous connections may join and read, e.g. 'lobby,public:*' (default: none)"},
};

static void config_defaults(struct config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    strcpy(cfg->listen_host, "127.0.0.1");
    cfg->listen_port = 8080;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->workers = cores > 0 ? (cores > 256 ? 256 : (int)cores) : 1;
    cfg->max_message = 1 << 20;
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
    case OPT_LEVEL: snprintf(buf, cap, "expected error, warn, info or debug"); break;
    case OPT_BOOL: snprintf(buf, cap, "expected true or false"); break;
    case OPT_NAME: snprintf(buf, cap, "expected 1 to 128 characters of A-Z a-z 0-9 _ . : -"); break;
    case OPT_REDIS_URL:
        snprintf(buf, cap, "expected redis://[user:pass@]host:port[/db] or "
                           "redis+sentinel://[user:pass@]host:port[,host:port..]/MASTER[/db]");
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
    case OPT_AUTH: snprintf(buf, cap, "expected none or jwt"); break;
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
        if (o->offset == FIELD(admin_host))
            return parse_listen(value, cfg->admin_host, sizeof cfg->admin_host, &cfg->admin_port);
        return parse_listen(value, cfg->listen_host, sizeof cfg->listen_host, &cfg->listen_port);
    case OPT_ORIGINS:
        return origin_list_parse(value, (struct origin_list *)field);
    case OPT_CIDRS:
        return net_cidr_list_parse(value, (struct net_cidr_list *)field);
    case OPT_LEVEL: {
        static const char *const names[] = {"error", "warn", "info", "debug"};
        for (int i = 0; i < 4; i++)
            if (!strcmp(value, names[i])) {
                *(enum log_level *)field = (enum log_level)i;
                return 0;
            }
        return -1;
    }
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
    case OPT_AUTH:
        if (strcmp(value, "none") && strcmp(value, "jwt"))
            return -1;
        *(enum config_auth *)field = !strcmp(value, "jwt") ? CONFIG_AUTH_JWT : CONFIG_AUTH_NONE;
        return 0;
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

static void report(const char *source, const char *value, const struct option_spec *o)
{
    char allowed[256];
    describe_allowed(o, allowed, sizeof allowed);
    /* A secret is not repeated where logs would keep it. */
    fprintf(stderr, "wsfan: %s=%s: %s\n", source, o->kind == OPT_SECRET ? "(hidden)" : value, allowed);
}

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
           "options (each also settable as WSFAN_<NAME>, e.g. WSFAN_MAX_MESSAGE=64k; the flag wins):\n");
    for (size_t i = 0; i < sizeof options / sizeof options[0]; i++) {
        char env[64];
        env_name(&options[i], env, sizeof env);
        printf("  --%-20s %s [%s]\n", options[i].name, options[i].help, env);
    }
    printf("  --%-20s %s\n  --%-20s %s\n", "help", "show this help", "version", "print the version");
}

static const struct option_spec *find_option(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof options / sizeof options[0]; i++)
        if (strlen(options[i].name) == len && !strncmp(options[i].name, name, len))
            return &options[i];
    return NULL;
}

/* The authentication flags fit together (docs/protocol.md section 1a). The
 * key file itself is read at start by the composition root. */
static int check_auth(const struct config *cfg)
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
        if (set) {
            fprintf(stderr, "wsfan: %s: only applies with --auth jwt; add --auth jwt or remove it\n", set);
            return CONFIG_ERROR;
        }
        return CONFIG_OK;
    }
    if (!cfg->jwt_secret[0] == !cfg->jwt_public_key[0]) {
        fprintf(stderr, "wsfan: --auth jwt: needs exactly one key: --jwt-secret (better: WSFAN_JWT_SECRET) for "
                        "HS256, or --jwt-public-key FILE for RS256 or ES256%s\n",
                cfg->jwt_secret[0] ? ", not both" : "");
        return CONFIG_ERROR;
    }
    if (cfg->anonymous_rooms[0] && !cfg->allow_anonymous) {
        fprintf(stderr, "wsfan: --anonymous-rooms=%s: needs --allow-anonymous as well\n", cfg->anonymous_rooms);
        return CONFIG_ERROR;
    }
    return CONFIG_OK;
}

int config_parse(struct config *cfg, int argc, char **argv)
{
    config_defaults(cfg);

    for (size_t i = 0; i < sizeof options / sizeof options[0]; i++) {
        char env[64];
        env_name(&options[i], env, sizeof env);
        const char *value = getenv(env);
        if (value && apply(cfg, &options[i], value)) {
            report(env, value, &options[i]);
            return CONFIG_ERROR;
        }
    }

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            print_help();
            return CONFIG_EXIT;
        }
        if (!strcmp(arg, "--version")) {
            printf("wsfan %s\n", WSFAN_VERSION);
            return CONFIG_EXIT;
        }
        if (strncmp(arg, "--", 2)) {
            fprintf(stderr, "wsfan: %s: unexpected argument; options start with -- (see --help)\n", arg);
            return CONFIG_ERROR;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        const struct option_spec *o = find_option(name, name_len);
        if (!o) {
            fprintf(stderr, "wsfan: %.*s: unknown option (see --help)\n", (int)(name_len + 2), arg);
            return CONFIG_ERROR;
        }
        const char *value;
        if (eq)
            value = eq + 1;
        else if (o->kind == OPT_BOOL && (i + 1 >= argc || parse_bool(argv[i + 1], &(int){0})))
            value = "true";
        else if (i + 1 < argc)
            value = argv[++i];
        else {
            fprintf(stderr, "wsfan: --%s: missing value; %s\n", o->name, o->help);
            return CONFIG_ERROR;
        }
        if (apply(cfg, o, value)) {
            char flag[64];
            snprintf(flag, sizeof flag, "--%s", o->name);
            report(flag, value, o);
            return CONFIG_ERROR;
        }
    }
    if (cfg->redis_backoff_min > cfg->redis_backoff_max) {
        fprintf(stderr, "wsfan: --redis-backoff-min=%d: must not exceed --redis-backoff-max=%d\n",
                cfg->redis_backoff_min, cfg->redis_backoff_max);
        return CONFIG_ERROR;
    }
    if (cfg->admin_host[0] && cfg->admin_port == cfg->listen_port && !strcmp(cfg->admin_host, cfg->listen_host)) {
        fprintf(stderr, "wsfan: --admin-listen=%s:%u: must differ from --listen, or the API stays public\n",
                cfg->admin_host, cfg->admin_port);
        return CONFIG_ERROR;
    }
    if (cfg->store_redis_url[0] && !cfg->redis_url[0]) {
        fprintf(stderr, "wsfan: --store-redis=%s: needs --redis as well\n", cfg->store_redis_url);
        return CONFIG_ERROR;
    }
    return check_auth(cfg);
}
