/* connguard: see connguard.h.
 *
 * How it sits under evhttp (libevent 2.1): evhttp_set_bevcb lets us create
 * each connection's bufferevent.  We keep a reference to it and add an
 * evbuffer callback to its input buffer.  Evbuffer callbacks run as soon as
 * bytes are added, before the bufferevent's read callback (evhttp's parser)
 * runs, so every byte is seen here first, and evhttp only ever removes
 * complete lines (or body bytes it has framing for) from the front of the
 * buffer: a line that is still being received, and everything after it, can
 * be cut out or replaced here before evhttp sees it.
 *
 * The framing parser follows the byte stream of each connection (pipelined
 * requests included): request line, header lines, then the body by
 * Content-Length or chunked.  A bad header line is replaced by "x\r\n", a
 * header line without a colon, which evhttp answers with its own 400 and a
 * close.  A chunked request's Transfer-Encoding line and its blank line are
 * held back; the chunks are de-chunked into a side buffer and handed over as
 * "Content-Length: N\r\n\r\n" + body once the last chunk and the trailers have
 * arrived (evhttp 2.1 answers 413 to chunk extensions and negative sizes).
 * The common request (Content-Length or no body) costs a scan of its head
 * lines and no copy.
 *
 * A connection is "busy" from the end of a request until evhttp reads again
 * (its read callback installed and reading enabled: it disables reading while
 * the handler runs and removes the read callback while it writes).  Idle =
 * not busy, no byte of a next request, not TLS before its first request.
 *
 * Freed connections: evhttp frees its bufferevent (callbacks cleared); our
 * reference keeps the socket until the 0.5 s sweep (or an at-limit accept)
 * drops it. */
#include "connguard.h"
#include "clock.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/listener.h>

#include "httputil.h"
#include "log.h"

enum hp_state {
    HP_LINE0,   /* request line */
    HP_HDR,     /* header lines */
    HP_BODY,    /* Content-Length body: cnt bytes left */
    HP_CSIZE,   /* chunk-size line */
    HP_CDATA,   /* chunk data: cnt bytes left */
    HP_CCR,     /* CRLF after chunk data */
    HP_CLF,     /* LF after chunk data's CR */
    HP_TRAILER, /* trailer lines */
    HP_REJECTED /* request refused: everything after is dropped */
};

enum hp_act {
    A_NONE,
    A_DROP,      /* cut the line out (Transfer-Encoding, kept by us) */
    A_REJECT,    /* 400 */
    A_CHUNKED,   /* blank line of a chunked head: cut it, de-chunk what follows */
    A_COMPLETE,  /* the request ended with its head */
    A_CHUNKDONE, /* blank line after the trailers: hand over head end + body */
    A_TOOBIG     /* de-chunked body over max_body: 413 */
};

#define HP_LINE_KEEP 256 /* bytes of a line kept for checks (names, CL/TE values, sizes) */

struct hparse {
    enum hp_state st;
    bool in_req;  /* a byte of the current request has been seen */
    bool body_ok; /* the method may carry a body (evhttp's rule) */
    bool has_cl, has_te;
    uint64_t cl;   /* Content-Length value */
    uint64_t cnt;  /* body / chunk bytes left */
    uint64_t size; /* de-chunked body bytes so far */
    size_t line_len;
    size_t keep;
    char line[HP_LINE_KEEP];
};

struct gconn {
    struct connguard *g; /* NULL: standalone parser (connguard_framing_run) */
    struct bufferevent *bev;
    struct evbuffer_cb_entry *cbe;
    TAILQ_ENTRY(gconn) link;
    TAILQ_ENTRY(gconn) idle_link;
    bool idle, busy, killed, in_cb;
    bool tls;              /* a TLS connection (no raw replies) */
    bool handshake;        /* TLS, before its first request ended: not idle, clock from accept */
    double t_first;        /* monotonic start of the request clock; 0 = not running */
    size_t req_bytes;      /* bytes of the current (unfinished) request, counted in g->held */
    struct evbuffer *hold; /* de-chunked body waiting for the last chunk */
    struct hparse p;
    /* standalone counters */
    int n_rejected, n_toobig, n_complete;
};
TAILQ_HEAD(gconn_list, gconn);

struct connguard {
    struct event_base *base;
    struct evhttp *http;
    struct connguard_opts o;
    struct gconn_list conns, idle;
    int nconns;
    struct gconn **byfd;
    int nbyfd;
    struct evconnlistener *lev;
    struct evhttp_bound_socket *bound;
    struct event *sweep_ev, *resume_ev;
    bool paused, fd_episode;
    double last_emfile;
    size_t held;                       /* Σ req_bytes */
    bufferevent_data_cb evhttp_readcb; /* evhttp's read callback, learnt from a connection */
    double *m_conns, *m_evicted, *m_deadline, *m_paused, *m_accept_err, *m_budget, *m_framing;
    double dummy;
};

#define MAX_GUARDS 16
static struct connguard *g_guards[MAX_GUARDS]; /* evconnlistener error callbacks get the evhttp */

