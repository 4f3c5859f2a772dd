/* redis_cluster.c - a Redis Cluster seen through one link: the slot map,
 * a link per master, routing by slot, MOVED and ASK. See redis_cluster.h. */
#include "net/redis_cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "net/tls.h"

#define NODES_MAX 255        /* owner[] holds a node's index plus one in a byte */
#define REDIRECTS_MAX 5      /* MOVED or ASK followed for one command */
#define RETRY_MS 50          /* a command whose slot is moving is sent again after this */
#define RETRIES_MAX 60       /* times; 3 s in all, well below --request-timeout's default */
#define REFRESH_EVERY_MS 5000
#define REFRESH_DOWN_MS 200

/* A master, or a node that was one. */
struct cluster_node {
    struct redis_cluster *cluster;
    struct redis_link link;
    int in_map;    /* owns slots in the current map */
    int leaving;   /* stopped: no longer in the map */
};

struct redis_cluster {
    struct redis_link *link;   /* the link that stands for the cluster */
    struct redis_link map;     /* asks CLUSTER SLOTS; goes from node to node when one fails */
    int candidate;             /* the seed or master map connects to next */
    struct cluster_node *nodes[NODES_MAX];
    unsigned char owner[REDIS_CLUSTER_SLOTS]; /* node index + 1; 0: unknown */
    int covered;               /* every slot has a master */
    uv_timer_t refresh;
    int asking_map;            /* a CLUSTER SLOTS is on its way */
    char map_problem[160];     /* what was wrong with the map last (logged once), or "" */
    int stopping, stops_pending;
    void (*done)(struct redis_link *link);
    uv_timer_t retry;          /* sends the waiting calls again */
    struct cluster_call *waiting; /* answered TRYAGAIN, in a list */
};

/* ---- slots ---------------------------------------------------------------- */

/* CRC16-CCITT (XMODEM), as Redis Cluster computes it. */
static unsigned crc16(const char *s, size_t len)
{
    unsigned crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (unsigned)(unsigned char)s[i] << 8;
        for (int b = 0; b < 8; b++)
            crc = crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1;
    }
    return crc & 0xffff;
}

unsigned redis_cluster_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    if (open) {
        const char *close = memchr(open + 1, '}', len - (size_t)(open + 1 - key));
        if (close && close > open + 1)
            return crc16(open + 1, (size_t)(close - open - 1)) & (REDIS_CLUSTER_SLOTS - 1);
    }
    return crc16(key, len) & (REDIS_CLUSTER_SLOTS - 1);
}

/* ---- masters ---------------------------------------------------------------- */

static void update_up(struct redis_cluster *c);
static void refresh_soon(struct redis_cluster *c);

static void on_node_up(struct redis_link *l)
{
    update_up(((struct cluster_node *)l->data)->cluster);
}

static void on_node_down(struct redis_link *l)
{
    struct cluster_node *n = l->data;
    if (n->leaving)
        return;
    refresh_soon(n->cluster); /* a failover may have moved its slots */
    update_up(n->cluster);
}

static void on_stop_done(struct redis_cluster *c)
{
    if (--c->stops_pending)
        return;
    c->done(c->link);
    free(c);
}

static void on_node_stopped(struct redis_link *l)
{
    struct cluster_node *n = l->data;
    struct redis_cluster *c = n->cluster;
    free(n);
    if (c->stopping)
        on_stop_done(c);
}

static void on_node_push(struct redis_link *l, const redisReply *push)
{
    struct redis_cluster *c = ((struct cluster_node *)l->data)->cluster;
    c->link->on_push(c->link, push);
}

/* A link of the cluster behind link: to one node (link's first seed until
 * the caller names another), with link's credentials, timeouts and TLS. */
static void inherit(struct redis_link *l, const struct redis_link *link)
{
    l->url = link->url;
    l->url.nnodes = 0;
    l->name = link->name;
    l->min_backoff_ms = link->min_backoff_ms;
    l->max_backoff_ms = link->max_backoff_ms;
    l->timeout_ms = link->timeout_ms;
    if ((l->tls = link->tls))
        tls_ctx_ref(l->tls);
}

