/* handlers: the worker's route table (docs/worker.md "Backends").  One `struct handler` per
 * worker path, from a backend preset (tgi, openai, comfyui, generic) or the JSON config file
 * (SGPU_CONFIG); each names its upstream path, workload rule, payload check, streaming and
 * whether requests run in parallel or through a serial FIFO. */
#ifndef SGPU_WORKER_HANDLERS_H
#define SGPU_WORKER_HANDLERS_H

#include <stdbool.h>

#include "pyjson.h"
#include "worker.h"

enum wl_kind { WL_CONST, WL_FIELD, WL_TGI, WL_OPENAI, WL_COMFY };
enum payload_check { PC_OBJECT, PC_TGI, PC_ANY };

enum bench_preset { BENCH_CUSTOM = 0, BENCH_TGI, BENCH_OPENAI };
/* The preset LM benchmark shape: filler words of at most 7 ASCII letters (<= 8 tokens each with
 * the space, even for a byte-level vocabulary) and the generation length. */
#define BENCH_WORDS 250
#define BENCH_TGI_NEW 256
#define BENCH_OPENAI_NEW 500

struct handler {
    char route[256];    /* worker path; "*" = any POST path (generic) */
    char upstream[256]; /* model-server path; "" = same as the request path */
    enum wl_kind wl;
    char wl_field[128]; /* dotted path for WL_FIELD */
    double wl_default;  /* constant, or fallback when the field is absent */
    bool parallel;
    double max_queue_time; /* seconds; < 0 = no 429 estimate */
    enum payload_check check;
    int stream;          /* -1 auto (by upstream Content-Type / chunking), 0 never, 1 always */
    bool unwrap_input;   /* forward payload["input"] when it is an object (openai worker) */
    char *bench_payload; /* JSON text, or NULL */
    int bench_preset;    /* BENCH_CUSTOM: bench_payload as given; else the worker's own LM
                          * payload, re-generated at the size the model accepts */
    /* serial FIFO state (request.c owns it; status.c reads it) */
    struct wreq_list queue;
    int nqueued;
    int running;
};

int handlers_init(struct worker *w);
void handlers_free(struct worker *w);
/* The handler of a worker path (else the generic "*" one, else NULL). */
struct handler *handlers_find(struct worker *w, const char *path, bool *known_path);
/* Workload of a parsed payload; never negative or NaN. */
double handler_workload(const struct handler *h, const struct pyj_value *payload);
/* The preset payload of h at this shape (malloc'd), NULL for a custom payload. */
char *handlers_bench_payload(const struct handler *h, int words, int max_new);

#endif
