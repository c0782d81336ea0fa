/* sgpu endpoint | workergroup | worker | events: the engine's management API
 * (docs/engine.md "Management API").  Parameters are given as key=value
 * pairs; a value that parses as JSON (number, true/false/null, object,
 * array, "quoted string") is sent as that JSON value, anything else as a
 * string. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli.h"
#include "clock.h"
#include "httputil.h"
#include "opts.h"

struct mctx {
    struct cli_common *c;
    struct event_base *base;
    struct hclient *hc;
    bool json_out;
};

static int mctx_init(struct mctx *m, struct cli_common *c)
{
    m->c = c;
    m->base = event_base_new();
    struct hclient_tls_opts tls = {.insecure = c->insecure, .ca_file = c->cacert};
    m->hc = m->base ? hclient_new(m->base, &tls) : NULL;
    if (!m->hc) {
        fprintf(stderr, "sgpu: out of memory\n");
        return -1;
    }
    if (!c->api_key)
        fprintf(stderr, "sgpu: warning: no API key (use --api-key, SGPU_API_KEY or --data-dir)\n");
    return 0;
}

static void mctx_free(struct mctx *m)
{
    hclient_free(m->hc);
    if (m->base) event_base_free(m->base);
}

/* Performs the request; on success returns the parsed answer (caller puts
 * it), else prints the engine's error and returns NULL. */
static json_object *api(struct mctx *m, const char *method, const char *path, const char *body)
{
    char url[2048];
    snprintf(url, sizeof url, "%s%s", m->c->engine, path);
    struct sbuf out = SBUF_INIT;
    char err[700];
    int status = 0;
    if (cli_http(m->base, m->hc, method, url, m->c->api_key, body, 30, &status, &out, err,
                 sizeof err) != 0) {
        fprintf(stderr, "sgpu: %s %s: %s\n", method, url, err);
        sbuf_free(&out);
        return NULL;
    }
    json_object *j = json_tokener_parse(sbuf_cstr(&out));
    json_object *v;
    if (status < 200 || status >= 300 || !j ||
        (json_object_is_type(j, json_type_object) && json_object_object_get_ex(j, "success", &v) &&
         !json_object_get_boolean(v))) {
        json_object *e = NULL, *msg = NULL;
        if (j) {
            json_object_object_get_ex(j, "error", &e);
            json_object_object_get_ex(j, "msg", &msg);
        }
        fprintf(stderr, "sgpu: %s %s: HTTP %d%s%s%s%s\n", method, path, status, e ? ": " : "",
                e ? json_object_get_string(e) : "", msg ? ": " : "",
                msg ? json_object_get_string(msg) : (j ? "" : sbuf_cstr(&out)));
        json_object_put(j);
        sbuf_free(&out);
        return NULL;
    }
    sbuf_free(&out);
    return j;
}

static void print_json(json_object *j)
{
    puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                               JSON_C_TO_STRING_NOSLASHESCAPE));
}

/* key=value pairs into obj.  0 or -1 (message printed). */
static int parse_kv(json_object *obj, int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        const char *eq = strchr(argv[i], '=');
        if (!eq || eq == argv[i]) {
            fprintf(stderr, "sgpu: expected key=value, got '%s'\n", argv[i]);
            return -1;
        }
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)(eq - argv[i]), argv[i]);
        const char *val = eq + 1;
        char jerr[64];
        /* valid JSON -> that value ("null" parses to NULL, which json-c writes as null) */
        json_object *v = *val && cli_json_valid(val, strlen(val), jerr, sizeof jerr)
                             ? json_tokener_parse(val)
                             : json_object_new_string(val);
        json_object_object_add(obj, key, v);
    }
    return 0;
}

