/* Unit tests for the KPA policy (src/engine/scaler.c kpa_*, docs/engine.md "KPA policy"):
 * stable-window sizing, panic entry at 2x and no scale-down while panicking, panic exit a
 * stable window after the last over-threshold tick, the 1000x scale-up and 2x scale-down rate
 * limits, the scale-to-zero grace, the activator rule, and the `scaler` parameter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/scaler.h"

static struct kpa_in base(double now, int ready)
{
    struct kpa_in in;
    memset(&in, 0, sizeof in);
    config_params_default(&in.p);
    in.p.min_workers = 0;
    in.p.cold_mult = 1;
    in.p.max_workers = 100000;
    in.p.target_util = 0.9;
    in.p.scaler = SCALER_KPA;
    in.now = now;
    in.stable_window_s = 60;
    in.panic_window_s = 6;
    in.perf_est = 100;
    in.ready = ready;
    in.current = ready;
    in.inactive_allowed = true;
    return in;
}

/* feed `secs` seconds of concurrency c in 1 s ticks starting at *t */
static void feed(struct kpa_state *s, double *t, double secs, double c)
{
    for (double k = 0; k < secs; k++) {
        *t += 1;
        kpa_record(s, *t, 1, c);
    }
}

static void test_stable(void **st)
{
    (void)st;
    struct kpa_state *s = calloc(1, sizeof *s);
    double t = 1000;
    feed(s, &t, 70, 3.6); /* 3.6 workers busy at 100 % -> ceil(3.6 / 0.9) = 4 */
    struct kpa_in in = base(t, 4);
    struct kpa_out o;
    kpa_compute(s, &in, &o);
    assert_float_equal(o.stable, 3.6, 1e-9);
    assert_int_equal(o.desired_stable, 4);
    assert_int_equal(o.a, 4);
    assert_false(o.panicking);
    assert_string_equal(o.reason, "kpa_stable");
    free(s);
}

static void test_panic(void **st)
{
    (void)st;
    struct kpa_state *s = calloc(1, sizeof *s);
    double t = 1000;
    feed(s, &t, 60, 0.9); /* one worker's worth */
    struct kpa_out o;
    struct kpa_in in = base(t, 1);
    kpa_compute(s, &in, &o);
    assert_int_equal(o.a, 1);
    assert_false(o.panicking);
    feed(s, &t, 6, 9); /* a burst: the 6 s window sees 9 -> 10 desired, 10/1 >= 2 */
    in = base(t, 1);
    kpa_compute(s, &in, &o);
    assert_true(o.panicking);
    assert_int_equal(o.desired_panic, 10);
    assert_int_equal(o.a, 10);
    assert_string_equal(o.reason, "kpa_panic");
    /* the burst ends: while panicking the count never goes down */
    feed(s, &t, 10, 0.9);
    in = base(t, 10);
    kpa_compute(s, &in, &o);
    assert_true(o.panicking);
    assert_int_equal(o.a, 10);
    /* a stable window after the last over-threshold tick, panic ends; the stable window still
     * holds some of the burst, and the scale-down rate limits the step to ready / 2 */
    feed(s, &t, 55, 0.9);
    in = base(t, 10);
    kpa_compute(s, &in, &o);
    assert_false(o.panicking);
    assert_int_equal(o.a, 5);
    free(s);
}

static void test_rate_limits(void **st)
{
    (void)st;
    struct kpa_state *s = calloc(1, sizeof *s);
    double t = 1000;
    feed(s, &t, 10, 1e7); /* absurd demand with one ready worker: at most 1000x */
    struct kpa_in in = base(t, 1);
    struct kpa_out o;
    kpa_compute(s, &in, &o);
    assert_int_equal(o.a, 1000);
    /* max_workers still caps */
    in.p.max_workers = 20;
    kpa_compute(s, &in, &o);
    assert_int_equal(o.a, 20);
    free(s);
    /* no demand with 8 ready: down to floor(8 / 2) = 4 at most per decision */
    s = calloc(1, sizeof *s);
    t = 1000;
    feed(s, &t, 70, 0);
    in = base(t, 8);
    kpa_compute(s, &in, &o);
    assert_int_equal(o.a, 4);
    free(s);
}

