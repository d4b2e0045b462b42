/*
 * blob.c - file storage (see blob.h): key checks, the public functions,
 * which check their arguments and call the backend's table, the sweep,
 * and the local directory backend (blob_pg.c is the other; blob_int.h).
 *
 * DESIGN
 *
 * Backends: struct blob_store starts with its table (blob_backend_i); the
 * public functions know nothing else of it. The local backend keeps an
 * absolute root, resolved once at open (realpath), so a relative data
 * folder given at start means the same folder for the whole life of the
 * process, and keys never depend on the working directory.
 *
 * Local files: key K is the file <root>/K. A put writes
 * <root>/K.tmp-<pid>-<n> (O_EXCL), fsyncs it and renames it to K; a
 * staged upload (<root>/uploads/.upload-<pid>-XXXXXX, written by the HTTP
 * layer) gets its time set to now, is fsynced and renamed the same way.
 * Both temporaries carry the writer's pid, so the sweep removes a dead
 * process's temporary at once and a live one's only past temp_age_s (pids
 * are reused: pid 1 in every container). Names are classified by the
 * marks that keys cannot contain (blob_key_check): ".tmp-" anywhere or a
 * leading ".upload-" is a temporary; other hidden names are not ours and
 * are left alone.
 *
 * Sweep order: the caller reads which keys rows reference before the
 * sweep lists the folders; a blob put and recorded after that read is
 * younger than orphan_age_s, so it is kept. Deleting while readdir walks a
 * folder is allowed (POSIX: the entry may or may not be returned).
 */
#include "blob/blob.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/fileio.h"
#include "blob/blob_int.h"
#include "core/log.h"
#include "core/xmalloc.h"

#define TMP_MARK BLOB_TMP_MARK
#define UPLOAD_MARK BLOB_UPLOAD_MARK
#define PATH_BYTES (PATH_MAX + 64) /* a root, a key and a temporary suffix */

typedef struct local_writer {
    blob_writer_t base;
    int fd;
    char tmp[PATH_BYTES];
    char dst[PATH_BYTES];
} local_writer_t;

typedef struct local_reader {
    blob_reader_t base;
    int fd;
} local_reader_t;

/* ---- keys ----------------------------------------------------------------------- */

int blob_key_check(const char *key, size_t len) {
    if (!key || len == 0 || len > BLOB_KEY_MAX)
        return 0;
    size_t seg = 0; /* start of the current segment */
    for (size_t i = 0; i <= len; i++) {
        if (i == len || key[i] == '/') {
            if (i == seg || key[seg] == '.') /* empty, ".", "..", hidden */
                return 0;
            seg = i + 1;
            continue;
        }
        unsigned char c = (unsigned char)key[i];
        if (c < 0x20 || c == 0x7F || c == '\\')
            return 0; /* NUL and other control bytes */
    }
    return memmem(key, len, TMP_MARK, strlen(TMP_MARK)) == NULL;
}

int blob_key_valid(const char *key) { return key && blob_key_check(key, strlen(key)); }

static int bad_key(const char *key, up_error_t *err) {
    return up_error_set(err, UP_ERR_INVALID, 0, "invalid blob key '%.300s'", key ? key : "(null)");
}

int blob_io_error(up_error_t *err, int e, const char *what, const char *path) {
    char ebuf[128];
    int rc = up_error_set(err, UP_ERR_IO, 0, "%s %.600s: %s", what, path, strerror_r(e, ebuf, sizeof ebuf));
    errno = e;
    return rc;
}

/* ---- the local backend ---------------------------------------------------------------- */

static int local_path(blob_store_t *bs, const char *key, char *buf, size_t size, up_error_t *err) {
    int n = snprintf(buf, size, "%s/%s", bs->root, key);
    if (n < 0 || (size_t)n >= size)
        return up_error_set(err, UP_ERR_INVALID, 0, "blob path too long for key '%.300s'", key);
    return UP_OK;
}

