/* sgpu-model: LLM inference server and its checking tools.
 *
 *   sgpu-model serve [--model F.gguf] [--host H] [--port P] [--threads N] [--max-batch N]
 *                    [--ctx N] [--max-queue N] [--kv-mem MB] [--load-log-msg TEXT]
 *   sgpu-model init-tiny OUT.gguf [--seed N] [--type T] [--tokenizer spm|bpe]
 *                    [--dim N] [--layers N] [--heads N] [--kv-heads N] [--ff N] [--vocab N]
 *                    [--ctx N] [--tied] [--qwen2] [--name S]
 *   sgpu-model logits [--model F] --tokens 1,2,3 [--threads N]
 *   sgpu-model generate [--model F] --tokens 1,2,3 --max-new-tokens N [--threads N] [--ignore-eos]
 *   sgpu-model tokenize [--model F] --text T
 *   sgpu-model chat-template [--model F] [--template FILE] --messages JSON
 *                    [--no-generation-prompt] [--tools JSON]
 *   sgpu-model membw [--threads N] [--mb N]     (memory read bandwidth, GB/s; for the roofline)
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "clock.h"
#include "gguf.h"
#include "httputil.h"
#include "jinja.h"
#include "llama.h"
#include "log.h"
#include "opts.h"
#include "sampler.h"
#include "server.h"
#include "tiny.h"
#include "xalloc.h"

/* ---- option tables: one per subcommand (serve's is in server.c) ---- */

struct tool_opts { /* logits, generate, tokenize */
    const char *model, *tokens, *text;
    int max_new, threads;
    bool ignore_eos;
};

#define AT(f) OPT_AT(struct tool_opts, f)
static const struct opt tool_rows[] = {
    {.name = "model",
     .env = "SGPU_MODEL_PATH",
     .type = OPT_STR,
     AT(model),
     .meta = "F",
     .help = "GGUF file",
     .def_help = "the embedded tiny model"},
    {.name = "tokens",
     .type = OPT_STR,
     AT(tokens),
     .meta = "1,2,3",
     .help = "input token ids (logits, generate)"},
    {.name = "max-new-tokens",
     .type = OPT_INT,
     AT(max_new),
     .lo = 0,
     .hi = 1 << 24,
     .def = "16",
     .meta = "N",
     .help = "greedy tokens to generate (generate)"},
    {.name = "ignore-eos",
     .type = OPT_FLAG,
     AT(ignore_eos),
     .help = "do not stop at EOS (generate)"},
    {.name = "text", .type = OPT_STR, AT(text), .meta = "T", .help = "text to encode (tokenize)"},
    {.name = "threads",
     .type = OPT_INT,
     AT(threads),
     .lo = 1,
     .hi = 256,
     .def = "1",
     .meta = "N",
     .help = "compute threads"},
};
#undef AT

struct chat_cli_opts { /* chat-template */
    const char *model, *tpath, *msgs, *tools;
    bool no_gen;
};

#define AT(f) OPT_AT(struct chat_cli_opts, f)
static const struct opt chat_rows[] = {
    {.name = "model",
     .env = "SGPU_MODEL_PATH",
     .type = OPT_STR,
     AT(model),
     .meta = "F",
     .help = "GGUF file",
     .def_help = "the embedded tiny model"},
    {.name = "template",
     .type = OPT_STR,
     AT(tpath),
     .meta = "FILE",
     .help = "Jinja template to render instead of the model's tokenizer.chat_template (else "
             "ChatML)"},
    {.name = "messages",
     .type = OPT_STR,
     AT(msgs),
     .meta = "JSON|@FILE",
     .help = "the chat messages (required)"},
    {.name = "no-generation-prompt",
     .type = OPT_FLAG,
     AT(no_gen),
     .help = "add_generation_prompt false"},
    {.name = "tools", .type = OPT_STR, AT(tools), .meta = "JSON", .help = "the tools variable"},
};
#undef AT

struct membw_opts {
    int threads, mb;
};

