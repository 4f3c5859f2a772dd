/* metrics.c - sums of the per-worker and bus-thread counters, the busiest
 * rooms' rates over fixed windows, and their two views: Prometheus text and
 * the JSON of /api/stats. The counters are written by their owning thread
 * only (metrics.h); this file reads them from whichever worker serves the
 * request. The last complete window of room rates is the one shared,
 * locked part: the bus thread writes it once per window, readers copy it. */
#include "metrics/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"

#define STRINGIFY(x) #x
#define TEXT_OF(x) STRINGIFY(x)
#define TOP_ROOMS_TEXT TEXT_OF(METRICS_TOP_ROOMS)

static const uint16_t close_codes[METRICS_CLOSE_OTHER] = {
    1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1011, 1013,
};

static const char *const tls_failure_reasons[METRICS_TLS_FAILURE_COUNT] = {
    [METRICS_TLS_ERROR] = "error",
    [METRICS_TLS_TIMEOUT] = "timeout",
    [METRICS_TLS_PLAINTEXT_HTTP] = "plaintext_http",
    [METRICS_TLS_CLOSED] = "closed",
};

static const char *const refused_reasons[METRICS_REFUSED_COUNT] = {
    [METRICS_REFUSED_FD_LIMIT] = "fd_limit",
    [METRICS_REFUSED_MAX_CONNECTIONS] = "max_connections",
    [METRICS_REFUSED_PER_IP] = "per_ip",
    [METRICS_REFUSED_ORIGIN] = "origin",
};

static const char *const out_kinds[METRICS_OUT_COUNT] = {
    [METRICS_OUT_ROOM] = "room", [METRICS_OUT_USER] = "user", [METRICS_OUT_ALL] = "all", [METRICS_OUT_REPLY] = "reply",
};

void metrics_conn_closed(struct metrics_worker *m, uint16_t code)
{
    int i = 0;
    while (i < METRICS_CLOSE_OTHER && close_codes[i] != code)
        i++;
    metrics_add(&m->closed[i], 1);
}

/* ---- busiest rooms ------------------------------------------------------------ */

int metrics_bus_init(struct metrics_bus *mb)
{
    memset(mb, 0, sizeof *mb);
    mb->started_ms = clock_wall_ms();
    map_init(&mb->counts);
    return uv_mutex_init(&mb->lock);
}

void metrics_bus_close(struct metrics_bus *mb)
{
    map_free(&mb->counts);
    uv_mutex_destroy(&mb->lock);
}

void metrics_room_event(struct metrics_bus *mb, const char *room)
{
    size_t len = strlen(room);
    mb->window_total++;
    uintptr_t count = (uintptr_t)map_get(&mb->counts, room, len);
    /* Past the bound, rooms new in this window go uncounted: a busy room
     * shows up long before ten thousand quiet ones have. */
    if (count || mb->counts.count < METRICS_ROOMS_TRACKED)
        map_put(&mb->counts, room, len, (void *)(count + 1));
}

void metrics_bus_roll(struct metrics_bus *mb)
{
    struct metrics_room top[METRICS_TOP_ROOMS];
    size_t n = 0;
    const struct map_slot *slot;
    for (size_t i = 0; map_next(&mb->counts, &i, &slot);) {
        uint64_t count = (uintptr_t)slot->value;
        size_t at = n;
        while (at > 0 && top[at - 1].count < count)
            at--;
        if (at == METRICS_TOP_ROOMS)
            continue;
        size_t end = n < METRICS_TOP_ROOMS ? n : METRICS_TOP_ROOMS - 1;
        memmove(&top[at + 1], &top[at], sizeof top[0] * (end - at));
        snprintf(top[at].name, sizeof top[at].name, "%s", slot->key);
        top[at].count = count;
        if (n < METRICS_TOP_ROOMS)
            n++;
    }
    uv_mutex_lock(&mb->lock);
    memcpy(mb->last, top, sizeof top[0] * n);
    mb->nlast = n;
    mb->last_total = mb->window_total;
    uv_mutex_unlock(&mb->lock);
    map_free(&mb->counts);
    map_init(&mb->counts);
    mb->window_total = 0;
}

