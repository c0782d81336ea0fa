/* Chunked prefill in the continuous batcher (src/model/batcher.c):
 *  - a prompt prefilled in chunks of several sizes (one that does not divide
 *    the prompt, one under and one over GEMM_MIN_TOKENS) or in one step gives
 *    the same greedy tokens as llama_forward token by token;
 *  - a long prompt admitted while another stream decodes does not stop that
 *    stream: with chunks of C tokens the running stream gets one token per
 *    step while the prompt takes ceil(P / C) steps (checked on the order of
 *    events, with the batcher in lock step with the test, never on time);
 *    with the adaptive budget (step_ratio 1: floor-sized chunks while a
 *    stream decodes, whatever the measured times) even an uncapped prompt
 *    goes in PREFILL_MIN_TOKENS at a time;
 *  - the budget arithmetic (batcher_prefill_budget) and the step-time averages
 *    it reads (batcher_prefill_ema_update), as pure functions.
 * Bitwise logits of batched / chunked / single-token prefill against each
 * other and the float64 reference are in test_gemm.c. */
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../common/assert_ext.h"
#include "model/batcher.h"
#include "model/llama.h"
#include "model_testutil.h"

/* Reference: the prompt token by token, then k greedy tokens. */
static void greedy_one_by_one(struct llama_model *m, const int *p, int n, int k, int *out)
{
    int nv = m->hp.n_vocab;
    struct llama_ctx *c = llama_ctx_new(m, 1);
    struct llama_kv kv;
    assert_int_equal(llama_kv_init(&kv, m, n + k), 0);
    float *lg = malloc((size_t)nv * sizeof(float));
    for (int i = 0; i < n; i++) {
        struct llama_seq_in s = {&kv, p + i, 1, false, true, lg};
        assert_int_equal(llama_forward(c, &s, 1), 0);
    }
    for (int i = 0; i < k; i++) {
        out[i] = tw_argmax(lg, nv);
        struct llama_seq_in d = {&kv, &out[i], 1, false, true, lg};
        assert_int_equal(llama_forward(c, &d, 1), 0);
    }
    free(lg);
    llama_kv_free(&kv);
    llama_ctx_free(c);
}

/* ---- the batcher in lock step: notify() returns only once the test has
 * handled the events, so the scheduler is paused between steps ---- */

static pthread_mutex_t ev_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ev_cv = PTHREAD_COND_INITIALIZER;
static int ev_flag;

static void on_notify(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&ev_mu);
    ev_flag = 1;
    pthread_cond_broadcast(&ev_cv);
    while (ev_flag)
        pthread_cond_wait(&ev_cv, &ev_mu);
    pthread_mutex_unlock(&ev_mu);
}

/* Wait for the next batch of events (the scheduler then waits in notify). */
static struct gen_event *next_events(struct batcher *b)
{
    pthread_mutex_lock(&ev_mu);
    while (!ev_flag)
        pthread_cond_wait(&ev_cv, &ev_mu);
    pthread_mutex_unlock(&ev_mu);
    return batcher_take_events(b);
}

/* Let the scheduler run its next step. */
static void release_step(void)
{
    pthread_mutex_lock(&ev_mu);
    ev_flag = 0;
    pthread_cond_broadcast(&ev_cv);
    pthread_mutex_unlock(&ev_mu);
}

static struct gen_req *mkreq(const int *p, int n, int max_new, int id)
{
    struct gen_req *r = calloc(1, sizeof *r);
    r->prompt = malloc((size_t)n * sizeof(int));
    memcpy(r->prompt, p, (size_t)n * sizeof(int));
    r->n_prompt = n;
    r->max_new = max_new;
    r->ignore_eos = true;
    r->sp.temperature = 1;
    r->sp.top_p = 1;
    r->sp.repetition_penalty = 1;
    r->user = (void *)(intptr_t)id;
    return r;
}

enum { NP = 53, NG = 6 };

static void long_prompt(int *p, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (i * 31 + 7) % 50;
}

