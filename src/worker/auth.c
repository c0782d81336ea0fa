/* Grant verification (docs/protocol.md §3.4-3.7).
 *
 * The signed message is rebuilt from the *parsed* auth_data exactly as Python
 * json.dumps(..., indent=4[, sort_keys=True]) renders it (pyjson), then
 * verified with RSASSA-PKCS1-v1_5/SHA-256 (both DigestInfo encodings) after
 * Python-lenient base64 decoding.
 *
 * Replay guard (fields-* schemes): PyWorker's rule - a reqnum more than
 * `replay_window` below the highest accepted one is too old, and an accepted
 * message is single-use - with a bounded history (hash set + FIFO ring of
 * SHA-256 digests).  State changes only after a successful verification.
 *
 * url scheme: the message depends on the url alone and PKCS#1 v1.5 is
 * deterministic, so a verified (url, signature) pair stays valid until the
 * key changes; a small direct-mapped cache skips the RSA operation.
 *
 * Binding (issue 8): a grant opens only the worker it was issued for.  Its
 * `url` must be the url this worker reports (cfg.url, byte for byte: the
 * engine signs exactly the reported url), and when SGPU_GRANT_ENDPOINT is set a
 * grant that names an endpoint must name this one.  Every scheme signs the
 * url, so a grant for another worker cannot be edited to match; the endpoint
 * is signed only by fields-*.  Both checks are string compares, done before
 * the replay guard, the cache and RSA, so a wrong-worker grant costs nothing
 * and changes no state. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "auth.h"
#include "b64.h"
#include "log.h"
#include "pubkey.h"
#include "reply.h"
#include "xalloc.h"

struct hist_ent {
    uint8_t d[32];
    int next; /* bucket chain, -1 = end */
    bool used;
};

struct cache_ent {
    uint64_t h;
    char *url;
    char *sig;
};

struct auth_state {
    bool have_max;
    double reqnum_max;
    struct hist_ent *ring;
    int cap, pos;
    int *buckets;
    unsigned nb; /* power of two */
    struct cache_ent *cache;
    int ncache;
    uint64_t hits, misses;
    uint64_t wrong; /* grants for another worker / endpoint */
};

static unsigned bucket_of(const struct auth_state *a, const uint8_t d[32])
{
    uint32_t x;
    memcpy(&x, d, 4);
    return x & (a->nb - 1);
}

struct auth_state *auth_new(const struct wconfig *c)
{
    struct auth_state *a = xcalloc(1, sizeof *a);
    a->cap = c->replay_history > 0 ? c->replay_history : 1;
    a->ring = xcalloc((size_t)a->cap, sizeof *a->ring);
    a->nb = 1;
    while (a->nb < (unsigned)a->cap * 2)
        a->nb <<= 1;
    a->buckets = xcalloc(a->nb, sizeof *a->buckets);
    for (unsigned i = 0; i < a->nb; i++)
        a->buckets[i] = -1;
    a->ncache = c->url_cache;
    if (a->ncache) {
        a->cache = xcalloc((size_t)a->ncache, sizeof *a->cache);
    }
    return a;
}

void auth_key_changed(struct auth_state *a)
{
    for (int i = 0; i < a->ncache; i++) {
        free(a->cache[i].url);
        free(a->cache[i].sig);
        a->cache[i] = (struct cache_ent){0, NULL, NULL};
    }
}

void auth_free(struct auth_state *a)
{
    if (!a) return;
    auth_key_changed(a);
    free(a->cache);
    free(a->ring);
    free(a->buckets);
    free(a);
}

static bool hist_has(const struct auth_state *a, const uint8_t d[32])
{
    for (int i = a->buckets[bucket_of(a, d)]; i >= 0; i = a->ring[i].next)
        if (memcmp(a->ring[i].d, d, 32) == 0) return true;
    return false;
}

static void hist_add(struct auth_state *a, const uint8_t d[32])
{
    struct hist_ent *e = &a->ring[a->pos];
    if (e->used) { /* evict the oldest: unlink from its chain */
        int *pp = &a->buckets[bucket_of(a, e->d)];
        while (*pp >= 0 && *pp != a->pos)
            pp = &a->ring[*pp].next;
        if (*pp == a->pos) *pp = e->next;
    }
    memcpy(e->d, d, 32);
    e->used = true;
    unsigned b = bucket_of(a, d);
    e->next = a->buckets[b];
    a->buckets[b] = a->pos;
    a->pos = (a->pos + 1) % a->cap;
}

