/* The scaling policies: pure math from a tick's observations to worker targets (unit-tested):
 * ours (scaler_compute) and Knative's KPA (kpa_*).  docs/engine.md "Autoscaling". */
#ifndef SGPU_ENGINE_SCALER_H
#define SGPU_ENGINE_SCALER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"

struct scaler_in {
    struct ep_params p;
    double load;       /* predicted demand, cost/s */
    double perf_est;   /* per-worker perf; 0 = unknown */
    double ready_cap;  /* sum of max_perf of routable workers */
    double queue_time; /* observed, s */
    size_t qlen;       /* global queue length */
    int ready, pending_active, stopped, pending_park, total;
    bool inactive_allowed; /* provider can park workers */
    bool recently_active;  /* within inactivity_timeout (or timeout < 0) */
    int hist_max_a;        /* max active target over the scale-down window (-1 = none) */
    /* start-latency rules (docs/engine.md "Start latency"); create_latency 0 turns them off */
    double create_latency;      /* s: observed created -> ready time (0 = rules off: none seen,
                                 * or not longer than the panic window) */
    double load_sustained;      /* cost/s: lowest L over the last create_latency / 4 */
    double load_prev_sustained; /* the same, create_latency 3/4 .. 1/2 ago (-1 = no history) */
    double backlog;             /* cost: waiting requests + work outstanding on ready workers */
};
struct scaler_out {
    double active_cap, inactive_cap;
    int a_raw; /* before hysteresis */
    int a, i;  /* targets (workers) */
    bool fast; /* queue-time scale-up fired */
    const char *reason;
};
void scaler_compute(const struct scaler_in *in, struct scaler_out *out);

/* Knative KPA (docs/engine.md "KPA policy"), on the same actuation as ours.  Observed
 * concurrency is in worker-equivalents: demand (cost/s) / perf_est, i.e. by Little's law the
 * number of workers busy serving it at max_perf; target concurrency per instance = target_util.
 * Averaged in 1 s buckets over the stable and panic windows. */
#define KPA_BUCKETS 600              /* 1 s buckets: windows up to 10 min */
#define KPA_PANIC_THRESHOLD 2.0      /* panic when desired(panic) / ready >= 2 (200 %) */
#define KPA_MAX_SCALE_UP_RATE 1000.0 /* desired <= ceil(1000 x ready) */
#define KPA_MAX_SCALE_DOWN_RATE 2.0  /* desired >= floor(ready / 2) */
#define KPA_SCALE_TO_ZERO_GRACE_S 30.0
struct kpa_state {
    struct {
        int64_t sec;    /* floor(mono s) of this bucket */
        double cdt, dt; /* sum of concurrency x dt, sum of dt */
    } b[KPA_BUCKETS];
    double first_mono;  /* first sample (windows are shorter until then); 0 = none */
    double panic_since; /* mono s when panic mode began or was last re-armed; 0 = not */
    int max_panic;      /* highest desired count while panicking (never down in panic) */
    double zero_since;  /* mono s since which the desired count is 0 (grace); 0 = not */
};
struct kpa_in {
    struct ep_params p;
    double now; /* mono s */
    double stable_window_s, panic_window_s;
    double perf_est; /* 0 = unknown */
    int ready;       /* routable workers */
    int current;     /* ready + pending active */
    size_t qlen;     /* waiting requests (the activator's buffer) */
    bool inactive_allowed;
};
struct kpa_out {
    double stable, panic; /* averaged concurrency, worker-equivalents */
    int desired_stable, desired_panic;
    int a, i;
    bool panicking;
    const char *reason;
};
/* Add one tick's observed concurrency (worker-equivalents) over dt seconds. */
void kpa_record(struct kpa_state *s, double now, double dt, double concurrency);
void kpa_compute(struct kpa_state *s, const struct kpa_in *in, struct kpa_out *out);
/* Median of the positive values in v (0 if none).  Reorders v. */
double scaler_median(double *v, size_t n);

#endif
