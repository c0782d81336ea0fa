/* pyjson: Python-json-compatible values, parser and writer; see pyjson.h.
 *
 * Parser: recursive descent over the raw bytes, bounded by PYJ_MAX_DEPTH, so
 * recursion depth is small.  Strings are decoded into WTF-8 (UTF-8 that may
 * hold lone surrogates from \uD8xx escapes).  Objects are deduplicated once,
 * when their closing brace is read (O(n^2) for small objects, sort for big).
 *
 * Float repr: the shortest decimal that strtod() maps back to the same double,
 * and among those the one nearest the value (what Python's repr gives, via
 * David Gay's dtoa mode 0).  For normal doubles the nearest 15-digit decimal
 * is the answer whenever any <=15-digit decimal round-trips (15-digit spacing
 * is wider than an ulp); else 16 digits (nearest, or its neighbour towards the
 * value: needed at powers of two, where the rounding interval is lopsided);
 * else 17 digits always round-trip.  Subnormals are searched from 1 digit. */
#include "pyjson.h"
#include "xalloc.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Python 3.11's default sys.get_int_max_str_digits(): json.loads raises
 * ValueError for integer literals with more digits. */
#define PYJ_MAX_INT_DIGITS 4300

static struct pyj_value *new_value(enum pyj_type t)
{
    struct pyj_value *v = xcalloc(1, sizeof *v);
    v->type = t;
    return v;
}

/* ------------------------------------------------------------------ */
/* constructors                                                        */

struct pyj_value *pyj_new_null(void)
{
    return new_value(PYJ_NULL);
}

struct pyj_value *pyj_new_bool(bool b)
{
    return new_value(b ? PYJ_TRUE : PYJ_FALSE);
}

struct pyj_value *pyj_new_int(int64_t x)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%" PRId64, x);
    struct pyj_value *v = new_value(PYJ_INT);
    v->u.i.digits = xmemdup(buf, (size_t)n);
    return v;
}

struct pyj_value *pyj_new_int_text(const char *digits)
{
    struct pyj_value *v = new_value(PYJ_INT);
    if (strcmp(digits, "-0") == 0) digits = "0";
    v->u.i.digits = xmemdup(digits, strlen(digits));
    return v;
}

struct pyj_value *pyj_new_float(double x)
{
    struct pyj_value *v = new_value(PYJ_FLOAT);
    v->u.f = x;
    return v;
}

struct pyj_value *pyj_new_string(const char *s, size_t len)
{
    struct pyj_value *v = new_value(PYJ_STRING);
    v->u.str.s = xmemdup(s, len);
    v->u.str.len = len;
    return v;
}

struct pyj_value *pyj_new_array(void)
{
    return new_value(PYJ_ARRAY);
}

struct pyj_value *pyj_new_object(void)
{
    return new_value(PYJ_OBJECT);
}

void pyj_array_push(struct pyj_value *arr, struct pyj_value *item)
{
    if (arr->u.arr.len == arr->u.arr.cap) {
        size_t cap = arr->u.arr.cap ? arr->u.arr.cap * 2 : 4;
        arr->u.arr.items = xrealloc(arr->u.arr.items, cap * sizeof *arr->u.arr.items);
        arr->u.arr.cap = cap;
    }
    arr->u.arr.items[arr->u.arr.len++] = item;
}

/* Append a member without looking for duplicates; takes ownership of key. */
static void obj_append(struct pyj_value *obj, char *key, size_t klen, struct pyj_value *val)
{
    if (obj->u.obj.len == obj->u.obj.cap) {
        size_t cap = obj->u.obj.cap ? obj->u.obj.cap * 2 : 4;
        obj->u.obj.members = xrealloc(obj->u.obj.members, cap * sizeof *obj->u.obj.members);
        obj->u.obj.cap = cap;
    }
    struct pyj_member *m = &obj->u.obj.members[obj->u.obj.len++];
    m->key = key;
    m->klen = klen;
    m->val = val;
}

static struct pyj_member *obj_find(const struct pyj_value *obj, const char *key, size_t klen)
{
    for (size_t i = 0; i < obj->u.obj.len; i++) {
        struct pyj_member *m = &obj->u.obj.members[i];
        if (m->klen == klen && memcmp(m->key, key, klen) == 0) return m;
    }
    return NULL;
}

void pyj_object_set(struct pyj_value *obj, const char *key, struct pyj_value *val)
{
    size_t klen = strlen(key);
    struct pyj_member *m = obj_find(obj, key, klen);
    if (m) {
        pyj_free(m->val);
        m->val = val;
        return;
    }
    obj_append(obj, xmemdup(key, klen), klen, val);
}

void pyj_free(struct pyj_value *v)
{
    if (!v) return;
    switch (v->type) {
    case PYJ_INT:
        free(v->u.i.digits);
        break;
    case PYJ_STRING:
        free(v->u.str.s);
        break;
    case PYJ_ARRAY:
        for (size_t i = 0; i < v->u.arr.len; i++)
            pyj_free(v->u.arr.items[i]);
        free(v->u.arr.items);
        break;
    case PYJ_OBJECT:
        for (size_t i = 0; i < v->u.obj.len; i++) {
            free(v->u.obj.members[i].key);
            pyj_free(v->u.obj.members[i].val);
        }
        free(v->u.obj.members);
        break;
    default:
        break;
    }
    free(v);
}

