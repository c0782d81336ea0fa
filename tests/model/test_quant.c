/* Tensor types beyond F32/F16/Q8_0: BF16, Q4_0, Q4_K, Q5_K, Q6_K.
 *  - bit layouts: hand-built blocks with known values, decoded here straight
 *    from ggml's layout description, against qk_dequant_row (both paths);
 *  - quantisers: llama.cpp's own acceptance bounds (test-quantize-fns:
 *    rmse/n < 0.002 and dot-product error/n < 0.02 on 0.1 + 2 cos(i));
 *  - dot kernels: AVX2 == portable bitwise, and == exact integer arithmetic
 *    on the dequantised weights and activations;
 *  - forward passes of generated files of every type (and a Q4_K_M-like mix,
 *    and qwen2) against the float64 reference on the stored weights;
 *  - unsupported types and architectures: clear errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "model/llama.h"
#include "../common/assert_ext.h"
#include "model_testutil.h"

static const uint32_t QTYPES[] = {GGML_TYPE_BF16, GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K,
                                  GGML_TYPE_Q6_K};
#define NQ ((int)(sizeof QTYPES / sizeof QTYPES[0]))

/* dequantise with both paths; they must agree bitwise */
static void deq_both(uint32_t type, const void *blk, float *out, int n)
{
    float *tmp = malloc((size_t)n * sizeof(float));
    qk_force_portable(1);
    qk_dequant_row(type, blk, out, n);
    qk_force_portable(0);
    qk_dequant_row(type, blk, tmp, n);
    assert_memory_equal(out, tmp, (size_t)n * sizeof(float));
    free(tmp);
}

static void put16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, 2);
}

static void test_layout_q4_0_bf16(void **st)
{
    (void)st;
    uint8_t b[18];
    put16(b, 0x3800); /* f16 0.5 */
    for (int j = 0; j < 16; j++)
        b[2 + j] = (uint8_t)(j | ((15 - j) << 4));
    float y[32];
    deq_both(GGML_TYPE_Q4_0, b, y, 32);
    for (int j = 0; j < 16; j++) {
        ASSERT_EQ_DBL(y[j], 0.5f * (float)(j - 8), 0);
        ASSERT_EQ_DBL(y[j + 16], 0.5f * (float)(7 - j), 0);
    }
    /* BF16: top half of the f32; ties round to even; NaN stays NaN */
    uint16_t h[4] = {0x3F80, 0xC020, 0x0001, 0x7F80};
    float f[4];
    deq_both(GGML_TYPE_BF16, h, f, 4);
    ASSERT_EQ_DBL(f[0], 1.0f, 0);
    ASSERT_EQ_DBL(f[1], -2.5f, 0);
    ASSERT_GT_DBL(f[2], 0); /* bf16 0x0001: a subnormal */
    ASSERT_LT_DBL(f[2], 1e-38f);
    assert_true(isinf(f[3]));
    assert_int_equal(qk_f32_to_bf16(1.0f + 1.0f / 256), 0x3F80);         /* tie -> even */
    assert_int_equal(qk_f32_to_bf16(1.0f + 3.0f / 256), 0x3F82);         /* tie -> even */
    assert_int_equal(qk_f32_to_bf16(1.0f + 1.0f / 256 + 1e-6f), 0x3F81); /* above tie */
    assert_true(isnan(qk_bf16_to_f32(qk_f32_to_bf16(NAN))));
}

/* 6-bit scales/mins of Q4_K/Q5_K packed by hand as ggml lays them out:
 * bytes 0-3: sc[0..3] low 6 bits, top 2 bits = sc[4..7] >> 4;
 * bytes 4-7: mn[0..3] low 6 bits, top 2 bits = mn[4..7] >> 4;
 * bytes 8-11: sc[4..7] & 15 | (mn[4..7] & 15) << 4. */
static const uint8_t SC[8] = {1, 2, 3, 4, 33, 45, 63, 17}, MN[8] = {0, 5, 10, 63, 1, 2, 40, 31};

static void pack_scales(uint8_t *s)
{
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)(SC[j] | ((SC[j + 4] >> 4) << 6));
        s[j + 4] = (uint8_t)(MN[j] | ((MN[j + 4] >> 4) << 6));
        s[j + 8] = (uint8_t)((SC[j + 4] & 15) | ((MN[j + 4] & 15) << 4));
    }
}

