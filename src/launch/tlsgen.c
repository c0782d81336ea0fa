/* TLS material for the worker's listener (USE_SSL=true): an RSA-2048 key and
 * either a self-signed certificate or a CSR to be signed by a signing service
 * (what start_server.sh does with `openssl req` and `curl .../sign_cert/`,
 * docs/protocol.md §7.2, without a shell or the openssl binary). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "launch.h"

static void ssl_msg(char *msg, size_t n, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "";
    if (e) ERR_error_string_n(e, buf, sizeof buf);
    snprintf(msg, n, "%s%s%s", what, e ? ": " : "", buf);
    ERR_clear_error();
}

static EVP_PKEY *gen_key(char *msg, size_t n)
{
    EVP_PKEY *k = EVP_RSA_gen(2048);
    if (!k) ssl_msg(msg, n, "RSA key generation failed");
    return k;
}

/* Writes the private key (PKCS#8 PEM) with mode 0600 via temp file + rename. */
static int write_key(EVP_PKEY *k, const char *path, char *msg, size_t n)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(msg, n, "cannot write %s: %s", tmp, strerror(errno));
        return -1;
    }
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        unlink(tmp);
        snprintf(msg, n, "cannot write %s: %s", tmp, strerror(errno));
        return -1;
    }
    int ok = PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        snprintf(msg, n, "cannot write the key %s", path);
        return -1;
    }
    return 0;
}

static int add_name(X509_NAME *nm, const char *field, const char *val)
{
    return X509_NAME_add_entry_by_txt(nm, field, MBSTRING_ASC, (const unsigned char *)val, -1, -1,
                                      0);
}

int tls_make_self_signed(const char *key_path, const char *cert_path, const char *cn,
                         const char *ip, char *msg, size_t msglen)
{
    int rc = -1;
    X509 *x = NULL;
    X509_EXTENSION *ext = NULL;
    FILE *f = NULL;
    EVP_PKEY *k = gen_key(msg, msglen);
    if (!k) return -1;
    if (write_key(k, key_path, msg, msglen) != 0) goto out;
    x = X509_new();
    if (!x) goto ssl_err;
    X509_set_version(x, 2);
    unsigned char serial[16];
    FILE *ur = fopen("/dev/urandom", "rb");
    if (!ur || fread(serial, 1, sizeof serial, ur) != sizeof serial) {
        if (ur) fclose(ur);
        snprintf(msg, msglen, "cannot read /dev/urandom");
        goto out;
    }
    fclose(ur);
    serial[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(serial, sizeof serial, NULL);
    if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x))) {
        BN_free(bn);
        goto ssl_err;
    }
    BN_free(bn);
    X509_gmtime_adj(X509_getm_notBefore(x), -300);
    X509_gmtime_adj(X509_getm_notAfter(x), 365L * 24 * 3600);
    X509_set_pubkey(x, k);
    X509_NAME *nm = X509_get_subject_name(x);
    if (!add_name(nm, "O", "sgpu") || !add_name(nm, "CN", cn)) goto ssl_err;
    X509_set_issuer_name(x, nm);
    char san[512];
    if (ip && *ip)
        snprintf(san, sizeof san, "IP:127.0.0.1,DNS:localhost,%s:%s",
                 strspn(ip, "0123456789.:abcdefABCDEF") == strlen(ip) ? "IP" : "DNS", ip);
    else
        snprintf(san, sizeof san, "IP:127.0.0.1,DNS:localhost");
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
    if (!ext || !X509_add_ext(x, ext, -1)) goto ssl_err;
    if (!X509_sign(x, k, EVP_sha256())) goto ssl_err;
    f = fopen(cert_path, "w");
    if (!f) {
        snprintf(msg, msglen, "cannot write %s: %s", cert_path, strerror(errno));
        goto out;
    }
    if (!PEM_write_X509(f, x)) goto ssl_err;
    rc = 0;
    goto out;
ssl_err:
    ssl_msg(msg, msglen, "certificate creation failed");
out:
    if (f && fclose(f) != 0 && rc == 0) {
        snprintf(msg, msglen, "cannot write %s", cert_path);
        rc = -1;
    }
    X509_EXTENSION_free(ext);
    X509_free(x);
    EVP_PKEY_free(k);
    return rc;
}

int tls_make_csr(const char *key_path, const char *cn, struct sbuf *csr, char *msg, size_t msglen)
{
    int rc = -1;
    X509_REQ *req = NULL;
    BIO *mem = NULL;
    EVP_PKEY *k = gen_key(msg, msglen);
    if (!k) return -1;
    if (write_key(k, key_path, msg, msglen) != 0) goto out;
    req = X509_REQ_new();
    if (!req) goto ssl_err;
    X509_REQ_set_version(req, 0);
    X509_NAME *nm = X509_REQ_get_subject_name(req);
    if (!add_name(nm, "C", "US") || !add_name(nm, "ST", "CA") || !add_name(nm, "CN", cn))
        goto ssl_err;
    X509_REQ_set_pubkey(req, k);
    if (!X509_REQ_sign(req, k, EVP_sha256())) goto ssl_err;
    mem = BIO_new(BIO_s_mem());
    if (!mem || !PEM_write_bio_X509_REQ(mem, req)) goto ssl_err;
    char *p;
    long len = BIO_get_mem_data(mem, &p);
    sbuf_append(csr, p, (size_t)len);
    rc = 0;
    goto out;
ssl_err:
    ssl_msg(msg, msglen, "CSR creation failed");
out:
    BIO_free(mem);
    X509_REQ_free(req);
    EVP_PKEY_free(k);
    return rc;
}

bool tls_is_cert(const char *pem, size_t len)
{
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    if (!b) return false;
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    ERR_clear_error();
    if (!x) return false;
    X509_free(x);
    return true;
}
