/*
 * events.c - the job event bus (see events.h): subscriptions kept in two
 * small hash tables, one by job id (for events_publish) and one by handle
 * (for events_unsubscribe).
 *
 * DESIGN
 *
 * One mutex `mu` guards both tables and every subscription's `busy` and
 * `gone`. events_publish takes it only to find the job's subscriptions and
 * mark each busy (a count: several publishers may call one subscription at
 * once), then lets it go before calling them, so a callback may publish,
 * subscribe, or take locks of its own that other threads hold while they
 * subscribe; then it takes it again to clear busy.
 *
 * Lifetimes: events_unsubscribe unlinks the subscription at once (no later
 * publish finds it), then waits on `idle` until no call of it is under way,
 * and only then frees it; so once it returns, the subscriber may free its
 * ctx. A publisher that holds a subscription busy never waits for anything
 * but `mu`, held briefly: a worker thread is never blocked by a slow
 * subscriber's unsubscribe.
 *
 * `n_subs` is atomic so that a publish with nobody listening (the common
 * case: every progress write of every job) costs one load and no lock.
 *
 * Relay: with one set (src/queue/notify.c: other processes), each
 * events_publish first hands the id to it under `mu`, so that
 * events_set_relay(NULL) waits for a call under way and none comes after;
 * the relay only queues the id (it must not block or call the bus).
 * events_deliver is the local half alone, for events that came from
 * another process (relaying them again would echo them forever).
 */
#include "queue/events.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/xmalloc.h"

#define N_BUCKETS 256 /* per table; a subscription is a few dozen bytes, 200 streams fit easily */
#define SNAPSHOT 32   /* subscriptions of one job called without a heap allocation */

typedef struct sub {
    struct sub *next_job; /* in the job table's bucket */
    struct sub *next_h;   /* in the handle table's bucket */
    int handle;
    char job_id[EVENTS_ID_MAX];
    events_fn fn;
    void *ctx;
    int busy; /* calls under way (publishers that found it); under mu */
} sub_t;

struct events {
    pthread_mutex_t mu;
    pthread_cond_t idle; /* a call ended: an unsubscribe may be waiting for it */
    sub_t *by_job[N_BUCKETS];
    sub_t *by_handle[N_BUCKETS];
    int next_handle;
    atomic_int n_subs;
    atomic_int has_relay;  /* a relay is set: read before taking mu */
    events_relay_fn relay; /* under mu */
    void *relay_ctx;
};

static unsigned hash_id(const char *s) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % N_BUCKETS;
}

events_t *events_new(void) {
    events_t *ev = xcalloc(1, sizeof *ev);
    pthread_mutex_init(&ev->mu, NULL);
    pthread_cond_init(&ev->idle, NULL);
    atomic_init(&ev->n_subs, 0);
    atomic_init(&ev->has_relay, 0);
    return ev;
}

void events_free(events_t *ev) {
    if (!ev)
        return;
    for (int b = 0; b < N_BUCKETS; b++) {
        while (ev->by_job[b]) {
            sub_t *s = ev->by_job[b];
            ev->by_job[b] = s->next_job;
            free(s);
        }
    }
    pthread_mutex_destroy(&ev->mu);
    pthread_cond_destroy(&ev->idle);
    free(ev);
}

