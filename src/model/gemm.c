/* Tiled prefill matmul; see gemm.h. */
#include "gemm.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "quant.h"
#include "xalloc.h"

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

static int g512_off; /* gemm_allow_avx512(0) */

#if GEMM_X86
/* ---- AVX-512 kernels (AVX512F/BW/VL + VNNI, chosen at run time) ----
 *
 * Same per-lane arithmetic as quant.c's AVX2 decode kernels, on 16 lanes:
 *
 * F32/F16/BF16: decode keeps four 8-lane accumulators a0..a3 per (row,
 * token), a_j += w[32b + 8j ..] * x[...] for each 32-element block b, then
 * hsum8((a0 + a1) + (a2 + a3)).  Here one zmm holds a0|a1 and one a2|a3 (the
 * same fma per lane), and the final sum splits them back into that order.  A
 * panel of G_FR weight rows, converted to f32 once per token block, meets
 * G_FC tokens at a time: G_FR x G_FC x 2 accumulators in registers. */
#define G512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")))
#define G_FR 4
#define G_FC 3

/* Row strides of the aligned copies: one cache line more than the row, so
 * rows a power of two long do not all map to the same L1 sets. */
static size_t g_lx(int n) /* x copy, floats */
{
    return (size_t)n + 16;
}
static size_t g_lu(int n) /* xu and kq copies, bytes */
{
    return (size_t)n + 64;
}
static size_t g_ld(int n) /* dxx, floats */
{
    return (size_t)((n / QK8_0 + 1) / 2) * 16 + 16;
}

G512 static inline float hsum_f4(__m512 a01, __m512 a23)
{
    __m256 s01 = _mm256_add_ps(_mm512_castps512_ps256(a01),
                               _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a01), 1)));
    __m256 s23 = _mm256_add_ps(_mm512_castps512_ps256(a23),
                               _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a23), 1)));
    return hsum8(_mm256_add_ps(s01, s23));
}

/* R rows (w[0..R)) x C tokens (x + c*ldx) -> Y[c*ldy + rr] */
G512 static inline __attribute__((always_inline)) void
ff_tile(int R, int C, const float *const *w, const float *x, size_t ldx, int n, float *Y, int ldy)
{
    __m512 acc[G_FR][G_FC][2];
    for (int rr = 0; rr < R; rr++)
        for (int c = 0; c < C; c++)
            acc[rr][c][0] = acc[rr][c][1] = _mm512_setzero_ps();
    for (int k = 0; k < n; k += 32)
        for (int h = 0; h < 2; h++) {
            __m512 xv[G_FC];
            for (int c = 0; c < C; c++)
                xv[c] = _mm512_loadu_ps(x + (size_t)c * ldx + k + 16 * h);
            for (int rr = 0; rr < R; rr++) {
                __m512 wv = _mm512_loadu_ps(w[rr] + k + 16 * h);
                __asm__("" : "+v"(wv)); /* one load, kept in a register for the C fmas */
                for (int c = 0; c < C; c++)
                    acc[rr][c][h] = _mm512_fmadd_ps(wv, xv[c], acc[rr][c][h]);
            }
        }
    for (int rr = 0; rr < R; rr++)
        for (int c = 0; c < C; c++)
            Y[(size_t)c * ldy + rr] = hsum_f4(acc[rr][c][0], acc[rr][c][1]);
}

#define FF_FN(R, C)                                                                                \
    G512 static void ff_tile_##R##_##C(const float *const *w, const float *x, size_t ldx, int n,   \
                                       float *Y, int ldy)                                          \
    {                                                                                              \
        ff_tile(R, C, w, x, ldx, n, Y, ldy);                                                       \
    }
FF_FN(1, 1)
FF_FN(1, 2)
FF_FN(1, 3)
FF_FN(2, 1)
FF_FN(2, 2)
FF_FN(2, 3)
FF_FN(3, 1)
FF_FN(3, 2)
FF_FN(3, 3)
FF_FN(4, 1)
FF_FN(4, 2)
FF_FN(4, 3)

typedef void (*ff_fn)(const float *const *, const float *, size_t, int, float *, int);
static const ff_fn ff_fns[G_FR][G_FC] = {
    {ff_tile_1_1, ff_tile_1_2, ff_tile_1_3},
    {ff_tile_2_1, ff_tile_2_2, ff_tile_2_3},
    {ff_tile_3_1, ff_tile_3_2, ff_tile_3_3},
    {ff_tile_4_1, ff_tile_4_2, ff_tile_4_3},
};