/* Make the folders above the file at path (those below the root); 0 or errno. */
static int make_parents(blob_store_t *bs, const char *path) {
    char dir[PATH_BYTES];
    snprintf(dir, sizeof dir, "%s", path);
    for (char *p = dir + strlen(bs->root) + 1; (p = strchr(p, '/')); p++) {
        *p = '\0';
        if (mkdir(dir, 0777) && errno != EEXIST)
            return errno;
        *p = '/';
    }
    return 0;
}

static int local_put_begin(blob_store_t *bs, const char *key, blob_writer_t **out, up_error_t *err) {
    static atomic_uint seq;
    local_writer_t *w = xcalloc(1, sizeof *w);
    w->base.bs = bs;
    w->fd = -1;
    int e, rc = local_path(bs, key, w->dst, sizeof w->dst, err);
    if (rc)
        goto fail;
    int n = snprintf(w->tmp, sizeof w->tmp, "%s" TMP_MARK "%ld-%u", w->dst, (long)getpid(),
                     atomic_fetch_add(&seq, 1));
    if (n < 0 || (size_t)n >= sizeof w->tmp) {
        rc = up_error_set(err, UP_ERR_INVALID, 0, "blob path too long for key '%.300s'", key);
        goto fail;
    }
    if ((e = make_parents(bs, w->dst))) {
        rc = blob_io_error(err, e, "cannot make the folder of", w->dst);
        goto fail;
    }
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        rc = blob_io_error(err, errno, "cannot create", w->tmp);
        goto fail;
    }
    *out = &w->base;
    return UP_OK;
fail:
    e = errno;
    free(w);
    errno = e;
    return rc;
}

static int local_write(blob_writer_t *base, const void *data, size_t size, up_error_t *err) {
    local_writer_t *w = (local_writer_t *)base;
    if (write_all(w->fd, data, size))
        return blob_io_error(err, errno, "cannot write", w->tmp);
    return UP_OK;
}

static void local_abort(blob_writer_t *base) {
    local_writer_t *w = (local_writer_t *)base;
    int e = errno;
    if (w->fd >= 0)
        close(w->fd);
    unlink(w->tmp);
    free(w);
    errno = e;
}

static int local_commit(blob_writer_t *base, up_error_t *err) {
    local_writer_t *w = (local_writer_t *)base;
    int rc = UP_OK;
    /* the bytes are on disk before the name says they are there */
    if (fsync(w->fd)) {
        rc = blob_io_error(err, errno, "cannot write", w->tmp);
        goto fail;
    }
    int fd = w->fd;
    w->fd = -1;
    if (close(fd)) {
        rc = blob_io_error(err, errno, "cannot write", w->tmp);
        goto fail;
    }
    if (rename(w->tmp, w->dst)) {
        rc = blob_io_error(err, errno, "cannot rename into", w->dst);
        goto fail;
    }
    free(w);
    return UP_OK;
fail:
    local_abort(base); /* keeps errno */
    return rc;
}

static int local_put_file(blob_store_t *bs, const char *key, const char *src, up_error_t *err) {
    char dst[PATH_BYTES];
    int rc = local_path(bs, key, dst, sizeof dst, err), e = 0;
    if (rc) {
        e = EINVAL;
        goto fail;
    }
    /* now, not when the upload's last byte came: the orphan age counts from the put */
    int fd = open(src, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || futimens(fd, NULL) || fsync(fd)) {
        e = errno;
        if (fd >= 0)
            close(fd);
        rc = blob_io_error(err, e, "cannot store", src);
        goto fail;
    }
    close(fd);
    if ((e = make_parents(bs, dst)) || (rename(src, dst) && (e = errno))) {
        rc = blob_io_error(err, e, "cannot rename into", dst);
        goto fail;
    }
    return UP_OK;
fail:
    unlink(src); /* taken over: gone on failure too */
    errno = e;
    return rc;
}

static void info_of(const struct stat *sb, blob_info_t *info) {
    info->size = (long long)sb->st_size;
    info->mtime = (double)sb->st_mtim.tv_sec + (double)sb->st_mtim.tv_nsec * 1e-9;
}

