/*
 * server_test.c - tests for src/http/server.c through a real server on
 * 127.0.0.1 (port 0) started here with a table of test handlers, spoken to
 * over plain sockets (so that repeated headers and the raw early refusals
 * are seen as sent): the CORS headers on every kind of reply (JSON, 404,
 * 405 with Allow, a file, an event stream, a 413 at the head and one
 * written raw in the middle of a chunked body), headers a handler sets on
 * a file and on a stream, a handler's own Access-Control-Allow-Origin,
 * preflights and plain OPTIONS, origin lists (echo and Vary; an unlisted
 * origin gets nothing), CORS off; the Accept test and joined header lines;
 * and the checking of cors_origins values. The pure Accept parser is
 * table driven.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "core/log.h"
#include "http/http.h"
#include "test.h"

static char dir[64];
static char file_path[128];

/* ---- handlers ------------------------------------------------------------------- */

static void h_json(http_request_t *req, void *ctx) {
    (void)ctx;
    http_reply_json(req, 200, json_pack("{s:b}", "ok", 1));
}

static void h_param(http_request_t *req, void *ctx) {
    (void)ctx;
    const char *id = http_request_param(req, "id");
    http_reply_json(req, 200, json_pack("{s:s}", "id", id ? id : ""));
}

static void h_stream_literal(http_request_t *req, void *ctx) {
    (void)ctx;
    http_reply_json(req, 200, json_pack("{s:s}", "route", "literal"));
}

static void h_file(http_request_t *req, void *ctx) {
    (void)ctx;
    http_reply_header(req, "X-Test", "file");
    if (http_reply_file(req, 200, file_path, "text/plain", "a.txt"))
        http_reply_error(req, 500, "no file");
}

static int sse_fill(http_sse_t *s, void *arg) {
    (void)arg;
    http_sse_send(s, "status", "{\"n\":1}");
    return 1; /* the last: the stream ends */
}

static void sse_end(void *arg) { (void)arg; }

static void h_sse(http_request_t *req, void *ctx) {
    (void)ctx;
    http_sse_t *s;
    http_reply_header(req, "X-Test", "sse");
    if (http_reply_sse(req, sse_fill, sse_end, NULL, &s))
        http_reply_error(req, 500, "no stream");
}

static void h_accepts(http_request_t *req, void *ctx) {
    (void)ctx;
    const char *multi = http_request_header_all(req, "X-Multi");
    http_reply_json(req, 200,
                    json_pack("{s:b,s:b,s:s?}", "html", http_request_accepts(req, "text/html"), "json",
                              http_request_accepts(req, "application/json"), "multi", multi));
}

static void h_own_cors(http_request_t *req, void *ctx) {
    (void)ctx;
    http_reply_header(req, "Access-Control-Allow-Origin", "https://mine.example");
    http_reply_json(req, 200, json_pack("{}"));
}

static void h_vary(http_request_t *req, void *ctx) {
    (void)ctx;
    http_reply_header(req, "Vary", "Accept");
    http_reply_json(req, 200, json_pack("{}"));
}

static void h_upload(http_request_t *req, void *ctx) {
    (void)ctx;
    http_reply_json(req, 200, json_pack("{s:b}", "ok", 1));
}

static void h_options(http_request_t *req, void *ctx) {
    (void)ctx;
    http_reply_data(req, 200, "text/plain", "mine", 4);
}

/* literal routes after the param ones: the router must not go by table order */
static const http_route_t routes[] = {
    {"GET", "/json", h_json},
    {"GET", "/status/{id}", h_param},
    {"GET", "/status/stream", h_stream_literal},
    {"POST", "/json", h_json},
    {"GET", "/file", h_file},
    {"GET", "/sse", h_sse},
    {"GET", "/accepts", h_accepts},
    {"GET", "/own", h_own_cors},
    {"GET", "/vary", h_vary},
    {"POST", "/up", h_upload},
    {"GET", "/opt", h_json},
    {"OPTIONS", "/opt", h_options},
};

/* ---- a client ------------------------------------------------------------------- */

