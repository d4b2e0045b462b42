/*
 * queue_test.c - the job engine (src/queue/queue.c) with the real fast
 * model (realesr-animevideov3, x2) on small real images.
 *
 * Session 1: jobs complete (result decoded at the right size, input
 * deleted, result fields recorded), download deletes the result, a text
 * file fails with a clear error, an unknown model fails, a queued job is
 * cancelled at once, a processing job stops at the next tile. Session 2
 * (retention 1 s, sweep 0.2 s): an undownloaded result expires and its file
 * goes; a job left processing by a dead process with its attempts used is
 * failed at start. Session 3: stopping while a job processes puts it back in
 * the queue with its input; a new store and queue on the same folder
 * complete it, after the start sweep removed a dead writer's temporaries
 * and an old upload no row references (a young one and the queued job's
 * own, however old, are kept). Rows hold keys, never paths. Session 4 (lease 1.5 s, heartbeat 0.2 s): a job
 * another process claimed is left alone while its lease lasts, then rescued and run here (attempt 2, its own
 * result name; the dead attempt's file removed); a worker whose claim another process took stops within a
 * heartbeat and writes nothing: the record, the input and the other
 * claim's result name are left as they were. Bad lease settings are
 * refused. Session 5: the workers registry (session_registry). Session 6: the finishing stage
 * overlaps the next job's network; cancel and fencing during it (session_overlap).
 */
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "blob/blob.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/uuid.h"
#include "image/image.h"
#include "queue/queue.h"
#include "store/store.h"
#include "test.h"

static upscale_registry_t *reg;
static const char *data;
static char root[256];
static double budget = 60; /* seconds any single wait may take */

#define MODEL "realesr-animevideov3"

static int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

static int copy_file(const char *src, const char *dst) {
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    char buf[65536];
    size_t n;
    int ok = in && out;
    while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0)
        ok = fwrite(buf, 1, n, out) == n;
    if (in)
        fclose(in);
    if (out && fclose(out))
        ok = 0;
    return ok ? 0 : -1;
}

