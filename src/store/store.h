/*
 * store.h - durable job records behind one interface: a table of functions
 * (store_vtbl_t, at the end) that each backend fills, opened from a URL
 * (store_open_url): SQLite (src/store/sqlite*.c, the default) and
 * PostgreSQL (src/store/pg*.c, libpq), each keeping every rule written
 * here, the transaction rules of "What a backend guarantees" above all.
 *
 * A job record never disappears: its files do (retention), and then it
 * answers JOB_EXPIRED. Every function is safe to call from any thread, on
 * any number of handles and processes over one database. Times are Unix
 * seconds as doubles, each process's wall clock: the processes sharing a
 * database share a machine or NTP-synchronised clocks (leases and asset
 * expiry compare them).
 *
 * Lifecycle (PRODUCT.md "What a job is"):
 *   queued -> claimed -> processing -> completed | failed | cancelled -> expired
 * claim moves the next claimable queued job (see "Order") to claimed (a
 * worker has it) and counts an attempt; store_job_start moves it on to processing once the
 * worker has its model and input. Queued, claimed and processing are the
 * live statuses; the others are the ended ones.
 *
 * A job is its input asset and an ordered list of steps (src/steps/steps.h:
 * JSON text the store keeps and never parses), and, once completed, a
 * report of what each step did (JSON text too). A dialect may keep fields
 * of its own with the job (meta: JSON text the store never parses either).
 *
 * Claims and leases: a claim records the worker's id (unique per process
 * and thread), the attempt (the attempts counter after the claim) and a
 * lease: lease_until = now + lease_s. The holder renews it (start, progress,
 * heartbeat); a job whose lease ran out belongs to nobody, and any process
 * on the store rescues it (store_jobs_rescue): queued again with a backoff,
 * or failed once it has used its attempts. Every write a worker makes about
 * its job carries its fence (worker id, attempt) and is refused with
 * UP_ERR_CONFLICT ("superseded") once the claim is no longer the job's
 * current one, so a worker that lost its lease (paused, cut off from the
 * disk) can never complete, fail or requeue a job another worker now runs.
 *
 * Order: weighted fair queueing between owners, under a strict priority.
 * A claim takes the queued job with the highest priority, then the
 * smallest virtual finish tag (vtag), then the smallest seq; one index
 * scan (priority DESC, vtag, seq) over the queued jobs. Each priority
 * level is its own fair queue: a job submitted at priority p gets
 *   vtag = max(V, L) + cost / weight           (store_fair_tag, store.c)
 * where V is level p's virtual time, the vtag of the job the claim would
 * take next at that level (else, with none queued there, the largest
 * vtag of a claimed or processing job, else 0), and L is the largest
 * vtag among the owner's queued jobs at that level (none: V). So an
 * owner with a backlog queues behind its own backlog, an owner with none
 * starts at V (a long-idle key banks no credit, a cancelled job gives its
 * place back), and over a busy period each owner is served work in
 * proportion to its weight. A requeued or rescued job keeps its vtag, so
 * its place. Tags are computed in the submission's transaction, job by
 * job (a batch chains: each job sees the ones before it); anonymous jobs
 * (owner "") are one owner.
 *
 * Files: an asset row names its file and a job row its result by blob key
 * (blob.h), relative to the data folder, never by file-system path, so a
 * record reads the same from any working directory or machine.
 *
 * Assets: an uploaded or fetched file that outlives jobs and can feed
 * several. Its file may be deleted once its expires_at has passed and no
 * live job uses it (store_assets_due); a submission refuses an asset past
 * its expires_at, so an asset once due stays due. A job submitted without
 * an asset brings a one-shot asset of its own (id = the job's id,
 * expires_at = created_at): due as soon as its job ends.
 *
 * Accounts: API keys live here too (only a SHA-256 of each key is kept),
 * and every job made with a key is charged in the same transaction that
 * inserts it (store_jobs_submit): the key's quota for the period the
 * caller names and its credit balance are checked and the charge
 * recorded, or nothing happens. A charged job that fails, or is cancelled
 * before it started (queued or claimed), is refunded in the transaction
 * that ends it; a charge is refunded at most once. A guest session (an
 * anonymous upload's) is a key row too (api_key_t.guest), charged the same
 * way against a daily quota: the store knows no calendar, the caller
 * passes the period's start (a calendar month for a key; for a guest the
 * later of the UTC day's start and the guest's reset_at).
 *
 * What a backend guarantees (each a rule of its functions below; "locked"
 * means no other transaction can change the row until this one ends:
 * SQLite's write lock, PostgreSQL's SELECT ... FOR UPDATE):
 *
 *   Atomic writes. A function that writes makes all its changes in one
 *     transaction or none; a refusal (any error) writes nothing.
 *   Reads see committed writes. A call made after another returned, on any
 *     handle or process, sees its writes; no call sees part of another's
 *     transaction (read committed or stronger, one snapshot per call).
 *   Charges. Submission locks the key row, then sums the period's usage,
 *     checks quota and balance, takes the credits off and inserts the jobs
 *     (and their assets and Idempotency-Key answer) in that one transaction,
 *     so concurrent charges to one key serialise and never overrun quota
 *     or balance.
 *     The quota period is the caller's (period_start): a guest's reset
 *     (store_keys_reset_guests) is a write like any other, so a charge
 *     that passes a period starting at the new reset_at sums only the jobs
 *     made since.
 *   Refunds at most once. A refund is the conditional flip refunded 0 -> 1
 *     in the transaction that ends the job; the credits go back only when
 *     that flip changed the row, so no retry or race refunds twice.
 *   Fenced transitions. The job row is locked, its (status, attempts,
 *     worker) read and the write made in one transaction; a fence that is
 *     not the current claim is refused with UP_ERR_CONFLICT, nothing
 *     written.
 *   Claims. Choosing the next queued job and marking it claimed is one
 *     transaction with the row locked and the update masked by status =
 *     queued (PostgreSQL: FOR UPDATE SKIP LOCKED), so no job is ever handed
 *     to two workers. Rescue is masked the same way by status and lease.
 *   Asset deletion. store_asset_due and store_assets_due decide against
 *     every committed submission: serialised with submissions on the asset
 *     (SQLite: the write lock; PostgreSQL: the asset row locked FOR UPDATE
 *     here, FOR SHARE by a submission that uses it).
 *   Figures in one snapshot. store_usage_daily, store_job_queue_position
 *     and store_model_rate each read in one statement, so their figures
 *     come from one committed state (a day's jobs and its credits; a
 *     position and the megapixels ahead).
 *   Replicas. Only the calls marked [replica] may be answered by a
 *     read-only replica that lags (a stale answer is acceptable there);
 *     every other call, reads included, goes to the primary.
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
    JOB_STATUS_CLAIMED = 6, /* a worker took it and is loading its model and input */
    JOB_STATUS_COUNT = 7,
} job_status_t;

