/*
 * pg_notify.c - the PostgreSQL store's notices (store.h "notices across
 * processes"): a listener with a connection of its own that LISTENs on
 * two channels, PG_CHANNEL_JOBS (a submission's transaction notifies it
 * at commit, pg_jobs.c) and PG_CHANNEL_EVENTS (job ids, sent by the
 * listeners themselves), both tagged with the schema (pg_int.h), which
 * the listener reads at each connect.
 *
 * DESIGN
 *
 * Threads: one thread waits (store_listener_wait) and is the only one to
 * touch the connection; any thread may queue an id to send
 * (store_listener_send), under `mu`, and writes a byte to a self-pipe so
 * that the waiter's poll() returns and sends it on the listener's own
 * connection, many ids in one statement. Ids are merged while unsent (an
 * event says only "look again", so sending it once is enough).
 *
 * Own notices: PostgreSQL delivers a NOTIFY to every session that
 * LISTENs, the sender's too; a notice whose be_pid is this connection's
 * backend is one we sent, and is not reported back.
 *
 * Lost connection: the waiter makes it again (PQconnectdb, LISTEN), at
 * most once a second, sleeping on the pipe in between; once it is back
 * it reports job_new, because whatever was notified meanwhile is gone.
 * Nothing else changes: the callers poll as a fallback anyway.
 */
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/pgconn.h"
#include "core/text.h"
#include "core/xmalloc.h"
#include "store/pg_int.h"

#define RECONNECT_S 1.0 /* between two tries to connect again */

typedef struct pg_listener {
    store_listener_t base; /* first: the public functions' handle */
    char *url;
    char where[160];
    PGconn *conn; /* the waiter's alone; NULL while lost */
    char jobs_channel[PG_CHANNEL_MAX], events_channel[PG_CHANNEL_MAX]; /* this schema's (set at connect) */
    double next_try; /* mono_s() of the next connect, while lost */
    int down_logged; /* the outage was logged */
    int pipe_rd, pipe_wr;
    pthread_mutex_t mu;                   /* guards pending, n_pending and woken */
    int woken;                            /* store_listener_wake was called */
    char (*pending)[STORE_NOTICE_ID_MAX]; /* ids to send, merged */
    int n_pending, cap_pending;
} pg_listener_t;

static pg_listener_t *of(store_listener_t *l) { return (pg_listener_t *)l; }

/* The server's messages on this connection: a FATAL before a cut is reported by lost() instead. */
static void quiet(void *arg, const char *message) {
    (void)arg;
    (void)message;
}

/* Connect and LISTEN; 0, or UP_ERR_IO (logged once per outage). */
static int connect_listen(pg_listener_t *pl, up_error_t *err) {
    PGconn *c = pgconn_open(pl->url, "upres-listener", NULL, 0);
    const char *why = NULL;
    char buf[300];
    if (!c || PQstatus(c) != CONNECTION_OK) {
        why = c ? PQerrorMessage(c) : "out of memory";
    } else {
        /* the tag is letters and digits: the names need no quoting */
        PGresult *r = PQexec(c, "SELECT " PG_CHANNEL_TAG_SQL);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
            snprintf(pl->jobs_channel, sizeof pl->jobs_channel, PG_CHANNEL_JOBS "%s", PQgetvalue(r, 0, 0));
            snprintf(pl->events_channel, sizeof pl->events_channel, PG_CHANNEL_EVENTS "%s",
                     PQgetvalue(r, 0, 0));
            PQclear(r);
            char sql[200];
            snprintf(sql, sizeof sql, "LISTEN %s; LISTEN %s", pl->jobs_channel, pl->events_channel);
            r = PQexec(c, sql);
        }
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            snprintf(buf, sizeof buf, "%s", PQresultErrorMessage(r));
            why = buf;
        }
        PQclear(r);
    }
    if (why) {
        char line[300];
        text_one_line(why, line, sizeof line);
        int rc = up_error_set(err, UP_ERR_IO, 0, "job store: notices: cannot listen on the %s: %s", pl->where,
                              line);
        if (!pl->down_logged)
            log_warn("job store: notices: cannot listen on the %s: %s (polling meanwhile)", pl->where, line);
        pl->down_logged = 1;
        PQfinish(c);
        return rc;
    }
    if (pl->down_logged)
        log_info("job store: notices: listening on the %s again", pl->where);
    pl->down_logged = 0;
    PQsetNoticeProcessor(c, quiet, NULL);
    pl->conn = c;
    return UP_OK;
}

