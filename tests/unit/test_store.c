/* test_store.c - unit tests of store/store.c (event batches) and of the
 * memory engine (store/store_memory.c): offsets increasing in publish order,
 * the message event built once and shared with the caller, the ring of
 * --history-length, exact recovery of a join `since`, history pages,
 * --history-ttl expiry and the sweep of idle rooms, publish keys of
 * --idempotency-window, --history-memory, --max-replay, and history turned
 * off. Offsets themselves are tested in test_offset.c. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "core/clock.h"
#include "core/config.h"
#include "store/store.h"

/* ---- Batches ---------------------------------------------------------------- */

static void test_store_batch_joins_events_with_newlines(void **state)
{
    struct store_batch b = {0};

    (void)state;
    assert_int_equal(store_batch_add(&b, "{\"a\":1}", 7, (struct offset){1, 0}), 0);
    assert_int_equal(store_batch_add(&b, "[2]xyz", 3, (struct offset){2, 0}), 0);
    assert_int_equal(store_batch_add(&b, "", 0, (struct offset){3, 0}), 0);
    assert_int_equal(b.count, 3);
    assert_int_equal(b.len, 8 + 4 + 1);
    assert_memory_equal(b.text, "{\"a\":1}\n[2]\n\n", b.len);
    store_batch_free(&b);
    assert_null(b.text);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.count, 0);
    store_batch_free(&b); /* an empty batch frees fine */
}

/* ---- Memory engine: helpers --------------------------------------------------- */

/* The bus loop of the tests' stores, where their sweep timer runs. */
static uv_loop_t loop;

/* A memory store of cfg with origin 0-0. */
static struct store *store_with(const struct config *cfg)
{
    struct store *s = store_memory_create(&loop, cfg, (struct offset){0, 0});
    assert_non_null(s);
    return s;
}

/* A memory store of length and ttl_s, without keys or a byte budget. */
static struct store *memory_store(int length, int ttl_s)
{
    struct config cfg = {.history_length = length, .history_ttl = ttl_s, .max_replay = 1000};
    return store_with(&cfg);
}

/* Destroys s, and runs the loop so that its timer closes and it is freed
 * (a bounded number of times: a failed test leaves its store's timer). */
static void store_end(struct store *s)
{
    s->ops->destroy(s);
    for (int i = 0; i < 100 && uv_run(&loop, UV_RUN_NOWAIT); i++)
        ;
}

static int done_calls;

static void on_done(struct store_call *call)
{
    (void)call;
    done_calls++;
}

static void call_init(struct store_call *call, const char *room)
{
    memset(call, 0, sizeof *call);
    call->room = room;
    call->done = on_done;
}

/* Appends data to room at ts; the offset goes to offset (may be NULL) and
 * the event, when event is not NULL, to *event (the caller's reference:
 * event_unref it). Checks the event is the room's message event, with the
 * offset of the call when it has one. */
static void append_full(struct store *s, const char *room, const char *from, const char *data, uint64_t ts,
                        char *offset, struct event **event)
{
    struct store_call call;

    call_init(&call, room);
    call.from = from;
    call.data = data;
    call.data_len = strlen(data);
    call.ts = ts;
    done_calls = 0;
    s->ops->append(s, &call);
    assert_int_equal(done_calls, 1);
    assert_int_equal(call.error, 0);
    assert_non_null(call.event);
    assert_int_equal(call.event->len, strlen(call.event->json));
    assert_int_equal(call.event->target, EVENT_ROOM);
    assert_int_equal(call.event->kind, EVENT_MESSAGE);
    assert_string_equal(call.event->key, room);
    assert_int_equal(call.event->skip_worker, -1);
    assert_int_equal(call.event->has_offset, call.offset[0] != '\0');
    if (call.event->has_offset) {
        char formatted[OFFSET_MAX_LEN];
        offset_format(call.event->offset, formatted);
        assert_string_equal(formatted, call.offset);
    }
    if (offset)
        strcpy(offset, call.offset);
    if (event)
        *event = call.event;
    else
        event_unref(call.event);
}

static void append(struct store *s, const char *room, uint64_t ts, char *offset)
{
    append_full(s, room, "alice", "{}", ts, offset, NULL);
}

/* Appends n messages with data {"n":first}, {"n":first+1}, .. */
static void append_numbered(struct store *s, const char *room, int first, int n, uint64_t ts)
{
    char data[32];

    for (int i = first; i < first + n; i++) {
        snprintf(data, sizeof data, "{\"n\":%d}", i);
        append_full(s, room, NULL, data, ts, NULL, NULL);
    }
}

static void latest(struct store *s, const char *room, char *offset)
{
    struct store_call call;

    call_init(&call, room);
    done_calls = 0;
    s->ops->latest(s, &call);
    assert_int_equal(done_calls, 1);
    assert_int_equal(call.error, 0);
    strcpy(offset, call.offset);
}

/* Runs recover from since; returns the call (the caller frees its batch). */
static struct store_call recover(struct store *s, const char *room, const char *since)
{
    struct store_call call;

    call_init(&call, room);
    assert_int_equal(offset_parse(since, &call.since), 0);
    call.recovered = -1;
    done_calls = 0;
    s->ops->recover(s, &call);
    assert_int_equal(done_calls, 1);
    assert_int_equal(call.error, 0);
    return call;
}

/* Runs history; has_before when before is not NULL. */
static struct store_call history(struct store *s, const char *room, int limit, const char *before)
{
    struct store_call call;

    call_init(&call, room);
    call.limit = limit;
    if (before) {
        call.has_before = 1;
        assert_int_equal(offset_parse(before, &call.before), 0);
    }
    done_calls = 0;
    s->ops->history(s, &call);
    assert_int_equal(done_calls, 1);
    return call;
}

/* The "n" of each event of the batch, in order, as "1,2,3"; also checks that
 * each line is a message event of room (a key: the event names the room
 * alone) with an offset. */
