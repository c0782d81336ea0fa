/* The registry of endpoints, workergroups and workers (lists in struct engine, workers also
 * indexed by id and listed per endpoint); state names; the JSON of each object. */
#ifndef SGPU_ENGINE_STATE_H
#define SGPU_ENGINE_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "sbuf.h"

const char *state_name(enum wstate s);
struct endpoint *state_endpoint_by_name(struct engine *e, const char *name);
struct endpoint *state_endpoint_by_id(struct engine *e, int64_t id);
struct workergroup *state_wg_by_id(struct engine *e, int64_t id);
struct workergroup *state_wg_for_endpoint(struct engine *e, int64_t endpoint_id);
struct worker *state_worker_by_id(struct engine *e, int64_t id);
struct endpoint *state_endpoint_add(struct engine *e, struct endpoint *ep); /* takes ownership */
void state_endpoint_remove(struct engine *e, struct endpoint *ep);          /* frees */
struct workergroup *state_wg_add(struct engine *e, struct workergroup *g);
void state_wg_remove(struct engine *e, struct workergroup *g);
struct worker *state_worker_add(struct engine *e, struct worker *w);
void state_worker_remove(struct engine *e, struct worker *w); /* frees */
void state_set(struct engine *e, struct worker *w, enum wstate s, const char *why);
/* Random lowercase hex of n chars into out (n+1 bytes).  0 or -1. */
int state_random_hex(char *out, size_t n);
/* Append a worker object (JSON) to out. */
void state_worker_json(struct engine *e, const struct worker *w, struct sbuf *out);
/* Append an endpoint list row (JSON) to out. */
void state_endpoint_json(struct engine *e, const struct endpoint *ep, struct sbuf *out);
void state_wg_json(struct engine *e, const struct workergroup *g, struct sbuf *out);
bool state_is_ready(const struct worker *w);

#endif
