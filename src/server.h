/* server.h - the composition root: the process with its N worker threads,
 * each with its own libuv loop, its own SO_REUSEPORT listener, its
 * connections and its hub, and the main thread whose loop runs the bus,
 * signals and shutdown. It wires the layers together: the router's accept
 * on each listener, the bus's hooks to the workers' inboxes, the metrics
 * view. Threads meet only through inboxes. */
#ifndef WSFAN_SERVER_H
#define WSFAN_SERVER_H

#include "core/config.h"

struct tls_ctx;
struct token_key;

/* Binds, starts the workers and runs until SIGTERM/SIGINT has shut every
 * connection down; on SIGHUP, reads the configuration again from argv (the
 * file, the environment, the flags: config_load) and applies what can
 * change live, and loads the TLS certificate again. token_key is the key
 * of --auth jwt (NULL otherwise), tls the context of --tls-cert (NULL:
 * plaintext; the server takes its own reference); cfg, token_key, tls and
 * argv are borrowed until return. Returns the process exit
 * status. */
int server_run(const struct config *cfg, const struct token_key *token_key, struct tls_ctx *tls, int argc,
               char **argv);

#endif