/* Set path's modification time to now - age seconds. */
static void age_file(const char *path, double age) {
    struct timeval tv[2];
    tv[0].tv_sec = tv[1].tv_sec = (time_t)(now_s() - age);
    tv[0].tv_usec = tv[1].tv_usec = 0;
    utimes(path, tv);
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* The file of blob key in the data folder dir (one of a few rotating buffers). */
static const char *fpath(const char *dir, const char *key) {
    static char bufs[4][1400];
    static int at;
    char *b = bufs[at++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s", dir, key);
    return b;
}

/* The blob store of a session's data folder dir (made when missing). */
static blob_store_t *open_blobs(const char *dir) {
    blob_store_t *bs = NULL;
    up_error_t err;
    CHECKF(blob_open_local(dir, &bs, &err) == 0, "%s", err.msg);
    return bs;
}

/* Copy src (relative to the shared data) into dir/uploads/ and queue a job for it, by key. */
static void submit(store_t *st, queue_t *q, const char *dir, char id[40], const char *src, const char *model,
                   int tile, const char *format) {
    job_t j;
    memset(&j, 0, sizeof j);
    uuid_v4(j.id);
    memcpy(id, j.id, 37);
    const char *ext = strrchr(src, '.');
    snprintf(j.input_key, sizeof j.input_key, "uploads/%s%s", j.id, ext ? ext : "");
    char path[2048];
    if (src[0] == '/')
        snprintf(path, sizeof path, "%s", src);
    else
        snprintf(path, sizeof path, "%s/%s", data, src);
    CHECKF(copy_file(path, fpath(dir, j.input_key)) == 0, "copy %s", path);
    snprintf(j.model, sizeof j.model, "%s", model);
    j.scale = 2;
    j.tile = tile;
    snprintf(j.format, sizeof j.format, "%s", format);
    snprintf(j.input_name, sizeof j.input_name, "%s", src);
    up_error_t err;
    CHECKF(store_job_insert(st, &j, &err) == 0, "%s", err.msg);
    queue_notify(q);
}

/* Poll until the job's status is want (or a finished status, when want < 0). */
static int wait_for(store_t *st, const char *id, int want, job_t *out) {
    double t0 = mono_s();
    up_error_t err;
    for (;;) {
        if (store_job_get(st, id, out, &err) != 0)
            return -1;
        int s = (int)out->status;
        if (s == want || (want < 0 && s >= JOB_STATUS_COMPLETED))
            return s;
        if (mono_s() - t0 > budget) {
            fprintf(stderr, "job %s still %s after %.0f s (waiting for %d)\n", id,
                    job_status_name(out->status), budget, want);
            return s;
        }
        sleep_s(0.01);
    }
}

static void config(queue_config_t *cfg, blob_store_t *bs) {
    queue_config_init(cfg);
    cfg->blobs = bs;
    cfg->registry = reg;
    cfg->threads_per_worker = 1; /* no OpenMP barriers to lose on a busy machine */
}

static void session_basic(void) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/basic", root);
    up_error_t err;
    store_t *st = NULL;
    queue_t *q = NULL;
    CHECKF(store_open(dir, &st, &err) == 0, "%s", err.msg);
    blob_store_t *bs = open_blobs(dir);
    queue_config_t cfg;
    config(&cfg, bs);
    cfg.n_workers = 2;
    CHECKF(st && queue_start(st, &cfg, &q, &err) == 0, "%s", err.msg);
    if (!q) {
        store_close(st);
        blob_close(bs);
        return;
    }
    const char *up = dir;
    CHECK(file_exists(fpath(dir, "uploads")) && file_exists(fpath(dir, "results")));

    /* two jobs complete: the input's format kept, and webp asked for */
    char a[40], b[40], bad[40], nomodel[40];
    submit(st, q, up, a, "ref/in/chelsea_lr64.png", MODEL, 0, "");
    submit(st, q, up, b, "ref/in/astronaut_lr64.png", MODEL, 32, "webp");
    char text[300];
    snprintf(text, sizeof text, "%s/not-an-image.png", root);
    FILE *f = fopen(text, "w");
    if (f) {
        fputs("hello, this is not an image\n", f);
        fclose(f);
    }
    submit(st, q, up, bad, text, MODEL, 0, "");
    submit(st, q, up, nomodel, "ref/in/chelsea_lr64.png", "no-such-model", 0, "");

    job_t j;
    CHECK(wait_for(st, a, JOB_STATUS_COMPLETED, &j) == JOB_STATUS_COMPLETED);
    char expect[1200];
    snprintf(expect, sizeof expect, "results/%s-a1.png", a); /* a key, one name per attempt */
    CHECKF(strcmp(j.result_key, expect) == 0, "%s", j.result_key);
    CHECK(strcmp(j.result_format, "png") == 0 && j.output_width == 128 && j.output_height == 128);
    CHECK(j.progress == 100 && j.attempts == 1 && j.completed_at >= j.started_at);
    CHECK(j.expires_at >= j.completed_at + 899);
    struct stat sb;
    CHECK(stat(fpath(dir, j.result_key), &sb) == 0 && sb.st_size == j.result_bytes && j.result_bytes > 0);
    up_image_t *img = NULL;
    CHECKF(image_load_file(fpath(dir, j.result_key), NULL, &img, &err) == 0, "%s", err.msg);
    CHECK(img && img->width == 128 && img->height == 128 && strcmp(img->format, "png") == 0);
    image_free(img);
    /* the input goes when the job ends (the record is cleared just after the file) */
    double t0 = mono_s();
    while (j.input_key[0] && mono_s() - t0 < 5) {
        sleep_s(0.01);
        store_job_get(st, a, &j, &err);
    }
    CHECK(j.input_key[0] == '\0');
    char in_a[1200];
    snprintf(in_a, sizeof in_a, "%s/%s.png", up, a);
    CHECK(!file_exists(in_a));

    CHECK(wait_for(st, b, JOB_STATUS_COMPLETED, &j) == JOB_STATUS_COMPLETED);
    CHECK(strcmp(j.result_format, "webp") == 0 && strstr(j.result_key, ".webp"));
    CHECK(image_load_file(fpath(dir, j.result_key), NULL, &img, &err) == 0 && img && img->width == 128 &&
          strcmp(img->format, "webp") == 0);
    image_free(img);

    /* download: the file goes, the record answers expired; a second one is refused */
    char result_a[1024];
    store_job_get(st, a, &j, &err);
    snprintf(result_a, sizeof result_a, "%s", fpath(dir, j.result_key));
    CHECKF(queue_job_downloaded(q, a, &err) == 0, "%s", err.msg);
    CHECK(!file_exists(result_a));
    CHECK(store_job_get(st, a, &j, &err) == 0 && j.status == JOB_STATUS_EXPIRED);
    CHECK(queue_job_downloaded(q, a, &err) == UP_ERR_INVALID);
    CHECK(queue_job_downloaded(q, "nope", &err) == UP_ERR_NOT_FOUND);

    /* not an image, unknown model: failed with a clear message, input deleted */
    CHECK(wait_for(st, bad, JOB_STATUS_FAILED, &j) == JOB_STATUS_FAILED);
    CHECKF(strstr(j.error, "input") && strstr(j.error, "image"), "%s", j.error);
    CHECK(j.result_key[0] == '\0');
    CHECK(wait_for(st, nomodel, JOB_STATUS_FAILED, &j) == JOB_STATUS_FAILED);
    CHECKF(strstr(j.error, "no-such-model") || strstr(j.error, "model"), "%s", j.error);
    t0 = mono_s();
    while (j.input_key[0] && mono_s() - t0 < 5) {
        sleep_s(0.01);
        store_job_get(st, nomodel, &j, &err);
    }
    CHECK(j.input_key[0] == '\0');

    /* cancel: two slow jobs keep both workers busy, a third waits in the queue */
    char s1[40], s2[40], s3[40];
    submit(st, q, up, s1, "images/astronaut.png", MODEL, 16, "");
    submit(st, q, up, s2, "images/camera.png", MODEL, 16, "");
    CHECK(wait_for(st, s1, JOB_STATUS_PROCESSING, &j) == JOB_STATUS_PROCESSING);
    CHECK(wait_for(st, s2, JOB_STATUS_PROCESSING, &j) == JOB_STATUS_PROCESSING);
    submit(st, q, up, s3, "ref/in/chelsea_lr64.png", MODEL, 0, "");
    job_status_t was = JOB_STATUS_EXPIRED;
    char in_s3[1200];
    snprintf(in_s3, sizeof in_s3, "%s/uploads/%s.png", dir, s3);
    CHECKF(queue_job_cancel(q, s3, &was, &err) == 0 && was == JOB_STATUS_QUEUED, "%s", err.msg);
    CHECK(store_job_get(st, s3, &j, &err) == 0 && j.status == JOB_STATUS_CANCELLED);
    CHECK(j.input_key[0] == '\0' && !file_exists(in_s3));

    CHECKF(queue_job_cancel(q, s1, &was, &err) == 0 && was == JOB_STATUS_PROCESSING, "%s", err.msg);
    CHECK(store_job_cancel(st, s2, &was, &err) == 0 && was == JOB_STATUS_PROCESSING);
    CHECK(wait_for(st, s1, JOB_STATUS_CANCELLED, &j) == JOB_STATUS_CANCELLED);
    CHECK(j.result_key[0] == '\0' && j.progress < 100);
    CHECK(wait_for(st, s2, JOB_STATUS_CANCELLED, &j) == JOB_STATUS_CANCELLED);
    CHECK(queue_job_cancel(q, s1, &was, &err) == UP_ERR_INVALID && was == JOB_STATUS_CANCELLED);
    CHECK(queue_job_cancel(q, b, &was, &err) == UP_ERR_INVALID && was == JOB_STATUS_COMPLETED);
    CHECK(queue_job_cancel(q, "nope", &was, &err) == UP_ERR_NOT_FOUND);

    queue_stop(q);
    /* every input is gone (the cancelled jobs' too) and no temporary is left */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A %s/uploads)\" && test -z \"$(ls %s/results | grep tmp)\"",
             dir, dir);
    CHECK(system(cmd) == 0);
    long long counts[JOB_STATUS_COUNT];
    CHECK(store_job_counts(st, counts, &err) == 0);
    CHECK(counts[JOB_STATUS_QUEUED] == 0 && counts[JOB_STATUS_PROCESSING] == 0);
    CHECK(counts[JOB_STATUS_COMPLETED] == 1 && counts[JOB_STATUS_EXPIRED] == 1);
    CHECK(counts[JOB_STATUS_FAILED] == 2 && counts[JOB_STATUS_CANCELLED] == 3);
    store_close(st);
    blob_close(bs);
}