const char *job_status_name(job_status_t s); /* "queued", "claimed", "processing", ... */

typedef struct job {
    long long seq; /* insertion order, set by the store (read only): newest has the largest */
    char id[40];   /* UUID v4, lower-case, 36 chars */
    job_status_t status;
    int progress;         /* 0..100 */
    int attempts;         /* claims so far */
    int cancel_requested; /* set while processing; the worker stops between layers (or tiles) */
    /* settings */
    char model[128];      /* the model run: a registry family or file stem */
    char model_alias[64]; /* the name the client used when it differs ("wavespeed-ai/real-esrgan"), else "" */
    int scale;            /* requested output scale */
    char format[8];       /* requested output format, "" = the input's */
    int quality;          /* 0 = default */
    int tile;             /* 0 = automatic */
    /* input: the asset, and the pipeline run over it */
    char asset_id[40]; /* the input asset; "" at submission = a one-shot asset made from the input_* fields */
    char steps[2048];  /* the pipeline, JSON text (steps.h); "" at submission = upscale with model, scale and
                          tile, then encode with format and quality */
    /* the input asset's fields: read only (filled from the asset by every read), except that a
       submission with asset_id "" makes its one-shot asset from them */
    char input_key[256];  /* the asset's blob key ("uploads/<id>.png", blob.h), "" once deleted */
    char input_name[256]; /* the client's file name */
    char input_format[8];
    int input_width, input_height;
    long long input_bytes;
    /* result */
    char result_key[256]; /* the result's blob key ("results/<id>-a1.png"), "" until completed and after
                             deletion */
    char result_format[8];
    int output_width, output_height;
    long long result_bytes;
    char report[2048]; /* what each step did, JSON text (steps.h), written by store_job_complete; "" until */
    char meta[2048];   /* the dialect's own fields, JSON text it owns (Tinify: the request's settings echoed,
                          its entry point and source); "" = none. Stored at submission, returned by every
                          read, never parsed by the store */
    /* times, Unix seconds; 0 = not yet */
    double created_at, started_at, completed_at, expires_at;
    char error[512]; /* failed: why */
    /* account */
    char owner[40];    /* the API key id that made it (a guest session's too), "" = anonymous */
    char tier[32];     /* the key's tier when it was made, "" = none */
    long long credits; /* credits charged (0 = free) */
    int refunded;      /* the charge was given back (read only) */
    double keep_s;     /* keep the result at least this long after completion, seconds (0 = the retention):
                          a dialect that promises a result for a time (upres.ai: links valid 1 hour) */
    char colour[8];    /* "" = the server's default, "srgb" (convert), "keep" (the input's own profile) */
    /* claim (read only): set by store_job_claim */
    char worker[128];   /* the worker id of the current claim, "" when none (queued, rescued, requeued) */
    double lease_s;     /* the lease length the claim asked for, seconds; renewals extend by this */
    double lease_until; /* Unix seconds the claim is valid until; 0 = no live claim */
    double not_before;  /* a queued job is not claimed before this (backoff after a lost lease); 0 = now */
    /* scheduling (see "Order" above) */
    int priority;  /* STORE_PRIORITY_MIN..MAX (rules.h), 0 = normal: a higher one is always claimed first */
    double cost;   /* submission only (not stored, reads give 0): the job's work, in estimated seconds
                      (output megapixels x the model's seconds per megapixel); <= 0 = 1 */
    double weight; /* submission only (not stored): the owner's share, its tier's weight; <= 0 = 1 */
    double vtag;   /* read only: the virtual finish tag the submission gave it (store_fair_tag) */
} job_t;

/*
 * Who holds a claim: the worker id and attempt store_job_claim recorded.
 * Borrowed by every fenced write; worker points at the caller's string.
 */
typedef struct store_fence {
    const char *worker; /* the worker id passed to store_job_claim */
    int attempt;        /* job_t.attempts as the claim returned it */
} store_fence_t;

typedef struct store store_t;

/* ---- opening ------------------------------------------------------------------- */

/*
 * Open (creating) the store that url names. *out is new (store_close).
 *   sqlite:///abs/path/upres.db   a SQLite file by absolute path
 *   sqlite:rel/path/upres.db      relative to the working directory at
 *                                 this call (made absolute here, so a later
 *                                 chdir changes nothing)
 *   NULL or ""                    data_dir/upres.db (store_open), data_dir
 *                                 made when missing
 *   postgresql://USER@HOST:PORT/DB  a PostgreSQL database (store_pg_open):
 *   postgres://...                any URI libpq reads, its query settings
 *                                 included (postgresql:///DB?host=/SOCKET/DIR
 *                                 for a Unix socket); the schema is made or
 *                                 migrated at open; data_dir is not used
 * The file's folder must exist for the two sqlite forms. UP_ERR_UNSUPPORTED
 * for a scheme this build has no backend for (the message names this
 * build's backends); UP_ERR_INVALID for a malformed URL; UP_ERR_IO when the
 * database cannot be opened or reached, or is newer than this upres.
 */
