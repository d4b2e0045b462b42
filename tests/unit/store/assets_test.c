/*
 * assets_test.c - jobs as an input asset plus steps (store.h, schema 6),
 * on SQLite and on PostgreSQL (backends.h).
 *
 * Assets: insert, get and their refusals (duplicate id, a path for a key);
 * one asset feeding two jobs, each reading its input through the asset; a
 * job on an expired, deleted, foreign or unknown asset refused with nothing
 * written (no job, no one-shot asset, no charge); a one-shot asset due only
 * once its job has ended; a multi-use asset not due while any job uses it,
 * and due once its jobs have ended and its expiry passed; due assets
 * listed, and cleared once deleted; store_blobs_referenced naming asset
 * keys (a deleted one not).
 *
 * Submission in batches: three jobs charged once with the sum of their
 * credits and refunded one by one; batches refused whole with nothing
 * written (credits: the 402 path, quota, a duplicate id, an unknown asset,
 * two owners).
 *
 * Steps and report: a job without steps gets the one-upscale pipeline its
 * settings describe, one with steps keeps them verbatim; the report
 * store_job_complete writes is read back.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "store/store.h"
#include "test.h"
#include "unit/store/backends.h"

#define WORKER "test-host:1:0:0000asse"

static store_t *open_sub(const char *name) { return tb_open(name); }

static void make_asset(asset_t *a, const char *id, const char *owner, double expires_at) {
    memset(a, 0, sizeof *a);
    snprintf(a->id, sizeof a->id, "%s", id);
    snprintf(a->owner, sizeof a->owner, "%s", owner);
    snprintf(a->key, sizeof a->key, "uploads/%s.png", id);
    snprintf(a->name, sizeof a->name, "photo %s.png", id);
    snprintf(a->format, sizeof a->format, "png");
    a->width = 640;
    a->height = 480;
    a->frames = 1;
    a->bytes = 99999;
    a->expires_at = expires_at;
}

/* A job of owner (no input fields: they come from asset_id, or make it a one-shot job with "") */
static void make_job(job_t *j, const char *id, const char *owner, const char *asset_id, double created_at) {
    memset(j, 0, sizeof *j);
    snprintf(j->id, sizeof j->id, "%s", id);
    snprintf(j->owner, sizeof j->owner, "%s", owner);
    snprintf(j->asset_id, sizeof j->asset_id, "%s", asset_id);
    snprintf(j->model, sizeof j->model, "realesr-animevideov3");
    j->scale = 2;
    snprintf(j->format, sizeof j->format, "webp");
    j->quality = 75;
    j->created_at = created_at;
    if (!asset_id[0]) {
        snprintf(j->input_key, sizeof j->input_key, "uploads/%s.jpg", id);
        snprintf(j->input_name, sizeof j->input_name, "one %s.jpg", id);
        snprintf(j->input_format, sizeof j->input_format, "jpg");
        j->input_width = 32;
        j->input_height = 24;
        j->input_bytes = 777;
    }
}

static void make_key(store_t *st, const char *id, int hash_byte, long long quota, long long credits) {
    api_key_t k;
    memset(&k, 0, sizeof k);
    snprintf(k.id, sizeof k.id, "%s", id);
    snprintf(k.prefix, sizeof k.prefix, "upres_%s", id);
    memset(k.hash, hash_byte, sizeof k.hash);
    snprintf(k.tier, sizeof k.tier, "basic");
    k.quota = quota;
    k.credits = credits;
    up_error_t err;
    CHECKF(store_key_insert(st, &k, &err) == 0, "%s", err.msg);
}

static long long balance(store_t *st, const char *id) {
    api_key_t k;
    up_error_t err;
    return store_key_find(st, id, &k, &err) ? -100 : k.credits;
}

static int exists(store_t *st, const char *job_id) {
    job_t j;
    return store_job_get(st, job_id, &j, NULL) == 0;
}

static int asset_exists(store_t *st, const char *id) {
    asset_t a;
    return store_asset_get(st, id, &a, NULL) == 0;
}

/* Claim the next job (it must be want), start it and leave it processing; its fence into *f. */
static int run(store_t *st, const char *want, job_t *got, store_fence_t *f) {
    up_error_t err;
    if (store_job_claim(st, WORKER, 60, NULL, got, &err) || strcmp(got->id, want) != 0)
        return -1;
    *f = (store_fence_t){.worker = WORKER, .attempt = got->attempts};
    return store_job_start(st, got->id, f, NULL, &err);
}

