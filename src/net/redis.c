/* redis.c - a Redis connection owned for the server's lifetime: its own
 * socket and reply routing, connect, AUTH, SELECT, PING to confirm, health
 * checks, Sentinel, and reconnect with exponential backoff and jitter when
 * it drops or stops answering. See redis.h. */
#include "net/redis.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "core/log.h"
#include "net/redis_cluster.h"
#include "net/tls.h"

/* ---- one socket ------------------------------------------------------------
 * A connection writes commands formatted by hiredis and parses what comes
 * back with hiredis's reader; it routes each reply itself (dispatch). Once
 * closed it makes no more callbacks: its pending commands are answered
 * with NULL right away, and its memory goes when libuv is done with it.
 * Over TLS the socket carries ciphertext: what is read goes through the
 * session before the reader, what is written through it before the
 * socket, and the connection counts as connected once the handshake is
 * over. */

/* A command waiting for its reply. */
struct pending {
    redis_reply_fn *fn;
    void *privdata;
    char *channel;  /* a subscription command's channel, awaiting its confirmation; else NULL */
    char kind[16];  /* that confirmation: "subscribe", "sunsubscribe", ... */
};

struct redis_conn {
    struct redis_link *link;  /* NULL once closed */
    void (*on_connected)(struct redis_conn *c);
    void (*on_lost)(struct redis_link *l, struct redis_conn *c, const char *why);
    void (*on_push)(struct redis_link *l, const redisReply *push);
    char host[256];
    int port;
    uv_getaddrinfo_t resolve;
    uv_connect_t connect;
    uv_tcp_t tcp;
    int refs;                 /* the TCP handle, and a resolve in flight */
    int connected;            /* connected (over TLS: the handshake is over) */
    int broken;               /* a write failed: no more sends; the read error follows */
    struct tls *tls;          /* rediss://; else NULL */
    redisReader *reader;
    struct pending *queue;    /* a ring of cap entries, count from head */
    size_t head, count, cap;
    char buf[16384];
};

static void conn_unref(struct redis_conn *c)
{
    if (--c->refs)
        return;
    if (c->reader)
        redisReaderFree(c->reader);
    tls_destroy(c->tls);
    free(c->queue);
    free(c);
}

static void on_tcp_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

static struct pending *queue_at(struct redis_conn *c, size_t i)
{
    return &c->queue[(c->head + i) & (c->cap - 1)];
}

static struct pending queue_pop(struct redis_conn *c)
{
    struct pending p = *queue_at(c, 0);
    c->head = (c->head + 1) & (c->cap - 1);
    c->count--;
    return p;
}

static int queue_push(struct redis_conn *c, const struct pending *p)
{
    if (c->count == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        struct pending *q = malloc(cap * sizeof *q);
        if (!q)
            return -1;
        for (size_t i = 0; i < c->count; i++)
            q[i] = *queue_at(c, i);
        free(c->queue);
        c->queue = q;
        c->cap = cap;
        c->head = 0;
    }
    *queue_at(c, c->count++) = *p;
    return 0;
}

/* Closes c for good: no more callbacks, pending commands get NULL. */
static void conn_close(struct redis_conn *c)
{
    struct redis_link *l = c->link;
    if (!l)
        return;
    c->link = NULL;
    if (c->refs == 2)
        uv_cancel((uv_req_t *)&c->resolve);
    uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
    while (c->count) {
        struct pending p = queue_pop(c);
        free(p.channel);
        if (p.fn)
            p.fn(l, NULL, p.privdata);
    }
}

/* c failed: closed, then its owner told why. */
static void conn_lost(struct redis_conn *c, const char *why)
{
    struct redis_link *l = c->link;
    if (!l)
        return;
    conn_close(c);
    c->on_lost(l, c, why);
}

static const char *const message_kinds[] = {"message", "smessage", "pmessage"};
static const char *const subscription_kinds[] = {"subscribe",   "ssubscribe",   "psubscribe",
                                                 "unsubscribe", "sunsubscribe", "punsubscribe"};

