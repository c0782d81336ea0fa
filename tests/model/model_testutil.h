/* Shared helpers for the model unit tests: a small random Llama held as plain
 * float arrays, written to GGUF in any weight type, and a deliberately naive
 * double-precision reference forward pass (no caching, no batching, no SIMD,
 * straight from the formulas) to check the real implementation against. */
#ifndef SGPU_TESTS_MODEL_TESTUTIL_H
#define SGPU_TESTS_MODEL_TESTUTIL_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "model/gguf.h"
#include "model/llama.h"
#include "model/quant.h"
#include "model/tiny.h"
#include "sbuf.h"

#define TW_MAXL 4

struct tw {
    int d, nh, nkv, hd, ff, nl, nv;
    float base, eps;
    bool tied;
    bool qwen2; /* Q/K/V biases, NEOX rotary pairs (i, i + hd/2), qwen2.* keys */
    float *emb, *outn, *out;
    struct {
        float *an, *fn, *q, *k, *v, *o, *g, *dn, *u;
        float *bq, *bk, *bv; /* qwen2 only */
    } L[TW_MAXL];
};

/* Weight types of a test file: base for every matrix; with km, as
 * llama.cpp's Q4_K_M: output and attn_v/ffn_down of use_more_bits layers in hi. */
struct tw_types {
    uint32_t base, hi;
    bool km;
};

static __attribute__((unused)) bool tw_more_bits(int l, int n)
{
    return l < n / 8 || l >= 7 * n / 8 || (l - n / 8) % 3 == 2;
}

/* kind: 'e' embedding, 'o' output, 'v' attn_v, 'd' ffn_down, 'm' other matrices */
static __attribute__((unused)) uint32_t tw_type_of(const struct tw_types *ty, char kind, int l,
                                                   int nl)
{
    if (!ty->km) return ty->base;
    if (kind == 'o') return ty->hi;
    if ((kind == 'v' || kind == 'd') && tw_more_bits(l, nl)) return ty->hi;
    return ty->base;
}

static __attribute__((unused)) float *tw_mat(int n, float scale, float offset, uint64_t *rng)
{
    float *p = malloc((size_t)n * sizeof *p);
    for (int i = 0; i < n; i++)
        p[i] = offset + scale * tiny_randf(rng);
    return p;
}

/* d and ff: 64/96 by default; K-quant tests use multiples of 256 */
static __attribute__((unused)) void tw_random_dims(struct tw *w, uint64_t seed, bool tied, int d_,
                                                   int ff_, bool qwen2)
{
    memset(w, 0, sizeof *w);
    w->d = d_;
    w->nh = 4;
    w->nkv = 2;
    w->hd = d_ / 4;
    w->ff = ff_;
    w->nl = 2;
    w->qwen2 = qwen2;
    w->nv = 50;
    w->base = 10000.0f;
    w->eps = 1e-5f;
    w->tied = tied;
    uint64_t r = seed;
    int d = w->d, dkv = w->nkv * w->hd;
    float s = sqrtf(3.0f / (float)d);
    w->emb = tw_mat(w->nv * d, 1.0f, 0, &r);
    w->outn = tw_mat(d, 0.2f, 1.0f, &r);
    w->out = tied ? w->emb : tw_mat(w->nv * d, 2 * s, 0, &r);
    for (int l = 0; l < w->nl; l++) {
        w->L[l].an = tw_mat(d, 0.2f, 1.0f, &r);
        w->L[l].fn = tw_mat(d, 0.2f, 1.0f, &r);
        w->L[l].q = tw_mat(d * d, 2 * s, 0, &r);
        w->L[l].k = tw_mat(dkv * d, 2 * s, 0, &r);
        w->L[l].v = tw_mat(dkv * d, s, 0, &r);
        w->L[l].o = tw_mat(d * d, s, 0, &r);
        w->L[l].g = tw_mat(w->ff * d, s, 0, &r);
        w->L[l].u = tw_mat(w->ff * d, s, 0, &r);
        w->L[l].dn = tw_mat(d * w->ff, sqrtf(3.0f / (float)w->ff), 0, &r);
        if (qwen2) {
            w->L[l].bq = tw_mat(d, 0.5f, 0, &r);
            w->L[l].bk = tw_mat(dkv, 0.5f, 0, &r);
            w->L[l].bv = tw_mat(dkv, 0.5f, 0, &r);
        }
    }
}

