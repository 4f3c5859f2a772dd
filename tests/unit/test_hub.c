/* test_hub.c - unit tests of hub.c: one worker's room and user indexes
 * (pending and joined memberships, swap-remove slots that stay consistent
 * whichever member leaves) and the fan-out of a bus event: one frame shared
 * by every recipient's queue, the publisher skipped for echo:false.
 * Connections are built by hand (no sockets): a struct worker with a server
 * and config, and conns in CONN_WS with an empty output queue. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "conn.h"
#include "hub.h"
#include "server.h"
#include "ws.h"

#define NCONN 16
#define WORKER_INDEX 3

struct fixture {
    struct config cfg;
    struct server server;
    struct worker *w;
    struct hub *hub;
    struct conn *c[NCONN];
    int user_indexed[NCONN];
};

static struct conn *conn_new(struct fixture *f, int i, const char *user)
{
    struct conn *c = calloc(1, sizeof *c);

    assert_non_null(c);
    c->worker = f->w;
    c->seq = 100 + (uint64_t)i;
    c->state = CONN_WS;
    c->refs = 1;
    c->user = user ? strdup(user) : NULL;
    c->out.items = c->out.inline_items;
    c->out.cap = OUTQ_INLINE;
    c->next = f->w->conns;
    if (c->next)
        c->next->prev = c;
    f->w->conns = c;
    return c;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);

    assert_non_null(f);
    f->cfg.send_queue_limit = 1 << 20;
    f->server.cfg = &f->cfg;
    f->w = calloc(1, sizeof *f->w);
    assert_non_null(f->w);
    f->w->server = &f->server;
    f->w->index = WORKER_INDEX;
    f->hub = hub_create(f->w);
    assert_non_null(f->hub);
    f->w->hub = f->hub;
    for (int i = 0; i < NCONN; i++)
        f->c[i] = conn_new(f, i, NULL);
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
    for (struct conn *c = f->w->conns; c; c = c->next)
        conn_drain(c);
    f->w->dirty = f->w->dirty_tail = NULL;
}

static void leave_quietly(struct conn *c, const char *room)
{
    (void)c;
    (void)room;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    drain_all(f);
    while (f->w->conns) {
        struct conn *c = f->w->conns;
        f->w->conns = c->next;
        hub_conn_leave_all(f->hub, c, leave_quietly);
        for (int i = 0; i < NCONN; i++)
            if (f->c[i] == c && f->user_indexed[i])
                hub_user_remove(f->hub, c);
        free(c->user);
        free(c);
    }
    /* Entries die with their last reference: LeakSanitizer sees any left. */
    hub_destroy(f->hub);
    free(f->w);
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

/* Delivers json to target/name with the given echo skip and returns the
 * set of fixture conns that got it, after checking that every recipient
 * got exactly one frame, the same frame, encoding json, marked dirty once
 * with one reference for it; then empties the queues. */
static uint32_t deliver_skip(struct fixture *f, enum bus_target target, const char *name, int skip_worker,
                             uint64_t skip_seq)
{
    static const char json[] = "{\"type\":\"message\",\"room\":\"r\",\"from\":null,\"data\":1,\"ts\":1}";
    struct bus_event *ev = bus_event_create(target, name, json, sizeof json - 1);
    struct frame *shared = NULL;
    uint32_t got = 0, recipients = 0, dirty = 0;

    assert_non_null(ev);
    ev->skip_worker = skip_worker;
    ev->skip_seq = skip_seq;
    hub_deliver(f->hub, ev);
    bus_event_unref(ev);

    for (struct conn *c = f->w->conns; c; c = c->next) {
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
            if (f->c[i] == c)
                got |= BIT(i);
    }
    for (struct conn *c = f->w->dirty; c; c = c->dirty_next)
        dirty++;
    assert_int_equal(dirty, recipients);
    if (shared) {
        /* One reference per queue; the hub kept none. */
        assert_int_equal(shared->refs, recipients);
        assert_int_equal(shared->len, 2 + sizeof json - 1);
        assert_int_equal(shared->bytes[0], 0x81);
        assert_int_equal(shared->bytes[1], sizeof json - 1);
        assert_memory_equal(shared->bytes + 2, json, sizeof json - 1);
    }
    drain_all(f);
    return got;
}

static uint32_t deliver(struct fixture *f, enum bus_target target, const char *name)
{
    return deliver_skip(f, target, name, -1, 0);
}

/* ---- Rooms: pending, activate, remove ----------------------------------------- */

