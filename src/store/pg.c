/*
 * pg.c - the job store on PostgreSQL (implements store.h), for several
 * processes and machines on one database: the store a postgresql:// or
 * postgres:// URL names (libpq's URI forms, a Unix socket folder as
 * ?host=/dir included). This file opens it (connection, schema and its
 * migrations, prepared statements), holds the helpers the backend's files
 * share and its table of functions; jobs are pg_jobs.c's, keys and charges
 * pg_keys.c's (pg_int.h).
 *
 * DESIGN
 *
 * Connection: one per handle, guarded by the handle's mutex (the threads of
 * one process share a handle; each process opens its own). Every statement
 * is prepared once per connection (PQprepare at open, and again after a
 * reconnection), its parameters passed as text with explicit casts in the
 * SQL. A call that finds its connection lost (PQstatus bad: the server
 * restarted, a network cut) resets it once (PQreset, then the statements
 * prepared again) and fails with UP_ERR_IO when that does not bring it
 * back; a transaction is never retried halfway: a connection lost inside
 * one fails the call, the server rolls the transaction back, and the next
 * call reconnects.
 *
 * Transactions: read committed, each write function's statements between
 * BEGIN and COMMIT, a single-statement write on its own (autocommit). The
 * rules of store.h "What a backend guarantees" are kept by row locks:
 *   - charges: the key row SELECT ... FOR UPDATE first, then the period's
 *     usage summed (a new statement: a new snapshot, which sees every
 *     charge committed before the lock was granted), the balance debited
 *     and the jobs inserted, so charges to one key serialise;
 *   - refunds: UPDATE jobs SET refunded = 1 WHERE ... refunded = 0, whose
 *     row lock and recheck let only one transaction flip the flag; the
 *     credits go back only when it changed a row;
 *   - fenced transitions: the job row SELECT ... FOR UPDATE, its (status,
 *     attempts, worker) checked against the fence, then the write;
 *   - claims: one statement, UPDATE ... WHERE seq = (SELECT seq ... ORDER
 *     BY priority DESC, vtag, seq LIMIT 1 FOR UPDATE SKIP LOCKED) AND
 *     status = 0
 *     RETURNING, so concurrent claimers take different rows without
 *     waiting on each other and nothing is held across inference; rescue
 *     locks the lapsed rows the same way, each write masked by status and
 *     lease;
 *   - asset deletion: store_assets_due locks the candidate asset rows FOR
 *     UPDATE, then checks each again in a statement of its own (a new
 *     snapshot: every submission that held the row FOR SHARE has committed
 *     by then); a submission takes its asset FOR SHARE, so one that comes
 *     after waits, then finds the asset past its expires_at.
 * Lock order is job row, then key row (a refund); a charge locks the key
 * row and then only shares asset rows; no cycle, so no deadlock.
 *
 * Times are double precision Unix seconds, as SQLite's REAL columns, so
 * the C structs fill the same way; each process's clock, as for SQLite.
 *
 * Schema: created and migrated by upres at open, in one transaction that
 * first takes pg_advisory_xact_lock(PG_SCHEMA_LOCK), so processes starting
 * at once do not race (the second waits, then finds the schema made).
 * schema_version holds the version; migrations[v] takes version v - 1 to
 * v; a database newer than this upres is refused. Version 1 is SQLite's
 * schema 7, column for column; version 2 is SQLite's 8 (scheduling:
 * priority, vtag, the claim's partial index jobs_fair on (priority DESC,
 * vtag, seq) WHERE status = 0 in place of jobs_queue, and jobs_owner_fair
 * for an owner's largest queued tag). A submission takes a transaction
 * advisory lock on its owner (PG_FAIR_LOCK, hashed owner) before it reads
 * the tags, so two submissions of one owner (anonymous ones too, which
 * lock no key row) chain their tags instead of both reading the same L.
 * Version 3 adds rate_events (pg_rate.c), which SQLite has no use for;
 * version 4 the workers registry (SQLite's 9).
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/pgconn.h"
#include "core/text.h"
#include "core/xmalloc.h"
#include "store/pg_int.h"

#define PG_SCHEMA_VERSION 4
#define PG_SCHEMA_LOCK 0x75707265734c4bLL /* "upresLK": the migration's advisory lock */

