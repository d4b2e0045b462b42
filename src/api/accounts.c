/*
 * accounts.c - the PicShapes dialect: accounts and money, and its view of
 * jobs. Contract: ../shared/specs/picshapes.openapi.yaml, the endpoints
 * /api/v1/users/me, /api/v1/users/me/credits, /api/v1/tiers,
 * /api/v1/jobs/{id} and /api/v1/jobs/{id}/result. (Its /api/v1/models is
 * the Upscale Service's, which carries the availability fields; its
 * text-to-image POST /api/v1/jobs is out of scope and answers 501.)
 *
 * An account is an API key: its id is the user id, its name the display
 * name, its balance the credits. A key with no balance (unlimited) has no
 * "credits" field, and says "unlimited": true instead of a made-up number.
 *
 * Job fields: PicShapes' Job.model is an enum of text-to-image models, so
 * ours goes in "upscale_model"; width and height are the output size.
 * Statuses are the store's own: pending (queued), claimed, processing,
 * completed (also when expired), failed (also when cancelled).
 */
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/uuid.h"

static const char *ps_status(job_status_t s) {
    switch (s) {
    case JOB_STATUS_QUEUED: return "pending";
    case JOB_STATUS_CLAIMED: return "claimed";
    case JOB_STATUS_PROCESSING: return "processing";
    case JOB_STATUS_COMPLETED:
    case JOB_STATUS_EXPIRED: return "completed";
    case JOB_STATUS_FAILED:
    case JOB_STATUS_CANCELLED:
    case JOB_STATUS_COUNT: break;
    }
    return "failed";
}

/* Add "name": RFC 3339 time when t is set. */
static void set_time(json_t *o, const char *name, double t) {
    char buf[40];
    if (t > 0)
        json_object_set_new(o, name, json_string(api_time(t, buf, sizeof buf)));
}

/* ---- users ------------------------------------------------------------------------ */

static void set_credits(json_t *o, const api_key_t *k) {
    if (k->credits >= 0)
        json_object_set_new(o, "credits", json_integer(k->credits));
    else
        json_object_set_new(o, "unlimited", json_true());
}

static void h_me(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    api_key_t key;
    if (api_auth(api, req, 1, &key) < 0)
        return;
    long long used = 0;
    up_error_t err;
    if (store_key_usage(api->jobs.store, key.id, auth_month_start(now_s()), &used, &err)) {
        http_reply_error_code(req, 500, "INTERNAL", NULL, "cannot read the account's usage");
        return;
    }
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:I}", "id", key.id, "display_name", key.name, "role", "user",
                          "tier", key.tier, "api_key_prefix", key.prefix, "used", (json_int_t)used);
    set_credits(o, &key);
    if (key.quota >= 0)
        json_object_set_new(o, "quota", json_integer(key.quota));
    set_time(o, "created_at", key.created_at);
    set_time(o, "last_login_at", key.last_used_at);
    http_reply_json(req, 200, o);
}

static void h_credits(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    api_key_t key;
    if (api_auth(api, req, 1, &key) < 0)
        return;
    json_t *o = json_pack("{s:s}", "user_id", key.id);
    set_credits(o, &key);
    http_reply_json(req, 200, o);
}

/* ---- tiers ------------------------------------------------------------------------- */

static void h_tiers(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    api_key_t key;
    if (api_auth(api, req, 0, &key) < 0)
        return;
    json_t *tiers = json_object();
    for (int i = 0; i < api->jobs.tiers.n; i++) {
        const tier_t *t = &api->jobs.tiers.tier[i];
        json_object_set_new(tiers, t->name,
                            json_pack("{s:s,s:s,s:i,s:i,s:i}", "name", t->name, "description", t->description,
                                      "max_width", t->max_width, "max_height", t->max_height, "credits",
                                      t->credits));
    }
    http_reply_json(req, 200, json_pack("{s:o}", "tiers", tiers));
}

/* ---- jobs -------------------------------------------------------------------------- */

/*
 * Authenticate when a key is sent (the spec needs none here: job ids are
 * unguessable), then read the job, for action (api_job_access: a caller
 * that sends a key does not see another key's job). 0 or -1 after replying.
 */
