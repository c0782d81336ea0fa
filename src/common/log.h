/* Structured logging: one line per event, logfmt style, to stderr (or a file).
 *
 *   2026-11-27T04:10:00.123Z level=info comp=worker event=request_done id=17 status=200
 *
 * The first argument after the level is the event name (a short snake_case
 * word); the rest is a printf format producing `key=value` pairs.  Values that
 * may contain spaces or quotes go through log_quote() first.
 */
#ifndef SGPU_LOG_H
#define SGPU_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

/* component: short program name ("worker", "model", ...). min: lowest level
 * printed.  The level can also come from $SGPU_LOG_LEVEL (debug|info|warn|error). */
void log_init(const char *component, enum log_level min);
/* Send lines to `out` instead of stderr (not owned; NULL restores stderr). */
void log_set_output(FILE *out);
/* Sets the lowest level printed (after log_init: for a level a program took from its own
 * option table, flag over $SGPU_LOG_LEVEL). */
void log_set_level(enum log_level min);
enum log_level log_get_level(void);
/* Parse "debug|info|warn|error"; returns 0 or -1. */
int log_parse_level(const char *s, enum log_level *out);

void log_write(enum log_level lvl, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void log_vwrite(enum log_level lvl, const char *event, const char *fmt, va_list ap);

#define log_debug(ev, ...) log_write(LOG_DEBUG, ev, __VA_ARGS__)
#define log_info(ev, ...) log_write(LOG_INFO, ev, __VA_ARGS__)
#define log_warn(ev, ...) log_write(LOG_WARN, ev, __VA_ARGS__)
#define log_error(ev, ...) log_write(LOG_ERROR, ev, __VA_ARGS__)

/* Write `s` as a logfmt value into buf (always NUL-terminated, truncated to
 * n-1 bytes): bare when it has no space, quote, '=' or control character,
 * otherwise double-quoted with \" \\ \n \t and \xHH escapes.  Returns buf. */
char *log_quote(char *buf, size_t n, const char *s);

#endif
