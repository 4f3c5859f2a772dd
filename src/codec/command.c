/* command.c - client commands from JSON text to a checked struct command.
 * See command.h. */
#include "codec/command.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/utf8.h"

static int refuse(struct command_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int refuse(struct command_error *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    err->code = code;
    return -1;
}

/* A required name: bad_command when missing or not a string, invalid_code
 * when it breaks the rules of docs/protocol.md section 4. */
static int parse_name(json_t *body, const char *key, int invalid_code, char out[NAME_MAX_LEN + 1],
                      struct command_error *err)
{
    json_t *v = json_object_get(body, key);
    if (!json_is_string(v))
        return refuse(err, WSFAN_EBAD_COMMAND, "%s is required and must be a string", key);
    if (!name_valid(json_string_value(v), json_string_length(v)))
        return refuse(err, invalid_code, "%s must be 1 to 128 characters of A-Z a-z 0-9 _ . : -", key);
    strcpy(out, json_string_value(v));
    return 0;
}

static int parse_bool(json_t *body, const char *key, int dflt, int *out, struct command_error *err)
{
    json_t *v = json_object_get(body, key);
    if (v && !json_is_boolean(v))
        return refuse(err, WSFAN_EBAD_COMMAND, "%s must be true or false", key);
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
        return refuse(err, WSFAN_EBAD_COMMAND, "%s must be an offset string such as \"1732312345678-0\"", key);
    return 0;
}

static int parse_data(json_t *body, struct command *cmd, struct command_error *err)
{
    json_t *v = json_object_get(body, "data");
    if (!v)
        return refuse(err, WSFAN_EBAD_COMMAND, "data is required");
    if (!(cmd->data = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)))
        return refuse(err, WSFAN_ENOMEM, "out of memory");
    cmd->data_len = strlen(cmd->data);
    return 0;
}

int command_parse_key(struct json_t *body, int *has_key, char key[PUBLISH_KEY_MAX + 1], struct command_error *err)
{
    json_t *v = json_object_get(body, "key");
    *has_key = v != NULL;
    if (!v)
        return 0;
    if (!json_is_string(v) || json_string_length(v) > PUBLISH_KEY_MAX ||
        strlen(json_string_value(v)) != json_string_length(v))
        return refuse(err, WSFAN_EBAD_COMMAND, "key must be a string of at most %d bytes", PUBLISH_KEY_MAX);
    strcpy(key, json_string_value(v));
    return 0;
}

/* A required string without NUL bytes, copied (the token of refresh). */
static int parse_text(json_t *body, const char *key, char **out, size_t *len, struct command_error *err)
{
    json_t *v = json_object_get(body, key);
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
        return refuse(err, WSFAN_EBAD_COMMAND, "%s is required and must be a string", key);
    if (!(*out = strdup(json_string_value(v))))
        return refuse(err, WSFAN_ENOMEM, "out of memory");
    *len = json_string_length(v);
    return 0;
}

static int parse_limit(json_t *body, int *out, struct command_error *err)
{
    json_t *v = json_object_get(body, "limit");
    *out = HISTORY_DEFAULT_LIMIT;
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > HISTORY_MAX_LIMIT)
        return refuse(err, WSFAN_EBAD_COMMAND, "limit must be an integer from 1 to %d", HISTORY_MAX_LIMIT);
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
        return refuse(err, WSFAN_EBAD_COMMAND, "ref must be a string of at most 64 bytes or an integer");
    size_t n = json_dumpb(ref, out, REF_TEXT_MAX - 1, JSON_ENCODE_ANY);
    out[n < REF_TEXT_MAX ? n : 0] = '\0';
    return 0;
}

static const char *const command_names[] = {
    [CMD_JOIN] = "join",           [CMD_LEAVE] = "leave",     [CMD_PUBLISH] = "publish",
    [CMD_SEND] = "send",           [CMD_BROADCAST] = "broadcast", [CMD_HISTORY] = "history",
    [CMD_PRESENCE] = "presence",   [CMD_PING] = "ping",       [CMD_REFRESH] = "refresh",
};

