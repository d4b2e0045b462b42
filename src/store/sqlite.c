/*
 * sqlite.c - the job store on SQLite (implements store.h), the embedded
 * default: data_dir/upres.db beside the uploads and results folders, or
 * the file a sqlite: URL names. This file opens it (connections, schema,
 * migrations), holds the helpers the backend's files share and its table
 * of functions; jobs are sqlite_jobs.c's, keys and charges sqlite_keys.c's
 * (sqlite_int.h).
 *
 * DESIGN
 *
 * Connections: two, each guarded by its own mutex. The writer connection
 * runs every write, always inside BEGIN IMMEDIATE, so the write lock is taken
 * before anything is read and a transaction never has to be retried halfway
 * (a deferred transaction that reads and then writes can fail with
 * SQLITE_BUSY_SNAPSHOT, which the busy handler does not retry). The reader
 * connection answers store_job_get, store_jobs_list, store_job_counts, the
 * asset and key reads: in WAL mode readers never wait for the writer, so polling
 * clients (GET /status) are not held up behind a commit's fsync. Another
 * process on the same file (a second server, `upres worker`) is serialised
 * by SQLite's own locks; busy_timeout makes it wait rather than fail.
 *
 * Durability: journal_mode=WAL, synchronous=FULL. With NORMAL a WAL commit
 * survives a crash of the process (kill -9) but not a power cut; FULL also
 * fsyncs the WAL at every commit, so a job answered 202 is on disk. A job
 * makes few writes (insert, claim, start, progress at most a few per
 * second, complete), so the extra fsync costs little.
 *
 * Order: claim takes the queued job with the highest priority, then the
 * smallest fair-queueing tag (vtag), then the smallest seq, whose
 * not_before has passed (store.h "Order"): one scan of the partial index
 * jobs_fair, which holds the queued jobs only. seq is the rowid, which is
 * insertion order (AUTOINCREMENT: never reused, so a listing cursor stays
 * valid). A submission reads each new job's V and L (S_FAIR) from
 * jobs_fair, jobs_queue (the held jobs) and jobs_owner_fair, one probe
 * each; the statements name the index (INDEXED BY) where the planner,
 * without statistics or with them, would take another.
 *
 * Claims: the claim writes the worker id, the lease (lease_s, lease_until)
 * and counts the attempt in the row. Every write a worker makes reads
 * (status, attempts, worker) in its BEGIN IMMEDIATE transaction and runs
 * only when (worker, attempts) is still its fence, so the check and the
 * write are one step for every process on the file: a superseded worker
 * gets UP_ERR_CONFLICT and changes nothing. A rescue or a requeue clears
 * the worker, so the old holder is refused even before anyone claims the
 * job again. Times are each process's wall clock: the processes sharing a
 * file share a machine (or NTP-synchronised clocks), and a lease is long
 * against any skew.
 *
 * Charges: a job row carries its own charge (credits, refunded); there is
 * no ledger table. A key's usage in a period is the sum of the credits of
 * its jobs made in the period and not refunded. store_job_insert_charged
 * reads the key, sums the usage, takes the credits off the balance and
 * inserts the job in one BEGIN IMMEDIATE transaction, so concurrent
 * charges (threads, processes) serialise on the write lock and a balance
 * never goes below zero. A refund is the update `refunded = 1 WHERE
 * refunded = 0`, run in the transaction that ends the job: only the
 * transaction that flips the flag gives the credits back, so a charge is
 * refunded at most once. An operator's top-up (store_key_update) is the
 * update `credits = credits + N`, also under BEGIN IMMEDIATE, so a top-up
 * and a concurrent charge never lose each other's change.
 *
 * Schema version: PRAGMA user_version (SCHEMA_VERSION below). Version 1
 * (jobs only), 2 (accounts), 3 (Idempotency-Key answers, a job's colour
 * setting), 4 (claims: worker, lease, backoff), 5 (files by blob key) and
 * 6 (assets and steps), 7 (guest sessions, a job's dialect fields) and 8
 * (scheduling) are migrated in place to version 9 (the workers registry)
 * at open, in the
 * transaction that checks the
 * version. A job a version-3 upres left claimed or processing has no lease
 * (lease_until 0): the first rescue takes it, as the start-up recovery
 * did. Version 5 renames input_path and result_path to input_key
 * and result_key and turns each stored path, absolute or relative to
 * whatever folder that upres ran in, into a key: every path an upres wrote
 * is DATA/uploads/<name> or DATA/results/<name>, so the key is its last two
 * segments; a value that is not such a path names no file of ours and is
 * cleared (logged). Version 6 moves each job's input into an asset row of
 * its own (one-shot: id = the job's id) and drops the input columns; a
 * job reads its input_* through a join with its asset, so a job row and
 * its asset are always read in one statement (one snapshot). Version 7
 * adds guest sessions to the keys (guest, reset_at: every key before was
 * an operator's, never reset) and a job's dialect fields (meta, '' for
 * the jobs before). Version 8 adds scheduling: priority (0 for the jobs
 * before) and vtag (0: the jobs queued before the migration keep their
 * first-come order and go before every later one) and the fair-queueing
 * indexes; a new database is made as version 7 and then migrated, so the
 * two are the same. Version 9 adds the workers registry. A database made by a newer upres is refused rather
 * than misread.
 *
 * Assets: store_asset_due and store_assets_due run on the writer, in a
 * BEGIN IMMEDIATE transaction: they see every submission committed before
 * them, and a submission after them finds the asset past its expires_at
 * and refuses it, so a file found due is never the input of a job that
 * was accepted (the processes' clocks agreeing, as for leases). A
 * submission checks the asset it names (owner, key, expiry) in its own
 * transaction.
 */
