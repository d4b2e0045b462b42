/*
 * upscale.c - `upres upscale`: the pipeline from the command line.
 *
 * Flags follow realesrgan-ncnn-vulkan where they overlap (-i -o -n -s -t -f
 * -j -m -v; -j takes N or its load:proc:save form, of which proc is used),
 * plus -b backend, -q quality, -a alpha mode, and --colour / --strip-metadata
 * for what the output says about its colours and origin (the input's ICC
 * profile, EXIF and XMP are kept by default). A folder as -i upscales
 * every image in it into the -o folder (created when missing), going on
 * after a failed file and exiting non-zero at the end if any failed.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/log.h"
#include "core/paths.h"
#include "image/image.h"
#include "upscale/upscale.h"

#define STR_(x) #x
#define STR(x) STR_(x)

static void usage(FILE *f) {
    fputs("usage: upres upscale -i IN -o OUT [options]\n"
          "\n"
          "  -i PATH     input image, or a folder of images\n"
          "  -o PATH     output image, or a folder (created if missing)\n"
          "  -n NAME     model (default " UPSCALE_DEFAULT_MODEL "; see `upres models`)\n"
          "  -s SCALE    output scale, e.g. 2, 3, 4 or 1.5 (default: the model's native scale)\n"
          "  -t TILE     tile size in input pixels, 0 = automatic (default 0)\n"
          "  -f FORMAT   png, jpg or webp (default: from OUT's extension, else the input's)\n"
          "  -q QUALITY  jpg/webp quality 1-100 (default 92 jpg, 90 webp)\n"
          "  -j THREADS  compute threads, or load:proc:save as realesrgan-ncnn-vulkan (default: all cores)\n"
          "  -m DIR      models folder (default: $UPRES_MODELS, else the installed models/)\n"
          "  -b BACKEND  dnnl (default) or ref\n"
          "  --precision P      auto (default: bf16 where the CPU has AMX, else fp32), fp32 or bf16\n"
          "                     (oneDNN on a CPU with AVX512_BF16; >= 50 dB from fp32 on every model)\n"
          "  -a ALPHA    alpha channel: resample (bicubic, default) or model (the network)\n"
          "  --colour MODE      keep (default): the output keeps the input's colour values and ICC\n"
          "                     profile (Adobe RGB, Display P3, ... stay wide-gamut); srgb: convert\n"
          "                     to sRGB and write no profile. CMYK and Lab inputs always become sRGB\n"
          "  --strip-metadata   write no metadata at all: no ICC profile, EXIF or XMP (colours are\n"
          "                     converted to sRGB first); by default EXIF and XMP are copied, with\n"
          "                     the orientation reset since it is applied\n"
          "  --plans N          network plans kept for the tile shapes of a folder's image sizes,\n"
          "                     1-" STR(NN_PLAN_CACHE_MAX) " (default " STR(
              NN_PLAN_CACHE_DEFAULT) ", within the tile memory budget); 1 plans again\n"
                                     "                     at every new size\n"
                                     "  -v          verbose: plan and timing details\n",
          f);
}

typedef struct job {
    upscaler_t *up;
    upscale_opts_t opts;
    const char *format; /* -f, or NULL */
    int quality;
    int srgb;          /* --colour srgb */
    int strip;         /* --strip-metadata */
    const char *label; /* for progress lines */
    int last_pct;
    int tty;
} job_t;

static int on_progress(void *ctx, int pct) {
    job_t *j = ctx;
    if (pct == j->last_pct)
        return 0;
    if (j->tty)
        fprintf(stderr, "\r%s: %3d%%%s", j->label, pct, pct == 100 ? "\n" : "");
    else if (pct / 25 != j->last_pct / 25 || pct == 100)
        fprintf(stderr, "%s: %d%%\n", j->label, pct);
    j->last_pct = pct;
    return 0;
}

