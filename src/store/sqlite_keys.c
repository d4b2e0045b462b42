/*
 * sqlite_keys.c - the SQLite store's accounts (store.h "API keys"): keys
 * and guest sessions (key rows with guest = 1), the charge a submission
 * takes and the refund that gives it back, and usage (a period's sum, and
 * by day). How charges and refunds stay exact is sqlite.c's DESIGN
 * ("Charges"); the charge and the refund run inside the transactions of
 * sqlite_jobs.c that insert and end jobs.
 */
#include <assert.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/xmalloc.h"
#include "store/sqlite_int.h"

/* Every key read returns these columns in this order (see read_key). */
#define KEY_COLUMNS                                                                                          \
    "id, name, prefix, hash, tier, quota, credits, created_at, last_used_at, revoked_at, guest, reset_at"

/*
 * A key's usage: ?1 = key id, ?2 = period start. Refunded charges do not
 * count. jobs_owner_time makes it a range scan over the period's jobs
 * rather than a read of every job the key ever made.
 */
#define USAGE_SQL                                                                                            \
    "SELECT coalesce(sum(credits), 0) FROM jobs WHERE owner = ?1 AND created_at >= ?2 AND refunded = 0"

enum {
    S_REFUND_MARK,
    S_REFUND_CREDIT,
    S_KEY_STATE, /* quota, credits, revoked_at of one key */
    S_USAGE,
    S_KEY_DEBIT,
    S_KEY_INSERT,
    S_KEY_REVOKE,
    S_KEY_TOUCH,
    S_KEY_UPDATE,
    S_W_KEY_BY_ID, /* writer-side read of a key (store_key_update's result) */
    S_RESET_GUESTS,
    N_WSTMT
};

enum { R_KEY_BY_HASH, R_KEY_BY_ID, R_KEY_BY_PREFIX, R_KEY_LIST, R_USAGE, R_USAGE_DAILY, N_RSTMT };

static const char *const wsql[N_WSTMT] = {
    /* the one place a charge is marked refunded: a second refund changes no row */
    [S_REFUND_MARK] = "UPDATE jobs SET refunded = 1 WHERE id = ?1 AND credits > 0 AND refunded = 0",
    /* a revoked key gets its credits back too; a key without a balance has nothing to get back */
    [S_REFUND_CREDIT] = "UPDATE keys SET credits = credits + (SELECT credits FROM jobs WHERE id = ?1)"
                        " WHERE id = (SELECT owner FROM jobs WHERE id = ?1) AND credits >= 0",
    [S_KEY_STATE] = "SELECT quota, credits, revoked_at FROM keys WHERE id = ?1",
    [S_USAGE] = USAGE_SQL,
    [S_KEY_DEBIT] = "UPDATE keys SET credits = credits - ?2 WHERE id = ?1 AND credits >= 0",
    [S_KEY_INSERT] = "INSERT INTO keys (id, name, prefix, hash, tier, quota, credits, created_at, guest,"
                     " reset_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    [S_KEY_REVOKE] = "UPDATE keys SET revoked_at = ?2 WHERE id = ?1",
    [S_KEY_TOUCH] = "UPDATE keys SET last_used_at = max(last_used_at, ?2) WHERE id = ?1",
    /* ?2 NULL keeps the tier; ?3 / ?5 say whether quota / credits are set; ?7 is added to the balance */
    [S_KEY_UPDATE] = "UPDATE keys SET tier = coalesce(?2, tier), quota = CASE WHEN ?3 THEN ?4 ELSE quota END,"
                     " credits = CASE WHEN ?5 THEN ?6 ELSE credits + ?7 END WHERE id = ?1",
    [S_W_KEY_BY_ID] = "SELECT " KEY_COLUMNS " FROM keys WHERE id = ?1",
    [S_RESET_GUESTS] = "UPDATE keys SET reset_at = ?1 WHERE guest = 1",
};

static const char *const rsql[N_RSTMT] = {
    [R_KEY_BY_HASH] = "SELECT " KEY_COLUMNS " FROM keys WHERE hash = ?1",
    [R_KEY_BY_ID] = "SELECT " KEY_COLUMNS " FROM keys WHERE id = ?1",
    /*
     * substr, not LIKE: LIKE folds ASCII case, and a key's characters are
     * case-sensitive. Operators' keys only: a guest's prefix never makes a
     * key's ambiguous.
     */
    [R_KEY_BY_PREFIX] =
        "SELECT " KEY_COLUMNS " FROM keys WHERE guest = 0 AND substr(prefix, 1, length(?1)) = ?1"
        " LIMIT 2",
    /* keys_guest(guest, created_at): the guest sessions are never read */
    [R_KEY_LIST] = "SELECT " KEY_COLUMNS " FROM keys WHERE guest = 0 ORDER BY created_at, rowid",
    [R_USAGE] = USAGE_SQL,
    /*
     * ?1 = owner, ?2 = day0, ?3 = days: one row per day with jobs (d from
     * 0), a range of jobs_owner_time. CAST truncates, which is floor for
     * created_at >= day0.
     */
    [R_USAGE_DAILY] = "SELECT CAST((created_at - ?2) / 86400 AS INTEGER) AS d, count(*),"
                      " coalesce(sum(CASE WHEN refunded = 0 THEN credits ELSE 0 END), 0) FROM jobs"
                      " WHERE owner = ?1 AND created_at >= ?2 AND created_at < ?2 + 86400.0 * ?3 GROUP BY d",
};

