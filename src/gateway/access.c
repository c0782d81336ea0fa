/* Access lines (one logfmt line per proxied request), written in batches.
 *
 * The common logger formats a timestamp and makes one write(2) per line; at gateway rates that
 * was ~6 % of the gateway's CPU (docs/benchmarks.md).  Here lines are appended to a buffer with
 * a cached per-second timestamp and written when the buffer passes 64 KiB, 0.2 s after the first
 * line of a batch, and at exit: at most 0.2 s late, in order among themselves, same format and
 * destination (stderr) as every other log line. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "gateway.h"
#include "log.h"
#include "xalloc.h"

#define ACCESS_FLUSH_BYTES (64 * 1024)

static struct sbuf abuf;
static struct event *flush_ev;
static time_t stamp_sec = -1;
static char stamp[80]; /* "2026-12-03T09:41:19" (room for any int the compiler assumes) */

void gw_access_flush(void)
{
    size_t off = 0;
    while (off < abuf.len) {
        ssize_t w = write(STDERR_FILENO, abuf.data + off, abuf.len - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            break; /* stderr gone or non-blocking and full: drop the batch */
        }
        off += (size_t)w;
    }
    sbuf_reset(&abuf);
}

static void on_flush(evutil_socket_t fd, short ev, void *arg)
{
    gw_access_flush();
}

void gw_access_init(struct event_base *base)
{
    flush_ev = xnonnull(evtimer_new(base, on_flush, NULL));
}

void gw_access_free(void)
{
    gw_access_flush();
    if (flush_ev) event_free(flush_ev);
    flush_ev = NULL;
    sbuf_free(&abuf);
}

void gw_access(const char *fmt, ...)
{
    if (log_get_level() > LOG_INFO) return;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    if (tv.tv_sec != stamp_sec) {
        struct tm tm;
        gmtime_r(&tv.tv_sec, &tm);
        snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        stamp_sec = tv.tv_sec;
    }
    sbuf_printf(&abuf, "%s.%03dZ level=info comp=gateway event=access ", stamp,
                (int)(tv.tv_usec / 1000));
    va_list ap;
    va_start(ap, fmt);
    sbuf_vprintf(&abuf, fmt, ap);
    va_end(ap);
    sbuf_putc(&abuf, '\n');
    if (abuf.len >= ACCESS_FLUSH_BYTES || !flush_ev) {
        gw_access_flush();
    } else if (!evtimer_pending(flush_ev, NULL)) {
        struct timeval d = clock_tv_ms(200);
        evtimer_add(flush_ev, &d);
    }
}
