/* loadgen.c - the benchmark load generator: one process, one epoll loop,
 * non-blocking sockets, a minimal WebSocket client (HTTP upgrade, masked
 * client frames, unmasked server frames, ping -> pong) and a small table of
 * protocol adapters (wsfan, nchan, Socket.IO 4) so that one scenario runs
 * unchanged against each server.
 *
 * Modes
 *   ladder  N subscribers in R rooms and P publishers; every subscriber must
 *           see a warm-up message of its room before anything is measured;
 *           then one step per offered publish rate (--rates), each --duration
 *           seconds long plus a drain, one JSON line per step.
 *   idle    N subscribers joined and verified, then idle for --idle seconds:
 *           server RSS delta per connection and idle CPU.
 *   storm   N connections (connect, upgrade, welcome, join) as fast as the
 *           server takes them, --concurrency at a time: handshakes per second.
 *   resume  a deploy: N subscribers joined and warmed up, then a "ready" line
 *           on stdout; when the server closes them (the caller restarts it)
 *           each reconnects at once and joins with "since" its room's last
 *           offset; it has recovered when the joined reply and the messages
 *           it reports missed have arrived: recovery times, p50/p99.
 *   hold    N subscribers held open (several processes build one large
 *           population), a "ready" line on stdout, then each waits for one
 *           marked message from outside (e.g. a broadcast through the HTTP
 *           API): delivery latency from the stamp in the message.
 *
 * Each payload carries "~B<step>.<publisher>.<seq>.<ns>~" then padding, so a
 * delivery is recognised in any adapter's framing by its marker; <ns> is the
 * CLOCK_MONOTONIC time at which the constant-rate schedule wanted the message
 * sent (one clock for the whole machine). A message the load generator sends
 * late keeps its scheduled stamp, so latency includes the load generator's
 * own lag and no stall hides from it (coordinated omission, as wrk2 avoids it).
 *
 * --tls speaks TLS (OpenSSL on the socket, no certificate check: loopback
 * only) to measure a server's wss:// against its ws:// (bench/tls.sh).
 *
 * Traffic goes only to the addresses given with --connect (loopback in the
 * benchmark); every run is bounded by --max-seconds. Not a server, not a
 * general WebSocket client: no large messages, and of the extensions
 * only permessage-deflate (--deflate: whole compressed server messages are
 * inflated; what it sends stays plain). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include <openssl/ssl.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* ---------- adapters ---------- */

#define MAX_SETUP 4

/* One step of a connection's setup after the 101: send `send` (if any;
 * "{room}" is replaced), then wait for a text frame starting with `expect`. */
struct setup_step {
    const char *send;
    const char *expect;
};

struct adapter {
    const char *name;
    const char *sub_path;        /* request target; "{room}" is replaced */
    const char *pub_path;
    struct setup_step sub_setup[MAX_SETUP];
    struct setup_step sub_resume[MAX_SETUP]; /* reconnect: "{data}" is the last offset */
    struct setup_step pub_setup[MAX_SETUP];
    const char *publish;         /* "{room}" and "{data}" are replaced */
    const char *publish_ephemeral;
    const char *text_ping;       /* a text frame that asks for text_pong */
    const char *text_pong;
    const char *error_prefix;    /* text frames counted as errors */
};

static const struct adapter ADAPTERS[] = {
    {
        .name = "wsfan",
        .sub_path = "/ws",
        .pub_path = "/ws",
        .sub_setup = {{NULL, "{\"type\":\"welcome\""},
                      {"{\"type\":\"join\",\"room\":\"{room}\"}", "{\"type\":\"joined\""}},
        .sub_resume = {{NULL, "{\"type\":\"welcome\""},
                       {"{\"type\":\"join\",\"room\":\"{room}\",\"since\":\"{data}\"}",
                        "{\"type\":\"joined\""}},
        .pub_setup = {{NULL, "{\"type\":\"welcome\""},
                      {"{\"type\":\"join\",\"room\":\"{room}\"}", "{\"type\":\"joined\""}},
        .publish = "{\"type\":\"publish\",\"room\":\"{room}\",\"data\":\"{data}\",\"echo\":false}",
        .publish_ephemeral =
            "{\"type\":\"publish\",\"room\":\"{room}\",\"data\":\"{data}\",\"echo\":false,\"ephemeral\":true}",
        .error_prefix = "{\"type\":\"error\"",
    },
    {
        /* nchan: the channel is the URL; subscribers get the raw message. */
        .name = "nchan",
        .sub_path = "/sub/{room}",
        .pub_path = "/pub/{room}",
        .publish = "{data}",
    },
    {
        /* Socket.IO 4 over engine.io 4, websocket transport only;
         * bench/peers/socketio-server.js answers "join" with "joined". */
        .name = "socketio",
        .sub_path = "/socket.io/?EIO=4&transport=websocket",
        .pub_path = "/socket.io/?EIO=4&transport=websocket",
        .sub_setup = {{NULL, "0{"}, {"40", "40"}, {"42[\"join\",\"{room}\"]", "42[\"joined\""}},
        .pub_setup = {{NULL, "0{"}, {"40", "40"}},
        .publish = "42[\"publish\",\"{room}\",\"{data}\"]",
        .text_ping = "2",
        .text_pong = "3",
    },
};

/* ---------- configuration ---------- */

enum mode { MODE_LADDER, MODE_IDLE, MODE_STORM, MODE_RESUME, MODE_HOLD };

static struct {
    const struct adapter *ad;
    enum mode mode;
    struct sockaddr_in nodes[8];
    int n_nodes;
    int src_addrs;
    int subs, rooms, pubs;
    int size;
    double rates[64];
    int n_rates;
    double duration, drain, idle_s, settle;
    double max_seconds, setup_timeout, warm_timeout;
    int concurrency;
    int pids[8];
    int n_pids;
    const char *label;
    const char *out_path;
    const char *hook_start, *hook_end;
    double stop_loss_pct, loss_ok_pct;
    int bisect, half;
    int check;
    int ephemeral;
    int deflate;   /* offer permessage-deflate */
    int pad_words; /* pad with words rather than x (compresses like text) */
    int quiet;
    SSL_CTX *tls; /* --tls */
} cfg = {
    .mode = MODE_LADDER,
    .src_addrs = 4,
    .subs = 100,
    .rooms = 1,
    .pubs = 1,
    .size = 100,
    .duration = 2,
    .drain = 2,
    .idle_s = 5,
    .settle = 0.5,
    .max_seconds = 300,
    .setup_timeout = 60,
    .warm_timeout = 20,
    .concurrency = 256,
    .label = "",
    .stop_loss_pct = 1.0,
    .loss_ok_pct = 0.1,
};

/* ---------- small helpers ---------- */

static uint64_t t_begin;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
    if (cfg.quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen [%6.2fs] ", (double)(now_ns() - t_begin) / 1e9);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

static void check_deadline(void)
{
    if ((double)(now_ns() - t_begin) / 1e9 > cfg.max_seconds) {
        fprintf(stderr, "loadgen: --max-seconds %.0f passed; stopping\n", cfg.max_seconds);
        exit(3);
    }
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q)
        die("out of memory (%zu bytes)", n);
    return q;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rng32(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

/* Expands "{room}" and "{data}" of tmpl into dst (cap bytes); returns length. */
static size_t tmpl_expand(char *dst, size_t cap, const char *tmpl, const char *room, const char *data)
{
    size_t n = 0;
    for (const char *p = tmpl; *p;) {
        const char *s = NULL;
        size_t skip = 1;
        if (!strncmp(p, "{room}", 6)) {
            s = room;
            skip = 6;
        } else if (!strncmp(p, "{data}", 6)) {
            s = data;
            skip = 6;
        }
        if (s) {
            size_t l = strlen(s);
            if (n + l >= cap)
                die("template expansion too long");
            memcpy(dst + n, s, l);
            n += l;
        } else {
            if (n + 1 >= cap)
                die("template expansion too long");
            dst[n++] = *p;
        }
        p += skip;
    }
    dst[n] = 0;
    return n;
}

/* ---------- latency histogram (log-linear, < 1% error) ---------- */

#define HB 7
#define HSIZE (64 << HB)
struct hist {
    uint64_t n, max;
    uint64_t b[HSIZE];
};

static int hist_idx(uint64_t v)
{
    if (v < (1u << HB))
        return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int sh = msb - HB;
    return ((sh + 1) << HB) + (int)((v >> sh) & ((1u << HB) - 1));
}

static uint64_t hist_val(int i)
{
    if (i < (1 << HB))
        return (uint64_t)i;
    int sh = (i >> HB) - 1;
    uint64_t sub = (uint64_t)(i & ((1 << HB) - 1));
    return (((1ull << HB) | sub) << sh) + ((1ull << sh) >> 1);
}

static void hist_add(struct hist *h, uint64_t v)
{
    h->b[hist_idx(v)]++;
    h->n++;
    if (v > h->max)
        h->max = v;
}

static double hist_pct(const struct hist *h, double q)
{
    if (!h->n)
        return 0;
    uint64_t want = (uint64_t)(q * (double)h->n);
    if (want >= h->n)
        want = h->n - 1;
    uint64_t acc = 0;
    for (int i = 0; i < HSIZE; i++) {
        acc += h->b[i];
        if (acc > want)
            return (double)hist_val(i);
    }
    return (double)h->max;
}

/* ---------- server process stats from /proc ---------- */

#define MAX_CORES 64
struct proc_sample {
    uint64_t ticks[8];
    long rss_kb[8];
    uint64_t t;
    struct rusage self;
    uint64_t core_busy[MAX_CORES], core_total[MAX_CORES]; /* from /proc/stat, in ticks */
    int cores;
};

/* Busy and total ticks of every core: what else ran on the server's core
 * shows as its busy share minus the server's own. */
static void cores_sample(struct proc_sample *s)
{
    char line[512];
    s->cores = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        unsigned n;
        unsigned long long v[8] = {0};
        if (strncmp(line, "cpu", 3) || !isdigit((unsigned char)line[3]))
            continue;
        if (sscanf(line + 3, "%u %llu %llu %llu %llu %llu %llu %llu %llu", &n, &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]) < 6 ||
            n >= MAX_CORES)
            continue;
        uint64_t total = 0;
        for (int i = 0; i < 8; i++)
            total += v[i];
        s->core_total[n] = total;
        s->core_busy[n] = total - v[3] - v[4]; /* less idle and iowait */
        if ((int)n + 1 > s->cores)
            s->cores = (int)n + 1;
    }
    fclose(f);
}