static __attribute__((unused)) void tw_random(struct tw *w, uint64_t seed, bool tied)
{
    tw_random_dims(w, seed, tied, 64, 96, false);
}

static __attribute__((unused)) void tw_free(struct tw *w)
{
    free(w->emb);
    free(w->outn);
    if (!w->tied) free(w->out);
    for (int l = 0; l < w->nl; l++) {
        free(w->L[l].an);
        free(w->L[l].fn);
        free(w->L[l].q);
        free(w->L[l].k);
        free(w->L[l].v);
        free(w->L[l].o);
        free(w->L[l].g);
        free(w->L[l].u);
        free(w->L[l].dn);
        free(w->L[l].bq);
        free(w->L[l].bk);
        free(w->L[l].bv);
    }
}

/* The test's own dequantisation of one value array (round trip through the
 * storage format), so the reference can run on exactly the stored values. */
static __attribute__((unused)) void tw_roundtrip(float *p, int rows, int cols, uint32_t type)
{
    if (type == GGML_TYPE_F32) return;
    uint8_t *buf = malloc(ggml_row_bytes(type, (uint64_t)cols));
    for (int r = 0; r < rows; r++) {
        float *x = p + (size_t)r * cols;
        if (type == GGML_TYPE_F16) {
            for (int c = 0; c < cols; c++)
                x[c] = qk_f16_to_f32(qk_f32_to_f16(x[c]));
        } else if (type != GGML_TYPE_Q8_0) {
            /* the layouts themselves are checked against hand-built blocks in test_quant */
            qk_quantize_row(type, x, buf, cols);
            qk_dequant_row(type, buf, x, cols);
        } else {
            qk_quantize_q8_0(x, buf, cols);
            for (int b = 0; b < cols / 32; b++) {
                uint16_t dh;
                memcpy(&dh, buf + 34 * b, 2);
                double dd = qk_f16_to_f32(dh);
                for (int j = 0; j < 32; j++)
                    x[b * 32 + j] = (float)(dd * (int8_t)buf[34 * b + 2 + j]);
            }
        }
    }
    free(buf);
}

static __attribute__((unused)) void tw_roundtrip_mixed(struct tw *w, const struct tw_types *ty)
{
    int d = w->d, dkv = w->nkv * w->hd, n = w->nl;
    tw_roundtrip(w->emb, w->nv, d, tw_type_of(ty, 'e', 0, n));
    if (!w->tied) tw_roundtrip(w->out, w->nv, d, tw_type_of(ty, 'o', 0, n));
    for (int l = 0; l < w->nl; l++) {
        tw_roundtrip(w->L[l].q, d, d, tw_type_of(ty, 'm', l, n));
        tw_roundtrip(w->L[l].k, dkv, d, tw_type_of(ty, 'm', l, n));
        tw_roundtrip(w->L[l].v, dkv, d, tw_type_of(ty, 'v', l, n));
        tw_roundtrip(w->L[l].o, d, d, tw_type_of(ty, 'm', l, n));
        tw_roundtrip(w->L[l].g, w->ff, d, tw_type_of(ty, 'm', l, n));
        tw_roundtrip(w->L[l].u, w->ff, d, tw_type_of(ty, 'm', l, n));
        tw_roundtrip(w->L[l].dn, d, w->ff, tw_type_of(ty, 'd', l, n));
    }
}

static __attribute__((unused)) void tw_roundtrip_all(struct tw *w, uint32_t type)
{
    struct tw_types ty = {type, type, false};
    tw_roundtrip_mixed(w, &ty);
}

