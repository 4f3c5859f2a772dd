/* command.c - client commands from JSON text to a checked struct command.
 * See command.h. */
#include "command.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int refuse(struct command_error *err, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int refuse(struct command_error *err, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    err->code = code;
    return -1;
}

/* A required name: bad_command when missing or not a string, invalid_code
 * when it breaks the rules of PROTOCOL.md section 4. */
static int parse_name(json_t *body, const char *key, const char *invalid_code, char out[NAME_MAX_LEN + 1],
                      struct command_error *err)
{
    json_t *v = json_object_get(body, key);
    if (!json_is_string(v))
        return refuse(err, "bad_command", "%s is required and must be a string", key);
    if (!name_valid(json_string_value(v), json_string_length(v)))
        return refuse(err, invalid_code, "%s must be 1 to 128 characters of A-Z a-z 0-9 _ . : -", key);
    strcpy(out, json_string_value(v));
    return 0;
}

static int parse_bool(json_t *body, const char *key, int dflt, int *out, struct command_error *err)
{
    json_t *v = json_object_get(body, key);
    if (v && !json_is_boolean(v))
        return refuse(err, "bad_command", "%s must be true or false", key);
    *out = v ? json_is_true(v) : dflt;
    return 0;
}

/* An optional offset; *present tells whether it was there. */
static int parse_offset(json_t *body, const char *key, int *present, struct offset *out, struct command_error *err)
{
    json_t *v = json_object_get(body, key);
    *present = v != NULL;
    if (v && !(json_is_string(v) && strlen(json_string_value(v)) == json_string_length(v) &&
               offset_parse(json_string_value(v), out) == 0))
        return refuse(err, "bad_command", "%s must be an offset string such as \"1732312345678-0\"", key);
    return 0;
}

static int parse_data(json_t *body, struct command *cmd, struct command_error *err)
{
    json_t *v = json_object_get(body, "data");
    if (!v)
        return refuse(err, "bad_command", "data is required");
    if (!(cmd->data = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)))
        return refuse(err, "unavailable", "out of memory");
    cmd->data_len = strlen(cmd->data);
    return 0;
}

static int parse_limit(json_t *body, int *out, struct command_error *err)
{
    json_t *v = json_object_get(body, "limit");
    *out = HISTORY_DEFAULT_LIMIT;
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > HISTORY_MAX_LIMIT)
        return refuse(err, "bad_command", "limit must be an integer from 1 to %d", HISTORY_MAX_LIMIT);
    *out = (int)json_integer_value(v);
    return 0;
}

/* ref must be a string of at most 64 bytes or an integer; its JSON text
 * goes to out (REF_TEXT_MAX holds the worst case: 64 escaped bytes). */
static int parse_ref(json_t *ref, char out[REF_TEXT_MAX], struct command_error *err)
{
    out[0] = '\0';
    if (!ref)
        return 0;
    if (!(json_is_string(ref) && json_string_length(ref) <= REF_MAX_LEN) && !json_is_integer(ref))
        return refuse(err, "bad_command", "ref must be a string of at most 64 bytes or an integer");
    size_t n = json_dumpb(ref, out, REF_TEXT_MAX - 1, JSON_ENCODE_ANY);
    out[n < REF_TEXT_MAX ? n : 0] = '\0';
    return 0;
}

static const char *const command_names[] = {
    [CMD_JOIN] = "join",           [CMD_LEAVE] = "leave",     [CMD_PUBLISH] = "publish",
    [CMD_SEND] = "send",           [CMD_BROADCAST] = "broadcast", [CMD_HISTORY] = "history",
    [CMD_PRESENCE] = "presence",   [CMD_PING] = "ping",
};

static int parse_fields(json_t *body, struct command *cmd, struct command_error *err)
{
    switch (cmd->type) {
    case CMD_JOIN:
        return parse_name(body, "room", "room_invalid", cmd->room, err) ||
               parse_offset(body, "since", &cmd->has_since, &cmd->since, err);
    case CMD_LEAVE:
    case CMD_PRESENCE:
        return parse_name(body, "room", "room_invalid", cmd->room, err);
    case CMD_PUBLISH:
        return parse_name(body, "room", "room_invalid", cmd->room, err) ||
               parse_bool(body, "ephemeral", 0, &cmd->ephemeral, err) ||
               parse_bool(body, "echo", 1, &cmd->echo, err) || parse_data(body, cmd, err);
    case CMD_SEND:
        return parse_name(body, "user", "user_invalid", cmd->user, err) || parse_data(body, cmd, err);
    case CMD_BROADCAST:
        return parse_data(body, cmd, err);
    case CMD_HISTORY:
        return parse_name(body, "room", "room_invalid", cmd->room, err) || parse_limit(body, &cmd->limit, err) ||
               parse_offset(body, "before", &cmd->has_before, &cmd->before, err);
    case CMD_PING:
        return 0;
    }
    return 0;
}

int command_parse(const char *text, size_t len, struct command *cmd, struct command_error *err)
{
    memset(cmd, 0, sizeof *cmd);
    json_error_t jerr;
    json_t *body = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    int r = -1;
    if (!json_is_object(body)) {
        refuse(err, "bad_json", "%s", body ? "a command must be a JSON object" : jerr.text);
        goto done;
    }
    if (parse_ref(json_object_get(body, "ref"), cmd->ref, err))
        goto done;
    json_t *type = json_object_get(body, "type");
    if (!json_is_string(type)) {
        refuse(err, "bad_command", "type is required and must be a string");
        goto done;
    }
    size_t i = 0;
    /* Whole strings: "ping\u0000x" is not "ping". */
    while (i < sizeof command_names / sizeof command_names[0] &&
           (strlen(command_names[i]) != json_string_length(type) || strcmp(json_string_value(type), command_names[i])))
        i++;
    if (i == sizeof command_names / sizeof command_names[0]) {
        refuse(err, "unknown_type", "unknown command type");
        goto done;
    }
    cmd->type = (enum command_type)i;
    r = parse_fields(body, cmd, err) ? -1 : 0;
done:
    json_decref(body);
    return r;
}

void command_free(struct command *cmd)
{
    free(cmd->data);
    cmd->data = NULL;
}

