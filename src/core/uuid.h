/*
 * uuid.h - random (version 4) UUIDs for job ids.
 *
 * Job ids are opaque to clients and must not be guessable: the 122 random
 * bits come from OpenSSL's CSPRNG (RAND_bytes), never from rand().
 */
#ifndef UPRES_CORE_UUID_H
#define UPRES_CORE_UUID_H

/*
 * Write a new UUID v4 as 36 lower-case characters plus NUL into out
 * (RFC 4122: version nibble 4, variant bits 10). Aborts the process when
 * the random generator fails (there is no safe fallback). Thread-safe.
 */
void uuid_v4(char out[37]);

/* 1 when s is 36 characters in the 8-4-4-4-12 hex form (any version), else 0. */
int uuid_valid(const char *s);

#endif
