/* redis.c - a Redis connection owned for the server's lifetime: connect,
 * AUTH, SELECT, PING to confirm, health checks, and reconnect with
 * exponential backoff and jitter when it drops or stops answering. See
 * redis.h. */
#include "net/redis.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/log.h"

/* ---- hiredis on libuv ----------------------------------------------------
 * Debian's hiredis 0.14 adapter drops poll errors, so a refused connect is
 * never reported and the link would wait forever. This one hands an error
 * to hiredis as the events it waits for, and hiredis then finds the socket
 * error itself. */
struct uv_events {
    redisAsyncContext *ac;
    uv_poll_t poll;
    int events;
};

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct uv_events *p = h->data;
    int ev = status < 0 ? p->events : events;
    if (p->ac && (ev & UV_READABLE))
        redisAsyncHandleRead(p->ac);
    if (p->ac && (ev & UV_WRITABLE))
        redisAsyncHandleWrite(p->ac);
}

static void poll_update(struct uv_events *p, int add, int remove)
{
    p->events = (p->events | add) & ~remove;
    if (p->events)
        uv_poll_start(&p->poll, p->events, on_poll);
    else
        uv_poll_stop(&p->poll);
}

static void add_read(void *data) { poll_update(data, UV_READABLE, 0); }
static void del_read(void *data) { poll_update(data, 0, UV_READABLE); }
static void add_write(void *data) { poll_update(data, UV_WRITABLE, 0); }
static void del_write(void *data) { poll_update(data, 0, UV_WRITABLE); }

static void on_poll_closed(uv_handle_t *h)
{
    free(h->data);
}

static void cleanup(void *data)
{
    struct uv_events *p = data;
    p->ac = NULL; /* hiredis is freeing the context */
    uv_close((uv_handle_t *)&p->poll, on_poll_closed);
}

static int attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    struct uv_events *p = calloc(1, sizeof *p);
    if (!p)
        return -1;
    if (uv_poll_init(loop, &p->poll, ac->c.fd)) {
        free(p);
        return -1;
    }
    p->ac = ac;
    p->poll.data = p;
    ac->ev.data = p;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
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
    uv_close((uv_handle_t *)&l->retry, on_timer_closed);
    uv_close((uv_handle_t *)&l->health, on_timer_closed);
}

/* The context is gone; was_up tells whether the owner saw the link up. */
static void link_down(struct redis_link *l, int was_up)
{
    l->ac = NULL;
    l->up = 0;
    l->checking = 0;
    if (was_up && l->on_down)
        l->on_down(l);
    if (l->stopping)
        finish_stop(l);
    else
        schedule_retry(l);
}

static void on_ready(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_link *l = privdata;
    redisReply *r = reply;
    if (!r || ac != l->ac)
        return;
    if (r->type == REDIS_REPLY_ERROR) {
        log_error("redis %s %s:%d: %s", l->name, l->url.host, l->url.port, r->str);
        redisAsyncDisconnect(ac);
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
static void on_setup_step(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_link *l = privdata;
    redisReply *r = reply;
    if (r && ac == l->ac && r->type == REDIS_REPLY_ERROR) {
        log_error("redis %s %s:%d: %s", l->name, l->url.host, l->url.port, r->str);
        redisAsyncDisconnect(ac);
    }
}

/* A peer that vanished without a RST (a partition) is noticed by the
 * kernel too, not only by the health check: keepalive probes while idle,
 * and a user timeout for data that is never acknowledged. */
static void set_keepalive(const struct redis_link *l, int fd)
{
    int on = 1, idle = 5, interval = 2, count = 3;
    unsigned int user_timeout = (unsigned int)l->timeout_ms;
    if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on) ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval) ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count) ||
        setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout))
        log_warn("redis %s %s:%d: cannot set TCP keepalive", l->name, l->url.host, l->url.port);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct redis_link *l = ac->data;
    if (status != REDIS_OK) {
        log_warn("redis %s %s:%d: %s", l->name, l->url.host, l->url.port, ac->errstr);
        link_down(l, 0);
        return;
    }
    redisAsyncContext *c = l->ac;
    set_keepalive(l, c->c.fd);
    if (l->url.pass[0]) {
        if (l->url.user[0])
            redisAsyncCommand(c, on_setup_step, l, "AUTH %s %s", l->url.user, l->url.pass);
        else
            redisAsyncCommand(c, on_setup_step, l, "AUTH %s", l->url.pass);
    }
    if (l->url.db)
        redisAsyncCommand(c, on_setup_step, l, "SELECT %d", l->url.db);
    redisAsyncCommand(c, on_ready, l, "PING");
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct redis_link *l = ac->data;
    if (ac != l->ac)
        return; /* abandoned: abandon() takes the link down itself */
    if (status != REDIS_OK && !l->stopping)
        log_warn("redis %s %s:%d: connection lost: %s", l->name, l->url.host, l->url.port,
                 ac->errstr ? ac->errstr : "closed");
    link_down(l, l->up);
}

