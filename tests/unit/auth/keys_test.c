/*
 * keys_test.c - API keys (src/auth/keys.c).
 *
 * Generated keys have the documented form, are all different, and their
 * hash and display part are what auth_key_hash and the prefix give;
 * auth_key_wellformed refuses every near miss; auth_bearer_token against a
 * table of Authorization header values; auth_hash_equal.
 */
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "test.h"

#define N_KEYS 1000

static int cmp_key(const void *a, const void *b) { return strcmp(a, b); }

static void test_generate(void) {
    static char keys[N_KEYS][AUTH_KEY_LEN + 1];
    int n_bad = 0;
    for (int i = 0; i < N_KEYS; i++) {
        unsigned char hash[32], want[32];
        char display[AUTH_KEY_DISPLAY_LEN + 1];
        memset(keys[i], 'x', sizeof keys[i]);
        memset(display, 'x', sizeof display);
        if (auth_key_generate(keys[i], hash, display) != 0) {
            n_bad++;
            continue;
        }
        auth_key_hash(keys[i], want);
        if (strlen(keys[i]) != AUTH_KEY_LEN || !auth_key_wellformed(keys[i]) || memcmp(hash, want, 32) != 0 ||
            strlen(display) != AUTH_KEY_DISPLAY_LEN || strncmp(display, keys[i], AUTH_KEY_DISPLAY_LEN) != 0 ||
            strncmp(keys[i], "upres_", 6) != 0) {
            fprintf(stderr, "bad key %s / display %s\n", keys[i], display);
            n_bad++;
        }
    }
    CHECK(n_bad == 0);
    qsort(keys, N_KEYS, sizeof keys[0], cmp_key);
    int n_dup = 0;
    for (int i = 1; i < N_KEYS; i++)
        n_dup += strcmp(keys[i - 1], keys[i]) == 0;
    CHECK(n_dup == 0);

    /* Every base64url character shows up somewhere in 43,000 random ones. */
    int seen[256] = {0};
    for (int i = 0; i < N_KEYS; i++)
        for (const char *p = keys[i] + 6; *p; p++)
            seen[(unsigned char)*p] = 1;
    int n_seen = 0;
    for (int c = 0; c < 256; c++)
        n_seen += seen[c];
    CHECKF(n_seen == 64, "%d distinct characters", n_seen);
    CHECK(seen['-'] && seen['_']);
}

static void test_hash(void) {
    unsigned char h[32], want[32];
    const char *k = "upres_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    auth_key_hash(k, h);
    SHA256((const unsigned char *)k, strlen(k), want);
    CHECK(memcmp(h, want, 32) == 0);
    /* SHA-256("abc"), FIPS 180-2 appendix B.1 */
    static const unsigned char abc[32] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40,
                                          0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17,
                                          0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
    auth_key_hash("abc", h);
    CHECK(memcmp(h, abc, 32) == 0);
}

static void test_wellformed(void) {
    CHECK(auth_key_wellformed("upres_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
    CHECK(auth_key_wellformed("upres_abcdefghijklmnopqrstuvwxyz0123456789-_ABCDE"));
    CHECK(!auth_key_wellformed(NULL));
    CHECK(!auth_key_wellformed(""));
    CHECK(!auth_key_wellformed("upres_"));
    CHECK(!auth_key_wellformed("upres_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));   /* 42 */
    CHECK(!auth_key_wellformed("upres_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")); /* 44 */
    CHECK(!auth_key_wellformed("Upres_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
    CHECK(!auth_key_wellformed("upres-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
    CHECK(!auth_key_wellformed("sk_liveAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
    CHECK(!auth_key_wellformed("upres_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+")); /* base64, not url */
    CHECK(!auth_key_wellformed("upres_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/"));
    CHECK(!auth_key_wellformed("upres_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="));
    CHECK(!auth_key_wellformed("upres_AAAAAAAAAAAAAAAAAAAAA AAAAAAAAAAAAAAAAAAAAA"));
    CHECK(!auth_key_wellformed("upres_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\xc3"));
    CHECK(!auth_key_wellformed(" upres_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
}

static void test_bearer(void) {
    static const struct {
        const char *header;
        const char *token; /* NULL: refused */
    } cases[] = {
        {"Bearer abc", "abc"},
        {"bearer abc", "abc"},
        {"BEARER abc", "abc"},
        {"bEaReR abc", "abc"},
        {"Bearer    abc", "abc"},
        {"Bearer abc   ", "abc"},
        {"  Bearer abc  ", "abc"},
        {"Bearer\tabc", "abc"},
        {"Bearer upres_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
         "upres_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
        {"Bearer a.b-c_d~e+f/g=", "a.b-c_d~e+f/g="},
        {"Bearer x", "x"},
        {"Bearer", NULL},
        {"Bearer ", NULL},
        {"Bearer    ", NULL},
        {"Bearerabc", NULL},
        {"Bearer abc def", NULL},
        {"Basic dXNlcjpwYXNz", NULL},
        {"Token abc", NULL},
        {"Bear abc", NULL},
        {"", NULL},
        {"   ", NULL},
        {NULL, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = 12345;
        const char *tok = auth_bearer_token(cases[i].header, &len);
        if (!cases[i].token) {
            CHECKF(tok == NULL, "case %zu \"%s\" should be refused", i,
                   cases[i].header ? cases[i].header : "(null)");
        } else {
            CHECKF(tok && len == strlen(cases[i].token) && memcmp(tok, cases[i].token, len) == 0,
                   "case %zu \"%s\": got %.*s", i, cases[i].header, tok ? (int)len : 6, tok ? tok : "(null)");
            CHECK(!tok || (tok >= cases[i].header && tok < cases[i].header + strlen(cases[i].header)));
        }
    }
    CHECK(auth_bearer_token("Bearer abc", NULL) != NULL); /* len may be NULL */
}

static void test_hash_equal(void) {
    unsigned char a[32], b[32];
    for (int i = 0; i < 32; i++)
        a[i] = b[i] = (unsigned char)(i * 7);
    CHECK(auth_hash_equal(a, b));
    b[0] ^= 1;
    CHECK(!auth_hash_equal(a, b));
    b[0] ^= 1;
    b[31] ^= 0x80;
    CHECK(!auth_hash_equal(a, b));
    b[31] ^= 0x80;
    b[16] = 0;
    CHECK(!auth_hash_equal(a, b));
    memset(a, 0, 32);
    memset(b, 0, 32);
    CHECK(auth_hash_equal(a, b));
}

int main(void) {
    test_generate();
    test_hash();
    test_wellformed();
    test_bearer();
    test_hash_equal();
    return test_summary();
}
