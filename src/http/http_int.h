/*
 * http_int.h - what the HTTP layer's files share and its unit tests reach,
 * behind the public face (http.h): the router (router.c).
 */
#ifndef UPRES_HTTP_HTTP_INT_H
#define UPRES_HTTP_HTTP_INT_H

#include "http/http.h"

#define HTTP_ALLOW_MAX 128 /* bytes of an Allow list ("GET, HEAD, POST, OPTIONS") */

/* What a path and a method found in a route table. */
typedef struct http_match {
    const http_route_t *route;  /* the route that answers; NULL when none */
    char allow[HTTP_ALLOW_MAX]; /* the path's methods, as an Allow header lists them; "" when no route has the
                                   path */
    int n_params;
    char param_name[HTTP_MAX_PARAMS][32];   /* the route's "{name}" segments */
    char param_value[HTTP_MAX_PARAMS][256]; /* what the path has there (not decoded further) */
} http_match_t;

/*
 * Route method on path through routes (n_routes, borrowed). Among the
 * patterns that match the path, the most specific wins whatever the table
 * order: segments compare from the left, and at the first where the two
 * differ a literal beats a "{name}" (so "/status/stream" is never
 * "/status/{job_id}", and "/a/b/{x}" beats "/a/{y}/c" for "/a/b/c"); equally
 * specific patterns go by table order. Within the winning patterns the
 * route of method answers (HEAD is answered by GET's); m->allow lists their
 * methods in table order, HEAD after GET, and OPTIONS (which the server
 * answers itself) last. A lesser pattern with the method does not answer:
 * the path names the winning resource, so that is 405.
 *
 * Returns 1 with m->route and its params set, 0 when the path matched only
 * with other methods (405: m->allow says which), -1 when no pattern
 * matched (404; m->allow is ""). Pure: any thread.
 */
int http_route_find(const http_route_t *routes, int n_routes, const char *method, const char *path,
                    http_match_t *m);

#endif
