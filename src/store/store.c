/*
 * store.c - the public face of store.h: opening a store from its URL, and
 * the public functions, which check their arguments (the refusals that need
 * no database, written once for every backend) and call the backend's
 * table (store_vtbl_t). It knows no backend's insides.
 */
#include "store/store.h"
#include "store/rules.h"

#include <assert.h>
#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blob/blob.h"
#include "core/log.h"

#define BACKENDS "sqlite, postgresql" /* the schemes this build opens, for the refusal's message */

const char *job_status_name(job_status_t s) {
    switch (s) {
    case JOB_STATUS_QUEUED: return "queued";
    case JOB_STATUS_CLAIMED: return "claimed";
    case JOB_STATUS_PROCESSING: return "processing";
    case JOB_STATUS_COMPLETED: return "completed";
    case JOB_STATUS_FAILED: return "failed";
    case JOB_STATUS_CANCELLED: return "cancelled";
    case JOB_STATUS_EXPIRED: return "expired";
    case JOB_STATUS_COUNT: break;
    }
    return "unknown";
}

/* ---- the rules every backend's writes keep (rules.h) --------------------------------- */

#define LIVE (STORE_BIT(JOB_STATUS_QUEUED) | STORE_BIT(JOB_STATUS_CLAIMED) | STORE_BIT(JOB_STATUS_PROCESSING))
#define HELD (STORE_BIT(JOB_STATUS_CLAIMED) | STORE_BIT(JOB_STATUS_PROCESSING))

const store_rule_t store_rule_start = {STORE_BIT(JOB_STATUS_CLAIMED), 0, "start"};
const store_rule_t store_rule_progress = {STORE_BIT(JOB_STATUS_PROCESSING), 0, "report progress of"};
const store_rule_t store_rule_heartbeat = {HELD, 0, "renew the lease of"};
const store_rule_t store_rule_complete = {STORE_BIT(JOB_STATUS_PROCESSING), 0, "complete"};
/* a queued job may fail too (its input vanished before a worker took it) */
const store_rule_t store_rule_fail = {LIVE, LIVE, "fail"};
/* still claimed: the job never ran, so it costs nothing */
const store_rule_t store_rule_cancelled = {HELD, STORE_BIT(JOB_STATUS_CLAIMED), "mark cancelled"};
const store_rule_t store_rule_requeue = {HELD, 0, "requeue"};
const store_rule_t store_rule_downloaded = {STORE_BIT(JOB_STATUS_COMPLETED), 0, "download"};
const store_rule_t store_rule_expire = {STORE_BIT(JOB_STATUS_COMPLETED) | STORE_BIT(JOB_STATUS_FAILED) |
                                            STORE_BIT(JOB_STATUS_CANCELLED) | STORE_BIT(JOB_STATUS_EXPIRED),
                                        0, "expire"};

double store_fair_tag(double vtime, double last, double cost, double weight) {
    if (!(cost > 0))
        cost = 1;
    if (!(weight > 0))
        weight = 1;
    return (last > vtime ? last : vtime) + cost / weight;
}

/* ---- opening ------------------------------------------------------------------- */

/*
 * Split url: *path gets the SQLite file's path as given (absolute for
 * "sqlite:///", relative for "sqlite:"), or NULL for the default (NULL or
 * ""); *pg is 1 for a PostgreSQL URL (postgresql:// or postgres://, which
 * libpq reads whole), *path then NULL. The refusals of store_open_url,
 * told without the URL (the caller names it: a setting's "bad store 'URL':
 * ...").
 */