struct pyj_value *pyj_clone(const struct pyj_value *v)
{
    if (!v) return NULL;
    struct pyj_value *c = new_value(v->type);
    switch (v->type) {
    case PYJ_INT:
        c->u.i.digits = xmemdup(v->u.i.digits, strlen(v->u.i.digits));
        break;
    case PYJ_FLOAT:
        c->u.f = v->u.f;
        break;
    case PYJ_STRING:
        c->u.str.s = xmemdup(v->u.str.s, v->u.str.len);
        c->u.str.len = v->u.str.len;
        break;
    case PYJ_ARRAY:
        if (v->u.arr.len) {
            c->u.arr.items = xmalloc(v->u.arr.len * sizeof *c->u.arr.items);
            c->u.arr.cap = v->u.arr.len;
            for (size_t i = 0; i < v->u.arr.len; i++)
                c->u.arr.items[i] = pyj_clone(v->u.arr.items[i]);
            c->u.arr.len = v->u.arr.len;
        }
        break;
    case PYJ_OBJECT:
        if (v->u.obj.len) {
            c->u.obj.members = xmalloc(v->u.obj.len * sizeof *c->u.obj.members);
            c->u.obj.cap = v->u.obj.len;
            for (size_t i = 0; i < v->u.obj.len; i++) {
                const struct pyj_member *m = &v->u.obj.members[i];
                c->u.obj.members[i].key = xmemdup(m->key, m->klen);
                c->u.obj.members[i].klen = m->klen;
                c->u.obj.members[i].val = pyj_clone(m->val);
            }
            c->u.obj.len = v->u.obj.len;
        }
        break;
    default:
        break;
    }
    return c;
}

/* ------------------------------------------------------------------ */
/* accessors and equality                                              */

const struct pyj_value *pyj_get(const struct pyj_value *obj, const char *key)
{
    if (!obj || obj->type != PYJ_OBJECT) return NULL;
    struct pyj_member *m = obj_find(obj, key, strlen(key));
    return m ? m->val : NULL;
}

bool pyj_number(const struct pyj_value *v, double *out)
{
    if (!v) return false;
    if (v->type == PYJ_FLOAT) {
        *out = v->u.f;
        return true;
    }
    if (v->type == PYJ_INT) {
        *out = strtod(v->u.i.digits, NULL); /* overflow gives ±HUGE_VAL = ±inf */
        return true;
    }
    return false;
}

bool pyj_int64(const struct pyj_value *v, int64_t *out)
{
    if (!v || v->type != PYJ_INT) return false;
    const char *s = v->u.i.digits;
    bool neg = *s == '-';
    if (neg) s++;
    if (!*s) return false;
    uint64_t acc = 0;
    uint64_t lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return false;
        unsigned d = (unsigned)(*s - '0');
        if (acc > (lim - d) / 10) return false;
        acc = acc * 10 + d;
    }
    *out = neg ? (int64_t)(0 - acc) : (int64_t)acc;
    return true;
}

/* Exact integer text of an integral finite double ("-0" folded to "0"). */
static void float_int_text(double f, char *buf, size_t n)
{
    snprintf(buf, n, "%.0f", f); /* glibc prints integral doubles exactly */
    if (strcmp(buf, "-0") == 0) snprintf(buf, n, "0");
}

/* Numeric view for comparisons: bools are 0/1 as in Python. */
static bool is_numeric(const struct pyj_value *v)
{
    return v->type == PYJ_INT || v->type == PYJ_FLOAT || v->type == PYJ_TRUE ||
           v->type == PYJ_FALSE;
}

static bool num_equal(const struct pyj_value *a, const struct pyj_value *b)
{
    /* Normalise bools to ints. */
    const char *ad = NULL, *bd = NULL;
    if (a->type == PYJ_TRUE) ad = "1";
    if (a->type == PYJ_FALSE) ad = "0";
    if (a->type == PYJ_INT) ad = a->u.i.digits;
    if (b->type == PYJ_TRUE) bd = "1";
    if (b->type == PYJ_FALSE) bd = "0";
    if (b->type == PYJ_INT) bd = b->u.i.digits;
    if (ad && bd) return strcmp(ad, bd) == 0;
    if (!ad && !bd) return a->u.f == b->u.f;
    /* int vs float: exact, like Python (no rounding of the int to double). */
    double f = ad ? b->u.f : a->u.f;
    const char *digits = ad ? ad : bd;
    if (!isfinite(f) || f != floor(f)) return false;
    char buf[400];
    float_int_text(f, buf, sizeof buf);
    return strcmp(buf, digits) == 0;
}

static bool equal_inner(const struct pyj_value *a, const struct pyj_value *b);

