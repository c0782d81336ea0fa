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

/* ---- BF16, Q4_0 and K-quant formats (layouts in quant.h) ---- */

uint16_t qk_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 64); /* quiet nan */
    return (uint16_t)((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
}

float qk_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint16_t rd16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static void wr16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, 2);
}

/* round half to even, as ggml's nearest_int */
static int nearest_int(float x)
{
    return (int)lrintf(x);
}

/* branch-free, inlined into the kernels */
static inline void kscales(const uint8_t *q, uint8_t *sc, uint8_t *mn)
{
    for (int j = 0; j < 4; j++) {
        sc[j] = q[j] & 63;
        mn[j] = q[j + 4] & 63;
        sc[j + 4] = (uint8_t)((q[j + 8] & 0xF) | ((q[j] >> 6) << 4));
        mn[j + 4] = (uint8_t)((q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4));
    }
}

void qk_kscales(const uint8_t *q, uint8_t *sc, uint8_t *mn)
{
    kscales(q, sc, mn);
}

static void quantize_q4_0(const float *x, uint8_t *o, int n)
{
    for (int b = 0; b < n / 32; b++, o += 18) {
        const float *xb = x + 32 * b;
        float amax = 0, max = 0;
        for (int j = 0; j < 32; j++)
            if (fabsf(xb[j]) > amax) {
                amax = fabsf(xb[j]);
                max = xb[j];
            }
        float d = max / -8, id = d ? 1.0f / d : 0.0f;
        wr16(o, qk_f32_to_f16(d));
        for (int j = 0; j < 16; j++) {
            int a = (int)(int8_t)(xb[j] * id + 8.5f), c = (int)(int8_t)(xb[j + 16] * id + 8.5f);
            a = a > 15 ? 15 : a;
            c = c > 15 ? 15 : c;
            o[2 + j] = (uint8_t)(a | (c << 4));
        }
    }
}

/* ggml's make_qkx2_quants: the scale and min (returned in *the_min as -min)
 * of a sub-block of n weights minimising the weighted squared error over a
 * small search of scales; L gets the levels 0..nmax. */
static float make_qkx2_quants(int n, int nmax, const float *x, const float *w, uint8_t *L,
                              float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep)
{
    float min = x[0], max = x[0], sum_w = w[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0;
    }
    float iscale = (float)nmax / (max - min), scale = 1 / iscale, best_error = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
        float diff = scale * L[i] + min - x[i];
        best_error += w[i] * diff * diff;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * (x[i] - min));
            l = l < 0 ? 0 : l > nmax ? nmax : l;
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * (float)l;
            sum_l2 += w[i] * (float)l * (float)l;
            sum_xl += w[i] * (float)l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                cur_error += w[i] * diff * diff;
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* Q4_K (nmax 15) and Q5_K (nmax 31): 8 sub-blocks of 32 with a scale and a
 * min each, then 6-bit quantised scales/mins against the block's d/dmin and
 * the levels recomputed with those. */
