/*
 * ratelimit_test.c - per-key sliding-window limits (src/auth/ratelimit.c).
 *
 * Times are explicit, so nothing sleeps: a per-minute burst gets exactly
 * its count and then a retry_after that says when the oldest request
 * leaves the window; the window slides one request at a time; the per-day
 * limit alone and both at once (the later of the two times wins); keys are
 * independent; both limits off means unlimited; threads racing on one key
 * get exactly the limit between them; and many keys that fall idle are
 * dropped as the table fills, without changing any answer.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "auth/auth.h"
#include "test.h"

#define N_THREADS 8
#define N_PER_THREAD 100

static int near(double a, double b) { return fabs(a - b) < 1e-6; }

static void test_per_minute(void) {
    ratelimit_t *rl = ratelimit_new(60, 0);
    double ra = -1, step = 1.0 / 64; /* exact in binary, so the window edges are exact too */
    int win = -1, n_ok = 0;
    for (int i = 0; i < 60; i++)
        n_ok += ratelimit_take(rl, "k", 1000.0 + i * step, &ra, &win); /* 60 within 0.93 s */
    CHECK(n_ok == 60);
    CHECK(ra == -1 && win == -1); /* untouched when allowed */

    CHECK(ratelimit_take(rl, "k", 1000.0 + 60 * step, &ra, &win) == 0);
    CHECKF(near(ra, 60.0 - 60 * step), "retry_after %f", ra);
    CHECK(win == 60);
    CHECK(ratelimit_take(rl, "k", 1030.0, &ra, &win) == 0); /* refusals are not counted */
    CHECKF(near(ra, 30.0), "retry_after %f", ra);
    CHECK(ratelimit_take(rl, "k", 1059.999, NULL, NULL) == 0);

    /* At 1060 the request at 1000 is out of (1000, 1060]: one place frees. */
    CHECK(ratelimit_take(rl, "k", 1060.0, &ra, &win) == 1);
    CHECK(ratelimit_take(rl, "k", 1060.0, &ra, &win) == 0);
    CHECKF(near(ra, step), "retry_after %f", ra); /* the one at 1000 + step is next */
    CHECK(ratelimit_take(rl, "k", 1060.0 + step, NULL, NULL) == 1);

    /* Coming back after retry_after works. */
    CHECK(ratelimit_take(rl, "k", 1060.0 + step, &ra, NULL) == 0);
    CHECKF(near(ra, step), "retry_after %f", ra);
    CHECK(ratelimit_take(rl, "k", 1060.0 + step + ra, NULL, NULL) == 1);

    /* Long after, a full burst again. */
    n_ok = 0;
    for (int i = 0; i < 70; i++)
        n_ok += ratelimit_take(rl, "k", 5000.0, NULL, NULL);
    CHECK(n_ok == 60);
    ratelimit_free(rl);
}

static void test_retry_positive(void) {
    /* All requests at the same instant: the refusal still says a time > 0. */
    ratelimit_t *rl = ratelimit_new(1, 0);
    double ra = 0;
    int win = 0;
    CHECK(ratelimit_take(rl, "k", 100.0, NULL, NULL) == 1);
    CHECK(ratelimit_take(rl, "k", 160.0 - 1e-12, &ra, &win) == 0);
    CHECKF(ra > 0, "retry_after %g", ra);
    CHECK(win == 60);
    CHECK(ratelimit_take(rl, "k", 160.0, &ra, &win) == 1);
    ratelimit_free(rl);
}

static void test_per_day(void) {
    ratelimit_t *rl = ratelimit_new(0, 1000);
    double ra = 0;
    int win = 0, n_ok = 0;
    for (int i = 0; i < 1000; i++)
        n_ok += ratelimit_take(rl, "day", 10000.0 + i, &ra, &win); /* 1000 within 17 minutes */
    CHECK(n_ok == 1000);
    CHECK(ratelimit_take(rl, "day", 11000.0, &ra, &win) == 0);
    CHECK(win == 86400);
    CHECKF(near(ra, 10000.0 + 86400.0 - 11000.0), "retry_after %f", ra);
    CHECK(ratelimit_take(rl, "day", 96399.0, NULL, NULL) == 0);
    CHECK(ratelimit_take(rl, "day", 96400.0, NULL, NULL) == 1);
    CHECK(ratelimit_take(rl, "day", 96400.0, &ra, NULL) == 0);
    CHECKF(near(ra, 1.0), "retry_after %f", ra);
    ratelimit_free(rl);
}