#include <assert.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blob/blob.h"
#include "core/log.h"
#include "core/text.h"
#include "core/xmalloc.h"
#include "store/sqlite_int.h"

#define SCHEMA_VERSION 9
#define BUSY_TIMEOUT_MS 10000

/*
 * Version 2 additions shared by a new database and the migration from
 * version 1; more = the keys columns a later version added (KEYS_V7_COLUMNS
 * for a new database, "" for the migration, whose later steps add them).
 */
#define ACCOUNTS_SQL(more)                                                                                   \
    "CREATE TABLE IF NOT EXISTS keys ("                                                                      \
    " id TEXT NOT NULL PRIMARY KEY,"                                                                         \
    " name TEXT NOT NULL DEFAULT '',"                                                                        \
    " prefix TEXT NOT NULL DEFAULT '',"                                                                      \
    " hash BLOB NOT NULL UNIQUE CHECK (length(hash) = 32),"                                                  \
    " tier TEXT NOT NULL DEFAULT '',"                                                                        \
    " quota INTEGER NOT NULL DEFAULT -1,"                                                                    \
    " credits INTEGER NOT NULL DEFAULT -1,"                                                                  \
    " created_at REAL NOT NULL DEFAULT 0,"                                                                   \
    " last_used_at REAL NOT NULL DEFAULT 0,"                                                                 \
    " revoked_at REAL NOT NULL DEFAULT 0" more ");"                                                          \
    "CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner, seq);"                                             \
    "CREATE INDEX IF NOT EXISTS jobs_owner_time ON jobs(owner, created_at);"

/*
 * Version 3 additions shared by a new database and the migrations: the
 * answers of submissions made with an Idempotency-Key (one per key and
 * scope, inserted in the job's own transaction), and a job's colour setting.
 */
#define IDEMPOTENCY_SQL                                                                                      \
    "CREATE TABLE IF NOT EXISTS idempotency ("                                                               \
    " scope TEXT NOT NULL," /* the API key id that sent it, '' = anonymous */                                \
    " key TEXT NOT NULL,"                                                                                    \
    " request_hash BLOB NOT NULL CHECK (length(request_hash) = 32),"                                         \
    " status INTEGER NOT NULL,"                                                                              \
    " body TEXT NOT NULL,"                                                                                   \
    " job_id TEXT NOT NULL,"                                                                                 \
    " created_at REAL NOT NULL,"                                                                             \
    " PRIMARY KEY (scope, key)"                                                                              \
    ");"                                                                                                     \
    "CREATE INDEX IF NOT EXISTS idempotency_time ON idempotency(created_at);"

