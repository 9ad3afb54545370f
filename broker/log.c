/* log.c - key=value event lines on stderr. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static enum log_level log_threshold = LOG_INFO; /* set once from main, read-only after */

void
log_set_level(enum log_level level)
{
    log_threshold = level;
}

void
log_event(enum log_level level, const char *event, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (level < log_threshold)
        return;
    struct timespec ts;
    struct tm tm;
    char when[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    char line[1024];
    int n = snprintf(line, sizeof line, "ts=%s.%03ldZ level=%s event=%s ", when,
                     ts.tv_nsec / 1000000, names[level], event);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof line)
        vsnprintf(line + n, sizeof line - n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
}

static long long
monotonic_second(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec;
}

void
log_limit_flush(log_limit *l)
{
    long long now = monotonic_second();
    if (now == l->second)
        return;
    if (l->suppressed)
        log_event(LOG_WARN, "log_suppressed", "of=%s lines=%llu per_second=%d", l->event,
                  l->suppressed, l->per_second);
    l->second = now;
    l->used = 0;
    l->suppressed = 0;
}

int
log_allow(log_limit *l)
{
    log_limit_flush(l);
    if (l->used < l->per_second) {
        l->used++;
        return 1;
    }
    l->suppressed++;
    return 0;
}