/* Version 1: every table, as SQLite's schema version 7 has them. */
static const char schema_v1[] =
    "CREATE TABLE IF NOT EXISTS jobs ("
    " seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY," /* insertion order, never reused */
    " id TEXT NOT NULL UNIQUE,"
    " status INTEGER NOT NULL DEFAULT 0," /* job_status_t */
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
    " result_bytes BIGINT NOT NULL DEFAULT 0,"
    " created_at DOUBLE PRECISION NOT NULL DEFAULT 0,"
    " started_at DOUBLE PRECISION NOT NULL DEFAULT 0,"
    " completed_at DOUBLE PRECISION NOT NULL DEFAULT 0,"
    " expires_at DOUBLE PRECISION NOT NULL DEFAULT 0,"
    " error TEXT NOT NULL DEFAULT '',"
    " model_alias TEXT NOT NULL DEFAULT '',"
    " owner TEXT NOT NULL DEFAULT ''," /* api key id, '' = anonymous */
    " tier TEXT NOT NULL DEFAULT '',"
    " credits BIGINT NOT NULL DEFAULT 0,"   /* charged at insert */
    " refunded INTEGER NOT NULL DEFAULT 0," /* 1 once the charge was given back */
    " keep_s DOUBLE PRECISION NOT NULL DEFAULT 0,"
    " colour TEXT NOT NULL DEFAULT '',"
    " worker TEXT NOT NULL DEFAULT ''," /* the current claim's worker id, '' = none */
    " lease_s DOUBLE PRECISION NOT NULL DEFAULT 0,"
    " lease_until DOUBLE PRECISION NOT NULL DEFAULT 0," /* 0 = no live claim */
    " not_before DOUBLE PRECISION NOT NULL DEFAULT 0,"  /* a queued job is not claimed before this */
    " asset_id TEXT NOT NULL DEFAULT '',"
    " steps TEXT NOT NULL DEFAULT '',"
    " report TEXT NOT NULL DEFAULT '',"
    " meta TEXT NOT NULL DEFAULT ''"
    ");"
    "CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (created_at, seq) WHERE status = 0;"
    "CREATE INDEX IF NOT EXISTS jobs_held ON jobs (lease_until) WHERE status IN (1, 6);"
    "CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs (expires_at) WHERE expires_at > 0;"
    "CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, seq);"
    "CREATE INDEX IF NOT EXISTS jobs_owner_time ON jobs (owner, created_at);"
    "CREATE INDEX IF NOT EXISTS jobs_asset ON jobs (asset_id, status);"
    "CREATE INDEX IF NOT EXISTS jobs_model_done ON jobs (model, completed_at) WHERE status IN (2, 5);"
    "CREATE TABLE IF NOT EXISTS keys ("
    " seq BIGINT GENERATED ALWAYS AS IDENTITY," /* insertion order: the listing's tie-break */
    " id TEXT NOT NULL PRIMARY KEY,"
    " name TEXT NOT NULL DEFAULT '',"
    " prefix TEXT NOT NULL DEFAULT '',"
    " hash BYTEA NOT NULL UNIQUE CHECK (length(hash) = 32),"
    " tier TEXT NOT NULL DEFAULT '',"
    " quota BIGINT NOT NULL DEFAULT -1,"
    " credits BIGINT NOT NULL DEFAULT -1,"
    " created_at DOUBLE PRECISION NOT NULL DEFAULT 0,"
    " last_used_at DOUBLE PRECISION NOT NULL DEFAULT 0,"
    " revoked_at DOUBLE PRECISION NOT NULL DEFAULT 0,"
    " guest INTEGER NOT NULL DEFAULT 0,"            /* 1 = a guest session */
    " reset_at DOUBLE PRECISION NOT NULL DEFAULT 0" /* the last daily reset, 0 = never */
    ");"
    "CREATE INDEX IF NOT EXISTS keys_guest ON keys (guest, created_at, seq);"
    "CREATE TABLE IF NOT EXISTS idempotency ("
    " scope TEXT NOT NULL," /* the API key id that sent it, '' = anonymous */
    " key TEXT NOT NULL,"
    " request_hash BYTEA NOT NULL CHECK (length(request_hash) = 32),"
    " status INTEGER NOT NULL,"
    " body TEXT NOT NULL,"
    " job_id TEXT NOT NULL,"
    " created_at DOUBLE PRECISION NOT NULL,"
    " PRIMARY KEY (scope, key)"
    ");"
    "CREATE INDEX IF NOT EXISTS idempotency_time ON idempotency (created_at);"
    "CREATE TABLE IF NOT EXISTS assets ("
    " id TEXT NOT NULL PRIMARY KEY,"
    " owner TEXT NOT NULL DEFAULT '',"
    " key TEXT NOT NULL DEFAULT ''," /* the file's blob key, '' once deleted */
    " name TEXT NOT NULL DEFAULT '',"
    " format TEXT NOT NULL DEFAULT '',"
    " width INTEGER NOT NULL DEFAULT 0,"
    " height INTEGER NOT NULL DEFAULT 0,"
    " frames INTEGER NOT NULL DEFAULT 1,"
    " bytes BIGINT NOT NULL DEFAULT 0,"
    " created_at DOUBLE PRECISION NOT NULL DEFAULT 0,"
    " expires_at DOUBLE PRECISION NOT NULL DEFAULT 0"
    ");"
    "CREATE INDEX IF NOT EXISTS assets_expiry ON assets (expires_at) WHERE key <> '';";

