/* Unit tests for src/common/upstream.c, the worker's pooled keep-alive client, against real
 * peers on 127.0.0.1 in this process (tests/common/loopback.h), all on one event base:
 * keep-alive reuse (one server-side connection for sequential requests), request bodies and
 * headers on the wire, streamed and buffered bodies, concurrent requests, and every failure
 * class: a refused connection, an upstream that closes mid-body, a response head over
 * UPSTREAM_MAX_HEADERS, a non-HTTP answer, a body over max_buffered, an aborted and a
 * cancelled request, the request deadline, a kept-alive connection the upstream closed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "assert_ext.h"
#include "loopback.h"
#include "upstream.h"

/* What one request saw.  mode: 0 buffer the body, 1 stream it, -1 abort in on_headers,
 * 2 cancel in on_headers. */
struct ures {
    struct event_base *base;
    int *pending; /* lb_done when it drops to 0 */
    int mode;
    int heads;
    int status;
    struct sbuf body;
    bool done, failed, reused;
    enum upstream_err err;
    char msg[128];
};

static void ures_end(struct ures *r)
{
    if (--*r->pending == 0) lb_done(r->base);
}

static int on_headers(struct upstream_req *u, int status, struct evkeyvalq *h, void *arg)
{
    struct ures *r = arg;
    r->heads++;
    r->status = status;
    r->reused = upstream_req_reused(u); /* known while the connection is attached */
    if (r->mode == 2) {
        upstream_cancel(u);
        ures_end(r);
        return 0;
    }
    return r->mode == 1 ? 1 : r->mode;
}

static void on_chunk(struct upstream_req *u, struct evbuffer *data, void *arg)
{
    struct ures *r = arg;
    size_t n = evbuffer_get_length(data);
    sbuf_reserve(&r->body, n);
    evbuffer_remove(data, r->body.data + r->body.len, n);
    r->body.len += n;
    r->body.data[r->body.len] = '\0';
}

static void on_done(struct upstream_req *u, int status, struct evbuffer *body, void *arg)
{
    struct ures *r = arg;
    assert_false(r->done || r->failed); /* exactly one last callback */
    r->done = true;
    r->status = status;
    on_chunk(u, body, arg);
    ures_end(r);
}

static void on_error(struct upstream_req *u, enum upstream_err err, const char *msg, void *arg)
{
    struct ures *r = arg;
    assert_false(r->done || r->failed);
    r->failed = true;
    r->err = err;
    snprintf(r->msg, sizeof r->msg, "%s", msg);
    ures_end(r);
}

static const struct upstream_cbs CBS = {on_headers, on_chunk, on_done, on_error};

struct fixture {
    struct event_base *base;
    struct lb_http http;
    struct lb_raw raw;
    struct upstream_pool *pool;
    int pending;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->base = http_base_new();
    assert_non_null(f->base);
    assert_int_equal(lb_http_start(&f->http, f->base, NULL), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f->pool) upstream_pool_free(f->pool);
    lb_spin(f->base); /* connections dropped by the code under test are freed from the loop */
    lb_raw_stop(&f->raw);
    lb_http_stop(&f->http);
    lb_spin(f->base);
    event_base_free(f->base);
    free(f);
    return 0;
}

static struct upstream_pool *pool_for(struct fixture *f, int port)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    if (f->pool) upstream_pool_free(f->pool);
    f->pool = upstream_pool_new(f->base, NULL, url, NULL);
    assert_non_null(f->pool);
    return f->pool;
}

static void ures_init(struct fixture *f, struct ures *r, int mode)
{
    memset(r, 0, sizeof *r);
    r->base = f->base;
    r->pending = &f->pending;
    r->mode = mode;
}

/* Starts one request and runs the loop until it ended. */
static void run_one(struct fixture *f, struct ures *r, enum evhttp_cmd_type m, const char *path,
                    const struct upstream_opts *o)
{
    f->pending = 1;
    assert_non_null(upstream_request(f->pool, m, path, NULL, NULL, 0, NULL, o, &CBS, r));
    assert_int_equal(lb_run(f->base), 0);
}

static void raw_answer(struct fixture *f, const char *answer, size_t len, bool keep_open)
{
    lb_raw_stop(&f->raw);
    assert_int_equal(lb_raw_start(&f->raw, f->base, answer, len, keep_open), 0);
    pool_for(f, f->raw.port);
}