/*
 * Version 6 additions shared by a new database and the migration from
 * version 5: a job's input asset. jobs_asset answers "does a live job use
 * this asset" (store_assets_due) with an index lookup.
 */
#define ASSETS_SQL                                                                                           \
    "CREATE TABLE IF NOT EXISTS assets ("                                                                    \
    " id TEXT NOT NULL PRIMARY KEY,"                                                                         \
    " owner TEXT NOT NULL DEFAULT ''," /* api key id, '' = anonymous */                                      \
    " key TEXT NOT NULL DEFAULT '',"   /* the file's blob key, '' once deleted */                            \
    " name TEXT NOT NULL DEFAULT '',"                                                                        \
    " format TEXT NOT NULL DEFAULT '',"                                                                      \
    " width INTEGER NOT NULL DEFAULT 0,"                                                                     \
    " height INTEGER NOT NULL DEFAULT 0,"                                                                    \
    " frames INTEGER NOT NULL DEFAULT 1,"                                                                    \
    " bytes INTEGER NOT NULL DEFAULT 0,"                                                                     \
    " created_at REAL NOT NULL DEFAULT 0,"                                                                   \
    " expires_at REAL NOT NULL DEFAULT 0" /* the file may go once past, and no live job uses it */           \
    ");"                                                                                                     \
    "CREATE INDEX IF NOT EXISTS assets_expiry ON assets(expires_at) WHERE key <> '';"
#define JOBS_ASSET_INDEX_SQL "CREATE INDEX IF NOT EXISTS jobs_asset ON jobs(asset_id, status);"

/*
 * Version 7: guest sessions as key rows (guest, reset_at) and a job's
 * dialect fields (meta). The columns, as a new keys table declares them
 * and as the migration adds them (the same text, so that both schemas
 * read the same). keys_guest lists the operator's keys without reading
 * the guest sessions; jobs_model_done finds a model's latest completed
 * jobs (store_model_rate; its WHERE is the statement's, word for word, so
 * the planner can use it).
 */
#define KEYS_GUEST_COLUMN " guest INTEGER NOT NULL DEFAULT 0" /* 1 = a guest session */
#define KEYS_RESET_COLUMN " reset_at REAL NOT NULL DEFAULT 0" /* the last daily reset, 0 = never */
#define KEYS_V7_COLUMNS "," KEYS_GUEST_COLUMN "," KEYS_RESET_COLUMN
#define JOBS_META_COLUMN " meta TEXT NOT NULL DEFAULT ''" /* the dialect's own fields, JSON */
#define V7_INDEX_SQL                                                                                         \
    "CREATE INDEX IF NOT EXISTS keys_guest ON keys(guest, created_at);"                                      \
    "CREATE INDEX IF NOT EXISTS jobs_model_done ON jobs(model, completed_at) WHERE " SQ_DONE_WHERE ";"

/*
 * Version 9: the workers registry (store.h "The workers registry"), one
 * row per process that runs jobs, by name. A new database and the
 * migration from version 8 run the same text.
 */
#define WORKERS_SQL                                                                                          \
    "CREATE TABLE IF NOT EXISTS workers ("                                                                   \
    " name TEXT NOT NULL PRIMARY KEY,"                                                                       \
    " host TEXT NOT NULL DEFAULT '',"                                                                        \
    " pid INTEGER NOT NULL DEFAULT 0,"                                                                       \
    " models TEXT NOT NULL DEFAULT ''," /* comma-separated, '' = every model */                              \
    " slots INTEGER NOT NULL DEFAULT 1,"                                                                     \
    " lease_s REAL NOT NULL DEFAULT 0," /* live while heartbeat_at + lease_s >= now */                       \
    " started_at REAL NOT NULL DEFAULT 0,"                                                                   \
    " heartbeat_at REAL NOT NULL DEFAULT 0,"                                                                 \
    " jobs TEXT NOT NULL DEFAULT ''," /* the job ids it runs now, comma-separated */                         \
    " state TEXT NOT NULL DEFAULT 'running'"                                                                 \
    ");"

