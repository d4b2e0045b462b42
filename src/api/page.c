/*
 * page.c - the web page: web/page/ served at /page/{file}, its index at /
 * for browsers (tinify.c's root hands over when Accept names text/html),
 * and the model previews at /page/preview/{name}.png.
 *
 * The page is static files with a strict Content-Security-Policy: nothing
 * is built, nothing comes from another origin. A preview is the 48x48 crop
 * web/preview-source.png ("source.png", the before) and that crop through
 * one model ("MODEL.png", the after, 4x): rendered by the engine on first
 * request and kept in DATA/previews, so that what the page shows is what
 * this server's models make, on this server's engine.
 */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/api.h"
#include "core/clock.h"
#include "core/log.h"

#define PAGE_CSP                                                                                             \
    "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "                   \
    "frame-ancestors 'none'; form-action 'self'"
#define PREVIEW_SOURCE "preview-source.png"

const char *api_file_type(const char *name) {
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".json", "application/json"},
        {".map", "application/json"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".webp", "image/webp"},
        {".ico", "image/x-icon"},
        {".txt", "text/plain; charset=utf-8"},
    };
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (!strcasecmp(dot, types[i].ext))
            return types[i].type;
    return "application/octet-stream";
}

int api_file_name_ok(const char *name) {
    if (!name[0] || name[0] == '.')
        return 0;
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' && *p != '_')
            return 0;
    return 1;
}

/* A file of web/page/ (or the previews' folder), with the headers every page file gets. */
static void reply_file(http_request_t *req, const char *dir, const char *file, int page) {
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    http_reply_header(req, "X-Content-Type-Options", "nosniff");
    http_reply_header(req, "Cache-Control", "no-cache"); /* a new release is seen at the next load */
    if (page) {
        http_reply_header(req, "Content-Security-Policy", PAGE_CSP);
        http_reply_header(req, "Referrer-Policy", "same-origin");
    }
    if (http_reply_file(req, 200, path, api_file_type(file), NULL))
        http_reply_error(req, 404, "no such file: %s", file);
}

void api_page_index(api_t *api, http_request_t *req) {
    char dir[1536];
    snprintf(dir, sizeof dir, "%s/page", api->web_dir);
    reply_file(req, dir, "index.html", 1);
}

static void h_page_file(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    const char *file = http_request_param(req, "file");
    if (!api_file_name_ok(file)) {
        http_reply_error(req, 404, "no such file: %s", file);
        return;
    }
    char dir[1536];
    snprintf(dir, sizeof dir, "%s/page", api->web_dir);
    reply_file(req, dir, file, !strcmp(file, "index.html"));
}

/* ---- previews ------------------------------------------------------------------ */

static pthread_mutex_t preview_lock = PTHREAD_MUTEX_INITIALIZER; /* one rendering at a time */

/* Render model's preview into path (image_save_file: never a partial file). 0, or an error with err. */
static int preview_render(const api_t *api, const char *model, const char *path, up_error_t *err) {
    char src[1536];
    snprintf(src, sizeof src, "%s/%s", api->web_dir, PREVIEW_SOURCE);
    const upscale_variant_t *variant;
    upscaler_t *up = NULL;
    up_image_t *in = NULL, *out = NULL;
    upscale_opts_t opts;
    upscale_opts_init(&opts);
    image_save_opts_t save = {.format = "png"};
    int rc = upscale_registry_resolve(api->jobs.registry, model, 4, &variant, err);
    if (!rc)
        rc = upscaler_new(api->jobs.registry, variant, api->backend, 1, &up, err);
    if (!rc)
        rc = image_load_file(src, NULL, &in, err);
    if (!rc) {
        opts.scale = 4;
        rc = upscaler_run(up, in, &opts, &out, err);
    }
    if (!rc)
        rc = image_save_file(out, path, &save, err);
    image_free(in);
    image_free(out);
    upscaler_free(up);
    return rc;
}

static void h_preview(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    const char *file = http_request_param(req, "file");
    size_t n = strlen(file);
    if (!api_file_name_ok(file) || n <= 4 || strcmp(file + n - 4, ".png")) {
        http_reply_error(req, 404, "no such preview: %s", file);
        return;
    }
    if (!strcmp(file, "source.png")) {
        reply_file(req, api->web_dir, PREVIEW_SOURCE, 0);
        return;
    }
    char model[128];
    snprintf(model, sizeof model, "%.*s", (int)(n - 4), file);
    if (!upscale_registry_find(api->jobs.registry, model)) {
        http_reply_error_code(req, 404, "NOT_FOUND", NULL,
                              "no model '%s' here: GET /api/v1/models lists them", model);
        return;
    }
    char dir[1536], path[2048];
    snprintf(dir, sizeof dir, "%s/previews", blob_root(api->jobs.blobs));
    snprintf(path, sizeof path, "%s/%s", dir, file);
    up_error_t err = {0};
    int rc = 0;
    pthread_mutex_lock(&preview_lock);
    if (access(path, R_OK)) {
        if (mkdir(dir, 0755) && errno != EEXIST) {
            up_error_set(&err, UP_ERR_IO, 0, "cannot create %s: %s", dir, strerror(errno));
            rc = -1;
        } else {
            double t0 = now_s();
            rc = preview_render(api, model, path, &err);
            if (!rc)
                log_info("page: rendered the %s preview in %.2f s", model, now_s() - t0);
        }
    }
    pthread_mutex_unlock(&preview_lock);
    if (rc) {
        log_error("page: the %s preview: %s", model, err.msg);
        http_reply_error_code(req, 500, "INTERNAL", NULL, "cannot render the %s preview: %s", model, err.msg);
        return;
    }
    reply_file(req, dir, file, 0);
}

static const http_route_t routes[] = {
    {"GET", "/page/{file}", h_page_file},
    {"GET", "/page/preview/{file}", h_preview},
};

const http_route_t *page_routes(int *n_routes) {
    *n_routes = (int)(sizeof routes / sizeof routes[0]);
    return routes;
}