static uint64_t proc_ticks(int pid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    p += 2; /* field 3, the state */
    unsigned long long ut = 0, st = 0;
    /* fields 3..13 skipped, then utime (14) and stime (15) */
    if (sscanf(p, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    return ut + st;
}

static long proc_rss_kb(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

static void proc_sample(struct proc_sample *s)
{
    for (int i = 0; i < cfg.n_pids; i++) {
        s->ticks[i] = proc_ticks(cfg.pids[i]);
        s->rss_kb[i] = proc_rss_kb(cfg.pids[i]);
    }
    s->t = now_ns();
    getrusage(RUSAGE_SELF, &s->self);
    cores_sample(s);
}

static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* Appends the CPU and RSS fields of the interval a..b to a JSON buffer. */
static size_t proc_json(char *out, size_t cap, const struct proc_sample *a, const struct proc_sample *b)
{
    double wall = (double)(b->t - a->t) / 1e9;
    double hz = (double)sysconf(_SC_CLK_TCK);
    double total = 0;
    long rss = 0;
    char each_cpu[256] = "", each_rss[256] = "";
    size_t ec = 0, er = 0;
    for (int i = 0; i < cfg.n_pids; i++) {
        double pct = wall > 0 ? 100.0 * (double)(b->ticks[i] - a->ticks[i]) / hz / wall : 0;
        total += pct;
        rss += b->rss_kb[i] > 0 ? b->rss_kb[i] : 0;
        ec += (size_t)snprintf(each_cpu + ec, sizeof each_cpu - ec, "%s%.1f", i ? "," : "", pct);
        er += (size_t)snprintf(each_rss + er, sizeof each_rss - er, "%s%ld", i ? "," : "", b->rss_kb[i]);
    }
    double self = tv_s(b->self.ru_utime) + tv_s(b->self.ru_stime) - tv_s(a->self.ru_utime) -
                  tv_s(a->self.ru_stime);
    char cores[512] = "";
    size_t cn = 0;
    for (int i = 0; i < a->cores && i < b->cores && cn < sizeof cores - 16; i++) {
        uint64_t tot = b->core_total[i] - a->core_total[i], busy = b->core_busy[i] - a->core_busy[i];
        cn += (size_t)snprintf(cores + cn, sizeof cores - cn, "%s%.1f", i ? "," : "",
                               tot ? 100.0 * (double)busy / (double)tot : 0.0);
    }
    size_t n0 = (size_t)snprintf(out, cap, ",\"core_busy_pct\":[%s]", cores);
    out += n0;
    cap -= n0;
    if (!cfg.n_pids)
        return n0 + (size_t)snprintf(out, cap, ",\"loadgen_cpu_pct\":%.1f", wall > 0 ? 100 * self / wall : 0);
    return n0 + (size_t)snprintf(out, cap,
                            ",\"server_cpu_pct\":%.1f,\"server_rss_kb\":%ld,\"server_cpu_pct_each\":[%s],"
                            "\"server_rss_kb_each\":[%s],\"loadgen_cpu_pct\":%.1f",
                            total, rss, each_cpu, each_rss, wall > 0 ? 100 * self / wall : 0);
}

/* ---------- connections ---------- */

enum conn_kind { SUB, PUB };
enum conn_state { C_IDLE, C_CONNECTING, C_HTTP, C_SETUP, C_READY, C_DEAD };

struct seqwin {
    uint64_t high; /* highest sequence seen */
    uint64_t bits; /* bit i: high - i seen */
};

struct conn {
    int fd;
    SSL *ssl; /* --tls */
    uint8_t kind, state, setup_i, warm, frag_op;
    uint8_t resuming;       /* resume mode: reconnected after the server closed it */
    uint32_t missed_left;   /* resume mode: replayed messages still to come */
    uint64_t t_closed;      /* resume mode: when the server closed it; 0 once recovered */
    uint64_t retry_at;      /* resume mode: when to connect again */
    uint32_t idx, room, node;
    uint64_t t0;
    uint8_t *in;
    uint32_t in_len, in_cap;
    uint8_t *out;
    uint32_t out_off, out_len, out_cap;
    uint8_t *frag;
    uint32_t frag_len, frag_cap;
    struct seqwin *win; /* SUB: one per publisher of its room */
};

static int ep;
static struct conn *subs_arr, *pubs_arr;
static int pubs_per_room;
static int *room_ready;      /* ready subscribers per room */
static int ready_subs, ready_pubs, dead_subs, dead_pubs, failed_connects;
static int warm_subs;
static int inflight;         /* connections between connect() and ready */

/* Per-step counters. */
static struct {
    int step;
    uint64_t received, dups, order, late, errors, disconnects, frame_bytes, frames;
    uint64_t last_rx;
    uint64_t send_lag_max; /* latest send behind its schedule, ns */
    struct hist lat;
} st;

static struct hist hs_lat; /* storm: connect to joined */

/* resume mode: the last offset each room had before the restart, and the recovery counters */
#define OFFSET_MAX 64
static char (*room_offset)[OFFSET_MAX + 1];
static struct {
    uint64_t first_close, back_up, last_done; /* CLOCK_MONOTONIC ns */
    int armed; /* the "ready" line is out: a close from now on is the restart */
    int done, recovered, not_recovered;
    uint64_t missed;
    struct hist since_close, since_up; /* per client: from its close, from the server's return */
} rs;
static uint64_t total_frames;

static const char WS_KEY[] = "dGhlIHNhbXBsZSBub25jZQ==";
static const char WS_ACCEPT[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="; /* RFC 6455 section 1.3 */

static void conn_kill(struct conn *c, const char *why);

/* read() and write() on c's socket, through TLS with --tls: -1 with errno
 * EAGAIN while TLS waits for the socket (the handshake included), EIO on a
 * TLS error, 0 at the end. */
static ssize_t tls_result(struct conn *c, int r)
{
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE: errno = EAGAIN; return -1;
    case SSL_ERROR_ZERO_RETURN: return 0;
    default: errno = EIO; return -1;
    }
}

static ssize_t conn_recv(struct conn *c, void *buf, size_t len)
{
    if (!c->ssl)
        return read(c->fd, buf, len);
    int r = SSL_read(c->ssl, buf, (int)len);
    return r > 0 ? r : tls_result(c, r);
}

static ssize_t conn_send(struct conn *c, const void *buf, size_t len)
{
    if (!c->ssl)
        return write(c->fd, buf, len);
    int r = SSL_write(c->ssl, buf, (int)len);
    return r > 0 ? r : tls_result(c, r);
}

/* Sockets are registered once, edge-triggered, for EPOLLIN and EPOLLOUT
 * (conn_start): no EPOLL_CTL_MOD when output waits or drains. A write that
 * stops at EAGAIN is resumed by the next EPOLLOUT edge (the kernel signals
 * one when the send buffer frees up after a full one), and conn_readable
 * reads until the socket is empty, as an edge does not repeat. */
static void conn_flush(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t w = conn_send(c, c->out + c->out_off, c->out_len - c->out_off);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            conn_kill(c, strerror(errno));
            return;
        }
        c->out_off += (uint32_t)w;
    }
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
}

static void out_reserve(struct conn *c, size_t n)
{
    if (c->out_off && c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_len + n > c->out_cap) {
        if (c->out_off) {
            memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
            c->out_len -= c->out_off;
            c->out_off = 0;
        }
        if (c->out_len + n > c->out_cap) {
            size_t cap = c->out_cap ? c->out_cap : 256;
            while (cap < c->out_len + n)
                cap *= 2;
            c->out = xrealloc(c->out, cap);
            c->out_cap = (uint32_t)cap;
        }
    }
}

/* Writes one masked client frame to p (room for len + 14 bytes); returns its length. */
static size_t frame_build(uint8_t *p, int opcode, const void *payload, size_t len)
{
    size_t h = 0;
    p[h++] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        p[h++] = (uint8_t)(0x80 | len);
    } else if (len < 65536) {
        p[h++] = 0x80 | 126;
        p[h++] = (uint8_t)(len >> 8);
        p[h++] = (uint8_t)len;
    } else {
        p[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            p[h++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    uint32_t key = rng32() | 0x01010101u;
    uint8_t mk[4];
    memcpy(mk, &key, 4);
    memcpy(p + h, mk, 4);
    h += 4;
    const uint8_t *src = payload;
    for (size_t i = 0; i < len; i++)
        p[h + i] = src[i] ^ mk[i & 3];
    return h + len;
}

/* Appends one masked client frame to c's output (not flushed). */
static void frame_append(struct conn *c, int opcode, const void *payload, size_t len)
{
    out_reserve(c, len + 14);
    c->out_len += (uint32_t)frame_build(c->out + c->out_len, opcode, payload, len);
}

/* Sends buf now when nothing waits before it, and queues what the socket
 * does not take: the upgrade request and the setup frames go out without
 * an output buffer for each connection. */
static void conn_write(struct conn *c, const void *buf, size_t len)
{
    size_t done = 0;
    if (c->out_off == c->out_len) {
        ssize_t w = conn_send(c, buf, len);
        if (w < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                conn_kill(c, strerror(errno));
                return;
            }
        } else {
            done = (size_t)w;
        }
    }
    if (done < len) {
        out_reserve(c, len - done);
        memcpy(c->out + c->out_len, (const uint8_t *)buf + done, len - done);
        c->out_len += (uint32_t)(len - done); /* the next EPOLLOUT edge sends it */
    }
}

static void send_text(struct conn *c, const char *s, size_t len)
{
    uint8_t frame[512];
    if (len + 14 > sizeof frame) {
        frame_append(c, 1, s, len);
        conn_flush(c);
        return;
    }
    conn_write(c, frame, frame_build(frame, 1, s, len));
}

static void room_name(char *dst, size_t cap, uint32_t room)
{
    snprintf(dst, cap, "r%u", room);
}

static const struct setup_step *setup_of(struct conn *c)
{
    if (c->kind == PUB)
        return cfg.ad->pub_setup;
    return c->resuming ? cfg.ad->sub_resume : cfg.ad->sub_setup;
}

/* resume mode: c has its joined reply and every replayed message. */
static void resume_done(struct conn *c)
{
    uint64_t now = now_ns();
    rs.done++;
    hist_add(&rs.since_close, now - c->t_closed);
    hist_add(&rs.since_up, now > rs.back_up ? now - rs.back_up : 0);
    rs.last_done = now;
    c->t_closed = 0;
}

static void conn_ready(struct conn *c)
{
    c->state = C_READY;
    inflight--;
    if (c->kind == SUB) {
        ready_subs++;
        room_ready[c->room]++;
        if (cfg.mode == MODE_STORM)
            hist_add(&hs_lat, now_ns() - c->t0);
        if (c->resuming && !c->missed_left)
            resume_done(c);
    } else {
        ready_pubs++;
    }
}

/* Enters setup step c->setup_i: sends its message, or is ready when none is left. */
static void setup_enter(struct conn *c)
{
    const struct setup_step *s = setup_of(c);
    if (c->setup_i >= MAX_SETUP || !s[c->setup_i].expect) {
        conn_ready(c);
        return;
    }
    if (s[c->setup_i].send) {
        char room[32], msg[256];
        room_name(room, sizeof room, c->room);
        size_t n = tmpl_expand(msg, sizeof msg, s[c->setup_i].send, room, c->resuming ? room_offset[c->room] : "");
        send_text(c, msg, n);
    }
}

static void conn_kill(struct conn *c, const char *why)
{
    if (c->state == C_DEAD)
        return;
    if (c->state == C_READY) {
        st.disconnects++;
        if (c->kind == SUB) {
            ready_subs--;
            room_ready[c->room]--;
            dead_subs++;
        } else {
            ready_pubs--;
            dead_pubs++;
        }
        if (cfg.mode != MODE_RESUME) /* there every subscriber is closed by design */
            note("%s %u closed: %s", c->kind == SUB ? "subscriber" : "publisher", c->idx, why);
    } else if (c->state != C_IDLE) {
        inflight--;
        failed_connects++;
        if (failed_connects <= 5)
            note("%s %u failed during setup: %s", c->kind == SUB ? "subscriber" : "publisher", c->idx,
                 why);
    }
    if (rs.armed && c->kind == SUB) {
        /* reconnect at once after the server's close; after a failed attempt
         * (the server is not back yet) in 50 to 150 ms */
        uint64_t now = now_ns();
        if (c->state == C_READY && !c->resuming) {
            c->t_closed = now;
            c->retry_at = now;
            if (!rs.first_close)
                rs.first_close = now;
        } else {
            c->retry_at = now + 50000000ull + rng32() % 100000000u;
        }
        c->resuming = 1;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    SSL_free(c->ssl);
    c->ssl = NULL;
    c->state = C_DEAD;
    free(c->in);
    free(c->out);
    free(c->frag);
    c->in = c->out = c->frag = NULL;
    c->in_len = c->in_cap = c->out_len = c->out_cap = c->out_off = c->frag_len = c->frag_cap = 0;
}

static int parse_u64(const uint8_t **pp, const uint8_t *end, uint64_t *v)
{
    const uint8_t *p = *pp;
    uint64_t x = 0;
    if (p >= end || !isdigit(*p))
        return -1;
    while (p < end && *p >= '0' && *p <= '9')
        x = x * 10 + (uint64_t)(*p++ - '0');
    *v = x;
    *pp = p;
    return 0;
}

/* 0: new, in order; 1: new, below the highest seen (order violation);
 * 2: duplicate; 3: too old to tell (counted as an order violation). */
static int seq_accept(struct seqwin *w, uint64_t seq)
{
    if (seq > w->high) {
        uint64_t d = seq - w->high;
        w->bits = d >= 64 ? 0 : w->bits << d;
        w->bits |= 1;
        w->high = seq;
        return 0;
    }
    uint64_t d = w->high - seq;
    if (d >= 64)
        return 3;
    if (w->bits & (1ull << d))
        return 2;
    w->bits |= 1ull << d;
    return 1;
}

static void on_delivery(struct conn *c, const uint8_t *p, size_t len, uint64_t rx)
{
    const uint8_t *end = p + len;
    const uint8_t *m = p;
    for (;;) {
        m = memchr(m, '~', (size_t)(end - m));
        if (!m || m + 1 >= end)
            return;
        if (m[1] == 'B' || m[1] == 'W')
            break;
        m++;
    }
    const uint8_t *q = m + 2;
    if (m[1] == 'W') {
        uint64_t room;
        if (parse_u64(&q, end, &room) == 0 && room == c->room && !c->warm) {
            c->warm = 1;
            warm_subs++;
        }
        return;
    }
    uint64_t step, pub, seq, ts;
    if (parse_u64(&q, end, &step) || q >= end || *q++ != '.' || parse_u64(&q, end, &pub) || q >= end ||
        *q++ != '.' || parse_u64(&q, end, &seq) || q >= end || *q++ != '.' || parse_u64(&q, end, &ts)) {
        st.errors++;
        return;
    }
    if (cfg.mode == MODE_HOLD) { /* the first marked message, whoever sent it */
        if (!c->warm) {
            c->warm = 1;
            warm_subs++;
            st.received++;
            hist_add(&st.lat, rx > ts ? rx - ts : 0);
        }
        return;
    }
    if ((int)step != st.step) {
        st.late++;
        return;
    }
    if (pub >= (uint64_t)cfg.pubs || pub % (uint64_t)cfg.rooms != c->room) {
        st.errors++;
        return;
    }
    switch (seq_accept(&c->win[pub / (uint64_t)cfg.rooms], seq)) {
    case 2:
        st.dups++;
        return;
    case 1:
    case 3:
        st.order++;
        break;
    default:
        break;
    }
    st.received++;
    st.last_rx = rx;
    hist_add(&st.lat, rx > ts ? rx - ts : 0);
}

static int has_prefix(const uint8_t *p, size_t len, const char *pre)
{
    size_t l = strlen(pre);
    return len >= l && !memcmp(p, pre, l);
}

/* The JSON number after `"key":` in p, or -1. */
static long long json_number(const uint8_t *p, size_t len, const char *key)
{
    char pat[64];
    int n = snprintf(pat, sizeof pat, "\"%s\":", key);
    const uint8_t *k = memmem(p, len, pat, (size_t)n);
    uint64_t v;
    const uint8_t *q = k ? k + n : NULL;
    return q && parse_u64(&q, p + len, &v) == 0 ? (long long)v : -1;
}

/* resume mode: the joined reply of a join with since says whether the room's
 * history reached back and how many replayed messages follow. */
static void resume_joined(struct conn *c, const uint8_t *p, size_t len)
{
    if (memmem(p, len, "\"recovered\":true", 16))
        rs.recovered++;
    else
        rs.not_recovered++;
    long long missed = json_number(p, len, "missed");
    c->missed_left = missed > 0 ? (uint32_t)missed : 0;
    rs.missed += c->missed_left;
}

/* resume mode: keeps the room's newest offset until the restart (every
 * subscriber of a room saw the same last message: it is each one's since;
 * replays to the first ones back must not move it for the others) and counts
 * down the replayed messages of a reconnected subscriber. */
static void resume_message(struct conn *c, const uint8_t *p, size_t len)
{
    static const char key[] = "\"offset\":\"";
    if (!has_prefix(p, len, "{\"type\":\"message\""))
        return;
    const uint8_t *o = rs.armed ? NULL : memmem(p, len, key, sizeof key - 1);
    if (o) {
        o += sizeof key - 1;
        const uint8_t *e = memchr(o, '"', (size_t)(p + len - o));
        if (e && e - o <= OFFSET_MAX) {
            memcpy(room_offset[c->room], o, (size_t)(e - o));
            room_offset[c->room][e - o] = 0;
        }
    }
    if (c->resuming && c->missed_left && --c->missed_left == 0 && c->state == C_READY)
        resume_done(c);
}

static void on_text(struct conn *c, const uint8_t *p, size_t len, uint64_t rx)
{
    const struct adapter *ad = cfg.ad;
    if (ad->text_ping && len == strlen(ad->text_ping) && !memcmp(p, ad->text_ping, len)) {
        send_text(c, ad->text_pong, strlen(ad->text_pong));
        return;
    }
    if (c->state == C_SETUP) {
        const struct setup_step *s = setup_of(c);
        if (has_prefix(p, len, s[c->setup_i].expect)) {
            if (c->resuming && s[c->setup_i].send)
                resume_joined(c, p, len);
            c->setup_i++;
            setup_enter(c);
        } else if (ad->error_prefix && has_prefix(p, len, ad->error_prefix)) {
            conn_kill(c, "error reply during setup");
        }
        return;
    }
    if (c->kind == SUB) {
        total_frames++;
        st.frames++;
        st.frame_bytes += len;
        if (cfg.mode == MODE_RESUME)
            resume_message(c, p, len);
        on_delivery(c, p, len, rx);
    }
    if (ad->error_prefix && has_prefix(p, len, ad->error_prefix)) {
        st.errors++;
        if (st.errors <= 3)
            note("error frame: %.*s", (int)(len > 200 ? 200 : len), (const char *)p);
    }
}

/* Inflates one whole compressed message (RFC 7692: no context is kept,
 * wsfan answers server_no_context_takeover) into a buffer reused by the
 * next call. Returns its length, or -1. */
static ssize_t inflate_message(const uint8_t *in, size_t len, uint8_t **out)
{
    static z_stream z;
    static int ready;
    static uint8_t *buf;
    static size_t cap;
    static const uint8_t tail[4] = {0, 0, 0xff, 0xff};
    if (!ready && inflateInit2(&z, -15) != Z_OK)
        return -1;
    ready = 1;
    inflateReset(&z);
    size_t used = 0;
    for (int part = 0; part < 2; part++) {
        z.next_in = (Bytef *)(part ? tail : in);
        z.avail_in = part ? sizeof tail : (uInt)len;
        while (z.avail_in) {
            if (cap - used < 4096) {
                cap = cap ? cap * 2 : 1 << 16;
                buf = xrealloc(buf, cap);
            }
            z.next_out = buf + used;
            z.avail_out = (uInt)(cap - used);
            int r = inflate(&z, Z_SYNC_FLUSH);
            used = cap - z.avail_out;
            if (r != Z_OK && r != Z_BUF_ERROR && r != Z_STREAM_END)
                return -1;
        }
    }
    *out = buf;
    return (ssize_t)used;
}

/* Parses whole frames of buf; returns bytes consumed, or -1 after killing c. */
static ssize_t frames_parse(struct conn *c, const uint8_t *buf, size_t n, uint64_t rx)
{
    size_t off = 0;
    while (n - off >= 2) {
        const uint8_t *f = buf + off;
        int fin = f[0] & 0x80, op = f[0] & 0x0f;
        uint64_t len = f[1] & 0x7f;
        size_t h = 2;
        if (f[1] & 0x80) {
            conn_kill(c, "masked server frame");
            return -1;
        }
        if (len == 126) {
            if (n - off < 4)
                break;
            len = (uint64_t)f[2] << 8 | f[3];
            h = 4;
        } else if (len == 127) {
            if (n - off < 10)
                break;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | f[2 + i];
            h = 10;
        }
        if (len > (16u << 20)) {
            conn_kill(c, "server frame over 16 MiB");
            return -1;
        }
        if (n - off < h + len)
            break;
        const uint8_t *pl = f + h;
        off += h + (size_t)len;
        if (f[0] & 0x40) { /* RSV1: a compressed message, never fragmented by wsfan */
            uint8_t *text;
            ssize_t tl = cfg.deflate && fin && op == 1 && !c->frag_op ? inflate_message(pl, (size_t)len, &text) : -1;
            if (tl < 0) {
                conn_kill(c, "compressed frame not understood");
                return -1;
            }
            on_text(c, text, (size_t)tl, rx);
            if (c->state == C_DEAD)
                return -1;
            continue;
        }
        switch (op) {
        case 0x0: /* continuation */
        case 0x1:
        case 0x2:
            if (op != 0 && c->frag_op) {
                conn_kill(c, "new message inside a fragmented one");
                return -1;
            }
            if (!fin || c->frag_op) {
                if (op)
                    c->frag_op = (uint8_t)op;
                if (c->frag_len + len > c->frag_cap) {
                    c->frag_cap = (uint32_t)(c->frag_len + len) * 2;
                    c->frag = xrealloc(c->frag, c->frag_cap);
                }
                memcpy(c->frag + c->frag_len, pl, (size_t)len);
                c->frag_len += (uint32_t)len;
                if (!fin)
                    break;
                int whole_op = c->frag_op;
                uint32_t whole_len = c->frag_len;
                c->frag_op = 0;
                c->frag_len = 0;
                if (whole_op == 1)
                    on_text(c, c->frag, whole_len, rx);
                break;
            }
            if (op == 1)
                on_text(c, pl, (size_t)len, rx);
            break;
        case 0x8:
            conn_kill(c, "close frame from server");
            return -1;
        case 0x9:
            frame_append(c, 0xA, pl, (size_t)len);
            conn_flush(c);
            if (c->state == C_DEAD)
                return -1;
            break;
        case 0xA:
            break;
        default:
            conn_kill(c, "unknown opcode");
            return -1;
        }
        if (c->state == C_DEAD)
            return -1;
    }
    return (ssize_t)off;
}

static uint8_t rbuf[1 << 20];

static void handle_http(struct conn *c, size_t have, uint64_t rx)
{
    uint8_t *end = memmem(rbuf, have, "\r\n\r\n", 4);
    if (!end) {
        if (have > 16384)
            conn_kill(c, "response head too long");
        else {
            c->in = xrealloc(c->in, have);
            memcpy(c->in, rbuf, have);
            c->in_len = (uint32_t)have;
            c->in_cap = (uint32_t)have;
        }
        return;
    }
    size_t head = (size_t)(end - rbuf) + 4;
    if (have < 12 || memcmp(rbuf, "HTTP/1.1 101", 12)) {
        char line[128];
        size_t l = 0;
        while (l < head && l < sizeof line - 1 && rbuf[l] != '\r')
            l++;
        memcpy(line, rbuf, l);
        line[l] = 0;
        conn_kill(c, line);
        return;
    }
    if (!memmem(rbuf, head, WS_ACCEPT, sizeof WS_ACCEPT - 1)) {
        conn_kill(c, "bad Sec-WebSocket-Accept");
        return;
    }
    c->state = C_SETUP;
    c->setup_i = 0;
    if (c->resuming && !rs.back_up)
        rs.back_up = rx;
    setup_enter(c);
    if (c->state == C_DEAD)
        return;
    size_t rest = have - head;
    if (rest) {
        ssize_t used = frames_parse(c, rbuf + head, rest, rx);
        if (used < 0)
            return;
        rest -= (size_t)used;
        if (rest) {
            c->in = xrealloc(c->in, rest);
            memcpy(c->in, rbuf + head + used, rest);
            c->in_cap = (uint32_t)rest;
        }
    }
    c->in_len = (uint32_t)rest;
}

static void conn_readable(struct conn *c)
{
    if (c->ssl && c->out_len > c->out_off)
        conn_flush(c); /* the TLS handshake waited for the server */
    /* Edge-triggered: read until the socket is empty. A plain read shorter
     * than asked for emptied it (what comes later is a new edge); through
     * TLS, which reads a record at a time, until EAGAIN. */
    for (;;) {
        size_t have = c->in_len;
        if (have) {
            memcpy(rbuf, c->in, have);
            c->in_len = 0;
        }
        ssize_t r = conn_recv(c, rbuf + have, sizeof rbuf - have);
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                if (have) { /* put the leftover back */
                    memcpy(c->in, rbuf, have);
                    c->in_len = (uint32_t)have;
                }
                return;
            }
            conn_kill(c, strerror(errno));
            return;
        }
        if (r == 0) {
            conn_kill(c, "connection closed by server");
            return;
        }
        uint64_t rx = now_ns();
        size_t total = have + (size_t)r;
        if (c->state == C_HTTP) {
            handle_http(c, total, rx);
        } else {
            ssize_t used = frames_parse(c, rbuf, total, rx);
            if (used < 0)
                return;
            size_t rest = total - (size_t)used;
            if (rest) {
                if (rest > c->in_cap) {
                    c->in = xrealloc(c->in, rest);
                    c->in_cap = (uint32_t)rest;
                }
                memcpy(c->in, rbuf + used, rest);
            }
            c->in_len = (uint32_t)rest;
        }
        if (c->state == C_DEAD || (!c->ssl && (size_t)r < sizeof rbuf - have))
            return;
    }
}

/* The upgrade request of each node's connections is "GET <path>" and this. */
static char req_tail[8][256];
static size_t req_tail_len[8];

static void req_tails_init(void)
{
    for (int i = 0; i < cfg.n_nodes; i++) {
        const struct sockaddr_in *a = &cfg.nodes[i];
        char host[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        int n = snprintf(req_tail[i], sizeof req_tail[i],
                         " HTTP/1.1\r\nHost: %s:%u\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                         host, ntohs(a->sin_port), WS_KEY,
                         cfg.deflate ? "Sec-WebSocket-Extensions: permessage-deflate\r\n" : "");
        if (n < 0 || (size_t)n >= sizeof req_tail[i])
            die("upgrade request too long");
        req_tail_len[i] = (size_t)n;
    }
}

/* events: what epoll reported. While connecting, an edge with EPOLLERR is
 * the failed connect (SO_ERROR says why); any other is the established
 * connection, and the request goes out (a write error would kill it). */
static void conn_writable(struct conn *c, uint32_t events)
{
    if (c->state == C_CONNECTING) {
        if (events & EPOLLERR) {
            int err = 0;
            socklen_t el = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
            conn_kill(c, strerror(err ? err : ECONNRESET));
            return;
        }
        if (!(events & EPOLLOUT))
            return;
        char req[1024];
        size_t n = 4;
        memcpy(req, "GET ", 4);
        char room[32];
        room_name(room, sizeof room, c->room);
        n += tmpl_expand(req + n, 256, c->kind == SUB ? cfg.ad->sub_path : cfg.ad->pub_path, room, "");
        memcpy(req + n, req_tail[c->node], req_tail_len[c->node]);
        n += req_tail_len[c->node];
        c->state = C_HTTP;
        if (cfg.tls) { /* the request goes out once the handshake is done */
            if (!(c->ssl = SSL_new(cfg.tls)) || !SSL_set_fd(c->ssl, c->fd))
                die("--tls: cannot create a TLS session");
            SSL_set_connect_state(c->ssl);
        }
        conn_write(c, req, n);
        return;
    }
    if (c->out_len > c->out_off)
        conn_flush(c);
}

/* The source address of subscriber c with --src-addrs, or 0 when binding
 * would change nothing: 127.0.0.1 is what the kernel picks anyway to reach
 * a 127.0.0.0/8 server, and connect() picks the port as after a bind with
 * IP_BIND_ADDRESS_NO_PORT. */
static uint32_t src_addr_of(const struct conn *c)
{
    if (c->kind != SUB || cfg.src_addrs < 2)
        return 0;
    uint32_t src = 0x7f000001u + c->idx % (uint32_t)cfg.src_addrs;
    if (src == 0x7f000001u && (ntohl(cfg.nodes[c->node].sin_addr.s_addr) >> 24) == 127)
        return 0;
    return src;
}

static void conn_start(struct conn *c)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s (raise ulimit -n?)", strerror(errno));
    int one = 1;
    /* A subscriber writes only in answer to what the server sent, which
     * acknowledged its previous write: Nagle never holds its segments back,
     * and TCP_NODELAY would change nothing on the wire. A publisher writes
     * back to back. */
    if (c->kind == PUB)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    uint32_t src_ip = src_addr_of(c);
    if (src_ip) {
        /* the port is picked at connect(), per destination: without this,
         * bind() would reserve one for any destination and the ephemeral
         * range would run out */
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(src_ip);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0)
            die("bind 127.0.0.%u: %s", src_ip & 0xff, strerror(errno));
    }
    c->fd = fd;
    c->t0 = now_ns();
    c->frag_op = 0;
    c->state = C_CONNECTING;
    inflight++;
    const struct sockaddr_in *a = &cfg.nodes[c->node];
    if (connect(fd, (const struct sockaddr *)a, sizeof *a) < 0 && errno != EINPROGRESS) {
        conn_kill(c, strerror(errno));
        return;
    }
    /* registered after connect(): the state it polls in is SYN_SENT or
     * ESTABLISHED, and the edge of the connect's outcome is still to come or
     * already reported by EPOLL_CTL_ADD */
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
}

