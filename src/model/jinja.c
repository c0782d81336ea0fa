/* Jinja2 subset interpreter for chat templates: lexer, parser, evaluator.
 * The public interface and the bounds are described in jinja.h; the
 * supported language in docs/model.md.  Semantics follow Jinja2 3.1 as HF's
 * apply_chat_template configures it (ImmutableSandboxedEnvironment,
 * trim_blocks, lstrip_blocks, loopcontrols, default Undefined).
 *
 * Errors unwind with longjmp to jinja_parse/jinja_render: everything
 * allocated on the way lives in an arena freed there, so no path leaks. */
#include "jinja.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pyjson.h"

/* ------------------------------------------------------------------ errors */

struct jerr {
    jmp_buf jb;
    int status;
    char msg[512];
};

static _Noreturn __attribute__((format(printf, 3, 4))) void fail(struct jerr *e, int status,
                                                                 const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->status = status;
    longjmp(e->jb, 1);
}

/* ------------------------------------------------------------------- arena */

struct ablk {
    struct ablk *next;
    size_t used, cap;
    _Alignas(16) char data[];
};

struct arena {
    struct ablk *head;
    size_t total, limit; /* bytes of blocks held; bound */
    struct jerr *e;
};

static void *ar_alloc(struct arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (!a->head || a->head->cap - a->head->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        if (a->total + cap > a->limit)
            fail(a->e, JINJA_ELIMIT, "template memory limit (%zu bytes) exceeded", a->limit);
        struct ablk *b = malloc(sizeof *b + cap);
        if (!b) fail(a->e, JINJA_ELIMIT, "out of memory");
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
        a->total += cap;
    }
    void *p = a->head->data + a->head->used;
    a->head->used += n;
    return p;
}

static void *ar_zalloc(struct arena *a, size_t n)
{
    void *p = ar_alloc(a, n);
    memset(p, 0, n);
    return p;
}

static char *ar_strdup(struct arena *a, const char *s, size_t n)
{
    char *p = ar_alloc(a, n + 1);
    if (n) memcpy(p, s, n);
    p[n] = 0;
    return p;
}

static void ar_free(struct arena *a)
{
    while (a->head) {
        struct ablk *b = a->head;
        a->head = b->next;
        free(b);
    }
    a->total = 0;
}

/* ------------------------------------------------------------------ values */

enum vt { V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_LIST, V_DICT, V_MACRO, V_FUNC };

struct list;
struct dict;
struct macro;

struct val {
    uint8_t t;  /* enum vt */
    uint32_t n; /* V_STR: byte length; V_UNDEF: length of the name */
    union {
        bool b;
        int64_t i;
        double f;
        const char *s; /* V_STR (not NUL-terminated); V_UNDEF: name or NULL */
        struct list *l;
        struct dict *d;
        const struct macro *m;
        int fn;
    } u;
};

struct list {
    struct val *v;
    size_t n, cap;
    bool tuple;
};

struct dict {
    struct val *k, *v;
    size_t n, cap;
    bool ns; /* namespace(): attributes assignable with set ns.x = ... */
};

/* builtin globals; FN_BOUND: a dict method read as an attribute (d.items), which
 * Jinja resolves before the dict's keys */
enum { FN_RANGE, FN_NAMESPACE, FN_RAISE, FN_STRFTIME, FN_DICT, FN_BOUND };

static const struct val UNDEF = {.t = V_UNDEF};
static const struct val NONE = {.t = V_NONE};

static struct val vbool(bool b)
{
    return (struct val){.t = V_BOOL, .u.b = b};
}
static struct val vint(int64_t i)
{
    return (struct val){.t = V_INT, .u.i = i};
}
static struct val vfloat(double f)
{
    return (struct val){.t = V_FLOAT, .u.f = f};
}
static struct val vstr(const char *s, size_t n)
{
    return (struct val){.t = V_STR, .n = (uint32_t)n, .u.s = s};
}
static struct val vundef(const char *name)
{
    return (struct val){.t = V_UNDEF, .n = name ? (uint32_t)strlen(name) : 0, .u.s = name};
}

static struct list *list_new(struct arena *a, size_t cap)
{
    struct list *l = ar_zalloc(a, sizeof *l);
    l->cap = cap ? cap : 4;
    l->v = ar_alloc(a, l->cap * sizeof *l->v);
    return l;
}

static void list_push(struct arena *a, struct list *l, struct val v)
{
    if (l->n == l->cap) {
        struct val *nv = ar_alloc(a, l->cap * 2 * sizeof *nv);
        memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv;
        l->cap *= 2;
    }
    l->v[l->n++] = v;
}

static struct val vlist(struct list *l)
{
    return (struct val){.t = V_LIST, .u.l = l};
}

static struct dict *dict_new(struct arena *a)
{
    struct dict *d = ar_zalloc(a, sizeof *d);
    d->cap = 8;
    d->k = ar_alloc(a, d->cap * sizeof *d->k);
    d->v = ar_alloc(a, d->cap * sizeof *d->v);
    return d;
}

static struct val vdict(struct dict *d)
{
    return (struct val){.t = V_DICT, .u.d = d};
}

static bool str_eq(struct val a, const char *s, size_t n)
{
    return a.t == V_STR && a.n == n && (n == 0 || memcmp(a.u.s, s, n) == 0);
}

static bool val_eq(struct val a, struct val b);

static long dict_find(const struct dict *d, struct val k)
{
    for (size_t i = 0; i < d->n; i++)
        if (val_eq(d->k[i], k)) return (long)i;
    return -1;
}

static long dict_find_s(const struct dict *d, const char *s, size_t n)
{
    for (size_t i = 0; i < d->n; i++)
        if (str_eq(d->k[i], s, n)) return (long)i;
    return -1;
}

static void dict_set(struct arena *a, struct dict *d, struct val k, struct val v)
{
    long i = dict_find(d, k);
    if (i >= 0) {
        d->v[i] = v;
        return;
    }
    if (d->n == d->cap) {
        struct val *nk = ar_alloc(a, d->cap * 2 * sizeof *nk);
        struct val *nv = ar_alloc(a, d->cap * 2 * sizeof *nv);
        memcpy(nk, d->k, d->n * sizeof *nk);
        memcpy(nv, d->v, d->n * sizeof *nv);
        d->k = nk;
        d->v = nv;
        d->cap *= 2;
    }
    d->k[d->n] = k;
    d->v[d->n++] = v;
}

static void dict_set_s(struct arena *a, struct dict *d, const char *s, struct val v)
{
    dict_set(a, d, vstr(s, strlen(s)), v);
}

static bool truthy(struct val v)
{
    switch (v.t) {
    case V_UNDEF:
    case V_NONE:
        return false;
    case V_BOOL:
        return v.u.b;
    case V_INT:
        return v.u.i != 0;
    case V_FLOAT:
        return v.u.f != 0;
    case V_STR:
        return v.n > 0;
    case V_LIST:
        return v.u.l->n > 0;
    case V_DICT:
        return v.u.d->n > 0;
    default:
        return true;
    }
}

static bool is_num(struct val v)
{
    return v.t == V_INT || v.t == V_FLOAT || v.t == V_BOOL;
}

static double num_of(struct val v)
{
    return v.t == V_FLOAT ? v.u.f : v.t == V_INT ? (double)v.u.i : (double)v.u.b;
}

/* Python ==; containers nested over 64 deep (a namespace holding itself)
 * compare unequal instead of recursing without end */
static bool val_eq_d(struct val a, struct val b, int depth)
{
    if (depth > 64) return false;
    if (is_num(a) && is_num(b)) {
        if (a.t != V_FLOAT && b.t != V_FLOAT) {
            int64_t x = a.t == V_INT ? a.u.i : a.u.b, y = b.t == V_INT ? b.u.i : b.u.b;
            return x == y;
        }
        return num_of(a) == num_of(b);
    }
    if (a.t != b.t) return false;
    switch (a.t) {
    case V_UNDEF:
    case V_NONE:
        return true;
    case V_STR:
        return a.n == b.n && (a.n == 0 || memcmp(a.u.s, b.u.s, a.n) == 0);
    case V_LIST: /* a tuple never equals a list, as in Python */
        if (a.u.l->n != b.u.l->n || a.u.l->tuple != b.u.l->tuple) return false;
        for (size_t i = 0; i < a.u.l->n; i++)
            if (!val_eq_d(a.u.l->v[i], b.u.l->v[i], depth + 1)) return false;
        return true;
    case V_DICT:
        if (a.u.d->n != b.u.d->n) return false;
        for (size_t i = 0; i < a.u.d->n; i++) {
            long j = dict_find(b.u.d, a.u.d->k[i]);
            if (j < 0 || !val_eq_d(a.u.d->v[i], b.u.d->v[j], depth + 1)) return false;
        }
        return true;
    case V_MACRO:
        return a.u.m == b.u.m;
    case V_FUNC:
        return a.u.fn == b.u.fn;
    default:
        return false;
    }
}

static bool val_eq(struct val a, struct val b)
{
    return val_eq_d(a, b, 0);
}

/* ------------------------------------------------------------------- UTF-8 */

static size_t u8_len1(const unsigned char *s, size_t avail)
{
    size_t k = s[0] < 0x80             ? 1
               : (s[0] & 0xe0) == 0xc0 ? 2
               : (s[0] & 0xf0) == 0xe0 ? 3
               : (s[0] & 0xf8) == 0xf0 ? 4
                                       : 1;
    return k <= avail ? k : avail;
}

static size_t u8_count(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i += u8_len1((const unsigned char *)s + i, n - i))
        c++;
    return c;
}