static void test_layout_q4_k_q5_k(void **st)
{
    (void)st;
    for (int five = 0; five < 2; five++) {
        uint8_t b[176];
        put16(b, 0x3C00);     /* d = 1 */
        put16(b + 2, 0x3800); /* dmin = 0.5 */
        pack_scales(b + 4);
        uint8_t sc[8], mn[8];
        qk_kscales(b + 4, sc, mn);
        assert_memory_equal(sc, SC, 8);
        assert_memory_equal(mn, MN, 8);
        uint8_t *qh = b + 16, *qs = b + (five ? 48 : 16);
        if (five)
            for (int i = 0; i < 32; i++)
                qh[i] = (uint8_t)(i * 37 + 5);
        for (int i = 0; i < 128; i++)
            qs[i] = (uint8_t)(i * 7 + 3);
        float y[256];
        deq_both(five ? GGML_TYPE_Q5_K : GGML_TYPE_Q4_K, b, y, 256);
        for (int e = 0; e < 256; e++) {
            int c = e / 64, w = e % 64, up = w >= 32, l = w % 32, sub = 2 * c + up;
            int q = up ? qs[32 * c + l] >> 4 : qs[32 * c + l] & 15;
            if (five) q += ((qh[l] >> sub) & 1) * 16;
            float want = 1.0f * (float)SC[sub] * (float)q - 0.5f * (float)MN[sub];
            if (y[e] != want)
                fail_msg("%s elem %d: %g != %g", five ? "Q5_K" : "Q4_K", e, y[e], want);
        }
    }
}

static void test_layout_q6_k(void **st)
{
    (void)st;
    uint8_t b[210];
    for (int i = 0; i < 128; i++)
        b[i] = (uint8_t)(i * 5 + 1);
    for (int i = 0; i < 64; i++)
        b[128 + i] = (uint8_t)(i * 11 + 7);
    for (int i = 0; i < 16; i++)
        b[192 + i] = (uint8_t)(int8_t)((i - 8) * 9);
    put16(b + 208, 0x3400); /* d = 0.25 */
    float y[256];
    deq_both(GGML_TYPE_Q6_K, b, y, 256);
    for (int e = 0; e < 256; e++) {
        int h = e / 128, r = e % 128, k = r / 32, l = r % 32;
        int lo = b[64 * h + l + (k & 1) * 32];
        lo = k < 2 ? lo & 15 : lo >> 4;
        int hi = (b[128 + 32 * h + l] >> (2 * k)) & 3;
        float want = 0.25f * (float)((e / 16 - 8) * 9) * (float)((lo | hi << 4) - 32);
        if (y[e] != want) fail_msg("Q6_K elem %d: %g != %g", e, y[e], want);
    }
}