static void session_retention(void) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/retention", root);
    up_error_t err;
    store_t *st = NULL;
    queue_t *q = NULL;
    CHECKF(store_open(dir, &st, &err) == 0, "%s", err.msg);
    blob_store_t *bs = open_blobs(dir);
    if (!st) {
        blob_close(bs);
        return;
    }

    /* a job a dead process left processing after its third attempt */
    char uploads[400], dead_input[600];
    snprintf(uploads, sizeof uploads, "%s/uploads", dir);
    mkdir(uploads, 0777);
    job_t j;
    memset(&j, 0, sizeof j);
    uuid_v4(j.id);
    snprintf(j.model, sizeof j.model, MODEL);
    j.scale = 2;
    snprintf(dead_input, sizeof dead_input, "%s/%s.png", uploads, j.id);
    snprintf(j.input_key, sizeof j.input_key, "uploads/%s.png", j.id);
    char src[2048];
    snprintf(src, sizeof src, "%s/ref/in/chelsea_lr64.png", data);
    CHECK(copy_file(src, dead_input) == 0);
    CHECK(store_job_insert(st, &j, &err) == 0);
    job_t c;
    for (int i = 0; i < 3; i++) {
        CHECK(store_job_claim(st, "dead-host:1:0:0000dead", 0.05, NULL, &c, &err) == 0 &&
              strcmp(c.id, j.id) == 0);
        sleep_s(0.1); /* the dead process's lease runs out */
        int n = 0;
        if (i < 2)
            CHECK(store_jobs_rescue(st, 100, 0, 1, &c, 1, &n, &err) == 0 && n == 1);
    }

    queue_config_t cfg;
    config(&cfg, bs);
    cfg.retention_s = 1;
    cfg.sweep_interval_s = 0.2;
    CHECKF(queue_start(st, &cfg, &q, &err) == 0, "%s", err.msg);
    if (!q) {
        store_close(st);
        blob_close(bs);
        return;
    }
    CHECK(store_job_get(st, j.id, &c, &err) == 0 && c.status == JOB_STATUS_FAILED);
    CHECKF(strstr(c.error, "3 times"), "%s", c.error);

    char a[40];
    submit(st, q, dir, a, "ref/in/chelsea_lr64.png", MODEL, 0, "jpg");
    job_t done;
    CHECK(wait_for(st, a, JOB_STATUS_COMPLETED, &done) == JOB_STATUS_COMPLETED ||
          done.status == JOB_STATUS_EXPIRED);
    CHECK(strstr(done.result_key, ".jpg") || done.status == JOB_STATUS_EXPIRED);
    CHECK(wait_for(st, a, JOB_STATUS_EXPIRED, &c) == JOB_STATUS_EXPIRED);
    CHECK(c.result_key[0] == '\0' && c.input_key[0] == '\0');
    if (done.result_key[0])
        CHECK(!file_exists(fpath(dir, done.result_key)));
    /* the dead job's input goes too; its record still says failed */
    double t0 = mono_s();
    while (file_exists(dead_input) && mono_s() - t0 < 10)
        sleep_s(0.05);
    CHECK(!file_exists(dead_input));
    CHECK(store_job_get(st, j.id, &c, &err) == 0 && c.status == JOB_STATUS_FAILED);
    CHECK(queue_job_downloaded(q, a, &err) == UP_ERR_INVALID);
    queue_stop(q);
    store_close(st);
    blob_close(bs);
}

