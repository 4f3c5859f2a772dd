/* sse.h - server-sent events (docs/protocol.md section 8), the text side:
 * one server event or reply as an SSE event ("event: <type>" and
 * "data: <json>") in a frame shared like a WebSocket frame (ws.h), the id
 * line a stream puts before an event, the keep-alive comment, and the id
 * itself: the last offset of each room of the stream,
 * "room=offset;room2=offset", so that Last-Event-ID resumes every room.
 * Pure: no sockets, no loop. Frames belong to one worker thread, as in
 * ws.h. */
#ifndef WSFAN_SSE_H
#define WSFAN_SSE_H

#include <stddef.h>

#include "codec/offset.h"
#include "codec/ws.h"
#include "core/names.h"

/* The SSE event of json, a server event or reply: a JSON object whose
 * first member is "type" (every event and reply the server builds), whose
 * value becomes the event line. A raw CR or LF (JSON whitespace only: a
 * string cannot hold one) becomes a space, so data is one line. Returns a
 * frame with one reference, or NULL when out of memory. */
struct frame *sse_frame_create(const char *json, size_t len);

/* "id: <id>\n", the line that goes right before an event's frame (id is
 * not NUL-terminated). Same return as above. */
struct frame *sse_id_frame_create(const char *id, size_t len);

/* The keep-alive comment ": ping\n\n". Same return as above. */
struct frame *sse_keepalive_create(void);

/* One room's place in a stream's id. */
struct sse_position {
    char room[NAME_MAX_LEN + 1];
    struct offset offset;
};

/* The most an id takes per room: the name, '=', the offset, ';'. */
#define SSE_ID_PER_ROOM (NAME_MAX_LEN + OFFSET_MAX_LEN + 2)

/* Writes the id of the n positions into out (at least n *
 * SSE_ID_PER_ROOM + 1 bytes, NUL-terminated); returns its length. */
size_t sse_id_format(const struct sse_position *pos, size_t n, char *out);

/* Parses id (NUL-terminated) into at most max positions. Returns how
 * many, or -1 when id is not an id of sse_id_format (an empty id has 0),
 * names a room twice, or has more than max rooms. */
int sse_id_parse(const char *id, struct sse_position *pos, size_t max);

#endif
