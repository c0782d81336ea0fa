/* Random-weight model generator; see tiny.h. */
#include "tiny.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "quant.h"
#include "xalloc.h"

static const char *const WORDS[] = {
    "the",   "of",    "and", "to",   "in",    "is",    "that",   "for",   "it",    "as",    "was",
    "with",  "be",    "by",  "on",   "not",   "he",    "this",   "are",   "or",    "his",   "from",
    "at",    "which", "but", "have", "an",    "had",   "they",   "you",   "were",  "their", "one",
    "all",   "we",    "can", "her",  "has",   "there", "been",   "if",    "more",  "when",  "will",
    "would", "who",   "so",  "no",   "model", "token", "server", "hello", "world", "GPU",   "data",
    "time",  "text",  "er",  "ing",  "ed",    "es",    "th",     "he",    "in",    "an",    "re",
    "on",    "at",    "en",  "nd",   "ti",    "st",    "or",     "te",    "ly",    "tion",  "ment",
};
#define N_WORDS (sizeof WORDS / sizeof WORDS[0])

uint64_t tiny_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

float tiny_randf(uint64_t *s)
{
    return (float)((double)(tiny_rand(s) >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

void tiny_default_opts(struct tiny_opts *o)
{
    memset(o, 0, sizeof *o);
    o->seed = 0;
    o->n_embd = 128;
    o->n_layer = 4;
    o->n_head = 4;
    o->n_head_kv = 2;
    o->n_ff = 352;
    o->n_ctx = 1024;
    o->wtype = GGML_TYPE_F32;
    o->tok = TOK_SPM;
    o->rope_base = 10000.0f;
    o->name = "sgpu-tiny";
}

int tiny_parse_type(const char *s, struct tiny_opts *o)
{
    static const struct {
        const char *name;
        uint32_t type;
        int mix;
    } T[] = {{"f32", GGML_TYPE_F32, 0},
             {"f16", GGML_TYPE_F16, 0},
             {"bf16", GGML_TYPE_BF16, 0},
             {"q8_0", GGML_TYPE_Q8_0, 0},
             {"q4_0", GGML_TYPE_Q4_0, 0},
             {"q4_k", GGML_TYPE_Q4_K, 0},
             {"q5_k", GGML_TYPE_Q5_K, 0},
             {"q6_k", GGML_TYPE_Q6_K, 0},
             {"q4_k_m", GGML_TYPE_Q4_K, TINY_MIX_KM},
             {"q5_k_m", GGML_TYPE_Q5_K, TINY_MIX_KM}};
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++)
        if (!strcmp(s, T[i].name)) {
            o->wtype = T[i].type;
            o->mix = T[i].mix;
            return 0;
        }
    return -1;
}

/* llama.cpp's use_more_bits(i_layer, n_layers) for Q4_K_M / Q5_K_M */
static bool more_bits(int l, int n)
{
    return l < n / 8 || l >= 7 * n / 8 || (l - n / 8) % 3 == 2;
}

/* llama_ftype of general.file_type */
static uint32_t file_type(const struct tiny_opts *o)
{
    switch (o->wtype) {
    case GGML_TYPE_F32:
        return 0;
    case GGML_TYPE_F16:
        return 1;
    case GGML_TYPE_Q4_0:
        return 2;
    case GGML_TYPE_Q8_0:
        return 7;
    case GGML_TYPE_Q4_K:
        return o->mix ? 15 : 14;
    case GGML_TYPE_Q5_K:
        return o->mix ? 17 : 16;
    case GGML_TYPE_Q6_K:
        return 18;
    default:
        return 32; /* BF16 */
    }
}

struct strlist {
    char **v;
    size_t n, cap;
};

static void sl_add(struct strlist *l, const char *s)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 512;
        l->v = xrealloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n] = xstrdup(s);
    l->n++;
}

static int sl_find(const struct strlist *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], s) == 0) return (int)i;
    return -1;
}

static void sl_free(struct strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
}

/* Encode a code point < 0x800 as UTF-8. */
static size_t cp_utf8(int cp, char *o)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    o[0] = (char)(0xc0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
}

