/* Forward pass against the naive double-precision reference; F16/Q8_0 error
 * bounds; SIMD vs portable kernels; cached vs uncached; batched vs solo (bitwise);
 * thread-count independence; the batcher's continuous batching; sampler. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "../common/assert_ext.h"
#include "model/batcher.h"
#include "model/llama.h"
#include "model/sampler.h"
#include "model_testutil.h"

static const int TOKS[] = {1, 7, 33, 12, 49, 3, 3, 20, 41, 5, 16, 28};
#define NT ((int)(sizeof TOKS / sizeof TOKS[0]))

/* logits of all positions, one prefill */
static float *run_all(struct llama_model *m, const int *toks, int n, int threads)
{
    struct llama_ctx *c = llama_ctx_new(m, threads);
    struct llama_kv kv;
    assert_int_equal(llama_kv_init(&kv, m, n), 0);
    float *lg = malloc((size_t)n * m->hp.n_vocab * sizeof(float));
    struct llama_seq_in s = {&kv, toks, n, true, true, lg};
    assert_int_equal(llama_forward(c, &s, 1), 0);
    llama_kv_free(&kv);
    llama_ctx_free(c);
    return lg;
}

/* max |a-b| / max |b| */
static double rel_err(const float *a, const double *b, size_t n)
{
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > md) md = d;
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return md / mb;
}

static void check_type(uint32_t type, bool tied, double tol_exact, double tol_vs_f32)
{
    struct tw w;
    tw_random(&w, 42 + type, tied);
    double *ref32 = malloc((size_t)NT * w.nv * sizeof(double));
    ref_forward(&w, TOKS, NT, ref32);
    struct llama_model *m = tw_load(&w, type);
    float *lg = run_all(m, TOKS, NT, 2);
    /* against the reference on the original F32 weights */
    double e32 = rel_err(lg, ref32, (size_t)NT * w.nv);
    /* against the reference on exactly the stored (rounded) weights */
    tw_roundtrip_all(&w, type);
    double *refq = malloc((size_t)NT * w.nv * sizeof(double));
    ref_forward(&w, TOKS, NT, refq);
    double eq = rel_err(lg, refq, (size_t)NT * w.nv);
    print_message(
        "type %s tied %d: rel err vs stored-weight reference %.3g, vs F32 reference %.3g\n",
        ggml_type_name(type), tied, eq, e32);
    ASSERT_LT_DBL(eq, tol_exact);
    ASSERT_LT_DBL(e32, tol_vs_f32);
    free(lg);
    free(ref32);
    free(refq);
    llama_free(m);
    tw_free(&w);
}

static void test_forward_f32(void **st)
{
    (void)st;
    check_type(GGML_TYPE_F32, false, 1e-5, 1e-5);
    check_type(GGML_TYPE_F32, true, 1e-5, 1e-5);
}

/* Stated tolerances (max |error| / max |logit|):
 *   F16: within 1e-5 of the reference on the stored (rounded) weights, i.e. the
 *        kernels add no error, and within 1% of the F32-weight reference;
 *   Q8_0: activations are quantised to 8 bits as well (as in llama.cpp), so
 *        within 5% of the stored-weight reference and 6% of the F32 one; the
 *        Q8 x Q8 kernel itself is checked exactly in test_q8q8_kernel_exact. */
static void test_forward_f16(void **st)
{
    (void)st;
    check_type(GGML_TYPE_F16, false, 1e-5, 1e-2);
}

static void test_forward_q8_0(void **st)
{
    (void)st;
    check_type(GGML_TYPE_Q8_0, false, 5e-2, 6e-2);
    check_type(GGML_TYPE_Q8_0, true, 5e-2, 6e-2);
}

