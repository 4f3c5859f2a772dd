/* bus_memory.c - the memory engine of the bus: the workers of this process
 * are all there is, so publishing is storing (for persisted room messages)
 * and delivering straight away. Presence is presence.c's. Runs on the bus
 * thread. */
#include <stdlib.h>

#include "cluster/bus.h"
#include "cluster/presence.h"

/* Delivers ev (taking its reference). 0, or -1 when ev is NULL (out of
 * memory): the publish's error is then set. */
static int deliver(struct bus *b, struct bus_publish *req, struct event *ev)
{
    if (!ev) {
        req->base.error = WSFAN_ENOMEM;
        return -1;
    }
    if (req->skip_seq) {
        ev->skip_worker = req->base.worker;
        ev->skip_seq = req->skip_seq;
    }
    bus_deliver(b, ev);
    return 0;
}

static void persisted(struct store_call *call)
{
    struct bus_publish *req = (struct bus_publish *)((char *)call - offsetof(struct bus_publish, store));
    if (call->error || call->duplicate) {
        /* A repeated key: the ack carries the first publish's offset. */
        req->base.error = call->error;
        bus_reply(req->base.bus, &req->base);
        return;
    }
    /* The store keeps its own reference for history; this one fans out. */
    struct event *ev = call->event;
    call->event = NULL;
    deliver(req->base.bus, req, ev);
    bus_reply(req->base.bus, &req->base);
}

static void memory_publish(struct bus *b, struct bus_publish *req)
{
    const char *from = req->store.from;
    uint64_t ts = req->store.ts;
    if (req->target == EVENT_ROOM && !req->ephemeral) {
        struct store *s = bus_store(b);
        req->store.done = persisted;
        s->ops->append(s, &req->store);
        return;
    }
    /* One event per key: its key is what the workers deliver it by. */
    for (const char *key = NULL; (key = bus_publish_next_key(req, key));) {
        struct event *ev = req->disconnect           ? event_disconnect(key)
                           : req->target == EVENT_ROOM ? event_message(key, NULL, from, req->data, req->data_len, ts)
                                                       : event_direct(req->target, key, from, req->data, req->data_len, ts);
        if (deliver(b, req, ev))
            break;
    }
    bus_reply(b, &req->base);
}

/* Every publish reaches the bus at once: a room's events are "arriving"
 * from its first member on. */
static void memory_interest(struct bus *b, enum event_target target, const char *key, int on)
{
    if (target == EVENT_ROOM && on)
        bus_subscribed(b, key);
}

static void memory_rooms(struct bus *b, struct bus_rooms *req)
{
    if (!(req->rooms = bus_rooms_format(b, NULL, req->tenant)))
        req->base.error = WSFAN_ENOMEM;
    bus_reply(b, &req->base);
}

static int memory_start(struct bus *b)
{
    (void)b;
    return 0;
}

static void memory_stop(struct bus *b)
{
    (void)b;
}

static int memory_ready(struct bus *b)
{
    (void)b;
    return 1;
}

const struct bus_engine bus_memory_engine = {
    .name = "memory",
    .start = memory_start,
    .stop = memory_stop,
    .ready = memory_ready,
    .publish = memory_publish,
    .interest = memory_interest,
    .presence = presence_memory_changed,
    .presence_list = presence_memory_list,
    .rooms = memory_rooms,
};
