/* OpenAI-compatible API: POST /v1/completions, /v1/chat/completions (plain or
 * "stream": true as SSE ending with "data: [DONE]"), GET /v1/models.
 *
 * Parameters: prompt (string, [string], [ids] or [[ids]] with one entry) or
 * messages; max_tokens (default 16 for completions, 256 for chat, capped by
 * the context; max_completion_tokens is an alias); temperature (default 1,
 * 0 = greedy), top_p, seed, stop, n (must be 1), echo, stream,
 * stream_options.include_usage, frequency_penalty and presence_penalty (-2..2,
 * on the counts of generated tokens); extensions top_k, repetition_penalty,
 * ignore_eos.  logprobs and user are accepted and ignored.
 *
 * Chat prompts come from the model's tokenizer.chat_template (chat.c; ChatML
 * when the file has none), also served alone by POST /apply-template. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "httputil.h"
#include "jsonw.h"
#include "server_int.h"
#include "xalloc.h"

#define BAD(code, ...)                                                                             \
    do {                                                                                           \
        *s->m_rejected_validation += 1;                                                            \
        srv_oai_error(req, 400, "invalid_request_error", code, __VA_ARGS__);                       \
        goto out;                                                                                  \
    } while (0)

/* The chat request's prompt: the model's template (or ChatML) over
 * `messages`, with `add_generation_prompt` (default true) and `tools` /
 * `documents` bound when given.  0, or an HTTP status with err set. */
static int chat_prompt(struct srv *s, struct json_object *o, struct sbuf *out, char *err,
                       size_t errn)
{
    struct json_object *msgs = NULL, *tools = NULL, *docs = NULL;
    if (!json_object_object_get_ex(o, "messages", &msgs) || !msgs) {
        snprintf(err, errn, "`messages` is required");
        return 400;
    }
    bool gen = true;
    if (jget_bool(o, "add_generation_prompt", &gen, NULL)) {
        snprintf(err, errn, "`add_generation_prompt` must be a boolean");
        return 400;
    }
    if (json_object_object_get_ex(o, "tools", &tools) && json_object_is_type(tools, json_type_null))
        tools = NULL;
    if (json_object_object_get_ex(o, "documents", &docs) &&
        json_object_is_type(docs, json_type_null))
        docs = NULL;
    struct chat_opts co = {gen, tools, docs};
    return chat_render(s->chat, msgs, &co, out, err, errn);
}

/* prompt -> ids; 0 ok */
static int prompt_ids(struct srv *s, struct json_object *p, struct ids *ids, struct sbuf *echo,
                      const char **err)
{
    if (json_object_is_type(p, json_type_string)) {
        const char *t = json_object_get_string(p);
        size_t n = (size_t)json_object_get_string_len(p);
        tok_encode(&s->model->tok, t, n, true, ids);
        sbuf_append(echo, t, n);
        return 0;
    }
    if (!json_object_is_type(p, json_type_array) || json_object_array_length(p) == 0) {
        *err = "`prompt` must be a string, an array of one string, or an array of token ids";
        return -1;
    }
    struct json_object *first = json_object_array_get_idx(p, 0);
    if (json_object_array_length(p) == 1 && first && json_object_is_type(first, json_type_string))
        return prompt_ids(s, first, ids, echo, err);
    if (json_object_array_length(p) == 1 && first && json_object_is_type(first, json_type_array))
        p = first;
    size_t n = json_object_array_length(p);
    for (size_t i = 0; i < n; i++) {
        struct json_object *x = json_object_array_get_idx(p, i);
        if (!x || !json_object_is_type(x, json_type_int)) {
            *err = "only one prompt per request is supported (n and batch prompts are not)";
            return -1;
        }
        long long v = json_object_get_int64(x);
        if (v < 0 || v >= s->model->hp.n_vocab) {
            *err = "token id in `prompt` out of range";
            return -1;
        }
        ids_push(ids, (int)v);
    }
    tok_decode(&s->model->tok, ids->v, ids->n, echo);
    return 0;
}

