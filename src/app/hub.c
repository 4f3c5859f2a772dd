/* hub.c - one worker's local index and fan-out. Rooms and users map to
 * arrays of connections (swap-remove, each connection remembers its slot),
 * so delivering to a room touches only its members and removal is O(1)
 * plus a scan of the connection's own rooms. See hub.h. */
#include "app/hub.h"

#include <stdlib.h>
#include <string.h>

#include "app/client.h"
#include "core/log.h"
#include "core/map.h"
#include "net/loop.h"

/* An array of connections; a connection's index in it is kept by the
 * caller (membership slot or user slot). */
struct conn_set {
    struct client **items;
    uint32_t count, cap;
};

/* A room or a user: its local connections. refs counts memberships
 * (pending ones too) or a user's connections, plus one while a delivery
 * walks it, so that a recipient closing mid-delivery cannot free it. */
struct hub_entry {
    const char *name;     /* the map's copy of the key */
    struct conn_set set;
    uint32_t refs;
    /* Rooms only: members that just joined and skip persisted events up to
     * their replay's offset; the first event past it makes them ordinary. */
    struct fresh_member *fresh;
    uint32_t nfresh, fresh_cap;
};

struct fresh_member {
    struct client *c;
    struct offset after;
};

struct hub {
    struct net_loop *net;
    struct map rooms;
    struct map users;
};

/* Appends c; returns its slot or HUB_PENDING when out of memory. */
static uint32_t set_add(struct conn_set *s, struct client *c)
{
    if (s->count == s->cap) {
        uint32_t cap = s->cap ? s->cap * 2 : 4;
        struct client **items = realloc(s->items, sizeof *items * cap);
        if (!items)
            return HUB_PENDING;
        s->items = items;
        s->cap = cap;
    }
    s->items[s->count] = c;
    return s->count++;
}

/* Removes slot by moving the last item into it; returns the moved
 * connection (whose slot the caller updates) or NULL. */
static struct client *set_remove(struct conn_set *s, uint32_t slot)
{
    struct client *moved = NULL;
    if (slot != s->count - 1) {
        moved = s->items[s->count - 1];
        s->items[slot] = moved;
    }
    s->count--;
    if (s->count == 0) {
        free(s->items);
        s->items = NULL;
        s->cap = 0;
    }
    return moved;
}

/* The entry for name, created when missing. NULL when out of memory. */
static struct hub_entry *entry_get(struct map *m, const char *name)
{
    size_t len = strlen(name);
    struct hub_entry *e = map_get(m, name, len);
    if (e)
        return e;
    e = calloc(1, sizeof *e);
    if (!e || map_put(m, name, len, e)) {
        free(e);
        return NULL;
    }
    e->name = map_key(m, name, len);
    return e;
}

static void entry_unref(struct map *m, struct hub_entry *e)
{
    if (--e->refs == 0) {
        free(e->fresh);
        free(map_remove(m, e->name, strlen(e->name)));
    }
}

struct hub *hub_create(struct net_loop *net)
{
    struct hub *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->net = net;
    map_init(&h->rooms);
    map_init(&h->users);
    return h;
}

void hub_destroy(struct hub *h)
{
    if (!h)
        return;
    /* Every connection has left by now; entries die with their last ref. */
    map_free(&h->rooms);
    map_free(&h->users);
    free(h);
}

static struct hub_membership *membership_find(const struct client *c, const char *room)
{
    const struct hub_conn *hc = &c->hub;
    for (uint32_t i = 0; i < hc->nrooms; i++)
        if (!strcmp(hc->rooms[i].room->name, room))
            return &hc->rooms[i];
    return NULL;
}

int hub_is_member(const struct client *c, const char *room)
{
    return membership_find(c, room) != NULL;
}

int hub_is_pending(const struct client *c, const char *room)
{
    const struct hub_membership *m = membership_find(c, room);
    return m && m->slot == HUB_PENDING;
}

uint32_t hub_room_count(const struct client *c)
{
    return c->hub.nrooms;
}

