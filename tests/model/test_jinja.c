/* Jinja subset interpreter (src/model/jinja.c): expected renderings written
 * by hand from Jinja2 3.1's documented semantics (whitespace control with
 * trim_blocks + lstrip_blocks, scoping, filters, tests, Python str/repr of
 * values), every error kind, the bounds, and chat.c's special-token aware
 * tokenization.  The byte-for-byte comparison with jinja2 itself is
 * tests/model/chat_template_test.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../common/assert_ext.h"
#include "model/chat.h"
#include "model/jinja.h"
#include "model/tiny.h"

/* Render src with vars (JSON text or NULL); returns the status, output in out. */
static int render_lim(const char *src, const char *vars, const struct jinja_limits *lim,
                      struct sbuf *out, char *err, size_t errn)
{
    struct jinja_tmpl *t;
    int rc = jinja_parse(src, strlen(src), &t, err, errn);
    if (rc) return rc;
    struct json_object *v = vars ? json_tokener_parse(vars) : NULL;
    if (vars && !v) fail_msg("bad test JSON: %s", vars);
    rc = jinja_render(t, v, lim, out, err, errn);
    json_object_put(v);
    jinja_free(t);
    return rc;
}

static void expect(const char *src, const char *vars, const char *want)
{
    struct sbuf out = SBUF_INIT;
    char err[512] = "";
    int rc = render_lim(src, vars, NULL, &out, err, sizeof err);
    if (rc) fail_msg("template %s: %s error: %s", src, jinja_status_name(rc), err);
    const char *got = out.data ? out.data : "";
    if (out.len != strlen(want) || memcmp(got, want, out.len) != 0)
        fail_msg("template %s\n  want [%s]\n  got  [%.*s]", src, want, (int)out.len, got);
    sbuf_free(&out);
}

static void expect_err(const char *src, const char *vars, int status, const char *needle)
{
    struct sbuf out = SBUF_INIT;
    char err[512] = "";
    int rc = render_lim(src, vars, NULL, &out, err, sizeof err);
    if (rc != status)
        fail_msg("template %s: want status %s, got %s (%s) output [%.*s]", src,
                 jinja_status_name(status), jinja_status_name(rc), err, (int)out.len,
                 out.data ? out.data : "");
    if (!strstr(err, needle)) fail_msg("template %s: error [%s] lacks [%s]", src, err, needle);
    assert_int_equal(out.len, 0);
    sbuf_free(&out);
}

static void test_text_and_whitespace(void **state)
{
    (void)state;
    expect("plain text", NULL, "plain text");
    expect("a\n", NULL, "a");     /* one trailing newline dropped */
    expect("a\n\n", NULL, "a\n"); /* only one */
    expect("a\r\nb", NULL, "a\nb");
    /* trim_blocks: newline after a block tag goes; lstrip_blocks: indent before it */
    expect("{% if true %}\nx\n{% endif %}\ny", NULL, "x\ny");
    expect("a\n    {% if true %}\n    b\n    {% endif %}\nc", NULL, "a\n    b\nc");
    expect("{{ 1 }}\n{{ 2 }}", NULL, "1\n2"); /* not after variables */
    expect("a  {%- if true %} b {% endif -%}  \n c", NULL, "a b c");
    expect("a {{- 'x' -}} b", NULL, "axb");
    expect("  {%+ if true %}x{% endif +%}\ny", NULL, "  x\ny");
    expect("a\n  {# comment #}\nb", NULL, "a\nb");
    expect("a {#- c -#} b", NULL, "ab");
    expect("x {% raw %}{{ y }}{% endraw %}", NULL, "x {{ y }}");
    expect("{{ '{{' }}}}", NULL, "{{}}");
}

