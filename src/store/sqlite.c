/*
 * sqlite.c - the job store on SQLite (implements store.h), the embedded
 * default: data_dir/upres.db beside the uploads and results folders.
 *
 * DESIGN
 *
 * Connections: two, each guarded by its own mutex. The writer connection
 * runs every write, always inside BEGIN IMMEDIATE, so the write lock is taken
 * before anything is read and a transaction never has to be retried halfway
 * (a deferred transaction that reads and then writes can fail with
 * SQLITE_BUSY_SNAPSHOT, which the busy handler does not retry). The reader
 * connection answers store_job_get and store_job_counts: in WAL mode readers
 * never wait for the writer, so polling clients (GET /status) are not held
 * up behind a commit's fsync. Another process on the same file (a second
 * server, `upres worker`) is serialised by SQLite's own locks; busy_timeout
 * makes it wait rather than fail.
 *
 * Durability: journal_mode=WAL, synchronous=FULL. With NORMAL a WAL commit
 * survives a crash of the process (kill -9) but not a power cut; FULL also
 * fsyncs the WAL at every commit, so a job answered 202 is on disk. A job
 * makes few writes (insert, claim, progress at most a few per second,
 * complete), so the extra fsync costs little.
 *
 * Order: claim takes the queued job with the smallest (created_at, seq);
 * seq is the rowid, which is insertion order.
 *
 * Schema version: PRAGMA user_version (SCHEMA_VERSION below). A database
 * made by a newer upres is refused rather than misread.
 */
#include "store/store.h"

#include <assert.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/xmalloc.h"

#define SCHEMA_VERSION 1
#define BUSY_TIMEOUT_MS 10000

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS jobs ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " id TEXT NOT NULL UNIQUE,"
    " status INTEGER NOT NULL DEFAULT 0,"
    " progress INTEGER NOT NULL DEFAULT 0,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " cancel_requested INTEGER NOT NULL DEFAULT 0,"
    " model TEXT NOT NULL DEFAULT '',"
    " scale INTEGER NOT NULL DEFAULT 0,"
    " format TEXT NOT NULL DEFAULT '',"
    " quality INTEGER NOT NULL DEFAULT 0,"
    " tile INTEGER NOT NULL DEFAULT 0,"
    " input_path TEXT NOT NULL DEFAULT '',"
    " input_name TEXT NOT NULL DEFAULT '',"
    " input_format TEXT NOT NULL DEFAULT '',"
    " input_width INTEGER NOT NULL DEFAULT 0,"
    " input_height INTEGER NOT NULL DEFAULT 0,"
    " input_bytes INTEGER NOT NULL DEFAULT 0,"
    " result_path TEXT NOT NULL DEFAULT '',"
    " result_format TEXT NOT NULL DEFAULT '',"
    " output_width INTEGER NOT NULL DEFAULT 0,"
    " output_height INTEGER NOT NULL DEFAULT 0,"
    " result_bytes INTEGER NOT NULL DEFAULT 0,"
    " created_at REAL NOT NULL DEFAULT 0,"
    " started_at REAL NOT NULL DEFAULT 0,"
    " completed_at REAL NOT NULL DEFAULT 0,"
    " expires_at REAL NOT NULL DEFAULT 0,"
    " error TEXT NOT NULL DEFAULT ''"
    ");"
    "CREATE INDEX IF NOT EXISTS jobs_queue ON jobs(status, created_at, seq);"
    "CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs(expires_at) WHERE expires_at > 0;";

/* Every read returns these columns in this order (see read_row). */
#define JOB_COLUMNS                                                                                          \
    "id, status, progress, attempts, cancel_requested, model, scale, format, quality, tile,"                 \
    " input_path, input_name, input_format, input_width, input_height, input_bytes,"                         \
    " result_path, result_format, output_width, output_height, result_bytes,"                                \
    " created_at, started_at, completed_at, expires_at, error"

