/*
 * job_settings.c - what `serve` and `worker` share of their settings (see
 * job_settings.h).
 */
#include "cli/job_settings.h"

#include <string.h>

#include "blob/blob.h"
#include "core/log.h"
#include "nn/nn.h"
#include "store/store.h"

const setting_choice_t cli_backends[] = {{"dnnl", NN_BACKEND_DNNL}, {"ref", NN_BACKEND_REF}, {NULL, 0}};
const setting_choice_t cli_precisions[] = {
    {"auto", NN_PRECISION_AUTO}, {"fp32", NN_PRECISION_FP32}, {"bf16", NN_PRECISION_BF16}, {NULL, 0}};
const setting_choice_t cli_colours[] = {{"keep", 0}, {"srgb", 1}, {NULL, 0}};

int cli_parse_store(const char *value, void *dest, up_error_t *err) {
    if (store_url_check(value, err))
        return -1;
    *(const char **)dest = value;
    return 0;
}

int cli_parse_blobs(const char *value, void *dest, up_error_t *err) {
    if (blob_url_check(value, err))
        return -1;
    *(const char **)dest = value;
    return 0;
}

int cli_parse_registry_name(const char *value, void *dest, up_error_t *err) {
    (void)err;
    size_t n = strlen(value);
    if (n == 0 || n > 127 ||
        strspn(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:@") != n)
        return -1;
    *(const char **)dest = value;
    return 0;
}

/* UPRES_LOG_LEVEL (or -v: "debug"); anything else is info, as it always was. */
int cli_parse_log_level(const char *value, void *dest, up_error_t *err) {
    (void)err;
    *(int *)dest = !strcmp(value, "error")   ? LOG_ERROR
                   : !strcmp(value, "warn")  ? LOG_WARN
                   : !strcmp(value, "debug") ? LOG_DEBUG
                                             : LOG_INFO;
    return 0;
}
