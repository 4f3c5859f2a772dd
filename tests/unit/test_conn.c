/* test_conn.c - unit tests of net/conn.c: one struct conn over one end of a
 * socketpair(AF_UNIX, SOCK_STREAM), opened with conn_open on a net_loop of
 * a uv loop in the test thread, with a fake struct conn_handler that
 * records its calls (on_bytes, on_text, on_close, on_free). The test is
 * the peer: it writes masked client frames to the other end and reads the
 * server's frames back with a small frame reader, running the loop with
 * UV_RUN_NOWAIT between reads (every wait is bounded by a deadline).
 * Covered: bytes of the HTTP phase reach on_bytes; after conn_upgrade,
 * text frames reach on_text; queued frames arrive intact and in order;
 * partial writes (small socket buffers, a slow reader): every byte arrives
 * once and in order, the ring resuming where the socket stopped; the send
 * queue limit: the peer reads whole frames, then a close frame with 1013;
 * the close handshake (our close, twice; the peer's close echoed); drop and
 * references: on_close once, on_free once the last reference is gone and
 * the loop has run. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client_frame.h"
#include "codec/ws.h"
#include "core/clock.h"
#include "core/config.h"
#include "metrics/metrics.h"
#include "net/conn.h"
#include "net/loop.h"

#define DEADLINE_MS 5000
#define PEER_BUF (4 << 20)
#define MAX_TEXTS 16

struct fixture;

/* The application's struct that embeds the conn. */
struct tconn {
    struct conn conn;
    struct fixture *f;
};

struct fixture {
    uv_loop_t loop;
    struct config cfg;
    struct metrics_worker metrics;
    struct net_loop *net;
    int peer;              /* the test's end; -1 once closed */
    struct tconn *c;       /* NULL once freed */
    /* what the handler saw */
    char bytes[4096];
    size_t nbytes;
    char *texts[MAX_TEXTS];
    size_t text_len[MAX_TEXTS];
    int ntexts;
    int closes, frees;
    int state_at_close;    /* c->state when on_close ran */
    int ticks[CONN_CLOSING + 1]; /* on_tick calls, by c->state */
    /* how on_bytes behaves: take one byte per call and pause after it;
     * or answer each byte with a frame of answer_len bytes */
    int pause_each;
    size_t answer_len;
    int answers;
    /* what the peer read and has not parsed yet */
    uint8_t *in;
    size_t in_len, in_pos;
    int eof;
};

/* ---- The fake handler ---------------------------------------------------- */

static struct fixture *fixture_of(struct conn *c)
{
    return ((struct tconn *)c)->f;
}

static struct frame *numbered_frame(unsigned i, size_t len);

/* Takes bytes as the router takes requests: one by one while the conn is
 * not paused. */
static size_t on_bytes(struct conn *c, const char *buf, size_t len)
{
    struct fixture *f = fixture_of(c);
    size_t used = 0;
    while (used < len && !c->paused && c->state == CONN_HTTP) {
        size_t n = f->pause_each || f->answer_len ? 1 : len - used;
        assert_true(f->nbytes + n <= sizeof f->bytes);
        memcpy(f->bytes + f->nbytes, buf + used, n);
        f->nbytes += n;
        used += n;
        if (f->answer_len) {
            struct frame *out = numbered_frame((unsigned)f->answers++, f->answer_len);
            conn_enqueue(c, out);
            frame_unref(out);
        }
        if (f->pause_each)
            conn_pause(c);
    }
    return used;
}

static void on_text(struct conn *c, const char *text, size_t len)
{
    struct fixture *f = fixture_of(c);
    assert_true(f->ntexts < MAX_TEXTS);
    f->texts[f->ntexts] = malloc(len + 1);
    assert_non_null(f->texts[f->ntexts]);
    memcpy(f->texts[f->ntexts], text, len);
    f->texts[f->ntexts][len] = '\0';
    f->text_len[f->ntexts++] = len;
}

static void on_close(struct conn *c)
{
    struct fixture *f = fixture_of(c);
    f->closes++;
    f->state_at_close = c->state;
}

static void on_free(struct conn *c)
{
    struct fixture *f = fixture_of(c);
    assert_ptr_equal(c, &f->c->conn);
    f->frees++;
    free(f->c);
    f->c = NULL;
}

static void on_tick(struct conn *c, uint64_t now_ms)
{
    (void)now_ms;
    fixture_of(c)->ticks[c->state]++;
}

static const struct conn_handler http_handler = {
    .on_bytes = on_bytes,
    .on_tick = on_tick,
    .on_close = on_close,
    .on_free = on_free,
};

static const struct conn_handler ws_handler = {
    .on_tick = on_tick,
    .on_text = on_text,
    .on_close = on_close,
    .on_free = on_free,
};

