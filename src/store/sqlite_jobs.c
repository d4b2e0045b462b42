/*
 * sqlite_jobs.c - the SQLite store's jobs and their input assets
 * (store.h): submission, claims, the fenced transitions, rescue, retention
 * and the reads (a job, lists, counts, a queued job's place and a model's
 * measured rate). How claims, fences, charges and asset deletion stay exact
 * across threads and processes is sqlite.c's DESIGN; the charge and refund
 * themselves are sqlite_keys.c's.
 *
 * A job row holds its asset's id; every job read joins the asset (a LEFT
 * JOIN: a row whose asset is missing still reads, with an empty input) to
 * fill job_t's input_* fields, so the columns of both are qualified (j.,
 * a.) in every statement that reads them.
 */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/xmalloc.h"
#include "store/rules.h"
#include "store/sqlite_int.h"

#define IDEM_KEEP_S 86400.0 /* an Idempotency-Key's answer is replayed for 24 hours */

/* Every job read returns these columns in this order (see read_row), FROM JOBS_JOINED. */
#define JOB_COLUMNS                                                                                          \
    "j.seq, j.id, j.status, j.progress, j.attempts, j.cancel_requested, j.model, j.model_alias, j.scale,"    \
    " j.format, j.quality, j.tile, a.key, a.name, a.format, a.width, a.height, a.bytes,"                     \
    " j.result_key, j.result_format, j.output_width, j.output_height, j.result_bytes,"                       \
    " j.created_at, j.started_at, j.completed_at, j.expires_at, j.error, j.owner, j.tier, j.credits,"        \
    " j.refunded, j.keep_s, j.colour, j.worker, j.lease_s, j.lease_until, j.not_before, j.asset_id,"         \
    " j.steps, j.report, j.meta, j.priority, j.vtag"
#define JOBS_JOINED " FROM jobs j LEFT JOIN assets a ON a.id = j.asset_id"

/* A job's estimated output megapixels times 1e6, summed over job rows j with their assets a (a missing one:
 * 0). */
#define SQ_MPX(a, j)                                                                                         \
    "total(1.0 * coalesce(" a ".width, 0) * coalesce(" a ".height, 0) * max(" j ".scale, 1) * max(" j        \
    ".scale, 1))"

/*
 * The queue position's two ranges of jobs_fair (R_QUEUE_POSITION; x is
 * the job asked about, ?2 now): h, the claimable jobs of a higher
 * priority (with their assets b); q, x and the claimable jobs before it at
 * its own level (with their assets a).
 */
#define QP_HIGHER                                                                                            \
    " FROM jobs h INDEXED BY jobs_fair LEFT JOIN assets b ON b.id = h.asset_id"                              \
    " WHERE h.status = 0 AND h.priority > x.priority AND h.not_before <= ?2"
#define QP_LEVEL                                                                                             \
    " LEFT JOIN jobs q INDEXED BY jobs_fair ON x.status = 0 AND q.status = 0 AND q.priority = x.priority"    \
    " AND (q.vtag, q.seq) <= (x.vtag, x.seq) AND (q.not_before <= ?2 OR q.seq = x.seq)"                      \
    " LEFT JOIN assets a ON a.id = q.asset_id WHERE x.id = ?1 GROUP BY x.seq"

/* Every asset read returns these columns in this order (see read_asset), FROM assets a. */
#define ASSET_COLUMNS                                                                                        \
    "a.id, a.owner, a.key, a.name, a.format, a.width, a.height, a.frames, a.bytes, a.created_at, "           \
    "a.expires_at"

/* Status numbers are job_status_t: "IN (0, 1, 6)" is a live job (queued, processing, claimed). */
#define DUE_ASSETS                                                                                           \
    "SELECT " ASSET_COLUMNS " FROM assets a WHERE a.key <> '' AND a.expires_at <= ?1"                        \
    " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.asset_id = a.id AND j.status IN (0, 1, 6))"

/* Statements, prepared at open (sqlite.c) on the writer (wsql: q->jw) and the reader (rsql: q->jr). */
enum {
    S_INSERT,
    S_FAIR,        /* V and L of a new job (store.h "Order") */
    S_STATUS,      /* status, cancel_requested, attempts, worker of one id */
    S_NEXT_QUEUED, /* seq of the next claimable queued job (store.h "Order") */
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
    S_LAPSED, /* seqs of held jobs whose lease ran out */
    S_RESCUE_CANCEL,
    S_RESCUE_FAIL,
    S_RESCUE_REQUEUE,
    S_DOWNLOADED,
    S_EXPIRE,
    S_ASSET_INSERT,
    S_ASSET_STATE, /* owner, key, expires_at of one asset */
    S_ASSETS_DUE,
    S_ASSET_DUE,
    S_ASSET_DELETED,
    S_W_GET_SEQ, /* writer-side read of a full row by seq (claim) */
    S_IDEM_PURGE,
    S_IDEM_INSERT,
    N_WSTMT
};

enum {
    R_GET,
    R_DUE,
    R_COUNTS,
    R_MODEL_COUNTS,
    R_LIST,
    R_IDEM_GET,
    R_LAPSED, /* is there a held job whose lease ran out? */
    R_BLOB_KEYS,
    R_ASSET_GET,
    R_QUEUE_POSITION,
    R_MODEL_RATE,
    N_RSTMT
};

