/*
 * pg_keys.c - the PostgreSQL store's accounts (store.h "API keys"): keys
 * and guest sessions, the charge a submission takes and the refund that
 * gives it back, and usage. The same functions as sqlite_keys.c, with the
 * same refusals and messages; the charge locks the key row FOR UPDATE
 * (pg.c, DESIGN) and runs inside pg_jobs.c's submission, the refund
 * inside the transactions that end jobs.
 */
#include <assert.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/xmalloc.h"
#include "store/pg_int.h"

/* Every key read returns these columns in this order (see read_key). */
#define KEY_COLUMNS                                                                                          \
    "id, name, prefix, encode(hash, 'hex'), tier, quota, credits, created_at, last_used_at, revoked_at,"     \
    " guest, reset_at"

/* A key's usage: $1 = key id, $2 = period start; refunded charges do not count. */
#define USAGE_SQL                                                                                            \
    "SELECT coalesce(sum(credits), 0) FROM jobs WHERE owner = $1::text AND created_at >= $2::float8"         \
    " AND refunded = 0"

enum {
    S_REFUND_MARK,
    S_REFUND_CREDIT,
    S_KEY_STATE, /* quota, credits, revoked_at of one key, the row locked */
    S_USAGE,
    S_KEY_DEBIT,
    S_KEY_INSERT,
    S_KEY_REVOKE,
    S_KEY_TOUCH,
    S_KEY_UPDATE,
    S_RESET_GUESTS,
    S_KEY_BY_HASH,
    S_KEY_BY_ID,
    S_KEY_BY_PREFIX,
    S_KEY_LIST,
    S_USAGE_DAILY,
    N_STMT
};

static const char *const sql[N_STMT] = {
    /* the one place a charge is marked refunded: a second refund changes no row */
    [S_REFUND_MARK] = "UPDATE jobs SET refunded = 1 WHERE id = $1::text AND credits > 0 AND refunded = 0",
    /* a revoked key gets its credits back too; a key without a balance has nothing to get back */
    [S_REFUND_CREDIT] = "UPDATE keys SET credits = credits + (SELECT credits FROM jobs WHERE id = $1::text)"
                        " WHERE id = (SELECT owner FROM jobs WHERE id = $1::text) AND credits >= 0",
    [S_KEY_STATE] = "SELECT quota, credits, revoked_at FROM keys WHERE id = $1::text FOR UPDATE",
    [S_USAGE] = USAGE_SQL,
    [S_KEY_DEBIT] = "UPDATE keys SET credits = credits - $2::bigint WHERE id = $1::text AND credits >= 0",
    [S_KEY_INSERT] =
        "INSERT INTO keys (id, name, prefix, hash, tier, quota, credits, created_at, guest, reset_at)"
        " VALUES ($1::text, $2::text, $3::text, decode($4::text, 'hex'), $5::text, $6::bigint,"
        " $7::bigint, $8::float8, $9::int, $10::float8)",
    [S_KEY_REVOKE] = "UPDATE keys SET revoked_at = $2::float8 WHERE id = $1::text",
    [S_KEY_TOUCH] = "UPDATE keys SET last_used_at = greatest(last_used_at, $2::float8) WHERE id = $1::text",
    /* $2 NULL keeps the tier; $3 / $5 say whether quota / credits are set; $7 is added to the balance */
    [S_KEY_UPDATE] = "UPDATE keys SET tier = coalesce($2::text, tier),"
                     " quota = CASE WHEN $3::int <> 0 THEN $4::bigint ELSE quota END,"
                     " credits = CASE WHEN $5::int <> 0 THEN $6::bigint ELSE credits + $7::bigint END"
                     " WHERE id = $1::text RETURNING " KEY_COLUMNS,
    [S_RESET_GUESTS] = "UPDATE keys SET reset_at = $1::float8 WHERE guest = 1",
    [S_KEY_BY_HASH] = "SELECT " KEY_COLUMNS " FROM keys WHERE hash = decode($1::text, 'hex')",
    [S_KEY_BY_ID] = "SELECT " KEY_COLUMNS " FROM keys WHERE id = $1::text",
    /* substr, not LIKE: no wildcards, and case matters; operators' keys only */
    [S_KEY_BY_PREFIX] = "SELECT " KEY_COLUMNS " FROM keys WHERE guest = 0"
                        " AND substr(prefix, 1, length($1::text)) = $1::text LIMIT 2",
    [S_KEY_LIST] = "SELECT " KEY_COLUMNS " FROM keys WHERE guest = 0 ORDER BY created_at, seq",
    /* $1 = owner, $2 = day0, $3 = days: one row per day with jobs (d from 0) */
    [S_USAGE_DAILY] = "SELECT floor((created_at - $2::float8) / 86400)::bigint AS d, count(*),"
                      " coalesce(sum(CASE WHEN refunded = 0 THEN credits ELSE 0 END), 0) FROM jobs"
                      " WHERE owner = $1::text AND created_at >= $2::float8"
                      " AND created_at < $2::float8 + 86400::float8 * $3::int GROUP BY d",
};

