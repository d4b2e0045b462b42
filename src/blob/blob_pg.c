/*
 * blob_pg.c - the blob store in PostgreSQL (blob.h, blob_int.h): every
 * machine that reaches the database sees the same blobs, with no shared
 * mount. A blob is a row of blobs (its key, size and time) and its bytes
 * are rows of blob_chunks, 1 MiB each; nothing holds a blob whole: a
 * writer keeps one chunk, a reader caches one.
 *
 * DESIGN
 *
 * Writes: put_begin inserts a blobs row with no key (a temporary: its
 * target key kept aside), each full chunk is inserted as it fills, and
 * commit, in one transaction that holds a transaction advisory lock on the
 * key, deletes the blob that had the key (its chunks go by ON DELETE
 * CASCADE) and gives the row its key, size and time. So a reader never
 * sees a partial blob under a key, a replaced blob vanishes at the commit
 * that replaces it, and an aborted or crashed write leaves only a keyless
 * row, which the sweep removes past the temporaries' age (a writer's pid
 * means nothing to another machine). A blob is committed before the job
 * row that names it, as a file is: the two are separate interfaces (the
 * blob store may be another database), and the sweep removes a blob no row
 * came to reference.
 *
 * Reads: open reads the row; each read fetches the chunks it spans, one
 * statement each, the last one kept, so a download that reads in small
 * pieces fetches each chunk once. A chunk that is gone (the blob replaced
 * or deleted since the open) fails the read with UP_ERR_IO: the local
 * backend's open file outlives a rename, a row does not.
 *
 * Staging: uploads stream into files in the local folder (blob_staging_dir
 * = the data folder's uploads/), which put_file streams into chunks and
 * removes; the sweep of "uploads" lists those files' temporaries beside the
 * database's, and judges them as the local backend does (one machine: a
 * dead pid counts).
 *
 * Connections: a small pool (at most POOL_IDLE idle), each with the
 * statements prepared. A statement, or a commit's transaction, that finds
 * its connection lost (a server restart) runs once more on a new one;
 * every step is idempotent (a chunk insert overwrites the same chunk, the
 * commit's steps look at the row's id). Bytes travel in binary, numbers as
 * text with casts in the SQL.
 *
 * Schema: made and migrated at open under a transaction advisory lock,
 * versioned in blob_schema_version, in the URL's search_path (its own
 * tables, which the job store's migrations never touch, so the blobs may
 * live in another database). The chunk column is STORAGE EXTERNAL: images
 * are compressed already, so PostgreSQL's own compression would only cost.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blob/blob_int.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/pgconn.h"
#include "core/text.h"
#include "core/xmalloc.h"

#define CHUNK_BYTES (1 << 20)
#define POOL_IDLE 8
#define SCHEMA_VERSION 1
#define SCHEMA_LOCK 0x7570726573424cLL /* "upresBL": the migration's advisory lock */
#define PG_TMP_MARK BLOB_TMP_MARK "pg" /* a database temporary's listed name: "<name>.tmp-pg<id>" */

enum { S_NEW, S_CHUNK, S_LOCK, S_DROP_KEY, S_FINISH, S_DROP_TMP, S_GET, S_READ, S_DELETE, S_LIST, S_COUNT };

static const char *const sql[S_COUNT] = {
    [S_NEW] = "INSERT INTO blobs (target, created) VALUES ($1, $2::float8) RETURNING id",
    [S_CHUNK] = "INSERT INTO blob_chunks (blob, n, data) VALUES ($1::bigint, $2::int, $3::bytea) "
                "ON CONFLICT (blob, n) DO UPDATE SET data = EXCLUDED.data",
    [S_LOCK] = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
    [S_DROP_KEY] = "DELETE FROM blobs WHERE key = $1 AND id <> $2::bigint",
    [S_FINISH] = "UPDATE blobs SET key = target, size = $2::bigint, mtime = $3::float8 WHERE id = $1::bigint",
    [S_DROP_TMP] = "DELETE FROM blobs WHERE id = $1::bigint AND key IS NULL",
    [S_GET] = "SELECT id, size, mtime FROM blobs WHERE key = $1",
    [S_READ] = "SELECT data FROM blob_chunks WHERE blob = $1::bigint AND n = $2::int",
    [S_DELETE] = "DELETE FROM blobs WHERE key = $1",
    /* the rows directly under a folder: their target starts with "prefix/" and has no '/' after it */
    [S_LIST] = "SELECT id, target, key IS NULL, coalesce(size, 0), coalesce(mtime, created) FROM blobs "
               "WHERE starts_with(target, $1) AND strpos(substr(target, length($1) + 1), '/') = 0",
};

