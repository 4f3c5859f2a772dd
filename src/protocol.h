/* protocol.h - the client protocol of PROTOCOL.md sections 1 to 3: JSON
 * commands in, JSON events out. Validates and dispatches each command;
 * never writes to another connection's socket. Worker thread only. */
#ifndef WSFAN_PROTOCOL_H
#define WSFAN_PROTOCOL_H

#include <stddef.h>

#include "command.h"

#define PROTOCOL_SUBPROTOCOL "wsfan.v1"
#define PENDING_MAX 1024 /* commands of one connection waiting for the bus */

struct conn;


/* Sends the welcome event to a connection that was just upgraded. */
void protocol_welcome(struct conn *c);

/* Handles one complete, UTF-8-valid text message from c. text is borrowed
 * until return. Errors are answered with an error event; the connection
 * stays open. */
void protocol_handle(struct conn *c, const char *text, size_t len);

/* Forgets c's rooms and presence; called once when c starts closing. */
void protocol_conn_closed(struct conn *c);

#endif