static int parse_url(const char *url, const char **path, int *pg, up_error_t *err) {
    static const char forms[] =
        "sqlite:///ABSOLUTE/PATH.db, sqlite:RELATIVE/PATH.db or postgresql://[USER@]HOST[:PORT]/DB";
    *path = NULL;
    *pg = 0;
    if (!url || !*url)
        return UP_OK;
    const char *colon = strchr(url, ':');
    size_t scheme_len = colon ? (size_t)(colon - url) : 0;
    if (colon && ((scheme_len == 10 && strncmp(url, "postgresql", 10) == 0) ||
                  (scheme_len == 8 && strncmp(url, "postgres", 8) == 0))) {
        /* libpq parses the rest (host, port, ?host=/socket/dir, options) and says what it refuses */
        if (strncmp(colon + 1, "//", 2) != 0)
            return up_error_set(err, UP_ERR_INVALID, 0, "%s expected (two slashes after the scheme)", forms);
        *pg = 1;
        return UP_OK;
    }
    if (colon && scheme_len == 6 && strncmp(url, "sqlite", 6) == 0) {
        const char *p = colon + 1;
        if (strncmp(p, "//", 2) == 0) {
            if (p[2] != '/') /* sqlite://HOST/...: a file has no host */
                return up_error_set(err, UP_ERR_INVALID, 0,
                                    "%s expected (three slashes before an absolute path)", forms);
            p += 2;
        }
        if (!*p || p[strlen(p) - 1] == '/')
            return up_error_set(err, UP_ERR_INVALID, 0, "no database file named: %s expected", forms);
        if (strlen(p) >= PATH_MAX)
            return up_error_set(err, UP_ERR_INVALID, 0, "the path is too long");
        *path = p;
        return UP_OK;
    }
    /* a scheme is a letter, then letters, digits, '+', '-' or '.' (RFC 3986 section 3.1) */
    static const char scheme_chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.";
    int scheme = scheme_len > 0 && isalpha((unsigned char)url[0]) && strspn(url, scheme_chars) == scheme_len;
    if (!scheme)
        return up_error_set(err, UP_ERR_INVALID, 0,
                            "a URL of this build's store backends (" BACKENDS ") expected: %s", forms);
    int shown = scheme_len > 40 ? 40 : (int)scheme_len;
    return up_error_set(err, UP_ERR_UNSUPPORTED, 0,
                        "no %.*s store in this build (this build's store backends: " BACKENDS ")", shown,
                        url);
}

/* url for a message: a password (user:PASSWORD@ in any form, or password=... in the query) as "***". */
static void redact(const char *url, char *out, size_t size) {
    size_t n = 0;
    const char *at = strchr(url, '@'), *scheme = strchr(url, ':');
    const char *pw = NULL; /* the last ':' between the scheme's and the '@' */
    for (const char *p = scheme ? scheme + 1 : url; at && scheme && p < at; p++)
        if (*p == ':')
            pw = p;
    for (const char *p = url; *p && n + 4 < size;) {
        if (pw && p == pw + 1) {
            n += (size_t)snprintf(out + n, size - n, "***");
            p = at;
        } else if (!strncmp(p, "password=", 9) && (p == url || p[-1] == '?' || p[-1] == '&')) {
            n += (size_t)snprintf(out + n, size - n, "password=***");
            p += 9 + strcspn(p + 9, "&");
        } else {
            out[n++] = *p++;
        }
    }
    out[n < size ? n : size - 1] = '\0';
}

int store_url_check(const char *url, up_error_t *err) {
    const char *path;
    int pg;
    int rc = parse_url(url, &path, &pg, err);
    if (rc) {
        char shown[512];
        redact(url, shown, sizeof shown);
        up_error_prefix(err, "bad store '%s'", shown);
    }
    return rc;
}

int store_open_url(const char *url, const char *data_dir, store_t **out, up_error_t *err) {
    assert(out);
    *out = NULL;
    const char *path;
    int pg;
    int rc = parse_url(url, &path, &pg, err);
    if (rc) {
        up_error_prefix(err, "job store: URL '%.200s'", url);
        return rc;
    }
    if (pg)
        return store_pg_open(url, out, err);
    char file[PATH_MAX];
    int n;
    if (!path) {
        assert(data_dir);
        if (mkdir(data_dir, 0777) != 0) {
            struct stat sb;
            if (stat(data_dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
                rc = up_error_set(err, UP_ERR_IO, 0, "job store: cannot create the data folder %s", data_dir);
                log_error("%s", err ? err->msg : "job store: no data folder");
                return rc;
            }
        }
        n = snprintf(file, sizeof file, "%s/upres.db", data_dir);
    } else if (path[0] == '/') {
        n = snprintf(file, sizeof file, "%s", path);
    } else {
        /* relative to the working directory now: made absolute, so a later chdir changes nothing */
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof cwd)) {
            rc = up_error_set(err, UP_ERR_IO, 0, "job store: cannot read the working directory for '%s'",
                              path);
            log_error("%s", err ? err->msg : "job store: no working directory");
            return rc;
        }
        n = snprintf(file, sizeof file, "%s/%s", strcmp(cwd, "/") ? cwd : "", path);
    }
    if (n < 0 || (size_t)n >= sizeof file)
        return up_error_set(err, UP_ERR_INVALID, 0, "job store: database path too long");
    return store_sqlite_open(file, out, err);
}