static int collect_key(const char *key, void *ctx) {
    char *all = ctx;
    size_t n = strlen(all);
    snprintf(all + n, 4096 - n, ";%s;", key);
    return 0;
}

static void test_assets(void) {
    store_t *st = open_sub("assets");
    if (!st)
        return;
    up_error_t err;
    asset_t a, got;
    double now = now_s();

    /* insert and get */
    make_asset(&a, "as-1", "ka", now + 3600);
    a.created_at = 10;
    a.frames = 3;
    CHECKF(store_asset_insert(st, &a, &err) == 0, "%s", err.msg);
    CHECK(store_asset_get(st, "as-1", &got, &err) == 0 && memcmp(&a, &got, sizeof a) == 0);
    CHECK(store_asset_insert(st, &a, &err) == UP_ERR_INVALID); /* duplicate id */
    make_asset(&a, "as-path", "ka", now + 3600);
    snprintf(a.key, sizeof a.key, "/srv/data/uploads/as-path.png"); /* rows hold keys, not paths */
    CHECK(store_asset_insert(st, &a, &err) == UP_ERR_INVALID && strstr(err.msg, "blob key"));
    CHECK(!asset_exists(st, "as-path"));
    make_asset(&a, "", "ka", now + 3600);
    CHECK(store_asset_insert(st, &a, &err) == UP_ERR_INVALID);
    make_asset(&a, "as-now", "", now + 3600); /* created_at 0 = now */
    CHECK(store_asset_insert(st, &a, &err) == 0);
    CHECK(store_asset_get(st, "as-now", &got, &err) == 0 && got.created_at >= now - 1 && !got.owner[0]);
    CHECK(store_asset_get(st, "nope", &got, &err) == UP_ERR_NOT_FOUND);
    CHECK(store_asset_deleted(st, "nope", &err) == UP_ERR_NOT_FOUND);
    CHECK(store_asset_due(st, "nope", now, &got, &err) == UP_ERR_NOT_FOUND);
    CHECK(store_asset_due(st, "", now, &got, &err) == UP_ERR_NOT_FOUND);
    store_close(st);
}

