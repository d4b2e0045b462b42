/*
 * tinify.c - the Tinify.ai dialect, mounted at the server root. Contract:
 * ../shared/specs/tinify.openapi.json and ../shared/docs/tinify-contract.md
 * (section numbers below are the contract's).
 *
 * Upload once (an asset that lives temp_ttl_s and may feed several jobs),
 * then run upscale -> resize -> compress over it: each temp id of a request
 * becomes one job whose pipeline (steps.h) holds the stages the endpoint
 * asked for, all paid together or refused together (jobs_submit, one
 * transaction). The request's settings are echoed in the job's meta (JSON
 * the store keeps for us), so a JobResponse says what was asked; what ran
 * comes from the steps' report.
 *
 * Callers (section 2): an API key (Bearer upres_...), or a guest session:
 * an upload with neither opens one, a key row marked guest whose token is
 * a random string (only its SHA-256 kept), with guest_daily_credits per UTC
 * day, counted from the job records (the charge's period is the day). Job
 * ids are capabilities: status, streams and downloads need no credential
 * (EventSource sends no headers).
 *
 * Errors: {success: false, error, code, detail}; a 422 is FastAPI's
 * HTTPValidationError, detail a list of {loc, msg, type} naming the field.
 * Tinify jobs keep their files until expires_at (keep_s): a download
 * deletes nothing, in any dialect.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"
#include "auth/auth.h"
#include "core/base64url.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/uuid.h"
#include "core/xmalloc.h"
#include "image/image.h"
#include "steps/steps.h"

#include <openssl/rand.h>

#define STATUS_IDS_MAX 100 /* job ids in one /status or /status/stream */
#define STREAM_TIMEOUT_S 300.0
#define STREAM_RETRY_MS 3000
#define SESSION_TOKEN_BYTES 32 /* 256 bits, 43 base64url characters */

/* ---- replies ------------------------------------------------------------------------- */

/* {success: false, error, code, detail} with extra fields (taken over), as every error (http.h). */
static void __attribute__((format(printf, 5, 6)))
tz_error(http_request_t *req, unsigned status, const char *code, json_t *extra, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (status == 401)
        http_reply_header(req, "WWW-Authenticate", "Bearer");
    http_reply_error_code(req, status, code, extra, "%s", msg);
}

