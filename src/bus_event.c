/* bus_event.c - the client events the bus hands to workers: built once,
 * shared read-only by every worker that delivers them, freed by the last.
 * See bus.h. Any thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"

struct bus_event *bus_event_create(enum bus_target target, const char *name, const char *json, size_t len)
{
    struct bus_event *ev = malloc(sizeof *ev + len + 1);
    if (!ev)
        return NULL;
    atomic_init(&ev->refs, 1);
    ev->target = target;
    snprintf(ev->name, sizeof ev->name, "%s", name ? name : "");
    ev->skip_worker = -1;
    ev->skip_seq = 0;
    ev->has_offset = 0;
    ev->len = len;
    memcpy(ev->json, json, len);
    ev->json[len] = '\0';
    return ev;
}

void bus_event_unref(struct bus_event *ev)
{
    if (atomic_fetch_sub(&ev->refs, 1) == 1)
        free(ev);
}