static int is_one_of(const char *s, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!strcasecmp(s, list[i]))
            return 1;
    return 0;
}

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* A push's kind, or NULL when r is not an array led by a string. */
static const char *push_kind(const redisReply *r)
{
    return r->type == REDIS_REPLY_ARRAY && r->elements >= 2 && r->element[0]->type == REDIS_REPLY_STRING
                   ? r->element[0]->str
                   : NULL;
}

/* Messages and subscription changes go to on_push (a confirmation also
 * takes its command off the queue: Redis may send an unsubscribe of its
 * own, when a slot moves); every other reply answers the oldest command. */
static void dispatch(struct redis_conn *c, redisReply *r)
{
    struct redis_link *l = c->link;
    const char *kind = push_kind(r);
    if (kind && (is_one_of(kind, message_kinds, COUNT(message_kinds)) ||
                 is_one_of(kind, subscription_kinds, COUNT(subscription_kinds)))) {
        struct pending *head = c->count ? queue_at(c, 0) : NULL;
        struct pending p = {0};
        if (head && head->channel && !strcasecmp(head->kind, kind) && r->element[1]->type == REDIS_REPLY_STRING &&
            !strcmp(head->channel, r->element[1]->str))
            p = queue_pop(c);
        free(p.channel);
        if (c->on_push)
            c->on_push(l, r);
        if (p.fn)
            p.fn(l, r, p.privdata);
        return;
    }
    if (!c->count) {
        conn_lost(c, "a reply to no command");
        return;
    }
    struct pending p = queue_pop(c);
    free(p.channel);
    if (p.fn)
        p.fn(l, r, p.privdata);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct redis_conn *c = h->data;
    *buf = uv_buf_init(c->buf, sizeof c->buf);
}

/* Plaintext from the server: every reply it completes is dispatched. */
static void take_replies(struct redis_conn *c, const char *buf, size_t len)
{
    if (!c->link || redisReaderFeed(c->reader, buf, len) != REDIS_OK)
        return;
    /* A callback may close c: it stays allocated until its handle closes. */
    while (c->link) {
        void *reply = NULL;
        if (redisReaderGetReply(c->reader, &reply) != REDIS_OK) {
            conn_lost(c, c->reader->errstr[0] ? c->reader->errstr : "a reply that is not RESP");
            return;
        }
        if (!reply)
            return;
        dispatch(c, reply);
        freeReplyObject(reply);
        if (c->link && c->link->stopping && !c->count)
            conn_lost(c, "stopped"); /* redis_link_stop waited for this last reply */
    }
}

static int write_bytes(struct redis_conn *c, char *buf, size_t len, void (*release)(char *));

static void free_chars(char *p)
{
    free(p);
}

/* Sends the ciphertext the TLS session has waiting. Returns 0 or -1. */
static int flush_tls(struct redis_conn *c)
{
    size_t len;
    char *out = tls_out_take(c->tls, &len);
    return out ? write_bytes(c, out, len, free_chars) : 0;
}

/* Ciphertext from the server: decrypted into replies, and once the
 * handshake is over, the connection is connected. */
static void take_ciphertext(struct redis_conn *c, const char *buf, size_t len)
{
    char plain[16384];
    ssize_t n = 0;
    if (tls_feed(c->tls, buf, len)) {
        conn_lost(c, "out of memory");
        return;
    }
    while (c->link && (n = tls_read(c->tls, plain, sizeof plain)) > 0)
        take_replies(c, plain, (size_t)n);
    if (!c->link)
        return;
    if (n == TLS_CLOSED || n == TLS_ERROR || flush_tls(c)) {
        conn_lost(c, n == TLS_CLOSED ? "closed by the server" : n == TLS_ERROR ? tls_error(c->tls) : "TLS write failed");
        return;
    }
    if (!c->connected && tls_handshake_done(c->tls)) {
        c->connected = 1;
        c->on_connected(c);
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct redis_conn *c = s->data;
    if (nread < 0) {
        conn_lost(c, nread == UV_EOF ? "closed by the server" : uv_strerror((int)nread));
        return;
    }
    if (c->tls)
        take_ciphertext(c, buf->base, (size_t)nread);
    else
        take_replies(c, buf->base, (size_t)nread);
}

/* A peer that vanished without a RST (a partition) is noticed by the
 * kernel too, not only by the health check: keepalive probes while idle,
 * and a user timeout for data that is never acknowledged. */
static void set_keepalive(const struct redis_conn *c, uint64_t timeout_ms)
{
    uv_os_fd_t fd;
    int on = 1, idle = 5, interval = 2, count = 3;
    unsigned int user_timeout = (unsigned int)timeout_ms;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) || setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on) ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval) ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count) ||
        setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout) ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on))
        log_warn("redis %s %s:%d: cannot set TCP keepalive", c->link->name, c->host, c->port);
}

