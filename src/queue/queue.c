/*
 * queue.c - the job engine (see queue.h): worker threads that claim queued
 * jobs from the store and run the upscale pipeline on them, and a sweeper
 * thread that deletes files once their retention is over.
 *
 * DESIGN
 *
 * Threads: n_workers slots of two threads each (a network thread and a
 * finisher, see Finishing), one sweeper and one keeper, started by
 * queue_start and joined by queue_stop. They share only the store
 * (thread-safe), the read-only registry, and `mu`, which guards `seq`
 * (bumped by queue_notify) and the condition variables, each task's
 * `running` and `attempt` (the claim it holds) and each slot's `fin` and
 * `net_done`. `stopping` is atomic so the progress callback can read it
 * between tiles without the lock.
 *
 * Finishing: a slot has two tasks (a claimed job each). The network thread
 * claims into the one the finisher does not hold, loads the input and runs
 * every step but the encode (steps_run_begin); it then waits until the
 * finisher is idle and hands the task over (`fin`), and claims the next
 * job at once. The finisher encodes (steps_run_end), puts the result and
 * records the completion, then clears `fin`. So the encode, the file write
 * and the store's fsyncs of one job overlap the next job's network, and
 * what a slot holds is bounded: at most one job in the network and one
 * being finished (its decoded output and its encoded bytes; a third job is
 * not claimed before the finisher took the second). Both tasks are claims
 * of the slot's worker id: the keeper renews both leases, running_jobs
 * lists both, queue_job_cancel and queue_stop find either, and each has
 * its own abort flags, so a cancel of the job being finished never stops
 * the one in the network. A job that ends before its encode (failed,
 * cancelled, requeued, superseded) is ended by the network thread; the
 * finisher looks at the flags once more after the encode, so that no
 * result is put for a job cancelled or superseded meanwhile (a superseded
 * claim the keeper did not see yet is refused by the fence, and the file
 * is deleted). Stopping: the network thread stops between two layers and
 * requeues its job, the finisher ends the job it holds (an encode under
 * way completes: it cannot be interrupted, and its work is done), then the
 * network thread is joined first and the finisher after it, once it has no
 * task left.
 *
 * Claims: each worker has an id, "<host>:<pid>:<index>:<random>", unique
 * per process and thread (the random part tells a restarted process from
 * its predecessor when pids are reused, as in containers). Its claims carry
 * that id and the attempt; every store write about the job passes them as
 * the fence. The keeper renews the lease of every running job each
 * heartbeat_s, so a model load or a long tile never loses it, and once a
 * second rescues the jobs whose lease ran out, whichever process held them
 * (that is what replaces the start-up recovery: a job another live process
 * runs is never taken from it). A renewal refused as superseded (this
 * process was paused or cut off longer than the lease, and another claim
 * took the job) sets the task's `superseded` and `abort`: the worker
 * stops between two layers and leaves the job, its input and the other
 * claim's result alone; a renewal that finds a cancel request stops the
 * run the same way (a cancel made by another process thus takes effect
 * within a heartbeat, not only between tiles).
 *
 * Registry: a queue with workers is one row of the store's workers
 * registry (store.h), named cfg.name or "<host>:<pid>", with the models it
 * claims (cfg.models, also the filter of every claim), its slots
 * (n_workers) and its lease. queue_start makes the row (a live row of the
 * same name refuses the start); the keeper renews it every heartbeat_s with
 * the jobs running now, backing off when the store does not answer, and
 * after db_retries failures in a row sets `failed` (queue_failed: `upres
 * worker` exits on it); queue_stop marks it draining, then removes it once
 * the workers are joined. A queue without workers (serve --no-workers) has
 * no row: it runs no job, but its keeper and sweeper still rescue lapsed
 * leases and enforce retention for the whole store.
 *
 * Waking: a worker reads seq, tries to claim, and when the queue is empty
 * sleeps until seq changes or one second passes (jobs inserted by another
 * process are found by that poll). Reading seq before the claim means a
 * notify that lands between the claim and the wait is never lost.
 *
 * Models: each worker keeps the upscalers it has loaded, one per variant
 * file, for its whole life: loading a model costs far more than a small
 * job, and an upscaler is used by one thread at a time.
 *
 * Progress and cancel: the pipeline calls back between tiles. The callback
 * writes progress to the store when it rose by at least a point and at most
 * every PROGRESS_WRITE_S (each write is a transaction with an fsync); in
 * between it reads cancel_requested at most every CANCEL_POLL_S. It stops
 * the run when the job was cancelled or the queue is stopping.
 *
 * Stopping inside a tile: a tile of a big model takes seconds, longer than
 * a container runtime waits after SIGTERM. Each task has an atomic
 * `abort` that the network reads between layers (upscale_opts_t.abort):
 * queue_stop sets every task's, and queue_job_cancel sets the one of the
 * task holding that job (with `cancelled`, so the job ends cancelled
 * rather than requeued). Both are set under mu, and a task's are reset
 * under mu when it registers a job as running, so a stop or a cancel that
 * races with a job's start is never lost. A cancel made by another process
 * on the same store is still seen by the poll, between tiles.
 *
 * Files: blobs, by key (blob.h). The result is encoded in memory and put
 * (a temporary renamed into place), so a crash never leaves a partial
 * results/<id>-a<attempt>.<ext>; the start sweep removes the temporaries a
 * dead process left, and the uploads and results no row references (an
 * upload put by a server killed before its row was inserted, a result of
 * an attempt killed before it was recorded), once older than a put can
 * take to be recorded. Each attempt has its own name: a superseded
 * worker's complete is refused and it deletes only its own file, and the
 * winner deletes what earlier attempts (killed between the rename and the
 * record) left. The input (the job's asset) is deleted when the job ends
 * (completed, failed, cancelled) and the store finds the asset due (a
 * one-shot asset is; one that other jobs still use, or that is kept past
 * now, is swept later), kept when the job goes back to the queue, and
 * never by a worker that was superseded: the job is not over.
 */
#include "queue/queue.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/uuid.h"
#include "core/xmalloc.h"
#include "image/image.h"
#include "steps/steps.h"

#define PROGRESS_WRITE_S 0.25 /* at most 4 progress writes a second per job */
#define CANCEL_POLL_S 0.05    /* between writes, read the cancel flag at most 20 times a second */
#define IDLE_POLL_S 1.0       /* a worker with nothing to do looks at the store this often */
#define RESCUE_POLL_S 1.0     /* the keeper looks for lost leases this often */
#define SWEEP_BATCH 64
#define RESCUE_BATCH 16

typedef struct model_slot {
    char file[128]; /* variant file stem */
    upscaler_t *up;
} model_slot_t;

typedef struct progress_ctx {
    queue_t *q;
    const char *id;
    const store_fence_t *fence;
    int written;    /* last progress written */
    double write_t; /* mono_s of the last write */
    double poll_t;  /* mono_s of the last cancel check */
    int cancel;     /* the store said cancel_requested */
    int superseded; /* the store said another claim has the job */
} progress_ctx_t;