static const char *jstr(json_object *o, const char *k, char *buf, size_t n)
{
    json_object *v;
    if (!json_object_object_get_ex(o, k, &v) || !v) return "-";
    if (json_object_is_type(v, json_type_string)) return json_object_get_string(v);
    if (json_object_is_type(v, json_type_double)) {
        snprintf(buf, n, "%g", json_object_get_double(v));
        return buf;
    }
    snprintf(
        buf, n, "%s",
        json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    return buf;
}

static json_object *results(json_object *j)
{
    json_object *r;
    if (json_object_is_type(j, json_type_array)) return j;
    if (json_object_object_get_ex(j, "results", &r)) return r;
    return NULL;
}

/* Endpoint NAME or numeric ID -> id (looks the name up in the list). -1 if unknown. */
static long long resolve_endpoint(struct mctx *m, const char *ref)
{
    char *end;
    long long id = strtoll(ref, &end, 10);
    if (*ref && !*end) return id;
    json_object *j = api(m, "GET", "/api/v0/endptjobs/", NULL);
    if (!j) return -1;
    json_object *r = results(j);
    long long found = -1;
    for (size_t i = 0; r && i < json_object_array_length(r); i++) {
        json_object *e = json_object_array_get_idx(r, i), *n, *v;
        if (json_object_object_get_ex(e, "endpoint_name", &n) &&
            strcmp(json_object_get_string(n), ref) == 0 && json_object_object_get_ex(e, "id", &v))
            found = json_object_get_int64(v);
    }
    json_object_put(j);
    if (found < 0) fprintf(stderr, "sgpu: no endpoint named '%s'\n", ref);
    return found;
}

/* PUT `key=value ...` (update) or DELETE on an object's path; prints the answer
 * (JSON with --json, else "updated|deleted <label>").  0, 1 (API error) or 2 (usage). */
static int update_or_delete(struct mctx *m, bool update, const char *path, int argc, char **argv,
                            const char *label)
{
    json_object *j;
    if (update) {
        json_object *body = json_object_new_object();
        if (parse_kv(body, argc, argv) != 0) {
            json_object_put(body);
            return 2;
        }
        j = api(m, "PUT", path, json_object_to_json_string(body));
        json_object_put(body);
    } else {
        j = api(m, "DELETE", path, NULL);
    }
    if (!j) return 1;
    if (m->json_out)
        print_json(j);
    else
        printf("%s %s\n", update ? "updated" : "deleted", label);
    json_object_put(j);
    return 0;
}

/* ---- options of the management commands ---- */

struct mgmt_opts {
    bool json, follow;
    const char *endpoint, *provider, *model_cmd, *launch;
    int limit;
};

#define AT(f) OPT_AT(struct mgmt_opts, f)
#define ROW_JSON                                                                                   \
    {                                                                                              \
        .name = "json", .type = OPT_FLAG, AT(json),                                                \
        .help = "the raw JSON answer instead of a table"                                           \
    }
#define ROW_ENDPOINT(text)                                                                         \
    {                                                                                              \
        .name = "endpoint", .type = OPT_STR, AT(endpoint), .meta = "NAME|ID", .help = text         \
    }
static const struct opt endpoint_rows[] = {ROW_JSON};
static const struct opt wg_rows[] = {
    ROW_JSON,
    ROW_ENDPOINT("the workergroup's endpoint (create: required)"),
    {.name = "provider",
     .type = OPT_STR,
     AT(provider),
     .meta = "local|command",
     .help = "provider (create)",
     .def_help = "local"},
    {.name = "model-cmd",
     .type = OPT_STR,
     AT(model_cmd),
     .meta = "CMD",
     .help = "sets launch.model_cmd (local provider; {model_port} is replaced)"},
    {.name = "launch",
     .type = OPT_STR,
     AT(launch),
     .meta = "JSON",
     .help = "the whole launch spec (docs/engine.md)"},
};
static const struct opt worker_rows[] = {ROW_JSON, ROW_ENDPOINT("only this endpoint's workers")};
static const struct opt events_rows[] = {
    ROW_JSON,
    ROW_ENDPOINT("only this endpoint's events"),
    {.name = "limit",
     .type = OPT_INT,
     AT(limit),
     .lo = 1,
     .hi = 1000000,
     .def = "100",
     .meta = "N",
     .help = "newest N events"},
    {.name = "follow",
     .short_name = 'f',
     .type = OPT_FLAG,
     AT(follow),
     .help = "keep polling every second"},
};
#undef ROW_ENDPOINT
#undef ROW_JSON
#undef AT

/* Unknown options stay positional: key=value parsing names them. */
#define SPEC(name, rows)                                                                           \
    {                                                                                              \
        name, rows, sizeof rows / sizeof rows[0], OPTS_KEEP_UNKNOWN                                \
    }
static const struct opts_spec endpoint_spec = SPEC("sgpu endpoint", endpoint_rows),
                              wg_spec = SPEC("sgpu workergroup", wg_rows),
                              worker_spec = SPEC("sgpu worker", worker_rows),
                              events_spec = SPEC("sgpu events", events_rows);
#undef SPEC

/* ---- endpoint and workergroup: one CRUD, a table row per resource kind ---- */

struct resource {
    const char *kind; /* "endpoint" */
    const char *path; /* collection path: "/api/v0/endptjobs/" */
    bool by_name;     /* update/delete take NAME|ID (a name is looked up in the list) */
    bool has_retry;   /* `retry ID` */
    const struct opts_spec *spec;
    void (*usage)(FILE *f);
    /* the create body from the command line (after `create`); 0 or 2 (usage, printed) */
    int (*create_body)(const struct mgmt_opts *o, int argc, char **argv, json_object *body);
    void (*print_created)(json_object *j, int argc, char **argv);
    void (*print_row_head)(void);
    void (*print_row)(json_object *e);
};

static void endpoint_usage(FILE *f)
{
    fputs("usage: sgpu endpoint create NAME [key=value ...]\n"
          "       sgpu endpoint list [--json]\n"
          "       sgpu endpoint update NAME|ID key=value ...\n"
          "       sgpu endpoint delete NAME|ID\n"
          "keys (docs/engine.md): min_load, min_cold_load, target_util, cold_mult, cold_workers\n"
          "(alias min_workers), max_workers, max_queue_time, target_queue_time,\n"
          "inactivity_timeout, sig_scheme=url|fields-v2|fields-v1.\n"
          "Example: sgpu endpoint create demo cold_workers=0 max_workers=2 target_util=0.9\n",
          f);
    opts_usage(&endpoint_spec, f);
}

static int endpoint_create_body(const struct mgmt_opts *o, int argc, char **argv, json_object *body)
{
    if (argc < 1) {
        endpoint_usage(stderr);
        return 2;
    }
    json_object_object_add(body, "endpoint_name", json_object_new_string(argv[0]));
    return parse_kv(body, argc - 1, argv + 1) ? 2 : 0;
}

static void endpoint_print_created(json_object *j, int argc, char **argv)
{
    json_object *id;
    if (json_object_object_get_ex(j, "result", &id))
        printf("created endpoint %s id=%s\n", argv[0], json_object_get_string(id));
}

static void endpoint_row_head(void)
{
    printf("%-5s %-20s %-9s %-6s %-6s %-6s %-10s %-41s %-8s %s\n", "ID", "NAME", "STATE", "COLD",
           "MAX", "UTIL", "SCHEME", "API_KEY", "WG", "LAST_ERROR");
}

static void endpoint_row(json_object *e)
{
    char b[10][600];
    /* WG: the state of the workergroup creating its workers (failing = the breaker is open: see
     * LAST_ERROR and `sgpu workergroup retry`) */
    const char *wgs = jstr(e, "workergroup_state", b[8], 600);
    const char *err = jstr(e, "last_error", b[9], 600);
    printf("%-5s %-20s %-9s %-6s %-6s %-6s %-10s %-41s %-8s %s\n", jstr(e, "id", b[0], 128),
           jstr(e, "endpoint_name", b[1], 128), jstr(e, "endpoint_state", b[2], 128),
           jstr(e, "cold_workers", b[3], 128), jstr(e, "max_workers", b[4], 128),
           jstr(e, "target_util", b[5], 128), jstr(e, "sig_scheme", b[6], 128),
           jstr(e, "api_key", b[7], 128), wgs, strcmp(wgs, "failing") == 0 && *err ? err : "-");
}

static void wg_usage(FILE *f)
{
    fputs("usage: sgpu workergroup create --endpoint NAME|ID [--provider local|command]\n"
          "                                [--model-cmd CMD] [--launch JSON] [key=value ...]\n"
          "       sgpu workergroup list [--json]\n"
          "       sgpu workergroup update ID key=value ...   (e.g. launch='{\"model_cmd\": ...}')\n"
          "       sgpu workergroup delete ID\n"
          "       sgpu workergroup retry ID   (a failing workergroup creates workers again)\n"
          "keys: test_workers, gpu_ram.  See docs/engine.md for the launch spec per provider.\n",
          f);
    opts_usage(&wg_spec, f);
}

static int wg_create_body(const struct mgmt_opts *o, int argc, char **argv, json_object *body)
{
    if (!o->endpoint) {
        fprintf(stderr, "sgpu workergroup create: --endpoint is required\n");
        return 2;
    }
    char *end;
    long long eid = strtoll(o->endpoint, &end, 10);
    if (*o->endpoint && !*end)
        json_object_object_add(body, "endpoint_id", json_object_new_int64(eid));
    else
        json_object_object_add(body, "endpoint_name", json_object_new_string(o->endpoint));
    json_object_object_add(body, "provider",
                           json_object_new_string(o->provider ? o->provider : "local"));
    json_object *l = o->launch ? json_tokener_parse(o->launch) : json_object_new_object();
    if (!l || !json_object_is_type(l, json_type_object)) {
        fprintf(stderr, "sgpu workergroup create: --launch must be a JSON object\n");
        json_object_put(l);
        return 2;
    }
    if (o->model_cmd) json_object_object_add(l, "model_cmd", json_object_new_string(o->model_cmd));
    json_object_object_add(body, "launch", l);
    return parse_kv(body, argc, argv) ? 2 : 0;
}

static void wg_print_created(json_object *j, int argc, char **argv)
{
    json_object *id;
    if (json_object_object_get_ex(j, "result", &id))
        printf("created workergroup id=%s\n", json_object_get_string(id));
}

static void wg_row_head(void)
{
    printf("%-5s %-9s %-9s %-8s %-5s %s\n", "ID", "ENDPOINT", "PROVIDER", "STATE", "FAILS",
           "LAUNCH / LAST_ERROR");
}

static void wg_row(json_object *e)
{
    char b[7][600];
    const char *ep = jstr(e, "endpoint_name", b[1], 512);
    if (strcmp(ep, "-") == 0) ep = jstr(e, "endpoint_id", b[1], 512);
    printf("%-5s %-9s %-9s %-8s %-5s %s\n", jstr(e, "id", b[0], 512), ep,
           jstr(e, "provider", b[2], 512), jstr(e, "state", b[4], 512),
           jstr(e, "failures", b[5], 512), jstr(e, "launch", b[3], 512));
    const char *err = jstr(e, "last_error", b[6], 600);
    if (*err && strcmp(err, "-") != 0) printf("      last error: %s\n", err);
}

static const struct resource endpoint_res = {
    "endpoint",
    "/api/v0/endptjobs/",
    true,
    false,
    &endpoint_spec,
    endpoint_usage,
    endpoint_create_body,
    endpoint_print_created,
    endpoint_row_head,
    endpoint_row,
};

static const struct resource wg_res = {
    "workergroup",  "/api/v0/workergroups/", false,       true,   &wg_spec, wg_usage,
    wg_create_body, wg_print_created,        wg_row_head, wg_row,
};

static int res_create(struct mctx *m, const struct resource *res, const struct mgmt_opts *o,
                      int argc, char **argv)
{
    json_object *body = json_object_new_object();
    int rc = res->create_body(o, argc, argv, body);
    json_object *j = NULL;
    if (rc == 0) {
        j = api(m, "POST", res->path, json_object_to_json_string(body));
        rc = j ? 0 : 1;
    }
    json_object_put(body);
    if (j && m->json_out)
        print_json(j);
    else if (j)
        res->print_created(j, argc, argv);
    json_object_put(j);
    return rc;
}

static int res_list(struct mctx *m, const struct resource *res)
{
    json_object *j = api(m, "GET", res->path, NULL);
    if (!j) return 1;
    json_object *r = results(j);
    if (m->json_out || !r) {
        print_json(r ? r : j);
    } else {
        res->print_row_head();
        for (size_t i = 0; i < json_object_array_length(r); i++)
            res->print_row(json_object_array_get_idx(r, i));
    }
    json_object_put(j);
    return 0;
}

/* The object path of `ref` ("<collection><id>/", a name resolved first where the kind has
 * names) and its label in messages.  0 or 1 (not found, printed). */
static int res_object(struct mctx *m, const struct resource *res, const char *ref, char *path,
                      size_t pn, char *label, size_t ln)
{
    if (res->by_name) {
        long long id = resolve_endpoint(m, ref);
        if (id < 0) return 1;
        snprintf(path, pn, "%s%lld/", res->path, id);
        snprintf(label, ln, "%s %lld", res->kind, id);
    } else {
        snprintf(path, pn, "%s%.60s/", res->path, ref);
        snprintf(label, ln, "%s %.128s", res->kind, ref);
    }
    return 0;
}

static int res_retry(struct mctx *m, const struct resource *res, const char *ref)
{
    char path[128];
    snprintf(path, sizeof path, "%s%.60s/retry/", res->path, ref);
    json_object *j = api(m, "POST", path, "{}");
    if (!j) return 1;
    if (m->json_out)
        print_json(j);
    else
        printf("%s %s: failures cleared, creating workers again\n", res->kind, ref);
    json_object_put(j);
    return 0;
}

/* The subcommands and how many positional arguments may follow them (update and delete take
 * REF first, retry exactly REF, and only where the kind has it). */
enum sub { SUB_CREATE, SUB_LIST, SUB_UPDATE, SUB_DELETE, SUB_RETRY };
static const struct {
    const char *name;
    enum sub sub;
    int min_args, max_args; /* max -1 = any */
} subs[] = {
    {"create", SUB_CREATE, 0, -1}, {"list", SUB_LIST, 0, -1},  {"update", SUB_UPDATE, 1, -1},
    {"delete", SUB_DELETE, 1, -1}, {"retry", SUB_RETRY, 1, 1},
};

/* The row of subs[] for `name` with nargs arguments after it, or -1 (a usage error). */
static int sub_find(const struct resource *res, const char *name, int nargs)
{
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        if (strcmp(name, subs[i].name) != 0) continue;
        if (subs[i].sub == SUB_RETRY && !res->has_retry) return -1;
        if (nargs < subs[i].min_args || (subs[i].max_args >= 0 && nargs > subs[i].max_args))
            return -1;
        return (int)i;
    }
    return -1;
}