int store_open(const char *data_dir, store_t **out, up_error_t *err) {
    assert(data_dir);
    return store_open_url(NULL, data_dir, out, err);
}

void store_close(store_t *st) {
    if (st)
        st->vtbl->close(st);
}

/* ---- submitting jobs ------------------------------------------------------------ */

/* The refusals of store_jobs_submit that need only the jobs. */
static int check_new_jobs(const job_t *jobs, int n, double period_start, up_error_t *err) {
    long long sum = 0;
    for (int i = 0; i < n; i++) {
        const job_t *job = &jobs[i];
        if (!job->id[0])
            return up_error_set(err, UP_ERR_INVALID, 0, "job store: a job needs an id");
        if (job->credits < 0)
            return up_error_set(err, UP_ERR_INVALID, 0, "job store: job %s: negative charge", job->id);
        if (job->credits > LLONG_MAX - sum)
            return up_error_set(err, UP_ERR_INVALID, 0, "job store: job %s: the charges overflow", job->id);
        sum += job->credits;
        /* a charge recorded without being taken would be refunded into a balance it never left */
        if (period_start < 0 && job->credits != 0)
            return up_error_set(err, UP_ERR_INVALID, 0,
                                "job store: job %s: a charged job needs its owner and period", job->id);
        if (job->priority < STORE_PRIORITY_MIN || job->priority > STORE_PRIORITY_MAX)
            return up_error_set(err, UP_ERR_INVALID, 0, "job store: job %s: priority %d is outside %d..%d",
                                job->id, job->priority, STORE_PRIORITY_MIN, STORE_PRIORITY_MAX);
        if (!isfinite(job->cost) || !isfinite(job->weight))
            return up_error_set(err, UP_ERR_INVALID, 0,
                                "job store: job %s: a cost and weight must be numbers", job->id);
        if (strcmp(job->owner, jobs[0].owner) != 0)
            return up_error_set(err, UP_ERR_INVALID, 0, "job store: job %s: one submission has one owner",
                                job->id);
        /* rows hold keys, not paths */
        if (!job->asset_id[0] && job->input_key[0] && !blob_key_valid(job->input_key))
            return up_error_set(err, UP_ERR_INVALID, 0, "job store: job %s: '%.300s' is not a blob key",
                                job->id, job->input_key);
    }
    return UP_OK;
}

int store_jobs_submit(store_t *st, const job_t *jobs, int n, double period_start, const store_idem_t *idem,
                      store_charge_t *charge, up_error_t *err) {
    assert(st && jobs && n >= 1);
    int rc = check_new_jobs(jobs, n, period_start, err);
    if (rc) {
        if (charge)
            *charge = (store_charge_t){.quota = -1, .used = 0, .credits = -1};
        return rc;
    }
    return st->vtbl->jobs_submit(st, jobs, n, period_start, idem, charge, err);
}

int store_job_submit(store_t *st, const job_t *job, double period_start, const store_idem_t *idem,
                     store_charge_t *charge, up_error_t *err) {
    return store_jobs_submit(st, job, 1, period_start, idem, charge, err);
}

int store_job_insert(store_t *st, const job_t *job, up_error_t *err) {
    return store_jobs_submit(st, job, 1, -1, NULL, NULL, err);
}

int store_job_insert_charged(store_t *st, const job_t *job, double period_start, store_charge_t *charge,
                             up_error_t *err) {
    return store_jobs_submit(st, job, 1, period_start, NULL, charge, err);
}

int store_idem_get(store_t *st, const char *scope, const char *key, store_idem_t *out, up_error_t *err) {
    assert(st && scope && key && out);
    memset(out, 0, sizeof *out);
    return st->vtbl->idem_get(st, scope, key, out, err);
}

/* ---- assets --------------------------------------------------------------------- */