/* ---- Running ------------------------------------------------------------- */

static void pump(struct fixture *f)
{
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

/* Runs the loop until *flag reaches want; fails past the deadline. */
static void pump_until(struct fixture *f, const int *flag, int want)
{
    uint64_t end = clock_mono_ms() + DEADLINE_MS;
    while (*flag < want) {
        if (clock_mono_ms() > end)
            fail_msg("waited %d ms for a count to reach %d (it is %d)", DEADLINE_MS, want, *flag);
        pump(f);
        if (*flag < want)
            poll(NULL, 0, 1);
    }
}

/* ---- The peer ------------------------------------------------------------ */

static void peer_write(struct fixture *f, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    uint64_t end = clock_mono_ms() + DEADLINE_MS;
    while (len) {
        ssize_t n = send(f->peer, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        assert_true(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR));
        if (clock_mono_ms() > end)
            fail_msg("the conn does not read");
        pump(f);
    }
}

static void peer_send_frame(struct fixture *f, uint8_t op, const void *payload, size_t len)
{
    uint8_t *buf = malloc(len + 14);
    assert_non_null(buf);
    peer_write(f, buf, client_frame(buf, op, payload, len));
    free(buf);
}

static void peer_send_text(struct fixture *f, const char *text)
{
    peer_send_frame(f, WS_OP_TEXT, text, strlen(text));
}

/* Reads what the socket has now into the peer buffer (at most max bytes);
 * returns how many, 0 at end of stream or when nothing is there. */
static size_t peer_recv(struct fixture *f, size_t max)
{
    if (f->in_pos == f->in_len)
        f->in_pos = f->in_len = 0;
    if (f->in_len + max > PEER_BUF)
        max = PEER_BUF - f->in_len;
    assert_true(max > 0);
    ssize_t n = recv(f->peer, f->in + f->in_len, max, MSG_DONTWAIT);
    if (n == 0) {
        f->eof = 1;
        return 0;
    }
    if (n < 0) {
        assert_true(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
        return 0;
    }
    f->in_len += (size_t)n;
    return (size_t)n;
}

struct frame_in {
    int fin;
    uint8_t op;
    const uint8_t *payload;  /* into the peer buffer: valid until the next read */
    size_t len;
};

/* Parses one server frame (unmasked) at buf; returns its size, or 0 when
 * buf does not hold all of it yet. */
static size_t frame_parse(const uint8_t *buf, size_t n, struct frame_in *fr)
{
    if (n < 2)
        return 0;
    assert_int_equal(buf[1] & 0x80, 0); /* a server never masks */
    assert_int_equal(buf[0] & 0x70, 0); /* no reserved bits */
    size_t len = buf[1] & 0x7F, h = 2;
    if (len == 126) {
        if (n < 4)
            return 0;
        len = (size_t)buf[2] << 8 | buf[3];
        h = 4;
    } else if (len == 127) {
        if (n < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | buf[2 + i];
        h = 10;
    }
    if (n - h < len)
        return 0;
    fr->fin = buf[0] >> 7;
    fr->op = buf[0] & 0x0F;
    fr->payload = buf + h;
    fr->len = len;
    return h + len;
}

/* The next frame the server sent; fails past the deadline or at the end
 * of the stream. */
static void peer_read_frame(struct fixture *f, struct frame_in *fr)
{
    uint64_t end = clock_mono_ms() + DEADLINE_MS;
    for (;;) {
        size_t used = frame_parse(f->in + f->in_pos, f->in_len - f->in_pos, fr);
        if (used) {
            f->in_pos += used;
            return;
        }
        if (f->in_pos) {
            /* Keep the partial frame at the start of the buffer. */
            memmove(f->in, f->in + f->in_pos, f->in_len - f->in_pos);
            f->in_len -= f->in_pos;
            f->in_pos = 0;
        }
        pump(f);
        if (peer_recv(f, PEER_BUF - f->in_len))
            continue;
        if (f->eof)
            fail_msg("end of stream while waiting for a frame (%zu bytes pending)", f->in_len);
        if (clock_mono_ms() > end)
            fail_msg("no frame within %d ms", DEADLINE_MS);
        poll(NULL, 0, 1);
    }
}

/* Reads until the server closes its side; fails past the deadline. */
static void peer_read_eof(struct fixture *f)
{
    uint64_t end = clock_mono_ms() + DEADLINE_MS;
    assert_int_equal(f->in_len - f->in_pos, 0);
    while (!f->eof) {
        pump(f);
        if (peer_recv(f, 4096))
            fail_msg("bytes after the close frame: %zu", f->in_len);
        if (clock_mono_ms() > end)
            fail_msg("the server did not end the stream within %d ms", DEADLINE_MS);
        poll(NULL, 0, 1);
    }
}

static void peer_close(struct fixture *f)
{
    if (f->peer >= 0)
        close(f->peer);
    f->peer = -1;
}

static void assert_close_frame(const struct frame_in *fr, uint16_t code, const char *reason)
{
    assert_int_equal(fr->op, WS_OP_CLOSE);
    assert_int_equal(fr->fin, 1);
    assert_true(fr->len >= 2);
    assert_int_equal((fr->payload[0] << 8) | fr->payload[1], code);
    assert_int_equal(fr->len - 2, strlen(reason));
    assert_memory_equal(fr->payload + 2, reason, fr->len - 2);
}

/* ---- Setup --------------------------------------------------------------- */

static int open_conn(struct fixture *f, int sndbuf, int rcvbuf)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    if (sndbuf)
        assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf), 0);
    if (rcvbuf)
        assert_int_equal(setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), 0);
    assert_int_equal(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
    f->peer = sv[1];
    f->c = calloc(1, sizeof *f->c);
    assert_non_null(f->c);
    f->c->f = f;
    f->c->conn.handler = &http_handler;
    return conn_open(f->net, sv[0], &f->c->conn);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->peer = -1;
    f->in = malloc(PEER_BUF);
    assert_non_null(f->in);
    f->cfg.send_queue_limit = 16 << 20;
    f->cfg.heartbeat = 30;
    f->cfg.max_message = 1 << 17;
    assert_int_equal(uv_loop_init(&f->loop), 0);
    f->net = calloc(1, sizeof *f->net);
    assert_non_null(f->net);
    assert_int_equal(net_loop_init(f->net, &f->loop, 0, &f->cfg, &f->metrics), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f->c) {
        conn_drop(&f->c->conn);
        pump_until(f, &f->frees, 1);
    }
    assert_null(f->net->conns);
    net_loop_close(f->net);
    for (int i = 0; i < 100 && uv_run(&f->loop, UV_RUN_NOWAIT); i++)
        ;
    assert_int_equal(uv_loop_close(&f->loop), 0);
    /* Every queued byte was written or released. */
    assert_int_equal(atomic_load(&f->metrics.queued_bytes), 0);
    peer_close(f);
    for (int i = 0; i < f->ntexts; i++)
        free(f->texts[i]);
    free(f->net);
    free(f->in);
    free(f);
    return 0;
}