/* one weight row -> n floats (exact conversions, as quant.c's) */
G512 static void to_f32(uint32_t type, const uint8_t *row, float *out, int n)
{
    for (int i = 0; i < n; i += 16) {
        __m256i h = _mm256_loadu_si256((const __m256i *)(row + 2 * (size_t)i));
        if (type == GGML_TYPE_F16)
            _mm512_storeu_ps(out + i, _mm512_cvtph_ps(h));
        else
            _mm512_storeu_ps(out + i,
                             _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
    }
}

/* F32/F16/BF16 rows [r0, r1) x tokens [0, T): token blocks of tb, inside a
 * block panels of G_FR rows (f32, in buf) against G_FC tokens at a time. */
G512 static void ff_rows_avx512(const struct gemm_mat *m, const float *X, int T, int r0, int r1,
                                float *buf)
{
    int n = m->cols;
    size_t tb = ((size_t)256 * 1024) / ((size_t)n * 4);
    if (tb < G_FC) tb = G_FC;
    const uint8_t *W = m->data;
    for (int t0 = 0; t0 < T; t0 += (int)tb) {
        int bt = T - t0 < (int)tb ? T - t0 : (int)tb;
        for (int r = r0; r < r1; r += G_FR) {
            int R = r1 - r < G_FR ? r1 - r : G_FR;
            const float *w[G_FR];
            for (int rr = 0; rr < R; rr++) {
                const uint8_t *row = W + (size_t)(r + rr) * m->row_bytes;
                if (m->type == GGML_TYPE_F32) {
                    w[rr] = (const void *)row;
                } else {
                    to_f32(m->type, row, buf + (size_t)rr * g_lx(n), n);
                    w[rr] = buf + (size_t)rr * g_lx(n);
                }
            }
            for (int t = t0; t < t0 + bt;) {
                int C = t0 + bt - t < G_FC ? t0 + bt - t : G_FC;
                ff_fns[R - 1][C - 1](w, X + (size_t)t * g_lx(n), g_lx(n), n,
                                     m->y + (size_t)t * m->ldy + r, m->ldy);
                t += C;
            }
        }
    }
}

/* Q8_0: decode (quant.c, AVX2 or AVX-VNNI) computes per (row, token) and
 * 32-block b the exact int32 lanes l = sum of w*x over bytes 4l..4l+3, then
 * acc_{b&1} = fma(dw*dx, float(lanes), acc_{b&1}) and hsum8(acc0 + acc1).
 * Here a zmm covers blocks 2p (low half: acc0) and 2p+1 (high half: acc1):
 * the weights of a tile are repacked once (q8_pack) into int8 pairs of blocks,
 * their scales spread over 8 lanes each and the VNNI correction; vpdpbusd of
 * xu = x + 128 (unsigned) and w, started from -128*sum(w), gives the same
 * int32 lanes; the activation scales are spread the same way (dxx). */
#define G_QR 4
#define G_QC 4

/* packed row: npair * (64 B w, 16 dw floats, 16 int32 -128*sum(w)) */
static size_t q8_row_bytes(int n)
{
    return (size_t)((n / QK8_0 + 1) / 2) * 192 + 64;
}

G512 static void q8_pack(const uint8_t *row, int n, uint8_t *out)
{
    int nb = n / QK8_0, npair = (nb + 1) / 2;
    const __m256i u80 = _mm256_set1_epi8((char)0x80);
    for (int p = 0; p < npair; p++) {
        uint8_t *o = out + (size_t)p * 192;
        for (int hb = 0; hb < 2; hb++) {
            int b = 2 * p + hb;
            __m256i w = _mm256_setzero_si256();
            float dw = 0;
            if (b < nb) {
                const uint8_t *blk = row + (size_t)b * Q8_0_BLOCK_BYTES;
                uint16_t dh;
                memcpy(&dh, blk, 2);
                dw = _cvtsh_ss(dh);
                w = _mm256_loadu_si256((const __m256i *)(blk + 2));
            }
            _mm256_storeu_si256((__m256i *)(o + 32 * hb), w);
            _mm256_storeu_ps((void *)(o + 64 + 32 * hb), _mm256_set1_ps(dw));
            __m256i negc = _mm256_sub_epi32(_mm256_setzero_si256(),
                                            _mm256_dpbusd_epi32(_mm256_setzero_si256(), u80, w));
            _mm256_storeu_si256((__m256i *)(o + 128 + 32 * hb), negc);
        }
    }
}

/* the activation scales of one token, spread like the weights' */
G512 static void q8_spread(const float *xd, int nb, float *dxx)
{
    for (int p = 0; p < (nb + 1) / 2; p++) {
        float d1 = 2 * p + 1 < nb ? xd[2 * p + 1] : 0.0f;
        _mm512_storeu_ps(dxx + 16 * (size_t)p,
                         _mm512_insertf32x8(_mm512_set1_ps(xd[2 * p]), _mm256_set1_ps(d1), 1));
    }
}

/* pair p of blocks for the tile; XLOAD(c) loads token c's 64 unsigned bytes */
#define Q8_PAIR(XLOAD)                                                                             \
    do {                                                                                           \
        __m512i xv[G_QC];                                                                          \
        __m512 dv[G_QC];                                                                           \
        for (int c = 0; c < C; c++) {                                                              \
            xv[c] = XLOAD;                                                                         \
            dv[c] = _mm512_loadu_ps(dxx + (size_t)c * dst + 16 * (size_t)p);                       \
        }                                                                                          \
        for (int rr = 0; rr < R; rr++) {                                                           \
            const uint8_t *o = wp + (size_t)rr * wst + (size_t)p * 192;                            \
            __m512i w = _mm512_loadu_si512(o);                                                     \
            __m512 dw = _mm512_loadu_ps(o + 64);                                                   \
            __m512i negc = _mm512_loadu_si512(o + 128);                                            \
            __asm__("" : "+v"(w), "+v"(dw), "+v"(negc));                                           \
            for (int c = 0; c < C; c++) {                                                          \
                __m512 f = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(negc, xv[c], w));                \
                acc[rr][c] = _mm512_fmadd_ps(_mm512_mul_ps(dw, dv[c]), f, acc[rr][c]);             \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* R packed rows (wp, wst apart) x C tokens (xu rows n apart, dxx rows dst apart) */
G512 static inline __attribute__((always_inline)) void
q8_tile(int R, int C, const uint8_t *wp, size_t wst, const uint8_t *xu, size_t n, const float *dxx,
        size_t dst, int nb, float *Y, int ldy)
{
    __m512 acc[G_QR][G_QC];
    for (int rr = 0; rr < R; rr++)
        for (int c = 0; c < C; c++)
            acc[rr][c] = _mm512_setzero_ps();
    for (int p = 0; p < nb / 2; p++)
        Q8_PAIR(_mm512_loadu_si512(xu + (size_t)c * n + 64 * (size_t)p));
    if (nb & 1) { /* the last block alone: the high half adds fma(0, 0, acc) */
        int p = nb / 2;
        Q8_PAIR(_mm512_zextsi256_si512(
            _mm256_loadu_si256((const __m256i *)(xu + (size_t)c * n + 64 * (size_t)p))));
    }
    for (int rr = 0; rr < R; rr++)
        for (int c = 0; c < C; c++) {
            __m512 a = acc[rr][c];
            Y[(size_t)c * ldy + rr] = hsum8(
                _mm256_add_ps(_mm512_castps512_ps256(a),
                              _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1))));
        }
}

#define Q8_FN(R, C)                                                                                \
    G512 static void q8_tile_##R##_##C(const uint8_t *wp, size_t wst, const uint8_t *xu, size_t n, \
                                       const float *dxx, size_t dst, int nb, float *Y, int ldy)    \
    {                                                                                              \
        q8_tile(R, C, wp, wst, xu, n, dxx, dst, nb, Y, ldy);                                       \
    }