static void tz_invalid(http_request_t *req, json_t *loc, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/*
 * A refusal of the engine in this dialect's shape (frees what r holds): a
 * 422 is an HTTPValidationError like every 422 here, about the body; an
 * output over the tier's size is one too (section 5.2: 422 at request time).
 */
static void tz_refusal(http_request_t *req, jobs_refusal_t *r) {
    if (r->retry_after > 0) {
        char v[24];
        snprintf(v, sizeof v, "%d", r->retry_after);
        http_reply_header(req, "Retry-After", v);
    }
    if (r->status == 422 || !strcmp(r->code, "TIER_LIMIT_EXCEEDED")) {
        char type[48];
        snprintf(type, sizeof type, "%s", r->code);
        for (char *p = type; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        tz_invalid(req, json_pack("[s]", "body"), type, "%s", r->message);
        jobs_refusal_fini(r);
        return;
    }
    json_t *extra = r->extra;
    r->extra = NULL;
    tz_error(req, r->status, r->code, extra, "%s", r->message);
}

/* 422, FastAPI's shape: detail [{loc, msg, type}]; loc is a JSON array (taken over). */
static void __attribute__((format(printf, 4, 5)))
tz_invalid(http_request_t *req, json_t *loc, const char *type, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *detail = json_pack("[{s:o,s:s,s:s}]", "loc", loc, "msg", msg, "type", type);
    http_reply_json(req, 422,
                    json_pack("{s:b,s:s,s:s,s:o}", "success", 0, "error", msg, "code", "VALIDATION_ERROR",
                              "detail", detail));
}

static json_t *loc1(const char *a) { return json_pack("[s]", a); }
static json_t *loc2(const char *a, const char *b) { return json_pack("[s,s]", a, b); }
static json_t *loc3(const char *a, const char *b, const char *c) { return json_pack("[s,s,s]", a, b, c); }

static const char *mime_of(const char *fmt) {
    static const struct {
        const char *fmt, *mime;
    } t[] = {{"png", "image/png"},    {"jpg", "image/jpeg"},   {"jpeg", "image/jpeg"}, {"webp", "image/webp"},
             {"gif", "image/gif"},    {"avif", "image/avif"},  {"heif", "image/heif"}, {"tiff", "image/tiff"},
             {"ico", "image/x-icon"}, {"svg", "image/svg+xml"}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!strcmp(fmt, t[i].fmt))
            return t[i].mime;
    return "application/octet-stream";
}

/* A format as the spec's OutputFormat words say it ("jpeg" is "jpg"). */
static const char *format_word(const char *fmt) { return !strcmp(fmt, "jpeg") ? "jpg" : fmt; }

static void set_time(json_t *o, const char *name, double t) {
    char buf[40];
    json_object_set_new(o, name, t > 0 ? json_string(api_time(t, buf, sizeof buf)) : json_null());
}

/* ---- callers -------------------------------------------------------------------------- */

typedef enum { CALLER_NONE, CALLER_KEY, CALLER_GUEST } caller_t;

/*
 * Who is asking (section 2): a key (Bearer, which beats a token), a guest
 * (X-Session-Token), or nobody. Returns the kind with *key filled, or -1
 * after replying (401 for a bad credential or none when required, 429).
 */
static int tz_caller(api_t *api, http_request_t *req, int required, api_key_t *key) {
    jobs_refusal_t r = {0};
    int rc = api_key_check(api, req, 0, key, &r);
    if (rc > 0)
        return CALLER_KEY;
    if (rc == 0) {
        const char *token = http_request_header(req, "X-Session-Token");
        if (token && *token)
            rc = api_session_check(api, token, key, &r) > 0 ? CALLER_GUEST : -1;
        else if (required)
            rc = jobs_refuse(
                &r, 401, "UNAUTHORIZED", NULL,
                "send an API key (Authorization: Bearer upres_...) or the X-Session-Token an upload "
                "gave you");
        else
            return CALLER_NONE;
    }
    if (rc < 0)
        tz_refusal(req, &r);
    return rc;
}

/* ---- jobs as JobResponse -------------------------------------------------------------- */

static const char *tz_status(job_status_t s) {
    switch (s) {
    case JOB_STATUS_QUEUED:
    case JOB_STATUS_CLAIMED: return "queued";
    case JOB_STATUS_PROCESSING: return "processing";
    case JOB_STATUS_COMPLETED: return "completed";
    case JOB_STATUS_EXPIRED: return "expired";
    default: return "failed"; /* failed, cancelled */
    }
}

static int tz_final(job_status_t s) {
    return s == JOB_STATUS_COMPLETED || s == JOB_STATUS_FAILED || s == JOB_STATUS_CANCELLED ||
           s == JOB_STATUS_EXPIRED;
}

/* 1 when the job's report says a step op ran. */
static int ran(const json_t *report, const char *op) {
    size_t i;
    json_t *e;
    json_array_foreach(report, i,
                       e) if (!strcmp(json_string_value(json_object_get(e, "op")) ?: "", op)) return 1;
    return 0;
}

/* "photo.png" + "webp" -> "photo.webp" */
static void processed_name(const char *in, const char *fmt, char *out, size_t size) {
    const char *dot = strrchr(in, '.');
    int stem = dot && dot != in ? (int)(dot - in) : (int)strlen(in);
    snprintf(out, size, "%.*s.%s", stem, in, fmt);
}

static json_t *job_response(api_t *api, const job_t *j) {
    json_t *meta = json_loads(j->meta, 0, NULL);
    json_t *report = json_loads(j->report, 0, NULL);
    if (!json_is_object(meta)) {
        json_decref(meta);
        meta = json_object();
    }
    json_t *o = json_pack("{s:s,s:s,s:s,s:I}", "id", j->id, "status", tz_status(j->status),
                          "original_filename", j->input_name, "original_size", (json_int_t)j->input_bytes);
    json_object_set_new(o, "original_format",
                        j->input_format[0] ? json_string(format_word(j->input_format)) : json_null());
    json_object_set_new(o, "original_mime_type",
                        j->input_format[0] ? json_string(mime_of(j->input_format)) : json_null());
    json_object_set_new(o, "original_width", j->input_width ? json_integer(j->input_width) : json_null());
    json_object_set_new(o, "original_height", j->input_height ? json_integer(j->input_height) : json_null());
    json_object_set_new(o, "original_dpi", json_null());
    json_object_set_new(o, "original_file_path", j->input_key[0] ? json_string(j->input_key) : json_null());
    static const char *const echo[] = {
        "output_format",          "output_upscale_factor",  "output_width",
        "output_height",          "output_resize_behavior", "output_quality",
        "output_file_size_limit", "output_seo_tag_gen",     "output_seo_rename"};
    for (size_t i = 0; i < sizeof echo / sizeof echo[0]; i++) {
        json_t *v = json_object_get(meta, echo[i]);
        json_object_set(o, echo[i], v ? v : json_null());
    }
    json_object_set_new(o, "executed_upscale", json_boolean(ran(report, "upscale")));
    json_object_set_new(o, "executed_resize", json_boolean(ran(report, "resize")));
    json_object_set_new(o, "executed_compress", json_boolean(ran(report, "encode")));
    json_object_set_new(o, "executed_tag", json_false());
    int done = j->status == JOB_STATUS_COMPLETED && j->result_format[0];
    char name[300];
    processed_name(j->input_name, j->result_format, name, sizeof name);
    json_object_set_new(o, "processed_file_path",
                        done && j->result_key[0] ? json_string(j->result_key) : json_null());
    json_object_set_new(o, "processed_filename", done ? json_string(name) : json_null());
    json_object_set_new(o, "processed_size", done ? json_integer(j->result_bytes) : json_null());
    json_object_set_new(o, "processed_format",
                        done ? json_string(format_word(j->result_format)) : json_null());
    json_object_set_new(o, "processed_width", done ? json_integer(j->output_width) : json_null());
    json_object_set_new(o, "processed_height", done ? json_integer(j->output_height) : json_null());
    json_object_set_new(
        o, "processed_compression_ratio",
        done && j->result_bytes > 0
            ? json_real(round((double)j->input_bytes / (double)j->result_bytes * 1000.0) / 1000.0)
            : json_null());
    json_object_set_new(o, "seo_alt_text", json_null());
    json_object_set_new(o, "seo_filename", json_null());
    json_object_set_new(o, "seo_keywords", json_null());
    json_t *model = json_object_get(meta, "upscale_model"); /* an upres extension: the model that runs */
    json_object_set(o, "upscale_model", model ? model : json_null());
    json_t *src = json_object_get(meta, "job_source"), *entry = json_object_get(meta, "job_entry_point");
    json_object_set(o, "job_source", src ? src : json_null());
    json_object_set(o, "job_entry_point", entry ? entry : json_null());
    json_object_set_new(o, "processing_time_ms",
                        j->completed_at > 0 && j->started_at > 0
                            ? json_integer((json_int_t)llround((j->completed_at - j->started_at) * 1000.0))
                            : json_null());
    json_object_set_new(o, "credits_used", json_integer(j->refunded ? 0 : j->credits));
    json_object_set_new(o, "error_message",
                        j->status == JOB_STATUS_FAILED || j->status == JOB_STATUS_CANCELLED
                            ? json_string(j->error[0] ? j->error : "cancelled")
                            : json_null());
    set_time(o, "created_at", j->created_at);
    set_time(o, "started_at", j->started_at);
    set_time(o, "completed_at", j->completed_at);
    /* expires_at is required: a job not done yet shows when it would expire if it ended now */
    set_time(o, "expires_at", j->expires_at > 0 ? j->expires_at : now_s() + api->retention_s);
    json_decref(meta);
    json_decref(report);
    return o;
}

/* StatusResponse: the job, progress, queue fields while queued, download_url once completed. */
static json_t *status_response(api_t *api, const job_t *j) {
    json_t *o = json_pack("{s:b,s:o}", "success", 1, "job", job_response(api, j));
    json_object_set_new(o, "progress", json_integer(j->status == JOB_STATUS_COMPLETED ? 100 : j->progress));
    if (j->status == JOB_STATUS_QUEUED || j->status == JOB_STATUS_CLAIMED) {
        int pos = 0;
        double mpx = 0, rate = 0;
        int n = 0;
        if (store_job_queue_position(api->jobs.store, j->id, &pos, &mpx, NULL) == 0 && pos > 0) {
            json_object_set_new(o, "queue_position", json_integer(pos));
            /* measured: seconds per output megapixel of this model's recent jobs here */
            if (store_model_rate(api->jobs.store, j->model, 20, &rate, &n, NULL) == 0 && n > 0)
                json_object_set_new(
                    o, "estimated_wait_seconds",
                    json_integer((json_int_t)ceil(mpx * rate / (api->n_workers > 0 ? api->n_workers : 1))));
            else
                json_object_set_new(o, "estimated_wait_seconds", json_null());
        } else {
            json_object_set_new(o, "queue_position", json_integer(1)); /* claimed: it is next */
            json_object_set_new(o, "estimated_wait_seconds", json_null());
        }
    }
    if (j->status == JOB_STATUS_COMPLETED) {
        char path[80];
        snprintf(path, sizeof path, "/download/%s", j->id);
        json_object_set_new(o, "download_url", json_string(path));
    }
    return o;
}

/* ---- GET /, /health, /readiness, /config ------------------------------------------------ */

static void h_root(http_request_t *req, void *ctx) {
    if (http_request_accepts(req, "text/html")) { /* a browser: the web page */
        api_page_index(ctx, req);
        return;
    }
    http_reply_json(req, 200,
                    json_pack("{s:s,s:s,s:s,s:s}", "name", "upres", "api", "tinify", "version", API_VERSION,
                              "docs", "/api/v1/docs"));
}

static void h_health(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    int stopping = atomic_load(&api->jobs.stopping);
    http_reply_json(req, stopping ? 503 : 200,
                    json_pack("{s:s,s:s}", "status", stopping ? "stopping" : "ok", "version", API_VERSION));
}

static void h_readiness(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    long long counts[JOB_STATUS_COUNT];
    int store_ok = store_job_counts(api->jobs.store, counts, NULL) == 0;
    int ready = store_ok && !atomic_load(&api->jobs.stopping) && api->jobs.registry &&
                api->jobs.registry->n_models > 0;
    http_reply_json(req, ready ? 200 : 503,
                    json_pack("{s:s,s:{s:b,s:b,s:b}}", "status", ready ? "ready" : "not_ready", "checks",
                              "store", store_ok, "models",
                              api->jobs.registry && api->jobs.registry->n_models > 0, "accepting",
                              !atomic_load(&api->jobs.stopping)));
}

static void h_config(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    json_t *tiers = json_array();
    for (int i = 0; i < api->jobs.tiers.n; i++) {
        const tier_t *t = &api->jobs.tiers.tier[i];
        json_array_append_new(tiers,
                              json_pack("{s:s,s:i,s:i,s:i}", "name", t->name, "max_width", t->max_width,
                                        "max_height", t->max_height, "credits_per_job", t->credits));
    }
    json_t *o = json_pack("{s:b,s:i,s:I,s:I,s:I,s:i,s:i,s:I,s:I,s:I}", "success", 1, "guest_daily_credits",
                          api->guest_daily_credits, "max_upload_bytes", (json_int_t)api->max_upload_bytes,
                          "max_input_pixels", (json_int_t)api->jobs.max_input_pixels, "max_output_pixels",
                          (json_int_t)api->jobs.max_output_pixels, "max_batch_files", api->max_batch,
                          "max_gif_frames", api->jobs.max_frames, "retention_seconds",
                          (json_int_t)api->retention_s, "temp_file_ttl_seconds", (json_int_t)api->temp_ttl_s,
                          "signed_url_ttl_seconds", (json_int_t)api->signed_url_ttl);
    json_object_set_new(o, "output_formats",
                        json_pack("[s,s,s,s,s,s,s]", "original", "jpg", "png", "webp", "avif", "gif", "ico"));
    json_object_set_new(o, "upscale_model", json_string(api->tinify_model)); /* upres: the default `model` */
    json_object_set_new(o, "tiers", tiers);
    json_object_set_new(o, "upscale_model", json_string(api->tinify_model));
    http_reply_json(req, 200, o);
}

/* ---- uploads ---------------------------------------------------------------------------- */

/* An upload on its way to a background thread: who, and the new session when there is none. */
typedef struct upload {
    int kind;       /* caller_t */
    api_key_t key;  /* the caller's key or session (kind != CALLER_NONE) */
    char token[64]; /* a session token sent, echoed back; or the new one */
    char name[256]; /* the file name: the upload's, or for /upload/url the one asked for ("" = the URL's) */
    char path[PATH_MAX]; /* /upload: the staged file, the record's own once taken from the request */
    jobs_input_t in;     /* /upload: that file */
} upload_t;

/*
 * A new guest session (a key row marked guest) owning what an upload
 * stores: 0, or -1 with *r (429 when the address opened its day's share:
 * section 6.11, a dropped token must not be a free refill).
 */
static int open_session(api_t *api, http_request_t *req, upload_t *u, jobs_refusal_t *r) {
    double retry = 0;
    char who[80];
    snprintf(who, sizeof who, "ip:%s", http_request_client(req));
    if (!api_rate_take(api, api->session_rate, "session", who, 0, api->guest_sessions_per_ip, &retry, NULL)) {
        long secs = (long)ceil(retry);
        jobs_refuse(r, 429, "TOO_MANY_SESSIONS", json_pack("{s:I}", "retry_after", (json_int_t)secs),
                    "this address opened %d guest sessions in the last 24 hours: keep using one "
                    "(X-Session-Token) or use an API key",
                    api->guest_sessions_per_ip);
        r->retry_after = (int)secs;
        return -1;
    }
    unsigned char raw[SESSION_TOKEN_BYTES];
    if (RAND_bytes(raw, sizeof raw) != 1)
        return jobs_refuse(r, 500, "INTERNAL", NULL, "cannot make a session token");
    base64url_encode(raw, sizeof raw, u->token);
    memset(&u->key, 0, sizeof u->key);
    uuid_v4(u->key.id);
    snprintf(u->key.name, sizeof u->key.name, "guest session");
    snprintf(u->key.prefix, sizeof u->key.prefix, "guest_%.8s", u->token);
    auth_key_hash(u->token, u->key.hash);
    snprintf(u->key.tier, sizeof u->key.tier, "%s",
             api->jobs.tiers.n ? api->jobs.tiers.tier[0].name : "basic");
    u->key.quota = api->guest_daily_credits; /* per UTC day for a guest (jobs_submit) */
    u->key.credits = -1;
    u->key.created_at = now_s();
    u->key.guest = 1;
    u->kind = CALLER_GUEST;
    return 0;
}

/* Put the file as an asset of the caller (opening the session first when new) and answer TempFileResponse. */
static void upload_put(api_t *api, http_request_t *req, upload_t *u, const jobs_input_t *in) {
    jobs_refusal_t r = {0};
    asset_t a;
    int new_session = u->kind == CALLER_NONE;
    if (new_session && open_session(api, req, u, &r)) {
        tz_refusal(req, &r);
        return;
    }
    image_info_t info;
    if (jobs_asset_put(&api->jobs, in, u->key.id, api->temp_ttl_s, &a, &info, &r)) {
        tz_refusal(req, &r); /* a refused upload opens no session */
        return;
    }
    up_error_t err;
    if (new_session && store_key_insert(api->jobs.store, &u->key, &err)) {
        log_error("tinify: cannot record a guest session: %s", err.msg);
        if (blob_delete(api->jobs.blobs, a.key, NULL) == 0)
            store_asset_deleted(api->jobs.store, a.id, NULL);
        tz_error(req, 500, "INTERNAL", NULL, "cannot open a session");
        return;
    }
    char exp[40];
    json_t *o =
        json_pack("{s:b,s:s,s:s,s:I,s:s,s:s,s:s}", "success", 1, "temp_file_id", a.id, "original_filename",
                  a.name, "file_size", (json_int_t)a.bytes, "mime_type", mime_of(a.format), "temp_path",
                  a.key, "expires_at", api_time(a.expires_at, exp, sizeof exp));
    json_object_set_new(o, "session_token", u->kind == CALLER_GUEST ? json_string(u->token) : json_null());
    int gif = !strcmp(a.format, "gif");
    json_object_set_new(o, "gif_frame_count", gif ? json_integer(a.frames) : json_null());
    json_object_set_new(o, "gif_fps",
                        gif && info.fps > 0 ? json_real(round(info.fps * 100.0) / 100.0) : json_null());
    http_reply_json(req, 200, o);
}

static void upload_later(http_request_t *req, void *ctx, void *arg) {
    upload_t *u = arg;
    upload_put(ctx, req, u, &u->in);
    free(u);
}

/* Who uploads: a key, a session, or nobody (a session is opened). NULL after replying. */
static upload_t *upload_new(api_t *api, http_request_t *req) {
    upload_t *u = xcalloc(1, sizeof *u);
    u->kind = tz_caller(api, req, 0, &u->key);
    if (u->kind < 0) {
        free(u);
        return NULL;
    }
    const char *token = http_request_header(req, "X-Session-Token");
    if (u->kind == CALLER_GUEST)
        snprintf(u->token, sizeof u->token, "%s", token);
    return u;
}

static void h_upload(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    if (api_refuse_if_stopping(api, req))
        return;
    const char *path, *name;
    unsigned long long size;
    if (http_request_upload(req, "file", &path, &name, &size)) {
        tz_invalid(req, loc2("body", "file"), "missing",
                   "Field required: send the image as multipart field 'file'");
        return;
    }
    if (size == 0) {
        tz_error(req, 415, "UNSUPPORTED_IMAGE", NULL, "the upload is empty: send an image");
        return;
    }
    upload_t *u = upload_new(api, req);
    if (!u)
        return;
    snprintf(u->name, sizeof u->name, "%s", name && *name ? name : "image");
    snprintf(u->path, sizeof u->path, "%s", path);
    u->in = (jobs_input_t){.path = u->path, .size = (size_t)size, .name = u->name};
    /* the staged file is the upload record's from here: jobs_asset_put moves or removes it */
    up_error_t err;
    if (http_request_upload_take(req, NULL, &err)) {
        free(u);
        log_error("tinify: cannot take the upload: %s", err.msg);
        http_reply_storage_error(req, errno);
        return;
    }
    if (http_request_defer(req, HTTP_POOL_SUBMIT, upload_later, u)) {
        unlink(u->path);
        free(u);
        http_reply_header(req, "Retry-After", "1");
        tz_error(req, 503, "UNAVAILABLE", NULL, "the server is busy with other uploads: retry in a second");
    }
}

static void url_fetched(api_t *api, http_request_t *req, const api_input_t *in, void *arg) {
    upload_t *u = arg;
    jobs_input_t ji = {
        .data = in->data, .size = in->size, .name = u->name[0] ? u->name : in->name, .from_url = 1};
    upload_put(api, req, u, &ji);
    free(u);
}

static void url_refused(http_request_t *req, jobs_refusal_t *r, void *arg) {
    tz_refusal(req, r);
    free(arg);
}

/* POST /upload/url {url, filename}: fetched on the fetch pool (SSRF-safe), then as /upload. */
static void h_upload_url(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    if (api_refuse_if_stopping(api, req))
        return;
    size_t n = 0;
    const char *body = http_request_body(req, &n);
    json_error_t jerr;
    json_t *o = body ? json_loadb(body, n, 0, &jerr) : NULL;
    json_t *url = json_object_get(o, "url"), *fname = json_object_get(o, "filename");
    if (!json_is_object(o))
        tz_invalid(req, loc1("body"), "json_invalid", "the body is not a JSON object: %s",
                   o      ? "expected {\"url\": ...}"
                   : body ? jerr.text
                          : "empty body");
    else if (!url)
        tz_invalid(req, loc2("body", "url"), "missing", "Field required");
    else if (!json_is_string(url))
        tz_invalid(req, loc2("body", "url"), "string_type", "Input should be a valid string");
    else if (fname && !json_is_null(fname) && !json_is_string(fname))
        tz_invalid(req, loc2("body", "filename"), "string_type", "Input should be a valid string");
    else {
        upload_t *u = upload_new(api, req);
        if (u) {
            if (json_is_string(fname))
                snprintf(u->name, sizeof u->name, "%s", json_string_value(fname));
            jobs_refusal_t r = {0};
            if (api_fetch_async(api, req, u->kind == CALLER_KEY ? &u->key : NULL, json_string_value(url),
                                url_fetched, url_refused, u, &r)) {
                free(u);
                tz_refusal(req, &r);
            }
        }
    }
    json_decref(o);
}

/* ---- processing: /auto, /compress, /resize, /upscale --------------------------------------- */

typedef enum { ENTRY_AUTO, ENTRY_COMPRESS, ENTRY_RESIZE, ENTRY_UPSCALE } entry_t;
static const char *const entry_names[] = {"auto", "compress", "resize", "upscale"};

/* ProcessingSettings, after the request's precedence (section 5.3): top level, then settings, then default.
 */
typedef struct settings {
    char format[16];         /* "original" or an OutputFormat word */
    double factor;           /* 0 = none */
    int width, height;       /* 0 = none */
    char behavior[8];        /* "pad" or "crop" */
    int quality;             /* 1..100 */
    long long size_limit;    /* bytes, 0 = none */
    int seo_tag, seo_rename; /* out of scope: 501 when set */
    int frame_limit;         /* gif_frame_limit, 0 = all */
    /* upres extensions (the web page's options): top level for /upscale, else in settings */
    char model[64]; /* "" = api->tinify_model */
    int tile;       /* tile_size: 0 = automatic */
    char alpha[12]; /* alpha_mode: "" (resample) or "model" */
} settings_t;

static const char *const format_names[] = {"original", "jpg", "png", "webp", "avif",
                                           "gif",      "svg", "ico", NULL};
static const char *const behavior_names[] = {"pad", "crop", NULL};
static const char *const alpha_names[] = {"resample", "model", NULL};

static int in_list(const char *const *names, const char *s) {
    for (int i = 0; names[i]; i++)
        if (!strcmp(names[i], s))
            return 1;
    return 0;
}

/* Where a field was read: loc for its errors. */
typedef struct field {
    http_request_t *req;
    const char *where; /* "settings" or NULL (top level) */
    const char *name;
} field_t;

static json_t *field_loc(const field_t *f) {
    return f->where ? loc3("body", f->where, f->name) : loc2("body", f->name);
}

/* An integer field in [lo, hi] (null allowed when nullable: *out untouched). 1 set, 0 absent/null, -1
 * replied. */
static int get_int(json_t *o, const field_t *f, long long lo, long long hi, int nullable, long long *out) {
    json_t *v = json_object_get(o, f->name);
    if (!v || (nullable && json_is_null(v)))
        return 0;
    if (!json_is_integer(v)) {
        tz_invalid(f->req, field_loc(f), "int_type", "Input should be a valid integer");
        return -1;
    }
    long long x = json_integer_value(v);
    if (x < lo || x > hi) {
        if (hi == LLONG_MAX)
            tz_invalid(f->req, field_loc(f), "greater_than_equal",
                       "Input should be greater than or equal to %lld", lo);
        else
            tz_invalid(f->req, field_loc(f), x < lo ? "greater_than_equal" : "less_than_equal",
                       "Input should be %s %lld",
                       x < lo ? "greater than or equal to" : "less than or equal to", x < lo ? lo : hi);
        return -1;
    }
    *out = x;
    return 1;
}

static int get_number(json_t *o, const field_t *f, double lo, double hi, double *out) {
    json_t *v = json_object_get(o, f->name);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v)) {
        tz_invalid(f->req, field_loc(f), "float_type", "Input should be a valid number");
        return -1;
    }
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi)) {
        tz_invalid(f->req, field_loc(f), x < lo ? "greater_than_equal" : "less_than_equal",
                   "Input should be %s %g", x < lo ? "greater than or equal to" : "less than or equal to",
                   x < lo ? lo : hi);
        return -1;
    }
    *out = x;
    return 1;
}