static void batch_numbers(const struct store_batch *b, const char *room, char *out, size_t cap)
{
    size_t lines = 0, used = 0;

    out[0] = '\0';
    if (b->count == 0) {
        assert_int_equal(b->len, 0);
        return;
    }
    assert_non_null(b->text);
    for (const char *p = b->text, *end = b->text + b->len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        json_t *v, *n;
        assert_non_null(nl);
        v = json_loadb(p, (size_t)(nl - p), 0, NULL);
        assert_non_null(v);
        assert_string_equal(json_string_value(json_object_get(v, "type")), "message");
        assert_string_equal(json_string_value(json_object_get(v, "room")), name_of_key(room));
        assert_true(json_is_string(json_object_get(v, "offset")));
        n = json_object_get(json_object_get(v, "data"), "n");
        assert_true(json_is_integer(n));
        used += (size_t)snprintf(out + used, cap - used, "%s%lld", lines ? "," : "", (long long)json_integer_value(n));
        assert_true(used < cap);
        json_decref(v);
        lines++;
        p = nl + 1;
    }
    assert_int_equal(lines, b->count);
}

/* The offset of the event on line i of the batch. */
static void batch_offset(const struct store_batch *b, size_t i, char *out)
{
    const char *p = b->text, *end = b->text + b->len;

    for (; i > 0; i--)
        p = (const char *)memchr(p, '\n', (size_t)(end - p)) + 1;
    json_t *v = json_loadb(p, (size_t)((const char *)memchr(p, '\n', (size_t)(end - p)) - p), 0, NULL);
    assert_non_null(v);
    strcpy(out, json_string_value(json_object_get(v, "offset")));
    json_decref(v);
}

static void expect_history(struct store *s, const char *room, int limit, const char *before, const char *numbers)
{
    struct store_call call = history(s, room, limit, before);
    char got[512];

    assert_int_equal(call.error, 0);
    batch_numbers(&call.batch, room, got, sizeof got);
    assert_string_equal(got, numbers);
    store_batch_free(&call.batch);
}

static void expect_recover(struct store *s, const char *room, const char *since, int recovered,
                           const char *latest_offset, const char *numbers)
{
    struct store_call call = recover(s, room, since);
    char got[512];

    assert_int_equal(call.recovered, recovered);
    assert_string_equal(call.offset, latest_offset);
    batch_numbers(&call.batch, room, got, sizeof got);
    assert_string_equal(got, numbers);
    if (!recovered)
        assert_null(call.batch.text);
    store_batch_free(&call.batch);
}

/* A fixed time well in the past for stores without a ttl. */
#define T0 1700000000000ULL

/* ---- Memory engine: append ---------------------------------------------------- */

static void test_store_memory_append_builds_message_event_with_offset(void **state)
{
    struct store *s = memory_store(10, 0);
    char offset[OFFSET_MAX_LEN];
    struct event *event;

    (void)state;
    append_full(s, "general", "alice", "{\"text\":\"hi\"}", T0, offset, &event);
    assert_string_equal(offset, "1700000000000-0");
    assert_string_equal(event->json, "{\"type\":\"message\",\"room\":\"general\",\"offset\":\"1700000000000-0\","
                                     "\"from\":\"alice\",\"data\":{\"text\":\"hi\"},\"ts\":1700000000000}");
    assert_true(event->offset.ms == T0 && event->offset.seq == 0);
    event_unref(event);
    append_full(s, "general", NULL, "1", T0 + 1, offset, &event);
    assert_string_equal(event->json, "{\"type\":\"message\",\"room\":\"general\",\"offset\":\"1700000000001-0\","
                                     "\"from\":null,\"data\":1,\"ts\":1700000000001}");
    event_unref(event);
    store_end(s);
}

/* The event is built once: the caller's reference and the one history keeps
 * are the same block, which outlives the caller's unref. */
static void test_store_memory_append_event_is_shared_with_history(void **state)
{
    struct store *s = memory_store(10, 0);
    struct event *event;
    struct store_call call;
    char json[256];

    (void)state;
    append_full(s, "r", "alice", "{\"a\":1}", T0, NULL, &event);
    assert_int_equal(atomic_load(&event->refs), 2);
    assert_true(event->len < sizeof json);
    memcpy(json, event->json, event->len + 1);
    event_unref(event);
    call = recover(s, "r", "0-0");
    assert_int_equal(call.recovered, 1);
    assert_int_equal(call.batch.count, 1);
    assert_int_equal(call.batch.len, strlen(json) + 1);
    assert_memory_equal(call.batch.text, json, strlen(json));
    store_batch_free(&call.batch);
    store_end(s);
}

static void test_store_memory_offsets_increase_within_a_millisecond(void **state)
{
    struct store *s = memory_store(10, 0);
    char o[OFFSET_MAX_LEN];

    (void)state;
    append(s, "r", T0, o);
    assert_string_equal(o, "1700000000000-0");
    append(s, "r", T0, o);
    assert_string_equal(o, "1700000000000-1");
    append(s, "r", T0, o);
    assert_string_equal(o, "1700000000000-2");
    append(s, "r", T0 + 1, o);
    assert_string_equal(o, "1700000000001-0");
    latest(s, "r", o);
    assert_string_equal(o, "1700000000001-0");
    store_end(s);
}

static void test_store_memory_offsets_increase_when_clock_goes_backwards(void **state)
{
    struct store *s = memory_store(10, 0);
    char o[OFFSET_MAX_LEN];
    struct event *event;

    (void)state;
    append(s, "r", T0 + 5, o);
    assert_string_equal(o, "1700000000005-0");
    /* The clock stepped back: the offset keeps the last ms and bumps seq,
     * while the event keeps its own ts. */
    append_full(s, "r", "u", "{}", T0 + 3, o, &event);
    assert_string_equal(o, "1700000000005-1");
    assert_string_equal(event->json, "{\"type\":\"message\",\"room\":\"r\",\"offset\":\"1700000000005-1\","
                                     "\"from\":\"u\",\"data\":{},\"ts\":1700000000003}");
    event_unref(event);
    append(s, "r", T0, o);
    assert_string_equal(o, "1700000000005-2");
    append(s, "r", T0 + 5, o);
    assert_string_equal(o, "1700000000005-3");
    append(s, "r", T0 + 6, o);
    assert_string_equal(o, "1700000000006-0");
    append(s, "r", 0, o);
    assert_string_equal(o, "1700000000006-1");
    store_end(s);
}

