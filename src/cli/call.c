/* sgpu call: one routed request, answer on stdout. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "opts.h"

struct call_opts {
    struct cli_req_opts rq;
    double max_time;
    bool show;
};

static const struct opt rows[] = {
    CLI_REQ_ROWS(struct call_opts, rq),
    {.name = "max-time",
     .type = OPT_DBL,
     OPT_AT(struct call_opts, max_time),
     .lo = 0.001,
     .hi = 1e7,
     .def = "600",
     .meta = "S",
     .help = "give up after S seconds in total"},
    {.name = "show-worker",
     .type = OPT_FLAG,
     OPT_AT(struct call_opts, show),
     .help = "print the worker URL and timings on stderr when done"},
};

static const struct opts_spec spec = {"sgpu call", rows, sizeof rows / sizeof rows[0], OPTS_PREFIX};

static void call_usage(FILE *f)
{
    fputs("usage: sgpu call --endpoint NAME [--route /generate] --data JSON [options]\n"
          "\n"
          "Routes the request through the engine (POST /route/, polling while the engine answers\n"
          "\"waiting\"), then POSTs {\"auth_data\": <grant>, \"payload\": <data>} to the worker.\n"
          "Re-routes when the worker cannot be reached; retries 408/429/5xx answers (before any\n"
          "answer byte) with capped exponential back-off; never retries once an answer has\n"
          "started.  The answer body goes to stdout (as it arrives with --stream).\n"
          "\n",
          f);
    opts_usage(&spec, f);
    fputs("  plus the global options (--engine, --api-key, ...; see sgpu --help)\n", f);
}

struct call_ctx {
    bool done;
    bool stream;
    bool show;
    struct sbuf out;
    int rc;
    bool wrote_nl;
    char last;
};

static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDOUT_FILENO, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

static void on_chunk(void *arg, const char *p, size_t n)
{
    struct call_ctx *x = arg;
    if (n) x->last = p[n - 1];
    if (x->stream)
        write_all(p, n);
    else
        sbuf_append(&x->out, p, n);
}

static void on_note(void *arg, const char *what, const char *detail)
{
    fprintf(stderr, "sgpu: %s: %s\n", what, detail);
}

static void on_done(void *arg, const struct rcall_result *r)
{
    struct call_ctx *x = arg;
    x->done = true;
    if (!x->stream && x->out.len) write_all(x->out.data, x->out.len);
    if (r->fail == RC_OK) {
        /* a trailing newline for terminals when the answer has none */
        if (x->last != '\n' && isatty(STDOUT_FILENO)) write_all("\n", 1);
        x->rc = 0;
    } else {
        if (x->last && x->last != '\n' && isatty(STDOUT_FILENO)) write_all("\n", 1);
        fprintf(stderr, "sgpu: %s\n", r->msg);
        if (r->err_body_len)
            fprintf(stderr, "sgpu: answer body: %.*s\n",
                    (int)(r->err_body_len > 2000 ? 2000 : r->err_body_len), r->err_body);
        x->rc = r->fail == RC_MIDSTREAM ? 3 : r->fail == RC_TIMEOUT ? 4 : 1;
    }
    if (x->show)
        fprintf(stderr,
                "sgpu: worker=%s status=%d attempts=%d routes=%d waits=%d grant_s=%.3f "
                "first_byte_s=%.3f total_s=%.3f\n",
                r->worker_url[0] ? r->worker_url : "-", r->status, r->attempts, r->routes, r->waits,
                r->t_grant, r->t_first_byte, r->t_total);
}

int cmd_call(struct cli_common *c, int argc, char **argv)
{
    struct call_ctx x = {.rc = 1};
    struct call_opts o = {0};
    struct opts_result r;
    int prc = cli_parse(&spec, &o, argc, argv, &r, call_usage);
    opts_result_free(&r); /* positional arguments are ignored, as they always were */
    if (prc) return prc == 1 ? 0 : 2;
    x.stream = o.rq.stream;
    x.show = o.show;
    const char *endpoint = o.rq.endpoint, *route = o.rq.route, *data = o.rq.data;
    double cost = o.rq.cost, max_time = o.max_time, timeout = o.rq.timeout;
    int max_attempts = o.rq.max_attempts;
    if (!endpoint || !data) {
        fprintf(stderr, "sgpu call: --endpoint and --data are required\n");
        call_usage(stderr);
        return 2;
    }
    if (!route) route = x.stream ? "/generate_stream" : "/generate";
    if (route[0] != '/') {
        fprintf(stderr, "sgpu call: --route must start with '/'\n");
        return 2;
    }
    struct sbuf payload = SBUF_INIT;
    if (cli_read_data(data, &payload) != 0) return 2;
    char jerr[256];
    if (!cli_json_valid(payload.data ? payload.data : "", payload.len, jerr, sizeof jerr)) {
        fprintf(stderr, "sgpu call: --data is not valid JSON: %s\n", jerr);
        sbuf_free(&payload);
        return 2;
    }
    struct event_base *base = event_base_new();
    struct hclient_tls_opts tls = {.insecure = c->insecure, .ca_file = c->cacert};
    struct hclient *hc = hclient_new(base, &tls);
    struct rcall_opts ro = {
        .engine = c->engine,
        .endpoint = endpoint,
        .api_key = c->api_key,
        .route = route,
        .payload = payload.data,
        .payload_len = payload.len,
        .cost = cost,
        .max_time = max_time,
        .worker_timeout = timeout,
        .max_attempts = max_attempts,
        .first_poll_s = -1,
        .on_chunk = on_chunk,
        .on_note = c->verbose ? on_note : NULL,
        .on_done = on_done,
        .arg = &x,
    };
    if (!rcall_start(base, hc, &ro)) {
        fprintf(stderr, "sgpu call: out of memory\n");
        x.done = true;
    }
    cli_run_until(base, &x.done);
    hclient_free(hc);
    event_base_free(base);
    sbuf_free(&payload);
    sbuf_free(&x.out);
    return x.rc;
}
