/*
 * sqlite_int.h - what the SQLite store's files share, and nothing outside
 * src/store includes: the handle, the statement tables, the helpers of
 * sqlite.c and the backend's functions, which sqlite.c puts in its table.
 *
 *   sqlite.c       open, schema and migrations, shared helpers, the table
 *   sqlite_jobs.c  jobs and their assets: submission, claims, transitions,
 *                  reads, retention
 *   sqlite_keys.c  API keys and guest sessions, charges, refunds, usage
 *   sqlite_workers.c  the workers registry, the schema version
 *
 * Each file owns its statements: an enum and an SQL table of its own,
 * handed to sqlite.c as an sq_sql_t to prepare at open; the prepared ones
 * are the handle's arrays for that file (jw, jr, kw, kr).
 */
#ifndef UPRES_STORE_SQLITE_INT_H
#define UPRES_STORE_SQLITE_INT_H

#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stddef.h>

#include "store/store.h"

/*
 * The pipeline of a job that names none, as SQL over the expressions
 * model, scale, tile, format and quality (columns or parameters): upscale,
 * then encode (steps.h; format "" = the input's own, so left out). Used
 * by the insert and by the migration to version 6, so both make the same
 * text. CASE chooses between two whole arrays, so no JSON value passes
 * through CASE into another JSON function (which, had CASE lost its
 * subtype, would quote it as a string).
 */
#define SQ_DEFAULT_STEPS(model, scale, tile, format, quality)                                                \
    "CASE WHEN " format " = '' THEN json_array(json_object('op', 'upscale', 'model', " model                 \
    ", 'scale', " scale ", 'tile', " tile "), json_object('op', 'encode', 'quality', " quality "))"          \
    " ELSE json_array(json_object('op', 'upscale', 'model', " model ", 'scale', " scale ", 'tile', " tile    \
    "), json_object('op', 'encode', 'format', " format ", 'quality', " quality ")) END"

/*
 * A job that completed (status completed, or expired since: only a
 * completed job expires), as store_model_rate selects them and as the
 * partial index jobs_model_done (sqlite.c) is declared: one text, so the
 * planner sees the index's WHERE in the statement's.
 */
#define SQ_DONE_WHERE "status IN (2, 5)"

/* A file's statements: n SQL texts (borrowed, static). */
typedef struct sq_sql {
    const char *const *sql;
    int n;
} sq_sql_t;

extern const sq_sql_t sq_jobs_wsql, sq_jobs_rsql;       /* sqlite_jobs.c: writer, reader */
extern const sq_sql_t sq_keys_wsql, sq_keys_rsql;       /* sqlite_keys.c */
extern const sq_sql_t sq_workers_wsql, sq_workers_rsql; /* sqlite_workers.c */

/* The handle (see sqlite.c, DESIGN: two connections). */
typedef struct sq_store {
    store_t base;        /* first: the public functions' handle */
    pthread_mutex_t wmu; /* guards w and the writer statements */
    pthread_mutex_t rmu; /* guards r and the reader statements */
    sqlite3 *w, *r;
    sqlite3_stmt *begin, *commit, *rollback; /* on w */
    sqlite3_stmt **jw, **jr;                 /* sq_jobs_wsql on w, sq_jobs_rsql on r */
    sqlite3_stmt **kw, **kr;                 /* sq_keys_wsql on w, sq_keys_rsql on r */
    sqlite3_stmt **ww, **wr;                 /* sq_workers_wsql on w, sq_workers_rsql on r */
    char path[PATH_MAX];
} sq_store_t;

static inline sq_store_t *sq_of(store_t *st) { return (sq_store_t *)st; }

/* ---- helpers (sqlite.c) ---------------------------------------------------------- */

/* UP_ERR_IO with sqlite's message for db (logged: the one place a store failure is). */
int sq_db_error(sqlite3 *db, up_error_t *err, const char *what);

/* A text column into dst: valid UTF-8 and cut on a character boundary, whatever an older upres stored. */
void sq_copy_text(char *dst, size_t size, sqlite3_stmt *s, int col);

/* Reset s and clear its bindings: every use of a prepared statement ends so. */
void sq_done(sqlite3_stmt *s);

/* Bind t (NULL = "") to parameter i, copied. */
void sq_bind_text(sqlite3_stmt *s, int i, const char *t);

/* Run s, which returns no rows (bindings already set), on the writer. */
int sq_exec(sq_store_t *q, sqlite3_stmt *s, const char *what, up_error_t *err);

/*
 * Run an INSERT on the writer (bindings already set): UP_OK; clash (with
 * "job store: " and who in the message) when a unique key is taken; the
 * database's error.
 */
int sq_step_insert(sq_store_t *q, sqlite3_stmt *s, int clash, const char *who, const char *what,
                   up_error_t *err);

/* BEGIN IMMEDIATE on the writer (wmu held). */
int sq_tx_begin(sq_store_t *q, up_error_t *err);

/* Commit when rc is 0, else roll back; returns the outcome. */
int sq_tx_end(sq_store_t *q, int rc, up_error_t *err);

/* ---- inside a write transaction (sqlite_keys.c) ------------------------------------- */