static void test_shared(void) {
    store_t *st = open_sub("shared");
    if (!st)
        return;
    up_error_t err;
    asset_t a, got;
    job_t j, g;
    store_fence_t f;
    double now = now_s();
    make_key(st, "ka", 1, -1, -1);
    make_key(st, "kb", 2, -1, 10);

    /* one asset feeds two jobs: each reads its input through the asset */
    make_asset(&a, "sh-a", "ka", now + 3600);
    CHECK(store_asset_insert(st, &a, &err) == 0);
    for (int i = 0; i < 2; i++) {
        char id[16];
        snprintf(id, sizeof id, "sh-%d", i);
        make_job(&j, id, "ka", "sh-a", 100 + i);
        snprintf(j.input_key, sizeof j.input_key, "uploads/ignored.png"); /* ignored: the asset's */
        CHECKF(store_job_insert(st, &j, &err) == 0, "%s", err.msg);
        CHECK(store_job_get(st, id, &g, &err) == 0 && strcmp(g.asset_id, "sh-a") == 0);
        CHECK(strcmp(g.input_key, "uploads/sh-a.png") == 0 && strcmp(g.input_name, "photo sh-a.png") == 0);
        CHECK(strcmp(g.input_format, "png") == 0 && g.input_width == 640 && g.input_height == 480);
        CHECK(g.input_bytes == 99999);
    }
    CHECK(!asset_exists(st, "sh-0") && !asset_exists(st, "sh-1")); /* no one-shot assets */
    /* listed and claimed with their input too */
    store_job_filter_t fl = {.owner = "ka"};
    job_t list[4];
    int n = -1;
    CHECK(store_jobs_list(st, &fl, list, 4, &n, &err) == 0 && n == 2);
    CHECK(strcmp(list[0].input_key, "uploads/sh-a.png") == 0 &&
          strcmp(list[1].input_key, list[0].input_key) == 0);
    CHECK(run(st, "sh-0", &g, &f) == 0 && strcmp(g.input_key, "uploads/sh-a.png") == 0);

    /* not due while a job uses it, however late */
    CHECK(store_asset_due(st, "sh-a", now + 1e6, &got, &err) == UP_ERR_NOT_FOUND);
    snprintf(g.result_key, sizeof g.result_key, "results/sh-0-a1.png");
    CHECK(store_job_complete(st, &g, &f, 60, &err) == 0);
    CHECK(store_asset_due(st, "sh-a", now + 1e6, &got, &err) == UP_ERR_NOT_FOUND); /* sh-1 is queued */
    CHECK(store_job_cancel(st, "sh-1", NULL, &err) == 0);
    /* its jobs have ended: due once its expiry has passed, not before */
    CHECK(store_asset_due(st, "sh-a", now + 10, &got, &err) == UP_ERR_NOT_FOUND);
    asset_t due[8];
    CHECK(store_assets_due(st, now + 10, due, 8, &n, &err) == 0 && n == 0);
    CHECK(store_asset_due(st, "sh-a", now + 3600, &got, &err) == 0 &&
          strcmp(got.key, "uploads/sh-a.png") == 0);
    CHECK(store_assets_due(st, now + 3600, due, 8, &n, &err) == 0 && n == 1 &&
          strcmp(due[0].id, "sh-a") == 0);
    CHECK(store_assets_due(st, now + 3600, due, 0, &n, &err) == 0 && n == 0);

    /* refused, nothing written: expired, deleted, foreign, unknown (a foreign one is told as unknown) */
    make_asset(&a, "sh-old", "ka", now - 1);
    CHECK(store_asset_insert(st, &a, &err) == 0);
    make_asset(&a, "sh-gone", "ka", now + 3600);
    CHECK(store_asset_insert(st, &a, &err) == 0 && store_asset_deleted(st, "sh-gone", &err) == 0);
    make_asset(&a, "sh-b", "kb", now + 3600);
    CHECK(store_asset_insert(st, &a, &err) == 0);
    static const struct {
        const char *asset, *owner, *told;
    } refused[] = {{"sh-old", "ka", "expired"},
                   {"sh-gone", "ka", "expired"},
                   {"sh-b", "ka", "no asset sh-b"},
                   {"sh-b", "", "no asset sh-b"},
                   {"sh-none", "ka", "no asset sh-none"}};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        make_job(&j, "sh-x", refused[i].owner, refused[i].asset, 0);
        CHECKF(store_job_insert(st, &j, &err) == UP_ERR_NOT_FOUND, "%s", refused[i].asset);
        CHECKF(strstr(err.msg, refused[i].told), "%s: %s", refused[i].asset, err.msg);
        CHECK(!exists(st, "sh-x") && !asset_exists(st, "sh-x"));
    }
    /* charged: the refusal takes nothing either */
    make_job(&j, "sh-x", "kb", "sh-none", 0);
    j.credits = 2;
    store_charge_t c;
    CHECK(store_job_insert_charged(st, &j, 0, &c, &err) == UP_ERR_NOT_FOUND);
    CHECK(!exists(st, "sh-x") && balance(st, "kb") == 10);
    snprintf(j.asset_id, sizeof j.asset_id, "sh-b");
    CHECKF(store_job_insert_charged(st, &j, 0, &c, &err) == 0, "%s", err.msg);
    CHECK(balance(st, "kb") == 8 && c.credits == 10);

    /* blob keys: every asset's that has one (a deleted one not), and results */
    char all[4096] = "";
    CHECK(store_blobs_referenced(st, collect_key, all, &err) == 0);
    CHECKF(strstr(all, ";uploads/sh-a.png;") && strstr(all, ";uploads/sh-old.png;") &&
               strstr(all, ";uploads/sh-b.png;") && strstr(all, ";results/sh-0-a1.png;") &&
               !strstr(all, "sh-gone"),
           "%s", all);
    /* deleted: the key clears, in the jobs' reads too, and it is due no more */
    CHECK(store_asset_deleted(st, "sh-a", &err) == 0);
    CHECK(store_job_get(st, "sh-1", &g, &err) == 0 && g.input_key[0] == '\0' && g.input_width == 640);
    CHECK(store_asset_due(st, "sh-a", now + 3600, &got, &err) == UP_ERR_NOT_FOUND);
    all[0] = '\0';
    CHECK(store_blobs_referenced(st, collect_key, all, &err) == 0 && !strstr(all, "sh-a.png"));
    store_close(st);
}

