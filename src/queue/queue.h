/*
 * queue.h - the job engine: a pool of worker slots that take queued jobs
 * from the store, run the upscale pipeline on them, and store the results
 * (a slot encodes and stores one job while its network runs the next, so
 * it holds at most two); and a sweeper thread that enforces retention.
 *
 * Files are blobs (blob.h), named in the rows by key: uploads/<id>.<ext>
 * (the input, put by api_submit before the row is inserted) and
 * results/<id>-a<attempt>.<ext> (put by the worker: a temporary renamed
 * when complete; one key per attempt, so a worker that lost its claim never
 * touches the blob of the one that won). At start the queue sweeps the
 * blob store: temporaries of dead writers, and blobs no row references
 * (blob_sweep, with the ages below). The upscale-service guide's data
 * policy: inputs are deleted when the job ends, a result right after a
 * complete download, anything else retention_s after the job finished.
 *
 * Several processes may share one data folder (and so one store): each
 * claim has an owner and a lease that the owner renews every heartbeat_s;
 * a job whose lease ran out (its process died) is queued again by whichever
 * queue notices first, and a worker whose claim was superseded stops and
 * writes nothing more about the job (store.h, "Claims and leases").
 *
 * Thread safety: all functions may be called from any thread.
 */
#ifndef UPRES_QUEUE_QUEUE_H
#define UPRES_QUEUE_QUEUE_H

#include "blob/blob.h"
#include "nn/nn.h"
#include "queue/events.h"
#include "store/store.h"
#include "upscale/upscale.h"

typedef struct queue_config {
    blob_store_t *blobs;                /* borrowed, outlives the queue: uploads/ and results/ */
    const upscale_registry_t *registry; /* borrowed, outlives the queue */
    events_t *events;                   /* borrowed: each change of a job is published there; NULL = none */
    int n_workers;                      /* default 1; 0 = none: an API-only process (no claims and no
                                           registry row; it still sweeps and rescues lapsed leases) */
    int threads_per_worker;             /* 0 = all cores / n_workers */
    nn_backend_kind_t backend;          /* default NN_BACKEND_DNNL */
    nn_precision_t precision;           /* default NN_PRECISION_AUTO (nn_net_set_precision) */
    double retention_s;                 /* default 900 (15 minutes) */
    double sweep_interval_s;            /* default 10 */
    int max_attempts;                   /* default 3: claims of one job before it fails */
    double lease_s;      /* default 30: a claim is the worker's this long unless renewed, seconds */
    double heartbeat_s;  /* default 10: running jobs' leases are renewed this often; under lease_s */
    double backoff_s;    /* default 2: a job whose lease ran out waits backoff_s x attempts */
    double temp_age_s;   /* default 3600: the start sweep removes a live writer's temporary past this, s */
    double orphan_age_s; /* default 300: ... and a blob no row references past this, seconds */
    unsigned long long max_input_pixels;  /* 0 = no limit; default upscale_max_input_pixels() */
    unsigned long long max_output_pixels; /* 0 = no limit; default as upscale_opts_init */
    size_t tile_memory; /* bytes for one worker's automatic tiles; 0 = upscale_tile_memory_auto(n_workers) */
    int colour_srgb;    /* results are converted to sRGB; 0 (default) = they keep the input's ICC profile
                           and values (the network ran on them). A job's own "colour" ("srgb", "keep")
                           wins over this */
    int strip_metadata; /* results carry no ICC, EXIF or XMP (colours converted to sRGB); 0 (default)
                           = EXIF and XMP are copied from the input */
    /* the workers registry (store.h): a queue with workers is a row there, renewed each heartbeat_s */
    const char *models; /* borrowed: the models its workers claim, comma-separated; NULL = every model */
    const char *name;   /* borrowed: its row's name; NULL = "<host>:<pid>" */
    int db_retries;     /* default 5: registry heartbeats that may fail in a row (backing off 0.5 s,
                           1 s, 2 s ... 8 s) before queue_failed says the store is lost */
    /* tests only (NULL otherwise): called by a worker's finishing stage once a job's result is
       encoded, before it is checked for a cancel and put; it may block (the job's lease is renewed) */
    void (*finish_hook)(void *ctx, const char *job_id);
    void *finish_hook_ctx;
} queue_config_t;

void queue_config_init(queue_config_t *cfg);

typedef struct queue queue_t;

/*
 * Sweep the blob store (temporaries and unreferenced blobs, see blob.h),
 * rescue jobs whose lease ran out (store_jobs_rescue: a previous process
 * died), then start the workers, the sweeper and the lease keeper. Jobs
 * that another live process runs are left alone. UP_ERR_INVALID when
 * heartbeat_s is not above 0 and under lease_s. *out is new (queue_stop).
 */
int queue_start(store_t *st, const queue_config_t *cfg, queue_t **out, up_error_t *err);

/*
 * 1 once the store was out of reach for db_retries registry heartbeats in a
 * row (or the queue's name was taken by another live process): `upres
 * worker` exits on it. The keeper goes on trying (every 8 s), so a process
 * that does not exit recovers when the store comes back. 0 for NULL.
 */
int queue_failed(queue_t *q);

/* The registry name of q (borrowed, "" for a queue without workers). */
const char *queue_name(const queue_t *q);

/* Wake a worker: a job was inserted. */
void queue_notify(queue_t *q);

/*
 * Stop: no new claims (the registry row says "draining"); a running job
 * stops between two layers of the network (within a fraction of a second,
 * not after its tile) and goes back to the queue (another process or the
 * restart runs it); threads joined, the registry row removed, memory
 * freed. Accepts NULL.
 */
void queue_stop(queue_t *q);

/*
 * Cancel a job (store_job_cancel, same codes and *was): a queued job is
 * cancelled at once and its input deleted; a processing one stops between
 * two layers when one of this queue's workers runs it, else (another
 * process on the same store runs it) at that worker's next tile. Finished
 * jobs: UP_ERR_INVALID (409).
 */
int queue_job_cancel(queue_t *q, const char *id, job_status_t *was, up_error_t *err);

/*
 * Sweep now, as the sweeper does every sweep_interval_s (an operator's
 * cleanup): results past retention deleted and their jobs expired, inputs
 * whose asset is due deleted. *deleted = files deleted, *errors = files
 * that could not be (kept and tried again). Accepts NULL (nothing swept).
 */
void queue_sweep_now(queue_t *q, int *deleted, int *errors);

/* The result of a completed job was downloaded in full: delete the file, record it. */
int queue_job_downloaded(queue_t *q, const char *id, up_error_t *err);

#endif
