/* loop.c - one worker loop's connections: the dirty list flushed round-robin
 * in slices, the ticker, and shutdown helpers. See loop.h. */
#include "net/loop.h"

#include <errno.h>
#include <sched.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "codec/sse.h"
#include "codec/ws.h"
#include "net/conn.h"

#define TICK_MS 250
#define FLUSH_SLICE 64
#define EVENTS_MAX 256

void net_loop_mark_dirty(struct net_loop *l, struct conn *c)
{
    if (c->dirty)
        return;
    c->dirty = 1;
    conn_ref(c);
    c->dirty_next = NULL;
    if (l->dirty_tail)
        l->dirty_tail->dirty_next = c;
    else
        l->dirty = c;
    l->dirty_tail = c;
}

/* Active while dirty connections remain: keeps the loop from blocking. */
static void on_flush_more(uv_idle_t *h)
{
    (void)h;
}

/* Flushes at most FLUSH_SLICE dirty connections per loop turn, oldest first,
 * so that the loop reads (and queues new messages) between slices instead of
 * once per pass over every connection: a message then waits at most about one
 * pass, not one pass for the turn to end plus one for its own flush. */
static void on_flush(uv_prepare_t *h)
{
    struct net_loop *l = h->data;
    for (int n = 0; n < FLUSH_SLICE && l->dirty; n++) {
        struct conn *c = l->dirty;
        l->dirty = c->dirty_next;
        if (!l->dirty)
            l->dirty_tail = NULL;
        c->dirty = 0;
        conn_flush(c);
        conn_unref(c);
    }
    if (!l->dirty) {
        uv_idle_stop(&l->flush_more);
        return;
    }
    uv_idle_start(&l->flush_more, on_flush_more);
    if (l->busy && l->busy(l->busy_arg))
        sched_yield(); /* the bus thread may share this core: let it sequence
                          what waits, so the next slice can carry it */
}

void net_loop_tick(struct net_loop *l)
{
    uint64_t now = uv_now(l->uv);
    for (struct conn *c = l->conns, *next; c; c = next) {
        next = c->next;
        conn_tick(c, now);
    }
}

/* The epoll set has ready sockets: one batch of them per loop turn, so
 * that timers, the inbox and the flusher run between batches. A conn
 * dropped by an earlier event of the batch is still allocated (its
 * release waits for the flusher) and ignores its own. */
static void on_io(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    struct net_loop *l = h->data;
    struct epoll_event ready[EVENTS_MAX];
    int n;
    do
        n = epoll_wait(l->epfd, ready, EVENTS_MAX, 0);
    while (n < 0 && errno == EINTR);
    for (int i = 0; i < n; i++)
        conn_ready(ready[i].data.ptr, ready[i].events);
}

static void on_tick(uv_timer_t *t)
{
    net_loop_tick(t->data);
}

int net_loop_init(struct net_loop *l, uv_loop_t *uv, int index, const struct config *cfg,
                  struct metrics_worker *metrics)
{
    l->uv = uv;
    l->index = index;
    l->cfg = cfg;
    l->metrics = metrics;
    if (!(l->ping = ws_frame_create(WS_OP_PING, NULL, 0)) || !(l->pong = ws_frame_create(WS_OP_PONG, NULL, 0)) ||
        !(l->keepalive = sse_keepalive_create()))
        return UV_ENOMEM;
    if ((l->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
        return uv_translate_sys_error(errno);
    int r = uv_poll_init(uv, &l->io, l->epfd);
    if (r) {
        close(l->epfd);
        return r;
    }
    l->io.data = l;
    if ((r = uv_poll_start(&l->io, UV_READABLE, on_io)))
        return r;
    uv_prepare_init(uv, &l->flusher);
    l->flusher.data = l;
    uv_prepare_start(&l->flusher, on_flush);
    uv_idle_init(uv, &l->flush_more);
    uv_timer_init(uv, &l->ticker);
    l->ticker.data = l;
    uv_timer_start(&l->ticker, on_tick, TICK_MS, TICK_MS);
    return 0;
}

/* The set's descriptor outlives libuv's watch of it. */
static void on_io_closed(uv_handle_t *h)
{
    struct net_loop *l = h->data;
    close(l->epfd);
    l->epfd = -1;
}

void net_loop_close(struct net_loop *l)
{
    uv_close((uv_handle_t *)&l->io, on_io_closed);
    uv_close((uv_handle_t *)&l->flusher, NULL);
    uv_close((uv_handle_t *)&l->flush_more, NULL);
    uv_close((uv_handle_t *)&l->ticker, NULL);
    frame_unref(l->ping);
    frame_unref(l->pong);
    frame_unref(l->keepalive);
    l->ping = l->pong = l->keepalive = NULL;
}

size_t net_loop_close_some(struct net_loop *l, size_t n, uint16_t code, const char *reason)
{
    size_t closed = 0;
    for (struct conn *c = l->conns; c && closed < n; c = c->next)
        if (conn_is_open(c)) {
            conn_close(c, code, reason);
            closed++;
        }
    return closed;
}

size_t net_loop_open_count(const struct net_loop *l)
{
    size_t n = 0;
    for (const struct conn *c = l->conns; c; c = c->next)
        n += conn_is_open(c);
    return n;
}

void net_loop_drop_all(struct net_loop *l)
{
    for (struct conn *c = l->conns; c; c = c->next)
        conn_drop(c);
}