static int read_job(api_t *api, http_request_t *req, jobs_action_t action, job_t *job) {
    api_key_t key;
    int auth = api_auth(api, req, 0, &key);
    if (auth < 0)
        return -1;
    jobs_refusal_t r = {0};
    if (jobs_get(&api->jobs, http_request_param(req, "id"), auth == 1 ? &key : NULL, 0, action, job, &r)) {
        api_reply_refusal(req, &r);
        return -1;
    }
    return 0;
}

static void h_job(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    job_t j;
    if (read_job(api, req, JOBS_STATUS, &j))
        return;
    int w = j.output_width > 0 ? j.output_width : j.input_width * j.scale;
    int h = j.output_height > 0 ? j.output_height : j.input_height * j.scale;
    json_t *o = json_pack("{s:s,s:s,s:s,s:i,s:i,s:i,s:i}", "id", j.id, "status", ps_status(j.status),
                          "upscale_model", j.model, "scale", j.scale, "width", w, "height", h, "progress",
                          j.status == JOB_STATUS_COMPLETED ? 100 : j.progress);
    if (j.tier[0])
        json_object_set_new(o, "tier", json_string(j.tier));
    char url[1024];
    if (!api_result_url(api, req, &j, url, sizeof url))
        json_object_set_new(o, "result_url", json_string(url));
    if (j.status == JOB_STATUS_FAILED)
        json_object_set_new(o, "error_msg", json_string(j.error[0] ? j.error : "the job failed"));
    else if (j.status == JOB_STATUS_CANCELLED)
        json_object_set_new(o, "error_msg", json_string("the job was cancelled"));
    set_time(o, "created_at", j.created_at);
    set_time(o, "started_at", j.started_at);
    set_time(o, "completed_at", j.completed_at);
    http_reply_json(req, 200, o);
}

static void h_job_result(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    job_t j;
    if (read_job(api, req, JOBS_RESULT, &j))
        return;
    char url[1024];
    switch (j.status) {
    case JOB_STATUS_QUEUED:
    case JOB_STATUS_CLAIMED:
    case JOB_STATUS_PROCESSING:
    case JOB_STATUS_COUNT:
        http_reply_json(
            req, 202,
            json_pack("{s:s,s:s}", "status", ps_status(j.status), "message", "Job is not completed yet"));
        return;
    case JOB_STATUS_FAILED:
    case JOB_STATUS_CANCELLED:
        http_reply_error_code(req, 409, "JOB_FAILED", json_pack("{s:s}", "status", "failed"),
                              "The job failed, so it has no result: %s",
                              j.status == JOB_STATUS_CANCELLED ? "it was cancelled"
                              : j.error[0]                     ? j.error
                                                               : "unknown error");
        return;
    case JOB_STATUS_COMPLETED:
    case JOB_STATUS_EXPIRED: break;
    }
    if (api_result_url(api, req, &j, url, sizeof url)) {
        http_reply_error_code(req, 410, "GONE", NULL,
                              "the result of job %s is gone (downloaded and deleted, or its retention ended)",
                              j.id);
        return;
    }
    http_reply_json(req, 200, json_pack("{s:s}", "result_url", url));
}

static void h_generate(http_request_t *req, void *ctx) {
    (void)ctx;
    http_reply_error_code(req, 501, "NOT_IMPLEMENTED", NULL,
                          "Text-to-image generation is not part of upres. To upscale an image, POST /v1/jobs "
                          "or /api/v1/upscale.");
}

static const http_route_t routes[] = {
    {"GET", "/api/v1/users/me", h_me},   {"GET", "/api/v1/users/me/credits", h_credits},
    {"GET", "/api/v1/tiers", h_tiers},   {"POST", "/api/v1/jobs", h_generate},
    {"GET", "/api/v1/jobs/{id}", h_job}, {"GET", "/api/v1/jobs/{id}/result", h_job_result},
};

const http_route_t *accounts_routes(int *n_routes) {
    *n_routes = (int)(sizeof routes / sizeof routes[0]);
    return routes;
}
