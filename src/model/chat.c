/* Chat formatting: the model's Jinja template or ChatML, and special-token
 * aware tokenization of the result.  See chat.h. */
#include "chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja.h"
#include "xalloc.h"

struct chat_tmpl {
    const struct tokenizer *tok;
    struct jinja_tmpl *j; /* NULL: ChatML */
    bool had_template;
    bool typed_content; /* the template reads content parts ([{type, text}]) itself */
    char err[256];
    const char *bos, *eos, *unk, *pad; /* token texts ("" when the vocabulary has none) */
    /* special tokens by text: map, which first bytes start one, distinct lengths */
    struct strmap sp;
    bool first[256];
    size_t lens[256]; /* distinct special-token lengths, longest first */
    size_t n_lens;
};

static const char *tok_text(const struct tokenizer *tok, int id)
{
    return tok && id >= 0 && id < tok->n_vocab && tok->text[id] ? tok->text[id] : "";
}

/* Does the template render a text part given as [{"type": "text", "text": ...}]
 * (Gemma 3, Llama 4, Mistral Small 3.1 do)?  Then content arrays reach it as
 * they are, as in HF; otherwise their texts are joined into one string first
 * (so a string-only template does not print a Python list), as llama.cpp does. */
static bool probe_typed_content(const struct chat_tmpl *t)
{
    static const char needle[] = "sgpu-typed-content-probe";
    struct json_object *vars = json_object_new_object(), *msgs = json_object_new_array(),
                       *m = json_object_new_object(), *parts = json_object_new_array(),
                       *part = json_object_new_object();
    json_object_object_add(part, "type", json_object_new_string("text"));
    json_object_object_add(part, "text", json_object_new_string(needle));
    json_object_array_add(parts, part);
    json_object_object_add(m, "role", json_object_new_string("user"));
    json_object_object_add(m, "content", parts);
    json_object_array_add(msgs, m);
    json_object_object_add(vars, "messages", msgs);
    json_object_object_add(vars, "bos_token", json_object_new_string(t->bos));
    json_object_object_add(vars, "eos_token", json_object_new_string(t->eos));
    json_object_object_add(vars, "add_generation_prompt", json_object_new_boolean(true));
    json_object_object_add(vars, "tools", NULL);
    json_object_object_add(vars, "documents", NULL);
    struct jinja_limits lim;
    jinja_default_limits(&lim);
    struct sbuf out = SBUF_INIT;
    char err[256];
    bool typed = jinja_render(t->j, vars, &lim, &out, err, sizeof err) == JINJA_OK && out.data &&
                 strstr(out.data, needle) && !strstr(out.data, "'type'") &&
                 !strstr(out.data, "\"type\"");
    sbuf_free(&out);
    json_object_put(vars);
    return typed;
}

struct chat_tmpl *chat_tmpl_new(const struct tokenizer *tok, const char *src, size_t n)
{
    struct chat_tmpl *t = xcalloc(1, sizeof *t);
    t->tok = tok;
    t->bos = tok_text(tok, tok ? tok->bos : -1);
    t->eos = tok_text(tok, tok ? tok->eos : -1);
    t->unk = tok_text(tok, tok ? tok->unk : -1);
    t->pad = tok_text(tok, tok ? tok->pad : -1);
    if (src && n) {
        t->had_template = true;
        if (jinja_parse(src, n, &t->j, t->err, sizeof t->err) != JINJA_OK) t->j = NULL;
    }
    if (t->j) t->typed_content = probe_typed_content(t);
    strmap_init(&t->sp, 64);
    for (int id = 0; tok && id < tok->n_vocab; id++) {
        uint8_t ty = tok->type[id];
        size_t len = tok->len[id];
        if ((ty != TT_CONTROL && ty != TT_USER && ty != TT_UNKNOWN) || len == 0) continue;
        strmap_put(&t->sp, tok->text[id], len, id);
        t->first[(unsigned char)tok->text[id][0]] = true;
        bool seen = false;
        for (size_t k = 0; k < t->n_lens; k++)
            if (t->lens[k] == len) seen = true;
        if (!seen && t->n_lens < sizeof t->lens / sizeof t->lens[0]) t->lens[t->n_lens++] = len;
    }
    /* longest first, so "<|im_start|>" wins over a shorter special prefix */
    for (size_t i = 1; i < t->n_lens; i++)
        for (size_t k = i; k > 0 && t->lens[k - 1] < t->lens[k]; k--) {
            size_t x = t->lens[k];
            t->lens[k] = t->lens[k - 1];
            t->lens[k - 1] = x;
        }
    return t;
}