/* The node at host:port, started when new; -1 when there is no room. */
static int node_index(struct redis_cluster *c, const char *host, int port)
{
    int free_index = -1;
    for (int i = 0; i < NODES_MAX; i++) {
        struct cluster_node *n = c->nodes[i];
        if (n && n->link.url.port == port && !strcmp(n->link.url.host, host))
            return i;
        if (!n && free_index < 0)
            free_index = i;
    }
    struct cluster_node *n = free_index < 0 ? NULL : calloc(1, sizeof *n);
    if (!n) {
        log_error("redis %s: no room for cluster node %s:%d", c->link->name, host, port);
        return -1;
    }
    struct redis_link *l = &n->link;
    n->cluster = c;
    inherit(l, c->link);
    snprintf(l->url.host, sizeof l->url.host, "%s", host);
    l->url.port = port;
    l->on_up = on_node_up;
    l->on_down = on_node_down;
    l->on_stopped = on_node_stopped;
    l->on_push = c->link->on_push ? on_node_push : NULL;
    l->data = n;
    if (redis_link_start(l, c->link->loop)) {
        tls_ctx_unref(l->tls);
        free(n);
        return -1;
    }
    c->nodes[free_index] = n;
    return free_index;
}

static void node_stop(struct redis_cluster *c, int i)
{
    struct cluster_node *n = c->nodes[i];
    c->nodes[i] = NULL;
    n->leaving = 1;
    redis_link_stop(&n->link);
}

/* Up while every slot has a master and every master's link is up. A
 * subscriber link going down starts over on every master: what it was
 * subscribed to is subscribed again when it is up (on_up). */
static void update_up(struct redis_cluster *c)
{
    int up = c->covered && !c->stopping;
    for (int i = 0; up && i < NODES_MAX; i++)
        if (c->nodes[i] && c->nodes[i]->in_map && !c->nodes[i]->link.up)
            up = 0;
    struct redis_link *l = c->link;
    if (up == l->up)
        return;
    l->up = up;
    if (up) {
        if (l->was_up)
            l->reconnects++;
        l->was_up = 1;
        log_info("redis %s: cluster connected", l->name);
        if (l->on_up)
            l->on_up(l);
        return;
    }
    if (l->on_push && !c->stopping)
        for (int i = 0; i < NODES_MAX; i++)
            if (c->nodes[i] && c->nodes[i]->link.up)
                redis_link_reconnect(&c->nodes[i]->link);
    if (l->on_down)
        l->on_down(l);
}

/* ---- the slot map ---------------------------------------------------------- */

/* Logs what is wrong with the map when it is news: the map is asked for
 * every 200 ms while the link is down. NULL: nothing is wrong now. */
static void map_problem(struct redis_cluster *c, const char *why)
{
    if (!why) {
        c->map_problem[0] = '\0';
        return;
    }
    if (!strcmp(why, c->map_problem))
        return;
    snprintf(c->map_problem, sizeof c->map_problem, "%s", why);
    log_warn("redis %s: cluster map: %s", c->link->name, why);
}

/* CLUSTER SLOTS: [[start, end, [host, port, id], replicas..], ..]. A
 * master without a host is reached at the address the map was asked of. */
