/*
 * api.c - what the API dialects share (see api.h): key authentication and
 * rate limiting, the submission path (decode, limits, tier, charge, store,
 * queue), result links, and time formatting.
 *
 * A submission is checked in the order a client can act on: the image
 * (415/422), the output size limit (422), the tier's size limit (400),
 * then the charge (402); the charge and the job row are one transaction
 * in the store, so a refused charge leaves nothing behind and concurrent
 * submissions can never spend the same credit twice.
 */
#include "api/api.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "core/base64url.h"
#include "core/clock.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/uuid.h"
#include "core/xmalloc.h"
#include "image/image.h"

#define KEY_TOUCH_S 60.0 /* last_used_at is written at most once a minute per key */

void api_init(api_t *api) {
    memset(api, 0, sizeof *api);
    tiers_default(&api->tiers);
    api->result_url_ttl = 3600;
    api->n_workers = 1;
    fetch_opts_init(&api->fetch);
    atomic_store(&api->stopping, 0);
}

http_route_t *api_routes(int *n) {
    const http_route_t *(*const tables[])(int *) = {upscale_service_routes, upres_v1_routes, accounts_routes};
    int total = 0, k;
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        tables[i](&k);
        total += k;
    }
    http_route_t *all = xmalloc(sizeof *all * (size_t)total);
    int at = 0;
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        const http_route_t *t = tables[i](&k);
        memcpy(all + at, t, sizeof *t * (size_t)k);
        at += k;
    }
    *n = total;
    return all;
}