const pg_sql_t pg_keys_sql = {"k", sql, N_STMT};

static int run(pg_store_t *p, int k, const pg_args_t *a, PGresult **res, long long *changed, const char *what,
               up_error_t *err) {
    return pg_run(p, &pg_keys_sql, k, a, res, changed, 0, NULL, what, err);
}

static void read_key(const PGresult *r, int row, api_key_t *k) {
    memset(k, 0, sizeof *k);
    int c = 0;
    pg_copy(k->id, sizeof k->id, r, row, c++);
    pg_copy(k->name, sizeof k->name, r, row, c++);
    pg_copy(k->prefix, sizeof k->prefix, r, row, c++);
    pg_unhex(k->hash, sizeof k->hash, r, row, c++);
    pg_copy(k->tier, sizeof k->tier, r, row, c++);
    k->quota = pg_ll(r, row, c++);
    k->credits = pg_ll(r, row, c++);
    k->created_at = pg_dbl(r, row, c++);
    k->last_used_at = pg_dbl(r, row, c++);
    k->revoked_at = pg_dbl(r, row, c++);
    k->guest = (int)pg_ll(r, row, c++);
    k->reset_at = pg_dbl(r, row, c++);
}

/* ---- charges and refunds, inside a transaction ---------------------------------------- */

/* Key id's quota, balance and revocation time, its row locked until the transaction ends. */
static int key_state(pg_store_t *p, const char *id, long long *quota, long long *credits, double *revoked_at,
                     up_error_t *err) {
    pg_args_t a = {0};
    pg_arg_text(&a, id);
    PGresult *r;
    int rc = run(p, S_KEY_STATE, &a, &r, NULL, "cannot read a key", err);
    pg_args_fini(&a);
    if (rc)
        return rc;
    if (PQntuples(r) == 1) {
        *quota = pg_ll(r, 0, 0);
        *credits = pg_ll(r, 0, 1);
        *revoked_at = pg_dbl(r, 0, 2);
    } else {
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no key %s", id);
    }
    PQclear(r);
    return rc;
}

