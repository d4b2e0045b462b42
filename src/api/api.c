/*
 * api.c - what the API dialects share (see api.h): key authentication and
 * rate limiting, the HTTP side of submission (Idempotency-Key header,
 * background threads, image_url fetch caps) over the jobs API, which
 * checks, charges, stores and queues (jobs.h), refusals turned into
 * replies, result links, and time formatting.
 */
#include "api/api.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "core/base64url.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/text.h"
#include "core/uuid.h"
#include "core/xmalloc.h"
#include "image/image.h"
#include "steps/steps.h"

#define KEY_TOUCH_S 60.0 /* last_used_at is written at most once a minute per key */

/* image_url fetches under way per key and per client address (api->fetch_per_key, fetch_per_ip). */
typedef struct api_fetch_counts {
    pthread_mutex_t mu;
    int n, cap;
    struct {
        char who[72]; /* "key:<id>" or "ip:<address>" */
        int n;
    } * e;
} api_fetch_counts_t;

void api_init(api_t *api) {
    memset(api, 0, sizeof *api);
    jobs_init(&api->jobs);
    api->result_url_ttl = 3600;
    api->n_workers = 1;
    fetch_opts_init(&api->fetch);
    api->fetch_per_key = 2;
    api->fetch_per_ip = 8;
    api->guest_daily_credits = 20;
    api->guest_sessions_per_ip = 50;
    api->tinify_model = UPSCALE_DEFAULT_MODEL;
    api->retention_s = 900;
    api->temp_ttl_s = 3600;
    api->signed_url_ttl = 900;
    api->max_batch = 20;
    api->fetching = xcalloc(1, sizeof *api->fetching);
    pthread_mutex_init(&api->fetching->mu, NULL);
}

void api_fini(api_t *api) {
    if (!api->fetching)
        return;
    pthread_mutex_destroy(&api->fetching->mu);
    free(api->fetching->e);
    free(api->fetching);
    api->fetching = NULL;
}

/* The entry of who (made with count 0 when absent). Under f->mu. */
static int fetch_entry(api_fetch_counts_t *f, const char *who) {
    int i;
    for (i = 0; i < f->n && strcmp(f->e[i].who, who); i++)
        ;
    if (i == f->n) {
        if (f->n == f->cap) {
            f->cap = f->cap ? 2 * f->cap : 16;
            f->e = xrealloc(f->e, sizeof *f->e * (size_t)f->cap);
        }
        snprintf(f->e[i].who, sizeof f->e[i].who, "%s", who);
        f->e[i].n = 0;
        f->n++;
    }
    return i;
}

static void fetch_drop(api_fetch_counts_t *f, const char *who) {
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->e[i].who, who)) {
            if (--f->e[i].n <= 0)
                f->e[i] = f->e[--f->n]; /* none left: the entry goes */
            return;
        }
}

enum { FETCH_OK, FETCH_KEY_FULL, FETCH_IP_FULL };

/*
 * Count one more fetch for the key (key_who, "" for none) and the client
 * address (ip_who), both or neither: FETCH_OK, or which limit refused it.
 */
static int fetch_take(api_t *api, const char *key_who, const char *ip_who) {
    api_fetch_counts_t *f = api->fetching;
    int refused = FETCH_OK;
    pthread_mutex_lock(&f->mu);
    int ip = fetch_entry(f, ip_who);
    if (f->e[ip].n >= api->fetch_per_ip)
        refused = FETCH_IP_FULL;
    else if (key_who[0]) {
        int k = fetch_entry(f, key_who);
        if (f->e[k].n >= api->fetch_per_key)
            refused = FETCH_KEY_FULL;
        else
            f->e[k].n++;
    }
    if (!refused)
        f->e[ip].n++;
    else if (f->e[ip].n == 0)
        fetch_drop(f, ip_who); /* made for nothing */
    pthread_mutex_unlock(&f->mu);
    return refused;
}

static void fetch_give(api_t *api, const char *key_who, const char *ip_who) {
    api_fetch_counts_t *f = api->fetching;
    pthread_mutex_lock(&f->mu);
    if (key_who[0])
        fetch_drop(f, key_who);
    fetch_drop(f, ip_who);
    pthread_mutex_unlock(&f->mu);
}