/*
 * The whole schema, for a new database. The account columns of jobs come
 * last, where the migration's ALTER TABLE puts them, so that a migrated
 * table and a new one are the same.
 */
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
    " result_key TEXT NOT NULL DEFAULT '',"
    " result_format TEXT NOT NULL DEFAULT '',"
    " output_width INTEGER NOT NULL DEFAULT 0,"
    " output_height INTEGER NOT NULL DEFAULT 0,"
    " result_bytes INTEGER NOT NULL DEFAULT 0,"
    " created_at REAL NOT NULL DEFAULT 0,"
    " started_at REAL NOT NULL DEFAULT 0,"
    " completed_at REAL NOT NULL DEFAULT 0,"
    " expires_at REAL NOT NULL DEFAULT 0,"
    " error TEXT NOT NULL DEFAULT '',"
    " model_alias TEXT NOT NULL DEFAULT '',"
    " owner TEXT NOT NULL DEFAULT ''," /* api key id, '' = anonymous */
    " tier TEXT NOT NULL DEFAULT '',"
    " credits INTEGER NOT NULL DEFAULT 0,"  /* charged at insert */
    " refunded INTEGER NOT NULL DEFAULT 0," /* 1 once the charge was given back */
    " keep_s REAL NOT NULL DEFAULT 0,"      /* the result is kept at least this long; 0 = the retention */
    " colour TEXT NOT NULL DEFAULT '',"     /* '' = the server's default, 'srgb', 'keep' */
    " worker TEXT NOT NULL DEFAULT '',"     /* the current claim's worker id, '' = none */
    " lease_s REAL NOT NULL DEFAULT 0,"     /* its lease length, seconds */
    " lease_until REAL NOT NULL DEFAULT 0," /* its lease end, Unix seconds; 0 = none */
    " not_before REAL NOT NULL DEFAULT 0,"  /* a queued job is not claimed before this */
    " asset_id TEXT NOT NULL DEFAULT '',"   /* the input (assets.id) */
    " steps TEXT NOT NULL DEFAULT '',"      /* the pipeline, JSON (steps.h) */
    " report TEXT NOT NULL DEFAULT '',"     /* what each step did, JSON; '' until completed */
    JOBS_META_COLUMN ");"
    "CREATE INDEX IF NOT EXISTS jobs_queue ON jobs(status, created_at, seq);"
    "CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs(expires_at) WHERE expires_at > 0;" ACCOUNTS_SQL(
        KEYS_V7_COLUMNS) IDEMPOTENCY_SQL ASSETS_SQL JOBS_ASSET_INDEX_SQL V7_INDEX_SQL WORKERS_SQL;

/* Version 1 (jobs only) -> 2: the jobs made before carry no owner and no charge. */
static const char migrate_v2_sql[] =
    "ALTER TABLE jobs ADD COLUMN model_alias TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE jobs ADD COLUMN tier TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE jobs ADD COLUMN credits INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE jobs ADD COLUMN refunded INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE jobs ADD COLUMN keep_s REAL NOT NULL DEFAULT 0;" ACCOUNTS_SQL("");

/* Version 2 -> 3. */
static const char migrate_v3_sql[] =
    "ALTER TABLE jobs ADD COLUMN colour TEXT NOT NULL DEFAULT '';" IDEMPOTENCY_SQL;

/* Version 3 -> 4: claims with an owner and a lease. */
static const char migrate_v4_sql[] = "ALTER TABLE jobs ADD COLUMN worker TEXT NOT NULL DEFAULT '';"
                                     "ALTER TABLE jobs ADD COLUMN lease_s REAL NOT NULL DEFAULT 0;"
                                     "ALTER TABLE jobs ADD COLUMN lease_until REAL NOT NULL DEFAULT 0;"
                                     "ALTER TABLE jobs ADD COLUMN not_before REAL NOT NULL DEFAULT 0;";

/* Version 4 -> 5: files by blob key (the values are converted by migrate_keys). */
static const char migrate_v5_sql[] = "ALTER TABLE jobs RENAME COLUMN input_path TO input_key;"
                                     "ALTER TABLE jobs RENAME COLUMN result_path TO result_key;";

/*
 * Version 5 -> 6: each job's input becomes its one-shot asset (id = the
 * job's id), due when the job has ended: at the job's expires_at for a
 * finished job (when the old sweeper deleted an input left behind), at
 * once for a live one (created_at: the asset is kept while the job lives);
 * each job gets the pipeline its settings describe; the input columns go
 * (no index or constraint names them, so DROP COLUMN is clean).
 */