static int get_bool(json_t *o, const field_t *f, int *out) {
    json_t *v = json_object_get(o, f->name);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v)) {
        tz_invalid(f->req, field_loc(f), "bool_type", "Input should be a valid boolean");
        return -1;
    }
    *out = json_is_true(v);
    return 1;
}

/* A string field that must be one of names (section 5.3: enum values, 422 else). */
static int get_choice(json_t *o, const field_t *f, const char *const *names, char *out, size_t size) {
    json_t *v = json_object_get(o, f->name);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v) || !in_list(names, json_string_value(v))) {
        char list[200] = "";
        for (int i = 0; names[i]; i++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s'%s'", i ? ", " : "", names[i]);
        tz_invalid(f->req, field_loc(f), "enum", "Input should be %s", list);
        return -1;
    }
    snprintf(out, size, "%s", json_string_value(v));
    return 1;
}

/* A model name (letters, digits and . _ + -, under 64): 0 absent or null, 1 read, -1 after replying. */
static int get_name(json_t *o, const field_t *f, char *out, size_t size) {
    json_t *v = json_object_get(o, f->name);
    if (!v || json_is_null(v))
        return 0;
    const char *s = json_is_string(v) ? json_string_value(v) : "";
    size_t n = strlen(s);
    int ok = n > 0 && n < size;
    for (size_t i = 0; i < n && ok; i++)
        ok = isalnum((unsigned char)s[i]) || strchr("._+-", s[i]);
    if (!ok) {
        tz_invalid(f->req, field_loc(f), "string_pattern_mismatch",
                   "Input should be a model name from /api/v1/models");
        return -1;
    }
    memcpy(out, s, n + 1);
    return 1;
}

