/* admission: whether one request for a handler is admitted, in PyWorker G3's order with its
 * bugs fixed: envelope (422), workload, readiness (503), grant (401), session (410), the 429
 * estimate.  A request that is not admitted is answered and counted here. */
#ifndef SGPU_WORKER_ADMISSION_H
#define SGPU_WORKER_ADMISSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/http.h>

#include "handlers.h"
#include "worker.h"

/* What an admitted request carries on. */
struct admit {
    double workload;          /* capped at SGPU_MAX_WORKLOAD */
    double t_enter;           /* wall clock at arrival */
    struct wsession *session; /* live session named by session_id, else NULL */
    bool has_idx;             /* request_idx reported in v3 reports (not for a session) */
    int64_t request_idx;
    const char *payload; /* bytes to forward: inside the client body, or payload_owned */
    size_t payload_len;
    char *payload_owned; /* re-serialised payload (the caller frees it), or NULL */
};

/* SGPU_OK: admitted, *a filled.  SGPU_DECLINED: answered (422/401/503/410/429) and counted. */
int admission_check(struct worker *w, struct handler *h, struct evhttp_request *req,
                    struct admit *a);
/* A number from the wire made safe for counters: NaN / negative -> 0, above cap -> cap
 * (counted in /metrics, logged once at warn).  `what` names it in the log. */
double wire_cap(struct worker *w, double x, double cap, const char *what);

#endif
