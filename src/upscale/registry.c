/*
 * registry.c - finding models: the models folder and what is in it.
 *
 * A model is a NAME.param / NAME.bin pair. Its native scale is not written
 * anywhere in ncnn files, so it is measured: the graph's output size for a
 * 64x64 input divided by 64 (shape inference only; the weights are read but
 * not run). NAME-xN files form one family NAME with one variant per scale.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/paths.h"
#include "core/xmalloc.h"
#include "upscale/upscale.h"

#ifndef UPRES_DEFAULT_MODELS_DIR
#define UPRES_DEFAULT_MODELS_DIR "models"
#endif

const char *upscale_models_dir(const char *explicit_dir, char *buf, size_t size) {
    return paths_find_dir(explicit_dir, "UPRES_MODELS", "../models", UPRES_DEFAULT_MODELS_DIR, buf, size);
}

static int variant_cmp(const void *a, const void *b) {
    return ((const upscale_variant_t *)a)->scale - ((const upscale_variant_t *)b)->scale;
}

static int model_cmp(const void *a, const void *b) {
    return strcmp(((const upscale_model_info_t *)a)->name, ((const upscale_model_info_t *)b)->name);
}

/* Native scale of the model in dir/stem.{param,bin}, or a negative code. */
static int measure_scale(const char *dir, const char *stem, int *scale, up_error_t *err) {
    char param[2048], bin[2048];
    snprintf(param, sizeof param, "%s/%s.param", dir, stem);
    snprintf(bin, sizeof bin, "%s/%s.bin", dir, stem);
    nn_model_t *m = NULL;
    int rc = nn_model_load(param, bin, &m, err);
    if (rc)
        return rc;
    int oc, oh, ow;
    rc = nn_model_output_shape(m, 3, 64, 64, &oc, &oh, &ow, err);
    nn_model_free(m);
    if (rc)
        return rc;
    if (oh != ow || oh % 64 || oh < 64)
        return up_error_set(err, UP_ERR_UNSUPPORTED, 0,
                            "%s: output %dx%d for a 64x64 input is not an integer upscale", stem, ow, oh);
    *scale = oh / 64;
    return 0;
}

int upscale_registry_scan(const char *dir, upscale_registry_t **out, up_error_t *err) {
    DIR *d = opendir(dir);
    if (!d)
        return up_error_set(
            err, UP_ERR_NOT_FOUND, 0,
            "models folder %s cannot be read (run scripts/setup.sh, or set -m / UPRES_MODELS)", dir);
    upscale_registry_t *reg = xcalloc(1, sizeof *reg);
    snprintf(reg->dir, sizeof reg->dir, "%s", dir);
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 7 || len - 6 >= sizeof reg->models[0].variants[0].file ||
            strcmp(e->d_name + len - 6, ".param"))
            continue;
        char stem[128];
        memcpy(stem, e->d_name, len - 6);
        stem[len - 6] = '\0';
        int scale = 0;
        up_error_t merr;
        if (measure_scale(dir, stem, &scale, &merr)) {
            log_warn("models: skipping %s: %s", stem, merr.msg);
            continue;
        }
        /* family: strip a trailing -xN */
        char family[128];
        snprintf(family, sizeof family, "%s", stem);
        char *dash = strrchr(family, '-');
        if (dash && dash[1] == 'x' && dash[2] >= '1' && dash[2] <= '9' && dash[3] == '\0' &&
            dash[2] - '0' == scale)
            *dash = '\0';
        upscale_model_info_t *mi = NULL;
        for (int i = 0; i < reg->n_models; i++)
            if (!strcmp(reg->models[i].name, family))
                mi = &reg->models[i];
        if (!mi) {
            if (reg->n_models == cap) {
                cap = cap ? cap * 2 : 8;
                reg->models = xrealloc(reg->models, (size_t)cap * sizeof *reg->models);
            }
            mi = &reg->models[reg->n_models++];
            memset(mi, 0, sizeof *mi);
            snprintf(mi->name, sizeof mi->name, "%s", family);
        }
        if (mi->n_variants == UPSCALE_MAX_VARIANTS)
            continue;
        upscale_variant_t *v = &mi->variants[mi->n_variants++];
        v->scale = scale;
        snprintf(v->file, sizeof v->file, "%s", stem);
    }
    closedir(d);
    for (int i = 0; i < reg->n_models; i++)
        qsort(reg->models[i].variants, (size_t)reg->models[i].n_variants, sizeof(upscale_variant_t),
              variant_cmp);
    if (reg->n_models)
        qsort(reg->models, (size_t)reg->n_models, sizeof *reg->models, model_cmp);
    *out = reg;
    return 0;
}

void upscale_registry_free(upscale_registry_t *reg) {
    if (!reg)
        return;
    free(reg->models);
    free(reg);
}

const upscale_model_info_t *upscale_registry_find(const upscale_registry_t *reg, const char *name) {
    for (int i = 0; i < reg->n_models; i++) {
        const upscale_model_info_t *mi = &reg->models[i];
        if (!strcmp(mi->name, name))
            return mi;
    }
    return NULL;
}

const upscale_variant_t *upscale_model_pick(const upscale_model_info_t *model, double scale) {
    const upscale_variant_t *best = &model->variants[model->n_variants - 1];
    if (scale <= 0)
        return best;
    for (int i = 0; i < model->n_variants; i++)
        if (model->variants[i].scale >= scale - 1e-9)
            return &model->variants[i];
    return best;
}

int upscale_registry_resolve(const upscale_registry_t *reg, const char *name, double scale,
                             const upscale_variant_t **out, up_error_t *err) {
    const upscale_model_info_t *mi = upscale_registry_find(reg, name);
    if (mi) {
        *out = upscale_model_pick(mi, scale);
        return 0;
    }
    for (int i = 0; i < reg->n_models; i++)
        for (int k = 0; k < reg->models[i].n_variants; k++)
            if (!strcmp(reg->models[i].variants[k].file, name)) {
                *out = &reg->models[i].variants[k];
                return 0;
            }
    char list[512] = "";
    size_t used = 0;
    for (int i = 0; i < reg->n_models && used < sizeof list; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", reg->models[i].name);
    return up_error_set(err, UP_ERR_NOT_FOUND, 0, "unknown model '%s' (installed: %s)", name,
                        reg->n_models ? list : "none");
}