static void test_upstream_pool_new(void **state)
{
    struct fixture *f = *state;
    assert_null(upstream_pool_new(f->base, NULL, "ftp://h", NULL));
    assert_null(upstream_pool_new(f->base, NULL, "http://example.invalid", NULL)); /* no dns */
    struct upstream_pool *p = upstream_pool_new(f->base, NULL, "localhost:5001/ignored", NULL);
    assert_non_null(p);
    ASSERT_EQ_STR(upstream_pool_host(p), "127.0.0.1");
    ASSERT_EQ_INT(upstream_pool_port(p), 5001);
    assert_false(upstream_pool_tls(p));
    ASSERT_EQ_INT(upstream_pool_connections(p), 0);
    upstream_pool_free(p);
    p = upstream_pool_new(f->base, NULL, "https://[::1]", NULL);
    assert_non_null(p);
    ASSERT_EQ_INT(upstream_pool_port(p), 443);
    assert_true(upstream_pool_tls(p));
    upstream_pool_free(p);
    const enum upstream_err all[] = {UPSTREAM_OK,          UPSTREAM_ERR_CONNECT,
                                     UPSTREAM_ERR_TIMEOUT, UPSTREAM_ERR_BROKEN,
                                     UPSTREAM_ERR_TOO_BIG, UPSTREAM_ERR_ABORTED};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        for (size_t j = 0; j < i; j++)
            ASSERT_NE_STR(upstream_err_name(all[i]), upstream_err_name(all[j]));
}

/* Sequential requests share one connection: the server sees one client port. */
static void test_upstream_keepalive_reuse(void **state)
{
    struct fixture *f = *state;
    pool_for(f, f->http.port);
    for (int i = 0; i < 3; i++) {
        struct ures r;
        ures_init(f, &r, 0);
        run_one(f, &r, EVHTTP_REQ_GET, "/echo", NULL);
        assert_true(r.done);
        ASSERT_EQ_INT(r.status, 200);
        ASSERT_EQ_INT(r.heads, 1);
        ASSERT_EQ_STR(sbuf_cstr(&r.body), "GET /echo\n-\n-\n");
        ASSERT_EQ_INT(r.reused, i > 0);
        sbuf_free(&r.body);
        ASSERT_EQ_INT(upstream_pool_connections(f->pool), 1);
        ASSERT_EQ_INT(upstream_pool_idle(f->pool), 1);
    }
    ASSERT_EQ_INT(f->http.nreq, 3);
    ASSERT_EQ_INT(f->http.npeers, 1);
}

/* Method, path with query, Content-Type, extra headers and the body reach the server intact;
 * a non-200 status is a response like any other. */
static void test_upstream_request_on_the_wire(void **state)
{
    struct fixture *f = *state;
    pool_for(f, f->http.port);
    static const char body[] = "{\"a\": \"\\u00e9\"}\n\0tail";
    const char *const hdrs[] = {"Authorization", "Bearer t0k", NULL};
    struct ures r;
    ures_init(f, &r, 0);
    f->pending = 1;
    assert_non_null(upstream_request(f->pool, EVHTTP_REQ_POST, "/echo?x=1&y=%20",
                                     "application/json", body, sizeof body - 1, hdrs, NULL, &CBS,
                                     &r));
    assert_int_equal(lb_run(f->base), 0);
    assert_true(r.done);
    const char *head = "POST /echo?x=1&y=%20\nBearer t0k\napplication/json\n";
    ASSERT_EQ_INT(r.body.len, strlen(head) + sizeof body - 1);
    ASSERT_EQ_MEM(r.body.data, head, strlen(head));
    ASSERT_EQ_MEM(r.body.data + strlen(head), body, sizeof body - 1);
    sbuf_free(&r.body);

    ures_init(f, &r, 0);
    run_one(f, &r, EVHTTP_REQ_GET, "/status?s=503", NULL);
    assert_true(r.done);
    ASSERT_EQ_INT(r.status, 503);
    ASSERT_EQ_STR(sbuf_cstr(&r.body), "status 503");
    sbuf_free(&r.body);
}

