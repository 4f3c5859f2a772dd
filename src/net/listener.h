/* listener.h - one listening socket on one worker loop. It accepts with
 * accept4, which hands over the peer's address with the socket, at most
 * NET_ACCEPT_BATCH per wakeup so that the loop's connections get their
 * turn. At the open-file limit (EMFILE, ENFILE) it does not spin: it gives
 * up a spare descriptor it keeps for this, accepts and closes what waits
 * in the backlog (each one counted as refused in the loop's metrics), logs
 * at most 5 lines a second, and stops accepting for NET_ACCEPT_PAUSE_MS.
 * libuv's listener closes what waits too, but counts nothing and, once
 * its spare is gone, calls back in a loop that never yields.
 * Knows nothing of what the connections carry. Its loop's thread only. */
#ifndef WSFAN_LISTENER_H
#define WSFAN_LISTENER_H

#include <sys/socket.h>
#include <uv.h>

#include "core/log.h"

#define NET_ACCEPT_BATCH 128
#define NET_ACCEPT_PAUSE_MS 100

struct net_loop;
struct net_listener;

/* A new connection: fd (non-blocking, close-on-exec) is the callee's
 * from now on; peer is borrowed until return. */
typedef void (*net_accept_fn)(struct net_listener *ls, int fd, const struct sockaddr *peer);

struct net_listener {
    uv_poll_t poll;
    uv_timer_t pause;           /* accepting again after the fd limit */
    int fd;                     /* the listening socket (owned) */
    int spare;                  /* given up at the fd limit; -1 while it is */
    struct net_loop *loop;
    net_accept_fn on_accept;
    void *data;                 /* the owner's */
    struct log_limit log;
};

/* Listens on fd (a bound socket, which ls owns from now on) with a
 * backlog of backlog and accepts into on_accept. Returns 0 or a uv error
 * (then fd is closed and nothing needs closing). */
int net_listener_start(struct net_listener *ls, struct net_loop *l, int fd, int backlog, net_accept_fn on_accept,
                       void *data);

/* Stops accepting and closes the socket; the handles' callbacks run on
 * the loop. */
void net_listener_close(struct net_listener *ls);

#endif
