/* pubkey: the engine's public key, from PUBKEY_FILE or fetched from PUBKEY_URL on the loop
 * (retries with back-off, periodic refresh).  State private in `struct pubkey`. */
#ifndef SGPU_WORKER_PUBKEY_H
#define SGPU_WORKER_PUBKEY_H

#include "rsa.h"
#include "worker.h"

int pubkey_init(struct worker *w); /* sets w->pubkey; -1 on an unusable PUBKEY_URL */
void pubkey_free(struct worker *w);
/* The key held now, or NULL (also for p == NULL). */
struct rsa_pubkey *pubkey_key(const struct pubkey *p);
/* SHA-256 hex of the key held ("" when none). */
const char *pubkey_fingerprint(const struct pubkey *p);

#endif