static void test_both(void) {
    ratelimit_t *rl = ratelimit_new(10, 25);
    double ra = 0;
    int win = 0, n_ok = 0;
    double t = 0;

    /* Minute 1: 10 of 15 allowed, the minute limit speaks. */
    for (int i = 0; i < 15; i++)
        n_ok += ratelimit_take(rl, "k", t + i, &ra, &win);
    CHECK(n_ok == 10);
    CHECK(win == 60);
    CHECKF(near(ra, 0 + 60 - 14.0), "retry_after %f", ra);

    /* Minutes 2 and 3: 10 and 5 more, then the day is used up. */
    n_ok = 0;
    for (int i = 0; i < 10; i++)
        n_ok += ratelimit_take(rl, "k", 100.0 + i, NULL, NULL);
    for (int i = 0; i < 10; i++)
        n_ok += ratelimit_take(rl, "k", 200.0 + i, &ra, &win);
    CHECK(n_ok == 15);
    CHECK(win == 86400);
    CHECKF(near(ra, 0 + 86400 - 209.0), "retry_after %f", ra);

    /* Both limits refuse: the later time (the day's) is the answer. */
    ratelimit_t *both = ratelimit_new(2, 2);
    CHECK(ratelimit_take(both, "k", 50.0, NULL, NULL) == 1);
    CHECK(ratelimit_take(both, "k", 51.0, NULL, NULL) == 1);
    CHECK(ratelimit_take(both, "k", 52.0, &ra, &win) == 0);
    CHECK(win == 86400);
    CHECKF(near(ra, 50.0 + 86400 - 52.0), "retry_after %f", ra);
    ratelimit_free(both);

    /* Only the minute refuses: its time, though the day ring is also nearly full. */
    ratelimit_t *m = ratelimit_new(2, 3);
    CHECK(ratelimit_take(m, "k", 50.0, NULL, NULL) == 1);
    CHECK(ratelimit_take(m, "k", 51.0, NULL, NULL) == 1);
    CHECK(ratelimit_take(m, "k", 52.0, &ra, &win) == 0);
    CHECK(win == 60 && near(ra, 58.0));
    CHECK(ratelimit_take(m, "k", 110.0, NULL, NULL) == 1);
    CHECK(ratelimit_take(m, "k", 200.0, &ra, &win) == 0);
    CHECK(win == 86400 && near(ra, 50.0 + 86400 - 200.0));
    ratelimit_free(m);
    ratelimit_free(rl);
}

static void test_keys_independent(void) {
    ratelimit_t *rl = ratelimit_new(3, 0);
    int n_a = 0, n_b = 0, n_c = 0;
    for (int i = 0; i < 5; i++) {
        n_a += ratelimit_take(rl, "alpha", 10.0, NULL, NULL);
        n_b += ratelimit_take(rl, "beta", 10.0, NULL, NULL);
    }
    char key[64];
    for (int i = 0; i < 5; i++)
        n_c += ratelimit_take(rl, "", 10.0, NULL, NULL);
    CHECK(n_a == 3 && n_b == 3 && n_c == 3);
    /* The key is copied: changing the caller's buffer changes nothing. */
    snprintf(key, sizeof key, "gamma");
    CHECK(ratelimit_take(rl, key, 10.0, NULL, NULL) == 1);
    snprintf(key, sizeof key, "alpha");
    CHECK(ratelimit_take(rl, key, 10.0, NULL, NULL) == 0);
    CHECK(ratelimit_take(rl, "alphA", 10.0, NULL, NULL) == 1);
    ratelimit_free(rl);
}

