/* Tokenizers: known splits on small hand-made vocabularies, the GPT-2
 * pre-tokenizer, and encode/decode round trips on random text (ASCII, UTF-8,
 * invalid bytes) with the generated init-tiny vocabularies of both kinds. */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "../common/assert_ext.h"
#include "model/gguf.h"
#include "model/tiny.h"
#include "model/tokenizer.h"

static struct gguf_file *finish(struct gguf_writer *w)
{
    struct sbuf b = SBUF_INIT;
    gguf_w_finish(w, &b);
    gguf_w_free(w);
    size_t n;
    char *d = sbuf_steal(&b, &n);
    struct gguf_file *f;
    char err[256];
    if (gguf_open_mem(d, n, true, &f, err, sizeof err)) fail_msg("%s", err);
    return f;
}

/* SPM vocabulary: 0 <unk> 1 <s> 2 </s>, 3..258 <0xXX>, then pieces */
static const char *SPM_PIECES[] = {
    "\xe2\x96\x81",      "h", "e", "l", "o",  "he", "ll", "hell", "\xe2\x96\x81hell",
    "\xe2\x96\x81hello", "a", "b", "c", "ab", "bc"};
static const float SPM_SCORES[] = {0, 0, 0, 0, 0, -1, -2, -3, -4, -5, 0, 0, 0, -1, 0};
#define SPM_BASE 259

static void spm_tok(struct tokenizer *t, bool space_prefix)
{
    int np = (int)(sizeof SPM_PIECES / sizeof *SPM_PIECES), nv = SPM_BASE + np;
    const char **toks = calloc((size_t)nv, sizeof *toks);
    float *sc = calloc((size_t)nv, sizeof *sc);
    int32_t *ty = calloc((size_t)nv, sizeof *ty);
    char(*bytes)[8] = calloc(256, 8);
    toks[0] = "<unk>";
    toks[1] = "<s>";
    toks[2] = "</s>";
    ty[0] = 2;
    ty[1] = ty[2] = 3;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], 8, "<0x%02X>", b);
        toks[3 + b] = bytes[b];
        ty[3 + b] = 6;
    }
    for (int i = 0; i < np; i++) {
        toks[SPM_BASE + i] = SPM_PIECES[i];
        sc[SPM_BASE + i] = SPM_SCORES[i];
        ty[SPM_BASE + i] = 1;
    }
    struct gguf_writer w;
    gguf_w_init(&w);
    gguf_w_str(&w, "tokenizer.ggml.model", "llama");
    gguf_w_arr_str(&w, "tokenizer.ggml.tokens", toks, (uint64_t)nv);
    gguf_w_arr_f32(&w, "tokenizer.ggml.scores", sc, (uint64_t)nv);
    gguf_w_arr_i32(&w, "tokenizer.ggml.token_type", ty, (uint64_t)nv);
    gguf_w_u32(&w, "tokenizer.ggml.bos_token_id", 1);
    gguf_w_u32(&w, "tokenizer.ggml.eos_token_id", 2);
    gguf_w_bool(&w, "tokenizer.ggml.add_space_prefix", space_prefix);
    struct gguf_file *f = finish(&w);
    char err[256];
    if (tok_load(t, f, err, sizeof err)) fail_msg("%s", err);
    gguf_close(f);
    free(toks);
    free(sc);
    free(ty);
    free(bytes);
}

static void expect(const struct tokenizer *t, const char *text, bool special, const int *want,
                   size_t n)
{
    struct ids ids = {0};
    tok_encode(t, text, strlen(text), special, &ids);
    if (ids.n != n) {
        for (size_t i = 0; i < ids.n; i++)
            print_message("%d ", ids.v[i]);
        print_message("\n");
    }
    assert_int_equal(ids.n, n);
    assert_memory_equal(ids.v, want, n * sizeof(int));
    ids_free(&ids);
}

#define P(i) (SPM_BASE + (i))
#define BYTE(b) (3 + (b))

