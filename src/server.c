/* server.c - process lifetime: listening sockets (one SO_REUSEPORT listener
 * per worker, so the kernel spreads connections), worker threads with one
 * loop each, the per-turn flush, the ticker, signals and graceful shutdown.
 * Does not parse anything; conn.c handles what arrives. */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bus.h"
#include "conn.h"
#include "hub.h"
#include "log.h"
#include "ws.h"

#define TICK_MS 250
#define SHUTDOWN_GRACE_MS 3000
#define FLUSH_SLICE 64

/* Active while dirty connections remain: keeps the loop from blocking. */
static void on_flush_more(uv_idle_t *h)
{
    (void)h;
}

static int listen_socket(const struct config *cfg, int *fd_out)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res;
    char port[8];
    snprintf(port, sizeof port, "%u", cfg->listen_port);
    int r = getaddrinfo(cfg->listen_host, port, &hints, &res);
    if (r) {
        log_error("--listen %s:%u: %s", cfg->listen_host, cfg->listen_port, gai_strerror(r));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) ||
        bind(fd, res->ai_addr, res->ai_addrlen)) {
        log_error("--listen %s:%u: %s", cfg->listen_host, cfg->listen_port, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    *fd_out = fd;
    return 0;
}

void worker_mark_dirty(struct worker *w, struct conn *c)
{
    if (c->dirty)
        return;
    c->dirty = 1;
    conn_ref(c);
    c->dirty_next = NULL;
    if (w->dirty_tail)
        w->dirty_tail->dirty_next = c;
    else
        w->dirty = c;
    w->dirty_tail = c;
}

/* Flushes at most FLUSH_SLICE dirty connections per loop turn, oldest first,
 * so that the loop reads (and queues new messages) between slices instead of
 * once per pass over every connection: a message then waits at most about one
 * pass, not one pass for the turn to end plus one for its own flush. */
static void on_flush(uv_prepare_t *h)
{
    struct worker *w = h->data;
    for (int n = 0; n < FLUSH_SLICE && w->dirty; n++) {
        struct conn *c = w->dirty;
        w->dirty = c->dirty_next;
        if (!w->dirty)
            w->dirty_tail = NULL;
        c->dirty = 0;
        conn_flush(c);
        conn_unref(c);
    }
    if (!w->dirty) {
        uv_idle_stop(&w->flush_more);
        return;
    }
    uv_idle_start(&w->flush_more, on_flush_more);
    if (bus_busy(w->server->bus))
        sched_yield(); /* the bus thread may share this core: let it sequence
                          what waits, so the next slice can carry it */
}

static void on_tick(uv_timer_t *t)
{
    struct worker *w = t->data;
    uint64_t now = uv_now(&w->loop);
    struct conn *c = w->conns;
    while (c) {
        struct conn *next = c->next;
        conn_tick(c, now);
        c = next;
    }
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct worker *w = listener->data;
    if (status < 0) {
        log_warn("worker %d: accept: %s", w->index, uv_strerror(status));
        return;
    }
    conn_accept(w, listener);
}

static void worker_close_handles(struct worker *w)
{
    uv_close((uv_handle_t *)&w->flusher, NULL);
    uv_close((uv_handle_t *)&w->flush_more, NULL);
    uv_close((uv_handle_t *)&w->ticker, NULL);
    uv_close((uv_handle_t *)&w->stop_timer, NULL);
    inbox_close(&w->inbox);
}

/* Called whenever a connection is freed: the worker ends with its last one. */
static void on_stop_deadline(uv_timer_t *t)
{
    struct worker *w = t->data;
    log_warn("worker %d: %s", w->index, "shutdown grace time over, dropping the rest");
    for (struct conn *c = w->conns; c; c = c->next)
        conn_drop(c);
}

static void on_stop_check(uv_timer_t *t);

static void worker_stop(struct task *task, void *ctx)
{
    struct worker *w = ctx;
    free(task);
    w->stopping = 1;
    uv_close((uv_handle_t *)&w->listener, NULL);
    for (struct conn *c = w->conns; c; c = c->next)
        conn_close(c, WS_CLOSE_GOING_AWAY, "server shutting down");
    uv_timer_start(&w->stop_timer, on_stop_deadline, SHUTDOWN_GRACE_MS, 0);
    uv_timer_start(&w->ticker, on_stop_check, 10, 10);
}

static void on_stop_check(uv_timer_t *t)
{
    struct worker *w = t->data;
    uint64_t now = uv_now(&w->loop);
    for (struct conn *c = w->conns, *next; c; c = next) {
        next = c->next;
        conn_tick(c, now);
    }
    if (!w->conns)
        worker_close_handles(w);
}

static void worker_main(void *arg)
{
    struct worker *w = arg;
    struct server *s = w->server;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    frame_unref(w->ping);
    hub_destroy(w->hub);
    int r = uv_loop_close(&w->loop);
    if (r)
        log_warn("worker %d: loop closed with handles open: %s", w->index, uv_strerror(r));
    atomic_fetch_add(&s->workers_exited, 1);
    uv_async_send(&s->workers_done);
}

static int worker_init(struct server *s, struct worker *w, int index)
{
    memset(w, 0, sizeof *w);
    w->server = s;
    w->index = index;
    int r = uv_loop_init(&w->loop);
    if (r)
        return r;
    int fd;
    if (listen_socket(s->cfg, &fd))
        return UV_EADDRINUSE;
    uv_tcp_init(&w->loop, &w->listener);
    w->listener.data = w;
    if ((r = uv_tcp_open(&w->listener, fd)) || (r = uv_listen((uv_stream_t *)&w->listener, 1024, on_connection))) {
        log_error("--listen %s:%u: %s", s->cfg->listen_host, s->cfg->listen_port, uv_strerror(r));
        return r;
    }
    if ((r = inbox_init(&w->inbox, &w->loop, w)))
        return r;
    uv_prepare_init(&w->loop, &w->flusher);
    w->flusher.data = w;
    uv_prepare_start(&w->flusher, on_flush);
    uv_idle_init(&w->loop, &w->flush_more);
    uv_timer_init(&w->loop, &w->ticker);
    w->ticker.data = w;
    uv_timer_start(&w->ticker, on_tick, TICK_MS, TICK_MS);
    uv_timer_init(&w->loop, &w->stop_timer);
    w->stop_timer.data = w;
    w->ping = ws_frame_create(WS_OP_PING, NULL, 0);
    w->hub = hub_create(w);
    return w->ping && w->hub ? 0 : UV_ENOMEM;
}

static void on_signal(uv_signal_t *sig, int signum)
{
    struct server *s = sig->data;
    if (s->stopping)
        return;
    s->stopping = 1;
    log_info("%s: closing every connection with 1001", signum == SIGINT ? "SIGINT" : "SIGTERM");
    for (int i = 0; i < s->nworkers; i++) {
        struct task *t = malloc(sizeof *t);
        if (!t)
            abort();
        t->run = worker_stop;
        if (inbox_post(&s->workers[i].inbox, t))
            free(t);
    }
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    uv_close((uv_handle_t *)&s->sigint, NULL);
}

/* The bus serves the workers until the last of them has exited. */
static void on_workers_done(uv_async_t *a)
{
    struct server *s = a->data;
    if (atomic_load(&s->workers_exited) < s->nworkers)
        return;
    uv_close((uv_handle_t *)a, NULL);
    bus_stop(s->bus);
}

/* SO_REUSEPORT would let a second wsfan share the port and split the
 * clients silently: a plain bind first tells whether the port is taken. */
static int port_free(const struct config *cfg)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res;
    char port[8];
    snprintf(port, sizeof port, "%u", cfg->listen_port);
    if (getaddrinfo(cfg->listen_host, port, &hints, &res))
        return 1; /* listen_socket reports it */
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    int ok = fd >= 0 && !setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) &&
             !bind(fd, res->ai_addr, res->ai_addrlen);
    int err = errno;
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    if (!ok && err == EADDRINUSE) {
        log_error("--listen %s:%u: address already in use", cfg->listen_host, cfg->listen_port);
        return 0;
    }
    return 1;
}

