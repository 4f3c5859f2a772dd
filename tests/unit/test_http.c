/* test_http.c - unit tests for http.c: the request reader (limits, pieces,
 * pipelining, upgrade), the WebSocket upgrade checks, token and query
 * helpers and response formatting. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/http.h"
#include "codec/ws.h"

#define MAX_HEAD 1024
#define MAX_BODY 256

static const char upgrade_req[] =
    "GET /ws?user=bob&x=1 HTTP/1.1\r\n"
    "Host: example.com\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Protocol: wsfan.v1\r\n"
    "Origin: http://example.com\r\n"
    "Authorization: Bearer abc\r\n"
    "X-Forwarded-For: 203.0.113.7, 10.0.0.2\r\n"
    "\r\n";

/* Feeds all of data at once; returns the result and sets *consumed. */
static int feed_all(struct http_reader *r, const char *data, size_t len, size_t *consumed)
{
    return http_reader_feed(r, data, len, consumed);
}

/* Feeds data one byte at a time until the reader stops needing more.
 * Returns the last result; *consumed is the total consumed. */
static int feed_bytes(struct http_reader *r, const char *data, size_t len, size_t *consumed)
{
    int rc = HTTP_READ_NEED_MORE;
    *consumed = 0;
    for (size_t i = 0; i < len; i++) {
        size_t used;
        rc = http_reader_feed(r, data + i, 1, &used);
        *consumed += used;
        if (rc != HTTP_READ_NEED_MORE)
            break;
        assert_int_equal(used, 1);
    }
    return rc;
}

static void assert_upgrade_fields(const struct http_request *req)
{
    assert_int_equal(req->method, HTTP_GET);
    assert_string_equal(req->method_name, "GET");
    assert_string_equal(req->path, "/ws");
    assert_string_equal(req->query, "user=bob&x=1");
    assert_string_equal(req->host, "example.com");
    assert_string_equal(req->upgrade, "websocket");
    assert_string_equal(req->connection, "Upgrade");
    assert_string_equal(req->ws_key, "dGhlIHNhbXBsZSBub25jZQ==");
    assert_string_equal(req->ws_version, "13");
    assert_string_equal(req->ws_protocol, "wsfan.v1");
    assert_string_equal(req->origin, "http://example.com");
    assert_string_equal(req->authorization, "Bearer abc");
    assert_string_equal(req->forwarded_for, "203.0.113.7, 10.0.0.2");
    assert_null(req->content_type);
    assert_null(req->body);
    assert_int_equal(req->body_len, 0);
    assert_true(req->is_upgrade);
    assert_true(req->keep_alive);
}

static void test_http_reads_upgrade_request_at_once(void **state)
{
    (void)state;
    struct http_reader *r = http_reader_create(MAX_HEAD, MAX_BODY);
    size_t used;
    assert_non_null(r);
    assert_int_equal(feed_all(r, upgrade_req, strlen(upgrade_req), &used), HTTP_READ_DONE);
    assert_int_equal(used, strlen(upgrade_req));
    assert_upgrade_fields(http_reader_request(r));
    const char *reason = NULL;
    assert_int_equal(http_ws_check(http_reader_request(r), &reason), 0);
    http_reader_destroy(r);
}

static void test_http_reads_upgrade_request_byte_by_byte(void **state)
{
    (void)state;
    struct http_reader *r = http_reader_create(MAX_HEAD, MAX_BODY);
    size_t used;
    assert_int_equal(feed_bytes(r, upgrade_req, strlen(upgrade_req), &used), HTTP_READ_DONE);
    assert_int_equal(used, strlen(upgrade_req));
    assert_upgrade_fields(http_reader_request(r));
    http_reader_destroy(r);
}

static void test_http_upgrade_stops_at_end_of_head(void **state)
{
    (void)state;
    /* A masked text frame the client sent right behind its handshake. */
    static const char frame[] = "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
    char buf[sizeof(upgrade_req) + sizeof(frame)];
    size_t head = strlen(upgrade_req), used;
    memcpy(buf, upgrade_req, head);
    memcpy(buf + head, frame, sizeof(frame) - 1);

    struct http_reader *r = http_reader_create(MAX_HEAD, MAX_BODY);
    assert_int_equal(feed_all(r, buf, head + sizeof(frame) - 1, &used), HTTP_READ_DONE);
    assert_int_equal(used, head);
    assert_true(http_reader_request(r)->is_upgrade);
    /* Feeding again without a reset reads nothing more. */
    assert_int_equal(http_reader_feed(r, buf + used, sizeof(frame) - 1, &used), HTTP_READ_DONE);
    assert_int_equal(used, 0);
    http_reader_destroy(r);
}