static void quantize_k45(const float *x, uint8_t *o, int n, int nmax)
{
    size_t bb = nmax == 15 ? 144 : 176;
    for (int b = 0; b < n / 256; b++, o += bb, x += 256) {
        uint8_t L[256], Laux[32];
        float w[32], scales[8], mins[8], max_scale = 0, max_min = 0;
        for (int j = 0; j < 8; j++) {
            float sum_x2 = 0;
            for (int l = 0; l < 32; l++)
                sum_x2 += x[32 * j + l] * x[32 * j + l];
            float av_x = sqrtf(sum_x2 / 32);
            for (int l = 0; l < 32; l++)
                w[l] = av_x + fabsf(x[32 * j + l]);
            scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, w, L + 32 * j, &mins[j], Laux,
                                         nmax == 15 ? -1.0f : -0.5f, 0.1f, nmax == 15 ? 20 : 15);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
        float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
        uint8_t *s = o + 4;
        memset(s, 0, 12);
        for (int j = 0; j < 8; j++) {
            int ls = nearest_int(inv_scale * scales[j]), lm = nearest_int(inv_min * mins[j]);
            ls = ls > 63 ? 63 : ls;
            lm = lm > 63 ? 63 : lm;
            if (j < 4) {
                s[j] = (uint8_t)ls;
                s[j + 4] = (uint8_t)lm;
            } else {
                s[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
                s[j - 4] |= (uint8_t)((ls >> 4) << 6);
                s[j] |= (uint8_t)((lm >> 4) << 6);
            }
        }
        wr16(o, qk_f32_to_f16(max_scale / 63));
        wr16(o + 2, qk_f32_to_f16(max_min / 63));
        float d = qk_f16_to_f32(rd16(o)), dmin = qk_f16_to_f32(rd16(o + 2));
        uint8_t sc[8], mn[8];
        qk_kscales(s, sc, mn);
        for (int j = 0; j < 8; j++) {
            float dd = d * sc[j];
            if (!dd) continue;
            float dm = dmin * mn[j];
            for (int ii = 0; ii < 32; ii++) {
                int l = nearest_int((x[32 * j + ii] + dm) / dd);
                L[32 * j + ii] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
            }
        }
        if (nmax == 15) {
            uint8_t *q = o + 16;
            for (int j = 0; j < 256; j += 64)
                for (int l = 0; l < 32; l++)
                    *q++ = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
        } else {
            uint8_t *qh = o + 16, *ql = o + 48;
            memset(qh, 0, 32);
            uint8_t m1 = 1, m2 = 2;
            for (int j = 0; j < 256; j += 64) {
                for (int l = 0; l < 32; l++) {
                    int l1 = L[j + l], l2 = L[j + l + 32];
                    if (l1 > 15) {
                        l1 -= 16;
                        qh[l] |= m1;
                    }
                    if (l2 > 15) {
                        l2 -= 16;
                        qh[l] |= m2;
                    }
                    ql[l] = (uint8_t)(l1 | (l2 << 4));
                }
                ql += 32;
                m1 = (uint8_t)(m1 << 2);
                m2 = (uint8_t)(m2 << 2);
            }
        }
    }
}

/* ggml's make_qx_quants with rmse_type 1 (weights x^2): symmetric scale
 * for n weights, levels L in 0..2*nmax-1 (offset nmax). */
static float make_qx_quants(int n, int nmax, const float *x, int8_t *L)
{
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    if (amax < 1e-15f) {
        memset(L, 0, (size_t)n);
        return 0;
    }
    float iscale = -(float)nmax / max, sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * x[i]);
        l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f, best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -((float)nmax + 0.1f * (float)is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * x[i]);
            l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
            float w = x[i] * x[i];
            sumlx += w * x[i] * (float)l;
            suml2 += w * (float)l * (float)l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) {
                int l = nearest_int(iscale * x[i]);
                l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
                L[i] = (int8_t)(l + nmax);
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

static void quantize_q6_k(const float *x, uint8_t *o, int n)
{
    for (int b = 0; b < n / 256; b++, o += 210, x += 256) {
        int8_t L[256];
        float scales[16], max_scale = 0, max_abs = 0;
        for (int ib = 0; ib < 16; ib++) {
            scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
            if (fabsf(scales[ib]) > max_abs) {
                max_abs = fabsf(scales[ib]);
                max_scale = scales[ib];
            }
        }
        uint8_t *ql = o, *qh = o + 128;
        int8_t *sc = (int8_t *)(o + 192);
        if (max_abs < 1e-15f) {
            memset(o, 0, 210);
            continue;
        }
        float iscale = -128.0f / max_scale;
        wr16(o + 208, qk_f32_to_f16(1 / iscale));
        for (int ib = 0; ib < 16; ib++) {
            int v = nearest_int(iscale * scales[ib]);
            sc[ib] = (int8_t)(v > 127 ? 127 : v);
        }
        float d0 = qk_f16_to_f32(rd16(o + 208));
        for (int j = 0; j < 16; j++) {
            float d = d0 * sc[j];
            if (!d) continue;
            for (int ii = 0; ii < 16; ii++) {
                int l = nearest_int(x[16 * j + ii] / d);
                l = l < -32 ? -32 : l > 31 ? 31 : l;
                L[16 * j + ii] = (int8_t)(l + 32);
            }
        }
        for (int j = 0; j < 256; j += 128) {
            for (int l = 0; l < 32; l++) {
                int q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF, q3 = L[j + l + 64] & 0xF,
                    q4 = L[j + l + 96] & 0xF;
                ql[l] = (uint8_t)(q1 | (q3 << 4));
                ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
                qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                                  ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
            }
            ql += 64;
            qh += 32;
        }
    }
}

int qk_quantize_row(uint32_t type, const float *x, void *out, int n)
{
    uint8_t *o = out;
    if (n <= 0 || !ggml_row_bytes(type, (uint64_t)n)) return -1;
    switch (type) {
    case GGML_TYPE_F32:
        memcpy(o, x, (size_t)n * 4);
        return 0;
    case GGML_TYPE_F16:
        for (int i = 0; i < n; i++)
            wr16(o + 2 * i, qk_f32_to_f16(x[i]));
        return 0;
    case GGML_TYPE_BF16:
        for (int i = 0; i < n; i++)
            wr16(o + 2 * i, qk_f32_to_bf16(x[i]));
        return 0;
    case GGML_TYPE_Q8_0:
        qk_quantize_q8_0(x, o, n);
        return 0;
    case GGML_TYPE_Q4_0:
        quantize_q4_0(x, o, n);
        return 0;
    case GGML_TYPE_Q4_K:
        quantize_k45(x, o, n, 15);
        return 0;
    case GGML_TYPE_Q5_K:
        quantize_k45(x, o, n, 31);
        return 0;
    case GGML_TYPE_Q6_K:
        quantize_q6_k(x, o, n);
        return 0;
    default:
        return -1;
    }
}

static void dequant_q4_0(const uint8_t *p, float *y, int n)
{
    for (int b = 0; b < n / 32; b++, p += 18, y += 32) {
        float d = qk_f16_to_f32(rd16(p));
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)((p[2 + j] & 0xF) - 8);
            y[j + 16] = d * (float)((p[2 + j] >> 4) - 8);
        }
    }
}

static void dequant_k45(const uint8_t *p, float *y, int n, int five)
{
    for (int b = 0; b < n / 256; b++, p += five ? 176 : 144) {
        float d = qk_f16_to_f32(rd16(p)), dmin = qk_f16_to_f32(rd16(p + 2));
        uint8_t sc[8], mn[8];
        qk_kscales(p + 4, sc, mn);
        const uint8_t *qh = p + 16, *q = p + (five ? 48 : 16);
        for (int c = 0; c < 4; c++, q += 32) {
            float d1 = d * sc[2 * c], m1 = dmin * mn[2 * c];
            float d2 = d * sc[2 * c + 1], m2 = dmin * mn[2 * c + 1];
            for (int l = 0; l < 32; l++) {
                int h1 = five ? ((qh[l] >> (2 * c)) & 1) << 4 : 0;
                *y++ = d1 * (float)((q[l] & 0xF) | h1) - m1;
            }
            for (int l = 0; l < 32; l++) {
                int h2 = five ? ((qh[l] >> (2 * c + 1)) & 1) << 4 : 0;
                *y++ = d2 * (float)((q[l] >> 4) | h2) - m2;
            }
        }
    }
}

/* q6 value i (0..255) of a Q6_K block, 0..63 */
static void unpack_q6(const uint8_t *p, uint8_t *L)
{
    const uint8_t *ql = p, *qh = p + 128;
    for (int h = 0; h < 2; h++, ql += 64, qh += 32, L += 128)
        for (int l = 0; l < 32; l++) {
            L[l] = (uint8_t)((ql[l] & 0xF) | ((qh[l] & 3) << 4));
            L[l + 32] = (uint8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4));
            L[l + 64] = (uint8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
            L[l + 96] = (uint8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
        }
}

static void dequant_q6_k(const uint8_t *p, float *y, int n)
{
    for (int b = 0; b < n / 256; b++, p += 210, y += 256) {
        uint8_t L[256];
        unpack_q6(p, L);
        float d = qk_f16_to_f32(rd16(p + 208));
        const int8_t *sc = (const int8_t *)(p + 192);
        for (int i = 0; i < 256; i++)
            y[i] = d * (float)sc[i / 16] * (float)(L[i] - 32);
    }
}

static void q8_k_portable(const float *x, int n, int8_t *q, float *d, int16_t *bsums)
{
    for (int b = 0; b < n / 256; b++, x += 256, q += 256) {
        float max = 0, amax = 0;
        for (int j = 0; j < 256; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        if (!amax) {
            d[b] = 0;
            memset(q, 0, 256);
            memset(bsums + 16 * b, 0, 32);
            continue;
        }
        float iscale = -127.0f / max;
        for (int j = 0; j < 256; j++) {
            int v = nearest_int(iscale * x[j]);
            q[j] = (int8_t)(v > 127 ? 127 : v);
        }
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int i = 0; i < 16; i++)
                s += q[16 * j + i];
            bsums[16 * b + j] = (int16_t)s;
        }
        d[b] = 1 / iscale;
    }
}

