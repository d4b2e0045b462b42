/*
 * keys.c - API keys: making them, hashing them, recognising their form, and
 * finding them in an Authorization header (see auth.h).
 *
 * A key is "upres_" + the unpadded base64url form of 32 bytes from
 * OpenSSL's CSPRNG. The server never stores the key itself, only its
 * SHA-256 and its first AUTH_KEY_DISPLAY_LEN characters for display; a key
 * that is presented is hashed and looked up by hash. The key carries 256
 * bits of entropy, so a plain (unsalted, fast) hash is enough: there is
 * nothing to guess that a password-style slow hash would protect.
 */
#include "auth/auth.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <string.h>
#include <strings.h>

#include "core/base64url.h"
#include "core/log.h"

#define KEY_RANDOM_SIZE 32
#define PREFIX_LEN (sizeof AUTH_KEY_PREFIX - 1)

_Static_assert(PREFIX_LEN + (KEY_RANDOM_SIZE * 8 + 5) / 6 == AUTH_KEY_LEN, "key length");
_Static_assert(AUTH_KEY_DISPLAY_LEN <= AUTH_KEY_LEN, "display length");

int auth_key_generate(char *key, unsigned char hash[32], char *display) {
    unsigned char raw[KEY_RANDOM_SIZE];
    if (RAND_bytes(raw, sizeof raw) != 1) {
        log_error("auth: the random number generator failed; no API key made");
        return UP_ERR_IO;
    }
    memcpy(key, AUTH_KEY_PREFIX, PREFIX_LEN);
    base64url_encode(raw, sizeof raw, key + PREFIX_LEN);
    OPENSSL_cleanse(raw, sizeof raw);
    auth_key_hash(key, hash);
    memcpy(display, key, AUTH_KEY_DISPLAY_LEN);
    display[AUTH_KEY_DISPLAY_LEN] = '\0';
    return 0;
}

void auth_key_hash(const char *key, unsigned char hash[32]) {
    SHA256((const unsigned char *)key, strlen(key), hash);
}

int auth_key_wellformed(const char *key) {
    if (!key || strncmp(key, AUTH_KEY_PREFIX, PREFIX_LEN) != 0)
        return 0;
    size_t i = PREFIX_LEN;
    for (; key[i]; i++) {
        char c = key[i];
        if (i >= AUTH_KEY_LEN)
            return 0;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_'))
            return 0;
    }
    return i == AUTH_KEY_LEN;
}

int auth_hash_equal(const unsigned char a[32], const unsigned char b[32]) {
    return CRYPTO_memcmp(a, b, 32) == 0;
}

static int is_space(char c) { return c == ' ' || c == '\t'; }

/* RFC 6750 section 2.1: credentials = "Bearer" 1*SP b64token; the scheme is case-insensitive. */
const char *auth_bearer_token(const char *header, size_t *len) {
    static const char scheme[] = "Bearer";
    if (!header)
        return NULL;
    const char *p = header;
    while (is_space(*p))
        p++;
    if (strncasecmp(p, scheme, sizeof scheme - 1) != 0)
        return NULL;
    p += sizeof scheme - 1;
    if (!is_space(*p))
        return NULL; /* "Bearer" alone, or "Bearerxyz" */
    while (is_space(*p))
        p++;
    const char *tok = p;
    while (*p && !is_space(*p))
        p++;
    const char *end = p;
    while (is_space(*p))
        p++;
    if (end == tok || *p)
        return NULL; /* empty token, or a second word after it */
    if (len)
        *len = (size_t)(end - tok);
    return tok;
}
