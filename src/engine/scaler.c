/* Scaling math: from an endpoint's parameters and observed load to worker-count targets.
 * Pure (no engine state) so it is unit-tested directly; lifecycle.c gathers the inputs and
 * applies the targets.  Units: load and capacities in perf units per second (workload/s),
 * times in seconds.  See docs/engine.md "Autoscaling" for the rules. */
#include <math.h>
#include <stdlib.h>

#include "engine.h"
#include "scaler.h"

static int ceil_div(double cap, double per)
{
    if (cap <= 0) return 0;
    double n = ceil(cap / per - 1e-9);
    if (n > 1e6) n = 1e6;
    return (int)n;
}

/* Active capacity wanted (perf units/s): the load (at least min_load) over target_util, raised
 * by fast scale-up when the queue is longer than the endpoint tolerates (*fast). */
static double wanted_cap(const struct scaler_in *in, double pe, double util, bool *fast,
                         const char **reason)
{
    const struct ep_params *p = &in->p;
    double base = in->load > p->min_load ? in->load : p->min_load;
    double cap = base / util;
    *reason = in->load > p->min_load ? "load" : "min_load";
    *fast = false;
    /* fast scale-up: the queue is longer than the endpoint tolerates */
    if (p->target_queue_time > 0 && in->queue_time > p->target_queue_time) {
        double f = in->queue_time / p->target_queue_time;
        if (f > 2) f = 2;
        double want = in->ready_cap * f + pe;
        if (want > cap) {
            cap = want;
            *fast = true;
            *reason = "queue_time";
        }
    }
    return cap;
}

/* Active workers for cap: one while perf is unknown, at least one while requests wait, one
 * more than ready when fast scale-up fires although the estimate says there are enough. */
static int active_for_cap(const struct scaler_in *in, double cap, double pe, bool fast,
                          const char **reason)
{
    int a;
    if (cap <= 0)
        a = 0;
    else if (pe <= 0)
        a = 1; /* unknown perf: one worker until the first benchmark */
    else
        a = ceil_div(cap, pe);
    if (in->qlen > 0 && a < 1) {
        a = 1;
        *reason = "queue_waiting";
    }
    if (fast && a <= in->ready + in->pending_active && in->ready > 0 && in->pending_active == 0) {
        /* the queue says we are short although the estimate says we are not: add one */
        a = in->ready + 1;
    }
    return a;
}

/* Start latency (docs/engine.md "Start latency"): a created worker serves only after
 * create_latency, so creates follow the demand expected by then — the demand that has lasted a
 * quarter of that time (a shorter burst is served by what exists: ready, coming and parked
 * workers), extrapolated along its trend (against the same measure half a create latency
 * before; at most doubling) — plus the backlog spread over one create latency, plus the
 * shortfall that keeps adding to it until the new workers are ready.  The forecast alone raises
 * the target ahead of a ramp; with the backlog it caps what the load and queue rules would
 * create beyond the workers that exist.  Returns the adjusted target a. */
static int start_latency_rule(const struct scaler_in *in, double pe, double util, int a,
                              const char **reason)
{
    const struct ep_params *p = &in->p;
    if (!(in->create_latency > 0 && pe > 0)) return a;
    int avail = in->ready + in->pending_active + in->stopped + in->pending_park;
    double hc = in->create_latency;
    double sus = in->load_sustained > p->min_load ? in->load_sustained : p->min_load;
    double slope = 0; /* cost/s per s, rises only */
    if (in->load_prev_sustained >= 0 && in->load_sustained > in->load_prev_sustained)
        slope = (in->load_sustained - in->load_prev_sustained) / (hc / 2);
    double fc = sus + slope * hc;
    if (fc > 2 * sus) fc = 2 * sus; /* at most double within one create latency */
    double bl = in->backlog > 0 && isfinite(in->backlog) ? in->backlog : 0;
    double shortfall = sus - avail * pe;
    if (shortfall < 0) shortfall = 0;
    int af = ceil_div(fc / util, pe);
    int ac = ceil_div(fc / util + bl / hc + shortfall, pe);
    if (af > a && af > avail) {
        a = af;
        *reason = "forecast";
    } else if (a > avail) {
        if (ac < avail) ac = avail;
        if (ac < a) {
            a = ac;
            *reason = "create_horizon";
        }
    }
    return a;
}

