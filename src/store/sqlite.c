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
 * connection answers store_job_get, store_jobs_list, store_job_counts and
 * the key reads: in WAL mode readers never wait for the writer, so polling
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
 * Order: claim takes the queued job with the smallest (created_at, seq)
 * whose not_before has passed; seq is the rowid, which is insertion order
 * (AUTOINCREMENT: never reused, so a listing cursor stays valid).
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
 * setting) and 4 (claims: worker, lease, backoff) are migrated in place to
 * version 5 (files by blob key) at open, in the transaction that checks
 * the version. A job a version-3 upres left claimed or processing has no
 * lease (lease_until 0): the first rescue takes it, as the start-up
 * recovery did. Version 5 renames input_path and result_path to input_key
 * and result_key and turns each stored path, absolute or relative to
 * whatever folder that upres ran in, into a key: every path an upres wrote
 * is DATA/uploads/<name> or DATA/results/<name>, so the key is its last two
 * segments; a value that is not such a path names no file of ours and is
 * cleared (logged). A database made by a newer upres is refused rather
 * than misread.
 */
#include "store/store.h"

#include <assert.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "blob/blob.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/text.h"
#include "core/xmalloc.h"

#define SCHEMA_VERSION 5
#define IDEM_KEEP_S 86400.0 /* an Idempotency-Key's answer is replayed for 24 hours */
#define BUSY_TIMEOUT_MS 10000

/* Version 2 additions shared by a new database and the migration from version 1. */
#define ACCOUNTS_SQL                                                                                         \
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
    " revoked_at REAL NOT NULL DEFAULT 0"                                                                    \
    ");"                                                                                                     \
    "CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner, seq);"                                             \
    "CREATE INDEX IF NOT EXISTS jobs_owner_time ON jobs(owner, created_at);"

/*
 * Version 3 additions shared by a new database and the migrations: the
 * answers of submissions made with an Idempotency-Key (one per key and
 * scope, inserted in the job's own transaction), and a job's colour setting.
 */
#define IDEMPOTENCY_SQL                                                                                      \
    "CREATE TABLE IF NOT EXISTS idempotency ("                                                               \
    " scope TEXT NOT NULL," /* the API key id that sent it, '' = anonymous */                               \
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
    " input_key TEXT NOT NULL DEFAULT '',"
    " input_name TEXT NOT NULL DEFAULT '',"
    " input_format TEXT NOT NULL DEFAULT '',"
    " input_width INTEGER NOT NULL DEFAULT 0,"
    " input_height INTEGER NOT NULL DEFAULT 0,"
    " input_bytes INTEGER NOT NULL DEFAULT 0,"
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
    " not_before REAL NOT NULL DEFAULT 0"   /* a queued job is not claimed before this */
    ");"
    "CREATE INDEX IF NOT EXISTS jobs_queue ON jobs(status, created_at, seq);"
    "CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs(expires_at) WHERE expires_at > 0;" ACCOUNTS_SQL
    IDEMPOTENCY_SQL;

/* Version 1 (jobs only) -> 2: the jobs made before carry no owner and no charge. */
static const char migrate_v2_sql[] =
    "ALTER TABLE jobs ADD COLUMN model_alias TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE jobs ADD COLUMN tier TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE jobs ADD COLUMN credits INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE jobs ADD COLUMN refunded INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE jobs ADD COLUMN keep_s REAL NOT NULL DEFAULT 0;" ACCOUNTS_SQL;

/* Version 2 -> 3. */
static const char migrate_v3_sql[] = "ALTER TABLE jobs ADD COLUMN colour TEXT NOT NULL DEFAULT '';" IDEMPOTENCY_SQL;

/* Version 3 -> 4: claims with an owner and a lease. */
static const char migrate_v4_sql[] = "ALTER TABLE jobs ADD COLUMN worker TEXT NOT NULL DEFAULT '';"
                                     "ALTER TABLE jobs ADD COLUMN lease_s REAL NOT NULL DEFAULT 0;"
                                     "ALTER TABLE jobs ADD COLUMN lease_until REAL NOT NULL DEFAULT 0;"
                                     "ALTER TABLE jobs ADD COLUMN not_before REAL NOT NULL DEFAULT 0;";

/* Version 4 -> 5: files by blob key (the values are converted by migrate_keys). */
static const char migrate_v5_sql[] = "ALTER TABLE jobs RENAME COLUMN input_path TO input_key;"
                                     "ALTER TABLE jobs RENAME COLUMN result_path TO result_key;";

/* Every job read returns these columns in this order (see read_row). */
#define JOB_COLUMNS                                                                                          \
    "seq, id, status, progress, attempts, cancel_requested, model, model_alias, scale, format, quality,"     \
    " tile, input_key, input_name, input_format, input_width, input_height, input_bytes,"                    \
    " result_key, result_format, output_width, output_height, result_bytes,"                                 \
    " created_at, started_at, completed_at, expires_at, error, owner, tier, credits, refunded, keep_s,"      \
    " colour, worker, lease_s, lease_until, not_before"

/* Every key read returns these columns in this order (see read_key). */
#define KEY_COLUMNS "id, name, prefix, hash, tier, quota, credits, created_at, last_used_at, revoked_at"

/*
 * A key's usage: ?1 = key id, ?2 = period start. Refunded charges do not
 * count. jobs_owner_time makes it a range scan over the period's jobs
 * rather than a read of every job the key ever made.
 */
#define USAGE_SQL                                                                                            \
    "SELECT coalesce(sum(credits), 0) FROM jobs WHERE owner = ?1 AND created_at >= ?2 AND refunded = 0"

/* Prepared statements, made once at open (SQLITE_PREPARE_PERSISTENT). */
enum {
    S_BEGIN,
    S_COMMIT,
    S_ROLLBACK,
    S_INSERT,
    S_STATUS,      /* status, cancel_requested, attempts, worker of one id */
    S_NEXT_QUEUED, /* seq of the oldest claimable queued job */
    S_CLAIM,
    S_START,
    S_PROGRESS,
    S_HEARTBEAT,
    S_COMPLETE,
    S_FAIL,
    S_CANCEL_QUEUED,
    S_CANCEL_REQUEST,
    S_CANCELLED,
    S_REQUEUE,
    S_LAPSED, /* seqs of held jobs whose lease ran out */
    S_RESCUE_CANCEL,
    S_RESCUE_FAIL,
    S_RESCUE_REQUEUE,
    S_DOWNLOADED,
    S_EXPIRE,
    S_INPUT_DELETED,
    S_W_GET_SEQ, /* writer-side read of a full row by seq (claim) */
    S_REFUND_MARK,
    S_REFUND_CREDIT,
    S_KEY_STATE, /* quota, credits, revoked_at of one key */
    S_USAGE,
    S_KEY_DEBIT,
    S_KEY_INSERT,
    S_KEY_REVOKE,
    S_KEY_TOUCH,
    S_KEY_UPDATE,
    S_W_KEY_BY_ID, /* writer-side read of a key (store_key_update's result) */
    S_IDEM_PURGE,
    S_IDEM_INSERT,
    N_WSTMT
};

enum {
    R_GET,
    R_DUE,
    R_COUNTS,
    R_LIST,
    R_KEY_BY_HASH,
    R_KEY_BY_ID,
    R_KEY_BY_PREFIX,
    R_KEY_LIST,
    R_USAGE,
    R_IDEM_GET,
    R_LAPSED, /* is there a held job whose lease ran out? */
    R_BLOB_KEYS,
    N_RSTMT
};