typedef struct reply {
    unsigned status;
    char data[65536]; /* the whole reply, NUL-terminated */
    size_t size;
    const char *body;
} reply_t;

/* Send the request whole, read until the server closes. 0 with a status line, else -1. */
static int exchange(int port, const char *request, reply_t *r) {
    memset(r, 0, sizeof *r);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    size_t n = strlen(request);
    for (size_t off = 0; off < n;) {
        ssize_t k = send(fd, request + off, n - off, MSG_NOSIGNAL);
        if (k <= 0)
            break; /* the server answered early and closed: read what it said */
        off += (size_t)k;
    }
    for (;;) {
        ssize_t k = recv(fd, r->data + r->size, sizeof r->data - 1 - r->size, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0 || (r->size += (size_t)k) == sizeof r->data - 1)
            break;
    }
    close(fd);
    r->data[r->size] = '\0';
    if (r->size < 12 || strncmp(r->data, "HTTP/1.1 ", 9))
        return -1;
    r->status = (unsigned)atoi(r->data + 9);
    const char *end = strstr(r->data, "\r\n\r\n");
    r->body = end ? end + 4 : "";
    return 0;
}

/* The value of the k-th (0 = first) header line named name, in buf; NULL when there are fewer. */
static const char *header(const reply_t *r, const char *name, int k, char *buf, size_t size) {
    const char *end = strstr(r->data, "\r\n\r\n");
    size_t n = strlen(name);
    for (const char *h = strstr(r->data, "\r\n"); h && end && h < end; h = strstr(h + 2, "\r\n")) {
        const char *line = h + 2;
        if (strncasecmp(line, name, n) || line[n] != ':' || k-- > 0)
            continue;
        const char *v = line + n + 1;
        v += strspn(v, " ");
        size_t len = strcspn(v, "\r");
        snprintf(buf, size, "%.*s", (int)len, v);
        return buf;
    }
    return NULL;
}

static int n_headers(const reply_t *r, const char *name) {
    char buf[8];
    int n = 0;
    while (header(r, name, n, buf, sizeof buf))
        n++;
    return n;
}

/* 1 when the header named name has exactly the value want. */
static int header_is(const reply_t *r, const char *name, const char *want) {
    char buf[2048];
    const char *v = header(r, name, 0, buf, sizeof buf);
    return v && !strcmp(v, want);
}

/* 1 when the ", "-list in the header named name holds item (without case). */
static int header_lists(const reply_t *r, const char *name, const char *item) {
    char buf[2048];
    const char *v = header(r, name, 0, buf, sizeof buf);
    size_t n = strlen(item);
    for (const char *p = v; p && *p;) {
        p += strspn(p, ", ");
        size_t k = strcspn(p, ",");
        if (k == n && !strncasecmp(p, item, n))
            return 1;
        p += k;
    }
    return 0;
}

static int get(int port, const char *method, const char *path, const char *extra, reply_t *r) {
    char req[4096];
    snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s\r\n", method,
             path, extra ? extra : "");
    return exchange(port, req, r);
}

static http_server_t *start(const char *cors_origins) {
    http_config_t cfg;
    http_config_init(&cfg);
    cfg.port = 0;
    cfg.n_threads = 2;
    cfg.n_defer_threads = 1;
    cfg.n_fetch_threads = 1;
    cfg.upload_dir = dir;
    cfg.max_upload = 1000;
    cfg.cors_origins = cors_origins;
    http_server_t *srv = NULL;
    up_error_t err;
    if (http_server_start(&cfg, routes, (int)(sizeof routes / sizeof routes[0]), NULL, &srv, &err)) {
        fprintf(stderr, "cannot start the server: %s\n", err.msg);
        exit(1);
    }
    return srv;
}

#define EXPOSE "Content-Disposition, Content-Length, Retry-After, Idempotent-Replayed"

/* ---- CORS "*" (the default) ------------------------------------------------------- */

static int cors_any(const reply_t *r) {
    return header_is(r, "Access-Control-Allow-Origin", "*") &&
           header_is(r, "Access-Control-Expose-Headers", EXPOSE);
}