static void hp_reset(struct hparse *p)
{
    memset(p, 0, sizeof *p);
    p->st = HP_LINE0;
}

/* ------------------------------------------------------------------ framing */

static bool is_tchar(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool ieq(const char *a, size_t n, const char *b)
{
    return strlen(b) == n && strncasecmp(a, b, n) == 0;
}

static void trim_ows(const char **s, size_t *n)
{
    while (*n && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*n)--;
    }
    while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
        (*n)--;
}

/* Request line: only the method matters (evhttp_method_may_have_body). */
static enum hp_act line_request(struct hparse *p, const char *s, size_t n)
{
    size_t m = 0;
    while (m < n && s[m] != ' ')
        m++;
    static const char *const body_methods[] = {"POST",   "PUT",     "PATCH",  "GET",
                                               "DELETE", "OPTIONS", "CONNECT"};
    p->body_ok = false;
    for (size_t i = 0; i < sizeof body_methods / sizeof *body_methods; i++)
        if (strlen(body_methods[i]) == m && memcmp(s, body_methods[i], m) == 0) p->body_ok = true;
    p->st = HP_HDR;
    return A_NONE;
}

/* One header (or trailer) line "name: value": name must be a token, no
 * whitespace before the colon, no obs-fold.  *name_n / *val set on success. */
static int header_split(const char *s, size_t n, bool truncated, size_t *name_n, const char **val,
                        size_t *val_n)
{
    if (n == 0 || s[0] == ' ' || s[0] == '\t') return -1; /* obs-fold */
    const char *colon = memchr(s, ':', n);
    if (!colon) return -1; /* no colon within the kept bytes */
    size_t nn = (size_t)(colon - s);
    if (nn == 0) return -1;
    for (size_t i = 0; i < nn; i++)
        if (!is_tchar((unsigned char)s[i])) return -1;
    *name_n = nn;
    *val = colon + 1;
    *val_n = n - nn - 1;
    (void)truncated;
    return 0;
}

static enum hp_act line_header(struct hparse *p, const char *s, size_t n, bool truncated)
{
    if (n == 0 && !truncated) { /* end of head */
        if (p->has_cl && p->has_te) return A_REJECT;
        if (!p->body_ok) return A_COMPLETE;
        if (p->has_te) {
            p->st = HP_CSIZE;
            p->size = 0;
            return A_CHUNKED;
        }
        if (p->has_cl && p->cl > 0) {
            p->st = HP_BODY;
            p->cnt = p->cl;
            return A_NONE;
        }
        return A_COMPLETE;
    }
    size_t nn, vn;
    const char *v;
    if (header_split(s, n, truncated, &nn, &v, &vn) != 0) return A_REJECT;
    bool is_cl = ieq(s, nn, "content-length"), is_te = ieq(s, nn, "transfer-encoding");
    if (!is_cl && !is_te) return A_NONE;
    if (truncated) return A_REJECT;
    trim_ows(&v, &vn);
    if (is_cl) {
        if (vn == 0 || vn > 18) return A_REJECT; /* 18 digits: < 2^63 */
        uint64_t x = 0;
        for (size_t i = 0; i < vn; i++) {
            if (v[i] < '0' || v[i] > '9') return A_REJECT; /* "+5", "5, 5", "0x5" */
            x = x * 10 + (uint64_t)(v[i] - '0');
        }
        if (p->has_cl && x != p->cl) return A_REJECT;
        p->has_cl = true;
        p->cl = x;
        return A_NONE;
    }
    /* evhttp only knows chunked; anything else (gzip, identity, a list) is refused */
    if (p->has_te || !ieq(v, vn, "chunked")) return A_REJECT;
    p->has_te = true;
    return A_DROP;
}

/* chunk-size [ chunk-ext ]: 1*HEXDIG, then any number of: BWS ";" BWS name [ BWS "=" BWS value ] */
static enum hp_act line_chunk_size(struct hparse *p, const char *s, size_t n, bool truncated,
                                   size_t max_body)
{
    if (truncated) return A_REJECT;
    size_t i = 0;
    uint64_t x = 0;
    while (i < n && isxdigit((unsigned char)s[i])) {
        if (i >= 15) return A_REJECT; /* < 2^60 */
        int d =
            isdigit((unsigned char)s[i]) ? s[i] - '0' : (tolower((unsigned char)s[i]) - 'a' + 10);
        x = x * 16 + (uint64_t)d;
        i++;
    }
    if (i == 0) return A_REJECT; /* "-5", "", "x" */
    while (i < n) {
        while (i < n && (s[i] == ' ' || s[i] == '\t'))
            i++;
        if (i == n) break;
        if (s[i++] != ';') return A_REJECT;
        while (i < n && (s[i] == ' ' || s[i] == '\t'))
            i++;
        size_t t0 = i;
        while (i < n && is_tchar((unsigned char)s[i]))
            i++;
        if (i == t0) return A_REJECT;
        while (i < n && (s[i] == ' ' || s[i] == '\t'))
            i++;
        if (i < n && s[i] == '=') {
            i++;
            while (i < n && (s[i] == ' ' || s[i] == '\t'))
                i++;
            if (i < n && s[i] == '"') {
                i++;
                while (i < n && s[i] != '"') {
                    if (s[i] == '\\') i++;
                    i++;
                }
                if (i >= n) return A_REJECT;
                i++;
            } else {
                t0 = i;
                while (i < n && is_tchar((unsigned char)s[i]))
                    i++;
                if (i == t0) return A_REJECT;
            }
        }
    }
    if (x == 0) {
        p->st = HP_TRAILER;
        return A_NONE;
    }
    if (x > max_body || p->size + x > max_body) return A_TOOBIG;
    p->size += x;
    p->cnt = x;
    p->st = HP_CDATA;
    return A_NONE;
}

