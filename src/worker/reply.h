/* reply: the replies the worker writes itself (not relayed from the model): empty, JSON,
 * plain text, and the 503 "not ready" of the readiness gate. */
#ifndef SGPU_WORKER_REPLY_H
#define SGPU_WORKER_REPLY_H

#include <stddef.h>

#include <event2/http.h>

#include "worker.h"

/* Content-Type application/octet-stream, no body (401, 429 as PyWorker). */
void reply_empty(struct evhttp_request *req, int status);
/* ctype NULL = "application/json". */
void reply_json(struct evhttp_request *req, int status, const char *ctype, const char *body,
                size_t len);
void reply_text(struct evhttp_request *req, int status, const char *text);
/* 405 with Allow: allow. */
void reply_method_not_allowed(struct evhttp_request *req, const char *allow);
/* 503 {"error": "worker not ready", "phase": ...} with Retry-After (30 s while draining, else
 * 5 s), counted in sgpu_worker_replies_total{status="503"}. */
void reply_not_ready(struct worker *w, struct evhttp_request *req);

#endif
