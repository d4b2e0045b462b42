/*
 * router.c - which route of a table answers a request: pattern matching,
 * the precedence of literal segments over "{name}" ones, and the path's
 * methods for Allow (405 and OPTIONS). The server (server.c) calls it once
 * per request; it knows nothing of MHD.
 */
#include <stdio.h>
#include <string.h>

#include "http/http_int.h"

#define RANK_SEGMENTS 64 /* segments of a path that count for precedence (deeper ones tie) */

/* How specific a pattern segment is: more beats less. */
enum { SEG_PARAM = 0, SEG_MIXED = 1, SEG_LITERAL = 2 };

/*
 * Match path against pattern: 1 on a match, with the params in m (when not
 * NULL) and each segment's rank in rank[] (*n_segments of them, at most
 * RANK_SEGMENTS). A "{name}" takes the rest of its path segment, at least
 * one byte, so pattern and path have the same segments.
 */
static int match(const char *pattern, const char *path, http_match_t *m, unsigned char rank[RANK_SEGMENTS],
                 int *n_segments) {
    int n = 0, seg = 0;
    const char *p = pattern, *s = path;
    unsigned char here = SEG_LITERAL; /* the current segment's rank so far */
    int literal_chars = 0;            /* of the current segment */
    while (*p && *s) {
        if (*p == '{') {
            const char *close = strchr(p, '}');
            if (!close || n >= HTTP_MAX_PARAMS)
                return 0;
            const char *end = strchr(s, '/');
            size_t len = end ? (size_t)(end - s) : strlen(s);
            if (len == 0 || len >= sizeof m->param_value[0])
                return 0;
            size_t nlen = (size_t)(close - p - 1);
            if (nlen >= sizeof m->param_name[0])
                return 0;
            if (m) {
                memcpy(m->param_name[n], p + 1, nlen);
                m->param_name[n][nlen] = '\0';
                memcpy(m->param_value[n], s, len);
                m->param_value[n][len] = '\0';
            }
            n++;
            here = SEG_PARAM;
            p = close + 1;
            s += len;
            continue;
        }
        if (*p != *s)
            return 0;
        if (*p == '/') { /* a segment ends */
            if (seg < RANK_SEGMENTS)
                rank[seg] = here == SEG_PARAM && literal_chars ? SEG_MIXED : here;
            seg++;
            here = SEG_LITERAL;
            literal_chars = 0;
        } else {
            literal_chars++;
        }
        p++;
        s++;
    }
    if (*p || *s)
        return 0;
    if (seg < RANK_SEGMENTS)
        rank[seg] = here == SEG_PARAM && literal_chars ? SEG_MIXED : here;
    seg++;
    *n_segments = seg < RANK_SEGMENTS ? seg : RANK_SEGMENTS;
    if (m)
        m->n_params = n;
    return 1;
}

/* Append method to the Allow list unless it is there. */
static void allow_add(char *allow, const char *method) {
    size_t n = strlen(method), len = strlen(allow);
    for (const char *a = allow; *a;) {
        size_t k = strcspn(a, ",");
        if (k == n && !strncmp(a, method, n))
            return;
        a += k;
        a += strspn(a, ", ");
    }
    if (len + n + 3 > HTTP_ALLOW_MAX)
        return; /* a table with that many methods on one path: the list stops there */
    snprintf(allow + len, HTTP_ALLOW_MAX - len, "%s%s", len ? ", " : "", method);
}

int http_route_find(const http_route_t *routes, int n_routes, const char *method, const char *path,
                    http_match_t *m) {
    memset(m, 0, sizeof *m);
    unsigned char best[RANK_SEGMENTS], rank[RANK_SEGMENTS];
    int n_best = -1, n_seg = 0;
    /* the winning rank first: the table order must not decide between unequal patterns */
    for (int i = 0; i < n_routes; i++) {
        if (!match(routes[i].pattern, path, NULL, rank, &n_seg))
            continue;
        if (n_best < 0 || memcmp(rank, best, (size_t)n_seg) > 0) {
            memcpy(best, rank, (size_t)n_seg);
            n_best = n_seg;
        }
    }
    if (n_best < 0)
        return -1;
    const http_route_t *get = NULL; /* HEAD is GET's unless the table has a HEAD */
    for (int i = 0; i < n_routes; i++) {
        const http_route_t *r = &routes[i];
        if (!match(r->pattern, path, NULL, rank, &n_seg) || memcmp(rank, best, (size_t)n_best))
            continue;
        allow_add(m->allow, r->method);
        if (!strcmp(r->method, "GET"))
            allow_add(m->allow, "HEAD");
        if (!m->route && !strcmp(r->method, method))
            m->route = r;
        if (!get && !strcmp(r->method, "GET"))
            get = r;
    }
    allow_add(m->allow, "OPTIONS");
    if (!m->route && !strcmp(method, "HEAD"))
        m->route = get;
    if (m->route)
        match(m->route->pattern, path, m, rank, &n_seg); /* its params */
    return m->route ? 1 : 0;
}
