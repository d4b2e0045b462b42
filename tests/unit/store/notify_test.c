/*
 * notify_test.c - notices across processes (store.h, src/queue/notify.h):
 * on SQLite store_listen is refused (the poll stays); on PostgreSQL a job
 * submitted through one handle wakes a listener on another at once (its
 * wait would otherwise run to its 10 s timeout) and not one on another
 * schema (another install in the database), an id sent by one
 * listener reaches another and not itself, a listener whose connection
 * was cut comes back and says so (job_new), and two event buses bridged
 * by notify_start over two handles (two "processes") see each other's
 * events.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "queue/events.h"
#include "queue/notify.h"
#include "store/store.h"
#include "test.h"
#include "unit/store/backends.h"

typedef struct heard {
    int n_new;
    int n_events;
    char last[STORE_NOTICE_ID_MAX];
} heard_t;

static void on_new(void *ctx) { ((heard_t *)ctx)->n_new++; }

static void on_event(void *ctx, const char *id) {
    heard_t *h = ctx;
    h->n_events++;
    snprintf(h->last, sizeof h->last, "%s", id);
}

static const store_listen_fns_t fns = {on_new, on_event};

/* Wait on l until cond(h) or timeout_s; returns the seconds it took (timeout_s + 1 when never). */
static double wait_for(store_listener_t *l, heard_t *h, int (*cond)(const heard_t *), double timeout_s) {
    double t0 = mono_s();
    while (!cond(h)) {
        double left = timeout_s - (mono_s() - t0);
        if (left <= 0)
            return timeout_s + 1;
        store_listener_wait(l, left, &fns, h, NULL);
    }
    return mono_s() - t0;
}

static int heard_new(const heard_t *h) { return h->n_new > 0; }
static int heard_event(const heard_t *h) { return h->n_events > 0; }

static void make_job(job_t *j, const char *id) {
    memset(j, 0, sizeof *j);
    snprintf(j->id, sizeof j->id, "%s", id);
    snprintf(j->model, sizeof j->model, "realesr-animevideov3");
    j->scale = 2;
    snprintf(j->input_key, sizeof j->input_key, "uploads/%s.png", id);
    snprintf(j->input_format, sizeof j->input_format, "png");
    j->input_width = j->input_height = 8;
}

