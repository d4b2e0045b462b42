/*
 * blob.h - file storage behind one interface: the uploads, the results and
 * their temporaries, named by keys relative to a root. Two backends: a
 * local directory (blob.c; a shared mount makes it every machine's), and
 * PostgreSQL tables of 1 MiB chunks (blob_pg.c). The handle is opaque and
 * every call goes through its backend's table of functions (blob_int.h),
 * so a backend changes nothing above this header.
 *
 * Keys: rows in the store hold keys ("uploads/<id>.png",
 * "results/<id>-a1.png"), never file-system paths, so a record stays valid
 * whatever the working directory, and a later backend needs no paths at
 * all. A key is 1 to BLOB_KEY_MAX bytes of segments separated by '/': no
 * leading or trailing '/', no empty segment, no segment that starts with
 * '.' (no "." or "..", and hidden names are temporaries), no ".tmp-"
 * (the temporaries' mark), no NUL, backslash or control byte.
 *
 * Writes: a blob is written under a temporary name and renamed (committed)
 * when complete, so a reader never sees a partial blob under its key; an
 * aborted or crashed write leaves only a temporary, which the sweep
 * removes. A commit replaces a blob already under the key.
 *
 * Paths: a consumer that needs a file asks blob_local_file (libvips'
 * loaders: the local backend's own file, else a streamed copy), blob_path
 * (MHD's file response: the local backend's extra, UP_ERR_UNSUPPORTED
 * elsewhere, where the reply streams through a reader instead) and
 * blob_staging_dir (the HTTP layer's upload stream: a local folder in every
 * backend, from which blob_put_file moves or streams the file in).
 * Everything else goes through keys.
 *
 * Sweep: temporaries whose writer is gone (their name carries its pid) or
 * that are older than temp_age_s, and blobs that no row references and
 * that are older than orphan_age_s. Other live processes may share the
 * root (two `upres serve` on one data folder, `upres worker`s on several
 * machines over one shared folder): their temporaries are young or their
 * pid is alive, and a blob they just wrote is young, so both ages are
 * guards, not tuning. A pid is only meaningful on its own machine, so a
 * folder named by blob_open_url (--blobs: possibly a shared mount) has its
 * temporaries removed by age alone; the data folder's default one (one
 * machine) also by a dead pid.
 *
 * Thread safety: every function may be called from any thread; a writer or
 * a reader is used by one thread at a time.
 */
#ifndef UPRES_BLOB_BLOB_H
#define UPRES_BLOB_BLOB_H

#include <stddef.h>

#include "core/err.h"

#define BLOB_KEY_MAX 255 /* bytes of a key */

typedef struct blob_store blob_store_t;   /* a root with its backend */
typedef struct blob_writer blob_writer_t; /* a put under way */
typedef struct blob_reader blob_reader_t; /* an open blob */

typedef struct blob_info {
    long long size; /* bytes */
    double mtime;   /* Unix seconds of the last write (a commit, a put_file) */
} blob_info_t;

/*
 * 1 when the len bytes at key are a valid key (see the top of this file),
 * else 0. len counts every byte, so an embedded NUL is refused.
 */
int blob_key_check(const char *key, size_t len);
int blob_key_valid(const char *key); /* blob_key_check(key, strlen(key)); NULL: 0 */

/*
 * Open the local-directory backend over root (created if missing; a
 * relative root is made absolute against the working directory now, so
 * every later call is independent of it), with the folders uploads/ and
 * results/ made. *out is new (blob_close). UP_ERR_IO when root cannot be
 * made or resolved, UP_ERR_INVALID when it is too long.
 */
int blob_open_local(const char *root, blob_store_t **out, up_error_t *err);
void blob_close(blob_store_t *bs); /* accepts NULL */

/*
 * Open the blob store a URL names (the --blobs setting):
 *   NULL or ""          default_root (the data folder), local
 *   file:///ABS/DIR     the folder /ABS/DIR, local: a shared mount (NFS and
 *                       the like) gives every machine the same blobs
 *   DIR                 a folder's path (relative: to the working directory
 *                       now), local
 *   postgresql://...    PostgreSQL (libpq's URI forms; postgres:// too):
 *                       chunked tables in that database, made and migrated
 *                       here; default_root stages uploads and keeps caches
 *   postgresql:         the same in store_url's database (the job store's
 *                       URL; UP_ERR_INVALID when it is not PostgreSQL)
 * Any other scheme is UP_ERR_UNSUPPORTED (the message names the forms);
 * "file://HOST/..." is UP_ERR_INVALID; a database that cannot be reached
 * UP_ERR_IO. Else as blob_open_local. *out is new.
 */
int blob_open_url(const char *url, const char *default_root, const char *store_url, blob_store_t **out,
                  up_error_t *err);

/* Check url's form as blob_open_url would, opening nothing (a setting's check; the message names url). */
int blob_url_check(const char *url, up_error_t *err);

/*
 * The backend's name ("local", "postgresql"), and its local folder as an
 * absolute path (borrowed): the blobs' own folder for the local backend,
 * the staging and cache folder (the data folder) for the others.
 */
const char *blob_backend_name(const blob_store_t *bs);
const char *blob_root(const blob_store_t *bs);

