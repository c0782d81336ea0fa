/* The prefill GEMM (src/model/gemm.c): bitwise equal to the decode kernels of
 * quant.c for every weight type, token count, tile remainder, ISA path and
 * thread count; a long prompt prefilled through it gives the same logits and
 * greedy tokens as token-by-token decoding, and stays within the float64
 * reference's tolerances. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "model/gemm.h"
#include "model/llama.h"
#include "model/pool.h"
#include "../common/assert_ext.h"
#include "model_testutil.h"

/* A [rows][cols] matrix of `type` from random floats. */
static uint8_t *make_weights(uint32_t type, int rows, int cols, uint64_t *rng, size_t *row_bytes)
{
    *row_bytes = ggml_row_bytes(type, (uint64_t)cols);
    uint8_t *w = malloc(*row_bytes * (size_t)rows);
    float *f = tw_mat(cols, 1.0f, 0, rng);
    for (int r = 0; r < rows; r++) {
        for (int i = 0; i < cols; i++)
            f[i] = tiny_randf(rng) * (1.0f + (float)(r % 5));
        assert_int_equal(qk_quantize_row(type, f, w + (size_t)r * *row_bytes, cols), 0);
    }
    free(f);
    return w;
}

/* gemm_run on 3 matrices sharing x == quant.c's per-row kernels, bitwise. */
static bool is_kquant(uint32_t t)
{
    return t == GGML_TYPE_Q4_K || t == GGML_TYPE_Q5_K || t == GGML_TYPE_Q6_K;
}

static void check_gemm(uint32_t type, int cols, int T, int nthreads)
{
    uint64_t rng = 1234 + (uint64_t)type * 7 + (uint64_t)T;
    const int rows[3] = {GEMM_TILE_ROWS * 2 + 5, 7, GEMM_TILE_ROWS};
    size_t rb[3];
    uint8_t *w[3];
    float *want[3], *got[3];
    for (int i = 0; i < 3; i++) {
        w[i] = make_weights(type, rows[i], cols, &rng, &rb[i]);
        want[i] = calloc((size_t)T * rows[i], sizeof(float));
        got[i] = calloc((size_t)T * rows[i], sizeof(float));
    }
    float *x = tw_mat(T * cols, 2.0f, 0.1f, &rng);
    int nb = cols / QK8_0;
    int8_t *xq = malloc((size_t)T * cols);
    uint8_t *xu = malloc((size_t)T * cols);
    float *xd = malloc((size_t)T * nb * sizeof(float));
    int8_t *kq = malloc((size_t)T * cols);
    float *kd = malloc((size_t)T * (cols / 256 + 1) * sizeof(float));
    int16_t *kbs = malloc((size_t)T * (cols / 16) * sizeof(int16_t));
    float *scr = malloc((size_t)cols * sizeof(float));
    /* the decode path, one token at a time */
    for (int t = 0; t < T; t++) {
        qk_quantize_act_u(x + (size_t)t * cols, cols, xq + (size_t)t * cols, xu + (size_t)t * cols,
                          xd + (size_t)t * nb);
        if (is_kquant(type))
            qk_quantize_q8_k(x + (size_t)t * cols, cols, kq + (size_t)t * cols,
                             kd + (size_t)t * (cols / 256), kbs + (size_t)t * (cols / 16));
    }
    for (int i = 0; i < 3; i++)
        for (int t = 0; t < T; t++) {
            float *y = want[i] + (size_t)t * rows[i];
            if (type == GGML_TYPE_Q8_0)
                qk_matmul_q8q8_u(w[i], rb[i], cols, xq + (size_t)t * cols, xu + (size_t)t * cols,
                                 xd + (size_t)t * nb, 1, y, rows[i], 0, rows[i]);
            else if (type == GGML_TYPE_Q4_0)
                qk_matmul_q4_0(w[i], rb[i], cols, xq + (size_t)t * cols, xd + (size_t)t * nb, 1, y,
                               rows[i], 0, rows[i]);
            else if (is_kquant(type))
                qk_matmul_kq(type, w[i], rb[i], cols, kq + (size_t)t * cols,
                             kd + (size_t)t * (cols / 256), kbs + (size_t)t * (cols / 16), 1, y,
                             rows[i], 0, rows[i]);
            else
                qk_matmul(type, w[i], rb[i], cols, x + (size_t)t * cols, cols, 1,
                          want[i] + (size_t)t * rows[i], rows[i], 0, rows[i], scr);
        }
    memset(xq, 0, (size_t)T * cols);
    memset(xd, 0, (size_t)T * nb * sizeof(float));
    memset(kq, 0, (size_t)T * cols);
    struct pool *p = pool_new(nthreads);
    float **scratch = malloc((size_t)pool_size(p) * sizeof *scratch);
    for (int i = 0; i < pool_size(p); i++)
        scratch[i] = malloc((size_t)cols * sizeof(float));
    struct gemm_mat gm[3];
    for (int i = 0; i < 3; i++)
        gm[i] = (struct gemm_mat){type, w[i], rows[i], cols, rb[i], got[i], rows[i]};
    struct gemm_call gc = {gm, 3, x, T, xq, xu, xd, kq, kd, kbs, scratch};
    assert_int_equal(gemm_run(p, &gc), 0);
    for (int i = 0; i < 3; i++)
        assert_memory_equal(got[i], want[i], (size_t)T * rows[i] * sizeof(float));
    for (int i = 0; i < pool_size(p); i++)
        free(scratch[i]);
    free(scratch);
    pool_free(p);
    for (int i = 0; i < 3; i++) {
        free(w[i]);
        free(want[i]);
        free(got[i]);
    }
    free(x);
    free(xq);
    free(xu);
    free(xd);
    free(kq);
    free(kd);
    free(kbs);
    free(scr);
}

