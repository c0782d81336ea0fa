/* Shared libevent/evhttp glue: one event base per process (or thread) with the
 * epoll changelist on, servers created with explicit limits, JSON replies,
 * URL parsing and socket options.  See docs/design.md, libevent pitfalls 1-12. */
#ifndef SGPU_HTTPUTIL_H
#define SGPU_HTTPUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/http.h>

/* Event base with EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST (fewer epoll_ctl calls)
 * and EV_FEATURE_EARLY_CLOSE when available.  NULL on failure. */
struct event_base *http_base_new(void);

struct http_limits {
    size_t max_body;    /* bytes; 0 = 64 MiB */
    size_t max_headers; /* bytes, request line included; 0 = 16 KiB */
    int timeout_s;      /* idle / read timeout; 0 = 60 s */
};

/* evhttp with the limits applied, default Content-Type application/json, and
 * all methods allowed (handlers answer 405 themselves).  NULL on failure. */
struct evhttp *http_server_new(struct event_base *base, const struct http_limits *lim);

/* Bind host:port (host NULL or "" = 0.0.0.0; port 0 = ephemeral).  On success
 * returns 0 and the bound port in *bound_port (if not NULL); -1 with errno. */
int http_server_listen(struct evhttp *http, const char *host, int port, int *bound_port);

/* Reply helpers.  They set Content-Type and Content-Length. */
void http_reply(struct evhttp_request *req, int status, const char *content_type, const void *body,
                size_t len);
void http_reply_json(struct evhttp_request *req, int status, const char *json, size_t len);
/* {"error": "<message>"} with the message JSON-escaped (ASCII, Python style). */
void http_reply_error(struct evhttp_request *req, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The JSON error body {"success": false, "error": "<code>", "msg": "<message>"} (Vast's shape,
 * used by every sgpu-engine answer) appended to out; code and message JSON-escaped (ASCII,
 * Python style). */
struct sbuf;
void http_json_error(struct sbuf *out, const char *code, const char *msg);
/* Reply with that body: status, code ("bad_request", "not_found", ...) and a printf message. */
void http_reply_json_error(struct evhttp_request *req, int status, const char *code,
                           const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Standard reason phrase for a status ("Unknown" if none; "" for 499). */
const char *http_reason(int status);

/* Request body as a contiguous buffer (pulled up inside the evbuffer; valid
 * until the request is freed).  *len receives the length.  Never NULL. */
const char *http_request_body(struct evhttp_request *req, size_t *len);

/* Path of the request URI without query string, NUL-terminated into buf.
 * Returns buf, or NULL if it does not fit or the URI is malformed. */
char *http_request_path(struct evhttp_request *req, char *buf, size_t n);

/* Whether an upstream answer is streamed (passed on as it arrives): Transfer-Encoding chunked,
 * or a Content-Type of text/event-stream, application/x-ndjson, application/jsonl or any other
 * naming "stream" (any case).  Either header may be NULL. */
bool http_is_stream(const char *content_type, const char *transfer_encoding);

/* Set TCP_NODELAY on a socket (ignores errors on non-TCP sockets). */
void http_set_nodelay(int fd);

/* Parsed http(s) URL.  host is numeric or a name (names must be resolved by
 * the caller before connecting: evhttp resolves synchronously otherwise). */
struct http_url {
    bool tls;
    char host[256];
    int port;        /* defaulted from the scheme */
    char path[1024]; /* "/" when absent; query kept */
};
/* Accepts "http://h:p/path", "https://h", "h:p" (http implied).  0 or -1. */
int http_url_parse(const char *url, struct http_url *out);

#endif