/* byte offset of code point index ci (clamped to n) */
static size_t u8_offset(const char *s, size_t n, size_t ci)
{
    size_t i = 0;
    while (ci-- > 0 && i < n)
        i += u8_len1((const unsigned char *)s + i, n - i);
    return i;
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* ------------------------------------------------------------------- lexer */

enum tk { T_EOF, T_TEXT, T_VBEGIN, T_VEND, T_BBEGIN, T_BEND, T_NAME, T_STR, T_INT, T_FLOAT, T_OP };

#define OP2(a, b) ((uint16_t)((a) << 8 | (b)))

struct tok {
    uint8_t k;
    uint16_t op;
    int line;
    const char *s; /* T_TEXT/T_NAME/T_STR: arena copy, NUL-terminated */
    size_t n;
    int64_t i;
    double f;
};

struct lexer {
    struct arena *a;
    struct jerr *e;
    const char *s;
    size_t n, p;
    int line;
    struct tok *t;
    size_t nt, cap;
};

static struct tok *lx_push(struct lexer *L, uint8_t k)
{
    if (L->nt == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 256;
        struct tok *nt = ar_alloc(L->a, cap * sizeof *nt);
        if (L->nt) memcpy(nt, L->t, L->nt * sizeof *nt);
        L->t = nt;
        L->cap = cap;
    }
    struct tok *t = &L->t[L->nt++];
    memset(t, 0, sizeof *t);
    t->k = k;
    t->line = L->line;
    return t;
}

static void lx_count_lines(struct lexer *L, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        if (L->s[i] == '\n') L->line++;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

static void put_utf8(char *o, size_t *k, uint32_t cp)
{
    if (cp < 0x80) {
        o[(*k)++] = (char)cp;
    } else if (cp < 0x800) {
        o[(*k)++] = (char)(0xc0 | cp >> 6);
        o[(*k)++] = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        o[(*k)++] = (char)(0xe0 | cp >> 12);
        o[(*k)++] = (char)(0x80 | (cp >> 6 & 0x3f));
        o[(*k)++] = (char)(0x80 | (cp & 0x3f));
    } else {
        o[(*k)++] = (char)(0xf0 | cp >> 18);
        o[(*k)++] = (char)(0x80 | (cp >> 12 & 0x3f));
        o[(*k)++] = (char)(0x80 | (cp >> 6 & 0x3f));
        o[(*k)++] = (char)(0x80 | (cp & 0x3f));
    }
}

/* A quoted string literal at L->p, with Python's escapes (as Jinja decodes
 * them with "unicode-escape"). */
static void lx_string(struct lexer *L)
{
    char q = L->s[L->p];
    size_t i = L->p + 1, start = L->p;
    char *o = ar_alloc(L->a, L->n - L->p + 1); /* decoded is never longer */
    size_t k = 0;
    for (;;) {
        if (i >= L->n) fail(L->e, JINJA_ESYNTAX, "line %d: unterminated string", L->line);
        char c = L->s[i];
        if (c == q) break;
        if (c != '\\') {
            o[k++] = c;
            i++;
            continue;
        }
        if (i + 1 >= L->n) fail(L->e, JINJA_ESYNTAX, "line %d: unterminated string", L->line);
        char d = L->s[i + 1];
        i += 2;
        int nh = 0;
        switch (d) {
        case 'n':
            o[k++] = '\n';
            break;
        case 't':
            o[k++] = '\t';
            break;
        case 'r':
            o[k++] = '\r';
            break;
        case 'b':
            o[k++] = '\b';
            break;
        case 'f':
            o[k++] = '\f';
            break;
        case 'v':
            o[k++] = '\v';
            break;
        case 'a':
            o[k++] = '\a';
            break;
        case '0':
            o[k++] = 0;
            break;
        case '\\':
        case '\'':
        case '"':
            o[k++] = d;
            break;
        case '\n':
            break; /* line continuation */
        case 'x':
            nh = 2;
            break;
        case 'u':
            nh = 4;
            break;
        case 'U':
            nh = 8;
            break;
        default:
            o[k++] = '\\';
            o[k++] = d;
        }
        if (nh) {
            uint32_t cp = 0;
            for (int j = 0; j < nh; j++) {
                int h = i < L->n ? hexval(L->s[i]) : -1;
                if (h < 0) fail(L->e, JINJA_ESYNTAX, "line %d: bad \\x/\\u escape", L->line);
                cp = cp << 4 | (uint32_t)h;
                i++;
            }
            if (cp > 0x10ffff) fail(L->e, JINJA_ESYNTAX, "line %d: bad \\U escape", L->line);
            put_utf8(o, &k, cp); /* at most 4 bytes from >= 4 source bytes */
        }
    }
    o[k] = 0;
    struct tok *t = lx_push(L, T_STR);
    t->s = o;
    t->n = k;
    lx_count_lines(L, start, i);
    L->p = i + 1;
}

static bool is_name0(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Tokens of one {{ }} or {% %} tag, from L->p up to and including its end
 * delimiter; returns the whitespace-control sign of the end ('-', '+', 0). */
static int lx_tag(struct lexer *L, bool block)
{
    int depth = 0;
    const char close = block ? '%' : '}';
    for (;;) {
        while (L->p < L->n && is_ws(L->s[L->p])) {
            if (L->s[L->p] == '\n') L->line++;
            L->p++;
        }
        if (L->p >= L->n)
            fail(L->e, JINJA_ESYNTAX, "line %d: unexpected end of template inside a tag", L->line);
        const char *s = L->s + L->p;
        size_t left = L->n - L->p;
        if (depth == 0) {
            int sign = 0;
            size_t skip = 0;
            if ((s[0] == '-' || s[0] == '+') && left >= 3 && s[1] == close && s[2] == '}')
                sign = s[0], skip = 3;
            else if (left >= 2 && s[0] == close && s[1] == '}')
                skip = 2;
            if (skip) {
                lx_push(L, block ? T_BEND : T_VEND);
                L->p += skip;
                return sign;
            }
        }
        char c = s[0];
        if (is_name0(c)) {
            size_t k = 1;
            while (k < left && (is_name0(s[k]) || is_digit(s[k])))
                k++;
            struct tok *t = lx_push(L, T_NAME);
            t->s = ar_strdup(L->a, s, k);
            t->n = k;
            L->p += k;
        } else if (is_digit(c)) {
            size_t k = 0;
            char buf[64];
            size_t bk = 0;
            bool fl = false;
            while (k < left && (is_digit(s[k]) || s[k] == '_')) {
                if (s[k] != '_' && bk < sizeof buf - 1) buf[bk++] = s[k];
                k++;
            }
            /* no fraction right after a '.': x.0.1 is two item accesses, as in Jinja */
            bool after_dot = L->nt > 0 && L->t[L->nt - 1].k == T_OP && L->t[L->nt - 1].op == '.';
            if (!after_dot && k + 1 < left && s[k] == '.' && is_digit(s[k + 1])) {
                fl = true;
                buf[bk++] = s[k++];
                while (k < left && (is_digit(s[k]) || s[k] == '_')) {
                    if (s[k] != '_' && bk < sizeof buf - 1) buf[bk++] = s[k];
                    k++;
                }
            }
            if (!after_dot && k < left && (s[k] == 'e' || s[k] == 'E')) {
                size_t j = k + 1;
                if (j < left && (s[j] == '+' || s[j] == '-')) j++;
                if (j < left && is_digit(s[j])) {
                    fl = true;
                    while (k < j && bk < sizeof buf - 1)
                        buf[bk++] = s[k++];
                    while (k < left && is_digit(s[k])) {
                        if (bk < sizeof buf - 1) buf[bk++] = s[k];
                        k++;
                    }
                }
            }
            buf[bk] = 0;
            if (bk >= sizeof buf - 1)
                fail(L->e, JINJA_ESYNTAX, "line %d: number literal too long", L->line);
            struct tok *t = lx_push(L, fl ? T_FLOAT : T_INT);
            if (fl) {
                t->f = strtod(buf, NULL);
            } else {
                errno = 0;
                unsigned long long v = strtoull(buf, NULL, 10);
                if (errno || v > INT64_MAX)
                    fail(L->e, JINJA_ESYNTAX, "line %d: integer literal too large", L->line);
                t->i = (int64_t)v;
            }
            L->p += k;
        } else if (c == '\'' || c == '"') {
            lx_string(L);
        } else {
            static const char *const two[] = {"//", "**", "==", "!=", "<=", ">="};
            uint16_t op = 0;
            for (size_t j = 0; j < sizeof two / sizeof two[0]; j++)
                if (left >= 2 && s[0] == two[j][0] && s[1] == two[j][1])
                    op = OP2(two[j][0], two[j][1]);
            if (!op) {
                if (!strchr("+-*/%~<>=.,:|()[]{}", c) || c == 0)
                    fail(L->e, JINJA_ESYNTAX, "line %d: unexpected character '%c'", L->line,
                         c >= 32 && c < 127 ? c : '?');
                op = (uint16_t)c;
                if (c == '(' || c == '[' || c == '{') depth++;
                if ((c == ')' || c == ']' || c == '}') && depth > 0) depth--;
            }
            struct tok *t = lx_push(L, T_OP);
            t->op = op;
            L->p += op > 255 ? 2 : 1;
        }
    }
}

static void lx_text(struct lexer *L, size_t from, size_t to)
{
    if (to <= from) return;
    struct tok *t = lx_push(L, T_TEXT);
    t->s = ar_strdup(L->a, L->s + from, to - from);
    t->n = to - from;
}

/* End of the text from..tag once the tag's whitespace control is applied:
 * "-" strips all whitespace before it; else, for blocks and comments
 * (lstrip_blocks, unless "+"), spaces and tabs between the line start and
 * the tag go. */
static size_t lx_text_end(const struct lexer *L, size_t from, size_t tag, char sign, bool block,
                          bool line_starting)
{
    size_t tend = tag;
    if (sign == '-') {
        while (tend > from && is_ws(L->s[tend - 1]))
            tend--;
    } else if (sign != '+' && block) {
        size_t lpos = tend;
        while (lpos > from && L->s[lpos - 1] != '\n')
            lpos--;
        if (lpos > from || line_starting) {
            bool allws = lpos < tend;
            for (size_t i = lpos; i < tend; i++)
                if (!is_ws(L->s[i])) allws = false;
            if (allws) tend = lpos;
        }
    }
    return tend;
}

static bool lx_word_at(const struct lexer *L, size_t *p, const char *w)
{
    size_t i = *p, k = strlen(w);
    while (i < L->n && is_ws(L->s[i]))
        i++;
    if (L->n - i < k || memcmp(L->s + i, w, k) != 0) return false;
    i += k;
    if (i < L->n && (is_name0(L->s[i]) || is_digit(L->s[i]))) return false;
    while (i < L->n && is_ws(L->s[i]))
        i++;
    *p = i;
    return true;
}

/* "-%}", "+%}" or "%}" at *p: the sign ('-', '+', 0), or -1 if none */
static int lx_block_end_at(const struct lexer *L, size_t *p)
{
    size_t i = *p;
    int sign = 0;
    if (i < L->n && (L->s[i] == '-' || L->s[i] == '+')) sign = L->s[i++];
    if (L->n - i < 2 || L->s[i] != '%' || L->s[i + 1] != '}') return -1;
    *p = i + 2;
    return sign;
}

/* After "{%" (and its sign): "raw %}" ... "{% endraw %}" emitted as text. */
static bool lx_raw(struct lexer *L, int *esign)
{
    size_t p = L->p;
    if (!lx_word_at(L, &p, "raw")) return false;
    int bsign = lx_block_end_at(L, &p);
    if (bsign < 0) return false;
    if (bsign == '-')
        while (p < L->n && is_ws(L->s[p]))
            p++;
    for (size_t q = p; q + 1 < L->n; q++) {
        if (L->s[q] != '{' || L->s[q + 1] != '%') continue;
        size_t e = q + 2;
        char sign = e < L->n && (L->s[e] == '-' || L->s[e] == '+') ? L->s[e] : 0;
        if (sign) e++;
        if (!lx_word_at(L, &e, "endraw")) continue;
        int es = lx_block_end_at(L, &e);
        if (es < 0) continue;
        lx_text(L, p, lx_text_end(L, p, q, sign, true, false));
        lx_count_lines(L, L->p, e);
        L->p = e;
        *esign = es;
        return true;
    }
    fail(L->e, JINJA_ESYNTAX, "line %d: {%% raw %%} without {%% endraw %%}", L->line);
}

/* Whole-template lexing with Jinja's whitespace rules (trim_blocks,
 * lstrip_blocks, "-" and "+" markers). */
static void lx_run(struct lexer *L)
{
    bool line_starting = true;
    for (;;) {
        size_t q = L->p;
        const char *tag = NULL;
        while (q + 1 < L->n) {
            if (L->s[q] == '{' &&
                (L->s[q + 1] == '{' || L->s[q + 1] == '%' || L->s[q + 1] == '#')) {
                tag = L->s + q;
                break;
            }
            q++;
        }
        if (!tag) {
            lx_text(L, L->p, L->n);
            lx_count_lines(L, L->p, L->n);
            L->p = L->n;
            break;
        }
        char kind = tag[1];
        char sign = q + 2 < L->n && (L->s[q + 2] == '-' || L->s[q + 2] == '+') ? L->s[q + 2] : 0;
        lx_text(L, L->p, lx_text_end(L, L->p, q, sign, kind != '{', line_starting));
        lx_count_lines(L, L->p, q);
        L->p = q + 2 + (sign ? 1 : 0);
        int esign;
        if (kind == '#') {
            size_t r = L->p;
            while (r + 1 < L->n && !(L->s[r] == '#' && L->s[r + 1] == '}'))
                r++;
            if (r + 1 >= L->n) fail(L->e, JINJA_ESYNTAX, "line %d: unclosed comment", L->line);
            esign = r > L->p && (L->s[r - 1] == '-' || L->s[r - 1] == '+') ? L->s[r - 1] : 0;
            lx_count_lines(L, L->p, r);
            L->p = r + 2;
        } else if (kind == '%' && lx_raw(L, &esign)) {
            /* {% raw %}...{% endraw %}: text as is */
        } else {
            lx_push(L, kind == '%' ? T_BBEGIN : T_VBEGIN);
            esign = lx_tag(L, kind == '%');
        }
        if (esign == '-') {
            while (L->p < L->n && is_ws(L->s[L->p])) {
                if (L->s[L->p] == '\n') L->line++;
                L->p++;
            }
        } else if (esign != '+' && kind != '{' && L->p < L->n && L->s[L->p] == '\n') {
            L->p++; /* trim_blocks */
            L->line++;
        }
        line_starting = L->p > 0 && L->s[L->p - 1] == '\n';
    }
    lx_push(L, T_EOF);
}

/* ------------------------------------------------------------------ parser */

enum nk {
    N_BODY,
    N_TEXT,
    N_OUT,
    N_IF,
    N_FOR,
    N_SET,
    N_SETATTR,
    N_SETBLOCK,
    N_MACRO,
    N_BREAK,
    N_CONTINUE,
    N_LIT,
    N_NAME,
    N_LIST,
    N_TUPLE,
    N_DICT,
    N_ATTR,
    N_ITEM,
    N_SLICE,
    N_CALL,
    N_FILTER,
    N_TEST,
    N_BIN,
    N_NEG,
    N_POS,
    N_NOT,
    N_AND,
    N_OR,
    N_COND,
    N_CMP,
};

enum { OP_IN = 1000, OP_NOTIN = 1001 };

struct node {
    uint8_t k;
    bool neg;
    uint16_t op;
    int line;
    struct node *a, *b, *c, *d;
    struct node **kids;
    const char **names; /* per kid (kwarg names, NULL = positional), targets, params */
    uint16_t *ops;      /* N_CMP: operator per kid */
    size_t nk;
    const char *s, *s2; /* names / text */
    size_t n;
    struct val v;
};

struct parser {
    struct arena *a;
    struct jerr *e;
    struct tok *t;
    size_t p;
    int depth;
};

struct nvec {
    struct node **v;
    const char **names;
    uint16_t *ops;
    size_t n, cap;
};

static void nv_push(struct parser *P, struct nvec *v, struct node *n, const char *name, uint16_t op)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4;
        struct node **nn = ar_alloc(P->a, cap * sizeof *nn);
        const char **nm = ar_alloc(P->a, cap * sizeof *nm);
        uint16_t *no = ar_alloc(P->a, cap * sizeof *no);
        if (v->n) {
            memcpy(nn, v->v, v->n * sizeof *nn);
            memcpy(nm, v->names, v->n * sizeof *nm);
            memcpy(no, v->ops, v->n * sizeof *no);
        }
        v->v = nn;
        v->names = nm;
        v->ops = no;
        v->cap = cap;
    }
    v->v[v->n] = n;
    v->names[v->n] = name;
    v->ops[v->n++] = op;
}

static void nv_into(struct node *n, const struct nvec *v)
{
    n->kids = v->v;
    n->names = v->names;
    n->ops = v->ops;
    n->nk = v->n;
}

static struct tok *cur(struct parser *P)
{
    return &P->t[P->p];
}

static struct node *mk(struct parser *P, uint8_t k)
{
    struct node *n = ar_zalloc(P->a, sizeof *n);
    n->k = k;
    n->line = cur(P)->line;
    return n;
}

static bool is_op(struct parser *P, uint16_t op)
{
    return cur(P)->k == T_OP && cur(P)->op == op;
}

static bool is_name(struct parser *P, const char *s)
{
    return cur(P)->k == T_NAME && strcmp(cur(P)->s, s) == 0;
}

static bool skip_op(struct parser *P, uint16_t op)
{
    if (!is_op(P, op)) return false;
    P->p++;
    return true;
}

static bool skip_name(struct parser *P, const char *s)
{
    if (!is_name(P, s)) return false;
    P->p++;
    return true;
}

static const char *tok_desc(const struct tok *t, char *buf, size_t n)
{
    switch (t->k) {
    case T_EOF:
        return "end of template";
    case T_TEXT:
        return "template text";
    case T_VBEGIN:
        return "'{{'";
    case T_VEND:
        return "'}}'";
    case T_BBEGIN:
        return "'{%'";
    case T_BEND:
        return "'%}'";
    case T_NAME:
        snprintf(buf, n, "'%.40s'", t->s);
        return buf;
    case T_STR:
        return "a string";
    case T_INT:
    case T_FLOAT:
        return "a number";
    default:
        if (t->op > 255)
            snprintf(buf, n, "'%c%c'", t->op >> 8, t->op & 0xff);
        else
            snprintf(buf, n, "'%c'", t->op);
        return buf;
    }
}

static _Noreturn void unexpected(struct parser *P, const char *want)
{
    char b[64];
    fail(P->e, JINJA_ESYNTAX, "line %d: expected %s, got %s", cur(P)->line, want,
         tok_desc(cur(P), b, sizeof b));
}

static void expect_op(struct parser *P, uint16_t op, const char *want)
{
    if (!skip_op(P, op)) unexpected(P, want);
}

static const char *expect_name(struct parser *P)
{
    if (cur(P)->k != T_NAME) unexpected(P, "a name");
    return P->t[P->p++].s;
}

static void enter(struct parser *P)
{
    if (++P->depth > JINJA_MAX_NESTING)
        fail(P->e, JINJA_ESYNTAX, "line %d: nesting deeper than %d", cur(P)->line,
             JINJA_MAX_NESTING);
}

static struct node *p_expr(struct parser *P, bool condexpr);
static struct node *p_tuple(struct parser *P, bool condexpr, bool explicit_parens);
static struct node *p_unary(struct parser *P, bool with_filter);
static struct node *p_body(struct parser *P, const char *const *ends);

static struct node *lit(struct parser *P, struct val v)
{
    struct node *n = mk(P, N_LIT);
    n->v = v;
    return n;
}

/* args of a call/filter/test after '(' */
static void p_args(struct parser *P, struct node *n)
{
    struct nvec v = {0};
    while (!is_op(P, ')')) {
        if (v.n) {
            expect_op(P, ',', "',' or ')'");
            if (is_op(P, ')')) break;
        }
        const char *kw = NULL;
        if (cur(P)->k == T_NAME && P->t[P->p + 1].k == T_OP && P->t[P->p + 1].op == '=') {
            kw = cur(P)->s;
            P->p += 2;
        }
        nv_push(P, &v, p_expr(P, true), kw, 0);
    }
    P->p++;
    nv_into(n, &v);
}

static struct node *p_primary(struct parser *P)
{
    struct tok *t = cur(P);
    struct node *n;
    enter(P);
    if (t->k == T_NAME) {
        const char *s = t->s;
        P->p++;
        if (!strcmp(s, "true") || !strcmp(s, "True"))
            n = lit(P, vbool(true));
        else if (!strcmp(s, "false") || !strcmp(s, "False"))
            n = lit(P, vbool(false));
        else if (!strcmp(s, "none") || !strcmp(s, "None"))
            n = lit(P, NONE);
        else {
            n = mk(P, N_NAME);
            n->s = s;
        }
    } else if (t->k == T_STR) {
        /* adjacent literals concatenate */
        size_t len = 0, q = P->p;
        while (P->t[q].k == T_STR)
            len += P->t[q++].n;
        char *buf = ar_alloc(P->a, len + 1);
        size_t k = 0;
        while (cur(P)->k == T_STR) {
            memcpy(buf + k, cur(P)->s, cur(P)->n);
            k += cur(P)->n;
            P->p++;
        }
        n = lit(P, vstr(buf, k));
    } else if (t->k == T_INT) {
        P->p++;
        n = lit(P, vint(t->i));
    } else if (t->k == T_FLOAT) {
        P->p++;
        n = lit(P, vfloat(t->f));
    } else if (skip_op(P, '(')) {
        n = p_tuple(P, true, true);
        expect_op(P, ')', "')'");
    } else if (skip_op(P, '[')) {
        n = mk(P, N_LIST);
        struct nvec v = {0};
        while (!is_op(P, ']')) {
            if (v.n) {
                expect_op(P, ',', "',' or ']'");
                if (is_op(P, ']')) break;
            }
            nv_push(P, &v, p_expr(P, true), NULL, 0);
        }
        P->p++;
        nv_into(n, &v);
    } else if (skip_op(P, '{')) {
        n = mk(P, N_DICT);
        struct nvec v = {0};
        while (!is_op(P, '}')) {
            if (v.n) {
                expect_op(P, ',', "',' or '}'");
                if (is_op(P, '}')) break;
            }
            nv_push(P, &v, p_expr(P, true), NULL, 0);
            expect_op(P, ':', "':'");
            nv_push(P, &v, p_expr(P, true), NULL, 0);
        }
        P->p++;
        nv_into(n, &v);
    } else {
        unexpected(P, "an expression");
    }
    P->depth--;
    return n;
}

static struct node *p_subscript_part(struct parser *P)
{
    if (is_op(P, ':') || is_op(P, ']') || is_op(P, ',')) return NULL;
    return p_expr(P, true);
}

static struct node *p_postfix(struct parser *P, struct node *n)
{
    for (;;) {
        if (skip_op(P, '.')) {
            struct node *a = mk(P, N_ATTR);
            a->a = n;
            if (cur(P)->k == T_INT) {
                a->k = N_ITEM;
                a->b = lit(P, vint(cur(P)->i));
                P->p++;
            } else {
                a->s = expect_name(P);
            }
            n = a;
        } else if (skip_op(P, '[')) {
            enter(P);
            struct node *a = mk(P, N_ITEM);
            a->a = n;
            struct node *x = p_subscript_part(P);
            if (skip_op(P, ':')) {
                a->k = N_SLICE;
                a->b = x;
                a->c = p_subscript_part(P);
                if (skip_op(P, ':')) a->d = p_subscript_part(P);
            } else {
                if (!x) unexpected(P, "an index");
                a->b = x;
            }
            expect_op(P, ']', "']'");
            P->depth--;
            n = a;
        } else if (skip_op(P, '(')) {
            enter(P);
            struct node *c = mk(P, N_CALL);
            c->a = n;
            p_args(P, c);
            P->depth--;
            n = c;
        } else {
            return n;
        }
    }
}

static const char *p_dotted_name(struct parser *P)
{
    const char *s = expect_name(P);
    return s; /* dotted filter names are not supported (no extensions define them) */
}

static struct node *p_filter_expr(struct parser *P, struct node *n)
{
    for (;;) {
        if (skip_op(P, '|')) {
            struct node *f = mk(P, N_FILTER);
            f->a = n;
            f->s = p_dotted_name(P);
            if (skip_op(P, '(')) p_args(P, f);
            n = f;
        } else if (skip_name(P, "is")) {
            struct node *t = mk(P, N_TEST);
            t->a = n;
            t->neg = skip_name(P, "not");
            t->s = p_dotted_name(P);
            struct tok *c = cur(P);
            if (skip_op(P, '(')) {
                p_args(P, t);
            } else if ((c->k == T_NAME || c->k == T_STR || c->k == T_INT || c->k == T_FLOAT ||
                        (c->k == T_OP && (c->op == '(' || c->op == '[' || c->op == '{'))) &&
                       !is_name(P, "else") && !is_name(P, "or") && !is_name(P, "and")) {
                struct nvec v = {0};
                struct node *arg = p_postfix(P, p_primary(P));
                nv_push(P, &v, arg, NULL, 0);
                nv_into(t, &v);
            }
            n = t;
        } else if (skip_op(P, '(')) {
            struct node *c = mk(P, N_CALL);
            c->a = n;
            p_args(P, c);
            n = c;
        } else {
            return n;
        }
    }
}

static struct node *p_unary(struct parser *P, bool with_filter)
{
    struct node *n;
    enter(P);
    if (skip_op(P, '-')) {
        n = mk(P, N_NEG);
        n->a = p_unary(P, false);
    } else if (skip_op(P, '+')) {
        n = mk(P, N_POS);
        n->a = p_unary(P, false);
    } else {
        n = p_primary(P);
    }
    n = p_postfix(P, n);
    if (with_filter) n = p_filter_expr(P, n);
    P->depth--;
    return n;
}

static struct node *bin(struct parser *P, uint16_t op, struct node *a, struct node *b)
{
    struct node *n = mk(P, N_BIN);
    n->op = op;
    n->a = a;
    n->b = b;
    return n;
}

static struct node *p_pow(struct parser *P)
{
    struct node *n = p_unary(P, true);
    while (skip_op(P, OP2('*', '*')))
        n = bin(P, OP2('*', '*'), n, p_unary(P, true));
    return n;
}

static struct node *p_math2(struct parser *P)
{
    struct node *n = p_pow(P);
    for (;;) {
        uint16_t op = cur(P)->k == T_OP ? cur(P)->op : 0;
        if (op != '*' && op != '/' && op != OP2('/', '/') && op != '%') return n;
        P->p++;
        n = bin(P, op, n, p_pow(P));
    }
}

static struct node *p_concat(struct parser *P)
{
    struct node *n = p_math2(P);
    while (skip_op(P, '~'))
        n = bin(P, '~', n, p_math2(P));
    return n;
}

static struct node *p_math1(struct parser *P)
{
    struct node *n = p_concat(P);
    for (;;) {
        uint16_t op = cur(P)->k == T_OP ? cur(P)->op : 0;
        if (op != '+' && op != '-') return n;
        P->p++;
        n = bin(P, op, n, p_concat(P));
    }
}

static struct node *p_compare(struct parser *P)
{
    struct node *first = p_math1(P);
    struct nvec v = {0};
    for (;;) {
        uint16_t op = cur(P)->k == T_OP ? cur(P)->op : 0;
        if (op == OP2('=', '=') || op == OP2('!', '=') || op == '<' || op == '>' ||
            op == OP2('<', '=') || op == OP2('>', '=')) {
            P->p++;
        } else if (skip_name(P, "in")) {
            op = OP_IN;
        } else if (is_name(P, "not") && P->t[P->p + 1].k == T_NAME &&
                   !strcmp(P->t[P->p + 1].s, "in")) {
            P->p += 2;
            op = OP_NOTIN;
        } else {
            break;
        }
        nv_push(P, &v, p_math1(P), NULL, op);
    }
    if (!v.n) return first;
    struct node *n = mk(P, N_CMP);
    n->a = first;
    nv_into(n, &v);
    return n;
}

static struct node *p_not(struct parser *P)
{
    if (skip_name(P, "not")) {
        enter(P);
        struct node *n = mk(P, N_NOT);
        n->a = p_not(P);
        P->depth--;
        return n;
    }
    return p_compare(P);
}

static struct node *p_and(struct parser *P)
{
    struct node *n = p_not(P);
    while (skip_name(P, "and")) {
        struct node *x = mk(P, N_AND);
        x->a = n;
        x->b = p_not(P);
        n = x;
    }
    return n;
}

static struct node *p_or(struct parser *P)
{
    struct node *n = p_and(P);
    while (skip_name(P, "or")) {
        struct node *x = mk(P, N_OR);
        x->a = n;
        x->b = p_and(P);
        n = x;
    }
    return n;
}

static struct node *p_expr(struct parser *P, bool condexpr)
{
    enter(P);
    struct node *n = p_or(P);
    while (condexpr && skip_name(P, "if")) {
        struct node *c = mk(P, N_COND);
        c->b = n;
        c->a = p_or(P);
        if (skip_name(P, "else")) c->c = p_expr(P, true);
        n = c;
    }
    P->depth--;
    return n;
}

static bool at_tuple_end(struct parser *P)
{
    struct tok *t = cur(P);
    return t->k == T_VEND || t->k == T_BEND || t->k == T_EOF ||
           (t->k == T_OP && (t->op == ')' || t->op == ']' || t->op == '}' || t->op == '=')) ||
           is_name(P, "if") || is_name(P, "recursive");
}

/* expression or bare tuple "a, b" */
static struct node *p_tuple(struct parser *P, bool condexpr, bool explicit_parens)
{
    struct nvec v = {0};
    bool comma = false;
    for (;;) {
        if (v.n) {
            if (!skip_op(P, ',')) break;
            comma = true;
        }
        if (at_tuple_end(P)) break;
        nv_push(P, &v, p_expr(P, condexpr), NULL, 0);
    }
    if (!comma && v.n == 1) return v.v[0];
    if (!v.n && !explicit_parens) unexpected(P, "an expression");
    struct node *n = mk(P, N_TUPLE);
    nv_into(n, &v);
    return n;
}

static void expect_bend(struct parser *P)
{
    if (cur(P)->k != T_BEND) unexpected(P, "'%}'");
    P->p++;
}

/* "{% name" at P->p? (without consuming) */
static bool at_tag(struct parser *P, const char *name)
{
    return cur(P)->k == T_BBEGIN && P->t[P->p + 1].k == T_NAME && !strcmp(P->t[P->p + 1].s, name);
}

static void end_tag(struct parser *P, const char *name)
{
    if (!at_tag(P, name)) {
        char want[48];
        snprintf(want, sizeof want, "'{%% %s %%}'", name);
        unexpected(P, want);
    }
    P->p += 2;
    expect_bend(P);
}

static struct node *p_if(struct parser *P)
{
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    struct node *n = mk(P, N_IF);
    n->a = p_tuple(P, true, false);
    expect_bend(P);
    n->b = p_body(P, ends);
    if (at_tag(P, "elif")) {
        P->p += 2;
        enter(P);
        n->c = p_if(P); /* consumes the endif */
        P->depth--;
        return n;
    }
    if (at_tag(P, "else")) {
        static const char *const ends2[] = {"endif", NULL};
        P->p += 2;
        expect_bend(P);
        n->c = p_body(P, ends2);
    }
    end_tag(P, "endif");
    return n;
}

static void p_targets(struct parser *P, struct node *n)
{
    struct nvec v = {0};
    bool paren = skip_op(P, '(');
    do {
        nv_push(P, &v, NULL, expect_name(P), 0);
    } while (skip_op(P, ','));
    if (paren) expect_op(P, ')', "')'");
    nv_into(n, &v);
}

static struct node *p_for(struct parser *P)
{
    static const char *const ends[] = {"else", "endfor", NULL};
    struct node *n = mk(P, N_FOR);
    p_targets(P, n);
    if (!skip_name(P, "in")) unexpected(P, "'in'");
    n->a = p_tuple(P, false, false);
    if (skip_name(P, "if")) n->b = p_expr(P, true);
    if (skip_name(P, "recursive"))
        fail(P->e, JINJA_ESYNTAX, "line %d: recursive loops are not supported", n->line);
    expect_bend(P);
    n->c = p_body(P, ends);
    if (at_tag(P, "else")) {
        static const char *const ends2[] = {"endfor", NULL};
        P->p += 2;
        expect_bend(P);
        n->d = p_body(P, ends2);
    }
    end_tag(P, "endfor");
    return n;
}

static struct node *p_set(struct parser *P)
{
    struct node *n = mk(P, N_SET);
    if (cur(P)->k == T_NAME && P->t[P->p + 1].k == T_OP && P->t[P->p + 1].op == '.') {
        n->k = N_SETATTR;
        n->s = expect_name(P);
        P->p++;
        n->s2 = expect_name(P);
        expect_op(P, '=', "'='");
        n->a = p_tuple(P, true, false);
        expect_bend(P);
        return n;
    }
    p_targets(P, n);
    if (cur(P)->k == T_BEND && n->nk == 1) {
        static const char *const ends[] = {"endset", NULL};
        n->k = N_SETBLOCK;
        n->s = n->names[0];
        P->p++;
        n->a = p_body(P, ends);
        end_tag(P, "endset");
        return n;
    }
    expect_op(P, '=', "'='");
    n->a = p_tuple(P, true, false);
    expect_bend(P);
    return n;
}

static struct node *p_macro(struct parser *P)
{
    static const char *const ends[] = {"endmacro", NULL};
    struct node *n = mk(P, N_MACRO);
    n->s = expect_name(P);
    expect_op(P, '(', "'('");
    struct nvec v = {0};
    while (!is_op(P, ')')) {
        if (v.n) expect_op(P, ',', "',' or ')'");
        const char *name = expect_name(P);
        struct node *def = NULL;
        if (skip_op(P, '=')) def = p_expr(P, true);
        nv_push(P, &v, def, name, 0);
    }
    P->p++;
    nv_into(n, &v);
    expect_bend(P);
    n->a = p_body(P, ends);
    end_tag(P, "endmacro");
    return n;
}

static struct node *p_stmt(struct parser *P)
{
    P->p++; /* {% */
    int line = cur(P)->line;
    const char *kw = expect_name(P);
    struct node *n;
    enter(P);
    if (!strcmp(kw, "if")) {
        n = p_if(P);
    } else if (!strcmp(kw, "for")) {
        n = p_for(P);
    } else if (!strcmp(kw, "set")) {
        n = p_set(P);
    } else if (!strcmp(kw, "macro")) {
        n = p_macro(P);
    } else if (!strcmp(kw, "break") || !strcmp(kw, "continue")) {
        n = mk(P, kw[0] == 'b' ? N_BREAK : N_CONTINUE);
        expect_bend(P);
    } else if (!strcmp(kw, "generation")) {
        /* HF's AssistantTracker marks assistant text; rendering is unchanged */
        static const char *const ends[] = {"endgeneration", NULL};
        expect_bend(P);
        n = p_body(P, ends);
        end_tag(P, "endgeneration");
    } else {
        fail(P->e, JINJA_ESYNTAX, "line %d: unsupported tag '%.40s'", line, kw);
    }
    P->depth--;
    return n;
}

static struct node *p_body(struct parser *P, const char *const *ends)
{
    struct node *body = mk(P, N_BODY);
    struct nvec v = {0};
    enter(P);
    for (;;) {
        struct tok *t = cur(P);
        if (t->k == T_EOF) {
            if (ends) {
                char want[48];
                size_t last = 0;
                while (ends[last + 1])
                    last++;
                snprintf(want, sizeof want, "'{%% %s %%}'", ends[last]);
                unexpected(P, want);
            }
            break;
        }
        if (t->k == T_TEXT) {
            struct node *n = mk(P, N_TEXT);
            n->s = t->s;
            n->n = t->n;
            P->p++;
            nv_push(P, &v, n, NULL, 0);
        } else if (t->k == T_VBEGIN) {
            P->p++;
            struct node *n = mk(P, N_OUT);
            n->a = p_tuple(P, true, false);
            if (cur(P)->k != T_VEND) unexpected(P, "'}}'");
            P->p++;
            nv_push(P, &v, n, NULL, 0);
        } else if (t->k == T_BBEGIN) {
            bool is_end = false;
            for (size_t i = 0; ends && ends[i]; i++)
                if (at_tag(P, ends[i])) is_end = true;
            if (is_end) break;
            nv_push(P, &v, p_stmt(P), NULL, 0);
        } else {
            unexpected(P, "template text or a tag");
        }
    }
    P->depth--;
    nv_into(body, &v);
    return body;
}

struct jinja_tmpl {
    struct arena a;
    struct node *root;
};

int jinja_parse(const char *src, size_t n, struct jinja_tmpl **out, char *err, size_t errn)
{
    *out = NULL;
    if (n > JINJA_MAX_SOURCE) {
        snprintf(err, errn, "template is %zu bytes, over the %u-byte limit", n, JINJA_MAX_SOURCE);
        return JINJA_ESYNTAX;
    }
    struct jerr e;
    struct jinja_tmpl *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errn, "out of memory");
        return JINJA_ELIMIT;
    }
    t->a.limit = (size_t)64 << 20;
    t->a.e = &e;
    if (setjmp(e.jb)) {
        snprintf(err, errn, "%s", e.msg);
        ar_free(&t->a);
        free(t);
        return e.status;
    }
    /* newlines normalised to \n; one trailing newline dropped (keep_trailing_newline=False) */
    char *s = ar_alloc(&t->a, n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (src[i] == '\r') {
            s[k++] = '\n';
            if (i + 1 < n && src[i + 1] == '\n') i++;
        } else {
            s[k++] = src[i];
        }
    }
    if (k && s[k - 1] == '\n') k--;
    s[k] = 0;
    struct lexer L = {.a = &t->a, .e = &e, .s = s, .n = k, .line = 1};
    lx_run(&L);
    struct parser P = {.a = &t->a, .e = &e, .t = L.t};
    t->root = p_body(&P, NULL);
    *out = t;
    return JINJA_OK;
}