static void upgrade(struct fixture *f)
{
    conn_upgrade(&f->c->conn, &ws_handler, f->cfg.max_message);
    assert_int_equal(f->c->conn.state, CONN_WS);
}

/* A text frame whose payload is "<i>:" (when len leaves room for it) then
 * filler that depends on i up to len bytes, so that each frame of a run is
 * told apart and checked whole. */
static size_t number_prefix(char *out, unsigned i, size_t len)
{
    char prefix[16];
    int n = snprintf(prefix, sizeof prefix, "%u:", i);
    if ((size_t)n > len)
        return 0;
    memcpy(out, prefix, (size_t)n);
    return (size_t)n;
}

static struct frame *numbered_frame(unsigned i, size_t len)
{
    char *payload = malloc(len + 16);
    assert_non_null(payload);
    size_t n = number_prefix(payload, i, len);
    for (size_t k = n; k < len; k++)
        payload[k] = (char)('a' + (i + k) % 26);
    struct frame *fr = ws_frame_create(WS_OP_TEXT, payload, len);
    assert_non_null(fr);
    free(payload);
    return fr;
}

static void assert_numbered(const struct frame_in *fr, unsigned i, size_t len)
{
    char prefix[16];
    size_t n = number_prefix(prefix, i, len);
    assert_int_equal(fr->op, WS_OP_TEXT);
    assert_int_equal(fr->fin, 1);
    if (fr->len != len || memcmp(fr->payload, prefix, n))
        fail_msg("expected frame %u of %zu bytes, got %zu bytes starting %.*s", i, len, fr->len,
                 (int)(fr->len < 12 ? fr->len : 12), (const char *)fr->payload);
    for (size_t k = n; k < len; k++)
        if (fr->payload[k] != (uint8_t)('a' + (i + k) % 26))
            fail_msg("frame %u: byte %zu is wrong", i, k);
}

/* ---- HTTP phase ---------------------------------------------------------- */

static void test_conn_bytes_read_reach_on_bytes(void **state)
{
    struct fixture *f = *state;
    const char *req = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    assert_int_equal(open_conn(f, 0, 0), 0);
    assert_int_equal(f->c->conn.state, CONN_HTTP);
    peer_write(f, req, 10);
    peer_write(f, req + 10, strlen(req) - 10);
    uint64_t end = clock_mono_ms() + DEADLINE_MS;
    while (f->nbytes < strlen(req) && clock_mono_ms() < end)
        pump(f);
    assert_int_equal(f->nbytes, strlen(req));
    assert_memory_equal(f->bytes, req, f->nbytes);
    assert_int_equal(f->closes, 0);
}

