/* log.h - one line per event, key=value, to stderr. */
#ifndef SPBE_LOG_H
#define SPBE_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the lowest level written (default LOG_INFO). Call from main before threads start. */
void log_set_level(enum log_level level);
/* Writes "ts=... level=... event=<event> <fmt...>\n". fmt continues with key=value pairs. */
void log_event(enum log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
