/*
 * schema7_test.c - what schema version 7 added to the store (store.h) for
 * the dialects and the jobs API, on SQLite and on PostgreSQL (backends.h).
 * (store_test.c migrates a version-6 SQLite file.)
 *
 * Guest sessions: a guest row (guest 1) inserted with its reset_at, found
 * by hash and by id but never listed, and never making a key's prefix
 * ambiguous; guest and reset_at refused out of range; the operator's reset
 * moving every guest's reset_at (revoked ones too, keys never) and
 * counting them; a guest charged against a daily quota from the period
 * the caller passes, refused once it is used up (no "monthly" in the
 * message) and charged again from its reset.
 *
 * A job's meta: kept at submission (a batch with and without), read back
 * by get, list, claim, rescue and complete, up to its full size.
 *
 * Usage by day: jobs and net credits per UTC day, zeros for a day without
 * jobs, refunded jobs counted with 0 credits, a job at a day's first second
 * on that day and not the day before, nothing from before day0 or after
 * the last day or of another owner; days 0 and a negative count.
 *
 * Queue position: claim order (created_at, then insertion), megapixels of
 * the jobs ahead and the job itself (scale below 1 as 1, the asset's size
 * for a job on a shared asset), a job in backoff not counted ahead of
 * others, positions moving up after a claim, 0 for a job not queued,
 * unknown ids refused.
 *
 * Model rate: over the latest completed (and since downloaded) jobs of the
 * model, failed jobs and other models left out, n capped by last_n; none:
 * n 0 and rate 0; last_n below 1 refused.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "store/store.h"
#include "test.h"
#include "unit/store/backends.h"

#define WORKER "test-host:1:0:0000sch7"
#define DAY 86400.0
#define DAY0 1767225600.0 /* 2026-01-01T00:00:00Z */

static store_t *open_sub(const char *name) { return tb_open(name); }

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static void make_key(api_key_t *k, const char *id, const char *prefix, int hash_byte, int guest,
                     long long quota, long long credits) {
    memset(k, 0, sizeof *k);
    snprintf(k->id, sizeof k->id, "%s", id);
    snprintf(k->name, sizeof k->name, "%s %s", guest ? "guest" : "key", id);
    snprintf(k->prefix, sizeof k->prefix, "%s", prefix);
    memset(k->hash, hash_byte, sizeof k->hash);
    snprintf(k->tier, sizeof k->tier, "%s", guest ? "guest" : "basic");
    k->quota = quota;
    k->credits = credits;
    k->created_at = 100 + hash_byte;
    k->guest = guest;
}

/* A one-shot job of owner made at created_at: its input w x h, upscaled by scale. */
static void make_job(job_t *j, const char *id, const char *owner, double created_at, int w, int h,
                     int scale) {
    memset(j, 0, sizeof *j);
    snprintf(j->id, sizeof j->id, "%s", id);
    snprintf(j->owner, sizeof j->owner, "%s", owner);
    snprintf(j->model, sizeof j->model, "realesr-animevideov3");
    j->scale = scale;
    snprintf(j->input_key, sizeof j->input_key, "uploads/%s.png", id);
    snprintf(j->input_name, sizeof j->input_name, "%s.png", id);
    snprintf(j->input_format, sizeof j->input_format, "png");
    j->input_width = w;
    j->input_height = h;
    j->input_bytes = 1000;
    j->created_at = created_at;
}

static int near(double a, double b) { return fabs(a - b) <= 1e-9 * (fabs(a) + fabs(b)) + 1e-12; }

/* ---- guest sessions --------------------------------------------------------------- */