static __attribute__((unused)) void tw_tensor(struct gguf_writer *g, const char *name,
                                              const float *p, int rows, int cols, uint32_t type)
{
    size_t rb = ggml_row_bytes(type, (uint64_t)cols);
    uint8_t *buf = malloc(rb * (size_t)rows + 1);
    for (int r = 0; r < rows && rb; r++) {
        const float *x = p + (size_t)r * cols;
        uint8_t *o = buf + (size_t)r * rb;
        if (type == GGML_TYPE_F32)
            memcpy(o, x, (size_t)cols * 4);
        else if (type == GGML_TYPE_F16)
            for (int c = 0; c < cols; c++) {
                uint16_t h = qk_f32_to_f16(x[c]);
                memcpy(o + 2 * c, &h, 2);
            }
        else if (type == GGML_TYPE_Q8_0)
            qk_quantize_q8_0(x, o, cols);
        else
            qk_quantize_row(type, x, o, cols); /* no-op (0 bytes) for unsupported types */
    }
    uint64_t ne[2] = {(uint64_t)cols, (uint64_t)rows};
    gguf_w_tensor(g, name, rows == 1 ? 1 : 2, ne, type, buf);
    free(buf);
}

/* skip: tensor name to leave out (error tests), or NULL; arch: NULL = from w */
static __attribute__((unused)) void tw_write_mixed(const struct tw *w, const struct tw_types *ty,
                                                   const char *arch, struct sbuf *out,
                                                   const char *skip)
{
    struct gguf_writer g;
    gguf_w_init(&g);
    if (!arch) arch = w->qwen2 ? "qwen2" : "llama";
    char key[96];
#define KY(suffix) (snprintf(key, sizeof key, "%s." suffix, arch), key)
    gguf_w_str(&g, "general.architecture", arch);
    gguf_w_str(&g, "general.name", "test");
    gguf_w_u32(&g, KY("context_length"), 256);
    gguf_w_u32(&g, KY("embedding_length"), (uint32_t)w->d);
    gguf_w_u32(&g, KY("block_count"), (uint32_t)w->nl);
    gguf_w_u32(&g, KY("feed_forward_length"), (uint32_t)w->ff);
    gguf_w_u32(&g, KY("attention.head_count"), (uint32_t)w->nh);
    gguf_w_u32(&g, KY("attention.head_count_kv"), (uint32_t)w->nkv);
    gguf_w_f32(&g, KY("attention.layer_norm_rms_epsilon"), w->eps);
    gguf_w_f32(&g, KY("rope.freq_base"), w->base);
#undef KY
    char **toks = calloc((size_t)w->nv, sizeof *toks);
    for (int i = 0; i < w->nv; i++) {
        toks[i] = malloc(16);
        snprintf(toks[i], 16, i == 0 ? "<unk>" : i == 1 ? "<s>" : i == 2 ? "</s>" : "t%d", i);
    }
    gguf_w_str(&g, "tokenizer.ggml.model", "llama");
    gguf_w_arr_str(&g, "tokenizer.ggml.tokens", (const char *const *)toks, (uint64_t)w->nv);
    gguf_w_u32(&g, "tokenizer.ggml.bos_token_id", 1);
    gguf_w_u32(&g, "tokenizer.ggml.eos_token_id", 2);
    for (int i = 0; i < w->nv; i++)
        free(toks[i]);
    free(toks);
    int d = w->d, dkv = w->nkv * w->hd;
    char nm[64];
#define TT(name, p, rows, cols, ty)                                                                \
    if (!skip || strcmp(skip, name)) tw_tensor(&g, name, p, rows, cols, ty)
    int nl = w->nl;
    TT("token_embd.weight", w->emb, w->nv, d, tw_type_of(ty, 'e', 0, nl));
    TT("output_norm.weight", w->outn, 1, d, GGML_TYPE_F32);
    if (!w->tied) TT("output.weight", w->out, w->nv, d, tw_type_of(ty, 'o', 0, nl));
    for (int l = 0; l < w->nl; l++) {
        uint32_t type = tw_type_of(ty, 'm', l, nl);
#define TL(suffix, p, rows, cols, ty)                                                              \
    snprintf(nm, sizeof nm, "blk.%d." suffix, l);                                                  \
    TT(nm, p, rows, cols, ty)
        TL("attn_norm.weight", w->L[l].an, 1, d, GGML_TYPE_F32);
        TL("ffn_norm.weight", w->L[l].fn, 1, d, GGML_TYPE_F32);
        TL("attn_q.weight", w->L[l].q, d, d, type);
        TL("attn_k.weight", w->L[l].k, dkv, d, type);
        TL("attn_v.weight", w->L[l].v, dkv, d, tw_type_of(ty, 'v', l, nl));
        if (w->qwen2) {
            TL("attn_q.bias", w->L[l].bq, 1, d, GGML_TYPE_F32);
            TL("attn_k.bias", w->L[l].bk, 1, dkv, GGML_TYPE_F32);
            TL("attn_v.bias", w->L[l].bv, 1, dkv, GGML_TYPE_F32);
        }
        TL("attn_output.weight", w->L[l].o, d, d, type);
        TL("ffn_gate.weight", w->L[l].g, w->ff, d, type);
        TL("ffn_up.weight", w->L[l].u, w->ff, d, type);
        TL("ffn_down.weight", w->L[l].dn, d, w->ff, tw_type_of(ty, 'd', l, nl));
#undef TL
    }
#undef TT
    gguf_w_finish(&g, out);
    gguf_w_free(&g);
}