static enum hp_act line_trailer(struct hparse *p, const char *s, size_t n, bool truncated)
{
    if (n == 0 && !truncated) return A_CHUNKDONE;
    size_t nn, vn;
    const char *v;
    if (header_split(s, n, truncated, &nn, &v, &vn) != 0) return A_REJECT;
    return A_DROP; /* trailers are not handed on */
}

/* Feeds bytes of a line state (LINE0, HDR, CSIZE, TRAILER, CCR, CLF) up to and
 * including the first LF.  Returns bytes consumed; *act the action at the LF. */
static size_t hp_feed_line(struct hparse *p, const unsigned char *b, size_t n, size_t max_body,
                           enum hp_act *act)
{
    *act = A_NONE;
    if (p->st == HP_CCR || p->st == HP_CLF) { /* CRLF (or bare LF) after chunk data */
        size_t i = 0;
        if (p->st == HP_CCR && i < n) {
            if (b[i] == '\r') {
                p->st = HP_CLF;
                i++;
            } else if (b[i] != '\n') {
                *act = A_REJECT;
                return i + 1;
            } else {
                p->st = HP_CLF;
            }
        }
        if (p->st == HP_CLF && i < n) {
            if (b[i] != '\n')
                *act = A_REJECT;
            else
                p->st = HP_CSIZE;
            return i + 1;
        }
        return i;
    }
    const unsigned char *lf = memchr(b, '\n', n);
    size_t take = lf ? (size_t)(lf - b) + 1 : n;
    size_t body = lf ? take - 1 : take; /* line bytes without the LF */
    if (p->keep < HP_LINE_KEEP) {
        size_t k = body < HP_LINE_KEEP - p->keep ? body : HP_LINE_KEEP - p->keep;
        memcpy(p->line + p->keep, b, k);
        p->keep += k;
    }
    p->line_len += take;
    if (!lf) return take;
    size_t full = p->line_len - 1; /* without LF */
    bool truncated = full > HP_LINE_KEEP;
    size_t kn = p->keep;
    /* a line longer than what is kept (its CR included) is "truncated": its name is checked
     * from the kept bytes, a Content-Length / Transfer-Encoding / chunk-size line is refused */
    if (!truncated && kn && p->line[kn - 1] == '\r') kn--; /* CRLF */
    switch (p->st) {
    case HP_LINE0:
        *act = line_request(p, p->line, kn);
        break;
    case HP_HDR:
        *act = line_header(p, p->line, kn, truncated);
        break;
    case HP_CSIZE:
        *act = line_chunk_size(p, p->line, kn, truncated, max_body);
        break;
    case HP_TRAILER:
        *act = line_trailer(p, p->line, kn, truncated);
        break;
    default:
        break;
    }
    p->line_len = 0;
    p->keep = 0;
    return take;
}

/* ------------------------------------------------------------ connections */

static void idle_leave(struct gconn *t)
{
    if (!t->idle || !t->g) return;
    TAILQ_REMOVE(&t->g->idle, t, idle_link);
    t->idle = false;
}

static void idle_enter(struct gconn *t)
{
    if (t->idle || !t->g || t->killed) return;
    TAILQ_INSERT_TAIL(&t->g->idle, t, idle_link);
    t->idle = true;
}

static void req_bytes_add(struct gconn *t, size_t n)
{
    if (!n) return;
    if (!t->p.in_req) {
        t->p.in_req = true;
        idle_leave(t);
        if (!t->busy && t->t_first == 0) t->t_first = clock_mono();
    }
    t->req_bytes += n;
    if (t->g) t->g->held += n;
}

static void req_complete(struct gconn *t)
{
    if (t->g) t->g->held -= t->req_bytes;
    t->req_bytes = 0;
    hp_reset(&t->p);
    t->n_complete++;
    t->busy = true;
    t->t_first = 0;
    idle_leave(t);
}

/* Removes the last n bytes of b.  -1 when b holds fewer. */
static int evb_chop(struct evbuffer *b, size_t n)
{
    size_t len = evbuffer_get_length(b);
    if (n > len) return -1;
    if (!n) return 0;
    struct evbuffer *front = evbuffer_new();
    if (!front) return -1;
    evbuffer_remove_buffer(b, front, len - n);
    evbuffer_drain(b, n);
    evbuffer_add_buffer(b, front);
    evbuffer_free(front);
    return 0;
}

