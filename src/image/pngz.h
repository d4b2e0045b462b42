/*
 * pngz.h - the pixel data of a PNG compressed again with zlib's run-length
 * strategy (internal to src/image).
 *
 * libvips writes every chunk of our PNGs (header, profile, EXIF, XMP,
 * resolution) and filters the rows, but offers only zlib's default
 * strategy, whose string matching is most of an encode's time and finds
 * little in filtered photo rows. So image.c has libvips write the file
 * with the avg filter and no compression (level 0: stored blocks, a fast
 * copy), and pngz_recompress replaces its IDAT stream by the same bytes
 * deflated with Z_RLE: on upscaled photos and graphics 13-19% smaller than
 * level 2 and 1.1-1.2x faster in all (bench/png_levels.c, docs/benchmarks.md).
 * Every other chunk is kept byte for byte, in order.
 */
#ifndef UPRES_IMAGE_PNGZ_H
#define UPRES_IMAGE_PNGZ_H

#include <stddef.h>

#include "core/err.h"

/*
 * Recompress png (size bytes, a whole PNG file) into *out (new, free()),
 * *out_size bytes. UP_ERR_IMAGE when png is not a well-formed PNG or its
 * pixel data does not inflate; UP_ERR_NOMEM.
 */
int pngz_recompress(const void *png, size_t size, void **out, size_t *out_size, up_error_t *err);

#endif