/* Version 2: scheduling (store.h "Order"), as SQLite's version 8; the jobs queued before keep their order. */
static const char schema_v2[] =
    "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS priority INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS vtag DOUBLE PRECISION NOT NULL DEFAULT 0;"
    "DROP INDEX IF EXISTS jobs_queue;"
    "CREATE INDEX IF NOT EXISTS jobs_fair ON jobs (priority DESC, vtag, seq) WHERE status = 0;"
    "CREATE INDEX IF NOT EXISTS jobs_owner_fair ON jobs (owner, priority, vtag) WHERE status = 0;";
/* Version 3: request limits shared by the processes (pg_rate.c); unlogged, as they need no durability. */
static const char schema_v3[] = "CREATE UNLOGGED TABLE IF NOT EXISTS rate_events ("
                                " subject TEXT NOT NULL,"
                                " t DOUBLE PRECISION NOT NULL"
                                ");"
                                "CREATE INDEX IF NOT EXISTS rate_events_subject ON rate_events (subject, t);";

/* Version 4: the workers registry (store.h "The workers registry"), as SQLite's schema version 9 has it. */
static const char schema_v4[] = "CREATE TABLE IF NOT EXISTS workers ("
                                " name TEXT NOT NULL PRIMARY KEY,"
                                " host TEXT NOT NULL DEFAULT '',"
                                " pid INTEGER NOT NULL DEFAULT 0,"
                                " models TEXT NOT NULL DEFAULT ''," /* comma-separated, '' = every model */
                                " slots INTEGER NOT NULL DEFAULT 1,"
                                " lease_s DOUBLE PRECISION NOT NULL DEFAULT 0," /* live while heartbeat_at +
                                                                                   lease_s >= now */
                                " started_at DOUBLE PRECISION NOT NULL DEFAULT 0,"
                                " heartbeat_at DOUBLE PRECISION NOT NULL DEFAULT 0,"
                                " jobs TEXT NOT NULL DEFAULT ''," /* the job ids it runs now */
                                " state TEXT NOT NULL DEFAULT 'running'"
                                ");";

/* migrations[v]: from version v - 1 to v (index 0 unused). */
static const char *const migrations[PG_SCHEMA_VERSION + 1] = {
    [1] = schema_v1, [2] = schema_v2, [3] = schema_v3, [4] = schema_v4};

/* ---- arguments ------------------------------------------------------------------ */

void pg_arg_text(pg_args_t *a, const char *t) {
    assert(a->n < PG_MAX_ARGS);
    if (!t)
        t = "";
    size_t len = strlen(t);
    a->own[a->n] = NULL;
    if (text_utf8_valid(t, len)) {
        a->v[a->n++] = t;
        return;
    }
    a->own[a->n] = text_utf8_dup(t, len);
    a->v[a->n] = a->own[a->n];
    a->n++;
}

void pg_arg_null(pg_args_t *a) {
    assert(a->n < PG_MAX_ARGS);
    a->own[a->n] = NULL;
    a->v[a->n++] = NULL;
}

void pg_arg_int(pg_args_t *a, long long v) {
    assert(a->n < PG_MAX_ARGS);
    snprintf(a->num[a->n], sizeof a->num[a->n], "%lld", v);
    a->own[a->n] = NULL;
    a->v[a->n] = a->num[a->n];
    a->n++;
}