static void on_slots(struct redis_link *l, void *reply, void *privdata)
{
    (void)privdata;
    struct redis_cluster *c = l->data;
    redisReply *r = reply;
    c->asking_map = 0;
    if (!r || c->stopping)
        return;
    if (r->type != REDIS_REPLY_ARRAY) {
        map_problem(c, r->type == REDIS_REPLY_ERROR ? r->str : "CLUSTER SLOTS answered not an array");
        return;
    }
    unsigned char owner[REDIS_CLUSTER_SLOTS] = {0};
    int in_map[NODES_MAX] = {0};
    size_t covered = 0;
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *range = r->element[i];
        if (range->type != REDIS_REPLY_ARRAY || range->elements < 3 || range->element[0]->type != REDIS_REPLY_INTEGER ||
            range->element[1]->type != REDIS_REPLY_INTEGER || range->element[2]->type != REDIS_REPLY_ARRAY ||
            range->element[2]->elements < 2 || range->element[2]->element[0]->type != REDIS_REPLY_STRING ||
            range->element[2]->element[1]->type != REDIS_REPLY_INTEGER)
            continue;
        long long from = range->element[0]->integer, to = range->element[1]->integer;
        const char *host = range->element[2]->element[0]->str;
        int port = (int)range->element[2]->element[1]->integer;
        int n = node_index(c, host[0] && strcmp(host, "?") ? host : l->url.host, port);
        if (n < 0 || from < 0 || to >= REDIS_CLUSTER_SLOTS || from > to)
            continue;
        in_map[n] = 1;
        for (long long s = from; s <= to; s++)
            owner[s] = (unsigned char)(n + 1);
        covered += (size_t)(to - from + 1);
    }
    memcpy(c->owner, owner, sizeof owner);
    c->covered = covered == REDIS_CLUSTER_SLOTS;
    char why[64];
    snprintf(why, sizeof why, "covers %zu of %d slots", covered, REDIS_CLUSTER_SLOTS);
    map_problem(c, c->covered ? NULL : why);
    for (int i = 0; i < NODES_MAX; i++) {
        if (!c->nodes[i])
            continue;
        c->nodes[i]->in_map = in_map[i];
        if (!in_map[i] && !c->nodes[i]->link.up)
            node_stop(c, i); /* gone (failed over, or removed); one that is up stays for MOVED and ASK */
    }
    update_up(c);
}

static void ask_map(struct redis_cluster *c)
{
    const char *argv[] = {"CLUSTER", "SLOTS"};
    if (!c->asking_map && redis_link_command(&c->map, on_slots, NULL, 2, argv, NULL) == 0)
        c->asking_map = 1;
}

/* Periodically; often while down, to see a failover as soon as the
 * cluster has made it. */
static void on_refresh(uv_timer_t *t)
{
    struct redis_cluster *c = t->data;
    ask_map(c);
    uv_timer_start(&c->refresh, on_refresh, c->link->up ? REFRESH_EVERY_MS : REFRESH_DOWN_MS, 0);
}

/* After a redirect or a failure: the map is asked again now (once per
 * burst: a CLUSTER SLOTS on its way answers for all). */
static void refresh_soon(struct redis_cluster *c)
{
    if (!c->stopping)
        ask_map(c);
}

static void on_map_up(struct redis_link *l)
{
    ask_map(l->data);
}

/* The map link tries the seeds and then the masters it knows, in turn. */
static void on_map_down(struct redis_link *l)
{
    struct redis_cluster *c = l->data;
    c->asking_map = 0;
    const struct redis_url *u = &c->link->url;
    for (int tries = 0; tries < u->nnodes + NODES_MAX; tries++) {
        int i = c->candidate++ % (u->nnodes + NODES_MAX);
        if (i < u->nnodes) {
            snprintf(l->url.host, sizeof l->url.host, "%s", u->nodes[i].host);
            l->url.port = u->nodes[i].port;
            return;
        }
        struct cluster_node *n = c->nodes[i - u->nnodes];
        if (n && n->in_map) {
            snprintf(l->url.host, sizeof l->url.host, "%s", n->link.url.host);
            l->url.port = n->link.url.port;
            return;
        }
    }
}

static void on_map_stopped(struct redis_link *l)
{
    on_stop_done(l->data);
}

static void on_timer_closed(uv_handle_t *h)
{
    on_stop_done(h->data);
}

