/*
 * pg_jobs.c - the PostgreSQL store's jobs and their input assets
 * (store.h): submission, claims, the fenced transitions, rescue, retention
 * and the reads. The same functions as sqlite_jobs.c, with the same
 * refusals and messages; how each stays exact across processes is pg.c's
 * DESIGN (row locks); the charge and refund are pg_keys.c's.
 *
 * A job row holds its asset's id; every job read joins the asset (LEFT
 * JOIN: a row whose asset is missing still reads) to fill job_t's input_*
 * fields. Every parameter is text with a cast in the SQL ($1::text).
 */
#include <assert.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/xmalloc.h"
#include "store/pg_int.h"
#include "store/rules.h"

#define PG_FAIR_LOCK_SQL                                                                                     \
    "1970170226"            /* the owners' advisory locks: this first key, the owner's hash second */
#define IDEM_KEEP_S 86400.0 /* an Idempotency-Key's answer is replayed for 24 hours */

/* Every job read returns these columns in this order (see read_row). */
#define JOB_COLUMNS                                                                                          \
    "j.seq, j.id, j.status, j.progress, j.attempts, j.cancel_requested, j.model, j.model_alias, j.scale,"    \
    " j.format, j.quality, j.tile, a.key, a.name, a.format, a.width, a.height, a.bytes,"                     \
    " j.result_key, j.result_format, j.output_width, j.output_height, j.result_bytes,"                       \
    " j.created_at, j.started_at, j.completed_at, j.expires_at, j.error, j.owner, j.tier, j.credits,"        \
    " j.refunded, j.keep_s, j.colour, j.worker, j.lease_s, j.lease_until, j.not_before, j.asset_id,"         \
    " j.steps, j.report, j.meta, j.priority, j.vtag"
#define JOBS_JOINED " FROM jobs j LEFT JOIN assets a ON a.id = j.asset_id"

#define ASSET_COLUMNS                                                                                        \
    "a.id, a.owner, a.key, a.name, a.format, a.width, a.height, a.frames, a.bytes, a.created_at, "           \
    "a.expires_at"

/* A job's estimated output megapixels times 1e6, summed over job rows j with their assets a (a missing one:
 * 0). */
#define PG_MPX(a, j)                                                                                         \
    "coalesce(sum(coalesce(" a ".width, 0)::float8 * coalesce(" a ".height, 0) * greatest(" j ".scale, 1)"   \
    " * greatest(" j ".scale, 1)), 0)"

/* The queue position's two ranges of jobs_fair, as sqlite_jobs.c's QP_HIGHER and QP_LEVEL ($1 = id, $2 =
 * now). */
#define PQP_HIGHER                                                                                           \
    " FROM jobs h LEFT JOIN assets b ON b.id = h.asset_id"                                                   \
    " WHERE h.status = 0 AND h.priority > x.priority AND h.not_before <= $2::float8"
#define PQP_LEVEL                                                                                            \
    " LEFT JOIN jobs q ON x.status = 0 AND q.status = 0 AND q.priority = x.priority"                         \
    " AND (q.vtag, q.seq) <= (x.vtag, x.seq) AND (q.not_before <= $2::float8 OR q.seq = x.seq)"              \
    " LEFT JOIN assets a ON a.id = q.asset_id WHERE x.id = $1::text GROUP BY x.seq"

/* $1 = now. Status numbers are job_status_t: "IN (0, 1, 6)" is a live job (queued, processing, claimed). */
#define DUE_WHERE                                                                                            \
    " a.key <> '' AND a.expires_at <= $1::float8"                                                            \
    " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.asset_id = a.id AND j.status IN (0, 1, 6))"

enum {
    S_INSERT,
    S_NOTIFY_NEW, /* new jobs: the listeners told at commit */
    S_FAIR_LOCK,  /* the owner's advisory lock, for the submission's transaction */
    S_FAIR,       /* V and L of a new job (store.h "Order") */
    S_STATUS,     /* status, cancel_requested, attempts, worker of one id, the row locked */
    S_CLAIM,
    S_START,
    S_PROGRESS,
    S_HEARTBEAT,
    S_COMPLETE,
    S_FAIL,
    S_CANCEL_QUEUED,
    S_CANCEL_REQUEST,
    S_CANCELLED,
    S_REQUEUE,
    S_LAPSED, /* seqs of held jobs whose lease ran out, locked */
    S_RESCUE_CANCEL,
    S_RESCUE_FAIL,
    S_RESCUE_REQUEUE,
    S_DOWNLOADED,
    S_EXPIRE,
    S_ASSET_INSERT,
    S_ASSET_STATE,    /* owner, key, expires_at of one asset, FOR SHARE (a submission) */
    S_ASSETS_LOCK,    /* the ids of the assets due, locked */
    S_ASSET_LOCK_ONE, /* one asset locked */
    S_ASSET_DUE,      /* one asset if due, in a statement of its own (a new snapshot) */
    S_ASSET_DELETED,
    S_GET_SEQ,
    S_IDEM_PURGE,
    S_IDEM_INSERT,
    S_GET,
    S_DUE,
    S_COUNTS,
    S_MODEL_COUNTS,
    S_LIST,
    S_IDEM_GET,
    S_ANY_LAPSED,
    S_BLOB_KEYS,
    S_ASSET_GET,
    S_QUEUE_POSITION,
    S_MODEL_RATE,
    N_STMT
};