static void conn_kill(struct gconn *t, const char *why);

/* Applies a line action; the line itself is already out of `in`. */
static void apply(struct gconn *t, struct evbuffer *in, enum hp_act act, size_t max_body)
{
    switch (act) {
    case A_REJECT:
    case A_TOOBIG: {
        if (act == A_REJECT) {
            evbuffer_add(in, "x\r\n", 3); /* a header line without a colon: evhttp's 400 */
            t->n_rejected++;
            if (t->g) {
                *t->g->m_framing += 1;
                /* debug: a flood of bad requests must not flood the log (the counter counts) */
                log_debug("request_rejected", "why=framing fd=%d",
                          t->bev ? (int)bufferevent_getfd(t->bev) : -1);
            }
        } else {
            /* a Content-Length over evhttp's body limit: its 413 */
            evbuffer_add_printf(in, "Content-Length: %" PRIu64 "\r\n\r\n", (uint64_t)max_body + 1);
            t->n_toobig++;
        }
        if (t->hold) evbuffer_drain(t->hold, evbuffer_get_length(t->hold));
        if (t->g) t->g->held -= t->req_bytes;
        t->req_bytes = 0;
        t->p.st = HP_REJECTED;
        break;
    }
    case A_CHUNKDONE:
        evbuffer_add_printf(in, "Content-Length: %" PRIu64 "\r\n\r\n", t->p.size);
        if (t->hold) evbuffer_add_buffer(in, t->hold);
        req_complete(t);
        break;
    case A_COMPLETE:
        req_complete(t);
        break;
    default: /* A_DROP, A_CHUNKED: the line is gone; nothing else */
        break;
    }
}

static bool line_state(enum hp_state s)
{
    return s == HP_LINE0 || s == HP_HDR || s == HP_CSIZE || s == HP_TRAILER || s == HP_CCR ||
           s == HP_CLF;
}

static bool emitted_state(enum hp_state s) /* bytes of this state go to evhttp as they are */
{
    return s == HP_LINE0 || s == HP_HDR || s == HP_BODY;
}

/* Rewrite mode: the bytes in src (taken out of `in`) are parsed and what
 * evhttp should see is appended to `in`. */
static void feed_rewrite(struct gconn *t, struct evbuffer *in, struct evbuffer *src,
                         size_t max_body)
{
    size_t len;
    while ((len = evbuffer_get_length(src)) > 0) {
        enum hp_state st = t->p.st;
        if (st == HP_REJECTED) {
            evbuffer_drain(src, len);
            break;
        }
        if (st == HP_BODY || st == HP_CDATA) {
            size_t k = t->p.cnt < len ? (size_t)t->p.cnt : len;
            req_bytes_add(t, k);
            if (st == HP_BODY) {
                evbuffer_remove_buffer(src, in, k);
            } else {
                if (!t->hold) t->hold = evbuffer_new();
                if (!t->hold) {
                    conn_kill(t, "oom");
                    evbuffer_drain(src, len);
                    return;
                }
                evbuffer_remove_buffer(src, t->hold, k);
            }
            t->p.cnt -= k;
            if (t->p.cnt == 0) {
                if (st == HP_BODY)
                    req_complete(t);
                else
                    t->p.st = HP_CCR;
            }
            continue;
        }
        unsigned char b[512];
        size_t k = len < sizeof b ? len : sizeof b;
        evbuffer_copyout(src, b, k);
        size_t before = t->p.line_len;
        enum hp_act act;
        size_t used = hp_feed_line(&t->p, b, k, max_body, &act);
        req_bytes_add(t, used);
        evbuffer_drain(src, used);
        if (act == A_DROP || act == A_REJECT || act == A_CHUNKED || act == A_TOOBIG ||
            act == A_CHUNKDONE) {
            /* the line is not handed on: take back what was emitted of it */
            if (emitted_state(st) && evb_chop(in, before) != 0) {
                conn_kill(t, "desync");
                return;
            }
            apply(t, in, act, max_body);
        } else {
            if (emitted_state(st)) evbuffer_add(in, b, used);
            if (act == A_COMPLETE) apply(t, in, act, max_body);
        }
    }
}

