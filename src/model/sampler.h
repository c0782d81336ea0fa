/* Next-token selection over one row of logits: repetition penalty (CTRL style:
 * positive logits divided, negative multiplied, for ids already in the
 * context), frequency/presence penalties (generated ids), then greedy argmax,
 * or temperature + top-k + top-p + typical-p sampling with a per-request
 * xorshift RNG.  The reported logprob is log-softmax of the
 * penalised logits (before temperature) at the chosen id. */
#ifndef SGPU_MODEL_SAMPLER_H
#define SGPU_MODEL_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

struct sampler_params {
    bool sample;              /* false = greedy */
    float temperature;        /* > 0 */
    int top_k;                /* 0 = off */
    float top_p;              /* 1 = off */
    float repetition_penalty; /* 1 = off */
    uint64_t seed;
};

/* Optional controls (all zero = off), set with sampler_set_extra. */
struct sampler_extra {
    /* OpenAI-style penalties on the ids generated so far (ctx[penalty_from..]):
     * logit -= count * frequency_penalty + (count > 0) * presence_penalty */
    float frequency_penalty, presence_penalty;
    int penalty_from;
    float typical_p; /* locally typical sampling mass (HF TypicalLogitsWarper); 0 or 1 = off */
};

struct sampler {
    struct sampler_params p;
    struct sampler_extra x;
    uint64_t rng;
    int n_vocab;
    float *work;  /* n_vocab */
    int *idx;     /* n_vocab */
    float *work2; /* n_vocab (typical_p) */
    int *idx2;    /* n_vocab (typical_p) */
};

int sampler_init(struct sampler *s, const struct sampler_params *p, int n_vocab);
void sampler_free(struct sampler *s);
/* After sampler_init; 0 or -1 (out of memory). */
int sampler_set_extra(struct sampler *s, const struct sampler_extra *x);
/* logits is modified in place (penalty).  ctx: ids seen so far (prompt + generated). */
int sampler_next(struct sampler *s, float *logits, const int *ctx, int n_ctx, float *logprob);
/* The k (<= n) largest logits of a row (ties: lower id first), best first,
 * with their log-softmax values.  Returns k. */
int sampler_top(const float *logits, int n, int k, int *ids, float *logprobs);
/* log-softmax of logits[id] over the row. */
float sampler_logprob(const float *logits, int n, int id);

#endif