/* Status numbers are job_status_t: "IN (1, 6)" is a job a worker holds (processing, claimed). */
static const char *const wsql[N_WSTMT] = {
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_INSERT] = "INSERT INTO jobs (id, status, progress, attempts, cancel_requested, model, scale,"
                 " format, quality, tile, input_key, input_name, input_format, input_width,"
                 " input_height, input_bytes, created_at, model_alias, owner, tier, credits, keep_s, colour)"
                 " VALUES (?1, 0, 0, 0, 0, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,"
                 " ?14, ?15, ?16, ?17, ?18, ?19)",
    [S_STATUS] = "SELECT status, cancel_requested, attempts, worker FROM jobs WHERE id = ?1",
    [S_NEXT_QUEUED] =
        "SELECT seq FROM jobs WHERE status = 0 AND not_before <= ?1 ORDER BY created_at, seq LIMIT 1",
    [S_CLAIM] = "UPDATE jobs SET status = 6, attempts = attempts + 1, started_at = ?2, progress = 0,"
                " cancel_requested = 0, worker = ?3, lease_s = ?4, lease_until = ?2 + ?4, not_before = 0"
                " WHERE seq = ?1 AND status = 0",
    /* every write of the holder renews its lease (?2 = now); a job cancelled while claimed stays
     * claimed: store_job_cancelled then refunds it */
    [S_START] =
        "UPDATE jobs SET status = 1, lease_until = ?2 + lease_s WHERE id = ?1 AND cancel_requested = 0",
    [S_PROGRESS] = "UPDATE jobs SET progress = ?3, lease_until = ?2 + lease_s WHERE id = ?1",
    [S_HEARTBEAT] = "UPDATE jobs SET lease_until = ?2 + lease_s WHERE id = ?1",
    /* an ended job keeps its last worker (who ran it) but no lease */
    [S_COMPLETE] = "UPDATE jobs SET status = 2, progress = 100, result_key = ?3, result_format = ?4,"
                   " output_width = ?5, output_height = ?6, result_bytes = ?7, completed_at = ?2,"
                   " expires_at = max(?8, ?2 + keep_s), cancel_requested = 0, lease_until = 0 WHERE id = ?1",
    [S_FAIL] = "UPDATE jobs SET status = 3, error = ?3, completed_at = ?2, expires_at = ?4,"
               " cancel_requested = 0, lease_until = 0 WHERE id = ?1",
    /* nothing to keep: the input is due for deletion at once */
    [S_CANCEL_QUEUED] = "UPDATE jobs SET status = 4, completed_at = ?2, expires_at = ?2 WHERE id = ?1",
    [S_CANCEL_REQUEST] = "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1",
    [S_CANCELLED] = "UPDATE jobs SET status = 4, completed_at = ?2, expires_at = ?2 + ?3,"
                    " cancel_requested = 0, lease_until = 0 WHERE id = ?1",
    [S_REQUEUE] = "UPDATE jobs SET status = 0, progress = 0, started_at = 0, attempts = max(attempts - 1, 0),"
                  " cancel_requested = 0, worker = '', lease_until = 0, not_before = 0 WHERE id = ?1",
    /*
     * Rescue: ?1 = now. Each statement is masked by status and lease as the
     * finder is, so a job renewed in between (another connection cannot
     * write inside our BEGIN IMMEDIATE, but the rule costs nothing) is left.
     */
    [S_LAPSED] = "SELECT seq FROM jobs WHERE status IN (1, 6) AND lease_until < ?1 ORDER BY seq LIMIT ?2",
    [S_RESCUE_CANCEL] =
        "UPDATE jobs SET status = 4, completed_at = ?1, expires_at = ?1 + ?3, cancel_requested = 0,"
        " worker = '', lease_until = 0 WHERE seq = ?2 AND status IN (1, 6) AND lease_until < ?1",
    [S_RESCUE_FAIL] =
        "UPDATE jobs SET status = 3, completed_at = ?1, expires_at = ?1 + ?3, cancel_requested = 0,"
        " error = 'the worker running this job stopped (its lease ran out) ' || attempts || ' times',"
        " worker = '', lease_until = 0 WHERE seq = ?2 AND status IN (1, 6) AND lease_until < ?1",
    [S_RESCUE_REQUEUE] = "UPDATE jobs SET status = 0, progress = 0, started_at = 0, cancel_requested = 0,"
                         " worker = '', lease_until = 0, not_before = ?1 + ?3 * attempts"
                         " WHERE seq = ?2 AND status IN (1, 6) AND lease_until < ?1",
    [S_DOWNLOADED] = "UPDATE jobs SET status = 5, result_key = '' WHERE id = ?1",
    /* failed and cancelled jobs keep their status (and error): only a result expires */
    [S_EXPIRE] = "UPDATE jobs SET input_key = '', result_key = '',"
                 " status = CASE WHEN status = 2 THEN 5 ELSE status END WHERE id = ?1",
    [S_INPUT_DELETED] = "UPDATE jobs SET input_key = '' WHERE id = ?1",
    [S_W_GET_SEQ] = "SELECT " JOB_COLUMNS " FROM jobs WHERE seq = ?1",
    /* the one place a charge is marked refunded: a second refund changes no row */
    [S_REFUND_MARK] = "UPDATE jobs SET refunded = 1 WHERE id = ?1 AND credits > 0 AND refunded = 0",
    /* a revoked key gets its credits back too; a key without a balance has nothing to get back */
    [S_REFUND_CREDIT] = "UPDATE keys SET credits = credits + (SELECT credits FROM jobs WHERE id = ?1)"
                        " WHERE id = (SELECT owner FROM jobs WHERE id = ?1) AND credits >= 0",
    [S_KEY_STATE] = "SELECT quota, credits, revoked_at FROM keys WHERE id = ?1",
    [S_USAGE] = USAGE_SQL,
    [S_KEY_DEBIT] = "UPDATE keys SET credits = credits - ?2 WHERE id = ?1 AND credits >= 0",
    [S_KEY_INSERT] = "INSERT INTO keys (id, name, prefix, hash, tier, quota, credits, created_at)"
                     " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [S_KEY_REVOKE] = "UPDATE keys SET revoked_at = ?2 WHERE id = ?1",
    [S_KEY_TOUCH] = "UPDATE keys SET last_used_at = max(last_used_at, ?2) WHERE id = ?1",
    /* ?2 NULL keeps the tier; ?3 / ?5 say whether quota / credits are set; ?7 is added to the balance */
    [S_KEY_UPDATE] = "UPDATE keys SET tier = coalesce(?2, tier), quota = CASE WHEN ?3 THEN ?4 ELSE quota END,"
                     " credits = CASE WHEN ?5 THEN ?6 ELSE credits + ?7 END WHERE id = ?1",
    [S_W_KEY_BY_ID] = "SELECT " KEY_COLUMNS " FROM keys WHERE id = ?1",
    [S_IDEM_PURGE] = "DELETE FROM idempotency WHERE created_at < ?1",
    [S_IDEM_INSERT] = "INSERT INTO idempotency (scope, key, request_hash, status, body, job_id, created_at)"
                      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
};

static const char *const rsql[N_RSTMT] = {
    [R_GET] = "SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?1",
    [R_DUE] = "SELECT " JOB_COLUMNS " FROM jobs WHERE status IN (2, 3, 4) AND expires_at > 0"
              " AND expires_at <= ?1 AND (input_key <> '' OR result_key <> '')"
              " ORDER BY expires_at LIMIT ?2",
    [R_COUNTS] = "SELECT status, count(*) FROM jobs GROUP BY status",
    /*
     * One statement for every filter: a condition whose parameter says "no
     * bound" is true. The cursor is always bound (INT64_MAX for none) so
     * that jobs_owner(owner, seq) gives a range scan from it.
     */
    [R_LIST] = "SELECT " JOB_COLUMNS " FROM jobs WHERE owner = ?1 AND seq < ?6"
               " AND (?2 = 0 OR ((1 << status) & ?2) != 0)"
               " AND (?3 IS NULL OR model = ?3)"
               " AND (?4 = 0 OR created_at < ?4)"
               " AND (?5 = 0 OR created_at > ?5)"
               " ORDER BY seq DESC LIMIT ?7",
    [R_KEY_BY_HASH] = "SELECT " KEY_COLUMNS " FROM keys WHERE hash = ?1",
    [R_KEY_BY_ID] = "SELECT " KEY_COLUMNS " FROM keys WHERE id = ?1",
    /* substr, not LIKE: LIKE folds ASCII case, and a key's characters are case-sensitive */
    [R_KEY_BY_PREFIX] = "SELECT " KEY_COLUMNS " FROM keys WHERE substr(prefix, 1, length(?1)) = ?1 LIMIT 2",
    [R_KEY_LIST] = "SELECT " KEY_COLUMNS " FROM keys ORDER BY created_at, rowid",
    [R_USAGE] = USAGE_SQL,
    [R_IDEM_GET] = "SELECT request_hash, status, body, job_id, created_at FROM idempotency"
                   " WHERE scope = ?1 AND key = ?2 AND created_at >= ?3",
    [R_LAPSED] = "SELECT 1 FROM jobs WHERE status IN (1, 6) AND lease_until < ?1 LIMIT 1",
    [R_BLOB_KEYS] = "SELECT input_key, result_key FROM jobs WHERE input_key <> '' OR result_key <> ''",
};