int hub_room_add(struct hub *h, struct client *c, const char *room)
{
    struct hub_conn *hc = &c->hub;
    if (membership_find(c, room))
        return HUB_ALREADY;
    if (hc->nrooms == hc->rooms_cap) {
        uint32_t cap = hc->rooms_cap ? hc->rooms_cap * 2 : 1;
        struct hub_membership *rooms = realloc(hc->rooms, sizeof *rooms * cap);
        if (!rooms)
            return HUB_NOMEM;
        hc->rooms = rooms;
        hc->rooms_cap = cap;
    }
    struct hub_entry *r = entry_get(&h->rooms, room);
    if (!r)
        return HUB_NOMEM;
    r->refs++;
    hc->rooms[hc->nrooms++] = (struct hub_membership){r, HUB_PENDING};
    return HUB_OK;
}

int hub_room_activate(struct hub *h, struct client *c, const char *room, const struct offset *after)
{
    (void)h;
    struct hub_membership *m = membership_find(c, room);
    if (!m)
        return HUB_NOT_MEMBER;
    if (m->slot != HUB_PENDING)
        return HUB_OK;
    struct hub_entry *r = m->room;
    if (!after) {
        m->slot = set_add(&r->set, c);
        return m->slot == HUB_PENDING ? HUB_NOMEM : HUB_OK;
    }
    if (r->nfresh == r->fresh_cap) {
        uint32_t cap = r->fresh_cap ? r->fresh_cap * 2 : 2;
        struct fresh_member *fresh = realloc(r->fresh, sizeof *fresh * cap);
        if (!fresh)
            return HUB_NOMEM;
        r->fresh = fresh;
        r->fresh_cap = cap;
    }
    r->fresh[r->nfresh++] = (struct fresh_member){c, *after};
    m->slot = HUB_FRESH;
    return HUB_OK;
}

static void fresh_remove(struct hub_entry *r, struct client *c)
{
    for (uint32_t i = 0; i < r->nfresh; i++)
        if (r->fresh[i].c == c) {
            r->fresh[i] = r->fresh[--r->nfresh];
            return;
        }
}

/* Drops membership m of c; m points into c's array and is invalid after. */
static void membership_drop(struct hub *h, struct client *c, struct hub_membership *m)
{
    struct hub_entry *r = m->room;
    if (m->slot == HUB_FRESH) {
        fresh_remove(r, c);
    } else if (m->slot != HUB_PENDING) {
        struct client *moved = set_remove(&r->set, m->slot);
        if (moved)
            membership_find(moved, r->name)->slot = m->slot;
    }
    struct hub_conn *hc = &c->hub;
    *m = hc->rooms[--hc->nrooms];
    if (hc->nrooms == 0) {
        free(hc->rooms);
        hc->rooms = NULL;
        hc->rooms_cap = 0;
    }
    entry_unref(&h->rooms, r);
}

int hub_room_remove(struct hub *h, struct client *c, const char *room)
{
    struct hub_membership *m = membership_find(c, room);
    if (!m)
        return HUB_NOT_MEMBER;
    membership_drop(h, c, m);
    return HUB_OK;
}

void hub_conn_leave_some(struct hub *h, struct client *c, int (*keep)(struct client *c, const char *room),
                         void (*fn)(struct client *c, const char *room))
{
    /* From the end: a drop moves the last membership into the freed place,
     * and that one was seen already. */
    for (uint32_t i = c->hub.nrooms; i-- > 0;) {
        struct hub_membership *m = &c->hub.rooms[i];
        if (keep && keep(c, m->room->name))
            continue;
        fn(c, m->room->name);
        membership_drop(h, c, m);
    }
}

void hub_conn_leave_all(struct hub *h, struct client *c, void (*fn)(struct client *c, const char *room))
{
    hub_conn_leave_some(h, c, NULL, fn);
}

uint32_t hub_room_members(const struct hub *h, const char *room)
{
    struct hub_entry *r = map_get(&h->rooms, room, strlen(room));
    return r ? r->set.count : 0;
}