int store_asset_insert(store_t *st, const asset_t *a, up_error_t *err) {
    assert(st && a);
    if (!a->id[0])
        return up_error_set(err, UP_ERR_INVALID, 0, "job store: an asset needs an id");
    if (a->key[0] && !blob_key_valid(a->key)) /* rows hold keys, not paths */
        return up_error_set(err, UP_ERR_INVALID, 0, "job store: asset %s: '%.300s' is not a blob key", a->id,
                            a->key);
    return st->vtbl->asset_insert(st, a, err);
}

int store_asset_get(store_t *st, const char *id, asset_t *out, up_error_t *err) {
    assert(st && id && out);
    return st->vtbl->asset_get(st, id, out, err);
}

int store_assets_due(store_t *st, double now, asset_t *out, int max, int *n, up_error_t *err) {
    assert(st && n && (out || max <= 0));
    *n = 0;
    if (max <= 0)
        return UP_OK;
    return st->vtbl->assets_due(st, now, out, max, n, err);
}

int store_asset_due(store_t *st, const char *id, double now, asset_t *out, up_error_t *err) {
    assert(st && id && out);
    if (!id[0])
        return up_error_set(err, UP_ERR_NOT_FOUND, 0, "no asset \"\"");
    return st->vtbl->asset_due(st, id, now, out, err);
}

int store_asset_deleted(store_t *st, const char *id, up_error_t *err) {
    assert(st && id);
    return st->vtbl->asset_deleted(st, id, err);
}

/* ---- job reads and transitions --------------------------------------------------------- */

int store_job_get(store_t *st, const char *id, job_t *out, up_error_t *err) {
    assert(st && id && out);
    return st->vtbl->job_get(st, id, out, err);
}

int store_job_claim(store_t *st, const char *worker, double lease_s, const char *models, job_t *out,
                    up_error_t *err) {
    assert(st && worker && out);
    if (!worker[0] || strlen(worker) >= sizeof out->worker || !(lease_s > 0))
        return up_error_set(err, UP_ERR_INVALID, 0,
                            "job store: a claim needs a worker id (1 to %zu bytes) "
                            "and a lease over 0 s",
                            sizeof out->worker - 1);
    if (models && strlen(models) >= STORE_MODELS_MAX)
        return up_error_set(err, UP_ERR_INVALID, 0, "job store: a claim's models list is %d bytes at most",
                            STORE_MODELS_MAX - 1);
    return st->vtbl->job_claim(st, worker, lease_s, models ? models : "", out, err);
}

int store_job_start(store_t *st, const char *id, const store_fence_t *fence, int *cancel, up_error_t *err) {
    assert(st && id && fence);
    return st->vtbl->job_start(st, id, fence, cancel, err);
}

int store_job_progress(store_t *st, const char *id, const store_fence_t *fence, int progress, int *cancel,
                       up_error_t *err) {
    assert(st && id && fence);
    if (progress < 0)
        progress = 0;
    if (progress > 100)
        progress = 100;
    return st->vtbl->job_progress(st, id, fence, progress, cancel, err);
}

int store_job_heartbeat(store_t *st, const char *id, const store_fence_t *fence, int *cancel,
                        up_error_t *err) {
    assert(st && id && fence);
    return st->vtbl->job_heartbeat(st, id, fence, cancel, err);
}

int store_job_complete(store_t *st, const job_t *job, const store_fence_t *fence, double retention_s,
                       up_error_t *err) {
    assert(st && job && fence);
    if (job->result_key[0] && !blob_key_valid(job->result_key)) /* rows hold keys, not paths */
        return up_error_set(err, UP_ERR_INVALID, 0, "job store: job %s: result '%.300s' is not a blob key",
                            job->id, job->result_key);
    return st->vtbl->job_complete(st, job, fence, retention_s, err);
}

int store_job_fail(store_t *st, const char *id, const store_fence_t *fence, const char *message,
                   double retention_s, up_error_t *err) {
    assert(st && id);
    return st->vtbl->job_fail(st, id, fence, message && *message ? message : "unknown error", retention_s,
                              err);
}

int store_job_cancel(store_t *st, const char *id, job_status_t *was, up_error_t *err) {
    assert(st && id);
    return st->vtbl->job_cancel(st, id, was, err);
}

int store_job_cancelled(store_t *st, const char *id, const store_fence_t *fence, double retention_s,
                        up_error_t *err) {
    assert(st && id && fence);
    return st->vtbl->job_cancelled(st, id, fence, retention_s, err);
}

