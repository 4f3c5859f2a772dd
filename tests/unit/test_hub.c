/* test_hub.c - unit tests of app/hub.c: one worker's room and user indexes
 * (pending and joined memberships, swap-remove slots that stay consistent
 * whichever member leaves and in whatever order a large room empties,
 * members fresh from a replay and their promotion) and the fan-out of
 * an event: one frame shared by every recipient's queue, the publisher
 * skipped for echo:false, counted into the loop's metrics; rooms and users
 * of two tenants (keys) kept apart, and a tenant's broadcast reaching only
 * its connections.
 * Clients are built by hand (no sockets): a struct net_loop started with
 * net_loop_init on a uv loop that never runs until teardown, and struct
 * clients whose conns are in CONN_WS with an empty output queue. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "app/client.h"
#include "app/hub.h"
#include "codec/event.h"
#include "codec/ws.h"
#include "core/config.h"
#include "metrics/metrics.h"
#include "net/conn.h"
#include "net/loop.h"

#define NCONN 16
#define WORKER_INDEX 3

struct fixture {
    struct config cfg;
    struct metrics_worker metrics;
    uv_loop_t uv;
    struct net_loop net;
    struct hub *hub;
    struct client *c[NCONN];
    int user_indexed[NCONN];
    int tenant_indexed[NCONN];
};

static struct client *client_new(struct fixture *f, int i, const char *user)
{
    struct client *c = calloc(1, sizeof *c);
    struct conn *conn = &c->conn;

    assert_non_null(c);
    conn->loop = &f->net;
    conn->seq = 100 + (uint64_t)i;
    conn->state = CONN_WS;
    conn->refs = 1;
    conn->out.items = conn->out.inline_items;
    conn->out.cap = OUTQ_INLINE;
    conn->next = f->net.conns;
    if (conn->next)
        conn->next->prev = conn;
    f->net.conns = conn;
    c->user = user ? strdup(user) : NULL;
    return c;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);

    assert_non_null(f);
    f->cfg.send_queue_limit = 1 << 20;
    assert_int_equal(uv_loop_init(&f->uv), 0);
    assert_int_equal(net_loop_init(&f->net, &f->uv, WORKER_INDEX, &f->cfg, &f->metrics), 0);
    f->hub = hub_create(&f->net);
    assert_non_null(f->hub);
    for (int i = 0; i < NCONN; i++)
        f->c[i] = client_new(f, i, NULL);
    *state = f;
    return 0;
}

/* Drops what delivery queued on c: the frames and the dirty mark. */
static void conn_drain(struct conn *c)
{
    struct outq *q = &c->out;

    for (uint32_t i = 0; i < q->count; i++)
        frame_unref(q->items[(q->head + i) & (q->cap - 1)]);
    if (q->items != q->inline_items)
        free(q->items);
    memset(q, 0, sizeof *q);
    q->items = q->inline_items;
    q->cap = OUTQ_INLINE;
    if (c->dirty) {
        c->dirty = 0;
        c->dirty_next = NULL;
        c->refs--;
    }
}

static void drain_all(struct fixture *f)
{
    for (struct conn *c = f->net.conns; c; c = c->next)
        conn_drain(c);
    f->net.dirty = f->net.dirty_tail = NULL;
}

static void leave_quietly(struct client *c, const char *room)
{
    (void)c;
    (void)room;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    drain_all(f);
    while (f->net.conns) {
        struct client *c = client_of(f->net.conns);
        f->net.conns = c->conn.next;
        hub_conn_leave_all(f->hub, c, leave_quietly);
        for (int i = 0; i < NCONN; i++) {
            if (f->c[i] == c && f->user_indexed[i])
                hub_user_remove(f->hub, c);
            if (f->c[i] == c && f->tenant_indexed[i])
                hub_tenant_remove(f->hub, c);
        }
        free(c->user);
        if (c->claims)
            free(c->claims->tenant);
        free(c->claims);
        free(c);
    }
    /* Entries die with their last reference: LeakSanitizer sees any left. */
    hub_destroy(f->hub);
    net_loop_close(&f->net);
    assert_int_equal(uv_run(&f->uv, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&f->uv), 0);
    free(f);
    return 0;
}

static void set_user(struct fixture *f, int i, const char *user)
{
    free(f->c[i]->user);
    f->c[i]->user = strdup(user);
    assert_int_equal(hub_user_add(f->hub, f->c[i]), HUB_OK);
    f->user_indexed[i] = 1;
}

static void unset_user(struct fixture *f, int i)
{
    hub_user_remove(f->hub, f->c[i]);
    f->user_indexed[i] = 0;
}

/* Puts client i in tenant, as client_start does at the upgrade (before its
 * user is indexed: the user's key is the tenant's). */
static void set_tenant(struct fixture *f, int i, const char *tenant)
{
    struct client *c = f->c[i];
    if (!c->claims)
        assert_non_null(c->claims = calloc(1, sizeof *c->claims));
    free(c->claims->tenant);
    c->claims->tenant = strdup(tenant);
    assert_int_equal(hub_tenant_add(f->hub, f->c[i]), HUB_OK);
    f->tenant_indexed[i] = 1;
}

static void unset_tenant(struct fixture *f, int i)
{
    hub_tenant_remove(f->hub, f->c[i]);
    f->tenant_indexed[i] = 0;
    free(f->c[i]->claims->tenant);
    f->c[i]->claims->tenant = NULL;
}

static void join(struct fixture *f, int i, const char *room)
{
    assert_int_equal(hub_room_add(f->hub, f->c[i], room), HUB_OK);
    assert_int_equal(hub_room_activate(f->hub, f->c[i], room, NULL), HUB_OK);
}

static void leave(struct fixture *f, int i, const char *room)
{
    assert_int_equal(hub_room_remove(f->hub, f->c[i], room), HUB_OK);
}

#define BIT(i) (1u << (i))

/* The set of fixture clients whose conns got one frame, after checking
 * that every recipient got exactly one frame, the same frame, encoding
 * json, marked dirty once with one reference for it, and that the loop's
 * metrics counted them as deliveries to target; then empties the queues. */