int hub_user_add(struct hub *h, struct client *c)
{
    struct hub_entry *u = entry_get(&h->users, c->user);
    if (!u)
        return HUB_NOMEM;
    u->refs++;
    c->hub.user_slot = set_add(&u->set, c);
    if (c->hub.user_slot == HUB_PENDING) {
        entry_unref(&h->users, u);
        return HUB_NOMEM;
    }
    return HUB_OK;
}

void hub_user_remove(struct hub *h, struct client *c)
{
    struct hub_entry *u = map_get(&h->users, c->user, strlen(c->user));
    /* A conn whose indexing failed was never added. */
    if (!u || c->hub.user_slot >= u->set.count || u->set.items[c->hub.user_slot] != c)
        return;
    struct client *moved = set_remove(&u->set, c->hub.user_slot);
    if (moved)
        moved->hub.user_slot = c->hub.user_slot;
    entry_unref(&h->users, u);
}

static int skipped(const struct event *ev, const struct client *c)
{
    return ev->skip_worker == c->conn.loop->index && ev->skip_seq == c->conn.seq;
}

/* Enqueues f on the entry's connections, last first: one that overflows
 * and closes leaves its slot to one already served. Returns how many. */
static uint32_t deliver_entry(struct map *m, struct hub_entry *e, const struct event *ev, struct frame *f)
{
    uint32_t n = 0;
    e->refs++;
    for (uint32_t i = e->set.count; i-- > 0;) {
        if (i >= e->set.count)
            continue;
        struct client *c = e->set.items[i];
        if (!skipped(ev, c)) {
            conn_enqueue(&c->conn, f);
            n++;
        }
    }
    entry_unref(m, e);
    return n;
}

/* Fresh members get events without an offset, skip persisted ones their
 * replay had, and become ordinary members at the first one past it
 * (offsets arrive in increasing order). */
static uint32_t deliver_fresh(struct map *m, struct hub_entry *r, const struct event *ev, struct frame *f)
{
    uint32_t n = 0;
    r->refs++;
    for (uint32_t i = r->nfresh; i-- > 0;) {
        if (i >= r->nfresh)
            continue;
        struct client *c = r->fresh[i].c;
        if (ev->has_offset) {
            if (offset_cmp(ev->offset, r->fresh[i].after) <= 0)
                continue;
            struct hub_membership *mb = membership_find(c, r->name);
            uint32_t slot = set_add(&r->set, c);
            if (slot != HUB_PENDING) {
                mb->slot = slot;
                r->fresh[i] = r->fresh[--r->nfresh];
            }
        }
        if (!skipped(ev, c)) {
            conn_enqueue(&c->conn, f);
            n++;
        }
    }
    entry_unref(m, r);
    return n;
}

void hub_deliver(struct hub *h, const struct event *ev)
{
    struct map *m = ev->target == EVENT_ROOM ? &h->rooms : &h->users;
    struct hub_entry *e = NULL;
    if (ev->target != EVENT_ALL && !(e = map_get(m, ev->name, strlen(ev->name))))
        return;
    struct frame *f = ws_frame_create(WS_OP_TEXT, ev->json, ev->len);
    if (!f) {
        log_error("worker %d: out of memory encoding an event", h->net->index);
        return;
    }
    uint32_t n = 0;
    if (e && e->nfresh) {
        /* Members first: fresh ones promoted here must not get it twice. */
        e->refs++;
        n = deliver_entry(m, e, ev, f);
        n += deliver_fresh(m, e, ev, f);
        entry_unref(m, e);
    } else if (e) {
        n = deliver_entry(m, e, ev, f);
    } else {
        for (struct conn *c = h->net->conns; c; c = c->next)
            if (c->state == CONN_WS && !skipped(ev, client_of(c))) {
                conn_enqueue(c, f);
                n++;
            }
    }
    /* enum event_target and enum metrics_out count room, user, all alike. */
    metrics_fanout(h->net->metrics, (enum metrics_out)ev->target, n);
    frame_unref(f);
}
