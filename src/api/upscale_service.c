/*
 * upscale_service.c - the Upscale Service dialect: the handlers behind
 * /api/v1/{upscale,status,download,cancel,models,health}, the Swagger UI
 * page and the OpenAPI document. Contract (exact field names and codes):
 * ../shared/specs/upscale-service.api.md, then upscale-service.guide.md.
 * One extension beyond that spec: GET /api/v1/status/{id}/stream, the same
 * status object as Server-Sent Events, one at each change of the job.
 *
 * It sits between the HTTP layer (src/http) and the job engine
 * (src/store, src/queue): a submission's parameters are validated here,
 * then api_submit_async (api.c) checks the image itself on a background
 * thread, so that clients get 400/415/422 in the reply instead of a failed
 * job, and stores and queues it.
 * Everything else reads or changes job records. No key is needed unless
 * the server requires keys; a key that is sent is checked and charged
 * (api_auth), and hides other keys' jobs.
 *
 * Models: /models reports each model's native scales (what the registry
 * measured from its graph: realesrgan-x4plus [4], realesr-animevideov3
 * [2, 3, 4]) and ?scale=N filters by them. A submission may still ask any
 * model for 2, 3 or 4: the pipeline runs the native scale and resamples
 * (PRODUCT.md, "Models").
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api/upscale_service.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/uuid.h"
#include "core/xmalloc.h"
#include "image/image.h"

#ifndef UPRES_DEFAULT_WEB_DIR
#define UPRES_DEFAULT_WEB_DIR "web"
#endif

#define SWAGGER_DIR "vendor/node_modules/swagger-ui-dist"

/* ---- helpers ------------------------------------------------------------------ */

const char *upscale_service_web_dir(const char *explicit_dir, char *buf, size_t size) {
    return paths_find_dir(explicit_dir, "UPRES_WEB", "../web", UPRES_DEFAULT_WEB_DIR, buf, size);
}

/* The download's file name: the client's name without folder and extension, "_x<scale>.<ext>". */
static void attachment_name(const job_t *job, char *out, size_t size) {
    const char *base = job->input_name;
    for (const char *p = job->input_name; *p; p++)
        if (*p == '/' || *p == '\\')
            base = p + 1;
    char stem[128];
    size_t n = 0;
    for (const char *p = base; *p && n < sizeof stem - 1; p++) {
        unsigned char ch = (unsigned char)*p;
        stem[n++] = (isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == ' ') ? (char)ch : '_';
    }
    stem[n] = '\0';
    char *dot = strrchr(stem, '.');
    if (dot && dot != stem)
        *dot = '\0';
    if (!stem[0] || stem[0] == '.')
        snprintf(stem, sizeof stem, "image");
    const char *ext = job->result_format[0] ? job->result_format : (job->format[0] ? job->format : "png");
    snprintf(out, size, "%s_x%d.%s", stem, job->scale, ext);
}

/* The spec's status names: a claimed job (a worker is loading it) is already "processing". */
static const char *status_name(job_status_t s) {
    return s == JOB_STATUS_CLAIMED ? "processing" : job_status_name(s);
}

static json_t *size_obj(int w, int h) { return json_pack("{s:i,s:i}", "width", w, "height", h); }

/* ---- POST /api/v1/upscale ---------------------------------------------------- */

static void models_list(const upscale_registry_t *reg, char *out, size_t size) {
    size_t n = 0;
    out[0] = '\0';
    for (int i = 0; i < reg->n_models && n < size; i++)
        n += (size_t)snprintf(out + n, size - n, "%s%s", i ? ", " : "", reg->models[i].name);
}

static json_t *reply_accepted(api_t *api, http_request_t *req, const job_t *job, const char *note,
                              unsigned *status) {
    (void)api;
    (void)req;
    char url[128];
    snprintf(url, sizeof url, "/api/v1/status/%s", job->id);
    json_t *o = json_pack("{s:b,s:s,s:s}", "success", 1, "job_id", job->id, "status_url", url);
    if (note)
        json_object_set_new(o, "warning", json_string(note));
    *status = 202;
    return o;
}

