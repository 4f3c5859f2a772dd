/* server.c - process lifetime: listening sockets (one SO_REUSEPORT listener
 * per worker, so the kernel spreads connections, and a second one per
 * worker on --admin-listen), the open-file limit, worker threads with one
 * loop each, signals, the configuration reload of SIGHUP and graceful
 * shutdown; and the wiring of the layers
 * (see server.h). Does not parse anything; the router handles what
 * arrives. */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "app/app.h"
#include "app/hub.h"
#include "app/router.h"
#include "cluster/bus.h"
#include "codec/command.h"
#include "codec/deflate.h"
#include "codec/ws.h"
#include "core/addr_count.h"
#include "core/clock.h"
#include "core/inbox.h"
#include "core/log.h"
#include "metrics/metrics.h"
#include "net/listener.h"
#include "net/loop.h"
#include "net/tls.h"

#define SHUTDOWN_GRACE_MS 3000
#define STOP_CHECK_MS 10
#define DRAIN_TICK_MS 50
#define SHUTDOWN_BOUND_MS 5000 /* past the drain and the grace time: exit anyway */
/* As long an accept queue as the kernel allows (net.core.somaxconn caps
 * it): a deploy sends every client back at once, and a connection the
 * full queue drops waits for the client's SYN retransmission, 1 s and then
 * 3 s later. */
#define LISTEN_BACKLOG 65535

struct server;

/* A configuration the workers read. Never written once published: a
 * reload publishes a new one, and whoever drops the last reference frees
 * it (the main thread or a worker). */
struct snapshot {
    atomic_int refs;
    struct config cfg;
    struct tls_ctx *tls;     /* --tls-cert as loaded; NULL: plaintext */
};

struct worker {
    struct server *server;
    int index;
    uv_loop_t loop;
    uv_thread_t thread;
    struct net_listener listener;
    struct net_listener admin;   /* --admin-listen; fd -1 without it */
    struct inbox inbox;
    uv_timer_t stop_timer;   /* bounds a graceful shutdown */
    uv_timer_t stop_check;   /* ends the loop once its last connection is gone */
    uv_timer_t drain_timer;  /* closes connections a slice at a time */
    uint64_t drain_start_ms;
    size_t drain_total, drain_closed;
    struct net_loop net;
    struct app app;
    struct snapshot *snap;   /* app.cfg and net.cfg point into it */
    struct metrics_worker metrics;  /* written by this worker only */
};

struct server {
    const struct config *cfg;    /* as at start: the main thread's settings */
    int argc;                    /* read again on SIGHUP */
    char **argv;
    struct snapshot *live;       /* the workers' newest settings */
    const struct token_key *token_key;  /* --auth jwt; NULL otherwise */
    uv_loop_t *loop;             /* the main thread's loop */
    struct worker *workers;
    int nworkers;
    atomic_int connections;      /* on the public port, HTTP phase included, for --max-connections */
    struct addr_count *per_ip;   /* for --max-connections-per-ip */
    atomic_int draining;         /* a shutdown began */
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t shutdown_bound;   /* a shutdown that does not end in time exits anyway */
    int stopping;
    struct bus *bus;             /* runs on the main loop */
    struct metrics_bus metrics;  /* written by the bus thread */
    struct metrics_view view;
    struct metrics_worker **worker_metrics;
    const char *in_kinds[CMD_COUNT + 1];
    uv_async_t workers_done;     /* a worker has exited */
    atomic_int workers_exited;
};

/* A bound socket on host:port for the option named flag, with
 * TCP_NODELAY, which the sockets it accepts inherit (replies go out when
 * written, not after the peer's delayed ACK). */
