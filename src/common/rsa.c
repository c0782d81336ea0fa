/* RSA keys and PKCS#1 v1.5 / SHA-256 signatures with OpenSSL 3 EVP; see rsa.h.
 *
 * Verification = one EVP_PKEY_verify_recover (public-key operation that also
 * checks the 00 01 FF.. 00 type-1 padding) on a context initialised once per
 * key, then a compare of the recovered DigestInfo with both DER encodings of
 * SHA-256(msg): with the NULL AlgorithmIdentifier parameter (RFC 8017) and
 * without it.  pycryptodome's pkcs1_15.verify accepts exactly these two full
 * encodings, and OpenSSL's EVP_DigestVerify accepts only the first. */
#include "rsa.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

/* DigestInfo prefixes for SHA-256, followed by the 32-byte hash. */
static const uint8_t di_null[19] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                    0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};
static const uint8_t di_nonull[17] = {0x30, 0x2f, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48,
                                      0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x04, 0x20};

struct rsa_pubkey {
    EVP_PKEY *pkey;
    EVP_PKEY_CTX *rctx; /* verify_recover, RSA_PKCS1_PADDING, reused per call */
    EVP_MD *sha256;     /* fetched once */
    size_t size;        /* modulus bytes */
    uint8_t *rec;       /* recovered-data buffer, size bytes */
};

struct rsa_privkey {
    EVP_PKEY *pkey;
};

void rsa_pubkey_free(struct rsa_pubkey *k)
{
    if (!k) return;
    EVP_PKEY_CTX_free(k->rctx);
    EVP_MD_free(k->sha256);
    EVP_PKEY_free(k->pkey);
    free(k->rec);
    free(k);
}

static EVP_PKEY *decode_pub(const void *data, size_t len)
{
    EVP_PKEY *pkey = NULL;
    /* Input type NULL: PEM or DER; structure NULL: SubjectPublicKeyInfo or
     * the type-specific PKCS#1 RSAPublicKey. */
    OSSL_DECODER_CTX *dctx =
        OSSL_DECODER_CTX_new_for_pkey(&pkey, NULL, NULL, "RSA", EVP_PKEY_PUBLIC_KEY, NULL, NULL);
    if (!dctx) return NULL;
    const unsigned char *p = data;
    size_t n = len;
    if (!OSSL_DECODER_from_data(dctx, &p, &n)) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
    OSSL_DECODER_CTX_free(dctx);
    return pkey;
}

int rsa_pubkey_load(const void *data, size_t len, struct rsa_pubkey **out)
{
    *out = NULL;
    if (!data || len == 0) return -1;
    EVP_PKEY *pkey = decode_pub(data, len);
    if (!pkey || !EVP_PKEY_is_a(pkey, "RSA")) goto fail_key;
    struct rsa_pubkey *k = calloc(1, sizeof *k);
    if (!k) goto fail_key;
    k->pkey = pkey;
    k->size = (size_t)EVP_PKEY_get_size(pkey);
    k->rec = malloc(k->size ? k->size : 1);
    k->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    k->rctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (!k->rec || !k->sha256 || !k->rctx || k->size < 64 ||
        EVP_PKEY_verify_recover_init(k->rctx) <= 0 ||
        EVP_PKEY_CTX_set_rsa_padding(k->rctx, RSA_PKCS1_PADDING) <= 0) {
        rsa_pubkey_free(k);
        ERR_clear_error();
        return -1;
    }
    *out = k;
    return 0;
fail_key:
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return -1;
}

size_t rsa_pubkey_size(const struct rsa_pubkey *k)
{
    return k->size;
}

int rsa_verify_sha256(struct rsa_pubkey *k, const void *msg, size_t len, const uint8_t *sig,
                      size_t siglen)
{
    if (!k || !sig || siglen != k->size) return -1;
    size_t rlen = k->size;
    if (EVP_PKEY_verify_recover(k->rctx, k->rec, &rlen, sig, siglen) <= 0) {
        ERR_clear_error();
        return -1;
    }
    uint8_t h[32];
    unsigned hl = 0;
    if (!EVP_Digest(msg, len, h, &hl, k->sha256, NULL) || hl != 32) return -1;
    /* Constant-time-ish compare is not needed: the expected value is public. */
    if (rlen == sizeof di_null + 32 && memcmp(k->rec, di_null, sizeof di_null) == 0 &&
        memcmp(k->rec + sizeof di_null, h, 32) == 0)
        return 0;
    if (rlen == sizeof di_nonull + 32 && memcmp(k->rec, di_nonull, sizeof di_nonull) == 0 &&
        memcmp(k->rec + sizeof di_nonull, h, 32) == 0)
        return 0;
    return -1;
}