const char *command_type_name(enum command_type type)
{
    return command_names[type];
}

/* The command type named by the n bytes at s (whole strings: "ping\u0000x"
 * is not "ping"), or -1. */
static int command_type_of(const char *s, size_t n)
{
    for (size_t i = 0; i < sizeof command_names / sizeof command_names[0]; i++)
        if (strlen(command_names[i]) == n && !memcmp(command_names[i], s, n))
            return (int)i;
    return -1;
}

/* The fields a command reads besides type and ref. Both paths read them
 * from command_fields, in the order listed there, which is the order of
 * checks of docs/protocol.md. */
enum field {
    FIELD_END, FIELD_ROOM, FIELD_USER, FIELD_EPHEMERAL, FIELD_ECHO, FIELD_DATA, FIELD_LIMIT, FIELD_SINCE, FIELD_BEFORE,
    FIELD_TOKEN, FIELD_KEY, FIELD_TYPE, FIELD_REF, FIELD_COUNT
};

static const char *const field_names[FIELD_COUNT] = {
    [FIELD_ROOM] = "room",   [FIELD_USER] = "user",   [FIELD_EPHEMERAL] = "ephemeral", [FIELD_ECHO] = "echo",
    [FIELD_DATA] = "data",   [FIELD_LIMIT] = "limit", [FIELD_SINCE] = "since",         [FIELD_BEFORE] = "before",
    [FIELD_TOKEN] = "token", [FIELD_KEY] = "key",     [FIELD_TYPE] = "type",           [FIELD_REF] = "ref",
};

static const enum field command_fields[][6] = {
    [CMD_JOIN] = {FIELD_ROOM, FIELD_SINCE},
    [CMD_LEAVE] = {FIELD_ROOM},
    [CMD_PUBLISH] = {FIELD_ROOM, FIELD_EPHEMERAL, FIELD_ECHO, FIELD_KEY, FIELD_DATA},
    [CMD_SEND] = {FIELD_USER, FIELD_DATA},
    [CMD_BROADCAST] = {FIELD_DATA},
    [CMD_HISTORY] = {FIELD_ROOM, FIELD_LIMIT, FIELD_BEFORE},
    [CMD_PRESENCE] = {FIELD_ROOM},
    [CMD_PING] = {FIELD_END},
    [CMD_REFRESH] = {FIELD_TOKEN},
};

static int parse_field(json_t *body, enum field f, struct command *cmd, struct command_error *err)
{
    switch (f) {
    case FIELD_ROOM: return parse_name(body, "room", WSFAN_EROOM_INVALID, cmd->room, err);
    case FIELD_USER: return parse_name(body, "user", WSFAN_EUSER_INVALID, cmd->user, err);
    case FIELD_EPHEMERAL: return parse_bool(body, "ephemeral", 0, &cmd->ephemeral, err);
    case FIELD_ECHO: return parse_bool(body, "echo", 1, &cmd->echo, err);
    case FIELD_DATA: return parse_data(body, cmd, err);
    case FIELD_LIMIT: return parse_limit(body, &cmd->limit, err);
    case FIELD_SINCE: return parse_offset(body, "since", &cmd->has_since, &cmd->since, err);
    case FIELD_BEFORE: return parse_offset(body, "before", &cmd->has_before, &cmd->before, err);
    case FIELD_TOKEN: return parse_text(body, "token", &cmd->token, &cmd->token_len, err);
    case FIELD_KEY: return command_parse_key(body, &cmd->has_key, cmd->key, err);
    default: return 0;
    }
}

/* ---- the fast path ---------------------------------------------------------
 * Most commands are compact JSON, as JSON.stringify writes it. For those the
 * compact re-serialization the general path gets from jansson is the text
 * itself, so they can be read in place: one pass, no tree, no allocation but
 * the copy of data. The fast path takes only valid commands written that way:
 * strings without escapes other than \" \\ \b \f \n \r \t, integers of
 * at most 18 digits and not -0, no whitespace inside data, no repeated key,
 * at most FAST_KEYS keys per object and FAST_DEPTH levels. Anything else,
 * errors included, goes to the general path, which decides. fuzz_command
 * checks that both paths agree on every input the fast path takes. */

