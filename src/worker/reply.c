/* The worker's own replies: the shapes PyWorker answers with (empty bodies for 401/429, JSON,
 * plain text), and the one 503 "not ready" of the readiness gate, shared by data requests and
 * /session/create so that both say the same thing (Retry-After: 30 while draining, else 5) and
 * both are counted. */
#include <stdio.h>
#include <string.h>

#include <event2/keyvalq_struct.h>

#include "httputil.h"
#include "lifecycle.h"
#include "reply.h"

void reply_json(struct evhttp_request *req, int status, const char *ctype, const char *body,
                size_t len)
{
    http_reply(req, status, ctype ? ctype : "application/json", body, len);
}

void reply_empty(struct evhttp_request *req, int status)
{
    http_reply(req, status, "application/octet-stream", NULL, 0);
}

void reply_text(struct evhttp_request *req, int status, const char *text)
{
    http_reply(req, status, "text/plain; charset=utf-8", text, strlen(text));
}

void reply_method_not_allowed(struct evhttp_request *req, const char *allow)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
    reply_text(req, 405, "405: Method Not Allowed");
}

void reply_not_ready(struct worker *w, struct evhttp_request *req)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Retry-After", w->phase == PH_DRAINING ? "30" : "5");
    char body[160];
    int n = snprintf(body, sizeof body, "{\"error\": \"worker not ready\", \"phase\": \"%s\"}",
                     phase_name(w->phase));
    *w->m_status_503 += 1;
    reply_json(req, 503, NULL, body, (size_t)n);
}