/* Status numbers are job_status_t: "IN (1, 6)" is a job a worker holds (processing, claimed). */
static const char *const wsql[N_WSTMT] = {
    /* steps '' (?15): the pipeline the settings describe, as the migration to version 6 made it */
    [S_INSERT] = "INSERT INTO jobs (id, status, progress, attempts, cancel_requested, model, scale,"
                 " format, quality, tile, created_at, model_alias, owner, tier, credits, keep_s, colour,"
                 " asset_id, steps, meta, priority, vtag)"
                 " VALUES (?1, 0, 0, 0, 0, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,"
                 " CASE WHEN ?15 <> '' THEN ?15 ELSE " SQ_DEFAULT_STEPS("?2", "?3", "?6", "?4",
                                                                        "?5") " END,"
                                                                              " ?16, ?17, ?18)",
    /*
     * ?1 = priority, ?2 = now, ?3 = owner: V (the level's next claim, else
     * the largest held tag, else 0) and L (the owner's largest queued tag
     * at the level, NULL = none); one probe each of jobs_fair,
     * jobs_queue (status IN (1, 6): the held jobs, a handful) and
     * jobs_owner_fair
     */
    [S_FAIR] =
        "SELECT coalesce((SELECT vtag FROM jobs INDEXED BY jobs_fair WHERE status = 0 AND priority = ?1"
        " AND not_before <= ?2"
        " ORDER BY priority DESC, vtag, seq LIMIT 1), (SELECT max(vtag) FROM jobs INDEXED BY jobs_queue"
        " WHERE status IN (1, 6)),"
        " 0), (SELECT max(vtag) FROM jobs WHERE status = 0 AND owner = ?3 AND priority = ?1)",
    [S_STATUS] = "SELECT status, cancel_requested, attempts, worker FROM jobs WHERE id = ?1",
    /*
     * INDEXED BY: without statistics the planner prefers jobs_queue's
     * status range and then sorts every queued job (a claim in O(queue));
     * jobs_fair is the claim's order, so its first entry is the answer.
     * ?2 = the models served, comma-separated, '' = any (store_job_claim)
     */
    [S_NEXT_QUEUED] = "SELECT seq FROM jobs INDEXED BY jobs_fair WHERE status = 0 AND not_before <= ?1"
                      " AND (?2 = '' OR instr(',' || ?2 || ',', ',' || model || ',') > 0)"
                      " ORDER BY priority DESC, vtag, seq LIMIT 1",
    [S_CLAIM] = "UPDATE jobs SET status = 6, attempts = attempts + 1, started_at = ?2, progress = 0,"
                " cancel_requested = 0, worker = ?3, lease_s = ?4, lease_until = ?2 + ?4, not_before = 0"
                " WHERE seq = ?1 AND status = 0",
    /* every write of the holder renews its lease (?2 = now); a job cancelled while claimed stays
     * claimed: store_job_cancelled then refunds it */
    [S_START] =
        "UPDATE jobs SET status = 1, lease_until = ?2 + lease_s WHERE id = ?1 AND cancel_requested = 0",
    [S_PROGRESS] = "UPDATE jobs SET progress = ?3, lease_until = ?2 + lease_s WHERE id = ?1",
    [S_HEARTBEAT] = "UPDATE jobs SET lease_until = ?2 + lease_s WHERE id = ?1",
    /* an ended job keeps its last worker (who ran it) but no lease */
    [S_COMPLETE] = "UPDATE jobs SET status = 2, progress = 100, result_key = ?3, result_format = ?4,"
                   " output_width = ?5, output_height = ?6, result_bytes = ?7, completed_at = ?2,"
                   " expires_at = max(?8, ?2 + keep_s), report = ?9, cancel_requested = 0, lease_until = 0"
                   " WHERE id = ?1",
    [S_FAIL] = "UPDATE jobs SET status = 3, error = ?3, completed_at = ?2, expires_at = ?4,"
               " cancel_requested = 0, lease_until = 0 WHERE id = ?1",
    /* nothing to keep (a one-shot input is due for deletion at once: store_assets_due) */
    [S_CANCEL_QUEUED] = "UPDATE jobs SET status = 4, completed_at = ?2, expires_at = ?2 WHERE id = ?1",
    [S_CANCEL_REQUEST] = "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1",
    [S_CANCELLED] = "UPDATE jobs SET status = 4, completed_at = ?2, expires_at = ?2 + ?3,"
                    " cancel_requested = 0, lease_until = 0 WHERE id = ?1",
    [S_REQUEUE] = "UPDATE jobs SET status = 0, progress = 0, started_at = 0, attempts = max(attempts - 1, 0),"
                  " cancel_requested = 0, worker = '', lease_until = 0, not_before = 0 WHERE id = ?1",
    /*
     * Rescue: ?1 = now. Each statement is masked by status and lease as the
     * finder is, so a job renewed in between (another connection cannot
     * write inside our BEGIN IMMEDIATE, but the rule costs nothing) is left.
     */
    [S_LAPSED] = "SELECT seq FROM jobs WHERE status IN (1, 6) AND lease_until < ?1 ORDER BY seq LIMIT ?2",
    [S_RESCUE_CANCEL] =
        "UPDATE jobs SET status = 4, completed_at = ?1, expires_at = ?1 + ?3, cancel_requested = 0,"
        " worker = '', lease_until = 0 WHERE seq = ?2 AND status IN (1, 6) AND lease_until < ?1",
    [S_RESCUE_FAIL] =
        "UPDATE jobs SET status = 3, completed_at = ?1, expires_at = ?1 + ?3, cancel_requested = 0,"
        " error = 'the worker running this job stopped (its lease ran out) ' || attempts || ' times',"
        " worker = '', lease_until = 0 WHERE seq = ?2 AND status IN (1, 6) AND lease_until < ?1",
    [S_RESCUE_REQUEUE] = "UPDATE jobs SET status = 0, progress = 0, started_at = 0, cancel_requested = 0,"
                         " worker = '', lease_until = 0, not_before = ?1 + ?3 * attempts"
                         " WHERE seq = ?2 AND status IN (1, 6) AND lease_until < ?1",
    [S_DOWNLOADED] = "UPDATE jobs SET status = 5, result_key = '' WHERE id = ?1",
    /* failed and cancelled jobs keep their status (and error): only a result expires */
    [S_EXPIRE] = "UPDATE jobs SET result_key = '', status = CASE WHEN status = 2 THEN 5 ELSE status END"
                 " WHERE id = ?1",
    [S_ASSET_INSERT] = "INSERT INTO assets (id, owner, key, name, format, width, height, frames, bytes,"
                       " created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    [S_ASSET_STATE] = "SELECT owner, key, expires_at FROM assets WHERE id = ?1",
    /* on the writer, in a transaction: see sqlite.c, DESIGN (Assets) */
    [S_ASSETS_DUE] = DUE_ASSETS " ORDER BY a.expires_at LIMIT ?2",
    [S_ASSET_DUE] = DUE_ASSETS " AND a.id = ?2",
    [S_ASSET_DELETED] = "UPDATE assets SET key = '' WHERE id = ?1",
    [S_W_GET_SEQ] = "SELECT " JOB_COLUMNS JOBS_JOINED " WHERE j.seq = ?1",
    [S_IDEM_PURGE] = "DELETE FROM idempotency WHERE created_at < ?1",
    [S_IDEM_INSERT] = "INSERT INTO idempotency (scope, key, request_hash, status, body, job_id, created_at)"
                      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
};