static void test_any(void) {
    http_server_t *srv = start(NULL); /* NULL: the default, "*" */
    int port = http_server_port(srv);
    reply_t *r = malloc(sizeof *r);

    CHECK(get(port, "GET", "/json", NULL, r) == 0 && r->status == 200 && cors_any(r));
    CHECK(n_headers(r, "Vary") == 0); /* "*" does not depend on the Origin */
    CHECK(get(port, "GET", "/json", "Origin: https://any.example\r\n", r) == 0 && r->status == 200 &&
          cors_any(r));

    CHECK(get(port, "GET", "/nope", NULL, r) == 0 && r->status == 404 && cors_any(r));
    CHECK(get(port, "DELETE", "/json", NULL, r) == 0 && r->status == 405 && cors_any(r) &&
          header_is(r, "Allow", "GET, HEAD, POST, OPTIONS"));
    CHECKF(strstr(r->body, "METHOD_NOT_ALLOWED") != NULL, "%s", r->body);

    /* a file, with a header its handler set */
    CHECK(get(port, "GET", "/file", NULL, r) == 0 && r->status == 200 && cors_any(r) &&
          header_is(r, "X-Test", "file") &&
          header_is(r, "Content-Disposition", "attachment; filename=\"a.txt\"") &&
          !strcmp(r->body, "file bytes\n"));
    /* an event stream, with a header its handler set */
    CHECK(get(port, "GET", "/sse", NULL, r) == 0 && r->status == 200 && cors_any(r) &&
          header_is(r, "X-Test", "sse") && header_is(r, "Content-Type", "text/event-stream") &&
          strstr(r->body, "event: status") != NULL);
    /* a handler's own Allow-Origin replaces the server's */
    CHECK(get(port, "GET", "/own", NULL, r) == 0 && r->status == 200 &&
          n_headers(r, "Access-Control-Allow-Origin") == 1 &&
          header_is(r, "Access-Control-Allow-Origin", "https://mine.example") &&
          n_headers(r, "Access-Control-Expose-Headers") == 0);

    /* 413 from the head (Content-Length over max_upload) */
    CHECK(get(port, "POST", "/up", "Content-Type: application/json\r\nContent-Length: 5000\r\n", r) == 0 &&
          r->status == 413 && cors_any(r));
    /* 413 written raw in the middle of a chunked body */
    char big[8192];
    int n = snprintf(big, sizeof big,
                     "POST /up HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n%x\r\n",
                     3000);
    memset(big + n, 'a', 3000);
    snprintf(big + n + 3000, sizeof big - (size_t)n - 3000, "\r\n0\r\n\r\n");
    CHECK(exchange(port, big, r) == 0 && r->status == 413 && cors_any(r) &&
          header_is(r, "Connection", "close"));
    CHECKF(n_headers(r, "Date") == 0, "the raw answer (write_early), not MHD's"); /* MHD adds a Date */

    /* a preflight on a routed path: no handler runs (OPTIONS has no route on /json) */
    CHECK(get(port, "OPTIONS", "/json",
              "Origin: https://app.example\r\nAccess-Control-Request-Method: POST\r\n"
              "Access-Control-Request-Headers: content-type, x-custom\r\n",
              r) == 0 &&
          r->status == 204 && cors_any(r));
    CHECK(header_lists(r, "Access-Control-Allow-Methods", "POST") &&
          header_lists(r, "Access-Control-Allow-Methods", "GET"));
    const char *want[] = {"Content-Type",  "Authorization",   "X-Session-Token", "Last-Event-ID",
                          "Cache-Control", "Idempotency-Key", "x-custom"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        CHECKF(header_lists(r, "Access-Control-Allow-Headers", want[i]), "Allow-Headers has %s", want[i]);
    char buf[2048];
    const char *ah = header(r, "Access-Control-Allow-Headers", 0, buf, sizeof buf);
    CHECKF(ah && !strstr(ah, "content-type"), "asked headers already allowed are not repeated: %s",
           ah ? ah : "");
    CHECK(header_is(r, "Access-Control-Max-Age", "600"));
    CHECK(header_is(r, "Allow", "GET, HEAD, POST, OPTIONS"));
    CHECK(r->body[0] == '\0' && n_headers(r, "Content-Length") == 0); /* 204: no body */
    /* a method the path lacks is allowed too (the page then reads a 405 with CORS, not a CORS failure) */
    CHECK(get(port, "OPTIONS", "/status/x", "Access-Control-Request-Method: PUT\r\n", r) == 0 &&
          r->status == 204 && header_lists(r, "Access-Control-Allow-Methods", "PUT") &&
          header_lists(r, "Access-Control-Allow-Methods", "GET"));
    /* a header name that is not a token is left out */
    CHECK(get(port, "OPTIONS", "/json",
              "Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: a b, ok\r\n", r) == 0 &&
          r->status == 204 && header_lists(r, "Access-Control-Allow-Headers", "ok") &&
          !header_lists(r, "Access-Control-Allow-Headers", "a b"));
    /* a preflight even where the table has an OPTIONS route; a plain OPTIONS there is the handler's */
    CHECK(get(port, "OPTIONS", "/opt", "Access-Control-Request-Method: GET\r\n", r) == 0 &&
          r->status == 204 && header_is(r, "Access-Control-Max-Age", "600"));
    CHECK(get(port, "OPTIONS", "/opt", NULL, r) == 0 && r->status == 200 && !strcmp(r->body, "mine") &&
          cors_any(r));
    /* a plain OPTIONS on a routed path: 204 with Allow, no preflight headers */
    CHECK(get(port, "OPTIONS", "/status/abc", NULL, r) == 0 && r->status == 204 &&
          header_is(r, "Allow", "GET, HEAD, OPTIONS") && cors_any(r) &&
          n_headers(r, "Access-Control-Allow-Methods") == 0);
    /* a preflight on an unknown path: 404 JSON, with CORS */
    CHECK(get(port, "OPTIONS", "/nope", "Access-Control-Request-Method: GET\r\n", r) == 0 &&
          r->status == 404 && cors_any(r) && strstr(r->body, "NOT_FOUND") != NULL &&
          n_headers(r, "Access-Control-Allow-Methods") == 0);

    /* the literal route, listed after the param one, answers its path */
    CHECK(get(port, "GET", "/status/stream", NULL, r) == 0 && r->status == 200 && strstr(r->body, "literal"));
    CHECK(get(port, "GET", "/status/j1", NULL, r) == 0 && r->status == 200 && strstr(r->body, "\"j1\""));

    /* Accept and joined header lines */
    CHECK(get(port, "GET", "/accepts", "Accept: text/html,application/xhtml+xml,*/*;q=0.8\r\n", r) == 0 &&
          strstr(r->body, "\"html\":true") && strstr(r->body, "\"json\":false"));
    CHECK(get(port, "GET", "/accepts", "Accept: */*\r\n", r) == 0 && strstr(r->body, "\"html\":false"));
    CHECK(get(port, "GET", "/accepts", NULL, r) == 0 && strstr(r->body, "\"html\":false") &&
          strstr(r->body, "\"multi\":null"));
    CHECK(get(port, "GET", "/accepts",
              "Accept: application/json\r\nAccept: text/html\r\nX-Multi: a\r\nx-multi: b\r\n", r) == 0 &&
          strstr(r->body, "\"html\":true") && strstr(r->body, "\"json\":true") &&
          strstr(r->body, "\"multi\":\"a, b\""));
    free(r);
    http_server_stop(srv);
}

/* ---- a list of origins ----------------------------------------------------------- */

static void test_list(void) {
    http_server_t *srv = start(" https://app.example , http://localhost:3000");
    int port = http_server_port(srv);
    reply_t *r = malloc(sizeof *r);
    /* listed: echoed as sent, with Vary */
    CHECK(get(port, "GET", "/json", "Origin: http://localhost:3000\r\n", r) == 0 && r->status == 200 &&
          header_is(r, "Access-Control-Allow-Origin", "http://localhost:3000") &&
          header_is(r, "Vary", "Origin") && header_is(r, "Access-Control-Expose-Headers", EXPOSE));
    CHECK(get(port, "GET", "/json", "Origin: https://APP.example\r\n", r) == 0 &&
          header_is(r, "Access-Control-Allow-Origin", "https://APP.example"));
    /* one Vary line: Origin joins the handler's */
    CHECK(get(port, "GET", "/vary", "Origin: https://app.example\r\n", r) == 0 && n_headers(r, "Vary") == 1 &&
          header_is(r, "Vary", "Accept, Origin"));
    /* unlisted, or none: no CORS header, only Vary */
    CHECK(get(port, "GET", "/json", "Origin: https://evil.example\r\n", r) == 0 && r->status == 200 &&
          n_headers(r, "Access-Control-Allow-Origin") == 0 &&
          n_headers(r, "Access-Control-Expose-Headers") == 0 && header_is(r, "Vary", "Origin"));
    CHECK(get(port, "GET", "/json", "Origin: https://app.example.evil\r\n", r) == 0 &&
          n_headers(r, "Access-Control-Allow-Origin") == 0);
    CHECK(get(port, "GET", "/json", NULL, r) == 0 && n_headers(r, "Access-Control-Allow-Origin") == 0);
    /* preflights: a listed origin's is answered; an unlisted one's is a plain OPTIONS */
    CHECK(get(port, "OPTIONS", "/json",
              "Origin: https://app.example\r\nAccess-Control-Request-Method: POST\r\n", r) == 0 &&
          r->status == 204 && header_is(r, "Access-Control-Allow-Origin", "https://app.example") &&
          header_lists(r, "Access-Control-Allow-Methods", "POST") &&
          header_is(r, "Access-Control-Max-Age", "600") && header_lists(r, "Vary", "Origin") &&
          n_headers(r, "Vary") == 1);
    CHECK(get(port, "OPTIONS", "/json",
              "Origin: https://evil.example\r\nAccess-Control-Request-Method: POST\r\n", r) == 0 &&
          r->status == 204 && n_headers(r, "Access-Control-Allow-Origin") == 0 &&
          n_headers(r, "Access-Control-Allow-Methods") == 0 &&
          n_headers(r, "Access-Control-Allow-Headers") == 0 &&
          header_is(r, "Allow", "GET, HEAD, POST, OPTIONS"));
    /* the raw early refusal echoes a listed origin too */
    char big[8192];
    int n = snprintf(big, sizeof big,
                     "POST /up HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://app.example\r\nContent-Type: "
                     "application/json\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n",
                     3000);
    memset(big + n, 'a', 3000);
    snprintf(big + n + 3000, sizeof big - (size_t)n - 3000, "\r\n0\r\n\r\n");
    CHECK(exchange(port, big, r) == 0 && r->status == 413 &&
          header_is(r, "Access-Control-Allow-Origin", "https://app.example") &&
          header_is(r, "Vary", "Origin"));
    free(r);
    http_server_stop(srv);
}

/* ---- CORS off -------------------------------------------------------------------- */

static void test_off(void) {
    const char *offs[] = {"", "none", " NONE "};
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
        http_server_t *srv = start(offs[i]);
        int port = http_server_port(srv);
        reply_t *r = malloc(sizeof *r);
        CHECK(get(port, "GET", "/json", "Origin: https://app.example\r\n", r) == 0 && r->status == 200 &&
              n_headers(r, "Access-Control-Allow-Origin") == 0 && n_headers(r, "Vary") == 0);
        CHECK(get(port, "OPTIONS", "/json",
                  "Origin: https://app.example\r\nAccess-Control-Request-Method: POST\r\n", r) == 0 &&
              r->status == 204 && n_headers(r, "Access-Control-Allow-Methods") == 0 &&
              header_is(r, "Allow", "GET, HEAD, POST, OPTIONS"));
        free(r);
        http_server_stop(srv);
    }
}