static void test_guests(void) {
    store_t *st = open_sub("guests");
    if (!st)
        return;
    up_error_t err;
    api_key_t k, got, *keys = NULL;
    int n = -1;

    make_key(&k, "k1", "upres_k1", 1, 0, -1, -1);
    CHECKF(store_key_insert(st, &k, &err) == 0, "%s", err.msg);
    make_key(&k, "g1", "upres_k1g", 2, 1, 3, -1); /* a prefix the key's starts */
    CHECKF(store_key_insert(st, &k, &err) == 0, "%s", err.msg);
    make_key(&k, "g2", "", 3, 1, 3, -1);
    k.reset_at = 123.5;
    CHECK(store_key_insert(st, &k, &err) == 0);
    make_key(&k, "g3", "", 4, 2, 3, -1);
    CHECK(store_key_insert(st, &k, &err) == UP_ERR_INVALID); /* guest is 0 or 1 */
    make_key(&k, "g3", "", 4, 1, 3, -1);
    k.reset_at = -1;
    CHECK(store_key_insert(st, &k, &err) == UP_ERR_INVALID);
    CHECK(store_key_find(st, "g3", &got, &err) == UP_ERR_NOT_FOUND);

    /* found by hash and id with both fields; never listed */
    unsigned char hash[32];
    memset(hash, 2, sizeof hash);
    CHECK(store_key_by_hash(st, hash, &got, &err) == 0 && strcmp(got.id, "g1") == 0);
    CHECK(got.guest == 1 && got.reset_at == 0 && got.quota == 3 && strcmp(got.tier, "guest") == 0);
    CHECK(store_key_find(st, "g2", &got, &err) == 0 && got.guest == 1 && got.reset_at == 123.5);
    memset(hash, 1, sizeof hash);
    CHECK(store_key_by_hash(st, hash, &got, &err) == 0 && got.guest == 0 && got.reset_at == 0);
    CHECK(store_key_list(st, &keys, &n, &err) == 0 && n == 1 && strcmp(keys[0].id, "k1") == 0);
    CHECK(keys && keys[0].guest == 0);
    free(keys);
    /* a guest's prefix does not make a key's ambiguous, and is not found by prefix */
    CHECK(store_key_find(st, "upres_k", &got, &err) == 0 && strcmp(got.id, "k1") == 0);
    CHECK(store_key_find(st, "upres_k1g", &got, &err) == UP_ERR_NOT_FOUND);

    /* the daily charge: the caller's period; a full quota refused without "monthly" */
    store_charge_t c;
    job_t j;
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "gj-%d", i);
        make_job(&j, id, "g1", DAY0 + 100 + i, 10, 10, 2);
        j.credits = 1;
        CHECKF(store_job_submit(st, &j, DAY0, NULL, &c, &err) == 0, "%s", err.msg);
    }
    make_job(&j, "gj-3", "g1", DAY0 + 200, 10, 10, 2);
    j.credits = 1;
    CHECK(store_job_submit(st, &j, DAY0, NULL, &c, &err) == UP_ERR_QUOTA && c.used == 3 && c.quota == 3);
    CHECKF(!strstr(err.msg, "month"), "%s", err.msg);

    /* the operator's reset: every guest (a revoked one too), no key; counted */
    CHECK(store_key_revoke(st, "g2", &err) == 0);
    long long reset = -1;
    CHECK(store_keys_reset_guests(st, 0, &reset, &err) == UP_ERR_INVALID && reset == 0);
    CHECKF(store_keys_reset_guests(st, DAY0 + 150.25, &reset, &err) == 0, "%s", err.msg);
    CHECK(reset == 2);
    CHECK(store_key_find(st, "g1", &got, &err) == 0 && got.reset_at == DAY0 + 150.25);
    CHECK(store_key_find(st, "g2", &got, &err) == 0 && got.reset_at == DAY0 + 150.25 && got.revoked_at > 0);
    CHECK(store_key_find(st, "k1", &got, &err) == 0 && got.reset_at == 0);
    CHECK(store_keys_reset_guests(st, DAY0 + 160, NULL, &err) == 0); /* n may be NULL */
    /* from its reset, the guest's day counts again: the period is max(day start, reset_at) */
    long long used = -1;
    CHECK(store_key_usage(st, "g1", DAY0, &used, &err) == 0 && used == 3);
    CHECK(store_key_usage(st, "g1", DAY0 + 160, &used, &err) == 0 && used == 0);
    make_job(&j, "gj-4", "g1", DAY0 + 170, 10, 10, 2);
    j.credits = 3;
    CHECKF(store_job_submit(st, &j, DAY0 + 160, NULL, &c, &err) == 0, "%s", err.msg);
    CHECK(c.used == 0 && c.quota == 3);
    make_job(&j, "gj-5", "g1", DAY0 + 180, 10, 10, 2);
    j.credits = 1;
    CHECK(store_job_submit(st, &j, DAY0 + 160, NULL, &c, &err) == UP_ERR_QUOTA && c.used == 3);
    j.created_at = DAY0 + DAY + 1; /* the next day */
    CHECK(store_job_submit(st, &j, DAY0 + DAY, NULL, &c, &err) == 0 && c.used == 0);

    /* with no guest at all */
    store_close(st);
    st = open_sub("noguests");
    if (!st)
        return;
    reset = -1;
    CHECK(store_keys_reset_guests(st, DAY0, &reset, &err) == 0 && reset == 0);
    store_close(st);
}