/*
 * One claimed job, from its claim to its end (see DESIGN, "Finishing"):
 * the network stage fills it, the finishing stage ends it.
 */
typedef struct task {
    job_t *job;            /* owned buffer: the claimed row, its result fields filled as it completes */
    char running[40];      /* id of the job held, "" when the task is free; guarded by q->mu */
    int attempt;           /* the held job's attempt (its fence with the worker id); guarded by q->mu */
    atomic_int abort;      /* non-zero: the job stops between two layers, or before its encode */
    atomic_int cancelled;  /* abort was set by a cancel (queue_job_cancel, the keeper), not by queue_stop */
    atomic_int superseded; /* abort was set because another claim took the job (the keeper) */
    store_fence_t fence;   /* worker id and attempt: every store write about the job carries it */
    steps_t steps;         /* the job's pipeline, parsed */
    steps_env_t env;       /* what steps_run_begin and steps_run_end use (points into this task) */
    progress_ctx_t pc;     /* progress writes and cancel polls of the job */
    steps_pending_t *pending; /* between the stages: the image the network made, the report so far */
    double t0;                /* mono_s of the claim */
    int in_w, in_h;           /* the input's size, for the log */
} task_t;

typedef struct worker {
    struct queue *q;
    int index;
    pthread_t thread; /* the network stage: claims, loads, runs the steps but the encode */
    int started;
    pthread_t finisher; /* the finishing stage: encode, blob_put, the completion (DESIGN) */
    int finisher_started;
    model_slot_t *models; /* owned; the network thread's alone */
    int n_models;
    char id[128];    /* worker id, the owner of its claims: "<host>:<pid>:<index>:<random>" */
    task_t tasks[2]; /* at most two jobs per slot: one in the network, one being finished */
    task_t *fin;     /* the task handed to the finisher, NULL when it is idle; guarded by q->mu */
    int net_done;    /* the network thread is gone: the finisher leaves once fin is NULL; guarded by q->mu */
    pthread_cond_t fin_cond; /* fin or net_done changed (with q->mu) */
    int ready;               /* tasks and fin_cond initialised (queue_stop after a failed start) */
} worker_t;

struct queue {
    store_t *st;      /* borrowed */
    blob_store_t *bs; /* borrowed: cfg.blobs */
    queue_config_t cfg;
    int threads_per_worker;

    pthread_mutex_t mu;
    pthread_cond_t work_cond;  /* seq changed or stopping */
    pthread_cond_t sweep_cond; /* stopping (the sweeper and the keeper wait on it) */
    unsigned long long seq;    /* guarded by mu */
    atomic_int stopping;

    worker_t *workers; /* n_workers, owned */
    pthread_t sweeper;
    int sweeper_started;
    pthread_t keeper;
    int keeper_started;

    /* the workers registry (see DESIGN); the keeper's alone once started */
    char name[128];      /* the row's name, "" = no row (no workers) */
    store_worker_t self; /* the row as registered: its name, host and pid identify it */
    int registered;      /* the row was made */
    int reg_failures;    /* heartbeats failed in a row */
    double reg_next;     /* mono_s of the next registry heartbeat */
    atomic_int failed;   /* queue_failed */
};

void queue_config_init(queue_config_t *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->n_workers = 1;
    cfg->threads_per_worker = 0;
    cfg->backend = NN_BACKEND_DNNL;
    cfg->precision = NN_PRECISION_AUTO;
    cfg->retention_s = 900;
    cfg->sweep_interval_s = 10;
    cfg->max_attempts = 3;
    cfg->lease_s = 30;
    cfg->heartbeat_s = 10;
    cfg->backoff_s = 2;
    cfg->temp_age_s = 3600;
    cfg->orphan_age_s = 300;
    cfg->db_retries = 5;
    cfg->max_input_pixels = upscale_max_input_pixels();
    upscale_opts_t defaults;
    upscale_opts_init(&defaults);
    cfg->max_output_pixels = defaults.max_output_pixels;
}

/* ---- helpers ----------------------------------------------------------------- */

/* Delete the blob key; one already gone is fine. Returns 0, or the error (logged: the file stays). */
static int remove_blob(queue_t *q, const char *key) {
    if (!key || !*key)
        return 0;
    up_error_t err;
    int rc = blob_delete(q->bs, key, &err);
    if (rc == 0 || rc == UP_ERR_NOT_FOUND)
        return 0;
    log_warn("cannot delete %s: %s", key, err.msg);
    return rc;
}

/* A job ended: its input asset's file goes if the store finds the asset due (store_assets_due). */
static void remove_input(queue_t *q, const char *asset_id) {
    asset_t a;
    if (store_asset_due(q->st, asset_id, now_s(), &a, NULL) == 0 && remove_blob(q, a.key) == 0)
        store_asset_deleted(q->st, a.id, NULL);
}

/* Wait on cond for at most seconds (monotonic); mu held. */
static void timed_wait(pthread_cond_t *cond, pthread_mutex_t *mu, double seconds) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long ns = (long long)ts.tv_nsec + (long long)(seconds * 1e9);
    ts.tv_sec += (time_t)(ns / 1000000000LL);
    ts.tv_nsec = (long)(ns % 1000000000LL);
    pthread_cond_timedwait(cond, mu, &ts);
}

/*
 * Delete the results that attempts 1..n_attempts of job id, other than
 * attempt keep (0: none kept), may have left: a worker killed between
 * writing results/<id>-a<N>.<ext> and recording it. A few unlinks, no
 * folder scan: the names are known. Temporaries are left to the clean-up
 * at start (their writer may be alive).
 */
static void remove_attempt_results(queue_t *q, const char *id, int n_attempts, int keep) {
    static const char *const exts[] = {"png", "jpg", "webp"}; /* what output_format writes */
    char key[BLOB_KEY_MAX + 1];
    up_error_t err;
    for (int k = 1; k <= n_attempts; k++) {
        for (size_t i = 0; i < sizeof exts / sizeof *exts && k != keep; i++) {
            snprintf(key, sizeof key, "results/%s-a%d.%s", id, k, exts[i]);
            int rc = blob_delete(q->bs, key, &err);
            if (rc == 0)
                log_info("job %s: removed %s, left by attempt %d", id, key, k);
            else if (rc != UP_ERR_NOT_FOUND)
                log_warn("cannot delete %s: %s", key, err.msg);
        }
    }
}

/* ---- one job ---------------------------------------------------------------- */

