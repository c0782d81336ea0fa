/* Internal interface between the HTTP core (server.c) and the two API
 * front ends (api_tgi.c, api_openai.c). Everything here runs on the event
 * loop thread. */
#ifndef SGPU_MODEL_SERVER_INT_H
#define SGPU_MODEL_SERVER_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/http.h>
#include <json-c/json.h>

#include "batcher.h"
#include "llama.h"
#include "sbuf.h"

enum api_kind { API_TGI, API_OAI_COMPL, API_OAI_CHAT };

struct srv {
    struct event_base *base;
    struct evhttp *http;
    struct llama_model *model;
    struct chat_tmpl *chat; /* the model's chat template (or ChatML), set with model */
    struct batcher *bat;
    int ready;
    int n_ctx; /* effective context length (positions per sequence) */
    int max_batch, max_queue, threads;
    int prefill_chunk; /* prompt tokens per step over all sequences; 0 = whole prompts */
    double step_ratio; /* --prefill-step-ratio (batcher_opts.step_ratio) */
    size_t kv_budget;
    const char *model_path, *host, *load_msg;
    int port, bound_port;
    char model_id[160];
    uint64_t next_id;
    char id_prefix[24]; /* random hex per process: completion ids unique across restarts */
    size_t max_body;    /* --max-body-kb in bytes (413 beyond) */
    struct creq *live;  /* requests in flight */
    /* metrics */
    struct metrics *met;
    double *m_requests, *m_prompt_tokens, *m_gen_tokens, *m_cancelled, *m_rejected_queue,
        *m_rejected_validation, *m_errors;
    double *g_queue, *g_batch, *g_kv, *g_kv_budget, *g_ready;
    struct metrics_hist *h_ttft, *h_tpot, *h_duration;
};

struct creq {
    struct srv *s;
    struct evhttp_request *req;
    struct event *close_ev;
    struct gen_req *g;
    enum api_kind api;
    bool stream, details, gone, started, include_usage;
    struct sbuf text;     /* generated text so far (all events' text) */
    struct sbuf toks;     /* TGI details: JSON token objects, comma separated */
    struct sbuf top_toks; /* TGI details: JSON arrays of top tokens, comma separated */
    int n_toks;
    char id[48];
    long created;
    bool has_seed;
    uint64_t seed;
    char *prefix; /* TGI return_full_text: the inputs */
    double t0;
    struct creq *prev, *next;
};

/* Start generation for a parsed request: submits g, sets up streaming and
 * disconnect detection.  On failure it replies (429/503) and frees c and g. */
void srv_start(struct creq *c);
struct creq *srv_creq_new(struct srv *s, struct evhttp_request *req, enum api_kind api);
void srv_creq_discard(struct creq *c); /* before srv_start: free without replying */

/* JSON body parsing (json-c strict).  NULL with *msg set on error. */
struct json_object *srv_parse_body(struct evhttp_request *req, const char **msg);
/* Error replies in each API's shape. */
void srv_tgi_error(struct evhttp_request *req, int status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* OpenAI shape {"error": {"message", "type", "param", "code"}}; param is the
 * field a message starting with `field` names (null otherwise). */
void srv_oai_error(struct evhttp_request *req, int status, const char *type, const char *code,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
void srv_oai_error_param(struct evhttp_request *req, int status, const char *type, const char *code,
                         const char *param, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
void srv_reply_sbuf(struct evhttp_request *req, int status, const char *ctype, struct sbuf *b);

/* Field helpers: 0 ok (or absent: *present false), -1 wrong type/range (msg set). */
int jget_int(struct json_object *o, const char *k, long long lo, long long hi, long long *out,
             bool *present);
int jget_num(struct json_object *o, const char *k, double *out, bool *present);
int jget_bool(struct json_object *o, const char *k, bool *out, bool *present);
/* stop: string or array of strings -> g->stop (max 16). */
int jget_stop(struct json_object *o, const char *k, struct gen_req *g);

/* API handlers */
void api_tgi_generate(struct srv *s, struct evhttp_request *req, bool stream);
void api_tgi_info(struct srv *s, struct evhttp_request *req);
/* GET /v1/models/{id}: id as in the path (percent-decoded) */
void api_oai_model_get(struct srv *s, struct evhttp_request *req, const char *id);
void api_oai_completions(struct srv *s, struct evhttp_request *req, bool chat);
void api_oai_models(struct srv *s, struct evhttp_request *req);
void api_apply_template(struct srv *s, struct evhttp_request *req);

/* Output formatting per API. chunk: one SSE event ("data: ...\n\n"), may be empty. */
void api_tgi_stream_event(struct creq *c, const struct gen_event *e, struct sbuf *out);
void api_tgi_final_body(struct creq *c, const struct gen_event *e, struct sbuf *out);
/* TGI details: record a generated token (and its top tokens) for the final body. */
void api_tgi_details_add(struct creq *c, const struct gen_event *e);
void api_oai_stream_event(struct creq *c, const struct gen_event *e, struct sbuf *out);
void api_oai_final_body(struct creq *c, const struct gen_event *e, struct sbuf *out);

#endif
