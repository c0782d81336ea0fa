/* Request envelope {"auth_data": {...}, "payload": ..., "session_id": ...}.
 * 422 bodies are byte-identical to PyWorker's (aiohttp json_response: Python
 * json.dumps default separators, Content-Type application/json; charset=utf-8),
 * docs/protocol.md §3.3.  Where PyWorker crashes with a 500 (auth_data not an
 * object, body not an object) we answer 422 with a clear message instead.
 *
 * Parse cost before authentication is bounded (issue 8): auth_data may be at
 * most AUTH_DATA_MAX bytes of text (422 otherwise; checked on the span, before
 * any parse, on the large-body path), and on the large-body path a payload
 * whose workload needs the whole tree (comfyui, a workload path through an
 * array, a non-object payload) is parsed only after the grant verified
 * (envelope_parse_deferred); until then its workload is the handler default. */
#include <string.h>

#include <event2/buffer.h>

#include "envelope.h"
#include "jspan.h"
#include "log.h"
#include "reply.h"

#define CT_422 "application/json; charset=utf-8"
/* A grant is ~0.5 KB of JSON; anything much larger is not one, and must not be parsed (a JSON
 * tree costs ~30-45x its text) before anything is authenticated. */
#define AUTH_DATA_MAX 16384
#define AUTH_TOO_LARGE "{\"auth_data\": \"larger than 16384 bytes\"}"

static const char *const keys_v1[] = {"signature", "cost", "endpoint", "reqnum", "url"};
static const char *const keys_v2[] = {"cost",        "endpoint",  "reqnum",
                                      "request_idx", "signature", "url"};

static void reply_422(struct evhttp_request *req, const char *body)
{
    reply_json(req, 422, CT_422, body, strlen(body));
}

static struct pyj_value *parse_span(const char *s, size_t n)
{
    struct pyj_value *v = NULL;
    char e[8];
    if (pyj_parse(s, n, &v, e, sizeof e) != 0) return NULL;
    return v;
}

/* Value span of member `key` of the object text p[0..n), or false. */
static bool member(const char *p, size_t n, const char *key, struct jspan *out)
{
    const char *const k[] = {key};
    return n && p[0] == '{' && jspan_members(p, n, k, 1, out) == 0 && out->found;
}

static void set_parsed(struct pyj_value *o, const char *p, size_t n, const char *key)
{
    struct jspan sp;
    if (!member(p, n, key, &sp)) return;
    struct pyj_value *v = parse_span(p + sp.off, sp.len);
    pyj_object_set(o, key, v ? v : pyj_new_null());
}

static void set_raw_string(struct pyj_value *o, const char *p, size_t n, const char *key)
{
    struct jspan sp;
    if (member(p, n, key, &sp)) pyj_object_set(o, key, pyj_new_string(p + sp.off, sp.len));
}

/* Large bodies: a stand-in payload object holding only what the payload
 * check and the workload rule read, parsed from spans.  *deferred = true when
 * the workload rule needs the whole tree: it is parsed after authentication. */
static struct pyj_value *synth_payload(const struct handler *h, const char *p, size_t n,
                                       bool *deferred)
{
    struct jspan sp;
    struct pyj_value *o = pyj_new_object();
    if (h->check == PC_TGI && member(p, n, "inputs", &sp))
        pyj_object_set(o, "inputs", pyj_new_null());
    switch (h->wl) {
    case WL_CONST:
        break;
    case WL_TGI:
        set_parsed(o, p, n, "parameters");
        break;
    case WL_OPENAI:
        set_parsed(o, p, n, "max_tokens");
        set_parsed(o, p, n, "max_completion_tokens");
        /* prompt-length estimate from the raw span lengths (escapes counted as
         * written): close enough for a cost estimate, and no big parse */
        set_raw_string(o, p, n, "prompt");
        set_raw_string(o, p, n, "messages");
        break;
    case WL_FIELD: {
        const char *cur = p, *path = h->wl_field;
        size_t cn = n;
        char seg[128];
        struct pyj_value *parent = o;
        while (*path) {
            size_t l = strcspn(path, ".");
            if (l >= sizeof seg) break;
            memcpy(seg, path, l);
            seg[l] = '\0';
            path += l;
            if (*path == '.') path++;
            if (cn == 0 || cur[0] != '{') { /* arrays on the path: parse fully, after auth */
                *deferred = true;
                break;
            }
            if (!member(cur, cn, seg, &sp)) break;
            cur += sp.off;
            cn = sp.len;
            if (*path) {
                struct pyj_value *child = pyj_new_object();
                pyj_object_set(parent, seg, child);
                parent = child;
            } else {
                struct pyj_value *v = parse_span(cur, cn);
                pyj_object_set(parent, seg, v ? v : pyj_new_null());
            }
        }
        break;
    }
    case WL_COMFY: /* width/height/steps anywhere in the tree: parse fully, after auth */
        *deferred = true;
        break;
    }
    if (h->check == PC_TGI && member(p, n, "parameters", &sp) && !pyj_get(o, "parameters"))
        pyj_object_set(o, "parameters", pyj_new_null());
    return o;
}

