/* log.c - leveled logging to stderr, as text or JSON lines. See log.h. */
#include "core/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "core/utf8.h"

/* Atomic: a SIGHUP sets them on the main thread while workers log. */
static atomic_int current_level = LOG_INFO;
static atomic_int current_format = LOG_FORMAT_TEXT;
static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_set_level(enum log_level level) { atomic_store_explicit(&current_level, (int)level, memory_order_relaxed); }

void log_set_format(enum log_format format)
{
    atomic_store_explicit(&current_format, (int)format, memory_order_relaxed);
}

int log_enabled(enum log_level level)
{
    return (int)level <= atomic_load_explicit(&current_level, memory_order_relaxed);
}

/* ---- one line ------------------------------------------------------------
 * Appends are whole or not at all: once one does not fit, the line is full
 * and takes nothing more but the closers kept in reserve (a string's quote
 * and the object's brace), so that a cut line is still well formed. */

#define LINE_RESERVE 2

struct line {
    char *buf;
    size_t len, cap;
    int full;
};

static int put(struct line *l, const char *s, size_t n)
{
    if (l->full || l->len + n > l->cap - LINE_RESERVE) {
        l->full = 1;
        return 0;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
    return 1;
}

static int put_str(struct line *l, const char *s) { return put(l, s, strlen(s)); }

/* A closer from the reserve. */
static void put_closer(struct line *l, char c) { l->buf[l->len++] = c; }

/* The character at s (n bytes) when it is valid UTF-8: its length, and
 * *valid set. Otherwise how many bytes one U+FFFD stands for: those that
 * could still have begun a character, at least one (the byte that broke
 * it starts over). */
static size_t next_char(const uint8_t *s, size_t n, int *valid)
{
    uint8_t state = UTF8_ACCEPT;
    size_t i = 0;
    while (i < n && !utf8_feed(&state, s + i, 1)) {
        i++;
        if (utf8_complete(state)) {
            *valid = 1;
            return i;
        }
    }
    *valid = 0;
    return i ? i : 1;
}

/* s as the inside of a JSON string: quote, backslash and control bytes
 * escaped, each invalid UTF-8 sequence (its longest start that could have
 * been valid, or one byte) as U+FFFD. */
static void put_escaped(struct line *l, const char *text)
{
    const uint8_t *s = (const uint8_t *)text;
    size_t n = strlen(text);
    for (size_t i = 0; i < n && !l->full;) {
        uint8_t c = s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            put(l, esc, 2);
        } else if (c == '\n')
            put_str(l, "\\n");
        else if (c == '\r')
            put_str(l, "\\r");
        else if (c == '\t')
            put_str(l, "\\t");
        else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            put(l, esc, 6);
        } else if (c < 0x80)
            put(l, (const char *)&c, 1);
        else {
            int valid;
            size_t len = next_char(s + i, n - i, &valid);
            put(l, valid ? (const char *)s + i : "\xEF\xBF\xBD", valid ? len : 3);
            i += len;
            continue;
        }
        i++;
    }
}

/* A text value goes bare when it is printable ASCII without blanks, quotes,
 * backslashes or '='; quoted and escaped as in JSON otherwise. */
static int needs_quotes(const char *s)
{
    if (!*s)
        return 1;
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f || *s == '"' || *s == '\\' || *s == '=')
            return 1;
    return 0;
}

/* A field's key goes with what opens its value (a number entire), so that
 * a line cut short never ends between the two. */
static void put_field(struct line *l, enum log_format format, const struct log_field *f)
{
    char head[96];
    int json = format == LOG_FORMAT_JSON;
    int quoted = f->kind == LOG_FIELD_TEXT && (json || needs_quotes(f->text));
    if (f->kind == LOG_FIELD_NONE)
        return;
    if (f->kind == LOG_FIELD_NUM)
        snprintf(head, sizeof head, json ? ",\"%s\":%lld" : " %s=%lld", f->key, f->num);
    else
        snprintf(head, sizeof head, json ? ",\"%s\":%s" : " %s=%s", f->key, quoted ? "\"" : "");
    if (!put_str(l, head) || f->kind == LOG_FIELD_NUM)
        return;
    if (!quoted) {
        put_str(l, f->text);
        return;
    }
    put_escaped(l, f->text);
    put_closer(l, '"');
}

size_t log_format_line(char *buf, size_t cap, enum log_format format, const struct timespec *ts,
                       enum log_level level, const char *msg, const struct log_field *fields, size_t n)
{
    struct line l = {.buf = buf, .cap = cap - 1};
    struct tm tm;
    gmtime_r(&ts->tv_sec, &tm);
    int json = format == LOG_FORMAT_JSON;
    char head[160];
    snprintf(head, sizeof head,
             json ? "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\",\"msg\":\""
                  : "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts->tv_nsec / 1000000,
             level_names[level]);
    put_str(&l, head);
    if (json) {
        put_escaped(&l, msg);
        put_closer(&l, '"');
    } else {
        /* The message is the code's own text, written as it is. */
        size_t room = l.cap - LINE_RESERVE - l.len;
        size_t len = strlen(msg);
        put(&l, msg, len < room ? len : room);
    }
    for (size_t i = 0; i < n; i++)
        put_field(&l, format, &fields[i]);
    if (json)
        put_closer(&l, '}');
    buf[l.len] = '\0';
    return l.len;
}

static void write_line(enum log_level level, const char *msg, const struct log_field *fields, size_t n)
{
    char line[4096];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    enum log_format format = (enum log_format)atomic_load_explicit(&current_format, memory_order_relaxed);
    size_t len = log_format_line(line, sizeof line - 1, format, &ts, level, msg, fields, n);
    line[len] = '\n';
    /* One fwrite of a whole line keeps lines from threads whole. */
    fwrite(line, 1, len + 1, stderr);
}

void log_fields(enum log_level level, const char *msg, const struct log_field *fields, size_t n)
{
    if (log_enabled(level))
        write_line(level, msg, fields, n);
}

void log_write(enum log_level level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    write_line(level, msg, NULL, 0);
}

int log_limit_allow(struct log_limit *l, uint64_t now_ms, uint32_t *suppressed)
{
    if (now_ms - l->window_ms >= 1000) {
        l->window_ms = now_ms;
        l->in_window = 0;
    }
    if (l->in_window >= 5) {
        l->suppressed++;
        return 0;
    }
    l->in_window++;
    *suppressed = l->suppressed;
    l->suppressed = 0;
    return 1;
}