static void test_conn_receive_hands_held_bytes_to_current_phase(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(open_conn(f, 0, 0), 0);
    conn_receive(&f->c->conn, "held", 4);
    assert_int_equal(f->nbytes, 4);
    assert_memory_equal(f->bytes, "held", 4);
    upgrade(f);
    uint8_t buf[64];
    size_t n = client_frame(buf, WS_OP_TEXT, "late", 4);
    conn_receive(&f->c->conn, (const char *)buf, n);
    assert_int_equal(f->ntexts, 1);
    assert_string_equal(f->texts[0], "late");
}

static void test_conn_paused_keeps_input_until_resumed(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(open_conn(f, 0, 0), 0);
    f->pause_each = 1;
    peer_write(f, "abcdef", 6);
    uint64_t end = clock_mono_ms() + DEADLINE_MS;
    while (f->nbytes < 1 && clock_mono_ms() < end)
        pump(f);
    assert_int_equal(f->nbytes, 1);
    assert_int_equal(f->c->conn.paused, CONN_PAUSED_BY_APP);
    /* More bytes wait in the socket: nothing reaches the handler. */
    peer_write(f, "gh", 2);
    for (int i = 0; i < 20; i++) {
        pump(f);
        poll(NULL, 0, 1);
    }
    assert_int_equal(f->nbytes, 1);
    /* Resumed: the bytes kept come first, one per resume, then the
     * socket's. */
    conn_resume(&f->c->conn);
    assert_int_equal(f->nbytes, 2);
    f->pause_each = 0;
    conn_resume(&f->c->conn);
    assert_true(f->nbytes >= 6);
    end = clock_mono_ms() + DEADLINE_MS;
    while (f->nbytes < 8 && clock_mono_ms() < end)
        pump(f);
    assert_int_equal(f->nbytes, 8);
    assert_memory_equal(f->bytes, "abcdefgh", 8);
    assert_int_equal(f->c->conn.paused, 0);
}

/* Pipelined requests from a peer that does not read: the answers stop
 * being made once the queue is over the limit, and go on as it drains. */
static void test_conn_http_output_over_limit_pauses_input(void **state)
{
    struct fixture *f = *state;
    enum { REQUESTS = 200, ANSWER = 1000 };
    char requests[REQUESTS];

    f->cfg.send_queue_limit = 8 * 1024;
    assert_int_equal(open_conn(f, 4096, 4096), 0);
    f->answer_len = ANSWER;
    memset(requests, 'r', sizeof requests);
    peer_write(f, requests, sizeof requests);
    for (int i = 0; i < 50; i++) {
        pump(f);
        poll(NULL, 0, 1);
    }
    /* The peer reads nothing: the answers made are what the socket's
     * buffers took plus at most the limit (and the one that passed it). */
    assert_true(f->answers < REQUESTS);
    assert_true(f->c->conn.paused & CONN_PAUSED_BY_OUTPUT);
    assert_true(outq_cost(&f->c->conn.out) <= f->cfg.send_queue_limit + conn_frame_cost(&(struct frame){.len = ANSWER}));
    /* The peer reads: every answer arrives, in order. */
    struct frame_in fr;
    for (unsigned i = 0; i < REQUESTS; i++) {
        peer_read_frame(f, &fr);
        assert_numbered(&fr, i, ANSWER);
    }
    assert_int_equal(f->answers, REQUESTS);
    assert_int_equal(f->c->conn.paused, 0);
}

/* An upgrade whose 101 came behind answers over the limit: the WebSocket
 * phase does not inherit the HTTP phase's pause (its limit closes with
 * 1013 instead), and frames are read. */
static void test_conn_upgrade_ends_the_output_pause(void **state)
{
    struct fixture *f = *state;

    f->cfg.send_queue_limit = 1024;
    assert_int_equal(open_conn(f, 0, 0), 0);
    struct frame *big = numbered_frame(0, 2000);
    conn_enqueue(&f->c->conn, big);
    frame_unref(big);
    assert_int_equal(f->c->conn.paused, CONN_PAUSED_BY_OUTPUT);
    upgrade(f);
    assert_int_equal(f->c->conn.paused, 0);
    peer_send_text(f, "after");
    uint64_t end = clock_mono_ms() + DEADLINE_MS;
    while (f->ntexts < 1 && clock_mono_ms() < end)
        pump(f);
    assert_int_equal(f->ntexts, 1);
    assert_string_equal(f->texts[0], "after");
}