struct store {
    pthread_mutex_t wmu; /* guards w and wstmt */
    pthread_mutex_t rmu; /* guards r and rstmt */
    sqlite3 *w, *r;
    sqlite3_stmt *wstmt[N_WSTMT];
    sqlite3_stmt *rstmt[N_RSTMT];
    char path[1024];
};

#define BIT(s) (1u << (s))

const char *job_status_name(job_status_t s) {
    switch (s) {
    case JOB_STATUS_QUEUED: return "queued";
    case JOB_STATUS_CLAIMED: return "claimed";
    case JOB_STATUS_PROCESSING: return "processing";
    case JOB_STATUS_COMPLETED: return "completed";
    case JOB_STATUS_FAILED: return "failed";
    case JOB_STATUS_CANCELLED: return "cancelled";
    case JOB_STATUS_EXPIRED: return "expired";
    case JOB_STATUS_COUNT: break;
    }
    return "unknown";
}

/* UP_ERR_IO with sqlite's message for db. */
static int db_error(sqlite3 *db, up_error_t *err, const char *what) {
    int rc = up_error_set(err, UP_ERR_IO, 0, "job store: %s: %s", what, sqlite3_errmsg(db));
    log_error("job store: %s: %s", what, sqlite3_errmsg(db));
    return rc;
}

/* A text column into dst: valid UTF-8 and cut on a character boundary, whatever an older upres stored. */
static void copy_text(char *dst, size_t size, sqlite3_stmt *s, int col) {
    const char *t = (const char *)sqlite3_column_text(s, col);
    text_utf8_copy(dst, size, t ? t : "", t ? (size_t)sqlite3_column_bytes(s, col) : 0);
}

static void read_row(sqlite3_stmt *s, job_t *j) {
    memset(j, 0, sizeof *j);
    int c = 0;
    j->seq = sqlite3_column_int64(s, c++);
    copy_text(j->id, sizeof j->id, s, c++);
    j->status = (job_status_t)sqlite3_column_int(s, c++);
    j->progress = sqlite3_column_int(s, c++);
    j->attempts = sqlite3_column_int(s, c++);
    j->cancel_requested = sqlite3_column_int(s, c++);
    copy_text(j->model, sizeof j->model, s, c++);
    copy_text(j->model_alias, sizeof j->model_alias, s, c++);
    j->scale = sqlite3_column_int(s, c++);
    copy_text(j->format, sizeof j->format, s, c++);
    j->quality = sqlite3_column_int(s, c++);
    j->tile = sqlite3_column_int(s, c++);
    copy_text(j->input_key, sizeof j->input_key, s, c++);
    copy_text(j->input_name, sizeof j->input_name, s, c++);
    copy_text(j->input_format, sizeof j->input_format, s, c++);
    j->input_width = sqlite3_column_int(s, c++);
    j->input_height = sqlite3_column_int(s, c++);
    j->input_bytes = sqlite3_column_int64(s, c++);
    copy_text(j->result_key, sizeof j->result_key, s, c++);
    copy_text(j->result_format, sizeof j->result_format, s, c++);
    j->output_width = sqlite3_column_int(s, c++);
    j->output_height = sqlite3_column_int(s, c++);
    j->result_bytes = sqlite3_column_int64(s, c++);
    j->created_at = sqlite3_column_double(s, c++);
    j->started_at = sqlite3_column_double(s, c++);
    j->completed_at = sqlite3_column_double(s, c++);
    j->expires_at = sqlite3_column_double(s, c++);
    copy_text(j->error, sizeof j->error, s, c++);
    copy_text(j->owner, sizeof j->owner, s, c++);
    copy_text(j->tier, sizeof j->tier, s, c++);
    j->credits = sqlite3_column_int64(s, c++);
    j->refunded = sqlite3_column_int(s, c++);
    j->keep_s = sqlite3_column_double(s, c++);
    copy_text(j->colour, sizeof j->colour, s, c++);
    copy_text(j->worker, sizeof j->worker, s, c++);
    j->lease_s = sqlite3_column_double(s, c++);
    j->lease_until = sqlite3_column_double(s, c++);
    j->not_before = sqlite3_column_double(s, c++);
}

static void read_key(sqlite3_stmt *s, api_key_t *k) {
    memset(k, 0, sizeof *k);
    int c = 0;
    copy_text(k->id, sizeof k->id, s, c++);
    copy_text(k->name, sizeof k->name, s, c++);
    copy_text(k->prefix, sizeof k->prefix, s, c++);
    const void *hash = sqlite3_column_blob(s, c);
    if (hash && sqlite3_column_bytes(s, c) == (int)sizeof k->hash)
        memcpy(k->hash, hash, sizeof k->hash);
    c++;
    copy_text(k->tier, sizeof k->tier, s, c++);
    k->quota = sqlite3_column_int64(s, c++);
    k->credits = sqlite3_column_int64(s, c++);
    k->created_at = sqlite3_column_double(s, c++);
    k->last_used_at = sqlite3_column_double(s, c++);
    k->revoked_at = sqlite3_column_double(s, c++);
}

static void done(sqlite3_stmt *s) {
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
}

static void bind_text(sqlite3_stmt *s, int i, const char *t) {
    sqlite3_bind_text(s, i, t ? t : "", -1, SQLITE_TRANSIENT);
}

/*
 * Run an INSERT (bindings already set): UP_OK; clash (with "job store: "
 * and who in the message) when a unique key is taken; the database's error.
 */
