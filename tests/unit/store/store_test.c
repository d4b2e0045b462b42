/*
 * store_test.c - the SQLite job store (src/store/sqlite.c).
 *
 * Every transition and its refusals: insert (and a duplicate id), get of an
 * unknown id, claim in creation order, progress, complete, fail, cancel of a
 * queued job, of a processing job (then cancelled) and of a finished job
 * (409 with *was), requeue, recover (requeued, then failed once attempts are
 * used), downloaded, due and expire, counts; claims from several threads at
 * once (each job claimed exactly once); everything still there after
 * closing and reopening the database. Also uuid_v4's form.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/uuid.h"
#include "store/store.h"
#include "test.h"

static char dir[256];

static void make_job(job_t *j, const char *id, double created_at) {
    memset(j, 0, sizeof *j);
    snprintf(j->id, sizeof j->id, "%s", id);
    snprintf(j->model, sizeof j->model, "realesr-animevideov3");
    j->scale = 2;
    snprintf(j->format, sizeof j->format, "png");
    j->quality = 80;
    j->tile = 32;
    snprintf(j->input_path, sizeof j->input_path, "%s/uploads/%s.png", dir, id);
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
    CHECK(strcmp(got.input_path, j.input_path) == 0 && strcmp(got.input_name, "cat job-b.png") == 0);
    CHECK(got.input_width == 64 && got.input_height == 48 && got.input_bytes == 12345);
    CHECK(got.created_at == 1000.0 && got.started_at == 0 && got.expires_at == 0);
    CHECK(store_job_get(st, "nope", &got, &err) == UP_ERR_NOT_FOUND);

    /* claim order: created_at first, then insertion order */
    make_job(&j, "job-a", 999.0);
    CHECK(store_job_insert(st, &j, &err) == 0);
    make_job(&j, "job-c", 1000.0);
    CHECK(store_job_insert(st, &j, &err) == 0);
    make_job(&j, "job-d", 0); /* 0 = now */
    CHECK(store_job_insert(st, &j, &err) == 0);
    CHECK(store_job_get(st, "job-d", &got, &err) == 0 && got.created_at > 1.6e9);

    double t = now_s();
    CHECK(store_job_claim(st, &got, &err) == 0 && strcmp(got.id, "job-a") == 0);
    CHECK(got.status == JOB_STATUS_PROCESSING && got.attempts == 1 && got.started_at >= t - 1);
    job_t b, c, d;
    CHECK(store_job_claim(st, &b, &err) == 0 && strcmp(b.id, "job-b") == 0);
    CHECK(store_job_claim(st, &c, &err) == 0 && strcmp(c.id, "job-c") == 0);
    CHECK(store_job_claim(st, &d, &err) == 0 && strcmp(d.id, "job-d") == 0);
    CHECK(store_job_claim(st, &got, &err) == UP_ERR_NOT_FOUND);

    /* progress, clamped; cancel flag reported */
    int cancel = -1;
    CHECK(store_job_progress(st, "job-a", 42, &cancel, &err) == 0 && cancel == 0);
    CHECK(store_job_get(st, "job-a", &got, &err) == 0 && got.progress == 42);
    CHECK(store_job_progress(st, "job-a", 250, NULL, &err) == 0);
    CHECK(store_job_get(st, "job-a", &got, &err) == 0 && got.progress == 100);
    CHECK(store_job_progress(st, "nope", 1, NULL, &err) == UP_ERR_NOT_FOUND);

    /* complete a */
    make_job(&j, "job-a", 0);
    snprintf(j.result_path, sizeof j.result_path, "%s/results/job-a.png", dir);
    snprintf(j.result_format, sizeof j.result_format, "png");
    j.output_width = 128;
    j.output_height = 96;
    j.result_bytes = 4242;
    t = now_s();
    CHECKF(store_job_complete(st, &j, 60, &err) == 0, "%s", err.msg);
    CHECK(store_job_get(st, "job-a", &got, &err) == 0);
    CHECK(got.status == JOB_STATUS_COMPLETED && got.progress == 100);
    CHECK(strcmp(got.result_path, j.result_path) == 0 && strcmp(got.result_format, "png") == 0);
    CHECK(got.output_width == 128 && got.output_height == 96 && got.result_bytes == 4242);
    CHECK(got.completed_at >= t - 1 && got.expires_at >= got.completed_at + 59);
    CHECK(store_job_complete(st, &j, 60, &err) == UP_ERR_INVALID); /* not processing any more */
    CHECK(store_job_progress(st, "job-a", 5, NULL, &err) == UP_ERR_INVALID);

    /* fail b */
    CHECK(store_job_fail(st, "job-b", "input: not a decodable image", 60, &err) == 0);
    CHECK(store_job_get(st, "job-b", &got, &err) == 0 && got.status == JOB_STATUS_FAILED);
    CHECK(strcmp(got.error, "input: not a decodable image") == 0 && got.expires_at > 0);
    CHECK(store_job_fail(st, "nope", "x", 60, &err) == UP_ERR_NOT_FOUND);

    /* cancel c while processing: flag, then the worker finishes it */
    CHECK(store_job_cancel(st, "job-c", &was, &err) == 0 && was == JOB_STATUS_PROCESSING);
    CHECK(store_job_get(st, "job-c", &got, &err) == 0);
    CHECK(got.status == JOB_STATUS_PROCESSING && got.cancel_requested == 1);
    cancel = 0;
    CHECK(store_job_progress(st, "job-c", 10, &cancel, &err) == 0 && cancel == 1);
    CHECK(store_job_cancel(st, "job-c", &was, &err) == 0 && was == JOB_STATUS_PROCESSING);
    CHECK(store_job_cancelled(st, "job-c", 60, &err) == 0);
    CHECK(store_job_get(st, "job-c", &got, &err) == 0 && got.status == JOB_STATUS_CANCELLED);
    CHECK(got.cancel_requested == 0 && got.completed_at > 0);
    CHECK(store_job_cancelled(st, "job-c", 60, &err) == UP_ERR_INVALID);

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
    CHECK(store_job_claim(st, &got, &err) == UP_ERR_NOT_FOUND);

    /* requeue d (graceful stop): back to queued, this attempt not counted */
    CHECK(store_job_requeue(st, "job-d", &err) == 0);
    CHECK(store_job_get(st, "job-d", &got, &err) == 0);
    CHECK(got.status == JOB_STATUS_QUEUED && got.attempts == 0 && got.started_at == 0);
    CHECK(store_job_requeue(st, "job-d", &err) == UP_ERR_INVALID);
    CHECK(store_job_requeue(st, "nope", &err) == UP_ERR_NOT_FOUND);

    /* recover: a processing job goes back to queued until it used 3 attempts */
    int n_re = -1, n_fail = -1;
    for (int attempt = 1; attempt <= 3; attempt++) {
        CHECK(store_job_claim(st, &got, &err) == 0 && strcmp(got.id, "job-d") == 0);
        CHECK(got.attempts == attempt);
        CHECK(store_jobs_recover(st, 3, 60, &n_re, &n_fail, &err) == 0);
        if (attempt < 3) {
            CHECK(n_re == 1 && n_fail == 0);
            CHECK(status_of(st, "job-d") == JOB_STATUS_QUEUED);
        } else {
            CHECK(n_re == 0 && n_fail == 1);
        }
    }
    CHECK(store_job_get(st, "job-d", &got, &err) == 0 && got.status == JOB_STATUS_FAILED);
    CHECKF(strstr(got.error, "3 times") != NULL, "%s", got.error);
    CHECK(store_jobs_recover(st, 3, 60, NULL, NULL, &err) == 0);

    /* downloaded: completed -> expired, result path cleared; twice: refused */
    CHECK(store_job_downloaded(st, "job-a", &err) == 0);
    CHECK(store_job_get(st, "job-a", &got, &err) == 0);
    CHECK(got.status == JOB_STATUS_EXPIRED && got.result_path[0] == '\0');
    CHECK(store_job_downloaded(st, "job-a", &err) == UP_ERR_INVALID);
    CHECK(store_job_downloaded(st, "job-b", &err) == UP_ERR_INVALID);
    CHECK(store_job_downloaded(st, "nope", &err) == UP_ERR_NOT_FOUND);

    /* input deleted */
    CHECK(store_job_input_deleted(st, "job-b", &err) == 0);
    CHECK(store_job_get(st, "job-b", &got, &err) == 0 && got.input_path[0] == '\0');
    CHECK(store_job_input_deleted(st, "nope", &err) == UP_ERR_NOT_FOUND);
}