static void h_upscale(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    api_key_t key;
    int auth = api_auth(api, req, api->require_keys, &key);
    if (auth < 0)
        return;
    const char *upath, *uname;
    unsigned long long usize;
    if (http_request_upload(req, "image", &upath, &uname, &usize)) {
        http_reply_error_code(req, 400, "INVALID_REQUEST", NULL,
                              "missing the 'image' file field (multipart/form-data)");
        return;
    }
    long scale = 4;
    const char *s = http_request_field(req, "scale");
    if (s && *s && (api_parse_int(s, &scale) || scale < 2 || scale > 4)) {
        http_reply_error_code(req, 400, "INVALID_REQUEST", NULL,
                              "invalid scale '%s': allowed values are 2, 3, 4", s);
        return;
    }
    const char *model = http_request_field(req, "model_name");
    if (!model || !*model)
        model = UPSCALE_DEFAULT_MODEL;
    if (!upscale_registry_find(api->jobs.registry, model)) {
        char names[1024];
        models_list(api->jobs.registry, names, sizeof names);
        http_reply_error_code(req, 400, "INVALID_REQUEST", NULL,
                              "unknown model_name '%s': available models are %s", model,
                              names[0] ? names : "(none installed)");
        return;
    }
    const char *fmt = NULL;
    const char *f = http_request_field(req, "format");
    if (f && *f && !(fmt = api_output_format(f))) {
        http_reply_error_code(req, 400, "INVALID_REQUEST", NULL,
                              "invalid format '%s': allowed values are png, jpg, webp", f);
        return;
    }
    long tile = 0;
    const char *t = http_request_field(req, "tile_size");
    if (t && *t && (api_parse_int(t, &tile) || tile < 0 || (tile > 0 && tile < 16) || tile > 8192)) {
        http_reply_error_code(req, 400, "INVALID_REQUEST", NULL,
                              "invalid tile_size '%s': 0 (automatic) or 16 to 8192", t);
        return;
    }
    job_t job;
    memset(&job, 0, sizeof job);
    if (api_colour_setting(req, http_request_field(req, "colour"), &job))
        return;
    snprintf(job.model, sizeof job.model, "%s", model);
    job.scale = (int)scale;
    if (fmt)
        snprintf(job.format, sizeof job.format, "%s", fmt);
    job.tile = (int)tile;
    api_input_t in = {.path = upath, .size = (size_t)usize, .name = uname};
    api_submit_async(api, req, auth == 1 ? &key : NULL, &in, NULL, &job, reply_accepted);
}

/* ---- GET /api/v1/status/{job_id} ------------------------------------------------ */

/*
 * Authenticate (a key when one is sent, or when keys are required), read
 * the job named in the path and check that the caller may do action with it
 * (jobs_get; a download's action depends on the job, see h_download, which
 * reads for JOBS_STATUS and checks the rest itself). 0 with the job in *job and
 * the caller's key in *key (*keyed = 1 when one was sent), else the reply
 * was sent.
 */
static int get_job(api_t *api, http_request_t *req, jobs_action_t action, job_t *job, api_key_t *key,
                   int *keyed) {
    int auth = api_auth(api, req, api->require_keys, key);
    if (auth < 0)
        return -1;
    *keyed = auth == 1;
    jobs_refusal_t r = {0};
    if (jobs_get(&api->jobs, http_request_param(req, "job_id"), *keyed ? key : NULL, 0, action, job, &r)) {
        api_reply_refusal(req, &r);
        return -1;
    }
    return 0;
}