/* ---- a job's meta --------------------------------------------------------------- */

static void test_meta(void) {
    store_t *st = open_sub("meta");
    if (!st)
        return;
    up_error_t err;
    static const char meta[] = "{\"dialect\":\"tinify\",\"entry\":\"shrink\",\"source\":\"upload\","
                               "\"settings\":{\"resize\":{\"method\":\"fit\",\"width\":150}}}";
    job_t jobs[2], got, list[4];
    make_job(&jobs[0], "m-1", "", 10, 8, 8, 2);
    snprintf(jobs[0].meta, sizeof jobs[0].meta, "%s", meta);
    make_job(&jobs[1], "m-2", "", 11, 8, 8, 2); /* none */
    CHECKF(store_jobs_submit(st, jobs, 2, -1, NULL, NULL, &err) == 0, "%s", err.msg);
    CHECK(store_job_get(st, "m-1", &got, &err) == 0 && strcmp(got.meta, meta) == 0);
    CHECK(store_job_get(st, "m-2", &got, &err) == 0 && got.meta[0] == '\0');
    store_job_filter_t f = {.owner = ""};
    int n = -1;
    CHECK(store_jobs_list(st, &f, list, 4, &n, &err) == 0 && n == 2);
    CHECK(strcmp(list[1].id, "m-1") == 0 && strcmp(list[1].meta, meta) == 0 && list[0].meta[0] == '\0');

    /* claimed with it; kept through a lost lease and a completion */
    CHECK(store_job_claim(st, WORKER, 0.01, NULL, &got, &err) == 0 && strcmp(got.id, "m-1") == 0);
    CHECK(strcmp(got.meta, meta) == 0);
    sleep_s(0.05);
    job_t rescued[2];
    CHECK(store_jobs_rescue(st, 3, 0, 60, rescued, 2, &n, &err) == 0 && n == 1);
    CHECK(strcmp(rescued[0].meta, meta) == 0 && rescued[0].status == JOB_STATUS_QUEUED);
    CHECK(store_job_claim(st, WORKER, 60, NULL, &got, &err) == 0 && strcmp(got.id, "m-1") == 0);
    store_fence_t fence = {.worker = WORKER, .attempt = got.attempts};
    CHECK(store_job_start(st, "m-1", &fence, NULL, &err) == 0);
    snprintf(got.result_key, sizeof got.result_key, "results/m-1-a2.png");
    got.meta[0] = '\0'; /* complete writes the result, not the meta */
    CHECK(store_job_complete(st, &got, &fence, 60, &err) == 0);
    CHECK(store_job_get(st, "m-1", &got, &err) == 0 && strcmp(got.meta, meta) == 0);

    /* its full size */
    job_t big;
    make_job(&big, "m-3", "", 12, 8, 8, 2);
    memset(big.meta, 'x', sizeof big.meta - 1);
    big.meta[0] = '"';
    big.meta[sizeof big.meta - 2] = '"';
    CHECK(store_job_insert(st, &big, &err) == 0);
    CHECK(store_job_get(st, "m-3", &got, &err) == 0 && strlen(got.meta) == sizeof got.meta - 1 &&
          strcmp(got.meta, big.meta) == 0);
    store_close(st);
}

/* ---- usage by day ------------------------------------------------------------------ */

static void submit(store_t *st, const char *id, const char *owner, double created_at, long long credits) {
    job_t j;
    up_error_t err;
    make_job(&j, id, owner, created_at, 8, 8, 2);
    j.credits = credits;
    CHECKF(store_job_submit(st, &j, 0, NULL, NULL, &err) == 0, "%s: %s", id, err.msg);
}