static uint32_t delivered(struct fixture *f, enum event_target target, const char *json, size_t len,
                          uint64_t deliveries_before, uint64_t out_before)
{
    struct frame *shared = NULL;
    uint32_t got = 0, recipients = 0, dirty = 0;

    for (struct conn *c = f->net.conns; c; c = c->next) {
        if (c->out.count == 0) {
            assert_int_equal(c->dirty, 0);
            continue;
        }
        assert_int_equal(c->out.count, 1);
        struct frame *fr = c->out.items[c->out.head];
        if (!shared)
            shared = fr;
        assert_ptr_equal(fr, shared); /* encoded once */
        assert_int_equal(c->out.bytes, fr->len);
        assert_int_equal(c->dirty, 1);
        assert_int_equal(c->refs, 2);
        recipients++;
        for (int i = 0; i < NCONN; i++)
            if (&f->c[i]->conn == c)
                got |= BIT(i);
    }
    for (struct conn *c = f->net.dirty; c; c = c->dirty_next)
        dirty++;
    assert_int_equal(dirty, recipients);
    if (shared) {
        /* One reference per queue; the hub kept none. */
        assert_int_equal(shared->refs, recipients);
        assert_int_equal(shared->len, 2 + len);
        assert_int_equal(shared->bytes[0], 0x81);
        assert_int_equal(shared->bytes[1], len);
        assert_memory_equal(shared->bytes + 2, json, len);
    }
    assert_int_equal(f->metrics.fanout_deliveries - deliveries_before, recipients);
    assert_int_equal(f->metrics.out[target] - out_before, recipients);
    drain_all(f);
    return got;
}

/* Delivers an event of json to target/name with the given echo skip and
 * returns the set of fixture clients that got it (see delivered). */
/* Delivers an event of json to target/name and leaves it in the queues. */
static void deliver_raw(struct fixture *f, enum event_target target, const char *name, const char *json, int has_offset,
                        struct offset offset, int skip_worker, uint64_t skip_seq)
{
    struct event *ev = event_copy(target, name, json, strlen(json));

    assert_non_null(ev);
    ev->has_offset = has_offset;
    ev->offset = offset;
    ev->skip_worker = skip_worker;
    ev->skip_seq = skip_seq;
    hub_deliver(f->hub, ev);
    /* the hub took no reference of its own */
    assert_int_equal(atomic_load(&ev->refs), 1);
    event_unref(ev);
}

static uint32_t deliver_event(struct fixture *f, enum event_target target, const char *name, const char *json,
                              int has_offset, struct offset offset, int skip_worker, uint64_t skip_seq)
{
    uint64_t deliveries = f->metrics.fanout_deliveries, out = f->metrics.out[target];

    deliver_raw(f, target, name, json, has_offset, offset, skip_worker, skip_seq);
    return delivered(f, target, json, strlen(json), deliveries, out);
}

static const char message_json[] = "{\"type\":\"message\",\"room\":\"r\",\"from\":null,\"data\":1,\"ts\":1}";

static uint32_t deliver_skip(struct fixture *f, enum event_target target, const char *name, int skip_worker,
                             uint64_t skip_seq)
{
    return deliver_event(f, target, name, message_json, 0, (struct offset){0, 0}, skip_worker, skip_seq);
}

static uint32_t deliver(struct fixture *f, enum event_target target, const char *name)
{
    return deliver_skip(f, target, name, -1, 0);
}

/* ---- Rooms: pending, activate, remove ----------------------------------------- */

static void test_hub_room_add_is_pending_until_activated(void **state)
{
    struct fixture *f = *state;
    struct client *c = f->c[0];

    assert_int_equal(hub_room_count(c), 0);
    assert_false(hub_is_member(c, "r"));
    assert_int_equal(hub_room_add(f->hub, c, "r"), HUB_OK);
    /* counts and is a member, but gets nothing yet */
    assert_true(hub_is_member(c, "r"));
    assert_int_equal(hub_room_count(c), 1);
    assert_int_equal(hub_room_members(f->hub, "r"), 0);
    assert_int_equal(deliver(f, EVENT_ROOM, "r"), 0);
    assert_int_equal(hub_room_activate(f->hub, c, "r", NULL), HUB_OK);
    assert_int_equal(hub_room_members(f->hub, "r"), 1);
    assert_int_equal(hub_room_count(c), 1);
    assert_int_equal(deliver(f, EVENT_ROOM, "r"), BIT(0));
}

static void test_hub_room_add_twice_is_already(void **state)
{
    struct fixture *f = *state;
    struct client *c = f->c[0];

    assert_int_equal(hub_room_add(f->hub, c, "r"), HUB_OK);
    assert_int_equal(hub_room_add(f->hub, c, "r"), HUB_ALREADY); /* pending */
    assert_int_equal(hub_room_count(c), 1);
    assert_int_equal(hub_room_activate(f->hub, c, "r", NULL), HUB_OK);
    assert_int_equal(hub_room_add(f->hub, c, "r"), HUB_ALREADY); /* joined */
    assert_int_equal(hub_room_count(c), 1);
    assert_int_equal(hub_room_members(f->hub, "r"), 1);
}

static void test_hub_activate_twice_counts_once(void **state)
{
    struct fixture *f = *state;

    join(f, 0, "r");
    assert_int_equal(hub_room_activate(f->hub, f->c[0], "r", NULL), HUB_OK);
    assert_int_equal(hub_room_members(f->hub, "r"), 1);
    assert_int_equal(deliver(f, EVENT_ROOM, "r"), BIT(0));
    leave(f, 0, "r");
    assert_int_equal(hub_room_members(f->hub, "r"), 0);
    assert_int_equal(deliver(f, EVENT_ROOM, "r"), 0);
}

