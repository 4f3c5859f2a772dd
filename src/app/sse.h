/* sse.h - server-sent event streams (docs/protocol.md section 8): GET /sse
 * admitted as a WebSocket handshake is (router_admit), its rooms checked
 * as join commands would be, then a client session (client.c) on a
 * streaming connection (net/conn.h CONN_STREAM) whose joins are run at the
 * start, with since from Last-Event-ID or ?since=. The stream's id (the
 * last offset of each of its rooms, codec/sse.h) follows what it is sent.
 * Worker thread only. */
#ifndef WSFAN_APP_SSE_H
#define WSFAN_APP_SSE_H

#include "codec/offset.h"

struct client;
struct http_request;
struct sse_stream;

/* Answers GET /sse on c: a refusal (one text line, then the close), or
 * the stream's head, and the session starts. */
void sse_open(struct client *c, const struct http_request *req);

/* On a stream (c->sse; nothing otherwise): c's position in room (a key)
 * is now at, and the id line that says so is queued, for the event the
 * caller queues right after it. */
void sse_mark(struct client *c, const char *room, struct offset at);

void sse_free(struct sse_stream *s);

#endif
