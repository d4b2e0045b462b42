/*
 * model.c - loading and freeing an ncnn model, and backend names.
 *
 * nn_model_load reads the .param and .bin files whole, then hands the bytes
 * to param.c (graph) and weights.c (fp32 weights); errors from either get the
 * file's path in front, so the user reads "models/x.param: line 3: ...".
 * The shape and planning functions of nn.h live in plan.c.
 */
#include "nn/model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/xmalloc.h"

const char *nn_backend_name(nn_backend_kind_t kind) {
    switch (kind) {
    case NN_BACKEND_REF: return "ref";
    case NN_BACKEND_DNNL: return "dnnl";
    }
    return "unknown";
}

int nn_backend_parse(const char *name, nn_backend_kind_t *out) {
    if (name && strcmp(name, "ref") == 0) {
        *out = NN_BACKEND_REF;
        return 0;
    }
    if (name && strcmp(name, "dnnl") == 0) {
        *out = NN_BACKEND_DNNL;
        return 0;
    }
    return UP_ERR_INVALID;
}

void nn_model_fini(nn_model_t *model) {
    if (!model)
        return;
    for (int i = 0; i < model->n_layers; i++) {
        nn_layer_t *l = &model->layers[i];
        free(l->in);
        free(l->out);
        if (l->op == NN_OP_CONV) {
            up_aligned_free(l->p.conv.weight);
            up_aligned_free(l->p.conv.bias);
        } else if (l->op == NN_OP_PRELU) {
            up_aligned_free(l->p.prelu.slope);
        }
    }
    free(model->layers);
    free(model->blobs);
    memset(model, 0, sizeof *model);
    model->input_blob = model->output_blob = -1;
}

void nn_model_free(nn_model_t *model) {
    if (!model)
        return;
    nn_model_fini(model);
    free(model);
}

/*
 * Parse and load; param_name/bin_name (may be NULL) prefix the messages of
 * the file at fault.
 */
static int load(const char *param_text, size_t param_size, const void *bin, size_t bin_size,
                const char *param_name, const char *bin_name, nn_model_t **out, up_error_t *err) {
    *out = NULL;
    nn_model_t *m = calloc(1, sizeof *m);
    if (!m)
        return up_error_set(err, UP_ERR_NOMEM, 0, "out of memory");
    int rc = nn_param_parse(param_text, param_size, m, err);
    if (rc) {
        if (param_name)
            up_error_prefix(err, "%s", param_name);
        goto fail;
    }
    rc = nn_weights_load(m, bin, bin_size, err);
    if (rc) {
        if (bin_name)
            up_error_prefix(err, "%s", bin_name);
        goto fail;
    }
    *out = m;
    return 0;
fail:
    nn_model_free(m);
    return rc;
}

int nn_model_load_mem(const char *param_text, size_t param_size, const void *bin, size_t bin_size,
                      nn_model_t **out, up_error_t *err) {
    return load(param_text, param_size, bin, bin_size, NULL, NULL, out, err);
}

/* The whole file at path into *data (new, caller frees) and *size. */
static int read_file(const char *path, char **data, size_t *size, up_error_t *err) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    struct stat st;
    int rc;

    *data = NULL;
    *size = 0;
    if (!f) {
        int e = errno;
        return up_error_set(err, e == ENOENT ? UP_ERR_NOT_FOUND : UP_ERR_IO, 0, "%s: cannot open: %s", path,
                            strerror(e));
    }
    /* the size is a hint: read until the end, whatever it turns out to be */
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0)
        cap = (size_t)st.st_size + 1;
    if (cap < 4096)
        cap = 4096;
    for (;;) {
        if (len == cap || !buf) {
            if (buf) {
                if (cap > ((size_t)-1) / 2) {
                    rc = up_error_set(err, UP_ERR_NOMEM, 0, "%s: file too large", path);
                    goto fail;
                }
                cap *= 2;
            }
            char *nbuf = realloc(buf, cap);
            if (!nbuf) {
                rc = up_error_set(err, UP_ERR_NOMEM, 0, "%s: out of memory reading %zu bytes", path, cap);
                goto fail;
            }
            buf = nbuf;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f)) {
                int e = errno;
                rc = up_error_set(err, UP_ERR_IO, 0, "%s: cannot read: %s", path, strerror(e));
                goto fail;
            }
            break;
        }
    }
    fclose(f);
    *data = buf;
    *size = len;
    return 0;
fail:
    fclose(f);
    free(buf);
    return rc;
}

int nn_model_load(const char *param_path, const char *bin_path, nn_model_t **out, up_error_t *err) {
    char *param = NULL, *bin = NULL;
    size_t param_size = 0, bin_size = 0;
    int rc;

    *out = NULL;
    if (!param_path || !bin_path)
        return up_error_set(err, UP_ERR_INVALID, 0, "no model file given");
    if ((rc = read_file(param_path, &param, &param_size, err)))
        goto done;
    if ((rc = read_file(bin_path, &bin, &bin_size, err)))
        goto done;
    rc = load(param, param_size, bin, bin_size, param_path, bin_path, out, err);
done:
    free(param);
    free(bin);
    return rc;
}
