/* GGUF v2/v3 reader (validated, zero-copy over an mmap or memory buffer) and a
 * small writer (used by init-tiny, the benchmark model generator and tests).
 *
 * Layout (little-endian): "GGUF" u32 version, u64 n_tensors, u64 n_kv, then n_kv
 * key/values, n_tensors tensor infos, padding to general.alignment (default 32),
 * then the tensor data; each tensor's offset is relative to that data start.
 * Every length and offset read from the file is bounds-checked; a malformed
 * file yields -1 and a message, never an out-of-bounds read. */
#ifndef SGPU_MODEL_GGUF_H
#define SGPU_MODEL_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sbuf.h"

enum gguf_vtype {
    GGUF_T_U8 = 0,
    GGUF_T_I8 = 1,
    GGUF_T_U16 = 2,
    GGUF_T_I16 = 3,
    GGUF_T_U32 = 4,
    GGUF_T_I32 = 5,
    GGUF_T_F32 = 6,
    GGUF_T_BOOL = 7,
    GGUF_T_STRING = 8,
    GGUF_T_ARRAY = 9,
    GGUF_T_U64 = 10,
    GGUF_T_I64 = 11,
    GGUF_T_F64 = 12,
};

/* ggml tensor types this server computes with (ids as in ggml).  Block
 * layouts are in quant.h.  Other ids (Q2_K, Q3_K, IQ*, ...) are known by name
 * only, so a file using them is refused with the tensor and type named. */
enum ggml_type {
    GGML_TYPE_F32 = 0,
    GGML_TYPE_F16 = 1,
    GGML_TYPE_Q4_0 = 2,
    GGML_TYPE_Q8_0 = 8,
    GGML_TYPE_Q4_K = 12,
    GGML_TYPE_Q5_K = 13,
    GGML_TYPE_Q6_K = 14,
    GGML_TYPE_BF16 = 30,
    GGML_TYPE_COUNT = 40 /* upper bound of the ids this build names */
};

struct gguf_str {
    const char *p; /* not NUL-terminated; points into the file */
    uint64_t n;
};

struct gguf_kv {
    struct gguf_str key;
    uint32_t type;      /* enum gguf_vtype */
    uint32_t arr_type;  /* element type when type == ARRAY */
    uint64_t arr_n;     /* element count when type == ARRAY */
    const uint8_t *val; /* raw value bytes (for arrays: first element) */
};

struct gguf_tensor {
    struct gguf_str name;
    uint32_t n_dims;
    uint64_t ne[4];  /* ne[0] = innermost (row length) */
    uint32_t type;   /* enum ggml_type */
    uint64_t offset; /* relative to the data section */
    uint64_t nbytes;
    const void *data; /* base + data_off + offset */
};

struct gguf_file {
    const uint8_t *base;
    size_t size;
    int owner; /* 0 none, 1 munmap, 2 free */
    uint32_t version;
    uint64_t n_kv, n_tensors;
    struct gguf_kv *kv;
    struct gguf_tensor *tensors;
    size_t alignment;
    size_t data_off;
};

/* Open and validate a file (mmap).  On error returns -1 with a message in err. */
int gguf_open(const char *path, struct gguf_file **out, char *err, size_t errn);
/* Same over a buffer; own=true hands buf (from malloc) to the gguf_file. */
int gguf_open_mem(const void *buf, size_t n, bool own, struct gguf_file **out, char *err,
                  size_t errn);
void gguf_close(struct gguf_file *f);

const struct gguf_kv *gguf_find(const struct gguf_file *f, const char *key);
/* Typed getters: 0 found, 1 missing, -1 present with an unusable type/value. */
int gguf_get_u64(const struct gguf_file *f, const char *key, uint64_t *out);
int gguf_get_u32(const struct gguf_file *f, const char *key, uint32_t *out);
int gguf_get_f32(const struct gguf_file *f, const char *key, float *out);
int gguf_get_bool(const struct gguf_file *f, const char *key, bool *out);
int gguf_get_str(const struct gguf_file *f, const char *key, struct gguf_str *out);
/* Fill out[0..kv->arr_n) with the strings of a string array (validated at open). */
void gguf_arr_strings(const struct gguf_kv *kv, struct gguf_str *out);
/* Element i of a numeric array as double (0 if not numeric). */
double gguf_arr_num(const struct gguf_kv *kv, uint64_t i);
bool gguf_str_eq(struct gguf_str s, const char *c);

const struct gguf_tensor *gguf_tensor(const struct gguf_file *f, const char *name);

/* Bytes of a row of n elements of a ggml type (0 for unsupported/invalid). */
size_t ggml_row_bytes(uint32_t type, uint64_t n);
/* ggml's name of any type id ("Q4_K", "IQ2_XXS", ...; "type#N" if unknown). */
const char *ggml_type_name(uint32_t type);
/* Elements per block of a supported type (1 for F32/F16/BF16), 0 otherwise. */
int ggml_block_size(uint32_t type);
/* The supported types, for error messages: "F32, F16, BF16, Q8_0, ...". */
#define GGML_SUPPORTED_TYPES "F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K"

/* ---- writer ---- */
struct gguf_writer {
    struct sbuf kvs;   /* serialized key/values */
    struct sbuf infos; /* serialized tensor infos */
    struct sbuf data;  /* tensor data, each aligned to 32 */
    uint64_t n_kv, n_tensors;
};

void gguf_w_init(struct gguf_writer *w);
void gguf_w_free(struct gguf_writer *w);
void gguf_w_str(struct gguf_writer *w, const char *key, const char *val);
void gguf_w_u32(struct gguf_writer *w, const char *key, uint32_t v);
void gguf_w_i32(struct gguf_writer *w, const char *key, int32_t v);
void gguf_w_f32(struct gguf_writer *w, const char *key, float v);
void gguf_w_bool(struct gguf_writer *w, const char *key, bool v);
void gguf_w_arr_str(struct gguf_writer *w, const char *key, const char *const *s, uint64_t n);
void gguf_w_arr_f32(struct gguf_writer *w, const char *key, const float *v, uint64_t n);
void gguf_w_arr_i32(struct gguf_writer *w, const char *key, const int32_t *v, uint64_t n);
/* Add a tensor; data holds ggml_row_bytes(type, ne[0]) * rows bytes. */
void gguf_w_tensor(struct gguf_writer *w, const char *name, uint32_t n_dims, const uint64_t *ne,
                   uint32_t type, const void *data);
/* Serialize the whole file into out (appended). */
void gguf_w_finish(struct gguf_writer *w, struct sbuf *out);

#endif
