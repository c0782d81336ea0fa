/* Continuous batching scheduler; see batcher.h. */
#include "batcher.h"
#include "clock.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "httputil.h"
#include "log.h"
#include "xalloc.h"

/* prompt rows per step of a request that wants prefill logprobs (bounds its
 * logits buffer: rows x n_vocab floats) */
#define PREFILL_LP_CHUNK 16

struct batcher {
    const struct llama_model *m;
    struct batcher_opts o;
    struct llama_ctx *ctx;
    void (*notify)(void *);
    void *notify_arg;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    /* queue (guarded by mu) */
    struct gen_req *qhead, *qtail;
    int n_queued;
    /* events (guarded by mu) */
    struct gen_event *ehead, *etail;
    /* scheduler-private */
    struct gen_req **active;
    int n_active;
    size_t kv_used;
    struct llama_seq_in *seqs;
    struct gen_req **order;       /* request of each seqs[] entry */
    struct gen_req **cancelled;   /* scratch */
    float *logits;                /* max_batch * n_vocab */
    struct prefill_ema ema;       /* step timing (batcher_prefill_budget) */
    int step_prompt, step_decode; /* tokens of the planned step */
    int since_decode_only;        /* steps since the last decode-only step */
    /* stats (guarded by mu) */
    struct batcher_stats st;
};

void gen_event_free(struct gen_event *e)
{
    while (e) {
        struct gen_event *n = e->next;
        free(e->text);
        free(e);
        e = n;
    }
}

