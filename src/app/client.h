/* client.h - one client of the server: the struct that embeds its conn,
 * and the WebSocket session after the upgrade (docs/protocol.md sections
 * 1 to 3): JSON commands in, replies and events out. Validates and
 * dispatches each command (a stream's joins too, app/sse.c); answers at once (ping, errors) or submits a
 * request to the bus and answers when it comes back. Never writes to
 * another connection's socket. The HTTP phase before the upgrade is
 * router.c's. Worker thread only. */
#ifndef WSFAN_CLIENT_H
#define WSFAN_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "app/admission.h"
#include "app/hub.h"
#include "codec/token.h"
#include "core/bucket.h"
#include "net/conn.h"
#include "net/loop.h"

#define CLIENT_SUBPROTOCOL "wsfan.v1"
#define PENDING_MAX 1024 /* commands of one connection waiting for the bus */

struct app;
struct auth_result;
struct call;
struct http_reader;
struct offset;
struct sse_stream;

/* What a client's token says (docs/protocol.md section 1a): one block,
 * allocated with the first token, so that a connection without one holds a
 * pointer only. */
struct client_claims {
    struct token_rights rights; /* what the token allows */
    char *tenant;               /* the tenant claim (owned): its rooms and users
                                   are keys of it (core/names.h) */
    char *info;                 /* the info claim as compact JSON (owned) */
    uint64_t expires_ms;        /* loop time when exp + leeway has passed; 0: never */
};

struct client {
    struct conn conn;           /* first: the transport's part */
    /* HTTP phase (router.c) */
    struct http_reader *http;   /* the request being read */
    uint32_t http_since_ms;     /* when the current request began (clock_ms32_since) */
    uint8_t deferred;           /* the request's answer comes later; reading waits */
    struct admission adm;       /* its address and the connection slots it holds */
    /* WebSocket session */
    uint8_t online;             /* its user or tenant was announced to the bus (BUS_ONLINE) */
    uint32_t pending;           /* commands waiting for the bus */
    uint32_t next_call;         /* seq of the next call */
    uint32_t next_reply;        /* seq of the call to answer next */
    uint32_t deferred_seq;      /* HTTP: the call whose reply answers the deferred request
                                   (here, beside its kind, to fill the padding) */
    struct call *parked;        /* replies that overtook an earlier one, by seq */
    struct call *flight, *flight_tail; /* calls on the bus, oldest first */
    char *user;                 /* NULL when anonymous */
    struct hub_conn hub;        /* this client's rooms, user and tenant slots */
    struct client_claims *claims; /* its token's (owned); NULL without one */
    struct bucket rate;         /* --rate-limit */
    uint32_t refused_since_ms;  /* when the refusals without a pause began (clock_ms32_since) */
    uint32_t last_refused_ms;
    struct sse_stream *sse;     /* a server-sent event stream's rooms and id
                                   (app/sse.c, owned); NULL on a WebSocket */
};

static inline struct client *client_of(struct conn *c) { return (struct client *)c; }

/* c's tenant, or NULL when it has none. */
static inline const char *client_tenant(const struct client *c) { return c->claims ? c->claims->tenant : NULL; }

/* The application state of c's worker. */
static inline struct app *client_app(const struct client *c) { return c->conn.loop->data; }

/* The handler of upgraded connections (the router switches to it). */
extern const struct conn_handler client_handler;

/* Starts the session of a client the router just upgraded (or sse.c made
 * a stream) as who says (auth_handshake): takes its user and its token's
 * claims (who's claims are left empty), sends the welcome event (a
 * WebSocket only: a stream begins with its joins) and announces the user,
 * if any, to the bus. */
void client_start(struct client *c, struct auth_result *who);

/* Joins room (a name) as a join command without a ref would, with since
 * when not NULL: what a stream's session runs at its start. */
void client_join(struct client *c, const char *room, const struct offset *since);

/* Frees what c owns and c itself; the conn's last reference is gone. */
void client_free(struct client *c);

#endif