static const char migrate_v6_sql[] = ASSETS_SQL
    "INSERT INTO assets (id, owner, key, name, format, width, height, frames, bytes, created_at, expires_at)"
    " SELECT id, owner, input_key, input_name, input_format, input_width, input_height, 1, input_bytes,"
    " created_at, CASE WHEN status IN (2, 3, 4, 5) THEN expires_at ELSE created_at END FROM jobs;"
    "ALTER TABLE jobs ADD COLUMN asset_id TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE jobs ADD COLUMN steps TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE jobs ADD COLUMN report TEXT NOT NULL DEFAULT '';"
    "UPDATE jobs SET asset_id = id,"
    " steps = " SQ_DEFAULT_STEPS("model", "scale", "tile", "format",
                                 "quality") ";"
                                            "ALTER TABLE jobs DROP COLUMN input_key;"
                                            "ALTER TABLE jobs DROP COLUMN input_name;"
                                            "ALTER TABLE jobs DROP COLUMN input_format;"
                                            "ALTER TABLE jobs DROP COLUMN input_width;"
                                            "ALTER TABLE jobs DROP COLUMN input_height;"
                                            "ALTER TABLE jobs DROP COLUMN input_bytes;" JOBS_ASSET_INDEX_SQL;

/*
 * Version 6 -> 7: every key made so far is an operator's key, never reset;
 * every job so far has no dialect fields.
 */
static const char migrate_v7_sql[] = "ALTER TABLE keys ADD COLUMN" KEYS_GUEST_COLUMN ";"
                                     "ALTER TABLE keys ADD COLUMN" KEYS_RESET_COLUMN ";"
                                     "ALTER TABLE jobs ADD COLUMN" JOBS_META_COLUMN ";" V7_INDEX_SQL;

/*
 * Version 7 -> 8: scheduling (store.h "Order"). jobs_fair is the claim's
 * order over the queued jobs only; jobs_owner_fair finds an owner's
 * largest queued tag at a priority level (the held jobs' largest tag is
 * read from jobs_queue's status range: a handful of rows). Each index
 * costs every status change a write, so there are no more than these.
 */
static const char migrate_v8_sql[] =
    "ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE jobs ADD COLUMN vtag REAL NOT NULL DEFAULT 0;"
    "CREATE INDEX IF NOT EXISTS jobs_fair ON jobs(priority DESC, vtag, seq) WHERE status = 0;"
    "CREATE INDEX IF NOT EXISTS jobs_owner_fair ON jobs(owner, priority, vtag) WHERE status = 0;";

/* Version 8 -> 9: the workers registry, empty (the processes running now register at their next start). */
static const char migrate_v9_sql[] = WORKERS_SQL;

/* ---- helpers (sqlite_int.h) ------------------------------------------------------- */

int sq_db_error(sqlite3 *db, up_error_t *err, const char *what) {
    int rc = up_error_set(err, UP_ERR_IO, 0, "job store: %s: %s", what, sqlite3_errmsg(db));
    log_error("job store: %s: %s", what, sqlite3_errmsg(db));
    return rc;
}

void sq_copy_text(char *dst, size_t size, sqlite3_stmt *s, int col) {
    const char *t = (const char *)sqlite3_column_text(s, col);
    text_utf8_copy(dst, size, t ? t : "", t ? (size_t)sqlite3_column_bytes(s, col) : 0);
}

void sq_done(sqlite3_stmt *s) {
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
}

void sq_bind_text(sqlite3_stmt *s, int i, const char *t) {
    sqlite3_bind_text(s, i, t ? t : "", -1, SQLITE_TRANSIENT);
}

int sq_step_insert(sq_store_t *q, sqlite3_stmt *s, int clash, const char *who, const char *what,
                   up_error_t *err) {
    int src = sqlite3_step(s);
    sq_done(s);
    if (src == SQLITE_CONSTRAINT_UNIQUE || src == SQLITE_CONSTRAINT_PRIMARYKEY)
        return up_error_set(err, clash, 0, "job store: %s", who);
    if (src != SQLITE_DONE)
        return sq_db_error(q->w, err, what);
    return UP_OK;
}

