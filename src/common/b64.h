/* Base64 (RFC 4648 standard alphabet) with Python's lenient decoder.
 *
 * b64_decode_lenient() behaves like Python's base64.b64decode(s) (validate=False):
 * every character outside [A-Za-z0-9+/=] is discarded first (so spaces,
 * newlines and URL-safe '-'/'_' vanish); then the data must be correctly
 * padded: a final quantum of 2 or 3 symbols needs "==" / "=", a lone symbol is
 * an error; after a complete padded quantum, surplus '=' are tolerated;
 * '=' in the middle of data is an error ("Incorrect padding"/"Excess data"). */
#ifndef SGPU_B64_H
#define SGPU_B64_H

#include <stddef.h>
#include <stdint.h>

/* Encoded length without the NUL. */
size_t b64_encoded_len(size_t n);
/* Encode n bytes into out (b64_encoded_len(n)+1 bytes), NUL-terminated.  Returns length. */
size_t b64_encode(const uint8_t *in, size_t n, char *out);
/* Decode into out (capacity cap; n*3/4+3 always suffices).  Returns 0 and the
 * length in *outlen, or -1 on a padding error or if cap is too small. */
int b64_decode_lenient(const char *in, size_t n, uint8_t *out, size_t cap, size_t *outlen);

#endif
