/* Continuous batching.  One scheduler thread owns the active sequences; each
 * step it admits queued requests (slots and KV memory permitting), drops
 * cancelled ones, and runs every active sequence through one llama_forward:
 * decoding sequences contribute one token, prefilling ones a prompt chunk.
 * Results go back as events (token, text released, finish reason) on a list
 * the HTTP loop drains after notify() wakes it; the loop never computes.
 *
 * Ownership: the loop allocates a gen_req and submits it; from then on the
 * batcher may touch it until it posts the event with finish != 0, after which
 * it never touches it again and the loop frees it (gen_req_free). */
#ifndef SGPU_MODEL_BATCHER_H
#define SGPU_MODEL_BATCHER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "llama.h"
#include "metrics.h"
#include "sampler.h"
#include "sbuf.h"

enum gen_finish { FIN_NONE = 0, FIN_LENGTH, FIN_EOS, FIN_STOP, FIN_CANCEL, FIN_ERROR };

struct gen_req {
    /* set by the submitter */
    int *prompt;
    int n_prompt;
    int max_new;
    struct sampler_params sp;
    char **stop; /* stop strings (owned) */
    size_t *stop_len;
    int n_stop;
    bool stop_include;        /* keep the matched stop text in the output (TGI) */
    bool ignore_eos;          /* keep going past EOS (benchmarks, tests) */
    struct sampler_extra spx; /* frequency/presence penalties, typical_p */
    int top_n;                /* 0..GEN_TOP_MAX alternatives reported per token */
    bool prefill_logprobs;    /* fill prefill_lp (TGI decoder_input_details) */
    /* written by the batcher, read by the loop after the finish event:
     * prefill_lp[i] = log p(prompt[i] | prompt[..i]), [0] = NAN */
    float *prefill_lp;
    void *user;
    double t_submit;
    atomic_int cancel;
    /* batcher-private */
    struct gen_req *next;
    struct llama_kv kv;
    struct sampler smp;
    int *ctx_ids; /* prompt + generated */
    int n_ctx_ids;
    int n_done; /* prompt tokens already in the KV cache */
    int n_gen;
    int last;
    struct sbuf text;
    size_t sent;
    size_t kv_bytes;
    double t_last;
    bool admitted;
    float *plogits; /* prefill_logprobs: logits of a prompt chunk (PREFILL_LP_CHUNK rows) */
};

#define GEN_TOP_MAX 8

struct gen_event {
    struct gen_req *req;
    int token; /* -1 on cancel/error events */
    float logprob;
    bool special;
    char
        *text; /* bytes released by this token (valid UTF-8 unless the model emits invalid bytes) */
    size_t text_len;
    int finish; /* enum gen_finish */
    int n_top;  /* top_n alternatives of this position, best first */
    int top_id[GEN_TOP_MAX];
    float top_lp[GEN_TOP_MAX];
    int n_prompt, n_gen;
    struct gen_event *next;
};

struct batcher_opts {
    int threads;
    int max_batch;     /* active sequences */
    int max_queue;     /* waiting requests */
    size_t kv_budget;  /* bytes of KV cache across active sequences */
    int prefill_chunk; /* prompt tokens per step across sequences (the cap) */
    struct metrics_hist *h_ttft, *h_tpot;
    /* While sequences decode, a step's prompt tokens are cut so the step's expected time
     * stays within step_ratio x a decode-only step (batcher_prefill_budget); 0 = off: every
     * step takes prefill_chunk prompt tokens. */
    double step_ratio;
};

struct batcher;

/* ---- adaptive prompt-token budget of a step ----
 * The scheduler keeps exponential moving averages, timed with the monotonic clock around each
 * llama_forward: t_decode, seconds of a step with decode tokens only, and t_token, the seconds a
 * prompt token adds to a step (a mixed step's time less t_decode, over its prompt tokens). */
#define PREFILL_MIN_TOKENS 4 /* floor while decoding: a prompt always progresses */
/* While decoding sequences share the steps with prompts, every PREFILL_REFRESH_STEPS-th step is
 * decode-only: it re-measures t_decode, which grows with the streams' contexts (their KV cache
 * reads) while a long prompt goes in. */
#define PREFILL_REFRESH_STEPS 8
#define PREFILL_EMA_ALPHA 0.25
#define PREFILL_EMA_CLAMP 1.5 /* bound on a sample against the average (see below) */

struct prefill_budget_in {
    double t_decode;       /* EMA s of a decode-only step; <= 0: not measured yet */
    double t_token;        /* EMA s per prompt token; <= 0: not measured yet */
    double ratio;          /* target step time / t_decode while decoding; 0 = off */
    int n_decoding;        /* sequences contributing a decode token to the step */
    int remaining;         /* prompt tokens of the prefilling sequences not yet in their caches */
    int cap;               /* prefill_chunk */
    int since_decode_only; /* steps since the last decode-only one */
};
/* Prompt tokens of the next step.  No decoding sequence (or ratio 0): min(cap, remaining), the
 * prompt at full speed.  Otherwise 0 when since_decode_only >= PREFILL_REFRESH_STEPS (a
 * decode-only step to re-measure t_decode), else (ratio - 1) * t_decode / t_token, so that
 * t_decode + n * t_token <= ratio * t_decode, at least PREFILL_MIN_TOKENS (also while either
 * average is unmeasured) and at most cap and remaining. */
int batcher_prefill_budget(const struct prefill_budget_in *in);

struct prefill_ema {
    double t_decode, t_token;
};
/* Fold one step (dt seconds, n_prompt prompt tokens, n_decoding decode tokens) into the
 * averages: a decode-only step into t_decode; a step with prompt tokens into t_token, as
 * (dt - t_decode when decode tokens shared it) / n_prompt, at least dt / (4 n_prompt) when
 * noise makes the difference small or negative.  Both err on the side of smaller budgets: a
 * t_decode sample counts at most PREFILL_EMA_CLAMP x t_decode (a step that lost its CPU), a
 * t_token sample at least t_token / PREFILL_EMA_CLAMP (a step that looked cheap). */
void batcher_prefill_ema_update(struct prefill_ema *e, double dt, int n_prompt, int n_decoding);

struct batcher *batcher_new(const struct llama_model *m, const struct batcher_opts *o,
                            void (*notify)(void *), void *notify_arg);
void batcher_free(struct batcher *b);
/* 0 queued; -1 queue full (the request stays the caller's). */
int batcher_submit(struct batcher *b, struct gen_req *r);
/* Ask for the request to end at the next step (a FIN_CANCEL event follows). */
void batcher_cancel(struct batcher *b, struct gen_req *r);
/* Take all pending events, oldest first (caller frees with gen_event_free). */
struct gen_event *batcher_take_events(struct batcher *b);
void gen_event_free(struct gen_event *e);
void gen_req_free(struct gen_req *r);

struct batcher_stats {
    int queued, active;
    size_t kv_bytes;
    unsigned long long steps;
    int prefill_budget;           /* prompt tokens granted to the last step with a prompt */
    double ema_decode, ema_token; /* struct prefill_ema, seconds */
};
void batcher_get_stats(struct batcher *b, struct batcher_stats *s);

#endif
