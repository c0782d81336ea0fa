/* Byte-level BPE encoder (tokenizer.ggml.model = "gpt2").
 *
 * 1. Pre-tokenize with the pattern tokenizer.ggml.pre selects, implemented by
 *    hand over code points with the semantics of llama.cpp's splitters (which
 *    equal the regexes' leftmost-alternative backtracking semantics):
 *      gpt-2:     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *      llama-bpe: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *                  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *      qwen2:     the same with \p{N} (single digits)
 *      default:   llama.cpp's chain: [\p{P}$+<=>^~|]+, then gpt-2 inside each
 *                 piece, then \p{N}+, then [0-9]{3}; each splits every piece
 *                 into its matches and the text between them.
 *      starcoder (refact, command-r, smollm, ...): \p{N}, then gpt-2
 *      falcon:    [\p{P}$+<=>^~|`]+, then gpt-2, then [0-9]{3}
 *    \p{L}, \p{N} and \s come from the generated Unicode tables (unicode.h);
 *    marks (\p{M}) are neither letters nor numbers, as in the regexes.  An
 *    invalid UTF-8 byte classifies as U+FFFD (a symbol) but keeps its byte.
 * 2. Map each byte of a pre-token to its printable code point (GPT-2's
 *    bytes_to_unicode).  With ignore_merges (llama-bpe) a pre-token that is a
 *    vocabulary entry as a whole is that token.  Otherwise split into
 *    characters and merge the lowest-ranked adjacent pair (ties: leftmost)
 *    until no pair is in tokenizer.ggml.merges.
 * 3. Look the pieces up; a piece not in the vocabulary falls back to its
 *    single-character tokens. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "unicode.h"
#include "xalloc.h"

void tok_bpe_init_bytes(struct tokenizer *t)
{
    for (int i = 0; i < 512; i++)
        t->cp_byte[i] = -1;
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        int direct = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
        int cp = direct ? b : 256 + extra++;
        t->byte_cp[b] = (uint16_t)cp;
        t->cp_byte[cp] = (int16_t)b;
    }
    for (int b = 0; b < 256; b++) {
        char u[3];
        int cp = t->byte_cp[b];
        size_t n;
        if (cp < 0x80) {
            u[0] = (char)cp;
            n = 1;
        } else {
            u[0] = (char)(0xc0 | (cp >> 6));
            u[1] = (char)(0x80 | (cp & 0x3f));
            n = 2;
        }
        t->byte_tok[b] = strmap_get(&t->vocab, u, n);
    }
}

struct cpi {
    uint32_t cp; /* 0xffffffff for an invalid byte */
    unsigned fl; /* uni_flags; an invalid byte classifies as U+FFFD, as in llama.cpp */
    size_t off, n;
};

static size_t decode_cps(const char *s, size_t n, struct cpi *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        const unsigned char *u = (const unsigned char *)s + i;
        size_t l = tok_utf8_len(u, n - i);
        uint32_t cp;
        if (l == 1)
            cp = u[0] < 0x80 ? u[0] : 0xffffffffu;
        else if (l == 2)
            cp = ((uint32_t)(u[0] & 0x1f) << 6) | (u[1] & 0x3f);
        else if (l == 3)
            cp = ((uint32_t)(u[0] & 0x0f) << 12) | ((uint32_t)(u[1] & 0x3f) << 6) | (u[2] & 0x3f);
        else
            cp = ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3f) << 12) |
                 ((uint32_t)(u[2] & 0x3f) << 6) | (u[3] & 0x3f);
        out[k].cp = cp;
        out[k].fl = uni_flags(cp == 0xffffffffu ? 0xfffd : cp);
        out[k].off = i;
        out[k].n = l;
        k++;
        i += l;
    }
    return k;
}

/* Pieces as a list of end positions (code point indices); a piece runs from
 * the previous end (or the stage's start) to its end. */
struct spl {
    size_t *end;
    size_t n, cap;
};

static void spl_add(struct spl *o, size_t end)
{
    if (end == 0 || (o->n && o->end[o->n - 1] >= end)) return; /* empty piece */
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 64;
        o->end = xrealloc(o->end, o->cap * sizeof *o->end);
    }
    o->end[o->n++] = end;
}

