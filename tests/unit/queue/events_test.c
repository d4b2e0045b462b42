/*
 * events_test.c - the job event bus (src/queue/events.c).
 *
 * One thread first: a subscriber is called for its job only, once per
 * publish, and never after events_unsubscribe; handles are distinct and an
 * unknown one is ignored; bad arguments and a NULL bus are refused or
 * ignored; more subscribers of one job than the publisher's on-stack copy
 * holds are all called; a callback may publish and subscribe itself (the
 * bus holds no lock while it runs). Then many threads: publishers on a few
 * jobs while other threads subscribe and unsubscribe in a loop, with a
 * callback slow enough that unsubscribes race with calls under way: no call
 * may reach a subscription after its unsubscribe returned (its context is
 * marked dead then), and subscriptions that lived through every publish
 * count exactly the publishes of their job.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "queue/events.h"
#include "test.h"

#define N_PUBLISHERS 4
#define N_CHURNERS 4
#define N_JOBS 3
#define N_PUBLISHES 20000 /* per publisher */
#define N_CHURNS 3000     /* subscribe/unsubscribe pairs per churner */

typedef struct counter {
    atomic_int calls;
    atomic_int dead; /* set after its unsubscribe returned: any later call is a bug */
    atomic_int late; /* calls that came when dead */
    char last[EVENTS_ID_MAX];
} counter_t;

/* Safe to call from many threads at once (atomics only). */
static void count_fn(void *ctx, const char *job_id) {
    counter_t *c = ctx;
    (void)job_id;
    if (atomic_load(&c->dead))
        atomic_fetch_add(&c->late, 1);
    atomic_fetch_add(&c->calls, 1);
}

/* count_fn, and the id it was told (one thread only). */
static void record_fn(void *ctx, const char *job_id) {
    counter_t *c = ctx;
    count_fn(c, job_id);
    snprintf(c->last, sizeof c->last, "%s", job_id);
}