/* llama.cpp's tests/test-quantize-fns.cpp bounds, same synthetic data */
static void test_quantizer_error_bounds(void **st)
{
    (void)st;
    enum { N = 32 * 128 };
    float *x = malloc(N * sizeof(float)), *y = malloc(N * sizeof(float)),
          *z = malloc(N * sizeof(float));
    uint8_t *q = malloc(N * 4);
    for (int i = 0; i < N; i++) {
        x[i] = 0.1f + 2.0f * cosf((float)i);
        z[i] = 0.1f + 2.0f * cosf((float)i + 1.0f);
    }
    int8_t *zq = malloc(N);
    float *zd = malloc(N / 32 * sizeof(float));
    int16_t *zb = malloc(N / 16 * sizeof(int16_t));
    double ref = 0;
    for (int i = 0; i < N; i++)
        ref += (double)x[i] * z[i];
    for (int k = 0; k < NQ + 1; k++) {
        uint32_t type = k < NQ ? QTYPES[k] : GGML_TYPE_Q8_0;
        assert_int_equal(qk_quantize_row(type, x, q, N), 0);
        qk_dequant_row(type, q, y, N);
        double s = 0;
        for (int i = 0; i < N; i++)
            s += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
        double rmse = sqrt(s) / N;
        float dot = 0;
        if (type == GGML_TYPE_Q4_0 || type == GGML_TYPE_Q8_0) {
            qk_quantize_act(z, N, zq, zd);
            if (type == GGML_TYPE_Q4_0)
                qk_matmul_q4_0(q, ggml_row_bytes(type, N), N, zq, zd, 1, &dot, 1, 0, 1);
            else
                qk_matmul_q8q8(q, ggml_row_bytes(type, N), N, zq, zd, 1, &dot, 1, 0, 1);
        } else if (type == GGML_TYPE_BF16) {
            float scratch[N];
            qk_matmul(type, q, ggml_row_bytes(type, N), N, z, N, 1, &dot, 1, 0, 1, scratch);
        } else {
            qk_quantize_q8_k(z, N, zq, zd, zb);
            qk_matmul_kq(type, q, ggml_row_bytes(type, N), N, zq, zd, zb, 1, &dot, 1, 0, 1);
        }
        double dot_err = fabs((double)dot - ref) / N;
        print_message("%-5s rmse/n %.3g (llama.cpp bound 0.002), dot err/n %.3g (bound 0.02)\n",
                      ggml_type_name(type), rmse, dot_err);
        ASSERT_LT_DBL(rmse, 0.002);
        ASSERT_LT_DBL(dot_err, 0.02);
    }
    /* and the search in Q4_K/Q5_K/Q6_K beats a plain min/max rounding of the
     * same data by a clear margin (what the reference scheme is for):
     * Q4_K's rms error stays under 0.3 of one plain 4-bit step per 32 */
    assert_int_equal(qk_quantize_row(GGML_TYPE_Q4_K, x, q, N), 0);
    qk_dequant_row(GGML_TYPE_Q4_K, q, y, N);
    double se = 0, step = 0;
    for (int b = 0; b < N / 32; b++) {
        float mn = x[32 * b], mx = x[32 * b];
        for (int j = 0; j < 32; j++) {
            mn = fminf(mn, x[32 * b + j]);
            mx = fmaxf(mx, x[32 * b + j]);
            se += ((double)x[32 * b + j] - y[32 * b + j]) * ((double)x[32 * b + j] - y[32 * b + j]);
        }
        step += (mx - mn) / 15.0;
    }
    ASSERT_LT_DBL(sqrt(se / N), 0.3 * step / (N / 32));
    free(x);
    free(y);
    free(z);
    free(q);
    free(zq);
    free(zd);
    free(zb);
}

/* K-quant and Q4_0 dots: SIMD == portable bitwise; both == the exact value
 * of sum(dequantised w * dequantised x) up to float rounding of the sums */
static void test_dot_kernels(void **st)
{
    (void)st;
    enum { R = 19, N = 768, T = 5 };
    uint64_t rng = 77;
    float *w = malloc(sizeof(float) * R * N), *x = malloc(sizeof(float) * T * N);
    for (int i = 0; i < R * N; i++)
        w[i] = tiny_randf(&rng) * (1 + (i % 7));
    for (int i = 0; i < T * N; i++)
        x[i] = 3 * tiny_randf(&rng);
    uint32_t types[] = {GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K};
    int8_t *xq = malloc(T * N);
    float *xd = malloc(T * N / 32 * sizeof(float));
    int16_t *bs = malloc(T * N / 16 * sizeof(int16_t));
    float *wd = malloc(sizeof(float) * N);
    for (int k = 0; k < 4; k++) {
        uint32_t type = types[k];
        size_t rb = ggml_row_bytes(type, N);
        uint8_t *wq = malloc(rb * R);
        for (int r = 0; r < R; r++)
            assert_int_equal(qk_quantize_row(type, w + (size_t)r * N, wq + rb * r, N), 0);
        bool k4 = type == GGML_TYPE_Q4_0;
        for (int t = 0; t < T; t++) {
            if (k4)
                qk_quantize_act(x + t * N, N, xq + t * N, xd + t * N / 32);
            else
                qk_quantize_q8_k(x + t * N, N, xq + t * N, xd + t * N / 256, bs + t * N / 16);
        }
        float y[2][T * R];
        for (int pass = 0; pass < 2; pass++) {
            qk_force_portable(pass);
            for (int half = 0; half < 2; half++) { /* rows in two calls, as the pool does */
                int r0 = half ? 8 : 0, r1 = half ? R : 8;
                if (k4)
                    qk_matmul_q4_0(wq, rb, N, xq, xd, T, y[pass], R, r0, r1);
                else
                    qk_matmul_kq(type, wq, rb, N, xq, xd, bs, T, y[pass], R, r0, r1);
            }
        }
        qk_force_portable(0);
        assert_memory_equal(y[0], y[1], sizeof y[0]);
        /* one token alone gives the same bits as inside the 5-token call */
        float y1;
        if (k4)
            qk_matmul_q4_0(wq + rb * 3, rb, N, xq + 2 * N, xd + 2 * N / 32, 1, &y1, 1, 0, 1);
        else
            qk_matmul_kq(type, wq + rb * 3, rb, N, xq + 2 * N, xd + 2 * N / 256, bs + 2 * N / 16, 1,
                         &y1, 1, 0, 1);
        assert_memory_equal(&y1, &y[0][2 * R + 3], sizeof y1);
        for (int r = 0; r < R; r++) {
            qk_dequant_row(type, wq + rb * r, wd, N);
            for (int t = 0; t < T; t++) {
                double want = 0, mag = 0;
                for (int i = 0; i < N; i++) {
                    double xv =
                        (double)xq[t * N + i] * xd[t * N / (k4 ? 32 : 256) + i / (k4 ? 32 : 256)];
                    want += (double)wd[i] * xv;
                    mag += fabs((double)wd[i] * xv);
                }
                double got = y[0][t * R + r];
                if (fabs(got - want) > 2e-6 * mag + 1e-6)
                    fail_msg("%s r %d t %d: %.9g vs %.9g (mag %g)", ggml_type_name(type), r, t, got,
                             want, mag);
            }
        }
        free(wq);
    }
    print_message("K-quant/Q4_0 dots: simd %d\n", qk_simd_active());
    free(w);
    free(x);
    free(xq);
    free(xd);
    free(bs);
    free(wd);
}

