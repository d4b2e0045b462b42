/*
 * api.h - what every API dialect shares: the server context handed to all
 * handlers, authentication with API keys and rate limits, the one path by
 * which a job is submitted (checked, charged, stored, queued), and the
 * small formatting helpers (times, result links) the dialects agree on.
 *
 * Dialects (one file each, one static route table each):
 *   upscale_service.c  /api/v1/{upscale,status,download,cancel,models,health,docs},
 *                      and /api/v1/status/{id}/stream (Server-Sent Events, an extension)
 *   upres_v1.c         /v1/jobs, /v1/results/{id} (upres.ai)
 *   accounts.c         /api/v1/users/me[/credits], /api/v1/tiers, /api/v1/jobs/{id}[/result] (PicShapes)
 *   tinify.c           /upload, /auto, /compress, /resize, /upscale, /status, /download, /usage, /config,
 *                      ... at the server root (Tinify.ai)
 *
 * Error bodies are {"success": false, "error": "...", "code": "...",
 * "detail": "..."} in every dialect: each spec's Error schema is a subset
 * of that (Tinify's 422 is FastAPI's, detail a list naming the fields).
 */
#ifndef UPRES_API_API_H
#define UPRES_API_API_H

#include <stdatomic.h>

#include "auth/auth.h"
#include "http/fetch.h"
#include "http/http.h"
#include "jobs/jobs.h"
#include "blob/blob.h"
#include "queue/events.h"
#include "queue/queue.h"
#include "store/store.h"
#include "upscale/upscale.h"

#define API_VERSION "1.0.0"

/* Who may read /metrics (metrics.c). */
typedef enum { API_METRICS_OPEN = 0, API_METRICS_ADMIN = 1, API_METRICS_OFF = 2 } api_metrics_t;

/* The context of every handler; pointers are borrowed and outlive the server. */
typedef struct api {
    jobs_t jobs;               /* the engine: store, blobs, queue, events, registry, limits, tiers (jobs.h) */
    const char *web_dir;       /* web/: openapi.json, vendor/ (Swagger UI), page/ (the web page) */
    nn_backend_kind_t backend; /* the workers' engine, for the page's previews */
    int n_workers;             /* worker threads, for model availability */
    /* accounts */
    int require_keys;    /* the Upscale Service endpoints need a key too */
    ratelimit_t *rate;   /* per-key request limits (NULL = none) */
    int shared_limits;   /* the limits are counted in the database (api_rate_take), not in rate */
    int rate_per_minute; /* the limits rate was made with, for messages */
    int rate_per_day;
    unsigned char secret[32]; /* signs result links (data_dir/secret.key) */
    double result_url_ttl;    /* seconds a result link is valid; default 3600 */
    const char *public_url;   /* "https://host[:port]" for links; NULL = from the request's Host */
    fetch_opts_t fetch;       /* image_url fetching */
    int fetch_per_key;        /* image_url fetches one key may have under way; more get 429; default 2 */
    int fetch_per_ip;         /* and one client address, with or without keys; default 8 */
    struct api_fetch_counts *fetching; /* those under way (api_init; api_fini frees) */
    /* Tinify.ai (tinify.c) */
    int guest_daily_credits;             /* credits a guest session gets per UTC day; default 20 */
    int guest_sessions_per_ip;           /* new guest sessions one client address may open a day; 0 = any */
    ratelimit_t *session_rate;           /* counts them (NULL = no cap) */
    const char *admin_token;             /* operator endpoints' Bearer token; NULL = they are refused */
    api_metrics_t metrics;               /* who may read /metrics; default API_METRICS_OPEN */
    const char *tinify_model;            /* the model an upscale runs; default UPSCALE_DEFAULT_MODEL */
    double retention_s;                  /* how long results are kept after completion (the queue's) */
    double temp_ttl_s;                   /* an upload (asset) feeds jobs this long; default 3600 */
    double signed_url_ttl;               /* /download/{id}/url links; default 900 */
    int max_batch;                       /* temp files in one request; default 20 */
    unsigned long long max_upload_bytes; /* the HTTP layer's limit, for /config */
} api_t;

/* Set the defaults of everything above that has one (tiers, 3600 s, fetch). */
void api_init(api_t *api);