/* The parked tier: the most of min_workers - a, (cold_mult - 1) x cap and min_cold_load - cap
 * in workers.  Where parking is not allowed the loaded floor (min_workers, min_cold_load) is
 * kept active instead (*a raised) and no worker is parked. */
static int parked_target(const struct scaler_in *in, double cap, double pe, int *a,
                         const char **reason)
{
    const struct ep_params *p = &in->p;
    if (!in->inactive_allowed) {
        /* no parking: keep the loaded floor active instead */
        if (p->min_workers > *a) {
            *a = p->min_workers;
            *reason = "min_workers";
        }
        int c = pe > 0 ? ceil_div(p->min_cold_load, pe) : (p->min_cold_load > 0 ? 1 : 0);
        if (c > *a) {
            *a = c;
            *reason = "min_cold_load";
        }
        return 0;
    }
    int i1 = p->min_workers - *a;
    int i2 = pe > 0 ? ceil_div((p->cold_mult - 1) * cap, pe) : 0;
    int i3;
    if (pe > 0)
        i3 = ceil_div(p->min_cold_load - cap, pe);
    else
        i3 = p->min_cold_load > cap ? 1 : 0;
    int i = i1;
    if (i2 > i) i = i2;
    if (i3 > i) i = i3;
    return i < 0 ? 0 : i;
}