static void test_chunked_prefill_same_tokens(void **st)
{
    (void)st;
    struct tw w;
    tw_random(&w, 41, false);
    const uint32_t types[] = {GGML_TYPE_F32, GGML_TYPE_Q8_0};
    /* 7 does not divide 53; 16 = GEMM_MIN_TOKENS; 20: GEMM chunks and a
     * 13-token remainder through the decode kernels; INT_MAX: one step */
    const int chunks[] = {1, 7, 16, 20, INT_MAX};
    int prompt[NP];
    long_prompt(prompt, NP);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        struct llama_model *m = tw_load(&w, types[ti]);
        int want[NG];
        greedy_one_by_one(m, prompt, NP, NG, want);
        for (size_t ci = 0; ci < sizeof chunks / sizeof chunks[0]; ci++) {
            struct batcher_opts o = {2, 4, 4, (size_t)1 << 24, chunks[ci], NULL, NULL, 0};
            struct batcher *b = batcher_new(m, &o, on_notify, NULL);
            struct gen_req *r = mkreq(prompt, NP, NG, 0);
            assert_int_equal(batcher_submit(b, r), 0);
            int got[NG], ng = 0, fin = 0, steps = 0;
            while (!fin) {
                struct gen_event *e = next_events(b);
                for (struct gen_event *x = e; x; x = x->next) {
                    if (x->token >= 0 && ng < NG) got[ng++] = x->token;
                    if (x->finish) fin = x->finish;
                }
                gen_event_free(e);
                steps++;
                release_step();
            }
            ASSERT_EQ_INT(fin, FIN_LENGTH);
            ASSERT_EQ_INT(ng, NG);
            for (int i = 0; i < NG; i++)
                ASSERT_EQ_INT(got[i], want[i]);
            batcher_free(b);
            gen_req_free(r);
        }
        llama_free(m);
    }
    tw_free(&w);
}

/* Stream A decodes; once it has its first token, prompt B (P tokens) is
 * submitted.  Counts A's tokens from then until B's first token. */
static int tokens_of_a_before_b(struct llama_model *m, int chunk, double ratio, int P, int *b_first)
{
    struct batcher_opts o = {2, 4, 4, (size_t)1 << 24, chunk, NULL, NULL, ratio};
    struct batcher *b = batcher_new(m, &o, on_notify, NULL);
    int pa[3] = {1, 7, 33};
    int *pb = malloc((size_t)P * sizeof(int));
    long_prompt(pb, P);
    struct gen_req *ra = mkreq(pa, 3, 4 * P, 0), *rb = NULL;
    assert_int_equal(batcher_submit(b, ra), 0);
    int a_tokens = 0, a_before = -1, done = 0;
    bool b_sent = false, b_got = false;
    while (done < 2) {
        struct gen_event *e = next_events(b);
        for (struct gen_event *x = e; x; x = x->next) {
            int id = (int)(intptr_t)x->req->user;
            if (id == 0 && x->token >= 0) a_tokens++;
            if (id == 1 && x->token >= 0 && !b_got) {
                b_got = true;
                *b_first = x->token;
                a_before = a_tokens;
                batcher_cancel(b, ra); /* A has shown what it had to */
            }
            if (x->finish) done++;
        }
        gen_event_free(e);
        /* the scheduler is paused in notify: B is admitted at its next step */
        if (!b_sent && a_tokens >= 1) {
            rb = mkreq(pb, P, 1, 1);
            assert_int_equal(batcher_submit(b, rb), 0);
            b_sent = true;
            a_tokens = 0;
        }
        release_step();
    }
    assert_true(b_got);
    batcher_free(b);
    gen_req_free(ra);
    gen_req_free(rb);
    free(pb);
    return a_before;
}

static void test_long_prompt_does_not_stall_streams(void **st)
{
    (void)st;
    struct tw w;
    tw_random(&w, 43, false);
    struct llama_model *m = tw_load(&w, GGML_TYPE_F32);
    enum { P = 96 };
    int want, b1, b2, b3, b4;
    int pb[P];
    long_prompt(pb, P);
    greedy_one_by_one(m, pb, P, 1, &want);
    /* chunks of 8: B takes 12 steps, A decodes one token in each (its token
     * of the 12th step comes before B's, decodes go first in a step) */
    int a8 = tokens_of_a_before_b(m, 8, 0, P, &b1);
    print_message("A's tokens while B's %d-token prompt was prefilled: chunk 8: %d\n", P, a8);
    ASSERT_GE_INT(a8, P / 8 - 1);
    /* a chunk that does not divide the prompt: ceil(96 / 20) = 5 steps */
    int a20 = tokens_of_a_before_b(m, 20, 0, P, &b2);
    ASSERT_GE_INT(a20, 4);
    /* without chunking B's whole prompt is one step: A waits for it */
    int aall = tokens_of_a_before_b(m, INT_MAX, 0, P, &b3);
    ASSERT_LE_INT(aall, 1);
    /* the adaptive budget with ratio 1 grants the floor while A decodes:
     * B's uncapped prompt takes P / PREFILL_MIN_TOKENS steps (and a decode-only
     * step after every PREFILL_REFRESH_STEPS - 1 of them) */
    int aad = tokens_of_a_before_b(m, INT_MAX, 1.0, P, &b4);
    ASSERT_GE_INT(aad, P / PREFILL_MIN_TOKENS - 1);
    /* and B's token is the same whichever way its prompt went in */
    ASSERT_EQ_INT(b1, want);
    ASSERT_EQ_INT(b2, want);
    ASSERT_EQ_INT(b3, want);
    ASSERT_EQ_INT(b4, want);
    llama_free(m);
    tw_free(&w);
}