/* get_int into an int (untouched when absent or null). */
static int get_int_to(json_t *o, const field_t *f, long long lo, long long hi, int nullable, int *dst) {
    long long x = *dst;
    int rc = get_int(o, f, lo, hi, nullable, &x);
    *dst = (int)x;
    return rc;
}

/* The upres extensions (settings_t): 0, or -1 after replying. */
static int get_extensions(json_t *o, field_t *f, settings_t *st) {
    f->name = "model";
    if (get_name(o, f, st->model, sizeof st->model) < 0)
        return -1;
    f->name = "tile_size";
    if (get_int_to(o, f, 0, 8192, 1, &st->tile) < 0)
        return -1;
    if (st->tile > 0 && st->tile < 16) {
        tz_invalid(f->req, field_loc(f), "greater_than_equal", "Input should be 0 (automatic) or 16 to 8192");
        return -1;
    }
    f->name = "alpha_mode";
    return get_choice(o, f, alpha_names, st->alpha, sizeof st->alpha) < 0 ? -1 : 0;
}

/* The ProcessingSettings object (may be absent or null) into *st. 0, or -1 after replying. */
static int parse_settings(http_request_t *req, json_t *o, settings_t *st) {
    if (!o || json_is_null(o))
        return 0;
    if (!json_is_object(o)) {
        tz_invalid(req, loc2("body", "settings"), "model_attributes_type",
                   "Input should be a valid dictionary");
        return -1;
    }
    field_t f = {req, "settings", NULL};
#define FIELD(n) (f.name = (n), &f)
    if (get_choice(o, FIELD("output_format"), format_names, st->format, sizeof st->format) < 0 ||
        get_number(o, FIELD("output_upscale_factor"), 0.1, 10, &st->factor) < 0 ||
        get_int_to(o, FIELD("output_width"), 1, 8192, 1, &st->width) < 0 ||
        get_int_to(o, FIELD("output_height"), 1, 8192, 1, &st->height) < 0 ||
        get_choice(o, FIELD("output_resize_behavior"), behavior_names, st->behavior, sizeof st->behavior) <
            0 ||
        get_int_to(o, FIELD("output_quality"), 1, 100, 0, &st->quality) < 0 ||
        get_int(o, FIELD("output_file_size_limit"), 1, LLONG_MAX, 1, &st->size_limit) < 0 ||
        get_bool(o, FIELD("output_seo_tag_gen"), &st->seo_tag) < 0 ||
        get_bool(o, FIELD("output_seo_rename"), &st->seo_rename) < 0 ||
        get_int_to(o, FIELD("gif_frame_limit"), 1, 100, 1, &st->frame_limit) < 0 ||
        get_extensions(o, &f, st) < 0)
        return -1;
    return 0;
}

