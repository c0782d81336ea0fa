/* sgpu-model serve: event loop, routing, request lifecycle, metrics.
 *
 * Threads: this loop thread (HTTP only, never computes), the model loader
 * (once, at start-up), the batcher's scheduler and its compute pool.  The
 * batcher wakes the loop through a pipe; the loop drains events and writes
 * responses / SSE chunks.  Client disconnect is seen by an EV_CLOSED watcher
 * on the socket (evhttp itself does not read while a request is pending) and
 * by the connection close callback while streaming; either cancels the
 * sequence, which leaves the batch at the next step. */
#include "server.h"
#include "clock.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/keyvalq_struct.h>

#include "chat.h"
#include "connguard.h"
#include "httputil.h"
#include "jsonw.h"
#include "log.h"
#include "metrics.h"
#include "opts.h"
#include "quant.h"
#include "server_int.h"
#include "xalloc.h"

static int wake_fd[2] = {-1, -1};
static atomic_int wake_pending;
static char load_err[512];
static atomic_int load_state; /* 0 loading, 1 loaded, -1 failed */

static void wake_loop(void *arg)
{
    (void)arg;
    if (atomic_exchange(&wake_pending, 1) == 0) {
        char c = 'w';
        ssize_t r = write(wake_fd[1], &c, 1);
        (void)r;
    }
}

/* ---- replies ---- */

void srv_reply_sbuf(struct evhttp_request *req, int status, const char *ctype, struct sbuf *b)
{
    http_reply(req, status, ctype, b->data ? b->data : "", b->len);
}

void srv_tgi_error(struct evhttp_request *req, int status, const char *type, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct sbuf b = SBUF_INIT;
    sbuf_puts(&b, "{\"error\": ");
    jw_cstr(&b, msg);
    sbuf_puts(&b, ", \"error_type\": ");
    jw_cstr(&b, type);
    sbuf_putc(&b, '}');
    srv_reply_sbuf(req, status, "application/json", &b);
    sbuf_free(&b);
}

/* The request field an error message names: messages start with `field`. */
static bool msg_param(const char *msg, char *out, size_t n)
{
    if (msg[0] != '`') return false;
    size_t i = 1;
    while (i < n && msg[i] && msg[i] != '`' &&
           ((msg[i] >= 'a' && msg[i] <= 'z') || (msg[i] >= 'A' && msg[i] <= 'Z') ||
            (msg[i] >= '0' && msg[i] <= '9') || msg[i] == '_' || msg[i] == '.'))
        i++;
    if (msg[i] != '`' || i == 1 || i >= n) return false;
    memcpy(out, msg + 1, i - 1);
    out[i - 1] = 0;
    return true;
}

static void oai_error_v(struct evhttp_request *req, int status, const char *type, const char *code,
                        const char *param, const char *fmt, va_list ap)
{
    char msg[1024], pbuf[64];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (!param && msg_param(msg, pbuf, sizeof pbuf)) param = pbuf;
    struct sbuf b = SBUF_INIT;
    sbuf_puts(&b, "{\"error\": {\"message\": ");
    jw_cstr(&b, msg);
    sbuf_puts(&b, ", \"type\": ");
    jw_cstr(&b, type);
    sbuf_puts(&b, ", \"param\": ");
    if (param)
        jw_cstr(&b, param);
    else
        sbuf_puts(&b, "null");
    sbuf_puts(&b, ", \"code\": ");
    if (code)
        jw_cstr(&b, code);
    else
        sbuf_puts(&b, "null");
    sbuf_puts(&b, "}}");
    srv_reply_sbuf(req, status, "application/json", &b);
    sbuf_free(&b);
}

void srv_oai_error(struct evhttp_request *req, int status, const char *type, const char *code,
                   const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    oai_error_v(req, status, type, code, NULL, fmt, ap);
    va_end(ap);
}

void srv_oai_error_param(struct evhttp_request *req, int status, const char *type, const char *code,
                         const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    oai_error_v(req, status, type, code, param, fmt, ap);
    va_end(ap);
}

/* ---- JSON input ---- */