static int local_open(blob_store_t *bs, const char *key, blob_reader_t **out, blob_info_t *info,
                      up_error_t *err) {
    char path[PATH_BYTES];
    int rc = local_path(bs, key, path, sizeof path, err);
    if (rc)
        return rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT || errno == ENOTDIR
                   ? up_error_set(err, UP_ERR_NOT_FOUND, 0, "no blob '%.300s'", key)
                   : blob_io_error(err, errno, "cannot open", path);
    struct stat sb = {0};
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        int e = errno;
        close(fd);
        return S_ISREG(sb.st_mode) ? blob_io_error(err, e, "cannot stat", path)
                                   : up_error_set(err, UP_ERR_NOT_FOUND, 0, "no blob '%.300s'", key);
    }
    local_reader_t *r = xcalloc(1, sizeof *r);
    r->base.bs = bs;
    r->base.size = (long long)sb.st_size;
    r->fd = fd;
    if (info)
        info_of(&sb, info);
    *out = &r->base;
    return UP_OK;
}

static int local_read(blob_reader_t *base, long long offset, void *buf, size_t size, size_t *n,
                      up_error_t *err) {
    local_reader_t *r = (local_reader_t *)base;
    size_t got = 0;
    while (got < size) {
        ssize_t k = pread(r->fd, (char *)buf + got, size - got, (off_t)(offset + (long long)got));
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return blob_io_error(err, errno, "cannot read", "a blob");
        if (k == 0)
            break;
        got += (size_t)k;
    }
    *n = got;
    return UP_OK;
}

static void local_close(blob_reader_t *base) {
    local_reader_t *r = (local_reader_t *)base;
    close(r->fd);
    free(r);
}

static int local_stat(blob_store_t *bs, const char *key, blob_info_t *info, up_error_t *err) {
    char path[PATH_BYTES];
    int rc = local_path(bs, key, path, sizeof path, err);
    if (rc)
        return rc;
    struct stat sb;
    if (stat(path, &sb))
        return errno == ENOENT || errno == ENOTDIR
                   ? up_error_set(err, UP_ERR_NOT_FOUND, 0, "no blob '%.300s'", key)
                   : blob_io_error(err, errno, "cannot stat", path);
    if (!S_ISREG(sb.st_mode))
        return up_error_set(err, UP_ERR_NOT_FOUND, 0, "no blob '%.300s' (not a file)", key);
    info_of(&sb, info);
    return UP_OK;
}

static int unlink_path(const char *path, const char *what, up_error_t *err) {
    if (unlink(path) == 0)
        return UP_OK;
    if (errno == ENOENT)
        return up_error_set(err, UP_ERR_NOT_FOUND, 0, "no %s %.600s", what, path);
    return blob_io_error(err, errno, "cannot delete", path);
}

static int local_remove(blob_store_t *bs, const char *key, up_error_t *err) {
    char path[PATH_BYTES];
    int rc = local_path(bs, key, path, sizeof path, err);
    return rc ? rc : unlink_path(path, "blob", err);
}

static int is_temporary(const char *name) {
    return strncmp(name, UPLOAD_MARK, strlen(UPLOAD_MARK)) == 0 || strstr(name, TMP_MARK) != NULL;
}

static int local_list(blob_store_t *bs, const char *prefix,
                      int (*fn)(const char *name, int is_temporary, const blob_info_t *info, void *ctx),
                      void *ctx, up_error_t *err) {
    char dir[PATH_BYTES], path[PATH_BYTES + 256];
    int rc = local_path(bs, prefix, dir, sizeof dir, err);
    if (rc)
        return rc;
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? UP_OK : blob_io_error(err, errno, "cannot list", dir);
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *name = e->d_name;
        int tmp = is_temporary(name);
        if (name[0] == '.' && !tmp)
            continue; /* ".", "..", and hidden names that are not ours */
        snprintf(path, sizeof path, "%s/%s", dir, name);
        struct stat sb;
        if (lstat(path, &sb) || !S_ISREG(sb.st_mode))
            continue;
        blob_info_t info;
        info_of(&sb, &info);
        if (fn(name, tmp, &info, ctx))
            break;
    }
    closedir(d);
    return UP_OK;
}