/* The status object of GET /status/{id}, and of each event of its stream (new). */
static json_t *status_json(const job_t *job) {
    json_t *o = json_pack("{s:s,s:s}", "job_id", job->id, "status", status_name(job->status));
    switch (job->status) {
    case JOB_STATUS_QUEUED:
    case JOB_STATUS_CLAIMED:
    case JOB_STATUS_PROCESSING: json_object_set_new(o, "progress", json_integer(job->progress)); break;
    case JOB_STATUS_COMPLETED: {
        char url[128];
        snprintf(url, sizeof url, "/api/v1/download/%s", job->id);
        double d = job->completed_at - (job->started_at > 0 ? job->started_at : job->created_at);
        json_object_set_new(o, "progress", json_integer(100));
        json_object_set_new(o, "download_url", json_string(url));
        json_object_set_new(o, "duration_seconds", json_real(round((d > 0 ? d : 0) * 100) / 100));
        json_object_set_new(o, "input_size", size_obj(job->input_width, job->input_height));
        json_object_set_new(o, "output_size", size_obj(job->output_width, job->output_height));
        json_object_set_new(o, "file_size_bytes", json_integer(job->result_bytes));
        break;
    }
    case JOB_STATUS_FAILED:
        json_object_set_new(o, "error", json_string(job->error[0] ? job->error : "the job failed"));
        break;
    case JOB_STATUS_CANCELLED: break;
    case JOB_STATUS_EXPIRED:
        json_object_set_new(
            o, "message", json_string("the files of this job were deleted (downloaded, or retention ended)"));
        break;
    case JOB_STATUS_COUNT: break;
    }
    return o;
}

static void h_status(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    job_t job;
    api_key_t key;
    int keyed;
    if (get_job(api, req, JOBS_STATUS, &job, &key, &keyed))
        return;
    http_reply_json(req, 200, status_json(&job));
}

/* ---- GET /api/v1/status/{job_id}/stream (extension: Server-Sent Events) ----------- */

/*
 * The job's status object as "event: status", at once and then at each
 * change, until the job ends: the terminal state is the last event, then
 * the stream ends (api_job_stream).
 */
static int status_final(job_status_t s) {
    return s == JOB_STATUS_COMPLETED || s == JOB_STATUS_FAILED || s == JOB_STATUS_CANCELLED ||
           s == JOB_STATUS_EXPIRED;
}

static char *status_event(api_t *api, const job_t *job, const char **name, int *final) {
    (void)api;
    *name = "status";
    *final = status_final(job->status);
    return http_json_text(status_json(job));
}

static const api_stream_fmt_t status_stream = {.event = status_event};

static void h_status_stream(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    job_t job;
    api_key_t key;
    int keyed;
    if (get_job(api, req, JOBS_STATUS, &job, &key, &keyed)) /* the rule of GET /status/{id} */
        return;
    int final = status_final(job.status);
    if (api_job_stream(api, req, (const char(*)[40])job.id, 1, &status_stream, &final))
        http_reply_error(req, 500, "cannot start the event stream");
}

/* ---- GET /api/v1/download/{job_id} ---------------------------------------------- */

static void download_done(http_request_t *req, int ok, void *ctx) {
    api_t *api = ctx;
    /* upscale-service guide: delete after a complete download */
    if (!ok || strcmp(http_request_method(req), "GET"))
        return;
    jobs_refusal_t r = {0};
    if (jobs_downloaded(&api->jobs, http_request_tag(req), &r))
        jobs_refusal_fini(&r); /* logged: the client has its file either way */
}

static void h_download(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    job_t job;
    api_key_t key;
    int keyed;
    if (get_job(api, req, JOBS_STATUS, &job, &key, &keyed))
        return;
    /* upscale-service guide: delete after download, unless another dialect promised to keep the result */
    int deletes = api_download_deletes(&job);
    if (api_job_access(req, &job, keyed ? &key : NULL, 0, deletes ? JOBS_DESTROY : JOBS_RESULT))
        return;
    switch (job.status) {
    case JOB_STATUS_QUEUED:
    case JOB_STATUS_CLAIMED:
    case JOB_STATUS_PROCESSING:
    case JOB_STATUS_COUNT:
        http_reply_error(req, 409, "job %s is %s: not completed yet", job.id, status_name(job.status));
        return;
    case JOB_STATUS_FAILED:
    case JOB_STATUS_CANCELLED:
        http_reply_error(req, 409, "job %s is %s: there is no result", job.id, job_status_name(job.status));
        return;
    case JOB_STATUS_EXPIRED:
        http_reply_error(req, 410, "the result of job %s is gone (already downloaded, or expired)", job.id);
        return;
    case JOB_STATUS_COMPLETED: break;
    }
    if (!job.result_key[0]) {
        http_reply_error(req, 410, "the result of job %s is gone (already downloaded, or expired)", job.id);
        return;
    }
    char name[256];
    attachment_name(&job, name, sizeof name);
    http_request_set_tag(req, job.id);
    if (deletes)
        http_request_on_complete(req, download_done);
    int rc = api_reply_blob(api, req, job.result_key, api_content_type(job.result_format), name);
    if (rc == UP_ERR_NOT_FOUND) {
        http_request_on_complete(req, NULL);
        http_reply_error(req, 410, "the result of job %s is gone (already downloaded, or expired)", job.id);
    } else if (rc) {
        http_request_on_complete(req, NULL);
        http_reply_error(req, 500, "cannot read the result of job %s", job.id);
    }
}

