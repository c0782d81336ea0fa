/* GGUF reader and writer; see gguf.h. */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC 0x46554747u /* "GGUF" little-endian */
#define GGUF_MAX_DIMS 4
#define GGUF_MAX_STR (1u << 30)

struct rd {
    const uint8_t *p;
    size_t pos, size;
    char *err;
    size_t errn;
};

static int fail(struct rd *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct rd *r, const char *fmt, ...)
{
    if (r->err && r->errn) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->err, r->errn, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int rd_bytes(struct rd *r, void *out, size_t n)
{
    if (r->size - r->pos < n) return fail(r, "truncated header at byte %zu", r->pos);
    memcpy(out, r->p + r->pos, n);
    r->pos += n;
    return 0;
}

static int rd_u32(struct rd *r, uint32_t *v)
{
    return rd_bytes(r, v, 4);
}
static int rd_u64(struct rd *r, uint64_t *v)
{
    return rd_bytes(r, v, 8);
}

static int rd_str(struct rd *r, struct gguf_str *s)
{
    uint64_t n = 0;
    if (rd_u64(r, &n)) return -1;
    if (n > GGUF_MAX_STR || n > r->size - r->pos)
        return fail(r, "string length %llu out of bounds at byte %zu", (unsigned long long)n,
                    r->pos);
    s->p = (const char *)r->p + r->pos;
    s->n = n;
    r->pos += n;
    return 0;
}

static size_t vtype_size(uint32_t t)
{
    switch (t) {
    case GGUF_T_U8:
    case GGUF_T_I8:
    case GGUF_T_BOOL:
        return 1;
    case GGUF_T_U16:
    case GGUF_T_I16:
        return 2;
    case GGUF_T_U32:
    case GGUF_T_I32:
    case GGUF_T_F32:
        return 4;
    case GGUF_T_U64:
    case GGUF_T_I64:
    case GGUF_T_F64:
        return 8;
    default:
        return 0;
    }
}

/* Skip one value of type t (no nested arrays). */
static int rd_skip_value(struct rd *r, uint32_t t)
{
    if (t == GGUF_T_STRING) {
        struct gguf_str s;
        return rd_str(r, &s);
    }
    size_t sz = vtype_size(t);
    if (!sz) return fail(r, "unknown value type %u at byte %zu", t, r->pos);
    if (r->size - r->pos < sz) return fail(r, "truncated value at byte %zu", r->pos);
    r->pos += sz;
    return 0;
}

int ggml_block_size(uint32_t type)
{
    switch (type) {
    case GGML_TYPE_F32:
    case GGML_TYPE_F16:
    case GGML_TYPE_BF16:
        return 1;
    case GGML_TYPE_Q4_0:
    case GGML_TYPE_Q8_0:
        return 32;
    case GGML_TYPE_Q4_K:
    case GGML_TYPE_Q5_K:
    case GGML_TYPE_Q6_K:
        return 256;
    default:
        return 0;
    }
}

size_t ggml_row_bytes(uint32_t type, uint64_t n)
{
    /* bytes per block: see the block layouts in quant.h */
    static const struct {
        uint32_t type;
        size_t bytes;
    } B[] = {{GGML_TYPE_F32, 4},    {GGML_TYPE_F16, 2},   {GGML_TYPE_BF16, 2},
             {GGML_TYPE_Q4_0, 18},  {GGML_TYPE_Q8_0, 34}, {GGML_TYPE_Q4_K, 144},
             {GGML_TYPE_Q5_K, 176}, {GGML_TYPE_Q6_K, 210}};
    if (n > ((uint64_t)1 << 40)) return 0;
    int bs = ggml_block_size(type);
    if (!bs || n % (uint64_t)bs) return 0;
    for (size_t i = 0; i < sizeof B / sizeof B[0]; i++)
        if (B[i].type == type) return (size_t)(n / (uint64_t)bs) * B[i].bytes;
    return 0;
}

const char *ggml_type_name(uint32_t type)
{
    static const char *const N[] = {
        "F32",   "F16",        "Q4_0",       "Q4_1",       "Q4_2",     "Q4_3",     "Q5_0",
        "Q5_1",  "Q8_0",       "Q8_1",       "Q2_K",       "Q3_K",     "Q4_K",     "Q5_K",
        "Q6_K",  "Q8_K",       "IQ2_XXS",    "IQ2_XS",     "IQ3_XXS",  "IQ1_S",    "IQ4_NL",
        "IQ3_S", "IQ2_S",      "IQ4_XS",     "I8",         "I16",      "I32",      "I64",
        "F64",   "IQ1_M",      "BF16",       "Q4_0_4_4",   "Q4_0_4_8", "Q4_0_8_8", "TQ1_0",
        "TQ2_0", "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8", "MXFP4"};
    if (type < sizeof N / sizeof N[0]) return N[type];
    return "unknown";
}

static int parse(struct gguf_file *f, char *err, size_t errn)
{
    struct rd r = {f->base, 0, f->size, err, errn};
    uint32_t magic = 0;
    if (rd_u32(&r, &magic)) return -1;
    if (magic != GGUF_MAGIC) return fail(&r, "not a GGUF file (bad magic)");
    if (rd_u32(&r, &f->version)) return -1;
    if (f->version != 2 && f->version != 3)
        return fail(&r, "unsupported GGUF version %u (need 2 or 3)", f->version);
    if (rd_u64(&r, &f->n_tensors) || rd_u64(&r, &f->n_kv)) return -1;
    /* Each kv needs >= 12 bytes and each tensor info >= 28: bound allocations. */
    if (f->n_kv > f->size / 12 || f->n_tensors > f->size / 28)
        return fail(&r, "implausible counts (%llu kv, %llu tensors) for a %zu-byte file",
                    (unsigned long long)f->n_kv, (unsigned long long)f->n_tensors, f->size);
    f->kv = calloc(f->n_kv ? f->n_kv : 1, sizeof *f->kv);
    f->tensors = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *f->tensors);
    if (!f->kv || !f->tensors) return fail(&r, "out of memory");
    f->alignment = 32;
    for (uint64_t i = 0; i < f->n_kv; i++) {
        struct gguf_kv *kv = &f->kv[i];
        if (rd_str(&r, &kv->key) || rd_u32(&r, &kv->type)) return -1;
        if (kv->type == GGUF_T_ARRAY) {
            if (rd_u32(&r, &kv->arr_type) || rd_u64(&r, &kv->arr_n)) return -1;
            if (kv->arr_type == GGUF_T_ARRAY) return fail(&r, "nested arrays are not supported");
            kv->val = r.p + r.pos;
            if (kv->arr_type != GGUF_T_STRING) {
                size_t sz = vtype_size(kv->arr_type);
                if (!sz) return fail(&r, "unknown array element type %u", kv->arr_type);
                if (kv->arr_n > (r.size - r.pos) / sz)
                    return fail(&r, "array '%.*s' runs past the end of the file",
                                (int)(kv->key.n > 64 ? 64 : kv->key.n), kv->key.p);
                r.pos += (size_t)kv->arr_n * sz;
            } else {
                if (kv->arr_n > (r.size - r.pos) / 8) return fail(&r, "string array too long");
                for (uint64_t j = 0; j < kv->arr_n; j++)
                    if (rd_skip_value(&r, GGUF_T_STRING)) return -1;
            }
        } else {
            kv->val = r.p + r.pos;
            if (rd_skip_value(&r, kv->type)) return -1;
        }
        if (gguf_str_eq(kv->key, "general.alignment")) {
            uint32_t a = 0;
            if (kv->type != GGUF_T_U32) return fail(&r, "general.alignment must be u32");
            memcpy(&a, kv->val, 4);
            if (a == 0 || (a & (a - 1)) || a > 65536)
                return fail(&r, "bad general.alignment %u", a);
            f->alignment = a;
        }
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        struct gguf_tensor *t = &f->tensors[i];
        if (rd_str(&r, &t->name) || rd_u32(&r, &t->n_dims)) return -1;
        if (t->n_dims == 0 || t->n_dims > GGUF_MAX_DIMS)
            return fail(&r, "tensor %llu: bad dimension count %u", (unsigned long long)i,
                        t->n_dims);
        uint64_t rows = 1;
        for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
            t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            if (rd_u64(&r, &t->ne[d])) return -1;
            if (t->ne[d] == 0 || t->ne[d] > ((uint64_t)1 << 40))
                return fail(&r, "tensor '%.*s': bad dimension %llu",
                            (int)(t->name.n > 64 ? 64 : t->name.n), t->name.p,
                            (unsigned long long)t->ne[d]);
            if (d > 0) {
                if (rows > (((uint64_t)1 << 48) / t->ne[d]))
                    return fail(&r, "tensor dimensions overflow");
                rows *= t->ne[d];
            }
        }
        if (rd_u32(&r, &t->type) || rd_u64(&r, &t->offset)) return -1;
        size_t rb = ggml_row_bytes(t->type, t->ne[0]);
        if (!rb && !ggml_block_size(t->type))
            return fail(&r,
                        "tensor '%.*s' has type %s (%u), which sgpu-model does not support "
                        "(supported: " GGML_SUPPORTED_TYPES ")",
                        (int)(t->name.n > 64 ? 64 : t->name.n), t->name.p, ggml_type_name(t->type),
                        t->type);
        if (!rb)
            return fail(&r, "tensor '%.*s': row length %llu is not a multiple of the %s block (%d)",
                        (int)(t->name.n > 64 ? 64 : t->name.n), t->name.p,
                        (unsigned long long)t->ne[0], ggml_type_name(t->type),
                        ggml_block_size(t->type));
        if (rows > ((uint64_t)1 << 48) / rb) return fail(&r, "tensor size overflow");
        t->nbytes = rows * rb;
    }
    size_t a = f->alignment;
    size_t off = (r.pos + a - 1) / a * a;
    if (off > f->size) return fail(&r, "truncated: no tensor data section");
    f->data_off = off;
    size_t avail = f->size - off;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        struct gguf_tensor *t = &f->tensors[i];
        if (t->offset % a)
            return fail(&r, "tensor '%.*s': offset %llu not aligned to %zu",
                        (int)(t->name.n > 64 ? 64 : t->name.n), t->name.p,
                        (unsigned long long)t->offset, a);
        if (t->offset > avail || t->nbytes > avail - t->offset)
            return fail(&r,
                        "tensor '%.*s': data [%llu, +%llu) past the end of the file (truncated?)",
                        (int)(t->name.n > 64 ? 64 : t->name.n), t->name.p,
                        (unsigned long long)t->offset, (unsigned long long)t->nbytes);
        t->data = f->base + off + t->offset;
        for (uint64_t j = 0; j < i; j++)
            if (f->tensors[j].name.n == t->name.n &&
                memcmp(f->tensors[j].name.p, t->name.p, t->name.n) == 0)
                return fail(&r, "duplicate tensor name '%.*s'",
                            (int)(t->name.n > 64 ? 64 : t->name.n), t->name.p);
    }
    return 0;
}