static void vocab_spm(struct gguf_writer *w, int vocab_size)
{
    struct strlist t = {0};
    sl_add(&t, "<unk>");
    sl_add(&t, "<s>");
    sl_add(&t, "</s>");
    char buf[64];
    for (int b = 0; b < 256; b++) {
        snprintf(buf, sizeof buf, "<0x%02X>", b);
        sl_add(&t, buf);
    }
    sl_add(&t, "\xe2\x96\x81");
    for (int c = 0x21; c < 0x7f; c++) {
        buf[0] = (char)c;
        buf[1] = 0;
        sl_add(&t, buf);
    }
    /* every prefix of "▁word" and of "word", so merges can reach the words */
    for (size_t i = 0; i < N_WORDS; i++)
        for (int sp = 0; sp < 2; sp++) {
            char full[64];
            snprintf(full, sizeof full, "%s%s", sp ? "\xe2\x96\x81" : "", WORDS[i]);
            size_t start = sp ? 3 : 1, len = strlen(full);
            for (size_t k = start + 1; k <= len; k++) {
                memcpy(buf, full, k);
                buf[k] = 0;
                if (sl_find(&t, buf) < 0) sl_add(&t, buf);
            }
        }
    for (int i = 0; vocab_size > 0 && (int)t.n < vocab_size; i++) {
        snprintf(buf, sizeof buf, "\xe2\x96\x81x%d", i);
        sl_add(&t, buf);
    }
    float *scores = xmalloc(t.n * sizeof *scores);
    int32_t *types = xmalloc(t.n * sizeof *types);
    for (size_t i = 0; i < t.n; i++) {
        types[i] = i == 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1;
        /* longer pieces score higher so words win over their prefixes */
        scores[i] = i < 259 ? 0.0f : (float)strlen(t.v[i]) - 0.001f * (float)i;
    }
    gguf_w_str(w, "tokenizer.ggml.model", "llama");
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)t.v, t.n);
    gguf_w_arr_f32(w, "tokenizer.ggml.scores", scores, t.n);
    gguf_w_arr_i32(w, "tokenizer.ggml.token_type", types, t.n);
    gguf_w_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_w_u32(w, "tokenizer.ggml.eos_token_id", 2);
    gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    gguf_w_bool(w, "tokenizer.ggml.add_bos_token", true);
    gguf_w_bool(w, "tokenizer.ggml.add_eos_token", false);
    free(scores);
    free(types);
    sl_free(&t);
}

/* dst += src within cap bytes (dst and src are different rows) */
static void cat_sym(char *dst, const char *src, size_t cap)
{
    size_t a = strlen(dst), b = strlen(src);
    if (a + b >= cap) b = cap - 1 - a;
    memmove(dst + a, src, b);
    dst[a + b] = 0;
}