#define IS_RN(x) ((x) == '\r' || (x) == '\n')
#define SLN (UNI_SPACE | UNI_LETTER | UNI_NUMBER)

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * over code points [ini, end).  FL() is 0 past the end, like llama.cpp's
 * out-of-range flags, which is what ends every run. */
static void split_gpt2(const struct cpi *c, size_t ini, size_t end, struct spl *o)
{
#define FL(p) ((p) < end ? c[p].fl : 0u)
    size_t pos = ini;
    while (pos < end) {
        uint32_t cp = c[pos].cp;
        unsigned fl = c[pos].fl;
        if (cp == '\'' && pos + 1 < end) {
            uint32_t a = c[pos + 1].cp, b = pos + 2 < end ? c[pos + 2].cp : 0;
            if (a == 's' || a == 't' || a == 'm' || a == 'd') {
                spl_add(o, pos += 2);
                continue;
            }
            if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
                spl_add(o, pos += 3);
                continue;
            }
        }
        unsigned f2 = cp == ' ' ? FL(pos + 1) : fl;
        if (f2 & (UNI_LETTER | UNI_NUMBER)) {
            unsigned cls = f2 & UNI_LETTER ? UNI_LETTER : UNI_NUMBER;
            pos += cp == ' ';
            while (FL(pos) & cls)
                pos++;
            spl_add(o, pos);
            continue;
        }
        if (!(f2 & SLN) && f2) {
            pos += cp == ' ';
            while (!(FL(pos) & SLN) && FL(pos))
                pos++;
            spl_add(o, pos);
            continue;
        }
        size_t nws = 0;
        while (FL(pos + nws) & UNI_SPACE)
            nws++;
        if (nws > 1 && pos + nws < end)
            pos += nws - 1; /* \s+(?!\S): the last space goes with what follows */
        else
            pos += nws ? nws : 1;
        spl_add(o, pos);
    }
}

/* Llama-3 (maxdig 3) and Qwen2 (maxdig 1):
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,maxdig}|
 *    ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+                       */
static void split_llama3(const struct cpi *c, size_t ini, size_t end, size_t maxdig, struct spl *o)
{
    size_t pos = ini;
    while (pos < end) {
        uint32_t cp = c[pos].cp;
        unsigned fl = c[pos].fl;
        if (cp == '\'' && pos + 1 < end) {
            uint32_t a = uni_tolower(c[pos + 1].cp),
                     b = pos + 2 < end ? uni_tolower(c[pos + 2].cp) : 0;
            if (a == 's' || a == 't' || a == 'm' || a == 'd') {
                spl_add(o, pos += 2);
                continue;
            }
            if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
                spl_add(o, pos += 3);
                continue;
            }
        }
        /* one optional non-letter/number/newline prefix, then letters */
        if (!IS_RN(cp) && !(fl & UNI_NUMBER) && ((fl & UNI_LETTER) || (FL(pos + 1) & UNI_LETTER))) {
            pos++;
            while (FL(pos) & UNI_LETTER)
                pos++;
            spl_add(o, pos);
            continue;
        }
        if (fl & UNI_NUMBER) {
            size_t run = 0;
            while (FL(pos) & UNI_NUMBER) {
                pos++;
                if (++run == maxdig) {
                    spl_add(o, pos);
                    run = 0;
                }
            }
            spl_add(o, pos);
            continue;
        }
        unsigned f2 = cp == ' ' ? FL(pos + 1) : fl;
        if (!(f2 & SLN)) { /* fl is never 0 here: pos < end */
            pos += cp == ' ';
            while (!(FL(pos) & SLN) && FL(pos))
                pos++;
            while (pos < end && IS_RN(c[pos].cp))
                pos++;
            spl_add(o, pos);
            continue;
        }
        size_t nws = 0, last_rn = 0;
        while (FL(pos + nws) & UNI_SPACE) {
            if (IS_RN(c[pos + nws].cp)) last_rn = pos + nws + 1;
            nws++;
        }
        if (last_rn) /* \s*[\r\n]+ */
            pos = last_rn;
        else if (nws > 1 && pos + nws < end)
            pos += nws - 1;
        else
            pos += nws ? nws : 1;
        spl_add(o, pos);
    }
#undef FL
}

/* Chains of regex splits (llama.cpp applies several regexes in turn; each
 * splits every piece into its matches and the text between them). */