/* ---- POST /api/v1/cancel/{job_id} ----------------------------------------------- */

static void h_cancel(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    job_t job;
    api_key_t key;
    int keyed;
    if (get_job(api, req, JOBS_DESTROY, &job, &key, &keyed))
        return;
    job_status_t was = JOB_STATUS_QUEUED;
    jobs_refusal_t r = {0};
    if (jobs_cancel(&api->jobs, &job, &was, &r)) {
        if (r.status == 409) /* the guide's shape: the job and its status */
            http_reply_json(req, 409,
                            json_pack("{s:b,s:s,s:s,s:s+}", "success", 0, "job_id", job.id, "status",
                                      status_name(was), "error",
                                      "the job cannot be cancelled: it is already ", status_name(was)));
        else
            api_reply_refusal(req, &r);
        jobs_refusal_fini(&r);
        return;
    }
    if (was == JOB_STATUS_QUEUED) {
        http_reply_json(req, 200,
                        json_pack("{s:b,s:s,s:s,s:s}", "success", 1, "job_id", job.id, "status", "cancelled",
                                  "message", "the job was cancelled"));
        return;
    }
    http_reply_json(req, 202,
                    json_pack("{s:b,s:s,s:s,s:s}", "success", 1, "job_id", job.id, "status", "processing",
                              "message", "cancel requested: the job stops within a moment"));
}

/* ---- GET /api/v1/models ---------------------------------------------------------- */

static const struct {
    const char *name, *description;
} descriptions[] = {
    {"realesrgan-x4plus", "General purpose, high quality"},
    {"realesrgan-x4fast", "General purpose, fast"},
    {"realesrgan-x4plus-anime", "Optimized for anime illustrations"},
    {"realesr-animevideov3", "Optimized for anime/animation"},
};

static void h_models(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    long want = 0;
    const char *s = http_request_query(req, "scale");
    if (s && (api_parse_int(s, &want) || want < 1 || want > 16)) {
        http_reply_error(req, 400, "invalid scale '%s': a whole number such as 2, 3 or 4", s);
        return;
    }
    /* availability from the workers registry: every process on this store that runs jobs */
    store_worker_t *live = NULL;
    int n_live = 0;
    up_error_t err;
    if (store_workers_list(api->jobs.store, 0, &live, &n_live, &err)) {
        http_reply_error(req, 503, "cannot read the workers registry: the job store is unavailable");
        return;
    }
    json_t *models = json_array();
    const upscale_registry_t *reg = api->jobs.registry;
    for (int i = 0; i < reg->n_models; i++) {
        const upscale_model_info_t *m = &reg->models[i];
        json_t *scales = json_array();
        int has = 0;
        for (int k = 0; k < m->n_variants; k++) {
            json_array_append_new(scales, json_integer(m->variants[k].scale));
            has |= m->variants[k].scale == want;
        }
        if (want && !has) {
            json_decref(scales);
            continue;
        }
        const char *desc = "Real-ESRGAN family model";
        for (size_t d = 0; d < sizeof descriptions / sizeof descriptions[0]; d++)
            if (!strcmp(descriptions[d].name, m->name))
                desc = descriptions[d].description;
        /* PicShapes' availability fields. worker_count counts slots, not processes: the jobs of this
         * model that can run at once, summed over the live registry rows that serve it (an `upres
         * worker --slots 2` counts 2; `serve -w 4` counts 4, as before the registry). A draining
         * process no longer claims, so it counts 0. */
        int workers = store_worker_slots(live, n_live, m->name);
        json_array_append_new(models, json_pack("{s:s,s:s,s:o,s:b,s:i}", "name", m->name, "description", desc,
                                                "supported_scales", scales, "available", workers > 0,
                                                "worker_count", workers));
    }
    free(live);
    http_reply_json(req, 200, json_pack("{s:s,s:o}", "version", API_VERSION, "models", models));
}