struct json_object *srv_parse_body(struct evhttp_request *req, const char **msg)
{
    size_t n;
    const char *body = http_request_body(req, &n);
    struct json_tokener *tk = json_tokener_new_ex(32);
    if (!tk) {
        *msg = "out of memory";
        return NULL;
    }
    json_tokener_set_flags(tk, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    struct json_object *o = json_tokener_parse_ex(tk, body, (int)n);
    enum json_tokener_error e = json_tokener_get_error(tk);
    size_t end = json_tokener_get_parse_end(tk);
    json_tokener_free(tk);
    if (!o || e != json_tokener_success) {
        if (o) json_object_put(o);
        *msg = n == 0 ? "empty request body" : "request body is not valid JSON";
        return NULL;
    }
    while (end < n &&
           (body[end] == ' ' || body[end] == '\n' || body[end] == '\r' || body[end] == '\t'))
        end++;
    if (end != n || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        *msg =
            end != n ? "trailing data after the JSON body" : "request body must be a JSON object";
        return NULL;
    }
    return o;
}

static struct json_object *jfield(struct json_object *o, const char *k)
{
    struct json_object *v = NULL;
    if (!json_object_object_get_ex(o, k, &v) || !v || json_object_is_type(v, json_type_null))
        return NULL;
    return v;
}

int jget_int(struct json_object *o, const char *k, long long lo, long long hi, long long *out,
             bool *present)
{
    struct json_object *v = jfield(o, k);
    if (present) *present = v != NULL;
    if (!v) return 0;
    if (!json_object_is_type(v, json_type_int)) return -1;
    errno = 0;
    int64_t x = json_object_get_int64(v);
    if (errno || x < lo || x > hi) return -1;
    *out = x;
    return 0;
}

int jget_num(struct json_object *o, const char *k, double *out, bool *present)
{
    struct json_object *v = jfield(o, k);
    if (present) *present = v != NULL;
    if (!v) return 0;
    if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
        return -1;
    *out = json_object_get_double(v);
    return 0;
}

int jget_bool(struct json_object *o, const char *k, bool *out, bool *present)
{
    struct json_object *v = jfield(o, k);
    if (present) *present = v != NULL;
    if (!v) return 0;
    if (!json_object_is_type(v, json_type_boolean)) return -1;
    *out = json_object_get_boolean(v);
    return 0;
}

static void add_stop(struct gen_req *g, const char *s, size_t n)
{
    if (n == 0) return;
    g->stop = xrealloc(g->stop, (size_t)(g->n_stop + 1) * sizeof *g->stop);
    g->stop_len = xrealloc(g->stop_len, (size_t)(g->n_stop + 1) * sizeof *g->stop_len);
    g->stop[g->n_stop] = xmalloc(n + 1);
    memcpy(g->stop[g->n_stop], s, n);
    g->stop[g->n_stop][n] = 0;
    g->stop_len[g->n_stop] = n;
    g->n_stop++;
}

int jget_stop(struct json_object *o, const char *k, struct gen_req *g)
{
    struct json_object *v = jfield(o, k);
    if (!v) return 0;
    if (json_object_is_type(v, json_type_string)) {
        add_stop(g, json_object_get_string(v), (size_t)json_object_get_string_len(v));
        return 0;
    }
    if (!json_object_is_type(v, json_type_array)) return -1;
    size_t n = json_object_array_length(v);
    if (n > 16) return -1;
    for (size_t i = 0; i < n; i++) {
        struct json_object *x = json_object_array_get_idx(v, i);
        if (!x || !json_object_is_type(x, json_type_string)) return -1;
        add_stop(g, json_object_get_string(x), (size_t)json_object_get_string_len(x));
    }
    return 0;
}

/* ---- request lifecycle ---- */

struct creq *srv_creq_new(struct srv *s, struct evhttp_request *req, enum api_kind api)
{
    struct creq *c = xcalloc(1, sizeof *c);
    struct gen_req *g = xcalloc(1, sizeof *g);
    c->s = s;
    c->req = req;
    c->api = api;
    c->g = g;
    g->user = c;
    g->sp.temperature = 1.0f;
    g->sp.top_p = 1.0f;
    g->sp.repetition_penalty = 1.0f;
    c->created = (long)time(NULL);
    c->t0 = clock_mono();
    s->next_id++;
    /* a random per-process prefix keeps ids unique across restarts */
    snprintf(c->id, sizeof c->id, "%s-%s%llu", api == API_OAI_CHAT ? "chatcmpl" : "cmpl",
             s->id_prefix, (unsigned long long)s->next_id);
    return c;
}

static void creq_free(struct creq *c)
{
    gen_req_free(c->g);
    sbuf_free(&c->text);
    sbuf_free(&c->toks);
    sbuf_free(&c->top_toks);
    free(c->prefix);
    free(c);
}

void srv_creq_discard(struct creq *c)
{
    creq_free(c);
}

static void creq_cancel(struct creq *c)
{
    if (c->gone) return;
    c->gone = true;
    log_info("client_gone", "id=%s generated=%d", c->id, c->g->n_gen);
    batcher_cancel(c->s->bat, c->g);
}

static void on_close_ev(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    creq_cancel(arg);
}

static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    struct creq *c = arg;
    if (c->close_ev) {
        event_free(c->close_ev);
        c->close_ev = NULL;
    }
    creq_cancel(c);
}