void gen_req_free(struct gen_req *r)
{
    if (!r) return;
    free(r->prompt);
    for (int i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    free(r->stop);
    free(r->stop_len);
    llama_kv_free(&r->kv);
    sampler_free(&r->smp);
    free(r->ctx_ids);
    free(r->prefill_lp);
    free(r->plogits);
    sbuf_free(&r->text);
    free(r);
}

/* Called with mu held. */
static void push_event(struct batcher *b, struct gen_event *e)
{
    e->next = NULL;
    if (b->etail)
        b->etail->next = e;
    else
        b->ehead = e;
    b->etail = e;
}

static struct gen_event *new_event(struct gen_req *r, int token, float lp, int finish)
{
    struct gen_event *e = xcalloc(1, sizeof *e);
    e->req = r;
    e->token = token;
    e->logprob = lp;
    e->finish = finish;
    e->n_prompt = r->n_prompt;
    e->n_gen = r->n_gen;
    return e;
}

/* Bytes at the end of text that must wait: an incomplete UTF-8 sequence or a
 * possible start of a stop string. */
static size_t held_bytes(const struct gen_req *r)
{
    const unsigned char *s = (const unsigned char *)r->text.data;
    size_t len = r->text.len, avail = len - r->sent, hold = 0;
    for (size_t k = 1; k <= 3 && k <= avail; k++) {
        unsigned char c = s[len - k];
        if (c < 0x80) break;
        if (c >= 0xc0) {
            size_t need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
            if (need > k) hold = k;
            break;
        }
    }
    for (int i = 0; i < r->n_stop; i++) {
        size_t sl = r->stop_len[i];
        for (size_t k = sl - 1 < avail ? sl - 1 : avail; k > hold; k--)
            if (memcmp(s + len - k, r->stop[i], k) == 0) {
                hold = k;
                break;
            }
    }
    return hold;
}

/* Append a token's text, apply stop strings; returns FIN_STOP when matched. */
static int add_text(const struct llama_model *m, struct gen_req *r, int tok)
{
    size_t old = r->text.len;
    tok_piece(&m->tok, tok, &r->text);
    for (int i = 0; i < r->n_stop; i++) {
        size_t sl = r->stop_len[i];
        size_t from = old >= sl ? old - sl + 1 : 0;
        if (from < r->sent) from = r->sent;
        if (r->text.len < sl) continue;
        for (size_t p = from; p + sl <= r->text.len; p++)
            if (memcmp(r->text.data + p, r->stop[i], sl) == 0) {
                r->text.len = r->stop_include ? p + sl : p;
                r->text.data[r->text.len] = 0;
                return FIN_STOP;
            }
    }
    return FIN_NONE;
}

static void finish_req(struct batcher *b, struct gen_req *r)
{
    if (r->admitted) {
        b->kv_used -= r->kv_bytes;
        llama_kv_free(&r->kv);
        r->admitted = false;
    }
}

/* Emit an event for a new token (or finish) of r; caller holds mu. */
static struct gen_event *emit(struct batcher *b, struct gen_req *r, int tok, float lp, int fin)
{
    struct gen_event *e = new_event(r, tok, lp, fin);
    e->special = tok >= 0 && tok_is_control(&b->m->tok, tok);
    size_t end = r->text.len;
    if (!fin) end -= held_bytes(r);
    if (end > r->sent) {
        e->text_len = end - r->sent;
        e->text = xmemdup(r->text.data + r->sent, e->text_len);
        r->sent = end;
    }
    push_event(b, e);
    return e;
}

/* Drop cancelled requests still in the queue.  Called with mu held; true when an event was
 * posted. */
static bool drop_cancelled_queued(struct batcher *b)
{
    struct gen_req **pp = &b->qhead, *last = NULL;
    bool posted = false;
    while (*pp) {
        struct gen_req *r = *pp;
        if (atomic_load(&r->cancel)) {
            *pp = r->next;
            b->n_queued--;
            push_event(b, new_event(r, -1, 0, FIN_CANCEL));
            posted = true;
        } else {
            last = r;
            pp = &r->next;
        }
    }
    b->qtail = last;
    return posted;
}

/* The per-request state of an admitted request: its KV cache of cap tokens, sampler, context
 * ids and (when asked) prefill logprob buffers.  These are sized by the request, so a failed
 * allocation fails the request, not the process. */
static int req_start(struct gen_req *r, const struct llama_model *m, int cap)
{
    int nv = m->hp.n_vocab;
    if (llama_kv_init(&r->kv, m, cap) || sampler_init(&r->smp, &r->sp, nv) ||
        sampler_set_extra(&r->smp, &r->spx) || !(r->ctx_ids = malloc((size_t)cap * sizeof(int))) ||
        (r->prefill_logprobs &&
         (!(r->prefill_lp = malloc((size_t)r->n_prompt * sizeof(float))) ||
          !(r->plogits = malloc((size_t)PREFILL_LP_CHUNK * nv * sizeof(float))))))
        return -1;
    memcpy(r->ctx_ids, r->prompt, (size_t)r->n_prompt * sizeof(int));
    r->n_ctx_ids = r->n_prompt;
    return 0;
}

/* Admit queued requests while a batch slot and KV budget remain (the first active request is
 * admitted whatever its size).  Called with mu held; true when an event was posted. */
static bool admit(struct batcher *b)
{
    size_t bpt = llama_kv_bytes_per_token(b->m);
    bool posted = false;
    while (b->qhead && b->n_active < b->o.max_batch) {
        struct gen_req *r = b->qhead;
        int cap = r->n_prompt + r->max_new;
        size_t need = bpt * (size_t)cap;
        if (b->n_active > 0 && b->kv_used + need > b->o.kv_budget) break;
        b->qhead = r->next;
        if (!b->qhead) b->qtail = NULL;
        b->n_queued--;
        r->next = NULL;
        if (req_start(r, b->m, cap)) {
            push_event(b, new_event(r, -1, 0, FIN_ERROR));
            posted = true;
            continue;
        }
        r->kv_bytes = need;
        r->admitted = true;
        b->kv_used += need;
        b->active[b->n_active++] = r;
    }
    return posted;
}

/* Cancelled active sequences leave now (without mu); they are listed in b->cancelled for their
 * events, posted under the lock after the step.  Returns how many. */
static int drop_cancelled_active(struct batcher *b)
{
    int n_cancelled = 0;
    for (int i = 0; i < b->n_active;) {
        struct gen_req *r = b->active[i];
        if (atomic_load(&r->cancel)) {
            finish_req(b, r);
            b->cancelled[n_cancelled++] = r;
            b->active[i] = b->active[--b->n_active];
        } else {
            i++;
        }
    }
    return n_cancelled;
}

int batcher_prefill_budget(const struct prefill_budget_in *in)
{
    if (in->remaining <= 0 || in->cap <= 0) return 0;
    int n = in->cap;
    if (in->ratio > 0 && in->n_decoding > 0) {
        if (in->since_decode_only >= PREFILL_REFRESH_STEPS) return 0;
        int want = PREFILL_MIN_TOKENS;
        if (in->t_decode > 0 && in->t_token > 0) {
            double x = (in->ratio - 1) * in->t_decode / in->t_token;
            if (x > want) want = x < (double)in->cap ? (int)x : in->cap;
        }
        if (want < n) n = want;
    }
    return n < in->remaining ? n : in->remaining;
}

static double ema(double avg, double x)
{
    return avg > 0 ? avg + PREFILL_EMA_ALPHA * (x - avg) : x;
}

void batcher_prefill_ema_update(struct prefill_ema *e, double dt, int n_prompt, int n_decoding)
{
    if (dt <= 0) return;
    if (n_prompt == 0) {
        if (n_decoding == 0) return;
        /* a preempted step would inflate t_decode and so the next budgets */
        if (e->t_decode > 0 && dt > PREFILL_EMA_CLAMP * e->t_decode)
            dt = PREFILL_EMA_CLAMP * e->t_decode;
        e->t_decode = ema(e->t_decode, dt);
        return;
    }
    double extra = n_decoding > 0 && e->t_decode > 0 ? dt - e->t_decode : dt;
    if (extra < dt / 4) extra = dt / 4;
    double x = extra / n_prompt;
    /* an underestimate would make the next step too long: fall slowly, rise at once */
    if (e->t_token > 0 && x < e->t_token / PREFILL_EMA_CLAMP) x = e->t_token / PREFILL_EMA_CLAMP;
    e->t_token = ema(e->t_token, x);
}

/* Fill b->seqs / b->order for one forward step: decode tokens first, then prompt chunks within
 * the step's prompt-token budget.  Returns the number of sequences. */
static int plan_step(struct batcher *b)
{
    int nv = b->m->hp.n_vocab;
    int ns = 0, n_decoding = 0, remaining = 0;
    for (int i = 0; i < b->n_active; i++) {
        const struct gen_req *r = b->active[i];
        if (r->n_done == r->n_prompt)
            n_decoding++;
        else
            remaining += r->n_prompt - r->n_done;
    }
    struct prefill_budget_in bi = {b->ema.t_decode,     b->ema.t_token, b->o.step_ratio,
                                   n_decoding,          remaining,      b->o.prefill_chunk,
                                   b->since_decode_only};
    int budget = batcher_prefill_budget(&bi);
    b->step_decode = n_decoding;
    b->step_prompt = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < b->n_active; i++) {
            struct gen_req *r = b->active[i];
            bool decoding = r->n_done == r->n_prompt;
            if (pass == 0 && decoding) {
                b->seqs[ns] = (struct llama_seq_in){&r->kv, &r->last, 1,
                                                    false,  true,     b->logits + (size_t)ns * nv};
                b->order[ns++] = r;
            } else if (pass == 1 && !decoding && budget > 0) {
                int n = r->n_prompt - r->n_done;
                if (n > budget) n = budget;
                if (r->plogits && n > PREFILL_LP_CHUNK) n = PREFILL_LP_CHUNK;
                budget -= n;
                b->step_prompt += n;
                bool done = r->n_done + n == r->n_prompt;
                /* prefill logprobs: every row of the chunk, into the request's buffer */
                b->seqs[ns] = (struct llama_seq_in){
                    &r->kv, r->prompt + r->n_done,
                    n,      r->plogits != NULL,
                    done,   r->plogits ? r->plogits : b->logits + (size_t)ns * nv};
                b->order[ns++] = r;
            }
        }
    b->since_decode_only = b->step_prompt ? b->since_decode_only + 1 : 0;
    return ns;
}