size_t metrics_busiest_rooms(struct metrics_bus *mb, struct metrics_room *top, uint64_t *total)
{
    uv_mutex_lock(&mb->lock);
    size_t n = mb->nlast;
    *total = mb->last_total;
    memcpy(top, mb->last, sizeof top[0] * n);
    uv_mutex_unlock(&mb->lock);
    return n;
}

/* The last complete window, copied out. */
struct rates {
    uint64_t total;
    size_t n;
    struct metrics_room top[METRICS_TOP_ROOMS];
};

static void rates_read(struct metrics_bus *mb, struct rates *r)
{
    r->n = metrics_busiest_rooms(mb, r->top, &r->total);
}

static double per_second(uint64_t count)
{
    return (double)count * 1000.0 / METRICS_RATE_WINDOW_MS;
}

/* ---- sums ------------------------------------------------------------------------ */

static uint64_t load(metrics_counter *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* Every worker's counters added up, or one worker's (a copy either way). */
struct totals {
    uint64_t opened, closed[METRICS_CLOSE_COUNT], closed_all, streams_opened, streams_closed;
    uint64_t http_requests;
    uint64_t in[METRICS_IN_MAX], in_all, out[METRICS_OUT_COUNT], out_all;
    uint64_t fanout_events[3], fanout_deliveries;
    uint64_t bytes_in, bytes_out, queued_bytes, slow_readers;
    uint64_t refused[METRICS_REFUSED_COUNT], refused_all, rate_limited;
    uint64_t deflate_conns, deflate_frames, deflate_bytes_in, deflate_bytes_out;
    uint64_t joins_local;
    uint64_t tls_handshakes, tls_failures[METRICS_TLS_FAILURE_COUNT];
};

static void totals_add(struct totals *t, struct metrics_worker *m)
{
    t->opened += load(&m->opened);
    t->streams_opened += load(&m->streams_opened);
    t->streams_closed += load(&m->streams_closed);
    for (int i = 0; i < METRICS_CLOSE_COUNT; i++) {
        uint64_t n = load(&m->closed[i]);
        t->closed[i] += n;
        t->closed_all += n;
    }
    t->http_requests += load(&m->http_requests);
    for (int i = 0; i < METRICS_IN_MAX; i++) {
        uint64_t n = load(&m->in[i]);
        t->in[i] += n;
        t->in_all += n;
    }
    for (int i = 0; i < METRICS_OUT_COUNT; i++) {
        uint64_t n = load(&m->out[i]);
        t->out[i] += n;
        t->out_all += n;
    }
    for (int i = 0; i < 3; i++)
        t->fanout_events[i] += load(&m->fanout_events[i]);
    t->fanout_deliveries += load(&m->fanout_deliveries);
    t->bytes_in += load(&m->bytes_in);
    t->bytes_out += load(&m->bytes_out);
    t->queued_bytes += load(&m->queued_bytes);
    t->slow_readers += load(&m->slow_readers);
    for (int i = 0; i < METRICS_REFUSED_COUNT; i++) {
        uint64_t n = load(&m->refused[i]);
        t->refused[i] += n;
        t->refused_all += n;
    }
    t->rate_limited += load(&m->rate_limited);
    t->deflate_conns += load(&m->deflate_conns);
    t->deflate_frames += load(&m->deflate_frames);
    t->deflate_bytes_in += load(&m->deflate_bytes_in);
    t->deflate_bytes_out += load(&m->deflate_bytes_out);
    t->joins_local += load(&m->joins_local);
    t->tls_handshakes += load(&m->tls_handshakes);
    for (int i = 0; i < METRICS_TLS_FAILURE_COUNT; i++)
        t->tls_failures[i] += load(&m->tls_failures[i]);
}

/* Connections open now. Opened is read after closed, so a connection that
 * opens and closes between the two loads cannot make this negative. */
static uint64_t open_now(const struct totals *t)
{
    return t->opened >= t->closed_all ? t->opened - t->closed_all : 0;
}

static uint64_t streams_now(const struct totals *t)
{
    return t->streams_opened >= t->streams_closed ? t->streams_opened - t->streams_closed : 0;
}

/* ---- Prometheus text ------------------------------------------------------------ */

static void family(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample(FILE *f, const char *name, uint64_t value)
{
    fprintf(f, "%s %llu\n", name, (unsigned long long)value);
}

/* One sample per label value: name{label="labels[i]"} values[i]. */
static void labelled_samples(FILE *f, const char *name, const char *label, const char *const *labels,
                             const uint64_t *values, int n)
{
    for (int i = 0; i < n; i++)
        fprintf(f, "%s{%s=\"%s\"} %llu\n", name, label, labels[i], (unsigned long long)values[i]);
}

/* A family of one unlabelled sample. */
static void one_sample(FILE *f, const char *name, const char *type, const char *help, uint64_t value)
{
    family(f, name, type, help);
    sample(f, name, value);
}

/* A label value with \, " and newline escaped. Room names cannot hold
 * them (names.h), but nothing here should rely on that. */
static void label_value(FILE *f, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            fputc('\\', f);
        if (*v == '\n')
            fputs("\\n", f);
        else
            fputc(*v, f);
    }
}

static void write_prometheus(FILE *f, const struct metrics_view *v)
{
    struct totals t = {0};
    for (int i = 0; i < v->nworkers; i++)
        totals_add(&t, v->workers[i]);
    struct metrics_bus *mb = v->bus;
    struct rates r;
    rates_read(mb, &r);

    family(f, "wsfan_build_info", "gauge", "Version and node id of this process.");
    fprintf(f, "wsfan_build_info{version=\"%s\",node=\"", WSFAN_VERSION);
    label_value(f, v->node_id);
    fprintf(f, "\",engine=\"%s\"} 1\n", v->engine);
    one_sample(f, "wsfan_uptime_seconds", "gauge", "Seconds since the process started.",
               (clock_wall_ms() - mb->started_ms) / 1000);

    one_sample(f, "wsfan_connections", "gauge", "WebSocket connections and server-sent event streams open now.",
               open_now(&t));
    one_sample(f, "wsfan_sse_streams", "gauge",
               "Server-sent event streams open now (counted in wsfan_connections too).",
               streams_now(&t));
    family(f, "wsfan_worker_connections", "gauge",
           "WebSocket connections and server-sent event streams open now, per worker thread.");
    for (int i = 0; i < v->nworkers; i++) {
        struct totals w = {0};
        totals_add(&w, v->workers[i]);
        fprintf(f, "wsfan_worker_connections{worker=\"%d\"} %llu\n", i, (unsigned long long)open_now(&w));
    }
    one_sample(f, "wsfan_connections_opened_total", "counter",
           "WebSocket connections (upgrades) and server-sent event streams opened.",
               t.opened);
    family(f, "wsfan_connections_closed_total", "counter",
           "WebSocket connections and server-sent event streams closed, by close code (1005: the peer sent none, "
           "1006: no close handshake; a stream counts the code a WebSocket would have been sent).");
    for (int i = 0; i < METRICS_CLOSE_COUNT; i++) {
        if (i < METRICS_CLOSE_OTHER)
            fprintf(f, "wsfan_connections_closed_total{code=\"%u\"} %llu\n", close_codes[i],
                    (unsigned long long)t.closed[i]);
        else
            fprintf(f, "wsfan_connections_closed_total{code=\"other\"} %llu\n", (unsigned long long)t.closed[i]);
    }
    one_sample(f, "wsfan_http_requests_total", "counter", "HTTP requests answered (upgrades included).",
               t.http_requests);

    family(f, "wsfan_messages_in_total", "counter", "Client commands received, by type.");
    labelled_samples(f, "wsfan_messages_in_total", "kind", v->in_kinds, t.in, v->n_in_kinds);
    family(f, "wsfan_messages_out_total", "counter",
           "Messages queued to clients: room, user and all fan-out per recipient, and replies.");
    labelled_samples(f, "wsfan_messages_out_total", "kind", out_kinds, t.out, METRICS_OUT_COUNT);
    family(f, "wsfan_fanout_events_total", "counter", "Bus events encoded once per worker and fanned out, by target.");
    for (int i = 0; i < 3; i++)
        fprintf(f, "wsfan_fanout_events_total{target=\"%s\"} %llu\n", out_kinds[i],
                (unsigned long long)t.fanout_events[i]);
    one_sample(f, "wsfan_fanout_deliveries_total", "counter", "Fanned-out events queued on a recipient connection.",
               t.fanout_deliveries);

    one_sample(f, "wsfan_received_bytes_total", "counter", "Bytes read from clients.",
               t.bytes_in);
    one_sample(f, "wsfan_sent_bytes_total", "counter", "Bytes written to clients.",
               t.bytes_out);
    one_sample(f, "wsfan_send_queue_bytes", "gauge", "Bytes waiting in connections' send queues.",
               t.queued_bytes);
    one_sample(f, "wsfan_slow_readers_closed_total", "counter",
               "Connections closed with 1013: send queue over the limit.",
               t.slow_readers);
    family(f, "wsfan_connections_refused_total", "counter",
           "Connections refused before they were served: fd_limit (out of file descriptors at accept), "
           "max_connections (503), per_ip (429), origin (403).");
    labelled_samples(f, "wsfan_connections_refused_total", "reason", refused_reasons, t.refused,
                     METRICS_REFUSED_COUNT);
    one_sample(f, "wsfan_commands_rate_limited_total", "counter", "Commands refused with rate_limited by --rate-limit.",
               t.rate_limited);
    one_sample(f, "wsfan_deflate_connections_total", "counter",
               "WebSocket upgrades that negotiated permessage-deflate.",
               t.deflate_conns);
    one_sample(f, "wsfan_deflate_frames_total", "counter",
           "Event frames compressed, once per worker and event, shared by its deflate recipients.",
               t.deflate_frames);
    one_sample(f, "wsfan_deflate_input_bytes_total", "counter", "Event text bytes compressed.",
               t.deflate_bytes_in);
    one_sample(f, "wsfan_deflate_output_bytes_total", "counter", "Bytes of the compressed frames, headers included.",
               t.deflate_bytes_out);
    one_sample(f, "wsfan_joins_local_total", "counter",
           "Joins answered by their worker, which followed the room already, without a bus round trip.",
               t.joins_local);
    one_sample(f, "wsfan_tls_handshakes_total", "counter", "TLS handshakes completed (0 without --tls-cert).",
               t.tls_handshakes);
    family(f, "wsfan_tls_handshake_failures_total", "counter",
           "TLS handshakes that did not complete: error (refused: version, ciphers, certificate, not TLS), "
           "timeout (--handshake-timeout), plaintext_http (a plain HTTP request, answered 400), closed (the "
           "client left).");
    labelled_samples(f, "wsfan_tls_handshake_failures_total", "reason", tls_failure_reasons, t.tls_failures,
                     METRICS_TLS_FAILURE_COUNT);

    one_sample(f, "wsfan_bus_up", "gauge", "1 while the bus (and the store) can serve, else 0.",
               v->ready(v->ready_arg) ? 1 : 0);
    one_sample(f, "wsfan_bus_reconnects_total", "counter", "Times the bus link came back after going down.",
               load(&mb->reconnects));
    one_sample(f, "wsfan_invalid_envelopes_total", "counter", "Bus payloads dropped as invalid.",
               load(&mb->invalid_envelopes));
    one_sample(f, "wsfan_store_errors_total", "counter", "History store operations that failed.",
               load(&mb->store_errors));
    one_sample(f, "wsfan_position_repairs_total", "counter",
           "Rooms whose deliveries fell behind their history and were filled from it.",
               load(&mb->position_repairs));

    family(f, "wsfan_room_messages_per_second", "gauge", "Room messages per second over the last complete window.");
    fprintf(f, "wsfan_room_messages_per_second %g\n", per_second(r.total));
    family(f, "wsfan_busiest_room_messages_per_second", "gauge",
           "Messages per second of the busiest rooms (at most " TOP_ROOMS_TEXT ") over the last complete window.");
    for (size_t i = 0; i < r.n; i++) {
        /* A tenant's room has a tenant label too. */
        size_t tenant = name_key_tenant_len(r.top[i].name);
        fputs("wsfan_busiest_room_messages_per_second{", f);
        if (tenant) {
            fputs("tenant=\"", f);
            fprintf(f, "%.*s", (int)tenant, r.top[i].name);
            fputs("\",", f);
        }
        fputs("room=\"", f);
        label_value(f, name_of_key(r.top[i].name));
        fprintf(f, "\"} %g\n", per_second(r.top[i].count));
    }
}

/* Runs write into a memory stream; the text is malloc'ed. */
static char *render(void (*write)(FILE *f, const struct metrics_view *v), const struct metrics_view *v,
                    size_t *len)
{
    char *text = NULL;
    FILE *f = open_memstream(&text, len);
    if (!f)
        return NULL;
    write(f, v);
    if (fclose(f)) {
        free(text);
        return NULL;
    }
    return text;
}

char *metrics_prometheus(const struct metrics_view *v, size_t *len)
{
    return render(write_prometheus, v, len);
}

/* ---- /api/stats ------------------------------------------------------------------ */

static void write_stats(FILE *f, const struct metrics_view *v)
{
    struct totals t = {0};
    struct metrics_bus *mb = v->bus;
    struct rates r;
    rates_read(mb, &r);
    fprintf(f, "{\"node\":\"%s\",\"version\":\"%s\",\"uptime_s\":%llu,\"workers\":[", v->node_id,
            WSFAN_VERSION, (unsigned long long)((clock_wall_ms() - mb->started_ms) / 1000));
    for (int i = 0; i < v->nworkers; i++) {
        struct totals w = {0};
        totals_add(&w, v->workers[i]);
        totals_add(&t, v->workers[i]);
        fprintf(f,
                "%s{\"worker\":%d,\"connections\":%llu,\"messages_in\":%llu,\"messages_out\":%llu,"
                "\"bytes_in\":%llu,\"bytes_out\":%llu,\"send_queue_bytes\":%llu}",
                i ? "," : "", i, (unsigned long long)open_now(&w), (unsigned long long)w.in_all,
                (unsigned long long)w.out_all, (unsigned long long)w.bytes_in, (unsigned long long)w.bytes_out,
                (unsigned long long)w.queued_bytes);
    }
    fprintf(f,
            "],\"connections\":%llu,\"sse_streams\":%llu,\"connections_opened\":%llu,\"http_requests\":%llu,\"messages_in\":%llu,"
            "\"messages_out\":%llu,\"fanout_deliveries\":%llu,\"bytes_in\":%llu,\"bytes_out\":%llu,"
            "\"send_queue_bytes\":%llu,\"slow_readers_closed\":%llu,\"connections_refused\":%llu,"
            "\"commands_rate_limited\":%llu,",
            (unsigned long long)open_now(&t), (unsigned long long)streams_now(&t), (unsigned long long)t.opened,
            (unsigned long long)t.http_requests,
            (unsigned long long)t.in_all, (unsigned long long)t.out_all, (unsigned long long)t.fanout_deliveries,
            (unsigned long long)t.bytes_in, (unsigned long long)t.bytes_out, (unsigned long long)t.queued_bytes,
            (unsigned long long)t.slow_readers, (unsigned long long)t.refused_all,
            (unsigned long long)t.rate_limited);
    fprintf(f, "\"rate_window_s\":%g,\"room_messages_per_s\":%g,\"busiest_rooms\":[",
            METRICS_RATE_WINDOW_MS / 1000.0, per_second(r.total));
    for (size_t i = 0; i < r.n; i++) {
        int tenant = (int)name_key_tenant_len(r.top[i].name);
        fprintf(f, "%s{\"room\":\"%s\",%s%.*s%s\"messages_per_s\":%g}", i ? "," : "", name_of_key(r.top[i].name),
                tenant ? "\"tenant\":\"" : "", tenant, r.top[i].name, tenant ? "\"," : "",
                per_second(r.top[i].count));
    }
    fprintf(f,
            "],\"bus\":{\"engine\":\"%s\",\"up\":%s,\"reconnects\":%llu,\"invalid_envelopes\":%llu,"
            "\"store_errors\":%llu,\"position_repairs\":%llu}}",
            v->engine, v->ready(v->ready_arg) ? "true" : "false", (unsigned long long)load(&mb->reconnects),
            (unsigned long long)load(&mb->invalid_envelopes), (unsigned long long)load(&mb->store_errors),
            (unsigned long long)load(&mb->position_repairs));
}

char *metrics_stats_json(const struct metrics_view *v, size_t *len)
{
    return render(write_stats, v, len);
}