/* New bytes: the last nnew bytes of `in`. */
static void feed(struct gconn *t, struct evbuffer *in, size_t nnew, size_t max_body)
{
    size_t len = evbuffer_get_length(in);
    if (nnew > len) nnew = len;
    if (t->killed) {
        evbuffer_drain(in, len); /* the connection is being closed */
        return;
    }
    if (t->p.st == HP_REJECTED) { /* after a rejected request: nothing is handed on */
        (void)evb_chop(in, nnew);
        return;
    }
    size_t off = len - nnew;
    bool rewrite = !emitted_state(t->p.st); /* inside a chunked request */
    while (!rewrite && off < len) {
        enum hp_state st = t->p.st;
        if (st == HP_BODY) {
            size_t k = t->p.cnt < len - off ? (size_t)t->p.cnt : len - off;
            req_bytes_add(t, k);
            off += k;
            t->p.cnt -= k;
            if (t->p.cnt == 0) req_complete(t);
            continue;
        }
        if (!line_state(st)) {
            rewrite = true;
            break;
        }
        unsigned char b[512];
        size_t k = len - off < sizeof b ? len - off : sizeof b;
        struct evbuffer_ptr pos;
        if (evbuffer_ptr_set(in, &pos, off, EVBUFFER_PTR_SET) != 0 ||
            evbuffer_copyout_from(in, &pos, b, k) != (ev_ssize_t)k) {
            conn_kill(t, "peek");
            return;
        }
        size_t line_before = t->p.line_len;
        enum hp_act act;
        size_t used = hp_feed_line(&t->p, b, k, max_body, &act);
        req_bytes_add(t, used);
        off += used;
        if (act == A_NONE) continue;
        if (act == A_COMPLETE) {
            req_complete(t);
            continue;
        }
        /* surgery: the line spans [off - line_before - used, off) of `in` */
        size_t line_total = line_before + used;
        if (line_total > off) {
            conn_kill(t, "desync");
            return;
        }
        struct evbuffer *tail = evbuffer_new();
        if (!tail) {
            conn_kill(t, "oom");
            return;
        }
        /* tail = in[off - line_total ..], then drop the line from it */
        struct evbuffer *front = evbuffer_new();
        if (!front) {
            evbuffer_free(tail);
            conn_kill(t, "oom");
            return;
        }
        evbuffer_remove_buffer(in, front, off - line_total);
        evbuffer_add_buffer(tail, in);
        evbuffer_add_buffer(in, front);
        evbuffer_free(front);
        evbuffer_drain(tail, line_total);
        apply(t, in, act, max_body);
        feed_rewrite(t, in, tail, max_body);
        evbuffer_free(tail);
        return;
    }
    if (rewrite && off < len) {
        struct evbuffer *tail = evbuffer_new();
        struct evbuffer *front = evbuffer_new();
        if (!tail || !front) {
            if (tail) evbuffer_free(tail);
            if (front) evbuffer_free(front);
            conn_kill(t, "oom");
            return;
        }
        evbuffer_remove_buffer(in, front, off);
        evbuffer_add_buffer(tail, in);
        evbuffer_add_buffer(in, front);
        evbuffer_free(front);
        feed_rewrite(t, in, tail, max_body);
        evbuffer_free(tail);
    }
}

/* ------------------------------------------------------------------ guard */

static size_t guard_max_body(const struct connguard *g)
{
    return g->o.max_body ? g->o.max_body : (size_t)64 << 20;
}

static void pause_accept(struct connguard *g, const char *why)
{
    if (g->paused || !g->lev) return;
    evconnlistener_disable(g->lev);
    g->paused = true;
    *g->m_paused += 1;
}

static void resume_accept(struct connguard *g)
{
    if (!g->paused || !g->lev) return;
    evconnlistener_enable(g->lev);
    g->paused = false;
    log_debug("accept_resumed", "connections=%d", g->nconns);
}

static void conn_drop(struct connguard *g, struct gconn *t)
{
    idle_leave(t);
    TAILQ_REMOVE(&g->conns, t, link);
    g->nconns--;
    g->held -= t->req_bytes;
    evutil_socket_t fd = bufferevent_getfd(t->bev);
    if (fd >= 0 && fd < g->nbyfd && g->byfd[fd] == t) g->byfd[fd] = NULL;
    if (t->cbe) evbuffer_remove_cb_entry(bufferevent_get_input(t->bev), t->cbe);
    bufferevent_decref(t->bev); /* last reference: closes the socket */
    if (t->hold) evbuffer_free(t->hold);
    free(t);
    /* a descriptor is free again */
    if (g->paused && g->nconns < g->o.max_conns && !evtimer_pending(g->resume_ev, NULL))
        resume_accept(g);
}

static bool conn_freed(struct gconn *t)
{
    bufferevent_data_cb r, w;
    bufferevent_event_cb e;
    void *arg;
    bufferevent_getcb(t->bev, &r, &w, &e, &arg);
    if (r && t->g && !t->g->evhttp_readcb) t->g->evhttp_readcb = r;
    return !r && !w && !e;
}

/* evhttp is reading a (next) request on this connection. */
static bool conn_reading(struct gconn *t)
{
    bufferevent_data_cb r, w;
    bufferevent_event_cb e;
    void *arg;
    bufferevent_getcb(t->bev, &r, &w, &e, &arg);
    if (r && !t->g->evhttp_readcb) t->g->evhttp_readcb = r;
    return r && r == t->g->evhttp_readcb && (bufferevent_get_enabled(t->bev) & EV_READ);
}

static void conn_kill(struct gconn *t, const char *why)
{
    if (t->killed) return;
    t->killed = true;
    idle_leave(t);
    if (t->g) t->g->held -= t->req_bytes;
    t->req_bytes = 0;
    t->p.st = HP_REJECTED;
    if (t->hold) evbuffer_drain(t->hold, evbuffer_get_length(t->hold));
    if (!t->bev) return;
    evutil_socket_t fd = bufferevent_getfd(t->bev);
    if (fd >= 0) shutdown(fd, SHUT_RDWR); /* evhttp sees EOF and frees the connection */
    (void)why;
}