/* Per block b of a K-quant row x Q8_K token: the exact integer parts.
 *   Q4_K/Q5_K: is[b] = sum_j sc[j] * dot(q_j, y_j), im[b] = sum_j m[j] * bsum_j
 *     (value = d*yd*is - dmin*yd*im);
 *   Q6_K: is[b] = sum_g sc[g] * dot(q_g, y_g) - 32 * sum_g sc[g] * bsum_g (im unused). */
static void kq_ints_portable(uint32_t type, const uint8_t *row, const int8_t *y, const int16_t *bs,
                             int nb, int32_t *is, int32_t *im, float *fd, float *fm)
{
    for (int b = 0; b < nb; b++, y += 256, bs += 16) {
        if (type == GGML_TYPE_Q6_K) {
            const uint8_t *p = row + (size_t)b * 210;
            uint8_t L[256];
            unpack_q6(p, L);
            const int8_t *sc = (const int8_t *)(p + 192);
            int32_t s = 0, bias = 0;
            for (int g = 0; g < 16; g++) {
                int32_t dg = 0;
                for (int i = 0; i < 16; i++)
                    dg += L[16 * g + i] * y[16 * g + i];
                s += sc[g] * dg;
                bias += sc[g] * bs[g];
            }
            is[b] = s - 32 * bias;
            fd[b] = qk_f16_to_f32(rd16(p + 208));
            continue;
        }
        int five = type == GGML_TYPE_Q5_K;
        const uint8_t *p = row + (size_t)b * (five ? 176 : 144);
        uint8_t sc[8], mn[8];
        kscales(p + 4, sc, mn);
        fd[b] = qk_f16_to_f32(rd16(p));
        fm[b] = qk_f16_to_f32(rd16(p + 2));
        const uint8_t *qh = p + 16, *q = p + (five ? 48 : 16);
        int32_t s = 0, m = 0;
        for (int c = 0; c < 4; c++, q += 32) {
            int32_t s0 = 0, s1 = 0;
            for (int l = 0; l < 32; l++) {
                int h1 = five ? ((qh[l] >> (2 * c)) & 1) << 4 : 0;
                int h2 = five ? ((qh[l] >> (2 * c + 1)) & 1) << 4 : 0;
                s0 += ((q[l] & 0xF) | h1) * y[64 * c + l];
                s1 += ((q[l] >> 4) | h2) * y[64 * c + 32 + l];
            }
            s += sc[2 * c] * s0 + sc[2 * c + 1] * s1;
        }
        for (int j = 0; j < 16; j++)
            m += mn[j / 2] * bs[j];
        is[b] = s;
        im[b] = m;
    }
}

/* The float part, shared by every path and kept out of line so the
 * compiler contracts it the same way whatever the caller's target. */
__attribute__((noinline)) static float kq_finish(uint32_t type, const float *yd, const int32_t *is,
                                                 const int32_t *im, const float *fd,
                                                 const float *fm, int nb, float acc)
{
    if (type == GGML_TYPE_Q6_K) {
        for (int b = 0; b < nb; b++)
            acc += (fd[b] * yd[b]) * (float)is[b];
        return acc;
    }
    for (int b = 0; b < nb; b++) {
        float a = (fd[b] * yd[b]) * (float)is[b], c = (fm[b] * yd[b]) * (float)im[b];
        acc += a - c;
    }
    return acc;
}

/* Q4_0: is[b] = sum_j (q_j - 8) * y_j over each 32-block */
static void q40_ints_portable(const uint8_t *row, const int8_t *y, int nb, int32_t *is)
{
    for (int b = 0; b < nb; b++, y += 32) {
        const uint8_t *p = row + (size_t)b * 18 + 2;
        int32_t s = 0;
        for (int j = 0; j < 16; j++)
            s += ((p[j] & 0xF) - 8) * y[j] + ((p[j] >> 4) - 8) * y[j + 16];
        is[b] = s;
    }
}

__attribute__((noinline)) static float q40_finish(const uint8_t *row, const float *yd,
                                                  const int32_t *is, int nb, float acc)
{
    for (int b = 0; b < nb; b++)
        acc += (qk_f16_to_f32(rd16(row + (size_t)b * 18)) * yd[b]) * (float)is[b];
    return acc;
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
    } else if (type == GGML_TYPE_BF16) {
        const uint8_t *p = row;
        for (int i = 0; i < n; i++)
            out[i] = qk_bf16_to_f32(rd16(p + 2 * i));
    } else if (type == GGML_TYPE_Q4_0) {
        dequant_q4_0(row, out, n);
    } else if (type == GGML_TYPE_Q4_K || type == GGML_TYPE_Q5_K) {
        dequant_k45(row, out, n, type == GGML_TYPE_Q5_K);
    } else if (type == GGML_TYPE_Q6_K) {
        dequant_q6_k(row, out, n);
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
    } else if (type == GGML_TYPE_F32) {
        memcpy(out, row, (size_t)n * 4);
    } else {
        dequant_portable(type, row, out, n);
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

/* ---- AVX2 integer parts of the K-quant / Q4_0 dots (same ints as the
 * portable functions; the float part is the shared *_finish) ---- */

QK_TARGET static inline int32_t hsum_i32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* u8 weights (< 64) times s8 activations, 32 lanes -> 16 int16 pair sums
 * (exact: 2*63*127 < 32768), times int16 scales -> 8 int32 */
QK_TARGET static inline __m256i dot_scaled(__m256i wq, __m256i y, __m256i sc16)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(wq, y), sc16);
}

