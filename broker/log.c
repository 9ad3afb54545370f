/* log.c - key=value event lines on stderr. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static enum log_level log_threshold = LOG_INFO; /* set once from main, read-only after */
static int log_json;                            /* likewise */

void
log_set_json(int json)
{
    log_json = json;
}

/* "k=v k2=\"a b\"" as JSON members: ,"k":"v","k2":"a b" */
static void
json_pairs(const char *in, char *out, size_t len)
{
    size_t o = 0;
#define PUT(ch)                                                                                    \
    do {                                                                                           \
        if (o + 1 < len)                                                                           \
            out[o++] = (ch);                                                                       \
    } while (0)
    const char *p = in;
    while (*p) {
        while (*p == ' ')
            p++;
        const char *eq = strchr(p, '=');
        if (!*p || !eq)
            break;
        PUT(',');
        PUT('"');
        for (; p < eq; p++) {
            if (*p == '"' || *p == '\\')
                PUT('\\');
            if ((unsigned char)*p >= 0x20)
                PUT(*p);
        }
        PUT('"');
        PUT(':');
        PUT('"');
        p = eq + 1;
        int quoted = *p == '"';
        if (quoted)
            p++;
        for (; *p && (quoted ? *p != '"' : *p != ' '); p++) {
            if (quoted && *p == '\\' && p[1])
                p++;
            if (*p == '"' || *p == '\\')
                PUT('\\');
            if ((unsigned char)*p >= 0x20)
                PUT(*p);
        }
        if (quoted && *p == '"')
            p++;
        PUT('"');
    }
#undef PUT
    out[o] = '\0';
}

const char *
log_clean(const char *in, int quoted, char *out, size_t len)
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)(in ? in : ""); *p && o + 2 < len; p++) {
        if (*p < 0x20 || *p == 0x7f)
            out[o++] = '?';
        else if (quoted && (*p == '"' || *p == '\\'))
            out[o++] = '\\', out[o++] = (char)*p;
        else if (!quoted && (*p == ' ' || *p == '"' || *p == '\\' || *p == '='))
            out[o++] = '?';
        else
            out[o++] = (char)*p;
    }
    if (len)
        out[o] = '\0';
    return out;
}

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
    char pairs[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pairs, sizeof pairs, fmt, ap);
    va_end(ap);
    if (log_json) {
        char members[2048];
        json_pairs(pairs, members, sizeof members);
        fprintf(stderr, "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"event\":\"%s\"%s}\n", when,
                ts.tv_nsec / 1000000, names[level], event, members);
        return;
    }
    fprintf(stderr, "ts=%s.%03ldZ level=%s event=%s %s\n", when, ts.tv_nsec / 1000000, names[level],
            event, pairs);
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
