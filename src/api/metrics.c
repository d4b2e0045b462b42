/*
 * metrics.c - GET /metrics: Prometheus' text format (version 0.0.4).
 *
 * Two kinds of figures (see core/metrics.h): what this process counted
 * since it started (claims, completions, timings, HTTP replies: summed over
 * processes by Prometheus), and the database's state at the scrape (jobs
 * by status, queued and running jobs per model), the same on every process
 * of one database: an alerting rule takes max(), not sum(), of those.
 *
 * Who may read it is --metrics: open (the default: counts, model names and
 * status codes, nothing about keys or jobs), admin (the --admin-token as a
 * Bearer token) or off (404 as for any unknown path).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/xmalloc.h"

/* Queued and held jobs per installed model (a model no longer installed is left out). */
typedef struct depth {
    const upscale_registry_t *reg;
    long long *queued, *running; /* by the registry's model index */
} depth_t;

static void add_depth(const char *model, long long queued, long long running, void *ctx) {
    depth_t *d = ctx;
    for (int m = 0; m < d->reg->n_models; m++)
        if (!strcmp(d->reg->models[m].name, model)) {
            d->queued[m] = queued;
            d->running[m] = running;
        }
}

static void h_metrics(http_request_t *req, void *ctx) {
    api_t *api = ctx;
    if (api->metrics == API_METRICS_OFF) {
        http_reply_error_code(req, 404, "NOT_FOUND", NULL, "metrics are off on this server (--metrics off)");
        return;
    }
    if (api->metrics == API_METRICS_ADMIN && !api_admin_token_ok(api, req)) {
        http_reply_error_code(req, 401, "UNAUTHORIZED", NULL, "%s",
                              api->admin_token && *api->admin_token
                                  ? "/metrics needs the admin token: Authorization: Bearer <--admin-token>"
                                  : "/metrics needs the admin token, and this server has no --admin-token");
        return;
    }
    /* the database's figures first, so that a store failure is the whole answer (503), never half a page */
    long long counts[JOB_STATUS_COUNT];
    store_worker_t *live = NULL;
    int n_live = 0;
    const upscale_registry_t *reg = api->jobs.registry;
    depth_t d = {.reg = reg};
    d.queued = xcalloc((size_t)reg->n_models + 1, sizeof *d.queued);
    d.running = xcalloc((size_t)reg->n_models + 1, sizeof *d.running);
    char *text = NULL;
    size_t len = 0;
    up_error_t err;
    if (store_job_counts(api->jobs.store, counts, &err) ||
        store_workers_list(api->jobs.store, 0, &live, &n_live, &err) ||
        store_model_counts(api->jobs.store, add_depth, &d, &err)) {
        log_error("metrics: %s", err.msg);
        http_reply_storage_error(req, err.code);
        goto done;
    }
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        http_reply_error_code(req, 500, "INTERNAL_ERROR", NULL, "out of memory");
        goto done;
    }
    metrics_render(f);
    for (int s = 0; s < JOB_STATUS_COUNT; s++)
        metrics_gauge(f, s == 0, "upres_jobs", "Jobs in the database by status (the same on every process)",
                      "status", job_status_name((job_status_t)s), (double)counts[s]);
    /* per model: every installed one, also with nothing queued (a gauge at 0 is a fact, not a gap) */
    for (int m = 0; m < reg->n_models; m++)
        metrics_gauge(f, m == 0, "upres_queue_depth",
                      "Queued jobs by model, in the database (the same on every process)", "model",
                      reg->models[m].name, (double)d.queued[m]);
    for (int m = 0; m < reg->n_models; m++)
        metrics_gauge(f, m == 0, "upres_jobs_running",
                      "Claimed or processing jobs by model, in the database (the same on every process)",
                      "model", reg->models[m].name, (double)d.running[m]);
    for (int m = 0; m < reg->n_models; m++)
        metrics_gauge(f, m == 0, "upres_worker_slots",
                      "Jobs of the model the live workers can run at once (the registry: /api/v1/models' "
                      "worker_count)",
                      "model", reg->models[m].name,
                      (double)store_worker_slots(live, n_live, reg->models[m].name));
    metrics_gauge(f, 1, "upres_workers", "Live processes in the workers registry", NULL, NULL,
                  (double)n_live);
    fclose(f);
    http_reply_data(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
done:
    free(text);
    free(live);
    free(d.queued);
    free(d.running);
}

static const http_route_t routes[] = {
    {"GET", "/metrics", h_metrics},
};

const http_route_t *metrics_routes(int *n_routes) {
    *n_routes = (int)(sizeof routes / sizeof routes[0]);
    return routes;
}