static int on_progress(void *ctx, int pct) {
    progress_ctx_t *p = ctx;
    if (atomic_load(&p->q->stopping))
        return 1;
    double t = mono_s();
    int cancel = 0;
    up_error_t err;
    if (pct > p->written && pct < 100 && t - p->write_t >= PROGRESS_WRITE_S) {
        int rc = store_job_progress(p->q->st, p->id, p->fence, pct, &cancel, &err);
        if (rc == 0) {
            p->written = pct;
            events_publish(p->q->cfg.events, p->id);
            p->write_t = p->poll_t = t;
        } else if (rc == UP_ERR_CONFLICT) {
            p->superseded = 1;
        } else if (rc == UP_ERR_INVALID) {
            cancel = 1; /* the job left processing under us: stop */
        }
    } else if (t - p->poll_t >= CANCEL_POLL_S) {
        job_t *j = xmalloc(sizeof *j);
        if (store_job_get(p->q->st, p->id, j, &err) == 0) {
            cancel = j->cancel_requested || j->status != JOB_STATUS_PROCESSING;
            p->superseded |= j->attempts != p->fence->attempt || strcmp(j->worker, p->fence->worker) != 0;
        }
        free(j);
        p->poll_t = t;
    }
    if (cancel)
        p->cancel = 1;
    return p->cancel || p->superseded;
}

/*
 * Register id (NULL: none) and attempt as the claim task t of a worker
 * holds, with fresh abort flags: set already when the queue is stopping.
 * queue_stop, queue_job_cancel and the keeper find the job here, in
 * whichever stage it is.
 */
static void set_running(queue_t *q, task_t *t, const char *id, int attempt) {
    pthread_mutex_lock(&q->mu);
    snprintf(t->running, sizeof t->running, "%s", id ? id : "");
    t->attempt = id ? attempt : 0;
    atomic_store(&t->cancelled, 0);
    atomic_store(&t->superseded, 0);
    atomic_store(&t->abort, atomic_load(&q->stopping));
    pthread_mutex_unlock(&q->mu);
}

/* The upscaler for variant, loaded on first use. */
static int worker_model(worker_t *w, const upscale_variant_t *v, upscaler_t **out, up_error_t *err) {
    for (int i = 0; i < w->n_models; i++) {
        if (strcmp(w->models[i].file, v->file) == 0) {
            *out = w->models[i].up;
            return UP_OK;
        }
    }
    queue_t *q = w->q;
    double t0 = mono_s();
    upscaler_t *up = NULL;
    int rc = upscaler_new(q->cfg.registry, v, q->cfg.backend, q->threads_per_worker, &up, err);
    if (rc == 0 && (rc = upscaler_set_precision(up, q->cfg.precision, err)))
        upscaler_free(up);
    if (rc)
        return rc;
    w->models = xrealloc(w->models, (size_t)(w->n_models + 1) * sizeof *w->models);
    model_slot_t *m = &w->models[w->n_models++];
    snprintf(m->file, sizeof m->file, "%s", v->file);
    m->up = up;
    log_info("worker %d loaded %s (%s, %d threads) in %.2f s", w->index, v->file,
             nn_backend_name(q->cfg.backend), q->threads_per_worker, mono_s() - t0);
    *out = up;
    return UP_OK;
}

/* steps_env_t.upscaler: the worker's upscaler for model at scale (loaded on first use). */
static int step_upscaler(void *ctx, const char *model, double scale, upscaler_t **out, up_error_t *err) {
    worker_t *w = ctx;
    const upscale_variant_t *v = NULL;
    int rc = upscale_registry_resolve(w->q->cfg.registry, model, scale, &v, err);
    return rc ? rc : worker_model(w, v, out, err);
}

/* What the steps did, as the record keeps it (JSON text into out); "" when it does not fit. */
static void report_text(const json_t *report, char *out, size_t size) {
    char *text = report ? json_dumps(report, JSON_COMPACT) : NULL;
    size_t n = text ? strlen(text) : 0;
    out[0] = '\0';
    if (n && n < size)
        memcpy(out, text, n + 1);
    else if (n)
        log_warn("a pipeline's report of %zu bytes does not fit its record: not kept", n);
    free(text);
}

/* Load every model the pipeline runs, so that a job is "processing" only once its models are ready. */
static int load_models(worker_t *w, const steps_t *st, up_error_t *err) {
    for (int i = 0; i < st->n; i++) {
        upscaler_t *up;
        int rc = st->step[i].kind == STEP_UPSCALE
                     ? step_upscaler(w, st->step[i].upscale.model, st->step[i].upscale.scale, &up, err)
                     : 0;
        if (rc)
            return rc;
    }
    return 0;
}

enum { END_COMPLETED, END_FAILED, END_CANCELLED, END_REQUEUED, END_SUPERSEDED, END_REFUSED };

/*
 * How a run that stopped (UP_ERR_CANCELLED from the steps) ends.
 * Superseded first: the job is another claim's now. A cancel request wins
 * over a shutdown: the client asked for it. A stop inside a tile may come
 * before the poll saw a cancel made elsewhere: look once more.
 */
static int stop_end(queue_t *q, task_t *t) {
    int cancelled = t->pc.cancel || atomic_load(&t->cancelled);
    if (!cancelled) {
        job_t *j = xmalloc(sizeof *j);
        cancelled = store_job_get(q->st, t->job->id, j, NULL) == 0 && j->cancel_requested;
        free(j);
    }
    return t->pc.superseded || atomic_load(&t->superseded) ? END_SUPERSEDED
           : cancelled                                     ? END_CANCELLED
                                                           : END_REQUEUED;
}

/*
 * End the job of task t as end says (rc and err: the error of END_FAILED,
 * the store's refusal of END_REFUSED), from either stage. Each store
 * transition is followed by its log line; a write refused as superseded
 * (UP_ERR_CONFLICT) ends it with nothing more written and the input kept
 * for the claim that won. The task is free again on return.
 */
static void end_job(queue_t *q, task_t *t, int end, int rc, up_error_t *err) {
    store_t *st = q->st;
    job_t *job = t->job;
    const store_fence_t *fence = &t->fence;
    if (end == END_COMPLETED) {
        remove_attempt_results(q, job->id, job->attempts, job->attempts);
        goto input;
    }
    if (end == END_REFUSED)
        goto refused;
    if (end == END_SUPERSEDED) {
        rc = UP_ERR_CONFLICT;
    } else if (end == END_REQUEUED) {
        if ((rc = store_job_requeue(st, job->id, fence, err)) == 0) {
            metrics_add("upres_jobs_requeued_total", job->model, 1);
            log_info("job %s queued again (the server is stopping)", job->id);
        }
        if (rc != UP_ERR_CONFLICT)
            goto out; /* keep the input: the job runs again */
    } else if (end == END_CANCELLED) {
        if ((rc = store_job_cancelled(st, job->id, fence, q->cfg.retention_s, err)) == 0) {
            metrics_add("upres_jobs_cancelled_total", job->model, 1);
            log_info("job %s cancelled after %.2f s", job->id, mono_s() - t->t0);
        }
    } else {
        char why[sizeof err->msg];
        snprintf(why, sizeof why, "%s", err->msg[0] ? err->msg : up_strerror(rc));
        if ((rc = store_job_fail(st, job->id, fence, why, q->cfg.retention_s, err)) == 0) {
            metrics_add("upres_jobs_failed_total", job->model, 1);
            log_warn("job %s failed: %s", job->id, why);
        }
    }
    if (rc == 0) {
        remove_attempt_results(q, job->id, job->attempts, 0);
        events_publish(q->cfg.events, job->id); /* cancelled or failed */
        goto input;
    }
refused:
    if (rc == UP_ERR_CONFLICT) {
        log_warn("job %s: attempt %d superseded: left to the claim that took it", job->id, job->attempts);
        goto out;
    }
    if (rc != UP_ERR_INVALID)
        goto out; /* the store failed: the lease runs out and another attempt runs the job */
    /* INVALID: the job ended without us (failed or cancelled elsewhere) */
input:
    /* upscale-service guide: uploaded inputs are deleted when the job ends */
    remove_input(q, job->asset_id);
out:
    steps_pending_free(t->pending);
    t->pending = NULL;
    set_running(q, t, NULL, 0);
}

