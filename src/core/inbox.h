/* inbox.h - how threads meet: a queue of tasks plus a uv_async wakeup.
 * Any thread may post; the owning loop runs the tasks in the order they were
 * posted. The lock is held only to link or swap a list pointer, never while
 * a task runs. */
#ifndef WSFAN_INBOX_H
#define WSFAN_INBOX_H

#include <uv.h>

struct task;
typedef void (*task_fn)(struct task *t, void *ctx);

/* Embed as the first member of whatever is posted; run() owns t afterwards
 * (frees it or passes it on). */
struct task {
    struct task *next;
    task_fn run;
};

struct inbox {
    uv_async_t async;
    uv_mutex_t lock;
    struct task *head, *tail;
    void *ctx;  /* passed to every task run on this inbox */
    int closed; /* the owning loop is gone: posts are refused */
};

/* Initializes the inbox on loop; tasks get ctx. Returns 0 or a uv error. */
int inbox_init(struct inbox *in, uv_loop_t *loop, void *ctx);

/* Runs the tasks still queued, refuses later posts and closes the wakeup
 * handle. */
void inbox_close(struct inbox *in);

/* Posts t from any thread. Returns 0 (ownership passes to the inbox), or
 * -1 when the inbox is closed (the caller keeps t). */
int inbox_post(struct inbox *in, struct task *t);

/* Whether tasks are waiting to run (a hint: it may change at once). */
int inbox_pending(struct inbox *in);

/* Runs every queued task now, on the owning loop's thread. */
void inbox_drain(struct inbox *in);

#endif