/* Container items compare with PyObject_RichCompareBool, where identity
 * implies equality; json.loads returns one shared float object for every NaN
 * literal, so NaN items are equal to each other (top-level NaN != NaN). */
static bool equal_item(const struct pyj_value *a, const struct pyj_value *b)
{
    if (a == b) return true;
    if (a->type == PYJ_FLOAT && b->type == PYJ_FLOAT && isnan(a->u.f) && isnan(b->u.f)) return true;
    return equal_inner(a, b);
}

static bool equal_inner(const struct pyj_value *a, const struct pyj_value *b)
{
    if (is_numeric(a) && is_numeric(b)) return num_equal(a, b);
    if (a->type != b->type) return false;
    switch (a->type) {
    case PYJ_NULL:
        return true;
    case PYJ_STRING:
        return a->u.str.len == b->u.str.len && memcmp(a->u.str.s, b->u.str.s, a->u.str.len) == 0;
    case PYJ_ARRAY:
        if (a->u.arr.len != b->u.arr.len) return false;
        for (size_t i = 0; i < a->u.arr.len; i++)
            if (!equal_item(a->u.arr.items[i], b->u.arr.items[i])) return false;
        return true;
    case PYJ_OBJECT:
        if (a->u.obj.len != b->u.obj.len) return false;
        for (size_t i = 0; i < a->u.obj.len; i++) {
            const struct pyj_member *m = &a->u.obj.members[i];
            const struct pyj_member *o = obj_find(b, m->key, m->klen);
            if (!o || !equal_item(m->val, o->val)) return false;
        }
        return true;
    default:
        return false;
    }
}

bool pyj_equal(const struct pyj_value *a, const struct pyj_value *b)
{
    if (!a || !b) return a == b;
    return equal_inner(a, b);
}

/* ------------------------------------------------------------------ */
/* parser                                                              */

struct parser {
    const char *start, *p, *end;
    char *err;
    size_t errlen;
    int depth;
    char *scratch; /* string decode buffer, reused */
    size_t scap;
};

static int perr(struct parser *ps, const char *what, const char *at)
{
    if (ps->err && ps->errlen > 0 && ps->err[0] == '\0')
        snprintf(ps->err, ps->errlen, "%s at offset %zu", what, (size_t)(at - ps->start));
    return -1;
}

static inline void skip_ws(struct parser *ps)
{
    const char *p = ps->p, *e = ps->end;
    while (p < e && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    ps->p = p;
}

static int parse_value(struct parser *ps, struct pyj_value **out);

static bool match_lit(struct parser *ps, const char *lit, size_t n)
{
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, lit, n) != 0) return false;
    ps->p += n;
    return true;
}

static inline bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int parse_number(struct parser *ps, struct pyj_value **out)
{
    const char *s = ps->p, *p = ps->p, *e = ps->end;
    bool neg = false;
    if (*p == '-') {
        neg = true;
        p++;
        if (p < e && *p == 'I') {
            ps->p = p;
            if (!match_lit(ps, "Infinity", 8)) return perr(ps, "Expecting value", s);
            *out = pyj_new_float(-INFINITY);
            return 0;
        }
    }
    if (p >= e || !is_digit(*p)) return perr(ps, "Expecting value", s);
    if (*p == '0') {
        p++;
    } else {
        while (p < e && is_digit(*p))
            p++;
    }
    bool isfloat = false;
    if (p + 1 < e && *p == '.' && is_digit(p[1])) {
        isfloat = true;
        p += 2;
        while (p < e && is_digit(*p))
            p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        const char *q = p + 1;
        if (q < e && (*q == '+' || *q == '-')) q++;
        if (q < e && is_digit(*q)) {
            isfloat = true;
            while (q < e && is_digit(*q))
                q++;
            p = q;
        }
    }
    size_t n = (size_t)(p - s);
    ps->p = p;
    if (!isfloat) {
        size_t ndig = n - (neg ? 1 : 0);
        if (ndig > PYJ_MAX_INT_DIGITS) return perr(ps, "Integer literal too long", s);
        struct pyj_value *v = new_value(PYJ_INT);
        if (n == 2 && neg && s[1] == '0')
            v->u.i.digits = xmemdup("0", 1);
        else
            v->u.i.digits = xmemdup(s, n);
        *out = v;
        return 0;
    }
    char small[64];
    char *buf = n < sizeof small ? small : xmalloc(n + 1);
    memcpy(buf, s, n);
    buf[n] = '\0';
    double d = strtod(buf, NULL); /* span validated above; ERANGE gives inf/0 as Python */
    if (buf != small) free(buf);
    *out = pyj_new_float(d);
    return 0;
}

static inline void scratch_put(struct parser *ps, size_t *len, const char *src, size_t n)
{
    if (*len + n + 1 > ps->scap) {
        size_t cap = ps->scap ? ps->scap : 256;
        while (cap < *len + n + 1)
            cap *= 2;
        ps->scratch = xrealloc(ps->scratch, cap);
        ps->scap = cap;
    }
    memcpy(ps->scratch + *len, src, n);
    *len += n;
}

