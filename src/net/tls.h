/* tls.h - a TLS engine through memory BIOs, for a socket driven by a libuv
 * loop: ciphertext in -> plaintext out, plaintext in -> ciphertext out,
 * and the handshake in between. Knows no connection, socket or loop: the
 * caller moves the bytes. Serves both ends: the server side of a client
 * connection (net/conn.c) and the client side of an outgoing link (SNI and
 * certificate verification, e.g. for rediss://).
 *
 * A struct tls_ctx (certificates, versions, ciphers) is built on any thread
 * and is read-only afterwards, so the workers share it; it is refcounted,
 * and every session holds a reference of its own, so that a reload that
 * replaces it leaves the sessions already open on the old one. A struct
 * tls session belongs to one thread; tls_idle_tick gives back what an
 * idle one holds.
 * TLS 1.2 and 1.3 only, forward-secret AEAD ciphers only, ALPN http/1.1. */
#ifndef WSFAN_TLS_H
#define WSFAN_TLS_H

#include <stddef.h>
#include <sys/types.h>

struct tls_ctx;
struct tls;

#define TLS_ERR_MAX 256
/* The largest plaintext one record carries: what a writer gathers before
 * one tls_write, so that a flush costs as few records as possible. */
#define TLS_RECORD_MAX 16384

/* A server context from PEM files: cert_file holds the certificate then its
 * chain, key_file the private key. Returns it with one reference, or NULL
 * with a one-line reason in err (what failed and why: unreadable, not PEM,
 * key does not match). */
struct tls_ctx *tls_ctx_server_create(const char *cert_file, const char *key_file, char *err, size_t cap);

/* A client context that verifies the peer against ca_file (PEM), or the
 * system's trusted certificates when ca_file is NULL; with cert_file and
 * key_file (PEM, both or neither) it shows that certificate to a server
 * that asks for one. Returns it with one reference, or NULL with the
 * reason in err. */
struct tls_ctx *tls_ctx_client_create(const char *ca_file, const char *cert_file, const char *key_file, char *err,
                                      size_t cap);

/* Takes and drops references; the last unref frees (NULL: nothing).
 * Thread-safe. */
void tls_ctx_ref(struct tls_ctx *ctx);
void tls_ctx_unref(struct tls_ctx *ctx);

/* A session on ctx (it takes its own reference to it). With a client
 * context, server_name is sent as SNI and the certificate must name it;
 * a server context ignores it. NULL when out of memory. */
struct tls *tls_create(struct tls_ctx *ctx, const char *server_name);
void tls_destroy(struct tls *t);

/* Ciphertext from the peer (copied). Returns 0, or -1 when out of memory. */
int tls_feed(struct tls *t, const void *buf, size_t len);

/* Results of tls_read and tls_write besides a byte count. */
enum { TLS_WANT = 0, TLS_CLOSED = -1, TLS_ERROR = -2 };

/* Plaintext out: advances the handshake with what was fed, then decrypts.
 * Returns the bytes put in buf (> 0), TLS_WANT when it needs more
 * ciphertext, TLS_CLOSED once the peer sent close_notify, or TLS_ERROR
 * (tls_error says why). Call it until it returns TLS_WANT: one feed can
 * hold several records. A handshake may leave ciphertext to send
 * (tls_out_pending) whatever it returns. */
ssize_t tls_read(struct tls *t, void *buf, size_t cap);

/* Plaintext in, once tls_handshake_done: encrypts all of buf (records of
 * at most TLS_RECORD_MAX bytes) into the ciphertext waiting to be sent.
 * Returns len, or TLS_ERROR. */
ssize_t tls_write(struct tls *t, const void *buf, size_t len);

/* Starts the handshake of a client session (a server waits for the
 * client's hello). Returns 0 or TLS_ERROR. */
int tls_connect(struct tls *t);

/* Queues a close_notify alert (once); send it with the rest. */
void tls_close_notify(struct tls *t);

/* Ciphertext waiting to be sent. A writer that may be cut short peeks at
 * it (*len bytes, NULL when none) and consumes what the socket took; the
 * buffer is freed once all is consumed. A writer that keeps the buffer
 * until its write completes takes it whole (freed with free(); NULL with
 * *len 0 when there is none). */
size_t tls_out_pending(const struct tls *t);
const char *tls_out_peek(const struct tls *t, size_t *len);
void tls_out_consume(struct tls *t, size_t n);
char *tls_out_take(struct tls *t, size_t *len);

/* Call it once per tick: a session that had no ciphertext in or out since
 * the last call, and has none waiting, gives back its input BIO's buffer
 * (SSL's record buffers go back after each use, the output's once sent),
 * so an idle session holds OpenSSL's state only. Busy ones keep it: a new
 * BIO costs more than encrypting a small message. */
void tls_idle_tick(struct tls *t);

/* True once the handshake is over (both sides agreed on keys). */
int tls_handshake_done(const struct tls *t);

/* Why the last TLS_ERROR happened: one line, e.g. "unsupported protocol"
 * or "certificate verify failed: hostname mismatch"; "" when none. */
const char *tls_error(const struct tls *t);

#endif