void api_oai_completions(struct srv *s, struct evhttp_request *req, bool chat)
{
    const char *msg = NULL;
    struct creq *c = NULL;
    struct sbuf tmp = SBUF_INIT;
    struct json_object *o = srv_parse_body(req, &msg);
    if (!o) {
        *s->m_rejected_validation += 1;
        srv_oai_error(req, 400, "invalid_request_error", NULL, "%s", msg);
        return;
    }
    c = srv_creq_new(s, req, chat ? API_OAI_CHAT : API_OAI_COMPL);
    struct gen_req *g = c->g;
    long long max_tokens = chat ? 256 : 16, n = 1, seed = 0, top_k = 0;
    double temp = 1.0, top_p = 1.0, rep = 1.0;
    bool has_max = false, stream = false, echo = false, has_seed = false, present;
    if (jget_int(o, "max_tokens", 1, 1 << 24, &max_tokens, &has_max))
        BAD(NULL, "`max_tokens` must be a positive integer");
    if (!has_max && chat && jget_int(o, "max_completion_tokens", 1, 1 << 24, &max_tokens, &has_max))
        BAD(NULL, "`max_completion_tokens` must be a positive integer");
    if (jget_int(o, "n", 1, 1, &n, NULL)) BAD(NULL, "only `n` = 1 is supported");
    if (jget_num(o, "temperature", &temp, NULL) || temp < 0 || temp > 100)
        BAD(NULL, "`temperature` must be between 0 and 100");
    if (jget_num(o, "top_p", &top_p, NULL) || !(top_p > 0 && top_p <= 1))
        BAD(NULL, "`top_p` must be > 0 and <= 1");
    if (jget_int(o, "top_k", 0, 1 << 24, &top_k, NULL))
        BAD(NULL, "`top_k` must be a non-negative integer");
    if (jget_num(o, "repetition_penalty", &rep, NULL) || !(rep > 0))
        BAD(NULL, "`repetition_penalty` must be positive");
    if (jget_int(o, "seed", INT64_MIN, INT64_MAX, &seed, &has_seed))
        BAD(NULL, "`seed` must be an integer");
    if (jget_bool(o, "stream", &stream, NULL)) BAD(NULL, "`stream` must be a boolean");
    if (jget_bool(o, "echo", &echo, NULL)) BAD(NULL, "`echo` must be a boolean");
    if (jget_stop(o, "stop", g))
        BAD(NULL, "`stop` must be a string or a list of at most 16 strings");
    if (jget_bool(o, "ignore_eos", &g->ignore_eos, NULL))
        BAD(NULL, "`ignore_eos` must be a boolean");
    double fpen = 0, ppen = 0;
    if (jget_num(o, "frequency_penalty", &fpen, NULL) || !(fpen >= -2 && fpen <= 2))
        BAD(NULL, "`frequency_penalty` must be between -2 and 2");
    if (jget_num(o, "presence_penalty", &ppen, NULL) || !(ppen >= -2 && ppen <= 2))
        BAD(NULL, "`presence_penalty` must be between -2 and 2");
    g->spx.frequency_penalty = (float)fpen;
    g->spx.presence_penalty = (float)ppen;
    struct json_object *so;
    if (json_object_object_get_ex(o, "stream_options", &so) && so &&
        json_object_is_type(so, json_type_object)) {
        bool inc = false;
        if (jget_bool(so, "include_usage", &inc, &present))
            BAD(NULL, "`include_usage` must be a boolean");
        c->include_usage = inc;
    }
    c->stream = stream;
    g->sp.sample = temp > 0;
    g->sp.temperature = (float)(temp > 0 ? temp : 1.0);
    g->sp.top_p = (float)top_p;
    g->sp.top_k = (int)top_k;
    g->sp.repetition_penalty = (float)rep;
    g->sp.seed = has_seed ? (uint64_t)seed
                          : (uint64_t)s->next_id * 0x9e3779b97f4a7c15ull ^ (uint64_t)c->created;
    g->stop_include = false;
    struct ids ids = {0};
    const char *err = NULL;
    if (chat) {
        char cerr[600];
        int st = chat_prompt(s, o, &tmp, cerr, sizeof cerr);
        if (st >= 500) {
            *s->m_errors += 1;
            srv_oai_error(req, st, "server_error", "chat_template_error", "%s", cerr);
            goto out;
        }
        if (st) BAD(NULL, "%s", cerr);
        chat_tokenize(s->chat, tmp.data ? tmp.data : "", tmp.len, &ids);
    } else {
        struct json_object *p;
        if (!json_object_object_get_ex(o, "prompt", &p) || !p) BAD(NULL, "`prompt` is required");
        if (prompt_ids(s, p, &ids, &tmp, &err)) {
            ids_free(&ids);
            BAD(NULL, "%s", err);
        }
        if (echo) {
            c->prefix = xmalloc(tmp.len + 1);
            memcpy(c->prefix, tmp.data ? tmp.data : "", tmp.len);
            c->prefix[tmp.len] = 0;
        }
    }
    g->prompt = ids.v;
    g->n_prompt = (int)ids.n;
    g->spx.penalty_from = g->n_prompt; /* the penalties count generated tokens */
    if (g->n_prompt == 0) BAD(NULL, "the prompt is empty");
    if (!has_max && chat && g->n_prompt + max_tokens > s->n_ctx)
        max_tokens = s->n_ctx - g->n_prompt;
    if (g->n_prompt >= s->n_ctx || g->n_prompt + max_tokens > s->n_ctx)
        BAD("context_length_exceeded",
            "This model's maximum context length is %d tokens. However, you requested %lld tokens "
            "(%d in the prompt, %lld for the completion).",
            s->n_ctx, g->n_prompt + max_tokens, g->n_prompt, max_tokens);
    g->max_new = (int)max_tokens;
    json_object_put(o);
    sbuf_free(&tmp);
    srv_start(c);
    return;
out:
    if (c) srv_creq_discard(c);
    sbuf_free(&tmp);
    json_object_put(o);
}

