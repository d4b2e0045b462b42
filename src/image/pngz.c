/*
 * pngz.c - a PNG's pixel data deflated again with Z_RLE (see pngz.h).
 *
 * One pass over the chunks: everything before the first IDAT is copied,
 * the IDAT run is inflated piece by piece and each piece deflated at once
 * (so the filtered rows are never held whole), and the chunks after it
 * are copied. The new data goes out in IDAT chunks of at most IDAT_MAX
 * bytes, each with its CRC.
 */
#include "image/pngz.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define IDAT_MAX (1u << 20) /* bytes of data per IDAT chunk written */
#define PIECE (256u << 10)  /* inflated bytes handed to deflate at a time */

static const uint8_t SIGNATURE[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* A growing output buffer; the first failed allocation sticks. */
typedef struct obuf {
    uint8_t *p;
    size_t n, cap;
    int failed;
} obuf_t;

static uint8_t *obuf_reserve(obuf_t *b, size_t more) {
    if (b->failed)
        return NULL;
    if (b->cap - b->n < more) {
        size_t cap = b->cap ? b->cap : 1u << 16;
        while (cap - b->n < more)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return NULL;
        }
        b->p = p;
        b->cap = cap;
    }
    return b->p + b->n;
}

static void obuf_put(obuf_t *b, const void *data, size_t n) {
    uint8_t *p = obuf_reserve(b, n);
    if (p) {
        memcpy(p, data, n);
        b->n += n;
    }
}

/* One chunk: length, type, data, CRC of type and data. */
static void put_chunk(obuf_t *b, const char *type, const uint8_t *data, size_t n) {
    uint8_t *p = obuf_reserve(b, 12 + n);
    if (!p)
        return;
    put32(p, (uint32_t)n);
    memcpy(p + 4, type, 4);
    memcpy(p + 8, data, n);
    put32(p + 8 + n, (uint32_t)crc32(crc32(0, p + 4, 4), data, (uInt)n));
    b->n += 12 + n;
}

/* Deflate what z holds as input (flush: Z_NO_FLUSH or Z_FINISH) onto pending (the data not yet in a chunk),
 * writing full IDAT chunks to out as they fill. 0; -1 on a zlib error; -2 out of memory. */
static int deflate_into(z_stream *z, int flush, obuf_t *pending, obuf_t *out) {
    int zr;
    do {
        uint8_t *p = obuf_reserve(pending, PIECE);
        if (!p)
            return -2;
        z->next_out = p;
        z->avail_out = PIECE;
        zr = deflate(z, flush);
        if (zr == Z_STREAM_ERROR)
            return -1;
        pending->n += PIECE - z->avail_out;
        while (pending->n >= IDAT_MAX || (zr == Z_STREAM_END && pending->n > 0)) {
            size_t n = pending->n < IDAT_MAX ? pending->n : IDAT_MAX;
            put_chunk(out, "IDAT", pending->p, n);
            memmove(pending->p, pending->p + n, pending->n - n);
            pending->n -= n;
        }
    } while (z->avail_out == 0 || (flush == Z_FINISH && zr != Z_STREAM_END));
    return out->failed ? -2 : 0;
}

int pngz_recompress(const void *png, size_t size, void **out, size_t *out_size, up_error_t *err) {
    const uint8_t *s = png;
    *out = NULL;
    *out_size = 0;
    if (size < 8 || memcmp(s, SIGNATURE, 8) != 0)
        return up_error_set(err, UP_ERR_IMAGE, 0, "not a PNG file");
    obuf_t o = {0}, pending = {0};
    uint8_t *piece = malloc(PIECE);
    z_stream in = {0}, def = {0};
    int in_ok = inflateInit(&in) == Z_OK;
    int def_ok = deflateInit2(&def, 1, Z_DEFLATED, 15, 9, Z_RLE) == Z_OK;
    const char *bad = NULL;
    if (!piece || !in_ok || !def_ok) {
        o.failed = 1;
        goto done;
    }
    obuf_put(&o, s, 8);
    /* idat: 0 before the IDAT run, 1 inside it, 2 after it */
    int idat = 0, ended = 0;
    size_t i = 8;
    while (i < size && !o.failed && !bad) {
        if (size - i < 12) {
            bad = "a chunk is cut short";
            break;
        }
        uint32_t n = get32(s + i);
        if (n > 0x7fffffffu || size - i - 12 < n) {
            bad = "a chunk is longer than the file";
            break;
        }
        const uint8_t *type = s + i + 4, *data = s + i + 8;
        int is_idat = memcmp(type, "IDAT", 4) == 0;
        if (is_idat && idat == 2) {
            bad = "its IDAT chunks are not consecutive";
            break;
        }
        if (!is_idat && idat == 1) { /* the run is over: finish the new stream before this chunk */
            if (!ended) {
                bad = "its pixel data ends early";
                break;
            }
            int rc = deflate_into(&def, Z_FINISH, &pending, &o);
            if (rc) {
                o.failed |= rc == -2;
                bad = rc == -1 ? "zlib failed" : NULL;
                break;
            }
            idat = 2;
        }
        if (is_idat) {
            idat = 1;
            if (ended && n > 0) {
                bad = "bytes follow its pixel data";
                break;
            }
            in.next_in = (Bytef *)data;
            in.avail_in = n;
            /* until this chunk is used up and inflate has nothing more to give, or the stream ends */
            while (!ended && (in.avail_in > 0 || in.avail_out == 0)) {
                in.next_out = piece;
                in.avail_out = PIECE;
                int zr = inflate(&in, Z_NO_FLUSH);
                if (zr != Z_OK && zr != Z_STREAM_END && !(zr == Z_BUF_ERROR && in.avail_in == 0)) {
                    bad = "its pixel data does not inflate";
                    break;
                }
                ended = zr == Z_STREAM_END;
                def.next_in = piece;
                def.avail_in = PIECE - in.avail_out;
                int rc = deflate_into(&def, Z_NO_FLUSH, &pending, &o);
                if (rc) {
                    o.failed |= rc == -2;
                    bad = rc == -1 ? "zlib failed" : NULL;
                    break;
                }
                if (zr == Z_BUF_ERROR)
                    break; /* nothing more until the next chunk */
            }
            if (in.avail_in > 0 && ended && !bad)
                bad = "bytes follow its pixel data";
        } else {
            obuf_put(&o, s + i, 12 + (size_t)n);
        }
        i += 12 + (size_t)n;
    }
    if (!bad && idat != 2)
        bad = idat == 0 ? "it has no IDAT chunk" : "it ends inside its pixel data";
done:
    if (o.failed || pending.failed) {
        free(o.p);
        o.p = NULL;
        if (!bad)
            up_error_set(err, UP_ERR_NOMEM, 0, "cannot allocate memory to compress a PNG");
    }
    if (bad) {
        free(o.p);
        o.p = NULL;
        up_error_set(err, UP_ERR_IMAGE, 0, "cannot compress the PNG: %s", bad);
    }
    free(pending.p);
    free(piece);
    if (in_ok)
        inflateEnd(&in);
    if (def_ok)
        deflateEnd(&def);
    if (!o.p)
        return bad ? UP_ERR_IMAGE : UP_ERR_NOMEM;
    *out = o.p;
    *out_size = o.n;
    return 0;
}