/* The pid in a temporary's name (".upload-<pid>-..." or "...tmp-<pid>-..."), or 0 when it has none. */
static long temporary_pid(const char *name) {
    const char *p = strncmp(name, UPLOAD_MARK, strlen(UPLOAD_MARK)) == 0 ? name + strlen(UPLOAD_MARK) : NULL;
    if (!p && (p = strstr(name, TMP_MARK)))
        p += strlen(TMP_MARK);
    if (!p || *p < '1' || *p > '9')
        return 0;
    char *end;
    long pid = strtol(p, &end, 10);
    return *end == '-' && pid > 0 ? pid : 0; /* mkstemp's letters never make "<digits>-" */
}

static int local_temporary_orphaned(blob_store_t *bs, const char *name) {
    if (bs->shared)
        return 0;
    long pid = temporary_pid(name);
    return pid > 0 && pid != (long)getpid() && kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

static int local_remove_temporary(blob_store_t *bs, const char *prefix, const char *name, up_error_t *err) {
    char path[PATH_BYTES + 256];
    int n = snprintf(path, sizeof path, "%s/%s/%s", bs->root, prefix, name);
    if (n < 0 || (size_t)n >= sizeof path)
        return up_error_set(err, UP_ERR_INVALID, 0, "temporary path too long");
    return unlink_path(path, "temporary", err);
}

static void local_free(blob_store_t *bs) { free(bs); }

const blob_backend_i blob_local_backend = {
    .name = "local",
    .put_begin = local_put_begin,
    .write = local_write,
    .commit = local_commit,
    .abort = local_abort,
    .put_file = local_put_file,
    .open = local_open,
    .read = local_read,
    .close = local_close,
    .stat = local_stat,
    .remove = local_remove,
    .list = local_list,
    .temporary_orphaned = local_temporary_orphaned,
    .remove_temporary = local_remove_temporary,
    .path = local_path,
    .free = local_free,
};

int blob_local_setup(blob_store_t *bs, const char *root, up_error_t *err) {
    if (!*root)
        return up_error_set(err, UP_ERR_INVALID, 0, "blob store: no root folder");
    if (mkdir(root, 0777) && errno != EEXIST)
        return blob_io_error(err, errno, "blob store: cannot create the folder", root);
    char abs[PATH_MAX];
    if (!realpath(root, abs))
        return blob_io_error(err, errno, "blob store: cannot resolve the folder", root);
    snprintf(bs->root, sizeof bs->root, "%s", abs);
    snprintf(bs->staging, sizeof bs->staging, "%s/uploads", abs);
    static const char *const folders[] = {"uploads", "results"};
    for (size_t i = 0; i < sizeof folders / sizeof *folders; i++) {
        char dir[PATH_BYTES];
        snprintf(dir, sizeof dir, "%s/%s", abs, folders[i]);
        struct stat sb;
        errno = 0;
        if ((mkdir(dir, 0777) && errno != EEXIST) || stat(dir, &sb) || !S_ISDIR(sb.st_mode))
            return blob_io_error(err, errno ? errno : ENOTDIR, "blob store: cannot create the folder", dir);
    }
    return UP_OK;
}

int blob_open_local(const char *root, blob_store_t **out, up_error_t *err) {
    assert(root && out);
    *out = NULL;
    blob_store_t *bs = xcalloc(1, sizeof *bs);
    bs->be = &blob_local_backend;
    int rc = blob_local_setup(bs, root, err);
    if (rc) {
        free(bs);
        return rc;
    }
    *out = bs;
    return UP_OK;
}

/* A blob URL's kinds (see blob.h, blob_open_url). */
enum { URL_DEFAULT, URL_FOLDER, URL_PG };

static int is_pg_scheme(const char *url, size_t scheme_len) {
    return (scheme_len == 10 && strncmp(url, "postgresql", 10) == 0) ||
           (scheme_len == 8 && strncmp(url, "postgres", 8) == 0);
}

/*
 * What a blob URL names (see blob.h): *kind, and *rest, the folder's path
 * or the database URL ("" for the bare "postgresql:"), borrowed from url.
 * The refusals of blob_open_url.
 */
static int parse_url(const char *url, int *kind, const char **rest, up_error_t *err) {
    static const char forms[] = "file:///ABSOLUTE/DIR, a folder's path, postgresql: or postgresql://...";
    *kind = URL_DEFAULT;
    *rest = NULL;
    if (!url || !*url)
        return UP_OK;
    size_t scheme_len = strspn(url, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.");
    if (scheme_len == 0 || url[scheme_len] != ':' || url[0] == '.') { /* no scheme: a path */
        *kind = URL_FOLDER;
        *rest = url;
        return UP_OK;
    }
    if (scheme_len == 4 && strncmp(url, "file", 4) == 0) {
        if (strncmp(url + 5, "///", 3) != 0)
            return up_error_set(err, UP_ERR_INVALID, 0,
                                "bad blobs '%.300s': %s expected (three slashes before an absolute path)",
                                url, forms);
        *kind = URL_FOLDER;
        *rest = url + 7;
        return UP_OK;
    }
    if (is_pg_scheme(url, scheme_len)) {
        const char *after = url + scheme_len + 1;
        if (*after && strncmp(after, "//", 2) != 0)
            return up_error_set(err, UP_ERR_INVALID, 0,
                                "bad blobs '%.300s': postgresql: (the store's database) or postgresql://... "
                                "expected",
                                url);
        *kind = URL_PG;
        *rest = *after ? url : "";
        return UP_OK;
    }
    int shown = scheme_len > 40 ? 40 : (int)scheme_len;
    return up_error_set(err, UP_ERR_UNSUPPORTED, 0,
                        "bad blobs '%.300s': no %.*s blob store in this build (%s)", url, shown, url, forms);
}

int blob_url_check(const char *url, up_error_t *err) {
    int kind;
    const char *rest;
    return parse_url(url, &kind, &rest, err);
}

int blob_open_url(const char *url, const char *default_root, const char *store_url, blob_store_t **out,
                  up_error_t *err) {
    assert(out && default_root);
    *out = NULL;
    int kind;
    const char *rest;
    int rc = parse_url(url, &kind, &rest, err);
    if (rc)
        return rc;
    switch (kind) {
    case URL_DEFAULT: return blob_open_local(default_root, out, err);
    case URL_FOLDER:
        rc = blob_open_local(rest, out, err);
        if (!rc)
            (*out)->shared = 1;
        return rc;
    default: /* URL_PG */
        if (!*rest) {
            size_t n = store_url ? strcspn(store_url, ":") : 0;
            if (!store_url || !is_pg_scheme(store_url, n) || store_url[n] != ':')
                return up_error_set(
                    err, UP_ERR_INVALID, 0,
                    "blobs postgresql: keeps the blobs in the store's database, and the store "
                    "is not on PostgreSQL: give --blobs postgresql://... or a folder");
            rest = store_url;
        }
        return blob_open_pg(rest, default_root, out, err);
    }
}

/* ---- the public functions ---------------------------------------------------------- */

void blob_close(blob_store_t *bs) {
    if (bs)
        bs->be->free(bs);
}

const char *blob_backend_name(const blob_store_t *bs) { return bs->be->name; }
const char *blob_root(const blob_store_t *bs) { return bs->root; }

int blob_put_begin(blob_store_t *bs, const char *key, blob_writer_t **out, up_error_t *err) {
    assert(bs && out);
    *out = NULL;
    if (!blob_key_valid(key))
        return bad_key(key, err);
    return bs->be->put_begin(bs, key, out, err);
}

int blob_write(blob_writer_t *w, const void *data, size_t size, up_error_t *err) {
    assert(w && (data || !size));
    return w->bs->be->write(w, data, size, err);
}

int blob_commit(blob_writer_t *w, up_error_t *err) {
    assert(w);
    return w->bs->be->commit(w, err);
}

void blob_abort(blob_writer_t *w) {
    if (w)
        w->bs->be->abort(w);
}

int blob_put(blob_store_t *bs, const char *key, const void *data, size_t size, up_error_t *err) {
    blob_writer_t *w;
    int rc = blob_put_begin(bs, key, &w, err);
    if (rc)
        return rc;
    if ((rc = blob_write(w, data, size, err))) {
        blob_abort(w);
        return rc;
    }
    return blob_commit(w, err);
}

int blob_put_file(blob_store_t *bs, const char *key, const char *src, up_error_t *err) {
    assert(bs && src);
    if (!blob_key_valid(key)) {
        unlink(src);
        errno = EINVAL;
        return bad_key(key, err);
    }
    return bs->be->put_file(bs, key, src, err);
}

int blob_open(blob_store_t *bs, const char *key, blob_reader_t **out, blob_info_t *info, up_error_t *err) {
    assert(bs && out);
    *out = NULL;
    if (!blob_key_valid(key))
        return bad_key(key, err);
    return bs->be->open(bs, key, out, info, err);
}

int blob_reader_read(blob_reader_t *r, long long offset, void *buf, size_t size, size_t *n, up_error_t *err) {
    assert(r && n && (buf || !size));
    *n = 0;
    if (offset < 0 || offset > r->size)
        return up_error_set(err, UP_ERR_INVALID, 0, "blob range starts at %lld, the blob has %lld bytes",
                            offset, r->size);
    return r->bs->be->read(r, offset, buf, size, n, err);
}

void blob_reader_close(blob_reader_t *r) {
    if (r)
        r->bs->be->close(r);
}

int blob_read(blob_store_t *bs, const char *key, long long offset, void *buf, size_t size, size_t *n,
              up_error_t *err) {
    blob_reader_t *r;
    int rc = blob_open(bs, key, &r, NULL, err);
    if (rc)
        return rc;
    rc = blob_reader_read(r, offset, buf, size, n, err);
    blob_reader_close(r);
    return rc;
}

int blob_stat(blob_store_t *bs, const char *key, blob_info_t *info, up_error_t *err) {
    assert(bs && info);
    if (!blob_key_valid(key))
        return bad_key(key, err);
    return bs->be->stat(bs, key, info, err);
}

int blob_delete(blob_store_t *bs, const char *key, up_error_t *err) {
    assert(bs);
    if (!blob_key_valid(key))
        return bad_key(key, err);
    return bs->be->remove(bs, key, err);
}

int blob_path(blob_store_t *bs, const char *key, char *buf, size_t size, up_error_t *err) {
    assert(bs && buf);
    if (!bs->be->path)
        return up_error_set(err, UP_ERR_UNSUPPORTED, 0, "the %s blob store has no local files", bs->be->name);
    if (!blob_key_valid(key))
        return bad_key(key, err);
    return bs->be->path(bs, key, buf, size, err);
}

const char *blob_staging_dir(blob_store_t *bs) { return bs->staging; }

int blob_local_file(blob_store_t *bs, const char *key, char *buf, size_t size, int *temporary,
                    up_error_t *err) {
    assert(bs && buf && temporary);
    *temporary = 0;
    blob_info_t info;
    if (bs->be->path) {
        int rc = blob_path(bs, key, buf, size, err);
        return rc ? rc : blob_stat(bs, key, &info, err);
    }
    blob_reader_t *r;
    int rc = blob_open(bs, key, &r, &info, err);
    if (rc)
        return rc;
    int n = snprintf(buf, size, "%s/" UPLOAD_MARK "%ld-XXXXXX", bs->staging, (long)getpid());
    int fd = n < 0 || (size_t)n >= size ? -1 : mkostemp(buf, O_CLOEXEC);
    if (fd < 0) {
        rc = n < 0 || (size_t)n >= size ? up_error_set(err, UP_ERR_INVALID, 0, "blob copy path too long")
                                        : blob_io_error(err, errno, "cannot create", buf);
        blob_reader_close(r);
        return rc;
    }
    enum { COPY_BYTES = 1 << 20 };
    char *chunk = xmalloc(COPY_BYTES);
    long long off = 0;
    size_t got = 0;
    while (!rc && off < info.size && !(rc = blob_reader_read(r, off, chunk, COPY_BYTES, &got, err)) && got) {
        if (write_all(fd, chunk, got))
            rc = blob_io_error(err, errno, "cannot write", buf);
        off += (long long)got;
    }
    free(chunk);
    blob_reader_close(r);
    if (close(fd) && !rc)
        rc = blob_io_error(err, errno, "cannot write", buf);
    if (rc) {
        int e = errno;
        unlink(buf);
        errno = e;
        return rc;
    }
    *temporary = 1;
    return UP_OK;
}

/* ---- sweep ------------------------------------------------------------------------------ */

void blob_sweep_opts_init(blob_sweep_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->temp_age_s = 3600;
    o->orphan_age_s = 300;
}

typedef struct sweep_ctx {
    blob_store_t *bs;
    const blob_sweep_opts_t *o;
    const char *prefix;
    double now;
    blob_sweep_stats_t *stats;
} sweep_ctx_t;

static int sweep_entry(const char *name, int tmp, const blob_info_t *info, void *arg) {
    sweep_ctx_t *c = arg;
    double age = c->now - info->mtime;
    up_error_t err;
    if (tmp) {
        int gone = c->bs->be->temporary_orphaned(c->bs, name);
        if (!gone && age <= c->o->temp_age_s)
            return 0; /* its writer may be a live process on the same root */
        int rc = c->bs->be->remove_temporary(c->bs, c->prefix, name, &err);
        if (rc == 0) {
            c->stats->n_temporaries++;
            log_info("blob: removed the temporary %s/%s (%s)", c->prefix, name,
                     gone ? "its writer is gone" : "older than an upload may take");
        } else if (rc != UP_ERR_NOT_FOUND) {
            log_warn("blob: %s", err.msg);
        }
        return 0;
    }
    char key[BLOB_KEY_MAX + 2];
    int n = snprintf(key, sizeof key, "%s/%s", c->prefix, name);
    if (n < 0 || (size_t)n >= sizeof key || !blob_key_valid(key) || !c->o->referenced)
        return 0; /* not a blob of ours, or nobody can say whether it is referenced */
    if (c->o->referenced(key, c->o->ctx) || age <= c->o->orphan_age_s) {
        c->stats->n_kept++; /* a young one may be a put whose row is on its way */
        return 0;
    }
    int rc = c->bs->be->remove(c->bs, key, &err);
    if (rc == 0) {
        c->stats->n_orphans++;
        log_info("blob: removed %s: no job references it", key);
    } else if (rc != UP_ERR_NOT_FOUND) {
        log_warn("blob: %s", err.msg);
    }
    return 0;
}

int blob_sweep(blob_store_t *bs, const blob_sweep_opts_t *o, blob_sweep_stats_t *stats, up_error_t *err) {
    assert(bs && o);
    blob_sweep_stats_t local = {0};
    sweep_ctx_t c = {.bs = bs, .o = o, .now = o->now > 0 ? o->now : now_s(), .stats = &local};
    int rc = UP_OK;
    for (const char *const *p = o->prefixes; p && *p && !rc; p++) {
        if (!blob_key_valid(*p)) {
            rc = bad_key(*p, err);
            break;
        }
        c.prefix = *p;
        rc = bs->be->list(bs, *p, sweep_entry, &c, err);
    }
    if (stats)
        *stats = local;
    return rc;
}
