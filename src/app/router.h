/* router.h - every connection's HTTP phase: accepts it as a client, reads
 * request heads (codec/http.c), upgrades /ws to a WebSocket session
 * (client.c), opens /sse streams (sse.c) and hands every other request to the API and pages (api.c).
 * Answers pipelined requests in order: a request whose answer waits for
 * the bus is deferred, and nothing after it is read until it is answered.
 * Worker thread only. */
#ifndef WSFAN_ROUTER_H
#define WSFAN_ROUTER_H

#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

struct app;
struct auth_result;
struct client;
struct http_request;

/* Takes a connection the worker's listener accepted: fd is its socket
 * (owned from now on), peer its address (borrowed), admin whether it came
 * in on --admin-listen. A connection over --max-connections or
 * --max-connections-per-ip is answered 503 or 429 at once and closed. */
void router_accept(struct app *app, int fd, const struct sockaddr *peer, int admin);

/* Answers the request being handled with status, the extra header lines
 * (each ending in "\r\n", may be NULL) and body (copied; left out for
 * HEAD, Content-Length kept), then closes unless keep_alive. When the
 * answer was deferred, the next pipelined request is read now. */
void router_respond(struct client *c, int status, const char *content_type, const char *extra_headers,
                    const char *body, size_t len, int keep_alive);

/* The same with text and a newline as a text/plain body. */
void router_respond_text(struct client *c, int status, const char *extra_headers, const char *text, int keep_alive);

/* The checks a session's handshake passes after its own (docs/protocol.md
 * sections 1 and 1a), in this order: the Origin, who the client is, the
 * shutdown, the connection slots. Returns 0 when req is admitted, or -1
 * when it was answered (refused). who is filled in either way: the caller
 * frees its claims (token_claims_free). */
int router_admit(struct client *c, const struct http_request *req, struct auth_result *who);

/* The answer to the request being handled comes later (from the bus). The
 * request stays readable and no later request is read until
 * router_respond() answers it. */
void router_defer(struct client *c);

#endif
