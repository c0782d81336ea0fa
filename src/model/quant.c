/* Formats and matmul kernels; see quant.h. */
#include "quant.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "gguf.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define QK_X86 1
#else
#define QK_X86 0
#endif

float qk_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t qk_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* overflow -> inf */
    if (absx < 0x38800000u) {                                  /* subnormal or zero in half */
        if (absx < 0x33000000u) return (uint16_t)sign;
        uint32_t e = absx >> 23;
        uint32_t m = (absx & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t half = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = ((absx >> 13) - ((127 - 15) << 10));
    uint32_t rem = absx & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

void qk_quantize_q8_0(const float *x, void *out, int n)
{
    uint8_t *o = out;
    for (int b = 0; b < n / QK8_0; b++) {
        const float *xb = x + b * QK8_0;
        float amax = 0;
        for (int j = 0; j < QK8_0; j++)
            amax = fmaxf(amax, fabsf(xb[j]));
        float d = amax / 127.0f;
        float id = d ? 1.0f / d : 0.0f;
        uint16_t dh = qk_f32_to_f16(d);
        memcpy(o, &dh, 2);
        for (int j = 0; j < QK8_0; j++)
            o[2 + j] = (uint8_t)(int8_t)roundf(xb[j] * id);
        o += Q8_0_BLOCK_BYTES;
    }
}

/* ---- portable kernels ---- */

static void dequant_portable(uint32_t type, const void *row, float *out, int n)
{
    if (type == GGML_TYPE_F32) {
        memcpy(out, row, (size_t)n * 4);
    } else if (type == GGML_TYPE_F16) {
        const uint8_t *p = row;
        for (int i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = qk_f16_to_f32(h);
        }
    } else if (type == GGML_TYPE_Q8_0) {
        const uint8_t *p = row;
        for (int b = 0; b < n / QK8_0; b++, p += Q8_0_BLOCK_BYTES) {
            uint16_t dh;
            memcpy(&dh, p, 2);
            float d = qk_f16_to_f32(dh);
            for (int j = 0; j < QK8_0; j++)
                out[b * QK8_0 + j] = d * (float)(int8_t)p[2 + j];
        }
    }
}

static void rows_portable(const float *w, int n, const float *X, int ldx, int T, float *Y, int ldy)
{
    for (int t = 0; t < T; t++) {
        const float *x = X + (size_t)t * ldx;
        float acc[8] = {0};
        int k = 0;
        for (; k + 8 <= n; k += 8)
            for (int j = 0; j < 8; j++)
                acc[j] += w[k + j] * x[k + j];
        float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        for (; k < n; k++)
            s += w[k] * x[k];
        Y[(size_t)t * ldy] = s;
    }
}

/* ---- AVX2 / FMA / F16C kernels ---- */
#if QK_X86
#define QK_TARGET __attribute__((target("avx2,fma,f16c")))

QK_TARGET static inline float hsum8(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    __m128 s = _mm_add_ps(lo, hi);
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

QK_TARGET static void dequant_avx2(uint32_t type, const void *row, float *out, int n)
{
    if (type == GGML_TYPE_F16) {
        const uint8_t *p = row;
        int i = 0;
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(out + i,
                             _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 2 * i))));
        for (; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = qk_f16_to_f32(h);
        }
    } else if (type == GGML_TYPE_Q8_0) {
        const uint8_t *p = row;
        for (int b = 0; b < n / QK8_0; b++, p += Q8_0_BLOCK_BYTES) {
            uint16_t dh;
            memcpy(&dh, p, 2);
            __m256 d = _mm256_set1_ps(qk_f16_to_f32(dh));
            for (int j = 0; j < 4; j++) {
                __m128i q8 = _mm_loadl_epi64((const __m128i *)(p + 2 + 8 * j));
                __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8));
                _mm256_storeu_ps(out + b * QK8_0 + 8 * j, _mm256_mul_ps(d, q));
            }
        }
    } else {
        memcpy(out, row, (size_t)n * 4);
    }
}

/* The AVX2 kernels share one accumulation order per (row, token): four
 * 8-lane accumulators, a[j] += w[32b + 8j .. +8] * x[...] for each 32-element
 * block b in order, then hsum((a0 + a1) + (a2 + a3)).  Four independent FMA
 * chains keep single-token decode from being latency-bound, and a token's
 * result does not depend on the tile it was computed in, nor on whether the
 * row was dequantised in registers or into scratch first.  n % 32 == 0.
 * W_J(j) yields the 8 weights of sub-block j of the current block as floats. */
