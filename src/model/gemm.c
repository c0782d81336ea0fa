/* Tiled prefill matmul; see gemm.h. */
#include "gemm.h"

#include <stdatomic.h>
#include <string.h>

#include "gguf.h"
#include "quant.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define GEMM_X86 1
#else
#define GEMM_X86 0
#endif

/* Activation bytes per token block: the block is re-read from L1/L2 once per
 * weight row of the tile (chosen by measurement, see docs/benchmarks.md). */
#ifndef GEMM_BLOCK_BYTES
#define GEMM_BLOCK_BYTES (48 * 1024)
#endif

/* Longest row the AVX2 Q8_0 kernel takes (its per-row tables live on the
 * stack); longer rows use quant.c's kernel. */
#define GEMM_MAX_COLS 16384

#if GEMM_X86
#define GEMM_TARGET __attribute__((target("avx2,fma,f16c")))

GEMM_TARGET static inline float hsum8(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    __m128 s = _mm_add_ps(lo, hi);
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* One block b of a 1 row x TT token tile, into accumulator set ACC.  Exactly
 * the operations of quant.c's Q8Q8_TILE with DOT_AVX2 for each (row, token,
 * block): sx = sign(x, w); dot = madd(maddubs(|w|, sx), 1) (exact int32);
 * acc = fma(dw * dx, float(dot), acc); so results are bitwise the same. */
#define Q8_STEP(TT, bb, ACC)                                                                       \
    do {                                                                                           \
        __m256i w_ =                                                                               \
            _mm256_loadu_si256((const __m256i *)(row + (size_t)(bb)*Q8_0_BLOCK_BYTES + 2));        \
        __m256i aw_ = _mm256_loadu_si256((const __m256i *)(aw + 32 * (bb)));                       \
        __m256 dw_ = _mm256_broadcast_ss(dw + (bb));                                               \
        for (int tt = 0; tt < TT; tt++) {                                                          \
            __m256i sx_ = _mm256_sign_epi8(                                                        \
                _mm256_loadu_si256((const __m256i *)(xq + (size_t)(t + tt) * n + 32 * (bb))), w_); \
            __m256i d_ = _mm256_madd_epi16(_mm256_maddubs_epi16(aw_, sx_), ones);                  \
            __m256 sc_ =                                                                           \
                _mm256_mul_ps(dw_, _mm256_broadcast_ss(xd + (size_t)(t + tt) * nb + (bb)));        \
            ACC[tt] = _mm256_fmadd_ps(sc_, _mm256_cvtepi32_ps(d_), ACC[tt]);                       \
        }                                                                                          \
    } while (0)

/* Even blocks into a0, odd into a1 (quant.c's order), two blocks per
 * iteration so the parity is static; then hsum(a0 + a1). */
#define Q8_TILE(TT)                                                                                \
    do {                                                                                           \
        __m256 a0[TT], a1[TT];                                                                     \
        for (int tt = 0; tt < TT; tt++)                                                            \
            a0[tt] = a1[tt] = _mm256_setzero_ps();                                                 \
        int b = 0;                                                                                 \
        for (; b + 2 <= nb; b += 2) {                                                              \
            Q8_STEP(TT, b, a0);                                                                    \
            Q8_STEP(TT, b + 1, a1);                                                                \
        }                                                                                          \
        if (b < nb) Q8_STEP(TT, b, a0);                                                            \
        for (int tt = 0; tt < TT; tt++)                                                            \
            Y[(size_t)(t + tt) * ldy + r] = hsum8(_mm256_add_ps(a0[tt], a1[tt]));                  \
    } while (0)

/* Q8_0 rows [r0, r1) x tokens [0, T) of the block: per row, |w| and the block
 * scales as floats are made once (aw, dw) and reused by every token tile. */
GEMM_TARGET static void q8_block_avx2(const uint8_t *W, size_t row_bytes, int n, const int8_t *xq,
                                      const float *xd, int T, float *Y, int ldy, int r0, int r1)
{
    int nb = n / QK8_0;
    _Alignas(32) int8_t aw[GEMM_MAX_COLS];
    float dw[GEMM_MAX_COLS / QK8_0];
    const __m256i ones = _mm256_set1_epi16(1);
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = W + (size_t)r * row_bytes;
        if (r + 1 < r1)
            for (size_t o = 0; o < row_bytes; o += 64)
                _mm_prefetch((const char *)row + row_bytes + o, _MM_HINT_T0);
        for (int b = 0; b < nb; b++) {
            const uint8_t *blk = row + (size_t)b * Q8_0_BLOCK_BYTES;
            uint16_t dh;
            memcpy(&dh, blk, 2);
            dw[b] = _cvtsh_ss(dh);
            __m256i w = _mm256_loadu_si256((const __m256i *)(blk + 2));
            _mm256_store_si256((__m256i *)(aw + 32 * b), _mm256_sign_epi8(w, w));
        }
        int t = 0;
        for (; t + 4 <= T; t += 4)
            Q8_TILE(4);
        for (; t < T; t++)
            Q8_TILE(1);
    }
}
#endif

struct gemm_state {
    const struct gemm_call *call;
    bool q8, kq;  /* some matrix needs Q8_0-style / Q8_K activations */
    int tiles[5]; /* prefix sums of tiles per matrix */
    atomic_int next;
};

static bool is_kquant(uint32_t t)
{
    return t == GGML_TYPE_Q4_K || t == GGML_TYPE_Q5_K || t == GGML_TYPE_Q6_K;
}