static void test_http_head_over_limit_is_431(void **state)
{
    (void)state;
    char req[4096];
    int n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\n");
    while (n < 2000)
        n += snprintf(req + n, sizeof(req) - (size_t)n, "X-Filler: 0123456789\r\n");
    n += snprintf(req + n, sizeof(req) - (size_t)n, "\r\n");

    struct http_reader *r = http_reader_create(MAX_HEAD, MAX_BODY);
    size_t used;
    assert_int_equal(feed_all(r, req, (size_t)n, &used), HTTP_READ_HEAD_TOO_LARGE);
    assert_true(used <= MAX_HEAD);
    /* The reader stays refused. */
    assert_int_equal(feed_all(r, "\r\n", 2, &used), HTTP_READ_HEAD_TOO_LARGE);
    http_reader_destroy(r);

    r = http_reader_create(MAX_HEAD, MAX_BODY);
    assert_int_equal(feed_bytes(r, req, (size_t)n, &used), HTTP_READ_HEAD_TOO_LARGE);
    assert_int_equal(used, MAX_HEAD);
    http_reader_destroy(r);
}

static void test_http_one_huge_header_line_is_431(void **state)
{
    (void)state;
    size_t len = 64 * 1024;
    char *req = malloc(len);
    assert_non_null(req);
    memcpy(req, "GET / HTTP/1.1\r\nCookie: ", 24);
    memset(req + 24, 'a', len - 24);

    struct http_reader *r = http_reader_create(MAX_HEAD, MAX_BODY);
    size_t used;
    assert_int_equal(feed_all(r, req, len, &used), HTTP_READ_HEAD_TOO_LARGE);
    assert_int_equal(used, MAX_HEAD);
    http_reader_destroy(r);

    r = http_reader_create(MAX_HEAD, MAX_BODY);
    assert_int_equal(feed_bytes(r, req, len, &used), HTTP_READ_HEAD_TOO_LARGE);
    assert_int_equal(used, MAX_HEAD);
    http_reader_destroy(r);

    /* A head of exactly the limit is accepted. */
    char exact[MAX_HEAD];
    memcpy(exact, "GET / HTTP/1.1\r\nCookie: ", 24);
    memset(exact + 24, 'b', MAX_HEAD - 24 - 4);
    memcpy(exact + MAX_HEAD - 4, "\r\n\r\n", 4);
    r = http_reader_create(MAX_HEAD, MAX_BODY);
    assert_int_equal(feed_all(r, exact, sizeof(exact), &used), HTTP_READ_DONE);
    assert_int_equal(used, MAX_HEAD);
    http_reader_destroy(r);
    free(req);
}

static void test_http_long_url_is_431(void **state)
{
    (void)state;
    char req[2048];
    memcpy(req, "GET /", 5);
    memset(req + 5, 'u', sizeof(req) - 5);
    struct http_reader *r = http_reader_create(MAX_HEAD, MAX_BODY);
    size_t used;
    assert_int_equal(feed_all(r, req, sizeof(req), &used), HTTP_READ_HEAD_TOO_LARGE);
    http_reader_destroy(r);
}

static void test_http_head_past_parser_limit_is_431(void **state)
{
    (void)state;
    /* With a head limit above http-parser's own (80 KiB), its overflow
     * error is the one that refuses the request. */
    size_t len = 200 * 1024;
    char *req = malloc(len);
    assert_non_null(req);
    memcpy(req, "GET / HTTP/1.1\r\nCookie: ", 24);
    memset(req + 24, 'a', len - 24);
    struct http_reader *r = http_reader_create(1024 * 1024, MAX_BODY);
    size_t used;
    assert_int_equal(feed_all(r, req, len, &used), HTTP_READ_HEAD_TOO_LARGE);
    assert_true(used < len);
    http_reader_destroy(r);
    free(req);
}

static void test_http_garbage_is_400(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",   /* a TLS hello */
        "HELLO\r\n\r\n",
        "GET / HTTP/1.1\r\nHost example.com\r\n\r\n",     /* no colon */
        "GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "GET ws HTTP/1.1\r\n\r\n",                        /* not origin-form */
        "GET http://example.com/ws HTTP/1.1\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct http_reader *r = http_reader_create(MAX_HEAD, MAX_BODY);
        size_t used;
        assert_int_equal(feed_all(r, bad[i], strlen(bad[i]), &used), HTTP_READ_BAD);
        assert_true(used <= strlen(bad[i]));
        http_reader_destroy(r);

        r = http_reader_create(MAX_HEAD, MAX_BODY);
        assert_int_equal(feed_bytes(r, bad[i], strlen(bad[i]), &used), HTTP_READ_BAD);
        http_reader_destroy(r);
    }
}