int store_open_url(const char *url, const char *data_dir, store_t **out, up_error_t *err);

/*
 * Check url's form and scheme as store_open_url would, opening nothing (a
 * setting's check). A refusal's message names the URL ("bad store 'URL':
 * ...") with any password in it shown as "***", ready to print.
 */
int store_url_check(const char *url, up_error_t *err);

/* store_open_url(NULL, data_dir, ...): data_dir/upres.db. */
int store_open(const char *data_dir, store_t **out, up_error_t *err);

/* Close st (accepts NULL). No call may be running on st. */
void store_close(store_t *st);

/* ---- submitting jobs ------------------------------------------------------------ */

/*
 * A job's input, at submission: job->asset_id names an existing asset,
 * which must have its file (key set), not be past its expires_at and have
 * job->owner as its owner, else UP_ERR_NOT_FOUND (a foreign asset is not
 * told apart from an unknown one); the job's input_* fields are ignored.
 * Or job->asset_id is "": the job's one-shot asset is made from its
 * input_* fields (id = job->id, owner = job->owner, expires_at =
 * created_at) in the job's transaction. The job's steps "" become the
 * one-upscale pipeline its settings describe; its meta is kept as given.
 */

/* Insert a new queued job (id, settings, input, owner filled by the caller); no charge. */
int store_job_insert(store_t *st, const job_t *job, up_error_t *err);

/* What a charge found; filled on success and on refusal. */
typedef struct store_charge {
    long long quota;   /* the key's quota in credits per period, -1 = none */
    long long used;    /* credits charged since period_start, refunds excluded, before these jobs */
    long long credits; /* the key's balance before these jobs, -1 = no balance kept */
} store_charge_t;

/*
 * Insert job (as store_job_insert) owned by job->owner and charge it
 * job->credits, all in one transaction. Refused, with nothing written:
 *   UP_ERR_NOT_FOUND  no key job->owner (or the asset, as above)
 *   UP_ERR_REVOKED    the key is revoked
 *   UP_ERR_QUOTA      used + job->credits would pass the key's quota
 *   UP_ERR_CREDITS    the key's balance is below job->credits
 * period_start is the Unix time the quota period began: the caller's
 * choice (a key's calendar month; a guest's UTC day, or its reset_at when
 * later); the store sums the charges of jobs made since then.
 * *charge (may be NULL) gets the figures.
 */
int store_job_insert_charged(store_t *st, const job_t *job, double period_start, store_charge_t *charge,
                             up_error_t *err);

/*
 * The answer a submission made with an Idempotency-Key got, kept 24 hours
 * so that a retry gets the same answer instead of a second job and charge.
 */
typedef struct store_idem {
    char scope[40];         /* the API key id that sent it, "" = anonymous */
    char key[256];          /* the client's Idempotency-Key */
    unsigned char hash[32]; /* what the request asked (http_request_digest) */
    int status;             /* the HTTP status of the answer */
    char *body;             /* its JSON text: borrowed by store_jobs_submit, new (free()) from idem_get */
    char job_id[40];
    double created_at; /* read only */
} store_idem_t;

/*
 * Insert job queued: store_jobs_submit(st, job, 1, ...).
 */
int store_job_submit(store_t *st, const job_t *job, double period_start, const store_idem_t *idem,
                     store_charge_t *charge, up_error_t *err);

/*
 * Insert jobs[0..n-1] (borrowed; n >= 1, one owner), queued, all or none,
 * in one transaction (see "Charges") with:
 *   - one charge to their owner of the sum of their credits, when
 *     period_start >= 0 (refusals as store_job_insert_charged; a job with
 *     credits needs both); each row keeps its own credits, refunded alone;
 *   - idem's answer, when idem is not NULL: UP_ERR_CONFLICT, with nothing
 *     written, when scope and key are taken (a concurrent retry won).
 * Answers older than 24 hours are deleted in the same transaction.
 * UP_ERR_INVALID for a duplicate id, jobs of several owners, a negative
 * charge, a priority outside STORE_PRIORITY_MIN..MAX, a cost or weight
 * that is not a finite number, or an input key that is not a blob key; UP_ERR_NOT_FOUND for an
 * asset refused as above (the message names it).
 */
int store_jobs_submit(store_t *st, const job_t *jobs, int n, double period_start, const store_idem_t *idem,
                      store_charge_t *charge, up_error_t *err);

/* The answer recorded under scope and key in the last 24 hours into *out (body new); UP_ERR_NOT_FOUND. */
int store_idem_get(store_t *st, const char *scope, const char *key, store_idem_t *out, up_error_t *err);

/* ---- assets --------------------------------------------------------------------- */

typedef struct asset {
    char id[40];       /* UUID v4 */
    char owner[40];    /* the API key id (a guest session's too) that uploaded it, "" = anonymous */
    char key[256];     /* blob key of the file ("uploads/<id>.png"), "" once deleted */
    char name[256];    /* the client's file name */
    char format[8];    /* sniffed: "png", "jpg", ... */
    int width, height; /* pixels */
    int frames;        /* 1 for a still image (and for a one-shot asset: a job's input_* have no count) */
    long long bytes;   /* the file's size */
    double created_at; /* Unix seconds; 0 at insert = now */
    double expires_at; /* the file may be deleted once this has passed and no live job uses it; a
                          one-shot asset (made with its job) has expires_at = created_at */
} asset_t;

/* Insert a (every field filled; key "" or a blob key). UP_ERR_INVALID for a duplicate id or a path. */
int store_asset_insert(store_t *st, const asset_t *a, up_error_t *err);

/* Asset id into *out; UP_ERR_NOT_FOUND. */
int store_asset_get(store_t *st, const char *id, asset_t *out, up_error_t *err);

/*
 * Assets whose file is due for deletion: key set, expires_at <= now, and no
 * job in queued, claimed or processing references it; oldest expiry first.
 * Fills up to max; *n = count. Serialised with submissions (see "Asset
 * deletion"), so a due asset stays due: the caller deletes the file, then
 * calls store_asset_deleted.
 */
