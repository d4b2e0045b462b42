/*
 * api_fuzz.c - fuzz target for the small parsers that read network input
 * in the API layer: RFC 3339 times (?before=, ?after=), paging cursors
 * (?cursor=), the Authorization header and key form, base64url, and the
 * image_url allow list syntax (configuration). The first byte picks the
 * parser; the rest, NUL-terminated, is its input. Each parser's contract is
 * checked, not only that it does not crash: a time or cursor that parses
 * must print back to something that parses to the same value.
 *
 * In ctest through driver.c; for libFuzzer:
 *   clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *       tests/fuzz/api_fuzz.c -Lbuild -lupres_lib ... (or list the sources)
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "auth/auth.h"
#include "core/base64url.h"
#include "http/fetch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    char *s = malloc(size); /* the text after the selector, NUL-terminated, exactly sized */
    if (!s)
        abort();
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';
    switch (data[0] % 5) {
    case 0: {
        double t;
        if (api_time_parse(s, &t) == 0 && t >= 0 && t < 253402300800.0) { /* years 1970..9999 print back */
            char buf[40];
            double back;
            if (api_time_parse(api_time(t, buf, sizeof buf), &back) || fabs(back - t) > 0.0015)
                abort();
        }
        break;
    }
    case 1: {
        long long seq;
        if (api_cursor_parse(s, &seq) == 0) {
            char buf[64];
            long long back;
            api_cursor_make(seq, buf, sizeof buf);
            if (seq <= 0 || api_cursor_parse(buf, &back) || back != seq)
                abort();
        }
        break;
    }
    case 2: {
        size_t len = 0;
        const char *tok = auth_bearer_token(s, &len);
        if (tok && (tok < s || tok + len > s + strlen(s) || len == 0))
            abort();
        if (auth_key_wellformed(s) && strlen(s) != AUTH_KEY_LEN)
            abort();
        break;
    }
    case 3: {
        unsigned char out[256];
        size_t n = 0;
        if (base64url_decode(s, out, sizeof out, &n) == 0) {
            char back[BASE64URL_LEN(sizeof out) + 1];
            base64url_encode(out, n, back);
            if (strcmp(back, s)) /* strict: the one encoding of those bytes */
                abort();
        }
        break;
    }
    case 4: fetch_allow_validate(s, NULL); break;
    }
    free(s);
    return 0;
}
