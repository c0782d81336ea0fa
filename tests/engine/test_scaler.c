/* Unit tests for the engine's pure parts: scaler math (docs/engine.md "Autoscaling"), the
 * median perf estimate, the id map, and the signed-message bytes of every scheme against the
 * Python-generated vectors of docs/protocol.md §3.13. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "../common/assert_ext.h"
#include "engine/engine.h"
#include "engine/idmap.h"
#include "engine/scaler.h"
#include "engine/signer.h"

static struct scaler_in base_in(void)
{
    struct scaler_in in;
    memset(&in, 0, sizeof in);
    config_params_default(&in.p);
    in.p.min_workers = 0;
    in.p.cold_mult = 1;
    in.perf_est = 100;
    in.inactive_allowed = true;
    in.hist_max_a = -1;
    in.load_prev_sustained = -1;
    return in;
}

static void test_active_target(void **st)
{
    (void)st;
    struct scaler_in in = base_in();
    struct scaler_out out;
    in.load = 300; /* 300 / 0.9 = 333.3 -> 4 workers of 100 */
    scaler_compute(&in, &out);
    assert_int_equal(out.a, 4);
    assert_int_equal(out.i, 0);
    ASSERT_GT_DBL(out.active_cap, 333.3);
    ASSERT_LT_DBL(out.active_cap, 333.4);
    /* min_load floors the load */
    in.load = 10;
    in.p.min_load = 450;
    scaler_compute(&in, &out);
    assert_int_equal(out.a, 5);
    assert_string_equal(out.reason, "min_load");
    /* no load, nothing waiting: zero */
    in = base_in();
    scaler_compute(&in, &out);
    assert_int_equal(out.a, 0);
    /* unknown perf: one worker until the first benchmark */
    in.perf_est = 0;
    in.load = 5000;
    scaler_compute(&in, &out);
    assert_int_equal(out.a, 1);
}

static void test_queue_and_zero(void **st)
{
    (void)st;
    struct scaler_in in = base_in();
    struct scaler_out out;
    in.qlen = 3; /* requests waiting with no load estimate yet */
    scaler_compute(&in, &out);
    assert_int_equal(out.a, 1);
    /* fast scale-up: queue 3x the target with 2 ready workers -> capacity x2 + one worker */
    in = base_in();
    in.load = 150;
    in.ready = 2;
    in.ready_cap = 200;
    in.queue_time = 30;
    in.p.target_queue_time = 10;
    scaler_compute(&in, &out);
    assert_true(out.fast);
    assert_int_equal(out.a, 5); /* (200*2 + 100) / 100 */
    /* inactivity: keep one while recently active */
    in = base_in();
    in.recently_active = true;
    scaler_compute(&in, &out);
    assert_int_equal(out.a, 1);
    assert_string_equal(out.reason, "inactivity_timeout");
}

static void test_hysteresis_and_cap(void **st)
{
    (void)st;
    struct scaler_in in = base_in();
    struct scaler_out out;
    in.load = 90; /* 1 worker */
    in.hist_max_a = 6;
    scaler_compute(&in, &out);
    assert_int_equal(out.a_raw, 1);
    assert_int_equal(out.a, 6); /* down only to the window's maximum */
    in.p.max_workers = 4;
    scaler_compute(&in, &out);
    assert_int_equal(out.a, 4);
    in.hist_max_a = -1;
    in.load = 1e9;
    scaler_compute(&in, &out);
    assert_int_equal(out.a, 4);
    assert_int_equal(out.i, 0);
}

static void test_inactive_rules(void **st)
{
    (void)st;
    struct scaler_in in = base_in();
    struct scaler_out out;
    in.p.min_workers = 5;
    in.load = 180; /* cap 200 -> 2 active */
    scaler_compute(&in, &out);
    assert_int_equal(out.a, 2);
    assert_int_equal(out.i, 3); /* min_workers - active */
    in.p.cold_mult = 3;         /* (3-1) x 200 = 400 -> 4 inactive */
    scaler_compute(&in, &out);
    assert_int_equal(out.i, 4);
    in.p.min_cold_load = 1000; /* 1000 - 200 = 800 -> 8 */
    scaler_compute(&in, &out);
    assert_int_equal(out.i, 8);
    in.p.max_workers = 6; /* all states together */
    scaler_compute(&in, &out);
    assert_int_equal(out.a + out.i, 6);
    assert_int_equal(out.a, 2);
    /* a provider that cannot park keeps the loaded floor active */
    in = base_in();
    in.inactive_allowed = false;
    in.p.min_workers = 3;
    scaler_compute(&in, &out);
    assert_int_equal(out.a, 3);
    assert_int_equal(out.i, 0);
}