/* ---- WebSocket input ----------------------------------------------------- */

static void test_conn_masked_text_frame_reaches_on_text_after_upgrade(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(open_conn(f, 0, 0), 0);
    upgrade(f);
    peer_send_text(f, "{\"type\":\"ping\"}");
    pump_until(f, &f->ntexts, 1);
    assert_string_equal(f->texts[0], "{\"type\":\"ping\"}");
    assert_int_equal(f->nbytes, 0);

    /* Split anywhere, and two in one write. */
    uint8_t buf[256];
    size_t n = client_frame(buf, WS_OP_TEXT, "second", 6);
    n += client_frame(buf + n, WS_OP_TEXT, "third", 5);
    for (size_t i = 0; i < n; i++) {
        peer_write(f, buf + i, 1);
        pump(f);
    }
    pump_until(f, &f->ntexts, 3);
    assert_string_equal(f->texts[1], "second");
    assert_string_equal(f->texts[2], "third");
    /* A message larger than one read buffer. */
    size_t big_len = NET_READ_BUF + 1000;
    char *big = malloc(big_len);
    assert_non_null(big);
    memset(big, 'x', big_len);
    peer_send_frame(f, WS_OP_TEXT, big, big_len);
    pump_until(f, &f->ntexts, 4);
    assert_int_equal(f->text_len[3], big_len);
    free(big);
    assert_int_equal(f->closes, 0);
}

static void test_conn_peer_ping_is_answered_with_pong(void **state)
{
    struct fixture *f = *state;
    struct frame_in fr;

    assert_int_equal(open_conn(f, 0, 0), 0);
    upgrade(f);
    peer_send_frame(f, WS_OP_PING, "abc", 3);
    peer_read_frame(f, &fr);
    assert_int_equal(fr.op, WS_OP_PONG);
    assert_int_equal(fr.len, 3);
    assert_memory_equal(fr.payload, "abc", 3);
}

static void test_conn_unmasked_frame_closes_with_1002(void **state)
{
    struct fixture *f = *state;
    struct frame_in fr;
    const uint8_t unmasked[] = {0x81, 0x02, 'h', 'i'};

    assert_int_equal(open_conn(f, 0, 0), 0);
    upgrade(f);
    peer_write(f, unmasked, sizeof unmasked);
    peer_read_frame(f, &fr);
    assert_int_equal(fr.op, WS_OP_CLOSE);
    assert_int_equal((fr.payload[0] << 8) | fr.payload[1], WS_CLOSE_PROTOCOL);
    assert_int_equal(f->closes, 1);
    assert_int_equal(f->ntexts, 0);
    peer_read_eof(f);
}

/* ---- Output -------------------------------------------------------------- */

static void test_conn_enqueued_frames_arrive_intact_and_in_order(void **state)
{
    struct fixture *f = *state;
    struct frame_in fr;
    /* Lengths across the three header forms and more frames than the
     * inline ring holds, so that it grows. */
    const size_t lens[] = {1, 125, 126, 200, 65535, 65536, 70000, 3, 5, 1000, 4, 17};
    const unsigned n = sizeof lens / sizeof lens[0];

    assert_int_equal(open_conn(f, 0, 0), 0);
    upgrade(f);
    for (unsigned i = 0; i < n; i++) {
        struct frame *out = numbered_frame(i, lens[i]);
        conn_enqueue(&f->c->conn, out);
        frame_unref(out);
    }
    conn_send_text(&f->c->conn, "last", 4);
    assert_true(f->c->conn.out.count > OUTQ_INLINE);
    for (unsigned i = 0; i < n; i++) {
        peer_read_frame(f, &fr);
        assert_numbered(&fr, i, lens[i]);
    }
    peer_read_frame(f, &fr);
    assert_int_equal(fr.op, WS_OP_TEXT);
    assert_int_equal(fr.len, 4);
    assert_memory_equal(fr.payload, "last", 4);
    assert_int_equal(f->c->conn.out.bytes, 0);
    assert_int_equal(f->c->conn.out.count, 0);
}

static void test_conn_one_frame_shared_by_queue_twice_arrives_twice(void **state)
{
    struct fixture *f = *state;
    struct frame_in fr;

    assert_int_equal(open_conn(f, 0, 0), 0);
    upgrade(f);
    struct frame *out = numbered_frame(7, 50);
    conn_enqueue(&f->c->conn, out);
    conn_enqueue(&f->c->conn, out);
    assert_int_equal(out->refs, 3);
    frame_unref(out);
    peer_read_frame(f, &fr);
    assert_numbered(&fr, 7, 50);
    peer_read_frame(f, &fr);
    assert_numbered(&fr, 7, 50);
}