static void test_due(store_t *st) {
    up_error_t err;
    job_t j, got, due[8];
    int n = -1;
    /* f: completed with 0 s retention; g: completed, 1 hour */
    make_job(&j, "job-f", 3000.0);
    CHECK(store_job_insert(st, &j, &err) == 0);
    make_job(&j, "job-g", 3001.0);
    CHECK(store_job_insert(st, &j, &err) == 0);
    CHECK(store_job_claim(st, &got, &err) == 0 && strcmp(got.id, "job-f") == 0);
    snprintf(got.result_path, sizeof got.result_path, "/x/job-f.png");
    CHECK(store_job_complete(st, &got, 0, &err) == 0);
    CHECK(store_job_claim(st, &got, &err) == 0 && strcmp(got.id, "job-g") == 0);
    snprintf(got.result_path, sizeof got.result_path, "/x/job-g.png");
    CHECK(store_job_complete(st, &got, 3600, &err) == 0);

    double now = now_s() + 1;
    CHECK(store_jobs_due(st, now, due, 8, &n, &err) == 0);
    /* job-f (result) and job-e (cancelled while queued: its input is due at once) */
    int seen_f = 0, seen_g = 0, seen_e = 0;
    for (int i = 0; i < n; i++) {
        seen_f += strcmp(due[i].id, "job-f") == 0;
        seen_g += strcmp(due[i].id, "job-g") == 0;
        seen_e += strcmp(due[i].id, "job-e") == 0;
    }
    CHECKF(seen_f == 1 && seen_g == 0 && seen_e == 1 && n == 2, "n=%d", n);
    CHECK(store_jobs_due(st, now + 7200, due, 8, &n, &err) == 0);
    seen_g = 0;
    for (int i = 0; i < n; i++)
        seen_g += strcmp(due[i].id, "job-g") == 0;
    CHECK(seen_g == 1);
    CHECK(store_jobs_due(st, now + 7200, due, 1, &n, &err) == 0 && n == 1);

    CHECK(store_job_expire(st, "job-f", &err) == 0);
    CHECK(store_job_get(st, "job-f", &got, &err) == 0);
    CHECK(got.status == JOB_STATUS_EXPIRED && got.result_path[0] == '\0' && got.input_path[0] == '\0');
    /* a failed job's files go, its answer (failed, with the error) stays */
    CHECK(store_job_expire(st, "job-d", &err) == 0);
    CHECK(store_job_get(st, "job-d", &got, &err) == 0 && got.status == JOB_STATUS_FAILED);
    CHECK(got.input_path[0] == '\0' && got.error[0] != '\0');
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
    CHECK(store_job_expire(st, "job-h", &err) == UP_ERR_INVALID);
}

