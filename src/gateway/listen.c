/* The listening socket: the shared connection discipline (src/common/connguard.c) with the
 * gateway's limits, and TLS when --tls-cert/--tls-key are given.
 *   - evhttp limits: body (--max-body), request head (16 KiB), read/write inactivity
 *     (--header-timeout);
 *   - the guard: fd soft limit raised, connection cap (--max-connections; every client may
 *     also hold an upstream connection, so 2 descriptors a connection), the oldest idle
 *     keep-alive connection evicted at the cap, EMFILE without spinning, a deadline of
 *     --header-timeout from a request's first byte (TLS: from accept) to its whole body,
 *     strict framing, and a budget of 4 x --max-body for bodies being received.
 * Its metrics are sgpu_gateway_connections, _conn_evicted_total, _conn_deadline_closed_total,
 * _accept_paused_total, _accept_errors_total, _body_budget_refused_total,
 * _framing_rejected_total. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "connguard.h"
#include "gateway.h"
#include "httputil.h"
#include "log.h"

struct listen_state {
    SSL_CTX *ssl;
    struct connguard *guard;
};

static SSL_CTX *tls_ctx(const struct gw_config *c)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) return NULL;
    if (SSL_CTX_use_certificate_chain_file(ctx, c->tls_cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, c->tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        char buf[256];
        ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
        log_error("tls_setup_failed", "cert=%s key=%s err=\"%s\"", c->tls_cert, c->tls_key, buf);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

int gw_listen(struct gateway *g, int *bound_port)
{
    struct listen_state *l = calloc(1, sizeof *l);
    if (!l) return -1;
    g->lst = l;
    struct http_limits lim = {
        .max_body = g->cfg.max_body,
        .max_headers = 16 * 1024,
        .timeout_s = (int)g->cfg.header_timeout,
    };
    g->http = http_server_new(g->base, &lim);
    if (!g->http) return -1;
    if (g->cfg.tls_cert[0]) {
        l->ssl = tls_ctx(&g->cfg);
        if (!l->ssl) return -1;
    }
    evhttp_set_gencb(g->http, gw_on_request, g);
    struct connguard_opts o = {
        .prefix = "sgpu_gateway",
        .max_conns = g->cfg.max_connections,
        .fds_per_conn = 2,
        .deadline_s = g->cfg.header_timeout,
        .body_budget = g->cfg.max_body * 4,
        .max_body = g->cfg.max_body,
        .ssl = l->ssl,
    };
    l->guard = connguard_new(g->base, g->http, &o, g->m);
    if (!l->guard) return -1;
    if (connguard_listen(l->guard, g->cfg.host, g->cfg.port, bound_port) != 0) {
        log_error("listen_failed", "host=%s port=%d err=\"%s\"", g->cfg.host, g->cfg.port,
                  strerror(errno ? errno : EADDRINUSE));
        return -1;
    }
    return 0;
}

void gw_listen_stop(struct gateway *g)
{
    if (g->lst) connguard_stop_accepting(g->lst->guard);
}

void gw_listen_free(struct gateway *g)
{
    struct listen_state *l = g->lst;
    if (!l) return;
    connguard_free(l->guard);
    if (l->ssl) SSL_CTX_free(l->ssl);
    free(l);
    g->lst = NULL;
}
