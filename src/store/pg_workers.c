/*
 * pg_workers.c - the PostgreSQL store's workers registry (store.h "The
 * workers registry"), as sqlite_workers.c keeps it: one statement per
 * write, a registration that finds the name live changing nothing; and
 * the schema version for `upres db migrate`.
 */
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/xmalloc.h"
#include "store/pg_int.h"

#define WORKER_COLUMNS "name, host, pid, models, slots, lease_s, started_at, heartbeat_at, jobs, state"

enum { S_REGISTER, S_PRUNE, S_HEARTBEAT, S_REMOVE, S_LIST, S_VERSION, N_STMT };

static const char *const sql[N_STMT] = {
    /* $7 = now: a row of that name is taken over only once it lapsed (else no row: UP_ERR_CONFLICT) */
    [S_REGISTER] = "INSERT INTO workers (" WORKER_COLUMNS ") VALUES ($1::text, $2::text, $3::int, $4::text,"
                   " $5::int, $6::float8, $7::float8, $7::float8, '', $8::text)"
                   " ON CONFLICT (name) DO UPDATE SET host = excluded.host, pid = excluded.pid,"
                   " models = excluded.models, slots = excluded.slots, lease_s = excluded.lease_s,"
                   " started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, jobs = '',"
                   " state = excluded.state WHERE workers.heartbeat_at + workers.lease_s < $7::float8",
    [S_PRUNE] = "DELETE FROM workers WHERE heartbeat_at + lease_s < $1::float8 - 86400",
    [S_HEARTBEAT] =
        "UPDATE workers SET heartbeat_at = $2::float8, jobs = $3::text,"
        " state = coalesce($4::text, state) WHERE name = $1::text AND host = $5::text AND pid = $6::int",
    [S_REMOVE] = "DELETE FROM workers WHERE name = $1::text AND host = $2::text AND pid = $3::int",
    [S_LIST] =
        "SELECT " WORKER_COLUMNS " FROM workers WHERE $2::int = 1 OR heartbeat_at + lease_s >= $1::float8"
        " ORDER BY name",
    [S_VERSION] = "SELECT coalesce(max(version), 0) FROM schema_version",
};

const pg_sql_t pg_workers_sql = {"w", sql, N_STMT};

/* One statement on its own (autocommit), the handle locked around it. */
static int run1(store_t *st, int k, pg_args_t *a, PGresult **res, long long *changed, const char *what,
                up_error_t *err) {
    pg_store_t *p = pg_of(st);
    int rc = pg_enter(p, err);
    if (!rc) {
        rc = pg_run(p, &pg_workers_sql, k, a, res, changed, 0, NULL, what, err);
        pg_leave(p);
    }
    if (a)
        pg_args_fini(a);
    return rc;
}

int pg_worker_register(store_t *st, const store_worker_t *w, up_error_t *err) {
    double now = now_s();
    pg_args_t a = {0};
    pg_arg_double(&a, now);
    int rc = run1(st, S_PRUNE, &a, NULL, NULL, "cannot prune the workers registry", err);
    if (rc)
        return rc;
    pg_arg_text(&a, w->name);
    pg_arg_text(&a, w->host);
    pg_arg_int(&a, w->pid);
    pg_arg_text(&a, w->models);
    pg_arg_int(&a, w->slots);
    pg_arg_double(&a, w->lease_s);
    pg_arg_double(&a, now);
    pg_arg_text(&a, w->state[0] ? w->state : "running");
    long long changed = 0;
    rc = run1(st, S_REGISTER, &a, NULL, &changed, "cannot register a worker", err);
    if (!rc && changed == 0)
        rc = up_error_set(err, UP_ERR_CONFLICT, 0, "job store: a live worker is named %s already", w->name);
    return rc;
}

int pg_worker_heartbeat(store_t *st, const store_worker_t *self, const char *jobs, const char *state,
                        up_error_t *err) {
    const char *name = self->name;
    pg_args_t a = {0};
    pg_arg_text(&a, name);
    pg_arg_double(&a, now_s());
    pg_arg_text(&a, jobs);
    if (state)
        pg_arg_text(&a, state);
    else
        pg_arg_null(&a);
    pg_arg_text(&a, self->host);
    pg_arg_int(&a, self->pid);
    long long changed = 0;
    int rc = run1(st, S_HEARTBEAT, &a, NULL, &changed, "cannot renew a worker's row", err);
    if (!rc && changed == 0)
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "job store: no worker %s", name);
    return rc;
}

int pg_worker_remove(store_t *st, const store_worker_t *w, up_error_t *err) {
    const char *name = w->name;
    pg_args_t a = {0};
    pg_arg_text(&a, name);
    pg_arg_text(&a, w->host);
    pg_arg_int(&a, w->pid);
    long long changed = 0;
    int rc = run1(st, S_REMOVE, &a, NULL, &changed, "cannot remove a worker's row", err);
    if (!rc && changed == 0)
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "job store: no worker %s", name);
    return rc;
}

int pg_workers_list(store_t *st, int all, store_worker_t **out, int *n, up_error_t *err) {
    pg_args_t a = {0};
    pg_arg_double(&a, now_s());
    pg_arg_int(&a, all ? 1 : 0);
    PGresult *r = NULL;
    int rc = run1(st, S_LIST, &a, &r, NULL, "cannot list the workers", err);
    if (rc)
        return rc;
    int count = PQntuples(r);
    store_worker_t *v = count ? xcalloc((size_t)count, sizeof *v) : NULL;
    for (int i = 0; i < count; i++) {
        store_worker_t *w = &v[i];
        pg_copy(w->name, sizeof w->name, r, i, 0);
        pg_copy(w->host, sizeof w->host, r, i, 1);
        w->pid = (int)pg_ll(r, i, 2);
        pg_copy(w->models, sizeof w->models, r, i, 3);
        w->slots = (int)pg_ll(r, i, 4);
        w->lease_s = pg_dbl(r, i, 5);
        w->started_at = pg_dbl(r, i, 6);
        w->heartbeat_at = pg_dbl(r, i, 7);
        pg_copy(w->jobs, sizeof w->jobs, r, i, 8);
        pg_copy(w->state, sizeof w->state, r, i, 9);
    }
    PQclear(r);
    *out = v;
    *n = count;
    return UP_OK;
}

int pg_schema_version(store_t *st, int *version, up_error_t *err) {
    PGresult *r = NULL;
    int rc = run1(st, S_VERSION, NULL, &r, NULL, "cannot read the schema version", err);
    if (rc)
        return rc;
    *version = PQntuples(r) == 1 ? (int)pg_ll(r, 0, 0) : 0;
    PQclear(r);
    return UP_OK;
}