static void test_http_pipelined_gets_are_read_one_at_a_time(void **state)
{
    (void)state;
    static const char *const reqs[] = {
        "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /readyz?x=1 HTTP/1.1\r\nHost: b\r\n\r\n",
        "HEAD /metrics HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n",
    };
    static const char *const paths[] = {"/healthz", "/readyz", "/metrics"};
    static const char *const hosts[] = {"a", "b", "c"};
    char all[256] = "";
    for (int i = 0; i < 3; i++)
        strcat(all, reqs[i]);

    struct http_reader *r = http_reader_create(MAX_HEAD, MAX_BODY);
    const char *p = all;
    size_t left = strlen(all);
    for (int i = 0; i < 3; i++) {
        size_t used;
        assert_int_equal(http_reader_feed(r, p, left, &used), HTTP_READ_DONE);
        assert_int_equal(used, strlen(reqs[i]));
        const struct http_request *req = http_reader_request(r);
        assert_string_equal(req->path, paths[i]);
        assert_string_equal(req->host, hosts[i]);
        assert_false(req->is_upgrade);
        assert_int_equal(req->keep_alive, i < 2);
        assert_int_equal(req->method, i < 2 ? HTTP_GET : HTTP_HEAD);
        if (i == 1)
            assert_string_equal(req->query, "x=1");
        else
            assert_null(req->query);
        p += used;
        left -= used;
        http_reader_reset(r);
    }
    assert_int_equal(left, 0);
    http_reader_destroy(r);
}

static void test_http_post_body_in_many_pieces(void **state)
{
    (void)state;
    static const char req[] =
        "POST /api/publish HTTP/1.1\r\n"
        "Content-Type: application/json\r\n"
        "Content-Length: 35\r\n"
        "\r\n"
        "{\"room\":\"general\",\"data\":\"hello\"}\r\n"
        "GET /next HTTP/1.1\r\n\r\n";
    size_t msg_len = strstr(req, "GET /next") - req;
    struct http_reader *r = http_reader_create(MAX_HEAD, MAX_BODY);
    size_t off = 0, used;
    int rc = HTTP_READ_NEED_MORE;

    /* Pieces of 7 bytes cut the head and the body at odd places. */
    while (rc == HTTP_READ_NEED_MORE) {
        size_t n = strlen(req) - off < 7 ? strlen(req) - off : 7;
        rc = http_reader_feed(r, req + off, n, &used);
        off += used;
    }
    assert_int_equal(rc, HTTP_READ_DONE);
    assert_int_equal(off, msg_len);
    const struct http_request *req_out = http_reader_request(r);
    assert_int_equal(req_out->method, HTTP_POST);
    assert_string_equal(req_out->method_name, "POST");
    assert_string_equal(req_out->content_type, "application/json");
    assert_int_equal(req_out->body_len, 35);
    assert_memory_equal(req_out->body, "{\"room\":\"general\",\"data\":\"hello\"}\r\n", 35);
    assert_int_equal(req_out->body[35], '\0');

    http_reader_reset(r);
    assert_int_equal(http_reader_feed(r, req + off, strlen(req) - off, &used), HTTP_READ_DONE);
    assert_string_equal(http_reader_request(r)->path, "/next");
    assert_null(http_reader_request(r)->body);
    http_reader_destroy(r);
}

static void test_http_content_length_over_max_is_413_before_body(void **state)
{
    (void)state;
    static const char head[] = "POST /api/publish HTTP/1.1\r\nContent-Length: 257\r\n\r\n";
    struct http_reader *r = http_reader_create(MAX_HEAD, MAX_BODY);
    size_t used;
    /* Refused on the head alone: not one body byte was sent. */
    assert_int_equal(feed_all(r, head, strlen(head), &used), HTTP_READ_BODY_TOO_LARGE);
    http_reader_destroy(r);

    static const char huge[] = "POST / HTTP/1.1\r\nContent-Length: 99999999999999\r\n\r\nxx";
    r = http_reader_create(MAX_HEAD, MAX_BODY);
    assert_int_equal(feed_bytes(r, huge, strlen(huge), &used), HTTP_READ_BODY_TOO_LARGE);
    assert_true(used <= strlen(huge) - 2);
    http_reader_destroy(r);

    /* Exactly the limit is fine. */
    char req[512];
    int n = snprintf(req, sizeof(req), "POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n", MAX_BODY);
    memset(req + n, 'z', MAX_BODY);
    r = http_reader_create(MAX_HEAD, MAX_BODY);
    assert_int_equal(feed_all(r, req, (size_t)n + MAX_BODY, &used), HTTP_READ_DONE);
    assert_int_equal(http_reader_request(r)->body_len, MAX_BODY);
    http_reader_destroy(r);
}