static void hex32(const uint8_t h[32], char out[65])
{
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hx[h[i] >> 4];
        out[2 * i + 1] = hx[h[i] & 15];
    }
    out[64] = '\0';
}

void rsa_pubkey_fingerprint(const struct rsa_pubkey *k, char out[65])
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(k->pkey, &der);
    uint8_t h[32];
    unsigned hl = 0;
    if (n <= 0 || !EVP_Digest(der, (size_t)n, h, &hl, EVP_sha256(), NULL)) {
        memset(out, '0', 64);
        out[64] = '\0';
    } else {
        hex32(h, out);
    }
    OPENSSL_free(der);
}

int rsa_privkey_generate(int bits, struct rsa_privkey **out)
{
    *out = NULL;
    if (bits <= 0) bits = 2048;
    EVP_PKEY *pkey = EVP_RSA_gen((unsigned)bits);
    if (!pkey) {
        ERR_clear_error();
        return -1;
    }
    struct rsa_privkey *k = calloc(1, sizeof *k);
    if (!k) {
        EVP_PKEY_free(pkey);
        return -1;
    }
    k->pkey = pkey;
    *out = k;
    return 0;
}

int rsa_privkey_load_file(const char *path, struct rsa_privkey **out)
{
    *out = NULL;
    BIO *b = BIO_new_file(path, "rb");
    if (!b) {
        ERR_clear_error();
        return -1;
    }
    EVP_PKEY *pkey = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    if (!pkey || !EVP_PKEY_is_a(pkey, "RSA")) {
        EVP_PKEY_free(pkey);
        ERR_clear_error();
        return -1;
    }
    struct rsa_privkey *k = calloc(1, sizeof *k);
    if (!k) {
        EVP_PKEY_free(pkey);
        return -1;
    }
    k->pkey = pkey;
    *out = k;
    return 0;
}

int rsa_privkey_save_file(const struct rsa_privkey *k, const char *path)
{
    size_t pl = strlen(path);
    char *tmp = malloc(pl + 16);
    if (!tmp) return -1;
    snprintf(tmp, pl + 16, "%s.tmpXXXXXX", path);
    int fd = mkstemp(tmp); /* O_EXCL, mode 0600 */
    if (fd < 0) {
        free(tmp);
        return -1;
    }
    int rc = -1;
    BIO *b = BIO_new_fd(fd, BIO_NOCLOSE);
    if (b && fchmod(fd, 0600) == 0 &&
        PEM_write_bio_PrivateKey(b, k->pkey, NULL, NULL, 0, NULL, NULL) == 1 && BIO_flush(b) == 1 &&
        fsync(fd) == 0)
        rc = 0;
    BIO_free(b);
    if (close(fd) != 0) rc = -1;
    if (rc == 0 && rename(tmp, path) != 0) rc = -1;
    if (rc != 0) unlink(tmp);
    free(tmp);
    ERR_clear_error();
    return rc;
}

void rsa_privkey_free(struct rsa_privkey *k)
{
    if (!k) return;
    EVP_PKEY_free(k->pkey);
    free(k);
}

int rsa_privkey_public_pem(const struct rsa_privkey *k, struct sbuf *out)
{
    BIO *b = BIO_new(BIO_s_mem());
    if (!b) return -1;
    int rc = -1;
    if (PEM_write_bio_PUBKEY(b, k->pkey) == 1) {
        char *p;
        long n = BIO_get_mem_data(b, &p);
        if (n > 0) {
            sbuf_append(out, p, (size_t)n);
            rc = 0;
        }
    }
    BIO_free(b);
    ERR_clear_error();
    return rc;
}

size_t rsa_privkey_size(const struct rsa_privkey *k)
{
    return (size_t)EVP_PKEY_get_size(k->pkey);
}

int rsa_sign_sha256(struct rsa_privkey *k, const void *msg, size_t len, uint8_t *sig,
                    size_t *siglen)
{
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    size_t n = rsa_privkey_size(k);
    int rc = -1;
    EVP_PKEY_CTX *pctx = NULL;
    if (m && EVP_DigestSignInit_ex(m, &pctx, "SHA256", NULL, NULL, k->pkey, NULL) == 1 &&
        EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) > 0 &&
        EVP_DigestSign(m, sig, &n, msg, len) == 1) {
        *siglen = n;
        rc = 0;
    }
    EVP_MD_CTX_free(m);
    ERR_clear_error();
    return rc;
}
