/*
 * err.h - the one list of error codes in upres, and the parser error struct.
 *
 * Every fallible function returns int: 0 on success or one of the negative
 * codes below. Parsers (model files, images, JSON, config) also fill a
 * caller-supplied up_error_t with a position and a human-readable message,
 * in the manner of jansson's json_error_t. The message is what reaches the
 * user: it names the file, the line and the reason.
 */
#ifndef UPRES_CORE_ERR_H
#define UPRES_CORE_ERR_H

#include <stddef.h>

enum {
    UP_OK = 0,
    UP_ERR_NOMEM = -1,       /* an allocation sized by input failed */
    UP_ERR_IO = -2,          /* a file could not be opened, read or written */
    UP_ERR_FORMAT = -3,      /* malformed input: model file, image, arguments */
    UP_ERR_UNSUPPORTED = -4, /* well-formed but not supported (layer type, param) */
    UP_ERR_INVALID = -5,     /* a caller passed a bad value (scale, tile, name) */
    UP_ERR_IMAGE = -6,       /* the bytes are not an image we can decode */
    UP_ERR_TOO_LARGE = -7,   /* over a configured limit (pixels, bytes) */
    UP_ERR_CANCELLED = -8,   /* the caller asked to stop */
    UP_ERR_NOT_FOUND = -9,   /* a named thing (model, file) does not exist */
    UP_ERR_BACKEND = -10,    /* the compute backend failed (oneDNN status) */
    UP_ERR_REVOKED = -11,    /* an API key was revoked */
    UP_ERR_QUOTA = -12,      /* a key's monthly quota is used up */
    UP_ERR_CREDITS = -13,    /* a key's credit balance is too low */
    UP_ERR_EXPIRED = -14,    /* a signed link (or other dated thing) is past its time */
    UP_ERR_CONFLICT = -15,   /* a record under this key exists already (Idempotency-Key) */
};

/* Static English name of a code; never NULL. */
const char *up_strerror(int code);

/* Where and why something failed. line is 1-based, 0 when not applicable. */
typedef struct up_error {
    int code;      /* the UP_ERR_* returned alongside */
    int line;      /* line in the parsed text, or 0 */
    char msg[512]; /* full sentence, no trailing newline */
} up_error_t;

/*
 * Fill err (which may be NULL) and return code, so that callers can write
 * `return up_error_set(err, UP_ERR_FORMAT, line, "...", ...);`.
 */
int up_error_set(up_error_t *err, int code, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Prefix err->msg with "prefix: " (used to add a file name). */
void up_error_prefix(up_error_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