int store_assets_due(store_t *st, double now, asset_t *out, int max, int *n, up_error_t *err);

/* One asset, if due as above: 0 with *out filled, UP_ERR_NOT_FOUND when not due (or unknown). */
int store_asset_due(store_t *st, const char *id, double now, asset_t *out, up_error_t *err);

/* The asset's file was deleted: key cleared. UP_ERR_NOT_FOUND. */
int store_asset_deleted(store_t *st, const char *id, up_error_t *err);

/* ---- job reads and transitions --------------------------------------------------------- */

/* Read job id into *out; UP_ERR_NOT_FOUND when there is none. */
int store_job_get(store_t *st, const char *id, job_t *out, up_error_t *err);

/*
 * Take the next queued job (see "Order") whose not_before has passed, for worker (its
 * id, unique per process and thread): status claimed, attempts + 1,
 * started_at now, progress 0, lease_until = now + lease_s. *out gets the
 * claimed job (out->worker and out->attempts are its fence). models
 * (borrowed) limits the claim to jobs whose job_t.model is one of the
 * names it lists, comma-separated ("realesr-animevideov3,realesrgan-x4plus":
 * the models the process serves); NULL or "" = any model. No job is
 * handed to two claims (see "Claims"). UP_ERR_NOT_FOUND when no job is
 * claimable; UP_ERR_INVALID for an empty or too long worker id, a lease
 * not over 0 s or a models list of STORE_MODELS_MAX bytes or more.
 */
int store_job_claim(store_t *st, const char *worker, double lease_s, const char *models, job_t *out,
                    up_error_t *err);

#define STORE_MODELS_MAX                                                                                     \
    512 /* bytes of a models list (store_job_claim, store_worker_t.models), with its NUL */

/*
 * The fenced writes below take fence, the claim's (worker, attempt). They
 * return UP_ERR_CONFLICT, with nothing written, when the job's current
 * claim is another one (a later claim, or none since the lease ran out and
 * the job was rescued or requeued): the caller was superseded and must
 * leave the job (and its input) alone. UP_ERR_NOT_FOUND for an unknown id;
 * UP_ERR_INVALID (with the status in the message) from a status the write
 * does not apply to (a job failed or cancelled by someone else). The check
 * and the write are one transaction (see "Fenced transitions").
 */

/*
 * claimed -> processing: the worker has its model and input; the lease is
 * renewed. Returns the job's cancel_requested through *cancel (may be
 * NULL).
 */
int store_job_start(store_t *st, const char *id, const store_fence_t *fence, int *cancel, up_error_t *err);

/* Progress of a processing job; renews the lease. Returns cancel_requested through *cancel (may be NULL). */
int store_job_progress(store_t *st, const char *id, const store_fence_t *fence, int progress, int *cancel,
                       up_error_t *err);

/* Renew the lease of a claimed or processing job. Returns cancel_requested through *cancel (may be NULL). */
int store_job_heartbeat(store_t *st, const char *id, const store_fence_t *fence, int *cancel,
                        up_error_t *err);

/*
 * A processing job completed: result fields and report from job; expires_at
 * = now + max(retention, its keep_s). Refused (fenced): the caller removes
 * its result file, which no record points at.
 */
int store_job_complete(store_t *st, const job_t *job, const store_fence_t *fence, double retention_s,
                       up_error_t *err);

/*
 * A job failed with message; expires_at = now + retention. Allowed from
 * queued, claimed and processing. Its charge is refunded (at most once).
 * fence NULL: not a worker's write (a job that failed before any claim),
 * not fenced.
 */
int store_job_fail(store_t *st, const char *id, const store_fence_t *fence, const char *message,
                   double retention_s, up_error_t *err);

/*
 * Cancel: queued -> cancelled at once (*was = QUEUED; expires_at = now; its
 * charge is refunded; a one-shot asset is due now); claimed or processing
 * -> cancel_requested (*was set; the worker finishes the cancel with
 * store_job_cancelled); anything else: UP_ERR_INVALID with *was set (409).
 * Not fenced: a client's request.
 */
int store_job_cancel(store_t *st, const char *id, job_status_t *was, up_error_t *err);

/*
 * The worker stopped a cancel-requested job (claimed or processing). A job
 * still claimed had not started: its charge is refunded.
 */
int store_job_cancelled(store_t *st, const char *id, const store_fence_t *fence, double retention_s,
                        up_error_t *err);

/*
 * Put a claimed or processing job back in the queue (graceful shutdown),
 * attempts minus this one, claimable at once.
 */
int store_job_requeue(store_t *st, const char *id, const store_fence_t *fence, up_error_t *err);

/*
 * Rescue jobs whose lease ran out (their worker died or stopped answering),
 * whichever process claimed them. Each claimed or processing job with
 * lease_until < now, in one transaction:
 *   - cancel_requested: cancelled (refunded if it was still claimed);
 *   - attempts >= max_attempts: failed ("... N times", refunded once);
 *   - else queued again, not claimable before now + backoff_s * attempts.
 * The worker is cleared in each case, so the old holder's writes are
 * refused. Rescues at most max (>= 1) jobs per call, oldest first, and
 * fills jobs[] with them as they now are; *n = count: call again while
 * *n == max. A backend may look first without writing (cheap enough to
 * run every second), but each rescue is masked by status and lease in its
 * write, so a lease renewed meanwhile is left.
 */
int store_jobs_rescue(store_t *st, int max_attempts, double backoff_s, double retention_s, job_t *jobs,
                      int max, int *n, up_error_t *err);

/* The result was downloaded in full: result_key cleared, status expired. UP_ERR_INVALID unless completed. */
int store_job_downloaded(store_t *st, const char *id, up_error_t *err);

/*
 * Jobs whose result is due for deletion: finished with expires_at <= now
 * and still holding a result key (inputs are assets: store_assets_due).
 * Fills up to max jobs; *n = count.
 */