enum stage { ST_PUNCT, ST_PUNCT_TICK, ST_GPT2, ST_NUMBER_RUNS, ST_NUMBER_EACH, ST_DIGITS3 };

/* [\p{P}$+<=>^~|]  (ST_PUNCT_TICK adds the backtick, as falcon's regex does) */
static bool is_punct(const struct cpi *c, bool tick)
{
    uint32_t x = c->cp;
    if (x < 0x80)
        return x == '$' || x == '+' || x == '<' || x == '=' || x == '>' || x == '^' || x == '~' ||
               x == '|' || (tick && x == '`') || (c->fl & UNI_PUNCT);
    return !(c->fl & UNI_SPACE) && (c->fl & UNI_PUNCT);
}

static bool is_number(const struct cpi *c)
{
    return !(c->fl & UNI_SPACE) && (c->fl & UNI_NUMBER);
}

/* runs of X+ against the rest */
static void split_runs(const struct cpi *c, size_t ini, size_t end, int st, struct spl *o)
{
    for (size_t i = ini; i < end; i++) {
        bool x = st == ST_NUMBER_RUNS ? is_number(&c[i]) : is_punct(&c[i], st == ST_PUNCT_TICK);
        bool y = i == ini || (st == ST_NUMBER_RUNS ? is_number(&c[i - 1])
                                                   : is_punct(&c[i - 1], st == ST_PUNCT_TICK));
        if (i > ini && x != y) spl_add(o, i);
    }
    spl_add(o, end);
}

/* \p{N}: every number its own piece */
static void split_each_number(const struct cpi *c, size_t ini, size_t end, struct spl *o)
{
    for (size_t i = ini; i < end; i++)
        if (is_number(&c[i])) {
            spl_add(o, i);
            spl_add(o, i + 1);
        }
    spl_add(o, end);
}

/* [0-9][0-9][0-9] matches (left to right) against the rest */
static void split_digits3(const struct cpi *c, size_t ini, size_t end, struct spl *o)
{
    for (size_t i = ini; i < end;) {
        if (i + 3 <= end && c[i].cp - '0' < 10 && c[i + 1].cp - '0' < 10 &&
            c[i + 2].cp - '0' < 10) {
            spl_add(o, i);
            spl_add(o, i + 3);
            i += 3;
        } else {
            i++;
        }
    }
    spl_add(o, end);
}

/* Apply one stage to every piece of in (covering [0, nc)), into out. */
static void spl_stage(const struct cpi *c, const struct spl *in, enum stage st, struct spl *out)
{
    out->n = 0;
    size_t ini = 0;
    for (size_t k = 0; k < in->n; k++) {
        size_t end = in->end[k];
        switch (st) {
        case ST_PUNCT:
        case ST_PUNCT_TICK:
        case ST_NUMBER_RUNS:
            split_runs(c, ini, end, st, out);
            break;
        case ST_GPT2:
            split_gpt2(c, ini, end, out);
            break;
        case ST_NUMBER_EACH:
            split_each_number(c, ini, end, out);
            break;
        case ST_DIGITS3:
            split_digits3(c, ini, end, out);
            break;
        }
        ini = end;
    }
}

/* Pre-tokenize nc code points into o (end positions). */
static void pretokenize(enum tok_pre pre, const struct cpi *c, size_t nc, struct spl *o)
{
    static const enum stage chain_default[] = {ST_PUNCT, ST_GPT2, ST_NUMBER_RUNS, ST_DIGITS3};
    static const enum stage chain_falcon[] = {ST_PUNCT_TICK, ST_GPT2, ST_DIGITS3};
    static const enum stage chain_digits[] = {ST_NUMBER_EACH, ST_GPT2};
    const enum stage *chain = chain_default;
    size_t n_chain = 4;
    o->n = 0;
    if (nc == 0) return;
    switch (pre) {
    case TOK_PRE_GPT2:
        split_gpt2(c, 0, nc, o);
        return;
    case TOK_PRE_LLAMA3:
        split_llama3(c, 0, nc, 3, o);
        return;
    case TOK_PRE_QWEN2:
        split_llama3(c, 0, nc, 1, o);
        return;
    case TOK_PRE_FALCON:
        chain = chain_falcon;
        n_chain = 3;
        break;
    case TOK_PRE_DIGITS_GPT2:
        chain = chain_digits;
        n_chain = 2;
        break;
    case TOK_PRE_DEFAULT:
        break;
    }
    struct spl tmp = {0};
    spl_add(&tmp, nc);
    for (size_t k = 0; k < n_chain; k++) {
        spl_stage(c, &tmp, chain[k], o);
        struct spl x = tmp;
        tmp = *o;
        *o = x;
    }
    free(o->end);
    *o = tmp;
}