#define AT(f) OPT_AT(struct membw_opts, f)
static const struct opt membw_rows[] = {
    {.name = "threads",
     .type = OPT_INT,
     AT(threads),
     .lo = 1,
     .hi = 64,
     .def = "2",
     .meta = "N",
     .help = "reading threads"},
    {.name = "mb",
     .type = OPT_INT,
     AT(mb),
     .lo = 64,
     .hi = 1 << 16,
     .def = "1024",
     .meta = "N",
     .help = "buffer size (MiB)"},
};
#undef AT

struct tiny_cli_opts { /* init-tiny: the model's shape and the template file */
    struct tiny_opts t;
    const char *tmpl_path;
};

static int parse_seed(void *cfg, const char *v, char *why, size_t n)
{
    struct tiny_cli_opts *o = cfg;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end || end == v || v[0] == '-') return snprintf(why, n, "expected a seed"), -1;
    o->t.seed = x;
    return 0;
}

static int parse_type(void *cfg, const char *v, char *why, size_t n)
{
    struct tiny_cli_opts *o = cfg;
    if (tiny_parse_type(v, &o->t) == 0) return 0;
    snprintf(why, n, "expected f32 f16 bf16 q8_0 q4_0 q4_k q5_k q6_k q4_k_m q5_k_m");
    return -1;
}

_Static_assert(sizeof(enum tok_kind) == sizeof(int), "OPT_ENUM stores an int");

#define AT(f) OPT_AT(struct tiny_cli_opts, f)
#define DIM(flag, field, text)                                                                     \
    {                                                                                              \
        .name = flag, .type = OPT_INT, AT(t.field), .lo = 1, .hi = 1 << 20, .meta = "N",           \
        .help = text                                                                               \
    }
static const struct opt tiny_rows[] = {
    {.name = "seed",
     .type = OPT_FUNC,
     .parse = parse_seed,
     .meta = "N",
     .help = "weight seed (0 = the embedded model)",
     .def_help = "0"},
    {.name = "type",
     .type = OPT_FUNC,
     .parse = parse_type,
     .meta = "T",
     .help = "weight type: f32 f16 bf16 q8_0 q4_0 q4_k q5_k q6_k q4_k_m q5_k_m (K-quants need "
             "--dim and --ff multiples of 256)",
     .def_help = "f32"},
    {.name = "tokenizer",
     .type = OPT_ENUM,
     AT(t.tok),
     .choices = "spm|bpe",
     .meta = "spm|bpe",
     .help = "SentencePiece-style or GPT-2 byte-level BPE vocabulary",
     .def_help = "spm"},
    DIM("dim", n_embd, "embedding width"),
    DIM("layers", n_layer, "transformer blocks"),
    DIM("heads", n_head, "attention heads"),
    DIM("kv-heads", n_head_kv, "key/value heads"),
    DIM("ff", n_ff, "feed-forward width"),
    DIM("vocab", vocab_size, "vocabulary size (default: the generated vocabulary's)"),
    DIM("ctx", n_ctx, "context_length"),
    {.name = "tied", .type = OPT_FLAG, AT(t.tied), .help = "output tied to the token embedding"},
    {.name = "qwen2", .type = OPT_FLAG, AT(t.qwen2), .help = "qwen2 architecture (Q/K/V biases)"},
    {.name = "name", .type = OPT_STR, AT(t.name), .meta = "S", .help = "general.name"},
    {.name = "chat-template",
     .type = OPT_STR,
     AT(tmpl_path),
     .meta = "FILE",
     .help = "Jinja file stored as tokenizer.chat_template"},
};
#undef DIM
#undef AT

/* --help is answered by main() before a subcommand parses */
#define SPEC(rows)                                                                                 \
    {                                                                                              \
        "sgpu-model", rows, sizeof rows / sizeof rows[0], OPTS_NO_HELP                             \
    }
static const struct opts_spec tool_spec = SPEC(tool_rows), chat_spec = SPEC(chat_rows),
                              membw_spec = SPEC(membw_rows), tiny_spec = SPEC(tiny_rows);
#undef SPEC

/* Parses a subcommand's argv (argv[0] = the subcommand) into cfg.  0, or -1 with the message
 * printed; with no_args, a positional argument is an error too.  The caller frees r. */
