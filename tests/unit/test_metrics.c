/* test_metrics.c - the counters' arithmetic, the busiest rooms' windows
 * and the two exports (metrics/metrics.h). Windows are ended by calling
 * metrics_bus_roll, as the bus's timer does, not by sleeping. The exports
 * are rendered from a view filled in by hand: workers' counters summed,
 * the caller's names of the kinds of messages in, the ready hook. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "metrics/metrics.h"

static void test_metrics_close_codes_have_their_own_slot_or_other(void **state)
{
    (void)state;
    struct metrics_worker m = {0};
    metrics_conn_closed(&m, 1000);
    metrics_conn_closed(&m, 1013);
    metrics_conn_closed(&m, 1013);
    metrics_conn_closed(&m, 4000);
    assert_int_equal(m.closed[METRICS_CLOSE_1000], 1);
    assert_int_equal(m.closed[METRICS_CLOSE_1013], 2);
    assert_int_equal(m.closed[METRICS_CLOSE_OTHER], 1);
    assert_int_equal(m.closed[METRICS_CLOSE_1006], 0);
}

static void test_metrics_queued_gauge_goes_up_and_back_to_zero(void **state)
{
    (void)state;
    struct metrics_worker m = {0};
    metrics_queued(&m, 100);
    metrics_queued(&m, 50);
    assert_int_equal(m.queued_bytes, 150);
    metrics_queued(&m, -120);
    metrics_queued(&m, -30);
    assert_int_equal(m.queued_bytes, 0);
}

static void test_metrics_fanout_counts_events_deliveries_and_messages_out(void **state)
{
    (void)state;
    struct metrics_worker m = {0};
    metrics_fanout(&m, METRICS_OUT_ROOM, 3);
    metrics_fanout(&m, METRICS_OUT_ROOM, 2);
    assert_int_equal(m.fanout_events[METRICS_OUT_ROOM], 2);
    assert_int_equal(m.fanout_deliveries, 5);
    assert_int_equal(m.out[METRICS_OUT_ROOM], 5);
    /* each target its own events and messages out, one deliveries count */
    metrics_fanout(&m, METRICS_OUT_USER, 4);
    metrics_fanout(&m, METRICS_OUT_ALL, 7);
    assert_int_equal(m.fanout_events[METRICS_OUT_USER], 1);
    assert_int_equal(m.fanout_events[METRICS_OUT_ALL], 1);
    assert_int_equal(m.out[METRICS_OUT_USER], 4);
    assert_int_equal(m.out[METRICS_OUT_ALL], 7);
    assert_int_equal(m.out[METRICS_OUT_ROOM], 5);
    assert_int_equal(m.fanout_deliveries, 16);
    assert_int_equal(m.out[METRICS_OUT_REPLY], 0);
}

/* Ends the current window, as the bus's timer does every
 * METRICS_RATE_WINDOW_MS. */
static void end_window(struct metrics_bus *mb)
{
    metrics_bus_roll(mb);
}

static void test_metrics_busiest_rooms_are_the_top_of_the_last_window(void **state)
{
    (void)state;
    struct metrics_bus mb;
    assert_int_equal(metrics_bus_init(&mb), 0);
    char room[16];
    /* room i gets i + 1 events: r14 is the busiest. */
    for (int i = 0; i < 15; i++)
        for (int k = 0; k <= i; k++) {
            snprintf(room, sizeof room, "r%d", i);
            metrics_room_event(&mb, room);
        }
    struct metrics_room top[METRICS_TOP_ROOMS];
    uint64_t total;
    assert_int_equal(metrics_busiest_rooms(&mb, top, &total), 0); /* the window is not over */
    end_window(&mb);
    size_t n = metrics_busiest_rooms(&mb, top, &total);
    assert_int_equal(n, METRICS_TOP_ROOMS);
    assert_int_equal(total, 15 * 16 / 2);
    for (size_t i = 0; i < n; i++) {
        snprintf(room, sizeof room, "r%zu", 14 - i);
        assert_string_equal(top[i].name, room);
        assert_int_equal(top[i].count, 15 - i);
    }
    metrics_bus_close(&mb);
}

static void test_metrics_a_quiet_window_reads_as_no_traffic(void **state)
{
    (void)state;
    struct metrics_bus mb;
    assert_int_equal(metrics_bus_init(&mb), 0);
    metrics_room_event(&mb, "general");
    end_window(&mb);
    end_window(&mb); /* and a whole window without anything since */
    struct metrics_room top[METRICS_TOP_ROOMS];
    uint64_t total = 1;
    assert_int_equal(metrics_busiest_rooms(&mb, top, &total), 0);
    assert_int_equal(total, 0);
    metrics_bus_close(&mb);
}

