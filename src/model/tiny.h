/* Deterministic random-weight Llama models in GGUF form: the embedded default
 * (`init-tiny`, seed 0), test models and the benchmark's ~125M model.
 * Weights are uniform in +-sqrt(3/cols) from splitmix64(seed); the output is
 * noise.  Vocabulary: SPM (<unk> <s> </s>, 256 <0xXX> byte tokens, "▁", the
 * printable ASCII characters, a few hundred English pieces, then synthetic
 * pieces up to vocab_size) or GPT-2 byte-level BPE (256 byte characters, merges
 * building the same English words, <|endoftext|>). */
#ifndef SGPU_MODEL_TINY_H
#define SGPU_MODEL_TINY_H

#include <stdbool.h>
#include <stdint.h>

#include "sbuf.h"
#include "tokenizer.h"

struct tiny_opts {
    uint64_t seed;
    int n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx;
    int vocab_size; /* 0 = natural size of the generated vocabulary */
    uint32_t wtype; /* any type of quant.h for the matrices (K-quants: n_embd, n_ff % 256 == 0) */
    /* llama.cpp-style mixes on top of wtype: TINY_MIX_KM puts output.weight
     * and attn_v/ffn_down of the layers llama.cpp's Q4_K_M/Q5_K_M favour in
     * Q6_K (its use_more_bits rule), the rest in wtype. */
    int mix;
    bool qwen2; /* general.architecture "qwen2": Q/K/V biases, qwen2.* keys */
    enum tok_kind tok;
    bool tied;
    float rope_base;
    const char *name;
    const char *chat_template; /* tokenizer.chat_template, NULL = none */
};

#define TINY_MIX_NONE 0
#define TINY_MIX_KM 1

void tiny_default_opts(struct tiny_opts *o);
/* Parse an init-tiny --type value (f32 f16 bf16 q8_0 q4_0 q4_k q5_k q6_k
 * q4_k_m q5_k_m) into wtype and mix; -1 if unknown. */
int tiny_parse_type(const char *s, struct tiny_opts *o);
/* Append the GGUF file to out.  -1 on bad options. */
int tiny_build(const struct tiny_opts *o, struct sbuf *out);

/* splitmix64 helpers (also used by tests) */
uint64_t tiny_rand(uint64_t *state);
float tiny_randf(uint64_t *state); /* uniform [-1, 1) */

#endif