static void test_hub_activate_after_leaving_is_not_member(void **state)
{
    struct fixture *f = *state;
    struct client *c = f->c[0];

    assert_int_equal(hub_room_activate(f->hub, c, "never", NULL), HUB_NOT_MEMBER);
    /* The join was asked for, then the conn left before it completed. */
    assert_int_equal(hub_room_add(f->hub, c, "r"), HUB_OK);
    assert_int_equal(hub_room_remove(f->hub, c, "r"), HUB_OK);
    assert_int_equal(hub_room_activate(f->hub, c, "r", NULL), HUB_NOT_MEMBER);
    assert_false(hub_is_member(c, "r"));
    assert_int_equal(hub_room_members(f->hub, "r"), 0);
    assert_int_equal(hub_room_count(c), 0);
}

static void test_hub_room_remove_of_pending_and_joined(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(hub_room_remove(f->hub, f->c[0], "r"), HUB_NOT_MEMBER);
    assert_int_equal(hub_room_add(f->hub, f->c[0], "r"), HUB_OK); /* pending */
    join(f, 1, "r");
    assert_int_equal(hub_room_remove(f->hub, f->c[0], "r"), HUB_OK);
    assert_int_equal(hub_room_remove(f->hub, f->c[0], "r"), HUB_NOT_MEMBER);
    assert_int_equal(hub_room_members(f->hub, "r"), 1);
    assert_int_equal(deliver(f, EVENT_ROOM, "r"), BIT(1));
    leave(f, 1, "r");
    assert_int_equal(hub_room_remove(f->hub, f->c[1], "r"), HUB_NOT_MEMBER);
    assert_false(hub_is_member(f->c[1], "r"));
    assert_int_equal(hub_room_count(f->c[1]), 0);
    assert_int_equal(hub_room_members(f->hub, "r"), 0);
    /* The room is gone and can be made again. */
    join(f, 2, "r");
    assert_int_equal(deliver(f, EVENT_ROOM, "r"), BIT(2));
}

static void test_hub_membership_matches_whole_names(void **state)
{
    struct fixture *f = *state;
    struct client *c = f->c[0];

    join(f, 0, "ab");
    assert_true(hub_is_member(c, "ab"));
    assert_false(hub_is_member(c, "a"));
    assert_false(hub_is_member(c, "abc"));
    assert_false(hub_is_member(c, "AB"));
    assert_int_equal(hub_room_remove(f->hub, c, "a"), HUB_NOT_MEMBER);
    assert_int_equal(hub_room_activate(f->hub, c, "abc", NULL), HUB_NOT_MEMBER);
    assert_int_equal(hub_room_members(f->hub, "a"), 0);
    assert_int_equal(deliver(f, EVENT_ROOM, "a"), 0);
    assert_int_equal(deliver(f, EVENT_ROOM, "ab"), BIT(0));
}

static void test_hub_conn_in_many_rooms_keeps_the_others_when_one_leaves(void **state)
{
    struct fixture *f = *state;
    char room[32];
    enum { ROOMS = 40 };

    for (int r = 0; r < ROOMS; r++) {
        snprintf(room, sizeof room, "room-%d", r);
        join(f, 0, room);
        /* c1 is in every room too, c2 in the even ones */
        join(f, 1, room);
        if (r % 2 == 0)
            join(f, 2, room);
        assert_int_equal(hub_room_count(f->c[0]), r + 1);
    }
    /* Leave every third room, from the middle of c0's own array. */
    for (int r = 1; r < ROOMS; r += 3) {
        snprintf(room, sizeof room, "room-%d", r);
        leave(f, 0, room);
    }
    for (int r = 0; r < ROOMS; r++) {
        uint32_t expect = BIT(1) | (r % 3 == 1 ? 0 : BIT(0)) | (r % 2 == 0 ? BIT(2) : 0);
        snprintf(room, sizeof room, "room-%d", r);
        assert_int_equal(hub_is_member(f->c[0], room), r % 3 != 1);
        assert_int_equal(hub_room_members(f->hub, room), __builtin_popcount(expect));
        assert_int_equal(deliver(f, EVENT_ROOM, room), expect);
    }
    assert_int_equal(hub_room_count(f->c[0]), ROOMS - (ROOMS + 1) / 3);
}

/* ---- Rooms: swap-remove slots ---------------------------------------------------- */

static void test_hub_removing_a_member_from_the_middle_keeps_slots(void **state)
{
    struct fixture *f = *state;
    uint32_t members = 0;

    for (int i = 0; i < 6; i++) {
        join(f, i, "r");
        members |= BIT(i);
    }
    assert_int_equal(deliver(f, EVENT_ROOM, "r"), members);
    /* c5 moves into c1's slot; then c5 leaves from there, and so on. */
    static const int order[] = {1, 5, 0, 3, 4, 2};
    for (size_t k = 0; k < 6; k++) {
        leave(f, order[k], "r");
        members &= ~BIT(order[k]);
        assert_false(hub_is_member(f->c[order[k]], "r"));
        assert_int_equal(hub_room_members(f->hub, "r"), __builtin_popcount(members));
        assert_int_equal(deliver(f, EVENT_ROOM, "r"), members);
    }
}

static void test_hub_room_index_matches_reference_under_random_joins_and_leaves(void **state)
{
    struct fixture *f = *state;
    static const char *rooms[] = {"a", "b", "c"};
    uint32_t pending[3] = {0}, joined[3] = {0};
    uint32_t rng = 7;

    for (int step = 0; step < 3000; step++) {
        rng = rng * 1103515245u + 12345u;
        int i = (int)((rng >> 16) % NCONN), r = (int)((rng >> 8) % 3), op = (int)((rng >> 4) % 3);
        struct client *c = f->c[i];
        uint32_t bit = BIT(i);
        int member = ((pending[r] | joined[r]) & bit) != 0;
        if (op == 0) {
            assert_int_equal(hub_room_add(f->hub, c, rooms[r]), member ? HUB_ALREADY : HUB_OK);
            if (!member)
                pending[r] |= bit;
        } else if (op == 1) {
            assert_int_equal(hub_room_activate(f->hub, c, rooms[r], NULL), member ? HUB_OK : HUB_NOT_MEMBER);
            if (member) {
                pending[r] &= ~bit;
                joined[r] |= bit;
            }
        } else {
            assert_int_equal(hub_room_remove(f->hub, c, rooms[r]), member ? HUB_OK : HUB_NOT_MEMBER);
            pending[r] &= ~bit;
            joined[r] &= ~bit;
        }
        for (int k = 0; k < 3; k++)
            assert_int_equal(hub_room_members(f->hub, rooms[k]), __builtin_popcount(joined[k]));
        if (step % 10 == 0)
            for (int k = 0; k < 3; k++)
                assert_int_equal(deliver(f, EVENT_ROOM, rooms[k]), joined[k]);
    }
    for (int i = 0; i < NCONN; i++) {
        uint32_t count = 0;
        for (int k = 0; k < 3; k++) {
            int member = ((pending[k] | joined[k]) & BIT(i)) != 0;
            assert_int_equal(hub_is_member(f->c[i], rooms[k]), member);
            count += (uint32_t)member;
        }
        assert_int_equal(hub_room_count(f->c[i]), count);
    }
}