/* Stop watching the connection (before replying or freeing). */
static void creq_unwatch(struct creq *c)
{
    if (c->close_ev) {
        event_free(c->close_ev);
        c->close_ev = NULL;
    }
    struct evhttp_connection *evcon = evhttp_request_get_connection(c->req);
    if (evcon) evhttp_connection_set_closecb(evcon, NULL, NULL);
}

void srv_start(struct creq *c)
{
    struct srv *s = c->s;
    struct gen_req *g = c->g;
    g->t_submit = clock_mono();
    if (batcher_submit(s->bat, g) != 0) {
        *s->m_rejected_queue += 1;
        /* the queue drains as sequences finish: ask clients to come back soon */
        evhttp_add_header(evhttp_request_get_output_headers(c->req), "Retry-After", "1");
        if (c->api == API_TGI)
            srv_tgi_error(c->req, 429, "overloaded",
                          "Model is overloaded: queue limit (%d waiting requests) reached",
                          s->max_queue);
        else
            srv_oai_error(c->req, 429, "rate_limit_error", "queue_full",
                          "queue limit (%d waiting requests) reached", s->max_queue);
        creq_free(c);
        return;
    }
    *s->m_requests += 1;
    *s->m_prompt_tokens += g->n_prompt;
    c->next = s->live;
    if (s->live) s->live->prev = c;
    s->live = c;
    struct evhttp_connection *evcon = evhttp_request_get_connection(c->req);
    if (evcon) {
        struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
        evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
        if (fd >= 0) {
            http_set_nodelay(fd);
            c->close_ev = xnonnull(event_new(s->base, fd, EV_CLOSED, on_close_ev, c));
            if (c->close_ev) event_add(c->close_ev, NULL);
        }
        evhttp_connection_set_closecb(evcon, on_conn_close, c);
    }
    if (c->stream) {
        struct evkeyvalq *h = evhttp_request_get_output_headers(c->req);
        evhttp_remove_header(h, "Content-Type");
        evhttp_add_header(h, "Content-Type", "text/event-stream");
        evhttp_add_header(h, "Cache-Control", "no-cache");
        evhttp_send_reply_start(c->req, 200, "OK");
        c->started = true;
    }
}

static void send_chunk(struct creq *c, struct sbuf *b)
{
    if (!b->len || c->gone) return;
    struct evbuffer *eb = evbuffer_new();
    if (!eb) return;
    evbuffer_add(eb, b->data, b->len);
    evhttp_send_reply_chunk(c->req, eb);
    evbuffer_free(eb);
}

static const char *fin_name(int f)
{
    switch (f) {
    case FIN_LENGTH:
        return "length";
    case FIN_EOS:
        return "eos";
    case FIN_STOP:
        return "stop";
    case FIN_CANCEL:
        return "cancelled";
    default:
        return "error";
    }
}

static void creq_event(struct creq *c, const struct gen_event *e)
{
    struct srv *s = c->s;
    if (e->text_len) sbuf_append(&c->text, e->text, e->text_len);
    if (e->token >= 0) *s->m_gen_tokens += 1;
    struct sbuf out = SBUF_INIT;
    if (c->stream) {
        if (!c->gone) {
            if (c->api == API_TGI)
                api_tgi_stream_event(c, e, &out);
            else
                api_oai_stream_event(c, e, &out);
            send_chunk(c, &out);
        }
    } else if (c->api == API_TGI && c->details && e->token >= 0) {
        api_tgi_details_add(c, e);
    }
    if (!e->finish) {
        sbuf_free(&out);
        return;
    }
    /* finished */
    creq_unwatch(c);
    if (e->finish == FIN_CANCEL) *s->m_cancelled += 1;
    if (e->finish == FIN_ERROR) *s->m_errors += 1;
    metrics_observe(s->h_duration, clock_mono() - c->t0);
    log_info("request_done", "id=%s prompt_tokens=%d generated=%d finish=%s seconds=%.3f", c->id,
             e->n_prompt, e->n_gen, fin_name(e->finish), clock_mono() - c->t0);
    if (c->stream) {
        evhttp_send_reply_end(c->req);
    } else if (e->finish == FIN_CANCEL) {
        evhttp_send_reply(c->req, 499, "Client Closed Request", NULL);
    } else if (e->finish == FIN_ERROR) {
        if (c->api == API_TGI)
            srv_tgi_error(c->req, 500, "generation", "generation failed");
        else
            srv_oai_error(c->req, 500, "server_error", NULL, "generation failed");
    } else {
        sbuf_reset(&out);
        if (c->api == API_TGI)
            api_tgi_final_body(c, e, &out);
        else
            api_oai_final_body(c, e, &out);
        srv_reply_sbuf(c->req, 200, "application/json", &out);
    }
    sbuf_free(&out);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->live = c->next;
    if (c->next) c->next->prev = c->prev;
    creq_free(c);
}