/* Status numbers are job_status_t: "IN (1, 6)" is a job a worker holds (processing, claimed). */
static const char *const sql[N_STMT] = {
    [S_INSERT] =
        "INSERT INTO jobs (id, model, scale, format, quality, tile, created_at, model_alias, owner,"
        " tier, credits, keep_s, colour, asset_id, steps, meta, priority, vtag) VALUES ($1::text,"
        " $2::text, $3::int, $4::text, $5::int, $6::int, $7::float8, $8::text, $9::text, $10::text,"
        " $11::bigint, $12::float8, $13::text, $14::text, $15::text, $16::text, $17::int, $18::float8)",
    /* at the submission's commit, every listener hears of new jobs (pg_notify.c) */
    [S_NOTIFY_NEW] = "SELECT pg_notify('" PG_CHANNEL_JOBS "' || " PG_CHANNEL_TAG_SQL ", '')",
    [S_FAIR_LOCK] = "SELECT pg_advisory_xact_lock(" PG_FAIR_LOCK_SQL ", hashtext($1::text))",
    /* as sqlite_jobs.c's S_FAIR: $1 = priority, $2 = now, $3 = owner */
    [S_FAIR] = "SELECT coalesce((SELECT vtag FROM jobs WHERE status = 0 AND priority = $1::int"
               " AND not_before <= $2::float8 ORDER BY priority DESC, vtag, seq LIMIT 1),"
               " (SELECT max(vtag) FROM jobs WHERE status IN (1, 6)), 0),"
               " (SELECT max(vtag) FROM jobs WHERE status = 0 AND owner = $3::text AND priority = $1::int)",
    [S_STATUS] = "SELECT status, cancel_requested, attempts, worker FROM jobs WHERE id = $1::text FOR UPDATE",
    /* $1 = now, $2 = worker, $3 = lease_s, $4 = the models served, comma-separated, '' = any: one
     * statement, the row found and locked by SKIP LOCKED */
    [S_CLAIM] =
        "WITH c AS (UPDATE jobs SET status = 6, attempts = attempts + 1, started_at = $1::float8,"
        " progress = 0, cancel_requested = 0, worker = $2::text, lease_s = $3::float8,"
        " lease_until = $1::float8 + $3::float8, not_before = 0"
        " WHERE seq = (SELECT seq FROM jobs WHERE status = 0 AND not_before <= $1::float8"
        " AND ($4::text = '' OR strpos(',' || $4::text || ',', ',' || model || ',') > 0)"
        " ORDER BY priority DESC, vtag, seq LIMIT 1 FOR UPDATE SKIP LOCKED) AND status = 0 RETURNING *)"
        " SELECT " JOB_COLUMNS " FROM c j LEFT JOIN assets a ON a.id = j.asset_id",
    /* $1 = id, $2 = now in every transition; a job cancelled while claimed stays claimed */
    [S_START] = "UPDATE jobs SET status = 1, lease_until = $2::float8 + lease_s WHERE id = $1::text"
                " AND cancel_requested = 0",
    [S_PROGRESS] =
        "UPDATE jobs SET progress = $3::int, lease_until = $2::float8 + lease_s WHERE id = $1::text",
    [S_HEARTBEAT] = "UPDATE jobs SET lease_until = $2::float8 + lease_s WHERE id = $1::text",
    [S_COMPLETE] =
        "UPDATE jobs SET status = 2, progress = 100, result_key = $3::text, result_format = $4::text,"
        " output_width = $5::int, output_height = $6::int, result_bytes = $7::bigint,"
        " completed_at = $2::float8, expires_at = greatest($8::float8, $2::float8 + keep_s),"
        " report = $9::text, cancel_requested = 0, lease_until = 0 WHERE id = $1::text",
    [S_FAIL] =
        "UPDATE jobs SET status = 3, error = $3::text, completed_at = $2::float8, expires_at = $4::float8,"
        " cancel_requested = 0, lease_until = 0 WHERE id = $1::text",
    [S_CANCEL_QUEUED] = "UPDATE jobs SET status = 4, completed_at = $2::float8, expires_at = $2::float8"
                        " WHERE id = $1::text",
    [S_CANCEL_REQUEST] = "UPDATE jobs SET cancel_requested = 1 WHERE id = $1::text",
    [S_CANCELLED] =
        "UPDATE jobs SET status = 4, completed_at = $2::float8, expires_at = $2::float8 + $3::float8,"
        " cancel_requested = 0, lease_until = 0 WHERE id = $1::text",
    [S_REQUEUE] =
        "UPDATE jobs SET status = 0, progress = 0, started_at = 0, attempts = greatest(attempts - 1, 0),"
        " cancel_requested = 0, worker = '', lease_until = 0, not_before = 0 WHERE id = $1::text",
    /* rescue: $1 = now; each write masked by status and lease as the finder is */
    [S_LAPSED] = "SELECT seq FROM jobs WHERE status IN (1, 6) AND lease_until < $1::float8 ORDER BY seq"
                 " LIMIT $2::int FOR UPDATE SKIP LOCKED",
    [S_RESCUE_CANCEL] =
        "UPDATE jobs SET status = 4, completed_at = $1::float8, expires_at = $1::float8 + $3::float8,"
        " cancel_requested = 0, worker = '', lease_until = 0 WHERE seq = $2::bigint"
        " AND status IN (1, 6) AND lease_until < $1::float8",
    [S_RESCUE_FAIL] =
        "UPDATE jobs SET status = 3, completed_at = $1::float8, expires_at = $1::float8 + $3::float8,"
        " cancel_requested = 0,"
        " error = 'the worker running this job stopped (its lease ran out) ' || attempts || ' times',"
        " worker = '', lease_until = 0 WHERE seq = $2::bigint AND status IN (1, 6)"
        " AND lease_until < $1::float8",
    [S_RESCUE_REQUEUE] = "UPDATE jobs SET status = 0, progress = 0, started_at = 0, cancel_requested = 0,"
                         " worker = '', lease_until = 0, not_before = $1::float8 + $3::float8 * attempts"
                         " WHERE seq = $2::bigint AND status IN (1, 6) AND lease_until < $1::float8",
    [S_DOWNLOADED] = "UPDATE jobs SET status = 5, result_key = '' WHERE id = $1::text",
    [S_EXPIRE] = "UPDATE jobs SET result_key = '', status = CASE WHEN status = 2 THEN 5 ELSE status END"
                 " WHERE id = $1::text",
    [S_ASSET_INSERT] = "INSERT INTO assets (id, owner, key, name, format, width, height, frames, bytes,"
                       " created_at, expires_at) VALUES ($1::text, $2::text, $3::text, $4::text, $5::text,"
                       " $6::int, $7::int, $8::int, $9::bigint, $10::float8, $11::float8)",
    [S_ASSET_STATE] = "SELECT owner, key, expires_at FROM assets WHERE id = $1::text FOR SHARE",
    [S_ASSETS_LOCK] = "SELECT a.id FROM assets a WHERE" DUE_WHERE " ORDER BY a.expires_at LIMIT $2::int"
                      " FOR UPDATE OF a",
    [S_ASSET_LOCK_ONE] = "SELECT 1 FROM assets WHERE id = $1::text FOR UPDATE",
    [S_ASSET_DUE] = "SELECT " ASSET_COLUMNS " FROM assets a WHERE" DUE_WHERE " AND a.id = $2::text",
    [S_ASSET_DELETED] = "UPDATE assets SET key = '' WHERE id = $1::text",
    [S_GET_SEQ] = "SELECT " JOB_COLUMNS JOBS_JOINED " WHERE j.seq = $1::bigint",
    [S_IDEM_PURGE] = "DELETE FROM idempotency WHERE created_at < $1::float8",
    [S_IDEM_INSERT] = "INSERT INTO idempotency (scope, key, request_hash, status, body, job_id, created_at)"
                      " VALUES ($1::text, $2::text, decode($3::text, 'hex'), $4::int, $5::text, $6::text,"
                      " $7::float8)",
    [S_GET] = "SELECT " JOB_COLUMNS JOBS_JOINED " WHERE j.id = $1::text",
    [S_DUE] = "SELECT " JOB_COLUMNS JOBS_JOINED " WHERE j.status IN (2, 3, 4) AND j.expires_at > 0"
              " AND j.expires_at <= $1::float8 AND j.result_key <> '' ORDER BY j.expires_at LIMIT $2::int",
    [S_COUNTS] = "SELECT status, count(*) FROM jobs GROUP BY status",
    [S_MODEL_COUNTS] =
        "SELECT model, count(*) FILTER (WHERE status = 0), count(*) FILTER (WHERE status IN (1, 6))"
        " FROM jobs WHERE status IN (0, 1, 6) GROUP BY model ORDER BY model",
    /* one statement for every filter: a condition whose parameter says "no bound" is true */
    [S_LIST] = "SELECT " JOB_COLUMNS JOBS_JOINED " WHERE j.owner = $1::text AND j.seq < $6::bigint"
               " AND ($2::bigint = 0 OR ((1::bigint << j.status) & $2::bigint) <> 0)"
               " AND ($3::text IS NULL OR j.model = $3::text)"
               " AND ($4::float8 = 0 OR j.created_at < $4::float8)"
               " AND ($5::float8 = 0 OR j.created_at > $5::float8)"
               " ORDER BY j.seq DESC LIMIT $7::int",
    [S_IDEM_GET] = "SELECT encode(request_hash, 'hex'), status, body, job_id, created_at FROM idempotency"
                   " WHERE scope = $1::text AND key = $2::text AND created_at >= $3::float8",
    [S_ANY_LAPSED] = "SELECT 1 FROM jobs WHERE status IN (1, 6) AND lease_until < $1::float8 LIMIT 1",
    [S_BLOB_KEYS] = "SELECT key FROM assets WHERE key <> ''"
                    " UNION ALL SELECT result_key FROM jobs WHERE result_key <> ''",
    [S_ASSET_GET] = "SELECT " ASSET_COLUMNS " FROM assets a WHERE a.id = $1::text",
    /* as sqlite_jobs.c's: x is the job asked about; h the claimable jobs above its level, q x and those
     * before it at its level */
    [S_QUEUE_POSITION] =
        "SELECT CASE WHEN x.status = 0 THEN count(q.seq) + (SELECT count(*)" PQP_HIGHER
        ") ELSE 0 END, CASE WHEN x.status = 0 THEN (" PG_MPX("a", "q") " + (SELECT " PG_MPX("b", "h")
            PQP_HIGHER ")) / 1e6 ELSE 0 END FROM jobs x" PQP_LEVEL,
    [S_MODEL_RATE] = "SELECT count(*), coalesce(sum(completed_at - started_at), 0),"
                     " coalesce(sum(output_width::float8 * output_height), 0) / 1e6 FROM"
                     " (SELECT completed_at, started_at, output_width, output_height FROM jobs"
                     " WHERE model = $1::text AND status IN (2, 5) AND started_at > 0"
                     " AND completed_at >= started_at AND output_width > 0 AND output_height > 0"
                     " ORDER BY completed_at DESC, seq DESC LIMIT $2::int) t",
};

