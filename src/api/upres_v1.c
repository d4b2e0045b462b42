/*
 * upres_v1.c - the upres.ai dialect: POST/GET /v1/jobs, GET /v1/jobs/{id},
 * and GET /v1/results/{id}, where the signed result links point. Contract:
 * ../shared/specs/upres-ai.openapi.json (paths there are relative to /v1).
 *
 * Every /v1/jobs call needs a Bearer key (api_auth) and sees only that
 * key's jobs (another key's job is 404, never 403, so ids leak nothing).
 * A job is made from JSON {"image_url", "model", "scale"} (the URL fetched
 * before the reply, through the SSRF-safe fetcher, so that a refusal is this
 * request's 400/422) or from multipart {image, model, scale}; either way on
 * a background thread (api_submit_async), so that a slow URL or a large
 * image holds no HTTP thread. The spec's model names
 * are aliases of ours; the job keeps the name the client used.
 *
 * Statuses: the spec has four. queued and claimed are "pending", a
 * cancelled job is "failed" (with its reason), and an expired one is still
 * "completed" but without a result_url. Absent values are left out rather
 * than sent as null.
 *
 * Paging: newest first by the store's insertion sequence; the cursor is the
 * sequence of the last job returned, so pages never shift while new jobs
 * arrive. It is opaque to clients ("c1." + base64url), not an offset.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/uuid.h"
#include "store/rules.h"

#define LIST_MAX 100
#define LIST_DEFAULT 20
#define DEFAULT_MODEL "wavespeed-ai/real-esrgan"

/* upres-ai spec's model names -> ours */
static const struct {
    const char *alias, *model;
} aliases[] = {
    {"wavespeed-ai/real-esrgan", "realesrgan-x4plus"},
    {"wavespeed-ai/image-upscaler", "realesrgan-x4fast"},
};

/* Our model for a client's name (an alias or one of ours), or NULL. */
static const char *resolve_model(const api_t *api, const char *name) {
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (!strcmp(aliases[i].alias, name))
            return aliases[i].model;
    return upscale_registry_find(api->jobs.registry, name) ? name : NULL;
}

static void bad_request(http_request_t *req, const char *fmt, const char *arg) {
    http_reply_error_code(req, 400, "INVALID_REQUEST", NULL, fmt, arg);
}

static void unknown_model(api_t *api, http_request_t *req, const char *name) {
    char names[1024];
    size_t n = (size_t)snprintf(names, sizeof names, "%s, %s", aliases[0].alias, aliases[1].alias);
    for (int i = 0; i < api->jobs.registry->n_models && n < sizeof names; i++)
        n += (size_t)snprintf(names + n, sizeof names - n, ", %s", api->jobs.registry->models[i].name);
    http_reply_error_code(req, 400, "INVALID_REQUEST", NULL, "unknown model '%s': available models are %s",
                          name, names);
}

/* The spec's status for a job. */
static const char *v1_status(job_status_t s) {
    switch (s) {
    case JOB_STATUS_QUEUED:
    case JOB_STATUS_CLAIMED: return "pending";
    case JOB_STATUS_PROCESSING: return "processing";
    case JOB_STATUS_COMPLETED:
    case JOB_STATUS_EXPIRED: return "completed";
    case JOB_STATUS_FAILED:
    case JOB_STATUS_CANCELLED:
    case JOB_STATUS_COUNT: break;
    }
    return "failed";
}

/* The store statuses behind a spec status (a status_mask), or 0 for an unknown name. */
static unsigned status_mask(const char *name) {
    if (!strcmp(name, "pending"))
        return 1u << JOB_STATUS_QUEUED | 1u << JOB_STATUS_CLAIMED;
    if (!strcmp(name, "processing"))
        return 1u << JOB_STATUS_PROCESSING;
    if (!strcmp(name, "completed"))
        return 1u << JOB_STATUS_COMPLETED | 1u << JOB_STATUS_EXPIRED;
    if (!strcmp(name, "failed"))
        return 1u << JOB_STATUS_FAILED | 1u << JOB_STATUS_CANCELLED;
    return 0;
}

