/* Workload rules: how much work a request payload asks for, in the units a worker's perf is
 * measured in (docs/protocol.md §5.5).  One implementation, used by the worker to account its
 * requests and by the gateway to ask the engine for a grant of the same cost, so the two never
 * disagree.  Every result is finite and >= 0; callers cap it to their own maximum. */
#ifndef SGPU_WORKLOAD_H
#define SGPU_WORKLOAD_H

#include <stdbool.h>

#include "pyjson.h"

/* *out = v when v is a finite number > 0; false (and *out untouched) otherwise. */
bool workload_positive(const struct pyj_value *v, double *out);

/* TGI: parameters.max_new_tokens, else 256 (TGI's own default answer length bound). */
double workload_tgi(const struct pyj_value *payload);

/* OpenAI: max_tokens or max_completion_tokens; without either, an estimate of the prompt
 * (characters of prompt/messages/input text / 4) + a 16-token answer, never 0 (PyWorker's
 * 0 for a missing max_tokens is its bug B26). */
double workload_openai(const struct pyj_value *payload);

/* ComfyUI-style image workflows: 512x512 tiles x 175 + 85, scaled by steps / 20, with the first
 * width/height/steps found anywhere in the payload (defaults 512, 512, 20). */
double workload_comfy(const struct pyj_value *payload);

#endif
