/* log.h - one line per event, key=value, to stderr. */
#ifndef SPBE_LOG_H
#define SPBE_LOG_H

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
