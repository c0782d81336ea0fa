/* Drain: SIGTERM/SIGINT stop admitting (503 + Retry-After), report max_perf 0
 * so the engine stops routing here, let in-flight requests finish for up to
 * SGPU_DRAIN_TIMEOUT seconds, abort the rest, send a final report (and the
 * pending /delete_requests/), exit 0.  A second signal exits at once (B29). */
#include <signal.h>
#include <stdlib.h>

#include "log.h"
#include "worker.h"

static struct event *final_timer;

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
    if (w->final_report_sent) return;
    w->final_report_sent = true;
    if (w->drain_ev) evtimer_del(w->drain_ev);
    benchmark_stop(w);
    log_info("drained", "accepted=%llu", (unsigned long long)w->n_accepted);
    double t = w->cfg.report_timeout * (double)(w->cfg.nreport ? w->cfg.nreport : 1) + 1.0;
    struct timeval tv = {(time_t)t, (suseconds_t)((t - (double)(time_t)t) * 1e6)};
    final_timer = evtimer_new(w->base, on_final_timeout, w);
    evtimer_add(final_timer, &tv);
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
    wreq_abort_all(w);
    finalize(w);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct worker *w = arg;
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
    w->drain_ev = evtimer_new(w->base, on_drain_timeout, w);
    double t = w->cfg.drain_timeout;
    struct timeval tv = {(time_t)t, (suseconds_t)((t - (double)(time_t)t) * 1e6)};
    evtimer_add(w->drain_ev, &tv);
    worker_check_drained(w);
}

void drain_init(struct worker *w)
{
    w->sig_term = evsignal_new(w->base, SIGTERM, on_signal, w);
    w->sig_int = evsignal_new(w->base, SIGINT, on_signal, w);
    evsignal_add(w->sig_term, NULL);
    evsignal_add(w->sig_int, NULL);
}

void drain_free(struct worker *w)
{
    if (final_timer) event_free(final_timer);
    final_timer = NULL;
    if (w->drain_ev) event_free(w->drain_ev);
    w->drain_ev = NULL;
    if (w->sig_term) event_free(w->sig_term);
    if (w->sig_int) event_free(w->sig_int);
    w->sig_term = w->sig_int = NULL;
}