http_route_t *api_routes(int *n) {
    const http_route_t *(*const tables[])(int *) = {upscale_service_routes, upres_v1_routes, accounts_routes,
                                                    tinify_routes,          page_routes,     metrics_routes};
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

int api_admin_token_ok(const api_t *api, http_request_t *req) {
    const char *h = http_request_header(req, "Authorization");
    size_t len = 0;
    const char *tok = h ? auth_bearer_token(h, &len) : NULL;
    if (!api->admin_token || !*api->admin_token || !tok)
        return 0;
    unsigned char a[32], b[32];
    char sent[512];
    snprintf(sent, sizeof sent, "%.*s", (int)(len < sizeof sent ? len : sizeof sent - 1), tok);
    auth_key_hash(sent, a); /* compared as hashes: the same time whatever the token */
    auth_key_hash(api->admin_token, b);
    return auth_hash_equal(a, b);
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
    if (!atomic_load(&api->jobs.stopping))
        return 0;
    http_reply_error_code(req, 503, "UNAVAILABLE", NULL, "the server is shutting down: try again shortly");
    return -1;
}

/* ---- authentication ------------------------------------------------------------- */

/* A 401 refusal (-1). */
static int unauthorized(jobs_refusal_t *r, const char *why) {
    return jobs_refuse(r, 401, "UNAUTHORIZED", NULL, "%s", why);
}

/* The key whose SHA-256 is hash, live (not revoked): 1 with *key, -1 with *r (401, 500). */
static int key_by_hash(api_t *api, const unsigned char hash[32], api_key_t *key, jobs_refusal_t *r) {
    up_error_t err;
    int rc = store_key_by_hash(api->jobs.store, hash, key, &err);
    if (rc == UP_ERR_NOT_FOUND || (!rc && (!auth_hash_equal(hash, key->hash) || key->revoked_at > 0)))
        return unauthorized(r, "Invalid or revoked API key.");
    if (rc) {
        log_error("api: reading API keys: %s", err.msg);
        return jobs_refuse(r, 500, "INTERNAL", NULL, "cannot check the API key");
    }
    return 1;
}

int api_rate_take(api_t *api, ratelimit_t *rl, const char *scope, const char *subject, int per_minute,
                  int per_day, double *retry_after, int *window_s) {
    if (!rl || (per_minute <= 0 && per_day <= 0))
        return 1;
    if (!api->shared_limits)
        return ratelimit_take(rl, subject, mono_s(), retry_after, window_s);
    char who[320];
    snprintf(who, sizeof who, "%s:%s", scope, subject);
    const store_rate_limit_t limits[2] = {{per_minute, 60}, {per_day, 86400}};
    int allowed = 1, window = 0;
    double retry = 0;
    up_error_t err;
    if (store_rate_take(api->jobs.store, who, limits, 2, now_s(), &allowed, &retry, &window, &err)) {
        log_warn("api: shared rate limits: %s (the request is let through)", err.msg);
        return 1; /* the request's own store calls will fail it if the database is really gone */
    }
    if (!allowed) {
        if (retry_after)
            *retry_after = retry;
        if (window_s)
            *window_s = window;
    }
    return allowed;
}

/* Count a request of key against the rate limits and record its use: 0, or -1 with *r (429). */
static int key_use(api_t *api, api_key_t *key, jobs_refusal_t *r) {
    double retry = 0;
    int window = 0;
    if (!api_rate_take(api, api->rate, "key", key->id, api->rate_per_minute, api->rate_per_day, &retry,
                       &window)) {
        long secs = (long)ceil(retry);
        if (secs < 1)
            secs = 1;
        jobs_refuse(r, 429, "RATE_LIMITED", json_pack("{s:I}", "retry_after", (json_int_t)secs),
                    "Rate limit exceeded: at most %d requests per %s for this key; retry in %ld s.",
                    window == 60 ? api->rate_per_minute : api->rate_per_day, window == 60 ? "minute" : "day",
                    secs);
        r->retry_after = (int)secs;
        return -1;
    }
    double now = now_s();
    up_error_t err;
    if (now - key->last_used_at >= KEY_TOUCH_S && store_key_touch(api->jobs.store, key->id, now, &err))
        log_warn("api: recording the use of key %s: %s", key->prefix, err.msg);
    return 0;
}

int api_key_check(api_t *api, http_request_t *req, int required, api_key_t *key, jobs_refusal_t *r) {
    const char *h = http_request_header(req, "Authorization");
    if (!h)
        return required ? unauthorized(r, "Missing API key: send Authorization: Bearer upres_<key>.") : 0;
    size_t len;
    const char *tok = auth_bearer_token(h, &len);
    if (!tok)
        return unauthorized(r, "Malformed Authorization header: expected Bearer upres_<key>.");
    char presented[AUTH_KEY_LEN + 1];
    if (len != AUTH_KEY_LEN)
        return unauthorized(r, "Invalid or revoked API key.");
    memcpy(presented, tok, len);
    presented[len] = '\0';
    if (!auth_key_wellformed(presented))
        return unauthorized(r, "Invalid or revoked API key.");
    unsigned char hash[32];
    auth_key_hash(presented, hash);
    if (key_by_hash(api, hash, key, r) < 0)
        return -1;
    if (key->guest) /* a session token is no API key */
        return unauthorized(r, "Invalid or revoked API key.");
    return key_use(api, key, r) ? -1 : 1;
}

int api_session_check(api_t *api, const char *token, api_key_t *key, jobs_refusal_t *r) {
    unsigned char hash[32];
    auth_key_hash(token, hash);
    if (key_by_hash(api, hash, key, r) < 0 || !key->guest) {
        if (r->status == 500)
            return -1;
        return unauthorized(r, "Unknown or expired session token: upload without one to open a new session.");
    }
    return key_use(api, key, r) ? -1 : 1;
}

int api_auth(api_t *api, http_request_t *req, int required, api_key_t *key) {
    jobs_refusal_t r = {0};
    int rc = api_key_check(api, req, required, key, &r);
    if (rc < 0)
        api_reply_refusal(req, &r);
    return rc;
}

/* ---- who may do what with a job --------------------------------------------------- */

void api_reply_refusal(http_request_t *req, jobs_refusal_t *r) {
    if (r->status == 401)
        http_reply_header(req, "WWW-Authenticate", "Bearer");
    if (r->retry_after > 0) {
        char v[24];
        snprintf(v, sizeof v, "%d", r->retry_after);
        http_reply_header(req, "Retry-After", v);
    }
    http_reply_error_code(req, r->status, r->code, r->extra, "%s", r->message); /* takes extra */
    r->extra = NULL;
}

int api_job_access(http_request_t *req, const job_t *job, const api_key_t *caller, int owner_only,
                   jobs_action_t action) {
    jobs_refusal_t r = {0};
    if (jobs_access(job, caller, owner_only, action, &r) == 0)
        return 0;
    api_reply_refusal(req, &r);
    return -1;
}

int api_download_deletes(const job_t *job) { return job->keep_s <= 0; }

/* ---- submission ----------------------------------------------------------------- */

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

int api_colour_setting(http_request_t *req, const char *value, job_t *job) {
    job->colour[0] = '\0';
    if (!value || !*value)
        return 0;
    if (strcasecmp(value, "srgb") && strcasecmp(value, "keep")) {
        http_reply_error_code(req, 400, "INVALID_REQUEST", NULL,
                              "invalid colour '%s': srgb (convert to sRGB) or keep (the input's own profile)",
                              value);
        return -1;
    }
    snprintf(job->colour, sizeof job->colour, "%s", strcasecmp(value, "srgb") ? "keep" : "srgb");
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
    const char *t = image_content_type(fmt);
    return t ? t : "application/octet-stream";
}

static long blob_body_read(void *ctx, unsigned long long pos, char *buf, size_t max) {
    size_t n = 0;
    up_error_t err;
    if (blob_reader_read(ctx, (long long)pos, buf, max, &n, &err)) {
        log_error("download: %s", err.msg);
        return -1;
    }
    return (long)n;
}

static void blob_body_free(void *ctx) { blob_reader_close(ctx); }

int api_reply_blob(api_t *api, http_request_t *req, const char *key, const char *content_type,
                   const char *attachment_name) {
    char path[PATH_MAX];
    up_error_t err;
    int rc = blob_path(api->jobs.blobs, key, path, sizeof path, &err);
    if (rc == 0)
        return http_reply_file(req, 200, path, content_type, attachment_name);
    if (rc != UP_ERR_UNSUPPORTED)
        return rc;
    blob_reader_t *r;
    blob_info_t info;
    if ((rc = blob_open(api->jobs.blobs, key, &r, &info, &err))) {
        if (rc != UP_ERR_NOT_FOUND)
            log_error("download: %s", err.msg);
        return rc;
    }
    rc = http_reply_stream(req, 200, (unsigned long long)info.size, blob_body_read, blob_body_free, r,
                           content_type, attachment_name);
    if (rc)
        blob_reader_close(r);
    return rc;
}

/* An Idempotency-Key header: 0 with *key set (NULL when none), or -1 after replying 400. */
static int idem_header(http_request_t *req, const char **key) {
    const char *k = http_request_header(req, "Idempotency-Key");
    *key = NULL;
    if (!k)
        return 0;
    size_t n = strlen(k);
    int ok = n >= 1 && n <= 255;
    for (size_t i = 0; ok && i < n; i++)
        ok = k[i] >= 0x21 && k[i] <= 0x7E;
    if (!ok) {
        http_reply_error_code(req, 400, "INVALID_REQUEST", NULL,
                              "invalid Idempotency-Key: 1 to 255 printable ASCII characters, no spaces");
        return -1;
    }
    *key = k;
    return 0;
}

/* Send a submission's answer (the dialect's, or a replay) and free it. */
static void send_answer(http_request_t *req, jobs_answer_t *a) {
    if (a->replayed)
        http_reply_header(req, "Idempotent-Replayed", "true");
    http_reply_data(req, a->status, "application/json", a->body, strlen(a->body));
    free(a->body);
    a->body = NULL;
}

/*
 * Before any work: a request whose Idempotency-Key was answered is answered
 * again (same request) or refused (422, another request). 1 when replied,
 * 0 to go on, -1 after an error reply.
 */
static int idem_check(api_t *api, http_request_t *req, const api_key_t *key) {
    const char *k;
    if (idem_header(req, &k))
        return -1;
    if (!k)
        return 0;
    unsigned char h[32];
    http_request_digest(req, h); /* now, while the upload is the request's: api_submit takes it */
    jobs_answer_t a;
    jobs_refusal_t r = {0};
    int rc = jobs_idem_find(&api->jobs, key ? key->id : "", k, h, &a, &r);
    if (rc > 0)
        send_answer(req, &a);
    else if (rc < 0)
        api_reply_refusal(req, &r);
    return rc;
}

/* jobs_answer_fn over a dialect's api_reply_fn: the JSON of its one job, as text. */
typedef struct answer_ctx {
    api_t *api;
    http_request_t *req;
    api_reply_fn reply;
} answer_ctx_t;

static char *answer_text(void *ctx, const job_t *jobs, int n, const char *note, unsigned *status) {
    answer_ctx_t *c = ctx;
    (void)n;
    return http_json_text(c->reply(c->api, c->req, &jobs[0], note, status));
}

int api_submit(api_t *api, http_request_t *req, const api_key_t *key, const api_input_t *in, job_t *job,
               api_reply_fn reply) {
    if (api_refuse_if_stopping(api, req))
        return -1;
    jobs_refusal_t r = {0};
    if (!job->steps[0]) { /* the dialects of one upscale: a one-step pipeline */
        steps_t st;
        steps_upscale(&st, job->model, job->scale, job->tile, job->format, job->quality);
        char *text = steps_text(&st);
        if (!text || strlen(text) >= sizeof job->steps) {
            free(text);
            http_reply_error_code(req, 400, "INVALID_REQUEST", NULL, "the model name is too long");
            return -1;
        }
        memcpy(job->steps, text, strlen(text) + 1);
        free(text);
    }
    const char *ikey = NULL;
    idem_header(req, &ikey); /* checked valid by api_submit_async's idem_check */
    unsigned char hash[32];
    if (ikey)
        http_request_digest(req, hash); /* cached before the upload was taken */
    /* an upload: the request lets its staged file go (in->path is the request's: copied
     * first), and the jobs API takes it over */
    char staged[PATH_MAX];
    snprintf(staged, sizeof staged, "%s", in->path ? in->path : "");
    up_error_t err;
    if (in->path && http_request_upload_take(req, NULL, &err)) {
        log_error("api: cannot take the upload: %s", err.msg);
        http_reply_storage_error(req, errno);
        return -1;
    }
    answer_ctx_t ac = {.api = api, .req = req, .reply = reply};
    jobs_submission_t s = {
        .key = key,
        .input = {.path = in->path ? staged : NULL,
                  .data = in->data,
                  .size = in->size,
                  .name = in->name,
                  .from_url = in->from_url},
        .jobs = job,
        .n = 1,
        .idem_key = ikey,
        .idem_hash = ikey ? hash : NULL,
        .answer = answer_text,
        .answer_ctx = &ac,
    };
    jobs_answer_t a;
    if (jobs_submit(&api->jobs, &s, &a, &r)) {
        api_reply_refusal(req, &r);
        return -1;
    }
    send_answer(req, &a);
    return 0;
}

/* The last path segment of a URL, without query or fragment ("photo.jpg"), into out as valid UTF-8. */
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
    text_utf8_copy(out, size, seg, (size_t)(path + end - seg));
}

