/*
 * image_fuzz.c - fuzz target for image decoding from memory
 * (image_load_buffer, src/image/image.c): the format sniffing, the header
 * read and the pixel-limit check that come before any decoding, then the
 * decode and conversion of the small images that pass. The input is the
 * file, whole. The limit is small (IMAGE_FUZZ_MAX_PIXELS) so that one run
 * stays fast: a header that claims a large image must be refused from the
 * header alone, and the fuzzer spends its time in headers, not in decoding.
 *
 * The contract of image_load_buffer is checked, not only that it does not
 * crash: on success an image within the limit with 1..4 bands of 8 or 16
 * bits and a source format; on failure no image, err->code the code
 * returned, a message, and only the codes a buffer may give. A GIF or
 * WebP (the formats with frames) goes through image_load_buffer_frames
 * too, for up to FRAMES frames: the same contract, and 1 <= n_pages <=
 * min(FRAMES, n_frames), all the frames together within the pixel limit,
 * a delay for each frame when there are several.
 *
 * Seeds: tests/fuzz/seeds/image (tiny png, jpg, webp, gif and tiff files,
 * an animated gif of 3 frames, and one png over the limit). In ctest through driver.c; coverage-guided
 * with libFuzzer: tests/fuzz/run.sh 60 image.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image/image.h"

#define IMAGE_FUZZ_MAX_PIXELS 4096 /* 64x64: one decode is quick */
#define IMAGE_FUZZ_MAX_SIZE 65536  /* bytes of one input */
#define FRAMES 3                   /* frames the frame loader is asked for */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The contract of a load that returned rc with *img (see the top of this file); aborts when broken. */
static void check_load(int rc, up_image_t *img, const up_image_t *unset, const up_error_t *err,
                       int max_pages) {
    if (rc == 0) {
        if (img == unset)
            abort();
        int pages = img ? (img->n_pages > 0 ? img->n_pages : 1) : 0;
        if (!img || !img->pixels || img->width < 1 || img->height < 1 ||
            (uint64_t)img->width * (uint64_t)img->height * (uint64_t)pages > IMAGE_FUZZ_MAX_PIXELS ||
            img->bands < 1 || img->bands > 4 || (img->depth != 8 && img->depth != 16) || !img->format[0] ||
            memchr(img->format, '\0', sizeof img->format) == NULL || pages > max_pages ||
            pages > (img->n_frames > 0 ? img->n_frames : 1) || (pages > 1 && !img->delays))
            abort();
        /* every sample is there, of every frame: ASan sees a buffer shorter than its size */
        const unsigned char *p = img->pixels;
        size_t n = image_size(img) * (size_t)pages;
        volatile unsigned char sum = 0;
        sum ^= p[0];
        sum ^= p[n - 1];
        for (int i = 1; i < pages; i++)
            sum ^= (unsigned char)img->delays[i];
        (void)sum;
        image_free(img);
    } else {
        if (img != NULL || err->code != rc || !err->msg[0] || memchr(err->msg, '\0', sizeof err->msg) == NULL)
            abort();
        if (rc != UP_ERR_IMAGE && rc != UP_ERR_TOO_LARGE && rc != UP_ERR_NOMEM)
            abort(); /* NOT_FOUND and IO are for files only */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > IMAGE_FUZZ_MAX_SIZE)
        return 0;
    const image_limits_t lim = {.max_pixels = IMAGE_FUZZ_MAX_PIXELS};
    static up_image_t unset; /* a load must replace it: with NULL on failure */
    up_image_t *img = &unset;
    up_error_t err;
    memset(&err, 0, sizeof err);
    int rc = image_load_buffer(data, size, &lim, &img, &err);
    check_load(rc, img, &unset, &err, 1);
    int framed = (size >= 4 && !memcmp(data, "GIF8", 4)) || (size >= 12 && !memcmp(data + 8, "WEBP", 4));
    if (framed) {
        img = &unset;
        memset(&err, 0, sizeof err);
        rc = image_load_buffer_frames(data, size, &lim, FRAMES, &img, &err);
        check_load(rc, img, &unset, &err, FRAMES);
    }
    return 0;
}