static __attribute__((unused)) void tw_write(const struct tw *w, uint32_t type, struct sbuf *out,
                                             const char *skip)
{
    struct tw_types ty = {type, type, false};
    tw_write_mixed(w, &ty, NULL, out, skip);
}

/* The model w written as GGUF (weight types ty) in memory and loaded; fails the test if it does
 * not load. */
static __attribute__((unused)) struct llama_model *tw_load_mixed(const struct tw *w,
                                                                 const struct tw_types *ty)
{
    struct sbuf b = SBUF_INIT;
    tw_write_mixed(w, ty, NULL, &b, NULL);
    size_t n;
    char *data = sbuf_steal(&b, &n);
    struct gguf_file *f;
    char err[256];
    assert_int_equal(gguf_open_mem(data, n, true, &f, err, sizeof err), 0);
    struct llama_model *m;
    if (llama_load(&m, f, err, sizeof err)) fail_msg("load: %s", err);
    return m;
}

/* The same with every weight of one type. */
static __attribute__((unused)) struct llama_model *tw_load(const struct tw *w, uint32_t type)
{
    struct tw_types ty = {type, type, false};
    return tw_load_mixed(w, &ty);
}

/* Index of the first largest of v[0..n). */
static __attribute__((unused)) int tw_argmax(const float *v, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b]) b = i;
    return b;
}

/* y[r] = sum_c W[r][c] x[c] */
static __attribute__((unused)) void ref_mv(const float *W, const double *x, int rows, int cols,
                                           double *y)
{
    for (int r = 0; r < rows; r++) {
        double s = 0;
        for (int c = 0; c < cols; c++)
            s += (double)W[(size_t)r * cols + c] * x[c];
        y[r] = s;
    }
}

static __attribute__((unused)) void ref_rms(const double *x, const float *w, int n, double eps,
                                            double *o)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++)
        o[i] = x[i] * r * w[i];
}