static void on_connected(uv_connect_t *req, int status)
{
    struct redis_conn *c = req->data;
    if (!c->link)
        return;
    if (status < 0) {
        conn_lost(c, uv_strerror(status));
        return;
    }
    set_keepalive(c, c->link->timeout_ms);
    int r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (r) {
        conn_lost(c, uv_strerror(r));
        return;
    }
    if (c->tls) {
        if (tls_connect(c->tls) || flush_tls(c))
            conn_lost(c, tls_error(c->tls)[0] ? tls_error(c->tls) : "TLS handshake failed");
        return; /* connected when the handshake is over (take_ciphertext) */
    }
    c->connected = 1;
    c->on_connected(c);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct redis_conn *c = req->data;
    if (!c->link || status < 0) {
        if (c->link)
            conn_lost(c, uv_strerror(status));
        uv_freeaddrinfo(res);
        conn_unref(c);
        return;
    }
    /* IPv4 first: a Redis told to bind 127.0.0.1 is reached as localhost. */
    struct addrinfo *ai = res;
    for (struct addrinfo *a = res; a; a = a->ai_next)
        if (a->ai_family == AF_INET) {
            ai = a;
            break;
        }
    int r = uv_tcp_connect(&c->connect, &c->tcp, ai->ai_addr, on_connected);
    uv_freeaddrinfo(res);
    conn_unref(c);
    if (r)
        conn_lost(c, uv_strerror(r));
}

/* Starts connecting to host:port for l. NULL (logged) when it cannot even
 * start; else on_connected or on_lost follows. */
static struct redis_conn *conn_open(struct redis_link *l, const char *host, int port,
                                    void (*connected)(struct redis_conn *),
                                    void (*lost)(struct redis_link *, struct redis_conn *, const char *))
{
    struct redis_conn *c = calloc(1, sizeof *c);
    if (!c || !(c->reader = redisReaderCreate()) || (l->tls && !(c->tls = tls_create(l->tls, host))) ||
        uv_tcp_init(l->loop, &c->tcp)) {
        log_error("redis %s: out of memory", l->name);
        if (c && c->reader)
            redisReaderFree(c->reader);
        if (c)
            tls_destroy(c->tls);
        free(c);
        return NULL;
    }
    c->link = l;
    c->on_connected = connected;
    c->on_lost = lost;
    snprintf(c->host, sizeof c->host, "%s", host);
    c->port = port;
    c->tcp.data = c->resolve.data = c->connect.data = c;
    c->refs = 1;
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int r = uv_getaddrinfo(l->loop, &c->resolve, on_resolved, host, service, &hints);
    if (r) {
        log_warn("redis %s %s:%d: %s", l->name, host, port, uv_strerror(r));
        c->link = NULL;
        uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
        return NULL;
    }
    c->refs = 2;
    return c;
}

struct write_req {
    uv_write_t req;
    char *buf;
    void (*release)(char *);
};

static void on_written(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    struct redis_conn *c = req->data;
    w->release(w->buf);
    free(w);
    if (status < 0 && status != UV_ECANCELED)
        conn_lost(c, uv_strerror(status));
}

