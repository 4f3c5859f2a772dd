/* listener.c - accept4 in batches, and the fd limit met without spinning.
 * See listener.h. */
#include "net/listener.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "metrics/metrics.h"
#include "net/loop.h"

/* What waits in the backlog is refused at most this many at a time. */
#define REFUSE_MAX 1024

static void on_readable(uv_poll_t *h, int status, int events);

static int open_spare(void)
{
    return open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void on_pause_end(uv_timer_t *t)
{
    struct net_listener *ls = t->data;
    if (uv_poll_start(&ls->poll, UV_READABLE, on_readable))
        log_error("worker %d: cannot accept again", ls->loop->index);
}

/* Accepting waits NET_ACCEPT_PAUSE_MS: whatever failed may pass. */
static void pause_accepting(struct net_listener *ls)
{
    uv_poll_stop(&ls->poll);
    uv_timer_start(&ls->pause, on_pause_end, NET_ACCEPT_PAUSE_MS, 0);
}

/* Out of descriptors: close the spare, accept and close what waits, take
 * the spare back; then pause, so that a backlog that keeps filling does
 * not keep this loop busy. */
static void out_of_descriptors(struct net_listener *ls, int err)
{
    unsigned refused = 0;
    if (ls->spare < 0)
        ls->spare = open_spare();
    if (ls->spare >= 0) {
        close(ls->spare);
        ls->spare = -1;
        for (int i = 0; i < REFUSE_MAX; i++) {
            int fd = accept4(ls->fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EINTR || errno == ECONNABORTED)
                    continue;
                break;
            }
            close(fd);
            refused++;
        }
        ls->spare = open_spare();
    }
    metrics_refused(ls->loop->metrics, METRICS_REFUSED_FD_LIMIT, refused);
    /* accept4 fails with EMFILE before it looks at the backlog: nothing
     * may have waited. */
    uint32_t suppressed;
    if ((refused || ls->spare < 0) && log_limit_allow(&ls->log, uv_now(ls->loop->uv), &suppressed))
        log_warn("worker %d: accept: %s: refused %u connections%s; raise the open-file limit (ulimit -n, "
                 "LimitNOFILE=) or lower --max-connections (%u such lines not logged)",
                 ls->loop->index, strerror(err), refused, ls->spare < 0 ? " and more wait" : "", suppressed);
    pause_accepting(ls);
}

static void on_readable(uv_poll_t *h, int status, int events)
{
    (void)events;
    struct net_listener *ls = h->data;
    if (status < 0) {
        log_error("worker %d: listener: %s", ls->loop->index, uv_strerror(status));
        pause_accepting(ls);
        return;
    }
    for (int i = 0; i < NET_ACCEPT_BATCH; i++) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof peer;
        int fd = accept4(ls->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            ls->on_accept(ls, fd, (struct sockaddr *)&peer);
            continue;
        }
        switch (errno) {
        case EAGAIN:
            return;
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM:
            out_of_descriptors(ls, errno);
            return;
        case EINTR:
        case ECONNABORTED:
        case EPROTO:
        case EPERM:
        case ENETDOWN:
        case ENOPROTOOPT:
        case EHOSTDOWN:
        case ENONET:
        case EHOSTUNREACH:
        case EOPNOTSUPP:
        case ENETUNREACH:
            continue; /* that one connection's error (accept(2), "Error handling") */
        default: {
            uint32_t suppressed;
            if (log_limit_allow(&ls->log, uv_now(ls->loop->uv), &suppressed))
                log_warn("worker %d: accept: %s (%u such lines not logged)", ls->loop->index, strerror(errno),
                         suppressed);
            pause_accepting(ls);
            return;
        }
        }
    }
}

int net_listener_start(struct net_listener *ls, struct net_loop *l, int fd, int backlog, net_accept_fn on_accept,
                       void *data)
{
    memset(ls, 0, sizeof *ls);
    ls->fd = fd;
    ls->loop = l;
    ls->on_accept = on_accept;
    ls->data = data;
    ls->spare = open_spare();
    int r = listen(fd, backlog) ? uv_translate_sys_error(errno) : 0;
    if (!r)
        r = uv_poll_init(l->uv, &ls->poll, fd);
    if (r) {
        close(fd);
        if (ls->spare >= 0)
            close(ls->spare);
        return r;
    }
    ls->poll.data = ls;
    uv_timer_init(l->uv, &ls->pause);
    ls->pause.data = ls;
    if ((r = uv_poll_start(&ls->poll, UV_READABLE, on_readable)))
        net_listener_close(ls);
    return r;
}

void net_listener_close(struct net_listener *ls)
{
    uv_close((uv_handle_t *)&ls->poll, NULL);
    uv_close((uv_handle_t *)&ls->pause, NULL);
    close(ls->fd);
    if (ls->spare >= 0)
        close(ls->spare);
    ls->fd = ls->spare = -1;
}
