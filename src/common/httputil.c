/* libevent/evhttp glue; see httputil.h. */
#include "httputil.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "pyjson.h"
#include "sbuf.h"

struct event_base *http_base_new(void)
{
    struct event_config *cfg = event_config_new();
    if (!cfg) return NULL;
    event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    event_config_require_features(cfg, EV_FEATURE_EARLY_CLOSE);
    struct event_base *base = event_base_new_with_config(cfg);
    if (!base) {
        /* EARLY_CLOSE is an epoll feature; fall back rather than fail. */
        event_config_free(cfg);
        cfg = event_config_new();
        if (!cfg) return NULL;
        event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
        base = event_base_new_with_config(cfg);
    }
    event_config_free(cfg);
    return base;
}

struct evhttp *http_server_new(struct event_base *base, const struct http_limits *lim)
{
    struct evhttp *http = evhttp_new(base);
    if (!http) return NULL;
    size_t body = lim && lim->max_body ? lim->max_body : (size_t)64 << 20;
    size_t hdrs = lim && lim->max_headers ? lim->max_headers : (size_t)16 << 10;
    int tmo = lim && lim->timeout_s ? lim->timeout_s : 60;
    evhttp_set_max_body_size(http, (ev_ssize_t)body);
    evhttp_set_max_headers_size(http, (ev_ssize_t)hdrs);
    evhttp_set_timeout(http, tmo);
    evhttp_set_default_content_type(http, "application/json");
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                         EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                         EVHTTP_REQ_PATCH);
    return http;
}

int http_server_listen(struct evhttp *http, const char *host, int port, int *bound_port)
{
    if (!host || !*host) host = "0.0.0.0";
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(http, host, (ev_uint16_t)port);
    if (!bs) {
        if (!errno) errno = EADDRINUSE;
        return -1;
    }
    if (bound_port) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        evutil_socket_t fd = evhttp_bound_socket_get_fd(bs);
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) return -1;
        if (ss.ss_family == AF_INET6)
            *bound_port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        else
            *bound_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    return 0;
}

const char *http_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 413:
        return "Request Entity Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 499:
        return "";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Unknown";
    }
}

void http_reply(struct evhttp_request *req, int status, const char *content_type, const void *body,
                size_t len)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    if (content_type) {
        evhttp_remove_header(h, "Content-Type");
        evhttp_add_header(h, "Content-Type", content_type);
    }
    struct evbuffer *out = evbuffer_new();
    if (out && len) evbuffer_add(out, body, len);
    evhttp_send_reply(req, status, http_reason(status), out);
    if (out) evbuffer_free(out);
}

void http_reply_json(struct evhttp_request *req, int status, const char *json, size_t len)
{
    http_reply(req, status, "application/json", json, len);
}

void http_reply_error(struct evhttp_request *req, int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct sbuf b = SBUF_INIT;
    sbuf_puts(&b, "{\"error\": ");
    pyj_write_string(&b, msg, strlen(msg));
    sbuf_putc(&b, '}');
    http_reply_json(req, status, b.data, b.len);
    sbuf_free(&b);
}

void http_json_error(struct sbuf *out, const char *code, const char *msg)
{
    sbuf_puts(out, "{\"success\": false, \"error\": ");
    pyj_write_string(out, code, strlen(code));
    sbuf_puts(out, ", \"msg\": ");
    pyj_write_string(out, msg, strlen(msg));
    sbuf_putc(out, '}');
}

void http_reply_json_error(struct evhttp_request *req, int status, const char *code,
                           const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct sbuf b = SBUF_INIT;
    http_json_error(&b, code, msg);
    http_reply_json(req, status, b.data, b.len);
    sbuf_free(&b);
}

const char *http_request_body(struct evhttp_request *req, size_t *len)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    *len = n;
    if (n == 0) return "";
    const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
    return p ? p : "";
}

char *http_request_path(struct evhttp_request *req, char *buf, size_t n)
{
    const char *uri = evhttp_request_get_uri(req);
    if (!uri || n == 0) return NULL;
    size_t l = strcspn(uri, "?#");
    if (uri[0] != '/') {
        /* absolute-form (http://host/path): take the path part */
        const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
        const char *p = u ? evhttp_uri_get_path(u) : NULL;
        if (!p || !*p) p = "/";
        if (strlen(p) >= n) return NULL;
        strcpy(buf, p);
        return buf;
    }
    if (l >= n) return NULL;
    memcpy(buf, uri, l);
    buf[l] = '\0';
    return buf;
}

/* Streamed content types, matched as prefixes (any case). */
static const char *const stream_types[] = {"text/event-stream", "application/x-ndjson",
                                           "application/jsonl"};

bool http_is_stream(const char *content_type, const char *transfer_encoding)
{
    if (transfer_encoding && strcasestr(transfer_encoding, "chunked")) return true;
    if (!content_type) return false;
    for (size_t i = 0; i < sizeof stream_types / sizeof stream_types[0]; i++)
        if (strncasecmp(content_type, stream_types[i], strlen(stream_types[i])) == 0) return true;
    return strcasestr(content_type, "stream") != NULL;
}

void http_set_nodelay(int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int http_url_parse(const char *url, struct http_url *out)
{
    memset(out, 0, sizeof *out);
    const char *p = url;
    if (strncmp(p, "http://", 7) == 0) {
        p += 7;
    } else if (strncmp(p, "https://", 8) == 0) {
        out->tls = true;
        p += 8;
    } else if (strstr(p, "://")) {
        return -1;
    }
    out->port = out->tls ? 443 : 80;
    /* "user:password@" is skipped: sgpu's clients send no URL credentials (an engine gives a
     * token-less generation-1 worker its token that way; sgpu-worker sends mtoken instead) */
    size_t al = strcspn(p, "/?#");
    const char *at = memrchr(p, '@', al);
    if (at) p = at + 1;
    size_t hl;
    const char *after;
    if (*p == '[') { /* [v6]:port */
        const char *e = strchr(p, ']');
        if (!e) return -1;
        hl = (size_t)(e - p - 1);
        if (hl == 0 || hl >= sizeof out->host) return -1;
        memcpy(out->host, p + 1, hl);
        after = e + 1;
    } else {
        hl = strcspn(p, ":/?#");
        if (hl == 0 || hl >= sizeof out->host) return -1;
        memcpy(out->host, p, hl);
        after = p + hl;
    }
    out->host[hl] = '\0';
    /* a host is letters, digits, '-', '.', '_' (and ':' inside [v6]); anything else (space,
     * control bytes, '%', quotes) would reach a Host header or a log line */
    for (size_t i = 0; i < hl; i++) {
        unsigned char ch = (unsigned char)out->host[i];
        if (!isalnum(ch) && ch != '-' && ch != '.' && ch != '_' && !(ch == ':' && *p == '['))
            return -1;
    }
    if (*after == ':') {
        char *end;
        long port = strtol(after + 1, &end, 10);
        if (end == after + 1 || port <= 0 || port > 65535) return -1;
        out->port = (int)port;
        after = end;
    }
    if (*after == '\0') {
        strcpy(out->path, "/");
    } else if (*after == '/' || *after == '?') {
        size_t pl = strcspn(after, "#");
        if (pl + 2 > sizeof out->path) return -1;
        size_t o = 0;
        if (*after == '?') out->path[o++] = '/';
        memcpy(out->path + o, after, pl);
        out->path[o + pl] = '\0';
    } else if (*after != '#') {
        return -1;
    } else {
        strcpy(out->path, "/");
    }
    return 0;
}