static void test_http_chunked_body(void **state)
{
    (void)state;
    static const char req[] =
        "POST /api/publish HTTP/1.1\r\n"
        "Transfer-Encoding: chunked\r\n"
        "\r\n"
        "5\r\nhello\r\n"
        "7;ext=1\r\n, world\r\n"
        "0\r\n\r\n"
        "GET / HTTP/1.1\r\n\r\n";
    size_t msg_len = strstr(req, "GET /") - req;
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        struct http_reader *r = http_reader_create(MAX_HEAD, MAX_BODY);
        size_t used;
        int rc = bytewise ? feed_bytes(r, req, strlen(req), &used) : feed_all(r, req, strlen(req), &used);
        assert_int_equal(rc, HTTP_READ_DONE);
        assert_int_equal(used, msg_len);
        const struct http_request *out = http_reader_request(r);
        assert_int_equal(out->body_len, 12);
        assert_string_equal(out->body, "hello, world");
        http_reader_destroy(r);
    }
}

static void test_http_chunked_trailers_do_not_change_headers(void **state)
{
    (void)state;
    static const char req[] =
        "POST /api/publish HTTP/1.1\r\n"
        "Host: a\r\n"
        "Transfer-Encoding: chunked\r\n"
        "\r\n"
        "2\r\nhi\r\n"
        "0\r\n"
        "Host: trailer-host-that-is-long-enough-to-move-the-buffer-somewhere-else\r\n"
        "Origin: trailer\r\n"
        "\r\n";
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        struct http_reader *r = http_reader_create(MAX_HEAD, MAX_BODY);
        size_t used;
        int rc = bytewise ? feed_bytes(r, req, strlen(req), &used) : feed_all(r, req, strlen(req), &used);
        assert_int_equal(rc, HTTP_READ_DONE);
        assert_int_equal(used, strlen(req));
        const struct http_request *out = http_reader_request(r);
        assert_string_equal(out->host, "a");
        assert_null(out->origin);
        assert_string_equal(out->body, "hi");
        http_reader_destroy(r);
    }
}

static void test_http_chunked_body_over_max_is_413(void **state)
{
    (void)state;
    char req[1024];
    int n = snprintf(req, sizeof(req), "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    /* Three chunks of 100: the third passes the 256-byte limit. */
    for (int i = 0; i < 3; i++) {
        n += snprintf(req + n, sizeof(req) - (size_t)n, "64\r\n");
        memset(req + n, 'c', 100);
        n += 100;
        n += snprintf(req + n, sizeof(req) - (size_t)n, "\r\n");
    }
    n += snprintf(req + n, sizeof(req) - (size_t)n, "0\r\n\r\n");
    struct http_reader *r = http_reader_create(MAX_HEAD, MAX_BODY);
    size_t used;
    assert_int_equal(feed_all(r, req, (size_t)n, &used), HTTP_READ_BODY_TOO_LARGE);
    http_reader_destroy(r);

    r = http_reader_create(MAX_HEAD, MAX_BODY);
    assert_int_equal(feed_bytes(r, req, (size_t)n, &used), HTTP_READ_BODY_TOO_LARGE);
    http_reader_destroy(r);
}

static void test_http_repeated_headers_are_joined(void **state)
{
    (void)state;
    static const char req[] =
        "GET /ws HTTP/1.1\r\n"
        "connection: keep-alive\r\n"
        "X-Other: 1\r\n"
        "CONNECTION:   Upgrade  \r\n"
        "Sec-WebSocket-Protocol: chat\r\n"
        "Sec-WebSocket-Protocol: wsfan.v1\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n"
        "sec-websocket-extensions: permessage-deflate; client_max_window_bits\r\n"
        "Sec-WebSocket-Extensionsx: ignored\r\n"
        "Origin:\r\n"
        "\r\n";
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        struct http_reader *r = http_reader_create(MAX_HEAD, MAX_BODY);
        size_t used;
        int rc = bytewise ? feed_bytes(r, req, strlen(req), &used) : feed_all(r, req, strlen(req), &used);
        assert_int_equal(rc, HTTP_READ_DONE);
        const struct http_request *out = http_reader_request(r);
        assert_string_equal(out->connection, "keep-alive, Upgrade");
        assert_string_equal(out->ws_protocol, "chat, wsfan.v1");
        assert_true(http_header_has_token(out->ws_protocol, "wsfan.v1"));
        /* The longest name read (24 bytes), and one a byte longer. */
        assert_string_equal(out->ws_extensions,
                            "permessage-deflate; server_max_window_bits=10, permessage-deflate; client_max_window_bits");
        assert_non_null(out->origin);
        assert_string_equal(out->origin, "");
        assert_null(out->upgrade);
        http_reader_destroy(r);
    }
}

