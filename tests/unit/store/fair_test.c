/*
 * fair_test.c - the claim's order (store.h "Order") on every backend:
 * weighted fair queueing between owners under a strict priority. A big
 * batch does not starve a later single job, weights share the claims, a
 * priority beats any tag, an idle owner banks no credit, a cancelled
 * batch gives its place back, a requeued or rescued job keeps its place,
 * the queue position follows the claim, and both backends compute the
 * same tags (store_fair_tag).
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "store/rules.h"
#include "store/store.h"
#include "test.h"
#include "unit/store/backends.h"

#define WORKER "fair-test-worker"

static void make_job(job_t *j, const char *id, const char *owner, double cost, double weight, int priority) {
    memset(j, 0, sizeof *j);
    snprintf(j->id, sizeof j->id, "%s", id);
    snprintf(j->owner, sizeof j->owner, "%s", owner);
    snprintf(j->model, sizeof j->model, "realesr-animevideov3");
    j->scale = 2;
    snprintf(j->input_key, sizeof j->input_key, "uploads/%s.png", id);
    snprintf(j->input_name, sizeof j->input_name, "%s.png", id);
    snprintf(j->input_format, sizeof j->input_format, "png");
    j->input_width = j->input_height = 16;
    j->input_bytes = 100;
    j->cost = cost;
    j->weight = weight;
    j->priority = priority;
}

/* Submit n jobs PREFIX-first..PREFIX-(first+n-1) of owner in batches of up to 16 (store_jobs_submit). */
static int submit(store_t *st, const char *prefix, int first, int n, const char *owner, double cost,
                  double weight, int priority) {
    job_t jobs[16];
    for (int done = 0; done < n;) {
        int k = n - done < 16 ? n - done : 16;
        for (int i = 0; i < k; i++) {
            char id[40];
            snprintf(id, sizeof id, "%s-%d", prefix, first + done + i);
            make_job(&jobs[i], id, owner, cost, weight, priority);
        }
        up_error_t err;
        int rc = store_jobs_submit(st, jobs, k, -1, NULL, NULL, &err);
        if (rc) {
            fprintf(stderr, "submit %s: %s\n", prefix, err.msg);
            return rc;
        }
        done += k;
    }
    return 0;
}

/* Claim up to n jobs; counts[i] += 1 for each whose id starts with prefixes[i]; returns the claims made. */
static int claim_count(store_t *st, int n, const char *const *prefixes, int n_prefixes, int *counts,
                       char (*ids)[40]) {
    int made = 0;
    for (; made < n; made++) {
        job_t got;
        up_error_t err;
        if (store_job_claim(st, WORKER, 60, NULL, &got, &err))
            break;
        if (ids)
            snprintf(ids[made], 40, "%s", got.id);
        for (int i = 0; i < n_prefixes; i++)
            if (strncmp(got.id, prefixes[i], strlen(prefixes[i])) == 0 && got.id[strlen(prefixes[i])] == '-')
                counts[i]++;
    }
    return made;
}

static int position_of(store_t *st, const char *id) {
    int pos = -1;
    double mpx;
    up_error_t err;
    return store_job_queue_position(st, id, &pos, &mpx, &err) ? -1 : pos;
}

/* Key A has 100 jobs queued; key B then submits 5: all 5 of B's are among the first 15 claims. */
static void test_batch_does_not_starve(void) {
    store_t *st = tb_open("batch");
    if (!st)
        return;
    CHECK(submit(st, "A", 0, 100, "key-a", 1, 1, 0) == 0);
    CHECK(submit(st, "B", 0, 5, "key-b", 1, 1, 0) == 0);
    CHECKF(position_of(st, "B-4") >= 1 && position_of(st, "B-4") <= 15, "B-4 at %d", position_of(st, "B-4"));
    CHECK(position_of(st, "A-99") == 105);
    const char *const p[] = {"A", "B"};
    int counts[2] = {0, 0};
    CHECK(claim_count(st, 15, p, 2, counts, NULL) == 15);
    CHECKF(counts[1] == 5, "B got %d of the first 15 claims", counts[1]);
    /* the anonymous owner ("") is an owner like any other */
    CHECK(submit(st, "anon", 0, 3, "", 1, 1, 0) == 0);
    int c2[2] = {0, 0};
    const char *const pa[] = {"anon", "A"};
    CHECK(claim_count(st, 7, pa, 2, c2, NULL) == 7);
    CHECKF(c2[0] == 3, "anonymous got %d of the next 7 claims", c2[0]);
    store_close(st);
}