/* ---- fetching URLs on the fetch pool ---------------------------------------------- */

/* A fetch on its way to the fetch pool. */
typedef struct fetching {
    api_fetched_fn done;
    api_fetch_refused_fn refused;
    void *arg;
    char key_who[56], ip_who[72]; /* the counts it holds (fetch_take) */
    char url[];
} fetching_t;

static void fetch_later(http_request_t *req, void *ctx, void *arg) {
    api_t *api = ctx;
    fetching_t *f = arg;
    jobs_refusal_t r = {0};
    void *body = NULL;
    size_t size = 0;
    up_error_t err;
    int rc = UP_OK;
    if (atomic_load(&api->jobs.stopping))
        jobs_refuse(&r, 503, "UNAVAILABLE", NULL, "the server is shutting down: try again shortly");
    else if ((rc = fetch_url(f->url, &api->fetch, &body, &size, &err)) == UP_ERR_INVALID)
        jobs_refuse(&r, 400, "URL_REFUSED", NULL, "image_url refused: %s", err.msg);
    else if (rc == UP_ERR_NOMEM)
        jobs_refuse(&r, 503, "UNAVAILABLE", NULL, "cannot fetch image_url now: %s", err.msg);
    else if (rc)
        jobs_refuse(&r, 422, "URL_FETCH_FAILED", NULL, "cannot fetch image_url: %s", err.msg);
    fetch_give(api, f->key_who, f->ip_who);
    if (r.status) {
        f->refused(req, &r, f->arg);
    } else {
        char name[256];
        url_file_name(f->url, name, sizeof name);
        api_input_t in = {.data = body, .size = size, .name = name, .from_url = 1};
        f->done(api, req, &in, f->arg);
    }
    jobs_refusal_fini(&r);
    free(body);
    free(f);
}

