/* The operator's dashboard: GET /ui/ (static files embedded at build time) and
 * GET /api/v0/timeseries/?endpoint=NAME (the endpoint's time series), plus the per-tick hook
 * that records it (docs/engine.md "Dashboard"). */
#ifndef SGPU_ENGINE_DASH_H
#define SGPU_ENGINE_DASH_H

#include <event2/http.h>

struct engine;
struct endpoint;
struct scaler_in;
struct scaler_out;

/* Record the tick's point in ep's time series.  cost: cost of new requests since the last
 * tick; counts: workers by state (WS__COUNT). */
void dash_tick(struct endpoint *ep, double dt, double cost, const struct scaler_in *in,
               const struct scaler_out *out, const int *counts);
/* GET /ui, /ui/...: a dashboard file (path: the request's path). */
void dash_ui(struct evhttp_request *req, const char *path);
/* GET /api/v0/timeseries/?endpoint=NAME[&since=EPOCH_S] (admin key, Bearer header only). */
void dash_timeseries(struct engine *e, struct evhttp_request *req);

#endif
