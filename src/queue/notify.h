/*
 * notify.h - wake-ups and job events across processes: a bridge between a
 * store's notices (store_listen: PostgreSQL LISTEN/NOTIFY) and this
 * process's queue and event bus.
 *
 *   another process submits  -> NOTIFY at its commit -> queue_notify here:
 *                               an idle worker claims at once
 *   events_publish here      -> relayed to the other processes ->
 *                               events_deliver there: SSE streams on any
 *                               API server see progress, status, cancel
 *
 * SQLite has no notices: notify_start answers UP_ERR_UNSUPPORTED and the
 * processes on one file keep finding each other's jobs by the queue's
 * poll, which stays as the fallback everywhere (a lost connection, a
 * notice missed while it was lost).
 */
#ifndef UPRES_QUEUE_NOTIFY_H
#define UPRES_QUEUE_NOTIFY_H

#include "core/err.h"
#include "queue/events.h"
#include "queue/queue.h"
#include "store/store.h"

typedef struct notify notify_t;

/*
 * Start the bridge: a thread of its own waiting on a listener of st; new
 * jobs wake q (NULL: no workers here), events from other processes are
 * delivered to ev and ev's own are relayed (ev NULL: none). All borrowed
 * until notify_stop. *out is new. UP_ERR_UNSUPPORTED for a store without
 * notices (SQLite); UP_ERR_IO when the database cannot be reached.
 */
int notify_start(store_t *st, events_t *ev, queue_t *q, notify_t **out, up_error_t *err);

/* Stop the bridge (accepts NULL): the relay is removed, then the thread ends. */
void notify_stop(notify_t *n);

#endif