/* Streamed: on_chunk gets every byte (chunked encoding), on_done an empty body. */
static void test_upstream_streaming(void **state)
{
    struct fixture *f = *state;
    pool_for(f, f->http.port);
    struct ures r;
    ures_init(f, &r, 1);
    run_one(f, &r, EVHTTP_REQ_GET, "/chunks?n=200", NULL);
    assert_true(r.done);
    struct sbuf want = SBUF_INIT;
    for (int i = 0; i < 200; i++)
        sbuf_printf(&want, "chunk %d\n", i);
    ASSERT_EQ_INT(r.body.len, want.len);
    ASSERT_EQ_MEM(r.body.data, want.data, want.len);
    sbuf_free(&want);
    sbuf_free(&r.body);
    /* streaming lifts max_buffered: 1 MiB through a 1000-byte limit */
    struct upstream_opts o = {.max_buffered = 1000};
    ures_init(f, &r, 1);
    run_one(f, &r, EVHTTP_REQ_GET, "/bytes?n=1048576", &o);
    assert_true(r.done);
    ASSERT_EQ_INT(r.body.len, 1048576);
    sbuf_free(&r.body);
    /* buffered, the same limit fails the request */
    ures_init(f, &r, 0);
    run_one(f, &r, EVHTTP_REQ_GET, "/bytes?n=100000", &o);
    assert_true(r.failed);
    ASSERT_EQ_INT(r.err, UPSTREAM_ERR_TOO_BIG);
    sbuf_free(&r.body);
}

/* In-flight requests each hold their own connection; max_idle bounds what is kept after. */
static void test_upstream_concurrent(void **state)
{
    struct fixture *f = *state;
    pool_for(f, f->http.port);
    upstream_pool_set_max_idle(f->pool, 2);
    enum { N = 5 };
    struct ures r[N];
    f->pending = N;
    for (int i = 0; i < N; i++) {
        ures_init(f, &r[i], 0);
        assert_non_null(upstream_request(f->pool, EVHTTP_REQ_GET, "/bytes?n=3", NULL, NULL, 0, NULL,
                                         NULL, &CBS, &r[i]));
    }
    ASSERT_EQ_INT(upstream_pool_connections(f->pool), N);
    assert_int_equal(lb_run(f->base), 0);
    for (int i = 0; i < N; i++) {
        assert_true(r[i].done);
        ASSERT_EQ_STR(sbuf_cstr(&r[i].body), "xxx");
        sbuf_free(&r[i].body);
    }
    ASSERT_EQ_INT(f->http.npeers, N);
    ASSERT_EQ_INT(upstream_pool_idle(f->pool), 2);
    ASSERT_EQ_INT(upstream_pool_connections(f->pool), 2);
}

static void test_upstream_refused(void **state)
{
    struct fixture *f = *state;
    int port = lb_refused_port();
    ASSERT_GT_INT(port, 0);
    pool_for(f, port);
    struct ures r;
    ures_init(f, &r, 0);
    run_one(f, &r, EVHTTP_REQ_GET, "/", NULL);
    assert_true(r.failed);
    ASSERT_EQ_INT(r.err, UPSTREAM_ERR_CONNECT);
    ASSERT_EQ_INT(r.heads, 0);
    ASSERT_EQ_INT(upstream_pool_connections(f->pool), 0); /* a failed connection is dropped */
    sbuf_free(&r.body);
}

/* The head arrived, then the upstream closed before Content-Length bytes: BROKEN, in both
 * body modes (never CONNECT: the request may have been processed). */
static void test_upstream_closed_mid_body(void **state)
{
    struct fixture *f = *state;
    static const char ans[] = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial";
    for (int mode = 0; mode <= 1; mode++) {
        raw_answer(f, ans, sizeof ans - 1, false);
        struct ures r;
        ures_init(f, &r, mode);
        run_one(f, &r, EVHTTP_REQ_GET, "/", NULL);
        assert_true(r.failed);
        ASSERT_EQ_INT(r.err, UPSTREAM_ERR_BROKEN);
        ASSERT_EQ_INT(r.heads, 1);
        ASSERT_EQ_INT(r.status, 200);
        ASSERT_EQ_INT(upstream_pool_connections(f->pool), 0);
        sbuf_free(&r.body);
    }
}

/* A response head over UPSTREAM_MAX_HEADERS or not HTTP at all: CONNECT (no head); one under
 * the limit is fine. */