static void test_scale_to_zero(void **st)
{
    (void)st;
    struct kpa_state *s = calloc(1, sizeof *s);
    double t = 1000;
    feed(s, &t, 70, 0);
    struct kpa_in in = base(t, 1);
    struct kpa_out o;
    kpa_compute(s, &in, &o); /* zero wanted: the grace starts */
    assert_int_equal(o.a, 1);
    assert_string_equal(o.reason, "scale_to_zero_grace");
    feed(s, &t, 29, 0);
    in = base(t, 1);
    kpa_compute(s, &in, &o);
    assert_int_equal(o.a, 1);
    feed(s, &t, 2, 0);
    in = base(t, 1);
    kpa_compute(s, &in, &o);
    assert_int_equal(o.a, 0);
    /* the activator: a waiting request brings one back at once */
    in = base(t, 0);
    in.current = 0;
    in.qlen = 1;
    kpa_compute(s, &in, &o);
    assert_int_equal(o.a, 1);
    assert_string_equal(o.reason, "queue_waiting");
    free(s);
}

static void test_parked_tier_and_hostile(void **st)
{
    (void)st;
    struct kpa_state *s = calloc(1, sizeof *s);
    double t = 1000;
    feed(s, &t, 70, 1.8);
    kpa_record(s, t, NAN, 5);      /* ignored */
    kpa_record(s, t, 1, NAN);      /* counts as 0 */
    kpa_record(s, t, -1, 1e300);   /* ignored */
    kpa_record(s, t, 1, INFINITY); /* counts as 0 */
    struct kpa_in in = base(t + 1, 2);
    in.p.min_workers = 5; /* the loaded floor: parked workers */
    in.p.cold_mult = 2;
    struct kpa_out o;
    kpa_compute(s, &in, &o);
    assert_true(isfinite(o.stable));
    assert_int_equal(o.a, 2);
    assert_int_equal(o.i, 3);
    /* without parking the floor is active */
    in.inactive_allowed = false;
    kpa_compute(s, &in, &o);
    assert_int_equal(o.a, 5);
    assert_int_equal(o.i, 0);
    /* unknown perf: one worker for any demand */
    in = base(t + 1, 0);
    in.perf_est = 0;
    kpa_compute(s, &in, &o);
    assert_int_equal(o.a, 1);
    free(s);
}

static void test_param(void **st)
{
    (void)st;
    struct ep_params p;
    config_params_default(&p);
    assert_int_equal(p.scaler, SCALER_SGPU);
    char err[200];
    struct json_object *o = json_tokener_parse("{\"scaler\": \"kpa\"}");
    assert_int_equal(config_params_apply(&p, o, err, sizeof err), 0);
    json_object_put(o);
    assert_int_equal(p.scaler, SCALER_KPA);
    const char *bad[] = {"{\"scaler\": \"KPA\"}", "{\"scaler\": 1}", "{\"scaler\": \"\"}"};
    for (size_t k = 0; k < 3; k++) {
        o = json_tokener_parse(bad[k]);
        assert_int_equal(config_params_apply(&p, o, err, sizeof err), -1);
        assert_non_null(strstr(err, "scaler"));
        json_object_put(o);
    }
    assert_int_equal(p.scaler, SCALER_KPA);
    struct sbuf b = SBUF_INIT;
    config_params_write(&p, &b);
    assert_non_null(strstr(b.data, "\"scaler\": \"kpa\""));
    sbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stable),
        cmocka_unit_test(test_panic),
        cmocka_unit_test(test_rate_limits),
        cmocka_unit_test(test_scale_to_zero),
        cmocka_unit_test(test_parked_tier_and_hostile),
        cmocka_unit_test(test_param),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