static void test_store_memory_rooms_have_their_own_offsets(void **state)
{
    struct store *s = memory_store(10, 0);
    char o[OFFSET_MAX_LEN];

    (void)state;
    append(s, "a", T0, o);
    append(s, "a", T0, o);
    assert_string_equal(o, "1700000000000-1");
    append(s, "b", T0, o);
    assert_string_equal(o, "1700000000000-0");
    latest(s, "a", o);
    assert_string_equal(o, "1700000000000-1");
    latest(s, "b", o);
    assert_string_equal(o, "1700000000000-0");
    store_end(s);
}

/* Rooms are keys: one name in two tenants and in none is three rooms. */
static void test_store_memory_rooms_of_one_name_in_two_tenants_are_apart(void **state)
{
    struct store *s = memory_store(10, 0);
    char o[OFFSET_MAX_LEN];

    (void)state;
    append_numbered(s, "acme/general", 1, 2, T0);
    append_numbered(s, "globex/general", 10, 1, T0);
    append_numbered(s, "general", 20, 1, T0);
    expect_history(s, "acme/general", 50, NULL, "1,2");
    expect_history(s, "globex/general", 50, NULL, "10");
    expect_history(s, "general", 50, NULL, "20");
    expect_history(s, "initech/general", 50, NULL, "");
    latest(s, "acme/general", o);
    assert_string_equal(o, "1700000000000-1");
    latest(s, "globex/general", o);
    assert_string_equal(o, "1700000000000-0");
    expect_recover(s, "acme/general", "1700000000000-0", 1, "1700000000000-1", "2");
    store_end(s);
}

static void test_store_memory_ts_zero_still_gets_an_offset_after_0_0(void **state)
{
    struct store *s = memory_store(10, 0);
    char o[OFFSET_MAX_LEN];

    (void)state;
    /* "0-0" means "no history": the first offset must come after it. */
    append_numbered(s, "r", 1, 1, 0);
    latest(s, "r", o);
    assert_string_equal(o, "0-1");
    expect_recover(s, "r", "0-0", 1, "0-1", "1");
    store_end(s);
}

static void test_store_memory_empty_room_latest_is_0_0(void **state)
{
    struct store *s = memory_store(10, 0);
    char o[OFFSET_MAX_LEN];

    (void)state;
    latest(s, "never", o);
    assert_string_equal(o, "0-0");
    store_end(s);
}

/* ---- Memory engine: the ring -------------------------------------------------- */

static void test_store_memory_ring_keeps_last_history_length_messages(void **state)
{
    struct store *s = memory_store(3, 0);
    char o[OFFSET_MAX_LEN];

    (void)state;
    append_numbered(s, "r", 1, 2, T0);
    expect_history(s, "r", 50, NULL, "1,2");
    append_numbered(s, "r", 3, 1, T0);
    expect_history(s, "r", 50, NULL, "1,2,3");
    append_numbered(s, "r", 4, 1, T0);
    expect_history(s, "r", 50, NULL, "2,3,4");
    /* around the ring several times */
    append_numbered(s, "r", 5, 8, T0);
    expect_history(s, "r", 50, NULL, "10,11,12");
    latest(s, "r", o);
    assert_string_equal(o, "1700000000000-11");
    store_end(s);
}

static void test_store_memory_ring_of_one(void **state)
{
    struct store *s = memory_store(1, 0);

    (void)state;
    append_numbered(s, "r", 1, 3, T0);
    expect_history(s, "r", 50, NULL, "3");
    expect_recover(s, "r", "1700000000000-1", 1, "1700000000000-2", "3");
    expect_recover(s, "r", "1700000000000-0", 0, "1700000000000-2", "");
    store_end(s);
}

/* ---- Memory engine: recover --------------------------------------------------- */

/* length 3, five messages at T0: offsets T0-0 .. T0-4; T0-0 and T0-1 are
 * trimmed, T0-2 .. T0-4 (messages 3, 4, 5) are kept. */
static struct store *trimmed_store(void)
{
    struct store *s = memory_store(3, 0);
    append_numbered(s, "r", 1, 5, T0);
    return s;
}

static void test_store_memory_recover_since_latest_misses_nothing(void **state)
{
    struct store *s = trimmed_store();

    (void)state;
    expect_recover(s, "r", "1700000000000-4", 1, "1700000000000-4", "");
    store_end(s);
}

static void test_store_memory_recover_since_kept_offset_replays_after_it(void **state)
{
    struct store *s = trimmed_store();

    (void)state;
    expect_recover(s, "r", "1700000000000-2", 1, "1700000000000-4", "4,5");
    expect_recover(s, "r", "1700000000000-3", 1, "1700000000000-4", "5");
    store_end(s);
}

static void test_store_memory_recover_since_last_trimmed_offset_replays_all_kept(void **state)
{
    struct store *s = trimmed_store();

    (void)state;
    /* Nothing after T0-1 was dropped: exact. */
    expect_recover(s, "r", "1700000000000-1", 1, "1700000000000-4", "3,4,5");
    store_end(s);
}

static void test_store_memory_recover_since_before_trimmed_point_fails(void **state)
{
    struct store *s = trimmed_store();

    (void)state;
    /* T0-1 after T0-0 was dropped: a gap. */
    expect_recover(s, "r", "1700000000000-0", 0, "1700000000000-4", "");
    expect_recover(s, "r", "0-0", 0, "1700000000000-4", "");
    expect_recover(s, "r", "1699999999999-99", 0, "1700000000000-4", "");
    store_end(s);
}