static int step_insert(store_t *st, sqlite3_stmt *s, int clash, const char *who, const char *what,
                       up_error_t *err) {
    int src = sqlite3_step(s);
    done(s);
    if (src == SQLITE_CONSTRAINT_UNIQUE || src == SQLITE_CONSTRAINT_PRIMARYKEY)
        return up_error_set(err, clash, 0, "job store: %s", who);
    if (src != SQLITE_DONE)
        return db_error(st->w, err, what);
    return UP_OK;
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

/* Commit when rc is 0, else roll back; returns the outcome. */
static int tx_end(store_t *st, int rc, up_error_t *err) {
    if (rc) {
        tx_rollback(st);
        return rc;
    }
    return tx_commit(st, err);
}

/* What a write transaction reads of a job before it writes (S_STATUS). */
typedef struct job_state {
    job_status_t status;
    int cancel; /* cancel_requested */
    int attempts;
    char worker[128]; /* the current claim's worker id, "" = none */
} job_state_t;

/* Inside a write transaction: the state of id into *js, or UP_ERR_NOT_FOUND. */
static int job_state(store_t *st, const char *id, job_state_t *js, up_error_t *err) {
    sqlite3_stmt *s = st->wstmt[S_STATUS];
    bind_text(s, 1, id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        js->status = (job_status_t)sqlite3_column_int(s, 0);
        js->cancel = sqlite3_column_int(s, 1);
        js->attempts = sqlite3_column_int(s, 2);
        copy_text(js->worker, sizeof js->worker, s, 3);
        done(s);
        return UP_OK;
    }
    done(s);
    if (rc == SQLITE_DONE)
        return up_error_set(err, UP_ERR_NOT_FOUND, 0, "no job %s", id);
    return db_error(st->w, err, "cannot read a job");
}

/*
 * UP_ERR_CONFLICT unless fence (NULL: not fenced) is the job's current
 * claim. The message names both claims, for the log of the loser.
 */
static int check_fence(const char *id, const job_state_t *js, const store_fence_t *fence, up_error_t *err) {
    if (!fence || (js->attempts == fence->attempt && fence->worker && strcmp(js->worker, fence->worker) == 0))
        return UP_OK;
    if (!js->worker[0])
        return up_error_set(
            err, UP_ERR_CONFLICT, 0,
            "job %s: attempt %d of worker %s was superseded: the job is %s, held by no worker", id,
            fence->attempt, fence->worker ? fence->worker : "?", job_status_name(js->status));
    return up_error_set(err, UP_ERR_CONFLICT, 0,
                        "job %s: attempt %d of worker %s was superseded by attempt %d of worker %s", id,
                        fence->attempt, fence->worker ? fence->worker : "?", js->attempts, js->worker);
}

/*
 * Inside a write transaction: give job id's charge back to its owner's
 * balance, at most once (see DESIGN). A free or already refunded job, or
 * an owner that keeps no balance, changes nothing on the key.
 */
static int refund(store_t *st, const char *id, up_error_t *err) {
    bind_text(st->wstmt[S_REFUND_MARK], 1, id);
    int rc = exec_stmt(st, S_REFUND_MARK, "cannot refund a job", err);
    if (rc || sqlite3_changes(st->w) == 0)
        return rc;
    bind_text(st->wstmt[S_REFUND_CREDIT], 1, id);
    return exec_stmt(st, S_REFUND_CREDIT, "cannot refund a job", err);
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
        return db_error(db, err, "cannot read the stored paths");
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
        rc = db_error(db, err, "cannot read the stored paths");
    sqlite3_finalize(s);
    s = NULL;
    if (!rc && sqlite3_prepare_v2(db, "UPDATE jobs SET input_key = ?2, result_key = ?3 WHERE seq = ?1", -1,
                                  &s, NULL) != SQLITE_OK)
        rc = db_error(db, err, "cannot store the blob keys");
    for (int i = 0; i < n && !rc; i++) {
        sqlite3_bind_int64(s, 1, rows[i].seq);
        sqlite3_bind_text(s, 2, rows[i].in, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, rows[i].res, -1, SQLITE_STATIC);
        if (sqlite3_step(s) != SQLITE_DONE)
            rc = db_error(db, err, "cannot store the blob keys");
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
        rc = db_error(db, err, "cannot read the schema version");
    } else if (version > SCHEMA_VERSION) {
        rc =
            up_error_set(err, UP_ERR_IO, 0, "job store: %s has schema version %d, newer than this upres (%d)",
                         path, version, SCHEMA_VERSION);
        log_error("%s", err ? err->msg : "job store: schema too new");
    } else if (version < SCHEMA_VERSION) {
        if (version == 0) {
            rc = exec_sql(db, schema_sql, err);
        } else {
            assert(version >= 1 && version <= 4);
            log_info("job store: %s: migrating schema version %d to %d", path, version, SCHEMA_VERSION);
            if (version == 1)
                rc = exec_sql(db, migrate_v2_sql, err);
            if (!rc && version <= 2)
                rc = exec_sql(db, migrate_v3_sql, err);
            if (!rc && version <= 3)
                rc = exec_sql(db, migrate_v4_sql, err);
            if (!rc)
                rc = exec_sql(db, migrate_v5_sql, err);
            if (!rc)
                rc = migrate_keys(db, err);
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

/* ---- inserting jobs ------------------------------------------------------------ */

static int check_new_job(const job_t *job, up_error_t *err) {
    if (!job->id[0])
        return up_error_set(err, UP_ERR_INVALID, 0, "job store: a job needs an id");
    if (job->credits < 0)
        return up_error_set(err, UP_ERR_INVALID, 0, "job store: job %s: negative charge", job->id);
    if (job->input_key[0] && !blob_key_valid(job->input_key)) /* rows hold keys, not paths */
        return up_error_set(err, UP_ERR_INVALID, 0, "job store: job %s: '%.300s' is not a blob key", job->id,
                            job->input_key);
    return UP_OK;
}

/* Inside a write transaction: insert job, queued. UP_ERR_INVALID for a duplicate id. */
static int insert_row(store_t *st, const job_t *job, up_error_t *err) {
    sqlite3_stmt *s = st->wstmt[S_INSERT];
    bind_text(s, 1, job->id);
    bind_text(s, 2, job->model);
    sqlite3_bind_int(s, 3, job->scale);
    bind_text(s, 4, job->format);
    sqlite3_bind_int(s, 5, job->quality);
    sqlite3_bind_int(s, 6, job->tile);
    bind_text(s, 7, job->input_key);
    bind_text(s, 8, job->input_name);
    bind_text(s, 9, job->input_format);
    sqlite3_bind_int(s, 10, job->input_width);
    sqlite3_bind_int(s, 11, job->input_height);
    sqlite3_bind_int64(s, 12, job->input_bytes);
    sqlite3_bind_double(s, 13, job->created_at > 0 ? job->created_at : now_s());
    bind_text(s, 14, job->model_alias);
    bind_text(s, 15, job->owner);
    bind_text(s, 16, job->tier);
    sqlite3_bind_int64(s, 17, job->credits);
    sqlite3_bind_double(s, 18, job->keep_s > 0 ? job->keep_s : 0);
    bind_text(s, 19, job->colour);
    char who[80];
    snprintf(who, sizeof who, "job %s already exists", job->id);
    return step_insert(st, s, UP_ERR_INVALID, who, "cannot insert a job", err);
}

int store_job_insert(store_t *st, const job_t *job, up_error_t *err) {
    return store_job_submit(st, job, -1, NULL, NULL, err);
}

/* Inside a write transaction: key id's quota, balance and revocation time. UP_ERR_NOT_FOUND. */
static int key_state(store_t *st, const char *id, long long *quota, long long *credits, double *revoked_at,
                     up_error_t *err) {
    sqlite3_stmt *s = st->wstmt[S_KEY_STATE];
    bind_text(s, 1, id);
    int src = sqlite3_step(s);
    if (src == SQLITE_ROW) {
        *quota = sqlite3_column_int64(s, 0);
        *credits = sqlite3_column_int64(s, 1);
        *revoked_at = sqlite3_column_double(s, 2);
    }
    done(s);
    if (src == SQLITE_DONE)
        return up_error_set(err, UP_ERR_NOT_FOUND, 0, "no key %s", id);
    if (src != SQLITE_ROW)
        return db_error(st->w, err, "cannot read a key");
    return UP_OK;
}

/*
 * Inside a write transaction: check that key job->owner may be charged
 * job->credits (*c gets the figures) and take them off its balance.
 */
static int charge(store_t *st, const job_t *job, double period_start, store_charge_t *c, up_error_t *err) {
    double revoked_at = 0;
    int rc = key_state(st, job->owner, &c->quota, &c->credits, &revoked_at, err);
    if (rc)
        return rc;
    sqlite3_stmt *s = st->wstmt[S_USAGE];
    bind_text(s, 1, job->owner);
    sqlite3_bind_double(s, 2, period_start);
    int src = sqlite3_step(s);
    if (src == SQLITE_ROW)
        c->used = sqlite3_column_int64(s, 0);
    done(s);
    if (src != SQLITE_ROW)
        return db_error(st->w, err, "cannot sum a key's usage");

    long long need = job->credits;
    if (revoked_at > 0)
        return up_error_set(err, UP_ERR_REVOKED, 0, "key %s is revoked", job->owner);
    if (c->quota >= 0 && c->used + need > c->quota) {
        if (c->used >= c->quota)
            return up_error_set(err, UP_ERR_QUOTA, 0, "monthly quota of %lld credits used up (%lld used)",
                                c->quota, c->used);
        return up_error_set(err, UP_ERR_QUOTA, 0,
                            "monthly quota of %lld credits too low for this job (%lld used, %lld needed)",
                            c->quota, c->used, need);
    }
    if (c->credits >= 0 && c->credits < need)
        return up_error_set(err, UP_ERR_CREDITS, 0, "insufficient credits: %lld left, %lld needed",
                            c->credits, need);
    if (c->credits < 0 || need == 0)
        return UP_OK;
    s = st->wstmt[S_KEY_DEBIT];
    bind_text(s, 1, job->owner);
    sqlite3_bind_int64(s, 2, need);
    return exec_stmt(st, S_KEY_DEBIT, "cannot charge a key", err);
}

/* Inside a write transaction: record idem's answer (answers older than IDEM_KEEP_S go first). */
static int idem_insert(store_t *st, const store_idem_t *idem, double now, up_error_t *err) {
    sqlite3_bind_double(st->wstmt[S_IDEM_PURGE], 1, now - IDEM_KEEP_S);
    int rc = exec_stmt(st, S_IDEM_PURGE, "cannot purge idempotency keys", err);
    if (rc)
        return rc;
    sqlite3_stmt *s = st->wstmt[S_IDEM_INSERT];
    bind_text(s, 1, idem->scope);
    bind_text(s, 2, idem->key);
    sqlite3_bind_blob(s, 3, idem->hash, sizeof idem->hash, SQLITE_STATIC);
    sqlite3_bind_int(s, 4, idem->status);
    bind_text(s, 5, idem->body ? idem->body : "");
    bind_text(s, 6, idem->job_id);
    sqlite3_bind_double(s, 7, now);
    return step_insert(st, s, UP_ERR_CONFLICT, "that idempotency key is taken", "cannot record an idempotency key",
                       err);
}

int store_job_submit(store_t *st, const job_t *job, double period_start, const store_idem_t *idem,
                     store_charge_t *charge_out, up_error_t *err) {
    assert(st && job);
    store_charge_t c = {.quota = -1, .used = 0, .credits = -1};
    int charged = period_start >= 0;
    int rc = check_new_job(job, err);
    if (rc)
        goto out;
    /* a charge recorded without being taken would be refunded into a balance it never left */
    if (!charged && job->credits != 0) {
        rc = up_error_set(err, UP_ERR_INVALID, 0, "job store: job %s: a charged job needs its owner and period",
                          job->id);
        goto out;
    }
    pthread_mutex_lock(&st->wmu);
    if (!(rc = tx_begin(st, err))) {
        if (charged)
            rc = charge(st, job, period_start, &c, err);
        if (!rc)
            rc = insert_row(st, job, err);
        if (!rc && idem)
            rc = idem_insert(st, idem, now_s(), err);
        rc = tx_end(st, rc, err);
    }
    pthread_mutex_unlock(&st->wmu);
out:
    if (charge_out)
        *charge_out = c;
    return rc;
}

int store_job_insert_charged(store_t *st, const job_t *job, double period_start, store_charge_t *charge_out,
                             up_error_t *err) {
    return store_job_submit(st, job, period_start, NULL, charge_out, err);
}

int store_idem_get(store_t *st, const char *scope, const char *key, store_idem_t *out, up_error_t *err) {
    assert(st && scope && key && out);
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&st->rmu);
    sqlite3_stmt *s = st->rstmt[R_IDEM_GET];
    bind_text(s, 1, scope);
    bind_text(s, 2, key);
    sqlite3_bind_double(s, 3, now_s() - IDEM_KEEP_S);
    int src = sqlite3_step(s), rc = UP_OK;
    if (src == SQLITE_ROW) {
        snprintf(out->scope, sizeof out->scope, "%s", scope);
        snprintf(out->key, sizeof out->key, "%s", key);
        const void *h = sqlite3_column_blob(s, 0);
        if (h && sqlite3_column_bytes(s, 0) == (int)sizeof out->hash)
            memcpy(out->hash, h, sizeof out->hash);
        out->status = sqlite3_column_int(s, 1);
        const char *body = (const char *)sqlite3_column_text(s, 2);
        out->body = xstrdup(body ? body : "");
        copy_text(out->job_id, sizeof out->job_id, s, 3);
        out->created_at = sqlite3_column_double(s, 4);
    } else if (src == SQLITE_DONE)
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no idempotency key '%s'", key);
    else
        rc = db_error(st->r, err, "cannot read an idempotency key");
    done(s);
    pthread_mutex_unlock(&st->rmu);
    return rc;
}

/* ---- job transitions ----------------------------------------------------------- */

/* Inside a write transaction: the job with this seq into *out. */
static int read_seq(store_t *st, sqlite3_int64 seq, job_t *out, const char *what, up_error_t *err) {
    sqlite3_stmt *s = st->wstmt[S_W_GET_SEQ];
    sqlite3_bind_int64(s, 1, seq);
    int src = sqlite3_step(s);
    if (src == SQLITE_ROW)
        read_row(s, out);
    done(s);
    return src == SQLITE_ROW ? UP_OK : db_error(st->w, err, what);
}

int store_job_claim(store_t *st, const char *worker, double lease_s, job_t *out, up_error_t *err) {
    assert(st && worker && out);
    if (!worker[0] || strlen(worker) >= sizeof out->worker || !(lease_s > 0))
        return up_error_set(err, UP_ERR_INVALID, 0,
                            "job store: a claim needs a worker id (1 to %zu bytes) "
                            "and a lease over 0 s",
                            sizeof out->worker - 1);
    double now = now_s();
    pthread_mutex_lock(&st->wmu);
    int rc = tx_begin(st, err);
    if (rc)
        goto out;
    sqlite3_stmt *s = st->wstmt[S_NEXT_QUEUED];
    sqlite3_bind_double(s, 1, now);
    int src = sqlite3_step(s);
    sqlite3_int64 seq = src == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    done(s);
    if (src == SQLITE_DONE) {
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no queued job");
        goto end;
    }
    if (src != SQLITE_ROW) {
        rc = db_error(st->w, err, "cannot find a queued job");
        goto end;
    }
    s = st->wstmt[S_CLAIM];
    sqlite3_bind_int64(s, 1, seq);
    sqlite3_bind_double(s, 2, now);
    bind_text(s, 3, worker);
    sqlite3_bind_double(s, 4, lease_s);
    if ((rc = exec_stmt(st, S_CLAIM, "cannot claim a job", err)))
        goto end;
    rc = read_seq(st, seq, out, "cannot read the claimed job", err);
end:
    rc = tx_end(st, rc, err);
out:
    pthread_mutex_unlock(&st->wmu);
    return rc;
}

/* Most writes: one statement on one job, allowed from some statuses only. */
typedef struct transition {
    int stmt;             /* S_* run when allowed */
    unsigned allowed;     /* bit (1 << status) for each status it applies to */
    unsigned refund_from; /* statuses from which the job's charge is refunded in the same transaction */
    const char *what;     /* for error messages */
} transition_t;

/*
 * Run transition t on id: UP_ERR_NOT_FOUND for an unknown id,
 * UP_ERR_CONFLICT when fence (NULL: not fenced) is not the job's current
 * claim, UP_ERR_INVALID (with *was set) when the job's status is not in
 * t->allowed. The statement has ?1 = id and ?2 = now; the caller bound its
 * other parameters before the call (they are cleared on every path).
 * *cancel gets cancel_requested as it was before.
 */
static int transition(store_t *st, const char *id, const store_fence_t *fence, const transition_t *t,
                      job_status_t *was, int *cancel, up_error_t *err) {
    sqlite3_stmt *s = st->wstmt[t->stmt];
    job_state_t js;
    int rc = tx_begin(st, err);
    if (rc)
        goto fail;
    if ((rc = job_state(st, id, &js, err)))
        goto end;
    if (was)
        *was = js.status;
    if (cancel)
        *cancel = js.cancel;
    if ((rc = check_fence(id, &js, fence, err)))
        goto end;
    if (!(t->allowed & BIT(js.status))) {
        rc = up_error_set(err, UP_ERR_INVALID, 0, "job %s is %s: cannot %s it", id,
                          job_status_name(js.status), t->what);
        goto end;
    }
    bind_text(s, 1, id);
    sqlite3_bind_double(s, 2, now_s());
    if ((rc = exec_stmt(st, t->stmt, t->what, err)))
        goto end;
    if (t->refund_from & BIT(js.status))
        rc = refund(st, id, err);
end:
    rc = tx_end(st, rc, err);
fail:
    done(s);
    return rc;
}

int store_job_start(store_t *st, const char *id, const store_fence_t *fence, int *cancel, up_error_t *err) {
    assert(st && id && fence);
    static const transition_t t = {.stmt = S_START, .allowed = BIT(JOB_STATUS_CLAIMED), .what = "start"};
    int c = 0;
    pthread_mutex_lock(&st->wmu);
    int rc = transition(st, id, fence, &t, NULL, &c, err);
    pthread_mutex_unlock(&st->wmu);
    if (cancel)
        *cancel = c;
    return rc;
}

int store_job_progress(store_t *st, const char *id, const store_fence_t *fence, int progress, int *cancel,
                       up_error_t *err) {
    assert(st && id && fence);
    static const transition_t t = {
        .stmt = S_PROGRESS, .allowed = BIT(JOB_STATUS_PROCESSING), .what = "report progress of"};
    if (progress < 0)
        progress = 0;
    if (progress > 100)
        progress = 100;
    int c = 0;
    pthread_mutex_lock(&st->wmu);
    sqlite3_bind_int(st->wstmt[S_PROGRESS], 3, progress);
    int rc = transition(st, id, fence, &t, NULL, &c, err);
    pthread_mutex_unlock(&st->wmu);
    if (cancel)
        *cancel = c;
    return rc;
}

int store_job_heartbeat(store_t *st, const char *id, const store_fence_t *fence, int *cancel,
                        up_error_t *err) {
    assert(st && id && fence);
    static const transition_t t = {.stmt = S_HEARTBEAT,
                                   .allowed = BIT(JOB_STATUS_CLAIMED) | BIT(JOB_STATUS_PROCESSING),
                                   .what = "renew the lease of"};
    int c = 0;
    pthread_mutex_lock(&st->wmu);
    int rc = transition(st, id, fence, &t, NULL, &c, err);
    pthread_mutex_unlock(&st->wmu);
    if (cancel)
        *cancel = c;
    return rc;
}

int store_job_complete(store_t *st, const job_t *job, const store_fence_t *fence, double retention_s,
                       up_error_t *err) {
    assert(st && job && fence);
    static const transition_t t = {
        .stmt = S_COMPLETE, .allowed = BIT(JOB_STATUS_PROCESSING), .what = "complete"};
    if (job->result_key[0] && !blob_key_valid(job->result_key)) /* rows hold keys, not paths */
        return up_error_set(err, UP_ERR_INVALID, 0, "job store: job %s: result '%.300s' is not a blob key",
                            job->id, job->result_key);
    pthread_mutex_lock(&st->wmu);
    sqlite3_stmt *s = st->wstmt[S_COMPLETE];
    bind_text(s, 3, job->result_key);
    bind_text(s, 4, job->result_format);
    sqlite3_bind_int(s, 5, job->output_width);
    sqlite3_bind_int(s, 6, job->output_height);
    sqlite3_bind_int64(s, 7, job->result_bytes);
    sqlite3_bind_double(s, 8, now_s() + retention_s);
    int rc = transition(st, job->id, fence, &t, NULL, NULL, err);
    pthread_mutex_unlock(&st->wmu);
    return rc;
}

int store_job_fail(store_t *st, const char *id, const store_fence_t *fence, const char *message,
                   double retention_s, up_error_t *err) {
    assert(st && id);
    /* a queued job may fail too (e.g. its input vanished before a worker took it) */
    enum { LIVE = BIT(JOB_STATUS_QUEUED) | BIT(JOB_STATUS_CLAIMED) | BIT(JOB_STATUS_PROCESSING) };
    static const transition_t t = {.stmt = S_FAIL, .allowed = LIVE, .refund_from = LIVE, .what = "fail"};
    pthread_mutex_lock(&st->wmu);
    sqlite3_stmt *s = st->wstmt[S_FAIL];
    bind_text(s, 3, message && *message ? message : "unknown error");
    sqlite3_bind_double(s, 4, now_s() + retention_s);
    int rc = transition(st, id, fence, &t, NULL, NULL, err);
    pthread_mutex_unlock(&st->wmu);
    return rc;
}

int store_job_cancel(store_t *st, const char *id, job_status_t *was, up_error_t *err) {
    assert(st && id);
    job_state_t js;
    pthread_mutex_lock(&st->wmu);
    int rc = tx_begin(st, err);
    if (rc)
        goto out;
    if ((rc = job_state(st, id, &js, err)))
        goto end;
    if (was)
        *was = js.status;
    if (js.status == JOB_STATUS_QUEUED) {
        sqlite3_stmt *s = st->wstmt[S_CANCEL_QUEUED];
        bind_text(s, 1, id);
        sqlite3_bind_double(s, 2, now_s());
        if (!(rc = exec_stmt(st, S_CANCEL_QUEUED, "cannot cancel a job", err)))
            rc = refund(st, id, err);
    } else if (js.status == JOB_STATUS_CLAIMED || js.status == JOB_STATUS_PROCESSING) {
        sqlite3_stmt *s = st->wstmt[S_CANCEL_REQUEST];
        bind_text(s, 1, id);
        rc = exec_stmt(st, S_CANCEL_REQUEST, "cannot cancel a job", err);
    } else {
        rc = up_error_set(err, UP_ERR_INVALID, 0, "job %s is already %s", id, job_status_name(js.status));
    }
end:
    rc = tx_end(st, rc, err);
out:
    pthread_mutex_unlock(&st->wmu);
    return rc;
}

int store_job_cancelled(store_t *st, const char *id, const store_fence_t *fence, double retention_s,
                        up_error_t *err) {
    assert(st && id && fence);
    /* still claimed: the job never ran, so it costs nothing */
    static const transition_t t = {.stmt = S_CANCELLED,
                                   .allowed = BIT(JOB_STATUS_CLAIMED) | BIT(JOB_STATUS_PROCESSING),
                                   .refund_from = BIT(JOB_STATUS_CLAIMED),
                                   .what = "mark cancelled"};
    pthread_mutex_lock(&st->wmu);
    sqlite3_bind_double(st->wstmt[S_CANCELLED], 3, retention_s);
    int rc = transition(st, id, fence, &t, NULL, NULL, err);
    pthread_mutex_unlock(&st->wmu);
    return rc;
}

int store_job_requeue(store_t *st, const char *id, const store_fence_t *fence, up_error_t *err) {
    assert(st && id && fence);
    static const transition_t t = {.stmt = S_REQUEUE,
                                   .allowed = BIT(JOB_STATUS_CLAIMED) | BIT(JOB_STATUS_PROCESSING),
                                   .what = "requeue"};
    pthread_mutex_lock(&st->wmu);
    int rc = transition(st, id, fence, &t, NULL, NULL, err);
    pthread_mutex_unlock(&st->wmu);
    return rc;
}

/* On the reader: 1 when some claimed or processing job's lease ended before now. */
static int any_lapsed(store_t *st, double now, up_error_t *err) {
    pthread_mutex_lock(&st->rmu);
    sqlite3_stmt *s = st->rstmt[R_LAPSED];
    sqlite3_bind_double(s, 1, now);
    int src = sqlite3_step(s);
    int rc = src == SQLITE_ROW    ? 1
             : src == SQLITE_DONE ? 0
                                  : db_error(st->r, err, "cannot look for lost leases");
    done(s);
    pthread_mutex_unlock(&st->rmu);
    return rc;
}

/*
 * Inside a write transaction: rescue job seq (its lease ended before now)
 * as store.h says, and read it back into *out.
 */
static int rescue_one(store_t *st, sqlite3_int64 seq, double now, int max_attempts, double backoff_s,
                      double retention_s, job_t *out, up_error_t *err) {
    int rc = read_seq(st, seq, out, "cannot read a job to rescue", err);
    if (rc)
        return rc;
    int k = out->cancel_requested           ? S_RESCUE_CANCEL
            : out->attempts >= max_attempts ? S_RESCUE_FAIL
                                            : S_RESCUE_REQUEUE;
    /* the charge: given back when the job fails, or ends cancelled before it started */
    int give_back = k == S_RESCUE_FAIL || (k == S_RESCUE_CANCEL && out->status == JOB_STATUS_CLAIMED);
    sqlite3_stmt *s = st->wstmt[k];
    sqlite3_bind_double(s, 1, now);
    sqlite3_bind_int64(s, 2, seq);
    sqlite3_bind_double(s, 3, k == S_RESCUE_REQUEUE ? backoff_s : retention_s);
    if ((rc = exec_stmt(st, k, "cannot rescue a job", err)))
        return rc;
    if (give_back && (rc = refund(st, out->id, err)))
        return rc;
    return read_seq(st, seq, out, "cannot read a rescued job", err);
}

int store_jobs_rescue(store_t *st, int max_attempts, double backoff_s, double retention_s, job_t *jobs,
                      int max, int *n, up_error_t *err) {
    assert(st && jobs && max >= 1 && n);
    *n = 0;
    double now = now_s();
    int rc = any_lapsed(st, now, err);
    if (rc <= 0)
        return rc;
    sqlite3_int64 *seqs = xmalloc((size_t)max * sizeof *seqs);
    int n_seq = 0;
    pthread_mutex_lock(&st->wmu);
    if ((rc = tx_begin(st, err)))
        goto out;
    sqlite3_stmt *s = st->wstmt[S_LAPSED];
    sqlite3_bind_double(s, 1, now);
    sqlite3_bind_int(s, 2, max);
    int src = SQLITE_DONE;
    while (n_seq < max && (src = sqlite3_step(s)) == SQLITE_ROW)
        seqs[n_seq++] = sqlite3_column_int64(s, 0);
    if (n_seq < max && src != SQLITE_DONE)
        rc = db_error(st->w, err, "cannot look for lost leases");
    done(s);
    for (int i = 0; i < n_seq && !rc; i++)
        rc = rescue_one(st, seqs[i], now, max_attempts, backoff_s, retention_s, &jobs[i], err);
    rc = tx_end(st, rc, err);
out:
    pthread_mutex_unlock(&st->wmu);
    free(seqs);
    if (!rc)
        *n = n_seq;
    return rc;
}

int store_job_downloaded(store_t *st, const char *id, up_error_t *err) {
    assert(st && id);
    static const transition_t t = {
        .stmt = S_DOWNLOADED, .allowed = BIT(JOB_STATUS_COMPLETED), .what = "download"};
    pthread_mutex_lock(&st->wmu);
    int rc = transition(st, id, NULL, &t, NULL, NULL, err);
    pthread_mutex_unlock(&st->wmu);
    return rc;
}

int store_job_expire(store_t *st, const char *id, up_error_t *err) {
    assert(st && id);
    static const transition_t t = {.stmt = S_EXPIRE,
                                   .allowed = BIT(JOB_STATUS_COMPLETED) | BIT(JOB_STATUS_FAILED) |
                                              BIT(JOB_STATUS_CANCELLED) | BIT(JOB_STATUS_EXPIRED),
                                   .what = "expire"};
    pthread_mutex_lock(&st->wmu);
    int rc = transition(st, id, NULL, &t, NULL, NULL, err);
    pthread_mutex_unlock(&st->wmu);
    return rc;
}

int store_job_input_deleted(store_t *st, const char *id, up_error_t *err) {
    assert(st && id);
    static const transition_t t = {
        .stmt = S_INPUT_DELETED, .allowed = BIT(JOB_STATUS_COUNT) - 1, .what = "clear the input of"};
    pthread_mutex_lock(&st->wmu);
    int rc = transition(st, id, NULL, &t, NULL, NULL, err);
    pthread_mutex_unlock(&st->wmu);
    return rc;
}

/* ---- job reads ------------------------------------------------------------------ */

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

/* On the reader: up to max rows of rstmt k (bound by the caller) into jobs[]. */
static int read_jobs(store_t *st, int k, job_t *jobs, int max, int *n, const char *what, up_error_t *err) {
    sqlite3_stmt *s = st->rstmt[k];
    int src = SQLITE_DONE, rc = UP_OK;
    while (*n < max && (src = sqlite3_step(s)) == SQLITE_ROW)
        read_row(s, &jobs[(*n)++]);
    if (*n < max && src != SQLITE_DONE)
        rc = db_error(st->r, err, what);
    done(s);
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
    int rc = read_jobs(st, R_DUE, jobs, max, n, "cannot list expired jobs", err);
    pthread_mutex_unlock(&st->rmu);
    return rc;
}

int store_jobs_list(store_t *st, const store_job_filter_t *f, job_t *jobs, int max, int *n, up_error_t *err) {
    assert(st && f && n && (jobs || max <= 0));
    *n = 0;
    if (!f->owner)
        return up_error_set(err, UP_ERR_INVALID, 0, "job store: listing jobs needs an owner");
    if (max <= 0)
        return UP_OK;
    pthread_mutex_lock(&st->rmu);
    sqlite3_stmt *s = st->rstmt[R_LIST];
    bind_text(s, 1, f->owner);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)f->status_mask);
    if (f->model)
        bind_text(s, 3, f->model);
    else
        sqlite3_bind_null(s, 3);
    sqlite3_bind_double(s, 4, f->before);
    sqlite3_bind_double(s, 5, f->after);
    sqlite3_bind_int64(s, 6, f->below_seq > 0 ? f->below_seq : INT64_MAX);
    sqlite3_bind_int(s, 7, max);
    int rc = read_jobs(st, R_LIST, jobs, max, n, "cannot list jobs", err);
    pthread_mutex_unlock(&st->rmu);
    return rc;
}

int store_job_counts(store_t *st, long long *counts, up_error_t *err) {
    assert(st && counts);
    for (int i = 0; i < JOB_STATUS_COUNT; i++)
        counts[i] = 0;
    pthread_mutex_lock(&st->rmu);
    sqlite3_stmt *s = st->rstmt[R_COUNTS];
    int src, rc = UP_OK;
    while ((src = sqlite3_step(s)) == SQLITE_ROW) {
        int status = sqlite3_column_int(s, 0);
        if (status >= 0 && status < JOB_STATUS_COUNT)
            counts[status] = sqlite3_column_int64(s, 1);
    }
    if (src != SQLITE_DONE)
        rc = db_error(st->r, err, "cannot count jobs");
    done(s);
    pthread_mutex_unlock(&st->rmu);
    return rc;
}

int store_blobs_referenced(store_t *st, int (*fn)(const char *key, void *ctx), void *ctx, up_error_t *err) {
    assert(st && fn);
    pthread_mutex_lock(&st->rmu);
    sqlite3_stmt *s = st->rstmt[R_BLOB_KEYS];
    int src, rc = UP_OK, stop = 0;
    char key[256];
    while (!stop && (src = sqlite3_step(s)) == SQLITE_ROW) {
        for (int c = 0; c < 2 && !stop; c++) {
            copy_text(key, sizeof key, s, c);
            if (key[0])
                stop = fn(key, ctx);
        }
    }
    if (!stop && src != SQLITE_DONE)
        rc = db_error(st->r, err, "cannot read the jobs' blob keys");
    done(s);
    pthread_mutex_unlock(&st->rmu);
    return rc;
}

/* ---- keys --------------------------------------------------------------------- */

int store_key_insert(store_t *st, const api_key_t *key, up_error_t *err) {
    assert(st && key);
    if (!key->id[0])
        return up_error_set(err, UP_ERR_INVALID, 0, "job store: a key needs an id");
    if (key->quota < -1 || key->credits < -1)
        return up_error_set(err, UP_ERR_INVALID, 0, "job store: key %s: quota and credits are -1 or more",
                            key->id);
    pthread_mutex_lock(&st->wmu);
    int rc = tx_begin(st, err);
    if (rc)
        goto out;
    sqlite3_stmt *s = st->wstmt[S_KEY_INSERT];
    bind_text(s, 1, key->id);
    bind_text(s, 2, key->name);
    bind_text(s, 3, key->prefix);
    sqlite3_bind_blob(s, 4, key->hash, sizeof key->hash, SQLITE_TRANSIENT);
    bind_text(s, 5, key->tier);
    sqlite3_bind_int64(s, 6, key->quota);
    sqlite3_bind_int64(s, 7, key->credits);
    sqlite3_bind_double(s, 8, key->created_at > 0 ? key->created_at : now_s());
    char who[80];
    snprintf(who, sizeof who, "key %s: a key with this id or hash exists", key->id);
    rc = tx_end(st, step_insert(st, s, UP_ERR_INVALID, who, "cannot insert a key", err), err);
out:
    pthread_mutex_unlock(&st->wmu);
    return rc;
}

/*
 * On the reader: the first row of rstmt k (bound by the caller) into *out;
 * *found = 0 when it has none. With more != NULL, *more = 1 when there is a
 * second row.
 */
static int read_key_row(store_t *st, int k, api_key_t *out, int *found, int *more, up_error_t *err) {
    sqlite3_stmt *s = st->rstmt[k];
    int rc = UP_OK, src = sqlite3_step(s);
    *found = src == SQLITE_ROW;
    if (*found) {
        read_key(s, out);
        if (more)
            *more = (src = sqlite3_step(s)) == SQLITE_ROW;
    }
    if (src != SQLITE_ROW && src != SQLITE_DONE)
        rc = db_error(st->r, err, "cannot read a key");
    done(s);
    return rc;
}

int store_key_by_hash(store_t *st, const unsigned char hash[32], api_key_t *out, up_error_t *err) {
    assert(st && hash && out);
    int found = 0;
    pthread_mutex_lock(&st->rmu);
    sqlite3_bind_blob(st->rstmt[R_KEY_BY_HASH], 1, hash, 32, SQLITE_TRANSIENT);
    int rc = read_key_row(st, R_KEY_BY_HASH, out, &found, NULL, err);
    pthread_mutex_unlock(&st->rmu);
    if (!rc && !found)
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no such key");
    return rc;
}

int store_key_find(store_t *st, const char *ref, api_key_t *out, up_error_t *err) {
    assert(st && ref && out);
    if (!*ref)
        return up_error_set(err, UP_ERR_NOT_FOUND, 0, "no key \"\"");
    api_key_t k;
    int found = 0, more = 0;
    pthread_mutex_lock(&st->rmu);
    bind_text(st->rstmt[R_KEY_BY_ID], 1, ref);
    int rc = read_key_row(st, R_KEY_BY_ID, &k, &found, NULL, err);
    if (!rc && !found) {
        bind_text(st->rstmt[R_KEY_BY_PREFIX], 1, ref);
        rc = read_key_row(st, R_KEY_BY_PREFIX, &k, &found, &more, err);
    }
    pthread_mutex_unlock(&st->rmu);
    if (rc)
        return rc;
    if (!found)
        return up_error_set(err, UP_ERR_NOT_FOUND, 0, "no key %s", ref);
    if (more)
        return up_error_set(err, UP_ERR_INVALID, 0, "key %s is ambiguous: more than one key starts with it",
                            ref);
    *out = k;
    return UP_OK;
}

/* With no keys, *keys is NULL and *n 0 (free(NULL) is fine). On error too. */
int store_key_list(store_t *st, api_key_t **keys, int *n, up_error_t *err) {
    assert(st && keys && n);
    api_key_t *a = NULL;
    int len = 0, cap = 0, src, rc = UP_OK;
    pthread_mutex_lock(&st->rmu);
    sqlite3_stmt *s = st->rstmt[R_KEY_LIST];
    while ((src = sqlite3_step(s)) == SQLITE_ROW) {
        if (len == cap) {
            cap = cap ? 2 * cap : 16;
            a = xrealloc(a, (size_t)cap * sizeof *a);
        }
        read_key(s, &a[len++]);
    }
    if (src != SQLITE_DONE) {
        rc = db_error(st->r, err, "cannot list keys");
        free(a);
        a = NULL;
        len = 0;
    }
    done(s);
    pthread_mutex_unlock(&st->rmu);
    *keys = a;
    *n = len;
    return rc;
}

int store_key_revoke(store_t *st, const char *id, up_error_t *err) {
    assert(st && id);
    long long quota, credits;
    double revoked_at = 0;
    pthread_mutex_lock(&st->wmu);
    int rc = tx_begin(st, err);
    if (rc)
        goto out;
    if ((rc = key_state(st, id, &quota, &credits, &revoked_at, err)))
        goto end;
    if (revoked_at > 0) {
        rc = up_error_set(err, UP_ERR_INVALID, 0, "key %s is already revoked", id);
        goto end;
    }
    sqlite3_stmt *s = st->wstmt[S_KEY_REVOKE];
    bind_text(s, 1, id);
    sqlite3_bind_double(s, 2, now_s());
    rc = exec_stmt(st, S_KEY_REVOKE, "cannot revoke a key", err);
end:
    rc = tx_end(st, rc, err);
out:
    pthread_mutex_unlock(&st->wmu);
    return rc;
}

/* Before any transaction: the refusals that need only ch (see store.h). */
static int check_key_change(const char *id, const store_key_change_t *ch, up_error_t *err) {
    const size_t tier_size = sizeof((api_key_t *)0)->tier;
    if (ch->tier && (!ch->tier[0] || strlen(ch->tier) >= tier_size))
        return up_error_set(err, UP_ERR_INVALID, 0, "key %s: a tier name is 1 to %zu bytes", id,
                            tier_size - 1);
    if (ch->set_quota && ch->quota < -1)
        return up_error_set(err, UP_ERR_INVALID, 0, "key %s: quota %lld: -1 (none) or more", id, ch->quota);
    if (ch->set_credits && ch->credits < -1)
        return up_error_set(err, UP_ERR_INVALID, 0, "key %s: credits %lld: -1 (unlimited) or more", id,
                            ch->credits);
    if (ch->set_credits && ch->add_credits)
        return up_error_set(err, UP_ERR_INVALID, 0, "key %s: set the credits or add to them, not both", id);
    return UP_OK;
}

int store_key_update(store_t *st, const char *id, const store_key_change_t *ch, api_key_t *out,
                     up_error_t *err) {
    assert(st && id && ch);
    int rc = check_key_change(id, ch, err);
    if (rc)
        return rc;
    long long quota, credits, add = ch->add_credits;
    double revoked_at = 0;
    pthread_mutex_lock(&st->wmu);
    if ((rc = tx_begin(st, err)))
        goto out;
    if ((rc = key_state(st, id, &quota, &credits, &revoked_at, err)))
        goto end;
    if (revoked_at > 0) {
        rc = up_error_set(err, UP_ERR_INVALID, 0, "key %s is revoked: it cannot be changed", id);
        goto end;
    }
    if (add && credits < 0) {
        rc = up_error_set(err, UP_ERR_INVALID, 0,
                          "key %s has unlimited credits: there is no balance to add %lld to", id, add);
        goto end;
    }
    if (add && (add < 0 ? credits + add < 0 : credits > LLONG_MAX - add)) {
        rc = up_error_set(err, UP_ERR_INVALID, 0, "key %s: adding %lld to a balance of %lld would take it %s",
                          id, add, credits, add < 0 ? "below 0" : "out of range");
        goto end;
    }
    sqlite3_stmt *s = st->wstmt[S_KEY_UPDATE];
    bind_text(s, 1, id);
    if (ch->tier)
        bind_text(s, 2, ch->tier);
    else
        sqlite3_bind_null(s, 2);
    sqlite3_bind_int(s, 3, ch->set_quota != 0);
    sqlite3_bind_int64(s, 4, ch->quota);
    sqlite3_bind_int(s, 5, ch->set_credits != 0);
    sqlite3_bind_int64(s, 6, ch->credits);
    sqlite3_bind_int64(s, 7, add);
    if ((rc = exec_stmt(st, S_KEY_UPDATE, "cannot update a key", err)) || !out)
        goto end;
    s = st->wstmt[S_W_KEY_BY_ID];
    bind_text(s, 1, id);
    int src = sqlite3_step(s);
    if (src == SQLITE_ROW)
        read_key(s, out);
    done(s);
    if (src != SQLITE_ROW)
        rc = db_error(st->w, err, "cannot read the updated key");
end:
    rc = tx_end(st, rc, err);
out:
    pthread_mutex_unlock(&st->wmu);
    return rc;
}

int store_key_touch(store_t *st, const char *id, double t, up_error_t *err) {
    assert(st && id);
    pthread_mutex_lock(&st->wmu);
    int rc = tx_begin(st, err);
    if (rc)
        goto out;
    sqlite3_stmt *s = st->wstmt[S_KEY_TOUCH];
    bind_text(s, 1, id);
    sqlite3_bind_double(s, 2, t);
    if (!(rc = exec_stmt(st, S_KEY_TOUCH, "cannot record a key's use", err)) && sqlite3_changes(st->w) == 0)
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no key %s", id);
    rc = tx_end(st, rc, err);
out:
    pthread_mutex_unlock(&st->wmu);
    return rc;
}

/* An unknown id has used nothing: 0, not UP_ERR_NOT_FOUND. */
int store_key_usage(store_t *st, const char *id, double period_start, long long *used, up_error_t *err) {
    assert(st && id && used);
    *used = 0;
    pthread_mutex_lock(&st->rmu);
    sqlite3_stmt *s = st->rstmt[R_USAGE];
    bind_text(s, 1, id);
    sqlite3_bind_double(s, 2, period_start);
    int rc = UP_OK, src = sqlite3_step(s);
    if (src == SQLITE_ROW)
        *used = sqlite3_column_int64(s, 0);
    else
        rc = db_error(st->r, err, "cannot sum a key's usage");
    done(s);
    pthread_mutex_unlock(&st->rmu);
    return rc;
}
