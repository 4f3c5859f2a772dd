/* config.h - every setting of wsfan: defaults, the --config file, WSFAN_*
 * environment variables and command-line flags (each wins over the one
 * before), each validated with a message that names the option, the value
 * (and the file and line) and what is allowed.
 * Parsed on the main thread: at start, and again on SIGHUP. A struct config
 * that workers read is never written (server.c publishes a new one). */
#ifndef WSFAN_CONFIG_H
#define WSFAN_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "core/log.h"
#include "core/netaddr.h"
#include "core/origin.h"

enum config_auth { CONFIG_AUTH_NONE, CONFIG_AUTH_JWT };

struct config {
    char config_file[4096]; /* --config; "" for none */
    char listen_host[64];
    uint16_t listen_port;
    char admin_host[64];    /* --admin-listen; "" when the API is on the public port */
    uint16_t admin_port;
    int workers;
    size_t max_message;
    int compression;        /* permessage-deflate with clients that offer it */
    size_t compress_min;    /* shorter events go uncompressed */
    int max_connections;    /* connections of the public port, HTTP phase included */
    int max_connections_per_ip;  /* per client address; 0: no limit */
    int heartbeat;          /* seconds between pings */
    size_t send_queue_limit;
    int handshake_timeout;  /* seconds to complete the TLS handshake and the HTTP head */
    char tls_cert[4096];    /* PEM certificate chain; "" for plaintext */
    char tls_key[4096];     /* PEM private key of tls_cert */
    struct origin_list allowed_origins;    /* besides the server's own */
    struct net_cidr_list trusted_proxies;  /* whose X-Forwarded-For is believed */
    enum log_level log_level;
    enum log_format log_format;
    int log_connections;    /* sessions and refused handshakes at info, not debug */
    int max_rooms;          /* per connection */
    int rate_limit;         /* commands per second per connection; 0: no limit */
    size_t max_data;        /* longest data of one message, as JSON text */
    int history_length;     /* messages kept per room */
    int history_ttl;        /* seconds a message stays in history; 0 = forever */
    size_t history_memory;  /* bytes of history in the memory store; 0: no limit */
    int max_replay;         /* most messages one join since replays */
    int idempotency_window; /* seconds a publish key is remembered; 0: keys are ignored */
    int allow_broadcast;
    char node_id[129];
    char redis_url[512];        /* "" for the memory engines */
    char store_redis_url[512];  /* "" to keep history on --redis */
    char redis_ca[4096];        /* rediss://: PEM of the CAs to trust; "": the system's */
    char redis_cert[4096];      /* rediss://: PEM client certificate chain; "": none */
    char redis_key[4096];       /* its private key */
    char ns[129];               /* key and channel prefix */
    int redis_backoff_min;      /* milliseconds */
    int redis_backoff_max;
    int redis_timeout;          /* milliseconds a Redis link may take to connect or answer */
    int position_sync;          /* milliseconds between checks of rooms against history; 0: none */
    int presence_ttl;           /* seconds until a dead node's users are gone */
    int drain_seconds;          /* a shutdown closes connections over this long */
    int request_timeout;        /* milliseconds a command or API request waits for the bus; 0: forever */
    char api_key[257];          /* "" when the HTTP API is open */
    /* Authentication (docs/protocol.md section 1a) */
    enum config_auth auth;
    char jwt_secret[513];       /* HS256 key, "" when none */
    char jwt_public_key[4096];  /* PEM file path (RS256 or ES256), "" when none */
    int jwt_leeway;             /* seconds of slack on exp and nbf */
    char jwt_audience[257];     /* the aud a token must name, "" for any */
    char jwt_issuer[257];       /* the iss a token must have, "" for any */
    int allow_anonymous;        /* jwt mode: a connection without a token is anonymous, not 401 */
    char anonymous_rooms[1025]; /* the room patterns anonymous connections may join (a comma list) */
};

enum { CONFIG_OK = 0, CONFIG_EXIT = 1, CONFIG_CHECK = 2, CONFIG_ERROR = -1 };

/* Fills cfg from defaults, then the config file, the environment, then argv.
 * Returns CONFIG_OK; CONFIG_EXIT after printing --help, --version or
 * --print-config to stdout (exit 0); CONFIG_CHECK for --check-config, once
 * every option is valid (the caller checks what it reads at start);
 * CONFIG_ERROR after printing one line naming the option, the value and
 * what is allowed to stderr (exit 2). */
int config_parse(struct config *cfg, int argc, char **argv);

/* config_parse for a reload: prints nothing and ignores --help and the
 * like. Returns CONFIG_OK, or CONFIG_ERROR with the line (without
 * "wsfan: ") in err (cap bytes). */
int config_load(struct config *cfg, int argc, char **argv, char *err, size_t cap);

/* Copies into cfg the options of fresh that can change while the server
 * runs, and logs one info line for each option that differs: "config:
 * rate-limit 100 -> 50", or "config: listen changed; takes effect after a
 * restart" for the others. Returns how many options it copied. */
int config_apply_live(struct config *cfg, const struct config *fresh);

/* True when --redis or --store-redis is a rediss:// url (TLS to Redis). */
int config_redis_tls(const struct config *cfg);

#endif