/* Evicts an idle connection now (socket closed).  false when none could be. */
static bool evict_one(struct connguard *g)
{
    struct gconn *t;
    while ((t = TAILQ_FIRST(&g->idle)) != NULL) {
        if (conn_freed(t)) {
            conn_drop(g, t);
            continue;
        }
        bufferevent_data_cb r, w;
        bufferevent_event_cb e;
        void *arg;
        bufferevent_getcb(t->bev, &r, &w, &e, &arg);
        if (!r || r != g->evhttp_readcb || !(bufferevent_get_enabled(t->bev) & EV_READ) || !arg ||
            evbuffer_get_length(bufferevent_get_input(t->bev))) {
            idle_leave(t); /* not what we took it for */
            continue;
        }
        *g->m_evicted += 1;
        log_debug("connection_evicted", "fd=%d connections=%d", (int)bufferevent_getfd(t->bev),
                  g->nconns);
        /* an idle incoming connection: no request is in the user's hands */
        evhttp_connection_free((struct evhttp_connection *)arg);
        conn_drop(g, t);
        return true;
    }
    return false;
}

static void reap(struct connguard *g)
{
    struct gconn *t, *next;
    for (t = TAILQ_FIRST(&g->conns); t; t = next) {
        next = TAILQ_NEXT(t, link);
        if (conn_freed(t)) conn_drop(g, t);
    }
}

static const char budget_body[] =
    "{\"error\": \"server busy: too many request bytes are being received, retry later\"}";

/* Σ bytes of requests being received is over the budget: refuse the
 * connection holding the most until it fits. */
static void budget_enforce(struct connguard *g)
{
    while (g->o.body_budget && g->held > g->o.body_budget) {
        struct gconn *v = NULL, *t;
        TAILQ_FOREACH(t, &g->conns, link)
        {
            // cppcheck-suppress uninitvar ; TAILQ_FOREACH is not understood
            if (!t->killed && t->req_bytes && (!v || t->req_bytes > v->req_bytes)) v = t;
        }
        if (!v) break;
        *g->m_budget += 1;
        evutil_socket_t fd = bufferevent_getfd(v->bev);
        log_warn("request_refused", "why=body_budget fd=%d bytes=%zu held=%zu budget=%zu", (int)fd,
                 v->req_bytes, g->held, g->o.body_budget);
        if (!v->tls && fd >= 0 && !evbuffer_get_length(bufferevent_get_output(v->bev)) &&
            !v->busy) {
            char r[512];
            int n =
                snprintf(r, sizeof r,
                         "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                         "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                         sizeof budget_body - 1, budget_body);
            if (n > 0 && n < (int)sizeof r)
                (void)send(fd, r, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        conn_kill(v, "budget");
        bool was = v->in_cb;
        v->in_cb = true; /* our own callback must not run on this drain */
        struct evbuffer *in = bufferevent_get_input(v->bev);
        evbuffer_drain(in, evbuffer_get_length(in));
        v->in_cb = was;
    }
}

static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct gconn *t = arg;
    if (t->in_cb || !info->n_added) return;
    struct connguard *g = t->g;
    t->in_cb = true;
    feed(t, buf, info->n_added, guard_max_body(g));
    t->in_cb = false;
    budget_enforce(g);
}

static struct bufferevent *bevcb(struct event_base *base, void *arg)
{
    struct connguard *g = arg;
    struct bufferevent *bev;
    if (g->nconns >= g->o.max_conns) {
        reap(g);
        if (g->nconns >= g->o.max_conns) evict_one(g);
    }
    if (g->o.ssl) {
        SSL *ssl = SSL_new(g->o.ssl);
        if (!ssl) return NULL;
        bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE);
        if (!bev) SSL_free(ssl);
    } else {
        bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!bev) return NULL;
    struct gconn *t = calloc(1, sizeof *t);
    if (!t) return bev; /* unguarded, still served */
    t->g = g;
    t->bev = bev;
    t->tls = g->o.ssl != NULL;
    hp_reset(&t->p);
    bufferevent_incref(bev);
    t->cbe = evbuffer_add_cb(bufferevent_get_input(bev), on_input, t);
    TAILQ_INSERT_TAIL(&g->conns, t, link);
    g->nconns++;
    if (t->tls) {
        t->handshake = true;
        t->t_first = clock_mono(); /* the handshake is part of the first request */
    } else {
        idle_enter(t);
    }
    if (g->nconns >= g->o.max_conns && TAILQ_EMPTY(&g->idle)) {
        if (!g->paused) log_warn("accept_paused", "why=max_connections connections=%d", g->nconns);
        pause_accept(g, "max_connections");
    }
    return bev;
}