static void test_spm_known_splits(void **st)
{
    (void)st;
    struct tokenizer t;
    spm_tok(&t, true);
    /* ▁ h e l l o -> he (-1) -> ll (-2) -> hell (-3) -> ▁hell (-4) -> ▁hello */
    int a[] = {P(9)};
    expect(&t, "hello", false, a, 1);
    int b[] = {1, P(9)};
    expect(&t, "hello", true, b, 2);
    /* unknown pairs stay apart; é has no piece: byte fallback C3 A9 */
    int c[] = {P(9), P(0), P(4), P(3), P(0), P(1), BYTE(0xc3), BYTE(0xa9)};
    expect(&t, "hello ol h\xc3\xa9", false, c, 8);
    /* score order: "bc" (0) beats "ab" (-1) */
    int d[] = {P(0), P(10), P(14)};
    expect(&t, "abc", false, d, 3);
    /* "<s>" in text is never the control token */
    struct ids ids = {0};
    tok_encode(&t, "<s>", 3, false, &ids);
    for (size_t i = 0; i < ids.n; i++)
        assert_int_not_equal(ids.v[i], 1);
    ids_free(&ids);
    /* decode drops the prefix space, maps ▁ to space and byte tokens to bytes */
    struct sbuf s = SBUF_INIT;
    tok_decode(&t, c, 8, &s);
    assert_string_equal(s.data, "hello ol h\xc3\xa9");
    sbuf_free(&s);
    tok_free(&t);
    /* without the space prefix */
    spm_tok(&t, false);
    int e[] = {P(7), P(4)};
    expect(&t, "hello", false, e, 2);
    tok_free(&t);
}

static void test_bpe_pretokenizer(void **st)
{
    (void)st;
    const char *s = "I'm  fine!!\n\nok 123 caf\xc3\xa9s're";
    const char *want[] = {"I",  "'m", " ",    " fine",         "!!", "\n",
                          "\n", "ok", " 123", " caf\xc3\xa9s", "'re"};
    size_t ends[32];
    size_t n = tok_bpe_split(TOK_PRE_GPT2, s, strlen(s), ends, 32);
    assert_int_equal(n, sizeof want / sizeof *want);
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ends[i] - start, strlen(want[i]));
        assert_memory_equal(s + start, want[i], strlen(want[i]));
        start = ends[i];
    }
    /* trailing whitespace stays one piece; a lone space before punctuation attaches */
    const char *s2 = "a ,b   ";
    const char *want2[] = {"a", " ,", "b", "   "};
    n = tok_bpe_split(TOK_PRE_GPT2, s2, strlen(s2), ends, 32);
    assert_int_equal(n, 4);
    start = 0;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ends[i] - start, strlen(want2[i]));
        start = ends[i];
    }
}

/* pieces: NULL-terminated list of the expected pre-tokens of text */
static void expect_split(enum tok_pre pre, const char *text, const char *const *pieces)
{
    size_t ends[64], want = 0;
    while (pieces[want])
        want++;
    size_t n = tok_bpe_split(pre, text, strlen(text), ends, 64);
    size_t start = 0;
    for (size_t i = 0; i < n && i < 64; i++) {
        print_message("[%.*s] ", (int)(ends[i] - start), text + start);
        start = ends[i];
    }
    print_message("\n");
    assert_int_equal(n, want);
    start = 0;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ends[i] - start, strlen(pieces[i]));
        assert_memory_equal(text + start, pieces[i], strlen(pieces[i]));
        start = ends[i];
    }
}