/* Q8_0 weights x quantised activations against exact integer arithmetic. */
static void test_q8q8_kernel_exact(void **st)
{
    (void)st;
    enum { R = 37, N = 256, T = 7 };
    uint64_t rng = 3;
    float *w = malloc(sizeof(float) * R * N), *x = malloc(sizeof(float) * T * N);
    for (int i = 0; i < R * N; i++)
        w[i] = tiny_randf(&rng);
    for (int i = 0; i < T * N; i++)
        x[i] = 4 * tiny_randf(&rng);
    uint8_t *wq = malloc((size_t)R * N / 32 * 34);
    for (int r = 0; r < R; r++)
        qk_quantize_q8_0(w + r * N, wq + (size_t)r * N / 32 * 34, N);
    int8_t xq[T * N];
    float xd[T * N / 32], y[T * R];
    for (int t = 0; t < T; t++)
        qk_quantize_act(x + t * N, N, xq + t * N, xd + t * N / 32);
    for (int pass = 0; pass < 2; pass++) {
        qk_force_portable(pass);
        /* rows split in two calls, tokens all at once: as the pool does */
        qk_matmul_q8q8(wq, N / 32 * 34, N, xq, xd, T, y, R, 0, 20);
        qk_matmul_q8q8(wq, N / 32 * 34, N, xq, xd, T, y, R, 20, R);
        for (int r = 0; r < R; r++)
            for (int t = 0; t < T; t++) {
                double want = 0, mag = 0;
                for (int b = 0; b < N / 32; b++) {
                    const uint8_t *blk = wq + ((size_t)r * N / 32 + b) * 34;
                    uint16_t dh;
                    memcpy(&dh, blk, 2);
                    long s = 0;
                    for (int j = 0; j < 32; j++)
                        s += (long)(int8_t)blk[2 + j] * xq[t * N + 32 * b + j];
                    want += (double)qk_f16_to_f32(dh) * xd[t * N / 32 + b] * (double)s;
                    mag += fabs((double)qk_f16_to_f32(dh) * xd[t * N / 32 + b]) * 32 * 127 * 127;
                }
                ASSERT_EQ_DBL(y[t * R + r], want, 1e-6 * mag + 1e-6);
                /* and the quantisation itself is close to the float product */
                double f = 0;
                for (int k = 0; k < N; k++)
                    f += (double)w[r * N + k] * x[t * N + k];
                ASSERT_LT_DBL(fabs(want - f), 0.05 * sqrt((double)N) * 4);
            }
    }
    qk_force_portable(0);
    /* AVX-VNNI and AVX2 variants give bitwise equal results */
    float y2[T * R];
    qk_matmul_q8q8(wq, N / 32 * 34, N, xq, xd, T, y, R, 0, R);
    qk_allow_vnni(0);
    qk_matmul_q8q8(wq, N / 32 * 34, N, xq, xd, T, y2, R, 0, R);
    qk_allow_vnni(1);
    assert_memory_equal(y, y2, sizeof y);
    /* the unsigned-activation AVX-VNNI form too */
    uint8_t xu[T * N];
    for (int t = 0; t < T; t++)
        qk_quantize_act_u(x + t * N, N, xq + t * N, xu + t * N, xd + t * N / 32);
    qk_matmul_q8q8_u(wq, N / 32 * 34, N, xq, xu, xd, T, y2, R, 0, R);
    assert_memory_equal(y, y2, sizeof y);
    print_message("q8 dot: simd %d, vnni %d\n", qk_simd_active(), qk_vnni_active());
    free(w);
    free(x);
    free(wq);
}

static void test_reference_detects_bugs(void **st)
{
    /* sanity: a perturbed weight moves the logits far beyond the tolerance */
    (void)st;
    struct tw w;
    tw_random(&w, 7, false);
    double *ref = malloc((size_t)NT * w.nv * sizeof(double));
    ref_forward(&w, TOKS, NT, ref);
    w.L[1].k[5] += 0.05f;
    struct llama_model *m = tw_load(&w, GGML_TYPE_F32);
    float *lg = run_all(m, TOKS, NT, 1);
    ASSERT_GT_DBL(rel_err(lg, ref, (size_t)NT * w.nv), 1e-4);
    free(lg);
    free(ref);
    llama_free(m);
    tw_free(&w);
}

static void test_portable_matches_simd(void **st)
{
    (void)st;
    struct tw w;
    tw_random(&w, 9, false);
    for (uint32_t type = 0; type <= 8; type += (type == 1 ? 7 : 1)) {
        struct llama_model *m = tw_load(&w, type);
        float *a = run_all(m, TOKS, NT, 1);
        qk_force_portable(1);
        float *b = run_all(m, TOKS, NT, 1);
        qk_force_portable(0);
        double md = 0;
        for (int i = 0; i < NT * w.nv; i++)
            md = fmax(md, fabs((double)a[i] - b[i]));
        ASSERT_LT_DBL(md, 1e-4);
        free(a);
        free(b);
        llama_free(m);
    }
    tw_free(&w);
}