int pg_charge(pg_store_t *p, const char *owner, long long need, double period_start, store_charge_t *c,
              up_error_t *err) {
    double revoked_at = 0;
    int rc = key_state(p, owner, &c->quota, &c->credits, &revoked_at, err);
    if (rc)
        return rc;
    /* a statement after the lock: its snapshot holds every charge committed before it was granted */
    pg_args_t a = {0};
    pg_arg_text(&a, owner);
    pg_arg_double(&a, period_start);
    PGresult *r;
    rc = run(p, S_USAGE, &a, &r, NULL, "cannot sum a key's usage", err);
    pg_args_fini(&a);
    if (rc)
        return rc;
    c->used = pg_ll(r, 0, 0);
    PQclear(r);

    if (revoked_at > 0)
        return up_error_set(err, UP_ERR_REVOKED, 0, "key %s is revoked", owner);
    if (c->quota >= 0 && c->used + need > c->quota) {
        if (c->used >= c->quota)
            return up_error_set(err, UP_ERR_QUOTA, 0, "quota of %lld credits used up (%lld used this period)",
                                c->quota, c->used);
        return up_error_set(err, UP_ERR_QUOTA, 0,
                            "quota of %lld credits too low for this job (%lld used this period, %lld needed)",
                            c->quota, c->used, need);
    }
    if (c->credits >= 0 && c->credits < need)
        return up_error_set(err, UP_ERR_CREDITS, 0, "insufficient credits: %lld left, %lld needed",
                            c->credits, need);
    if (c->credits < 0 || need == 0)
        return UP_OK;
    pg_arg_text(&a, owner);
    pg_arg_int(&a, need);
    rc = run(p, S_KEY_DEBIT, &a, NULL, NULL, "cannot charge a key", err);
    pg_args_fini(&a);
    return rc;
}

/* A free or already refunded job, or an owner that keeps no balance, changes nothing on the key. */
int pg_refund(pg_store_t *p, const char *job_id, up_error_t *err) {
    pg_args_t a = {0};
    pg_arg_text(&a, job_id);
    long long changed = 0;
    int rc = run(p, S_REFUND_MARK, &a, NULL, &changed, "cannot refund a job", err);
    if (!rc && changed > 0)
        rc = run(p, S_REFUND_CREDIT, &a, NULL, NULL, "cannot refund a job", err);
    pg_args_fini(&a);
    return rc;
}

/* ---- keys --------------------------------------------------------------------- */

int pg_key_insert(store_t *st, const api_key_t *key, up_error_t *err) {
    pg_store_t *p = pg_of(st);
    int rc = pg_enter(p, err);
    if (rc)
        return rc;
    pg_args_t a = {0};
    pg_arg_text(&a, key->id);
    pg_arg_text(&a, key->name);
    pg_arg_text(&a, key->prefix);
    pg_arg_hex(&a, key->hash, sizeof key->hash);
    pg_arg_text(&a, key->tier);
    pg_arg_int(&a, key->quota);
    pg_arg_int(&a, key->credits);
    pg_arg_double(&a, key->created_at > 0 ? key->created_at : now_s());
    pg_arg_int(&a, key->guest);
    pg_arg_double(&a, key->reset_at);
    char who[80];
    snprintf(who, sizeof who, "key %s: a key with this id or hash exists", key->id);
    rc = pg_run(p, &pg_keys_sql, S_KEY_INSERT, &a, NULL, NULL, UP_ERR_INVALID, who, "cannot insert a key",
                err);
    pg_args_fini(&a);
    pg_leave(p);
    return rc;
}

/* Read k with a (finished here) on its own: the first row into *out, *found; *more = a second row. */
static int read_key_row(pg_store_t *p, int k, pg_args_t *a, api_key_t *out, int *found, int *more,
                        up_error_t *err) {
    PGresult *r;
    int rc = run(p, k, a, &r, NULL, "cannot read a key", err);
    pg_args_fini(a);
    *found = 0;
    if (rc)
        return rc;
    *found = PQntuples(r) >= 1;
    if (*found)
        read_key(r, 0, out);
    if (more)
        *more = PQntuples(r) >= 2;
    PQclear(r);
    return UP_OK;
}

int pg_key_by_hash(store_t *st, const unsigned char hash[32], api_key_t *out, up_error_t *err) {
    pg_store_t *p = pg_of(st);
    int found = 0, rc = pg_enter(p, err);
    if (rc)
        return rc;
    pg_args_t a = {0};
    pg_arg_hex(&a, hash, 32);
    rc = read_key_row(p, S_KEY_BY_HASH, &a, out, &found, NULL, err);
    pg_leave(p);
    if (!rc && !found)
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no such key");
    return rc;
}