int events_subscribe(events_t *ev, const char *job_id, events_fn fn, void *ctx) {
    size_t n = job_id ? strlen(job_id) : 0;
    if (!ev || !fn || n == 0 || n >= EVENTS_ID_MAX)
        return UP_ERR_INVALID;
    sub_t *s = xcalloc(1, sizeof *s);
    memcpy(s->job_id, job_id, n + 1);
    s->fn = fn;
    s->ctx = ctx;
    unsigned bj = hash_id(job_id);
    pthread_mutex_lock(&ev->mu);
    /* handles grow by one and wrap before INT_MAX; one still in use (after 2^31 subscriptions) is skipped */
    for (;;) {
        ev->next_handle = ev->next_handle >= 0x7ffffffe ? 1 : ev->next_handle + 1;
        int taken = 0;
        for (sub_t *k = ev->by_handle[(unsigned)ev->next_handle % N_BUCKETS]; k && !taken; k = k->next_h)
            taken = k->handle == ev->next_handle;
        if (!taken)
            break;
    }
    s->handle = ev->next_handle;
    unsigned bh = (unsigned)s->handle % N_BUCKETS;
    s->next_job = ev->by_job[bj];
    ev->by_job[bj] = s;
    s->next_h = ev->by_handle[bh];
    ev->by_handle[bh] = s;
    atomic_fetch_add(&ev->n_subs, 1);
    pthread_mutex_unlock(&ev->mu);
    return s->handle;
}

void events_unsubscribe(events_t *ev, int handle) {
    if (!ev || handle <= 0)
        return;
    pthread_mutex_lock(&ev->mu);
    sub_t **p = &ev->by_handle[(unsigned)handle % N_BUCKETS];
    while (*p && (*p)->handle != handle)
        p = &(*p)->next_h;
    sub_t *s = *p;
    if (!s) {
        pthread_mutex_unlock(&ev->mu);
        return;
    }
    *p = s->next_h;
    for (sub_t **q = &ev->by_job[hash_id(s->job_id)]; *q; q = &(*q)->next_job) {
        if (*q == s) {
            *q = s->next_job;
            break;
        }
    }
    atomic_fetch_sub(&ev->n_subs, 1);
    while (s->busy > 0) /* a publisher is calling it now: wait for the call to end */
        pthread_cond_wait(&ev->idle, &ev->mu);
    pthread_mutex_unlock(&ev->mu);
    free(s);
}

void events_set_relay(events_t *ev, events_relay_fn fn, void *ctx) {
    if (!ev)
        return;
    pthread_mutex_lock(&ev->mu);
    ev->relay = fn;
    ev->relay_ctx = ctx;
    atomic_store(&ev->has_relay, fn != NULL);
    pthread_mutex_unlock(&ev->mu);
}

void events_publish(events_t *ev, const char *job_id) {
    if (!ev || !job_id)
        return;
    if (atomic_load(
            &ev->has_relay)) { /* under mu: once events_set_relay returns, the old one is not called */
        pthread_mutex_lock(&ev->mu);
        if (ev->relay)
            ev->relay(ev->relay_ctx, job_id);
        pthread_mutex_unlock(&ev->mu);
    }
    events_deliver(ev, job_id);
}

void events_deliver(events_t *ev, const char *job_id) {
    if (!ev || !job_id || atomic_load(&ev->n_subs) == 0)
        return;
    sub_t *local[SNAPSHOT], **found = local;
    int n = 0, cap = SNAPSHOT;
    unsigned b = hash_id(job_id);
    pthread_mutex_lock(&ev->mu);
    for (sub_t *s = ev->by_job[b]; s; s = s->next_job) {
        if (strcmp(s->job_id, job_id))
            continue;
        if (n == cap) { /* many subscribers of one job: rare, so the copy is on the heap then */
            cap *= 2;
            if (found == local) {
                found = xmalloc((size_t)cap * sizeof *found);
                memcpy(found, local, sizeof local);
            } else {
                found = xrealloc(found, (size_t)cap * sizeof *found);
            }
        }
        s->busy++;
        found[n++] = s;
    }
    pthread_mutex_unlock(&ev->mu);
    if (n == 0)
        return;
    for (int i = 0; i < n; i++)
        found[i]->fn(found[i]->ctx, job_id);
    pthread_mutex_lock(&ev->mu);
    for (int i = 0; i < n; i++)
        found[i]->busy--;
    pthread_cond_broadcast(&ev->idle);
    pthread_mutex_unlock(&ev->mu);
    if (found != local)
        free(found);
}

int events_count(events_t *ev) { return ev ? atomic_load(&ev->n_subs) : 0; }