Q8_FN(1, 1)
Q8_FN(1, 2)
Q8_FN(1, 3)
Q8_FN(1, 4)
Q8_FN(2, 1)
Q8_FN(2, 2)
Q8_FN(2, 3)
Q8_FN(2, 4)
Q8_FN(3, 1)
Q8_FN(3, 2)
Q8_FN(3, 3)
Q8_FN(3, 4)
Q8_FN(4, 1)
Q8_FN(4, 2)
Q8_FN(4, 3)
Q8_FN(4, 4)

typedef void (*q8_fn)(const uint8_t *, size_t, const uint8_t *, size_t, const float *, size_t, int,
                      float *, int);
static const q8_fn q8_fns[G_QR][G_QC] = {
    {q8_tile_1_1, q8_tile_1_2, q8_tile_1_3, q8_tile_1_4},
    {q8_tile_2_1, q8_tile_2_2, q8_tile_2_3, q8_tile_2_4},
    {q8_tile_3_1, q8_tile_3_2, q8_tile_3_3, q8_tile_3_4},
    {q8_tile_4_1, q8_tile_4_2, q8_tile_4_3, q8_tile_4_4},
};

/* Q8_0 rows [r0, r1) (at most GEMM_TILE_ROWS) x tokens [0, T): pack the
 * tile's rows into buf, then token blocks (activations in L2) x panels of
 * G_QR rows (in L1) x G_QC tokens. */