static int budget(double t_decode, double t_token, double ratio, int n_decoding, int remaining,
                  int cap)
{
    struct prefill_budget_in in = {t_decode, t_token, ratio, n_decoding, remaining, cap, 0};
    return batcher_prefill_budget(&in);
}

static void test_prefill_budget(void **st)
{
    (void)st;
    /* nothing decodes: the whole cap (or what is left), whatever the averages */
    ASSERT_EQ_INT(budget(0.025, 0.002, 1.8, 0, 2048, 256), 256);
    ASSERT_EQ_INT(budget(0.025, 0.002, 1.8, 0, 100, 256), 100);
    ASSERT_EQ_INT(budget(0, 0, 1.8, 0, 2048, 256), 256);
    /* ratio 0: the fixed chunk even while decoding */
    ASSERT_EQ_INT(budget(0.025, 0.002, 0, 8, 2048, 256), 256);
    ASSERT_EQ_INT(budget(0.025, 0.002, 0, 8, 2048, INT_MAX), 2048);
    /* decoding: (1.8 - 1) * 25 ms / 2 ms = 10 tokens */
    ASSERT_EQ_INT(budget(0.025, 0.002, 1.8, 8, 2048, 256), 10);
    /* (3 - 1) * 25 / 2 = 25 */
    ASSERT_EQ_INT(budget(0.025, 0.002, 3, 1, 2048, 256), 25);
    /* rounds down: 0.8 * 50 / 3 = 13.3 -> 13 */
    ASSERT_EQ_INT(budget(0.050, 0.003, 1.8, 8, 2048, 256), 13);
    /* 0.8 * 25 / 7 = 2.9: the floor */
    ASSERT_EQ_INT(budget(0.025, 0.007, 1.8, 8, 2048, 256), PREFILL_MIN_TOKENS);
    /* 0.8 * 100 / 7 = 11.4 -> 11 */
    ASSERT_EQ_INT(budget(0.100, 0.007, 1.8, 8, 2048, 256), 11);
    /* costly tokens: the floor, so the prompt progresses */
    ASSERT_EQ_INT(budget(0.025, 0.5, 1.8, 8, 2048, 256), PREFILL_MIN_TOKENS);
    ASSERT_EQ_INT(budget(0.025, 0.002, 1.0, 8, 2048, 256), PREFILL_MIN_TOKENS);
    /* not measured yet: the floor */
    ASSERT_EQ_INT(budget(0, 0.002, 1.8, 8, 2048, 256), PREFILL_MIN_TOKENS);
    ASSERT_EQ_INT(budget(0.025, 0, 1.8, 8, 2048, 256), PREFILL_MIN_TOKENS);
    /* cheap tokens: the cap; no overflow on a tiny per-token time */
    ASSERT_EQ_INT(budget(0.025, 1e-6, 1.8, 8, 2048, 256), 256);
    ASSERT_EQ_INT(budget(0.025, 1e-300, 1.8, 8, 1 << 20, INT_MAX), 1 << 20);
    /* never more than is left, even under the floor */
    ASSERT_EQ_INT(budget(0.025, 0.002, 1.8, 8, 3, 256), 3);
    ASSERT_EQ_INT(budget(0.025, 0.5, 1.8, 8, PREFILL_MIN_TOKENS - 1, 256), PREFILL_MIN_TOKENS - 1);
    ASSERT_EQ_INT(budget(0.025, 0.002, 1.8, 8, 0, 256), 0);
    /* every PREFILL_REFRESH_STEPS-th step while decoding is decode-only (0), never without
     * decoders or with ratio 0 */
    struct prefill_budget_in in = {0.025, 0.002, 1.8, 8, 2048, 256, PREFILL_REFRESH_STEPS - 1};
    ASSERT_EQ_INT(batcher_prefill_budget(&in), 10);
    in.since_decode_only = PREFILL_REFRESH_STEPS;
    ASSERT_EQ_INT(batcher_prefill_budget(&in), 0);
    in.n_decoding = 0;
    ASSERT_EQ_INT(batcher_prefill_budget(&in), 256);
    in.n_decoding = 8;
    in.ratio = 0;
    ASSERT_EQ_INT(batcher_prefill_budget(&in), 256);
    /* a cap under the floor wins */
    ASSERT_EQ_INT(budget(0.025, 0.5, 1.8, 8, 2048, PREFILL_MIN_TOKENS - 1), PREFILL_MIN_TOKENS - 1);
}

