/* Route table: backend presets, the optional JSON config file (SGPU_CONFIG),
 * and workload rules (the per-request cost reported to the engine). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers.h"
#include "log.h"
#include "workload.h"
#include "xalloc.h"

/* 250 words of filler text for language-model benchmark prompts. */
static void filler_words(struct sbuf *b, int n)
{
    static const char *const words[] = {
        "the",   "model",   "server", "answers", "quickly", "when", "every", "token",
        "flows", "through", "a",      "small",   "worker",  "that", "never", "blocks",
        "its",   "loop",    "while",  "streams", "arrive",  "from", "GPU",   "memory"};
    for (int i = 0; i < n; i++) {
        if (i) sbuf_putc(b, ' ');
        sbuf_puts(b, words[(i * 7 + i / 3) % (int)(sizeof words / sizeof words[0])]);
    }
}

static char *bench_tgi(int words, int max_new)
{
    struct sbuf b = SBUF_INIT;
    sbuf_puts(&b, "{\"inputs\": \"");
    filler_words(&b, words);
    sbuf_printf(&b, "\", \"parameters\": {\"max_new_tokens\": %d}}", max_new);
    return sbuf_steal(&b, NULL);
}

static char *bench_openai(int words, int max_new)
{
    const char *model = getenv("MODEL_NAME");
    if (!model) model = getenv("VLLM_MODEL");
    if (!model) model = "default";
    struct sbuf b = SBUF_INIT;
    sbuf_puts(&b, "{\"model\": ");
    pyj_write_string(&b, model, strlen(model));
    sbuf_puts(&b, ", \"prompt\": \"");
    filler_words(&b, words);
    sbuf_printf(&b, "\", \"max_tokens\": %d, \"temperature\": 0.7}", max_new);
    return sbuf_steal(&b, NULL);
}

char *handlers_bench_payload(const struct handler *h, int words, int max_new)
{
    if (h->bench_preset == BENCH_TGI) return bench_tgi(words, max_new);
    if (h->bench_preset == BENCH_OPENAI) return bench_openai(words, max_new);
    return NULL;
}

static struct handler *add(struct worker *w, const char *route, const char *upstream,
                           enum wl_kind wl, double wl_default, bool parallel,
                           enum payload_check check)
{
    w->handlers = xreallocarray(w->handlers, w->nhandlers + 1, sizeof *w->handlers);
    struct handler *h = &w->handlers[w->nhandlers++];
    memset(h, 0, sizeof *h);
    snprintf(h->route, sizeof h->route, "%s", route);
    snprintf(h->upstream, sizeof h->upstream, "%s", upstream ? upstream : "");
    h->wl = wl;
    h->wl_default = wl_default;
    h->parallel = parallel;
    h->max_queue_time = w->cfg.max_queue_time;
    h->check = check;
    h->stream = -1;
    return h;
}

/* ---- SGPU_CONFIG: {"handlers": [{...}, ...]} ---- */

/* One error line naming the member: "SGPU_CONFIG handlers[i].<member>: <what>"; returns -1. */
static int config_error(size_t i, const char *member, const char *what)
{
    fprintf(stderr, "sgpu-worker: SGPU_CONFIG handlers[%zu].%s: %s\n", i, member, what);
    return -1;
}

static int read_file(const char *path, struct sbuf *b)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    char tmp[8192];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        sbuf_append(b, tmp, n);
    fclose(f);
    return 0;
}

/* The named workload rules and the default workload each sets (-1 = leave it). */
static const struct {
    const char *name;
    enum wl_kind wl;
    double wdef;
} wl_names[] = {
    {"tgi", WL_TGI, 256},
    {"openai", WL_OPENAI, -1},
    {"comfyui", WL_COMFY, -1},
};

