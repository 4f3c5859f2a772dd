/* sse.c - GET /sse: the checks of the request, the stream's head, its
 * session's start, and its id. Refusals are text lines like a WebSocket
 * handshake's; a room the client may not join refuses the whole request
 * (403), as its join would be refused. See sse.h. */
#include "app/sse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "app/auth.h"
#include "app/client.h"
#include "app/router.h"
#include "codec/http.h"
#include "codec/sse.h"
#include "core/error.h"

struct sse_stream {
    uint32_t n;       /* rooms */
    uint32_t known;   /* the first `known` rooms have a position: joins are
                         answered in the order they were asked */
    char *id;         /* room for the id of every room */
    struct sse_position pos[];
};

void sse_free(struct sse_stream *s)
{
    free(s); /* id is in the same block */
}

void sse_mark(struct client *c, const char *room, struct offset at)
{
    struct sse_stream *s = c->sse;
    if (!s)
        return;
    const char *name = name_of_key(room);
    uint32_t i = 0;
    while (i < s->n && strcmp(s->pos[i].room, name))
        i++;
    if (i == s->n)
        return;
    s->pos[i].offset = at;
    if (i >= s->known)
        s->known = i + 1;
    size_t len = sse_id_format(s->pos, s->known, s->id);
    struct frame *f = sse_id_frame_create(s->id, len);
    if (!f) {
        conn_close(&c->conn, WS_CLOSE_INTERNAL, "out of memory");
        return;
    }
    conn_enqueue(&c->conn, f);
    frame_unref(f);
}

/* ---- the request ------------------------------------------------------------ */

static void refuse(struct client *c, int status, const char *line)
{
    router_respond_text(c, status, NULL, line, 0);
}

/* The stream of req's ?room= parameters, each room once, all of them
 * rooms who may join (auth_check, as a join command). NULL when refused
 * (answered). */
static struct sse_stream *stream_create(struct client *c, const struct http_request *req,
                                        const struct auth_result *who)
{
    const struct config *cfg = client_app(c)->cfg;
    char room[NAME_MAX_LEN + 1], line[256];
    uint32_t n = 0;
    for (const char *p = req->query; http_query_next(&p, "room", room, sizeof room) != -1;)
        n++;
    if (n > (uint32_t)cfg->max_rooms) {
        snprintf(line, sizeof line, "a stream may join at most %d rooms (--max-rooms)", cfg->max_rooms);
        refuse(c, 400, line);
        return NULL;
    }
    struct sse_stream *s = calloc(1, sizeof *s + n * (sizeof s->pos[0] + SSE_ID_PER_ROOM) + 1);
    if (!s) {
        refuse(c, 503, "server out of memory");
        return NULL;
    }
    s->id = (char *)&s->pos[n];
    int len;
    for (const char *p = req->query; (len = http_query_next(&p, "room", room, sizeof room)) != -1;) {
        const char *why;
        if (len < 0 || !name_valid(room, (size_t)len)) {
            refuse(c, 400, wsfan_strerror(WSFAN_EROOM_INVALID));
            goto fail;
        }
        if (auth_check(cfg, who->has_token ? &who->claims.rights : NULL, AUTH_JOIN, room, 1, &why)) {
            snprintf(line, sizeof line, "room %s: %s", room, why);
            refuse(c, 403, line);
            goto fail;
        }
        uint32_t i = 0;
        while (i < s->n && strcmp(s->pos[i].room, room))
            i++;
        if (i == s->n)
            strcpy(s->pos[s->n++].room, room);
    }
    return s;
fail:
    free(s);
    return NULL;
}

/* Where the rooms resume, into from (max entries): Last-Event-ID (an
 * EventSource reconnecting) first, else ?since=. Returns how many, or -1
 * when refused (answered). */
static int resume_points(struct client *c, const struct http_request *req, struct sse_position *from, size_t max)
{
    const char *id = req->last_event_id;
    char *since = NULL;
    int n = 0;
    if (!id && req->query) {
        /* Decoded, it is no longer than the query. */
        size_t cap = strlen(req->query) + 1;
        if (!(since = malloc(cap))) {
            refuse(c, 503, "server out of memory");
            return -1;
        }
        int r = http_query_get(req->query, "since", since, cap);
        if (r >= 0)
            id = since;
        else if (r == -2)
            n = -1; /* badly encoded */
    }
    if (id)
        n = sse_id_parse(id, from, max);
    free(since);
    if (n < 0)
        refuse(c, 400, "Last-Event-ID and since must be room=offset pairs separated by ;");
    return n;
}

/* The head, then the session: who's identity, and each room's join. */
static void stream_start(struct client *c, const struct http_request *req, struct auth_result *who,
                         struct sse_stream *s, const struct sse_position *from, int nfrom)
{
    /* A page of another allowed origin (router_admit checked it) may read
     * the stream: EventSource asks for CORS. An origin too long for the
     * buffer is no real one. */
    char headers[1024];
    int len = snprintf(headers, sizeof headers, "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
    if (req->origin)
        snprintf(headers + len, sizeof headers - (size_t)len,
                 "Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n", req->origin);
    struct frame *f = http_stream_head_create("text/event-stream", headers);
    if (!f) {
        sse_free(s);
        conn_drop(&c->conn);
        return;
    }
    conn_enqueue(&c->conn, f);
    frame_unref(f);
    http_reader_destroy(c->http); /* req with it */
    c->http = NULL;
    c->sse = s;
    conn_stream(&c->conn, &client_handler);
    client_start(c, who);
    for (uint32_t i = 0; i < s->n && conn_is_open(&c->conn); i++) {
        int j = 0;
        while (j < nfrom && strcmp(from[j].room, s->pos[i].room))
            j++;
        client_join(c, s->pos[i].room, j < nfrom ? &from[j].offset : NULL);
    }
}

void sse_open(struct client *c, const struct http_request *req)
{
    if (req->method != HTTP_GET) {
        router_respond_text(c, 405, "Allow: GET\r\n", "server-sent events need GET", 0);
        return;
    }
    const struct config *cfg = client_app(c)->cfg;
    struct auth_result who;
    struct sse_stream *s = NULL;
    struct sse_position *from = NULL;
    int nfrom;
    if (router_admit(c, req, &who) || !(s = stream_create(c, req, &who)))
        goto done;
    if (!(from = calloc((size_t)cfg->max_rooms, sizeof *from))) {
        refuse(c, 503, "server out of memory");
        goto done;
    }
    if ((nfrom = resume_points(c, req, from, (size_t)cfg->max_rooms)) < 0)
        goto done;
    stream_start(c, req, &who, s, from, nfrom);
    s = NULL;
done:
    sse_free(s);
    free(from);
    token_claims_free(&who.claims);
}