/* ---- pure parts ------------------------------------------------------------------- */

static void test_accepts(void) {
    static const struct {
        const char *accept, *type;
        int want;
    } cases[] = {
        {"text/html", "text/html", 1},
        {"TEXT/HTML", "text/html", 1},
        {"text/html;q=0.9", "text/html", 1},
        {"text/html; q=0", "text/html", 0},
        {"text/html;q=0.000", "text/html", 0},
        {"text/html;q=0.001", "text/html", 1},
        {"text/html ; Q = 0", "text/html", 0},
        {"application/json, text/html;level=1", "text/html", 1},
        {"*/*", "text/html", 0},
        {"text/*", "text/html", 0},
        {"text/htmlx", "text/html", 0},
        {"text/htm", "text/html", 0},
        {"application/json", "text/html", 0},
        {"a/b;x=\"text/html, q=1\", application/json", "text/html", 0},
        {"a/b;x=\"q\\\"x,y\";q=1, text/html", "text/html", 1},
        {"text/html;q=0, text/html", "text/html", 0}, /* the first decides */
        {"", "text/html", 0},
        {",,, ;;, text/html", "text/html", 1},
        {"text/html;q=", "text/html", 1},
        {"text/html;\"unterminated", "text/html", 1},
        {NULL, "text/html", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECKF(http_accepts(cases[i].accept, cases[i].type) == cases[i].want, "accepts('%s', %s)",
               cases[i].accept ? cases[i].accept : "NULL", cases[i].type);
}

static void test_origins_check(void) {
    static const struct {
        const char *list;
        int ok;
    } cases[] = {
        {"*", 1},
        {"", 1},
        {"none", 1},
        {NULL, 1},
        {"https://app.example", 1},
        {"https://app.example, http://localhost:3000", 1},
        {"http://[::1]:8080", 1},
        {"http://127.0.0.1", 1},
        {"chrome-extension://abcdef", 1},
        {"https://a.example,*", 1},
        {"https://app.example/", 0},
        {"https://app.example/path", 0},
        {"app.example", 0},
        {"https://", 0},
        {"https://a.example,,https://b.example", 0},
        {"https://a.example,", 0},
        {"none, https://a.example", 0},
        {"https://user@a.example", 0},
        {"https://a.example:99999", 0},
        {"1http://a.example", 0},
        {"ht tp://a.example", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        up_error_t err;
        err.msg[0] = '\0';
        int rc = http_cors_origins_check(cases[i].list, &err);
        CHECKF((rc == 0) == cases[i].ok, "origins '%s': rc %d (%s)", cases[i].list ? cases[i].list : "NULL",
               rc, err.msg);
        if (!cases[i].ok)
            CHECKF(rc == UP_ERR_INVALID && err.msg[0], "origins '%s': a message", cases[i].list);
    }
    /* too many */
    char many[HTTP_CORS_MAX * 32 + 64] = "";
    for (int i = 0; i <= HTTP_CORS_MAX; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%shttp://h%d.example", i ? "," : "", i);
    up_error_t err;
    CHECK(http_cors_origins_check(many, &err) == UP_ERR_INVALID);
    http_config_t cfg;
    http_config_init(&cfg);
    CHECK(cfg.cors_origins && !strcmp(cfg.cors_origins, "*"));
    cfg.port = 0;
    cfg.upload_dir = dir;
    cfg.cors_origins = "https://x.example/";
    http_server_t *srv = (http_server_t *)1;
    CHECK(http_server_start(&cfg, routes, 1, NULL, &srv, &err) == UP_ERR_INVALID && srv == NULL);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    log_set_level(LOG_ERROR);
    OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, NULL); /* in this thread: see tests/fuzz/loopback.h */
    snprintf(dir, sizeof dir, "/tmp/upres-http-test-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(file_path, sizeof file_path, "%s/a.txt", dir);
    FILE *f = fopen(file_path, "w");
    if (!f || fputs("file bytes\n", f) < 0 || fclose(f))
        return 1;
    test_accepts();
    test_origins_check();
    test_any();
    test_list();
    test_off();
    unlink(file_path);
    CHECKF(rmdir(dir) == 0, "the upload folder is left empty: %s", strerror(errno));
    return test_summary();
}