const pg_sql_t pg_jobs_sql = {"j", sql, N_STMT};

static int run(pg_store_t *p, int k, const pg_args_t *a, PGresult **res, long long *changed, const char *what,
               up_error_t *err) {
    return pg_run(p, &pg_jobs_sql, k, a, res, changed, 0, NULL, what, err);
}

static void read_row(const PGresult *r, int row, job_t *j) {
    memset(j, 0, sizeof *j);
    int c = 0;
    j->seq = pg_ll(r, row, c++);
    pg_copy(j->id, sizeof j->id, r, row, c++);
    j->status = (job_status_t)pg_ll(r, row, c++);
    j->progress = (int)pg_ll(r, row, c++);
    j->attempts = (int)pg_ll(r, row, c++);
    j->cancel_requested = (int)pg_ll(r, row, c++);
    pg_copy(j->model, sizeof j->model, r, row, c++);
    pg_copy(j->model_alias, sizeof j->model_alias, r, row, c++);
    j->scale = (int)pg_ll(r, row, c++);
    pg_copy(j->format, sizeof j->format, r, row, c++);
    j->quality = (int)pg_ll(r, row, c++);
    j->tile = (int)pg_ll(r, row, c++);
    pg_copy(j->input_key, sizeof j->input_key, r, row, c++);
    pg_copy(j->input_name, sizeof j->input_name, r, row, c++);
    pg_copy(j->input_format, sizeof j->input_format, r, row, c++);
    j->input_width = (int)pg_ll(r, row, c++);
    j->input_height = (int)pg_ll(r, row, c++);
    j->input_bytes = pg_ll(r, row, c++);
    pg_copy(j->result_key, sizeof j->result_key, r, row, c++);
    pg_copy(j->result_format, sizeof j->result_format, r, row, c++);
    j->output_width = (int)pg_ll(r, row, c++);
    j->output_height = (int)pg_ll(r, row, c++);
    j->result_bytes = pg_ll(r, row, c++);
    j->created_at = pg_dbl(r, row, c++);
    j->started_at = pg_dbl(r, row, c++);
    j->completed_at = pg_dbl(r, row, c++);
    j->expires_at = pg_dbl(r, row, c++);
    pg_copy(j->error, sizeof j->error, r, row, c++);
    pg_copy(j->owner, sizeof j->owner, r, row, c++);
    pg_copy(j->tier, sizeof j->tier, r, row, c++);
    j->credits = pg_ll(r, row, c++);
    j->refunded = (int)pg_ll(r, row, c++);
    j->keep_s = pg_dbl(r, row, c++);
    pg_copy(j->colour, sizeof j->colour, r, row, c++);
    pg_copy(j->worker, sizeof j->worker, r, row, c++);
    j->lease_s = pg_dbl(r, row, c++);
    j->lease_until = pg_dbl(r, row, c++);
    j->not_before = pg_dbl(r, row, c++);
    pg_copy(j->asset_id, sizeof j->asset_id, r, row, c++);
    pg_copy(j->steps, sizeof j->steps, r, row, c++);
    pg_copy(j->report, sizeof j->report, r, row, c++);
    pg_copy(j->meta, sizeof j->meta, r, row, c++);
    j->priority = (int)pg_ll(r, row, c++);
    j->vtag = pg_dbl(r, row, c++);
}

static void read_asset(const PGresult *r, int row, asset_t *a) {
    memset(a, 0, sizeof *a);
    int c = 0;
    pg_copy(a->id, sizeof a->id, r, row, c++);
    pg_copy(a->owner, sizeof a->owner, r, row, c++);
    pg_copy(a->key, sizeof a->key, r, row, c++);
    pg_copy(a->name, sizeof a->name, r, row, c++);
    pg_copy(a->format, sizeof a->format, r, row, c++);
    a->width = (int)pg_ll(r, row, c++);
    a->height = (int)pg_ll(r, row, c++);
    a->frames = (int)pg_ll(r, row, c++);
    a->bytes = pg_ll(r, row, c++);
    a->created_at = pg_dbl(r, row, c++);
    a->expires_at = pg_dbl(r, row, c++);
}

