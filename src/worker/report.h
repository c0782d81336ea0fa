/* report: POST /worker_status/ and /delete_requests/ to the engine (docs/protocol.md §4),
 * asynchronous, one send at a time.  The send state and the queue of finished requests are
 * private in `struct report`. */
#ifndef SGPU_WORKER_REPORT_H
#define SGPU_WORKER_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include "sbuf.h"
#include "worker.h"

int report_init(struct worker *w); /* sets w->report, starts the 1 s tick */
void report_free(struct worker *w);
/* A request whose grant verified ended (v3: queued for /delete_requests/; times wall s). */
void report_request_done(struct worker *w, int64_t request_idx, enum outcome out, double t_enter,
                         double t_start, double t_done);
void report_now(struct worker *w); /* a status report as soon as none is in flight */
/* Last reports before exit: done(w, arg) once nothing is in flight any more. */
void report_final(struct worker *w, void (*done)(struct worker *, void *), void *arg);
/* For /status: reports accepted / failed, finished requests not yet sent. */
void report_counts(const struct worker *w, uint64_t *ok, uint64_t *failed, size_t *pending);

#endif
