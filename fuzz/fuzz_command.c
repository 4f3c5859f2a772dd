/* fuzz_command.c - libFuzzer target for command.c: parses the input as one
 * client command and checks what comes out. Accepted: a known type, the
 * fields its type needs (valid names, data that is JSON text of data_len
 * bytes, limit in range), a ref that is JSON text of a string or an
 * integer. Refused: -1 with one of the errors of docs/protocol.md section 3
 * (a WSFAN_E* of core/error.h) and a message. Either way command_free releases everything. And
 * command_parse, which reads compact commands in place, gives exactly what
 * command_parse_general (jansson alone) gives. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/command.h"

/* What a parse may refuse with ("unavailable" to the client when out of
 * memory). */
static const int codes[] = {WSFAN_EBAD_JSON,     WSFAN_EBAD_COMMAND,  WSFAN_EUNKNOWN_TYPE,
                            WSFAN_EROOM_INVALID, WSFAN_EUSER_INVALID, WSFAN_ENOMEM};

static void check_name(const char *s)
{
    size_t n = strnlen(s, NAME_MAX_LEN + 1);
    if (n > NAME_MAX_LEN || !name_valid(s, n))
        abort();
}

/* s must be JSON text that parses back to a value (any kind when any). */
static json_t *load(const char *s, size_t len, int any)
{
    json_error_t err;
    json_t *v = json_loadb(s, len, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &err);
    if (!v || (!any && !json_is_string(v) && !json_is_integer(v)))
        abort();
    return v;
}

static void check_accepted(const struct command *cmd)
{
    switch (cmd->type) {
    case CMD_JOIN:
    case CMD_LEAVE:
    case CMD_PRESENCE:
    case CMD_HISTORY:
    case CMD_PUBLISH:
        check_name(cmd->room);
        break;
    case CMD_SEND:
        check_name(cmd->user);
        break;
    case CMD_BROADCAST:
    case CMD_PING:
        break;
    case CMD_REFRESH:
        if (!cmd->token || strlen(cmd->token) != cmd->token_len)
            abort();
        break;
    default:
        abort();
    }
    int has_data = cmd->type == CMD_PUBLISH || cmd->type == CMD_SEND || cmd->type == CMD_BROADCAST;
    if (has_data != (cmd->data != NULL))
        abort();
    if (cmd->data) {
        if (strlen(cmd->data) != cmd->data_len)
            abort();
        json_decref(load(cmd->data, cmd->data_len, 1));
    }
    if (cmd->type == CMD_PUBLISH && ((cmd->ephemeral != 0 && cmd->ephemeral != 1) || (cmd->echo != 0 && cmd->echo != 1)))
        abort();
    if (cmd->has_key && strlen(cmd->key) > PUBLISH_KEY_MAX)
        abort();
    if (cmd->type == CMD_HISTORY && (cmd->limit < 1 || cmd->limit > HISTORY_MAX_LIMIT))
        abort();
    if ((cmd->has_since != 0 && cmd->has_since != 1) || (cmd->has_before != 0 && cmd->has_before != 1))
        abort();
}

/* Both parses must agree field by field (err only on its code). */
static void check_same(int rc, const struct command *a, const struct command_error *ea, int rc_general,
                       const struct command *b, const struct command_error *eb)
{
    if (rc != rc_general || strcmp(a->ref, b->ref))
        abort();
    if (rc) {
        if (ea->code != eb->code)
            abort();
        return;
    }
    if (a->type != b->type || strcmp(a->room, b->room) || strcmp(a->user, b->user) || a->data_len != b->data_len ||
        (a->data && memcmp(a->data, b->data, a->data_len)) || (a->data == NULL) != (b->data == NULL) ||
        a->ephemeral != b->ephemeral || a->echo != b->echo || a->has_since != b->has_since ||
        memcmp(&a->since, &b->since, sizeof a->since) || a->limit != b->limit || a->has_before != b->has_before ||
        memcmp(&a->before, &b->before, sizeof a->before) || (a->token == NULL) != (b->token == NULL) ||
        (a->token && strcmp(a->token, b->token)) || a->has_key != b->has_key || strcmp(a->key, b->key))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct command general;
    struct command_error general_err;
    memset(&general_err, 0, sizeof general_err);
    int rc_general = command_parse_general((const char *)data, size, &general, &general_err);

    struct command cmd;
    struct command_error err;

    memset(&err, 0, sizeof err);
    int rc = command_parse((const char *)data, size, &cmd, &err);
    check_same(rc, &cmd, &err, rc_general, &general, &general_err);
    command_free(&general);
    if (rc == 0) {
        check_accepted(&cmd);
    } else {
        size_t i = 0;
        if (rc != -1 || !err.code)
            abort();
        while (i < sizeof codes / sizeof codes[0] && err.code != codes[i])
            i++;
        if (i == sizeof codes / sizeof codes[0] || !memchr(err.message, '\0', sizeof err.message) || !err.message[0])
            abort();
        if (err.code == WSFAN_EBAD_JSON && cmd.ref[0])
            abort();
    }
    /* The ref, when there is one, is the JSON text of a string of at most
     * 64 bytes or of an integer. */
    size_t ref_len = strnlen(cmd.ref, REF_TEXT_MAX);
    if (ref_len == REF_TEXT_MAX)
        abort();
    if (ref_len) {
        json_t *ref = load(cmd.ref, ref_len, 0);
        if (json_is_string(ref) && json_string_length(ref) > REF_MAX_LEN)
            abort();
        json_decref(ref);
    }
    command_free(&cmd);
    return 0;
}
