/*
 * base64url.h - RFC 4648 section 5 base64url without padding: API keys
 * (auth/keys.c) and the opaque paging cursors of GET /v1/jobs (api/api.c).
 */
#ifndef UPRES_CORE_BASE64URL_H
#define UPRES_CORE_BASE64URL_H

#include <stddef.h>

/* The encoded length of n bytes (no padding), without the NUL. */
#define BASE64URL_LEN(n) (((n)*8 + 5) / 6)

/* out (BASE64URL_LEN(n) + 1 bytes) gets the base64url of in[0..n) and a NUL. */
void base64url_encode(const unsigned char *in, size_t n, char *out);

/*
 * Decode the NUL-terminated text s into out (cap bytes); *n gets the byte
 * count. Strict: only the base64url alphabet, no padding, no length that
 * cannot come from encoding, no stray bits in the last character, and at
 * most cap bytes. Returns 0, or -1 (out then holds nothing useful).
 */
int base64url_decode(const char *s, unsigned char *out, size_t cap, size_t *n);

#endif
