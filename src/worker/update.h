/* update: POST /pyworker/update (docs/protocol.md §3.12), MASTER_TOKEN, flag file. */
#ifndef SGPU_WORKER_UPDATE_H
#define SGPU_WORKER_UPDATE_H

#include <event2/http.h>

#include "worker.h"

void update_handle(struct worker *w, struct evhttp_request *req);

#endif
