/*
 * base64url_test.c - src/core/base64url.c: the RFC 4648 test vectors in the
 * url alphabet without padding, round trips of every length and byte, and
 * the decoder's refusals (strict: what no encoder writes is refused).
 */
#include <stdio.h>
#include <string.h>

#include "core/base64url.h"
#include "test.h"

static void test_vectors(void) {
    static const struct {
        const char *plain, *encoded;
    } v[] = {{"", ""},           {"f", "Zg"},          {"fo", "Zm8"},         {"foo", "Zm9v"},
             {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char out[32];
        base64url_encode((const unsigned char *)v[i].plain, strlen(v[i].plain), out);
        CHECKF(!strcmp(out, v[i].encoded), "encode '%s' = '%s' (got '%s')", v[i].plain, v[i].encoded, out);
        unsigned char back[32];
        size_t n = 99;
        CHECKF(base64url_decode(v[i].encoded, back, sizeof back, &n) == 0 && n == strlen(v[i].plain) &&
                   !memcmp(back, v[i].plain, n),
               "decode '%s'", v[i].encoded);
    }
    /* the two characters that differ from standard base64 */
    const unsigned char hi[] = {0xfb, 0xff};
    char out[8];
    base64url_encode(hi, sizeof hi, out);
    CHECKF(!strcmp(out, "-_8"), "0xfb 0xff = '-_8' (got '%s')", out);
}

static void test_round_trips(void) {
    unsigned char in[256], back[256];
    char enc[BASE64URL_LEN(sizeof in) + 1];
    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (unsigned char)(i * 7 + 3);
    int bad = 0;
    for (size_t n = 0; n <= sizeof in; n++) {
        base64url_encode(in, n, enc);
        size_t m = 0;
        if (strlen(enc) != BASE64URL_LEN(n) || base64url_decode(enc, back, sizeof back, &m) || m != n ||
            memcmp(in, back, n))
            bad++;
    }
    CHECKF(bad == 0, "%d of 257 lengths do not round-trip", bad);
}

static void test_refusals(void) {
    unsigned char out[8];
    size_t n;
    static const char *bad[] = {"Z",     /* a length no encoder writes */
                                "Zm9v=", /* padding */
                                "Zm+v",  /* standard base64's alphabet */
                                "Zm/v",
                                "Zm 9v",
                                "Zm9v\n",
                                "Zh",                /* stray bits in the last character */
                                "Zm9",               /* 'Zm8' is "fo"; 'Zm9' sets stray bits */
                                "Zm9vYmFyYmF6cXV4"}; /* 12 bytes, over the 8-byte buffer */
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECKF(base64url_decode(bad[i], out, sizeof out, &n) != 0, "'%s' refused", bad[i]);
}

int main(void) {
    test_vectors();
    test_round_trips();
    test_refusals();
    return test_summary();
}