static void test_pretokenizers(void **st)
{
    (void)st;
    /* llama-bpe: case-insensitive contractions, 1-3 digit groups, a single
     * punctuation / tab prefix stays with the word, newline runs */
    expect_split(TOK_PRE_LLAMA3, "I'M can'T 12345 1,234",
                 (const char *const[]){"I", "'M", " can", "'T", " ", "123", "45", " ", "1", ",",
                                       "234", NULL});
    expect_split(TOK_PRE_LLAMA3, "\tfoo .bar", (const char *const[]){"\tfoo", " .", "bar", NULL});
    expect_split(TOK_PRE_LLAMA3, "hello\n\n\nworld",
                 (const char *const[]){"hello", "\n\n\n", "world", NULL});
    expect_split(TOK_PRE_LLAMA3, "a  \n b x!!\n\ny  ",
                 (const char *const[]){"a", "  \n", " b", " x", "!!\n\n", "y", "  ", NULL});
    /* Hindi: vowel signs and virama are marks (\p{M}), not letters */
    expect_split(TOK_PRE_LLAMA3,
                 "\xe0\xa4\xb9\xe0\xa4\xbf\xe0\xa4\xa8\xe0\xa5\x8d\xe0\xa4\xa6\xe0\xa5\x80",
                 (const char *const[]){"\xe0\xa4\xb9", "\xe0\xa4\xbf\xe0\xa4\xa8",
                                       "\xe0\xa5\x8d\xe0\xa4\xa6", "\xe0\xa5\x80", NULL});
    /* CJK letters, U+3000 ideographic space is \s, emoji are symbols */
    expect_split(TOK_PRE_LLAMA3,
                 "\xe4\xb8\xad\xe6\x96\x87\xe3\x80\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80x",
                 (const char *const[]){"\xe4\xb8\xad\xe6\x96\x87", "\xe3\x80\x80",
                                       "\xf0\x9f\x98\x80\xf0\x9f\x98\x80", "x", NULL});
    /* qwen2: single digits */
    expect_split(TOK_PRE_QWEN2, "ab 12345'S",
                 (const char *const[]){"ab", " ", "1", "2", "3", "4", "5", "'S", NULL});
    /* gpt-2: case-sensitive contractions, digit runs */
    expect_split(TOK_PRE_GPT2, "I'M 12345", (const char *const[]){"I", "'", "M", " 12345", NULL});
    /* default (llama.cpp's chain): punctuation and $+<=>^~| runs, digits
     * apart and in threes */
    expect_split(
        TOK_PRE_DEFAULT, "a+b=c 12345 x,y",
        (const char *const[]){"a", "+", "b", "=", "c", " ", "123", "45", " x", ",", "y", NULL});
    /* a piece that starts with a 3-digit group (no empty piece before it) */
    expect_split(TOK_PRE_DEFAULT, "12345", (const char *const[]){"123", "45", NULL});
    /* starcoder & co: every digit apart, then gpt-2; falcon: punctuation with
     * the backtick, gpt-2, then digits in threes */
    expect_split(TOK_PRE_DIGITS_GPT2, "ab123 c",
                 (const char *const[]){"ab", "1", "2", "3", " c", NULL});
    expect_split(TOK_PRE_FALCON, "a`b 12345",
                 (const char *const[]){"a", "`", "b", " ", "123", "45", NULL});
    /* names */
    enum tok_pre pre;
    bool im, bos = false;
    assert_int_equal(tok_pre_from_name("llama-bpe", 9, &pre, &im, &bos), 0);
    ASSERT_EQ_INT(pre, TOK_PRE_LLAMA3);
    assert_true(im);
    assert_true(bos);
    bos = false;
    assert_int_equal(tok_pre_from_name("qwen2", 5, &pre, &im, &bos), 0);
    ASSERT_EQ_INT(pre, TOK_PRE_QWEN2);
    assert_false(im);
    assert_false(bos);
    assert_int_equal(tok_pre_from_name("", 0, &pre, &im, &bos), 0);
    ASSERT_EQ_INT(pre, TOK_PRE_DEFAULT);
    assert_int_equal(tok_pre_from_name("tekken-x", 8, &pre, &im, &bos), -1);
}

/* Every pre-tokenizer on random bytes (valid and invalid UTF-8, all the
 * classes): pieces are non-empty, in order, and cover the text exactly. */