#define TILE_BODY(TT, BLOCK_SETUP, W_J)                                                            \
    do {                                                                                           \
        __m256 a[4][TT];                                                                           \
        for (int j = 0; j < 4; j++)                                                                \
            for (int tt = 0; tt < TT; tt++)                                                        \
                a[j][tt] = _mm256_setzero_ps();                                                    \
        for (int k = 0; k < n; k += 32) {                                                          \
            BLOCK_SETUP;                                                                           \
            for (int j = 0; j < 4; j++) {                                                          \
                __m256 w_ = W_J(j);                                                                \
                for (int tt = 0; tt < TT; tt++)                                                    \
                    a[j][tt] = _mm256_fmadd_ps(                                                    \
                        w_, _mm256_loadu_ps(X + (size_t)(t + tt) * ldx + k + 8 * j), a[j][tt]);    \
            }                                                                                      \
        }                                                                                          \
        for (int tt = 0; tt < TT; tt++)                                                            \
            Y[(size_t)(t + tt) * ldy] = hsum8(_mm256_add_ps(_mm256_add_ps(a[0][tt], a[1][tt]),     \
                                                            _mm256_add_ps(a[2][tt], a[3][tt])));   \
    } while (0)

#define F32_SETUP (void)0
#define F32_W(j) _mm256_loadu_ps((const float *)row + k + 8 * (j))

/* Q8_0: the block's scale d times the int8 values, converted in registers. */
#define Q8_SETUP                                                                                   \
    const uint8_t *blk = (const uint8_t *)row + (size_t)(k / 32) * Q8_0_BLOCK_BYTES;               \
    uint16_t dh;                                                                                   \
    memcpy(&dh, blk, 2);                                                                           \
    __m256 d = _mm256_set1_ps(_cvtsh_ss(dh))
#define Q8_W(j)                                                                                    \
    _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(                                      \
                         _mm_loadl_epi64((const __m128i *)(blk + 2 + 8 * (j))))))

#define F16_SETUP const uint8_t *hp = (const uint8_t *)row + (size_t)k * 2
#define F16_W(j) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(hp + 16 * (j))))

/* Tiles of 3 tokens (12 accumulators + 1 weight vector in registers). */
#define ROWS_FN(name, SETUP, W)                                                                    \
    QK_TARGET static void name(const void *row, int n, const float *X, int ldx, int T, float *Y,   \
                               int ldy)                                                            \
    {                                                                                              \
        int t = 0;                                                                                 \
        for (; t + 3 <= T; t += 3)                                                                 \
            TILE_BODY(3, SETUP, W);                                                                \
        if (T - t == 2)                                                                            \
            TILE_BODY(2, SETUP, W);                                                                \
        else if (T - t == 1)                                                                       \
            TILE_BODY(1, SETUP, W);                                                                \
    }

ROWS_FN(rows_avx2, F32_SETUP, F32_W)
ROWS_FN(rows_q8_avx2, Q8_SETUP, Q8_W)
ROWS_FN(rows_f16_avx2, F16_SETUP, F16_W)

/* Q8 x Q8: per block, s = sum_i wq_i * xq_i (exact int32), acc += (dw*dx) * s.
 * Two accumulators per token (even / odd blocks). n % 32 == 0.  DOT(aw, sx)
 * sums |w| * (x * sign(w)) in int32 lanes: maddubs+madd on AVX2, one dpbusd
 * with AVX-VNNI; both exact (|w| <= 128, |x| <= 127: no int16 saturation), so
 * the two variants give bitwise equal results. */
