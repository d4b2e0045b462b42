/*
 * jobs_test.c - the jobs API (src/jobs) with no server: a real store, blob
 * store and queue (the fast model, one worker) on a temporary folder.
 *
 * An asset put once feeds a batch of two pipelines (upscale then encode
 * webp; upscale, resize with pad, encode jpg): one charge for the batch,
 * both complete at the sizes the pipelines say, each with its report, and
 * the asset's file stays until its time is over while jobs end. A new
 * upload is a one-shot asset: its file goes when its job ends.
 * Refusals are values, with nothing stored or charged: a broken pipeline
 * (400), an unknown model (400), another owner's asset (404), a batch the
 * key cannot pay for (402 with credits and credits_needed), an answer that
 * cannot be encoded (500), a stopping engine (503), a text file (415). An
 * Idempotency-Key replays the same bytes, and refuses another request.
 * The visibility rule: another key's job is not found; destroying a keyed
 * job needs its key.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth/auth.h"
#include "blob/blob.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/uuid.h"
#include "image/image.h"
#include "jobs/jobs.h"
#include "queue/queue.h"
#include "store/store.h"
#include "test.h"

#define MODEL "realesr-animevideov3"

static const char *data;
static char root[256];
static double budget = 60;

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* The bytes of a shared test image (new: free()), *size. */
static void *read_data(const char *rel, size_t *size) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", data, rel);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc((size_t)n);
    *size = buf && fread(buf, 1, (size_t)n, f) == (size_t)n ? (size_t)n : 0;
    fclose(f);
    return buf;
}

