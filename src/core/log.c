/* log.c - leveled logging to stderr. See log.h. */
#include "core/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

/* Atomic: a SIGHUP sets it on the main thread while workers log. */
static atomic_int current_level = LOG_INFO;
static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_set_level(enum log_level level) { atomic_store_explicit(&current_level, (int)level, memory_order_relaxed); }

int log_enabled(enum log_level level)
{
    return (int)level <= atomic_load_explicit(&current_level, memory_order_relaxed);
}

void log_write(enum log_level level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    /* One fputs of a whole line keeps lines from threads whole. */
    fprintf(stderr, "%s\n", line);
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