/* The endpoint's own top-level fields over *st. 0, or -1 after replying. */
static int parse_top(http_request_t *req, json_t *o, entry_t entry, settings_t *st) {
    field_t f = {req, NULL, NULL};
    if (entry != ENTRY_AUTO &&
        get_choice(o, FIELD("output_format"), format_names, st->format, sizeof st->format) < 0)
        return -1;
    if (entry == ENTRY_COMPRESS) {
        if (get_int_to(o, FIELD("quality"), 1, 100, 0, &st->quality) < 0 ||
            get_int(o, FIELD("target_file_size"), 1, LLONG_MAX, 1, &st->size_limit) < 0)
            return -1;
    } else if (entry == ENTRY_RESIZE) {
        if (get_int_to(o, FIELD("width"), 1, 8192, 1, &st->width) < 0 ||
            get_int_to(o, FIELD("height"), 1, 8192, 1, &st->height) < 0 ||
            get_choice(o, FIELD("resize_behavior"), behavior_names, st->behavior, sizeof st->behavior) < 0)
            return -1;
        if (!st->width && !st->height) {
            tz_invalid(req, loc2("body", "width"), "missing", "resize needs width, height or both");
            return -1;
        }
    } else if (entry == ENTRY_UPSCALE) {
        if (get_number(o, FIELD("factor"), 1, 4, &st->factor) < 0 || get_extensions(o, &f, st) < 0)
            return -1;
        if (!st->factor)
            st->factor = 2; /* the spec's default */
    }
#undef FIELD
    return 0;
}

/* The model an upscale runs: the request's, else the server's Tinify model. */
static const char *upscale_model(const api_t *api, const settings_t *st) {
    return st->model[0] ? st->model : api->tinify_model;
}

/* The format a job writes: "original" is the input's own when writable, else png. */
static const char *out_format(const settings_t *st, const asset_t *a) {
    if (strcmp(st->format, "original"))
        return st->format;
    const char *f = image_format_canonical(a->format);
    return f ? f : "png";
}

/*
 * One job's pipeline over asset a (section 5.2): upscale when a factor is
 * set (above 1 the network, then an exact resample; below 1 a plain
 * shrink), resize when a size is, compress always. 0, or -1 after replying.
 */
static int build_steps(api_t *api, http_request_t *req, const settings_t *st, const asset_t *a, job_t *job) {
    json_t *steps = json_array();
    if (st->factor > 1) {
        json_t *u =
            json_pack("{s:s,s:s,s:f}", "op", "upscale", "model", upscale_model(api, st), "scale", st->factor);
        if (st->tile)
            json_object_set_new(u, "tile", json_integer(st->tile));
        if (st->alpha[0])
            json_object_set_new(u, "alpha", json_string(st->alpha));
        json_array_append_new(steps, u);
    } else if (st->factor > 0 && st->factor < 1)
        json_array_append_new(steps, json_pack("{s:s,s:i,s:i}", "op", "resize", "width",
                                               (int)fmax(1, llround(a->width * st->factor)), "height",
                                               (int)fmax(1, llround(a->height * st->factor))));
    const char *fmt = out_format(st, a);
    if (st->width || st->height) {
        json_t *r = json_pack("{s:s}", "op", "resize");
        if (st->width)
            json_object_set_new(r, "width", json_integer(st->width));
        if (st->height)
            json_object_set_new(r, "height", json_integer(st->height));
        if (st->width && st->height) {
            json_object_set_new(r, "fit", json_string(st->behavior));
            /* pad bars: transparent where the format has alpha, else white */
            if (!strcmp(st->behavior, "pad"))
                json_object_set_new(r, "background",
                                    json_string(strcmp(fmt, "jpg") ? "#00000000" : "#ffffff"));
        }
        json_array_append_new(steps, r);
    }
    json_t *enc = json_pack("{s:s,s:s,s:i}", "op", "encode", "format", fmt, "quality", st->quality);
    if (st->size_limit)
        json_object_set_new(enc, "target_bytes", json_integer(st->size_limit));
    if (!strcmp(fmt, "gif") || !strcmp(fmt, "webp")) /* an animation stays one: gif_frame_limit, else all */
        json_object_set_new(enc, "frames",
                            json_integer(st->frame_limit        ? st->frame_limit
                                         : api->jobs.max_frames ? api->jobs.max_frames
                                                                : 100));
    json_array_append_new(steps, enc);
    steps_t parsed;
    up_error_t err;
    char *text = json_dumps(steps, JSON_COMPACT);
    int rc = text && strlen(text) < sizeof job->steps ? steps_parse(steps, &parsed, &err) : UP_ERR_NOMEM;
    if (rc == 0)
        memcpy(job->steps, text, strlen(text) + 1);
    else if (rc == UP_ERR_NOMEM)
        tz_error(req, 500, "INTERNAL", NULL, "cannot build the pipeline");
    else
        tz_invalid(req, loc2("body", "settings"), "value_error", "%s", err.msg);
    free(text);
    json_decref(steps);
    return rc ? -1 : 0;
}

/* What the request asked, kept with each job (job_t.meta) for its JobResponse. */
static int set_meta(const api_t *api, http_request_t *req, const settings_t *st, entry_t entry, int guest,
                    job_t *job) {
    json_t *m =
        json_pack("{s:s,s:s,s:s,s:o,s:o,s:o,s:s,s:i,s:o,s:b,s:b,s:o}", "job_entry_point", entry_names[entry],
                  "job_source", guest ? "web" : "api", "output_format", st->format, "output_upscale_factor",
                  st->factor ? json_real(st->factor) : json_null(), "output_width",
                  st->width ? json_integer(st->width) : json_null(), "output_height",
                  st->height ? json_integer(st->height) : json_null(), "output_resize_behavior", st->behavior,
                  "output_quality", st->quality, "output_file_size_limit",
                  st->size_limit ? json_integer(st->size_limit) : json_null(), "output_seo_tag_gen",
                  st->seo_tag, "output_seo_rename", st->seo_rename, "gif_frame_limit",
                  st->frame_limit ? json_integer(st->frame_limit) : json_null());
    json_object_set_new(m, "upscale_model",
                        st->factor > 1 ? json_string(upscale_model(api, st)) : json_null()); /* upres's own */
    char *text = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    int ok = text && strlen(text) < sizeof job->meta;
    if (ok)
        memcpy(job->meta, text, strlen(text) + 1);
    else
        tz_error(req, 500, "INTERNAL", NULL, "cannot record the request");
    free(text);
    return ok ? 0 : -1;
}

