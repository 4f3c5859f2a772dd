/* tls.c - the TLS engine of tls.h on OpenSSL: one SSL per session between
 * two BIOs in memory: in, OpenSSL's memory BIO that the caller feeds with
 * ciphertext; out, a BIO of ours that appends the ciphertext to a buffer
 * the caller writes from in place or takes whole (no copy, and none of the
 * zeroing and clearing a memory BIO does on each write). Runs on the
 * thread of its session; contexts are shared. */
#include "net/tls.h"

#include <errno.h>
#include <arpa/inet.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct tls {
    SSL *ssl;
    BIO *in, *out;      /* owned by ssl */
    char *out_buf;      /* ciphertext to send (malloc'ed; tls_out_take hands it over) */
    size_t out_off;     /* how much of it went out (tls_out_consume) */
    size_t out_len, out_cap;
    char error[TLS_ERR_MAX];
    unsigned char shut; /* close_notify queued */
    unsigned char busy; /* ciphertext in or out since the last tls_idle_tick */
};

#define OUT_BUF_MIN 4096

/* The TLS 1.2 suites: ECDHE (forward secrecy) with an AEAD cipher, as
 * Mozilla's "intermediate" list minus the finite-field DHE ones. TLS 1.3
 * keeps OpenSSL's default suites, which are all of that kind. */
static const char TLS12_CIPHERS[] = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                                    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                                    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/* ALPN, wire format: one length byte, then the name. */
static const unsigned char ALPN_HTTP11[] = "\x08http/1.1";

/* The reason of OpenSSL's last error (emptying its queue), after prefix. */
static void take_error(char *err, size_t cap, const char *prefix)
{
    unsigned long e = ERR_peek_last_error();
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    snprintf(err, cap, "%s%s%s", prefix, reason && *prefix ? ": " : "", reason ? reason : (*prefix ? "" : "unknown"));
    ERR_clear_error();
}

/* The server picks http/1.1; a client that offers ALPN without it (h2
 * only) gets the no_application_protocol alert rather than a protocol it
 * would not understand. */
static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    unsigned char *chosen;
    if (SSL_select_next_proto(&chosen, outlen, ALPN_HTTP11, sizeof ALPN_HTTP11 - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = chosen;
    return SSL_TLSEXT_ERR_OK;
}

/* Versions, ciphers and options both sides share. */
static SSL_CTX *ctx_new(const SSL_METHOD *method, char *err, size_t cap)
{
    SSL_CTX *ctx = SSL_CTX_new(method);
    if (!ctx) {
        take_error(err, cap, "cannot create a TLS context");
        return NULL;
    }
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) || !SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS)) {
        take_error(err, cap, "cannot set TLS versions and ciphers");
        SSL_CTX_free(ctx);
        return NULL;
    }
    /* No renegotiation (a CPU cost a client could impose); no compression
     * (CRIME). The record buffers (34k) go back after each use, as nginx
     * does: kept until a session was seen idle instead, 2,000 connections
     * opened at once left 25k each, not 17k (malloc keeps what was freed). */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    /* Level 2 whatever the system's policy: RSA and DH of 2048 bits or
     * more, no SHA-1 signatures. */
    SSL_CTX_set_security_level(ctx, 2);
    return ctx;
}

/* 0 when path can be opened for reading, else -1 with "PATH: why" in err
 * (OpenSSL would only say "system lib"). */
static int readable(const char *path, char *err, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (f) {
        fclose(f);
        return 0;
    }
    snprintf(err, cap, "%s: %s", path, strerror(errno));
    return -1;
}

/* The certificate chain of cert_file and its key from key_file into ctx,
 * checked against each other. Returns 0, or -1 with the reason in err. */
static int use_certificate(SSL_CTX *ctx, const char *cert_file, const char *key_file, char *err, size_t cap)
{
    char what[PATH_MAX + 64];
    if (readable(cert_file, err, cap) || readable(key_file, err, cap))
        return -1;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        snprintf(what, sizeof what, "%s: cannot load the certificate chain", cert_file);
        take_error(err, cap, what);
        return -1;
    }
    /* OpenSSL checks that the key matches the certificate as it loads it. */
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH)
            snprintf(what, sizeof what, "%s does not match the certificate of %s", key_file, cert_file);
        else
            snprintf(what, sizeof what, "%s: cannot load the private key", key_file);
        take_error(err, cap, what);
        return -1;
    }
    return 0;
}