/* What a write transaction reads of a job before it writes (S_STATUS). */
typedef struct job_state {
    job_status_t status;
    int cancel; /* cancel_requested */
    int attempts;
    char worker[128]; /* the current claim's worker id, "" = none */
} job_state_t;

/* Inside a transaction: the state of id into *js, its row locked; UP_ERR_NOT_FOUND. */
static int job_state(pg_store_t *p, const char *id, job_state_t *js, up_error_t *err) {
    pg_args_t a = {0};
    pg_arg_text(&a, id);
    PGresult *r;
    int rc = run(p, S_STATUS, &a, &r, NULL, "cannot read a job", err);
    pg_args_fini(&a);
    if (rc)
        return rc;
    if (PQntuples(r) == 0) {
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no job %s", id);
    } else {
        js->status = (job_status_t)pg_ll(r, 0, 0);
        js->cancel = (int)pg_ll(r, 0, 1);
        js->attempts = (int)pg_ll(r, 0, 2);
        pg_copy(js->worker, sizeof js->worker, r, 0, 3);
    }
    PQclear(r);
    return rc;
}

/* UP_ERR_CONFLICT unless fence (NULL: not fenced) is the job's current claim; as sqlite_jobs.c's. */
static int check_fence(const char *id, const job_state_t *js, const store_fence_t *fence, up_error_t *err) {
    if (!fence || (js->attempts == fence->attempt && fence->worker && strcmp(js->worker, fence->worker) == 0))
        return UP_OK;
    if (!js->worker[0])
        return up_error_set(
            err, UP_ERR_CONFLICT, 0,
            "job %s: attempt %d of worker %s was superseded: the job is %s, held by no worker", id,
            fence->attempt, fence->worker ? fence->worker : "?", job_status_name(js->status));
    return up_error_set(err, UP_ERR_CONFLICT, 0,
                        "job %s: attempt %d of worker %s was superseded by attempt %d of worker %s", id,
                        fence->attempt, fence->worker ? fence->worker : "?", js->attempts, js->worker);
}

/* ---- inserting jobs ------------------------------------------------------------ */

/*
 * The pipeline of a job that names none (new text, free()): upscale with
 * its model, scale and tile, then encode (format "" = the input's, left
 * out): the text SQLite's SQ_DEFAULT_STEPS makes, byte for byte.
 */
static char *default_steps(const job_t *job) {
    json_t *up = json_pack("{s:s, s:s, s:i, s:i}", "op", "upscale", "model", job->model, "scale", job->scale,
                           "tile", job->tile);
    json_t *enc = job->format[0] ? json_pack("{s:s, s:s, s:i}", "op", "encode", "format", job->format,
                                             "quality", job->quality)
                                 : json_pack("{s:s, s:i}", "op", "encode", "quality", job->quality);
    json_t *steps = up && enc ? json_pack("[o, o]", up, enc) : NULL;
    if (!steps) {
        json_decref(up);
        json_decref(enc);
    }
    char *text = steps ? json_dumps(steps, JSON_COMPACT) : NULL;
    json_decref(steps);
    return text ? text : xstrdup("");
}

/* Inside a transaction: the fair-queueing tag of job, queued now (store.h "Order"). */
static int fair_tag(pg_store_t *p, const job_t *job, double now, double *vtag, up_error_t *err) {
    pg_args_t a = {0};
    pg_arg_int(&a, job->priority);
    pg_arg_double(&a, now);
    pg_arg_text(&a, job->owner);
    PGresult *r;
    int rc = run(p, S_FAIR, &a, &r, NULL, "cannot read the queue's virtual time", err);
    pg_args_fini(&a);
    if (rc)
        return rc;
    double v = pg_dbl(r, 0, 0);
    double last = PQgetisnull(r, 0, 1) ? v : pg_dbl(r, 0, 1);
    *vtag = store_fair_tag(v, last, job->cost, job->weight);
    PQclear(r);
    return UP_OK;
}

/* Inside a transaction: insert job, queued, made at created_at. UP_ERR_INVALID for a duplicate id. */
static int insert_row(pg_store_t *p, const job_t *job, const char *asset_id, double created_at, double now,
                      up_error_t *err) {
    double vtag = 0;
    int rc = fair_tag(p, job, now, &vtag, err);
    if (rc)
        return rc;
    char *steps = job->steps[0] ? NULL : default_steps(job);
    pg_args_t a = {0};
    pg_arg_text(&a, job->id);
    pg_arg_text(&a, job->model);
    pg_arg_int(&a, job->scale);
    pg_arg_text(&a, job->format);
    pg_arg_int(&a, job->quality);
    pg_arg_int(&a, job->tile);
    pg_arg_double(&a, created_at);
    pg_arg_text(&a, job->model_alias);
    pg_arg_text(&a, job->owner);
    pg_arg_text(&a, job->tier);
    pg_arg_int(&a, job->credits);
    pg_arg_double(&a, job->keep_s > 0 ? job->keep_s : 0);
    pg_arg_text(&a, job->colour);
    pg_arg_text(&a, asset_id);
    pg_arg_text(&a, steps ? steps : job->steps);
    pg_arg_text(&a, job->meta);
    pg_arg_int(&a, job->priority);
    pg_arg_double(&a, vtag);
    char who[80];
    snprintf(who, sizeof who, "job %s already exists", job->id);
    rc = pg_run(p, &pg_jobs_sql, S_INSERT, &a, NULL, NULL, UP_ERR_INVALID, who, "cannot insert a job", err);
    pg_args_fini(&a);
    free(steps);
    return rc;
}

/* Inside a transaction: insert asset s. UP_ERR_INVALID for a duplicate id. */
static int insert_asset(pg_store_t *p, const asset_t *s, up_error_t *err) {
    pg_args_t a = {0};
    pg_arg_text(&a, s->id);
    pg_arg_text(&a, s->owner);
    pg_arg_text(&a, s->key);
    pg_arg_text(&a, s->name);
    pg_arg_text(&a, s->format);
    pg_arg_int(&a, s->width);
    pg_arg_int(&a, s->height);
    pg_arg_int(&a, s->frames);
    pg_arg_int(&a, s->bytes);
    pg_arg_double(&a, s->created_at);
    pg_arg_double(&a, s->expires_at);
    char who[80];
    snprintf(who, sizeof who, "asset %s already exists", s->id);
    int rc = pg_run(p, &pg_jobs_sql, S_ASSET_INSERT, &a, NULL, NULL, UP_ERR_INVALID, who,
                    "cannot insert an asset", err);
    pg_args_fini(&a);
    return rc;
}

