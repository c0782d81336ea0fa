/* Unit tests for src/common/httputil.c: URL parsing and reason phrases (no network), then the
 * server side against real loopback connections on one event base: reply helpers
 * (status line, Content-Type, Content-Length, the JSON error body), request path extraction (origin
 * and absolute form), request bodies, and the limits http_server_new sets. The client is a plain
 * socket bufferevent that sends raw bytes and reads the answer to EOF, so the bytes on the wire are
 * checked exactly. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <time.h>

#include <cmocka.h>

#include "assert_ext.h"
#include "loopback.h"

static void test_http_url_parse(void **state)
{
    static const struct {
        const char *url;
        bool tls;
        const char *host;
        int port;
        const char *path;
    } ok[] = {
        {"http://example.com", false, "example.com", 80, "/"},
        {"https://example.com", true, "example.com", 443, "/"},
        {"http://h:8080/a/b?x=1&y=2", false, "h", 8080, "/a/b?x=1&y=2"},
        {"https://h:1/p#frag", true, "h", 1, "/p"},
        {"h:5000", false, "h", 5000, "/"},
        {"127.0.0.1:3000/x", false, "127.0.0.1", 3000, "/x"},
        {"http://[::1]:9/v6", false, "::1", 9, "/v6"},
        {"https://[2001:db8::7]", true, "2001:db8::7", 443, "/"},
        {"http://h?q=1", false, "h", 80, "/?q=1"},
        {"http://h#f", false, "h", 80, "/"},
        {"http://h:65535", false, "h", 65535, "/"},
        {"http://sgpu:tok@w-1.example_x:5/p", false, "w-1.example_x", 5, "/p"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct http_url u;
        assert_int_equal(http_url_parse(ok[i].url, &u), 0);
        ASSERT_EQ_INT(u.tls, ok[i].tls);
        ASSERT_EQ_STR(u.host, ok[i].host);
        ASSERT_EQ_INT(u.port, ok[i].port);
        ASSERT_EQ_STR(u.path, ok[i].path);
    }
    char longhost[400];
    memset(longhost, 'a', sizeof longhost - 1);
    longhost[sizeof longhost - 1] = '\0';
    char longpath[1100] = "http://h/";
    memset(longpath + 9, 'p', sizeof longpath - 10);
    longpath[sizeof longpath - 1] = '\0';
    const char *bad[] = {
        "",
        "ftp://h",
        "http://",
        "http://:80",
        "http://h:0",
        "http://h:65536",
        "http://h:-1",
        "http://h:x",
        "http://h:80x",
        "http://[::1",
        "http://[]:80",
        "http://a b:80/",
        "http://h\r\nX-Injected: 1",
        "http://h%41/",
        "http://\"h\"/",
        "http://[::1 x]/",
        longhost,
        longpath,
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct http_url u;
        if (http_url_parse(bad[i], &u) != -1) fail_msg("accepted bad URL \"%.60s\"", bad[i]);
    }
}

static void test_http_reason(void **state)
{
    ASSERT_EQ_STR(http_reason(200), "OK");
    ASSERT_EQ_STR(http_reason(201), "Created");
    ASSERT_EQ_STR(http_reason(404), "Not Found");
    ASSERT_EQ_STR(http_reason(413), "Request Entity Too Large");
    ASSERT_EQ_STR(http_reason(422), "Unprocessable Entity");
    ASSERT_EQ_STR(http_reason(429), "Too Many Requests");
    ASSERT_EQ_STR(http_reason(499), "");
    ASSERT_EQ_STR(http_reason(503), "Service Unavailable");
    ASSERT_EQ_STR(http_reason(504), "Gateway Timeout");
    ASSERT_EQ_STR(http_reason(299), "Unknown");
    ASSERT_EQ_STR(http_reason(-1), "Unknown");
}

static void test_http_is_stream(void **state)
{
    assert_true(http_is_stream(NULL, "chunked"));
    assert_true(http_is_stream("application/json", "gzip, Chunked"));
    assert_false(http_is_stream(NULL, NULL));
    assert_false(http_is_stream("application/json", NULL));
    assert_false(http_is_stream("application/json", "identity"));
    assert_true(http_is_stream("text/event-stream; charset=utf-8", NULL));
    assert_true(http_is_stream("Application/X-NDJSON", NULL));
    assert_true(http_is_stream("application/jsonl", NULL));
    assert_true(http_is_stream("application/octet-stream", NULL));
    assert_false(http_is_stream("text/plain", NULL));
}

/* ---- server side ---- */