/* One turn of the loop: waits at most timeout_ms, handles what is ready. */
static void loop_once(int timeout_ms)
{
    static struct epoll_event evs[4096];
    int n = epoll_wait(ep, evs, (int)(sizeof evs / sizeof evs[0]), timeout_ms);
    if (n < 0 && errno != EINTR)
        die("epoll_wait: %s", strerror(errno));
    for (int i = 0; i < n; i++) {
        struct conn *c = evs[i].data.ptr;
        if (c->state == C_DEAD)
            continue;
        if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            conn_writable(c, evs[i].events);
        if (c->state != C_DEAD && c->state != C_CONNECTING && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
            conn_readable(c);
    }
}

/* Starts every connection of arr, at most --concurrency in setup at once,
 * and waits until all are ready or dead. Returns the number not ready. */
static int open_all(struct conn *arr, int n, const char *what)
{
    uint64_t deadline = now_ns() + (uint64_t)(cfg.setup_timeout * 1e9);
    int next = 0;
    int last_note = 0;
    while (next < n || inflight > 0) {
        while (next < n && inflight < cfg.concurrency)
            conn_start(&arr[next++]);
        loop_once(10);
        check_deadline();
        if (now_ns() > deadline) {
            note("%s: setup timed out with %d still in setup", what, inflight);
            break;
        }
        int done = next - inflight;
        if (!cfg.quiet && done - last_note >= 10000) {
            note("%s: %d/%d set up", what, done, n);
            last_note = done;
        }
    }
    int ready = 0;
    for (int i = 0; i < n; i++)
        ready += arr[i].state == C_READY;
    return n - ready;
}

static void loop_for(double seconds)
{
    uint64_t end = now_ns() + (uint64_t)(seconds * 1e9);
    while (now_ns() < end) {
        loop_once(10);
        check_deadline();
    }
}

/* ---------- output ---------- */

static FILE *out_file;

static void emit(const char *line)
{
    fputs(line, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    if (out_file) {
        fputs(line, out_file);
        fputc('\n', out_file);
        fflush(out_file);
    }
}

/* The machine's 1-minute load average: other work on a shared machine
 * shows here, next to the figures it disturbs. */
static double loadavg1(void)
{
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1)
            l = -1;
        fclose(f);
    }
    return l;
}

