/*
 * pg_rate.c - request limits shared by every process of one PostgreSQL
 * database (store_rate_take, see store.h).
 *
 * DESIGN: the same rule as the in-memory limiter (src/auth/ratelimit.c),
 * kept exactly: a request is allowed when, for each limit of n requests per
 * window, fewer than n allowed requests of the subject fall in
 * (now - window, now]; then its time is recorded. rate_events holds one
 * row per allowed request, indexed by (subject, t), so the test is one
 * index probe per limit: the n-th newest row inside the window exists or
 * not, and when it does, the refusal's retry time is when it leaves the
 * window. A transaction-scoped advisory lock on the subject's hash
 * serialises one subject's requests across processes (two servers cannot
 * both take the last slot); other subjects are not held up.
 *
 * Rows older than the largest window are dropped with the subject's next
 * request, and every PURGE_EVERY calls of a handle for every subject (a
 * subject may never come back). The table is UNLOGGED: no WAL, so a
 * request costs no disk flush; a crash of the database server empties it,
 * which forgets limits, never jobs or keys.
 */
#include <stdlib.h>

#include "store/pg_int.h"

#define PURGE_EVERY 1000 /* calls of one handle between purges of every subject */

enum { R_LOCK, R_NTH_NEWEST, R_INSERT, R_PURGE_SUBJECT, R_PURGE_ALL, N_RSTMT };

static const char *const sql[N_RSTMT] = {
    [R_LOCK] = "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))",
    /* $1 subject, $2 the window's start (exclusive), $3 = n - 1 */
    [R_NTH_NEWEST] = "SELECT t FROM rate_events WHERE subject = $1::text AND t > $2::float8 ORDER BY t DESC"
                     " OFFSET $3::int LIMIT 1",
    [R_INSERT] = "INSERT INTO rate_events (subject, t) VALUES ($1::text, $2::float8)",
    [R_PURGE_SUBJECT] = "DELETE FROM rate_events WHERE subject = $1::text AND t <= $2::float8",
    [R_PURGE_ALL] = "DELETE FROM rate_events WHERE t <= $1::float8",
};

const pg_sql_t pg_rate_sql = {"r", sql, N_RSTMT};

int pg_rate_take(store_t *st, const char *subject, const store_rate_limit_t *limits, int n_limits, double now,
                 int *allowed, double *retry_after, int *window_s, up_error_t *err) {
    pg_store_t *p = pg_of(st);
    static _Atomic unsigned calls; /* all handles of the process: a purge now and then is all it needs */
    int max_window = 0, rc;
    for (int i = 0; i < n_limits; i++)
        if (limits[i].n > 0 && limits[i].window_s > max_window)
            max_window = limits[i].window_s;
    if ((rc = pg_enter(p, err)))
        return rc;
    if ((rc = pg_tx_begin(p, err))) {
        pg_leave(p);
        return rc;
    }
    pg_args_t a = {0};
    pg_arg_text(&a, subject);
    rc = pg_run(p, &pg_rate_sql, R_LOCK, &a, NULL, NULL, 0, NULL, "cannot lock a rate limit", err);
    pg_args_fini(&a);
    double longest = 0;
    int hit = 0;
    for (int i = 0; i < n_limits && !rc; i++) {
        if (limits[i].n <= 0)
            continue;
        pg_args_t q = {0};
        pg_arg_text(&q, subject);
        pg_arg_double(&q, now - limits[i].window_s);
        pg_arg_int(&q, limits[i].n - 1);
        PGresult *r = NULL;
        rc = pg_run(p, &pg_rate_sql, R_NTH_NEWEST, &q, &r, NULL, 0, NULL, "cannot read a rate limit", err);
        pg_args_fini(&q);
        if (!rc && PQntuples(r) == 1) { /* n requests inside the window: full until the n-th newest leaves */
            double wait = pg_dbl(r, 0, 0) + limits[i].window_s - now;
            if (!hit || wait > longest) { /* every full limit must free up: the latest decides */
                longest = wait;
                hit = limits[i].window_s;
            }
        }
        PQclear(r);
    }
    *allowed = !hit;
    if (hit) {
        *retry_after = longest > 0.001 ? longest : 0.001;
        *window_s = hit;
    }
    if (!rc && !hit && max_window > 0) {
        pg_args_t w = {0};
        pg_arg_text(&w, subject);
        pg_arg_double(&w, now);
        rc = pg_run(p, &pg_rate_sql, R_INSERT, &w, NULL, NULL, 0, NULL, "cannot record a request", err);
        pg_args_fini(&w);
        pg_args_t d = {0};
        pg_arg_text(&d, subject);
        pg_arg_double(&d, now - max_window);
        if (!rc)
            rc = pg_run(p, &pg_rate_sql, R_PURGE_SUBJECT, &d, NULL, NULL, 0, NULL,
                        "cannot purge a rate limit", err);
        pg_args_fini(&d);
    }
    if (!rc && max_window > 0 && ++calls % PURGE_EVERY == 0) {
        pg_args_t d = {0};
        pg_arg_double(&d, now - STORE_RATE_MAX_WINDOW);
        rc = pg_run(p, &pg_rate_sql, R_PURGE_ALL, &d, NULL, NULL, 0, NULL, "cannot purge rate limits", err);
        pg_args_fini(&d);
    }
    rc = pg_tx_end(p, rc, err);
    pg_leave(p);
    return rc;
}
