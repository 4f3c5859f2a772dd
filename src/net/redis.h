/* redis.h - one asynchronous Redis connection that the server owns for its
 * lifetime, on a socket of its own (libuv TCP; hiredis only parses replies
 * and formats commands): connects, authenticates, selects the database,
 * and when the connection is lost reconnects with exponential backoff and
 * jitter, telling its owner when it is up and down.
 * Replies are routed by the link itself, so that one link serves commands,
 * classic and sharded subscriptions alike: command replies come back in
 * order to their callbacks; on a subscriber link, messages ("message",
 * "smessage") and subscription changes ("subscribe", "ssubscribe",
 * "unsubscribe", "sunsubscribe", including those Redis sends on its own
 * when a slot moves) go to the owner's on_push, and PING still works.
 * A link never hangs on a Redis that stopped answering: the connect has a
 * deadline, the socket has TCP keepalive and a user timeout, and a health
 * check (PING, or the owner's own probe) must come back within timeout_ms,
 * else the link is torn down (pending commands get NULL replies) and
 * reconnected. Runs on the loop it is given (the main thread's); never
 * blocks. With a redis+cluster:// url the link stands for a whole Redis
 * Cluster (net/redis_cluster.c): commands go to the master of their slot.
 * With rediss:// every connection of the link (servers, sentinels, cluster
 * nodes) speaks TLS (net/tls.c), verifying the server's certificate and
 * name. */
#ifndef WSFAN_REDIS_H
#define WSFAN_REDIS_H

#include <hiredis/hiredis.h>
#include <stdint.h>
#include <uv.h>

#include "core/config.h"
#include "core/redis_url.h"

struct redis_link;
struct redis_conn; /* one socket of a link (redis.c) */
struct redis_cluster;
struct tls_ctx;

/* A reply (a redisReply, freed after the call; NULL when the link went
 * down first) to a command sent with privdata. */
typedef void redis_reply_fn(struct redis_link *l, void *reply, void *privdata);

struct redis_link {
    uv_loop_t *loop;
    struct redis_url url;
    const char *name;            /* for logs: "bus", "subscriber", "store" */
    struct redis_conn *conn;     /* NULL while disconnected */
    struct redis_cluster *cluster; /* redis+cluster://: the cluster the link stands for (net/redis_cluster.c) */
    /* rediss://: the PEM files of --redis-ca, --redis-cert and --redis-key
     * (NULL: the system's CAs, no client certificate), which
     * redis_link_start reads into tls; a cluster's links share it. */
    const char *tls_ca, *tls_cert, *tls_key;
    struct tls_ctx *tls;
    int up;                      /* connected, authenticated, database selected */
    int stopping;
    uv_timer_t retry;
    uv_timer_t health;           /* the connect deadline, then the health check */
    uint64_t backoff_ms, min_backoff_ms, max_backoff_ms;
    uint64_t timeout_ms;         /* connect and health deadline (set by the owner) */
    uint64_t connect_ms;         /* when the current connect (or the drain at stop) began */
    uint64_t alive_ms;           /* when the link last proved alive */
    int checking;                /* a health check is on its way */
    int timers_closed;           /* after redis_link_stop */
    struct redis_conn *sentinel; /* with sentinels: asking, then watching +switch-master */
    int sentinel_index;          /* the sentinel asked last */
    int sentinel_tries;          /* sentinels tried in this round */
    int asking;                  /* a SENTINEL question is on its way */
    int moved;                   /* the sentinels named another master */
    /* The owner's health check, to prove more than the socket (a
     * subscriber link: that pub/sub delivers). Sends a probe that comes
     * back through redis_link_alive(); returns -1 when it cannot be sent
     * now (the link is not judged then). NULL: PING. */
    int (*probe)(struct redis_link *l);
    /* Pushes on a subscriber link: a redisReply array whose first element
     * is "message", "smessage", "subscribe", "ssubscribe", "unsubscribe"
     * or "sunsubscribe" (borrowed for the call). NULL: dropped. */
    void (*on_push)(struct redis_link *l, const redisReply *push);
    uint64_t reconnects;         /* times the link came back after being up */
    int was_up;
    void (*on_up)(struct redis_link *l);
    void (*on_down)(struct redis_link *l);
    void (*on_stopped)(struct redis_link *l); /* after redis_link_stop: the owner may free l */
    void *data;
};

/* Sets l's url (a valid --redis or --store-redis value), name, and what
 * every link takes from cfg (backoff bounds, timeout, TLS files); cfg
 * outlives the link. The owner sets the callbacks. */
void redis_link_configure(struct redis_link *l, const char *url, const char *name, const struct config *cfg);

/* Starts connecting l (its url, name, callbacks and backoff bounds are
 * set by the caller). Returns 0 or a uv error (UV_EINVAL: the TLS files
 * cannot be read, logged). */
int redis_link_start(struct redis_link *l, uv_loop_t *loop);

/* Disconnects for good: pending commands are answered (or, after
 * timeout_ms, get NULL replies), then on_stopped runs. */
void redis_link_stop(struct redis_link *l);

/* Drops the connection now (pending commands get NULL replies) and
 * reconnects after the backoff. */
void redis_link_reconnect(struct redis_link *l);

/* From the owner's probe: the link proved alive. */
void redis_link_alive(struct redis_link *l);

/* Sends a command when the link is up; fn (may be NULL) gets its reply.
 * A subscription command (SUBSCRIBE, SSUBSCRIBE, UNSUBSCRIBE, SUNSUBSCRIBE)
 * names one channel: its confirmation goes to on_push, then to fn (or an
 * error reply, or NULL, to fn alone). Returns 0, or -1 when down (fn is
 * not called then). The args are copied. On a cluster, see
 * redis_cluster_command. */
int redis_link_command(struct redis_link *l, redis_reply_fn *fn, void *privdata, int argc, const char **argv,
                       const size_t *argvlen);

/* A Lua script run with EVALSHA; on NOSCRIPT (the server lost its script
 * cache) it is sent again with EVAL, which also reloads it. */
struct redis_script {
    const char *source;
    char sha[41];
};

/* Computes the script's SHA1. */
void redis_script_init(struct redis_script *s);

/* SCRIPT LOAD, for a link that just came up. */
void redis_script_load(struct redis_link *l, struct redis_script *s);

/* Runs the script with nkeys of the args as KEYS and the rest as ARGV;
 * fn (may be NULL) gets the reply (NULL when the link went down). Returns 0 or -1 when
 * the link is down (fn is not called then). The args are copied. */
int redis_script_call(struct redis_link *l, struct redis_script *s, int nkeys, int nargs, const char **args,
                      const size_t *lens, redis_reply_fn *fn, void *privdata);

#endif