/* Start-latency rules (docs/engine.md "Creates that arrive too late", "Warm pool"). */
static void test_create_horizon(void **st)
{
    (void)st;
    struct scaler_in in = base_in();
    struct scaler_out out;
    /* a burst: L 400 now, but only 40 sustained over a quarter of the 35 s create latency;
     * one ready worker and one parked: the burst gets those two, no create */
    in.p.target_util = 1;
    in.load = 400;
    in.load_sustained = 40;
    in.load_prev_sustained = 20; /* a trend, but the forecast is at most double what lasted */
    in.ready = 1;
    in.ready_cap = 100;
    in.stopped = 1;
    in.create_latency = 35;
    in.backlog = 700; /* 700 / 35 = 20 cost/s more: 60 in all -> 1 worker */
    scaler_compute(&in, &out);
    assert_int_equal(out.a, 2); /* ready + parked, not 4 */
    assert_string_equal(out.reason, "create_horizon");
    /* a backlog no existing worker can drain within one create latency creates */
    in.backlog = 35 * 300; /* 300 cost/s more: 340 -> 4 workers */
    scaler_compute(&in, &out);
    assert_int_equal(out.a, 4);
    /* demand that lasted: the load rule as before */
    in.backlog = 0;
    in.load_sustained = 380;
    in.load_prev_sustained = 380;
    scaler_compute(&in, &out);
    assert_int_equal(out.a, 4);
    assert_string_equal(out.reason, "load");
    /* no create latency observed yet: rule off */
    in.load_sustained = 40;
    in.load_prev_sustained = 40;
    in.create_latency = 0;
    scaler_compute(&in, &out);
    assert_int_equal(out.a, 4);
    /* the cap never scales down what exists, and a waiting request still gets a worker */
    in = base_in();
    in.create_latency = 35;
    in.load = 1000;
    in.ready = 3;
    in.pending_active = 2;
    scaler_compute(&in, &out);
    assert_int_equal(out.a, 5);
    in = base_in();
    in.create_latency = 35;
    in.qlen = 1;
    scaler_compute(&in, &out);
    assert_int_equal(out.a, 1);
    /* a ramp: sustained demand 150 -> 200 over half a create latency (10 s of 20) is 5 cost/s
     * per s; 20 s on, 300 is expected: 3 workers now, not the 2 of today's load */
    in = base_in();
    in.p.target_util = 1;
    in.create_latency = 20;
    in.load = 200;
    in.load_sustained = 200;
    in.load_prev_sustained = 150;
    in.ready = 2;
    in.ready_cap = 200;
    scaler_compute(&in, &out);
    assert_int_equal(out.a, 3);
    assert_string_equal(out.reason, "forecast");
    /* at most double within one create latency; a falling trend forecasts nothing lower */
    in.load_prev_sustained = 0;
    scaler_compute(&in, &out);
    assert_int_equal(out.a, 4);
    in.load_prev_sustained = 300;
    scaler_compute(&in, &out);
    assert_int_equal(out.a, 2);
}

static void test_median(void **st)
{
    (void)st;
    double v[] = {0, 300, 100, 200, -1};
    ASSERT_EQ_DBL(scaler_median(v, 5), 200, 0);
    double w[] = {100, 300};
    ASSERT_EQ_DBL(scaler_median(w, 2), 200, 0);
    double z[] = {0, 0};
    ASSERT_EQ_DBL(scaler_median(z, 2), 0, 0);
}

