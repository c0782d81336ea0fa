/* Llama forward pass; see llama.h. */
#include "llama.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "pool.h"
#include "quant.h"
#include "tiny.h"
#include "xalloc.h"

static int get_tensor(const struct gguf_file *f, const char *name, int rows, int cols,
                      struct lweight *w, char *err, size_t errn)
{
    const struct gguf_tensor *t = gguf_tensor(f, name);
    if (!t) {
        snprintf(err, errn, "missing tensor %s", name);
        return -1;
    }
    uint64_t r = t->n_dims >= 2 ? t->ne[1] : 1;
    if (t->ne[0] != (uint64_t)cols || r != (uint64_t)rows || t->ne[2] != 1 || t->ne[3] != 1) {
        snprintf(err, errn, "tensor %s has shape [%llu, %llu], expected [%d, %d]", name,
                 (unsigned long long)t->ne[0], (unsigned long long)r, cols, rows);
        return -1;
    }
    w->type = t->type;
    w->data = t->data;
    w->rows = rows;
    w->cols = cols;
    w->row_bytes = ggml_row_bytes(t->type, (uint64_t)cols);
    return 0;
}

static float *get_vec(const struct gguf_file *f, const char *name, int n, char *err, size_t errn)
{
    struct lweight w;
    if (get_tensor(f, name, 1, n, &w, err, errn)) return NULL;
    float *v = xmalloc((size_t)n * sizeof *v);
    qk_dequant_row(w.type, w.data, v, n);
    return v;
}