bool gemm_supported(uint32_t type)
{
    return type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_BF16 ||
           type == GGML_TYPE_Q8_0 || type == GGML_TYPE_Q4_0 || is_kquant(type);
}

/* Phase 1: quantise the activations, tokens split evenly over threads. */
static void quant_task(void *arg, int ith, int nth)
{
    const struct gemm_state *s = arg;
    const struct gemm_call *c = s->call;
    int n = c->mats[0].cols, nb = n / QK8_0;
    int t0 = (int)((long long)c->T * ith / nth), t1 = (int)((long long)c->T * (ith + 1) / nth);
    for (int t = t0; t < t1; t++) {
        if (s->q8)
            qk_quantize_act_u(c->x + (size_t)t * n, n, c->xq + (size_t)t * n, c->xu + (size_t)t * n,
                              c->xd + (size_t)t * nb);
        if (s->kq)
            qk_quantize_q8_k(c->x + (size_t)t * n, n, c->kq + (size_t)t * n,
                             c->kd + (size_t)t * (n / 256), c->kbs + (size_t)t * (n / 16));
    }
}

/* Tokens per block for a matrix: its activation block fits GEMM_BLOCK_BYTES,
 * a multiple of the 4-token register tile, at least 4. */
static int block_tokens(const struct gemm_mat *m)
{
    size_t n = (size_t)m->cols, per = n * 4;
    if (m->type == GGML_TYPE_Q8_0 || m->type == GGML_TYPE_Q4_0) per = n + n / QK8_0 * 4;
    if (is_kquant(m->type)) per = n + n / 256 * 4 + n / 16 * 2;
    size_t tb = GEMM_BLOCK_BYTES / per;
    tb &= ~(size_t)3;
    return tb < 4 ? 4 : (int)tb;
}

/* Phase 2: output tiles (GEMM_TILE_ROWS rows x all tokens) from a shared
 * counter; inside a tile, token blocks outermost so the tile's weight rows are
 * re-read from L2 while a block's activations stay in L1. */
static void tile_task(void *arg, int ith, int nth)
{
    (void)nth;
    struct gemm_state *s = arg;
    const struct gemm_call *c = s->call;
    int total = s->tiles[c->n_mats];
    for (;;) {
        int k = atomic_fetch_add_explicit(&s->next, 1, memory_order_relaxed);
        if (k >= total) return;
        int mi = 0;
        while (k >= s->tiles[mi + 1])
            mi++;
        const struct gemm_mat *m = &c->mats[mi];
        int r0 = (k - s->tiles[mi]) * GEMM_TILE_ROWS, r1 = r0 + GEMM_TILE_ROWS;
        if (r1 > m->rows) r1 = m->rows;
        int n = m->cols, nb = n / QK8_0, tb = block_tokens(m);
        for (int t0 = 0; t0 < c->T; t0 += tb) {
            int bt = c->T - t0 < tb ? c->T - t0 : tb;
            float *y = m->y + (size_t)t0 * m->ldy;
#if GEMM_X86
            if (m->type == GGML_TYPE_Q8_0 && qk_simd_active() && !qk_vnni_active() &&
                n <= GEMM_MAX_COLS) {
                q8_block_avx2(m->data, m->row_bytes, n, c->xq + (size_t)t0 * n,
                              c->xd + (size_t)t0 * nb, bt, y, m->ldy, r0, r1);
                continue;
            }
#endif
            if (m->type == GGML_TYPE_Q8_0)
                qk_matmul_q8q8_u(m->data, m->row_bytes, n, c->xq + (size_t)t0 * n,
                                 c->xu + (size_t)t0 * n, c->xd + (size_t)t0 * nb, bt, y, m->ldy, r0,
                                 r1);
            else if (m->type == GGML_TYPE_Q4_0)
                qk_matmul_q4_0(m->data, m->row_bytes, n, c->xq + (size_t)t0 * n,
                               c->xd + (size_t)t0 * nb, bt, y, m->ldy, r0, r1);
            else if (is_kquant(m->type))
                qk_matmul_kq(m->type, m->data, m->row_bytes, n, c->kq + (size_t)t0 * n,
                             c->kd + (size_t)t0 * (n / 256), c->kbs + (size_t)t0 * (n / 16), bt, y,
                             m->ldy, r0, r1);
            else
                qk_matmul(m->type, m->data, m->row_bytes, n, c->x + (size_t)t0 * n, n, bt, y,
                          m->ldy, r0, r1, c->scratch[ith]);
        }
    }
}

int gemm_run(struct pool *pool, const struct gemm_call *call)
{
    if (call->n_mats < 1 || call->n_mats > 4 || call->T < 1) return -1;
    struct gemm_state s = {.call = call, .q8 = false};
    s.tiles[0] = 0;
    for (int i = 0; i < call->n_mats; i++) {
        const struct gemm_mat *m = &call->mats[i];
        if (!gemm_supported(m->type) || m->cols != call->mats[0].cols || m->cols % QK8_0 ||
            (is_kquant(m->type) && m->cols % 256))
            return -1;
        s.q8 |= m->type == GGML_TYPE_Q8_0 || m->type == GGML_TYPE_Q4_0;
        s.kq |= is_kquant(m->type);
        s.tiles[i + 1] = s.tiles[i] + (m->rows + GEMM_TILE_ROWS - 1) / GEMM_TILE_ROWS;
    }
    if (s.q8 || s.kq) pool_run(pool, quant_task, &s);
    atomic_init(&s.next, 0);
    pool_run(pool, tile_task, &s);
    return 0;
}