static void test_expressions(void **state)
{
    (void)state;
    expect("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }}",
           NULL, "7 9 3 -4 1 2");
    expect("{{ 7 / 2 }} {{ 4 / 2 }} {{ 2 ** 10 }} {{ 1.5 + 1 }} {{ 0.1 + 0.2 }} {{ 1e-7 }}", NULL,
           "3.5 2.0 1024 2.5 0.30000000000000004 1e-07");
    expect("{{ 'a' ~ 1 ~ none ~ true }} {{ 'a' + 'b' }} {{ [1] + [2] }} {{ 'ab' * 2 }}", NULL,
           "a1NoneTrue ab [1, 2] abab");
    expect("{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'a' < 'b' }} {{ 1 == 1.0 }} {{ 1 != 2 }}", NULL,
           "True False True True True");
    expect("{{ 2 in [1, 2] }} {{ 'b' in 'abc' }} {{ 'k' in {'k': 1} }} {{ 3 not in [3] }}", NULL,
           "True True True False");
    expect("{{ 0 or 'x' }} {{ 1 and 'y' }} {{ '' and 'z' }}|{{ not 0 }} {{ not [1] }}", NULL,
           "x y |True False");
    expect("{{ 'yes' if 1 else 'no' }} {{ 'yes' if 0 else 'no' }} [{{ 'x' if false }}]", NULL,
           "yes no []");
    expect("{{ [1, 'a', none, true, 1.0, [2], {'k': 'v'}] }}", NULL,
           "[1, 'a', None, True, 1.0, [2], {'k': 'v'}]");
    expect("{{ (1, 2) }} {{ (1,) }} {{ () }} {{ \"it's\" }} {{ [\"it's\"] }}", NULL,
           "(1, 2) (1,) () it's [\"it's\"]");
    expect("{{ 'a\\tb\\n\\u00e9\\x41' }}", NULL,
           "a\tb\n\xc3\xa9"
           "A");
    expect("{{ 'ab' 'cd' }} {{ -(3) }} {{ +2 }} {{ -3 | abs }}", NULL, "abcd -3 2 3");
}

static void test_access_and_slices(void **state)
{
    (void)state;
    const char *v = "{\"m\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"bot\"}],"
                    " \"s\": \"h\\u00e9llo\", \"d\": {\"items\": 5, \"k\": 1}}";
    expect("{{ m[0].role }} {{ m[0]['content'] }} {{ m[-1].role }} [{{ m[5] }}]", v,
           "user hi bot []");
    expect("{{ m[1].content is defined }} {{ m[1]['content'] is undefined }}", v, "False True");
    expect("{{ m[1:] | length }} {{ m[:-1][0].role }} {{ m[::-1][0].role }}", v, "1 user bot");
    expect("{{ s[1] }} {{ s[1:3] }} {{ s[::-1] }} {{ s | length }} {{ s[-2:] }}", v,
           "\xc3\xa9 \xc3\xa9l oll\xc3\xa9h 5 lo");
    /* a dict method name resolves to the method, as in Jinja (getattr before item) */
    expect("{{ d.items is defined }} {{ d['items'] }} {{ d.k }} {{ d.get('k') }} "
           "{{ d.get('x', 7) }} {{ d.get('x') }}",
           v, "True 5 1 1 7 None");
    expect("{% for k, x in d.items() %}{{ k }}={{ x }};{% endfor %}", v, "items=5;k=1;");
    expect("{{ none.x is defined }}", NULL, "False");
    expect_err("{{ nothing.x }}", NULL, JINJA_ERUNTIME, "'nothing' is undefined");
    expect_err("{{ nothing['x'] }}", NULL, JINJA_ERUNTIME, "'nothing' is undefined");
}

