/*
 * auth.h - accounts without the HTTP: API key making and checking, signed
 * result links, per-key rate limits and the tier table.
 *
 * Keys: "upres_" followed by 43 base64url characters (32 bytes from
 * OpenSSL's CSPRNG, 256 bits). Only the key's SHA-256 is stored (with the
 * first characters, for display); a presented key is hashed and looked up
 * by hash, and the stored hash is compared with CRYPTO_memcmp.
 *
 * Signed links: HMAC-SHA256 over "<job id>.<expiry>" with a 32-byte
 * server secret kept in data_dir/secret.key (made on first use, mode 0600).
 *
 * Rate limits: a sliding window per key and per limit (requests in the last
 * 60 s, in the last 86400 s), kept in memory: exact, so a burst gets
 * exactly the allowed count, and the refusal says when the oldest request
 * in the window leaves it.
 *
 * Tiers: configuration (a JSON file in the /api/v1/tiers shape, or the
 * built-in table): the largest output width and height and the credits a
 * job costs.
 *
 * Thread safety: everything here may be called from any thread.
 */
#ifndef UPRES_AUTH_AUTH_H
#define UPRES_AUTH_AUTH_H

#include <stddef.h>

#include "core/err.h"

#define AUTH_KEY_PREFIX "upres_"
#define AUTH_KEY_LEN 49         /* "upres_" + 43 base64url characters */
#define AUTH_KEY_DISPLAY_LEN 14 /* "upres_" + 8 characters, stored for display */

/* ---- keys ---------------------------------------------------------------------- */

/*
 * Make a new key: key (at least AUTH_KEY_LEN + 1 bytes) gets the secret,
 * hash its SHA-256, display (at least AUTH_KEY_DISPLAY_LEN + 1 bytes) its
 * first characters. Returns 0, or UP_ERR_IO when the CSPRNG fails.
 */
int auth_key_generate(char *key, unsigned char hash[32], char *display);

/* SHA-256 of key (its bytes, no terminator). */
void auth_key_hash(const char *key, unsigned char hash[32]);

/* 1 when key has the form of one of ours ("upres_" + 43 base64url characters), else 0. */
int auth_key_wellformed(const char *key);

/* 1 when a and b (32 bytes each) are equal, in time independent of where they differ. */
int auth_hash_equal(const unsigned char a[32], const unsigned char b[32]);

/*
 * The token of an Authorization header value "Bearer <token>" (scheme
 * case-insensitive, surrounding spaces ignored). Returns a pointer into
 * header and its length in *len, or NULL when the header is not a Bearer
 * credential.
 */
const char *auth_bearer_token(const char *header, size_t *len);

/* ---- signed links --------------------------------------------------------------- */

/*
 * Load data_dir/secret.key, making it (32 random bytes, mode 0600) when
 * missing. A file of another size is an error, never silently replaced
 * (that would void every link given out). Returns 0, or UP_ERR_IO.
 */
int auth_secret_load(const char *data_dir, unsigned char secret[32], up_error_t *err);

/*
 * A secret given by the operator, shared by servers that share no data
 * folder: text is 64 hexadecimal digits (surrounding white space ignored);
 * path is a regular file of 32 raw bytes (a copy of a secret.key) or of
 * such text. UP_ERR_INVALID for anything else, UP_ERR_IO when unreadable.
 */
int auth_secret_parse(const char *text, size_t len, unsigned char secret[32], up_error_t *err);
int auth_secret_read(const char *path, unsigned char secret[32], up_error_t *err);

/* sig (65 bytes) gets the lower-case hex HMAC-SHA256 of "<id>.<expires>" under secret. */
void auth_sign(const unsigned char secret[32], const char *id, long long expires, char sig[65]);

/*
 * Check a link's signature and expiry at time now (Unix seconds). Returns 0
 * when sig is right and now <= expires, UP_ERR_INVALID when sig is not the
 * signature (wrong, malformed, for another id or expiry), UP_ERR_EXPIRED
 * when it is right but late. Constant-time comparison.
 */
int auth_verify(const unsigned char secret[32], const char *id, long long expires, const char *sig,
                double now);

/* ---- rate limits ---------------------------------------------------------------- */

typedef struct ratelimit ratelimit_t;

/*
 * Limits per key: per_minute requests in any 60 s, per_day in any 86400 s;
 * 0 turns a limit off. Returns new (ratelimit_free), never NULL.
 */
ratelimit_t *ratelimit_new(int per_minute, int per_day);
void ratelimit_free(ratelimit_t *rl); /* accepts NULL */

/*
 * Count a request by key (any string, copied) at time now (seconds, any
 * clock that does not jump, the same on every call). Returns 1 when it is
 * allowed (and counted), 0 when over a limit (not counted); then
 * *retry_after (may be NULL) gets the seconds until a request would be
 * allowed (> 0), and *window_s (may be NULL) the window of the limit hit
 * (60 or 86400).
 */
int ratelimit_take(ratelimit_t *rl, const char *key, double now, double *retry_after, int *window_s);

/* ---- tiers ---------------------------------------------------------------------- */

#define TIERS_MAX 8

typedef struct tier {
    char name[32];
    char description[256];
    int max_width, max_height; /* largest output, pixels */
    int credits;               /* cost of one job */
    double weight;             /* share of the workers against other keys' queued jobs (store.h "Order") */
    int max_priority; /* highest job priority a key of this tier may ask for, 0..STORE_PRIORITY_MAX */
} tier_t;

typedef struct tiers {
    tier_t tier[TIERS_MAX];
    int n;
} tiers_t;

/*
 * The built-in table: basic (1 credit, up to 4096x4096 output, weight 1,
 * priority up to 0), pro (3 credits, 8192x8192, weight 2, up to 2),
 * premium (5 credits, 16384x16384, weight 4, up to 5).
 */
void tiers_default(tiers_t *t);

/*
 * Read a tier table from a JSON file shaped as GET /api/v1/tiers answers:
 * {"tiers": {"basic": {"description": ..., "max_width": N, "max_height": N,
 * "credits": N, "weight": W, "max_priority": P}, ...}} (name defaults to
 * the key; at most TIERS_MAX tiers; credits >= 0, sizes >= 1; weight 0.01
 * to 1000, default 1; max_priority 0 to 10, default 0). Returns 0, or UP_ERR_IO / UP_ERR_FORMAT with
 * err saying where.
 */
int tiers_load(const char *path, tiers_t *t, up_error_t *err);

/* The tier named name, or NULL. */
const tier_t *tiers_find(const tiers_t *t, const char *name);

/* ---- time ----------------------------------------------------------------------- */

/* Unix time at which the UTC calendar month holding t began (the quota period). */
double auth_month_start(double t);

/* The start of t's UTC day (Unix seconds): a guest session's credit period. */
double auth_day_start(double t);

#endif
