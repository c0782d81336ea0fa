/* session: G3 sessions (docs/protocol.md §3.11): /session/create|end|get|health, the
 * WORKER_HTTP_PORT listener, the expiry sweep and the on_close call.  Sessions and the
 * listener are private in `struct session_state`. */
#ifndef SGPU_WORKER_SESSION_H
#define SGPU_WORKER_SESSION_H

#include <stdbool.h>

#include <event2/http.h>

#include "pyjson.h"
#include "sbuf.h"
#include "worker.h"

struct wsession;

int session_init(struct worker *w);
void session_free(struct worker *w);
/* Answers the /session/ routes and /pyworker/update: 1 when it handled the request. */
int session_route(struct worker *w, struct evhttp_request *req, const char *path);
struct wsession *session_find(struct worker *w, const struct pyj_value *id);
void session_attach(struct worker *w, struct wsession *s, struct wreq *wr); /* extends it */
/* v3 report: the open sessions' request_idx values, appended to a JSON list. */
void session_report_idxs(struct worker *w, struct sbuf *b, bool *first);
/* Open sessions (each one working request in reports) and their load for cur_load, clamped
 * to session_cost_cap(). */
int session_count(const struct worker *w);
double session_report_load(const struct worker *w);
/* Most load one grant's `cost` may add, and the most all sessions together add to reports:
 * min(SGPU_MAX_WORKLOAD, max_perf x SGPU_MAX_QUEUE_TIME) (issue 8: cost is unsigned in the
 * url scheme). */
double session_cost_cap(const struct worker *w);

#endif