static void session_restart(void) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/restart", root);
    up_error_t err;
    store_t *st = NULL;
    queue_t *q = NULL;
    CHECKF(store_open(dir, &st, &err) == 0, "%s", err.msg);
    blob_store_t *bs = open_blobs(dir);
    queue_config_t cfg;
    config(&cfg, bs);
    CHECKF(st && queue_start(st, &cfg, &q, &err) == 0, "%s", err.msg);
    if (!q) {
        store_close(st);
        blob_close(bs);
        return;
    }
    char a[40], in_a[1200];
    submit(st, q, dir, a, "ref/in/astronaut_lr128.png", MODEL, 16, "");
    snprintf(in_a, sizeof in_a, "uploads/%s.png", a);
    job_t j;
    CHECK(wait_for(st, a, JOB_STATUS_PROCESSING, &j) == JOB_STATUS_PROCESSING);
    double t0 = mono_s();
    queue_stop(q);
    double stop_s = mono_s() - t0;
    CHECKF(stop_s < 5, "stop took %.2f s", stop_s);
    CHECK(store_job_get(st, a, &j, &err) == 0);
    CHECKF(j.status == JOB_STATUS_QUEUED, "%s", job_status_name(j.status));
    CHECK(j.attempts == 0 && j.progress == 0 && strcmp(j.input_key, in_a) == 0);
    CHECK(file_exists(fpath(dir, in_a)));
    store_close(st);

    /* a partial result from a writer that died, and one a live process is writing */
    char dead_tmp[600], live_tmp[600];
    snprintf(dead_tmp, sizeof dead_tmp, "%s/results/x.png.tmp-999999999-0", dir);
    snprintf(live_tmp, sizeof live_tmp, "%s/results/y.png.tmp-%d-0", dir, (int)getpid());
    FILE *f1 = fopen(dead_tmp, "w"), *f2 = fopen(live_tmp, "w");
    CHECK(f1 && f2);
    if (f1)
        fclose(f1);
    if (f2)
        fclose(f2);
    /* what a killed server left in uploads/: an upload no row records (an hour old), one put a moment
     * ago whose row may be on its way (another live process), and a partial upload of a dead pid */
    char orphan_up[600], young_up[600], partial_up[600];
    snprintf(orphan_up, sizeof orphan_up, "%s/uploads/0d1e2f30-0000-4000-8000-000000000001.png", dir);
    snprintf(young_up, sizeof young_up, "%s/uploads/0d1e2f30-0000-4000-8000-000000000002.png", dir);
    snprintf(partial_up, sizeof partial_up, "%s/uploads/.upload-999999999-AbCdEf", dir);
    const char *left[] = {orphan_up, young_up, partial_up};
    for (int i = 0; i < 3; i++) {
        FILE *f = fopen(left[i], "w");
        CHECK(f != NULL);
        if (f)
            fclose(f);
    }
    age_file(orphan_up, 3600);
    age_file(fpath(dir, in_a), 7200); /* referenced: kept however old */

    /* a new process: the job runs again and completes */
    st = NULL;
    q = NULL;
    CHECKF(store_open(dir, &st, &err) == 0, "%s", err.msg);
    CHECKF(st && queue_start(st, &cfg, &q, &err) == 0, "%s", err.msg);
    CHECK(!file_exists(dead_tmp) && file_exists(live_tmp));
    CHECK(!file_exists(orphan_up) && file_exists(young_up) && !file_exists(partial_up));
    CHECK(file_exists(fpath(dir, in_a)));
    unlink(live_tmp);
    unlink(young_up);
    if (q) {
        CHECK(wait_for(st, a, JOB_STATUS_COMPLETED, &j) == JOB_STATUS_COMPLETED);
        CHECK(j.output_width == 256 && j.output_height == 256 && j.attempts == 1);
        CHECK(file_exists(fpath(dir, j.result_key)));
    }
    queue_stop(q);
    store_close(st);
    blob_close(bs);
}

