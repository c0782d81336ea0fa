/* Base64 (RFC 4648 standard alphabet) with Python's lenient decoder.
 *
 * b64_decode_lenient() behaves like Python 3.11's base64.b64decode(s)
 * (validate=False) on a str, i.e. binascii.a2b_base64 non-strict (see b64.c):
 * every character outside [A-Za-z0-9+/=] is discarded (so spaces, newlines
 * and URL-safe '-'/'_' vanish); a final quantum of 2 or 3 symbols needs
 * "==" / "=", a lone symbol is an error; a pad that completes a quantum ends
 * decoding (anything after it, e.g. "YQ==YQ==", is ignored); a '=' seen
 * before a quantum has 2 symbols is skipped, and a pad that does not complete
 * the quantum is forgotten once data follows ("ab=c=" decodes as "abc=").
 * Non-ASCII bytes (>= 0x80) are an error, as Python rejects a non-ASCII str.
 */
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
