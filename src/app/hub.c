/* hub.c - one worker's local index and fan-out. Rooms and users map to
 * arrays of connections, so delivering to a room touches only its members.
 * Every removal is a swap-remove in O(1), however large the room: each
 * side records the other's index (a connection its slot in its user's and
 * tenant's arrays, a membership its slot in the room's arrays, a room's
 * member the index of its membership among the connection's rooms), and
 * whatever moves into a freed place has its record fixed. See hub.h. */
#include "app/hub.h"

#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "app/client.h"
#include "app/sse.h"
#include "codec/deflate.h"
#include "codec/sse.h"
#include "core/log.h"
#include "core/map.h"
#include "net/loop.h"

/* One room of one connection. A pending membership counts for
 * --max-rooms and membership checks but gets no events until the join
 * completes (so that a replay comes before any live message). A fresh one
 * gets them, less the persisted ones its replay may have had too. */
enum membership_state { PENDING, FRESH, JOINED };

/* A connection in a room's array, and the index of its membership in
 * its rooms (rooms_of). */
struct room_member {
    struct client *c;
    uint32_t mi;
};

/* A member that just joined: it skips persisted events up to its replay's
 * offset, and the first event past it makes it an ordinary member. */
struct fresh_member {
    struct room_member m;
    struct offset after;
};

/* What rooms and users share: the map's copy of the key, and references
 * (memberships, pending ones too, or a user's connections, plus one while
 * a delivery walks the entry, so that a recipient closing mid-delivery
 * cannot free it). */
struct hub_entry {
    const char *name;   /* the map's copy of the key, after the entry's struct (map_add) */
    uint32_t refs;
};

/* top: the newest offset of the room this worker knows (from a join's
 * reply or a delivery), which a local join starts from (hub_room_top). */
struct hub_room {
    struct hub_entry e;
    struct room_member *members;
    struct fresh_member *fresh;
    uint32_t nmembers, members_cap, nfresh, fresh_cap;
    int has_top;
    struct offset top;
};

/* A user's connections, or a tenant's ("T/"): an inline array (most
 * users have one connection). */
struct hub_user {
    struct hub_entry e;
    union {
        struct client *one;
        struct client **many;
    } conns;
    uint32_t count, cap;
};

struct hub {
    struct net_loop *net;
    struct map rooms;       /* room key -> struct hub_room */
    struct map users;       /* user key, or tenant "T/" -> struct hub_user */
    uint32_t tenant_conns;  /* connections with a tenant: broadcasts without one skip them */
};

/* items with room for one more of size bytes: grown (to first, then by
 * half) when count has reached *cap. By half rather than doubling: a
 * room's arrays hold one entry per idle member, and leave about a sixth
 * of their room unused on average instead of a quarter. NULL when out of
 * memory, and then items and *cap are as they were. */
static void *grow(void *items, uint32_t count, uint32_t *cap, size_t size, uint32_t first)
{
    if (count < *cap)
        return items;
    uint32_t n = *cap ? *cap + (*cap + 1) / 2 : first;
    void *grown = realloc(items, size * n);
    if (grown)
        *cap = n;
    return grown;
}

/* The arrays of a client's rooms and of a user's connections keep their
 * first element inline (`one`, in a union with `many`) and move to the heap
 * with the second: most clients are in one room, most users have one
 * connection. cap is 0 while inline. The array is at: */
static void *inline_items(void *one, void *many, uint32_t cap)
{
    return cap ? many : one;
}

/* Room for one more element of size bytes in such an array of count:
 * returns where the array is now (the caller stores it in `many` when cap
 * is no longer 0), or NULL when out of memory, with nothing changed. */
static void *inline_reserve(const void *one, void *many, uint32_t count, uint32_t *cap, size_t size)
{
    if (*cap)
        return grow(many, count, cap, size, 2);
    if (count == 0)
        return (void *)one;
    void *heap = malloc(2 * size);
    if (heap) {
        memcpy(heap, one, size);
        *cap = 2;
    }
    return heap;
}