/* Credits the caller has left before a charge; -1 = unlimited. */
static long long credits_left(api_t *api, const api_key_t *key) {
    double now = now_s();
    double period = key->guest ? fmax(auth_day_start(now), key->reset_at) : auth_month_start(now);
    long long used = 0;
    if (key->quota >= 0 && store_key_usage(api->jobs.store, key->id, period, &used, NULL))
        used = 0;
    long long left = key->quota >= 0 ? key->quota - used : -1;
    if (key->credits >= 0 && (left < 0 || key->credits < left))
        left = key->credits;
    return left < 0 && (key->quota >= 0 || key->credits >= 0) ? 0 : left;
}

/* The answer of a processing request: ProcessFilesResponse, built before the jobs are stored. */
typedef struct process_answer {
    api_t *api;
    long long left; /* credits left before the charge, -1 = unlimited */
} process_answer_t;

static char *process_answer(void *ctx, const job_t *jobs, int n, const char *note, unsigned *status) {
    process_answer_t *pa = ctx;
    (void)note;
    json_t *list = json_array();
    long long used = 0;
    for (int i = 0; i < n; i++) {
        json_array_append_new(list, job_response(pa->api, &jobs[i]));
        used += jobs[i].credits;
    }
    *status = 200;
    return http_json_text(
        json_pack("{s:b,s:o,s:I,s:o}", "success", 1, "jobs", list, "credits_used", (json_int_t)used,
                  "credits_remaining",
                  pa->left >= 0 ? json_integer(pa->left - used > 0 ? pa->left - used : 0) : json_null()));
}

static void process(http_request_t *req, api_t *api, entry_t entry) {
    if (api_refuse_if_stopping(api, req))
        return;
    size_t n = 0;
    const char *body = http_request_body(req, &n);
    json_error_t jerr;
    json_t *o = body ? json_loadb(body, n, 0, &jerr) : NULL;
    job_t *jobs = NULL;
    api_key_t key;
    int kind;
    /* section 5.11: validation, then lookup (404), then charge (402) */
    if (!json_is_object(o)) {
        tz_invalid(req, loc1("body"), "json_invalid", "the body is not a JSON object: %s",
                   o      ? "expected {\"temp_file_ids\": [...]}"
                   : body ? jerr.text
                          : "empty body");
        goto out;
    }
    json_t *ids = json_object_get(o, "temp_file_ids");
    if (!ids) {
        tz_invalid(req, loc2("body", "temp_file_ids"), "missing", "Field required");
        goto out;
    }
    if (!json_is_array(ids) || json_array_size(ids) == 0 || json_array_size(ids) > (size_t)api->max_batch) {
        tz_invalid(req, loc2("body", "temp_file_ids"), json_is_array(ids) ? "too_long" : "list_type",
                   "temp_file_ids must be a list of 1 to %d temp file ids", api->max_batch);
        goto out;
    }
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v) {
        if (!json_is_string(v) || !uuid_valid(json_string_value(v))) {
            tz_invalid(req, json_pack("[s,s,i]", "body", "temp_file_ids", (int)i), "uuid_parsing",
                       "Input should be a temp file id (a UUID) from /upload");
            goto out;
        }
    }
    settings_t st = {.format = "original", .behavior = "pad", .quality = 80};
    if (parse_settings(req, json_object_get(o, "settings"), &st) || parse_top(req, o, entry, &st))
        goto out;
    if (!strcmp(st.format, "svg")) {
        tz_invalid(req, loc2("body", "output_format"), "value_error",
                   "svg output needs an SVG input: raster images cannot become SVG");
        goto out;
    }
    if (strcmp(st.format, "original") && !image_format_canonical(st.format)) {
        tz_invalid(req, loc2("body", "output_format"), "value_error", "this server cannot write %s yet",
                   st.format);
        goto out;
    }
    if (st.model[0] && !upscale_registry_find(api->jobs.registry, st.model)) {
        tz_invalid(req, loc2("body", "model"), "enum", "no model '%s' here: GET /api/v1/models lists them",
                   st.model);
        goto out;
    }
    if (st.seo_tag || st.seo_rename) {
        tz_error(req, 501, "NOT_IMPLEMENTED", NULL, "AI tagging and SEO renaming are not part of upres");
        goto out;
    }
    if ((kind = tz_caller(api, req, 1, &key)) < 0)
        goto out;
    int count = (int)json_array_size(ids);
    jobs = xcalloc((size_t)count, sizeof *jobs);
    json_array_foreach(ids, i, v) {
        job_t *j = &jobs[i];
        asset_t a;
        const char *id = json_string_value(v);
        if (store_asset_get(api->jobs.store, id, &a, NULL) || strcmp(a.owner, key.id) || !a.key[0] ||
            a.expires_at <= now_s()) {
            tz_error(req, 404, "NOT_FOUND", NULL, "no temp file '%s' (uploads are kept %d minutes)", id,
                     (int)(api->temp_ttl_s / 60));
            goto out;
        }
        snprintf(j->asset_id, sizeof j->asset_id, "%s", a.id);
        j->keep_s = api->retention_s; /* Tinify retention: until expires_at, downloads delete nothing */
        if (build_steps(api, req, &st, &a, j) || set_meta(api, req, &st, entry, kind == CALLER_GUEST, j))
            goto out;
    }
    process_answer_t pa = {.api = api, .left = credits_left(api, &key)};
    jobs_submission_t s = {
        .key = &key, .jobs = jobs, .n = count, .answer = process_answer, .answer_ctx = &pa};
    jobs_answer_t a;
    jobs_refusal_t r = {0};
    if (jobs_submit(&api->jobs, &s, &a, &r)) {
        if (r.status == 402) { /* section 5.8: one shape for quota, balance and guest credits */
            long long needed = 0;
            for (int k = 0; k < count; k++)
                needed += jobs[k].credits;
            jobs_refusal_fini(&r);
            tz_error(req, 402, "INSUFFICIENT_CREDITS",
                     json_pack("{s:I,s:I}", "credits_remaining", (json_int_t)(pa.left > 0 ? pa.left : 0),
                               "credits_needed", (json_int_t)needed),
                     "Not enough credits: %lld left, this request needs %lld.", pa.left > 0 ? pa.left : 0,
                     needed);
        } else {
            tz_refusal(req, &r);
        }
        goto out;
    }
    http_reply_data(req, a.status, "application/json", a.body, strlen(a.body));
    free(a.body);
out:
    free(jobs);
    json_decref(o);
}

static void h_auto(http_request_t *req, void *ctx) { process(req, ctx, ENTRY_AUTO); }
static void h_compress(http_request_t *req, void *ctx) { process(req, ctx, ENTRY_COMPRESS); }
static void h_resize(http_request_t *req, void *ctx) { process(req, ctx, ENTRY_RESIZE); }
static void h_upscale(http_request_t *req, void *ctx) { process(req, ctx, ENTRY_UPSCALE); }

/* ---- status ------------------------------------------------------------------------------ */

/* The job named in the path: 0 with *job, or -1 after replying (422 not a UUID, 404). */
static int path_job(api_t *api, http_request_t *req, job_t *job) {
    const char *id = http_request_param(req, "job_id");
    if (!uuid_valid(id)) {
        tz_invalid(req, loc2("path", "job_id"), "uuid_parsing", "Input should be a valid UUID");
        return -1;
    }
    jobs_refusal_t r = {0};
    if (jobs_get(&api->jobs, id, NULL, 0, JOBS_STATUS, job, &r)) {
        tz_refusal(req, &r);
        return -1;
    }
    return 0;
}

static void h_status(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    job_t job;
    if (!path_job(api, req, &job))
        http_reply_json(req, 200, status_response(api, &job));
}

/* The ids of ?job_ids= (repeated, or comma-separated, in order). */
typedef struct id_list {
    char (*id)[40];
    int n;
    int bad;  /* one was not a UUID */
    int over; /* more than STATUS_IDS_MAX */
} id_list_t;