/* Weights share the claims: B (weight 3) gets about three claims for each of A's (weight 1). */
static void test_weights(void) {
    store_t *st = tb_open("weights");
    if (!st)
        return;
    CHECK(submit(st, "A", 0, 40, "key-a", 1, 1, 0) == 0);
    CHECK(submit(st, "B", 0, 40, "key-b", 1, 3, 0) == 0);
    const char *const p[] = {"A", "B"};
    int counts[2] = {0, 0};
    CHECK(claim_count(st, 20, p, 2, counts, NULL) == 20);
    CHECKF(counts[1] >= 13 && counts[0] >= 3, "A %d, B %d of 20 (weights 1 and 3)", counts[0], counts[1]);
    store_close(st);

    /* cost: C's jobs are 4 times as big as D's, so D gets about four claims for each of C's */
    st = tb_open("costs");
    if (!st)
        return;
    CHECK(submit(st, "C", 0, 40, "key-c", 4, 1, 0) == 0);
    CHECK(submit(st, "D", 0, 40, "key-d", 1, 1, 0) == 0);
    const char *const q[] = {"C", "D"};
    int c2[2] = {0, 0};
    CHECK(claim_count(st, 20, q, 2, c2, NULL) == 20);
    CHECKF(c2[1] >= 14 && c2[0] >= 2, "C %d, D %d of 20 (costs 4 and 1)", c2[0], c2[1]);
    store_close(st);
}

/* A priority beats any tag: higher first, lower last, fair within each level. */
static void test_priority(void) {
    store_t *st = tb_open("priority");
    if (!st)
        return;
    up_error_t err;
    CHECK(submit(st, "low", 0, 1, "key-a", 1, 1, -1) == 0); /* the smallest tag of all, but low */
    CHECK(submit(st, "A", 0, 20, "key-a", 1, 1, 0) == 0);
    CHECK(submit(st, "hi", 0, 2, "key-a", 1, 1, 3) == 0); /* behind A's 20 in tags, but high */
    CHECK(submit(st, "B", 0, 1, "key-b", 1, 1, 0) == 0);
    CHECK(position_of(st, "hi-1") == 2 && position_of(st, "low-0") == 24);
    job_t got;
    CHECK(store_job_claim(st, WORKER, 60, NULL, &got, &err) == 0 && strcmp(got.id, "hi-0") == 0 &&
          got.priority == 3);
    CHECK(store_job_claim(st, WORKER, 60, NULL, &got, &err) == 0 && strcmp(got.id, "hi-1") == 0);
    const char *const p[] = {"B"};
    int counts[1] = {0};
    CHECK(claim_count(st, 3, p, 1, counts, NULL) == 3 && counts[0] == 1); /* fair within level 0 */
    char ids[30][40];
    int n = claim_count(st, 30, p, 0, NULL, ids);
    CHECKF(n == 19 && strcmp(ids[n - 1], "low-0") == 0, "%d claims, the last %s", n, n ? ids[n - 1] : "-");
    /* the bounds */
    job_t j;
    make_job(&j, "bad", "key-a", 1, 1, STORE_PRIORITY_MAX + 1);
    CHECK(store_job_insert(st, &j, &err) == UP_ERR_INVALID && strstr(err.msg, "priority") != NULL);
    make_job(&j, "bad", "key-a", 1, 1, STORE_PRIORITY_MIN - 1);
    CHECK(store_job_insert(st, &j, &err) == UP_ERR_INVALID);
    make_job(&j, "bad", "key-a", NAN, 1, 0);
    CHECK(store_job_insert(st, &j, &err) == UP_ERR_INVALID);
    CHECK(store_job_get(st, "bad", &got, &err) == UP_ERR_NOT_FOUND);
    store_close(st);
}