/* Run sql on dir/upres.db with a connection of its own (another process's write); 0 on success. */
static int raw_exec(const char *dir, const char *sql) {
    char path[400];
    snprintf(path, sizeof path, "%s/upres.db", dir);
    sqlite3 *db = NULL;
    int rc = sqlite3_open(path, &db);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(db, 10000);
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    }
    if (rc != SQLITE_OK)
        fprintf(stderr, "%s: %s\n", path, sqlite3_errmsg(db));
    sqlite3_close(db);
    return rc;
}

static void session_leases(void) {
    char dir[300], uploads[400];
    snprintf(dir, sizeof dir, "%s/leases", root);
    snprintf(uploads, sizeof uploads, "%s/uploads", dir);
    up_error_t err;
    store_t *st = NULL;
    queue_t *q = NULL;
    CHECKF(store_open(dir, &st, &err) == 0, "%s", err.msg);
    blob_store_t *bs = open_blobs(dir);
    if (!st) {
        blob_close(bs);
        return;
    }
    queue_config_t cfg;
    config(&cfg, bs);
    cfg.heartbeat_s = 2;
    cfg.lease_s = 2;
    CHECK(queue_start(st, &cfg, &q, &err) == UP_ERR_INVALID && q == NULL);
    CHECKF(strstr(err.msg, "heartbeat") && strstr(err.msg, "lease"), "%s", err.msg);
    cfg.heartbeat_s = 0;
    CHECK(queue_start(st, &cfg, &q, &err) == UP_ERR_INVALID && q == NULL);
    cfg.lease_s = 1.5;
    cfg.heartbeat_s = 0.2;
    cfg.backoff_s = 0.2;

    /* another process claimed a job (lease 1 s) and died; its attempt left a result file */
    mkdir(uploads, 0777);
    char results[400];
    snprintf(results, sizeof results, "%s/results", dir);
    mkdir(results, 0777);
    char a[40];
    submit(st, NULL, dir, a, "ref/in/chelsea_lr64.png", MODEL, 0, "");
    const char *dead = "dead-host:1:0:0000dead";
    job_t j;
    CHECK(store_job_claim(st, dead, 1.0, NULL, &j, &err) == 0 && strcmp(j.id, a) == 0);
    double lapse = j.lease_until;
    char orphan[600];
    snprintf(orphan, sizeof orphan, "%s/%s-a1.png", results, a);
    FILE *f = fopen(orphan, "w");
    if (f)
        fclose(f);
    CHECKF(queue_start(st, &cfg, &q, &err) == 0, "%s", err.msg);
    if (!q) {
        store_close(st);
        blob_close(bs);
        return;
    }
    /* not ours while its lease lasts */
    CHECK(store_job_get(st, a, &j, &err) == 0 && j.status == JOB_STATUS_CLAIMED &&
          strcmp(j.worker, dead) == 0);
    CHECK(wait_for(st, a, JOB_STATUS_COMPLETED, &j) == JOB_STATUS_COMPLETED);
    fprintf(stderr, "leases: rescued and completed %.2f s after the lease ran out\n", j.completed_at - lapse);
    CHECKF(j.attempts == 2 && j.started_at >= lapse, "attempt %d", j.attempts);
    char expect[600];
    snprintf(expect, sizeof expect, "%s/%s-a2.png", results, a);
    CHECKF(strcmp(fpath(dir, j.result_key), expect) == 0 && file_exists(expect), "%s", j.result_key);
    CHECK(!file_exists(orphan));
    CHECK(strncmp(j.worker, dead, 10) != 0 && j.worker[0]);

    /* a worker whose claim another process took (its lease lapsed during a freeze) stops, writing nothing */
    char b[40];
    submit(st, q, dir, b, "images/astronaut.png", MODEL, 16, "");
    CHECK(wait_for(st, b, JOB_STATUS_PROCESSING, &j) == JOB_STATUS_PROCESSING);
    char sql[400];
    snprintf(
        sql, sizeof sql,
        "UPDATE jobs SET worker = 'other-host:2:0:00000002', attempts = attempts + 1, lease_until = %.3f,"
        " progress = 7 WHERE id = '%s'",
        now_s() + 600, b);
    CHECK(raw_exec(dir, sql) == 0);
    double t0 = mono_s();
    /* the worker is free again once it left the job: a new job is claimed and completes */
    char c[40];
    submit(st, q, dir, c, "ref/in/chelsea_lr64.png", MODEL, 0, "");
    CHECK(wait_for(st, c, JOB_STATUS_COMPLETED, &j) == JOB_STATUS_COMPLETED);
    fprintf(stderr, "leases: the superseded worker was free again in %.2f s\n", mono_s() - t0);
    CHECK(store_job_get(st, b, &j, &err) == 0 && j.status == JOB_STATUS_PROCESSING && j.progress == 7);
    CHECK(strcmp(j.worker, "other-host:2:0:00000002") == 0 && j.attempts == 2 && j.input_key[0]);
    CHECK(file_exists(fpath(dir, j.input_key)));
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls %s | grep %s)\"", results, b);
    CHECK(system(cmd) == 0);
    queue_stop(q);
    CHECK(store_job_get(st, b, &j, &err) == 0 && j.status == JOB_STATUS_PROCESSING); /* not requeued either */
    store_close(st);
    blob_close(bs);
}

