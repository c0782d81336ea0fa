/* Unit tests for src/common/hclient.c, the one-shot client of the launcher and the CLI,
 * against real peers on 127.0.0.1 in this process (tests/common/loopback.h), all on one event
 * base: keep-alive reuse for plain HTTP, request defaults on the wire (method, Content-Type,
 * bearer), streamed and accumulated bodies, and each error class: a refused connection, an
 * upstream that closes mid-body, a response head over the 64 KiB limit, a body over max_body,
 * a bad URL, the deadline, cancellation, a kept-alive connection the server closed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "assert_ext.h"
#include "hclient.h"
#include "loopback.h"

struct hres {
    struct event_base *base;
    int *pending;
    int dones, heads, head_status;
    enum hc_error err;
    int status;
    struct sbuf body;  /* accumulated body, or the streamed chunks */
    size_t r_body_len; /* hc_response.body_len */
    char errmsg[256];
    double t_head, t_done;
};

static void on_head(void *arg, int status)
{
    struct hres *h = arg;
    h->heads++;
    h->head_status = status;
}

static void on_chunk(void *arg, const char *data, size_t len)
{
    struct hres *h = arg;
    sbuf_append(&h->body, data, len);
}

static void on_done(void *arg, const struct hc_response *r)
{
    struct hres *h = arg;
    h->dones++;
    h->err = r->err;
    h->status = r->status;
    h->r_body_len = r->body_len;
    if (r->body && r->body_len) sbuf_append(&h->body, r->body, r->body_len);
    snprintf(h->errmsg, sizeof h->errmsg, "%s", r->errmsg ? r->errmsg : "");
    h->t_head = r->t_head;
    h->t_done = r->t_done;
    if (--*h->pending == 0) lb_done(h->base);
}

struct fixture {
    struct event_base *base;
    struct lb_http http;
    struct lb_raw raw;
    struct hclient *hc;
    int pending;
    char url[128];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->base = http_base_new();
    assert_non_null(f->base);
    assert_int_equal(lb_http_start(&f->http, f->base, NULL), 0);
    f->hc = hclient_new(f->base, NULL);
    assert_non_null(f->hc);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f->hc) hclient_free(f->hc);
    lb_spin(f->base); /* connections dropped by the code under test are freed from the loop */
    lb_raw_stop(&f->raw);
    lb_http_stop(&f->http);
    lb_spin(f->base);
    event_base_free(f->base);
    free(f);
    return 0;
}

static const char *url_of(struct fixture *f, int port, const char *path)
{
    snprintf(f->url, sizeof f->url, "http://127.0.0.1:%d%s", port, path);
    return f->url;
}

static struct hc_opts opts_for(struct hres *h, const char *url)
{
    struct hc_opts o = {.url = url, .on_head = on_head, .on_done = on_done, .arg = h};
    return o;
}

static void hres_init(struct fixture *f, struct hres *h)
{
    memset(h, 0, sizeof *h);
    h->base = f->base;
    h->pending = &f->pending;
}

/* Starts one request and runs the loop until its on_done. */
static void run_one(struct fixture *f, struct hres *h, struct hc_opts *o)
{
    f->pending = 1;
    assert_non_null(hc_request(f->hc, o));
    ASSERT_EQ_INT(h->dones, 0); /* never from inside hc_request */
    assert_int_equal(lb_run(f->base), 0);
    ASSERT_EQ_INT(h->dones, 1);
    ASSERT_EQ_INT(hclient_active(f->hc), 0);
}

static void test_hclient_error_names(void **state)
{
    const enum hc_error all[] = {HC_OK,
                                 HC_ERR_RESOLVE,
                                 HC_ERR_CONNECT,
                                 HC_ERR_TIMEOUT,
                                 HC_ERR_MIDSTREAM,
                                 HC_ERR_TOO_LARGE,
                                 HC_ERR_CANCELLED,
                                 HC_ERR_BAD_URL};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        for (size_t j = 0; j < i; j++)
            ASSERT_NE_STR(hc_error_name(all[i]), hc_error_name(all[j]));
}

/* Plain-HTTP requests to one host:port reuse one connection. */
static void test_hclient_keepalive_reuse(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < 3; i++) {
        struct hres h;
        hres_init(f, &h);
        struct hc_opts o = opts_for(&h, url_of(f, f->http.port, "/echo?i=1"));
        run_one(f, &h, &o);
        ASSERT_EQ_INT(h.err, HC_OK);
        ASSERT_EQ_INT(h.status, 200);
        ASSERT_EQ_INT(h.heads, 1);
        ASSERT_EQ_INT(h.head_status, 200);
        ASSERT_EQ_STR(sbuf_cstr(&h.body), "GET /echo?i=1\n-\n-\n");
        ASSERT_EQ_INT(h.r_body_len, h.body.len);
        ASSERT_GE_DBL(h.t_head, 0);
        ASSERT_GE_DBL(h.t_done, h.t_head); /* ordering, not speed */
        sbuf_free(&h.body);
    }
    ASSERT_EQ_INT(f->http.nreq, 3);
    ASSERT_EQ_INT(f->http.npeers, 1);
}

