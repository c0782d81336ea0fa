/* Bounded per-endpoint time series (timeseries.h): a ring of fixed-size points, grown on
 * demand up to TS_CAP, one point per tick of at least TS_MIN_STEP_S seconds. */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "timeseries.h"

static_assert(sizeof(struct ts_point) == 64, "the documented memory cost assumes 64 bytes");

struct ts_ring *ts_new(void)
{
    return calloc(1, sizeof(struct ts_ring));
}

void ts_free(struct ts_ring *r)
{
    if (!r) return;
    free(r->pts);
    free(r);
}

size_t ts_len(const struct ts_ring *r)
{
    return r ? r->len : 0;
}

/* Finite, non-negative, capped (the values come from reports and clients). */
static float clampf(double v, double cap)
{
    if (!isfinite(v) || v < 0) return 0;
    return (float)(v > cap ? cap : v);
}

static uint16_t clamp16(int v)
{
    return (uint16_t)(v < 0 ? 0 : v > 65535 ? 65535 : v);
}

int ts_record(struct ts_ring *r, const struct ts_sample *s)
{
    double dt = isfinite(s->dt) && s->dt > 0 ? s->dt : 0;
    r->acc_dt += dt;
    r->acc_routes += isfinite(s->routes) && s->routes > 0 ? s->routes : 0;
    r->acc_cost += isfinite(s->cost) && s->cost > 0 ? s->cost : 0;
    if (r->acc_dt < TS_MIN_STEP_S * 0.9 && r->len > 0) return 0; /* merged into the next point */
    if (r->len == r->cap && r->cap < TS_CAP) {
        /* grow (only while not yet wrapped: len == cap means pos == 0 or the ring is full) */
        size_t nc = r->cap ? r->cap * 2 : 64;
        if (nc > TS_CAP) nc = TS_CAP;
        struct ts_point *np = realloc(r->pts, nc * sizeof *np);
        if (!np) return -1;
        r->pts = np;
        r->pos = r->len;
        r->cap = nc;
    }
    struct ts_point *p = &r->pts[r->pos];
    memset(p, 0, sizeof *p);
    double span = r->acc_dt > 0 ? r->acc_dt : 1;
    p->t = round(s->t_wall * 1000) / 1000; /* as rendered (ms), so `since` compares exactly */
    p->routes_s = clampf(r->acc_routes / span, 1e12);
    p->cost_s = clampf(r->acc_cost / span, 1e15);
    p->load = clampf(s->load, 1e15);
    p->ready_cap = clampf(s->ready_cap, 1e15);
    p->queue_time = clampf(s->queue_time, 1e9);
    p->target_queue_time = clampf(s->target_queue_time, 1e9);
    p->qlen = s->qlen > UINT32_MAX ? UINT32_MAX : (uint32_t)s->qlen;
    p->a = clamp16(s->a);
    p->i = clamp16(s->i);
    for (int k = 0; k < TS_NSTATES && s->ws; k++)
        p->ws[k] = clamp16(s->ws[k]);
    r->pos = (r->pos + 1) % r->cap;
    if (r->len < r->cap) r->len++;
    r->acc_dt = r->acc_routes = r->acc_cost = 0;
    return 0;
}

/* k-th oldest point */
static const struct ts_point *at(const struct ts_ring *r, size_t k)
{
    size_t start = r->len < r->cap ? 0 : r->pos;
    return &r->pts[(start + k) % r->cap];
}

#define COL_F(name, member)                                                                        \
    do {                                                                                           \
        sbuf_puts(out, ", \"" name "\": [");                                                       \
        for (size_t k = first; k < n; k++)                                                         \
            sbuf_printf(out, "%s%.6g", k > first ? ", " : "", (double)at(r, k)->member);           \
        sbuf_putc(out, ']');                                                                       \
    } while (0)

void ts_write_json(const struct ts_ring *r, double since, const char *const *state_names,
                   struct sbuf *out)
{
    size_t n = r ? r->len : 0, first = 0;
    while (first < n && !(at(r, first)->t > since))
        first++;
    sbuf_printf(out, "\"step_s\": %.6g, \"capacity\": %d, \"points\": %zu, \"t\": [", TS_MIN_STEP_S,
                TS_CAP, n - first);
    for (size_t k = first; k < n; k++)
        sbuf_printf(out, "%s%.3f", k > first ? ", " : "", at(r, k)->t);
    sbuf_putc(out, ']');
    COL_F("routes_s", routes_s);
    COL_F("cost_s", cost_s);
    COL_F("load", load);
    COL_F("ready_cap", ready_cap);
    COL_F("queue_time", queue_time);
    COL_F("target_queue_time", target_queue_time);
    COL_F("qlen", qlen);
    COL_F("active_target", a);
    COL_F("inactive_target", i);
    sbuf_puts(out, ", \"workers\": {");
    for (int s = 0; s < TS_NSTATES; s++) {
        sbuf_printf(out, "%s\"%s\": [", s ? ", " : "", state_names[s]);
        for (size_t k = first; k < n; k++)
            sbuf_printf(out, "%s%u", k > first ? ", " : "", (unsigned)at(r, k)->ws[s]);
        sbuf_putc(out, ']');
    }
    sbuf_putc(out, '}');
}
