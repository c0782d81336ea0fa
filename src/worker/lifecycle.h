/* lifecycle: the worker's phases (loading -> benchmarking -> ready; error; draining), from
 * the MODEL_LOG tail, health probes, the benchmark and the engine key.  Log tail and probe
 * state private in `struct lifecycle`. */
#ifndef SGPU_WORKER_LIFECYCLE_H
#define SGPU_WORKER_LIFECYCLE_H

#include <stdbool.h>

#include "worker.h"

int lifecycle_init(struct worker *w);
void lifecycle_free(struct worker *w);
const char *phase_name(enum phase p);
void worker_set_phase(struct worker *w, enum phase p);
/* error_msg set, phase error, report sent (no-op once in error or draining). */
void worker_error(struct worker *w, const char *msg);
void lifecycle_model_loaded(struct worker *w, const char *why);
void lifecycle_check_ready(struct worker *w); /* e.g. after the public key arrived */
/* Everything but the engine key is ready: requests get 401 rather than 503. */
bool lifecycle_awaiting_key(const struct worker *w);
/* The benchmark ended: perf = max_perf (workload/s), or err = why the worker is in error. */
void lifecycle_benchmark_done(struct worker *w, double perf, const char *err);

#endif
