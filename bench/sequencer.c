/* sequencer.c - the ceiling of one process's sequencer: the bus thread
 * (cluster/bus.c), which every room command of a process crosses. Links
 * the server's own modules (bus, memory engine, memory store, inboxes) and
 * drives them as the server does, without sockets or subscribers: W worker
 * threads, each with its own loop and inbox, keep a window of publishes
 * on the bus and submit the next one when a reply comes back (the ack a
 * client would get). Prints publishes per second, all workers together.
 *
 *   build/bench/sequencer [--workers W] [--seconds S] [--rooms R]
 *                         [--window N] [--ephemeral]
 *
 * Persisted publishes go through the memory store (offset, history ring,
 * no idempotency key); --ephemeral skips the store. No subscriber means no
 * fan-out: what is measured is the request, the sequencing and the reply. */
#include <getopt.h>
#include <stdatomic.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "cluster/bus.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/inbox.h"
#include "store/store.h"

struct worker {
    int index;
    uv_loop_t loop;
    struct inbox inbox;
    uv_thread_t thread;
    struct bus *bus;
    uint64_t next;          /* publishes submitted */
    uint64_t done;          /* replies received */
    atomic_ullong counted;  /* done, for the main thread's reading */
    atomic_int stop;
};

static struct worker *workers;
static atomic_int finished;  /* workers whose loop has ended */
static int nworkers = 2, nrooms = 1000, window = 256, ephemeral;
static char (*room_names)[16];  /* made once: the workers' own cost stays small */
static double seconds = 3;

static int post_to_worker(void *arg, int worker, struct task *t)
{
    (void)arg;
    return inbox_post(&workers[worker].inbox, t);
}

static void deliver(void *ctx, const struct event *ev)
{
    (void)ctx;
    (void)ev;
}

static void submit_one(struct worker *w);

static void on_reply(struct task *t, void *ctx)
{
    struct worker *w = ctx;
    struct bus_request *req = (struct bus_request *)t;
    if (req->error) {
        fprintf(stderr, "sequencer: publish failed: %d\n", req->error);
        exit(1);
    }
    bus_request_free(req);
    w->done++;
    atomic_store_explicit(&w->counted, w->done, memory_order_relaxed);
    if (atomic_load_explicit(&w->stop, memory_order_relaxed)) {
        if (w->done == w->next)
            inbox_close(&w->inbox); /* the loop ends with its last handle */
        return;
    }
    submit_one(w);
}

static void submit_one(struct worker *w)
{
    static const char data[] = "{\"n\":1}";
    struct bus_publish *req = calloc(1, sizeof *req);
    if (!req || !(req->data = strdup(data))) {
        fprintf(stderr, "sequencer: out of memory\n");
        exit(1);
    }
    req->base.op = BUS_PUBLISH;
    req->base.worker = w->index;
    req->base.on_reply = on_reply;
    req->target = EVENT_ROOM;
    strcpy(req->name, room_names[(w->next * 7919 + (uint64_t)w->index) % (uint64_t)nrooms]);
    req->data_len = sizeof data - 1;
    req->ephemeral = ephemeral;
    w->next++;
    bus_submit(w->bus, &req->base);
}

static void worker_main(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < window; i++)
        submit_one(w);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    atomic_fetch_add(&finished, 1);
}

static uint64_t total_done(void)
{
    uint64_t n = 0;
    for (int i = 0; i < nworkers; i++)
        n += atomic_load_explicit(&workers[i].counted, memory_order_relaxed);
    return n;
}

/* The measurement, on a timer of the bus's loop: a warm-up second, then
 * the counted stretch; then the workers stop after their last replies. */
struct run {
    uv_timer_t timer;
    int phase;
    uint64_t start_n, start_ms;
    double start_cpu;
    struct bus *bus;
};

