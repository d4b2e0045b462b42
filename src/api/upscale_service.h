/*
 * upscale_service.h - the Upscale Service dialect (the primary API):
 * /api/v1/upscale, /status/{id}, /download/{id}, /cancel/{id}, /models,
 * /health, plus /api/v1/docs (Swagger UI) and /api/v1/openapi.json.
 * Contract: ../shared/specs/upscale-service.api.md and .guide.md. Its
 * route table is upscale_service_routes (api.h); handlers take an api_t.
 */
#ifndef UPRES_API_UPSCALE_SERVICE_H
#define UPRES_API_UPSCALE_SERVICE_H

#include <stddef.h>

#include "api/api.h"

/*
 * The web folder: explicit (non-NULL, non-empty) wins, then $UPRES_WEB, then
 * <executable's folder>/../web, then the source tree's web/ (compiled in).
 */
const char *upscale_service_web_dir(const char *explicit_dir, char *buf, size_t size);

#endif