static const char *oai_finish(int f)
{
    return f == FIN_LENGTH ? "length" : "stop";
}

static void head(struct creq *c, struct sbuf *b, const char *object)
{
    sbuf_puts(b, "{\"id\": ");
    jw_cstr(b, c->id);
    sbuf_printf(b, ", \"object\": \"%s\", \"created\": %ld, \"model\": ", object, c->created);
    jw_cstr(b, c->s->model_id);
}

static void usage_json(struct sbuf *b, const struct gen_event *e)
{
    sbuf_printf(b, "{\"prompt_tokens\": %d, \"completion_tokens\": %d, \"total_tokens\": %d}",
                e->n_prompt, e->n_gen, e->n_prompt + e->n_gen);
}

void api_oai_stream_event(struct creq *c, const struct gen_event *e, struct sbuf *out)
{
    bool chat = c->api == API_OAI_CHAT;
    const char *obj = chat ? "chat.completion.chunk" : "text_completion";
    if (e->finish == FIN_CANCEL) return;
    if (e->finish == FIN_ERROR) {
        sbuf_puts(
            out,
            "data: {\"error\": {\"message\": \"generation failed\", \"type\": \"server_error\", "
            "\"param\": null, \"code\": null}}\n\ndata: [DONE]\n\n");
        return;
    }
    if (!c->started || c->n_toks == 0) {
        c->n_toks = 1; /* first chunk marker */
        if (chat) {
            sbuf_puts(out, "data: ");
            head(c, out, obj);
            sbuf_puts(out,
                      ", \"choices\": [{\"index\": 0, \"delta\": {\"role\": \"assistant\", "
                      "\"content\": \"\"}, \"logprobs\": null, \"finish_reason\": null}]}\n\n");
        } else if (c->prefix && *c->prefix) {
            sbuf_puts(out, "data: ");
            head(c, out, obj);
            sbuf_puts(out, ", \"choices\": [{\"index\": 0, \"text\": ");
            jw_cstr(out, c->prefix);
            sbuf_puts(out, ", \"logprobs\": null, \"finish_reason\": null}]}\n\n");
        }
    }
    if (e->text_len || e->finish) {
        sbuf_puts(out, "data: ");
        head(c, out, obj);
        sbuf_puts(out, ", \"choices\": [{\"index\": 0, ");
        if (chat) {
            sbuf_puts(out, "\"delta\": {");
            if (e->text_len) {
                sbuf_puts(out, "\"content\": ");
                jw_str(out, e->text, e->text_len);
            }
            sbuf_putc(out, '}');
        } else {
            sbuf_puts(out, "\"text\": ");
            jw_str(out, e->text ? e->text : "", e->text_len);
        }
        sbuf_puts(out, ", \"logprobs\": null, \"finish_reason\": ");
        if (e->finish)
            sbuf_printf(out, "\"%s\"", oai_finish(e->finish));
        else
            sbuf_puts(out, "null");
        sbuf_puts(out, "}]}\n\n");
    }
    if (e->finish) {
        if (c->include_usage) {
            sbuf_puts(out, "data: ");
            head(c, out, obj);
            sbuf_puts(out, ", \"choices\": [], \"usage\": ");
            usage_json(out, e);
            sbuf_puts(out, "}\n\n");
        }
        sbuf_puts(out, "data: [DONE]\n\n");
    }
}

