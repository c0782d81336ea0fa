/* Tokenizer loading, lookup tables, decoding; see tokenizer.h. */
#include "tokenizer.h"

#include "log.h"
#include "xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- strmap ---- */

static uint64_t hash_bytes(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)k[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

void strmap_init(struct strmap *m, size_t expected)
{
    size_t cap = 16;
    while (cap < expected * 2 + 2)
        cap *= 2;
    m->cap = cap;
    m->len = 0;
    m->keys = xcalloc(cap, sizeof *m->keys);
    m->lens = xcalloc(cap, sizeof *m->lens);
    m->vals = xcalloc(cap, sizeof *m->vals);
}

void strmap_free(struct strmap *m)
{
    free(m->keys);
    free(m->lens);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

static void strmap_grow(struct strmap *m)
{
    struct strmap n;
    strmap_init(&n, m->cap);
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i]) strmap_put(&n, m->keys[i], m->lens[i], m->vals[i]);
    strmap_free(m);
    *m = n;
}

void strmap_put(struct strmap *m, const char *k, size_t n, int v)
{
    if (!m->cap) strmap_init(m, 16);
    if ((m->len + 1) * 2 > m->cap) strmap_grow(m);
    size_t mask = m->cap - 1, i = hash_bytes(k, n) & mask;
    while (m->keys[i]) {
        if (m->lens[i] == n && memcmp(m->keys[i], k, n) == 0) return;
        i = (i + 1) & mask;
    }
    m->keys[i] = k;
    m->lens[i] = (uint32_t)n;
    m->vals[i] = v;
    m->len++;
}

int strmap_get(const struct strmap *m, const char *k, size_t n)
{
    if (!m->cap) return -1;
    size_t mask = m->cap - 1, i = hash_bytes(k, n) & mask;
    while (m->keys[i]) {
        if (m->lens[i] == n && memcmp(m->keys[i], k, n) == 0) return m->vals[i];
        i = (i + 1) & mask;
    }
    return -1;
}

void ids_push(struct ids *a, int id)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        int *v = xrealloc(a->v, cap * sizeof *v);
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = id;
}

void ids_free(struct ids *a)
{
    free(a->v);
    memset(a, 0, sizeof *a);
}

size_t tok_utf8_len(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0];
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    if (n > avail) n = 1;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80) return 1;
    return n;
}

/* ---- loading ---- */

static int meta_id(const struct gguf_file *f, const char *key, int n_vocab, int *out)
{
    uint32_t v;
    int rc = gguf_get_u32(f, key, &v);
    if (rc == 1) return 0;
    if (rc < 0) return -1;
    if (v >= (uint32_t)n_vocab) {
        *out = -1; /* out-of-range ids are ignored, as llama.cpp does */
        return 0;
    }
    *out = (int)v;
    return 0;
}

