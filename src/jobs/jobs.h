/*
 * jobs.h - the job engine's API, with no HTTP in it: what every dialect,
 * the CLI and the tests use to put assets, submit jobs (one or a batch),
 * read them for a caller, list, cancel, mark downloaded and subscribe.
 *
 *   http -> dialect (src/api: translates requests and answers)
 *        -> jobs (this: checks, charges, stores, queues)
 *        -> store / blob / queue / events
 *
 * A refusal is a value (jobs_refusal_t: status, machine code, message,
 * extra fields such as credits, credits_needed, retry_after), never a
 * reply; a dialect turns it into its error body. The statuses are HTTP's,
 * because every dialect speaks HTTP and they say precisely what went wrong
 * (402 pay, 409 state, 422 the image, 503 later).
 *
 * Submission is checked in the order a client can act on: the image (415
 * or 422: it is not one we read, or it passes the pixel or frame limits),
 * the pipeline (400), the output size (422), the key's tier (400), the
 * priority (400: job_t.priority, which a dialect sets; above the tier's
 * max_priority is PRIORITY_NOT_ALLOWED), then the charge (402). Each job
 * is queued with its cost (output megapixels x the model's measured
 * seconds per megapixel) and its tier's weight, for fair queueing
 * between keys (store.h "Order"). The dialect's answer is built before anything is
 * stored (jobs_answer_fn) and the jobs are stored only when it could be,
 * so a client never pays for a job it cannot hear of. Jobs, their charge
 * and the answer under an Idempotency-Key are one transaction (store.h).
 *
 * Thread safety: every function may be called from any thread.
 */
#ifndef UPRES_JOBS_JOBS_H
#define UPRES_JOBS_JOBS_H

#include <jansson.h>
#include <stdatomic.h>

#include "auth/auth.h"
#include "blob/blob.h"
#include "image/image.h"
#include "queue/events.h"
#include "queue/queue.h"
#include "store/store.h"
#include "upscale/upscale.h"

#define JOBS_BATCH_MAX 32 /* jobs in one submission */
#define JOBS_RATE_JOBS 20 /* a model's seconds per megapixel: over its last jobs (store_model_rate) */
#define JOBS_DEFAULT_S_PER_MPX 1.0 /* ... and before it has any */

/* The engine's parts (borrowed, outliving every call) and the limits submissions are held to. */
typedef struct jobs {
    store_t *store;
    blob_store_t *blobs; /* uploads and results */
    queue_t *queue;      /* woken on submission; NULL = none (tests, the CLI queueing for a later server) */
    events_t *events;    /* job changes are published there; NULL = none */
    const upscale_registry_t *registry;
    unsigned long long max_input_pixels;  /* 0 = no limit */
    unsigned long long max_output_pixels; /* 0 = no limit */
    int max_frames;                       /* frames of an animated input; 0 = no limit */
    tiers_t tiers;                        /* the tier table (jobs_init: the defaults) */
    atomic_int stopping;                  /* set at shutdown: submissions are refused (503) */
} jobs_t;

/* Defaults for everything above that has one (tiers, limits); the parts are NULL. */
void jobs_init(jobs_t *jobs);

/* Why a request was refused. */
typedef struct jobs_refusal {
    unsigned status;   /* HTTP status: 400, 401, 402, 404, 409, 415, 422, 429, 500, 503, 507 */
    char code[40];     /* machine code: "INSUFFICIENT_CREDITS", "NOT_FOUND", ... */
    char message[512]; /* a sentence for the client */
    json_t *extra;     /* fields to add to the error body ({"credits":0,"credits_needed":1}), new or NULL */
    int retry_after;   /* seconds to wait before retrying; 0 = none */
} jobs_refusal_t;

/* Free what a refusal holds (accepts one that holds nothing). */
void jobs_refusal_fini(jobs_refusal_t *r);