static void test_idmap(void **st)
{
    (void)st;
    struct idmap *m = idmap_new();
    static int vals[5000];
    for (int i = 0; i < 5000; i++)
        idmap_put(m, (int64_t)i * 7919, &vals[i]);
    assert_int_equal(idmap_len(m), 5000);
    for (int i = 0; i < 5000; i += 2)
        idmap_del(m, (int64_t)i * 7919);
    assert_int_equal(idmap_len(m), 2500);
    for (int i = 0; i < 5000; i++)
        assert_ptr_equal(idmap_get(m, (int64_t)i * 7919), (i & 1) ? &vals[i] : NULL);
    idmap_del(m, 12345678); /* absent */
    idmap_free(m);
}

static void test_messages(void **st)
{
    (void)st;
    struct sbuf b = SBUF_INIT;
    signer_message(SIG_FIELDS_V1, 256.0, "my-endpoint", 1234, 98765, "https://203.0.113.7:41234",
                   &b);
    assert_string_equal(b.data,
                        "{\n    \"cost\": 256.0,\n    \"endpoint\": \"my-endpoint\",\n"
                        "    \"reqnum\": 1234,\n    \"url\": \"https://203.0.113.7:41234\"\n}");
    assert_int_equal(b.len, 112);
    sbuf_reset(&b);
    signer_message(SIG_FIELDS_V2, 256.0, "my-endpoint", 1234, 98765, "https://203.0.113.7:41234",
                   &b);
    assert_string_equal(b.data, "{\n    \"cost\": 256.0,\n    \"endpoint\": \"my-endpoint\",\n"
                                "    \"reqnum\": 1234,\n    \"request_idx\": 98765,\n"
                                "    \"url\": \"https://203.0.113.7:41234\"\n}");
    assert_int_equal(b.len, 138);
    sbuf_reset(&b);
    signer_message(SIG_URL, 1, "x", 1, 1, "https://203.0.113.7:41234", &b);
    assert_string_equal(b.data, "{\n    \"url\": \"https://203.0.113.7:41234\"\n}");
    assert_int_equal(b.len, 42);
    sbuf_reset(&b);
    signer_message(SIG_URL, 1, "x", 1, 1, "\x01\x7f\xf0\x9f\x98\x80", &b);
    assert_string_equal(b.data, "{\n    \"url\": \"\\u0001\\u007f\\ud83d\\ude00\"\n}");
    sbuf_reset(&b);
    signer_message(SIG_FIELDS_V1, 1e-05, "e", 1, 1, "u", &b);
    assert_non_null(strstr(b.data, "\"cost\": 1e-05,"));
    sbuf_free(&b);
}

static void test_params(void **st)
{
    (void)st;
    struct ep_params p;
    config_params_default(&p);
    char err[200];
    struct json_object *o = json_tokener_parse("{\"cold_workers\": 2, \"target_util\": 0.5, "
                                               "\"sig_scheme\": \"fields-v1\", \"extra\": 1}");
    assert_int_equal(config_params_apply(&p, o, err, sizeof err), 0);
    assert_int_equal(p.min_workers, 2);
    ASSERT_EQ_DBL(p.target_util, 0.5, 0);
    assert_int_equal(p.sig_scheme, SIG_FIELDS_V1);
    json_object_put(o);
    const char *bad[] = {"{\"target_util\": 0}",  "{\"target_util\": 1.5}",
                         "{\"max_workers\": -1}", "{\"min_workers\": 2.5}",
                         "{\"min_load\": \"1\"}", "{\"cold_mult\": 0.5}",
                         "{\"sig_scheme\": 3}",   "{\"max_queue_time\": -1}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct ep_params q = p;
        o = json_tokener_parse(bad[i]);
        assert_non_null(o);
        assert_int_equal(config_params_apply(&q, o, err, sizeof err), -1);
        assert_memory_equal(&q, &p, sizeof p); /* unchanged on error */
        json_object_put(o);
    }
    assert_true(config_name_valid("a-b_c.9"));
    assert_false(config_name_valid(""));
    assert_false(config_name_valid("a b"));
    assert_false(config_name_valid("é"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_active_target),
        cmocka_unit_test(test_queue_and_zero),
        cmocka_unit_test(test_hysteresis_and_cap),
        cmocka_unit_test(test_inactive_rules),
        cmocka_unit_test(test_create_horizon),
        cmocka_unit_test(test_median),
        cmocka_unit_test(test_idmap),
        cmocka_unit_test(test_messages),
        cmocka_unit_test(test_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