static void lost(pg_listener_t *pl) {
    if (!pl->down_logged) {
        char line[300];
        text_one_line(PQerrorMessage(pl->conn), line, sizeof line);
        log_warn("job store: notices: the connection to the %s was lost: %s (polling meanwhile)", pl->where,
                 line);
        pl->down_logged = 1;
    }
    PQfinish(pl->conn);
    pl->conn = NULL;
    pl->next_try = mono_s(); /* at once the first time, then each RECONNECT_S */
}

static void drain_pipe(pg_listener_t *pl) {
    char b[64];
    while (read(pl->pipe_rd, b, sizeof b) > 0) {
    }
}

/* Send the ids queued, in one statement on the listener's connection. */
static void send_pending(pg_listener_t *pl) {
    pthread_mutex_lock(&pl->mu);
    int n = pl->n_pending;
    char *list = NULL;
    if (n > 0) {
        list = xmalloc((size_t)n * (STORE_NOTICE_ID_MAX + 3) + 3);
        size_t k = 0;
        list[k++] = '{';
        for (int i = 0; i < n; i++) /* ids are [A-Za-z0-9_.:-] (store.c): quoted, nothing to escape */
            k += (size_t)sprintf(list + k, "%s\"%s\"", i ? "," : "", pl->pending[i]);
        list[k++] = '}';
        list[k] = '\0';
        pl->n_pending = 0;
    }
    pthread_mutex_unlock(&pl->mu);
    if (!list)
        return;
    const char *v[2] = {list, pl->events_channel};
    PGresult *r = PQexecParams(pl->conn, "SELECT count(pg_notify($2, x)) FROM unnest($1::text[]) x", 2, NULL,
                               v, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQstatus(pl->conn) == CONNECTION_OK)
        log_warn("job store: notices: cannot send %d events: %s", n, PQresultErrorMessage(r));
    PQclear(r);
    free(list);
}

/* Report what the connection has received; returns how many notices were reported. */
static int report(pg_listener_t *pl, const store_listen_fns_t *fns, void *ctx) {
    int n = 0, jobs = 0, self = PQbackendPID(pl->conn);
    PGnotify *nt;
    while ((nt = PQnotifies(pl->conn))) {
        if (!strcmp(nt->relname, pl->jobs_channel)) {
            jobs = 1;
        } else if (!strcmp(nt->relname, pl->events_channel) && nt->be_pid != self && nt->extra &&
                   *nt->extra) {
            if (fns->job_event)
                fns->job_event(ctx, nt->extra);
            n++;
        }
        PQfreemem(nt);
    }
    if (jobs && fns->job_new)
        fns->job_new(ctx);
    return n + jobs;
}