/* Origin, Host and X-Forwarded-For are what the server's checks read
 * (docs/protocol.md sections 1a and 7): captured whatever their case, a
 * repeated X-Forwarded-For joined in order (proxies may add a line each),
 * absent ones NULL. */
static void test_http_captures_origin_host_and_forwarded_for(void **state)
{
    (void)state;
    static const char req[] =
        "GET /ws HTTP/1.1\r\n"
        "HOST: app.example.com:8443\r\n"
        "origin: https://app.example.com:8443\r\n"
        "x-forwarded-for: 198.51.100.1\r\n"
        "X-Forwarded-For:  192.0.2.9 , [2001:db8::1]:443 \r\n"
        "X-Forwarded-Host: ignored\r\n"
        "\r\n";
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        struct http_reader *r = http_reader_create(MAX_HEAD, MAX_BODY);
        size_t used;
        int rc = bytewise ? feed_bytes(r, req, strlen(req), &used) : feed_all(r, req, strlen(req), &used);
        assert_int_equal(rc, HTTP_READ_DONE);
        const struct http_request *out = http_reader_request(r);
        assert_string_equal(out->host, "app.example.com:8443");
        assert_string_equal(out->origin, "https://app.example.com:8443");
        assert_string_equal(out->forwarded_for, "198.51.100.1, 192.0.2.9 , [2001:db8::1]:443");
        http_reader_reset(r);
        static const char plain[] = "GET /healthz HTTP/1.1\r\n\r\n";
        assert_int_equal(feed_all(r, plain, strlen(plain), &used), HTTP_READ_DONE);
        out = http_reader_request(r);
        assert_null(out->host);
        assert_null(out->origin);
        assert_null(out->forwarded_for);
        http_reader_destroy(r);
    }
}

static void test_http_reset_forgets_previous_request(void **state)
{
    (void)state;
    struct http_reader *r = http_reader_create(MAX_HEAD, MAX_BODY);
    size_t used;
    assert_int_equal(feed_all(r, upgrade_req, strlen(upgrade_req), &used), HTTP_READ_DONE);
    http_reader_reset(r);
    static const char plain[] = "GET /healthz HTTP/1.1\r\n\r\n";
    assert_int_equal(feed_all(r, plain, strlen(plain), &used), HTTP_READ_DONE);
    const struct http_request *out = http_reader_request(r);
    assert_string_equal(out->path, "/healthz");
    assert_null(out->host);
    assert_null(out->upgrade);
    assert_null(out->ws_key);
    assert_false(out->is_upgrade);
    http_reader_destroy(r);
}

static void test_http_http10_is_not_keep_alive(void **state)
{
    (void)state;
    static const char req[] = "GET /healthz HTTP/1.0\r\n\r\n";
    struct http_reader *r = http_reader_create(MAX_HEAD, MAX_BODY);
    size_t used;
    assert_int_equal(feed_all(r, req, strlen(req), &used), HTTP_READ_DONE);
    assert_false(http_reader_request(r)->keep_alive);
    http_reader_destroy(r);
}

static void test_http_other_method_is_named(void **state)
{
    (void)state;
    static const char req[] = "DELETE /api/rooms HTTP/1.1\r\n\r\n";
    struct http_reader *r = http_reader_create(MAX_HEAD, MAX_BODY);
    size_t used;
    assert_int_equal(feed_all(r, req, strlen(req), &used), HTTP_READ_DONE);
    assert_int_equal(http_reader_request(r)->method, HTTP_OTHER);
    assert_string_equal(http_reader_request(r)->method_name, "DELETE");
    http_reader_destroy(r);
}

/* ---- http_ws_check ---------------------------------------------------- */

static struct http_request good_upgrade(void)
{
    struct http_request req = {
        .method = HTTP_GET,
        .method_name = "GET",
        .path = "/ws",
        .upgrade = "websocket",
        .connection = "Upgrade",
        .ws_key = "dGhlIHNhbXBsZSBub25jZQ==",
        .ws_version = "13",
        .is_upgrade = 1,
        .http_1_1 = 1,
    };
    return req;
}

