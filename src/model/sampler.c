/* Sampling; see sampler.h. */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int sampler_init(struct sampler *s, const struct sampler_params *p, int n_vocab)
{
    memset(s, 0, sizeof *s);
    s->p = *p;
    s->n_vocab = n_vocab;
    s->rng = p->seed ^ 0x2545f4914f6cdd1dull;
    if (!s->rng) s->rng = 1;
    s->work = malloc((size_t)n_vocab * sizeof *s->work);
    s->idx = malloc((size_t)n_vocab * sizeof *s->idx);
    if (!s->work || !s->idx) {
        sampler_free(s);
        return -1;
    }
    return 0;
}

void sampler_free(struct sampler *s)
{
    free(s->work);
    free(s->idx);
    s->work = NULL;
    s->idx = NULL;
}

static uint64_t xs64(uint64_t *x)
{
    uint64_t v = *x;
    v ^= v >> 12;
    v ^= v << 25;
    v ^= v >> 27;
    *x = v;
    return v * 0x2545f4914f6cdd1dull;
}

static int cmp_desc(const void *a, const void *b, void *arg)
{
    const float *v = arg;
    float x = v[*(const int *)a], y = v[*(const int *)b];
    if (x > y) return -1;
    if (x < y) return 1;
    return *(const int *)a - *(const int *)b;
}

int sampler_next(struct sampler *s, float *logits, const int *ctx, int n_ctx, float *logprob)
{
    int n = s->n_vocab;
    if (s->p.repetition_penalty != 1.0f && s->p.repetition_penalty > 0) {
        /* penalise each id once (work[] marks the ids seen) */
        memset(s->work, 0, (size_t)n * sizeof *s->work);
        for (int i = 0; i < n_ctx; i++) {
            int id = ctx[i];
            if (id < 0 || id >= n || s->work[id] != 0) continue;
            s->work[id] = 1;
            float v = logits[id];
            logits[id] = v > 0 ? v / s->p.repetition_penalty : v * s->p.repetition_penalty;
        }
    }
    int best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    float mx = logits[best];
    double z = 0;
    for (int i = 0; i < n; i++)
        z += exp((double)(logits[i] - mx));
    double logz = log(z) + mx;
    int pick = best;
    if (s->p.sample) {
        float temp = s->p.temperature > 0 ? s->p.temperature : 1.0f;
        int k = s->p.top_k > 0 && s->p.top_k < n ? s->p.top_k : n;
        for (int i = 0; i < n; i++)
            s->idx[i] = i;
        /* partial selection of the top k is enough; sort it */
        if (k < n || s->p.top_p < 1.0f) qsort_r(s->idx, (size_t)n, sizeof(int), cmp_desc, logits);
        double sum = 0;
        for (int i = 0; i < k; i++) {
            double e = exp((double)(logits[s->idx[i]] - mx) / temp);
            s->work[i] = (float)e;
            sum += e;
        }
        int m = k;
        if (s->p.top_p < 1.0f && s->p.top_p > 0) {
            double c = 0;
            for (int i = 0; i < k; i++) {
                c += s->work[i] / sum;
                if (c >= s->p.top_p) {
                    m = i + 1;
                    break;
                }
            }
            sum = 0;
            for (int i = 0; i < m; i++)
                sum += s->work[i];
        }
        double r = (double)(xs64(&s->rng) >> 11) / 9007199254740992.0 * sum;
        pick = s->idx[m - 1];
        double c = 0;
        for (int i = 0; i < m; i++) {
            c += s->work[i];
            if (r < c) {
                pick = s->idx[i];
                break;
            }
        }
    }
    if (logprob) *logprob = (float)((double)logits[pick] - logz);
    return pick;
}