static void test_metrics_rooms_past_the_bound_count_in_the_total_only(void **state)
{
    (void)state;
    struct metrics_bus mb;
    assert_int_equal(metrics_bus_init(&mb), 0);
    char room[32];
    for (int i = 0; i < METRICS_ROOMS_TRACKED + 5; i++) {
        snprintf(room, sizeof room, "quiet-%d", i);
        metrics_room_event(&mb, room);
    }
    assert_int_equal(mb.counts.count, METRICS_ROOMS_TRACKED);
    metrics_room_event(&mb, "quiet-0"); /* tracked rooms still count */
    end_window(&mb);
    struct metrics_room top[METRICS_TOP_ROOMS];
    uint64_t total;
    assert_int_equal(metrics_busiest_rooms(&mb, top, &total), METRICS_TOP_ROOMS);
    assert_int_equal(total, METRICS_ROOMS_TRACKED + 6);
    assert_string_equal(top[0].name, "quiet-0");
    assert_int_equal(top[0].count, 2);
    metrics_bus_close(&mb);
}

/* ---- exports ---------------------------------------------------------------- */

static const char *const in_kinds[] = {"join", "publish", "invalid"};

static int ready_calls;
static int ready_answer;

static int ready(void *arg)
{
    assert_string_equal((const char *)arg, "the bus");
    ready_calls++;
    return ready_answer;
}

/* Two workers with counters set by hand, and a bus with one complete
 * window: general 10 room events, r2 5. */
struct fixture {
    struct metrics_worker w[2];
    struct metrics_worker *workers[2];
    struct metrics_bus mb;
    struct metrics_view view;
};

static void fixture_init(struct fixture *f)
{
    memset(f, 0, sizeof *f);
    struct metrics_worker *a = &f->w[0], *b = &f->w[1];
    /* worker 0: 5 opened, 1 closed (1000); worker 1: 3 opened, 2 closed */
    metrics_add(&a->opened, 5);
    metrics_conn_closed(a, 1000);
    metrics_add(&b->opened, 3);
    metrics_conn_closed(b, 1006);
    metrics_conn_closed(b, 4000);
    metrics_add(&a->http_requests, 7);
    metrics_add(&b->http_requests, 4);
    metrics_message_in(a, 0);
    metrics_message_in(b, 0);
    metrics_message_in(b, 0);
    metrics_message_in(a, 1);
    metrics_message_in(b, 2);
    metrics_message_in(b, 3); /* a slot the view does not name */
    metrics_fanout(a, METRICS_OUT_ROOM, 10);
    metrics_fanout(b, METRICS_OUT_ROOM, 20);
    metrics_fanout(b, METRICS_OUT_USER, 2);
    metrics_reply_out(a);
    metrics_bytes_in(a, 100);
    metrics_bytes_in(b, 23);
    metrics_bytes_out(a, 1000);
    metrics_bytes_out(b, 234);
    metrics_queued(a, 50);
    metrics_queued(b, 8);
    metrics_slow_reader(b);
    f->workers[0] = a;
    f->workers[1] = b;

    assert_int_equal(metrics_bus_init(&f->mb), 0);
    metrics_bus_reconnect(&f->mb);
    metrics_invalid_envelope(&f->mb);
    metrics_invalid_envelope(&f->mb);
    metrics_store_error(&f->mb);
    for (int i = 0; i < 10; i++)
        metrics_room_event(&f->mb, "general");
    for (int i = 0; i < 5; i++)
        metrics_room_event(&f->mb, "acme/r2"); /* tenant acme's room r2 */
    end_window(&f->mb);
    metrics_room_event(&f->mb, "general"); /* the window under way does not show */

    f->view = (struct metrics_view){
        .node_id = "node-1",
        .engine = "memory",
        .nworkers = 2,
        .workers = f->workers,
        .bus = &f->mb,
        .in_kinds = in_kinds,
        .n_in_kinds = 3,
        .ready = ready,
        .ready_arg = "the bus",
    };
    ready_calls = 0;
    ready_answer = 1;
}

/* Fails unless text holds line as a whole line. */
static void expect_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)); p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return;
    fail_msg("no line [%s] in:\n%s", line, text);
}

