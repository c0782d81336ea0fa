/* auth: grant verification (docs/protocol.md §3.4-3.7): the signed message per scheme, RSA
 * verify against the engine key (pubkey.h), the replay guard and the url-scheme cache, all in a
 * private `struct auth_state`. */
#ifndef SGPU_WORKER_AUTH_H
#define SGPU_WORKER_AUTH_H

#include <event2/http.h>

#include "pyjson.h"
#include "sbuf.h"
#include "worker.h"

struct auth_state *auth_new(const struct wconfig *c);
void auth_free(struct auth_state *a);
/* The engine key changed: verified url-scheme grants are forgotten. */
void auth_key_changed(struct auth_state *a);
/* 0 = accepted; AUTH_INVALID = rejected (401, empty body, reason in *why); AUTH_WRONG_URL /
 * AUTH_WRONG_ENDPOINT = a grant for another worker (answer with auth_reply_wrong). */
enum { AUTH_INVALID = -1, AUTH_WRONG_URL = -2, AUTH_WRONG_ENDPOINT = -3 };
int auth_check(struct worker *w, const struct pyj_value *auth_data, const char **why);
/* 401 JSON that says the grant is for another worker / endpoint; counts it in /metrics. */
void auth_reply_wrong(struct worker *w, struct evhttp_request *req, int rc,
                      const struct pyj_value *auth_data);
/* Signed message bytes for the scheme (used by tests and logs). */
void auth_message(enum auth_scheme s, const struct pyj_value *auth_data, struct sbuf *out);

#endif
