/*
 * job_settings.h - the settings that `upres serve` and `upres worker` both
 * take, written once: the parsers of values both check (a store URL, a
 * blob folder, a registry name, a log level) and the entries that shape a
 * job's result, which must mean the same on an API server's own workers
 * and on a worker machine.
 *
 * Each CLI_SETTING_* macro is one setting_t initialiser; AT is the
 * includer's macro that places a queue_config_t field in its own bases
 * (serve's and worker's QUEUE), LOCAL likewise for the log level.
 */
#ifndef UPRES_CLI_JOB_SETTINGS_H
#define UPRES_CLI_JOB_SETTINGS_H

#include "cli/settings.h"

int cli_parse_store(const char *value, void *dest, up_error_t *err);         /* store_url_check */
int cli_parse_blobs(const char *value, void *dest, up_error_t *err);         /* blob_url_check */
int cli_parse_registry_name(const char *value, void *dest, up_error_t *err); /* 1-127 of [A-Za-z0-9._-:@] */
int cli_parse_log_level(const char *value, void *dest, up_error_t *err);     /* into an int (log_level_t) */

extern const setting_choice_t cli_backends[];
extern const setting_choice_t cli_precisions[];
extern const setting_choice_t cli_colours[];

#define CLI_SETTING_BACKEND(AT)                                                                              \
    {                                                                                                        \
        .name = "backend", .short_flag = 'b', .arg = "NAME", .env = "UPRES_BACKEND",                         \
        .type = SETTING_TYPE_ENUM, .choices = cli_backends, .def = "dnnl",                                   \
        .help = "the network's engine: oneDNN, or the plain C reference", AT(backend)                        \
    }

#define CLI_SETTING_PRECISION(AT)                                                                            \
    {                                                                                                        \
        .name = "precision", .arg = "NAME", .env = "UPRES_PRECISION", .type = SETTING_TYPE_ENUM,             \
        .choices = cli_precisions, .def = "auto",                                                            \
        .help =                                                                                              \
            "network arithmetic: bf16 (oneDNN on AVX512_BF16), fp32, or auto = bf16 where the CPU has AMX",  \
        AT(precision)                                                                                        \
    }

#define CLI_SETTING_TILE_MEMORY(AT)                                                                          \
    {                                                                                                        \
        .name = "tile-memory", .arg = "BYTES", .env = "UPRES_TILE_MEMORY", .type = SETTING_TYPE_SIZE,        \
        .lo = 0, .hi = 1e30, .def = "0",                                                                     \
        .def_text = "0: half the available memory over the jobs run at once, 256M to 8G",                    \
        .what = "bytes, with an optional K, M or G suffix; 0 = from the memory available at start",          \
        .help = "memory one job's network may use for automatic tiles (a job's own tile size wins): larger " \
                "tiles recompute fewer borders, so a bigger budget is faster",                               \
        AT(tile_memory)                                                                                      \
    }

#define CLI_SETTING_MAX_PIXELS(AT)                                                                           \
    {                                                                                                        \
        .name = "max-pixels", .arg = "N", .env = "UPRES_MAX_PIXELS", .type = SETTING_TYPE_SIZE, .lo = 0,     \
        .hi = 1e30, .def = "40000000", .what = "a pixel count (0 = no limit)", .help = "input pixel limit",  \
        AT(max_input_pixels)                                                                                 \
    }

#define CLI_SETTING_MAX_OUTPUT_PIXELS(AT)                                                                    \
    {                                                                                                        \
        .name = "max-output-pixels", .arg = "N", .env = "UPRES_MAX_OUTPUT_PIXELS",                           \
        .type = SETTING_TYPE_SIZE, .lo = 0, .hi = 1e30, .def = "400000000",                                  \
        .what = "a pixel count (0 = no limit)", .help = "output pixel limit", AT(max_output_pixels)          \
    }

#define CLI_SETTING_COLOUR(AT)                                                                               \
    {                                                                                                        \
        .name = "colour", .arg = "MODE", .env = "UPRES_COLOUR", .type = SETTING_TYPE_ENUM,                   \
        .choices = cli_colours, .def = "keep",                                                               \
        .help = "`keep`: results carry the input's ICC profile (its own values); `srgb`: convert to sRGB",   \
        .doc = "a job's own `colour` wins", AT(colour_srgb)                                                  \
    }

#define CLI_SETTING_STRIP_METADATA(AT)                                                                       \
    {                                                                                                        \
        .name = "strip-metadata", .env = "UPRES_STRIP_METADATA", .type = SETTING_TYPE_BOOL, .def = "0",      \
        .help = "write no ICC profile, EXIF or XMP (colours converted to sRGB)",                             \
        .doc = "off: EXIF, XMP and the ICC profile are kept", AT(strip_metadata)                             \
    }

#define CLI_SETTING_VERBOSE(LOCAL)                                                                           \
    {                                                                                                        \
        .name = "verbose", .short_flag = 'v', .flag_value = "debug", .env = "UPRES_LOG_LEVEL",               \
        .type = SETTING_TYPE_STRING, .parse = cli_parse_log_level, .def = "info",                            \
        .what = "error, warn, info or debug",                                                                \
        .help = "debug log; the variable sets the level (others mean info)", LOCAL(log_level)                \
    }

#endif