static void test_conn_partial_writes_deliver_every_byte_once_in_order(void **state)
{
    struct fixture *f = *state;
    const unsigned first = 300, second = 100;
    const size_t len = 1001;  /* not a divisor of anything the socket takes */
    struct frame_in fr;

    assert_int_equal(open_conn(f, 4096, 4096), 0);
    upgrade(f);
    for (unsigned i = 0; i < first; i++) {
        struct frame *out = numbered_frame(i, len);
        conn_enqueue(&f->c->conn, out);
        frame_unref(out);
    }
    pump(f);
    /* The socket took part of it; the rest waits for it to be writable. */
    assert_true(f->c->conn.out.bytes > 0);
    assert_true(f->c->conn.out.bytes < first * (len + 4));
    assert_true(f->c->conn.want_write);

    /* Read slowly, in pieces that end mid-frame; queue more meanwhile. */
    uint64_t end = clock_mono_ms() + 10 * DEADLINE_MS;
    unsigned next = 0, queued_second = 0;
    size_t total = (size_t)(first + second) * (len + 4), got = 0;
    while (got < total) {
        if (clock_mono_ms() > end)
            fail_msg("read %zu of %zu bytes", got, total);
        pump(f);
        size_t n = peer_recv(f, 777);
        got += n;
        while (frame_parse(f->in + f->in_pos, f->in_len - f->in_pos, &fr)) {
            f->in_pos += frame_parse(f->in + f->in_pos, f->in_len - f->in_pos, &fr);
            assert_numbered(&fr, next, len);
            next++;
        }
        if (f->in_pos) {
            memmove(f->in, f->in + f->in_pos, f->in_len - f->in_pos);
            f->in_len -= f->in_pos;
            f->in_pos = 0;
        }
        if (!queued_second && got > total / 4) {
            assert_true(f->c->conn.out.bytes > 0); /* still writing the first run */
            for (unsigned i = first; i < first + second; i++) {
                struct frame *out = numbered_frame(i, len);
                conn_enqueue(&f->c->conn, out);
                frame_unref(out);
            }
            queued_second = 1;
        }
        if (!n)
            poll(NULL, 0, 1);
    }
    assert_int_equal(next, first + second);
    assert_int_equal(f->in_len, 0);
    pump(f);
    assert_int_equal(f->c->conn.out.bytes, 0);
    assert_int_equal(f->c->conn.out.count, 0);
    assert_false(f->c->conn.want_write);
    assert_int_equal(f->c->conn.polled, EPOLLIN); /* writability no longer watched */
    assert_int_equal(atomic_load(&f->metrics.bytes_out), total);
    assert_int_equal(f->closes, 0);
}

/* ---- The send queue limit ------------------------------------------------ */

static void test_conn_overflow_closes_with_1013_after_what_was_on_its_way(void **state)
{
    struct fixture *f = *state;
    const size_t len = 1000;
    struct frame_in fr;

    f->cfg.send_queue_limit = 64 * 1024;
    assert_int_equal(open_conn(f, 4096, 4096), 0);
    upgrade(f);
    /* The peer does not read. Frames go out in bursts with the loop
     * running between them, so that a uv_write is in flight. */
    unsigned queued = 0;
    while (f->c->conn.state == CONN_WS && queued < 2000) {
        struct frame *out = numbered_frame(queued++, len);
        conn_enqueue(&f->c->conn, out);
        frame_unref(out);
        if (queued % 16 == 0)
            pump(f);
    }
    assert_int_equal(f->c->conn.state, CONN_CLOSING);
    assert_int_equal(f->closes, 1);
    assert_int_equal(f->state_at_close, CONN_CLOSING);
    assert_int_equal(atomic_load(&f->metrics.slow_readers), 1);
    assert_int_equal(atomic_load(&f->metrics.closed[METRICS_CLOSE_1013]), 1);
    assert_true(f->c->conn.out.bytes <= f->cfg.send_queue_limit);

    /* Closing: more output is dropped, and a second close changes nothing. */
    size_t bytes = f->c->conn.out.bytes;
    struct frame *more = numbered_frame(99999, len);
    conn_enqueue(&f->c->conn, more);
    frame_unref(more);
    conn_close(&f->c->conn, WS_CLOSE_NORMAL, "again");
    assert_int_equal(f->c->conn.out.bytes, bytes);
    assert_int_equal(f->closes, 1);

    /* The peer now reads: whole frames in order, then the close frame. */
    unsigned next = 0;
    for (;;) {
        peer_read_frame(f, &fr);
        if (fr.op == WS_OP_CLOSE)
            break;
        assert_numbered(&fr, next, len);
        next++;
    }
    assert_close_frame(&fr, WS_CLOSE_TRY_AGAIN, "send queue over limit");
    assert_true(next > 0);
    assert_true(next < queued);
    peer_read_eof(f);
    assert_int_equal(f->frees, 0); /* the conn lingers for the peer's close */

    peer_close(f);
    pump_until(f, &f->frees, 1);
    assert_int_equal(f->closes, 1);
}