const sq_sql_t sq_keys_wsql = {wsql, N_WSTMT};
const sq_sql_t sq_keys_rsql = {rsql, N_RSTMT};

static void read_key(sqlite3_stmt *s, api_key_t *k) {
    memset(k, 0, sizeof *k);
    int c = 0;
    sq_copy_text(k->id, sizeof k->id, s, c++);
    sq_copy_text(k->name, sizeof k->name, s, c++);
    sq_copy_text(k->prefix, sizeof k->prefix, s, c++);
    const void *hash = sqlite3_column_blob(s, c);
    if (hash && sqlite3_column_bytes(s, c) == (int)sizeof k->hash)
        memcpy(k->hash, hash, sizeof k->hash);
    c++;
    sq_copy_text(k->tier, sizeof k->tier, s, c++);
    k->quota = sqlite3_column_int64(s, c++);
    k->credits = sqlite3_column_int64(s, c++);
    k->created_at = sqlite3_column_double(s, c++);
    k->last_used_at = sqlite3_column_double(s, c++);
    k->revoked_at = sqlite3_column_double(s, c++);
    k->guest = sqlite3_column_int(s, c++);
    k->reset_at = sqlite3_column_double(s, c++);
}

/* ---- charges and refunds, inside a write transaction --------------------------------- */

/* Key id's quota, balance and revocation time. UP_ERR_NOT_FOUND. */
static int key_state(sq_store_t *q, const char *id, long long *quota, long long *credits, double *revoked_at,
                     up_error_t *err) {
    sqlite3_stmt *s = q->kw[S_KEY_STATE];
    sq_bind_text(s, 1, id);
    int src = sqlite3_step(s);
    if (src == SQLITE_ROW) {
        *quota = sqlite3_column_int64(s, 0);
        *credits = sqlite3_column_int64(s, 1);
        *revoked_at = sqlite3_column_double(s, 2);
    }
    sq_done(s);
    if (src == SQLITE_DONE)
        return up_error_set(err, UP_ERR_NOT_FOUND, 0, "no key %s", id);
    if (src != SQLITE_ROW)
        return sq_db_error(q->w, err, "cannot read a key");
    return UP_OK;
}

int sq_charge(sq_store_t *q, const char *owner, long long need, double period_start, store_charge_t *c,
              up_error_t *err) {
    double revoked_at = 0;
    int rc = key_state(q, owner, &c->quota, &c->credits, &revoked_at, err);
    if (rc)
        return rc;
    sqlite3_stmt *s = q->kw[S_USAGE];
    sq_bind_text(s, 1, owner);
    sqlite3_bind_double(s, 2, period_start);
    int src = sqlite3_step(s);
    if (src == SQLITE_ROW)
        c->used = sqlite3_column_int64(s, 0);
    sq_done(s);
    if (src != SQLITE_ROW)
        return sq_db_error(q->w, err, "cannot sum a key's usage");

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
    s = q->kw[S_KEY_DEBIT];
    sq_bind_text(s, 1, owner);
    sqlite3_bind_int64(s, 2, need);
    return sq_exec(q, s, "cannot charge a key", err);
}

/* A free or already refunded job, or an owner that keeps no balance, changes nothing on the key. */
int sq_refund(sq_store_t *q, const char *job_id, up_error_t *err) {
    sq_bind_text(q->kw[S_REFUND_MARK], 1, job_id);
    int rc = sq_exec(q, q->kw[S_REFUND_MARK], "cannot refund a job", err);
    if (rc || sqlite3_changes(q->w) == 0)
        return rc;
    sq_bind_text(q->kw[S_REFUND_CREDIT], 1, job_id);
    return sq_exec(q, q->kw[S_REFUND_CREDIT], "cannot refund a job", err);
}

/* ---- keys --------------------------------------------------------------------- */

