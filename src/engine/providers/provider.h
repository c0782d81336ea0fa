/* Providers: what creates, starts, stops and destroys a workergroup's instances.
 *
 * Each provider is one file in providers/ exporting one `const struct provider_ops` (a table
 * of functions, as redis chooses its event-loop backend); a workergroup picks its table at
 * creation (`"provider": "local"`) and provider.c dispatches through it.  A provider reports
 * what happened only through provider_op_done / provider_instance_exited (the completion
 * interface below), never into lifecycle internals.
 *
 * Adding a provider: write providers/NAME.c with `const struct provider_ops NAME_provider`, add
 * its extern line below and its row to the table in providers/provider.c. */
#ifndef SGPU_ENGINE_PROVIDER_H
#define SGPU_ENGINE_PROVIDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "rc.h"
#include "sbuf.h"

struct engine;
struct workergroup;
struct worker;

enum prov_op { OP_CREATE = 0, OP_START, OP_STOP, OP_DESTROY };

struct provider_ops {
    const char *name; /* "local", "command": the workergroup's "provider" field */
    /* Check the provider's members of a workergroup's launch object (an object; the common
     * members were checked).  0, or -1 with a message. */
    int (*validate)(struct json_object *launch, char *err, size_t errlen);
    /* Start op on w's instance; completion through provider_op_done (possibly before return).
     * SGPU_OK started, SGPU_ERROR could not start (say why with provider_fail).  Required. */
    int (*op)(struct engine *e, struct workergroup *g, struct worker *w, enum prov_op op);
    /* Workers of g can be parked (stopped with the model loaded).  NULL = never. */
    bool (*can_park)(const struct workergroup *g);
    /* After an engine restart: re-attach to w's instance recorded in the store.  NULL = no-op. */
    void (*adopt)(struct engine *e, struct worker *w);
    /* Each tick: liveness of w's instance (provider_instance_exited when gone).  NULL = none. */
    void (*poll)(struct engine *e, struct worker *w);
    /* Engine exit (SIGTERM): what happens to w's instance (local: asked to stop and drain unless
     * keep; command: left running, logged).  NULL = nothing. */
    void (*shutdown)(struct engine *e, struct worker *w, bool keep);
    /* Shutdown progress: add what this provider still waits for (instances running, operations
     * in flight) to *instances / *ops.  NULL = nothing. */
    void (*shutdown_pending)(struct engine *e, int *instances, int *ops);
    /* End of shutdown (the wait is over): kill what is left.  NULL = nothing. */
    void (*shutdown_finish)(struct engine *e);
    /* A started (resumed) instance still has its model loaded: routable at once. */
    bool start_keeps_model;
};

/* The providers (providers/<name>.c). */
extern const struct provider_ops local_provider;
extern const struct provider_ops command_provider;

/* ---- for the engine (lifecycle, API, store) ---- */

/* The provider named s, or NULL. */
const struct provider_ops *provider_find(const char *s);
/* "\"local\" or \"command\"": the names, for error messages. */
const char *provider_names(void);
const char *provider_op_name(enum prov_op op);
/* Common checks of a launch object, then the provider's own.  0, or -1 with a message. */
int provider_validate(const struct provider_ops *ops, struct json_object *launch, char *err,
                      size_t errlen);
bool provider_can_park(const struct workergroup *g);
/* Start an operation; completion comes through provider_op_done (possibly before return).
 * SGPU_OK if started, SGPU_ERROR if it could not be (provider_op_done already said it failed). */
int provider_op(struct engine *e, struct workergroup *g, struct worker *w, enum prov_op op);
/* After restart: re-attach to an instance recorded in the store. */
void provider_adopt(struct engine *e, struct workergroup *g, struct worker *w);
/* Engine exit (SIGTERM): local instances are asked to stop unless keep; command instances are
 * left running (logged, re-adopted on the next start). */
void provider_shutdown(struct engine *e, struct worker *w, bool keep);
/* What shutdown still waits for: instances running and provider operations in flight (their
 * results are stored), summed over the providers. */
void provider_shutdown_pending(struct engine *e, int *instances, int *ops);
/* The wait is over: every provider kills what is left. */
void provider_shutdown_finish(struct engine *e);
/* Per-tick liveness checks (adopted local processes). */
void provider_poll(struct engine *e, struct worker *w);
/* launch.tokenless_reports is "url_secret": the workergroup runs token-less generation-1
 * workers (docs/engine.md, "Token-less generation-1 workers"). */
bool provider_tokenless(const struct workergroup *g);

/* ---- completion interface: how providers report back ---- */

/* Where completions go (lifecycle.c sets it once at start-up; unset = dropped). */
struct provider_events {
    /* Operation op on worker id finished: rc 0 success; msg says what happened; instance
     * (may be NULL) is the provider's handle after a create. */
    void (*op_done)(struct engine *e, int64_t id, enum prov_op op, int rc, const char *msg,
                    const char *instance);
    /* Worker id's instance went away by itself. */
    void (*instance_exited)(struct engine *e, int64_t id, const char *why);
};
void provider_set_events(const struct provider_events *ev);
void provider_op_done(struct engine *e, int64_t id, enum prov_op op, int rc, const char *msg,
                      const char *instance);
void provider_instance_exited(struct engine *e, int64_t id, const char *why);

/* ---- helpers for providers ---- */

/* launch.env: an object mapping variable names (non-empty, no '=') to strings. 0 or -1. */
int provider_validate_env(struct json_object *env, char *err, size_t errlen);
/* The REPORT_ADDR an instance gets: the engine's public URL, with the worker's token as URL
 * user info ("http://sgpu:TOKEN@host:port") when provider_tokenless(g). */
void provider_report_addr(struct engine *e, const struct workergroup *g, const struct worker *w,
                          struct sbuf *out);
/* Why the current provider operation could not start (logged and kept as the create's error
 * by provider_op); returns SGPU_ERROR for `return provider_fail(...)`. */
int provider_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
