/* api.h - every plain HTTP request on the port of /ws: the server API of
 * docs/protocol.md section 7 (publish, history, presence, rooms, and the stats
 * of the dashboard), /metrics, /healthz, /readyz and the pages built into
 * the binary. One table routes them; --api-key guards the API and
 * /metrics; API errors are JSON {"error":..,"message":..}. Requests that
 * need the bus are answered when its reply comes back (router_defer).
 * Worker thread only. Does not handle the WebSocket upgrade (router.c). */
#ifndef WSFAN_API_H
#define WSFAN_API_H

struct client;
struct http_request;

/* Answers req, now or after a bus reply. req is borrowed; what a deferred
 * answer needs later stays in the connection's reader. */
void api_route(struct client *c, const struct http_request *req);

/* Answers a request the reader refused with status (400, 413, 431 or 500)
 * and closes: JSON for /api paths, plain text otherwise. */
void api_refuse(struct client *c, const struct http_request *req, int status);

/* The deferred request of c waited longer than --request-timeout for the
 * bus: answers it 503 unavailable now; its reply, when it comes, is only
 * freed. */
void api_expire(struct client *c);

#endif
