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
 *   sgpu-model membw [--threads N] [--mb N]     (memory read bandwidth, GB/s; for the roofline)
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "httputil.h"
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
        "usage: sgpu-model [serve|init-tiny|logits|generate|tokenize|membw|help] [options]\n"
        "A GGUF model server (architectures llama, qwen2; tensor types F32, F16, BF16, Q8_0,\n"
        "Q4_0, Q4_K, Q5_K, Q6_K in any mix) with continuous batching and TGI + OpenAI HTTP\n"
        "APIs.  Without a subcommand (or with only flags) it serves.\n"
        "\n"
        "  serve [--model F.gguf] [--host H] [--port P] [--threads N] [--max-batch N] [--ctx N]\n"
        "        [--max-queue N] [--kv-mem MB] [--max-body-kb KB] [--load-log-msg TEXT]\n"
        "      --model F        GGUF file (env SGPU_MODEL_PATH; default: the embedded tiny\n"
        "                       random-weight model, whose text is noise)\n"
        "      --host H         listen address [127.0.0.1]\n"
        "      --port P         listen port, 0 = ephemeral (env SGPU_MODEL_PORT) [5001]\n"
        "      --threads N      compute threads [online CPUs]\n"
        "      --max-batch N    sequences decoded together per step [16]\n"
        "      --ctx N          positions per sequence [the model's context_length]\n"
        "      --max-queue N    requests waiting for a batch slot before 429 [64]\n"
        "      --kv-mem MB      KV cache budget across sequences [1024]\n"
        "      --max-body-kb KB request body limit, 413 beyond [1024]\n"
        "      --load-log-msg T text added to the one `event=model_loaded` log line\n"
        "    Routes: POST /generate, /generate_stream (TGI), /v1/completions,\n"
        "    /v1/chat/completions (OpenAI, stream: true = SSE); GET /health (503 while\n"
        "    loading), /info, /v1/models, /metrics.  Fatal errors log `event=fatal`.\n"
        "  init-tiny OUT.gguf [--seed N] [--type T] [--tokenizer spm|bpe] [--dim N]\n"
        "        [--layers N] [--heads N] [--kv-heads N] [--ff N] [--vocab N] [--ctx N] [--tied]\n"
        "        [--qwen2] [--name S]   write a deterministic random-weight model (seed 0 = the\n"
        "        embedded one); T: f32 f16 bf16 q8_0 q4_0 q4_k q5_k q6_k q4_k_m q5_k_m (K-quants\n"
        "        need --dim and --ff multiples of 256); --qwen2: qwen2 architecture (Q/K/V "
        "biases)\n"
        "  logits [--model F] --tokens 1,2,3 [--threads N]\n"
        "                       logits of every position, one row each (%.9g)\n"
        "  generate [--model F] --tokens 1,2,3 --max-new-tokens N [--ignore-eos] [--threads N]\n"
        "                       greedy token ids\n"
        "  tokenize [--model F] --text T     token ids of T, without BOS\n"
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

static int cmd_init_tiny(int argc, char **argv)
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
    if (!m) return 1;
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
        double t0 = time_mono();
        for (long k = 0; k < threads; k++) {
            a[k].p = p + n / threads * k;
            a[k].n = n / threads;
            pthread_create(&th[k], NULL, bw_thread, &a[k]);
        }
        for (long k = 0; k < threads; k++) {
            pthread_join(th[k], NULL);
            chk += a[k].sum;
        }
        double gbs = (double)n * 8 / (time_mono() - t0) / 1e9;
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
    struct llama_model *m = open_or_die(o.model);
    if (!m) return 1;
    struct ids ids = {0};
    tok_encode(&m->tok, o.text, strlen(o.text), false, &ids);
    for (size_t i = 0; i < ids.n; i++)
        printf(i ? " %d" : "%d", ids.v[i]);
    printf("\n");
    ids_free(&ids);
    llama_free(m);
    return 0;
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
    if (cmd[0] == '-') return serve_main(argc - 1, argv + 1);
    usage();
    return 2;
}
