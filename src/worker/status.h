/* status: the worker-local GET routes /ping, /health, /status, /metrics, and the registration
 * of the worker's /metrics series. */
#ifndef SGPU_WORKER_STATUS_H
#define SGPU_WORKER_STATUS_H

#include <event2/http.h>

#include "worker.h"

void status_metrics_init(struct worker *w);
/* 1 when path is one of its routes and it answered, else 0. */
int status_handle(struct worker *w, struct evhttp_request *req, const char *path);

#endif
