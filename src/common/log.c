/* Structured logging; see log.h. */
#include "log.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

static const char *log_component = "sgpu";
static enum log_level log_min = LOG_INFO;
static FILE *log_out;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int log_parse_level(const char *s, enum log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

void log_init(const char *component, enum log_level min)
{
    log_component = component;
    log_min = min;
    const char *env = getenv("SGPU_LOG_LEVEL");
    enum log_level lvl;
    if (env && *env && log_parse_level(env, &lvl) == 0) log_min = lvl;
}

void log_set_output(FILE *out)
{
    log_out = out;
}

void log_set_level(enum log_level min)
{
    log_min = min;
}

enum log_level log_get_level(void)
{
    return log_min;
}

void log_vwrite(enum log_level lvl, const char *event, const char *fmt, va_list ap)
{
    if (lvl < log_min) return;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    /* Build the whole line first so concurrent writers (threads, the model's
     * compute threads) never interleave inside a line. */
    char line[2048];
    int n =
        snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ level=%s comp=%s event=%s",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 (int)(tv.tv_usec / 1000), level_names[lvl], log_component, event);
    if (n < 0) return;
    if ((size_t)n < sizeof line - 2 && fmt && *fmt) {
        line[n++] = ' ';
        int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
        if (m > 0) n += m;
        if ((size_t)n > sizeof line - 2) n = (int)sizeof line - 2;
    }
    line[n++] = '\n';
    FILE *out = log_out ? log_out : stderr;
    fwrite(line, 1, (size_t)n, out);
    fflush(out);
}

void log_write(enum log_level lvl, const char *event, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(lvl, event, fmt, ap);
    va_end(ap);
}

char *log_quote(char *buf, size_t n, const char *s)
{
    if (n == 0) return buf;
    if (!s) s = "";
    int bare = *s != '\0';
    for (const char *p = s; *p && bare; p++)
        if ((unsigned char)*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7f)
            bare = 0;
    size_t o = 0;
    if (bare) {
        while (*s && o + 1 < n)
            buf[o++] = *s++;
        buf[o] = '\0';
        return buf;
    }
    if (o + 1 < n) buf[o++] = '"';
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char tmp[5];
        size_t k;
        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            k = 2;
        } else if (c == '\n') {
            memcpy(tmp, "\\n", 2);
            k = 2;
        } else if (c == '\t') {
            memcpy(tmp, "\\t", 2);
            k = 2;
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(tmp, sizeof tmp, "\\x%02x", c);
            k = 4;
        } else {
            tmp[0] = (char)c;
            k = 1;
        }
        if (o + k + 2 > n) break; /* keep room for the closing quote */
        memcpy(buf + o, tmp, k);
        o += k;
    }
    if (o + 1 < n) buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}
