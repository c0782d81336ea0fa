/* listener: the main listening socket, TLS (USE_SSL) and its connection guard (limits,
 * slowloris deadline, body budget).  State private in `struct listener`. */
#ifndef SGPU_WORKER_LISTENER_H
#define SGPU_WORKER_LISTENER_H

#include <event2/http.h>

#include "worker.h"

int listener_init(struct worker *w); /* binds cfg.host:cfg.port (0 = ephemeral; set after) */
void listener_free(struct worker *w);
/* A request head was complete: its connection is no longer under the read deadline. */
void listener_request_begin(struct worker *w, struct evhttp_request *req);

#endif
