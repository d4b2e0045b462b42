/*
 * reply_fuzz.c - fuzz target for the JSON reply encoders of the HTTP layer
 * (http_reply_error, http_reply_error_code, http_reply_json in
 * src/http/server.c) fed with client text: whatever bytes a client puts in
 * a path, a query value, a form field or a file name, the reply is JSON.
 *
 * An in-process server (loopback.h) serves a route table of our own whose
 * handlers echo every client string they can read back into a reply, the
 * three ways a dialect does it:
 *
 *   /error/{p}  400 http_reply_error   "p=... q=... f=... n=..." as the message
 *   /code/{p}   422 http_reply_error_code, code "ECHO", the strings as extra fields
 *   /json/{p}   200 http_reply_json    {"p": ..., "q": ..., "f": ..., "n": ...}
 *
 * (p the path parameter, q the query value v, f the form field v, n the
 * upload's file name). Input: byte 0 picks the part (% 4: path, query,
 * field, file name) and the handler ((byte 0 / 4) % 3); the rest is the
 * client's text, percent-encoded whole in the path and the query, raw in
 * the multipart body. Checked for every input:
 *
 *   - a complete HTTP reply, and its body a JSON object;
 *   - the handler's status (or 404 for a path that names no route, 400 for
 *     a multipart body the parser refused), never 500: a refused encoding
 *     comes out as 500 "out of memory";
 *   - an error reply has a string "error" and "code"; a /code or /json
 *     reply has the echoed part as a string;
 *   - text that is valid UTF-8 without NUL, short enough to be kept whole
 *     and not taken apart by the HTTP syntax comes back byte for byte.
 *
 * Invalid UTF-8 or a cut inside a character must be made valid by the HTTP
 * layer (U+FFFD) rather than lose the reply. In ctest through driver.c
 * (seeds: tests/fuzz/seeds/reply); with libFuzzer: tests/fuzz/run.sh 60 reply.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "loopback.h"

#define REPLY_FUZZ_MAX_TEXT 6000 /* bytes of client text: past HTTP_FIELD_MAX, to cut fields */
#define BOUNDARY "upresFuzzBoundary7MA4YWxkTrZu0gW"

enum { PART_PATH, PART_QUERY, PART_FIELD, PART_NAME };
enum { KIND_ERROR, KIND_CODE, KIND_JSON };
static const char *const kind_path[] = {"/error/", "/code/", "/json/"};
static const unsigned kind_status[] = {400, 422, 200};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *or_empty(const char *s) { return s ? s : ""; }

static const char *upload_name(http_request_t *req) {
    const char *name = NULL;
    if (http_request_upload(req, "file", NULL, &name, NULL))
        return NULL;
    return name;
}

static void h_error(http_request_t *req, void *ctx) {
    (void)ctx;
    http_reply_error(req, 400, "p=%s q=%s f=%s n=%s", or_empty(http_request_param(req, "p")),
                     or_empty(http_request_query(req, "v")), or_empty(http_request_field(req, "v")),
                     or_empty(upload_name(req)));
}

/*
 * The client's strings as a JSON object (new), and "has": the letters of
 * those the HTTP layer handed over. A string jansson refuses is left out,
 * and then missed: it is in "has" but not in the reply.
 */
static json_t *echo(http_request_t *req) {
    json_t *o = json_object();
    const char *s[4] = {http_request_param(req, "p"), http_request_query(req, "v"),
                        http_request_field(req, "v"), upload_name(req)};
    static const char *const keys[] = {"p", "q", "f", "n"};
    char has[5];
    size_t n = 0;
    for (int i = 0; i < 4; i++)
        if (s[i]) {
            json_object_set_new(o, keys[i], json_string(s[i]));
            has[n++] = keys[i][0];
        }
    has[n] = '\0';
    json_object_set_new(o, "has", json_string(has));
    return o;
}

static void h_code(http_request_t *req, void *ctx) {
    (void)ctx;
    const char *q = http_request_query(req, "v");
    http_reply_error_code(req, 422, "ECHO", echo(req), "echo of %s",
                          q ? q : or_empty(http_request_param(req, "p")));
}

static void h_json(http_request_t *req, void *ctx) {
    (void)ctx;
    http_reply_json(req, 200, echo(req));
}

static const http_route_t routes[] = {
    {"GET", "/error/{p}", h_error},  {"GET", "/code/{p}", h_code},  {"GET", "/json/{p}", h_json},
    {"POST", "/error/{p}", h_error}, {"POST", "/code/{p}", h_code}, {"POST", "/json/{p}", h_json},
};

static char request[4 * REPLY_FUZZ_MAX_TEXT + 1024];

