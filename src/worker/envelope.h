/* envelope: a request body {"auth_data", "payload", "session_id"} -> its parts, validated
 * with PyWorker's 422 bodies (docs/protocol.md §3.3); large bodies are located with jspan and
 * their payload parsed only after the grant verified (issue 8). */
#ifndef SGPU_WORKER_ENVELOPE_H
#define SGPU_WORKER_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/http.h>

#include "handlers.h"
#include "pyjson.h"
#include "worker.h"

struct envelope {
    struct pyj_value *doc;           /* whole body */
    const struct pyj_value *auth;    /* auth_data object */
    const struct pyj_value *payload; /* payload value */
    const struct pyj_value *session; /* session_id or NULL */
    const char *payload_raw;         /* payload bytes in the body */
    size_t payload_len;
    bool deferred; /* large body: payload not parsed yet (placeholder); see envelope_parse_deferred
                    */
};

/* Parse + validate; on failure replies (422) and returns -1. */
int envelope_parse(struct worker *w, struct handler *h, struct evhttp_request *req,
                   const char *body, size_t len, struct envelope *env);
void envelope_free(struct envelope *env);
/* After the grant verified: parse a deferred payload (replies 422 and returns -1 when it is not
 * JSON).  No-op when nothing was deferred. */
int envelope_parse_deferred(struct evhttp_request *req, struct envelope *env);

#endif