static void test_listener(void) {
    store_t *a = tb_open("notify"), *b = tb_open("notify"); /* two handles: as two processes */
    if (!a || !b)
        goto out;
    up_error_t err;
    store_listener_t *la = NULL, *lb = NULL;
    int rc = store_listen(b, &lb, &err);
    if (!tb_pg) {
        CHECKF(rc == UP_ERR_UNSUPPORTED && !lb, "sqlite: %d", rc);
        goto out;
    }
    CHECKF(rc == 0 && lb, "%s", err.msg);
    CHECKF(store_listen(a, &la, &err) == 0, "%s", err.msg);
    if (!la || !lb)
        goto free;

    /* a job submitted on a: b's listener hears of it at the commit, long before its 10 s wait ends */
    heard_t hb = {0};
    store_listener_wait(lb, 0.2, &fns, &hb, NULL); /* nothing yet */
    CHECK(hb.n_new == 0 && hb.n_events == 0);
    job_t j;
    make_job(&j, "n-1");
    CHECKF(store_job_insert(a, &j, &err) == 0, "%s", err.msg);
    double t = wait_for(lb, &hb, heard_new, 10);
    CHECKF(t < 5, "the new job was heard after %.3f s", t);
    printf("postgresql: a submission woke another handle's listener in %.1f ms\n", t * 1000);

    /* a listener on another schema of the database (another install) hears nothing of it */
    store_t *other = tb_open("notify_other");
    store_listener_t *lo = NULL;
    CHECKF(other && store_listen(other, &lo, &err) == 0, "%s", err.msg);
    heard_t ho = {0};
    make_job(&j, "n-other");
    CHECK(store_job_insert(a, &j, &err) == 0);
    CHECK(wait_for(lb, &hb, heard_new, 10) < 5);
    if (lo)
        store_listener_wait(lo, 0.5, &fns, &ho, NULL);
    CHECKF(ho.n_new == 0, "another schema's listener heard %d new jobs", ho.n_new);
    store_listener_free(lo);
    store_close(other);

    /* a job requeued on a (its worker stopped by SIGTERM) is claimable at once: b hears of it */
    job_t got;
    CHECK(store_job_claim(a, "notify-test-worker", 60, NULL, &got, &err) == 0);
    memset(&hb, 0, sizeof hb);
    store_listener_wait(lb, 0.2, &fns, &hb, NULL);
    memset(&hb, 0, sizeof hb);
    store_fence_t f = {got.worker, got.attempts};
    CHECK(store_job_requeue(a, got.id, &f, &err) == 0);
    t = wait_for(lb, &hb, heard_new, 10);
    CHECKF(t < 5, "the requeued job was heard after %.3f s", t);

    /* an id sent by a reaches b, and a does not hear its own */
    memset(&hb, 0, sizeof hb);
    heard_t ha = {0};
    store_listener_send(la, "job-abc");
    store_listener_send(la, "job-abc"); /* merged */
    store_listener_send(la, "bad id with spaces");
    store_listener_wait(la, 0.3, &fns, &ha, NULL); /* a's waiter sends it */
    t = wait_for(lb, &hb, heard_event, 10);
    CHECKF(t < 5 && strcmp(hb.last, "job-abc") == 0, "%.3f s, last '%s'", t, hb.last);
    store_listener_wait(lb, 0.3, &fns, &hb, NULL);
    CHECKF(hb.n_events == 1, "%d events (merged: 1; the bad id dropped)", hb.n_events);
    store_listener_wait(la, 0.3, &fns, &ha, NULL);
    CHECKF(ha.n_events == 0, "a heard %d of its own", ha.n_events);

    /* woken: a wait returns at once */
    store_listener_wake(lb);
    double t0 = mono_s();
    store_listener_wait(lb, 10, &fns, &hb, NULL);
    CHECKF(mono_s() - t0 < 5, "woken after %.3f s", mono_s() - t0);

    /* the listener's connection cut: it comes back and says job_new (notices meanwhile may be lost) */
    CHECK(tb_exec("notify", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE application_name = 'upres-listener' AND pid <> pg_backend_pid()") == 0);
    memset(&hb, 0, sizeof hb);
    t = wait_for(lb, &hb, heard_new, 10);
    CHECKF(t < 5, "back after %.3f s", t);
    memset(&hb, 0, sizeof hb);
    make_job(&j, "n-2");
    CHECK(store_job_insert(a, &j, &err) == 0);
    t = wait_for(lb, &hb, heard_new, 10);
    CHECKF(t < 5, "after the cut, a new job heard in %.3f s", t);
free:
    store_listener_free(la);
    store_listener_free(lb);
out:
    store_close(a);
    store_close(b);
}

typedef struct seen {
    atomic_int n;
} seen_t;

static void on_bus(void *ctx, const char *id) {
    (void)id;
    atomic_fetch_add(&((seen_t *)ctx)->n, 1);
}

/* Two buses bridged over two handles: an event published on one reaches the other's subscriber. */
static void test_bridge(void) {
    if (!tb_pg)
        return;
    store_t *a = tb_open("bridge"), *b = tb_open("bridge");
    events_t *ea = events_new(), *eb = events_new();
    notify_t *na = NULL, *nb = NULL;
    up_error_t err;
    if (!a || !b)
        goto out;
    CHECKF(notify_start(a, ea, NULL, &na, &err) == 0, "%s", err.msg);
    CHECKF(notify_start(b, eb, NULL, &nb, &err) == 0, "%s", err.msg);
    seen_t sa = {0}, sb = {0};
    int ha = events_subscribe(ea, "job-x", on_bus, &sa), hb = events_subscribe(eb, "job-x", on_bus, &sb);
    usleep(100 * 1000); /* both listening */
    events_publish(ea, "job-x");
    double t0 = mono_s();
    while (atomic_load(&sb.n) == 0 && mono_s() - t0 < 10)
        usleep(5 * 1000);
    double t = mono_s() - t0;
    CHECKF(atomic_load(&sb.n) == 1, "the other bus's subscriber called %d times", atomic_load(&sb.n));
    CHECKF(t < 5, "after %.3f s", t);
    printf("postgresql: an event published on one bus reached another process's in %.1f ms\n", t * 1000);
    usleep(200 * 1000); /* no echo back to a */
    CHECKF(atomic_load(&sa.n) == 1, "the publishing bus's subscriber called %d times", atomic_load(&sa.n));
    events_unsubscribe(ea, ha);
    events_unsubscribe(eb, hb);
out:
    notify_stop(na);
    notify_stop(nb);
    events_free(ea);
    events_free(eb);
    store_close(a);
    store_close(b);
}

static void run_all(void) {
    test_listener();
    test_bridge();
}

int main(void) {
    char dir[256];
    snprintf(dir, sizeof dir, "/tmp/upres-notify-test-%d", (int)getpid());
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {
    }
    tb_run(dir, run_all);
    if (system(cmd)) {
    }
    return test_summary();
}