static void test_store_memory_recover_since_from_the_future_fails(void **state)
{
    struct store *s = trimmed_store();

    (void)state;
    expect_recover(s, "r", "1700000000000-5", 0, "1700000000000-4", "");
    expect_recover(s, "r", "1700000000001-0", 0, "1700000000000-4", "");
    expect_recover(s, "r", "18446744073709551615-18446744073709551615", 0, "1700000000000-4", "");
    store_end(s);
}

static void test_store_memory_recover_since_between_offsets_replays_after_it(void **state)
{
    struct store *s = memory_store(10, 0);

    (void)state;
    append_numbered(s, "r", 1, 2, T0);      /* T0-0, T0-1 */
    append_numbered(s, "r", 3, 2, T0 + 10); /* T0+10-0, T0+10-1 */
    /* An offset this store never gave out, inside the kept range. */
    expect_recover(s, "r", "1700000000005-0", 1, "1700000000010-1", "3,4");
    expect_recover(s, "r", "1700000000000-7", 1, "1700000000010-1", "3,4");
    store_end(s);
}

static void test_store_memory_recover_untrimmed_room_from_0_0_replays_all(void **state)
{
    struct store *s = memory_store(10, 0);

    (void)state;
    append_numbered(s, "r", 1, 3, T0);
    expect_recover(s, "r", "0-0", 1, "1700000000000-2", "1,2,3");
    store_end(s);
}

static void test_store_memory_recover_empty_room(void **state)
{
    struct store *s = memory_store(10, 0);

    (void)state;
    expect_recover(s, "empty", "0-0", 1, "0-0", "");
    expect_recover(s, "empty", "0-1", 0, "0-0", "");
    expect_recover(s, "empty", "1700000000000-0", 0, "0-0", "");
    store_end(s);
}

static void test_store_memory_recovered_events_are_the_appended_ones(void **state)
{
    struct store *s = memory_store(10, 0);
    struct event *events[3];
    char o[OFFSET_MAX_LEN];
    struct store_call call;
    size_t len = 0;

    (void)state;
    append_full(s, "r", "alice", "{\"a\":1}", T0, NULL, &events[0]);
    append_full(s, "r", NULL, "[\"b\"]", T0 + 1, NULL, &events[1]);
    append_full(s, "r", "bob", "\"c\"", T0 + 1, NULL, &events[2]);
    call = recover(s, "r", "0-0");
    assert_int_equal(call.recovered, 1);
    assert_int_equal(call.batch.count, 3);
    for (int i = 0; i < 3; i++)
        len += events[i]->len + 1;
    assert_int_equal(call.batch.len, len);
    char *p = call.batch.text;
    for (int i = 0; i < 3; i++) {
        size_t n = events[i]->len;
        assert_memory_equal(p, events[i]->json, n);
        assert_int_equal(p[n], '\n');
        p += n + 1;
        event_unref(events[i]);
    }
    batch_offset(&call.batch, 2, o);
    assert_string_equal(o, "1700000000001-1");
    store_batch_free(&call.batch);
    store_end(s);
}

/* ---- Memory engine: history --------------------------------------------------- */

static void test_store_memory_history_limit_takes_the_newest_oldest_first(void **state)
{
    struct store *s = memory_store(100, 0);

    (void)state;
    append_numbered(s, "r", 1, 5, T0);
    expect_history(s, "r", 1, NULL, "5");
    expect_history(s, "r", 2, NULL, "4,5");
    expect_history(s, "r", 5, NULL, "1,2,3,4,5");
    expect_history(s, "r", 6, NULL, "1,2,3,4,5");
    expect_history(s, "r", 1000, NULL, "1,2,3,4,5");
    store_end(s);
}

static void test_store_memory_history_before_is_exclusive(void **state)
{
    struct store *s = memory_store(100, 0);

    (void)state;
    append_numbered(s, "r", 1, 5, T0); /* T0-0 .. T0-4 */
    expect_history(s, "r", 50, "1700000000000-2", "1,2");
    expect_history(s, "r", 1, "1700000000000-2", "2");
    expect_history(s, "r", 50, "1700000000000-4", "1,2,3,4");
    expect_history(s, "r", 50, "1700000000000-1", "1");
    /* between offsets, after all, and the paging walk back */
    expect_history(s, "r", 2, "1700000000000-5", "4,5");
    expect_history(s, "r", 2, "1700000000001-0", "4,5");
    expect_history(s, "r", 2, "18446744073709551615-18446744073709551615", "4,5");
    store_end(s);
}

static void test_store_memory_history_before_oldest_is_empty(void **state)
{
    struct store *s = memory_store(100, 0);
    struct store_call call;

    (void)state;
    append_numbered(s, "r", 1, 3, T0);
    expect_history(s, "r", 50, "1700000000000-0", "");
    expect_history(s, "r", 50, "0-0", "");
    call = history(s, "r", 50, "1600000000000-0");
    assert_int_equal(call.error, 0);
    assert_int_equal(call.batch.count, 0);
    assert_null(call.batch.text);
    store_end(s);
}

static void test_store_memory_history_of_unknown_room_is_empty(void **state)
{
    struct store *s = memory_store(100, 0);

    (void)state;
    expect_history(s, "nobody", 50, NULL, "");
    expect_history(s, "nobody", 50, "1700000000000-0", "");
    store_end(s);
}

static void test_store_memory_history_after_wrap_pages_back(void **state)
{
    struct store *s = memory_store(4, 0);
    struct store_call call;
    char o[OFFSET_MAX_LEN];

    (void)state;
    append_numbered(s, "r", 1, 10, T0); /* keeps 7..10 */
    call = history(s, "r", 2, NULL);
    char got[64];
    batch_numbers(&call.batch, "r", got, sizeof got);
    assert_string_equal(got, "9,10");
    batch_offset(&call.batch, 0, o);
    store_batch_free(&call.batch);
    /* the next page back, before the oldest of this one */
    expect_history(s, "r", 2, o, "7,8");
    expect_history(s, "r", 5, o, "7,8");
    store_end(s);
}

