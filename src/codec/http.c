/* http.c - HTTP/1.1 request reader on top of the http-parser library, the
 * WebSocket upgrade checks, query-string lookup and response formatting.
 * Owns the reader and the strings of the request it collects (url, the
 * headers wsfan looks at, the body); builds response frames it hands away.
 * Runs on the worker thread that owns the connection; no shared state.
 * Does not read or write sockets and does not decide what to answer. */
#include "codec/http.h"

/* http_parser.h calls its methods HTTP_GET, HTTP_HEAD and HTTP_POST, the
 * names http.h gives its method kinds: rename the library's while it is
 * included (its enumerators are pasted as HTTP_##name, then rescanned). */
#define HTTP_GET HPARSER_GET
#define HTTP_HEAD HPARSER_HEAD
#define HTTP_POST HPARSER_POST
#include <http_parser.h>
#undef HTTP_GET
#undef HTTP_HEAD
#undef HTTP_POST
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "codec/ws.h"
#include "core/list.h"

/* The headers the request exposes, in the order of hdr_names. */
enum {
    H_HOST,
    H_UPGRADE,
    H_CONNECTION,
    H_WS_KEY,
    H_WS_VERSION,
    H_WS_PROTOCOL,
    H_ORIGIN,
    H_AUTHORIZATION,
    H_CONTENT_TYPE,
    H_FORWARDED_FOR,
    H_LAST_EVENT_ID,
    H_WS_EXTENSIONS,
    H_COUNT,
    H_NONE = -1,
};

static const char *const hdr_names[H_COUNT] = {
    [H_HOST] = "host",
    [H_UPGRADE] = "upgrade",
    [H_CONNECTION] = "connection",
    [H_WS_KEY] = "sec-websocket-key",
    [H_WS_VERSION] = "sec-websocket-version",
    [H_WS_PROTOCOL] = "sec-websocket-protocol",
    [H_ORIGIN] = "origin",
    [H_AUTHORIZATION] = "authorization",
    [H_CONTENT_TYPE] = "content-type",
    [H_FORWARDED_FOR] = "x-forwarded-for",
    [H_LAST_EVENT_ID] = "last-event-id",
    [H_WS_EXTENSIONS] = "sec-websocket-extensions",
};

/* As long as the longest name in hdr_names (sec-websocket-extensions): a
 * longer name is none of them. */
#define NAME_MAX_LEN 24

/* A growable NUL-terminated string; p is NULL until something is stored. */
struct buf {
    char *p;
    size_t len, cap;
};

enum last_cb { CB_NONE, CB_FIELD, CB_VALUE };

struct http_reader {
    http_parser parser;
    size_t max_head, max_body;
    size_t head_seen;      /* bytes handed to the parser before the head ended */
    int head_done;         /* on_headers_complete has run */
    int done;              /* on_message_complete has run: parser is paused */
    int error;             /* HTTP_READ_* set by a callback that refused */
    enum last_cb last_cb;
    int cur;               /* H_* of the header whose value is arriving */
    size_t name_len;       /* > NAME_MAX_LEN once the name is too long */
    char name[NAME_MAX_LEN];
    struct buf url;
    struct buf hdr[H_COUNT];
    unsigned short hdr_seen;    /* bit i: header i appeared at least once */
    struct buf body;
    struct http_request req;
};

_Static_assert(H_COUNT <= 16, "hdr_seen holds one bit per header");

static int buf_reserve(struct buf *b, size_t extra)
{
    if (b->cap - b->len > extra)
        return 0;
    if (extra >= SIZE_MAX / 2 - b->len)
        return -1;
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->len <= extra)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