static void on_accept_error(struct evconnlistener *lev, void *ptr)
{
    struct connguard *g = NULL;
    for (int i = 0; i < MAX_GUARDS; i++)
        if (g_guards[i] && (g_guards[i]->http == ptr || g_guards[i]->lev == lev)) g = g_guards[i];
    int err = EVUTIL_SOCKET_ERROR();
    if (!g) return;
    *g->m_accept_err += 1;
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        g->last_emfile = clock_mono();
        if (!g->fd_episode) {
            g->fd_episode = true;
            log_warn("accept_paused", "why=fd_limit connections=%d err=\"%s\"", g->nconns,
                     evutil_socket_error_to_string(err));
        }
        reap(g);
        if (evict_one(g)) return; /* a descriptor is free: the next accept can work */
        pause_accept(g, "fd_limit");
        struct timeval tv = {1, 0}; /* or sooner, when a connection closes */
        evtimer_add(g->resume_ev, &tv);
        return;
    }
    log_warn("accept_error", "err=\"%s\"", evutil_socket_error_to_string(err));
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    struct connguard *g = arg;
    if (g->nconns < g->o.max_conns) resume_accept(g);
}

static void sweep(evutil_socket_t fd_unused, short what, void *arg)
{
    struct connguard *g = arg;
    double now = clock_mono();
    struct gconn *t, *next;
    for (t = TAILQ_FIRST(&g->conns); t; t = next) {
        next = TAILQ_NEXT(t, link);
        if (conn_freed(t)) {
            conn_drop(g, t);
            continue;
        }
        if (t->killed) continue;
        if (t->busy && conn_reading(t)) { /* the reply is done; evhttp reads again */
            t->busy = false;
            t->handshake = false;
            if (t->p.in_req)
                t->t_first = now;
            else
                idle_enter(t);
        }
        if (!t->busy && t->t_first > 0 && now - t->t_first > g->o.deadline_s) {
            evutil_socket_t fd = bufferevent_getfd(t->bev);
            log_warn("slow_request_closed", "fd=%d seconds=%.1f tls_handshake=%d", (int)fd,
                     now - t->t_first, t->handshake && !t->p.in_req);
            *g->m_deadline += 1;
            conn_kill(t, "deadline");
        }
    }
    if (g->paused && g->nconns < g->o.max_conns - g->o.max_conns / 10 &&
        !evtimer_pending(g->resume_ev, NULL))
        resume_accept(g);
    if (g->fd_episode && now - g->last_emfile > 5.0) { /* the episode is over */
        log_info("accept_resumed", "connections=%d", g->nconns);
        g->fd_episode = false;
    }
    *g->m_conns = g->nconns;
}

static struct gconn *find(struct connguard *g, struct bufferevent *bev)
{
    evutil_socket_t fd = bufferevent_getfd(bev);
    if (fd >= 0 && fd < g->nbyfd && g->byfd[fd] && g->byfd[fd]->bev == bev) return g->byfd[fd];
    struct gconn *t;
    TAILQ_FOREACH_REVERSE(t, &g->conns, gconn_list, link)
    {
        // cppcheck-suppress uninitvar ; TAILQ_FOREACH is not understood
        if (t->bev != bev) continue;
        if (fd >= 0 && fd < 1 << 20) {
            if (fd >= g->nbyfd) {
                int n = g->nbyfd ? g->nbyfd : 64;
                while (n <= fd)
                    n *= 2;
                struct gconn **nb = realloc(g->byfd, (size_t)n * sizeof *nb);
                if (!nb) return t;
                memset(nb + g->nbyfd, 0, (size_t)(n - g->nbyfd) * sizeof *nb);
                g->byfd = nb;
                g->nbyfd = n;
            }
            g->byfd[fd] = t;
        }
        return t;
    }
    return NULL;
}

static void on_complete(struct evhttp_request *req, void *arg)
{
    struct gconn *t = arg;
    t->busy = false;
    t->handshake = false;
    if (t->p.in_req)
        t->t_first = clock_mono(); /* pipelined bytes of the next request */
    else
        idle_enter(t);
}

void connguard_request_begin(struct connguard *g, struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    if (!g || !bev) return;
    struct gconn *t = find(g, bev);
    if (!t) return;
    t->busy = true;
    if (!t->p.in_req) t->t_first = 0;
    idle_leave(t);
    evhttp_request_set_on_complete_cb(req, on_complete, t);
}

static int raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) (void)getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1 << 30) ? 1 << 30 : (int)rl.rlim_cur;
}