void jinja_free(struct jinja_tmpl *t)
{
    if (!t) return;
    ar_free(&t->a);
    free(t);
}

const char *jinja_status_name(int status)
{
    switch (status) {
    case JINJA_OK:
        return "ok";
    case JINJA_ESYNTAX:
        return "syntax";
    case JINJA_ERAISE:
        return "raise";
    case JINJA_ERUNTIME:
        return "runtime";
    case JINJA_ELIMIT:
        return "limit";
    default:
        return "unknown";
    }
}

void jinja_default_limits(struct jinja_limits *l)
{
    l->max_output = (size_t)8 << 20;
    l->max_memory = (size_t)64 << 20;
    l->max_steps = 2000000;
    l->max_depth = 32;
}

/* --------------------------------------------------------------- evaluator */

struct obuf {
    char *p;
    size_t n, cap;
};

struct frame {
    struct frame *parent;
    struct dict *vars;
};

struct macro {
    const struct node *n;
    struct frame *f;
};

struct rt {
    struct arena a;
    struct jerr *e;
    const struct jinja_limits *lim;
    uint64_t steps;
    int depth;
    struct dict *globals;
    int ctl;    /* 1 break, 2 continue pending */
    int vdepth; /* nesting of put_repr / cmp_v over containers */
};

struct args {
    struct val *v;
    const char **kw;
    size_t n;
};