/*
 * Streamed put: begin (a temporary, invisible under key), write any number
 * of times, then commit (renamed to key: visible whole) or abort (the
 * temporary removed). *out is new and is freed by commit or abort, whatever
 * they return; abort accepts NULL. A failed write leaves the writer to
 * abort. UP_ERR_INVALID for a bad key; UP_ERR_IO with errno kept (ENOSPC
 * tells 507 from 503).
 */
int blob_put_begin(blob_store_t *bs, const char *key, blob_writer_t **out, up_error_t *err);
int blob_write(blob_writer_t *w, const void *data, size_t size, up_error_t *err);
int blob_commit(blob_writer_t *w, up_error_t *err);
void blob_abort(blob_writer_t *w);

/* begin, one write of data (borrowed), commit; nothing left under key or as a temporary on failure. */
int blob_put(blob_store_t *bs, const char *key, const void *data, size_t size, up_error_t *err);

/*
 * Move the file at src (a path, taken over: it is gone afterwards, also on
 * failure) into key. src must be a file written in blob_staging_dir (the
 * local backend renames it: no copy, no partial blob; PostgreSQL streams
 * it into chunks, then removes it); its time becomes now, so the sweep's
 * orphan age counts from the put. Errors as blob_put,
 * errno kept.
 */
int blob_put_file(blob_store_t *bs, const char *key, const char *src, up_error_t *err);

/*
 * Open key for reading; *out is new (blob_reader_close), *info (may be
 * NULL) gets its size and time. UP_ERR_NOT_FOUND when there is none.
 */
int blob_open(blob_store_t *bs, const char *key, blob_reader_t **out, blob_info_t *info, up_error_t *err);

/*
 * Read up to size bytes from offset into buf; *n = bytes read, less than
 * size only at the end of the blob (0 at offset == its size). UP_ERR_INVALID
 * for a negative offset or one past the end.
 */
int blob_reader_read(blob_reader_t *r, long long offset, void *buf, size_t size, size_t *n, up_error_t *err);
void blob_reader_close(blob_reader_t *r); /* accepts NULL */

/* open, read a range, close: the bytes [offset, offset + size) of key, *n as blob_reader_read. */
int blob_read(blob_store_t *bs, const char *key, long long offset, void *buf, size_t size, size_t *n,
              up_error_t *err);

/* Size and time of key into *info. UP_ERR_NOT_FOUND when there is none. */
int blob_stat(blob_store_t *bs, const char *key, blob_info_t *info, up_error_t *err);

/*
 * A local file that holds key's bytes, its path into buf (size bytes), for
 * a consumer that needs a file (libvips' loaders). The local backend: the
 * blob's own file (*temporary = 0). Another: a copy streamed into a new
 * file in blob_staging_dir (*temporary = 1), named as a staged upload so
 * that the sweep removes it if the process dies; the caller unlinks it
 * when done. UP_ERR_NOT_FOUND when there is no blob; UP_ERR_IO (errno
 * kept) when the copy cannot be written.
 */
int blob_local_file(blob_store_t *bs, const char *key, char *buf, size_t size, int *temporary,
                    up_error_t *err);

/*
 * Delete key. 0 when deleted, UP_ERR_NOT_FOUND when there was none (most
 * callers take both as done), UP_ERR_IO (logged) when it could not be.
 */
int blob_delete(blob_store_t *bs, const char *key, up_error_t *err);

/*
 * The local backend's extra: the file that holds key, into buf (size
 * bytes), whether or not it exists now. UP_ERR_UNSUPPORTED from a backend
 * without local files, UP_ERR_INVALID for a bad key or a small buf.
 */
int blob_path(blob_store_t *bs, const char *key, char *buf, size_t size, up_error_t *err);

/*
 * A local folder (borrowed, absolute) where a caller writes a file it
 * hands to blob_put_file (the HTTP layer's upload stream). Its files must
 * be named ".upload-<pid>-..." (or ".upload-..." with no pid: removed by
 * age only) so that the sweep of "uploads" knows them as temporaries.
 */
const char *blob_staging_dir(blob_store_t *bs);

typedef struct blob_sweep_opts {
    const char *const *prefixes; /* NULL-terminated folders swept ("uploads", "results"); never the root */
    double temp_age_s;           /* temporaries older than this go whatever their pid says; default 3600 */
    double orphan_age_s;         /* unreferenced blobs older than this go; default 300 */
    /* 1 when a row references key; NULL: the orphans are left alone (only temporaries are swept) */
    int (*referenced)(const char *key, void *ctx);
    void *ctx;
    double now; /* Unix seconds; 0 = the clock's */
} blob_sweep_opts_t;

typedef struct blob_sweep_stats {
    int n_temporaries; /* temporaries removed */
    int n_orphans;     /* unreferenced blobs removed */
    int n_kept;        /* blobs kept (referenced, or too young to judge) */
} blob_sweep_stats_t;

void blob_sweep_opts_init(blob_sweep_opts_t *o); /* the defaults above, no prefixes, no referenced */

/*
 * Remove what nobody will ever read (see the top of this file). Files
 * directly under each prefix are looked at; anything else under the root
 * (the database, the secret) never. *stats (may be NULL) gets the counts.
 * A file that cannot be removed is logged and left.
 */
int blob_sweep(blob_store_t *bs, const blob_sweep_opts_t *o, blob_sweep_stats_t *stats, up_error_t *err);

#endif