G512 static void q8_rows_avx512(const struct gemm_mat *m, const uint8_t *xu, const float *dxx,
                                int T, int r0, int r1, uint8_t *buf)
{
    int n = m->cols, nb = n / QK8_0;
    size_t prb = q8_row_bytes(n), dst = g_ld(n), lu = g_lu(n);
    for (int r = r0; r < r1; r++)
        q8_pack((const uint8_t *)m->data + (size_t)r * m->row_bytes, n,
                buf + (size_t)(r - r0) * prb);
    size_t tb = ((size_t)128 * 1024) / ((size_t)n * 2);
    if (tb < G_QC) tb = G_QC;
    for (int t0 = 0; t0 < T; t0 += (int)tb) {
        int bt = T - t0 < (int)tb ? T - t0 : (int)tb;
        for (int r = r0; r < r1; r += G_QR) {
            int R = r1 - r < G_QR ? r1 - r : G_QR;
            for (int t = t0; t < t0 + bt;) {
                int C = t0 + bt - t < G_QC ? t0 + bt - t : G_QC;
                q8_fns[R - 1][C - 1](buf + (size_t)(r - r0) * prb, prb, xu + (size_t)t * lu, lu,
                                     dxx + (size_t)t * dst, dst, nb, m->y + (size_t)t * m->ldy + r,
                                     m->ldy);
                t += C;
            }
        }
    }
}

/* K-quants (Q4_K, Q5_K, Q6_K): decode (quant.c) computes per (row, token)
 * and 256-block b the exact integers is[b] (and im[b], the mins against the
 * bsums, for Q4_K/Q5_K), then in block order acc = acc + ((fd*yd)*is -
 * (fm*yd)*im), or acc = acc + (fd*yd)*is for Q6_K, each operation rounded
 * on its own (kq_finish, no fma).  Here a tile's rows are unpacked once
 * (kq_pack) to u8 levels with int16 scales spread per lane; then for
 * G_KR x G_KC (row, token) pairs at once: dpwssd(acc, maddubs(q, y), sc)
 * over the 4 chunks of 64, the Q6_K bias -32*sum(sc*bsums) and the mins
 * by dpwssd on the bsums, a 16-way reduction to one int per pair (exact,
 * whatever the order), and the float part on 16 lanes with the same
 * operations (explicitly rounded intrinsics: never contracted). */
#define G_KR 4
#define G_KC 4
#define KQ_PB 576 /* packed block: q[256], sc16[4][32], ex16[16], fd, fm, pad */

static int kq_block_bytes(uint32_t type)
{
    return type == GGML_TYPE_Q4_K ? 144 : type == GGML_TYPE_Q5_K ? 176 : 210;
}