static size_t json_common(char *out, size_t cap, const char *mode)
{
    return (size_t)snprintf(out, cap,
                            "{\"mode\":\"%s\",\"label\":\"%s\",\"adapter\":\"%s\",\"nodes\":%d,\"subs\":%d,"
                            "\"rooms\":%d,\"pubs\":%d,\"size\":%d,\"time\":%ld,\"loadavg\":%.2f",
                            mode, cfg.label, cfg.ad->name, cfg.n_nodes, cfg.subs, cfg.rooms, cfg.pubs,
                            cfg.size, (long)time(NULL), loadavg1());
}

static void run_hook(const char *cmd)
{
    if (!cmd)
        return;
    int rc = system(cmd);
    if (rc != 0)
        note("hook '%s' exited with %d", cmd, rc);
}

/* ---------- scenario phases ---------- */

static void alloc_conns(void)
{
    subs_arr = calloc((size_t)cfg.subs, sizeof *subs_arr);
    pubs_arr = calloc((size_t)cfg.pubs + 1, sizeof *pubs_arr);
    room_ready = calloc((size_t)cfg.rooms, sizeof *room_ready);
    room_offset = calloc((size_t)cfg.rooms, sizeof *room_offset);
    if (!subs_arr || !pubs_arr || !room_ready || !room_offset)
        die("out of memory");
    pubs_per_room = (cfg.pubs + cfg.rooms - 1) / cfg.rooms;
    for (int i = 0; i < cfg.subs; i++) {
        struct conn *c = &subs_arr[i];
        c->fd = -1;
        c->kind = SUB;
        c->idx = (uint32_t)i;
        c->room = (uint32_t)(i % cfg.rooms);
        c->node = (uint32_t)((i / cfg.rooms) % cfg.n_nodes);
        if (cfg.mode == MODE_LADDER) {
            c->win = calloc((size_t)pubs_per_room, sizeof *c->win);
            if (!c->win)
                die("out of memory");
        }
    }
    for (int i = 0; i < cfg.pubs; i++) {
        struct conn *c = &pubs_arr[i];
        c->fd = -1;
        c->kind = PUB;
        c->idx = (uint32_t)i;
        c->room = (uint32_t)(i % cfg.rooms);
        c->node = 0;
    }
}

