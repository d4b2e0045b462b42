/*
 * server.c - libmicrohttpd glue: daemon set-up, routing, multipart uploads
 * streamed to disk, replies, per-request log lines. See http.h for the
 * model; this file is the only one that includes microhttpd.h.
 *
 * DESIGN: one http_request_t per HTTP request, created on MHD's first
 * access callback and freed in the "request completed" notification. The
 * access callback is called again for each chunk of body (fed to MHD's
 * post processor, which calls upload_iter) and once more with no data,
 * when the handler runs and the response is queued. All of a request's
 * callbacks run on the same MHD thread, so the request needs no lock.
 *
 * Deferred requests: http_request_defer suspends the connection and queues
 * the request for the background threads. While suspended, MHD does not
 * touch the connection, so the background thread owns the request; its
 * reply is built but not queued (MHD_queue_response belongs to the access
 * callback), then the connection is resumed, MHD calls the access callback
 * again, and that call queues the kept reply. The resume is the hand-over
 * (MHD takes a lock in it). At stop, the background threads finish what is
 * queued and exit before the daemon stops, so no connection is left
 * suspended (which MHD_stop_daemon does not allow).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/fileio.h"
#include "core/log.h"
#include "core/xmalloc.h"
#include "http/http.h"

#define MAX_HEADERS 8

typedef struct deferred {
    http_request_t *req;
    http_defer_fn fn;
    void *arg;
} deferred_t;

struct http_server {
    struct MHD_Daemon *daemon;
    /* background work (http_request_defer): a bounded ring under dmu */
    pthread_mutex_t dmu;
    pthread_cond_t dcv;
    pthread_t *dthreads;
    int n_dthreads;
    deferred_t *dq;
    int dq_cap, dq_head, dq_len;
    int dstop;
    const http_route_t *routes; /* borrowed static table */
    int n_routes;
    void *ctx;
    http_config_t cfg;
    char upload_dir[1024];
    int port;
};

typedef struct field {
    char name[64];
    char *value; /* new, NUL-terminated, at most HTTP_FIELD_MAX bytes */
    size_t len;
} field_t;

struct http_request {
    http_server_t *srv;
    struct MHD_Connection *conn;
    struct timespec t0;
    char method[16];
    char path[1024];
    const http_route_t *route; /* NULL: no route matched */
    int method_mismatch;       /* the path matched with another method */
    int n_params;
    char param_name[HTTP_MAX_PARAMS][32];
    char param_value[HTTP_MAX_PARAMS][256];
    /* body */
    struct MHD_PostProcessor *pp;
    unsigned long long body_bytes;
    int too_large;
    int bad_body; /* the post processor refused the body */
    int n_fields;
    field_t fields[HTTP_MAX_FIELDS];
    char *body; /* a body that is not multipart, NUL-terminated; NULL when none */
    size_t body_size, body_cap;
    /* the upload */
    int upload_fd; /* -1 when none open */
    int has_upload;
    char upload_field[64];
    char upload_path[1100];
    char upload_name[256];
    unsigned long long upload_size;
    /* the reply */
    int replied;
    unsigned status;
    unsigned long long reply_bytes;
    int n_headers;
    char *header_name[MAX_HEADERS], *header_value[MAX_HEADERS];
    http_complete_fn on_complete;
    char tag[128];
    /* deferred: set by the handler's thread, cleared when the kept reply is queued */
    int deferred;
    struct MHD_Response *kept; /* the background thread's reply, queued after the resume */
};

void http_config_init(http_config_t *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->listen_addr = "127.0.0.1";
    cfg->port = 8089;
    cfg->n_threads = 4;
    cfg->conn_timeout_s = 30;
    cfg->max_conns = 1024;
    cfg->max_conns_per_ip = 64;
    cfg->max_upload = 50ULL * 1000 * 1000;
    cfg->max_body = 1000 * 1000;
    cfg->n_defer_threads = 8;
    cfg->defer_queue = 256;
}