int sq_exec(sq_store_t *q, sqlite3_stmt *s, const char *what, up_error_t *err) {
    int rc = sqlite3_step(s);
    sq_done(s);
    if (rc != SQLITE_DONE)
        return sq_db_error(q->w, err, what);
    return UP_OK;
}

int sq_tx_begin(sq_store_t *q, up_error_t *err) {
    return sq_exec(q, q->begin, "cannot begin a transaction", err);
}

static void tx_rollback(sq_store_t *q) {
    if (!sqlite3_get_autocommit(q->w))
        sq_exec(q, q->rollback, "cannot roll back", NULL);
}

int sq_tx_end(sq_store_t *q, int rc, up_error_t *err) {
    if (rc) {
        tx_rollback(q);
        return rc;
    }
    rc = sq_exec(q, q->commit, "cannot commit", err);
    if (rc)
        tx_rollback(q);
    return rc;
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

/*
 * The blob key of a path an older upres stored (see DESIGN): its last two
 * segments when the first of them is uploads or results and they make a
 * valid key, else "" (and 0 is returned). A key already is such a path.
 */
static int path_to_key(const char *path, char *key, size_t size) {
    key[0] = '\0';
    size_t n = strlen(path);
    while (n > 0 && path[n - 1] == '/')
        n--;
    size_t last = n;
    while (last > 0 && path[last - 1] != '/')
        last--;
    if (last < 2)
        return 0;
    size_t dir = last - 1; /* the '/' before the name */
    while (dir > 0 && path[dir - 1] != '/')
        dir--;
    size_t len = n - dir;
    int folder = (last - 1 - dir == 7 && strncmp(path + dir, "uploads", 7) == 0) ||
                 (last - 1 - dir == 7 && strncmp(path + dir, "results", 7) == 0);
    if (!folder || len >= size || !blob_key_check(path + dir, len))
        return 0;
    memcpy(key, path + dir, len);
    key[len] = '\0';
    return 1;
}

/* Inside the migration's transaction: every stored path becomes a blob key (version 5). */
static int migrate_keys(sqlite3 *db, up_error_t *err) {
    typedef struct {
        long long seq;
        char in[256], res[256];
    } row_t;
    row_t *rows = NULL;
    int n = 0, cap = 0, rc = UP_OK, n_cleared = 0;
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(
            db, "SELECT seq, input_key, result_key FROM jobs WHERE input_key <> '' OR result_key <> ''", -1,
            &s, NULL) != SQLITE_OK)
        return sq_db_error(db, err, "cannot read the stored paths");
    int src;
    while ((src = sqlite3_step(s)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            rows = xrealloc(rows, sizeof *rows * (size_t)cap);
        }
        row_t *r = &rows[n++];
        r->seq = sqlite3_column_int64(s, 0);
        for (int c = 0; c < 2; c++) {
            const char *p = (const char *)sqlite3_column_text(s, c + 1);
            char *out = c ? r->res : r->in;
            out[0] = '\0';
            if (p && *p && !path_to_key(p, out, sizeof r->in)) {
                log_warn("job store: job row %lld: '%.300s' is no upload or result of a data folder: cleared",
                         r->seq, p);
                n_cleared++;
            }
        }
    }
    if (src != SQLITE_DONE)
        rc = sq_db_error(db, err, "cannot read the stored paths");
    sqlite3_finalize(s);
    s = NULL;
    if (!rc && sqlite3_prepare_v2(db, "UPDATE jobs SET input_key = ?2, result_key = ?3 WHERE seq = ?1", -1,
                                  &s, NULL) != SQLITE_OK)
        rc = sq_db_error(db, err, "cannot store the blob keys");
    for (int i = 0; i < n && !rc; i++) {
        sqlite3_bind_int64(s, 1, rows[i].seq);
        sqlite3_bind_text(s, 2, rows[i].in, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, rows[i].res, -1, SQLITE_STATIC);
        if (sqlite3_step(s) != SQLITE_DONE)
            rc = sq_db_error(db, err, "cannot store the blob keys");
        sqlite3_reset(s);
    }
    sqlite3_finalize(s);
    free(rows);
    if (!rc)
        log_info("job store: %d job row(s) now name their files by key (%d path(s) cleared)", n, n_cleared);
    return rc;
}

