/*
 * pg_int.h - what the PostgreSQL store's files share, and nothing outside
 * src/store includes: the handle, the statement tables, the helpers of
 * pg.c and the backend's functions, which pg.c puts in its table.
 *
 *   pg.c       open (connection, schema and migrations), the helpers that
 *              run statements and transactions, reconnection, the table
 *   pg_jobs.c  jobs and their assets: submission, claims, transitions,
 *              reads, retention
 *   pg_keys.c  API keys and guest sessions, charges, refunds, usage
 *   pg_rate.c  request limits shared by the processes
 *   pg_workers.c  the workers registry, the schema version
 *
 * Each file owns its statements: an enum and an SQL table of its own,
 * handed to pg.c as a pg_sql_t, prepared on the connection (PQprepare,
 * named "<prefix><index>") at open and again after a reconnection.
 */
#ifndef UPRES_STORE_PG_INT_H
#define UPRES_STORE_PG_INT_H

#include <libpq-fe.h>
#include <pthread.h>

#include "store/store.h"

#define PG_MAX_ARGS 24

/* A file's statements: n SQL texts (borrowed, static), prepared as prefix + index. */
typedef struct pg_sql {
    const char *prefix; /* "j" or "k" */
    const char *const *sql;
    int n;
} pg_sql_t;

extern const pg_sql_t pg_jobs_sql;    /* pg_jobs.c */
extern const pg_sql_t pg_keys_sql;    /* pg_keys.c */
extern const pg_sql_t pg_workers_sql; /* pg_workers.c */
extern const pg_sql_t pg_rate_sql;    /* pg_rate.c */

/* The handle (see pg.c, DESIGN: one connection). */
typedef struct pg_store {
    store_t base;       /* first: the public functions' handle */
    pthread_mutex_t mu; /* guards conn and everything below */
    PGconn *conn;
    int in_tx;       /* a BEGIN is open on conn */
    char where[160]; /* the URL without its password, for messages */
    char *url;       /* as opened (a listener connects with it) */
} pg_store_t;

/* The notice channels (pg_notify.c): new jobs (a submission's transaction), job events (listeners). */
/*
 * Each name ends in PG_CHANNEL_TAG_SQL, a tag of the schema the tables are in (the URL's search_path),
 * so that installs in other schemas of one database do not hear each other (a channel is database-wide;
 * a hash, because a channel name has at most 63 bytes and a schema's name may have as many).
 */
#define PG_CHANNEL_JOBS "upres_jobs_"
#define PG_CHANNEL_EVENTS "upres_events_"
#define PG_CHANNEL_TAG_SQL "left(md5(current_schema()), 16)"
#define PG_CHANNEL_MAX 64 /* bytes of a channel's name, with its NUL */

int pg_listen(store_t *st, store_listener_t **out, up_error_t *err); /* pg_notify.c */

static inline pg_store_t *pg_of(store_t *st) { return (pg_store_t *)st; }

/*
 * A statement's parameters, as text (NULL = SQL NULL). Text that is not
 * valid UTF-8 (a client's bytes) is made so on the way in: PostgreSQL
 * refuses it, where SQLite would keep it and the read would clean it.
 */
typedef struct pg_args {
    int n;
    const char *v[PG_MAX_ARGS];
    char num[PG_MAX_ARGS][32]; /* numbers' text */
    char *own[PG_MAX_ARGS];    /* cleaned copies, freed by pg_args_fini */
} pg_args_t;

void pg_arg_text(pg_args_t *a, const char *t); /* NULL = "" */
void pg_arg_null(pg_args_t *a);
void pg_arg_int(pg_args_t *a, long long v);
void pg_arg_double(pg_args_t *a, double v);
void pg_arg_hex(pg_args_t *a, const unsigned char *b, size_t n); /* bytes as hex text (decode($n, 'hex')) */
void pg_args_fini(pg_args_t *a);

/* ---- helpers (pg.c) -------------------------------------------------------------- */

/* Lock the handle and make sure the connection is up (reset once if it was lost). */
int pg_enter(pg_store_t *p, up_error_t *err);
/* Unlock (rolling back a transaction left open, which a correct caller never leaves). */
void pg_leave(pg_store_t *p);

/*
 * Run statement k of table t with a's parameters (a may be NULL: none).
 * On success *res (may be NULL: cleared here) is the result (PQclear);
 * *changed (may be NULL) the rows a write changed. A unique key taken
 * gives clash (with "job store: " and who in the message) when clash is
 * not 0; anything else UP_ERR_IO with the server's message (logged).
 */
int pg_run(pg_store_t *p, const pg_sql_t *t, int k, const pg_args_t *a, PGresult **res, long long *changed,
           int clash, const char *who, const char *what, up_error_t *err);

/* BEGIN (read committed) on the handle's connection; the lock held. */
int pg_tx_begin(pg_store_t *p, up_error_t *err);
/* Commit when rc is 0, else roll back; returns the outcome. */
int pg_tx_end(pg_store_t *p, int rc, up_error_t *err);

/* A result's field as text (never NULL), a number, a time; a text field into dst as valid UTF-8. */
const char *pg_str(const PGresult *r, int row, int col);
long long pg_ll(const PGresult *r, int row, int col);
double pg_dbl(const PGresult *r, int row, int col);
void pg_copy(char *dst, size_t size, const PGresult *r, int row, int col);
/* A hex text field (encode(x, 'hex')) of exactly n bytes into out; other lengths leave out as it was. */
void pg_unhex(unsigned char *out, size_t n, const PGresult *r, int row, int col);