/* nt (1..KQ_NT) tokens at once: the weights of a block are unpacked once
 * and dotted with each token's activations (token tt at y + tt*ys, bsums at
 * bs + tt*bss); ints of token tt go to is/im[tt*KQ_CH + b]. */
#define KQ_NT 4
#define KQ_CH 64
QK_TARGET static inline __attribute__((always_inline)) void
kq_ints_impl(uint32_t type, const uint8_t *row, const int8_t *y, size_t ys, const int16_t *bs,
             size_t bss, int nt, int nb, int32_t *is, int32_t *im, float *fd, float *fm)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int b = 0; b < nb; b++, y += 256, bs += 16) {
        __m256i acc[KQ_NT];
        for (int tt = 0; tt < nt; tt++)
            acc[tt] = _mm256_setzero_si256();
        if (type == GGML_TYPE_Q6_K) {
            const uint8_t *p = row + (size_t)b * 210;
            const uint8_t *ql = p, *qh = p + 128;
            const int8_t *sc = (const int8_t *)(p + 192);
            for (int h = 0; h < 2; h++, ql += 64, qh += 32) {
                __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
                __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
                __m256i hh = _mm256_loadu_si256((const __m256i *)qh);
                const __m256i m30 = _mm256_set1_epi8(0x30);
                __m256i v[4];
                v[0] = _mm256_or_si256(_mm256_and_si256(l0, m4),
                                       _mm256_and_si256(_mm256_slli_epi16(hh, 4), m30));
                v[1] = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                       _mm256_and_si256(_mm256_slli_epi16(hh, 2), m30));
                v[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                       _mm256_and_si256(hh, m30));
                v[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                       _mm256_and_si256(_mm256_srli_epi16(hh, 2), m30));
                for (int k = 0; k < 4; k++) {
                    int g = 8 * h + 2 * k;
                    __m256i s16 =
                        _mm256_setr_m128i(_mm_set1_epi16(sc[g]), _mm_set1_epi16(sc[g + 1]));
                    for (int tt = 0; tt < nt; tt++) {
                        __m256i yv =
                            _mm256_loadu_si256((const __m256i *)(y + tt * ys + 128 * h + 32 * k));
                        acc[tt] = _mm256_add_epi32(acc[tt], dot_scaled(v[k], yv, s16));
                    }
                }
            }
            __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
            for (int tt = 0; tt < nt; tt++) {
                __m256i bsv = _mm256_loadu_si256((const __m256i *)(bs + tt * bss));
                int32_t bias = hsum_i32(_mm256_madd_epi16(bsv, sc16));
                is[tt * KQ_CH + b] = hsum_i32(acc[tt]) - 32 * bias;
            }
            fd[b] = _cvtsh_ss(rd16(p + 208)); /* exact, as qk_f16_to_f32 */
            continue;
        }
        int five = type == GGML_TYPE_Q5_K;
        const uint8_t *p = row + (size_t)b * (five ? 176 : 144);
        /* the 12 scale bytes -> scales in bytes 0-7 of u, mins in 8-15
         * (32-bit lane arithmetic, as llama.cpp unpacks them) */
        uint32_t u[4];
        memcpy(u, p + 4, 12);
        u[3] = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
        uint32_t mlo = u[1] & 0x3f3f3f3fu;
        u[1] = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
        u[2] = mlo;
        u[0] &= 0x3f3f3f3fu;
        const uint8_t *sc = (const uint8_t *)u, *mn = sc + 8;
        fd[b] = _cvtsh_ss(rd16(p));
        fm[b] = _cvtsh_ss(rd16(p + 2));
        const uint8_t *q = p + (five ? 48 : 16);
        __m256i hb = five ? _mm256_loadu_si256((const __m256i *)(p + 16)) : _mm256_setzero_si256();
        const __m256i one = _mm256_set1_epi8(1);
        for (int c = 0; c < 4; c++, q += 32) {
            __m256i qv = _mm256_loadu_si256((const __m256i *)q);
            __m256i lo = _mm256_and_si256(qv, m4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qv, 4), m4);
            if (five) {
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hb, one), 4));
                hb = _mm256_srli_epi16(hb, 1);
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(hb, one), 4));
                hb = _mm256_srli_epi16(hb, 1);
            }
            __m256i s0 = _mm256_set1_epi16(sc[2 * c]), s1 = _mm256_set1_epi16(sc[2 * c + 1]);
            for (int tt = 0; tt < nt; tt++) {
                const int8_t *yt = y + tt * ys + 64 * c;
                __m256i y0 = _mm256_loadu_si256((const __m256i *)yt);
                __m256i y1 = _mm256_loadu_si256((const __m256i *)(yt + 32));
                acc[tt] = _mm256_add_epi32(
                    acc[tt], _mm256_add_epi32(dot_scaled(lo, y0, s0), dot_scaled(hi, y1, s1)));
            }
        }
        __m128i m8 = _mm_loadl_epi64((const __m128i *)mn);
        __m256i mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8)); /* m[j/2], j < 16 */
        for (int tt = 0; tt < nt; tt++) {
            __m256i bsv = _mm256_loadu_si256((const __m256i *)(bs + tt * bss));
            is[tt * KQ_CH + b] = hsum_i32(acc[tt]);
            im[tt * KQ_CH + b] = hsum_i32(_mm256_madd_epi16(bsv, mins));
        }
    }
}

/* specialised per token count (so the accumulators stay in registers) */
#define KQ_INTS_FN(NT)                                                                             \
    QK_TARGET static void kq_ints_avx2_##NT(uint32_t type, const uint8_t *row, const int8_t *y,    \
                                            size_t ys, const int16_t *bs, size_t bss, int nb,      \
                                            int32_t *is, int32_t *im, float *fd, float *fm)        \
    {                                                                                              \
        kq_ints_impl(type, row, y, ys, bs, bss, NT, nb, is, im, fd, fm);                           \
    }
KQ_INTS_FN(1)
KQ_INTS_FN(2)
KQ_INTS_FN(3)
KQ_INTS_FN(4)

