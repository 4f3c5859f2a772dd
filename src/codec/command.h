/* command.h - one client command (docs/protocol.md section 2) parsed from its
 * JSON text and checked for shape: every field present where required, of
 * the right type, names valid (docs/protocol.md section 4), refs and limits in range.
 * Membership and permissions are checked when it runs (app/client.c).
 * Pure: no connection, no I/O; safe on any thread. */
#ifndef WSFAN_COMMAND_H
#define WSFAN_COMMAND_H

#include <stddef.h>

#include "core/names.h"
#include "codec/offset.h"
#include "core/error.h"

#define REF_MAX_LEN 64
#define REF_TEXT_MAX 400 /* a ref of at most 64 bytes, serialized with escapes */
#define HISTORY_DEFAULT_LIMIT 50
#define HISTORY_MAX_LIMIT 1000
#define PUBLISH_KEY_MAX 64 /* bytes of a publish's idempotency key */

enum command_type {
    CMD_JOIN, CMD_LEAVE, CMD_PUBLISH, CMD_SEND, CMD_BROADCAST, CMD_HISTORY, CMD_PRESENCE, CMD_PING, CMD_REFRESH,
};
#define CMD_COUNT (CMD_REFRESH + 1)

/* "join", "leave", ... as the type field spells it. */
const char *command_type_name(enum command_type type);

/* One client command. */
struct command {
    enum command_type type;
    char ref[REF_TEXT_MAX];        /* the ref as JSON text, or "" */
    char room[NAME_MAX_LEN + 1];   /* join, leave, publish, history, presence */
    char user[NAME_MAX_LEN + 1];   /* send */
    char *data;                    /* publish, send, broadcast: JSON text (owned) */
    size_t data_len;
    int ephemeral, echo;           /* publish */
    int has_key;                   /* publish: an idempotency key, without NUL bytes */
    char key[PUBLISH_KEY_MAX + 1];
    int has_since;                 /* join */
    struct offset since;
    int limit;                     /* history */
    int has_before;
    struct offset before;
    char *token;                   /* refresh: the token's text, NUL-terminated (owned) */
    size_t token_len;
};

/* A refused command: a WSFAN_E* of core/error.h and a line for humans. */
struct command_error {
    int code;
    char message[128];
};

/* The optional idempotency "key" of a publish body (a JSON object, as
 * jansson reads it): sets *has_key and copies it into key, or returns -1
 * with err filled in. The HTTP API reads its publish's key with it too. */
struct json_t;
int command_parse_key(struct json_t *body, int *has_key, char key[PUBLISH_KEY_MAX + 1], struct command_error *err);

/* Parses one text message into cmd. Returns 0, or -1 with err filled in
 * (cmd->ref is still set when the ref itself was fine, so the error can
 * carry it). Free cmd with command_free() either way. Pure: no
 * connection, no I/O; any thread. */
int command_parse(const char *text, size_t len, struct command *cmd, struct command_error *err);
void command_free(struct command *cmd);

/* The two paths of command_parse, for the tests that check they agree.
 * command_parse_compact reads a valid command written as compact JSON in
 * place and returns 0; it returns -1 for any other text (cmd may then hold
 * a partial result: command_free it). command_parse_general parses any
 * text through jansson. */
int command_parse_compact(const char *text, size_t len, struct command *cmd);
int command_parse_general(const char *text, size_t len, struct command *cmd, struct command_error *err);

#endif