/* The registry row called name, into *out when found (1), else 0. */
static int registry_row(store_t *st, const char *name, store_worker_t *out) {
    store_worker_t *v = NULL;
    int n = 0, found = 0;
    up_error_t err;
    if (store_workers_list(st, 0, &v, &n, &err) == 0)
        for (int i = 0; i < n; i++)
            if (!strcmp(v[i].name, name)) {
                *out = v[i];
                found = 1;
            }
    free(v);
    return found;
}

static int registry_size(store_t *st) {
    store_worker_t *v = NULL;
    int n = -1;
    up_error_t err;
    if (store_workers_list(st, 1, &v, &n, &err))
        n = -1;
    free(v);
    return n;
}

/*
 * Session 5 (lease 1.5 s, heartbeat 0.2 s): a queue without workers makes
 * no registry row and claims nothing, but rescues a lapsed lease; a queue
 * serving another model is a row with its models and slots and leaves the
 * job alone; a second live queue of its name is refused; a queue serving
 * the model runs the job, its row names the job it runs, and the row goes
 * at queue_stop (the running job requeued); a row removed
 * under a live queue is made again by its keeper.
 */
static void session_registry(void) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/registry", root);
    up_error_t err;
    store_t *st = NULL;
    CHECKF(store_open(dir, &st, &err) == 0, "%s", err.msg);
    blob_store_t *bs = open_blobs(dir);
    if (!st) {
        blob_close(bs);
        return;
    }
    queue_config_t cfg;
    config(&cfg, bs);
    cfg.lease_s = 1.5;
    cfg.heartbeat_s = 0.2;
    cfg.backoff_s = 0.1;

    /* API only: no row, no claim, and still the rescue of a dead process's job */
    char a[40];
    submit(st, NULL, dir, a, "ref/in/chelsea_lr64.png", MODEL, 0, "");
    job_t j;
    CHECK(store_job_claim(st, "dead-host:1:0:0000dead", 0.3, NULL, &j, &err) == 0 && strcmp(j.id, a) == 0);
    queue_t *api = NULL;
    cfg.n_workers = 0;
    CHECKF(queue_start(st, &cfg, &api, &err) == 0, "%s", err.msg);
    CHECK(registry_size(st) == 0);
    CHECK(api && queue_name(api)[0] == '\0');
    double t0 = mono_s();
    while (mono_s() - t0 < budget && store_job_get(st, a, &j, &err) == 0 && j.status != JOB_STATUS_QUEUED)
        sleep_s(0.02);
    CHECKF(j.status == JOB_STATUS_QUEUED && j.attempts == 1, "%s attempt %d", job_status_name(j.status),
           j.attempts);
    sleep_s(0.5); /* past the backoff: claimable, and still nobody takes it here */
    CHECK(store_job_get(st, a, &j, &err) == 0 && j.status == JOB_STATUS_QUEUED && j.attempts == 1);

    /* a queue of another model: a row with its models and slots, and the job left alone */
    queue_t *other = NULL;
    cfg.n_workers = 2;
    cfg.models = "realesrgan-x4plus";
    cfg.name = "q-other";
    CHECKF(queue_start(st, &cfg, &other, &err) == 0, "%s", err.msg);
    store_worker_t w;
    CHECK(registry_row(st, "q-other", &w) && w.slots == 2 && !strcmp(w.models, "realesrgan-x4plus") &&
          w.pid == (int)getpid() && !strcmp(w.state, "running") && w.lease_s == 1.5);
    queue_notify(other);
    sleep_s(0.5);
    CHECK(store_job_get(st, a, &j, &err) == 0 && j.status == JOB_STATUS_QUEUED && j.attempts == 1);

    /* the name is taken while q-other lives */
    queue_t *dup = NULL;
    cfg.models = MODEL;
    CHECK(queue_start(st, &cfg, &dup, &err) == UP_ERR_CONFLICT && dup == NULL);
    CHECKF(strstr(err.msg, "q-other"), "%s", err.msg);

    /* a queue of the model runs it; its row goes when it stops */
    queue_t *mine = NULL;
    cfg.n_workers = 1;
    cfg.name = "q-mine";
    CHECKF(queue_start(st, &cfg, &mine, &err) == 0, "%s", err.msg);
    CHECK(registry_row(st, "q-mine", &w) && w.slots == 1 && !strcmp(w.models, MODEL));
    CHECK(wait_for(st, a, JOB_STATUS_COMPLETED, &j) == JOB_STATUS_COMPLETED && j.attempts == 2);
    /* the row names the job it runs (a slow one: small tiles), within a heartbeat or so */
    char b[40];
    submit(st, mine, dir, b, "images/astronaut.png", MODEL, 16, "");
    t0 = mono_s();
    while (mono_s() - t0 < budget && !(registry_row(st, "q-mine", &w) && !strcmp(w.jobs, b)))
        sleep_s(0.02);
    CHECKF(!strcmp(w.jobs, b), "row jobs '%s', running %s", w.jobs, b);
    queue_stop(mine); /* b goes back to the queue */
    CHECK(store_job_get(st, b, &j, &err) == 0 && j.status == JOB_STATUS_QUEUED);
    CHECK(!registry_row(st, "q-mine", &w) && registry_size(st) == 1);

    /* an operator removed the live row: the keeper makes it again within a heartbeat or so */
    CHECK(registry_row(st, "q-other", &w) && store_worker_remove(st, &w, &err) == 0);
    t0 = mono_s();
    while (mono_s() - t0 < budget && !registry_row(st, "q-other", &w))
        sleep_s(0.02);
    CHECKF(registry_row(st, "q-other", &w) && mono_s() - t0 < 2, "%.2f s", mono_s() - t0);
    CHECK(!queue_failed(other) && !queue_failed(api));
    queue_stop(other);
    queue_stop(api);
    CHECK(registry_size(st) == 0);
    store_close(st);
    blob_close(bs);
}