/* ---- Memory engine: --history-ttl --------------------------------------------- */

static void test_store_memory_ttl_drops_expired_messages(void **state)
{
    struct store *s = memory_store(100, 10);
    uint64_t now = clock_wall_ms();

    (void)state;
    /* ts + ttl <= now: expired on arrival (it goes when the room is next read) */
    append_numbered(s, "r", 1, 2, now - 10 * 1000 - 1);
    /* a minute to spare */
    append_numbered(s, "r", 3, 2, now + 60 * 1000);
    expect_history(s, "r", 50, NULL, "3,4");
    store_end(s);
}

static void test_store_memory_ttl_boundary_ts_plus_ttl_equal_now_is_expired(void **state)
{
    struct store *s = memory_store(100, 10);
    uint64_t now = clock_wall_ms();

    (void)state;
    /* ts + ttl == now when appended; now only grows after. */
    append_numbered(s, "r", 1, 1, now - 10 * 1000);
    append_numbered(s, "r", 2, 1, now - 10 * 1000 + 60 * 1000);
    expect_history(s, "r", 50, NULL, "2");
    store_end(s);
}

static void test_store_memory_ttl_expiry_is_a_trim_for_recover(void **state)
{
    struct store *s = memory_store(100, 10);
    uint64_t old = clock_wall_ms() - 10 * 1000 - 1, fresh = clock_wall_ms() + 60 * 1000;
    char expired_last[OFFSET_MAX_LEN], kept_first[OFFSET_MAX_LEN], last[OFFSET_MAX_LEN], first[OFFSET_MAX_LEN];

    (void)state;
    append(s, "r", old, first);
    append(s, "r", old, expired_last);
    append_full(s, "r", NULL, "{\"n\":3}", fresh, kept_first, NULL);
    append_full(s, "r", NULL, "{\"n\":4}", fresh, last, NULL);
    /* The first two are gone: since before the second is a gap. */
    expect_recover(s, "r", "0-0", 0, last, "");
    expect_recover(s, "r", first, 0, last, "");
    expect_recover(s, "r", expired_last, 1, last, "3,4");
    expect_recover(s, "r", kept_first, 1, last, "4");
    store_end(s);
}

static void test_store_memory_ttl_expired_room_keeps_its_latest_offset(void **state)
{
    struct store *s = memory_store(100, 1);
    char o[OFFSET_MAX_LEN], last[OFFSET_MAX_LEN];

    (void)state;
    append(s, "r", clock_wall_ms(), last);
    usleep(1100 * 1000);
    /* Everything expired: history is empty, yet offsets never go back. */
    expect_history(s, "r", 50, NULL, "");
    latest(s, "r", o);
    assert_string_equal(o, last);
    expect_recover(s, "r", last, 1, last, "");
    expect_recover(s, "r", "0-0", 0, last, "");
    append(s, "r", 0, o);
    assert_true(strcmp(o, last) != 0);
    struct offset a, b;
    assert_int_equal(offset_parse(last, &a), 0);
    assert_int_equal(offset_parse(o, &b), 0);
    assert_int_equal(offset_cmp(b, a), 1);
    store_end(s);
}

static void test_store_memory_ttl_zero_keeps_messages_forever(void **state)
{
    struct store *s = memory_store(100, 0);

    (void)state;
    append_numbered(s, "r", 1, 2, 1); /* 1 ms after the epoch */
    expect_history(s, "r", 50, NULL, "1,2");
    expect_recover(s, "r", "0-0", 1, "1-1", "1,2");
    store_end(s);
}

/* Every event of the batch is one of the kept messages: the exact cap. */
static void test_store_memory_never_returns_more_than_history_length(void **state)
{
    struct store *s = memory_store(5, 0);
    struct store_call call;
    char o[OFFSET_MAX_LEN];

    (void)state;
    for (int i = 1; i <= 20; i++) {
        append_numbered(s, "r", i, 1, T0);
        call = history(s, "r", 1000, NULL);
        assert_int_equal(call.batch.count, i < 5 ? i : 5);
        store_batch_free(&call.batch);
    }
    expect_history(s, "r", 1000, NULL, "16,17,18,19,20");
    /* The newest dropped is message 15 (T0-14): from it, all five kept. */
    expect_recover(s, "r", "1700000000000-14", 1, "1700000000000-19", "16,17,18,19,20");
    expect_recover(s, "r", "1700000000000-13", 0, "1700000000000-19", "");
    latest(s, "r", o);
    assert_string_equal(o, "1700000000000-19");
    store_end(s);
}

/* ---- Memory engine: --idempotency-window ---------------------------------------- */

/* Appends {"n":n} with key (NULL for none) to room at ts; returns whether
 * it was a duplicate. The offset goes to offset. A duplicate has no event
 * and nothing else; a new publish has its message event. */
static int append_key(struct store *s, const char *room, const char *key, int n, uint64_t ts, char *offset)
{
    struct store_call call;
    char data[32];

    snprintf(data, sizeof data, "{\"n\":%d}", n);
    call_init(&call, room);
    call.data = data;
    call.data_len = strlen(data);
    call.ts = ts;
    call.key = key;
    call.key_len = key ? strlen(key) : 0;
    done_calls = 0;
    s->ops->append(s, &call);
    assert_int_equal(done_calls, 1);
    assert_int_equal(call.error, 0);
    strcpy(offset, call.offset);
    if (call.duplicate) {
        assert_null(call.event);
        return 1;
    }
    assert_non_null(call.event);
    event_unref(call.event);
    return 0;
}

static struct store *keyed_store(int window_s)
{
    struct config cfg = {.history_length = 100, .max_replay = 1000, .idempotency_window = window_s};
    return store_with(&cfg);
}