/* Bodies over SGPU_FULL_PARSE_MAX: locate the top-level members with jspan,
 * parse auth_data and session_id strictly, and stand in for the payload (its
 * bytes are forwarded as they are; the model server validates them), as
 * docs/design.md pitfall 15 explains for bodies over ~32 KB. */
static int parse_lite(const struct handler *h, const char *body, size_t len, struct envelope *env)
{
    static const char *const top[] = {"auth_data", "payload", "session_id"};
    struct jspan sp[3];
    if (jspan_members(body, len, top, 3, sp) != 0) return -1;
    /* cheap checks before any parse: auth_data (and session_id, a 13-character id) small */
    if ((sp[0].found && sp[0].len > AUTH_DATA_MAX) || (sp[2].found && sp[2].len > AUTH_DATA_MAX))
        return -2;
    struct pyj_value *doc = pyj_new_object();
    for (int i = 0; i < 3; i += 2) {
        if (!sp[i].found) continue;
        struct pyj_value *v = parse_span(body + sp[i].off, sp[i].len);
        if (!v) {
            pyj_free(doc);
            return -1;
        }
        pyj_object_set(doc, top[i], v);
    }
    if (sp[1].found) {
        const char *p = body + sp[1].off;
        size_t n = sp[1].len;
        struct jspan isp;
        if (h->unwrap_input && member(p, n, "input", &isp) && p[isp.off] == '{') {
            p += isp.off;
            n = isp.len;
        }
        bool deferred = false;
        struct pyj_value *pv;
        if (p[0] == '{') {
            pv = synth_payload(h, p, n, &deferred);
        } else if (h->check != PC_ANY) {
            pv = pyj_new_null(); /* "payload must be a dictionary" without parsing it */
        } else {
            pv = pyj_new_null(); /* any JSON value: parsed after auth for the workload */
            deferred = true;
        }
        env->deferred = deferred;
        pyj_object_set(doc, "payload", pv);
        env->payload_raw = p;
        env->payload_len = n;
    }
    env->doc = doc;
    return 0;
}

int envelope_parse_deferred(struct evhttp_request *req, struct envelope *env)
{
    if (!env->deferred) return 0;
    env->deferred = false;
    struct pyj_value *pv = parse_span(env->payload_raw, env->payload_len);
    if (!pv) {
        reply_422(req, "{\"error\": \"invalid JSON\"}");
        return -1;
    }
    pyj_object_set(env->doc, "payload", pv);
    env->payload = pv;
    return 0;
}

void envelope_free(struct envelope *env)
{
    pyj_free(env->doc);
    memset(env, 0, sizeof *env);
}

/* 422 when auth_data or payload is missing (PyWorker's body); true when it replied. */
static bool reply_missing(struct evhttp_request *req, const struct envelope *env)
{
    if (env->auth && env->payload) return false;
    struct sbuf b = SBUF_INIT;
    sbuf_putc(&b, '{');
    if (!env->auth) sbuf_puts(&b, "\"auth_data\": \"field missing\"");
    if (!env->payload)
        sbuf_puts(&b, env->auth ? "\"payload\": \"field missing\""
                                : ", \"payload\": \"field missing\"");
    sbuf_putc(&b, '}');
    reply_422(req, b.data);
    sbuf_free(&b);
    return true;
}

/* The members of the 422 body (after its '{', in b) for what auth_data lacks: not an object,
 * or the scheme's keys missing. */
static void check_auth(const struct worker *w, const struct envelope *env, struct sbuf *b)
{
    if (env->auth->type != PYJ_OBJECT) {
        sbuf_puts(b, "\"auth_data\": \"must be a JSON object\"");
        return;
    }
    const char *const *keys = w->cfg.scheme == AUTH_FIELDS_V1 ? keys_v1 : keys_v2;
    size_t nk = w->cfg.scheme == AUTH_FIELDS_V1 ? 5 : 6;
    bool any = false;
    for (size_t i = 0; i < nk; i++) {
        if (pyj_get(env->auth, keys[i])) continue;
        sbuf_puts(b, any ? ", \"" : "\"auth_data\": {\"");
        sbuf_puts(b, keys[i]);
        sbuf_puts(b, "\": \"missing parameter\"");
        any = true;
    }
    if (any) sbuf_putc(b, '}');
}

