/* sgpu keygen: an RSA key pair as PEM files (src/common/rsa.h).
 * PREFIX.pem = private key (PKCS#8, mode 0600), PREFIX.pub.pem = public key
 * (SubjectPublicKeyInfo, what GET /pubkey/ serves and PUBKEY_FILE accepts). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "rsa.h"

int cmd_keygen(struct cli_common *c, int argc, char **argv)
{
    const char *prefix = "sgpu-key";
    int bits = 2048;
    enum { O_OUT = 1, O_BITS, O_HELP };
    static const struct option opts[] = {
        {"out", required_argument, NULL, O_OUT},
        {"bits", required_argument, NULL, O_BITS},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (o) {
        case 'o':
        case O_OUT:
            prefix = optarg;
            break;
        case O_BITS:
            bits = atoi(optarg);
            break;
        case 'h':
        case O_HELP:
            puts("usage: sgpu keygen [--out PREFIX] [--bits 2048]\n"
                 "Writes PREFIX.pem (private key, PKCS#8, mode 0600) and PREFIX.pub.pem (public\n"
                 "key, SubjectPublicKeyInfo PEM).  Default PREFIX: sgpu-key.");
            return 0;
        default:
            return 2;
        }
    }
    if (bits < 1024 || bits > 16384) {
        fprintf(stderr, "sgpu keygen: --bits must be in [1024, 16384]\n");
        return 2;
    }
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
