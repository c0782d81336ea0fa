/* Provider dispatch: which implementation runs a workergroup's instances. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "provider.h"

#include "../engine.h"
#include "../state.h"
#include "log.h"

/* The providers: one row each (provider.h says how to add one). */
static const struct provider_ops *const providers[] = {&local_provider, &command_provider};
#define NPROVIDERS (sizeof providers / sizeof providers[0])

const struct provider_ops *provider_find(const char *s)
{
    for (size_t i = 0; i < NPROVIDERS; i++)
        if (strcmp(s, providers[i]->name) == 0) return providers[i];
    return NULL;
}

const char *provider_names(void)
{
    static char names[256];
    if (!names[0]) {
        size_t n = 0;
        for (size_t i = 0; i < NPROVIDERS && n < sizeof names; i++)
            n += (size_t)snprintf(names + n, sizeof names - n, "%s\"%s\"",
                                  i == 0                ? ""
                                  : i + 1 == NPROVIDERS ? " or "
                                                        : ", ",
                                  providers[i]->name);
    }
    return names;
}

static const char *const op_names[] = {"create", "start", "stop", "destroy"};

const char *provider_op_name(enum prov_op op)
{
    return op_names[op];
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

int provider_validate(const struct provider_ops *ops, struct json_object *launch, char *err,
                      size_t errlen)
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
    return ops->validate ? ops->validate(launch, err, errlen) : 0;
}

bool provider_can_park(const struct workergroup *g)
{
    return g->ops->can_park && g->ops->can_park(g);
}

/* the detail of the failing operation (one loop thread: one operation at a time) */
static char op_err[300];

int provider_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(op_err, sizeof op_err, fmt, ap);
    va_end(ap);
    return SGPU_ERROR;
}

int provider_op(struct engine *e, struct workergroup *g, struct worker *w, enum prov_op op)
{
    int64_t id = w->id;
    op_err[0] = '\0';
    int rc = g->ops->op(e, g, w, op);
    if (rc != SGPU_OK) {
        char msg[360];
        snprintf(msg, sizeof msg, "could not start the operation: %s",
                 op_err[0] ? op_err : "no detail");
        log_warn("provider_op_failed", "worker=%lld op=%s msg=\"%s\"", (long long)id,
                 provider_op_name(op), op_err[0] ? op_err : "no detail");
        provider_op_done(e, id, op, -1, msg, NULL);
    }
    return rc;
}

void provider_adopt(struct engine *e, struct workergroup *g, struct worker *w)
{
    if (g && g->ops->adopt) g->ops->adopt(e, w);
}

void provider_shutdown(struct engine *e, struct worker *w, bool keep)
{
    struct workergroup *g = state_wg_by_id(e, w->wg_id);
    if (g && g->ops->shutdown) g->ops->shutdown(e, w, keep);
}

void provider_shutdown_pending(struct engine *e, int *instances, int *ops)
{
    *instances = *ops = 0;
    for (size_t i = 0; i < NPROVIDERS; i++)
        if (providers[i]->shutdown_pending) providers[i]->shutdown_pending(e, instances, ops);
}

void provider_shutdown_finish(struct engine *e)
{
    for (size_t i = 0; i < NPROVIDERS; i++)
        if (providers[i]->shutdown_finish) providers[i]->shutdown_finish(e);
}

void provider_poll(struct engine *e, struct worker *w)
{
    struct workergroup *g = state_wg_by_id(e, w->wg_id);
    if (g && g->ops->poll) g->ops->poll(e, w);
}

/* ---- completion interface ---- */

static const struct provider_events *events;

void provider_set_events(const struct provider_events *ev)
{
    events = ev;
}

void provider_op_done(struct engine *e, int64_t id, enum prov_op op, int rc, const char *msg,
                      const char *instance)
{
    if (events && events->op_done) events->op_done(e, id, op, rc, msg, instance);
}

void provider_instance_exited(struct engine *e, int64_t id, const char *why)
{
    if (events && events->instance_exited) events->instance_exited(e, id, why);
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