struct tls_ctx *tls_ctx_server_create(const char *cert_file, const char *key_file, char *err, size_t cap)
{
    SSL_CTX *ctx = ctx_new(TLS_server_method(), err, cap);
    if (!ctx)
        return NULL;
    if (use_certificate(ctx, cert_file, key_file, err, cap)) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
    return (struct tls_ctx *)ctx;
}

struct tls_ctx *tls_ctx_client_create(const char *ca_file, const char *cert_file, const char *key_file, char *err,
                                      size_t cap)
{
    SSL_CTX *ctx = ctx_new(TLS_client_method(), err, cap);
    if (!ctx)
        return NULL;
    if (ca_file && readable(ca_file, err, cap)) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL) : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        char what[PATH_MAX + 64];
        snprintf(what, sizeof what, "%s: cannot load the trusted certificates", ca_file ? ca_file : "system");
        take_error(err, cap, what);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (cert_file && use_certificate(ctx, cert_file, key_file, err, cap)) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    return (struct tls_ctx *)ctx;
}

void tls_ctx_ref(struct tls_ctx *ctx)
{
    SSL_CTX_up_ref((SSL_CTX *)ctx);
}

void tls_ctx_unref(struct tls_ctx *ctx)
{
    SSL_CTX_free((SSL_CTX *)ctx); /* NULL-safe */
}

/* A client names the server it wants (SNI) and checks that the certificate
 * is for it: a DNS name, or an address (which SNI does not carry). */
static int set_peer_name(SSL *ssl, const char *name)
{
    unsigned char addr[16];
    if (inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1)
        return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1 ? 0 : -1;
    return SSL_set_tlsext_host_name(ssl, name) == 1 && SSL_set1_host(ssl, name) == 1 ? 0 : -1;
}

/* ---- the output BIO: appends to t->out_buf ---- */

static int out_write(BIO *b, const char *data, int len)
{
    struct tls *t = BIO_get_data(b);
    if (len <= 0)
        return 0;
    if (t->out_len + (size_t)len > t->out_cap) {
        size_t cap = t->out_cap ? t->out_cap : OUT_BUF_MIN;
        while (cap < t->out_len + (size_t)len)
            cap *= 2;
        char *grown = realloc(t->out_buf, cap);
        if (!grown)
            return -1;
        t->out_buf = grown;
        t->out_cap = cap;
    }
    memcpy(t->out_buf + t->out_len, data, (size_t)len);
    t->out_len += (size_t)len;
    t->busy = 1;
    return len;
}

/* What OpenSSL asks of a write BIO: flushes (nothing to do) and how much
 * waits. Anything else is not supported (0). */
static long out_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    (void)ptr;
    struct tls *t = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_FLUSH: return 1;
    case BIO_CTRL_PENDING:
    case BIO_CTRL_WPENDING: return (long)(t->out_len - t->out_off);
    default: return 0;
    }
}

static BIO_METHOD *out_method;
static pthread_once_t out_method_once = PTHREAD_ONCE_INIT;

/* Made once per process and kept: every session's output BIO uses it. */
static void out_method_create(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "wsfan TLS output");
    if (m && BIO_meth_set_write(m, out_write) && BIO_meth_set_ctrl(m, out_ctrl))
        out_method = m;
    else
        BIO_meth_free(m);
}

static BIO *out_bio(struct tls *t)
{
    pthread_once(&out_method_once, out_method_create);
    BIO *b = out_method ? BIO_new(out_method) : NULL;
    if (b) {
        BIO_set_data(b, t);
        BIO_set_init(b, 1);
    }
    return b;
}

/* An empty memory BIO where an empty read means "more to come", not the end. */
static BIO *mem_bio(void)
{
    BIO *b = BIO_new(BIO_s_mem());
    if (b)
        BIO_set_mem_eof_return(b, -1);
    return b;
}

struct tls *tls_create(struct tls_ctx *tctx, const char *server_name)
{
    SSL_CTX *ctx = (SSL_CTX *)tctx;
    struct tls *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->ssl = SSL_new(ctx); /* holds a reference to ctx */
    t->in = mem_bio();
    t->out = out_bio(t);
    if (!t->ssl || !t->in || !t->out)
        goto fail;
    SSL_set_bio(t->ssl, t->in, t->out);
    if (SSL_is_server(t->ssl))
        SSL_set_accept_state(t->ssl);
    else {
        SSL_set_connect_state(t->ssl);
        if (server_name && set_peer_name(t->ssl, server_name))
            goto fail;
    }
    return t;
fail:
    if (t->ssl)
        SSL_free(t->ssl); /* and the BIOs, once set */
    else {
        BIO_free(t->in);
        BIO_free(t->out);
    }
    ERR_clear_error();
    free(t);
    return NULL;
}

