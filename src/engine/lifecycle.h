/* Worker lifecycle: reports in, provider operations out, and the per-tick scaling loop that
 * turns scaler targets into create/start/drain/stop/destroy actions; shutdown. */
#ifndef SGPU_ENGINE_LIFECYCLE_H
#define SGPU_ENGINE_LIFECYCLE_H

#include <stdbool.h>
#include <stddef.h>
#include <json-c/json.h>

#include "engine.h"

void lifecycle_tick(struct engine *e);
/* Provider completions go to lifecycle.c from now on (provider_set_events). */
void lifecycle_init(void);
/* Close the breaker of g (management API: update or `retry`): failures forgotten, creates
 * allowed at once.  why: "retry" or "updated" (event reason). */
void lifecycle_wg_reset(struct engine *e, struct workergroup *g, const char *why);
/* An endpoint that cannot get a ready worker because its workergroup is failing: that
 * workergroup (else NULL). */
struct workergroup *lifecycle_wg_blocking(struct engine *e, struct endpoint *ep);
/* Apply a parsed /worker_status/ body.  Returns the HTTP status; err gets a message. */
int lifecycle_report(struct engine *e, struct json_object *body, char *err, size_t errlen);
/* Mark all workers of an endpoint/workergroup for removal. */
void lifecycle_retire_endpoint(struct engine *e, struct endpoint *ep);
void lifecycle_retire_wg(struct engine *e, struct workergroup *g);
/* The event kinds counted as scaling actions, by index of engine.c_actions
 * (sgpu_engine_scale_actions_total{action=...}). */
#define LIFECYCLE_NACTIONS 8
extern const char *const lifecycle_actions[LIFECYCLE_NACTIONS];
/* Record a decision: log line, event row (batched), metrics. inputs = JSON object text or NULL */
void lifecycle_event(struct engine *e, const struct endpoint *ep, const struct worker *w,
                     const char *kind, const char *reason, const char *inputs);
void lifecycle_shutdown(struct engine *e);
/* SIGTERM: stop scaling and routing, ask local instances to stop (they drain), keep the loop
 * serving reports until they are gone or shutdown_timeout_s passed, then break the loop. */
void lifecycle_shutdown_begin(struct engine *e);
/* No ready worker: make a parked one serve now (an idle parking worker is activated, a
 * stopped one started).  true if one was. */
bool lifecycle_wake_parked(struct engine *e, struct endpoint *ep);

#endif