/* sgpu endpoint|workergroup create|list|update|delete|retry ... */
static int cmd_resource(const struct resource *res, struct cli_common *c, int argc, char **argv)
{
    struct mgmt_opts o = {0};
    struct opts_result r;
    int rc = cli_parse(res->spec, &o, argc, argv, &r, res->usage);
    if (rc == 0 && r.nargs < 1) {
        res->usage(stderr);
        rc = 2;
    }
    if (rc) {
        opts_result_free(&r);
        return rc == 1 ? 0 : 2;
    }
    /* positional: SUB [REF|NAME] [key=value ...] */
    int nrest = r.nargs - 1;
    char **rest = r.args + 1;
    int si = sub_find(res, r.args[0], nrest);
    if (si < 0) {
        res->usage(stderr);
        opts_result_free(&r);
        return 2;
    }
    struct mctx m = {.json_out = o.json};
    if (mctx_init(&m, c) != 0) {
        opts_result_free(&r);
        return 1;
    }
    enum sub sub = subs[si].sub;
    if (sub == SUB_CREATE) {
        rc = res_create(&m, res, &o, nrest, rest);
    } else if (sub == SUB_LIST) {
        rc = res_list(&m, res);
    } else if (sub == SUB_RETRY) {
        rc = res_retry(&m, res, rest[0]);
    } else {
        char path[128], label[160];
        rc = res_object(&m, res, rest[0], path, sizeof path, label, sizeof label);
        if (rc == 0) rc = update_or_delete(&m, sub == SUB_UPDATE, path, nrest - 1, rest + 1, label);
    }
    mctx_free(&m);
    opts_result_free(&r);
    return rc;
}

