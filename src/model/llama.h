/* Llama-architecture models: general.architecture "llama" (also Mistral) or
 * "qwen2" (the same blocks plus Q/K/V biases, rotary embeddings in the NEOX
 * layout (pairs i, i + n_rot/2) as llama.cpp uses for it, hyperparameters
 * under "qwen2.*").  Weights stay in the GGUF mapping in any mix of the types
 * of quant.h (F32/F16/BF16 dequantised inside the matmuls, Q8_0/Q4_0/K-quants
 * against quantised activations), RMSNorm, rotary embeddings in GGUF's
 * "normal" (adjacent pairs) layout for llama with rope.freq_base,
 * grouped-query attention, SwiGLU, tied or untied output.
 *
 * The forward pass takes any number of sequences, each with any number of new
 * tokens (a prompt chunk or one decode token), and runs them through every
 * weight matrix together: each weight row is read once per step for the whole
 * batch.  Per-sequence KV caches hold F32 keys/values: [layer][pos][kv_dim]. */
#ifndef SGPU_MODEL_LLAMA_H
#define SGPU_MODEL_LLAMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "tokenizer.h"

struct llama_hparams {
    int n_vocab, n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx_train, n_rot, head_dim;
    float eps, rope_base;
    bool rope_neox; /* qwen2: rotate pairs (i, i + n_rot/2) */
};

/* The architectures llama_load accepts. */
#define LLAMA_SUPPORTED_ARCHS "llama, qwen2"

struct lweight {
    uint32_t type;
    const void *data;
    int rows, cols;
    size_t row_bytes;
};

struct llama_layer {
    float *attn_norm, *ffn_norm; /* owned F32 copies */
    struct lweight wq, wk, wv, wo, wgate, wdown, wup;
    float *bq, *bk, *bv; /* owned F32 biases (qwen2; optional for llama), or NULL */
};

struct llama_model {
    struct llama_hparams hp;
    struct gguf_file *gf;
    struct tokenizer tok;
    struct lweight tok_embd, output;
    float *out_norm;
    struct llama_layer *layers;
    char name[128];
    char arch[16];       /* "llama" or "qwen2" */
    char dtype[16];      /* type of most weight bytes: "F32", "F16", "Q4_K", ... */
    size_t weight_bytes; /* bytes read per decode step (all matrices + 1 embedding row) */
    uint64_t n_params;
};

/* Takes ownership of gf (closed on error too). */
int llama_load(struct llama_model **out, struct gguf_file *gf, char *err, size_t errn);
void llama_free(struct llama_model *m);

struct llama_kv {
    int cap; /* positions */
    int n;   /* positions filled */
    float *k, *v;
    size_t alloc; /* floats allocated in each of k and v */
};
int llama_kv_init(struct llama_kv *kv, const struct llama_model *m, int cap);
void llama_kv_free(struct llama_kv *kv);
size_t llama_kv_bytes_per_token(const struct llama_model *m);

/* One sequence's part of a step. logits receives n_vocab floats per returned
 * row: one row per token if all_logits, else one row (last token) if
 * want_logits, else nothing. */
struct llama_seq_in {
    struct llama_kv *kv;
    const int *tokens;
    int n;
    bool all_logits;
    bool want_logits;
    float *logits;
};

struct llama_ctx;
struct llama_ctx *llama_ctx_new(const struct llama_model *m, int n_threads);
void llama_ctx_free(struct llama_ctx *c);
/* Runs the step; appends each sequence's tokens to its KV cache.  -1 (and
 * nothing changed) if a token id is out of range or a cache would overflow. */
int llama_forward(struct llama_ctx *c, struct llama_seq_in *seqs, int n_seqs);

/* Open a GGUF file, or the embedded default (tiny model, seed 0) when path is
 * NULL or empty. */
int llama_open(const char *path, struct llama_model **out, char *err, size_t errn);
#endif