struct redis_cluster *redis_cluster_create(struct redis_link *link)
{
    struct redis_cluster *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->link = link;
    struct redis_link *m = &c->map;
    inherit(m, link);
    m->on_up = on_map_up;
    m->on_down = on_map_down;
    m->on_stopped = on_map_stopped;
    m->data = c;
    c->candidate = 1;
    if (uv_timer_init(link->loop, &c->refresh) || uv_timer_init(link->loop, &c->retry) ||
        redis_link_start(m, link->loop)) {
        tls_ctx_unref(m->tls);
        free(c); /* libuv's timers cannot fail to start on Linux: this is for the contract */
        return NULL;
    }
    c->refresh.data = c->retry.data = c;
    uv_timer_start(&c->refresh, on_refresh, REFRESH_EVERY_MS, 0);
    return c;
}

/* ---- routing ----------------------------------------------------------------- */

/* A command on its way, with what it takes to send it elsewhere. */
struct cluster_call {
    struct redis_cluster *cluster;
    redis_reply_fn *fn;
    void *privdata;
    unsigned slot;
    int redirects, retries;
    struct cluster_call *next_waiting;
    int argc;
    char **argv;
    size_t *lens;
};

static void call_free(struct cluster_call *call)
{
    for (int i = 0; i < call->argc; i++)
        free(call->argv[i]);
    free(call->argv);
    free(call->lens);
    free(call);
}

static void on_node_reply(struct redis_link *l, void *reply, void *privdata);

/* Sends call to node i, after ASKING when asking. Returns 0 or -1. */
static int call_send(struct cluster_call *call, int i, int asking)
{
    struct cluster_node *n = i >= 0 ? call->cluster->nodes[i] : NULL;
    const char *ask[] = {"ASKING"};
    if (!n || (asking && redis_link_command(&n->link, NULL, NULL, 1, ask, NULL)))
        return -1;
    return redis_link_command(&n->link, on_node_reply, call, call->argc, (const char **)call->argv, call->lens);
}

/* "MOVED 3999 127.0.0.1:6381" or "ASK ..": the node named, or -1. */
static int redirect_target(struct redis_cluster *c, const char *error, unsigned *slot)
{
    char host[256];
    const char *space = strchr(error, ' ');
    const char *addr = space ? strchr(space + 1, ' ') : NULL;
    const char *colon = addr ? strrchr(addr, ':') : NULL;
    if (!colon || (size_t)(colon - addr - 1) >= sizeof host)
        return -1;
    *slot = (unsigned)atoi(space + 1) & (REDIS_CLUSTER_SLOTS - 1);
    memcpy(host, addr + 1, (size_t)(colon - addr - 1));
    host[colon - addr - 1] = '\0';
    return node_index(c, host, atoi(colon + 1));
}

static void call_answer(struct cluster_call *call, redisReply *r)
{
    if (call->fn)
        call->fn(call->cluster->link, r, call->privdata);
    call_free(call);
}

static void on_retry(uv_timer_t *t);

/* While call's slot is moving: sent again after RETRY_MS, to the slot's
 * owner by the map then. Returns 0, or -1 when it has waited enough. */
static int call_wait(struct cluster_call *call)
{
    struct redis_cluster *c = call->cluster;
    if (c->stopping || call->retries++ >= RETRIES_MAX)
        return -1;
    call->redirects = 0;
    call->next_waiting = c->waiting;
    c->waiting = call;
    if (!uv_is_active((uv_handle_t *)&c->retry))
        uv_timer_start(&c->retry, on_retry, RETRY_MS, 0);
    return 0;
}

static void on_retry(uv_timer_t *t)
{
    struct redis_cluster *c = t->data;
    struct cluster_call *call = c->waiting;
    c->waiting = NULL;
    while (call) {
        struct cluster_call *next = call->next_waiting;
        if (call_send(call, (int)c->owner[call->slot] - 1, 0) && call_wait(call))
            call_answer(call, NULL);
        call = next;
    }
}

