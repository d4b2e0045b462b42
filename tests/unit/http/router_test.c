/*
 * router_test.c - tests for src/http/router.c: which route answers a path
 * and a method. Table driven: literal segments beat "{name}" ones whatever
 * the table order (both orders of each table are tried), a segment with a
 * literal part beats a bare "{name}", the leftmost difference decides,
 * equal patterns go by table order; HEAD is GET's; 405 when the winning
 * pattern lacks the method, with the Allow list; 404; params and their
 * limits. Then every route of the real dialect tables (api_routes) is
 * found by a path built from its own pattern: none is shadowed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "http/http_int.h"
#include "test.h"

static void h_a(http_request_t *req, void *ctx) {
    (void)req;
    (void)ctx;
}

#define ROUTES_MAX 8

typedef struct route_case {
    const char *name;
    http_route_t routes[ROUTES_MAX]; /* ends at a NULL method */
    const char *method, *path;
    int found;           /* http_route_find's answer */
    const char *pattern; /* of the route that answers (found 1) */
    const char *answer_method;
    const char *allow;
    const char *param, *value; /* one param to check, or NULL */
} route_case_t;

static const route_case_t cases[] = {
    {"a literal beats a param",
     {{"GET", "/status/{job_id}", h_a}, {"GET", "/status/stream", h_a}},
     "GET",
     "/status/stream",
     1,
     "/status/stream",
     "GET",
     "GET, HEAD, OPTIONS",
     NULL,
     NULL},
    {"the param still answers other segments",
     {{"GET", "/status/{job_id}", h_a}, {"GET", "/status/stream", h_a}},
     "GET",
     "/status/0b3c",
     1,
     "/status/{job_id}",
     "GET",
     "GET, HEAD, OPTIONS",
     "job_id",
     "0b3c"},
    {"a literal's path with another method is 405, not the param route",
     {{"GET", "/status/{job_id}", h_a}, {"POST", "/status/stream", h_a}},
     "GET",
     "/status/stream",
     0,
     NULL,
     NULL,
     "POST, OPTIONS",
     NULL,
     NULL},
    {"the leftmost difference decides",
     {{"GET", "/a/{x}/c", h_a}, {"GET", "/a/b/{y}", h_a}},
     "GET",
     "/a/b/c",
     1,
     "/a/b/{y}",
     "GET",
     "GET, HEAD, OPTIONS",
     "y",
     "c"},
    {"a segment with a literal part beats a bare param",
     {{"GET", "/f/{name}", h_a}, {"GET", "/f/img-{id}", h_a}},
     "GET",
     "/f/img-42",
     1,
     "/f/img-{id}",
     "GET",
     "GET, HEAD, OPTIONS",
     "id",
     "42"},
    {"a literal beats a segment with a literal part",
     {{"GET", "/f/img-{id}", h_a}, {"GET", "/f/img-new", h_a}},
     "GET",
     "/f/img-new",
     1,
     "/f/img-new",
     "GET",
     "GET, HEAD, OPTIONS",
     NULL,
     NULL},
    {"deeper: /status/{id}/stream vs /status/stream/{x}",
     {{"GET", "/status/{job_id}/stream", h_a}, {"GET", "/status/stream/{x}", h_a}},
     "GET",
     "/status/stream/stream",
     1,
     "/status/stream/{x}",
     "GET",
     "GET, HEAD, OPTIONS",
     "x",
     "stream"},
    {"the methods of one path, in table order, without repeats",
     {{"POST", "/v1/jobs", h_a},
      {"GET", "/v1/jobs", h_a},
      {"GET", "/v1/jobs/{id}", h_a},
      {"GET", "/v1/jobs", h_a}},
     "DELETE",
     "/v1/jobs",
     0,
     NULL,
     NULL,
     "POST, GET, HEAD, OPTIONS",
     NULL,
     NULL},
    {"HEAD is answered by GET",
     {{"GET", "/health", h_a}},
     "HEAD",
     "/health",
     1,
     "/health",
     "GET",
     "GET, HEAD, OPTIONS",
     NULL,
     NULL},
    {"a HEAD route answers HEAD",
     {{"GET", "/health", h_a}, {"HEAD", "/health", h_a}},
     "HEAD",
     "/health",
     1,
     "/health",
     "HEAD",
     "GET, HEAD, OPTIONS",
     NULL,
     NULL},
    {"an OPTIONS route answers OPTIONS",
     {{"OPTIONS", "/x", h_a}, {"GET", "/x", h_a}},
     "OPTIONS",
     "/x",
     1,
     "/x",
     "OPTIONS",
     "OPTIONS, GET, HEAD",
     NULL,
     NULL},
    {"equal patterns: table order",
     {{"GET", "/x/{a}", h_a}, {"GET", "/x/{b}", h_a}},
     "GET",
     "/x/1",
     1,
     "/x/{a}",
     "GET",
     "GET, HEAD, OPTIONS",
     "a",
     "1"},
    {"an empty segment is no param",
     {{"GET", "/status/{job_id}", h_a}},
     "GET",
     "/status/",
     -1,
     NULL,
     NULL,
     "",
     NULL,
     NULL},
    {"no route", {{"GET", "/a", h_a}}, "GET", "/b", -1, NULL, NULL, "", NULL, NULL},
    {"a longer path is no match", {{"GET", "/a", h_a}}, "GET", "/a/b", -1, NULL, NULL, "", NULL, NULL},
    {"a shorter path is no match", {{"GET", "/a/{x}", h_a}}, "GET", "/a", -1, NULL, NULL, "", NULL, NULL},
    {"two params",
     {{"GET", "/u/{user}/j/{job}", h_a}},
     "GET",
     "/u/ann/j/7",
     1,
     "/u/{user}/j/{job}",
     "GET",
     "GET, HEAD, OPTIONS",
     "job",
     "7"},
};

