/*
 * store_test.c - the job store (through store.c) on SQLite (src/store/sqlite*.c)
 * and PostgreSQL (src/store/pg*.c): backends.h runs the backend-neutral
 * cases on each; the file migrations and sqlite: URLs are SQLite's alone.
 *
 * Every transition and its refusals: insert (and a duplicate id), get of an
 * unknown id, claim in creation order (to claimed), start (to processing),
 * progress, complete, fail, cancel of a queued job, of a claimed job, of a
 * processing job (then cancelled) and of a finished job (409 with *was),
 * requeue, the rescue of claimed and processing jobs whose lease ran out
 * (requeued, then failed once attempts are used), downloaded, due and
 * expire, counts; claims from several threads at once (each job claimed
 * exactly once); everything still there after closing and reopening the
 * database. Also uuid_v4's form.
 *
 * Leases and fencing, on two handles as two processes: a claim records its
 * worker, attempt and lease, which start, progress and heartbeat renew; a
 * live lease is never rescued and another worker's writes are refused
 * (UP_ERR_CONFLICT); a lapsed one is rescued once by the other handle, with
 * a backoff, after which the old holder's progress, complete, fail,
 * cancelled and requeue are refused while the new claim's succeed; the
 * attempt limit fails a job (refunded once); a cancel asked of a dead
 * worker's job ends it cancelled; a graceful requeue ends the claim.
 *
 * Accounts: keys (insert, by hash, find by id and by prefix, list, revoke,
 * touch, update and its refusals); charged inserts (quota and credit refusals with their figures,
 * unlimited keys, balances); refunds, exactly once, where a charge is given
 * back (fail, cancel while queued or claimed, recover) and not where it is
 * kept (cancelled while processing, completed); charged inserts from many
 * threads on two handles against one balance and one quota, and against
 * top-ups made at the same time (neither change lost); charged jobs ended
 * at once by threads on two handles (one end each, refunded once); listing an
 * owner's jobs (filters, newest first, paging while jobs arrive); and the
 * in-place migration of a version-1 and of a version-3 database (a job it
 * left processing has no lease, so the first rescue takes it).
 *
 * Blob keys: rows hold keys, not paths (an insert or a complete with a
 * path is refused); store_blobs_referenced lists every key rows hold; the
 * migration of a version-4 database turns the absolute and relative paths
 * an older upres stored (from whatever folder it ran in) into keys, and
 * clears a value that names no upload or result.
 *
 * Schema version 6: the migration of a version-5 database makes each job's
 * input its one-shot asset (due once the job has ended and its time has
 * come), gives each job the pipeline its settings describe and drops the
 * input columns; a migrated and a new database have the same schema.
 * (assets_test.c tests assets themselves.)
 *
 * Schema version 7: the migration of a version-6 database makes every key
 * an operator's key never reset and gives every job an empty meta; the
 * queue position, model rate and daily usage read the old rows; guests
 * and meta work on the migrated file, whose schema is a new one's.
 * (schema7_test.c tests the additions themselves.)
 *
 * Opening from a URL: sqlite:///ABSOLUTE, sqlite:RELATIVE (resolved at
 * open: a chdir afterwards changes nothing), NULL and "" (the data
 * folder's upres.db); postgresql:// and postgres:// pass the check; another
 * scheme is UP_ERR_UNSUPPORTED naming this build's backends, a malformed
 * URL UP_ERR_INVALID.
 *
 * PostgreSQL only: six opens racing on a new schema (made once, under the
 * advisory lock), a schema newer than this upres refused, a lost connection
 * made again by the next call, a claim that skips a row another
 * transaction holds without waiting for it, asset deletion waiting for a
 * submission in flight, postgres:// URLs and an unreachable server
 * (UP_ERR_IO).
 */
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/uuid.h"
#include "store/store.h"
#include "test.h"
#include "unit/store/backends.h"

static char dir[256];

