/* protocol.h - the client protocol of PROTOCOL.md sections 1 to 3: JSON
 * commands in, JSON events out. Validates and dispatches each command;
 * never writes to another connection's socket. Worker thread only. */
#ifndef WSFAN_PROTOCOL_H
#define WSFAN_PROTOCOL_H

#include <stddef.h>

#include "names.h"
#include "store.h"

#define PROTOCOL_SUBPROTOCOL "wsfan.v1"
#define REF_MAX_LEN 64
#define REF_TEXT_MAX 400 /* a ref of at most 64 bytes, serialized with escapes */
#define HISTORY_DEFAULT_LIMIT 50
#define HISTORY_MAX_LIMIT 1000
#define PENDING_MAX 256 /* commands of one connection waiting for the bus */

struct conn;

enum command_type {
    CMD_JOIN, CMD_LEAVE, CMD_PUBLISH, CMD_SEND, CMD_BROADCAST, CMD_HISTORY, CMD_PRESENCE, CMD_PING,
};

/* One client command, checked for shape: every field present where
 * required, of the right type, names valid. Membership and permissions are
 * checked when it runs. */
struct command {
    enum command_type type;
    char ref[REF_TEXT_MAX];        /* the ref as JSON text, or "" */
    char room[NAME_MAX_LEN + 1];   /* join, leave, publish, history, presence */
    char user[NAME_MAX_LEN + 1];   /* send */
    char *data;                    /* publish, send, broadcast: JSON text (owned) */
    size_t data_len;
    int ephemeral, echo;           /* publish */
    int has_since;                 /* join */
    struct offset since;
    int limit;                     /* history */
    int has_before;
    struct offset before;
};

/* A refused command: the error code of PROTOCOL.md section 3 and a line
 * for humans. */
struct command_error {
    const char *code;
    char message[128];
};

/* Parses one text message into cmd. Returns 0, or -1 with err filled in
 * (cmd->ref is still set when the ref itself was fine, so the error can
 * carry it). Free cmd with command_free() either way. Pure: no
 * connection, no I/O; any thread. */
int protocol_parse(const char *text, size_t len, struct command *cmd, struct command_error *err);
void command_free(struct command *cmd);

/* Sends the welcome event to a connection that was just upgraded. */
void protocol_welcome(struct conn *c);

/* Handles one complete, UTF-8-valid text message from c. text is borrowed
 * until return. Errors are answered with an error event; the connection
 * stays open. */
void protocol_handle(struct conn *c, const char *text, size_t len);

/* Forgets c's rooms and presence; called once when c starts closing. */
void protocol_conn_closed(struct conn *c);

#endif
