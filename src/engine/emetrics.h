/* The engine's Prometheus series (docs/engine.md "Metrics"). */
#ifndef SGPU_ENGINE_EMETRICS_H
#define SGPU_ENGINE_EMETRICS_H

#include "engine.h"

void emetrics_init(struct engine *e);
void emetrics_endpoint(struct engine *e, struct endpoint *ep);

#endif