int api_fetch_async(api_t *api, http_request_t *req, const api_key_t *key, const char *url,
                    api_fetched_fn done, api_fetch_refused_fn refused, void *arg, jobs_refusal_t *r) {
    size_t ulen = strlen(url);
    fetching_t *f = xcalloc(1, sizeof *f + ulen + 1);
    f->done = done;
    f->refused = refused;
    f->arg = arg;
    memcpy(f->url, url, ulen + 1);
    /* a slow source holds a fetch thread, never a submit thread, and one caller holds few of them */
    if (key)
        snprintf(f->key_who, sizeof f->key_who, "key:%s", key->id);
    snprintf(f->ip_who, sizeof f->ip_who, "ip:%s", http_request_client(req));
    int full = fetch_take(api, f->key_who, f->ip_who);
    if (full != FETCH_OK) {
        free(f);
        jobs_refuse(r, 429, "TOO_MANY_FETCHES", json_pack("{s:i}", "retry_after", 1),
                    "%d image_url fetches %s are under way already: wait for one to finish",
                    full == FETCH_KEY_FULL ? api->fetch_per_key : api->fetch_per_ip,
                    full == FETCH_KEY_FULL ? "of this key" : "from your address");
        r->retry_after = 1;
        return -1;
    }
    if (http_request_defer(req, HTTP_POOL_FETCH, fetch_later, f) == 0)
        return 0;
    fetch_give(api, f->key_who, f->ip_who);
    free(f);
    jobs_refuse(r, 503, "UNAVAILABLE", NULL, "the server is busy with other requests: retry in a second");
    r->retry_after = 1;
    return -1;
}