int store_job_requeue(store_t *st, const char *id, const store_fence_t *fence, up_error_t *err) {
    assert(st && id && fence);
    return st->vtbl->job_requeue(st, id, fence, err);
}

int store_jobs_rescue(store_t *st, int max_attempts, double backoff_s, double retention_s, job_t *jobs,
                      int max, int *n, up_error_t *err) {
    assert(st && jobs && max >= 1 && n);
    *n = 0;
    return st->vtbl->jobs_rescue(st, max_attempts, backoff_s, retention_s, jobs, max, n, err);
}

int store_job_downloaded(store_t *st, const char *id, up_error_t *err) {
    assert(st && id);
    return st->vtbl->job_downloaded(st, id, err);
}

int store_jobs_due(store_t *st, double now, job_t *jobs, int max, int *n, up_error_t *err) {
    assert(st && n && (jobs || max <= 0));
    *n = 0;
    if (max <= 0)
        return UP_OK;
    return st->vtbl->jobs_due(st, now, jobs, max, n, err);
}

int store_job_expire(store_t *st, const char *id, up_error_t *err) {
    assert(st && id);
    return st->vtbl->job_expire(st, id, err);
}

int store_blobs_referenced(store_t *st, int (*fn)(const char *key, void *ctx), void *ctx, up_error_t *err) {
    assert(st && fn);
    return st->vtbl->blobs_referenced(st, fn, ctx, err);
}

int store_model_counts(store_t *st,
                       void (*fn)(const char *model, long long queued, long long running, void *ctx),
                       void *ctx, up_error_t *err) {
    assert(st && fn);
    return st->vtbl->model_counts(st, fn, ctx, err);
}

int store_job_counts(store_t *st, long long *counts, up_error_t *err) {
    assert(st && counts);
    for (int i = 0; i < JOB_STATUS_COUNT; i++)
        counts[i] = 0;
    return st->vtbl->job_counts(st, counts, err);
}

int store_job_queue_position(store_t *st, const char *id, int *position, double *mpx_ahead, up_error_t *err) {
    assert(st && id && position && mpx_ahead);
    *position = 0;
    *mpx_ahead = 0;
    if (!id[0])
        return up_error_set(err, UP_ERR_NOT_FOUND, 0, "no job \"\"");
    return st->vtbl->job_queue_position(st, id, position, mpx_ahead, err);
}

int store_model_rate(store_t *st, const char *model, int last_n, double *seconds_per_mpx, int *n,
                     up_error_t *err) {
    assert(st && model && seconds_per_mpx && n);
    *seconds_per_mpx = 0;
    *n = 0;
    if (last_n < 1)
        return up_error_set(err, UP_ERR_INVALID, 0, "job store: a model's rate needs last_n >= 1, not %d",
                            last_n);
    return st->vtbl->model_rate(st, model, last_n, seconds_per_mpx, n, err);
}

int store_jobs_list(store_t *st, const store_job_filter_t *f, job_t *jobs, int max, int *n, up_error_t *err) {
    assert(st && f && n && (jobs || max <= 0));
    *n = 0;
    if (!f->owner)
        return up_error_set(err, UP_ERR_INVALID, 0, "job store: listing jobs needs an owner");
    if (max <= 0)
        return UP_OK;
    return st->vtbl->jobs_list(st, f, jobs, max, n, err);
}

/* ---- API keys ------------------------------------------------------------------ */

int store_key_insert(store_t *st, const api_key_t *key, up_error_t *err) {
    assert(st && key);
    if (!key->id[0])
        return up_error_set(err, UP_ERR_INVALID, 0, "job store: a key needs an id");
    if (key->quota < -1 || key->credits < -1)
        return up_error_set(err, UP_ERR_INVALID, 0, "job store: key %s: quota and credits are -1 or more",
                            key->id);
    if (key->guest != 0 && key->guest != 1)
        return up_error_set(err, UP_ERR_INVALID, 0, "job store: key %s: guest is 0 or 1, not %d", key->id,
                            key->guest);
    if (key->reset_at < 0)
        return up_error_set(err, UP_ERR_INVALID, 0, "job store: key %s: reset_at is 0 (never) or a time",
                            key->id);
    return st->vtbl->key_insert(st, key, err);
}