/* ---- Rooms: a large room emptied in any order -------------------------------------- */

enum { BIG = 300 };

/* Delivers to room and checks that exactly the clients of cs marked in
 * expect got it, once each; then empties the queues. */
static void expect_big(struct fixture *f, struct client **cs, const uint8_t *expect, const char *room, int has_offset,
                       uint64_t ms)
{
    deliver_raw(f, EVENT_ROOM, room, message_json, has_offset, (struct offset){ms, 0}, -1, 0);
    for (int i = 0; i < BIG; i++)
        assert_int_equal(cs[i]->conn.out.count, expect[i]);
    drain_all(f);
}

/* Every member of a large room leaves (alone, or with all its rooms as
 * when it closes): in joining order, in reverse, and from the middle out.
 * Half of them are fresh from a replay, promoted half-way; each is in two
 * small rooms too, joined before and after the large one, so that its own
 * array of rooms moves as well as the room's. The ones left, and only
 * they, get the room's events after each step. */
static void test_hub_a_large_room_empties_in_any_order(void **state)
{
    struct fixture *f = *state;
    struct client *cs[BIG];
    uint8_t in[BIG], in_small[BIG];
    char small[2][16];

    for (int i = 0; i < BIG; i++)
        cs[i] = client_new(f, 1000 + i, NULL);
    for (int order = 0; order < 3; order++) {
        uint32_t joined = 0;
        for (int i = 0; i < BIG; i++) {
            snprintf(small[0], sizeof small[0], "s%d", i % 7);
            snprintf(small[1], sizeof small[1], "t%d", i % 5);
            assert_int_equal(hub_room_add(f->hub, cs[i], small[0]), HUB_OK);
            assert_int_equal(hub_room_activate(f->hub, cs[i], small[0], NULL), HUB_OK);
            assert_int_equal(hub_room_add(f->hub, cs[i], "big"), HUB_OK);
            assert_int_equal(hub_room_activate(f->hub, cs[i], "big", i % 2 ? &(struct offset){10, 0} : NULL), HUB_OK);
            assert_int_equal(hub_room_add(f->hub, cs[i], small[1]), HUB_OK);
            assert_int_equal(hub_room_activate(f->hub, cs[i], small[1], NULL), HUB_OK);
            in[i] = in_small[i] = 1;
            joined += i % 2 == 0;
        }
        for (int k = 0; k < BIG; k++) {
            /* 7 and BIG have no common divisor: k * 7 % BIG visits each once. */
            int i = order == 0 ? k : order == 1 ? BIG - 1 - k : (BIG / 2 + k * 7) % BIG;
            int was_joined = i % 2 == 0 || k > BIG / 2;
            if (k % 3 == 0) {
                hub_conn_leave_all(f->hub, cs[i], leave_quietly);
                in_small[i] = 0;
            } else {
                assert_int_equal(hub_room_remove(f->hub, cs[i], "big"), HUB_OK);
            }
            in[i] = 0;
            joined -= (uint32_t)was_joined;
            assert_false(hub_is_member(cs[i], "big"));
            assert_int_equal(hub_room_members(f->hub, "big"), joined);
            if (k % 20 == 0)
                expect_big(f, cs, in, "big", 0, 0);
            if (k == BIG / 2) {
                /* past the fresh ones' replay: all of them become members */
                expect_big(f, cs, in, "big", 1, 11);
                for (int j = 0; j < BIG; j++)
                    joined += in[j] && j % 2;
                assert_int_equal(hub_room_members(f->hub, "big"), joined);
            }
        }
        expect_big(f, cs, in, "big", 0, 0);
        for (int r = 0; r < 7; r++) {
            uint8_t expect[BIG];
            snprintf(small[0], sizeof small[0], "s%d", r);
            for (int i = 0; i < BIG; i++)
                expect[i] = in_small[i] && i % 7 == r;
            expect_big(f, cs, expect, small[0], 0, 0);
        }
        for (int i = 0; i < BIG; i++) {
            assert_int_equal(hub_room_count(cs[i]), in_small[i] ? 2 : 0);
            hub_conn_leave_all(f->hub, cs[i], leave_quietly);
        }
    }
}

/* ---- Leaving everything ------------------------------------------------------------ */

static char left_rooms[8][NAME_MAX_LEN + 1];
static int left_count;
static struct client *left_conn;

static void record_leave(struct client *c, const char *room)
{
    assert_ptr_equal(c, left_conn);
    assert_true(left_count < 8);
    /* still a member while told */
    assert_true(hub_is_member(c, room));
    strcpy(left_rooms[left_count++], room);
}

static int left_includes(const char *room)
{
    int n = 0;
    for (int i = 0; i < left_count; i++)
        n += !strcmp(left_rooms[i], room);
    return n;
}

