/* log.h - one line per event, key=value, to stderr. */
#ifndef SPBE_LOG_H
#define SPBE_LOG_H

#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the lowest level written (default LOG_INFO). Call from main before threads start. */
void log_set_level(enum log_level level);
/* 1: each line a JSON object ({"ts":..,"level":..,"event":.., and the key=value pairs}). */
void log_set_json(int json);
/* Writes "ts=... level=... event=<event> <fmt...>\n". fmt continues with key=value pairs. */
void log_event(enum log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/*
 * Text a peer chose (a hello's client, a reason, a name not yet validated) made safe to log:
 * within a quoted value (quoted 1) quotes and backslashes are escaped; as a bare value
 * (quoted 0) spaces, quotes, backslashes and '=' become '?'. Control bytes become '?' in
 * both, so no peer can end a value, add a key or start a line of its own. Returns out.
 */
const char *log_clean(const char *in, int quoted, char *out, size_t len);

/*
 * A budget of lines per second for one kind of event, so a flood of bad input cannot
 * fill the disk: at most per_second lines in a second, then one line saying how many
 * were left out. Owned by one thread.
 */
typedef struct log_limit {
    const char *event;
    int per_second;
    long long second; /* the current second (monotonic) */
    int used;
    unsigned long long suppressed;
} log_limit;

/* 1 if a line of this event may be written now (else it is counted as left out). */
int log_allow(log_limit *l);
/* Writes the count of lines left out once their second has passed (call now and then). */
void log_limit_flush(log_limit *l);

#endif