QK_TARGET static void kq_ints_avx2(uint32_t type, const uint8_t *row, const int8_t *y, size_t ys,
                                   const int16_t *bs, size_t bss, int nt, int nb, int32_t *is,
                                   int32_t *im, float *fd, float *fm)
{
    if (nt == 1)
        kq_ints_avx2_1(type, row, y, ys, bs, bss, nb, is, im, fd, fm);
    else if (nt == 2)
        kq_ints_avx2_2(type, row, y, ys, bs, bss, nb, is, im, fd, fm);
    else if (nt == 3)
        kq_ints_avx2_3(type, row, y, ys, bs, bss, nb, is, im, fd, fm);
    else
        kq_ints_avx2_4(type, row, y, ys, bs, bss, nb, is, im, fd, fm);
}

QK_TARGET static void q40_ints_avx2(const uint8_t *row, const int8_t *y, int nb, int32_t *is)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), e8 = _mm256_set1_epi8(8),
                  ones = _mm256_set1_epi16(1);
    for (int b = 0; b < nb; b++, y += 32) {
        __m128i q = _mm_loadu_si128((const __m128i *)(row + (size_t)b * 18 + 2));
        __m256i w = _mm256_setr_m128i(q, _mm_srli_epi16(q, 4));
        w = _mm256_sub_epi8(_mm256_and_si256(w, m4), e8);
        __m256i yv = _mm256_loadu_si256((const __m256i *)y);
        __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(yv, w));
        is[b] = hsum_i32(_mm256_madd_epi16(p, ones));
    }
}

#define BF16_SETUP const uint8_t *hp = (const uint8_t *)row + (size_t)k * 2
#define BF16_W(j)                                                                                  \
    _mm256_castsi256_ps(_mm256_slli_epi32(                                                         \
        _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(hp + 16 * (j)))), 16))
ROWS_FN(rows_bf16_avx2, BF16_SETUP, BF16_W)

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

/* Scores of up to 4 queries at positions p0.. against key j (each chain is
 * dot_avx2's, in its order; the key is loaded once for all of them). */
QK_TARGET static void attn_scores_avx2(int nq, const float *const *q, float *const *sc, int p0,
                                       int pend, const float *K, size_t ld, int hd, float scale)
{
    int j = 0;
    if (nq == 4)
        for (; j <= p0; j++) {
            const float *k = K + (size_t)j * ld;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int i = 0; i < hd; i += 8) {
                __m256 kv = _mm256_loadu_ps(k + i);
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q[0] + i), kv, a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q[1] + i), kv, a1);
                a2 = _mm256_fmadd_ps(_mm256_loadu_ps(q[2] + i), kv, a2);
                a3 = _mm256_fmadd_ps(_mm256_loadu_ps(q[3] + i), kv, a3);
            }
            sc[0][j] = hsum8(a0) * scale;
            sc[1][j] = hsum8(a1) * scale;
            sc[2][j] = hsum8(a2) * scale;
            sc[3][j] = hsum8(a3) * scale;
        }
    for (; j <= pend; j++)
        for (int k = j > p0 ? j - p0 : 0; k < nq; k++)
            sc[k][j] = dot_avx2(q[k], K + (size_t)j * ld, hd) * scale;
}

/* o[k] = sum_j p[k][j] V_j over keys 0..p0+k: per element the axpy_avx2
 * sequence (fma(p, V_j, o) in j order from 0), with 16 output floats of each
 * query held in registers across the keys. */
QK_TARGET static void attn_out_avx2(int nq, float *const *o, float *const *p, int p0, int pend,
                                    const float *V, size_t ld, int hd)
{
    for (int i = 0; i < hd; i += 16) {
        __m256 acc[4][2];
        for (int k = 0; k < 4; k++)
            acc[k][0] = acc[k][1] = _mm256_setzero_ps();
        int j = 0;
        if (nq == 4)
            for (; j <= p0; j++) {
                const float *v = V + (size_t)j * ld + i;
                __m256 v0 = _mm256_loadu_ps(v), v1 = _mm256_loadu_ps(v + 8);
                __m256 b0 = _mm256_broadcast_ss(p[0] + j), b1 = _mm256_broadcast_ss(p[1] + j);
                __m256 b2 = _mm256_broadcast_ss(p[2] + j), b3 = _mm256_broadcast_ss(p[3] + j);
                acc[0][0] = _mm256_fmadd_ps(b0, v0, acc[0][0]);
                acc[0][1] = _mm256_fmadd_ps(b0, v1, acc[0][1]);
                acc[1][0] = _mm256_fmadd_ps(b1, v0, acc[1][0]);
                acc[1][1] = _mm256_fmadd_ps(b1, v1, acc[1][1]);
                acc[2][0] = _mm256_fmadd_ps(b2, v0, acc[2][0]);
                acc[2][1] = _mm256_fmadd_ps(b2, v1, acc[2][1]);
                acc[3][0] = _mm256_fmadd_ps(b3, v0, acc[3][0]);
                acc[3][1] = _mm256_fmadd_ps(b3, v1, acc[3][1]);
            }
        for (; j <= pend; j++) {
            const float *v = V + (size_t)j * ld + i;
            __m256 v0 = _mm256_loadu_ps(v), v1 = _mm256_loadu_ps(v + 8);
            for (int k = j > p0 ? j - p0 : 0; k < nq; k++) {
                __m256 b = _mm256_broadcast_ss(p[k] + j);
                acc[k][0] = _mm256_fmadd_ps(b, v0, acc[k][0]);
                acc[k][1] = _mm256_fmadd_ps(b, v1, acc[k][1]);
            }
        }
        for (int k = 0; k < nq; k++) {
            _mm256_storeu_ps(o[k] + i, acc[k][0]);
            _mm256_storeu_ps(o[k] + i + 8, acc[k][1]);
        }
    }
}
/* Activation quantisers: the portable functions' arithmetic, 8 lanes at a
 * time (max of |x| is exact in any order; one division, one multiply and a
 * round-to-nearest-even conversion per value, as lrintf), so bitwise the
 * same outputs. */