static const char *const schema_v1[] = {
    "CREATE TABLE blobs (id bigserial PRIMARY KEY, key text UNIQUE, target text NOT NULL, size bigint, "
    "mtime double precision, created double precision NOT NULL)",
    "CREATE TABLE blob_chunks (blob bigint NOT NULL REFERENCES blobs (id) ON DELETE CASCADE, "
    "n integer NOT NULL, data bytea NOT NULL, PRIMARY KEY (blob, n))",
    "ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL",
    "INSERT INTO blob_schema_version (version) VALUES (1)",
    NULL,
};

typedef struct pg_blobs {
    char *url;
    char where[160]; /* the database, never the password, for messages */
    pthread_mutex_t mu;
    PGconn *idle[POOL_IDLE];
    int n_idle;
} pg_blobs_t;

typedef struct pg_writer {
    blob_writer_t base;
    long long id;
    char key[BLOB_KEY_MAX + 1];
    unsigned char *buf; /* the chunk being filled */
    size_t len;
    int n;          /* chunks inserted */
    long long size; /* bytes written */
} pg_writer_t;

typedef struct pg_reader {
    blob_reader_t base;
    long long id;
    char key[BLOB_KEY_MAX + 1];
    unsigned char *cache; /* chunk cached_n, NULL until the first read */
    int cached_n;
    size_t cached_len;
} pg_reader_t;

static pg_blobs_t *pg_of(blob_store_t *bs) { return bs->impl; }

/* errno for a failed statement: ENOSPC for the server's disk full (507), else EIO (503). */
static int errno_of(const PGresult *res) {
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return state && (!strcmp(state, "53100") || !strcmp(state, "53200")) ? ENOSPC : EIO;
}

static int db_error(pg_blobs_t *pb, PGconn *c, const PGresult *res, const char *what, up_error_t *err) {
    char msg[400];
    text_one_line(res ? PQresultErrorMessage(res) : PQerrorMessage(c), msg, sizeof msg);
    int e = errno_of(res);
    up_error_set(err, UP_ERR_IO, 0, "blob store: %s in the %s: %s", what, pb->where, msg);
    log_error("%s", err ? err->msg : "blob store: a statement failed");
    errno = e;
    return UP_ERR_IO;
}

/* Run one SQL text (no parameters) that returns no rows. */
static int exec_plain(pg_blobs_t *pb, PGconn *c, const char *text, up_error_t *err) {
    PGresult *r = PQexec(c, text);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    int rc = ok ? UP_OK : db_error(pb, c, r, "a statement failed", err);
    PQclear(r);
    return rc;
}

/* Make or migrate the schema (see DESIGN), in one transaction. */
static int init_schema(pg_blobs_t *pb, PGconn *c, up_error_t *err) {
    char lock[96];
    snprintf(lock, sizeof lock, "SELECT pg_advisory_xact_lock(%lld)", SCHEMA_LOCK);
    int rc = exec_plain(pb, c, "BEGIN", err);
    if (rc)
        return rc;
    if ((rc = exec_plain(pb, c, lock, err)) ||
        (rc = exec_plain(pb, c,
                         "SET LOCAL client_min_messages = warning; "
                         "CREATE TABLE IF NOT EXISTS blob_schema_version (version integer NOT NULL)",
                         err)))
        goto end;
    PGresult *r = PQexec(c, "SELECT coalesce(max(version), 0) FROM blob_schema_version");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = db_error(pb, c, r, "cannot read the schema version", err);
        PQclear(r);
        goto end;
    }
    int version = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    if (version > SCHEMA_VERSION) {
        rc = up_error_set(err, UP_ERR_INVALID, 0,
                          "blob store: the %s has blob schema version %d, newer than this upres (%d)",
                          pb->where, version, SCHEMA_VERSION);
        goto end;
    }
    if (version < 1) {
        for (const char *const *s = schema_v1; *s && !rc; s++)
            rc = exec_plain(pb, c, *s, err);
        if (!rc)
            log_info("blob store: made the blob tables (version %d) in the %s", SCHEMA_VERSION, pb->where);
    }