/* Writes buf (len bytes, taken: release frees it), as much as the socket
 * takes now and the rest queued. Returns 0 or -1. */
static int write_bytes(struct redis_conn *c, char *buf, size_t len, void (*release)(char *))
{
    uv_buf_t b = uv_buf_init(buf, (unsigned int)len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == (int)len) {
        release(buf);
        return 0;
    }
    if (n < 0 && n != UV_EAGAIN) {
        release(buf);
        return -1;
    }
    size_t done = n > 0 ? (size_t)n : 0;
    struct write_req *w = malloc(sizeof *w);
    b = uv_buf_init(buf + done, (unsigned int)(len - done));
    if (!w || uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written)) {
        free(w);
        release(buf);
        return -1;
    }
    w->req.data = c;
    w->buf = buf;
    w->release = release;
    return 0;
}

/* Writes a command formatted by hiredis (taken), through the TLS session
 * when there is one. Returns 0 or -1. */
static int conn_write(struct redis_conn *c, char *cmd, size_t len)
{
    if (!c->tls)
        return write_bytes(c, cmd, len, redisFreeCommand);
    ssize_t r = tls_write(c->tls, cmd, len);
    redisFreeCommand(cmd);
    return r < 0 ? -1 : flush_tls(c);
}

/* Sends a command on a connected c; fn gets its reply. A subscription
 * command names one channel, and waits for its confirmation. Returns 0
 * or -1. */
static int conn_send(struct redis_conn *c, redis_reply_fn *fn, void *privdata, int argc, const char **argv,
                     const size_t *lens)
{
    if (!c->link || !c->connected || c->broken)
        return -1;
    struct pending p = {.fn = fn, .privdata = privdata};
    if (argc == 2 && is_one_of(argv[0], subscription_kinds, COUNT(subscription_kinds))) {
        size_t n = lens ? lens[1] : strlen(argv[1]);
        if (!(p.channel = malloc(n + 1)))
            return -1;
        memcpy(p.channel, argv[1], n);
        p.channel[n] = '\0';
        for (size_t i = 0; argv[0][i] && i + 1 < sizeof p.kind; i++)
            p.kind[i] = (char)(argv[0][i] | 0x20);
    }
    char *cmd;
    int len = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (len < 0 || queue_push(c, &p)) {
        if (len >= 0)
            redisFreeCommand(cmd);
        free(p.channel);
        return -1;
    }
    if (conn_write(c, cmd, (size_t)len)) {
        /* Taken off again unanswered: the caller hears -1 instead. The
         * socket is broken: no more sends, and its read error (or the
         * health check) takes the link down, outside the caller's call. */
        c->count--;
        free(p.channel);
        c->broken = 1;
        return -1;
    }
    return 0;
}

/* ---- the link ------------------------------------------------------------ */

static void schedule_retry(struct redis_link *l);

/* on_stopped runs once both timers are closed. */
static void on_timer_closed(uv_handle_t *h)
{
    struct redis_link *l = h->data;
    if (++l->timers_closed == 2 && l->on_stopped)
        l->on_stopped(l);
}

static void finish_stop(struct redis_link *l)
{
    tls_ctx_unref(l->tls); /* the sessions still open hold their own references */
    l->tls = NULL;
    uv_close((uv_handle_t *)&l->retry, on_timer_closed);
    uv_close((uv_handle_t *)&l->health, on_timer_closed);
}

/* The connection is gone; was_up tells whether the owner saw the link up. */
static void link_down(struct redis_link *l, int was_up)
{
    l->conn = NULL;
    l->up = 0;
    l->checking = 0;
    if (was_up && l->on_down)
        l->on_down(l);
    if (l->stopping)
        finish_stop(l);
    else
        schedule_retry(l);
}

/* Closes the connection (pending commands get NULL replies; down first,
 * so that what they make the owner do cannot send on it), then down. */
static void link_close(struct redis_link *l)
{
    struct redis_conn *c = l->conn;
    int was_up = l->up;
    l->up = 0;
    if (c)
        conn_close(c);
    link_down(l, was_up);
}

