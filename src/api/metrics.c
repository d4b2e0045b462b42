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

#include "api/api.h"
#include "core/log.h"
#include "core/metrics.h"

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
    long long counts[JOB_STATUS_COUNT];
    up_error_t err;
    if (store_job_counts(api->jobs.store, counts, &err)) {
        log_error("metrics: %s", err.msg);
        http_reply_storage_error(req, err.code);
        return;
    }
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        http_reply_error_code(req, 500, "INTERNAL_ERROR", NULL, "out of memory");
        return;
    }
    metrics_render(f);
    for (int s = 0; s < JOB_STATUS_COUNT; s++)
        metrics_gauge(f, s == 0, "upres_jobs", "Jobs in the database by status (the same on every process)",
                      "status", job_status_name((job_status_t)s), (double)counts[s]);
    fclose(f);
    http_reply_data(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
}

static const http_route_t routes[] = {
    {"GET", "/metrics", h_metrics},
};

const http_route_t *metrics_routes(int *n_routes) {
    *n_routes = (int)(sizeof routes / sizeof routes[0]);
    return routes;
}
