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

int sampler_set_extra(struct sampler *s, const struct sampler_extra *x)
{
    s->x = *x;
    if (x->typical_p > 0 && x->typical_p < 1 && !s->work2) {
        s->work2 = malloc((size_t)s->n_vocab * sizeof *s->work2);
        s->idx2 = malloc((size_t)s->n_vocab * sizeof *s->idx2);
        if (!s->work2 || !s->idx2) return -1;
    }
    return 0;
}

void sampler_free(struct sampler *s)
{
    free(s->work);
    free(s->idx);
    free(s->work2);
    free(s->idx2);
    s->work = NULL;
    s->idx = NULL;
    s->work2 = NULL;
    s->idx2 = NULL;
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

/* Partition idx[0..n) so that idx[0..k) hold the k largest logits (ties: lower
 * id first), in no particular order.  Quickselect, O(n) expected. */
static bool before(const float *v, int a, int b)
{
    float x = v[a], y = v[b];
    return x > y || (x == y && a < b); /* ties: lower id first */
}

static void select_top(int *idx, int n, int k, const float *v)
{
    int lo = 0, hi = n - 1;
    while (lo < hi && k > 0 && k < n) {
        int mid = lo + (hi - lo) / 2, piv = idx[mid];
        int i = lo, j = hi;
        while (i <= j) {
            while (before(v, idx[i], piv))
                i++;
            while (before(v, piv, idx[j]))
                j--;
            if (i <= j) {
                int t = idx[i];
                idx[i] = idx[j];
                idx[j] = t;
                i++;
                j--;
            }
        }
        if (k - 1 <= j)
            hi = j;
        else if (k - 1 >= i)
            lo = i;
        else
            break;
    }
}

static int cmp_asc(const void *a, const void *b, void *arg)
{
    const float *v = arg;
    float x = v[*(const int *)a], y = v[*(const int *)b];
    if (x < y) return -1;
    if (x > y) return 1;
    return *(const int *)a - *(const int *)b;
}

/* Locally typical sampling over the m candidates idx[0..m) with weights
 * work[0..m) (HF's TypicalLogitsWarper): order by |-log p - H| (H the
 * entropy), keep the shortest prefix whose mass reaches typical_p (at least
 * one).  Rewrites idx/work[0..kept); returns kept. */
static int typical(struct sampler *s, int m)
{
    double sum = 0, ent = 0;
    for (int i = 0; i < m; i++)
        sum += s->work[i];
    for (int i = 0; i < m; i++) {
        double p = s->work[i] / sum;
        if (p > 0) ent -= p * log(p);
    }
    for (int i = 0; i < m; i++) {
        double p = s->work[i] / sum;
        s->work2[i] = p > 0 ? (float)fabs(-log(p) - ent) : INFINITY;
        s->idx2[i] = i;
    }
    qsort_r(s->idx2, (size_t)m, sizeof(int), cmp_asc, s->work2);
    /* HF keeps sorted[0..last] with last = #(cumulative < mass) */
    int kept = 0;
    double c = 0;
    for (int j = 0; j < m; j++) {
        c += s->work[s->idx2[j]] / sum;
        if (c < s->x.typical_p) kept++;
    }
    kept = kept + 1 < m ? kept + 1 : m;
    /* gather (positions into work2 as floats is not enough: reuse the tail) */
    for (int j = 0; j < kept; j++) {
        s->work2[j] = s->work[s->idx2[j]];
        s->idx2[j] = s->idx[s->idx2[j]];
    }
    memcpy(s->work, s->work2, (size_t)kept * sizeof *s->work);
    memcpy(s->idx, s->idx2, (size_t)kept * sizeof *s->idx);
    return kept;
}

int sampler_top(const float *logits, int n, int k, int *ids, float *logprobs)
{
    if (k > n) k = n;
    if (k <= 0) return 0;
    int best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    float mx = logits[best];
    double z = 1.0; /* the maximum's exp(0) */
    int have = 0;
    for (int i = 0; i < n; i++) {
        if (i != best) z += exp((double)(logits[i] - mx));
        /* insertion into the sorted top list (ties: the earlier, lower id, stays first) */
        if (have < k || logits[i] > logits[ids[have - 1]]) {
            int j = have < k ? have++ : k - 1;
            while (j > 0 && logits[i] > logits[ids[j - 1]]) {
                ids[j] = ids[j - 1];
                j--;
            }
            ids[j] = i;
        }
    }
    double logz = log(z) + mx;
    for (int j = 0; j < k; j++)
        logprobs[j] = (float)((double)logits[ids[j]] - logz);
    return k;
}

float sampler_logprob(const float *logits, int n, int id)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    float mx = logits[best];
    double z = 1.0; /* the maximum's exp(0) */
    for (int i = 0; i < n; i++)
        if (i != best) z += exp((double)(logits[i] - mx));
    return (float)((double)logits[id] - (log(z) + mx));
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
    if ((s->x.frequency_penalty != 0 || s->x.presence_penalty != 0) && n_ctx > s->x.penalty_from) {
        int from = s->x.penalty_from > 0 ? s->x.penalty_from : 0;
        memset(s->work, 0, (size_t)n * sizeof *s->work); /* counts */
        for (int i = from; i < n_ctx; i++)
            if (ctx[i] >= 0 && ctx[i] < n) s->work[ctx[i]] += 1;
        for (int i = from; i < n_ctx; i++) {
            int id = ctx[i];
            if (id < 0 || id >= n || s->work[id] == 0) continue;
            logits[id] -= s->work[id] * s->x.frequency_penalty + s->x.presence_penalty;
            s->work[id] = 0; /* once per id */
        }
    }
    int best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    float mx = logits[best];
    /* float exps, double sum: ~4x cheaper than exp() on 32k-entry vocabularies.
     * z >= 1 (the maximum contributes exp(0)). */
    double z = 1.0;
    for (int i = 0; i < n; i++)
        if (i != best) z += expf(logits[i] - mx);
    double logz = log(z) + mx;
    int pick = best;
    if (s->p.sample) {
        float temp = s->p.temperature > 0 ? s->p.temperature : 1.0f;
        bool has_k = s->p.top_k > 0 && s->p.top_k < n;
        bool has_p = s->p.top_p < 1.0f && s->p.top_p > 0;
        int k = has_k ? s->p.top_k : n;
        for (int i = 0; i < n; i++)
            s->idx[i] = i;
        double zt = 0; /* mass of the whole distribution at this temperature */
        if (has_p && !has_k)
            for (int i = 0; i < n; i++)
                zt += exp((double)(logits[i] - mx) / temp);
        int m; /* candidates kept: idx[0..m) sorted by logit, descending */
        for (int want = has_k ? k : (has_p ? (n < 64 ? n : 64) : n);;) {
            if (has_k || has_p) {
                select_top(s->idx, n, want, logits);
                qsort_r(s->idx, (size_t)want, sizeof(int), cmp_desc, logits);
            }
            double sum = 0;
            for (int i = 0; i < want; i++) {
                double e = exp((double)(logits[s->idx[i]] - mx) / temp);
                s->work[i] = (float)e;
                sum += e;
            }
            m = want;
            if (!has_p) break;
            /* top-p over the top-k renormalised (HF order), or over everything */
            double total = has_k ? sum : zt, c = 0;
            bool reached = false;
            for (int i = 0; i < want; i++) {
                c += s->work[i] / total;
                if (c >= s->p.top_p) {
                    m = i + 1;
                    reached = true;
                    break;
                }
            }
            if (reached || has_k || want == n) break;
            want = want * 4 < n ? want * 4 : n; /* not enough mass yet: widen */
        }
        if (s->work2 && s->x.typical_p > 0 && s->x.typical_p < 1 && m > 1) m = typical(s, m);
        double sum = 0;
        for (int i = 0; i < m; i++)
            sum += s->work[i];
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