/* ---- GET /api/v1/health ---------------------------------------------------------- */

static void h_health(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    long long counts[JOB_STATUS_COUNT] = {0};
    json_t *o = json_pack("{s:s,s:s,s:I}", "status", atomic_load(&api->jobs.stopping) ? "stopping" : "ok",
                          "version", API_VERSION, "time", (json_int_t)time(NULL));
    if (!store_job_counts(api->jobs.store, counts, NULL)) {
        json_t *q = json_object();
        for (int s = 0; s < JOB_STATUS_COUNT; s++)
            json_object_set_new(q, job_status_name((job_status_t)s), json_integer(counts[s]));
        json_object_set_new(o, "jobs", q);
    }
    http_reply_json(req, atomic_load(&api->jobs.stopping) ? 503 : 200, o);
}

/* ---- docs: Swagger UI (npm swagger-ui-dist, installed by scripts/setup.sh) and OpenAPI ---- */

static const char docs_page[] =
    "<!DOCTYPE html>\n"
    "<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
    "<title>upres: Upscale Service API</title>\n"
    "<link rel=\"stylesheet\" href=\"/api/v1/docs/swagger-ui.css\">\n"
    "</head>\n<body>\n<div id=\"swagger-ui\"></div>\n"
    "<script src=\"/api/v1/docs/swagger-ui-bundle.js\"></script>\n"
    "<script src=\"/api/v1/docs/swagger-ui-standalone-preset.js\"></script>\n"
    "<script>\nwindow.onload = function () {\n"
    "  window.ui = SwaggerUIBundle({url: \"/api/v1/openapi.json\", dom_id: \"#swagger-ui\",\n"
    "    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "
    "\"StandaloneLayout\"});\n"
    "};\n</script>\n</body>\n</html>\n";

static void h_docs(http_request_t *req, void *ctx) {
    (void)ctx;
    http_reply_data(req, 200, "text/html; charset=utf-8", docs_page, sizeof docs_page - 1);
}

static void h_docs_asset(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    const char *file = http_request_param(req, "file");
    if (!api_file_name_ok(file)) {
        http_reply_error(req, 404, "no such file: %s", file);
        return;
    }
    char path[2048];
    snprintf(path, sizeof path, "%s/%s/%s", api->web_dir, SWAGGER_DIR, file);
    if (http_reply_file(req, 200, path, api_file_type(file), NULL))
        http_reply_error(req, 404, "no such file: %s (Swagger UI is installed by scripts/setup.sh)", file);
}

static void h_openapi(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    char path[2048];
    snprintf(path, sizeof path, "%s/openapi.json", api->web_dir);
    if (http_reply_file(req, 200, path, "application/json", NULL))
        http_reply_error(req, 404, "openapi.json not found in %s", api->web_dir);
}

static const http_route_t routes[] = {
    {"POST", "/api/v1/upscale", h_upscale},
    {"GET", "/api/v1/status/{job_id}", h_status},
    {"GET", "/api/v1/status/{job_id}/stream", h_status_stream},
    {"GET", "/api/v1/download/{job_id}", h_download},
    {"POST", "/api/v1/cancel/{job_id}", h_cancel},
    {"GET", "/api/v1/models", h_models},
    {"GET", "/api/v1/health", h_health},
    {"GET", "/api/v1/docs", h_docs},
    {"GET", "/api/v1/docs/", h_docs},
    {"GET", "/api/v1/docs/{file}", h_docs_asset},
    {"GET", "/api/v1/openapi.json", h_openapi},
};

const http_route_t *upscale_service_routes(int *n_routes) {
    *n_routes = (int)(sizeof routes / sizeof routes[0]);
    return routes;
}