/* A body makes the default method POST and the default type application/json; the bearer
 * becomes an Authorization header; the body is copied (the caller's buffer may go at once). */
static void test_hclient_request_on_the_wire(void **state)
{
    struct fixture *f = *state;
    struct hres h;
    hres_init(f, &h);
    char *body = strdup("{\"k\": [1, 2]}");
    struct hc_opts o = opts_for(&h, url_of(f, f->http.port, "/echo"));
    o.body = body;
    o.body_len = strlen(body);
    o.bearer = "s3cret";
    f->pending = 1;
    assert_non_null(hc_request(f->hc, &o));
    free(body);
    assert_int_equal(lb_run(f->base), 0);
    ASSERT_EQ_INT(h.err, HC_OK);
    ASSERT_EQ_STR(sbuf_cstr(&h.body),
                  "POST /echo\nBearer s3cret\napplication/json\n{\"k\": [1, 2]}");
    sbuf_free(&h.body);

    hres_init(f, &h);
    o = opts_for(&h, url_of(f, f->http.port, "/echo"));
    o.method = "PUT";
    o.content_type = "text/plain";
    o.body = "x";
    o.body_len = 1;
    run_one(f, &h, &o);
    ASSERT_EQ_STR(sbuf_cstr(&h.body), "PUT /echo\n-\ntext/plain\nx");
    sbuf_free(&h.body);

    /* an error status is a successful exchange */
    hres_init(f, &h);
    o = opts_for(&h, url_of(f, f->http.port, "/status?s=404"));
    run_one(f, &h, &o);
    ASSERT_EQ_INT(h.err, HC_OK);
    ASSERT_EQ_INT(h.status, 404);
    ASSERT_EQ_STR(sbuf_cstr(&h.body), "status 404");
    sbuf_free(&h.body);
}

/* With on_chunk every byte is delivered as it arrives and nothing is accumulated; without it
 * max_body bounds the accumulated body. */
static void test_hclient_bodies(void **state)
{
    struct fixture *f = *state;
    struct hres h;
    hres_init(f, &h);
    struct hc_opts o = opts_for(&h, url_of(f, f->http.port, "/chunks?n=300"));
    o.on_chunk = on_chunk;
    run_one(f, &h, &o);
    ASSERT_EQ_INT(h.err, HC_OK);
    ASSERT_EQ_INT(h.r_body_len, 0);
    struct sbuf want = SBUF_INIT;
    for (int i = 0; i < 300; i++)
        sbuf_printf(&want, "chunk %d\n", i);
    ASSERT_EQ_INT(h.body.len, want.len);
    ASSERT_EQ_MEM(h.body.data, want.data, want.len);
    sbuf_free(&want);
    sbuf_free(&h.body);

    hres_init(f, &h);
    o = opts_for(&h, url_of(f, f->http.port, "/bytes?n=100000"));
    o.max_body = 1000;
    run_one(f, &h, &o);
    ASSERT_EQ_INT(h.err, HC_ERR_TOO_LARGE);
    ASSERT_EQ_INT(h.status, 200);
    ASSERT_LE_INT(h.body.len, 1000);
    sbuf_free(&h.body);

    hres_init(f, &h);
    o = opts_for(&h, url_of(f, f->http.port, "/bytes?n=1000"));
    o.max_body = 1000; /* exactly at the limit is fine */
    run_one(f, &h, &o);
    ASSERT_EQ_INT(h.err, HC_OK);
    ASSERT_EQ_INT(h.body.len, 1000);
    sbuf_free(&h.body);
}

static void test_hclient_refused_and_bad_url(void **state)
{
    struct fixture *f = *state;
    int port = lb_refused_port();
    ASSERT_GT_INT(port, 0);
    struct hres h;
    hres_init(f, &h);
    struct hc_opts o = opts_for(&h, url_of(f, port, "/"));
    run_one(f, &h, &o);
    ASSERT_EQ_INT(h.err, HC_ERR_CONNECT);
    ASSERT_EQ_INT(h.status, 0);
    ASSERT_EQ_INT(h.heads, 0);
    ASSERT_HAS_STR(h.errmsg, "127.0.0.1");
    sbuf_free(&h.body);

    const char *bad[] = {"ftp://x/", "http://", "http://h:99999/", "http://[::1/"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hres_init(f, &h);
        o = opts_for(&h, bad[i]);
        run_one(f, &h, &o);
        ASSERT_EQ_INT(h.err, HC_ERR_BAD_URL);
        ASSERT_HAS_STR(h.errmsg, bad[i]);
    }
}

/* The head arrived, then the server closed before Content-Length bytes: MIDSTREAM (never
 * retried: the request reached the server). */
