/* int64 -> pointer hash map: open addressing, linear probing, backward-shift deletion.
 * Used for worker lookup by id on every /worker_status/ and /delete_requests/. */
#include <stdio.h>
#include <stdlib.h>

#include "engine.h"
#include "idmap.h"
#include "xalloc.h"

struct slot {
    int64_t k;
    void *v; /* NULL = empty */
};

struct idmap {
    struct slot *s;
    size_t cap; /* power of two */
    size_t len;
};

static size_t hash(int64_t k, size_t cap)
{
    uint64_t x = (uint64_t)k * 0x9E3779B97F4A7C15ull;
    return (size_t)(x >> 17) & (cap - 1);
}

struct idmap *idmap_new(void)
{
    struct idmap *m = xcalloc(1, sizeof *m);
    m->cap = 64;
    m->s = xcalloc(m->cap, sizeof *m->s);
    return m;
}

void idmap_free(struct idmap *m)
{
    if (!m) return;
    free(m->s);
    free(m);
}

void *idmap_get(const struct idmap *m, int64_t k)
{
    for (size_t i = hash(k, m->cap);; i = (i + 1) & (m->cap - 1)) {
        if (!m->s[i].v) return NULL;
        if (m->s[i].k == k) return m->s[i].v;
    }
}

static void grow(struct idmap *m)
{
    struct slot *old = m->s;
    size_t oc = m->cap;
    m->cap *= 2;
    m->s = xcalloc(m->cap, sizeof *m->s);
    m->len = 0;
    for (size_t i = 0; i < oc; i++)
        if (old[i].v) idmap_put(m, old[i].k, old[i].v);
    free(old);
}

void idmap_put(struct idmap *m, int64_t k, void *v)
{
    if (!v) {
        idmap_del(m, k);
        return;
    }
    if ((m->len + 1) * 4 > m->cap * 3) grow(m);
    size_t i = hash(k, m->cap);
    while (m->s[i].v && m->s[i].k != k)
        i = (i + 1) & (m->cap - 1);
    if (!m->s[i].v) m->len++;
    m->s[i].k = k;
    m->s[i].v = v;
}

void idmap_del(struct idmap *m, int64_t k)
{
    size_t mask = m->cap - 1;
    size_t i = hash(k, m->cap);
    while (m->s[i].v && m->s[i].k != k)
        i = (i + 1) & mask;
    if (!m->s[i].v) return;
    m->s[i].v = NULL;
    m->len--;
    /* backward shift: move later members of the cluster into the hole if their home allows */
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!m->s[j].v) break;
        size_t h = hash(m->s[j].k, m->cap);
        /* can slot j's entry move to i?  yes if h is not cyclically in (i, j] */
        bool in = (i <= j) ? (h > i && h <= j) : (h > i || h <= j);
        if (!in) {
            m->s[i] = m->s[j];
            m->s[j].v = NULL;
            i = j;
        }
    }
}

size_t idmap_len(const struct idmap *m)
{
    return m->len;
}