#define FAST_KEYS 16
#define FAST_DEPTH 32

enum fast_kind { FAST_STRING, FAST_INT, FAST_TRUE, FAST_FALSE, FAST_NULL, FAST_ARRAY, FAST_OBJECT };

struct fast_scan {
    const char *p, *end;
    int depth;
    int non_ascii;  /* a string had bytes past 0x7f: check the text's UTF-8 */
};

/* A JSON value as the fast path sees it: its text and what it is. */
struct fast_value {
    const char *text;
    size_t len;
    enum fast_kind kind;
    int escaped;        /* a string with escapes */
    long long integer;  /* FAST_INT */
};

static void fast_skip_ws(struct fast_scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int fast_string(struct fast_scan *s, struct fast_value *v)
{
    const char *p = s->p + 1;
    v->kind = FAST_STRING;
    v->escaped = 0;
    while (p < s->end) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '"') {
            s->p = p + 1;
            return 0;
        }
        if (ch < 0x20)
            return -1;
        s->non_ascii |= ch > 0x7f;
        if (ch == '\\') {
            if (p + 1 >= s->end || !p[1] || !strchr("\"\\bfnrt", p[1]))
                return -1;
            v->escaped = 1;
            p++;
        }
        p++;
    }
    return -1;
}

static int fast_integer(struct fast_scan *s, struct fast_value *v)
{
    const char *p = s->p;
    int negative = *p == '-';
    p += negative;
    const char *digits = p;
    while (p < s->end && *p >= '0' && *p <= '9')
        p++;
    size_t count = (size_t)(p - digits);
    if (count == 0 || count > 18 || (digits[0] == '0' && (count > 1 || negative)) ||
        (p < s->end && (*p == '.' || *p == 'e' || *p == 'E')))
        return -1;
    long long n = 0;
    for (const char *d = digits; d < p; d++)
        n = n * 10 + (*d - '0');
    v->kind = FAST_INT;
    v->integer = negative ? -n : n;
    s->p = p;
    return 0;
}

static int fast_literal(struct fast_scan *s, struct fast_value *v, const char *word, enum fast_kind kind)
{
    size_t n = strlen(word);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n))
        return -1;
    v->kind = kind;
    s->p += n;
    return 0;
}

static int fast_value(struct fast_scan *s, struct fast_value *v);

/* Reads one object member's key into key and checks it against the keys
 * before it (keys holds *nkeys of them). Then the ':' after it. */
static int fast_key(struct fast_scan *s, struct fast_value *key, struct fast_value keys[FAST_KEYS], int *nkeys,
                    int top)
{
    key->text = s->p;
    if (s->p >= s->end || *s->p != '"' || fast_string(s, key) || key->escaped || *nkeys == FAST_KEYS)
        return -1;
    key->len = (size_t)(s->p - key->text);
    for (int i = 0; i < *nkeys; i++)
        if (keys[i].len == key->len && !memcmp(keys[i].text, key->text, key->len))
            return -1;
    keys[(*nkeys)++] = *key;
    if (top)
        fast_skip_ws(s);
    if (s->p >= s->end || *s->p != ':')
        return -1;
    s->p++;
    if (top)
        fast_skip_ws(s);
    return 0;
}

/* An array or an object inside a value: no whitespace at all. */
static int fast_container(struct fast_scan *s, struct fast_value *v)
{
    char close = *s->p == '[' ? ']' : '}';
    struct fast_value keys[FAST_KEYS], key, item;
    int nkeys = 0;
    v->kind = close == ']' ? FAST_ARRAY : FAST_OBJECT;
    if (++s->depth > FAST_DEPTH)
        return -1;
    s->p++;
    if (s->p < s->end && *s->p == close) {
        s->p++;
        s->depth--;
        return 0;
    }
    for (;;) {
        if ((close == '}' && fast_key(s, &key, keys, &nkeys, 0)) || fast_value(s, &item) || s->p >= s->end)
            return -1;
        if (*s->p == close) {
            s->p++;
            s->depth--;
            return 0;
        }
        if (*s->p++ != ',')
            return -1;
    }
}