struct bsym {
    int prev, next;
    size_t off, n; /* span in the mapped word */
};

struct bpair {
    int rank, left;
    size_t n;
};

static int pair_before(const struct bpair *a, const struct bpair *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

struct pheap {
    struct bpair *v;
    size_t n, cap;
};

static void ph_push(struct pheap *h, struct bpair p)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 64;
        h->v = xrealloc(h->v, h->cap * sizeof *h->v);
    }
    size_t i = h->n++;
    h->v[i] = p;
    while (i > 0) {
        size_t q = (i - 1) / 2;
        if (!pair_before(&h->v[i], &h->v[q])) break;
        struct bpair t = h->v[i];
        h->v[i] = h->v[q];
        h->v[q] = t;
        i = q;
    }
}

static struct bpair ph_pop(struct pheap *h)
{
    struct bpair top = h->v[0];
    h->v[0] = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && pair_before(&h->v[l], &h->v[m])) m = l;
        if (r < h->n && pair_before(&h->v[r], &h->v[m])) m = r;
        if (m == i) break;
        struct bpair t = h->v[i];
        h->v[i] = h->v[m];
        h->v[m] = t;
        i = m;
    }
    return top;
}

static void try_pair(const struct tokenizer *t, const char *w, struct bsym *s, int left,
                     struct pheap *h, char *key)
{
    if (left < 0 || s[left].next < 0) return;
    int right = s[left].next;
    size_t ln = s[left].n, rn = s[right].n;
    memcpy(key, w + s[left].off, ln);
    key[ln] = ' ';
    memcpy(key + ln + 1, w + s[right].off, rn);
    int rank = strmap_get(&t->merges, key, ln + 1 + rn);
    if (rank < 0) return;
    struct bpair p = {rank, left, ln + rn};
    ph_push(h, p);
}

static void bpe_word(const struct tokenizer *t, const char *src, size_t n, struct ids *out)
{
    /* map bytes to code points (1-2 UTF-8 bytes each) */
    char *w = xmalloc(2 * n + 1);
    char *key = xmalloc(4 * n + 2);
    struct bsym *s = xmalloc(n * sizeof *s);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        int cp = t->byte_cp[(unsigned char)src[i]];
        s[i].off = m;
        s[i].prev = (int)i - 1;
        s[i].next = i + 1 < n ? (int)i + 1 : -1;
        if (cp < 0x80) {
            w[m++] = (char)cp;
        } else {
            w[m++] = (char)(0xc0 | (cp >> 6));
            w[m++] = (char)(0x80 | (cp & 0x3f));
        }
        s[i].n = m - s[i].off;
    }
    /* ignore_merges (llama.cpp, Llama-3): a pre-token that is a vocabulary
     * entry as a whole is that token, whatever the merges would build */
    int whole = t->ignore_merges ? strmap_get(&t->vocab, w, m) : -1;
    if (whole >= 0) {
        ids_push(out, whole);
        free(s);
        free(key);
        free(w);
        return;
    }
    struct pheap h = {0};
    for (size_t i = 0; i + 1 < n; i++)
        try_pair(t, w, s, (int)i, &h, key);
    while (h.n) {
        struct bpair p = ph_pop(&h);
        struct bsym *l = &s[p.left];
        if (l->n == 0 || l->next < 0) continue;
        struct bsym *r = &s[l->next];
        if (l->n + r->n != p.n) continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) s[r->next].prev = p.left;
        try_pair(t, w, s, l->prev, &h, key);
        try_pair(t, w, s, p.left, &h, key);
    }
    free(h.v);
    for (int i = 0; i >= 0 && n > 0; i = s[i].next) {
        int id = strmap_get(&t->vocab, w + s[i].off, s[i].n);
        if (id >= 0) {
            ids_push(out, id);
            continue;
        }
        /* fall back to single characters (one per byte) */
        for (size_t k = s[i].off; k < s[i].off + s[i].n;) {
            size_t l = tok_utf8_len((const unsigned char *)w + k, s[i].off + s[i].n - k);
            int c = strmap_get(&t->vocab, w + k, l);
            if (c >= 0)
                ids_push(out, c);
            else if (t->unk >= 0)
                ids_push(out, t->unk);
            k += l;
        }
    }
    free(s);
    free(key);
    free(w);
}