/* Tiny frames count what they hold (allocation and ring slot), not their
 * two bytes: a flood of pongs to a peer that does not read stops at about
 * the limit in memory. */
static void test_conn_queue_counts_what_tiny_frames_cost(void **state)
{
    struct fixture *f = *state;

    f->cfg.send_queue_limit = 64 * 1024;
    assert_int_equal(open_conn(f, 4096, 4096), 0);
    upgrade(f);
    unsigned queued = 0;
    while (f->c->conn.state == CONN_WS && queued < 100000) {
        struct frame *pong = ws_frame_create(WS_OP_PONG, NULL, 0);
        assert_non_null(pong);
        conn_enqueue(&f->c->conn, pong);
        frame_unref(pong);
        queued++;
    }
    assert_int_equal(f->c->conn.state, CONN_CLOSING);
    assert_true(conn_frame_cost(&(struct frame){.len = 2}) >= 40);
    /* Counted by payload, 32,768 pongs would have fit. */
    assert_true(queued <= f->cfg.send_queue_limit / conn_frame_cost(&(struct frame){.len = 2}) + 1);
    assert_true(outq_cost(&f->c->conn.out) <= f->cfg.send_queue_limit + conn_frame_cost(&(struct frame){.len = 125}));
}

static void test_conn_single_frame_over_limit_closes_with_1013(void **state)
{
    struct fixture *f = *state;
    struct frame_in fr;

    f->cfg.send_queue_limit = 1000;
    assert_int_equal(open_conn(f, 0, 0), 0);
    upgrade(f);
    struct frame *out = numbered_frame(0, 2000);
    conn_enqueue(&f->c->conn, out);
    frame_unref(out);
    assert_int_equal(f->closes, 1);
    peer_read_frame(f, &fr);
    assert_close_frame(&fr, WS_CLOSE_TRY_AGAIN, "send queue over limit");
    peer_read_eof(f);
}

/* ---- Closing ------------------------------------------------------------- */

static void test_conn_close_twice_sends_one_close_frame(void **state)
{
    struct fixture *f = *state;
    struct frame_in fr;

    assert_int_equal(open_conn(f, 0, 0), 0);
    upgrade(f);
    conn_send_text(&f->c->conn, "before", 6);
    conn_close(&f->c->conn, WS_CLOSE_NORMAL, "bye");
    assert_int_equal(f->closes, 1);
    assert_false(conn_is_open(&f->c->conn));
    conn_close(&f->c->conn, WS_CLOSE_GOING_AWAY, "again");
    conn_send_text(&f->c->conn, "after", 5);
    assert_int_equal(f->closes, 1);
    assert_int_equal(atomic_load(&f->metrics.closed[METRICS_CLOSE_1000]), 1);
    assert_int_equal(atomic_load(&f->metrics.closed[METRICS_CLOSE_1001]), 0);

    peer_read_frame(f, &fr);
    assert_int_equal(fr.op, WS_OP_TEXT);
    assert_memory_equal(fr.payload, "before", 6);
    peer_read_frame(f, &fr);
    assert_close_frame(&fr, WS_CLOSE_NORMAL, "bye");
    peer_read_eof(f);

    /* Input after our close is read and dropped. */
    peer_send_text(f, "ignored");
    peer_send_frame(f, WS_OP_CLOSE, "\x03\xe8", 2);
    for (int i = 0; i < 20; i++)
        pump(f);
    assert_int_equal(f->ntexts, 0);
    peer_close(f);
    pump_until(f, &f->frees, 1);
    assert_int_equal(f->closes, 1);
}

static void test_conn_peer_close_frame_is_echoed(void **state)
{
    struct fixture *f = *state;
    struct frame_in fr;
    const uint8_t payload[] = {0x0F, 0xA0, 'b', 'y', 'e'}; /* 4000 "bye" */

    assert_int_equal(open_conn(f, 0, 0), 0);
    upgrade(f);
    peer_send_frame(f, WS_OP_CLOSE, payload, sizeof payload);
    peer_read_frame(f, &fr);
    assert_close_frame(&fr, 4000, "");
    assert_int_equal(f->closes, 1);
    peer_read_eof(f);
    peer_close(f);
    pump_until(f, &f->frees, 1);
}