static int fast_value(struct fast_scan *s, struct fast_value *v)
{
    if (s->p >= s->end)
        return -1;
    v->text = s->p;
    int r;
    switch (*s->p) {
    case '"': r = fast_string(s, v); break;
    case '[':
    case '{': r = fast_container(s, v); break;
    case 't': r = fast_literal(s, v, "true", FAST_TRUE); break;
    case 'f': r = fast_literal(s, v, "false", FAST_FALSE); break;
    case 'n': r = fast_literal(s, v, "null", FAST_NULL); break;
    default: r = fast_integer(s, v); break;
    }
    v->len = (size_t)(s->p - v->text);
    return r;
}

static int fast_name(const struct fast_value *v, char out[NAME_MAX_LEN + 1])
{
    if (!v->text || v->kind != FAST_STRING || v->escaped || !name_valid(v->text + 1, v->len - 2))
        return -1;
    memcpy(out, v->text + 1, v->len - 2);
    out[v->len - 2] = '\0';
    return 0;
}

/* An optional offset: absent, or a string that parses. */
static int fast_offset(const struct fast_value *v, int *present, struct offset *out)
{
    char text[64];
    *present = v->text != NULL;
    if (!*present)
        return 0;
    if (v->kind != FAST_STRING || v->escaped || v->len - 2 >= sizeof text)
        return -1;
    memcpy(text, v->text + 1, v->len - 2);
    text[v->len - 2] = '\0';
    return offset_parse(text, out);
}

static int fast_bool(const struct fast_value *v, int dflt, int *out)
{
    if (!v->text) {
        *out = dflt;
        return 0;
    }
    if (v->kind != FAST_TRUE && v->kind != FAST_FALSE)
        return -1;
    *out = v->kind == FAST_TRUE;
    return 0;
}

static int fast_data(const struct fast_value *v, struct command *cmd)
{
    if (!v->text || !(cmd->data = malloc(v->len + 1)))
        return -1;
    memcpy(cmd->data, v->text, v->len);
    cmd->data[v->len] = '\0';
    cmd->data_len = v->len;
    return 0;
}

/* A string without escapes, copied without its quotes. */
static int fast_text(const struct fast_value *v, char **out, size_t *len)
{
    if (!v->text || v->kind != FAST_STRING || v->escaped || !(*out = malloc(v->len - 1)))
        return -1;
    *len = v->len - 2;
    memcpy(*out, v->text + 1, *len);
    (*out)[*len] = '\0';
    return 0;
}

static int fast_field(const struct fast_value *fields, enum field f, struct command *cmd)
{
    const struct fast_value *v = &fields[f];
    switch (f) {
    case FIELD_ROOM: return fast_name(v, cmd->room);
    case FIELD_USER: return fast_name(v, cmd->user);
    case FIELD_EPHEMERAL: return fast_bool(v, 0, &cmd->ephemeral);
    case FIELD_ECHO: return fast_bool(v, 1, &cmd->echo);
    case FIELD_DATA: return fast_data(v, cmd);
    case FIELD_LIMIT:
        cmd->limit = HISTORY_DEFAULT_LIMIT;
        if (!v->text)
            return 0;
        if (v->kind != FAST_INT || v->integer < 1 || v->integer > HISTORY_MAX_LIMIT)
            return -1;
        cmd->limit = (int)v->integer;
        return 0;
    case FIELD_SINCE: return fast_offset(v, &cmd->has_since, &cmd->since);
    case FIELD_BEFORE: return fast_offset(v, &cmd->has_before, &cmd->before);
    case FIELD_TOKEN: return fast_text(v, &cmd->token, &cmd->token_len);
    case FIELD_KEY:
        cmd->has_key = v->text != NULL;
        if (!v->text)
            return 0;
        if (v->kind != FAST_STRING || v->escaped || v->len - 2 > PUBLISH_KEY_MAX)
            return -1;
        memcpy(cmd->key, v->text + 1, v->len - 2);
        cmd->key[v->len - 2] = '\0';
        return 0;
    default: return 0;
    }
}