#define RFAIL(r, ...) fail((r)->e, JINJA_ERUNTIME, __VA_ARGS__)

static void step(struct rt *r)
{
    if (++r->steps > r->lim->max_steps)
        fail(r->e, JINJA_ELIMIT, "template evaluation took over %llu steps",
             (unsigned long long)r->lim->max_steps);
}

static void ob_put(struct rt *r, struct obuf *o, const char *s, size_t n)
{
    if (!n) return;
    if (o->n + n > r->lim->max_output)
        fail(r->e, JINJA_ELIMIT, "template output over %zu bytes", r->lim->max_output);
    if (o->n + n > o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 256;
        while (cap < o->n + n)
            cap *= 2;
        char *p = ar_alloc(&r->a, cap);
        if (o->n) memcpy(p, o->p, o->n);
        o->p = p;
        o->cap = cap;
    }
    memcpy(o->p + o->n, s, n);
    o->n += n;
}

static void ob_puts(struct rt *r, struct obuf *o, const char *s)
{
    ob_put(r, o, s, strlen(s));
}

static struct val ob_val(struct obuf *o)
{
    return vstr(o->p ? o->p : "", o->n);
}

static const char *type_name(struct val v)
{
    static const char *const n[] = {"Undefined", "NoneType", "bool", "int",   "float",
                                    "str",       "list",     "dict", "Macro", "function"};
    if (v.t == V_LIST && v.u.l->tuple) return "tuple";
    return n[v.t];
}

static _Noreturn void undefined_err(struct rt *r, struct val v)
{
    if (v.u.s) RFAIL(r, "'%.*s' is undefined", (int)(v.n > 80 ? 80 : v.n), v.u.s);
    RFAIL(r, "undefined value used");
}

/* ---- str() and repr() as Python prints them ---- */

static void put_float(struct rt *r, struct obuf *o, double f)
{
    if (isnan(f)) return ob_puts(r, o, "nan");
    if (isinf(f)) return ob_puts(r, o, f < 0 ? "-inf" : "inf");
    char b[64];
    size_t k = pyj_format_float(f, b, sizeof b);
    ob_put(r, o, b, k);
}

static void put_repr(struct rt *r, struct obuf *o, struct val v);

static void put_str(struct rt *r, struct obuf *o, struct val v)
{
    char b[32];
    switch (v.t) {
    case V_UNDEF:
        return;
    case V_NONE:
        return ob_puts(r, o, "None");
    case V_BOOL:
        return ob_puts(r, o, v.u.b ? "True" : "False");
    case V_INT:
        snprintf(b, sizeof b, "%lld", (long long)v.u.i);
        return ob_puts(r, o, b);
    case V_FLOAT:
        return put_float(r, o, v.u.f);
    case V_STR:
        return ob_put(r, o, v.u.s, v.n);
    default:
        return put_repr(r, o, v);
    }
}

static void put_str_repr(struct rt *r, struct obuf *o, const char *s, size_t n)
{
    bool sq = memchr(s, '\'', n) != NULL, dq = memchr(s, '"', n) != NULL;
    char q = sq && !dq ? '"' : '\'';
    ob_put(r, o, &q, 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char b[8];
        if (c == '\\' || c == (unsigned char)q) {
            b[0] = '\\';
            b[1] = (char)c;
            ob_put(r, o, b, 2);
        } else if (c == '\n') {
            ob_puts(r, o, "\\n");
        } else if (c == '\r') {
            ob_puts(r, o, "\\r");
        } else if (c == '\t') {
            ob_puts(r, o, "\\t");
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(b, sizeof b, "\\x%02x", c);
            ob_puts(r, o, b);
        } else {
            ob_put(r, o, s + i, 1);
        }
    }
    ob_put(r, o, &q, 1);
}

static void put_repr_1(struct rt *r, struct obuf *o, struct val v)
{
    switch (v.t) {
    case V_UNDEF:
        return ob_puts(r, o, "Undefined");
    case V_STR:
        return put_str_repr(r, o, v.u.s, v.n);
    case V_LIST: {
        bool t = v.u.l->tuple;
        ob_puts(r, o, t ? "(" : "[");
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i) ob_puts(r, o, ", ");
            put_repr(r, o, v.u.l->v[i]);
        }
        if (t && v.u.l->n == 1) ob_puts(r, o, ",");
        return ob_puts(r, o, t ? ")" : "]");
    }
    case V_DICT:
        if (v.u.d->ns) {
            ob_puts(r, o, "<Namespace {");
        } else {
            ob_puts(r, o, "{");
        }
        for (size_t i = 0; i < v.u.d->n; i++) {
            if (i) ob_puts(r, o, ", ");
            put_repr(r, o, v.u.d->k[i]);
            ob_puts(r, o, ": ");
            put_repr(r, o, v.u.d->v[i]);
        }
        return ob_puts(r, o, v.u.d->ns ? "}>" : "}");
    case V_MACRO:
        return ob_puts(r, o, "<Macro>");
    case V_FUNC:
        return ob_puts(r, o, "<function>");
    default:
        return put_str(r, o, v);
    }
}

static void put_repr(struct rt *r, struct obuf *o, struct val v)
{
    step(r);
    if (++r->vdepth > 64) RFAIL(r, "value nested too deeply to print");
    put_repr_1(r, o, v);
    r->vdepth--;
}

static struct val to_str(struct rt *r, struct val v)
{
    if (v.t == V_STR) return v;
    struct obuf o = {0};
    put_str(r, &o, v);
    return ob_val(&o);
}

/* ---- tojson: HF's json.dumps(x, ensure_ascii=False, indent=indent) ---- */

static void json_str(struct rt *r, struct obuf *o, const char *s, size_t n)
{
    ob_put(r, o, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char b[8];
        if (c == '"')
            esc = "\\\"";
        else if (c == '\\')
            esc = "\\\\";
        else if (c == '\n')
            esc = "\\n";
        else if (c == '\r')
            esc = "\\r";
        else if (c == '\t')
            esc = "\\t";
        else if (c == '\b')
            esc = "\\b";
        else if (c == '\f')
            esc = "\\f";
        else if (c < 0x20) {
            snprintf(b, sizeof b, "\\u%04x", c);
            esc = b;
        }
        if (!esc) {
            run++;
            continue;
        }
        ob_put(r, o, s + i - run, run);
        run = 0;
        ob_puts(r, o, esc);
    }
    ob_put(r, o, s + n - run, run);
    ob_put(r, o, "\"", 1);
}

static void json_nl(struct rt *r, struct obuf *o, int indent, int level)
{
    ob_put(r, o, "\n", 1);
    for (int i = 0; i < indent * level; i++)
        ob_put(r, o, " ", 1);
}

/* json.dumps options: indent (<0: one line), sort_keys, separators (item, key) */
struct jopts {
    int indent;
    bool sort;
    const char *isep, *ksep;
    size_t isep_n, ksep_n;
};

static void json_val(struct rt *r, struct obuf *o, struct val v, const struct jopts *jo, int level)
{
    step(r);
    if (level > 64) RFAIL(r, "tojson: value nested too deeply");
    switch (v.t) {
    case V_NONE:
        return ob_puts(r, o, "null");
    case V_BOOL:
        return ob_puts(r, o, v.u.b ? "true" : "false");
    case V_INT:
        return put_str(r, o, v);
    case V_FLOAT: {
        char b[64];
        size_t k = pyj_format_float(v.u.f, b, sizeof b);
        return ob_put(r, o, b, k);
    }
    case V_STR:
        return json_str(r, o, v.u.s, v.n);
    case V_LIST: {
        struct list *l = v.u.l;
        if (!l->n) return ob_puts(r, o, "[]");
        ob_puts(r, o, "[");
        for (size_t i = 0; i < l->n; i++) {
            if (i) ob_put(r, o, jo->isep, jo->isep_n);
            if (jo->indent >= 0) json_nl(r, o, jo->indent, level + 1);
            json_val(r, o, l->v[i], jo, level + 1);
        }
        if (jo->indent >= 0) json_nl(r, o, jo->indent, level);
        return ob_puts(r, o, "]");
    }
    case V_DICT: {
        struct dict *d = v.u.d;
        if (!d->n) return ob_puts(r, o, "{}");
        size_t *ord = ar_alloc(&r->a, d->n * sizeof *ord);
        for (size_t i = 0; i < d->n; i++)
            ord[i] = i;
        if (jo->sort) /* insertion sort by key text; keys are few */
            for (size_t i = 1; i < d->n; i++)
                for (size_t j = i; j > 0; j--) {
                    struct val a = to_str(r, d->k[ord[j - 1]]), b = to_str(r, d->k[ord[j]]);
                    size_t m = a.n < b.n ? a.n : b.n;
                    int c = m ? memcmp(a.u.s, b.u.s, m) : 0;
                    if (c < 0 || (c == 0 && a.n <= b.n)) break;
                    size_t t = ord[j];
                    ord[j] = ord[j - 1];
                    ord[j - 1] = t;
                    step(r);
                }
        ob_puts(r, o, "{");
        for (size_t i = 0; i < d->n; i++) {
            struct val k = d->k[ord[i]];
            if (i) ob_put(r, o, jo->isep, jo->isep_n);
            if (jo->indent >= 0) json_nl(r, o, jo->indent, level + 1);
            if (k.t == V_STR) {
                json_str(r, o, k.u.s, k.n);
            } else if (k.t == V_INT || k.t == V_FLOAT || k.t == V_BOOL || k.t == V_NONE) {
                struct obuf t = {0};
                struct jopts one = {-1, false, ", ", ": ", 2, 2};
                json_val(r, &t, k, &one, level + 1);
                json_str(r, o, t.p, t.n);
            } else {
                RFAIL(r, "tojson: keys must be str, int, float, bool or None, not %s",
                      type_name(k));
            }
            ob_put(r, o, jo->ksep, jo->ksep_n);
            json_val(r, o, d->v[ord[i]], jo, level + 1);
        }
        if (jo->indent >= 0) json_nl(r, o, jo->indent, level);
        return ob_puts(r, o, "}");
    }
    default:
        RFAIL(r, "tojson: Object of type %s is not JSON serializable", type_name(v));
    }
}

/* ---- conversions from the JSON variables ---- */

static struct val from_json(struct rt *r, struct json_object *j, int depth)
{
    step(r);
    if (depth > 64) RFAIL(r, "template variables nested too deeply");
    switch (json_object_get_type(j)) {
    case json_type_null:
        return NONE;
    case json_type_boolean:
        return vbool(json_object_get_boolean(j));
    case json_type_int:
        return vint(json_object_get_int64(j));
    case json_type_double:
        return vfloat(json_object_get_double(j));
    case json_type_string:
        return vstr(json_object_get_string(j), (size_t)json_object_get_string_len(j));
    case json_type_array: {
        size_t n = json_object_array_length(j);
        struct list *l = list_new(&r->a, n);
        for (size_t i = 0; i < n; i++)
            list_push(&r->a, l, from_json(r, json_object_array_get_idx(j, i), depth + 1));
        return vlist(l);
    }
    case json_type_object: {
        struct dict *d = dict_new(&r->a);
        json_object_object_foreach(j, k, v)
        {
            dict_set(&r->a, d, vstr(k, strlen(k)), from_json(r, v, depth + 1));
        }
        return vdict(d);
    }
    }
    return NONE;
}

/* ---- helpers over values ---- */

static struct list *iter_list(struct rt *r, struct val v)
{
    switch (v.t) {
    case V_UNDEF:
        return list_new(&r->a, 1);
    case V_LIST:
        return v.u.l;
    case V_DICT: {
        struct list *l = list_new(&r->a, v.u.d->n);
        for (size_t i = 0; i < v.u.d->n; i++)
            list_push(&r->a, l, v.u.d->k[i]);
        return l;
    }
    case V_STR: {
        struct list *l = list_new(&r->a, v.n);
        for (size_t i = 0; i < v.n;) {
            size_t k = u8_len1((const unsigned char *)v.u.s + i, v.n - i);
            list_push(&r->a, l, vstr(v.u.s + i, k));
            i += k;
        }
        return l;
    }
    default:
        RFAIL(r, "'%s' object is not iterable", type_name(v));
    }
}

static int64_t length_of(struct rt *r, struct val v)
{
    switch (v.t) {
    case V_UNDEF:
        return 0;
    case V_STR:
        return (int64_t)u8_count(v.u.s, v.n);
    case V_LIST:
        return (int64_t)v.u.l->n;
    case V_DICT:
        return (int64_t)v.u.d->n;
    default:
        RFAIL(r, "object of type '%s' has no len()", type_name(v));
    }
}

static struct val getattr_v(struct rt *r, struct val o, const char *name)
{
    if (o.t == V_UNDEF) undefined_err(r, o);
    if (o.t == V_DICT) {
        static const char *const methods[] = {"items", "keys", "values", "get", "copy"};
        for (size_t k = 0; k < sizeof methods / sizeof methods[0] && !o.u.d->ns; k++)
            if (!strcmp(name, methods[k])) return (struct val){.t = V_FUNC, .u.fn = FN_BOUND};
        long i = dict_find_s(o.u.d, name, strlen(name));
        if (i >= 0) return o.u.d->v[i];
    }
    return vundef(name);
}

static int64_t norm_index(int64_t i, int64_t n)
{
    return i < 0 ? i + n : i;
}

static struct val getitem_v(struct rt *r, struct val o, struct val k)
{
    if (o.t == V_UNDEF) undefined_err(r, o);
    if (o.t == V_DICT) {
        long i = dict_find(o.u.d, k);
        if (i >= 0) return o.u.d->v[i];
        if (k.t == V_STR) return vundef(ar_strdup(&r->a, k.u.s, k.n));
        return UNDEF;
    }
    if ((o.t == V_LIST || o.t == V_STR) && (k.t == V_INT || k.t == V_BOOL)) {
        int64_t idx = k.t == V_INT ? k.u.i : k.u.b;
        if (o.t == V_LIST) {
            idx = norm_index(idx, (int64_t)o.u.l->n);
            if (idx < 0 || idx >= (int64_t)o.u.l->n) return UNDEF;
            return o.u.l->v[idx];
        }
        int64_t n = (int64_t)u8_count(o.u.s, o.n);
        idx = norm_index(idx, n);
        if (idx < 0 || idx >= n) return UNDEF;
        size_t off = u8_offset(o.u.s, o.n, (size_t)idx);
        return vstr(o.u.s + off, u8_len1((const unsigned char *)o.u.s + off, o.n - off));
    }
    if (k.t == V_STR) return getattr_v(r, o, ar_strdup(&r->a, k.u.s, k.n));
    return UNDEF;
}

static int64_t int_arg(struct rt *r, struct val v, const char *what)
{
    if (v.t == V_INT) return v.u.i;
    if (v.t == V_BOOL) return v.u.b;
    RFAIL(r, "%s must be an integer, not %s", what, type_name(v));
}