/* Prepared statements, made once at open (SQLITE_PREPARE_PERSISTENT). */
enum {
    S_BEGIN,
    S_COMMIT,
    S_ROLLBACK,
    S_INSERT,
    S_STATUS,      /* status, cancel_requested, attempts of one id */
    S_NEXT_QUEUED, /* seq of the oldest queued job */
    S_CLAIM,
    S_PROGRESS,
    S_COMPLETE,
    S_FAIL,
    S_CANCEL_QUEUED,
    S_CANCEL_REQUEST,
    S_CANCELLED,
    S_REQUEUE,
    S_RECOVER_FAIL,
    S_RECOVER_REQUEUE,
    S_DOWNLOADED,
    S_EXPIRE,
    S_INPUT_DELETED,
    S_W_GET_SEQ, /* writer-side read of a full row by seq (claim) */
    N_WSTMT
};

enum { R_GET, R_DUE, R_COUNTS, N_RSTMT };

static const char *const wsql[N_WSTMT] = {
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_INSERT] = "INSERT INTO jobs (id, status, progress, attempts, cancel_requested, model, scale,"
                 " format, quality, tile, input_path, input_name, input_format, input_width,"
                 " input_height, input_bytes, created_at)"
                 " VALUES (?1, 0, 0, 0, 0, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    [S_STATUS] = "SELECT status, cancel_requested, attempts FROM jobs WHERE id = ?1",
    [S_NEXT_QUEUED] = "SELECT seq FROM jobs WHERE status = 0 ORDER BY created_at, seq LIMIT 1",
    [S_CLAIM] = "UPDATE jobs SET status = 1, attempts = attempts + 1, started_at = ?2, progress = 0,"
                " cancel_requested = 0 WHERE seq = ?1 AND status = 0",
    [S_PROGRESS] = "UPDATE jobs SET progress = ?2 WHERE id = ?1",
    [S_COMPLETE] = "UPDATE jobs SET status = 2, progress = 100, result_path = ?2, result_format = ?3,"
                   " output_width = ?4, output_height = ?5, result_bytes = ?6, completed_at = ?7,"
                   " expires_at = ?8, cancel_requested = 0 WHERE id = ?1",
    [S_FAIL] = "UPDATE jobs SET status = 3, error = ?2, completed_at = ?3, expires_at = ?4,"
               " cancel_requested = 0 WHERE id = ?1",
    /* nothing to keep: the input is due for deletion at once */
    [S_CANCEL_QUEUED] = "UPDATE jobs SET status = 4, completed_at = ?2, expires_at = ?2 WHERE id = ?1",
    [S_CANCEL_REQUEST] = "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1",
    [S_CANCELLED] = "UPDATE jobs SET status = 4, completed_at = ?2, expires_at = ?2 + ?3,"
                    " cancel_requested = 0 WHERE id = ?1",
    [S_REQUEUE] = "UPDATE jobs SET status = 0, progress = 0, started_at = 0,"
                  " attempts = max(attempts - 1, 0), cancel_requested = 0 WHERE id = ?1",
    [S_RECOVER_FAIL] =
        "UPDATE jobs SET status = 3, completed_at = ?2, expires_at = ?2 + ?3, cancel_requested = 0,"
        " error = 'the server stopped while processing this job ' || attempts || ' times'"
        " WHERE status = 1 AND attempts >= ?1",
    [S_RECOVER_REQUEUE] = "UPDATE jobs SET status = 0, progress = 0, started_at = 0,"
                          " cancel_requested = 0 WHERE status = 1",
    [S_DOWNLOADED] = "UPDATE jobs SET status = 5, result_path = '' WHERE id = ?1",
    /* failed and cancelled jobs keep their status (and error): only a result expires */
    [S_EXPIRE] = "UPDATE jobs SET input_path = '', result_path = '',"
                 " status = CASE WHEN status = 2 THEN 5 ELSE status END WHERE id = ?1",
    [S_INPUT_DELETED] = "UPDATE jobs SET input_path = '' WHERE id = ?1",
    [S_W_GET_SEQ] = "SELECT " JOB_COLUMNS " FROM jobs WHERE seq = ?1",
};