static void test_usage_daily(void) {
    store_t *st = open_sub("daily");
    if (!st)
        return;
    up_error_t err;
    api_key_t k;
    make_key(&k, "u", "upres_u", 1, 0, -1, 100);
    CHECK(store_key_insert(st, &k, &err) == 0);
    make_key(&k, "v", "upres_v", 2, 0, -1, -1);
    CHECK(store_key_insert(st, &k, &err) == 0);
    submit(st, "early", "u", DAY0 - 0.5, 7);         /* the last half second before day 0 */
    submit(st, "d0-a", "u", DAY0, 2);                /* day 0's first second */
    submit(st, "d0-b", "u", DAY0 + DAY - 0.25, 3);   /* day 0's last moment, refunded below */
    submit(st, "d2-a", "u", DAY0 + 2 * DAY, 4);      /* day 2's first second: not day 1 */
    submit(st, "d2-b", "u", DAY0 + 2 * DAY + 10, 0); /* free */
    submit(st, "d2-c", "u", DAY0 + 2 * DAY + 20, 5); /* cancelled below */
    submit(st, "late", "u", DAY0 + 3 * DAY, 6);      /* past the three days */
    submit(st, "other", "v", DAY0 + 5, 9);           /* another owner */
    job_t anon;
    make_job(&anon, "anon", "", DAY0 + DAY + 1, 8, 8, 2);
    CHECK(store_job_insert(st, &anon, &err) == 0);
    CHECK(store_job_fail(st, "d0-b", NULL, "gone", 60, &err) == 0);
    CHECK(store_job_cancel(st, "d2-c", NULL, &err) == 0);

    long long jobs[5] = {-1, -1, -1, -1, -1}, credits[5] = {-1, -1, -1, -1, -1};
    CHECKF(store_usage_daily(st, "u", DAY0, 3, jobs, credits, &err) == 0, "%s", err.msg);
    CHECKF(jobs[0] == 2 && jobs[1] == 0 && jobs[2] == 3, "%lld %lld %lld", jobs[0], jobs[1], jobs[2]);
    CHECKF(credits[0] == 2 && credits[1] == 0 && credits[2] == 4, "%lld %lld %lld", credits[0], credits[1],
           credits[2]);
    CHECK(jobs[3] == -1 && credits[3] == -1); /* nothing written past days */
    /* a wider window takes the jobs on either side */
    CHECK(store_usage_daily(st, "u", DAY0 - DAY, 5, jobs, credits, &err) == 0);
    CHECK(jobs[0] == 1 && credits[0] == 7 && jobs[1] == 2 && jobs[3] == 3 && jobs[4] == 1 && credits[4] == 6);
    /* days that do not start at midnight: the caller's 86400-second windows */
    CHECK(store_usage_daily(st, "u", DAY0 + 0.5 * DAY, 2, jobs, credits, &err) == 0);
    CHECK(jobs[0] == 1 && credits[0] == 0 && jobs[1] == 3 && credits[1] == 4);
    /* another owner, the anonymous one, an unknown one */
    CHECK(store_usage_daily(st, "v", DAY0, 1, jobs, credits, &err) == 0 && jobs[0] == 1 && credits[0] == 9);
    CHECK(store_usage_daily(st, "", DAY0, 3, jobs, credits, &err) == 0 && jobs[0] == 0 && jobs[1] == 1 &&
          credits[1] == 0 && jobs[2] == 0);
    CHECK(store_usage_daily(st, "nobody", DAY0, 3, jobs, credits, &err) == 0 && jobs[0] == 0 &&
          jobs[2] == 0 && credits[1] == 0);
    /* the period sum agrees with the days */
    long long used = -1;
    CHECK(store_key_usage(st, "u", DAY0, &used, &err) == 0 && used == 2 + 4 + 6);
    CHECK(store_usage_daily(st, "u", DAY0, 0, NULL, NULL, &err) == 0);
    CHECK(store_usage_daily(st, "u", DAY0, -1, jobs, credits, &err) == UP_ERR_INVALID);
    store_close(st);
}

