/* Drain: SIGTERM/SIGINT stop admitting (503 + Retry-After), report max_perf 0
 * so the engine stops routing here, let in-flight requests finish for up to
 * SGPU_DRAIN_TIMEOUT seconds, abort the rest, send a final report (and the
 * pending /delete_requests/), exit 0.  A second signal exits at once (B29). */
#include <signal.h>
#include <stdlib.h>

#include "benchmark.h"
#include "clock.h"
#include "drain.h"
#include "lifecycle.h"
#include "log.h"
#include "report.h"
#include "request.h"
#include "xalloc.h"

struct drain {
    struct event *sig_term, *sig_int;
    struct event *drain_ev;    /* SGPU_DRAIN_TIMEOUT after the first signal */
    struct event *final_timer; /* the final report's own deadline */
};

static void on_final_done(struct worker *w, void *arg)
{
    event_base_loopexit(w->base, NULL);
}

static void on_final_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    log_warn("final_report_timeout", "msg=\"exiting without confirmation\"");
    event_base_loopexit(w->base, NULL);
}

static void finalize(struct worker *w)
{
    struct drain *d = w->drain;
    if (w->final_report_sent) return;
    w->final_report_sent = true;
    if (d->drain_ev) evtimer_del(d->drain_ev);
    benchmark_stop(w);
    log_info("drained", "accepted=%llu", (unsigned long long)w->n_accepted);
    double t = w->cfg.report_timeout * (double)(w->cfg.nreport ? w->cfg.nreport : 1) + 1.0;
    struct timeval tv = clock_tv(t);
    d->final_timer = xnonnull(evtimer_new(w->base, on_final_timeout, w));
    evtimer_add(d->final_timer, &tv);
    report_final(w, on_final_done, NULL);
}

void worker_check_drained(struct worker *w)
{
    if (w->draining && w->nworking == 0) finalize(w);
}

static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    log_warn("drain_timeout", "aborting=%d", w->nworking);
    request_abort_all(w);
    finalize(w);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct worker *w = arg;
    struct drain *d = w->drain;
    if (w->draining) {
        log_warn("second_signal", "msg=\"exiting now\"");
        event_base_loopexit(w->base, NULL);
        return;
    }
    log_info("draining", "signal=%d in_flight=%d timeout=%g", (int)sig, w->nworking,
             w->cfg.drain_timeout);
    w->draining = true;
    benchmark_stop(w);
    worker_set_phase(w, PH_DRAINING);
    report_now(w);
    d->drain_ev = xnonnull(evtimer_new(w->base, on_drain_timeout, w));
    struct timeval tv = clock_tv(w->cfg.drain_timeout);
    evtimer_add(d->drain_ev, &tv);
    worker_check_drained(w);
}

int drain_init(struct worker *w)
{
    struct drain *d = xcalloc(1, sizeof *d);
    w->drain = d;
    d->sig_term = evsignal_new(w->base, SIGTERM, on_signal, w);
    d->sig_int = evsignal_new(w->base, SIGINT, on_signal, w);
    if (!d->sig_term || !d->sig_int) return -1;
    evsignal_add(d->sig_term, NULL);
    evsignal_add(d->sig_int, NULL);
    return 0;
}

void drain_free(struct worker *w)
{
    struct drain *d = w->drain;
    if (!d) return;
    if (d->final_timer) event_free(d->final_timer);
    if (d->drain_ev) event_free(d->drain_ev);
    if (d->sig_term) event_free(d->sig_term);
    if (d->sig_int) event_free(d->sig_int);
    free(d);
    w->drain = NULL;
}