static struct llama_model *load_buf(struct sbuf *b, char *err, size_t errn)
{
    size_t n;
    char *data = sbuf_steal(b, &n);
    struct gguf_file *f;
    if (gguf_open_mem(data, n, true, &f, err, errn)) return NULL;
    struct llama_model *m;
    if (llama_load(&m, f, err, errn)) return NULL;
    return m;
}

static const int TOKS[] = {1, 7, 33, 12, 49, 3, 3, 20, 41, 5, 16, 28};
#define NT ((int)(sizeof TOKS / sizeof TOKS[0]))

static float *run_all(struct llama_model *m, int threads)
{
    struct llama_ctx *c = llama_ctx_new(m, threads);
    struct llama_kv kv;
    assert_int_equal(llama_kv_init(&kv, m, NT), 0);
    float *lg = malloc((size_t)NT * m->hp.n_vocab * sizeof(float));
    struct llama_seq_in s = {&kv, TOKS, NT, true, true, lg};
    assert_int_equal(llama_forward(c, &s, 1), 0);
    llama_kv_free(&kv);
    llama_ctx_free(c);
    return lg;
}

static double rel_err(const float *a, const double *b, size_t n)
{
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        md = fmax(md, fabs((double)a[i] - b[i]));
        mb = fmax(mb, fabs(b[i]));
    }
    return md / mb;
}

/* Forward pass of a generated file against the float64 reference on the
 * stored (dequantised) weights: within tol_q (activations are quantised to 8
 * bits on the way, as in llama.cpp); against the reference on the original
 * F32 weights, within tol_q of what the weights' own quantisation does to
 * that exact forward pass (random 2-layer nets amplify 4-bit weight noise a
 * lot: ~0.2-0.4 for Q4 here, see the printed numbers); SIMD vs portable
 * within 1e-3 (one rounding flip of an 8-bit activation); 1 vs 3 threads
 * bitwise. */