void pg_arg_double(pg_args_t *a, double v) {
    assert(a->n < PG_MAX_ARGS);
    /* %.17g round-trips a double exactly; PostgreSQL reads inf and nan as float8 too */
    snprintf(a->num[a->n], sizeof a->num[a->n], "%.17g", v);
    a->own[a->n] = NULL;
    a->v[a->n] = a->num[a->n];
    a->n++;
}

void pg_arg_hex(pg_args_t *a, const unsigned char *b, size_t n) {
    assert(a->n < PG_MAX_ARGS);
    static const char digits[] = "0123456789abcdef";
    char *h = xmalloc(2 * n + 1);
    for (size_t i = 0; i < n; i++) {
        h[2 * i] = digits[b[i] >> 4];
        h[2 * i + 1] = digits[b[i] & 15];
    }
    h[2 * n] = '\0';
    a->own[a->n] = h;
    a->v[a->n++] = h;
}

void pg_args_fini(pg_args_t *a) {
    for (int i = 0; i < a->n; i++) {
        free(a->own[i]);
        a->own[i] = NULL;
    }
    a->n = 0;
}

/* ---- results --------------------------------------------------------------------- */

const char *pg_str(const PGresult *r, int row, int col) {
    if (PQgetisnull(r, row, col))
        return "";
    return PQgetvalue(r, row, col);
}

long long pg_ll(const PGresult *r, int row, int col) { return strtoll(pg_str(r, row, col), NULL, 10); }

double pg_dbl(const PGresult *r, int row, int col) { return strtod(pg_str(r, row, col), NULL); }

void pg_copy(char *dst, size_t size, const PGresult *r, int row, int col) {
    const char *t = pg_str(r, row, col);
    text_utf8_copy(dst, size, t, PQgetisnull(r, row, col) ? 0 : (size_t)PQgetlength(r, row, col));
}

static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

void pg_unhex(unsigned char *out, size_t n, const PGresult *r, int row, int col) {
    const char *h = pg_str(r, row, col);
    if (strlen(h) != 2 * n)
        return;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(h[2 * i]), lo = hexval(h[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
}

/* ---- errors, statements, transactions --------------------------------------------- */

/* UP_ERR_IO with the server's message for r (or the connection's), logged: the one place it is. */
static int db_error(pg_store_t *p, const PGresult *r, const char *what, up_error_t *err) {
    char buf[400];
    const char *m = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    text_one_line(m ? m : PQerrorMessage(p->conn), buf, sizeof buf);
    log_error("job store: %s: %s: %s", p->where, what, buf);
    return up_error_set(err, UP_ERR_IO, 0, "job store: %s: %s", what, buf);
}

int pg_run(pg_store_t *p, const pg_sql_t *t, int k, const pg_args_t *a, PGresult **res, long long *changed,
           int clash, const char *who, const char *what, up_error_t *err) {
    assert(k >= 0 && k < t->n);
    char name[16];
    snprintf(name, sizeof name, "%s%d", t->prefix, k);
    if (res)
        *res = NULL;
    PGresult *r = PQexecPrepared(p->conn, name, a ? a->n : 0, a ? a->v : NULL, NULL, NULL, 0);
    ExecStatusType s = PQresultStatus(r);
    if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK) {
        if (changed)
            *changed = strtoll(PQcmdTuples(r), NULL, 10);
        if (res)
            *res = r;
        else
            PQclear(r);
        return UP_OK;
    }
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    int rc;
    if (clash && state && strcmp(state, "23505") == 0) /* unique_violation */
        rc = up_error_set(err, clash, 0, "job store: %s", who);
    else
        rc = db_error(p, r, what, err);
    PQclear(r);
    return rc;
}

/* Run sql (no parameters, any number of statements) on the connection. */
static int exec_sql(pg_store_t *p, const char *sql, const char *what, up_error_t *err) {
    PGresult *r = PQexec(p->conn, sql);
    ExecStatusType s = PQresultStatus(r);
    int rc = UP_OK;
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK)
        rc = db_error(p, r, what, err);
    PQclear(r);
    return rc;
}

int pg_tx_begin(pg_store_t *p, up_error_t *err) {
    assert(!p->in_tx);
    int rc = exec_sql(p, "BEGIN", "cannot begin a transaction", err);
    p->in_tx = rc == UP_OK;
    return rc;
}