static void vocab_bpe(struct gguf_writer *w, int vocab_size)
{
    struct strlist t = {0}, merges = {0};
    int byte_cp[256], extra = 0;
    for (int b = 0; b < 256; b++) {
        int direct = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
        byte_cp[b] = direct ? b : 256 + extra++;
    }
    char buf[128];
    for (int b = 0; b < 256; b++) {
        size_t n = cp_utf8(byte_cp[b], buf);
        buf[n] = 0;
        sl_add(&t, buf);
    }
    /* "Train" merges word by word so they are consistent: apply the merges so
     * far (lowest rank first), then add merges joining what is left from the
     * left, so every listed word ends up a single token. */
    struct strmap ranks = {0};
    strmap_init(&ranks, 1024);
    for (size_t i = 0; i < N_WORDS; i++)
        for (int sp = 0; sp < 2; sp++) {
            char sym[32][64];
            int ns = 0;
            if (sp) {
                size_t n = cp_utf8(byte_cp[' '], sym[ns]);
                sym[ns++][n] = 0;
            }
            for (const char *p = WORDS[i]; *p && ns < 31; p++) {
                size_t n = cp_utf8(byte_cp[(unsigned char)*p], sym[ns]);
                sym[ns++][n] = 0;
            }
            for (;;) {
                int best = -1, best_rank = 0;
                for (int k = 0; k + 1 < ns; k++) {
                    int bl = snprintf(buf, sizeof buf, "%s %s", sym[k], sym[k + 1]);
                    if (bl < 0 || (size_t)bl >= sizeof buf) continue; /* no such long pairs */
                    int r = strmap_get(&ranks, buf, strlen(buf));
                    if (r >= 0 && (best < 0 || r < best_rank)) {
                        best = k;
                        best_rank = r;
                    }
                }
                if (best < 0) break;
                cat_sym(sym[best], sym[best + 1], sizeof sym[best]);
                memmove(sym[best + 1], sym[best + 2], (size_t)(ns - best - 2) * sizeof sym[0]);
                ns--;
            }
            while (ns > 1) {
                snprintf(buf, sizeof buf, "%s %s", sym[0], sym[1]);
                sl_add(&merges, buf);
                strmap_put(&ranks, merges.v[merges.n - 1], strlen(buf), (int)merges.n - 1);
                cat_sym(sym[0], sym[1], sizeof sym[0]);
                if (sl_find(&t, sym[0]) < 0) sl_add(&t, sym[0]);
                memmove(sym[1], sym[2], (size_t)(ns - 2) * sizeof sym[0]);
                ns--;
            }
        }
    strmap_free(&ranks);
    for (int i = 0; vocab_size > 0 && (int)t.n < vocab_size - 1; i++) {
        snprintf(buf, sizeof buf, "\xc4\xa0y%d", i);
        sl_add(&t, buf);
    }
    int eot = (int)t.n;
    sl_add(&t, "<|endoftext|>");
    int32_t *types = xmalloc(t.n * sizeof *types);
    for (size_t i = 0; i < t.n; i++)
        types[i] = (int)i == eot ? 3 : 1;
    gguf_w_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_w_str(w, "tokenizer.ggml.pre", "gpt-2");
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)t.v, t.n);
    gguf_w_arr_i32(w, "tokenizer.ggml.token_type", types, t.n);
    gguf_w_arr_str(w, "tokenizer.ggml.merges", (const char *const *)merges.v, merges.n);
    gguf_w_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)eot);
    gguf_w_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eot);
    gguf_w_bool(w, "tokenizer.ggml.add_bos_token", false);
    free(types);
    sl_free(&t);
    sl_free(&merges);
}

/* rows x cols matrix of uniform(+-scale) in the requested type */
static void add_matrix(struct gguf_writer *w, const char *name, int rows, int cols, float scale,
                       float offset, uint32_t type, uint64_t *rng)
{
    size_t rb = ggml_row_bytes(type, (uint64_t)cols);
    uint8_t *data = xmalloc(rb * (size_t)rows);
    float *row = xmalloc((size_t)cols * sizeof *row);
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++)
            row[c] = offset + scale * tiny_randf(rng);
        if (qk_quantize_row(type, row, data + (size_t)r * rb, cols))
            abort(); /* checked by caller */
    }
    uint64_t ne[2] = {(uint64_t)cols, (uint64_t)rows};
    gguf_w_tensor(w, name, rows == 1 ? 1 : 2, ne, type, data);
    free(row);
    free(data);
}