/* Publishes a warm-up message in every room until every subscriber has one. */
static void warm_up(void)
{
    uint64_t deadline = now_ns() + (uint64_t)(cfg.warm_timeout * 1e9);
    int attempt = 0;
    while (warm_subs < ready_subs) {
        if (now_ns() > deadline) {
            int missing = ready_subs - warm_subs;
            die("warm-up: %d of %d subscribers never received room traffic within %.0f s", missing,
                ready_subs, cfg.warm_timeout);
        }
        /* which rooms still wait */
        char *need = calloc((size_t)cfg.rooms, 1);
        if (!need)
            die("out of memory");
        for (int i = 0; i < cfg.subs; i++)
            if (subs_arr[i].state == C_READY && !subs_arr[i].warm)
                need[subs_arr[i].room] = 1;
        for (int r = 0; r < cfg.rooms; r++) {
            struct conn *p = &pubs_arr[r];
            if (!need[r] || p->state != C_READY)
                continue;
            char room[32], data[64], msg[512];
            room_name(room, sizeof room, (uint32_t)r);
            snprintf(data, sizeof data, "~W%d.%d~", r, attempt);
            size_t n = tmpl_expand(msg, sizeof msg, cfg.ephemeral ? cfg.ad->publish_ephemeral : cfg.ad->publish,
                                   room, data);
            frame_append(p, 1, msg, n);
            conn_flush(p);
        }
        free(need);
        attempt++;
        uint64_t until = now_ns() + 500000000ull;
        while (warm_subs < ready_subs && now_ns() < until) {
            loop_once(10);
            check_deadline();
        }
    }
    note("warm-up: all %d subscribers received room traffic (%d round%s)", ready_subs, attempt,
         attempt == 1 ? "" : "s");
}

static char pad[65536];

struct step_res {
    double rate, loss_pct, delivered, p50_us, p99_us, p999_us, max_us, cpu_pct;
    int ok;    /* loss within --loss-ok, nothing refused, duplicated, reordered or closed */
    int clean; /* everything delivered exactly once, in order */
};

/* Runs one step at `rate` publishes/s in total and prints its JSON line. */
static struct step_res ladder_step(int step, double rate, const char *phase)
{
    memset(&st, 0, sizeof st);
    st.step = step;
    uint64_t *gen = calloc((size_t)cfg.pubs, sizeof *gen);
    uint64_t *pubd = calloc((size_t)cfg.pubs, sizeof *pubd);
    static uint64_t *seqs;
    if (!seqs)
        seqs = calloc((size_t)cfg.pubs, sizeof *seqs);
    if (!gen || !pubd || !seqs)
        die("out of memory");
    uint64_t unsent = 0;
    int subs_at_start = ready_subs;
    int *room_subs = malloc((size_t)cfg.rooms * sizeof *room_subs);
    if (!room_subs)
        die("out of memory");
    memcpy(room_subs, room_ready, (size_t)cfg.rooms * sizeof *room_subs);
    double per_pub = rate / cfg.pubs;
    const size_t out_limit = 4u << 20;
    const char *tmpl = cfg.ephemeral ? cfg.ad->publish_ephemeral : cfg.ad->publish;

