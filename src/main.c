/* main.c - reads the configuration and runs the server. */
#include <jansson.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "core/log.h"
#include "server.h"

int main(int argc, char **argv)
{
    static struct config cfg;
    switch (config_parse(&cfg, argc, argv)) {
    case CONFIG_EXIT: return 0;
    case CONFIG_ERROR: return 2;
    default: break;
    }
    log_set_level(cfg.log_level);
    /* Reconnect jitter must differ between nodes restarted together. */
    srand((unsigned)getpid() ^ (unsigned)time(NULL));
    return server_run(&cfg);
}