static int check(const struct http_request *req)
{
    const char *reason = NULL;
    int status = http_ws_check(req, &reason);
    assert_non_null(reason);
    assert_null(strchr(reason, '\n'));
    return status;
}

static void test_http_ws_check_accepts_valid_upgrade(void **state)
{
    (void)state;
    struct http_request req = good_upgrade();
    assert_int_equal(check(&req), 0);
    req.upgrade = "WebSocket";
    req.connection = "keep-alive, Upgrade";
    assert_int_equal(check(&req), 0);
    req.connection = "upgrade,keep-alive";
    assert_int_equal(check(&req), 0);
}

static void test_http_ws_check_refuses_http_1_0(void **state)
{
    (void)state;
    struct http_request req = good_upgrade();
    req.http_1_1 = 0;
    assert_int_equal(check(&req), 400);
    struct http_reader *r = http_reader_create(8192, 1024);
    size_t used;
    const char *head = "GET /ws HTTP/1.0\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    assert_int_equal(http_reader_feed(r, head, strlen(head), &used), HTTP_READ_DONE);
    assert_int_equal(check(http_reader_request(r)), 400);
    http_reader_destroy(r);
}

static void test_http_ws_check_refuses_missing_upgrade(void **state)
{
    (void)state;
    struct http_request req = good_upgrade();
    req.upgrade = NULL;
    assert_int_equal(check(&req), 400);
    req.upgrade = "h2c";
    assert_int_equal(check(&req), 400);
    req.upgrade = "websockets";
    assert_int_equal(check(&req), 400);
}

static void test_http_ws_check_refuses_connection_without_upgrade(void **state)
{
    (void)state;
    struct http_request req = good_upgrade();
    req.connection = NULL;
    assert_int_equal(check(&req), 400);
    req.connection = "keep-alive";
    assert_int_equal(check(&req), 400);
    req.connection = "keep-alive, upgrades";
    assert_int_equal(check(&req), 400);
    req.connection = "Upgrade-Insecure";
    assert_int_equal(check(&req), 400);
}

static void test_http_ws_check_refuses_post(void **state)
{
    (void)state;
    struct http_request req = good_upgrade();
    req.method = HTTP_POST;
    req.method_name = "POST";
    assert_int_equal(check(&req), 400);
    req.method = HTTP_OTHER;
    req.method_name = "PUT";
    assert_int_equal(check(&req), 400);
}

static void test_http_ws_check_refuses_bad_keys(void **state)
{
    (void)state;
    static const char *const keys[] = {
        "",
        "dGhlIHNhbXBsZSBub25jZQ=",       /* 23 chars */
        "dGhlIHNhbXBsZSBub25jZQ===",     /* 25 chars */
        "dGhlIHNhbXBsZSBub25jZQ",        /* no padding */
        "dGhlIHNhbXBsZSBub25j!Q==",      /* not base64 */
        "dGhlIHNhbXBsZSBub25jZSBv",      /* 18 bytes */
    };
    struct http_request req = good_upgrade();
    req.ws_key = NULL;
    assert_int_equal(check(&req), 400);
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        req.ws_key = keys[i];
        assert_int_equal(check(&req), 400);
    }
}

static void test_http_ws_check_version(void **state)
{
    (void)state;
    struct http_request req = good_upgrade();
    req.ws_version = "8";
    assert_int_equal(check(&req), 426);
    req.ws_version = "13, 8";
    assert_int_equal(check(&req), 426);
    req.ws_version = NULL;
    assert_int_equal(check(&req), 400);
}

static void test_http_ws_check_on_parsed_request_without_key(void **state)
{
    (void)state;
    static const char req[] =
        "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n";
    struct http_reader *r = http_reader_create(MAX_HEAD, MAX_BODY);
    size_t used;
    assert_int_equal(feed_all(r, req, strlen(req), &used), HTTP_READ_DONE);
    assert_int_equal(used, strlen(req));
    assert_int_equal(check(http_reader_request(r)), 400);
    http_reader_destroy(r);
}

/* ---- tokens and query -------------------------------------------------- */

static void test_http_header_has_token(void **state)
{
    (void)state;
    assert_true(http_header_has_token("wsfan.v1", "wsfan.v1"));
    assert_true(http_header_has_token("chat, wsfan.v1", "wsfan.v1"));
    assert_true(http_header_has_token(" \tWSFAN.V1\t ,chat", "wsfan.v1"));
    assert_true(http_header_has_token("a,,b", "b"));
    assert_false(http_header_has_token(NULL, "wsfan.v1"));
    assert_false(http_header_has_token("", "wsfan.v1"));
    assert_false(http_header_has_token("wsfan.v10", "wsfan.v1"));
    assert_false(http_header_has_token("wsfan", "wsfan.v1"));
    assert_false(http_header_has_token("wsfan.v1x, chat", "wsfan.v1"));
    assert_false(http_header_has_token("w sfan.v1", "wsfan.v1"));
}

