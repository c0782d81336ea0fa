/* GGUF reader: writer round trip, and malformed files rejected cleanly (every
 * truncation point, fuzzed header bytes, bad counts, offsets, types, shapes).
 * Under `make sanitize` any out-of-bounds read here fails the run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../common/assert_ext.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "model/tiny.h"
#include "model_testutil.h"

static char *small_file(size_t *n)
{
    struct gguf_writer w;
    gguf_w_init(&w);
    gguf_w_str(&w, "general.architecture", "llama");
    gguf_w_u32(&w, "k.u32", 7);
    gguf_w_f32(&w, "k.f32", 0.5f);
    gguf_w_bool(&w, "k.bool", true);
    const char *arr[] = {"a", "bb", ""};
    gguf_w_arr_str(&w, "k.strs", arr, 3);
    int32_t ints[] = {-1, 2, 3};
    gguf_w_arr_i32(&w, "k.ints", ints, 3);
    float f[64];
    for (int i = 0; i < 64; i++)
        f[i] = (float)i;
    uint64_t ne[2] = {32, 2};
    gguf_w_tensor(&w, "t.f32", 2, ne, GGML_TYPE_F32, f);
    uint8_t q[68];
    qk_quantize_q8_0(f, q, 64);
    uint64_t ne2[1] = {64};
    gguf_w_tensor(&w, "t.q8", 1, ne2, GGML_TYPE_Q8_0, q);
    struct sbuf b = SBUF_INIT;
    gguf_w_finish(&w, &b);
    gguf_w_free(&w);
    return sbuf_steal(&b, n);
}

static int open_copy(const char *d, size_t n, char *err, size_t errn)
{
    /* exact-size heap copy so ASan sees any read past the end */
    char *c = malloc(n ? n : 1);
    memcpy(c, d, n);
    struct gguf_file *f;
    int rc = gguf_open_mem(c, n, true, &f, err, errn);
    if (rc == 0) {
        /* touch everything the parser handed out */
        for (uint64_t i = 0; i < f->n_tensors; i++) {
            const uint8_t *p = f->tensors[i].data;
            volatile uint8_t s = 0;
            for (uint64_t k = 0; k < f->tensors[i].nbytes; k++)
                s ^= p[k];
        }
        for (uint64_t i = 0; i < f->n_kv; i++)
            if (f->kv[i].type == GGUF_T_ARRAY && f->kv[i].arr_type == GGUF_T_STRING) {
                struct gguf_str *s = calloc(f->kv[i].arr_n + 1, sizeof *s);
                gguf_arr_strings(&f->kv[i], s);
                free(s);
            }
        gguf_close(f);
    }
    return rc;
}

static void test_roundtrip(void **st)
{
    (void)st;
    size_t n;
    char *d = small_file(&n);
    struct gguf_file *f;
    char err[256];
    assert_int_equal(gguf_open_mem(d, n, true, &f, err, sizeof err), 0);
    assert_int_equal(f->version, 3);
    uint32_t u;
    float x;
    bool b;
    struct gguf_str s;
    assert_int_equal(gguf_get_u32(f, "k.u32", &u), 0);
    assert_int_equal(u, 7);
    assert_int_equal(gguf_get_f32(f, "k.f32", &x), 0);
    ASSERT_EQ_DBL(x, 0.5, 0);
    assert_int_equal(gguf_get_bool(f, "k.bool", &b), 0);
    assert_true(b);
    assert_int_equal(gguf_get_str(f, "general.architecture", &s), 0);
    assert_true(gguf_str_eq(s, "llama"));
    assert_int_equal(gguf_get_u32(f, "missing", &u), 1);
    assert_int_equal(gguf_get_u32(f, "k.f32", &u), -1);
    const struct gguf_kv *kv = gguf_find(f, "k.strs");
    struct gguf_str ss[3];
    gguf_arr_strings(kv, ss);
    assert_true(gguf_str_eq(ss[1], "bb"));
    assert_true(gguf_str_eq(ss[2], ""));
    ASSERT_EQ_DBL(gguf_arr_num(gguf_find(f, "k.ints"), 0), -1.0, 0);
    const struct gguf_tensor *t = gguf_tensor(f, "t.f32");
    assert_non_null(t);
    assert_int_equal(t->ne[0], 32);
    assert_int_equal(t->ne[1], 2);
    assert_int_equal(((const float *)t->data)[63], 63);
    assert_int_equal((uintptr_t)t->data % 32, (uintptr_t)f->base % 32);
    t = gguf_tensor(f, "t.q8");
    assert_int_equal(t->nbytes, 68);
    float back[64];
    qk_dequant_row(GGML_TYPE_Q8_0, t->data, back, 64);
    for (int i = 0; i < 64; i++)
        ASSERT_EQ_DBL(back[i], (float)i, 0.5f * 63.0f / 127.0f + 0.05f);
    gguf_close(f);
}