static int sub_parse(const struct opts_spec *sp, void *cfg, int argc, char **argv,
                     struct opts_result *r, bool no_args)
{
    if (opts_parse(sp, cfg, argc, argv, r) != 0) {
        fprintf(stderr, "%s\n", r->err);
        return -1;
    }
    if (no_args && r->nargs > 0) {
        fprintf(stderr, "sgpu-model: unexpected argument '%s' (see sgpu-model --help)\n",
                r->args[0]);
        return -1;
    }
    return 0;
}

/* The help text; on stdout when asked for (exit 0), on stderr after a usage
 * error (exit 2).  docs/configuration.md is checked against it. */
static void usage_to(FILE *out)
{
    fputs("usage: sgpu-model [serve|init-tiny|logits|generate|tokenize|chat-template|membw|help]\n"
          "       [options]\n"
          "A GGUF model server (architectures llama, qwen2; tensor types F32, F16, BF16, Q8_0,\n"
          "Q4_0, Q4_K, Q5_K, Q6_K in any mix) with continuous batching and TGI + OpenAI HTTP\n"
          "APIs.  Without a subcommand (or with only flags) it serves.\n"
          "\n"
          "serve [options]\n",
          out);
    serve_usage(out);
    fputs("    Routes: POST /generate, /generate_stream (TGI), /v1/completions,\n"
          "    /v1/chat/completions (OpenAI, stream: true = SSE), /apply-template (the chat\n"
          "    prompt as {\"prompt\": ...}); GET /health (503 while loading), /info, /v1/models,\n"
          "    /metrics.  Fatal errors log `event=fatal`.\n"
          "init-tiny OUT.gguf [options]   write a deterministic random-weight model\n",
          out);
    opts_usage(&tiny_spec, out);
    fputs("logits [--model F] --tokens 1,2,3 [--threads N]\n"
          "    logits of every position, one row each (%.9g)\n"
          "generate [--model F] --tokens 1,2,3 [--max-new-tokens N] [--ignore-eos] [--threads N]\n"
          "    greedy token ids\n"
          "tokenize [--model F] --text T   token ids of T, without BOS\n",
          out);
    opts_usage(&tool_spec, out);
    fputs("chat-template [options]   print the chat prompt the server builds for these messages\n",
          out);
    opts_usage(&chat_spec, out);
    fputs("membw [options]   memory read bandwidth (GB/s), for the roofline\n", out);
    opts_usage(&membw_spec, out);
    fputs("An option takes its value as the next argument or after `=`; the flag wins over the\n"
          "variable.\n"
          "Environment: SGPU_MODEL_PATH, SGPU_MODEL_PORT (as above), SGPU_LOG_LEVEL\n"
          "(debug|info|warn|error).\n",
          out);
}

static void usage(void)
{
    usage_to(stderr);
}

static int parse_tokens(const char *s, struct ids *out)
{
    while (*s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || v < 0 || v > 100000000) return -1;
        ids_push(out, (int)v);
        s = end;
        if (*s == ',')
            s++;
        else if (*s)
            return -1;
    }
    return out->n ? 0 : -1;
}