/* ---- asynchronous submission ---------------------------------------------------------- */

/* A submission on its way to a background thread. */
typedef struct pending {
    api_key_t key;
    int has_key;
    api_input_t in; /* an upload: its strings point into the request, which outlives this */
    job_t job;
    api_reply_fn reply;
} pending_t;

static void submit_later(http_request_t *req, void *ctx, void *arg) {
    pending_t *p = arg;
    api_submit(ctx, req, p->has_key ? &p->key : NULL, &p->in, &p->job, p->reply);
    free(p);
}

static void submit_fetched(api_t *api, http_request_t *req, const api_input_t *in, void *arg) {
    pending_t *p = arg;
    api_submit(api, req, p->has_key ? &p->key : NULL, in, &p->job, p->reply);
    free(p);
}

static void submit_fetch_refused(http_request_t *req, jobs_refusal_t *r, void *arg) {
    api_reply_refusal(req, r);
    free(arg);
}

int api_submit_async(api_t *api, http_request_t *req, const api_key_t *key, const api_input_t *in,
                     const char *url, const job_t *job, api_reply_fn reply) {
    int rc = idem_check(api, req, key);
    if (rc)
        return rc > 0 ? 0 : -1;
    pending_t *p = xcalloc(1, sizeof *p);
    p->has_key = key != NULL;
    if (key)
        p->key = *key;
    if (in)
        p->in = *in;
    p->job = *job;
    p->reply = reply;
    jobs_refusal_t r = {0};
    if (url) {
        if (api_fetch_async(api, req, key, url, submit_fetched, submit_fetch_refused, p, &r) == 0)
            return 0;
    } else if (http_request_defer(req, HTTP_POOL_SUBMIT, submit_later, p) == 0) {
        return 0;
    } else {
        jobs_refuse(&r, 503, "UNAVAILABLE", NULL,
                    "the server is busy with other submissions: retry in a second");
        r.retry_after = 1;
    }
    free(p);
    api_reply_refusal(req, &r);
    return -1;
}

