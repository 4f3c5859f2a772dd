/* fuzz_envelope.c - libFuzzer target for envelope.c. The input is a channel
 * name, a newline, then the payload published on it (no newline: all of it
 * is a payload on the room channel of "r"). A channel that parses must
 * round-trip to the same text; a channel that does not is replaced by the
 * room channel of "r" so that the payload is still read. An event that
 * comes out must be a JSON object of the kind its channel carries, naming
 * its room; a refusal must give a reason.
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"

#define NS "wsfan"
#define NODE "node-1"

static void check_channel(const char *channel, enum bus_target target, const char *name)
{
    char again[NAME_MAX_LEN + 64];

    switch (target) {
    case BUS_ROOM:
        snprintf(again, sizeof again, NS ":room:{%s}", name);
        break;
    case BUS_USER:
        snprintf(again, sizeof again, NS ":user:{%s}", name);
        break;
    case BUS_ALL:
        if (name[0])
            abort();
        snprintf(again, sizeof again, NS ":all");
        break;
    default:
        abort();
    }
    if (target != BUS_ALL && !name_valid(name, strnlen(name, NAME_MAX_LEN + 1)))
        abort();
    if (strcmp(again, channel))
        abort();
}

static const char *string_field(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
        abort();
    return json_string_value(v);
}

static void check_event(const struct bus_event *ev, enum bus_target target, const char *name)
{
    json_error_t err;

    if (ev->target != target || strcmp(ev->name, name) || strlen(ev->json) != ev->len)
        abort();
    json_t *v = json_loadb(ev->json, ev->len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    if (!json_is_object(v))
        abort();
    const char *type = string_field(v, "type");
    if (target == BUS_ROOM && !strcmp(type, "message")) {
        if (strcmp(string_field(v, "room"), name) || !json_object_get(v, "data") ||
            !json_is_integer(json_object_get(v, "ts")))
            abort();
        if ((json_object_get(v, "offset") != NULL) != (ev->has_offset != 0))
            abort();
    } else if (target == BUS_ROOM && (!strcmp(type, "presence_join") || !strcmp(type, "presence_leave"))) {
        const char *user = string_field(v, "user");
        if (strcmp(string_field(v, "room"), name) || !name_valid(user, strlen(user)) || ev->has_offset ||
            json_object_size(v) != 3)
            abort();
    } else if ((target == BUS_USER && !strcmp(type, "direct")) || (target == BUS_ALL && !strcmp(type, "broadcast"))) {
        if (!json_object_get(v, "data") || !json_is_integer(json_object_get(v, "ts")) || json_object_get(v, "room"))
            abort();
    } else {
        abort();
    }
    json_t *from = json_object_get(v, "from");
    if (from && !json_is_null(from)) {
        const char *f = string_field(v, "from");
        if (!name_valid(f, strlen(f)))
            abort();
    }
    json_decref(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *input = (const char *)data;
    const char *nl = memchr(input, '\n', size);
    enum bus_target target = BUS_ROOM;
    char name[NAME_MAX_LEN + 1] = "r";
    const char *payload = input;
    size_t len = size;

    if (nl) {
        size_t n = (size_t)(nl - input);
        char *channel = malloc(n + 1);
        if (!channel)
            return 0;
        memcpy(channel, input, n);
        channel[n] = '\0';
        if (envelope_channel_parse(NS, channel, &target, name) == 0) {
            check_channel(channel, target, name);
        } else {
            target = BUS_ROOM;
            strcpy(name, "r");
        }
        free(channel);
        payload = nl + 1;
        len = size - n - 1;
    }

    const char *why = NULL;
    struct bus_event *ev = envelope_to_event(NODE, target, name, payload, len, &why);
    if (ev) {
        check_event(ev, target, name);
        bus_event_unref(ev);
    } else if (!why || !why[0]) {
        abort();
    }
    return 0;
}
