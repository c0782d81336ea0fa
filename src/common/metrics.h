/* Prometheus metrics: counters, gauges and histograms registered once at
 * start-up, updated lock-free from one thread (or with atomics where noted),
 * rendered in the text exposition format (version 0.0.4).
 *
 * Series are identified by a full name with optional labels, e.g.
 *   metrics_counter(m, "sgpu_worker_requests_total{status=\"200\"}", "Requests answered")
 * Series sharing a base name share one HELP/TYPE block. */
#ifndef SGPU_METRICS_H
#define SGPU_METRICS_H

#include <stddef.h>

#include "sbuf.h"

struct metrics;
struct metrics_hist;

struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);

/* Returned pointers stay valid for the registry's lifetime; update them
 * directly (`*c += 1`).  Registering the same full name twice returns the
 * same pointer. */
double *metrics_counter(struct metrics *m, const char *name, const char *help);
double *metrics_gauge(struct metrics *m, const char *name, const char *help);
/* bounds: ascending upper bounds (the +Inf bucket is implicit). */
struct metrics_hist *metrics_histogram(struct metrics *m, const char *name, const char *help,
                                       const double *bounds, size_t nbounds);
/* Thread-safe (atomic adds): may be called from compute threads. */
void metrics_observe(struct metrics_hist *h, double v);

/* Callback run just before rendering, to refresh gauges from live state. */
void metrics_on_render(struct metrics *m, void (*fn)(void *), void *arg);

void metrics_render(struct metrics *m, struct sbuf *out);

#endif