/* ---- routes ---- */

static void metrics_refresh(void *arg)
{
    struct srv *s = arg;
    *s->g_ready = s->ready;
    if (!s->bat) return;
    struct batcher_stats st;
    batcher_get_stats(s->bat, &st);
    *s->g_queue = st.queued;
    *s->g_batch = st.active;
    *s->g_kv = (double)st.kv_bytes;
}

/* Body over --max-body-kb.  evhttp's own limit is set higher (see
 * serve_main) so that the body has been read when we get here and the client
 * sees this reply rather than a reset while it is still sending. */
static bool body_too_large(struct srv *s, struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    if (in && evbuffer_get_length(in) > s->max_body) return true;
    const char *cl = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Length");
    if (!cl) return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(cl, &end, 10);
    return errno || end == cl || v > s->max_body;
}

/* Every /v1 error is in the OpenAI shape; other paths answer TGI-style (or plain) errors. */
static bool path_is_v1(const char *path)
{
    return !strncmp(path, "/v1/", 4) || !strcmp(path, "/v1");
}

static void h_health(struct srv *s, struct evhttp_request *req, const char *path)
{
    if (s->ready)
        http_reply_json(req, 200, "{\"status\": \"ok\"}", 16);
    else
        http_reply_json(req, 503, "{\"status\": \"loading\"}", 21);
}

static void h_metrics(struct srv *s, struct evhttp_request *req, const char *path)
{
    struct sbuf b = SBUF_INIT;
    metrics_render(s->met, &b);
    srv_reply_sbuf(req, 200, "text/plain; version=0.0.4", &b);
    sbuf_free(&b);
}

static void h_info(struct srv *s, struct evhttp_request *req, const char *path)
{
    api_tgi_info(s, req);
}

static void h_models(struct srv *s, struct evhttp_request *req, const char *path)
{
    api_oai_models(s, req);
}

static void h_model_get(struct srv *s, struct evhttp_request *req, const char *path)
{
    const char *raw = path + strlen("/v1/models/");
    char *id = evhttp_uridecode(raw, 0, NULL);
    api_oai_model_get(s, req, id ? id : raw);
    free(id);
}

static void h_apply_template(struct srv *s, struct evhttp_request *req, const char *path)
{
    api_apply_template(s, req);
}

/* POST / is TGI's generate; its "stream": true is handled inside */
static void h_generate(struct srv *s, struct evhttp_request *req, const char *path)
{
    api_tgi_generate(s, req, false);
}

static void h_generate_stream(struct srv *s, struct evhttp_request *req, const char *path)
{
    api_tgi_generate(s, req, true);
}

static void h_completions(struct srv *s, struct evhttp_request *req, const char *path)
{
    api_oai_completions(s, req, false);
}

static void h_chat(struct srv *s, struct evhttp_request *req, const char *path)
{
    api_oai_completions(s, req, true);
}

/* The routes: (method, path) -> handler.  GET routes also answer HEAD; a `prefix` route
 * matches its path followed by at least one more byte. */
struct route {
    const char *path;
    bool prefix;
    bool post;        /* POST; else GET/HEAD */
    bool needs_model; /* 503 while the model loads */
    bool oai_loading; /* that 503 in the OpenAI shape */
    void (*fn)(struct srv *s, struct evhttp_request *req, const char *path);
};

static const struct route routes[] = {
    {"/health", false, false, false, false, h_health},
    {"/metrics", false, false, false, false, h_metrics},
    {"/info", false, false, true, false, h_info},
    {"/v1/models", false, false, true, true, h_models},
    {"/v1/models/", true, false, true, true, h_model_get},
    {"/apply-template", false, true, true, true, h_apply_template},
    {"/generate", false, true, true, false, h_generate},
    {"/generate_stream", false, true, true, false, h_generate_stream},
    {"/", false, true, true, false, h_generate},
    {"/v1/completions", false, true, true, true, h_completions},
    {"/v1/chat/completions", false, true, true, true, h_chat},
};

static const struct route *route_find(const char *path)
{
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const struct route *r = &routes[i];
        size_t n = strlen(r->path);
        if (r->prefix ? strncmp(path, r->path, n) == 0 && path[n] : strcmp(path, r->path) == 0)
            return r;
    }
    return NULL;
}

static void reply_too_large(struct srv *s, struct evhttp_request *req, bool v1)
{
    /* the body was read; close so nothing of it is taken as a next request */
    evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
    if (v1)
        srv_oai_error(req, 413, "invalid_request_error", "request_too_large",
                      "request body is larger than the limit of %zu bytes", s->max_body);
    else
        srv_tgi_error(req, 413, "validation", "request body is larger than the limit of %zu bytes",
                      s->max_body);
}