static int add_ids(const char *value, void *ctx) {
    id_list_t *l = ctx;
    const char *p = value;
    while (*p) {
        size_t len = strcspn(p, ",");
        char one[64];
        while (len && isspace((unsigned char)*p))
            p++, len--;
        snprintf(one, sizeof one, "%.*s", (int)(len < sizeof one ? len : sizeof one - 1), p);
        for (size_t k = strlen(one); k && isspace((unsigned char)one[k - 1]); k--)
            one[k - 1] = '\0';
        if (one[0]) {
            if (!uuid_valid(one))
                l->bad = 1;
            else if (l->n >= STATUS_IDS_MAX)
                l->over = 1;
            else
                memcpy(l->id[l->n++], one, 37); /* a valid UUID is 36 characters */
        }
        p += len;
        if (*p == ',')
            p++;
    }
    return 0;
}

/* ?job_ids= into *l. 0, or -1 after replying 422. */
static int query_ids(http_request_t *req, id_list_t *l) {
    l->id = xcalloc(STATUS_IDS_MAX, sizeof *l->id);
    http_request_query_all(req, "job_ids", add_ids, l);
    if (l->bad || l->over || l->n == 0) {
        tz_invalid(req, loc2("query", "job_ids"),
                   l->n == 0 && !l->bad && !l->over ? "missing" : "value_error", "%s",
                   l->bad    ? "every job id must be a UUID"
                   : l->over ? "at most 100 job ids"
                             : "Field required: job_ids, repeated or comma-separated");
        return -1;
    }
    return 0;
}

/* The known jobs of l, in order (unknown ids left out): new array, *n. */
static job_t *read_jobs(api_t *api, const id_list_t *l, int *n) {
    job_t *jobs = xcalloc((size_t)l->n, sizeof *jobs);
    *n = 0;
    for (int i = 0; i < l->n; i++)
        if (store_job_get(api->jobs.store, l->id[i], &jobs[*n], NULL) == 0)
            (*n)++;
    return jobs;
}

static json_t *batch_response(api_t *api, const job_t *jobs, int n) {
    json_t *list = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(list, job_response(api, &jobs[i]));
    return json_pack("{s:b,s:o,s:i}", "success", 1, "jobs", list, "total", n);
}

static void h_status_batch(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    id_list_t l = {0};
    if (!query_ids(req, &l)) {
        int n;
        job_t *jobs = read_jobs(api, &l, &n);
        http_reply_json(req, 200, batch_response(api, jobs, n));
        free(jobs);
    }
    free(l.id);
}

/* ---- streams (section 5.6) ------------------------------------------------------------------ */

static char *stream_event(api_t *api, const job_t *job, const char **name, int *final) {
    *final = tz_final(job->status);
    *name = *final ? "complete" : "status";
    return http_json_text(status_response(api, job));
}

static char *stream_done(api_t *api, const job_t *jobs, int n, const char **name) {
    *name = "done";
    return http_json_text(batch_response(api, jobs, n));
}

static const api_stream_fmt_t one_stream = {
    .retry_ms = STREAM_RETRY_MS, .timeout_s = STREAM_TIMEOUT_S, .event = stream_event};
static const api_stream_fmt_t batch_stream = {
    .retry_ms = STREAM_RETRY_MS, .timeout_s = STREAM_TIMEOUT_S, .event = stream_event, .done = stream_done};

static void h_status_stream(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    job_t job;
    if (path_job(api, req, &job))
        return;
    int final = tz_final(job.status);
    if (api_job_stream(api, req, (const char(*)[40])job.id, 1, &one_stream, &final))
        tz_error(req, 500, "INTERNAL", NULL, "cannot start the event stream");
}

static void h_status_batch_stream(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    id_list_t l = {0};
    if (query_ids(req, &l)) {
        free(l.id);
        return;
    }
    int n;
    job_t *jobs = read_jobs(api, &l, &n);
    if (n == 0) {
        tz_error(req, 404, "NOT_FOUND", NULL, "none of these jobs exists");
    } else {
        char(*ids)[40] = xcalloc((size_t)n, sizeof *ids);
        int *final = xcalloc((size_t)n, sizeof *final);
        for (int i = 0; i < n; i++) {
            snprintf(ids[i], sizeof ids[i], "%s", jobs[i].id);
            final[i] = tz_final(jobs[i].status);
        }
        if (api_job_stream(api, req, (const char(*)[40])ids, n, &batch_stream, final))
            tz_error(req, 500, "INTERNAL", NULL, "cannot start the event stream");
        free(ids);
        free(final);
    }
    free(jobs);
    free(l.id);
}

/* ---- cancel (an upres extension, for the web page) ----------------------------------------- */

/*
 * POST /cancel/{job_id}: with the job's own credential (its key, or the
 * session that made it). 200 {status: "cancelled"} for a queued job, 202
 * {status: "processing"} for a running one (it stops within a moment and
 * then reads as failed, "cancelled"); 409 JOB_FINISHED, 401, 404.
 */
static void h_cancel(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    job_t job;
    api_key_t key;
    int kind;
    if (path_job(api, req, &job) || (kind = tz_caller(api, req, 0, &key)) < 0)
        return;
    jobs_refusal_t r = {0};
    job_status_t was = JOB_STATUS_QUEUED;
    if (jobs_access(&job, kind == CALLER_NONE ? NULL : &key, 1, JOBS_DESTROY, &r) ||
        jobs_cancel(&api->jobs, &job, &was, &r)) {
        tz_refusal(req, &r);
        return;
    }
    int queued = was == JOB_STATUS_QUEUED;
    http_reply_json(
        req, queued ? 200 : 202,
        json_pack("{s:b,s:s,s:s,s:s}", "success", 1, "job_id", job.id, "status",
                  queued ? "cancelled" : "processing", "message",
                  queued ? "the job was cancelled" : "cancel requested: the job stops within a moment"));
}

/* ---- downloads (section 5.7) ----------------------------------------------------------------- */

/* A completed job whose result exists: 0, or -1 after replying (409 not done or failed, 404 gone). */
static int result_ready(api_t *api, http_request_t *req, const job_t *job) {
    if (job->status == JOB_STATUS_QUEUED || job->status == JOB_STATUS_CLAIMED ||
        job->status == JOB_STATUS_PROCESSING) {
        tz_error(req, 409, "JOB_NOT_READY", json_pack("{s:s}", "status", tz_status(job->status)),
                 "the job is %s: its result is not ready yet", tz_status(job->status));
        return -1;
    }
    if (job->status == JOB_STATUS_FAILED || job->status == JOB_STATUS_CANCELLED) {
        tz_error(req, 409, "JOB_FAILED", NULL, "the job failed: %s",
                 job->error[0] ? job->error : "cancelled");
        return -1;
    }
    blob_info_t info;
    if (job->status != JOB_STATUS_COMPLETED || !job->result_key[0] ||
        blob_stat(api->jobs.blobs, job->result_key, &info, NULL)) {
        tz_error(req, 404, "NOT_FOUND", NULL, "the result of job %s is gone (its retention ended)", job->id);
        return -1;
    }
    return 0;
}

static void h_download(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    job_t job;
    const char *e = http_request_query(req, "expires"), *sig = http_request_query(req, "sig");
    if (e || sig) { /* a signed link: it must verify (the id alone is the capability without one) */
        char *end = NULL;
        long long expires = e ? strtoll(e, &end, 10) : 0;
        int rc = e && sig && *e && !*end
                     ? auth_verify(api->secret, http_request_param(req, "job_id"), expires, sig, now_s())
                     : UP_ERR_INVALID;
        if (rc) {
            tz_error(req, 403, rc == UP_ERR_EXPIRED ? "LINK_EXPIRED" : "FORBIDDEN", NULL, "%s",
                     rc == UP_ERR_EXPIRED ? "this link has expired: ask /download/{job_id}/url for a new one"
                                          : "this link is not valid (its signature does not match)");
            return;
        }
    }
    char name[300];
    if (path_job(api, req, &job) || result_ready(api, req, &job))
        return;
    processed_name(job.input_name, job.result_format, name, sizeof name);
    if (api_reply_blob(api, req, job.result_key, api_content_type(job.result_format), name))
        tz_error(req, 404, "NOT_FOUND", NULL, "the result of job %s is gone (its retention ended)", job.id);
}