/*
 * The network stage of a claimed job (the slot's network thread): parse the
 * pipeline, load its models and the input, move it to processing, and run
 * every step but the encode. Returns 1 when the job is ready to be
 * finished (t->pending holds what the network made), 0 when it already
 * ended here (failed, cancelled, requeued, superseded).
 */
static int run_job(worker_t *w, task_t *t) {
    queue_t *q = w->q;
    store_t *st = q->st;
    job_t *job = t->job;
    up_error_t err = {0};
    up_image_t *in = NULL;
    int rc, end = END_FAILED;

    t->t0 = mono_s();
    t->fence = (store_fence_t){.worker = w->id, .attempt = job->attempts};
    t->pending = NULL;
    /* registered at once: the keeper renews the lease while the model and input load */
    set_running(q, t, job->id, job->attempts);
    log_info("job %s claimed (%s, x%d, attempt %d, worker %s)", job->id, job->model, job->scale,
             job->attempts, w->id);
    if ((rc = steps_parse_text(job->steps, &t->steps, &err))) {
        up_error_prefix(&err, "the job's pipeline");
        goto end;
    }
    if ((rc = load_models(w, &t->steps, &err)))
        goto end;

    image_limits_t lim = {.max_pixels = q->cfg.max_input_pixels};
    char input[PATH_MAX];
    int copy = 0; /* input is a local copy of the blob (blob_local_file), ours to remove */
    if (!job->input_key[0]) {
        rc = up_error_set(&err, UP_ERR_NOT_FOUND, 0, "the uploaded input is gone");
        goto end;
    }
    if ((rc = blob_local_file(q->bs, job->input_key, input, sizeof input, &copy, &err))) {
        if (rc == UP_ERR_NOT_FOUND) {
            up_error_set(&err, rc, 0, "the uploaded input is gone");
        } else if (rc == UP_ERR_IO) { /* the blob store failed, not the job (a database restarting) */
            log_warn("job %s: cannot read its input: %s: left for another attempt", job->id, err.msg);
            end = END_REFUSED;
        } else {
            up_error_prefix(&err, "input");
        }
        goto end;
    }
    rc = image_load_file_frames(input, &lim, steps_frame_limit(&t->steps), &in, &err);
    if (copy)
        unlink(input); /* decoded whole into memory, or failed */
    if (rc) {
        up_error_prefix(&err, "input");
        goto end;
    }

    /* claimed -> processing: the model and the input are ready. A cancel since the
     * claim is either seen by store_job_start or has set abort. */
    int cancel = 0;
    if ((rc = store_job_start(st, job->id, &t->fence, &cancel, &err))) {
        end = rc == UP_ERR_CONFLICT ? END_SUPERSEDED : END_FAILED;
        goto end;
    }
    if (cancel) {
        end = END_CANCELLED;
        goto end;
    }
    log_info("job %s processing (attempt %d)", job->id, job->attempts);
    events_publish(q->cfg.events, job->id);

    t->pc =
        (progress_ctx_t){.q = q, .id = job->id, .fence = &t->fence, .write_t = mono_s(), .poll_t = mono_s()};
    /* colour: the job's choice, else the server's (the input's own profile unless told sRGB) */
    int keep = job->colour[0] ? strcmp(job->colour, "keep") == 0 : !q->cfg.colour_srgb;
    t->env = (steps_env_t){
        .upscaler = step_upscaler,
        .ctx = w,
        .progress = on_progress,
        .progress_ctx = &t->pc,
        .abort = &t->abort,
        .tile_memory = q->cfg.tile_memory,
        .max_output_pixels = q->cfg.max_output_pixels,
        .srgb = !keep,
        .strip = q->cfg.strip_metadata,
    };
    t->in_w = in->width;
    t->in_h = in->height;
    rc = steps_run_begin(&t->steps, in, &t->env, &t->pending, &err);
    in = NULL; /* taken over by steps_run_begin */
    if (rc == 0)
        return 1;
    if (rc == UP_ERR_CANCELLED)
        end = stop_end(q, t);
end:
    image_free(in);
    end_job(q, t, end, rc, &err);
    return 0;
}

/*
 * The finishing stage (the finisher's thread): encode what the network
 * made, put the result, record the completion. The task stays registered
 * all along, so its lease is renewed and a cancel or a superseding claim
 * reaches it; both are looked at once more after the encode, so that a
 * result is never put for a job that is no longer ours to complete.
 */
static void finish_job(worker_t *w, task_t *t) {
    queue_t *q = w->q;
    job_t *job = t->job;
    up_error_t err = {0};
    steps_result_t res = {0};
    int end = END_FAILED;
    int rc = steps_run_end(t->pending, &res, &err);
    t->pending = NULL; /* taken over by steps_run_end */
    if (rc == UP_ERR_CANCELLED) {
        end = stop_end(q, t);
        goto end;
    }
    if (rc)
        goto end;
    if (q->cfg.finish_hook)
        q->cfg.finish_hook(q->cfg.finish_hook_ctx, job->id);
    if (atomic_load(&t->superseded) || t->pc.superseded) {
        end = END_SUPERSEDED;
        goto end;
    }
    if (atomic_load(&t->cancelled) || t->pc.cancel) {
        end = END_CANCELLED;
        goto end;
    }

    /* one name per attempt: a superseded worker can never overwrite or delete the winner's */
    snprintf(job->result_key, sizeof job->result_key, "results/%s-a%d.%s", job->id, job->attempts,
             res.format);
    if ((rc = blob_put(q->bs, job->result_key, res.data, res.size, &err))) {
        if (rc != UP_ERR_IO) {
            up_error_prefix(&err, "cannot store the result");
            goto end;
        }
        /* the blob store's failure, not the job's (a full disk, a database restarting): the claim lapses
         * and another attempt runs it, up to the attempts a rescue allows */
        log_warn("job %s: cannot store the result of attempt %d: %s: left for another attempt", job->id,
                 job->attempts, err.msg);
        end = END_REFUSED;
        goto end;
    }
    snprintf(job->result_format, sizeof job->result_format, "%s", res.format);
    job->output_width = res.width;
    job->output_height = res.height;
    job->result_bytes = (long long)res.size;
    report_text(res.report, job->report, sizeof job->report);
    if ((rc = store_job_complete(q->st, job, &t->fence, q->cfg.retention_s, &err))) {
        /* superseded, cancelled or failed under us: drop our result. The store failed (UP_ERR_IO): the
         * commit may have happened with the connection lost after it, so the result stays; if it did
         * not, the attempt that completes the job removes it (remove_attempt_results) */
        if (rc != UP_ERR_IO)
            remove_blob(q, job->result_key);
        log_warn("job %s: cannot record the result of attempt %d: %s", job->id, job->attempts, err.msg);
        end = END_REFUSED;
        goto end;
    }
    end = END_COMPLETED;
    metrics_add("upres_jobs_completed_total", job->model, 1);
    metrics_add("upres_output_megapixels_total", job->model, (double)res.width * res.height / 1e6);
    metrics_observe("upres_job_seconds", job->model, mono_s() - t->t0);
    events_publish(q->cfg.events, job->id);
    log_info("job %s completed in %.2f s (%dx%d -> %dx%d, %lld bytes, attempt %d)", job->id, mono_s() - t->t0,
             t->in_w, t->in_h, res.width, res.height, job->result_bytes, job->attempts);
end:
    steps_result_fini(&res);
    end_job(q, t, end, rc, &err);
}