int store_key_by_hash(store_t *st, const unsigned char hash[32], api_key_t *out, up_error_t *err) {
    assert(st && hash && out);
    return st->vtbl->key_by_hash(st, hash, out, err);
}

int store_key_find(store_t *st, const char *ref, api_key_t *out, up_error_t *err) {
    assert(st && ref && out);
    if (!*ref)
        return up_error_set(err, UP_ERR_NOT_FOUND, 0, "no key \"\"");
    return st->vtbl->key_find(st, ref, out, err);
}

int store_key_list(store_t *st, api_key_t **keys, int *n, up_error_t *err) {
    assert(st && keys && n);
    *keys = NULL;
    *n = 0;
    return st->vtbl->key_list(st, keys, n, err);
}

int store_key_revoke(store_t *st, const char *id, up_error_t *err) {
    assert(st && id);
    return st->vtbl->key_revoke(st, id, err);
}

/* The refusals of store_key_update that need only ch. */
static int check_key_change(const char *id, const store_key_change_t *ch, up_error_t *err) {
    const size_t tier_size = sizeof((api_key_t *)0)->tier;
    if (ch->tier && (!ch->tier[0] || strlen(ch->tier) >= tier_size))
        return up_error_set(err, UP_ERR_INVALID, 0, "key %s: a tier name is 1 to %zu bytes", id,
                            tier_size - 1);
    if (ch->set_quota && ch->quota < -1)
        return up_error_set(err, UP_ERR_INVALID, 0, "key %s: quota %lld: -1 (none) or more", id, ch->quota);
    if (ch->set_credits && ch->credits < -1)
        return up_error_set(err, UP_ERR_INVALID, 0, "key %s: credits %lld: -1 (unlimited) or more", id,
                            ch->credits);
    if (ch->set_credits && ch->add_credits)
        return up_error_set(err, UP_ERR_INVALID, 0, "key %s: set the credits or add to them, not both", id);
    return UP_OK;
}

int store_key_update(store_t *st, const char *id, const store_key_change_t *ch, api_key_t *out,
                     up_error_t *err) {
    assert(st && id && ch);
    int rc = check_key_change(id, ch, err);
    if (rc)
        return rc;
    return st->vtbl->key_update(st, id, ch, out, err);
}

int store_key_touch(store_t *st, const char *id, double t, up_error_t *err) {
    assert(st && id);
    return st->vtbl->key_touch(st, id, t, err);
}

int store_key_usage(store_t *st, const char *id, double period_start, long long *used, up_error_t *err) {
    assert(st && id && used);
    *used = 0;
    return st->vtbl->key_usage(st, id, period_start, used, err);
}

int store_usage_daily(store_t *st, const char *owner, double day0, int days, long long *jobs,
                      long long *credits, up_error_t *err) {
    assert(st && owner && (days <= 0 || (jobs && credits)));
    if (days < 0)
        return up_error_set(err, UP_ERR_INVALID, 0, "job store: usage over %d days", days);
    for (int i = 0; i < days; i++)
        jobs[i] = credits[i] = 0;
    if (days == 0)
        return UP_OK;
    return st->vtbl->usage_daily(st, owner, day0, days, jobs, credits, err);
}

int store_keys_reset_guests(store_t *st, double now, long long *n, up_error_t *err) {
    assert(st);
    long long count = 0;
    if (n)
        *n = 0;
    if (!(now > 0)) /* reset_at 0 means never reset */
        return up_error_set(err, UP_ERR_INVALID, 0, "job store: a reset needs a time after 0");
    int rc = st->vtbl->keys_reset_guests(st, now, &count, err);
    if (!rc && n)
        *n = count;
    return rc;
}

/* ---- notices ---------------------------------------------------------------------- */

int store_listen(store_t *st, store_listener_t **out, up_error_t *err) {
    assert(st && out);
    *out = NULL;
    if (!st->vtbl->listen)
        return up_error_set(err, UP_ERR_UNSUPPORTED, 0,
                            "job store: the %s store has no notices (it is polled)", st->vtbl->name);
    return st->vtbl->listen(st, out, err);
}

