/* Unit tests for the provider table (providers/provider.h): lookup by name, the names in error
 * messages, the common launch checks before each provider's own, parking per provider, and the
 * completion interface (providers report through provider_op_done / provider_instance_exited
 * to whoever registered, never into lifecycle internals). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include <json-c/json.h>

#include "../common/assert_ext.h"
#include "engine/engine.h"
#include "engine/providers/provider.h"

static void test_find(void **st)
{
    (void)st;
    assert_ptr_equal(provider_find("local"), &local_provider);
    assert_ptr_equal(provider_find("command"), &command_provider);
    assert_null(provider_find("kubernetes"));
    assert_null(provider_find(""));
    ASSERT_EQ_STR(provider_names(), "\"local\" or \"command\"");
    ASSERT_EQ_STR(provider_op_name(OP_CREATE), "create");
    ASSERT_EQ_STR(provider_op_name(OP_DESTROY), "destroy");
    /* every table names itself and can run operations */
    const struct provider_ops *all[] = {&local_provider, &command_provider};
    for (size_t i = 0; i < 2; i++) {
        assert_non_null(all[i]->name);
        assert_non_null(all[i]->op);
        assert_ptr_equal(provider_find(all[i]->name), all[i]);
    }
}

static int validate(const struct provider_ops *ops, const char *launch, char *err, size_t n)
{
    struct json_object *o = json_tokener_parse(launch);
    assert_non_null(o);
    int rc = provider_validate(ops, o, err, n);
    json_object_put(o);
    return rc;
}

static void test_validate(void **st)
{
    (void)st;
    char err[200];
    ASSERT_EQ_INT(validate(&local_provider, "{}", err, sizeof err), 0);
    ASSERT_EQ_INT(validate(&local_provider, "[1]", err, sizeof err), -1);
    ASSERT_EQ_STR(err, "launch must be an object");
    /* the common member, for every provider */
    ASSERT_EQ_INT(validate(&command_provider, "{\"tokenless_reports\": \"yes\"}", err, sizeof err),
                  -1);
    ASSERT_HAS_STR(err, "tokenless_reports");
    /* then the provider's own */
    ASSERT_EQ_INT(validate(&local_provider, "{\"args\": [1]}", err, sizeof err), -1);
    ASSERT_EQ_STR(err, "launch.args must be a list of strings");
    ASSERT_EQ_INT(validate(&command_provider, "{\"create\": \"true\"}", err, sizeof err), -1);
    ASSERT_EQ_STR(err, "launch.create and launch.destroy are required");
    ASSERT_EQ_INT(validate(&command_provider, "{\"create\": \"true\", \"destroy\": \"true\"}", err,
                           sizeof err),
                  0);
    ASSERT_EQ_INT(validate(&local_provider, "{\"env\": {\"A=B\": \"x\"}}", err, sizeof err), -1);
    ASSERT_HAS_STR(err, "launch.env");
}

static void test_can_park(void **st)
{
    (void)st;
    struct workergroup g;
    memset(&g, 0, sizeof g);
    g.ops = &local_provider;
    g.launch = json_tokener_parse("{}");
    assert_true(provider_can_park(&g)); /* SIGSTOP / SIGCONT */
    g.ops = &command_provider;
    assert_false(provider_can_park(&g)); /* no start/stop commands */
    json_object_put(g.launch);
    g.launch = json_tokener_parse("{\"start\": \"s\", \"stop\": \"t\"}");
    assert_true(provider_can_park(&g));
    json_object_put(g.launch);
    assert_true(local_provider.start_keeps_model);
    assert_false(command_provider.start_keeps_model);
}

static int64_t done_id, exited_id;
static enum prov_op done_op;
static int done_rc;

static void on_done(struct engine *e, int64_t id, enum prov_op op, int rc, const char *msg,
                    const char *instance)
{
    (void)e;
    (void)msg;
    (void)instance;
    done_id = id;
    done_op = op;
    done_rc = rc;
}

static void on_exited(struct engine *e, int64_t id, const char *why)
{
    (void)e;
    (void)why;
    exited_id = id;
}

static void test_events(void **st)
{
    (void)st;
    provider_op_done(NULL, 1, OP_START, 0, "x", NULL); /* none registered: dropped */
    ASSERT_EQ_INT(done_id, 0);
    static const struct provider_events ev = {.op_done = on_done, .instance_exited = on_exited};
    provider_set_events(&ev);
    provider_op_done(NULL, 7, OP_STOP, -1, "failed", NULL);
    ASSERT_EQ_INT(done_id, 7);
    ASSERT_EQ_INT(done_op, OP_STOP);
    ASSERT_EQ_INT(done_rc, -1);
    provider_instance_exited(NULL, 9, "exit status 1");
    ASSERT_EQ_INT(exited_id, 9);
    provider_set_events(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_can_park),
        cmocka_unit_test(test_events),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