static void test_unlimited(void) {
    ratelimit_t *rl = ratelimit_new(0, 0);
    int n_ok = 0;
    for (int i = 0; i < 100000; i++)
        n_ok += ratelimit_take(rl, "k", 1.0, NULL, NULL);
    CHECK(n_ok == 100000);
    ratelimit_free(rl);
    ratelimit_free(NULL);
}

typedef struct {
    ratelimit_t *rl;
    pthread_barrier_t *go;
    int n_ok;
} racer_t;

static void *racer(void *arg) {
    racer_t *r = arg;
    pthread_barrier_wait(r->go);
    for (int i = 0; i < N_PER_THREAD; i++) {
        double ra = 0;
        int win = 0;
        if (ratelimit_take(r->rl, "shared", 2000.0, &ra, &win))
            r->n_ok++;
        else if (!(ra > 0 && win == 60))
            r->n_ok = -100000; /* a refusal without its reason */
        char own[32];
        snprintf(own, sizeof own, "own-%p-%d", (void *)r, i % 7);
        ratelimit_take(r->rl, own, 2000.0, NULL, NULL);
    }
    return NULL;
}

static void test_threads(void) {
    ratelimit_t *rl = ratelimit_new(60, 0);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, N_THREADS);
    racer_t r[N_THREADS];
    pthread_t th[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        r[i] = (racer_t){rl, &go, 0};
        pthread_create(&th[i], NULL, racer, &r[i]);
    }
    int n_ok = 0;
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(th[i], NULL);
        n_ok += r[i].n_ok;
    }
    pthread_barrier_destroy(&go);
    CHECKF(n_ok == 60, "%d allowed", n_ok);
    ratelimit_free(rl);
}

static void test_purge(void) {
    ratelimit_t *rl = ratelimit_new(2, 5);
    char key[64];
    int n_bad = 0;
    /* 200,000 distinct keys, each active for one instant, a day and a bit apart in groups. */
    for (int i = 0; i < 200000; i++) {
        double t = 1000.0 + (i / 1000) * 90000.0;
        snprintf(key, sizeof key, "key-%d", i);
        n_bad += ratelimit_take(rl, key, t, NULL, NULL) != 1;
        n_bad += ratelimit_take(rl, key, t, NULL, NULL) != 1;
        n_bad += ratelimit_take(rl, key, t, NULL, NULL) != 0;
    }
    CHECK(n_bad == 0);
    /* A key that stays busy across purges keeps its history. */
    double t = 1000.0 + 200 * 90000.0;
    CHECK(ratelimit_take(rl, "busy", t, NULL, NULL) == 1);
    CHECK(ratelimit_take(rl, "busy", t + 100, NULL, NULL) == 1);
    CHECK(ratelimit_take(rl, "busy", t + 200, NULL, NULL) == 1);
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "late-%d", i);
        ratelimit_take(rl, key, t + 300, NULL, NULL);
    }
    CHECK(ratelimit_take(rl, "busy", t + 400, NULL, NULL) == 1);
    CHECK(ratelimit_take(rl, "busy", t + 500, NULL, NULL) == 1);
    double ra = 0;
    int win = 0;
    CHECK(ratelimit_take(rl, "busy", t + 600, &ra, &win) == 0); /* 5 in a day */
    CHECK(win == 86400 && near(ra, 86400 - 600.0));
    /* Recently seen keys are still limited after the purges. */
    snprintf(key, sizeof key, "late-%d", 10);
    CHECK(ratelimit_take(rl, key, t + 301, NULL, NULL) == 1);
    CHECK(ratelimit_take(rl, key, t + 302, NULL, NULL) == 0);
    /* A key from long ago that was dropped starts afresh. */
    CHECK(ratelimit_take(rl, "key-5", t + 600, NULL, NULL) == 1);
    CHECK(ratelimit_take(rl, "key-5", t + 600, NULL, NULL) == 1);
    CHECK(ratelimit_take(rl, "key-5", t + 600, NULL, NULL) == 0);
    ratelimit_free(rl);
}

int main(void) {
    test_per_minute();
    test_retry_positive();
    test_per_day();
    test_both();
    test_keys_independent();
    test_unlimited();
    test_threads();
    test_purge();
    return test_summary();
}