/* Upscale one file; 0 or prints one error line and returns 1. */
static int upscale_file(job_t *j, const char *in_path, const char *out_path) {
    up_error_t err;
    up_image_t *in = NULL, *out = NULL;
    image_limits_t lim = {.max_pixels = upscale_max_input_pixels()};
    int rc = image_load_file(in_path, &lim, &in, &err);
    if (rc == 0) {
        j->label = in_path;
        j->last_pct = -1;
        rc = upscaler_run(j->up, in, &j->opts, &out, &err);
    }
    if (rc == 0) {
        image_save_opts_t so = {
            .format = j->format, .quality = j->quality, .srgb = j->srgb, .strip = j->strip};
        rc = image_save_file(out, out_path, &so, &err);
    }
    image_free(in);
    image_free(out);
    if (rc) {
        cli_error("%s: %s", in_path, err.msg);
        return 1;
    }
    log_info("%s -> %s", in_path, out_path);
    return 0;
}

/* -j N or -j load:proc:save */
static int parse_threads(const char *s, int *out) {
    const char *p = strchr(s, ':');
    char *end;
    long v = strtol(p ? p + 1 : s, &end, 10);
    if (end == (p ? p + 1 : s) || (*end && *end != ':') || v < 0 || v > 1024)
        return -1;
    *out = (int)v;
    return 0;
}

