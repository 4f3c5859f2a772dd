/* bus_memory.c - the memory engine of the bus: the workers of this process
 * are all there is, so publishing is storing (for persisted room messages)
 * and delivering straight away. Runs on the bus thread. */
#include <stdlib.h>

#include "bus.h"
#include "log.h"

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

/* Interest needs no action here: the bus routes by its own counts. */
static void memory_interest(struct bus *b, enum bus_target target, const char *name, int on)
{
    (void)b;
    (void)target;
    (void)name;
    (void)on;
}

const struct bus_engine bus_memory_engine = {
    .name = "memory",
    .publish = memory_publish,
    .interest = memory_interest,
};
