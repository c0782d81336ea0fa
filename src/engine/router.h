/* /route/: pick a worker and sign a grant, or queue (and long-poll) the request; grant records
 * for /delete_requests/.  See router.c for the fairness rule and the long poll. */
#ifndef SGPU_ENGINE_ROUTER_H
#define SGPU_ENGINE_ROUTER_H

#include <stdbool.h>
#include <stdint.h>
#include <event2/http.h>

#include "engine.h"
#include "sbuf.h"

/* Answer one authenticated, parsed /route/ call (req): a grant, "waiting" (possibly after a
 * long poll), or an error body.  Every /route/ answer is sent from router.c: inline, when a
 * held request is granted or expires, or when the signing threads hand back a signature.
 * t0: arrival (mono s). */
void router_handle(struct engine *e, struct endpoint *ep, double cost, int64_t request_idx,
                   double replay_timeout, struct evhttp_request *req, double t0);
/* The decision behind router_handle (unit-tested): appends the JSON answer to out.
 * Returns the HTTP status, or 0 when the answer was handed to the signing threads (req is then
 * answered later; only when req is not NULL and a sign pool runs).  t0: arrival (mono s). */
int router_route(struct engine *e, struct endpoint *ep, double cost, int64_t request_idx,
                 double replay_timeout, struct sbuf *out, struct evhttp_request *req, double t0);
/* A ready worker past its endpoint's max_queue_time (with 0: any outstanding work). */
bool router_worker_full(const struct endpoint *ep, const struct worker *w);
/* Estimated queue time of a worker in seconds (inf if max_perf is 0). */
double router_queue_time(const struct worker *w);
/* Drop waiting requests not polled within their timeout. */
void router_expire(struct engine *e, struct endpoint *ep, double now);
void router_queue_clear(struct endpoint *ep);
/* State counts for the "status" member of a waiting answer, appended as a JSON object. */
void router_status_json(struct endpoint *ep, struct sbuf *out);
/* Long poll: create/free the deferred kick event and the grant table. */
int router_init(struct engine *e);
void router_fini(struct engine *e);
/* Capacity of ep may have freed (report, worker ready, work done): grant held requests in
 * FIFO order, soon (from the loop, never re-entrantly). */
void router_kick(struct engine *e, struct endpoint *ep);
/* Answer every held request with its waiting body now (shutdown). */
void router_release_all(struct engine *e);
/* The endpoint's workergroup became failing: answer its held requests with the 503 now. */
void router_fail_held(struct engine *e, struct endpoint *ep);
/* The 503 body of a /route/ call to an endpoint whose workergroup g is failing. */
void router_failing_json(const struct endpoint *ep, const struct workergroup *g, struct sbuf *out);
/* /delete_requests/ from worker `from`: the grant's work is done; frees its capacity in the
 * estimate.  1 closed, 0 no such grant (unknown or expired), -1 the grant belongs to another
 * worker (left open). */
int router_grant_done(struct engine *e, const struct worker *from, int64_t request_idx);
/* A report listed request_idx as working (after w->report_seq was incremented). */
void router_grant_working(struct engine *e, struct worker *w, int64_t request_idx);
/* Drop grant records older than the TTL. */
void router_grants_expire(struct engine *e, double now);
/* Requests waiting in ep's global queue. */
size_t router_queue_len(const struct endpoint *ep);
/* Total cost of the requests waiting in ep's global queue. */
double router_queue_cost(const struct endpoint *ep);
/* Age in seconds of the oldest waiting request of ep (0 = none). */
double router_queue_age(const struct endpoint *ep, double now);

#endif
