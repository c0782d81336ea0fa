/* Provider dispatch: which implementation runs a workergroup's instances. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../engine.h"
#include "log.h"

int provider_parse_kind(const char *s, enum prov_kind *out)
{
    if (strcmp(s, "local") == 0)
        *out = PROV_LOCAL;
    else if (strcmp(s, "command") == 0)
        *out = PROV_COMMAND;
    else
        return -1;
    return 0;
}

const char *provider_kind_name(enum prov_kind k)
{
    return k == PROV_LOCAL ? "local" : "command";
}

int provider_validate_env(struct json_object *env, char *err, size_t errlen)
{
    if (!json_object_is_type(env, json_type_object)) {
        snprintf(err, errlen, "launch.env must be an object of strings");
        return -1;
    }
    json_object_object_foreach(env, ek, ev)
    {
        if (!json_object_is_type(ev, json_type_string) || !*ek || strchr(ek, '=')) {
            snprintf(err, errlen, "launch.env must map names (no '=') to strings");
            return -1;
        }
    }
    return 0;
}

int provider_validate(enum prov_kind k, struct json_object *launch, char *err, size_t errlen)
{
    if (!json_object_is_type(launch, json_type_object)) {
        snprintf(err, errlen, "launch must be an object");
        return -1;
    }
    struct json_object *tl;
    if (json_object_object_get_ex(launch, "tokenless_reports", &tl) && tl &&
        (!json_object_is_type(tl, json_type_string) ||
         (strcmp(json_object_get_string(tl), "off") != 0 &&
          strcmp(json_object_get_string(tl), "url_secret") != 0))) {
        snprintf(err, errlen, "launch.tokenless_reports must be \"off\" or \"url_secret\"");
        return -1;
    }
    return k == PROV_LOCAL ? local_validate(launch, err, errlen)
                           : command_validate(launch, err, errlen);
}

bool provider_can_park(const struct workergroup *g)
{
    return g->kind == PROV_LOCAL ? true : command_can_park(g);
}

/* the detail of the failing operation (one loop thread: one operation at a time) */
static char op_err[300];

int provider_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(op_err, sizeof op_err, fmt, ap);
    va_end(ap);
    return -1;
}

int provider_op(struct engine *e, struct workergroup *g, struct worker *w, enum prov_op op)
{
    int64_t id = w->id;
    op_err[0] = '\0';
    int rc = g->kind == PROV_LOCAL ? local_op(e, g, w, op) : command_op(e, g, w, op);
    if (rc != 0) {
        char msg[360];
        snprintf(msg, sizeof msg, "could not start the operation: %s",
                 op_err[0] ? op_err : "no detail");
        log_warn("provider_op_failed", "worker=%lld op=%s msg=\"%s\"", (long long)id,
                 lifecycle_op_name(op), op_err[0] ? op_err : "no detail");
        lifecycle_op_done(e, id, op, -1, msg, NULL);
    }
    return rc;
}

void provider_adopt(struct engine *e, struct workergroup *g, struct worker *w)
{
    if (g && g->kind == PROV_LOCAL) local_adopt(e, w);
}

void provider_shutdown(struct engine *e, struct worker *w, bool keep)
{
    struct workergroup *g = state_wg_by_id(e, w->wg_id);
    if (g && g->kind == PROV_LOCAL) local_shutdown(e, w, keep);
    if (g && g->kind == PROV_COMMAND) {
        /* Left running on purpose: a command instance is a rented machine with its model
         * loaded; an engine restart (upgrade, crash) must not cold-start the fleet.  Its row
         * stays in the store and its reports re-adopt it on the next start.  To remove them,
         * delete the workergroup or endpoint before stopping the engine. */
        log_warn("command_instance_left_running",
                 "worker=%lld endpoint_id=%lld instance=%s state=%s", (long long)w->id,
                 (long long)w->endpoint_id, w->instance[0] ? w->instance : "-",
                 state_name(w->state));
    }
}

int provider_ops_running(struct engine *e)
{
    int n = 0;
    for (struct worker *w = e->workers; w; w = w->next) {
        struct workergroup *g = w->op_running ? state_wg_by_id(e, w->wg_id) : NULL;
        if (g && g->kind == PROV_COMMAND) n++;
    }
    return n;
}

void provider_poll(struct engine *e, struct worker *w)
{
    if (w->pid > 0) local_poll(e, w);
}

bool provider_tokenless(const struct workergroup *g)
{
    struct json_object *tl;
    return g && g->launch && json_object_object_get_ex(g->launch, "tokenless_reports", &tl) &&
           json_object_is_type(tl, json_type_string) &&
           strcmp(json_object_get_string(tl), "url_secret") == 0;
}

void provider_report_addr(struct engine *e, const struct workergroup *g, const struct worker *w,
                          struct sbuf *out)
{
    const char *u = e->public_url;
    const char *rest = strstr(u, "://");
    if (!provider_tokenless(g) || !rest || !w->mtoken[0]) {
        sbuf_puts(out, u);
        return;
    }
    /* the token is hex (state_random_hex), so it needs no URL escaping */
    rest += 3;
    sbuf_printf(out, "%.*ssgpu:%s@%s", (int)(rest - u), u, w->mtoken, rest);
}