static const char *const rsql[N_RSTMT] = {
    [R_GET] = "SELECT " JOB_COLUMNS JOBS_JOINED " WHERE j.id = ?1",
    [R_DUE] = "SELECT " JOB_COLUMNS JOBS_JOINED " WHERE j.status IN (2, 3, 4) AND j.expires_at > 0"
              " AND j.expires_at <= ?1 AND j.result_key <> '' ORDER BY j.expires_at LIMIT ?2",
    [R_COUNTS] = "SELECT status, count(*) FROM jobs GROUP BY status",
    [R_MODEL_COUNTS] =
        "SELECT model, sum(status = 0), sum(status IN (1, 6)) FROM jobs WHERE status IN (0, 1, 6)"
        " GROUP BY model ORDER BY model",
    /*
     * One statement for every filter: a condition whose parameter says "no
     * bound" is true. The cursor is always bound (INT64_MAX for none) so
     * that jobs_owner(owner, seq) gives a range scan from it.
     */
    [R_LIST] = "SELECT " JOB_COLUMNS JOBS_JOINED " WHERE j.owner = ?1 AND j.seq < ?6"
               " AND (?2 = 0 OR ((1 << j.status) & ?2) != 0)"
               " AND (?3 IS NULL OR j.model = ?3)"
               " AND (?4 = 0 OR j.created_at < ?4)"
               " AND (?5 = 0 OR j.created_at > ?5)"
               " ORDER BY j.seq DESC LIMIT ?7",
    [R_IDEM_GET] = "SELECT request_hash, status, body, job_id, created_at FROM idempotency"
                   " WHERE scope = ?1 AND key = ?2 AND created_at >= ?3",
    [R_LAPSED] = "SELECT 1 FROM jobs WHERE status IN (1, 6) AND lease_until < ?1 LIMIT 1",
    /* one statement: one snapshot of both tables */
    [R_BLOB_KEYS] = "SELECT key FROM assets WHERE key <> ''"
                    " UNION ALL SELECT result_key FROM jobs WHERE result_key <> ''",
    [R_ASSET_GET] = "SELECT " ASSET_COLUMNS " FROM assets a WHERE a.id = ?1",
    /*
     * ?1 = id, ?2 = now. x is the job asked about; the jobs
     * S_NEXT_QUEUED takes before it (its order: priority descending, vtag,
     * seq) are two ranges of jobs_fair: h, every claimable job of a higher
     * priority, and q, x and the claimable jobs before it at its own level.
     * count(q.seq) counts x itself, so the sum is the position; a job not
     * queued is 0.
     */
    [R_QUEUE_POSITION] =
        "SELECT CASE WHEN x.status = 0 THEN count(q.seq) + (SELECT count(*)" QP_HIGHER
        ") ELSE 0 END, CASE WHEN x.status = 0 THEN (" SQ_MPX("a", "q") " + (SELECT " SQ_MPX("b", "h")
            QP_HIGHER ")) / 1e6 ELSE 0 END FROM jobs x" QP_LEVEL,
    /* ?1 = model, ?2 = last_n; the inner WHERE holds jobs_model_done's (SQ_DONE_WHERE) */
    [R_MODEL_RATE] =
        "SELECT count(*), total(completed_at - started_at),"
        " total(1.0 * output_width * output_height) / 1e6 FROM"
        " (SELECT completed_at, started_at, output_width, output_height FROM jobs"
        " WHERE model = ?1 AND " SQ_DONE_WHERE " AND started_at > 0 AND completed_at >= started_at"
        " AND output_width > 0 AND output_height > 0 ORDER BY completed_at DESC, seq DESC LIMIT ?2)",
};

const sq_sql_t sq_jobs_wsql = {wsql, N_WSTMT};
const sq_sql_t sq_jobs_rsql = {rsql, N_RSTMT};

static void read_row(sqlite3_stmt *s, job_t *j) {
    memset(j, 0, sizeof *j);
    int c = 0;
    j->seq = sqlite3_column_int64(s, c++);
    sq_copy_text(j->id, sizeof j->id, s, c++);
    j->status = (job_status_t)sqlite3_column_int(s, c++);
    j->progress = sqlite3_column_int(s, c++);
    j->attempts = sqlite3_column_int(s, c++);
    j->cancel_requested = sqlite3_column_int(s, c++);
    sq_copy_text(j->model, sizeof j->model, s, c++);
    sq_copy_text(j->model_alias, sizeof j->model_alias, s, c++);
    j->scale = sqlite3_column_int(s, c++);
    sq_copy_text(j->format, sizeof j->format, s, c++);
    j->quality = sqlite3_column_int(s, c++);
    j->tile = sqlite3_column_int(s, c++);
    sq_copy_text(j->input_key, sizeof j->input_key, s, c++);
    sq_copy_text(j->input_name, sizeof j->input_name, s, c++);
    sq_copy_text(j->input_format, sizeof j->input_format, s, c++);
    j->input_width = sqlite3_column_int(s, c++);
    j->input_height = sqlite3_column_int(s, c++);
    j->input_bytes = sqlite3_column_int64(s, c++);
    sq_copy_text(j->result_key, sizeof j->result_key, s, c++);
    sq_copy_text(j->result_format, sizeof j->result_format, s, c++);
    j->output_width = sqlite3_column_int(s, c++);
    j->output_height = sqlite3_column_int(s, c++);
    j->result_bytes = sqlite3_column_int64(s, c++);
    j->created_at = sqlite3_column_double(s, c++);
    j->started_at = sqlite3_column_double(s, c++);
    j->completed_at = sqlite3_column_double(s, c++);
    j->expires_at = sqlite3_column_double(s, c++);
    sq_copy_text(j->error, sizeof j->error, s, c++);
    sq_copy_text(j->owner, sizeof j->owner, s, c++);
    sq_copy_text(j->tier, sizeof j->tier, s, c++);
    j->credits = sqlite3_column_int64(s, c++);
    j->refunded = sqlite3_column_int(s, c++);
    j->keep_s = sqlite3_column_double(s, c++);
    sq_copy_text(j->colour, sizeof j->colour, s, c++);
    sq_copy_text(j->worker, sizeof j->worker, s, c++);
    j->lease_s = sqlite3_column_double(s, c++);
    j->lease_until = sqlite3_column_double(s, c++);
    j->not_before = sqlite3_column_double(s, c++);
    sq_copy_text(j->asset_id, sizeof j->asset_id, s, c++);
    sq_copy_text(j->steps, sizeof j->steps, s, c++);
    sq_copy_text(j->report, sizeof j->report, s, c++);
    sq_copy_text(j->meta, sizeof j->meta, s, c++);
    j->priority = sqlite3_column_int(s, c++);
    j->vtag = sqlite3_column_double(s, c++);
}

static void read_asset(sqlite3_stmt *s, asset_t *a) {
    memset(a, 0, sizeof *a);
    int c = 0;
    sq_copy_text(a->id, sizeof a->id, s, c++);
    sq_copy_text(a->owner, sizeof a->owner, s, c++);
    sq_copy_text(a->key, sizeof a->key, s, c++);
    sq_copy_text(a->name, sizeof a->name, s, c++);
    sq_copy_text(a->format, sizeof a->format, s, c++);
    a->width = sqlite3_column_int(s, c++);
    a->height = sqlite3_column_int(s, c++);
    a->frames = sqlite3_column_int(s, c++);
    a->bytes = sqlite3_column_int64(s, c++);
    a->created_at = sqlite3_column_double(s, c++);
    a->expires_at = sqlite3_column_double(s, c++);
}

