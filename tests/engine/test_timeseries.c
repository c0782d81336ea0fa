/* Unit tests for the dashboard's bounded time series (src/engine/timeseries.c): points merge
 * to at least TS_MIN_STEP_S, the ring never holds more than TS_CAP points and keeps the
 * newest, values from the wire are made finite and capped, `since` filters, and the JSON is
 * valid and column-aligned. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "engine/timeseries.h"

static const char *const names[TS_NSTATES] = {"s0", "s1", "s2", "s3", "s4",
                                              "s5", "s6", "s7", "s8", "s9"};

static struct ts_sample sample(double t, double dt, double routes)
{
    static const int ws[TS_NSTATES] = {1, 0, 0, 2};
    struct ts_sample s = {.t_wall = t,
                          .dt = dt,
                          .routes = routes,
                          .cost = routes * 10,
                          .load = 5,
                          .ready_cap = 200,
                          .queue_time = 0.5,
                          .target_queue_time = 10,
                          .qlen = 3,
                          .a = 2,
                          .i = 1,
                          .ws = ws};
    return s;
}

static struct json_object *render(const struct ts_ring *r, double since)
{
    struct sbuf b = SBUF_INIT;
    sbuf_putc(&b, '{');
    ts_write_json(r, since, names, &b);
    sbuf_putc(&b, '}');
    struct json_object *o = json_tokener_parse(b.data);
    sbuf_free(&b);
    assert_non_null(o);
    return o;
}

static size_t col_len(struct json_object *o, const char *k)
{
    struct json_object *v;
    assert_true(json_object_object_get_ex(o, k, &v));
    return json_object_array_length(v);
}

static void test_merge_and_rate(void **st)
{
    (void)st;
    struct ts_ring *r = ts_new();
    assert_non_null(r);
    assert_int_equal(ts_record(r, &(struct ts_sample){.t_wall = 1, .dt = 0.1}), 0);
    assert_int_equal(ts_len(r), 1); /* the first tick always makes a point */
    /* ten ticks of 0.1 s with 2 routes each: one point, 20 routes over 1 s */
    for (int k = 0; k < 10; k++) {
        struct ts_sample s = sample(2 + k * 0.1, 0.1, 2);
        assert_int_equal(ts_record(r, &s), 0);
    }
    assert_int_equal(ts_len(r), 2);
    struct json_object *o = render(r, -INFINITY), *v;
    assert_true(json_object_object_get_ex(o, "routes_s", &v));
    assert_float_equal(json_object_get_double(json_object_array_get_idx(v, 1)), 20, 1e-3);
    assert_true(json_object_object_get_ex(o, "cost_s", &v));
    assert_float_equal(json_object_get_double(json_object_array_get_idx(v, 1)), 200, 1e-2);
    assert_true(json_object_object_get_ex(o, "workers", &v));
    struct json_object *s3;
    assert_true(json_object_object_get_ex(v, "s3", &s3));
    assert_int_equal(json_object_get_int(json_object_array_get_idx(s3, 1)), 2);
    json_object_put(o);
    ts_free(r);
}

static void test_bounded_ring(void **st)
{
    (void)st;
    struct ts_ring *r = ts_new();
    for (int k = 0; k < TS_CAP * 2 + 17; k++) {
        struct ts_sample s = sample(k, 1.0, k);
        assert_int_equal(ts_record(r, &s), 0);
    }
    assert_int_equal(ts_len(r), TS_CAP);
    struct json_object *o = render(r, -INFINITY), *t;
    assert_true(json_object_object_get_ex(o, "t", &t));
    assert_int_equal(json_object_array_length(t), TS_CAP);
    /* oldest first, the newest kept */
    assert_float_equal(json_object_get_double(json_object_array_get_idx(t, 0)), TS_CAP + 17, 1e-6);
    assert_float_equal(json_object_get_double(json_object_array_get_idx(t, TS_CAP - 1)),
                       2 * TS_CAP + 16, 1e-6);
    const char *cols[] = {"routes_s",  "cost_s",        "load",
                          "ready_cap", "queue_time",    "target_queue_time",
                          "qlen",      "active_target", "inactive_target"};
    for (size_t k = 0; k < sizeof cols / sizeof cols[0]; k++)
        assert_int_equal(col_len(o, cols[k]), TS_CAP);
    json_object_put(o);
    /* since: only newer points */
    o = render(r, 2 * TS_CAP + 10);
    assert_int_equal(col_len(o, "t"), 6);
    assert_int_equal(col_len(o, "qlen"), 6);
    json_object_put(o);
    ts_free(r);
}

static void test_hostile_values(void **st)
{
    (void)st;
    struct ts_ring *r = ts_new();
    struct ts_sample s = sample(1, 1, NAN);
    s.cost = INFINITY;
    s.load = -5;
    s.queue_time = INFINITY;
    s.ready_cap = 1e300;
    s.a = -3;
    s.i = 1 << 30;
    s.dt = NAN;
    assert_int_equal(ts_record(r, &s), 0);
    struct json_object *o = render(r, -INFINITY); /* valid JSON: no inf/nan */
    json_object_put(o);
    ts_free(r);
    ts_free(NULL);
    assert_int_equal(ts_len(NULL), 0);
    struct sbuf b = SBUF_INIT;
    sbuf_putc(&b, '{');
    ts_write_json(NULL, 0, names, &b); /* an endpoint before its first tick */
    sbuf_putc(&b, '}');
    struct json_object *e = json_tokener_parse(b.data);
    assert_non_null(e);
    assert_int_equal(col_len(e, "t"), 0);
    json_object_put(e);
    sbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_and_rate),
        cmocka_unit_test(test_bounded_ring),
        cmocka_unit_test(test_hostile_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