int sq_key_insert(store_t *st, const api_key_t *key, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    pthread_mutex_lock(&q->wmu);
    int rc = sq_tx_begin(q, err);
    if (rc)
        goto out;
    sqlite3_stmt *s = q->kw[S_KEY_INSERT];
    sq_bind_text(s, 1, key->id);
    sq_bind_text(s, 2, key->name);
    sq_bind_text(s, 3, key->prefix);
    sqlite3_bind_blob(s, 4, key->hash, sizeof key->hash, SQLITE_TRANSIENT);
    sq_bind_text(s, 5, key->tier);
    sqlite3_bind_int64(s, 6, key->quota);
    sqlite3_bind_int64(s, 7, key->credits);
    sqlite3_bind_double(s, 8, key->created_at > 0 ? key->created_at : now_s());
    sqlite3_bind_int(s, 9, key->guest);
    sqlite3_bind_double(s, 10, key->reset_at);
    char who[80];
    snprintf(who, sizeof who, "key %s: a key with this id or hash exists", key->id);
    rc = sq_tx_end(q, sq_step_insert(q, s, UP_ERR_INVALID, who, "cannot insert a key", err), err);
out:
    pthread_mutex_unlock(&q->wmu);
    return rc;
}

/*
 * On the reader: the first row of reader statement k (bound by the
 * caller) into *out; *found = 0 when it has none. With more != NULL,
 * *more = 1 when there is a second row.
 */
static int read_key_row(sq_store_t *q, int k, api_key_t *out, int *found, int *more, up_error_t *err) {
    sqlite3_stmt *s = q->kr[k];
    int rc = UP_OK, src = sqlite3_step(s);
    *found = src == SQLITE_ROW;
    if (*found) {
        read_key(s, out);
        if (more)
            *more = (src = sqlite3_step(s)) == SQLITE_ROW;
    }
    if (src != SQLITE_ROW && src != SQLITE_DONE)
        rc = sq_db_error(q->r, err, "cannot read a key");
    sq_done(s);
    return rc;
}

int sq_key_by_hash(store_t *st, const unsigned char hash[32], api_key_t *out, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    int found = 0;
    pthread_mutex_lock(&q->rmu);
    sqlite3_bind_blob(q->kr[R_KEY_BY_HASH], 1, hash, 32, SQLITE_TRANSIENT);
    int rc = read_key_row(q, R_KEY_BY_HASH, out, &found, NULL, err);
    pthread_mutex_unlock(&q->rmu);
    if (!rc && !found)
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no such key");
    return rc;
}