/* What a write transaction reads of a job before it writes (S_STATUS). */
typedef struct job_state {
    job_status_t status;
    int cancel; /* cancel_requested */
    int attempts;
    char worker[128]; /* the current claim's worker id, "" = none */
} job_state_t;

/* Inside a write transaction: the state of id into *js, or UP_ERR_NOT_FOUND. */
static int job_state(sq_store_t *q, const char *id, job_state_t *js, up_error_t *err) {
    sqlite3_stmt *s = q->jw[S_STATUS];
    sq_bind_text(s, 1, id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        js->status = (job_status_t)sqlite3_column_int(s, 0);
        js->cancel = sqlite3_column_int(s, 1);
        js->attempts = sqlite3_column_int(s, 2);
        sq_copy_text(js->worker, sizeof js->worker, s, 3);
        sq_done(s);
        return UP_OK;
    }
    sq_done(s);
    if (rc == SQLITE_DONE)
        return up_error_set(err, UP_ERR_NOT_FOUND, 0, "no job %s", id);
    return sq_db_error(q->w, err, "cannot read a job");
}

/*
 * UP_ERR_CONFLICT unless fence (NULL: not fenced) is the job's current
 * claim. The message names both claims, for the log of the loser.
 */
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

/* Inside a write transaction: the fair-queueing tag of job, queued now (store.h "Order"). */
static int fair_tag(sq_store_t *q, const job_t *job, double now, double *vtag, up_error_t *err) {
    sqlite3_stmt *s = q->jw[S_FAIR];
    sqlite3_bind_int(s, 1, job->priority);
    sqlite3_bind_double(s, 2, now);
    sq_bind_text(s, 3, job->owner);
    int src = sqlite3_step(s);
    if (src == SQLITE_ROW) {
        double v = sqlite3_column_double(s, 0);
        double last = sqlite3_column_type(s, 1) == SQLITE_NULL ? v : sqlite3_column_double(s, 1);
        *vtag = store_fair_tag(v, last, job->cost, job->weight);
    }
    sq_done(s);
    return src == SQLITE_ROW ? UP_OK : sq_db_error(q->w, err, "cannot read the queue's virtual time");
}

/* Inside a write transaction: insert job, queued, made at created_at. UP_ERR_INVALID for a duplicate id. */
static int insert_row(sq_store_t *q, const job_t *job, const char *asset_id, double created_at, double now,
                      up_error_t *err) {
    double vtag = 0;
    int rc = fair_tag(q, job, now, &vtag, err);
    if (rc)
        return rc;
    sqlite3_stmt *s = q->jw[S_INSERT];
    sq_bind_text(s, 1, job->id);
    sq_bind_text(s, 2, job->model);
    sqlite3_bind_int(s, 3, job->scale);
    sq_bind_text(s, 4, job->format);
    sqlite3_bind_int(s, 5, job->quality);
    sqlite3_bind_int(s, 6, job->tile);
    sqlite3_bind_double(s, 7, created_at);
    sq_bind_text(s, 8, job->model_alias);
    sq_bind_text(s, 9, job->owner);
    sq_bind_text(s, 10, job->tier);
    sqlite3_bind_int64(s, 11, job->credits);
    sqlite3_bind_double(s, 12, job->keep_s > 0 ? job->keep_s : 0);
    sq_bind_text(s, 13, job->colour);
    sq_bind_text(s, 14, asset_id);
    sq_bind_text(s, 15, job->steps);
    sq_bind_text(s, 16, job->meta);
    sqlite3_bind_int(s, 17, job->priority);
    sqlite3_bind_double(s, 18, vtag);
    char who[80];
    snprintf(who, sizeof who, "job %s already exists", job->id);
    return sq_step_insert(q, s, UP_ERR_INVALID, who, "cannot insert a job", err);
}

/* Inside a write transaction: insert a. UP_ERR_INVALID for a duplicate id. */
static int insert_asset(sq_store_t *q, const asset_t *a, up_error_t *err) {
    sqlite3_stmt *s = q->jw[S_ASSET_INSERT];
    sq_bind_text(s, 1, a->id);
    sq_bind_text(s, 2, a->owner);
    sq_bind_text(s, 3, a->key);
    sq_bind_text(s, 4, a->name);
    sq_bind_text(s, 5, a->format);
    sqlite3_bind_int(s, 6, a->width);
    sqlite3_bind_int(s, 7, a->height);
    sqlite3_bind_int(s, 8, a->frames);
    sqlite3_bind_int64(s, 9, a->bytes);
    sqlite3_bind_double(s, 10, a->created_at);
    sqlite3_bind_double(s, 11, a->expires_at);
    char who[80];
    snprintf(who, sizeof who, "asset %s already exists", a->id);
    return sq_step_insert(q, s, UP_ERR_INVALID, who, "cannot insert an asset", err);
}

/*
 * Inside a write transaction: job's input as store.h says ("A job's
 * input"): the asset it names checked, or its one-shot asset made.
 */
static int job_input(sq_store_t *q, const job_t *job, double created_at, double now, up_error_t *err) {
    if (!job->asset_id[0]) {
        asset_t a = {.frames = 1, .created_at = created_at, .expires_at = created_at};
        snprintf(a.id, sizeof a.id, "%s", job->id);
        snprintf(a.owner, sizeof a.owner, "%s", job->owner);
        snprintf(a.key, sizeof a.key, "%s", job->input_key);
        snprintf(a.name, sizeof a.name, "%s", job->input_name);
        snprintf(a.format, sizeof a.format, "%s", job->input_format);
        a.width = job->input_width;
        a.height = job->input_height;
        a.bytes = job->input_bytes;
        return insert_asset(q, &a, err);
    }
    sqlite3_stmt *s = q->jw[S_ASSET_STATE];
    sq_bind_text(s, 1, job->asset_id);
    int src = sqlite3_step(s), rc = UP_OK;
    if (src == SQLITE_ROW) {
        const char *owner = (const char *)sqlite3_column_text(s, 0);
        const char *key = (const char *)sqlite3_column_text(s, 1);
        double expires_at = sqlite3_column_double(s, 2);
        /* another owner's asset is not told apart from one that does not exist */
        if (!owner || strcmp(owner, job->owner) != 0)
            rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no asset %s", job->asset_id);
        else if (!key || !*key || !(expires_at > now))
            rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "asset %s has expired", job->asset_id);
    } else if (src == SQLITE_DONE) {
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no asset %s", job->asset_id);
    } else {
        rc = sq_db_error(q->w, err, "cannot read an asset");
    }
    sq_done(s);
    return rc;
}