int pg_tx_end(pg_store_t *p, int rc, up_error_t *err) {
    if (!p->in_tx)
        return rc;
    p->in_tx = 0;
    if (rc) {
        if (PQstatus(p->conn) == CONNECTION_OK)
            exec_sql(p, "ROLLBACK", "cannot roll back", NULL);
        return rc;
    }
    PGresult *r = PQexec(p->conn, "COMMIT");
    /* COMMIT of a transaction that failed answers ROLLBACK: never here, but never taken for a commit */
    if (PQresultStatus(r) != PGRES_COMMAND_OK || strcmp(PQcmdStatus(r), "COMMIT") != 0)
        rc = db_error(p, r, "cannot commit", err);
    PQclear(r);
    if (rc && PQstatus(p->conn) == CONNECTION_OK && PQtransactionStatus(p->conn) != PQTRANS_IDLE)
        exec_sql(p, "ROLLBACK", "cannot roll back", NULL);
    return rc;
}

/* ---- connection ------------------------------------------------------------------- */

static int prepare_table(pg_store_t *p, const pg_sql_t *t, up_error_t *err) {
    for (int i = 0; i < t->n; i++) {
        char name[16];
        assert(t->sql[i]);
        snprintf(name, sizeof name, "%s%d", t->prefix, i);
        PGresult *r = PQprepare(p->conn, name, t->sql[i], 0, NULL);
        int rc = UP_OK;
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            rc = db_error(p, r, "cannot prepare a statement", err);
            log_error("job store: the statement: %s", t->sql[i]);
        }
        PQclear(r);
        if (rc)
            return rc;
    }
    return UP_OK;
}

static int prepare_all(pg_store_t *p, up_error_t *err) {
    int rc = prepare_table(p, &pg_jobs_sql, err);
    if (!rc)
        rc = prepare_table(p, &pg_keys_sql, err);
    if (!rc)
        rc = prepare_table(p, &pg_rate_sql, err);
    return rc ? rc : prepare_table(p, &pg_workers_sql, err);
}

int pg_enter(pg_store_t *p, up_error_t *err) {
    pthread_mutex_lock(&p->mu);
    if (PQstatus(p->conn) == CONNECTION_OK)
        return UP_OK;
    log_warn("job store: %s: the connection was lost: reconnecting", p->where);
    PQreset(p->conn);
    if (PQstatus(p->conn) != CONNECTION_OK) {
        int rc = db_error(p, NULL, "cannot reconnect", err);
        pthread_mutex_unlock(&p->mu);
        return rc;
    }
    int rc = prepare_all(p, err);
    if (rc)
        pthread_mutex_unlock(&p->mu);
    return rc;
}

void pg_leave(pg_store_t *p) {
    assert(!p->in_tx);
    if (p->in_tx)
        pg_tx_end(p, UP_ERR_IO, NULL);
    pthread_mutex_unlock(&p->mu);
}

/*
 * Create the schema, or migrate an older one, or check that the one there
 * is one we know: one transaction under the advisory lock (see DESIGN).
 */
static int init_schema(pg_store_t *p, up_error_t *err) {
    int rc = pg_tx_begin(p, err);
    if (rc)
        return rc;
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT pg_advisory_xact_lock(%lld)", PG_SCHEMA_LOCK);
    if ((rc = exec_sql(p, sql, "cannot lock the schema", err)) ||
        (rc = exec_sql(p, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
                       "cannot create the schema version", err)))
        return pg_tx_end(p, rc, err);
    PGresult *r = PQexec(p->conn, "SELECT coalesce(max(version), 0) FROM schema_version");
    int version = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        version = (int)pg_ll(r, 0, 0);
    else
        rc = db_error(p, r, "cannot read the schema version", err);
    PQclear(r);
    if (rc)
        return pg_tx_end(p, rc, err);
    if (version > PG_SCHEMA_VERSION) {
        rc =
            up_error_set(err, UP_ERR_IO, 0, "job store: %s has schema version %d, newer than this upres (%d)",
                         p->where, version, PG_SCHEMA_VERSION);
        log_error("%s", err ? err->msg : "job store: schema too new");
        return pg_tx_end(p, rc, err);
    }
    if (version < PG_SCHEMA_VERSION) {
        if (version > 0)
            log_info("job store: %s: migrating schema version %d to %d", p->where, version,
                     PG_SCHEMA_VERSION);
        for (int v = version + 1; v <= PG_SCHEMA_VERSION && !rc; v++)
            rc = exec_sql(p, migrations[v], "cannot migrate the schema", err);
        snprintf(sql, sizeof sql, "DELETE FROM schema_version; INSERT INTO schema_version VALUES (%d)",
                 PG_SCHEMA_VERSION);
        if (!rc)
            rc = exec_sql(p, sql, "cannot record the schema version", err);
    }
    return pg_tx_end(p, rc, err);
}

