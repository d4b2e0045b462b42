/*
 * models.c - `upres models [-m DIR]`: the installed models and their scales.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "image/image.h"
#include "upscale/upscale.h"

int cmd_models(int argc, char **argv) {
    const char *dir_opt = NULL;
    int c;
    optind = 0;
    while ((c = getopt(argc + 1, argv - 1, "m:h")) != -1) {
        switch (c) {
        case 'm': dir_opt = optarg; break;
        case 'h': printf("usage: upres models [-m MODELDIR]\n"); return 0;
        default: return 2;
        }
    }
    char buf[1024];
    const char *dir = upscale_models_dir(dir_opt, buf, sizeof buf);
    upscale_registry_t *reg = NULL;
    up_error_t err;
    if (upscale_registry_scan(dir, &reg, &err)) {
        cli_error("%s", err.msg);
        return 1;
    }
    printf("models in %s:\n", dir);
    for (int i = 0; i < reg->n_models; i++) {
        const upscale_model_info_t *m = &reg->models[i];
        printf("  %-28s scale", m->name);
        for (int k = 0; k < m->n_variants; k++)
            printf("%s%d", k ? "," : " ", m->variants[k].scale);
        printf("%s\n", strcmp(m->name, UPSCALE_DEFAULT_MODEL) ? "" : "  (default)");
    }
    if (reg->n_models == 0)
        printf("  (none: run scripts/setup.sh)\n");
    upscale_registry_free(reg);
    return 0;
}