static void test_hub_room_add_is_pending_until_activated(void **state)
{
    struct fixture *f = *state;
    struct conn *c = f->c[0];

    assert_int_equal(hub_room_count(c), 0);
    assert_false(hub_is_member(c, "r"));
    assert_int_equal(hub_room_add(f->hub, c, "r"), HUB_OK);
    /* counts and is a member, but gets nothing yet */
    assert_true(hub_is_member(c, "r"));
    assert_int_equal(hub_room_count(c), 1);
    assert_int_equal(hub_room_members(f->hub, "r"), 0);
    assert_int_equal(deliver(f, BUS_ROOM, "r"), 0);
    assert_int_equal(hub_room_activate(f->hub, c, "r", NULL), HUB_OK);
    assert_int_equal(hub_room_members(f->hub, "r"), 1);
    assert_int_equal(hub_room_count(c), 1);
    assert_int_equal(deliver(f, BUS_ROOM, "r"), BIT(0));
}

static void test_hub_room_add_twice_is_already(void **state)
{
    struct fixture *f = *state;
    struct conn *c = f->c[0];

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
    assert_int_equal(deliver(f, BUS_ROOM, "r"), BIT(0));
    leave(f, 0, "r");
    assert_int_equal(hub_room_members(f->hub, "r"), 0);
    assert_int_equal(deliver(f, BUS_ROOM, "r"), 0);
}

static void test_hub_activate_after_leaving_is_not_member(void **state)
{
    struct fixture *f = *state;
    struct conn *c = f->c[0];

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
    assert_int_equal(deliver(f, BUS_ROOM, "r"), BIT(1));
    leave(f, 1, "r");
    assert_int_equal(hub_room_remove(f->hub, f->c[1], "r"), HUB_NOT_MEMBER);
    assert_false(hub_is_member(f->c[1], "r"));
    assert_int_equal(hub_room_count(f->c[1]), 0);
    assert_int_equal(hub_room_members(f->hub, "r"), 0);
    /* The room is gone and can be made again. */
    join(f, 2, "r");
    assert_int_equal(deliver(f, BUS_ROOM, "r"), BIT(2));
}

