/* inbox.c - a short-locked FIFO of tasks and a uv_async wakeup. See inbox.h. */
#include "core/inbox.h"

static void on_wakeup(uv_async_t *async)
{
    inbox_drain(async->data);
}

int inbox_init(struct inbox *in, uv_loop_t *loop, void *ctx)
{
    in->head = in->tail = NULL;
    in->ctx = ctx;
    in->closed = 0;
    int r = uv_mutex_init(&in->lock);
    if (r)
        return r;
    in->async.data = in;
    r = uv_async_init(loop, &in->async, on_wakeup);
    if (r)
        uv_mutex_destroy(&in->lock);
    return r;
}

void inbox_close(struct inbox *in)
{
    inbox_drain(in);
    uv_mutex_lock(&in->lock);
    in->closed = 1;
    uv_mutex_unlock(&in->lock);
    inbox_drain(in);
    uv_close((uv_handle_t *)&in->async, NULL);
}

int inbox_post(struct inbox *in, struct task *t)
{
    t->next = NULL;
    uv_mutex_lock(&in->lock);
    if (in->closed) {
        uv_mutex_unlock(&in->lock);
        return -1;
    }
    if (in->tail)
        in->tail->next = t;
    else
        in->head = t;
    in->tail = t;
    /* Under the lock, so the handle cannot be closed in between. */
    uv_async_send(&in->async);
    uv_mutex_unlock(&in->lock);
    return 0;
}

int inbox_pending(struct inbox *in)
{
    uv_mutex_lock(&in->lock);
    int pending = in->head != NULL;
    uv_mutex_unlock(&in->lock);
    return pending;
}

void inbox_drain(struct inbox *in)
{
    uv_mutex_lock(&in->lock);
    struct task *t = in->head;
    in->head = in->tail = NULL;
    uv_mutex_unlock(&in->lock);
    while (t) {
        struct task *next = t->next;
        t->run(t, in->ctx);
        t = next;
    }
}
