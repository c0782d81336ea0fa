/* `command` provider: user-supplied shell commands create/start/stop/destroy instances
 * anywhere (a cloud CLI, kubectl, docker, a test harness).  Each runs asynchronously as
 * `/bin/sh -c CMD` with the documented SGPU_* / PyWorker variables; exit 0 = success; the first
 * line of create's stdout is the instance handle passed to later commands.  stderr goes to
 * <data-dir>/provider.log. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "../engine.h"
#include "../proc.h"
#include "../state.h"
#include "log.h"
#include "provider.h"
#include "xalloc.h"

static const char *const op_keys[] = {"create", "start", "stop", "destroy"};

static const char *launch_str(const struct workergroup *g, const char *key)
{
    struct json_object *v;
    if (!json_object_object_get_ex(g->launch, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    const char *s = json_object_get_string(v);
    return *s ? s : NULL;
}

static int command_validate(struct json_object *launch, char *err, size_t errlen)
{
    json_object_object_foreach(launch, k, v)
    {
        bool cmd = false;
        for (int i = 0; i < 4; i++)
            cmd |= strcmp(k, op_keys[i]) == 0;
        if (cmd) {
            if (!json_object_is_type(v, json_type_string) || json_object_get_string_len(v) > 8192) {
                snprintf(err, errlen, "launch.%s must be a string (<= 8 KiB)", k);
                return -1;
            }
        } else if (strcmp(k, "env") == 0) {
            if (provider_validate_env(v, err, errlen) != 0) return -1;
        } else if (strcmp(k, "timeout_s") == 0) {
            double d = json_object_get_double(v);
            if ((!json_object_is_type(v, json_type_int) &&
                 !json_object_is_type(v, json_type_double)) ||
                !(d > 0 && d <= 86400)) {
                snprintf(err, errlen, "launch.timeout_s must be a number in (0, 86400]");
                return -1;
            }
        }
    }
    struct json_object *c, *d;
    if (!json_object_object_get_ex(launch, "create", &c) ||
        !json_object_object_get_ex(launch, "destroy", &d)) {
        snprintf(err, errlen, "launch.create and launch.destroy are required");
        return -1;
    }
    return 0;
}

static bool command_can_park(const struct workergroup *g)
{
    return launch_str(g, "start") && launch_str(g, "stop");
}

struct cmd_ctx {
    int64_t id;
    enum prov_op op;
};

static void cmd_done(struct engine *e, void *arg, int status, const char *out)
{
    struct cmd_ctx *c = arg;
    int64_t id = c->id;
    enum prov_op op = c->op;
    free(c);
    char first[256];
    size_t l = strcspn(out, "\r\n");
    if (l >= sizeof first) l = sizeof first - 1;
    memcpy(first, out, l);
    first[l] = '\0';
    bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    char msg[400];
    if (WIFEXITED(status))
        snprintf(msg, sizeof msg, "exit %d %s", WEXITSTATUS(status), first);
    else
        snprintf(msg, sizeof msg, "signal %d %s", WIFSIGNALED(status) ? WTERMSIG(status) : 0,
                 first);
    char q[400];
    log_info("provider_command_done", "worker=%lld op=%s ok=%d out=%s", (long long)id, op_keys[op],
             ok, log_quote(q, sizeof q, first));
    provider_op_done(e, id, op, ok ? 0 : -1, msg, op == OP_CREATE && ok ? first : NULL);
}

static int command_op(struct engine *e, struct workergroup *g, struct worker *w, enum prov_op op)
{
    const char *cmd = launch_str(g, op_keys[op]);
    if (!cmd) {
        log_warn("provider_command_missing", "worker=%lld op=%s", (long long)w->id, op_keys[op]);
        return provider_fail("launch.%s is not set", op_keys[op]);
    }
    struct endpoint *ep = state_endpoint_by_id(e, w->endpoint_id);
    struct sbuf vars[16];
    size_t nv = 0;
#define ADD(...)                                                                                   \
    do {                                                                                           \
        vars[nv] = (struct sbuf)SBUF_INIT;                                                         \
        sbuf_printf(&vars[nv], __VA_ARGS__);                                                       \
        nv++;                                                                                      \
    } while (0)
    ADD("SGPU_ACTION=%s", op_keys[op]);
    ADD("SGPU_WORKER_ID=%lld", (long long)w->id);
    ADD("CONTAINER_ID=%lld", (long long)w->id);
    ADD("SGPU_ENDPOINT=%s", ep ? ep->name : "");
    ADD("SGPU_ENDPOINT_ID=%lld", (long long)w->endpoint_id);
    ADD("SGPU_WORKERGROUP_ID=%lld", (long long)g->id);
    struct sbuf raddr = SBUF_INIT;
    provider_report_addr(e, g, w, &raddr);
    ADD("SGPU_REPORT_ADDR=%s", raddr.data);
    ADD("REPORT_ADDR=%s", raddr.data);
    sbuf_free(&raddr);
    ADD("SGPU_PUBKEY_URL=%s/pubkey/", e->public_url);
    ADD("PUBKEY_URL=%s/pubkey/", e->public_url);
    ADD("SGPU_MASTER_TOKEN=%s", w->mtoken);
    ADD("MASTER_TOKEN=%s", w->mtoken);
    ADD("SGPU_AUTH_SCHEME=%s", config_scheme_name(ep ? ep->p.sig_scheme : SIG_URL));
    ADD("SGPU_INSTANCE=%s", w->instance);
    ADD("SGPU_DATA_DIR=%s", e->opts.data_dir);
#undef ADD
    size_t nenv = 0;
    struct json_object *envo = NULL;
    if (json_object_object_get_ex(g->launch, "env", &envo))
        nenv = (size_t)json_object_object_length(envo);
    const char **extra = xcalloc(nv + nenv + 1, sizeof *extra);
    struct sbuf *envs = xcalloc(nenv + 1, sizeof *envs);
    size_t k = 0;
    if (envo) {
        size_t j = 0;
        json_object_object_foreach(envo, ek, ev)
        {
            sbuf_printf(&envs[j], "%s=%s", ek, json_object_get_string(ev));
            extra[k++] = envs[j].data;
            j++;
        }
    }
    for (size_t i = 0; i < nv; i++)
        extra[k++] = vars[i].data; /* ours override launch.env */
    char **env = proc_env_build(extra, k);
    double tmo = e->opts.provider_timeout_s;
    struct json_object *t;
    if (json_object_object_get_ex(g->launch, "timeout_s", &t)) tmo = json_object_get_double(t);
    char logp[600];
    snprintf(logp, sizeof logp, "%s/provider.log", e->opts.data_dir);
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    struct proc_spec spec = {.argv = argv,
                             .env = (const char *const *)env,
                             .cwd = NULL,
                             .log_path = logp,
                             .capture = true,
                             .timeout_s = tmo};
    struct cmd_ctx *c = xcalloc(1, sizeof *c);
    c->id = w->id;
    c->op = op;
    int pid = proc_spawn(e, &spec, cmd_done, c);
    proc_env_free(env);
    for (size_t i = 0; i < nv; i++)
        sbuf_free(&vars[i]);
    for (size_t i = 0; i < nenv; i++)
        sbuf_free(&envs[i]);
    free(envs);
    free(extra);
    if (pid < 0) {
        int err = errno;
        free(c);
        return provider_fail("could not run launch.%s: %s", op_keys[op], strerror(err));
    }
    log_debug("provider_command", "worker=%lld op=%s pid=%d", (long long)w->id, op_keys[op], pid);
    return SGPU_OK;
}

