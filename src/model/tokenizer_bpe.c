/* Byte-level BPE encoder (tokenizer.ggml.model = "gpt2").
 *
 * 1. Pre-tokenize with the GPT-2 split pattern
 *      's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *    implemented by hand over code points.  Letter/number classes are exact
 *    for ASCII and Latin-1 and approximate beyond (common punctuation, symbol
 *    and emoji blocks count as "other", a few digit blocks as numbers, every
 *    other non-space code point as a letter).  Invalid UTF-8 bytes are "other".
 * 2. Map each byte of a pre-token to its printable code point (GPT-2's
 *    bytes_to_unicode), split into characters and merge the lowest-ranked
 *    adjacent pair (ties: leftmost) until no pair is in tokenizer.ggml.merges.
 * 3. Look the pieces up; a piece not in the vocabulary falls back to its
 *    single-character tokens. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

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

enum cclass { C_SPACE, C_LETTER, C_NUMBER, C_OTHER };

static enum cclass classify(uint32_t cp)
{
    if (cp < 0x80) {
        if (cp == ' ' || (cp >= 9 && cp <= 13)) return C_SPACE;
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return C_LETTER;
        if (cp >= '0' && cp <= '9') return C_NUMBER;
        return C_OTHER;
    }
    if (cp == 0x85 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) ||
        cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000)
        return C_SPACE;
    if (cp == 0xffffffffu) return C_OTHER; /* invalid byte */
    if (cp < 0x100) {
        if (cp == 0xaa || cp == 0xb5 || cp == 0xba) return C_LETTER;
        if (cp == 0xb2 || cp == 0xb3 || cp == 0xb9 || (cp >= 0xbc && cp <= 0xbe)) return C_NUMBER;
        if (cp >= 0xc0 && cp != 0xd7 && cp != 0xf7) return C_LETTER;
        return C_OTHER;
    }
    if ((cp >= 0x660 && cp <= 0x669) || (cp >= 0x6f0 && cp <= 0x6f9) ||
        (cp >= 0x966 && cp <= 0x96f) || (cp >= 0xff10 && cp <= 0xff19) ||
        (cp >= 0x2070 && cp <= 0x2079) || (cp >= 0x2080 && cp <= 0x2089) ||
        (cp >= 0x2150 && cp <= 0x218b) || (cp >= 0x2460 && cp <= 0x249b))
        return C_NUMBER;
    if ((cp >= 0x2000 && cp <= 0x2bff) || (cp >= 0x3000 && cp <= 0x303f) ||
        (cp >= 0xfe30 && cp <= 0xfe4f) || (cp >= 0xff00 && cp <= 0xff0f) ||
        (cp >= 0xff1a && cp <= 0xff20) || (cp >= 0x1f000 && cp <= 0x1faff) ||
        (cp >= 0x2e00 && cp <= 0x2e7f) || (cp >= 0xe000 && cp <= 0xf8ff) || cp == 0xfffd)
        return C_OTHER;
    return C_LETTER;
}

struct cpi {
    uint32_t cp; /* 0xffffffff for an invalid byte */
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
        out[k].off = i;
        out[k].n = l;
        k++;
        i += l;
    }
    return k;
}

/* Length in code points of the pre-token starting at cps[i] (of nc). */
static size_t split_next(const struct cpi *cps, size_t nc, size_t i, const char *s)
{
    uint32_t c = cps[i].cp;
    if (c == '\'' && i + 1 < nc) {
        uint32_t a = cps[i + 1].cp, b = i + 2 < nc ? cps[i + 2].cp : 0;
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    }
    (void)s;
    size_t j = i;
    enum cclass k = classify(c);
    if (c == ' ' && i + 1 < nc && classify(cps[i + 1].cp) != C_SPACE) {
        j = i + 1;
        k = classify(cps[j].cp);
    }
    if (k != C_SPACE) {
        while (j < nc && classify(cps[j].cp) == k)
            j++;
        return j - i;
    }
    /* whitespace run */
    while (j < nc && classify(cps[j].cp) == C_SPACE)
        j++;
    if (j < nc && j - i > 1) return j - i - 1; /* \s+(?!\S) leaves the last one */
    return j - i;
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
        h->v = realloc(h->v, h->cap * sizeof *h->v);
        if (!h->v) abort();
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
    char *w = malloc(2 * n + 1);
    char *key = malloc(4 * n + 2);
    struct bsym *s = malloc(n * sizeof *s);
    if (!w || !key || !s) abort();
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
    struct cpi *cps = malloc(n * sizeof *cps);
    if (!cps) abort();
    size_t nc = decode_cps(text, n, cps);
    for (size_t i = 0; i < nc;) {
        size_t k = split_next(cps, nc, i, text);
        size_t off = cps[i].off, end = cps[i + k - 1].off + cps[i + k - 1].n;
        bpe_word(t, text + off, end - off, out);
        i += k;
    }
    free(cps);
}

size_t tok_bpe_split(const char *text, size_t n, size_t *ends, size_t max_ends)
{
    if (n == 0) return 0;
    struct cpi *cps = malloc(n * sizeof *cps);
    if (!cps) abort();
    size_t nc = decode_cps(text, n, cps), k = 0;
    for (size_t i = 0; i < nc;) {
        size_t len = split_next(cps, nc, i, text);
        if (k < max_ends) ends[k] = cps[i + len - 1].off + cps[i + len - 1].n;
        k++;
        i += len;
    }
    free(cps);
    return k;
}
