/* Grant signatures.  The message bytes are exactly Python's json.dumps of the fields the worker
 * rebuilds from the parsed auth_data (docs/protocol.md §3.4-3.5):
 *   url       {"url": url}                                 indent=4, sort_keys   (G3)
 *   fields-v2 {cost, endpoint, reqnum, request_idx, url}   indent=4, sort_keys   (G2)
 *   fields-v1 {cost, endpoint, reqnum, url}                indent=4, that order  (G1/G0)
 * cost is always a Python float (the /route/ answer renders it the same way); strings are
 * escaped with ensure_ascii by pyj_write_string.  Signatures: RSASSA-PKCS1-v1_5 SHA-256,
 * standard padded base64.  The url scheme signs once per worker URL (cached on the worker). */
#include <stdlib.h>
#include <string.h>

#include "b64.h"
#include "engine.h"
#include "log.h"
#include "pyjson.h"
#include "rsa.h"
#include "signer.h"
#include "xalloc.h"

static void member(struct sbuf *out, bool first, const char *key)
{
    sbuf_puts(out, first ? "{\n    \"" : ",\n    \"");
    sbuf_puts(out, key);
    sbuf_puts(out, "\": ");
}

void signer_message(enum sig_scheme s, double cost, const char *endpoint, int64_t reqnum,
                    int64_t request_idx, const char *url, struct sbuf *out)
{
    char num[40];
    if (s == SIG_URL) {
        member(out, true, "url");
        pyj_write_string(out, url, strlen(url));
        sbuf_puts(out, "\n}");
        return;
    }
    /* sorted order for v2 happens to be the v1 order with request_idx before url */
    member(out, true, "cost");
    pyj_format_float(cost, num, sizeof num);
    sbuf_puts(out, num);
    member(out, false, "endpoint");
    pyj_write_string(out, endpoint, strlen(endpoint));
    member(out, false, "reqnum");
    sbuf_printf(out, "%lld", (long long)reqnum);
    if (s == SIG_FIELDS_V2) {
        member(out, false, "request_idx");
        sbuf_printf(out, "%lld", (long long)request_idx);
    }
    member(out, false, "url");
    pyj_write_string(out, url, strlen(url));
    sbuf_puts(out, "\n}");
}

/* Sign msg and append the base64 signature to out.  0 or -1. */
static int sign_b64(struct engine *e, const struct sbuf *msg, struct sbuf *out)
{
    uint8_t sig[1024];
    size_t siglen = sizeof sig;
    if (rsa_privkey_size(e->key) > sizeof sig) return -1;
    if (rsa_sign_sha256(e->key, msg->data, msg->len, sig, &siglen) != 0) return -1;
    char b64[1400];
    size_t n = b64_encode(sig, siglen, b64);
    sbuf_append(out, b64, n);
    return 0;
}

int signer_grant(struct engine *e, struct endpoint *ep, struct worker *w, double cost,
                 int64_t reqnum, int64_t request_idx, struct sbuf *out)
{
    enum sig_scheme s = ep->p.sig_scheme;
    if (s == SIG_URL && w->sig_b64 && w->sig_url && strcmp(w->sig_url, w->url) == 0) {
        sbuf_puts(out, w->sig_b64);
        return 0;
    }
    struct sbuf msg = SBUF_INIT, sig = SBUF_INIT;
    signer_message(s, cost, ep->name, reqnum, request_idx, w->url, &msg);
    int rc = sign_b64(e, &msg, &sig);
    sbuf_free(&msg);
    if (rc != 0) {
        sbuf_free(&sig);
        log_error("sign_failed", "worker=%lld", (long long)w->id);
        return -1;
    }
    *e->c_sign[s] += 1;
    sbuf_append(out, sig.data, sig.len);
    if (s == SIG_URL) {
        free(w->sig_url);
        free(w->sig_b64);
        w->sig_url = xstrdup(w->url);
        w->sig_b64 = sbuf_steal(&sig, NULL);
    }
    sbuf_free(&sig);
    return 0;
}