static int listen_socket(const char *flag, const char *host, uint16_t port_num, int *fd_out)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res;
    char port[8];
    snprintf(port, sizeof port, "%u", port_num);
    int r = getaddrinfo(host, port, &hints, &res);
    if (r) {
        log_error("%s %s:%u: %s", flag, host, port_num, gai_strerror(r));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) || bind(fd, res->ai_addr, res->ai_addrlen)) {
        log_error("%s %s:%u: %s", flag, host, port_num, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    *fd_out = fd;
    return 0;
}

static void on_public_connection(struct net_listener *ls, int fd, const struct sockaddr *peer)
{
    struct worker *w = ls->data;
    router_accept(&w->app, fd, peer, 0);
}

static void on_admin_connection(struct net_listener *ls, int fd, const struct sockaddr *peer)
{
    struct worker *w = ls->data;
    router_accept(&w->app, fd, peer, 1);
}

static void worker_close_handles(struct worker *w)
{
    net_loop_close(&w->net);
    uv_close((uv_handle_t *)&w->stop_timer, NULL);
    uv_close((uv_handle_t *)&w->stop_check, NULL);
    uv_close((uv_handle_t *)&w->drain_timer, NULL);
    inbox_close(&w->inbox);
}

static void on_stop_deadline(uv_timer_t *t)
{
    struct worker *w = t->data;
    log_warn("worker %d: %s", w->index, "shutdown grace time over, dropping the rest");
    net_loop_drop_all(&w->net);
}

/* The worker ends with its last connection. */
static void on_stop_check(uv_timer_t *t)
{
    struct worker *w = t->data;
    net_loop_tick(&w->net);
    if (!w->net.conns)
        worker_close_handles(w);
}

/* New connections are refused from now on, on the public and admin ports. */
static void close_listeners(struct worker *w)
{
    net_listener_close(&w->listener);
    if (w->admin.fd >= 0)
        net_listener_close(&w->admin);
}

/* Every connection is closing: the peers get the grace time to finish the
 * close handshake, and the worker ends with its last connection. */
static void worker_closed_all(struct worker *w)
{
    uv_timer_stop(&w->drain_timer);
    uv_timer_start(&w->stop_timer, on_stop_deadline, SHUTDOWN_GRACE_MS, 0);
    uv_timer_start(&w->stop_check, on_stop_check, STOP_CHECK_MS, STOP_CHECK_MS);
}

/* Closes the share of the connections that the time spent draining calls
 * for, so that --drain-seconds spreads the closes (and the reconnects to
 * other nodes) evenly. */
static void on_drain(uv_timer_t *t)
{
    struct worker *w = t->data;
    uint64_t drain_ms = (uint64_t)w->server->cfg->drain_seconds * 1000;
    uint64_t elapsed = uv_now(&w->loop) - w->drain_start_ms;
    if (elapsed >= drain_ms) {
        close_listeners(w);
        net_loop_close_some(&w->net, SIZE_MAX, WS_CLOSE_GOING_AWAY, "server shutting down");
        worker_closed_all(w);
        return;
    }
    size_t due = (size_t)((double)w->drain_total * (double)elapsed / (double)drain_ms);
    if (due > w->drain_closed)
        w->drain_closed += net_loop_close_some(&w->net, due - w->drain_closed, WS_CLOSE_GOING_AWAY,
                                               "server shutting down");
}

/* Without a drain time, everything closes at once. With one, the port
 * stays open while the connections close a share at a time: /readyz
 * answers 503 and new WebSocket handshakes are refused (router.c), so that
 * a load balancer sees the node leave; the listener closes at the end. */
static void worker_stop(struct task *task, void *ctx)
{
    struct worker *w = ctx;
    free(task);
    w->drain_total = net_loop_open_count(&w->net);
    w->drain_closed = 0;
    w->drain_start_ms = uv_now(&w->loop);
    if (w->server->cfg->drain_seconds == 0) {
        close_listeners(w);
        net_loop_close_some(&w->net, SIZE_MAX, WS_CLOSE_GOING_AWAY, "server shutting down");
        worker_closed_all(w);
        return;
    }
    uv_timer_start(&w->drain_timer, on_drain, DRAIN_TICK_MS, DRAIN_TICK_MS);
}

/* A copy of cfg and tls (a reference of its own) with refs references.
 * NULL when out of memory. */
static struct snapshot *snapshot_create(const struct config *cfg, struct tls_ctx *tls, int refs)
{
    struct snapshot *snap = malloc(sizeof *snap);
    if (snap) {
        atomic_init(&snap->refs, refs);
        snap->cfg = *cfg;
        if ((snap->tls = tls))
            tls_ctx_ref(tls);
    }
    return snap;
}

/* The connections opened on its TLS context keep it alive meanwhile. */
static void snapshot_unref(struct snapshot *snap)
{
    if (snap && atomic_fetch_sub(&snap->refs, 1) == 1) {
        tls_ctx_unref(snap->tls);
        free(snap);
    }
}

/* Hands a worker its new settings, with one reference for it. */
struct reload_task {
    struct task task;
    struct snapshot *snap;
};

/* On the worker, between two tasks: nothing of the worker holds a pointer
 * into the old settings past the callback that read them. */
static void worker_reload(struct task *t, void *ctx)
{
    struct worker *w = ctx;
    struct reload_task *rt = (struct reload_task *)t;
    snapshot_unref(w->snap);
    w->snap = rt->snap;
    w->app.cfg = w->net.cfg = &w->snap->cfg;
    w->net.tls = w->snap->tls; /* new handshakes; open sessions keep theirs */
    free(rt);
}

static void worker_main(void *arg)
{
    struct worker *w = arg;
    struct server *s = w->server;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    hub_destroy(w->app.hub);
    deflate_streams_destroy(w->app.deflate);
    int r = uv_loop_close(&w->loop);
    if (r)
        log_warn("worker %d: loop closed with handles open: %s", w->index, uv_strerror(r));
    snapshot_unref(w->snap);
    atomic_fetch_add(&s->workers_exited, 1);
    uv_async_send(&s->workers_done);
}

/* ---- hooks: how the layers reach each other -------------------------------- */

/* The bus posts events and replies to a worker's inbox. */
static int post_to_worker(void *arg, int worker, struct task *t)
{
    struct server *s = arg;
    return inbox_post(&s->workers[worker].inbox, t);
}

/* On the worker: an event from the bus fans out through its hub. */
static void deliver_on_worker(void *ctx, const struct event *ev)
{
    struct worker *w = ctx;
    hub_deliver(w->app.hub, ev);
}

static int bus_is_busy(void *arg)
{
    return bus_busy(arg);
}

static int bus_is_ready(void *arg)
{
    return bus_ready(arg);
}

static int worker_init(struct server *s, struct worker *w, int index)
{
    memset(w, 0, sizeof *w);
    w->server = s;
    w->index = index;
    w->admin.fd = -1;
    int r = uv_loop_init(&w->loop);
    if (r)
        return r;
    w->snap = s->live;
    atomic_fetch_add(&w->snap->refs, 1);
    const struct config *cfg = &w->snap->cfg;
    if ((r = inbox_init(&w->inbox, &w->loop, w)) || (r = net_loop_init(&w->net, &w->loop, index, cfg, &w->metrics)))
        return r;
    w->net.tls = w->snap->tls;
    int fd;
    if (listen_socket("--listen", cfg->listen_host, cfg->listen_port, &fd))
        return UV_EADDRINUSE;
    if ((r = net_listener_start(&w->listener, &w->net, fd, LISTEN_BACKLOG, on_public_connection, w))) {
        log_error("--listen %s:%u: %s", cfg->listen_host, cfg->listen_port, uv_strerror(r));
        return r;
    }
    if (cfg->admin_host[0]) {
        if (listen_socket("--admin-listen", cfg->admin_host, cfg->admin_port, &fd))
            return UV_EADDRINUSE;
        if ((r = net_listener_start(&w->admin, &w->net, fd, LISTEN_BACKLOG, on_admin_connection, w))) {
            log_error("--admin-listen %s:%u: %s", cfg->admin_host, cfg->admin_port, uv_strerror(r));
            return r;
        }
    }
    w->net.busy = bus_is_busy;
    w->net.busy_arg = s->bus;
    w->net.data = &w->app;
    uv_timer_init(&w->loop, &w->stop_timer);
    w->stop_timer.data = w;
    uv_timer_init(&w->loop, &w->stop_check);
    w->stop_check.data = w;
    uv_timer_init(&w->loop, &w->drain_timer);
    w->drain_timer.data = w;
    w->app = (struct app){
        .cfg = cfg,
        .net = &w->net,
        .hub = hub_create(&w->net),
        .deflate = deflate_streams_create(),
        .bus = s->bus,
        .connections = &s->connections,
        .per_ip = s->per_ip,
        .draining = &s->draining,
        .metrics = &s->view,
        .token_key = s->token_key,
    };
    return w->app.hub && w->app.deflate ? 0 : UV_ENOMEM;
}

/* What /metrics and /api/stats read. */
static int view_init(struct server *s)
{
    if (!(s->worker_metrics = calloc((size_t)s->nworkers, sizeof *s->worker_metrics)))
        return -1;
    for (int i = 0; i < s->nworkers; i++)
        s->worker_metrics[i] = &s->workers[i].metrics;
    for (int i = 0; i < CMD_COUNT; i++)
        s->in_kinds[i] = command_type_name((enum command_type)i);
    s->in_kinds[CMD_COUNT] = "invalid"; /* client.c counts refused commands there */
    s->view = (struct metrics_view){
        .node_id = s->cfg->node_id,
        .engine = s->cfg->redis_url[0] ? "redis" : "memory",
        .nworkers = s->nworkers,
        .workers = s->worker_metrics,
        .bus = &s->metrics,
        .in_kinds = s->in_kinds,
        .n_in_kinds = CMD_COUNT + 1,
        .ready = bus_is_ready,
        .ready_arg = s->bus,
    };
    return 0;
}

/* A shutdown that is still not over past the drain and the grace time
 * (replies that never came back) must not hang the process. */
static void on_shutdown_bound(uv_timer_t *t)
{
    struct server *s = t->data;
    log_error("shutdown not complete %d s after the signal: exiting now",
              s->cfg->drain_seconds + (SHUTDOWN_GRACE_MS + SHUTDOWN_BOUND_MS) / 1000);
    _exit(1);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    struct server *s = sig->data;
    if (s->stopping)
        return;
    s->stopping = 1;
    atomic_store(&s->draining, 1); /* /readyz fails first */
    if (s->cfg->drain_seconds)
        log_info("%s: closing every connection with 1001 over %d s", signum == SIGINT ? "SIGINT" : "SIGTERM",
                 s->cfg->drain_seconds);
    else
        log_info("%s: closing every connection with 1001", signum == SIGINT ? "SIGINT" : "SIGTERM");
    for (int i = 0; i < s->nworkers; i++) {
        struct task *t = malloc(sizeof *t);
        if (!t)
            abort();
        t->run = worker_stop;
        if (inbox_post(&s->workers[i].inbox, t))
            free(t);
    }
    /* A second signal has its default effect: the process ends at once. */
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    uv_close((uv_handle_t *)&s->sigint, NULL);
    uv_timer_init(s->loop, &s->shutdown_bound);
    s->shutdown_bound.data = s;
    uv_timer_start(&s->shutdown_bound, on_shutdown_bound,
                   (uint64_t)s->cfg->drain_seconds * 1000 + SHUTDOWN_GRACE_MS + SHUTDOWN_BOUND_MS, 0);
    uv_unref((uv_handle_t *)&s->shutdown_bound);
}

/* The certificate and key files of --tls-cert, read again for next (their
 * names may have changed, or the files under them): 1 when next has the new
 * context, 0 when it keeps the old one because TLS is off or because the
 * new files do not load (logged). Turning TLS on or off waits for a
 * restart: the clients' URLs change with it. */
static int reload_tls(const struct snapshot *live, struct config *fresh, struct snapshot *next)
{
    if (!fresh->tls_cert[0] != !live->cfg.tls_cert[0]) {
        log_info("config: tls-cert %s; takes effect after a restart", fresh->tls_cert[0] ? "set" : "removed");
        strcpy(fresh->tls_cert, live->cfg.tls_cert);
        strcpy(fresh->tls_key, live->cfg.tls_key);
    }
    if (!fresh->tls_cert[0])
        return 0;
    char err[PATH_MAX * 2 + 512];
    struct tls_ctx *tls = tls_ctx_server_create(fresh->tls_cert, fresh->tls_key, err, sizeof err);
    if (!tls) {
        log_error("SIGHUP: --tls-cert: %s; keeping the certificate in use", err);
        strcpy(fresh->tls_cert, live->cfg.tls_cert);
        strcpy(fresh->tls_key, live->cfg.tls_key);
        return 0;
    }
    tls_ctx_unref(next->tls);
    next->tls = tls;
    log_info("SIGHUP: TLS certificate loaded from %s; new connections get it", fresh->tls_cert);
    return 1;
}

/* SIGHUP: the file, the variables and the flags again, and the TLS
 * certificate. What can change live goes to the workers as a new
 * snapshot; the rest is logged as waiting for a restart. An invalid
 * configuration changes nothing. */
static void on_reload(uv_signal_t *sig, int signum)
{
    struct server *s = sig->data;
    (void)signum;
    if (s->stopping)
        return;
    char err[PATH_MAX + 1024];
    struct config *fresh = malloc(sizeof *fresh);
    struct snapshot *next = snapshot_create(&s->live->cfg, s->live->tls, s->nworkers + 1);
    int changed = 0;
    if (!fresh || !next)
        log_error("SIGHUP: out of memory; keeping the running configuration");
    else if (config_load(fresh, s->argc, s->argv, err, sizeof err))
        log_error("SIGHUP: %s; keeping the running configuration", err);
    else if (!(changed = reload_tls(s->live, fresh, next) + config_apply_live(&next->cfg, fresh)))
        log_info("SIGHUP: nothing to change");
    if (changed) {
        log_set_level(next->cfg.log_level);
        log_set_format(next->cfg.log_format);
        for (int i = 0; i < s->nworkers; i++) {
            struct reload_task *t = malloc(sizeof *t);
            if (!t)
                abort();
            *t = (struct reload_task){.task.run = worker_reload, .snap = next};
            if (inbox_post(&s->workers[i].inbox, &t->task)) {
                free(t);
                snapshot_unref(next);
            }
        }
        snapshot_unref(s->live);
        s->live = next;
        next = NULL;
    }
    free(fresh);
    if (next) {
        atomic_store(&next->refs, 1);
        snapshot_unref(next);
    }
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
static int port_free(const char *flag, const char *host, uint16_t port_num)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res;
    char port[8];
    snprintf(port, sizeof port, "%u", port_num);
    if (getaddrinfo(host, port, &hints, &res))
        return 1; /* listen_socket reports it */
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    int ok = fd >= 0 && !setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) &&
             !bind(fd, res->ai_addr, res->ai_addrlen);
    int err = errno;
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    if (!ok && err == EADDRINUSE) {
        log_error("%s %s:%u: address already in use", flag, host, port_num);
        return 0;
    }
    return 1;
}