static const char *const rsql[N_RSTMT] = {
    [R_GET] = "SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?1",
    [R_DUE] = "SELECT " JOB_COLUMNS " FROM jobs WHERE status IN (2, 3, 4) AND expires_at > 0"
              " AND expires_at <= ?1 AND (input_path <> '' OR result_path <> '')"
              " ORDER BY expires_at LIMIT ?2",
    [R_COUNTS] = "SELECT status, count(*) FROM jobs GROUP BY status",
};

struct store {
    pthread_mutex_t wmu; /* guards w and wstmt */
    pthread_mutex_t rmu; /* guards r and rstmt */
    sqlite3 *w, *r;
    sqlite3_stmt *wstmt[N_WSTMT];
    sqlite3_stmt *rstmt[N_RSTMT];
    char path[1024];
};

const char *job_status_name(job_status_t s) {
    switch (s) {
    case JOB_STATUS_QUEUED: return "queued";
    case JOB_STATUS_PROCESSING: return "processing";
    case JOB_STATUS_COMPLETED: return "completed";
    case JOB_STATUS_FAILED: return "failed";
    case JOB_STATUS_CANCELLED: return "cancelled";
    case JOB_STATUS_EXPIRED: return "expired";
    }
    return "unknown";
}

/* UP_ERR_IO with sqlite's message for db. */
static int db_error(sqlite3 *db, up_error_t *err, const char *what) {
    int rc = up_error_set(err, UP_ERR_IO, 0, "job store: %s: %s", what, sqlite3_errmsg(db));
    log_error("job store: %s: %s", what, sqlite3_errmsg(db));
    return rc;
}

static void copy_text(char *dst, size_t size, sqlite3_stmt *s, int col) {
    const unsigned char *t = sqlite3_column_text(s, col);
    snprintf(dst, size, "%s", t ? (const char *)t : "");
}

static void read_row(sqlite3_stmt *s, job_t *j) {
    memset(j, 0, sizeof *j);
    int c = 0;
    copy_text(j->id, sizeof j->id, s, c++);
    j->status = (job_status_t)sqlite3_column_int(s, c++);
    j->progress = sqlite3_column_int(s, c++);
    j->attempts = sqlite3_column_int(s, c++);
    j->cancel_requested = sqlite3_column_int(s, c++);
    copy_text(j->model, sizeof j->model, s, c++);
    j->scale = sqlite3_column_int(s, c++);
    copy_text(j->format, sizeof j->format, s, c++);
    j->quality = sqlite3_column_int(s, c++);
    j->tile = sqlite3_column_int(s, c++);
    copy_text(j->input_path, sizeof j->input_path, s, c++);
    copy_text(j->input_name, sizeof j->input_name, s, c++);
    copy_text(j->input_format, sizeof j->input_format, s, c++);
    j->input_width = sqlite3_column_int(s, c++);
    j->input_height = sqlite3_column_int(s, c++);
    j->input_bytes = sqlite3_column_int64(s, c++);
    copy_text(j->result_path, sizeof j->result_path, s, c++);
    copy_text(j->result_format, sizeof j->result_format, s, c++);
    j->output_width = sqlite3_column_int(s, c++);
    j->output_height = sqlite3_column_int(s, c++);
    j->result_bytes = sqlite3_column_int64(s, c++);
    j->created_at = sqlite3_column_double(s, c++);
    j->started_at = sqlite3_column_double(s, c++);
    j->completed_at = sqlite3_column_double(s, c++);
    j->expires_at = sqlite3_column_double(s, c++);
    copy_text(j->error, sizeof j->error, s, c++);
}

static void done(sqlite3_stmt *s) {
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
}

static void bind_text(sqlite3_stmt *s, int i, const char *t) {
    sqlite3_bind_text(s, i, t ? t : "", -1, SQLITE_TRANSIENT);
}

/* Run a statement that returns no rows (bindings already set). */
static int exec_stmt(store_t *st, int k, const char *what, up_error_t *err) {
    sqlite3_stmt *s = st->wstmt[k];
    int rc = sqlite3_step(s);
    done(s);
    if (rc != SQLITE_DONE)
        return db_error(st->w, err, what);
    return UP_OK;
}

static int tx_begin(store_t *st, up_error_t *err) {
    return exec_stmt(st, S_BEGIN, "cannot begin a transaction", err);
}