static void test_cached_equals_uncached(void **st)
{
    (void)st;
    struct tw w;
    tw_random(&w, 11, false);
    struct llama_model *m = tw_load(&w, GGML_TYPE_Q8_0);
    int nv = m->hp.n_vocab;
    float *full = run_all(m, TOKS, NT, 2);
    struct llama_ctx *c = llama_ctx_new(m, 2);
    struct llama_kv kv;
    llama_kv_init(&kv, m, NT);
    float *step = malloc((size_t)nv * sizeof(float));
    /* prefill 3, then one token at a time */
    float *pre = malloc((size_t)3 * nv * sizeof(float));
    struct llama_seq_in s = {&kv, TOKS, 3, true, true, pre};
    assert_int_equal(llama_forward(c, &s, 1), 0);
    double md = 0;
    for (int i = 0; i < 3 * nv; i++)
        md = fmax(md, fabs((double)pre[i] - full[i]));
    for (int t = 3; t < NT; t++) {
        struct llama_seq_in d = {&kv, &TOKS[t], 1, false, true, step};
        assert_int_equal(llama_forward(c, &d, 1), 0);
        for (int i = 0; i < nv; i++)
            md = fmax(md, fabs((double)step[i] - full[(size_t)t * nv + i]));
    }
    print_message("cached vs uncached max abs diff %.3g\n", md);
    ASSERT_LT_DBL(md, 1e-5);
    /* overflowing the cache is refused without side effects */
    struct llama_seq_in o = {&kv, TOKS, 1, false, true, step};
    assert_int_equal(llama_forward(c, &o, 1), -1);
    int bad = 999;
    llama_kv_free(&kv);
    llama_kv_init(&kv, m, 4);
    struct llama_seq_in b = {&kv, &bad, 1, false, true, step};
    assert_int_equal(llama_forward(c, &b, 1), -1);
    assert_int_equal(kv.n, 0);
    free(step);
    free(pre);
    free(full);
    llama_kv_free(&kv);
    llama_ctx_free(c);
    llama_free(m);
    tw_free(&w);
}

/* greedy continuation of prompt p (len n) for k tokens, alone; logits kept */
static void solo(struct llama_model *m, int threads, const int *p, int n, int k, int *out,
                 float *lg_out)
{
    int nv = m->hp.n_vocab;
    struct llama_ctx *c = llama_ctx_new(m, threads);
    struct llama_kv kv;
    llama_kv_init(&kv, m, n + k);
    float *lg = malloc((size_t)nv * sizeof(float));
    struct llama_seq_in s = {&kv, p, n, false, true, lg};
    assert_int_equal(llama_forward(c, &s, 1), 0);
    for (int i = 0; i < k; i++) {
        memcpy(lg_out + (size_t)i * nv, lg, (size_t)nv * sizeof(float));
        out[i] = tw_argmax(lg, nv);
        struct llama_seq_in d = {&kv, &out[i], 1, false, true, lg};
        assert_int_equal(llama_forward(c, &d, 1), 0);
    }
    free(lg);
    llama_kv_free(&kv);
    llama_ctx_free(c);
}