static void reply_not_found(struct evhttp_request *req, const char *path, bool v1)
{
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    if (v1)
        srv_oai_error(req, 404, "invalid_request_error", "unknown_url", "Invalid URL (%s %s)",
                      m == EVHTTP_REQ_POST                          ? "POST"
                      : m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD ? "GET"
                                                                    : "other method",
                      path);
    else
        http_reply_error(req, 404, "no route for %s", path);
}

static void reply_bad_method(struct evhttp_request *req, const struct route *r, const char *path,
                             bool v1)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                      r->post ? "POST" : "GET, HEAD");
    if (v1)
        srv_oai_error(req, 405, "invalid_request_error", "method_not_allowed",
                      "Method not allowed for %s", path);
    else
        http_reply_error(req, 405, "method not allowed");
}

/* evhttp's callback: size limit, route, method, readiness, then the route's handler. */
static void request_cb(struct evhttp_request *req, void *arg)
{
    struct srv *s = arg;
    char path[256];
    if (!http_request_path(req, path, sizeof path)) {
        http_reply_error(req, 400, "bad request URI");
        return;
    }
    bool v1 = path_is_v1(path);
    if (body_too_large(s, req)) {
        reply_too_large(s, req, v1);
        return;
    }
    const struct route *r = route_find(path);
    if (!r) {
        reply_not_found(req, path, v1);
        return;
    }
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    if (r->post ? m != EVHTTP_REQ_POST : m != EVHTTP_REQ_GET && m != EVHTTP_REQ_HEAD) {
        reply_bad_method(req, r, path, v1);
        return;
    }
    if (r->needs_model && !s->ready) {
        if (r->oai_loading)
            srv_oai_error(req, 503, "server_error", "model_loading", "model is loading");
        else
            srv_tgi_error(req, 503, "unhealthy", "model is loading");
        return;
    }
    r->fn(s, req, path);
}

/* ---- loading and the wake pipe ---- */

static void *loader_main(void *arg)
{
    struct srv *s = arg;
    struct llama_model *m;
    /* test hook: hold the loading state (503 on /health) for a while */
    const char *delay = getenv("SGPU_MODEL_TEST_LOAD_DELAY_MS");
    if (delay && atoi(delay) > 0) usleep((useconds_t)atoi(delay) * 1000);
    if (llama_open(s->model_path, &m, load_err, sizeof load_err)) {
        atomic_store(&load_state, -1);
    } else {
        /* the chat template is parsed here, off the event loop, once */
        struct gguf_str ct = {0};
        if (gguf_get_str(m->gf, "tokenizer.chat_template", &ct) != 0) ct.n = 0;
        s->chat = chat_tmpl_new(&m->tok, ct.p, (size_t)ct.n);
        s->model = m;
        atomic_store(&load_state, 1);
    }
    wake_loop(s);
    return NULL;
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct srv *s = arg;
    char buf[256];
    while (read(fd, buf, sizeof buf) > 0) {
    }
    atomic_store(&wake_pending, 0);
    if (!s->ready) {
        int st = atomic_load(&load_state);
        if (st < 0) {
            char q[600];
            log_error("fatal", "error=%s", log_quote(q, sizeof q, load_err));
            event_base_loopexit(s->base, NULL);
            return;
        }
        if (st > 0 && !s->bat) {
            const struct llama_hparams *hp = &s->model->hp;
            s->n_ctx = s->n_ctx > 0 && s->n_ctx < hp->n_ctx_train ? s->n_ctx : hp->n_ctx_train;
            size_t bpt = llama_kv_bytes_per_token(s->model);
            if (s->kv_budget < bpt * (size_t)s->n_ctx) s->kv_budget = bpt * (size_t)s->n_ctx;
            *s->g_kv_budget = (double)s->kv_budget;
            struct batcher_opts bo = {s->threads,
                                      s->max_batch,
                                      s->max_queue,
                                      s->kv_budget,
                                      s->prefill_chunk > 0 ? s->prefill_chunk : INT_MAX,
                                      s->h_ttft,
                                      s->h_tpot,
                                      s->step_ratio};
            s->bat = batcher_new(s->model, &bo, wake_loop, s);
            if (!s->bat) {
                log_error("fatal", "error=\"cannot start the batcher thread\"");
                event_base_loopexit(s->base, NULL);
                return;
            }
            const char *base = s->model_path && *s->model_path ? strrchr(s->model_path, '/') : NULL;
            snprintf(s->model_id, sizeof s->model_id, "%s",
                     s->model_path && *s->model_path ? (base ? base + 1 : s->model_path)
                                                     : s->model->name);
            s->ready = 1;
            char q1[200], q2[600];
            log_info(
                "model_loaded",
                "model=%s arch=llama dtype=%s params=%llu vocab=%d layers=%d ctx=%d threads=%d "
                "max_batch=%d port=%d simd=%d msg=%s",
                log_quote(q1, sizeof q1, s->model_id), s->model->dtype,
                (unsigned long long)s->model->n_params, hp->n_vocab, hp->n_layer, s->n_ctx,
                s->threads, s->max_batch, s->bound_port, qk_simd_active(),
                log_quote(q2, sizeof q2, s->load_msg ? s->load_msg : ""));
            if (s->load_msg && *s->load_msg) fprintf(stderr, "%s\n", s->load_msg);
            if (chat_tmpl_error(s->chat))
                log_warn("chat_template", "kind=%s error=%s", chat_tmpl_kind(s->chat),
                         log_quote(q2, sizeof q2, chat_tmpl_error(s->chat)));
            else
                log_info("chat_template", "kind=%s", chat_tmpl_kind(s->chat));
        }
    }
    if (!s->bat) return;
    struct gen_event *e = batcher_take_events(s->bat);
    while (e) {
        struct gen_event *n = e->next;
        e->next = NULL;
        creq_event(e->req->user, e);
        gen_event_free(e);
        e = n;
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct srv *s = arg;
    log_info("shutdown", "signal=%d", (int)sig);
    event_base_loopexit(s->base, NULL);
}

/* 12 random hex digits (getrandom; time and pid if that fails) + '-'. */
static void random_id_prefix(char *out, size_t n)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        r = ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 48);
    }
    snprintf(out, n, "%012llx-", (unsigned long long)(r & 0xffffffffffffull));
}

