/* Text Generation Inference compatible API: POST /generate, /generate_stream
 * (and POST / with "stream"), GET /info.
 *
 * Request: {"inputs": str, "parameters": {max_new_tokens (default 20), temperature,
 * top_p, top_k, do_sample, seed, stop, repetition_penalty, details,
 * return_full_text, ignore_eos (extension, as in vLLM), typical_p, frequency_penalty (on the
 * counts of generated tokens), truncate (keep the last N prompt tokens), top_n_tokens (<= 5),
 * decoder_input_details (prefill logprobs; not when streaming), best_of (1 only)}}; watermark,
 * grammar and adapter_id are refused with 422.  As in TGI, sampling is on when do_sample
 * is true or any of temperature != 1, top_k, top_p < 1, typical_p is given; otherwise greedy.
 * Validation errors: 422 {"error": ..., "error_type": "validation"}; malformed JSON 400; queue full
 * 429 "overloaded"; loading 503. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "httputil.h"
#include "jsonw.h"
#include "server_int.h"
#include "xalloc.h"

#define TGI_MAX_TOP_N 5 /* TGI's default max_top_n_tokens */

static const char *tgi_finish(int f)
{
    return f == FIN_EOS ? "eos_token" : f == FIN_STOP ? "stop_sequence" : "length";
}

static uint64_t fresh_seed(struct srv *s)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x =
        ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ (s->next_id * 0x9e3779b97f4a7c15ull);
    return x & 0x7fffffffffffffffull;
}

#define VALIDATION(...)                                                                            \
    do {                                                                                           \
        *s->m_rejected_validation += 1;                                                            \
        srv_tgi_error(req, 422, "validation", __VA_ARGS__);                                        \
        goto out;                                                                                  \
    } while (0)

/* As VALIDATION, for the helpers of api_tgi_generate: reply 422 and return -1 (the caller then
 * discards the request). */
#define REJECT(...)                                                                                \
    do {                                                                                           \
        *s->m_rejected_validation += 1;                                                            \
        srv_tgi_error(req, 422, "validation", __VA_ARGS__);                                        \
        return -1;                                                                                 \
    } while (0)

/* The request's "parameters", with TGI's defaults. */
struct tgi_params {
    long long max_new, top_k, seed, best_of, truncate, top_n;
    double temp, top_p, rep, typical_p, freq;
    bool do_sample, has_temp, has_topk, has_topp, has_seed, details, full, has_typ, has_trunc,
        dec_details;
};

/* The sampling and output parameters; stop and ignore_eos go straight into g.  -1 when the
 * request was answered with 422. */
static int tgi_params_core(struct srv *s, struct evhttp_request *req, struct json_object *params,
                           struct gen_req *g, struct tgi_params *p)
{
    if (jget_int(params, "max_new_tokens", 1, 1 << 24, &p->max_new, NULL))
        REJECT("`max_new_tokens` must be a positive integer");
    if (jget_num(params, "temperature", &p->temp, &p->has_temp) || (p->has_temp && !(p->temp > 0)))
        REJECT("`temperature` must be strictly positive");
    if (jget_num(params, "top_p", &p->top_p, &p->has_topp) ||
        (p->has_topp && !(p->top_p > 0 && p->top_p <= 1)))
        REJECT("`top_p` must be > 0.0 and <= 1.0");
    if (jget_int(params, "top_k", 0, 1 << 24, &p->top_k, &p->has_topk))
        REJECT("`top_k` must be a non-negative integer");
    if (jget_num(params, "repetition_penalty", &p->rep, NULL) || !(p->rep > 0))
        REJECT("`repetition_penalty` must be strictly positive");
    if (jget_bool(params, "do_sample", &p->do_sample, NULL))
        REJECT("`do_sample` must be a boolean");
    if (jget_int(params, "seed", 0, INT64_MAX, &p->seed, &p->has_seed))
        REJECT("`seed` must be a non-negative integer");
    if (jget_bool(params, "details", &p->details, NULL)) REJECT("`details` must be a boolean");
    if (jget_bool(params, "return_full_text", &p->full, NULL))
        REJECT("`return_full_text` must be a boolean");
    if (jget_stop(params, "stop", g)) REJECT("`stop` must be a list of at most 16 strings");
    if (jget_bool(params, "ignore_eos", &g->ignore_eos, NULL))
        REJECT("`ignore_eos` must be a boolean");
    return 0;
}

/* The rest of TGI's GenerateParameters: implemented, or refused as TGI refuses what a server
 * does not offer (422).  st: the reply streams. */
