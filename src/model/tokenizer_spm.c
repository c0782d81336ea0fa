/* SentencePiece-style encoder (tokenizer.ggml.model = "llama"), the algorithm
 * llama.cpp uses: spaces become U+2581, an optional leading U+2581, the text
 * is split into UTF-8 characters, then the adjacent pair whose concatenation
 * is a vocabulary piece with the highest score is merged (ties: leftmost),
 * repeatedly.  Leftover pieces not in the vocabulary fall back to <0xXX>
 * byte tokens (or unk). */
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "xalloc.h"

struct sym {
    int prev, next;
    size_t off, n; /* span in the normalised text; n == 0 once merged away */
};

struct bigram {
    float score;
    int left;
    size_t n; /* merged length when queued (stale check) */
};

struct heap {
    struct bigram *v;
    size_t n, cap;
};

/* higher score first, then smaller left */
static int bg_before(const struct bigram *a, const struct bigram *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(struct heap *h, struct bigram b)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 64;
        h->v = xrealloc(h->v, h->cap * sizeof *h->v);
    }
    size_t i = h->n++;
    h->v[i] = b;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bg_before(&h->v[i], &h->v[p])) break;
        struct bigram t = h->v[i];
        h->v[i] = h->v[p];
        h->v[p] = t;
        i = p;
    }
}

static struct bigram heap_pop(struct heap *h)
{
    struct bigram top = h->v[0];
    h->v[0] = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && bg_before(&h->v[l], &h->v[m])) m = l;
        if (r < h->n && bg_before(&h->v[r], &h->v[m])) m = r;
        if (m == i) break;
        struct bigram t = h->v[i];
        h->v[i] = h->v[m];
        h->v[m] = t;
        i = m;
    }
    return top;
}

static int mergeable(const struct tokenizer *t, const char *s, size_t n)
{
    int id = strmap_get(&t->vocab, s, n);
    if (id < 0) return -1;
    int ty = t->type[id];
    if (ty == TT_CONTROL || ty == TT_BYTE || ty == TT_UNUSED) return -1;
    return id;
}

static void try_bigram(const struct tokenizer *t, const char *txt, struct sym *syms, int left,
                       struct heap *h)
{
    if (left < 0) return;
    int right = syms[left].next;
    if (right < 0) return;
    size_t n = syms[left].n + syms[right].n;
    int id = mergeable(t, txt + syms[left].off, n);
    if (id < 0) return;
    struct bigram b = {t->scores[id], left, n};
    heap_push(h, b);
}

void tok_spm_encode(const struct tokenizer *t, const char *text, size_t n, struct ids *out)
{
    if (n == 0) return;
    /* normalise: optional prefix, ' ' -> U+2581 (e2 96 81) */
    size_t cap = 3 * n + 3;
    char *txt = xmalloc(cap);
    size_t m = 0;
    if (t->add_space_prefix) {
        memcpy(txt, "\xe2\x96\x81", 3);
        m = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (text[i] == ' ') {
            memcpy(txt + m, "\xe2\x96\x81", 3);
            m += 3;
        } else {
            txt[m++] = text[i];
        }
    }
    struct sym *syms = xmalloc(m * sizeof *syms);
    int ns = 0;
    for (size_t i = 0; i < m;) {
        size_t l = tok_utf8_len((const unsigned char *)txt + i, m - i);
        syms[ns].off = i;
        syms[ns].n = l;
        syms[ns].prev = ns - 1;
        syms[ns].next = -1;
        if (ns > 0) syms[ns - 1].next = ns;
        ns++;
        i += l;
    }
    struct heap h = {0};
    for (int i = 0; i + 1 < ns; i++)
        try_bigram(t, txt, syms, i, &h);
    while (h.n > 0) {
        struct bigram b = heap_pop(&h);
        struct sym *l = &syms[b.left];
        if (l->n == 0 || l->next < 0) continue;
        struct sym *r = &syms[l->next];
        if (l->n + r->n != b.n) continue; /* stale */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) syms[r->next].prev = b.left;
        try_bigram(t, txt, syms, l->prev, &h);
        try_bigram(t, txt, syms, b.left, &h);
    }
    free(h.v);
    for (int i = 0; i >= 0 && ns > 0; i = syms[i].next) {
        const char *s = txt + syms[i].off;
        int id = strmap_get(&t->vocab, s, syms[i].n);
        if (id >= 0 && t->type[id] != TT_CONTROL && t->type[id] != TT_UNUSED) {
            ids_push(out, id);
            continue;
        }
        for (size_t k = 0; k < syms[i].n; k++) {
            int b = t->byte_tok[(unsigned char)s[k]];
            if (b >= 0)
                ids_push(out, b);
            else if (t->unk >= 0)
                ids_push(out, t->unk);
        }
    }
    free(syms);
    free(txt);
}
