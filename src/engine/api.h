/* The engine's HTTP API: one listener, one dispatcher (api.c) and route tables (method + path ->
 * handler) in two files: api_wire.c (the Vast wire routes that workers, the SDK and the CLI
 * call) and api_mgmt.c (the management API under /api/v0/ and the dashboard).  Adding a route
 * is adding a handler and a table row.
 *
 * Every bad input gets a precise 4xx {"success": false, "error", "msg"} (http_json_error);
 * bodies are parsed with json-c in strict mode with UTF-8 validation and a depth limit. */
#ifndef SGPU_ENGINE_API_H
#define SGPU_ENGINE_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <json-c/json.h>

#include "sbuf.h"

struct engine;
struct endpoint;

/* Install the dispatcher on e->http.  0. */
int api_init(struct engine *e);

/* ---- for the route files ---- */

struct api_route;

/* One request being answered. */
struct api_ctx {
    struct engine *e;
    struct evhttp_request *req;
    enum evhttp_cmd_type method;
    char path[512];                /* decoded path, no query */
    struct evkeyvalq query;        /* decoded query parameters */
    struct json_object *body;      /* the JSON object body; NULL when empty (or not parsed) */
    const struct api_route *route; /* the row that matched */
};

enum api_match {
    API_EXACT,  /* the path, with or without its trailing slash */
    API_PREFIX, /* any path that starts with it */
};

struct api_route {
    const char *path;
    enum api_match match;
    int methods; /* EVHTTP_REQ_* mask; other methods get 405.  0: the handler checks */
    bool body;   /* parse the JSON body before the handler (bad JSON: 400) */
    void (*handler)(struct api_ctx *c);
};

/* The tables (NULL-path terminated). */
extern const struct api_route api_wire_routes[];
extern const struct api_route api_mgmt_routes[];
/* The row for a path: the first match in api.c's own table (/health, /metrics), then the wire
 * table, then the management table; NULL = no route (404). */
const struct api_route *api_route_find(const char *path);

/* Replies.  api_reply_err: the JSON error body (http_json_error), message printf-formatted
 * (at most 599 bytes), logged at debug. */
void api_reply_err(struct api_ctx *c, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void api_reply(struct api_ctx *c, int status, struct sbuf *b);
void api_reply_ok(struct api_ctx *c); /* {"success": true} */

/* Body members (null counts as absent).  The getters: 1 present, 0 absent, -1 wrong (then
 * already answered with a 400 naming the member). */
struct json_object *api_field(struct api_ctx *c, const char *k);
int api_get_string(struct api_ctx *c, const char *k, const char **out);
int api_get_number(struct api_ctx *c, const char *k, double lo, double hi, double *out);
int api_get_int(struct api_ctx *c, const char *k, int64_t lo, int64_t hi, int64_t *out);
/* A decoded query parameter, or NULL. */
const char *api_query(struct api_ctx *c, const char *k);

/* a (alen bytes) equals the NUL-terminated secret b, whole, in time independent of where they
 * differ. */
bool api_key_eq(const char *a, size_t alen, const char *b);
/* The key of an "Authorization: Bearer KEY" header, or NULL. */
const char *api_bearer_key(struct evhttp_request *req);
/* Admin or this endpoint's key (Bearer header, body "api_key", ?api_key=); else 401/403
 * answered and false. */
bool api_auth_endpoint(struct api_ctx *c, struct endpoint *ep);
/* The admin key; else 401/403 answered and false. */
bool api_auth_admin(struct api_ctx *c);
/* "/prefix/<id>/" -> id: 1 with id, 0 when the path is exactly the prefix, -1 else. */
int api_path_id(const char *path, const char *prefix, int64_t *id);
/* The method is one of `allowed`; else 405 answered and false. */
bool api_method(struct api_ctx *c, int allowed);

/* JSON list of workers (oldest first) of endpoint ep (NULL = all) and workergroup wg_id
 * (0 = all), appended to out. */
void api_workers_list(struct engine *e, struct endpoint *ep, int64_t wg_id, struct sbuf *out);

#endif
