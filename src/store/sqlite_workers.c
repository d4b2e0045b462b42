/*
 * sqlite_workers.c - the SQLite store's workers registry (store.h "The
 * workers registry"): one row per process that runs jobs, registered at
 * its start, renewed by its heartbeat, removed at its stop; and the schema
 * version for `upres db migrate`. Each write is one statement (its own
 * transaction); a registration that finds the name live changes nothing.
 */
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/xmalloc.h"
#include "store/sqlite_int.h"

#define WORKER_COLUMNS "name, host, pid, models, slots, lease_s, started_at, heartbeat_at, jobs, state"

enum { S_REGISTER, S_PRUNE, S_HEARTBEAT, S_REMOVE, N_WSTMT };
enum { R_LIST, R_VERSION, N_RSTMT };

static const char *const wsql[N_WSTMT] = {
    /* ?7 = now: a row of that name is taken over only once it lapsed (else no change: UP_ERR_CONFLICT) */
    [S_REGISTER] = "INSERT INTO workers (" WORKER_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, '', ?8)"
                   " ON CONFLICT (name) DO UPDATE SET host = excluded.host, pid = excluded.pid,"
                   " models = excluded.models, slots = excluded.slots, lease_s = excluded.lease_s,"
                   " started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, jobs = '',"
                   " state = excluded.state WHERE workers.heartbeat_at + workers.lease_s < ?7",
    [S_PRUNE] = "DELETE FROM workers WHERE heartbeat_at + lease_s < ?1 - 86400",
    /* ?4 NULL: the state stays */
    [S_HEARTBEAT] =
        "UPDATE workers SET heartbeat_at = ?2, jobs = ?3, state = coalesce(?4, state) WHERE name = ?1"
        " AND host = ?5 AND pid = ?6",
    [S_REMOVE] = "DELETE FROM workers WHERE name = ?1 AND host = ?2 AND pid = ?3",
};

static const char *const rsql[N_RSTMT] = {
    /* ?1 = now, ?2 = 1 for every row */
    [R_LIST] =
        "SELECT " WORKER_COLUMNS " FROM workers WHERE ?2 = 1 OR heartbeat_at + lease_s >= ?1 ORDER BY name",
    [R_VERSION] = "PRAGMA user_version",
};

const sq_sql_t sq_workers_wsql = {wsql, N_WSTMT};
const sq_sql_t sq_workers_rsql = {rsql, N_RSTMT};

int sq_worker_register(store_t *st, const store_worker_t *w, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    double now = now_s();
    pthread_mutex_lock(&q->wmu);
    int rc = sq_tx_begin(q, err);
    if (rc)
        goto out;
    sqlite3_stmt *s = q->ww[S_PRUNE];
    sqlite3_bind_double(s, 1, now);
    if ((rc = sq_exec(q, s, "cannot prune the workers registry", err)))
        goto end;
    s = q->ww[S_REGISTER];
    sq_bind_text(s, 1, w->name);
    sq_bind_text(s, 2, w->host);
    sqlite3_bind_int(s, 3, w->pid);
    sq_bind_text(s, 4, w->models);
    sqlite3_bind_int(s, 5, w->slots);
    sqlite3_bind_double(s, 6, w->lease_s);
    sqlite3_bind_double(s, 7, now);
    sq_bind_text(s, 8, w->state[0] ? w->state : "running");
    if ((rc = sq_exec(q, s, "cannot register a worker", err)))
        goto end;
    if (sqlite3_changes(q->w) == 0)
        rc = up_error_set(err, UP_ERR_CONFLICT, 0, "job store: a live worker is named %s already", w->name);
end:
    rc = sq_tx_end(q, rc, err);
out:
    pthread_mutex_unlock(&q->wmu);
    return rc;
}

int sq_worker_heartbeat(store_t *st, const store_worker_t *self, const char *jobs, const char *state,
                        up_error_t *err) {
    sq_store_t *q = sq_of(st);
    const char *name = self->name;
    pthread_mutex_lock(&q->wmu);
    sqlite3_stmt *s = q->ww[S_HEARTBEAT];
    sq_bind_text(s, 1, name);
    sq_bind_text(s, 5, self->host);
    sqlite3_bind_int(s, 6, self->pid);
    sqlite3_bind_double(s, 2, now_s());
    sq_bind_text(s, 3, jobs);
    if (state)
        sq_bind_text(s, 4, state);
    else
        sqlite3_bind_null(s, 4);
    int rc = sq_exec(q, s, "cannot renew a worker's row", err);
    if (!rc && sqlite3_changes(q->w) == 0)
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "job store: no worker %s", name);
    pthread_mutex_unlock(&q->wmu);
    return rc;
}

int sq_worker_remove(store_t *st, const store_worker_t *w, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    const char *name = w->name;
    pthread_mutex_lock(&q->wmu);
    sqlite3_stmt *s = q->ww[S_REMOVE];
    sq_bind_text(s, 1, name);
    sq_bind_text(s, 2, w->host);
    sqlite3_bind_int(s, 3, w->pid);
    int rc = sq_exec(q, s, "cannot remove a worker's row", err);
    if (!rc && sqlite3_changes(q->w) == 0)
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "job store: no worker %s", name);
    pthread_mutex_unlock(&q->wmu);
    return rc;
}

int sq_workers_list(store_t *st, int all, store_worker_t **out, int *n, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    pthread_mutex_lock(&q->rmu);
    sqlite3_stmt *s = q->wr[R_LIST];
    sqlite3_bind_double(s, 1, now_s());
    sqlite3_bind_int(s, 2, all ? 1 : 0);
    store_worker_t *v = NULL;
    int count = 0, cap = 0, src, rc = UP_OK;
    while ((src = sqlite3_step(s)) == SQLITE_ROW) {
        if (count == cap) {
            cap = cap ? 2 * cap : 8;
            v = xrealloc(v, sizeof *v * (size_t)cap);
        }
        store_worker_t *w = &v[count++];
        memset(w, 0, sizeof *w);
        sq_copy_text(w->name, sizeof w->name, s, 0);
        sq_copy_text(w->host, sizeof w->host, s, 1);
        w->pid = sqlite3_column_int(s, 2);
        sq_copy_text(w->models, sizeof w->models, s, 3);
        w->slots = sqlite3_column_int(s, 4);
        w->lease_s = sqlite3_column_double(s, 5);
        w->started_at = sqlite3_column_double(s, 6);
        w->heartbeat_at = sqlite3_column_double(s, 7);
        sq_copy_text(w->jobs, sizeof w->jobs, s, 8);
        sq_copy_text(w->state, sizeof w->state, s, 9);
    }
    if (src != SQLITE_DONE) {
        rc = sq_db_error(q->r, err, "cannot list the workers");
        free(v);
        v = NULL;
        count = 0;
    }
    sq_done(s);
    pthread_mutex_unlock(&q->rmu);
    *out = v;
    *n = count;
    return rc;
}

int sq_schema_version(store_t *st, int *version, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    pthread_mutex_lock(&q->rmu);
    sqlite3_stmt *s = q->wr[R_VERSION];
    int rc = UP_OK;
    if (sqlite3_step(s) == SQLITE_ROW)
        *version = sqlite3_column_int(s, 0);
    else
        rc = sq_db_error(q->r, err, "cannot read the schema version");
    sq_done(s);
    pthread_mutex_unlock(&q->rmu);
    return rc;
}
