/* A Jinja2 subset interpreter for chat templates (tokenizer.chat_template in
 * GGUF, the same string as HF's tokenizer_config.json), rendering as HF's
 * apply_chat_template does: trim_blocks and lstrip_blocks on, one trailing
 * newline of the template dropped, no HTML escaping, the loopcontrols
 * extension (break/continue), HF's globals raise_exception(msg) and
 * strftime_now(fmt), and HF's tojson (json.dumps with ensure_ascii=False).
 *
 * Pipeline: source -> lexer (tokens, whitespace control applied to the text
 * between tags) -> recursive-descent parser (AST, in an arena owned by the
 * template) -> tree-walking evaluator (every value made while rendering lives
 * in a per-render arena, released in one go, also on error).
 *
 * Supported: see docs/model.md ("Chat templates").  Anything else is a
 * syntax error at parse time (unknown tag, operator) or a runtime error at
 * render time (unknown filter, test or method; type errors), never undefined
 * behaviour.
 *
 * Bounds (a hostile template or request cannot take unbounded memory or CPU):
 * the source is at most JINJA_MAX_SOURCE bytes and nests at most
 * JINJA_MAX_NESTING constructs; a render stops with JINJA_ELIMIT once it has
 * written max_output bytes, allocated max_memory bytes of values, taken
 * max_steps evaluation steps (one per node evaluated or loop iteration) or
 * nested max_depth macro calls. */
#ifndef SGPU_MODEL_JINJA_H
#define SGPU_MODEL_JINJA_H

#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "sbuf.h"

#define JINJA_MAX_SOURCE (1u << 20) /* bytes of template source */
#define JINJA_MAX_NESTING 256       /* nested blocks/expressions in the source */

enum jinja_status {
    JINJA_OK = 0,
    JINJA_ESYNTAX = 1,  /* the template does not parse (or is too large) */
    JINJA_ERAISE = 2,   /* the template called raise_exception(msg); err = msg */
    JINJA_ERUNTIME = 3, /* type error, undefined attribute, unknown filter... */
    JINJA_ELIMIT = 4,   /* a render bound was hit */
};

struct jinja_limits {
    size_t max_output; /* bytes of rendered text (each buffer, incl. macro/set blocks) */
    size_t max_memory; /* bytes allocated for values during one render */
    uint64_t max_steps;
    int max_depth; /* nested macro calls */
};

struct jinja_tmpl; /* opaque, immutable once parsed: renders may share it */

/* Defaults: 8 MiB output, 64 MiB memory, 2e6 steps, depth 32. */
void jinja_default_limits(struct jinja_limits *l);

/* Parse src[0..n).  0 and *out on success; else a jinja_status with a
 * message naming the line in err. */
int jinja_parse(const char *src, size_t n, struct jinja_tmpl **out, char *err, size_t errn);
void jinja_free(struct jinja_tmpl *t);

/* Render with the members of the JSON object vars as global variables (null
 * vars: none).  Appends to out on success; on error out is unchanged and err
 * holds the message (for JINJA_ERAISE: the template's own message). */
int jinja_render(const struct jinja_tmpl *t, struct json_object *vars,
                 const struct jinja_limits *lim, struct sbuf *out, char *err, size_t errn);

const char *jinja_status_name(int status);

#endif
