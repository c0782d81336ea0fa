/* Bounded in-memory time series per endpoint, for the dashboard (/ui/) and
 * GET /api/v0/timeseries/?endpoint=NAME (docs/engine.md "Time series").
 *
 * One point per scaler tick, covering at least TS_MIN_STEP_S x 0.9 s (faster ticks are merged:
 * rates are averaged over the merged interval, gauges are the last tick's; the 0.9 keeps 1 s
 * ticks with timer jitter one point each), kept for at least one hour: a ring of at most
 * TS_CAP points, grown on demand.  A point is 64 bytes, so an endpoint costs at most
 * 4000 x 64 = 250 KiB (nothing before its first tick); 100 endpoints 25 MiB. */
#ifndef SGPU_TIMESERIES_H
#define SGPU_TIMESERIES_H

#include <stddef.h>
#include <stdint.h>

#include "sbuf.h"

#define TS_CAP 4000       /* points kept per endpoint (>= 3600 s / 0.9 s) */
#define TS_MIN_STEP_S 1.0 /* a point covers at least this many seconds */
#define TS_NSTATES 10     /* worker states counted (enum wstate, WS__COUNT) */

struct ts_point {
    double t;                /* epoch s at the end of the interval */
    float routes_s;          /* new /route/ requests per second over the interval */
    float cost_s;            /* cost of new requests per second (demand) */
    float load;              /* the scaler's predicted load, cost/s */
    float ready_cap;         /* sum of max_perf of routable workers, cost/s */
    float queue_time;        /* the scaler's observed queue time, s */
    float target_queue_time; /* the endpoint's parameter at that time, s */
    uint32_t qlen;           /* global queue length */
    uint16_t a, i;           /* active / inactive targets */
    uint16_t ws[TS_NSTATES]; /* workers by state */
};

struct ts_ring {
    struct ts_point *pts; /* ring storage, cap entries */
    size_t cap, len, pos; /* pos = next slot to write */
    /* the point being accumulated (ticks shorter than TS_MIN_STEP_S) */
    double acc_dt, acc_routes, acc_cost;
};

/* What one tick observed.  routes/cost: new requests (count, cost) since the last tick. */
struct ts_sample {
    double t_wall, dt;
    double routes, cost;
    double load, ready_cap, queue_time, target_queue_time;
    size_t qlen;
    int a, i;
    const int *ws; /* TS_NSTATES counts */
};

struct ts_ring *ts_new(void);
void ts_free(struct ts_ring *r);
/* Record one tick.  0, or -1 when memory ran out (the sample is dropped). */
int ts_record(struct ts_ring *r, const struct ts_sample *s);
/* Points stored (for tests). */
size_t ts_len(const struct ts_ring *r);
/* Append the points with t > since as a JSON object of columns (no braces; starts with a
 * key): "t": [...], "routes_s": [...], ..., "workers": {"<state>": [...], ...}.
 * state_names: TS_NSTATES names. */
void ts_write_json(const struct ts_ring *r, double since, const char *const *state_names,
                   struct sbuf *out);

#endif