/* Repeated parameters come one after the other, then -1. */
static void test_http_query_next_walks_repeated_parameters(void **state)
{
    char out[16];
    const char *pos = "room=a&user=x&room=b%3Ac&room";

    (void)state;
    assert_int_equal(http_query_next(&pos, "room", out, sizeof(out)), 1);
    assert_string_equal(out, "a");
    assert_int_equal(http_query_next(&pos, "room", out, sizeof(out)), 3);
    assert_string_equal(out, "b:c");
    assert_int_equal(http_query_next(&pos, "room", out, sizeof(out)), 0);
    assert_int_equal(http_query_next(&pos, "room", out, sizeof(out)), -1);
    assert_null(pos);
}

static void test_http_query_get_finds_values(void **state)
{
    (void)state;
    char out[32];
    assert_int_equal(http_query_get("user=bob", "user", out, sizeof(out)), 3);
    assert_string_equal(out, "bob");
    assert_int_equal(http_query_get("a=1&user=al%20ice&b=2", "user", out, sizeof(out)), 6);
    assert_string_equal(out, "al ice");
    assert_int_equal(http_query_get("q=a+b%2Bc%2fd", "q", out, sizeof(out)), 7);
    assert_string_equal(out, "a b+c/d");
    assert_int_equal(http_query_get("flag&x=1", "flag", out, sizeof(out)), 0);
    assert_string_equal(out, "");
    assert_int_equal(http_query_get("x=", "x", out, sizeof(out)), 0);
    assert_int_equal(http_query_get("x=1&x=2", "x", out, sizeof(out)), 1);
    assert_string_equal(out, "1");
    assert_int_equal(http_query_get("room=%C3%A9t%C3%A9", "room", out, sizeof(out)), 5);
    assert_string_equal(out, "\xc3\xa9t\xc3\xa9");
}

static void test_http_query_get_absent(void **state)
{
    (void)state;
    char out[8];
    assert_int_equal(http_query_get(NULL, "user", out, sizeof(out)), -1);
    assert_int_equal(http_query_get("", "user", out, sizeof(out)), -1);
    assert_int_equal(http_query_get("username=bob", "user", out, sizeof(out)), -1);
    assert_int_equal(http_query_get("use=bob&er=x", "user", out, sizeof(out)), -1);
    assert_int_equal(http_query_get("x=user", "user", out, sizeof(out)), -1);
}

static void test_http_query_get_too_long_or_bad(void **state)
{
    (void)state;
    char out[8];
    assert_int_equal(http_query_get("t=1234567", "t", out, sizeof(out)), 7);
    assert_int_equal(http_query_get("t=12345678", "t", out, sizeof(out)), -2);
    /* Encoded bytes count once decoded. */
    assert_int_equal(http_query_get("t=%41%42%43%44%45%46%47", "t", out, sizeof(out)), 7);
    assert_string_equal(out, "ABCDEFG");
    assert_int_equal(http_query_get("t=%4", "t", out, sizeof(out)), -2);
    assert_int_equal(http_query_get("t=%", "t", out, sizeof(out)), -2);
    assert_int_equal(http_query_get("t=%zz", "t", out, sizeof(out)), -2);
    assert_int_equal(http_query_get("t=a%00b", "t", out, sizeof(out)), -2);
    assert_int_equal(http_query_get("t=a", "t", out, 0), -2);
    assert_int_equal(http_query_get("t=", "t", out, 1), 0);
}

/* ---- responses ---------------------------------------------------------- */

static void assert_frame(struct frame *f, const char *expect)
{
    assert_non_null(f);
    assert_int_equal(f->refs, 1);
    assert_int_equal(f->len, strlen(expect));
    assert_memory_equal(f->bytes, expect, f->len);
    frame_unref(f);
}

static void test_http_response_with_body(void **state)
{
    (void)state;
    assert_frame(http_response_create(200, "text/plain; charset=utf-8", NULL, "ok\n", 3, 1),
                 "HTTP/1.1 200 OK\r\n"
                 "Content-Type: text/plain; charset=utf-8\r\n"
                 "Content-Length: 3\r\n"
                 "Connection: keep-alive\r\n"
                 "\r\n"
                 "ok\n");
    assert_frame(http_response_create(426, "text/plain", "Sec-WebSocket-Version: 13\r\n", "x", 1, 0),
                 "HTTP/1.1 426 Upgrade Required\r\n"
                 "Content-Type: text/plain\r\n"
                 "Content-Length: 1\r\n"
                 "Connection: close\r\n"
                 "Sec-WebSocket-Version: 13\r\n"
                 "\r\n"
                 "x");
}