/* "workload": "tgi" | "openai" | "comfyui" | {"field", "constant", "default"}. */
static int parse_workload(const struct pyj_value *wv, size_t i, enum wl_kind *wl, double *wdef,
                          char field[128])
{
    if (!wv) return 0;
    if (wv->type == PYJ_STRING) {
        for (size_t k = 0; k < sizeof wl_names / sizeof wl_names[0]; k++) {
            if (strcmp(wv->u.str.s, wl_names[k].name) != 0) continue;
            *wl = wl_names[k].wl;
            if (wl_names[k].wdef >= 0) *wdef = wl_names[k].wdef;
            return 0;
        }
        return config_error(i, "workload", "unknown rule");
    }
    if (wv->type != PYJ_OBJECT) return config_error(i, "workload", "expected a string or object");
    const struct pyj_value *fv = pyj_get(wv, "field");
    const struct pyj_value *cv = pyj_get(wv, "constant");
    const struct pyj_value *dv = pyj_get(wv, "default");
    double x;
    if (fv) {
        if (fv->type != PYJ_STRING || fv->u.str.len == 0 || fv->u.str.len >= 128)
            return config_error(i, "workload.field", "expected a dotted path");
        *wl = WL_FIELD;
        snprintf(field, 128, "%s", fv->u.str.s);
    }
    if (cv) {
        if (!pyj_number(cv, &x) || !(x >= 0) || !isfinite(x))
            return config_error(i, "workload.constant", "expected a number >= 0");
        *wdef = x;
    }
    if (dv) {
        if (!pyj_number(dv, &x) || !(x >= 0) || !isfinite(x))
            return config_error(i, "workload.default", "expected a number >= 0");
        *wdef = x;
    }
    return 0;
}

/* "payload": "object" | "tgi" | "any". */
static int parse_check(const struct pyj_value *chk, size_t i, enum payload_check *check)
{
    static const char *const names[] = {[PC_OBJECT] = "object", [PC_TGI] = "tgi", [PC_ANY] = "any"};
    if (!chk) return 0;
    for (size_t k = 0; chk->type == PYJ_STRING && k < sizeof names / sizeof names[0]; k++) {
        if (strcmp(chk->u.str.s, names[k]) == 0) {
            *check = (enum payload_check)k;
            return 0;
        }
    }
    return config_error(i, "payload", "expected object, tgi or any");
}

/* The members set on an added handler: max_queue_time, unwrap_input, stream, benchmark. */
static int parse_options(struct handler *h, const struct pyj_value *o, size_t i)
{
    const struct pyj_value *mq = pyj_get(o, "max_queue_time");
    if (mq) {
        double x;
        if (mq->type == PYJ_NULL)
            h->max_queue_time = -1;
        else if (pyj_number(mq, &x) && x >= 0 && isfinite(x))
            h->max_queue_time = x;
        else
            return config_error(i, "max_queue_time", "expected a number >= 0 or null");
    }
    const struct pyj_value *uv = pyj_get(o, "unwrap_input");
    if (uv) {
        if (uv->type != PYJ_TRUE && uv->type != PYJ_FALSE)
            return config_error(i, "unwrap_input", "expected a boolean");
        h->unwrap_input = uv->type == PYJ_TRUE;
    }
    const struct pyj_value *sv = pyj_get(o, "stream");
    if (sv) {
        if (sv->type == PYJ_TRUE)
            h->stream = 1;
        else if (sv->type == PYJ_FALSE)
            h->stream = 0;
        else if (sv->type == PYJ_STRING && strcmp(sv->u.str.s, "auto") == 0)
            h->stream = -1;
        else
            return config_error(i, "stream", "expected true, false or \"auto\"");
    }
    const struct pyj_value *bp = pyj_get(o, "benchmark");
    if (bp && bp->type != PYJ_NULL) {
        struct sbuf t = SBUF_INIT;
        struct pyj_dump_opts dopt = {.indent = -1};
        pyj_dump(bp, &dopt, &t);
        h->bench_payload = sbuf_steal(&t, NULL);
    }
    return 0;
}