/* Fill *r (extra taken over, its old one freed; retry_after 0) and return -1: for callers' own refusals. */
int jobs_refuse(jobs_refusal_t *r, unsigned status, const char *code, json_t *extra, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* ---- assets ------------------------------------------------------------------------ */

/* Where a file is. */
typedef struct jobs_input {
    const char *path; /* a file in blob_staging_dir, taken over: moved into the blob store, or removed
                         when refused ... */
    const void *data; /* ... or bytes in memory (borrowed) */
    size_t size;
    const char *name; /* the client's file name ("" or NULL = "image") */
    int from_url;     /* fetched bytes: an undecodable body is 422, not 415 */
} jobs_input_t;

/*
 * Check in (header and every pixel in strips: what it is, its size and
 * frames, refused when not an image we read or over the limits) and store
 * it as an asset of owner (a key id, "" = anonymous) that feeds jobs until
 * ttl_s from now. *out gets the record, *info (may be NULL) what the check
 * found (an animation's fps too). 0, or -1 with *r filled.
 */
int jobs_asset_put(jobs_t *jobs, const jobs_input_t *in, const char *owner, double ttl_s, asset_t *out,
                   image_info_t *info, jobs_refusal_t *r);

/* ---- submission ------------------------------------------------------------------- */

/*
 * The dialect's answer for the jobs about to be queued (their ids and
 * fields are final): a new JSON text (NULL: it could not be encoded, and
 * nothing is stored), *status its HTTP status. note, when not NULL, is a
 * sentence to add ("only the first of 12 frames is upscaled").
 */
typedef char *(*jobs_answer_fn)(void *ctx, const job_t *jobs, int n, const char *note, unsigned *status);

typedef struct jobs_submission {
    const api_key_t *key; /* the caller's key, charged; NULL = anonymous */
    jobs_input_t input;   /* a new file (path or data) for the one job; both NULL: the jobs name assets */
    /*
     * The jobs (1..JOBS_BATCH_MAX): each with its steps (job_t.steps, JSON,
     * see steps.h), its input asset (job_t.asset_id, put before with
     * jobs_asset_put, the caller's) unless input is a new file, and the
     * dialect's own fields (model_alias, keep_s, colour, tile); the rest
     * (id, input fields, summary fields, owner, tier, credits, times) is
     * filled by jobs_submit.
     */
    job_t *jobs;
    int n;
    const char *idem_key;           /* the client's Idempotency-Key, NULL = none */
    const unsigned char *idem_hash; /* what the request asked (32 bytes) with idem_key */
    jobs_answer_fn answer;
    void *answer_ctx;
    int operator_priority; /* 1: the operator's own submission (upres submit): any priority in bounds,
                              whatever the tier's max_priority */
} jobs_submission_t;

/* A submission's answer: the dialect's (or the one recorded under its Idempotency-Key). */
typedef struct jobs_answer {
    unsigned status;
    char *body;   /* JSON text, new (free()) */
    int replayed; /* 1: the answer recorded under the Idempotency-Key, nothing new stored */
} jobs_answer_t;

/*
 * Check, charge, store and queue s->jobs (see the top of this file), then
 * wake a worker and publish each job. Returns 0 with *a filled, or -1 with
 * *r filled and nothing stored or charged (a new upload's file removed).
 */
int jobs_submit(jobs_t *jobs, jobs_submission_t *s, jobs_answer_t *a, jobs_refusal_t *r);

/*
 * Before any work: the answer recorded under an Idempotency-Key (scope: the
 * key id, "" = anonymous) in the last 24 hours. Returns 1 with *a filled
 * (the same request: replay it), 0 when there is none, -1 with *r filled
 * (422 IDEMPOTENCY_KEY_REUSED: another request; 500).
 */
int jobs_idem_find(jobs_t *jobs, const char *scope, const char *idem_key, const unsigned char hash[32],
                   jobs_answer_t *a, jobs_refusal_t *r);

/* ---- reading, listing, cancelling ------------------------------------------------- */

typedef enum {
    JOBS_STATUS,  /* read its status and fields by id */
    JOBS_RESULT,  /* read its result by id, the file kept */
    JOBS_DESTROY, /* cancel it, or download its result and so delete it */
} jobs_action_t;

/*
 * The one visibility rule, for every dialect. caller is the key the request
 * presented (NULL: none). A job made with a key is hidden (404) from a
 * caller with another key, always; with owner_only (upres.ai, whose spec
 * makes every job its key's alone), from a caller without one too.
 * Destroying a job made with a key needs that key (401 without one); a
 * status or a result by id follows the dialect's spec: the job id is the
 * capability (PicShapes "job IDs are unguessable", the Upscale Service's
 * open download). 0 when allowed, else -1 with *r filled.
 */
int jobs_access(const job_t *job, const api_key_t *caller, int owner_only, jobs_action_t action,
                jobs_refusal_t *r);

/* Read job id for caller, for action (jobs_access): 0 with *out, or -1 (404, 401, 500) with *r. */
int jobs_get(jobs_t *jobs, const char *id, const api_key_t *caller, int owner_only, jobs_action_t action,
             job_t *out, jobs_refusal_t *r);

/* Up to max of one owner's jobs matching f, newest first (store_jobs_list): 0, or -1 (500) with *r. */
int jobs_list(jobs_t *jobs, const store_job_filter_t *f, job_t *out, int max, int *n, jobs_refusal_t *r);

/*
 * Cancel job (read with jobs_get for JOBS_DESTROY): *was = its status
 * before (queued: cancelled now; claimed or processing: it stops within a
 * moment). -1 with *r: 409 JOB_FINISHED (*was set) or 500.
 */
int jobs_cancel(jobs_t *jobs, const job_t *job, job_status_t *was, jobs_refusal_t *r);

/* The result of a completed job was downloaded in full: deleted and recorded. 0, or -1 with *r. */
int jobs_downloaded(jobs_t *jobs, const char *id, jobs_refusal_t *r);

/* Subscribe fn to the changes of job id (events_subscribe): a handle for jobs_unsubscribe, or -1. */
int jobs_subscribe(jobs_t *jobs, const char *id, events_fn fn, void *ctx);
void jobs_unsubscribe(jobs_t *jobs, int handle);

#endif