static void test_prefill_ema(void **st)
{
    (void)st;
    struct prefill_ema e = {0, 0};
    /* a prompt-only step (nothing decoding): dt / tokens; first sample sets the average */
    batcher_prefill_ema_update(&e, 0.256, 128, 0);
    ASSERT_EQ_DBL(e.t_token, 0.002, 1e-12);
    ASSERT_EQ_DBL(e.t_decode, 0, 0);
    /* decode-only steps feed t_decode */
    batcher_prefill_ema_update(&e, 0.020, 0, 8);
    ASSERT_EQ_DBL(e.t_decode, 0.020, 1e-12);
    batcher_prefill_ema_update(&e, 0.024, 0, 8);
    ASSERT_EQ_DBL(e.t_decode, 0.020 + PREFILL_EMA_ALPHA * 0.004, 1e-12);
    ASSERT_EQ_DBL(e.t_token, 0.002, 1e-12);
    double td = e.t_decode;
    /* a mixed step: (dt - t_decode) / prompt tokens, t_decode unchanged */
    batcher_prefill_ema_update(&e, td + 0.040, 10, 8);
    ASSERT_EQ_DBL(e.t_token, 0.002 + PREFILL_EMA_ALPHA * (0.004 - 0.002), 1e-12);
    ASSERT_EQ_DBL(e.t_decode, td, 0);
    /* a mixed step faster than t_decode (noise): at least dt / 4 per step */
    struct prefill_ema f = {0.100, 0};
    batcher_prefill_ema_update(&f, 0.080, 10, 8);
    ASSERT_EQ_DBL(f.t_token, 0.080 / 4 / 10, 1e-12);
    /* a decode step that lost its CPU counts as PREFILL_EMA_CLAMP x t_decode */
    struct prefill_ema g = {0.020, 0.006};
    batcher_prefill_ema_update(&g, 0.500, 0, 8);
    ASSERT_EQ_DBL(g.t_decode, 0.020 + PREFILL_EMA_ALPHA * (PREFILL_EMA_CLAMP - 1) * 0.020, 1e-12);
    /* a cheap-looking mixed step lowers t_token by at most the clamp: (0.110 - t_decode) / 10
     * is under the dt / 4 floor (2.75 ms a token), itself under 6 ms / PREFILL_EMA_CLAMP */
    g.t_decode = 0.100;
    batcher_prefill_ema_update(&g, 0.110, 10, 8);
    ASSERT_EQ_DBL(g.t_token, 0.006 + PREFILL_EMA_ALPHA * (0.006 / PREFILL_EMA_CLAMP - 0.006),
                  1e-12);
    /* a costlier one raises it at the normal rate: (0.200 - 0.100) / 10 = 10 ms */
    double tt = g.t_token;
    batcher_prefill_ema_update(&g, 0.200, 10, 8);
    ASSERT_EQ_DBL(g.t_token, tt + PREFILL_EMA_ALPHA * (0.010 - tt), 1e-12);
    /* nothing ran, or a step of no time: no change */
    batcher_prefill_ema_update(&f, 0, 10, 8);
    batcher_prefill_ema_update(&f, 0.5, 0, 0);
    ASSERT_EQ_DBL(f.t_token, 0.002, 1e-12);
    ASSERT_EQ_DBL(f.t_decode, 0.100, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunked_prefill_same_tokens),
        cmocka_unit_test(test_long_prompt_does_not_stall_streams),
        cmocka_unit_test(test_prefill_budget),
        cmocka_unit_test(test_prefill_ema),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
