/* main.c - reads the configuration and the key of --auth jwt, seeds the
 * hash maps, and runs the server; or runs the `wsfan token` subcommand
 * (token_cmd.c). */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codec/token.h"
#include "codec/ws.h"
#include "core/config.h"
#include "core/log.h"
#include "core/map.h"
#include "core/siphash.h"
#include "net/tls.h"
#include "server.h"
#include "token_cmd.h"

#define KEY_FILE_MAX (1 << 20)
#define SECRET_MIN_ADVISED 32

/* The whole file at path (malloc'ed, *len bytes), or NULL with errno set. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = f ? malloc(KEY_FILE_MAX) : NULL;
    if (buf) {
        *len = fread(buf, 1, KEY_FILE_MAX, f);
        if (ferror(f) || *len == KEY_FILE_MAX) {
            errno = ferror(f) ? EIO : EFBIG;
            free(buf);
            buf = NULL;
        }
    }
    if (f)
        fclose(f);
    return buf;
}

/* The key of --auth jwt (docs/protocol.md section 1a), read once, before
 * the workers start. Returns 0 with *out set (NULL with --auth none), or
 * -1 after printing the flag and what to fix. */
static int load_key(const struct config *cfg, struct token_key **out)
{
    *out = NULL;
    if (cfg->auth != CONFIG_AUTH_JWT)
        return 0;
    if (cfg->jwt_secret[0]) {
        size_t len = strlen(cfg->jwt_secret);
        if (len < SECRET_MIN_ADVISED)
            log_warn("--jwt-secret is %zu bytes: anyone with one token can try to guess it offline; use %d random "
                     "bytes or more",
                     len, SECRET_MIN_ADVISED);
        if (!(*out = token_key_secret(cfg->jwt_secret, len)))
            fprintf(stderr, "wsfan: --jwt-secret: out of memory\n");
        return *out ? 0 : -1;
    }
    size_t len;
    const char *why;
    char *pem = read_file(cfg->jwt_public_key, &len);
    if (!pem) {
        fprintf(stderr, "wsfan: --jwt-public-key=%s: cannot read it: %s\n", cfg->jwt_public_key, strerror(errno));
        return -1;
    }
    *out = token_key_pem(pem, len, &why);
    free(pem);
    if (!*out) {
        fprintf(stderr, "wsfan: --jwt-public-key=%s: %s\n", cfg->jwt_public_key, why);
        return -1;
    }
    return 0;
}

/* The certificate and key of --tls-cert, loaded and checked against each
 * other. Returns 0 with *out set (NULL without TLS), or -1 after printing
 * the files and what is wrong with them. */
static int load_tls(const struct config *cfg, struct tls_ctx **out)
{
    char err[2 * PATH_MAX + 512];
    *out = NULL;
    if (!cfg->tls_cert[0])
        return 0;
    if (!(*out = tls_ctx_server_create(cfg->tls_cert, cfg->tls_key, err, sizeof err))) {
        fprintf(stderr, "wsfan: --tls-cert: %s\n", err);
        return -1;
    }
    return 0;
}

/* With rediss://, the files of --redis-ca, --redis-cert and --redis-key
 * are read now, so that a bad one stops the start with what to fix (each
 * Redis link reads them again as it starts). Returns 0, or -1 after
 * printing what is wrong. */
static int check_redis_tls(const struct config *cfg)
{
    if (!config_redis_tls(cfg))
        return 0;
    char err[2 * PATH_MAX + 512];
    struct tls_ctx *ctx = tls_ctx_client_create(cfg->redis_ca[0] ? cfg->redis_ca : NULL,
                                                cfg->redis_cert[0] ? cfg->redis_cert : NULL,
                                                cfg->redis_key[0] ? cfg->redis_key : NULL, err, sizeof err);
    if (!ctx) {
        fprintf(stderr, "wsfan: rediss://: %s\n", err);
        return -1;
    }
    tls_ctx_unref(ctx);
    return 0;
}

/* Room and user ids are hashed under a key nobody outside the process
 * knows, drawn before any map exists (core/map.h). */
static int seed_maps(void)
{
    uint8_t key[SIPHASH_KEY_LEN];
    if (siphash_key_random(key)) {
        fprintf(stderr, "wsfan: cannot read 16 random bytes for the hash key: %s\n", strerror(errno));
        return -1;
    }
    map_hash_key_set(key);
    return 0;
}

int main(int argc, char **argv)
{
    static struct config cfg;
    if (argc > 1 && !strcmp(argv[1], "token"))
        return token_cmd_main(argc - 1, argv + 1);
    int parsed = config_parse(&cfg, argc, argv);
    if (parsed == CONFIG_EXIT)
        return 0;
    if (parsed == CONFIG_ERROR)
        return 2;
    log_set_level(cfg.log_level);
    log_set_format(cfg.log_format);
    if (seed_maps())
        return 1;
    if (ws_handshake_prepare()) {
        fprintf(stderr, "wsfan: libcrypto cannot compute SHA-1, which the WebSocket handshake needs\n");
        return 1;
    }
    struct token_key *key;
    struct tls_ctx *tls;
    if (load_key(&cfg, &key))
        return 2;
    if (load_tls(&cfg, &tls) || check_redis_tls(&cfg)) {
        token_key_destroy(key);
        tls_ctx_unref(tls);
        return 2;
    }
    if (parsed == CONFIG_CHECK) {
        token_key_destroy(key);
        tls_ctx_unref(tls);
        printf("configuration OK\n");
        return 0;
    }
    if (key)
        log_info("--auth jwt: clients need %s tokens%s", token_alg_name(token_key_alg(key)),
                 cfg.allow_anonymous ? ", or connect anonymous" : "");
    /* Reconnect jitter must differ between nodes restarted together. */
    srand((unsigned)getpid() ^ (unsigned)time(NULL));
    int status = server_run(&cfg, key, tls, argc, argv);
    token_key_destroy(key);
    tls_ctx_unref(tls);
    return status;
}
