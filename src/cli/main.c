/* sgpu: client CLI for sgpu-engine and its workers (docs/cli.md). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli.h"
#include "httputil.h"
#include "opts.h"
#include "xalloc.h"

/* The global options: anywhere on the line before `--`; everything else is the command's. */
struct cli_globals {
    const char *engine, *api_key, *data_dir, *cacert;
    bool insecure, verbose;
};

#define AT(f) OPT_AT(struct cli_globals, f)
static const struct opt rows[] = {
    {.name = "engine",
     .env = "SGPU_ENGINE",
     .type = OPT_STR,
     AT(engine),
     .meta = "URL",
     .help = "engine base URL",
     .def_help = "$SGPU_ENGINE, else the address in <data-dir>/engine.addr, else "
                 "http://127.0.0.1:8080"},
    {.name = "api-key",
     .env = "SGPU_API_KEY",
     .type = OPT_STR,
     AT(api_key),
     .meta = "KEY",
     .help = "API key (route: the endpoint's or the admin key; management: admin)",
     .def_help = "$SGPU_API_KEY, else <data-dir>/api_key"},
    {.name = "data-dir",
     .env = "SGPU_DATA_DIR",
     .type = OPT_STR,
     AT(data_dir),
     .meta = "DIR",
     .help = "engine data directory to read api_key / engine.addr from",
     .def_help = "$SGPU_DATA_DIR, else ./sgpu-data"},
    {.name = "insecure",
     .type = OPT_FLAG,
     AT(insecure),
     .help = "do not verify TLS certificates (self-signed workers)"},
    {.name = "cacert",
     .type = OPT_STR,
     AT(cacert),
     .meta = "FILE",
     .help = "extra CA certificates (PEM) to trust"},
    {.name = "verbose",
     .short_name = 'v',
     .type = OPT_FLAG,
     AT(verbose),
     .help = "print routing/retry steps on stderr"},
};
#undef AT

static const struct opts_spec spec = {"sgpu", rows, sizeof rows / sizeof rows[0],
                                      OPTS_KEEP_UNKNOWN | OPTS_KEEP_DASHDASH | OPTS_NO_HELP};

/* The commands: name, the plural also accepted, the function and its line in the usage. */
static const struct {
    const char *name, *plural;
    int (*fn)(struct cli_common *c, int argc, char **argv);
    const char *help;
} commands[] = {
    {"call", NULL, cmd_call, "one request through the engine: route, then call the worker"},
    {"load", NULL, cmd_load, "open-loop load test through the engine, with live progress"},
    {"endpoint", "endpoints", cmd_endpoint, "create | list | update | delete endpoints"},
    {"workergroup", "workergroups", cmd_workergroup,
     "create | list | update | delete workergroups"},
    {"worker", "workers", cmd_worker, "list workers (state, load, perf)"},
    {"events", NULL, cmd_events, "the engine's scaling event log"},
    {"keygen", NULL, cmd_keygen, "write an RSA key pair (PEM)"},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
    fputs("usage: sgpu [global options] COMMAND [options]\n"
          "\n"
          "Commands:\n",
          f);
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
    fputs("Run `sgpu COMMAND --help` for a command's options.\n"
          "\n"
          "Global options (anywhere on the line; the flag wins over the variable):\n",
          f);
    opts_usage(&spec, f);
    fputs("\n"
          "Exit status: 0 success; 1 request failed; 2 usage error; 3 answer broken mid-stream;\n"
          "4 timed out.\n",
          f);
}

/* Reads the first line of a file into a malloc'd string (NULL if unreadable). */
static char *read_line_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    char buf[1024];
    char *line = fgets(buf, sizeof buf, f) ? xstrdup(buf) : NULL;
    fclose(f);
    if (line) line[strcspn(line, "\r\n")] = '\0';
    return line;
}