/* ---- inside a transaction (pg_keys.c) --------------------------------------------- */

/* As sq_charge (sqlite_int.h): the key row locked FOR UPDATE first. */
int pg_charge(pg_store_t *p, const char *owner, long long need, double period_start, store_charge_t *c,
              up_error_t *err);
/* Give job id's charge back to its owner, at most once (pg.c, DESIGN: Charges). */
int pg_refund(pg_store_t *p, const char *job_id, up_error_t *err);

/* ---- the backend's functions (store_vtbl_t) -------------------------------------------- */

/* pg_jobs.c */
int pg_jobs_submit(store_t *st, const job_t *jobs, int n, double period_start, const store_idem_t *idem,
                   store_charge_t *charge, up_error_t *err);
int pg_idem_get(store_t *st, const char *scope, const char *key, store_idem_t *out, up_error_t *err);
int pg_asset_insert(store_t *st, const asset_t *a, up_error_t *err);
int pg_asset_get(store_t *st, const char *id, asset_t *out, up_error_t *err);
int pg_assets_due(store_t *st, double now, asset_t *out, int max, int *n, up_error_t *err);
int pg_asset_due(store_t *st, const char *id, double now, asset_t *out, up_error_t *err);
int pg_asset_deleted(store_t *st, const char *id, up_error_t *err);
int pg_job_get(store_t *st, const char *id, job_t *out, up_error_t *err);
int pg_job_claim(store_t *st, const char *worker, double lease_s, const char *models, job_t *out,
                 up_error_t *err);
int pg_job_start(store_t *st, const char *id, const store_fence_t *fence, int *cancel, up_error_t *err);
int pg_job_progress(store_t *st, const char *id, const store_fence_t *fence, int progress, int *cancel,
                    up_error_t *err);
int pg_job_heartbeat(store_t *st, const char *id, const store_fence_t *fence, int *cancel, up_error_t *err);
int pg_job_complete(store_t *st, const job_t *job, const store_fence_t *fence, double retention_s,
                    up_error_t *err);
int pg_job_fail(store_t *st, const char *id, const store_fence_t *fence, const char *message,
                double retention_s, up_error_t *err);
int pg_job_cancel(store_t *st, const char *id, job_status_t *was, up_error_t *err);
int pg_job_cancelled(store_t *st, const char *id, const store_fence_t *fence, double retention_s,
                     up_error_t *err);
int pg_job_requeue(store_t *st, const char *id, const store_fence_t *fence, up_error_t *err);
int pg_jobs_rescue(store_t *st, int max_attempts, double backoff_s, double retention_s, job_t *jobs, int max,
                   int *n, up_error_t *err);
int pg_job_downloaded(store_t *st, const char *id, up_error_t *err);
int pg_jobs_due(store_t *st, double now, job_t *jobs, int max, int *n, up_error_t *err);
int pg_job_expire(store_t *st, const char *id, up_error_t *err);
int pg_blobs_referenced(store_t *st, int (*fn)(const char *key, void *ctx), void *ctx, up_error_t *err);
int pg_job_counts(store_t *st, long long *counts, up_error_t *err);
int pg_model_counts(store_t *st,
                    void (*fn)(const char *model, long long queued, long long running, void *ctx), void *ctx,
                    up_error_t *err);
int pg_jobs_list(store_t *st, const store_job_filter_t *f, job_t *jobs, int max, int *n, up_error_t *err);
int pg_job_queue_position(store_t *st, const char *id, int *position, double *mpx_ahead, up_error_t *err);
int pg_model_rate(store_t *st, const char *model, int last_n, double *seconds_per_mpx, int *n,
                  up_error_t *err);

/* pg_keys.c */
int pg_key_insert(store_t *st, const api_key_t *key, up_error_t *err);
int pg_key_by_hash(store_t *st, const unsigned char hash[32], api_key_t *out, up_error_t *err);
int pg_key_find(store_t *st, const char *ref, api_key_t *out, up_error_t *err);
int pg_key_list(store_t *st, api_key_t **keys, int *n, up_error_t *err);
int pg_key_revoke(store_t *st, const char *id, up_error_t *err);
int pg_key_update(store_t *st, const char *id, const store_key_change_t *ch, api_key_t *out, up_error_t *err);
int pg_key_touch(store_t *st, const char *id, double t, up_error_t *err);
int pg_key_usage(store_t *st, const char *id, double period_start, long long *used, up_error_t *err);
int pg_keys_reset_guests(store_t *st, double now, long long *n, up_error_t *err);
int pg_usage_daily(store_t *st, const char *owner, double day0, int days, long long *jobs, long long *credits,
                   up_error_t *err);

/* pg_rate.c */
int pg_rate_take(store_t *st, const char *subject, const store_rate_limit_t *limits, int n_limits, double now,
                 int *allowed, double *retry_after, int *window_s, up_error_t *err);
/* pg_workers.c */
int pg_worker_register(store_t *st, const store_worker_t *w, up_error_t *err);
int pg_worker_heartbeat(store_t *st, const store_worker_t *self, const char *jobs, const char *state,
                        up_error_t *err);
int pg_worker_remove(store_t *st, const store_worker_t *w, up_error_t *err);
int pg_workers_list(store_t *st, int all, store_worker_t **out, int *n, up_error_t *err);
int pg_schema_version(store_t *st, int *version, up_error_t *err);

#endif
