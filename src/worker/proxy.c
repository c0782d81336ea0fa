/* Forward the payload bytes to the model server over pooled keep-alive
 * connections and relay the answer: status, body and Content-Type only (B25),
 * buffered for plain responses, chunk by chunk for streams (§5.9: SSE,
 * NDJSON/JSONL, any *stream* type, or chunked transfer) with
 * `X-Accel-Buffering: no` and flow control (the upstream read pauses while the
 * client's output buffer holds more than 1 MiB).  Model 4xx/5xx answers are
 * relayed with their body (B8) and counted as errors (B26); connection
 * failures answer 502, timeouts 504, both with a JSON error. */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/keyvalq_struct.h>

#include "clock.h"
#include "httputil.h"
#include "log.h"
#include "proxy.h"
#include "rc.h"
#include "reply.h"

#define STREAM_HIGH_WATER ((size_t)1 << 20)

/* A TLS bufferevent may report a dead client synchronously from inside an
 * evhttp write call; the close callback then ends the request (request.c frees
 * it later, from the loop).  True when that happened. */
static bool ended_in_write(const struct wreq *wr)
{
    return wr->state == WR_DONE;
}

static int on_headers(struct upstream_req *u, int status, struct evkeyvalq *hdrs, void *arg)
{
    struct wreq *wr = arg;
    const char *ct = evhttp_find_header(hdrs, "Content-Type");
    const char *te = evhttp_find_header(hdrs, "Transfer-Encoding");
    snprintf(wr->ctype, sizeof wr->ctype, "%s", ct && *ct ? ct : "application/octet-stream");
    bool stream = wr->h->stream < 0 ? http_is_stream(ct, te) : wr->h->stream == 1;
    if (!stream) return 0;
    struct evhttp_request *req = request_client_begin_reply(wr);
    if (!req) return -1;
    struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
    evhttp_remove_header(oh, "Content-Type");
    evhttp_add_header(oh, "Content-Type", wr->ctype);
    evhttp_add_header(oh, "X-Accel-Buffering", "no");
    evhttp_add_header(oh, "Cache-Control", "no-cache");
    wr->streaming = true;
    evhttp_send_reply_start(req, status, http_reason(status));
    if (ended_in_write(wr)) return -1;
    return 1;
}

static void on_flushed(struct evhttp_connection *evcon, void *arg)
{
    struct wreq *wr = arg;
    if (wr->paused && wr->up) {
        wr->paused = false;
        upstream_pause(wr->up, false);
    }
}

static void on_chunk(struct upstream_req *u, struct evbuffer *data, void *arg)
{
    struct wreq *wr = arg;
    if (!wr->req) {
        evbuffer_drain(data, evbuffer_get_length(data));
        return;
    }
    evhttp_send_reply_chunk_with_cb(wr->req, data, on_flushed, wr);
    if (ended_in_write(wr)) return;
    struct bufferevent *bev = wr->evcon ? evhttp_connection_get_bufferevent(wr->evcon) : NULL;
    if (bev && evbuffer_get_length(bufferevent_get_output(bev)) > STREAM_HIGH_WATER &&
        !wr->paused) {
        wr->paused = true;
        upstream_pause(u, true);
    }
}

static void on_done(struct upstream_req *u, int status, struct evbuffer *body, void *arg)
{
    struct wreq *wr = arg;
    wr->up = NULL;
    enum outcome out = status >= 200 && status < 400 ? OUT_SUCCESS : OUT_ERROR;
    struct evhttp_request *req = request_client_detach(wr);
    if (req) {
        if (wr->streaming) {
            evhttp_send_reply_end(req);
        } else {
            struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
            evhttp_remove_header(oh, "Content-Type");
            evhttp_add_header(oh, "Content-Type", wr->ctype);
            evhttp_send_reply(req, status, http_reason(status), body);
        }
    }
    request_finish(wr, out);
}

static void on_error(struct upstream_req *u, enum upstream_err e, const char *msg, void *arg)
{
    struct wreq *wr = arg;
    wr->up = NULL;
    log_warn("upstream_error", "id=%llu err=%s path=%s", (unsigned long long)wr->id,
             upstream_err_name(e), wr->path);
    struct evhttp_connection *evcon = wr->evcon;
    bool streaming = wr->streaming;
    struct evhttp_request *req = request_client_detach(wr);
    if (req) {
        if (streaming) {
            /* Headers are out: close the connection so the client sees a
             * truncated stream rather than a clean end. */
            if (evcon) evhttp_connection_free(evcon);
        } else {
            int st = e == UPSTREAM_ERR_TIMEOUT ? 504 : 502;
            *wr->w->m_status_502 += 1;
            char b[256];
            int n = snprintf(b, sizeof b, "{\"error\": \"%s\"}", msg);
            reply_json(req, st, NULL, b, (size_t)n);
        }
    }
    request_finish(wr, OUT_ERROR);
}

static const struct upstream_cbs proxy_cbs = {on_headers, on_chunk, on_done, on_error};

int proxy_start(struct wreq *wr)
{
    struct worker *w = wr->w;
    wr->t_start = clock_wall();
    struct upstream_opts o = {
        .timeout_s = w->cfg.upstream_timeout,
        .max_buffered = w->cfg.max_response,
        .retry_reused = true,
    };
    wr->up = upstream_request(w->model, EVHTTP_REQ_POST, wr->path, "application/json", wr->payload,
                              wr->payload_len, NULL, &o, &proxy_cbs, wr);
    return wr->up ? SGPU_OK : SGPU_ERROR;
}

void proxy_cancel(struct wreq *wr)
{
    if (wr->up) {
        upstream_cancel(wr->up);
        wr->up = NULL;
    }
}