static uint64_t fnv(const char *s, size_t n, uint64_t h)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ULL;
    return h;
}

void auth_message(enum auth_scheme s, const struct pyj_value *auth, struct sbuf *out)
{
    static const char *const k1[] = {"cost", "endpoint", "reqnum", "url"};
    static const char *const k2[] = {"cost", "endpoint", "reqnum", "request_idx", "url"};
    static const char *const k3[] = {"url"};
    struct pyj_dump_opts o = {.indent = 4, .sort_keys = s != AUTH_FIELDS_V1};
    switch (s) {
    case AUTH_FIELDS_V1:
        pyj_dump_members(auth, k1, 4, &o, out);
        break;
    case AUTH_FIELDS_V2:
        pyj_dump_members(auth, k2, 5, &o, out);
        break;
    case AUTH_URL:
        pyj_dump_members(auth, k3, 1, &o, out);
        break;
    }
}

/* AUTH_WRONG_URL / AUTH_WRONG_ENDPOINT when the grant is for another worker, else 0. */
static int check_binding(const struct worker *w, const struct pyj_value *auth, const char **why)
{
    const struct pyj_value *url = pyj_get(auth, "url");
    size_t ul = strlen(w->cfg.url);
    if (!url || url->type != PYJ_STRING || url->u.str.len != ul ||
        memcmp(url->u.str.s, w->cfg.url, ul) != 0) {
        *why = "grant url is not this worker's url";
        return AUTH_WRONG_URL;
    }
    const struct pyj_value *ep = pyj_get(auth, "endpoint");
    size_t el = strlen(w->cfg.endpoint);
    if (el && ep && ep->type != PYJ_NULL &&
        (ep->type != PYJ_STRING || ep->u.str.len != el ||
         memcmp(ep->u.str.s, w->cfg.endpoint, el) != 0)) {
        *why = "grant endpoint is not this worker's endpoint";
        return AUTH_WRONG_ENDPOINT;
    }
    return 0;
}

/* At most max bytes of s, cut at a UTF-8 character boundary. */
static size_t utf8_prefix(const char *s, size_t n, size_t max)
{
    if (n <= max) return n;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    return max;
}

void auth_reply_wrong(struct worker *w, struct evhttp_request *req, int rc,
                      const struct pyj_value *auth)
{
    struct sbuf b = SBUF_INIT;
    if (rc == AUTH_WRONG_ENDPOINT) {
        *w->m_grant_wrong_endpoint += 1;
        sbuf_puts(&b, "{\"error\": \"grant is for another endpoint than this worker's\"}");
    } else {
        *w->m_grant_wrong_url += 1;
        sbuf_puts(&b, "{\"error\": \"grant is for another worker: its url is not this worker's "
                      "url\", \"grant_url\": ");
        const struct pyj_value *url = pyj_get(auth, "url");
        if (url && url->type == PYJ_STRING)
            pyj_write_string(&b, url->u.str.s, utf8_prefix(url->u.str.s, url->u.str.len, 256));
        else
            sbuf_puts(&b, "null");
        sbuf_puts(&b, ", \"worker_url\": ");
        pyj_write_string(&b, w->cfg.url, strlen(w->cfg.url));
        sbuf_putc(&b, '}');
    }
    *w->m_status_401 += 1;
    reply_json(req, 401, "application/json; charset=utf-8", b.data, b.len);
    sbuf_free(&b);
}

/* url scheme: the cache slot of (url, signature), *hit when it was verified before; NULL when
 * the pair cannot be cached. */