/* The server's notices ("relation ... already exists, skipping") are for a debug log, not stderr. */
static void on_notice(void *arg, const char *message) {
    pg_store_t *p = arg;
    char buf[400];
    log_debug("job store: %s: %s", p->where, text_one_line(message, buf, sizeof buf));
}

static void close_store(store_t *st) {
    pg_store_t *p = pg_of(st);
    PQfinish(p->conn);
    pthread_mutex_destroy(&p->mu);
    free(p->url);
    free(p);
}

static const store_vtbl_t pg_vtbl = {
    .name = "postgresql",
    .close = close_store,
    .jobs_submit = pg_jobs_submit,
    .idem_get = pg_idem_get,
    .asset_insert = pg_asset_insert,
    .asset_get = pg_asset_get,
    .assets_due = pg_assets_due,
    .asset_due = pg_asset_due,
    .asset_deleted = pg_asset_deleted,
    .job_get = pg_job_get,
    .job_claim = pg_job_claim,
    .job_start = pg_job_start,
    .job_progress = pg_job_progress,
    .job_heartbeat = pg_job_heartbeat,
    .job_complete = pg_job_complete,
    .job_fail = pg_job_fail,
    .job_cancel = pg_job_cancel,
    .job_cancelled = pg_job_cancelled,
    .job_requeue = pg_job_requeue,
    .jobs_rescue = pg_jobs_rescue,
    .job_downloaded = pg_job_downloaded,
    .jobs_due = pg_jobs_due,
    .job_expire = pg_job_expire,
    .blobs_referenced = pg_blobs_referenced,
    .job_counts = pg_job_counts,
    .model_counts = pg_model_counts,
    .rate_take = pg_rate_take,
    .jobs_list = pg_jobs_list,
    .key_insert = pg_key_insert,
    .key_by_hash = pg_key_by_hash,
    .key_find = pg_key_find,
    .key_list = pg_key_list,
    .key_revoke = pg_key_revoke,
    .key_update = pg_key_update,
    .key_touch = pg_key_touch,
    .key_usage = pg_key_usage,
    .job_queue_position = pg_job_queue_position,
    .model_rate = pg_model_rate,
    .keys_reset_guests = pg_keys_reset_guests,
    .usage_daily = pg_usage_daily,
    .listen = pg_listen,
    .worker_register = pg_worker_register,
    .worker_heartbeat = pg_worker_heartbeat,
    .worker_remove = pg_worker_remove,
    .workers_list = pg_workers_list,
    .schema_version = pg_schema_version,
};

int store_pg_open(const char *url, store_t **out, up_error_t *err) {
    assert(url && out);
    *out = NULL;
    pg_store_t *p = xcalloc(1, sizeof *p);
    p->base.vtbl = &pg_vtbl;
    pthread_mutex_init(&p->mu, NULL);
    p->url = xstrdup(url);
    p->conn = pgconn_open(url, "upres", p->where, sizeof p->where);
    int rc;
    if (!p->conn) {
        rc = up_error_set(err, UP_ERR_NOMEM, 0, "job store: libpq could not allocate a connection");
        goto fail;
    }
    if (PQstatus(p->conn) != CONNECTION_OK) {
        char buf[400];
        text_one_line(PQerrorMessage(p->conn), buf, sizeof buf);
        rc = up_error_set(err, UP_ERR_IO, 0, "job store: cannot connect to the %s: %s", p->where, buf);
        log_error("%s", err ? err->msg : "job store: cannot connect");
        goto fail;
    }
    PQsetNoticeProcessor(p->conn, on_notice, p);
    if ((rc = init_schema(p, err)) || (rc = prepare_all(p, err)))
        goto fail;
    *out = &p->base;
    return UP_OK;
fail:
    close_store(&p->base);
    return rc;
}