static void test_batched_equals_solo(void **st)
{
    (void)st;
    struct tw w;
    tw_random(&w, 13, false);
    for (uint32_t type = 0; type <= 8; type += (type == 1 ? 7 : 1)) {
        struct llama_model *m = tw_load(&w, type);
        int nv = m->hp.n_vocab;
        enum { NS = 5, K = 10 };
        const int plen[NS] = {3, 7, 1, 12, 5};
        const int start[NS] = {0, 0, 2, 3, 6}; /* step at which each joins */
        const int kk[NS] = {K, 4, K, 6, K}; /* tokens each generates (leave at different steps) */
        int want[NS][K], got[NS][K];
        float *want_lg[NS], *got_lg[NS];
        for (int s = 0; s < NS; s++) {
            want_lg[s] = malloc((size_t)K * nv * sizeof(float));
            got_lg[s] = malloc((size_t)K * nv * sizeof(float));
            solo(m, 1, TOKS, plen[s], kk[s], want[s], want_lg[s]);
        }
        struct llama_ctx *c = llama_ctx_new(m, 2);
        struct llama_kv kv[NS];
        int ngen[NS] = {0}, pending[NS];
        float *lg = malloc((size_t)NS * nv * sizeof(float));
        for (int s = 0; s < NS; s++)
            llama_kv_init(&kv[s], m, plen[s] + K);
        for (int step = 0; step < 20; step++) {
            struct llama_seq_in in[NS];
            int who[NS], ns = 0;
            for (int s = 0; s < NS; s++) {
                if (step < start[s] || ngen[s] >= kk[s]) continue;
                if (step == start[s])
                    in[ns] = (struct llama_seq_in){&kv[s], TOKS, plen[s],
                                                   false,  true, lg + (size_t)ns * nv};
                else
                    in[ns] = (struct llama_seq_in){&kv[s], &pending[s], 1,
                                                   false,  true,        lg + (size_t)ns * nv};
                who[ns++] = s;
            }
            if (!ns) continue;
            assert_int_equal(llama_forward(c, in, ns), 0);
            for (int i = 0; i < ns; i++) {
                int s = who[i];
                memcpy(got_lg[s] + (size_t)ngen[s] * nv, in[i].logits, (size_t)nv * sizeof(float));
                pending[s] = got[s][ngen[s]++] = tw_argmax(in[i].logits, nv);
            }
        }
        for (int s = 0; s < NS; s++) {
            assert_int_equal(ngen[s], kk[s]);
            assert_memory_equal(got[s], want[s], (size_t)kk[s] * sizeof(int));
            /* bitwise identical logits, not merely close */
            assert_memory_equal(got_lg[s], want_lg[s], (size_t)kk[s] * nv * sizeof(float));
            free(want_lg[s]);
            free(got_lg[s]);
            llama_kv_free(&kv[s]);
        }
        free(lg);
        llama_ctx_free(c);
        llama_free(m);
    }
    tw_free(&w);
}

static void test_threads_bitwise(void **st)
{
    (void)st;
    struct tw w;
    tw_random(&w, 17, false);
    struct llama_model *m = tw_load(&w, GGML_TYPE_F16);
    float *a = run_all(m, TOKS, NT, 1), *b = run_all(m, TOKS, NT, 3);
    assert_memory_equal(a, b, (size_t)NT * w.nv * sizeof(float));
    free(a);
    free(b);
    llama_free(m);
    tw_free(&w);
}

/* ---- batcher ---- */

static pthread_mutex_t ev_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ev_cv = PTHREAD_COND_INITIALIZER;
static int ev_flag;

static int lockstep; /* notify waits until the consumer has handled the events */

static void on_notify(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&ev_mu);
    ev_flag = 1;
    pthread_cond_broadcast(&ev_cv);
    while (lockstep && ev_flag)
        pthread_cond_wait(&ev_cv, &ev_mu);
    pthread_mutex_unlock(&ev_mu);
}

static struct gen_req *mkreq(const int *p, int n, int max_new)
{
    struct gen_req *r = calloc(1, sizeof *r);
    r->prompt = malloc((size_t)n * sizeof(int));
    memcpy(r->prompt, p, (size_t)n * sizeof(int));
    r->n_prompt = n;
    r->max_new = max_new;
    r->sp.temperature = 1;
    r->sp.top_p = 1;
    r->sp.repetition_penalty = 1;
    return r;
}

