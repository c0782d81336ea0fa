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
#include "sampler.h"
#include "server.h"
#include "tiny.h"

/* The help text; on stdout when asked for (exit 0), on stderr after a usage
 * error (exit 2).  docs/configuration.md is checked against it. */
static void usage_to(FILE *out)
{
    fputs(
        "usage: sgpu-model [serve|init-tiny|logits|generate|tokenize|chat-template|membw|help]\n"
        "       [options]\n"
        "A GGUF model server (architectures llama, qwen2; tensor types F32, F16, BF16, Q8_0,\n"
        "Q4_0, Q4_K, Q5_K, Q6_K in any mix) with continuous batching and TGI + OpenAI HTTP\n"
        "APIs.  Without a subcommand (or with only flags) it serves.\n"
        "\n"
        "  serve [--model F.gguf] [--host H] [--port P] [--threads N] [--max-batch N] [--ctx N]\n"
        "        [--max-queue N] [--prefill-chunk N] [--kv-mem MB] [--max-body-kb KB]\n"
        "        [--load-log-msg TEXT]\n"
        "        [--max-connections N] [--request-deadline S] [--body-budget-kb KB]\n"
        "      --model F        GGUF file (env SGPU_MODEL_PATH; default: the embedded tiny\n"
        "                       random-weight model, whose text is noise)\n"
        "      --host H         listen address [127.0.0.1]\n"
        "      --port P         listen port, 0 = ephemeral (env SGPU_MODEL_PORT) [5001]\n"
        "      --threads N      compute threads [online CPUs]\n"
        "      --max-batch N    sequences decoded together per step [16]\n"
        "      --ctx N          positions per sequence [the model's context_length]\n"
        "      --max-queue N    requests waiting for a batch slot before 429 [64]\n"
        "      --prefill-chunk N  prompt tokens per step over all sequences, interleaved\n"
        "                       with the running decodes; 0 = whole prompts at once [256]\n"
        "      --kv-mem MB      KV cache budget across sequences [1024]\n"
        "      --max-body-kb KB request body limit, 413 beyond [1024]\n"
        "      --load-log-msg T text added to the one `event=model_loaded` log line\n"
        "      --max-connections N  open connections; at the limit the oldest idle one is\n"
        "                       closed [4096, clamped to the fd limit]\n"
        "      --request-deadline S seconds from a request's first byte to its whole body [30]\n"
        "      --body-budget-kb KB  request bytes being received over all connections; the\n"
        "                       connection holding the most gets 503 past it\n"
        "                       [2 x (4 x max-body-kb + 4 MiB)]\n"
        "    Routes: POST /generate, /generate_stream (TGI), /v1/completions,\n"
        "    /v1/chat/completions (OpenAI, stream: true = SSE), /apply-template (the chat\n"
        "    prompt as {\"prompt\": ...}); GET /health (503 while loading), /info, /v1/models,\n"
        "    /metrics.  Fatal errors log `event=fatal`.\n"
        "  init-tiny OUT.gguf [--seed N] [--type T] [--tokenizer spm|bpe] [--dim N]\n"
        "        [--layers N] [--heads N] [--kv-heads N] [--ff N] [--vocab N] [--ctx N] [--tied]\n"
        "        [--qwen2] [--name S] [--chat-template FILE]\n"
        "                       write a deterministic random-weight model (seed 0 = the embedded\n"
        "                       one); T: f32 f16 bf16 q8_0 q4_0 q4_k q5_k q6_k q4_k_m q5_k_m\n"
        "                       (K-quants need --dim and --ff multiples of 256); --qwen2: qwen2\n"
        "                       architecture (Q/K/V biases); FILE becomes its\n"
        "                       tokenizer.chat_template\n"
        "  logits [--model F] --tokens 1,2,3 [--threads N]\n"
        "                       logits of every position, one row each (%.9g)\n"
        "  generate [--model F] --tokens 1,2,3 --max-new-tokens N [--ignore-eos] [--threads N]\n"
        "                       greedy token ids\n"
        "  tokenize [--model F] --text T     token ids of T, without BOS\n"
        "  chat-template [--model F] [--template FILE] --messages JSON|@FILE\n"
        "        [--no-generation-prompt] [--tools JSON]\n"
        "                       print the chat prompt the server builds for these messages\n"
        "                       (the model's tokenizer.chat_template, or FILE, else ChatML)\n"
        "  membw [--threads N] [--mb N]      memory read bandwidth (GB/s), for the roofline\n"
        "Environment: SGPU_MODEL_PATH, SGPU_MODEL_PORT (as above), SGPU_LOG_LEVEL\n"
        "(debug|info|warn|error).\n",
        out);
}

static void usage(void)
{
    usage_to(stderr);
}

