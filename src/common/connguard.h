/* connguard: the connection discipline every sgpu HTTP server shares.
 *
 * One guard per evhttp server.  It creates each accepted connection's
 * bufferevent itself (evhttp_set_bevcb; plain or TLS), watches the bytes
 * arriving on it before evhttp parses them, and enforces:
 *
 *   fd limit      RLIMIT_NOFILE soft limit raised to the hard limit; the
 *                 connection limit is clamped to what the fds allow.
 *   accept        EMFILE/ENFILE: the oldest idle connection is evicted to free
 *                 a descriptor, or the listener pauses (no busy loop); one
 *                 "accept_paused" log line per episode.
 *   limit         at max_conns open connections the oldest idle keep-alive
 *                 connection is evicted; with none idle, accepting pauses.
 *   deadline      from the first byte of a request (TLS: from accept, so the
 *                 handshake is included) to its complete head and body.
 *   body budget   bytes of requests still being received, summed over all
 *                 connections; past it the connection holding the most is
 *                 refused (503 JSON when plain, then closed).
 *   framing       strict HTTP/1.1 request framing, checked line by line before
 *                 evhttp reads it: conflicting or malformed Content-Length,
 *                 malformed or unsupported Transfer-Encoding, obs-fold and
 *                 invalid header names get evhttp's 400; chunked bodies are
 *                 de-chunked here (extensions accepted, bad sizes 400, over
 *                 max_body 413) and handed to evhttp with a Content-Length.
 *
 * Metrics (when a registry is given): <prefix>_connections (gauge),
 * <prefix>_conn_evicted_total, <prefix>_conn_deadline_closed_total,
 * <prefix>_accept_paused_total, <prefix>_accept_errors_total,
 * <prefix>_body_budget_refused_total, <prefix>_framing_rejected_total.
 * Everything runs on the server's event loop thread. */
#ifndef SGPU_CONNGUARD_H
#define SGPU_CONNGUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/http.h>
#include <openssl/ssl.h>

#include "metrics.h"

struct connguard;

struct connguard_opts {
    const char *prefix; /* metric name prefix, e.g. "sgpu_engine"; NULL = no metrics */
    int max_conns;      /* open client connections; 0 = 4096 */
    int fds_per_conn;   /* descriptors one client connection may cost (proxies: 2); 0 = 1 */
    double deadline_s;  /* request head + body (TLS handshake included); 0 = 30 s */
    size_t body_budget; /* bytes of requests being received, all connections; 0 = unlimited */
    size_t max_body;    /* the server's body limit, applied to de-chunked bodies; 0 = 64 MiB */
    SSL_CTX *ssl;       /* borrowed; NULL = plain HTTP */
};

/* Raises the fd soft limit, installs the bufferevent callback on http.
 * m may be NULL.  NULL on allocation failure. */
struct connguard *connguard_new(struct event_base *base, struct evhttp *http,
                                const struct connguard_opts *o, struct metrics *m);
/* Binds host:port (NULL/"" = 0.0.0.0, 0 = ephemeral) with TCP_NODELAY and the
 * guarded accept error handling.  0 and *bound_port, or -1 with errno. */
int connguard_listen(struct connguard *g, const char *host, int port, int *bound_port);
/* Optional, from the request handler: marks the connection busy at once and
 * restarts its deadline clock when the reply is complete (otherwise noticed
 * within the 0.5 s sweep). */
void connguard_request_begin(struct connguard *g, struct evhttp_request *req);
/* Closes the listening socket (graceful shutdown: open connections are kept). */
void connguard_stop_accepting(struct connguard *g);
void connguard_free(struct connguard *g);

/* Effective connection limit (after the fd clamp) and open connections. */
int connguard_max_conns(const struct connguard *g);
int connguard_open_conns(const struct connguard *g);

/* The framing checker alone, for unit tests and the bench: feeds a request
 * stream through a fresh parser in `slice`-byte reads (0 = 1000) and returns
 * the bytes evhttp would be given (de-chunked; a rejected request ends in a
 * colon-less header line), malloc'ed and NUL-terminated; NULL on failure. */
struct connguard_framing_result {
    int rejected;  /* requests refused with 400 */
    int too_large; /* de-chunked bodies over max_body (413) */
    int complete;  /* requests whose end was seen */
};
char *connguard_framing_run(const char *in, size_t len, size_t slice, size_t max_body,
                            size_t *out_len, struct connguard_framing_result *res);

#endif
