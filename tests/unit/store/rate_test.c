/*
 * rate_test.c - request limits shared by processes (store_rate_take).
 *
 * On SQLite: UP_ERR_UNSUPPORTED, and store_rate_shared says 0. On
 * PostgreSQL: the in-memory limiter's rule exactly: a burst of n is
 * allowed, the next refused with retry = when the oldest of them leaves the
 * window; at that moment one more is allowed; a refusal records nothing;
 * with two limits both must have room and the one freeing up last gives
 * the retry and its window; subjects are independent; limits of 0 are off
 * (nothing recorded); rows older than the longest window are purged with
 * the subject's next request. And across handles ("processes"): 8 threads
 * on 4 handles taking one subject's last 40 slots at once get exactly 40.
 */
#include <pthread.h>
#include <stdlib.h>

#include "backends.h"

static char dir[128];

/* Requests of subject recorded in the database (PostgreSQL). */
static long long recorded(const char *subject) {
    PGconn *c = tb_pg_connect("rate");
    if (!c)
        return -1;
    const char *v[1] = {subject};
    PGresult *r =
        PQexecParams(c, "SELECT count(*) FROM rate_events WHERE subject = $1", 1, NULL, v, NULL, NULL, 0);
    long long n = PQresultStatus(r) == PGRES_TUPLES_OK ? atoll(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    PQfinish(c);
    return n;
}

static int take(store_t *st, const char *subject, int per_minute, int per_day, double now, double *retry,
                int *window) {
    const store_rate_limit_t limits[2] = {{per_minute, 60}, {per_day, 86400}};
    int allowed = -1;
    up_error_t err;
    int rc = store_rate_take(st, subject, limits, 2, now, &allowed, retry, window, &err);
    CHECKF(rc == 0, "%s", err.msg);
    return allowed;
}

typedef struct {
    store_t *st;
    pthread_barrier_t *go;
    int allowed;
} taker_t;

static void *taker(void *arg) {
    taker_t *t = arg;
    double retry;
    int window;
    pthread_barrier_wait(t->go);
    for (int i = 0; i < 20; i++)
        t->allowed += take(t->st, "race", 40, 0, 5000.0 + i * 0.001, &retry, &window);
    return NULL;
}

static void run_all(void) {
    up_error_t err;
    store_t *st = tb_open("rate");
    if (!st)
        return;
    double retry = -1;
    int window = -1, allowed = -1;
    const store_rate_limit_t one = {5, 60};
    if (!tb_pg) {
        CHECK(!store_rate_shared(st));
        CHECK(store_rate_take(st, "k", &one, 1, 1000, &allowed, &retry, &window, &err) == UP_ERR_UNSUPPORTED);
        CHECK(allowed == 1 && strstr(err.msg, "sqlite"));
        store_close(st);
        return;
    }
    CHECK(store_rate_shared(st));

    /* a burst of 5 per minute: 5 allowed, the 6th refused until the first leaves the window */
    double t0 = 1000;
    for (int i = 0; i < 5; i++)
        CHECK(take(st, "a", 5, 0, t0 + i, &retry, &window) == 1);
    CHECK(take(st, "a", 5, 0, t0 + 10, &retry, &window) == 0);
    CHECKF(retry > 49.99 && retry < 50.01 && window == 60, "retry %.3f window %d", retry, window);
    CHECK(recorded("a") == 5); /* the refusal recorded nothing */
    CHECK(take(st, "a", 5, 0, t0 + 59.999, &retry, &window) == 0);
    CHECK(take(st, "a", 5, 0, t0 + 60, &retry, &window) == 1); /* t0 left (now - 60, now] */
    CHECK(take(st, "a", 5, 0, t0 + 60.5, &retry, &window) == 0);
    CHECKF(retry > 0.49 && retry < 0.51, "retry %.3f", retry);

    /* another subject is not held up */
    CHECK(take(st, "b", 5, 0, t0 + 10, &retry, &window) == 1);

    /* two limits: 3 a minute and 4 a day; the day's fills first, then it decides */
    double d0 = 200000;
    CHECK(take(st, "c", 3, 4, d0, &retry, &window) == 1);
    CHECK(take(st, "c", 3, 4, d0 + 1, &retry, &window) == 1);
    CHECK(take(st, "c", 3, 4, d0 + 2, &retry, &window) == 1);
    CHECK(take(st, "c", 3, 4, d0 + 3, &retry, &window) == 0);
    CHECKF(window == 60 && retry > 56.99 && retry < 57.01, "minute: retry %.3f window %d", retry, window);
    CHECK(take(st, "c", 3, 4, d0 + 100, &retry, &window) == 1); /* the 4th of the day */
    CHECK(take(st, "c", 3, 4, d0 + 200, &retry, &window) == 0);
    CHECKF(window == 86400 && retry > 86199.99 && retry < 86200.01, "day: retry %.3f window %d", retry,
           window);
    /* both full at once: the one freeing up last decides */
    CHECK(take(st, "d", 2, 2, d0, &retry, &window) == 1);
    CHECK(take(st, "d", 2, 2, d0 + 1, &retry, &window) == 1);
    CHECK(take(st, "d", 2, 2, d0 + 2, &retry, &window) == 0);
    CHECKF(window == 86400 && retry > 86397.99 && retry < 86398.01, "both: retry %.3f window %d", retry,
           window);

    /* limits off: allowed, nothing recorded */
    CHECK(take(st, "off", 0, 0, t0, &retry, &window) == 1);
    CHECK(recorded("off") == 0);

    /* old rows go with the subject's next request (the longest window here: a minute) */
    CHECK(recorded("a") == 5); /* t0 itself went when t0 + 60 came */
    CHECK(take(st, "a", 5, 0, t0 + 1000, &retry, &window) == 1);
    CHECK(recorded("a") == 1);

    /* across handles: exactly the limit, whatever the interleaving */
    enum { N_THREADS = 8, N_HANDLES = 4 };
    store_t *h[N_HANDLES];
    for (int i = 0; i < N_HANDLES; i++)
        h[i] = tb_open("rate");
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, N_THREADS);
    taker_t t[N_THREADS];
    pthread_t th[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        t[i] = (taker_t){.st = h[i % N_HANDLES], .go = &go};
        pthread_create(&th[i], NULL, taker, &t[i]);
    }
    int total = 0;
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(th[i], NULL);
        total += t[i].allowed;
    }
    pthread_barrier_destroy(&go);
    CHECKF(total == 40, "8 threads on 4 handles, 160 requests, a limit of 40: %d allowed", total);
    CHECK(recorded("race") == 40);
    for (int i = 0; i < N_HANDLES; i++)
        store_close(h[i]);
    store_close(st);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/upres-rate-test-%d", (int)getpid());
    tb_run(dir, run_all);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {
    }
    return test_summary();
}