/* Sample the next token of r from its logits row, record timing, detect the end and emit the
 * event.  Called with mu held; a finished request is marked n_done = -1 for removal. */
static void sample_and_emit(struct batcher *b, struct gen_req *r, float *row, double now)
{
    const struct llama_model *m = b->m;
    int nv = m->hp.n_vocab;
    float lp = 0;
    int tok = sampler_next(&r->smp, row, r->ctx_ids, r->n_ctx_ids, &lp);
    int n_top = 0, top_id[GEN_TOP_MAX] = {0};
    float top_lp[GEN_TOP_MAX] = {0};
    if (r->top_n > 0)
        n_top =
            sampler_top(row, nv, r->top_n < GEN_TOP_MAX ? r->top_n : GEN_TOP_MAX, top_id, top_lp);
    r->ctx_ids[r->n_ctx_ids++] = tok;
    r->n_gen++;
    r->last = tok;
    if (r->n_gen == 1) {
        if (b->o.h_ttft) metrics_observe(b->o.h_ttft, now - r->t_submit);
    } else if (b->o.h_tpot) {
        metrics_observe(b->o.h_tpot, now - r->t_last);
    }
    r->t_last = now;
    int fin = FIN_NONE;
    if (tok == m->tok.eos && !r->ignore_eos) {
        fin = FIN_EOS;
    } else {
        fin = add_text(m, r, tok);
        if (!fin && (r->n_gen >= r->max_new || r->kv.n >= r->kv.cap)) fin = FIN_LENGTH;
    }
    if (fin) {
        finish_req(b, r);
        r->n_done = -1;
    }
    struct gen_event *ev = emit(b, r, tok, lp, fin);
    ev->n_top = n_top;
    memcpy(ev->top_id, top_id, (size_t)n_top * sizeof(int));
    memcpy(ev->top_lp, top_lp, (size_t)n_top * sizeof(float));
}