struct connguard *connguard_new(struct event_base *base, struct evhttp *http,
                                const struct connguard_opts *o, struct metrics *m)
{
    struct connguard *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->base = base;
    g->http = http;
    g->o = *o;
    if (g->o.max_conns <= 0) g->o.max_conns = 4096;
    if (g->o.fds_per_conn <= 0) g->o.fds_per_conn = 1;
    if (!(g->o.deadline_s > 0)) g->o.deadline_s = 30;
    TAILQ_INIT(&g->conns);
    TAILQ_INIT(&g->idle);
    int nofile = raise_nofile();
    /* a reserve of 64 descriptors for everything that is not a client */
    if (nofile > 0 && (long)g->o.max_conns * g->o.fds_per_conn + 64 > nofile) {
        int cap = nofile > 128 ? (nofile - 64) / g->o.fds_per_conn : 32;
        if (cap < g->o.max_conns) {
            log_info("connections_clamped", "max_connections=%d fd_limit=%d", cap, nofile);
            g->o.max_conns = cap;
        }
    }
    double *d = &g->dummy;
    g->m_conns = g->m_evicted = g->m_deadline = g->m_paused = d;
    g->m_accept_err = g->m_budget = g->m_framing = d;
    if (m && o->prefix) {
        char n[160];
#define CG_METRIC(field, kind, suffix, help)                                                       \
    do {                                                                                           \
        snprintf(n, sizeof n, "%s_%s", o->prefix, suffix);                                         \
        g->field = metrics_##kind(m, n, help);                                                     \
        if (!g->field) g->field = d;                                                               \
    } while (0)
        CG_METRIC(m_conns, gauge, "connections", "Open client connections");
        CG_METRIC(m_evicted, counter, "conn_evicted_total",
                  "Idle connections closed to make room (connection or fd limit)");
        CG_METRIC(m_deadline, counter, "conn_deadline_closed_total",
                  "Connections cut for not sending a whole request in time");
        CG_METRIC(m_paused, counter, "accept_paused_total",
                  "Times accepting paused (connection or fd limit)");
        CG_METRIC(m_accept_err, counter, "accept_errors_total", "accept() failures");
        CG_METRIC(m_budget, counter, "body_budget_refused_total",
                  "Requests refused because the request byte budget was full");
        CG_METRIC(m_framing, counter, "framing_rejected_total",
                  "Requests answered 400 for ambiguous or malformed framing");
#undef CG_METRIC
    }
    g->sweep_ev = event_new(base, -1, EV_PERSIST, sweep, g);
    g->resume_ev = evtimer_new(base, on_resume, g);
    if (!g->sweep_ev || !g->resume_ev) {
        connguard_free(g);
        return NULL;
    }
    struct timeval tv = {0, 500000};
    evtimer_add(g->sweep_ev, &tv);
    for (int i = 0; i < MAX_GUARDS; i++)
        if (!g_guards[i]) {
            g_guards[i] = g;
            break;
        }
    evhttp_set_bevcb(http, bevcb, g);
    return g;
}

int connguard_listen(struct connguard *g, const char *host, int port, int *bound_port)
{
    if (!host || !*host) host = "0.0.0.0";
    errno = 0;
    struct evhttp_bound_socket *bs =
        evhttp_bind_socket_with_handle(g->http, host, (ev_uint16_t)port);
    if (!bs) {
        if (!errno) errno = EADDRINUSE;
        return -1;
    }
    evutil_socket_t fd = evhttp_bound_socket_get_fd(bs);
    http_set_nodelay((int)fd);
    g->bound = bs;
    g->lev = evhttp_bound_socket_get_listener(bs);
    if (g->lev) evconnlistener_set_error_cb(g->lev, on_accept_error);
    if (bound_port) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) return -1;
        *bound_port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                               : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    return 0;
}

void connguard_stop_accepting(struct connguard *g)
{
    if (!g || !g->bound) return;
    evhttp_del_accept_socket(g->http, g->bound); /* closes the listening socket */
    g->bound = NULL;
    g->lev = NULL; /* pause/resume become no-ops */
}

int connguard_max_conns(const struct connguard *g)
{
    return g->o.max_conns;
}

int connguard_open_conns(const struct connguard *g)
{
    return g->nconns;
}

void connguard_free(struct connguard *g)
{
    if (!g) return;
    for (int i = 0; i < MAX_GUARDS; i++)
        if (g_guards[i] == g) g_guards[i] = NULL;
    if (g->sweep_ev) event_free(g->sweep_ev);
    if (g->resume_ev) event_free(g->resume_ev);
    struct gconn *t;
    while ((t = TAILQ_FIRST(&g->conns)) != NULL)
        conn_drop(g, t);
    free(g->byfd);
    free(g);
}

char *connguard_framing_run(const char *in, size_t len, size_t slice, size_t max_body,
                            size_t *out_len, struct connguard_framing_result *res)
{
    struct gconn t;
    memset(&t, 0, sizeof t);
    hp_reset(&t.p);
    struct evbuffer *b = evbuffer_new();
    char *out = NULL;
    if (!b) return NULL;
    /* in slices, as a network would deliver them; evhttp's consumption is not
     * modelled (everything stays in the buffer) */
    size_t off = 0;
    while (off < len) {
        if (!slice) slice = 1000;
        size_t k = len - off < slice ? len - off : slice;
        evbuffer_add(b, in + off, k);
        feed(&t, b, k, max_body);
        off += k;
    }
    size_t n = evbuffer_get_length(b);
    out = malloc(n + 1);
    if (out) {
        evbuffer_remove(b, out, n);
        out[n] = '\0';
        *out_len = n;
    }
    evbuffer_free(b);
    if (t.hold) evbuffer_free(t.hold);
    if (res) {
        res->rejected = t.n_rejected;
        res->too_large = t.n_toobig;
        res->complete = t.n_complete;
    }
    return out;
}