static void test_one_shot(void) {
    store_t *st = open_sub("oneshot");
    if (!st)
        return;
    up_error_t err;
    asset_t got;
    job_t j, g;
    store_fence_t f;
    make_key(st, "ko", 3, -1, -1);
    make_job(&j, "os-1", "ko", "", 0);
    CHECKF(store_job_insert(st, &j, &err) == 0, "%s", err.msg);
    /* the job's own asset: its input fields, its id and owner, expiring as it was made */
    CHECK(store_job_get(st, "os-1", &g, &err) == 0 && strcmp(g.asset_id, "os-1") == 0);
    CHECK(store_asset_get(st, "os-1", &got, &err) == 0);
    CHECK(strcmp(got.owner, "ko") == 0 && strcmp(got.key, "uploads/os-1.jpg") == 0);
    CHECK(strcmp(got.name, "one os-1.jpg") == 0 && strcmp(got.format, "jpg") == 0);
    CHECK(got.width == 32 && got.height == 24 && got.bytes == 777 && got.frames == 1);
    CHECK(got.created_at == g.created_at && got.expires_at == g.created_at);
    /* due only once its job has ended: queued, claimed, processing are not */
    double late = now_s() + 1e6;
    CHECK(store_asset_due(st, "os-1", late, &got, &err) == UP_ERR_NOT_FOUND);
    CHECK(store_job_claim(st, WORKER, 60, NULL, &g, &err) == 0);
    CHECK(store_asset_due(st, "os-1", late, &got, &err) == UP_ERR_NOT_FOUND);
    f = (store_fence_t){.worker = WORKER, .attempt = g.attempts};
    CHECK(store_job_start(st, "os-1", &f, NULL, &err) == 0);
    CHECK(store_asset_due(st, "os-1", late, &got, &err) == UP_ERR_NOT_FOUND);
    asset_t due[4];
    int n = -1;
    CHECK(store_assets_due(st, late, due, 4, &n, &err) == 0 && n == 0);
    /* requeued (a graceful stop): still in use */
    CHECK(store_job_requeue(st, "os-1", &f, &err) == 0);
    CHECK(store_asset_due(st, "os-1", late, &got, &err) == UP_ERR_NOT_FOUND);
    CHECK(run(st, "os-1", &g, &f) == 0);
    /* ended: due at once (its expiry is its creation) */
    snprintf(g.result_key, sizeof g.result_key, "results/os-1-a2.webp");
    CHECK(store_job_complete(st, &g, &f, 60, &err) == 0);
    CHECK(store_asset_due(st, "os-1", now_s(), &got, &err) == 0 && strcmp(got.key, "uploads/os-1.jpg") == 0);
    CHECK(store_assets_due(st, now_s(), due, 4, &n, &err) == 0 && n == 1 && strcmp(due[0].id, "os-1") == 0);
    /* a one-shot asset feeds no other job: it is past its expiry */
    make_job(&j, "os-2", "ko", "os-1", 0);
    CHECK(store_job_insert(st, &j, &err) == UP_ERR_NOT_FOUND && !exists(st, "os-2"));
    /* a job whose id is taken by an asset: refused whole */
    asset_t a;
    memset(&a, 0, sizeof a);
    snprintf(a.id, sizeof a.id, "os-3");
    snprintf(a.owner, sizeof a.owner, "ko");
    a.expires_at = now_s() + 60;
    CHECK(store_asset_insert(st, &a, &err) == 0);
    make_job(&j, "os-3", "ko", "", 0);
    CHECK(store_job_insert(st, &j, &err) == UP_ERR_INVALID && !exists(st, "os-3"));
    store_close(st);
}