int gguf_open_mem(const void *buf, size_t n, bool own, struct gguf_file **out, char *err,
                  size_t errn)
{
    *out = NULL;
    struct gguf_file *f = calloc(1, sizeof *f);
    if (!f) {
        if (own) free((void *)buf);
        snprintf(err, errn, "out of memory");
        return -1;
    }
    f->base = buf;
    f->size = n;
    f->owner = own ? 2 : 0;
    if (parse(f, err, errn)) {
        gguf_close(f);
        return -1;
    }
    *out = f;
    return 0;
}

int gguf_open(const char *path, struct gguf_file **out, char *err, size_t errn)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errn, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 24) {
        snprintf(err, errn, "%s: not a regular file of at least 24 bytes", path);
        close(fd);
        return -1;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        snprintf(err, errn, "mmap %s: %s", path, strerror(errno));
        return -1;
    }
    struct gguf_file *f = calloc(1, sizeof *f);
    if (!f) {
        munmap(p, (size_t)st.st_size);
        snprintf(err, errn, "out of memory");
        return -1;
    }
    f->base = p;
    f->size = (size_t)st.st_size;
    f->owner = 1;
    if (parse(f, err, errn)) {
        gguf_close(f);
        return -1;
    }
    *out = f;
    return 0;
}

void gguf_close(struct gguf_file *f)
{
    if (!f) return;
    if (f->owner == 1) munmap((void *)f->base, f->size);
    if (f->owner == 2) free((void *)f->base);
    free(f->kv);
    free(f->tensors);
    free(f);
}