static void kq_pack(uint32_t type, const uint8_t *row, int n, uint8_t *out)
{
    int nbk = n / 256, bb = kq_block_bytes(type);
    for (int b = 0; b < nbk; b++) {
        const uint8_t *p = row + (size_t)b * bb;
        uint8_t *o = out + (size_t)b * KQ_PB, *q = o;
        int16_t sc16[128], ex16[16];
        float fd, fm = 0;
        if (type == GGML_TYPE_Q6_K) {
            const uint8_t *ql = p, *qh = p + 128;
            const int8_t *sc = (const int8_t *)(p + 192);
            for (int h = 0; h < 2; h++, ql += 64, qh += 32, q += 128)
                for (int l = 0; l < 32; l++) {
                    q[l] = (uint8_t)((ql[l] & 0xF) | ((qh[l] & 3) << 4));
                    q[l + 32] = (uint8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4));
                    q[l + 64] = (uint8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
                    q[l + 96] = (uint8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
                }
            for (int k = 0; k < 128; k++) /* int16 lane k: elements 2k, 2k+1 */
                sc16[k] = sc[k / 8];
            for (int g = 0; g < 16; g++)
                ex16[g] = (int16_t)(-32 * sc[g]);
            uint16_t dh;
            memcpy(&dh, p + 208, 2);
            fd = qk_f16_to_f32(dh);
        } else {
            int five = type == GGML_TYPE_Q5_K;
            uint8_t sc[8], mn[8];
            qk_kscales(p + 4, sc, mn);
            const uint8_t *qh = p + 16, *qs = p + (five ? 48 : 16);
            for (int c = 0; c < 4; c++, qs += 32)
                for (int l = 0; l < 32; l++) {
                    int h1 = five ? ((qh[l] >> (2 * c)) & 1) << 4 : 0;
                    int h2 = five ? ((qh[l] >> (2 * c + 1)) & 1) << 4 : 0;
                    q[64 * c + l] = (uint8_t)((qs[l] & 0xF) | h1);
                    q[64 * c + 32 + l] = (uint8_t)((qs[l] >> 4) | h2);
                }
            for (int k = 0; k < 128; k++)
                sc16[k] = sc[k / 16];
            for (int j = 0; j < 16; j++)
                ex16[j] = mn[j / 2];
            uint16_t dh, mh;
            memcpy(&dh, p, 2);
            memcpy(&mh, p + 2, 2);
            fd = qk_f16_to_f32(dh);
            fm = qk_f16_to_f32(mh);
        }
        memcpy(o + 256, sc16, 256);
        memcpy(o + 512, ex16, 32);
        memcpy(o + 544, &fd, 4);
        memcpy(o + 548, &fm, 4);
        memset(o + 552, 0, KQ_PB - 552);
    }
}

/* v[i] -> lane i of the result: the sum of v[i]'s 16 int32 lanes */
G512 static inline __m512i reduce16(const __m512i *v)
{
    __m512i u[8], w[4], g[2];
    for (int k = 0; k < 8; k++)
        u[k] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * k], v[2 * k + 1]),
                                _mm512_unpackhi_epi32(v[2 * k], v[2 * k + 1]));
    for (int k = 0; k < 4; k++)
        w[k] = _mm512_add_epi32(_mm512_unpacklo_epi64(u[2 * k], u[2 * k + 1]),
                                _mm512_unpackhi_epi64(u[2 * k], u[2 * k + 1]));
    for (int k = 0; k < 2; k++)
        g[k] = _mm512_add_epi32(_mm512_shuffle_i32x4(w[2 * k], w[2 * k + 1], 0x88),
                                _mm512_shuffle_i32x4(w[2 * k], w[2 * k + 1], 0xdd));
    return _mm512_add_epi32(_mm512_shuffle_i32x4(g[0], g[1], 0x88),
                            _mm512_shuffle_i32x4(g[0], g[1], 0xdd));
}

#define RN (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

/* R packed rows (wp, wst apart) x C tokens (q rows n apart, d rows nbk apart,
 * bsums rows n/16 apart); pair (rr, c) in lane 4*rr + c. */