/* An owner idle for long banks no credit: it starts at the queue's virtual time, not at its old tags. */
static void test_idle_banks_nothing(void) {
    store_t *st = tb_open("idle");
    if (!st)
        return;
    up_error_t err;
    CHECK(submit(st, "A", 0, 10, "key-a", 1, 1, 0) == 0);
    char ids[10][40];
    CHECK(claim_count(st, 10, NULL, 0, NULL, ids) == 10);
    for (int i = 0; i < 10; i++)
        CHECK(store_job_fail(st, ids[i], NULL, "done with", 60, &err) == 0);
    CHECK(submit(st, "B", 0, 50, "key-b", 1, 1, 0) == 0);
    CHECK(claim_count(st, 20, NULL, 0, NULL, NULL) == 20);
    CHECK(submit(st, "A", 100, 20, "key-a", 1, 1, 0) == 0);
    const char *const p[] = {"A", "B"};
    int counts[2] = {0, 0};
    CHECK(claim_count(st, 10, p, 2, counts, NULL) == 10);
    CHECKF(counts[0] >= 4 && counts[0] <= 6, "A got %d of 10 claims after its idle time", counts[0]);
    store_close(st);
}

/* A cancelled batch gives its place back: the owner's next job is not queued behind it. */
static void test_cancel_gives_back(void) {
    store_t *st = tb_open("cancel");
    if (!st)
        return;
    up_error_t err;
    CHECK(submit(st, "B", 0, 10, "key-b", 1, 1, 0) == 0);
    CHECK(submit(st, "A", 0, 30, "key-a", 1, 1, 0) == 0);
    for (int i = 0; i < 30; i++) {
        char id[40];
        snprintf(id, sizeof id, "A-%d", i);
        CHECK(store_job_cancel(st, id, NULL, &err) == 0);
    }
    CHECK(submit(st, "A", 100, 1, "key-a", 1, 1, 0) == 0);
    CHECKF(position_of(st, "A-100") <= 3, "A-100 at %d", position_of(st, "A-100"));
    store_close(st);
}

/* A requeued or rescued job keeps its tag, so its place ahead of the jobs that came after it. */
static void test_requeue_keeps_place(void) {
    store_t *st = tb_open("requeue");
    if (!st)
        return;
    up_error_t err;
    CHECK(submit(st, "A", 0, 10, "key-a", 1, 1, 0) == 0);
    job_t got, again;
    CHECK(store_job_claim(st, WORKER, 60, NULL, &got, &err) == 0 && strcmp(got.id, "A-0") == 0);
    double tag = got.vtag;
    CHECK(submit(st, "B", 0, 10, "key-b", 1, 1, 0) == 0);
    store_fence_t f = {got.worker, got.attempts};
    CHECK(store_job_requeue(st, got.id, &f, &err) == 0);
    CHECK(position_of(st, "A-0") == 1);
    CHECK(store_job_claim(st, WORKER, 60, NULL, &again, &err) == 0 && strcmp(again.id, "A-0") == 0);
    CHECK(again.vtag == tag);

    /* rescued after a lost lease: the same */
    CHECK(store_job_claim(st, WORKER, 60, NULL, &got, &err) == 0);
    char first[40];
    snprintf(first, sizeof first, "%s", got.id);
    CHECK(store_job_claim(st, WORKER, 0.01, NULL, &got, &err) == 0);
    char lost[40];
    snprintf(lost, sizeof lost, "%s", got.id);
    tag = got.vtag;
    usleep(50 * 1000);
    job_t rescued[4];
    int n = -1;
    CHECK(store_jobs_rescue(st, 5, 0, 60, rescued, 4, &n, &err) == 0 && n == 1);
    CHECK(submit(st, "C", 0, 5, "key-c", 1, 1, 0) == 0);
    CHECK(store_job_claim(st, WORKER, 60, NULL, &again, &err) == 0 && strcmp(again.id, lost) == 0 &&
          again.vtag == tag);
    store_close(st);
}

