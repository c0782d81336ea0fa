/* GET /api/v0/keyinfo/: which endpoints may the caller's key route to?
 *
 * For sgpu-gateway's GET /v1/models: a client holds one endpoint's api_key and asks which
 * models (endpoints) it may call.  Key from `Authorization: Bearer KEY` only (never from the
 * query string: it would end up in access logs).  Answer:
 *   200 {"success": true, "admin": false, "endpoints": [{"id": 3, "endpoint_name": "demo",
 *        "created_at": 1764750000.0}]}
 * The admin key lists every endpoint ("admin": true); an endpoint key lists its own endpoint;
 * endpoints being deleted are left out.  Unknown or missing key: 401 auth_error.  Keys are
 * compared in constant time (per key), and every endpoint's key is compared, so the time does
 * not depend on which one matched. */
#include <stdio.h>
#include <string.h>

#include "api.h"
#include "engine.h"
#include "httputil.h"
#include "keyinfo.h"
#include "pyjson.h"

static void reply_error(struct evhttp_request *req, int status, const char *code, const char *msg)
{
    http_reply_json_error(req, status, code, "%s", msg);
}

void keyinfo_handle(struct engine *e, struct evhttp_request *req)
{
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    if (m != EVHTTP_REQ_GET && m != EVHTTP_REQ_HEAD) {
        reply_error(req, 405, "method_not_allowed", "use GET");
        return;
    }
    const char *k = api_bearer_key(req);
    size_t kn = k ? strlen(k) : 0;
    bool admin = api_key_eq(k, kn, e->admin_key);
    struct endpoint *mine = NULL;
    for (struct endpoint *ep = e->endpoints; ep; ep = ep->next)
        if (api_key_eq(k, kn, ep->api_key) && !mine) mine = ep;
    if (!admin && !mine) {
        reply_error(req, 401, "auth_error", "Invalid user key");
        return;
    }
    struct sbuf b = SBUF_INIT;
    sbuf_printf(&b, "{\"success\": true, \"admin\": %s, \"endpoints\": [",
                admin ? "true" : "false");
    bool first = true;
    for (struct endpoint *ep = e->endpoints; ep; ep = ep->next) {
        if (ep->deleting || (!admin && ep != mine)) continue;
        char num[40];
        pyj_format_float(ep->created_at, num, sizeof num);
        sbuf_printf(&b, "%s{\"id\": %lld, \"endpoint_name\": ", first ? "" : ", ",
                    (long long)ep->id);
        pyj_write_string(&b, ep->name, strlen(ep->name));
        sbuf_printf(&b, ", \"created_at\": %s}", num);
        first = false;
    }
    sbuf_puts(&b, "]}");
    http_reply_json(req, 200, b.data, b.len);
    sbuf_free(&b);
}
