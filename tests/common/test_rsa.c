/* Unit tests for src/common/rsa: key formats, PKCS#1 v1.5 SHA-256 sign and
 * verify, both DigestInfo encodings, rejects, private key file handling. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/decoder.h>
#include <openssl/encoder.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "assert_ext.h"
#include "rsa.h"

static const char G1_MSG[] = "{\n    \"cost\": 256.0,\n    \"endpoint\": \"my-endpoint\",\n"
                             "    \"reqnum\": 1234,\n    \"url\": \"https://203.0.113.7:41234\"\n}";

struct fx {
    struct rsa_privkey *priv, *other;
    struct sbuf pem;   /* SPKI PEM of priv */
    EVP_PKEY *pub_evp; /* same key via OpenSSL, to make other encodings */
    struct rsa_pubkey *pub;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    if (rsa_privkey_generate(2048, &f->priv) != 0) return -1;
    if (rsa_privkey_generate(0, &f->other) != 0) return -1;
    if (rsa_privkey_public_pem(f->priv, &f->pem) != 0) return -1;
    if (rsa_pubkey_load(f->pem.data, f->pem.len, &f->pub) != 0) return -1;
    const unsigned char *p = (const unsigned char *)f->pem.data;
    size_t n = f->pem.len;
    OSSL_DECODER_CTX *d = OSSL_DECODER_CTX_new_for_pkey(&f->pub_evp, "PEM", NULL, "RSA",
                                                        EVP_PKEY_PUBLIC_KEY, NULL, NULL);
    if (!d || !OSSL_DECODER_from_data(d, &p, &n)) return -1;
    OSSL_DECODER_CTX_free(d);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    rsa_privkey_free(f->priv);
    rsa_privkey_free(f->other);
    rsa_pubkey_free(f->pub);
    EVP_PKEY_free(f->pub_evp);
    sbuf_free(&f->pem);
    free(f);
    return 0;
}

static void sign(struct rsa_privkey *k, const char *msg, size_t n, uint8_t sig[512], size_t *sl)
{
    assert_int_equal(rsa_sign_sha256(k, msg, n, sig, sl), 0);
    assert_int_equal(*sl, rsa_privkey_size(k));
}

static void test_sign_verify(void **state)
{
    struct fx *f = *state;
    uint8_t sig[512];
    size_t sl;
    assert_int_equal(rsa_pubkey_size(f->pub), 256);
    sign(f->priv, G1_MSG, sizeof G1_MSG - 1, sig, &sl);
    assert_int_equal(rsa_verify_sha256(f->pub, G1_MSG, sizeof G1_MSG - 1, sig, sl), 0);
    /* Repeated verifies reuse the cached context. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(rsa_verify_sha256(f->pub, G1_MSG, sizeof G1_MSG - 1, sig, sl), 0);
    /* Tampered message / signature, wrong length. */
    assert_int_equal(rsa_verify_sha256(f->pub, G1_MSG, sizeof G1_MSG - 2, sig, sl), -1);
    char m2[sizeof G1_MSG];
    memcpy(m2, G1_MSG, sizeof m2);
    m2[20] ^= 1;
    assert_int_equal(rsa_verify_sha256(f->pub, m2, sizeof G1_MSG - 1, sig, sl), -1);
    for (size_t pos = 0; pos < sl; pos += 37) {
        sig[pos] ^= 0x10;
        assert_int_equal(rsa_verify_sha256(f->pub, G1_MSG, sizeof G1_MSG - 1, sig, sl), -1);
        sig[pos] ^= 0x10;
    }
    assert_int_equal(rsa_verify_sha256(f->pub, G1_MSG, sizeof G1_MSG - 1, sig, sl - 1), -1);
    uint8_t longer[257] = {0};
    memcpy(longer + 1, sig, sl); /* leading zero byte: value equal, length wrong */
    assert_int_equal(rsa_verify_sha256(f->pub, G1_MSG, sizeof G1_MSG - 1, longer, 257), -1);
    assert_int_equal(rsa_verify_sha256(f->pub, G1_MSG, sizeof G1_MSG - 1, NULL, 0), -1);
    /* Signature >= modulus. */
    uint8_t ff[256];
    memset(ff, 0xFF, sizeof ff);
    assert_int_equal(rsa_verify_sha256(f->pub, G1_MSG, sizeof G1_MSG - 1, ff, 256), -1);
    /* The other key. */
    uint8_t sig2[512];
    size_t sl2;
    sign(f->other, G1_MSG, sizeof G1_MSG - 1, sig2, &sl2);
    assert_int_equal(rsa_verify_sha256(f->pub, G1_MSG, sizeof G1_MSG - 1, sig2, sl2), -1);
    /* Empty message signs and verifies. */
    sign(f->priv, "", 0, sig, &sl);
    assert_int_equal(rsa_verify_sha256(f->pub, "", 0, sig, sl), 0);
}