/* How many lines of text start with prefix. */
static int count_lines(const char *text, const char *prefix)
{
    int n = 0;
    for (const char *p = text; p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        n += !strncmp(p, prefix, strlen(prefix));
    return n;
}

static void test_metrics_prometheus_sums_the_workers_of_the_view(void **state)
{
    struct fixture f;
    size_t len = 0;
    char *text;

    (void)state;
    fixture_init(&f);
    text = metrics_prometheus(&f.view, &len);
    assert_non_null(text);
    assert_int_equal(len, strlen(text));
    assert_int_equal(ready_calls, 1);
    /* the version is the build's (tests are built without it) */
    const char *info = strstr(text, "\nwsfan_build_info{version=\"");
    assert_non_null(info);
    info = strchr(info + 27, '"');
    assert_non_null(info);
    assert_memory_equal(info, "\",node=\"node-1\",engine=\"memory\"} 1\n", 35);
    expect_line(text, "wsfan_connections 5");
    expect_line(text, "wsfan_worker_connections{worker=\"0\"} 4");
    expect_line(text, "wsfan_worker_connections{worker=\"1\"} 1");
    expect_line(text, "wsfan_connections_opened_total 8");
    expect_line(text, "wsfan_connections_closed_total{code=\"1000\"} 1");
    expect_line(text, "wsfan_connections_closed_total{code=\"1006\"} 1");
    expect_line(text, "wsfan_connections_closed_total{code=\"other\"} 1");
    expect_line(text, "wsfan_http_requests_total 11");
    /* in-kinds by the view's names, only as many as it names */
    expect_line(text, "wsfan_messages_in_total{kind=\"join\"} 3");
    expect_line(text, "wsfan_messages_in_total{kind=\"publish\"} 1");
    expect_line(text, "wsfan_messages_in_total{kind=\"invalid\"} 1");
    assert_int_equal(count_lines(text, "wsfan_messages_in_total{"), 3);
    expect_line(text, "wsfan_messages_out_total{kind=\"room\"} 30");
    expect_line(text, "wsfan_messages_out_total{kind=\"user\"} 2");
    expect_line(text, "wsfan_messages_out_total{kind=\"all\"} 0");
    expect_line(text, "wsfan_messages_out_total{kind=\"reply\"} 1");
    expect_line(text, "wsfan_fanout_events_total{target=\"room\"} 2");
    expect_line(text, "wsfan_fanout_events_total{target=\"user\"} 1");
    expect_line(text, "wsfan_fanout_deliveries_total 32");
    expect_line(text, "wsfan_received_bytes_total 123");
    expect_line(text, "wsfan_sent_bytes_total 1234");
    expect_line(text, "wsfan_send_queue_bytes 58");
    expect_line(text, "wsfan_slow_readers_closed_total 1");
    expect_line(text, "wsfan_bus_up 1");
    expect_line(text, "wsfan_bus_reconnects_total 1");
    expect_line(text, "wsfan_invalid_envelopes_total 2");
    expect_line(text, "wsfan_store_errors_total 1");
    /* the last complete window: 15 events in 5 s */
    expect_line(text, "wsfan_room_messages_per_second 3");
    expect_line(text, "wsfan_busiest_room_messages_per_second{room=\"general\"} 2");
    expect_line(text, "wsfan_busiest_room_messages_per_second{tenant=\"acme\",room=\"r2\"} 1");
    assert_true(strstr(text, "{room=\"general\"}") < strstr(text, "{tenant=\"acme\",room=\"r2\"}"));
    /* every family is typed */
    expect_line(text, "# TYPE wsfan_connections gauge");
    expect_line(text, "# TYPE wsfan_messages_in_total counter");
    free(text);

    ready_answer = 0;
    text = metrics_prometheus(&f.view, &len);
    assert_non_null(text);
    assert_int_equal(ready_calls, 2);
    expect_line(text, "wsfan_bus_up 0");
    free(text);
    metrics_bus_close(&f.mb);
}

static uint64_t int_at(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        fail_msg("%s is not an integer", key);
    return (uint64_t)json_integer_value(v);
}

static void test_metrics_stats_json_sums_the_workers_of_the_view(void **state)
{
    struct fixture f;
    size_t len = 0;
    json_error_t err;
    json_t *v, *w, *rooms, *bus;
    char *text;

    (void)state;
    fixture_init(&f);
    text = metrics_stats_json(&f.view, &len);
    assert_non_null(text);
    assert_int_equal(len, strlen(text));
    assert_int_equal(ready_calls, 1);
    v = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
    if (!v)
        fail_msg("not JSON: %s: %s", err.text, text);
    assert_string_equal(json_string_value(json_object_get(v, "node")), "node-1");
    assert_true(json_is_string(json_object_get(v, "version")));
    assert_true(json_is_integer(json_object_get(v, "uptime_s")));

    w = json_object_get(v, "workers");
    assert_int_equal(json_array_size(w), 2);
    assert_int_equal(int_at(json_array_get(w, 0), "worker"), 0);
    assert_int_equal(int_at(json_array_get(w, 0), "connections"), 4);
    assert_int_equal(int_at(json_array_get(w, 0), "messages_in"), 2);
    assert_int_equal(int_at(json_array_get(w, 0), "messages_out"), 11);
    assert_int_equal(int_at(json_array_get(w, 0), "bytes_in"), 100);
    assert_int_equal(int_at(json_array_get(w, 0), "bytes_out"), 1000);
    assert_int_equal(int_at(json_array_get(w, 0), "send_queue_bytes"), 50);
    assert_int_equal(int_at(json_array_get(w, 1), "worker"), 1);
    assert_int_equal(int_at(json_array_get(w, 1), "connections"), 1);
    /* every slot counts in the totals, named or not */
    assert_int_equal(int_at(json_array_get(w, 1), "messages_in"), 4);
    assert_int_equal(int_at(json_array_get(w, 1), "messages_out"), 22);

    assert_int_equal(int_at(v, "connections"), 5);
    assert_int_equal(int_at(v, "connections_opened"), 8);
    assert_int_equal(int_at(v, "http_requests"), 11);
    assert_int_equal(int_at(v, "messages_in"), 6);
    assert_int_equal(int_at(v, "messages_out"), 33);
    assert_int_equal(int_at(v, "fanout_deliveries"), 32);
    assert_int_equal(int_at(v, "bytes_in"), 123);
    assert_int_equal(int_at(v, "bytes_out"), 1234);
    assert_int_equal(int_at(v, "send_queue_bytes"), 58);
    assert_int_equal(int_at(v, "slow_readers_closed"), 1);

    assert_true(json_number_value(json_object_get(v, "rate_window_s")) == METRICS_RATE_WINDOW_MS / 1000.0);
    assert_true(json_number_value(json_object_get(v, "room_messages_per_s")) == 3.0);
    rooms = json_object_get(v, "busiest_rooms");
    assert_int_equal(json_array_size(rooms), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(rooms, 0), "room")), "general");
    assert_true(json_number_value(json_object_get(json_array_get(rooms, 0), "messages_per_s")) == 2.0);
    assert_null(json_object_get(json_array_get(rooms, 0), "tenant"));
    assert_string_equal(json_string_value(json_object_get(json_array_get(rooms, 1), "room")), "r2");
    assert_string_equal(json_string_value(json_object_get(json_array_get(rooms, 1), "tenant")), "acme");
    assert_true(json_number_value(json_object_get(json_array_get(rooms, 1), "messages_per_s")) == 1.0);

    bus = json_object_get(v, "bus");
    assert_string_equal(json_string_value(json_object_get(bus, "engine")), "memory");
    assert_true(json_is_true(json_object_get(bus, "up")));
    assert_int_equal(int_at(bus, "reconnects"), 1);
    assert_int_equal(int_at(bus, "invalid_envelopes"), 2);
    assert_int_equal(int_at(bus, "store_errors"), 1);
    json_decref(v);
    free(text);

    ready_answer = 0;
    f.view.engine = "redis";
    text = metrics_stats_json(&f.view, &len);
    assert_non_null(text);
    v = json_loadb(text, len, 0, &err);
    assert_non_null(v);
    assert_true(json_is_false(json_object_get(json_object_get(v, "bus"), "up")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(v, "bus"), "engine")), "redis");
    json_decref(v);
    free(text);
    metrics_bus_close(&f.mb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_close_codes_have_their_own_slot_or_other),
        cmocka_unit_test(test_metrics_queued_gauge_goes_up_and_back_to_zero),
        cmocka_unit_test(test_metrics_fanout_counts_events_deliveries_and_messages_out),
        cmocka_unit_test(test_metrics_busiest_rooms_are_the_top_of_the_last_window),
        cmocka_unit_test(test_metrics_a_quiet_window_reads_as_no_traffic),
        cmocka_unit_test(test_metrics_rooms_past_the_bound_count_in_the_total_only),
        cmocka_unit_test(test_metrics_prometheus_sums_the_workers_of_the_view),
        cmocka_unit_test(test_metrics_stats_json_sums_the_workers_of_the_view),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