/* Inside a write transaction: record idem's answer (answers older than IDEM_KEEP_S go first). */
static int idem_insert(sq_store_t *q, const store_idem_t *idem, double now, up_error_t *err) {
    sqlite3_bind_double(q->jw[S_IDEM_PURGE], 1, now - IDEM_KEEP_S);
    int rc = sq_exec(q, q->jw[S_IDEM_PURGE], "cannot purge idempotency keys", err);
    if (rc)
        return rc;
    sqlite3_stmt *s = q->jw[S_IDEM_INSERT];
    sq_bind_text(s, 1, idem->scope);
    sq_bind_text(s, 2, idem->key);
    sqlite3_bind_blob(s, 3, idem->hash, sizeof idem->hash, SQLITE_STATIC);
    sqlite3_bind_int(s, 4, idem->status);
    sq_bind_text(s, 5, idem->body ? idem->body : "");
    sq_bind_text(s, 6, idem->job_id);
    sqlite3_bind_double(s, 7, now);
    return sq_step_insert(q, s, UP_ERR_CONFLICT, "that idempotency key is taken",
                          "cannot record an idempotency key", err);
}

int sq_jobs_submit(store_t *st, const job_t *jobs, int n, double period_start, const store_idem_t *idem,
                   store_charge_t *charge_out, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    store_charge_t c = {.quota = -1, .used = 0, .credits = -1};
    long long need = 0;
    for (int i = 0; i < n; i++)
        need += jobs[i].credits; /* store.c checked that the sum fits */
    double now = now_s();
    pthread_mutex_lock(&q->wmu);
    int rc = sq_tx_begin(q, err);
    if (!rc) {
        if (period_start >= 0)
            rc = sq_charge(q, jobs[0].owner, need, period_start, &c, err);
        for (int i = 0; i < n && !rc; i++) {
            const job_t *job = &jobs[i];
            double created_at = job->created_at > 0 ? job->created_at : now;
            if (!(rc = insert_row(q, job, job->asset_id[0] ? job->asset_id : job->id, created_at, now, err)))
                rc = job_input(q, job, created_at, now, err);
        }
        if (!rc && idem)
            rc = idem_insert(q, idem, now, err);
        rc = sq_tx_end(q, rc, err);
    }
    pthread_mutex_unlock(&q->wmu);
    if (charge_out)
        *charge_out = c;
    return rc;
}

int sq_idem_get(store_t *st, const char *scope, const char *key, store_idem_t *out, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    pthread_mutex_lock(&q->rmu);
    sqlite3_stmt *s = q->jr[R_IDEM_GET];
    sq_bind_text(s, 1, scope);
    sq_bind_text(s, 2, key);
    sqlite3_bind_double(s, 3, now_s() - IDEM_KEEP_S);
    int src = sqlite3_step(s), rc = UP_OK;
    if (src == SQLITE_ROW) {
        snprintf(out->scope, sizeof out->scope, "%s", scope);
        snprintf(out->key, sizeof out->key, "%s", key);
        const void *h = sqlite3_column_blob(s, 0);
        if (h && sqlite3_column_bytes(s, 0) == (int)sizeof out->hash)
            memcpy(out->hash, h, sizeof out->hash);
        out->status = sqlite3_column_int(s, 1);
        const char *body = (const char *)sqlite3_column_text(s, 2);
        out->body = xstrdup(body ? body : "");
        sq_copy_text(out->job_id, sizeof out->job_id, s, 3);
        out->created_at = sqlite3_column_double(s, 4);
    } else if (src == SQLITE_DONE)
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no idempotency key '%s'", key);
    else
        rc = sq_db_error(q->r, err, "cannot read an idempotency key");
    sq_done(s);
    pthread_mutex_unlock(&q->rmu);
    return rc;
}

/* ---- job transitions ----------------------------------------------------------- */

/* Inside a write transaction: the job with this seq into *out. */
static int read_seq(sq_store_t *q, sqlite3_int64 seq, job_t *out, const char *what, up_error_t *err) {
    sqlite3_stmt *s = q->jw[S_W_GET_SEQ];
    sqlite3_bind_int64(s, 1, seq);
    int src = sqlite3_step(s);
    if (src == SQLITE_ROW)
        read_row(s, out);
    sq_done(s);
    return src == SQLITE_ROW ? UP_OK : sq_db_error(q->w, err, what);
}

int sq_job_claim(store_t *st, const char *worker, double lease_s, const char *models, job_t *out,
                 up_error_t *err) {
    sq_store_t *q = sq_of(st);
    double now = now_s();
    pthread_mutex_lock(&q->wmu);
    int rc = sq_tx_begin(q, err);
    if (rc)
        goto out;
    sqlite3_stmt *s = q->jw[S_NEXT_QUEUED];
    sqlite3_bind_double(s, 1, now);
    sq_bind_text(s, 2, models);
    int src = sqlite3_step(s);
    sqlite3_int64 seq = src == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    sq_done(s);
    if (src == SQLITE_DONE) {
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no queued job");
        goto end;
    }
    if (src != SQLITE_ROW) {
        rc = sq_db_error(q->w, err, "cannot find a queued job");
        goto end;
    }
    s = q->jw[S_CLAIM];
    sqlite3_bind_int64(s, 1, seq);
    sqlite3_bind_double(s, 2, now);
    sq_bind_text(s, 3, worker);
    sqlite3_bind_double(s, 4, lease_s);
    if ((rc = sq_exec(q, q->jw[S_CLAIM], "cannot claim a job", err)))
        goto end;
    rc = read_seq(q, seq, out, "cannot read the claimed job", err);
end:
    rc = sq_tx_end(q, rc, err);
out:
    pthread_mutex_unlock(&q->wmu);
    return rc;
}

/* Most writes: one statement on one job, under its rule (rules.h: from which statuses, refunded from which).
 */
typedef struct transition {
    int stmt;                 /* S_* run when allowed */
    const store_rule_t *rule; /* store.c's, the same for every backend */
} transition_t;

/*
 * Run transition t on id: UP_ERR_NOT_FOUND for an unknown id,
 * UP_ERR_CONFLICT when fence (NULL: not fenced) is not the job's current
 * claim, UP_ERR_INVALID (with *was set) when the job's status is not in
 * t->rule->allowed. The statement has ?1 = id and ?2 = now; the caller bound its
 * other parameters before the call (they are cleared on every path).
 * *cancel gets cancel_requested as it was before.
 */