/* The entry of name (of a struct of size bytes that starts with a struct
 * hub_entry), created when missing. NULL when out of memory. */
static void *entry_get(struct map *m, const char *name, size_t size)
{
    size_t len = strlen(name);
    struct hub_entry *e = map_get(m, name, len);
    if (e)
        return e;
    if ((e = map_add(m, name, len, size)))
        e->name = (const char *)e + size;
    return e;
}

static void entry_unref(struct map *m, struct hub_entry *e)
{
    if (--e->refs == 0)
        free(map_remove(m, e->name, strlen(e->name)));
}

/* The room's events up to o have reached this worker or are in a replay. */
static void room_saw(struct hub_room *r, struct offset o)
{
    if (!r->has_top || offset_cmp(o, r->top) > 0) {
        r->top = o;
        r->has_top = 1;
    }
}

static void room_unref(struct hub *h, struct hub_room *r)
{
    if (r->e.refs == 1) {
        free(r->members);
        free(r->fresh);
    }
    entry_unref(&h->rooms, &r->e);
}

static void user_unref(struct hub *h, struct hub_user *u)
{
    if (u->e.refs == 1 && u->cap)
        free(u->conns.many);
    entry_unref(&h->users, &u->e);
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

/* c's memberships, nrooms of them. */
static struct hub_membership *rooms_of(struct client *c)
{
    return inline_items(&c->hub.rooms.one, c->hub.rooms.many, c->hub.rooms_cap);
}

/* A user's connections, count of them. */
static struct client **conns_of(struct hub_user *u)
{
    return inline_items(&u->conns.one, u->conns.many, u->cap);
}

/* Linear in c's own rooms, which --max-rooms bounds. */
static struct hub_membership *membership_find(const struct client *c, const char *room)
{
    struct hub_membership *rooms = rooms_of((struct client *)c);
    for (uint32_t i = 0; i < c->hub.nrooms; i++)
        if (!strcmp(rooms[i].room->e.name, room))
            return &rooms[i];
    return NULL;
}

int hub_is_member(const struct client *c, const char *room)
{
    return membership_find(c, room) != NULL;
}

int hub_is_pending(const struct client *c, const char *room)
{
    const struct hub_membership *m = membership_find(c, room);
    return m && m->state == PENDING;
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
    struct hub_membership *rooms = inline_reserve(&hc->rooms.one, hc->rooms.many, hc->nrooms, &hc->rooms_cap,
                                                  sizeof *rooms);
    if (!rooms)
        return HUB_NOMEM;
    if (hc->rooms_cap)
        hc->rooms.many = rooms;
    struct hub_room *r = entry_get(&h->rooms, room, sizeof *r);
    if (!r)
        return HUB_NOMEM;
    r->e.refs++;
    rooms[hc->nrooms++] = (struct hub_membership){r, 0, PENDING};
    return HUB_OK;
}

/* Appends me to the room's ordinary members. Returns HUB_OK or HUB_NOMEM. */
static int members_add(struct hub_room *r, struct room_member me)
{
    struct room_member *members = grow(r->members, r->nmembers, &r->members_cap, sizeof *members, 4);
    if (!members)
        return HUB_NOMEM;
    r->members = members;
    rooms_of(me.c)[me.mi] = (struct hub_membership){r, r->nmembers, JOINED};
    r->members[r->nmembers++] = me;
    return HUB_OK;
}

/* m was moved to slot of its room's array: its membership follows. */
static void member_moved(struct room_member m, uint32_t slot)
{
    rooms_of(m.c)[m.mi].slot = slot;
}

/* Swap-removes the member at slot. */
static void members_remove(struct hub_room *r, uint32_t slot)
{
    if (slot != --r->nmembers) {
        r->members[slot] = r->members[r->nmembers];
        member_moved(r->members[slot], slot);
    }
}

/* Fresh members are passing: once the last one is gone (most often
 * promoted by the room's next event), their array is given back. */
static void fresh_remove(struct hub_room *r, uint32_t slot)
{
    if (slot != --r->nfresh) {
        r->fresh[slot] = r->fresh[r->nfresh];
        member_moved(r->fresh[slot].m, slot);
    } else if (r->nfresh == 0) {
        free(r->fresh);
        r->fresh = NULL;
        r->fresh_cap = 0;
    }
}

int hub_room_activate(struct hub *h, struct client *c, const char *room, const struct offset *after)
{
    (void)h;
    struct hub_membership *m = membership_find(c, room);
    if (!m)
        return HUB_NOT_MEMBER;
    if (m->state != PENDING)
        return HUB_OK;
    struct hub_room *r = m->room;
    struct room_member me = {c, (uint32_t)(m - rooms_of(c))};
    if (!after)
        return members_add(r, me);
    room_saw(r, *after);
    struct fresh_member *fresh = grow(r->fresh, r->nfresh, &r->fresh_cap, sizeof *fresh, 2);
    if (!fresh)
        return HUB_NOMEM;
    r->fresh = fresh;
    r->fresh[r->nfresh] = (struct fresh_member){me, *after};
    *m = (struct hub_membership){r, r->nfresh++, FRESH};
    return HUB_OK;
}

/* Drops membership m of c; m points into c's array and is invalid after. */
static void membership_drop(struct hub *h, struct client *c, struct hub_membership *m)
{
    struct hub_room *r = m->room;
    if (m->state == JOINED)
        members_remove(r, m->slot);
    else if (m->state == FRESH)
        fresh_remove(r, m->slot);
    struct hub_conn *hc = &c->hub;
    struct hub_membership *rooms = rooms_of(c);
    uint32_t mi = (uint32_t)(m - rooms);
    if (mi != --hc->nrooms) {
        *m = rooms[hc->nrooms];
        if (m->state == JOINED)
            m->room->members[m->slot].mi = mi;
        else if (m->state == FRESH)
            m->room->fresh[m->slot].m.mi = mi;
    }
    if (hc->rooms_cap && hc->nrooms <= 1) {
        /* Back to the inline membership (its index, 0, stays). */
        struct hub_membership last = rooms[0];
        free(rooms);
        hc->rooms_cap = 0;
        hc->rooms.one = last;
    }
    room_unref(h, r);
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
        struct hub_membership *m = &rooms_of(c)[i];
        if (keep && keep(c, m->room->e.name))
            continue;
        fn(c, m->room->e.name);
        membership_drop(h, c, m);
    }
}