/* ---- job event streams -------------------------------------------------------------- */

/*
 * Events say only "job X changed" (queue/events.h): each fill reads the
 * jobs from the store, so changes that come close together merge into one
 * event with the latest state, and one that is the same as the last sent
 * (a wake with nothing new, a keep-alive) sends nothing. The
 * subscriptions are made before the first fill reads the jobs (the fill
 * runs once the handler returned), so no change between the two is lost.
 */
typedef struct job_stream {
    api_t *api;
    const api_stream_fmt_t *fmt;
    http_sse_t *sse; /* borrowed from the HTTP layer until stream_end */
    double t0;       /* mono_s at the start, for fmt->timeout_s */
    int started;     /* retry: sent */
    int moved;       /* the EVENTS_QUEUE_MOVED subscription (queue positions); 0 = none */
    int n;
    struct {
        char id[EVENTS_ID_MAX];
        int handle; /* the events subscription; 0 = none */
        int final;  /* its terminal event was sent */
        char *sent; /* the last event data sent (new), NULL before the first */
    } job[];
} job_stream_t;

static void stream_changed(void *ctx, const char *job_id) {
    job_stream_t *st = ctx;
    (void)job_id;
    http_sse_wake(st->sse);
}

static void stream_end(void *arg) {
    job_stream_t *st = arg;
    if (st->moved > 0)
        jobs_unsubscribe(&st->api->jobs, st->moved);
    for (int i = 0; i < st->n; i++) {
        if (st->job[i].handle > 0)
            jobs_unsubscribe(&st->api->jobs, st->job[i].handle); /* a wake under way has ended on return */
        free(st->job[i].sent);
    }
    free(st);
}