static int transition(sq_store_t *q, const char *id, const store_fence_t *fence, const transition_t *t,
                      job_status_t *was, int *cancel, up_error_t *err) {
    sqlite3_stmt *s = q->jw[t->stmt];
    job_state_t js;
    int rc = sq_tx_begin(q, err);
    if (rc)
        goto fail;
    if ((rc = job_state(q, id, &js, err)))
        goto end;
    if (was)
        *was = js.status;
    if (cancel)
        *cancel = js.cancel;
    if ((rc = check_fence(id, &js, fence, err)))
        goto end;
    if (!(t->rule->allowed & STORE_BIT(js.status))) {
        rc = up_error_set(err, UP_ERR_INVALID, 0, "job %s is %s: cannot %s it", id,
                          job_status_name(js.status), t->rule->what);
        goto end;
    }
    sq_bind_text(s, 1, id);
    sqlite3_bind_double(s, 2, now_s());
    if ((rc = sq_exec(q, q->jw[t->stmt], t->rule->what, err)))
        goto end;
    if (t->rule->refund_from & STORE_BIT(js.status))
        rc = sq_refund(q, id, err);
end:
    rc = sq_tx_end(q, rc, err);
fail:
    sq_done(s);
    return rc;
}

int sq_job_start(store_t *st, const char *id, const store_fence_t *fence, int *cancel, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    static const transition_t t = {S_START, &store_rule_start};
    int c = 0;
    pthread_mutex_lock(&q->wmu);
    int rc = transition(q, id, fence, &t, NULL, &c, err);
    pthread_mutex_unlock(&q->wmu);
    if (cancel)
        *cancel = c;
    return rc;
}

int sq_job_progress(store_t *st, const char *id, const store_fence_t *fence, int progress, int *cancel,
                    up_error_t *err) {
    sq_store_t *q = sq_of(st);
    static const transition_t t = {S_PROGRESS, &store_rule_progress};
    int c = 0;
    pthread_mutex_lock(&q->wmu);
    sqlite3_bind_int(q->jw[S_PROGRESS], 3, progress);
    int rc = transition(q, id, fence, &t, NULL, &c, err);
    pthread_mutex_unlock(&q->wmu);
    if (cancel)
        *cancel = c;
    return rc;
}

int sq_job_heartbeat(store_t *st, const char *id, const store_fence_t *fence, int *cancel, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    static const transition_t t = {S_HEARTBEAT, &store_rule_heartbeat};
    int c = 0;
    pthread_mutex_lock(&q->wmu);
    int rc = transition(q, id, fence, &t, NULL, &c, err);
    pthread_mutex_unlock(&q->wmu);
    if (cancel)
        *cancel = c;
    return rc;
}

int sq_job_complete(store_t *st, const job_t *job, const store_fence_t *fence, double retention_s,
                    up_error_t *err) {
    sq_store_t *q = sq_of(st);
    static const transition_t t = {S_COMPLETE, &store_rule_complete};
    pthread_mutex_lock(&q->wmu);
    sqlite3_stmt *s = q->jw[S_COMPLETE];
    sq_bind_text(s, 3, job->result_key);
    sq_bind_text(s, 4, job->result_format);
    sqlite3_bind_int(s, 5, job->output_width);
    sqlite3_bind_int(s, 6, job->output_height);
    sqlite3_bind_int64(s, 7, job->result_bytes);
    sqlite3_bind_double(s, 8, now_s() + retention_s);
    sq_bind_text(s, 9, job->report);
    int rc = transition(q, job->id, fence, &t, NULL, NULL, err);
    pthread_mutex_unlock(&q->wmu);
    return rc;
}

int sq_job_fail(store_t *st, const char *id, const store_fence_t *fence, const char *message,
                double retention_s, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    static const transition_t t = {S_FAIL, &store_rule_fail};
    pthread_mutex_lock(&q->wmu);
    sqlite3_stmt *s = q->jw[S_FAIL];
    sq_bind_text(s, 3, message);
    sqlite3_bind_double(s, 4, now_s() + retention_s);
    int rc = transition(q, id, fence, &t, NULL, NULL, err);
    pthread_mutex_unlock(&q->wmu);
    return rc;
}

int sq_job_cancel(store_t *st, const char *id, job_status_t *was, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    job_state_t js;
    pthread_mutex_lock(&q->wmu);
    int rc = sq_tx_begin(q, err);
    if (rc)
        goto out;
    if ((rc = job_state(q, id, &js, err)))
        goto end;
    if (was)
        *was = js.status;
    if (js.status == JOB_STATUS_QUEUED) {
        sqlite3_stmt *s = q->jw[S_CANCEL_QUEUED];
        sq_bind_text(s, 1, id);
        sqlite3_bind_double(s, 2, now_s());
        if (!(rc = sq_exec(q, q->jw[S_CANCEL_QUEUED], "cannot cancel a job", err)))
            rc = sq_refund(q, id, err);
    } else if (js.status == JOB_STATUS_CLAIMED || js.status == JOB_STATUS_PROCESSING) {
        sqlite3_stmt *s = q->jw[S_CANCEL_REQUEST];
        sq_bind_text(s, 1, id);
        rc = sq_exec(q, q->jw[S_CANCEL_REQUEST], "cannot cancel a job", err);
    } else {
        rc = up_error_set(err, UP_ERR_INVALID, 0, "job %s is already %s", id, job_status_name(js.status));
    }
end:
    rc = sq_tx_end(q, rc, err);
out:
    pthread_mutex_unlock(&q->wmu);
    return rc;
}

int sq_job_cancelled(store_t *st, const char *id, const store_fence_t *fence, double retention_s,
                     up_error_t *err) {
    sq_store_t *q = sq_of(st);
    static const transition_t t = {S_CANCELLED, &store_rule_cancelled};
    pthread_mutex_lock(&q->wmu);
    sqlite3_bind_double(q->jw[S_CANCELLED], 3, retention_s);
    int rc = transition(q, id, fence, &t, NULL, NULL, err);
    pthread_mutex_unlock(&q->wmu);
    return rc;
}

int sq_job_requeue(store_t *st, const char *id, const store_fence_t *fence, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    static const transition_t t = {S_REQUEUE, &store_rule_requeue};
    pthread_mutex_lock(&q->wmu);
    int rc = transition(q, id, fence, &t, NULL, NULL, err);
    pthread_mutex_unlock(&q->wmu);
    return rc;
}

/* On the reader: 1 when some claimed or processing job's lease ended before now. */
static int any_lapsed(sq_store_t *q, double now, up_error_t *err) {
    pthread_mutex_lock(&q->rmu);
    sqlite3_stmt *s = q->jr[R_LAPSED];
    sqlite3_bind_double(s, 1, now);
    int src = sqlite3_step(s);
    int rc = src == SQLITE_ROW    ? 1
             : src == SQLITE_DONE ? 0
                                  : sq_db_error(q->r, err, "cannot look for lost leases");
    sq_done(s);
    pthread_mutex_unlock(&q->rmu);
    return rc;
}

/*
 * Inside a write transaction: rescue job seq (its lease ended before now)
 * as store.h says, and read it back into *out.
 */