static int hp_u32(const struct gguf_file *f, const char *key, bool required, int def, int *out,
                  char *err, size_t errn)
{
    uint32_t v;
    int rc = gguf_get_u32(f, key, &v);
    if (rc == 1 && !required) {
        *out = def;
        return 0;
    }
    if (rc != 0 || v == 0 || v > (1u << 24)) {
        snprintf(err, errn, "%s metadata key %s", rc == 1 ? "missing" : "bad", key);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* general.architecture: one of LLAMA_SUPPORTED_ARCHS, into m->arch; *qwen2 says which. */
static int load_arch(struct llama_model *m, bool *qwen2, char *err, size_t errn)
{
    struct gguf_str arch;
    int ra = gguf_get_str(m->gf, "general.architecture", &arch);
    if (ra != 0 || !(gguf_str_eq(arch, "llama") || gguf_str_eq(arch, "qwen2"))) {
        if (ra == 0)
            snprintf(err, errn,
                     "unsupported general.architecture \"%.*s\" (supported: " LLAMA_SUPPORTED_ARCHS
                     ")",
                     (int)(arch.n > 64 ? 64 : arch.n), arch.p);
        else
            snprintf(err, errn, "%s general.architecture (supported: " LLAMA_SUPPORTED_ARCHS ")",
                     ra == 1 ? "missing" : "bad");
        return -1;
    }
    snprintf(m->arch, sizeof m->arch, "%.*s", (int)arch.n, arch.p);
    *qwen2 = gguf_str_eq(arch, "qwen2");
    return 0;
}

/* The hyperparameters under "<arch>." (all but n_vocab, which is the tokenizer's). */
static int load_hparams(struct llama_model *m, bool qwen2, char *err, size_t errn)
{
    const struct gguf_file *gf = m->gf;
    struct llama_hparams *hp = &m->hp;
    hp->rope_neox = qwen2;
    char key[96];
#define K(suffix) (snprintf(key, sizeof key, "%s." suffix, m->arch), key)
    if (hp_u32(gf, K("embedding_length"), true, 0, &hp->n_embd, err, errn) ||
        hp_u32(gf, K("block_count"), true, 0, &hp->n_layer, err, errn) ||
        hp_u32(gf, K("feed_forward_length"), true, 0, &hp->n_ff, err, errn) ||
        hp_u32(gf, K("attention.head_count"), true, 0, &hp->n_head, err, errn) ||
        hp_u32(gf, K("context_length"), false, 2048, &hp->n_ctx_train, err, errn))
        return -1;
    if (hp_u32(gf, K("attention.head_count_kv"), false, hp->n_head, &hp->n_head_kv, err, errn))
        return -1;
    if (hp->n_embd % hp->n_head || hp->n_head % hp->n_head_kv) {
        snprintf(err, errn, "embedding_length %d / head_count %d / head_count_kv %d do not divide",
                 hp->n_embd, hp->n_head, hp->n_head_kv);
        return -1;
    }
    hp->head_dim = hp->n_embd / hp->n_head;
    if (hp_u32(gf, K("attention.key_length"), false, hp->head_dim, &hp->head_dim, err, errn) ||
        hp_u32(gf, K("rope.dimension_count"), false, hp->head_dim, &hp->n_rot, err, errn))
        return -1;
    if (hp->n_rot > hp->head_dim || hp->n_rot % 2) {
        snprintf(err, errn, "bad rope.dimension_count %d (head_dim %d)", hp->n_rot, hp->head_dim);
        return -1;
    }
    hp->eps = 1e-5f;
    hp->rope_base = 10000.0f;
    if (qwen2) hp->rope_base = 1000000.0f; /* llama.cpp's default for the family */
    if (gguf_get_f32(gf, K("attention.layer_norm_rms_epsilon"), &hp->eps) < 0 ||
        gguf_get_f32(gf, K("rope.freq_base"), &hp->rope_base) < 0 || !(hp->eps > 0) ||
        !(hp->rope_base > 0) || !isfinite(hp->eps) || !isfinite(hp->rope_base)) {
        snprintf(err, errn, "bad rms epsilon or rope.freq_base");
        return -1;
    }
#undef K
    return 0;
}

/* The tensors of layer l; bytes_by_type[t] += the bytes of its matrices of type t. */
static int load_layer(struct llama_model *m, int l, bool qwen2, size_t *bytes_by_type, char *err,
                      size_t errn)
{
    const struct gguf_file *gf = m->gf;
    const struct llama_hparams *hp = &m->hp;
    int d = hp->n_embd, dq = hp->n_head * hp->head_dim, dkv = hp->n_head_kv * hp->head_dim;
    struct llama_layer *L = &m->layers[l];
    char nm[96];
#define T(field, suffix, rows, cols)                                                               \
    snprintf(nm, sizeof nm, "blk.%d." suffix, l);                                                  \
    if (get_tensor(gf, nm, rows, cols, &L->field, err, errn)) return -1;                           \
    bytes_by_type[L->field.type] += L->field.row_bytes * (size_t)(rows);
    T(wq, "attn_q.weight", dq, d);
    T(wk, "attn_k.weight", dkv, d);
    T(wv, "attn_v.weight", dkv, d);
    T(wo, "attn_output.weight", d, dq);
    T(wgate, "ffn_gate.weight", hp->n_ff, d);
    T(wdown, "ffn_down.weight", d, hp->n_ff);
    T(wup, "ffn_up.weight", hp->n_ff, d);
#undef T
    snprintf(nm, sizeof nm, "blk.%d.attn_norm.weight", l);
    if (!(L->attn_norm = get_vec(gf, nm, d, err, errn))) return -1;
    snprintf(nm, sizeof nm, "blk.%d.ffn_norm.weight", l);
    if (!(L->ffn_norm = get_vec(gf, nm, d, err, errn))) return -1;
    /* Q/K/V biases: required for qwen2, used when present for llama */
    float **bias[3] = {&L->bq, &L->bk, &L->bv};
    const char *bn[3] = {"attn_q", "attn_k", "attn_v"};
    int blen[3] = {dq, dkv, dkv};
    for (int i = 0; i < 3; i++) {
        snprintf(nm, sizeof nm, "blk.%d.%s.bias", l, bn[i]);
        if (!qwen2 && !gguf_tensor(gf, nm)) continue;
        if (!(*bias[i] = get_vec(gf, nm, blen[i], err, errn))) return -1;
    }
    return 0;
}

/* weight_bytes, dtype (the type holding the most bytes) and n_params of a loaded model. */
static void model_stats(struct llama_model *m, size_t *bytes_by_type)
{
    const struct llama_hparams *hp = &m->hp;
    int d = hp->n_embd, dq = hp->n_head * hp->head_dim, dkv = hp->n_head_kv * hp->head_dim;
    bytes_by_type[m->output.type] += m->output.row_bytes * (size_t)hp->n_vocab;
    size_t best = 0;
    int bt = 0;
    for (int i = 0; i < GGML_TYPE_COUNT; i++) {
        m->weight_bytes += bytes_by_type[i];
        if (bytes_by_type[i] > best) {
            best = bytes_by_type[i];
            bt = i;
        }
    }
    m->weight_bytes += m->tok_embd.row_bytes;
    snprintf(m->dtype, sizeof m->dtype, "%s", ggml_type_name((uint32_t)bt));
    m->n_params = (uint64_t)hp->n_vocab * d * (m->output.data == m->tok_embd.data ? 1 : 2) +
                  (uint64_t)hp->n_layer * ((uint64_t)2 * d * dq + (uint64_t)2 * d * dkv +
                                           (uint64_t)3 * d * hp->n_ff + 2 * (uint64_t)d) +
                  d;
}

int llama_load(struct llama_model **out, struct gguf_file *gf, char *err, size_t errn)
{
    *out = NULL;
    struct llama_model *m = xcalloc(1, sizeof *m);
    m->gf = gf;
    bool qwen2 = false;
    if (load_arch(m, &qwen2, err, errn) || load_hparams(m, qwen2, err, errn)) goto fail;
    struct llama_hparams *hp = &m->hp;
    if (tok_load(&m->tok, gf, err, errn)) goto fail;
    hp->n_vocab = m->tok.n_vocab;
    struct gguf_str name;
    if (gguf_get_str(gf, "general.name", &name) == 0 && name.n > 0)
        snprintf(m->name, sizeof m->name, "%.*s", (int)(name.n > 120 ? 120 : name.n), name.p);
    else
        snprintf(m->name, sizeof m->name, "%s", m->arch);

    int d = hp->n_embd;
    if (get_tensor(gf, "token_embd.weight", hp->n_vocab, d, &m->tok_embd, err, errn)) goto fail;
    if (gguf_tensor(gf, "output.weight")) {
        if (get_tensor(gf, "output.weight", hp->n_vocab, d, &m->output, err, errn)) goto fail;
    } else {
        m->output = m->tok_embd; /* tied */
    }
    if (!(m->out_norm = get_vec(gf, "output_norm.weight", d, err, errn))) goto fail;
    m->layers = xcalloc((size_t)hp->n_layer, sizeof *m->layers);
    size_t bytes_by_type[GGML_TYPE_COUNT] = {0};
    for (int l = 0; l < hp->n_layer; l++)
        if (load_layer(m, l, qwen2, bytes_by_type, err, errn)) goto fail;
    model_stats(m, bytes_by_type);
    *out = m;
    return 0;
fail:
    llama_free(m);
    return -1;
}

void llama_free(struct llama_model *m)
{
    if (!m) return;
    if (m->layers)
        for (int l = 0; l < m->hp.n_layer; l++) {
            free(m->layers[l].attn_norm);
            free(m->layers[l].ffn_norm);
            free(m->layers[l].bq);
            free(m->layers[l].bk);
            free(m->layers[l].bv);
        }
    free(m->layers);
    free(m->out_norm);
    tok_free(&m->tok);
    gguf_close(m->gf);
    free(m);
}

size_t llama_kv_bytes_per_token(const struct llama_model *m)
{
    return (size_t)2 * m->hp.n_layer * m->hp.n_head_kv * m->hp.head_dim * sizeof(float);
}

/* The last freed cache is kept for the next sequence: a fresh allocation of
 * this size is a new mapping whose pages fault in on the first write, ~10% of
 * a 512-token prefill on the bench VM.  At most one cache is kept. */
static pthread_mutex_t kv_keep_mu = PTHREAD_MUTEX_INITIALIZER;
static float *kv_keep_k, *kv_keep_v;
static size_t kv_keep_n; /* floats in each */

int llama_kv_init(struct llama_kv *kv, const struct llama_model *m, int cap)
{
    size_t per = (size_t)m->hp.n_layer * cap * m->hp.n_head_kv * m->hp.head_dim;
    kv->cap = cap;
    kv->n = 0;
    kv->k = kv->v = NULL;
    pthread_mutex_lock(&kv_keep_mu);
    if (kv_keep_k && kv_keep_n >= per && kv_keep_n <= 2 * per) {
        kv->k = kv_keep_k;
        kv->v = kv_keep_v;
        kv->alloc = kv_keep_n;
        kv_keep_k = kv_keep_v = NULL;
    }
    pthread_mutex_unlock(&kv_keep_mu);
    if (kv->k) return 0;
    kv->alloc = per;
    kv->k = malloc(per * sizeof(float));
    kv->v = malloc(per * sizeof(float));
    if (!kv->k || !kv->v) {
        llama_kv_free(kv);
        return -1;
    }
    return 0;
}

void llama_kv_free(struct llama_kv *kv)
{
    if (kv->k && kv->v) {
        pthread_mutex_lock(&kv_keep_mu);
        float *k = kv_keep_k, *v = kv_keep_v;
        if (!k || kv->alloc >= kv_keep_n) { /* keep the larger */
            kv_keep_k = kv->k;
            kv_keep_v = kv->v;
            kv_keep_n = kv->alloc;
            kv->k = k;
            kv->v = v;
        }
        pthread_mutex_unlock(&kv_keep_mu);
    }
    free(kv->k);
    free(kv->v);
    kv->k = kv->v = NULL;
    kv->cap = kv->n = 0;
}

/* ---- forward ---- */

struct mm_job {
    const struct lweight *w;
    const float *x;
    int ldx;
    float *y;
    int ldy;
};

struct llama_ctx {
    const struct llama_model *m;
    struct pool *pool;
    int nth;
    int cap_T, cap_L, cap_ctx;
    float *x, *xn, *q, *k, *v, *att, *g, *u, *xl, *lo; /* activations, [T][dim] */
    int8_t *xq;   /* quantised matmul input for Q8_0 weights: [T][cols] */
    uint8_t *xu;  /* xq + 128, the unsigned form for the AVX-VNNI kernel */
    float *xd;    /* its block scales: [T][cols/32] */
    int8_t *kq;   /* Q8_K activations for K-quant weights: [T][cols] */
    float *kd;    /* their scales: [T][cols/256] */
    int16_t *kbs; /* their 16-value sums: [T][cols/16] */
    int *tok_seq, *tok_pos;
    int *grp_t0; /* attention groups: first token of each, [n_grp + 1] */
    int n_grp;
    float *cosv, *sinv; /* [T][n_rot/2] */
    float **scratch;    /* per thread: max(n_embd, n_ff, dq) floats */
    float **scores;     /* per thread: QK_MULTI rows of cap_ctx floats */
    /* current dispatch */
    struct mm_job jobs[3];
    int n_jobs, T, layer;
    struct llama_seq_in *seqs;
};

struct llama_ctx *llama_ctx_new(const struct llama_model *m, int n_threads)
{
    struct llama_ctx *c = xcalloc(1, sizeof *c);
    c->m = m;
    c->pool = pool_new(n_threads);
    c->nth = pool_size(c->pool);
    c->scratch = xcalloc((size_t)c->nth, sizeof *c->scratch);
    c->scores = xcalloc((size_t)c->nth, sizeof *c->scores);
    int mx = m->hp.n_embd;
    if (m->hp.n_ff > mx) mx = m->hp.n_ff;
    if (m->hp.n_head * m->hp.head_dim > mx) mx = m->hp.n_head * m->hp.head_dim;
    for (int i = 0; i < c->nth; i++)
        c->scratch[i] = xmalloc((size_t)mx * sizeof(float));
    return c;
}

void llama_ctx_free(struct llama_ctx *c)
{
    if (!c) return;
    pool_free(c->pool);
    for (int i = 0; i < c->nth; i++) {
        free(c->scratch[i]);
        free(c->scores[i]);
    }
    free(c->scratch);
    free(c->scores);
    free(c->x);
    free(c->xn);
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->att);
    free(c->g);
    free(c->u);
    free(c->xl);
    free(c->lo);
    free(c->tok_seq);
    free(c->tok_pos);
    free(c->grp_t0);
    free(c->cosv);
    free(c->sinv);
    free(c->xq);
    free(c->xu);
    free(c->xd);
    free(c->kq);
    free(c->kd);
    free(c->kbs);
    free(c);
}

static void ensure_T(struct llama_ctx *c, int T)
{
    if (T <= c->cap_T) return;
    const struct llama_hparams *hp = &c->m->hp;
    size_t d = (size_t)hp->n_embd, dq = (size_t)hp->n_head * hp->head_dim,
           dkv = (size_t)hp->n_head_kv * hp->head_dim, ff = (size_t)hp->n_ff;
    size_t t = (size_t)T;
    c->x = xrealloc(c->x, t * d * 4);
    c->xn = xrealloc(c->xn, t * (d > dq ? d : dq) * 4);
    c->q = xrealloc(c->q, t * dq * 4);
    c->k = xrealloc(c->k, t * dkv * 4);
    c->v = xrealloc(c->v, t * dkv * 4);
    c->att = xrealloc(c->att, t * dq * 4);
    c->g = xrealloc(c->g, t * ff * 4);
    c->u = xrealloc(c->u, t * ff * 4);
    c->xl = xrealloc(c->xl, t * d * 4);
    size_t mx = d > ff ? d : ff;
    if (dq > mx) mx = dq;
    c->xq = xrealloc(c->xq, t * mx);
    c->xu = xrealloc(c->xu, t * mx);
    c->xd = xrealloc(c->xd, t * (mx / 32 + 1) * 4);
    c->kq = xrealloc(c->kq, t * mx);
    c->kd = xrealloc(c->kd, t * (mx / 256 + 1) * 4);
    c->kbs = xrealloc(c->kbs, t * (mx / 16 + 1) * 2);
    c->tok_seq = xrealloc(c->tok_seq, t * sizeof(int));
    c->tok_pos = xrealloc(c->tok_pos, t * sizeof(int));
    c->grp_t0 = xrealloc(c->grp_t0, (t + 1) * sizeof(int));
    c->cosv = xrealloc(c->cosv, t * (size_t)(hp->n_rot / 2 + 1) * 4);
    c->sinv = xrealloc(c->sinv, t * (size_t)(hp->n_rot / 2 + 1) * 4);
    c->cap_T = T;
}

static bool is_kquant(uint32_t t)
{
    return t == GGML_TYPE_Q4_K || t == GGML_TYPE_Q5_K || t == GGML_TYPE_Q6_K;
}

static void mm_task(void *arg, int ith, int nth)
{
    struct llama_ctx *c = arg;
    for (int j = 0; j < c->n_jobs; j++) {
        const struct mm_job *jb = &c->jobs[j];
        int rows = jb->w->rows;
        int r0 = (int)((long long)rows * ith / nth), r1 = (int)((long long)rows * (ith + 1) / nth);
        uint32_t ty = jb->w->type;
        if (ty == GGML_TYPE_Q8_0)
            qk_matmul_q8q8_u(jb->w->data, jb->w->row_bytes, jb->w->cols, c->xq, c->xu, c->xd, c->T,
                             jb->y, jb->ldy, r0, r1);
        else if (ty == GGML_TYPE_Q4_0)
            qk_matmul_q4_0(jb->w->data, jb->w->row_bytes, jb->w->cols, c->xq, c->xd, c->T, jb->y,
                           jb->ldy, r0, r1);
        else if (is_kquant(ty))
            qk_matmul_kq(ty, jb->w->data, jb->w->row_bytes, jb->w->cols, c->kq, c->kd, c->kbs, c->T,
                         jb->y, jb->ldy, r0, r1);
        else
            qk_matmul(jb->w->type, jb->w->data, jb->w->row_bytes, jb->w->cols, jb->x, jb->ldx, c->T,
                      jb->y, jb->ldy, r0, r1, c->scratch[ith]);
    }
}

static void run_mm(struct llama_ctx *c, int T, int n, const struct lweight *w0, const float *x,
                   float *y0, const struct lweight *w1, float *y1, const struct lweight *w2,
                   float *y2)
{
    c->T = T;
    c->n_jobs = n;
    const struct lweight *ws[3] = {w0, w1, w2};
    float *ys[3] = {y0, y1, y2};
    /* ---- prefill: many tokens go through the tiled GEMM (gemm.h) ---- */
    if (T >= GEMM_MIN_TOKENS) {
        struct gemm_mat gm[3];
        bool ok = true;
        for (int i = 0; i < n; i++) {
            ok &= gemm_supported(ws[i]->type);
            gm[i] = (struct gemm_mat){ws[i]->type,      ws[i]->data, ws[i]->rows, ws[i]->cols,
                                      ws[i]->row_bytes, ys[i],       ws[i]->rows};
        }
        struct gemm_call gc = {gm, n, x, T, c->xq, c->xu, c->xd, c->kq, c->kd, c->kbs, c->scratch};
        if (ok && gemm_run(c->pool, &gc) == 0) return;
    }
    /* ---- end prefill GEMM; otherwise the per-row decode kernels ---- */
    bool q8 = false, q40 = false, kq = false;
    for (int i = 0; i < n; i++) {
        q8 |= ws[i]->type == GGML_TYPE_Q8_0;
        q40 |= ws[i]->type == GGML_TYPE_Q4_0;
        kq |= is_kquant(ws[i]->type);
    }
    /* jobs of one dispatch share x: quantise it once per activation format */
    int cols = w0->cols;
    if (q8 || q40) {
        int nb = cols / 32;
        for (int t = 0; t < T; t++)
            qk_quantize_act_u(x + (size_t)t * cols, cols, c->xq + (size_t)t * cols,
                              q8 ? c->xu + (size_t)t * cols : NULL, c->xd + (size_t)t * nb);
    }
    if (kq)
        for (int t = 0; t < T; t++)
            qk_quantize_q8_k(x + (size_t)t * cols, cols, c->kq + (size_t)t * cols,
                             c->kd + (size_t)t * (cols / 256), c->kbs + (size_t)t * (cols / 16));
    for (int i = 0; i < n; i++) {
        c->jobs[i].w = ws[i];
        c->jobs[i].x = x;
        c->jobs[i].ldx = ws[i]->cols;
        c->jobs[i].y = ys[i];
        c->jobs[i].ldy = ws[i]->rows;
    }
    pool_run(c->pool, mm_task, c);
}

static void rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    float ss = 0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    float r = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = 0; i < n; i++)
        out[i] = x[i] * r * w[i];
}

