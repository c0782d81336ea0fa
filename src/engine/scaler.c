/* Scaling math: from an endpoint's parameters and observed load to worker-count targets.
 * Pure (no engine state) so it is unit-tested directly; lifecycle.c gathers the inputs and
 * applies the targets.  Units: load and capacities in perf units per second (workload/s),
 * times in seconds.  See docs/engine.md "Autoscaling" for the rules. */
#include <math.h>
#include <stdlib.h>

#include "engine.h"

static int ceil_div(double cap, double per)
{
    if (cap <= 0) return 0;
    double n = ceil(cap / per - 1e-9);
    if (n > 1e6) n = 1e6;
    return (int)n;
}

void scaler_compute(const struct scaler_in *in, struct scaler_out *out)
{
    const struct ep_params *p = &in->p;
    double pe = in->perf_est > 0 ? in->perf_est : 0;
    double util = p->target_util > 0 ? p->target_util : 1;
    double base = in->load > p->min_load ? in->load : p->min_load;
    double cap = base / util;
    const char *reason = in->load > p->min_load ? "load" : "min_load";
    bool fast = false;

    /* fast scale-up: the queue is longer than the endpoint tolerates */
    if (p->target_queue_time > 0 && in->queue_time > p->target_queue_time) {
        double f = in->queue_time / p->target_queue_time;
        if (f > 2) f = 2;
        double want = in->ready_cap * f + pe;
        if (want > cap) {
            cap = want;
            fast = true;
            reason = "queue_time";
        }
    }

    int a;
    if (cap <= 0)
        a = 0;
    else if (pe <= 0)
        a = 1; /* unknown perf: one worker until the first benchmark */
    else
        a = ceil_div(cap, pe);
    if (in->qlen > 0 && a < 1) {
        a = 1;
        reason = "queue_waiting";
    }
    if (fast && a <= in->ready + in->pending_active && in->ready > 0 && in->pending_active == 0) {
        /* the queue says we are short although the estimate says we are not: add one */
        a = in->ready + 1;
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

    int i = 0;
    if (in->inactive_allowed) {
        int i1 = p->min_workers - a;
        int i2 = pe > 0 ? ceil_div((p->cold_mult - 1) * cap, pe) : 0;
        int i3;
        if (pe > 0)
            i3 = ceil_div(p->min_cold_load - cap, pe);
        else
            i3 = p->min_cold_load > cap ? 1 : 0;
        i = i1;
        if (i2 > i) i = i2;
        if (i3 > i) i = i3;
        if (i < 0) i = 0;
    } else {
        /* no parking: keep the loaded floor active instead */
        if (p->min_workers > a) {
            a = p->min_workers;
            reason = "min_workers";
        }
        int c = pe > 0 ? ceil_div(p->min_cold_load, pe) : (p->min_cold_load > 0 ? 1 : 0);
        if (c > a) {
            a = c;
            reason = "min_cold_load";
        }
    }
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
