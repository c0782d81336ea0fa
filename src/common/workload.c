/* Workload rules shared by the worker and the gateway (workload.h). */
#include <math.h>
#include <stddef.h>

#include "workload.h"

bool workload_positive(const struct pyj_value *v, double *out)
{
    double x;
    if (!v || (v->type != PYJ_INT && v->type != PYJ_FLOAT) || !pyj_number(v, &x)) return false;
    if (!isfinite(x) || x <= 0) return false;
    *out = x;
    return true;
}

/* Characters of prompt text: a string, a list of strings, or chat messages (content as a
 * string or as text parts).  Depth-bounded: the payload comes from the wire. */
static size_t text_chars(const struct pyj_value *v, int depth)
{
    if (!v || depth > 8) return 0;
    if (v->type == PYJ_STRING) return v->u.str.len;
    size_t n = 0;
    if (v->type == PYJ_ARRAY)
        for (size_t i = 0; i < v->u.arr.len; i++)
            n += text_chars(v->u.arr.items[i], depth + 1);
    if (v->type == PYJ_OBJECT) {
        n += text_chars(pyj_get(v, "content"), depth + 1);
        n += text_chars(pyj_get(v, "text"), depth + 1);
    }
    return n;
}

double workload_tgi(const struct pyj_value *payload)
{
    double x;
    if (!workload_positive(pyj_get(pyj_get(payload, "parameters"), "max_new_tokens"), &x)) x = 256;
    return x;
}

double workload_openai(const struct pyj_value *payload)
{
    double x;
    if (workload_positive(pyj_get(payload, "max_tokens"), &x) ||
        workload_positive(pyj_get(payload, "max_completion_tokens"), &x))
        return x;
    size_t chars = text_chars(pyj_get(payload, "prompt"), 0) +
                   text_chars(pyj_get(payload, "messages"), 0) +
                   text_chars(pyj_get(payload, "input"), 0);
    return ceil((double)chars / 4.0) + 16.0;
}

/* First member named `key` holding a positive number, depth-first. */
static bool find_num(const struct pyj_value *v, const char *key, int depth, double *out)
{
    if (!v || depth > 6) return false;
    if (v->type == PYJ_OBJECT) {
        if (workload_positive(pyj_get(v, key), out)) return true;
        for (size_t i = 0; i < v->u.obj.len; i++)
            if (find_num(v->u.obj.members[i].val, key, depth + 1, out)) return true;
    } else if (v->type == PYJ_ARRAY) {
        for (size_t i = 0; i < v->u.arr.len; i++)
            if (find_num(v->u.arr.items[i], key, depth + 1, out)) return true;
    }
    return false;
}

double workload_comfy(const struct pyj_value *payload)
{
    double wd = 512, ht = 512, steps = 20;
    find_num(payload, "width", 0, &wd);
    find_num(payload, "height", 0, &ht);
    find_num(payload, "steps", 0, &steps);
    double tiles = ceil(wd / 512.0) * ceil(ht / 512.0);
    return (175.0 * tiles + 85.0) * steps / 20.0;
}