/* Rotate pairs (2i, 2i+1) of each head ("normal", llama), or (i, i + n_rot/2)
 * (NEOX, qwen2), by angle i of the token. */
static void rope(float *v, int n_heads, int hd, int n_rot, bool neox, const float *cs,
                 const float *sn)
{
    int half = n_rot / 2;
    for (int h = 0; h < n_heads; h++) {
        float *p = v + (size_t)h * hd;
        for (int i = 0; i < half; i++) {
            int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
            float x0 = p[a], x1 = p[b];
            p[a] = x0 * cs[i] - x1 * sn[i];
            p[b] = x0 * sn[i] + x1 * cs[i];
        }
    }
}

static void add_bias(float *y, const float *b, int T, int n)
{
    if (!b) return;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < n; i++)
            y[(size_t)t * n + i] += b[i];
}

/* Attention work units: (head, group of up to QK_MULTI consecutive tokens of
 * one sequence), head-major, so consecutive units of a thread read the same
 * head's K/V rows (kept in L2 across the group's tokens instead of streaming
 * every head's rows for each token), and a contiguous split gives each
 * thread whole heads: the causal triangle is shared evenly.  Inside a group
 * the queries walk the keys together (each K/V row loaded once per group;
 * qk_attn_group), and every query's arithmetic does not depend on the
 * grouping: prefill, chunked prefill and decode stay bitwise equal. */
