/* Tensor element formats and the matrix kernels of the forward pass.
 *
 * F32, F16 (IEEE half) and Q8_0 (blocks of 32: f16 scale d + 32 int8 q, value =
 * d*q, 34 bytes).  Quantised rows are dequantised inside the matmul, one row at
 * a time into a small (L1-resident) scratch row, never up front.
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

/* 1 when the AVX2/FMA/F16C kernels are in use.  qk_force_portable(1) switches
 * them off (tests compare both paths). */
int qk_simd_active(void);
void qk_force_portable(int on);
/* 1 when the Q8 dot uses AVX-VNNI; qk_allow_vnni(0) falls back to AVX2 (tests). */
int qk_vnni_active(void);
void qk_allow_vnni(int on);

#endif
