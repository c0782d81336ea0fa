/* RSA keys and RSASSA-PKCS1-v1_5 / SHA-256 signatures (OpenSSL 3 libcrypto).
 *
 * Verification accepts both DigestInfo encodings (with and without the NULL
 * AlgorithmIdentifier parameter), as pycryptodome does, and requires the
 * signature length to equal the modulus length.  Keys are parsed once; a
 * template digest context makes each verification one copy + one digest +
 * one public-key operation (docs/design.md pitfall 14). */
#ifndef SGPU_RSA_H
#define SGPU_RSA_H

#include <stddef.h>
#include <stdint.h>

#include "sbuf.h"

struct rsa_pubkey;
struct rsa_privkey;

/* Accepts PEM "PUBLIC KEY" (SPKI), PEM "RSA PUBLIC KEY" (PKCS#1) and DER of
 * either.  0 or -1 (not an RSA public key).  *out is freed with rsa_pubkey_free. */
int rsa_pubkey_load(const void *data, size_t len, struct rsa_pubkey **out);
void rsa_pubkey_free(struct rsa_pubkey *k);
size_t rsa_pubkey_size(const struct rsa_pubkey *k); /* modulus bytes */
/* 0 = valid signature over msg, -1 otherwise. Thread-compatible (one key per thread). */
int rsa_verify_sha256(struct rsa_pubkey *k, const void *msg, size_t len, const uint8_t *sig,
                      size_t siglen);
/* SHA-256 fingerprint (hex, 64 chars + NUL) of the DER SPKI, for logs. */
void rsa_pubkey_fingerprint(const struct rsa_pubkey *k, char out[65]);

int rsa_privkey_generate(int bits, struct rsa_privkey **out);
/* PEM (PKCS#8 or PKCS#1) file. 0 or -1. */
int rsa_privkey_load_file(const char *path, struct rsa_privkey **out);
/* Write PKCS#8 PEM with mode 0600 (created atomically: temp file + rename). */
int rsa_privkey_save_file(const struct rsa_privkey *k, const char *path);
void rsa_privkey_free(struct rsa_privkey *k);
/* Public half as PEM SPKI ("-----BEGIN PUBLIC KEY-----"), appended to out. */
int rsa_privkey_public_pem(const struct rsa_privkey *k, struct sbuf *out);
/* Sign; sig must hold rsa_privkey_size(k) bytes.  0 or -1. */
size_t rsa_privkey_size(const struct rsa_privkey *k);
int rsa_sign_sha256(struct rsa_privkey *k, const void *msg, size_t len, uint8_t *sig,
                    size_t *siglen);

#endif
