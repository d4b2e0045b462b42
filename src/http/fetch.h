/*
 * fetch.h - a safe HTTP(S) fetcher for user-supplied URLs (the upres.ai
 * `image_url`), built on libcurl.
 *
 * A URL that a client hands us must not become a way to reach our own
 * network (server-side request forgery). So only http and https are spoken,
 * also after redirects, and the address of every connection actually dialled
 * is checked at connect time (CURLOPT_OPENSOCKETFUNCTION), which covers
 * redirects, DNS names that resolve to private addresses and DNS rebinding:
 * the check runs on the resolved address itself, before a socket exists.
 * Loopback, private, link-local (incl. 169.254.169.254), CGNAT, multicast,
 * documentation and reserved ranges are refused, in IPv4 and IPv6, and IPv6
 * forms that embed an IPv4 address (IPv4-mapped, NAT64, 6to4, IPv4-compatible)
 * are judged by the embedded IPv4 address. An `allow` list of CIDR ranges
 * lets named ranges through (the tests fetch from a loopback server with it).
 *
 * Limits: the body size (Content-Length checked up front and the bytes
 * counted while receiving; the transfer is aborted as soon as it passes),
 * the total time, the connect time and the number of redirects. No
 * Accept-Encoding is sent and nothing is decompressed, so the size limit
 * holds on the bytes we keep (no decompression bombs). Proxies from the
 * environment are ignored. The Content-Type is not looked at: the caller
 * decides what the bytes are by decoding them.
 *
 * Thread safety: fetch_url may run on many threads at once (one curl easy
 * handle per call, CURLOPT_NOSIGNAL). fetch_global_init runs
 * curl_global_init once; fetch_url calls it itself.
 */
#ifndef UPRES_HTTP_FETCH_H
#define UPRES_HTTP_FETCH_H

#include <stddef.h>
#include <sys/socket.h>

#include "core/err.h"

#define FETCH_DEFAULT_MAX_BYTES ((size_t)50 * 1000 * 1000)

typedef struct fetch_opts {
    size_t max_bytes;         /* body limit in bytes; 0 = FETCH_DEFAULT_MAX_BYTES */
    double timeout_s;         /* whole transfer incl. redirects, seconds; <= 0 = 10 */
    double min_rate;          /* bytes/s below which a transfer is cut once it lasted min_rate_s; 0 = none */
    double min_rate_s;        /* seconds of too slow a transfer allowed; <= 0 = 3 */
    double connect_timeout_s; /* each connect, seconds; <= 0 = 10 */
    int max_redirects;        /* redirects followed; < 0 = 5; 0 = none followed */
    const char *allow;        /* borrowed; comma-separated CIDR ranges allowed although
                                 not public ("127.0.0.0/8,::1/128"); NULL/"" = none */
} fetch_opts_t;

/* Fill o with the defaults: 50 MB, 30 s, 10 s, 5 redirects, no allow list. */
void fetch_opts_init(fetch_opts_t *o);

/*
 * Run curl_global_init once for the process (pthread_once); thread-safe.
 * Returns 0, or UP_ERR_IO when libcurl could not be initialised (every later
 * call returns the same).
 */
int fetch_global_init(void);

/*
 * GET url and return its body. o may be NULL for the defaults.
 *
 * On success returns 0, *body is new (caller free()s; never NULL, even for
 * an empty body) and *size its length in bytes. On failure *body is NULL,
 * *size 0, and err (may be NULL) gets the code and one sentence saying why,
 * fit to show to the client:
 *   UP_ERR_INVALID   malformed URL, a scheme other than http/https (also
 *                    after a redirect), a refused address ("refused:
 *                    169.254.169.254 is a link-local address"), too many
 *                    redirects, or a malformed allow list: the request
 *                    itself is at fault
 *   UP_ERR_TOO_LARGE the body is over max_bytes (by Content-Length or counted)
 *   UP_ERR_IO        DNS failure, connection refused or failed, timeout,
 *                    a final HTTP status outside 2xx ("the server answered
 *                    404"), TLS or other transfer failure (the message says
 *                    which): the other end is at fault
 *   UP_ERR_NOMEM     the body buffer could not be grown
 */
int fetch_url(const char *url, const fetch_opts_t *o, void **body, size_t *size, up_error_t *err);

/*
 * The address check run on each address before it is dialled. sa is an
 * AF_INET or AF_INET6 address (anything else is refused); allow as in
 * fetch_opts_t (borrowed; a malformed entry allows nothing). Returns 1 when
 * the address may be dialled (public, or inside an allow range), 0 when
 * refused; then why (may be NULL) gets "refused: ADDR is a KIND address"
 * (truncated to why_size). Thread-safe, no allocation.
 */
int fetch_addr_allowed(const struct sockaddr *sa, const char *allow, char *why, size_t why_size);

/*
 * Check the syntax of an allow list (for configuration loading). Returns 0,
 * or UP_ERR_INVALID with err naming the bad entry.
 */
int fetch_allow_validate(const char *allow, up_error_t *err);

#endif