static void check_file(const struct tw_types *ty, bool qwen2, bool tied, double tol_q)
{
    struct tw w;
    tw_random_dims(&w, 1000 + ty->base + 7 * ty->km + 3 * qwen2, tied, 256, 512, qwen2);
    double *ref32 = malloc((size_t)NT * w.nv * sizeof(double));
    ref_forward(&w, TOKS, NT, ref32);
    struct sbuf b = SBUF_INIT;
    tw_write_mixed(&w, ty, NULL, &b, NULL);
    char err[256];
    struct llama_model *m = load_buf(&b, err, sizeof err);
    if (!m) fail_msg("load: %s", err);
    if (ty->km) { /* the mix is really there */
        assert_int_equal(m->output.type, GGML_TYPE_Q6_K);
        assert_int_equal(m->layers[1].wv.type, GGML_TYPE_Q6_K); /* use_more_bits(1, 2) */
        assert_int_equal(m->layers[0].wv.type, ty->base);
        assert_int_equal(m->layers[0].wq.type, ty->base);
        assert_int_equal(m->tok_embd.type, ty->base);
    }
    float *lg = run_all(m, 1), *lg3 = run_all(m, 3);
    assert_memory_equal(lg, lg3, (size_t)NT * w.nv * sizeof(float));
    qk_force_portable(1);
    float *lgp = run_all(m, 2);
    qk_force_portable(0);
    double dp = 0, mx = 0;
    for (int i = 0; i < NT * w.nv; i++) {
        dp = fmax(dp, fabs((double)lg[i] - lgp[i]));
        mx = fmax(mx, fabs((double)lg[i]));
    }
    dp /= mx;
    double e32 = rel_err(lg, ref32, (size_t)NT * w.nv);
    tw_roundtrip_mixed(&w, ty);
    double *refq = malloc((size_t)NT * w.nv * sizeof(double));
    ref_forward(&w, TOKS, NT, refq);
    double eq = rel_err(lg, refq, (size_t)NT * w.nv);
    /* what the weights' own quantisation does to the exact forward pass */
    float *rq = malloc((size_t)NT * w.nv * sizeof(float));
    for (int i = 0; i < NT * w.nv; i++)
        rq[i] = (float)refq[i];
    double ew = rel_err(rq, ref32, (size_t)NT * w.nv);
    free(rq);
    print_message("%s%s%s: rel err vs stored-weight ref %.3g; vs F32 ref %.3g (weights' own "
                  "quantisation %.3g); simd vs portable %.2g\n",
                  qwen2 ? "qwen2 " : "", ggml_type_name(ty->base), ty->km ? "_M mix" : "", eq, e32,
                  ew, dp);
    ASSERT_LT_DBL(eq, tol_q);
    ASSERT_LT_DBL(e32, ew + tol_q);
    ASSERT_LT_DBL(dp, 1e-3); /* at most a rounding flip in the 8-bit activations */
    free(lg);
    free(lg3);
    free(lgp);
    free(ref32);
    free(refq);
    llama_free(m);
    tw_free(&w);
}

/* Stated tolerances (max |error| / max |logit|): BF16 kernels add no error
 * (1e-5 of the stored-weight reference); with 8-bit activations (Q4_0,
 * K-quants) 5% of the stored-weight reference, as for Q8_0. */
static void test_forward_types(void **st)
{
    (void)st;
    struct tw_types bf = {GGML_TYPE_BF16, 0, false}, q40 = {GGML_TYPE_Q4_0, 0, false},
                    q4k = {GGML_TYPE_Q4_K, 0, false}, q5k = {GGML_TYPE_Q5_K, 0, false},
                    q6k = {GGML_TYPE_Q6_K, 0, false};
    check_file(&bf, false, false, 1e-5);
    check_file(&q40, false, false, 5e-2);
    check_file(&q4k, false, true, 5e-2);
    check_file(&q5k, false, false, 5e-2);
    check_file(&q6k, false, false, 5e-2);
}

static void test_forward_mixed(void **st)
{
    (void)st;
    struct tw_types km4 = {GGML_TYPE_Q4_K, GGML_TYPE_Q6_K, true},
                    km5 = {GGML_TYPE_Q5_K, GGML_TYPE_Q6_K, true};
    check_file(&km4, false, false, 5e-2);
    check_file(&km5, false, false, 5e-2);
}

static void test_qwen2(void **st)
{
    (void)st;
    struct tw_types f32 = {GGML_TYPE_F32, 0, false}, km4 = {GGML_TYPE_Q4_K, GGML_TYPE_Q6_K, true};
    check_file(&f32, true, false, 1e-5);
    check_file(&f32, true, true, 1e-5);
    check_file(&km4, true, false, 5e-2);
    /* the reference notices the NEOX layout and the biases: a qwen2 file
     * read as llama (adjacent pairs, biases ignored) is far off */
    struct tw w;
    tw_random_dims(&w, 5, false, 256, 512, true);
    double *ref = malloc((size_t)NT * w.nv * sizeof(double));
    ref_forward(&w, TOKS, NT, ref);
    w.qwen2 = false;
    struct sbuf b = SBUF_INIT;
    tw_write(&w, GGML_TYPE_F32, &b, NULL);
    char err[256];
    struct llama_model *m = load_buf(&b, err, sizeof err);
    assert_non_null(m);
    float *lg = run_all(m, 2);
    ASSERT_GT_DBL(rel_err(lg, ref, (size_t)NT * w.nv), 1e-3);
    free(lg);
    llama_free(m);
    /* a qwen2 file without its biases is refused, naming the tensor */
    w.qwen2 = true;
    b = (struct sbuf)SBUF_INIT;
    tw_write(&w, GGML_TYPE_F32, &b, "blk.1.attn_k.bias");
    assert_null(load_buf(&b, err, sizeof err));
    if (!strstr(err, "blk.1.attn_k.bias")) fail_msg("error '%s'", err);
    free(ref);
    tw_free(&w);
}