static void test_statements_and_scope(void **state)
{
    (void)state;
    const char *v = "{\"xs\": [\"a\", \"b\", \"c\"]}";
    expect("{% for x in xs %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}"
           "{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ x }};{% endfor %}",
           v, "103TrueFalse3a;212FalseFalse3b;321FalseTrue3c;");
    expect("{% for x in xs if x != 'b' %}{{ loop.index }}/{{ loop.length }}{{ x }} {% endfor %}", v,
           "1/2a 2/2c ");
    expect("{% for x in [] %}x{% else %}empty{% endfor %}", NULL, "empty");
    expect("{% for x in xs %}{{ loop.previtem | default('-') }}{{ loop.nextitem | default('-') }} "
           "{% endfor %}",
           v, "-b ac b- ");
    expect("{% for x in xs %}{% if x == 'b' %}{% continue %}{% endif %}{{ x }}{% endfor %}", v,
           "ac");
    expect("{% for x in xs %}{% if x == 'b' %}{% break %}{% endif %}{{ x }}{% endfor %}", v, "a");
    expect("{% for i in range(3) %}{% for j in range(i) %}{{ i }}{{ j }} {% endfor %}{% endfor %}",
           NULL, "10 20 21 ");
    /* set inside a loop does not leak; namespace attributes do */
    expect("{% set n = 0 %}{% set ns = namespace(n=0) %}{% for x in xs %}{% set n = n + 1 %}"
           "{% set ns.n = ns.n + 1 %}{% endfor %}{{ n }} {{ ns.n }}",
           v, "0 3");
    expect("{% if false %}a{% elif 0 %}b{% elif 1 %}c{% else %}d{% endif %}", NULL, "c");
    expect("{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t %}<{{ a }}>{% endset %}{{ t }}", NULL,
           "12<1>");
    expect("{% macro m(x, y='d') %}[{{ x }}{{ y }}]{% endmacro %}{{ m(1) }}{{ m(2, y='e') }}"
           "{{ m(3, 4) }}",
           NULL, "[1d][2e][34]");
    expect("{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(3) }}",
           NULL, "321");
    expect("{% set messages = xs[1:] %}{{ messages | join(',') }}", v, "b,c");
    expect("{% generation %}g{% endgeneration %}", NULL, "g");
}

static void test_filters(void **state)
{
    (void)state;
    const char *v = "{\"m\": [{\"role\": \"system\", \"content\": \" s \"}, {\"role\": \"user\", "
                    "\"content\": \"u\"}, {\"role\": \"user\"}]}";
    expect("[{{ '  a b \\n' | trim }}] {{ 'xxaxx' | trim('x') }} {{ 'Ab' | upper }}"
           "{{ 'Ab' | lower }} {{ 'hello WORLD' | capitalize }} {{ \"they're here-now\" | title }}",
           NULL, "[a b] a ABab Hello world They're Here-Now");
    expect("{{ 'aaa' | replace('a', 'b', 2) }} {{ [1, 2] | join('-') }} {{ 'abc' | join('.') }}",
           NULL, "bba 1-2 a.b.c");
    expect("{{ [3, 1, 2] | first }}{{ [3, 1, 2] | last }}{{ 'xyz' | first }} [{{ [] | first }}]",
           NULL, "32x []");
    expect("{{ u | default('d') }} {{ '' | default('d') }} {{ '' | default('d', true) }}"
           "{{ none | d('n', true) }}",
           NULL, "d  dn");
    expect("{{ 5 | string ~ 1 }} {{ '12' | int + 1 }} {{ '3.9' | int }} {{ 'x' | int(7) }} "
           "{{ '2.5' | float }} {{ 3 | float }}",
           NULL, "51 13 3 7 2.5 3.0");
    expect("{{ 'ab' | list }} {{ {'a': 1} | items | list }} {{ {'b': 1, 'a': 2} | dictsort }}",
           NULL, "['a', 'b'] [('a', 1)] [('a', 2), ('b', 1)]");
    expect("{{ [{'a': 1}, {'b': 2}, 'x', [1, 2, 3]] | tojson }}", NULL,
           "[{\"a\": 1}, {\"b\": 2}, \"x\", [1, 2, 3]]");
    expect("{{ {'t': 'q\"\\\\\\n\\u00e9\\u0001', 'f': 1.0, 'n': none, 'b': false} | tojson }}",
           NULL, "{\"t\": \"q\\\"\\\\\\n\xc3\xa9\\u0001\", \"f\": 1.0, \"n\": null, \"b\": false}");
    expect("{{ {'a': [1, {}], 'b': []} | tojson(indent=2) }}", NULL,
           "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"b\": []\n}");
    expect("{{ m | selectattr('role', 'equalto', 'user') | list | length }} "
           "{{ m | rejectattr('role', 'eq', 'user') | map(attribute='content') | join }} "
           "{{ m | map(attribute='content', default='-') | join('|') }} "
           "{{ m | selectattr('content', 'defined') | list | length }}",
           v, "2  s   s |u|- 2");
    expect("{{ [1, 0, 2] | select | list }} {{ [1, 2, 3, 4] | reject('odd') | list }} "
           "{{ ['a', 'B'] | map('upper') | list }}",
           NULL, "[1, 2] [2, 4] ['A', 'B']");
    expect("{{ [3, 1, 2] | sort }} {{ ['b', 'A', 'c'] | sort(reverse=true) }} "
           "{{ [{'n': 2}, {'n': 1}] | sort(attribute='n') | map(attribute='n') | list }}",
           NULL, "[1, 2, 3] ['c', 'b', 'A'] [1, 2]");
    expect("{{ [1, 2, 1, 3] | unique | list }} {{ [1, 2] | reverse | list }} {{ 'ab' | reverse }} "
           "{{ [1, 2, 3] | sum }} {{ [2, 5, 1] | max }} {{ [2, 5, 1] | min }}",
           NULL, "[1, 2, 3] [2, 1] ba 6 5 1");
    expect("{{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'a\\nb' | indent(1, true) }}", NULL,
           "a\n  b\n\n  c| a\n b");
    expect("{{ 2.567 | round(2) }} {{ 2.5 | round }} {{ 3.5 | round }} {{ '<a&b>' | e }} {{ 'a b  "
           "c' | wordcount }}",
           NULL, "2.57 2.0 4.0 &lt;a&amp;b&gt; 3");
    expect_err("{{ 'x' | nosuchfilter }}", NULL, JINJA_ERUNTIME, "no filter named 'nosuchfilter'");
}