void tok_bpe_encode(const struct tokenizer *t, const char *text, size_t n, struct ids *out)
{
    if (n == 0) return;
    struct cpi *cps = xmalloc(n * sizeof *cps);
    size_t nc = decode_cps(text, n, cps);
    struct spl pieces = {0};
    pretokenize(t->pre, cps, nc, &pieces);
    size_t ini = 0;
    for (size_t k = 0; k < pieces.n; k++) {
        size_t e = pieces.end[k];
        size_t off = cps[ini].off, end = cps[e - 1].off + cps[e - 1].n;
        bpe_word(t, text + off, end - off, out);
        ini = e;
    }
    free(pieces.end);
    free(cps);
}

size_t tok_bpe_split(enum tok_pre pre, const char *text, size_t n, size_t *ends, size_t max_ends)
{
    if (n == 0) return 0;
    struct cpi *cps = xmalloc(n * sizeof *cps);
    size_t nc = decode_cps(text, n, cps);
    struct spl pieces = {0};
    pretokenize(pre, cps, nc, &pieces);
    for (size_t k = 0; k < pieces.n && k < max_ends; k++)
        ends[k] = cps[pieces.end[k] - 1].off + cps[pieces.end[k] - 1].n;
    size_t count = pieces.n;
    free(pieces.end);
    free(cps);
    return count;
}

static bool name_in(const char *name, size_t n, const char *const *list)
{
    for (; *list; list++)
        if (strlen(*list) == n && memcmp(*list, name, n) == 0) return true;
    return false;
}

int tok_pre_from_name(const char *name, size_t n, enum tok_pre *pre, bool *ignore_merges,
                      bool *add_bos)
{
    /* the names llama.cpp maps to these regexes (llama-vocab.cpp) */
    static const char *const llama3[] = {"llama3",  "llama-v3", "llama-bpe", "falcon3", "falcon-h1",
                                         "pixtral", "midm-2.0", "lfm2",      NULL};
    static const char *const llama3_plain[] = {"dbrx", "smaug-bpe", "chatglm-bpe", NULL};
    static const char *const gpt2[] = {"gpt-2",      "phi-2", "jina-es", "jina-de", "jina-v2-es",
                                       "jina-v2-de", "mpt",   "olmo",    "jais",    NULL};
    static const char *const digits[] = {"starcoder", "refact", "command-r", "smollm",
                                         "codeshell", "exaone", "minerva",   NULL};
    static const char *const qwen2[] = {"qwen2", "deepseek-r1-qwen", "stablelm2", NULL};
    *ignore_merges = false;
    if (n == 0 || name_in(name, n, (const char *const[]){"default", NULL})) {
        *pre = TOK_PRE_DEFAULT;
    } else if (name_in(name, n, llama3)) {
        *pre = TOK_PRE_LLAMA3;
        *ignore_merges = true;
        *add_bos = true;
    } else if (name_in(name, n, llama3_plain)) {
        *pre = TOK_PRE_LLAMA3;
    } else if (name_in(name, n, gpt2)) {
        *pre = TOK_PRE_GPT2;
    } else if (name_in(name, n, qwen2)) {
        *pre = TOK_PRE_QWEN2;
    } else if (name_in(name, n, digits)) {
        *pre = TOK_PRE_DIGITS_GPT2;
    } else if (name_in(name, n, (const char *const[]){"falcon", NULL})) {
        *pre = TOK_PRE_FALCON;
    } else {
        return -1;
    }
    return 0;
}

const char *tok_pre_name(enum tok_pre pre)
{
    switch (pre) {
    case TOK_PRE_GPT2:
        return "gpt-2";
    case TOK_PRE_LLAMA3:
        return "llama-bpe";
    case TOK_PRE_QWEN2:
        return "qwen2";
    case TOK_PRE_DIGITS_GPT2:
        return "starcoder";
    case TOK_PRE_FALCON:
        return "falcon";
    case TOK_PRE_DEFAULT:
        break;
    }
    return "default";
}
