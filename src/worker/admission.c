/* Admission: route found, is this request admitted?  Steps in order, each answering and
 * counting the request it declines: envelope (422), workload, readiness gate (503), grant
 * (401), session (410), 429 estimate.  Order follows PyWorker G3 (docs/protocol.md §3.10)
 * except that a non-ready worker answers 503 instead of forwarding (B29), and the session
 * check runs after the signature (B15).  Nothing here holds request state: an admitted request
 * becomes a `struct wreq` in request.c. */
#include <math.h>
#include <string.h>

#include "admission.h"
#include "auth.h"
#include "clock.h"
#include "envelope.h"
#include "httputil.h"
#include "lifecycle.h"
#include "log.h"
#include "rc.h"
#include "reply.h"
#include "report.h"
#include "session.h"

double wire_cap(struct worker *w, double x, double cap, const char *what)
{
    static bool cap_logged; /* once per process: hostile numbers must not flood the log */
    if (isfinite(x) && x >= 0 && x <= cap) return x;
    double y = x > cap ? cap : 0; /* +Inf and big -> cap; NaN, -Inf, negative -> 0 */
    *w->m_workload_capped += 1;
    if (!cap_logged) {
        cap_logged = true;
        log_warn("number_capped", "what=%s value=%g cap=%g to=%g (logged once)", what, x, cap, y);
    } else {
        log_debug("number_capped", "what=%s value=%g cap=%g to=%g", what, x, cap, y);
    }
    return y;
}

/* A declined request: its workload is rej_load; auth_ok = its verified grant, whose
 * request_idx is then reported back (only verified grants are, B18). */
static void count_reject(struct worker *w, double workload, const struct pyj_value *auth_ok,
                         double t_enter)
{
    w->cur.rejected += workload;
    w->n_out[OUT_REJECTED]++;
    *w->m_req_total[OUT_REJECTED] += 1;
    w->update_pending = true;
    int64_t idx;
    if (auth_ok && pyj_int64(pyj_get(auth_ok, "request_idx"), &idx))
        report_request_done(w, idx, OUT_REJECTED, t_enter, 0, clock_wall());
}

static double workload_of(struct worker *w, const struct handler *h, const struct envelope *env)
{
    /* capped before it can enter any counter (rej_load, cur_load, ...): issue 8 */
    return wire_cap(w, handler_workload(h, env->payload), w->cfg.max_workload, "workload");
}

/* Readiness: 401 while only the engine key is missing, 503 otherwise. */
static int gate_ready(struct worker *w, struct evhttp_request *req, double wl, double t_enter)
{
    if (w->phase == PH_READY) return SGPU_OK;
    count_reject(w, wl, NULL, t_enter);
    if (lifecycle_awaiting_key(w)) {
        /* No key yet, so no grant can verify: 401 as for a bad grant (the
         * engine still sees max_perf 0, i.e. not ready). */
        log_debug("auth_rejected", "why=\"no public key\"");
        *w->m_status_401 += 1;
        reply_empty(req, 401);
    } else {
        reply_not_ready(w, req);
    }
    return SGPU_DECLINED;
}

/* The grant (401), then a large body's deferred payload (422) and its workload. */
static int gate_grant(struct worker *w, const struct handler *h, struct evhttp_request *req,
                      struct envelope *env, double *wl, double t_enter)
{
    const char *why = "";
    int arc = auth_check(w, env->auth, &why);
    if (arc != 0) {
        log_debug("auth_rejected", "why=\"%s\"", why);
        count_reject(w, *wl, NULL, t_enter);
        if (arc == AUTH_INVALID) {
            *w->m_status_401 += 1;
            reply_empty(req, 401);
        } else {
            auth_reply_wrong(w, req, arc, env->auth); /* a grant for another worker */
        }
        return SGPU_DECLINED;
    }
    if (env->deferred) { /* large body whose workload needs the whole payload: now, after auth */
        if (envelope_parse_deferred(req, env) != 0) {
            *w->m_status_422 += 1;
            return SGPU_DECLINED;
        }
        *wl = workload_of(w, h, env);
    }
    return SGPU_OK;
}

/* session_id: looked up only after the grant verified (B15): an unauthenticated caller gets
 * the same 401 for known and unknown ids, and cannot extend a session.  Extended only once
 * admitted (request.c). */
static int gate_session(struct worker *w, struct evhttp_request *req, const struct envelope *env,
                        struct wsession **sess)
{
    *sess = NULL;
    if (!env->session || env->session->type == PYJ_NULL) return SGPU_OK;
    *sess = session_find(w, env->session);
    if (*sess) return SGPU_OK;
    const char *b = "{\"error\": \"invalid session\"}";
    reply_json(req, 410, "application/json; charset=utf-8", b, strlen(b));
    return SGPU_DECLINED;
}

/* 429: PyWorker's admission estimate (queued + running workload / max_perf), skipped while
 * max_perf is unknown (B28), and the serial FIFO's length. */
static int gate_capacity(struct worker *w, const struct handler *h, struct evhttp_request *req,
                         const struct envelope *env, double wl, double t_enter)
{
    bool over = h->max_queue_time >= 0 && w->max_perf > 0 &&
                w->working_load / w->max_perf > h->max_queue_time;
    if (!h->parallel && h->nqueued >= w->cfg.queue_limit) over = true;
    if (!over) return SGPU_OK;
    count_reject(w, wl, env->auth, t_enter);
    *w->m_status_429 += 1;
    reply_empty(req, 429);
    return SGPU_DECLINED;
}

/* The admitted request's payload bytes: as the client sent them (B7), else re-serialised. */
static void admit_payload(const struct envelope *env, struct admit *a)
{
    if (env->payload_raw) {
        a->payload = env->payload_raw;
        a->payload_len = env->payload_len;
        return;
    }
    struct sbuf b = SBUF_INIT;
    struct pyj_dump_opts o = {.indent = -1};
    pyj_dump(env->payload, &o, &b);
    a->payload_owned = sbuf_steal(&b, &a->payload_len);
    a->payload = a->payload_owned;
}

int admission_check(struct worker *w, struct handler *h, struct evhttp_request *req,
                    struct admit *a)
{
    memset(a, 0, sizeof *a);
    a->t_enter = clock_wall();
    size_t len;
    const char *body = http_request_body(req, &len);
    struct envelope env;
    if (envelope_parse(w, h, req, body, len, &env) != 0) {
        *w->m_status_422 += 1;
        return SGPU_DECLINED;
    }
    double wl = workload_of(w, h, &env);
    int rc = gate_ready(w, req, wl, a->t_enter);
    if (rc == SGPU_OK) rc = gate_grant(w, h, req, &env, &wl, a->t_enter);
    if (rc == SGPU_OK) rc = gate_session(w, req, &env, &a->session);
    if (rc == SGPU_OK) rc = gate_capacity(w, h, req, &env, wl, a->t_enter);
    if (rc == SGPU_OK) {
        a->workload = wl;
        /* A session request is not reported on its own: the session is the one
         * request the engine knows (its request_idx goes out when it closes). */
        a->has_idx = !a->session && w->cfg.report_fmt == REPORT_V3 &&
                     pyj_int64(pyj_get(env.auth, "request_idx"), &a->request_idx);
        admit_payload(&env, a);
    }
    envelope_free(&env);
    return rc;
}