static struct val slice_v(struct rt *r, struct val o, struct val a, struct val b, struct val c)
{
    if (o.t == V_UNDEF) undefined_err(r, o);
    if (o.t != V_LIST && o.t != V_STR) RFAIL(r, "'%s' object is not subscriptable", type_name(o));
    int64_t len = o.t == V_LIST ? (int64_t)o.u.l->n : (int64_t)u8_count(o.u.s, o.n);
    int64_t st = c.t == V_NONE || c.t == V_UNDEF ? 1 : int_arg(r, c, "slice step");
    if (st == 0) RFAIL(r, "slice step cannot be zero");
    if (st > len) st = len + 1; /* same items; keeps i += st from overflowing */
    if (st < -len) st = -len - 1;
    int64_t lo, hi;
    if (a.t == V_NONE || a.t == V_UNDEF) {
        lo = st < 0 ? len - 1 : 0;
    } else {
        lo = int_arg(r, a, "slice index");
        if (lo < 0) {
            lo += len;
            if (lo < 0) lo = st < 0 ? -1 : 0;
        } else if (lo >= len) {
            lo = st < 0 ? len - 1 : len;
        }
    }
    if (b.t == V_NONE || b.t == V_UNDEF) {
        hi = st < 0 ? -1 : len;
    } else {
        hi = int_arg(r, b, "slice index");
        if (hi < 0) {
            hi += len;
            if (hi < 0) hi = st < 0 ? -1 : 0;
        } else if (hi >= len) {
            hi = st < 0 ? len - 1 : len;
        }
    }
    if (o.t == V_LIST) {
        struct list *l = list_new(&r->a, 4);
        l->tuple = o.u.l->tuple;
        for (int64_t i = lo; st > 0 ? i < hi : i > hi; i += st) {
            step(r);
            list_push(&r->a, l, o.u.l->v[i]);
        }
        return vlist(l);
    }
    if (st == 1) {
        if (hi <= lo) return vstr("", 0);
        size_t x = u8_offset(o.u.s, o.n, (size_t)lo), y = u8_offset(o.u.s, o.n, (size_t)hi);
        return vstr(o.u.s + x, y - x);
    }
    struct list *chars = iter_list(r, o);
    struct obuf ob = {0};
    for (int64_t i = lo; st > 0 ? i < hi : i > hi; i += st) {
        step(r);
        ob_put(r, &ob, chars->v[i].u.s, chars->v[i].n);
    }
    return ob_val(&ob);
}

static int cmp_v(struct rt *r, struct val a, struct val b, const char *op)
{
    if (is_num(a) && is_num(b)) {
        if (a.t != V_FLOAT && b.t != V_FLOAT) {
            int64_t x = a.t == V_INT ? a.u.i : a.u.b, y = b.t == V_INT ? b.u.i : b.u.b;
            return x < y ? -1 : x > y;
        }
        double x = num_of(a), y = num_of(b);
        return x < y ? -1 : x > y;
    }
    if (a.t == V_STR && b.t == V_STR) {
        size_t m = a.n < b.n ? a.n : b.n;
        int c = m ? memcmp(a.u.s, b.u.s, m) : 0;
        if (c) return c < 0 ? -1 : 1;
        return a.n < b.n ? -1 : a.n > b.n;
    }
    if (a.t == V_LIST && b.t == V_LIST) {
        for (size_t i = 0; i < a.u.l->n && i < b.u.l->n; i++) {
            if (val_eq(a.u.l->v[i], b.u.l->v[i])) continue;
            if (++r->vdepth > 64) RFAIL(r, "value nested too deeply to compare");
            int c = cmp_v(r, a.u.l->v[i], b.u.l->v[i], op);
            r->vdepth--;
            return c;
        }
        return a.u.l->n < b.u.l->n ? -1 : a.u.l->n > b.u.l->n;
    }
    if (a.t == V_UNDEF) undefined_err(r, a);
    if (b.t == V_UNDEF) undefined_err(r, b);
    RFAIL(r, "'%s' not supported between instances of '%s' and '%s'", op, type_name(a),
          type_name(b));
}

static bool contains_v(struct rt *r, struct val hay, struct val x)
{
    switch (hay.t) {
    case V_UNDEF:
        return false;
    case V_STR:
        if (x.t != V_STR)
            RFAIL(r, "'in <string>' requires string as left operand, not %s", type_name(x));
        return x.n == 0 || (hay.n >= x.n && memmem(hay.u.s, hay.n, x.u.s, x.n) != NULL);
    case V_LIST:
        for (size_t i = 0; i < hay.u.l->n; i++)
            if (val_eq(hay.u.l->v[i], x)) return true;
        return false;
    case V_DICT:
        return dict_find(hay.u.d, x) >= 0;
    default:
        RFAIL(r, "argument of type '%s' is not iterable", type_name(hay));
    }
}

static bool arg_get(const struct args *A, size_t pos, const char *name, struct val *out);
/* Python's "fmt % x": %s %r %d %i %% (x a tuple for several); other
 * conversions and flags are errors. */
static struct val percent_format(struct rt *r, struct val fmt, struct val x)
{
    struct obuf o = {0};
    size_t ai = 0;
    bool tuple = x.t == V_LIST && x.u.l->tuple;
    for (size_t i = 0; i < fmt.n; i++) {
        char c = fmt.u.s[i];
        if (c != '%') {
            ob_put(r, &o, &c, 1);
            continue;
        }
        if (++i >= fmt.n) RFAIL(r, "incomplete format");
        char k = fmt.u.s[i];
        if (k == '%') {
            ob_put(r, &o, "%", 1);
            continue;
        }
        struct val a;
        if (tuple) {
            if (ai >= x.u.l->n) RFAIL(r, "not enough arguments for format string");
            a = x.u.l->v[ai++];
        } else {
            if (ai++) RFAIL(r, "not enough arguments for format string");
            a = x;
        }
        if (k == 's') {
            put_str(r, &o, a);
        } else if (k == 'r') {
            put_repr(r, &o, a);
        } else if (k == 'd' || k == 'i') {
            if (!is_num(a)) RFAIL(r, "%%d format: a number is required, not %s", type_name(a));
            put_str(r, &o, a.t == V_FLOAT ? vint((int64_t)a.u.f) : a.t == V_BOOL ? vint(a.u.b) : a);
        } else {
            RFAIL(r, "unsupported format character '%c'", k >= 32 && k < 127 ? k : '?');
        }
    }
    if (tuple ? ai < x.u.l->n : ai == 0)
        RFAIL(r, "not all arguments converted during string formatting");
    return ob_val(&o);
}

/* str.format: {} {0} {name}, {{ and }}; no format specs or conversions. */
static struct val str_format(struct rt *r, struct val fmt, const struct args *A)
{
    struct obuf o = {0};
    size_t auto_i = 0;
    for (size_t i = 0; i < fmt.n; i++) {
        char c = fmt.u.s[i];
        if ((c == '{' || c == '}') && i + 1 < fmt.n && fmt.u.s[i + 1] == c) {
            ob_put(r, &o, &c, 1);
            i++;
            continue;
        }
        if (c == '}') RFAIL(r, "single '}' encountered in format string");
        if (c != '{') {
            ob_put(r, &o, &c, 1);
            continue;
        }
        size_t j = i + 1;
        while (j < fmt.n && fmt.u.s[j] != '}')
            j++;
        if (j >= fmt.n) RFAIL(r, "single '{' encountered in format string");
        const char *f = fmt.u.s + i + 1;
        size_t fn = j - i - 1;
        struct val v;
        bool ok;
        if (fn == 0) {
            ok = arg_get(A, auto_i++, NULL, &v);
        } else if (is_digit(f[0])) {
            ok = arg_get(A, (size_t)strtoul(ar_strdup(&r->a, f, fn), NULL, 10), NULL, &v);
        } else {
            if (memchr(f, ':', fn) || memchr(f, '!', fn) || memchr(f, '.', fn) ||
                memchr(f, '[', fn))
                RFAIL(r, "format specs and conversions are not supported");
            ok = arg_get(A, (size_t)-1, ar_strdup(&r->a, f, fn), &v);
        }
        if (!ok) RFAIL(r, "format: missing argument '%.*s'", (int)(fn > 40 ? 40 : fn), f);
        put_str(r, &o, v);
        i = j;
    }
    return ob_val(&o);
}

static struct val arith(struct rt *r, uint16_t op, struct val a, struct val b)
{
    if (op == '~') {
        struct obuf o = {0};
        put_str(r, &o, a);
        put_str(r, &o, b);
        return ob_val(&o);
    }
    if (a.t == V_UNDEF) undefined_err(r, a);
    if (b.t == V_UNDEF) undefined_err(r, b);
    if (op == '+' && a.t == V_STR && b.t == V_STR) {
        struct obuf o = {0};
        ob_put(r, &o, a.u.s, a.n);
        ob_put(r, &o, b.u.s, b.n);
        return ob_val(&o);
    }
    if (op == '+' && a.t == V_LIST && b.t == V_LIST) {
        struct list *l = list_new(&r->a, a.u.l->n + b.u.l->n);
        l->tuple = a.u.l->tuple;
        for (size_t i = 0; i < a.u.l->n; i++)
            list_push(&r->a, l, a.u.l->v[i]);
        for (size_t i = 0; i < b.u.l->n; i++)
            list_push(&r->a, l, b.u.l->v[i]);
        return vlist(l);
    }
    if (op == '*' && (a.t == V_STR || a.t == V_LIST) && (b.t == V_INT || b.t == V_BOOL)) {
        int64_t k = b.t == V_INT ? b.u.i : b.u.b;
        if (a.t == V_STR) {
            struct obuf o = {0};
            for (int64_t i = 0; i < k; i++) {
                step(r);
                ob_put(r, &o, a.u.s, a.n);
            }
            return ob_val(&o);
        }
        struct list *l = list_new(&r->a, 4);
        for (int64_t i = 0; i < k; i++)
            for (size_t j = 0; j < a.u.l->n; j++) {
                step(r);
                list_push(&r->a, l, a.u.l->v[j]);
            }
        return vlist(l);
    }
    if (op == '%' && a.t == V_STR) return percent_format(r, a, b);
    if (!is_num(a) || !is_num(b)) {
        char o[3] = {(char)(op > 255 ? op >> 8 : op), (char)(op > 255 ? op & 0xff : 0), 0};
        RFAIL(r, "unsupported operand type(s) for %s: '%s' and '%s'", o, type_name(a),
              type_name(b));
    }
    bool ints = a.t != V_FLOAT && b.t != V_FLOAT;
    int64_t x = a.t == V_INT ? a.u.i : a.t == V_BOOL ? a.u.b : 0;
    int64_t y = b.t == V_INT ? b.u.i : b.t == V_BOOL ? b.u.b : 0, z;
    double fx = num_of(a), fy = num_of(b);
    switch (op) {
    case '+':
        if (!ints) return vfloat(fx + fy);
        if (__builtin_add_overflow(x, y, &z)) RFAIL(r, "integer overflow");
        return vint(z);
    case '-':
        if (!ints) return vfloat(fx - fy);
        if (__builtin_sub_overflow(x, y, &z)) RFAIL(r, "integer overflow");
        return vint(z);
    case '*':
        if (!ints) return vfloat(fx * fy);
        if (__builtin_mul_overflow(x, y, &z)) RFAIL(r, "integer overflow");
        return vint(z);
    case '/':
        if (fy == 0) RFAIL(r, "division by zero");
        return vfloat(fx / fy);
    case OP2('/', '/'):
        if (fy == 0) RFAIL(r, "integer division or modulo by zero");
        if (!ints) return vfloat(floor(fx / fy));
        if (x == INT64_MIN && y == -1) RFAIL(r, "integer overflow");
        z = x / y;
        if ((x % y != 0) && ((x < 0) != (y < 0))) z--;
        return vint(z);
    case '%':
        if (fy == 0) RFAIL(r, "integer division or modulo by zero");
        if (!ints) {
            double m = fmod(fx, fy);
            if (m != 0 && ((m < 0) != (fy < 0))) m += fy;
            return vfloat(m);
        }
        if (y == -1) return vint(0);
        z = x % y;
        if (z != 0 && ((z < 0) != (y < 0))) z += y;
        return vint(z);
    case OP2('*', '*'):
        if (ints && y >= 0) {
            int64_t acc = 1;
            for (int64_t i = 0; i < y; i++) {
                if (__builtin_mul_overflow(acc, x, &acc)) RFAIL(r, "integer overflow");
                if (acc == 0 || acc == 1) break;
                step(r);
            }
            if (acc == 1 && x == -1 && (y & 1)) acc = -1;
            return vint(acc);
        }
        return vfloat(pow(fx, fy));
    }
    RFAIL(r, "unsupported operator");
}

/* ---- string helpers ---- */

static bool in_chars(char c, struct val chars)
{
    if (chars.t != V_STR) return is_ws(c);
    return memchr(chars.u.s, c, chars.n) != NULL;
}

static struct val strip_v(struct val s, struct val chars, bool left, bool right)
{
    size_t a = 0, b = s.n;
    if (left)
        while (a < b && in_chars(s.u.s[a], chars))
            a++;
    if (right)
        while (b > a && in_chars(s.u.s[b - 1], chars))
            b--;
    return vstr(s.u.s + a, b - a);
}

static char up(char c)
{
    return c >= 'a' && c <= 'z' ? (char)(c - 32) : c;
}
static char low(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
}
static bool alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (unsigned char)c >= 0x80;
}

/* mode: 'u' upper, 'l' lower, 'c' capitalize, 't' str.title, 'T' Jinja's title filter */
static struct val case_v(struct rt *r, struct val s, char mode)
{
    char *p = ar_alloc(&r->a, s.n + 1);
    bool prev = false;
    for (size_t i = 0; i < s.n; i++) {
        char c = s.u.s[i];
        switch (mode) {
        case 'u':
            p[i] = up(c);
            break;
        case 'l':
            p[i] = low(c);
            break;
        case 'c':
            p[i] = i == 0 ? up(c) : low(c);
            break;
        case 't':
            p[i] = prev ? low(c) : up(c);
            prev = alpha(c);
            break;
        default: /* words start after whitespace or one of -({[< */
            p[i] = prev ? low(c) : up(c);
            prev = !(is_ws(c) || strchr("-({[<", c));
            break;
        }
    }
    return vstr(p, s.n);
}

static struct val replace_v(struct rt *r, struct val s, struct val a, struct val b, int64_t count)
{
    if (a.t != V_STR || b.t != V_STR) RFAIL(r, "replace() arguments must be strings");
    struct obuf o = {0};
    size_t i = 0;
    int64_t done = 0;
    if (a.n == 0) { /* Python inserts b between every character */
        struct list *cs = iter_list(r, s);
        for (size_t k = 0; k <= cs->n; k++) {
            if (count < 0 || done < count) {
                ob_put(r, &o, b.u.s, b.n);
                done++;
            }
            if (k < cs->n) ob_put(r, &o, cs->v[k].u.s, cs->v[k].n);
        }
        return ob_val(&o);
    }
    while (i < s.n) {
        const char *f = count >= 0 && done >= count ? NULL : memmem(s.u.s + i, s.n - i, a.u.s, a.n);
        if (!f) break;
        size_t at = (size_t)(f - s.u.s);
        ob_put(r, &o, s.u.s + i, at - i);
        ob_put(r, &o, b.u.s, b.n);
        i = at + a.n;
        done++;
        step(r);
    }
    ob_put(r, &o, s.u.s + i, s.n - i);
    return ob_val(&o);
}

static struct val split_v(struct rt *r, struct val s, struct val sep, int64_t maxsplit)
{
    struct list *l = list_new(&r->a, 4);
    if (sep.t != V_STR) { /* runs of whitespace, ends ignored */
        size_t i = 0;
        int64_t done = 0;
        while (i < s.n) {
            while (i < s.n && is_ws(s.u.s[i]))
                i++;
            if (i >= s.n) break;
            if (maxsplit >= 0 && done >= maxsplit) {
                size_t e = s.n;
                while (e > i && is_ws(s.u.s[e - 1]))
                    e--;
                list_push(&r->a, l, vstr(s.u.s + i, e - i));
                break;
            }
            size_t j = i;
            while (j < s.n && !is_ws(s.u.s[j]))
                j++;
            list_push(&r->a, l, vstr(s.u.s + i, j - i));
            done++;
            i = j;
            step(r);
        }
        return vlist(l);
    }
    if (sep.n == 0) RFAIL(r, "empty separator");
    size_t i = 0;
    int64_t done = 0;
    for (;;) {
        const char *f =
            maxsplit >= 0 && done >= maxsplit
                ? NULL
                : (s.n - i >= sep.n ? memmem(s.u.s + i, s.n - i, sep.u.s, sep.n) : NULL);
        if (!f) {
            list_push(&r->a, l, vstr(s.u.s + i, s.n - i));
            break;
        }
        size_t at = (size_t)(f - s.u.s);
        list_push(&r->a, l, vstr(s.u.s + i, at - i));
        i = at + sep.n;
        done++;
        step(r);
    }
    return vlist(l);
}