static void test_hub_leave_all_reports_each_room_then_forgets_them(void **state)
{
    struct fixture *f = *state;

    join(f, 0, "a");
    join(f, 0, "b");
    assert_int_equal(hub_room_add(f->hub, f->c[0], "pending"), HUB_OK);
    join(f, 0, "c");
    join(f, 1, "a");
    join(f, 1, "c");
    join(f, 2, "b");

    left_count = 0;
    left_conn = f->c[0];
    hub_conn_leave_all(f->hub, f->c[0], record_leave);
    assert_int_equal(left_count, 4);
    assert_int_equal(left_includes("a"), 1);
    assert_int_equal(left_includes("b"), 1);
    assert_int_equal(left_includes("c"), 1);
    assert_int_equal(left_includes("pending"), 1);

    assert_int_equal(hub_room_count(f->c[0]), 0);
    assert_false(hub_is_member(f->c[0], "a"));
    assert_false(hub_is_member(f->c[0], "pending"));
    assert_int_equal(deliver(f, EVENT_ROOM, "a"), BIT(1));
    assert_int_equal(deliver(f, EVENT_ROOM, "b"), BIT(2));
    assert_int_equal(deliver(f, EVENT_ROOM, "c"), BIT(1));
    assert_int_equal(hub_room_members(f->hub, "pending"), 0);

    /* Nothing to leave: no callback. */
    left_count = 0;
    hub_conn_leave_all(f->hub, f->c[0], record_leave);
    assert_int_equal(left_count, 0);
    /* The conn can join again. */
    join(f, 0, "a");
    assert_int_equal(deliver(f, EVENT_ROOM, "a"), BIT(0) | BIT(1));
}

/* ---- Rooms: members fresh from a replay ----------------------------------------- */

/* A persisted event of room r at offset ms-seq. */
static uint32_t deliver_at(struct fixture *f, uint64_t ms, uint64_t seq)
{
    return deliver_event(f, EVENT_ROOM, "r", message_json, 1, (struct offset){ms, seq}, -1, 0);
}

static void activate_after(struct fixture *f, int i, uint64_t ms, uint64_t seq)
{
    assert_int_equal(hub_room_add(f->hub, f->c[i], "r"), HUB_OK);
    assert_int_equal(hub_room_activate(f->hub, f->c[i], "r", &(struct offset){ms, seq}), HUB_OK);
    assert_false(hub_is_pending(f->c[i], "r"));
    assert_true(hub_is_member(f->c[i], "r"));
}

static void test_hub_fresh_member_skips_persisted_events_its_replay_had(void **state)
{
    struct fixture *f = *state;

    join(f, 0, "r");
    activate_after(f, 1, 10, 5);
    /* at or below the replay's offset: the replay had it */
    assert_int_equal(deliver_at(f, 10, 4), BIT(0));
    assert_int_equal(deliver_at(f, 9, 99), BIT(0));
    assert_int_equal(deliver_at(f, 10, 5), BIT(0));
    /* events without an offset were in no replay */
    assert_int_equal(deliver(f, EVENT_ROOM, "r"), BIT(0) | BIT(1));
    assert_int_equal(hub_room_members(f->hub, "r"), 1);
    /* the first one past it reaches it once, and makes it an ordinary member */
    assert_int_equal(deliver_at(f, 10, 6), BIT(0) | BIT(1));
    assert_int_equal(hub_room_members(f->hub, "r"), 2);
    assert_int_equal(deliver_at(f, 10, 3), BIT(0) | BIT(1));
    leave(f, 1, "r");
    assert_int_equal(deliver_at(f, 11, 0), BIT(0));
    assert_int_equal(hub_room_members(f->hub, "r"), 1);
}

static void test_hub_fresh_members_each_have_their_own_offset(void **state)
{
    struct fixture *f = *state;

    activate_after(f, 0, 5, 0);
    activate_after(f, 1, 7, 0);
    activate_after(f, 2, 6, 0);
    assert_int_equal(hub_room_members(f->hub, "r"), 0);
    assert_int_equal(deliver_at(f, 5, 0), 0);
    assert_int_equal(deliver_at(f, 6, 0), BIT(0));
    assert_int_equal(deliver_at(f, 7, 0), BIT(0) | BIT(2));
    assert_int_equal(hub_room_members(f->hub, "r"), 2);
    assert_int_equal(deliver_at(f, 8, 0), BIT(0) | BIT(1) | BIT(2));
    assert_int_equal(hub_room_members(f->hub, "r"), 3);
    /* slots stay right after the promotions */
    leave(f, 0, "r");
    assert_int_equal(deliver_at(f, 9, 0), BIT(1) | BIT(2));
    leave(f, 2, "r");
    assert_int_equal(deliver(f, EVENT_ROOM, "r"), BIT(1));
}

static void test_hub_fresh_member_can_leave_before_it_is_promoted(void **state)
{
    struct fixture *f = *state;

    join(f, 0, "r");
    activate_after(f, 1, 10, 0);
    activate_after(f, 2, 10, 0);
    leave(f, 1, "r");
    assert_false(hub_is_member(f->c[1], "r"));
    assert_int_equal(hub_room_count(f->c[1]), 0);
    assert_int_equal(deliver(f, EVENT_ROOM, "r"), BIT(0) | BIT(2));
    assert_int_equal(deliver_at(f, 11, 0), BIT(0) | BIT(2));
    /* and from leave_all */
    activate_after(f, 3, 20, 0);
    left_count = 0;
    left_conn = f->c[3];
    hub_conn_leave_all(f->hub, f->c[3], record_leave);
    assert_int_equal(left_count, 1);
    assert_int_equal(deliver_at(f, 21, 0), BIT(0) | BIT(2));
    /* a room of fresh members only goes when the last one leaves */
    activate_after(f, 4, 1, 0);
    leave(f, 0, "r");
    leave(f, 2, "r");
    leave(f, 4, "r");
    assert_int_equal(hub_room_members(f->hub, "r"), 0);
    assert_int_equal(deliver_at(f, 30, 0), 0);
}

static void test_hub_fresh_member_publisher_is_skipped_too(void **state)
{
    struct fixture *f = *state;

    join(f, 0, "r");
    activate_after(f, 1, 10, 0);
    assert_int_equal(deliver_skip(f, EVENT_ROOM, "r", WORKER_INDEX, f->c[1]->conn.seq), BIT(0));
    /* promoted by an event it does not get */
    assert_int_equal(
        deliver_event(f, EVENT_ROOM, "r", message_json, 1, (struct offset){11, 0}, WORKER_INDEX, f->c[1]->conn.seq),
        BIT(0));
    assert_int_equal(hub_room_members(f->hub, "r"), 2);
    assert_int_equal(deliver_at(f, 10, 0), BIT(0) | BIT(1));
}

