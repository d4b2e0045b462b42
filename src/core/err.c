/*
 * err.c - error code names and the up_error_t helpers (see err.h).
 */
#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *up_strerror(int code) {
    switch (code) {
    case UP_OK: return "ok";
    case UP_ERR_NOMEM: return "out of memory";
    case UP_ERR_IO: return "i/o error";
    case UP_ERR_FORMAT: return "malformed input";
    case UP_ERR_UNSUPPORTED: return "unsupported";
    case UP_ERR_INVALID: return "invalid argument";
    case UP_ERR_IMAGE: return "not a decodable image";
    case UP_ERR_TOO_LARGE: return "over a limit";
    case UP_ERR_CANCELLED: return "cancelled";
    case UP_ERR_NOT_FOUND: return "not found";
    case UP_ERR_BACKEND: return "compute backend error";
    case UP_ERR_REVOKED: return "revoked";
    case UP_ERR_QUOTA: return "quota exceeded";
    case UP_ERR_CREDITS: return "insufficient credits";
    case UP_ERR_EXPIRED: return "expired";
    case UP_ERR_CONFLICT: return "conflict";
    }
    return "unknown error";
}

int up_error_set(up_error_t *err, int code, int line, const char *fmt, ...) {
    if (err) {
        va_list ap;
        err->code = code;
        err->line = line;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

void up_error_prefix(up_error_t *err, const char *fmt, ...) {
    if (!err)
        return;
    char prefix[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(prefix, sizeof prefix - 2, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t plen = strlen(prefix);
    memcpy(prefix + plen, ": ", 3);
    plen += 2;
    size_t mlen = strnlen(err->msg, sizeof err->msg - 1);
    if (plen + mlen > sizeof err->msg - 1)
        mlen = sizeof err->msg - 1 - plen;
    memmove(err->msg + plen, err->msg, mlen);
    memcpy(err->msg, prefix, plen);
    err->msg[plen + mlen] = '\0';
}