/* ---- session 6: the finishing stage ------------------------------------------------ */

/* The queue's finish_hook: holds the job named in hold until release is set. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    char hold[40]; /* job id to hold, "" = none */
    int held;      /* the held job is in the hook now */
    int release;   /* let it go */
} hook = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, "", 0, 0};

static void finish_hook(void *ctx, const char *id) {
    (void)ctx;
    pthread_mutex_lock(&hook.mu);
    if (strcmp(hook.hold, id) == 0) {
        hook.held = 1;
        pthread_cond_broadcast(&hook.cond);
        while (!hook.release)
            pthread_cond_wait(&hook.cond, &hook.mu);
        hook.held = 0;
        hook.hold[0] = '\0';
        pthread_cond_broadcast(&hook.cond);
    }
    pthread_mutex_unlock(&hook.mu);
}

/* Hold job id in the hook from now on (its result encoded, before it is put). */
static void hook_hold(const char *id) {
    pthread_mutex_lock(&hook.mu);
    snprintf(hook.hold, sizeof hook.hold, "%s", id);
    hook.release = 0;
    pthread_mutex_unlock(&hook.mu);
}

/* Wait (bounded) until the held job is in the hook: 1 when it is. */
static int hook_wait_held(void) {
    double t0 = mono_s();
    pthread_mutex_lock(&hook.mu);
    while (!hook.held && mono_s() - t0 < budget) {
        pthread_mutex_unlock(&hook.mu);
        sleep_s(0.01);
        pthread_mutex_lock(&hook.mu);
    }
    int held = hook.held;
    pthread_mutex_unlock(&hook.mu);
    return held;
}

/* Let the held job go and wait until it has left the hook. */
static void hook_release(void) {
    pthread_mutex_lock(&hook.mu);
    hook.release = 1;
    pthread_cond_broadcast(&hook.cond);
    while (hook.held)
        pthread_cond_wait(&hook.cond, &hook.mu);
    pthread_mutex_unlock(&hook.mu);
}

/* 1 when no file under dir/results names job id */
static int no_result(const char *dir, const char *id) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls %s/results | grep %s)\"", dir, id);
    return system(cmd) == 0;
}

/*
 * Session 6 (one worker slot, lease 1.5 s, heartbeat 0.2 s): a job whose
 * result is being finished (held in the finish hook, encoded but not put)
 * does not keep the slot's network from the next job, which reaches
 * processing meanwhile; the held job's lease is renewed past its length,
 * and the registry row names both jobs. A cancel during the finishing
 * stage ends the job cancelled with no result file and its input gone; a
 * claim superseded during it (noticed by the keeper, or only by the
 * refused completion) leaves the record, the input and the results folder
 * as the other claim has them.
 */