int server_run(const struct config *cfg)
{
    struct server s = {.cfg = cfg, .nworkers = cfg->workers};
    uv_loop_t loop;
    uv_loop_init(&loop);
    s.loop = &loop;
    signal(SIGPIPE, SIG_IGN);
    if (!port_free(cfg))
        return 1;
    s.workers = calloc((size_t)s.nworkers, sizeof *s.workers);
    if (!s.workers) {
        log_error("out of memory for %d workers", s.nworkers);
        return 1;
    }
    int started = 0, status = 0;
    if (metrics_bus_init(&s.metrics)) {
        log_error("cannot set up the metrics lock");
        return 1;
    }
    s.workers_done.data = &s;
    uv_async_init(&loop, &s.workers_done, on_workers_done);
    if (!(s.bus = bus_create(&s))) {
        log_error("out of memory creating the bus");
        return 1;
    }
    for (int i = 0; i < s.nworkers; i++) {
        if (worker_init(&s, &s.workers[i], i)) {
            status = 1;
            break;
        }
    }
    if (status == 0) {
        uv_signal_init(&loop, &s.sigterm);
        uv_signal_init(&loop, &s.sigint);
        s.sigterm.data = s.sigint.data = &s;
        uv_signal_start(&s.sigterm, on_signal, SIGTERM);
        uv_signal_start(&s.sigint, on_signal, SIGINT);
        for (; started < s.nworkers; started++)
            uv_thread_create(&s.workers[started].thread, worker_main, &s.workers[started]);
        log_info("wsfan %s listening on %s:%u with %d workers, node %s", WSFAN_VERSION, cfg->listen_host,
                 cfg->listen_port, s.nworkers, cfg->node_id);
        uv_run(&loop, UV_RUN_DEFAULT);
        for (int i = 0; i < started; i++)
            uv_thread_join(&s.workers[i].thread);
        log_info("stopped");
    }
    if (status) {
        uv_close((uv_handle_t *)&s.workers_done, NULL);
        bus_stop(s.bus);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    bus_free(s.bus);
    metrics_bus_close(&s.metrics);
    free(s.workers);
    uv_loop_close(&loop);
    return status;
}