void tls_destroy(struct tls *t)
{
    if (!t)
        return;
    SSL_free(t->ssl);
    free(t->out_buf);
    free(t);
}

int tls_feed(struct tls *t, const void *buf, size_t len)
{
    t->busy = 1;
    while (len) {
        int n = len > INT_MAX ? INT_MAX : (int)len;
        if (BIO_write(t->in, buf, n) != n)
            return -1;
        buf = (const char *)buf + n;
        len -= (size_t)n;
    }
    return 0;
}

/* What an SSL call that returned r means for the caller. */
static ssize_t outcome(struct tls *t, int r)
{
    switch (SSL_get_error(t->ssl, r)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return TLS_WANT;
    case SSL_ERROR_ZERO_RETURN:
        return TLS_CLOSED;
    case SSL_ERROR_SSL: {
        /* A client that refused the server's certificate says why:
         * "certificate verify failed: hostname mismatch". */
        long verify = SSL_is_server(t->ssl) ? X509_V_OK : SSL_get_verify_result(t->ssl);
        take_error(t->error, sizeof t->error, "");
        if (verify != X509_V_OK) {
            size_t n = strlen(t->error);
            snprintf(t->error + n, sizeof t->error - n, ": %s", X509_verify_cert_error_string(verify));
        }
        return TLS_ERROR;
    }
    default:
        snprintf(t->error, sizeof t->error, "connection ended without close_notify");
        ERR_clear_error();
        return TLS_ERROR;
    }
}

ssize_t tls_read(struct tls *t, void *buf, size_t cap)
{
    size_t n = 0;
    int r = SSL_read_ex(t->ssl, buf, cap, &n);
    return r == 1 ? (ssize_t)n : outcome(t, r);
}

ssize_t tls_write(struct tls *t, const void *buf, size_t len)
{
    size_t n = 0;
    /* A memory BIO never fills: the write is complete or failed. */
    int r = SSL_write_ex(t->ssl, buf, len, &n);
    return r == 1 ? (ssize_t)n : outcome(t, r) == TLS_ERROR ? TLS_ERROR : TLS_WANT;
}

int tls_connect(struct tls *t)
{
    int r = SSL_do_handshake(t->ssl);
    return r == 1 || outcome(t, r) == TLS_WANT ? 0 : TLS_ERROR;
}

void tls_close_notify(struct tls *t)
{
    if (t->shut)
        return;
    t->shut = 1;
    if (SSL_is_init_finished(t->ssl))
        SSL_shutdown(t->ssl);
    ERR_clear_error();
}

size_t tls_out_pending(const struct tls *t)
{
    return t->out_len - t->out_off;
}

const char *tls_out_peek(const struct tls *t, size_t *len)
{
    *len = t->out_len - t->out_off;
    return *len ? t->out_buf + t->out_off : NULL;
}

/* The output holds nothing: its buffer was freed or handed over. */
static void out_forget(struct tls *t)
{
    t->out_buf = NULL;
    t->out_off = t->out_len = t->out_cap = 0;
}

void tls_out_consume(struct tls *t, size_t n)
{
    t->out_off += n;
    if (t->out_off < t->out_len)
        return;
    free(t->out_buf);
    out_forget(t);
}

char *tls_out_take(struct tls *t, size_t *len)
{
    char *buf = t->out_buf;
    *len = t->out_len - t->out_off;
    if (t->out_off)
        memmove(buf, buf + t->out_off, *len);
    out_forget(t);
    return buf;
}

int tls_handshake_done(const struct tls *t)
{
    return SSL_is_init_finished(t->ssl);
}

const char *tls_error(const struct tls *t)
{
    return t->error;
}

/* Whether b is drained but still holds a buffer. */
static int bio_idle_with_buffer(BIO *b)
{
    BUF_MEM *bm;
    return BIO_ctrl_pending(b) == 0 && BIO_get_mem_ptr(b, &bm) == 1 && bm->max > 0;
}

/* The input memory BIO keeps the largest buffer it ever held: a drained
 * one is replaced by an empty one (SSL_set0_rbio frees the old). When out
 * of memory the old one stays. The output holds nothing once sent. */
void tls_idle_tick(struct tls *t)
{
    BIO *fresh;
    if (!t->busy && !t->out_buf && bio_idle_with_buffer(t->in) && (fresh = mem_bio())) {
        SSL_set0_rbio(t->ssl, fresh);
        t->in = fresh;
    }
    t->busy = 0;
}