int tiny_build(const struct tiny_opts *o, struct sbuf *out)
{
    if (o->n_embd <= 0 || o->n_layer <= 0 || o->n_head <= 0 || o->n_head_kv <= 0 || o->n_ff <= 0 ||
        o->n_embd % o->n_head || o->n_head % o->n_head_kv || o->n_ctx <= 0)
        return -1;
    /* every matrix has n_embd or n_ff columns; mixes add Q6_K (blocks of 256) */
    uint32_t hi = o->mix ? GGML_TYPE_Q6_K : o->wtype;
    if (!ggml_row_bytes(o->wtype, (uint64_t)o->n_embd) ||
        !ggml_row_bytes(o->wtype, (uint64_t)o->n_ff) || !ggml_row_bytes(hi, (uint64_t)o->n_embd) ||
        !ggml_row_bytes(hi, (uint64_t)o->n_ff))
        return -1;
    const char *arch = o->qwen2 ? "qwen2" : "llama";
    char key[96];
#define K(suffix) (snprintf(key, sizeof key, "%s." suffix, arch), key)
    struct gguf_writer w;
    gguf_w_init(&w);
    gguf_w_str(&w, "general.architecture", arch);
    gguf_w_str(&w, "general.name", o->name ? o->name : "sgpu-tiny");
    gguf_w_u32(&w, "general.alignment", 32);
    gguf_w_u32(&w, K("context_length"), (uint32_t)o->n_ctx);
    gguf_w_u32(&w, K("embedding_length"), (uint32_t)o->n_embd);
    gguf_w_u32(&w, K("block_count"), (uint32_t)o->n_layer);
    gguf_w_u32(&w, K("feed_forward_length"), (uint32_t)o->n_ff);
    if (!o->qwen2) gguf_w_u32(&w, K("rope.dimension_count"), (uint32_t)(o->n_embd / o->n_head));
    gguf_w_u32(&w, K("attention.head_count"), (uint32_t)o->n_head);
    gguf_w_u32(&w, K("attention.head_count_kv"), (uint32_t)o->n_head_kv);
    gguf_w_f32(&w, K("attention.layer_norm_rms_epsilon"), o->qwen2 ? 1e-6f : 1e-5f);
    gguf_w_f32(&w, K("rope.freq_base"), o->rope_base > 0 ? o->rope_base : 10000.0f);
#undef K
    gguf_w_u32(&w, "general.file_type", file_type(o));
    if (o->tok == TOK_SPM)
        vocab_spm(&w, o->vocab_size);
    else
        vocab_bpe(&w, o->vocab_size);
    if (o->chat_template) gguf_w_str(&w, "tokenizer.chat_template", o->chat_template);
    /* vocabulary size = the token count just written: re-parse it */
    int nv = 0;
    {
        struct sbuf tmp = SBUF_INIT;
        gguf_w_finish(&w, &tmp);
        struct gguf_file *f;
        char err[128];
        if (gguf_open_mem(tmp.data, tmp.len, false, &f, err, sizeof err) == 0) {
            const struct gguf_kv *kv = gguf_find(f, "tokenizer.ggml.tokens");
            nv = kv ? (int)kv->arr_n : 0;
            gguf_close(f);
        }
        sbuf_free(&tmp);
    }
    if (nv <= 0) {
        gguf_w_free(&w);
        return -1;
    }
    uint64_t rng = o->seed * 0x9e3779b97f4a7c15ull + 12345;
    int d = o->n_embd, hd = d / o->n_head, dkv = o->n_head_kv * hd;
    float sd = sqrtf(3.0f / (float)d), sf = sqrtf(3.0f / (float)o->n_ff);
    add_matrix(&w, "token_embd.weight", nv, d, 1.0f, 0.0f, o->wtype, &rng);
    add_matrix(&w, "output_norm.weight", 1, d, 0.1f, 1.0f, GGML_TYPE_F32, &rng);
    if (!o->tied) add_matrix(&w, "output.weight", nv, d, sd * 2.0f, 0.0f, hi, &rng);
    char nm[64];
    for (int l = 0; l < o->n_layer; l++) {
        uint32_t lt = o->mix && more_bits(l, o->n_layer) ? hi : o->wtype;
#define M(suffix, rows, cols, sc, ty)                                                              \
    snprintf(nm, sizeof nm, "blk.%d." suffix, l);                                                  \
    add_matrix(&w, nm, rows, cols, sc, 0.0f, ty, &rng)
        snprintf(nm, sizeof nm, "blk.%d.attn_norm.weight", l);
        add_matrix(&w, nm, 1, d, 0.1f, 1.0f, GGML_TYPE_F32, &rng);
        M("attn_q.weight", d, d, sd, o->wtype);
        M("attn_k.weight", dkv, d, sd, o->wtype);
        M("attn_v.weight", dkv, d, sd, lt);
        M("attn_output.weight", d, d, sd, o->wtype);
        if (o->qwen2) {
            M("attn_q.bias", 1, d, 0.5f, GGML_TYPE_F32);
            M("attn_k.bias", 1, dkv, 0.5f, GGML_TYPE_F32);
            M("attn_v.bias", 1, dkv, 0.5f, GGML_TYPE_F32);
        }
        snprintf(nm, sizeof nm, "blk.%d.ffn_norm.weight", l);
        add_matrix(&w, nm, 1, d, 0.1f, 1.0f, GGML_TYPE_F32, &rng);
        M("ffn_gate.weight", o->n_ff, d, sd, o->wtype);
        M("ffn_down.weight", d, o->n_ff, sf, lt);
        M("ffn_up.weight", o->n_ff, d, sd, o->wtype);
#undef M
    }
    gguf_w_finish(&w, out);
    gguf_w_free(&w);
    return 0;
}