/* The JSON key a part is echoed as. */
static const char *part_key(int part) {
    static const char *const keys[] = {"p", "q", "f", "n"};
    return keys[part];
}

/* 1 when the text must come back unchanged: clean UTF-8, kept whole, not part of the HTTP syntax. */
static int kept_whole(int part, const unsigned char *s, size_t n) {
    if (!lb_utf8_clean(s, n))
        return 0;
    switch (part) {
    case PART_PATH: return n >= 1 && n < 256 && !memchr(s, '/', n);
    case PART_QUERY: return 1;
    case PART_FIELD: return n <= HTTP_FIELD_MAX && !memmem(s, n, "\r\n--", 4);
    case PART_NAME:
        if (n == 0 || n >= 256 || memmem(s, n, "name", 4))
            return 0;
        for (size_t i = 0; i < n; i++)
            if (s[i] == '"' || s[i] == '\\' || s[i] == ';' || s[i] == '\r' || s[i] == '\n' || s[i] == '=')
                return 0;
        return 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size - 1 > REPLY_FUZZ_MAX_TEXT)
        return 0;
    http_config_t cfg;
    http_config_init(&cfg);
    cfg.max_upload = 64 * 1024;
    lb_start(&cfg, routes, (int)(sizeof routes / sizeof routes[0]), NULL);

    int part = data[0] % 4, kind = (data[0] / 4) % 3;
    const unsigned char *text = data + 1;
    size_t n = size - 1, len = 0, cap = sizeof request;
    char *q = request;
    if (part == PART_PATH || part == PART_QUERY) {
        lb_puts(q, cap, &len, "GET ");
        lb_puts(q, cap, &len, kind_path[kind]);
        if (part == PART_PATH)
            lb_put_pct(q, cap, &len, text, n);
        else {
            lb_puts(q, cap, &len, "x?v=");
            lb_put_pct(q, cap, &len, text, n);
        }
        lb_puts(q, cap, &len, " HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n");
    } else {
        char body[REPLY_FUZZ_MAX_TEXT + 512];
        size_t blen = 0;
        lb_puts(body, sizeof body, &blen, "--" BOUNDARY "\r\n");
        if (part == PART_FIELD) {
            lb_puts(body, sizeof body, &blen, "Content-Disposition: form-data; name=\"v\"\r\n\r\n");
            lb_put(body, sizeof body, &blen, text, n);
            lb_puts(body, sizeof body, &blen, "\r\n");
        } else {
            lb_puts(body, sizeof body, &blen, "Content-Disposition: form-data; name=\"file\"; filename=\"");
            lb_put(body, sizeof body, &blen, text, n);
            lb_puts(body, sizeof body, &blen,
                    "\"\r\nContent-Type: application/octet-stream\r\n\r\nbytes\r\n");
        }
        lb_puts(body, sizeof body, &blen, "--" BOUNDARY "--\r\n");
        char head[256];
        snprintf(head, sizeof head,
                 "POST %sx HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n"
                 "Content-Type: multipart/form-data; boundary=" BOUNDARY "\r\nContent-Length: %zu\r\n\r\n",
                 kind_path[kind], blen);
        lb_puts(q, cap, &len, head);
        lb_put(q, cap, &len, body, blen);
    }

    lb_reply_t r;
    json_t *o = lb_exchange_json(request, len, &r);
    int whole = kept_whole(part, text, n);
    unsigned want = kind_status[kind];
    int routed = r.status == want;
    /* text taken apart by the HTTP syntax: a path that names no route, a body the parser refused */
    int refused = !whole && ((part == PART_PATH && r.status == 404) ||
                             ((part == PART_FIELD || part == PART_NAME) && r.status == 400));
    if (!routed && !refused)
        lb_fail(r.status >= 500 ? "a server error (a string the encoder refused?)" : "an unexpected status",
                &r);
    if (r.status >= 400 &&
        (!json_is_string(json_object_get(o, "error")) || !json_is_string(json_object_get(o, "code"))))
        lb_fail("an error reply without a string error and code", &r);
    if (routed && kind != KIND_ERROR) {
        const char *has = json_string_value(json_object_get(o, "has"));
        json_t *echoed = json_object_get(o, part_key(part));
        if (!has)
            lb_fail("the handler's reply lost its fields", &r);
        if ((strchr(has, part_key(part)[0]) || whole) && !json_is_string(echoed))
            lb_fail("the client's text is missing from the reply", &r);
        if (whole && (json_string_length(echoed) != n || memcmp(json_string_value(echoed), text, n)))
            lb_fail("valid UTF-8 did not come back unchanged", &r);
    }
    json_decref(o);
    lb_reply_fini(&r);
    return 0;
}