static void test_pretokenizers_cover(void **st)
{
    (void)st;
    static const char *atoms[] = {"a",
                                  "Z",
                                  "7",
                                  " ",
                                  "  ",
                                  "\t",
                                  "\n",
                                  "\r\n",
                                  "'",
                                  "'S",
                                  "!",
                                  "`",
                                  "$",
                                  "\xe0\xa4\xbf",
                                  "\xe4\xb8\xad",
                                  "\xe3\x80\x80",
                                  "\xf0\x9f\x98\x80",
                                  "\xc2\xb2",
                                  "\xcd\xb8"};
    enum { NA = sizeof atoms / sizeof *atoms };
    uint64_t rng = 5;
    char buf[256];
    size_t ends[256];
    for (int it = 0; it < 3000; it++) {
        size_t n = 0, k = 1 + tiny_rand(&rng) % 30;
        for (size_t i = 0; i < k && n < 200; i++) {
            int r = (int)(tiny_rand(&rng) % (NA + 2));
            if (r < NA) {
                memcpy(buf + n, atoms[r], strlen(atoms[r]));
                n += strlen(atoms[r]);
            } else {
                buf[n++] = (char)(tiny_rand(&rng) & 0xff); /* any byte, invalid ones too */
            }
        }
        for (int pre = TOK_PRE_DEFAULT; pre <= TOK_PRE_FALCON; pre++) {
            size_t np = tok_bpe_split((enum tok_pre)pre, buf, n, ends, 256);
            ASSERT_GE_INT(np, 1);
            ASSERT_LE_INT(np, n);
            size_t prev = 0;
            for (size_t i = 0; i < np; i++) {
                ASSERT_GT_INT(ends[i], prev);
                prev = ends[i];
            }
            assert_int_equal(prev, n);
        }
    }
}

static void test_bpe_known_splits(void **st)
{
    (void)st;
    /* tokens: the 256 byte characters in byte order, then one per merge */
    static const char *merges[] = {
        "h e",          "l l", "he ll",          "hell o",     "o r",         "\xc4\xa0 w",
        "\xc4\xa0w or", "l d", "\xc4\xa0wor ld", "\xc4\xa0 t", "\xc4\xa0t he"};
    enum { NM = sizeof merges / sizeof *merges };
    const char *toks[256 + NM + 1];
    char store[256 + NM][16];
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        int direct = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
        int cp = direct ? b : 256 + extra++;
        if (cp < 0x80) {
            store[b][0] = (char)cp;
            store[b][1] = 0;
        } else {
            store[b][0] = (char)(0xc0 | (cp >> 6));
            store[b][1] = (char)(0x80 | (cp & 0x3f));
            store[b][2] = 0;
        }
        toks[b] = store[b];
    }
    for (int i = 0; i < NM; i++) {
        const char *sp = strchr(merges[i], ' ');
        snprintf(store[256 + i], 16, "%.*s%s", (int)(sp - merges[i]), merges[i], sp + 1);
        toks[256 + i] = store[256 + i];
    }
    toks[256 + NM] = "<|endoftext|>";
    int32_t types[256 + NM + 1];
    for (int i = 0; i < 256 + NM + 1; i++)
        types[i] = i == 256 + NM ? 3 : 1;
    struct gguf_writer w;
    gguf_w_init(&w);
    gguf_w_str(&w, "tokenizer.ggml.model", "gpt2");
    gguf_w_arr_str(&w, "tokenizer.ggml.tokens", toks, 256 + NM + 1);
    gguf_w_arr_i32(&w, "tokenizer.ggml.token_type", types, 256 + NM + 1);
    gguf_w_arr_str(&w, "tokenizer.ggml.merges", merges, NM);
    gguf_w_u32(&w, "tokenizer.ggml.eos_token_id", 256 + NM);
    struct gguf_file *f = finish(&w);
    struct tokenizer t;
    char err[256];
    assert_int_equal(tok_load(&t, f, err, sizeof err), 0);
    gguf_close(f);
    assert_int_equal(t.kind, TOK_BPE);
    int hello = 259, gworld = 264, gthe = 266, G = ' '; /* Ġ is the byte-level space, id 32 */
    /* hello: he -> ll -> hell -> hello; " world": or, Ġw, Ġwor, ld, Ġworld (rank order) */
    int want[] = {hello, gworld, ',', gthe, G, G, 'x'};
    expect(&t, "hello world, the  x", false, want, 7);
    /* without the "o r" merge available first, ranks decide: "hellor" -> hello + r */
    int w1[] = {hello, 'r'};
    expect(&t, "hellor", false, w1, 2);
    /* 'é' -> two byte characters */
    int w2[] = {0xc3, 0xa9};
    expect(&t, "\xc3\xa9", false, w2, 2);
    /* no BOS for gpt2 unless the metadata asks */
    expect(&t, "hello", true, want, 1);
    struct sbuf s = SBUF_INIT;
    tok_decode(&t, want, 7, &s);
    assert_string_equal(s.data, "hello world, the  x");
    sbuf_reset(&s);
    int eot = 256 + NM;
    tok_decode(&t, &eot, 1, &s); /* control tokens decode to nothing */
    assert_int_equal(s.len, 0);
    sbuf_free(&s);
    tok_free(&t);
}