int sq_key_find(store_t *st, const char *ref, api_key_t *out, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    api_key_t k;
    int found = 0, more = 0;
    pthread_mutex_lock(&q->rmu);
    sq_bind_text(q->kr[R_KEY_BY_ID], 1, ref);
    int rc = read_key_row(q, R_KEY_BY_ID, &k, &found, NULL, err);
    if (!rc && !found) {
        sq_bind_text(q->kr[R_KEY_BY_PREFIX], 1, ref);
        rc = read_key_row(q, R_KEY_BY_PREFIX, &k, &found, &more, err);
    }
    pthread_mutex_unlock(&q->rmu);
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

/* With no keys, *keys is NULL and *n 0 (free(NULL) is fine). On error too. */
int sq_key_list(store_t *st, api_key_t **keys, int *n, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    api_key_t *a = NULL;
    int len = 0, cap = 0, src, rc = UP_OK;
    pthread_mutex_lock(&q->rmu);
    sqlite3_stmt *s = q->kr[R_KEY_LIST];
    while ((src = sqlite3_step(s)) == SQLITE_ROW) {
        if (len == cap) {
            cap = cap ? 2 * cap : 16;
            a = xrealloc(a, (size_t)cap * sizeof *a);
        }
        read_key(s, &a[len++]);
    }
    if (src != SQLITE_DONE) {
        rc = sq_db_error(q->r, err, "cannot list keys");
        free(a);
        a = NULL;
        len = 0;
    }
    sq_done(s);
    pthread_mutex_unlock(&q->rmu);
    *keys = a;
    *n = len;
    return rc;
}

int sq_key_revoke(store_t *st, const char *id, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    long long quota, credits;
    double revoked_at = 0;
    pthread_mutex_lock(&q->wmu);
    int rc = sq_tx_begin(q, err);
    if (rc)
        goto out;
    if ((rc = key_state(q, id, &quota, &credits, &revoked_at, err)))
        goto end;
    if (revoked_at > 0) {
        rc = up_error_set(err, UP_ERR_INVALID, 0, "key %s is already revoked", id);
        goto end;
    }
    sqlite3_stmt *s = q->kw[S_KEY_REVOKE];
    sq_bind_text(s, 1, id);
    sqlite3_bind_double(s, 2, now_s());
    rc = sq_exec(q, s, "cannot revoke a key", err);
end:
    rc = sq_tx_end(q, rc, err);
out:
    pthread_mutex_unlock(&q->wmu);
    return rc;
}

int sq_key_update(store_t *st, const char *id, const store_key_change_t *ch, api_key_t *out,
                  up_error_t *err) {
    sq_store_t *q = sq_of(st);
    long long quota, credits, add = ch->add_credits;
    double revoked_at = 0;
    pthread_mutex_lock(&q->wmu);
    int rc = sq_tx_begin(q, err);
    if (rc)
        goto out;
    if ((rc = key_state(q, id, &quota, &credits, &revoked_at, err)))
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
    sqlite3_stmt *s = q->kw[S_KEY_UPDATE];
    sq_bind_text(s, 1, id);
    if (ch->tier)
        sq_bind_text(s, 2, ch->tier);
    else
        sqlite3_bind_null(s, 2);
    sqlite3_bind_int(s, 3, ch->set_quota != 0);
    sqlite3_bind_int64(s, 4, ch->quota);
    sqlite3_bind_int(s, 5, ch->set_credits != 0);
    sqlite3_bind_int64(s, 6, ch->credits);
    sqlite3_bind_int64(s, 7, add);
    if ((rc = sq_exec(q, s, "cannot update a key", err)) || !out)
        goto end;
    s = q->kw[S_W_KEY_BY_ID];
    sq_bind_text(s, 1, id);
    int src = sqlite3_step(s);
    if (src == SQLITE_ROW)
        read_key(s, out);
    sq_done(s);
    if (src != SQLITE_ROW)
        rc = sq_db_error(q->w, err, "cannot read the updated key");
end:
    rc = sq_tx_end(q, rc, err);
out:
    pthread_mutex_unlock(&q->wmu);
    return rc;
}

int sq_key_touch(store_t *st, const char *id, double t, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    pthread_mutex_lock(&q->wmu);
    int rc = sq_tx_begin(q, err);
    if (rc)
        goto out;
    sqlite3_stmt *s = q->kw[S_KEY_TOUCH];
    sq_bind_text(s, 1, id);
    sqlite3_bind_double(s, 2, t);
    if (!(rc = sq_exec(q, s, "cannot record a key's use", err)) && sqlite3_changes(q->w) == 0)
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no key %s", id);
    rc = sq_tx_end(q, rc, err);
out:
    pthread_mutex_unlock(&q->wmu);
    return rc;
}

/* An unknown id has used nothing: 0, not UP_ERR_NOT_FOUND. */
int sq_key_usage(store_t *st, const char *id, double period_start, long long *used, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    pthread_mutex_lock(&q->rmu);
    sqlite3_stmt *s = q->kr[R_USAGE];
    sq_bind_text(s, 1, id);
    sqlite3_bind_double(s, 2, period_start);
    int rc = UP_OK, src = sqlite3_step(s);
    if (src == SQLITE_ROW)
        *used = sqlite3_column_int64(s, 0);
    else
        rc = sq_db_error(q->r, err, "cannot sum a key's usage");
    sq_done(s);
    pthread_mutex_unlock(&q->rmu);
    return rc;
}

int sq_keys_reset_guests(store_t *st, double now, long long *n, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    pthread_mutex_lock(&q->wmu);
    int rc = sq_tx_begin(q, err);
    if (rc)
        goto out;
    sqlite3_stmt *s = q->kw[S_RESET_GUESTS];
    sqlite3_bind_double(s, 1, now);
    if (!(rc = sq_exec(q, s, "cannot reset the guest sessions", err)))
        *n = sqlite3_changes64(q->w);
    rc = sq_tx_end(q, rc, err);
out:
    pthread_mutex_unlock(&q->wmu);
    return rc;
}

int sq_usage_daily(store_t *st, const char *owner, double day0, int days, long long *jobs, long long *credits,
                   up_error_t *err) {
    sq_store_t *q = sq_of(st);
    pthread_mutex_lock(&q->rmu);
    sqlite3_stmt *s = q->kr[R_USAGE_DAILY];
    sq_bind_text(s, 1, owner);
    sqlite3_bind_double(s, 2, day0);
    sqlite3_bind_int(s, 3, days);
    int src, rc = UP_OK;
    while ((src = sqlite3_step(s)) == SQLITE_ROW) {
        sqlite3_int64 d = sqlite3_column_int64(s, 0);
        if (d < 0 || d >= days) /* rounding at the last boundary: the WHERE already bounds created_at */
            continue;
        jobs[d] = sqlite3_column_int64(s, 1);
        credits[d] = sqlite3_column_int64(s, 2);
    }
    if (src != SQLITE_DONE)
        rc = sq_db_error(q->r, err, "cannot sum usage by day");
    sq_done(s);
    pthread_mutex_unlock(&q->rmu);
    return rc;
}