int cmd_endpoint(struct cli_common *c, int argc, char **argv)
{
    return cmd_resource(&endpoint_res, c, argc, argv);
}

int cmd_workergroup(struct cli_common *c, int argc, char **argv)
{
    return cmd_resource(&wg_res, c, argc, argv);
}

/* ---- worker list ---- */

static void worker_usage(FILE *f)
{
    fputs("usage: sgpu worker list [--endpoint NAME] [--json]\n", f);
    opts_usage(&worker_spec, f);
}

int cmd_worker(struct cli_common *c, int argc, char **argv)
{
    struct mgmt_opts o = {0};
    struct opts_result res;
    int prc = cli_parse(&worker_spec, &o, argc, argv, &res, worker_usage);
    bool list = prc == 0 && res.nargs >= 1 && strcmp(res.args[0], "list") == 0;
    opts_result_free(&res);
    if (prc) return prc == 1 ? 0 : 2;
    if (!list) {
        worker_usage(stderr);
        return 2;
    }
    struct mctx m = {.json_out = o.json};
    const char *endpoint = o.endpoint;
    if (mctx_init(&m, c) != 0) return 1;
    char path[512];
    if (endpoint) {
        char *q = evhttp_encode_uri(endpoint);
        snprintf(path, sizeof path, "/api/v0/workers/?endpoint=%s", q ? q : endpoint);
        free(q);
    } else {
        snprintf(path, sizeof path, "/api/v0/workers/");
    }
    json_object *j = api(&m, "GET", path, NULL);
    int rc = 1;
    if (j) {
        json_object *r = results(j);
        if (m.json_out || !r) {
            print_json(r ? r : j);
        } else {
            printf("%-5s %-4s %-13s %-28s %-8s %-9s %-7s %s\n", "ID", "EP", "STATUS", "URL", "LOAD",
                   "PERF", "WORKING", "ERROR");
            for (size_t i = 0; i < json_object_array_length(r); i++) {
                json_object *e = json_object_array_get_idx(r, i);
                char b[8][256];
                printf("%-5s %-4s %-13s %-28s %-8s %-9s %-7s %s\n", jstr(e, "id", b[0], 256),
                       jstr(e, "endpoint_id", b[1], 256), jstr(e, "status", b[2], 256),
                       jstr(e, "url", b[3], 256), jstr(e, "cur_load", b[4], 256),
                       jstr(e, "measured_perf", b[5], 256), jstr(e, "reqs_working", b[6], 256),
                       jstr(e, "error_msg", b[7], 256));
            }
        }
        rc = 0;
    }
    json_object_put(j);
    mctx_free(&m);
    return rc;
}