void hub_conn_leave_all(struct hub *h, struct client *c, void (*fn)(struct client *c, const char *room))
{
    hub_conn_leave_some(h, c, NULL, fn);
}

int hub_room_top(const struct hub *h, const char *room, struct offset *top)
{
    const struct hub_room *r = map_get(&h->rooms, room, strlen(room));
    if (!r || !r->has_top || r->nmembers + r->nfresh == 0)
        return 0;
    *top = r->top;
    return 1;
}

uint32_t hub_room_members(const struct hub *h, const char *room)
{
    struct hub_room *r = map_get(&h->rooms, room, strlen(room));
    return r ? r->nmembers : 0;
}

/* Indexes c under key in the users map; *slot is its place. */
static int index_add(struct hub *h, struct client *c, const char *key, uint32_t *slot)
{
    struct hub_user *u = entry_get(&h->users, key, sizeof *u);
    if (!u)
        return HUB_NOMEM;
    u->e.refs++;
    struct client **conns = inline_reserve(&u->conns.one, u->conns.many, u->count, &u->cap, sizeof *conns);
    if (!conns) {
        user_unref(h, u);
        return HUB_NOMEM;
    }
    if (u->cap)
        u->conns.many = conns;
    *slot = u->count;
    conns[u->count++] = c;
    return HUB_OK;
}

