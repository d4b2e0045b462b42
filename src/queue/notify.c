/*
 * notify.c - the bridge of notify.h: one thread waits on the store's
 * listener and turns what it hears into queue_notify (new jobs) and
 * events_deliver (another process's events); the bus's relay hands this
 * process's events to the listener to send. The queue itself is not
 * changed: its workers wait as before, woken by queue_notify sooner than
 * by their poll.
 */
#include "queue/notify.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "core/log.h"
#include "core/xmalloc.h"

#define WAIT_S 1.0 /* the longest wait: how soon a stop is seen if a wake were lost */

struct notify {
    store_listener_t *l;
    events_t *ev;
    queue_t *q;
    pthread_t thread;
    atomic_int stop;
};

static void on_job_new(void *ctx) {
    notify_t *n = ctx;
    if (n->q)
        queue_notify(n->q);
}

static void on_job_event(void *ctx, const char *id) { events_deliver(((notify_t *)ctx)->ev, id); }

static void relay(void *ctx, const char *id) { store_listener_send(((notify_t *)ctx)->l, id); }

static void *run(void *arg) {
    notify_t *n = arg;
    static const store_listen_fns_t fns = {on_job_new, on_job_event};
    while (!atomic_load(&n->stop))
        store_listener_wait(n->l, WAIT_S, &fns, n, NULL); /* a lost connection: logged there, retried */
    return NULL;
}

int notify_start(store_t *st, events_t *ev, queue_t *q, notify_t **out, up_error_t *err) {
    *out = NULL;
    store_listener_t *l = NULL;
    int rc = store_listen(st, &l, err);
    if (rc)
        return rc;
    notify_t *n = xcalloc(1, sizeof *n);
    n->l = l;
    n->ev = ev;
    n->q = q;
    atomic_init(&n->stop, 0);
    if (pthread_create(&n->thread, NULL, run, n) != 0) {
        store_listener_free(l);
        free(n);
        return up_error_set(err, UP_ERR_NOMEM, 0, "notices: cannot start a thread");
    }
    if (ev)
        events_set_relay(ev, relay, n);
    *out = n;
    return UP_OK;
}

void notify_stop(notify_t *n) {
    if (!n)
        return;
    if (n->ev)
        events_set_relay(n->ev, NULL, NULL); /* no relay call is under way once it returns */
    atomic_store(&n->stop, 1);
    store_listener_wake(n->l);
    pthread_join(n->thread, NULL);
    store_listener_free(n->l);
    free(n);
}
