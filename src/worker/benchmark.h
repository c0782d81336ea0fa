/* benchmark: max_perf measured at start-up (warm-up + rounds, sized to the model's context),
 * cached in SGPU_BENCHMARK_FILE, or estimated from served requests when the model refuses the
 * benchmark (fallback).  State private in `struct benchmark`. */
#ifndef SGPU_WORKER_BENCHMARK_H
#define SGPU_WORKER_BENCHMARK_H

#include <stdbool.h>

#include "sbuf.h"
#include "worker.h"

int benchmark_init(struct worker *w); /* sets w->bench (registers its /metrics gauge) */
void benchmark_free(struct worker *w);
int benchmark_start(struct worker *w); /* w->bench_handler's payload */
void benchmark_stop(struct worker *w); /* cancels a run in progress, if any */
/* /status "benchmark" object: how max_perf was obtained, the fallback's cause, the shape. */
void benchmark_status_json(const struct worker *w, struct sbuf *b);
int benchmark_cache_read(const char *path, double *perf);
int benchmark_cache_write(const char *path, double perf);
/* A request ended: with the fallback estimate, a successful one refines max_perf
 * (workload units, seconds from admission to the end). */
void benchmark_observe(struct worker *w, bool success, double workload, double seconds);
/* Size the worker's own benchmark to a model context: (words, max_new) shrunk so that the
 * prompt (<= 8 tokens per word) plus the generation fit total tokens and the prompt fits
 * max_input (0 = total - 1).  Pure (unit-tested). */
void benchmark_size(int total, int max_input, int *words, int *max_new);

#endif