/* Inside a transaction: job's input as store.h says: the asset it names checked (FOR SHARE), or made. */
static int job_input(pg_store_t *p, const job_t *job, double created_at, double now, up_error_t *err) {
    if (!job->asset_id[0]) {
        asset_t s = {.frames = 1, .created_at = created_at, .expires_at = created_at};
        snprintf(s.id, sizeof s.id, "%s", job->id);
        snprintf(s.owner, sizeof s.owner, "%s", job->owner);
        snprintf(s.key, sizeof s.key, "%s", job->input_key);
        snprintf(s.name, sizeof s.name, "%s", job->input_name);
        snprintf(s.format, sizeof s.format, "%s", job->input_format);
        s.width = job->input_width;
        s.height = job->input_height;
        s.bytes = job->input_bytes;
        return insert_asset(p, &s, err);
    }
    pg_args_t a = {0};
    pg_arg_text(&a, job->asset_id);
    PGresult *r;
    int rc = run(p, S_ASSET_STATE, &a, &r, NULL, "cannot read an asset", err);
    pg_args_fini(&a);
    if (rc)
        return rc;
    if (PQntuples(r) == 0) {
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no asset %s", job->asset_id);
    } else if (strcmp(pg_str(r, 0, 0), job->owner) != 0) {
        /* another owner's asset is not told apart from one that does not exist */
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no asset %s", job->asset_id);
    } else if (!pg_str(r, 0, 1)[0] || !(pg_dbl(r, 0, 2) > now)) {
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "asset %s has expired", job->asset_id);
    }
    PQclear(r);
    return rc;
}

/* Inside a transaction: record idem's answer (answers older than IDEM_KEEP_S go first). */
static int idem_insert(pg_store_t *p, const store_idem_t *idem, double now, up_error_t *err) {
    pg_args_t a = {0};
    pg_arg_double(&a, now - IDEM_KEEP_S);
    int rc = run(p, S_IDEM_PURGE, &a, NULL, NULL, "cannot purge idempotency keys", err);
    pg_args_fini(&a);
    if (rc)
        return rc;
    pg_arg_text(&a, idem->scope);
    pg_arg_text(&a, idem->key);
    pg_arg_hex(&a, idem->hash, sizeof idem->hash);
    pg_arg_int(&a, idem->status);
    pg_arg_text(&a, idem->body ? idem->body : "");
    pg_arg_text(&a, idem->job_id);
    pg_arg_double(&a, now);
    rc = pg_run(p, &pg_jobs_sql, S_IDEM_INSERT, &a, NULL, NULL, UP_ERR_CONFLICT,
                "that idempotency key is taken", "cannot record an idempotency key", err);
    pg_args_fini(&a);
    return rc;
}

int pg_jobs_submit(store_t *st, const job_t *jobs, int n, double period_start, const store_idem_t *idem,
                   store_charge_t *charge_out, up_error_t *err) {
    pg_store_t *p = pg_of(st);
    store_charge_t c = {.quota = -1, .used = 0, .credits = -1};
    long long need = 0;
    for (int i = 0; i < n; i++)
        need += jobs[i].credits; /* store.c checked that the sum fits */
    double now = now_s();
    int rc = pg_enter(p, err);
    if (!rc) {
        if (!(rc = pg_tx_begin(p, err))) {
            if (period_start >= 0)
                rc = pg_charge(p, jobs[0].owner, need, period_start, &c, err);
            if (!rc) { /* after the key row: the lock order is key row, then the owner's tags */
                pg_args_t a = {0};
                pg_arg_text(&a, jobs[0].owner);
                rc = run(p, S_FAIR_LOCK, &a, NULL, NULL, "cannot lock the owner's place in the queue", err);
                pg_args_fini(&a);
            }
            for (int i = 0; i < n && !rc; i++) {
                const job_t *job = &jobs[i];
                double created_at = job->created_at > 0 ? job->created_at : now;
                if (!(rc = insert_row(p, job, job->asset_id[0] ? job->asset_id : job->id, created_at, now,
                                      err)))
                    rc = job_input(p, job, created_at, now, err);
            }
            if (!rc && idem)
                rc = idem_insert(p, idem, now, err);
            if (!rc)
                rc = run(p, S_NOTIFY_NEW, NULL, NULL, NULL, "cannot notify the new jobs", err);
            rc = pg_tx_end(p, rc, err);
        }
        pg_leave(p);
    }
    if (charge_out)
        *charge_out = c;
    return rc;
}

int pg_idem_get(store_t *st, const char *scope, const char *key, store_idem_t *out, up_error_t *err) {
    pg_store_t *p = pg_of(st);
    int rc = pg_enter(p, err);
    if (rc)
        return rc;
    pg_args_t a = {0};
    pg_arg_text(&a, scope);
    pg_arg_text(&a, key);
    pg_arg_double(&a, now_s() - IDEM_KEEP_S);
    PGresult *r;
    rc = run(p, S_IDEM_GET, &a, &r, NULL, "cannot read an idempotency key", err);
    pg_args_fini(&a);
    pg_leave(p);
    if (rc)
        return rc;
    if (PQntuples(r) == 0) {
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no idempotency key '%s'", key);
    } else {
        snprintf(out->scope, sizeof out->scope, "%s", scope);
        snprintf(out->key, sizeof out->key, "%s", key);
        pg_unhex(out->hash, sizeof out->hash, r, 0, 0);
        out->status = (int)pg_ll(r, 0, 1);
        out->body = xstrdup(pg_str(r, 0, 2));
        pg_copy(out->job_id, sizeof out->job_id, r, 0, 3);
        out->created_at = pg_dbl(r, 0, 4);
    }
    PQclear(r);
    return rc;
}

/* ---- job transitions ----------------------------------------------------------- */

/* Inside a transaction: the job with this seq into *out. */
static int read_seq(pg_store_t *p, long long seq, job_t *out, const char *what, up_error_t *err) {
    pg_args_t a = {0};
    pg_arg_int(&a, seq);
    PGresult *r;
    int rc = run(p, S_GET_SEQ, &a, &r, NULL, what, err);
    pg_args_fini(&a);
    if (rc)
        return rc;
    if (PQntuples(r) == 1)
        read_row(r, 0, out);
    else
        rc = up_error_set(err, UP_ERR_IO, 0, "job store: %s: job row %lld is gone", what, seq);
    PQclear(r);
    return rc;
}