struct raw_client {
    struct event_base *base;
    struct sbuf got;
    bool closed;
};

static void rc_read_cb(struct bufferevent *bev, void *arg)
{
    struct raw_client *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n = evbuffer_get_length(in);
    sbuf_reserve(&c->got, n);
    evbuffer_remove(in, c->got.data + c->got.len, n);
    c->got.len += n;
    c->got.data[c->got.len] = '\0';
}

static void rc_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct raw_client *c = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        rc_read_cb(bev, arg);
        c->closed = true;
        lb_done(c->base);
    }
}

/* Sends req (raw bytes) to 127.0.0.1:port and returns everything read until the server closes
 * (the caller frees it).  Requests say "Connection: close". */
static char *exchange(struct event_base *base, int port, const char *req, size_t len)
{
    struct raw_client c = {base, SBUF_INIT, false};
    struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    assert_non_null(bev);
    bufferevent_setcb(bev, rc_read_cb, NULL, rc_event_cb, &c);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bufferevent_socket_connect(bev, (struct sockaddr *)&sin, sizeof sin), 0);
    bufferevent_write(bev, req, len);
    assert_int_equal(lb_run(base), 0);
    assert_true(c.closed);
    bufferevent_free(bev);
    return sbuf_steal(&c.got, NULL);
}

static char *exchange_s(struct event_base *base, int port, const char *req)
{
    return exchange(base, port, req, strlen(req));
}

/* A handler for the reply helpers: the path picks the helper. */
static void replies_cb(struct evhttp_request *req, void *arg)
{
    char path[64];
    if (!http_request_path(req, path, sizeof path)) {
        http_reply(req, 414, "text/plain", "long", 4);
    } else if (strcmp(path, "/error") == 0) {
        http_reply_error(req, 422, "bad \"%s\" %d\n\xc3\xa9", "thing", 7);
    } else if (strcmp(path, "/json") == 0) {
        http_reply_json(req, 201, "{\"a\": 1}", 8);
    } else if (strcmp(path, "/empty") == 0) {
        http_reply(req, 204, NULL, NULL, 0);
    } else {
        /* echo the extracted path and the body */
        size_t n;
        const char *body = http_request_body(req, &n);
        struct sbuf b = SBUF_INIT;
        sbuf_printf(&b, "path=%s len=%zu body=", path, n);
        sbuf_append(&b, body, n);
        http_reply(req, 200, "text/plain", b.data, b.len);
        sbuf_free(&b);
    }
}

struct server {
    struct event_base *base;
    struct evhttp *http;
    int port;
};

static void server_start(struct server *s, const struct http_limits *lim)
{
    s->base = http_base_new();
    assert_non_null(s->base);
    s->http = http_server_new(s->base, lim);
    assert_non_null(s->http);
    evhttp_set_gencb(s->http, replies_cb, NULL);
    assert_int_equal(http_server_listen(s->http, "127.0.0.1", 0, &s->port), 0);
    ASSERT_GT_INT(s->port, 0);
}

static void server_stop(struct server *s)
{
    evhttp_free(s->http);
    event_base_free(s->base);
}

/* A header's value in a raw response ("" when absent), into out. */
static const char *header_of(const char *resp, const char *name, char *out, size_t n)
{
    out[0] = '\0';
    char key[64];
    snprintf(key, sizeof key, "\r\n%s: ", name);
    const char *p = strstr(resp, key);
    const char *end = strstr(resp, "\r\n\r\n");
    if (!p || (end && p > end)) return out;
    p += strlen(key);
    size_t l = strcspn(p, "\r");
    if (l >= n) l = n - 1;
    memcpy(out, p, l);
    out[l] = '\0';
    return out;
}

static const char *body_of(const char *resp)
{
    const char *p = strstr(resp, "\r\n\r\n");
    return p ? p + 4 : "";
}

