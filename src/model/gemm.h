/* Matrix-matrix products for prompt processing (prefill): Y = X W^T for many
 * tokens at once.
 *
 * The decode kernels of quant.c compute one weight row against every token of
 * the call; with a long prompt that streams all T activation rows (T x cols,
 * e.g. 512 x 2048 int8 = 1 MiB) from L2/L3 once per weight row.  gemm_run
 * instead cuts the output into tiles of GEMM_TILE_ROWS weight rows (a tile's
 * weights stay in L2) and walks the tokens in blocks whose activations fit in
 * L1, so each weight byte and each activation byte is fetched from memory
 * about once per tile; inside a block the quant.c micro-kernels keep a 1 row
 * x 4 token tile in registers.  Threads take output tiles from a shared
 * counter (no static split: on a loaded machine a slow thread takes fewer).
 *
 * Numerics: every (row, token) value goes through the same kernel and the same
 * accumulation order as the decode path (quant.c), so prefill through
 * gemm_run is bitwise equal to token-by-token decoding, on every ISA path
 * (portable C, AVX2, AVX-VNNI chosen at run time by quant.c).
 *
 * Weight types: F32, F16, BF16 (against F32 activations), Q8_0 and Q4_0
 * (against Q8_0-style activations), Q4_K, Q5_K, Q6_K (against Q8_K
 * activations).  gemm_supported() says no for any other type; the caller then
 * keeps its per-token path. */
#ifndef SGPU_MODEL_GEMM_H
#define SGPU_MODEL_GEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pool.h"

/* Below this many tokens the decode path is as fast (activations fit in L1). */
#define GEMM_MIN_TOKENS 16
/* Weight rows per output tile. */
#define GEMM_TILE_ROWS 32

/* One weight matrix [rows][cols] (rows row_bytes apart) and its output
 * Y[t * ldy + r]. */
struct gemm_mat {
    uint32_t type;
    const void *data;
    int rows, cols;
    size_t row_bytes;
    float *y;
    int ldy;
};

bool gemm_supported(uint32_t type);

/* Activations shared by the matrices of one call: x is T rows of cols floats
 * (cols = every matrix's cols).  When any matrix is Q8_0 or Q4_0, x is
 * quantised here (in parallel) into xq/xu/xd (T*cols int8, T*cols uint8,
 * T*cols/32 floats, as qk_quantize_act_u writes them); when any is a K-quant,
 * into kq/kd/kbs (T*cols int8, T*cols/256 floats, T*cols/16 int16, as
 * qk_quantize_q8_k writes them; cols a multiple of 256).  With the AVX-512
 * kernels xu and kq go to gemm_run's own 64-byte aligned buffers instead
 * (the call's are scratch either way).  scratch: one buffer of cols floats
 * per pool thread (F16/BF16 rows are dequantised into it on the AVX2 path).
 * n_mats <= 4. */
struct gemm_call {
    const struct gemm_mat *mats;
    int n_mats;
    const float *x;
    int T;
    int8_t *xq;
    uint8_t *xu;
    float *xd;
    int8_t *kq;
    float *kd;
    int16_t *kbs;
    float **scratch;
};

/* 0, or -1 (nothing done) if a type is unsupported or the shapes disagree. */
int gemm_run(struct pool *pool, const struct gemm_call *call);

/* gemm_allow_avx512(0) keeps gemm_run off its AVX-512 kernels (tests compare
 * both; results are bitwise the same). */
void gemm_allow_avx512(int on);

#endif