static void h_download_url(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    job_t job;
    char url[600], name[300];
    if (path_job(api, req, &job) || result_ready(api, req, &job))
        return;
    long long expires = 0;
    if (api_signed_url(api, req, &job, "/download/", api->signed_url_ttl, url, sizeof url, &expires)) {
        tz_error(req, 404, "NOT_FOUND", NULL, "the result of job %s is gone (its retention ended)", job.id);
        return;
    }
    processed_name(job.input_name, job.result_format, name, sizeof name);
    long long in = expires - (long long)floor(now_s());
    http_reply_json(req, 200,
                    json_pack("{s:s,s:s,s:s,s:I,s:I}", "url", url, "filename", name, "content_type",
                              api_content_type(job.result_format), "size", (json_int_t)job.result_bytes,
                              "expires_in", (json_int_t)(in > 0 ? in : 0)));
}

/* ---- usage (section 5.8) ------------------------------------------------------------------------- */

static void h_usage_summary(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    api_key_t key;
    int kind = tz_caller(api, req, 1, &key);
    if (kind < 0)
        return;
    double now = now_s();
    long long left = credits_left(api, &key);
    char when[40];
    json_t *o;
    if (kind == CALLER_GUEST) {
        long long used = 0;
        store_key_usage(api->jobs.store, key.id, fmax(auth_day_start(now), key.reset_at), &used, NULL);
        o = json_pack("{s:b,s:s,s:I,s:I,s:I,s:s,s:n}", "success", 1, "tier", "guest", "credits_remaining",
                      (json_int_t)(left > 0 ? left : 0), "credits_used_today", (json_int_t)used,
                      "daily_credits", (json_int_t)key.quota, "credits_reset_at",
                      api_time(auth_day_start(now) + 86400, when, sizeof when), "subscription");
    } else {
        long long used = 0;
        store_key_usage(api->jobs.store, key.id, auth_month_start(now), &used, NULL);
        o = json_pack("{s:b,s:s,s:o,s:I,s:o,s:n}", "success", 1, "tier", key.tier, "credits_remaining",
                      left >= 0 ? json_integer(left) : json_null(), "credits_used_this_period",
                      (json_int_t)used, "quota", key.quota >= 0 ? json_integer(key.quota) : json_null(),
                      "subscription");
    }
    http_reply_json(req, 200, o);
}

static void h_usage_history(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    const char *d = http_request_query(req, "days");
    long days = 30;
    if (d && (api_parse_int(d, &days) || days < 1 || days > 90)) {
        tz_invalid(req, loc2("query", "days"), "value_error", "days must be a whole number from 1 to 90");
        return;
    }
    api_key_t key;
    if (tz_caller(api, req, 1, &key) < 0)
        return;
    double day0 = auth_day_start(now_s()) - (double)(days - 1) * 86400.0;
    long long jobs[90], credits[90], total_jobs = 0, total_credits = 0;
    up_error_t err;
    if (store_usage_daily(api->jobs.store, key.id, day0, (int)days, jobs, credits, &err)) {
        log_error("tinify: usage of %s: %s", key.prefix, err.msg);
        tz_error(req, 500, "INTERNAL", NULL, "cannot read the usage");
        return;
    }
    json_t *daily = json_array();
    for (int i = 0; i < days; i++) {
        char date[16];
        time_t t = (time_t)(day0 + i * 86400.0);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(date, sizeof date, "%Y-%m-%d", &tm);
        json_array_append_new(daily, json_pack("{s:s,s:I,s:I}", "date", date, "jobs", (json_int_t)jobs[i],
                                               "credits", (json_int_t)credits[i]));
        total_jobs += jobs[i];
        total_credits += credits[i];
    }
    http_reply_json(req, 200,
                    json_pack("{s:b,s:i,s:I,s:I,s:o}", "success", 1, "days", (int)days, "total_jobs",
                              (json_int_t)total_jobs, "total_credits", (json_int_t)total_credits, "daily",
                              daily));
}

/* ---- operator endpoints (section 5.10) --------------------------------------------------------- */

/* 0 when the request carries the admin token, else -1 after replying 401 (none set, none sent, wrong). */
static int admin(api_t *api, http_request_t *req) {
    if (api_admin_token_ok(api, req))
        return 0;
    tz_error(req, 401, "UNAUTHORIZED", NULL, "%s",
             api->admin_token && *api->admin_token
                 ? "operator endpoints need the admin token: Authorization: Bearer <--admin-token>"
                 : "operator endpoints are off: this server has no --admin-token");
    return -1;
}

static void h_cleanup(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    if (admin(api, req))
        return;
    int deleted = 0, errors = 0;
    queue_sweep_now(api->jobs.queue, &deleted, &errors);
    http_reply_json(req, 200, json_pack("{s:b,s:i,s:i}", "success", 1, "deleted", deleted, "errors", errors));
}

static void h_refresh(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    if (admin(api, req))
        return;
    long long n = 0;
    up_error_t err;
    if (store_keys_reset_guests(api->jobs.store, now_s(), &n, &err)) {
        log_error("tinify: refreshing guest credits: %s", err.msg);
        tz_error(req, 500, "INTERNAL", NULL, "cannot refresh the guest credits");
        return;
    }
    http_reply_json(req, 200, json_pack("{s:b,s:I}", "success", 1, "sessions", (json_int_t)n));
}

static void h_process(http_request_t *req, void *ctx) {
    if (!admin(ctx, req)) /* section 6.10: a push queue duplicates ours */
        tz_error(req, 501, "NOT_IMPLEMENTED", NULL,
                 "upres runs jobs from its own queue: /process is not used");
}

/* Section 7: out of scope. */
static void h_not_implemented(http_request_t *req, void *ctx) {
    (void)ctx;
    tz_error(req, 501, "NOT_IMPLEMENTED", NULL,
             "%s is not part of upres (AI tagging, billing and MCP login are out of scope)",
             http_request_path(req));
}

/* Literal paths before parameters: /status/stream is not /status/{job_id}. */
static const http_route_t routes[] = {
    {"GET", "/", h_root},
    {"GET", "/health", h_health},
    {"GET", "/readiness", h_readiness},
    {"GET", "/config", h_config},
    {"POST", "/upload", h_upload},
    {"POST", "/upload/url", h_upload_url},
    {"POST", "/auto", h_auto},
    {"POST", "/compress", h_compress},
    {"POST", "/resize", h_resize},
    {"POST", "/upscale", h_upscale},
    {"GET", "/status/stream", h_status_batch_stream},
    {"GET", "/status", h_status_batch},
    {"GET", "/status/{job_id}/stream", h_status_stream},
    {"GET", "/status/{job_id}", h_status},
    {"GET", "/download/{job_id}/url", h_download_url},
    {"GET", "/download/{job_id}", h_download},
    {"POST", "/cancel/{job_id}", h_cancel},
    {"GET", "/usage/summary", h_usage_summary},
    {"GET", "/usage/history", h_usage_history},
    {"POST", "/internal/cleanup", h_cleanup},
    {"POST", "/internal/refresh-daily-credits", h_refresh},
    {"POST", "/process", h_process},
    {"POST", "/tag", h_not_implemented},
    {"POST", "/billing/checkout", h_not_implemented},
    {"POST", "/billing/portal", h_not_implemented},
    {"GET", "/billing/subscription", h_not_implemented},
    {"POST", "/webhooks/stripe", h_not_implemented},
    {"POST", "/mcp/auth/device-code", h_not_implemented},
    {"GET", "/mcp/auth/token", h_not_implemented},
    {"POST", "/mcp/auth/approve", h_not_implemented},
    {"POST", "/mcp/auth/deny", h_not_implemented},
    {"POST", "/mcp/auth/revoke", h_not_implemented},
    {"GET", "/mcp/auth/status", h_not_implemented},
};

const http_route_t *tinify_routes(int *n_routes) {
    *n_routes = (int)(sizeof routes / sizeof routes[0]);
    return routes;
}
