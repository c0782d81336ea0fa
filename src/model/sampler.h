/* Next-token selection over one row of logits: repetition penalty (CTRL style:
 * positive logits divided, negative multiplied, for ids already in the
 * context), then greedy argmax, or temperature + top-k + top-p sampling with a
 * per-request xorshift RNG.  The reported logprob is log-softmax of the
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

struct sampler {
    struct sampler_params p;
    uint64_t rng;
    int n_vocab;
    float *work; /* n_vocab */
    int *idx;    /* n_vocab */
};

int sampler_init(struct sampler *s, const struct sampler_params *p, int n_vocab);
void sampler_free(struct sampler *s);
/* logits is modified in place (penalty).  ctx: ids seen so far (prompt + generated). */
int sampler_next(struct sampler *s, float *logits, const int *ctx, int n_ctx, float *logprob);

#endif