static int tgi_params_rest(struct srv *s, struct evhttp_request *req, struct json_object *params,
                           bool st, struct tgi_params *p)
{
    bool has_best_of, watermark = false;
    if (jget_int(params, "best_of", LLONG_MIN, LLONG_MAX, &p->best_of, &has_best_of) ||
        (has_best_of && (p->best_of < 1 || p->best_of > 1)))
        REJECT("`best_of` must be > 0 and <= 1. Given: %s",
               json_object_to_json_string(json_object_object_get(params, "best_of")));
    if (jget_bool(params, "watermark", &watermark, NULL)) REJECT("`watermark` must be a boolean");
    if (watermark) REJECT("`watermark` is not supported by this server");
    struct json_object *gr = json_object_object_get(params, "grammar");
    if (gr && !json_object_is_type(gr, json_type_null))
        REJECT("`grammar` (guided generation) is not supported by this server");
    struct json_object *ad = json_object_object_get(params, "adapter_id");
    if (ad && !json_object_is_type(ad, json_type_null))
        REJECT("`adapter_id` (LoRA adapters) is not supported by this server");
    if (jget_num(params, "typical_p", &p->typical_p, &p->has_typ) ||
        (p->has_typ && !(p->typical_p > 0 && p->typical_p < 1)))
        REJECT("`typical_p` must be > 0.0 and < 1.0");
    if (jget_num(params, "frequency_penalty", &p->freq, NULL) || !(p->freq >= -2 && p->freq <= 2))
        REJECT("`frequency_penalty` must be >= -2.0 and <= 2.0");
    if (jget_int(params, "truncate", 1, s->n_ctx - 1, &p->truncate, &p->has_trunc))
        REJECT("`truncate` must be strictly positive and less than %d. Given: %s", s->n_ctx,
               json_object_to_json_string(json_object_object_get(params, "truncate")));
    if (jget_int(params, "top_n_tokens", 0, TGI_MAX_TOP_N, &p->top_n, NULL))
        REJECT("`top_n_tokens` must be >= 0 and <= %d", TGI_MAX_TOP_N);
    if (jget_bool(params, "decoder_input_details", &p->dec_details, NULL))
        REJECT("`decoder_input_details` must be a boolean");
    if (p->dec_details && st)
        REJECT("`decoder_input_details` == true is not supported when streaming tokens");
    return 0;
}

/* The parsed parameters into the request.  As in TGI, sampling is on when do_sample is true or
 * any of temperature != 1, top_k, top_p < 1, typical_p is given; otherwise greedy. */
static void tgi_apply(struct srv *s, struct creq *c, const struct tgi_params *p)
{
    struct gen_req *g = c->g;
    g->sp.sample = p->do_sample || (p->has_temp && p->temp != 1.0) ||
                   (p->has_topk && p->top_k != 0) || (p->has_topp && p->top_p < 1.0) || p->has_typ;
    g->spx.typical_p = p->has_typ ? (float)p->typical_p : 0;
    g->spx.frequency_penalty = (float)p->freq;
    g->top_n = (int)p->top_n;
    g->prefill_logprobs = p->dec_details && p->details;
    g->sp.temperature = (float)p->temp;
    g->sp.top_k = (int)p->top_k;
    g->sp.top_p = (float)p->top_p;
    g->sp.repetition_penalty = (float)p->rep;
    if (g->sp.sample) {
        c->has_seed = true;
        c->seed = p->has_seed ? (uint64_t)p->seed : fresh_seed(s);
        g->sp.seed = c->seed;
    }
    g->stop_include = true;
    c->details = p->details;
}

/* The prompt: inputs encoded (the last `truncate` tokens when asked) and checked against the
 * context with max_new_tokens.  -1 when the request was answered with 422. */
static int tgi_prompt(struct srv *s, struct evhttp_request *req, struct creq *c,
                      struct json_object *inputs, const struct tgi_params *p)
{
    struct gen_req *g = c->g;
    const char *text = json_object_get_string(inputs);
    size_t tlen = (size_t)json_object_get_string_len(inputs);
    if (p->full) c->prefix = xmemdup(text, tlen);
    struct ids ids = {0};
    tok_encode(&s->model->tok, text, tlen, true, &ids);
    if (p->has_trunc && ids.n > (size_t)p->truncate) {
        /* keep the last `truncate` tokens, as TGI truncates from the left */
        memmove(ids.v, ids.v + ids.n - (size_t)p->truncate, (size_t)p->truncate * sizeof *ids.v);
        ids.n = (size_t)p->truncate;
    }
    g->prompt = ids.v;
    g->n_prompt = (int)ids.n;
    g->spx.penalty_from = g->n_prompt;
    if (g->n_prompt == 0) REJECT("`inputs` cannot be empty");
    if (g->n_prompt >= s->n_ctx)
        REJECT("Input validation error: `inputs` must have less than %d tokens. Given: %d",
               s->n_ctx, g->n_prompt);
    if ((long long)g->n_prompt + p->max_new > s->n_ctx)
        REJECT("Input validation error: `inputs` tokens + `max_new_tokens` must be <= %d. "
               "Given: %d `inputs` tokens and %lld `max_new_tokens`",
               s->n_ctx, g->n_prompt, p->max_new);
    g->max_new = (int)p->max_new;
    return 0;
}

