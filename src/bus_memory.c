/* bus_memory.c - the memory engine of the bus: the workers of this process
 * are all there is, so publishing is storing (for persisted room messages)
 * and delivering straight away. Runs on the bus thread. */
#include <stdlib.h>

#include "bus.h"
#include "log.h"
#include "presence.h"

static void deliver_and_ack(struct bus *b, struct bus_request *req, enum bus_target target, const char *name,
                            char *json, size_t len)
{
    struct bus_event *ev = json ? bus_event_create(target, name, json, len) : NULL;
    free(json);
    if (!ev) {
        req->error = "unavailable";
        bus_reply(b, req);
        return;
    }
    if (!req->echo) {
        ev->skip_worker = req->worker;
        ev->skip_seq = req->conn_seq;
    }
    ev->has_offset = req->store.offset[0] && offset_parse(req->store.offset, &ev->offset) == 0;
    bus_deliver(b, ev);
    bus_reply(b, req);
}

static void persisted(struct store_call *call)
{
    struct bus_request *req = (struct bus_request *)((char *)call - offsetof(struct bus_request, store));
    if (call->error) {
        req->error = call->error;
        bus_reply(req->bus, req);
        return;
    }
    char *event = call->event;
    call->event = NULL;
    deliver_and_ack(req->bus, req, BUS_ROOM, req->room, event, call->event_len);
}

static void memory_publish(struct bus *b, struct bus_request *req)
{
    const char *from = req->user[0] ? req->user : NULL;
    uint64_t ts = event_now_ms();
    size_t len = 0;
    char *json;
    if (req->target == BUS_ROOM && !req->ephemeral) {
        struct store *s = bus_store(b);
        req->store.from = from;
        req->store.data = req->data;
        req->store.data_len = req->data_len;
        req->store.ts = ts;
        req->store.done = persisted;
        s->ops->append(s, &req->store);
        return;
    }
    if (req->target == BUS_ROOM)
        json = event_message(req->room, NULL, from, req->data, req->data_len, ts, &len);
    else
        json = event_direct(req->target == BUS_USER ? "direct" : "broadcast", from, req->data, req->data_len, ts, &len);
    deliver_and_ack(b, req, req->target, req->target == BUS_ROOM ? req->room : req->to, json, len);
}

/* Every publish reaches the bus at once: a room's events are "arriving"
 * from its first member on. */
static void memory_interest(struct bus *b, enum bus_target target, const char *name, int on)
{
    if (target == BUS_ROOM && on)
        bus_subscribed(b, name);
}

static void memory_presence(struct bus *b, const char *room, const char *user, unsigned long before,
                            unsigned long count)
{
    if (before && count)
        return;
    size_t len;
    const char *type = count ? "presence_join" : "presence_leave";
    char *json = event_presence(type, room, user, &len);
    struct bus_event *ev = json ? bus_event_create(BUS_ROOM, room, json, len) : NULL;
    free(json);
    if (ev)
        bus_deliver(b, ev);
    else
        log_error("bus: out of memory announcing %s of %s in %s", type, user, room);
}

static void memory_presence_list(struct bus *b, struct bus_request *req)
{
    if (!(req->users = presence_list(bus_presence(b), req->room)))
        req->error = "unavailable";
    bus_reply(b, req);
}

static void memory_rooms(struct bus *b, struct bus_request *req)
{
    if (!(req->rooms = bus_rooms_format(b, NULL)))
        req->error = "unavailable";
    bus_reply(b, req);
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
    .presence = memory_presence,
    .presence_list = memory_presence_list,
    .rooms = memory_rooms,
};
