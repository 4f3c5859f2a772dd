/* bus_redis.c - the Redis engine of the bus (docs/protocol.md section 6): any
 * number of processes on any number of machines act as one server.
 * - One publishing connection and one subscriber connection per process.
 * - Subscriptions follow local interest: one SUBSCRIBE per room channel
 *   while the process has a member, per user channel while it has a
 *   connection of the user, per tenant's NS:all while it has a connection
 *   of the tenant, and the namespace's own NS:all always. Rooms and users
 *   are keys (core/names.h); a tenant's channels are under
 *   <namespace>:<tenant> (codec/envelope.c names and reads them). Each channel has at most one
 *   SUBSCRIBE or UNSUBSCRIBE in flight; a change of mind meanwhile is acted
 *   on when the reply comes, so churn never leaks or loses a subscription.
 * - Every PUBLISH payload is the envelope of section 6 (codec/envelope.c
 *   builds and reads it); what arrives is checked, turned into a client
 *   event once, and handed to bus_deliver().
 * - Persisted envelopes are sealed with the namespace's secret, NS:secret
 *   (made by the first node that finds none): an offset in a payload that
 *   no wsfan node sealed is not believed. So are disconnects (a control
 *   envelope on the user's channel), which nothing else may order.
 * - Presence is presence_redis.c's, on this engine's links.
 * Runs on the bus thread (the main loop). */
#include <jansson.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/bus.h"
#include "cluster/presence.h"
#include "codec/envelope.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/map.h"
#include "net/redis.h"

enum sub_state { SUB_IDLE, SUB_SUBSCRIBING, SUB_SUBSCRIBED, SUB_UNSUBSCRIBING };

/* One channel this process wants, or is still leaving. */
struct channel {
    enum sub_state state;
    int want;
    enum event_target target;
    char key[KEY_MAX_LEN + 1];  /* the room's, user's or tenant's key */
};

struct redis_bus {
    struct bus *bus;
    const struct config *cfg;
    struct redis_link pub, sub;
    struct map channels;          /* channel name -> struct channel */
    struct presence_redis *presence;
    char probe_channel[ENVELOPE_CHANNEL_MAX];  /* the subscriber link's liveness probes */
    struct log_limit bad_envelope_log;
    uint64_t bad_envelopes;
    int links_stopped;
    struct envelope_seal seal;    /* of NS:secret */
    int has_seal;                 /* seal is NS:secret as read on the bus link's last connect */
    int fetching;                 /* a read of NS:secret is on its way */
    uint64_t fetched_ms;          /* when the last read was sent */
    int unproven;                 /* deliveries were refused for their seal since the last read */
};

static struct redis_bus *engine(struct bus *b)
{
    return bus_engine_data(b);
}

/* ---- envelopes in ---------------------------------------------------------- */

static void bad_envelope(struct redis_bus *e, const char *channel, const char *why)
{
    e->bad_envelopes++;
    metrics_invalid_envelope(bus_metrics(e->bus));
    uint32_t suppressed;
    if (log_limit_allow(&e->bad_envelope_log, clock_wall_ms(), &suppressed))
        log_warn("redis: dropped a payload on %s: %s (%llu dropped in all, %u not logged)", channel, why,
                 (unsigned long long)e->bad_envelopes, suppressed);
}

static void fetch_secret(struct redis_bus *e);

static void on_payload(struct redis_bus *e, const char *channel, const char *payload, size_t len)
{
    enum event_target target;
    char key[KEY_MAX_LEN + 1];
    const char *why = "not a channel of this namespace";
    struct event *ev = envelope_channel_parse(e->cfg->ns, channel, &target, key) == 0
                               ? envelope_to_event(e->cfg->node_id, &e->seal, channel, target, key, payload,
                                                   len, &why)
                               : NULL;
    if (ev) {
        bus_deliver(e->bus, ev);
    } else if (why == envelope_unproven) {
        /* NS:secret may have been replaced (a Redis that restarted empty):
         * read it again, at most once a second (a flood of forged seals
         * costs one GET a second), and fill the rooms from history if it
         * changed. */
        e->unproven = 1;
        bad_envelope(e, channel, why);
        if (e->has_seal && clock_wall_ms() - e->fetched_ms >= 1000)
            fetch_secret(e);
    } else {
        bad_envelope(e, channel, why);
    }
}