static void check_all_shapes(void)
{
    const uint32_t types[] = {GGML_TYPE_F32,  GGML_TYPE_F16,  GGML_TYPE_BF16, GGML_TYPE_Q8_0,
                              GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K};
    const int Ts[4] = {GEMM_MIN_TOKENS, 17, 70, 203};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
        for (int k = 0; k < 4; k++) {
            /* odd number of Q8 blocks; one K-quant block */
            check_gemm(types[ti], is_kquant(types[ti]) ? 256 : 96, Ts[k], 2);
            check_gemm(types[ti], 2048, Ts[k], 3); /* several token blocks */
        }
}

static void test_gemm_equals_decode_kernels(void **st)
{
    (void)st;
    print_message("simd %d vnni %d\n", qk_simd_active(), qk_vnni_active());
    check_all_shapes();
    gemm_allow_avx512(0); /* gemm.c's AVX2 path where the CPU has AVX-512 */
    check_all_shapes();
    gemm_allow_avx512(1);
    qk_allow_vnni(0); /* the AVX2 kernels where the CPU has AVX-VNNI */
    check_all_shapes();
    qk_allow_vnni(1);
    qk_force_portable(1);
    check_all_shapes();
    qk_force_portable(0);
}

/* The activation quantisers' SIMD paths give the portable outputs, bitwise
 * (ties in magnitude, zero blocks, exact halves included). */
static void test_quantizers_simd_equal_portable(void **st)
{
    (void)st;
    enum { N = 2048 };
    uint64_t rng = 99;
    float *x = tw_mat(N, 3.0f, 0, &rng);
    for (int i = 0; i < 256; i++) /* a zero block of 256 (and so of 32) */
        x[256 + i] = 0;
    x[600] = 2.5f; /* equal magnitudes of both signs: the first one's sign wins */
    x[601] = -2.5f;
    x[900] = -2.75f;
    x[1000] = 2.75f;
    int8_t q[2][N], k[2][N];
    uint8_t u[2][N];
    float d[2][N / 32], kd[2][N / 256];
    int16_t bs[2][N / 16];
    for (int pth = 0; pth < 2; pth++) {
        qk_force_portable(pth);
        qk_quantize_act_u(x, N, q[pth], u[pth], d[pth]);
        qk_quantize_q8_k(x, N, k[pth], kd[pth], bs[pth]);
    }
    qk_force_portable(0);
    assert_memory_equal(q[0], q[1], sizeof q[0]);
    assert_memory_equal(u[0], u[1], sizeof u[0]);
    assert_memory_equal(d[0], d[1], sizeof d[0]);
    assert_memory_equal(k[0], k[1], sizeof k[0]);
    assert_memory_equal(kd[0], kd[1], sizeof kd[0]);
    assert_memory_equal(bs[0], bs[1], sizeof bs[0]);
    free(x);
}

