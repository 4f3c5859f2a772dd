/* test_tls.c - unit tests of net/tls.c: a client session and a server
 * session of the engine talk to each other through memory only (no
 * socket), with a CA and certificates made by the openssl CLI in a
 * temporary folder: handshake, data both ways, many small writes, a large
 * one, verification of the name and the CA, and contexts that refuse bad
 * files. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/tls.h"

static char dir[] = "/tmp/wsfan-test-tls-XXXXXX";
static char path_buf[8][256];

static const char *path(int slot, const char *name)
{
    snprintf(path_buf[slot], sizeof path_buf[slot], "%s/%s", dir, name);
    return path_buf[slot];
}

/* A CA, a server certificate for localhost and 127.0.0.1 signed by it, and
 * a second, unrelated key. */
static int make_certs(void **state)
{
    (void)state;
    if (!mkdtemp(dir))
        return -1;
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key "
             "-out ca.pem -days 2 -subj /CN=wsfan-test-ca 2>/dev/null && "
             "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr "
             "-subj /CN=localhost 2>/dev/null && "
             "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext && "
             "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext "
             "-out server.pem 2>/dev/null && "
             "openssl genpkey -algorithm ec -pkeyopt ec_paramgen_curve:P-256 -out other.key 2>/dev/null",
             dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int remove_certs(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Moves every ciphertext byte waiting on from to to; returns how many. */
static size_t pump(struct tls *from, struct tls *to)
{
    size_t n;
    char *buf = tls_out_take(from, &n);
    if (buf)
        assert_int_equal(tls_feed(to, buf, n), 0);
    free(buf);
    assert_int_equal(tls_out_pending(from), 0);
    return n;
}

/* Runs the handshake to its end; returns 0, or TLS_ERROR when a side refused. */
static int handshake(struct tls *client, struct tls *server)
{
    char buf[64];
    assert_int_equal(tls_connect(client), 0);
    for (int round = 0; round < 10; round++) {
        pump(client, server);
        if (tls_read(server, buf, sizeof buf) == TLS_ERROR)
            return TLS_ERROR;
        pump(server, client);
        if (tls_read(client, buf, sizeof buf) == TLS_ERROR)
            return TLS_ERROR;
        if (tls_handshake_done(client) && tls_handshake_done(server) && !tls_out_pending(client) &&
            !tls_out_pending(server))
            return 0;
    }
    fail_msg("handshake did not finish in 10 rounds");
    return TLS_ERROR;
}

struct pair {
    struct tls_ctx *server_ctx, *client_ctx;
    struct tls *server, *client;
};

static void pair_open(struct pair *p, const char *name)
{
    char err[TLS_ERR_MAX];
    p->server_ctx = tls_ctx_server_create(path(0, "server.pem"), path(1, "server.key"), err, sizeof err);
    assert_non_null(p->server_ctx);
    p->client_ctx = tls_ctx_client_create(path(2, "ca.pem"), NULL, NULL, err, sizeof err);
    assert_non_null(p->client_ctx);
    p->server = tls_create(p->server_ctx, NULL);
    p->client = tls_create(p->client_ctx, name);
    assert_non_null(p->server);
    assert_non_null(p->client);
    /* The sessions hold their own references. */
    tls_ctx_unref(p->server_ctx);
    tls_ctx_unref(p->client_ctx);
}

/* pair_open, then the handshake, which must succeed. */
static void pair_connect(struct pair *p, const char *name)
{
    pair_open(p, name);
    assert_int_equal(handshake(p->client, p->server), 0);
}

static void pair_close(struct pair *p)
{
    tls_destroy(p->server);
    tls_destroy(p->client);
}

/* Reads everything the peer's records hold into buf; returns the length. */
static size_t read_all(struct tls *t, char *buf, size_t cap)
{
    size_t got = 0;
    ssize_t n;
    while (got < cap && (n = tls_read(t, buf + got, cap - got)) > 0)
        got += (size_t)n;
    return got;
}

static void test_tls_client_and_server_exchange_data(void **state)
{
    (void)state;
    struct pair p;
    pair_connect(&p, "localhost");
    assert_int_equal(tls_write(p.client, "GET / HTTP/1.1\r\n\r\n", 18), 18);
    pump(p.client, p.server);
    char buf[256];
    assert_int_equal(read_all(p.server, buf, sizeof buf), 18);
    assert_memory_equal(buf, "GET / HTTP/1.1\r\n\r\n", 18);
    assert_int_equal(tls_write(p.server, "HTTP/1.1 200 OK\r\n", 17), 17);
    pump(p.server, p.client);
    assert_int_equal(read_all(p.client, buf, sizeof buf), 17);
    assert_memory_equal(buf, "HTTP/1.1 200 OK\r\n", 17);
    pair_close(&p);
}

/* One write of many gathered messages costs fewer bytes on the wire than
 * a write per message: one record, not one each. */
static void test_tls_gathered_write_is_one_record(void **state)
{
    (void)state;
    struct pair p;
    pair_connect(&p, "localhost");
    char msg[40];
    memset(msg, 'm', sizeof msg);
    for (int i = 0; i < 100; i++)
        assert_int_equal(tls_write(p.server, msg, sizeof msg), sizeof msg);
    size_t separate = tls_out_pending(p.server);
    pump(p.server, p.client);
    char gathered[100 * sizeof msg];
    for (int i = 0; i < 100; i++)
        memcpy(gathered + i * sizeof msg, msg, sizeof msg);
    assert_int_equal(tls_write(p.server, gathered, sizeof gathered), sizeof gathered);
    size_t one = tls_out_pending(p.server);
    assert_true(one < sizeof gathered + 64);
    assert_true(separate > sizeof gathered + 100 * 16);
    pump(p.server, p.client);
    static char got[200 * sizeof msg];
    assert_int_equal(read_all(p.client, got, sizeof got), 2 * sizeof gathered);
    pair_close(&p);
}

/* The first n bytes of the server's waiting ciphertext, as a writer cut
 * short sends them: peeked, fed to the client, consumed. */
static void pass_part(struct pair *p, size_t n)
{
    size_t len;
    const char *out = tls_out_peek(p->server, &len);
    assert_non_null(out);
    assert_int_equal(len, tls_out_pending(p->server));
    assert_true(n <= len);
    assert_int_equal(tls_feed(p->client, out, n), 0);
    tls_out_consume(p->server, n);
}

/* A writer cut short consumes what went out and peeks at the rest; more
 * ciphertext queued meanwhile follows it, and a take after a partial
 * consume hands over only what was not sent. The peer reads it all. */
static void test_tls_out_consumed_in_parts_arrives_whole(void **state)
{
    (void)state;
    struct pair p;
    pair_connect(&p, "localhost");
    char msg[3000];
    memset(msg, 'a', sizeof msg);
    assert_int_equal(tls_write(p.server, msg, sizeof msg), sizeof msg);
    size_t pending = tls_out_pending(p.server);
    pass_part(&p, 100);
    assert_int_equal(tls_out_pending(p.server), pending - 100);
    memset(msg, 'b', sizeof msg);
    assert_int_equal(tls_write(p.server, msg, sizeof msg), sizeof msg);
    pass_part(&p, 50);
    pump(p.server, p.client); /* a take of the rest */
    size_t len;
    assert_null(tls_out_peek(p.server, &len));
    assert_int_equal(len, 0);
    static char got[2 * sizeof msg];
    assert_int_equal(read_all(p.client, got, sizeof got), sizeof got);
    for (size_t i = 0; i < sizeof got; i++)
        assert_int_equal(got[i], i < sizeof msg ? 'a' : 'b');
    pair_close(&p);
}

/* A write larger than a record is split into records, all delivered. */
static void test_tls_large_write_arrives_whole(void **state)
{
    (void)state;
    struct pair p;
    pair_connect(&p, "127.0.0.1");
    size_t len = 5 * TLS_RECORD_MAX + 123;
    char *big = malloc(len), *got = malloc(len);
    for (size_t i = 0; i < len; i++)
        big[i] = (char)(i * 7);
    assert_int_equal(tls_write(p.server, big, len), (ssize_t)len);
    pump(p.server, p.client);
    assert_int_equal(read_all(p.client, got, len), len);
    assert_memory_equal(got, big, len);
    free(big);
    free(got);
    pair_close(&p);
}

static void test_tls_close_notify_reads_as_closed(void **state)
{
    (void)state;
    struct pair p;
    pair_connect(&p, "localhost");
    tls_close_notify(p.server);
    assert_true(pump(p.server, p.client) > 0);
    char buf[16];
    assert_int_equal(tls_read(p.client, buf, sizeof buf), TLS_CLOSED);
    pair_close(&p);
}

static void test_tls_client_refuses_a_certificate_for_another_name(void **state)
{
    (void)state;
    struct pair p;
    pair_open(&p, "example.com");
    assert_int_equal(handshake(p.client, p.server), TLS_ERROR);
    assert_string_equal(tls_error(p.client), "certificate verify failed: hostname mismatch");
    pair_close(&p);
}

static void test_tls_client_refuses_an_unknown_ca(void **state)
{
    (void)state;
    char err[TLS_ERR_MAX];
    struct tls_ctx *sctx = tls_ctx_server_create(path(0, "server.pem"), path(1, "server.key"), err, sizeof err);
    /* The server's own certificate as the only trusted one: not a CA. */
    struct tls_ctx *cctx = tls_ctx_client_create(path(2, "server.pem"), NULL, NULL, err, sizeof err);
    assert_non_null(sctx);
    assert_non_null(cctx);
    struct tls *server = tls_create(sctx, NULL), *client = tls_create(cctx, "localhost");
    tls_ctx_unref(sctx);
    tls_ctx_unref(cctx);
    assert_int_equal(handshake(client, server), TLS_ERROR);
    assert_string_equal(tls_error(client), "certificate verify failed: unable to get local issuer certificate");
    tls_destroy(server);
    tls_destroy(client);
}

static void test_tls_server_context_refuses_bad_files(void **state)
{
    (void)state;
    char err[TLS_ERR_MAX];
    assert_null(tls_ctx_server_create(path(0, "server.pem"), path(1, "other.key"), err, sizeof err));
    assert_non_null(strstr(err, "other.key does not match the certificate of"));
    assert_non_null(strstr(err, ": key values mismatch"));
    assert_null(tls_ctx_server_create(path(0, "missing.pem"), path(1, "server.key"), err, sizeof err));
    assert_non_null(strstr(err, "missing.pem: No such file or directory"));
    assert_null(tls_ctx_server_create(path(0, "server.pem"), path(1, "ext"), err, sizeof err));
    assert_non_null(strstr(err, "ext: cannot load the private key"));
    assert_null(tls_ctx_client_create(path(2, "missing.pem"), NULL, NULL, err, sizeof err));
    assert_non_null(strstr(err, "missing.pem: No such file or directory"));
    assert_null(tls_ctx_client_create(path(2, "ext"), NULL, NULL, err, sizeof err));
    assert_non_null(strstr(err, "ext: cannot load the trusted certificates"));
}

/* Bytes that are not TLS end the handshake with an error, not a hang. */
static void test_tls_server_refuses_garbage(void **state)
{
    (void)state;
    struct pair p;
    pair_open(&p, "localhost");
    assert_int_equal(tls_feed(p.server, "GET / HTTP/1.1\r\n\r\n", 18), 0);
    char buf[16];
    assert_int_equal(tls_read(p.server, buf, sizeof buf), TLS_ERROR);
    assert_string_not_equal(tls_error(p.server), "");
    pair_close(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls_client_and_server_exchange_data),
        cmocka_unit_test(test_tls_gathered_write_is_one_record),
        cmocka_unit_test(test_tls_large_write_arrives_whole),
        cmocka_unit_test(test_tls_out_consumed_in_parts_arrives_whole),
        cmocka_unit_test(test_tls_close_notify_reads_as_closed),
        cmocka_unit_test(test_tls_client_refuses_a_certificate_for_another_name),
        cmocka_unit_test(test_tls_client_refuses_an_unknown_ca),
        cmocka_unit_test(test_tls_server_context_refuses_bad_files),
        cmocka_unit_test(test_tls_server_refuses_garbage),
    };
    return cmocka_run_group_tests(tests, make_certs, remove_certs);
}
