/* limit.c - the physical-limit probe of `make bench`: the same bytes a
 * fan-out server sends, pushed into the same number of loopback TCP sockets
 * with no protocol work at all. A writer thread (pinned to --writer-cpu, the
 * server's core in the benchmark) does one writev per socket per round,
 * carrying --batch copies of one WebSocket text frame of --size bytes in all;
 * a reader thread (pinned to --reader-cpu) drains every socket with epoll.
 * Reports one JSON line per batch size: messages/s that reached the reader.
 * Connects only to itself on 127.0.0.1; each batch runs --seconds. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static int conns = 1000, size = 202, writer_cpu = 0, reader_cpu = 1;
static double seconds = 2;
static int batches[16] = {1, 4, 16};
static int n_batches = 3;
static const char *label = "";
static int *wfd, *rfd;
static atomic_uint_fast64_t bytes_read;
static atomic_int stop_reader;

static void die(const char *what)
{
    fprintf(stderr, "limit: %s: %s\n", what, strerror(errno));
    exit(2);
}

static double now_s(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void pin(int cpu)
{
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    int rc = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    if (rc)
        fprintf(stderr, "limit: cannot pin to cpu %d: %s\n", cpu, strerror(rc));
}

static void *reader(void *arg)
{
    (void)arg;
    pin(reader_cpu);
    int ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    for (int i = 0; i < conns; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = rfd[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, rfd[i], &ev) < 0)
            die("epoll_ctl");
    }
    static char buf[1 << 20];
    struct epoll_event evs[512];
    while (!atomic_load(&stop_reader)) {
        int n = epoll_wait(ep, evs, 512, 20);
        for (int i = 0; i < n; i++) {
            ssize_t r = read(evs[i].data.fd, buf, sizeof buf);
            if (r > 0)
                atomic_fetch_add(&bytes_read, (uint64_t)r);
        }
    }
    close(ep);
    return NULL;
}

/* Builds one unmasked server text frame of `size` bytes in all. */
static size_t make_frame(uint8_t *f)
{
    size_t hdr = size - 2 < 126 ? 2 : 4;
    size_t plen = (size_t)size - hdr;
    f[0] = 0x81;
    if (hdr == 2) {
        f[1] = (uint8_t)plen;
    } else {
        f[1] = 126;
        f[2] = (uint8_t)(plen >> 8);
        f[3] = (uint8_t)plen;
    }
    memset(f + hdr, 'x', plen);
    return (size_t)size;
}

static void run_batch(int batch)
{
    static uint8_t frame[65536];
    size_t flen = make_frame(frame);
    struct iovec iov[1024];
    for (int i = 0; i < batch; i++) {
        iov[i].iov_base = frame;
        iov[i].iov_len = flen;
    }
    uint64_t start_bytes = atomic_load(&bytes_read);
    uint64_t writes = 0, eagain = 0;
    double t0 = now_s(CLOCK_MONOTONIC), c0 = now_s(CLOCK_THREAD_CPUTIME_ID);
    double end = t0 + seconds;
    int round = 0;
    while (1) {
        for (int i = 0; i < conns; i++) {
            ssize_t w = writev(wfd[i], iov, batch);
            if (w < 0) {
                if (errno != EAGAIN)
                    die("writev");
                eagain++;
            } else {
                writes++;
            }
        }
        if ((++round & 3) == 0 && now_s(CLOCK_MONOTONIC) >= end)
            break;
    }
    double t1 = now_s(CLOCK_MONOTONIC), c1 = now_s(CLOCK_THREAD_CPUTIME_ID);
    /* let the reader drain what was written */
    uint64_t prev = 0, cur = atomic_load(&bytes_read);
    do {
        prev = cur;
        usleep(50000);
        cur = atomic_load(&bytes_read);
    } while (cur != prev);
    double el = t1 - t0;
    double msgs = (double)(cur - start_bytes) / (double)flen;
    printf("{\"mode\":\"limit\",\"label\":\"%s\",\"conns\":%d,\"size\":%d,\"batch\":%d,\"seconds\":%.2f,"
           "\"messages_per_s\":%.0f,\"writes_per_s\":%.0f,\"eagain\":%llu,\"writer_cpu_pct\":%.1f,\"time\":%ld}\n",
           label, conns, size, batch, el, msgs / el, (double)writes / el, (unsigned long long)eagain,
           100 * (c1 - c0) / el, (long)time(NULL));
    fflush(stdout);
}

static void usage(void)
{
    fprintf(stderr, "usage: limit [--conns N] [--size BYTES] [--batch 1,4,16] [--seconds S]\n"
                    "             [--writer-cpu C] [--reader-cpu C] [--label TEXT]\n"
                    "  --size is the whole frame as it goes on the wire (default 202, the size of\n"
                    "  wsfan's message event for a 100-byte payload); -1 as a cpu leaves it unpinned\n");
    exit(2);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage();
        const char *o = argv[i], *v = argv[++i];
        if (!strcmp(o, "--conns"))
            conns = atoi(v);
        else if (!strcmp(o, "--size"))
            size = atoi(v);
        else if (!strcmp(o, "--seconds"))
            seconds = atof(v);
        else if (!strcmp(o, "--writer-cpu"))
            writer_cpu = atoi(v);
        else if (!strcmp(o, "--reader-cpu"))
            reader_cpu = atoi(v);
        else if (!strcmp(o, "--label"))
            label = v;
        else if (!strcmp(o, "--batch")) {
            n_batches = 0;
            char *d = strdup(v), *save = NULL;
            for (char *t = strtok_r(d, ",", &save); t && n_batches < 16; t = strtok_r(NULL, ",", &save))
                batches[n_batches++] = atoi(t);
            free(d);
        } else
            usage();
    }
    if (conns < 1 || size < 8 || size > 65535 || seconds <= 0 || seconds > 60 || !n_batches)
        usage();
    for (int i = 0; i < n_batches; i++)
        if (batches[i] < 1 || batches[i] > 1024)
            usage();
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t want = (rlim_t)conns * 2 + 64;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want;
        if (rl.rlim_max < want)
            rl.rlim_max = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            die("setrlimit (raise ulimit -n)");
    }
    wfd = calloc((size_t)conns, sizeof *wfd);
    rfd = calloc((size_t)conns, sizeof *rfd);
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    if (ls < 0)
        die("socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 4096) < 0 ||
        getsockname(ls, (struct sockaddr *)&a, &al) < 0)
        die("listen");
    int one = 1;
    for (int i = 0; i < conns; i++) {
        rfd[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (rfd[i] < 0 || connect(rfd[i], (struct sockaddr *)&a, sizeof a) < 0)
            die("connect");
        wfd[i] = accept(ls, NULL, NULL);
        if (wfd[i] < 0)
            die("accept");
        setsockopt(wfd[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (fcntl(wfd[i], F_SETFL, O_NONBLOCK) < 0 || fcntl(rfd[i], F_SETFL, O_NONBLOCK) < 0)
            die("fcntl");
    }
    close(ls);
    pthread_t rt;
    if (pthread_create(&rt, NULL, reader, NULL))
        die("pthread_create");
    pin(writer_cpu);
    for (int i = 0; i < n_batches; i++)
        run_batch(batches[i]);
    atomic_store(&stop_reader, 1);
    pthread_join(rt, NULL);
    return 0;
}