bool gguf_str_eq(struct gguf_str s, const char *c)
{
    size_t n = strlen(c);
    return s.n == n && memcmp(s.p, c, n) == 0;
}

const struct gguf_kv *gguf_find(const struct gguf_file *f, const char *key)
{
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (gguf_str_eq(f->kv[i].key, key)) return &f->kv[i];
    return NULL;
}

static int kv_int(const struct gguf_kv *kv, int64_t *v, uint64_t *u, bool *is_signed)
{
    const uint8_t *p = kv->val;
    *is_signed = true;
    switch (kv->type) {
    case GGUF_T_U8:
        *v = p[0];
        return 0;
    case GGUF_T_I8:
        *v = (int8_t)p[0];
        return 0;
    case GGUF_T_U16: {
        uint16_t x;
        memcpy(&x, p, 2);
        *v = x;
        return 0;
    }
    case GGUF_T_I16: {
        int16_t x;
        memcpy(&x, p, 2);
        *v = x;
        return 0;
    }
    case GGUF_T_U32: {
        uint32_t x;
        memcpy(&x, p, 4);
        *v = x;
        return 0;
    }
    case GGUF_T_I32: {
        int32_t x;
        memcpy(&x, p, 4);
        *v = x;
        return 0;
    }
    case GGUF_T_I64: {
        int64_t x;
        memcpy(&x, p, 8);
        *v = x;
        return 0;
    }
    case GGUF_T_U64:
        memcpy(u, p, 8);
        *is_signed = false;
        return 0;
    default:
        return -1;
    }
}

