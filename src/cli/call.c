/* sgpu call: one routed request, answer on stdout. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static void call_usage(FILE *f)
{
    fputs("usage: sgpu call --endpoint NAME [--route /generate] --data JSON [options]\n"
          "\n"
          "Routes the request through the engine (POST /route/, polling while the engine answers\n"
          "\"waiting\"), then POSTs {\"auth_data\": <grant>, \"payload\": <data>} to the worker.\n"
          "Re-routes when the worker cannot be reached; retries 408/429/5xx answers (before any\n"
          "answer byte) with capped exponential back-off; never retries once an answer has\n"
          "started.  The answer body goes to stdout (as it arrives with --stream).\n"
          "\n"
          "  --endpoint NAME     endpoint name (required)\n"
          "  --route PATH        worker route (default /generate, or /generate_stream with "
          "--stream)\n"
          "  --data JSON         payload: literal JSON, @FILE, or - for stdin (required)\n"
          "  --stream            write answer bytes as they arrive (unbuffered)\n"
          "  --cost N            workload estimate sent to /route/ (default 100)\n"
          "  --max-time S        give up after S seconds in total (default 600)\n"
          "  --timeout S         one worker call (default 600)\n"
          "  --max-attempts N    worker calls including retries (default 5)\n"
          "  --show-worker       print the worker URL and timings on stderr when done\n"
          "  plus the global options (--engine, --api-key, ...; see sgpu --help)\n",
          f);
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
    const char *endpoint = NULL, *route = NULL, *data = NULL;
    struct call_ctx x = {.rc = 1};
    double cost = 100, max_time = 600, timeout = 600;
    int max_attempts = 5;
    enum { O_EP = 1, O_ROUTE, O_DATA, O_STREAM, O_COST, O_MAXT, O_TMO, O_ATT, O_SHOW, O_HELP };
    static const struct option opts[] = {
        {"endpoint", required_argument, NULL, O_EP},
        {"route", required_argument, NULL, O_ROUTE},
        {"data", required_argument, NULL, O_DATA},
        {"stream", no_argument, NULL, O_STREAM},
        {"cost", required_argument, NULL, O_COST},
        {"max-time", required_argument, NULL, O_MAXT},
        {"timeout", required_argument, NULL, O_TMO},
        {"max-attempts", required_argument, NULL, O_ATT},
        {"show-worker", no_argument, NULL, O_SHOW},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end = NULL;
        switch (o) {
        case O_EP:
            endpoint = optarg;
            break;
        case O_ROUTE:
            route = optarg;
            break;
        case O_DATA:
            data = optarg;
            break;
        case O_STREAM:
            x.stream = true;
            break;
        case O_COST:
            cost = strtod(optarg, &end);
            break;
        case O_MAXT:
            max_time = strtod(optarg, &end);
            break;
        case O_TMO:
            timeout = strtod(optarg, &end);
            break;
        case O_ATT:
            max_attempts = (int)strtol(optarg, &end, 10);
            break;
        case O_SHOW:
            x.show = true;
            break;
        case 'h':
        case O_HELP:
            call_usage(stdout);
            return 0;
        default:
            call_usage(stderr);
            return 2;
        }
        if (end && (end == optarg || *end)) {
            fprintf(stderr, "sgpu call: not a number: '%s'\n", optarg);
            return 2;
        }
    }
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
    if (max_attempts < 1 || max_time <= 0 || timeout <= 0 || cost < 0) {
        fprintf(stderr, "sgpu call: --max-attempts, --max-time and --timeout must be positive\n");
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