static void random_text(uint64_t *rng, char *buf, size_t *len, bool allow_invalid)
{
    static const char *pieces[] = {"the",
                                   " ",
                                   "  ",
                                   "hello",
                                   "world",
                                   ",",
                                   ".",
                                   "\n",
                                   "\t",
                                   "'s",
                                   "\xc3\xa9",
                                   "\xe4\xb8\xad",
                                   "\xf0\x9f\x98\x80",
                                   "123",
                                   "GPU",
                                   "!"};
    size_t n = 0, k = 1 + tiny_rand(rng) % 20;
    for (size_t i = 0; i < k; i++) {
        int r = (int)(tiny_rand(rng) % 20);
        if (r < 16) {
            size_t l = strlen(pieces[r]);
            memcpy(buf + n, pieces[r], l);
            n += l;
        } else if (allow_invalid && r == 16) {
            buf[n++] = (char)(0x80 + tiny_rand(rng) % 128); /* stray continuation / lead byte */
        } else {
            buf[n++] = (char)(0x20 + tiny_rand(rng) % 95);
        }
    }
    buf[n] = 0;
    *len = n;
}

static void roundtrip(enum tok_kind kind)
{
    struct tiny_opts o;
    tiny_default_opts(&o);
    o.tok = kind;
    struct sbuf b = SBUF_INIT;
    assert_int_equal(tiny_build(&o, &b), 0);
    size_t n;
    char *d = sbuf_steal(&b, &n);
    struct gguf_file *f;
    char err[256];
    assert_int_equal(gguf_open_mem(d, n, true, &f, err, sizeof err), 0);
    struct tokenizer t;
    assert_int_equal(tok_load(&t, f, err, sizeof err), 0);
    gguf_close(f);
    uint64_t rng = 77;
    char buf[512];
    size_t total_chars = 0, total_toks = 0;
    for (int it = 0; it < 2000; it++) {
        size_t len;
        random_text(&rng, buf, &len, true);
        struct ids ids = {0};
        tok_encode(&t, buf, len, true, &ids);
        struct sbuf s = SBUF_INIT;
        tok_decode(&t, ids.v, ids.n, &s);
        assert_int_equal(s.len, len);
        assert_memory_equal(s.data, buf, len);
        total_chars += len;
        total_toks += ids.n;
        sbuf_free(&s);
        ids_free(&ids);
    }
    /* merges actually happen: fewer tokens than bytes */
    ASSERT_LT_INT(total_toks, total_chars);
    tok_free(&t);
}

static void test_spm_roundtrip(void **st)
{
    (void)st;
    roundtrip(TOK_SPM);
}

static void test_bpe_roundtrip(void **st)
{
    (void)st;
    roundtrip(TOK_BPE);
}

static void test_tokenizer_metadata_errors(void **st)
{
    (void)st;
    struct tokenizer t;
    char err[256];
    struct gguf_writer w;
    gguf_w_init(&w);
    gguf_w_str(&w, "tokenizer.ggml.model", "wordpiece");
    struct gguf_file *f = finish(&w);
    assert_int_equal(tok_load(&t, f, err, sizeof err), -1);
    assert_non_null(strstr(err, "wordpiece"));
    tok_free(&t);
    gguf_close(f);
    gguf_w_init(&w);
    gguf_w_str(&w, "tokenizer.ggml.model", "gpt2");
    const char *toks[] = {"a", "b"};
    gguf_w_arr_str(&w, "tokenizer.ggml.tokens", toks, 2);
    f = finish(&w);
    assert_int_equal(tok_load(&t, f, err, sizeof err), -1); /* no merges */
    tok_free(&t);
    gguf_close(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spm_known_splits), cmocka_unit_test(test_bpe_pretokenizer),
        cmocka_unit_test(test_pretokenizers),    cmocka_unit_test(test_pretokenizers_cover),
        cmocka_unit_test(test_bpe_known_splits), cmocka_unit_test(test_spm_roundtrip),
        cmocka_unit_test(test_bpe_roundtrip),    cmocka_unit_test(test_tokenizer_metadata_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