end:
    if (exec_plain(pb, c, rc ? "ROLLBACK" : "COMMIT", rc ? NULL : err) && !rc)
        rc = UP_ERR_IO;
    return rc;
}

static void on_notice(void *arg, const char *message) {
    (void)arg;
    char msg[400];
    text_one_line(message, msg, sizeof msg);
    log_debug("blob store: %s", msg);
}

static PGconn *connect_db(pg_blobs_t *pb, up_error_t *err) {
    /* where: set by the first connection (at open, one thread), the same for every later one */
    PGconn *c = pgconn_open(pb->url, "upres", pb->where[0] ? NULL : pb->where, sizeof pb->where);
    if (!c) {
        up_error_set(err, UP_ERR_NOMEM, 0, "blob store: libpq could not allocate a connection");
        return NULL;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        char msg[400];
        text_one_line(PQerrorMessage(c), msg, sizeof msg);
        up_error_set(err, UP_ERR_IO, 0, "blob store: cannot connect to the %s: %s", pb->where, msg);
        log_error("%s", err ? err->msg : "blob store: cannot connect");
        PQfinish(c);
        errno = EIO;
        return NULL;
    }
    PQsetNoticeProcessor(c, on_notice, NULL);
    return c;
}

static int prepare_all(pg_blobs_t *pb, PGconn *c, up_error_t *err) {
    for (int k = 0; k < S_COUNT; k++) {
        char name[16];
        snprintf(name, sizeof name, "b%d", k);
        PGresult *r = PQprepare(c, name, sql[k], 0, NULL);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        int rc = ok ? UP_OK : db_error(pb, c, r, "cannot prepare a statement", err);
        PQclear(r);
        if (rc)
            return rc;
    }
    return UP_OK;
}

/* A connection: an idle one, else a new one with the statements prepared; NULL (err set) when none. */
static PGconn *conn_get(pg_blobs_t *pb, up_error_t *err) {
    PGconn *c = NULL;
    pthread_mutex_lock(&pb->mu);
    if (pb->n_idle)
        c = pb->idle[--pb->n_idle];
    pthread_mutex_unlock(&pb->mu);
    if (c)
        return c;
    if (!(c = connect_db(pb, err)))
        return NULL;
    if (prepare_all(pb, c, err)) {
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* Give c back: kept when it is healthy, outside a transaction, and the pool has room; else closed. */
static void conn_put(pg_blobs_t *pb, PGconn *c) {
    if (!c)
        return;
    if (PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) == PQTRANS_IDLE) {
        pthread_mutex_lock(&pb->mu);
        if (pb->n_idle < POOL_IDLE) {
            pb->idle[pb->n_idle++] = c;
            c = NULL;
        }
        pthread_mutex_unlock(&pb->mu);
    }
    PQfinish(c);
}

/*
 * Run fn(c, ctx, err) on a pooled connection; when it fails and the
 * connection turns out lost, once more on a new one (see DESIGN).
 */
static int with_conn(pg_blobs_t *pb, int (*fn)(pg_blobs_t *pb, PGconn *c, void *ctx, up_error_t *err),
                     void *ctx, up_error_t *err) {
    int rc = UP_ERR_IO;
    for (int attempt = 0; attempt < 2; attempt++) {
        PGconn *c = conn_get(pb, err);
        if (!c)
            return UP_ERR_IO;
        rc = fn(pb, c, ctx, err);
        int lost = rc && PQstatus(c) != CONNECTION_OK;
        conn_put(pb, c);
        if (!lost)
            break;
        log_warn("blob store: the connection to the %s was lost: %s", pb->where,
                 attempt ? "giving up" : "trying once more on a new one");
    }
    return rc;
}

/*
 * Statement k with n parameters: vals (text, or bytes where lens[i] > 0:
 * binary), result rows in binary when binary. *res (NULL: cleared) gets
 * the result.
 */
static int run(pg_blobs_t *pb, PGconn *c, int k, int n, const char *const *vals, const int *lens, int binary,
               PGresult **res, const char *what, up_error_t *err) {
    char name[16];
    snprintf(name, sizeof name, "b%d", k);
    int fmts[4] = {0};
    for (int i = 0; i < n && lens; i++)
        fmts[i] = lens[i] > 0;
    PGresult *r = PQexecPrepared(c, name, n, vals, lens, fmts, binary);
    ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
        int rc = db_error(pb, c, r, what, err);
        PQclear(r);
        return rc;
    }
    if (res)
        *res = r;
    else
        PQclear(r);
    return UP_OK;
}