/* CPU seconds of the calling thread (the bus's). */
static double thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_timer(uv_timer_t *t)
{
    struct run *r = t->data;
    if (r->phase == 0) {
        r->phase = 1;
        r->start_n = total_done();
        r->start_ms = uv_now(t->loop);
        r->start_cpu = thread_cpu();
        uv_timer_start(t, on_timer, (uint64_t)(seconds * 1000), 0);
        return;
    }
    uint64_t n = total_done() - r->start_n;
    double s = (double)(uv_now(t->loop) - r->start_ms) / 1000.0, cpu = thread_cpu() - r->start_cpu;
    /* The second figure is the ceiling of a bus thread with a core of its
     * own: what it did per second of its own CPU time. */
    printf("workers %d, rooms %d, window %d, %s: %.0f publishes/s (%llu in %.2f s); bus thread busy %.0f%%, "
           "%.0f publishes per second of its CPU\n",
           nworkers, nrooms, window, ephemeral ? "ephemeral" : "persisted (memory store)", (double)n / s,
           (unsigned long long)n, s, 100 * cpu / s, (double)n / cpu);
    for (int i = 0; i < nworkers; i++)
        atomic_store(&workers[i].stop, 1);
    uv_close((uv_handle_t *)t, NULL);
}

static void usage(void)
{
    fprintf(stderr, "usage: sequencer [--workers W] [--seconds S] [--rooms R] [--window N] [--ephemeral]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"workers", required_argument, 0, 'w'}, {"seconds", required_argument, 0, 's'},
        {"rooms", required_argument, 0, 'r'},   {"window", required_argument, 0, 'n'},
        {"ephemeral", no_argument, 0, 'e'},     {0, 0, 0, 0},
    };
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (o) {
        case 'w': nworkers = atoi(optarg); break;
        case 's': seconds = atof(optarg); break;
        case 'r': nrooms = atoi(optarg); break;
        case 'n': window = atoi(optarg); break;
        case 'e': ephemeral = 1; break;
        default: usage();
        }
    }
    if (nworkers < 1 || nworkers > 64 || nrooms < 1 || nrooms > 1000000 || window < 1 || seconds <= 0)
        usage();
    if (!(room_names = calloc((size_t)nrooms, sizeof *room_names)))
        return 1;
    for (int i = 0; i < nrooms; i++)
        snprintf(room_names[i], sizeof room_names[i], "room-%d", i);
    static struct config cfg;
    char *defaults[] = {"sequencer", NULL};
    if (config_parse(&cfg, 1, defaults) != 0) {
        fprintf(stderr, "sequencer: the default configuration does not parse\n");
        return 1;
    }
    uv_loop_t *loop = uv_default_loop();
    workers = calloc((size_t)nworkers, sizeof *workers);
    static struct metrics_bus metrics;
    if (!workers || metrics_bus_init(&metrics))
        return 1;
    struct bus_hooks hooks = {.nworkers = nworkers, .post = post_to_worker, .deliver = deliver};
    struct store *store = store_memory_create(loop, &cfg, (struct offset){clock_wall_ms(), 0});
    struct bus *bus = bus_create(loop, &cfg, &hooks, &metrics, &bus_memory_engine, store);
    if (!bus) {
        fprintf(stderr, "sequencer: the bus did not start\n");
        return 1;
    }
    for (int i = 0; i < nworkers; i++) {
        struct worker *w = &workers[i];
        w->index = i;
        w->bus = bus;
        if (uv_loop_init(&w->loop) || inbox_init(&w->inbox, &w->loop, w))
            return 1;
    }
    for (int i = 0; i < nworkers; i++)
        uv_thread_create(&workers[i].thread, worker_main, &workers[i]);
    struct run r = {.bus = bus};
    uv_timer_init(loop, &r.timer);
    r.timer.data = &r;
    uv_timer_start(&r.timer, on_timer, 1000, 0);
    /* The bus's own timers keep its loop alive: run until the workers are
     * done, then stop the bus. */
    while (uv_run(loop, UV_RUN_ONCE) && atomic_load(&finished) < nworkers)
        ;
    for (int i = 0; i < nworkers; i++)
        uv_thread_join(&workers[i].thread);
    bus_stop(bus);
    uv_run(loop, UV_RUN_DEFAULT);
    bus_free(bus);
    return 0;
}