QK_TARGET static inline __m256i pack8x4(__m256 a, __m256 b, __m256 c, __m256 d)
{
    __m256i ab = _mm256_packs_epi32(_mm256_cvtps_epi32(a), _mm256_cvtps_epi32(b));
    __m256i cd = _mm256_packs_epi32(_mm256_cvtps_epi32(c), _mm256_cvtps_epi32(d));
    return _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd),
                                       _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

QK_TARGET static inline float hmax8(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

QK_TARGET static void act_u_avx2(const float *x, int n, int8_t *xq, uint8_t *xu, float *xd)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int b = 0; b < n / 32; b++) {
        const float *xb = x + 32 * b;
        __m256 v[4], m = _mm256_setzero_ps();
        for (int j = 0; j < 4; j++) {
            v[j] = _mm256_loadu_ps(xb + 8 * j);
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[j]));
        }
        float d = hmax8(m) / 127.0f, id = d ? 1.0f / d : 0.0f;
        xd[b] = d;
        __m256 idv = _mm256_set1_ps(id);
        __m256i q = pack8x4(_mm256_mul_ps(v[0], idv), _mm256_mul_ps(v[1], idv),
                            _mm256_mul_ps(v[2], idv), _mm256_mul_ps(v[3], idv));
        _mm256_storeu_si256((__m256i *)(xq + 32 * b), q);
        if (xu)
            _mm256_storeu_si256((__m256i *)(xu + 32 * b),
                                _mm256_xor_si256(q, _mm256_set1_epi8((char)0x80)));
    }
}

QK_TARGET static void q8_k_avx2(const float *x, int n, int8_t *q, float *d, int16_t *bsums)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int b = 0; b < n / 256; b++, x += 256, q += 256) {
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < 256; j += 8)
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
        float amax = hmax8(m);
        if (!amax) {
            d[b] = 0;
            memset(q, 0, 256);
            memset(bsums + 16 * b, 0, 32);
            continue;
        }
        int j = 0; /* the first value of largest magnitude, with its sign */
        while (fabsf(x[j]) != amax)
            j++;
        float iscale = -127.0f / x[j];
        __m256 is = _mm256_set1_ps(iscale);
        for (int k = 0; k < 256; k += 32) {
            __m256i v = pack8x4(_mm256_mul_ps(is, _mm256_loadu_ps(x + k)),
                                _mm256_mul_ps(is, _mm256_loadu_ps(x + k + 8)),
                                _mm256_mul_ps(is, _mm256_loadu_ps(x + k + 16)),
                                _mm256_mul_ps(is, _mm256_loadu_ps(x + k + 24)));
            v = _mm256_min_epi8(v, _mm256_set1_epi8(127));
            _mm256_storeu_si256((__m256i *)(q + k), v);
            /* sums of 16: int8 -> int16 pairs, then 8 pairs per 16 */
            __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), v);
            __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
            __m128i t =
                _mm_hadd_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
            t = _mm_hadd_epi32(t, t);
            bsums[16 * b + k / 16] = (int16_t)_mm_extract_epi32(t, 0);
            bsums[16 * b + k / 16 + 1] = (int16_t)_mm_extract_epi32(t, 1);
        }
        d[b] = 1 / iscale;
    }
}
/* expf on 8 lanes for x <= 0 (softmax): x = n ln2 + r, |r| <= ln2/2, a
 * degree-6 polynomial for e^r (Cephes' expf coefficients, ~1 ulp), times
 * 2^n; below -87.3 the result is 0. */
QK_TARGET static inline __m256 exp_neg_avx2(__m256 x)
{
    const __m256 lo = _mm256_set1_ps(-87.3f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(x, lo);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

/* s[0..n) -> softmax(s), in place: max, exp(s - max) and their sum on 8
 * lanes (a fixed order for a given n), then s * (1 / sum). */
QK_TARGET static void softmax_avx2(float *s, int n)
{
    __m256 mv = _mm256_set1_ps(-INFINITY);
    int j = 0;
    for (; j + 8 <= n; j += 8)
        mv = _mm256_max_ps(mv, _mm256_loadu_ps(s + j));
    float mx = hmax8(mv);
    for (int i = j; i < n; i++)
        if (s[i] > mx) mx = s[i];
    __m256 m = _mm256_set1_ps(mx), sum = _mm256_setzero_ps();
    for (j = 0; j + 8 <= n; j += 8) {
        __m256 e = exp_neg_avx2(_mm256_sub_ps(_mm256_loadu_ps(s + j), m));
        _mm256_storeu_ps(s + j, e);
        sum = _mm256_add_ps(sum, e);
    }
    if (j < n) { /* the tail padded with -inf, whose exp is 0 */
        float t[8];
        for (int i = 0; i < 8; i++)
            t[i] = j + i < n ? s[j + i] : -INFINITY;
        __m256 e = exp_neg_avx2(_mm256_sub_ps(_mm256_loadu_ps(t), m));
        _mm256_storeu_ps(t, e);
        sum = _mm256_add_ps(sum, e);
        for (int i = 0; j + i < n; i++)
            s[j + i] = t[i];
    }
    __m256 inv = _mm256_set1_ps(1.0f / hsum8(sum));
    for (j = 0; j + 8 <= n; j += 8)
        _mm256_storeu_ps(s + j, _mm256_mul_ps(_mm256_loadu_ps(s + j), inv));
    for (; j < n; j++)
        s[j] = s[j] * _mm256_cvtss_f32(inv);
}
/* ---- AVX-512 attention (AVX512F/DQ, chosen at run time) ----
 * Scores: per query, 16 keys at a time, 16-lane fma chains over the head
 * dimension and a fixed transposing tree that sums each key's lanes (the
 * result for one (query, key) depends on nothing else in the block: decode
 * and prefill agree bitwise).  Output: as attn_out_avx2 (the same fma per
 * element, in key order), 64 floats of 4 queries in registers. */
#define QK512 __attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma,f16c")))

QK512 static inline __m512 reduce16_ps(const __m512 *v)
{
    __m512 u[8], w[4], g[2];
    for (int k = 0; k < 8; k++)
        u[k] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * k], v[2 * k + 1]),
                             _mm512_unpackhi_ps(v[2 * k], v[2 * k + 1]));
    for (int k = 0; k < 4; k++) {
        __m512d a = _mm512_castps_pd(u[2 * k]), b = _mm512_castps_pd(u[2 * k + 1]);
        w[k] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
    }
    for (int k = 0; k < 2; k++)
        g[k] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * k], w[2 * k + 1], 0x88),
                             _mm512_shuffle_f32x4(w[2 * k], w[2 * k + 1], 0xdd));
    return _mm512_add_ps(_mm512_shuffle_f32x4(g[0], g[1], 0x88),
                         _mm512_shuffle_f32x4(g[0], g[1], 0xdd));
}