static void test_batch(void) {
    store_t *st = open_sub("batch");
    if (!st)
        return;
    up_error_t err;
    store_charge_t c;
    make_key(st, "kc", 4, -1, 10);
    make_key(st, "kq", 5, 5, -1);
    make_key(st, "kd", 6, -1, -1);
    asset_t a;
    make_asset(&a, "b-in", "kc", now_s() + 3600);
    CHECK(store_asset_insert(st, &a, &err) == 0);

    /* three jobs, one charge of their sum; an asset shared and two one-shot inputs */
    job_t jobs[3];
    make_job(&jobs[0], "b-1", "kc", "b-in", 1);
    make_job(&jobs[1], "b-2", "kc", "b-in", 2);
    make_job(&jobs[2], "b-3", "kc", "", 3);
    for (int i = 0; i < 3; i++)
        jobs[i].credits = i + 2; /* 2 + 3 + 4 */
    CHECKF(store_jobs_submit(st, jobs, 3, 0, NULL, &c, &err) == 0, "%s", err.msg);
    CHECK(c.credits == 10 && c.used == 0 && c.quota == -1);
    CHECK(balance(st, "kc") == 1);
    long long used = -1;
    CHECK(store_key_usage(st, "kc", 0, &used, &err) == 0 && used == 9);
    job_t g;
    CHECK(store_job_get(st, "b-2", &g, &err) == 0 && g.credits == 3 &&
          strcmp(g.input_key, "uploads/b-in.png") == 0);
    CHECK(store_job_get(st, "b-3", &g, &err) == 0 && strcmp(g.input_key, "uploads/b-3.jpg") == 0);
    /* each job keeps its own charge: one failed gives back its own */
    CHECK(store_job_fail(st, "b-2", NULL, "gone", 60, &err) == 0);
    CHECK(balance(st, "kc") == 4 && store_key_usage(st, "kc", 0, &used, &err) == 0 && used == 6);

    /* refused whole, nothing written: the balance (402), ... */
    job_t more[3];
    make_job(&more[0], "b-4", "kc", "", 4);
    make_job(&more[1], "b-5", "kc", "b-in", 5);
    make_job(&more[2], "b-6", "kc", "", 6);
    for (int i = 0; i < 3; i++)
        more[i].credits = 2; /* 6 > 4 */
    CHECK(store_jobs_submit(st, more, 3, 0, NULL, &c, &err) == UP_ERR_CREDITS);
    CHECKF(strstr(err.msg, "4 left, 6 needed"), "%s", err.msg);
    CHECK(c.credits == 4);
    for (int i = 0; i < 3; i++)
        CHECK(!exists(st, more[i].id) && !asset_exists(st, more[i].id));
    CHECK(balance(st, "kc") == 4);
    /* ... a duplicate id in the batch or with a stored job, an unknown asset ... */
    for (int i = 0; i < 3; i++)
        more[i].credits = 1;
    snprintf(more[2].id, sizeof more[2].id, "b-4");
    CHECK(store_jobs_submit(st, more, 3, 0, NULL, &c, &err) == UP_ERR_INVALID);
    snprintf(more[2].id, sizeof more[2].id, "b-1");
    CHECK(store_jobs_submit(st, more, 3, 0, NULL, &c, &err) == UP_ERR_INVALID);
    snprintf(more[2].id, sizeof more[2].id, "b-6");
    snprintf(more[1].asset_id, sizeof more[1].asset_id, "b-none");
    CHECK(store_jobs_submit(st, more, 3, 0, NULL, &c, &err) == UP_ERR_NOT_FOUND);
    snprintf(more[1].asset_id, sizeof more[1].asset_id, "b-in");
    /* ... two owners, a charge without a period */
    snprintf(more[1].owner, sizeof more[1].owner, "kd");
    CHECK(store_jobs_submit(st, more, 3, 0, NULL, &c, &err) == UP_ERR_INVALID);
    snprintf(more[1].owner, sizeof more[1].owner, "kc");
    CHECK(store_jobs_submit(st, more, 3, -1, NULL, &c, &err) == UP_ERR_INVALID);
    for (int i = 0; i < 3; i++)
        CHECK(!exists(st, more[i].id) && !asset_exists(st, more[i].id));
    CHECK(balance(st, "kc") == 4 && store_key_usage(st, "kc", 0, &used, &err) == 0 && used == 6);
    /* and then it goes in, once */
    store_idem_t idem = {.scope = "kc", .key = "batch-1", .status = 201, .body = "{}", .job_id = "b-4"};
    CHECKF(store_jobs_submit(st, more, 3, 0, &idem, &c, &err) == 0, "%s", err.msg);
    CHECK(balance(st, "kc") == 1 && exists(st, "b-6"));
    snprintf(more[0].id, sizeof more[0].id, "b-7"); /* a retry under the same key: refused whole */
    snprintf(more[1].id, sizeof more[1].id, "b-8");
    snprintf(more[2].id, sizeof more[2].id, "b-9");
    for (int i = 0; i < 3; i++)
        more[i].credits = 0; /* (the balance would refuse it first) */
    CHECK(store_jobs_submit(st, more, 3, 0, &idem, &c, &err) == UP_ERR_CONFLICT);
    CHECK(!exists(st, "b-7") && balance(st, "kc") == 1);

    /* a monthly quota counts the batch's sum */
    job_t q[3];
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "bq-%d", i);
        make_job(&q[i], id, "kq", "", 10 + i);
        q[i].credits = 2;
    }
    CHECK(store_jobs_submit(st, q, 3, 0, NULL, &c, &err) == UP_ERR_QUOTA && c.quota == 5);
    CHECK(!exists(st, "bq-0"));
    CHECK(store_jobs_submit(st, q, 2, 0, NULL, &c, &err) == 0 && exists(st, "bq-1"));
    store_close(st);
}