/* handlers[i]: route, upstream, workload, parallel, payload check, then the options. */
static int parse_handler(struct worker *w, const struct pyj_value *o, size_t i)
{
    const struct pyj_value *route = pyj_get(o, "route");
    if (!route || route->type != PYJ_STRING || route->u.str.len == 0 || route->u.str.len >= 255 ||
        (route->u.str.s[0] != '/' && strcmp(route->u.str.s, "*")))
        return config_error(i, "route", "expected \"/path\" or \"*\"");
    const struct pyj_value *up = pyj_get(o, "upstream");
    if (up && (up->type != PYJ_STRING || up->u.str.len >= 255 || up->u.str.s[0] != '/'))
        return config_error(i, "upstream", "expected \"/path\"");
    enum wl_kind wl = WL_CONST;
    double wdef = w->cfg.wl_constant;
    char field[128] = "";
    if (parse_workload(pyj_get(o, "workload"), i, &wl, &wdef, field) != 0) return -1;
    bool parallel = w->cfg.parallel;
    const struct pyj_value *pv = pyj_get(o, "parallel");
    if (pv) {
        if (pv->type != PYJ_TRUE && pv->type != PYJ_FALSE)
            return config_error(i, "parallel", "expected a boolean");
        parallel = pv->type == PYJ_TRUE;
    }
    enum payload_check check = PC_OBJECT;
    if (parse_check(pyj_get(o, "payload"), i, &check) != 0) return -1;
    struct handler *h = add(w, route->u.str.s, up ? up->u.str.s : NULL, wl, wdef, parallel, check);
    if (wl == WL_FIELD) snprintf(h->wl_field, sizeof h->wl_field, "%s", field);
    return parse_options(h, o, i);
}

static int load_config_file(struct worker *w, const char *path)
{
    struct sbuf b = SBUF_INIT;
    if (read_file(path, &b) != 0) {
        fprintf(stderr, "sgpu-worker: SGPU_CONFIG: cannot open %s\n", path);
        return -1;
    }
    struct pyj_value *doc = NULL;
    char err[160];
    int rc = -1;
    if (pyj_parse(b.data ? b.data : "", b.len, &doc, err, sizeof err) != 0) {
        fprintf(stderr, "sgpu-worker: SGPU_CONFIG %s: invalid JSON: %s\n", path, err);
        goto out;
    }
    const struct pyj_value *hs = pyj_get(doc, "handlers");
    if (!hs || hs->type != PYJ_ARRAY || hs->u.arr.len == 0) {
        fprintf(stderr, "sgpu-worker: SGPU_CONFIG %s: \"handlers\" must be a non-empty array\n",
                path);
        goto out;
    }
    for (size_t i = 0; i < hs->u.arr.len; i++)
        if (parse_handler(w, hs->u.arr.items[i], i) != 0) goto out;
    rc = 0;
out:
    pyj_free(doc);
    sbuf_free(&b);
    return rc;
}

static void preset_tgi(struct worker *w)
{
    struct handler *h = add(w, "/generate", NULL, WL_TGI, 256, true, PC_TGI);
    h->bench_payload = bench_tgi(BENCH_WORDS, BENCH_TGI_NEW);
    h->bench_preset = BENCH_TGI;
    add(w, "/generate_stream", NULL, WL_TGI, 256, true, PC_TGI);
}

static void preset_openai(struct worker *w)
{
    struct handler *h = add(w, "/v1/completions", NULL, WL_OPENAI, 0, true, PC_OBJECT);
    h->bench_payload = bench_openai(BENCH_WORDS, BENCH_OPENAI_NEW);
    h->bench_preset = BENCH_OPENAI;
    h->unwrap_input = true;
    add(w, "/v1/chat/completions", NULL, WL_OPENAI, 0, true, PC_OBJECT)->unwrap_input = true;
}

static void preset_comfyui(struct worker *w)
{
    struct handler *h = add(w, "/generate/sync", NULL, WL_COMFY, 0, false, PC_OBJECT);
    h->bench_payload = xstrdup("{\"input\": {\"width\": 512, \"height\": 512, \"steps\": 20}}");
}