static void test_upstream_header_limits(void **state)
{
    struct fixture *f = *state;
    struct sbuf ans = SBUF_INIT;
    for (int big = 0; big <= 1; big++) {
        sbuf_reset(&ans);
        size_t pad = big ? UPSTREAM_MAX_HEADERS + 1024 : UPSTREAM_MAX_HEADERS / 2;
        sbuf_puts(&ans, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Pad: ");
        for (size_t i = 0; i < pad; i++)
            sbuf_putc(&ans, 'p');
        sbuf_puts(&ans, "\r\n\r\nok");
        raw_answer(f, ans.data, ans.len, false);
        struct ures r;
        ures_init(f, &r, 0);
        run_one(f, &r, EVHTTP_REQ_GET, "/", NULL);
        if (big) {
            assert_true(r.failed);
            ASSERT_EQ_INT(r.err, UPSTREAM_ERR_CONNECT);
            ASSERT_EQ_INT(r.heads, 0);
        } else {
            assert_true(r.done);
            ASSERT_EQ_STR(sbuf_cstr(&r.body), "ok");
        }
        sbuf_free(&r.body);
    }
    sbuf_free(&ans);
    static const char junk[] = "SSH-2.0-OpenSSH\r\n\r\n";
    raw_answer(f, junk, sizeof junk - 1, false);
    struct ures r;
    ures_init(f, &r, 0);
    run_one(f, &r, EVHTTP_REQ_GET, "/", NULL);
    assert_true(r.failed);
    ASSERT_EQ_INT(r.err, UPSTREAM_ERR_CONNECT);
    sbuf_free(&r.body);
}

/* on_headers returning -1 ends the request with ABORTED and drops the connection; a cancel
 * from inside on_headers means no further callback at all. */
static void test_upstream_abort_and_cancel(void **state)
{
    struct fixture *f = *state;
    pool_for(f, f->http.port);
    struct ures r;
    ures_init(f, &r, -1);
    run_one(f, &r, EVHTTP_REQ_GET, "/bytes?n=10", NULL);
    assert_true(r.failed);
    ASSERT_EQ_INT(r.err, UPSTREAM_ERR_ABORTED);
    ASSERT_EQ_INT(upstream_pool_connections(f->pool), 0);
    sbuf_free(&r.body);

    ures_init(f, &r, 2);
    run_one(f, &r, EVHTTP_REQ_GET, "/bytes?n=10", NULL); /* on_headers ends the loop */
    lb_spin(f->base);
    ASSERT_EQ_INT(r.heads, 1);
    assert_false(r.done);
    assert_false(r.failed);
    ASSERT_EQ_INT(r.body.len, 0);
    /* the pool still works afterwards, on a fresh connection */
    ures_init(f, &r, 0);
    run_one(f, &r, EVHTTP_REQ_GET, "/echo", NULL);
    assert_true(r.done);
    assert_false(r.reused);
    sbuf_free(&r.body);
}

/* A server that never answers: the request deadline ends it with TIMEOUT; pool_free with a
 * request in flight cancels it without a callback. */
static void test_upstream_deadline_and_free(void **state)
{
    struct fixture *f = *state;
    raw_answer(f, "", 0, true);
    struct upstream_opts o = {.timeout_s = 0.2};
    struct ures r;
    ures_init(f, &r, 0);
    run_one(f, &r, EVHTTP_REQ_GET, "/", &o);
    assert_true(r.failed);
    ASSERT_EQ_INT(r.err, UPSTREAM_ERR_TIMEOUT);
    sbuf_free(&r.body);

    ures_init(f, &r, 0);
    f->pending = 1;
    assert_non_null(
        upstream_request(f->pool, EVHTTP_REQ_GET, "/", NULL, NULL, 0, NULL, NULL, &CBS, &r));
    lb_spin(f->base);
    upstream_pool_free(f->pool);
    f->pool = NULL;
    lb_spin(f->base);
    assert_false(r.done);
    assert_false(r.failed);
}

/* The upstream answers with keep-alive and then closes the connection: with retry_reused the
 * next request succeeds whether or not the client noticed the close before sending. */
static void test_upstream_stale_keepalive_retry(void **state)
{
    struct fixture *f = *state;
    static const char ans[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    raw_answer(f, ans, sizeof ans - 1, false);
    struct upstream_opts o = {.retry_reused = true};
    for (int i = 0; i < 3; i++) {
        struct ures r;
        ures_init(f, &r, 0);
        run_one(f, &r, EVHTTP_REQ_GET, "/", &o);
        assert_true(r.done);
        ASSERT_EQ_STR(sbuf_cstr(&r.body), "ok");
        sbuf_free(&r.body);
    }
    ASSERT_EQ_INT(f->raw.accepted, 3);
}

int main(void)
{
    lb_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_upstream_pool_new, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_keepalive_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_request_on_the_wire, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_streaming, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_closed_mid_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_header_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_abort_and_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_deadline_and_free, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_stale_keepalive_retry, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