static void test_every_truncation(void **st)
{
    (void)st;
    size_t n;
    char *d = small_file(&n);
    char err[256];
    for (size_t k = 0; k < n; k++) {
        err[0] = 0;
        assert_int_equal(open_copy(d, k, err, sizeof err), -1);
        ASSERT_NE_INT(err[0], 0);
    }
    assert_int_equal(open_copy(d, n, err, sizeof err), 0);
    free(d);
}

static void test_fuzzed_headers(void **st)
{
    (void)st;
    size_t n;
    char *d = small_file(&n);
    char *m = malloc(n);
    uint64_t rng = 1;
    char err[256];
    int rejected = 0;
    /* the header (everything before the tensor data) is the first ~300 bytes */
    size_t hdr = n - 64 * 4 - 68 - 32;
    for (int it = 0; it < 20000; it++) {
        memcpy(m, d, n);
        int flips = 1 + (int)(tiny_rand(&rng) % 4);
        for (int k = 0; k < flips; k++) {
            size_t pos = tiny_rand(&rng) % hdr;
            uint64_t r = tiny_rand(&rng);
            m[pos] = (r & 3) == 0 ? (char)0xff : (r & 3) == 1 ? 0 : (char)(r >> 8);
        }
        rejected += open_copy(m, n, err, sizeof err) != 0;
    }
    print_message("fuzz: %d of 20000 mutated headers rejected, none crashed\n", rejected);
    ASSERT_GT_INT(rejected, 1000);
    free(m);
    free(d);
}

