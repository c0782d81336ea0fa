/* POST /pyworker/update (docs/protocol.md §3.12): the engine asks the worker
 * to update itself on its next start.
 *
 * Authorization: "Bearer <MASTER_TOKEN>" or the raw token.  An empty or unset
 * MASTER_TOKEN disables the route: every call gets 401 (B19; PyWorker
 * compared against "" and so let an empty header through).  The comparison
 * is constant-time: both sides are hashed with SHA-256 and the digests
 * compared with CRYPTO_memcmp, so neither the content nor the length of the
 * token leaks through timing.
 *
 * Success writes an empty SGPU_UPDATE_FLAG_FILE (default /.force_update, the
 * flag start_server.sh consumes) -> 200 {"ok": true}; a write failure ->
 * 500 {"error": "failed to write file: <strerror>"}.  Writing one empty local
 * file is the only blocking call, as in PyWorker. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <event2/keyvalq_struct.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "httputil.h"
#include "log.h"
#include "reply.h"
#include "update.h"

static const char JSON_CT[] = "application/json; charset=utf-8";

static bool token_ok(const char *want, const char *hdr)
{
    if (!want[0] || !hdr) return false; /* B19: no token configured = disabled */
    while (*hdr == ' ' || *hdr == '\t')
        hdr++;
    if (strncmp(hdr, "Bearer ", 7) == 0) hdr += 7;
    size_t n = strlen(hdr);
    while (n && (hdr[n - 1] == ' ' || hdr[n - 1] == '\t'))
        n--;
    unsigned char a[SHA256_DIGEST_LENGTH], b[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)want, strlen(want), a);
    SHA256((const unsigned char *)hdr, n, b);
    return CRYPTO_memcmp(a, b, sizeof a) == 0;
}

void update_handle(struct worker *w, struct evhttp_request *req)
{
    const char *hdr = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (!token_ok(w->cfg.master_token, hdr)) {
        log_warn("update_unauthorized", "token_configured=%d", w->cfg.master_token[0] != '\0');
        const char *b = "{\"error\": \"unauthorized\"}";
        reply_json(req, 401, JSON_CT, b, strlen(b));
        return;
    }
    int fd = open(w->cfg.update_flag_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || close(fd) != 0) {
        int e = errno;
        log_error("update_flag_failed", "path=%s err=\"%s\"", w->cfg.update_flag_file, strerror(e));
        struct sbuf msg = SBUF_INIT, b = SBUF_INIT;
        sbuf_printf(&msg, "failed to write file: %s", strerror(e));
        sbuf_puts(&b, "{\"error\": ");
        pyj_write_string(&b, msg.data, msg.len);
        sbuf_putc(&b, '}');
        reply_json(req, 500, JSON_CT, b.data, b.len);
        sbuf_free(&msg);
        sbuf_free(&b);
        return;
    }
    log_info("update_requested", "path=%s", w->cfg.update_flag_file);
    const char *b = "{\"ok\": true}";
    reply_json(req, 200, JSON_CT, b, strlen(b));
}
