/* The store: SQLite, the durable copy of the engine's state (configuration written through,
 * hot worker state and the event log once per tick). */
#ifndef SGPU_ENGINE_STORE_H
#define SGPU_ENGINE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "sbuf.h"

struct store;

struct store *store_open(const char *path, char *err, size_t errlen);
void store_close(struct store *s);
int store_meta_get(struct store *s, const char *key, char *out, size_t n);
int store_meta_set(struct store *s, const char *key, const char *val);
/* Writes open a transaction lazily; store_flush commits it (every tick, and before a
 * management answer so configuration is durable when acknowledged). 0 or -1. */
int store_flush(struct store *s);
/* Undo the open transaction (after a failed write). */
void store_rollback(struct store *s);
/* A management change: commit what is pending, then open a transaction that
 * store_durable_commit commits with synchronous=FULL (fsynced before the 2xx).  Pass the
 * result of the writes as rc: on any failure the transaction is rolled back.  0 or -1. */
int store_durable_begin(struct store *s);
int store_durable_commit(struct store *s, int rc);
/* SQLite's message for the last failure (for logs and 5xx answers). */
const char *store_errmsg(struct store *s);
int store_endpoint_save(struct store *s, const struct endpoint *ep);
int store_endpoint_delete(struct store *s, int64_t id);
int store_wg_save(struct store *s, const struct workergroup *g); /* also fails, last_error */
int store_wg_delete(struct store *s, int64_t id);
int store_worker_save(struct store *s, const struct worker *w);
int store_worker_delete(struct store *s, int64_t id);
int store_api_key_add(struct store *s, const char *key, int64_t endpoint_id);
int store_event_add(struct store *s, double ts, int64_t endpoint_id, int64_t worker_id,
                    const char *kind, const char *reason, const char *inputs);
int store_events_trim(struct store *s, int keep);
/* Append a JSON array of events to out (newest `limit`, oldest first). endpoint_id < 0 = all. */
int store_events_json(struct store *s, int64_t endpoint_id, const char *ep_name, int limit,
                      struct sbuf *out);
/* Event lines for /get_endpoint_logs/: kinds of scaling decisions into a, state changes into b */
int store_events_text(struct store *s, int64_t endpoint_id, struct sbuf *decisions,
                      struct sbuf *states);
/* Load everything into e (endpoints, groups, workers).  0 or -1. */
int store_load(struct store *s, struct engine *e);

#endif
