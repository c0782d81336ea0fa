/* sgpu keygen: an RSA key pair as PEM files (src/common/rsa.h).
 * PREFIX.pem = private key (PKCS#8, mode 0600), PREFIX.pub.pem = public key
 * (SubjectPublicKeyInfo, what GET /pubkey/ serves and PUBKEY_FILE accepts). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "opts.h"
#include "rsa.h"

struct keygen_opts {
    const char *prefix;
    int bits;
};

static const struct opt rows[] = {
    {.name = "out",
     .short_name = 'o',
     .type = OPT_STR,
     OPT_AT(struct keygen_opts, prefix),
     .def = "sgpu-key",
     .meta = "PREFIX",
     .help = "writes PREFIX.pem (private key, PKCS#8, mode 0600) and PREFIX.pub.pem (public key, "
             "SubjectPublicKeyInfo PEM)"},
    {.name = "bits",
     .type = OPT_INT,
     OPT_AT(struct keygen_opts, bits),
     .lo = 1024,
     .hi = 16384,
     .def = "2048",
     .meta = "N",
     .help = "RSA key size"},
};

static const struct opts_spec spec = {"sgpu keygen", rows, sizeof rows / sizeof rows[0],
                                      OPTS_PREFIX};

static void keygen_usage(FILE *f)
{
    fputs("usage: sgpu keygen [--out PREFIX] [--bits 2048]\n", f);
    opts_usage(&spec, f);
}

int cmd_keygen(struct cli_common *c, int argc, char **argv)
{
    struct keygen_opts o = {0};
    struct opts_result r;
    int prc = cli_parse(&spec, &o, argc, argv, &r, keygen_usage);
    opts_result_free(&r);
    if (prc) return prc == 1 ? 0 : 2;
    const char *prefix = o.prefix;
    int bits = o.bits;
    char priv[4096], pub[4096];
    if (snprintf(priv, sizeof priv, "%s.pem", prefix) >= (int)sizeof priv ||
        snprintf(pub, sizeof pub, "%s.pub.pem", prefix) >= (int)sizeof pub) {
        fprintf(stderr, "sgpu keygen: path too long\n");
        return 2;
    }
    struct rsa_privkey *k = NULL;
    if (rsa_privkey_generate(bits, &k) != 0) {
        fprintf(stderr, "sgpu keygen: key generation failed\n");
        return 1;
    }
    int rc = 1;
    struct sbuf pem = SBUF_INIT;
    if (rsa_privkey_save_file(k, priv) != 0) {
        fprintf(stderr, "sgpu keygen: cannot write %s: %s\n", priv, strerror(errno));
    } else if (rsa_privkey_public_pem(k, &pem) != 0) {
        fprintf(stderr, "sgpu keygen: cannot export the public key\n");
    } else {
        FILE *f = fopen(pub, "w");
        if (!f || fwrite(pem.data, 1, pem.len, f) != pem.len || fclose(f) != 0) {
            fprintf(stderr, "sgpu keygen: cannot write %s: %s\n", pub, strerror(errno));
        } else {
            printf("wrote %s (private, 0600) and %s (public)\n", priv, pub);
            rc = 0;
        }
    }
    sbuf_free(&pem);
    rsa_privkey_free(k);
    return rc;
}