static int raw_exec(const char *sub, const char *sql);

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* the schema versions this upres makes: a migration ends there (SQLite user_version; PostgreSQL's table) */
#define SQLITE_SCHEMA_NOW 9
#define PG_SCHEMA_NOW "4"

#define WORKER "test-host:1:0:0000abcd" /* the worker id of the tests' plain claims */

/* A claim by WORKER with a long lease: the transitions' tests run well within it. */
static int claim(store_t *st, job_t *out, up_error_t *err) {
    return store_job_claim(st, WORKER, 60, NULL, out, err);
}

/*
 * The fence of job id's current claim, as its holder has it (the job as it
 * is now; an unknown id gets WORKER's attempt 0). Points into one of 8
 * rotating slots, so a few may be used in one expression.
 */
static const store_fence_t *held(store_t *st, const char *id) {
    static char workers[8][128];
    static store_fence_t fences[8];
    static int next;
    int i = next++ % 8;
    job_t j;
    snprintf(workers[i], sizeof workers[i], "%s", WORKER);
    fences[i] = (store_fence_t){.worker = workers[i], .attempt = 0};
    if (store_job_get(st, id, &j, NULL) == 0) {
        snprintf(workers[i], sizeof workers[i], "%s", j.worker);
        fences[i].attempt = j.attempts;
    }
    return &fences[i];
}

/*
 * What a dead process leaves: every claimed or processing job of the
 * store named sub ("" = the main one) has its lease run out; then
 * store_jobs_rescue (no backoff) counts the jobs queued again and failed.
 */
static int recover(store_t *st, const char *sub, int max_attempts, double retention_s, int *n_re,
                   int *n_fail) {
    if (tb_exec(sub, "UPDATE jobs SET lease_until = 1 WHERE status IN (1, 6)"))
        return -1;
    job_t jobs[16];
    int n = 0, re = 0, fail = 0;
    up_error_t err;
    do {
        if (store_jobs_rescue(st, max_attempts, 0, retention_s, jobs, 16, &n, &err))
            return -1;
        for (int i = 0; i < n; i++) {
            re += jobs[i].status == JOB_STATUS_QUEUED;
            fail += jobs[i].status == JOB_STATUS_FAILED;
        }
    } while (n == 16);
    if (n_re)
        *n_re = re;
    if (n_fail)
        *n_fail = fail;
    return 0;
}

static void make_job(job_t *j, const char *id, double created_at) {
    memset(j, 0, sizeof *j);
    snprintf(j->id, sizeof j->id, "%s", id);
    snprintf(j->model, sizeof j->model, "realesr-animevideov3");
    j->scale = 2;
    snprintf(j->format, sizeof j->format, "png");
    j->quality = 80;
    j->tile = 32;
    snprintf(j->input_key, sizeof j->input_key, "uploads/%s.png", id);
    snprintf(j->input_name, sizeof j->input_name, "cat %s.png", id);
    snprintf(j->input_format, sizeof j->input_format, "png");
    j->input_width = 64;
    j->input_height = 48;
    j->input_bytes = 12345;
    j->created_at = created_at;
}

static int status_of(store_t *st, const char *id) {
    job_t j;
    up_error_t err;
    if (store_job_get(st, id, &j, &err))
        return -1;
    return (int)j.status;
}

static void test_uuid(void) {
    char a[37], b[37];
    uuid_v4(a);
    uuid_v4(b);
    CHECK(strlen(a) == 36);
    CHECK(uuid_valid(a) && uuid_valid(b));
    CHECK(strcmp(a, b) != 0);
    CHECK(a[14] == '4');
    CHECK(strchr("89ab", a[19]) != NULL);
    CHECK(!uuid_valid("not-a-uuid"));
    CHECK(!uuid_valid("123e4567-e89b-42d3-a456-42661417400"));
    CHECK(uuid_valid("123e4567-e89b-42d3-a456-426614174000"));
}

static void test_transitions(store_t *st) {
    up_error_t err;
    job_t j, got;
    job_status_t was;

    /* insert + get round trip */
    make_job(&j, "job-b", 1000.0);
    CHECKF(store_job_insert(st, &j, &err) == 0, "%s", err.msg);
    CHECK(store_job_insert(st, &j, &err) == UP_ERR_INVALID); /* duplicate id */
    CHECK(store_job_get(st, "job-b", &got, &err) == 0);
    CHECK(got.status == JOB_STATUS_QUEUED && got.progress == 0 && got.attempts == 0);
    CHECK(strcmp(got.model, "realesr-animevideov3") == 0 && got.scale == 2 && got.tile == 32);
    CHECK(strcmp(got.format, "png") == 0 && got.quality == 80);
    CHECK(strcmp(got.input_key, j.input_key) == 0 && strcmp(got.input_name, "cat job-b.png") == 0);
    CHECK(got.input_width == 64 && got.input_height == 48 && got.input_bytes == 12345);
    CHECK(got.created_at == 1000.0 && got.started_at == 0 && got.expires_at == 0);
    CHECK(store_job_get(st, "nope", &got, &err) == UP_ERR_NOT_FOUND);

    /* claim order: one owner's jobs at one priority in submission order (their fair-queueing tags chain:
     * store.h "Order"), whatever their created_at */
    make_job(&j, "job-a", 999.0);
    CHECK(store_job_insert(st, &j, &err) == 0);
    make_job(&j, "job-c", 1000.0);
    CHECK(store_job_insert(st, &j, &err) == 0);
    make_job(&j, "job-d", 0); /* 0 = now */
    CHECK(store_job_insert(st, &j, &err) == 0);
    CHECK(store_job_get(st, "job-d", &got, &err) == 0 && got.created_at > 1.6e9);

    double t = now_s();
    job_t b, c, d;
    CHECK(claim(st, &b, &err) == 0 && strcmp(b.id, "job-b") == 0);
    CHECK(claim(st, &got, &err) == 0 && strcmp(got.id, "job-a") == 0);
    CHECK(got.status == JOB_STATUS_CLAIMED && got.attempts == 1 && got.started_at >= t - 1);
    CHECK(got.seq > 0 && status_of(st, "job-a") == JOB_STATUS_CLAIMED);
    CHECK(claim(st, &c, &err) == 0 && strcmp(c.id, "job-c") == 0);
    CHECK(claim(st, &d, &err) == 0 && strcmp(d.id, "job-d") == 0);
    CHECK(claim(st, &got, &err) == UP_ERR_NOT_FOUND);

    /* claimed: no progress or result until the worker starts it */
    int cancel = -1;
    CHECK(store_job_progress(st, "job-a", held(st, "job-a"), 1, NULL, &err) == UP_ERR_INVALID);
    CHECK(store_job_start(st, "job-a", held(st, "job-a"), &cancel, &err) == 0 && cancel == 0);
    CHECK(status_of(st, "job-a") == JOB_STATUS_PROCESSING);
    CHECK(store_job_start(st, "job-a", held(st, "job-a"), &cancel, &err) == UP_ERR_INVALID);
    CHECKF(strstr(err.msg, "processing") != NULL, "%s", err.msg);
    CHECK(store_job_start(st, "nope", held(st, "nope"), NULL, &err) == UP_ERR_NOT_FOUND);
    CHECK(store_job_start(st, "job-c", held(st, "job-c"), NULL, &err) == 0);

    /* progress, clamped; cancel flag reported */
    cancel = -1;
    CHECK(store_job_progress(st, "job-a", held(st, "job-a"), 42, &cancel, &err) == 0 && cancel == 0);
    CHECK(store_job_get(st, "job-a", &got, &err) == 0 && got.progress == 42);
    CHECK(store_job_progress(st, "job-a", held(st, "job-a"), 250, NULL, &err) == 0);
    CHECK(store_job_get(st, "job-a", &got, &err) == 0 && got.progress == 100);
    CHECK(store_job_progress(st, "nope", held(st, "nope"), 1, NULL, &err) == UP_ERR_NOT_FOUND);

    /* complete a */
    make_job(&j, "job-a", 0);
    snprintf(j.result_key, sizeof j.result_key, "results/job-a-a1.png");
    snprintf(j.result_format, sizeof j.result_format, "png");
    j.output_width = 128;
    j.output_height = 96;
    j.result_bytes = 4242;
    t = now_s();
    CHECKF(store_job_complete(st, &j, held(st, j.id), 60, &err) == 0, "%s", err.msg);
    CHECK(store_job_get(st, "job-a", &got, &err) == 0);
    CHECK(got.status == JOB_STATUS_COMPLETED && got.progress == 100);
    CHECK(strcmp(got.result_key, j.result_key) == 0 && strcmp(got.result_format, "png") == 0);
    CHECK(got.output_width == 128 && got.output_height == 96 && got.result_bytes == 4242);
    CHECK(got.completed_at >= t - 1 && got.expires_at >= got.completed_at + 59);
    CHECK(store_job_complete(st, &j, held(st, j.id), 60, &err) ==
          UP_ERR_INVALID); /* not processing any more */
    CHECK(store_job_progress(st, "job-a", held(st, "job-a"), 5, NULL, &err) == UP_ERR_INVALID);

    /* fail b (still claimed) */
    CHECK(store_job_fail(st, "job-b", NULL, "input: not a decodable image", 60, &err) == 0);
    CHECK(store_job_get(st, "job-b", &got, &err) == 0 && got.status == JOB_STATUS_FAILED);
    CHECK(strcmp(got.error, "input: not a decodable image") == 0 && got.expires_at > 0);
    CHECK(store_job_fail(st, "nope", NULL, "x", 60, &err) == UP_ERR_NOT_FOUND);

    /* cancel c while processing: flag, then the worker finishes it */
    CHECK(store_job_cancel(st, "job-c", &was, &err) == 0 && was == JOB_STATUS_PROCESSING);
    CHECK(store_job_get(st, "job-c", &got, &err) == 0);
    CHECK(got.status == JOB_STATUS_PROCESSING && got.cancel_requested == 1);
    cancel = 0;
    CHECK(store_job_progress(st, "job-c", held(st, "job-c"), 10, &cancel, &err) == 0 && cancel == 1);
    CHECK(store_job_cancel(st, "job-c", &was, &err) == 0 && was == JOB_STATUS_PROCESSING);
    CHECK(store_job_cancelled(st, "job-c", held(st, "job-c"), 60, &err) == 0);
    CHECK(store_job_get(st, "job-c", &got, &err) == 0 && got.status == JOB_STATUS_CANCELLED);
    CHECK(got.cancel_requested == 0 && got.completed_at > 0);
    CHECK(store_job_cancelled(st, "job-c", held(st, "job-c"), 60, &err) == UP_ERR_INVALID);

    /* cancel of finished jobs: 409 with the state */
    CHECK(store_job_cancel(st, "job-a", &was, &err) == UP_ERR_INVALID && was == JOB_STATUS_COMPLETED);
    CHECK(store_job_cancel(st, "job-b", &was, &err) == UP_ERR_INVALID && was == JOB_STATUS_FAILED);
    CHECK(store_job_cancel(st, "job-c", &was, &err) == UP_ERR_INVALID && was == JOB_STATUS_CANCELLED);
    CHECK(store_job_cancel(st, "nope", &was, &err) == UP_ERR_NOT_FOUND);

    /* cancel while queued: at once */
    make_job(&j, "job-e", 2000.0);
    CHECK(store_job_insert(st, &j, &err) == 0);
    CHECK(store_job_cancel(st, "job-e", &was, &err) == 0 && was == JOB_STATUS_QUEUED);
    CHECK(status_of(st, "job-e") == JOB_STATUS_CANCELLED);
    CHECK(claim(st, &got, &err) == UP_ERR_NOT_FOUND);

    /* requeue d (graceful stop, still claimed): back to queued, this attempt not counted */
    CHECK(store_job_requeue(st, "job-d", held(st, "job-d"), &err) == 0);
    CHECK(store_job_get(st, "job-d", &got, &err) == 0);
    CHECK(got.status == JOB_STATUS_QUEUED && got.attempts == 0 && got.started_at == 0);
    CHECK(store_job_requeue(st, "job-d", held(st, "job-d"), &err) == UP_ERR_INVALID);
    CHECK(store_job_requeue(st, "nope", held(st, "nope"), &err) == UP_ERR_NOT_FOUND);

    /* requeue from processing */
    CHECK(claim(st, &got, &err) == 0 && strcmp(got.id, "job-d") == 0 && got.attempts == 1);
    CHECK(store_job_start(st, "job-d", held(st, "job-d"), NULL, &err) == 0);
    CHECK(store_job_requeue(st, "job-d", held(st, "job-d"), &err) == 0);
    CHECK(store_job_get(st, "job-d", &got, &err) == 0);
    CHECK(got.status == JOB_STATUS_QUEUED && got.attempts == 0 && got.started_at == 0);

    /* recover: a claimed or processing job goes back to queued until it used 3 attempts */
    int n_re = -1, n_fail = -1;
    for (int attempt = 1; attempt <= 3; attempt++) {
        CHECK(claim(st, &got, &err) == 0 && strcmp(got.id, "job-d") == 0);
        CHECK(got.attempts == attempt);
        if (attempt == 2) /* processing; the others stay claimed */
            CHECK(store_job_start(st, "job-d", held(st, "job-d"), NULL, &err) == 0);
        CHECK(recover(st, "", 3, 60, &n_re, &n_fail) == 0);
        if (attempt < 3) {
            CHECK(n_re == 1 && n_fail == 0);
            CHECK(status_of(st, "job-d") == JOB_STATUS_QUEUED);
        } else {
            CHECK(n_re == 0 && n_fail == 1);
        }
    }
    CHECK(store_job_get(st, "job-d", &got, &err) == 0 && got.status == JOB_STATUS_FAILED);
    CHECKF(strstr(got.error, "3 times") != NULL, "%s", got.error);
    CHECK(recover(st, "", 3, 60, NULL, NULL) == 0);

    /* downloaded: completed -> expired, result path cleared; twice: refused */
    CHECK(store_job_downloaded(st, "job-a", &err) == 0);
    CHECK(store_job_get(st, "job-a", &got, &err) == 0);
    CHECK(got.status == JOB_STATUS_EXPIRED && got.result_key[0] == '\0');
    CHECK(store_job_downloaded(st, "job-a", &err) == UP_ERR_INVALID);
    CHECK(store_job_downloaded(st, "job-b", &err) == UP_ERR_INVALID);
    CHECK(store_job_downloaded(st, "nope", &err) == UP_ERR_NOT_FOUND);

    /* the input: b ended (failed), so its one-shot asset is due; once deleted, b reads an empty key */
    asset_t a;
    CHECK(store_asset_due(st, "job-b", now_s(), &a, &err) == 0 && strcmp(a.key, "uploads/job-b.png") == 0);
    CHECK(store_asset_deleted(st, "job-b", &err) == 0);
    CHECK(store_job_get(st, "job-b", &got, &err) == 0 && got.input_key[0] == '\0');
    CHECK(strcmp(got.input_name, "cat job-b.png") == 0 && got.input_width == 64); /* the rest stays */
    /* no file left */
    CHECK(store_asset_due(st, "job-b", now_s(), &a, &err) == UP_ERR_NOT_FOUND);
    CHECK(store_asset_deleted(st, "nope", &err) == UP_ERR_NOT_FOUND);
}

static void test_due(store_t *st) {
    up_error_t err;
    job_t j, got, due[8];
    asset_t adue[16];
    int n = -1;
    /* f: completed with 0 s retention; g: completed, 1 hour */
    make_job(&j, "job-f", 3000.0);
    CHECK(store_job_insert(st, &j, &err) == 0);
    make_job(&j, "job-g", 3001.0);
    CHECK(store_job_insert(st, &j, &err) == 0);
    CHECK(claim(st, &got, &err) == 0 && strcmp(got.id, "job-f") == 0);
    CHECK(store_asset_due(st, "job-f", now_s() + 1e6, &adue[0], &err) == UP_ERR_NOT_FOUND); /* in use */
    CHECK(store_job_start(st, "job-f", held(st, "job-f"), NULL, &err) == 0);
    snprintf(got.result_key, sizeof got.result_key, "results/job-f-a1.png");
    CHECK(store_job_complete(st, &got, held(st, got.id), 0, &err) == 0);
    CHECK(claim(st, &got, &err) == 0 && strcmp(got.id, "job-g") == 0);
    CHECK(store_job_start(st, "job-g", held(st, "job-g"), NULL, &err) == 0);
    snprintf(got.result_key, sizeof got.result_key, "results/job-g-a1.png");
    CHECK(store_job_complete(st, &got, held(st, got.id), 3600, &err) == 0);

    double now = now_s() + 1;
    CHECK(store_jobs_due(st, now, due, 8, &n, &err) == 0);
    /* job-f's result; job-e (cancelled while queued) has none: its input is an asset, due at once */
    int seen_f = 0, seen_g = 0, seen_e = 0;
    for (int i = 0; i < n; i++) {
        seen_f += strcmp(due[i].id, "job-f") == 0;
        seen_g += strcmp(due[i].id, "job-g") == 0;
        seen_e += strcmp(due[i].id, "job-e") == 0;
    }
    CHECKF(seen_f == 1 && seen_g == 0 && seen_e == 0 && n == 1, "n=%d", n);
    CHECK(store_assets_due(st, now, adue, 16, &n, &err) == 0);
    seen_e = 0;
    for (int i = 0; i < n; i++)
        seen_e += strcmp(adue[i].id, "job-e") == 0;
    CHECK(seen_e == 1);
    CHECK(store_jobs_due(st, now + 7200, due, 8, &n, &err) == 0);
    seen_g = 0;
    for (int i = 0; i < n; i++)
        seen_g += strcmp(due[i].id, "job-g") == 0;
    CHECK(seen_g == 1);
    CHECK(store_jobs_due(st, now + 7200, due, 1, &n, &err) == 0 && n == 1);

    CHECK(store_job_expire(st, "job-f", &err) == 0);
    CHECK(store_job_get(st, "job-f", &got, &err) == 0);
    CHECK(got.status == JOB_STATUS_EXPIRED && got.result_key[0] == '\0');
    CHECK(strcmp(got.input_key, "uploads/job-f.png") == 0); /* the input is its asset's: swept as one */
    /* a failed job's files go, its answer (failed, with the error) stays */
    CHECK(store_job_expire(st, "job-d", &err) == 0);
    CHECK(store_job_get(st, "job-d", &got, &err) == 0 && got.status == JOB_STATUS_FAILED);
    CHECK(got.error[0] != '\0');
    CHECK(store_job_expire(st, "nope", &err) == UP_ERR_NOT_FOUND);
    CHECK(store_jobs_due(st, now, due, 8, &n, &err) == 0);
    for (int i = 0; i < n; i++)
        CHECK(strcmp(due[i].id, "job-f") != 0 && strcmp(due[i].id, "job-d") != 0);
    /* queued jobs are never due */
    make_job(&j, "job-h", 4000.0);
    CHECK(store_job_insert(st, &j, &err) == 0);
    CHECK(store_jobs_due(st, now + 1e6, due, 8, &n, &err) == 0);
    for (int i = 0; i < n; i++)
        CHECK(strcmp(due[i].id, "job-h") != 0);
    CHECK(store_assets_due(st, now + 1e6, adue, 16, &n, &err) == 0 && n > 0);
    for (int i = 0; i < n; i++)
        CHECK(strcmp(adue[i].id, "job-h") != 0);
    CHECK(store_job_expire(st, "job-h", &err) == UP_ERR_INVALID);
}

static void test_counts(store_t *st, const long long *expect) {
    long long counts[JOB_STATUS_COUNT];
    up_error_t err;
    CHECK(store_job_counts(st, counts, &err) == 0);
    for (int i = 0; i < JOB_STATUS_COUNT; i++)
        CHECKF(counts[i] == expect[i], "%s: %lld, expected %lld", job_status_name((job_status_t)i), counts[i],
               expect[i]);
}

/* ---- concurrent claims -------------------------------------------------------- */

#define N_RACE_JOBS 200
#define N_RACE_THREADS 6

typedef struct racer {
    store_t *st;
    int n_claimed;
    int ids[N_RACE_JOBS];
    int errors;
} racer_t;

static void *race(void *arg) {
    racer_t *r = arg;
    job_t j;
    up_error_t err;
    for (;;) {
        int rc = claim(r->st, &j, &err);
        if (rc == UP_ERR_NOT_FOUND)
            break;
        if (rc) {
            r->errors++;
            break;
        }
        r->ids[r->n_claimed++] = atoi(j.id + 5);
        if (r->n_claimed == N_RACE_JOBS)
            break;
    }
    return NULL;
}

static void test_claim_race(void) {
    up_error_t err;
    store_t *a = tb_open("race"), *b = tb_open("race"); /* a second handle, as another process */
    if (!a || !b)
        goto out;
    job_t j;
    for (int i = 0; i < N_RACE_JOBS; i++) {
        char id[32];
        snprintf(id, sizeof id, "race-%d", i);
        make_job(&j, id, 100.0 + i);
        CHECK(store_job_insert(a, &j, &err) == 0);
    }
    static racer_t racers[N_RACE_THREADS];
    pthread_t th[N_RACE_THREADS];
    for (int i = 0; i < N_RACE_THREADS; i++) {
        memset(&racers[i], 0, sizeof racers[i]);
        racers[i].st = i % 2 ? b : a;
        pthread_create(&th[i], NULL, race, &racers[i]);
    }
    int seen[N_RACE_JOBS] = {0}, total = 0, errors = 0;
    for (int i = 0; i < N_RACE_THREADS; i++) {
        pthread_join(th[i], NULL);
        errors += racers[i].errors;
        for (int k = 0; k < racers[i].n_claimed; k++) {
            int id = racers[i].ids[k];
            if (id >= 0 && id < N_RACE_JOBS)
                seen[id]++;
            total++;
        }
        /* each thread sees its own claims in creation order */
        for (int k = 1; k < racers[i].n_claimed; k++)
            CHECK(racers[i].ids[k] > racers[i].ids[k - 1]);
    }
    CHECK(errors == 0);
    CHECKF(total == N_RACE_JOBS, "%d claims", total);
    int once = 1;
    for (int i = 0; i < N_RACE_JOBS; i++)
        once &= seen[i] == 1;
    CHECK(once);
out:
    store_close(a);
    store_close(b);
}

/* ---- claimed ----------------------------------------------------------------- */

/*
 * A store of its own named name (SQLite: dir/name; PostgreSQL: a schema),
 * for tests that claim (claim takes the oldest queued job of all).
 */
static store_t *open_sub(const char *name) { return tb_open(name); }

static void test_claimed(void) {
    store_t *st = open_sub("claimed");
    if (!st)
        return;
    up_error_t err;
    job_t j, got;
    job_status_t was = JOB_STATUS_COUNT;
    int cancel = -1;

    make_job(&j, "cl-1", 1.0);
    CHECK(store_job_insert(st, &j, &err) == 0);
    CHECK(store_job_start(st, "cl-1", held(st, "cl-1"), &cancel, &err) == UP_ERR_INVALID); /* queued */
    CHECKF(strstr(err.msg, "queued") != NULL, "%s", err.msg);
    CHECK(store_job_cancelled(st, "cl-1", held(st, "cl-1"), 60, &err) == UP_ERR_INVALID);
    CHECK(store_job_requeue(st, "cl-1", held(st, "cl-1"), &err) == UP_ERR_INVALID);
    CHECK(claim(st, &got, &err) == 0 && strcmp(got.id, "cl-1") == 0);
    CHECK(got.status == JOB_STATUS_CLAIMED && strcmp(job_status_name(got.status), "claimed") == 0);
    CHECK(store_job_complete(st, &got, held(st, got.id), 60, &err) == UP_ERR_INVALID);
    CHECK(store_job_progress(st, "cl-1", held(st, "cl-1"), 5, NULL, &err) == UP_ERR_INVALID);
    CHECK(store_job_downloaded(st, "cl-1", &err) == UP_ERR_INVALID);
    CHECK(store_job_expire(st, "cl-1", &err) == UP_ERR_INVALID);
    asset_t a; /* a claimed job's input is in use, however late */
    CHECK(store_asset_due(st, "cl-1", now_s() + 1e6, &a, &err) == UP_ERR_NOT_FOUND);
    CHECK(store_job_start(st, "cl-1", held(st, "cl-1"), &cancel, &err) == 0 && cancel == 0);
    CHECK(status_of(st, "cl-1") == JOB_STATUS_PROCESSING);

    /* cancel while claimed: requested; start leaves it claimed and says so; the worker ends it */
    make_job(&j, "cl-2", 2.0);
    CHECK(store_job_insert(st, &j, &err) == 0);
    CHECK(claim(st, &got, &err) == 0 && strcmp(got.id, "cl-2") == 0);
    CHECK(store_job_cancel(st, "cl-2", &was, &err) == 0 && was == JOB_STATUS_CLAIMED);
    CHECK(store_job_get(st, "cl-2", &got, &err) == 0);
    CHECK(got.status == JOB_STATUS_CLAIMED && got.cancel_requested == 1);
    cancel = 0;
    CHECK(store_job_start(st, "cl-2", held(st, "cl-2"), &cancel, &err) == 0 && cancel == 1);
    CHECK(status_of(st, "cl-2") == JOB_STATUS_CLAIMED);
    CHECK(store_job_cancelled(st, "cl-2", held(st, "cl-2"), 60, &err) == 0);
    CHECK(store_job_get(st, "cl-2", &got, &err) == 0);
    CHECK(got.status == JOB_STATUS_CANCELLED && got.cancel_requested == 0 && got.completed_at > 0);

    /* a claimed job fails; counts include claimed */
    make_job(&j, "cl-3", 3.0);
    CHECK(store_job_insert(st, &j, &err) == 0);
    make_job(&j, "cl-4", 4.0);
    CHECK(store_job_insert(st, &j, &err) == 0);
    CHECK(claim(st, &got, &err) == 0 && strcmp(got.id, "cl-3") == 0);
    CHECK(claim(st, &got, &err) == 0 && strcmp(got.id, "cl-4") == 0);
    CHECK(store_job_fail(st, "cl-3", NULL, "no model", 60, &err) == 0);
    CHECK(status_of(st, "cl-3") == JOB_STATUS_FAILED);
    long long counts[JOB_STATUS_COUNT];
    CHECK(store_job_counts(st, counts, &err) == 0);
    CHECK(counts[JOB_STATUS_CLAIMED] == 1 && counts[JOB_STATUS_PROCESSING] == 1);
    CHECK(counts[JOB_STATUS_CANCELLED] == 1 && counts[JOB_STATUS_FAILED] == 1);

    /* recover: both the claimed (cl-4) and the processing (cl-1) job go back */
    int n_re = -1, n_fail = -1;
    CHECK(recover(st, "claimed", 3, 60, &n_re, &n_fail) == 0 && n_re == 2 && n_fail == 0);
    CHECK(status_of(st, "cl-1") == JOB_STATUS_QUEUED && status_of(st, "cl-4") == JOB_STATUS_QUEUED);
    CHECK(claim(st, &got, &err) == 0 && strcmp(got.id, "cl-1") == 0 && got.attempts == 2);
    CHECK(recover(st, "claimed", 2, 60, &n_re, &n_fail) == 0 && n_re == 0 && n_fail == 1);
    CHECK(status_of(st, "cl-1") == JOB_STATUS_FAILED);
    store_close(st);
}

/* ---- keys -------------------------------------------------------------------- */

static void make_key(api_key_t *k, const char *id, const char *prefix, int hash_byte, long long quota,
                     long long credits, double created_at) {
    memset(k, 0, sizeof *k);
    snprintf(k->id, sizeof k->id, "%s", id);
    snprintf(k->name, sizeof k->name, "key %s", id);
    snprintf(k->prefix, sizeof k->prefix, "%s", prefix);
    memset(k->hash, hash_byte, sizeof k->hash);
    k->hash[31] = 0; /* a zero byte inside: a blob, not a string */
    snprintf(k->tier, sizeof k->tier, "basic");
    k->quota = quota;
    k->credits = credits;
    k->created_at = created_at;
}

static long long balance(store_t *st, const char *id) {
    api_key_t k;
    up_error_t err;
    if (store_key_find(st, id, &k, &err))
        return -100;
    return k.credits;
}

/* keep_s: a job that promises its result for a time keeps it at least that long, whatever the retention. */
/*
 * Idempotency-Key answers go in with their job, in its transaction: a taken
 * key refuses the whole submission (no job, no charge), keys are per scope,
 * and the answer reads back as stored.
 */
static void test_idempotency(void) {
    store_t *st = open_sub("idem");
    if (!st)
        return;
    up_error_t err;
    api_key_t k;
    make_key(&k, "ik", "upres_ik", 9, -1, 10, 1.0);
    CHECK(store_key_insert(st, &k, &err) == 0);
    job_t a, b;
    make_job(&a, "idem-a", 10);
    snprintf(a.owner, sizeof a.owner, "ik");
    a.credits = 1;
    b = a;
    snprintf(b.id, sizeof b.id, "idem-b");
    store_idem_t rec = {
        .scope = "ik", .key = "order-1", .status = 201, .body = "{\"id\":\"idem-a\"}", .job_id = "idem-a"};
    memset(rec.hash, 7, sizeof rec.hash);
    store_charge_t c;
    CHECKF(store_job_submit(st, &a, 0, &rec, &c, &err) == 0, "%s", err.msg);
    snprintf(rec.job_id, sizeof rec.job_id, "idem-b");
    CHECK(store_job_submit(st, &b, 0, &rec, &c, &err) == UP_ERR_CONFLICT);
    job_t got;
    CHECK(store_job_get(st, "idem-b", &got, &err) == UP_ERR_NOT_FOUND); /* nothing of the loser stored */
    api_key_t after;
    CHECK(store_key_find(st, "ik", &after, &err) == 0 && after.credits == 9); /* charged once */
    store_idem_t out;
    CHECK(store_idem_get(st, "ik", "order-1", &out, &err) == 0 && out.status == 201 &&
          strcmp(out.body, "{\"id\":\"idem-a\"}") == 0 && strcmp(out.job_id, "idem-a") == 0 &&
          out.hash[0] == 7 && out.hash[31] == 7);
    free(out.body);
    CHECK(store_idem_get(st, "", "order-1", &out, &err) == UP_ERR_NOT_FOUND); /* scoped */
    snprintf(rec.scope, sizeof rec.scope, "%s", "");
    CHECK(store_job_submit(st, &b, 0, &rec, &c, &err) == 0); /* the same key name in another scope */
    store_close(st);
}

/* Text a client sent reads back as valid UTF-8 (an older upres stored names as they came). */
static void test_text_columns(void) {
    store_t *st = open_sub("utf8");
    if (!st)
        return;
    up_error_t err;
    job_t j, got;
    make_job(&j, "utf8-1", 10);
    snprintf(j.input_name, sizeof j.input_name, "%s", "\xff\xfe.png");
    snprintf(j.model_alias, sizeof j.model_alias, "%s", "cut \xc3");
    CHECK(store_job_insert(st, &j, &err) == 0);
    CHECK(store_job_get(st, "utf8-1", &got, &err) == 0);
    CHECK(strcmp(got.input_name, "\xef\xbf\xbd\xef\xbf\xbd.png") == 0);
    CHECK(strcmp(got.model_alias, "cut \xef\xbf\xbd") == 0);
    store_close(st);
}

static void test_keep(void) {
    store_t *st = open_sub("keep");
    if (!st)
        return;
    up_error_t err;
    job_t j, got;
    static const struct {
        const char *id;
        double keep_s, retention_s, want; /* want: expires_at - completed_at */
    } cases[] = {{"keep-a", 3600, 900, 3600}, {"keep-b", 60, 900, 900}, {"keep-c", 0, 900, 900}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        make_job(&j, cases[i].id, (double)i + 1);
        j.keep_s = cases[i].keep_s;
        CHECK(store_job_insert(st, &j, &err) == 0);
        CHECK(claim(st, &got, &err) == 0 && !strcmp(got.id, cases[i].id) && got.keep_s == cases[i].keep_s);
        CHECK(store_job_start(st, got.id, held(st, got.id), NULL, &err) == 0);
        snprintf(got.result_key, sizeof got.result_key, "results/%s-a1.png", got.id);
        CHECK(store_job_complete(st, &got, held(st, got.id), cases[i].retention_s, &err) == 0);
        CHECK(store_job_get(st, got.id, &got, &err) == 0);
        double kept = got.expires_at - got.completed_at;
        CHECKF(kept > cases[i].want - 0.01 && kept < cases[i].want + 0.01, "%s: kept %.3f s, want %.0f",
               got.id, kept, cases[i].want);
    }
    store_close(st);
}

static void test_keys(void) {
    store_t *st = open_sub("keys");
    if (!st)
        return;
    up_error_t err;
    api_key_t k, got, *keys = (api_key_t *)&k;
    int n = -1;

    CHECK(store_key_list(st, &keys, &n, &err) == 0 && n == 0 && keys == NULL);
    free(keys);

    make_key(&k, "k1", "upres_AbCdEfGh", 1, 100, 50, 300.0);
    CHECKF(store_key_insert(st, &k, &err) == 0, "%s", err.msg);
    CHECK(store_key_insert(st, &k, &err) == UP_ERR_INVALID); /* same id */
    make_key(&k, "k1-other", "upres_AbCdEfGh", 1, 100, 50, 300.0);
    CHECK(store_key_insert(st, &k, &err) == UP_ERR_INVALID); /* same hash */
    make_key(&k, "k2", "upres_AbCdXyZw", 2, -1, -1, 200.0);
    CHECK(store_key_insert(st, &k, &err) == 0);
    make_key(&k, "k3", "upres_Qrstuvwx", 3, 10, -1, 100.0);
    CHECK(store_key_insert(st, &k, &err) == 0);
    make_key(&k, "", "upres_x", 4, -1, -1, 1.0);
    CHECK(store_key_insert(st, &k, &err) == UP_ERR_INVALID);
    make_key(&k, "k5", "upres_x", 5, -2, -1, 1.0);
    CHECK(store_key_insert(st, &k, &err) == UP_ERR_INVALID);

    /* by hash: every field back */
    unsigned char h[32];
    memset(h, 1, sizeof h);
    h[31] = 0;
    CHECK(store_key_by_hash(st, h, &got, &err) == 0);
    CHECK(strcmp(got.id, "k1") == 0 && strcmp(got.name, "key k1") == 0);
    CHECK(strcmp(got.prefix, "upres_AbCdEfGh") == 0 && strcmp(got.tier, "basic") == 0);
    CHECK(memcmp(got.hash, h, 32) == 0 && got.quota == 100 && got.credits == 50);
    CHECK(got.created_at == 300.0 && got.last_used_at == 0 && got.revoked_at == 0);
    h[0] = 9;
    CHECK(store_key_by_hash(st, h, &got, &err) == UP_ERR_NOT_FOUND);

    /* find: exact id first, else one key by prefix */
    CHECK(store_key_find(st, "k2", &got, &err) == 0 && strcmp(got.id, "k2") == 0);
    CHECK(store_key_find(st, "upres_Q", &got, &err) == 0 && strcmp(got.id, "k3") == 0);
    CHECK(store_key_find(st, "upres_AbCdE", &got, &err) == 0 && strcmp(got.id, "k1") == 0);
    CHECK(store_key_find(st, "upres_AbCdXyZw", &got, &err) == 0 && strcmp(got.id, "k2") == 0);
    CHECK(store_key_find(st, "upres_AbCd", &got, &err) == UP_ERR_INVALID);
    CHECKF(strstr(err.msg, "ambiguous") != NULL, "%s", err.msg);
    CHECK(store_key_find(st, "upres_", &got, &err) == UP_ERR_INVALID);
    CHECK(store_key_find(st, "upres_abcde", &got, &err) == UP_ERR_NOT_FOUND); /* case matters */
    CHECK(store_key_find(st, "upres_%", &got, &err) == UP_ERR_NOT_FOUND);     /* no wildcards */
    CHECK(store_key_find(st, "upres_Q_", &got, &err) == UP_ERR_NOT_FOUND);
    CHECK(store_key_find(st, "k", &got, &err) == UP_ERR_NOT_FOUND); /* ids match only whole */
    CHECK(store_key_find(st, "", &got, &err) == UP_ERR_NOT_FOUND);

    /* list: oldest first */
    keys = NULL;
    CHECK(store_key_list(st, &keys, &n, &err) == 0 && n == 3 && keys);
    if (keys && n == 3) {
        CHECK(strcmp(keys[0].id, "k3") == 0 && strcmp(keys[1].id, "k2") == 0 &&
              strcmp(keys[2].id, "k1") == 0);
        CHECK(keys[2].credits == 50 && keys[1].quota == -1 && keys[0].hash[0] == 3);
    }
    free(keys);

    /* revoke: once */
    double t = now_s();
    CHECK(store_key_revoke(st, "k2", &err) == 0);
    CHECK(store_key_revoke(st, "k2", &err) == UP_ERR_INVALID);
    CHECK(store_key_revoke(st, "nope", &err) == UP_ERR_NOT_FOUND);
    CHECK(store_key_find(st, "k2", &got, &err) == 0 && got.revoked_at >= t - 1);
    memset(h, 2, sizeof h);
    h[31] = 0;
    CHECK(store_key_by_hash(st, h, &got, &err) == 0 && got.revoked_at > 0); /* still found */

    /* touch: the latest use is kept */
    CHECK(store_key_touch(st, "k1", 1234.5, &err) == 0);
    CHECK(store_key_find(st, "k1", &got, &err) == 0 && got.last_used_at == 1234.5);
    CHECK(store_key_touch(st, "k1", 1000.0, &err) == 0);
    CHECK(store_key_find(st, "k1", &got, &err) == 0 && got.last_used_at == 1234.5);
    CHECK(store_key_touch(st, "nope", 1.0, &err) == UP_ERR_NOT_FOUND);

    /* usage: nothing charged yet; an unknown key has used nothing */
    long long used = -1;
    CHECK(store_key_usage(st, "k1", 0, &used, &err) == 0 && used == 0);
    CHECK(store_key_usage(st, "nope", 0, &used, &err) == 0 && used == 0);
    store_close(st);
}

/* ---- charges and refunds ------------------------------------------------------- */

static int insert_charged(store_t *st, const char *id, const char *owner, long long credits,
                          double created_at, store_charge_t *c, up_error_t *err) {
    job_t j;
    make_job(&j, id, created_at);
    snprintf(j.owner, sizeof j.owner, "%s", owner);
    snprintf(j.tier, sizeof j.tier, "pro");
    j.credits = credits;
    return store_job_insert_charged(st, &j, 0, c, err);
}

static int refunded(store_t *st, const char *id) {
    job_t j;
    up_error_t err;
    if (store_job_get(st, id, &j, &err))
        return -1;
    return j.refunded;
}

static void test_charges(void) {
    store_t *st = open_sub("charges");
    if (!st)
        return;
    up_error_t err;
    store_charge_t c;
    api_key_t k;
    job_t got;
    long long used = -1;

    /* quota: 10 a month, no balance */
    make_key(&k, "quota", "upres_quota", 1, 10, -1, 1.0);
    CHECK(store_key_insert(st, &k, &err) == 0);
    CHECKF(insert_charged(st, "q1", "quota", 4, 0, &c, &err) == 0, "%s", err.msg);
    CHECK(c.quota == 10 && c.used == 0 && c.credits == -1);
    CHECK(store_job_get(st, "q1", &got, &err) == 0);
    CHECK(strcmp(got.owner, "quota") == 0 && strcmp(got.tier, "pro") == 0 && got.credits == 4);
    CHECK(got.refunded == 0 && got.status == JOB_STATUS_QUEUED);
    CHECK(insert_charged(st, "q2", "quota", 4, 0, &c, &err) == 0 && c.used == 4);
    memset(&c, 0, sizeof c);
    CHECK(insert_charged(st, "q3", "quota", 4, 0, &c, &err) == UP_ERR_QUOTA);
    CHECK(c.quota == 10 && c.used == 8 && c.credits == -1);
    CHECK(store_job_get(st, "q3", &got, &err) == UP_ERR_NOT_FOUND); /* nothing written */
    CHECK(insert_charged(st, "q3", "quota", 2, 0, &c, &err) == 0 && c.used == 8);
    CHECK(insert_charged(st, "q4", "quota", 1, 0, &c, &err) == UP_ERR_QUOTA);
    CHECKF(strcmp(err.msg, "quota of 10 credits used up (10 used this period)") == 0, "%s", err.msg);
    CHECK(c.used == 10);
    CHECK(insert_charged(st, "q4", "quota", 0, 0, &c, &err) == 0); /* a free job passes a full quota */
    CHECK(store_key_usage(st, "quota", 0, &used, &err) == 0 && used == 10);
    CHECK(store_key_usage(st, "quota", now_s() + 60, &used, &err) == 0 && used == 0); /* a later period */
    /* the quota period: jobs made before it do not count */
    CHECK(insert_charged(st, "q5", "quota", 1, 0, &c, &err) == UP_ERR_QUOTA);
    job_t j;
    make_job(&j, "q5", 0);
    snprintf(j.owner, sizeof j.owner, "quota");
    j.credits = 5;
    CHECK(store_job_insert_charged(st, &j, now_s() + 60, &c, &err) == 0 && c.used == 0);

    /* balance: 3 credits, no quota */
    make_key(&k, "bal", "upres_bal", 2, -1, 3, 2.0);
    CHECK(store_key_insert(st, &k, &err) == 0);
    CHECK(insert_charged(st, "b1", "bal", 1, 0, &c, &err) == 0 && c.credits == 3 && c.quota == -1);
    CHECK(balance(st, "bal") == 2);
    CHECK(insert_charged(st, "b2", "bal", 2, 0, &c, &err) == 0 && c.credits == 2);
    CHECK(balance(st, "bal") == 0);
    CHECK(insert_charged(st, "b3", "bal", 1, 0, &c, &err) == UP_ERR_CREDITS);
    CHECKF(strcmp(err.msg, "insufficient credits: 0 left, 1 needed") == 0, "%s", err.msg);
    CHECK(c.credits == 0 && c.used == 3);
    CHECK(store_job_get(st, "b3", &got, &err) == UP_ERR_NOT_FOUND && balance(st, "bal") == 0);

    /* both: the quota is checked first, then the balance */
    make_key(&k, "both", "upres_both", 3, 5, 2, 3.0);
    CHECK(store_key_insert(st, &k, &err) == 0);
    CHECK(insert_charged(st, "x1", "both", 6, 0, &c, &err) == UP_ERR_QUOTA);
    CHECK(insert_charged(st, "x1", "both", 3, 0, &c, &err) == UP_ERR_CREDITS);
    CHECK(insert_charged(st, "x1", "both", 2, 0, &c, &err) == 0 && balance(st, "both") == 0);

    /* unlimited: always charged, the balance stays -1, usage still counted */
    make_key(&k, "free", "upres_free", 4, -1, -1, 4.0);
    CHECK(store_key_insert(st, &k, &err) == 0);
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof id, "f%d", i);
        CHECK(insert_charged(st, id, "free", 1000, 0, &c, &err) == 0 && c.credits == -1 && c.quota == -1);
    }
    CHECK(balance(st, "free") == -1);
    CHECK(store_key_usage(st, "free", 0, &used, &err) == 0 && used == 5000);

    /* unknown and revoked keys; a duplicate id charges nothing */
    CHECK(insert_charged(st, "n1", "nope", 1, 0, &c, &err) == UP_ERR_NOT_FOUND);
    CHECK(insert_charged(st, "n1", "", 1, 0, &c, &err) == UP_ERR_NOT_FOUND);
    make_key(&k, "gone", "upres_gone", 5, -1, 5, 5.0);
    CHECK(store_key_insert(st, &k, &err) == 0);
    CHECK(insert_charged(st, "g1", "gone", 2, 0, &c, &err) == 0 && balance(st, "gone") == 3);
    CHECK(insert_charged(st, "g1", "gone", 2, 0, &c, &err) == UP_ERR_INVALID && balance(st, "gone") == 3);
    CHECK(store_key_revoke(st, "gone", &err) == 0);
    CHECK(insert_charged(st, "g2", "gone", 1, 0, &c, &err) == UP_ERR_REVOKED && balance(st, "gone") == 3);
    CHECK(store_job_get(st, "g2", &got, &err) == UP_ERR_NOT_FOUND);
    CHECK(insert_charged(st, "n2", "bal", -1, 0, &c, &err) == UP_ERR_INVALID);
    /* a revoked key still gets a refund */
    CHECK(store_job_fail(st, "g1", NULL, "input vanished", 60, &err) == 0 && balance(st, "gone") == 5);

    /* refunds on a key with 10 credits */
    make_key(&k, "r", "upres_r", 6, -1, 10, 6.0);
    CHECK(store_key_insert(st, &k, &err) == 0);
    job_status_t was;
    /* failed while queued: refunded once */
    CHECK(insert_charged(st, "r1", "r", 1, 0, &c, &err) == 0 && balance(st, "r") == 9);
    CHECK(store_job_fail(st, "r1", NULL, "bad input", 60, &err) == 0 && balance(st, "r") == 10);
    CHECK(refunded(st, "r1") == 1);
    CHECK(store_job_fail(st, "r1", NULL, "again", 60, &err) == UP_ERR_INVALID && balance(st, "r") == 10);
    CHECK(store_job_cancel(st, "r1", &was, &err) == UP_ERR_INVALID && balance(st, "r") == 10);
    /* cancelled while queued */
    CHECK(insert_charged(st, "r2", "r", 2, 0, &c, &err) == 0 && balance(st, "r") == 8);
    CHECK(store_job_cancel(st, "r2", &was, &err) == 0 && was == JOB_STATUS_QUEUED);
    CHECK(balance(st, "r") == 10 && refunded(st, "r2") == 1);
    /* the other keys' queued jobs set aside (cancelled, as an operator would): the jobs below are the
     * queue, and one owner's jobs are claimed in submission order */
    CHECK(tb_exec("charges",
                  "UPDATE jobs SET status = 4, completed_at = 1, expires_at = 1 WHERE status = 0") == 0);
    CHECK(insert_charged(st, "r3", "r", 3, 1.0, &c, &err) == 0 && balance(st, "r") == 7);
    CHECK(insert_charged(st, "r4", "r", 3, 2.0, &c, &err) == 0 && balance(st, "r") == 4);
    CHECK(insert_charged(st, "r5", "r", 2, 3.0, &c, &err) == 0 && balance(st, "r") == 2);
    CHECK(insert_charged(st, "r6", "r", 1, 4.0, &c, &err) == 0 && balance(st, "r") == 1);
    CHECK(insert_charged(st, "r7", "r", 1, 5.0, &c, &err) == 0 && balance(st, "r") == 0);
    /* cancelled while claimed: refunded when the worker ends it, not before */
    CHECK(claim(st, &got, &err) == 0 && strcmp(got.id, "r3") == 0);
    CHECK(store_job_cancel(st, "r3", &was, &err) == 0 && was == JOB_STATUS_CLAIMED);
    CHECK(balance(st, "r") == 0);
    CHECK(store_job_cancelled(st, "r3", held(st, "r3"), 60, &err) == 0 && balance(st, "r") == 3 &&
          refunded(st, "r3") == 1);
    /* cancelled while processing: kept */
    CHECK(claim(st, &got, &err) == 0 && strcmp(got.id, "r4") == 0);
    CHECK(store_job_start(st, "r4", held(st, "r4"), NULL, &err) == 0);
    CHECK(store_job_cancel(st, "r4", &was, &err) == 0 && was == JOB_STATUS_PROCESSING);
    CHECK(store_job_cancelled(st, "r4", held(st, "r4"), 60, &err) == 0 && balance(st, "r") == 3 &&
          refunded(st, "r4") == 0);
    /* completed: kept */
    CHECK(claim(st, &got, &err) == 0 && strcmp(got.id, "r5") == 0);
    CHECK(store_job_start(st, "r5", held(st, "r5"), NULL, &err) == 0);
    CHECK(store_job_complete(st, &got, held(st, got.id), 60, &err) == 0 && balance(st, "r") == 3 &&
          refunded(st, "r5") == 0);
    /* failed while processing, failed while claimed: refunded */
    CHECK(claim(st, &got, &err) == 0 && strcmp(got.id, "r6") == 0);
    CHECK(store_job_start(st, "r6", held(st, "r6"), NULL, &err) == 0);
    CHECK(store_job_fail(st, "r6", NULL, "out of memory", 60, &err) == 0 && balance(st, "r") == 4);
    CHECK(claim(st, &got, &err) == 0 && strcmp(got.id, "r7") == 0);
    CHECK(store_job_fail(st, "r7", NULL, "no model", 60, &err) == 0 && balance(st, "r") == 5);
    CHECK(refunded(st, "r6") == 1 && refunded(st, "r7") == 1);
    CHECK(store_job_fail(st, "r7", NULL, "no model", 60, &err) == UP_ERR_INVALID && balance(st, "r") == 5);

    /* recover: requeued jobs keep their charge; failed ones get it back, once */
    CHECK(insert_charged(st, "r8", "r", 2, 6.0, &c, &err) == 0);
    CHECK(insert_charged(st, "r9", "r", 1, 7.0, &c, &err) == 0);
    CHECK(insert_charged(st, "r10", "r", 1, 8.0, &c, &err) == 0 && balance(st, "r") == 1);
    make_job(&j, "f-old", 5.5); /* a job of the unlimited key, claimed too (first: a higher priority) */
    snprintf(j.owner, sizeof j.owner, "free");
    j.priority = 1;
    j.credits = 7;
    CHECK(store_job_insert_charged(st, &j, 0, &c, &err) == 0);
    CHECK(claim(st, &got, &err) == 0 && strcmp(got.id, "f-old") == 0);
    CHECK(claim(st, &got, &err) == 0 && strcmp(got.id, "r8") == 0);
    CHECK(claim(st, &got, &err) == 0 && strcmp(got.id, "r9") == 0);
    CHECK(store_job_start(st, "r9", held(st, "r9"), NULL, &err) == 0);
    int n_re = -1, n_fail = -1;
    CHECK(recover(st, "charges", 2, 60, &n_re, &n_fail) == 0 && n_re == 3 && n_fail == 0);
    CHECK(balance(st, "r") == 1 && refunded(st, "r8") == 0);
    /* the second attempt of f-old, r8 and r9, the first of r10 */
    CHECK(claim(st, &got, &err) == 0 && strcmp(got.id, "f-old") == 0 && got.attempts == 2);
    CHECK(claim(st, &got, &err) == 0 && strcmp(got.id, "r8") == 0 && got.attempts == 2);
    CHECK(claim(st, &got, &err) == 0 && strcmp(got.id, "r9") == 0 && got.attempts == 2);
    CHECK(store_job_start(st, "r9", held(st, "r9"), NULL, &err) == 0);
    CHECK(claim(st, &got, &err) == 0 && strcmp(got.id, "r10") == 0 && got.attempts == 1);
    CHECK(recover(st, "charges", 2, 60, &n_re, &n_fail) == 0 && n_re == 1 && n_fail == 3);
    CHECKF(balance(st, "r") == 4, "%lld", balance(st, "r"));
    CHECK(refunded(st, "r8") == 1 && refunded(st, "r9") == 1 && refunded(st, "r10") == 0);
    CHECK(refunded(st, "f-old") == 1 && balance(st, "free") == -1);
    CHECK(store_job_get(st, "r8", &got, &err) == 0 && got.status == JOB_STATUS_FAILED);
    CHECK(recover(st, "charges", 2, 60, &n_re, &n_fail) == 0 && n_re == 0 && n_fail == 0);
    CHECK(balance(st, "r") == 4);
    CHECK(store_job_fail(st, "r10", NULL, "x", 60, &err) == 0 && balance(st, "r") == 5);

    /* usage counts only what was kept: r4 (3) and r5 (2) */
    CHECK(store_key_usage(st, "r", 0, &used, &err) == 0);
    CHECKF(used == 5, "%lld", used);
    CHECK(store_key_usage(st, "free", 0, &used, &err) == 0 && used == 5000);
    store_close(st);
}