int api_parse_int(const char *s, long *out) {
    if (!s)
        return -1;
    while (isspace((unsigned char)*s))
        s++;
    if (!*s)
        return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    while (isspace((unsigned char)*end))
        end++;
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

int api_refuse_if_stopping(api_t *api, http_request_t *req) {
    if (!atomic_load(&api->stopping))
        return 0;
    http_reply_error_code(req, 503, "UNAVAILABLE", NULL, "the server is shutting down: try again shortly");
    return -1;
}

/* ---- authentication ------------------------------------------------------------- */

static int unauthorized(http_request_t *req, const char *why) {
    http_reply_header(req, "WWW-Authenticate", "Bearer");
    http_reply_error_code(req, 401, "UNAUTHORIZED", NULL, "%s", why);
    return -1;
}

int api_auth(api_t *api, http_request_t *req, int required, api_key_t *key) {
    const char *h = http_request_header(req, "Authorization");
    if (!h)
        return required ? unauthorized(req, "Missing API key: send Authorization: Bearer upres_<key>.") : 0;
    size_t len;
    const char *tok = auth_bearer_token(h, &len);
    if (!tok)
        return unauthorized(req, "Malformed Authorization header: expected Bearer upres_<key>.");
    char presented[AUTH_KEY_LEN + 1];
    if (len != AUTH_KEY_LEN)
        return unauthorized(req, "Invalid or revoked API key.");
    memcpy(presented, tok, len);
    presented[len] = '\0';
    if (!auth_key_wellformed(presented))
        return unauthorized(req, "Invalid or revoked API key.");
    unsigned char hash[32];
    auth_key_hash(presented, hash);
    up_error_t err;
    int rc = store_key_by_hash(api->store, hash, key, &err);
    if (rc == UP_ERR_NOT_FOUND || (!rc && (!auth_hash_equal(hash, key->hash) || key->revoked_at > 0)))
        return unauthorized(req, "Invalid or revoked API key.");
    if (rc) {
        log_error("api: reading API keys: %s", err.msg);
        http_reply_error_code(req, 500, "INTERNAL", NULL, "cannot check the API key");
        return -1;
    }
    double retry = 0;
    int window = 0;
    if (api->rate && !ratelimit_take(api->rate, key->id, mono_s(), &retry, &window)) {
        long secs = (long)ceil(retry);
        if (secs < 1)
            secs = 1;
        char v[32];
        snprintf(v, sizeof v, "%ld", secs);
        http_reply_header(req, "Retry-After", v);
        http_reply_error_code(req, 429, "RATE_LIMITED", json_pack("{s:I}", "retry_after", (json_int_t)secs),
                              "Rate limit exceeded: at most %d requests per %s for this key; retry in %ld s.",
                              window == 60 ? api->rate_per_minute : api->rate_per_day,
                              window == 60 ? "minute" : "day", secs);
        return -1;
    }
    double now = now_s();
    if (now - key->last_used_at >= KEY_TOUCH_S && store_key_touch(api->store, key->id, now, &err))
        log_warn("api: recording the use of key %s: %s", key->prefix, err.msg);
    return 1;
}

/* ---- submission ----------------------------------------------------------------- */

/* Write size bytes to a new file at path (not there before). 0 or -1 (logged). */
static int write_new_file(const char *path, const void *data, size_t size) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        log_error("api: cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    if (write_all(fd, data, size)) {
        log_error("api: writing %s: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    if (close(fd)) {
        log_error("api: writing %s: %s", path, strerror(errno));
        unlink(path);
        return -1;
    }
    return 0;
}

void api_cursor_make(long long seq, char *out, size_t size) {
    char plain[32], enc[BASE64URL_LEN(sizeof plain) + 1];
    int n = snprintf(plain, sizeof plain, "seq:%lld", seq);
    base64url_encode((const unsigned char *)plain, (size_t)n, enc);
    snprintf(out, size, "c1.%s", enc);
}

int api_cursor_parse(const char *cursor, long long *seq) {
    unsigned char plain[32];
    size_t n;
    if (strncmp(cursor, "c1.", 3) || base64url_decode(cursor + 3, plain, sizeof plain - 1, &n))
        return -1;
    plain[n] = '\0';
    const char *digits = (const char *)plain + 4;
    if (n < 5 || memcmp(plain, "seq:", 4) || strspn(digits, "0123456789") != n - 4 || n - 4 > 18)
        return -1;
    long long v = strtoll(digits, NULL, 10);
    if (v <= 0)
        return -1;
    *seq = v;
    return 0;
}

const char *api_output_format(const char *s) {
    if (!strcasecmp(s, "png"))
        return "png";
    if (!strcasecmp(s, "jpg") || !strcasecmp(s, "jpeg"))
        return "jpg";
    if (!strcasecmp(s, "webp"))
        return "webp";
    return NULL;
}

const char *api_content_type(const char *fmt) {
    if (!strcmp(fmt, "png"))
        return "image/png";
    if (!strcmp(fmt, "jpg") || !strcmp(fmt, "jpeg"))
        return "image/jpeg";
    if (!strcmp(fmt, "webp"))
        return "image/webp";
    return "application/octet-stream";
}

int api_submit(api_t *api, http_request_t *req, const api_key_t *key, const api_input_t *in, job_t *job) {
    if (api_refuse_if_stopping(api, req))
        return -1;
    /* the image itself: the bytes decide what it is, not a name or a header */
    image_limits_t lim = {.max_pixels = api->max_input_pixels};
    up_image_t *img = NULL;
    up_error_t err;
    int rc = in->path ? image_load_file(in->path, &lim, &img, &err)
                      : image_load_buffer(in->data, in->size, &lim, &img, &err);
    if (rc == UP_ERR_IMAGE || rc == UP_ERR_FORMAT || rc == UP_ERR_UNSUPPORTED) {
        http_reply_error_code(req, in->from_url ? 422 : 415, "UNSUPPORTED_IMAGE", NULL,
                              "%s is not a supported image (PNG, JPEG, WebP, TIFF, ...): %s",
                              in->from_url ? "the content at image_url" : "the upload", err.msg);
        return -1;
    }
    if (rc == UP_ERR_TOO_LARGE) {
        http_reply_error_code(req, 422, "IMAGE_TOO_LARGE", NULL,
                              "image too large: %s (the limit is %llu pixels)", err.msg,
                              api->max_input_pixels);
        return -1;
    }
    if (rc) {
        http_reply_error_code(req, rc == UP_ERR_NOMEM ? 503 : 500, "INTERNAL", NULL,
                              "cannot read the image: %s", err.msg);
        return -1;
    }
    job->input_width = img->width;
    job->input_height = img->height;
    snprintf(job->input_format, sizeof job->input_format, "%s", img->format);
    image_free(img);

    unsigned long long ow = (unsigned long long)job->input_width * (unsigned long long)job->scale;
    unsigned long long oh = (unsigned long long)job->input_height * (unsigned long long)job->scale;
    if (api->max_output_pixels && ow * oh > api->max_output_pixels) {
        http_reply_error_code(req, 422, "IMAGE_TOO_LARGE", NULL,
                              "output too large: %dx%d at scale %d is %llu pixels, the limit is %llu",
                              job->input_width, job->input_height, job->scale, ow * oh,
                              api->max_output_pixels);
        return -1;
    }
    if (key) {
        const tier_t *t = tiers_find(&api->tiers, key->tier);
        if (!t) {
            log_error("api: key %s has tier '%s', which the tier table lacks", key->prefix, key->tier);
            http_reply_error_code(req, 400, "INVALID_TIER", NULL,
                                  "this key's tier '%s' is not configured on this server", key->tier);
            return -1;
        }
        if (ow > (unsigned long long)t->max_width || oh > (unsigned long long)t->max_height) {
            http_reply_error_code(
                req, 400, "TIER_LIMIT_EXCEEDED", NULL,
                "Output %llux%llu exceeds the %s tier maximum of %dx%d (input %dx%d at scale %d).", ow, oh,
                t->name, t->max_width, t->max_height, job->input_width, job->input_height, job->scale);
            return -1;
        }
        snprintf(job->owner, sizeof job->owner, "%s", key->id);
        snprintf(job->tier, sizeof job->tier, "%s", t->name);
        job->credits = t->credits;
    }
    if (!job->format[0]) {
        const char *f = image_format_supported_for_output(job->input_format)
                            ? api_output_format(job->input_format)
                            : NULL;
        snprintf(job->format, sizeof job->format, "%s", f ? f : "png");
    }

    /* store the input under the job's id, then the job */
    uuid_v4(job->id);
    char dest[sizeof job->input_path];
    snprintf(dest, sizeof dest, "%.900s/%s.%s", queue_uploads_dir(api->queue), job->id,
             job->input_format[0] ? job->input_format : "bin");
    if (in->path ? http_request_upload_take(req, dest, &err) : write_new_file(dest, in->data, in->size)) {
        if (in->path)
            log_error("api: %s", err.msg);
        http_reply_error_code(req, 500, "INTERNAL", NULL, "cannot store the image");
        return -1;
    }
    job->status = JOB_STATUS_QUEUED;
    memcpy(job->input_path, dest, sizeof dest);
    snprintf(job->input_name, sizeof job->input_name, "%s", in->name && *in->name ? in->name : "image");
    job->input_bytes = (long long)in->size;
    job->created_at = api_time_ms(now_s());

    store_charge_t ch = {0};
    rc = key ? store_job_insert_charged(api->store, job, auth_month_start(job->created_at), &ch, &err)
             : store_job_insert(api->store, job, &err);
    if (rc) {
        unlink(dest);
        if (rc == UP_ERR_QUOTA)
            http_reply_error_code(
                req, 402, "QUOTA_EXCEEDED",
                json_pack("{s:I,s:I}", "quota", (json_int_t)ch.quota, "used", (json_int_t)ch.used),
                "Monthly quota exceeded: %lld of %lld credits used, this job needs %lld.", ch.used, ch.quota,
                job->credits);
        else if (rc == UP_ERR_CREDITS)
            http_reply_error_code(req, 402, "INSUFFICIENT_CREDITS",
                                  json_pack("{s:I,s:I}", "credits", (json_int_t)ch.credits, "credits_needed",
                                            (json_int_t)job->credits),
                                  "Insufficient credits: %lld left, this job needs %lld.", ch.credits,
                                  job->credits);
        else if (rc == UP_ERR_REVOKED || rc == UP_ERR_NOT_FOUND)
            unauthorized(req, "Invalid or revoked API key.");
        else {
            log_error("api: inserting job %s: %s", job->id, err.msg);
            http_reply_error_code(req, 500, "INTERNAL", NULL, "cannot record the job");
        }
        return -1;
    }
    queue_notify(api->queue);
    log_info("api: job %s queued (%s x%d, %dx%d, key %s, %lld credits)", job->id, job->model, job->scale,
             job->input_width, job->input_height, key ? key->prefix : "-", job->credits);
    return 0;
}

/* The last path segment of a URL, without query or fragment ("photo.jpg"), into out. */
static void url_file_name(const char *url, char *out, size_t size) {
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    const char *path = strchr(p, '/');
    out[0] = '\0';
    if (!path)
        return;
    size_t end = strcspn(path, "?#");
    const char *seg = path;
    for (size_t i = 0; i < end; i++)
        if (path[i] == '/')
            seg = path + i + 1;
    size_t n = (size_t)(path + end - seg);
    if (n >= size)
        n = size - 1;
    memcpy(out, seg, n);
    out[n] = '\0';
}

/* Fetch image_url and submit it. 0, or -1 after replying. */
static int submit_url(api_t *api, http_request_t *req, const api_key_t *key, const char *url, job_t *job) {
    void *body = NULL;
    size_t size = 0;
    up_error_t err;
    int rc = fetch_url(url, &api->fetch, &body, &size, &err);
    if (rc == UP_ERR_INVALID) {
        http_reply_error_code(req, 400, "URL_REFUSED", NULL, "image_url refused: %s", err.msg);
        return -1;
    }
    if (rc == UP_ERR_NOMEM) {
        http_reply_error_code(req, 503, "UNAVAILABLE", NULL, "cannot fetch image_url now: %s", err.msg);
        return -1;
    }
    if (rc) {
        http_reply_error_code(req, 422, "URL_FETCH_FAILED", NULL, "cannot fetch image_url: %s", err.msg);
        return -1;
    }
    char name[256];
    url_file_name(url, name, sizeof name);
    api_input_t in = {.data = body, .size = size, .name = name, .from_url = 1};
    rc = api_submit(api, req, key, &in, job);
    free(body);
    return rc;
}

/* A submission on its way to a background thread. */
typedef struct pending {
    api_key_t key;
    int has_key;
    api_input_t in; /* an upload: its strings point into the request, which outlives this */
    job_t job;
    api_submitted_fn done;
    char url[]; /* image_url, "" for an upload */
} pending_t;

static void submit_later(http_request_t *req, void *ctx, void *arg) {
    api_t *api = ctx;
    pending_t *p = arg;
    const api_key_t *key = p->has_key ? &p->key : NULL;
    int rc = p->url[0] ? (api_refuse_if_stopping(api, req) || submit_url(api, req, key, p->url, &p->job))
                       : api_submit(api, req, key, &p->in, &p->job);
    if (!rc)
        p->done(api, req, &p->job);
    free(p);
}

int api_submit_async(api_t *api, http_request_t *req, const api_key_t *key, const api_input_t *in,
                     const char *url, const job_t *job, api_submitted_fn done) {
    (void)api; /* the background thread gets it back as the server's handler context */
    size_t ulen = url ? strlen(url) : 0;
    pending_t *p = xmalloc(sizeof *p + ulen + 1);
    p->has_key = key != NULL;
    if (key)
        p->key = *key;
    if (in)
        p->in = *in;
    p->job = *job;
    p->done = done;
    memcpy(p->url, url ? url : "", ulen + 1);
    if (http_request_defer(req, submit_later, p) == 0)
        return 0;
    free(p);
    http_reply_header(req, "Retry-After", "1");
    http_reply_error_code(req, 503, "UNAVAILABLE", NULL,
                          "the server is busy with other submissions: retry in a second");
    return -1;
}

/* ---- formatting ----------------------------------------------------------------- */

double api_time_ms(double t) { return (double)llround(t * 1000.0) / 1000.0; }

const char *api_time(double t, char *buf, size_t size) {
    long long total_ms = llround(t * 1000.0); /* 0.999 is 0.99899...: round, don't floor */
    if (total_ms < 0)
        total_ms = 0;
    time_t secs = (time_t)(total_ms / 1000);
    int ms = (int)(total_ms % 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
    return buf;
}

/* Read exactly n digits at *p. */
static int digits(const char **p, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return -1;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

int api_time_parse(const char *s, double *t) {
    if (!s)
        return -1;
    const char *p = s;
    int y, mo, d, h = 0, mi = 0, sec = 0;
    if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' || digits(&p, 2, &d))
        return -1;
    double frac = 0;
    int off = 0;
    if (*p) { /* a date alone means its midnight, UTC */
        if ((*p != 'T' && *p != 't' && *p != ' ') || (p++, digits(&p, 2, &h)) || *p++ != ':' ||
            digits(&p, 2, &mi) || *p++ != ':' || digits(&p, 2, &sec))
            return -1;
        if (*p == '.') {
            p++;
            double scale = 0.1;
            if (!isdigit((unsigned char)*p))
                return -1;
            for (; isdigit((unsigned char)*p); p++, scale /= 10)
                frac += (*p - '0') * scale;
        }
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int sign = *p++ == '-' ? -1 : 1, oh, om;
            if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om) || oh > 23 || om > 59)
                return -1;
            off = sign * (oh * 3600 + om * 60);
        } else {
            return -1;
        }
        if (*p)
            return -1;
    }
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return -1;
    struct tm tm = {
        .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi, .tm_sec = sec};
    time_t base = timegm(&tm);
    if (tm.tm_mday != d) /* February 30th and the like */
        return -1;
    /* milliseconds, computed as the stored times are (api_time_ms), so that equal instants compare equal */
    *t = (double)(((long long)base - off) * 1000 + llround(frac * 1000.0)) / 1000.0;
    return 0;
}