/* Takes c out of key's array of the users map; *slot_of(moved) follows. */
static int index_remove(struct hub *h, struct client *c, const char *key, uint32_t slot,
                        uint32_t *(*slot_of)(struct client *c))
{
    struct hub_user *u = map_get(&h->users, key, strlen(key));
    /* A conn whose indexing failed was never added. */
    if (!u || slot >= u->count || conns_of(u)[slot] != c)
        return HUB_NOT_MEMBER;
    struct client **conns = conns_of(u);
    if (slot != --u->count) {
        struct client *moved = conns[slot] = conns[u->count];
        *slot_of(moved) = slot;
    }
    user_unref(h, u);
    return HUB_OK;
}

static uint32_t *user_slot_of(struct client *c)
{
    return &c->hub.user_slot;
}

static uint32_t *tenant_slot_of(struct client *c)
{
    return &c->hub.tenant_slot;
}

int hub_user_add(struct hub *h, struct client *c)
{
    char buf[KEY_MAX_LEN + 1];
    return index_add(h, c, name_key(client_tenant(c), c->user, buf), &c->hub.user_slot);
}

void hub_user_remove(struct hub *h, struct client *c)
{
    char buf[KEY_MAX_LEN + 1];
    index_remove(h, c, name_key(client_tenant(c), c->user, buf), c->hub.user_slot, user_slot_of);
}

int hub_tenant_add(struct hub *h, struct client *c)
{
    char buf[KEY_MAX_LEN + 1];
    int rc = index_add(h, c, name_key(client_tenant(c), "", buf), &c->hub.tenant_slot);
    if (rc == HUB_OK)
        h->tenant_conns++;
    return rc;
}

void hub_tenant_remove(struct hub *h, struct client *c)
{
    char buf[KEY_MAX_LEN + 1];
    if (index_remove(h, c, name_key(client_tenant(c), "", buf), c->hub.tenant_slot, tenant_slot_of) == HUB_OK)
        h->tenant_conns--;
}

/* One event's frames on this worker: its WebSocket frame, compressed and
 * not (permessage-deflate), and its SSE event, each encoded when its first
 * recipient needs it, and then shared by all of them. */
enum framing { FRAMING_WS, FRAMING_DEFLATE, FRAMING_SSE, FRAMING_COUNT };

struct encoded {
    const struct event *ev;
    struct frame *f[FRAMING_COUNT];
    uint8_t failed[FRAMING_COUNT];  /* out of memory: logged once */
};

static struct frame *encode(struct hub *h, const struct event *ev, enum framing how)
{
    if (how == FRAMING_SSE)
        return sse_frame_create(ev->json, ev->len);
    if (how == FRAMING_WS)
        return ws_frame_create(WS_OP_TEXT, ev->json, ev->len);
    struct frame *f = deflate_frame_create(((struct app *)h->net->data)->deflate, ev->json, ev->len);
    if (f)
        metrics_deflated(h->net->metrics, ev->len, f->len);
    return f;
}

/* How c takes the event: a stream as SSE; a connection that negotiated
 * permessage-deflate compressed, unless compression is off or the event
 * is under --compress-min. */
static enum framing framing_of(const struct hub *h, const struct client *c, const struct event *ev)
{
    if (c->sse)
        return FRAMING_SSE;
    const struct config *cfg = h->net->cfg;
    if (ws_parser_deflates(&c->conn.parser) && cfg->compression && ev->len >= cfg->compress_min)
        return FRAMING_DEFLATE;
    return FRAMING_WS;
}

static struct frame *encoded_frame(struct hub *h, struct encoded *e, enum framing how)
{
    if (e->f[how] || e->failed[how])
        return e->f[how];
    e->f[how] = encode(h, e->ev, how);
    if (e->f[how])
        return e->f[how];
    e->failed[how] = 1;
    log_error("worker %d: out of memory encoding an event", h->net->index);
    /* A recipient of the compressed frame can take the plain one. */
    return how == FRAMING_DEFLATE ? encoded_frame(h, e, FRAMING_WS) : NULL;
}

