/* drain: SIGTERM/SIGINT stop admitting, let in-flight requests finish (SGPU_DRAIN_TIMEOUT),
 * send the final reports, exit.  Signal and timer events private in `struct drain`. */
#ifndef SGPU_WORKER_DRAIN_H
#define SGPU_WORKER_DRAIN_H

#include "worker.h"

int drain_init(struct worker *w); /* sets w->drain: signal handlers */
void drain_free(struct worker *w);
/* Called whenever a request ends: draining and nothing working -> final report, exit. */
void worker_check_drained(struct worker *w);

#endif