/* The request's Host header when it is a plain host[:port], else NULL. */
static const char *safe_host(http_request_t *req) {
    const char *h = http_request_header(req, "Host");
    if (!h || !*h || strlen(h) > 255)
        return NULL;
    for (const char *p = h; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr(".-:[]_", *p))
            return NULL;
    return h;
}

int api_result_url(api_t *api, http_request_t *req, const job_t *job, char *out, size_t size) {
    if (job->status != JOB_STATUS_COMPLETED || !job->result_path[0])
        return -1;
    double now = now_s();
    long long expires = (long long)floor(now + api->result_url_ttl);
    /* a link never outlives its file: the sweeper deletes it at expires_at */
    if (job->expires_at > 0 && expires > (long long)floor(job->expires_at))
        expires = (long long)floor(job->expires_at);
    if ((double)expires < now)
        return -1;
    char sig[65];
    auth_sign(api->secret, job->id, expires, sig);
    char base[300];
    if (api->public_url && *api->public_url) {
        snprintf(base, sizeof base, "%s", api->public_url);
        size_t n = strlen(base);
        while (n > 0 && base[n - 1] == '/')
            base[--n] = '\0';
    } else {
        const char *host = safe_host(req);
        snprintf(base, sizeof base, "http://%s", host ? host : "localhost");
    }
    int n = snprintf(out, size, "%s/v1/results/%s?expires=%lld&sig=%s", base, job->id, expires, sig);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}