void scaler_compute(const struct scaler_in *in, struct scaler_out *out)
{
    const struct ep_params *p = &in->p;
    double pe = in->perf_est > 0 ? in->perf_est : 0;
    double util = p->target_util > 0 ? p->target_util : 1;
    const char *reason;
    bool fast;
    double cap = wanted_cap(in, pe, util, &fast, &reason);
    int a = active_for_cap(in, cap, pe, fast, &reason);
    a = start_latency_rule(in, pe, util, a, &reason);
    if (in->qlen > 0 && a < 1) {
        a = 1;
        reason = "queue_waiting";
    }
    out->a_raw = a;

    /* hysteresis: down only to the largest target of the scale-down window */
    if (in->hist_max_a > a) {
        a = in->hist_max_a;
        reason = "scale_down_delay";
    }
    if (a == 0 && in->recently_active) {
        a = 1;
        reason = "inactivity_timeout";
    }

    int i = parked_target(in, cap, pe, &a, &reason);
    if (a > p->max_workers) {
        a = p->max_workers;
        reason = "max_workers";
    }
    if (i > p->max_workers - a) i = p->max_workers - a;
    if (i < 0) i = 0;
    out->active_cap = cap;
    out->inactive_cap = pe > 0 ? i * pe : 0;
    out->a = a;
    out->i = i;
    out->fast = fast;
    out->reason = reason;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double scaler_median(double *v, size_t n)
{
    size_t k = 0;
    for (size_t j = 0; j < n; j++)
        if (v[j] > 0 && isfinite(v[j])) v[k++] = v[j];
    if (k == 0) return 0;
    qsort(v, k, sizeof *v, cmp_double);
    return (k & 1) ? v[k / 2] : (v[k / 2 - 1] + v[k / 2]) / 2;
}

/* ---- Knative KPA (docs/engine.md "KPA policy") ---- */

void kpa_record(struct kpa_state *s, double now, double dt, double concurrency)
{
    if (!(dt > 0) || !isfinite(dt) || !isfinite(now) || now < 0) return;
    if (dt > 60) dt = 60; /* a stalled loop does not make one sample dominate */
    double c = isfinite(concurrency) && concurrency > 0 ? concurrency : 0;
    if (c > 1e9) c = 1e9;
    if (s->first_mono == 0) s->first_mono = now - dt > 0 ? now - dt : 1e-9;
    int64_t sec = (int64_t)floor(now);
    size_t k = (size_t)(sec % KPA_BUCKETS);
    if (s->b[k].sec != sec) {
        s->b[k].sec = sec;
        s->b[k].cdt = 0;
        s->b[k].dt = 0;
    }
    s->b[k].cdt += c * dt;
    s->b[k].dt += dt;
}

/* Time-averaged concurrency over the buckets of the last w seconds (Knative's window
 * average over 1 s buckets); 0 when nothing was recorded. */
static double kpa_window(const struct kpa_state *s, double now, double w)
{
    if (!(w >= 1)) w = 1;
    if (w > KPA_BUCKETS - 1) w = KPA_BUCKETS - 1;
    int64_t cur = (int64_t)floor(now);
    int n = (int)ceil(w);
    double cdt = 0, dt = 0;
    for (int j = 0; j < n; j++) {
        int64_t sec = cur - j;
        if (sec < 0) break;
        size_t k = (size_t)(sec % KPA_BUCKETS);
        if (s->b[k].sec != sec) continue;
        cdt += s->b[k].cdt;
        dt += s->b[k].dt;
    }
    return dt > 0 ? cdt / dt : 0;
}

void kpa_compute(struct kpa_state *s, const struct kpa_in *in, struct kpa_out *out)
{
    const struct ep_params *p = &in->p;
    double target = p->target_util > 0 ? p->target_util : 1; /* concurrency per instance */
    double pe = in->perf_est > 0 ? in->perf_est : 0;
    out->stable = kpa_window(s, in->now, in->stable_window_s);
    out->panic = kpa_window(s, in->now, in->panic_window_s);
    /* min_load is a floor on demand, in worker-equivalents */
    double floor_c = pe > 0 ? p->min_load / pe : (p->min_load > 0 ? target : 0);
    double st = out->stable > floor_c ? out->stable : floor_c;
    double pa = out->panic > floor_c ? out->panic : floor_c;
    int dspc, dppc;
    if (pe <= 0) { /* unknown perf: one worker until the first benchmark */
        dspc = st > 0 ? 1 : 0;
        dppc = pa > 0 ? 1 : 0;
    } else {
        dspc = ceil_div(st, target);
        dppc = ceil_div(pa, target);
    }
    /* Knative: readyPodsCount = max(1, ready); desired within [floor(ready / down rate),
     * ceil(up rate x ready)] */
    int ready = in->ready > 1 ? in->ready : 1;
    double upf = ceil(KPA_MAX_SCALE_UP_RATE * ready);
    int up = upf > 1e6 ? 1000000 : (int)upf;
    int down = (int)floor(ready / KPA_MAX_SCALE_DOWN_RATE);
    if (in->ready == 0) down = 0;
    if (dspc > up) dspc = up;
    if (dppc > up) dppc = up;
    if (dspc < down) dspc = down;
    if (dppc < down) dppc = down;
    out->desired_stable = dspc;
    out->desired_panic = dppc;
    bool over = (double)dppc / ready >= KPA_PANIC_THRESHOLD;
    if (over) {
        if (s->panic_since == 0) s->max_panic = 0;
        s->panic_since = in->now; /* (re)armed: panic lasts a stable window past the last */
    } else if (s->panic_since > 0 && in->now - s->panic_since >= in->stable_window_s) {
        s->panic_since = 0;
        s->max_panic = 0;
    }
    int a;
    const char *reason;
    if (s->panic_since > 0) {
        a = dppc > s->max_panic ? dppc : s->max_panic; /* never down while panicking */
        s->max_panic = a;
        reason = "kpa_panic";
    } else {
        a = dspc;
        reason = "kpa_stable";
    }
    if (in->qlen > 0 && a < 1) { /* the activator holds a request: scale from zero now */
        a = 1;
        reason = "queue_waiting";
    }
    /* scale to zero only after the grace period at zero */
    if (a == 0 && in->current > 0) {
        if (s->zero_since == 0) s->zero_since = in->now;
        if (in->now - s->zero_since < KPA_SCALE_TO_ZERO_GRACE_S) {
            a = 1;
            reason = "scale_to_zero_grace";
        }
    } else if (a > 0) {
        s->zero_since = 0;
    }
    out->panicking = s->panic_since > 0;
    /* the parked tier: the same rules as ours (docs/engine.md "Autoscaling") */
    double want = (st > pa ? st : pa) / target; /* worker-equivalents of active capacity */
    int i = 0;
    if (in->inactive_allowed) {
        int i1 = p->min_workers - a;
        int i2 = pe > 0 ? ceil_div((p->cold_mult - 1) * want, 1) : 0;
        int i3 = pe > 0 ? ceil_div(p->min_cold_load / pe - want, 1)
                        : (p->min_cold_load > 0 && a == 0 ? 1 : 0);
        i = i1 > i2 ? i1 : i2;
        if (i3 > i) i = i3;
        if (i < 0) i = 0;
    } else if (p->min_workers > a) {
        a = p->min_workers;
        reason = "min_workers";
    }
    if (a > p->max_workers) {
        a = p->max_workers;
        reason = "max_workers";
    }
    if (i > p->max_workers - a) i = p->max_workers - a;
    if (i < 0) i = 0;
    out->a = a;
    out->i = i;
    out->reason = reason;
}
