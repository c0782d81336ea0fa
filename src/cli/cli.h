/* sgpu client CLI internals.
 *
 *   main.c   sub-command dispatch, shared options (engine URL, keys, TLS)
 *   rcall.c  one routed request: /route/ (with waiting polls) -> worker call,
 *            with the Vast SDK's retry rules (docs/protocol.md §2.1)
 *   call.c   `sgpu call`
 *   load.c   `sgpu load` (open-loop load generator)
 *   mgmt.c   `sgpu endpoint|workergroup|worker|events`
 *   keygen.c `sgpu keygen`
 */
#ifndef SGPU_CLI_H
#define SGPU_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <event2/event.h>

#include "hclient.h"
#include "sbuf.h"

/* Options shared by all sub-commands (parsed by main.c). */
struct cli_common {
    const char *engine;  /* base URL without trailing slash */
    const char *api_key; /* may be NULL */
    bool insecure;
    const char *cacert;
    bool verbose;
};

enum rc_fail {
    RC_OK = 0,
    RC_ROUTE,     /* the engine refused or could not be reached */
    RC_STATUS,    /* the worker answered a non-retryable status, or retries ran out */
    RC_MIDSTREAM, /* the worker's answer broke after it had started (never retried) */
    RC_TIMEOUT,   /* --max-time passed */
    RC_CANCELLED,
};

struct rcall_result {
    enum rc_fail fail;
    int status;           /* last worker HTTP status (0 = none) */
    char msg[512];        /* human text when fail != RC_OK */
    char worker_url[256]; /* worker of the last attempt */
    int attempts;         /* worker calls made */
    int routes;           /* /route/ calls made (grants + polls + retries) */
    int waits;            /* "waiting" answers seen */
    double t_grant;       /* s from start to the (last) grant */
    double t_first_byte;  /* s from start to the first body byte of the answer (2xx) */
    double t_total;       /* s from start to completion */
    const char *err_body; /* body of the failing answer (RC_STATUS), may be "" */
    size_t err_body_len;
};

struct rcall_opts {
    const char *engine;
    const char *endpoint;
    const char *api_key;
    const char *route;   /* e.g. "/generate" */
    const char *payload; /* JSON text */
    size_t payload_len;
    double cost;
    double max_time;       /* overall deadline (s) */
    double worker_timeout; /* one worker call (s) */
    int max_attempts;      /* worker calls, retries included */
    double first_poll_s;   /* first delay after a "waiting" answer (SDK: 1 s); <0 = default */
    /* Body bytes of the answer that is being delivered (2xx head), as they arrive. */
    void (*on_chunk)(void *arg, const char *p, size_t n);
    /* Progress notes for --verbose (may be NULL). */
    void (*on_note)(void *arg, const char *what, const char *detail);
    void (*on_done)(void *arg, const struct rcall_result *r);
    void *arg;
};

struct rcall;
/* Starts one routed request on `hc`'s loop.  NULL on allocation failure. */
struct rcall *rcall_start(struct event_base *base, struct hclient *hc, const struct rcall_opts *o);
/* Aborts it (on_done not called). */
void rcall_cancel(struct rcall *c);

/* Loop until `*flag` becomes true (runs the base). */
void cli_run_until(struct event_base *base, const bool *flag);

/* One request, synchronously (drives the loop).  Fills *status and body. */
int cli_http(struct event_base *base, struct hclient *hc, const char *method, const char *url,
             const char *bearer, const char *body, double timeout_s, int *status, struct sbuf *out,
             char *err, size_t errlen);

int cmd_call(struct cli_common *c, int argc, char **argv);
int cmd_load(struct cli_common *c, int argc, char **argv);
int cmd_endpoint(struct cli_common *c, int argc, char **argv);
int cmd_workergroup(struct cli_common *c, int argc, char **argv);
int cmd_worker(struct cli_common *c, int argc, char **argv);
int cmd_events(struct cli_common *c, int argc, char **argv);
int cmd_keygen(struct cli_common *c, int argc, char **argv);

/* What `sgpu call` and `sgpu load` ask of each request (their option tables share these rows). */
struct cli_req_opts {
    const char *endpoint, *route, *data;
    bool stream;
    double cost, timeout;
    int max_attempts;
};

/* The opts.h rows of struct cli_req_opts `m` inside the options struct T. */
#define CLI_REQ_ROWS(T, m)                                                                         \
    {.name = "endpoint",                                                                           \
     .type = OPT_STR,                                                                              \
     OPT_AT(T, m.endpoint),                                                                        \
     .meta = "NAME",                                                                               \
     .help = "endpoint name (required)"},                                                          \
        {.name = "route",                                                                          \
         .type = OPT_STR,                                                                          \
         OPT_AT(T, m.route),                                                                       \
         .meta = "PATH",                                                                           \
         .help = "worker route",                                                                   \
         .def_help = "/generate, or /generate_stream with --stream"},                              \
        {.name = "data",                                                                           \
         .type = OPT_STR,                                                                          \
         OPT_AT(T, m.data),                                                                        \
         .meta = "JSON",                                                                           \
         .help = "payload: literal JSON, @FILE, or - for stdin (required)"},                       \
        {.name = "stream",                                                                         \
         .type = OPT_FLAG,                                                                         \
         OPT_AT(T, m.stream),                                                                      \
         .help = "write answer bytes as they arrive (unbuffered)"},                                \
        {.name = "cost",                                                                           \
         .type = OPT_DBL,                                                                          \
         OPT_AT(T, m.cost),                                                                        \
         .lo = 0,                                                                                  \
         .hi = 1e12,                                                                               \
         .def = "100",                                                                             \
         .meta = "N",                                                                              \
         .help = "workload estimate sent to /route/"},                                             \
        {.name = "timeout",                                                                        \
         .type = OPT_DBL,                                                                          \
         OPT_AT(T, m.timeout),                                                                     \
         .lo = 0.001,                                                                              \
         .hi = 1e7,                                                                                \
         .def = "600",                                                                             \
         .meta = "S",                                                                              \
         .help = "one worker call"},                                                               \
    {                                                                                              \
        .name = "max-attempts", .type = OPT_INT, OPT_AT(T, m.max_attempts), .lo = 1,               \
        .hi = 1000000, .def = "5", .meta = "N", .help = "worker calls including retries"           \
    }

/* Parses a subcommand's options (argv[0] = the command) into cfg: 0 run, 1 --help printed
 * (usage() with the table's rows), 2 usage error printed.  Positional arguments stay in r
 * (free it with opts_result_free). */
struct opts_spec;
struct opts_result;
int cli_parse(const struct opts_spec *sp, void *cfg, int argc, char **argv, struct opts_result *r,
              void (*usage_fn)(FILE *f));

/* Reads --data: "@FILE", "-" (stdin) or literal text.  0 or -1 (message printed). */
int cli_read_data(const char *arg, struct sbuf *out);
/* True when `text` is one valid (strict) JSON value. */
bool cli_json_valid(const char *text, size_t len, char *err, size_t errlen);

#endif