/* Shutdown waits for operations in flight, so that their results are stored. */
static void command_shutdown_pending(struct engine *e, int *instances, int *ops)
{
    (void)instances;
    for (struct worker *w = e->workers; w; w = w->next) {
        struct workergroup *g = w->op_running ? state_wg_by_id(e, w->wg_id) : NULL;
        if (g && g->ops == &command_provider) (*ops)++;
    }
}

/* Engine exit: left running on purpose.  A command instance is a rented machine with its model
 * loaded; an engine restart (upgrade, crash) must not cold-start the fleet.  Its row stays in
 * the store and its reports re-adopt it on the next start.  To remove them, delete the
 * workergroup or endpoint before stopping the engine. */
static void command_shutdown(struct engine *e, struct worker *w, bool keep)
{
    (void)e;
    (void)keep;
    log_warn("command_instance_left_running", "worker=%lld endpoint_id=%lld instance=%s state=%s",
             (long long)w->id, (long long)w->endpoint_id, w->instance[0] ? w->instance : "-",
             state_name(w->state));
}

/* No adopt/poll: its reports say whether it lives. */
const struct provider_ops command_provider = {
    .name = "command",
    .validate = command_validate,
    .op = command_op,
    .can_park = command_can_park,
    .shutdown = command_shutdown,
    .shutdown_pending = command_shutdown_pending,
};
