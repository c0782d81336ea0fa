/* Listening socket, optional TLS (USE_SSL), and the connection discipline.
 *
 * The connection guard (src/common/connguard.c) does the work: fd limit
 * raised at start, EMFILE/ENFILE handled without a busy loop, oldest idle
 * connection evicted at SGPU_MAX_CONNECTIONS (each client may also hold an
 * upstream connection: two descriptors per client), SGPU_REQUEST_DEADLINE from
 * the first byte of a request (TLS: from accept, handshake included) to its
 * complete head and body (slowloris, docs/design.md pitfall 7), SGPU_BODY_BUDGET
 * over all connections, strict request framing.  This file only makes the TLS
 * context and binds.
 *
 * TCP_NODELAY is set on the listening socket; Linux copies it to every
 * accepted socket (docs/design.md pitfall 2) at no per-request cost. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "connguard.h"
#include "listener.h"
#include "log.h"
#include "xalloc.h"

struct listener {
    SSL_CTX *ssl;
    struct connguard *guard;
};

void listener_request_begin(struct worker *w, struct evhttp_request *req)
{
    if (w->lst) connguard_request_begin(w->lst->guard, req);
}

static SSL_CTX *tls_server_ctx(const struct wconfig *c)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) return NULL;
    if (SSL_CTX_use_certificate_chain_file(ctx, c->tls_cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, c->tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        unsigned long e = ERR_get_error();
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        log_error("tls_setup_failed", "cert=%s key=%s err=\"%s\"", c->tls_cert, c->tls_key, buf);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

int listener_init(struct worker *w)
{
    struct listener *l = xcalloc(1, sizeof *l);
    w->lst = l;
    if (w->cfg.use_ssl) {
        l->ssl = tls_server_ctx(&w->cfg);
        if (!l->ssl) return -1;
    }
    struct connguard_opts o = {
        .prefix = "sgpu_worker",
        .max_conns = w->cfg.max_connections,
        .fds_per_conn = 2,
        .deadline_s = w->cfg.request_deadline,
        .body_budget = w->cfg.body_budget,
        .max_body = w->cfg.max_body,
        .ssl = l->ssl,
    };
    l->guard = connguard_new(w->base, w->http, &o, w->metrics);
    if (!l->guard) return -1;
    int port = 0;
    if (connguard_listen(l->guard, w->cfg.host, w->cfg.port, &port) != 0) {
        log_error("listen_failed", "host=%s port=%d err=\"%s\"", w->cfg.host, w->cfg.port,
                  strerror(errno ? errno : EADDRINUSE));
        return -1;
    }
    w->cfg.port = port;
    return 0;
}

void listener_free(struct worker *w)
{
    struct listener *l = w->lst;
    if (!l) return;
    connguard_free(l->guard);
    if (l->ssl) SSL_CTX_free(l->ssl);
    free(l);
    w->lst = NULL;
}
