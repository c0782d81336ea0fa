/* Tensor element formats and the matrix kernels of the forward pass.
 *
 * Formats (ggml's block layouts, little-endian, "f16" = IEEE half):
 *   F32; F16; BF16 (the top 16 bits of an f32);
 *   Q8_0  32 weights, 34 B: f16 d, int8 q[32]; w = d*q.
 *   Q4_0  32 weights, 18 B: f16 d, u8 qs[16]; w[j] = d*((qs[j] & 15) - 8),
 *         w[j+16] = d*((qs[j] >> 4) - 8).
 *   Q4_K  256 weights, 144 B: f16 d, f16 dmin, u8 scales[12] (8 6-bit scales
 *         and 8 6-bit mins packed, see qk_kscales), u8 qs[128].  Sub-block j
 *         (32 weights) has w = d*sc[j]*q - dmin*m[j]; chunk c of 64 weights
 *         takes its low 32 from the low nibbles of qs[32c..32c+32) (sub-block
 *         2c) and its high 32 from the high nibbles (sub-block 2c+1).
 *   Q5_K  256 weights, 176 B: as Q4_K plus u8 qh[32] after the scales: bit 2c
 *         of qh[l] is bit 4 of weight 64c+l, bit 2c+1 that of weight 64c+32+l.
 *   Q6_K  256 weights, 210 B: u8 ql[128], u8 qh[64], int8 scales[16], f16 d;
 *         w = d*scales[i/16]*(q - 32), q 6 bits (low 4 in ql, high 2 in qh;
 *         see dequant_q6_k for the interleave).
 * Activations meet quantised weights as llama.cpp's: Q8_0-style blocks of 32
 * (float d, int8 q) for Q8_0/Q4_0 weights, and Q8_K blocks of 256 (float d,
 * int8 q[256], int16 bsums[16] = sums of each 16 q) for the K-quants, with
 * exact int32 dot products per block.  F32/F16/BF16 rows are dequantised
 * inside the matmul (in registers, or into a small L1-resident scratch row).
 *
 * Determinism: the value computed for one (row, token) pair does not depend on
 * how many other tokens share the call, nor on which thread runs the row, so a
 * sequence decoded inside a batch gets bitwise the same logits as decoded
 * alone.  AVX2+FMA+F16C kernels are picked at run time (__builtin_cpu_supports);
 * the portable path is plain C. */
#ifndef SGPU_MODEL_QUANT_H
#define SGPU_MODEL_QUANT_H

#include <stddef.h>
#include <stdint.h>

#define QK8_0 32
#define Q8_0_BLOCK_BYTES 34

float qk_f16_to_f32(uint16_t h);
uint16_t qk_f32_to_f16(float f);

/* Quantise n floats (n % 32 == 0) to Q8_0 as ggml does (d = max|x|/127, q = round(x/d)). */
void qk_quantize_q8_0(const float *x, void *out, int n);
uint16_t qk_f32_to_bf16(float f); /* round to nearest even, as ggml */
float qk_bf16_to_f32(uint16_t h);
/* Quantise a row of n floats to any supported type (n a multiple of the
 * type's block) the way llama.cpp's reference quantisers do (Q4_0: d =
 * max/-8; Q4_K/Q5_K: weighted min+scale search per 32, 6-bit scales; Q6_K:
 * rmse-weighted scale search per 16, 8-bit scales).  -1 for other types. */
int qk_quantize_row(uint32_t type, const float *x, void *out, int n);
/* Unpack the 12 scale bytes of a Q4_K/Q5_K block into 8 scales and 8 mins. */
void qk_kscales(const uint8_t *s12, uint8_t *sc, uint8_t *mn);

/* Q8_K activations: per 256 values one float d, 256 int8 q, 16 int16 bsums.
 * q: n int8; d: n/256 floats; bsums: n/16 int16.  As ggml: d = max/-127
 * with max the value of largest magnitude. */