static void on_ready(struct redis_link *l, void *reply, void *privdata)
{
    (void)privdata;
    redisReply *r = reply;
    if (!r)
        return;
    if (r->type == REDIS_REPLY_ERROR) {
        log_error("redis %s %s:%d: %s", l->name, l->url.host, l->url.port, r->str);
        link_close(l);
        return;
    }
    l->up = 1;
    l->alive_ms = uv_now(l->loop);
    l->backoff_ms = l->min_backoff_ms;
    if (l->was_up)
        l->reconnects++;
    l->was_up = 1;
    log_info("redis %s %s:%d: connected", l->name, l->url.host, l->url.port);
    if (l->on_up)
        l->on_up(l);
}

/* AUTH and SELECT fail the setup through on_ready's error check: their
 * replies are checked in order, and only PING's marks the link up. */
static void on_setup_step(struct redis_link *l, void *reply, void *privdata)
{
    (void)privdata;
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_ERROR) {
        log_error("redis %s %s:%d: %s", l->name, l->url.host, l->url.port, r->str);
        link_close(l);
    }
}

static void on_master_connected(struct redis_conn *c)
{
    struct redis_link *l = c->link;
    const char *auth[] = {"AUTH", l->url.user[0] ? l->url.user : l->url.pass, l->url.pass};
    char db[16];
    snprintf(db, sizeof db, "%d", l->url.db);
    const char *select[] = {"SELECT", db}, *ping[] = {"PING"};
    if (l->url.pass[0])
        conn_send(c, on_setup_step, l, l->url.user[0] ? 3 : 2, auth, NULL);
    if (l->url.db)
        conn_send(c, on_setup_step, l, 2, select, NULL);
    conn_send(c, on_ready, l, 1, ping, NULL);
}

static void on_master_lost(struct redis_link *l, struct redis_conn *c, const char *why)
{
    if (!l->stopping)
        log_warn("redis %s %s:%d: %s%s", l->name, c->host, c->port, c->connected ? "connection lost: " : "", why);
    link_down(l, l->up);
}

static void connect_master(struct redis_link *l)
{
    struct redis_conn *c = conn_open(l, l->url.host, l->url.port, on_master_connected, on_master_lost);
    if (!c) {
        schedule_retry(l);
        return;
    }
    c->on_push = l->on_push;
    l->conn = c;
    l->connect_ms = uv_now(l->loop);
}

/* ---- Sentinel --------------------------------------------------------------
 * With redis+sentinel://, every connect first asks a sentinel for the
 * master's address (SENTINEL get-master-addr-by-name), trying each sentinel
 * in turn, and then keeps that sentinel connection subscribed to
 * +switch-master: when the master moves, the link is torn down and
 * reconnects, asking again. While the master link is up and the watch is
 * lost, the health check opens a new one. */

static void ask_sentinel(struct redis_link *l);

/* Drops the sentinel connection. */
static void sentinel_close(struct redis_link *l)
{
    struct redis_conn *c = l->sentinel;
    l->sentinel = NULL;
    l->asking = 0;
    if (c)
        conn_close(c);
}

/* This sentinel did not help: the next one, or, once every one was tried,
 * the link's backoff. */
static void sentinel_failed(struct redis_link *l)
{
    sentinel_close(l);
    if (++l->sentinel_tries < l->url.nsentinels) {
        l->sentinel_index = (l->sentinel_index + 1) % l->url.nsentinels;
        ask_sentinel(l);
    } else if (!l->up) {
        schedule_retry(l);
    }
}

static void on_switch_master(struct redis_link *l, const redisReply *r)
{
    if (r->elements != 3 || strcmp(r->element[0]->str, "message") || r->element[2]->type != REDIS_REPLY_STRING)
        return;
    /* "<name> <old-ip> <old-port> <new-ip> <new-port>" */
    char name[128], old_host[256], host[256];
    int old_port, port;
    if (sscanf(r->element[2]->str, "%127s %255s %d %255s %d", name, old_host, &old_port, host, &port) != 5 ||
        strcmp(name, l->url.master))
        return;
    if (!strcmp(host, l->url.host) && port == l->url.port)
        return;
    log_warn("redis %s: the sentinels moved master %s to %s:%d", l->name, l->url.master, host, port);
    snprintf(l->url.host, sizeof l->url.host, "%s", host);
    l->url.port = port;
    l->moved = 1; /* the health check tears the old master down */
}