/* The answer a dialect would give: {"ids":[...],"note":...}; ctx non-NULL makes it fail (NULL). */
static char *answer(void *ctx, const job_t *jobs, int n, const char *note, unsigned *status) {
    if (ctx)
        return NULL;
    json_t *ids = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(ids, json_string(jobs[i].id));
    *status = 201;
    json_t *o = json_pack("{s:o,s:s?}", "ids", ids, "note", note);
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

static int wait_done(store_t *st, const char *id, job_t *out) {
    double t0 = mono_s();
    while (store_job_get(st, id, out, NULL) == 0) {
        if (out->status == JOB_STATUS_COMPLETED || out->status == JOB_STATUS_FAILED ||
            out->status == JOB_STATUS_CANCELLED || mono_s() - t0 > budget)
            return (int)out->status;
        sleep_s(0.02);
    }
    return -1;
}

static long long job_count(store_t *st) {
    long long c[JOB_STATUS_COUNT], n = 0;
    if (store_job_counts(st, c, NULL) == 0)
        for (int i = 0; i < JOB_STATUS_COUNT; i++)
            n += c[i];
    return n;
}

/* A key with tier basic (1 credit a job) and balance credits. */
static void make_key(store_t *st, api_key_t *k, long long credits) {
    memset(k, 0, sizeof *k);
    uuid_v4(k->id);
    snprintf(k->name, sizeof k->name, "test");
    char key[AUTH_KEY_LEN + 1], display[64];
    CHECK(auth_key_generate(key, k->hash, display) == 0);
    snprintf(k->prefix, sizeof k->prefix, "%.20s", display);
    snprintf(k->tier, sizeof k->tier, "basic");
    k->quota = -1;
    k->credits = credits;
    k->created_at = now_s();
    up_error_t err;
    CHECKF(store_key_insert(st, k, &err) == 0, "%s", err.msg);
}

static void refused(int rc, const jobs_refusal_t *r, unsigned status, const char *code) {
    CHECKF(rc == -1 && r->status == status && strcmp(r->code, code) == 0, "rc %d: %u %s (%s), wanted %u %s",
           rc, r->status, r->code, r->message, status, code);
}

int main(void) {
    data = test_env("UPRES_SHARED_DATA");
    const char *models = test_env("UPRES_TEST_MODELS");
    if (test_sanitized())
        budget = 300;
    log_set_level(LOG_WARN);
    snprintf(root, sizeof root, "/tmp/upres-jobs-test-%d", (int)getpid());
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s", root, root);
    CHECK(system(cmd) == 0);

    up_error_t err;
    upscale_registry_t *reg = NULL;
    store_t *st = NULL;
    blob_store_t *bs = NULL;
    queue_t *q = NULL;
    events_t *ev = events_new();
    CHECKF(upscale_registry_scan(models, &reg, &err) == 0, "%s", err.msg);
    CHECKF(store_open(root, &st, &err) == 0, "%s", err.msg);
    CHECKF(blob_open_local(root, &bs, &err) == 0, "%s", err.msg);
    queue_config_t cfg;
    queue_config_init(&cfg);
    cfg.blobs = bs;
    cfg.registry = reg;
    cfg.events = ev;
    cfg.threads_per_worker = 1;
    if (!reg || !st || !bs || queue_start(st, &cfg, &q, &err)) {
        CHECKF(0, "set-up: %s", err.msg);
        return test_summary();
    }
    jobs_t jobs;
    jobs_init(&jobs);
    jobs.store = st;
    jobs.blobs = bs;
    jobs.queue = q;
    jobs.events = ev;
    jobs.registry = reg;
    jobs.max_output_pixels = 4096ULL * 4096ULL;

    size_t png_size = 0;
    void *png = read_data("ref/in/chelsea_lr64.png", &png_size); /* 64 x 64 */
    CHECK(png && png_size > 0);
    api_key_t key, other, poor;
    make_key(st, &key, 10);
    make_key(st, &other, 10);
    make_key(st, &poor, 1);
    jobs_refusal_t r = {0};
    jobs_answer_t a;

    /* one asset, two pipelines, one charge */
    asset_t asset;
    jobs_input_t in = {.data = png, .size = png_size, .name = "chelsea.png"};
    CHECKF(jobs_asset_put(&jobs, &in, key.id, 3600, &asset, NULL, &r) == 0, "%s", r.message);
    CHECK(asset.width == 64 && asset.height == 64 && strcmp(asset.format, "png") == 0 && asset.frames == 1);
    job_t batch[2];
    memset(batch, 0, sizeof batch);
    snprintf(batch[0].steps, sizeof batch[0].steps,
             "[{\"op\":\"upscale\",\"model\":\"%s\",\"scale\":2},{\"op\":\"encode\",\"format\":\"webp\"}]",
             MODEL);
    snprintf(
        batch[1].steps, sizeof batch[1].steps,
        "[{\"op\":\"upscale\",\"model\":\"%s\",\"scale\":2},{\"op\":\"resize\",\"width\":100,\"height\":60,"
        "\"fit\":\"pad\"},{\"op\":\"encode\",\"format\":\"jpg\",\"quality\":70}]",
        MODEL);
    snprintf(batch[0].asset_id, sizeof batch[0].asset_id, "%s", asset.id);
    snprintf(batch[1].asset_id, sizeof batch[1].asset_id, "%s", asset.id);
    jobs_submission_t s = {.key = &key, .jobs = batch, .n = 2, .answer = answer};
    CHECKF(jobs_submit(&jobs, &s, &a, &r) == 0, "%s", r.message);
    CHECK(a.status == 201 && a.body && strstr(a.body, batch[0].id) && strstr(a.body, batch[1].id) &&
          !a.replayed);
    free(a.body);
    api_key_t k2;
    CHECK(store_key_find(st, key.id, &k2, &err) == 0 && k2.credits == 8); /* 2 jobs x 1 credit */
    CHECK(strcmp(batch[0].model, MODEL) == 0 && batch[0].scale == 2 && strcmp(batch[0].format, "webp") == 0);
    CHECK(strcmp(batch[1].format, "jpg") == 0 && batch[1].quality == 70);
    job_t j;
    CHECK(wait_done(st, batch[0].id, &j) == JOB_STATUS_COMPLETED);
    CHECKF(strcmp(j.result_format, "webp") == 0 && j.output_width == 128 && j.output_height == 128,
           "%s %dx%d", j.result_format, j.output_width, j.output_height);
    CHECKF(strstr(j.report, "\"upscale\"") && strstr(j.report, "\"encode\""), "report %s", j.report);
    CHECK(strcmp(j.asset_id, asset.id) == 0 && strcmp(j.input_name, "chelsea.png") == 0);
    CHECK(wait_done(st, batch[1].id, &j) == JOB_STATUS_COMPLETED);
    CHECKF(strcmp(j.result_format, "jpg") == 0 && j.output_width == 100 && j.output_height == 60, "%s %dx%d",
           j.result_format, j.output_width, j.output_height);
    CHECKF(strstr(j.report, "\"resize\""), "report %s", j.report);
    asset_t again;
    CHECK(store_asset_get(st, asset.id, &again, &err) == 0 && again.key[0]); /* its hour is not over */

    /* a new upload: a one-shot asset, its file gone once the job ends */
    job_t one;
    memset(&one, 0, sizeof one);
    snprintf(one.steps, sizeof one.steps, "[{\"op\":\"upscale\",\"model\":\"%s\",\"scale\":2}]", MODEL);
    jobs_submission_t s1 = {
        .input = {.data = png, .size = png_size, .name = "a.png"}, .jobs = &one, .n = 1, .answer = answer};
    CHECKF(jobs_submit(&jobs, &s1, &a, &r) == 0, "%s", r.message);
    free(a.body);
    CHECK(strcmp(one.format, "png") == 0); /* the encode the pipeline lacked: the input's format */
    CHECK(wait_done(st, one.id, &j) == JOB_STATUS_COMPLETED && j.output_width == 128);
    double t0 = mono_s();
    while (store_job_get(st, one.id, &j, NULL) == 0 && j.input_key[0] && mono_s() - t0 < 5)
        sleep_s(0.02);
    CHECKF(!j.input_key[0], "input %s kept", j.input_key);

    /* refusals: values, nothing stored or charged */
    long long n_jobs = job_count(st);
    job_t bad;
    memset(&bad, 0, sizeof bad);
    jobs_submission_t sb = {.key = &key, .jobs = &bad, .n = 1, .answer = answer};
    snprintf(bad.asset_id, sizeof bad.asset_id, "%s", asset.id);
    snprintf(bad.steps, sizeof bad.steps, "[{\"op\":\"sharpen\"}]");
    refused(jobs_submit(&jobs, &sb, &a, &r), &r, 400, "INVALID_REQUEST");
    memset(&bad, 0, sizeof bad);
    snprintf(bad.asset_id, sizeof bad.asset_id, "%s", asset.id);
    snprintf(bad.steps, sizeof bad.steps, "[{\"op\":\"upscale\",\"model\":\"no-such-model\"}]");
    refused(jobs_submit(&jobs, &sb, &a, &r), &r, 400, "INVALID_MODEL");
    memset(&bad, 0, sizeof bad);
    snprintf(bad.asset_id, sizeof bad.asset_id, "%s", asset.id);
    snprintf(bad.steps, sizeof bad.steps, "[{\"op\":\"upscale\",\"model\":\"%s\",\"scale\":2}]", MODEL);
    sb.key = &other; /* another owner's asset is not found */
    refused(jobs_submit(&jobs, &sb, &a, &r), &r, 404, "NOT_FOUND");
    sb.key = &key;
    sb.answer_ctx = "fail";
    refused(jobs_submit(&jobs, &sb, &a, &r), &r, 500, "INTERNAL");
    sb.answer_ctx = NULL;
    snprintf(bad.steps, sizeof bad.steps,
             "[{\"op\":\"upscale\",\"model\":\"%s\"},{\"op\":\"resize\",\"width\":5000,\"height\":5000}]",
             MODEL);
    refused(jobs_submit(&jobs, &sb, &a, &r), &r, 422, "IMAGE_TOO_LARGE"); /* 25 Mpx over 16.7 */
    snprintf(bad.steps, sizeof bad.steps,
             "[{\"op\":\"upscale\",\"model\":\"%s\"},{\"op\":\"resize\",\"width\":4500,\"height\":100}]",
             MODEL);
    refused(jobs_submit(&jobs, &sb, &a, &r), &r, 400, "TIER_LIMIT_EXCEEDED"); /* basic: 4096 wide at most */
    /* priority: bounded, and raising it is the tier's (basic: 0 at most) */
    snprintf(bad.steps, sizeof bad.steps, "[{\"op\":\"upscale\",\"model\":\"%s\",\"scale\":2}]", MODEL);
    bad.priority = 1;
    refused(jobs_submit(&jobs, &sb, &a, &r), &r, 400, "PRIORITY_NOT_ALLOWED");
    CHECK(json_integer_value(json_object_get(r.extra, "max_priority")) == 0);
    jobs_refusal_fini(&r);
    bad.priority = -11;
    refused(jobs_submit(&jobs, &sb, &a, &r), &r, 400, "INVALID_REQUEST");
    bad.priority = 0;
    CHECK(job_count(st) == n_jobs);

    /* a batch the key cannot pay for is refused whole */
    asset_t pa;
    CHECK(jobs_asset_put(&jobs, &in, poor.id, 3600, &pa, NULL, &r) == 0);
    job_t two[2];
    memset(two, 0, sizeof two);
    for (int i = 0; i < 2; i++) {
        snprintf(two[i].steps, sizeof two[i].steps, "[{\"op\":\"upscale\",\"model\":\"%s\",\"scale\":2}]",
                 MODEL);
        snprintf(two[i].asset_id, sizeof two[i].asset_id, "%s", pa.id);
    }
    jobs_submission_t sp = {.key = &poor, .jobs = two, .n = 2, .answer = answer};
    refused(jobs_submit(&jobs, &sp, &a, &r), &r, 402, "INSUFFICIENT_CREDITS");
    CHECK(json_integer_value(json_object_get(r.extra, "credits")) == 1 &&
          json_integer_value(json_object_get(r.extra, "credits_needed")) == 2);
    jobs_refusal_fini(&r);
    CHECK(job_count(st) == n_jobs && store_key_find(st, poor.id, &k2, &err) == 0 && k2.credits == 1);

    /* a text file is not an image (a staged file taken over: removed) */
    char text[400];
    snprintf(text, sizeof text, "%s/text.png", root);
    FILE *f = fopen(text, "w");
    if (f) {
        fputs("not an image\n", f);
        fclose(f);
    }
    jobs_submission_t st415 = {.input = {.path = text, .size = 13}, .jobs = &bad, .n = 1, .answer = answer};
    refused(jobs_submit(&jobs, &st415, &a, &r), &r, 415, "UNSUPPORTED_IMAGE");
    CHECK(access(text, F_OK) != 0);

    /* Idempotency-Key: the same bytes again, another request refused */
    unsigned char h1[32] = {1}, h2[32] = {2};
    job_t ik;
    memset(&ik, 0, sizeof ik);
    snprintf(ik.steps, sizeof ik.steps, "[{\"op\":\"upscale\",\"model\":\"%s\",\"scale\":2}]", MODEL);
    snprintf(ik.asset_id, sizeof ik.asset_id, "%s", asset.id);
    jobs_submission_t si = {
        .key = &key, .jobs = &ik, .n = 1, .idem_key = "k-1", .idem_hash = h1, .answer = answer};
    CHECKF(jobs_submit(&jobs, &si, &a, &r) == 0, "%s", r.message);
    char *first = a.body;
    jobs_answer_t again_a;
    CHECK(jobs_idem_find(&jobs, key.id, "k-1", h1, &again_a, &r) == 1 && again_a.replayed &&
          strcmp(again_a.body, first) == 0);
    free(again_a.body);
    free(first);
    refused(jobs_idem_find(&jobs, key.id, "k-1", h2, &again_a, &r), &r, 422, "IDEMPOTENCY_KEY_REUSED");
    CHECK(jobs_idem_find(&jobs, other.id, "k-1", h1, &again_a, &r) == 0); /* scoped to the key */

    /* the visibility rule */
    refused(jobs_get(&jobs, ik.id, &other, 0, JOBS_STATUS, &j, &r), &r, 404, "NOT_FOUND");
    refused(jobs_get(&jobs, ik.id, NULL, 0, JOBS_DESTROY, &j, &r), &r, 401, "UNAUTHORIZED");
    CHECK(jobs_get(&jobs, ik.id, NULL, 0, JOBS_STATUS, &j, &r) == 0);
    refused(jobs_get(&jobs, ik.id, NULL, 1, JOBS_STATUS, &j, &r), &r, 404, "NOT_FOUND");
    refused(jobs_get(&jobs, "not-a-uuid", &key, 0, JOBS_STATUS, &j, &r), &r, 404, "NOT_FOUND");
    CHECK(wait_done(st, ik.id, &j) == JOB_STATUS_COMPLETED);
    job_status_t was;
    refused(jobs_cancel(&jobs, &j, &was, &r), &r, 409, "JOB_FINISHED");

    /* stopping */
    atomic_store(&jobs.stopping, 1);
    refused(jobs_submit(&jobs, &si, &a, &r), &r, 503, "UNAVAILABLE");

    queue_stop(q);
    events_free(ev);
    blob_close(bs);
    store_close(st);
    upscale_registry_free(reg);
    free(png);
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", root);
    return test_summary();
}