/* Hand t to w's finisher, once it is idle: at most one job per slot is being finished (DESIGN). */
static void hand_over(worker_t *w, task_t *t) {
    queue_t *q = w->q;
    pthread_mutex_lock(&q->mu);
    while (w->fin)
        pthread_cond_wait(&w->fin_cond, &q->mu);
    w->fin = t;
    pthread_cond_broadcast(&w->fin_cond);
    pthread_mutex_unlock(&q->mu);
}

static void *finisher_main(void *arg) {
    worker_t *w = arg;
    queue_t *q = w->q;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!w->fin && !w->net_done)
            pthread_cond_wait(&w->fin_cond, &q->mu);
        task_t *t = w->fin;
        if (!t)
            break;
        pthread_mutex_unlock(&q->mu);
        finish_job(w, t);
        pthread_mutex_lock(&q->mu);
        w->fin = NULL;
        pthread_cond_broadcast(&w->fin_cond);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

static void *worker_main(void *arg) {
    worker_t *w = arg;
    queue_t *q = w->q;
    while (!atomic_load(&q->stopping)) {
        pthread_mutex_lock(&q->mu);
        unsigned long long seen = q->seq;
        /* the task the finisher does not hold (it never takes the one the network runs) */
        task_t *t = w->fin == &w->tasks[0] ? &w->tasks[1] : &w->tasks[0];
        pthread_mutex_unlock(&q->mu);

        up_error_t err;
        double t_claim = mono_s();
        int rc = store_job_claim(q->st, w->id, q->cfg.lease_s, q->cfg.models, t->job, &err);
        metrics_observe("upres_claim_seconds", NULL, mono_s() - t_claim);
        if (rc == 0) {
            metrics_add("upres_jobs_claimed_total", t->job->model, 1);
            metrics_observe("upres_queue_wait_seconds", t->job->model, now_s() - t->job->created_at);
            events_publish(q->cfg.events, t->job->id);
            events_publish(q->cfg.events, EVENTS_QUEUE_MOVED);
            if (run_job(w, t))
                hand_over(w, t);
            continue;
        }
        if (rc != UP_ERR_NOT_FOUND)
            log_error("worker %d: cannot claim a job: %s", w->index, err.msg);
        pthread_mutex_lock(&q->mu);
        if (!atomic_load(&q->stopping) && q->seq == seen)
            timed_wait(&q->work_cond, &q->mu, IDLE_POLL_S);
        pthread_mutex_unlock(&q->mu);
    }
    return NULL;
}

/* ---- leases ---------------------------------------------------------------------- */

/*
 * Renew the lease of every job this queue's workers hold. A renewal that
 * finds the claim superseded, or the job cancel-requested, stops the
 * worker between two layers (if it still runs that claim).
 */
static void heartbeat(queue_t *q) {
    /* stopping: the workers are leaving their jobs (requeued), and a renewal would only race them */
    for (int i = 0; i < q->cfg.n_workers * 2 && !atomic_load(&q->stopping); i++) {
        task_t *t = &q->workers[i / 2].tasks[i % 2];
        char id[40];
        pthread_mutex_lock(&q->mu);
        snprintf(id, sizeof id, "%s", t->running);
        store_fence_t fence = {.worker = q->workers[i / 2].id, .attempt = t->attempt};
        pthread_mutex_unlock(&q->mu);
        if (!id[0] || atomic_load(&t->superseded)) /* none, or one that is leaving a job not ours */
            continue;
        up_error_t err;
        int cancel = 0;
        int rc = store_job_heartbeat(q->st, id, &fence, &cancel, &err);
        if (rc != UP_ERR_CONFLICT && !(rc == 0 && cancel))
            continue;
        pthread_mutex_lock(&q->mu);
        if (strcmp(t->running, id) == 0 && t->attempt == fence.attempt) {
            atomic_store(rc ? &t->superseded : &t->cancelled, 1);
            atomic_store(&t->abort, 1);
        }
        pthread_mutex_unlock(&q->mu);
        if (rc)
            log_warn("%s: stopping the run", err.msg); /* the message names the job and both claims */
    }
}

/*
 * Rescue the jobs whose lease ran out, whichever process held them
 * (store_jobs_rescue), and finish what the dead worker cannot: the input
 * and any result of a job that now ended.
 */
static void rescue(queue_t *q) {
    job_t *jobs = xmalloc(RESCUE_BATCH * sizeof *jobs);
    int n = 0, n_queued = 0;
    do {
        up_error_t err;
        if (store_jobs_rescue(q->st, q->cfg.max_attempts, q->cfg.backoff_s, q->cfg.retention_s, jobs,
                              RESCUE_BATCH, &n, &err))
            break;
        for (int i = 0; i < n; i++) {
            job_t *j = &jobs[i];
            metrics_add("upres_lease_rescues_total", NULL, 1);
            events_publish(q->cfg.events, j->id); /* queued again, failed or cancelled */
            if (j->status == JOB_STATUS_QUEUED) {
                log_info("job %s queued again: the lease of attempt %d ran out (claimable in %.0f s)", j->id,
                         j->attempts, j->not_before - now_s());
                n_queued++;
                continue;
            }
            if (j->status == JOB_STATUS_FAILED)
                log_warn("job %s failed: %s", j->id, j->error);
            else
                log_info("job %s cancelled: the lease of attempt %d ran out", j->id, j->attempts);
            remove_attempt_results(q, j->id, j->attempts, 0);
            remove_input(q, j->asset_id);
        }
    } while (n == RESCUE_BATCH && !atomic_load(&q->stopping));
    free(jobs);
    if (n_queued)
        queue_notify(q);
}

