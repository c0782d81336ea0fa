/* Base64 encode and Python-compatible lenient decode; see b64.h.
 *
 * The decoder is a transcription of the non-strict path of CPython 3.11's
 * binascii.a2b_base64 (what base64.b64decode(s) calls):
 *   - '=' is counted as padding only once a quantum has >= 2 symbols; a pad
 *     that completes the quantum (quad_pos + pads >= 4) ends decoding, and the
 *     rest of the input is ignored; other '=' are skipped;
 *   - any other character outside the alphabet is skipped;
 *   - at the end, 1 leftover symbol or 2-3 symbols without their pad -> error.
 * base64.b64decode(str) first requires the str to be ASCII, so a byte >= 0x80
 * is an error here (the signature arrives as a JSON string). */
#include "b64.h"

static const char enc_tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* symbol value + 1 (1..64), 65 for '=', 0 for anything else. */
static const uint8_t dec_tab[256] = {
    ['A'] = 1,  ['B'] = 2,  ['C'] = 3,  ['D'] = 4,  ['E'] = 5,  ['F'] = 6,  ['G'] = 7,  ['H'] = 8,
    ['I'] = 9,  ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16,
    ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24,
    ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32,
    ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40,
    ['o'] = 41, ['p'] = 42, ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48,
    ['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56,
    ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['+'] = 63, ['/'] = 64,
    ['='] = 65,
};

size_t b64_encoded_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

size_t b64_encode(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = enc_tab[v >> 18];
        out[o++] = enc_tab[(v >> 12) & 63];
        out[o++] = enc_tab[(v >> 6) & 63];
        out[o++] = enc_tab[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = enc_tab[v >> 18];
        out[o++] = enc_tab[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = enc_tab[v >> 18];
        out[o++] = enc_tab[(v >> 12) & 63];
        out[o++] = enc_tab[(v >> 6) & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

int b64_decode_lenient(const char *in, size_t n, uint8_t *out, size_t cap, size_t *outlen)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t o = 0;
    int quad_pos = 0, pads = 0;
    unsigned leftchar = 0;
    /* Python checks the ASCII-ness of the whole str before decoding. */
    for (size_t i = 0; i < n; i++)
        if (s[i] >= 0x80) return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned v = dec_tab[s[i]];
        if (v == 65) {
            if (quad_pos >= 2 && quad_pos + ++pads >= 4) goto done;
            continue;
        }
        if (v == 0) continue;
        v--;
        pads = 0;
        switch (quad_pos) {
        case 0:
            quad_pos = 1;
            leftchar = v;
            break;
        case 1:
            if (o >= cap) return -1;
            quad_pos = 2;
            out[o++] = (uint8_t)((leftchar << 2) | (v >> 4));
            leftchar = v & 0x0F;
            break;
        case 2:
            if (o >= cap) return -1;
            quad_pos = 3;
            out[o++] = (uint8_t)((leftchar << 4) | (v >> 2));
            leftchar = v & 0x03;
            break;
        default:
            if (o >= cap) return -1;
            quad_pos = 0;
            out[o++] = (uint8_t)((leftchar << 6) | v);
            leftchar = 0;
            break;
        }
    }
    if (quad_pos != 0) return -1;
done:
    *outlen = o;
    return 0;
}
