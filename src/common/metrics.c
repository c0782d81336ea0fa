/* Prometheus text exposition; see metrics.h. */
#include "metrics.h"
#include "xalloc.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum metric_kind { MK_COUNTER, MK_GAUGE, MK_HIST };

struct metrics_hist {
    double *bounds;
    size_t nbounds;
    _Atomic unsigned long long *buckets; /* nbounds + 1, not cumulative */
    _Atomic unsigned long long count;
    _Atomic double sum;
};

struct metric {
    enum metric_kind kind;
    char *name; /* full name incl. labels */
    char *help;
    double value;
    struct metrics_hist *hist;
};

struct metrics {
    struct metric **items;
    size_t len, cap;
    void (*on_render)(void *);
    void *on_render_arg;
};

struct metrics *metrics_new(void)
{
    return xcalloc(1, sizeof(struct metrics));
}

void metrics_free(struct metrics *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->len; i++) {
        struct metric *x = m->items[i];
        if (x->hist) {
            free(x->hist->bounds);
            free((void *)x->hist->buckets);
            free(x->hist);
        }
        free(x->name);
        free(x->help);
        free(x);
    }
    free(m->items);
    free(m);
}

static struct metric *metrics_add(struct metrics *m, enum metric_kind kind, const char *name,
                                  const char *help)
{
    for (size_t i = 0; i < m->len; i++)
        if (strcmp(m->items[i]->name, name) == 0) return m->items[i];
    if (m->len == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 32;
        m->items = xreallocarray(m->items, m->cap, sizeof *m->items);
    }
    struct metric *x = xcalloc(1, sizeof *x);
    x->kind = kind;
    x->name = xstrdup(name);
    x->help = xstrdup(help ? help : "");
    m->items[m->len++] = x;
    return x;
}

double *metrics_counter(struct metrics *m, const char *name, const char *help)
{
    return &metrics_add(m, MK_COUNTER, name, help)->value;
}

double *metrics_gauge(struct metrics *m, const char *name, const char *help)
{
    return &metrics_add(m, MK_GAUGE, name, help)->value;
}

struct metrics_hist *metrics_histogram(struct metrics *m, const char *name, const char *help,
                                       const double *bounds, size_t nbounds)
{
    struct metric *x = metrics_add(m, MK_HIST, name, help);
    if (!x->hist) {
        struct metrics_hist *h = xcalloc(1, sizeof *h);
        h->bounds = xcalloc(nbounds, sizeof(double));
        memcpy(h->bounds, bounds, nbounds * sizeof(double));
        h->nbounds = nbounds;
        h->buckets = xcalloc(nbounds + 1, sizeof(*h->buckets));
        x->hist = h;
    }
    return x->hist;
}

void metrics_observe(struct metrics_hist *h, double v)
{
    size_t i = 0;
    while (i < h->nbounds && v > h->bounds[i])
        i++;
    atomic_fetch_add(&h->buckets[i], 1);
    atomic_fetch_add(&h->count, 1);
    double old = atomic_load(&h->sum);
    while (!atomic_compare_exchange_weak(&h->sum, &old, old + v)) {
    }
}

void metrics_on_render(struct metrics *m, void (*fn)(void *), void *arg)
{
    m->on_render = fn;
    m->on_render_arg = arg;
}

/* Base name = name up to '{'. */
static size_t base_len(const char *name)
{
    return strcspn(name, "{");
}

static void put_number(struct sbuf *out, double v)
{
    if (isnan(v))
        sbuf_puts(out, "NaN");
    else if (isinf(v))
        sbuf_puts(out, v > 0 ? "+Inf" : "-Inf");
    else if (v == (double)(long long)v && fabs(v) < 1e15)
        sbuf_printf(out, "%lld", (long long)v);
    else
        sbuf_printf(out, "%.17g", v);
}

/* name{labels} + suffix + extra label: builds e.g. x_bucket{a="b",le="0.5"} */
static void put_series(struct sbuf *out, const char *name, const char *suffix, const char *extra)
{
    size_t bl = base_len(name);
    sbuf_append(out, name, bl);
    sbuf_puts(out, suffix);
    const char *labels = name[bl] == '{' ? name + bl + 1 : NULL; /* "a=\"b\"}" */
    if (labels || extra) {
        sbuf_putc(out, '{');
        if (labels) {
            size_t ll = strlen(labels);
            if (ll && labels[ll - 1] == '}') ll--;
            sbuf_append(out, labels, ll);
            if (extra && ll) sbuf_putc(out, ',');
        }
        if (extra) sbuf_puts(out, extra);
        sbuf_putc(out, '}');
    }
}

void metrics_render(struct metrics *m, struct sbuf *out)
{
    if (m->on_render) m->on_render(m->on_render_arg);
    static const char *const kinds[] = {"counter", "gauge", "histogram"};
    for (size_t i = 0; i < m->len; i++) {
        struct metric *x = m->items[i];
        size_t bl = base_len(x->name);
        int first = 1;
        for (size_t j = 0; j < i; j++)
            if (base_len(m->items[j]->name) == bl && strncmp(m->items[j]->name, x->name, bl) == 0)
                first = 0;
        if (!first) continue; /* printed with its first sibling below */
        sbuf_puts(out, "# HELP ");
        sbuf_append(out, x->name, bl);
        sbuf_putc(out, ' ');
        sbuf_puts(out, x->help);
        sbuf_puts(out, "\n# TYPE ");
        sbuf_append(out, x->name, bl);
        sbuf_printf(out, " %s\n", kinds[x->kind]);
        for (size_t j = i; j < m->len; j++) {
            struct metric *y = m->items[j];
            if (base_len(y->name) != bl || strncmp(y->name, x->name, bl) != 0) continue;
            if (y->kind != MK_HIST) {
                put_series(out, y->name, "", NULL);
                sbuf_putc(out, ' ');
                put_number(out, y->value);
                sbuf_putc(out, '\n');
                continue;
            }
            struct metrics_hist *h = y->hist;
            unsigned long long cum = 0;
            char le[64];
            for (size_t k = 0; k <= h->nbounds; k++) {
                cum += atomic_load(&h->buckets[k]);
                if (k < h->nbounds)
                    snprintf(le, sizeof le, "le=\"%g\"", h->bounds[k]);
                else
                    snprintf(le, sizeof le, "le=\"+Inf\"");
                put_series(out, y->name, "_bucket", le);
                sbuf_printf(out, " %llu\n", cum);
            }
            put_series(out, y->name, "_sum", NULL);
            sbuf_putc(out, ' ');
            put_number(out, atomic_load(&h->sum));
            sbuf_putc(out, '\n');
            put_series(out, y->name, "_count", NULL);
            sbuf_printf(out, " %llu\n", (unsigned long long)atomic_load(&h->count));
        }
    }
}
