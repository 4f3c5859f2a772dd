/* envelope.c - envelopes built for Redis, and envelopes from Redis checked
 * and turned into client events once per process. See envelope.h. */
#include "codec/envelope.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"


void envelope_redis_name(const char *ns, const char *kind, const char *key, char out[ENVELOPE_CHANNEL_MAX])
{
    int tenant = (int)name_key_tenant_len(key);
    const char *name = name_of_key(key);
    if (*name)
        snprintf(out, ENVELOPE_CHANNEL_MAX, "%s%s%.*s:%s:{%s}", ns, tenant ? ":" : "", tenant, key, kind, name);
    else
        snprintf(out, ENVELOPE_CHANNEL_MAX, "%s%s%.*s:%s", ns, tenant ? ":" : "", tenant, key, kind);
}

void envelope_channel_name(const char *ns, enum event_target target, const char *key,
                           char out[ENVELOPE_CHANNEL_MAX])
{
    envelope_redis_name(ns, target == EVENT_ROOM ? "room" : target == EVENT_USER ? "user" : "all", key, out);
}

void envelope_probe_channel(const char *ns, const char *node, char out[ENVELOPE_CHANNEL_MAX])
{
    snprintf(out, ENVELOPE_CHANNEL_MAX, "%s:probe:{%s}", ns, node);
}

int envelope_seal_init(struct envelope_seal *s, const char *secret, size_t len)
{
    if (!len || len > sizeof s->ipad)
        return -1;
    unsigned char key[64] = {0};
    memcpy(key, secret, len);
    s->len = len;
    for (size_t i = 0; i < sizeof key; i++) {
        s->ipad[i] = key[i] ^ 0x36;
        s->opad[i] = key[i] ^ 0x5c;
    }
    return 0;
}

static const char mac_field[] = "\",\"mac\":\"";

/* The hex seal of CHANNEL \n before after (the text with the mac's value
 * left out) into hex. Returns 0 or -1 when out of memory. */
/* The lowercase hex SHA-1 of pad followed by the len bytes at buf + 64
 * (pad is copied in front of them). */
