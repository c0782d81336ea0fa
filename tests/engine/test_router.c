/* Unit tests for the router: least estimated queue time wins, full workers are skipped, the
 * global queue holds requests when all are full (and new requests queue behind waiting ones),
 * reqnum increases per worker, request_idx is kept across polls. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/assert_ext.h"
#include "clock.h"
#include "engine/emetrics.h"
#include "engine/engine.h"
#include "engine/idmap.h"
#include "engine/router.h"
#include "engine/state.h"
#include "httputil.h"
#include "metrics.h"
#include "rsa.h"

static struct engine *E;
static struct endpoint *EP;

static struct worker *add_worker(int64_t id, double perf, double load)
{
    struct worker *w = calloc(1, sizeof *w);
    w->id = id;
    w->endpoint_id = EP->id;
    w->state = WS_IDLE;
    w->max_perf = perf;
    w->cur_load = load;
    snprintf(w->url, sizeof w->url, "http://127.0.0.1:%lld", (long long)(9000 + id));
    return state_worker_add(E, w);
}

static int setup(void **st)
{
    (void)st;
    E = calloc(1, sizeof *E);
    E->worker_by_id = idmap_new();
    E->next_request_idx = 1;
    E->request_idx_reserved = 1000000;
    emetrics_init(E);
    if (rsa_privkey_generate(2048, &E->key) != 0) return -1;
    EP = calloc(1, sizeof *EP);
    EP->id = 1;
    snprintf(EP->name, sizeof EP->name, "ep");
    config_params_default(&EP->p);
    EP->p.max_queue_time = 5;
    state_endpoint_add(E, EP);
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    while (E->workers)
        state_worker_remove(E, E->workers);
    while (E->endpoints)
        state_endpoint_remove(E, E->endpoints);
    idmap_free(E->worker_by_id);
    rsa_privkey_free(E->key);
    metrics_free(E->metrics);
    free(E);
    return 0;
}

static struct json_object *route(double cost, int64_t idx, int *status)
{
    struct sbuf out = SBUF_INIT;
    *status = router_route(E, EP, cost, idx, 0, &out, NULL, 0);
    struct json_object *o = json_tokener_parse(out.data);
    sbuf_free(&out);
    assert_non_null(o);
    return o;
}

static const char *url_of(struct json_object *o)
{
    struct json_object *u;
    return json_object_object_get_ex(o, "url", &u) ? json_object_get_string(u) : NULL;
}

static int64_t int_of(struct json_object *o, const char *k)
{
    struct json_object *v;
    assert_true(json_object_object_get_ex(o, k, &v));
    return json_object_get_int64(v);
}

static void test_least_queue_time(void **st)
{
    (void)st;
    struct worker *a = add_worker(1, 100, 300); /* 3 s */
    struct worker *b = add_worker(2, 200, 200); /* 1 s */
    struct worker *c = add_worker(3, 100, 800); /* 8 s: full (> 5) */
    int status;
    struct json_object *r = route(100, 0, &status);
    assert_int_equal(status, 200);
    assert_string_equal(url_of(r), b->url);
    assert_int_equal(int_of(r, "reqnum"), 1);
    json_object_put(r);
    /* b now has 300 granted since its report: (200+100)/200 = 1.5 s, still the least */
    r = route(100, 0, &status);
    assert_string_equal(url_of(r), b->url);
    assert_int_equal(int_of(r, "reqnum"), 2);
    json_object_put(r);
    b->granted_since_report = 700; /* (200+700)/200 = 4.5 s > a's 3 s */
    r = route(100, 0, &status);
    assert_string_equal(url_of(r), a->url);
    json_object_put(r);
    ASSERT_EQ_INT(c->grants_total, 0);
    /* draining and not-ready workers are never chosen */
    a->draining = true;
    b->state = WS_MODEL_LOADING;
    r = route(1, 0, &status);
    assert_null(url_of(r)); /* only c is left and it is full: queued */
    json_object_put(r);
    state_worker_remove(E, a);
    state_worker_remove(E, b);
    state_worker_remove(E, c);
    router_queue_clear(EP);
}

static void test_global_queue(void **st)
{
    (void)st;
    struct worker *w = add_worker(10, 100, 1000); /* 10 s: full */
    int status;
    struct json_object *r1 = route(10, 0, &status);
    assert_int_equal(status, 200);
    assert_null(url_of(r1));
    int64_t idx1 = int_of(r1, "request_idx");
    struct json_object *stt;
    assert_true(json_object_object_get_ex(r1, "status", &stt));
    assert_int_equal(json_object_get_int(json_object_object_get(stt, "idle")), 1);
    json_object_put(r1);
    assert_int_equal(router_queue_len(EP), 1);
    assert_true(EP->want_scale_up);
    /* polling keeps the same request */
    r1 = route(10, idx1, &status);
    assert_int_equal(int_of(r1, "request_idx"), idx1);
    assert_int_equal(router_queue_len(EP), 1);
    json_object_put(r1);
    /* capacity frees up for about one request: a new request queues behind the waiting one */
    w->cur_load = 495; /* 4.95 s < 5 s: non-full, room for one request of cost 10 */
    struct json_object *r2 = route(10, 0, &status);
    assert_null(url_of(r2));
    int64_t idx2 = int_of(r2, "request_idx");
    ASSERT_GT_INT(idx2, idx1);
    json_object_put(r2);
    /* ... and the waiting one is served when it polls */
    r1 = route(10, idx1, &status);
    assert_string_equal(url_of(r1), w->url);
    assert_int_equal(int_of(r1, "request_idx"), idx1);
    json_object_put(r1);
    assert_int_equal(router_queue_len(EP), 1);
    w->cur_load = 0; /* the grant counted as granted_since_report; the report clears it */
    w->granted_since_report = 0;
    r2 = route(10, idx2, &status);
    assert_string_equal(url_of(r2), w->url);
    json_object_put(r2);
    assert_int_equal(router_queue_len(EP), 0);
    /* plenty of room: a new request is granted at once even while another one waits */
    w->cur_load = 1e6;
    r1 = route(10, 0, &status);
    assert_null(url_of(r1));
    json_object_put(r1);
    w->cur_load = 0;
    r2 = route(10, 0, &status);
    assert_string_equal(url_of(r2), w->url);
    json_object_put(r2);
    assert_int_equal(router_queue_len(EP), 1);
    router_queue_clear(EP);
    /* expiry: a request not polled within its timeout leaves the queue */
    w->cur_load = 1e6;
    r1 = route(10, 0, &status);
    json_object_put(r1);
    assert_int_equal(router_queue_len(EP), 1);
    router_expire(E, EP, clock_mono() + 1000); /* not polled for 1000 s */
    assert_int_equal(router_queue_len(EP), 0);
    state_worker_remove(E, w);
    router_queue_clear(EP);
}

static void test_zero_max_queue_time(void **st)
{
    (void)st;
    EP->p.max_queue_time = 0; /* occupancy: any outstanding work makes a worker full */
    struct worker *w = add_worker(20, 100, 0);
    int status;
    struct json_object *r = route(1, 0, &status);
    assert_string_equal(url_of(r), w->url);
    json_object_put(r);
    r = route(1, 0, &status);
    assert_null(url_of(r));
    json_object_put(r);
    EP->p.max_queue_time = 5;
    state_worker_remove(E, w);
    router_queue_clear(EP);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_least_queue_time),
        cmocka_unit_test(test_global_queue),
        cmocka_unit_test(test_zero_max_queue_time),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