static void test_gemm_rejects(void **st)
{
    (void)st;
    struct pool *p = pool_new(1);
    float y[4], x[64] = {0};
    uint8_t w[256] = {0};
    struct gemm_mat gm[2] = {{GGML_TYPE_F32, w, 1, 64, 256, y, 1}, {99, w, 1, 64, 256, y, 1}};
    struct gemm_call gc = {gm, 2, x, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    assert_false(gemm_supported(99));
    assert_int_equal(gemm_run(p, &gc), -1); /* unknown type: caller falls back */
    gm[1].type = GGML_TYPE_Q4_K;
    assert_int_equal(gemm_run(p, &gc), -1); /* K-quant rows need a multiple of 256 */
    gm[1].type = GGML_TYPE_F32;
    gm[1].cols = 32;
    assert_int_equal(gemm_run(p, &gc), -1); /* cols differ */
    gc.n_mats = 0;
    assert_int_equal(gemm_run(p, &gc), -1);
    pool_free(p);
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

enum { NP = 45, NG = 8 };

/* Prompt of NP tokens in chunks of `chunk` tokens (NP: one batch through the
 * GEMM, NP >= GEMM_MIN_TOKENS; 1: token by token through the decode kernels;
 * chunks below GEMM_MIN_TOKENS take the decode kernels, larger ones the
 * GEMM), then NG greedy tokens; all logits rows of the prompt in lg (NP x
 * nv), the generated ids in gen. */
static void prefill_and_decode(struct llama_model *m, const int *prompt, int chunk, float *lg,
                               int *gen)
{
    int nv = m->hp.n_vocab;
    struct llama_ctx *c = llama_ctx_new(m, 2);
    struct llama_kv kv;
    assert_int_equal(llama_kv_init(&kv, m, NP + NG), 0);
    for (int i = 0; i < NP; i += chunk) {
        int n = NP - i < chunk ? NP - i : chunk;
        struct llama_seq_in s = {&kv, prompt + i, n, true, true, lg + (size_t)i * nv};
        assert_int_equal(llama_forward(c, &s, 1), 0);
    }
    ASSERT_EQ_INT(kv.n, NP);
    float *row = malloc((size_t)nv * sizeof(float));
    memcpy(row, lg + (size_t)(NP - 1) * nv, (size_t)nv * sizeof(float));
    for (int i = 0; i < NG; i++) {
        gen[i] = tw_argmax(row, nv);
        struct llama_seq_in s = {&kv, &gen[i], 1, false, true, row};
        assert_int_equal(llama_forward(c, &s, 1), 0);
    }
    free(row);
    llama_kv_free(&kv);
    llama_ctx_free(c);
}

/* Batched (one step), chunked (chunks of 7 and 20, which do not divide NP,
 * and of 16 = GEMM_MIN_TOKENS) and token-by-token prefill give bitwise the
 * same logits and the same greedy tokens, for every weight type and a
 * Q4_K_M-like mix; and the logits stay within the stated tolerances of the
 * float64 reference on the stored weights: 1e-5 with float activations (as
 * test_llama.c / test_quant.c), 6e-2 with 8-bit activations (test_llama.c's
 * Q8_0 bound; over this 45-token prompt Q6_K reaches 0.054, above the 5e-2
 * those files check on 12 tokens). */
static void test_prefill_batched_chunked_single_agree(void **st)
{
    (void)st;
    int prompt[NP];
    for (int i = 0; i < NP; i++)
        prompt[i] = (i * 37 + 11) % 50;
    static const struct {
        struct tw_types ty;
        bool big; /* 256/512 dims (K-quant blocks) instead of 64/96 */
        double tol;
    } cases[] = {
        {{GGML_TYPE_F32, 0, false}, false, 1e-5},
        {{GGML_TYPE_F16, 0, false}, false, 1e-5},
        {{GGML_TYPE_BF16, 0, false}, false, 1e-5},
        {{GGML_TYPE_Q8_0, 0, false}, false, 6e-2},
        {{GGML_TYPE_Q4_0, 0, false}, false, 6e-2},
        {{GGML_TYPE_Q5_K, 0, false}, true, 6e-2},
        {{GGML_TYPE_Q6_K, 0, false}, true, 6e-2},
        {{GGML_TYPE_Q4_K, GGML_TYPE_Q6_K, true}, true, 6e-2},
        {{GGML_TYPE_F16, 0, false}, true, 1e-5}, /* head_dim 64: AVX-512 attention */
        {{GGML_TYPE_Q8_0, 0, false}, true, 6e-2},
    };
    const int chunks[] = {7, 16, 20, 1};
    /* pass 1: the AVX2 GEMM and attention kernels where the CPU has AVX-512 */
    for (int pass = 0; pass < 2; pass++)
        for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
            gemm_allow_avx512(!pass);
            qk_allow_avx512(!pass);
            const struct tw_types *ty = &cases[ci].ty;
            struct tw w;
            tw_random_dims(&w, 77 + ty->base + 5 * ty->km, false, cases[ci].big ? 256 : 64,
                           cases[ci].big ? 512 : 96, false);
            struct llama_model *m = tw_load_mixed(&w, ty);
            int nv = m->hp.n_vocab;
            float *a = malloc((size_t)NP * nv * sizeof(float)), *b = malloc((size_t)NP * nv * 4);
            int ga[NG], gb[NG];
            prefill_and_decode(m, prompt, NP, a, ga);
            for (size_t k = 0; k < sizeof chunks / sizeof chunks[0]; k++) {
                memset(b, 0, (size_t)NP * nv * 4);
                prefill_and_decode(m, prompt, chunks[k], b, gb);
                assert_memory_equal(ga, gb, sizeof ga);
                assert_memory_equal(a, b, (size_t)NP * nv * sizeof(float)); /* bitwise */
            }
            /* and against the float64 reference on the stored weights */
            tw_roundtrip_mixed(&w, ty);
            double *ref = malloc((size_t)NP * nv * sizeof(double));
            ref_forward(&w, prompt, NP, ref);
            double e = rel_err(a, ref, (size_t)NP * nv);
            print_message("%s%s: prefill rel err vs reference %.3g\n", ggml_type_name(ty->base),
                          ty->km ? "_M" : "", e);
            ASSERT_LT_DBL(e, cases[ci].tol);
            free(ref);
            free(a);
            free(b);
            llama_free(m);
            tw_free(&w);
        }
    gemm_allow_avx512(1);
    qk_allow_avx512(1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_equals_decode_kernels),
        cmocka_unit_test(test_gemm_rejects),
        cmocka_unit_test(test_quantizers_simd_equal_portable),
        cmocka_unit_test(test_prefill_batched_chunked_single_agree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