G512 static inline __attribute__((always_inline)) void
kq_tile(int R, int C, bool q6, const uint8_t *wp, size_t wst, const int8_t *q, size_t n,
        const float *d, const int16_t *bs, size_t bss, int nbk, float *Y, int ldy)
{
    __m512 acc = _mm512_setzero_ps();
    for (int b = 0; b < nbk; b++) {
        __m512i ai[16];
        for (int i = 0; i < 16; i++)
            ai[i] = _mm512_setzero_si512();
        for (int ch = 0; ch < 4; ch++) {
            __m512i yv[G_KC];
            for (int c = 0; c < C; c++)
                yv[c] = _mm512_loadu_si512(q + (size_t)c * n + 256 * (size_t)b + 64 * ch);
            for (int rr = 0; rr < R; rr++) {
                const uint8_t *o = wp + (size_t)rr * wst + (size_t)b * KQ_PB;
                __m512i wq = _mm512_loadu_si512(o + 64 * ch);
                __m512i sc = _mm512_loadu_si512(o + 256 + 64 * ch);
                __asm__("" : "+v"(wq), "+v"(sc));
                for (int c = 0; c < C; c++)
                    ai[4 * rr + c] =
                        _mm512_dpwssd_epi32(ai[4 * rr + c], _mm512_maddubs_epi16(wq, yv[c]), sc);
            }
        }
        __m512i bsv[G_KC];
        for (int c = 0; c < C; c++)
            bsv[c] = _mm512_zextsi256_si512(
                _mm256_loadu_si256((const __m256i *)(bs + (size_t)c * bss + 16 * (size_t)b)));
        __m512i im = _mm512_setzero_si512(), is;
        if (q6) {
            for (int rr = 0; rr < R; rr++) {
                __m512i ex = _mm512_zextsi256_si512(_mm256_loadu_si256(
                    (const __m256i *)(wp + (size_t)rr * wst + (size_t)b * KQ_PB + 512)));
                for (int c = 0; c < C; c++)
                    ai[4 * rr + c] = _mm512_dpwssd_epi32(ai[4 * rr + c], bsv[c], ex);
            }
            is = reduce16(ai);
        } else {
            is = reduce16(ai); /* first: frees the registers for the mins */
            __m512i mi[16];
            for (int i = 0; i < 16; i++)
                mi[i] = _mm512_setzero_si512();
            for (int rr = 0; rr < R; rr++) {
                __m512i ex = _mm512_zextsi256_si512(_mm256_loadu_si256(
                    (const __m256i *)(wp + (size_t)rr * wst + (size_t)b * KQ_PB + 512)));
                for (int c = 0; c < C; c++)
                    mi[4 * rr + c] = _mm512_dpwssd_epi32(mi[4 * rr + c], bsv[c], ex);
            }
            im = reduce16(mi);
        }
        /* fd, fm of the rows and yd of the tokens, spread to the lanes */
        float fdr[16] = {0}, fmr[16] = {0}, ydr[16] = {0};
        for (int rr = 0; rr < R; rr++) {
            const uint8_t *o = wp + (size_t)rr * wst + (size_t)b * KQ_PB;
            float fd_, fm_;
            memcpy(&fd_, o + 544, 4);
            memcpy(&fm_, o + 548, 4);
            for (int c = 0; c < C; c++) {
                fdr[4 * rr + c] = fd_;
                fmr[4 * rr + c] = fm_;
                ydr[4 * rr + c] = d[(size_t)c * nbk + b];
            }
        }
        __m512 yd = _mm512_loadu_ps(ydr);
        __m512 a = _mm512_mul_round_ps(_mm512_mul_round_ps(_mm512_loadu_ps(fdr), yd, RN),
                                       _mm512_cvtepi32_ps(is), RN);
        if (q6) {
            acc = _mm512_add_round_ps(acc, a, RN);
        } else {
            __m512 m = _mm512_mul_round_ps(_mm512_mul_round_ps(_mm512_loadu_ps(fmr), yd, RN),
                                           _mm512_cvtepi32_ps(im), RN);
            acc = _mm512_add_round_ps(acc, _mm512_sub_round_ps(a, m, RN), RN);
        }
    }
    float out[16];
    _mm512_storeu_ps(out, acc);
    for (int rr = 0; rr < R; rr++)
        for (int c = 0; c < C; c++)
            Y[(size_t)c * ldy + rr] = out[4 * rr + c];
}

#define KQ_FN(R, C)                                                                                \
    G512 static void kq_tile_##R##_##C(bool q6, const uint8_t *wp, size_t wst, const int8_t *q,    \
                                       size_t n, const float *d, const int16_t *bs, size_t bss,    \
                                       int nbk, float *Y, int ldy)                                 \
    {                                                                                              \
        if (q6)                                                                                    \
            kq_tile(R, C, true, wp, wst, q, n, d, bs, bss, nbk, Y, ldy);                           \
        else                                                                                       \
            kq_tile(R, C, false, wp, wst, q, n, d, bs, bss, nbk, Y, ldy);                          \
    }
KQ_FN(1, 1)
KQ_FN(1, 2)
KQ_FN(1, 3)
KQ_FN(1, 4)
KQ_FN(2, 1)
KQ_FN(2, 2)
KQ_FN(2, 3)
KQ_FN(2, 4)
KQ_FN(3, 1)
KQ_FN(3, 2)
KQ_FN(3, 3)
KQ_FN(3, 4)
KQ_FN(4, 1)
KQ_FN(4, 2)
KQ_FN(4, 3)
KQ_FN(4, 4)

typedef void (*kq_fn)(bool, const uint8_t *, size_t, const int8_t *, size_t, const float *,
                      const int16_t *, size_t, int, float *, int);