static void session_overlap(void) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/overlap", root);
    up_error_t err;
    store_t *st = NULL;
    queue_t *q = NULL;
    CHECKF(store_open(dir, &st, &err) == 0, "%s", err.msg);
    blob_store_t *bs = open_blobs(dir);
    queue_config_t cfg;
    config(&cfg, bs);
    cfg.n_workers = 1;
    cfg.lease_s = 1.5;
    cfg.heartbeat_s = 0.2;
    cfg.name = "q-overlap";
    cfg.finish_hook = finish_hook;
    CHECKF(st && queue_start(st, &cfg, &q, &err) == 0, "%s", err.msg);
    if (!q) {
        store_close(st);
        blob_close(bs);
        return;
    }
    job_t j;
    char a[40], b[40];
    /* a is held in its finishing stage; b, queued after it, runs its network meanwhile */
    submit(st, NULL, dir, a, "ref/in/chelsea_lr64.png", MODEL, 0, "");
    hook_hold(a);
    queue_notify(q);
    CHECK(hook_wait_held());
    submit(st, q, dir, b, "ref/in/astronaut_lr64.png", MODEL, 0, "");
    double t0 = mono_s();
    int b_ran = 0;
    while (!b_ran && mono_s() - t0 < budget / 4) {
        CHECK(store_job_get(st, b, &j, &err) == 0);
        b_ran = j.status == JOB_STATUS_PROCESSING;
        if (!b_ran)
            sleep_s(0.01);
    }
    CHECKF(b_ran, "job b is %s while a is being finished: the slot waits on the finishing stage",
           job_status_name(j.status));
    fprintf(stderr, "overlap: the next job was processing %.2f s after the first one's encode\n",
            mono_s() - t0);
    CHECK(store_job_get(st, a, &j, &err) == 0 && j.status == JOB_STATUS_PROCESSING && j.result_key[0] == 0);
    /* held past its lease: still ours, renewed, never rescued; the row names both jobs */
    double lease0 = j.lease_until;
    sleep_s(2.0);
    CHECK(store_job_get(st, a, &j, &err) == 0 && j.status == JOB_STATUS_PROCESSING && j.attempts == 1);
    CHECKF(j.lease_until > lease0 && j.lease_until > now_s(), "lease %.2f s from now",
           j.lease_until - now_s());
    store_worker_t row;
    CHECK(registry_row(st, "q-overlap", &row) && strstr(row.jobs, a) && strstr(row.jobs, b));
    /* cancelled while being finished: no result is put, the input goes */
    job_status_t was = JOB_STATUS_EXPIRED;
    CHECKF(queue_job_cancel(q, a, &was, &err) == 0 && was == JOB_STATUS_PROCESSING, "%s", err.msg);
    hook_release();
    CHECK(wait_for(st, a, JOB_STATUS_CANCELLED, &j) == JOB_STATUS_CANCELLED);
    CHECK(j.result_key[0] == '\0' && no_result(dir, a));
    t0 = mono_s();
    while (j.input_key[0] && mono_s() - t0 < 5) {
        sleep_s(0.01);
        store_job_get(st, a, &j, &err);
    }
    CHECK(j.input_key[0] == '\0');
    CHECK(wait_for(st, b, JOB_STATUS_COMPLETED, &j) == JOB_STATUS_COMPLETED &&
          file_exists(fpath(dir, j.result_key)));

    /* superseded while being finished: c after the keeper saw it, d released at once (the completion is
     * refused, or the keeper was first): nothing written, the input kept, no result file */
    char c[40], d[40];
    for (int k = 0; k < 2; k++) {
        char *id = k ? d : c;
        submit(st, NULL, dir, id, "ref/in/chelsea_lr64.png", MODEL, 0, "");
        hook_hold(id);
        queue_notify(q);
        CHECK(hook_wait_held());
        char sql[400];
        snprintf(sql, sizeof sql,
                 "UPDATE jobs SET worker = 'other-host:2:0:00000002', attempts = attempts + 1, lease_until = "
                 "%.3f, progress = 7 WHERE id = '%s'",
                 now_s() + 600, id);
        CHECK(raw_exec(dir, sql) == 0);
        if (!k)
            sleep_s(1.0); /* five heartbeats */
        hook_release();
        /* the slot is free again once it left the job: the next job completes */
        char e[40];
        submit(st, q, dir, e, "ref/in/chelsea_lr64.png", MODEL, 0, "");
        CHECK(wait_for(st, e, JOB_STATUS_COMPLETED, &j) == JOB_STATUS_COMPLETED);
        CHECK(store_job_get(st, id, &j, &err) == 0 && j.status == JOB_STATUS_PROCESSING && j.progress == 7);
        CHECK(strcmp(j.worker, "other-host:2:0:00000002") == 0 && j.attempts == 2 && j.result_key[0] == 0);
        CHECK(j.input_key[0] && file_exists(fpath(dir, j.input_key)));
        CHECKF(no_result(dir, id), "job %s: a result file is left", id);
    }
    queue_stop(q);
    store_close(st);
    blob_close(bs);
}

int main(void) {
    data = test_env("UPRES_SHARED_DATA");
    const char *models = test_env("UPRES_TEST_MODELS");
    if (test_sanitized())
        budget = 300;
    log_set_level(LOG_INFO); /* one line per job transition: the story of a failure */
    up_error_t err;
    CHECKF(upscale_registry_scan(models, &reg, &err) == 0, "%s", err.msg);
    if (!reg)
        return test_summary();
    snprintf(root, sizeof root, "/tmp/upres-queue-test-%d", (int)getpid());
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s", root, root);
    CHECK(system(cmd) == 0);

    double t0 = mono_s();
    session_basic();
    fprintf(stderr, "basic: %.1f s\n", mono_s() - t0);
    t0 = mono_s();
    session_retention();
    fprintf(stderr, "retention: %.1f s\n", mono_s() - t0);
    t0 = mono_s();
    session_restart();
    fprintf(stderr, "restart: %.1f s\n", mono_s() - t0);
    t0 = mono_s();
    session_leases();
    fprintf(stderr, "leases: %.1f s\n", mono_s() - t0);
    t0 = mono_s();
    session_registry();
    fprintf(stderr, "registry: %.1f s\n", mono_s() - t0);
    t0 = mono_s();
    session_overlap();
    fprintf(stderr, "overlap: %.1f s\n", mono_s() - t0);

    upscale_registry_free(reg);
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    CHECK(system(cmd) == 0);
    image_shutdown();
    return test_summary();
}