static void test_batcher_greedy_and_cancel(void **st)
{
    (void)st;
    struct tw w;
    tw_random(&w, 19, false);
    struct llama_model *m = tw_load(&w, GGML_TYPE_F32);
    int nv = m->hp.n_vocab;
    enum { NR = 6, K = 8 };
    int want[NR][K];
    float *scratch = malloc((size_t)K * nv * sizeof(float));
    for (int i = 0; i < NR; i++)
        solo(m, 1, TOKS + i, 2 + i, K, want[i], scratch);
    free(scratch);
    struct batcher_opts o = {2, 3,    16,   1 << 20,
                             5, NULL, NULL, 0}; /* 3 slots, small prefill chunks */
    lockstep = 1;
    struct batcher *b = batcher_new(m, &o, on_notify, NULL);
    struct gen_req *r[NR + 1];
    int got[NR + 1][64], ng[NR + 1] = {0}, fin[NR + 1] = {0};
    for (int i = 0; i < NR; i++) {
        r[i] = mkreq(TOKS + i, 2 + i, K);
        r[i]->user = (void *)(intptr_t)i;
        assert_int_equal(batcher_submit(b, r[i]), 0);
    }
    /* one long request, cancelled after its first token */
    r[NR] = mkreq(TOKS, 4, 60);
    r[NR]->user = (void *)(intptr_t)NR;
    assert_int_equal(batcher_submit(b, r[NR]), 0);
    int done = 0;
    while (done < NR + 1) {
        pthread_mutex_lock(&ev_mu);
        while (!ev_flag)
            pthread_cond_wait(&ev_cv, &ev_mu);
        pthread_mutex_unlock(&ev_mu);
        struct gen_event *e = batcher_take_events(b), *x;
        for (x = e; x; x = x->next) {
            int i = (int)(intptr_t)x->req->user;
            if (x->token >= 0) got[i][ng[i]++] = x->token;
            if (i == NR && ng[i] == 1) batcher_cancel(b, x->req);
            if (x->finish) {
                fin[i] = x->finish;
                done++;
            }
        }
        gen_event_free(e);
        pthread_mutex_lock(&ev_mu);
        ev_flag = 0;
        pthread_cond_broadcast(&ev_cv);
        pthread_mutex_unlock(&ev_mu);
    }
    lockstep = 0;
    for (int i = 0; i < NR; i++) {
        if (fin[i] != FIN_LENGTH) ASSERT_EQ_INT(fin[i], FIN_EOS);
        for (int k = 0; k < ng[i]; k++)
            assert_int_equal(got[i][k], want[i][k]);
        if (fin[i] == FIN_LENGTH) assert_int_equal(ng[i], K);
    }
    assert_int_equal(fin[NR], FIN_CANCEL);
    ASSERT_LT_INT(ng[NR], 60);
    struct batcher_stats bs;
    batcher_get_stats(b, &bs);
    assert_int_equal(bs.active, 0);
    assert_int_equal((int)bs.kv_bytes, 0);
    batcher_free(b);
    for (int i = 0; i <= NR; i++)
        gen_req_free(r[i]);
    llama_free(m);
    tw_free(&w);
}

static void test_batcher_queue_limit(void **st)
{
    (void)st;
    struct tw w;
    tw_random(&w, 23, false);
    struct llama_model *m = tw_load(&w, GGML_TYPE_F32);
    struct batcher_opts o = {1, 1, 0, 1 << 20, 64, NULL, NULL, 0};
    struct batcher *b = batcher_new(m, &o, NULL, NULL);
    struct gen_req *r = mkreq(TOKS, 3, 2);
    assert_int_equal(batcher_submit(b, r), -1); /* max_queue 0 */
    batcher_free(b);
    gen_req_free(r);
    llama_free(m);
    tw_free(&w);
}

/* ---- sampler ---- */