    run_hook(cfg.hook_start);
    struct proc_sample a, b;
    proc_sample(&a);
    uint64_t t0 = now_ns();
    uint64_t t_end = t0 + (uint64_t)(cfg.duration * 1e9);
    for (int last = 0; !last;) {
        uint64_t now = now_ns();
        if (now >= t_end) {
            now = t_end;
            last = 1;
        }
        double el = (double)(now - t0) / 1e9;
        for (int p = 0; p < cfg.pubs; p++) {
            struct conn *c = &pubs_arr[p];
            /* publishers are spread evenly over each interval, not in step */
            uint64_t due = (uint64_t)(per_pub * el + (double)p / cfg.pubs);
            if (gen[p] >= due)
                continue;
            if (c->state != C_READY) {
                unsent += due - gen[p];
                gen[p] = due;
                continue;
            }
            char room[32];
            room_name(room, sizeof room, c->room);
            uint64_t sent_at = now_ns();
            while (gen[p] < due) {
                gen[p]++;
                if (c->out_len - c->out_off > out_limit) {
                    unsent++;
                    continue;
                }
                /* message gen[p] fell due when per_pub * el + p / pubs reached gen[p] */
                uint64_t scheduled = t0 + (uint64_t)(((double)gen[p] - (double)p / cfg.pubs) / per_pub * 1e9);
                if (sent_at > scheduled && sent_at - scheduled > st.send_lag_max)
                    st.send_lag_max = sent_at - scheduled;
                char data[65600], msg[66000];
                int h = snprintf(data, sizeof data, "~B%d.%d.%" PRIu64 ".%" PRIu64 "~", step, p, ++seqs[p],
                                 scheduled);
                if (h < cfg.size) {
                    memcpy(data + h, pad, (size_t)(cfg.size - h));
                    data[cfg.size] = 0;
                }
                size_t n = tmpl_expand(msg, sizeof msg, tmpl, room, data);
                frame_append(c, 1, msg, n);
                pubd[p]++;
            }
            conn_flush(c);
        }
        if (!last)
            loop_once(1);
        check_deadline();
    }
    uint64_t t_pub_end = now_ns();
    uint64_t published = 0, expected = 0, offered = 0;
    for (int p = 0; p < cfg.pubs; p++) {
        published += pubd[p];
        offered += gen[p];
        expected += pubd[p] * (uint64_t)room_subs[pubs_arr[p].room];
    }
    /* drain: wait for the rest, at most --drain seconds */
    uint64_t drain_end = t_pub_end + (uint64_t)(cfg.drain * 1e9);
    while (st.received < expected && now_ns() < drain_end) {
        loop_once(5);
        check_deadline();
    }
    proc_sample(&b);
    run_hook(cfg.hook_end);
    uint64_t loss = expected > st.received ? expected - st.received : 0;
    double loss_pct = expected ? 100.0 * (double)loss / (double)expected : 0;
    double span = st.last_rx > t0 ? (double)(st.last_rx - t0) / 1e9 : cfg.duration;
    if (span < cfg.duration)
        span = cfg.duration;
    char line[4096];
    size_t n = json_common(line, sizeof line, "ladder");
    n += (size_t)snprintf(
        line + n, sizeof line - n,
        ",\"step\":%d,\"phase\":\"%s\",\"offered_rate\":%.0f,\"duration_s\":%.2f,\"offered\":%" PRIu64 ",\"published\":%" PRIu64
        ",\"unsent\":%" PRIu64 ",\"subs_ready\":%d,\"expected\":%" PRIu64 ",\"received\":%" PRIu64
        ",\"loss\":%" PRIu64 ",\"loss_pct\":%.4f,\"dups\":%" PRIu64 ",\"order_violations\":%" PRIu64
        ",\"late\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"disconnects\":%" PRIu64
        ",\"lat_p50_us\":%.1f,\"lat_p99_us\":%.1f,\"lat_p999_us\":%.1f,\"lat_max_us\":%.1f"
        ",\"send_lag_max_us\":%.1f,\"delivered_per_s\":%.0f,\"delivery_span_s\":%.3f,\"frame_bytes\":%.1f",
        step, phase, rate, cfg.duration, offered, published, unsent, subs_at_start, expected, st.received, loss,
        loss_pct, st.dups, st.order, st.late, st.errors, st.disconnects, hist_pct(&st.lat, 0.50) / 1e3,
        hist_pct(&st.lat, 0.99) / 1e3, hist_pct(&st.lat, 0.999) / 1e3, (double)st.lat.max / 1e3,
        (double)st.send_lag_max / 1e3,
        (double)st.received / span, span, st.frames ? (double)st.frame_bytes / (double)st.frames : 0.0);
    /* messages never sent count as lost */
    uint64_t want = expected + unsent * (uint64_t)(subs_at_start / cfg.rooms);
    struct step_res res = {
        .rate = rate,
        .loss_pct = want ? 100.0 * (double)(want > st.received ? want - st.received : 0) / (double)want : 0,
        .delivered = (double)st.received / span,
        .p50_us = hist_pct(&st.lat, 0.50) / 1e3,
        .p99_us = hist_pct(&st.lat, 0.99) / 1e3,
        .p999_us = hist_pct(&st.lat, 0.999) / 1e3,
        .max_us = (double)st.lat.max / 1e3,
    };
    res.clean = !(st.dups || st.order || st.errors || st.late || st.disconnects || loss || !st.received ||
                  unsent);
    /* ok also means keeping up: deliveries may not trail the step by more than
     * 10% of its length (plus 100 ms), or the rate is not sustainable */
    int kept_up = span <= cfg.duration * 1.1 + 0.1;
    res.ok = st.received && !st.dups && !st.order && !st.errors && !st.disconnects && !unsent &&
             res.loss_pct <= cfg.loss_ok_pct && kept_up;
    n += (size_t)snprintf(line + n, sizeof line - n, ",\"ok\":%s", res.ok ? "true" : "false");
    size_t before = n;
    n += proc_json(line + n, sizeof line - n, &a, &b);
    char *cpu = strstr(line + before, "\"server_cpu_pct\":");
    if (cpu)
        res.cpu_pct = strtod(cpu + 17, NULL);
    snprintf(line + n, sizeof line - n, "}");
    emit(line);
    note("step %d: rate %.0f/s published %" PRIu64 " expected %" PRIu64 " received %" PRIu64
         " loss %.3f%% p99 %.2f ms delivered %.0f/s",
         step, rate, published, expected, st.received, loss_pct, hist_pct(&st.lat, 0.99) / 1e6,
         (double)st.received / span);
    free(gen);
    free(pubd);
    free(room_subs);
    return res;
}

/* After an overloaded step: waits until no frame has arrived for 300 ms
 * (at most 15 s) so that the next step starts from an empty pipeline. */
static void recover(void)
{
    uint64_t end = now_ns() + 15000000000ull;
    uint64_t seen = total_frames, quiet_since = now_ns();
    while (now_ns() < end) {
        loop_once(10);
        check_deadline();
        if (total_frames != seen) {
            seen = total_frames;
            quiet_since = now_ns();
        } else if (now_ns() - quiet_since > 300000000ull) {
            return;
        }
    }
    note("recovery: frames still arriving after 15 s");
}

static int run_ladder(void)
{
    if (open_all(pubs_arr, cfg.pubs, "publishers"))
        die("%d publisher(s) could not connect and join", cfg.pubs - ready_pubs);
    note("publishers ready: %d", ready_pubs);
    int miss = open_all(subs_arr, cfg.subs, "subscribers");
    if (miss)
        die("%d of %d subscribers could not connect and join", miss, cfg.subs);
    note("subscribers ready: %d", ready_subs);
    warm_up();
    loop_for(cfg.settle);
    int step = 0, all_clean = 1, dropped = 0;
    struct step_res best = {.rate = -1}, first_bad = {.rate = -1}, half = {.rate = -1};
    struct step_res fails[64];
    int n_fails = 0;
    /* The ladder goes on past a failed step while its loss stays within
     * --stop-loss (a single slow step on a shared machine is not the limit);
     * the highest ok rate counts, and the lowest failed rate above it. */
    for (int i = 0; i < cfg.n_rates; i++) {
        struct step_res r = ladder_step(++step, cfg.rates[i], "ladder");
        all_clean &= r.clean;
        if (r.ok && r.rate > best.rate)
            best = r;
        if (!r.ok)
            fails[n_fails++] = r;
        if (dead_subs || dead_pubs) {
            note("connections were closed: the ladder stops");
            dropped = 1;
            break;
        }
        if (!r.ok && (r.loss_pct > cfg.stop_loss_pct || !r.delivered)) {
            note("loss %.2f%% over %.2f%%: the ladder stops", r.loss_pct, cfg.stop_loss_pct);
            break;
        }
        if (!r.ok)
            recover();
    }
    for (int i = 0; i < n_fails; i++)
        if (fails[i].rate > best.rate && (first_bad.rate < 0 || fails[i].rate < first_bad.rate))
            first_bad = fails[i];
    int exhausted = first_bad.rate < 0 && !dropped;
    /* narrow the highest rate with loss within --loss-ok */
    for (int k = 0; k < cfg.bisect && !dropped && first_bad.rate > 0; k++) {
        double lo = best.rate > 0 ? best.rate : 0;
        double mid = (double)(long)((lo + first_bad.rate) / 2);
        if (mid <= lo || mid >= first_bad.rate || first_bad.rate - lo < first_bad.rate * 0.04)
            break;
        recover();
        struct step_res r = ladder_step(++step, mid, "bisect");
        all_clean &= r.clean;
        if (dead_subs || dead_pubs) {
            dropped = 1;
            break;
        }
        if (r.ok)
            best = r;
        else
            first_bad = r;
    }
    if (cfg.half && best.rate > 0 && !dropped) {
        recover();
        half = ladder_step(++step, (double)(long)(best.rate / 2), "half");
        all_clean &= half.clean;
    }
    char line[2048];
    size_t n = json_common(line, sizeof line, "summary");
    n += (size_t)snprintf(line + n, sizeof line - n,
                          ",\"loss_ok_pct\":%.3f,\"max_ok_rate\":%.0f,\"delivered_per_s_at_max\":%.0f,"
                          "\"cpu_pct_at_max\":%.1f,\"p99_us_at_max\":%.1f,\"first_bad_rate\":%.0f,"
                          "\"ladder_exhausted\":%s,\"connections_closed\":%s",
                          cfg.loss_ok_pct, best.rate, best.rate > 0 ? best.delivered : 0.0,
                          best.rate > 0 ? best.cpu_pct : 0.0, best.rate > 0 ? best.p99_us : 0.0, first_bad.rate,
                          exhausted ? "true" : "false", dropped ? "true" : "false");
    if (half.rate > 0)
        n += (size_t)snprintf(line + n, sizeof line - n,
                              ",\"half_rate\":%.0f,\"half_p50_us\":%.1f,\"half_p99_us\":%.1f,\"half_p999_us\":%.1f,"
                              "\"half_max_us\":%.1f,\"half_loss_pct\":%.4f",
                              half.rate, half.p50_us, half.p99_us, half.p999_us, half.max_us, half.loss_pct);
    snprintf(line + n, sizeof line - n, "}");
    emit(line);
    return !all_clean;
}