static void test_tests_and_methods(void **state)
{
    (void)state;
    expect("{{ u is defined }}{{ u is undefined }}{{ none is none }}{{ 'a' is string }}"
           "{{ 1 is number }}{{ 1.0 is number }}{{ 'a' is number }}{{ {} is mapping }}"
           "{{ [] is iterable }}{{ 'x' is iterable }}{{ 1 is iterable }}",
           NULL, "FalseTrueTrueTrueTrueTrueFalseTrueTrueTrueFalse");
    expect("{{ 1 is equalto 1 }}{{ 1 is eq(2) }}{{ none is sameas none }}{{ 2 is even }}"
           "{{ 3 is odd }}{{ 9 is divisibleby 3 }}{{ 1 is not none }}{{ true is boolean }}"
           "{{ 1 is integer }}{{ 1.5 is float }}{{ 'ab' is lower }}{{ 2 is gt 1 }}",
           NULL, "TrueFalseTrueTrueTrueTrueTrueTrueTrueTrueTrueTrue");
    expect("[{{ '  x '.strip() }}][{{ 'xx'.lstrip('x') }}][{{ ' y '.rstrip() }}]"
           "{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x', 'c')) }}",
           NULL, "[x][][ y]TrueTrue");
    expect("{{ 'a b  c'.split() }} {{ 'a,b,,c'.split(',') }} {{ 'a,b,c'.split(',', 1) }} "
           "{{ 'a</think>b</think>c'.split('</think>')[-1] }}",
           NULL, "['a', 'b', 'c'] ['a', 'b', '', 'c'] ['a', 'b,c'] c");
    expect("{{ 'aB'.upper() }}{{ 'aB'.lower() }}{{ 'hello wORLD 1st'.title() }} "
           "{{ 'abab'.replace('b', 'c') }} {{ 'abc'.find('c') }} {{ '-'.join(['a', 'b']) }}",
           NULL, "ABabHello World 1St acac 2 a-b");
    expect("{{ '%s=%d%%' % ('a', 2) }} {{ '[%r]' % 'q' }} {{ '{}{1}{x}'.format(0, 1, x=2) }} "
           "{% for i in range(3) %}{{ loop.cycle('a', 'b') }}{% endfor %}",
           NULL, "a=2% ['q'] 012 aba");
    expect_err("{{ 'x'.nomethod() }}", NULL, JINJA_ERUNTIME, "no callable attribute");
    expect_err("{{ [1].append(2) }}", NULL, JINJA_ERUNTIME, "cannot modify a list");
    expect_err("{{ 1 is nosuchtest }}", NULL, JINJA_ERUNTIME, "no test named");
}

