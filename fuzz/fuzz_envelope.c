/* fuzz_envelope.c - libFuzzer target for codec/envelope.c. The input is a
 * channel name, a newline, then the payload published on it (no newline:
 * all of it is a payload on the room channel of "r"). A channel that parses
 * (of the namespace or of a tenant of it) must round-trip to the same
 * text, by hand and through envelope_channel_name; a channel that does not
 * is replaced by the room channel of "r" so that the payload is still
 * read. An event that comes out must be a JSON object of the kind its
 * channel carries, naming its room (the key's name), its kind matching its
 * type, a presence_join's info an object of at most EVENT_INFO_MAX bytes;
 * and the envelope this node would
 * publish for that event (envelope_build and envelope_join, or
 * envelope_presence) must read back as the same event. A refusal must give
 * a reason.
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/envelope.h"

#define NS "wsfan"
#define NODE "node-1"
#define OTHER_NODE "node-2"

/* Every envelope here is sealed and read on one channel with one secret. */
#define SEAL_CHANNEL "ns:room:{r}"
static struct envelope_seal seal;

static void check_channel(const char *channel, enum event_target target, const char *key)
{
    char again[ENVELOPE_CHANNEL_MAX], ns[NAME_MAX_LEN + TENANT_MAX_LEN + 2];
    size_t tenant = name_key_tenant_len(key);
    const char *name = name_of_key(key);

    if (tenant && (!name_tenant_valid(key, tenant) || key[tenant] != '/'))
        abort();
    snprintf(ns, sizeof ns, NS "%s%.*s", tenant ? ":" : "", (int)tenant, key);
    switch (target) {
    case EVENT_ROOM:
        snprintf(again, sizeof again, "%s:room:{%s}", ns, name);
        break;
    case EVENT_USER:
        snprintf(again, sizeof again, "%s:user:{%s}", ns, name);
        break;
    case EVENT_ALL:
        if (name[0] || (!tenant && key[0]))
            abort();
        snprintf(again, sizeof again, "%s:all", ns);
        break;
    default:
        abort();
    }
    if (target != EVENT_ALL && !name_valid(name, strnlen(name, NAME_MAX_LEN + 1)))
        abort();
    if (strcmp(again, channel))
        abort();
    char built[ENVELOPE_CHANNEL_MAX];
    envelope_channel_name(NS, target, key, built);
    if (strcmp(built, channel))
        abort();
}

static const char *string_field(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
        abort();
    return json_string_value(v);
}

/* The envelope another node would publish for ev (of JSON v), read back
 * here, must give the same event. */
static void check_rebuilt(const struct event *ev, json_t *v)
{
    char *text = NULL;
    if (ev->kind == EVENT_PRESENCE_JOIN || ev->kind == EVENT_PRESENCE_LEAVE) {
        json_t *info_v = json_object_get(v, "info");
        char *info = info_v ? json_dumps(info_v, JSON_COMPACT) : NULL;
        if (info_v && !info)
            return;
        text = envelope_presence(ev->key, string_field(v, "user"), ev->kind, OTHER_NODE, info);
        free(info);
    } else {
        json_t *from = json_object_get(v, "from");
        char *data = json_dumps(json_object_get(v, "data"), JSON_COMPACT | JSON_ENCODE_ANY);
        if (!data)
            return;
        struct envelope_fields f = {
            .target = ev->target,
            .room = ev->target == EVENT_ROOM ? ev->key : NULL,
            .from = json_is_string(from) ? string_field(v, "from") : NULL,
            .ts = (uint64_t)json_integer_value(json_object_get(v, "ts")),
            .origin = OTHER_NODE,
            .echo_skip = "1.2",
            .data = data,
            .data_len = strlen(data),
        };
        struct envelope_parts parts;
        if (envelope_build(&f, ev->has_offset, &parts) == 0) {
            char offset[OFFSET_MAX_LEN];
            offset_format(ev->offset, offset);
            text = envelope_join(&parts, &seal, SEAL_CHANNEL, ev->has_offset ? offset : NULL);
            envelope_parts_free(&parts);
        }
        free(data);
    }
    if (!text)
        return;
    const char *why = NULL;
    struct event *again = envelope_to_event(NODE, &seal, SEAL_CHANNEL, ev->target, ev->key, text, strlen(text), &why);
    if (!again || again->len != ev->len || memcmp(again->json, ev->json, ev->len) || again->kind != ev->kind ||
        again->has_offset != ev->has_offset || offset_cmp(again->offset, ev->offset) || again->skip_worker != -1)
        abort();
    event_unref(again);
    free(text);
}

static void check_event(const struct event *ev, enum event_target target, const char *key)
{
    json_error_t err;
    const char *name = name_of_key(key);

    if (ev->target != target || strcmp(ev->key, key) || strlen(ev->json) != ev->len)
        abort();
    json_t *v = json_loadb(ev->json, ev->len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    if (!json_is_object(v))
        abort();
    const char *type = string_field(v, "type");
    static const char *const types[] = {
        [EVENT_MESSAGE] = "message",           [EVENT_DIRECT] = "direct",
        [EVENT_BROADCAST] = "broadcast",       [EVENT_PRESENCE_JOIN] = "presence_join",
        [EVENT_PRESENCE_LEAVE] = "presence_leave",
    };
    if ((unsigned)ev->kind >= sizeof types / sizeof types[0] || strcmp(types[ev->kind], type))
        abort();
    if (target == EVENT_ROOM && !strcmp(type, "message")) {
        if (strcmp(string_field(v, "room"), name) || !json_object_get(v, "data") ||
            !json_is_integer(json_object_get(v, "ts")))
            abort();
        if ((json_object_get(v, "offset") != NULL) != (ev->has_offset != 0))
            abort();
    } else if (target == EVENT_ROOM && (!strcmp(type, "presence_join") || !strcmp(type, "presence_leave"))) {
        const char *user = string_field(v, "user");
        json_t *info = json_object_get(v, "info");
        if (strcmp(string_field(v, "room"), name) || !name_valid(user, strlen(user)) || ev->has_offset ||
            json_object_size(v) != (info ? 4u : 3u))
            abort();
        if (info) {
            char *text = json_dumps(info, JSON_COMPACT);
            if (!json_is_object(info) || strcmp(type, "presence_join") || (text && strlen(text) > EVENT_INFO_MAX))
                abort();
            free(text);
        }
    } else if ((target == EVENT_USER && !strcmp(type, "direct")) ||
               (target == EVENT_ALL && !strcmp(type, "broadcast"))) {
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
    check_rebuilt(ev, v);
    json_decref(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *input = (const char *)data;
    const char *nl = memchr(input, '\n', size);
    enum event_target target = EVENT_ROOM;
    char name[KEY_MAX_LEN + 1] = "r";
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
            target = EVENT_ROOM;
            strcpy(name, "r");
        }
        free(channel);
        payload = nl + 1;
        len = size - n - 1;
    }

    const char *why = NULL;
    if (!seal.len && envelope_seal_init(&seal, "fuzz-secret", 11))
        abort();
    struct event *ev = envelope_to_event(NODE, &seal, SEAL_CHANNEL, target, name, payload, len, &why);
    if (ev) {
        check_event(ev, target, name);
        event_unref(ev);
    } else if (!why || !why[0]) {
        abort();
    }
    return 0;
}