/* Raw PKCS#1 type-1 signature over arbitrary `t` (a DigestInfo or not),
 * made with the private key through OpenSSL without a digest. */
static size_t raw_sign(struct fx *f, const char *path, const uint8_t *t, size_t tn, uint8_t *sig)
{
    (void)path;
    /* Get an EVP_PKEY for the private key via the PKCS#8 file. */
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    EVP_PKEY *pk = NULL;
    OSSL_DECODER_CTX *d =
        OSSL_DECODER_CTX_new_for_pkey(&pk, "PEM", NULL, "RSA", EVP_PKEY_KEYPAIR, NULL, NULL);
    assert_true(OSSL_DECODER_from_fp(d, fp));
    OSSL_DECODER_CTX_free(d);
    fclose(fp);
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
    size_t sl = 512;
    ASSERT_GT_INT(EVP_PKEY_sign_init(c), 0);
    ASSERT_GT_INT(EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING), 0);
    ASSERT_GT_INT(EVP_PKEY_sign(c, sig, &sl, t, tn), 0);
    EVP_PKEY_CTX_free(c);
    EVP_PKEY_free(pk);
    (void)f;
    return sl;
}

static void test_digestinfo_variants(void **state)
{
    struct fx *f = *state;
    char path[] = "/tmp/sgpu-test-rsa-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_GE_INT(fd, 0);
    close(fd);
    assert_int_equal(rsa_privkey_save_file(f->priv, path), 0);
    uint8_t h[32];
    unsigned hl;
    EVP_Digest(G1_MSG, sizeof G1_MSG - 1, h, &hl, EVP_sha256(), NULL);
    static const uint8_t with_null[19] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60,
                                          0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                                          0x01, 0x05, 0x00, 0x04, 0x20};
    static const uint8_t no_null[17] = {0x30, 0x2f, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48,
                                        0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x04, 0x20};
    static const uint8_t sha1_oid[15] = {0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e,
                                         0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14};
    uint8_t t[64], sig[512];
    size_t sl;
    memcpy(t, with_null, 19);
    memcpy(t + 19, h, 32);
    sl = raw_sign(f, path, t, 51, sig);
    assert_int_equal(rsa_verify_sha256(f->pub, G1_MSG, sizeof G1_MSG - 1, sig, sl), 0);
    memcpy(t, no_null, 17);
    memcpy(t + 17, h, 32);
    sl = raw_sign(f, path, t, 49, sig);
    assert_int_equal(rsa_verify_sha256(f->pub, G1_MSG, sizeof G1_MSG - 1, sig, sl), 0);
    /* Rejected: bare hash, SHA-1 OID, DigestInfo plus a trailing byte. */
    sl = raw_sign(f, path, h, 32, sig);
    assert_int_equal(rsa_verify_sha256(f->pub, G1_MSG, sizeof G1_MSG - 1, sig, sl), -1);
    memcpy(t, sha1_oid, 15);
    memcpy(t + 15, h, 20);
    sl = raw_sign(f, path, t, 35, sig);
    assert_int_equal(rsa_verify_sha256(f->pub, G1_MSG, sizeof G1_MSG - 1, sig, sl), -1);
    memcpy(t, with_null, 19);
    memcpy(t + 19, h, 32);
    t[51] = 0;
    sl = raw_sign(f, path, t, 52, sig);
    assert_int_equal(rsa_verify_sha256(f->pub, G1_MSG, sizeof G1_MSG - 1, sig, sl), -1);
    unlink(path);
}

static void encode_pub(EVP_PKEY *pk, const char *fmt, const char *structure, struct sbuf *out)
{
    OSSL_ENCODER_CTX *e =
        OSSL_ENCODER_CTX_new_for_pkey(pk, EVP_PKEY_PUBLIC_KEY, fmt, structure, NULL);
    unsigned char *p = NULL;
    size_t n = 0;
    assert_non_null(e);
    assert_true(OSSL_ENCODER_to_data(e, &p, &n));
    sbuf_append(out, p, n);
    OPENSSL_free(p);
    OSSL_ENCODER_CTX_free(e);
}

