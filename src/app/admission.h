/* admission.h - who may connect, and to what (docs/protocol.md section 1a
 * "Origin" and "Limits", section 7 "API access"): the client address
 * (the peer's, or X-Forwarded-For's when the peer is a trusted proxy),
 * the --max-connections and --max-connections-per-ip slots a connection
 * holds from accept to close, the Origin of WebSocket handshakes, and the
 * loopback rule of the API without --api-key. Counts refusals in the
 * worker's metrics. Worker thread only; the per-address counts are the
 * process's (core/addr_count.h). Does not answer: the router and the API
 * do, with the status these return. */
#ifndef WSFAN_ADMISSION_H
#define WSFAN_ADMISSION_H

#include <stdint.h>
#include <sys/socket.h>

#include "core/netaddr.h"

struct client;
struct http_request;

/* What a client connection holds, embedded in struct client. */
struct admission {
    struct net_addr addr;      /* the TCP peer until the upgrade, then the client's
                                  address (forwarded behind a trusted proxy): its
                                  per-IP slot is for it */
    uint8_t admin : 1;         /* accepted on --admin-listen */
    uint8_t slot : 1;          /* holds a --max-connections slot */
    uint8_t ip_slot : 1;       /* holds a --max-connections-per-ip slot for addr */
};

/* A connection just accepted from peer, on the admin port or not. Takes
 * its slots: on the public port one of --max-connections, and, unless the
 * peer is a trusted proxy (whose clients are counted when they upgrade),
 * one of --max-connections-per-ip for the peer. Returns 0, or the status
 * to refuse it with before reading anything: 503 (server full) or 429. */
int admission_accept(struct client *c, const struct sockaddr *peer, int admin);

/* The Origin check of a WebSocket handshake: 0, or 403 when the request
 * carries an Origin that is neither the server's own nor allowed by
 * --allowed-origins. */
int admission_origin(struct client *c, const struct http_request *req);

/* The slots an upgrade still needs: through a trusted proxy, the per-IP
 * slot of the forwarded client address (429); on the admin port, a
 * --max-connections slot (503). Returns 0 or that status. */
int admission_upgrade(struct client *c, const struct http_request *req);

/* The client address of req: the peer's, or the one a trusted proxy put
 * in X-Forwarded-For. After the upgrade it is the address found then (the
 * walk of X-Forwarded-For from a client address comes back to it). */
void admission_client_addr(const struct client *c, const struct http_request *req, struct net_addr *out);

/* True when req comes from the loopback (the client address, forwarded
 * or not) and names a loopback Host: what the API asks of a client
 * without --api-key. */
int admission_local(const struct client *c, const struct http_request *req);

/* Gives back every slot c holds; safe to call more than once. */
void admission_release(struct client *c);

/* The body line of a refusal with status (one of the above). */
const char *admission_reason(int status);

#endif