static const kq_fn kq_fns[G_KR][G_KC] = {
    {kq_tile_1_1, kq_tile_1_2, kq_tile_1_3, kq_tile_1_4},
    {kq_tile_2_1, kq_tile_2_2, kq_tile_2_3, kq_tile_2_4},
    {kq_tile_3_1, kq_tile_3_2, kq_tile_3_3, kq_tile_3_4},
    {kq_tile_4_1, kq_tile_4_2, kq_tile_4_3, kq_tile_4_4},
};

G512 static void kq_rows_avx512(const struct gemm_mat *m, const int8_t *kq, const float *kd,
                                const int16_t *kbs, int T, int r0, int r1, uint8_t *buf)
{
    int n = m->cols, nbk = n / 256;
    size_t prb = (size_t)nbk * KQ_PB + 64, lu = g_lu(n);
    for (int r = r0; r < r1; r++)
        kq_pack(m->type, (const uint8_t *)m->data + (size_t)r * m->row_bytes, n,
                buf + (size_t)(r - r0) * prb);
    size_t tb = ((size_t)128 * 1024) / ((size_t)n * 9 / 8);
    if (tb < G_KC) tb = G_KC;
    bool q6 = m->type == GGML_TYPE_Q6_K;
    for (int t0 = 0; t0 < T; t0 += (int)tb) {
        int bt = T - t0 < (int)tb ? T - t0 : (int)tb;
        for (int r = r0; r < r1; r += G_KR) {
            int R = r1 - r < G_KR ? r1 - r : G_KR;
            for (int t = t0; t < t0 + bt;) {
                int C = t0 + bt - t < G_KC ? t0 + bt - t : G_KC;
                kq_fns[R - 1][C - 1](q6, buf + (size_t)(r - r0) * prb, prb, kq + (size_t)t * lu, lu,
                                     kd + (size_t)t * nbk, kbs + (size_t)t * (n / 16),
                                     (size_t)(n / 16), nbk, m->y + (size_t)t * m->ldy + r, m->ldy);
                t += C;
            }
        }
    }
}

static int g512_state = -1;

static bool g512_active(void)
{
    if (g512_off || !qk_simd_active()) return false;
    if (g512_state < 0) {
        __builtin_cpu_init();
        g512_state = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                     __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                     __builtin_cpu_supports("avx512vnni");
    }
    return g512_state > 0;
}
#else
static bool g512_active(void)
{
    return false;
}
#endif

void gemm_allow_avx512(int on)
{
    g512_off = !on;
}

