/*
 * text.h - client bytes made safe to show: the one place where text that
 * came from outside (file names, form fields, paths, query values, URLs)
 * becomes valid UTF-8, and where log lines lose their control bytes.
 *
 * jansson refuses invalid UTF-8 (its packers return NULL), so a string that
 * reaches a JSON reply or a database row must be valid UTF-8 first; and a
 * cut at a byte count can split a character, which makes valid text invalid.
 * text_utf8_copy does both jobs: every byte that does not begin a well-formed
 * sequence (RFC 3629: no overlong forms, no surrogates, nothing above
 * U+10FFFF) and every NUL becomes U+FFFD, and a cut never splits a character.
 */
#ifndef UPRES_CORE_TEXT_H
#define UPRES_CORE_TEXT_H

#include <stddef.h>

#define TEXT_REPLACEMENT "\xEF\xBF\xBD" /* U+FFFD, 3 bytes */

/*
 * Copy the n bytes at src (any bytes) into dst (size >= 1 bytes, always
 * NUL-terminated) as valid UTF-8, as much as fits whole characters.
 * Returns the bytes written, not counting the NUL.
 */
size_t text_utf8_copy(char *dst, size_t size, const char *src, size_t n);

/* text_utf8_copy of the whole of src into a new buffer (free()); never NULL. */
char *text_utf8_dup(const char *src, size_t n);

/* Bytes of the longest well-formed UTF-8 sequence at s (n bytes available): 1..4, or 0 when none. */
size_t text_utf8_seq(const unsigned char *s, size_t n);

/* 1 when the n bytes at s are valid UTF-8 with no NUL, else 0. */
int text_utf8_valid(const char *s, size_t n);

/*
 * Copy src (NUL-terminated) into dst (size >= 1) for a log line: bytes
 * below 0x20, 0x7F and backslash are written as \n, \r, \t, \\ or \xNN, so
 * a client can never start a line of its own. Returns bytes written.
 */
size_t text_log_escape(char *dst, size_t size, const char *src);

/*
 * A library's message (libpq's end in a newline and may span lines) as
 * one line into buf: newlines made spaces, trailing ones and spaces cut;
 * NULL or "" gives "unknown error". Returns buf.
 */
const char *text_one_line(const char *msg, char *buf, size_t size);

#endif
