/*
 * blob_int.h - what the blob backends share, and nothing outside src/blob
 * includes: the table of functions a backend implements, the handle, the
 * heads of a writer and a reader, and the local backend's pieces another
 * backend reuses (its staging folder for uploads).
 *
 *   blob.c     key checks, the public functions, the sweep, the local
 *              directory backend
 *   blob_pg.c  the PostgreSQL backend (chunked tables)
 */
#ifndef UPRES_BLOB_BLOB_INT_H
#define UPRES_BLOB_BLOB_INT_H

#include <limits.h>

#include "blob/blob.h"

#define BLOB_TMP_MARK ".tmp-"       /* in a put's temporary name; no key contains it */
#define BLOB_UPLOAD_MARK ".upload-" /* leads a staged upload's name */

/* The functions a backend implements; the public functions have checked keys and arguments. */
typedef struct blob_backend_i {
    const char *name;
    int (*put_begin)(blob_store_t *bs, const char *key, blob_writer_t **out, up_error_t *err);
    int (*write)(blob_writer_t *w, const void *data, size_t size, up_error_t *err);
    int (*commit)(blob_writer_t *w, up_error_t *err); /* frees w, also on failure */
    void (*abort)(blob_writer_t *w);                  /* frees w */
    int (*put_file)(blob_store_t *bs, const char *key, const char *src, up_error_t *err);
    int (*open)(blob_store_t *bs, const char *key, blob_reader_t **out, blob_info_t *info, up_error_t *err);
    int (*read)(blob_reader_t *r, long long offset, void *buf, size_t size, size_t *n, up_error_t *err);
    void (*close)(blob_reader_t *r);
    int (*stat)(blob_store_t *bs, const char *key, blob_info_t *info, up_error_t *err);
    int (*remove)(blob_store_t *bs, const char *key, up_error_t *err);
    /* each entry directly under folder prefix: fn(name, is_temporary, info, ctx), which returns 0 to go on */
    int (*list)(blob_store_t *bs, const char *prefix,
                int (*fn)(const char *name, int is_temporary, const blob_info_t *info, void *ctx), void *ctx,
                up_error_t *err);
    int (*temporary_orphaned)(blob_store_t *bs, const char *name); /* 1: its writer is gone */
    int (*remove_temporary)(blob_store_t *bs, const char *prefix, const char *name, up_error_t *err);
    int (*path)(blob_store_t *bs, const char *key, char *buf, size_t size, up_error_t *err); /* NULL: none */
    void (*free)(blob_store_t *bs);
} blob_backend_i;

struct blob_store {
    const blob_backend_i *be;
    /* the local folder: the blobs themselves (local backend), or where uploads are staged and caches kept */
    char root[PATH_MAX];        /* absolute, no trailing '/' */
    char staging[PATH_MAX + 8]; /* root/uploads */
    int shared; /* the folder may be shared by other machines (blob_open_url's folder): a temporary's pid
                   says nothing here, only its age does */
    void *impl; /* another backend's own state */
};

/* The head of every backend's writer and reader (the public functions read only these). */
struct blob_writer {
    blob_store_t *bs;
};

struct blob_reader {
    blob_store_t *bs;
    long long size;
};

extern const blob_backend_i blob_local_backend;

/* Set bs's local folder to root (made, resolved to an absolute path) with uploads/ and results/ in it. */
int blob_local_setup(blob_store_t *bs, const char *root, up_error_t *err);

/* Fill err with UP_ERR_IO naming what (and path) and errno e, and leave errno e (507 or 503 hangs on it). */
int blob_io_error(up_error_t *err, int e, const char *what, const char *path);

/* The PostgreSQL backend over the database url, staging in the local folder local_root (blob_pg.c). */
int blob_open_pg(const char *url, const char *local_root, blob_store_t **out, up_error_t *err);

#endif