static int n_routes_of(const route_case_t *c) {
    int n = 0;
    while (n < ROUTES_MAX && c->routes[n].method)
        n++;
    return n;
}

static void check_case(const route_case_t *c, const http_route_t *routes, int n, const char *order) {
    http_match_t m;
    int found = http_route_find(routes, n, c->method, c->path, &m);
    CHECKF(found == c->found, "%s (%s): found %d, want %d", c->name, order, found, c->found);
    if (c->found == 1 && found == 1) {
        CHECKF(!strcmp(m.route->pattern, c->pattern) && !strcmp(m.route->method, c->answer_method),
               "%s (%s): %s %s answered", c->name, order, m.route->method, m.route->pattern);
    }
    if (c->found != 1)
        CHECKF(m.route == NULL, "%s (%s): no route", c->name, order);
    if (!strcmp(order, "as written")) /* the Allow order follows the table's */
        CHECKF(!strcmp(m.allow, c->allow), "%s: allow '%s', want '%s'", c->name, m.allow, c->allow);
    if (c->param && found == 1) {
        const char *v = NULL;
        for (int i = 0; i < m.n_params; i++)
            if (!strcmp(m.param_name[i], c->param))
                v = m.param_value[i];
        CHECKF(v && !strcmp(v, c->value), "%s (%s): param %s = %s", c->name, order, c->param,
               v ? v : "(none)");
    }
}

static void test_cases(void) {
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const route_case_t *c = &cases[i];
        int n = n_routes_of(c);
        check_case(c, c->routes, n, "as written");
        /* reversed: precedence must not come from the order, except between equal patterns */
        if (!strcmp(c->name, "equal patterns: table order"))
            continue;
        http_route_t rev[ROUTES_MAX];
        for (int k = 0; k < n; k++)
            rev[k] = c->routes[n - 1 - k];
        check_case(c, rev, n, "reversed");
    }
}

static void test_limits(void) {
    static const http_route_t five[] = {{"GET", "/{a}/{b}/{c}/{d}/{e}", h_a}};
    static const http_route_t four[] = {{"GET", "/{a}/{b}/{c}/{d}", h_a}};
    http_match_t m;
    CHECK(http_route_find(five, 1, "GET", "/1/2/3/4/5", &m) == -1); /* over HTTP_MAX_PARAMS: never matches */
    CHECK(http_route_find(four, 1, "GET", "/1/2/3/4", &m) == 1 && m.n_params == 4 &&
          !strcmp(m.param_value[3], "4"));
    /* a segment longer than a param holds is no match, not a cut one */
    char path[600] = "/1/2/3/";
    memset(path + 7, 'x', 300);
    path[307] = '\0';
    CHECK(http_route_find(four, 1, "GET", path, &m) == -1);
    /* an empty table */
    CHECK(http_route_find(NULL, 0, "GET", "/", &m) == -1 && m.allow[0] == '\0' && !m.route);
}

/* Every route of the real tables answers a path made from its own pattern ("{x}" -> "p1"). */
static void test_api_tables(void) {
    int n = 0;
    http_route_t *routes = api_routes(&n);
    CHECK(n > 10);
    for (int i = 0; i < n; i++) {
        char path[512];
        size_t len = 0;
        for (const char *p = routes[i].pattern; *p && len + 4 < sizeof path;) {
            if (*p == '{') {
                const char *close = strchr(p, '}');
                memcpy(path + len, "p1", 2);
                len += 2;
                p = close ? close + 1 : p + strlen(p);
            } else {
                path[len++] = *p++;
            }
        }
        path[len] = '\0';
        http_match_t m;
        int found = http_route_find(routes, n, routes[i].method, path, &m);
        CHECKF(found == 1 && !strcmp(m.route->pattern, routes[i].pattern) &&
                   !strcmp(m.route->method, routes[i].method),
               "%s %s: path %s answered by %s", routes[i].method, routes[i].pattern, path,
               found == 1 ? m.route->pattern : "nothing");
        CHECKF(strstr(m.allow, routes[i].method) && strstr(m.allow, "OPTIONS"), "%s: allow %s", path,
               m.allow);
    }
    free(routes);
}

int main(void) {
    test_cases();
    test_limits();
    test_api_tables();
    return test_summary();
}
