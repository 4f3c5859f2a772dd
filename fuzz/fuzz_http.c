/* fuzz_http.c - libFuzzer target for http.c: feeds the input through one
 * reader in chunks (the first byte picks the chunk size), answers each
 * complete request the way the server does (upgrade check, query lookup,
 * response), then resets and reads the next pipelined request until the
 * input ends or the reader refuses it. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/http.h"
#include "codec/ws.h"

/* Small limits so that the fuzzer reaches them. */
#define FUZZ_MAX_HEAD 512
#define FUZZ_MAX_BODY 256

static void use_string(const char *s)
{
    if (s && strlen(s) > FUZZ_MAX_HEAD)
        abort();
}

static void answer(const struct http_request *req)
{
    const char *reason = NULL;
    char value[64];

    use_string(req->method_name);
    use_string(req->path);
    use_string(req->host);
    use_string(req->upgrade);
    use_string(req->connection);
    use_string(req->ws_key);
    use_string(req->ws_version);
    use_string(req->origin);
    use_string(req->authorization);
    use_string(req->content_type);
    if (req->body_len > FUZZ_MAX_BODY || (req->body && req->body[req->body_len] != '\0'))
        abort();

    int status = http_ws_check(req, &reason);
    if (!reason || (status != 0 && status != 400 && status != 426))
        abort();
    int n = http_query_get(req->query, "user", value, sizeof(value));
    if (n < -2 || n >= (int)sizeof(value) || (n >= 0 && strlen(value) != (size_t)n))
        abort();
    http_header_has_token(req->ws_protocol, "wsfan.v1");

    struct frame *f = http_response_create(status ? status : 101, "text/plain", NULL, req->body,
                                           req->body_len, req->keep_alive);
    if (f)
        frame_unref(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t chunk = (size_t)data[0] + 1;
    const char *buf = (const char *)data + 1;
    size_t len = size - 1;

    struct http_reader *r = http_reader_create(FUZZ_MAX_HEAD, FUZZ_MAX_BODY);
    if (!r)
        return 0;
    size_t off = 0;
    while (off < len) {
        size_t n = len - off < chunk ? len - off : chunk;
        size_t used;
        int rc = http_reader_feed(r, buf + off, n, &used);
        if (used > n)
            abort();
        off += used;
        if (rc == HTTP_READ_NEED_MORE) {
            if (used != n)
                abort();
            continue;
        }
        if (rc != HTTP_READ_DONE)
            break;
        answer(http_reader_request(r));
        http_reader_reset(r);
    }
    http_reader_destroy(r);
    return 0;
}