#define DOT_AVX2(aw, sx) _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), _mm256_set1_epi16(1))
#define DOT_VNNI(aw, sx) _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), aw, sx)
#define Q8Q8_TILE(TT, DOT)                                                                         \
    do {                                                                                           \
        __m256 a0[TT], a1[TT];                                                                     \
        for (int tt = 0; tt < TT; tt++)                                                            \
            a0[tt] = a1[tt] = _mm256_setzero_ps();                                                 \
        for (int b = 0; b < nb; b++) {                                                             \
            const uint8_t *blk = (const uint8_t *)row + (size_t)b * Q8_0_BLOCK_BYTES;              \
            uint16_t dh;                                                                           \
            memcpy(&dh, blk, 2);                                                                   \
            __m256 dwv = _mm256_set1_ps(_cvtsh_ss(dh));                                            \
            __m256i w = _mm256_loadu_si256((const __m256i *)(blk + 2));                            \
            __m256i aw = _mm256_sign_epi8(w, w);                                                   \
            for (int tt = 0; tt < TT; tt++) {                                                      \
                const int8_t *xp = xq + (size_t)(t + tt) * n + 32 * b;                             \
                __m256i sx = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)xp), w);         \
                __m256 sc =                                                                        \
                    _mm256_mul_ps(dwv, _mm256_broadcast_ss(xd + (size_t)(t + tt) * nb + b));       \
                __m256 f = _mm256_cvtepi32_ps(DOT(aw, sx));                                        \
                if (b & 1)                                                                         \
                    a1[tt] = _mm256_fmadd_ps(sc, f, a1[tt]);                                       \
                else                                                                               \
                    a0[tt] = _mm256_fmadd_ps(sc, f, a0[tt]);                                       \
            }                                                                                      \
        }                                                                                          \
        for (int tt = 0; tt < TT; tt++)                                                            \
            Y[(size_t)(t + tt) * ldy] = hsum8(_mm256_add_ps(a0[tt], a1[tt]));                      \
    } while (0)

#define Q8Q8_FN(name, TARGET, DOT)                                                                 \
    TARGET static void name(const void *row, int n, const int8_t *xq, const float *xd, int T,      \
                            float *Y, int ldy)                                                     \
    {                                                                                              \
        int nb = n / 32, t = 0;                                                                    \
        for (; t + 4 <= T; t += 4)                                                                 \
            Q8Q8_TILE(4, DOT);                                                                     \
        switch (T - t) {                                                                           \
        case 3:                                                                                    \
            Q8Q8_TILE(3, DOT);                                                                     \
            break;                                                                                 \
        case 2:                                                                                    \
            Q8Q8_TILE(2, DOT);                                                                     \
            break;                                                                                 \
        case 1:                                                                                    \
            Q8Q8_TILE(1, DOT);                                                                     \
            break;                                                                                 \
        default:                                                                                   \
            break;                                                                                 \
        }                                                                                          \
    }

Q8Q8_FN(rows_q8q8_avx2, QK_TARGET, DOT_AVX2)
Q8Q8_FN(rows_q8q8_vnni, __attribute__((target("avx2,fma,f16c,avxvnni"))), DOT_VNNI)

/* AVX-VNNI with unsigned activations xu = xq + 128: vpdpbusd takes u8 x s8
 * directly, and starting the accumulation at -128*sum(w) (computed once per
 * block, shared by the tile) gives exactly sum(xq*w) without the per-token
 * sign fix-up: one instruction fewer per block and token, bitwise the same
 * results as the kernels above. */
#define Q8Q8U_TILE(TT)                                                                             \
    do {                                                                                           \
        __m256 a0[TT], a1[TT];                                                                     \
        for (int tt = 0; tt < TT; tt++)                                                            \
            a0[tt] = a1[tt] = _mm256_setzero_ps();                                                 \
        for (int b = 0; b < nb; b++) {                                                             \
            const uint8_t *blk = (const uint8_t *)row + (size_t)b * Q8_0_BLOCK_BYTES;              \
            uint16_t dh;                                                                           \
            memcpy(&dh, blk, 2);                                                                   \
            __m256 dwv = _mm256_set1_ps(_cvtsh_ss(dh));                                            \
            __m256i w = _mm256_loadu_si256((const __m256i *)(blk + 2));                            \
            __m256i negc = _mm256_sub_epi32(                                                       \
                _mm256_setzero_si256(),                                                            \
                _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), _mm256_set1_epi8((char)0x80), w)); \
            for (int tt = 0; tt < TT; tt++) {                                                      \
                const uint8_t *xp = xu + (size_t)(t + tt) * n + 32 * b;                            \
                __m256i dot =                                                                      \
                    _mm256_dpbusd_avx_epi32(negc, _mm256_loadu_si256((const __m256i *)xp), w);     \
                __m256 sc =                                                                        \
                    _mm256_mul_ps(dwv, _mm256_broadcast_ss(xd + (size_t)(t + tt) * nb + b));       \
                __m256 f = _mm256_cvtepi32_ps(dot);                                                \
                if (b & 1)                                                                         \
                    a1[tt] = _mm256_fmadd_ps(sc, f, a1[tt]);                                       \
                else                                                                               \
                    a0[tt] = _mm256_fmadd_ps(sc, f, a0[tt]);                                       \
            }                                                                                      \
        }                                                                                          \
        for (int tt = 0; tt < TT; tt++)                                                            \
            Y[(size_t)(t + tt) * ldy] = hsum8(_mm256_add_ps(a0[tt], a1[tt]));                      \
    } while (0)