static void test_sampler(void **st)
{
    (void)st;
    enum { N = 100 };
    float base[N], lg[N];
    uint64_t rng = 5;
    for (int i = 0; i < N; i++)
        base[i] = 3 * tiny_randf(&rng);
    int am = tw_argmax(base, N);
    struct sampler s;
    struct sampler_params g = {false, 1, 0, 1, 1, 0};
    sampler_init(&s, &g, N);
    memcpy(lg, base, sizeof lg);
    float lp;
    assert_int_equal(sampler_next(&s, lg, NULL, 0, &lp), am);
    double z = 0;
    for (int i = 0; i < N; i++)
        z += exp(base[i] - base[am]);
    ASSERT_LT_DBL(fabs(lp - (-log(z))), 1e-4);
    sampler_free(&s);
    /* top_k = 1 sampling is greedy */
    struct sampler_params k1 = {true, 0.7f, 1, 1, 1, 99};
    sampler_init(&s, &k1, N);
    for (int t = 0; t < 20; t++) {
        memcpy(lg, base, sizeof lg);
        assert_int_equal(sampler_next(&s, lg, NULL, 0, NULL), am);
    }
    sampler_free(&s);
    /* same seed, same draws; different seed, different draws */
    struct sampler_params p1 = {true, 1.5f, 0, 0.95f, 1, 1234}, p2 = p1;
    p2.seed = 4321;
    struct sampler a, b, c;
    sampler_init(&a, &p1, N);
    sampler_init(&b, &p1, N);
    sampler_init(&c, &p2, N);
    int diff = 0, seen_non_argmax = 0;
    for (int t = 0; t < 50; t++) {
        float l1[N], l2[N], l3[N];
        memcpy(l1, base, sizeof l1);
        memcpy(l2, base, sizeof l2);
        memcpy(l3, base, sizeof l3);
        int x = sampler_next(&a, l1, NULL, 0, NULL), y = sampler_next(&b, l2, NULL, 0, NULL),
            zz = sampler_next(&c, l3, NULL, 0, NULL);
        assert_int_equal(x, y);
        diff += x != zz;
        seen_non_argmax += x != am;
    }
    ASSERT_GT_INT(diff, 0);
    ASSERT_GT_INT(seen_non_argmax, 0);
    sampler_free(&a);
    sampler_free(&b);
    sampler_free(&c);
    /* top-k / top-p draw only from the right candidate sets (brute force here) */
    {
        enum { V = 5000 };
        float *lv = malloc(V * sizeof(float)), *tmp = malloc(V * sizeof(float));
        int *order = malloc(V * sizeof(int));
        uint64_t r2 = 11;
        for (int i = 0; i < V; i++)
            lv[i] = 2 * tiny_randf(&r2);
        for (int i = 0; i < V; i++)
            order[i] = i;
        for (int i = 0; i < V; i++) /* selection sort of the top 400 is enough */
            for (int j = i + 1; j < V && i < 400; j++)
                if (lv[order[j]] > lv[order[i]]) {
                    int t = order[i];
                    order[i] = order[j];
                    order[j] = t;
                }
        double zz = 0, cm = 0;
        for (int i = 0; i < V; i++)
            zz += exp(lv[i]);
        int np = 0; /* smallest prefix with mass >= 0.05 */
        while (cm < 0.05)
            cm += exp(lv[order[np++]]) / zz;
        struct sampler_params tk = {true, 1.0f, 7, 1, 1, 5}, tp = {true, 1.0f, 0, 0.05f, 1, 6};
        struct sampler sk, sp2;
        sampler_init(&sk, &tk, V);
        sampler_init(&sp2, &tp, V);
        int hit_k[7] = {0};
        for (int t = 0; t < 300; t++) {
            memcpy(tmp, lv, V * sizeof(float));
            int x = sampler_next(&sk, tmp, NULL, 0, NULL), pos = -1;
            for (int i = 0; i < 7; i++)
                if (order[i] == x) pos = i;
            ASSERT_GE_INT(pos, 0);
            hit_k[pos]++;
            memcpy(tmp, lv, V * sizeof(float));
            x = sampler_next(&sp2, tmp, NULL, 0, NULL);
            pos = -1;
            for (int i = 0; i < np; i++)
                if (order[i] == x) pos = i;
            ASSERT_GE_INT(pos, 0);
        }
        for (int i = 0; i < 7; i++)
            ASSERT_GT_INT(hit_k[i], 0);
        sampler_free(&sk);
        sampler_free(&sp2);
        free(lv);
        free(tmp);
        free(order);
    }
    /* repetition penalty: CTRL rule on ids in the context, once each */
    struct sampler_params rp = {false, 1, 0, 1, 2.0f, 0};
    sampler_init(&s, &rp, N);
    float l4[N] = {0};
    l4[3] = 4.0f;
    l4[4] = -1.0f;
    l4[5] = 3.0f;
    int ctx[] = {3, 4, 3};
    assert_int_equal(sampler_next(&s, l4, ctx, 3, NULL), 5);
    ASSERT_LT_DBL(fabsf(l4[3] - 2.0f), 1e-6f);
    ASSERT_LT_DBL(fabsf(l4[4] + 2.0f), 1e-6f);
    sampler_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_f32),
        cmocka_unit_test(test_forward_f16),
        cmocka_unit_test(test_forward_q8_0),
        cmocka_unit_test(test_q8q8_kernel_exact),
        cmocka_unit_test(test_reference_detects_bugs),
        cmocka_unit_test(test_portable_matches_simd),
        cmocka_unit_test(test_cached_equals_uncached),
        cmocka_unit_test(test_batched_equals_solo),
        cmocka_unit_test(test_threads_bitwise),
        cmocka_unit_test(test_batcher_greedy_and_cancel),
        cmocka_unit_test(test_batcher_queue_limit),
        cmocka_unit_test(test_sampler),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