/* Appends n bytes and keeps the string NUL-terminated. */
static int buf_append(struct buf *b, const char *data, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return -1;
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static void buf_clear(struct buf *b)
{
    b->len = 0;
    if (b->p)
        b->p[0] = '\0';
}

static void buf_free(struct buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static int fail(struct http_reader *r, int error)
{
    r->error = error;
    return -1;
}

/* The header being collected has ended: drop its trailing whitespace, which
 * http-parser leaves in the value. */
static void header_value_end(struct http_reader *r)
{
    if (r->cur == H_NONE)
        return;
    struct buf *b = &r->hdr[r->cur];
    while (b->len && (b->p[b->len - 1] == ' ' || b->p[b->len - 1] == '\t'))
        b->len--;
    if (b->p)
        b->p[b->len] = '\0';
    r->cur = H_NONE;
}

/* The name is complete: find which header it is and, when that header was
 * seen before, join the new value to the old one with ", ". */
static int header_name_end(struct http_reader *r)
{
    r->cur = H_NONE;
    if (r->name_len > NAME_MAX_LEN)
        return 0;
    for (int i = 0; i < H_COUNT; i++) {
        if (strlen(hdr_names[i]) == r->name_len &&
            strncasecmp(hdr_names[i], r->name, r->name_len) == 0) {
            r->cur = i;
            break;
        }
    }
    if (r->cur == H_NONE)
        return 0;
    struct buf *b = &r->hdr[r->cur];
    if (r->hdr_seen & (1u << r->cur))
        return buf_append(b, ", ", 2) < 0 ? fail(r, HTTP_READ_NO_MEMORY) : 0;
    r->hdr_seen |= (unsigned short)(1u << r->cur);
    /* An empty value must read as "" rather than absent. */
    return buf_append(b, "", 0) < 0 ? fail(r, HTTP_READ_NO_MEMORY) : 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct http_reader *r = p->data;
    return buf_append(&r->url, at, len) < 0 ? fail(r, HTTP_READ_NO_MEMORY) : 0;
}

/* The header callbacks also report the trailer fields of a chunked body.
 * Those are ignored: the request's strings are fixed once the head ends. */
static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct http_reader *r = p->data;
    if (r->head_done)
        return 0;
    if (r->last_cb != CB_FIELD) {
        header_value_end(r);
        r->name_len = 0;
    }
    r->last_cb = CB_FIELD;
    if (r->name_len > NAME_MAX_LEN)
        return 0;
    if (len > NAME_MAX_LEN - r->name_len) {
        r->name_len = NAME_MAX_LEN + 1;
        return 0;
    }
    memcpy(r->name + r->name_len, at, len);
    r->name_len += len;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct http_reader *r = p->data;
    if (r->head_done)
        return 0;
    if (r->last_cb != CB_VALUE && header_name_end(r) < 0)
        return -1;
    r->last_cb = CB_VALUE;
    if (r->cur == H_NONE)
        return 0;
    return buf_append(&r->hdr[r->cur], at, len) < 0 ? fail(r, HTTP_READ_NO_MEMORY) : 0;
}

/* Splits the url into path and query in place. The reader only serves
 * origin-form targets ("/path?query"). */
static int split_url(struct http_reader *r)
{
    char *url = r->url.p;
    if (!url || url[0] != '/')
        return -1;
    char *hash = strchr(url, '#');
    if (hash)
        *hash = '\0';
    char *q = strchr(url, '?');
    r->req.path = url;
    r->req.query = NULL;
    if (q) {
        *q = '\0';
        r->req.query = q + 1;
    }
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct http_reader *r = p->data;
    if (r->last_cb == CB_FIELD && header_name_end(r) < 0)
        return -1;
    header_value_end(r);
    r->last_cb = CB_NONE;
    r->head_done = 1;

    if (split_url(r) < 0)
        return fail(r, HTTP_READ_BAD);
    if (!(p->flags & F_CHUNKED) && p->content_length != ULLONG_MAX &&
        p->content_length > r->max_body)
        return fail(r, HTTP_READ_BODY_TOO_LARGE);

    struct http_request *req = &r->req;
    switch (p->method) {
    case HPARSER_GET: req->method = HTTP_GET; break;
    case HPARSER_HEAD: req->method = HTTP_HEAD; break;
    case HPARSER_POST: req->method = HTTP_POST; break;
    default: req->method = HTTP_OTHER; break;
    }
    req->method_name = http_method_str((enum http_method)p->method);
    const char **fields[H_COUNT] = {
        [H_HOST] = &req->host,
        [H_UPGRADE] = &req->upgrade,
        [H_CONNECTION] = &req->connection,
        [H_WS_KEY] = &req->ws_key,
        [H_WS_VERSION] = &req->ws_version,
        [H_WS_PROTOCOL] = &req->ws_protocol,
        [H_ORIGIN] = &req->origin,
        [H_AUTHORIZATION] = &req->authorization,
        [H_CONTENT_TYPE] = &req->content_type,
        [H_FORWARDED_FOR] = &req->forwarded_for,
        [H_LAST_EVENT_ID] = &req->last_event_id,
        [H_WS_EXTENSIONS] = &req->ws_extensions,
    };
    for (int i = 0; i < H_COUNT; i++)
        *fields[i] = (r->hdr_seen & (1u << i)) ? r->hdr[i].p : NULL;
    req->keep_alive = http_should_keep_alive(p);
    req->http_1_1 = p->http_major > 1 || (p->http_major == 1 && p->http_minor >= 1);
    req->is_upgrade = p->upgrade;
    return 0;
}

/* The size of each chunk is known before its data: refuse it up front. */
static int on_chunk_header(http_parser *p)
{
    struct http_reader *r = p->data;
    if (p->content_length > r->max_body - r->body.len)
        return fail(r, HTTP_READ_BODY_TOO_LARGE);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct http_reader *r = p->data;
    if (len > r->max_body - r->body.len)
        return fail(r, HTTP_READ_BODY_TOO_LARGE);
    return buf_append(&r->body, at, len) < 0 ? fail(r, HTTP_READ_NO_MEMORY) : 0;
}

static int on_message_complete(http_parser *p)
{
    struct http_reader *r = p->data;
    r->done = 1;
    r->req.body = r->body.len ? r->body.p : NULL;
    r->req.body_len = r->body.len;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
    .on_chunk_header = on_chunk_header,
};

struct http_reader *http_reader_create(size_t max_head, size_t max_body)
{
    struct http_reader *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->max_head = max_head;
    r->max_body = max_body;
    http_reader_reset(r);
    return r;
}

void http_reader_destroy(struct http_reader *r)
{
    if (!r)
        return;
    buf_free(&r->url);
    for (int i = 0; i < H_COUNT; i++)
        buf_free(&r->hdr[i]);
    buf_free(&r->body);
    free(r);
}

/* Above this, a body buffer is freed on reset so that an idle keep-alive
 * connection does not hold on to it. */
#define BODY_KEEP_CAP 4096

/* Keeps the small buffers allocated for the next request on the connection. */
void http_reader_reset(struct http_reader *r)
{
    http_parser_init(&r->parser, HTTP_REQUEST);
    r->parser.data = r;
    r->head_seen = 0;
    r->head_done = 0;
    r->done = 0;
    r->error = 0;
    r->last_cb = CB_NONE;
    r->cur = H_NONE;
    r->name_len = 0;
    buf_clear(&r->url);
    for (int i = 0; i < H_COUNT; i++)
        buf_clear(&r->hdr[i]);
    r->hdr_seen = 0;
    if (r->body.cap > BODY_KEEP_CAP)
        buf_free(&r->body);
    buf_clear(&r->body);
    memset(&r->req, 0, sizeof(r->req));
}

static int parser_error(struct http_reader *r)
{
    if (r->error)
        return r->error;
    if (HTTP_PARSER_ERRNO(&r->parser) == HPE_HEADER_OVERFLOW)
        return HTTP_READ_HEAD_TOO_LARGE;
    return HTTP_READ_BAD;
}

int http_reader_feed(struct http_reader *r, const char *buf, size_t len, size_t *consumed)
{
    size_t off = 0;

    *consumed = 0;
    if (r->error)
        return r->error;
    while (off < len && !r->done) {
        size_t n = len - off;
        if (!r->head_done) {
            /* Hand the parser no more head than the limit allows, so that
             * nothing past it is ever buffered. */
            if (r->head_seen >= r->max_head) {
                r->error = HTTP_READ_HEAD_TOO_LARGE;
                break;
            }
            if (n > r->max_head - r->head_seen)
                n = r->max_head - r->head_seen;
        }
        size_t used = http_parser_execute(&r->parser, &settings, buf + off, n);
        enum http_errno err = HTTP_PARSER_ERRNO(&r->parser);
        if (err != HPE_OK && err != HPE_PAUSED) {
            r->error = parser_error(r);
            off += used;
            break;
        }
        if (!r->head_done)
            r->head_seen += used;
        off += used;
        if (used < n && !r->done) {
            /* http-parser stops early only at the end of a message. */
            r->error = HTTP_READ_BAD;
            break;
        }
    }
    *consumed = off;
    if (r->error)
        return r->error;
    return r->done ? HTTP_READ_DONE : HTTP_READ_NEED_MORE;
}

const struct http_request *http_reader_request(const struct http_reader *r)
{
    return &r->req;
}

int http_ws_check(const struct http_request *req, const char **reason)
{
    if (!req->http_1_1) {
        *reason = "WebSocket upgrade requires HTTP/1.1";
        return 400;
    }
    if (req->method != HTTP_GET) {
        *reason = "WebSocket upgrade requires GET";
        return 400;
    }
    if (!http_header_has_token(req->upgrade, "websocket")) {
        *reason = "missing or invalid Upgrade header (expected websocket)";
        return 400;
    }
    if (!http_header_has_token(req->connection, "upgrade")) {
        *reason = "Connection header must include Upgrade";
        return 400;
    }
    if (!req->ws_version) {
        *reason = "missing Sec-WebSocket-Version";
        return 400;
    }
    if (strcmp(req->ws_version, "13") != 0) {
        *reason = "unsupported Sec-WebSocket-Version (only 13 is supported)";
        return 426;
    }
    if (!req->ws_key || !ws_key_valid(req->ws_key, strlen(req->ws_key))) {
        *reason = "missing or invalid Sec-WebSocket-Key";
        return 400;
    }
    *reason = "ok";
    return 0;
}

const char *http_bearer(const struct http_request *req)
{
    static const char scheme[] = "Bearer ";
    const char *h = req->authorization;
    return h && !strncasecmp(h, scheme, sizeof scheme - 1) ? h + sizeof scheme - 1 : NULL;
}

int http_header_has_token(const char *header, const char *token)
{
    if (!header)
        return 0;
    size_t token_len = strlen(token);
    for (const char *p = header; p;) {
        const char *item;
        size_t len;
        p = list_next(p, &item, &len);
        if (len == token_len && strncasecmp(item, token, token_len) == 0)
            return 1;
    }
    return 0;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes value[0..len) into out. A decoded NUL is refused: callers use the
 * result as a C string. */
static int query_decode(const char *value, size_t len, char *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char c = value[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (len - i < 3)
                return -2;
            int hi = hex_value(value[i + 1]), lo = hex_value(value[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return -2;
            c = (char)(hi << 4 | lo);
            i += 2;
        }
        if (n + 1 >= cap || n >= INT_MAX)
            return -2;
        out[n++] = c;
    }
    if (cap == 0)
        return -2;
    out[n] = '\0';
    return (int)n;
}

int http_query_next(const char **pos, const char *name, char *out, size_t cap)
{
    const char *p = *pos;
    if (!p)
        return -1;
    size_t name_len = strlen(name);
    for (;;) {
        const char *end = strchr(p, '&');
        if (!end)
            end = p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        const char *key_end = eq ? eq : end;
        *pos = *end ? end + 1 : NULL;
        if ((size_t)(key_end - p) == name_len && memcmp(p, name, name_len) == 0) {
            const char *value = eq ? eq + 1 : end;
            return query_decode(value, (size_t)(end - value), out, cap);
        }
        if (!*pos)
            return -1;
        p = *pos;
    }
}

int http_query_get(const char *query, const char *name, char *out, size_t cap)
{
    return http_query_next(&query, name, out, cap);
}

/* Writes the status line and headers, blank line included, like snprintf. */
static int format_head(char *out, size_t cap, int status, const char *content_type,
                       const char *length_line, const char *conn_line, const char *extra)
{
    return snprintf(out, cap, "HTTP/1.1 %d %s\r\n%s%s%s%s%s%s\r\n", status,
                    http_status_text(status), content_type ? "Content-Type: " : "",
                    content_type ? content_type : "", content_type ? "\r\n" : "",
                    length_line, conn_line, extra ? extra : "");
}

/* A frame of the head (format_head's parts) and body_len bytes of body. */
static struct frame *response_frame(int status, const char *content_type, const char *length_line,
                                    const char *conn_line, const char *extra_headers, const char *body,
                                    size_t body_len)
{
    int n = format_head(NULL, 0, status, content_type, length_line, conn_line, extra_headers);
    if (n < 0 || body_len > UINT32_MAX - (size_t)n)
        return NULL;
    /* One spare byte for the NUL snprintf writes; the body overwrites it. */
    struct frame *f = malloc(sizeof(*f) + (size_t)n + 1 + body_len);
    if (!f)
        return NULL;
    format_head((char *)f->bytes, (size_t)n + 1, status, content_type, length_line, conn_line, extra_headers);
    if (body_len)
        memcpy(f->bytes + n, body, body_len);
    f->refs = 1;
    f->len = (uint32_t)((size_t)n + body_len);
    return f;
}

struct frame *http_response_create(int status, const char *content_type,
                                   const char *extra_headers, const char *body,
                                   size_t body_len, int keep_alive)
{
    /* 1xx and 204 responses carry no Content-Length (RFC 9110 8.6), and a
     * 101 hands the connection over, so it gets no Connection: keep-alive
     * or close either: the caller's extra headers say Upgrade. */
    int informational = status >= 100 && status < 200;
    int has_ct = body && content_type;
    char length_line[48] = "";
    const char *conn_line = "";

    if (!body)
        body_len = 0;
    if (!informational && status != 204)
        snprintf(length_line, sizeof(length_line), "Content-Length: %zu\r\n", body_len);
    if (!informational)
        conn_line = keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
    return response_frame(status, has_ct ? content_type : NULL, length_line, conn_line, extra_headers, body,
                          body_len);
}

struct frame *http_stream_head_create(const char *content_type, const char *extra_headers)
{
    /* No length: the body ends with the connection (RFC 9112 6.3). */
    return response_frame(200, content_type, "", "Connection: close\r\n", extra_headers, NULL, 0);
}

const char *http_status_text(int status)
{
    switch (status) {
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}