/* ---- Rooms: the offset a local join starts from ---------------------------------- */

static void test_hub_room_top_needs_an_active_member_and_an_offset(void **state)
{
    struct fixture *f = *state;
    struct offset top;

    assert_false(hub_room_top(f->hub, "r", &top));
    /* a pending member: the worker may not get the room's events yet */
    assert_int_equal(hub_room_add(f->hub, f->c[0], "r"), HUB_OK);
    assert_false(hub_room_top(f->hub, "r", &top));
    /* joined without an offset: none known until a persisted event comes */
    assert_int_equal(hub_room_activate(f->hub, f->c[0], "r", NULL), HUB_OK);
    assert_false(hub_room_top(f->hub, "r", &top));
    deliver(f, EVENT_ROOM, "r");
    assert_false(hub_room_top(f->hub, "r", &top));
    deliver_at(f, 10, 2);
    assert_true(hub_room_top(f->hub, "r", &top));
    assert_true(top.ms == 10 && top.seq == 2);
    /* once nobody is in the room, what the worker knew goes with it */
    leave(f, 0, "r");
    assert_false(hub_room_top(f->hub, "r", &top));
}

static void test_hub_room_top_is_the_newest_of_replies_and_deliveries(void **state)
{
    struct fixture *f = *state;
    struct offset top;

    activate_after(f, 0, 10, 5);
    assert_true(hub_room_top(f->hub, "r", &top));
    assert_true(top.ms == 10 && top.seq == 5);
    /* an older join reply does not move it back */
    activate_after(f, 1, 9, 0);
    assert_true(hub_room_top(f->hub, "r", &top));
    assert_true(top.ms == 10 && top.seq == 5);
    deliver_at(f, 10, 6);
    assert_true(hub_room_top(f->hub, "r", &top));
    assert_true(top.ms == 10 && top.seq == 6);
    /* a member that starts there gets only what follows */
    activate_after(f, 2, top.ms, top.seq);
    assert_int_equal(deliver_at(f, 10, 6), BIT(0) | BIT(1));
    assert_int_equal(deliver_at(f, 10, 7), BIT(0) | BIT(1) | BIT(2));
}

/* Random joins (pending, then joined or fresh from a replay at some
 * offset), leaves, closes and deliveries, checked against a model after
 * every step: the index bookkeeping of every move, including promotions. */
static void test_hub_room_index_matches_reference_with_fresh_members(void **state)
{
    struct fixture *f = *state;
    static const char *rooms[] = {"a", "b", "c"};
    enum { NONE, PENDING, FRESH, JOINED };
    int st[NCONN][3] = {{0}};
    uint64_t after[NCONN][3] = {{0}}, last[3] = {0};
    uint32_t rng = 11;

    for (int step = 0; step < 4000; step++) {
        rng = rng * 1103515245u + 12345u;
        int i = (int)((rng >> 16) % NCONN), r = (int)((rng >> 8) % 3), op = (int)((rng >> 4) % 7);
        struct client *c = f->c[i];
        int *s = &st[i][r];
        if (op == 0) {
            assert_int_equal(hub_room_add(f->hub, c, rooms[r]), *s ? HUB_ALREADY : HUB_OK);
            if (!*s)
                *s = PENDING;
        } else if (op == 1 || op == 2) {
            uint64_t at = last[r] + (rng >> 24) % 3;
            assert_int_equal(hub_room_activate(f->hub, c, rooms[r], op == 1 ? NULL : &(struct offset){at, 0}),
                             *s ? HUB_OK : HUB_NOT_MEMBER);
            if (*s == PENDING) {
                *s = op == 1 ? JOINED : FRESH;
                after[i][r] = at;
            }
        } else if (op == 3) {
            assert_int_equal(hub_room_remove(f->hub, c, rooms[r]), *s ? HUB_OK : HUB_NOT_MEMBER);
            *s = NONE;
        } else if (op == 4 && (rng >> 28) % 4 == 0) {
            hub_conn_leave_all(f->hub, c, leave_quietly);
            for (int k = 0; k < 3; k++)
                st[i][k] = NONE;
        } else if (op >= 5) {
            /* a persisted event (op 5) goes past the fresh ones' offsets at or below it */
            int persisted = op == 5;
            uint32_t expect = 0;
            last[r] += (uint64_t)persisted;
            for (int j = 0; j < NCONN; j++) {
                int *sj = &st[j][r];
                if (*sj == FRESH && persisted && after[j][r] < last[r])
                    *sj = JOINED;
                if (*sj == JOINED || (*sj == FRESH && !persisted))
                    expect |= BIT(j);
            }
            assert_int_equal(
                deliver_event(f, EVENT_ROOM, rooms[r], message_json, persisted, (struct offset){last[r], 0}, -1, 0),
                expect);
        }
        for (int k = 0; k < 3; k++) {
            uint32_t joined = 0;
            for (int j = 0; j < NCONN; j++)
                joined += st[j][k] == JOINED;
            assert_int_equal(hub_room_members(f->hub, rooms[k]), joined);
        }
        for (int k = 0; k < 3; k++) {
            assert_int_equal(hub_is_member(c, rooms[k]), st[i][k] != NONE);
            assert_int_equal(hub_is_pending(c, rooms[k]), st[i][k] == PENDING);
        }
    }
}

/* ---- Users ------------------------------------------------------------------------ */

static void test_hub_user_index_keeps_slots_when_one_leaves_from_the_middle(void **state)
{
    struct fixture *f = *state;
    uint32_t alice = 0;

    for (int i = 0; i < 6; i++) {
        set_user(f, i, "alice");
        alice |= BIT(i);
    }
    set_user(f, 6, "bob");
    assert_int_equal(deliver(f, EVENT_USER, "alice"), alice);
    assert_int_equal(deliver(f, EVENT_USER, "bob"), BIT(6));
    assert_int_equal(deliver(f, EVENT_USER, "carol"), 0);

    static const int order[] = {2, 5, 0, 4, 1, 3};
    for (size_t k = 0; k < 6; k++) {
        unset_user(f, order[k]);
        alice &= ~BIT(order[k]);
        assert_int_equal(deliver(f, EVENT_USER, "alice"), alice);
        assert_int_equal(deliver(f, EVENT_USER, "bob"), BIT(6));
    }
    /* Gone, and back again. */
    set_user(f, 3, "alice");
    assert_int_equal(deliver(f, EVENT_USER, "alice"), BIT(3));
}