static void test_http_reply_helpers(void **state)
{
    struct server s;
    server_start(&s, NULL);
    char h[128];

    char *r =
        exchange_s(s.base, s.port, "GET /error HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    ASSERT_HAS_STR(r, "HTTP/1.1 422 Unprocessable Entity\r\n");
    ASSERT_EQ_STR(header_of(r, "Content-Type", h, sizeof h), "application/json");
    /* JSON-escaped the Python way: ASCII only */
    const char *want = "{\"error\": \"bad \\\"thing\\\" 7\\n\\u00e9\"}";
    ASSERT_EQ_STR(body_of(r), want);
    char len[16];
    snprintf(len, sizeof len, "%zu", strlen(want));
    ASSERT_EQ_STR(header_of(r, "Content-Length", h, sizeof h), len);
    free(r);

    r = exchange_s(s.base, s.port, "GET /json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    ASSERT_HAS_STR(r, "HTTP/1.1 201 Created\r\n");
    ASSERT_EQ_STR(header_of(r, "Content-Type", h, sizeof h), "application/json");
    ASSERT_EQ_STR(header_of(r, "Content-Length", h, sizeof h), "8");
    ASSERT_EQ_STR(body_of(r), "{\"a\": 1}");
    free(r);

    /* an explicit content type replaces the server default, once */
    r = exchange_s(s.base, s.port, "GET /p HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    ASSERT_HAS_STR(r, "HTTP/1.1 200 OK\r\n");
    ASSERT_EQ_STR(header_of(r, "Content-Type", h, sizeof h), "text/plain");
    const char *second = strstr(strstr(r, "Content-Type:") + 1, "Content-Type:");
    assert_null(second);
    free(r);

    r = exchange_s(s.base, s.port, "GET /empty HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    ASSERT_HAS_STR(r, "HTTP/1.1 204 No Content\r\n");
    ASSERT_EQ_STR(body_of(r), "");
    free(r);
    server_stop(&s);
}

static void test_http_request_path_and_body(void **state)
{
    struct server s;
    server_start(&s, NULL);
    static const struct {
        const char *req, *want;
    } cases[] = {
        {"GET /a/b?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "path=/a/b len=0 body="},
        {"GET /a#frag HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "path=/a len=0 body="},
        {"GET http://h:1/abs/p?q HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
         "path=/abs/p len=0 body="},
        {"GET http://h:1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "path=/ len=0 body="},
        {"POST /in HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\nab\0cd",
         "path=/in len=5 body=ab\0cd"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t rl = strlen(cases[i].req);
        size_t wl = strlen(cases[i].want);
        if (strstr(cases[i].req, "POST")) rl += 3, wl += 3; /* the bytes after the NUL */
        char *r = exchange(s.base, s.port, cases[i].req, rl);
        ASSERT_HAS_STR(r, "HTTP/1.1 200 OK\r\n");
        ASSERT_EQ_MEM(body_of(r), cases[i].want, wl);
        free(r);
    }
    /* a path longer than the handler's 64-byte buffer is reported, not truncated */
    char req[256];
    snprintf(req, sizeof req, "GET /%0100d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 0);
    char *r = exchange_s(s.base, s.port, req);
    ASSERT_HAS_STR(r, "HTTP/1.1 414 ");
    free(r);
    server_stop(&s);
}

/* The limits given to http_server_new are the ones evhttp enforces. */
static void test_http_server_limits(void **state)
{
    struct server s;
    struct http_limits lim = {.max_body = 16, .max_headers = 512, .timeout_s = 0};
    server_start(&s, &lim);
    char *r = exchange_s(s.base, s.port,
                         "POST /in HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                         "Content-Length: 16\r\n\r\n0123456789abcdef");
    ASSERT_HAS_STR(r, "HTTP/1.1 200 OK\r\n");
    free(r);
    r = exchange_s(s.base, s.port,
                   "POST /in HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                   "Content-Length: 17\r\n\r\n0123456789abcdefg");
    ASSERT_HAS_STR(r, "HTTP/1.1 413 ");
    free(r);
    char big[1024];
    snprintf(big, sizeof big,
             "GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: %0700d\r\n\r\n", 0);
    r = exchange_s(s.base, s.port, big);
    assert_null(strstr(r, "HTTP/1.1 200")); /* refused (400 or closed), never served */
    free(r);
    /* the bound port is taken: a second server cannot listen on it */
    struct evhttp *again = http_server_new(s.base, NULL);
    assert_non_null(again);
    int port2 = -1;
    errno = 0;
    assert_int_equal(http_server_listen(again, "127.0.0.1", s.port, &port2), -1);
    ASSERT_NE_INT(errno, 0);
    evhttp_free(again);
    server_stop(&s);
}

int main(void)
{
    lb_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_url_parse),
        cmocka_unit_test(test_http_reason),
        cmocka_unit_test(test_http_is_stream),
        cmocka_unit_test(test_http_reply_helpers),
        cmocka_unit_test(test_http_request_path_and_body),
        cmocka_unit_test(test_http_server_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