int store_listener_wait(store_listener_t *l, double timeout_s, const store_listen_fns_t *fns, void *ctx,
                        up_error_t *err) {
    assert(l && fns);
    return l->vtbl->wait(l, timeout_s > 0 ? timeout_s : 0, fns, ctx, err);
}

void store_listener_send(store_listener_t *l, const char *id) {
    assert(l && id);
    size_t n = strlen(id);
    if (n == 0 || n >= STORE_NOTICE_ID_MAX ||
        strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                   "0123456789_.:-") != n)
        return;
    l->vtbl->send(l, id);
}

void store_listener_wake(store_listener_t *l) {
    assert(l);
    l->vtbl->wake(l);
}

void store_listener_free(store_listener_t *l) {
    if (l)
        l->vtbl->free(l);
}

int store_rate_take(store_t *st, const char *subject, const store_rate_limit_t *limits, int n_limits,
                    double now, int *allowed, double *retry_after, int *window_s, up_error_t *err) {
    assert(st && subject && (limits || n_limits == 0) && allowed && retry_after && window_s);
    for (int i = 0; i < n_limits; i++)
        assert(limits[i].n >= 0 && limits[i].window_s >= 1 && limits[i].window_s <= STORE_RATE_MAX_WINDOW);
    *allowed = 1;
    *retry_after = 0;
    *window_s = 0;
    if (!st->vtbl->rate_take)
        return up_error_set(err, UP_ERR_UNSUPPORTED, 0, "the %s store keeps no shared request limits",
                            st->vtbl->name);
    return st->vtbl->rate_take(st, subject, limits, n_limits, now, allowed, retry_after, window_s, err);
}

int store_rate_shared(const store_t *st) { return st->vtbl->rate_take != NULL; }

/* ---- the workers registry ------------------------------------------------------------ */

int store_worker_live(const store_worker_t *w, double now) { return w->heartbeat_at + w->lease_s >= now; }

int store_models_has(const char *models, const char *model) {
    if (!models || !*models)
        return 1;
    size_t n = strlen(model);
    for (const char *p = models; *p;) {
        size_t len = strcspn(p, ",");
        if (len == n && strncmp(p, model, n) == 0)
            return 1;
        p += len;
        if (*p == ',')
            p++;
    }
    return 0;
}

int store_worker_slots(const store_worker_t *live, int n, const char *model) {
    int slots = 0;
    for (int k = 0; k < n; k++)
        if (strcmp(live[k].state, "draining") != 0 && store_models_has(live[k].models, model))
            slots += live[k].slots;
    return slots;
}

static int check_worker_name(const char *name, up_error_t *err) {
    if (!name[0] || strlen(name) >= sizeof((store_worker_t *)0)->name)
        return up_error_set(err, UP_ERR_INVALID, 0, "job store: a worker's name is 1 to %zu bytes",
                            sizeof((store_worker_t *)0)->name - 1);
    return UP_OK;
}

int store_worker_register(store_t *st, const store_worker_t *w, up_error_t *err) {
    assert(st && w);
    int rc = check_worker_name(w->name, err);
    if (rc)
        return rc;
    if (w->slots < 1 || !(w->lease_s > 0))
        return up_error_set(err, UP_ERR_INVALID, 0,
                            "job store: worker %s: slots 1 or more and a lease over 0 s", w->name);
    return st->vtbl->worker_register(st, w, err);
}

int store_worker_heartbeat(store_t *st, const store_worker_t *self, const char *jobs, const char *state,
                           up_error_t *err) {
    assert(st && self);
    int rc = check_worker_name(self->name, err);
    if (rc)
        return rc;
    return st->vtbl->worker_heartbeat(st, self, jobs ? jobs : "", state, err);
}

int store_worker_remove(store_t *st, const store_worker_t *w, up_error_t *err) {
    assert(st && w);
    return st->vtbl->worker_remove(st, w, err);
}

int store_workers_list(store_t *st, int all, store_worker_t **out, int *n, up_error_t *err) {
    assert(st && out && n);
    *out = NULL;
    *n = 0;
    return st->vtbl->workers_list(st, all, out, n, err);
}

int store_schema_version(store_t *st, int *version, const char **backend, up_error_t *err) {
    assert(st && version);
    *version = 0;
    if (backend)
        *backend = st->vtbl->name;
    return st->vtbl->schema_version(st, version, err);
}