static int parse_byte_token(const char *s, size_t n)
{
    /* "<0xAB>" */
    if (n != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                       : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

int tok_load(struct tokenizer *t, const struct gguf_file *f, char *err, size_t errn)
{
    memset(t, 0, sizeof *t);
    t->bos = t->eos = t->unk = t->pad = -1;
    struct gguf_str model;
    if (gguf_get_str(f, "tokenizer.ggml.model", &model) != 0) {
        snprintf(err, errn, "missing tokenizer.ggml.model");
        return -1;
    }
    if (gguf_str_eq(model, "llama")) {
        t->kind = TOK_SPM;
    } else if (gguf_str_eq(model, "gpt2")) {
        t->kind = TOK_BPE;
    } else {
        snprintf(err, errn, "unsupported tokenizer.ggml.model '%.*s' (need llama or gpt2)",
                 (int)(model.n > 32 ? 32 : model.n), model.p);
        return -1;
    }
    const struct gguf_kv *tk = gguf_find(f, "tokenizer.ggml.tokens");
    if (!tk || tk->type != GGUF_T_ARRAY || tk->arr_type != GGUF_T_STRING || tk->arr_n == 0 ||
        tk->arr_n > (1u << 24)) {
        snprintf(err, errn, "missing or bad tokenizer.ggml.tokens");
        return -1;
    }
    int nv = (int)tk->arr_n;
    t->n_vocab = nv;
    struct gguf_str *strs = xcalloc((size_t)nv, sizeof *strs);
    t->text = xcalloc((size_t)nv, sizeof *t->text);
    t->len = xcalloc((size_t)nv, sizeof *t->len);
    t->scores = xcalloc((size_t)nv, sizeof *t->scores);
    t->type = xcalloc((size_t)nv, sizeof *t->type);
    gguf_arr_strings(tk, strs);
    const struct gguf_kv *sk = gguf_find(f, "tokenizer.ggml.scores");
    const struct gguf_kv *yk = gguf_find(f, "tokenizer.ggml.token_type");
    if (sk &&
        (sk->type != GGUF_T_ARRAY || sk->arr_n != (uint64_t)nv || sk->arr_type == GGUF_T_STRING))
        sk = NULL;
    if (yk &&
        (yk->type != GGUF_T_ARRAY || yk->arr_n != (uint64_t)nv || yk->arr_type == GGUF_T_STRING))
        yk = NULL;
    strmap_init(&t->vocab, (size_t)nv);
    for (int i = 0; i < 256; i++)
        t->byte_tok[i] = -1;
    for (int i = 0; i < nv; i++) {
        t->len[i] = (uint32_t)strs[i].n;
        t->text[i] = xmalloc(strs[i].n + 1);
        memcpy(t->text[i], strs[i].p, strs[i].n);
        t->text[i][strs[i].n] = 0;
        t->scores[i] = sk ? (float)gguf_arr_num(sk, (uint64_t)i) : 0.0f;
        int ty = yk ? (int)gguf_arr_num(yk, (uint64_t)i) : TT_NORMAL;
        t->type[i] = (uint8_t)(ty >= 1 && ty <= 6 ? ty : TT_NORMAL);
        if (t->kind == TOK_SPM) {
            int b = parse_byte_token(t->text[i], t->len[i]);
            if (b >= 0 && (!yk || t->type[i] == TT_BYTE)) {
                t->type[i] = TT_BYTE;
                if (t->byte_tok[b] < 0) t->byte_tok[b] = i;
            }
        }
        strmap_put(&t->vocab, t->text[i], t->len[i], i);
    }
    free(strs);
    if (meta_id(f, "tokenizer.ggml.bos_token_id", nv, &t->bos) ||
        meta_id(f, "tokenizer.ggml.eos_token_id", nv, &t->eos) ||
        meta_id(f, "tokenizer.ggml.unknown_token_id", nv, &t->unk) ||
        meta_id(f, "tokenizer.ggml.padding_token_id", nv, &t->pad)) {
        snprintf(err, errn, "bad special token id in tokenizer metadata");
        return -1;
    }
    t->add_bos = t->kind == TOK_SPM; /* llama.cpp defaults */
    t->add_eos = false;
    t->add_space_prefix = t->kind == TOK_SPM;
    if (t->kind == TOK_BPE) {
        /* pre-tokenizer first: it sets llama.cpp's add_bos default, which the
         * metadata below overrides */
        struct gguf_str pre = {0};
        if (gguf_get_str(f, "tokenizer.ggml.pre", &pre) != 0) pre.n = 0;
        size_t pn = pre.n < sizeof t->pre_name ? pre.n : sizeof t->pre_name - 1;
        if (pn) memcpy(t->pre_name, pre.p, pn);
        t->pre_name[pn] = 0;
        if (tok_pre_from_name(pre.p, pre.n, &t->pre, &t->ignore_merges, &t->add_bos) != 0) {
            char q[80];
            log_warn("tokenizer_pre_unknown",
                     "pre=%s fallback=gpt-2 msg=\"unknown tokenizer.ggml.pre; using the GPT-2 "
                     "pre-tokenizer\"",
                     log_quote(q, sizeof q, t->pre_name));
            t->pre = TOK_PRE_GPT2;
        }
    }
    bool b;
    if (gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b) == 0) t->add_bos = b;
    if (gguf_get_bool(f, "tokenizer.ggml.add_eos_token", &b) == 0) t->add_eos = b;
    if (gguf_get_bool(f, "tokenizer.ggml.add_space_prefix", &b) == 0) t->add_space_prefix = b;
    if (t->add_bos && t->bos < 0) t->add_bos = false;
    if (t->add_eos && t->eos < 0) t->add_eos = false;
    if (t->kind == TOK_BPE) {
        const struct gguf_kv *mk = gguf_find(f, "tokenizer.ggml.merges");
        if (!mk || mk->type != GGUF_T_ARRAY || mk->arr_type != GGUF_T_STRING) {
            snprintf(err, errn, "gpt2 tokenizer needs tokenizer.ggml.merges");
            return -1;
        }
        struct gguf_str *ms = xcalloc(mk->arr_n ? mk->arr_n : 1, sizeof *ms);
        t->merge_text = xcalloc(mk->arr_n ? mk->arr_n : 1, sizeof *t->merge_text);
        gguf_arr_strings(mk, ms);
        t->n_merges = mk->arr_n;
        strmap_init(&t->merges, mk->arr_n);
        for (size_t i = 0; i < mk->arr_n; i++) {
            t->merge_text[i] = xmalloc(ms[i].n + 1);
            memcpy(t->merge_text[i], ms[i].p, ms[i].n);
            t->merge_text[i][ms[i].n] = 0;
            strmap_put(&t->merges, t->merge_text[i], ms[i].n, (int)i);
        }
        free(ms);
        tok_bpe_init_bytes(t);
    }
    return 0;
}

void tok_free(struct tokenizer *t)
{
    if (t->text)
        for (int i = 0; i < t->n_vocab; i++)
            free(t->text[i]);
    free(t->text);
    free(t->len);
    free(t->scores);
    free(t->type);
    strmap_free(&t->vocab);
    if (t->merge_text)
        for (size_t i = 0; i < t->n_merges; i++)
            free(t->merge_text[i]);
    free(t->merge_text);
    strmap_free(&t->merges);
    memset(t, 0, sizeof *t);
}

void tok_encode(const struct tokenizer *t, const char *text, size_t n, bool add_special,
                struct ids *out)
{
    if (add_special && t->add_bos) ids_push(out, t->bos);
    if (t->kind == TOK_SPM)
        tok_spm_encode(t, text, n, out);
    else
        tok_bpe_encode(t, text, n, out);
    if (add_special && t->add_eos) ids_push(out, t->eos);
}

bool tok_is_control(const struct tokenizer *t, int id)
{
    return id >= 0 && id < t->n_vocab && t->type[id] == TT_CONTROL;
}

void tok_piece(const struct tokenizer *t, int id, struct sbuf *out)
{
    if (id < 0 || id >= t->n_vocab) return;
    const char *s = t->text[id];
    size_t n = t->len[id];
    int ty = t->type[id];
    if (ty == TT_CONTROL || ty == TT_UNUSED) return;
    if (t->kind == TOK_SPM) {
        if (ty == TT_BYTE) {
            int b = parse_byte_token(s, n);
            if (b >= 0) {
                sbuf_putc(out, (char)b);
                return;
            }
        }
        for (size_t i = 0; i < n; i++) {
            if (i + 2 < n && (unsigned char)s[i] == 0xe2 && (unsigned char)s[i + 1] == 0x96 &&
                (unsigned char)s[i + 2] == 0x81) {
                sbuf_putc(out, ' ');
                i += 2;
            } else {
                sbuf_putc(out, s[i]);
            }
        }
        return;
    }
    if (ty == TT_USER) {
        sbuf_append(out, s, n);
        return;
    }
    /* byte-level BPE: each code point maps back to one byte */
    for (size_t i = 0; i < n;) {
        const unsigned char *u = (const unsigned char *)s + i;
        size_t l = tok_utf8_len(u, n - i);
        uint32_t cp = u[0];
        if (l == 2)
            cp = ((uint32_t)(u[0] & 0x1f) << 6) | (u[1] & 0x3f);
        else if (l == 3)
            cp = ((uint32_t)(u[0] & 0x0f) << 12) | ((uint32_t)(u[1] & 0x3f) << 6) | (u[2] & 0x3f);
        else if (l == 4)
            cp = 0x110000; /* never a mapped byte */
        if (cp < 512 && t->cp_byte[cp] >= 0)
            sbuf_putc(out, (char)t->cp_byte[cp]);
        else
            sbuf_append(out, u, l);
        i += l;
    }
}

void tok_decode(const struct tokenizer *t, const int *ids, size_t n, struct sbuf *out)
{
    size_t start = out->len;
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        size_t before = out->len;
        tok_piece(t, ids[i], out);
        if (first && out->len > before) {
            first = false;
            if (t->kind == TOK_SPM && t->add_space_prefix && out->data[start] == ' ') {
                memmove(out->data + start, out->data + start + 1, out->len - start - 1);
                out->len--;
                out->data[out->len] = 0;
            }
        }
    }
}