/* ---- options ---- */

struct serve_opts {
    const char *model, *host, *load_msg;
    int port, threads, max_batch, ctx, max_queue, prefill_chunk, kv_mb, max_body_kb;
    int max_conns, body_budget_kb; /* connection discipline (connguard.h) */
    double deadline_s, step_ratio;
};

#define AT(f) OPT_AT(struct serve_opts, f)
static const struct opt serve_rows[] = {
    {.name = "model",
     .env = "SGPU_MODEL_PATH",
     .type = OPT_STR,
     AT(model),
     .meta = "F.gguf",
     .help = "GGUF file",
     .def_help = "the embedded tiny random-weight model, whose text is noise"},
    {.name = "host",
     .type = OPT_STR,
     AT(host),
     .def = "127.0.0.1",
     .meta = "H",
     .help = "listen address"},
    {.name = "port",
     .env = "SGPU_MODEL_PORT",
     .type = OPT_INT,
     AT(port),
     .lo = 0,
     .hi = 65535,
     .def = "5001",
     .meta = "P",
     .help = "listen port, 0 = ephemeral"},
    {.name = "threads",
     .type = OPT_INT,
     AT(threads),
     .lo = 1,
     .hi = 256,
     .meta = "N",
     .help = "compute threads",
     .def_help = "online CPUs"},
    {.name = "max-batch",
     .type = OPT_INT,
     AT(max_batch),
     .lo = 1,
     .hi = 1024,
     .def = "16",
     .meta = "N",
     .help = "sequences decoded together per step"},
    {.name = "ctx",
     .type = OPT_INT,
     AT(ctx),
     .lo = 1,
     .hi = 1 << 20,
     .meta = "N",
     .help = "positions per sequence",
     .def_help = "the model's context_length"},
    {.name = "max-queue",
     .type = OPT_INT,
     AT(max_queue),
     .lo = 0,
     .hi = 1 << 20,
     .def = "64",
     .meta = "N",
     .help = "requests waiting for a batch slot before 429"},
    /* 256: chosen by measurement (docs/benchmarks.md) */
    {.name = "prefill-chunk",
     .type = OPT_INT,
     AT(prefill_chunk),
     .lo = 0,
     .hi = 1 << 20,
     .def = "256",
     .meta = "N",
     .help = "prompt tokens per step over all sequences, interleaved with the running decodes; "
             "0 = whole prompts at once"},
    /* 1.8: the running streams' step stays within 2x while a long prompt is admitted
     * (docs/benchmarks.md, "Chunked prefill under decode load") */
    {.name = "prefill-step-ratio",
     .type = OPT_DBL,
     AT(step_ratio),
     .lo = 0,
     .hi = 100,
     .def = "1.8",
     .meta = "R",
     .help = "while streams decode, a step's prompt tokens are cut (to at least 4) so the step "
             "takes at most R x a decode-only step, by the measured step times; 0 = always "
             "--prefill-chunk tokens"},
    {.name = "kv-mem",
     .type = OPT_INT,
     AT(kv_mb),
     .lo = 1,
     .hi = 1 << 22,
     .def = "1024",
     .meta = "MB",
     .help = "KV cache budget across sequences"},
    {.name = "max-body-kb",
     .type = OPT_INT,
     AT(max_body_kb),
     .lo = 1,
     .hi = 1 << 20,
     .def = "1024",
     .meta = "KB",
     .help = "request body limit, 413 beyond"},
    {.name = "load-log-msg",
     .type = OPT_STR,
     AT(load_msg),
     .meta = "T",
     .help = "text added to the one `event=model_loaded` log line"},
    {.name = "max-connections",
     .type = OPT_INT,
     AT(max_conns),
     .lo = 1,
     .hi = 1 << 22,
     .def = "4096",
     .meta = "N",
     .help = "open connections; at the limit the oldest idle one is closed (clamped to the fd "
             "limit)"},
    {.name = "request-deadline",
     .type = OPT_DBL,
     AT(deadline_s),
     .lo = 0.1,
     .hi = 86400,
     .def = "30",
     .meta = "S",
     .help = "seconds from a request's first byte to its whole body"},
    {.name = "body-budget-kb",
     .type = OPT_INT,
     AT(body_budget_kb),
     .lo = 0,
     .hi = 1 << 30,
     .meta = "KB",
     .help = "request bytes being received over all connections; the connection holding the "
             "most gets 503 past it",
     .def_help = "2 x (4 x max-body-kb + 4 MiB)"},
};
#undef AT