QK512 static void attn_scores_avx512(int nq, const float *const *q, float *const *sc, int p0,
                                     const float *K, size_t ld, int hd, float scale)
{
    int pend = p0 + nq - 1;
    const __m512 sv = _mm512_set1_ps(scale);
    for (int j0 = 0; j0 <= pend; j0 += 16) {
        const float *kr[16]; /* rows past the last key repeat it (lanes unused) */
        for (int jj = 0; jj < 16; jj++)
            kr[jj] = K + (size_t)(j0 + jj <= pend ? j0 + jj : pend) * ld;
        for (int k = 0; k < nq; k++) {
            int last = p0 + k; /* query k sees keys 0..last */
            if (j0 > last) continue;
            __m512 acc[16];
            for (int jj = 0; jj < 16; jj++)
                acc[jj] = _mm512_setzero_ps();
            for (int i = 0; i < hd; i += 16) {
                __m512 qv = _mm512_loadu_ps(q[k] + i);
                for (int jj = 0; jj < 16; jj++)
                    acc[jj] = _mm512_fmadd_ps(qv, _mm512_loadu_ps(kr[jj] + i), acc[jj]);
            }
            __m512 r = _mm512_mul_ps(reduce16_ps(acc), sv);
            int nk = last - j0 + 1 < 16 ? last - j0 + 1 : 16;
            _mm512_mask_storeu_ps(sc[k] + j0, (__mmask16)((1u << nk) - 1), r);
        }
    }
}

QK512 static void attn_out_avx512(int nq, float *const *o, float *const *p, int p0, int pend,
                                  const float *V, size_t ld, int hd)
{
    for (int i = 0; i < hd; i += 64) {
        __m512 acc[4][4];
        for (int k = 0; k < 4; k++)
            for (int u = 0; u < 4; u++)
                acc[k][u] = _mm512_setzero_ps();
        int j = 0;
        if (nq == 4)
            for (; j <= p0; j++) {
                const float *v = V + (size_t)j * ld + i;
                __m512 v0 = _mm512_loadu_ps(v), v1 = _mm512_loadu_ps(v + 16);
                __m512 v2 = _mm512_loadu_ps(v + 32), v3 = _mm512_loadu_ps(v + 48);
                for (int k = 0; k < 4; k++) {
                    __m512 b = _mm512_set1_ps(p[k][j]);
                    acc[k][0] = _mm512_fmadd_ps(b, v0, acc[k][0]);
                    acc[k][1] = _mm512_fmadd_ps(b, v1, acc[k][1]);
                    acc[k][2] = _mm512_fmadd_ps(b, v2, acc[k][2]);
                    acc[k][3] = _mm512_fmadd_ps(b, v3, acc[k][3]);
                }
            }
        for (; j <= pend; j++) {
            const float *v = V + (size_t)j * ld + i;
            __m512 v0 = _mm512_loadu_ps(v), v1 = _mm512_loadu_ps(v + 16);
            __m512 v2 = _mm512_loadu_ps(v + 32), v3 = _mm512_loadu_ps(v + 48);
            for (int k = j > p0 ? j - p0 : 0; k < nq; k++) {
                __m512 b = _mm512_set1_ps(p[k][j]);
                acc[k][0] = _mm512_fmadd_ps(b, v0, acc[k][0]);
                acc[k][1] = _mm512_fmadd_ps(b, v1, acc[k][1]);
                acc[k][2] = _mm512_fmadd_ps(b, v2, acc[k][2]);
                acc[k][3] = _mm512_fmadd_ps(b, v3, acc[k][3]);
            }
        }
        for (int k = 0; k < nq; k++)
            for (int u = 0; u < 4; u++)
                _mm512_storeu_ps(o[k] + i + 16 * u, acc[k][u]);
    }
}
#endif

static int simd_state = -1; /* -1 unknown, 0 off, 1 on */
static int vnni_state = -1;
static int avx512_state = -1;
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
        avx512_state = simd_state && __builtin_cpu_supports("avx512f") &&
                       __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
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
static int avx512_forced_off;

int qk_vnni_active(void)
{
    return qk_simd_active() && vnni_state > 0 && !vnni_forced_off;
}

void qk_allow_vnni(int on)
{
    vnni_forced_off = !on;
}