/* ---- queue position ------------------------------------------------------------------ */

static int position_of(store_t *st, const char *id, double *mpx) {
    int pos = -1;
    up_error_t err;
    if (store_job_queue_position(st, id, &pos, mpx, &err))
        return -1;
    return pos;
}

static void test_queue_position(void) {
    store_t *st = open_sub("position");
    if (!st)
        return;
    up_error_t err;
    job_t j, got;
    double mpx = -1;

    /* backoff: claimed first (created first), its lease lost, queued again far in the future */
    make_job(&j, "p-back", "", 5, 1000, 1000, 2); /* 4 Mpx out */
    CHECK(store_job_insert(st, &j, &err) == 0);
    CHECK(store_job_claim(st, WORKER, 0.01, NULL, &got, &err) == 0 && strcmp(got.id, "p-back") == 0);
    sleep_s(0.05);
    job_t rescued[1];
    int n = -1;
    CHECK(store_jobs_rescue(st, 3, 1e6, 60, rescued, 1, &n, &err) == 0 && n == 1);
    CHECK(rescued[0].status == JOB_STATUS_QUEUED && rescued[0].not_before > now_s() + 1e5);

    /* the queue, in claim order (one owner, one priority: submission order, store.h "Order") */
    make_job(&j, "p-a", "", 10, 100, 100, 2); /* 0.04 Mpx */
    CHECK(store_job_insert(st, &j, &err) == 0);
    asset_t a;
    memset(&a, 0, sizeof a);
    snprintf(a.id, sizeof a.id, "p-in");
    snprintf(a.key, sizeof a.key, "uploads/p-in.png");
    snprintf(a.format, sizeof a.format, "png");
    a.width = 1000;
    a.height = 1000;
    a.frames = 1;
    a.expires_at = now_s() + 3600;
    CHECK(store_asset_insert(st, &a, &err) == 0);
    make_job(&j, "p-b", "", 15, 1, 1, 4); /* on the shared asset: 1000 x 1000 x 16 = 16 Mpx */
    snprintf(j.asset_id, sizeof j.asset_id, "p-in");
    CHECK(store_job_insert(st, &j, &err) == 0);
    make_job(&j, "p-c", "", 20, 200, 100, 0); /* scale 0 counts as 1: 0.02 Mpx */
    CHECK(store_job_insert(st, &j, &err) == 0);
    make_job(&j, "p-d", "", 20, 10, 10, 1); /* created with p-c, inserted after it */
    CHECK(store_job_insert(st, &j, &err) == 0);
    make_job(&j, "p-x", "", 1, 500, 500, 2); /* cancelled: counted nowhere */
    CHECK(store_job_insert(st, &j, &err) == 0 && store_job_cancel(st, "p-x", NULL, &err) == 0);

    CHECK(position_of(st, "p-a", &mpx) == 1 && near(mpx, 0.04));
    CHECK(position_of(st, "p-b", &mpx) == 2 && near(mpx, 16.04));
    CHECK(position_of(st, "p-c", &mpx) == 3 && near(mpx, 16.06));
    CHECKF(position_of(st, "p-d", &mpx) == 4 && near(mpx, 16.0601), "%.6f", mpx);
    /* in backoff: not ahead of anyone; its own place counts no one before it */
    CHECK(position_of(st, "p-back", &mpx) == 1 && near(mpx, 4));
    CHECK(position_of(st, "p-x", &mpx) == 0 && mpx == 0);

    /* a claim takes the first: the rest move up */
    CHECK(store_job_claim(st, WORKER, 60, NULL, &got, &err) == 0 && strcmp(got.id, "p-a") == 0);
    CHECK(position_of(st, "p-a", &mpx) == 0 && mpx == 0);
    CHECK(position_of(st, "p-b", &mpx) == 1 && near(mpx, 16));
    CHECK(position_of(st, "p-d", &mpx) == 3 && near(mpx, 16.0201));

    int pos = -1;
    CHECK(store_job_queue_position(st, "nope", &pos, &mpx, &err) == UP_ERR_NOT_FOUND && pos == 0);
    CHECK(store_job_queue_position(st, "", &pos, &mpx, &err) == UP_ERR_NOT_FOUND);
    store_close(st);
}