int pg_key_find(store_t *st, const char *ref, api_key_t *out, up_error_t *err) {
    pg_store_t *p = pg_of(st);
    api_key_t k;
    int found = 0, more = 0, rc = pg_enter(p, err);
    if (rc)
        return rc;
    pg_args_t a = {0};
    pg_arg_text(&a, ref);
    rc = read_key_row(p, S_KEY_BY_ID, &a, &k, &found, NULL, err);
    if (!rc && !found) {
        pg_arg_text(&a, ref);
        rc = read_key_row(p, S_KEY_BY_PREFIX, &a, &k, &found, &more, err);
    }
    pg_leave(p);
    if (rc)
        return rc;
    if (!found)
        return up_error_set(err, UP_ERR_NOT_FOUND, 0, "no key %s", ref);
    if (more)
        return up_error_set(err, UP_ERR_INVALID, 0, "key %s is ambiguous: more than one key starts with it",
                            ref);
    *out = k;
    return UP_OK;
}

int pg_key_list(store_t *st, api_key_t **keys, int *n, up_error_t *err) {
    pg_store_t *p = pg_of(st);
    int rc = pg_enter(p, err);
    if (rc)
        return rc;
    PGresult *r;
    rc = run(p, S_KEY_LIST, NULL, &r, NULL, "cannot list keys", err);
    pg_leave(p);
    if (rc)
        return rc;
    int len = PQntuples(r);
    api_key_t *k = len > 0 ? xcalloc((size_t)len, sizeof *k) : NULL;
    for (int i = 0; i < len; i++)
        read_key(r, i, &k[i]);
    PQclear(r);
    *keys = k;
    *n = len;
    return UP_OK;
}

int pg_key_revoke(store_t *st, const char *id, up_error_t *err) {
    pg_store_t *p = pg_of(st);
    long long quota, credits;
    double revoked_at = 0;
    int rc = pg_enter(p, err);
    if (rc)
        return rc;
    if ((rc = pg_tx_begin(p, err)))
        goto leave;
    if ((rc = key_state(p, id, &quota, &credits, &revoked_at, err)))
        goto end;
    if (revoked_at > 0) {
        rc = up_error_set(err, UP_ERR_INVALID, 0, "key %s is already revoked", id);
        goto end;
    }
    pg_args_t a = {0};
    pg_arg_text(&a, id);
    pg_arg_double(&a, now_s());
    rc = run(p, S_KEY_REVOKE, &a, NULL, NULL, "cannot revoke a key", err);
    pg_args_fini(&a);
end:
    rc = pg_tx_end(p, rc, err);
leave:
    pg_leave(p);
    return rc;
}