/*
 * Create the schema, migrate an older one in place, or check that the
 * existing one is one we know; all in one transaction, so a failed
 * migration leaves the file as it was.
 */
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
        rc = sq_db_error(db, err, "cannot read the schema version");
    } else if (version > SCHEMA_VERSION) {
        rc =
            up_error_set(err, UP_ERR_IO, 0, "job store: %s has schema version %d, newer than this upres (%d)",
                         path, version, SCHEMA_VERSION);
        log_error("%s", err ? err->msg : "job store: schema too new");
    } else if (version < SCHEMA_VERSION) {
        if (version == 0) {
            rc = exec_sql(db, schema_sql, err);
            if (!rc)
                rc = exec_sql(db, migrate_v8_sql, err);
        } else {
            assert(version >= 1 && version <= 8);
            log_info("job store: %s: migrating schema version %d to %d", path, version, SCHEMA_VERSION);
            if (version == 1)
                rc = exec_sql(db, migrate_v2_sql, err);
            if (!rc && version <= 2)
                rc = exec_sql(db, migrate_v3_sql, err);
            if (!rc && version <= 3)
                rc = exec_sql(db, migrate_v4_sql, err);
            if (!rc && version <= 4)
                rc = exec_sql(db, migrate_v5_sql, err);
            if (!rc && version <= 4)
                rc = migrate_keys(db, err);
            if (!rc && version <= 5)
                rc = exec_sql(db, migrate_v6_sql, err);
            if (!rc && version <= 6)
                rc = exec_sql(db, migrate_v7_sql, err);
            if (!rc && version <= 7)
                rc = exec_sql(db, migrate_v8_sql, err);
            if (!rc)
                rc = exec_sql(db, migrate_v9_sql, err);
        }
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", SCHEMA_VERSION);
        if (!rc)
            rc = exec_sql(db, sql, err);
    }
    if (rc) {
        exec_sql(db, "ROLLBACK", NULL);
        return rc;
    }
    return exec_sql(db, "COMMIT", err);
}

/* A file's statements prepared on db, into a new array *out (on failure too: finalize_all frees it). */
static int prepare_all(sqlite3 *db, const sq_sql_t *t, sqlite3_stmt ***out, up_error_t *err) {
    sqlite3_stmt **stmts = xcalloc((size_t)t->n, sizeof *stmts);
    *out = stmts;
    for (int i = 0; i < t->n; i++) {
        assert(t->sql[i]);
        if (sqlite3_prepare_v3(db, t->sql[i], -1, SQLITE_PREPARE_PERSISTENT, &stmts[i], NULL) != SQLITE_OK)
            return sq_db_error(db, err, "cannot prepare a statement");
    }
    return UP_OK;
}

static int prepare_one(sqlite3 *db, const char *sql, sqlite3_stmt **out, up_error_t *err) {
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL) != SQLITE_OK)
        return sq_db_error(db, err, "cannot prepare a statement");
    return UP_OK;
}

static void finalize_all(sqlite3_stmt **stmts, int n) {
    for (int i = 0; stmts && i < n; i++)
        sqlite3_finalize(stmts[i]);
    free(stmts);
}

static void close_store(store_t *st) {
    sq_store_t *q = sq_of(st);
    finalize_all(q->jw, sq_jobs_wsql.n);
    finalize_all(q->jr, sq_jobs_rsql.n);
    finalize_all(q->kw, sq_keys_wsql.n);
    finalize_all(q->kr, sq_keys_rsql.n);
    finalize_all(q->ww, sq_workers_wsql.n);
    finalize_all(q->wr, sq_workers_rsql.n);
    sqlite3_finalize(q->begin);
    sqlite3_finalize(q->commit);
    sqlite3_finalize(q->rollback);
    sqlite3_close(q->r);
    sqlite3_close(q->w);
    pthread_mutex_destroy(&q->wmu);
    pthread_mutex_destroy(&q->rmu);
    free(q);
}

