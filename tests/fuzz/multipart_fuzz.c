/*
 * multipart_fuzz.c - fuzz target for multipart/form-data request bodies:
 * libmicrohttpd's post processor as src/http/server.c drives it
 * (upload_iter: text fields kept, the first file part streamed to the
 * upload folder, the max_upload limit enforced while streaming).
 *
 * An in-process server (loopback.h) with small limits (max_upload
 * MULTIPART_FUZZ_MAX_UPLOAD bytes, max_body 1 KB) serves POST /up, whose
 * handler checks what the HTTP layer hands it: an upload named "image" is a
 * file of the size reported and within the limit, every text field fits
 * HTTP_FIELD_MAX bytes as sent (3 times that once invalid bytes became
 * U+FFFD). Input: byte 0 picks
 *
 *   bit 0      the rest is a file part's content, framed by fixed boundary
 *              lines (0), or the whole body, boundary lines included (1);
 *   bit 1      Content-Length (0) or chunked transfer encoding (1); a body
 *              over max_upload always goes chunked, so that the server
 *              reads all of it and the 413 is not lost to a reset;
 *   bits 2..3  the Content-Type's form: plain, quoted boundary, a charset
 *              before it, upper case.
 *
 * Checked for every input: a complete HTTP reply with a JSON object body
 * (any status), the upload folder empty once the reply is read (an upload
 * the handler did not take is gone), and the next request answered (the
 * server stays up). In ctest through driver.c (seeds:
 * tests/fuzz/seeds/multipart); with libFuzzer: tests/fuzz/run.sh 60 multipart.
 */
#include <dirent.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "loopback.h"

#define MULTIPART_FUZZ_MAX_UPLOAD 4096 /* bytes of a request body */
#define MULTIPART_FUZZ_MAX_INPUT 8192  /* bytes of one input: past the limit, to reach the 413 */
#define BOUNDARY "upresFuzzBoundary7MA4YWxkTrZu0gW"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void h_upload(http_request_t *req, void *ctx) {
    (void)ctx;
    const char *path, *name;
    unsigned long long n = 0;
    int has = http_request_upload(req, "image", &path, &name, &n) == 0;
    if (has) {
        struct stat st;
        if (!path || !name || stat(path, &st) || (unsigned long long)st.st_size != n ||
            n > MULTIPART_FUZZ_MAX_UPLOAD)
            abort(); /* the upload is not what the HTTP layer says it is */
    }
    static const char *const names[] = {"model", "scale", "format", "v", "image"};
    int n_fields = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *v = http_request_field(req, names[i]);
        if (v && strlen(v) > 3 * HTTP_FIELD_MAX)
            abort(); /* HTTP_FIELD_MAX bytes, each at most U+FFFD (3 bytes) once made valid UTF-8 */
        n_fields += v != NULL;
    }
    http_reply_json(req, 200,
                    json_pack("{s:b,s:I,s:i}", "upload", has, "size", (json_int_t)n, "fields", n_fields));
}

static const http_route_t routes[] = {{"POST", "/up", h_upload}};

static const char *const content_types[] = {
    "multipart/form-data; boundary=" BOUNDARY,
    "multipart/form-data; boundary=\"" BOUNDARY "\"",
    "multipart/form-data; charset=utf-8; boundary=" BOUNDARY,
    "Multipart/Form-Data; BOUNDARY=" BOUNDARY,
};

/* 1 when the upload folder holds no file. */
static int dir_empty(void) {
    DIR *d = opendir(lb_dir);
    if (!d)
        abort();
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            empty = 0;
    closedir(d);
    return empty;
}

static char body[MULTIPART_FUZZ_MAX_INPUT + 512];
static char request[2 * sizeof body + 1024];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size - 1 > MULTIPART_FUZZ_MAX_INPUT)
        return 0;
    http_config_t cfg;
    http_config_init(&cfg);
    cfg.max_upload = MULTIPART_FUZZ_MAX_UPLOAD;
    cfg.max_body = 1024;
    lb_start(&cfg, routes, 1, NULL);

    int whole = data[0] & 1, chunked = (data[0] >> 1) & 1;
    const char *ct = content_types[(data[0] >> 2) & 3];
    const unsigned char *text = data + 1;
    size_t n = size - 1, blen = 0;
    if (!whole)
        lb_puts(body, sizeof body, &blen,
                "--" BOUNDARY "\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nx4\r\n"
                "--" BOUNDARY "\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
                "Content-Type: image/png\r\n\r\n");
    lb_put(body, sizeof body, &blen, text, n);
    if (!whole)
        lb_puts(body, sizeof body, &blen, "\r\n--" BOUNDARY "--\r\n");
    if (blen > MULTIPART_FUZZ_MAX_UPLOAD)
        chunked = 1;

    size_t len = 0, cap = sizeof request;
    char head[512];
    snprintf(head, sizeof head,
             "POST /up HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\nContent-Type: %s\r\n", ct);
    lb_puts(request, cap, &len, head);
    if (chunked) {
        lb_puts(request, cap, &len, "Transfer-Encoding: chunked\r\n\r\n");
        size_t step = 7 + (size_t)(data[0] >> 4) * 97; /* chunk sizes 7..1462 */
        for (size_t at = 0; at < blen; at += step) {
            size_t k = blen - at < step ? blen - at : step;
            char line[32];
            snprintf(line, sizeof line, "%zx\r\n", k);
            lb_puts(request, cap, &len, line);
            lb_put(request, cap, &len, body + at, k);
            lb_puts(request, cap, &len, "\r\n");
        }
        lb_puts(request, cap, &len, "0\r\n\r\n");
    } else {
        snprintf(head, sizeof head, "Content-Length: %zu\r\n\r\n", blen);
        lb_puts(request, cap, &len, head);
        lb_put(request, cap, &len, body, blen);
    }

    lb_reply_t r;
    json_t *o = lb_exchange_json(request, len, &r);
    if (r.status >= 400 && !json_is_string(json_object_get(o, "error")))
        lb_fail("an error reply without a string error", &r);
    if (r.status == 200 && blen > MULTIPART_FUZZ_MAX_UPLOAD)
        lb_fail("a body over max_upload was accepted", &r);
    json_decref(o);
    lb_reply_fini(&r);
    if (!dir_empty())
        lb_fail("an upload was left in the upload folder", NULL);
    return 0;
}