/* ---- writers ------------------------------------------------------------------------------ */

typedef struct chunk_arg {
    long long id;
    int n;
    const unsigned char *data;
    size_t len;
} chunk_arg_t;

static int put_chunk(pg_blobs_t *pb, PGconn *c, void *ctx, up_error_t *err) {
    chunk_arg_t *a = ctx;
    char id[32], n[16];
    snprintf(id, sizeof id, "%lld", a->id);
    snprintf(n, sizeof n, "%d", a->n);
    /* an empty chunk goes as the text "": the same empty bytea */
    const char *vals[3] = {id, n, a->len ? (const char *)a->data : ""};
    int lens[3] = {0, 0, (int)a->len};
    return run(pb, c, S_CHUNK, 3, vals, lens, 0, NULL, "cannot write a chunk", err);
}

static int flush_chunk(pg_writer_t *w, up_error_t *err) {
    chunk_arg_t a = {.id = w->id, .n = w->n, .data = w->buf, .len = w->len};
    int rc = with_conn(pg_of(w->base.bs), put_chunk, &a, err);
    if (!rc) {
        w->n++;
        w->len = 0;
    }
    return rc;
}

typedef struct new_arg {
    const char *key;
    long long id;
} new_arg_t;

static int new_row(pg_blobs_t *pb, PGconn *c, void *ctx, up_error_t *err) {
    new_arg_t *a = ctx;
    char t[40];
    snprintf(t, sizeof t, "%.6f", now_s());
    const char *vals[2] = {a->key, t};
    PGresult *r;
    int rc = run(pb, c, S_NEW, 2, vals, NULL, 0, &r, "cannot begin a blob", err);
    if (!rc) {
        a->id = atoll(PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    return rc;
}

static int pg_put_begin(blob_store_t *bs, const char *key, blob_writer_t **out, up_error_t *err) {
    new_arg_t a = {.key = key};
    int rc = with_conn(pg_of(bs), new_row, &a, err);
    if (rc)
        return rc;
    pg_writer_t *w = xcalloc(1, sizeof *w);
    w->base.bs = bs;
    w->id = a.id;
    snprintf(w->key, sizeof w->key, "%s", key);
    w->buf = xmalloc(CHUNK_BYTES);
    *out = &w->base;
    return UP_OK;
}

static int pg_write(blob_writer_t *base, const void *data, size_t size, up_error_t *err) {
    pg_writer_t *w = (pg_writer_t *)base;
    const unsigned char *p = data;
    while (size) {
        size_t k = CHUNK_BYTES - w->len < size ? CHUNK_BYTES - w->len : size;
        memcpy(w->buf + w->len, p, k);
        w->len += k;
        w->size += (long long)k;
        p += k;
        size -= k;
        int rc = w->len == CHUNK_BYTES ? flush_chunk(w, err) : UP_OK;
        if (rc)
            return rc;
    }
    return UP_OK;
}

static int drop_tmp(pg_blobs_t *pb, PGconn *c, void *ctx, up_error_t *err) {
    char id[32];
    snprintf(id, sizeof id, "%lld", *(long long *)ctx);
    const char *vals[1] = {id};
    return run(pb, c, S_DROP_TMP, 1, vals, NULL, 0, NULL, "cannot remove a temporary", err);
}

static void writer_free(pg_writer_t *w) {
    free(w->buf);
    free(w);
}

static void pg_abort(blob_writer_t *base) {
    pg_writer_t *w = (pg_writer_t *)base;
    int e = errno;
    up_error_t err;
    if (with_conn(pg_of(base->bs), drop_tmp, &w->id, &err))
        log_warn("blob store: the temporary of %s stays for the sweep: %s", w->key, err.msg);
    writer_free(w);
    errno = e;
}

/* The commit's transaction (see DESIGN: Writes). */
static int finish(pg_blobs_t *pb, PGconn *c, void *ctx, up_error_t *err) {
    pg_writer_t *w = ctx;
    char id[32], size[32], t[40];
    snprintf(id, sizeof id, "%lld", w->id);
    snprintf(size, sizeof size, "%lld", w->size);
    snprintf(t, sizeof t, "%.6f", now_s());
    int rc = exec_plain(pb, c, "BEGIN", err);
    if (rc)
        return rc;
    PGresult *r = NULL;
    const char *drop[2] = {w->key, id}, *fin[3] = {id, size, t};
    if (!(rc = run(pb, c, S_LOCK, 1, drop, NULL, 0, NULL, "cannot lock a key", err)) &&
        !(rc = run(pb, c, S_DROP_KEY, 2, drop, NULL, 0, NULL, "cannot replace a blob", err)) &&
        !(rc = run(pb, c, S_FINISH, 3, fin, NULL, 0, &r, "cannot commit a blob", err)) &&
        strcmp(PQcmdTuples(r), "1") != 0) {
        errno = EIO;
        rc = up_error_set(err, UP_ERR_IO, 0, "blob store: the temporary of %s was removed before its commit",
                          w->key);
    }
    PQclear(r);
    if (exec_plain(pb, c, rc ? "ROLLBACK" : "COMMIT", rc ? NULL : err) && !rc)
        rc = UP_ERR_IO;
    return rc;
}

static int pg_commit(blob_writer_t *base, up_error_t *err) {
    pg_writer_t *w = (pg_writer_t *)base;
    int rc = UP_OK;
    if (w->len || w->n == 0) /* the last chunk; an empty blob has one empty chunk */
        rc = flush_chunk(w, err);
    if (!rc)
        rc = with_conn(pg_of(base->bs), finish, w, err);
    if (rc) {
        pg_abort(base); /* keeps errno */
        return rc;
    }
    writer_free(w);
    return UP_OK;
}

static int pg_put_file(blob_store_t *bs, const char *key, const char *src, up_error_t *err) {
    int fd = open(src, O_RDONLY | O_CLOEXEC), e;
    if (fd < 0) {
        int rc = blob_io_error(err, errno, "cannot store", src);
        e = errno;
        unlink(src);
        errno = e;
        return rc;
    }
    blob_writer_t *w = NULL;
    int rc = pg_put_begin(bs, key, &w, err);
    unsigned char *buf = rc ? NULL : xmalloc(CHUNK_BYTES);
    while (!rc) {
        ssize_t k = read(fd, buf, CHUNK_BYTES);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            rc = blob_io_error(err, errno, "cannot read", src);
        else if (k == 0)
            break;
        else
            rc = pg_write(w, buf, (size_t)k, err);
    }
    free(buf);
    e = errno;
    close(fd);
    unlink(src); /* taken over: gone on success and failure alike */
    if (!w) {
        errno = e;
        return rc;
    }
    if (rc) {
        errno = e;
        pg_abort(w);
        return rc;
    }
    return pg_commit(w, err);
}

/* ---- readers --------------------------------------------------------------------------------- */

typedef struct get_arg {
    const char *key;
    long long id;
    blob_info_t info;
    int found;
} get_arg_t;

static int get_row(pg_blobs_t *pb, PGconn *c, void *ctx, up_error_t *err) {
    get_arg_t *a = ctx;
    const char *vals[1] = {a->key};
    PGresult *r;
    int rc = run(pb, c, S_GET, 1, vals, NULL, 0, &r, "cannot read a blob", err);
    if (rc)
        return rc;
    a->found = PQntuples(r) == 1;
    if (a->found) {
        a->id = atoll(PQgetvalue(r, 0, 0));
        a->info.size = atoll(PQgetvalue(r, 0, 1));
        a->info.mtime = atof(PQgetvalue(r, 0, 2));
    }
    PQclear(r);
    return UP_OK;
}

static int get_blob(blob_store_t *bs, const char *key, get_arg_t *a, up_error_t *err) {
    *a = (get_arg_t){.key = key};
    int rc = with_conn(pg_of(bs), get_row, a, err);
    if (!rc && !a->found)
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no blob '%.300s'", key);
    return rc;
}

static int pg_open(blob_store_t *bs, const char *key, blob_reader_t **out, blob_info_t *info,
                   up_error_t *err) {
    get_arg_t a;
    int rc = get_blob(bs, key, &a, err);
    if (rc)
        return rc;
    pg_reader_t *r = xcalloc(1, sizeof *r);
    r->base.bs = bs;
    r->base.size = a.info.size;
    r->id = a.id;
    r->cached_n = -1;
    snprintf(r->key, sizeof r->key, "%s", key);
    if (info)
        *info = a.info;
    *out = &r->base;
    return UP_OK;
}

static int read_chunk(pg_blobs_t *pb, PGconn *c, void *ctx, up_error_t *err) {
    pg_reader_t *r = ctx;
    char id[32], n[16];
    snprintf(id, sizeof id, "%lld", r->id);
    snprintf(n, sizeof n, "%d", r->cached_n);
    const char *vals[2] = {id, n};
    PGresult *res;
    int rc = run(pb, c, S_READ, 2, vals, NULL, 1, &res, "cannot read a chunk", err);
    if (rc)
        return rc;
    long long start = (long long)r->cached_n * CHUNK_BYTES, rest = r->base.size - start;
    size_t want = rest < CHUNK_BYTES ? (size_t)rest : CHUNK_BYTES;
    if (PQntuples(res) != 1 || (size_t)PQgetlength(res, 0, 0) != want) {
        errno = EIO;
        rc = up_error_set(err, UP_ERR_IO, 0, "blob store: %s changed while it was read", r->key);
    } else {
        memcpy(r->cache, PQgetvalue(res, 0, 0), want);
        r->cached_len = want;
    }
    PQclear(res);
    return rc;
}

static int pg_read(blob_reader_t *base, long long offset, void *buf, size_t size, size_t *n,
                   up_error_t *err) {
    pg_reader_t *r = (pg_reader_t *)base;
    size_t got = 0;
    while (got < size && offset + (long long)got < base->size) {
        long long pos = offset + (long long)got;
        int k = (int)(pos / CHUNK_BYTES);
        if (r->cached_n != k) {
            if (!r->cache)
                r->cache = xmalloc(CHUNK_BYTES);
            r->cached_n = k;
            int rc = with_conn(pg_of(base->bs), read_chunk, r, err);
            if (rc) {
                r->cached_n = -1;
                return rc;
            }
        }
        size_t at = (size_t)(pos - (long long)k * CHUNK_BYTES);
        size_t take = r->cached_len - at < size - got ? r->cached_len - at : size - got;
        memcpy((char *)buf + got, r->cache + at, take);
        got += take;
    }
    *n = got;
    return UP_OK;
}

static void pg_close(blob_reader_t *base) {
    pg_reader_t *r = (pg_reader_t *)base;
    free(r->cache);
    free(r);
}

static int pg_stat(blob_store_t *bs, const char *key, blob_info_t *info, up_error_t *err) {
    get_arg_t a;
    int rc = get_blob(bs, key, &a, err);
    if (!rc)
        *info = a.info;
    return rc;
}

typedef struct delete_arg {
    const char *key;
    int gone;
} delete_arg_t;

static int delete_row(pg_blobs_t *pb, PGconn *c, void *ctx, up_error_t *err) {
    delete_arg_t *a = ctx;
    const char *vals[1] = {a->key};
    PGresult *r;
    int rc = run(pb, c, S_DELETE, 1, vals, NULL, 0, &r, "cannot delete a blob", err);
    if (!rc) {
        a->gone = strcmp(PQcmdTuples(r), "0") != 0;
        PQclear(r);
    }
    return rc;
}

static int pg_remove(blob_store_t *bs, const char *key, up_error_t *err) {
    delete_arg_t a = {.key = key};
    int rc = with_conn(pg_of(bs), delete_row, &a, err);
    if (!rc && !a.gone)
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no blob '%.300s'", key);
    return rc;
}

/* ---- the sweep's view ---------------------------------------------------------------------- */

typedef struct list_arg {
    const char *prefix;
    PGresult *res;
} list_arg_t;

static int list_rows(pg_blobs_t *pb, PGconn *c, void *ctx, up_error_t *err) {
    list_arg_t *a = ctx;
    char folder[BLOB_KEY_MAX + 2];
    snprintf(folder, sizeof folder, "%s/", a->prefix);
    const char *vals[1] = {folder};
    return run(pb, c, S_LIST, 1, vals, NULL, 0, &a->res, "cannot list blobs", err);
}

typedef struct staged_arg {
    int (*fn)(const char *name, int is_temporary, const blob_info_t *info, void *ctx);
    void *ctx;
} staged_arg_t;

/* The local folder's entries the sweep should see here: staged uploads and copies only. */
static int staged_only(const char *name, int tmp, const blob_info_t *info, void *ctx) {
    staged_arg_t *a = ctx;
    return tmp && !strncmp(name, BLOB_UPLOAD_MARK, strlen(BLOB_UPLOAD_MARK)) ? a->fn(name, 1, info, a->ctx)
                                                                             : 0;
}

static int pg_list(blob_store_t *bs, const char *prefix,
                   int (*fn)(const char *name, int is_temporary, const blob_info_t *info, void *ctx),
                   void *ctx, up_error_t *err) {
    list_arg_t a = {.prefix = prefix};
    int rc = with_conn(pg_of(bs), list_rows, &a, err);
    if (rc)
        return rc;
    size_t skip = strlen(prefix) + 1;
    int stop = 0;
    for (int i = 0; i < PQntuples(a.res) && !stop; i++) {
        const char *name = PQgetvalue(a.res, i, 1) + skip;
        int tmp = PQgetvalue(a.res, i, 2)[0] == 't';
        blob_info_t info = {.size = atoll(PQgetvalue(a.res, i, 3)), .mtime = atof(PQgetvalue(a.res, i, 4))};
        char listed[BLOB_KEY_MAX + 48];
        if (tmp) /* named so that remove_temporary finds the row again */
            snprintf(listed, sizeof listed, "%s" PG_TMP_MARK "%s", name, PQgetvalue(a.res, i, 0));
        stop = fn(tmp ? listed : name, tmp, &info, ctx);
    }
    PQclear(a.res);
    if (stop)
        return UP_OK;
    staged_arg_t s = {.fn = fn, .ctx = ctx};
    return blob_local_backend.list(bs, prefix, staged_only, &s, err);
}

/* A database temporary's row id from its listed name, or 0 for a local file's name. */
static long long pg_temporary_id(const char *name) {
    const char *p = strstr(name, PG_TMP_MARK);
    if (!p)
        return 0;
    char *end;
    long long id = strtoll(p + strlen(PG_TMP_MARK), &end, 10);
    return *end == '\0' && id > 0 ? id : 0;
}

static int pg_temporary_orphaned(blob_store_t *bs, const char *name) {
    /* a row's writer may be on any machine: its age alone says; a staged file is this machine's */
    return pg_temporary_id(name) ? 0 : blob_local_backend.temporary_orphaned(bs, name);
}

static int pg_remove_temporary(blob_store_t *bs, const char *prefix, const char *name, up_error_t *err) {
    long long id = pg_temporary_id(name);
    if (!id)
        return blob_local_backend.remove_temporary(bs, prefix, name, err);
    return with_conn(pg_of(bs), drop_tmp, &id, err);
}

static void pg_free(blob_store_t *bs) {
    pg_blobs_t *pb = pg_of(bs);
    if (pb) {
        for (int i = 0; i < pb->n_idle; i++)
            PQfinish(pb->idle[i]);
        pthread_mutex_destroy(&pb->mu);
        free(pb->url);
        free(pb);
    }
    free(bs);
}

static const blob_backend_i pg_backend = {
    .name = "postgresql",
    .put_begin = pg_put_begin,
    .write = pg_write,
    .commit = pg_commit,
    .abort = pg_abort,
    .put_file = pg_put_file,
    .open = pg_open,
    .read = pg_read,
    .close = pg_close,
    .stat = pg_stat,
    .remove = pg_remove,
    .list = pg_list,
    .temporary_orphaned = pg_temporary_orphaned,
    .remove_temporary = pg_remove_temporary,
    .path = NULL, /* no local files: downloads stream through a reader */
    .free = pg_free,
};

int blob_open_pg(const char *url, const char *local_root, blob_store_t **out, up_error_t *err) {
    assert(url && local_root && out);
    *out = NULL;
    blob_store_t *bs = xcalloc(1, sizeof *bs);
    bs->be = &pg_backend;
    pg_blobs_t *pb = xcalloc(1, sizeof *pb);
    pthread_mutex_init(&pb->mu, NULL);
    pb->url = xstrdup(url);
    bs->impl = pb;
    int rc = blob_local_setup(bs, local_root, err);
    PGconn *c = rc ? NULL : connect_db(pb, err);
    if (!rc && !c)
        rc = UP_ERR_IO;
    if (!rc && !(rc = init_schema(pb, c, err)))
        rc = prepare_all(pb, c, err);
    if (rc) {
        PQfinish(c);
        pg_free(bs);
        return rc;
    }
    conn_put(pb, c);
    *out = bs;
    return UP_OK;
}