void api_oai_final_body(struct creq *c, const struct gen_event *e, struct sbuf *out)
{
    bool chat = c->api == API_OAI_CHAT;
    head(c, out, chat ? "chat.completion" : "text_completion");
    sbuf_puts(out, ", \"choices\": [{\"index\": 0, ");
    struct sbuf t = SBUF_INIT;
    if (c->prefix) sbuf_puts(&t, c->prefix);
    sbuf_append(&t, c->text.data ? c->text.data : "", c->text.len);
    if (chat) {
        sbuf_puts(out, "\"message\": {\"role\": \"assistant\", \"content\": ");
        jw_str(out, t.data ? t.data : "", t.len);
        sbuf_putc(out, '}');
    } else {
        sbuf_puts(out, "\"text\": ");
        jw_str(out, t.data ? t.data : "", t.len);
    }
    sbuf_free(&t);
    sbuf_printf(out, ", \"logprobs\": null, \"finish_reason\": \"%s\"}], \"usage\": ",
                oai_finish(e->finish));
    usage_json(out, e);
    sbuf_putc(out, '}');
}

void api_oai_model_get(struct srv *s, struct evhttp_request *req, const char *id)
{
    if (strcmp(id, s->model_id) != 0) {
        srv_oai_error_param(req, 404, "invalid_request_error", "model_not_found", "model",
                            "The model `%.200s` does not exist", id);
        return;
    }
    struct sbuf b = SBUF_INIT;
    sbuf_puts(&b, "{\"id\": ");
    jw_cstr(&b, s->model_id);
    sbuf_printf(&b,
                ", \"object\": \"model\", \"created\": 0, \"owned_by\": \"sgpu\", "
                "\"max_model_len\": %d}",
                s->n_ctx);
    srv_reply_sbuf(req, 200, "application/json", &b);
    sbuf_free(&b);
}

void api_oai_models(struct srv *s, struct evhttp_request *req)
{
    struct sbuf b = SBUF_INIT;
    sbuf_puts(&b, "{\"object\": \"list\", \"data\": [{\"id\": ");
    jw_cstr(&b, s->model_id);
    sbuf_printf(&b,
                ", \"object\": \"model\", \"created\": %ld, \"owned_by\": \"sgpu\", "
                "\"max_model_len\": %d}]}",
                (long)0, s->n_ctx);
    srv_reply_sbuf(req, 200, "application/json", &b);
    sbuf_free(&b);
}

/* POST /apply-template {"messages": [...]} -> {"prompt": "..."} (llama.cpp's
 * route): the text /v1/chat/completions would tokenize. */
void api_apply_template(struct srv *s, struct evhttp_request *req)
{
    const char *msg = NULL;
    struct json_object *o = srv_parse_body(req, &msg);
    if (!o) {
        *s->m_rejected_validation += 1;
        srv_oai_error(req, 400, "invalid_request_error", NULL, "%s", msg);
        return;
    }
    struct sbuf p = SBUF_INIT, b = SBUF_INIT;
    char err[600];
    int st = chat_prompt(s, o, &p, err, sizeof err);
    json_object_put(o);
    if (st) {
        *(st >= 500 ? s->m_errors : s->m_rejected_validation) += 1;
        srv_oai_error(req, st, st >= 500 ? "server_error" : "invalid_request_error",
                      st >= 500 ? "chat_template_error" : NULL, "%s", err);
        sbuf_free(&p);
        return;
    }
    sbuf_puts(&b, "{\"prompt\": ");
    jw_str(&b, p.data ? p.data : "", p.len);
    sbuf_putc(&b, '}');
    srv_reply_sbuf(req, 200, "application/json", &b);
    sbuf_free(&b);
    sbuf_free(&p);
}