static const store_vtbl_t sqlite_vtbl = {
    .name = "sqlite",
    .close = close_store,
    .jobs_submit = sq_jobs_submit,
    .idem_get = sq_idem_get,
    .asset_insert = sq_asset_insert,
    .asset_get = sq_asset_get,
    .assets_due = sq_assets_due,
    .asset_due = sq_asset_due,
    .asset_deleted = sq_asset_deleted,
    .job_get = sq_job_get,
    .job_claim = sq_job_claim,
    .job_start = sq_job_start,
    .job_progress = sq_job_progress,
    .job_heartbeat = sq_job_heartbeat,
    .job_complete = sq_job_complete,
    .job_fail = sq_job_fail,
    .job_cancel = sq_job_cancel,
    .job_cancelled = sq_job_cancelled,
    .job_requeue = sq_job_requeue,
    .jobs_rescue = sq_jobs_rescue,
    .job_downloaded = sq_job_downloaded,
    .jobs_due = sq_jobs_due,
    .job_expire = sq_job_expire,
    .blobs_referenced = sq_blobs_referenced,
    .job_counts = sq_job_counts,
    .model_counts = sq_model_counts,
    .jobs_list = sq_jobs_list,
    .key_insert = sq_key_insert,
    .key_by_hash = sq_key_by_hash,
    .key_find = sq_key_find,
    .key_list = sq_key_list,
    .key_revoke = sq_key_revoke,
    .key_update = sq_key_update,
    .key_touch = sq_key_touch,
    .key_usage = sq_key_usage,
    .job_queue_position = sq_job_queue_position,
    .model_rate = sq_model_rate,
    .keys_reset_guests = sq_keys_reset_guests,
    .usage_daily = sq_usage_daily,
    .worker_register = sq_worker_register,
    .worker_heartbeat = sq_worker_heartbeat,
    .worker_remove = sq_worker_remove,
    .workers_list = sq_workers_list,
    .schema_version = sq_schema_version,
};

int store_sqlite_open(const char *path, store_t **out, up_error_t *err) {
    assert(path && out);
    *out = NULL;
    sq_store_t *q = xcalloc(1, sizeof *q);
    q->base.vtbl = &sqlite_vtbl;
    pthread_mutex_init(&q->wmu, NULL);
    pthread_mutex_init(&q->rmu, NULL);
    int rc;
    int n = snprintf(q->path, sizeof q->path, "%s", path);
    if (n < 0 || (size_t)n >= sizeof q->path) {
        rc = up_error_set(err, UP_ERR_INVALID, 0, "job store: database path too long");
        goto fail;
    }
    if ((rc = open_conn(q->path, &q->w, err)))
        goto fail;
    /* WAL is a property of the file: set once, kept by every later open */
    if ((rc = exec_sql(q->w, "PRAGMA journal_mode = WAL", err)) ||
        (rc = exec_sql(q->w, "PRAGMA synchronous = FULL", err)) ||
        (rc = exec_sql(q->w, "PRAGMA foreign_keys = ON", err)) || (rc = init_schema(q->w, q->path, err)))
        goto fail;
    if ((rc = open_conn(q->path, &q->r, err)) || (rc = exec_sql(q->r, "PRAGMA synchronous = FULL", err)))
        goto fail;
    if ((rc = prepare_one(q->w, "BEGIN IMMEDIATE", &q->begin, err)) ||
        (rc = prepare_one(q->w, "COMMIT", &q->commit, err)) ||
        (rc = prepare_one(q->w, "ROLLBACK", &q->rollback, err)) ||
        (rc = prepare_all(q->w, &sq_jobs_wsql, &q->jw, err)) ||
        (rc = prepare_all(q->r, &sq_jobs_rsql, &q->jr, err)) ||
        (rc = prepare_all(q->w, &sq_keys_wsql, &q->kw, err)) ||
        (rc = prepare_all(q->r, &sq_keys_rsql, &q->kr, err)) ||
        (rc = prepare_all(q->w, &sq_workers_wsql, &q->ww, err)) ||
        (rc = prepare_all(q->r, &sq_workers_rsql, &q->wr, err)))
        goto fail;
    *out = &q->base;
    return UP_OK;
fail:
    close_store(&q->base);
    return rc;
}