static int l_wait(store_listener_t *l, double timeout_s, const store_listen_fns_t *fns, void *ctx,
                  up_error_t *err) {
    pg_listener_t *pl = of(l);
    double deadline = mono_s() + timeout_s;
    for (;;) {
        double now = mono_s();
        if (!pl->conn && now >= pl->next_try) {
            pl->next_try = now + RECONNECT_S;
            if (connect_listen(pl, err) == UP_OK) {
                if (fns->job_new)
                    fns->job_new(ctx); /* what was notified while we were away is gone: look */
                return UP_OK;
            }
        }
        if (pl->conn) {
            send_pending(pl);
            if (PQconsumeInput(pl->conn) == 0) {
                lost(pl);
                continue;
            }
            if (report(pl, fns, ctx) > 0)
                return UP_OK;
        }
        now = mono_s();
        if (now >= deadline)
            return pl->conn ? UP_OK : up_error_set(err, UP_ERR_IO, 0, "job store: notices: no connection");
        double until = pl->conn || pl->next_try > deadline ? deadline : pl->next_try;
        struct pollfd fds[2] = {{.fd = pl->pipe_rd, .events = POLLIN}, {.fd = -1, .events = POLLIN}};
        if (pl->conn)
            fds[1].fd = PQsocket(pl->conn);
        int ms = (int)((until - now) * 1000.0) + 1;
        int got = poll(fds, 2, ms);
        if (got < 0 && errno != EINTR)
            return up_error_set(err, UP_ERR_IO, errno, "job store: notices: poll failed");
        if (got > 0 && (fds[0].revents & POLLIN)) {
            drain_pipe(pl); /* ids to send (sent at the loop's top), or a wake */
            pthread_mutex_lock(&pl->mu);
            int woken = pl->woken;
            pl->woken = 0;
            pthread_mutex_unlock(&pl->mu);
            if (woken) {
                if (pl->conn)
                    send_pending(pl);
                return UP_OK;
            }
        }
    }
}

static void l_send(store_listener_t *l, const char *id) {
    pg_listener_t *pl = of(l);
    pthread_mutex_lock(&pl->mu);
    int found = 0;
    for (int i = 0; i < pl->n_pending && !found; i++)
        found = !strcmp(pl->pending[i], id);
    if (!found) {
        if (pl->n_pending == pl->cap_pending) {
            pl->cap_pending = pl->cap_pending ? 2 * pl->cap_pending : 32;
            pl->pending = xrealloc(pl->pending, (size_t)pl->cap_pending * sizeof *pl->pending);
        }
        snprintf(pl->pending[pl->n_pending++], STORE_NOTICE_ID_MAX, "%s", id);
    }
    pthread_mutex_unlock(&pl->mu);
    if (!found && write(pl->pipe_wr, "s", 1) < 0) {
        /* the pipe is full: the waiter has a byte to read already */
    }
}

static void l_wake(store_listener_t *l) {
    pthread_mutex_lock(&of(l)->mu);
    of(l)->woken = 1;
    pthread_mutex_unlock(&of(l)->mu);
    if (write(of(l)->pipe_wr, "w", 1) < 0) {
        /* full: already woken */
    }
}

static void l_free(store_listener_t *l) {
    pg_listener_t *pl = of(l);
    PQfinish(pl->conn);
    close(pl->pipe_rd);
    close(pl->pipe_wr);
    pthread_mutex_destroy(&pl->mu);
    free(pl->pending);
    free(pl->url);
    free(pl);
}

static const store_listener_vtbl_t listener_vtbl = {l_wait, l_send, l_wake, l_free};

int pg_listen(store_t *st, store_listener_t **out, up_error_t *err) {
    pg_store_t *p = pg_of(st);
    int fds[2];
    if (pipe(fds) != 0)
        return up_error_set(err, UP_ERR_IO, errno, "job store: notices: cannot make a pipe");
    for (int i = 0; i < 2; i++)
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
    pg_listener_t *pl = xcalloc(1, sizeof *pl);
    pl->base.vtbl = &listener_vtbl;
    pl->url = xstrdup(p->url);
    snprintf(pl->where, sizeof pl->where, "%s", p->where);
    pl->pipe_rd = fds[0];
    pl->pipe_wr = fds[1];
    pthread_mutex_init(&pl->mu, NULL);
    int rc = connect_listen(pl, err);
    if (rc) {
        l_free(&pl->base);
        return rc;
    }
    *out = &pl->base;
    return UP_OK;
}