/* A new context to addr on the link's loop, with the link as its data;
 * NULL (logged) when it cannot even start. */
static redisAsyncContext *context_to(struct redis_link *l, const char *host, int port)
{
    redisAsyncContext *ac = redisAsyncConnect(host, port);
    if (!ac || ac->err) {
        log_warn("redis %s %s:%d: %s", l->name, host, port, ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        return NULL;
    }
    if (attach(ac, l->loop)) {
        log_error("redis %s: out of memory", l->name);
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = l;
    return ac;
}

static void connect_master(struct redis_link *l)
{
    redisAsyncContext *ac = context_to(l, l->url.host, l->url.port);
    if (!ac) {
        schedule_retry(l);
        return;
    }
    l->ac = ac;
    l->connect_ms = uv_now(l->loop);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
}

/* ---- Sentinel --------------------------------------------------------------
 * With redis+sentinel://, every connect first asks a sentinel for the
 * master's address (SENTINEL get-master-addr-by-name), trying each sentinel
 * in turn, and then keeps that sentinel connection subscribed to
 * +switch-master: when the master moves, the link is torn down and
 * reconnects, asking again. While the master link is up and the watch is
 * lost, the health check opens a new one. */

static void ask_sentinel(struct redis_link *l);

/* Drops the sentinel connection (not from inside its own callbacks). */
static void sentinel_close(struct redis_link *l)
{
    redisAsyncContext *ac = l->sentinel;
    l->sentinel = NULL;
    l->asking = 0;
    if (ac)
        redisAsyncFree(ac);
}

/* This sentinel did not help: the next one, or, once every one was tried,
 * the link's backoff. */
static void sentinel_failed(struct redis_link *l)
{
    l->sentinel = NULL;
    l->asking = 0;
    if (++l->sentinel_tries < l->url.nsentinels) {
        l->sentinel_index = (l->sentinel_index + 1) % l->url.nsentinels;
        ask_sentinel(l);
    } else if (!l->up) {
        schedule_retry(l);
    }
}

static void on_switch_master(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_link *l = privdata;
    redisReply *r = reply;
    if (!r || ac != l->sentinel || r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[2]->type != REDIS_REPLY_STRING)
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

static void on_master_addr(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_link *l = privdata;
    redisReply *r = reply;
    if (ac != l->sentinel)
        return;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_STRING) {
        struct redis_addr *a = &l->url.sentinels[l->sentinel_index];
        log_warn("redis %s sentinel %s:%d: does not know master %s", l->name, a->host, a->port, l->url.master);
        redisAsyncDisconnect(ac); /* on_sentinel_disconnect moves on */
        return;
    }
    int port = atoi(r->element[1]->str);
    int moved = strcmp(r->element[0]->str, l->url.host) || port != l->url.port;
    snprintf(l->url.host, sizeof l->url.host, "%s", r->element[0]->str);
    l->url.port = port;
    l->asking = 0;
    redisAsyncCommand(ac, on_switch_master, l, "SUBSCRIBE +switch-master");
    if (!l->ac)
        connect_master(l);
    else if (moved)
        l->moved = 1; /* the watch came back and the master is elsewhere now */
}

static void on_sentinel_connect(const redisAsyncContext *ac, int status)
{
    struct redis_link *l = ac->data;
    if (ac != l->sentinel)
        return;
    if (status != REDIS_OK) {
        struct redis_addr *a = &l->url.sentinels[l->sentinel_index];
        log_warn("redis %s sentinel %s:%d: %s", l->name, a->host, a->port, ac->errstr);
        sentinel_failed(l); /* hiredis frees this context */
        return;
    }
    redisAsyncCommand(l->sentinel, on_master_addr, l, "SENTINEL get-master-addr-by-name %s", l->url.master);
}

static void on_sentinel_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    struct redis_link *l = ac->data;
    if (ac != l->sentinel || l->stopping)
        return;
    sentinel_failed(l);
}

static void ask_sentinel(struct redis_link *l)
{
    struct redis_addr *a = &l->url.sentinels[l->sentinel_index];
    l->sentinel = context_to(l, a->host, a->port);
    if (!l->sentinel) {
        sentinel_failed(l);
        return;
    }
    l->asking = 1;
    l->connect_ms = uv_now(l->loop);
    redisAsyncSetConnectCallback(l->sentinel, on_sentinel_connect);
    redisAsyncSetDisconnectCallback(l->sentinel, on_sentinel_disconnect);
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

/* Tears down a link that stopped answering: pending commands get NULL
 * replies, and the link reconnects. Only from a timer, never inside a
 * hiredis callback. */
static void abandon(struct redis_link *l, const char *why)
{
    redisAsyncContext *ac = l->ac;
    int was_up = l->up;
    if (strcmp(why, "master moved"))
        log_warn("redis %s %s:%d: %s in %llu ms, reconnecting", l->name, l->url.host, l->url.port, why,
                 (unsigned long long)l->timeout_ms);
    /* Down first, so that what the NULL replies make the owner do cannot
     * send on the context being freed. */
    l->ac = NULL;
    l->up = 0;
    redisAsyncFree(ac);
    link_down(l, was_up);
}

void redis_link_alive(struct redis_link *l)
{
    l->alive_ms = uv_now(l->loop);
    l->checking = 0;
}

static void on_pong(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_link *l = privdata;
    if (reply && ac == l->ac)
        redis_link_alive(l);
}

/* Every third of the timeout: a connect that takes too long is given up, a
 * link whose last check has not come back within the timeout is torn
 * down, and an idle one is checked again. */
static void on_health(uv_timer_t *t)
{
    struct redis_link *l = t->data;
    uint64_t now = uv_now(l->loop);
    if (l->stopping)
        return;
    if (l->asking && now - l->connect_ms >= l->timeout_ms) {
        struct redis_addr *a = &l->url.sentinels[l->sentinel_index];
        log_warn("redis %s sentinel %s:%d: no answer in %llu ms", l->name, a->host, a->port,
                 (unsigned long long)l->timeout_ms);
        sentinel_close(l);
        sentinel_failed(l);
        return;
    }
    if (l->ac && l->moved) {
        abandon(l, "master moved");
        return;
    }
    if (l->up && l->url.nsentinels && !l->sentinel) {
        l->sentinel_tries = 0; /* the watch was lost: open another one */
        ask_sentinel(l);
    }
    if (!l->ac)
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
    int sent = l->probe ? l->probe(l) : redisAsyncCommand(l->ac, on_pong, l, "PING") == REDIS_OK ? 0 : -1;
    if (sent == 0)
        l->checking = 1;
    else
        l->alive_ms = now; /* cannot judge it now */
}

int redis_link_start(struct redis_link *l, uv_loop_t *loop)
{
    l->loop = loop;
    l->backoff_ms = l->min_backoff_ms;
    int r = uv_timer_init(loop, &l->retry);
    if (r || (r = uv_timer_init(loop, &l->health)))
        return r;
    l->retry.data = l;
    l->health.data = l;
    uint64_t every = l->timeout_ms / 3 ? l->timeout_ms / 3 : 1;
    uv_timer_start(&l->health, on_health, every, every);
    connect_now(l);
    return 0;
}

void redis_link_stop(struct redis_link *l)
{
    l->stopping = 1;
    uv_timer_stop(&l->retry);
    uv_timer_stop(&l->health);
    sentinel_close(l);
    if (l->ac && (l->ac->c.flags & REDIS_CONNECTED)) {
        redisAsyncDisconnect(l->ac); /* link_down follows from its callback */
        return;
    }
    /* Still connecting (no callback will come) or already down. */
    if (l->ac)
        redisAsyncFree(l->ac);
    l->ac = NULL;
    finish_stop(l);
}

int redis_link_command(struct redis_link *l, redisCallbackFn *fn, void *privdata, int argc, const char **argv,
                       const size_t *argvlen)
{
    if (!l->up || !l->ac)
        return -1;
    return redisAsyncCommandArgv(l->ac, fn, privdata, argc, argv, argvlen) == REDIS_OK ? 0 : -1;
}

void redis_script_init(struct redis_script *s)
{
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)s->source, strlen(s->source), digest);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(s->sha + 2 * i, 3, "%02x", digest[i]);
}