static int rescue_one(sq_store_t *q, sqlite3_int64 seq, double now, int max_attempts, double backoff_s,
                      double retention_s, job_t *out, up_error_t *err) {
    int rc = read_seq(q, seq, out, "cannot read a job to rescue", err);
    if (rc)
        return rc;
    int k = out->cancel_requested           ? S_RESCUE_CANCEL
            : out->attempts >= max_attempts ? S_RESCUE_FAIL
                                            : S_RESCUE_REQUEUE;
    /* the charge: given back when the job fails, or ends cancelled before it started */
    int give_back = k == S_RESCUE_FAIL || (k == S_RESCUE_CANCEL && out->status == JOB_STATUS_CLAIMED);
    sqlite3_stmt *s = q->jw[k];
    sqlite3_bind_double(s, 1, now);
    sqlite3_bind_int64(s, 2, seq);
    sqlite3_bind_double(s, 3, k == S_RESCUE_REQUEUE ? backoff_s : retention_s);
    if ((rc = sq_exec(q, q->jw[k], "cannot rescue a job", err)))
        return rc;
    if (give_back && (rc = sq_refund(q, out->id, err)))
        return rc;
    return read_seq(q, seq, out, "cannot read a rescued job", err);
}

int sq_jobs_rescue(store_t *st, int max_attempts, double backoff_s, double retention_s, job_t *jobs, int max,
                   int *n, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    double now = now_s();
    int rc = any_lapsed(q, now, err);
    if (rc <= 0)
        return rc;
    sqlite3_int64 *seqs = xmalloc((size_t)max * sizeof *seqs);
    int n_seq = 0;
    pthread_mutex_lock(&q->wmu);
    if ((rc = sq_tx_begin(q, err)))
        goto out;
    sqlite3_stmt *s = q->jw[S_LAPSED];
    sqlite3_bind_double(s, 1, now);
    sqlite3_bind_int(s, 2, max);
    int src = SQLITE_DONE;
    while (n_seq < max && (src = sqlite3_step(s)) == SQLITE_ROW)
        seqs[n_seq++] = sqlite3_column_int64(s, 0);
    if (n_seq < max && src != SQLITE_DONE)
        rc = sq_db_error(q->w, err, "cannot look for lost leases");
    sq_done(s);
    for (int i = 0; i < n_seq && !rc; i++)
        rc = rescue_one(q, seqs[i], now, max_attempts, backoff_s, retention_s, &jobs[i], err);
    rc = sq_tx_end(q, rc, err);
out:
    pthread_mutex_unlock(&q->wmu);
    free(seqs);
    if (!rc)
        *n = n_seq;
    return rc;
}

int sq_job_downloaded(store_t *st, const char *id, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    static const transition_t t = {S_DOWNLOADED, &store_rule_downloaded};
    pthread_mutex_lock(&q->wmu);
    int rc = transition(q, id, NULL, &t, NULL, NULL, err);
    pthread_mutex_unlock(&q->wmu);
    return rc;
}

int sq_job_expire(store_t *st, const char *id, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    static const transition_t t = {S_EXPIRE, &store_rule_expire};
    pthread_mutex_lock(&q->wmu);
    int rc = transition(q, id, NULL, &t, NULL, NULL, err);
    pthread_mutex_unlock(&q->wmu);
    return rc;
}

/* ---- job reads ------------------------------------------------------------------ */

int sq_job_get(store_t *st, const char *id, job_t *out, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    pthread_mutex_lock(&q->rmu);
    sqlite3_stmt *s = q->jr[R_GET];
    sq_bind_text(s, 1, id);
    int src = sqlite3_step(s), rc = UP_OK;
    if (src == SQLITE_ROW)
        read_row(s, out);
    else if (src == SQLITE_DONE)
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no job %s", id);
    else
        rc = sq_db_error(q->r, err, "cannot read a job");
    sq_done(s);
    pthread_mutex_unlock(&q->rmu);
    return rc;
}

/* On the reader: up to max rows of reader statement k (bound by the caller) into jobs[]. */
static int read_jobs(sq_store_t *q, int k, job_t *jobs, int max, int *n, const char *what, up_error_t *err) {
    sqlite3_stmt *s = q->jr[k];
    int src = SQLITE_DONE, rc = UP_OK;
    while (*n < max && (src = sqlite3_step(s)) == SQLITE_ROW)
        read_row(s, &jobs[(*n)++]);
    if (*n < max && src != SQLITE_DONE)
        rc = sq_db_error(q->r, err, what);
    sq_done(s);
    return rc;
}

int sq_jobs_due(store_t *st, double now, job_t *jobs, int max, int *n, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    pthread_mutex_lock(&q->rmu);
    sqlite3_stmt *s = q->jr[R_DUE];
    sqlite3_bind_double(s, 1, now);
    sqlite3_bind_int(s, 2, max);
    int rc = read_jobs(q, R_DUE, jobs, max, n, "cannot list expired jobs", err);
    pthread_mutex_unlock(&q->rmu);
    return rc;
}

int sq_jobs_list(store_t *st, const store_job_filter_t *f, job_t *jobs, int max, int *n, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    pthread_mutex_lock(&q->rmu);
    sqlite3_stmt *s = q->jr[R_LIST];
    sq_bind_text(s, 1, f->owner);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)f->status_mask);
    if (f->model)
        sq_bind_text(s, 3, f->model);
    else
        sqlite3_bind_null(s, 3);
    sqlite3_bind_double(s, 4, f->before);
    sqlite3_bind_double(s, 5, f->after);
    sqlite3_bind_int64(s, 6, f->below_seq > 0 ? f->below_seq : INT64_MAX);
    sqlite3_bind_int(s, 7, max);
    int rc = read_jobs(q, R_LIST, jobs, max, n, "cannot list jobs", err);
    pthread_mutex_unlock(&q->rmu);
    return rc;
}

int sq_job_counts(store_t *st, long long *counts, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    pthread_mutex_lock(&q->rmu);
    sqlite3_stmt *s = q->jr[R_COUNTS];
    int src, rc = UP_OK;
    while ((src = sqlite3_step(s)) == SQLITE_ROW) {
        int status = sqlite3_column_int(s, 0);
        if (status >= 0 && status < JOB_STATUS_COUNT)
            counts[status] = sqlite3_column_int64(s, 1);
    }
    if (src != SQLITE_DONE)
        rc = sq_db_error(q->r, err, "cannot count jobs");
    sq_done(s);
    pthread_mutex_unlock(&q->rmu);
    return rc;
}