int gguf_get_u64(const struct gguf_file *f, const char *key, uint64_t *out)
{
    const struct gguf_kv *kv = gguf_find(f, key);
    if (!kv) return 1;
    int64_t v;
    uint64_t u;
    bool s;
    if (kv_int(kv, &v, &u, &s)) return -1;
    if (s) {
        if (v < 0) return -1;
        *out = (uint64_t)v;
    } else {
        *out = u;
    }
    return 0;
}

int gguf_get_u32(const struct gguf_file *f, const char *key, uint32_t *out)
{
    uint64_t v;
    int rc = gguf_get_u64(f, key, &v);
    if (rc) return rc;
    if (v > UINT32_MAX) return -1;
    *out = (uint32_t)v;
    return 0;
}

int gguf_get_f32(const struct gguf_file *f, const char *key, float *out)
{
    const struct gguf_kv *kv = gguf_find(f, key);
    if (!kv) return 1;
    if (kv->type == GGUF_T_F32) {
        memcpy(out, kv->val, 4);
        return 0;
    }
    if (kv->type == GGUF_T_F64) {
        double d;
        memcpy(&d, kv->val, 8);
        *out = (float)d;
        return 0;
    }
    uint64_t u;
    if (gguf_get_u64(f, key, &u) == 0) {
        *out = (float)u;
        return 0;
    }
    return -1;
}

int gguf_get_bool(const struct gguf_file *f, const char *key, bool *out)
{
    const struct gguf_kv *kv = gguf_find(f, key);
    if (!kv) return 1;
    if (kv->type != GGUF_T_BOOL) return -1;
    *out = kv->val[0] != 0;
    return 0;
}

int gguf_get_str(const struct gguf_file *f, const char *key, struct gguf_str *out)
{
    const struct gguf_kv *kv = gguf_find(f, key);
    if (!kv) return 1;
    if (kv->type != GGUF_T_STRING) return -1;
    uint64_t n = 0;
    memcpy(&n, kv->val, 8);
    out->p = (const char *)kv->val + 8;
    out->n = n;
    return 0;
}

void gguf_arr_strings(const struct gguf_kv *kv, struct gguf_str *out)
{
    const uint8_t *p = kv->val;
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        uint64_t n = 0;
        memcpy(&n, p, 8);
        out[i].p = (const char *)p + 8;
        out[i].n = n;
        p += 8 + n;
    }
}

double gguf_arr_num(const struct gguf_kv *kv, uint64_t i)
{
    const uint8_t *p = kv->val + i * vtype_size(kv->arr_type);
    switch (kv->arr_type) {
    case GGUF_T_U8:
        return p[0];
    case GGUF_T_I8:
        return (int8_t)p[0];
    case GGUF_T_U16: {
        uint16_t x;
        memcpy(&x, p, 2);
        return x;
    }
    case GGUF_T_I16: {
        int16_t x;
        memcpy(&x, p, 2);
        return x;
    }
    case GGUF_T_U32: {
        uint32_t x;
        memcpy(&x, p, 4);
        return x;
    }
    case GGUF_T_I32: {
        int32_t x;
        memcpy(&x, p, 4);
        return x;
    }
    case GGUF_T_F32: {
        float x;
        memcpy(&x, p, 4);
        return x;
    }
    case GGUF_T_U64: {
        uint64_t x;
        memcpy(&x, p, 8);
        return (double)x;
    }
    case GGUF_T_I64: {
        int64_t x;
        memcpy(&x, p, 8);
        return (double)x;
    }
    case GGUF_T_F64: {
        double x;
        memcpy(&x, p, 8);
        return x;
    }
    default:
        return 0;
    }
}