static void test_hclient_closed_mid_body(void **state)
{
    struct fixture *f = *state;
    static const char ans[] = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial";
    assert_int_equal(lb_raw_start(&f->raw, f->base, ans, sizeof ans - 1, false), 0);
    struct hres h;
    hres_init(f, &h);
    struct hc_opts o = opts_for(&h, url_of(f, f->raw.port, "/"));
    run_one(f, &h, &o);
    ASSERT_EQ_INT(h.err, HC_ERR_MIDSTREAM);
    ASSERT_EQ_INT(h.status, 200);
    ASSERT_EQ_INT(h.heads, 1);
    ASSERT_EQ_INT(f->raw.accepted, 1);
    sbuf_free(&h.body);
}

/* A response head over 64 KiB is refused as a bad answer (no head: CONNECT); 32 KiB is fine. */
static void test_hclient_header_limit(void **state)
{
    struct fixture *f = *state;
    struct sbuf ans = SBUF_INIT;
    for (int big = 0; big <= 1; big++) {
        sbuf_reset(&ans);
        sbuf_puts(&ans, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Pad: ");
        size_t pad = big ? (64 << 10) + 1024 : 32 << 10;
        for (size_t i = 0; i < pad; i++)
            sbuf_putc(&ans, 'p');
        sbuf_puts(&ans, "\r\n\r\nok");
        lb_raw_stop(&f->raw);
        assert_int_equal(lb_raw_start(&f->raw, f->base, ans.data, ans.len, false), 0);
        struct hres h;
        hres_init(f, &h);
        struct hc_opts o = opts_for(&h, url_of(f, f->raw.port, "/"));
        run_one(f, &h, &o);
        if (big) {
            ASSERT_EQ_INT(h.err, HC_ERR_CONNECT);
            ASSERT_EQ_INT(h.status, 0);
            /* libevent reports an oversized head as an invalid one */
            ASSERT_HAS_STR(h.errmsg, "bad answer from 127.0.0.1");
        } else {
            ASSERT_EQ_INT(h.err, HC_OK);
            ASSERT_EQ_STR(sbuf_cstr(&h.body), "ok");
        }
        sbuf_free(&h.body);
    }
    sbuf_free(&ans);
}

/* A server that never answers: the deadline ends the request with TIMEOUT; a cancelled request
 * and one still in flight when the client is freed get no callback. */
static void test_hclient_timeout_cancel_free(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(lb_raw_start(&f->raw, f->base, "", 0, true), 0);
    struct hres h;
    hres_init(f, &h);
    struct hc_opts o = opts_for(&h, url_of(f, f->raw.port, "/"));
    o.timeout_s = 0.2;
    run_one(f, &h, &o);
    ASSERT_EQ_INT(h.err, HC_ERR_TIMEOUT);
    ASSERT_EQ_INT(h.status, 0);

    hres_init(f, &h);
    o = opts_for(&h, url_of(f, f->raw.port, "/"));
    struct hc_req *r = hc_request(f->hc, &o);
    assert_non_null(r);
    lb_spin(f->base);
    hc_cancel(r);
    lb_spin(f->base);
    ASSERT_EQ_INT(h.dones, 0);
    ASSERT_EQ_INT(hclient_active(f->hc), 0);

    hres_init(f, &h);
    o = opts_for(&h, url_of(f, f->raw.port, "/"));
    assert_non_null(hc_request(f->hc, &o));
    lb_spin(f->base);
    ASSERT_EQ_INT(hclient_active(f->hc), 1);
    hclient_free(f->hc);
    f->hc = NULL;
    lb_spin(f->base);
    ASSERT_EQ_INT(h.dones, 0);
}

/* The server answers keep-alive, then closes: the next request on that connection is retried
 * once on a fresh one (it never reached the server) and succeeds. */
static void test_hclient_stale_keepalive_retry(void **state)
{
    struct fixture *f = *state;
    static const char ans[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    assert_int_equal(lb_raw_start(&f->raw, f->base, ans, sizeof ans - 1, false), 0);
    for (int i = 0; i < 3; i++) {
        struct hres h;
        hres_init(f, &h);
        struct hc_opts o = opts_for(&h, url_of(f, f->raw.port, "/"));
        run_one(f, &h, &o);
        ASSERT_EQ_INT(h.err, HC_OK);
        ASSERT_EQ_STR(sbuf_cstr(&h.body), "ok");
        sbuf_free(&h.body);
    }
    ASSERT_EQ_INT(f->raw.accepted, 3);
}

int main(void)
{
    lb_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hclient_error_names),
        cmocka_unit_test_setup_teardown(test_hclient_keepalive_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hclient_request_on_the_wire, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hclient_bodies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hclient_refused_and_bad_url, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hclient_closed_mid_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hclient_header_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hclient_timeout_cancel_free, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hclient_stale_keepalive_retry, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
