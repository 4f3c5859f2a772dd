/* main.c - reads the configuration and runs the server. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "core/log.h"
#include "core/map.h"
#include "core/siphash.h"
#include "server.h"

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
    switch (config_parse(&cfg, argc, argv)) {
    case CONFIG_EXIT: return 0;
    case CONFIG_ERROR: return 2;
    default: break;
    }
    log_set_level(cfg.log_level);
    if (seed_maps())
        return 1;
    /* Reconnect jitter must differ between nodes restarted together. */
    srand((unsigned)getpid() ^ (unsigned)time(NULL));
    return server_run(&cfg);
}