/* logits[n][nv] for the whole token sequence, recomputed from scratch. */
static __attribute__((unused)) void ref_forward(const struct tw *w, const int *toks, int n,
                                                double *logits)
{
    int d = w->d, hd = w->hd, nh = w->nh, nkv = w->nkv, dkv = nkv * hd, ff = w->ff;
    double *x = calloc((size_t)n * d, sizeof(double));
    double *K = calloc((size_t)n * dkv, sizeof(double)),
           *V = calloc((size_t)n * dkv, sizeof(double));
    double *Q = calloc((size_t)n * d, sizeof(double)), *h = calloc((size_t)d, sizeof(double));
    double *att = calloc((size_t)d, sizeof(double)), *tmp = calloc((size_t)d, sizeof(double));
    double *g = calloc((size_t)ff, sizeof(double)), *u = calloc((size_t)ff, sizeof(double));
    double *sc = calloc((size_t)n, sizeof(double));
    for (int t = 0; t < n; t++)
        for (int i = 0; i < d; i++)
            x[(size_t)t * d + i] = w->emb[(size_t)toks[t] * d + i];
    for (int l = 0; l < w->nl; l++) {
        for (int t = 0; t < n; t++) {
            ref_rms(x + (size_t)t * d, w->L[l].an, d, w->eps, h);
            ref_mv(w->L[l].q, h, d, d, Q + (size_t)t * d);
            ref_mv(w->L[l].k, h, dkv, d, K + (size_t)t * dkv);
            ref_mv(w->L[l].v, h, dkv, d, V + (size_t)t * dkv);
            if (w->qwen2)
                for (int i = 0; i < d; i++) {
                    Q[(size_t)t * d + i] += w->L[l].bq[i];
                    if (i < dkv) {
                        K[(size_t)t * dkv + i] += w->L[l].bk[i];
                        V[(size_t)t * dkv + i] += w->L[l].bv[i];
                    }
                }
            /* rotary: pairs (2i, 2i+1) of each head (qwen2: (i, i + hd/2)),
             * angle pos * base^(-2i/hd) */
            for (int hh = 0; hh < nh + nkv; hh++) {
                double *p =
                    hh < nh ? Q + (size_t)t * d + hh * hd : K + (size_t)t * dkv + (hh - nh) * hd;
                for (int i = 0; i < hd / 2; i++) {
                    double th = t * pow(w->base, -2.0 * i / hd);
                    int ia = w->qwen2 ? i : 2 * i, ib = w->qwen2 ? i + hd / 2 : 2 * i + 1;
                    double a = p[ia], b = p[ib];
                    p[ia] = a * cos(th) - b * sin(th);
                    p[ib] = a * sin(th) + b * cos(th);
                }
            }
        }
        for (int t = 0; t < n; t++) {
            for (int hh = 0; hh < nh; hh++) {
                int kvh = hh / (nh / nkv);
                double mx = -1e300;
                for (int j = 0; j <= t; j++) {
                    double s = 0;
                    for (int i = 0; i < hd; i++)
                        s += Q[(size_t)t * d + hh * hd + i] * K[(size_t)j * dkv + kvh * hd + i];
                    sc[j] = s / sqrt((double)hd);
                    if (sc[j] > mx) mx = sc[j];
                }
                double z = 0;
                for (int j = 0; j <= t; j++)
                    z += exp(sc[j] - mx);
                for (int i = 0; i < hd; i++) {
                    double o = 0;
                    for (int j = 0; j <= t; j++)
                        o += exp(sc[j] - mx) / z * V[(size_t)j * dkv + kvh * hd + i];
                    att[hh * hd + i] = o;
                }
            }
            ref_mv(w->L[l].o, att, d, d, tmp);
            for (int i = 0; i < d; i++)
                x[(size_t)t * d + i] += tmp[i];
        }
        for (int t = 0; t < n; t++) {
            ref_rms(x + (size_t)t * d, w->L[l].fn, d, w->eps, h);
            ref_mv(w->L[l].g, h, ff, d, g);
            ref_mv(w->L[l].u, h, ff, d, u);
            for (int i = 0; i < ff; i++)
                g[i] = g[i] / (1 + exp(-g[i])) * u[i];
            ref_mv(w->L[l].dn, g, d, ff, tmp);
            for (int i = 0; i < d; i++)
                x[(size_t)t * d + i] += tmp[i];
        }
    }
    for (int t = 0; t < n; t++) {
        ref_rms(x + (size_t)t * d, w->outn, d, w->eps, h);
        ref_mv(w->out, h, w->nv, d, logits + (size_t)t * w->nv);
    }
    free(x);
    free(K);
    free(V);
    free(Q);
    free(h);
    free(att);
    free(tmp);
    free(g);
    free(u);
    free(sc);
}

#endif