/* Free what api_init made. */
void api_fini(api_t *api);

/* Every dialect's routes in one table (new: free()), *n its length. */
http_route_t *api_routes(int *n);

/* The dialects' tables (borrowed, static). */
const http_route_t *upscale_service_routes(int *n_routes);
const http_route_t *upres_v1_routes(int *n_routes);
const http_route_t *accounts_routes(int *n_routes);
const http_route_t *tinify_routes(int *n_routes);
const http_route_t *page_routes(int *n_routes);
const http_route_t *metrics_routes(int *n_routes);

/* The web page's index (web/page/index.html) with its Content-Security-Policy: the root for browsers. */
void api_page_index(api_t *api, http_request_t *req);

/* The Content-Type of a static file by its extension (application/octet-stream when unknown). */
const char *api_file_type(const char *name);

/* 1 when name may be a static file's: letters, digits, '.', '-', '_', not starting with '.'. */
int api_file_name_ok(const char *name);

/* ---- authentication --------------------------------------------------------------- */

/*
 * Count a request of subject (within scope: "key", "session") against a
 * limiter: ratelimit_take on rl (made with per_minute and per_day) in this
 * process, or when shared_limits is set the same rule in the database
 * (store_rate_take), so that every server of one PostgreSQL database sees
 * the same counts. rl NULL: no limit. Returns 1 (allowed, counted) or 0
 * with *retry_after and *window_s (each may be NULL) as ratelimit_take's.
 * A database that fails lets the request through, with a log line.
 */
int api_rate_take(api_t *api, ratelimit_t *rl, const char *scope, const char *subject, int per_minute,
                  int per_day, double *retry_after, int *window_s);

/* 1 when the request's "Authorization: Bearer" is the --admin-token (never when none is set). */
int api_admin_token_ok(const api_t *api, http_request_t *req);

/*
 * Authenticate the request's "Authorization: Bearer upres_..." and count it
 * against its key's rate limits.
 *   returns 1: a valid key; *key filled
 *   returns 0: no Authorization header and required is 0 (anonymous)
 *   returns -1: the reply was sent: 401 (missing when required, malformed,
 *               unknown or revoked key), 429 (rate limit, with Retry-After
 *               and retry_after), 500 (store failure)
 * A header that is present is always checked, required or not.
 */
int api_auth(api_t *api, http_request_t *req, int required, api_key_t *key);

/* api_auth with the refusal as a value (*r filled on -1) instead of a reply, for dialects of their own shape.
 */
int api_key_check(api_t *api, http_request_t *req, int required, api_key_t *key, jobs_refusal_t *r);

/*
 * A guest session by its token (X-Session-Token): 1 with *key (a guest
 * row, counted against the rate limits like a key), or -1 with *r: 401 for
 * an unknown token or one that is an API key, 429, 500.
 */
int api_session_check(api_t *api, const char *token, api_key_t *key, jobs_refusal_t *r);

/* ---- the engine's answers as replies ------------------------------------------------ */

/*
 * Reply with a refusal of the jobs API: {"success": false, "error",
 * "code", extra fields}, with WWW-Authenticate: Bearer on a 401 and
 * Retry-After when it has one. Frees what r holds.
 */
void api_reply_refusal(http_request_t *req, jobs_refusal_t *r);

/*
 * jobs_access (the one visibility rule, jobs.h) for the request: 0 when
 * allowed, else -1 after replying (404, 401).
 */
int api_job_access(http_request_t *req, const job_t *job, const api_key_t *caller, int owner_only,
                   jobs_action_t action);

/*
 * 1 when a download through the Upscale Service deletes the result (its
 * guide: delete after download), 0 when another dialect promised to keep
 * it (job->keep_s: upres.ai's result links are valid an hour).
 */
int api_download_deletes(const job_t *job);

/* ---- submission ------------------------------------------------------------------- */

/* Where a submission's image is. */
typedef struct api_input {
    const char *path; /* an upload on disk, taken over (http_request_upload_take) ... */
    const void *data; /* ... or bytes in memory (a fetched image_url), written to uploads/ */
    size_t size;
    const char *name; /* the client's file name ("" = none) */
    int from_url;     /* bytes from image_url: an undecodable body is 422, not 415 */
} api_input_t;

