/*
 * store.h - durable job records behind one interface (SQLite today,
 * PostgreSQL later: src/store/pg.c will implement the same functions).
 *
 * A job record never disappears: its files do (retention), and then it
 * answers JOB_EXPIRED. Writes are transactions (SQLite: WAL, BEGIN
 * IMMEDIATE); every function is safe to call from any thread (the handle
 * serialises access). Times are Unix seconds as doubles.
 *
 * Lifecycle (PRODUCT.md "What a job is"):
 *   queued -> processing -> completed | failed | cancelled -> expired
 * claim moves the oldest queued job to processing and counts an attempt;
 * a job found processing at start-up (the process died) goes back to queued,
 * or to failed once it has used its attempts.
 */
#ifndef UPRES_STORE_STORE_H
#define UPRES_STORE_STORE_H

#include "core/err.h"

typedef enum {
    JOB_STATUS_QUEUED = 0,
    JOB_STATUS_PROCESSING = 1,
    JOB_STATUS_COMPLETED = 2,
    JOB_STATUS_FAILED = 3,
    JOB_STATUS_CANCELLED = 4,
    JOB_STATUS_EXPIRED = 5,
} job_status_t;

const char *job_status_name(job_status_t s); /* "queued", "processing", ... */

typedef struct job {
    char id[40]; /* UUID v4, lower-case, 36 chars */
    job_status_t status;
    int progress;         /* 0..100 */
    int attempts;         /* claims so far */
    int cancel_requested; /* set while processing; the worker stops at the next tile */
    /* settings */
    char model[128]; /* as the client named it (family or file stem) */
    int scale;       /* requested output scale */
    char format[8];  /* requested output format, "" = the input's */
    int quality;     /* 0 = default */
    int tile;        /* 0 = automatic */
    /* input */
    char input_path[1024]; /* stored upload, "" once deleted */
    char input_name[256];  /* the client's file name */
    char input_format[8];
    int input_width, input_height;
    long long input_bytes;
    /* result */
    char result_path[1024]; /* "" until completed and after deletion */
    char result_format[8];
    int output_width, output_height;
    long long result_bytes;
    /* times, Unix seconds; 0 = not yet */
    double created_at, started_at, completed_at, expires_at;
    char error[512]; /* failed: why */
} job_t;

typedef struct store store_t;

/* Open (creating) data_dir/upres.db. *out is new (store_close). */
int store_open(const char *data_dir, store_t **out, up_error_t *err);
void store_close(store_t *st); /* accepts NULL */

/* Insert a new queued job (id, settings, input filled by the caller). */
int store_job_insert(store_t *st, const job_t *job, up_error_t *err);

/* Read job id into *out; UP_ERR_NOT_FOUND when there is none. */
int store_job_get(store_t *st, const char *id, job_t *out, up_error_t *err);

/*
 * Take the oldest queued job: status processing, attempts + 1, started_at
 * now, progress 0. UP_ERR_NOT_FOUND when the queue is empty.
 */
int store_job_claim(store_t *st, job_t *out, up_error_t *err);

/* Progress of a processing job. Returns cancel_requested through *cancel (may be NULL). */
int store_job_progress(store_t *st, const char *id, int progress, int *cancel, up_error_t *err);

/* A processing job completed: result fields from job; expires_at = now + retention. */
int store_job_complete(store_t *st, const job_t *job, double retention_s, up_error_t *err);

/* A job failed with message; expires_at = now + retention. Allowed from processing and queued. */
int store_job_fail(store_t *st, const char *id, const char *message, double retention_s, up_error_t *err);

/*
 * Cancel: queued -> cancelled at once (*was = QUEUED; expires_at = now, so
 * the sweeper deletes its input at the next sweep if nobody did); processing ->
 * cancel_requested (*was = PROCESSING; the worker finishes the cancel with
 * store_job_cancelled); anything else: UP_ERR_INVALID with *was set (409).
 */
int store_job_cancel(store_t *st, const char *id, job_status_t *was, up_error_t *err);

/* The worker stopped a cancel-requested job. */
int store_job_cancelled(store_t *st, const char *id, double retention_s, up_error_t *err);

/* Put a processing job back in the queue (graceful shutdown), attempts unchanged minus this one. */
int store_job_requeue(store_t *st, const char *id, up_error_t *err);

/*
 * At start-up: every processing job goes back to queued, or to failed
 * ("the server stopped while processing it N times") once attempts >=
 * max_attempts. *n_requeued / *n_failed may be NULL.
 */
int store_jobs_recover(store_t *st, int max_attempts, double retention_s, int *n_requeued, int *n_failed,
                       up_error_t *err);

/* The result was downloaded in full: result_path cleared, status expired. UP_ERR_INVALID unless completed. */
int store_job_downloaded(store_t *st, const char *id, up_error_t *err);

/*
 * Jobs whose files are due for deletion: finished with expires_at <= now and
 * still holding an input or result path. Fills up to max jobs; *n = count.
 */
int store_jobs_due(store_t *st, double now, job_t *jobs, int max, int *n, up_error_t *err);

/*
 * The sweeper deleted a job's files: paths cleared; a completed job becomes
 * expired, a failed or cancelled one keeps its status (and error message).
 * UP_ERR_INVALID for a job that has not finished.
 */
int store_job_expire(store_t *st, const char *id, up_error_t *err);

/* Clear input_path once the input file is deleted (the job ended). */
int store_job_input_deleted(store_t *st, const char *id, up_error_t *err);

/* Number of jobs in each status, for /health. counts[JOB_STATUS_EXPIRED + 1]. */
int store_job_counts(store_t *st, long long *counts, up_error_t *err);

#endif
