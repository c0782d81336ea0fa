/* Signing threads for the per-request grant schemes (--sign-threads N): RSA signatures off the
 * loop thread.  The caller gets each signature back on the loop thread through its callback;
 * the pool never answers an HTTP request itself (router.c does). */
#ifndef SGPU_ENGINE_SIGNPOOL_H
#define SGPU_ENGINE_SIGNPOOL_H

#include <stddef.h>

#include "sbuf.h"

struct engine;

/* Called on the loop thread: rc 0 with the base64 signature (sig, len bytes, not
 * NUL-terminated), or -1 (signing failed; sig NULL). */
typedef void (*signpool_done_fn)(void *arg, int rc, const char *sig, size_t len);

/* Start n threads (n <= 0: none, e->signpool stays NULL; signing then happens inline), each
 * loading the key from keypath.  0 or -1. */
int signpool_start(struct engine *e, int nthreads, const char *keypath);
/* Sign msg (taken over, left empty); fn(arg, ...) runs on the loop thread when done. */
void signpool_submit(struct engine *e, struct sbuf *msg, signpool_done_fn fn, void *arg);
/* Join the threads and deliver what they finished; e->signpool = NULL. */
void signpool_stop(struct engine *e);

#endif