/* ---- the workers registry ---------------------------------------------------------------- */

#define REG_BACKOFF_MIN_S 0.5
#define REG_BACKOFF_MAX_S 8.0

/* The jobs this queue's workers run now, comma-separated, into out. */
static void running_jobs(queue_t *q, char *out, size_t size) {
    size_t n = 0;
    out[0] = '\0';
    pthread_mutex_lock(&q->mu);
    for (int i = 0; i < q->cfg.n_workers * 2; i++) {
        const char *id = q->workers[i / 2].tasks[i % 2].running;
        if (id[0] && n + strlen(id) + 2 < size)
            n += (size_t)snprintf(out + n, size - n, "%s%s", n ? "," : "", id);
    }
    pthread_mutex_unlock(&q->mu);
}

/* This queue's row as store_worker_register takes it (kept in q->self). */
static int registry_register(queue_t *q, up_error_t *err) {
    store_worker_t *w = &q->self;
    memset(w, 0, sizeof *w);
    snprintf(w->name, sizeof w->name, "%s", q->name);
    if (gethostname(w->host, sizeof w->host - 1) != 0 || !w->host[0])
        snprintf(w->host, sizeof w->host, "localhost");
    w->pid = (int)getpid();
    snprintf(w->models, sizeof w->models, "%s", q->cfg.models ? q->cfg.models : "");
    w->slots = q->cfg.n_workers;
    w->lease_s = q->cfg.lease_s;
    snprintf(w->state, sizeof w->state, "running");
    return store_worker_register(q->st, w, err);
}

/*
 * The keeper's registry heartbeat: the row renewed with the jobs running
 * now (made again when it is gone). A failure backs off, doubling from
 * REG_BACKOFF_MIN_S to REG_BACKOFF_MAX_S; after db_retries in a row the
 * queue is failed (queue_failed), and the keeper keeps trying.
 */
static void registry_beat(queue_t *q) {
    char jobs[STORE_WORKER_JOBS_MAX];
    running_jobs(q, jobs, sizeof jobs);
    up_error_t err;
    int rc = store_worker_heartbeat(q->st, &q->self, jobs, "running", &err);
    if (rc == UP_ERR_NOT_FOUND) {
        log_warn("workers registry: the row of %s is gone: registering again", q->name);
        rc = registry_register(q, &err);
    }
    double t = mono_s();
    if (rc == 0) {
        if (q->reg_failures)
            log_info("workers registry: %s: the store answers again after %d failed heartbeat(s)", q->name,
                     q->reg_failures);
        q->reg_failures = 0;
        q->reg_next = t + q->cfg.heartbeat_s;
        return;
    }
    if (rc == UP_ERR_CONFLICT) { /* another live process took the name while our row was gone */
        log_error("workers registry: %s: %s", q->name, err.msg);
        atomic_store(&q->failed, 1);
        q->reg_next = t + REG_BACKOFF_MAX_S;
        return;
    }
    q->reg_failures++;
    double backoff = REG_BACKOFF_MIN_S;
    for (int k = 1; k < q->reg_failures && backoff < REG_BACKOFF_MAX_S; k++)
        backoff *= 2;
    if (backoff > REG_BACKOFF_MAX_S)
        backoff = REG_BACKOFF_MAX_S;
    q->reg_next = t + backoff;
    if (q->reg_failures < q->cfg.db_retries) {
        log_warn("workers registry: %s: heartbeat %d of %d failed (%s): retrying in %.1f s", q->name,
                 q->reg_failures, q->cfg.db_retries, err.msg, backoff);
    } else if (!atomic_load(&q->failed)) {
        log_error("workers registry: %s: the store is lost: %d heartbeats failed in a row (%s)", q->name,
                  q->reg_failures, err.msg);
        atomic_store(&q->failed, 1);
    }
}

int queue_failed(queue_t *q) { return q ? atomic_load(&q->failed) : 0; }

const char *queue_name(const queue_t *q) { return q->name; }