static void test_key_formats(void **state)
{
    struct fx *f = *state;
    uint8_t sig[512];
    size_t sl;
    sign(f->priv, "m", 1, sig, &sl);
    static const char *fmts[][2] = {{"PEM", "SubjectPublicKeyInfo"},
                                    {"PEM", "type-specific"},
                                    {"DER", "SubjectPublicKeyInfo"},
                                    {"DER", "type-specific"}};
    char fp0[65], fp1[65];
    rsa_pubkey_fingerprint(f->pub, fp0);
    for (size_t i = 0; i < 4; i++) {
        struct sbuf b = SBUF_INIT;
        encode_pub(f->pub_evp, fmts[i][0], fmts[i][1], &b);
        if (i == 1) assert_non_null(strstr(b.data, "BEGIN RSA PUBLIC KEY"));
        struct rsa_pubkey *k;
        assert_int_equal(rsa_pubkey_load(b.data, b.len, &k), 0);
        assert_int_equal(rsa_verify_sha256(k, "m", 1, sig, sl), 0);
        rsa_pubkey_fingerprint(k, fp1);
        assert_string_equal(fp0, fp1);
        rsa_pubkey_free(k);
        /* Truncated input is rejected. */
        assert_int_equal(rsa_pubkey_load(b.data, b.len / 2, &k), -1);
        assert_null(k);
        sbuf_free(&b);
    }
    /* Fingerprint = SHA-256 of the DER SPKI. */
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(f->pub_evp, &der);
    uint8_t h[32];
    unsigned hl;
    EVP_Digest(der, (size_t)n, h, &hl, EVP_sha256(), NULL);
    OPENSSL_free(der);
    char hx[65];
    for (int i = 0; i < 32; i++)
        snprintf(hx + 2 * i, 3, "%02x", h[i]);
    assert_string_equal(fp0, hx);
    /* Garbage and non-RSA keys. */
    struct rsa_pubkey *k;
    assert_int_equal(rsa_pubkey_load("hello", 5, &k), -1);
    assert_int_equal(rsa_pubkey_load("", 0, &k), -1);
    EVP_PKEY *ec = EVP_EC_gen("P-256");
    assert_non_null(ec);
    struct sbuf b = SBUF_INIT;
    encode_pub(ec, "PEM", "SubjectPublicKeyInfo", &b);
    assert_int_equal(rsa_pubkey_load(b.data, b.len, &k), -1);
    sbuf_free(&b);
    EVP_PKEY_free(ec);
}

static void test_privkey_file(void **state)
{
    struct fx *f = *state;
    char dir[] = "/tmp/sgpu-test-rsadir-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/key.pem", dir);
    assert_int_equal(rsa_privkey_save_file(f->priv, path), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    FILE *fp = fopen(path, "r");
    char line[64] = {0};
    assert_non_null(fgets(line, sizeof line, fp));
    fclose(fp);
    assert_string_equal(line, "-----BEGIN PRIVATE KEY-----\n");
    /* Overwrite atomically with the other key; load; sign; verify. */
    assert_int_equal(rsa_privkey_save_file(f->other, path), 0);
    struct rsa_privkey *k;
    assert_int_equal(rsa_privkey_load_file(path, &k), 0);
    struct sbuf pem = SBUF_INIT, pem2 = SBUF_INIT;
    assert_int_equal(rsa_privkey_public_pem(k, &pem), 0);
    assert_int_equal(rsa_privkey_public_pem(f->other, &pem2), 0);
    assert_string_equal(pem.data, pem2.data);
    uint8_t sig[512];
    size_t sl;
    sign(k, "x", 1, sig, &sl);
    assert_int_equal(rsa_verify_sha256(f->pub, "x", 1, sig, sl), -1);
    struct rsa_pubkey *pk;
    assert_int_equal(rsa_pubkey_load(pem.data, pem.len, &pk), 0);
    assert_int_equal(rsa_verify_sha256(pk, "x", 1, sig, sl), 0);
    rsa_pubkey_free(pk);
    rsa_privkey_free(k);
    sbuf_free(&pem);
    sbuf_free(&pem2);
    /* Only key.pem is left in the directory (no temp files). */
    char cmd[256];
    snprintf(cmd, sizeof cmd, "test $(ls -A %s | wc -l) -eq 1", dir);
    assert_int_equal(system(cmd), 0);
    /* Missing file, non-key file, unwritable dir. */
    snprintf(path, sizeof path, "%s/nope.pem", dir);
    assert_int_equal(rsa_privkey_load_file(path, &k), -1);
    FILE *g = fopen(path, "w");
    fputs("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", g);
    fclose(g);
    assert_int_equal(rsa_privkey_load_file(path, &k), -1);
    unlink(path);
    assert_int_equal(rsa_privkey_save_file(f->priv, "/nonexistent-dir/k.pem"), -1);
    snprintf(path, sizeof path, "%s/key.pem", dir);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_verify),
        cmocka_unit_test(test_digestinfo_variants),
        cmocka_unit_test(test_key_formats),
        cmocka_unit_test(test_privkey_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