static int run_idle(void)
{
    if (open_all(pubs_arr, cfg.pubs, "publishers"))
        die("%d publisher(s) could not connect and join", cfg.pubs - ready_pubs);
    loop_for(0.5);
    struct proc_sample base, a, b;
    proc_sample(&base);
    uint64_t t0 = now_ns();
    int miss = open_all(subs_arr, cfg.subs, "subscribers");
    if (miss)
        die("%d of %d subscribers could not connect and join", miss, cfg.subs);
    double setup_s = (double)(now_ns() - t0) / 1e9;
    warm_up();
    loop_for(cfg.settle);
    proc_sample(&a);
    loop_for(cfg.idle_s);
    proc_sample(&b);
    char line[4096];
    size_t n = json_common(line, sizeof line, "idle");
    long before = 0, after = 0;
    for (int i = 0; i < cfg.n_pids; i++) {
        before += base.rss_kb[i];
        after += b.rss_kb[i];
    }
    n += (size_t)snprintf(line + n, sizeof line - n,
                          ",\"conns\":%d,\"setup_s\":%.2f,\"idle_s\":%.1f,\"rss_before_kb\":%ld,\"rss_after_kb\":%ld,"
                          "\"rss_per_conn_bytes\":%.0f,\"disconnects\":%d",
                          ready_subs, setup_s, cfg.idle_s, before, after,
                          ready_subs ? (double)(after - before) * 1024.0 / ready_subs : 0.0,
                          dead_subs + dead_pubs);
    n += proc_json(line + n, sizeof line - n, &a, &b);
    snprintf(line + n, sizeof line - n, "}");
    emit(line);
    return dead_subs || dead_pubs;
}

static int run_storm(void)
{
    struct proc_sample a, b;
    proc_sample(&a);
    uint64_t t0 = now_ns();
    int miss = open_all(subs_arr, cfg.subs, "storm");
    uint64_t t1 = now_ns();
    proc_sample(&b);
    double s = (double)(t1 - t0) / 1e9;
    char line[4096];
    size_t n = json_common(line, sizeof line, "storm");
    n += (size_t)snprintf(line + n, sizeof line - n,
                          ",\"conns\":%d,\"ready\":%d,\"failed\":%d,\"concurrency\":%d,\"seconds\":%.3f,"
                          "\"handshakes_per_s\":%.0f,\"hs_p50_ms\":%.2f,\"hs_p99_ms\":%.2f,\"hs_max_ms\":%.2f",
                          cfg.subs, ready_subs, miss, cfg.concurrency, s, (double)ready_subs / s,
                          hist_pct(&hs_lat, 0.5) / 1e6, hist_pct(&hs_lat, 0.99) / 1e6, (double)hs_lat.max / 1e6);
    n += proc_json(line + n, sizeof line - n, &a, &b);
    snprintf(line + n, sizeof line - n, "}");
    emit(line);
    return miss > 0;
}

/* Tells the caller on stdout that every connection is set up. */
static void announce_ready(double setup_s)
{
    char line[1024];
    size_t n = json_common(line, sizeof line, "ready");
    snprintf(line + n, sizeof line - n, ",\"conns\":%d,\"setup_s\":%.2f}", ready_subs, setup_s);
    puts(line);
    fflush(stdout);
}

static int run_resume(void)
{
    if (!cfg.ad->sub_resume[0].expect)
        die("--mode resume: the %s adapter has no join with since", cfg.ad->name);
    if (open_all(pubs_arr, cfg.pubs, "publishers"))
        die("%d publisher(s) could not connect and join", cfg.pubs - ready_pubs);
    uint64_t t0 = now_ns();
    int miss = open_all(subs_arr, cfg.subs, "subscribers");
    if (miss)
        die("%d of %d subscribers could not connect and join", miss, cfg.subs);
    warm_up();
    loop_for(cfg.settle);
    int n = ready_subs;
    rs.armed = 1;
    announce_ready((double)(now_ns() - t0) / 1e9);
    uint64_t deadline = now_ns() + (uint64_t)(cfg.setup_timeout * 1e9);
    while (!rs.first_close && now_ns() < deadline) {
        loop_once(10);
        check_deadline();
    }
    if (!rs.first_close)
        die("resume: the server closed no connection within --setup-timeout %.0f s", cfg.setup_timeout);
    note("resume: the server closed the first connection; reconnecting");
    deadline = rs.first_close + (uint64_t)(cfg.setup_timeout * 1e9);
    while (rs.done < n && now_ns() < deadline) {
        uint64_t now = now_ns();
        for (int i = 0; i < cfg.subs; i++) {
            struct conn *c = &subs_arr[i];
            if (c->state == C_DEAD && c->resuming && c->retry_at <= now)
                conn_start(c);
        }
        loop_once(5);
        check_deadline();
    }
    char line[4096];
    size_t len = json_common(line, sizeof line, "resume");
    double first = (double)rs.first_close;
    len += (size_t)snprintf(
        line + len, sizeof line - len,
        ",\"conns\":%d,\"recovered_conns\":%d,\"since_recovered\":%d,\"since_not_recovered\":%d,"
        "\"missed_replayed\":%" PRIu64 ",\"failed_attempts\":%d,\"down_s\":%.3f,\"all_recovered_s\":%.3f,"
        "\"after_up_s\":%.3f,\"p50_ms\":%.2f,\"p99_ms\":%.2f,\"max_ms\":%.2f,\"up_p50_ms\":%.2f,"
        "\"up_p99_ms\":%.2f",
        n, rs.done, rs.recovered, rs.not_recovered, rs.missed, failed_connects,
        rs.back_up ? ((double)rs.back_up - first) / 1e9 : -1.0,
        rs.done ? ((double)rs.last_done - first) / 1e9 : -1.0,
        rs.done && rs.back_up ? ((double)rs.last_done - (double)rs.back_up) / 1e9 : -1.0,
        hist_pct(&rs.since_close, 0.5) / 1e6, hist_pct(&rs.since_close, 0.99) / 1e6,
        (double)rs.since_close.max / 1e6, hist_pct(&rs.since_up, 0.5) / 1e6, hist_pct(&rs.since_up, 0.99) / 1e6);
    snprintf(line + len, sizeof line - len, "}");
    emit(line);
    return rs.done < n;
}

static int run_hold(void)
{
    struct proc_sample a, b;
    uint64_t t0 = now_ns();
    int miss = open_all(subs_arr, cfg.subs, "subscribers");
    double setup_s = (double)(now_ns() - t0) / 1e9;
    if (miss)
        die("%d of %d subscribers could not connect and join", miss, cfg.subs);
    announce_ready(setup_s);
    proc_sample(&a);
    uint64_t deadline = now_ns() + (uint64_t)(cfg.idle_s * 1e9);
    while (warm_subs < ready_subs && now_ns() < deadline) {
        loop_once(10);
        check_deadline();
    }
    loop_for(cfg.settle); /* held a little longer: the caller reads the servers' figures */
    proc_sample(&b);
    char line[4096];
    size_t n = json_common(line, sizeof line, "hold");
    n += (size_t)snprintf(line + n, sizeof line - n,
                          ",\"conns\":%d,\"setup_s\":%.2f,\"received\":%" PRIu64 ",\"disconnects\":%d,"
                          "\"lat_p50_us\":%.1f,\"lat_p99_us\":%.1f,\"lat_p999_us\":%.1f,\"lat_max_us\":%.1f",
                          ready_subs, setup_s, st.received, dead_subs, hist_pct(&st.lat, 0.5) / 1e3,
                          hist_pct(&st.lat, 0.99) / 1e3, hist_pct(&st.lat, 0.999) / 1e3, (double)st.lat.max / 1e3);
    n += proc_json(line + n, sizeof line - n, &a, &b);
    snprintf(line + n, sizeof line - n, "}");
    emit(line);
    return st.received < (uint64_t)ready_subs || dead_subs;
}