static void on_script_loaded(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    redisReply *r = reply;
    struct redis_link *l = privdata;
    if (r && r->type == REDIS_REPLY_ERROR)
        log_error("redis %s: SCRIPT LOAD: %s", l->name, r->str);
}

void redis_script_load(struct redis_link *l, struct redis_script *s)
{
    const char *argv[] = {"SCRIPT", "LOAD", s->source};
    redis_link_command(l, on_script_loaded, l, 3, argv, NULL);
}

/* One script call in flight, with what it takes to send it again. */
struct script_call {
    struct redis_link *link;
    struct redis_script *script;
    redisCallbackFn *fn;
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

static void on_script_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct script_call *sc = privdata;
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_ERROR && !sc->retried && !strncmp(r->str, "NOSCRIPT", 8)) {
        sc->retried = 1;
        sc->argv[0] = "EVAL";
        sc->argv[1] = sc->script->source;
        sc->lens[0] = 4;
        sc->lens[1] = strlen(sc->script->source);
        if (redisAsyncCommandArgv(ac, on_script_reply, sc, sc->argc, sc->argv, sc->lens) == REDIS_OK)
            return;
        r = NULL;
    }
    sc->fn(ac, r, sc->privdata);
    script_call_free(sc);
}

int redis_script_call(struct redis_link *l, struct redis_script *s, int nkeys, int nargs, const char **args,
                      const size_t *lens, redisCallbackFn *fn, void *privdata)
{
    if (!l->up || !l->ac)
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
    sc->link = l;
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
    if (redisAsyncCommandArgv(l->ac, on_script_reply, sc, sc->argc, sc->argv, sc->lens) != REDIS_OK) {
        script_call_free(sc);
        return -1;
    }
    return 0;
}