int command_parse_compact(const char *text, size_t len, struct command *cmd)
{
    memset(cmd, 0, sizeof *cmd);
    struct fast_scan s = {text, text + len, 1, 0};
    struct fast_value f[FIELD_COUNT] = {{0}}, keys[FAST_KEYS], key;
    int nkeys = 0;
    fast_skip_ws(&s);
    if (s.p >= s.end || *s.p++ != '{')
        return -1;
    for (;;) {
        fast_skip_ws(&s);
        struct fast_value v;
        if (fast_key(&s, &key, keys, &nkeys, 1) || fast_value(&s, &v))
            return -1;
        for (int i = FIELD_ROOM; i < FIELD_COUNT; i++)
            if (strlen(field_names[i]) == key.len - 2 && !memcmp(field_names[i], key.text + 1, key.len - 2))
                f[i] = v;
        fast_skip_ws(&s);
        if (s.p >= s.end)
            return -1;
        if (*s.p == '}')
            break;
        if (*s.p++ != ',')
            return -1;
    }
    s.p++;
    fast_skip_ws(&s);
    uint8_t utf8 = UTF8_ACCEPT;
    if (s.p != s.end ||
        (s.non_ascii && (utf8_feed(&utf8, (const uint8_t *)text, len) || !utf8_complete(utf8))))
        return -1;
    const struct fast_value *ref = &f[FIELD_REF];
    if (ref->text) {
        if (!((ref->kind == FAST_STRING && !ref->escaped && ref->len - 2 <= REF_MAX_LEN) || ref->kind == FAST_INT))
            return -1;
        memcpy(cmd->ref, ref->text, ref->len);
        cmd->ref[ref->len] = '\0';
    }
    const struct fast_value *type = &f[FIELD_TYPE];
    int t = type->text && type->kind == FAST_STRING && !type->escaped ? command_type_of(type->text + 1, type->len - 2)
                                                                          : -1;
    if (t < 0)
        return -1;
    cmd->type = (enum command_type)t;
    for (const enum field *field = command_fields[t]; *field != FIELD_END; field++)
        if (fast_field(f, *field, cmd))
            return -1;
    return 0;
}

int command_parse(const char *text, size_t len, struct command *cmd, struct command_error *err)
{
    if (command_parse_compact(text, len, cmd) == 0)
        return 0;
    command_free(cmd);
    return command_parse_general(text, len, cmd, err);
}

int command_parse_general(const char *text, size_t len, struct command *cmd, struct command_error *err)
{
    memset(cmd, 0, sizeof *cmd);
    json_error_t jerr;
    json_t *body = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    int r = -1;
    if (!json_is_object(body)) {
        refuse(err, WSFAN_EBAD_JSON, "%s", body ? "a command must be a JSON object" : jerr.text);
        goto done;
    }
    if (parse_ref(json_object_get(body, "ref"), cmd->ref, err))
        goto done;
    json_t *type = json_object_get(body, "type");
    if (!json_is_string(type)) {
        refuse(err, WSFAN_EBAD_COMMAND, "type is required and must be a string");
        goto done;
    }
    int t = command_type_of(json_string_value(type), json_string_length(type));
    if (t < 0) {
        refuse(err, WSFAN_EUNKNOWN_TYPE, "unknown command type");
        goto done;
    }
    cmd->type = (enum command_type)t;
    r = 0;
    for (const enum field *field = command_fields[t]; r == 0 && *field != FIELD_END; field++)
        r = parse_field(body, *field, cmd, err);
done:
    json_decref(body);
    return r;
}

void command_free(struct command *cmd)
{
    free(cmd->data);
    free(cmd->token);
    cmd->data = NULL;
    cmd->token = NULL;
}