static void test_basics(void) {
    events_t *ev = events_new();
    counter_t a = {0}, b = {0}, c = {0};
    int ha = events_subscribe(ev, "job-a", record_fn, &a);
    int hb = events_subscribe(ev, "job-b", count_fn, &b);
    int hc = events_subscribe(ev, "job-a", count_fn, &c);
    CHECK(ha > 0 && hb > 0 && hc > 0);
    CHECK(ha != hb && hb != hc && ha != hc);
    CHECK(events_count(ev) == 3);

    events_publish(ev, "job-a");
    CHECK(atomic_load(&a.calls) == 1 && atomic_load(&c.calls) == 1);
    CHECK(atomic_load(&b.calls) == 0);
    CHECK(!strcmp(a.last, "job-a"));
    events_publish(ev, "job-b");
    events_publish(ev, "job-c"); /* nobody listens */
    CHECK(atomic_load(&b.calls) == 1 && atomic_load(&a.calls) == 1);

    events_unsubscribe(ev, ha);
    events_publish(ev, "job-a");
    CHECK(atomic_load(&a.calls) == 1); /* gone */
    CHECK(atomic_load(&c.calls) == 2); /* the other subscriber of job-a stays */
    events_unsubscribe(ev, ha);        /* twice: ignored */
    events_unsubscribe(ev, 999999);    /* unknown: ignored */
    events_unsubscribe(ev, 0);
    events_unsubscribe(ev, -3);
    CHECK(events_count(ev) == 2);

    /* refused: empty, too long, no callback, no bus */
    char longid[EVENTS_ID_MAX + 8];
    memset(longid, 'x', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    CHECK(events_subscribe(ev, "", count_fn, &a) == UP_ERR_INVALID);
    CHECK(events_subscribe(ev, NULL, count_fn, &a) == UP_ERR_INVALID);
    CHECK(events_subscribe(ev, longid, count_fn, &a) == UP_ERR_INVALID);
    CHECK(events_subscribe(ev, "job-a", NULL, &a) == UP_ERR_INVALID);
    CHECK(events_subscribe(NULL, "job-a", count_fn, &a) == UP_ERR_INVALID);
    events_publish(NULL, "job-a");
    events_publish(ev, NULL);
    events_unsubscribe(NULL, hb);
    CHECK(events_count(NULL) == 0);

    events_unsubscribe(ev, hb);
    events_unsubscribe(ev, hc);
    CHECK(events_count(ev) == 0);
    events_publish(ev, "job-a"); /* nobody left: the fast path */
    CHECK(atomic_load(&c.calls) == 2);

    /* freed with subscriptions left: no leak (the sanitizer build checks) */
    events_subscribe(ev, "job-z", count_fn, &a);
    events_free(ev);
    events_free(NULL);
}

static void test_many_of_one_job(void) {
    enum { N = 100 }; /* more than the publisher's on-stack copy */
    events_t *ev = events_new();
    static counter_t cs[N];
    int hs[N];
    for (int i = 0; i < N; i++)
        hs[i] = events_subscribe(ev, "busy-job", count_fn, &cs[i]);
    events_publish(ev, "busy-job");
    events_publish(ev, "busy-job");
    int all = 1;
    for (int i = 0; i < N; i++)
        all &= atomic_load(&cs[i].calls) == 2;
    CHECK(all);
    for (int i = 0; i < N; i++)
        events_unsubscribe(ev, hs[i]);
    CHECK(events_count(ev) == 0);
    events_free(ev);
}

/* A callback that uses the bus itself: it must not deadlock (no bus lock is held while it runs). */
typedef struct reentrant {
    events_t *ev;
    counter_t inner;
    int inner_handle;
    int n;
} reentrant_t;

static void reentrant_fn(void *ctx, const char *job_id) {
    reentrant_t *r = ctx;
    (void)job_id;
    r->n++;
    if (!r->inner_handle)
        r->inner_handle = events_subscribe(r->ev, "inner-job", count_fn, &r->inner);
    events_publish(r->ev, "inner-job");
}

static void test_reentrant(void) {
    events_t *ev = events_new();
    reentrant_t r = {.ev = ev};
    int h = events_subscribe(ev, "outer-job", reentrant_fn, &r);
    events_publish(ev, "outer-job");
    events_publish(ev, "outer-job");
    CHECK(r.n == 2);
    CHECK(r.inner_handle > 0);
    CHECK(atomic_load(&r.inner.calls) == 2);
    events_unsubscribe(ev, h);
    events_unsubscribe(ev, r.inner_handle);
    events_free(ev);
}

/* ---- many threads ---- */

static const char *jobs[N_JOBS] = {"7d1c6e1e-0000-4000-8000-000000000001",
                                   "7d1c6e1e-0000-4000-8000-000000000002",
                                   "7d1c6e1e-0000-4000-8000-000000000003"};

typedef struct shared {
    events_t *ev;
    atomic_int late;    /* calls after an unsubscribe returned, over all churners */
    atomic_int n_calls; /* calls the churners' subscriptions saw */
} shared_t;

static void slow_fn(void *ctx, const char *job_id) {
    count_fn(ctx, job_id);
    if (atomic_load(&((counter_t *)ctx)->calls) % 64 == 0)
        usleep(20); /* now and then a call is under way long enough for an unsubscribe to meet it */
}

static void *publisher_main(void *p) {
    shared_t *sh = p;
    for (int i = 0; i < N_PUBLISHES; i++)
        events_publish(sh->ev, jobs[i % N_JOBS]);
    return NULL;
}

static void *churner_main(void *p) {
    shared_t *sh = p;
    for (int i = 0; i < N_CHURNS; i++) {
        counter_t *c = calloc(1, sizeof *c);
        int h = events_subscribe(sh->ev, jobs[i % N_JOBS], slow_fn, c);
        if (h <= 0) {
            free(c);
            continue;
        }
        if (i % 8 == 0)
            sched_yield();
        events_unsubscribe(sh->ev, h);
        atomic_store(&c->dead, 1);
        /* a call that reached c after this point would be counted in late ... */
        for (int k = 0; k < 4; k++)
            sched_yield();
        atomic_fetch_add(&sh->late, atomic_load(&c->late));
        atomic_fetch_add(&sh->n_calls, atomic_load(&c->calls));
        free(c); /* ... and under the sanitizers a call after this one is a use after free */
    }
    return NULL;
}

static void test_threads(void) {
    shared_t sh = {.ev = events_new()};
    atomic_init(&sh.late, 0);
    atomic_init(&sh.n_calls, 0);
    counter_t steady[N_JOBS];
    memset(steady, 0, sizeof steady);
    int hs[N_JOBS];
    for (int j = 0; j < N_JOBS; j++)
        hs[j] = events_subscribe(sh.ev, jobs[j], count_fn, &steady[j]);

    pthread_t pubs[N_PUBLISHERS], churns[N_CHURNERS];
    for (int i = 0; i < N_CHURNERS; i++)
        pthread_create(&churns[i], NULL, churner_main, &sh);
    for (int i = 0; i < N_PUBLISHERS; i++)
        pthread_create(&pubs[i], NULL, publisher_main, &sh);
    for (int i = 0; i < N_PUBLISHERS; i++)
        pthread_join(pubs[i], NULL);
    for (int i = 0; i < N_CHURNERS; i++)
        pthread_join(churns[i], NULL);

    CHECKF(atomic_load(&sh.late) == 0, "%d calls after unsubscribe returned", atomic_load(&sh.late));
    for (int j = 0; j < N_JOBS; j++) {
        int want = 0;
        for (int i = 0; i < N_PUBLISHES; i++)
            want += i % N_JOBS == j;
        want *= N_PUBLISHERS;
        CHECKF(atomic_load(&steady[j].calls) == want, "job %d: %d calls, want %d", j,
               atomic_load(&steady[j].calls), want);
    }
    CHECK(events_count(sh.ev) == N_JOBS);
    printf("threads: %d publishes, %d subscribe/unsubscribe pairs, %d calls reached churned subscriptions\n",
           N_PUBLISHERS * N_PUBLISHES, N_CHURNERS * N_CHURNS, atomic_load(&sh.n_calls));
    for (int j = 0; j < N_JOBS; j++)
        events_unsubscribe(sh.ev, hs[j]);
    CHECK(events_count(sh.ev) == 0);
    events_free(sh.ev);
}

/* The relay (the other processes): every publish, with or without subscribers; never a delivered one. */
static void test_relay(void) {
    events_t *ev = events_new();
    counter_t relayed = {0}, sub = {0};
    events_set_relay(ev, record_fn, &relayed);
    events_publish(ev, "job-r"); /* nobody subscribed here: relayed all the same */
    CHECK(atomic_load(&relayed.calls) == 1 && strcmp(relayed.last, "job-r") == 0);
    int h = events_subscribe(ev, "job-r", record_fn, &sub);
    events_deliver(ev, "job-r"); /* from another process: here only */
    CHECK(atomic_load(&sub.calls) == 1 && atomic_load(&relayed.calls) == 1);
    events_publish(ev, "job-r");
    CHECK(atomic_load(&sub.calls) == 2 && atomic_load(&relayed.calls) == 2);
    events_set_relay(ev, NULL, NULL);
    events_publish(ev, "job-r");
    CHECK(atomic_load(&sub.calls) == 3 && atomic_load(&relayed.calls) == 2);
    events_unsubscribe(ev, h);
    events_free(ev);
}

int main(void) {
    test_relay();
    test_basics();
    test_many_of_one_job();
    test_reentrant();
    test_threads();
    return test_summary();
}