/* Any other backend: "*" forwards every POST path (workload: --workload-field, --workload). */
static void preset_generic(struct worker *w)
{
    const struct wconfig *c = &w->cfg;
    struct handler *h = add(w, "*", NULL, c->wl_field[0] ? WL_FIELD : WL_CONST, c->wl_constant,
                            c->parallel, PC_OBJECT);
    snprintf(h->wl_field, sizeof h->wl_field, "%s", c->wl_field);
}

/* The backends with preset routes (without a config file). */
static const struct {
    const char *backend;
    void (*add)(struct worker *w);
} presets[] = {
    {"tgi", preset_tgi},
    {"openai", preset_openai},
    {"comfyui", preset_comfyui},
};

int handlers_init(struct worker *w)
{
    struct wconfig *c = &w->cfg;
    if (c->config_file[0]) {
        if (load_config_file(w, c->config_file) != 0) return -1;
    } else {
        size_t n = sizeof presets / sizeof presets[0], k = 0;
        while (k < n && strcmp(c->backend, presets[k].backend) != 0)
            k++;
        if (k < n)
            presets[k].add(w);
        else
            preset_generic(w);
    }
    for (size_t i = 0; i < w->nhandlers; i++) {
        struct handler *h = &w->handlers[i];
        TAILQ_INIT(&h->queue);
        if (strcmp(h->route, "*") == 0) w->generic = h;
        if (!w->bench_handler && h->bench_payload) w->bench_handler = h;
    }
    if (w->generic && c->bench_payload && !w->bench_handler) {
        w->generic->bench_payload = xstrdup(c->bench_payload);
        w->bench_handler = w->generic;
    } else if (c->bench_payload && w->bench_handler && !c->config_file[0]) {
        /* SGPU_BENCHMARK_PAYLOAD replaces a preset's payload (sent as given, not sized) */
        struct handler *h = w->bench_handler;
        free(h->bench_payload);
        h->bench_payload = xstrdup(c->bench_payload);
        h->bench_preset = BENCH_CUSTOM;
    }
    return 0;
}

void handlers_free(struct worker *w)
{
    for (size_t i = 0; i < w->nhandlers; i++)
        free(w->handlers[i].bench_payload);
    free(w->handlers);
    w->handlers = NULL;
    w->nhandlers = 0;
}

struct handler *handlers_find(struct worker *w, const char *path, bool *known_path)
{
    for (size_t i = 0; i < w->nhandlers; i++) {
        if (strcmp(w->handlers[i].route, path) == 0) {
            *known_path = true;
            return &w->handlers[i];
        }
    }
    *known_path = w->generic != NULL;
    return w->generic;
}

/* payload value at a dotted path ("parameters.max_new_tokens"). */
static const struct pyj_value *get_path(const struct pyj_value *v, const char *path)
{
    char seg[128];
    while (v && *path) {
        size_t l = strcspn(path, ".");
        if (l >= sizeof seg) return NULL;
        memcpy(seg, path, l);
        seg[l] = '\0';
        if (v->type == PYJ_ARRAY) {
            char *end;
            long idx = strtol(seg, &end, 10);
            if (*end || idx < 0 || (size_t)idx >= v->u.arr.len) return NULL;
            v = v->u.arr.items[idx];
        } else {
            v = pyj_get(v, seg);
        }
        path += l;
        if (*path == '.') path++;
    }
    return v;
}

double handler_workload(const struct handler *h, const struct pyj_value *p)
{
    double x = h->wl_default;
    switch (h->wl) {
    case WL_CONST:
        break;
    case WL_FIELD: {
        const struct pyj_value *fv = get_path(p, h->wl_field);
        double z;
        if (fv && (fv->type == PYJ_INT || fv->type == PYJ_FLOAT) && pyj_number(fv, &z) &&
            isfinite(z) && z >= 0)
            x = z;
        break;
    }
    case WL_TGI:
        x = workload_tgi(p);
        break;
    case WL_OPENAI:
        x = workload_openai(p);
        break;
    case WL_COMFY:
        x = workload_comfy(p);
        break;
    }
    if (!isfinite(x) || x < 0) x = 100.0;
    return x;
}