void chat_tmpl_free(struct chat_tmpl *t)
{
    if (!t) return;
    jinja_free(t->j);
    strmap_free(&t->sp);
    free(t);
}

const char *chat_tmpl_kind(const struct chat_tmpl *t)
{
    return t->j ? "jinja" : t->had_template ? "chatml-fallback" : "chatml";
}

const char *chat_tmpl_error(const struct chat_tmpl *t)
{
    return t->had_template && !t->j ? t->err : NULL;
}

/* Checked copy of the messages: each an object with a string role; content a
 * string, null/absent, or an array of text parts (joined into one string);
 * other members passed through unchanged. */
static struct json_object *norm_messages(struct json_object *msgs, bool keep_parts, char *err,
                                         size_t errn)
{
    if (!msgs || !json_object_is_type(msgs, json_type_array) ||
        json_object_array_length(msgs) == 0) {
        snprintf(err, errn, "`messages` must be a non-empty array");
        return NULL;
    }
    struct json_object *out = json_object_new_array();
    size_t n = json_object_array_length(msgs);
    for (size_t i = 0; i < n; i++) {
        struct json_object *m = json_object_array_get_idx(msgs, i), *role, *content = NULL;
        if (!m || !json_object_is_type(m, json_type_object) ||
            !json_object_object_get_ex(m, "role", &role) || !role ||
            !json_object_is_type(role, json_type_string)) {
            snprintf(err, errn, "messages[%zu] needs a string `role`", i);
            json_object_put(out);
            return NULL;
        }
        struct json_object *nm = json_object_new_object();
        bool has_content = false; /* json-c holds a JSON null as a NULL value */
        json_object_object_foreach(m, k, v)
        {
            if (strcmp(k, "content") == 0) {
                content = v;
                has_content = true;
                continue;
            }
            json_object_object_add(nm, k, json_object_get(v));
        }
        if (content && json_object_is_type(content, json_type_array) && keep_parts) {
            json_object_object_add(nm, "content", json_object_get(content));
        } else if (content && json_object_is_type(content, json_type_array)) {
            struct sbuf b = SBUF_INIT;
            for (size_t pi = 0; pi < json_object_array_length(content); pi++) {
                struct json_object *part = json_object_array_get_idx(content, pi), *tx;
                if (!part || !json_object_is_type(part, json_type_object) ||
                    !json_object_object_get_ex(part, "text", &tx) || !tx ||
                    !json_object_is_type(tx, json_type_string)) {
                    snprintf(err, errn, "messages[%zu]: only text content parts are supported", i);
                    sbuf_free(&b);
                    json_object_put(nm);
                    json_object_put(out);
                    return NULL;
                }
                sbuf_append(&b, json_object_get_string(tx), (size_t)json_object_get_string_len(tx));
            }
            json_object_object_add(nm, "content",
                                   json_object_new_string_len(b.data ? b.data : "", (int)b.len));
            sbuf_free(&b);
        } else if (content && !json_object_is_type(content, json_type_string) &&
                   !json_object_is_type(content, json_type_null)) {
            snprintf(err, errn,
                     "messages[%zu]: `content` must be a string or an array of text parts", i);
            json_object_put(nm);
            json_object_put(out);
            return NULL;
        } else if (has_content) {
            json_object_object_add(nm, "content", json_object_get(content));
        }
        json_object_array_add(out, nm);
    }
    return out;
}

/* "<|im_start|>{role}\n{content}<|im_end|>\n" per message, then
 * "<|im_start|>assistant\n" when a generation prompt is asked for */