static void on_master_addr(struct redis_link *l, void *reply, void *privdata)
{
    (void)privdata;
    redisReply *r = reply;
    if (!r)
        return; /* the sentinel connection was lost: on_sentinel_lost moves on */
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_STRING) {
        struct redis_addr *a = &l->url.sentinels[l->sentinel_index];
        log_warn("redis %s sentinel %s:%d: does not know master %s", l->name, a->host, a->port, l->url.master);
        sentinel_failed(l);
        return;
    }
    int port = atoi(r->element[1]->str);
    int moved = strcmp(r->element[0]->str, l->url.host) || port != l->url.port;
    snprintf(l->url.host, sizeof l->url.host, "%s", r->element[0]->str);
    l->url.port = port;
    l->asking = 0;
    const char *watch[] = {"SUBSCRIBE", "+switch-master"};
    l->sentinel->on_push = on_switch_master;
    conn_send(l->sentinel, NULL, NULL, 2, watch, NULL);
    if (!l->conn)
        connect_master(l);
    else if (moved)
        l->moved = 1; /* the watch came back and the master is elsewhere now */
}

static void on_sentinel_connected(struct redis_conn *c)
{
    struct redis_link *l = c->link;
    const char *ask[] = {"SENTINEL", "get-master-addr-by-name", l->url.master};
    conn_send(c, on_master_addr, NULL, 3, ask, NULL);
}

static void on_sentinel_lost(struct redis_link *l, struct redis_conn *c, const char *why)
{
    if (c != l->sentinel || l->stopping)
        return;
    if (l->asking)
        log_warn("redis %s sentinel %s:%d: %s", l->name, c->host, c->port, why);
    sentinel_failed(l);
}

static void ask_sentinel(struct redis_link *l)
{
    struct redis_addr *a = &l->url.sentinels[l->sentinel_index];
    l->sentinel = conn_open(l, a->host, a->port, on_sentinel_connected, on_sentinel_lost);
    if (!l->sentinel) {
        sentinel_failed(l);
        return;
    }
    l->asking = 1;
    l->connect_ms = uv_now(l->loop);
}

/* Connects to the master, asking the sentinels first when there are. */
static void connect_now(struct redis_link *l)
{
    if (!l->url.nsentinels) {
        connect_master(l);
        return;
    }
    sentinel_close(l);
    l->sentinel_tries = 0;
    l->moved = 0;
    ask_sentinel(l);
}

static void on_retry(uv_timer_t *t)
{
    connect_now(t->data);
}

/* Exponential backoff with full jitter in [delay/2, delay]. */
static void schedule_retry(struct redis_link *l)
{
    uint64_t delay = l->backoff_ms / 2 + (uint64_t)rand() % (l->backoff_ms / 2 + 1);
    l->backoff_ms = l->backoff_ms * 2 > l->max_backoff_ms ? l->max_backoff_ms : l->backoff_ms * 2;
    uv_timer_start(&l->retry, on_retry, delay, 0);
}

/* Tears down a link that stopped answering, and reconnects. */
static void abandon(struct redis_link *l, const char *why)
{
    if (strcmp(why, "master moved"))
        log_warn("redis %s %s:%d: %s in %llu ms%s", l->name, l->url.host, l->url.port, why,
                 (unsigned long long)l->timeout_ms, l->stopping ? "" : ", reconnecting");
    link_close(l);
}

void redis_link_alive(struct redis_link *l)
{
    l->alive_ms = uv_now(l->loop);
    l->checking = 0;
}

static void on_pong(struct redis_link *l, void *reply, void *privdata)
{
    (void)privdata;
    if (reply)
        redis_link_alive(l);
}