/*
 * Check that key owner may be charged need credits for a submission in the
 * period from period_start (*c gets the figures) and take them off its
 * balance. Refusals as store_job_insert_charged.
 */
int sq_charge(sq_store_t *q, const char *owner, long long need, double period_start, store_charge_t *c,
              up_error_t *err);

/* Give job id's charge back to its owner, at most once (sqlite.c, DESIGN: Charges). */
int sq_refund(sq_store_t *q, const char *job_id, up_error_t *err);

/* ---- the backend's functions (store_vtbl_t) -------------------------------------------- */

/* sqlite_jobs.c */
int sq_jobs_submit(store_t *st, const job_t *jobs, int n, double period_start, const store_idem_t *idem,
                   store_charge_t *charge, up_error_t *err);
int sq_idem_get(store_t *st, const char *scope, const char *key, store_idem_t *out, up_error_t *err);
int sq_asset_insert(store_t *st, const asset_t *a, up_error_t *err);
int sq_asset_get(store_t *st, const char *id, asset_t *out, up_error_t *err);
int sq_assets_due(store_t *st, double now, asset_t *out, int max, int *n, up_error_t *err);
int sq_asset_due(store_t *st, const char *id, double now, asset_t *out, up_error_t *err);
int sq_asset_deleted(store_t *st, const char *id, up_error_t *err);
int sq_job_get(store_t *st, const char *id, job_t *out, up_error_t *err);
int sq_job_claim(store_t *st, const char *worker, double lease_s, const char *models, job_t *out,
                 up_error_t *err);
int sq_job_start(store_t *st, const char *id, const store_fence_t *fence, int *cancel, up_error_t *err);
int sq_job_progress(store_t *st, const char *id, const store_fence_t *fence, int progress, int *cancel,
                    up_error_t *err);
int sq_job_heartbeat(store_t *st, const char *id, const store_fence_t *fence, int *cancel, up_error_t *err);
int sq_job_complete(store_t *st, const job_t *job, const store_fence_t *fence, double retention_s,
                    up_error_t *err);
int sq_job_fail(store_t *st, const char *id, const store_fence_t *fence, const char *message,
                double retention_s, up_error_t *err);
int sq_job_cancel(store_t *st, const char *id, job_status_t *was, up_error_t *err);
int sq_job_cancelled(store_t *st, const char *id, const store_fence_t *fence, double retention_s,
                     up_error_t *err);
int sq_job_requeue(store_t *st, const char *id, const store_fence_t *fence, up_error_t *err);
int sq_jobs_rescue(store_t *st, int max_attempts, double backoff_s, double retention_s, job_t *jobs, int max,
                   int *n, up_error_t *err);
int sq_job_downloaded(store_t *st, const char *id, up_error_t *err);
int sq_jobs_due(store_t *st, double now, job_t *jobs, int max, int *n, up_error_t *err);
int sq_job_expire(store_t *st, const char *id, up_error_t *err);
int sq_blobs_referenced(store_t *st, int (*fn)(const char *key, void *ctx), void *ctx, up_error_t *err);
int sq_job_counts(store_t *st, long long *counts, up_error_t *err);
int sq_model_counts(store_t *st,
                    void (*fn)(const char *model, long long queued, long long running, void *ctx), void *ctx,
                    up_error_t *err);
int sq_jobs_list(store_t *st, const store_job_filter_t *f, job_t *jobs, int max, int *n, up_error_t *err);
int sq_job_queue_position(store_t *st, const char *id, int *position, double *mpx_ahead, up_error_t *err);
int sq_model_rate(store_t *st, const char *model, int last_n, double *seconds_per_mpx, int *n,
                  up_error_t *err);

/* sqlite_keys.c */
int sq_key_insert(store_t *st, const api_key_t *key, up_error_t *err);
int sq_key_by_hash(store_t *st, const unsigned char hash[32], api_key_t *out, up_error_t *err);
int sq_key_find(store_t *st, const char *ref, api_key_t *out, up_error_t *err);
int sq_key_list(store_t *st, api_key_t **keys, int *n, up_error_t *err);
int sq_key_revoke(store_t *st, const char *id, up_error_t *err);
int sq_key_update(store_t *st, const char *id, const store_key_change_t *ch, api_key_t *out, up_error_t *err);
int sq_key_touch(store_t *st, const char *id, double t, up_error_t *err);
int sq_key_usage(store_t *st, const char *id, double period_start, long long *used, up_error_t *err);
int sq_keys_reset_guests(store_t *st, double now, long long *n, up_error_t *err);
int sq_usage_daily(store_t *st, const char *owner, double day0, int days, long long *jobs, long long *credits,
                   up_error_t *err);

/* sqlite_workers.c */
int sq_worker_register(store_t *st, const store_worker_t *w, up_error_t *err);
int sq_worker_heartbeat(store_t *st, const store_worker_t *self, const char *jobs, const char *state,
                        up_error_t *err);
int sq_worker_remove(store_t *st, const store_worker_t *w, up_error_t *err);
int sq_workers_list(store_t *st, int all, store_worker_t **out, int *n, up_error_t *err);
int sq_schema_version(store_t *st, int *version, up_error_t *err);

#endif
