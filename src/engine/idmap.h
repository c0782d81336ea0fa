/* idmap: an int64 -> pointer hash map (workers by id, queued requests and grants by
 * request_idx). */
#ifndef SGPU_ENGINE_IDMAP_H
#define SGPU_ENGINE_IDMAP_H

#include <stddef.h>
#include <stdint.h>

struct idmap;

struct idmap *idmap_new(void);
void idmap_free(struct idmap *m);
void *idmap_get(const struct idmap *m, int64_t k);
void idmap_put(struct idmap *m, int64_t k, void *v);
void idmap_del(struct idmap *m, int64_t k);
size_t idmap_len(const struct idmap *m);

#endif