int store_jobs_due(store_t *st, double now, job_t *jobs, int max, int *n, up_error_t *err);

/*
 * The sweeper deleted a job's result: result_key cleared; a completed job
 * becomes expired, a failed or cancelled one keeps its status (and error
 * message). UP_ERR_INVALID for a job that has not finished.
 */
int store_job_expire(store_t *st, const char *id, up_error_t *err);

/*
 * Call fn(key, ctx) for every blob key a row holds (each asset's key and
 * each job's result_key, whatever the status), for the blob sweep: a blob
 * no row names is an orphan. One snapshot of the primary (a consistent
 * read); fn must not call the store. Stops early when fn returns non-zero.
 */
int store_blobs_referenced(store_t *st, int (*fn)(const char *key, void *ctx), void *ctx, up_error_t *err);

/* [replica] Number of jobs in each status, for /health. counts[JOB_STATUS_COUNT]. */
int store_job_counts(store_t *st, long long *counts, up_error_t *err);

/*
 * [replica] The live jobs by model, for /metrics: fn(model, queued,
 * running, ctx) once per model that has queued or held (claimed,
 * processing) jobs, in model order; fn must not call the store. One
 * snapshot.
 */
int store_model_counts(store_t *st,
                       void (*fn)(const char *model, long long queued, long long running, void *ctx),
                       void *ctx, up_error_t *err);

/*
 * Where queued job id stands: *position = 1 + the number of queued jobs
 * claimable now (not_before passed) that store_job_claim takes before it
 * (a higher priority, or the same and a smaller (vtag, seq)), and *mpx_ahead = the estimated output
 * megapixels of those jobs and this one: input_width * input_height *
 * scale^2 / 1e6 each (the asset's size, scale below 1 taken as 1). A job
 * that is not queued: *position 0 and *mpx_ahead 0. One snapshot (one
 * statement); UP_ERR_NOT_FOUND for an unknown id. On the primary.
 */
int store_job_queue_position(store_t *st, const char *id, int *position, double *mpx_ahead, up_error_t *err);

/*
 * [replica] Measured throughput of model (job_t.model): over the last_n
 * (>= 1) completed jobs of that model that were measured (completed or
 * since expired, with started_at and an output size; latest completed_at
 * first), *seconds_per_mpx = sum(completed_at - started_at) /
 * sum(output_width * output_height / 1e6), *n = the jobs used (0: none,
 * and *seconds_per_mpx 0). started_at is the claim, so the figure
 * includes loading the model and the input. UP_ERR_INVALID for last_n < 1.
 */
int store_model_rate(store_t *st, const char *model, int last_n, double *seconds_per_mpx, int *n,
                     up_error_t *err);

/* ---- listing one owner's jobs (GET /v1/jobs) ---------------------------------- */

typedef struct store_job_filter {
    const char *owner;    /* the key id whose jobs are listed; required */
    unsigned status_mask; /* bit (1 << status) per status wanted; 0 = all */
    const char *model;    /* only jobs running this model (job_t.model); NULL = all */
    double before, after; /* created_at < before, created_at > after; 0 = no bound */
    long long below_seq;  /* only seq < below_seq (the cursor); 0 = from the newest */
} store_job_filter_t;

/*
 * [replica] Up to max jobs matching f, newest first (seq descending), into
 * jobs[]; *n = count. Paging: pass the last job's seq as the next
 * below_seq; new jobs have larger seqs, so pages never shift while jobs
 * arrive. UP_ERR_INVALID without an owner.
 */
int store_jobs_list(store_t *st, const store_job_filter_t *f, job_t *jobs, int max, int *n, up_error_t *err);

/* ---- API keys ------------------------------------------------------------------ */

/*
 * An API key, or a guest session (guest 1): the session an anonymous
 * upload opens, whose "key" is a random session token kept, as a key is,
 * only as its SHA-256. A guest's quota is per day: its period starts at
 * the later of the UTC day's start and reset_at (the caller computes it).
 */
typedef struct api_key {
    char id[40];            /* UUID v4 */
    char name[128];         /* the operator's label */
    char prefix[24];        /* the key's first characters, for display ("upres_AbCdEfGh") */
    unsigned char hash[32]; /* SHA-256 of the whole key (of a guest's session token) */
    char tier[32];          /* tier name ("basic") */
    long long quota;        /* credits per period (a key: calendar month; a guest: day), -1 = no quota */
    long long credits;      /* balance, -1 = none kept (unlimited) */
    double created_at;      /* Unix seconds */
    double last_used_at;    /* 0 = never */
    double revoked_at;      /* 0 = active */
    int guest;              /* 1 = a guest session, 0 = an operator's key */
    double reset_at;        /* Unix seconds of the last "refresh daily credits" (store_keys_reset_guests);
                               0 = never */
} api_key_t;

/*
 * Insert a new key or guest session (every field but last_used_at and
 * revoked_at filled; guest and reset_at as given). UP_ERR_INVALID for a
 * duplicate id or hash.
 */
int store_key_insert(store_t *st, const api_key_t *key, up_error_t *err);

/*
 * The key whose hash is hash, guest sessions and revoked keys too (the
 * caller checks guest and revoked_at). UP_ERR_NOT_FOUND if none. On the
 * primary: a revocation counts from its commit.
 */
int store_key_by_hash(store_t *st, const unsigned char hash[32], api_key_t *out, up_error_t *err);

/*
 * The key with this id (a guest session's too), or the one operator's key
 * (guest 0) whose prefix starts with ref. UP_ERR_NOT_FOUND; UP_ERR_INVALID
 * when ref is ambiguous.
 */
int store_key_find(store_t *st, const char *ref, api_key_t *out, up_error_t *err);

/*
 * [replica] Every operator's key (guest 0: no guest session, so `upres
 * keys list` shows none), oldest first. *keys is new (free()), *n its
 * count.
 */
int store_key_list(store_t *st, api_key_t **keys, int *n, up_error_t *err);