static void test_store_memory_duplicate_key_answers_first_offset_and_stores_nothing(void **state)
{
    struct store *s = keyed_store(300);
    char first[OFFSET_MAX_LEN], o[OFFSET_MAX_LEN];

    (void)state;
    assert_int_equal(append_key(s, "r", "k1", 1, T0, first), 0);
    assert_string_equal(first, "1700000000000-0");
    assert_int_equal(append_key(s, "r", "k1", 2, T0 + 1000, o), 1);
    assert_string_equal(o, first);
    /* Without a key, or with another, a publish is new. */
    assert_int_equal(append_key(s, "r", NULL, 3, T0 + 2000, o), 0);
    assert_string_equal(o, "1700000002000-0");
    assert_int_equal(append_key(s, "r", "k2", 4, T0 + 3000, o), 0);
    assert_string_equal(o, "1700000003000-0");
    assert_int_equal(append_key(s, "r", "k1", 5, T0 + 4000, o), 1);
    assert_string_equal(o, first);
    expect_history(s, "r", 50, NULL, "1,3,4");
    latest(s, "r", o);
    assert_string_equal(o, "1700000003000-0");
    store_end(s);
}

static void test_store_memory_key_after_the_window_is_a_new_publish(void **state)
{
    struct store *s = keyed_store(300);
    char first[OFFSET_MAX_LEN], second[OFFSET_MAX_LEN], o[OFFSET_MAX_LEN];

    (void)state;
    assert_int_equal(append_key(s, "r", "k", 1, T0, first), 0);
    assert_int_equal(append_key(s, "r", "k", 2, T0 + 300 * 1000 - 1, o), 1);
    assert_string_equal(o, first);
    assert_int_equal(append_key(s, "r", "k", 3, T0 + 300 * 1000, second), 0);
    assert_string_equal(second, "1700000300000-0");
    /* The window now runs from the second publish. */
    assert_int_equal(append_key(s, "r", "k", 4, T0 + 300 * 1000 + 1, o), 1);
    assert_string_equal(o, second);
    expect_history(s, "r", 50, NULL, "1,3");
    store_end(s);
}

/* Rooms are keys, so a tenant's room is its own too. */
static void test_store_memory_keys_of_different_rooms_are_independent(void **state)
{
    struct store *s = keyed_store(300);
    char a[OFFSET_MAX_LEN], b[OFFSET_MAX_LEN], c[OFFSET_MAX_LEN], o[OFFSET_MAX_LEN];

    (void)state;
    assert_int_equal(append_key(s, "acme/r", "k", 1, T0, a), 0);
    assert_int_equal(append_key(s, "globex/r", "k", 2, T0 + 1, b), 0);
    assert_int_equal(append_key(s, "r", "k", 3, T0 + 2, c), 0);
    assert_int_equal(append_key(s, "acme/r", "k", 4, T0 + 3, o), 1);
    assert_string_equal(o, a);
    assert_int_equal(append_key(s, "globex/r", "k", 5, T0 + 4, o), 1);
    assert_string_equal(o, b);
    assert_int_equal(append_key(s, "r", "k", 6, T0 + 5, o), 1);
    assert_string_equal(o, c);
    expect_history(s, "acme/r", 50, NULL, "1");
    expect_history(s, "globex/r", 50, NULL, "2");
    expect_history(s, "r", 50, NULL, "3");
    store_end(s);
}

static void test_store_memory_window_zero_ignores_keys(void **state)
{
    struct store *s = keyed_store(0);
    char o[OFFSET_MAX_LEN];

    (void)state;
    assert_int_equal(append_key(s, "r", "k", 1, T0, o), 0);
    assert_int_equal(append_key(s, "r", "k", 2, T0, o), 0);
    assert_string_equal(o, "1700000000000-1");
    expect_history(s, "r", 50, NULL, "1,2");
    store_end(s);
}

/* ---- Memory engine: the sweep --------------------------------------------------- */

/* Appends {"n":1} to room at ts and returns its event, whose reference the
 * caller keeps: it drops to 1 once the store has let go of the message. */
static struct event *append_held(struct store *s, const char *room, uint64_t ts)
{
    struct event *event;
    append_full(s, room, NULL, "{\"n\":1}", ts, NULL, &event);
    assert_int_equal(atomic_load(&event->refs), 2);
    return event;
}

/* How many of the events only the test still holds. */
static int released(struct event **events, int n)
{
    int count = 0;
    for (int i = 0; i < n; i++)
        count += atomic_load(&events[i]->refs) == 1;
    return count;
}

/* A room nobody uses again loses its expired messages to the sweep; its
 * recovery stays exact after its state is freed. */