/* ---- subscriptions ---------------------------------------------------------- */

/* On a cluster, room and user channels are sharded: SSUBSCRIBE, SPUBLISH.
 * The verb for target (EVENT_ALL: classic). */
static const char *sharded(const struct redis_bus *e, enum event_target target, const char *verb)
{
    if (!e->sub.url.nnodes || target == EVENT_ALL)
        return verb;
    return !strcmp(verb, "SUBSCRIBE") ? "SSUBSCRIBE" : !strcmp(verb, "UNSUBSCRIBE") ? "SUNSUBSCRIBE" : "SPUBLISH";
}

static void channel_drive(struct redis_bus *e, const char *channel);

/* A subscription command's reply, when it is not its confirmation (that
 * goes to on_sub_push): an error leaves the channel idle, asked for again
 * when its interest changes or the link reconnects, not in a loop. */
static void on_channel_reply(struct redis_link *l, void *reply, void *privdata)
{
    struct redis_bus *e = l->data;
    char *channel = privdata;
    redisReply *r = reply;
    struct channel *c = r && r->type == REDIS_REPLY_ERROR ? map_get(&e->channels, channel, strlen(channel)) : NULL;
    if (c && (c->state == SUB_SUBSCRIBING || c->state == SUB_UNSUBSCRIBING)) {
        log_error("redis: %s %s failed: %s; tried again when its interest changes or the link reconnects",
                  c->state == SUB_SUBSCRIBING ? "subscribing to" : "unsubscribing from", channel, r->str);
        c->state = SUB_IDLE;
        if (!c->want)
            channel_drive(e, channel);
    }
    free(channel);
}

static void channel_command(struct redis_bus *e, const char *verb, const char *channel)
{
    const char *argv[] = {verb, channel};
    char *name = strdup(channel);
    if (!name || redis_link_command(&e->sub, on_channel_reply, name, 2, argv, NULL)) {
        free(name);
        log_debug("redis: %s %s: the subscriber link is down; done when it is back", verb, channel);
    }
}

/* Moves a channel one step towards what is wanted, if nothing is in
 * flight; frees it when it is neither wanted nor subscribed. */
static void channel_drive(struct redis_bus *e, const char *channel)
{
    struct channel *c = map_get(&e->channels, channel, strlen(channel));
    if (!c)
        return;
    if (c->state == SUB_IDLE && !c->want) {
        free(map_remove(&e->channels, channel, strlen(channel)));
        return;
    }
    if (!e->sub.up)
        return;
    if (c->want && c->state == SUB_IDLE) {
        c->state = SUB_SUBSCRIBING;
        channel_command(e, sharded(e, c->target, "SUBSCRIBE"), channel);
    } else if (!c->want && c->state == SUB_SUBSCRIBED) {
        c->state = SUB_UNSUBSCRIBING;
        channel_command(e, sharded(e, c->target, "UNSUBSCRIBE"), channel);
    }
}