static void test_hub_users_and_rooms_are_separate_namespaces(void **state)
{
    struct fixture *f = *state;

    set_user(f, 0, "same");
    join(f, 1, "same");
    assert_int_equal(deliver(f, EVENT_USER, "same"), BIT(0));
    assert_int_equal(deliver(f, EVENT_ROOM, "same"), BIT(1));
}

/* ---- Tenants ---------------------------------------------------------------------- */

/* Rooms and users are keys: "general" of acme, of globex and of no tenant
 * are three rooms; "alice" likewise three users. */
static void test_hub_rooms_and_users_of_two_tenants_are_apart(void **state)
{
    struct fixture *f = *state;

    set_tenant(f, 0, "acme");
    set_tenant(f, 1, "globex");
    set_tenant(f, 3, "acme");
    set_tenant(f, 4, "globex");
    join(f, 0, "acme/general");
    join(f, 1, "globex/general");
    join(f, 2, "general");
    set_user(f, 3, "alice");
    set_user(f, 4, "alice");
    set_user(f, 5, "alice");
    assert_true(hub_is_member(f->c[0], "acme/general"));
    assert_false(hub_is_member(f->c[0], "general"));
    assert_false(hub_is_member(f->c[2], "acme/general"));
    assert_int_equal(hub_room_members(f->hub, "acme/general"), 1);
    assert_int_equal(deliver(f, EVENT_ROOM, "acme/general"), BIT(0));
    assert_int_equal(deliver(f, EVENT_ROOM, "globex/general"), BIT(1));
    assert_int_equal(deliver(f, EVENT_ROOM, "general"), BIT(2));
    assert_int_equal(deliver(f, EVENT_USER, "acme/alice"), BIT(3));
    assert_int_equal(deliver(f, EVENT_USER, "globex/alice"), BIT(4));
    assert_int_equal(deliver(f, EVENT_USER, "alice"), BIT(5));
    unset_user(f, 3);
    assert_int_equal(deliver(f, EVENT_USER, "acme/alice"), 0);
    assert_int_equal(deliver(f, EVENT_USER, "globex/alice"), BIT(4));
}

/* A tenant's broadcast reaches its connections only (with a user or not);
 * one without a tenant reaches every connection without one. */
static void test_hub_tenant_broadcast_reaches_only_its_connections(void **state)
{
    struct fixture *f = *state;
    uint32_t all = (1u << NCONN) - 1, acme = BIT(0) | BIT(1) | BIT(7), globex = BIT(2);

    set_tenant(f, 0, "acme");
    set_tenant(f, 1, "acme");
    set_tenant(f, 7, "acme");
    set_tenant(f, 2, "globex");
    set_user(f, 0, "alice");
    assert_int_equal(deliver(f, EVENT_ALL, "acme/"), acme);
    assert_int_equal(deliver(f, EVENT_ALL, "globex/"), globex);
    assert_int_equal(deliver(f, EVENT_ALL, "initech/"), 0);
    assert_int_equal(deliver(f, EVENT_ALL, ""), all & ~acme & ~globex);
    /* The publisher of a tenant's broadcast is skipped like any other. */
    assert_int_equal(deliver_skip(f, EVENT_ALL, "acme/", WORKER_INDEX, f->c[1]->conn.seq), acme & ~BIT(1));
    /* Leaving from the middle keeps the others. */
    unset_tenant(f, 1);
    assert_int_equal(deliver(f, EVENT_ALL, "acme/"), BIT(0) | BIT(7));
    assert_int_equal(deliver(f, EVENT_ALL, ""), all & ~(BIT(0) | BIT(7)) & ~globex);
    unset_user(f, 0);
    unset_tenant(f, 0);
    unset_tenant(f, 7);
    unset_tenant(f, 2);
    assert_int_equal(deliver(f, EVENT_ALL, "acme/"), 0);
    assert_int_equal(deliver(f, EVENT_ALL, ""), all);
}

/* ---- Delivery ---------------------------------------------------------------------- */

static void test_hub_deliver_room_shares_one_frame_among_joined_members(void **state)
{
    struct fixture *f = *state;

    join(f, 0, "r");
    join(f, 1, "r");
    join(f, 2, "r");
    assert_int_equal(hub_room_add(f->hub, f->c[3], "r"), HUB_OK); /* pending: nothing */
    join(f, 4, "other");
    /* deliver() checks the shared frame, its bytes, refs and dirty marks. */
    assert_int_equal(deliver(f, EVENT_ROOM, "r"), BIT(0) | BIT(1) | BIT(2));
    assert_int_equal(deliver(f, EVENT_ROOM, "other"), BIT(4));
}

static void test_hub_deliver_skips_exactly_the_publisher(void **state)
{
    struct fixture *f = *state;
    uint32_t all = 0;

    for (int i = 0; i < 5; i++) {
        join(f, i, "r");
        set_user(f, i, "alice");
        all |= BIT(i);
    }
    assert_int_equal(deliver_skip(f, EVENT_ROOM, "r", WORKER_INDEX, f->c[2]->conn.seq), all & ~BIT(2));
    assert_int_equal(deliver_skip(f, EVENT_USER, "alice", WORKER_INDEX, f->c[4]->conn.seq), all & ~BIT(4));
    assert_int_equal(deliver_skip(f, EVENT_ALL, "", WORKER_INDEX, f->c[0]->conn.seq), ((1u << NCONN) - 1) & ~BIT(0));
    /* The same seq on another worker is another connection. */
    assert_int_equal(deliver_skip(f, EVENT_ROOM, "r", WORKER_INDEX + 1, f->c[2]->conn.seq), all);
    /* No skip (-1) and a seq of nobody skip nobody. */
    assert_int_equal(deliver_skip(f, EVENT_ROOM, "r", -1, f->c[2]->conn.seq), all);
    assert_int_equal(deliver_skip(f, EVENT_ROOM, "r", WORKER_INDEX, 99999), all);
}