/* --help is answered by main.c before serve_main runs */
static const struct opts_spec serve_spec = {"sgpu-model", serve_rows,
                                            sizeof serve_rows / sizeof serve_rows[0], OPTS_NO_HELP};

void serve_usage(FILE *out)
{
    opts_usage(&serve_spec, out);
}

/* argv[0] is the subcommand (or the program).  0, or -1 with the error logged. */
static int serve_parse(struct serve_opts *o, int argc, char **argv)
{
    memset(o, 0, sizeof *o);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    o->threads = ncpu > 0 ? (int)(ncpu > 64 ? 64 : ncpu) : 1;
    struct opts_result r;
    int rc = opts_parse(&serve_spec, o, argc, argv, &r);
    if (rc == 0 && r.nargs > 0) {
        snprintf(r.err, sizeof r.err, "sgpu-model: unexpected argument '%s'", r.args[0]);
        rc = -1;
    }
    if (rc != 0) {
        char q[1100];
        log_error("fatal", "error=%s", log_quote(q, sizeof q, r.err));
    }
    opts_result_free(&r);
    return rc;
}

/* Shutdown: stop compute first, then drop requests and connections, then free. */
static void serve_teardown(struct srv *s, struct connguard *guard, struct event *wev,
                           struct event *sig1, struct event *sig2)
{
    batcher_free(s->bat);
    while (s->live) {
        struct creq *c = s->live;
        s->live = c->next;
        creq_unwatch(c);
        if (c->stream)
            evhttp_send_reply_end(c->req);
        else
            http_reply_error(c->req, 503, "server shutting down");
        creq_free(c);
    }
    evhttp_free(s->http);
    connguard_free(guard);
    event_free(wev);
    event_free(sig1);
    event_free(sig2);
    event_base_free(s->base);
    close(wake_fd[0]);
    close(wake_fd[1]);
    chat_tmpl_free(s->chat);
    llama_free(s->model);
    metrics_free(s->met);
}