static bool starts_ends(struct rt *r, struct val s, struct val x, bool end)
{
    if (x.t == V_LIST) {
        for (size_t i = 0; i < x.u.l->n; i++)
            if (starts_ends(r, s, x.u.l->v[i], end)) return true;
        return false;
    }
    if (x.t != V_STR)
        RFAIL(r, "%s first arg must be str or a tuple of str, not %s",
              end ? "endswith" : "startswith", type_name(x));
    if (x.n > s.n) return false;
    return memcmp(end ? s.u.s + s.n - x.n : s.u.s, x.u.s, x.n) == 0;
}

/* ---- arguments ---- */

/* positional pos or keyword name; false if absent */
static bool arg_get(const struct args *A, size_t pos, const char *name, struct val *out)
{
    size_t k = 0;
    for (size_t i = 0; i < A->n; i++) {
        if (A->kw[i]) {
            if (name && !strcmp(A->kw[i], name)) {
                *out = A->v[i];
                return true;
            }
        } else if (k++ == pos) {
            *out = A->v[i];
            return true;
        }
    }
    return false;
}

static struct val arg_or(const struct args *A, size_t pos, const char *name, struct val def)
{
    struct val v;
    return arg_get(A, pos, name, &v) ? v : def;
}

static size_t n_positional(const struct args *A)
{
    size_t k = 0;
    for (size_t i = 0; i < A->n; i++)
        if (!A->kw[i]) k++;
    return k;
}

/* args from position `from` on, as a new args view (for select/selectattr) */
static struct args args_from(struct rt *r, const struct args *A, size_t from)
{
    struct args B = {ar_alloc(&r->a, (A->n + 1) * sizeof *B.v),
                     ar_alloc(&r->a, (A->n + 1) * sizeof *B.kw), 0};
    size_t k = 0;
    for (size_t i = 0; i < A->n; i++) {
        if (!A->kw[i] && k++ < from) continue;
        B.v[B.n] = A->v[i];
        B.kw[B.n++] = A->kw[i];
    }
    return B;
}

static struct val str_arg(struct rt *r, const struct args *A, size_t pos, const char *name,
                          const char *what)
{
    struct val v;
    if (!arg_get(A, pos, name, &v)) RFAIL(r, "%s: missing argument", what);
    if (v.t != V_STR) RFAIL(r, "%s: argument must be a string, not %s", what, type_name(v));
    return v;
}

static bool test_apply(struct rt *r, const char *name, struct val v, const struct args *A);
static struct val filter_apply(struct rt *r, const char *name, struct val v, const struct args *A);

/* attribute path "a.b" on v (Jinja's make_attrgetter) */
static struct val attr_path(struct rt *r, struct val v, struct val path)
{
    if (path.t == V_INT) return getitem_v(r, v, path);
    if (path.t != V_STR) RFAIL(r, "attribute name must be a string");
    size_t i = 0;
    while (i <= path.n) {
        size_t j = i;
        while (j < path.n && path.u.s[j] != '.')
            j++;
        struct val part = vstr(path.u.s + i, j - i);
        bool digits = j > i;
        for (size_t k = i; k < j; k++)
            if (!is_digit(path.u.s[k])) digits = false;
        if (digits) part = vint(strtoll(ar_strdup(&r->a, path.u.s + i, j - i), NULL, 10));
        if (v.t == V_UNDEF) return v;
        v = getitem_v(r, v, part);
        i = j + 1;
    }
    return v;
}

/* ---- sorting (stable merge sort; each comparison is a step) ---- */

struct sortctx {
    struct rt *r;
    bool casefold;
    struct val attr;
    bool has_attr;
};

static struct val sort_key(struct sortctx *c, struct val v)
{
    if (c->has_attr) v = attr_path(c->r, v, c->attr);
    if (c->casefold && v.t == V_STR) v = case_v(c->r, v, 'l');
    return v;
}

static void msort(struct sortctx *c, struct val *a, struct val *tmp, size_t n)
{
    if (n < 2) return;
    size_t h = n / 2;
    msort(c, a, tmp, h);
    msort(c, a + h, tmp, n - h);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        step(c->r);
        if (cmp_v(c->r, sort_key(c, a[j]), sort_key(c, a[i]), "<") < 0)
            tmp[k++] = a[j++];
        else
            tmp[k++] = a[i++];
    }
    while (i < h)
        tmp[k++] = a[i++];
    while (j < n)
        tmp[k++] = a[j++];
    memcpy(a, tmp, n * sizeof *a);
}

static struct list *sorted(struct sortctx *c, struct list *in, bool reverse)
{
    struct list *l = list_new(&c->r->a, in->n);
    for (size_t i = 0; i < in->n; i++)
        list_push(&c->r->a, l, in->v[i]);
    struct val *tmp = ar_alloc(&c->r->a, (in->n + 1) * sizeof *tmp);
    msort(c, l->v, tmp, l->n);
    if (reverse)
        for (size_t i = 0; i < l->n / 2; i++) {
            struct val t = l->v[i];
            l->v[i] = l->v[l->n - 1 - i];
            l->v[l->n - 1 - i] = t;
        }
    return l;
}

/* ---- filters ---- */

static bool fname(const char *n, const char *a)
{
    return strcmp(n, a) == 0;
}

static struct val int_of(struct rt *r, struct val v, struct val def)
{
    switch (v.t) {
    case V_INT:
        return v;
    case V_BOOL:
        return vint(v.u.b);
    case V_FLOAT:
        if (!isfinite(v.u.f) || fabs(v.u.f) > 9.2e18) return def;
        return vint((int64_t)v.u.f);
    case V_STR: {
        char *s = ar_strdup(&r->a, v.u.s, v.n), *end;
        while (is_ws(*s))
            s++;
        if (!*s) return def;
        errno = 0;
        long long x = strtoll(s, &end, 10);
        while (is_ws(*end))
            end++;
        if (!*end && !errno) return vint(x);
        if (strpbrk(s, "xXnN")) return def; /* not Python float syntax (hex, nan, inf) */
        double f = strtod(s, &end);
        while (is_ws(*end))
            end++;
        if (!*end && isfinite(f) && fabs(f) < 9.2e18) return vint((int64_t)f);
        return def;
    }
    default:
        return def;
    }
}

static struct val flt_trim(struct rt *r, const char *name, struct val v, const struct args *A)
{
    return strip_v(to_str(r, v), arg_or(A, 0, "chars", NONE), true, true);
}

static struct val flt_length(struct rt *r, const char *name, struct val v, const struct args *A)
{
    return vint(length_of(r, v));
}

static struct val flt_tojson(struct rt *r, const char *name, struct val v, const struct args *A)
{
    /* HF: tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) */
    struct val ind = arg_or(A, 0, "indent", NONE), sk = arg_or(A, 99, "sort_keys", NONE),
               sep = arg_or(A, 99, "separators", NONE);
    struct jopts jo = {
        ind.t == V_NONE ? -1 : (int)int_arg(r, ind, "indent"), truthy(sk), NULL, NULL, 0, 0};
    if (jo.indent > 32) jo.indent = 32;
    if (jo.indent < -1) jo.indent = 0;
    jo.isep = jo.indent >= 0 ? "," : ", ";
    jo.ksep = ": ";
    if (sep.t == V_LIST && sep.u.l->n == 2 && sep.u.l->v[0].t == V_STR &&
        sep.u.l->v[1].t == V_STR) {
        jo.isep = sep.u.l->v[0].u.s;
        jo.ksep = sep.u.l->v[1].u.s;
        jo.isep_n = sep.u.l->v[0].n;
        jo.ksep_n = sep.u.l->v[1].n;
    } else if (sep.t != V_NONE) {
        RFAIL(r, "tojson: separators must be a pair of strings");
    } else {
        jo.isep_n = strlen(jo.isep);
        jo.ksep_n = 2;
    }
    struct obuf o = {0};
    json_val(r, &o, v, &jo, 0);
    return ob_val(&o);
}

static struct val flt_upper(struct rt *r, const char *name, struct val v, const struct args *A)
{
    return case_v(r, to_str(r, v), 'u');
}

static struct val flt_lower(struct rt *r, const char *name, struct val v, const struct args *A)
{
    return case_v(r, to_str(r, v), 'l');
}

static struct val flt_capitalize(struct rt *r, const char *name, struct val v, const struct args *A)
{
    return case_v(r, to_str(r, v), 'c');
}

static struct val flt_title(struct rt *r, const char *name, struct val v, const struct args *A)
{
    return case_v(r, to_str(r, v), 'T');
}

static struct val flt_replace(struct rt *r, const char *name, struct val v, const struct args *A)
{
    struct val c = arg_or(A, 2, "count", NONE);
    return replace_v(r, to_str(r, v), arg_or(A, 0, "old", UNDEF), arg_or(A, 1, "new", UNDEF),
                     c.t == V_NONE ? -1 : int_arg(r, c, "count"));
}

static struct val flt_join(struct rt *r, const char *name, struct val v, const struct args *A)
{
    struct val sep = arg_or(A, 0, "d", vstr("", 0)), at;
    bool has_attr = arg_get(A, 1, "attribute", &at);
    struct list *l = iter_list(r, v);
    struct obuf o = {0};
    sep = to_str(r, sep);
    for (size_t i = 0; i < l->n; i++) {
        if (i) ob_put(r, &o, sep.u.s, sep.n);
        put_str(r, &o, has_attr ? attr_path(r, l->v[i], at) : l->v[i]);
    }
    return ob_val(&o);
}

static struct val flt_first_last(struct rt *r, const char *name, struct val v, const struct args *A)
{
    if (v.t == V_UNDEF) return UNDEF;
    struct list *l = iter_list(r, v);
    if (!l->n) return UNDEF;
    return name[0] == 'f' ? l->v[0] : l->v[l->n - 1];
}

static struct val flt_default(struct rt *r, const char *name, struct val v, const struct args *A)
{
    struct val def = arg_or(A, 0, "default_value", vstr("", 0));
    bool boolean = truthy(arg_or(A, 1, "boolean", vbool(false)));
    if (v.t == V_UNDEF || (boolean && !truthy(v))) return def;
    return v;
}

static struct val flt_string(struct rt *r, const char *name, struct val v, const struct args *A)
{
    return to_str(r, v);
}

static struct val flt_int(struct rt *r, const char *name, struct val v, const struct args *A)
{
    return int_of(r, v, arg_or(A, 0, "default", vint(0)));
}

static struct val flt_float(struct rt *r, const char *name, struct val v, const struct args *A)
{
    if (v.t == V_FLOAT) return v;
    if (v.t == V_INT || v.t == V_BOOL) return vfloat(num_of(v));
    if (v.t == V_STR) {
        char *s = ar_strdup(&r->a, v.u.s, v.n), *end;
        double f = strtod(s, &end);
        while (is_ws(*end))
            end++;
        if (end != s && !*end) return vfloat(f);
    }
    return arg_or(A, 0, "default", vfloat(0));
}

static struct val flt_abs(struct rt *r, const char *name, struct val v, const struct args *A)
{
    if (v.t == V_INT) return vint(v.u.i < 0 ? -v.u.i : v.u.i);
    if (v.t == V_FLOAT) return vfloat(fabs(v.u.f));
    RFAIL(r, "bad operand type for abs(): '%s'", type_name(v));
}

static struct val flt_round(struct rt *r, const char *name, struct val v, const struct args *A)
{
    int64_t prec = int_arg(r, arg_or(A, 0, "precision", vint(0)), "precision");
    struct val m = arg_or(A, 1, "method", vstr("common", 6));
    double x = num_of(v), p = pow(10, (double)prec);
    if (!is_num(v)) RFAIL(r, "round: a number is required");
    if (str_eq(m, "floor", 5)) return vfloat(floor(x * p) / p);
    if (str_eq(m, "ceil", 4)) return vfloat(ceil(x * p) / p);
    return vfloat(nearbyint(x * p) / p); /* Python rounds half to even */
}

static struct val flt_list(struct rt *r, const char *name, struct val v, const struct args *A)
{
    struct list *src = iter_list(r, v), *l = list_new(&r->a, src->n);
    for (size_t i = 0; i < src->n; i++)
        list_push(&r->a, l, src->v[i]);
    return vlist(l);
}

static struct val flt_items(struct rt *r, const char *name, struct val v, const struct args *A)
{
    if (v.t == V_UNDEF) return vlist(list_new(&r->a, 1));
    if (v.t != V_DICT) RFAIL(r, "can only get item pairs from a mapping, not %s", type_name(v));
    struct list *l = list_new(&r->a, v.u.d->n);
    for (size_t i = 0; i < v.u.d->n; i++) {
        struct list *p = list_new(&r->a, 2);
        p->tuple = true;
        list_push(&r->a, p, v.u.d->k[i]);
        list_push(&r->a, p, v.u.d->v[i]);
        list_push(&r->a, l, vlist(p));
    }
    if (name[0] == 'd') {
        struct sortctx c = {r, !truthy(arg_or(A, 0, "case_sensitive", vbool(false))), UNDEF, true};
        struct val by = arg_or(A, 1, "by", vstr("key", 3));
        c.attr = vint(str_eq(by, "value", 5) ? 1 : 0);
        l = sorted(&c, l, truthy(arg_or(A, 2, "reverse", vbool(false))));
    }
    return vlist(l);
}

static struct val flt_reverse(struct rt *r, const char *name, struct val v, const struct args *A)
{
    if (v.t == V_STR) {
        struct list *cs = iter_list(r, v);
        struct obuf o = {0};
        for (size_t i = cs->n; i > 0; i--)
            ob_put(r, &o, cs->v[i - 1].u.s, cs->v[i - 1].n);
        return ob_val(&o);
    }
    struct list *src = iter_list(r, v), *l = list_new(&r->a, src->n);
    for (size_t i = src->n; i > 0; i--)
        list_push(&r->a, l, src->v[i - 1]);
    return vlist(l);
}

static struct val flt_sort(struct rt *r, const char *name, struct val v, const struct args *A)
{
    struct val at;
    struct sortctx c = {r, !truthy(arg_or(A, 1, "case_sensitive", vbool(false))), UNDEF, false};
    c.has_attr = arg_get(A, 2, "attribute", &at);
    c.attr = c.has_attr ? at : UNDEF;
    return vlist(sorted(&c, iter_list(r, v), truthy(arg_or(A, 0, "reverse", vbool(false)))));
}

static struct val flt_unique(struct rt *r, const char *name, struct val v, const struct args *A)
{
    struct list *src = iter_list(r, v), *l = list_new(&r->a, src->n);
    struct val at;
    bool has_attr = arg_get(A, 1, "attribute", &at);
    bool cs = truthy(arg_or(A, 0, "case_sensitive", vbool(false)));
    struct list *seen = list_new(&r->a, src->n);
    for (size_t i = 0; i < src->n; i++) {
        struct val k = has_attr ? attr_path(r, src->v[i], at) : src->v[i];
        if (!cs && k.t == V_STR) k = case_v(r, k, 'l');
        bool dup = false;
        for (size_t j = 0; j < seen->n && !dup; j++) {
            step(r);
            dup = val_eq(seen->v[j], k);
        }
        if (dup) continue;
        list_push(&r->a, seen, k);
        list_push(&r->a, l, src->v[i]);
    }
    return vlist(l);
}

static struct val flt_sum(struct rt *r, const char *name, struct val v, const struct args *A)
{
    struct list *src = iter_list(r, v);
    struct val at, acc = arg_or(A, 1, "start", vint(0));
    bool has_attr = arg_get(A, 0, "attribute", &at);
    for (size_t i = 0; i < src->n; i++)
        acc = arith(r, '+', acc, has_attr ? attr_path(r, src->v[i], at) : src->v[i]);
    return acc;
}

static struct val flt_min_max(struct rt *r, const char *name, struct val v, const struct args *A)
{
    struct list *src = iter_list(r, v);
    if (!src->n) return UNDEF;
    struct val best = src->v[0];
    for (size_t i = 1; i < src->n; i++) {
        int c = cmp_v(r, src->v[i], best, "<");
        if (name[1] == 'i' ? c < 0 : c > 0) best = src->v[i];
    }
    return best;
}

