/* Formats and matmul kernels; see quant.h. */
#include "quant.h"

#include <math.h>
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
    if (absx < 0x38800000u) { /* subnormal or zero in half */
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
        for (int j = 0; j < QK8_0; j++) amax = fmaxf(amax, fabsf(xb[j]));
        float d = amax / 127.0f;
        float id = d ? 1.0f / d : 0.0f;
        uint16_t dh = qk_f32_to_f16(d);
        memcpy(o, &dh, 2);
        for (int j = 0; j < QK8_0; j++) o[2 + j] = (uint8_t)(int8_t)roundf(xb[j] * id);
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
            for (int j = 0; j < QK8_0; j++) out[b * QK8_0 + j] = d * (float)(int8_t)p[2 + j];
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
            for (int j = 0; j < 8; j++) acc[j] += w[k + j] * x[k + j];
        float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        for (; k < n; k++) s += w[k] * x[k];
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
            _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 2 * i))));
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

/* TT tokens against one row: per token two accumulators (even/odd 8-lane
 * chunks of each 16), summed in a fixed order, so a token's result does not
 * depend on TT. n % 16 == 0. */
#define ROWS_TILE(TT)                                                                            \
    do {                                                                                         \
        __m256 a0[TT], a1[TT];                                                                   \
        for (int tt = 0; tt < TT; tt++) a0[tt] = a1[tt] = _mm256_setzero_ps();                    \
        for (int k = 0; k < n; k += 16) {                                                        \
            __m256 w0 = _mm256_loadu_ps(w + k), w1 = _mm256_loadu_ps(w + k + 8);                \
            for (int tt = 0; tt < TT; tt++) {                                                    \
                const float *x = X + (size_t)(t + tt) * ldx + k;                                 \
                a0[tt] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x), a0[tt]);                        \
                a1[tt] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + 8), a1[tt]);                    \
            }                                                                                    \
        }                                                                                        \
        for (int tt = 0; tt < TT; tt++)                                                          \
            Y[(size_t)(t + tt) * ldy] = hsum8(_mm256_add_ps(a0[tt], a1[tt]));                    \
    } while (0)

QK_TARGET static void rows_avx2(const float *w, int n, const float *X, int ldx, int T, float *Y,
                                int ldy)
{
    int t = 0;
    for (; t + 6 <= T; t += 6) ROWS_TILE(6);
    switch (T - t) {
    case 5: ROWS_TILE(5); break;
    case 4: ROWS_TILE(4); break;
    case 3: ROWS_TILE(3); break;
    case 2: ROWS_TILE(2); break;
    case 1: ROWS_TILE(1); break;
    default: break;
    }
}
#endif

static int simd_state = -1; /* -1 unknown, 0 off, 1 on */
static int simd_forced_off;

int qk_simd_active(void)
{
    if (simd_forced_off) return 0;
    if (simd_state < 0) {
#if QK_X86
        __builtin_cpu_init();
        simd_state = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                     __builtin_cpu_supports("f16c");
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
    if (qk_simd_active() && n % 16 == 0) {
        for (int r = r0; r < r1; r++) {
            const void *row = base + (size_t)r * row_bytes;
            const float *w = row;
            if (type != GGML_TYPE_F32) {
                dequant_avx2(type, row, scratch, n);
                w = scratch;
            }
            rows_avx2(w, n, X, ldx, T, Y + r, ldy);
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