static struct cache_ent *cache_slot(struct auth_state *a, const struct wconfig *c,
                                    const struct pyj_value *url, const struct pyj_value *sig,
                                    uint64_t *h, bool *hit)
{
    *hit = false;
    if (c->scheme != AUTH_URL || !a->ncache || !url || url->type != PYJ_STRING ||
        memchr(url->u.str.s, 0, url->u.str.len) || memchr(sig->u.str.s, 0, sig->u.str.len))
        return NULL;
    *h = fnv(sig->u.str.s, sig->u.str.len,
             fnv(url->u.str.s, url->u.str.len, 1469598103934665603ULL));
    struct cache_ent *ce = &a->cache[*h % (uint64_t)a->ncache];
    if (ce->url && ce->h == *h && strcmp(ce->url, url->u.str.s) == 0 &&
        strcmp(ce->sig, sig->u.str.s) == 0 && !c->replay_guard) {
        a->hits++;
        *hit = true;
    } else {
        a->misses++;
    }
    return ce;
}

/* Replay guard, before RSA: reqnum a number, not too old, message not used (dg = its SHA-256).
 * 0 or -1 with *why. */
static int replay_check(const struct auth_state *a, const struct wconfig *c,
                        const struct pyj_value *auth, const struct sbuf *msg, double *reqnum,
                        uint8_t dg[32], const char **why)
{
    const struct pyj_value *rv = pyj_get(auth, "reqnum");
    if (!rv || (rv->type != PYJ_INT && rv->type != PYJ_FLOAT) || !pyj_number(rv, reqnum) ||
        isnan(*reqnum)) {
        *why = "reqnum is not a number";
        return -1;
    }
    if (a->have_max && *reqnum < a->reqnum_max - (double)c->replay_window) {
        *why = "reqnum too old";
        return -1;
    }
    SHA256((const unsigned char *)msg->data, msg->len, dg);
    if (hist_has(a, dg)) {
        *why = "grant already used";
        return -1;
    }
    return 0;
}

/* RSASSA-PKCS1-v1_5/SHA-256 of msg against the base64 signature. 0 or -1 with *why. */
static int verify(struct rsa_pubkey *key, const struct sbuf *msg, const struct pyj_value *sig,
                  const char **why)
{
    uint8_t raw[1024];
    size_t rawlen = 0;
    if (sig->u.str.len > 1300 ||
        b64_decode_lenient(sig->u.str.s, sig->u.str.len, raw, sizeof raw, &rawlen) != 0) {
        *why = "signature is not valid base64";
        return -1;
    }
    if (rsa_verify_sha256(key, msg->data, msg->len, raw, rawlen) != 0) {
        *why = "bad signature";
        return -1;
    }
    return 0;
}

/* Steps: binding (another worker's grant), key, signature type, url cache, replay guard, RSA;
 * state (replay history, cache) changes only after a successful verification. */
int auth_check(struct worker *w, const struct pyj_value *auth, const char **why)
{
    struct auth_state *a = w->auth;
    const struct wconfig *c = &w->cfg;
    if (c->unsecured) return 0;
    int brc = check_binding(w, auth, why);
    if (brc) {
        a->wrong++;
        return brc;
    }
    struct rsa_pubkey *key = pubkey_key(w->pubkey);
    if (!key) {
        *why = "no public key";
        return -1;
    }
    const struct pyj_value *sig = pyj_get(auth, "signature");
    if (!sig || sig->type != PYJ_STRING) {
        *why = "signature is not a string";
        return -1;
    }
    const struct pyj_value *url = pyj_get(auth, "url");
    uint64_t ch = 0;
    bool hit;
    struct cache_ent *ce = cache_slot(a, c, url, sig, &ch, &hit);
    if (hit) return 0;
    struct sbuf msg = SBUF_INIT;
    auth_message(c->scheme, auth, &msg);
    uint8_t dg[32];
    double reqnum = 0;
    int rc = -1;
    if (c->replay_guard && replay_check(a, c, auth, &msg, &reqnum, dg, why) != 0) goto out;
    if (verify(key, &msg, sig, why) != 0) goto out;
    rc = 0;
    if (c->replay_guard) {
        if (!a->have_max || reqnum > a->reqnum_max) a->reqnum_max = reqnum;
        a->have_max = true;
        hist_add(a, dg);
    }
    if (ce) {
        free(ce->url);
        free(ce->sig);
        ce->h = ch;
        ce->url = xstrdup(url->u.str.s);
        ce->sig = xstrdup(sig->u.str.s);
    }
out:
    sbuf_free(&msg);
    return rc;
}