/* Sizes the descriptor table for n descriptors now, before any thread
 * starts. The kernel grows it by doubling, and in a process of several
 * threads each growth waits for an RCU grace period (milliseconds) inside
 * the accept4 that needed it: the worker stalls, with every handshake in
 * flight, eight times on the way to 10,000 connections. */
static void reserve_descriptors(unsigned long long n)
{
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    if (n > (unsigned long long)fd + 1 && n <= INT_MAX) {
        int high = fcntl(fd, F_DUPFD_CLOEXEC, (int)(n - 1));
        if (high >= 0)
            close(high);
    }
    close(fd);
}

/* Raises the soft open-file limit to the hard one, warns when
 * --max-connections cannot fit in it with everything else the process
 * keeps open, and sizes the descriptor table for what fits. Past the
 * limit, connections are refused at accept (counted in
 * wsfan_connections_refused_total{reason="fd_limit"}). */
static void fit_open_files(const struct config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl))
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit want = {.rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &want) == 0)
            rl = want;
    }
    /* Per worker: its loop's epoll and wakeup descriptors, and a listening
     * socket with its spare per port. The main loop, the standard streams
     * and Redis's three links come on top. */
    unsigned long long ports = cfg->admin_host[0] ? 2 : 1;
    unsigned long long others = (unsigned long long)cfg->workers * (4 + 2 * ports) + 16 + (cfg->redis_url[0] ? 3 : 0);
    unsigned long long need = (unsigned long long)cfg->max_connections + others;
    if (rl.rlim_cur != RLIM_INFINITY && need > rl.rlim_cur)
        log_warn("--max-connections %d needs about %llu open files, but the limit is %llu: past about %llu "
                 "connections, new ones are refused. Raise the hard limit (ulimit -Hn, LimitNOFILE= in systemd) "
                 "or lower --max-connections",
                 cfg->max_connections, need, (unsigned long long)rl.rlim_cur,
                 rl.rlim_cur > others ? (unsigned long long)rl.rlim_cur - others : 0ULL);
    reserve_descriptors(rl.rlim_cur != RLIM_INFINITY && need > rl.rlim_cur ? rl.rlim_cur : need);
}

