/*
 * png_levels.c - PNG encode time and size against libvips' compression
 * level and row filter, on real upscaled photos.
 *
 * An upscale's result is written as PNG whenever the input was one, and
 * a large result's encode is a real share of the job (4096^2 at the level
 * 6 we used: about 1.3 s next to ~4 s of network for animevideov3). For
 * each image given (decoded once into memory) this encodes it with
 * vips_pngsave_buffer at every level 0..9 and each filter (none, sub, up,
 * avg, paeth, all: libvips' VipsForeignPngFilter), best of REPS, and
 * prints the time and the size relative to level 6 with libvips' default
 * filter, so that a level and filter can be chosen for speed at nearly
 * the same size.
 *
 * Rows "rle" are what upres writes now (image.c): libvips at level 0 with
 * the filter, then the pixel data deflated again with Z_RLE (pngz.h),
 * timed together. -z prints only those rows and level 2 with avg (what
 * upres wrote before them), leaving out the slow sweep.
 *
 * Usage: bench_png_levels [-r REPS] [-z] IMAGE...   (make the images with
 * `upres upscale`, e.g. a photo at x4: the results are what it encodes)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <vips/vips.h>

#include "image/pngz.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Best of reps encodes: seconds, and *size the bytes. -1 when libvips fails. level -1: level 0 with the
 * filter, then pngz_recompress. */
static double encode(VipsImage *img, int level, int filter, int reps, size_t *size) {
    int rle = level < 0;
    level = rle ? 0 : level;
    double best = -1;
    for (int r = 0; r < reps; r++) {
        void *buf = NULL;
        size_t n = 0;
        double t0 = now();
        int failed = filter < 0
                         ? vips_pngsave_buffer(img, &buf, &n, "compression", level, "strip", TRUE, NULL)
                         : vips_pngsave_buffer(img, &buf, &n, "compression", level, "strip", TRUE, "filter",
                                               filter, NULL);
        void *z = NULL;
        size_t zn = 0;
        up_error_t err;
        if (!failed && rle) {
            if (pngz_recompress(buf, n, &z, &zn, &err)) {
                fprintf(stderr, "pngz: %s\n", err.msg);
                failed = 1;
            }
            n = zn;
        }
        double t = now() - t0;
        g_free(buf);
        free(z);
        if (failed)
            return -1;
        *size = n;
        if (best < 0 || t < best)
            best = t;
    }
    return best;
}

int main(int argc, char **argv) {
    int reps = 2, first = 1, only_rle = 0;
    for (;;) {
        if (first + 1 < argc && !strcmp(argv[first], "-r")) {
            reps = atoi(argv[first + 1]);
            first += 2;
        } else if (first < argc && !strcmp(argv[first], "-z")) {
            only_rle = 1;
            first++;
        } else {
            break;
        }
    }
    if (first >= argc || reps < 1) {
        fprintf(stderr, "usage: bench_png_levels [-r REPS] [-z] IMAGE...\n");
        return 2;
    }
    if (VIPS_INIT(argv[0]))
        vips_error_exit("libvips failed to start");
    static const struct {
        const char *name;
        int value; /* -1: libvips' default */
    } filters[] = {{"default", -1},
                   {"none", VIPS_FOREIGN_PNG_FILTER_NONE},
                   {"sub", VIPS_FOREIGN_PNG_FILTER_SUB},
                   {"up", VIPS_FOREIGN_PNG_FILTER_UP},
                   {"avg", VIPS_FOREIGN_PNG_FILTER_AVG},
                   {"paeth", VIPS_FOREIGN_PNG_FILTER_PAETH},
                   {"all", VIPS_FOREIGN_PNG_FILTER_ALL}};
    for (int a = first; a < argc; a++) {
        VipsImage *file = vips_image_new_from_file(argv[a], "access", VIPS_ACCESS_RANDOM, NULL);
        VipsImage *img = file ? vips_image_copy_memory(file) : NULL; /* time the encode, not the decode */
        if (!img) {
            fprintf(stderr, "%s: %s\n", argv[a], vips_error_buffer());
            return 1;
        }
        size_t ref = 0;
        double ref_t = encode(img, 6, -1, reps, &ref);
        printf("%s: %dx%d, %d bands; level 6, default filter: %.3f s, %zu bytes\n", argv[a], img->Xsize,
               img->Ysize, img->Bands, ref_t, ref);
        printf("| level | filter | time | size vs level 6 |\n| --- | --- | --- | --- |\n");
        for (int level = -1; level <= 9; level++)
            for (size_t f = 1; f < sizeof filters / sizeof filters[0]; f++) {
                if ((level == -1 && f == 6) || (only_rle && level != -1 && !(level == 2 && f == 4)))
                    continue; /* "all" tries each filter on a row with the default strategy: no rle row */
                size_t n = 0;
                double t = encode(img, level, filters[f].value, reps, &n);
                if (t < 0) {
                    printf("| %d | %s | failed: %s | |\n", level, filters[f].name,
                           vips_error_buffer()); /* -1: rle */
                    vips_error_clear();
                    continue;
                }
                if (level < 0)
                    printf("| rle | %s | %.3f s | %.3f |\n", filters[f].name, t, (double)n / (double)ref);
                else
                    printf("| %d | %s | %.3f s | %.3f |\n", level, filters[f].name, t,
                           (double)n / (double)ref);
                fflush(stdout);
            }
        g_object_unref(img);
        g_object_unref(file);
    }
    vips_shutdown();
    return 0;
}