void api_tgi_generate(struct srv *s, struct evhttp_request *req, bool stream)
{
    const char *msg = NULL;
    struct creq *c = NULL;
    struct json_object *o = srv_parse_body(req, &msg);
    if (!o) {
        *s->m_rejected_validation += 1;
        srv_tgi_error(req, 400, "validation", "%s", msg);
        return;
    }
    struct json_object *inputs = NULL, *params = NULL;
    if (!json_object_object_get_ex(o, "inputs", &inputs) || !inputs ||
        !json_object_is_type(inputs, json_type_string))
        VALIDATION("`inputs` must be a string");
    if (json_object_object_get_ex(o, "parameters", &params) && params &&
        !json_object_is_type(params, json_type_null) &&
        !json_object_is_type(params, json_type_object))
        VALIDATION("`parameters` must be an object");
    if (params && json_object_is_type(params, json_type_null)) params = NULL;
    bool st = stream, present;
    if (!stream && jget_bool(o, "stream", &st, &present)) VALIDATION("`stream` must be a boolean");
    c = srv_creq_new(s, req, API_TGI);
    c->stream = st;
    struct tgi_params p = {
        .max_new = 20, .best_of = 1, .temp = 1.0, .top_p = 1.0, .rep = 1.0, .typical_p = 1.0};
    if (params &&
        (tgi_params_core(s, req, params, c->g, &p) || tgi_params_rest(s, req, params, st, &p)))
        goto out;
    tgi_apply(s, c, &p);
    if (tgi_prompt(s, req, c, inputs, &p)) goto out;
    json_object_put(o);
    srv_start(c);
    return;
out:
    if (c) srv_creq_discard(c);
    json_object_put(o);
}

static void token_json(struct sbuf *b, const struct gen_event *e)
{
    sbuf_printf(b, "{\"id\": %d, \"text\": ", e->token);
    jw_str(b, e->text ? e->text : "", e->text_len);
    sbuf_puts(b, ", \"logprob\": ");
    jw_num(b, e->logprob);
    sbuf_printf(b, ", \"special\": %s}", e->special ? "true" : "false");
}

/* Token object for an id that is not the event's own (top tokens, prefill). */
static void id_json(struct srv *s, struct sbuf *b, int id, double logprob, bool raw_control)
{
    const struct tokenizer *t = &s->model->tok;
    struct sbuf piece = SBUF_INIT;
    if (raw_control && tok_is_control(t, id))
        sbuf_append(&piece, t->text[id], t->len[id]); /* TGI shows "<s>" in prefill */
    else
        tok_piece(t, id, &piece);
    sbuf_printf(b, "{\"id\": %d, \"text\": ", id);
    jw_str(b, piece.data ? piece.data : "", piece.len);
    sbuf_puts(b, ", \"logprob\": ");
    jw_num(b, logprob);
    sbuf_printf(b, ", \"special\": %s}", tok_is_control(t, id) ? "true" : "false");
    sbuf_free(&piece);
}

static void top_json(struct srv *s, struct sbuf *b, const struct gen_event *e)
{
    sbuf_putc(b, '[');
    for (int i = 0; i < e->n_top; i++) {
        if (i) sbuf_puts(b, ", ");
        id_json(s, b, e->top_id[i], e->top_lp[i], false);
    }
    sbuf_putc(b, ']');
}

void api_tgi_details_add(struct creq *c, const struct gen_event *e)
{
    if (c->n_toks++) sbuf_puts(&c->toks, ", ");
    id_json(c->s, &c->toks, e->token, e->logprob, false);
    if (c->g->top_n > 0) {
        if (c->n_toks > 1) sbuf_puts(&c->top_toks, ", ");
        top_json(c->s, &c->top_toks, e);
    }
}

static void seed_json(struct sbuf *b, const struct creq *c)
{
    if (c->has_seed)
        sbuf_printf(b, "%llu", (unsigned long long)c->seed);
    else
        sbuf_puts(b, "null");
}