void qk_allow_avx512(int on)
{
    avx512_forced_off = !on;
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
            } else if (fused && type == GGML_TYPE_F16) {
                rows_f16_avx2(row, n, X, ldx, T, Y + r, ldy);
            } else if (fused && type == GGML_TYPE_BF16) {
                rows_bf16_avx2(row, n, X, ldx, T, Y + r, ldy);
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

static void act_u_portable(const float *x, int n, int8_t *xq, uint8_t *xu, float *xd)
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

void qk_quantize_act_u(const float *x, int n, int8_t *xq, uint8_t *xu, float *xd)
{
#if QK_X86
    if (qk_simd_active()) {
        act_u_avx2(x, n, xq, xu, xd);
        return;
    }
#endif
    act_u_portable(x, n, xq, xu, xd);
}

void qk_quantize_q8_k(const float *x, int n, int8_t *q, float *d, int16_t *bsums)
{
#if QK_X86
    if (qk_simd_active()) {
        q8_k_avx2(x, n, q, d, bsums);
        return;
    }
#endif
    q8_k_portable(x, n, q, d, bsums);
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

void qk_attn_group(int nq, const float *const *q, float *const *o, float *const *sc, int p0,
                   const float *K, const float *V, size_t ld, int hd, float scale)
{
    int pend = p0 + nq - 1;
#if QK_X86
    bool simd = qk_simd_active() && hd % 16 == 0 && nq <= 4;
    bool a512 = simd && avx512_state > 0 && !avx512_forced_off && hd % 64 == 0;
    if (a512)
        attn_scores_avx512(nq, q, sc, p0, K, ld, hd, scale);
    else if (simd)
        attn_scores_avx2(nq, q, sc, p0, pend, K, ld, hd, scale);
    else
#endif
        for (int j = 0; j <= pend; j++)
            for (int k = j > p0 ? j - p0 : 0; k < nq; k++)
                sc[k][j] = qk_dot(q[k], K + (size_t)j * ld, hd) * scale;
    for (int k = 0; k < nq; k++) {
        int n = p0 + k + 1;
#if QK_X86
        if (simd) {
            softmax_avx2(sc[k], n);
            continue;
        }
#endif
        float mx = -INFINITY, sum = 0;
        for (int j = 0; j < n; j++)
            if (sc[k][j] > mx) mx = sc[k][j];
        for (int j = 0; j < n; j++) {
            sc[k][j] = expf(sc[k][j] - mx);
            sum += sc[k][j];
        }
        float inv = 1.0f / sum;
        for (int j = 0; j < n; j++)
            sc[k][j] = sc[k][j] * inv;
    }
#if QK_X86
    if (a512) {
        attn_out_avx512(nq, o, sc, p0, pend, V, ld, hd);
        return;
    }
    if (simd) {
        attn_out_avx2(nq, o, sc, p0, pend, V, ld, hd);
        return;
    }
#endif
    for (int k = 0; k < nq; k++) {
        for (int i = 0; i < hd; i++)
            o[k][i] = 0;
        for (int j = 0; j <= p0 + k; j++)
            qk_axpy(o[k], sc[k][j], V + (size_t)j * ld, hd);
    }
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

/* Chunks of KQ_CH blocks: the integer parts of a (row, token) go to a small
 * stack array, then the shared float part accumulates them in block order. */
#ifndef KQ_CH
#define KQ_CH 64
#endif

void qk_matmul_kq(uint32_t type, const void *W, size_t row_bytes, int n, const int8_t *q,
                  const float *d, const int16_t *bsums, int T, float *Y, int ldy, int r0, int r1)
{
    const uint8_t *base = W;
    int nb = n / 256;
    size_t bb = ggml_row_bytes(type, 256);
    int32_t is[4 * KQ_CH], im[4 * KQ_CH];
    float fd[KQ_CH], fm[KQ_CH];
#if QK_X86
    if (qk_simd_active()) {
        for (int r = r0; r < r1; r++) {
            const uint8_t *row = base + (size_t)r * row_bytes;
            if (r + QK_PF_ROWS < r1) {
                const char *pf = (const char *)base + (size_t)(r + QK_PF_ROWS) * row_bytes;
                for (size_t o = 0; o < row_bytes; o += 64)
                    _mm_prefetch(pf + o, _MM_HINT_T0);
            }
            /* up to KQ_NT tokens share each unpacked weight block */
            for (int t0 = 0; t0 < T; t0 += KQ_NT) {
                int nt = T - t0 < KQ_NT ? T - t0 : KQ_NT;
                float acc[KQ_NT] = {0};
                for (int b0 = 0; b0 < nb; b0 += KQ_CH) {
                    int m = nb - b0 < KQ_CH ? nb - b0 : KQ_CH;
                    kq_ints_avx2(type, row + (size_t)b0 * bb, q + (size_t)t0 * n + (size_t)b0 * 256,
                                 (size_t)n, bsums + (size_t)t0 * (n / 16) + (size_t)b0 * 16,
                                 (size_t)(n / 16), nt, m, is, im, fd, fm);
                    for (int tt = 0; tt < nt; tt++)
                        acc[tt] = kq_finish(type, d + (size_t)(t0 + tt) * nb + b0, is + tt * KQ_CH,
                                            im + tt * KQ_CH, fd, fm, m, acc[tt]);
                }
                for (int tt = 0; tt < nt; tt++)
                    Y[(size_t)(t0 + tt) * ldy + r] = acc[tt];
            }
        }
        return;
    }
#endif
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = base + (size_t)r * row_bytes;
        for (int t = 0; t < T; t++) {
            float acc = 0;
            for (int b0 = 0; b0 < nb; b0 += KQ_CH) {
                int m = nb - b0 < KQ_CH ? nb - b0 : KQ_CH;
                const uint8_t *rb = row + (size_t)b0 * bb;
                const int8_t *y = q + (size_t)t * n + (size_t)b0 * 256;
                const int16_t *bs = bsums + (size_t)t * (n / 16) + (size_t)b0 * 16;
                kq_ints_portable(type, rb, y, bs, m, is, im, fd, fm);
                acc = kq_finish(type, d + (size_t)t * nb + b0, is, im, fd, fm, m, acc);
            }
            Y[(size_t)t * ldy + r] = acc;
        }
    }
}

void qk_matmul_q4_0(const void *W, size_t row_bytes, int n, const int8_t *xq, const float *xd,
                    int T, float *Y, int ldy, int r0, int r1)
{
    const uint8_t *base = W;
    int nb = n / 32;
#if QK_X86
    bool simd = qk_simd_active();
#endif
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = base + (size_t)r * row_bytes;
#if QK_X86
        if (simd && r + QK_PF_ROWS < r1) {
            const char *pf = (const char *)base + (size_t)(r + QK_PF_ROWS) * row_bytes;
            for (size_t o = 0; o < row_bytes; o += 64)
                _mm_prefetch(pf + o, _MM_HINT_T0);
        }
#endif
        for (int t = 0; t < T; t++) {
            float acc = 0;
            for (int b0 = 0; b0 < nb; b0 += KQ_CH) {
                int m = nb - b0 < KQ_CH ? nb - b0 : KQ_CH;
                int32_t is[KQ_CH];
                const uint8_t *rb = row + (size_t)b0 * 18;
                const int8_t *y = xq + (size_t)t * n + (size_t)b0 * 32;
#if QK_X86
                if (simd)
                    q40_ints_avx2(rb, y, m, is);
                else
#endif
                    q40_ints_portable(rb, y, m, is);
                acc = q40_finish(rb, xd + (size_t)t * nb + b0, is, m, acc);
            }
            Y[(size_t)t * ldy + r] = acc;
        }
    }
}
