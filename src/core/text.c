/*
 * text.c - see text.h. Decoding follows RFC 3629's table of well-formed
 * byte sequences (also Unicode's Table 3-7):
 *
 *   code points          byte 1   byte 2   byte 3   byte 4
 *   U+0000..U+007F       00..7F
 *   U+0080..U+07FF       C2..DF   80..BF
 *   U+0800..U+0FFF       E0       A0..BF   80..BF
 *   U+1000..U+CFFF       E1..EC   80..BF   80..BF
 *   U+D000..U+D7FF       ED       80..9F   80..BF
 *   U+E000..U+FFFF       EE..EF   80..BF   80..BF
 *   U+10000..U+3FFFF     F0       90..BF   80..BF   80..BF
 *   U+40000..U+FFFFF     F1..F3   80..BF   80..BF   80..BF
 *   U+100000..U+10FFFF   F4       80..8F   80..BF   80..BF
 *
 * A byte that starts no such sequence is replaced on its own (one U+FFFD
 * per bad byte), so the output is never longer than 3 times the input.
 */
#include "core/text.h"

#include <stdio.h>
#include <string.h>

#include "core/xmalloc.h"

size_t text_utf8_seq(const unsigned char *s, size_t n) {
    if (n == 0)
        return 0;
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xBF; /* the allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

size_t text_utf8_copy(char *dst, size_t size, const char *src, size_t n) {
    const unsigned char *s = (const unsigned char *)src;
    size_t out = 0, i = 0;
    while (i < n) {
        size_t k = s[i] ? text_utf8_seq(s + i, n - i) : 0;
        const char *piece = k ? src + i : TEXT_REPLACEMENT;
        size_t plen = k ? k : sizeof TEXT_REPLACEMENT - 1;
        if (out + plen + 1 > size)
            break; /* never half a character */
        memcpy(dst + out, piece, plen);
        out += plen;
        i += k ? k : 1;
    }
    dst[out] = '\0';
    return out;
}

char *text_utf8_dup(const char *src, size_t n) {
    char *dst = xmalloc(3 * n + 1);
    text_utf8_copy(dst, 3 * n + 1, src, n);
    return dst;
}

int text_utf8_valid(const char *src, size_t n) {
    const unsigned char *s = (const unsigned char *)src;
    for (size_t i = 0; i < n;) {
        size_t k = s[i] ? text_utf8_seq(s + i, n - i) : 0;
        if (!k)
            return 0;
        i += k;
    }
    return 1;
}

size_t text_log_escape(char *dst, size_t size, const char *src) {
    size_t out = 0;
    for (const unsigned char *p = (const unsigned char *)src; *p; p++) {
        char esc[5];
        const char *piece = esc;
        size_t plen = 2;
        esc[0] = '\\';
        if (*p == '\n')
            esc[1] = 'n';
        else if (*p == '\r')
            esc[1] = 'r';
        else if (*p == '\t')
            esc[1] = 't';
        else if (*p == '\\')
            esc[1] = '\\';
        else if (*p < 0x20 || *p == 0x7F) {
            snprintf(esc, sizeof esc, "\\x%02X", *p);
            plen = 4;
        } else {
            piece = (const char *)p;
            plen = 1;
        }
        if (out + plen + 1 > size)
            break;
        memcpy(dst + out, piece, plen);
        out += plen;
    }
    dst[out] = '\0';
    return out;
}

const char *text_one_line(const char *msg, char *buf, size_t size) {
    snprintf(buf, size, "%s", msg && *msg ? msg : "unknown error");
    size_t n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    for (char *c = buf; *c; c++)
        if (*c == '\n')
            *c = ' ';
    return buf;
}