/* ---- charges from many threads --------------------------------------------------- */

#define N_CHARGE_THREADS 8
#define N_CHARGE_TRIES 25

typedef struct charger {
    store_t *st;
    const char *owner;
    int ith;
    int n_tries; /* insert attempts */
    int n_ok, n_refused, n_other;
    int refusal; /* the UP_ERR_* expected */
} charger_t;

static void *charge_race(void *arg) {
    charger_t *c = arg;
    up_error_t err;
    for (int i = 0; i < c->n_tries; i++) {
        char id[40];
        snprintf(id, sizeof id, "%s-%d-%d", c->owner, c->ith, i);
        int rc = insert_charged(c->st, id, c->owner, 1, 0, NULL, &err);
        if (rc == 0)
            c->n_ok++;
        else if (rc == c->refusal)
            c->n_refused++;
        else
            c->n_other++;
    }
    return NULL;
}

static void run_charge_race(store_t *a, store_t *b, const char *owner, int refusal) {
    static charger_t chargers[N_CHARGE_THREADS];
    pthread_t th[N_CHARGE_THREADS];
    for (int i = 0; i < N_CHARGE_THREADS; i++) {
        chargers[i] = (charger_t){
            .st = i % 2 ? b : a, .owner = owner, .ith = i, .n_tries = N_CHARGE_TRIES, .refusal = refusal};
        pthread_create(&th[i], NULL, charge_race, &chargers[i]);
    }
    int ok = 0, refused = 0, other = 0;
    for (int i = 0; i < N_CHARGE_THREADS; i++) {
        pthread_join(th[i], NULL);
        ok += chargers[i].n_ok;
        refused += chargers[i].n_refused;
        other += chargers[i].n_other;
    }
    CHECKF(ok == 10 && refused == N_CHARGE_THREADS * N_CHARGE_TRIES - 10 && other == 0,
           "%s: %d charged, %d refused, %d other", owner, ok, refused, other);
    long long used = -1;
    up_error_t err;
    CHECK(store_key_usage(a, owner, 0, &used, &err) == 0 && used == 10);
}