/* ---------- command line ---------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loadgen [options]\n"
            "  --adapter wsfan|nchan|socketio   protocol (default wsfan)\n"
            "  --connect HOST:PORT[,HOST:PORT]  server(s); subscribers are spread over them, publishers\n"
            "                                   use the first (default 127.0.0.1:8080)\n"
            "  --mode ladder|idle|storm|resume|hold (default ladder; see the top of bench/loadgen.c)\n"
            "  --subs N --rooms R --pubs P      subscribers, rooms, publishers (P >= R; publisher p\n"
            "                                   publishes to room p %% R; default 100, 1, 1)\n"
            "  --size B                         payload bytes (default 100)\n"
            "  --rates A,B,...                  ladder of total publish rates, messages/s\n"
            "  --duration S --drain S           seconds per step, and most seconds to wait after it (2, 2)\n"
            "  --loss-ok PCT                    a step is ok with at most this loss and no refusals,\n"
            "                                   duplicates, reordering or closes (default 0.1)\n"
            "  --stop-loss PCT                  stop the ladder after a step losing more (default 1);\n"
            "                                   it always stops when a connection was closed\n"
            "  --bisect K                       then K steps halving the gap between the highest ok\n"
            "                                   rate and the lowest failed one (default 0)\n"
            "  --half                           then one step at half the highest ok rate (latency)\n"
            "                                   (one JSON line per step, then a \"summary\" line)\n"
            "  --ephemeral                      wsfan: publish with \"ephemeral\":true\n"
            "  --deflate                        offer permessage-deflate; inflate compressed messages\n"
            "  --pad-words                      pad payloads with words, not x (compresses like text)\n"
            "  --idle S                         idle mode: seconds measured; hold mode: most seconds to\n"
            "                                   wait for the marked message (default 5)\n"
            "  --settle S                       idle mode: seconds between set-up and measuring; hold\n"
            "                                   mode: seconds held after the message (default 0.5)\n"
            "  --concurrency C                  connections in setup at once (default 256)\n"
            "  --src-addrs K                    spread subscribers over 127.0.0.1..127.0.0.K (default 4)\n"
            "  --server-pid PID[,PID...]        read CPU and RSS of these processes from /proc\n"
            "  --hook-start CMD --hook-end CMD  run around each measured step (e.g. callgrind_control)\n"
            "  --label TEXT --out FILE          tag the JSON lines; append them to FILE too\n"
            "  --check                          exit 1 unless every step delivered everything exactly once\n"
            "  --max-seconds S                  hard limit on the whole run (default 300)\n"
            "  --setup-timeout S --warm-timeout S (60, 20); resume mode: most seconds to wait for the\n"
            "                                   server's close, then for every subscriber's recovery\n"
            "  --quiet                          no progress on stderr\n"
            "  --tls                            speak TLS (wss://), certificates not checked\n"
            "exit: 0 ok, 1 --check failed, 2 setup failed or bad usage, 3 time limit\n");
}

static double num_arg(const char *opt, const char *v)
{
    char *end;
    double d = strtod(v, &end);
    if (end == v || *end || d < 0)
        die("%s=%s: expected a non-negative number", opt, v);
    return d;
}

static void parse_addr(const char *s, struct sockaddr_in *a)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host)
        die("--connect %s: expected HOST:PORT", s);
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    if (!strcmp(host, "localhost"))
        strcpy(host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
        die("--connect %s: expected an IPv4 address", s);
    if ((ntohl(a->sin_addr.s_addr) >> 24) != 127)
        die("--connect %s: only loopback (127.0.0.0/8) targets are allowed", s);
    int port = atoi(colon + 1);
    if (port <= 0 || port > 65535)
        die("--connect %s: bad port", s);
    a->sin_port = htons((uint16_t)port);
}

static void parse_args(int argc, char **argv)
{
    cfg.ad = &ADAPTERS[0];
    const char *connect_arg = "127.0.0.1:8080";
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(o, "--check")) {
            cfg.check = 1;
            continue;
        }
        if (!strcmp(o, "--ephemeral")) {
            cfg.ephemeral = 1;
            continue;
        }
        if (!strcmp(o, "--half")) {
            cfg.half = 1;
            continue;
        }
        if (!strcmp(o, "--deflate")) {
            cfg.deflate = 1;
            continue;
        }
        if (!strcmp(o, "--pad-words")) {
            cfg.pad_words = 1;
            continue;
        }
        if (!strcmp(o, "--quiet")) {
            cfg.quiet = 1;
            continue;
        }
        if (!strcmp(o, "--tls")) {
            if (!(cfg.tls = SSL_CTX_new(TLS_client_method())))
                die("--tls: cannot create a TLS context");
            SSL_CTX_set_mode(cfg.tls, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
            continue;
        }
        if (i + 1 >= argc) {
            usage(stderr);
            die("%s: missing value", o);
        }
        const char *v = argv[++i];
        if (!strcmp(o, "--adapter")) {
            cfg.ad = NULL;
            for (size_t k = 0; k < sizeof ADAPTERS / sizeof *ADAPTERS; k++)
                if (!strcmp(ADAPTERS[k].name, v))
                    cfg.ad = &ADAPTERS[k];
            if (!cfg.ad)
                die("--adapter %s: expected wsfan, nchan or socketio", v);
        } else if (!strcmp(o, "--connect")) {
            connect_arg = v;
        } else if (!strcmp(o, "--mode")) {
            if (!strcmp(v, "ladder"))
                cfg.mode = MODE_LADDER;
            else if (!strcmp(v, "idle"))
                cfg.mode = MODE_IDLE;
            else if (!strcmp(v, "storm"))
                cfg.mode = MODE_STORM;
            else if (!strcmp(v, "resume"))
                cfg.mode = MODE_RESUME;
            else if (!strcmp(v, "hold"))
                cfg.mode = MODE_HOLD;
            else
                die("--mode %s: expected ladder, idle, storm, resume or hold", v);
        } else if (!strcmp(o, "--subs")) {
            cfg.subs = (int)num_arg(o, v);
        } else if (!strcmp(o, "--rooms")) {
            cfg.rooms = (int)num_arg(o, v);
        } else if (!strcmp(o, "--pubs")) {
            cfg.pubs = (int)num_arg(o, v);
        } else if (!strcmp(o, "--size")) {
            cfg.size = (int)num_arg(o, v);
        } else if (!strcmp(o, "--rates")) {
            char *dup = strdup(v), *save = NULL;
            for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (cfg.n_rates == 64)
                    die("--rates: at most 64 steps");
                cfg.rates[cfg.n_rates++] = num_arg(o, t);
            }
            free(dup);
        } else if (!strcmp(o, "--duration")) {
            cfg.duration = num_arg(o, v);
        } else if (!strcmp(o, "--drain")) {
            cfg.drain = num_arg(o, v);
        } else if (!strcmp(o, "--stop-loss")) {
            cfg.stop_loss_pct = num_arg(o, v);
        } else if (!strcmp(o, "--loss-ok")) {
            cfg.loss_ok_pct = num_arg(o, v);
        } else if (!strcmp(o, "--bisect")) {
            cfg.bisect = (int)num_arg(o, v);
        } else if (!strcmp(o, "--idle")) {
            cfg.idle_s = num_arg(o, v);
        } else if (!strcmp(o, "--settle")) {
            cfg.settle = num_arg(o, v);
        } else if (!strcmp(o, "--concurrency")) {
            cfg.concurrency = (int)num_arg(o, v);
        } else if (!strcmp(o, "--src-addrs")) {
            cfg.src_addrs = (int)num_arg(o, v);
        } else if (!strcmp(o, "--server-pid")) {
            char *dup = strdup(v), *save = NULL;
            for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (cfg.n_pids == 8)
                    die("--server-pid: at most 8");
                cfg.pids[cfg.n_pids++] = (int)num_arg(o, t);
            }
            free(dup);
        } else if (!strcmp(o, "--hook-start")) {
            cfg.hook_start = v;
        } else if (!strcmp(o, "--hook-end")) {
            cfg.hook_end = v;
        } else if (!strcmp(o, "--label")) {
            cfg.label = v;
        } else if (!strcmp(o, "--out")) {
            cfg.out_path = v;
        } else if (!strcmp(o, "--max-seconds")) {
            cfg.max_seconds = num_arg(o, v);
        } else if (!strcmp(o, "--setup-timeout")) {
            cfg.setup_timeout = num_arg(o, v);
        } else if (!strcmp(o, "--warm-timeout")) {
            cfg.warm_timeout = num_arg(o, v);
        } else {
            usage(stderr);
            die("unknown option %s", o);
        }
    }
    char *dup = strdup(connect_arg), *save = NULL;
    for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (cfg.n_nodes == 8)
            die("--connect: at most 8 servers");
        parse_addr(t, &cfg.nodes[cfg.n_nodes++]);
    }
    free(dup);
    if (cfg.subs < 1 || cfg.rooms < 1 || cfg.pubs < 1)
        die("--subs, --rooms and --pubs must be at least 1");
    int has_pubs = cfg.mode != MODE_STORM && cfg.mode != MODE_HOLD;
    if (has_pubs && cfg.pubs < cfg.rooms)
        die("--pubs %d < --rooms %d: every room needs a publisher", cfg.pubs, cfg.rooms);
    if (cfg.src_addrs < 1 || cfg.src_addrs > 254)
        die("--src-addrs: 1..254");
    if (cfg.size < 48 || cfg.size > 65000)
        die("--size: 48..65000 bytes");
    if (cfg.concurrency < 1)
        die("--concurrency: at least 1");
    if (cfg.mode == MODE_LADDER && !cfg.n_rates)
        die("--rates: give at least one rate");
    if (!has_pubs)
        cfg.pubs = 0;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)cfg.subs + (rlim_t)cfg.pubs + 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want) {
        rl.rlim_cur = want;
        if (rl.rlim_max < want)
            rl.rlim_max = want; /* works as root */
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
            getrlimit(RLIMIT_NOFILE, &rl);
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
            if (rl.rlim_cur < want)
                die("need %lu open files, the limit is %lu: raise ulimit -n", (unsigned long)want,
                    (unsigned long)rl.rlim_cur);
        }
    }
}

int main(int argc, char **argv)
{
    t_begin = now_ns();
    signal(SIGPIPE, SIG_IGN);
    parse_args(argc, argv);
    memset(pad, 'x', sizeof pad);
    if (cfg.pad_words) {
        static const char *const words[] = {"the ", "room ", "message ", "user ", "sent ", "a ", "quick ",
                                            "update ", "of ", "price ", "42 ", "status ", "online ", "to "};
        for (size_t i = 0; i + 10 < sizeof pad;) {
            const char *w = words[rng32() % (sizeof words / sizeof words[0])];
            memcpy(pad + i, w, strlen(w));
            i += strlen(w);
        }
    }
    rng_state ^= (uint64_t)getpid() << 32 ^ t_begin;
    raise_nofile();
    if (cfg.out_path) {
        out_file = fopen(cfg.out_path, "a");
        if (!out_file)
            die("--out %s: %s", cfg.out_path, strerror(errno));
    }
    req_tails_init();
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1: %s", strerror(errno));
    alloc_conns();
    int bad = 0;
    switch (cfg.mode) {
    case MODE_LADDER:
        bad = run_ladder();
        break;
    case MODE_IDLE:
        bad = run_idle();
        break;
    case MODE_STORM:
        bad = run_storm();
        break;
    case MODE_RESUME:
        bad = run_resume();
        break;
    case MODE_HOLD:
        bad = run_hold();
        break;
    }
    for (int i = 0; i < cfg.subs; i++)
        if (subs_arr[i].fd >= 0)
            close(subs_arr[i].fd);
    for (int i = 0; i < cfg.pubs; i++)
        if (pubs_arr[i].fd >= 0)
            close(pubs_arr[i].fd);
    if (cfg.check && bad) {
        fprintf(stderr, "loadgen: --check failed: loss, duplicates, reordering, errors or closed connections\n");
        return 1;
    }
    return 0;
}