/* What the subscriber link pushes: messages, and confirmations. */
static void on_sub_push(struct redis_link *l, const redisReply *r)
{
    struct redis_bus *e = l->data;
    if (r->elements < 3 || r->element[1]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = r->element[0]->str, *channel = r->element[1]->str;
    if (!strcmp(channel, e->probe_channel)) {
        if (!strcmp(kind, "message"))
            redis_link_alive(&e->sub);
        return;
    }
    /* "smessage" and the others of sharded channels are as classic ones. */
    if (kind[0] == 's' && kind[1] != 'u')
        kind++;
    if (!strcmp(kind, "message")) {
        if (r->element[2]->type == REDIS_REPLY_STRING)
            on_payload(e, channel, r->element[2]->str, r->element[2]->len);
        return;
    }
    struct channel *c = map_get(&e->channels, channel, strlen(channel));
    if (!c)
        return;
    if (!strcmp(kind, "subscribe")) {
        c->state = SUB_SUBSCRIBED;
        if (c->want && c->target == EVENT_ROOM)
            bus_subscribed(e->bus, c->key);
    } else if (!strcmp(kind, "unsubscribe") || !strcmp(kind, "sunsubscribe")) {
        /* Also Redis's own, when the channel's slot moved to another
         * shard: subscribed again there (routed by the new map), and the
         * room fills its gap on the confirmation. */
        if (c->state == SUB_SUBSCRIBED && c->want) {
            log_info("redis: %s moved to another shard; subscribing there", channel);
            if (c->target == EVENT_ROOM)
                bus_unsubscribed(e->bus, c->key);
        }
        c->state = SUB_IDLE;
    }
    channel_drive(e, channel);
}

static void redis_interest(struct bus *b, enum event_target target, const char *key, int on)
{
    struct redis_bus *e = engine(b);
    char name[ENVELOPE_CHANNEL_MAX];
    envelope_channel_name(e->cfg->ns, target, key, name);
    struct channel *c = map_get(&e->channels, name, strlen(name));
    if (!c && on) {
        c = calloc(1, sizeof *c);
        if (!c || map_put(&e->channels, name, strlen(name), c)) {
            free(c);
            log_error("redis: out of memory subscribing to %s", name);
            return;
        }
        c->target = target;
        snprintf(c->key, sizeof c->key, "%s", key);
    }
    if (!c)
        return;
    c->want = on;
    channel_drive(e, name);
}

/* The subscriber link's health check: pub/sub itself must work, not only
 * the socket. A probe published on the bus link must come back on the
 * subscriber within --redis-timeout, else the subscriber is rebuilt and
 * every persisted room fills its gap, as after a reconnect. */
static int sub_probe(struct redis_link *l)
{
    struct redis_bus *e = l->data;
    const char *argv[] = {"PUBLISH", e->probe_channel, "probe"};
    return redis_link_command(&e->pub, NULL, NULL, 3, argv, NULL);
}

static void on_sub_up(struct redis_link *l)
{
    struct redis_bus *e = l->data;
    if (l->reconnects)
        metrics_bus_reconnect(bus_metrics(e->bus));
    channel_command(e, "SUBSCRIBE", e->probe_channel);
    /* Subscribe everything wanted again; rooms fill their gap on confirmation. */
    const struct map_slot *slot;
    for (size_t i = 0; map_next(&e->channels, &i, &slot);)
        ((struct channel *)slot->value)->state = SUB_IDLE;
    char **keys = malloc(sizeof *keys * (e->channels.count + 1));
    size_t n = 0;
    for (size_t i = 0; keys && map_next(&e->channels, &i, &slot);)
        keys[n++] = strdup(slot->key);
    for (size_t i = 0; i < n; i++) {
        if (keys[i])
            channel_drive(e, keys[i]);
        free(keys[i]);
    }
    free(keys);
    bus_ready_changed(e->bus);
    bus_link_changed(e->bus, 1);
}

static void on_sub_down(struct redis_link *l)
{
    struct redis_bus *e = l->data;
    bus_ready_changed(e->bus);
    bus_link_changed(e->bus, 0);
}

static void on_secret(struct redis_link *link, void *reply, void *privdata)
{
    (void)link;
    struct redis_bus *e = privdata;
    redisReply *r = reply;
    e->fetching = 0;
    struct envelope_seal seal;
    if (!r || r->type != REDIS_REPLY_STRING || envelope_seal_init(&seal, r->str, r->len)) {
        if (r)
            log_error("redis: %s:secret is not a secret of 1 to 64 bytes; envelopes cannot be sealed", e->cfg->ns);
        return;
    }
    /* Deliveries refused under another secret are read from history, once
     * the secret is known to have changed (else they were forged). */
    int changed = !e->has_seal || memcmp(&seal, &e->seal, sizeof seal);
    e->seal = seal;
    e->has_seal = 1;
    if (e->unproven && changed) {
        log_info("redis: %s:secret changed; filling every room from history", e->cfg->ns);
        bus_fill_gaps(e->bus);
    }
    e->unproven = 0;
    bus_ready_changed(e->bus);
}

/* Reads NS:secret (on every connect: it may have been replaced meanwhile,
 * and when a delivery's seal is not of it), making one if there is none. */
static void fetch_secret(struct redis_bus *e)
{
    if (e->fetching)
        return;
    e->fetched_ms = clock_wall_ms();
    unsigned char raw[32];
    char key[ENVELOPE_CHANNEL_MAX], fresh[2 * sizeof raw + 1];
    if (RAND_bytes(raw, sizeof raw) != 1) {
        log_error("redis: no random bytes for a new %s:secret", e->cfg->ns);
        return;
    }
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(fresh + 2 * i, 3, "%02x", raw[i]);
    snprintf(key, sizeof key, "%s:secret", e->cfg->ns);
    const char *set[] = {"SET", key, fresh, "NX"}, *get[] = {"GET", key};
    e->fetching = redis_link_command(&e->pub, NULL, NULL, 4, set, NULL) == 0 &&
                  redis_link_command(&e->pub, on_secret, e, 2, get, NULL) == 0;
}

static void on_pub_changed(struct redis_link *l)
{
    struct redis_bus *e = l->data;
    if (l->up)
        fetch_secret(e);
    else
        e->has_seal = e->fetching = 0;
    bus_ready_changed(e->bus);
}

/* ---- publishing ----------------------------------------------------------- */

/* One PUBLISH of req's is over (error: 0 or why it failed). req is
 * answered after its last, with the first error: with several users, some
 * may have had the message. */
static void publish_done(struct bus_publish *req, int error)
{
    if (error && !req->base.error)
        req->base.error = error;
    if (--req->pending == 0)
        bus_reply(req->base.bus, &req->base);
}

static void on_published(struct redis_link *link, void *reply, void *privdata)
{
    (void)link;
    redisReply *r = reply;
    publish_done(privdata, !r || r->type == REDIS_REPLY_ERROR ? WSFAN_EUNAVAILABLE : 0);
}

/* PUBLISHes the envelope parts around offset (NULL: none) as one more of
 * req's PUBLISHes (publish_done). */
static void publish_envelope(struct redis_bus *e, struct bus_publish *req, const char *channel,
                             const struct envelope_parts *env, const char *offset)
{
    req->pending++;
    char *payload = envelope_join(env, &e->seal, channel, offset);
    const char *argv[] = {sharded(e, req->target, "PUBLISH"), channel, payload};
    if (!payload || redis_link_command(&e->pub, on_published, req, 3, argv, NULL))
        publish_done(req, payload ? WSFAN_EUNAVAILABLE : WSFAN_ENOMEM);
    free(payload);
}

/* What an append carries until its reply: the envelope and its channel. */
struct append {
    struct envelope_parts env;
    char channel[ENVELOPE_CHANNEL_MAX];
};

static void on_appended(struct store_call *call)
{
    struct bus_publish *req = (struct bus_publish *)((char *)call - offsetof(struct bus_publish, store));
    struct redis_bus *e = engine(req->base.bus);
    struct append *a = (struct append *)((char *)call->envelope - offsetof(struct append, env));
    call->envelope = NULL;
    if (call->error) {
        req->base.error = call->error;
        bus_reply(e->bus, &req->base);
    } else if (call->published || call->duplicate) {
        bus_reply(e->bus, &req->base);
    } else {
        /* History lives on another Redis: publish after persisting. */
        publish_envelope(e, req, a->channel, &a->env, call->offset);
    }
    envelope_parts_free(&a->env);
    free(a);
}

static void redis_publish(struct bus *b, struct bus_publish *req)
{
    struct redis_bus *e = engine(b);
    char skip[48];
    snprintf(skip, sizeof skip, "%d.%llu", req->base.worker, (unsigned long long)req->skip_seq);
    struct envelope_fields f = {
        .target = req->target,
        .room = req->name,
        .from = req->store.from,
        .ts = req->store.ts,
        .origin = e->cfg->node_id,
        .echo_skip = req->skip_seq ? skip : NULL,
        .data = req->data,
        .data_len = req->data_len,
        .disconnect = req->disconnect,
    };
    int persisted = req->target == EVENT_ROOM && !req->ephemeral && e->cfg->history_length > 0;
    struct append *a = calloc(1, sizeof *a);
    if (!a || envelope_build(&f, persisted, &a->env)) {
        free(a);
        req->base.error = WSFAN_ENOMEM;
        bus_reply(b, &req->base);
        return;
    }
    if (!persisted) {
        /* One PUBLISH per key; the extra count keeps req from being
         * answered before the last is sent. */
        req->pending++;
        for (const char *key = NULL; !req->base.error && (key = bus_publish_next_key(req, key));) {
            envelope_channel_name(e->cfg->ns, req->target, key, a->channel);
            publish_envelope(e, req, a->channel, &a->env, NULL);
        }
        envelope_parts_free(&a->env);
        free(a);
        publish_done(req, 0);
        return;
    }
    envelope_channel_name(e->cfg->ns, req->target, req->name, a->channel);
    struct store *s = bus_store(b);
    req->store.channel = a->channel;
    req->store.envelope = &a->env;
    req->store.seal = &e->seal;
    req->store.done = on_appended;
    s->ops->append(s, &req->store);
}

/* ---- presence ---------------------------------------------------------------- */

static void redis_presence(struct bus *b, const char *room, const char *user, unsigned long before,
                           unsigned long count, const char *info)
{
    presence_redis_changed(engine(b)->presence, room, user, count, count > before, info);
}

static void redis_presence_list(struct bus *b, struct bus_presence *req)
{
    presence_redis_list(engine(b)->presence, req);
}

static void redis_rooms(struct bus *b, struct bus_rooms *req)
{
    presence_redis_rooms(engine(b)->presence, req);
}

/* ---- lifetime -------------------------------------------------------------- */

static int redis_start(struct bus *b)
{
    struct redis_bus *e = calloc(1, sizeof *e);
    if (!e)
        return -1;
    e->bus = b;
    e->cfg = bus_config(b);
    map_init(&e->channels);
    struct redis_link *links[] = {&e->pub, &e->sub};
    const char *names[] = {"bus", "subscriber"};
    for (int i = 0; i < 2; i++) {
        redis_link_configure(links[i], e->cfg->redis_url, names[i], e->cfg);
        links[i]->data = e;
    }
    e->pub.on_up = e->pub.on_down = on_pub_changed;
    e->sub.on_up = on_sub_up;
    e->sub.on_push = on_sub_push;
    e->sub.probe = sub_probe;
    envelope_probe_channel(e->cfg->ns, e->cfg->node_id, e->probe_channel);
    e->sub.on_down = on_sub_down;
    bus_set_engine_data(b, e);
    if (!(e->presence = presence_redis_create(b, &e->pub))) {
        free(e);
        return -1;
    }
    redis_interest(b, EVENT_ALL, "", 1);
    return redis_link_start(&e->pub, bus_loop(b)) || redis_link_start(&e->sub, bus_loop(b)) ? -1 : 0;
}

static void on_link_stopped(struct redis_link *l)
{
    struct redis_bus *e = l->data;
    if (++e->links_stopped < 2)
        return;
    const struct map_slot *slot;
    for (size_t i = 0; map_next(&e->channels, &i, &slot);)
        free(slot->value);
    map_free(&e->channels);
    free(e);
}

static void redis_stop(struct bus *b)
{
    struct redis_bus *e = engine(b);
    presence_redis_destroy(e->presence);
    e->pub.on_stopped = e->sub.on_stopped = on_link_stopped;
    redis_link_stop(&e->pub);
    redis_link_stop(&e->sub);
}

static int redis_ready(struct bus *b)
{
    struct redis_bus *e = engine(b);
    struct store *s = bus_store(b);
    return e->pub.up && e->sub.up && e->has_seal && s->ops->ready(s);
}

const struct bus_engine bus_redis_engine = {
    .name = "redis",
    .position_sync = 1,
    .start = redis_start,
    .stop = redis_stop,
    .ready = redis_ready,
    .publish = redis_publish,
    .interest = redis_interest,
    .presence = redis_presence,
    .presence_list = redis_presence_list,
    .rooms = redis_rooms,
};