static int stream_fill(http_sse_t *sse, void *arg) {
    job_stream_t *st = arg;
    if (!st->started && st->fmt->retry_ms > 0)
        http_sse_retry(sse, st->fmt->retry_ms);
    st->started = 1;
    job_t *jobs = xmalloc((size_t)st->n * sizeof *jobs);
    int n_final = 0, ok = 1;
    for (int i = 0; i < st->n; i++) {
        up_error_t err;
        int rc = store_job_get(st->api->jobs.store, st->job[i].id, &jobs[i], &err);
        if (rc) {
            if (rc != UP_ERR_NOT_FOUND)
                log_warn("api: stream of job %s: %s (tried again at the next change)", st->job[i].id,
                         err.msg);
            ok = 0;
            continue;
        }
        if (st->job[i].final) {
            n_final++;
            continue;
        }
        const char *name = NULL;
        int final = 0;
        char *text = st->fmt->event(st->api, &jobs[i], &name, &final);
        if (text && (!st->job[i].sent || strcmp(st->job[i].sent, text))) {
            http_sse_send(sse, name, text);
            free(st->job[i].sent);
            st->job[i].sent = text;
        } else {
            free(text);
        }
        st->job[i].final = final;
        n_final += final;
    }
    int end = 0;
    if (ok && n_final == st->n) {
        const char *name = NULL;
        char *text = st->fmt->done ? st->fmt->done(st->api, jobs, st->n, &name) : NULL;
        if (text)
            http_sse_send(sse, name, text);
        free(text);
        end = 1;
    } else if (st->fmt->timeout_s > 0 && mono_s() - st->t0 > st->fmt->timeout_s) {
        http_sse_send(sse, "timeout",
                      "{\"success\":false,\"error\":\"the stream timed out: open a new one\"}");
        end = 1;
    }
    free(jobs);
    return end;
}

int api_job_stream(api_t *api, http_request_t *req, const char (*ids)[40], int n, const api_stream_fmt_t *fmt,
                   const int *final) {
    job_stream_t *st = xcalloc(1, sizeof *st + (size_t)n * sizeof st->job[0]);
    st->api = api;
    st->fmt = fmt;
    st->t0 = mono_s();
    st->n = n;
    for (int i = 0; i < n; i++)
        snprintf(st->job[i].id, sizeof st->job[i].id, "%s", ids[i]);
    if (http_reply_sse(req, stream_fill, stream_end, st, &st->sse)) {
        free(st);
        return -1;
    }
    int live = 0;
    for (int i = 0; i < n; i++) {
        int h = final && final[i] ? 0 : jobs_subscribe(&api->jobs, st->job[i].id, stream_changed, st);
        st->job[i].handle = h > 0 ? h : 0;
        live += h > 0;
    }
    /* a job ahead leaving the queue changes nothing of this one's record, but moves its position */
    if (live) {
        int h = jobs_subscribe(&api->jobs, EVENTS_QUEUE_MOVED, stream_changed, st);
        st->moved = h > 0 ? h : 0;
    }
    return 0;
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

/* The request's Host header when it is a plain host[:port], else NULL (the server answers 400 to others). */
static const char *safe_host(http_request_t *req) {
    const char *h = http_request_header(req, "Host");
    return h && http_host_valid(h) ? h : NULL;
}

int api_result_url(api_t *api, http_request_t *req, const job_t *job, char *out, size_t size) {
    return api_signed_url(api, req, job, "/v1/results/", api->result_url_ttl, out, size, NULL);
}

int api_signed_url(api_t *api, http_request_t *req, const job_t *job, const char *path, double ttl, char *out,
                   size_t size, long long *expires_out) {
    blob_info_t info;
    /* sign only what exists: a result deleted under the row (by hand, a full disk) gets no link */
    if (job->status != JOB_STATUS_COMPLETED || !job->result_key[0] ||
        blob_stat(api->jobs.blobs, job->result_key, &info, NULL))
        return -1;
    double now = now_s();
    long long expires = (long long)floor(now + ttl);
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
    int n = snprintf(out, size, "%s%s%s?expires=%lld&sig=%s", base, path, job->id, expires, sig);
    if (expires_out)
        *expires_out = expires;
    return n < 0 || (size_t)n >= size ? -1 : 0;
}