struct gemm_state {
    const struct gemm_call *call;
    bool q8, kq;  /* some matrix needs Q8_0-style / Q8_K activations */
    int tiles[5]; /* prefix sums of tiles per matrix */
    atomic_int next;
    bool g512;     /* AVX-512 kernels */
    bool q8x;      /* ... for Q8_0: dxx wanted */
    float *dxx;    /* per token the Q8_0 activation scales, spread (q8_spread) */
    char *buf;     /* per thread buf_per bytes (AVX-512 weight panels), 64-byte aligned */
    float *xa;     /* x copied 64-byte aligned (AVX-512 F32/F16/BF16 kernels) */
    uint8_t *xu;   /* where xu / kq are written: the call's, or 64-byte aligned */
    int8_t *kqa;   /* buffers for the AVX-512 kernels */
    size_t lu, lk; /* their row strides */
    size_t buf_per;
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

/* Bytes of per-thread buffer the AVX-512 kernel of m needs (multiple of 64). */
static size_t g_buf_bytes(const struct gemm_mat *m)
{
    size_t n = (size_t)m->cols;
    if (m->type == GGML_TYPE_F16 || m->type == GGML_TYPE_BF16) return 4 * g_lx(m->cols) * 4;
#if GEMM_X86
    if (m->type == GGML_TYPE_Q8_0) return GEMM_TILE_ROWS * q8_row_bytes(m->cols);
    if (is_kquant(m->type)) return GEMM_TILE_ROWS * ((n / 256) * KQ_PB + 64);
#endif
    return 0;
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
            qk_quantize_act_u(c->x + (size_t)t * n, n, c->xq + (size_t)t * n,
                              s->xu + (size_t)t * s->lu, c->xd + (size_t)t * nb);
#if GEMM_X86
        if (s->q8x) q8_spread(c->xd + (size_t)t * nb, nb, s->dxx + (size_t)t * g_ld(n));
#endif
        if (s->xa) memcpy(s->xa + (size_t)t * g_lx(n), c->x + (size_t)t * n, (size_t)n * 4);
        if (s->kq)
            qk_quantize_q8_k(c->x + (size_t)t * n, n, s->kqa + (size_t)t * s->lk,
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
#if GEMM_X86
        if (s->g512 &&
            (m->type == GGML_TYPE_F32 || m->type == GGML_TYPE_F16 || m->type == GGML_TYPE_BF16)) {
            ff_rows_avx512(m, s->xa, c->T, r0, r1, (void *)(s->buf + (size_t)ith * s->buf_per));
            continue;
        }
        if (s->g512 && is_kquant(m->type)) {
            kq_rows_avx512(m, s->kqa, c->kd, c->kbs, c->T, r0, r1,
                           (uint8_t *)s->buf + (size_t)ith * s->buf_per);
            continue;
        }
        if (s->q8x && m->type == GGML_TYPE_Q8_0) {
            q8_rows_avx512(m, s->xu, s->dxx, c->T, r0, r1,
                           (uint8_t *)s->buf + (size_t)ith * s->buf_per);
            continue;
        }
#endif
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

/* The AVX-512 kernels' buffers: one allocation carved into 64-byte aligned
 * pieces (zmm loads never span two cache lines), kept from call to call (a
 * fresh one per call is a fresh mapping whose pages fault in every time);
 * a concurrent call that finds it busy allocates its own. */
static pthread_mutex_t g_keep_mu = PTHREAD_MUTEX_INITIALIZER;
static char *g_keep;
static size_t g_keep_n;

static size_t g_round(size_t n)
{
    return (n + 63) / 64 * 64;
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
    s.g512 = g512_active();
    s.buf_per = 0;
    if (s.g512)
        for (int i = 0; i < call->n_mats; i++)
            s.buf_per =
                g_buf_bytes(&call->mats[i]) > s.buf_per ? g_buf_bytes(&call->mats[i]) : s.buf_per;
    bool fx = false;
    for (int i = 0; i < call->n_mats; i++)
        fx |=
            s.g512 && (call->mats[i].type == GGML_TYPE_F32 || call->mats[i].type == GGML_TYPE_F16 ||
                       call->mats[i].type == GGML_TYPE_BF16);
    s.q8x = false;
    for (int i = 0; i < call->n_mats; i++)
        s.q8x |= s.g512 && call->mats[i].type == GGML_TYPE_Q8_0;
    int n0 = call->mats[0].cols;
    size_t T = (size_t)call->T;
    bool kqx = s.g512 && s.kq;
    s.lu = s.q8x ? g_lu(n0) : (size_t)n0;
    s.lk = kqx ? g_lu(n0) : (size_t)n0;
    size_t sz[5] = {g_round(s.buf_per * (size_t)pool_size(pool)),
                    fx ? g_round(T * g_lx(n0) * 4) : 0, s.q8x ? g_round(T * g_ld(n0) * 4) : 0,
                    s.q8x ? g_round(T * s.lu) : 0, kqx ? g_round(T * s.lk) : 0};
    size_t total = 64 + sz[0] + sz[1] + sz[2] + sz[3] + sz[4];
    char *mem = NULL, *own = NULL;
    bool kept = total > 64 && pthread_mutex_trylock(&g_keep_mu) == 0;
    if (kept) {
        if (g_keep_n < total) {
            free(g_keep);
            g_keep = xmalloc(total);
            g_keep_n = total;
        }
        mem = g_keep;
    } else if (total > 64) {
        mem = own = xmalloc(total);
    }
    if (mem) {
        char *p = mem + (64 - (uintptr_t)mem % 64) % 64;
        s.buf = sz[0] ? p : NULL;
        p += sz[0];
        s.xa = sz[1] ? (float *)(void *)p : NULL;
        p += sz[1];
        s.dxx = sz[2] ? (float *)(void *)p : NULL;
        p += sz[2];
        s.xu = sz[3] ? (uint8_t *)p : NULL;
        p += sz[3];
        s.kqa = sz[4] ? (int8_t *)p : NULL;
    }
    if (!s.xu) s.xu = call->xu;
    if (!s.kqa) s.kqa = call->kq;
    if (s.q8 || s.kq || s.xa) pool_run(pool, quant_task, &s);
    atomic_init(&s.next, 0);
    pool_run(pool, tile_task, &s);
    if (kept) pthread_mutex_unlock(&g_keep_mu);
    free(own);
    return 0;
}
