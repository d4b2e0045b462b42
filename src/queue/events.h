/*
 * events.h - the job event bus: "job X changed", from the job engine to
 * whoever listens (today the Server-Sent Events streams of the HTTP API).
 *
 * An event carries only the job's id, never its state: a subscriber reads
 * the job's current state from the store when it is told. Events may be
 * merged or arrive late, and a reader always sees at least the state after
 * the last change it was told of, so nothing is lost by coalescing; the
 * same contract holds across processes, where src/queue/notify.c relays
 * the ids over PostgreSQL LISTEN/NOTIFY (events_set_relay, events_deliver).
 *
 * Thread safety: every function may be called from any thread. The bus's
 * lock is never held while a callback runs, so a callback may publish,
 * subscribe or take its own locks; publishing costs one atomic load when
 * nobody listens, and otherwise one short lock and the callbacks, which
 * must be quick and must not block (a worker thread calls them).
 */
#ifndef UPRES_QUEUE_EVENTS_H
#define UPRES_QUEUE_EVENTS_H

#define EVENTS_ID_MAX 64 /* bytes of a job id, with its NUL */

/*
 * A topic, not a job (no job id looks like it): published when a job leaves
 * the queue (claimed, or cancelled while queued), or jobs join it (fair
 * queueing may put another key's new job ahead of queued ones), so that
 * queue positions moved. Streams that show positions
 * subscribe to it as to a job.
 */
#define EVENTS_QUEUE_MOVED "queue-moved"

typedef struct events events_t;

/* Told that job_id (borrowed, valid during the call) changed; ctx as subscribed. */
typedef void (*events_fn)(void *ctx, const char *job_id);

/* A new bus (events_free). */
events_t *events_new(void);

/* Free the bus and any subscription left. Nobody may publish or subscribe any more. Accepts NULL. */
void events_free(events_t *ev);

/*
 * Call fn(ctx, job_id) at each later change of job_id, on the publishing
 * thread, until events_unsubscribe. Returns a handle (> 0), or
 * UP_ERR_INVALID when ev is NULL or job_id empty or longer than
 * EVENTS_ID_MAX - 1 bytes. ctx is borrowed until events_unsubscribe returns.
 */
int events_subscribe(events_t *ev, const char *job_id, events_fn fn, void *ctx);

/*
 * End a subscription: when this returns, its callback is not running on any
 * thread and will not be called again (a call under way is waited for, so
 * it must not be called from that subscription's own callback). An unknown
 * or already ended handle is ignored; ev may be NULL.
 */
void events_unsubscribe(events_t *ev, int handle);

/*
 * Tell job_id's subscribers that it changed, and the relay (when one is
 * set: the other processes). ev may be NULL (nobody listens).
 */
void events_publish(events_t *ev, const char *job_id);

/* Tell this process's subscribers only (an event another process published). ev may be NULL. */
void events_deliver(events_t *ev, const char *job_id);

/*
 * Hand every later events_publish's id to fn(ctx, job_id) too (NULL: no
 * more), on the publishing thread, under the bus's lock: fn must be quick,
 * must not block and must not call the bus. When this returns, the old
 * relay is not running and will not be called again.
 */
typedef void (*events_relay_fn)(void *ctx, const char *job_id);
void events_set_relay(events_t *ev, events_relay_fn fn, void *ctx);

/* Subscriptions open now (for tests and the log). */
int events_count(events_t *ev);

#endif