const struct gguf_tensor *gguf_tensor(const struct gguf_file *f, const char *name)
{
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (gguf_str_eq(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

/* ---- writer ---- */

void gguf_w_init(struct gguf_writer *w)
{
    memset(w, 0, sizeof *w);
}

void gguf_w_free(struct gguf_writer *w)
{
    sbuf_free(&w->kvs);
    sbuf_free(&w->infos);
    sbuf_free(&w->data);
}

static void w_u32(struct sbuf *b, uint32_t v)
{
    sbuf_append(b, &v, 4);
}
static void w_u64(struct sbuf *b, uint64_t v)
{
    sbuf_append(b, &v, 8);
}
static void w_str(struct sbuf *b, const char *s)
{
    size_t n = strlen(s);
    w_u64(b, n);
    sbuf_append(b, s, n);
}

static void w_key(struct gguf_writer *w, const char *key, uint32_t type)
{
    w_str(&w->kvs, key);
    w_u32(&w->kvs, type);
    w->n_kv++;
}

void gguf_w_str(struct gguf_writer *w, const char *key, const char *val)
{
    w_key(w, key, GGUF_T_STRING);
    w_str(&w->kvs, val);
}

void gguf_w_u32(struct gguf_writer *w, const char *key, uint32_t v)
{
    w_key(w, key, GGUF_T_U32);
    w_u32(&w->kvs, v);
}

void gguf_w_i32(struct gguf_writer *w, const char *key, int32_t v)
{
    w_key(w, key, GGUF_T_I32);
    sbuf_append(&w->kvs, &v, 4);
}

void gguf_w_f32(struct gguf_writer *w, const char *key, float v)
{
    w_key(w, key, GGUF_T_F32);
    sbuf_append(&w->kvs, &v, 4);
}

void gguf_w_bool(struct gguf_writer *w, const char *key, bool v)
{
    w_key(w, key, GGUF_T_BOOL);
    sbuf_putc(&w->kvs, v ? 1 : 0);
}

void gguf_w_arr_str(struct gguf_writer *w, const char *key, const char *const *s, uint64_t n)
{
    w_key(w, key, GGUF_T_ARRAY);
    w_u32(&w->kvs, GGUF_T_STRING);
    w_u64(&w->kvs, n);
    for (uint64_t i = 0; i < n; i++)
        w_str(&w->kvs, s[i]);
}

void gguf_w_arr_f32(struct gguf_writer *w, const char *key, const float *v, uint64_t n)
{
    w_key(w, key, GGUF_T_ARRAY);
    w_u32(&w->kvs, GGUF_T_F32);
    w_u64(&w->kvs, n);
    sbuf_append(&w->kvs, v, n * 4);
}

void gguf_w_arr_i32(struct gguf_writer *w, const char *key, const int32_t *v, uint64_t n)
{
    w_key(w, key, GGUF_T_ARRAY);
    w_u32(&w->kvs, GGUF_T_I32);
    w_u64(&w->kvs, n);
    sbuf_append(&w->kvs, v, n * 4);
}

void gguf_w_tensor(struct gguf_writer *w, const char *name, uint32_t n_dims, const uint64_t *ne,
                   uint32_t type, const void *data)
{
    uint64_t rows = 1;
    for (uint32_t d = 1; d < n_dims; d++)
        rows *= ne[d];
    size_t nbytes = ggml_row_bytes(type, ne[0]) * rows;
    while (w->data.len % 32)
        sbuf_putc(&w->data, 0);
    w_str(&w->infos, name);
    w_u32(&w->infos, n_dims);
    for (uint32_t d = 0; d < n_dims; d++)
        w_u64(&w->infos, ne[d]);
    w_u32(&w->infos, type);
    w_u64(&w->infos, w->data.len);
    sbuf_append(&w->data, data, nbytes);
    w->n_tensors++;
}

void gguf_w_finish(struct gguf_writer *w, struct sbuf *out)
{
    size_t start = out->len;
    w_u32(out, GGUF_MAGIC);
    w_u32(out, 3);
    w_u64(out, w->n_tensors);
    w_u64(out, w->n_kv);
    sbuf_append(out, w->kvs.data, w->kvs.len);
    sbuf_append(out, w->infos.data, w->infos.len);
    while ((out->len - start) % 32)
        sbuf_putc(out, 0);
    sbuf_append(out, w->data.data, w->data.len);
}