int main(int argc, char **argv)
{
    struct cli_common c = {0};
    struct cli_globals g = {0};
    struct opts_result r;
    if (opts_parse(&spec, &g, argc, argv, &r) != 0) {
        fprintf(stderr, "%s\n", r.err);
        opts_result_free(&r);
        return 2;
    }
    c.insecure = g.insecure;
    c.verbose = g.verbose;
    c.cacert = g.cacert;
    const char *engine = g.engine, *key = g.api_key, *data_dir = g.data_dir;
    /* r.args: COMMAND and its arguments */
    if (r.nargs < 1 || strcmp(r.args[0], "--help") == 0 || strcmp(r.args[0], "-h") == 0 ||
        strcmp(r.args[0], "help") == 0) {
        usage(r.nargs < 1 ? stderr : stdout);
        int rc = r.nargs < 1 ? 2 : 0;
        opts_result_free(&r);
        return rc;
    }

    if (!data_dir || !*data_dir) data_dir = "./sgpu-data";
    char path[4096];
    char *file_engine = NULL, *file_key = NULL;
    if (!engine) {
        snprintf(path, sizeof path, "%s/engine.addr", data_dir);
        file_engine = read_line_file(path);
        if (file_engine && *file_engine) {
            if (!strstr(file_engine, "://")) {
                size_t ul = strlen(file_engine) + 8;
                char *u = xmalloc(ul);
                snprintf(u, ul, "http://%s", file_engine);
                free(file_engine);
                file_engine = u;
            }
            engine = file_engine;
        }
    }
    if (!engine) engine = "http://127.0.0.1:8080";
    if (!key) {
        snprintf(path, sizeof path, "%s/api_key", data_dir);
        file_key = read_line_file(path);
        if (file_key && *file_key) key = file_key;
    }
    c.engine = engine;
    c.api_key = key;
    srandom((unsigned)(time(NULL) ^ getpid()));

    const char *cmd = r.args[0];
    size_t k = 0;
    while (k < NCOMMANDS && strcmp(cmd, commands[k].name) != 0 &&
           !(commands[k].plural && strcmp(cmd, commands[k].plural) == 0))
        k++;
    int rc;
    if (k < NCOMMANDS) {
        rc = commands[k].fn(&c, r.nargs, r.args);
    } else {
        fprintf(stderr, "sgpu: unknown command '%s' (see sgpu --help)\n", cmd);
        rc = 2;
    }
    free(file_engine);
    free(file_key);
    opts_result_free(&r);
    return rc;
}

/* ---- helpers shared by the commands ---- */

int cli_parse(const struct opts_spec *sp, void *cfg, int argc, char **argv, struct opts_result *r,
              void (*usage_fn)(FILE *f))
{
    if (opts_parse(sp, cfg, argc, argv, r) != 0) {
        fprintf(stderr, "%s\n", r->err);
        return 2;
    }
    if (r->help == OPTS_HELP_MARKDOWN) {
        opts_markdown(sp, stdout);
        return 1;
    }
    if (r->help) {
        usage_fn(stdout);
        return 1;
    }
    return 0;
}

void cli_run_until(struct event_base *base, const bool *flag)
{
    while (!*flag) {
        if (event_base_loop(base, EVLOOP_ONCE) != 0) break;
    }
}

struct sync_ctx {
    bool done;
    int status;
    struct sbuf *out;
    char *err;
    size_t errlen;
    int rc;
};

static void sync_done(void *arg, const struct hc_response *r)
{
    struct sync_ctx *s = arg;
    s->done = true;
    s->status = r->status;
    if (r->err != HC_OK) {
        snprintf(s->err, s->errlen, "%s", r->errmsg ? r->errmsg : hc_error_name(r->err));
        s->rc = -1;
        return;
    }
    sbuf_append(s->out, r->body, r->body_len);
    s->rc = 0;
}

int cli_http(struct event_base *base, struct hclient *hc, const char *method, const char *url,
             const char *bearer, const char *body, double timeout_s, int *status, struct sbuf *out,
             char *err, size_t errlen)
{
    struct sync_ctx s = {.out = out, .err = err, .errlen = errlen, .rc = -1};
    struct hc_opts o = {
        .method = method,
        .url = url,
        .body = body,
        .body_len = body ? strlen(body) : 0,
        .bearer = bearer,
        .timeout_s = timeout_s,
        .on_done = sync_done,
        .arg = &s,
    };
    if (!hc_request(hc, &o)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    cli_run_until(base, &s.done);
    *status = s.status;
    return s.rc;
}

int cli_read_data(const char *arg, struct sbuf *out)
{
    if (strcmp(arg, "-") == 0 || arg[0] == '@') {
        FILE *f = strcmp(arg, "-") == 0 ? stdin : fopen(arg + 1, "rb");
        if (!f) {
            fprintf(stderr, "sgpu: cannot read %s: %s\n", arg + 1, strerror(errno));
            return -1;
        }
        char buf[65536];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0)
            sbuf_append(out, buf, n);
        if (f != stdin) fclose(f);
        return 0;
    }
    sbuf_puts(out, arg);
    return 0;
}

bool cli_json_valid(const char *text, size_t len, char *err, size_t errlen)
{
    json_tokener *tok = json_tokener_new();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    json_object *j = json_tokener_parse_ex(tok, text, (int)len);
    enum json_tokener_error e = json_tokener_get_error(tok);
    if (!j && e == json_tokener_continue) {
        /* a bare number may still be waiting for its end: signal end of input */
        j = json_tokener_parse_ex(tok, "", 1);
        e = json_tokener_get_error(tok);
    }
    bool ok = j != NULL && e == json_tokener_success;
    if (ok) {
        /* only whitespace may follow */
        size_t off = json_tokener_get_parse_end(tok);
        if (off == 0) off = len; /* finished by the end-of-input call above */
        while (off < len && strchr(" \t\r\n", text[off]))
            off++;
        if (off != len) {
            ok = false;
            snprintf(err, errlen, "trailing data after the JSON value at offset %zu", off);
        }
    } else {
        snprintf(err, errlen, "%s",
                 e == json_tokener_continue ? "unexpected end of input"
                                            : json_tokener_error_desc(e));
    }
    json_object_put(j);
    json_tokener_free(tok);
    return ok;
}