static void test_errors(void **state)
{
    (void)state;
    expect_err("{{ raise_exception('roles must alternate') }}", NULL, JINJA_ERAISE,
               "roles must alternate");
    expect_err("{% if x %}", NULL, JINJA_ESYNTAX, "expected '{% endif %}'");
    expect_err("{% for x in %}{% endfor %}", NULL, JINJA_ESYNTAX, "expected an expression");
    expect_err("{% include 'x' %}", NULL, JINJA_ESYNTAX, "unsupported tag 'include'");
    expect_err("{{ 1 + }}", NULL, JINJA_ESYNTAX, "line 1");
    expect_err("a\nb\n{{ 'unterminated }}", NULL, JINJA_ESYNTAX, "line 3: unterminated string");
    expect_err("{{ x $ y }}", NULL, JINJA_ESYNTAX, "unexpected character '$'");
    expect_err("{# open", NULL, JINJA_ESYNTAX, "unclosed comment");
    expect_err("{{ 1 + 'a' }}", NULL, JINJA_ERUNTIME, "unsupported operand");
    expect_err("{{ 1 / 0 }}", NULL, JINJA_ERUNTIME, "division by zero");
    expect_err("{{ 9223372036854775807 + 1 }}", NULL, JINJA_ERUNTIME, "integer overflow");
    expect_err("{% set x = 1 %}{% set x.y = 2 %}", NULL, JINJA_ERUNTIME, "non-namespace");
    expect_err("{{ 1 < 'a' }}", NULL, JINJA_ERUNTIME, "not supported between");
    expect_err("{{ 5 | length }}", NULL, JINJA_ERUNTIME, "has no len()");
    expect_err("{% for x in 5 %}{% endfor %}", NULL, JINJA_ERUNTIME, "not iterable");
    expect_err("{{ range(0, 10, 0) }}", NULL, JINJA_ERUNTIME, "must not be zero");
    /* a namespace holding itself: bounded, not a stack overflow */
    expect_err("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}", NULL, JINJA_ERUNTIME,
               "nested too deeply");
    expect_err("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns | tojson }}", NULL,
               JINJA_ERUNTIME, "nested too deeply");
    expect("{% set ns = namespace() %}{% set ns.me = ns %}{{ [ns] == [ns] }}", NULL, "False");
    expect("{{ [1, 2, 3][::9223372036854775807] }}{{ range(1, 9223372036854775807, "
           "9223372036854775807) | list }}",
           NULL, "[1][1]");
    /* error text does not leak partial output, and the template stays usable */
    struct jinja_tmpl *t;
    char err[256];
    const char *src = "{{ 'a' }}{{ x + 1 }}";
    assert_int_equal(jinja_parse(src, strlen(src), &t, err, sizeof err), 0);
    struct json_object *ok = json_tokener_parse("{\"x\": 1}"), *bad = json_tokener_parse("{}");
    for (int i = 0; i < 3; i++) {
        struct sbuf out = SBUF_INIT;
        assert_int_equal(jinja_render(t, bad, NULL, &out, err, sizeof err), JINJA_ERUNTIME);
        assert_int_equal(out.len, 0);
        assert_int_equal(jinja_render(t, ok, NULL, &out, err, sizeof err), JINJA_OK);
        assert_string_equal(out.data, "a2");
        sbuf_free(&out);
    }
    json_object_put(ok);
    json_object_put(bad);
    jinja_free(t);
}