int pg_job_claim(store_t *st, const char *worker, double lease_s, const char *models, job_t *out,
                 up_error_t *err) {
    pg_store_t *p = pg_of(st);
    int rc = pg_enter(p, err);
    if (rc)
        return rc;
    pg_args_t a = {0};
    pg_arg_double(&a, now_s());
    pg_arg_text(&a, worker);
    pg_arg_double(&a, lease_s);
    pg_arg_text(&a, models);
    PGresult *r;
    rc = run(p, S_CLAIM, &a, &r, NULL, "cannot claim a job", err);
    pg_args_fini(&a);
    pg_leave(p);
    if (rc)
        return rc;
    if (PQntuples(r) == 1)
        read_row(r, 0, out);
    else
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no queued job");
    PQclear(r);
    return rc;
}

/* Most writes: one statement on one job, under its rule (rules.h: from which statuses, refunded from which).
 */
typedef struct transition {
    int stmt;                 /* S_* run when allowed */
    const store_rule_t *rule; /* store.c's, the same for every backend */
} transition_t;

/*
 * Run transition t on id, as sqlite_jobs.c's transition: the row locked
 * and its state checked, then the statement with a's parameters ($1 = id,
 * $2 = now, the rest the caller's; a is finished here). *cancel gets
 * cancel_requested as it was before.
 */
static int transition(pg_store_t *p, const char *id, const store_fence_t *fence, const transition_t *t,
                      pg_args_t *a, int *cancel, up_error_t *err) {
    job_state_t js;
    int rc = pg_enter(p, err);
    if (rc)
        goto out;
    if ((rc = pg_tx_begin(p, err)))
        goto leave;
    if ((rc = job_state(p, id, &js, err)))
        goto end;
    if (cancel)
        *cancel = js.cancel;
    if ((rc = check_fence(id, &js, fence, err)))
        goto end;
    if (!(t->rule->allowed & STORE_BIT(js.status))) {
        rc = up_error_set(err, UP_ERR_INVALID, 0, "job %s is %s: cannot %s it", id,
                          job_status_name(js.status), t->rule->what);
        goto end;
    }
    if ((rc = run(p, t->stmt, a, NULL, NULL, t->rule->what, err)))
        goto end;
    if (t->rule->refund_from & STORE_BIT(js.status))
        rc = pg_refund(p, id, err);
end:
    rc = pg_tx_end(p, rc, err);
leave:
    pg_leave(p);
out:
    pg_args_fini(a);
    return rc;
}

/* The arguments every transition starts with: $1 = id, $2 = now. */
static void transition_args(pg_args_t *a, const char *id) {
    a->n = 0;
    pg_arg_text(a, id);
    pg_arg_double(a, now_s());
}

int pg_job_start(store_t *st, const char *id, const store_fence_t *fence, int *cancel, up_error_t *err) {
    static const transition_t t = {S_START, &store_rule_start};
    pg_args_t a;
    transition_args(&a, id);
    int c = 0;
    int rc = transition(pg_of(st), id, fence, &t, &a, &c, err);
    if (cancel)
        *cancel = c;
    return rc;
}

int pg_job_progress(store_t *st, const char *id, const store_fence_t *fence, int progress, int *cancel,
                    up_error_t *err) {
    static const transition_t t = {S_PROGRESS, &store_rule_progress};
    pg_args_t a;
    transition_args(&a, id);
    pg_arg_int(&a, progress);
    int c = 0;
    int rc = transition(pg_of(st), id, fence, &t, &a, &c, err);
    if (cancel)
        *cancel = c;
    return rc;
}

int pg_job_heartbeat(store_t *st, const char *id, const store_fence_t *fence, int *cancel, up_error_t *err) {
    static const transition_t t = {S_HEARTBEAT, &store_rule_heartbeat};
    pg_args_t a;
    transition_args(&a, id);
    int c = 0;
    int rc = transition(pg_of(st), id, fence, &t, &a, &c, err);
    if (cancel)
        *cancel = c;
    return rc;
}

int pg_job_complete(store_t *st, const job_t *job, const store_fence_t *fence, double retention_s,
                    up_error_t *err) {
    static const transition_t t = {S_COMPLETE, &store_rule_complete};
    pg_args_t a;
    transition_args(&a, job->id);
    pg_arg_text(&a, job->result_key);
    pg_arg_text(&a, job->result_format);
    pg_arg_int(&a, job->output_width);
    pg_arg_int(&a, job->output_height);
    pg_arg_int(&a, job->result_bytes);
    pg_arg_double(&a, now_s() + retention_s);
    pg_arg_text(&a, job->report);
    return transition(pg_of(st), job->id, fence, &t, &a, NULL, err);
}

int pg_job_fail(store_t *st, const char *id, const store_fence_t *fence, const char *message,
                double retention_s, up_error_t *err) {
    static const transition_t t = {S_FAIL, &store_rule_fail};
    pg_args_t a;
    transition_args(&a, id);
    pg_arg_text(&a, message);
    pg_arg_double(&a, now_s() + retention_s);
    return transition(pg_of(st), id, fence, &t, &a, NULL, err);
}

int pg_job_cancel(store_t *st, const char *id, job_status_t *was, up_error_t *err) {
    pg_store_t *p = pg_of(st);
    job_state_t js;
    int rc = pg_enter(p, err);
    if (rc)
        return rc;
    if ((rc = pg_tx_begin(p, err)))
        goto leave;
    if ((rc = job_state(p, id, &js, err)))
        goto end;
    if (was)
        *was = js.status;
    pg_args_t a;
    transition_args(&a, id);
    if (js.status == JOB_STATUS_QUEUED) {
        if (!(rc = run(p, S_CANCEL_QUEUED, &a, NULL, NULL, "cannot cancel a job", err)))
            rc = pg_refund(p, id, err);
    } else if (js.status == JOB_STATUS_CLAIMED || js.status == JOB_STATUS_PROCESSING) {
        a.n = 1; /* id only */
        rc = run(p, S_CANCEL_REQUEST, &a, NULL, NULL, "cannot cancel a job", err);
    } else {
        rc = up_error_set(err, UP_ERR_INVALID, 0, "job %s is already %s", id, job_status_name(js.status));
    }
    a.n = 2;
    pg_args_fini(&a);
end:
    rc = pg_tx_end(p, rc, err);
leave:
    pg_leave(p);
    return rc;
}

int pg_job_cancelled(store_t *st, const char *id, const store_fence_t *fence, double retention_s,
                     up_error_t *err) {
    static const transition_t t = {S_CANCELLED, &store_rule_cancelled};
    pg_args_t a;
    transition_args(&a, id);
    pg_arg_double(&a, retention_s);
    return transition(pg_of(st), id, fence, &t, &a, NULL, err);
}