__attribute__((target("avx2,fma,f16c,avxvnni"))) static void rows_q8q8u_vnni(const void *row, int n,
                                                                             const uint8_t *xu,
                                                                             const float *xd, int T,
                                                                             float *Y, int ldy)
{
    int nb = n / 32, t = 0;
    for (; t + 4 <= T; t += 4)
        Q8Q8U_TILE(4);
    switch (T - t) {
    case 3:
        Q8Q8U_TILE(3);
        break;
    case 2:
        Q8Q8U_TILE(2);
        break;
    case 1:
        Q8Q8U_TILE(1);
        break;
    default:
        break;
    }
}

/* Attention helpers: 8-lane partial sums, fixed order. n % 8 == 0. */
QK_TARGET static float dot_avx2(const float *a, const float *b, int n)
{
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    return hsum8(acc);
}

QK_TARGET static void axpy_avx2(float *y, float a, const float *x, int n)
{
    __m256 av = _mm256_set1_ps(a);
    for (int i = 0; i < n; i += 8)
        _mm256_storeu_ps(y + i,
                         _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
}
#endif

static int simd_state = -1; /* -1 unknown, 0 off, 1 on */
static int vnni_state = -1;
static int simd_forced_off;

int qk_simd_active(void)
{
    if (simd_forced_off) return 0;
    if (simd_state < 0) {
#if QK_X86
        __builtin_cpu_init();
        simd_state = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                     __builtin_cpu_supports("f16c");
        vnni_state = simd_state && __builtin_cpu_supports("avxvnni");
#else
        simd_state = 0;
#endif
    }
    return simd_state;
}

void qk_force_portable(int on)
{
    simd_forced_off = on;
}

static int vnni_forced_off;

int qk_vnni_active(void)
{
    return qk_simd_active() && vnni_state > 0 && !vnni_forced_off;
}

void qk_allow_vnni(int on)
{
    vnni_forced_off = !on;
}

void qk_dequant_row(uint32_t type, const void *row, float *out, int n)
{
#if QK_X86
    if (qk_simd_active()) {
        dequant_avx2(type, row, out, n);
        return;
    }
#endif
    dequant_portable(type, row, out, n);
}

void qk_matmul(uint32_t type, const void *W, size_t row_bytes, int n, const float *X, int ldx,
               int T, float *Y, int ldy, int r0, int r1, float *scratch)
{
    const uint8_t *base = W;
#if QK_X86
    if (qk_simd_active() && n % 32 == 0) {
        /* Few tokens: dequantise in registers (memory-bound decode).  Many
         * tokens (prefill): dequantise the row once into L1 and reuse it;
         * both give bitwise the same values (see TILE_BODY). */
        bool fused = T <= 3;
        for (int r = r0; r < r1; r++) {
            const void *row = base + (size_t)r * row_bytes;
            if (r + 2 < r1) { /* software prefetch two rows ahead (see qk_matmul_q8q8) */
                const char *pf = (const char *)row + 2 * row_bytes;
                for (size_t o = 0; o < row_bytes; o += 64)
                    _mm_prefetch(pf + o, _MM_HINT_T0);
            }
            if (type == GGML_TYPE_F32) {
                rows_avx2(row, n, X, ldx, T, Y + r, ldy);
            } else if (fused && type == GGML_TYPE_Q8_0) {
                rows_q8_avx2(row, n, X, ldx, T, Y + r, ldy);
            } else if (fused) {
                rows_f16_avx2(row, n, X, ldx, T, Y + r, ldy);
            } else {
                dequant_avx2(type, row, scratch, n);
                rows_avx2(scratch, n, X, ldx, T, Y + r, ldy);
            }
        }
        return;
    }
#endif
    for (int r = r0; r < r1; r++) {
        const void *row = base + (size_t)r * row_bytes;
        const float *w = row;
        if (type != GGML_TYPE_F32) {
            dequant_portable(type, row, scratch, n);
            w = scratch;
        }
        rows_portable(w, n, X, ldx, T, Y + r, ldy);
    }
}

void qk_quantize_act(const float *x, int n, int8_t *xq, float *xd)
{
    qk_quantize_act_u(x, n, xq, NULL, xd);
}

void qk_quantize_act_u(const float *x, int n, int8_t *xq, uint8_t *xu, float *xd)
{
    for (int b = 0; b < n / 32; b++) {
        const float *xb = x + 32 * b;
        float amax = 0;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(xb[j]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        xd[b] = d;
        for (int j = 0; j < 32; j++)
            xq[32 * b + j] = (int8_t)lrintf(xb[j] * id);
    }
    if (xu)
        for (int i = 0; i < n; i++)
            xu[i] = (uint8_t)(xq[i] + 128);
}

#ifndef QK_PF_ROWS
#define QK_PF_ROWS 4
#endif

void qk_matmul_q8q8(const void *W, size_t row_bytes, int n, const int8_t *xq, const float *xd,
                    int T, float *Y, int ldy, int r0, int r1)
{
    qk_matmul_q8q8_u(W, row_bytes, n, xq, NULL, xd, T, Y, ldy, r0, r1);
}

void qk_matmul_q8q8_u(const void *W, size_t row_bytes, int n, const int8_t *xq, const uint8_t *xu,
                      const float *xd, int T, float *Y, int ldy, int r0, int r1)
{
    const uint8_t *base = W;
    int nb = n / 32;
#if QK_X86
    if (qk_simd_active()) {
        for (int r = r0; r < r1; r++) {
            /* prefetch a few rows ahead: rows are short (816 B for n = 768)
             * and the stream prefetcher ramps up slowly across pages */
            if (r + QK_PF_ROWS < r1) {
                const char *pf = (const char *)base + (size_t)(r + QK_PF_ROWS) * row_bytes;
                for (size_t o = 0; o < row_bytes; o += 64)
                    _mm_prefetch(pf + o, _MM_HINT_T0);
            }
            if (xu && T >= 2 && vnni_state > 0 && !vnni_forced_off) /* pays off from 2 tokens */
                rows_q8q8u_vnni(base + (size_t)r * row_bytes, n, xu, xd, T, Y + r, ldy);
            else if (vnni_state > 0 && !vnni_forced_off)
                rows_q8q8_vnni(base + (size_t)r * row_bytes, n, xq, xd, T, Y + r, ldy);
            else
                rows_q8q8_avx2(base + (size_t)r * row_bytes, n, xq, xd, T, Y + r, ldy);
        }
        return;
    }
#endif
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = base + (size_t)r * row_bytes;
        for (int t = 0; t < T; t++) {
            float acc = 0;
            for (int b = 0; b < nb; b++) {
                const uint8_t *blk = row + (size_t)b * Q8_0_BLOCK_BYTES;
                uint16_t dh;
                memcpy(&dh, blk, 2);
                int32_t sum = 0;
                for (int j = 0; j < 32; j++)
                    sum += (int8_t)blk[2 + j] * xq[(size_t)t * n + 32 * b + j];
                acc += qk_f16_to_f32(dh) * xd[(size_t)t * nb + b] * (float)sum;
            }
            Y[(size_t)t * ldy + r] = acc;
        }
    }
}

float qk_dot(const float *a, const float *b, int n)
{
#if QK_X86
    if (qk_simd_active() && n % 8 == 0) return dot_avx2(a, b, n);
#endif
    float s = 0;
    for (int i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

void qk_axpy(float *y, float a, const float *x, int n)
{
#if QK_X86
    if (qk_simd_active() && n % 8 == 0) {
        axpy_avx2(y, a, x, n);
        return;
    }
#endif
    for (int i = 0; i < n; i++)
        y[i] += a * x[i];
}