static void test_bounds(void **state)
{
    (void)state;
    struct jinja_limits lim;
    jinja_default_limits(&lim);
    lim.max_output = 1000;
    lim.max_steps = 10000;
    lim.max_depth = 5;
    lim.max_memory = 1 << 20;
    struct {
        const char *src, *needle;
    } cases[] = {
        {"{% for i in range(2000) %}x{% endfor %}", "output over 1000 bytes"},
        {"{% for i in range(100) %}{% for j in range(100) %}{% for k in range(100) %}"
         "{% endfor %}{% endfor %}{% endfor %}",
         "steps"},
        {"{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "nested deeper than 5"},
        {"{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}"
         "{% endfor %}",
         "memory limit"},
        /* strings built by ~ or + are bounded like the output */
        {"{% set ns = namespace(s='xx') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
         "{% endfor %}",
         "output over 1000 bytes"},
        {"{{ range(10000000) }}", "range() of over"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct sbuf out = SBUF_INIT;
        char err[256] = "";
        int rc = render_lim(cases[i].src, NULL, &lim, &out, err, sizeof err);
        if (rc != JINJA_ELIMIT || !strstr(err, cases[i].needle))
            fail_msg("%s: status %s [%s]", cases[i].src, jinja_status_name(rc), err);
        assert_int_equal(out.len, 0);
        sbuf_free(&out);
    }
    /* source size and nesting are bounded at parse time */
    struct jinja_tmpl *t;
    char err[256];
    size_t big = JINJA_MAX_SOURCE + 1;
    char *src = malloc(big + 1);
    memset(src, 'x', big);
    src[big] = 0;
    assert_int_equal(jinja_parse(src, big, &t, err, sizeof err), JINJA_ESYNTAX);
    free(src);
    struct sbuf deep = SBUF_INIT;
    for (int i = 0; i < 2 * JINJA_MAX_NESTING; i++)
        sbuf_puts(&deep, "{% if true %}");
    assert_int_equal(jinja_parse(deep.data, deep.len, &t, err, sizeof err), JINJA_ESYNTAX);
    assert_non_null(strstr(err, "nesting deeper"));
    /* what real templates need stays well inside: 40 nested blocks, 100 elifs */
    sbuf_reset(&deep);
    for (int i = 0; i < 40; i++)
        sbuf_puts(&deep, "{% if true %}");
    sbuf_puts(&deep, "{% set x = 99 %}{% if x == 0 %}0");
    for (int i = 1; i < 100; i++)
        sbuf_printf(&deep, "{%% elif x == %d %%}%d", i, i);
    sbuf_puts(&deep, "{% endif %}");
    for (int i = 0; i < 40; i++)
        sbuf_puts(&deep, "{% endif %}");
    expect(deep.data, NULL, "99");
    sbuf_reset(&deep);
    sbuf_puts(&deep, "{{ ");
    for (int i = 0; i < 100000; i++)
        sbuf_puts(&deep, "[");
    assert_int_equal(jinja_parse(deep.data, deep.len, &t, err, sizeof err), JINJA_ESYNTAX);
    sbuf_free(&deep);
}

/* chat.c on the tiny SPM vocabulary: ChatML fallback, the template path,
 * special tokens in the text become their ids, BOS not doubled. */
static void test_chat(void **state)
{
    (void)state;
    struct tiny_opts o;
    tiny_default_opts(&o);
    o.n_embd = 32;
    o.n_layer = 1;
    o.n_head = 2;
    o.n_head_kv = 1;
    o.n_ff = 64;
    struct sbuf file = SBUF_INIT;
    assert_int_equal(tiny_build(&o, &file), 0);
    struct gguf_file *gf;
    char err[256];
    assert_int_equal(gguf_open_mem(file.data, file.len, false, &gf, err, sizeof err), 0);
    struct tokenizer tok;
    assert_int_equal(tok_load(&tok, gf, err, sizeof err), 0);
    struct json_object *msgs = json_tokener_parse(
        "[{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"hi \"}, "
        "{\"type\": \"text\", \"text\": \"there\"}], \"name\": \"bob\"}]");
    struct chat_opts co = {true, NULL, NULL};

    struct chat_tmpl *ct = chat_tmpl_new(&tok, NULL, 0);
    assert_string_equal(chat_tmpl_kind(ct), "chatml");
    struct sbuf out = SBUF_INIT;
    assert_int_equal(chat_render(ct, msgs, &co, &out, err, sizeof err), 0);
    assert_string_equal(out.data, "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n");
    chat_tmpl_free(ct);

    const char *src = "{{ bos_token }}{% for m in messages %}{{ m.name }}:{{ m.content }}"
                      "{{ eos_token }}{% endfor %}{% if add_generation_prompt %}A:{% endif %}";
    ct = chat_tmpl_new(&tok, src, strlen(src));
    assert_string_equal(chat_tmpl_kind(ct), "jinja");
    sbuf_reset(&out);
    assert_int_equal(chat_render(ct, msgs, &co, &out, err, sizeof err), 0);
    assert_string_equal(out.data, "<s>bob:hi there</s>A:");
    struct ids ids = {0}, plain = {0};
    chat_tokenize(ct, out.data, out.len, &ids);
    /* <s> and </s> are the control tokens; the text between is encoded as text */
    ASSERT_GT_INT(ids.n, 3);
    assert_int_equal(ids.v[0], tok.bos);
    int n_bos = 0, n_eos = 0;
    for (size_t i = 0; i < ids.n; i++) {
        n_bos += ids.v[i] == tok.bos;
        n_eos += ids.v[i] == tok.eos;
    }
    assert_int_equal(n_bos, 1);
    assert_int_equal(n_eos, 1);
    tok_encode(&tok, "bob:hi there", 12, false, &plain);
    assert_memory_equal(ids.v + 1, plain.v, plain.n * sizeof(int));
    /* no BOS in the text: one is added, as the vocabulary asks */
    ids.n = 0;
    chat_tokenize(ct, "x", 1, &ids);
    assert_int_equal(ids.v[0], tok.bos);
    ids_free(&ids);
    ids_free(&plain);

    /* bad messages are 400; the template's raise_exception is 400 with its text */
    struct json_object *bad = json_tokener_parse("[{\"content\": \"x\"}]");
    sbuf_reset(&out);
    assert_int_equal(chat_render(ct, bad, &co, &out, err, sizeof err), 400);
    assert_non_null(strstr(err, "role"));
    json_object_put(bad);
    chat_tmpl_free(ct);
    const char *raise = "{{ raise_exception('no system role') }}";
    ct = chat_tmpl_new(&tok, raise, strlen(raise));
    assert_int_equal(chat_render(ct, msgs, &co, &out, err, sizeof err), 400);
    assert_non_null(strstr(err, "no system role"));
    chat_tmpl_free(ct);
    const char *broken = "{% for %}";
    ct = chat_tmpl_new(&tok, broken, strlen(broken));
    assert_string_equal(chat_tmpl_kind(ct), "chatml-fallback");
    assert_non_null(chat_tmpl_error(ct));
    chat_tmpl_free(ct);

    sbuf_free(&out);
    json_object_put(msgs);
    tok_free(&tok);
    gguf_close(gf);
    sbuf_free(&file);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_and_whitespace),
        cmocka_unit_test(test_expressions),
        cmocka_unit_test(test_access_and_slices),
        cmocka_unit_test(test_statements_and_scope),
        cmocka_unit_test(test_filters),
        cmocka_unit_test(test_tests_and_methods),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_chat),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