int pg_job_requeue(store_t *st, const char *id, const store_fence_t *fence, up_error_t *err) {
    static const transition_t t = {S_REQUEUE, &store_rule_requeue};
    pg_args_t a;
    transition_args(&a, id);
    a.n = 1; /* S_REQUEUE takes the id only */
    int rc = transition(pg_of(st), id, fence, &t, &a, NULL, err);
    /* claimable at once: the other processes' idle workers hear of it (after the commit) */
    if (rc == UP_OK) {
        pg_store_t *p = pg_of(st);
        if (pg_enter(p, NULL) == UP_OK) {
            run(p, S_NOTIFY_NEW, NULL, NULL, NULL, "cannot notify a requeued job", NULL);
            pg_leave(p);
        }
    }
    return rc;
}

/* Inside a transaction: rescue job seq (locked; its lease ended before now), then read it back into *out. */
static int rescue_one(pg_store_t *p, long long seq, double now, int max_attempts, double backoff_s,
                      double retention_s, job_t *out, up_error_t *err) {
    int rc = read_seq(p, seq, out, "cannot read a job to rescue", err);
    if (rc)
        return rc;
    int k = out->cancel_requested           ? S_RESCUE_CANCEL
            : out->attempts >= max_attempts ? S_RESCUE_FAIL
                                            : S_RESCUE_REQUEUE;
    /* the charge: given back when the job fails, or ends cancelled before it started */
    int give_back = k == S_RESCUE_FAIL || (k == S_RESCUE_CANCEL && out->status == JOB_STATUS_CLAIMED);
    pg_args_t a = {0};
    pg_arg_double(&a, now);
    pg_arg_int(&a, seq);
    pg_arg_double(&a, k == S_RESCUE_REQUEUE ? backoff_s : retention_s);
    rc = run(p, k, &a, NULL, NULL, "cannot rescue a job", err);
    pg_args_fini(&a);
    if (rc)
        return rc;
    if (give_back && (rc = pg_refund(p, out->id, err)))
        return rc;
    return read_seq(p, seq, out, "cannot read a rescued job", err);
}

int pg_jobs_rescue(store_t *st, int max_attempts, double backoff_s, double retention_s, job_t *jobs, int max,
                   int *n, up_error_t *err) {
    pg_store_t *p = pg_of(st);
    double now = now_s();
    int rc = pg_enter(p, err);
    if (rc)
        return rc;
    pg_args_t a = {0};
    pg_arg_double(&a, now);
    PGresult *r = NULL;
    int n_seq = 0;
    /* look first, without a transaction: cheap enough for every second */
    if ((rc = run(p, S_ANY_LAPSED, &a, &r, NULL, "cannot look for lost leases", err)) || PQntuples(r) == 0)
        goto leave;
    PQclear(r);
    r = NULL;
    if ((rc = pg_tx_begin(p, err)))
        goto leave;
    pg_arg_int(&a, max);
    if (!(rc = run(p, S_LAPSED, &a, &r, NULL, "cannot look for lost leases", err))) {
        n_seq = PQntuples(r) < max ? PQntuples(r) : max;
        for (int i = 0; i < n_seq && !rc; i++)
            rc = rescue_one(p, pg_ll(r, i, 0), now, max_attempts, backoff_s, retention_s, &jobs[i], err);
    }
    rc = pg_tx_end(p, rc, err);
leave:
    PQclear(r);
    pg_args_fini(&a);
    pg_leave(p);
    if (!rc)
        *n = n_seq;
    return rc;
}

static int plain_transition(store_t *st, const char *id, const transition_t *t, up_error_t *err) {
    pg_args_t a;
    transition_args(&a, id);
    a.n = 1; /* these statements take the id only */
    return transition(pg_of(st), id, NULL, t, &a, NULL, err);
}

int pg_job_downloaded(store_t *st, const char *id, up_error_t *err) {
    static const transition_t t = {S_DOWNLOADED, &store_rule_downloaded};
    return plain_transition(st, id, &t, err);
}

int pg_job_expire(store_t *st, const char *id, up_error_t *err) {
    static const transition_t t = {S_EXPIRE, &store_rule_expire};
    return plain_transition(st, id, &t, err);
}

/* ---- job reads ------------------------------------------------------------------ */

/* Run read k with a (finished here) on its own: *r the result, the lock taken and given back. */
static int read_stmt(pg_store_t *p, int k, pg_args_t *a, PGresult **r, const char *what, up_error_t *err) {
    *r = NULL;
    int rc = pg_enter(p, err);
    if (!rc) {
        rc = run(p, k, a, r, NULL, what, err);
        pg_leave(p);
    }
    if (a)
        pg_args_fini(a);
    return rc;
}

int pg_job_get(store_t *st, const char *id, job_t *out, up_error_t *err) {
    pg_args_t a = {0};
    pg_arg_text(&a, id);
    PGresult *r;
    int rc = read_stmt(pg_of(st), S_GET, &a, &r, "cannot read a job", err);
    if (rc)
        return rc;
    if (PQntuples(r) == 1)
        read_row(r, 0, out);
    else
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no job %s", id);
    PQclear(r);
    return rc;
}

/* Up to max rows of r into jobs[]; *n = count; r cleared. */
static void read_jobs(PGresult *r, job_t *jobs, int max, int *n) {
    int rows = PQntuples(r);
    for (int i = 0; i < rows && *n < max; i++)
        read_row(r, i, &jobs[(*n)++]);
    PQclear(r);
}

int pg_jobs_due(store_t *st, double now, job_t *jobs, int max, int *n, up_error_t *err) {
    pg_args_t a = {0};
    pg_arg_double(&a, now);
    pg_arg_int(&a, max);
    PGresult *r;
    int rc = read_stmt(pg_of(st), S_DUE, &a, &r, "cannot list expired jobs", err);
    if (!rc)
        read_jobs(r, jobs, max, n);
    return rc;
}

int pg_jobs_list(store_t *st, const store_job_filter_t *f, job_t *jobs, int max, int *n, up_error_t *err) {
    pg_args_t a = {0};
    pg_arg_text(&a, f->owner);
    pg_arg_int(&a, (long long)f->status_mask);
    if (f->model)
        pg_arg_text(&a, f->model);
    else
        pg_arg_null(&a);
    pg_arg_double(&a, f->before);
    pg_arg_double(&a, f->after);
    pg_arg_int(&a, f->below_seq > 0 ? f->below_seq : INT64_MAX);
    pg_arg_int(&a, max);
    PGresult *r;
    int rc = read_stmt(pg_of(st), S_LIST, &a, &r, "cannot list jobs", err);
    if (!rc)
        read_jobs(r, jobs, max, n);
    return rc;
}

int pg_job_counts(store_t *st, long long *counts, up_error_t *err) {
    PGresult *r;
    int rc = read_stmt(pg_of(st), S_COUNTS, NULL, &r, "cannot count jobs", err);
    if (rc)
        return rc;
    for (int i = 0; i < PQntuples(r); i++) {
        long long status = pg_ll(r, i, 0);
        if (status >= 0 && status < JOB_STATUS_COUNT)
            counts[status] = pg_ll(r, i, 1);
    }
    PQclear(r);
    return rc;
}