static double ms_since(const struct timespec *t0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

/* ---- routing ---------------------------------------------------------------- */

/* Match path against pattern; fill req's params. 1 on a match. */
static int match(http_request_t *req, const char *pattern, const char *path) {
    int n = 0;
    const char *p = pattern, *s = path;
    while (*p && *s) {
        if (*p == '{') {
            const char *close = strchr(p, '}');
            if (!close || n >= HTTP_MAX_PARAMS)
                return 0;
            const char *end = strchr(s, '/');
            size_t len = end ? (size_t)(end - s) : strlen(s);
            if (len == 0 || len >= sizeof req->param_value[0])
                return 0;
            size_t nlen = (size_t)(close - p - 1);
            if (nlen >= sizeof req->param_name[0])
                return 0;
            memcpy(req->param_name[n], p + 1, nlen);
            req->param_name[n][nlen] = '\0';
            memcpy(req->param_value[n], s, len);
            req->param_value[n][len] = '\0';
            n++;
            p = close + 1;
            s += len;
            continue;
        }
        if (*p != *s)
            return 0;
        p++;
        s++;
    }
    if (*p || *s)
        return 0;
    req->n_params = n;
    return 1;
}

static void route(http_request_t *req) {
    const char *m = req->method;
    if (!strcmp(m, "HEAD"))
        m = "GET";
    for (int i = 0; i < req->srv->n_routes; i++) {
        const http_route_t *r = &req->srv->routes[i];
        if (!match(req, r->pattern, req->path))
            continue;
        if (!strcmp(r->method, m)) {
            req->route = r;
            return;
        }
        req->method_mismatch = 1;
    }
    req->n_params = 0;
}

/* ---- the upload ---------------------------------------------------------------- */

static void upload_discard(http_request_t *req) {
    if (req->upload_fd >= 0) {
        close(req->upload_fd);
        req->upload_fd = -1;
    }
    if (req->upload_path[0]) {
        unlink(req->upload_path);
        req->upload_path[0] = '\0';
    }
    req->has_upload = 0;
}

static enum MHD_Result upload_iter(void *cls, enum MHD_ValueKind kind, const char *key, const char *filename,
                                   const char *content_type, const char *transfer_encoding, const char *data,
                                   uint64_t off, size_t size) {
    http_request_t *req = cls;
    (void)kind;
    (void)content_type;
    (void)transfer_encoding;
    (void)off;
    if (req->too_large || !key)
        return MHD_YES;
    if (filename) {
        if (req->has_upload && strcmp(req->upload_field, key))
            return MHD_YES; /* one file per request: later parts are ignored */
        if (!req->has_upload) {
            snprintf(req->upload_path, sizeof req->upload_path, "%s/.upload-XXXXXX", req->srv->upload_dir);
            req->upload_fd = mkstemp(req->upload_path);
            if (req->upload_fd < 0) {
                log_error("http: cannot create %s: %s", req->upload_path, strerror(errno));
                req->upload_path[0] = '\0';
                return MHD_NO;
            }
            req->has_upload = 1;
            snprintf(req->upload_field, sizeof req->upload_field, "%s", key);
            snprintf(req->upload_name, sizeof req->upload_name, "%s", filename);
        }
        if (req->upload_fd < 0)
            return MHD_YES; /* a second part with the same name after the first closed */
        if (write_all(req->upload_fd, data, size)) {
            log_error("http: writing %s: %s", req->upload_path, strerror(errno));
            upload_discard(req);
            return MHD_NO;
        }
        req->upload_size += size;
        return MHD_YES;
    }
    /* a text field: keep the first HTTP_FIELD_MAX bytes */
    field_t *f = NULL;
    for (int i = 0; i < req->n_fields; i++)
        if (!strcmp(req->fields[i].name, key))
            f = &req->fields[i];
    if (!f) {
        if (req->n_fields >= HTTP_MAX_FIELDS)
            return MHD_YES;
        f = &req->fields[req->n_fields++];
        snprintf(f->name, sizeof f->name, "%s", key);
        f->value = xcalloc(1, HTTP_FIELD_MAX + 1);
        f->len = 0;
    }
    size_t n = size;
    if (f->len + n > HTTP_FIELD_MAX)
        n = HTTP_FIELD_MAX - f->len;
    memcpy(f->value + f->len, data, n);
    f->len += n;
    f->value[f->len] = '\0';
    return MHD_YES;
}

/* ---- requests ------------------------------------------------------------------ */

static void request_free(http_request_t *req) {
    if (!req)
        return;
    if (req->kept)
        MHD_destroy_response(req->kept);
    if (req->pp)
        MHD_destroy_post_processor(req->pp);
    upload_discard(req);
    for (int i = 0; i < req->n_fields; i++)
        free(req->fields[i].value);
    free(req->body);
    for (int i = 0; i < req->n_headers; i++) {
        free(req->header_name[i]);
        free(req->header_value[i]);
    }
    free(req);
}

static void queue_reply(http_request_t *req, unsigned status, struct MHD_Response *resp,
                        unsigned long long bytes) {
    if (req->replied) {
        MHD_destroy_response(resp);
        return;
    }
    for (int i = 0; i < req->n_headers; i++)
        MHD_add_response_header(resp, req->header_name[i], req->header_value[i]);
    if (req->deferred)
        req->kept = resp; /* a background thread: queued by the access callback after the resume */
    else {
        MHD_queue_response(req->conn, status, resp);
        MHD_destroy_response(resp);
    }
    req->replied = 1;
    req->status = status;
    req->reply_bytes = bytes;
}

void http_reply_data(http_request_t *req, unsigned status, const char *content_type, const void *data,
                     size_t size) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(size, (void *)data, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return;
    if (content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    queue_reply(req, status, resp, size);
}

void http_reply_json(http_request_t *req, unsigned status, json_t *body) {
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
    json_decref(body);
    if (!text) {
        static const char oom[] = "{\"success\":false,\"error\":\"out of memory\"}";
        http_reply_data(req, 500, "application/json", oom, sizeof oom - 1);
        return;
    }
    http_reply_data(req, status, "application/json", text, strlen(text));
    free(text);
}

/* The machine-readable code of an error reply that names none. */
static const char *status_code_name(unsigned status) {
    switch (status) {
    case 400: return "INVALID_REQUEST";
    case 401: return "UNAUTHORIZED";
    case 403: return "FORBIDDEN";
    case 404: return "NOT_FOUND";
    case 405: return "METHOD_NOT_ALLOWED";
    case 409: return "CONFLICT";
    case 410: return "GONE";
    case 413: return "TOO_LARGE";
    case 415: return "UNSUPPORTED_IMAGE";
    case 422: return "UNPROCESSABLE";
    case 429: return "RATE_LIMITED";
    case 503: return "UNAVAILABLE";
    }
    return status >= 500 ? "INTERNAL" : "ERROR";
}

void http_reply_error(http_request_t *req, unsigned status, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    http_reply_json(req, status,
                    json_pack("{s:b,s:s,s:s}", "success", 0, "error", msg, "code", status_code_name(status)));
}

void http_reply_error_code(http_request_t *req, unsigned status, const char *code, json_t *extra,
                           const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *o = json_pack("{s:b,s:s,s:s}", "success", 0, "error", msg, "code", code);
    if (extra) {
        json_object_update(o, extra);
        json_decref(extra);
    }
    http_reply_json(req, status, o);
}

int http_reply_file(http_request_t *req, unsigned status, const char *path, const char *content_type,
                    const char *attachment_name) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? UP_ERR_NOT_FOUND : UP_ERR_IO;
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        return UP_ERR_IO;
    }
    struct MHD_Response *resp = MHD_create_response_from_fd((uint64_t)st.st_size, fd); /* takes fd */
    if (!resp) {
        close(fd);
        return UP_ERR_IO;
    }
    if (content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (attachment_name) {
        char cd[512];
        snprintf(cd, sizeof cd, "attachment; filename=\"%s\"", attachment_name);
        MHD_add_response_header(resp, "Content-Disposition", cd);
    }
    queue_reply(req, status, resp, (unsigned long long)st.st_size);
    return 0;
}

void http_reply_header(http_request_t *req, const char *name, const char *value) {
    if (req->n_headers >= MAX_HEADERS)
        return;
    req->header_name[req->n_headers] = xstrdup(name);
    req->header_value[req->n_headers] = xstrdup(value);
    req->n_headers++;
}

void http_request_on_complete(http_request_t *req, http_complete_fn fn) { req->on_complete = fn; }
void http_request_set_tag(http_request_t *req, const char *tag) {
    snprintf(req->tag, sizeof req->tag, "%s", tag);
}
const char *http_request_tag(const http_request_t *req) { return req->tag; }
const char *http_request_method(const http_request_t *req) { return req->method; }
const char *http_request_path(const http_request_t *req) { return req->path; }

const char *http_request_param(const http_request_t *req, const char *name) {
    for (int i = 0; i < req->n_params; i++)
        if (!strcmp(req->param_name[i], name))
            return req->param_value[i];
    return NULL;
}

const char *http_request_query(const http_request_t *req, const char *name) {
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *http_request_header(const http_request_t *req, const char *name) {
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *http_request_field(const http_request_t *req, const char *name) {
    for (int i = 0; i < req->n_fields; i++)
        if (!strcmp(req->fields[i].name, name))
            return req->fields[i].value;
    return NULL;
}

const char *http_request_body(const http_request_t *req, size_t *size) {
    if (size)
        *size = req->body ? req->body_size : 0;
    return req->body;
}

/* Keep n more bytes of a body that is not multipart; 0, or -1 when over the limit. */
static int body_append(http_request_t *req, const char *data, size_t n) {
    if (req->body_size + n > req->srv->cfg.max_body)
        return -1;
    if (req->body_size + n + 1 > req->body_cap) {
        size_t cap = req->body_cap ? req->body_cap : 4096;
        while (cap < req->body_size + n + 1)
            cap *= 2;
        req->body = xrealloc(req->body, cap);
        req->body_cap = cap;
    }
    memcpy(req->body + req->body_size, data, n);
    req->body_size += n;
    req->body[req->body_size] = '\0';
    return 0;
}

int http_request_upload(const http_request_t *req, const char *field, const char **path,
                        const char **filename, unsigned long long *size) {
    if (!req->has_upload || !req->upload_path[0] || strcmp(req->upload_field, field))
        return -1;
    if (path)
        *path = req->upload_path;
    if (filename)
        *filename = req->upload_name;
    if (size)
        *size = req->upload_size;
    return 0;
}

int http_request_upload_take(http_request_t *req, const char *dest, up_error_t *err) {
    if (!req->has_upload || !req->upload_path[0])
        return up_error_set(err, UP_ERR_NOT_FOUND, 0, "no upload");
    if (rename(req->upload_path, dest))
        return up_error_set(err, UP_ERR_IO, 0, "cannot move the upload to %s: %s", dest, strerror(errno));
    req->upload_path[0] = '\0';
    req->has_upload = 0;
    return 0;
}

/* ---- deferred work ------------------------------------------------------------- */

int http_request_defer(http_request_t *req, http_defer_fn fn, void *arg) {
    http_server_t *srv = req->srv;
    if (req->replied || req->deferred)
        return -1;
    pthread_mutex_lock(&srv->dmu);
    if (srv->dstop || srv->dq_len == srv->dq_cap) {
        pthread_mutex_unlock(&srv->dmu);
        return -1;
    }
    req->deferred = 1;
    MHD_suspend_connection(req->conn); /* we are in the access callback, as MHD requires */
    srv->dq[(srv->dq_head + srv->dq_len++) % srv->dq_cap] = (deferred_t){req, fn, arg};
    pthread_cond_signal(&srv->dcv);
    pthread_mutex_unlock(&srv->dmu);
    return 0;
}

static void *defer_main(void *p) {
    http_server_t *srv = p;
    pthread_mutex_lock(&srv->dmu);
    for (;;) {
        while (!srv->dq_len && !srv->dstop)
            pthread_cond_wait(&srv->dcv, &srv->dmu);
        if (!srv->dq_len)
            break; /* stopping, and nothing left: every deferred request was answered */
        deferred_t d = srv->dq[srv->dq_head];
        srv->dq_head = (srv->dq_head + 1) % srv->dq_cap;
        srv->dq_len--;
        pthread_mutex_unlock(&srv->dmu);
        d.fn(d.req, srv->ctx, d.arg);
        if (!d.req->replied) {
            log_error("http: %s %s: the deferred handler sent no reply", d.req->method, d.req->path);
            http_reply_error(d.req, 500, "internal error");
        }
        MHD_resume_connection(d.req->conn);
        pthread_mutex_lock(&srv->dmu);
    }
    pthread_mutex_unlock(&srv->dmu);
    return NULL;
}

/* Finish the queued work and join the background threads. */
static void defer_stop(http_server_t *srv) {
    pthread_mutex_lock(&srv->dmu);
    srv->dstop = 1;
    pthread_cond_broadcast(&srv->dcv);
    pthread_mutex_unlock(&srv->dmu);
    for (int i = 0; i < srv->n_dthreads; i++)
        pthread_join(srv->dthreads[i], NULL);
    srv->n_dthreads = 0;
}

static int is_multipart(struct MHD_Connection *c) {
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    return ct && !strncasecmp(ct, "multipart/form-data", 19);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_data_size,
                                 void **con_cls) {
    http_server_t *srv = cls;
    (void)version;
    http_request_t *req = *con_cls;
    if (!req) {
        req = xcalloc(1, sizeof *req);
        req->srv = srv;
        req->conn = c;
        req->upload_fd = -1;
        clock_gettime(CLOCK_MONOTONIC, &req->t0);
        snprintf(req->method, sizeof req->method, "%s", method);
        snprintf(req->path, sizeof req->path, "%s", url);
        *con_cls = req;
        route(req);
        /* a declared body over the limit is refused before any of it is read */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > srv->cfg.max_upload) {
            req->too_large = 1;
            http_reply_error(req, 413, "request body too large: the limit is %llu bytes",
                             srv->cfg.max_upload);
            return MHD_YES;
        }
        if (req->route && !strcmp(req->method, "POST") && is_multipart(c)) {
            req->pp = MHD_create_post_processor(c, 64 * 1024, upload_iter, req);
            if (!req->pp)
                req->bad_body = 1;
        }
        return MHD_YES;
    }
    if (req->deferred) {
        /* called again after the resume: the background thread's reply goes out */
        req->deferred = 0;
        if (req->kept) {
            MHD_queue_response(c, req->status, req->kept);
            MHD_destroy_response(req->kept);
            req->kept = NULL;
        }
        upload_discard(req);
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        req->body_bytes += n;
        if (req->too_large || req->bad_body)
            return MHD_YES; /* discard the rest */
        if (req->body_bytes > srv->cfg.max_upload) {
            /* enforced while streaming (a body with no or a false length): the
               partial file goes at once; MHD 0.9.75 sends no answer before the
               body ends, so the rest is read and dropped, then 413 */
            req->too_large = 1;
            upload_discard(req);
            return MHD_YES;
        }
        if (req->pp) {
            if (MHD_post_process(req->pp, upload_data, n) != MHD_YES) {
                req->bad_body = 1;
                upload_discard(req);
            }
        } else if (req->route && body_append(req, upload_data, n)) {
            req->too_large = 1; /* a JSON body is small: this one is not */
            free(req->body);
            req->body = NULL;
            req->body_size = req->body_cap = 0;
        }
        return MHD_YES;
    }
    /* the whole request is in: answer it */
    if (req->upload_fd >= 0) {
        close(req->upload_fd);
        req->upload_fd = -1;
    }
    if (req->too_large) {
        if (!req->replied)
            http_reply_error(req, 413, "request body too large: the limit is %llu bytes",
                             req->pp || req->has_upload ? srv->cfg.max_upload
                                                        : (unsigned long long)srv->cfg.max_body);
    } else if (req->bad_body)
        http_reply_error(req, 400, "malformed multipart/form-data body");
    else if (req->route) {
        req->route->handler(req, srv->ctx);
        if (req->deferred)
            return MHD_YES; /* suspended: a background thread has it now */
    } else if (req->method_mismatch)
        http_reply_error(req, 405, "method %s not allowed on %s", req->method, req->path);
    else
        http_reply_error(req, 404, "no such endpoint: %s %s", req->method, req->path);
    if (!req->replied) {
        log_error("http: %s %s: the handler sent no reply", req->method, req->path);
        http_reply_error(req, 500, "internal error");
    }
    upload_discard(req); /* not taken by the handler: gone before the client reads the reply */
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    http_request_t *req = *con_cls;
    if (!req)
        return;
    int ok = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK;
    if (req->on_complete)
        req->on_complete(req, ok, req->srv->ctx);
    log_info("http: %s %s %u %llu %.1fms%s", req->method, req->path, req->replied ? req->status : 0,
             req->reply_bytes, ms_since(&req->t0), ok ? "" : " (not completed)");
    request_free(req);
    *con_cls = NULL;
}

int http_server_start(const http_config_t *cfg_in, const http_route_t *routes, int n_routes, void *ctx,
                      http_server_t **out, up_error_t *err) {
    *out = NULL;
    http_config_t cfg = *cfg_in;
    http_config_t def;
    http_config_init(&def);
    if (!cfg.listen_addr || !*cfg.listen_addr)
        cfg.listen_addr = def.listen_addr;
    if (cfg.n_threads <= 0)
        cfg.n_threads = def.n_threads;
    if (!cfg.conn_timeout_s)
        cfg.conn_timeout_s = def.conn_timeout_s;
    if (!cfg.max_conns)
        cfg.max_conns = def.max_conns;
    if (!cfg.max_conns_per_ip)
        cfg.max_conns_per_ip = def.max_conns_per_ip;
    if (!cfg.max_upload)
        cfg.max_upload = def.max_upload;
    if (!cfg.max_body)
        cfg.max_body = def.max_body;
    if (cfg.n_defer_threads <= 0)
        cfg.n_defer_threads = def.n_defer_threads;
    if (cfg.defer_queue <= 0)
        cfg.defer_queue = def.defer_queue;
    if (cfg.port < 0 || cfg.port > 65535)
        return up_error_set(err, UP_ERR_INVALID, 0, "bad port %d", cfg.port);

    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned flags =
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, cfg.listen_addr, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)cfg.port);
    } else if (inet_pton(AF_INET6, cfg.listen_addr, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)cfg.port);
        flags |= MHD_USE_IPv6;
    } else {
        return up_error_set(err, UP_ERR_INVALID, 0, "bad listen address '%s': an IPv4 or IPv6 literal",
                            cfg.listen_addr);
    }

    http_server_t *srv = xcalloc(1, sizeof *srv);
    srv->routes = routes;
    srv->n_routes = n_routes;
    srv->ctx = ctx;
    snprintf(srv->upload_dir, sizeof srv->upload_dir, "%s", cfg.upload_dir ? cfg.upload_dir : ".");
    cfg.upload_dir = srv->upload_dir;
    cfg.listen_addr = NULL; /* not kept */
    srv->cfg = cfg;
    pthread_mutex_init(&srv->dmu, NULL);
    pthread_cond_init(&srv->dcv, NULL);
    srv->dq_cap = cfg.defer_queue;
    srv->dq = xcalloc((size_t)srv->dq_cap, sizeof *srv->dq);
    srv->dthreads = xcalloc((size_t)cfg.n_defer_threads, sizeof *srv->dthreads);
    for (; srv->n_dthreads < cfg.n_defer_threads; srv->n_dthreads++)
        if (pthread_create(&srv->dthreads[srv->n_dthreads], NULL, defer_main, srv))
            break; /* fewer threads still work; none means every defer waits for one that never comes */
    if (srv->n_dthreads == 0) {
        http_server_stop(srv);
        return up_error_set(err, UP_ERR_IO, 0, "cannot start the HTTP background threads");
    }

    srv->daemon = MHD_start_daemon(
        flags, (uint16_t)cfg.port, NULL, NULL, on_access, srv, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)cfg.n_threads, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)cfg.conn_timeout_s, MHD_OPTION_CONNECTION_LIMIT, (unsigned int)cfg.max_conns,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned int)cfg.max_conns_per_ip, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, srv, MHD_OPTION_END);
    if (!srv->daemon) {
        http_server_stop(srv);
        return up_error_set(err, UP_ERR_IO, 0, "cannot listen on %s port %d (in use, or not allowed)",
                            cfg_in->listen_addr ? cfg_in->listen_addr : def.listen_addr, cfg.port);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : cfg.port;
    *out = srv;
    return 0;
}

int http_server_port(const http_server_t *srv) { return srv->port; }

void http_server_quiesce(http_server_t *srv) {
    if (!srv || !srv->daemon)
        return;
    MHD_socket s = MHD_quiesce_daemon(srv->daemon);
    if (s != MHD_INVALID_SOCKET)
        close(s);
}

void http_server_stop(http_server_t *srv) {
    if (!srv)
        return;
    defer_stop(srv); /* first: every suspended connection is resumed before the daemon stops */
    if (srv->daemon)
        MHD_stop_daemon(srv->daemon);
    pthread_mutex_destroy(&srv->dmu);
    pthread_cond_destroy(&srv->dcv);
    free(srv->dq);
    free(srv->dthreads);
    free(srv);
}