static int sha1_hex(const unsigned char pad[64], unsigned char *buf, size_t len, char hex[ENVELOPE_SEAL_HEX + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    memcpy(buf, pad, 64);
    if (!EVP_Digest(buf, 64 + len, md, &md_len, EVP_sha1(), NULL) || md_len * 2 != ENVELOPE_SEAL_HEX)
        return -1;
    for (unsigned int i = 0; i < md_len; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return 0;
}

/* The seal of CHANNEL \n before after (the text with the mac's value left
 * out) into hex: HMAC-SHA1's two nested hashes, the inner one passed on in
 * hex rather than in bytes, which is what Redis's Lua can do cheaply
 * (redis.sha1hex). Returns 0 or -1 when out of memory. */
static int seal_hex(const struct envelope_seal *s, const char *channel, const char *before, size_t before_len,
                    const char *after, size_t after_len, char hex[ENVELOPE_SEAL_HEX + 1])
{
    size_t ch_len = strlen(channel), len = ch_len + 1 + before_len + after_len;
    unsigned char *buf = malloc(64 + (len > ENVELOPE_SEAL_HEX ? len : ENVELOPE_SEAL_HEX));
    if (!buf)
        return -1;
    unsigned char *msg = buf + 64;
    memcpy(msg, channel, ch_len);
    msg[ch_len] = '\n';
    memcpy(msg + ch_len + 1, before, before_len);
    memcpy(msg + ch_len + 1 + before_len, after, after_len);
    char inner[ENVELOPE_SEAL_HEX + 1];
    int rc = sha1_hex(s->ipad, buf, len, inner);
    if (rc == 0) {
        memcpy(msg, inner, ENVELOPE_SEAL_HEX);
        rc = sha1_hex(s->opad, buf, ENVELOPE_SEAL_HEX, hex);
    }
    free(buf);
    return rc;
}

const char envelope_unproven[] = "its seal is not of this namespace's secret";

/* Whether payload's seal (its "mac", written as a node writes it) proves
 * it on channel. */
static int sealed(const struct envelope_seal *s, const char *channel, const char *payload, size_t len)
{
    const char *at = memmem(payload, len, mac_field, sizeof mac_field - 1);
    if (!at)
        return 0;
    const char *value = at + sizeof mac_field - 1;
    size_t before = (size_t)(value - payload);
    if (len - before < ENVELOPE_SEAL_HEX + 1 || value[ENVELOPE_SEAL_HEX] != '"')
        return 0;
    char want[ENVELOPE_SEAL_HEX + 1];
    return s->len &&
           seal_hex(s, channel, payload, before, value + ENVELOPE_SEAL_HEX, len - before - ENVELOPE_SEAL_HEX, want) == 0 &&
           CRYPTO_memcmp(want, value, ENVELOPE_SEAL_HEX) == 0;
}

int envelope_build(const struct envelope_fields *f, int persisted, struct envelope_parts *out)
{
    char from[NAME_MAX_LEN + 3] = "null", skip[48] = "null", room[NAME_MAX_LEN + 16] = "";
    if (f->from)
        snprintf(from, sizeof from, "\"%s\"", f->from);
    if (f->echo_skip)
        snprintf(skip, sizeof skip, "\"%s\"", f->echo_skip);
    if (f->target == EVENT_ROOM)
        snprintf(room, sizeof room, "\"room\":\"%s\",", name_of_key(f->room));
    out->head = out->tail = NULL;
    out->control = f->disconnect;
    const char *sealed_field = persisted ? ",\"offset\":\"" : f->disconnect ? ",\"control\":\"disconnect" : "";
    if (asprintf(&out->head, "{\"v\":1,%s\"from\":%s,\"ts\":%llu,\"origin\":\"%s\",\"echo_skip\":%s%s", room, from,
                 (unsigned long long)f->ts, f->origin, skip, sealed_field) < 0) {
        out->head = NULL;
        return -1;
    }
    if (asprintf(&out->tail, ",\"data\":%.*s}", f->data ? (int)f->data_len : 4, f->data ? f->data : "null") < 0) {
        free(out->head);
        out->head = out->tail = NULL;
        return -1;
    }
    return 0;
}

char *envelope_join(const struct envelope_parts *p, const struct envelope_seal *seal, const char *channel,
                    const char *offset)
{
    char *text = NULL, *before = NULL, hex[ENVELOPE_SEAL_HEX + 1];
    if (!offset && !p->control)
        return asprintf(&text, "%s%s", p->head, p->tail) < 0 ? NULL : text;
    if (asprintf(&before, "%s%s%s", p->head, offset ? offset : "", mac_field) < 0)
        return NULL;
    size_t tail_len = strlen(p->tail);
    char *after = malloc(tail_len + 2);
    if (after) {
        after[0] = '"';
        memcpy(after + 1, p->tail, tail_len + 1);
    }
    if (!after || seal_hex(seal, channel, before, strlen(before), after, tail_len + 1, hex) ||
        asprintf(&text, "%s%s%s", before, hex, after) < 0)
        text = NULL;
    free(before);
    free(after);
    return text;
}

void envelope_parts_free(struct envelope_parts *p)
{
    free(p->head);
    free(p->tail);
    p->head = p->tail = NULL;
}

char *envelope_presence(const char *room, const char *user, enum event_kind kind, const char *origin,
                        const char *info)
{
    char *text = NULL;
    int join = kind == EVENT_PRESENCE_JOIN;
    if (asprintf(&text,
                 "{\"v\":1,\"room\":\"%s\",\"presence\":\"%s\",\"user\":\"%s\",\"origin\":\"%s\",%s%s%s\"data\":null}",
                 name_of_key(room), join ? "join" : "leave", user, origin, join && info ? "\"info\":" : "",
                 join && info ? info : "", join && info ? "," : "") < 0)
        return NULL;
    return text;
}

/* The tenant part of a channel, s[0..len) with the ':' that ends it, into
 * key as "T/" (nothing without a tenant). Returns the length written, or
 * -1 when it is not ":"-ended around a valid tenant name. */
static int tenant_prefix(const char *s, size_t len, char key[KEY_MAX_LEN + 1])
{
    if (len == 0)
        return 0;
    if (s[len - 1] != ':' || !name_tenant_valid(s, len - 1))
        return -1;
    memcpy(key, s, len - 1);
    key[len - 1] = '/';
    return (int)len;
}

int envelope_channel_parse(const char *ns_name, const char *ch, enum event_target *target, char key[KEY_MAX_LEN + 1])
{
    size_t ns = strlen(ns_name);
    if (strncmp(ch, ns_name, ns) || ch[ns] != ':')
        return -1;
    ch += ns + 1;
    size_t len = strlen(ch);
    const char *open = strchr(ch, '{');
    int at;
    if (!open) {
        /* "all" or "T:all" */
        if (len < 3 || strcmp(ch + len - 3, "all") || (at = tenant_prefix(ch, len - 3, key)) < 0)
            return -1;
        *target = EVENT_ALL;
        key[at] = '\0';
        return 0;
    }
    /* "room:{R}", "user:{U}", or either after "T:" */
    if (open - ch < 5 || ch[len - 1] != '}')
        return -1;
    const char *kind = open - 5;
    if (!strncmp(kind, "room:", 5))
        *target = EVENT_ROOM;
    else if (!strncmp(kind, "user:", 5))
        *target = EVENT_USER;
    else
        return -1;
    size_t name_len = (size_t)(ch + len - 1 - open - 1);
    if ((at = tenant_prefix(ch, (size_t)(kind - ch), key)) < 0 || !name_valid(open + 1, name_len))
        return -1;
    memcpy(key + at, open + 1, name_len);
    key[at + (int)name_len] = '\0';
    return 0;
}

/* The value of a JSON string without a NUL inside it (C functions would
 * read it cut short), else NULL. */
static const char *whole_string(json_t *v)
{
    const char *s = json_string_value(v);
    return s && strlen(s) == json_string_length(v) ? s : NULL;
}

/* Reads a decimal number that fits 64 bits at *s and moves *s past it. */
static int parse_decimal(const char **s, uint64_t *out)
{
    uint64_t v = 0;
    const char *p = *s;
    for (; *p >= '0' && *p <= '9'; p++) {
        uint64_t digit = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - digit) / 10)
            return -1;
        v = v * 10 + digit;
    }
    if (p == *s)
        return -1;
    *s = p;
    *out = v;
    return 0;
}

