/* The operator's dashboard: GET /ui/ (static files embedded in the binary at build time from
 * src/engine/ui/ by scripts/gen-ui-assets.py) and GET /api/v0/timeseries/?endpoint=NAME (the
 * endpoint's bounded time series, timeseries.h), plus the per-tick hook that records it.
 *
 * The static files hold no secret and are served without a key; every datum the page shows
 * comes from the management API with the admin key, which the page keeps in sessionStorage
 * and sends as `Authorization: Bearer` (never in a URL).  The time series, like keyinfo, takes
 * the key from that header only. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "api.h"
#include "clock.h"
#include "dash.h"
#include "engine.h"
#include "httputil.h"
#include "log.h"
#include "pyjson.h"
#include "timeseries.h"

struct ui_asset {
    const char *path; /* "/ui/app.js" */
    const char *type; /* Content-Type */
    const unsigned char *data;
    size_t len;
};
/* generated: static const struct ui_asset ui_assets[]; static const size_t ui_nassets; */
#include "scaler.h"
#include "state.h"
#include "ui_assets.inc"

_Static_assert(WS__COUNT == TS_NSTATES, "timeseries.h counts every worker state");

void dash_tick(struct endpoint *ep, double dt, double cost, const struct scaler_in *in,
               const struct scaler_out *out, const int *counts)
{
    if (!ep->ts && !(ep->ts = ts_new())) return; /* out of memory: no dashboard data */
    struct ts_sample s = {
        .t_wall = clock_wall(),
        .dt = dt,
        .routes = ep->ts_routes,
        .cost = cost,
        .load = in->load,
        .ready_cap = in->ready_cap,
        .queue_time = in->queue_time,
        .target_queue_time = ep->p.target_queue_time,
        .qlen = in->qlen,
        .a = out->a,
        .i = out->i,
        .ws = counts,
    };
    ep->ts_routes = 0;
    if (ts_record(ep->ts, &s) != 0) log_warn("timeseries_oom", "endpoint=%s", ep->name);
}

static void reply_error(struct evhttp_request *req, int status, const char *code, const char *msg)
{
    http_reply_json_error(req, status, code, "%s", msg);
}

/* Admin key from the Authorization header, else 401/403 replied and false. */
static bool auth_admin(struct engine *e, struct evhttp_request *req)
{
    const char *k = api_bearer_key(req);
    size_t kn = k ? strlen(k) : 0;
    if (api_key_eq(k, kn, e->admin_key)) return true;
    bool endpoint_key = false;
    for (struct endpoint *ep = e->endpoints; ep; ep = ep->next)
        endpoint_key |= api_key_eq(k, kn, ep->api_key);
    if (endpoint_key)
        reply_error(req, 403, "forbidden", "management needs the admin key");
    else
        reply_error(req, 401, "auth_error",
                    "Invalid user key (send the admin key as Authorization: Bearer KEY)");
    return false;
}

void dash_timeseries(struct engine *e, struct evhttp_request *req)
{
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    if (m != EVHTTP_REQ_GET && m != EVHTTP_REQ_HEAD) {
        reply_error(req, 405, "method_not_allowed", "use GET");
        return;
    }
    if (!auth_admin(e, req)) return;
    struct evkeyvalq q;
    TAILQ_INIT(&q);
    const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
    const char *qs = u ? evhttp_uri_get_query(u) : NULL;
    if (qs && evhttp_parse_query_str(qs, &q) != 0) {
        reply_error(req, 400, "bad_request", "malformed query string");
        return;
    }
    const char *name = evhttp_find_header(&q, "endpoint");
    const char *since_s = evhttp_find_header(&q, "since");
    double since = -INFINITY;
    struct endpoint *ep = NULL;
    char msg[160];
    if (!name) {
        reply_error(req, 400, "bad_request", "endpoint (query parameter) is required");
        goto done;
    }
    if (since_s) {
        char *end;
        since = strtod(since_s, &end);
        if (end == since_s || *end || !isfinite(since)) {
            reply_error(req, 400, "bad_request", "since must be a finite number (epoch s)");
            goto done;
        }
    }
    ep = state_endpoint_by_name(e, name);
    if (!ep) {
        snprintf(msg, sizeof msg, "no endpoint named %.80s", name);
        reply_error(req, 404, "not_found", msg);
        goto done;
    }
    const char *names[TS_NSTATES];
    for (int s = 0; s < TS_NSTATES; s++)
        names[s] = state_name((enum wstate)s);
    struct sbuf b = SBUF_INIT;
    sbuf_puts(&b, "{\"success\": true, \"endpoint\": ");
    pyj_write_string(&b, ep->name, strlen(ep->name));
    sbuf_printf(&b, ", \"now\": %.3f, ", clock_wall());
    ts_write_json(ep->ts, since, names, &b);
    sbuf_putc(&b, '}');
    http_reply_json(req, 200, b.data, b.len);
    sbuf_free(&b);
done:
    evhttp_clear_headers(&q);
}

void dash_ui(struct evhttp_request *req, const char *path)
{
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    if (m != EVHTTP_REQ_GET && m != EVHTTP_REQ_HEAD) {
        reply_error(req, 405, "method_not_allowed", "use GET");
        return;
    }
    if (strcmp(path, "/ui") == 0 || strcmp(path, "/ui/") == 0) path = "/ui/index.html";
    for (size_t k = 0; k < ui_nassets; k++) {
        if (strcmp(path, ui_assets[k].path) != 0) continue;
        struct evkeyvalq *h = evhttp_request_get_output_headers(req);
        /* everything the page loads comes from here: no inline script, no other origin */
        evhttp_add_header(h, "Content-Security-Policy",
                          "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
        evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
        evhttp_add_header(h, "Referrer-Policy", "no-referrer");
        evhttp_add_header(h, "Cache-Control", "no-cache");
        http_reply(req, 200, ui_assets[k].type, ui_assets[k].data, ui_assets[k].len);
        return;
    }
    reply_error(req, 404, "not_found", "no such dashboard file");
}