static int tx_commit(store_t *st, up_error_t *err) {
    int rc = exec_stmt(st, S_COMMIT, "cannot commit", err);
    if (rc && !sqlite3_get_autocommit(st->w))
        exec_stmt(st, S_ROLLBACK, "cannot roll back", NULL);
    return rc;
}

static void tx_rollback(store_t *st) {
    if (!sqlite3_get_autocommit(st->w))
        exec_stmt(st, S_ROLLBACK, "cannot roll back", NULL);
}

/* Inside a write transaction: status of id, or UP_ERR_NOT_FOUND. */
static int job_status(store_t *st, const char *id, job_status_t *status, int *cancel, up_error_t *err) {
    sqlite3_stmt *s = st->wstmt[S_STATUS];
    bind_text(s, 1, id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *status = (job_status_t)sqlite3_column_int(s, 0);
        if (cancel)
            *cancel = sqlite3_column_int(s, 1);
        done(s);
        return UP_OK;
    }
    done(s);
    if (rc == SQLITE_DONE)
        return up_error_set(err, UP_ERR_NOT_FOUND, 0, "no job %s", id);
    return db_error(st->w, err, "cannot read a job");
}

/* ---- open / close -------------------------------------------------------- */

static int open_conn(const char *path, sqlite3 **db, up_error_t *err) {
    /* NOMUTEX: each connection is used under our own mutex */
    int rc =
        sqlite3_open_v2(path, db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        int r = up_error_set(err, UP_ERR_IO, 0, "job store: cannot open %s: %s", path,
                             *db ? sqlite3_errmsg(*db) : sqlite3_errstr(rc));
        log_error("%s", err ? err->msg : "job store: cannot open the database");
        return r;
    }
    sqlite3_busy_timeout(*db, BUSY_TIMEOUT_MS);
    sqlite3_extended_result_codes(*db, 1);
    return UP_OK;
}

static int exec_sql(sqlite3 *db, const char *sql, up_error_t *err) {
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = up_error_set(err, UP_ERR_IO, 0, "job store: %s", msg ? msg : sqlite3_errmsg(db));
        log_error("job store: %s (%s)", msg ? msg : sqlite3_errmsg(db), sql);
        sqlite3_free(msg);
        return rc;
    }
    return UP_OK;
}

/* Create the schema, or check that the existing one is one we know. */
static int init_schema(sqlite3 *db, const char *path, up_error_t *err) {
    int rc = exec_sql(db, "BEGIN IMMEDIATE", err);
    if (rc)
        return rc;
    sqlite3_stmt *s = NULL;
    int version = -1;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        version = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    if (version < 0) {
        rc = db_error(db, err, "cannot read the schema version");
    } else if (version > SCHEMA_VERSION) {
        rc =
            up_error_set(err, UP_ERR_IO, 0, "job store: %s has schema version %d, newer than this upres (%d)",
                         path, version, SCHEMA_VERSION);
        log_error("%s", err ? err->msg : "job store: schema too new");
    } else if (version < SCHEMA_VERSION) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", SCHEMA_VERSION);
        if (!(rc = exec_sql(db, schema_sql, err)))
            rc = exec_sql(db, sql, err);
    }
    if (rc) {
        exec_sql(db, "ROLLBACK", NULL);
        return rc;
    }
    return exec_sql(db, "COMMIT", err);
}

static int prepare_all(sqlite3 *db, const char *const *sql, sqlite3_stmt **stmts, int n, up_error_t *err) {
    for (int i = 0; i < n; i++) {
        if (sqlite3_prepare_v3(db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &stmts[i], NULL) != SQLITE_OK)
            return db_error(db, err, "cannot prepare a statement");
    }
    return UP_OK;
}