/* Every third of the timeout: a connect that takes too long is given up, a
 * link whose last check has not come back within the timeout is torn
 * down, and an idle one is checked again. While stopping: the replies
 * still awaited are given up after the timeout. */
static void on_health(uv_timer_t *t)
{
    struct redis_link *l = t->data;
    uint64_t now = uv_now(l->loop);
    if (l->stopping) {
        if (l->conn && now - l->connect_ms >= l->timeout_ms)
            abandon(l, "no answer at stop");
        return;
    }
    if (l->asking && now - l->connect_ms >= l->timeout_ms) {
        struct redis_addr *a = &l->url.sentinels[l->sentinel_index];
        log_warn("redis %s sentinel %s:%d: no answer in %llu ms", l->name, a->host, a->port,
                 (unsigned long long)l->timeout_ms);
        sentinel_failed(l);
        return;
    }
    if (l->conn && l->moved) {
        abandon(l, "master moved");
        return;
    }
    if (l->up && l->url.nsentinels && !l->sentinel) {
        l->sentinel_tries = 0; /* the watch was lost: open another one */
        ask_sentinel(l);
    }
    if (!l->conn)
        return;
    if (!l->up) {
        if (now - l->connect_ms >= l->timeout_ms)
            abandon(l, "no connection");
        return;
    }
    if (l->checking && now - l->alive_ms >= l->timeout_ms) {
        abandon(l, "no answer");
        return;
    }
    if (l->checking && !l->probe)
        return; /* one PING at a time; probes may be lost, so they go on */
    const char *ping[] = {"PING"};
    int sent = l->probe ? l->probe(l) : conn_send(l->conn, on_pong, NULL, 1, ping, NULL);
    if (sent == 0)
        l->checking = 1;
    else
        l->alive_ms = now; /* cannot judge it now */
}

void redis_link_configure(struct redis_link *l, const char *url, const char *name, const struct config *cfg)
{
    redis_url_parse(url, &l->url);
    l->name = name;
    l->min_backoff_ms = (uint64_t)cfg->redis_backoff_min;
    l->max_backoff_ms = (uint64_t)cfg->redis_backoff_max;
    l->timeout_ms = (uint64_t)cfg->redis_timeout;
    l->tls_ca = cfg->redis_ca[0] ? cfg->redis_ca : NULL;
    l->tls_cert = cfg->redis_cert[0] ? cfg->redis_cert : NULL;
    l->tls_key = cfg->redis_key[0] ? cfg->redis_key : NULL;
}

int redis_link_start(struct redis_link *l, uv_loop_t *loop)
{
    if (l->url.tls && !l->tls) {
        char err[512];
        if (!(l->tls = tls_ctx_client_create(l->tls_ca, l->tls_cert, l->tls_key, err, sizeof err))) {
            log_error("redis %s: %s", l->name, err);
            return UV_EINVAL;
        }
    }
    l->loop = loop;
    l->backoff_ms = l->min_backoff_ms;
    int r = uv_timer_init(loop, &l->retry);
    if (r || (r = uv_timer_init(loop, &l->health)))
        return r;
    l->retry.data = l;
    l->health.data = l;
    if (l->url.nnodes)
        return (l->cluster = redis_cluster_create(l)) ? 0 : UV_ENOMEM;
    uint64_t every = l->timeout_ms / 3 ? l->timeout_ms / 3 : 1;
    uv_timer_start(&l->health, on_health, every, every);
    connect_now(l);
    return 0;
}

void redis_link_stop(struct redis_link *l)
{
    l->stopping = 1;
    if (l->cluster) {
        redis_cluster_stop(l->cluster, finish_stop);
        return;
    }
    uv_timer_stop(&l->retry);
    sentinel_close(l);
    if (l->conn && l->conn->connected && l->conn->count) {
        l->connect_ms = uv_now(l->loop); /* on_read closes it after the last reply, on_health at the deadline */
        return;
    }
    link_close(l);
}