int sq_model_counts(store_t *st,
                    void (*fn)(const char *model, long long queued, long long running, void *ctx), void *ctx,
                    up_error_t *err) {
    sq_store_t *q = sq_of(st);
    pthread_mutex_lock(&q->rmu);
    sqlite3_stmt *s = q->jr[R_MODEL_COUNTS];
    int src, rc = UP_OK;
    char model[128];
    while ((src = sqlite3_step(s)) == SQLITE_ROW) {
        sq_copy_text(model, sizeof model, s, 0);
        fn(model, sqlite3_column_int64(s, 1), sqlite3_column_int64(s, 2), ctx);
    }
    if (src != SQLITE_DONE)
        rc = sq_db_error(q->r, err, "cannot count jobs by model");
    sq_done(s);
    pthread_mutex_unlock(&q->rmu);
    return rc;
}

int sq_job_queue_position(store_t *st, const char *id, int *position, double *mpx_ahead, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    pthread_mutex_lock(&q->rmu);
    sqlite3_stmt *s = q->jr[R_QUEUE_POSITION];
    sq_bind_text(s, 1, id);
    sqlite3_bind_double(s, 2, now_s());
    int src = sqlite3_step(s), rc = UP_OK;
    if (src == SQLITE_ROW) {
        sqlite3_int64 pos = sqlite3_column_int64(s, 0);
        *position = pos > INT32_MAX ? INT32_MAX : (int)pos;
        *mpx_ahead = pos > 0 ? sqlite3_column_double(s, 1) : 0;
    } else if (src == SQLITE_DONE) {
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no job %s", id);
    } else {
        rc = sq_db_error(q->r, err, "cannot find a job's place in the queue");
    }
    sq_done(s);
    pthread_mutex_unlock(&q->rmu);
    return rc;
}

int sq_model_rate(store_t *st, const char *model, int last_n, double *seconds_per_mpx, int *n,
                  up_error_t *err) {
    sq_store_t *q = sq_of(st);
    pthread_mutex_lock(&q->rmu);
    sqlite3_stmt *s = q->jr[R_MODEL_RATE];
    sq_bind_text(s, 1, model);
    sqlite3_bind_int(s, 2, last_n);
    int src = sqlite3_step(s), rc = UP_OK;
    if (src == SQLITE_ROW) {
        *n = sqlite3_column_int(s, 0);
        double seconds = sqlite3_column_double(s, 1), mpx = sqlite3_column_double(s, 2);
        *seconds_per_mpx = *n > 0 && mpx > 0 ? seconds / mpx : 0;
    } else {
        rc = sq_db_error(q->r, err, "cannot measure a model's rate");
    }
    sq_done(s);
    pthread_mutex_unlock(&q->rmu);
    return rc;
}

int sq_blobs_referenced(store_t *st, int (*fn)(const char *key, void *ctx), void *ctx, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    pthread_mutex_lock(&q->rmu);
    sqlite3_stmt *s = q->jr[R_BLOB_KEYS];
    int src, rc = UP_OK, stop = 0;
    char key[256];
    while (!stop && (src = sqlite3_step(s)) == SQLITE_ROW) {
        sq_copy_text(key, sizeof key, s, 0);
        if (key[0])
            stop = fn(key, ctx);
    }
    if (!stop && src != SQLITE_DONE)
        rc = sq_db_error(q->r, err, "cannot read the rows' blob keys");
    sq_done(s);
    pthread_mutex_unlock(&q->rmu);
    return rc;
}

/* ---- assets --------------------------------------------------------------------- */

int sq_asset_insert(store_t *st, const asset_t *a, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    asset_t row = *a;
    if (!(row.created_at > 0))
        row.created_at = now_s();
    pthread_mutex_lock(&q->wmu);
    int rc = sq_tx_begin(q, err);
    if (!rc)
        rc = sq_tx_end(q, insert_asset(q, &row, err), err);
    pthread_mutex_unlock(&q->wmu);
    return rc;
}

int sq_asset_get(store_t *st, const char *id, asset_t *out, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    pthread_mutex_lock(&q->rmu);
    sqlite3_stmt *s = q->jr[R_ASSET_GET];
    sq_bind_text(s, 1, id);
    int src = sqlite3_step(s), rc = UP_OK;
    if (src == SQLITE_ROW)
        read_asset(s, out);
    else if (src == SQLITE_DONE)
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no asset %s", id);
    else
        rc = sq_db_error(q->r, err, "cannot read an asset");
    sq_done(s);
    pthread_mutex_unlock(&q->rmu);
    return rc;
}

/*
 * On the writer, in a transaction of its own (sqlite.c, DESIGN: Assets):
 * up to max rows of the due statement k (?1 = now, bound here; the rest
 * bound by the caller) into out[]; *n = count.
 */
static int read_due(sq_store_t *q, int k, double now, asset_t *out, int max, int *n, up_error_t *err) {
    sqlite3_stmt *s = q->jw[k];
    int rc = sq_tx_begin(q, err);
    if (rc) {
        sq_done(s);
        return rc;
    }
    sqlite3_bind_double(s, 1, now);
    int src = SQLITE_DONE;
    while (*n < max && (src = sqlite3_step(s)) == SQLITE_ROW)
        read_asset(s, &out[(*n)++]);
    if (*n < max && src != SQLITE_DONE)
        rc = sq_db_error(q->w, err, "cannot list the assets due");
    sq_done(s);
    if ((rc = sq_tx_end(q, rc, err)))
        *n = 0;
    return rc;
}

int sq_assets_due(store_t *st, double now, asset_t *out, int max, int *n, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    pthread_mutex_lock(&q->wmu);
    sqlite3_bind_int(q->jw[S_ASSETS_DUE], 2, max);
    int rc = read_due(q, S_ASSETS_DUE, now, out, max, n, err);
    pthread_mutex_unlock(&q->wmu);
    return rc;
}

int sq_asset_due(store_t *st, const char *id, double now, asset_t *out, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    int n = 0;
    pthread_mutex_lock(&q->wmu);
    sq_bind_text(q->jw[S_ASSET_DUE], 2, id);
    int rc = read_due(q, S_ASSET_DUE, now, out, 1, &n, err);
    pthread_mutex_unlock(&q->wmu);
    if (!rc && n == 0)
        rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "asset %s is not due for deletion", id);
    return rc;
}

int sq_asset_deleted(store_t *st, const char *id, up_error_t *err) {
    sq_store_t *q = sq_of(st);
    pthread_mutex_lock(&q->wmu);
    int rc = sq_tx_begin(q, err);
    if (!rc) {
        sqlite3_stmt *s = q->jw[S_ASSET_DELETED];
        sq_bind_text(s, 1, id);
        if (!(rc = sq_exec(q, s, "cannot record an asset's deletion", err)) && sqlite3_changes(q->w) == 0)
            rc = up_error_set(err, UP_ERR_NOT_FOUND, 0, "no asset %s", id);
        rc = sq_tx_end(q, rc, err);
    }
    pthread_mutex_unlock(&q->wmu);
    return rc;
}
