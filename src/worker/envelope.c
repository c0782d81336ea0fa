/* Request envelope {"auth_data": {...}, "payload": ..., "session_id": ...}.
 * 422 bodies are byte-identical to PyWorker's (aiohttp json_response: Python
 * json.dumps default separators, Content-Type application/json; charset=utf-8),
 * vast-protocol.md §3.3.  Where PyWorker crashes with a 500 (auth_data not an
 * object, body not an object) we answer 422 with a clear message instead. */
#include <string.h>

#include <event2/buffer.h>

#include "jspan.h"
#include "log.h"
#include "worker.h"

#define CT_422 "application/json; charset=utf-8"

static const char *const keys_v1[] = {"signature", "cost", "endpoint", "reqnum", "url"};
static const char *const keys_v2[] = {"cost",        "endpoint",  "reqnum",
                                      "request_idx", "signature", "url"};

static void reply_422(struct evhttp_request *req, const char *body)
{
    reply_json(req, 422, CT_422, body, strlen(body));
}

void envelope_free(struct envelope *env)
{
    pyj_free(env->doc);
    memset(env, 0, sizeof *env);
}

int envelope_parse(struct worker *w, struct handler *h, struct evhttp_request *req,
                   const char *body, size_t len, struct envelope *env)
{
    memset(env, 0, sizeof *env);
    char err[128];
    if (pyj_parse(body, len, &env->doc, err, sizeof err) != 0 || env->doc->type != PYJ_OBJECT) {
        log_debug("bad_json", "err=\"%s\"", err);
        pyj_free(env->doc);
        env->doc = NULL;
        reply_422(req, "{\"error\": \"invalid JSON\"}");
        return -1;
    }
    env->auth = pyj_get(env->doc, "auth_data");
    env->payload = pyj_get(env->doc, "payload");
    env->session = pyj_get(env->doc, "session_id");
    if (!env->auth || !env->payload) {
        struct sbuf b = SBUF_INIT;
        sbuf_putc(&b, '{');
        if (!env->auth) sbuf_puts(&b, "\"auth_data\": \"field missing\"");
        if (!env->payload)
            sbuf_puts(&b, env->auth ? "\"payload\": \"field missing\""
                                    : ", \"payload\": \"field missing\"");
        sbuf_putc(&b, '}');
        reply_422(req, b.data);
        sbuf_free(&b);
        envelope_free(env);
        return -1;
    }
    struct sbuf b = SBUF_INIT;
    sbuf_putc(&b, '{');
    if (env->auth->type != PYJ_OBJECT) {
        sbuf_puts(&b, "\"auth_data\": \"must be a JSON object\"");
    } else {
        const char *const *keys = w->cfg.scheme == AUTH_FIELDS_V1 ? keys_v1 : keys_v2;
        size_t nk = w->cfg.scheme == AUTH_FIELDS_V1 ? 5 : 6;
        bool any = false;
        for (size_t i = 0; i < nk; i++) {
            if (pyj_get(env->auth, keys[i])) continue;
            sbuf_puts(&b, any ? ", \"" : "\"auth_data\": {\"");
            sbuf_puts(&b, keys[i]);
            sbuf_puts(&b, "\": \"missing parameter\"");
            any = true;
        }
        if (any) sbuf_putc(&b, '}');
    }
    size_t auth_part = b.len;
    const char *sep = auth_part > 1 ? ", " : "";
    if (h->check != PC_ANY && env->payload->type != PYJ_OBJECT) {
        sbuf_printf(&b, "%s\"payload\": {\"data\": \"payload must be a dictionary\"}", sep);
    } else if (h->check == PC_TGI) {
        bool ni = !pyj_get(env->payload, "inputs"), np = !pyj_get(env->payload, "parameters");
        if (ni || np) {
            sbuf_printf(&b, "%s\"payload\": {", sep);
            if (ni) sbuf_puts(&b, "\"inputs\": \"missing parameter\"");
            if (np)
                sbuf_puts(&b, ni ? ", \"parameters\": \"missing parameter\""
                                 : "\"parameters\": \"missing parameter\"");
            sbuf_putc(&b, '}');
        }
    }
    if (b.len > 1) {
        sbuf_putc(&b, '}');
        reply_422(req, b.data);
        sbuf_free(&b);
        envelope_free(env);
        return -1;
    }
    sbuf_free(&b);

    /* The payload is forwarded as the bytes the client sent (B7: nothing is
     * dropped).  If the scanner cannot place it, fall back to re-serialising. */
    static const char *const top[] = {"payload"};
    struct jspan sp;
    if (jspan_members(body, len, top, 1, &sp) == 0 && sp.found) {
        env->payload_raw = body + sp.off;
        env->payload_len = sp.len;
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