/* The server's Prometheus series (/metrics). */
static void serve_metrics_init(struct srv *s)
{
    s->met = metrics_new();
    s->m_requests =
        metrics_counter(s->met, "sgpu_model_requests_total", "Generation requests accepted");
    s->m_prompt_tokens = metrics_counter(s->met, "sgpu_model_prompt_tokens_total",
                                         "Prompt tokens of accepted requests");
    s->m_gen_tokens =
        metrics_counter(s->met, "sgpu_model_generated_tokens_total", "Tokens generated");
    s->m_cancelled = metrics_counter(s->met, "sgpu_model_cancelled_total",
                                     "Requests cancelled by client disconnect");
    s->m_errors = metrics_counter(s->met, "sgpu_model_errors_total",
                                  "Requests that failed during generation");
    s->m_rejected_queue = metrics_counter(
        s->met, "sgpu_model_rejected_total{reason=\"queue_full\"}", "Requests rejected");
    s->m_rejected_validation = metrics_counter(
        s->met, "sgpu_model_rejected_total{reason=\"validation\"}", "Requests rejected");
    s->g_queue =
        metrics_gauge(s->met, "sgpu_model_queue_depth", "Requests waiting for a batch slot");
    s->g_batch = metrics_gauge(s->met, "sgpu_model_batch_size", "Sequences in the running batch");
    s->g_kv = metrics_gauge(s->met, "sgpu_model_kv_cache_bytes",
                            "KV cache bytes reserved by active sequences");
    s->g_kv_budget =
        metrics_gauge(s->met, "sgpu_model_kv_cache_budget_bytes", "KV cache byte budget");
    s->g_ready = metrics_gauge(s->met, "sgpu_model_ready", "1 once the model is loaded");
    static const double lat[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
    static const double tpot[] = {0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1};
    static const double dur[] = {0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
    s->h_ttft = metrics_histogram(s->met, "sgpu_model_time_to_first_token_seconds",
                                  "Time from request to first token", lat, 12);
    s->h_tpot = metrics_histogram(s->met, "sgpu_model_time_per_output_token_seconds",
                                  "Time between consecutive tokens", tpot, 10);
    s->h_duration = metrics_histogram(s->met, "sgpu_model_request_duration_seconds",
                                      "Request duration", dur, 11);
    metrics_on_render(s->met, metrics_refresh, s);
}

int serve_main(int argc, char **argv)
{
    struct serve_opts o;
    if (serve_parse(&o, argc, argv) != 0) return 2;
    struct srv S;
    struct srv *s = &S;
    memset(s, 0, sizeof *s);
    s->model_path = o.model;
    s->host = o.host;
    s->load_msg = o.load_msg;
    s->port = o.port;
    s->threads = o.threads;
    s->max_batch = o.max_batch;
    s->n_ctx = o.ctx;
    s->max_queue = o.max_queue;
    s->prefill_chunk = o.prefill_chunk;
    s->step_ratio = o.step_ratio;
    int kv_mb = o.kv_mb, max_body_kb = o.max_body_kb;
    int max_conns = o.max_conns, body_budget_kb = o.body_budget_kb;
    double deadline_s = o.deadline_s;
    s->kv_budget = (size_t)kv_mb << 20;
    signal(SIGPIPE, SIG_IGN);
    serve_metrics_init(s);

    s->base = http_base_new();
    /* Our limit is s->max_body, answered by request_cb() once the body is read.
     * evhttp's own limit is higher so that it does not answer (HTML, before
     * reading the body: clients still sending see a reset, not the 413):
     * bodies up to 4 x limit + 4 MiB are buffered, then refused; beyond that
     * evhttp drains them without buffering (lingering close) and answers its
     * own 413.  The cost: reading what a client sends, bounded by the read
     * timeout, and up to that buffer per connection. */
    s->max_body = (size_t)max_body_kb << 10;
    struct http_limits lim = {s->max_body * 4 + ((size_t)4 << 20), 16 << 10, 120};
    random_id_prefix(s->id_prefix, sizeof s->id_prefix);
    s->http = s->base ? http_server_new(s->base, &lim) : NULL;
    if (!s->http) {
        log_error("fatal", "error=\"cannot create the event loop\"");
        return 1;
    }
    evhttp_set_flags(s->http, EVHTTP_SERVER_LINGERING_CLOSE);
    evhttp_set_gencb(s->http, request_cb, s);
    /* The guard sees evhttp's (buffered) limit, so an oversized body is read
     * and answered 413 by request_cb() rather than cut by the guard; the default
     * budget holds two bodies at that limit (~20 MiB with the defaults). */
    struct connguard_opts gopt = {
        .prefix = "sgpu_model",
        .max_conns = max_conns,
        .fds_per_conn = 1,
        .deadline_s = deadline_s,
        .body_budget = body_budget_kb ? (size_t)body_budget_kb << 10 : lim.max_body * 2,
        .max_body = lim.max_body,
    };
    struct connguard *guard = connguard_new(s->base, s->http, &gopt, s->met);
    if (!guard || connguard_listen(guard, s->host, s->port, &s->bound_port) != 0) {
        log_error("fatal", "error=\"cannot listen on %s:%d: %s\"", s->host, s->port,
                  strerror(errno));
        return 1;
    }
    if (pipe2(wake_fd, O_NONBLOCK | O_CLOEXEC) != 0) {
        log_error("fatal", "error=\"pipe: %s\"", strerror(errno));
        return 1;
    }
    struct event *wev = xnonnull(event_new(s->base, wake_fd[0], EV_READ | EV_PERSIST, on_wake, s));
    struct event *sig1 = xnonnull(evsignal_new(s->base, SIGTERM, on_signal, s));
    struct event *sig2 = xnonnull(evsignal_new(s->base, SIGINT, on_signal, s));
    event_add(wev, NULL);
    event_add(sig1, NULL);
    event_add(sig2, NULL);
    log_info("listening", "host=%s port=%d", s->host, s->bound_port);
    pthread_t loader;
    if (pthread_create(&loader, NULL, loader_main, s) != 0) {
        log_error("fatal", "error=\"cannot start the loader thread\"");
        return 1;
    }
    event_base_dispatch(s->base);
    pthread_join(loader, NULL);
    int rc = atomic_load(&load_state) < 0 || !s->bat ? 1 : 0;
    serve_teardown(s, guard, wev, sig1, sig2);
    return rc;
}