static void test_counts(store_t *st, const long long *expect) {
    long long counts[JOB_STATUS_EXPIRED + 1];
    up_error_t err;
    CHECK(store_job_counts(st, counts, &err) == 0);
    for (int i = 0; i <= JOB_STATUS_EXPIRED; i++)
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
        int rc = store_job_claim(r->st, &j, &err);
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
    char rdir[300];
    snprintf(rdir, sizeof rdir, "%s/race", dir);
    up_error_t err;
    store_t *a = NULL, *b = NULL;
    CHECKF(store_open(rdir, &a, &err) == 0, "%s", err.msg);
    CHECKF(store_open(rdir, &b, &err) == 0, "%s", err.msg); /* a second handle, as another process */
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

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/upres-store-test-%d", (int)getpid());
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {
    }

    test_uuid();

    up_error_t err;
    store_t *st = NULL;
    CHECKF(store_open(dir, &st, &err) == 0, "%s", err.msg);
    if (!st)
        return test_summary();
    test_transitions(st);
    test_due(st);
    /* a=expired b=failed c=cancelled d=failed e=cancelled f=expired g=completed h=queued */
    const long long expect[] = {1, 0, 1, 2, 2, 2};
    test_counts(st, expect);

    /* persistence: close, reopen, everything as it was */
    job_t before, after;
    CHECK(store_job_get(st, "job-g", &before, &err) == 0);
    store_close(st);
    st = NULL;
    CHECKF(store_open(dir, &st, &err) == 0, "%s", err.msg);
    if (st) {
        test_counts(st, expect);
        CHECK(store_job_get(st, "job-g", &after, &err) == 0);
        CHECK(memcmp(&before, &after, sizeof before) == 0);
        CHECK(store_job_get(st, "job-d", &after, &err) == 0 && strstr(after.error, "3 times"));
        job_t h;
        CHECK(store_job_claim(st, &h, &err) == 0 && strcmp(h.id, "job-h") == 0);
    }
    store_close(st);
    store_close(NULL);

    test_claim_race();

    /* a path where the database cannot be created */
    CHECK(store_open("/proc/upres-no-such-dir", &st, &err) == UP_ERR_IO && st == NULL);

    if (system(cmd)) {
    }
    return test_summary();
}