static void test_steps_report(void) {
    store_t *st = open_sub("steps");
    if (!st)
        return;
    up_error_t err;
    job_t j, g;
    store_fence_t f;
    /* no steps: upscale then encode, from the settings */
    make_job(&j, "st-1", "", "", 1);
    j.tile = 128;
    CHECK(store_job_insert(st, &j, &err) == 0);
    CHECK(store_job_get(st, "st-1", &g, &err) == 0);
    CHECKF(strcmp(g.steps,
                  "[{\"op\":\"upscale\",\"model\":\"realesr-animevideov3\",\"scale\":2,\"tile\":128},"
                  "{\"op\":\"encode\",\"format\":\"webp\",\"quality\":75}]") == 0,
           "%s", g.steps);
    CHECK(g.report[0] == '\0');
    make_job(&j, "st-2", "", "", 2);
    j.format[0] = '\0'; /* the input's own format: left out */
    j.quality = 0;
    CHECK(store_job_insert(st, &j, &err) == 0);
    CHECK(store_job_get(st, "st-2", &g, &err) == 0);
    CHECKF(strstr(g.steps, "{\"op\":\"encode\",\"quality\":0}]"), "%s", g.steps);
    /* steps given: kept as they are (the store does not parse them) */
    static const char steps[] = "[{\"op\":\"resize\",\"width\":800},{\"op\":\"encode\",\"format\":\"png\"}]";
    make_job(&j, "st-3", "", "", 3);
    snprintf(j.steps, sizeof j.steps, "%s", steps);
    CHECK(store_job_insert(st, &j, &err) == 0);
    CHECK(store_job_get(st, "st-3", &g, &err) == 0 && strcmp(g.steps, steps) == 0);
    /* the report, written by complete */
    CHECK(run(st, "st-1", &g, &f) == 0);
    static const char report[] = "[{\"op\":\"upscale\",\"in\":[32,24],\"out\":[64,48],\"seconds\":0.5},"
                                 "{\"op\":\"encode\",\"format\":\"webp\",\"quality\":75,\"bytes\":1234}]";
    snprintf(g.result_key, sizeof g.result_key, "results/st-1-a1.webp");
    snprintf(g.report, sizeof g.report, "%s", report);
    CHECK(store_job_complete(st, &g, &f, 60, &err) == 0);
    CHECK(store_job_get(st, "st-1", &g, &err) == 0 && strcmp(g.report, report) == 0);
    CHECK(g.status == JOB_STATUS_COMPLETED && strstr(g.steps, "\"tile\":128"));
    store_close(st);
    /* and after reopening */
    st = open_sub("steps");
    CHECK(st && store_job_get(st, "st-1", &g, &err) == 0 && strcmp(g.report, report) == 0);
    store_close(st);
}

/* The cases, on whichever backend tb_run runs them. */
static void run_all(void) {
    test_assets();
    test_shared();
    test_one_shot();
    test_batch();
    test_steps_report();
}

int main(void) {
    char dir[256];
    snprintf(dir, sizeof dir, "/tmp/upres-assets-test-%d", (int)getpid());
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {
    }
    tb_run(dir, run_all);
    if (system(cmd)) {
    }
    return test_summary();
}