/* The bus with the engine and store that cfg asks for. */
static struct bus *bus_start(struct server *s)
{
    struct bus_hooks hooks = {
        .arg = s,
        .nworkers = s->nworkers,
        .post = post_to_worker,
        .deliver = deliver_on_worker,
    };
    const struct config *cfg = s->cfg;
    if (cfg->redis_url[0])
        return bus_create(s->loop, cfg, &hooks, &s->metrics, &bus_redis_engine, store_redis_create(s->loop, cfg));
    struct store *store = store_memory_create(s->loop, cfg, (struct offset){clock_wall_ms(), 0});
    return bus_create(s->loop, cfg, &hooks, &s->metrics, &bus_memory_engine, store);
}

/* Runs the workers until the signal handler has stopped them all. */
static void run_workers(struct server *s)
{
    uv_signal_init(s->loop, &s->sigterm);
    uv_signal_init(s->loop, &s->sigint);
    s->sigterm.data = s->sigint.data = s;
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    /* SIGHUP never keeps the loop alive, and is not closed at a shutdown:
     * one during the drain must not end the process. */
    uv_signal_init(s->loop, &s->sighup);
    s->sighup.data = s;
    uv_signal_start(&s->sighup, on_reload, SIGHUP);
    uv_unref((uv_handle_t *)&s->sighup);
    for (int i = 0; i < s->nworkers; i++)
        uv_thread_create(&s->workers[i].thread, worker_main, &s->workers[i]);
    log_info("wsfan %s listening on %s:%u%s with %d workers, node %s", WSFAN_VERSION, s->cfg->listen_host,
             s->cfg->listen_port, s->live->tls ? " (TLS: https and wss only)" : "", s->nworkers, s->cfg->node_id);
    if (s->cfg->admin_host[0])
        log_info("the API, /metrics and /dashboard on %s:%u only", s->cfg->admin_host, s->cfg->admin_port);
    uv_run(s->loop, UV_RUN_DEFAULT);
    for (int i = 0; i < s->nworkers; i++)
        uv_thread_join(&s->workers[i].thread);
    uv_close((uv_handle_t *)&s->shutdown_bound, NULL);
    uv_close((uv_handle_t *)&s->sighup, NULL);
    uv_run(s->loop, UV_RUN_DEFAULT);
    log_info("stopped");
}