/* The result of one sequence of the step (rc: llama_forward's).  Called with mu held. */
static void step_result(struct batcher *b, struct gen_req *r, const struct llama_seq_in *q, int rc,
                        double now)
{
    int nv = b->m->hp.n_vocab;
    if (rc != 0) {
        finish_req(b, r);
        push_event(b, new_event(r, -1, 0, FIN_ERROR));
        r->n_done = -1; /* marker: remove below */
        return;
    }
    float *row = q->logits;
    if (q->all_logits) {
        /* row j predicts prompt[n_done + j + 1] */
        if (r->n_done == 0) r->prefill_lp[0] = NAN;
        for (int j = 0; j < q->n && r->n_done + j + 1 < r->n_prompt; j++)
            r->prefill_lp[r->n_done + j + 1] =
                sampler_logprob(q->logits + (size_t)j * nv, nv, r->prompt[r->n_done + j + 1]);
        row = q->logits + (size_t)(q->n - 1) * nv;
    }
    if (r->n_done < r->n_prompt) {
        r->n_done += q->n;
        if (r->n_done < r->n_prompt) return;
    }
    sample_and_emit(b, r, row, now);
}

/* Remove the requests marked finished (n_done == -1) from the active set. */
static void remove_finished(struct batcher *b)
{
    for (int i = 0; i < b->n_active;) {
        if (b->active[i]->n_done == -1)
            b->active[i] = b->active[--b->n_active];
        else
            i++;
    }
}