static size_t utf8_put(char *b, uint32_t c)
{
    if (c < 0x80) {
        b[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        b[0] = (char)(0xC0 | (c >> 6));
        b[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        b[0] = (char)(0xE0 | (c >> 12));
        b[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        b[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    b[0] = (char)(0xF0 | (c >> 18));
    b[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    b[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    b[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* Length of a strictly valid UTF-8 sequence at p (as Python's decoder: no
 * overlongs, no surrogates, <= U+10FFFF), or 0. */
static size_t utf8_valid_len(const unsigned char *p, const unsigned char *e)
{
    unsigned c = p[0];
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        if (e - p < 2 || (p[1] & 0xC0) != 0x80) return 0;
        return 2;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (e - p < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && p[1] < 0xA0) return 0;  /* overlong */
        if (c == 0xED && p[1] >= 0xA0) return 0; /* surrogate */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (e - p < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && p[1] < 0x90) return 0;  /* overlong */
        if (c == 0xF4 && p[1] >= 0x90) return 0; /* > U+10FFFF */
        return 4;
    }
    return 0;
}

static int hex4(const char *p, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* Parse a string literal at ps->p (which is '"'); result in ps->scratch[0..*len). */
static int parse_string_raw(struct parser *ps, size_t *outlen)
{
    const char *qs = ps->p;
    const unsigned char *p = (const unsigned char *)ps->p + 1;
    const unsigned char *e = (const unsigned char *)ps->end;
    size_t len = 0;
    for (;;) {
        const unsigned char *run = p;
        while (p < e && *p != '"' && *p != '\\' && *p >= 0x20 && *p < 0x80)
            p++;
        if (p > run) scratch_put(ps, &len, (const char *)run, (size_t)(p - run));
        if (p >= e) return perr(ps, "Unterminated string starting", qs);
        unsigned c = *p;
        if (c == '"') {
            p++;
            break;
        }
        if (c < 0x20) return perr(ps, "Invalid control character", (const char *)p);
        if (c >= 0x80) {
            size_t n = utf8_valid_len(p, e);
            if (!n) return perr(ps, "Invalid UTF-8", (const char *)p);
            scratch_put(ps, &len, (const char *)p, n);
            p += n;
            continue;
        }
        /* backslash */
        if (p + 1 >= e) return perr(ps, "Unterminated string starting", qs);
        char esc = (char)p[1];
        char ch;
        switch (esc) {
        case '"':
            ch = '"';
            break;
        case '\\':
            ch = '\\';
            break;
        case '/':
            ch = '/';
            break;
        case 'b':
            ch = '\b';
            break;
        case 'f':
            ch = '\f';
            break;
        case 'n':
            ch = '\n';
            break;
        case 'r':
            ch = '\r';
            break;
        case 't':
            ch = '\t';
            break;
        case 'u': {
            uint32_t cp;
            if (e - p < 6 || hex4((const char *)p + 2, &cp) != 0)
                return perr(ps, "Invalid \\uXXXX escape", (const char *)p);
            p += 6;
            if (cp >= 0xD800 && cp <= 0xDBFF && e - p >= 6 && p[0] == '\\' && p[1] == 'u') {
                uint32_t lo;
                if (hex4((const char *)p + 2, &lo) != 0)
                    return perr(ps, "Invalid \\uXXXX escape", (const char *)p);
                if (lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p += 6;
                }
            }
            char b[4];
            size_t n = utf8_put(b, cp); /* lone surrogates become WTF-8 */
            scratch_put(ps, &len, b, n);
            continue;
        }
        default:
            return perr(ps, "Invalid \\escape", (const char *)p);
        }
        scratch_put(ps, &len, &ch, 1);
        p += 2;
    }
    ps->p = (const char *)p;
    *outlen = len;
    return 0;
}

static int parse_string(struct parser *ps, char **s, size_t *n)
{
    size_t len;
    if (parse_string_raw(ps, &len) != 0) return -1;
    *s = xmemdup(len ? ps->scratch : "", len);
    *n = len;
    return 0;
}

static int key_cmp(const struct pyj_member *a, const struct pyj_member *b)
{
    size_t n = a->klen < b->klen ? a->klen : b->klen;
    int c = memcmp(a->key, b->key, n);
    if (c) return c;
    return (a->klen > b->klen) - (a->klen < b->klen);
}

/* Stable merge sort of member indices by (key, position). */
static void idx_msort(size_t *idx, size_t *tmp, size_t n, const struct pyj_member *m)
{
    if (n < 2) return;
    size_t h = n / 2;
    idx_msort(idx, tmp, h, m);
    idx_msort(idx + h, tmp, n - h, m);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        int c = key_cmp(&m[idx[i]], &m[idx[j]]);
        if (c < 0 || (c == 0 && idx[i] < idx[j]))
            tmp[k++] = idx[i++];
        else
            tmp[k++] = idx[j++];
    }
    while (i < h)
        tmp[k++] = idx[i++];
    while (j < n)
        tmp[k++] = idx[j++];
    memcpy(idx, tmp, n * sizeof *idx);
}

/* Python dict semantics for duplicate keys: the first position keeps the last
 * value.  Removed members get key == NULL, then the array is compacted. */
static void obj_dedup(struct pyj_value *obj)
{
    size_t n = obj->u.obj.len;
    struct pyj_member *m = obj->u.obj.members;
    bool any = false;
    if (n < 2) return;
    if (n <= 16) {
        for (size_t i = 1; i < n; i++) {
            for (size_t j = 0; j < i; j++) {
                if (m[j].key && m[j].klen == m[i].klen &&
                    memcmp(m[j].key, m[i].key, m[i].klen) == 0) {
                    pyj_free(m[j].val);
                    m[j].val = m[i].val;
                    free(m[i].key);
                    m[i].key = NULL;
                    any = true;
                    break;
                }
            }
        }
    } else {
        size_t *idx = xmalloc(n * sizeof *idx), *tmp = xmalloc(n * sizeof *tmp);
        for (size_t i = 0; i < n; i++)
            idx[i] = i;
        idx_msort(idx, tmp, n, m);
        for (size_t i = 0; i < n;) {
            size_t j = i + 1;
            while (j < n && key_cmp(&m[idx[i]], &m[idx[j]]) == 0)
                j++;
            if (j - i > 1) {
                any = true;
                struct pyj_member *first = &m[idx[i]];
                pyj_free(first->val);
                first->val = m[idx[j - 1]].val;
                for (size_t k = i + 1; k < j; k++) {
                    struct pyj_member *d = &m[idx[k]];
                    if (k != j - 1) pyj_free(d->val);
                    free(d->key);
                    d->key = NULL;
                }
            }
            i = j;
        }
        free(idx);
        free(tmp);
    }
    if (!any) return;
    size_t w = 0;
    for (size_t i = 0; i < n; i++)
        if (m[i].key) m[w++] = m[i];
    obj->u.obj.len = w;
}

static int parse_object(struct parser *ps, struct pyj_value **out)
{
    struct pyj_value *obj = new_value(PYJ_OBJECT);
    ps->p++; /* '{' */
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}') {
        ps->p++;
        *out = obj;
        return 0;
    }
    for (;;) {
        if (ps->p >= ps->end || *ps->p != '"') {
            perr(ps, "Expecting property name enclosed in double quotes", ps->p);
            goto fail;
        }
        char *key;
        size_t klen;
        if (parse_string(ps, &key, &klen) != 0) goto fail;
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != ':') {
            free(key);
            perr(ps, "Expecting ':' delimiter", ps->p);
            goto fail;
        }
        ps->p++;
        struct pyj_value *val;
        if (parse_value(ps, &val) != 0) {
            free(key);
            goto fail;
        }
        obj_append(obj, key, klen, val);
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            skip_ws(ps);
            continue;
        }
        if (ps->p < ps->end && *ps->p == '}') {
            ps->p++;
            break;
        }
        perr(ps, "Expecting ',' delimiter", ps->p);
        goto fail;
    }
    obj_dedup(obj);
    *out = obj;
    return 0;
fail:
    pyj_free(obj);
    return -1;
}

static int parse_array(struct parser *ps, struct pyj_value **out)
{
    struct pyj_value *arr = new_value(PYJ_ARRAY);
    ps->p++; /* '[' */
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ']') {
        ps->p++;
        *out = arr;
        return 0;
    }
    for (;;) {
        struct pyj_value *item;
        if (parse_value(ps, &item) != 0) goto fail;
        pyj_array_push(arr, item);
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == ']') {
            ps->p++;
            break;
        }
        perr(ps, "Expecting ',' delimiter", ps->p);
        goto fail;
    }
    *out = arr;
    return 0;
fail:
    pyj_free(arr);
    return -1;
}

static int parse_value(struct parser *ps, struct pyj_value **out)
{
    skip_ws(ps);
    if (ps->p >= ps->end) return perr(ps, "Expecting value", ps->p);
    const char *at = ps->p;
    switch (*ps->p) {
    case '{':
    case '[': {
        if (ps->depth >= PYJ_MAX_DEPTH) return perr(ps, "Nesting too deep", at);
        ps->depth++;
        int rc = *ps->p == '{' ? parse_object(ps, out) : parse_array(ps, out);
        ps->depth--;
        return rc;
    }
    case '"': {
        char *s;
        size_t n;
        if (parse_string(ps, &s, &n) != 0) return -1;
        struct pyj_value *v = new_value(PYJ_STRING);
        v->u.str.s = s;
        v->u.str.len = n;
        *out = v;
        return 0;
    }
    case 'n':
        if (!match_lit(ps, "null", 4)) break;
        *out = pyj_new_null();
        return 0;
    case 't':
        if (!match_lit(ps, "true", 4)) break;
        *out = pyj_new_bool(true);
        return 0;
    case 'f':
        if (!match_lit(ps, "false", 5)) break;
        *out = pyj_new_bool(false);
        return 0;
    case 'N':
        if (!match_lit(ps, "NaN", 3)) break;
        *out = pyj_new_float(NAN);
        return 0;
    case 'I':
        if (!match_lit(ps, "Infinity", 8)) break;
        *out = pyj_new_float(INFINITY);
        return 0;
    default:
        if (*ps->p == '-' || is_digit(*ps->p)) return parse_number(ps, out);
        break;
    }
    return perr(ps, "Expecting value", at);
}

int pyj_parse(const char *text, size_t len, struct pyj_value **out, char *err, size_t errlen)
{
    struct parser ps = {text, text, text + len, err, errlen, 0, NULL, 0};
    if (err && errlen) err[0] = '\0';
    *out = NULL;
    struct pyj_value *v;
    int rc = parse_value(&ps, &v);
    free(ps.scratch);
    if (rc != 0) return -1;
    skip_ws(&ps);
    if (ps.p != ps.end) {
        pyj_free(v);
        return perr(&ps, "Extra data", ps.p);
    }
    *out = v;
    return 0;
}

/* ------------------------------------------------------------------ */
/* float repr                                                          */

/* Digits of v (>0, finite) as "%.{p-1}e": writes the significant digits
 * (trailing zeros stripped) into d and returns the decimal exponent. */
static int sci_digits(double v, int p, char *d, size_t *nd)
{
    char buf[48];
    snprintf(buf, sizeof buf, "%.*e", p - 1, v);
    size_t k = 0;
    const char *s = buf;
    for (; *s && *s != 'e'; s++)
        if (*s != '.') d[k++] = *s;
    int ex = atoi(s + 1);
    while (k > 1 && d[k - 1] == '0')
        k--;
    d[k] = '\0';
    *nd = k;
    return ex;
}

static double digits_value(const char *d, size_t nd, int ex)
{
    char buf[48];
    snprintf(buf, sizeof buf, "%.1s.%se%d", d, nd > 1 ? d + 1 : "0", ex);
    return strtod(buf, NULL);
}

/* Shortest round-trip digits of v (> 0, finite) -> d, *nd; returns exponent. */
static int shortest_digits(double v, char *d, size_t *nd)
{
    int ex;
    if (v < DBL_MIN) { /* subnormal: precision is low, search from 1 digit */
        for (int p = 1; p < 17; p++) {
            ex = sci_digits(v, p, d, nd);
            if (digits_value(d, *nd, ex) == v) return ex;
        }
        return sci_digits(v, 17, d, nd);
    }
    ex = sci_digits(v, 15, d, nd);
    if (digits_value(d, *nd, ex) == v) return ex;
    ex = sci_digits(v, 16, d, nd);
    double got = digits_value(d, *nd, ex);
    if (got == v) return ex;
    {
        /* Neighbour one unit in the 16th digit towards v. */
        char buf[48];
        snprintf(buf, sizeof buf, "%.15e", v);
        uint64_t m = 0;
        for (const char *s = buf; *s && *s != 'e'; s++)
            if (*s != '.') m = m * 10 + (uint64_t)(*s - '0');
        int e16 = atoi(strchr(buf, 'e') + 1);
        uint64_t m2 = got < v ? m + 1 : m - 1;
        if (m2 >= 1000000000000000ULL) {
            char t[48];
            snprintf(t, sizeof t, "%" PRIu64 "e%d", m2, e16 - 15);
            if (strtod(t, NULL) == v) {
                char s2[24];
                int n2 = snprintf(s2, sizeof s2, "%" PRIu64, m2);
                int eadj = e16 + (n2 - 16);
                size_t k = (size_t)n2;
                while (k > 1 && s2[k - 1] == '0')
                    k--;
                memcpy(d, s2, k);
                d[k] = '\0';
                *nd = k;
                return eadj;
            }
        }
    }
    return sci_digits(v, 17, d, nd);
}

size_t pyj_format_float(double v, char *out, size_t n)
{
    char buf[64];
    size_t k = 0;
    if (isnan(v)) {
        k = (size_t)snprintf(buf, sizeof buf, "NaN");
    } else if (isinf(v)) {
        k = (size_t)snprintf(buf, sizeof buf, v < 0 ? "-Infinity" : "Infinity");
    } else {
        if (signbit(v)) buf[k++] = '-';
        double a = fabs(v);
        if (a == 0) {
            memcpy(buf + k, "0.0", 3);
            k += 3;
        } else {
            char d[24];
            size_t nd;
            int ex = shortest_digits(a, d, &nd);
            if (ex >= -4 && ex < 16) {
                if (ex < 0) {
                    buf[k++] = '0';
                    buf[k++] = '.';
                    for (int i = 0; i < -ex - 1; i++)
                        buf[k++] = '0';
                    memcpy(buf + k, d, nd);
                    k += nd;
                } else {
                    size_t ip = (size_t)ex + 1; /* digits before the point */
                    for (size_t i = 0; i < ip; i++)
                        buf[k++] = i < nd ? d[i] : '0';
                    buf[k++] = '.';
                    if (nd > ip) {
                        memcpy(buf + k, d + ip, nd - ip);
                        k += nd - ip;
                    } else {
                        buf[k++] = '0';
                    }
                }
            } else {
                buf[k++] = d[0];
                if (nd > 1) {
                    buf[k++] = '.';
                    memcpy(buf + k, d + 1, nd - 1);
                    k += nd - 1;
                }
                k += (size_t)snprintf(buf + k, sizeof buf - k, "e%c%02d", ex < 0 ? '-' : '+',
                                      ex < 0 ? -ex : ex);
            }
        }
    }
    buf[k] = '\0';
    if (n) {
        size_t c = k < n - 1 ? k : n - 1;
        memcpy(out, buf, c);
        out[c] = '\0';
    }
    return k;
}

/* ------------------------------------------------------------------ */
/* writer                                                              */

/* 0: byte copied as is; 1: needs escaping (control, '"', '\\', DEL, non-ASCII). */
static const unsigned char needs_esc[256] = {
    [0 ... 0x1F] = 1,
    ['"'] = 1,
    ['\\'] = 1,
    [0x7F ... 0xFF] = 1,
};

static const char hexd[] = "0123456789abcdef";

static void put_u(char *b, uint32_t c)
{
    b[0] = '\\';
    b[1] = 'u';
    b[2] = hexd[(c >> 12) & 0xF];
    b[3] = hexd[(c >> 8) & 0xF];
    b[4] = hexd[(c >> 4) & 0xF];
    b[5] = hexd[c & 0xF];
}

/* Decode one WTF-8 sequence (lone surrogates allowed) at p; returns its
 * length, or 0 if invalid (then the caller writes U+FFFD for one byte). */
static size_t wtf8_decode(const unsigned char *p, const unsigned char *e, uint32_t *cp)
{
    unsigned c = p[0];
    if (c >= 0xC2 && c <= 0xDF && e - p >= 2 && (p[1] & 0xC0) == 0x80) {
        *cp = ((c & 0x1Fu) << 6) | (p[1] & 0x3Fu);
        return 2;
    }
    if (c >= 0xE0 && c <= 0xEF && e - p >= 3 && (p[1] & 0xC0) == 0x80 && (p[2] & 0xC0) == 0x80) {
        uint32_t v = ((c & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu);
        if (v < 0x800) return 0;
        *cp = v;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4 && e - p >= 4 && (p[1] & 0xC0) == 0x80 && (p[2] & 0xC0) == 0x80 &&
        (p[3] & 0xC0) == 0x80) {
        uint32_t v =
            ((c & 0x07u) << 18) | ((p[1] & 0x3Fu) << 12) | ((p[2] & 0x3Fu) << 6) | (p[3] & 0x3Fu);
        if (v < 0x10000 || v > 0x10FFFF) return 0;
        *cp = v;
        return 4;
    }
    return 0;
}

void pyj_write_string(struct sbuf *out, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *e = p + len;
    sbuf_reserve(out, len + 2);
    out->data[out->len++] = '"';
    while (p < e) {
        const unsigned char *run = p;
        while (p < e && !needs_esc[*p])
            p++;
        if (p > run) sbuf_append(out, run, (size_t)(p - run));
        if (p >= e) break;
        char b[12];
        size_t bn = 2;
        unsigned c = *p;
        b[0] = '\\';
        switch (c) {
        case '"':
            b[1] = '"';
            break;
        case '\\':
            b[1] = '\\';
            break;
        case '\n':
            b[1] = 'n';
            break;
        case '\r':
            b[1] = 'r';
            break;
        case '\t':
            b[1] = 't';
            break;
        case '\b':
            b[1] = 'b';
            break;
        case '\f':
            b[1] = 'f';
            break;
        default:
            if (c < 0x80) {
                put_u(b, c);
                bn = 6;
            } else {
                uint32_t cp;
                size_t n = wtf8_decode(p, e, &cp);
                if (!n) { /* not UTF-8: documented as U+FFFD per byte */
                    cp = 0xFFFD;
                    n = 1;
                }
                p += n - 1;
                if (cp >= 0x10000) {
                    cp -= 0x10000;
                    put_u(b, 0xD800 + (cp >> 10));
                    put_u(b + 6, 0xDC00 + (cp & 0x3FF));
                    bn = 12;
                } else {
                    put_u(b, cp);
                    bn = 6;
                }
            }
        }
        p++;
        sbuf_append(out, b, bn);
    }
    sbuf_putc(out, '"');
}

static void put_newline_indent(struct sbuf *out, int indent, int level)
{
    size_t n = (size_t)indent * (size_t)level;
    sbuf_reserve(out, n + 1);
    out->data[out->len++] = '\n';
    memset(out->data + out->len, ' ', n);
    out->len += n;
    out->data[out->len] = '\0';
}

static void dump_value(const struct pyj_value *v, const struct pyj_dump_opts *o, struct sbuf *out,
                       int level);

static const char *item_sep(const struct pyj_dump_opts *o)
{
    if (o->indent >= 0) return ",";
    return o->indent == PYJ_INDENT_COMPACT ? "," : ", ";
}

static const char *key_sep(const struct pyj_dump_opts *o)
{
    return o->indent == PYJ_INDENT_COMPACT ? ":" : ": ";
}

static int member_ptr_cmp(const void *a, const void *b)
{
    return key_cmp(*(const struct pyj_member *const *)a, *(const struct pyj_member *const *)b);
}

/* Write members (already chosen and ordered) as an object. */
static void dump_members(const struct pyj_member *const *ms, size_t n,
                         const struct pyj_dump_opts *o, struct sbuf *out, int level)
{
    if (n == 0) {
        sbuf_append(out, "{}", 2);
        return;
    }
    const char *is = item_sep(o), *ks = key_sep(o);
    sbuf_putc(out, '{');
    for (size_t i = 0; i < n; i++) {
        if (i) sbuf_puts(out, is);
        if (o->indent >= 0) put_newline_indent(out, o->indent, level + 1);
        pyj_write_string(out, ms[i]->key, ms[i]->klen);
        sbuf_puts(out, ks);
        dump_value(ms[i]->val, o, out, level + 1);
    }
    if (o->indent >= 0) put_newline_indent(out, o->indent, level);
    sbuf_putc(out, '}');
}

static void dump_object(const struct pyj_value *v, const struct pyj_dump_opts *o, struct sbuf *out,
                        int level)
{
    size_t n = v->u.obj.len;
    const struct pyj_member *small[16] = {NULL};
    const struct pyj_member **ms = n <= 16 ? small : xmalloc(n * sizeof *ms);
    for (size_t i = 0; i < n; i++)
        ms[i] = &v->u.obj.members[i];
    if (o->sort_keys && n > 1) qsort(ms, n, sizeof *ms, member_ptr_cmp);
    dump_members(ms, n, o, out, level);
    if (ms != small) free(ms);
}

static void dump_value(const struct pyj_value *v, const struct pyj_dump_opts *o, struct sbuf *out,
                       int level)
{
    switch (v->type) {
    case PYJ_NULL:
        sbuf_append(out, "null", 4);
        break;
    case PYJ_TRUE:
        sbuf_append(out, "true", 4);
        break;
    case PYJ_FALSE:
        sbuf_append(out, "false", 5);
        break;
    case PYJ_INT:
        sbuf_puts(out, v->u.i.digits);
        break;
    case PYJ_FLOAT: {
        char b[40];
        size_t n = pyj_format_float(v->u.f, b, sizeof b);
        sbuf_append(out, b, n);
        break;
    }
    case PYJ_STRING:
        pyj_write_string(out, v->u.str.s, v->u.str.len);
        break;
    case PYJ_ARRAY: {
        size_t n = v->u.arr.len;
        if (n == 0) {
            sbuf_append(out, "[]", 2);
            break;
        }
        const char *is = item_sep(o);
        sbuf_putc(out, '[');
        for (size_t i = 0; i < n; i++) {
            if (i) sbuf_puts(out, is);
            if (o->indent >= 0) put_newline_indent(out, o->indent, level + 1);
            dump_value(v->u.arr.items[i], o, out, level + 1);
        }
        if (o->indent >= 0) put_newline_indent(out, o->indent, level);
        sbuf_putc(out, ']');
        break;
    }
    case PYJ_OBJECT:
        dump_object(v, o, out, level);
        break;
    }
}

static const struct pyj_dump_opts default_opts = {-1, false};

void pyj_dump(const struct pyj_value *v, const struct pyj_dump_opts *o, struct sbuf *out)
{
    dump_value(v, o ? o : &default_opts, out, 0);
}

static int cstr_ptr_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void pyj_dump_members(const struct pyj_value *obj, const char *const *keys, size_t nkeys,
                      const struct pyj_dump_opts *o, struct sbuf *out)
{
    if (!o) o = &default_opts;
    const char *ksmall[16];
    const struct pyj_member *msmall[16] = {0};
    const char **ks = nkeys <= 16 ? ksmall : xmalloc(nkeys * sizeof *ks);
    const struct pyj_member **ms = nkeys <= 16 ? msmall : xmalloc(nkeys * sizeof *ms);
    memcpy(ks, keys, nkeys * sizeof *ks);
    if (o->sort_keys && nkeys > 1) qsort(ks, nkeys, sizeof *ks, cstr_ptr_cmp);
    size_t n = 0;
    for (size_t i = 0; i < nkeys; i++) {
        bool dup = false;
        for (size_t j = 0; j < i && !dup; j++)
            dup = strcmp(ks[i], ks[j]) == 0;
        if (dup || !obj || obj->type != PYJ_OBJECT) continue;
        const struct pyj_member *m = obj_find(obj, ks[i], strlen(ks[i]));
        if (m) ms[n++] = m;
    }
    dump_members(ms, n, o, out, 0);
    if (ks != ksmall) free(ks);
    if (ms != msmall) free(ms);
}

void pyj_write_float(struct sbuf *out, double v)
{
    char t[40];
    size_t n = pyj_format_float(v, t, sizeof t);
    sbuf_append(out, t, n);
}