static void test_conn_peer_empty_close_is_answered_empty(void **state)
{
    struct fixture *f = *state;
    struct frame_in fr;

    assert_int_equal(open_conn(f, 0, 0), 0);
    upgrade(f);
    peer_send_frame(f, WS_OP_CLOSE, NULL, 0);
    peer_read_frame(f, &fr);
    assert_int_equal(fr.op, WS_OP_CLOSE);
    assert_int_equal(fr.len, 0);
    assert_int_equal(atomic_load(&f->metrics.closed[METRICS_CLOSE_1005]), 1);
    peer_read_eof(f);
}

static void test_conn_http_close_ends_stream_after_queued_bytes(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(open_conn(f, 0, 0), 0);
    /* What the router queues in the HTTP phase: raw bytes in a frame's
     * place (here a text frame, read back as one). */
    conn_send_text(&f->c->conn, "response", 8);
    conn_close(&f->c->conn, 0, NULL);
    assert_int_equal(f->closes, 1);
    struct frame_in fr;
    peer_read_frame(f, &fr);
    assert_memory_equal(fr.payload, "response", 8);
    peer_read_eof(f);
}

/* ---- Dropping and references --------------------------------------------- */

static void test_conn_drop_frees_once_after_loop_runs(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(open_conn(f, 0, 0), 0);
    upgrade(f);
    conn_send_text(&f->c->conn, "never sent", 10);
    conn_drop(&f->c->conn);
    conn_drop(&f->c->conn);
    conn_close(&f->c->conn, WS_CLOSE_NORMAL, "");
    assert_int_equal(f->closes, 1);
    assert_int_equal(f->frees, 0); /* libuv closes the handle first */
    assert_int_equal(atomic_load(&f->metrics.closed[METRICS_CLOSE_1006]), 1);
    pump_until(f, &f->frees, 1);
    assert_int_equal(f->closes, 1);
}

static void test_conn_reference_keeps_conn_until_unref(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(open_conn(f, 0, 0), 0);
    upgrade(f);
    struct conn *c = &f->c->conn;
    conn_ref(c); /* a reply on its way */
    conn_drop(c);
    for (int i = 0; i < 20; i++)
        pump(f);
    assert_int_equal(f->frees, 0);
    assert_ptr_equal(f->net->conns, c); /* still listed until freed */
    conn_unref(c);
    assert_int_equal(f->frees, 1);
    assert_null(f->net->conns);
}

static void test_conn_peer_hangup_drops_conn(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(open_conn(f, 0, 0), 0);
    upgrade(f);
    peer_close(f);
    pump_until(f, &f->frees, 1);
    assert_int_equal(f->closes, 1);
}

/* The handler's tick runs while the connection is open, in both phases
 * (the router's timeout, the client's token expiry), and no longer once
 * it is closing. */
static void test_conn_tick_reaches_the_handler_while_open(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(open_conn(f, 0, 0), 0);
    uint64_t now = uv_now(&f->loop);
    conn_tick(&f->c->conn, now);
    assert_int_equal(f->ticks[CONN_HTTP], 1);
    upgrade(f);
    conn_tick(&f->c->conn, now);
    conn_tick(&f->c->conn, now);
    assert_int_equal(f->ticks[CONN_WS], 2);
    conn_close(&f->c->conn, WS_CLOSE_POLICY, "token expired");
    conn_tick(&f->c->conn, now);
    assert_int_equal(f->ticks[CONN_CLOSING], 0);
    assert_int_equal(f->ticks[CONN_WS] + f->ticks[CONN_HTTP], 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        T(test_conn_bytes_read_reach_on_bytes),
        T(test_conn_receive_hands_held_bytes_to_current_phase),
        T(test_conn_paused_keeps_input_until_resumed),
        T(test_conn_http_output_over_limit_pauses_input),
        T(test_conn_upgrade_ends_the_output_pause),
        T(test_conn_masked_text_frame_reaches_on_text_after_upgrade),
        T(test_conn_peer_ping_is_answered_with_pong),
        T(test_conn_unmasked_frame_closes_with_1002),
        T(test_conn_enqueued_frames_arrive_intact_and_in_order),
        T(test_conn_one_frame_shared_by_queue_twice_arrives_twice),
        T(test_conn_partial_writes_deliver_every_byte_once_in_order),
        T(test_conn_overflow_closes_with_1013_after_what_was_on_its_way),
        T(test_conn_queue_counts_what_tiny_frames_cost),
        T(test_conn_single_frame_over_limit_closes_with_1013),
        T(test_conn_close_twice_sends_one_close_frame),
        T(test_conn_peer_close_frame_is_echoed),
        T(test_conn_peer_empty_close_is_answered_empty),
        T(test_conn_http_close_ends_stream_after_queued_bytes),
        T(test_conn_drop_frees_once_after_loop_runs),
        T(test_conn_reference_keeps_conn_until_unref),
        T(test_conn_peer_hangup_drops_conn),
        T(test_conn_tick_reaches_the_handler_while_open),
#undef T
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