static void *sched_main(void *arg)
{
    struct batcher *b = arg;
    pthread_mutex_lock(&b->mu);
    while (!b->stop) {
        bool posted = drop_cancelled_queued(b);
        posted |= admit(b);
        b->st.queued = b->n_queued;
        b->st.active = b->n_active;
        b->st.kv_bytes = b->kv_used;
        if (posted && b->notify) {
            /* notify outside the lock: the callback may block or call back in */
            pthread_mutex_unlock(&b->mu);
            b->notify(b->notify_arg);
            pthread_mutex_lock(&b->mu);
            continue;
        }
        if (b->n_active == 0) {
            pthread_cond_wait(&b->cv, &b->mu);
            continue;
        }
        pthread_mutex_unlock(&b->mu);

        int n_cancelled = drop_cancelled_active(b);
        int ns = plan_step(b);
        double t0 = clock_mono();
        int rc = ns ? llama_forward(b->ctx, b->seqs, ns) : 0;
        double now = clock_mono();
        if (ns && rc == 0) {
            batcher_prefill_ema_update(&b->ema, now - t0, b->step_prompt, b->step_decode);
            if (b->step_prompt)
                log_debug("prefill_step",
                          "prompt_tokens=%d decoding=%d step_ms=%.2f t_decode_ms=%.2f "
                          "t_token_ms=%.3f",
                          b->step_prompt, b->step_decode, (now - t0) * 1e3, b->ema.t_decode * 1e3,
                          b->ema.t_token * 1e3);
        }

        pthread_mutex_lock(&b->mu);
        b->st.steps++;
        if (b->step_prompt) b->st.prefill_budget = b->step_prompt;
        b->st.ema_decode = b->ema.t_decode;
        b->st.ema_token = b->ema.t_token;
        for (int i = 0; i < n_cancelled; i++)
            push_event(b, new_event(b->cancelled[i], -1, 0, FIN_CANCEL));
        for (int si = 0; si < ns; si++)
            step_result(b, b->order[si], &b->seqs[si], rc, now);
        remove_finished(b);
        b->st.active = b->n_active;
        b->st.kv_bytes = b->kv_used;
        if (b->ehead && b->notify) {
            pthread_mutex_unlock(&b->mu);
            b->notify(b->notify_arg);
            pthread_mutex_lock(&b->mu);
        }
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

struct batcher *batcher_new(const struct llama_model *m, const struct batcher_opts *o,
                            void (*notify)(void *), void *notify_arg)
{
    struct batcher *b = xcalloc(1, sizeof *b);
    b->m = m;
    b->o = *o;
    if (b->o.max_batch < 1) b->o.max_batch = 1;
    if (b->o.prefill_chunk < 1) b->o.prefill_chunk = 256;
    b->notify = notify;
    b->notify_arg = notify_arg;
    b->ctx = llama_ctx_new(m, o->threads);
    b->active = xcalloc((size_t)b->o.max_batch, sizeof *b->active);
    b->seqs = xcalloc((size_t)b->o.max_batch, sizeof *b->seqs);
    b->order = xcalloc((size_t)b->o.max_batch, sizeof *b->order);
    b->cancelled = xcalloc((size_t)b->o.max_batch, sizeof *b->cancelled);
    b->logits = xmalloc((size_t)b->o.max_batch * m->hp.n_vocab * sizeof(float));
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    if (pthread_create(&b->thread, NULL, sched_main, b) != 0) {
        llama_ctx_free(b->ctx);
        free(b->active);
        free(b->seqs);
        free(b->logits);
        free(b->order);
        free(b->cancelled);
        pthread_mutex_destroy(&b->mu);
        pthread_cond_destroy(&b->cv);
        free(b);
        return NULL;
    }
    return b;
}

void batcher_free(struct batcher *b)
{
    if (!b) return;
    pthread_mutex_lock(&b->mu);
    b->stop = true;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->thread, NULL);
    /* requests still owned here are finished and handed back as events */
    for (int i = 0; i < b->n_active; i++)
        finish_req(b, b->active[i]);
    gen_event_free(b->ehead);
    llama_ctx_free(b->ctx);
    free(b->active);
    free(b->seqs);
    free(b->order);
    free(b->cancelled);
    free(b->logits);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    free(b);
}

int batcher_submit(struct batcher *b, struct gen_req *r)
{
    pthread_mutex_lock(&b->mu);
    if (b->n_queued >= b->o.max_queue) {
        pthread_mutex_unlock(&b->mu);
        return -1;
    }
    r->next = NULL;
    if (b->qtail)
        b->qtail->next = r;
    else
        b->qhead = r;
    b->qtail = r;
    b->n_queued++;
    b->st.queued = b->n_queued;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    return 0;
}

void batcher_cancel(struct batcher *b, struct gen_req *r)
{
    atomic_store(&r->cancel, 1);
    pthread_mutex_lock(&b->mu);
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

struct gen_event *batcher_take_events(struct batcher *b)
{
    pthread_mutex_lock(&b->mu);
    struct gen_event *e = b->ehead;
    b->ehead = b->etail = NULL;
    pthread_mutex_unlock(&b->mu);
    return e;
}

void batcher_get_stats(struct batcher *b, struct batcher_stats *s)
{
    pthread_mutex_lock(&b->mu);
    *s = b->st;
    pthread_mutex_unlock(&b->mu);
}