static void full_text(struct sbuf *b, const struct creq *c)
{
    struct sbuf t = SBUF_INIT;
    if (c->prefix) sbuf_puts(&t, c->prefix);
    sbuf_append(&t, c->text.data ? c->text.data : "", c->text.len);
    jw_str(b, t.data ? t.data : "", t.len);
    sbuf_free(&t);
}

void api_tgi_stream_event(struct creq *c, const struct gen_event *e, struct sbuf *out)
{
    if (e->finish == FIN_CANCEL) return;
    if (e->finish == FIN_ERROR) {
        sbuf_puts(out,
                  "data: {\"error\": \"generation failed\", \"error_type\": \"generation\"}\n\n");
        return;
    }
    sbuf_puts(out, "data: {\"token\": ");
    token_json(out, e);
    if (c->g->top_n > 0) {
        sbuf_puts(out, ", \"top_tokens\": ");
        top_json(c->s, out, e);
    }
    if (!e->finish) {
        sbuf_puts(out, ", \"generated_text\": null, \"details\": null}\n\n");
        return;
    }
    sbuf_puts(out, ", \"generated_text\": ");
    full_text(out, c);
    sbuf_printf(out,
                ", \"details\": {\"finish_reason\": \"%s\", \"generated_tokens\": %d, \"seed\": ",
                tgi_finish(e->finish), e->n_gen);
    seed_json(out, c);
    sbuf_puts(out, "}}\n\n");
}

void api_tgi_final_body(struct creq *c, const struct gen_event *e, struct sbuf *out)
{
    sbuf_puts(out, "{\"generated_text\": ");
    full_text(out, c);
    if (c->details) {
        sbuf_printf(
            out, ", \"details\": {\"finish_reason\": \"%s\", \"generated_tokens\": %d, \"seed\": ",
            tgi_finish(e->finish), e->n_gen);
        seed_json(out, c);
        sbuf_puts(out, ", \"prefill\": [");
        const struct gen_req *g = c->g;
        if (g->prefill_logprobs && g->prefill_lp)
            for (int i = 0; i < g->n_prompt; i++) {
                if (i) sbuf_puts(out, ", ");
                id_json(c->s, out, g->prompt[i], g->prefill_lp[i], true);
            }
        sbuf_puts(out, "], \"tokens\": [");
        sbuf_append(out, c->toks.data ? c->toks.data : "", c->toks.len);
        sbuf_putc(out, ']');
        if (g->top_n > 0) {
            sbuf_puts(out, ", \"top_tokens\": [");
            sbuf_append(out, c->top_toks.data ? c->top_toks.data : "", c->top_toks.len);
            sbuf_putc(out, ']');
        }
        sbuf_putc(out, '}');
    }
    sbuf_putc(out, '}');
}

void api_tgi_info(struct srv *s, struct evhttp_request *req)
{
    struct sbuf b = SBUF_INIT;
    sbuf_puts(&b, "{\"model_id\": ");
    jw_cstr(&b, s->model_id);
    sbuf_puts(&b, ", \"model_sha\": null, \"model_dtype\": ");
    jw_cstr(&b, s->model->dtype);
    sbuf_printf(&b,
                ", \"model_device_type\": \"cpu\", \"model_pipeline_tag\": \"text-generation\", "
                "\"max_concurrent_requests\": %d, \"max_best_of\": 1, \"max_stop_sequences\": 16, "
                "\"max_input_tokens\": %d, \"max_input_length\": %d, \"max_total_tokens\": %d, "
                "\"max_batch_size\": %d, "
                "\"validation_workers\": 1, \"version\": \"sgpu-model 0.1.0\", \"sha\": null, "
                "\"docker_label\": null, \"router\": \"sgpu-model\", \"vocab_size\": %d, "
                "\"threads\": %d, \"weight_bytes_per_step\": %zu, \"n_params\": %llu}",
                s->max_batch + s->max_queue, s->n_ctx - 1, s->n_ctx - 1, s->n_ctx, s->max_batch,
                s->model->hp.n_vocab, s->threads, s->model->weight_bytes,
                (unsigned long long)s->model->n_params);
    /* more fields: reopen the object written above */
    if (b.len && b.data[b.len - 1] == '}') b.len--;
    sbuf_printf(&b, ", \"max_top_n_tokens\": %d", TGI_MAX_TOP_N);
    /* the pre-tokenizer in use (BPE vocabularies; see tokenizer_bpe.c) */
    sbuf_puts(&b, ", \"tokenizer_pre\": ");
    if (s->model->tok.kind == TOK_BPE)
        jw_cstr(&b, tok_pre_name(s->model->tok.pre));
    else
        sbuf_puts(&b, "null");
    sbuf_putc(&b, '}');
    srv_reply_sbuf(req, 200, "application/json", &b);
    sbuf_free(&b);
}