/*
 * The operator's "refresh daily credits": reset_at = now on every guest
 * session, revoked ones too, in one transaction, so that each guest's
 * daily usage counts again from now. *n (may be NULL) = how many rows.
 * UP_ERR_INVALID unless now > 0 (0 means never).
 */
int store_keys_reset_guests(store_t *st, double now, long long *n, up_error_t *err);

/* Revoke key id now. UP_ERR_NOT_FOUND; UP_ERR_INVALID when already revoked. */
int store_key_revoke(store_t *st, const char *id, up_error_t *err);

/* What store_key_update changes; a field left at its zero value changes nothing. */
typedef struct store_key_change {
    const char *tier;  /* new tier name (1 to 31 bytes; the caller checks it is a tier), NULL = unchanged */
    int set_quota;     /* 1: quota = quota (-1 = none) */
    long long quota;   /* credits per calendar month, -1 = no quota */
    int set_credits;   /* 1: credits = credits (-1 = unlimited) */
    long long credits; /* new balance, -1 = none kept (unlimited) */
    long long add_credits; /* added to a kept balance (may be negative, never below 0); 0 = none */
} store_key_change_t;

/*
 * Change key id as ch says, in one transaction with the key row locked.
 * add_credits is added in the database (credits = credits + N), so a
 * concurrent charge or top-up is never lost. Refused, with nothing written:
 *   UP_ERR_NOT_FOUND  no key id
 *   UP_ERR_INVALID    the key is revoked; quota or credits below -1; an
 *                     empty or too long tier; set_credits together with
 *                     add_credits; add_credits on an unlimited balance or
 *                     one it would take below 0 (the message gives both)
 * *out (may be NULL) gets the key as the change left it.
 */
int store_key_update(store_t *st, const char *id, const store_key_change_t *ch, api_key_t *out,
                     up_error_t *err);

/* Record a use of key id at time t (last_used_at, never moved back). UP_ERR_NOT_FOUND. */
int store_key_touch(store_t *st, const char *id, double t, up_error_t *err);

/*
 * [replica] Credits charged to key id since period_start, refunds excluded
 * (for display: a charge sums again in its own transaction). An unknown id
 * has used 0.
 */
int store_key_usage(store_t *st, const char *id, double period_start, long long *used, up_error_t *err);

/*
 * [replica] Usage by day: for each i in [0, days), over the 86400 seconds
 * from day0 + i * 86400 (a UTC day when day0 is a UTC midnight),
 * jobs[i] = the jobs owner ("" = anonymous) submitted (by created_at,
 * whatever became of them) and credits[i] = the credits charged for them
 * net of refunds (a refunded job counts 0). A day without jobs is 0, 0.
 * One statement (one snapshot). UP_ERR_INVALID for days < 0; days 0
 * fills nothing.
 */
int store_usage_daily(store_t *st, const char *owner, double day0, int days, long long *jobs,
                      long long *credits, up_error_t *err);

/* ---- notices across processes (PostgreSQL LISTEN/NOTIFY) -------------------------------- */

/*
 * What a listener hears, on its waiting thread: job_new(ctx) when jobs
 * were queued on the store (by any process: a submission's transaction
 * notifies at its commit), and job_event(ctx, id) for each id another
 * process sent (store_listener_send: job events, EVENTS_QUEUE_MOVED, ...;
 * id borrowed for the call). Both may come merged or late, never lost
 * while the connection holds; after the listener's connection was lost
 * and made again, job_new is called once (what was sent meanwhile is
 * gone: callers re-read, as they would after a poll).
 */
typedef struct store_listen_fns {
    void (*job_new)(void *ctx);
    void (*job_event)(void *ctx, const char *id);
} store_listen_fns_t;

typedef struct store_listener store_listener_t;

#define STORE_NOTICE_ID_MAX 64 /* bytes of a sent id, with its NUL (job ids, topics) */

/*
 * A listener on st's database, with a connection of its own (LISTEN on
 * the jobs and events channels). *out is new (store_listener_free).
 * UP_ERR_UNSUPPORTED for a backend that has no notices (SQLite: its
 * processes find new jobs by polling); UP_ERR_IO when the database cannot
 * be reached.
 */
int store_listen(store_t *st, store_listener_t **out, up_error_t *err);

/*
 * Wait up to timeout_s for notices and call fns with each (from this
 * thread), first sending what store_listener_send queued. Returns as soon
 * as something was heard, when woken (store_listener_wake) or at the
 * timeout: 0. A lost connection is made again here, with a pause between
 * tries (within timeout_s): UP_ERR_IO while it cannot be (logged once per
 * outage). One thread waits on a listener at a time.
 */
int store_listener_wait(store_listener_t *l, double timeout_s, const store_listen_fns_t *fns, void *ctx,
                        up_error_t *err);

/*
 * Queue id (1 to STORE_NOTICE_ID_MAX - 1 bytes of [A-Za-z0-9_.:-]; others
 * are dropped) to be sent to every other listener on the database by the
 * waiting thread, merged with the same id not yet sent. Quick and never
 * blocking on the network: any thread, an event callback too.
 */
void store_listener_send(store_listener_t *l, const char *id);

/* Make a store_listener_wait under way (or the next one) return at once. Any thread. */
void store_listener_wake(store_listener_t *l);

/* Close the listener (accepts NULL). No wait may be under way. */
void store_listener_free(store_listener_t *l);

/* What a listener implements (the PostgreSQL backend's, pg_notify.c); a listener's handle starts with it. */
typedef struct store_listener_vtbl {
    int (*wait)(store_listener_t *l, double timeout_s, const store_listen_fns_t *fns, void *ctx,
                up_error_t *err);
    void (*send)(store_listener_t *l, const char *id);
    void (*wake)(store_listener_t *l);
    void (*free)(store_listener_t *l);
} store_listener_vtbl_t;

struct store_listener {
    const store_listener_vtbl_t *vtbl; /* borrowed, static */
};