static int parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
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
    struct tiny_opts o;
    tiny_default_opts(&o);
    const char *outp = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
        if (strcmp(a, "--tied") == 0) {
            o.tied = true;
        } else if (strcmp(a, "--qwen2") == 0) {
            o.qwen2 = true;
        } else if (a[0] == '-' && a[1] == '-' && !v) {
            fprintf(stderr, "init-tiny: %s needs a value\n", a);
            return 2;
        } else if (strcmp(a, "--seed") == 0) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (errno || *end || end == v) return fprintf(stderr, "bad --seed\n"), 2;
            o.seed = s;
            i++;
        } else if (strcmp(a, "--type") == 0) {
            if (tiny_parse_type(v, &o))
                return fprintf(stderr, "bad --type (f32 f16 bf16 q8_0 q4_0 q4_k q5_k q6_k "
                                       "q4_k_m q5_k_m)\n"),
                       2;
            i++;
        } else if (strcmp(a, "--tokenizer") == 0) {
            if (!strcmp(v, "spm"))
                o.tok = TOK_SPM;
            else if (!strcmp(v, "bpe"))
                o.tok = TOK_BPE;
            else
                return fprintf(stderr, "bad --tokenizer\n"), 2;
            i++;
        } else if (strcmp(a, "--name") == 0) {
            o.name = v;
            i++;
        } else if (strcmp(a, "--chat-template") == 0) {
            size_t len = 0;
            free(*tmplp);
            *tmplp = read_small_file(v, &len);
            if (!*tmplp || strlen(*tmplp) != len) {
                fprintf(stderr, "init-tiny: cannot read --chat-template %s\n", v);
                return 2;
            }
            o.chat_template = *tmplp;
            i++;
        } else if (a[0] == '-') {
            int *dst = !strcmp(a, "--dim")        ? &o.n_embd
                       : !strcmp(a, "--layers")   ? &o.n_layer
                       : !strcmp(a, "--heads")    ? &o.n_head
                       : !strcmp(a, "--kv-heads") ? &o.n_head_kv
                       : !strcmp(a, "--ff")       ? &o.n_ff
                       : !strcmp(a, "--vocab")    ? &o.vocab_size
                       : !strcmp(a, "--ctx")      ? &o.n_ctx
                                                  : NULL;
            if (!dst || parse_int(v, 1, 1 << 20, &n)) {
                fprintf(stderr, "init-tiny: bad option %s %s\n", a, v);
                return 2;
            }
            *dst = (int)n;
            i++;
        } else if (!outp) {
            outp = a;
        } else {
            usage();
            return 2;
        }
    }
    if (!outp) {
        usage();
        return 2;
    }
    struct sbuf b = SBUF_INIT;
    if (tiny_build(&o, &b)) {
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

struct tool_opts {
    const char *model, *tokens, *text;
    long max_new, threads;
    bool ignore_eos;
};

static int parse_tool(int argc, char **argv, struct tool_opts *o)
{
    memset(o, 0, sizeof *o);
    o->max_new = 16;
    o->threads = 1;
    o->model = getenv("SGPU_MODEL_PATH");
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--ignore-eos")) {
            o->ignore_eos = true;
            continue;
        }
        if (!v) goto bad;
        if (!strcmp(a, "--model"))
            o->model = v;
        else if (!strcmp(a, "--tokens"))
            o->tokens = v;
        else if (!strcmp(a, "--text"))
            o->text = v;
        else if (!strcmp(a, "--max-new-tokens")) {
            if (parse_int(v, 0, 1 << 24, &o->max_new)) goto bad;
        } else if (!strcmp(a, "--threads")) {
            if (parse_int(v, 1, 256, &o->threads)) goto bad;
        } else
            goto bad;
        i++;
    }
    return 0;
bad:
    usage();
    return -1;
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
    struct llama_ctx *c = llama_ctx_new(m, (int)o.threads);
    if (llama_kv_init(&kv, m, cap > 0 ? cap : 1)) abort();
    float *lg = malloc((size_t)nv * (gen ? 1 : toks.n) * sizeof(float));
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
    long threads = 2, mb = 1024;
    for (int i = 0; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads") && !parse_int(argv[i + 1], 1, 64, &threads)) continue;
        if (!strcmp(argv[i], "--mb") && !parse_int(argv[i + 1], 64, 1 << 16, &mb)) continue;
        usage();
        return 2;
    }
    size_t n = (size_t)mb << 17; /* 8-byte words */
    uint64_t *p = malloc(n * sizeof *p);
    if (!p) return 1;
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
    const char *model = getenv("SGPU_MODEL_PATH"), *tpath = NULL, *msgs = NULL, *tools = NULL;
    bool gen = true;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--no-generation-prompt")) {
            gen = false;
            continue;
        }
        if (!v) goto bad;
        if (!strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "--template"))
            tpath = v;
        else if (!strcmp(a, "--messages"))
            msgs = v;
        else if (!strcmp(a, "--tools"))
            tools = v;
        else
            goto bad;
        i++;
    }
    if (!msgs) goto bad;
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
bad:
    usage();
    return 2;
}

int main(int argc, char **argv)
{
    log_init("model", LOG_INFO);
    if (argc < 2) return serve_main(0, NULL);
    const char *cmd = argv[1];
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage_to(stdout);
        return 0;
    }
    if (argc > 2 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
        usage_to(stdout); /* `sgpu-model serve --help` and the like */
        return 0;
    }
    if (!strcmp(cmd, "serve")) return serve_main(argc - 2, argv + 2);
    if (!strcmp(cmd, "init-tiny")) return cmd_init_tiny(argc - 2, argv + 2);
    if (!strcmp(cmd, "logits")) return cmd_logits_generate(argc - 2, argv + 2, false);
    if (!strcmp(cmd, "generate")) return cmd_logits_generate(argc - 2, argv + 2, true);
    if (!strcmp(cmd, "tokenize")) return cmd_tokenize(argc - 2, argv + 2);
    if (!strcmp(cmd, "membw")) return cmd_membw(argc - 2, argv + 2);
    if (!strcmp(cmd, "chat-template")) return cmd_chat_template(argc - 2, argv + 2);
    if (cmd[0] == '-') return serve_main(argc - 1, argv + 1);
    usage();
    return 2;
}
