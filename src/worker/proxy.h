/* proxy: one admitted request forwarded to the model server and its answer relayed to the
 * client (buffered or streamed); it ends the request with request_finish(). */
#ifndef SGPU_WORKER_PROXY_H
#define SGPU_WORKER_PROXY_H

#include "request.h"

/* SGPU_OK: started (it ends through request_finish).  SGPU_ERROR: the upstream request could
 * not start; nothing was answered (the caller replies and finishes). */
int proxy_start(struct wreq *wr);
void proxy_cancel(struct wreq *wr); /* no callback of the upstream request runs any more */

#endif