/* ---- events ---- */

static void events_usage(FILE *f)
{
    fputs("usage: sgpu events [--endpoint NAME] [--limit N] [--json] [--follow|-f]\n"
          "The engine's decision log (newest last).  --follow polls every second.\n",
          f);
    opts_usage(&events_spec, f);
}

int cmd_events(struct cli_common *c, int argc, char **argv)
{
    struct mgmt_opts o = {0};
    struct opts_result res;
    int prc = cli_parse(&events_spec, &o, argc, argv, &res, events_usage);
    if (prc == 0 && res.nargs > 0) {
        fprintf(stderr, "sgpu events: unexpected argument '%s'\n", res.args[0]);
        prc = 2;
    }
    opts_result_free(&res);
    if (prc) return prc == 1 ? 0 : 2;
    struct mctx m = {.json_out = o.json};
    bool follow = o.follow;
    const char *endpoint = o.endpoint;
    if (mctx_init(&m, c) != 0) return 1;
    int rc = 1;
    long long last_id = -1;
    for (;;) {
        char path[512];
        size_t pl = (size_t)snprintf(path, sizeof path, "/api/v0/events/?limit=%d", o.limit);
        if (endpoint) {
            char *q = evhttp_encode_uri(endpoint);
            snprintf(path + pl, sizeof path - pl, "&endpoint=%s", q ? q : endpoint);
            free(q);
        }
        json_object *j = api(&m, "GET", path, NULL);
        if (!j) break;
        rc = 0;
        json_object *r = results(j);
        if (m.json_out && !follow) {
            print_json(r ? r : j);
        } else {
            for (size_t i = 0; r && i < json_object_array_length(r); i++) {
                json_object *e = json_object_array_get_idx(r, i), *v;
                long long id =
                    json_object_object_get_ex(e, "id", &v) ? json_object_get_int64(v) : -1;
                if (id >= 0 && id <= last_id) continue;
                if (id > last_id) last_id = id;
                if (m.json_out) {
                    puts(json_object_to_json_string_ext(e, JSON_C_TO_STRING_PLAIN |
                                                               JSON_C_TO_STRING_NOSLASHESCAPE));
                    continue;
                }
                char b[6][1024], ts[64] = "-";
                if (json_object_object_get_ex(e, "ts", &v)) {
                    double t = json_object_get_double(v);
                    time_t tt = (time_t)t;
                    struct tm tm;
                    gmtime_r(&tt, &tm);
                    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
                }
                printf("%s %-10s %-6s %-16s %s %s\n", ts, jstr(e, "endpoint", b[0], 1024),
                       jstr(e, "worker_id", b[1], 1024), jstr(e, "kind", b[2], 1024),
                       jstr(e, "reason", b[3], 1024), jstr(e, "inputs", b[4], 1024));
            }
        }
        fflush(stdout);
        json_object_put(j);
        if (!follow) break;
        struct timeval one = clock_tv(1); /* --follow: poll once a second */
        event_base_loopexit(m.base, &one);
        event_base_dispatch(m.base);
    }
    mctx_free(&m);
    return rc;
}