/* Whole file, NUL-terminated, at most cap bytes; NULL on error. */
static char *read_file_capped(const char *path, size_t cap, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = malloc(cap + 2);
    size_t n = buf ? fread(buf, 1, cap + 1, f) : 0;
    bool bad = !buf || ferror(f) || n > cap;
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

static char *read_small_file(const char *path, size_t *len)
{
    return read_file_capped(path, JINJA_MAX_SOURCE, len);
}

static int init_tiny_parse_write(int argc, char **argv, char **tmplp)
{
    struct tiny_cli_opts o = {0};
    tiny_default_opts(&o.t);
    struct opts_result r;
    int rc = sub_parse(&tiny_spec, &o, argc, argv, &r, false) ? 2 : 0;
    if (rc == 0 && r.nargs != 1) {
        usage();
        rc = 2;
    }
    const char *outp = rc == 0 ? r.args[0] : NULL;
    opts_result_free(&r);
    if (rc) return rc;
    if (o.tmpl_path) {
        size_t len = 0;
        *tmplp = read_small_file(o.tmpl_path, &len);
        if (!*tmplp || strlen(*tmplp) != len) {
            fprintf(stderr, "init-tiny: cannot read --chat-template %s\n", o.tmpl_path);
            return 2;
        }
        o.t.chat_template = *tmplp;
    }
    struct sbuf b = SBUF_INIT;
    if (tiny_build(&o.t, &b)) {
        fprintf(stderr, "init-tiny: invalid model shape (K-quant types need --dim and --ff "
                        "multiples of 256, Q8_0/Q4_0 of 32)\n");
        return 2;
    }
    FILE *f = fopen(outp, "wb");
    if (!f || fwrite(b.data, 1, b.len, f) != b.len || fclose(f) != 0) {
        fprintf(stderr, "init-tiny: cannot write %s: %s\n", outp, strerror(errno));
        sbuf_free(&b);
        return 1;
    }
    sbuf_free(&b);
    return 0;
}

static int cmd_init_tiny(int argc, char **argv)
{
    char *tmpl = NULL;
    int rc = init_tiny_parse_write(argc, argv, &tmpl);
    free(tmpl);
    return rc;
}

/* logits / generate / tokenize options.  0 or -1 (printed). */
static int parse_tool(int argc, char **argv, struct tool_opts *o)
{
    memset(o, 0, sizeof *o);
    struct opts_result r;
    int rc = sub_parse(&tool_spec, o, argc, argv, &r, true);
    opts_result_free(&r);
    return rc;
}

static struct llama_model *open_or_die(const char *path)
{
    struct llama_model *m;
    char err[512];
    if (llama_open(path, &m, err, sizeof err)) {
        fprintf(stderr, "sgpu-model: event=fatal error=\"%s\"\n", err);
        return NULL;
    }
    return m;
}

static int cmd_logits_generate(int argc, char **argv, bool gen)
{
    struct tool_opts o;
    if (parse_tool(argc, argv, &o)) return 2;
    struct ids toks = {0};
    if (!o.tokens || parse_tokens(o.tokens, &toks)) {
        fprintf(stderr, "need --tokens as comma-separated ids\n");
        return 2;
    }
    struct llama_model *m = open_or_die(o.model);
    if (!m) {
        ids_free(&toks);
        return 1;
    }
    int nv = m->hp.n_vocab, rc = 0;
    for (size_t i = 0; i < toks.n; i++)
        if (toks.v[i] >= nv) {
            fprintf(stderr, "token id %d out of range (vocabulary %d)\n", toks.v[i], nv);
            llama_free(m);
            ids_free(&toks);
            return 2;
        }
    int cap = (int)toks.n + (gen ? (int)o.max_new : 0);
    struct llama_kv kv;
    if (llama_kv_init(&kv, m, cap > 0 ? cap : 1)) {
        fprintf(stderr, "sgpu-model: event=fatal error=\"cannot allocate the KV cache\"\n");
        llama_free(m);
        ids_free(&toks);
        return 1;
    }
    struct llama_ctx *c = llama_ctx_new(m, (int)o.threads);
    float *lg = xmalloc((size_t)nv * (gen ? 1 : toks.n) * sizeof(float));
    struct llama_seq_in s = {&kv, toks.v, (int)toks.n, !gen, true, lg};
    if (llama_forward(c, &s, 1)) {
        fprintf(stderr, "forward failed\n");
        rc = 1;
    } else if (!gen) {
        struct sbuf line = SBUF_INIT;
        for (size_t t = 0; t < toks.n; t++) {
            sbuf_reset(&line);
            for (int i = 0; i < nv; i++)
                sbuf_printf(&line, i ? " %.9g" : "%.9g", lg[t * (size_t)nv + i]);
            sbuf_putc(&line, '\n');
            fwrite(line.data, 1, line.len, stdout);
        }
        sbuf_free(&line);
    } else {
        struct sampler_params sp = {false, 1.0f, 0, 1.0f, 1.0f, 0};
        struct sampler smp;
        sampler_init(&smp, &sp, nv);
        for (long i = 0; i < o.max_new; i++) {
            int id = sampler_next(&smp, lg, NULL, 0, NULL);
            printf(i ? " %d" : "%d", id);
            if (!o.ignore_eos && id == m->tok.eos) break;
            if (i + 1 == o.max_new) break;
            struct llama_seq_in d = {&kv, &id, 1, false, true, lg};
            if (llama_forward(c, &d, 1)) {
                rc = 1;
                break;
            }
        }
        printf("\n");
        sampler_free(&smp);
    }
    free(lg);
    llama_kv_free(&kv);
    llama_ctx_free(c);
    llama_free(m);
    ids_free(&toks);
    return rc;
}

struct bw_arg {
    const uint64_t *p;
    size_t n; /* words */
    double sum;
};

static void *bw_thread(void *a)
{
    /* integer xor: one-cycle latency, so the loop is bound by memory, not ALU */
    struct bw_arg *b = a;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 4 <= b->n; i += 4) {
        s0 ^= b->p[i];
        s1 ^= b->p[i + 1];
        s2 ^= b->p[i + 2];
        s3 ^= b->p[i + 3];
    }
    b->sum = (double)(s0 ^ s1 ^ s2 ^ s3);
    return NULL;
}