void redis_link_reconnect(struct redis_link *l)
{
    if (l->conn && !l->stopping)
        link_close(l);
}

int redis_link_command(struct redis_link *l, redis_reply_fn *fn, void *privdata, int argc, const char **argv,
                       const size_t *argvlen)
{
    if (l->cluster)
        return redis_cluster_command(l->cluster, fn, privdata, argc, argv, argvlen);
    if (!l->up || !l->conn || l->stopping)
        return -1; /* stopping: only what was sent before is waited for */
    return conn_send(l->conn, fn, privdata, argc, argv, argvlen);
}

void redis_script_init(struct redis_script *s)
{
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)s->source, strlen(s->source), digest);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(s->sha + 2 * i, 3, "%02x", digest[i]);
}

static void on_script_loaded(struct redis_link *l, void *reply, void *privdata)
{
    (void)privdata;
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_ERROR)
        log_error("redis %s: SCRIPT LOAD: %s", l->name, r->str);
}

void redis_script_load(struct redis_link *l, struct redis_script *s)
{
    const char *argv[] = {"SCRIPT", "LOAD", s->source};
    redis_link_command(l, on_script_loaded, NULL, 3, argv, NULL);
}

/* One script call in flight, with what it takes to send it again. */
struct script_call {
    struct redis_script *script;
    redis_reply_fn *fn;
    void *privdata;
    int retried;
    int argc;          /* command words: EVALSHA sha nkeys args... */
    const char **argv;
    size_t *lens;
};

static void script_call_free(struct script_call *sc)
{
    for (int i = 2; i < sc->argc; i++)
        free((char *)sc->argv[i]);
    free(sc->argv);
    free(sc->lens);
    free(sc);
}

static void on_script_reply(struct redis_link *l, void *reply, void *privdata)
{
    struct script_call *sc = privdata;
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_ERROR && !sc->retried && !strncmp(r->str, "NOSCRIPT", 8)) {
        sc->retried = 1;
        sc->argv[0] = "EVAL";
        sc->argv[1] = sc->script->source;
        sc->lens[0] = 4;
        sc->lens[1] = strlen(sc->script->source);
        if (redis_link_command(l, on_script_reply, sc, sc->argc, sc->argv, sc->lens) == 0)
            return;
        r = NULL;
    }
    if (sc->fn)
        sc->fn(l, r, sc->privdata);
    script_call_free(sc);
}

int redis_script_call(struct redis_link *l, struct redis_script *s, int nkeys, int nargs, const char **args,
                      const size_t *lens, redis_reply_fn *fn, void *privdata)
{
    if (!l->up)
        return -1;
    struct script_call *sc = calloc(1, sizeof *sc);
    char nkeys_text[16];
    snprintf(nkeys_text, sizeof nkeys_text, "%d", nkeys);
    if (!sc || !(sc->argv = calloc((size_t)nargs + 3, sizeof *sc->argv)) ||
        !(sc->lens = calloc((size_t)nargs + 3, sizeof *sc->lens))) {
        if (sc) {
            free(sc->argv);
            free(sc);
        }
        return -1;
    }
    sc->script = s;
    sc->fn = fn;
    sc->privdata = privdata;
    sc->argv[0] = "EVALSHA";
    sc->lens[0] = 7;
    sc->argv[1] = s->sha;
    sc->lens[1] = 40;
    sc->argv[2] = strdup(nkeys_text);
    sc->lens[2] = strlen(nkeys_text);
    sc->argc = 3;
    for (int i = 0; i < nargs; i++) {
        char *copy = malloc(lens[i] + 1);
        if (!copy || !sc->argv[2]) {
            free(copy);
            script_call_free(sc);
            return -1;
        }
        memcpy(copy, args[i], lens[i]);
        copy[lens[i]] = '\0';
        sc->argv[sc->argc] = copy;
        sc->lens[sc->argc++] = lens[i];
    }
    if (redis_link_command(l, on_script_reply, sc, sc->argc, sc->argv, sc->lens)) {
        script_call_free(sc);
        return -1;
    }
    return 0;
}
