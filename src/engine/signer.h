/* Grant signatures: the exact message bytes a worker verifies for each scheme, and the inline
 * (loop-thread) signature. */
#ifndef SGPU_ENGINE_SIGNER_H
#define SGPU_ENGINE_SIGNER_H

#include <stdint.h>

#include "engine.h"
#include "sbuf.h"

/* The exact bytes the worker verifies for a grant (docs/engine.md, Signing schemes). */
void signer_message(enum sig_scheme s, double cost, const char *endpoint, int64_t reqnum,
                    int64_t request_idx, const char *url, struct sbuf *out);
/* Base64 signature for this grant appended to out (url scheme: from the worker's cache).
 * 0 or -1. */
int signer_grant(struct engine *e, struct endpoint *ep, struct worker *w, double cost,
                 int64_t reqnum, int64_t request_idx, struct sbuf *out);

#endif
