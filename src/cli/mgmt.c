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
#include "httputil.h"

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

static bool want_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return true;
    return false;
}

/* Removes "--json" from argv; returns whether it was there. */
static bool take_flag(int *argc, char **argv, const char *flag)
{
    bool found = false;
    int o = 0;
    for (int i = 0; i < *argc; i++) {
        if (strcmp(argv[i], flag) == 0)
            found = true;
        else
            argv[o++] = argv[i];
    }
    *argc = o;
    argv[o] = NULL;
    return found;
}

/* Removes "--opt VALUE" from argv; returns VALUE or NULL. */
static const char *take_opt(int *argc, char **argv, const char *opt)
{
    const char *val = NULL;
    int o = 0;
    size_t l = strlen(opt);
    for (int i = 0; i < *argc; i++) {
        if (strcmp(argv[i], opt) == 0 && i + 1 < *argc) {
            val = argv[++i];
        } else if (strncmp(argv[i], opt, l) == 0 && argv[i][l] == '=') {
            val = argv[i] + l + 1;
        } else {
            argv[o++] = argv[i];
        }
    }
    *argc = o;
    argv[o] = NULL;
    return val;
}

/* ---- endpoint ---- */

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
}

int cmd_endpoint(struct cli_common *c, int argc, char **argv)
{
    if (argc < 2 || want_help(argc, argv)) {
        endpoint_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    struct mctx m = {0};
    m.json_out = take_flag(&argc, argv, "--json");
    if (mctx_init(&m, c) != 0) return 1;
    const char *sub = argv[1];
    int rc = 1;
    json_object *j = NULL;
    if (strcmp(sub, "create") == 0) {
        if (argc < 3) {
            endpoint_usage(stderr);
            rc = 2;
            goto out;
        }
        json_object *body = json_object_new_object();
        json_object_object_add(body, "endpoint_name", json_object_new_string(argv[2]));
        if (parse_kv(body, argc - 3, argv + 3) != 0) {
            json_object_put(body);
            rc = 2;
            goto out;
        }
        j = api(&m, "POST", "/api/v0/endptjobs/", json_object_to_json_string(body));
        json_object_put(body);
        if (j) {
            json_object *id;
            if (m.json_out)
                print_json(j);
            else if (json_object_object_get_ex(j, "result", &id))
                printf("created endpoint %s id=%s\n", argv[2], json_object_get_string(id));
            rc = 0;
        }
    } else if (strcmp(sub, "list") == 0) {
        j = api(&m, "GET", "/api/v0/endptjobs/", NULL);
        if (j) {
            json_object *r = results(j);
            if (m.json_out || !r) {
                print_json(r ? r : j);
            } else {
                printf("%-5s %-20s %-9s %-6s %-6s %-6s %-10s %-41s %-8s %s\n", "ID", "NAME",
                       "STATE", "COLD", "MAX", "UTIL", "SCHEME", "API_KEY", "WG", "LAST_ERROR");
                for (size_t i = 0; i < json_object_array_length(r); i++) {
                    json_object *e = json_object_array_get_idx(r, i);
                    char b[10][600];
                    /* WG: the state of the workergroup creating its workers (failing = the
                     * breaker is open: see LAST_ERROR and `sgpu workergroup retry`) */
                    const char *wgs = jstr(e, "workergroup_state", b[8], 600);
                    const char *err = jstr(e, "last_error", b[9], 600);
                    printf("%-5s %-20s %-9s %-6s %-6s %-6s %-10s %-41s %-8s %s\n",
                           jstr(e, "id", b[0], 128), jstr(e, "endpoint_name", b[1], 128),
                           jstr(e, "endpoint_state", b[2], 128), jstr(e, "cold_workers", b[3], 128),
                           jstr(e, "max_workers", b[4], 128), jstr(e, "target_util", b[5], 128),
                           jstr(e, "sig_scheme", b[6], 128), jstr(e, "api_key", b[7], 128), wgs,
                           strcmp(wgs, "failing") == 0 && *err ? err : "-");
                }
            }
            rc = 0;
        }
    } else if (strcmp(sub, "update") == 0 || strcmp(sub, "delete") == 0) {
        if (argc < 3) {
            endpoint_usage(stderr);
            rc = 2;
            goto out;
        }
        long long id = resolve_endpoint(&m, argv[2]);
        if (id < 0) goto out;
        char path[128];
        snprintf(path, sizeof path, "/api/v0/endptjobs/%lld/", id);
        char label[64];
        snprintf(label, sizeof label, "endpoint %lld", id);
        rc = update_or_delete(&m, sub[0] == 'u', path, argc - 3, argv + 3, label);
    } else {
        endpoint_usage(stderr);
        rc = 2;
    }
out:
    json_object_put(j);
    mctx_free(&m);
    return rc;
}

/* ---- workergroup ---- */

static void wg_usage(FILE *f)
{
    fputs("usage: sgpu workergroup create --endpoint NAME|ID [--provider local|command]\n"
          "                                [--model-cmd CMD] [--launch JSON] [key=value ...]\n"
          "       sgpu workergroup list [--json]\n"
          "       sgpu workergroup update ID key=value ...   (e.g. launch='{\"model_cmd\": ...}')\n"
          "       sgpu workergroup delete ID\n"
          "       sgpu workergroup retry ID   (a failing workergroup creates workers again)\n"
          "--model-cmd sets launch.model_cmd (local provider; {model_port} is replaced).\n"
          "keys: test_workers, gpu_ram.  See docs/engine.md for the launch spec per provider.\n",
          f);
}

int cmd_workergroup(struct cli_common *c, int argc, char **argv)
{
    if (argc < 2 || want_help(argc, argv)) {
        wg_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    struct mctx m = {0};
    m.json_out = take_flag(&argc, argv, "--json");
    const char *endpoint = take_opt(&argc, argv, "--endpoint");
    const char *provider = take_opt(&argc, argv, "--provider");
    const char *model_cmd = take_opt(&argc, argv, "--model-cmd");
    const char *launch = take_opt(&argc, argv, "--launch");
    if (mctx_init(&m, c) != 0) return 1;
    const char *sub = argv[1];
    int rc = 1;
    json_object *j = NULL;
    if (strcmp(sub, "create") == 0) {
        if (!endpoint) {
            fprintf(stderr, "sgpu workergroup create: --endpoint is required\n");
            rc = 2;
            goto out;
        }
        json_object *body = json_object_new_object();
        char *end;
        long long eid = strtoll(endpoint, &end, 10);
        if (*endpoint && !*end)
            json_object_object_add(body, "endpoint_id", json_object_new_int64(eid));
        else
            json_object_object_add(body, "endpoint_name", json_object_new_string(endpoint));
        json_object_object_add(body, "provider",
                               json_object_new_string(provider ? provider : "local"));
        json_object *l = launch ? json_tokener_parse(launch) : json_object_new_object();
        if (!l || !json_object_is_type(l, json_type_object)) {
            fprintf(stderr, "sgpu workergroup create: --launch must be a JSON object\n");
            json_object_put(l);
            json_object_put(body);
            rc = 2;
            goto out;
        }
        if (model_cmd) json_object_object_add(l, "model_cmd", json_object_new_string(model_cmd));
        json_object_object_add(body, "launch", l);
        if (parse_kv(body, argc - 2, argv + 2) != 0) {
            json_object_put(body);
            rc = 2;
            goto out;
        }
        j = api(&m, "POST", "/api/v0/workergroups/", json_object_to_json_string(body));
        json_object_put(body);
        if (j) {
            json_object *id;
            if (m.json_out)
                print_json(j);
            else if (json_object_object_get_ex(j, "result", &id))
                printf("created workergroup id=%s\n", json_object_get_string(id));
            rc = 0;
        }
    } else if (strcmp(sub, "list") == 0) {
        j = api(&m, "GET", "/api/v0/workergroups/", NULL);
        if (j) {
            json_object *r = results(j);
            if (m.json_out || !r) {
                print_json(r ? r : j);
            } else {
                printf("%-5s %-9s %-9s %-8s %-5s %s\n", "ID", "ENDPOINT", "PROVIDER", "STATE",
                       "FAILS", "LAUNCH / LAST_ERROR");
                for (size_t i = 0; i < json_object_array_length(r); i++) {
                    json_object *e = json_object_array_get_idx(r, i);
                    char b[7][600];
                    const char *ep = jstr(e, "endpoint_name", b[1], 512);
                    if (strcmp(ep, "-") == 0) ep = jstr(e, "endpoint_id", b[1], 512);
                    printf("%-5s %-9s %-9s %-8s %-5s %s\n", jstr(e, "id", b[0], 512), ep,
                           jstr(e, "provider", b[2], 512), jstr(e, "state", b[4], 512),
                           jstr(e, "failures", b[5], 512), jstr(e, "launch", b[3], 512));
                    const char *err = jstr(e, "last_error", b[6], 600);
                    if (*err && strcmp(err, "-") != 0) printf("      last error: %s\n", err);
                }
            }
            rc = 0;
        }
    } else if (strcmp(sub, "update") == 0 || strcmp(sub, "delete") == 0) {
        if (argc < 3) {
            wg_usage(stderr);
            rc = 2;
            goto out;
        }
        char path[128];
        snprintf(path, sizeof path, "/api/v0/workergroups/%s/", argv[2]);
        char label[160];
        snprintf(label, sizeof label, "workergroup %.128s", argv[2]);
        rc = update_or_delete(&m, sub[0] == 'u', path, argc - 3, argv + 3, label);
    } else if (strcmp(sub, "retry") == 0) {
        if (argc != 3) {
            wg_usage(stderr);
            rc = 2;
            goto out;
        }
        char path[128];
        snprintf(path, sizeof path, "/api/v0/workergroups/%.60s/retry/", argv[2]);
        j = api(&m, "POST", path, "{}");
        if (j) {
            if (m.json_out)
                print_json(j);
            else
                printf("workergroup %s: failures cleared, creating workers again\n", argv[2]);
            rc = 0;
        }
    } else {
        wg_usage(stderr);
        rc = 2;
    }
out:
    json_object_put(j);
    mctx_free(&m);
    return rc;
}

/* ---- worker list ---- */

int cmd_worker(struct cli_common *c, int argc, char **argv)
{
    if (argc < 2 || want_help(argc, argv) || strcmp(argv[1], "list") != 0) {
        fputs("usage: sgpu worker list [--endpoint NAME] [--json]\n", argc < 2 ? stderr : stdout);
        return want_help(argc, argv) ? 0 : 2;
    }
    struct mctx m = {0};
    m.json_out = take_flag(&argc, argv, "--json");
    const char *endpoint = take_opt(&argc, argv, "--endpoint");
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

int cmd_events(struct cli_common *c, int argc, char **argv)
{
    if (want_help(argc, argv)) {
        fputs("usage: sgpu events [--endpoint NAME] [--limit N] [--json] [--follow|-f]\n"
              "The engine's decision log (newest last).  --follow polls every second.\n",
              stdout);
        return 0;
    }
    struct mctx m = {0};
    m.json_out = take_flag(&argc, argv, "--json");
    bool follow = take_flag(&argc, argv, "--follow") | take_flag(&argc, argv, "-f");
    const char *endpoint = take_opt(&argc, argv, "--endpoint");
    const char *limit = take_opt(&argc, argv, "--limit");
    if (argc > 1) {
        fprintf(stderr, "sgpu events: unexpected argument '%s'\n", argv[1]);
        return 2;
    }
    if (mctx_init(&m, c) != 0) return 1;
    int rc = 1;
    long long last_id = -1;
    for (;;) {
        char path[512];
        size_t o =
            (size_t)snprintf(path, sizeof path, "/api/v0/events/?limit=%s", limit ? limit : "100");
        if (endpoint) {
            char *q = evhttp_encode_uri(endpoint);
            snprintf(path + o, sizeof path - o, "&endpoint=%s", q ? q : endpoint);
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
        struct timeval one = {1, 0}; /* --follow: poll once a second */
        event_base_loopexit(m.base, &one);
        event_base_dispatch(m.base);
    }
    mctx_free(&m);
    return rc;
}