static void render_chatml(struct json_object *msgs, bool gen, struct sbuf *out)
{
    size_t n = json_object_array_length(msgs);
    for (size_t i = 0; i < n; i++) {
        struct json_object *m = json_object_array_get_idx(msgs, i), *role, *content;
        json_object_object_get_ex(m, "role", &role);
        sbuf_puts(out, "<|im_start|>");
        sbuf_append(out, json_object_get_string(role), (size_t)json_object_get_string_len(role));
        sbuf_putc(out, '\n');
        if (json_object_object_get_ex(m, "content", &content) && content &&
            json_object_is_type(content, json_type_string))
            sbuf_append(out, json_object_get_string(content),
                        (size_t)json_object_get_string_len(content));
        sbuf_puts(out, "<|im_end|>\n");
    }
    if (gen) sbuf_puts(out, "<|im_start|>assistant\n");
}

int chat_render(const struct chat_tmpl *t, struct json_object *messages, const struct chat_opts *o,
                struct sbuf *out, char *err, size_t errn)
{
    struct json_object *msgs = norm_messages(messages, t->j && t->typed_content, err, errn);
    if (!msgs) return 400;
    if (!t->j) {
        render_chatml(msgs, o->add_generation_prompt, out);
        json_object_put(msgs);
        return 0;
    }
    struct json_object *vars = json_object_new_object();
    json_object_object_add(vars, "messages", msgs);
    json_object_object_add(vars, "bos_token", json_object_new_string(t->bos));
    json_object_object_add(vars, "eos_token", json_object_new_string(t->eos));
    /* HF also passes the other special tokens it knows */
    if (*t->unk) json_object_object_add(vars, "unk_token", json_object_new_string(t->unk));
    if (*t->pad) json_object_object_add(vars, "pad_token", json_object_new_string(t->pad));
    json_object_object_add(vars, "add_generation_prompt",
                           json_object_new_boolean(o->add_generation_prompt));
    /* as HF: tools and documents are None (defined) when the request has none */
    json_object_object_add(vars, "tools", o->tools ? json_object_get(o->tools) : NULL);
    json_object_object_add(vars, "documents", o->documents ? json_object_get(o->documents) : NULL);
    struct jinja_limits lim;
    jinja_default_limits(&lim);
    char msg[512];
    int rc = jinja_render(t->j, vars, &lim, out, msg, sizeof msg);
    json_object_put(vars);
    switch (rc) {
    case JINJA_OK:
        return 0;
    case JINJA_ERAISE:
        snprintf(err, errn, "chat template: %s", msg);
        return 400;
    case JINJA_ELIMIT:
        snprintf(err, errn, "chat template: %s", msg);
        return 400;
    default:
        snprintf(err, errn, "chat template error: %s", msg);
        return 500;
    }
}

void chat_tokenize(const struct chat_tmpl *t, const char *text, size_t n, struct ids *out)
{
    const struct tokenizer *tok = t->tok;
    struct ids tmp = {0};
    size_t seg = 0, i = 0;
    while (i < n) {
        int id = -1;
        size_t len = 0;
        if (t->first[(unsigned char)text[i]])
            for (size_t k = 0; k < t->n_lens && id < 0; k++)
                if (t->lens[k] <= n - i) {
                    id = strmap_get(&t->sp, text + i, t->lens[k]);
                    len = t->lens[k];
                }
        if (id < 0) {
            i++;
            continue;
        }
        if (i > seg) tok_encode(tok, text + seg, i - seg, false, &tmp);
        ids_push(&tmp, id);
        i += len;
        seg = i;
    }
    if (n > seg) tok_encode(tok, text + seg, n - seg, false, &tmp);
    if (tok->add_bos && tok->bos >= 0 && (tmp.n == 0 || tmp.v[0] != tok->bos))
        ids_push(out, tok->bos);
    for (size_t k = 0; k < tmp.n; k++)
        ids_push(out, tmp.v[k]);
    ids_free(&tmp);
}