int pg_key_update(store_t *st, const char *id, const store_key_change_t *ch, api_key_t *out,
                  up_error_t *err) {
    pg_store_t *p = pg_of(st);
    long long quota, credits, add = ch->add_credits;
    double revoked_at = 0;
    int rc = pg_enter(p, err);
    if (rc)
        return rc;
    if ((rc = pg_tx_begin(p, err)))
        goto leave;
    if ((rc = key_state(p, id, &quota, &credits, &revoked_at, err)))
        goto end;
    if (revoked_at > 0) {
        rc = up_error_set(err, UP_ERR_INVALID, 0, "key %s is revoked: it cannot be changed", id);
        goto end;
    }
    if (add && credits < 0) {
        rc = up_error_set(err, UP_ERR_INVALID, 0,
                          "key %s has unlimited credits: there is no balance to add %lld to", id, add);
        goto end;
    }
    if (add && (add < 0 ? credits + add < 0 : credits > LLONG_MAX - add)) {
        rc = up_error_set(err, UP_ERR_INVALID, 0, "key %s: adding %lld to a balance of %lld would take it %s",
                          id, add, credits, add < 0 ? "below 0" : "out of range");
        goto end;
    }
    pg_args_t a = {0};
    pg_arg_text(&a, id);
    if (ch->tier)
        pg_arg_text(&a, ch->tier);
    else
        pg_arg_null(&a);
    pg_arg_int(&a, ch->set_quota != 0);
    pg_arg_int(&a, ch->quota);
    pg_arg_int(&a, ch->set_credits != 0);
    pg_arg_int(&a, ch->credits);
    pg_arg_int(&a, add);
    PGresult *r;
    rc = run(p, S_KEY_UPDATE, &a, &r, NULL, "cannot update a key", err);
    pg_args_fini(&a);
    if (!rc) {
        if (out && PQntuples(r) == 1)
            read_key(r, 0, out);
        PQclear(r);
    }
end:
    rc = pg_tx_end(p, rc, err);
leave:
    pg_leave(p);
    return rc;
}

/* One statement on a key: its own transaction; *changed the rows. */
static int key_write(store_t *st, int k, pg_args_t *a, long long *changed, const char *what,
                     up_error_t *err) {
    pg_store_t *p = pg_of(st);
    int rc = pg_enter(p, err);
    if (!rc) {
        rc = run(p, k, a, NULL, changed, what, err);
        pg_leave(p);
    }
    pg_args_fini(a);
    return rc;
}

int pg_key_touch(store_t *st, const char *id, double t, up_error_t *err) {
    pg_args_t a = {0};
    pg_arg_text(&a, id);
    pg_arg_double(&a, t);
    long long changed = 0;
    int rc = key_write(st, S_KEY_TOUCH, &a, &changed, "cannot record a key's use", err);
    if (!rc && changed == 0)
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no key %s", id);
    return rc;
}

int pg_keys_reset_guests(store_t *st, double now, long long *n, up_error_t *err) {
    pg_args_t a = {0};
    pg_arg_double(&a, now);
    return key_write(st, S_RESET_GUESTS, &a, n, "cannot reset the guest sessions", err);
}

/* An unknown id has used nothing: 0, not UP_ERR_NOT_FOUND. */
int pg_key_usage(store_t *st, const char *id, double period_start, long long *used, up_error_t *err) {
    pg_store_t *p = pg_of(st);
    int rc = pg_enter(p, err);
    if (rc)
        return rc;
    pg_args_t a = {0};
    pg_arg_text(&a, id);
    pg_arg_double(&a, period_start);
    PGresult *r;
    rc = run(p, S_USAGE, &a, &r, NULL, "cannot sum a key's usage", err);
    pg_args_fini(&a);
    pg_leave(p);
    if (!rc) {
        *used = pg_ll(r, 0, 0);
        PQclear(r);
    }
    return rc;
}

int pg_usage_daily(store_t *st, const char *owner, double day0, int days, long long *jobs, long long *credits,
                   up_error_t *err) {
    pg_store_t *p = pg_of(st);
    int rc = pg_enter(p, err);
    if (rc)
        return rc;
    pg_args_t a = {0};
    pg_arg_text(&a, owner);
    pg_arg_double(&a, day0);
    pg_arg_int(&a, days);
    PGresult *r;
    rc = run(p, S_USAGE_DAILY, &a, &r, NULL, "cannot sum usage by day", err);
    pg_args_fini(&a);
    pg_leave(p);
    if (rc)
        return rc;
    for (int i = 0; i < PQntuples(r); i++) {
        long long d = pg_ll(r, i, 0);
        if (d < 0 || d >= days) /* rounding at the last boundary: the WHERE already bounds created_at */
            continue;
        jobs[d] = pg_ll(r, i, 1);
        credits[d] = pg_ll(r, i, 2);
    }
    PQclear(r);
    return UP_OK;
}