/*
 * The dialect's answer for its job, about to be queued (201 with the job,
 * 202 with a status URL): a new JSON body, *status set. It is built before
 * the job is stored, and the job is stored only when the answer could be
 * encoded, so a client never pays for a job it cannot hear of. note, when
 * not NULL, is a sentence to add to the answer ("only the first of 12
 * frames is used").
 */
typedef json_t *(*api_reply_fn)(api_t *api, http_request_t *req, const job_t *job, const char *note,
                                unsigned *status);

/*
 * Submit a job through the jobs API (jobs_submit: checks, tier, charge,
 * Idempotency-Key, store, queue) and answer: reply's answer, or the
 * refusal. job carries the dialect's settings (model, model_alias, scale,
 * format, quality, tile, colour, keep_s), which become its one-step
 * pipeline (upscale, then encode) unless job->steps is set; the rest is
 * filled. An upload (in->path) is taken from the request. Returns 0 (the
 * job's answer was sent), or -1 when an error reply was sent and nothing
 * was stored or charged.
 */
int api_submit(api_t *api, http_request_t *req, const api_key_t *key, const api_input_t *in, job_t *job,
               api_reply_fn reply);

/*
 * api_submit on one of the HTTP layer's background threads
 * (http_request_defer), so that decoding a large image or fetching a URL
 * holds no HTTP thread. The image is in->path (an upload), or url (in NULL)
 * is fetched first, on the fetch pool (HTTP_POOL_FETCH), so that uploads
 * never wait behind slow sources: at most api->fetch_per_key fetches per
 * key and api->fetch_per_ip per client address are under way, more get 429
 * TOO_MANY_FETCHES with Retry-After. A fetch's refusals are 400
 * URL_REFUSED (a malformed URL, a scheme other than http/https, an
 * address that is not public, too many redirects) or 422 URL_FETCH_FAILED
 * (unreachable, an HTTP error, too large, too slow).
 *
 * Idempotency-Key (1 to 255 printable ASCII characters, scoped to the key
 * or to anonymous callers): a request whose key was answered in the last
 * 24 hours gets that answer again, replayed with "Idempotent-Replayed:
 * true", when it asks the same thing (http_request_digest), or 422
 * IDEMPOTENCY_KEY_REUSED when it asks something else. Only answers that
 * queued a job are kept: a refused request may be retried under its key.
 *
 * job and *key are copied. Returns 0 (the reply comes from the background
 * thread, or was a replay), or -1 after replying (503 with Retry-After
 * when every background thread is busy and the queue is full, 429, 400).
 */
int api_submit_async(api_t *api, http_request_t *req, const api_key_t *key, const api_input_t *in,
                     const char *url, const job_t *job, api_reply_fn reply);

/*
 * Fetch url (image_url: the SSRF-safe fetcher, api->fetch) on the fetch
 * pool (HTTP_POOL_FETCH), at most api->fetch_per_key fetches per key and
 * api->fetch_per_ip per client address under way, then, on that thread,
 * done(api, req, in, arg) with the bytes (in->data, borrowed for the call;
 * in->name the URL's last segment; from_url set), or refused(req, r, arg)
 * (400 URL_REFUSED: a malformed URL, a scheme other than http/https, an
 * address that is not public, too many redirects; 422 URL_FETCH_FAILED:
 * unreachable, an HTTP error, too large, too slow; 503 stopping). Each
 * replies once and frees arg. Returns 0, or -1 with *r filled (429
 * TOO_MANY_FETCHES, 503 every fetch thread busy) and arg still the
 * caller's.
 */
typedef void (*api_fetched_fn)(api_t *api, http_request_t *req, const api_input_t *in, void *arg);
typedef void (*api_fetch_refused_fn)(http_request_t *req, jobs_refusal_t *r, void *arg);
int api_fetch_async(api_t *api, http_request_t *req, const api_key_t *key, const char *url,
                    api_fetched_fn done, api_fetch_refused_fn refused, void *arg, jobs_refusal_t *r);

/* 503 when the server is stopping (returns -1 after replying), else 0. */
int api_refuse_if_stopping(api_t *api, http_request_t *req);

/* ---- job event streams ---------------------------------------------------------------- */