/* Both backends give the same tags: store_fair_tag over the same V and L. */
static void test_tags(void) {
    CHECK(store_fair_tag(3, 1, 2, 4) == 3.5);
    CHECK(store_fair_tag(1, 3, 0, 0) == 4); /* cost and weight <= 0 are 1 */
    store_t *st = tb_open("tags");
    if (!st)
        return;
    up_error_t err;
    CHECK(submit(st, "A", 0, 2, "key-a", 2, 4, 0) == 0); /* empty queue: V = 0 */
    CHECK(submit(st, "B", 0, 1, "key-b", 3, 1, 0) == 0); /* V = A-0's 0.5 */
    CHECK(submit(st, "P", 0, 1, "key-b", 1, 1, 2) == 0); /* level 2 is empty and nothing is held: V = 0 */
    job_t got;
    double want[][2] = {{0.5, 0}, {1.0, 0}, {3.5, 0}, {1.0, 2}};
    const char *id[] = {"A-0", "A-1", "B-0", "P-0"};
    for (int i = 0; i < 4; i++)
        CHECKF(store_job_get(st, id[i], &got, &err) == 0 && got.vtag == want[i][0] &&
                   got.priority == (int)want[i][1],
               "%s: vtag %g priority %d", id[i], got.vtag, got.priority);
    /* claimed and held: a new level's V is the largest held tag */
    CHECK(store_job_claim(st, WORKER, 60, NULL, &got, &err) == 0 && strcmp(got.id, "P-0") == 0);
    CHECK(submit(st, "Q", 0, 1, "key-c", 1, 1, 5) == 0);
    CHECK(store_job_get(st, "Q-0", &got, &err) == 0 && got.vtag == 2.0);
    store_close(st);
}

typedef struct racer {
    store_t *st;
    const char *prefix;
    int rc;
} racer_t;

static void *race_submit(void *arg) {
    racer_t *r = arg;
    r->rc = 0;
    for (int i = 0; i < 30 && !r->rc; i++)
        r->rc =
            submit(r->st, r->prefix, i, 1, "", 1, 1, 0); /* one job a transaction: 30 chances to collide */
    return NULL;
}

/* Two handles (two processes) submitting for one owner at once chain their tags: no two are equal. */
static void test_concurrent_owner(void) {
    store_t *a = tb_open("race"), *b = tb_open("race");
    if (!a || !b) {
        store_close(a);
        store_close(b);
        return;
    }
    racer_t ra = {a, "X", -1}, rb = {b, "Y", -1};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, race_submit, &ra);
    pthread_create(&tb, NULL, race_submit, &rb);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK(ra.rc == 0 && rb.rc == 0);
    double tags[60];
    int n = 0;
    job_t got;
    up_error_t err;
    while (n < 60 && store_job_claim(a, WORKER, 60, NULL, &got, &err) == 0)
        tags[n++] = got.vtag;
    int dup = 0;
    for (int i = 1; i < n; i++)
        dup += !(tags[i] > tags[i - 1]); /* claimed in tag order, each one larger */
    CHECKF(n == 60 && dup == 0, "%d jobs, %d tags not above the one before", n, dup);
    store_close(a);
    store_close(b);
}

static void run_all(void) {
    test_concurrent_owner();
    test_tags();
    test_batch_does_not_starve();
    test_weights();
    test_priority();
    test_idle_banks_nothing();
    test_cancel_gives_back();
    test_requeue_keeps_place();
}

int main(void) {
    char dir[256];
    snprintf(dir, sizeof dir, "/tmp/upres-fair-test-%d", (int)getpid());
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {
    }
    tb_run(dir, run_all);
    if (system(cmd)) {
    }
    return test_summary();
}