/* The Job schema. New reference. */
static json_t *job_json(api_t *api, http_request_t *req, const job_t *j) {
    char t[40];
    json_t *o = json_pack("{s:s,s:s,s:s,s:i,s:s}", "id", j->id, "status", v1_status(j->status), "model",
                          j->model_alias[0] ? j->model_alias : j->model, "scale", j->scale,
                          "original_filename", j->input_name);
    json_object_set_new(o, "created_at", json_string(api_time(j->created_at, t, sizeof t)));
    double updated = j->created_at;
    if (j->started_at > updated)
        updated = j->started_at;
    if (j->completed_at > updated)
        updated = j->completed_at;
    json_object_set_new(o, "updated_at", json_string(api_time(updated, t, sizeof t)));
    json_object_set_new(o, "progress", json_integer(j->status == JOB_STATUS_COMPLETED ? 100 : j->progress));
    char url[1024];
    if (!api_result_url(api, req, j, url, sizeof url))
        json_object_set_new(o, "result_url", json_string(url));
    if (j->status == JOB_STATUS_FAILED)
        json_object_set_new(o, "error", json_string(j->error[0] ? j->error : "the job failed"));
    else if (j->status == JOB_STATUS_CANCELLED)
        json_object_set_new(o, "error", json_string("the job was cancelled"));
    if (j->output_width > 0) {
        json_object_set_new(o, "output_width", json_integer(j->output_width));
        json_object_set_new(o, "output_height", json_integer(j->output_height));
    }
    if (j->credits > 0)
        json_object_set_new(o, "credits_charged", json_integer(j->refunded ? 0 : j->credits));
    if (j->priority) /* an upres extension, left out at the default */
        json_object_set_new(o, "priority", json_integer(j->priority));
    return o;
}

/* ---- POST /v1/jobs ------------------------------------------------------------------ */

/* Settings common to both bodies; 0, or -1 after replying. */
static int job_settings(api_t *api, http_request_t *req, const char *model, long scale, const char *colour,
                        long priority, job_t *job) {
    if (priority < STORE_PRIORITY_MIN || priority > STORE_PRIORITY_MAX) {
        http_reply_error_code(req, 400, "INVALID_REQUEST", NULL,
                              "invalid priority %ld: a whole number from %d to %d", priority,
                              STORE_PRIORITY_MIN, STORE_PRIORITY_MAX);
        return -1;
    }
    if (scale < 2 || scale > 8) {
        http_reply_error_code(req, 400, "INVALID_REQUEST", NULL,
                              "invalid scale %ld: a whole number from 2 to 8", scale);
        return -1;
    }
    const char *ours = resolve_model(api, model);
    if (!ours) {
        unknown_model(api, req, model);
        return -1;
    }
    if (!upscale_registry_find(api->jobs.registry, ours)) {
        http_reply_error_code(req, 503, "MODEL_UNAVAILABLE", NULL,
                              "model '%s' (%s) is not installed on this server", model, ours);
        return -1;
    }
    memset(job, 0, sizeof *job);
    if (api_colour_setting(req, colour, job))
        return -1;
    job->keep_s = api->result_url_ttl; /* upres-ai spec: result URLs are valid for 1 hour */
    snprintf(job->model, sizeof job->model, "%s", ours);
    if (strcmp(ours, model))
        snprintf(job->model_alias, sizeof job->model_alias, "%s", model);
    job->scale = (int)scale;
    job->priority = (int)priority; /* raising it is the tier's: jobs_submit checks */
    return 0;
}

static json_t *reply_created(api_t *api, http_request_t *req, const job_t *job, const char *note,
                             unsigned *status) {
    json_t *o = job_json(api, req, job);
    if (note)
        json_object_set_new(o, "warning", json_string(note));
    *status = 201;
    return o;
}