static void test_unsupported(void **st)
{
    (void)st;
    struct tw w;
    tw_random_dims(&w, 3, false, 256, 512, false);
    char err[256];
    /* other architectures: named, with the supported list */
    struct tw_types f32 = {GGML_TYPE_F32, 0, false};
    struct sbuf b = SBUF_INIT;
    tw_write_mixed(&w, &f32, "gemma", &b, NULL);
    assert_null(load_buf(&b, err, sizeof err));
    if (!strstr(err, "\"gemma\"") || !strstr(err, "llama, qwen2")) fail_msg("error '%s'", err);
    /* Q2_K, Q3_K, IQ2_XXS, IQ4_XS tensors: the tensor and the type named */
    const uint32_t bad[] = {10, 11, 16, 23};
    const char *names[] = {"Q2_K", "Q3_K", "IQ2_XXS", "IQ4_XS"};
    for (int i = 0; i < 4; i++) {
        struct tw_types mix = {GGML_TYPE_Q4_K, bad[i], true}; /* output + some attn_v/ffn_down */
        b = (struct sbuf)SBUF_INIT;
        tw_write_mixed(&w, &mix, NULL, &b, NULL);
        assert_null(load_buf(&b, err, sizeof err));
        if (!strstr(err, "tensor 'output.weight' has type") || !strstr(err, names[i]) ||
            !strstr(err, "not support"))
            fail_msg("error '%s'", err);
    }
    tw_free(&w);
}

/* init-tiny's generator writes every type and mix, and qwen2; they load and run */
static void test_tiny_types(void **st)
{
    (void)st;
    const char *types[] = {"f32",  "f16",  "bf16", "q8_0",   "q4_0",
                           "q4_k", "q5_k", "q6_k", "q4_k_m", "q5_k_m"};
    for (int i = 0; i < 10; i++)
        for (int qw = 0; qw < 2; qw++) {
            struct tiny_opts o;
            tiny_default_opts(&o);
            assert_int_equal(tiny_parse_type(types[i], &o), 0);
            o.n_embd = 256;
            o.n_ff = 512;
            o.n_layer = 2;
            o.qwen2 = qw;
            struct sbuf b = SBUF_INIT;
            assert_int_equal(tiny_build(&o, &b), 0);
            char err[256];
            struct llama_model *m = load_buf(&b, err, sizeof err);
            if (!m) fail_msg("%s: %s", types[i], err);
            assert_string_equal(m->arch, qw ? "qwen2" : "llama");
            float *lg = run_all(m, 2);
            for (int k = 0; k < NT * m->hp.n_vocab; k++)
                assert_true(isfinite(lg[k]));
            free(lg);
            llama_free(m);
        }
    struct tiny_opts o;
    tiny_default_opts(&o);
    assert_int_equal(tiny_parse_type("q2_k", &o), -1);
    assert_int_equal(tiny_parse_type("q4_k", &o), 0);
    struct sbuf b = SBUF_INIT;
    assert_int_equal(tiny_build(&o, &b), -1); /* default dim 128: not a K-quant block */
    sbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout_q4_0_bf16), cmocka_unit_test(test_layout_q4_k_q5_k),
        cmocka_unit_test(test_layout_q6_k),      cmocka_unit_test(test_quantizer_error_bounds),
        cmocka_unit_test(test_dot_kernels),      cmocka_unit_test(test_forward_types),
        cmocka_unit_test(test_forward_mixed),    cmocka_unit_test(test_qwen2),
        cmocka_unit_test(test_unsupported),      cmocka_unit_test(test_tiny_types),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