/* Queues the event on c unless c published it with echo:false. A stream
 * gets the id line of its new position before a persisted message. A
 * disconnect closes c instead (a stream too). Returns 1 when queued. */
static uint32_t deliver_to(struct hub *h, struct client *c, struct encoded *e)
{
    const struct event *ev = e->ev;
    if (ev->kind == EVENT_DISCONNECT) {
        conn_close(&c->conn, WS_CLOSE_POLICY, "disconnected by an operator");
        return 0;
    }
    if (ev->skip_worker == c->conn.loop->index && ev->skip_seq == c->conn.seq)
        return 0;
    struct frame *f = encoded_frame(h, e, framing_of(h, c, ev));
    if (!f)
        return 0;
    if (c->sse && ev->has_offset)
        sse_mark(c, ev->key, ev->offset);
    conn_enqueue(&c->conn, f);
    return 1;
}

/* The walks below go last first: a recipient that overflows and closes
 * leaves its place to one already served. */

static uint32_t deliver_room(struct hub *h, struct hub_room *r, struct encoded *e)
{
    uint32_t n = 0;
    if (e->ev->has_offset)
        room_saw(r, e->ev->offset);
    r->e.refs++;
    for (uint32_t i = r->nmembers; i-- > 0;)
        if (i < r->nmembers)
            n += deliver_to(h, r->members[i].c, e);
    /* Then the fresh ones, so that one promoted here is not served twice.
     * They get events without an offset, skip persisted ones their replay
     * had, and become members at the first one past it (offsets arrive in
     * increasing order). */
    for (uint32_t i = r->nfresh; i-- > 0;) {
        if (i >= r->nfresh)
            continue;
        struct room_member me = r->fresh[i].m;
        if (e->ev->has_offset) {
            if (offset_cmp(e->ev->offset, r->fresh[i].after) <= 0)
                continue;
            if (members_add(r, me) == HUB_OK)
                fresh_remove(r, i);
        }
        n += deliver_to(h, me.c, e);
    }
    room_unref(h, r);
    return n;
}

static uint32_t deliver_user(struct hub *h, struct hub_user *u, struct encoded *e)
{
    uint32_t n = 0;
    u->e.refs++;
    for (uint32_t i = u->count; i-- > 0;)
        if (i < u->count)
            n += deliver_to(h, conns_of(u)[i], e);
    user_unref(h, u);
    return n;
}

void hub_deliver(struct hub *h, const struct event *ev)
{
    /* A room's or user's key, or a tenant's "T/" (its broadcasts); only a
     * broadcast without a tenant has the empty key, and walks every
     * connection. */
    struct map *m = ev->target == EVENT_ROOM ? &h->rooms : &h->users;
    void *e = NULL;
    if (ev->key_len && !(e = map_get(m, ev->key, ev->key_len)))
        return;
    struct encoded enc = {.ev = ev};
    uint32_t n = 0;
    if (e && ev->target == EVENT_ROOM) {
        n = deliver_room(h, e, &enc);
    } else if (e) {
        n = deliver_user(h, e, &enc);
    } else {
        int tenants = h->tenant_conns != 0;
        for (struct conn *c = h->net->conns; c; c = c->next)
            if ((c->state == CONN_WS || c->state == CONN_STREAM) && !(tenants && client_tenant(client_of(c))))
                n += deliver_to(h, client_of(c), &enc);
    }
    /* enum event_target and enum metrics_out count room, user, all alike;
     * a disconnect is not a message. */
    if (ev->kind != EVENT_DISCONNECT)
        metrics_fanout(h->net->metrics, (enum metrics_out)ev->target, n);
    for (int i = 0; i < FRAMING_COUNT; i++)
        if (enc.f[i])
            frame_unref(enc.f[i]);
}