static void attn_task(void *arg, int ith, int nth)
{
    struct llama_ctx *c = arg;
    const struct llama_hparams *hp = &c->m->hp;
    int hd = hp->head_dim, nh = hp->n_head, dkv = hp->n_head_kv * hd, dq = nh * hd;
    int grp = nh / hp->n_head_kv, G = c->n_grp;
    long long total = (long long)G * nh;
    long long a = total * ith / nth, b = total * (ith + 1) / nth;
    float scale = 1.0f / sqrtf((float)hd);
    for (long long task = a; task < b; task++) {
        int h = (int)(task / G), g = (int)(task % G);
        int t0 = c->grp_t0[g], nq = c->grp_t0[g + 1] - t0;
        const struct llama_kv *kv = c->seqs[c->tok_seq[t0]].kv;
        int p0 = c->tok_pos[t0]; /* positions p0 .. p0 + nq - 1 */
        size_t lo = (size_t)c->layer * kv->cap * dkv;
        const float *K = kv->k + lo + (size_t)(h / grp) * hd;
        const float *V = kv->v + lo + (size_t)(h / grp) * hd;
        const float *q[QK_MULTI];
        float *o[QK_MULTI], *sc[QK_MULTI];
        for (int k = 0; k < nq; k++) {
            q[k] = c->q + (size_t)(t0 + k) * dq + (size_t)h * hd;
            o[k] = c->att + (size_t)(t0 + k) * dq + (size_t)h * hd;
            sc[k] = c->scores[ith] + (size_t)k * c->cap_ctx;
        }
        qk_attn_group(nq, q, o, sc, p0, K, V, (size_t)dkv, hd, scale);
    }
}