int pg_model_counts(store_t *st,
                    void (*fn)(const char *model, long long queued, long long running, void *ctx), void *ctx,
                    up_error_t *err) {
    PGresult *r;
    int rc = read_stmt(pg_of(st), S_MODEL_COUNTS, NULL, &r, "cannot count jobs by model", err);
    if (rc)
        return rc;
    char model[128];
    for (int i = 0; i < PQntuples(r); i++) {
        pg_copy(model, sizeof model, r, i, 0);
        fn(model, pg_ll(r, i, 1), pg_ll(r, i, 2), ctx);
    }
    PQclear(r);
    return rc;
}

int pg_job_queue_position(store_t *st, const char *id, int *position, double *mpx_ahead, up_error_t *err) {
    pg_args_t a = {0};
    pg_arg_text(&a, id);
    pg_arg_double(&a, now_s());
    PGresult *r;
    int rc = read_stmt(pg_of(st), S_QUEUE_POSITION, &a, &r, "cannot find a job's place in the queue", err);
    if (rc)
        return rc;
    if (PQntuples(r) == 1) {
        long long pos = pg_ll(r, 0, 0);
        *position = pos > INT32_MAX ? INT32_MAX : (int)pos;
        *mpx_ahead = pos > 0 ? pg_dbl(r, 0, 1) : 0;
    } else {
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no job %s", id);
    }
    PQclear(r);
    return rc;
}

int pg_model_rate(store_t *st, const char *model, int last_n, double *seconds_per_mpx, int *n,
                  up_error_t *err) {
    pg_args_t a = {0};
    pg_arg_text(&a, model);
    pg_arg_int(&a, last_n);
    PGresult *r;
    int rc = read_stmt(pg_of(st), S_MODEL_RATE, &a, &r, "cannot measure a model's rate", err);
    if (rc)
        return rc;
    if (PQntuples(r) == 1) {
        *n = (int)pg_ll(r, 0, 0);
        double seconds = pg_dbl(r, 0, 1), mpx = pg_dbl(r, 0, 2);
        *seconds_per_mpx = *n > 0 && mpx > 0 ? seconds / mpx : 0;
    }
    PQclear(r);
    return rc;
}

int pg_blobs_referenced(store_t *st, int (*fn)(const char *key, void *ctx), void *ctx, up_error_t *err) {
    PGresult *r;
    /* one statement: one snapshot of both tables; fn runs with the lock given back */
    int rc = read_stmt(pg_of(st), S_BLOB_KEYS, NULL, &r, "cannot read the rows' blob keys", err);
    if (rc)
        return rc;
    char key[256];
    for (int i = 0; i < PQntuples(r); i++) {
        pg_copy(key, sizeof key, r, i, 0);
        if (key[0] && fn(key, ctx))
            break;
    }
    PQclear(r);
    return UP_OK;
}

/* ---- assets --------------------------------------------------------------------- */

int pg_asset_insert(store_t *st, const asset_t *s, up_error_t *err) {
    pg_store_t *p = pg_of(st);
    asset_t row = *s;
    if (!(row.created_at > 0))
        row.created_at = now_s();
    int rc = pg_enter(p, err);
    if (rc)
        return rc;
    rc = insert_asset(p, &row, err); /* one statement: its own transaction */
    pg_leave(p);
    return rc;
}

int pg_asset_get(store_t *st, const char *id, asset_t *out, up_error_t *err) {
    pg_args_t a = {0};
    pg_arg_text(&a, id);
    PGresult *r;
    int rc = read_stmt(pg_of(st), S_ASSET_GET, &a, &r, "cannot read an asset", err);
    if (rc)
        return rc;
    if (PQntuples(r) == 1)
        read_asset(r, 0, out);
    else
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no asset %s", id);
    PQclear(r);
    return rc;
}

/* Inside a transaction: asset id (locked already) into *out if it is due now, in a new snapshot; *due. */
static int recheck_due(pg_store_t *p, const char *id, double now, asset_t *out, int *due, up_error_t *err) {
    pg_args_t a = {0};
    pg_arg_double(&a, now);
    pg_arg_text(&a, id);
    PGresult *r;
    int rc = run(p, S_ASSET_DUE, &a, &r, NULL, "cannot list the assets due", err);
    pg_args_fini(&a);
    if (rc)
        return rc;
    *due = PQntuples(r) == 1;
    if (*due)
        read_asset(r, 0, out);
    PQclear(r);
    return UP_OK;
}

int pg_assets_due(store_t *st, double now, asset_t *out, int max, int *n, up_error_t *err) {
    pg_store_t *p = pg_of(st);
    int rc = pg_enter(p, err);
    if (rc)
        return rc;
    if ((rc = pg_tx_begin(p, err))) {
        pg_leave(p);
        return rc;
    }
    pg_args_t a = {0};
    pg_arg_double(&a, now);
    pg_arg_int(&a, max);
    PGresult *r = NULL;
    rc = run(p, S_ASSETS_LOCK, &a, &r, NULL, "cannot list the assets due", err);
    pg_args_fini(&a);
    for (int i = 0; !rc && i < PQntuples(r) && *n < max; i++) {
        int due = 0;
        if (!(rc = recheck_due(p, pg_str(r, i, 0), now, &out[*n], &due, err)) && due)
            (*n)++;
    }
    PQclear(r);
    if ((rc = pg_tx_end(p, rc, err)))
        *n = 0;
    pg_leave(p);
    return rc;
}

int pg_asset_due(store_t *st, const char *id, double now, asset_t *out, up_error_t *err) {
    pg_store_t *p = pg_of(st);
    int due = 0;
    int rc = pg_enter(p, err);
    if (rc)
        return rc;
    if (!(rc = pg_tx_begin(p, err))) {
        pg_args_t a = {0};
        pg_arg_text(&a, id);
        rc = run(p, S_ASSET_LOCK_ONE, &a, NULL, NULL, "cannot lock an asset", err);
        pg_args_fini(&a);
        if (!rc)
            rc = recheck_due(p, id, now, out, &due, err);
        rc = pg_tx_end(p, rc, err);
    }
    pg_leave(p);
    if (!rc && !due)
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "asset %s is not due for deletion", id);
    return rc;
}

int pg_asset_deleted(store_t *st, const char *id, up_error_t *err) {
    pg_store_t *p = pg_of(st);
    int rc = pg_enter(p, err);
    if (rc)
        return rc;
    pg_args_t a = {0};
    pg_arg_text(&a, id);
    long long changed = 0;
    rc = run(p, S_ASSET_DELETED, &a, NULL, &changed, "cannot record an asset's deletion", err);
    pg_args_fini(&a);
    pg_leave(p);
    if (!rc && changed == 0)
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no asset %s", id);
    return rc;
}
