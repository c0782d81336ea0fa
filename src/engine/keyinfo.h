/* GET /api/v0/keyinfo/: which endpoints may the caller's key route to (sgpu-gateway's
 * GET /v1/models).  The key from `Authorization: Bearer KEY` only. */
#ifndef SGPU_ENGINE_KEYINFO_H
#define SGPU_ENGINE_KEYINFO_H

#include <event2/http.h>

struct engine;

void keyinfo_handle(struct engine *e, struct evhttp_request *req);

#endif
