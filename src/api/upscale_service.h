/*
 * upscale_service.h - the Upscale Service dialect (the primary API):
 * /api/v1/upscale, /status/{id}, /download/{id}, /cancel/{id}, /models,
 * /health, plus /api/v1/docs (Swagger UI) and /api/v1/openapi.json.
 * Contract: ../shared/specs/upscale-service.api.md and .guide.md.
 */
#ifndef UPRES_API_UPSCALE_SERVICE_H
#define UPRES_API_UPSCALE_SERVICE_H

#include <stdatomic.h>

#include "http/http.h"
#include "queue/queue.h"
#include "store/store.h"
#include "upscale/upscale.h"

#define UPSCALE_SERVICE_VERSION "1.0.0"

/* What the handlers use; every pointer is borrowed and outlives the server. */
typedef struct upscale_service {
    store_t *store;
    queue_t *queue;
    const upscale_registry_t *registry;
    const char *web_dir;                  /* web/: openapi.json, vendor/ (Swagger UI) */
    unsigned long long max_input_pixels;  /* 0 = no limit */
    unsigned long long max_output_pixels; /* 0 = no limit */
    atomic_int stopping;                  /* set at shutdown: submissions get 503 */
} upscale_service_t;

/* The dialect's static route table (borrowed); handlers take a upscale_service_t * as ctx. */
const http_route_t *upscale_service_routes(int *n_routes);

/*
 * The web folder: explicit (non-NULL, non-empty) wins, then $UPRES_WEB, then
 * <executable's folder>/../web, then the source tree's web/ (compiled in).
 */
const char *upscale_service_web_dir(const char *explicit_dir, char *buf, size_t size);

#endif