static void *keeper_main(void *arg) {
    queue_t *q = arg;
    double next_beat = mono_s() + q->cfg.heartbeat_s, next_rescue = mono_s() + RESCUE_POLL_S;
    pthread_mutex_lock(&q->mu);
    while (!atomic_load(&q->stopping)) {
        pthread_mutex_unlock(&q->mu);
        double t = mono_s();
        if (t >= next_beat) {
            heartbeat(q);
            next_beat = t + q->cfg.heartbeat_s;
        }
        if (t >= next_rescue) {
            rescue(q);
            next_rescue = t + RESCUE_POLL_S;
        }
        if (q->registered && mono_s() >= q->reg_next)
            registry_beat(q);
        double next = next_beat < next_rescue ? next_beat : next_rescue;
        if (q->registered && q->reg_next < next)
            next = q->reg_next;
        double wait = next - mono_s();
        pthread_mutex_lock(&q->mu);
        if (!atomic_load(&q->stopping) && wait > 0)
            timed_wait(&q->sweep_cond, &q->mu, wait);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* ---- retention ---------------------------------------------------------------- */

/*
 * One sweep: results past retention (their jobs expire) and inputs whose
 * asset is due. *deleted counts the files deleted, *errors those that
 * could not be (tried again next sweep). Another process's sweep of the
 * same store may take some first: each deletion is recorded once.
 */
static void sweep(queue_t *q, int *deleted, int *errors) {
    job_t *jobs = xmalloc(SWEEP_BATCH * sizeof *jobs);
    for (;;) {
        int n = 0;
        up_error_t err;
        if (store_jobs_due(q->st, now_s(), jobs, SWEEP_BATCH, &n, &err))
            break;
        int n_done = 0;
        for (int i = 0; i < n; i++) {
            /* a file we cannot delete stays recorded and is tried again next sweep */
            if (remove_blob(q, jobs[i].result_key)) {
                (*errors)++;
                continue;
            }
            if (store_job_expire(q->st, jobs[i].id, &err) == 0) {
                n_done++;
                events_publish(q->cfg.events, jobs[i].id);
                if (jobs[i].status == JOB_STATUS_COMPLETED)
                    log_info("job %s expired (result not downloaded)", jobs[i].id);
                else
                    log_debug("job %s: files deleted (retention)", jobs[i].id);
            }
        }
        *deleted += n_done;
        if (n < SWEEP_BATCH || n_done == 0 || atomic_load(&q->stopping))
            break;
    }
    free(jobs);
    /* inputs: assets past their time that no live job uses */
    asset_t *assets = xmalloc(SWEEP_BATCH * sizeof *assets);
    for (;;) {
        int n = 0, n_done = 0;
        up_error_t err;
        if (store_assets_due(q->st, now_s(), assets, SWEEP_BATCH, &n, &err))
            break;
        for (int i = 0; i < n; i++) {
            if (remove_blob(q, assets[i].key))
                (*errors)++;
            else if (store_asset_deleted(q->st, assets[i].id, &err) == 0)
                n_done++;
        }
        *deleted += n_done;
        if (n < SWEEP_BATCH || n_done == 0 || atomic_load(&q->stopping))
            break;
    }
    free(assets);
}

void queue_sweep_now(queue_t *q, int *deleted, int *errors) {
    *deleted = *errors = 0;
    if (q)
        sweep(q, deleted, errors);
}

static void *sweeper_main(void *arg) {
    queue_t *q = arg;
    pthread_mutex_lock(&q->mu);
    while (!atomic_load(&q->stopping)) {
        pthread_mutex_unlock(&q->mu);
        int deleted, errors;
        queue_sweep_now(q, &deleted, &errors);
        pthread_mutex_lock(&q->mu);
        if (!atomic_load(&q->stopping))
            timed_wait(&q->sweep_cond, &q->mu, q->cfg.sweep_interval_s);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* ---- the start sweep --------------------------------------------------------------- */

typedef struct key_set {
    char **keys; /* sorted */
    int n, cap;
} key_set_t;

static int add_key(const char *key, void *ctx) {
    key_set_t *ks = ctx;
    if (ks->n == ks->cap) {
        ks->cap = ks->cap ? 2 * ks->cap : 256;
        ks->keys = xrealloc(ks->keys, sizeof *ks->keys * (size_t)ks->cap);
    }
    ks->keys[ks->n++] = xstrdup(key);
    return 0;
}

static int cmp_key(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int key_referenced(const char *key, void *ctx) {
    const key_set_t *ks = ctx;
    return ks->n && bsearch(&key, ks->keys, (size_t)ks->n, sizeof *ks->keys, cmp_key) != NULL;
}

/*
 * Remove what a killed process left in the blob store: its temporaries,
 * and uploads and results no row references. The keys rows hold are read
 * first (see blob.c, "Sweep order"); when they cannot be read, only
 * temporaries go.
 */
static void sweep_blobs(queue_t *q) {
    static const char *const prefixes[] = {"uploads", "results", NULL};
    key_set_t ks = {0};
    up_error_t err;
    int known = store_blobs_referenced(q->st, add_key, &ks, &err) == 0;
    if (ks.n)
        qsort(ks.keys, (size_t)ks.n, sizeof *ks.keys, cmp_key);
    blob_sweep_opts_t o;
    blob_sweep_opts_init(&o);
    o.prefixes = prefixes;
    o.temp_age_s = q->cfg.temp_age_s;
    o.orphan_age_s = q->cfg.orphan_age_s;
    o.referenced = known ? key_referenced : NULL;
    o.ctx = &ks;
    blob_sweep_stats_t stats;
    if (blob_sweep(q->bs, &o, &stats, &err))
        log_warn("job queue: sweeping the blob store: %s", err.msg);
    else if (stats.n_temporaries || stats.n_orphans)
        log_info("job queue: start sweep removed %d temporar%s and %d unreferenced file(s); %d kept",
                 stats.n_temporaries, stats.n_temporaries == 1 ? "y" : "ies", stats.n_orphans, stats.n_kept);
    for (int i = 0; i < ks.n; i++)
        free(ks.keys[i]);
    free(ks.keys);
}

/* ---- start / stop --------------------------------------------------------------- */

int queue_start(store_t *st, const queue_config_t *cfg, queue_t **out, up_error_t *err) {
    assert(st && cfg && out && cfg->blobs && cfg->registry);
    *out = NULL;
    queue_t *q = xcalloc(1, sizeof *q);
    q->st = st;
    q->bs = cfg->blobs;
    q->cfg = *cfg;
    int rc;
    if (q->cfg.n_workers < 0)
        q->cfg.n_workers = 0;
    if (q->cfg.db_retries < 1)
        q->cfg.db_retries = 1;
    if (q->cfg.max_attempts < 1)
        q->cfg.max_attempts = 1;
    if (q->cfg.retention_s < 0)
        q->cfg.retention_s = 0;
    if (q->cfg.sweep_interval_s <= 0)
        q->cfg.sweep_interval_s = 10;
    if (q->cfg.backoff_s < 0)
        q->cfg.backoff_s = 0;
    if (!(q->cfg.heartbeat_s > 0 && q->cfg.heartbeat_s < q->cfg.lease_s)) {
        rc = up_error_set(err, UP_ERR_INVALID, 0,
                          "the heartbeat (%g s) must be over 0 and under the lease (%g s): a lease renewed "
                          "less often than it lasts runs out under a live worker",
                          q->cfg.heartbeat_s, q->cfg.lease_s);
        free(q);
        return rc;
    }
    if (q->cfg.tile_memory == 0)
        q->cfg.tile_memory = upscale_tile_memory_auto(q->cfg.n_workers);
    q->threads_per_worker = q->cfg.threads_per_worker;
    if (q->threads_per_worker <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        q->threads_per_worker = n > q->cfg.n_workers && q->cfg.n_workers ? (int)(n / q->cfg.n_workers) : 1;
    }
    sweep_blobs(q);

    pthread_mutex_init(&q->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q->work_cond, &ca);
    pthread_cond_init(&q->sweep_cond, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&q->stopping, 0);

    q->workers = xcalloc((size_t)(q->cfg.n_workers ? q->cfg.n_workers : 1), sizeof *q->workers);
    atomic_init(&q->failed, 0);
    char host[64] = "", rnd[37];
    if (gethostname(host, sizeof host - 1) != 0 || !host[0])
        snprintf(host, sizeof host, "localhost");
    if (q->cfg.n_workers > 0) {
        /* a process that runs jobs is a row in the registry; one that does not (API only) is none */
        if (q->cfg.name && *q->cfg.name)
            snprintf(q->name, sizeof q->name, "%s", q->cfg.name);
        else
            snprintf(q->name, sizeof q->name, "%s:%ld", host, (long)getpid());
        if ((rc = registry_register(q, err))) {
            up_error_prefix(err, "cannot join the workers registry as %s", q->name);
            goto fail;
        }
        q->registered = 1;
        q->reg_next = mono_s() + q->cfg.heartbeat_s;
    }
    uuid_v4(rnd); /* one per queue: its first 8 hex digits tell this process from an earlier one */
    for (int i = 0; i < q->cfg.n_workers; i++) {
        worker_t *w = &q->workers[i];
        w->q = q;
        w->index = i;
        snprintf(w->id, sizeof w->id, "%s:%ld:%d:%.8s", host, (long)getpid(), i, rnd);
        for (int k = 0; k < 2; k++) {
            w->tasks[k].job = xmalloc(sizeof *w->tasks[k].job);
            atomic_init(&w->tasks[k].abort, 0);
            atomic_init(&w->tasks[k].cancelled, 0);
            atomic_init(&w->tasks[k].superseded, 0);
        }
        pthread_cond_init(&w->fin_cond, NULL);
        w->ready = 1;
    }
    /* jobs whose process died: before the workers start, so they run again at once */
    rescue(q);
    for (int i = 0; i < q->cfg.n_workers; i++) {
        worker_t *w = &q->workers[i];
        if (pthread_create(&w->finisher, NULL, finisher_main, w) != 0) {
            rc = up_error_set(err, UP_ERR_IO, 0, "cannot start the finishing thread of worker %d", i);
            goto fail;
        }
        w->finisher_started = 1;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            rc = up_error_set(err, UP_ERR_IO, 0, "cannot start worker thread %d", i);
            goto fail;
        }
        w->started = 1;
    }
    if (pthread_create(&q->sweeper, NULL, sweeper_main, q) != 0) {
        rc = up_error_set(err, UP_ERR_IO, 0, "cannot start the retention sweeper");
        goto fail;
    }
    q->sweeper_started = 1;
    if (pthread_create(&q->keeper, NULL, keeper_main, q) != 0) {
        rc = up_error_set(err, UP_ERR_IO, 0, "cannot start the lease keeper");
        goto fail;
    }
    q->keeper_started = 1;
    if (q->cfg.n_workers == 0)
        log_info(
            "job queue: no workers (jobs run in other processes), retention %.0f s, lapsed leases rescued",
            q->cfg.retention_s);
    else
        log_info("job queue: %s: %d worker(s) x %d threads (%s), models %s, tiles within %.0f MiB each, "
                 "retention %.0f s, lease %g s renewed every %g s",
                 q->name, q->cfg.n_workers, q->threads_per_worker, nn_backend_name(q->cfg.backend),
                 q->cfg.models && *q->cfg.models ? q->cfg.models : "all",
                 (double)q->cfg.tile_memory / (1 << 20), q->cfg.retention_s, q->cfg.lease_s,
                 q->cfg.heartbeat_s);
    *out = q;
    return UP_OK;
fail:
    log_error("%s", err ? err->msg : "cannot start the job queue");
    queue_stop(q);
    return rc;
}

void queue_notify(queue_t *q) {
    if (!q)
        return;
    pthread_mutex_lock(&q->mu);
    q->seq++;
    pthread_cond_signal(&q->work_cond);
    pthread_mutex_unlock(&q->mu);
}

void queue_stop(queue_t *q) {
    if (!q)
        return;
    if (q->registered && !q->keeper_started) /* a failed start: nothing ran */
        store_worker_remove(q->st, &q->self, NULL);
    if (q->registered && q->keeper_started) { /* draining: no claim from here on */
        char jobs[STORE_WORKER_JOBS_MAX];
        running_jobs(q, jobs, sizeof jobs);
        store_worker_heartbeat(q->st, &q->self, jobs, "draining", NULL);
    }
    pthread_mutex_lock(&q->mu);
    atomic_store(&q->stopping, 1);
    /* running jobs stop between two layers, not after their tile (seconds), and are requeued;
     * a job being finished stops before its encode, or completes when the encode is under way */
    for (int i = 0; i < q->cfg.n_workers * 2; i++)
        atomic_store(&q->workers[i / 2].tasks[i % 2].abort, 1);
    pthread_cond_broadcast(&q->work_cond);
    pthread_cond_broadcast(&q->sweep_cond);
    pthread_mutex_unlock(&q->mu);
    for (int i = 0; i < q->cfg.n_workers; i++) {
        worker_t *w = &q->workers[i];
        if (w->started)
            pthread_join(w->thread, NULL);
        if (!w->ready)
            continue;
        pthread_mutex_lock(&q->mu); /* no more hand-overs: the finisher ends the last one and leaves */
        w->net_done = 1;
        pthread_cond_broadcast(&w->fin_cond);
        pthread_mutex_unlock(&q->mu);
        if (w->finisher_started)
            pthread_join(w->finisher, NULL);
        for (int k = 0; k < w->n_models; k++)
            upscaler_free(w->models[k].up);
        free(w->models);
        free(w->tasks[0].job);
        free(w->tasks[1].job);
        pthread_cond_destroy(&w->fin_cond);
    }
    if (q->sweeper_started)
        pthread_join(q->sweeper, NULL);
    if (q->keeper_started)
        pthread_join(q->keeper, NULL);
    if (q->registered && q->keeper_started) {
        up_error_t err;
        if (store_worker_remove(q->st, &q->self, &err) == 0)
            log_info("workers registry: %s left", q->name);
    }
    free(q->workers);
    pthread_cond_destroy(&q->work_cond);
    pthread_cond_destroy(&q->sweep_cond);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

int queue_job_cancel(queue_t *q, const char *id, job_status_t *was, up_error_t *err) {
    assert(q && id);
    job_status_t w = JOB_STATUS_QUEUED;
    int rc = store_job_cancel(q->st, id, &w, err);
    if (was)
        *was = w;
    if (rc == 0 && w == JOB_STATUS_QUEUED) {
        /* it never ran: its input goes now (a worker that is stopping it deletes it otherwise) */
        job_t *j = xmalloc(sizeof *j);
        if (store_job_get(q->st, id, j, NULL) == 0)
            remove_input(q, j->asset_id);
        free(j);
        log_info("job %s cancelled while queued", id);
        events_publish(q->cfg.events, id);
        events_publish(q->cfg.events, EVENTS_QUEUE_MOVED);
    } else if (rc == 0) {
        /* run by a worker of ours: it stops between two layers; else (another process
         * runs it, or it is between claim and start) the next poll or start sees it */
        int here = 0;
        pthread_mutex_lock(&q->mu);
        for (int i = 0; i < q->cfg.n_workers * 2 && !here; i++) {
            task_t *t = &q->workers[i / 2].tasks[i % 2];
            if (strcmp(t->running, id) == 0) {
                atomic_store(&t->cancelled, 1);
                atomic_store(&t->abort, 1);
                here = 1;
            }
        }
        pthread_mutex_unlock(&q->mu);
        log_info("job %s: cancel requested, %s", id, here ? "stopping now" : "stopping at the next tile");
    }
    return rc;
}

int queue_job_downloaded(queue_t *q, const char *id, up_error_t *err) {
    assert(q && id);
    job_t *j = xmalloc(sizeof *j);
    int rc = store_job_get(q->st, id, j, err);
    if (rc)
        goto out;
    if (j->status != JOB_STATUS_COMPLETED) {
        rc = up_error_set(err, UP_ERR_INVALID, 0, "job %s is %s, not completed", id,
                          job_status_name(j->status));
        goto out;
    }
    /* upscale-service guide: the file is deleted right after a complete download.
     * Delete first, record second: a crash in between leaves a record whose file
     * is gone (the sweeper expires it), never a file no record points at. */
    if (remove_blob(q, j->result_key)) {
        rc = up_error_set(err, UP_ERR_IO, 0, "cannot delete the result of job %s", id);
        goto out;
    }
    if ((rc = store_job_downloaded(q->st, id, err)) == 0)
        log_info("job %s downloaded, result deleted", id);
out:
    free(j);
    return rc;
}
