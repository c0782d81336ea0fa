/* Fork-join thread pool for the forward pass: pool_run() calls fn(arg, i, n)
 * on n threads (the caller is thread 0) and returns when all are done.
 * Workers spin briefly between dispatches (a decode step issues ~5 dispatches
 * per layer) and then sleep on a condition variable, so an idle server uses
 * no CPU. */
#ifndef SGPU_MODEL_POOL_H
#define SGPU_MODEL_POOL_H

struct pool;

struct pool *pool_new(int n_threads);
void pool_free(struct pool *p);
int pool_size(const struct pool *p);
void pool_run(struct pool *p, void (*fn)(void *arg, int ith, int nth), void *arg);

#endif