static void on_node_reply(struct redis_link *l, void *reply, void *privdata)
{
    (void)l;
    struct cluster_call *call = privdata;
    struct redis_cluster *c = call->cluster;
    redisReply *r = reply;
    int moved = r && r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "MOVED ", 6);
    int ask = r && r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "ASK ", 4);
    int tryagain = r && r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "TRYAGAIN", 8);
    if (!r || moved)
        refresh_soon(c);
    if ((moved || ask) && !c->stopping && call->redirects++ < REDIRECTS_MAX) {
        unsigned slot;
        int target = redirect_target(c, r->str, &slot);
        if (moved && target >= 0)
            c->owner[slot] = (unsigned char)(target + 1);
        if (call_send(call, target, ask) == 0)
            return;
    }
    /* The slot is moving: a script's keys are split between two masters
     * (TRYAGAIN), or the source has given the slot up before the
     * destination knows it has it, and each redirects to the other (or to
     * a master not connected yet). Waited out, until the move is done. */
    if ((tryagain || moved || ask) && call_wait(call) == 0)
        return;
    call_answer(call, r);
}

/* The key a command is routed by, or NULL for none. */
static const char *command_key(int argc, const char **argv, const size_t *lens, size_t *len)
{
    int at = 1;
    if (!strcasecmp(argv[0], "EVAL") || !strcasecmp(argv[0], "EVALSHA"))
        at = argc > 3 && atoi(argv[2]) > 0 ? 3 : argc;
    else if (!strcasecmp(argv[0], "SCRIPT"))
        at = argc;
    if (at >= argc)
        return NULL;
    *len = lens ? lens[at] : strlen(argv[at]);
    return argv[at];
}

int redis_cluster_command(struct redis_cluster *c, redis_reply_fn *fn, void *privdata, int argc,
                          const char **argv, const size_t *lens)
{
    if (!c->link->up)
        return -1;
    size_t key_len;
    const char *key = command_key(argc, argv, lens, &key_len);
    if (!key) {
        int sent = -1;
        for (int i = 0; i < NODES_MAX; i++)
            if (c->nodes[i] && c->nodes[i]->in_map &&
                redis_link_command(&c->nodes[i]->link, fn, privdata, argc, argv, lens) == 0)
                sent = 0;
        return sent;
    }
    struct cluster_call *call = calloc(1, sizeof *call);
    if (!call || !(call->argv = calloc((size_t)argc, sizeof *call->argv)) ||
        !(call->lens = calloc((size_t)argc, sizeof *call->lens))) {
        if (call)
            free(call->argv);
        free(call);
        return -1;
    }
    call->cluster = c;
    call->fn = fn;
    call->privdata = privdata;
    for (int i = 0; i < argc; i++) {
        size_t n = lens ? lens[i] : strlen(argv[i]);
        if (!(call->argv[i] = malloc(n + 1))) {
            call_free(call);
            return -1;
        }
        call->argc = i + 1;
        memcpy(call->argv[i], argv[i], n);
        call->argv[i][n] = '\0';
        call->lens[i] = n;
    }
    call->slot = redis_cluster_slot(key, key_len);
    if (call_send(call, (int)c->owner[call->slot] - 1, 0)) {
        call_free(call);
        return -1;
    }
    return 0;
}

void redis_cluster_stop(struct redis_cluster *c, void (*done)(struct redis_link *link))
{
    c->stopping = 1;
    c->done = done;
    c->stops_pending = 3;
    update_up(c);
    while (c->waiting) {
        struct cluster_call *call = c->waiting;
        c->waiting = call->next_waiting;
        call_answer(call, NULL);
    }
    for (int i = 0; i < NODES_MAX; i++)
        if (c->nodes[i]) {
            c->stops_pending++;
            node_stop(c, i);
        }
    uv_close((uv_handle_t *)&c->refresh, on_timer_closed);
    uv_close((uv_handle_t *)&c->retry, on_timer_closed);
    redis_link_stop(&c->map);
}