static struct val flt_select(struct rt *r, const char *name, struct val v, const struct args *A)
{
    bool attr = name[6] == 'a', keep = name[0] == 's';
    struct val at = attr ? arg_or(A, 0, NULL, UNDEF) : UNDEF, tn;
    size_t tpos = attr ? 1 : 0;
    bool has_test = arg_get(A, tpos, NULL, &tn);
    if (has_test && tn.t != V_STR) RFAIL(r, "%s: test name must be a string", name);
    const char *test = has_test ? ar_strdup(&r->a, tn.u.s, tn.n) : NULL;
    struct args T = args_from(r, A, tpos + 1);
    struct list *src = iter_list(r, v), *l = list_new(&r->a, src->n);
    for (size_t i = 0; i < src->n; i++) {
        struct val x = attr ? attr_path(r, src->v[i], at) : src->v[i];
        bool ok = test ? test_apply(r, test, x, &T) : truthy(x);
        if (ok == keep) list_push(&r->a, l, src->v[i]);
    }
    return vlist(l);
}

static struct val flt_map(struct rt *r, const char *name, struct val v, const struct args *A)
{
    struct val at, fn;
    struct list *src = iter_list(r, v), *l = list_new(&r->a, src->n);
    if (arg_get(A, 99, "attribute", &at)) {
        struct val def;
        bool has_def = arg_get(A, 99, "default", &def);
        for (size_t i = 0; i < src->n; i++) {
            struct val x = attr_path(r, src->v[i], at);
            list_push(&r->a, l, x.t == V_UNDEF && has_def ? def : x);
        }
        return vlist(l);
    }
    if (!arg_get(A, 0, NULL, &fn) || fn.t != V_STR)
        RFAIL(r, "map: a filter name or attribute= is required");
    const char *f = ar_strdup(&r->a, fn.u.s, fn.n);
    struct args F = args_from(r, A, 1);
    for (size_t i = 0; i < src->n; i++)
        list_push(&r->a, l, filter_apply(r, f, src->v[i], &F));
    return vlist(l);
}

static struct val flt_attr(struct rt *r, const char *name, struct val v, const struct args *A)
{
    struct val a = str_arg(r, A, 0, "name", "attr");
    return getattr_v(r, v, ar_strdup(&r->a, a.u.s, a.n));
}

static struct val flt_indent(struct rt *r, const char *name, struct val v, const struct args *A)
{
    struct val w = arg_or(A, 0, "width", vint(4));
    bool first = truthy(arg_or(A, 1, "first", vbool(false)));
    bool blank = truthy(arg_or(A, 2, "blank", vbool(false)));
    struct obuf ind = {0}, o = {0};
    if (w.t == V_STR) {
        ob_put(r, &ind, w.u.s, w.n);
    } else {
        int64_t k = int_arg(r, w, "width");
        for (int64_t i = 0; i < k && i < 1000; i++)
            ob_put(r, &ind, " ", 1);
    }
    struct val s = to_str(r, v);
    /* s + "\n" split into lines (\n, \r\n, \r) */
    size_t i = 0, nline = 0;
    if (first) ob_put(r, &o, ind.p, ind.n);
    while (i < s.n + 1) {
        size_t j = i;
        while (j < s.n && s.u.s[j] != '\n' && s.u.s[j] != '\r')
            j++;
        if (j >= s.n && i >= s.n && nline > 0) break; /* the added "\n" */
        if (nline) {
            ob_put(r, &o, "\n", 1);
            if (blank || j > i) ob_put(r, &o, ind.p, ind.n);
        }
        ob_put(r, &o, s.u.s + i, j - i);
        nline++;
        if (j >= s.n) break;
        i = j + (s.u.s[j] == '\r' && j + 1 < s.n && s.u.s[j + 1] == '\n' ? 2 : 1);
        step(r);
    }
    return ob_val(&o);
}

static struct val flt_escape(struct rt *r, const char *name, struct val v, const struct args *A)
{
    if (name[0] == 's') return v;
    struct val s = to_str(r, v);
    struct obuf o = {0};
    for (size_t i = 0; i < s.n; i++) {
        char c = s.u.s[i];
        const char *e = c == '&'    ? "&amp;"
                        : c == '<'  ? "&lt;"
                        : c == '>'  ? "&gt;"
                        : c == '"'  ? "&#34;"
                        : c == '\'' ? "&#39;"
                                    : NULL;
        if (e)
            ob_puts(r, &o, e);
        else
            ob_put(r, &o, &c, 1);
    }
    return ob_val(&o);
}

static struct val flt_wordcount(struct rt *r, const char *name, struct val v, const struct args *A)
{
    struct val s = to_str(r, v);
    return vint((int64_t)split_v(r, s, NONE, -1).u.l->n);
}

/* str.center(width) */
static struct val flt_center(struct rt *r, const char *name, struct val v, const struct args *A)
{
    struct val t = to_str(r, v);
    int64_t w = int_arg(r, arg_or(A, 0, "width", vint(80)), "width");
    int64_t len = (int64_t)u8_count(t.u.s, t.n);
    if (w > 100000) w = 100000;
    if (w <= len) return t;
    int64_t pad = w - len, left = pad / 2 + (pad & w & 1);
    struct obuf o = {0};
    for (int64_t i = 0; i < left; i++)
        ob_put(r, &o, " ", 1);
    ob_put(r, &o, t.u.s, t.n);
    for (int64_t i = 0; i < pad - left; i++)
        ob_put(r, &o, " ", 1);
    return ob_val(&o);
}

/* Filters by name ({{ x | name(args) }}); a row's function gets the name it was called by, so one
 * function may serve several names (first/last, min/max, select/reject...). */
static const struct filter_row {
    const char *name;
    struct val (*fn)(struct rt *r, const char *name, struct val v, const struct args *A);
} filters[] = {
    {"trim", flt_trim},
    {"length", flt_length},
    {"count", flt_length},
    {"tojson", flt_tojson},
    {"upper", flt_upper},
    {"lower", flt_lower},
    {"capitalize", flt_capitalize},
    {"title", flt_title},
    {"replace", flt_replace},
    {"join", flt_join},
    {"first", flt_first_last},
    {"last", flt_first_last},
    {"default", flt_default},
    {"d", flt_default},
    {"string", flt_string},
    {"int", flt_int},
    {"float", flt_float},
    {"abs", flt_abs},
    {"round", flt_round},
    {"list", flt_list},
    {"items", flt_items},
    {"dictsort", flt_items},
    {"reverse", flt_reverse},
    {"sort", flt_sort},
    {"unique", flt_unique},
    {"sum", flt_sum},
    {"min", flt_min_max},
    {"max", flt_min_max},
    {"selectattr", flt_select},
    {"rejectattr", flt_select},
    {"select", flt_select},
    {"reject", flt_select},
    {"map", flt_map},
    {"attr", flt_attr},
    {"indent", flt_indent},
    {"safe", flt_escape},
    {"e", flt_escape},
    {"escape", flt_escape},
    {"forceescape", flt_escape},
    {"wordcount", flt_wordcount},
    {"center", flt_center},
};

static struct val filter_apply(struct rt *r, const char *name, struct val v, const struct args *A)
{
    step(r);
    for (size_t i = 0; i < sizeof filters / sizeof filters[0]; i++)
        if (fname(name, filters[i].name)) return filters[i].fn(r, name, v, A);
    RFAIL(r, "no filter named '%.40s'", name);
}

/* ---- tests ---- */

static bool test_apply(struct rt *r, const char *name, struct val v, const struct args *A)
{
    struct val x;
    step(r);
    if (fname(name, "defined")) return v.t != V_UNDEF;
    if (fname(name, "undefined")) return v.t == V_UNDEF;
    if (fname(name, "none")) return v.t == V_NONE;
    if (fname(name, "string")) return v.t == V_STR;
    if (fname(name, "number")) return is_num(v);
    if (fname(name, "integer")) return v.t == V_INT;
    if (fname(name, "float")) return v.t == V_FLOAT;
    if (fname(name, "boolean")) return v.t == V_BOOL;
    if (fname(name, "true")) return v.t == V_BOOL && v.u.b;
    if (fname(name, "false")) return v.t == V_BOOL && !v.u.b;
    if (fname(name, "mapping")) return v.t == V_DICT;
    if (fname(name, "iterable") || fname(name, "sequence")) /* Undefined iterates as empty */
        return v.t == V_STR || v.t == V_LIST || v.t == V_DICT || v.t == V_UNDEF;
    if (fname(name, "callable")) return v.t == V_MACRO || v.t == V_FUNC;
    if (fname(name, "lower") || fname(name, "upper")) {
        if (v.t != V_STR) return false;
        bool any = false;
        for (size_t i = 0; i < v.n; i++) {
            char c = v.u.s[i];
            if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) any = true;
            if (name[0] == 'l' ? (c >= 'A' && c <= 'Z') : (c >= 'a' && c <= 'z')) return false;
        }
        return any;
    }
    if (fname(name, "odd") || fname(name, "even")) {
        int64_t i = int_arg(r, v, name);
        return (i % 2 != 0) == (name[0] == 'o');
    }
    if (fname(name, "divisibleby")) {
        int64_t d = int_arg(r, arg_or(A, 0, "num", UNDEF), "divisibleby");
        if (d == 0) RFAIL(r, "integer division or modulo by zero");
        return int_arg(r, v, "divisibleby") % d == 0;
    }
    if (!arg_get(A, 0, NULL, &x)) x = UNDEF;
    if (fname(name, "equalto") || fname(name, "eq") || fname(name, "==")) return val_eq(v, x);
    if (fname(name, "ne") || fname(name, "!=")) return !val_eq(v, x);
    if (fname(name, "sameas")) {
        if (v.t != x.t) return false;
        if (v.t == V_LIST) return v.u.l == x.u.l;
        if (v.t == V_DICT) return v.u.d == x.u.d;
        return val_eq(v, x);
    }
    if (fname(name, "lt") || fname(name, "<")) return cmp_v(r, v, x, "<") < 0;
    if (fname(name, "le") || fname(name, "<=")) return cmp_v(r, v, x, "<=") <= 0;
    if (fname(name, "gt") || fname(name, ">")) return cmp_v(r, v, x, ">") > 0;
    if (fname(name, "ge") || fname(name, ">=")) return cmp_v(r, v, x, ">=") >= 0;
    if (fname(name, "in")) return contains_v(r, x, v);
    RFAIL(r, "no test named '%.40s'", name);
}

/* ---- methods of str and dict (what the sandbox lets templates call) ---- */

static bool method_call(struct rt *r, struct val o, const char *m, const struct args *A,
                        struct val *out)
{
    if (o.t == V_STR) {
        struct val a0 = arg_or(A, 0, NULL, NONE);
        if (fname(m, "strip") || fname(m, "lstrip") || fname(m, "rstrip")) {
            *out = strip_v(o, a0, m[0] != 'r', m[0] != 'l');
        } else if (fname(m, "startswith") || fname(m, "endswith")) {
            *out = vbool(starts_ends(r, o, a0, m[0] == 'e'));
        } else if (fname(m, "split") || fname(m, "rsplit")) {
            struct val ms = arg_or(A, 1, "maxsplit", vint(-1));
            int64_t k = int_arg(r, ms, "maxsplit");
            if (m[0] == 'r' && k >= 0) RFAIL(r, "rsplit with maxsplit is not supported");
            *out = split_v(r, o, arg_or(A, 0, "sep", NONE), k);
        } else if (fname(m, "upper") || fname(m, "lower") || fname(m, "title") ||
                   fname(m, "capitalize")) {
            *out = case_v(r, o, m[0] == 'u' ? 'u' : m[0] == 'l' ? 'l' : m[0] == 't' ? 't' : 'c');
        } else if (fname(m, "replace")) {
            struct val c = arg_or(A, 2, "count", vint(-1));
            *out = replace_v(r, o, arg_or(A, 0, NULL, UNDEF), arg_or(A, 1, NULL, UNDEF),
                             int_arg(r, c, "count"));
        } else if (fname(m, "find") || fname(m, "count")) {
            struct val x = str_arg(r, A, 0, NULL, m);
            if (m[0] == 'f') {
                const char *f = x.n == 0 ? o.u.s : memmem(o.u.s, o.n, x.u.s, x.n);
                *out = vint(f ? (int64_t)u8_count(o.u.s, (size_t)(f - o.u.s)) : -1);
            } else {
                *out = vint((int64_t)split_v(r, o, x, -1).u.l->n - 1);
            }
        } else if (fname(m, "join")) {
            struct list *l = iter_list(r, a0);
            struct obuf b = {0};
            for (size_t i = 0; i < l->n; i++) {
                if (i) ob_put(r, &b, o.u.s, o.n);
                if (l->v[i].t != V_STR)
                    RFAIL(r, "sequence item %zu: expected str instance, %s found", i,
                          type_name(l->v[i]));
                ob_put(r, &b, l->v[i].u.s, l->v[i].n);
            }
            *out = ob_val(&b);
        } else if (fname(m, "format")) {
            *out = str_format(r, o, A);
        } else if (fname(m, "splitlines")) {
            struct list *l = list_new(&r->a, 4);
            size_t i = 0;
            while (i < o.n) {
                size_t j = i;
                while (j < o.n && o.u.s[j] != '\n' && o.u.s[j] != '\r')
                    j++;
                list_push(&r->a, l, vstr(o.u.s + i, j - i));
                if (j >= o.n) break;
                i = j + (o.u.s[j] == '\r' && j + 1 < o.n && o.u.s[j + 1] == '\n' ? 2 : 1);
            }
            *out = vlist(l);
        } else if (fname(m, "isdigit") || fname(m, "isspace") || fname(m, "isalpha") ||
                   fname(m, "isalnum")) {
            bool ok = o.n > 0;
            for (size_t i = 0; i < o.n; i++) {
                char c = o.u.s[i];
                bool d = is_digit(c), s = is_ws(c),
                     al = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
                if (!(m[2] == 'd' ? d : m[2] == 's' ? s : m[4] == 'n' ? (d || al) : al)) ok = false;
            }
            *out = vbool(ok);
        } else {
            return false;
        }
        return true;
    }
    if (o.t == V_DICT) {
        if (fname(m, "items") || fname(m, "keys") || fname(m, "values")) {
            struct list *l = list_new(&r->a, o.u.d->n);
            for (size_t i = 0; i < o.u.d->n; i++) {
                if (m[0] == 'k') {
                    list_push(&r->a, l, o.u.d->k[i]);
                } else if (m[0] == 'v') {
                    list_push(&r->a, l, o.u.d->v[i]);
                } else {
                    struct list *p = list_new(&r->a, 2);
                    p->tuple = true;
                    list_push(&r->a, p, o.u.d->k[i]);
                    list_push(&r->a, p, o.u.d->v[i]);
                    list_push(&r->a, l, vlist(p));
                }
            }
            *out = vlist(l);
            return true;
        }
        if (fname(m, "get")) {
            long i = dict_find(o.u.d, arg_or(A, 0, "key", UNDEF));
            *out = i >= 0 ? o.u.d->v[i] : arg_or(A, 1, "default", NONE);
            return true;
        }
        long li = dict_find_s(o.u.d, "index0", 6);
        if (fname(m, "cycle") && li >= 0 && o.u.d->v[li].t == V_INT) { /* loop.cycle(a, b...) */
            size_t np = n_positional(A);
            if (!np) RFAIL(r, "loop.cycle() needs at least one argument");
            arg_get(A, (size_t)o.u.d->v[li].u.i % np, NULL, out);
            return true;
        }
        return false;
    }
    if (o.t == V_LIST && (fname(m, "append") || fname(m, "pop") || fname(m, "insert") ||
                          fname(m, "extend") || fname(m, "remove")))
        RFAIL(r, "cannot modify a list in the sandbox (%s)", m);
    return false;
}

/* ---- expressions ---- */

static struct val eval(struct rt *r, const struct node *n, struct frame *f);
static void exec_body(struct rt *r, const struct node *n, struct frame *f, struct obuf *o);

static struct val lookup(struct rt *r, struct frame *f, const char *name)
{
    size_t len = strlen(name);
    for (; f; f = f->parent) {
        long i = dict_find_s(f->vars, name, len);
        if (i >= 0) return f->vars->v[i];
    }
    long i = dict_find_s(r->globals, name, len);
    if (i >= 0) return r->globals->v[i];
    static const char *const fns[] = {"range", "namespace", "raise_exception", "strftime_now",
                                      "dict"};
    for (int k = 0; k < 5; k++)
        if (!strcmp(name, fns[k])) return (struct val){.t = V_FUNC, .u.fn = k};
    return vundef(name);
}