/* The same for the handler's payload check ("object", "tgi"), after what check_auth wrote. */
static void check_payload(const struct worker *w, const struct handler *h,
                          const struct envelope *env, struct sbuf *b)
{
    const char *sep = b->len > 1 ? ", " : "";
    if (h->check != PC_ANY && env->payload->type != PYJ_OBJECT) {
        sbuf_printf(b, "%s\"payload\": {\"data\": \"payload must be a dictionary\"}", sep);
    } else if (h->check == PC_TGI) {
        /* G1 (PyWorker workers/tgi) requires "parameters"; the current worker (G3) forwards a
         * payload without it (the workload then defaults, see handlers.c) */
        bool ni = !pyj_get(env->payload, "inputs"),
             np = worker_is_g1(&w->cfg) && !pyj_get(env->payload, "parameters");
        if (ni || np) {
            sbuf_printf(b, "%s\"payload\": {", sep);
            if (ni) sbuf_puts(b, "\"inputs\": \"missing parameter\"");
            if (np)
                sbuf_puts(b, ni ? ", \"parameters\": \"missing parameter\""
                                : "\"parameters\": \"missing parameter\"");
            sbuf_putc(b, '}');
        }
    }
}

/* 422 naming every bad field of auth_data and the payload; true when it replied. */
static bool reply_bad_fields(const struct worker *w, const struct handler *h,
                             struct evhttp_request *req, const struct envelope *env)
{
    struct sbuf b = SBUF_INIT;
    sbuf_putc(&b, '{');
    check_auth(w, env, &b);
    check_payload(w, h, env, &b);
    bool bad = b.len > 1;
    if (bad) {
        sbuf_putc(&b, '}');
        reply_422(req, b.data);
    }
    sbuf_free(&b);
    return bad;
}

/* Small bodies (fully parsed): the payload is forwarded as the bytes the client sent (B7:
 * nothing is dropped); if the scanner cannot place it, the caller re-serialises it
 * (payload_raw NULL).  -1 after a 422 (auth_data too large). */
static int place_payload(const struct handler *h, struct evhttp_request *req, const char *body,
                         size_t len, struct envelope *env)
{
    static const char *const top[] = {"payload", "auth_data"};
    struct jspan sp[2];
    if (jspan_members(body, len, top, 2, sp) == 0) {
        if (sp[1].found && sp[1].len > AUTH_DATA_MAX) { /* same rule as the large-body path */
            reply_422(req, AUTH_TOO_LARGE);
            return -1;
        }
        if (sp[0].found) {
            env->payload_raw = body + sp[0].off;
            env->payload_len = sp[0].len;
        }
    }
    /* openai worker's request_parser: {"input": {...}} is unwrapped (§3.2). */
    const struct pyj_value *inner = h->unwrap_input ? pyj_get(env->payload, "input") : NULL;
    if (inner && inner->type == PYJ_OBJECT) {
        env->payload = inner;
        static const char *const in[] = {"input"};
        struct jspan isp;
        if (env->payload_raw &&
            jspan_members(env->payload_raw, env->payload_len, in, 1, &isp) == 0 && isp.found) {
            env->payload_raw += isp.off;
            env->payload_len = isp.len;
        } else {
            env->payload_raw = NULL; /* re-serialised by the caller */
        }
    }
    return 0;
}

int envelope_parse(struct worker *w, struct handler *h, struct evhttp_request *req,
                   const char *body, size_t len, struct envelope *env)
{
    memset(env, 0, sizeof *env);
    char err[128] = "";
    bool lite = len > w->cfg.full_parse_max;
    int lrc = lite ? parse_lite(h, body, len, env) : 0;
    if (lrc == -2) {
        reply_422(req, AUTH_TOO_LARGE);
        return -1;
    }
    if (lite ? lrc != 0
             : (pyj_parse(body, len, &env->doc, err, sizeof err) != 0 ||
                env->doc->type != PYJ_OBJECT)) {
        log_debug("bad_json", "err=\"%s\"", err);
        pyj_free(env->doc);
        env->doc = NULL;
        reply_422(req, "{\"error\": \"invalid JSON\"}");
        return -1;
    }
    env->auth = pyj_get(env->doc, "auth_data");
    env->payload = pyj_get(env->doc, "payload");
    env->session = pyj_get(env->doc, "session_id");
    if (reply_missing(req, env) || reply_bad_fields(w, h, req, env) ||
        (!lite && place_payload(h, req, body, len, env) != 0)) {
        envelope_free(env);
        return -1;
    }
    return 0; /* large bodies: spans and unwrapping done by parse_lite */
}
