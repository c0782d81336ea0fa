/* Option tables: parsing, usage and markdown; see opts.h. */
#include "opts.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "xalloc.h"

/* ---- strict value parsers ---- */

int opts_parse_ll(const char *s, long long lo, long long hi, long long *out, char *why,
                  size_t whylen)
{
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (end == s || isspace((unsigned char)s[0]) || *end || errno || x < lo || x > hi) {
        snprintf(why, whylen, "expected an integer in [%lld, %lld]", lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

int opts_parse_double(const char *s, double lo, double hi, double *out, char *why, size_t whylen)
{
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (end == s || isspace((unsigned char)s[0]) || *end || errno || !isfinite(d) || d < lo ||
        d > hi) {
        snprintf(why, whylen, "expected a number in [%g, %g]", lo, hi);
        return -1;
    }
    *out = d;
    return 0;
}

int opts_parse_size(const char *s, double lo, double hi, size_t *out, char *why, size_t whylen)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    unsigned long long mul = 1;
    bool ok = end != s && !errno && s[0] != '-' && s[0] != '+' && s[0] != ' ';
    if (ok) {
        if (*end == 'K' || *end == 'k')
            mul = 1ULL << 10, end++;
        else if (*end == 'M' || *end == 'm')
            mul = 1ULL << 20, end++;
        else if (*end == 'G' || *end == 'g')
            mul = 1ULL << 30, end++;
        if (*end == 'B' || *end == 'b') end++;
        ok = !*end && x <= (1ULL << 50) / mul;
    }
    double v = ok ? (double)(x * mul) : 0;
    if (!ok || v < lo || v > hi) {
        snprintf(why, whylen, "expected bytes (K/M/G) in [%.0f, %.0f]", lo, hi);
        return -1;
    }
    *out = (size_t)(x * mul);
    return 0;
}

int opts_parse_bool(const char *s, bool *out)
{
    static const char *const t[] = {"y", "yes", "t", "true", "on", "1"};
    static const char *const f[] = {"n", "no", "f", "false", "off", "0"};
    for (size_t i = 0; i < 6; i++) {
        if (strcasecmp(s, t[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, f[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/* Index of s in "a|b|c", or -1. */
static int enum_index(const char *choices, const char *s)
{
    size_t n = strlen(s);
    int i = 0;
    for (const char *p = choices;; i++) {
        const char *e = strchr(p, '|');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == n && strncmp(p, s, n) == 0) return i;
        if (!e) return -1;
        p = e + 1;
    }
}

/* ---- messages ---- */

/* "--name (ENV)", "ENV (--name)" or whichever exists, the source of the value first. */
static void row_label(const struct opt *o, enum opt_src src, char *out, size_t n)
{
    if (o->name && o->env && src == OPT_SRC_ENV)
        snprintf(out, n, "%s (--%s)", o->env, o->name);
    else if (o->name && o->env)
        snprintf(out, n, "--%s (%s)", o->name, o->env);
    else if (o->name)
        snprintf(out, n, "--%s", o->name);
    else if (o->short_name && !(o->env && src == OPT_SRC_ENV))
        snprintf(out, n, "-%c", o->short_name);
    else
        snprintf(out, n, "%s", o->env ? o->env : "?");
}

static int fail(const struct opts_spec *s, struct opts_result *r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(const struct opts_spec *s, struct opts_result *r, const char *fmt, ...)
{
    int o = snprintf(r->err, sizeof r->err, "%s: ", s->prog);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err + o, sizeof r->err - (size_t)o, fmt, ap);
    va_end(ap);
    return -1;
}

int opts_fail(const struct opts_spec *s, struct opts_result *r, int i, const char *why)
{
    char label[160];
    row_label(&s->opts[i], (enum opt_src)r->src[i], label, sizeof label);
    const char *v = r->val[i] ? r->val[i] : "";
    return fail(s, r, "invalid value '%.300s' for %s: %s", v, label, why);
}

/* ---- storing one value ---- */

static int store(const struct opt *o, void *cfg, const char *v, char *why, size_t whylen)
{
    char *f = (char *)cfg + o->off;
    long long ll;
    bool b;
    switch (o->type) {
    case OPT_STR:
        memcpy(f, &v, sizeof v);
        return 0;
    case OPT_STRBUF:
        if (strlen(v) >= o->size) {
            snprintf(why, whylen, "too long (at most %zu bytes)", o->size - 1);
            return -1;
        }
        memcpy(f, v, strlen(v) + 1);
        return 0;
    case OPT_INT: {
        if (opts_parse_ll(v, (long long)o->lo, (long long)o->hi, &ll, why, whylen)) return -1;
        int x = (int)ll;
        memcpy(f, &x, sizeof x);
        return 0;
    }
    case OPT_I64:
        if (opts_parse_ll(v, (long long)o->lo, (long long)o->hi, &ll, why, whylen)) return -1;
        memcpy(f, &ll, sizeof ll);
        return 0;
    case OPT_DBL: {
        double d;
        if (opts_parse_double(v, o->lo, o->hi, &d, why, whylen)) return -1;
        memcpy(f, &d, sizeof d);
        return 0;
    }
    case OPT_SIZE: {
        size_t z;
        if (opts_parse_size(v, o->lo, o->hi, &z, why, whylen)) return -1;
        memcpy(f, &z, sizeof z);
        return 0;
    }
    case OPT_BOOL:
    case OPT_FLAG:
        if (opts_parse_bool(v, &b) != 0) {
            snprintf(why, whylen, "expected true/false (y/n, 1/0, on/off)");
            return -1;
        }
        memcpy(f, &b, sizeof b);
        return 0;
    case OPT_ENUM: {
        int k = enum_index(o->choices, v);
        if (k < 0) {
            int l = snprintf(why, whylen, "expected one of ");
            for (const char *p = o->choices; *p && l + 3 < (int)whylen; p++) {
                if (*p == '|')
                    l += snprintf(why + l, whylen - (size_t)l, ", ");
                else
                    why[l++] = *p;
            }
            why[l < (int)whylen ? l : (int)whylen - 1] = '\0';
            return -1;
        }
        memcpy(f, &k, sizeof k);
        return 0;
    }
    case OPT_FUNC:
        return o->parse(cfg, v, why, whylen);
    case OPT_RAW:
        return 0;
    }
    return -1;
}

/* ---- the command line ---- */

int opts_find(const struct opts_spec *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if ((s->opts[i].name && strcmp(s->opts[i].name, name) == 0) ||
            (s->opts[i].env && strcmp(s->opts[i].env, name) == 0))
            return i;
    return -1;
}

/* The row of "--name" (name of length nl), exact first, then (OPTS_PREFIX) a unique prefix.
 * -1 unknown, -2 ambiguous. */
static int find_long(const struct opts_spec *s, const char *name, size_t nl)
{
    int hit = -1, nhit = 0;
    for (int i = 0; i < s->n; i++) {
        const char *f = s->opts[i].name;
        if (!f) continue;
        if (strlen(f) == nl && strncmp(f, name, nl) == 0) return i;
        if ((s->flags & OPTS_PREFIX) && nl > 0 && strncmp(f, name, nl) == 0) {
            hit = i;
            nhit++;
        }
    }
    return nhit == 1 ? hit : nhit > 1 ? -2 : -1;
}

static int find_short(const struct opts_spec *s, char c)
{
    for (int i = 0; i < s->n; i++)
        if (s->opts[i].short_name == c) return i;
    return -1;
}

static void push_arg(struct opts_result *r, char *a)
{
    r->args[r->nargs++] = a;
    r->args[r->nargs] = NULL;
}

/* One argument at argv[*k]: fills r->val/src or the positional list.  0, 1 (stop: the rest is
 * positional), or -1. */
static int take_arg(const struct opts_spec *s, struct opts_result *r, int argc, char **argv, int *k)
{
    char *a = argv[*k];
    bool help_ok = !(s->flags & OPTS_NO_HELP);
    if (strcmp(a, "--") == 0) {
        if (s->flags & OPTS_KEEP_DASHDASH) push_arg(r, a);
        return 1;
    }
    if (help_ok && (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)) {
        r->help = OPTS_HELP_TEXT;
        return 0;
    }
    if (help_ok && strcmp(a, "--help-markdown") == 0) {
        r->help = OPTS_HELP_MARKDOWN;
        return 0;
    }
    if (a[0] != '-' || a[1] == '\0') { /* positional ("-" is one: stdin) */
        push_arg(r, a);
        return (s->flags & OPTS_STOP_AT_ARG) ? 1 : 0;
    }
    int i;
    const char *inline_val = NULL;
    if (a[1] == '-') {
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        i = find_long(s, name, nl);
        if (i == -2) return fail(s, r, "option '%s' is ambiguous (see --help)", a);
        if (eq) inline_val = eq + 1;
    } else {
        i = find_short(s, a[1]);
        if (a[2]) inline_val = a + 2;
    }
    if (i < 0) {
        if (s->flags & OPTS_KEEP_UNKNOWN) {
            push_arg(r, a);
            return 0;
        }
        return fail(s, r, "unknown option '%s' (see --help)", a);
    }
    const struct opt *o = &s->opts[i];
    const char *v;
    if (o->type == OPT_FLAG) {
        if (inline_val) return fail(s, r, "option '%s' takes no value", a);
        v = "true";
    } else if (inline_val) {
        v = inline_val;
    } else if (*k + 1 < argc) {
        v = argv[++*k];
    } else {
        return fail(s, r, "option '%s' needs a value", a);
    }
    r->val[i] = v;
    r->src[i] = OPT_SRC_FLAG;
    return 0;
}

int opts_parse(const struct opts_spec *s, void *cfg, int argc, char **argv, struct opts_result *r)
{
    memset(r, 0, sizeof *r);
    r->args = xcalloc((size_t)(argc > 0 ? argc : 0) + 1, sizeof *r->args);
    if (s->n > OPTS_MAX) return fail(s, r, "option table too large (%d rows)", s->n);
    /* the environment first: a flag seen below replaces it */
    for (int i = 0; i < s->n; i++) {
        const char *e = s->opts[i].env ? getenv(s->opts[i].env) : NULL;
        if (e && (*e || (s->flags & OPTS_EMPTY_ENV))) {
            r->val[i] = e;
            r->src[i] = OPT_SRC_ENV;
        }
    }
    for (int k = 1; k < argc; k++) {
        int rc = take_arg(s, r, argc, argv, &k);
        if (rc < 0) return -1;
        if (r->help) return 0;
        if (rc > 0) {
            for (k++; k < argc; k++)
                push_arg(r, argv[k]);
            break;
        }
    }
    for (int i = 0; i < s->n; i++) {
        const struct opt *o = &s->opts[i];
        if (!r->val[i] && o->def) {
            r->val[i] = o->def;
            r->src[i] = OPT_SRC_DEFAULT;
        }
        if (!r->val[i]) continue;
        char why[256] = "bad value";
        if (store(o, cfg, r->val[i], why, sizeof why) != 0) return opts_fail(s, r, i, why);
    }
    return 0;
}

int opts_defaults(const struct opts_spec *s, void *cfg, char *err, size_t errlen)
{
    for (int i = 0; i < s->n; i++) {
        char why[256] = "bad value";
        if (s->opts[i].def && store(&s->opts[i], cfg, s->opts[i].def, why, sizeof why) != 0) {
            snprintf(err, errlen, "%s: bad default '%s' of row %d: %s", s->prog, s->opts[i].def, i,
                     why);
            return -1;
        }
    }
    return 0;
}

void opts_result_free(struct opts_result *r)
{
    free(r->args);
    r->args = NULL;
    r->nargs = 0;
}

bool opts_given(const struct opts_result *r, int i)
{
    return i >= 0 && i < OPTS_MAX && (r->src[i] == OPT_SRC_ENV || r->src[i] == OPT_SRC_FLAG);
}

/* ---- usage and markdown ---- */

static const char *shown_default(const struct opt *o)
{
    if (o->def_help) return o->def_help;
    if (o->type == OPT_FLAG) return NULL;
    if (o->def) return *o->def ? o->def : "\"\"";
    return NULL;
}

static int flag_text(const struct opt *o, char *buf, size_t n)
{
    int l = 0;
    if (o->short_name && o->name)
        l = snprintf(buf, n, "-%c, --%s", o->short_name, o->name);
    else if (o->short_name)
        l = snprintf(buf, n, "-%c", o->short_name);
    else if (o->name)
        l = snprintf(buf, n, "--%s", o->name);
    else
        buf[0] = '\0';
    if (o->meta && (o->name || o->short_name))
        l += snprintf(buf + l, n - (size_t)l, " %s", o->meta);
    return l;
}

/* Writes text (words) from column `col`, wrapping at `width` with continuation lines indented
 * to `indent`. */
static void put_wrapped(FILE *out, const char *text, int col, int indent, int width)
{
    const char *p = text;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p) break;
        size_t wl = strcspn(p, " ");
        if (col > indent && col + 1 + (int)wl > width) {
            fprintf(out, "\n%*s", indent, "");
            col = indent;
        } else if (col > indent) {
            fputc(' ', out);
            col++;
        }
        fwrite(p, 1, wl, out);
        col += (int)wl;
        p += wl;
    }
    fputc('\n', out);
}

static void usage_row(FILE *out, const struct opt *o, int fw, int ew, bool env_col)
{
    char buf[160], text[1400];
    flag_text(o, buf, sizeof buf);
    int tl = snprintf(text, sizeof text, "%s", o->help ? o->help : "");
    if (!env_col && o->env && tl < (int)sizeof text)
        tl += snprintf(text + tl, sizeof text - (size_t)tl, " (env %s)", o->env);
    const char *d = shown_default(o);
    if (d && tl < (int)sizeof text) snprintf(text + tl, sizeof text - (size_t)tl, " [%s]", d);
    int col;
    if (env_col)
        col = fprintf(out, "  %-*s  %-*s  ", fw, buf, ew, o->env ? o->env : "");
    else
        col = fprintf(out, "  %-*s  ", fw, buf);
    /* one line per row with an environment column (grep finds the whole row) */
    int indent = (int)(2 + fw + 2 + (env_col ? ew + 2 : 0));
    put_wrapped(out, text, col, indent, env_col ? 10000 : 100);
}

void opts_usage(const struct opts_spec *s, FILE *out)
{
    int fw = 0, ew = 0;
    bool env_col = s->flags & OPTS_ENV_COLUMN;
    char buf[160];
    for (int i = 0; i < s->n; i++) {
        int l = flag_text(&s->opts[i], buf, sizeof buf);
        if (l > fw) fw = l;
        if (env_col && s->opts[i].env && (int)strlen(s->opts[i].env) > ew)
            ew = (int)strlen(s->opts[i].env);
    }
    if (fw > 26) fw = 26;
    for (int i = 0; i < s->n; i++)
        if (s->opts[i].name || s->opts[i].short_name || env_col)
            usage_row(out, &s->opts[i], fw, ew, env_col);
    if (!(s->flags & OPTS_NO_HELP)) {
        const struct opt help = {.name = "help",
                                 .short_name = 'h',
                                 .type = OPT_FLAG,
                                 .help = "this text (--help-markdown: the options as markdown "
                                         "table rows)"};
        usage_row(out, &help, fw, ew, env_col);
    }
}

/* `|` inside a table cell would end it. */
static void put_cell(FILE *out, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '|') fputc('\\', out);
        fputc(*s, out);
    }
}

void opts_markdown(const struct opts_spec *s, FILE *out)
{
    fputs("| variable | flag | default | meaning |\n|---|---|---|---|\n", out);
    char buf[160];
    for (int i = 0; i < s->n; i++) {
        const struct opt *o = &s->opts[i];
        fputs("| ", out);
        if (o->env) fprintf(out, "`%s`", o->env);
        fputs(" | ", out);
        if (flag_text(o, buf, sizeof buf) > 0) {
            fputc('`', out);
            put_cell(out, buf);
            fputc('`', out);
        }
        fputs(" | ", out);
        /* a literal default in backticks, a described one (def_help) as text */
        const char *d = shown_default(o);
        if (d && !o->def_help) fputc('`', out);
        if (d) put_cell(out, d);
        if (d && !o->def_help) fputc('`', out);
        if (!d) fputs("—", out);
        fputs(" | ", out);
        put_cell(out, o->help);
        fputs(" |\n", out);
    }
}