static void test_charge_race(void) {
    store_t *a = open_sub("charge-race"), *b = open_sub("charge-race");
    if (!a || !b)
        goto out;
    up_error_t err;
    api_key_t k;
    make_key(&k, "c10", "upres_c10", 1, -1, 10, 1.0);
    CHECK(store_key_insert(a, &k, &err) == 0);
    make_key(&k, "q10", "upres_q10", 2, 10, -1, 2.0);
    CHECK(store_key_insert(a, &k, &err) == 0);
    run_charge_race(a, b, "c10", UP_ERR_CREDITS);
    CHECK(balance(a, "c10") == 0 && balance(b, "c10") == 0);
    run_charge_race(a, b, "q10", UP_ERR_QUOTA);
    CHECK(balance(a, "q10") == -1);
    long long counts[JOB_STATUS_COUNT];
    CHECK(store_job_counts(b, counts, &err) == 0 && counts[JOB_STATUS_QUEUED] == 20);
out:
    store_close(a);
    store_close(b);
}

/* ---- refunds from many threads ----------------------------------------------------- */

#define N_REFUND_JOBS 40
#define N_REFUND_THREADS 8

typedef struct refunder {
    store_t *st;
    int ith;
    int n_ok, n_refused, n_other;
} refunder_t;

/* Every thread ends every job: half by failing it, half by cancelling it; one end per job may win. */
static void *refund_race(void *arg) {
    refunder_t *r = arg;
    up_error_t err;
    for (int i = 0; i < N_REFUND_JOBS; i++) {
        char id[32];
        snprintf(id, sizeof id, "rr-%d", (i + r->ith * 7) % N_REFUND_JOBS);
        job_status_t was;
        int rc = r->ith % 2 ? store_job_fail(r->st, id, NULL, "raced", 60, &err)
                            : store_job_cancel(r->st, id, &was, &err);
        if (rc == 0)
            r->n_ok++;
        else if (rc == UP_ERR_INVALID)
            r->n_refused++;
        else
            r->n_other++;
    }
    return NULL;
}

/*
 * Refunds at most once under races: charged jobs ended at once by threads
 * on two handles (as two processes), each trying every job: one end wins
 * per job and the balance gets each charge back exactly once.
 */
static void test_refund_race(void) {
    store_t *a = open_sub("refund-race"), *b = open_sub("refund-race");
    if (!a || !b)
        goto out;
    up_error_t err;
    api_key_t k;
    make_key(&k, "rr", "upres_rr", 1, -1, 1000, 1.0);
    CHECK(store_key_insert(a, &k, &err) == 0);
    for (int i = 0; i < N_REFUND_JOBS; i++) {
        char id[32];
        snprintf(id, sizeof id, "rr-%d", i);
        CHECK(insert_charged(a, id, "rr", 1 + i % 3, 1.0 + i, NULL, &err) == 0);
    }
    long long charged = 1000 - balance(a, "rr");
    static refunder_t refunders[N_REFUND_THREADS];
    pthread_t th[N_REFUND_THREADS];
    for (int i = 0; i < N_REFUND_THREADS; i++) {
        refunders[i] = (refunder_t){.st = i % 4 < 2 ? a : b, .ith = i};
        pthread_create(&th[i], NULL, refund_race, &refunders[i]);
    }
    int ok = 0, refused = 0, other = 0;
    for (int i = 0; i < N_REFUND_THREADS; i++) {
        pthread_join(th[i], NULL);
        ok += refunders[i].n_ok;
        refused += refunders[i].n_refused;
        other += refunders[i].n_other;
    }
    CHECKF(ok == N_REFUND_JOBS && refused == N_REFUND_JOBS * (N_REFUND_THREADS - 1) && other == 0,
           "%d ended, %d refused, %d other", ok, refused, other);
    CHECKF(charged > 0 && balance(b, "rr") == 1000, "charged %lld, balance %lld", charged, balance(b, "rr"));
    int all_refunded = 1;
    for (int i = 0; i < N_REFUND_JOBS; i++) {
        char id[32];
        snprintf(id, sizeof id, "rr-%d", i);
        all_refunded &= refunded(b, id) == 1;
    }
    CHECK(all_refunded);
out:
    store_close(a);
    store_close(b);
}

/* ---- changing a key ------------------------------------------------------------ */

static void test_key_update(void) {
    store_t *st = open_sub("key-update");
    if (!st)
        return;
    up_error_t err;
    api_key_t k, got;
    store_key_change_t ch;
    make_key(&k, "u1", "upres_u1", 1, 100, 5, 1.0);
    CHECK(store_key_insert(st, &k, &err) == 0);
    make_key(&k, "unl", "upres_unl", 2, -1, -1, 2.0);
    CHECK(store_key_insert(st, &k, &err) == 0);
    make_key(&k, "gone", "upres_gone", 3, -1, 10, 3.0);
    CHECK(store_key_insert(st, &k, &err) == 0);
    CHECK(store_key_revoke(st, "gone", &err) == 0);

    /* set tier, quota and credits; *out is the key after the change, the rest kept */
    ch = (store_key_change_t){.tier = "pro", .set_quota = 1, .quota = 7};
    memset(&got, 0, sizeof got);
    CHECKF(store_key_update(st, "u1", &ch, &got, &err) == 0, "%s", err.msg);
    CHECK(strcmp(got.id, "u1") == 0 && strcmp(got.tier, "pro") == 0 && got.quota == 7 && got.credits == 5);
    CHECK(strcmp(got.name, "key u1") == 0 && strcmp(got.prefix, "upres_u1") == 0 && got.hash[0] == 1);
    CHECK(got.created_at == 1.0 && got.revoked_at == 0);
    CHECK(store_key_find(st, "u1", &k, &err) == 0 && memcmp(&k, &got, sizeof k) == 0);
    ch = (store_key_change_t){.set_quota = 1, .quota = -1, .set_credits = 1, .credits = 40};
    CHECK(store_key_update(st, "u1", &ch, NULL, &err) == 0); /* out may be NULL */
    CHECK(store_key_find(st, "u1", &k, &err) == 0 && k.quota == -1 && k.credits == 40);
    CHECK(strcmp(k.tier, "pro") == 0);
    ch = (store_key_change_t){.set_credits = 1, .credits = -1};
    CHECK(store_key_update(st, "unl", &ch, &got, &err) == 0 && got.credits == -1 && got.quota == -1);
    ch = (store_key_change_t){.set_credits = 1, .credits = 0};
    CHECK(store_key_update(st, "unl", &ch, &got, &err) == 0 && got.credits == 0);
    ch = (store_key_change_t){.set_credits = 1, .credits = -1};
    CHECK(store_key_update(st, "unl", &ch, &got, &err) == 0 && got.credits == -1);
    ch = (store_key_change_t){0}; /* no change: the key as it is */
    CHECK(store_key_update(st, "u1", &ch, &got, &err) == 0 && got.credits == 40 && got.quota == -1);

    /* add to a balance, take off it down to 0, never below */
    ch = (store_key_change_t){.add_credits = 5};
    CHECK(store_key_update(st, "u1", &ch, &got, &err) == 0 && got.credits == 45);
    ch = (store_key_change_t){.add_credits = -15, .tier = "basic"};
    CHECK(store_key_update(st, "u1", &ch, &got, &err) == 0 && got.credits == 30);
    CHECK(strcmp(got.tier, "basic") == 0);
    ch = (store_key_change_t){.add_credits = -31, .tier = "premium"};
    CHECK(store_key_update(st, "u1", &ch, &got, &err) == UP_ERR_INVALID);
    CHECKF(strstr(err.msg, "30") && strstr(err.msg, "-31") && strstr(err.msg, "below 0"), "%s", err.msg);
    CHECK(store_key_find(st, "u1", &k, &err) == 0 && k.credits == 30 && strcmp(k.tier, "basic") == 0);
    ch = (store_key_change_t){.add_credits = -30};
    CHECK(store_key_update(st, "u1", &ch, &got, &err) == 0 && got.credits == 0);
    ch = (store_key_change_t){.add_credits = -1};
    CHECK(store_key_update(st, "u1", &ch, &got, &err) == UP_ERR_INVALID);
    ch = (store_key_change_t){.add_credits = LLONG_MAX};
    CHECK(store_key_update(st, "u1", &ch, &got, &err) == 0 && got.credits == LLONG_MAX);
    CHECK(store_key_update(st, "u1", &ch, &got, &err) == UP_ERR_INVALID); /* would overflow */
    CHECK(balance(st, "u1") == LLONG_MAX);

    /* refusals, each leaving the key as it was */
    ch = (store_key_change_t){.tier = "pro"};
    CHECK(store_key_update(st, "nope", &ch, &got, &err) == UP_ERR_NOT_FOUND);
    CHECK(store_key_update(st, "gone", &ch, &got, &err) == UP_ERR_INVALID);
    CHECKF(strstr(err.msg, "revoked") != NULL, "%s", err.msg);
    ch = (store_key_change_t){.add_credits = 1};
    CHECK(store_key_update(st, "gone", &ch, &got, &err) == UP_ERR_INVALID);
    CHECK(balance(st, "gone") == 10);
    CHECK(store_key_update(st, "unl", &ch, &got, &err) == UP_ERR_INVALID); /* no balance to add to */
    CHECKF(strstr(err.msg, "unlimited") != NULL, "%s", err.msg);
    CHECK(balance(st, "unl") == -1);
    ch = (store_key_change_t){.set_credits = 1, .credits = 5, .add_credits = 1};
    CHECK(store_key_update(st, "unl", &ch, &got, &err) == UP_ERR_INVALID);
    ch = (store_key_change_t){.set_quota = 1, .quota = -2};
    CHECK(store_key_update(st, "unl", &ch, &got, &err) == UP_ERR_INVALID);
    ch = (store_key_change_t){.set_credits = 1, .credits = -2};
    CHECK(store_key_update(st, "unl", &ch, &got, &err) == UP_ERR_INVALID);
    ch = (store_key_change_t){.tier = ""};
    CHECK(store_key_update(st, "unl", &ch, &got, &err) == UP_ERR_INVALID);
    ch = (store_key_change_t){.tier = "a-tier-name-of-thirty-two-bytes!"};
    CHECK(store_key_update(st, "unl", &ch, &got, &err) == UP_ERR_INVALID);
    CHECK(store_key_find(st, "unl", &k, &err) == 0 && k.quota == -1 && k.credits == -1);
    CHECK(strcmp(k.tier, "basic") == 0);

    /* a charge sees the new balance and quota */
    ch = (store_key_change_t){.set_credits = 1, .credits = 2, .set_quota = 1, .quota = 3};
    CHECK(store_key_update(st, "unl", &ch, &got, &err) == 0);
    CHECK(insert_charged(st, "up-1", "unl", 2, 0, NULL, &err) == 0 && balance(st, "unl") == 0);
    CHECK(insert_charged(st, "up-2", "unl", 1, 0, NULL, &err) == UP_ERR_CREDITS);
    ch = (store_key_change_t){.add_credits = 10};
    CHECK(store_key_update(st, "unl", &ch, &got, &err) == 0 && got.credits == 10);
    CHECK(insert_charged(st, "up-3", "unl", 2, 0, NULL, &err) == UP_ERR_QUOTA);
    CHECK(insert_charged(st, "up-4", "unl", 1, 0, NULL, &err) == 0 && balance(st, "unl") == 9);
    store_close(st);
}