/* ---- the workers registry (upres workers list, /api/v1/models) ----------------------- */

/*
 * A process that runs jobs (an `upres worker`, or an `upres serve` with
 * worker threads): one row each, made when it starts (store_worker_register),
 * renewed by its heartbeat with the jobs it runs now, removed when it
 * stops. It is live while heartbeat_at + lease_s >= now (the reader's
 * clock): a process that died without removing its row stops counting
 * after its lease, as its jobs' claims do.
 */
/* Bytes of a worker's job list with its NUL: 256 ids (one per slot at most) of 36, 255 commas. */
#define STORE_WORKER_JOBS_MAX (256 * 37)

typedef struct store_worker {
    char name[128];                   /* unique among live rows: `--name`, default "<host>:<pid>" */
    char host[64];                    /* the machine's host name */
    int pid;                          /* on that machine */
    char models[STORE_MODELS_MAX];    /* the models it claims, comma-separated; "" = every model */
    int slots;                        /* jobs it runs at once (its worker threads), 1 or more */
    double lease_s;                   /* it is live this long after each heartbeat, seconds (> 0) */
    double started_at;                /* Unix seconds, set by store_worker_register */
    double heartbeat_at;              /* Unix seconds of the last heartbeat (register counts as one) */
    char jobs[STORE_WORKER_JOBS_MAX]; /* the jobs it runs now, comma-separated ids; "" = idle */
    char state[16];                   /* "running" or "draining" (stopping: no new claims) */
} store_worker_t;

/*
 * Insert w's row (started_at and heartbeat_at = now, the other fields
 * as given). A row of that name that is no longer live (the same name
 * restarted after a crash) is replaced; rows that lapsed a day ago or
 * more are deleted. UP_ERR_CONFLICT when a live row has the name;
 * UP_ERR_INVALID for an empty or too long name, slots < 1 or lease_s <= 0.
 */
int store_worker_register(store_t *st, const store_worker_t *w, up_error_t *err);

/*
 * The heartbeat of the process self registered (its name, host and pid:
 * borrowed, the other fields unread): heartbeat_at = now, its jobs ("" =
 * idle, NULL = "") and state (NULL = unchanged). UP_ERR_NOT_FOUND when that
 * process has no row (removed, or taken over by another process of the
 * name after it lapsed, as when it was paused: the caller registers again,
 * and is refused while the other lives).
 */
int store_worker_heartbeat(store_t *st, const store_worker_t *self, const char *jobs, const char *state,
                           up_error_t *err);

/* Delete the row of the process w names (name, host and pid, as above). UP_ERR_NOT_FOUND when none. */
int store_worker_remove(store_t *st, const store_worker_t *w, up_error_t *err);

/*
 * The live workers (all 0), or every row (all 1: lapsed ones too), by
 * name, into *out (new: free()), *n its count. One snapshot.
 */
int store_workers_list(store_t *st, int all, store_worker_t **out, int *n, up_error_t *err);

/* 1 when w is live at now (heartbeat_at + lease_s >= now), else 0. */
int store_worker_live(const store_worker_t *w, double now);

/* The slots of the live, running (not draining) rows of live[0..n) that serve model: what may run it now. */
int store_worker_slots(const store_worker_t *live, int n, const char *model);

/* 1 when the comma-separated list models ("" = every model) names model, else 0. */
int store_models_has(const char *models, const char *model);

/*
 * The store's schema version (SQLite: PRAGMA user_version; PostgreSQL:
 * the schema_version table), as the open made or migrated it, into
 * *version; *backend = the backend's name ("sqlite", "postgresql").
 */
int store_schema_version(store_t *st, int *version, const char **backend, up_error_t *err);

/* ---- the backend interface ---------------------------------------------------------- */

/* ---- request limits shared by processes ------------------------------------------- */

#define STORE_RATE_MAX_WINDOW 86400 /* seconds: the longest window a limit may have */

typedef struct store_rate_limit {
    int n;        /* requests allowed per window; 0 = this limit is off */
    int window_s; /* 1 to STORE_RATE_MAX_WINDOW */
} store_rate_limit_t;

/*
 * Count a request of subject (a key id, "ip:ADDR": any text) at now (Unix
 * seconds) against limits, as the in-memory limiter does (auth.h,
 * ratelimit_take) but for every process of the database: *allowed = 1 and
 * the request recorded when, for each limit that is on, fewer than n
 * requests of subject were recorded in (now - window_s, now]; else
 * *allowed = 0, nothing recorded, *retry_after the seconds until every full
 * limit has a free slot (> 0) and *window_s the window of the one that
 * frees up last. One subject's calls are serialised across processes.
 * UP_ERR_UNSUPPORTED on a store without shared limits (SQLite: one machine,
 * whose processes keep their limits in memory).
 */
int store_rate_take(store_t *st, const char *subject, const store_rate_limit_t *limits, int n_limits,
                    double now, int *allowed, double *retry_after, int *window_s, up_error_t *err);

/* 1 when store_rate_take works on st. */
int store_rate_shared(const store_t *st);

/*
 * What a backend implements: one function per operation, each with the
 * rules of its public function above. The public functions (store.c)
 * check their arguments first (the refusals that need no database:
 * UP_ERR_INVALID for an empty id, a path where a blob key belongs, a bad
 * claim or key change; asserts for NULL pointers) and pass the rest on
 * unchanged; store_job_insert, _insert_charged and _submit all become
 * jobs_submit. A backend logs its own failures (once) and fills err.
 */