/* ---- model rate -------------------------------------------------------------------- */

/* Run the next job to completion with an output of w x h, taking a few milliseconds; *out as completed. */
static int complete_next(store_t *st, const char *want, int w, int h, job_t *out) {
    up_error_t err;
    job_t got;
    if (store_job_claim(st, WORKER, 60, NULL, &got, &err) || strcmp(got.id, want) != 0)
        return -1;
    store_fence_t f = {.worker = WORKER, .attempt = got.attempts};
    if (store_job_start(st, got.id, &f, NULL, &err))
        return -1;
    sleep_s(0.005);
    snprintf(got.result_key, sizeof got.result_key, "results/%s-a1.png", got.id);
    got.output_width = w;
    got.output_height = h;
    if (store_job_complete(st, &got, &f, 60, &err))
        return -1;
    return store_job_get(st, got.id, out, &err);
}

static void test_model_rate(void) {
    store_t *st = open_sub("rate");
    if (!st)
        return;
    up_error_t err;
    static const struct {
        const char *id, *model;
        int w, h; /* output; 0 = fails */
    } runs[] = {
        {"r-1", "m-x", 1000, 1000}, {"r-2", "m-x", 2000, 1000}, {"r-3", "m-y", 4000, 4000},
        {"r-4", "m-x", 0, 0},       {"r-5", "m-x", 500, 500},   {"r-6", "m-x", 300, 200},
    };
    enum { N_RUNS = sizeof runs / sizeof *runs };
    job_t done[N_RUNS];
    for (int i = 0; i < N_RUNS; i++) {
        job_t j;
        make_job(&j, runs[i].id, "", i + 1, 10, 10, 2);
        snprintf(j.model, sizeof j.model, "%s", runs[i].model);
        CHECK(store_job_insert(st, &j, &err) == 0);
        if (runs[i].w) {
            CHECK(complete_next(st, runs[i].id, runs[i].w, runs[i].h, &done[i]) == 0);
        } else {
            job_t got;
            CHECK(store_job_claim(st, WORKER, 60, NULL, &got, &err) == 0);
            store_fence_t f = {.worker = WORKER, .attempt = got.attempts};
            CHECK(store_job_fail(st, got.id, &f, "broken", 60, &err) == 0);
        }
    }
    /* downloaded since: still a completed run */
    CHECK(store_job_downloaded(st, "r-6", &err) == 0);

    double rate = -1;
    int n = -1;
    /* the latest two of m-x: r-6 and r-5 */
    double s = (done[5].completed_at - done[5].started_at) + (done[4].completed_at - done[4].started_at);
    double mpx = 0.06 + 0.25;
    CHECKF(store_model_rate(st, "m-x", 2, &rate, &n, &err) == 0, "%s", err.msg);
    CHECKF(n == 2 && s > 0 && near(rate, s / mpx), "n %d rate %.9f want %.9f", n, rate, s / mpx);
    /* all of them: four, not the failed one */
    s += (done[0].completed_at - done[0].started_at) + (done[1].completed_at - done[1].started_at);
    mpx += 1 + 2;
    CHECK(store_model_rate(st, "m-x", 50, &rate, &n, &err) == 0 && n == 4 && near(rate, s / mpx));
    CHECK(store_model_rate(st, "m-y", 50, &rate, &n, &err) == 0 && n == 1 &&
          near(rate, (done[2].completed_at - done[2].started_at) / 16));
    CHECK(store_model_rate(st, "m-none", 5, &rate, &n, &err) == 0 && n == 0 && rate == 0);
    CHECK(store_model_rate(st, "m-x", 0, &rate, &n, &err) == UP_ERR_INVALID && n == 0 && rate == 0);
    store_close(st);
}

/* The cases, on whichever backend tb_run runs them. */
static void run_all(void) {
    test_guests();
    test_meta();
    test_usage_daily();
    test_queue_position();
    test_model_rate();
}

int main(void) {
    char dir[256];
    snprintf(dir, sizeof dir, "/tmp/upres-schema7-test-%d", (int)getpid());
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {
    }
    tb_run(dir, run_all);
    if (system(cmd)) {
    }
    return test_summary();
}
