/* test_metrics.c - the counters' arithmetic and the busiest rooms' windows
 * (metrics.h). Windows are ended by moving their start back, not by
 * sleeping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"

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
    metrics_fanout(&m, 0, 3);
    metrics_fanout(&m, 0, 2);
    assert_int_equal(m.fanout_events[0], 2);
    assert_int_equal(m.fanout_deliveries, 5);
    assert_int_equal(m.out[0], 5);
}

/* Ends the current window as if its time had passed. */
static void end_window(struct metrics_bus *mb)
{
    mb->window_start_ms -= METRICS_RATE_WINDOW_MS;
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_close_codes_have_their_own_slot_or_other),
        cmocka_unit_test(test_metrics_queued_gauge_goes_up_and_back_to_zero),
        cmocka_unit_test(test_metrics_fanout_counts_events_deliveries_and_messages_out),
        cmocka_unit_test(test_metrics_busiest_rooms_are_the_top_of_the_last_window),
        cmocka_unit_test(test_metrics_a_quiet_window_reads_as_no_traffic),
        cmocka_unit_test(test_metrics_rooms_past_the_bound_count_in_the_total_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