int store_open(const char *data_dir, store_t **out, up_error_t *err) {
    assert(data_dir && out);
    *out = NULL;
    store_t *st = xcalloc(1, sizeof *st);
    pthread_mutex_init(&st->wmu, NULL);
    pthread_mutex_init(&st->rmu, NULL);
    int rc;
    if (mkdir(data_dir, 0777) != 0) {
        struct stat sb;
        if (stat(data_dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            rc = up_error_set(err, UP_ERR_IO, 0, "job store: cannot create the data folder %s", data_dir);
            log_error("%s", err ? err->msg : "job store: no data folder");
            goto fail;
        }
    }
    int n = snprintf(st->path, sizeof st->path, "%s/upres.db", data_dir);
    if (n < 0 || (size_t)n >= sizeof st->path) {
        rc = up_error_set(err, UP_ERR_INVALID, 0, "job store: data folder path too long");
        goto fail;
    }
    if ((rc = open_conn(st->path, &st->w, err)))
        goto fail;
    /* WAL is a property of the file: set once, kept by every later open */
    if ((rc = exec_sql(st->w, "PRAGMA journal_mode = WAL", err)) ||
        (rc = exec_sql(st->w, "PRAGMA synchronous = FULL", err)) ||
        (rc = exec_sql(st->w, "PRAGMA foreign_keys = ON", err)) || (rc = init_schema(st->w, st->path, err)))
        goto fail;
    if ((rc = open_conn(st->path, &st->r, err)) || (rc = exec_sql(st->r, "PRAGMA synchronous = FULL", err)))
        goto fail;
    if ((rc = prepare_all(st->w, wsql, st->wstmt, N_WSTMT, err)) ||
        (rc = prepare_all(st->r, rsql, st->rstmt, N_RSTMT, err)))
        goto fail;
    *out = st;
    return UP_OK;
fail:
    store_close(st);
    return rc;
}

void store_close(store_t *st) {
    if (!st)
        return;
    for (int i = 0; i < N_WSTMT; i++)
        sqlite3_finalize(st->wstmt[i]);
    for (int i = 0; i < N_RSTMT; i++)
        sqlite3_finalize(st->rstmt[i]);
    sqlite3_close(st->r);
    sqlite3_close(st->w);
    pthread_mutex_destroy(&st->wmu);
    pthread_mutex_destroy(&st->rmu);
    free(st);
}

/* ---- writes ---------------------------------------------------------------- */

int store_job_insert(store_t *st, const job_t *job, up_error_t *err) {
    assert(st && job);
    if (!job->id[0])
        return up_error_set(err, UP_ERR_INVALID, 0, "job store: a job needs an id");
    pthread_mutex_lock(&st->wmu);
    int rc = tx_begin(st, err);
    if (rc)
        goto out;
    sqlite3_stmt *s = st->wstmt[S_INSERT];
    bind_text(s, 1, job->id);
    bind_text(s, 2, job->model);
    sqlite3_bind_int(s, 3, job->scale);
    bind_text(s, 4, job->format);
    sqlite3_bind_int(s, 5, job->quality);
    sqlite3_bind_int(s, 6, job->tile);
    bind_text(s, 7, job->input_path);
    bind_text(s, 8, job->input_name);
    bind_text(s, 9, job->input_format);
    sqlite3_bind_int(s, 10, job->input_width);
    sqlite3_bind_int(s, 11, job->input_height);
    sqlite3_bind_int64(s, 12, job->input_bytes);
    sqlite3_bind_double(s, 13, job->created_at > 0 ? job->created_at : now_s());
    int src = sqlite3_step(s);
    done(s);
    if (src == SQLITE_CONSTRAINT_UNIQUE || src == SQLITE_CONSTRAINT_PRIMARYKEY) {
        rc = up_error_set(err, UP_ERR_INVALID, 0, "job store: job %s already exists", job->id);
        tx_rollback(st);
        goto out;
    }
    if (src != SQLITE_DONE) {
        rc = db_error(st->w, err, "cannot insert a job");
        tx_rollback(st);
        goto out;
    }
    rc = tx_commit(st, err);
out:
    pthread_mutex_unlock(&st->wmu);
    return rc;
}

int store_job_claim(store_t *st, job_t *out, up_error_t *err) {
    assert(st && out);
    pthread_mutex_lock(&st->wmu);
    int rc = tx_begin(st, err);
    if (rc)
        goto out;
    sqlite3_stmt *s = st->wstmt[S_NEXT_QUEUED];
    int src = sqlite3_step(s);
    sqlite3_int64 seq = src == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    done(s);
    if (src == SQLITE_DONE) {
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no queued job");
        goto rollback;
    }
    if (src != SQLITE_ROW) {
        rc = db_error(st->w, err, "cannot find a queued job");
        goto rollback;
    }
    s = st->wstmt[S_CLAIM];
    sqlite3_bind_int64(s, 1, seq);
    sqlite3_bind_double(s, 2, now_s());
    if ((rc = exec_stmt(st, S_CLAIM, "cannot claim a job", err)))
        goto rollback;
    s = st->wstmt[S_W_GET_SEQ];
    sqlite3_bind_int64(s, 1, seq);
    src = sqlite3_step(s);
    if (src == SQLITE_ROW)
        read_row(s, out);
    done(s);
    if (src != SQLITE_ROW) {
        rc = db_error(st->w, err, "cannot read the claimed job");
        goto rollback;
    }
    rc = tx_commit(st, err);
    goto out;
rollback:
    tx_rollback(st);
out:
    pthread_mutex_unlock(&st->wmu);
    return rc;
}

/* Most writes: one statement on one job, allowed from some statuses only. */
typedef struct transition {
    int stmt;         /* S_* run when allowed */
    unsigned allowed; /* bit (1 << status) for each status it applies to */
    const char *what; /* for error messages */
} transition_t;

/*
 * Run transition t on id: UP_ERR_NOT_FOUND for an unknown id, UP_ERR_INVALID
 * (with *was set) when the job's status is not in t->allowed. The statement
 * has ?1 = id; the caller bound its other parameters before the call (they
 * are cleared on every path).
 */
static int transition(store_t *st, const char *id, const transition_t *t, job_status_t *was, int *cancel,
                      up_error_t *err) {
    sqlite3_stmt *s = st->wstmt[t->stmt];
    job_status_t status = JOB_STATUS_QUEUED;
    int rc = tx_begin(st, err);
    if (rc)
        goto fail;
    if ((rc = job_status(st, id, &status, cancel, err)))
        goto rollback;
    if (was)
        *was = status;
    if (!(t->allowed & (1u << status))) {
        rc = up_error_set(err, UP_ERR_INVALID, 0, "job %s is %s: cannot %s it", id, job_status_name(status),
                          t->what);
        goto rollback;
    }
    bind_text(s, 1, id);
    if ((rc = exec_stmt(st, t->stmt, t->what, err)))
        goto rollback;
    return tx_commit(st, err);
rollback:
    tx_rollback(st);
fail:
    done(s);
    return rc;
}

#define BIT(s) (1u << (s))

int store_job_progress(store_t *st, const char *id, int progress, int *cancel, up_error_t *err) {
    assert(st && id);
    static const transition_t t = {S_PROGRESS, BIT(JOB_STATUS_PROCESSING), "report progress of"};
    if (progress < 0)
        progress = 0;
    if (progress > 100)
        progress = 100;
    int c = 0;
    pthread_mutex_lock(&st->wmu);
    sqlite3_bind_int(st->wstmt[S_PROGRESS], 2, progress);
    int rc = transition(st, id, &t, NULL, &c, err);
    pthread_mutex_unlock(&st->wmu);
    if (cancel)
        *cancel = c;
    return rc;
}

int store_job_complete(store_t *st, const job_t *job, double retention_s, up_error_t *err) {
    assert(st && job);
    static const transition_t t = {S_COMPLETE, BIT(JOB_STATUS_PROCESSING), "complete"};
    double now = now_s();
    pthread_mutex_lock(&st->wmu);
    sqlite3_stmt *s = st->wstmt[S_COMPLETE];
    bind_text(s, 2, job->result_path);
    bind_text(s, 3, job->result_format);
    sqlite3_bind_int(s, 4, job->output_width);
    sqlite3_bind_int(s, 5, job->output_height);
    sqlite3_bind_int64(s, 6, job->result_bytes);
    sqlite3_bind_double(s, 7, now);
    sqlite3_bind_double(s, 8, now + retention_s);
    int rc = transition(st, job->id, &t, NULL, NULL, err);
    pthread_mutex_unlock(&st->wmu);
    return rc;
}

int store_job_fail(store_t *st, const char *id, const char *message, double retention_s, up_error_t *err) {
    assert(st && id);
    /* a queued job may fail too (e.g. its input vanished before a worker took it) */
    static const transition_t t = {S_FAIL, BIT(JOB_STATUS_PROCESSING) | BIT(JOB_STATUS_QUEUED), "fail"};
    double now = now_s();
    pthread_mutex_lock(&st->wmu);
    sqlite3_stmt *s = st->wstmt[S_FAIL];
    bind_text(s, 2, message && *message ? message : "unknown error");
    sqlite3_bind_double(s, 3, now);
    sqlite3_bind_double(s, 4, now + retention_s);
    int rc = transition(st, id, &t, NULL, NULL, err);
    pthread_mutex_unlock(&st->wmu);
    return rc;
}

int store_job_cancel(store_t *st, const char *id, job_status_t *was, up_error_t *err) {
    assert(st && id);
    job_status_t status = JOB_STATUS_QUEUED;
    pthread_mutex_lock(&st->wmu);
    int rc = tx_begin(st, err);
    if (rc)
        goto out;
    if ((rc = job_status(st, id, &status, NULL, err)))
        goto rollback;
    if (was)
        *was = status;
    if (status == JOB_STATUS_QUEUED) {
        sqlite3_stmt *s = st->wstmt[S_CANCEL_QUEUED];
        bind_text(s, 1, id);
        sqlite3_bind_double(s, 2, now_s());
        rc = exec_stmt(st, S_CANCEL_QUEUED, "cannot cancel a job", err);
    } else if (status == JOB_STATUS_PROCESSING) {
        sqlite3_stmt *s = st->wstmt[S_CANCEL_REQUEST];
        bind_text(s, 1, id);
        rc = exec_stmt(st, S_CANCEL_REQUEST, "cannot cancel a job", err);
    } else {
        rc = up_error_set(err, UP_ERR_INVALID, 0, "job %s is already %s", id, job_status_name(status));
    }
    if (rc)
        goto rollback;
    rc = tx_commit(st, err);
    goto out;
rollback:
    tx_rollback(st);
out:
    pthread_mutex_unlock(&st->wmu);
    return rc;
}

int store_job_cancelled(store_t *st, const char *id, double retention_s, up_error_t *err) {
    assert(st && id);
    static const transition_t t = {S_CANCELLED, BIT(JOB_STATUS_PROCESSING), "mark cancelled"};
    pthread_mutex_lock(&st->wmu);
    sqlite3_stmt *s = st->wstmt[S_CANCELLED];
    sqlite3_bind_double(s, 2, now_s());
    sqlite3_bind_double(s, 3, retention_s);
    int rc = transition(st, id, &t, NULL, NULL, err);
    pthread_mutex_unlock(&st->wmu);
    return rc;
}

int store_job_requeue(store_t *st, const char *id, up_error_t *err) {
    assert(st && id);
    static const transition_t t = {S_REQUEUE, BIT(JOB_STATUS_PROCESSING), "requeue"};
    pthread_mutex_lock(&st->wmu);
    int rc = transition(st, id, &t, NULL, NULL, err);
    pthread_mutex_unlock(&st->wmu);
    return rc;
}

int store_jobs_recover(store_t *st, int max_attempts, double retention_s, int *n_requeued, int *n_failed,
                       up_error_t *err) {
    assert(st);
    int failed = 0, requeued = 0;
    pthread_mutex_lock(&st->wmu);
    int rc = tx_begin(st, err);
    if (rc)
        goto out;
    sqlite3_stmt *s = st->wstmt[S_RECOVER_FAIL];
    sqlite3_bind_int(s, 1, max_attempts);
    sqlite3_bind_double(s, 2, now_s());
    sqlite3_bind_double(s, 3, retention_s);
    if ((rc = exec_stmt(st, S_RECOVER_FAIL, "cannot recover jobs", err)))
        goto rollback;
    failed = sqlite3_changes(st->w);
    if ((rc = exec_stmt(st, S_RECOVER_REQUEUE, "cannot recover jobs", err)))
        goto rollback;
    requeued = sqlite3_changes(st->w);
    if ((rc = tx_commit(st, err)))
        goto out;
    goto out;
rollback:
    tx_rollback(st);
out:
    pthread_mutex_unlock(&st->wmu);
    if (rc)
        failed = requeued = 0;
    if (n_requeued)
        *n_requeued = requeued;
    if (n_failed)
        *n_failed = failed;
    return rc;
}

int store_job_downloaded(store_t *st, const char *id, up_error_t *err) {
    assert(st && id);
    static const transition_t t = {S_DOWNLOADED, BIT(JOB_STATUS_COMPLETED), "download"};
    pthread_mutex_lock(&st->wmu);
    int rc = transition(st, id, &t, NULL, NULL, err);
    pthread_mutex_unlock(&st->wmu);
    return rc;
}

int store_job_expire(store_t *st, const char *id, up_error_t *err) {
    assert(st && id);
    static const transition_t t = {S_EXPIRE,
                                   BIT(JOB_STATUS_COMPLETED) | BIT(JOB_STATUS_FAILED) |
                                       BIT(JOB_STATUS_CANCELLED) | BIT(JOB_STATUS_EXPIRED),
                                   "expire"};
    pthread_mutex_lock(&st->wmu);
    int rc = transition(st, id, &t, NULL, NULL, err);
    pthread_mutex_unlock(&st->wmu);
    return rc;
}

int store_job_input_deleted(store_t *st, const char *id, up_error_t *err) {
    assert(st && id);
    static const transition_t t = {S_INPUT_DELETED, 0x3fu, "clear the input of"};
    pthread_mutex_lock(&st->wmu);
    int rc = transition(st, id, &t, NULL, NULL, err);
    pthread_mutex_unlock(&st->wmu);
    return rc;
}

/* ---- reads ------------------------------------------------------------------ */

int store_job_get(store_t *st, const char *id, job_t *out, up_error_t *err) {
    assert(st && id && out);
    pthread_mutex_lock(&st->rmu);
    sqlite3_stmt *s = st->rstmt[R_GET];
    bind_text(s, 1, id);
    int src = sqlite3_step(s), rc = UP_OK;
    if (src == SQLITE_ROW)
        read_row(s, out);
    else if (src == SQLITE_DONE)
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no job %s", id);
    else
        rc = db_error(st->r, err, "cannot read a job");
    done(s);
    pthread_mutex_unlock(&st->rmu);
    return rc;
}

int store_jobs_due(store_t *st, double now, job_t *jobs, int max, int *n, up_error_t *err) {
    assert(st && n && (jobs || max <= 0));
    *n = 0;
    if (max <= 0)
        return UP_OK;
    pthread_mutex_lock(&st->rmu);
    sqlite3_stmt *s = st->rstmt[R_DUE];
    sqlite3_bind_double(s, 1, now);
    sqlite3_bind_int(s, 2, max);
    int src, rc = UP_OK;
    while ((src = sqlite3_step(s)) == SQLITE_ROW && *n < max)
        read_row(s, &jobs[(*n)++]);
    if (src != SQLITE_ROW && src != SQLITE_DONE)
        rc = db_error(st->r, err, "cannot list expired jobs");
    done(s);
    pthread_mutex_unlock(&st->rmu);
    return rc;
}

int store_job_counts(store_t *st, long long *counts, up_error_t *err) {
    assert(st && counts);
    for (int i = 0; i <= JOB_STATUS_EXPIRED; i++)
        counts[i] = 0;
    pthread_mutex_lock(&st->rmu);
    sqlite3_stmt *s = st->rstmt[R_COUNTS];
    int src, rc = UP_OK;
    while ((src = sqlite3_step(s)) == SQLITE_ROW) {
        int status = sqlite3_column_int(s, 0);
        if (status >= 0 && status <= JOB_STATUS_EXPIRED)
            counts[status] = sqlite3_column_int64(s, 1);
    }
    if (src != SQLITE_DONE)
        rc = db_error(st->r, err, "cannot count jobs");
    done(s);
    pthread_mutex_unlock(&st->rmu);
    return rc;
}