int server_run(const struct config *cfg, const struct token_key *token_key, struct tls_ctx *tls, int argc,
               char **argv)
{
    struct server s = {.cfg = cfg, .token_key = token_key, .nworkers = cfg->workers, .argc = argc, .argv = argv};
    uv_loop_t loop;
    int status = 1;
    uv_loop_init(&loop);
    s.loop = &loop;
    signal(SIGPIPE, SIG_IGN);
    if (!port_free("--listen", cfg->listen_host, cfg->listen_port) ||
        (cfg->admin_host[0] && !port_free("--admin-listen", cfg->admin_host, cfg->admin_port)))
        goto fail;
    fit_open_files(cfg);
    if (!(s.per_ip = addr_count_create())) {
        log_error("cannot set up the per-address connection counts");
        goto fail;
    }
    if (metrics_bus_init(&s.metrics)) {
        log_error("cannot set up the metrics lock");
        goto fail;
    }
    if (!(s.live = snapshot_create(cfg, tls, 1)) || !(s.workers = calloc((size_t)s.nworkers, sizeof *s.workers)) ||
        !(s.bus = bus_start(&s)) || view_init(&s)) {
        log_error("out of memory starting %d workers and the bus", s.nworkers);
        goto fail_bus;
    }
    s.workers_done.data = &s;
    uv_async_init(&loop, &s.workers_done, on_workers_done);
    for (int i = 0; i < s.nworkers; i++)
        if (worker_init(&s, &s.workers[i], i)) {
            /* The workers never ran: let the bus stop on its own loop. */
            for (int j = 0; j <= i; j++)
                snapshot_unref(s.workers[j].snap);
            uv_close((uv_handle_t *)&s.workers_done, NULL);
            bus_stop(s.bus);
            uv_run(&loop, UV_RUN_DEFAULT);
            goto fail_bus;
        }
    run_workers(&s);
    status = 0;
fail_bus:
    snapshot_unref(s.live);
    if (s.bus)
        bus_free(s.bus);
    free(s.worker_metrics);
    free(s.workers);
    metrics_bus_close(&s.metrics);
fail:
    addr_count_destroy(s.per_ip);
    uv_loop_close(&loop);
    return status;
}