/* membw [--threads N] [--mb N]: best-of-5 read bandwidth (GB/s) of a buffer
 * far larger than the caches, split across N threads (the roofline input). */
static int cmd_membw(int argc, char **argv)
{
    struct membw_opts o = {0};
    struct opts_result r;
    int bad = sub_parse(&membw_spec, &o, argc, argv, &r, true);
    opts_result_free(&r);
    if (bad) return 2;
    long threads = o.threads, mb = o.mb;
    size_t n = (size_t)mb << 17; /* 8-byte words */
    uint64_t *p = xmalloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = i * 0x9e3779b97f4a7c15ull;
    double best = 0, chk = 0;
    for (int rep = 0; rep < 5; rep++) {
        pthread_t th[64];
        struct bw_arg a[64];
        double t0 = clock_mono();
        for (long k = 0; k < threads; k++) {
            a[k].p = p + n / threads * k;
            a[k].n = n / threads;
            pthread_create(&th[k], NULL, bw_thread, &a[k]);
        }
        for (long k = 0; k < threads; k++) {
            pthread_join(th[k], NULL);
            chk += a[k].sum;
        }
        double gbs = (double)n * 8 / (clock_mono() - t0) / 1e9;
        if (gbs > best) best = gbs;
    }
    printf("%.2f\n", best);
    if (chk < 0) printf("%g\n", chk);
    free(p);
    return 0;
}

static int cmd_tokenize(int argc, char **argv)
{
    struct tool_opts o;
    if (parse_tool(argc, argv, &o)) return 2;
    if (!o.text) {
        fprintf(stderr, "need --text\n");
        return 2;
    }
    /* a file needs only its tokenizer metadata here (a vocabulary-only GGUF
     * works); the embedded default model comes through llama_open */
    struct llama_model *m = NULL;
    struct gguf_file *f = NULL;
    struct tokenizer tk, *t = &tk;
    if (o.model) {
        char err[512];
        if (gguf_open(o.model, &f, err, sizeof err) || tok_load(&tk, f, err, sizeof err)) {
            fprintf(stderr, "sgpu-model: event=fatal error=\"%s\"\n", err);
            if (f) {
                tok_free(&tk);
                gguf_close(f);
            }
            return 1;
        }
    } else {
        m = open_or_die(o.model);
        if (!m) return 1;
        t = &m->tok;
    }
    struct ids ids = {0};
    tok_encode(t, o.text, strlen(o.text), false, &ids);
    for (size_t i = 0; i < ids.n; i++)
        printf(i ? " %d" : "%d", ids.v[i]);
    printf("\n");
    ids_free(&ids);
    if (m) llama_free(m);
    if (f) {
        tok_free(&tk);
        gguf_close(f);
    }
    return 0;
}