/* Charged inserts and top-ups at once on one balance: neither may lose the other's change. */
#define N_TOPUP_THREADS 4
#define N_TOPUPS 50

typedef struct topper {
    store_t *st;
    int n_ok, n_other;
} topper_t;

static void *topup_race(void *arg) {
    topper_t *t = arg;
    up_error_t err;
    store_key_change_t ch = {.add_credits = 1};
    for (int i = 0; i < N_TOPUPS; i++) {
        if (store_key_update(t->st, "topped", &ch, NULL, &err) == 0)
            t->n_ok++;
        else
            t->n_other++;
    }
    return NULL;
}

static void test_topup_race(void) {
    store_t *a = open_sub("topup-race"), *b = open_sub("topup-race");
    if (!a || !b)
        goto out;
    up_error_t err;
    api_key_t k;
    make_key(&k, "topped", "upres_topped", 1, -1, 100, 1.0);
    CHECK(store_key_insert(a, &k, &err) == 0);
    /* 4 x 50 insert attempts (cost 1) against 4 x 50 top-ups of 1, from 100 credits */
    enum { N_CHARGERS = 4 };
    static charger_t chargers[N_CHARGERS];
    static topper_t toppers[N_TOPUP_THREADS];
    pthread_t th[N_CHARGERS + N_TOPUP_THREADS];
    for (int i = 0; i < N_CHARGERS; i++) {
        chargers[i] = (charger_t){
            .st = i % 2 ? b : a, .owner = "topped", .ith = i, .n_tries = 50, .refusal = UP_ERR_CREDITS};
        pthread_create(&th[i], NULL, charge_race, &chargers[i]);
    }
    for (int i = 0; i < N_TOPUP_THREADS; i++) {
        toppers[i] = (topper_t){.st = i % 2 ? a : b};
        pthread_create(&th[N_CHARGERS + i], NULL, topup_race, &toppers[i]);
    }
    for (int i = 0; i < N_CHARGERS + N_TOPUP_THREADS; i++)
        pthread_join(th[i], NULL);
    int ok = 0, refused = 0, other = 0, topped = 0, topup_failed = 0;
    for (int i = 0; i < N_CHARGERS; i++) {
        ok += chargers[i].n_ok;
        refused += chargers[i].n_refused;
        other += chargers[i].n_other;
    }
    for (int i = 0; i < N_TOPUP_THREADS; i++) {
        topped += toppers[i].n_ok;
        topup_failed += toppers[i].n_other;
    }
    CHECKF(ok + refused == 200 && other == 0, "%d charged, %d refused, %d other", ok, refused, other);
    CHECKF(topped == 200 && topup_failed == 0, "%d top-ups, %d failed", topped, topup_failed);
    long long left = balance(a, "topped"), used = -1;
    CHECKF(left == 100 + 200 - ok, "balance %lld after %d charges (want %d)", left, ok, 100 + 200 - ok);
    CHECK(store_key_usage(b, "topped", 0, &used, &err) == 0 && used == ok);
out:
    store_close(a);
    store_close(b);
}

/* ---- listing --------------------------------------------------------------------- */

static int insert_owned(store_t *st, const char *id, const char *owner, const char *model,
                        double created_at) {
    job_t j;
    up_error_t err;
    make_job(&j, id, created_at);
    snprintf(j.owner, sizeof j.owner, "%s", owner);
    snprintf(j.model, sizeof j.model, "%s", model);
    snprintf(j.model_alias, sizeof j.model_alias, "vendor/%s", model);
    snprintf(j.tier, sizeof j.tier, "basic");
    return store_job_insert(st, &j, &err);
}

/* Run f into jobs[]; n, or -1 on an error. Checks owner and order on the way. */
static int list(store_t *st, const store_job_filter_t *f, job_t *jobs, int max) {
    int n = -1;
    up_error_t err;
    if (store_jobs_list(st, f, jobs, max, &n, &err))
        return -1;
    for (int i = 0; i < n; i++) {
        CHECK(strcmp(jobs[i].owner, f->owner) == 0);
        if (i > 0)
            CHECK(jobs[i].seq < jobs[i - 1].seq);
    }
    return n;
}

static void test_list(void) {
    store_t *st = open_sub("list");
    if (!st)
        return;
    up_error_t err;
    job_t jobs[64], got;
    job_status_t was;
    char id[16];
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof id, "a%d", i);
        CHECK(insert_owned(st, id, "alice", i % 2 ? "m2" : "m1", 1000.0 + i) == 0);
        if (i < 5) {
            snprintf(id, sizeof id, "b%d", i);
            CHECK(insert_owned(st, id, "bob", "m1", 1000.0 + i) == 0);
        }
    }
    CHECK(store_job_cancel(st, "a3", &was, &err) == 0);
    CHECK(store_job_fail(st, "a5", NULL, "x", 60, &err) == 0);
    CHECK(store_job_get(st, "a9", &got, &err) == 0);
    CHECK(strcmp(got.model_alias, "vendor/m2") == 0 && strcmp(got.owner, "alice") == 0);
    CHECK(strcmp(got.tier, "basic") == 0 && got.credits == 0 && got.refunded == 0);
    CHECK(store_job_fail(st, "a9", NULL, "x", 60, &err) == 0); /* a free job: nothing to give back */
    CHECK(store_job_get(st, "a9", &got, &err) == 0 && got.refunded == 0);
    /* only store_job_insert_charged records a charge */
    make_job(&got, "a-charged", 0);
    got.credits = 1;
    CHECK(store_job_insert(st, &got, &err) == UP_ERR_INVALID);
    CHECK(store_job_get(st, "a9", &got, &err) == 0);

    store_job_filter_t f = {.owner = "alice"};
    int n = list(st, &f, jobs, 64);
    CHECK(n == 10 && strcmp(jobs[0].id, "a9") == 0 && strcmp(jobs[9].id, "a0") == 0);
    CHECK(n > 0 && jobs[0].seq == got.seq && memcmp(&jobs[0], &got, sizeof got) == 0);
    f.owner = "bob";
    CHECK(list(st, &f, jobs, 64) == 5 && strcmp(jobs[0].id, "b4") == 0);
    f.owner = "carol";
    CHECK(list(st, &f, jobs, 64) == 0);
    f.owner = "";
    CHECK(list(st, &f, jobs, 64) == 0);

    f = (store_job_filter_t){.owner = "alice",
                             .status_mask = 1u << JOB_STATUS_CANCELLED | 1u << JOB_STATUS_FAILED};
    n = list(st, &f, jobs, 64);
    CHECK(n == 3 && strcmp(jobs[0].id, "a9") == 0 && strcmp(jobs[1].id, "a5") == 0 &&
          strcmp(jobs[2].id, "a3") == 0);
    f.status_mask = 1u << JOB_STATUS_QUEUED;
    CHECK(list(st, &f, jobs, 64) == 7);
    f.status_mask = 1u << JOB_STATUS_COMPLETED;
    CHECK(list(st, &f, jobs, 64) == 0);

    f = (store_job_filter_t){.owner = "alice", .model = "m1"};
    n = list(st, &f, jobs, 64);
    CHECK(n == 5 && strcmp(jobs[0].id, "a8") == 0);
    f.model = "m";
    CHECK(list(st, &f, jobs, 64) == 0);
    f = (store_job_filter_t){.owner = "alice", .model = "m2", .status_mask = 1u << JOB_STATUS_QUEUED};
    CHECK(list(st, &f, jobs, 64) == 2); /* a1, a7 (a3 cancelled, a5 and a9 failed) */

    f = (store_job_filter_t){.owner = "alice", .before = 1005.0};
    n = list(st, &f, jobs, 64);
    CHECK(n == 5 && strcmp(jobs[0].id, "a4") == 0);
    f = (store_job_filter_t){.owner = "alice", .after = 1005.0};
    n = list(st, &f, jobs, 64);
    CHECK(n == 4 && strcmp(jobs[3].id, "a6") == 0);
    f = (store_job_filter_t){.owner = "alice", .after = 1002.0, .before = 1006.0};
    n = list(st, &f, jobs, 64);
    CHECK(n == 3 && strcmp(jobs[0].id, "a5") == 0 && strcmp(jobs[2].id, "a3") == 0);

    /* max */
    f = (store_job_filter_t){.owner = "alice"};
    CHECK(list(st, &f, jobs, 2) == 2 && strcmp(jobs[1].id, "a8") == 0);
    n = -1;
    CHECK(store_jobs_list(st, &f, jobs, 0, &n, &err) == 0 && n == 0);
    f.owner = NULL;
    CHECK(store_jobs_list(st, &f, jobs, 8, &n, &err) == UP_ERR_INVALID);

    /* paging by seq while new jobs arrive: each old job once, no new one */
    int seen[10] = {0}, n_new = 0, pages = 0;
    f = (store_job_filter_t){.owner = "alice"};
    for (;;) {
        n = list(st, &f, jobs, 4);
        if (n <= 0)
            break;
        pages++;
        for (int i = 0; i < n; i++) {
            if (jobs[i].id[0] == 'a' && jobs[i].id[1] != 'n')
                seen[atoi(jobs[i].id + 1)]++;
            else
                n_new++;
        }
        f.below_seq = jobs[n - 1].seq;
        snprintf(id, sizeof id, "an%d", pages);
        CHECK(insert_owned(st, id, "alice", "m1", 999.0) == 0); /* older created_at, newer seq */
    }
    CHECKF(pages == 3 && n_new == 0, "%d pages, %d new", pages, n_new);
    for (int i = 0; i < 10; i++)
        CHECKF(seen[i] == 1, "a%d seen %d times", i, seen[i]);
    f = (store_job_filter_t){.owner = "alice"};
    CHECK(list(st, &f, jobs, 64) == 13 && strcmp(jobs[0].id, "an3") == 0);
    store_close(st);
}

/* ---- migration from schema version 1 ------------------------------------------- */

/* The schema of the previous release (user_version 1), as it made it. */
static const char v1_schema[] =
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
    " input_path TEXT NOT NULL DEFAULT '',"
    " input_name TEXT NOT NULL DEFAULT '',"
    " input_format TEXT NOT NULL DEFAULT '',"
    " input_width INTEGER NOT NULL DEFAULT 0,"
    " input_height INTEGER NOT NULL DEFAULT 0,"
    " input_bytes INTEGER NOT NULL DEFAULT 0,"
    " result_path TEXT NOT NULL DEFAULT '',"
    " result_format TEXT NOT NULL DEFAULT '',"
    " output_width INTEGER NOT NULL DEFAULT 0,"
    " output_height INTEGER NOT NULL DEFAULT 0,"
    " result_bytes INTEGER NOT NULL DEFAULT 0,"
    " created_at REAL NOT NULL DEFAULT 0,"
    " started_at REAL NOT NULL DEFAULT 0,"
    " completed_at REAL NOT NULL DEFAULT 0,"
    " expires_at REAL NOT NULL DEFAULT 0,"
    " error TEXT NOT NULL DEFAULT ''"
    ");"
    "CREATE INDEX IF NOT EXISTS jobs_queue ON jobs(status, created_at, seq);"
    "CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs(expires_at) WHERE expires_at > 0;";

/*
 * The schema version 5 made (user_version 5): its jobs hold their input
 * (input_key and the rest), the version-3 and -4 files below are made
 * from it.
 */
#define V5_ACCOUNTS_SQL                                                                                      \
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

#define V5_IDEMPOTENCY_SQL                                                                                   \
    "CREATE TABLE IF NOT EXISTS idempotency ("                                                               \
    " scope TEXT NOT NULL," /* the API key id that sent it, '' = anonymous */                                \
    " key TEXT NOT NULL,"                                                                                    \
    " request_hash BLOB NOT NULL CHECK (length(request_hash) = 32),"                                         \
    " status INTEGER NOT NULL,"                                                                              \
    " body TEXT NOT NULL,"                                                                                   \
    " job_id TEXT NOT NULL,"                                                                                 \
    " created_at REAL NOT NULL,"                                                                             \
    " PRIMARY KEY (scope, key)"                                                                              \
    ");"                                                                                                     \
    "CREATE INDEX IF NOT EXISTS idempotency_time ON idempotency(created_at);"

static const char v5_schema[] =
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
    "CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs(expires_at) WHERE expires_at > 0;" V5_ACCOUNTS_SQL
        V5_IDEMPOTENCY_SQL;