static void test_hub_membership_matches_whole_names(void **state)
{
    struct fixture *f = *state;
    struct conn *c = f->c[0];

    join(f, 0, "ab");
    assert_true(hub_is_member(c, "ab"));
    assert_false(hub_is_member(c, "a"));
    assert_false(hub_is_member(c, "abc"));
    assert_false(hub_is_member(c, "AB"));
    assert_int_equal(hub_room_remove(f->hub, c, "a"), HUB_NOT_MEMBER);
    assert_int_equal(hub_room_activate(f->hub, c, "abc", NULL), HUB_NOT_MEMBER);
    assert_int_equal(hub_room_members(f->hub, "a"), 0);
    assert_int_equal(deliver(f, BUS_ROOM, "a"), 0);
    assert_int_equal(deliver(f, BUS_ROOM, "ab"), BIT(0));
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
        assert_int_equal(deliver(f, BUS_ROOM, room), expect);
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
    assert_int_equal(deliver(f, BUS_ROOM, "r"), members);
    /* c5 moves into c1's slot; then c5 leaves from there, and so on. */
    static const int order[] = {1, 5, 0, 3, 4, 2};
    for (size_t k = 0; k < 6; k++) {
        leave(f, order[k], "r");
        members &= ~BIT(order[k]);
        assert_false(hub_is_member(f->c[order[k]], "r"));
        assert_int_equal(hub_room_members(f->hub, "r"), __builtin_popcount(members));
        assert_int_equal(deliver(f, BUS_ROOM, "r"), members);
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
        struct conn *c = f->c[i];
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
                assert_int_equal(deliver(f, BUS_ROOM, rooms[k]), joined[k]);
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

/* ---- Leaving everything ------------------------------------------------------------ */

static char left_rooms[8][NAME_MAX_LEN + 1];
static int left_count;
static struct conn *left_conn;

static void record_leave(struct conn *c, const char *room)
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
    assert_int_equal(deliver(f, BUS_ROOM, "a"), BIT(1));
    assert_int_equal(deliver(f, BUS_ROOM, "b"), BIT(2));
    assert_int_equal(deliver(f, BUS_ROOM, "c"), BIT(1));
    assert_int_equal(hub_room_members(f->hub, "pending"), 0);

    /* Nothing to leave: no callback. */
    left_count = 0;
    hub_conn_leave_all(f->hub, f->c[0], record_leave);
    assert_int_equal(left_count, 0);
    /* The conn can join again. */
    join(f, 0, "a");
    assert_int_equal(deliver(f, BUS_ROOM, "a"), BIT(0) | BIT(1));
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
    assert_int_equal(deliver(f, BUS_USER, "alice"), alice);
    assert_int_equal(deliver(f, BUS_USER, "bob"), BIT(6));
    assert_int_equal(deliver(f, BUS_USER, "carol"), 0);

    static const int order[] = {2, 5, 0, 4, 1, 3};
    for (size_t k = 0; k < 6; k++) {
        unset_user(f, order[k]);
        alice &= ~BIT(order[k]);
        assert_int_equal(deliver(f, BUS_USER, "alice"), alice);
        assert_int_equal(deliver(f, BUS_USER, "bob"), BIT(6));
    }
    /* Gone, and back again. */
    set_user(f, 3, "alice");
    assert_int_equal(deliver(f, BUS_USER, "alice"), BIT(3));
}

static void test_hub_users_and_rooms_are_separate_namespaces(void **state)
{
    struct fixture *f = *state;

    set_user(f, 0, "same");
    join(f, 1, "same");
    assert_int_equal(deliver(f, BUS_USER, "same"), BIT(0));
    assert_int_equal(deliver(f, BUS_ROOM, "same"), BIT(1));
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
    assert_int_equal(deliver(f, BUS_ROOM, "r"), BIT(0) | BIT(1) | BIT(2));
    assert_int_equal(deliver(f, BUS_ROOM, "other"), BIT(4));
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
    assert_int_equal(deliver_skip(f, BUS_ROOM, "r", WORKER_INDEX, f->c[2]->seq), all & ~BIT(2));
    assert_int_equal(deliver_skip(f, BUS_USER, "alice", WORKER_INDEX, f->c[4]->seq), all & ~BIT(4));
    assert_int_equal(deliver_skip(f, BUS_ALL, "", WORKER_INDEX, f->c[0]->seq), ((1u << NCONN) - 1) & ~BIT(0));
    /* The same seq on another worker is another connection. */
    assert_int_equal(deliver_skip(f, BUS_ROOM, "r", WORKER_INDEX + 1, f->c[2]->seq), all);
    /* No skip (-1) and a seq of nobody skip nobody. */
    assert_int_equal(deliver_skip(f, BUS_ROOM, "r", -1, f->c[2]->seq), all);
    assert_int_equal(deliver_skip(f, BUS_ROOM, "r", WORKER_INDEX, 99999), all);
}

static void test_hub_deliver_all_reaches_every_upgraded_connection(void **state)
{
    struct fixture *f = *state;
    uint32_t all = (1u << NCONN) - 1;

    join(f, 0, "r");
    f->c[5]->state = CONN_HTTP;    /* not upgraded yet */
    f->c[6]->state = CONN_CLOSING; /* on its way out */
    assert_int_equal(deliver(f, BUS_ALL, ""), all & ~BIT(5) & ~BIT(6));
    f->c[5]->state = CONN_WS;
    f->c[6]->state = CONN_WS;
}

static void test_hub_deliver_to_unknown_room_or_user_queues_nothing(void **state)
{
    struct fixture *f = *state;

    join(f, 0, "r");
    set_user(f, 1, "alice");
    assert_int_equal(deliver(f, BUS_ROOM, "nobody"), 0);
    assert_int_equal(deliver(f, BUS_USER, "nobody"), 0);
    assert_int_equal(deliver(f, BUS_ROOM, "alice"), 0);
    assert_int_equal(deliver(f, BUS_USER, "r"), 0);
}

static void test_hub_deliver_queues_events_in_order_and_marks_dirty_once(void **state)
{
    struct fixture *f = *state;
    struct bus_event *ev[6];
    char json[32];

    join(f, 0, "r");
    join(f, 1, "r");
    /* More events than the inline ring holds. */
    for (int k = 0; k < 6; k++) {
        int n = snprintf(json, sizeof json, "{\"n\":%d}", k);
        ev[k] = bus_event_create(BUS_ROOM, "r", json, (size_t)n);
        assert_non_null(ev[k]);
        hub_deliver(f->hub, ev[k]);
        bus_event_unref(ev[k]);
    }
    for (int i = 0; i < 2; i++) {
        struct conn *c = f->c[i];
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
            assert_ptr_equal(fr, f->c[1 - i]->out.items[(f->c[1 - i]->out.head + k) & (f->c[1 - i]->out.cap - 1)]);
        }
    }
    uint32_t dirty = 0;
    for (struct conn *c = f->w->dirty; c; c = c->dirty_next)
        dirty++;
    assert_int_equal(dirty, 2);
    drain_all(f);
}

/* protocol_welcome() closes a conn whose bus request or hub_user_add() ran
 * out of memory, and the close path (protocol_conn_closed) then calls
 * hub_user_remove() for it although it was never indexed. Its user_slot is
 * then 0 (calloc'ed conn) or HUB_PENDING (failed add): removing must not
 * take another connection of the same user out of the index. */
static void test_hub_user_remove_of_unindexed_conn_leaves_the_others(void **state)
{
    struct fixture *f = *state;

    set_user(f, 0, "alice");
    set_user(f, 1, "alice");
    free(f->c[2]->user);
    f->c[2]->user = strdup("alice"); /* never hub_user_add()ed */
    hub_user_remove(f->hub, f->c[2]);
    assert_int_equal(deliver(f, BUS_USER, "alice"), BIT(0) | BIT(1));
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
        T(test_hub_leave_all_reports_each_room_then_forgets_them),
        T(test_hub_user_index_keeps_slots_when_one_leaves_from_the_middle),
        T(test_hub_users_and_rooms_are_separate_namespaces),
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