static void test_hub_deliver_all_reaches_every_upgraded_connection(void **state)
{
    struct fixture *f = *state;
    uint32_t all = (1u << NCONN) - 1;

    join(f, 0, "r");
    f->c[5]->conn.state = CONN_HTTP;    /* not upgraded yet */
    f->c[6]->conn.state = CONN_CLOSING; /* on its way out */
    assert_int_equal(deliver(f, EVENT_ALL, ""), all & ~BIT(5) & ~BIT(6));
    f->c[5]->conn.state = CONN_WS;
    f->c[6]->conn.state = CONN_WS;
}

static void test_hub_deliver_to_unknown_room_or_user_queues_nothing(void **state)
{
    struct fixture *f = *state;

    join(f, 0, "r");
    set_user(f, 1, "alice");
    assert_int_equal(deliver(f, EVENT_ROOM, "nobody"), 0);
    assert_int_equal(deliver(f, EVENT_USER, "nobody"), 0);
    assert_int_equal(deliver(f, EVENT_ROOM, "alice"), 0);
    assert_int_equal(deliver(f, EVENT_USER, "r"), 0);
}

static void test_hub_deliver_queues_events_in_order_and_marks_dirty_once(void **state)
{
    struct fixture *f = *state;
    struct event *ev[6];
    char json[32];

    join(f, 0, "r");
    join(f, 1, "r");
    /* More events than the inline ring holds. */
    for (int k = 0; k < 6; k++) {
        int n = snprintf(json, sizeof json, "{\"n\":%d}", k);
        ev[k] = event_copy(EVENT_ROOM, "r", json, (size_t)n);
        assert_non_null(ev[k]);
        hub_deliver(f->hub, ev[k]);
        event_unref(ev[k]);
    }
    for (int i = 0; i < 2; i++) {
        struct conn *c = &f->c[i]->conn;
        assert_int_equal(c->out.count, 6);
        assert_int_equal(c->dirty, 1);
        assert_int_equal(c->refs, 2);
        for (uint32_t k = 0; k < 6; k++) {
            struct frame *fr = c->out.items[(c->out.head + k) & (c->out.cap - 1)];
            int n = snprintf(json, sizeof json, "{\"n\":%u}", k);
            assert_int_equal(fr->len, 2 + (uint32_t)n);
            assert_memory_equal(fr->bytes + 2, json, (size_t)n);
            assert_int_equal(fr->refs, 2);
            /* both conns hold the same frame */
            struct conn *other = &f->c[1 - i]->conn;
            assert_ptr_equal(fr, other->out.items[(other->out.head + k) & (other->out.cap - 1)]);
        }
    }
    uint32_t dirty = 0;
    for (struct conn *c = f->net.dirty; c; c = c->dirty_next)
        dirty++;
    assert_int_equal(dirty, 2);
    assert_int_equal(f->metrics.fanout_events[METRICS_OUT_ROOM], 6);
    assert_int_equal(f->metrics.fanout_deliveries, 12);
    drain_all(f);
}

/* client_start() closes a client whose hub_user_add() or bus request ran
 * out of memory, and the close path (client.c's on_close) then calls
 * hub_user_remove() for it although it was never indexed. Its user_slot is
 * then 0 (calloc'ed client, and a failed add leaves it so), a slot another
 * connection of the same user may hold: removing must not take that one
 * out of the index. */
static void test_hub_user_remove_of_unindexed_conn_leaves_the_others(void **state)
{
    struct fixture *f = *state;

    set_user(f, 0, "alice");
    set_user(f, 1, "alice");
    free(f->c[2]->user);
    f->c[2]->user = strdup("alice"); /* never hub_user_add()ed */
    hub_user_remove(f->hub, f->c[2]);
    assert_int_equal(deliver(f, EVENT_USER, "alice"), BIT(0) | BIT(1));
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_hub_room_add_is_pending_until_activated),
        T(test_hub_room_add_twice_is_already),
        T(test_hub_activate_twice_counts_once),
        T(test_hub_activate_after_leaving_is_not_member),
        T(test_hub_room_remove_of_pending_and_joined),
        T(test_hub_membership_matches_whole_names),
        T(test_hub_conn_in_many_rooms_keeps_the_others_when_one_leaves),
        T(test_hub_removing_a_member_from_the_middle_keeps_slots),
        T(test_hub_room_index_matches_reference_under_random_joins_and_leaves),
        T(test_hub_a_large_room_empties_in_any_order),
        T(test_hub_leave_all_reports_each_room_then_forgets_them),
        T(test_hub_fresh_member_skips_persisted_events_its_replay_had),
        T(test_hub_fresh_members_each_have_their_own_offset),
        T(test_hub_fresh_member_can_leave_before_it_is_promoted),
        T(test_hub_fresh_member_publisher_is_skipped_too),
        T(test_hub_room_top_needs_an_active_member_and_an_offset),
        T(test_hub_room_top_is_the_newest_of_replies_and_deliveries),
        T(test_hub_room_index_matches_reference_with_fresh_members),
        T(test_hub_user_index_keeps_slots_when_one_leaves_from_the_middle),
        T(test_hub_users_and_rooms_are_separate_namespaces),
        T(test_hub_rooms_and_users_of_two_tenants_are_apart),
        T(test_hub_tenant_broadcast_reaches_only_its_connections),
        T(test_hub_deliver_room_shares_one_frame_among_joined_members),
        T(test_hub_deliver_skips_exactly_the_publisher),
        T(test_hub_deliver_all_reaches_every_upgraded_connection),
        T(test_hub_deliver_to_unknown_room_or_user_queues_nothing),
        T(test_hub_deliver_queues_events_in_order_and_marks_dirty_once),
        T(test_hub_user_remove_of_unindexed_conn_leaves_the_others),
    };
#undef T

    return cmocka_run_group_tests(tests, NULL, NULL);
}