int cmd_upscale(int argc, char **argv) {
    const char *in_path = NULL, *out_path = NULL, *model = UPSCALE_DEFAULT_MODEL, *dir_opt = NULL;
    const char *format = NULL;
    nn_backend_kind_t backend = NN_BACKEND_DNNL;
    int threads = 0, quality = 0, srgb = 0, strip = 0, c;
    upscale_opts_t opts;
    upscale_opts_init(&opts);
    char *end;

    nn_precision_t precision = NN_PRECISION_AUTO;
    enum { OPT_COLOUR = 256, OPT_STRIP, OPT_PRECISION, OPT_PLANS };
    static const struct option long_opts[] = {{"colour", required_argument, NULL, OPT_COLOUR},
                                              {"color", required_argument, NULL, OPT_COLOUR},
                                              {"strip-metadata", no_argument, NULL, OPT_STRIP},
                                              {"precision", required_argument, NULL, OPT_PRECISION},
                                              {"plans", required_argument, NULL, OPT_PLANS},
                                              {NULL, 0, NULL, 0}};
    optind = 0;
    while ((c = getopt_long(argc + 1, argv - 1, "i:o:n:s:t:f:q:j:m:b:a:g:vxh", long_opts, NULL)) != -1) {
        switch (c) {
        case OPT_COLOUR:
            if (!strcmp(optarg, "srgb"))
                srgb = 1;
            else if (!strcmp(optarg, "keep"))
                srgb = 0;
            else {
                cli_error("bad colour mode '%s': keep or srgb", optarg);
                return 2;
            }
            break;
        case OPT_STRIP: strip = 1; break;
        case OPT_PLANS:
            opts.max_plans = (int)strtol(optarg, &end, 10);
            if (*end || opts.max_plans < 1 || opts.max_plans > NN_PLAN_CACHE_MAX) {
                cli_error("bad plan count '%s': 1 to %d", optarg, NN_PLAN_CACHE_MAX);
                return 2;
            }
            break;
        case 'i': in_path = optarg; break;
        case 'o': out_path = optarg; break;
        case 'n': model = optarg; break;
        case 's':
            opts.scale = strtod(optarg, &end);
            if (*end || !(opts.scale > 0) || opts.scale > 16) {
                cli_error("bad scale '%s': give a number above 0 and at most 16, e.g. 2, 3 or 4", optarg);
                return 2;
            }
            break;
        case 't':
            opts.tile = (int)strtol(optarg, &end, 10);
            if (*end || opts.tile < 0 || (opts.tile > 0 && opts.tile < 16)) {
                cli_error("bad tile size '%s': 0 (automatic) or at least 16", optarg);
                return 2;
            }
            break;
        case 'f':
            format = optarg;
            if (!image_format_supported_for_output(format)) {
                cli_error("bad format '%s': png, jpg or webp", optarg);
                return 2;
            }
            break;
        case 'q':
            quality = (int)strtol(optarg, &end, 10);
            if (*end || quality < 1 || quality > 100) {
                cli_error("bad quality '%s': 1 to 100", optarg);
                return 2;
            }
            break;
        case 'j':
            if (parse_threads(optarg, &threads)) {
                cli_error("bad thread count '%s'", optarg);
                return 2;
            }
            break;
        case 'm': dir_opt = optarg; break;
        case 'b':
            if (nn_backend_parse(optarg, &backend)) {
                cli_error("bad backend '%s': dnnl or ref", optarg);
                return 2;
            }
            break;
        case 'a':
            if (!strcmp(optarg, "model"))
                opts.alpha = UPSCALE_ALPHA_MODEL;
            else if (!strcmp(optarg, "resample"))
                opts.alpha = UPSCALE_ALPHA_RESAMPLE;
            else {
                cli_error("bad alpha mode '%s': resample or model", optarg);
                return 2;
            }
            break;
        case OPT_PRECISION:
            if (nn_precision_parse(optarg, &precision)) {
                cli_error("bad precision '%s': auto, fp32 or bf16", optarg);
                return 2;
            }
            break;
        case 'g': break; /* GPU id: accepted for compatibility, this engine runs on the CPU */
        case 'x': break; /* TTA: accepted for compatibility, not implemented */
        case 'v': log_set_level(LOG_DEBUG); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!in_path || !out_path) {
        cli_error("-i and -o are required (upres upscale -h for help)");
        return 2;
    }
    if (access(in_path, R_OK) != 0) {
        cli_error("%s: %s", in_path, strerror(errno));
        return 1;
    }

    up_error_t err;
    char buf[1024];
    const char *dir = upscale_models_dir(dir_opt, buf, sizeof buf);
    upscale_registry_t *reg = NULL;
    const upscale_variant_t *variant = NULL;
    job_t j = {.format = format, .quality = quality, .srgb = srgb, .strip = strip, .tty = isatty(2)};
    int failed = 0;

    if (image_init()) {
        cli_error("cannot initialise libvips");
        return 1;
    }
    if (upscale_registry_scan(dir, &reg, &err) ||
        upscale_registry_resolve(reg, model, opts.scale, &variant, &err) ||
        upscaler_new(reg, variant, backend, threads, &j.up, &err) ||
        upscaler_set_precision(j.up, precision, &err)) {
        upscaler_free(j.up);
        cli_error("%s", err.msg);
        upscale_registry_free(reg);
        return 1;
    }
    opts.progress = on_progress;
    opts.progress_ctx = &j;
    j.opts = opts;

    if (!paths_is_dir(in_path)) {
        failed = upscale_file(&j, in_path, out_path);
    } else {
        /* in name order: the progress lines and a failure's place are the same on every run */
        struct dirent **names = NULL;
        int n = scandir(in_path, &names, NULL, alphasort), bad = 0;
        if (n < 0 || (mkdir(out_path, 0777) != 0 && errno != EEXIST) || !paths_is_dir(out_path)) {
            cli_error("%s: %s", n >= 0 ? out_path : in_path,
                      n >= 0 ? "cannot create the output folder" : strerror(errno));
            bad = 1;
        }
        for (int i = 0; i < n; i++) {
            const struct dirent *e = names[i];
            char src[4096], dst[4096], stem[1024];
            snprintf(src, sizeof src, "%s/%s", in_path, e->d_name);
            if (!bad && e->d_name[0] != '.' && !paths_is_dir(src)) {
                snprintf(stem, sizeof stem, "%s", e->d_name);
                char *dot = strrchr(stem, '.');
                const char *ext = format                                     ? format
                                  : dot && image_format_from_path(e->d_name) ? dot + 1
                                                                             : "png";
                if (dot)
                    *dot = '\0';
                snprintf(dst, sizeof dst, "%s/%s.%s", out_path, stem, ext);
                failed |= upscale_file(&j, src, dst);
            }
            free(names[i]);
        }
        free(names);
        failed |= bad;
    }
    nn_plan_stats_t ps;
    upscaler_plan_stats(j.up, &ps);
    log_debug("plans: %llu made, %llu reused, %llu dropped; %d kept (%zu MB)", ps.misses, ps.hits,
              ps.evictions, ps.n_plans, ps.bytes >> 20);
    upscaler_free(j.up);
    upscale_registry_free(reg);
    return failed ? 1 : 0;
}