static struct frame *frame_new(struct rt *r, struct frame *parent)
{
    struct frame *f = ar_alloc(&r->a, sizeof *f);
    f->parent = parent;
    f->vars = dict_new(&r->a);
    return f;
}

static void eval_args(struct rt *r, const struct node *n, struct frame *f, struct args *A)
{
    A->n = n->nk;
    A->v = ar_alloc(&r->a, (n->nk + 1) * sizeof *A->v);
    A->kw = ar_alloc(&r->a, (n->nk + 1) * sizeof *A->kw);
    for (size_t i = 0; i < n->nk; i++) {
        A->v[i] = eval(r, n->kids[i], f);
        A->kw[i] = n->names ? n->names[i] : NULL;
    }
}

static struct val call_macro(struct rt *r, const struct macro *m, const struct args *A)
{
    const struct node *mn = m->n;
    if (r->depth >= r->lim->max_depth)
        fail(r->e, JINJA_ELIMIT, "macro calls nested deeper than %d", r->lim->max_depth);
    struct frame *f = frame_new(r, m->f);
    size_t pos = 0;
    for (size_t i = 0; i < A->n; i++) {
        if (A->kw[i]) {
            bool found = false;
            for (size_t k = 0; k < mn->nk; k++)
                if (!strcmp(mn->names[k], A->kw[i])) found = true;
            if (!found) RFAIL(r, "macro '%s' takes no keyword argument '%s'", mn->s, A->kw[i]);
            dict_set_s(&r->a, f->vars, A->kw[i], A->v[i]);
        } else {
            if (pos >= mn->nk) RFAIL(r, "macro '%s' takes at most %zu arguments", mn->s, mn->nk);
            dict_set_s(&r->a, f->vars, mn->names[pos++], A->v[i]);
        }
    }
    for (size_t k = 0; k < mn->nk; k++)
        if (dict_find_s(f->vars, mn->names[k], strlen(mn->names[k])) < 0)
            dict_set_s(&r->a, f->vars, mn->names[k],
                       mn->kids[k] ? eval(r, mn->kids[k], f) : vundef(mn->names[k]));
    struct obuf o = {0};
    r->depth++;
    exec_body(r, mn->a, f, &o);
    r->depth--;
    r->ctl = 0;
    return ob_val(&o);
}

static struct val call_func(struct rt *r, int fn, const struct args *A)
{
    switch (fn) {
    case FN_RANGE: {
        size_t np = n_positional(A);
        int64_t a = 0, b, s = 1;
        if (np == 0 || np > 3) RFAIL(r, "range expected 1 to 3 arguments");
        if (np == 1) {
            b = int_arg(r, A->v[0], "range()");
        } else {
            a = int_arg(r, A->v[0], "range()");
            b = int_arg(r, A->v[1], "range()");
            if (np == 3) s = int_arg(r, A->v[2], "range()");
        }
        if (s == 0) RFAIL(r, "range() arg 3 must not be zero");
        double cnt = ceil(((double)b - (double)a) / (double)s);
        if (cnt > 1e6) fail(r->e, JINJA_ELIMIT, "range() of over 1000000 items");
        struct list *l = list_new(&r->a, cnt > 0 ? (size_t)cnt : 1);
        for (int64_t i = a; s > 0 ? i < b : i > b;) {
            step(r);
            list_push(&r->a, l, vint(i));
            if (__builtin_add_overflow(i, s, &i)) break;
        }
        return vlist(l);
    }
    case FN_NAMESPACE:
    case FN_DICT: {
        struct dict *d = dict_new(&r->a);
        d->ns = fn == FN_NAMESPACE;
        for (size_t i = 0; i < A->n; i++) {
            if (A->kw[i]) {
                dict_set_s(&r->a, d, A->kw[i], A->v[i]);
            } else if (A->v[i].t == V_DICT) {
                for (size_t k = 0; k < A->v[i].u.d->n; k++)
                    dict_set(&r->a, d, A->v[i].u.d->k[k], A->v[i].u.d->v[k]);
            } else {
                RFAIL(r, "%s() takes keyword arguments or a mapping",
                      fn == FN_DICT ? "dict" : "namespace");
            }
        }
        return vdict(d);
    }
    case FN_RAISE: {
        struct val m = to_str(r, arg_or(A, 0, NULL, vstr("", 0)));
        fail(r->e, JINJA_ERAISE, "%.*s", (int)(m.n > 400 ? 400 : m.n), m.u.s);
    }
    case FN_STRFTIME: {
        struct val fmt = str_arg(r, A, 0, NULL, "strftime_now");
        char *fs = ar_strdup(&r->a, fmt.u.s, fmt.n > 200 ? 200 : fmt.n);
        time_t now = time(NULL);
        struct tm tm;
        char buf[512];
        size_t k = localtime_r(&now, &tm) ? strftime(buf, sizeof buf, fs, &tm) : 0;
        char *p = ar_strdup(&r->a, buf, k);
        return vstr(p, k);
    }
    }
    RFAIL(r, "unknown function");
}

static struct val eval_call(struct rt *r, const struct node *n, struct frame *f)
{
    struct args A;
    if (n->a->k == N_ATTR) {
        struct val o = eval(r, n->a->a, f), out;
        if (o.t == V_UNDEF) undefined_err(r, o);
        eval_args(r, n, f, &A);
        if (method_call(r, o, n->a->s, &A, &out)) return out;
        struct val c = getattr_v(r, o, n->a->s);
        if (c.t == V_MACRO) return call_macro(r, c.u.m, &A);
        if (c.t == V_FUNC) return call_func(r, c.u.fn, &A);
        RFAIL(r, "'%s' object has no callable attribute '%.40s'", type_name(o), n->a->s);
    }
    struct val c = eval(r, n->a, f);
    eval_args(r, n, f, &A);
    if (c.t == V_MACRO) return call_macro(r, c.u.m, &A);
    if (c.t == V_FUNC) return call_func(r, c.u.fn, &A);
    if (c.t == V_UNDEF) undefined_err(r, c);
    RFAIL(r, "'%s' object is not callable", type_name(c));
}

static struct val eval(struct rt *r, const struct node *n, struct frame *f)
{
    step(r);
    switch (n->k) {
    case N_LIT:
        return n->v;
    case N_NAME:
        return lookup(r, f, n->s);
    case N_LIST:
    case N_TUPLE: {
        struct list *l = list_new(&r->a, n->nk);
        l->tuple = n->k == N_TUPLE;
        for (size_t i = 0; i < n->nk; i++)
            list_push(&r->a, l, eval(r, n->kids[i], f));
        return vlist(l);
    }
    case N_DICT: {
        struct dict *d = dict_new(&r->a);
        for (size_t i = 0; i + 1 < n->nk; i += 2) {
            struct val k = eval(r, n->kids[i], f);
            dict_set(&r->a, d, k, eval(r, n->kids[i + 1], f));
        }
        return vdict(d);
    }
    case N_ATTR:
        return getattr_v(r, eval(r, n->a, f), n->s);
    case N_ITEM: {
        struct val o = eval(r, n->a, f);
        return getitem_v(r, o, eval(r, n->b, f));
    }
    case N_SLICE: {
        struct val o = eval(r, n->a, f);
        struct val a = n->b ? eval(r, n->b, f) : NONE, b = n->c ? eval(r, n->c, f) : NONE,
                   c = n->d ? eval(r, n->d, f) : NONE;
        return slice_v(r, o, a, b, c);
    }
    case N_CALL:
        return eval_call(r, n, f);
    case N_FILTER: {
        struct val v = eval(r, n->a, f);
        struct args A;
        eval_args(r, n, f, &A);
        return filter_apply(r, n->s, v, &A);
    }
    case N_TEST: {
        struct val v = eval(r, n->a, f);
        struct args A;
        eval_args(r, n, f, &A);
        return vbool(test_apply(r, n->s, v, &A) != n->neg);
    }
    case N_BIN:
        return arith(r, n->op, eval(r, n->a, f), eval(r, n->b, f));
    case N_NEG:
    case N_POS: {
        struct val v = eval(r, n->a, f);
        if (v.t == V_UNDEF) undefined_err(r, v);
        if (!is_num(v))
            RFAIL(r, "bad operand type for unary %c: '%s'", n->k == N_NEG ? '-' : '+',
                  type_name(v));
        if (n->k == N_POS) return v.t == V_BOOL ? vint(v.u.b) : v;
        if (v.t == V_FLOAT) return vfloat(-v.u.f);
        int64_t x = v.t == V_INT ? v.u.i : v.u.b;
        if (x == INT64_MIN) RFAIL(r, "integer overflow");
        return vint(-x);
    }
    case N_NOT:
        return vbool(!truthy(eval(r, n->a, f)));
    case N_AND: {
        struct val a = eval(r, n->a, f);
        return truthy(a) ? eval(r, n->b, f) : a;
    }
    case N_OR: {
        struct val a = eval(r, n->a, f);
        return truthy(a) ? a : eval(r, n->b, f);
    }
    case N_COND:
        if (truthy(eval(r, n->a, f))) return eval(r, n->b, f);
        return n->c ? eval(r, n->c, f) : UNDEF;
    case N_CMP: {
        struct val a = eval(r, n->a, f);
        for (size_t i = 0; i < n->nk; i++) {
            struct val b = eval(r, n->kids[i], f);
            bool ok;
            switch (n->ops[i]) {
            case OP2('=', '='):
                ok = val_eq(a, b);
                break;
            case OP2('!', '='):
                ok = !val_eq(a, b);
                break;
            case '<':
                ok = cmp_v(r, a, b, "<") < 0;
                break;
            case '>':
                ok = cmp_v(r, a, b, ">") > 0;
                break;
            case OP2('<', '='):
                ok = cmp_v(r, a, b, "<=") <= 0;
                break;
            case OP2('>', '='):
                ok = cmp_v(r, a, b, ">=") >= 0;
                break;
            case OP_IN:
                ok = contains_v(r, b, a);
                break;
            default:
                ok = !contains_v(r, b, a);
                break;
            }
            if (!ok) return vbool(false);
            a = b;
        }
        return vbool(true);
    }
    default:
        RFAIL(r, "line %d: statement used as an expression", n->line);
    }
}

/* ---- statements ---- */

static void assign(struct rt *r, struct frame *f, const struct node *n, struct val v)
{
    if (n->nk == 1) {
        dict_set_s(&r->a, f->vars, n->names[0], v);
        return;
    }
    if (v.t != V_LIST) v = vlist(iter_list(r, v));
    if (v.u.l->n != n->nk)
        RFAIL(r, "line %d: cannot unpack %zu values into %zu names", n->line, v.u.l->n, n->nk);
    for (size_t i = 0; i < n->nk; i++)
        dict_set_s(&r->a, f->vars, n->names[i], v.u.l->v[i]);
}

static void exec_for(struct rt *r, const struct node *n, struct frame *f, struct obuf *o)
{
    struct list *src = iter_list(r, eval(r, n->a, f));
    if (n->b) { /* for x in xs if cond: filtered before the loop, so loop.* count only kept items */
        struct list *kept = list_new(&r->a, src->n);
        struct frame *tf = frame_new(r, f);
        for (size_t i = 0; i < src->n; i++) {
            step(r);
            tf->vars->n = 0;
            assign(r, tf, n, src->v[i]);
            if (truthy(eval(r, n->b, tf))) list_push(&r->a, kept, src->v[i]);
        }
        src = kept;
    }
    if (!src->n) {
        if (n->d) exec_body(r, n->d, f, o);
        return;
    }
    /* one frame and one loop object for the whole loop, reset per iteration (so
     * assignments do not carry over, as in Jinja) and allocation-free after */
    size_t len = src->n;
    struct frame *lf = frame_new(r, f);
    struct dict *loop = dict_new(&r->a);
    for (size_t i = 0; i < len; i++) {
        step(r);
        lf->vars->n = 0;
        dict_set_s(&r->a, loop, "index", vint((int64_t)i + 1));
        dict_set_s(&r->a, loop, "index0", vint((int64_t)i));
        dict_set_s(&r->a, loop, "revindex", vint((int64_t)(len - i)));
        dict_set_s(&r->a, loop, "revindex0", vint((int64_t)(len - i - 1)));
        dict_set_s(&r->a, loop, "first", vbool(i == 0));
        dict_set_s(&r->a, loop, "last", vbool(i + 1 == len));
        dict_set_s(&r->a, loop, "length", vint((int64_t)len));
        dict_set_s(&r->a, loop, "depth", vint(1));
        dict_set_s(&r->a, loop, "depth0", vint(0));
        dict_set_s(&r->a, loop, "previtem", i ? src->v[i - 1] : vundef("previtem"));
        dict_set_s(&r->a, loop, "nextitem", i + 1 < len ? src->v[i + 1] : vundef("nextitem"));
        dict_set_s(&r->a, lf->vars, "loop", vdict(loop));
        assign(r, lf, n, src->v[i]);
        exec_body(r, n->c, lf, o);
        if (r->ctl == 1) {
            r->ctl = 0;
            break;
        }
        r->ctl = 0;
    }
}

static void exec_node(struct rt *r, const struct node *n, struct frame *f, struct obuf *o)
{
    step(r);
    switch (n->k) {
    case N_BODY:
        exec_body(r, n, f, o);
        return;
    case N_TEXT:
        ob_put(r, o, n->s, n->n);
        return;
    case N_OUT:
        put_str(r, o, eval(r, n->a, f));
        return;
    case N_IF:
        if (truthy(eval(r, n->a, f)))
            exec_body(r, n->b, f, o);
        else if (n->c)
            exec_node(r, n->c, f, o);
        return;
    case N_FOR:
        exec_for(r, n, f, o);
        return;
    case N_SET:
        assign(r, f, n, eval(r, n->a, f));
        return;
    case N_SETATTR: {
        struct val ns = lookup(r, f, n->s);
        if (ns.t != V_DICT || !ns.u.d->ns)
            RFAIL(r, "line %d: cannot assign attribute on non-namespace object '%s'", n->line,
                  n->s);
        dict_set_s(&r->a, ns.u.d, n->s2, eval(r, n->a, f));
        return;
    }
    case N_SETBLOCK: {
        struct obuf b = {0};
        exec_body(r, n->a, f, &b);
        dict_set_s(&r->a, f->vars, n->s, ob_val(&b));
        return;
    }
    case N_MACRO: {
        struct macro *m = ar_alloc(&r->a, sizeof *m);
        m->n = n;
        m->f = f;
        dict_set_s(&r->a, f->vars, n->s, (struct val){.t = V_MACRO, .u.m = m});
        return;
    }
    case N_BREAK:
        r->ctl = 1;
        return;
    case N_CONTINUE:
        r->ctl = 2;
        return;
    default:
        RFAIL(r, "line %d: expression used as a statement", n->line);
    }
}

static void exec_body(struct rt *r, const struct node *n, struct frame *f, struct obuf *o)
{
    if (n->k != N_BODY) {
        exec_node(r, n, f, o);
        return;
    }
    for (size_t i = 0; i < n->nk && !r->ctl; i++)
        exec_node(r, n->kids[i], f, o);
}

int jinja_render(const struct jinja_tmpl *t, struct json_object *vars,
                 const struct jinja_limits *lim, struct sbuf *out, char *err, size_t errn)
{
    struct jinja_limits def;
    if (!lim) {
        jinja_default_limits(&def);
        lim = &def;
    }
    struct jerr e;
    struct rt r = {.e = &e, .lim = lim};
    r.a.limit = lim->max_memory;
    r.a.e = &e;
    if (setjmp(e.jb)) {
        snprintf(err, errn, "%s", e.msg);
        ar_free(&r.a);
        return e.status;
    }
    r.globals = dict_new(&r.a);
    if (vars && json_object_is_type(vars, json_type_object)) {
        struct val g = from_json(&r, vars, 0);
        r.globals = g.u.d;
    }
    struct frame *root = frame_new(&r, NULL);
    struct obuf o = {0};
    exec_body(&r, t->root, root, &o);
    sbuf_append(out, o.p ? o.p : "", o.n);
    ar_free(&r.a);
    return JINJA_OK;
}