/* A session id "<worker>.<seq>", nothing else. */
static int parse_session(const char *s, uint64_t *worker, uint64_t *seq)
{
    if (parse_decimal(&s, worker) || *s++ != '.' || parse_decimal(&s, seq))
        return -1;
    return *s ? -1 : 0;
}

/* A name field that may be absent or null; -1 when present but invalid. */
static int optional_name(json_t *env, const char *key, const char **out)
{
    json_t *v = json_object_get(env, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v) || !name_valid(json_string_value(v), json_string_length(v)))
        return -1;
    *out = json_string_value(v);
    return 0;
}

/* Builds the client event for one envelope; NULL with *why set when the
 * envelope is not acceptable. */
static struct event *event_of(const char *node_id, enum event_target target, const char *key, json_t *env,
                              int offset_proven, const char **why)
{
    json_t *v = json_object_get(env, "v");
    if (v && !(json_is_integer(v) && json_integer_value(v) == 1)) {
        *why = "unknown envelope version";
        return NULL;
    }
    if (!json_object_get(env, "data")) {
        *why = "no data";
        return NULL;
    }
    const char *from, *user;
    if (optional_name(env, "from", &from) || optional_name(env, "user", &user)) {
        *why = "from or user is not a valid id";
        return NULL;
    }
    /* Only a node's seal makes a control envelope (envelope_to_event). */
    json_t *control = json_object_get(env, "control");
    if (control) {
        const char *kind = whole_string(control);
        if (target != EVENT_USER || !kind || strcmp(kind, "disconnect")) {
            *why = "control needs a user channel and disconnect";
            return NULL;
        }
        struct event *ev = event_disconnect(key);
        if (!ev)
            *why = "out of memory";
        return ev;
    }
    json_t *presence = json_object_get(env, "presence");
    struct offset offset;
    json_t *offset_v = json_object_get(env, "offset");
    int has_offset = offset_v && !json_is_null(offset_v);
    if (has_offset && (!whole_string(offset_v) || offset_parse(whole_string(offset_v), &offset))) {
        *why = "offset is not an offset";
        return NULL;
    }
    /* Only a wsfan node's append knows a real offset (section 6). */
    has_offset = has_offset && offset_proven;
    json_t *ts_v = json_object_get(env, "ts");
    uint64_t ts = json_is_integer(ts_v) && json_integer_value(ts_v) >= 0 ? (uint64_t)json_integer_value(ts_v)
                                                                          : clock_wall_ms();
    struct event *ev = NULL;
    if (presence) {
        const char *kind = whole_string(presence);
        if (target != EVENT_ROOM || !user || !kind || (strcmp(kind, "join") && strcmp(kind, "leave"))) {
            *why = "presence needs a room channel, a user and join or leave";
            return NULL;
        }
        int join = !strcmp(kind, "join");
        json_t *info_v = json_object_get(env, "info");
        char *info = NULL;
        if (join && info_v && !json_is_null(info_v) &&
            (!json_is_object(info_v) || !(info = json_dumps(info_v, JSON_COMPACT)) || strlen(info) > EVENT_INFO_MAX)) {
            free(info);
            *why = "info is not a JSON object of at most 1 KiB";
            return NULL;
        }
        ev = event_presence(join ? EVENT_PRESENCE_JOIN : EVENT_PRESENCE_LEAVE, key, user, info);
        free(info);
    } else {
        char *data = json_dumps(json_object_get(env, "data"), JSON_COMPACT | JSON_ENCODE_ANY);
        if (data && target == EVENT_ROOM)
            ev = event_message(key, has_offset ? &offset : NULL, from, data, strlen(data), ts);
        else if (data)
            ev = event_direct(target, key, from, data, strlen(data), ts);
        free(data);
    }
    if (!ev) {
        *why = "out of memory";
        return NULL;
    }
    /* echo:false from this node: the publisher's own connection is skipped. */
    json_t *origin = json_object_get(env, "origin"), *skip = json_object_get(env, "echo_skip");
    uint64_t worker, seq;
    if (whole_string(origin) && !strcmp(whole_string(origin), node_id) && whole_string(skip) &&
        parse_session(whole_string(skip), &worker, &seq) == 0 && worker < 65536) {
        ev->skip_worker = (int)worker;
        ev->skip_seq = seq;
    }
    return ev;
}

struct event *envelope_to_event(const char *node_id, const struct envelope_seal *seal, const char *channel,
                                enum event_target target, const char *key, const char *payload, size_t len,
                                const char **why)
{
    json_error_t err;
    json_t *env = json_loadb(payload, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    *why = "not a JSON object";
    struct event *ev = NULL;
    if (json_is_object(env)) {
        /* An offset without a "mac" is delivered without it; one with a
         * "mac" that proves nothing is not delivered at all. A control
         * needs a "mac" that proves it: any Redis client can publish on a
         * user's channel. */
        json_t *offset = json_object_get(env, "offset");
        int control = json_object_get(env, "control") != NULL;
        int wants_seal = (offset && !json_is_null(offset)) || control;
        int has_mac = json_object_get(env, "mac") != NULL;
        int proven = wants_seal && has_mac && sealed(seal, channel, payload, len);
        if (has_mac && wants_seal && !proven)
            *why = envelope_unproven;
        else if (control && !proven)
            *why = "a control envelope without a seal";
        else
            ev = event_of(node_id, target, key, env, proven, why);
    }
    json_decref(env);
    return ev;
}