/* Run sql on the database in folder sub (made if needed) with the plain sqlite3 API; 0 on success. */
static int raw_exec(const char *sub, const char *sql) {
    char path[400];
    snprintf(path, sizeof path, "%s/%s", dir, sub);
    mkdir(path, 0777);
    snprintf(path, sizeof path, "%s/%s/upres.db", dir, sub);
    sqlite3 *db = NULL;
    int rc = sqlite3_open(path, &db);
    char *msg = NULL;
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fprintf(stderr, "%s: %s\n", path, msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    sqlite3_close(db);
    return rc;
}

/* A description of the schema of the database in folder sub: every table's columns, every index. */
static void schema_of(const char *sub, char *out, size_t size) {
    char path[400];
    snprintf(path, sizeof path, "%s/%s/upres.db", dir, sub);
    out[0] = '\0';
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    const char *sql = "SELECT m.type || ' ' || m.name || ': ' || coalesce((SELECT group_concat(c.name || ' '"
                      " || c.type || ' ' || c.\"notnull\" || ' ' || coalesce(c.dflt_value, 'NULL') || ' '"
                      " || c.pk, ', ') FROM pragma_table_info(m.name) c), '')"
                      " FROM sqlite_master m WHERE m.type = 'table' OR m.type = 'index' ORDER BY m.name";
    if (sqlite3_open(path, &db) == SQLITE_OK && sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK) {
        size_t len = 0;
        while (sqlite3_step(s) == SQLITE_ROW && len < size) {
            int w = snprintf(out + len, size - len, "%s\n", (const char *)sqlite3_column_text(s, 0));
            len += w > 0 ? (size_t)w : 0;
        }
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
}

static int user_version(const char *sub) {
    char path[400];
    snprintf(path, sizeof path, "%s/%s/upres.db", dir, sub);
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int v = -1;
    if (sqlite3_open(path, &db) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

static void test_migrate_v1(void) {
    char sql[4096];
    snprintf(sql, sizeof sql,
             "%s INSERT INTO jobs (id, status, attempts, model, scale, format, input_path, input_name,"
             " input_format, input_width, input_height, input_bytes, result_path, result_format,"
             " output_width, output_height, result_bytes, created_at, started_at, completed_at, expires_at)"
             " VALUES ('old-1', 2, 1, 'realesrgan-x4plus', 4, 'png', '', 'cat.png', 'png', 10, 20, 300,"
             " '/x/data/results/old-1-a1.png', 'png', 40, 80, 5000, 1000.5, 1001, 1002, 99999);"
             " PRAGMA user_version = 1;",
             v1_schema);
    CHECK(raw_exec("v1", sql) == 0);
    CHECK(user_version("v1") == 1);

    store_t *st = open_sub("v1");
    if (!st)
        return;
    up_error_t err;
    job_t got;
    CHECK(store_job_get(st, "old-1", &got, &err) == 0);
    CHECK(got.seq == 1 && got.status == JOB_STATUS_COMPLETED && got.attempts == 1);
    CHECK(strcmp(got.model, "realesrgan-x4plus") == 0 && got.scale == 4 && got.created_at == 1000.5);
    CHECKF(strcmp(got.result_key, "results/old-1-a1.png") == 0, "%s",
           got.result_key); /* a path became a key */
    CHECK(got.output_width == 40 && got.result_bytes == 5000);
    CHECK(got.model_alias[0] == '\0' && got.owner[0] == '\0' && got.tier[0] == '\0');
    CHECK(got.credits == 0 && got.refunded == 0);

    /* the new parts work on the migrated file */
    api_key_t k;
    make_key(&k, "k1", "upres_k1", 7, 5, 5, 1.0);
    CHECK(store_key_insert(st, &k, &err) == 0);
    store_charge_t c;
    CHECKF(insert_charged(st, "new-1", "k1", 2, 0, &c, &err) == 0, "%s", err.msg);
    CHECK(store_job_get(st, "new-1", &got, &err) == 0 && got.seq == 2 && got.credits == 2);
    store_job_filter_t f = {.owner = "k1"};
    job_t jobs[4];
    int n = -1;
    CHECK(store_jobs_list(st, &f, jobs, 4, &n, &err) == 0 && n == 1);
    f.owner = "";
    CHECK(store_jobs_list(st, &f, jobs, 4, &n, &err) == 0 && n == 1 && strcmp(jobs[0].id, "old-1") == 0);
    store_close(st);
    CHECK(user_version("v1") == SQLITE_SCHEMA_NOW);

    /* migrated and new databases have the same schema */
    store_t *fresh = open_sub("v2-fresh");
    store_close(fresh);
    char a[8192], b[8192];
    schema_of("v1", a, sizeof a);
    schema_of("v2-fresh", b, sizeof b);
    CHECKF(a[0] && strcmp(a, b) == 0, "migrated:\n%s\nnew:\n%s", a, b);
    CHECK(strstr(b, "index jobs_owner") != NULL && strstr(b, "table keys: id TEXT 1 NULL 1") != NULL);

    /* reopening a migrated file changes nothing */
    st = open_sub("v1");
    CHECK(st && store_job_get(st, "new-1", &got, &err) == 0);
    store_close(st);

    /* a database from a newer upres is refused */
    CHECK(raw_exec("v99", "CREATE TABLE t (x); PRAGMA user_version = 99;") == 0);
    char sub[300];
    snprintf(sub, sizeof sub, "%s/v99", dir);
    st = NULL;
    CHECK(store_open(sub, &st, &err) == UP_ERR_IO && st == NULL);
    CHECKF(strstr(err.msg, "newer") != NULL, "%s", err.msg);
}

/* ---- migration from schema version 3 ------------------------------------------- */

/*
 * A version-3 file: a version-5 one with the key columns named as they
 * were and the claim columns taken off again (the columns version 4 added,
 * in the order it added them), and a job a version-3 upres left processing
 * when it died.
 */
static void test_migrate_v3(void) {
    char sql[8192];
    snprintf(sql, sizeof sql,
             "%s ALTER TABLE jobs RENAME COLUMN input_key TO input_path;"
             " ALTER TABLE jobs RENAME COLUMN result_key TO result_path;"
             " ALTER TABLE jobs DROP COLUMN not_before; ALTER TABLE jobs DROP COLUMN lease_until;"
             " ALTER TABLE jobs DROP COLUMN lease_s; ALTER TABLE jobs DROP COLUMN worker;"
             " INSERT INTO jobs (id, status, attempts, model, scale, created_at, started_at)"
             " VALUES ('v3-run', 1, 1, 'realesr-animevideov3', 2, 10, 11);"
             " INSERT INTO jobs (id, status, model, scale, created_at) VALUES ('v3-wait', 0, 'x', 2, 12);"
             " PRAGMA user_version = 3;",
             v5_schema);
    CHECK(raw_exec("v3", sql) == 0);
    CHECK(user_version("v3") == 3);
    store_t *st = open_sub("v3");
    if (!st)
        return;
    CHECK(user_version("v3") == SQLITE_SCHEMA_NOW);
    up_error_t err;
    job_t got;
    CHECK(store_job_get(st, "v3-run", &got, &err) == 0 && got.status == JOB_STATUS_PROCESSING);
    CHECK(got.attempts == 1 && got.worker[0] == '\0' && got.lease_until == 0 && got.not_before == 0);
    /* it has no lease: the first rescue takes it, as the start-up recovery did */
    job_t jobs[4];
    int n = -1;
    CHECK(store_jobs_rescue(st, 3, 0, 60, jobs, 4, &n, &err) == 0 && n == 1 &&
          strcmp(jobs[0].id, "v3-run") == 0);
    CHECK(jobs[0].status == JOB_STATUS_QUEUED && jobs[0].attempts == 1);
    CHECK(claim(st, &got, &err) == 0 && strcmp(got.id, "v3-run") == 0 && got.attempts == 2);
    CHECK(strcmp(got.worker, WORKER) == 0 && got.lease_until > now_s() + 50);
    CHECK(claim(st, &got, &err) == 0 && strcmp(got.id, "v3-wait") == 0 && got.attempts == 1);
    store_close(st);
    char a[8192], b[8192];
    schema_of("v3", a, sizeof a);
    schema_of("v2-fresh", b, sizeof b);
    CHECKF(a[0] && strcmp(a, b) == 0, "migrated:\n%s\nnew:\n%s", a, b);
    CHECK(strstr(b, "lease_until REAL 1 0 0") != NULL && strstr(b, "worker TEXT 1 '' 0") != NULL);
}

/* ---- blob keys, and the migration from schema version 4 ------------------------------ */

static int collect_key(const char *key, void *ctx) {
    char *all = ctx;
    size_t n = strlen(all);
    snprintf(all + n, 4096 - n, "%s;", key);
    return 0;
}

/* 1 when the ';'-ended lists a and b hold the same keys, in any order (no key twice). */
static int same_keys(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    for (const char *p = a; *p; p++)
        na += *p == ';';
    for (const char *p = b; *p; p++)
        nb += *p == ';';
    if (na != nb)
        return 0;
    for (const char *p = b; *p;) {
        const char *end = strchr(p, ';');
        char key[300], pat[304];
        snprintf(key, sizeof key, "%.*s", (int)(end - p), p);
        snprintf(pat, sizeof pat, ";%s;", key);
        char all[4100];
        snprintf(all, sizeof all, ";%s", a);
        if (!strstr(all, pat))
            return 0;
        p = end + 1;
    }
    return 1;
}

static void test_blob_keys(void) {
    store_t *st = open_sub("keys5");
    if (!st)
        return;
    up_error_t err;
    job_t j, got;
    make_job(&j, "k5-a", 1.0);
    snprintf(j.input_key, sizeof j.input_key, "/srv/data/uploads/k5-a.png"); /* a path: refused */
    CHECK(store_job_insert(st, &j, &err) == UP_ERR_INVALID && strstr(err.msg, "blob key"));
    snprintf(j.input_key, sizeof j.input_key, "uploads/../k5-a.png");
    CHECK(store_job_insert(st, &j, &err) == UP_ERR_INVALID);
    snprintf(j.input_key, sizeof j.input_key, "uploads/k5-a.png");
    CHECKF(store_job_insert(st, &j, &err) == 0, "%s", err.msg);
    make_job(&j, "k5-b", 2.0);
    CHECK(store_job_insert(st, &j, &err) == 0);
    CHECK(claim(st, &got, &err) == 0 && strcmp(got.id, "k5-a") == 0);
    store_fence_t fence = {.worker = WORKER, .attempt = got.attempts};
    CHECK(store_job_start(st, "k5-a", &fence, NULL, &err) == 0);
    snprintf(got.result_key, sizeof got.result_key, "/abs/results/k5-a-a1.png");
    snprintf(got.result_format, sizeof got.result_format, "png");
    CHECK(store_job_complete(st, &got, &fence, 60, &err) == UP_ERR_INVALID);
    snprintf(got.result_key, sizeof got.result_key, "results/k5-a-a1.png");
    CHECKF(store_job_complete(st, &got, &fence, 60, &err) == 0, "%s", err.msg);
    char all[4096] = "";
    CHECK(store_blobs_referenced(st, collect_key, all, &err) == 0);
    CHECKF(same_keys(all, "uploads/k5-a.png;results/k5-a-a1.png;uploads/k5-b.png;"), "%s", all);
    asset_t a;
    CHECK(store_asset_due(st, "k5-a", now_s(), &a, &err) == 0 && store_asset_deleted(st, a.id, &err) == 0);
    all[0] = '\0';
    CHECK(store_blobs_referenced(st, collect_key, all, &err) == 0);
    CHECKF(same_keys(all, "results/k5-a-a1.png;uploads/k5-b.png;"), "%s", all);
    store_close(st);
}

/*
 * A version-4 file: a version-5 one with the key columns renamed back to the
 * paths they were, holding the paths a version-4 upres stored: absolute,
 * relative to the folder it ran in (-d data, -d ./data), already a key,
 * and values that name no upload or result.
 */
static void test_migrate_v4(void) {
    char sql[8192];
    snprintf(sql, sizeof sql,
             "%s ALTER TABLE jobs RENAME COLUMN input_key TO input_path;"
             " ALTER TABLE jobs RENAME COLUMN result_key TO result_path;"
             " INSERT INTO jobs (id, status, model, scale, input_path, result_path, created_at) VALUES"
             " ('abs', 2, 'm', 2, '', '/srv/upres/data/results/abs-a1.png', 1),"
             " ('rel', 0, 'm', 2, 'data/uploads/rel.png', '', 2),"
             " ('dot', 2, 'm', 2, './data/uploads/dot.jpg', './data/results/dot-a2.webp', 3),"
             " ('key', 0, 'm', 2, 'uploads/key.png', '', 4),"
             " ('up', 0, 'm', 2, '../a/data/uploads/up.png', '', 5),"
             " ('odd', 2, 'm', 2, '/tmp/elsewhere.png', 'results', 6),"
             " ('none', 5, 'm', 2, '', '', 7);"
             " PRAGMA user_version = 4;",
             v5_schema);
    CHECK(raw_exec("v4", sql) == 0);
    CHECK(user_version("v4") == 4);
    store_t *st = open_sub("v4");
    if (!st)
        return;
    CHECK(user_version("v4") == SQLITE_SCHEMA_NOW);
    struct {
        const char *id, *in, *res;
    } want[] = {
        {"abs", "", "results/abs-a1.png"},
        {"rel", "uploads/rel.png", ""},
        {"dot", "uploads/dot.jpg", "results/dot-a2.webp"},
        {"key", "uploads/key.png", ""},
        {"up", "uploads/up.png", ""},
        {"odd", "", ""},
        {"none", "", ""},
    };
    up_error_t err;
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        job_t got;
        CHECK(store_job_get(st, want[i].id, &got, &err) == 0);
        CHECKF(strcmp(got.input_key, want[i].in) == 0 && strcmp(got.result_key, want[i].res) == 0,
               "%s: '%s' '%s'", want[i].id, got.input_key, got.result_key);
    }
    /* the queued job with a converted key still runs: claimable, its key intact */
    job_t got;
    CHECK(claim(st, &got, &err) == 0 && strcmp(got.id, "rel") == 0 &&
          strcmp(got.input_key, "uploads/rel.png") == 0);
    store_close(st);
    char a[8192], b[8192];
    schema_of("v4", a, sizeof a);
    schema_of("v2-fresh", b, sizeof b);
    CHECKF(a[0] && strcmp(a, b) == 0, "migrated:\n%s\nnew:\n%s", a, b);
    CHECK(strstr(b, "asset_id TEXT 1 '' 0") != NULL && strstr(b, "result_key TEXT 1 '' 0") != NULL);
    CHECK(strstr(b, "input_key") == NULL); /* the inputs are assets now */
    /* reopening changes nothing */
    st = open_sub("v4");
    CHECK(st && store_job_get(st, "dot", &got, &err) == 0 &&
          strcmp(got.result_key, "results/dot-a2.webp") == 0);
    store_close(st);
}

/* ---- migration from schema version 5: assets and steps ------------------------------ */

/*
 * A version-5 file holding a queued job (its input in use), a completed one
 * (input deleted, result kept) and a failed one whose input was left
 * behind: each input becomes its job's one-shot asset, due when the job
 * has ended and its time has come; each job gets the pipeline its settings
 * describe.
 */
static void test_migrate_v5(void) {
    char sql[8192];
    snprintf(sql, sizeof sql,
             "%s INSERT INTO keys (id, hash, credits) VALUES ('k5', zeroblob(32), 10);"
             " INSERT INTO jobs (id, status, model, scale, format, quality, tile, input_key, input_name,"
             " input_format, input_width, input_height, input_bytes, result_key, created_at, completed_at,"
             " expires_at, owner, credits) VALUES"
             " ('q5', 0, 'realesrgan-x4plus', 4, 'webp', 80, 0, 'uploads/q5.png', 'cat.png', 'png', 10, 20,"
             " 300, '', 100, 0, 0, 'k5', 1),"
             " ('c5', 2, 'realesr-animevideov3', 2, '', 0, 64, '', 'dog.jpg', 'jpg', 30, 40, 500,"
             " 'results/c5-a1.jpg', 101, 102, 5000, '', 0),"
             " ('f5', 3, 'm', 2, 'png', 0, 0, 'uploads/f5.png', 'left.png', 'png', 1, 1, 9, '', 103, 104,"
             " 6000, '', 0);"
             " PRAGMA user_version = 5;",
             v5_schema);
    CHECK(raw_exec("v5", sql) == 0);
    CHECK(user_version("v5") == 5);
    store_t *st = open_sub("v5");
    if (!st)
        return;
    CHECK(user_version("v5") == SQLITE_SCHEMA_NOW);
    up_error_t err;
    job_t got;
    asset_t a;
    /* the queued job: its input is its asset, read through the job as before */
    CHECK(store_job_get(st, "q5", &got, &err) == 0 && strcmp(got.asset_id, "q5") == 0);
    CHECK(strcmp(got.input_key, "uploads/q5.png") == 0 && strcmp(got.input_name, "cat.png") == 0);
    CHECK(strcmp(got.input_format, "png") == 0 && got.input_width == 10 && got.input_height == 20);
    CHECK(got.input_bytes == 300 && got.report[0] == '\0');
    CHECKF(strcmp(got.steps, "[{\"op\":\"upscale\",\"model\":\"realesrgan-x4plus\",\"scale\":4,\"tile\":0},"
                             "{\"op\":\"encode\",\"format\":\"webp\",\"quality\":80}]") == 0,
           "%s", got.steps);
    CHECK(store_asset_get(st, "q5", &a, &err) == 0 && strcmp(a.owner, "k5") == 0 && a.frames == 1);
    CHECK(a.created_at == 100 && a.expires_at == 100 && a.bytes == 300);
    CHECK(store_asset_due(st, "q5", now_s(), &a, &err) == UP_ERR_NOT_FOUND); /* its job is queued */
    /* the completed job: no input left, its result kept; format "" leaves the encode's format out */
    CHECK(store_job_get(st, "c5", &got, &err) == 0 && got.input_key[0] == '\0');
    CHECK(strcmp(got.input_name, "dog.jpg") == 0 && strcmp(got.result_key, "results/c5-a1.jpg") == 0);
    CHECKF(strcmp(got.steps, "[{\"op\":\"upscale\",\"model\":\"realesr-animevideov3\",\"scale\":2,"
                             "\"tile\":64},{\"op\":\"encode\",\"quality\":0}]") == 0,
           "%s", got.steps);
    CHECK(store_asset_due(st, "c5", now_s(), &a, &err) == UP_ERR_NOT_FOUND); /* no file */
    /* the failed job's input, left behind: due at the job's expiry */
    CHECK(store_asset_get(st, "f5", &a, &err) == 0 && a.expires_at == 6000);
    CHECK(store_asset_due(st, "f5", 5999, &a, &err) == UP_ERR_NOT_FOUND);
    CHECK(store_asset_due(st, "f5", 6000, &a, &err) == 0 && strcmp(a.key, "uploads/f5.png") == 0);
    char all[4096] = "";
    CHECK(store_blobs_referenced(st, collect_key, all, &err) == 0);
    CHECKF(same_keys(all, "uploads/q5.png;results/c5-a1.jpg;uploads/f5.png;"), "%s", all);
    /* the charge stays the job's; the queued job runs, its input intact */
    long long used = -1;
    CHECK(store_key_usage(st, "k5", 0, &used, &err) == 0 && used == 1);
    CHECK(claim(st, &got, &err) == 0 && strcmp(got.id, "q5") == 0 &&
          strcmp(got.input_key, "uploads/q5.png") == 0);
    /* a one-shot asset feeds no second job */
    job_t j;
    make_job(&j, "after5", 0);
    snprintf(j.owner, sizeof j.owner, "k5");
    snprintf(j.asset_id, sizeof j.asset_id, "q5");
    CHECK(store_job_insert(st, &j, &err) == UP_ERR_NOT_FOUND);
    store_close(st);
    char x[8192], y[8192];
    schema_of("v5", x, sizeof x);
    schema_of("v2-fresh", y, sizeof y);
    CHECKF(x[0] && strcmp(x, y) == 0, "migrated:\n%s\nnew:\n%s", x, y);
    CHECK(strstr(y, "table assets: id TEXT 1 NULL 1") && strstr(y, "index jobs_asset") &&
          strstr(y, "index assets_expiry") && strstr(y, "report TEXT 1 '' 0"));
    /* reopening changes nothing */
    st = open_sub("v5");
    CHECK(st && store_job_get(st, "f5", &got, &err) == 0 && strcmp(got.input_key, "uploads/f5.png") == 0);
    store_close(st);
}

/* ---- migration from schema version 6: guest sessions and a job's meta -------------------- */

/* The schema version 6 made (user_version 6): jobs with asset_id, steps and report; keys without guests. */
static const char v6_schema[] =
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
    " owner TEXT NOT NULL DEFAULT '',"
    " tier TEXT NOT NULL DEFAULT '',"
    " credits INTEGER NOT NULL DEFAULT 0,"
    " refunded INTEGER NOT NULL DEFAULT 0,"
    " keep_s REAL NOT NULL DEFAULT 0,"
    " colour TEXT NOT NULL DEFAULT '',"
    " worker TEXT NOT NULL DEFAULT '',"
    " lease_s REAL NOT NULL DEFAULT 0,"
    " lease_until REAL NOT NULL DEFAULT 0,"
    " not_before REAL NOT NULL DEFAULT 0,"
    " asset_id TEXT NOT NULL DEFAULT '',"
    " steps TEXT NOT NULL DEFAULT '',"
    " report TEXT NOT NULL DEFAULT ''"
    ");"
    "CREATE INDEX IF NOT EXISTS jobs_queue ON jobs(status, created_at, seq);"
    "CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs(expires_at) WHERE expires_at > 0;" V5_ACCOUNTS_SQL
        V5_IDEMPOTENCY_SQL "CREATE TABLE IF NOT EXISTS assets ("
    " id TEXT NOT NULL PRIMARY KEY,"
    " owner TEXT NOT NULL DEFAULT '',"
    " key TEXT NOT NULL DEFAULT '',"
    " name TEXT NOT NULL DEFAULT '',"
    " format TEXT NOT NULL DEFAULT '',"
    " width INTEGER NOT NULL DEFAULT 0,"
    " height INTEGER NOT NULL DEFAULT 0,"
    " frames INTEGER NOT NULL DEFAULT 1,"
    " bytes INTEGER NOT NULL DEFAULT 0,"
    " created_at REAL NOT NULL DEFAULT 0,"
    " expires_at REAL NOT NULL DEFAULT 0"
    ");"
    "CREATE INDEX IF NOT EXISTS assets_expiry ON assets(expires_at) WHERE key <> '';"
    "CREATE INDEX IF NOT EXISTS jobs_asset ON jobs(asset_id, status);";

/*
 * A version-6 file holding a key, a queued job on a shared asset, and a
 * completed and a since-downloaded job of one model: every key becomes an
 * operator's key never reset, every job gets an empty meta, and the new
 * reads work on the rows that were there.
 */
static void test_migrate_v6(void) {
    char sql[8192];
    snprintf(
        sql, sizeof sql,
        "%s INSERT INTO keys (id, name, prefix, hash, tier, quota, credits, created_at)"
        " VALUES ('k6', 'six', 'upres_k6', zeroblob(32), 'basic', 10, 5, 1);"
        " INSERT INTO assets (id, owner, key, name, format, width, height, bytes, created_at, expires_at)"
        " VALUES ('a6', 'k6', 'uploads/a6.png', 'a.png', 'png', 100, 50, 10, 90, 1e12),"
        " ('c6', '', '', 'c.png', 'png', 10, 10, 10, 5, 5), ('x6', '', '', 'x.png', 'png', 10, 10, 10, 6, 6);"
        " INSERT INTO jobs (id, status, model, scale, created_at, started_at, completed_at, output_width,"
        " output_height, result_key, owner, credits, asset_id, steps) VALUES"
        " ('q6', 0, 'm6', 2, 100, 0, 0, 0, 0, '', 'k6', 1, 'a6', '[{\"op\":\"upscale\"}]'),"
        " ('c6', 2, 'm6', 2, 5, 10, 14, 2000, 1000, 'results/c6-a1.png', '', 0, 'c6', ''),"
        " ('x6', 5, 'm6', 2, 6, 20, 21, 1000, 1000, '', '', 0, 'x6', '');"
        " PRAGMA user_version = 6;",
        v6_schema);
    CHECK(raw_exec("v6", sql) == 0);
    CHECK(user_version("v6") == 6);
    store_t *st = open_sub("v6");
    if (!st)
        return;
    CHECK(user_version("v6") == SQLITE_SCHEMA_NOW);
    up_error_t err;
    /* the key: an operator's, never reset, listed */
    api_key_t k, *keys = NULL;
    int n = -1;
    CHECK(store_key_find(st, "k6", &k, &err) == 0 && k.guest == 0 && k.reset_at == 0);
    CHECK(k.quota == 10 && k.credits == 5 && strcmp(k.prefix, "upres_k6") == 0);
    CHECK(store_key_list(st, &keys, &n, &err) == 0 && n == 1 && keys && strcmp(keys[0].id, "k6") == 0);
    free(keys);
    long long reset = -1;
    CHECK(store_keys_reset_guests(st, now_s(), &reset, &err) == 0 && reset == 0);
    CHECK(store_key_find(st, "k6", &k, &err) == 0 && k.reset_at == 0);
    /* the jobs: no meta, everything else as it was */
    job_t got;
    CHECK(store_job_get(st, "q6", &got, &err) == 0 && got.meta[0] == '\0');
    CHECK(strcmp(got.steps, "[{\"op\":\"upscale\"}]") == 0 && strcmp(got.input_key, "uploads/a6.png") == 0);
    CHECK(store_job_get(st, "c6", &got, &err) == 0 && got.meta[0] == '\0' && got.output_width == 2000);
    /* the new reads over the old rows */
    int pos = -1;
    double mpx = -1, rate = -1;
    CHECK(store_job_queue_position(st, "q6", &pos, &mpx, &err) == 0 && pos == 1 && mpx > 0.0199 &&
          mpx < 0.0201);
    CHECKF(store_model_rate(st, "m6", 10, &rate, &n, &err) == 0 && n == 2 && rate > 5.0 / 3 - 1e-9 &&
               rate < 5.0 / 3 + 1e-9,
           "n %d rate %f", n, rate);
    long long jobs[2], credits[2];
    CHECK(store_usage_daily(st, "k6", 0, 2, jobs, credits, &err) == 0 && jobs[0] == 1 && credits[0] == 1 &&
          jobs[1] == 0);
    /* guests and meta on the migrated file */
    make_key(&k, "g6", "", 6, 3, -1, 2.0);
    k.guest = 1;
    CHECK(store_key_insert(st, &k, &err) == 0);
    CHECK(store_key_list(st, &keys, &n, &err) == 0 && n == 1);
    free(keys);
    job_t j;
    make_job(&j, "m6-new", 0);
    snprintf(j.owner, sizeof j.owner, "g6");
    snprintf(j.meta, sizeof j.meta, "{\"entry\":\"shrink\"}");
    CHECKF(store_job_insert(st, &j, &err) == 0, "%s", err.msg);
    CHECK(store_job_get(st, "m6-new", &got, &err) == 0 && strcmp(got.meta, "{\"entry\":\"shrink\"}") == 0);
    store_close(st);
    char x[8192], y[8192];
    schema_of("v6", x, sizeof x);
    schema_of("v2-fresh", y, sizeof y);
    CHECKF(x[0] && strcmp(x, y) == 0, "migrated:\n%s\nnew:\n%s", x, y);
    CHECK(strstr(y, "guest INTEGER 1 0 0") && strstr(y, "reset_at REAL 1 0 0") &&
          strstr(y, "meta TEXT 1 '' 0") && strstr(y, "index keys_guest") &&
          strstr(y, "index jobs_model_done"));
    /* reopening changes nothing */
    st = open_sub("v6");
    CHECK(st && store_key_find(st, "g6", &k, &err) == 0 && k.guest == 1);
    CHECK(st && store_job_get(st, "m6-new", &got, &err) == 0 &&
          strcmp(got.meta, "{\"entry\":\"shrink\"}") == 0);
    store_close(st);
}

/* ---- opening from a URL ------------------------------------------------------------ */

static int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static void test_urls(void) {
    char base[300], path[400], url[500], cwd[1024];
    snprintf(base, sizeof base, "%s/urls", dir);
    mkdir(base, 0777);
    up_error_t err;
    store_t *st = NULL, *again = NULL;
    job_t j, got;

    /* sqlite:///ABSOLUTE */
    snprintf(url, sizeof url, "sqlite://%s/abs.db", base);
    CHECKF(store_open_url(url, "/nonexistent-data-dir", &st, &err) == 0, "%s: %s", url, err.msg);
    snprintf(path, sizeof path, "%s/abs.db", base);
    CHECK(file_exists(path));
    make_job(&j, "url-abs", 1.0);
    CHECK(st && store_job_insert(st, &j, &err) == 0);
    store_close(st);
    st = NULL;

    /* sqlite:RELATIVE: resolved at open, so a chdir afterwards changes nothing */
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    snprintf(path, sizeof path, "%s/rel", base);
    mkdir(path, 0777);
    CHECK(chdir(base) == 0);
    CHECKF(store_open_url("sqlite:rel/r.db", NULL, &st, &err) == 0, "%s", err.msg);
    CHECK(chdir("/") == 0);
    make_job(&j, "url-rel", 2.0);
    CHECK(st && store_job_insert(st, &j, &err) == 0);
    snprintf(url, sizeof url, "sqlite://%s/rel/r.db", base);
    CHECKF(store_open_url(url, NULL, &again, &err) == 0, "%s", err.msg);
    CHECK(again && store_job_get(again, "url-rel", &got, &err) == 0);
    store_close(again);
    store_close(st);
    st = again = NULL;
    CHECK(chdir(cwd) == 0);
    snprintf(path, sizeof path, "%s/rel/r.db", base);
    CHECK(file_exists(path));

    /* NULL and "": data_dir/upres.db, as store_open */
    snprintf(path, sizeof path, "%s/default", base);
    CHECKF(store_open_url("", path, &st, &err) == 0, "%s", err.msg);
    make_job(&j, "url-default", 3.0);
    CHECK(st && store_job_insert(st, &j, &err) == 0);
    store_close(st);
    st = NULL;
    CHECKF(store_open_url(NULL, path, &st, &err) == 0, "%s", err.msg);
    CHECK(st && store_job_get(st, "url-default", &got, &err) == 0);
    store_close(st);
    st = NULL;
    CHECK(store_open(path, &st, &err) == 0 && store_job_get(st, "url-default", &got, &err) == 0);
    store_close(st);
    st = NULL;
    snprintf(path, sizeof path, "%s/default/upres.db", base);
    CHECK(file_exists(path));

    /* another scheme: this build has no such backend; malformed URLs */
    st = (store_t *)&st; /* any non-NULL value: a refusal sets *out to NULL */
    CHECK(store_open_url("mysql://upres@db.example/upres", base, &st, &err) == UP_ERR_UNSUPPORTED &&
          st == NULL);
    CHECKF(strstr(err.msg, "mysql") && strstr(err.msg, "backends: sqlite, postgresql"), "%s", err.msg);
    CHECK(store_url_check("mysql:x", &err) == UP_ERR_UNSUPPORTED);
    /* PostgreSQL's URLs are libpq's: checked here for their scheme only (test_pg_only opens them) */
    CHECK(store_url_check("postgresql://upres@db.example/upres", &err) == 0);
    CHECK(store_url_check("postgres://upres@db.example:5433/upres?sslmode=require", &err) == 0);
    CHECK(store_url_check("postgresql:///upres?host=/run/postgresql", &err) == 0);
    static const char *const bad[] = {
        "x!",          "/abs/path.db",       "rel.db", "sqlite:", "sqlite://",
        "sqlite:dir/", "sqlite://host/x.db", "1x:y",   ":x",      "postgresql:x",
        "postgres:/x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECKF(store_url_check(bad[i], &err) == UP_ERR_INVALID, "%s", bad[i]);
        CHECKF(store_open_url(bad[i], base, &st, &err) == UP_ERR_INVALID && st == NULL, "%s", bad[i]);
        CHECKF(strstr(err.msg, "sqlite:///ABSOLUTE/PATH.db"), "%s: %s", bad[i], err.msg);
    }
    CHECK(store_url_check(NULL, &err) == 0 && store_url_check("", &err) == 0);
    CHECK(store_url_check("sqlite:///x.db", &err) == 0 && store_url_check("sqlite:x.db", &err) == 0);
    /* a refusal names the URL, ready to print, with any password hidden */
    static const struct {
        const char *url, *shown;
    } secret[] = {
        {"postgresql:u:s3cret@h/db", "bad store 'postgresql:u:***@h/db'"},
        {"mysql://u:s3cret@h/db", "bad store 'mysql://u:***@h/db'"},
        {"postgres:h?sslmode=require&password=s3cret&x=1",
         "bad store 'postgres:h?sslmode=require&password=***&x=1'"},
        {"sqlite:", "bad store 'sqlite:'"},
    };
    for (size_t i = 0; i < sizeof secret / sizeof *secret; i++) {
        CHECK(store_url_check(secret[i].url, &err) != 0);
        CHECKF(!strncmp(err.msg, secret[i].shown, strlen(secret[i].shown)) && !strstr(err.msg, "s3cret"),
               "%s", err.msg);
    }
    /* a folder that is missing: the open fails, nothing is made */
    snprintf(url, sizeof url, "sqlite://%s/missing/x.db", base);
    CHECK(store_open_url(url, NULL, &st, &err) == UP_ERR_IO && st == NULL);
}

/* ---- leases and fencing ------------------------------------------------------------ */

static void test_leases(void) {
    /* two handles on one file, as two processes: A's workers run on a, B's on b */
    store_t *a = open_sub("leases"), *b = open_sub("leases");
    if (!a || !b) {
        store_close(a);
        store_close(b);
        return;
    }
    up_error_t err;
    job_t j, got, jobs[4];
    int n = -1, cancel = -1;
    const char *A = "host-a:100:0:aaaa0000", *B = "host-b:200:0:bbbb0000";
    CHECK(store_job_claim(a, "", 1, NULL, &got, &err) == UP_ERR_INVALID);
    CHECK(store_job_claim(a, A, 0, NULL, &got, &err) == UP_ERR_INVALID);

    /* a claim records its worker, attempt and lease; the holder's writes renew the lease */
    make_job(&j, "l1", 1.0);
    CHECK(store_job_insert(a, &j, &err) == 0);
    double t0 = now_s();
    CHECK(store_job_claim(a, A, 0.4, NULL, &got, &err) == 0 && strcmp(got.id, "l1") == 0);
    CHECK(strcmp(got.worker, A) == 0 && got.attempts == 1 && got.lease_s == 0.4);
    CHECKF(got.lease_until >= t0 + 0.4 && got.lease_until <= now_s() + 0.4, "%f", got.lease_until - t0);
    store_fence_t fa = {.worker = A, .attempt = 1};
    sleep_s(0.1);
    CHECK(store_job_start(a, "l1", &fa, &cancel, &err) == 0 && cancel == 0);
    job_t after;
    CHECK(store_job_get(b, "l1", &after, &err) == 0 && after.lease_until > got.lease_until + 0.05);
    sleep_s(0.1);
    CHECK(store_job_progress(a, "l1", &fa, 30, &cancel, &err) == 0 && cancel == 0);
    CHECK(store_job_get(b, "l1", &got, &err) == 0 && got.lease_until > after.lease_until + 0.05);
    sleep_s(0.1);
    CHECK(store_job_heartbeat(a, "l1", &fa, &cancel, &err) == 0 && cancel == 0);
    CHECK(store_job_get(b, "l1", &after, &err) == 0 && after.lease_until > got.lease_until + 0.05);
    CHECK(after.progress == 30 && after.status == JOB_STATUS_PROCESSING);

    /* a live lease is nobody else's: a rescue leaves it, another worker's writes are refused */
    CHECK(store_jobs_rescue(b, 3, 0, 60, jobs, 4, &n, &err) == 0 && n == 0);
    store_fence_t fb = {.worker = B, .attempt = 1}, fa2 = {.worker = A, .attempt = 2};
    CHECK(store_job_progress(b, "l1", &fb, 50, NULL, &err) == UP_ERR_CONFLICT);
    CHECKF(strstr(err.msg, "superseded") && strstr(err.msg, A), "%s", err.msg);
    CHECK(store_job_heartbeat(b, "l1", &fa2, NULL, &err) == UP_ERR_CONFLICT);
    CHECK(store_job_fail(b, "l1", &fb, "x", 60, &err) == UP_ERR_CONFLICT);
    CHECK(store_job_cancelled(b, "l1", &fb, 60, &err) == UP_ERR_CONFLICT);
    CHECK(store_job_requeue(b, "l1", &fb, &err) == UP_ERR_CONFLICT);
    got = after;
    CHECK(store_job_complete(b, &got, &fb, 60, &err) == UP_ERR_CONFLICT);
    CHECK(store_job_get(a, "l1", &got, &err) == 0 && got.status == JOB_STATUS_PROCESSING &&
          got.progress == 30);

    /* A stops renewing (its process died or froze): once the lease is over, B's process rescues the job */
    sleep_s(0.5);
    t0 = now_s();
    CHECK(store_jobs_rescue(b, 3, 0.6, 60, jobs, 4, &n, &err) == 0 && n == 1);
    CHECK(strcmp(jobs[0].id, "l1") == 0 && jobs[0].status == JOB_STATUS_QUEUED && jobs[0].attempts == 1);
    CHECK(jobs[0].worker[0] == '\0' && jobs[0].lease_until == 0 && jobs[0].progress == 0);
    /* backoff: claimable after backoff x attempts (0.6 s x 1) */
    CHECKF(jobs[0].not_before >= t0 + 0.6 && jobs[0].not_before <= now_s() + 0.6, "%f",
           jobs[0].not_before - t0);
    CHECK(store_jobs_rescue(a, 3, 0.6, 60, jobs, 4, &n, &err) == 0 && n == 0); /* once */
    /* the old holder is refused at once, before anyone claims the job again */
    CHECK(store_job_progress(a, "l1", &fa, 60, NULL, &err) == UP_ERR_CONFLICT);
    CHECK(store_job_heartbeat(a, "l1", &fa, NULL, &err) == UP_ERR_CONFLICT);
    CHECK(store_job_fail(a, "l1", &fa, "late", 60, &err) == UP_ERR_CONFLICT);
    CHECK(status_of(a, "l1") == JOB_STATUS_QUEUED);
    CHECK(store_job_claim(b, B, 5, NULL, &got, &err) == UP_ERR_NOT_FOUND); /* still backing off */
    while (now_s() < jobs[0].not_before + 0.01)
        sleep_s(0.02);
    CHECK(store_job_claim(b, B, 5, NULL, &got, &err) == 0 && strcmp(got.id, "l1") == 0 && got.attempts == 2);
    fb.attempt = 2;

    /* the superseded worker wakes up: its progress, complete and fail are refused, the winner's are not */
    snprintf(got.result_key, sizeof got.result_key, "results/l1-a1.png");
    CHECK(store_job_complete(a, &got, &fa, 60, &err) == UP_ERR_CONFLICT);
    CHECKF(strstr(err.msg, "superseded by attempt 2") && strstr(err.msg, B), "%s", err.msg);
    CHECK(store_job_start(a, "l1", &fa, NULL, &err) == UP_ERR_CONFLICT);
    CHECK(store_job_cancelled(a, "l1", &fa, 60, &err) == UP_ERR_CONFLICT);
    CHECK(store_job_requeue(a, "l1", &fa, &err) == UP_ERR_CONFLICT);
    CHECK(store_job_start(b, "l1", &fb, NULL, &err) == 0);
    CHECK(store_job_progress(a, "l1", &fa, 90, NULL, &err) == UP_ERR_CONFLICT);
    CHECK(store_job_fail(a, "l1", &fa, "late", 60, &err) == UP_ERR_CONFLICT);
    snprintf(got.result_key, sizeof got.result_key, "results/l1-a2.png");
    CHECK(store_job_complete(b, &got, &fb, 60, &err) == 0);
    CHECK(store_job_get(a, "l1", &got, &err) == 0 && got.status == JOB_STATUS_COMPLETED);
    CHECK(strstr(got.result_key, "l1-a2.png") && got.attempts == 2 && strcmp(got.worker, B) == 0);
    CHECK(got.lease_until == 0);
    CHECK(store_job_complete(a, &got, &fa, 60, &err) == UP_ERR_CONFLICT);
    CHECK(store_job_complete(b, &got, &fb, 60, &err) == UP_ERR_INVALID); /* once */

    /* the attempt limit: a charged job whose lease ran out twice with max 2 fails, refunded once */
    api_key_t k;
    make_key(&k, "lk", "upres_lk", 41, -1, 10, 1.0);
    CHECK(store_key_insert(a, &k, &err) == 0);
    store_charge_t c;
    CHECK(insert_charged(a, "l2", "lk", 4, 2.0, &c, &err) == 0 && balance(a, "lk") == 6);
    for (int attempt = 1; attempt <= 2; attempt++) {
        CHECK(store_job_claim(a, A, 0.05, NULL, &got, &err) == 0 && strcmp(got.id, "l2") == 0);
        CHECK(got.attempts == attempt);
        if (attempt == 2)
            CHECK(store_job_start(a, "l2", &(store_fence_t){.worker = A, .attempt = 2}, NULL, &err) == 0);
        sleep_s(0.1);
        CHECK(store_jobs_rescue(b, 2, 0, 60, jobs, 4, &n, &err) == 0 && n == 1);
        CHECK(jobs[0].status == (attempt < 2 ? JOB_STATUS_QUEUED : JOB_STATUS_FAILED));
    }
    CHECKF(strstr(jobs[0].error, "lease") && strstr(jobs[0].error, "2 times"), "%s", jobs[0].error);
    CHECK(jobs[0].expires_at >= jobs[0].completed_at + 59 && jobs[0].worker[0] == '\0');
    CHECK(balance(a, "lk") == 10 && refunded(a, "l2") == 1);
    CHECK(store_jobs_rescue(a, 2, 0, 60, jobs, 4, &n, &err) == 0 && n == 0 && balance(a, "lk") == 10);
    CHECK(store_job_fail(a, "l2", NULL, "again", 60, &err) == UP_ERR_INVALID && balance(a, "lk") == 10);
    CHECK(store_job_fail(a, "l2", &(store_fence_t){.worker = A, .attempt = 2}, "late", 60, &err) ==
          UP_ERR_CONFLICT);

    /* a cancel asked of a job whose worker died ends it cancelled: refunded when still claimed */
    CHECK(insert_charged(a, "l3", "lk", 3, 3.0, &c, &err) == 0 && balance(a, "lk") == 7);
    CHECK(store_job_claim(a, A, 0.05, NULL, &got, &err) == 0 && strcmp(got.id, "l3") == 0);
    job_status_t was;
    CHECK(store_job_cancel(b, "l3", &was, &err) == 0 && was == JOB_STATUS_CLAIMED);
    sleep_s(0.1);
    CHECK(store_jobs_rescue(b, 3, 0, 60, jobs, 4, &n, &err) == 0 && n == 1);
    CHECK(jobs[0].status == JOB_STATUS_CANCELLED && balance(a, "lk") == 10 && refunded(a, "l3") == 1);

    /* a graceful requeue gives the attempt back and ends the claim: the old fence is refused after it */
    make_job(&j, "l4", 4.0);
    CHECK(store_job_insert(a, &j, &err) == 0);
    CHECK(store_job_claim(a, A, 5, NULL, &got, &err) == 0 && strcmp(got.id, "l4") == 0 && got.attempts == 1);
    fa.attempt = 1;
    CHECK(store_job_requeue(a, "l4", &fa, &err) == 0);
    CHECK(store_job_get(a, "l4", &got, &err) == 0 && got.status == JOB_STATUS_QUEUED && got.attempts == 0);
    CHECK(got.worker[0] == '\0' && got.not_before == 0);
    CHECK(store_job_heartbeat(a, "l4", &fa, NULL, &err) == UP_ERR_CONFLICT);
    CHECK(store_job_claim(b, B, 5, NULL, &got, &err) == 0 && strcmp(got.id, "l4") == 0 && got.attempts == 1);
    CHECK(store_job_heartbeat(a, "l4", &fa, NULL, &err) == UP_ERR_CONFLICT); /* same attempt, other worker */
    CHECK(store_job_heartbeat(b, "l4", &(store_fence_t){.worker = B, .attempt = 1}, &cancel, &err) == 0);
    store_close(a);
    store_close(b);
}

/* ---- PostgreSQL only ------------------------------------------------------------------- */

typedef struct opener {
    char name[32];
    int rc;
} opener_t;

static void *open_race(void *arg) {
    opener_t *o = arg;
    store_t *st = NULL;
    char url[700];
    up_error_t err;
    tb_url(o->name, url, sizeof url);
    o->rc = store_open_url(url, NULL, &st, &err);
    store_close(st);
    return NULL;
}

typedef struct due_asker {
    store_t *st;
    const char *id;
    int plural; /* store_assets_due, else store_asset_due */
    int rc, due;
} due_asker_t;

static void *ask_due(void *arg) {
    due_asker_t *d = arg;
    up_error_t err;
    asset_t out[8];
    if (!d->plural) {
        d->rc = store_asset_due(d->st, d->id, now_s() + 1e6, out, &err);
        d->due = d->rc == 0;
        return NULL;
    }
    int n = 0;
    d->rc = store_assets_due(d->st, now_s() + 1e6, out, 8, &n, &err);
    for (int i = 0; i < n; i++)
        d->due += strcmp(out[i].id, d->id) == 0;
    return NULL;
}

/*
 * Asset deletion serialised with submissions: a submission in flight (its
 * asset held FOR SHARE, its job inserted, not committed yet) makes the
 * sweeper's store_asset_due and store_assets_due wait, and once it commits
 * they see its job and do not find the asset due.
 */
static void test_pg_asset_race(store_t *a) {
    up_error_t err;
    for (int plural = 0; plural < 2; plural++) {
        asset_t s = {.frames = 1, .width = 8, .height = 8, .bytes = 10, .expires_at = now_s() + 3600};
        snprintf(s.id, sizeof s.id, "ad-%d", plural);
        snprintf(s.key, sizeof s.key, "uploads/ad-%d.png", plural);
        CHECK(store_asset_insert(a, &s, &err) == 0);
        PGconn *c = tb_pg_connect("reconnect");
        char sql[400];
        snprintf(sql, sizeof sql,
                 "BEGIN; SELECT 1 FROM assets WHERE id = '%s' FOR SHARE;"
                 " INSERT INTO jobs (id, status, asset_id) VALUES ('ad-job-%d', 0, '%s')",
                 s.id, plural, s.id);
        PGresult *r = PQexec(c, sql);
        CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
        PQclear(r);
        due_asker_t d = {.st = a, .id = s.id, .plural = plural, .rc = -1};
        pthread_t th;
        pthread_create(&th, NULL, ask_due, &d);
        sleep_s(0.3); /* the sweeper is waiting on the asset's row by now */
        PQclear(PQexec(c, "COMMIT"));
        pthread_join(th, NULL);
        CHECKF(d.due == 0 && (plural ? d.rc == 0 : d.rc == UP_ERR_NOT_FOUND), "%s: rc %d, due %d",
               plural ? "assets_due" : "asset_due", d.rc, d.due);
        PQfinish(c);
    }
}

/*
 * What only the PostgreSQL store has: processes starting at once on a new
 * database (the schema made once, under the advisory lock); a database
 * newer than this upres refused; a lost connection made again; a claim
 * that skips a row another transaction holds instead of waiting for it;
 * the URL forms (postgres:// too; an unreachable server is UP_ERR_IO).
 */
static void test_pg_only(void) {
    up_error_t err;
    job_t j, got;

    /* 6 handles opening one new schema at once: every open succeeds, one schema made */
    enum { N_OPEN = 6 };
    static opener_t openers[N_OPEN];
    pthread_t th[N_OPEN];
    tb_exec("opened", "SELECT 1"); /* makes the schema, empty */
    for (int i = 0; i < N_OPEN; i++) {
        snprintf(openers[i].name, sizeof openers[i].name, "opened");
        openers[i].rc = -1;
        pthread_create(&th[i], NULL, open_race, &openers[i]);
    }
    int opened = 0;
    for (int i = 0; i < N_OPEN; i++) {
        pthread_join(th[i], NULL);
        opened += openers[i].rc == 0;
    }
    CHECKF(opened == N_OPEN, "%d of %d opens", opened, N_OPEN);
    CHECK(tb_exec("opened", "DO $$BEGIN IF (SELECT count(*) FROM schema_version) <> 1"
                            " OR (SELECT max(version) FROM schema_version) <> " PG_SCHEMA_NOW
                            " THEN RAISE 'bad version'; END IF; END$$") == 0);

    /* newer than this upres: refused, nothing changed */
    CHECK(tb_exec("opened", "UPDATE schema_version SET version = 99") == 0);
    char url[700];
    tb_url("opened", url, sizeof url);
    store_t *st = (store_t *)&st;
    CHECK(store_open_url(url, NULL, &st, &err) == UP_ERR_IO && st == NULL);
    CHECKF(strstr(err.msg, "newer") && strstr(err.msg, "99"), "%s", err.msg);

    /* a lost connection: the call that finds it fails (UP_ERR_IO), the next one reconnects */
    char app[64];
    snprintf(app, sizeof app, "upres-test-%d", (int)getpid()); /* no other test's connection */
    tb_exec("reconnect", "SELECT 1");
    tb_url("reconnect", url, sizeof url);
    /* a statement that waits on a lock (a claim that would not skip one) fails in 5 s instead of hanging */
    snprintf(url + strlen(url), sizeof url - strlen(url),
             "%%20-cstatement_timeout%%3D5000&application_name=%s", app);
    store_t *a = NULL;
    CHECKF(store_open_url(url, NULL, &a, &err) == 0, "%s: %s", url, err.msg);
    if (!a)
        return;
    make_job(&j, "rc-1", 1.0);
    CHECK(store_job_insert(a, &j, &err) == 0);
    char kill[300];
    snprintf(kill, sizeof kill,
             "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '%s'", app);
    CHECK(tb_exec("reconnect", kill) == 0);
    int rc1 = store_job_get(a, "rc-1", &got, &err);
    CHECKF(rc1 == UP_ERR_IO || rc1 == 0, "%d %s", rc1, err.msg);
    CHECKF(store_job_get(a, "rc-1", &got, &err) == 0 && strcmp(got.id, "rc-1") == 0, "%s", err.msg);
    make_job(&j, "rc-2", 2.0);
    CHECK(store_job_insert(a, &j, &err) == 0); /* the statements are prepared again */

    /* a claim skips the oldest job while another transaction holds its row, and does not wait */
    PGconn *c = tb_pg_connect("reconnect");
    PGresult *r = PQexec(c, "BEGIN; SELECT 1 FROM jobs WHERE id = 'rc-1' FOR UPDATE");
    CHECK(PQresultStatus(r) == PGRES_TUPLES_OK);
    PQclear(r);
    double t0 = now_s();
    CHECK(claim(a, &got, &err) == 0 && strcmp(got.id, "rc-2") == 0 && now_s() - t0 < 2);
    CHECK(claim(a, &got, &err) == UP_ERR_NOT_FOUND);
    PQclear(PQexec(c, "ROLLBACK"));
    PQfinish(c);
    CHECK(claim(a, &got, &err) == 0 && strcmp(got.id, "rc-1") == 0);
    test_pg_asset_race(a);
    store_close(a);

    /* URL forms: postgres:// is postgresql:// */
    char alt[800];
    tb_url("reconnect", url, sizeof url);
    snprintf(alt, sizeof alt, "postgres%s", strchr(url, ':'));
    CHECKF(store_open_url(alt, NULL, &st, &err) == 0 && st, "%s: %s", alt, err.msg);
    CHECK(st && store_job_get(st, "rc-2", &got, &err) == 0);
    store_close(st);
    st = (store_t *)&st;
    CHECK(store_open_url("postgresql:///upres_test?host=/nonexistent-socket-dir", NULL, &st, &err) ==
              UP_ERR_IO &&
          st == NULL);
    CHECKF(strstr(err.msg, "cannot connect") && strstr(err.msg, "upres_test"), "%s", err.msg);
}

/* ---- main ---------------------------------------------------------------------------------- */

/* The backend-neutral cases, on whichever backend tb_run runs them. */
static void run_all(void) {
    up_error_t err;
    store_t *st = tb_open("");
    if (!st)
        return;
    test_transitions(st);
    test_due(st);
    /* a=expired b=failed c=cancelled d=failed e=cancelled f=expired g=completed h=queued */
    const long long expect[JOB_STATUS_COUNT] = {1, 0, 1, 2, 2, 2, 0};
    test_counts(st, expect);

    /* persistence: close, reopen, everything as it was */
    job_t before, after;
    CHECK(store_job_get(st, "job-g", &before, &err) == 0);
    store_close(st);
    st = tb_open("");
    if (st) {
        test_counts(st, expect);
        CHECK(store_job_get(st, "job-g", &after, &err) == 0);
        CHECK(memcmp(&before, &after, sizeof before) == 0);
        CHECK(store_job_get(st, "job-d", &after, &err) == 0 && strstr(after.error, "3 times"));
        job_t h;
        CHECK(claim(st, &h, &err) == 0 && strcmp(h.id, "job-h") == 0);
    }
    store_close(st);
    store_close(NULL);

    test_claim_race();
    test_claimed();
    test_keep();
    test_idempotency();
    test_text_columns();
    test_keys();
    test_charges();
    test_charge_race();
    test_refund_race();
    test_key_update();
    test_topup_race();
    test_list();
    test_blob_keys();
    test_leases();
    if (tb_pg)
        test_pg_only();
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/upres-store-test-%d", (int)getpid());
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {
    }

    test_uuid();
    tb_run(dir, run_all);

    /* SQLite only: its files' migrations and URLs */
    test_migrate_v1();
    test_migrate_v3();
    test_migrate_v4();
    test_migrate_v5();
    test_migrate_v6();
    test_urls();

    /* a path where the database cannot be created */
    up_error_t err;
    store_t *st = NULL;
    CHECK(store_open("/proc/upres-no-such-dir", &st, &err) == UP_ERR_IO && st == NULL);

    if (system(cmd)) {
    }
    return test_summary();
}