void qk_quantize_q8_k(const float *x, int n, int8_t *q, float *d, int16_t *bsums);
/* K-quant (Q4_K/Q5_K/Q6_K) weights x Q8_K activations, rows [r0, r1), T
 * tokens (q/d/bsums of token t at t*n, t*n/256, t*n/16).  Per block exact
 * int32 sums, then one float multiply-add per block in block order: the AVX2
 * kernels give bitwise the portable results. */
void qk_matmul_kq(uint32_t type, const void *W, size_t row_bytes, int n, const int8_t *q,
                  const float *d, const int16_t *bsums, int T, float *Y, int ldy, int r0, int r1);
/* Q4_0 weights x Q8_0-style activations (qk_quantize_act); bitwise equal paths too. */
void qk_matmul_q4_0(const void *W, size_t row_bytes, int n, const int8_t *xq, const float *xd,
                    int T, float *Y, int ldy, int r0, int r1);
/* Row of n elements of `type` -> floats. */
void qk_dequant_row(uint32_t type, const void *row, float *out, int n);

/* Y[t*ldy + r] = dot(W row r, X[t*ldx ...]) for rows r in [r0, r1), tokens t in [0, T).
 * W rows are row_bytes apart and n elements long.  scratch: n floats. */
void qk_matmul(uint32_t type, const void *W, size_t row_bytes, int n, const float *X, int ldx,
               int T, float *Y, int ldy, int r0, int r1, float *scratch);

/* Q8_0 weights x Q8 activations (as llama.cpp does): activations are
 * quantised per token in blocks of 32 (float scale xd, int8 xq), dot products
 * run on int8 with exact int32 sums, scaled by dw*dx per block.  About 3x
 * fewer instructions than dequantising the weights to floats.
 *   xq: T rows of n int8; xd: T rows of n/32 floats. */
void qk_quantize_act(const float *x, int n, int8_t *xq, float *xd);
/* Same, also writing xu = xq + 128 (unsigned form for the AVX-VNNI kernel). */
void qk_quantize_act_u(const float *x, int n, int8_t *xq, uint8_t *xu, float *xd);
void qk_matmul_q8q8(const void *W, size_t row_bytes, int n, const int8_t *xq, const float *xd,
                    int T, float *Y, int ldy, int r0, int r1);
/* With xu (may be NULL) available the AVX-VNNI path skips a sign fix-up per
 * block and token; results are bitwise the same. */
void qk_matmul_q8q8_u(const void *W, size_t row_bytes, int n, const int8_t *xq, const uint8_t *xu,
                      const float *xd, int T, float *Y, int ldy, int r0, int r1);

/* Attention helpers: dot product and y += a*x (8-lane SIMD when n % 8 == 0). */
float qk_dot(const float *a, const float *b, int n);
void qk_axpy(float *y, float a, const float *x, int n);
/* Causal attention of nq (<= QK_MULTI) consecutive queries of one head at
 * positions p0 .. p0+nq-1 over keys/values 0 .. p0+k (K, V: rows ld floats
 * apart, hd floats used): o[k] = softmax(q[k] . K_j * scale) V.  sc[k]: p0+nq
 * floats of scratch per query.  Every query's arithmetic (dot chain, max,
 * expf and sum in key order, fma(p_j, V_j, o) in key order) is the same
 * whether it runs alone or in a group, on either ISA path's own terms, so
 * prefill, chunked prefill and decode give bitwise the same outputs. */
#define QK_MULTI 4
void qk_attn_group(int nq, const float *const *q, float *const *o, float *const *sc, int p0,
                   const float *K, const float *V, size_t ld, int hd, float scale);

/* 1 when the AVX2/FMA/F16C kernels are in use.  qk_force_portable(1) switches
 * them off (tests compare both paths). */
int qk_simd_active(void);
void qk_force_portable(int on);
/* 1 when the Q8 dot uses AVX-VNNI; qk_allow_vnni(0) falls back to AVX2 (tests). */
int qk_vnni_active(void);
void qk_allow_vnni(int on);
/* qk_allow_avx512(0) keeps attention (qk_attn_group) on its AVX2 kernels
 * (tests); AVX-512 sums each score in another order, so the two paths agree
 * within rounding, each with itself bitwise. */
void qk_allow_avx512(int on);

#endif