static void put_u32(char *p, uint32_t v)
{
    memcpy(p, &v, 4);
}
static void put_u64(char *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

static void test_specific_corruptions(void **st)
{
    (void)st;
    size_t n;
    char *d = small_file(&n);
    char *m = malloc(n);
    char err[256];
#define TRY(mutation, needle)                                                                      \
    do {                                                                                           \
        memcpy(m, d, n);                                                                           \
        mutation;                                                                                  \
        assert_int_equal(open_copy(m, n, err, sizeof err), -1);                                    \
        if (!strstr(err, needle)) fail_msg("error '%s' lacks '%s'", err, needle);                  \
    } while (0)
    TRY(m[0] = 'X', "magic");
    TRY(put_u32(m + 4, 4), "version");
    TRY(put_u32(m + 4, 1), "version");
    TRY(put_u64(m + 8, (uint64_t)1 << 40), "implausible");    /* tensor count */
    TRY(put_u64(m + 16, (uint64_t)1 << 40), "implausible");   /* kv count */
    TRY(put_u64(m + 24, (uint64_t)1 << 62), "out of bounds"); /* first key length */
    /* find the f32 tensor info: name "t.f32" then n_dims, ne0, ne1, type, offset */
    char *ti = memmem(m, n, "t.f32", 5);
    assert_non_null(ti);
    size_t o = (size_t)(ti - m) + 5; /* n_dims at o */
    TRY(ti = memmem(m, n, "t.f32", 5); put_u32(ti + 5, 5), "dimension count");
    TRY(ti = memmem(m, n, "t.f32", 5); put_u64(ti + 9, 0), "bad dimension");
    TRY(ti = memmem(m, n, "t.f32", 5); put_u64(ti + 17, 1000000), "past the end");
    /* unsupported types are named, with the tensor; ne0 = 32 is no whole Q4_K block */
    TRY(ti = memmem(m, n, "t.f32", 5); put_u32(ti + 25, 10), "tensor 't.f32' has type Q2_K (10)");
    TRY(ti = memmem(m, n, "t.f32", 5); put_u32(ti + 25, 11), "type Q3_K (11), which");
    TRY(ti = memmem(m, n, "t.f32", 5); put_u32(ti + 25, 16), "type IQ2_XXS (16)");
    TRY(ti = memmem(m, n, "t.f32", 5); put_u32(ti + 25, 23), "supported: F32, F16, BF16");
    TRY(ti = memmem(m, n, "t.f32", 5); put_u32(ti + 25, 999), "type unknown (999)");
    TRY(ti = memmem(m, n, "t.f32", 5); put_u32(ti + 25, 12), "not a multiple of the Q4_K block");
    TRY(ti = memmem(m, n, "t.f32", 5); put_u64(ti + 29, 4), "not aligned");
    TRY(ti = memmem(m, n, "t.f32", 5); put_u64(ti + 29, (uint64_t)1 << 50), "past the end");
    TRY(ti = memmem(m, n, "t.q8", 4); put_u64(ti + 8, 48), "row length"); /* Q8_0 needs %32 */
    (void)o;
    free(m);
    free(d);
    /* duplicate tensor names */
    struct gguf_writer w;
    gguf_w_init(&w);
    float f[32] = {0};
    uint64_t ne[1] = {32};
    gguf_w_tensor(&w, "same", 1, ne, GGML_TYPE_F32, f);
    gguf_w_tensor(&w, "same", 1, ne, GGML_TYPE_F32, f);
    struct sbuf b = SBUF_INIT;
    gguf_w_finish(&w, &b);
    gguf_w_free(&w);
    assert_int_equal(open_copy(b.data, b.len, err, sizeof err), -1);
    assert_non_null(strstr(err, "duplicate"));
    sbuf_free(&b);
}

static void test_model_errors(void **st)
{
    (void)st;
    struct tw w;
    tw_random(&w, 3, false);
    char err[256];
    const char *skips[] = {"blk.1.ffn_down.weight", "token_embd.weight", "output_norm.weight"};
    for (int i = 0; i < 3; i++) {
        struct sbuf b = SBUF_INIT;
        tw_write(&w, GGML_TYPE_F32, &b, skips[i]);
        size_t n;
        char *d = sbuf_steal(&b, &n);
        struct gguf_file *f;
        assert_int_equal(gguf_open_mem(d, n, true, &f, err, sizeof err), 0);
        struct llama_model *m;
        assert_int_equal(llama_load(&m, f, err, sizeof err), -1);
        assert_non_null(strstr(err, skips[i]));
    }
    /* wrong shape: metadata says a different feed-forward size than the tensors */
    struct tw w2;
    tw_random(&w2, 3, false);
    w2.ff = 64;
    struct sbuf b = SBUF_INIT;
    tw_write(&w, GGML_TYPE_F32, &b, NULL);
    char *ffk = memmem(b.data, b.len, "llama.feed_forward_length", 25);
    assert_non_null(ffk);
    uint32_t ff = 128;
    memcpy(ffk + 25 + 4, &ff, 4);
    {
        struct gguf_file *f;
        assert_int_equal(gguf_open_mem(b.data, b.len, false, &f, err, sizeof err), 0);
        struct llama_model *m;
        assert_int_equal(llama_load(&m, f, err, sizeof err), -1);
        assert_non_null(strstr(err, "shape"));
    }
    sbuf_free(&b);
    tw_free(&w2);
    /* the full model is accepted, and truncating it anywhere in the data is not */
    b = (struct sbuf)SBUF_INIT;
    tw_write(&w, GGML_TYPE_Q8_0, &b, NULL);
    for (size_t cut = b.len - 1; cut > b.len - 4000; cut -= 397)
        assert_int_equal(open_copy(b.data, cut, err, sizeof err), -1);
    assert_int_equal(open_copy(b.data, b.len, err, sizeof err), 0);
    sbuf_free(&b);
    tw_free(&w);
}

static void test_file_errors(void **st)
{
    (void)st;
    struct gguf_file *f;
    char err[256];
    assert_int_equal(gguf_open("/nonexistent/x.gguf", &f, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot open"));
    assert_int_equal(gguf_open("/", &f, err, sizeof err), -1);
    struct llama_model *m;
    assert_int_equal(llama_open("/nonexistent/x.gguf", &m, err, sizeof err), -1);
    /* the embedded default loads */
    assert_int_equal(llama_open(NULL, &m, err, sizeof err), 0);
    assert_string_equal(m->name, "sgpu-tiny");
    llama_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),      cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_fuzzed_headers), cmocka_unit_test(test_specific_corruptions),
        cmocka_unit_test(test_model_errors),   cmocka_unit_test(test_file_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
