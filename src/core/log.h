/* log.h - leveled logging to stderr, one line per call, safe from any thread,
 * as text or as one JSON object a line (--log-format). An event is a fixed
 * message with fields (log_event): text writes them as key=value after the
 * message, JSON as members beside ts, level and msg. The level and the
 * format are atomic: set at start, and again on SIGHUP while threads log. */
#ifndef WSFAN_LOG_H
#define WSFAN_LOG_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

void log_set_level(enum log_level level);
void log_set_format(enum log_format format);
int log_enabled(enum log_level level);
void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_write(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_write(LOG_DEBUG, __VA_ARGS__)

/* One field of an event: a key (a literal, [a-z_]) and a text or a number.
 * The text is borrowed until the call returns and may hold any bytes: it
 * is escaped, and invalid UTF-8 becomes U+FFFD. Never pass a secret. */
enum log_field_kind { LOG_FIELD_NONE, LOG_FIELD_TEXT, LOG_FIELD_NUM };
struct log_field {
    const char *key;
    enum log_field_kind kind;
    const char *text;
    long long num;
};

/* A text field; left out of the line when value is NULL. */
static inline struct log_field log_text(const char *key, const char *value)
{
    return (struct log_field){.key = key, .kind = value ? LOG_FIELD_TEXT : LOG_FIELD_NONE, .text = value};
}

static inline struct log_field log_num(const char *key, long long value)
{
    return (struct log_field){.key = key, .kind = LOG_FIELD_NUM, .num = value};
}

/* Writes msg (a literal) with the n fields when level is enabled. */
void log_fields(enum log_level level, const char *msg, const struct log_field *fields, size_t n);

/* log_event(LOG_INFO, "closed", log_text("session", s), log_num("code", 1000)) */
#define log_event(level, msg, ...)                                                                            \
    log_fields(level, msg, (const struct log_field[]){__VA_ARGS__},                                           \
               sizeof((const struct log_field[]){__VA_ARGS__}) / sizeof(struct log_field))

/* The line log_fields writes at time ts, without its newline, in buf (cap
 * bytes, at least 64). A line too long for buf loses the end of its
 * values, whole characters at a time, and JSON stays one valid object.
 * Returns the line's length. */
size_t log_format_line(char *buf, size_t cap, enum log_format format, const struct timespec *ts,
                       enum log_level level, const char *msg, const struct log_field *fields, size_t n);

/* A budget of lines per second for one noisy source (bad envelopes, say).
 * Owned by one thread. */
struct log_limit {
    uint64_t window_ms;
    uint32_t in_window;
    uint32_t suppressed;
};

/* True when a line may be written now (at most 5 per second); counts the
 * rest and reports how many were suppressed with the next line allowed. */
int log_limit_allow(struct log_limit *l, uint64_t now_ms, uint32_t *suppressed);

#endif