typedef struct store_vtbl {
    const char *name; /* the URL scheme: "sqlite" */
    void (*close)(store_t *st);
    int (*jobs_submit)(store_t *st, const job_t *jobs, int n, double period_start, const store_idem_t *idem,
                       store_charge_t *charge, up_error_t *err);
    int (*idem_get)(store_t *st, const char *scope, const char *key, store_idem_t *out, up_error_t *err);
    int (*asset_insert)(store_t *st, const asset_t *a, up_error_t *err);
    int (*asset_get)(store_t *st, const char *id, asset_t *out, up_error_t *err);
    int (*assets_due)(store_t *st, double now, asset_t *out, int max, int *n, up_error_t *err); /* max >= 1 */
    int (*asset_due)(store_t *st, const char *id, double now, asset_t *out, up_error_t *err);
    int (*asset_deleted)(store_t *st, const char *id, up_error_t *err);
    int (*job_get)(store_t *st, const char *id, job_t *out, up_error_t *err);
    int (*job_claim)(store_t *st, const char *worker, double lease_s, const char *models, job_t *out,
                     up_error_t *err); /* models never NULL: "" = any */
    int (*job_start)(store_t *st, const char *id, const store_fence_t *fence, int *cancel, up_error_t *err);
    int (*job_progress)(store_t *st, const char *id, const store_fence_t *fence, int progress, int *cancel,
                        up_error_t *err); /* progress 0..100 */
    int (*job_heartbeat)(store_t *st, const char *id, const store_fence_t *fence, int *cancel,
                         up_error_t *err);
    int (*job_complete)(store_t *st, const job_t *job, const store_fence_t *fence, double retention_s,
                        up_error_t *err);
    int (*job_fail)(store_t *st, const char *id, const store_fence_t *fence, const char *message,
                    double retention_s, up_error_t *err); /* message never NULL or "" */
    int (*job_cancel)(store_t *st, const char *id, job_status_t *was, up_error_t *err);
    int (*job_cancelled)(store_t *st, const char *id, const store_fence_t *fence, double retention_s,
                         up_error_t *err);
    int (*job_requeue)(store_t *st, const char *id, const store_fence_t *fence, up_error_t *err);
    int (*jobs_rescue)(store_t *st, int max_attempts, double backoff_s, double retention_s, job_t *jobs,
                       int max, int *n, up_error_t *err);
    int (*job_downloaded)(store_t *st, const char *id, up_error_t *err);
    int (*jobs_due)(store_t *st, double now, job_t *jobs, int max, int *n, up_error_t *err); /* max >= 1 */
    int (*job_expire)(store_t *st, const char *id, up_error_t *err);
    int (*blobs_referenced)(store_t *st, int (*fn)(const char *key, void *ctx), void *ctx, up_error_t *err);
    int (*job_counts)(store_t *st, long long *counts, up_error_t *err); /* counts zeroed by the caller */
    int (*model_counts)(store_t *st,
                        void (*fn)(const char *model, long long queued, long long running, void *ctx),
                        void *ctx, up_error_t *err);
    int (*job_queue_position)(store_t *st, const char *id, int *position, double *mpx_ahead,
                              up_error_t *err); /* id not "", *position and *mpx_ahead zeroed */
    int (*model_rate)(store_t *st, const char *model, int last_n, double *seconds_per_mpx, int *n,
                      up_error_t *err); /* last_n >= 1, outputs zeroed */
    int (*jobs_list)(store_t *st, const store_job_filter_t *f, job_t *jobs, int max, int *n,
                     up_error_t *err); /* max >= 1, f->owner set */
    int (*key_insert)(store_t *st, const api_key_t *key, up_error_t *err);
    int (*key_by_hash)(store_t *st, const unsigned char hash[32], api_key_t *out, up_error_t *err);
    int (*key_find)(store_t *st, const char *ref, api_key_t *out, up_error_t *err); /* ref not "" */
    int (*key_list)(store_t *st, api_key_t **keys, int *n, up_error_t *err);
    int (*key_revoke)(store_t *st, const char *id, up_error_t *err);
    int (*key_update)(store_t *st, const char *id, const store_key_change_t *ch, api_key_t *out,
                      up_error_t *err); /* ch checked */
    int (*key_touch)(store_t *st, const char *id, double t, up_error_t *err);
    int (*key_usage)(store_t *st, const char *id, double period_start, long long *used, up_error_t *err);
    int (*keys_reset_guests)(store_t *st, double now, long long *n, up_error_t *err); /* now > 0, n set */
    int (*usage_daily)(store_t *st, const char *owner, double day0, int days, long long *jobs,
                       long long *credits, up_error_t *err); /* days >= 1, arrays zeroed */
    /* the workers registry: arguments checked, jobs never NULL, state NULL = unchanged */
    int (*worker_register)(store_t *st, const store_worker_t *w, up_error_t *err);
    int (*worker_heartbeat)(store_t *st, const store_worker_t *self, const char *jobs, const char *state,
                            up_error_t *err);
    int (*worker_remove)(store_t *st, const store_worker_t *w, up_error_t *err);
    int (*workers_list)(store_t *st, int all, store_worker_t **out, int *n, up_error_t *err);
    int (*schema_version)(store_t *st, int *version, up_error_t *err);
    int (*listen)(store_t *st, store_listener_t **out, up_error_t *err); /* NULL: no notices */
    int (*rate_take)(store_t *st, const char *subject, const store_rate_limit_t *limits, int n_limits,
                     double now, int *allowed, double *retry_after, int *window_s,
                     up_error_t *err); /* NULL: not offered; limits checked; outputs set when refused */
} store_vtbl_t;

/*
 * A backend's handle starts with this (its first member), so that the
 * public functions dispatch through vtbl and the backend casts back.
 */
struct store {
    const store_vtbl_t *vtbl; /* borrowed, static */
};

/* The SQLite backend's open (sqlite.c): the file at path (absolute), created when missing. */
int store_sqlite_open(const char *path, store_t **out, up_error_t *err);

/*
 * The PostgreSQL backend's open (pg.c): connect with libpq to url (a
 * postgresql:// or postgres:// URI), create or migrate the schema, prepare
 * the statements. *out is new (store_close). UP_ERR_IO when the server
 * cannot be reached or refuses, or its schema is newer than this upres.
 */
int store_pg_open(const char *url, store_t **out, up_error_t *err);

#endif