static void test_http_response_without_body(void **state)
{
    (void)state;
    assert_frame(http_response_create(404, "text/plain", NULL, NULL, 0, 0),
                 "HTTP/1.1 404 Not Found\r\n"
                 "Content-Length: 0\r\n"
                 "Connection: close\r\n"
                 "\r\n");
    assert_frame(http_response_create(204, NULL, NULL, NULL, 0, 1),
                 "HTTP/1.1 204 No Content\r\n"
                 "Connection: keep-alive\r\n"
                 "\r\n");
}

static void test_http_response_101_has_no_length_or_connection(void **state)
{
    (void)state;
    static const char extra[] =
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";
    assert_frame(http_response_create(101, NULL, extra, NULL, 0, 1),
                 "HTTP/1.1 101 Switching Protocols\r\n"
                 "Upgrade: websocket\r\n"
                 "Connection: Upgrade\r\n"
                 "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                 "\r\n");
}

static void test_http_response_body_with_nul_bytes(void **state)
{
    (void)state;
    struct frame *f = http_response_create(200, "application/octet-stream", NULL, "a\0b", 3, 1);
    assert_non_null(f);
    assert_memory_equal(f->bytes + f->len - 3, "a\0b", 3);
    frame_unref(f);
}

static void test_http_status_text(void **state)
{
    (void)state;
    static const int codes[] = {101, 200, 204, 400, 401, 403, 404, 405, 408,
                                413, 415, 426, 429, 431, 500, 503};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        assert_string_not_equal(http_status_text(codes[i]), "Unknown");
    assert_string_equal(http_status_text(431), "Request Header Fields Too Large");
    assert_string_equal(http_status_text(299), "Unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_reads_upgrade_request_at_once),
        cmocka_unit_test(test_http_captures_origin_host_and_forwarded_for),
        cmocka_unit_test(test_http_reads_upgrade_request_byte_by_byte),
        cmocka_unit_test(test_http_upgrade_stops_at_end_of_head),
        cmocka_unit_test(test_http_head_over_limit_is_431),
        cmocka_unit_test(test_http_one_huge_header_line_is_431),
        cmocka_unit_test(test_http_long_url_is_431),
        cmocka_unit_test(test_http_head_past_parser_limit_is_431),
        cmocka_unit_test(test_http_garbage_is_400),
        cmocka_unit_test(test_http_pipelined_gets_are_read_one_at_a_time),
        cmocka_unit_test(test_http_post_body_in_many_pieces),
        cmocka_unit_test(test_http_content_length_over_max_is_413_before_body),
        cmocka_unit_test(test_http_chunked_body),
        cmocka_unit_test(test_http_chunked_trailers_do_not_change_headers),
        cmocka_unit_test(test_http_chunked_body_over_max_is_413),
        cmocka_unit_test(test_http_repeated_headers_are_joined),
        cmocka_unit_test(test_http_reset_forgets_previous_request),
        cmocka_unit_test(test_http_http10_is_not_keep_alive),
        cmocka_unit_test(test_http_other_method_is_named),
        cmocka_unit_test(test_http_ws_check_accepts_valid_upgrade),
        cmocka_unit_test(test_http_ws_check_refuses_http_1_0),
        cmocka_unit_test(test_http_ws_check_refuses_missing_upgrade),
        cmocka_unit_test(test_http_ws_check_refuses_connection_without_upgrade),
        cmocka_unit_test(test_http_ws_check_refuses_post),
        cmocka_unit_test(test_http_ws_check_refuses_bad_keys),
        cmocka_unit_test(test_http_ws_check_version),
        cmocka_unit_test(test_http_ws_check_on_parsed_request_without_key),
        cmocka_unit_test(test_http_header_has_token),
        cmocka_unit_test(test_http_query_next_walks_repeated_parameters),
        cmocka_unit_test(test_http_query_get_finds_values),
        cmocka_unit_test(test_http_query_get_absent),
        cmocka_unit_test(test_http_query_get_too_long_or_bad),
        cmocka_unit_test(test_http_response_with_body),
        cmocka_unit_test(test_http_response_without_body),
        cmocka_unit_test(test_http_response_101_has_no_length_or_connection),
        cmocka_unit_test(test_http_response_body_with_nul_bytes),
        cmocka_unit_test(test_http_status_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
