/* Chat formatting for /v1/chat/completions, /apply-template and the
 * chat-template command: the model's own template (GGUF metadata
 * tokenizer.chat_template, Jinja, rendered by jinja.c the way HF's
 * apply_chat_template renders it), or ChatML when the file has none or its
 * template does not parse; and the tokenization of the rendered prompt with
 * the vocabulary's special tokens recognised in the text (as llama.cpp does). */
#ifndef SGPU_MODEL_CHAT_H
#define SGPU_MODEL_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include <json-c/json.h>

#include "sbuf.h"
#include "tokenizer.h"

struct chat_tmpl;

/* From a tokenizer (bos/eos strings, special tokens) and template source
 * (NULL or empty: ChatML).  Never fails: a template that does not parse
 * falls back to ChatML and its parse error stays in chat_tmpl_error(). */
struct chat_tmpl *chat_tmpl_new(const struct tokenizer *tok, const char *src, size_t n);
void chat_tmpl_free(struct chat_tmpl *t);
/* "jinja" (the model's template), "chatml" (no template) or "chatml-fallback" */
const char *chat_tmpl_kind(const struct chat_tmpl *t);
const char *chat_tmpl_error(const struct chat_tmpl *t); /* parse error or NULL */

struct chat_opts {
    bool add_generation_prompt;
    struct json_object *tools;     /* `tools`; NULL binds None, as HF does */
    struct json_object *documents; /* `documents`; NULL binds None */
};

/* Render messages (a JSON array of {role, content, ...}; a content array of
 * text parts is joined into one string unless the template renders parts
 * itself, which chat_tmpl_new probes once).  0 on success with
 * the prompt appended to out; else an HTTP status (400: bad messages, the
 * template's raise_exception or a render bound; 500: the template failed) with
 * a message in err and out unchanged. */
int chat_render(const struct chat_tmpl *t, struct json_object *messages, const struct chat_opts *o,
                struct sbuf *out, char *err, size_t errn);

/* Token ids of a rendered prompt: special tokens (control, user-defined,
 * unknown) written in the text become their ids, the text between them is
 * encoded normally; BOS first when the vocabulary adds one and the prompt
 * does not already start with it. */
void chat_tokenize(const struct chat_tmpl *t, const char *text, size_t n, struct ids *out);

#endif