/* chat-template: the prompt /v1/chat/completions would build, on stdout as is. */
static int cmd_chat_template(int argc, char **argv)
{
    struct chat_cli_opts o = {0};
    struct opts_result r;
    int bad = sub_parse(&chat_spec, &o, argc, argv, &r, true);
    opts_result_free(&r);
    if (bad) return 2;
    const char *model = o.model, *tpath = o.tpath, *msgs = o.msgs, *tools = o.tools;
    bool gen = !o.no_gen;
    if (!msgs) {
        fprintf(stderr, "chat-template: --messages is required\n");
        return 2;
    }
    char *mfile = NULL;
    if (msgs[0] == '@') { /* --messages @FILE: JSON too long for a command line */
        size_t mlen;
        mfile = read_file_capped(msgs + 1, (size_t)64 << 20, &mlen);
        if (!mfile) {
            fprintf(stderr, "chat-template: cannot read %s (or over 64 MiB)\n", msgs + 1);
            return 2;
        }
        msgs = mfile;
    }
    struct json_object *jm = json_tokener_parse(msgs),
                       *jt = tools ? json_tokener_parse(tools) : NULL;
    free(mfile);
    if (!jm || (tools && !jt)) {
        fprintf(stderr, "chat-template: --messages and --tools must be JSON\n");
        json_object_put(jm);
        json_object_put(jt);
        return 2;
    }
    struct llama_model *m = open_or_die(model);
    if (!m) {
        json_object_put(jm);
        json_object_put(jt);
        return 1;
    }
    char *src = NULL;
    size_t n = 0;
    struct gguf_str gs = {0};
    if (tpath) {
        src = read_small_file(tpath, &n);
        if (!src) {
            fprintf(stderr, "chat-template: cannot read %s (or over %u bytes)\n", tpath,
                    JINJA_MAX_SOURCE);
            json_object_put(jm);
            json_object_put(jt);
            llama_free(m);
            return 2;
        }
    } else if (gguf_get_str(m->gf, "tokenizer.chat_template", &gs) == 0) {
        n = (size_t)gs.n;
    }
    struct chat_tmpl *ct = chat_tmpl_new(&m->tok, src ? src : gs.p, n);
    if (chat_tmpl_error(ct))
        fprintf(stderr, "chat-template: the template does not parse (%s); using ChatML\n",
                chat_tmpl_error(ct));
    struct chat_opts co = {gen, jt, NULL};
    struct sbuf out = SBUF_INIT;
    char err[600];
    int rc = chat_render(ct, jm, &co, &out, err, sizeof err);
    if (rc)
        fprintf(stderr, "chat-template: error %d: %s\n", rc, err);
    else
        fwrite(out.data ? out.data : "", 1, out.len, stdout);
    sbuf_free(&out);
    chat_tmpl_free(ct);
    free(src);
    json_object_put(jm);
    json_object_put(jt);
    llama_free(m);
    return rc ? 1 : 0;
}

/* `help`, or --help / -h anywhere on the line (also after a subcommand). */
static bool wants_help(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "help")) return true;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return true;
    return false;
}

int main(int argc, char **argv)
{
    log_init("model", LOG_INFO);
    if (wants_help(argc, argv)) {
        usage_to(stdout);
        return 0;
    }
    if (argc < 2 || argv[1][0] == '-') return serve_main(argc, argv); /* flags only: serve */
    const char *cmd = argv[1];
    if (!strcmp(cmd, "serve")) return serve_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "init-tiny")) return cmd_init_tiny(argc - 1, argv + 1);
    if (!strcmp(cmd, "logits")) return cmd_logits_generate(argc - 1, argv + 1, false);
    if (!strcmp(cmd, "generate")) return cmd_logits_generate(argc - 1, argv + 1, true);
    if (!strcmp(cmd, "tokenize")) return cmd_tokenize(argc - 1, argv + 1);
    if (!strcmp(cmd, "membw")) return cmd_membw(argc - 1, argv + 1);
    if (!strcmp(cmd, "chat-template")) return cmd_chat_template(argc - 1, argv + 1);
    usage();
    return 2;
}
