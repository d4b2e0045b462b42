/*
 * text_test.c - src/core/text.c: what counts as well-formed UTF-8 (the RFC
 * 3629 boundaries, overlong forms, surrogates, past U+10FFFF), replacement
 * of bad bytes and NULs, cuts on character boundaries, and log escaping.
 * Every output of text_utf8_copy must also be accepted by jansson.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/text.h"
#include "test.h"

static void test_wellformed(void) {
    static const struct {
        const char *bytes;
        size_t n;
        int valid;
    } v[] = {
        {"plain ascii", 11, 1},
        {"\xC2\x80", 2, 1},             /* U+0080, the first 2-byte */
        {"\xDF\xBF", 2, 1},             /* U+07FF */
        {"\xE0\xA0\x80", 3, 1},         /* U+0800 */
        {"\xED\x9F\xBF", 3, 1},         /* U+D7FF, just below the surrogates */
        {"\xEE\x80\x80", 3, 1},         /* U+E000 */
        {"\xEF\xBF\xBD", 3, 1},         /* U+FFFD */
        {"\xF0\x90\x80\x80", 4, 1},     /* U+10000 */
        {"\xF4\x8F\xBF\xBF", 4, 1},     /* U+10FFFF, the last */
        {"\xFF", 1, 0},                 /* never in UTF-8 */
        {"\xC0\xAF", 2, 0},             /* overlong '/' */
        {"\xC1\xBF", 2, 0},             /* overlong */
        {"\xE0\x80\xAF", 3, 0},         /* overlong 3-byte */
        {"\xF0\x80\x80\xAF", 4, 0},     /* overlong 4-byte */
        {"\xED\xA0\x80", 3, 0},         /* U+D800, a surrogate */
        {"\xF4\x90\x80\x80", 4, 0},     /* U+110000 */
        {"\xF5\x80\x80\x80", 4, 0},     /* past the range */
        {"\xE2\x82", 2, 0},             /* cut short */
        {"\x80", 1, 0},                 /* a lone continuation byte */
        {"a\0b", 3, 0},                 /* NUL is not text here */
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        CHECKF(text_utf8_valid(v[i].bytes, v[i].n) == v[i].valid, "case %zu", i);
}

/* text_utf8_copy's output is what jansson takes. */
static int json_takes(const char *s) {
    json_t *j = json_string(s);
    int ok = j != NULL;
    json_decref(j);
    return ok;
}

static void test_copy(void) {
    char out[64];
    size_t n = text_utf8_copy(out, sizeof out, "\xFF.png", 5);
    CHECK(!strcmp(out, TEXT_REPLACEMENT ".png") && n == 7);
    CHECK(json_takes(out));
    /* a NUL inside is replaced, not a terminator */
    text_utf8_copy(out, sizeof out, "a\0b", 3);
    CHECK(!strcmp(out, "a" TEXT_REPLACEMENT "b"));
    /* a cut never splits a character: "é" is 2 bytes, 4 of them in 8 bytes of room leave 7 + NUL... */
    const char *e4 = "\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9";
    n = text_utf8_copy(out, 8, e4, 8);
    CHECK(n == 6 && !memcmp(out, e4, 6) && out[6] == '\0');
    CHECK(json_takes(out));
    /* a replacement that does not fit is left out whole */
    n = text_utf8_copy(out, 3, "\xFF", 1);
    CHECK(n == 0 && out[0] == '\0');
    /* valid text comes through unchanged */
    const char *mixed = "photo \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80.jpg";
    text_utf8_copy(out, sizeof out, mixed, strlen(mixed));
    CHECK(!strcmp(out, mixed));
    /* every byte value, alone and after a lead byte, gives jansson-safe text */
    int all_ok = 1;
    for (int a = 0; a < 256; a++)
        for (int b = 0; b < 256; b += 7) {
            char in[3] = {(char)a, (char)b, (char)0xBF};
            char o[16];
            text_utf8_copy(o, sizeof o, in, 3);
            all_ok &= json_takes(o) && text_utf8_valid(o, strlen(o));
        }
    CHECK(all_ok);
    char *d = text_utf8_dup("\xFF\xFE", 2);
    CHECK(!strcmp(d, TEXT_REPLACEMENT TEXT_REPLACEMENT));
    free(d);
}

static void test_log_escape(void) {
    char out[64];
    text_log_escape(out, sizeof out, "GET /a\nforged line\r\t\x1b[31m\\ \x7f");
    CHECK(!strcmp(out, "GET /a\\nforged line\\r\\t\\x1B[31m\\\\ \\x7F"));
    CHECK(!strchr(out, '\n'));
    /* never a half escape at the end */
    text_log_escape(out, 5, "ab\n\n");
    CHECK(!strcmp(out, "ab\\n"));
}

int main(void) {
    test_wellformed();
    test_copy();
    test_log_escape();
    return test_summary();
}