/* multipart: image (file), model, scale. Replies, now or from the background thread. */
static void create_from_upload(api_t *api, http_request_t *req, const api_key_t *key) {
    const char *upath, *uname;
    unsigned long long usize;
    if (http_request_upload(req, "image", &upath, &uname, &usize)) {
        bad_request(req, "%s", "missing the 'image' file field (multipart/form-data)");
        return;
    }
    const char *model = http_request_field(req, "model");
    const char *s = http_request_field(req, "scale"), *p = http_request_field(req, "priority");
    long scale = 4, priority = 0;
    job_t job;
    if (s && *s && api_parse_int(s, &scale))
        bad_request(req, "invalid scale '%s': a whole number from 2 to 8", s);
    else if (p && *p && api_parse_int(p, &priority))
        bad_request(req, "invalid priority '%s': a whole number from -10 to 10", p);
    else if (!job_settings(api, req, model && *model ? model : DEFAULT_MODEL, scale,
                           http_request_field(req, "colour"), priority, &job)) {
        api_input_t in = {.path = upath, .size = (size_t)usize, .name = uname};
        api_submit_async(api, req, key, &in, NULL, &job, reply_created);
    }
}

/* JSON: {"image_url", "model", "scale"}. Replies, now or from the background thread. */
static void create_from_json(api_t *api, http_request_t *req, const api_key_t *key, const char *body,
                             size_t n) {
    json_error_t jerr;
    json_t *o = json_loadb(body, n, 0, &jerr);
    json_t *url = json_object_get(o, "image_url"), *model = json_object_get(o, "model"),
           *scale = json_object_get(o, "scale"), *colour = json_object_get(o, "colour"),
           *priority = json_object_get(o, "priority");
    job_t job;
    if (!json_is_object(o))
        bad_request(req, "the body is not a JSON object: %s",
                    o ? "expected {\"image_url\": ...}" : jerr.text);
    else if (!json_is_string(url) || !*json_string_value(url))
        bad_request(req, "%s",
                    "missing image_url (a string), or send multipart/form-data with an 'image' file");
    else if (model && !json_is_string(model))
        bad_request(req, "%s", "model must be a string");
    else if (scale && !json_is_integer(scale))
        bad_request(req, "%s", "scale must be a whole number from 2 to 8");
    else if (colour && !json_is_string(colour))
        bad_request(req, "%s", "colour must be a string: srgb or keep");
    else if (priority && (!json_is_integer(priority) || json_integer_value(priority) < STORE_PRIORITY_MIN ||
                          json_integer_value(priority) > STORE_PRIORITY_MAX))
        bad_request(req, "%s", "priority must be a whole number from -10 to 10");
    else if (!job_settings(api, req, model ? json_string_value(model) : DEFAULT_MODEL,
                           scale ? (long)json_integer_value(scale) : 4,
                           colour ? json_string_value(colour) : NULL,
                           priority ? (long)json_integer_value(priority) : 0, &job))
        api_submit_async(api, req, key, NULL, json_string_value(url), &job, reply_created);
    json_decref(o);
}

static void h_create(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    api_key_t key;
    if (api_auth(api, req, 1, &key) < 0 || api_refuse_if_stopping(api, req))
        return;
    const char *ct = http_request_header(req, "Content-Type");
    size_t n;
    const char *body = http_request_body(req, &n);
    if (ct && !strncasecmp(ct, "multipart/form-data", 19))
        create_from_upload(api, req, &key);
    else if (body)
        create_from_json(api, req, &key, body, n);
    else
        bad_request(
            req, "%s",
            "missing image: send JSON {\"image_url\": ...} or multipart/form-data with an 'image' file");
}

/* ---- GET /v1/jobs -------------------------------------------------------------------- */

