/* http.h - HTTP/1.1 requests: an incremental reader built on the http-parser
 * library (head size limit, body size limit, keep-alive and pipelining), the
 * WebSocket upgrade checks of docs/protocol.md section 1, query-string lookup and
 * response formatting.
 * Pure functions over caller-owned state: no sockets, no event loop. One
 * reader belongs to one connection on one worker thread. */
#ifndef WSFAN_HTTP_H
#define WSFAN_HTTP_H

#include <stddef.h>
#include <stdint.h>

struct frame;

enum http_method_kind { HTTP_GET, HTTP_HEAD, HTTP_POST, HTTP_OTHER };

/* One parsed request. Strings are NUL-terminated and owned by the reader;
 * they stay valid until the reader is reset or destroyed. A header that was
 * absent is NULL. Repeated headers are joined with ", " as RFC 9110 allows. */
struct http_request {
    enum http_method_kind method;
    const char *method_name;     /* "GET", "PUT", ... */
    const char *path;            /* URL path, undecoded, without the query */
    const char *query;           /* after '?', or NULL */
    const char *host;
    const char *upgrade;
    const char *connection;
    const char *ws_key;          /* Sec-WebSocket-Key */
    const char *ws_version;      /* Sec-WebSocket-Version */
    const char *ws_protocol;     /* Sec-WebSocket-Protocol */
    const char *ws_extensions;   /* Sec-WebSocket-Extensions */
    const char *origin;
    const char *authorization;
    const char *content_type;
    const char *forwarded_for;   /* X-Forwarded-For */
    const char *last_event_id;   /* Last-Event-ID (an EventSource reconnecting) */
    const char *body;            /* NUL-terminated, body_len bytes, or NULL */
    size_t body_len;
    int keep_alive;              /* the connection may carry another request */
    int http_1_1;                /* HTTP/1.1 or later (an upgrade needs it) */
    int is_upgrade;              /* the parser saw an Upgrade request */
};

struct http_reader;

/* Result of http_reader_feed. */
enum {
    HTTP_READ_DONE = 1,            /* a whole request (head and body) is ready */
    HTTP_READ_NEED_MORE = 0,       /* all bytes consumed, request incomplete */
    HTTP_READ_BAD = -400,          /* malformed request */
    HTTP_READ_HEAD_TOO_LARGE = -431,
    HTTP_READ_BODY_TOO_LARGE = -413,
    HTTP_READ_NO_MEMORY = -500,    /* out of memory while buffering */
};

/* Creates a reader that refuses heads over max_head bytes and bodies over
 * max_body bytes. Returns NULL when out of memory. */
struct http_reader *http_reader_create(size_t max_head, size_t max_body);
void http_reader_destroy(struct http_reader *r);

/* Feeds bytes; stops at the end of one request so that pipelined requests
 * are handled one at a time, in order. *consumed is set in every case; bytes
 * past it belong to the next request (or, after an upgrade, to the
 * WebSocket stream). Returns HTTP_READ_DONE, HTTP_READ_NEED_MORE or a
 * negative HTTP_READ_* whose absolute value is the status to answer with.
 * The limits are checked before anything is buffered past them. */
int http_reader_feed(struct http_reader *r, const char *buf, size_t len, size_t *consumed);

/* The request after HTTP_READ_DONE. Borrowed from the reader. */
const struct http_request *http_reader_request(const struct http_reader *r);

/* Forgets the current request so that the next one can be read. */
void http_reader_reset(struct http_reader *r);

/* Checks a request for a WebSocket upgrade (RFC 6455 section 4.2.1).
 * Returns 0 when it is one, or the status to refuse it with: 400 for a
 * missing or bad Upgrade/Connection/Sec-WebSocket-Key or a method other than
 * GET, 426 for a Sec-WebSocket-Version other than 13. *reason gets a static
 * one-line explanation. */
int http_ws_check(const struct http_request *req, const char **reason);

/* The credentials of an Authorization header of the Bearer scheme (any
 * case), or NULL when there is no such header. Borrowed from req. */
const char *http_bearer(const struct http_request *req);

/* True when the Sec-WebSocket-Protocol header offers the token proto. */
int http_header_has_token(const char *header, const char *token);

/* Finds name in a query string and writes its percent-decoded value to out
 * (NUL-terminated). Returns the value's length, -1 when absent, -2 when the
 * value does not fit in cap-1 bytes or is badly encoded. */
int http_query_get(const char *query, const char *name, char *out, size_t cap);

/* The same for repeated parameters (?room=a&room=b): looks from *pos (a
 * query, or NULL for none left) and moves *pos past the parameter it
 * returns, so that the next call finds the next one. */
int http_query_next(const char **pos, const char *name, char *out, size_t cap);

/* Builds a complete response as a frame (refs 1) ready to enqueue:
 * status line, Content-Type (when body is not NULL), Content-Length,
 * Connection: keep-alive/close, the extra header lines (each ending in
 * "\r\n", may be NULL), then the body. Returns NULL when out of memory. */
struct frame *http_response_create(int status, const char *content_type,
                                   const char *extra_headers, const char *body,
                                   size_t body_len, int keep_alive);

/* The head of a 200 response whose body is streamed until the connection
 * closes (server-sent events): Content-Type, no Content-Length,
 * Connection: close, then the extra header lines. A frame (refs 1), or
 * NULL when out of memory. */
struct frame *http_stream_head_create(const char *content_type, const char *extra_headers);

/* The reason phrase of a status ("Not Found"). */
const char *http_status_text(int status);

#endif
