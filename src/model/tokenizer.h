/* Tokenizers read from GGUF metadata (tokenizer.ggml.*):
 *   model "llama": SentencePiece-style, score-driven bigram merges over UTF-8
 *     characters, "▁" for spaces, optional space prefix, <0xXX> byte fallback;
 *   model "gpt2": byte-level BPE (bytes mapped to printable code points), the
 *     pre-tokenizer named by tokenizer.ggml.pre (default, gpt-2, llama-bpe,
 *     qwen2, starcoder, falcon and their llama.cpp aliases), merges ranked by their position in
 *     tokenizer.ggml.merges.
 * BOS/EOS ids and add_bos/add_eos/add_space_prefix come from the metadata. */
#ifndef SGPU_MODEL_TOKENIZER_H
#define SGPU_MODEL_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "sbuf.h"

enum tok_kind { TOK_SPM = 0, TOK_BPE = 1 };
/* BPE pre-tokenizer, from tokenizer.ggml.pre (see tokenizer_bpe.c) */
enum tok_pre {
    TOK_PRE_DEFAULT = 0,
    TOK_PRE_GPT2,
    TOK_PRE_LLAMA3,
    TOK_PRE_QWEN2,
    TOK_PRE_DIGITS_GPT2, /* starcoder & co: \p{N} apart, then gpt-2 */
    TOK_PRE_FALCON
};
enum tok_type {
    TT_NORMAL = 1,
    TT_UNKNOWN = 2,
    TT_CONTROL = 3,
    TT_USER = 4,
    TT_UNUSED = 5,
    TT_BYTE = 6
};

/* String -> int map (open addressing); keys are borrowed, not copied. */
struct strmap {
    const char **keys;
    uint32_t *lens;
    int *vals;
    size_t cap, len;
};
void strmap_init(struct strmap *m, size_t expected);
void strmap_free(struct strmap *m);
void strmap_put(struct strmap *m, const char *k, size_t n, int v); /* first insert wins */
int strmap_get(const struct strmap *m, const char *k, size_t n);   /* -1 if absent */

/* A growable array of token ids. */
struct ids {
    int *v;
    size_t n, cap;
};
void ids_push(struct ids *a, int id);
void ids_free(struct ids *a);

struct tokenizer {
    enum tok_kind kind;
    int n_vocab;
    char **text; /* owned, NUL-terminated */
    uint32_t *len;
    float *scores;
    uint8_t *type; /* enum tok_type */
    struct strmap vocab;
    struct strmap merges; /* bpe: "left right" -> rank */
    char **merge_text;    /* owned storage of merge keys */
    size_t n_merges;
    int bos, eos, unk, pad; /* -1 when absent */
    bool add_bos, add_eos, add_space_prefix;
    enum tok_pre pre;      /* bpe only */
    bool ignore_merges;    /* bpe: a whole pre-token in the vocabulary is one token */
    char pre_name[32];     /* tokenizer.ggml.pre as read ("" when absent), for logs and /info */
    int byte_tok[256];     /* spm: <0xXX> ids; bpe: id of the single mapped char; -1 absent */
    uint16_t byte_cp[256]; /* bpe: byte -> code point */
    int16_t cp_byte[512];  /* bpe: code point -> byte (-1 if none) */
};

int tok_load(struct tokenizer *t, const struct gguf_file *f, char *err, size_t errn);
void tok_free(struct tokenizer *t);

/* Append the ids of text[0..n) to out (with BOS first when add_bos, and EOS last
 * when the metadata asks for it and add_special). */
void tok_encode(const struct tokenizer *t, const char *text, size_t n, bool add_special,
                struct ids *out);
/* Bytes a token contributes to generated text (control tokens: none). */
void tok_piece(const struct tokenizer *t, int id, struct sbuf *out);
/* Text of a whole id sequence: pieces concatenated, minus the space the SPM
 * space prefix added before the first piece. */
void tok_decode(const struct tokenizer *t, const int *ids, size_t n, struct sbuf *out);
bool tok_is_control(const struct tokenizer *t, int id);

/* internal: per-kind encoders (no BOS/EOS) */
void tok_spm_encode(const struct tokenizer *t, const char *text, size_t n, struct ids *out);
void tok_bpe_encode(const struct tokenizer *t, const char *text, size_t n, struct ids *out);
void tok_bpe_init_bytes(struct tokenizer *t);
/* BPE pre-tokenizer: end offsets (bytes) of the pieces of text (at most
 * max_ends stored); returns the count. */
size_t tok_bpe_split(enum tok_pre pre, const char *text, size_t n, size_t *ends, size_t max_ends);
/* Canonical name of a pre-tokenizer ("llama-bpe", ...). */
const char *tok_pre_name(enum tok_pre pre);
/* Pre-tokenizer for a tokenizer.ggml.pre value; *ignore_merges and *add_bos
 * get llama.cpp's defaults for it.  Returns -1 for an unknown value. */
int tok_pre_from_name(const char *name, size_t n, enum tok_pre *pre, bool *ignore_merges,
                      bool *add_bos);
/* UTF-8 sequence length from a lead byte, clamped to avail (1 for invalid). */
size_t tok_utf8_len(const unsigned char *s, size_t avail);

#endif