/* What a dialect's event stream says about its jobs. */
typedef struct api_stream_fmt {
    int retry_ms;     /* "retry:" sent first; 0 = none */
    double timeout_s; /* after this the stream ends with a "timeout" event; 0 = never */
    /* one job's state as an event: its data (new text, or NULL: nothing), *name, *final = 1 when terminal */
    char *(*event)(api_t *api, const job_t *job, const char **name, int *final);
    /* once every job's terminal event went out: the closing event's data (new) and *name, or NULL */
    char *(*done)(api_t *api, const job_t *jobs, int n, const char **name);
} api_stream_fmt_t;

/*
 * Answer req with Server-Sent Events about jobs ids[0..n-1] (read by the
 * caller, who checked access): fmt's event for each at once, then one per
 * change of each, and when a job leaves the queue (EVENTS_QUEUE_MOVED:
 * positions shown in the events move) (an event equal to the last sent is
 * not repeated), until
 * every job's is terminal; then fmt's done event, and the stream ends. No
 * thread is held meanwhile (http_reply_sse). final[i] (may be NULL): job
 * i is terminal already (no subscription). fmt is borrowed for the
 * stream's life (static). Returns 0, or -1 when nothing was sent (the
 * caller answers).
 */
int api_job_stream(api_t *api, http_request_t *req, const char (*ids)[40], int n, const api_stream_fmt_t *fmt,
                   const int *final);

/* ---- formatting --------------------------------------------------------------------- */

/* RFC 3339 UTC with milliseconds: "2026-11-22T07:45:12.345Z" (buf >= 32 bytes). */
const char *api_time(double t, char *buf, size_t size);

/*
 * t rounded to the millisecond, the precision of every time we show: a job's
 * created_at is stored rounded, so that a client that passes it back (as
 * before/after) names exactly that instant.
 */
double api_time_ms(double t);

/* Parse an RFC 3339 date-time ("2026-11-22T07:45:12Z", fraction and offset optional). 0 or -1. */
int api_time_parse(const char *s, double *t);

/*
 * The signed link to a completed job's result: <base>/v1/results/<id>?expires=E&sig=S,
 * valid result_url_ttl seconds but never past the job's expires_at. base is
 * public_url, else http://<Host header>. Returns 0, or -1 when the job has
 * no result to link (not completed, file gone, or already past expiry).
 */
int api_result_url(api_t *api, http_request_t *req, const job_t *job, char *out, size_t size);

/* The same for any path: <base><path><id>?expires=E&sig=S, valid ttl seconds (never past expires_at); E too.
 */
int api_signed_url(api_t *api, http_request_t *req, const job_t *job, const char *path, double ttl, char *out,
                   size_t size, long long *expires);

/*
 * Paging cursors (GET /v1/jobs): the position after the job with sequence
 * seq, as an opaque string ("c1." + base64url; out >= 40 bytes), and back.
 * Parsing is strict: 0, or -1 for anything api_cursor_make did not write.
 */
void api_cursor_make(long long seq, char *out, size_t size);
int api_cursor_parse(const char *cursor, long long *seq);

/*
 * A submission's colour setting (a form field or JSON "colour"): NULL or ""
 * = the server's default (--colour), "srgb" = convert to sRGB, "keep" = the
 * input's own profile. Sets job->colour; 0, or -1 after replying 400.
 */
int api_colour_setting(http_request_t *req, const char *value, job_t *job);

/* "png", "jpg" or "webp" for a client's output format name (any case, "jpeg" too), else NULL. */
const char *api_output_format(const char *name);

/* The Content-Type of a result format ("png" -> "image/png"). */
const char *api_content_type(const char *format);

/*
 * Reply 200 with the blob at key: MHD's file response where the blob
 * store has files, else the bytes streamed from a blob reader (PostgreSQL's
 * chunks, never the whole blob in memory). attachment_name as
 * http_reply_file. Returns 0, or without replying UP_ERR_NOT_FOUND (the
 * blob is gone) or another code (logged): the caller answers.
 */
int api_reply_blob(api_t *api, http_request_t *req, const char *key, const char *content_type,
                   const char *attachment_name);

/* A whole decimal integer (surrounding spaces allowed); 0 or -1. */
int api_parse_int(const char *s, long *out);

#endif