static void test_store_memory_sweep_removes_expired_messages_of_idle_room(void **state)
{
    struct store *s = memory_store(100, 1);
    uint64_t ts = clock_wall_ms() - 900; /* expires in 100 ms */
    char first[OFFSET_MAX_LEN], last[OFFSET_MAX_LEN], o[OFFSET_MAX_LEN];
    struct event *events[2];

    (void)state;
    events[0] = append_held(s, "idle", ts);
    offset_format(events[0]->offset, first);
    events[1] = append_held(s, "idle", ts);
    offset_format(events[1]->offset, last);
    /* Only ticks of the sweep run: nothing reads the room. */
    for (int ticks = 0; ticks < 30 && released(events, 2) < 2; ticks++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(released(events, 2), 2);
    event_unref(events[0]);
    event_unref(events[1]);
    latest(s, "idle", o);
    assert_string_equal(o, last);
    expect_recover(s, "idle", last, 1, last, "");
    expect_recover(s, "idle", first, 0, last, "");
    /* A new message in the freed room: a since from before the freeing
     * missed the expired one, so it is not recovered. */
    append_numbered(s, "idle", 2, 1, clock_wall_ms());
    latest(s, "idle", o);
    assert_true(strcmp(o, last) != 0);
    expect_recover(s, "idle", first, 0, o, "");
    expect_recover(s, "idle", "0-0", 0, o, "");
    expect_recover(s, "idle", last, 1, o, "2");
    store_end(s);
}

#define SWEEP_SLICE 1024 /* rooms one tick of the sweep looks at */
#define IDLE_ROOMS (4 * SWEEP_SLICE)

/* One tick looks at a slice of the rooms, and ticks go round them all. */
static void test_store_memory_sweep_is_sliced_and_reaches_every_room(void **state)
{
    struct store *s = memory_store(10, 1);
    static struct event *events[IDLE_ROOMS];
    uint64_t old = clock_wall_ms() - 1000;
    char room[32];

    (void)state;
    for (int i = 0; i < IDLE_ROOMS; i++) {
        snprintf(room, sizeof room, "idle-%d", i);
        events[i] = append_held(s, room, old);
    }
    uv_run(&loop, UV_RUN_ONCE);
    /* A run can take two ticks: one due at its start, one after its wait. */
    int first = released(events, IDLE_ROOMS);
    assert_true(first >= SWEEP_SLICE && first <= 2 * SWEEP_SLICE);
    for (int ticks = 0; ticks < 8 && released(events, IDLE_ROOMS) < IDLE_ROOMS; ticks++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(released(events, IDLE_ROOMS), IDLE_ROOMS);
    for (int i = 0; i < IDLE_ROOMS; i++)
        event_unref(events[i]);
    store_end(s);
}

/* ---- Memory engine: --history-memory -------------------------------------------- */

/* What an event costs the budget: its whole block. */
static size_t event_cost(const struct event *ev)
{
    return sizeof *ev + ev->len + 1 + ev->key_len + 1;
}

static struct store *budget_store(size_t budget)
{
    struct config cfg = {.history_length = 100, .max_replay = 1000, .history_memory = budget};
    return store_with(&cfg);
}

/* The rooms' events are all the same size: one-letter rooms, {"n":<digit>}
 * at T0. */
static void test_store_memory_budget_evicts_least_recently_used_room(void **state)
{
    struct event *probe;
    struct store *s = budget_store(1);
    append_full(s, "z", NULL, "{\"n\":1}", T0, NULL, &probe);
    size_t cost = event_cost(probe);
    event_unref(probe);
    store_end(s);

    (void)state;
    s = budget_store(6 * cost);
    append_numbered(s, "a", 1, 2, T0);
    append_numbered(s, "b", 1, 2, T0);
    append_numbered(s, "c", 1, 2, T0);
    /* Exactly full: nothing was dropped. Reading a makes b the least
     * recently used. */
    expect_history(s, "a", 50, NULL, "1,2");
    expect_recover(s, "b", "0-0", 1, "1700000000000-1", "1,2");
    expect_recover(s, "c", "0-0", 1, "1700000000000-1", "1,2");
    expect_history(s, "a", 50, NULL, "1,2");
    append_numbered(s, "d", 1, 1, T0);
    /* b lost its whole history; it says so rather than replay a gap. */
    expect_recover(s, "b", "0-0", 0, "1700000000000-1", "");
    expect_recover(s, "b", "1700000000000-0", 0, "1700000000000-1", "");
    expect_recover(s, "b", "1700000000000-1", 1, "1700000000000-1", "");
    expect_history(s, "a", 50, NULL, "1,2");
    expect_history(s, "c", 50, NULL, "1,2");
    expect_history(s, "d", 50, NULL, "1");
    /* Used: c, a, d, then b (empty). The next message fits, the one after
     * takes c's history. */
    append_numbered(s, "d", 2, 1, T0);
    expect_history(s, "c", 50, NULL, "1,2");
    expect_history(s, "a", 50, NULL, "1,2");
    append_numbered(s, "d", 3, 1, T0);
    expect_history(s, "c", 50, NULL, "");
    expect_recover(s, "c", "0-0", 0, "1700000000000-1", "");
    expect_history(s, "a", 50, NULL, "1,2");
    expect_history(s, "d", 50, NULL, "1,2,3");
    store_end(s);
}

/* A message bigger than the whole budget is delivered, not kept, and the
 * room's history ends before it. */
static void test_store_memory_message_over_the_budget_is_not_kept(void **state)
{
    struct store *s = budget_store(400);
    char before[OFFSET_MAX_LEN], big[OFFSET_MAX_LEN], data[512];
    struct event *event;

    (void)state;
    append_numbered(s, "r", 1, 1, T0);
    latest(s, "r", before);
    memset(data, ' ', sizeof data - 1);
    data[sizeof data - 1] = '\0';
    data[0] = '1';
    append_full(s, "r", NULL, data, T0, big, &event);
    assert_true(event_cost(event) > 400);
    assert_int_equal(atomic_load(&event->refs), 1);
    event_unref(event);
    expect_history(s, "r", 50, NULL, "");
    expect_recover(s, "r", before, 0, big, "");
    expect_recover(s, "r", big, 1, big, "");
    append_numbered(s, "r", 3, 1, T0);
    expect_recover(s, "r", big, 1, "1700000000000-2", "3");
    store_end(s);
}

/* ---- Memory engine: --max-replay ------------------------------------------------ */

static void test_store_memory_recover_past_max_replay_is_not_recovered(void **state)
{
    struct config cfg = {.history_length = 10, .max_replay = 3};
    struct store *s = store_with(&cfg);

    (void)state;
    append_numbered(s, "r", 1, 5, T0); /* T0-0 .. T0-4 */
    expect_recover(s, "r", "1700000000000-0", 0, "1700000000000-4", "");
    expect_recover(s, "r", "1700000000000-1", 1, "1700000000000-4", "3,4,5");
    expect_recover(s, "r", "1700000000000-4", 1, "1700000000000-4", "");
    store_end(s);
}

/* ---- Memory engine: history off (--history-length 0) --------------------------- */

static void test_store_memory_length_zero_appends_without_offset(void **state)
{
    struct store *s = memory_store(0, 3600);
    char o[OFFSET_MAX_LEN];
    struct event *event;

    (void)state;
    append_full(s, "r", "alice", "{\"x\":1}", T0, o, &event);
    assert_string_equal(o, "");
    assert_string_equal(event->json, "{\"type\":\"message\",\"room\":\"r\",\"from\":\"alice\",\"data\":{\"x\":1},"
                                     "\"ts\":1700000000000}");
    /* nothing is kept: the caller has the only reference */
    assert_int_equal(atomic_load(&event->refs), 1);
    event_unref(event);
    append_full(s, "r", NULL, "2", T0, o, &event);
    assert_string_equal(o, "");
    assert_string_equal(event->json,
                        "{\"type\":\"message\",\"room\":\"r\",\"from\":null,\"data\":2,\"ts\":1700000000000}");
    event_unref(event);
    latest(s, "r", o);
    assert_string_equal(o, "0-0");
    store_end(s);
}

static void test_store_memory_length_zero_history_is_unavailable(void **state)
{
    struct store *s = memory_store(0, 0);
    struct store_call call;

    (void)state;
    append_numbered(s, "r", 1, 2, T0);
    call = history(s, "r", 50, NULL);
    assert_int_equal(call.error, WSFAN_EHISTORY_UNAVAILABLE);
    assert_int_equal(call.batch.count, 0);
    assert_null(call.batch.text);
    call = history(s, "r", 50, "1700000000000-0");
    assert_int_equal(call.error, WSFAN_EHISTORY_UNAVAILABLE);
    store_end(s);
}

static void test_store_memory_length_zero_never_recovers(void **state)
{
    struct store *s = memory_store(0, 0);

    (void)state;
    append_numbered(s, "r", 1, 2, T0);
    expect_recover(s, "r", "0-0", 0, "0-0", "");
    expect_recover(s, "r", "1700000000000-0", 0, "0-0", "");
    store_end(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_batch_joins_events_with_newlines),
        cmocka_unit_test(test_store_memory_append_builds_message_event_with_offset),
        cmocka_unit_test(test_store_memory_append_event_is_shared_with_history),
        cmocka_unit_test(test_store_memory_offsets_increase_within_a_millisecond),
        cmocka_unit_test(test_store_memory_offsets_increase_when_clock_goes_backwards),
        cmocka_unit_test(test_store_memory_rooms_have_their_own_offsets),
        cmocka_unit_test(test_store_memory_rooms_of_one_name_in_two_tenants_are_apart),
        cmocka_unit_test(test_store_memory_ts_zero_still_gets_an_offset_after_0_0),
        cmocka_unit_test(test_store_memory_empty_room_latest_is_0_0),
        cmocka_unit_test(test_store_memory_ring_keeps_last_history_length_messages),
        cmocka_unit_test(test_store_memory_ring_of_one),
        cmocka_unit_test(test_store_memory_recover_since_latest_misses_nothing),
        cmocka_unit_test(test_store_memory_recover_since_kept_offset_replays_after_it),
        cmocka_unit_test(test_store_memory_recover_since_last_trimmed_offset_replays_all_kept),
        cmocka_unit_test(test_store_memory_recover_since_before_trimmed_point_fails),
        cmocka_unit_test(test_store_memory_recover_since_from_the_future_fails),
        cmocka_unit_test(test_store_memory_recover_since_between_offsets_replays_after_it),
        cmocka_unit_test(test_store_memory_recover_untrimmed_room_from_0_0_replays_all),
        cmocka_unit_test(test_store_memory_recover_empty_room),
        cmocka_unit_test(test_store_memory_recovered_events_are_the_appended_ones),
        cmocka_unit_test(test_store_memory_history_limit_takes_the_newest_oldest_first),
        cmocka_unit_test(test_store_memory_history_before_is_exclusive),
        cmocka_unit_test(test_store_memory_history_before_oldest_is_empty),
        cmocka_unit_test(test_store_memory_history_of_unknown_room_is_empty),
        cmocka_unit_test(test_store_memory_history_after_wrap_pages_back),
        cmocka_unit_test(test_store_memory_ttl_drops_expired_messages),
        cmocka_unit_test(test_store_memory_ttl_boundary_ts_plus_ttl_equal_now_is_expired),
        cmocka_unit_test(test_store_memory_ttl_expiry_is_a_trim_for_recover),
        cmocka_unit_test(test_store_memory_ttl_expired_room_keeps_its_latest_offset),
        cmocka_unit_test(test_store_memory_ttl_zero_keeps_messages_forever),
        cmocka_unit_test(test_store_memory_never_returns_more_than_history_length),
        cmocka_unit_test(test_store_memory_duplicate_key_answers_first_offset_and_stores_nothing),
        cmocka_unit_test(test_store_memory_key_after_the_window_is_a_new_publish),
        cmocka_unit_test(test_store_memory_keys_of_different_rooms_are_independent),
        cmocka_unit_test(test_store_memory_window_zero_ignores_keys),
        cmocka_unit_test(test_store_memory_sweep_removes_expired_messages_of_idle_room),
        cmocka_unit_test(test_store_memory_sweep_is_sliced_and_reaches_every_room),
        cmocka_unit_test(test_store_memory_budget_evicts_least_recently_used_room),
        cmocka_unit_test(test_store_memory_message_over_the_budget_is_not_kept),
        cmocka_unit_test(test_store_memory_recover_past_max_replay_is_not_recovered),
        cmocka_unit_test(test_store_memory_length_zero_appends_without_offset),
        cmocka_unit_test(test_store_memory_length_zero_history_is_unavailable),
        cmocka_unit_test(test_store_memory_length_zero_never_recovers),
    };

    assert_int_equal(uv_loop_init(&loop), 0);
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    assert_int_equal(uv_loop_close(&loop), 0);
    return failed;
}
