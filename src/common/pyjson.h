/* pyjson: JSON values that keep the distinctions Python's json module keeps,
 * and a writer that produces exactly the bytes of Python's json.dumps.
 *
 * Why: the Vast protocol signs json.dumps(auth_data-subset, indent=4[, sort_keys])
 * rebuilt from *parsed* values (docs/protocol.md §3.4-3.5), and its 422 bodies
 * and reports are json.dumps with default separators.  So:
 *   - integers keep their exact decimal digits (arbitrary precision, "-0" -> "0");
 *   - floats are doubles printed with Python's repr (shortest round trip,
 *     "256.0", "1e-05", "1e+16", "NaN", "Infinity");
 *   - strings are decoded to UTF-8 and re-escaped with ensure_ascii=True
 *     (lower-case \uXXXX, surrogate pairs for non-BMP);
 *   - objects keep member order; duplicate keys: the last value wins, in the
 *     position of the first occurrence (as a Python dict does).
 * Parsing follows Python's json.loads: strict JSON plus NaN/Infinity/-Infinity,
 * lone surrogate escapes accepted, invalid UTF-8 in the raw bytes rejected
 * (Python's request.json() decodes UTF-8 strictly first), nesting depth bounded.
 *
 * Deliberate differences from Python 3.11 json.loads (documented, tested):
 *   - nesting deeper than PYJ_MAX_DEPTH containers is rejected (Python allows
 *     ~1000 before RecursionError);
 *   - integer literals over 4300 digits are rejected, as Python 3.11 does by
 *     default (ValueError from int_max_str_digits), not a JSON syntax error.
 * Equality (pyj_equal) follows Python: True == 1 == 1.0, False == 0, ints and
 * floats compare exactly.  NaN: a top-level NaN is unequal to anything, but
 * NaN items of arrays/objects are equal to each other, because json.loads
 * returns one shared NaN object and containers compare items by identity
 * first (so json.loads('[NaN]') == json.loads('[NaN]') is True).
 */
#ifndef SGPU_PYJSON_H
#define SGPU_PYJSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sbuf.h"

enum pyj_type {
    PYJ_NULL,
    PYJ_FALSE,
    PYJ_TRUE,
    PYJ_INT,
    PYJ_FLOAT,
    PYJ_STRING,
    PYJ_ARRAY,
    PYJ_OBJECT
};

struct pyj_member;

struct pyj_value {
    enum pyj_type type;
    union {
        struct {
            char *digits; /* canonical decimal text, e.g. "-12", "0" */
        } i;
        double f;
        struct {
            char *s; /* UTF-8 bytes (may contain NUL and lone surrogates as WTF-8) */
            size_t len;
        } str;
        struct {
            struct pyj_value **items;
            size_t len, cap;
        } arr;
        struct {
            struct pyj_member *members;
            size_t len, cap;
        } obj;
    } u;
};

struct pyj_member {
    char *key; /* UTF-8, NUL-terminated (keys with NUL bytes are stored escaped-safe: klen) */
    size_t klen;
    struct pyj_value *val;
};

#define PYJ_MAX_DEPTH 64

/* Parse `len` bytes.  On error returns -1 and writes a short reason into
 * err (if errlen > 0).  The whole input must be one value plus whitespace. */
int pyj_parse(const char *text, size_t len, struct pyj_value **out, char *err, size_t errlen);
void pyj_free(struct pyj_value *v);

/* Constructors (abort on OOM like sbuf).  pyj_new_int_text takes canonical digits. */
struct pyj_value *pyj_new_null(void);
struct pyj_value *pyj_new_bool(bool b);
struct pyj_value *pyj_new_int(int64_t v);
struct pyj_value *pyj_new_int_text(const char *digits);
struct pyj_value *pyj_new_float(double v);
struct pyj_value *pyj_new_string(const char *s, size_t len);
struct pyj_value *pyj_new_array(void);
struct pyj_value *pyj_new_object(void);
/* Append to an array / set an object member (replaces an existing key in
 * place).  Ownership of `item`/`val` passes to the container. */
void pyj_array_push(struct pyj_value *arr, struct pyj_value *item);
void pyj_object_set(struct pyj_value *obj, const char *key, struct pyj_value *val);
struct pyj_value *pyj_clone(const struct pyj_value *v);

/* Member lookup (NULL if absent or obj is not an object). */
const struct pyj_value *pyj_get(const struct pyj_value *obj, const char *key);
/* Numeric value of an INT or FLOAT (ints beyond double range become ±inf);
 * returns false for other types. */
bool pyj_number(const struct pyj_value *v, double *out);
/* Integer value if v is an INT that fits in int64. */
bool pyj_int64(const struct pyj_value *v, int64_t *out);
/* Python's == on json.loads results (1 == 1.0 == True, dict equality ignores
 * order, NaN rule above). */
bool pyj_equal(const struct pyj_value *a, const struct pyj_value *b);

/* indent value for json.dumps(separators=(",", ":")): one line, no spaces.
 * (Added; any other negative indent keeps Python's default ", " / ": ".) */
#define PYJ_INDENT_COMPACT (-2)

struct pyj_dump_opts {
    int indent;     /* <0: one line with ", " and ": " (json.dumps default); >=0: indent=N */
    bool sort_keys; /* ascending by code point */
};

/* Append json.dumps(v, ...) to out. */
void pyj_dump(const struct pyj_value *v, const struct pyj_dump_opts *o, struct sbuf *out);
/* json.dumps of the sub-object of `obj` holding only `keys` (missing keys are
 * skipped), in the order given, or sorted if o->sort_keys.  This is how the
 * worker rebuilds signature messages without copying auth_data. */
void pyj_dump_members(const struct pyj_value *obj, const char *const *keys, size_t nkeys,
                      const struct pyj_dump_opts *o, struct sbuf *out);
/* A JSON string literal with ensure_ascii escaping, quotes included.  s is
 * WTF-8; a byte that does not start a valid sequence is written as \ufffd. */
void pyj_write_string(struct sbuf *out, const char *s, size_t len);
/* Python repr(float) into buf (>= 32 bytes); returns length. */
size_t pyj_format_float(double v, char *buf, size_t n);
/* The same, appended to out (a JSON number for finite v). */
void pyj_write_float(struct sbuf *out, double v);

#endif