static void h_list(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    api_key_t key;
    if (api_auth(api, req, 1, &key) < 0)
        return;
    store_job_filter_t f = {.owner = key.id};
    const char *v;
    long limit = LIST_DEFAULT;
    if ((v = http_request_query(req, "status")) && !(f.status_mask = status_mask(v))) {
        bad_request(req, "invalid status '%s': one of pending, processing, completed, failed", v);
        return;
    }
    if ((v = http_request_query(req, "model")) && !(f.model = resolve_model(api, v)))
        f.model = v; /* a model no longer installed still names its old jobs */
    if ((v = http_request_query(req, "before")) && api_time_parse(v, &f.before)) {
        bad_request(req, "invalid before '%s': an ISO 8601 date-time such as 2026-01-31T12:00:00Z", v);
        return;
    }
    if ((v = http_request_query(req, "after")) && api_time_parse(v, &f.after)) {
        bad_request(req, "invalid after '%s': an ISO 8601 date-time such as 2026-01-31T12:00:00Z", v);
        return;
    }
    if ((v = http_request_query(req, "limit")) &&
        (api_parse_int(v, &limit) || limit < 1 || limit > LIST_MAX)) {
        bad_request(req, "invalid limit '%s': a whole number from 1 to 100", v);
        return;
    }
    if ((v = http_request_query(req, "cursor")) && *v && api_cursor_parse(v, &f.below_seq)) {
        bad_request(req, "invalid cursor '%s': pass next_cursor from the previous page unchanged", v);
        return;
    }
    job_t *jobs = calloc((size_t)limit + 1, sizeof *jobs); /* one more tells whether there are more */
    if (!jobs) {
        http_reply_error_code(req, 503, "UNAVAILABLE", NULL, "out of memory");
        return;
    }
    int n = 0;
    jobs_refusal_t r = {0};
    if (jobs_list(&api->jobs, &f, jobs, (int)limit + 1, &n, &r)) {
        free(jobs);
        api_reply_refusal(req, &r);
        return;
    }
    int more = n > limit;
    if (more)
        n = (int)limit;
    json_t *data = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(data, job_json(api, req, &jobs[i]));
    json_t *o = json_pack("{s:o,s:b}", "data", data, "has_more", more);
    if (more) {
        char c[64];
        api_cursor_make(jobs[n - 1].seq, c, sizeof c);
        json_object_set_new(o, "next_cursor", json_string(c));
    }
    free(jobs);
    http_reply_json(req, 200, o);
}

/* ---- GET /v1/jobs/{id} ----------------------------------------------------------------- */

static void h_get(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    api_key_t key;
    if (api_auth(api, req, 1, &key) < 0)
        return;
    job_t job;
    jobs_refusal_t r = {0};
    if (jobs_get(&api->jobs, http_request_param(req, "id"), &key, 1, JOBS_STATUS, &job, &r))
        api_reply_refusal(req, &r);
    else
        http_reply_json(req, 200, job_json(api, req, &job));
}

/* ---- GET /v1/results/{id}?expires=&sig= -------------------------------------------------- */

static void h_result(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    const char *id = http_request_param(req, "id");
    const char *e = http_request_query(req, "expires"), *sig = http_request_query(req, "sig");
    char *end = NULL;
    long long expires = e ? strtoll(e, &end, 10) : 0;
    if (!e || !sig || !*e || *end) {
        http_reply_error_code(req, 403, "FORBIDDEN", NULL, "This link is not valid: it lacks its signature.");
        return;
    }
    int rc = auth_verify(api->secret, id, expires, sig, now_s());
    if (rc == UP_ERR_EXPIRED) {
        http_reply_error_code(req, 403, "LINK_EXPIRED", NULL,
                              "This link has expired: get a fresh result_url from GET /v1/jobs/{id}.");
        return;
    }
    if (rc) {
        http_reply_error_code(req, 403, "FORBIDDEN", NULL,
                              "This link is not valid (its signature does not match).");
        return;
    }
    job_t job;
    up_error_t err;
    if ((rc = store_job_get(api->jobs.store, id, &job, &err))) {
        http_reply_error_code(req, rc == UP_ERR_NOT_FOUND ? 404 : 500,
                              rc == UP_ERR_NOT_FOUND ? "NOT_FOUND" : "INTERNAL", NULL, "%s",
                              rc == UP_ERR_NOT_FOUND ? "Job not found." : "cannot read the job");
        return;
    }
    if (job.status != JOB_STATUS_COMPLETED || !job.result_key[0] ||
        api_reply_blob(api, req, job.result_key, api_content_type(job.result_format), NULL))
        http_reply_error_code(req, 410, "GONE", NULL,
                              "the result of job %s is gone (downloaded and deleted, or its retention ended)",
                              job.id);
}

static const http_route_t routes[] = {
    {"POST", "/v1/jobs", h_create},
    {"GET", "/v1/jobs", h_list},
    {"GET", "/v1/jobs/{id}", h_get},
    {"GET", "/v1/results/{id}", h_result},
};

const http_route_t *upres_v1_routes(int *n_routes) {
    *n_routes = (int)(sizeof routes / sizeof routes[0]);
    return routes;
}
