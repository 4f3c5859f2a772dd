/* log.h - leveled logging to stderr, one line per call, safe from any thread.
 * The level is set once at start, before threads exist, and only read after. */
#ifndef WSFAN_LOG_H
#define WSFAN_LOG_H

#include <stdint.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

void log_set_level(enum log_level level);
int log_enabled(enum log_level level);
void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_write(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_write(LOG_DEBUG, __VA_ARGS__)

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