int llama_forward(struct llama_ctx *c, struct llama_seq_in *seqs, int n_seqs)
{
    const struct llama_model *m = c->m;
    const struct llama_hparams *hp = &m->hp;
    int T = 0, L = 0, maxpos = 0;
    for (int s = 0; s < n_seqs; s++) {
        const struct llama_seq_in *q = &seqs[s];
        if (q->n < 0 || q->kv->n + q->n > q->kv->cap) return -1;
        for (int i = 0; i < q->n; i++)
            if (q->tokens[i] < 0 || q->tokens[i] >= hp->n_vocab) return -1;
        T += q->n;
        L += q->all_logits ? q->n : (q->want_logits && q->n > 0) ? 1 : 0;
        if (q->kv->n + q->n > maxpos) maxpos = q->kv->n + q->n;
    }
    if (T == 0) return 0;
    ensure_T(c, T > L ? T : L);
    if (maxpos > c->cap_ctx) {
        for (int i = 0; i < c->nth; i++)
            c->scores[i] = xrealloc(c->scores[i], (size_t)QK_MULTI * maxpos * 4);
        c->cap_ctx = maxpos;
    }
    int d = hp->n_embd, hd = hp->head_dim, dq = hp->n_head * hd, dkv = hp->n_head_kv * hd;
    int nr = hp->n_rot / 2;
    c->seqs = seqs;
    /* token table, embeddings, rope angles */
    int t = 0;
    c->n_grp = 0;
    for (int s = 0; s < n_seqs; s++)
        for (int i = 0; i < seqs[s].n; i++, t++) {
            if (i % QK_MULTI == 0) c->grp_t0[c->n_grp++] = t;
            c->tok_seq[t] = s;
            c->tok_pos[t] = seqs[s].kv->n + i;
            const struct lweight *e = &m->tok_embd;
            qk_dequant_row(e->type,
                           (const uint8_t *)e->data + (size_t)seqs[s].tokens[i] * e->row_bytes,
                           c->x + (size_t)t * d, d);
            for (int j = 0; j < nr; j++) {
                double theta =
                    (double)c->tok_pos[t] * pow((double)hp->rope_base, -2.0 * j / hp->n_rot);
                c->cosv[(size_t)t * nr + j] = (float)cos(theta);
                c->sinv[(size_t)t * nr + j] = (float)sin(theta);
            }
        }
    c->grp_t0[c->n_grp] = T;
    for (int l = 0; l < hp->n_layer; l++) {
        const struct llama_layer *Ly = &m->layers[l];
        for (t = 0; t < T; t++)
            rmsnorm(c->xn + (size_t)t * d, c->x + (size_t)t * d, Ly->attn_norm, d, hp->eps);
        run_mm(c, T, 3, &Ly->wq, c->xn, c->q, &Ly->wk, c->k, &Ly->wv, c->v);
        add_bias(c->q, Ly->bq, T, dq);
        add_bias(c->k, Ly->bk, T, dkv);
        add_bias(c->v, Ly->bv, T, dkv);
        for (t = 0; t < T; t++) {
            const float *cs = c->cosv + (size_t)t * nr, *sn = c->sinv + (size_t)t * nr;
            rope(c->q + (size_t)t * dq, hp->n_head, hd, hp->n_rot, hp->rope_neox, cs, sn);
            rope(c->k + (size_t)t * dkv, hp->n_head_kv, hd, hp->n_rot, hp->rope_neox, cs, sn);
            struct llama_kv *kv = seqs[c->tok_seq[t]].kv;
            size_t off = ((size_t)l * kv->cap + (size_t)c->tok_pos[t]) * dkv;
            memcpy(kv->k + off, c->k + (size_t)t * dkv, (size_t)dkv * 4);
            memcpy(kv->v + off, c->v + (size_t)t * dkv, (size_t)dkv * 4);
        }
        c->layer = l;
        c->T = T;
        pool_run(c->pool, attn_task, c);
        run_mm(c, T, 1, &Ly->wo, c->att, c->xl, NULL, NULL, NULL, NULL);
        for (size_t i = 0; i < (size_t)T * d; i++)
            c->x[i] += c->xl[i];
        for (t = 0; t < T; t++)
            rmsnorm(c->xn + (size_t)t * d, c->x + (size_t)t * d, Ly->ffn_norm, d, hp->eps);
        run_mm(c, T, 2, &Ly->wgate, c->xn, c->g, &Ly->wup, c->u, NULL, NULL);
        size_t nf = (size_t)T * hp->n_ff;
        for (size_t i = 0; i < nf; i++) {
            float gv = c->g[i];
            c->g[i] = gv / (1.0f + expf(-gv)) * c->u[i];
        }
        run_mm(c, T, 1, &Ly->wdown, c->g, c->xl, NULL, NULL, NULL, NULL);
        for (size_t i = 0; i < (size_t)T * d; i++)
            c->x[i] += c->xl[i];
    }
    /* output head only for the rows asked for */
    if (L > 0) {
        int r = 0;
        t = 0;
        for (int s = 0; s < n_seqs; s++) {
            for (int i = 0; i < seqs[s].n; i++, t++) {
                bool want = seqs[s].all_logits || (seqs[s].want_logits && i == seqs[s].n - 1);
                if (want)
                    rmsnorm(c->xn + (size_t)r++ * d, c->x + (size_t)t * d, m->out_norm, d, hp->eps);
            }
        }
        if ((size_t)L * hp->n_vocab > (size_t)c->cap_L) {
            c->lo = xrealloc(c->lo, (size_t)L * hp->n_vocab * 4);
            c->cap_L = L * hp->n_vocab;
        }
        run_mm(c, L, 1, &m->output, c->xn, c->lo, NULL, NULL, NULL, NULL);
        r = 0;
        for (int s = 0; s < n_seqs; s++) {
            int k = seqs[s].all_logits ? seqs[s].n : (seqs[s].want_logits && seqs[s].n > 0) ? 1 : 0;
            if (k && seqs[s].logits)
                memcpy(seqs[s].logits, c->lo + (size_t)r * hp->n_vocab,
                       (size_t)k * hp->n_vocab * 4);
            r += k;
        }
    }
    for (int s = 0; s < n_seqs; s++)
        seqs[s].kv->n += seqs[s].n;
    return 0;
}

int llama_open(const char *path, struct llama_model **out, char *err, size_t errn)
{
    struct gguf_file *gf;
    if (!path || !*path) {
        struct tiny_opts o;
        tiny_default_opts(&o);
        struct sbuf b = SBUF_INIT;
        if (tiny_build(&o, &b)) {
            sbuf_free(&b);
            snprintf(err, errn, "cannot build the embedded default model");
            return -1;
        }
        size_t n;
        char *data = sbuf_steal(&b, &n);
        if (gguf_open_mem(data, n, true, &gf, err, errn)) return -1;
    } else if (gguf_open(path, &gf, err, errn)) {
        return -1;
    }
    return llama_load(out, gf, err, errn);
}
