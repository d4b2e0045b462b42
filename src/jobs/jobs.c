/*
 * jobs.c - the job engine's API (see jobs.h): assets, submission (checks,
 * tier, charge, Idempotency-Key, store, queue), the visibility rule, and
 * the thin read, list, cancel and subscribe calls the dialects share.
 *
 * Nothing here knows HTTP: a refusal is a jobs_refusal_t that a dialect
 * translates, and an answer is the dialect's own text (jobs_answer_fn),
 * built before anything is stored and kept with the jobs under an
 * Idempotency-Key so that a retry gets exactly the same bytes.
 */
#include "jobs/jobs.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/text.h"
#include "core/uuid.h"
#include "core/xmalloc.h"
#include "image/image.h"
#include "steps/steps.h"
#include "store/rules.h"

void jobs_init(jobs_t *jobs) {
    memset(jobs, 0, sizeof *jobs);
    tiers_default(&jobs->tiers);
    jobs->max_frames = 100;
    atomic_store(&jobs->stopping, 0);
}

void jobs_refusal_fini(jobs_refusal_t *r) {
    json_decref(r->extra);
    r->extra = NULL;
}

int jobs_refuse(jobs_refusal_t *r, unsigned status, const char *code, json_t *extra, const char *fmt, ...) {
    r->status = status;
    snprintf(r->code, sizeof r->code, "%s", code);
    char raw[sizeof r->message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    text_utf8_copy(r->message, sizeof r->message, raw, strlen(raw)); /* a cut falls on a character */
    json_decref(r->extra);
    r->extra = extra;
    r->retry_after = 0;
    return -1;
}

/* The store failed (logged here, once): 500. */
static int internal(jobs_refusal_t *r, const char *what, const up_error_t *err) {
    log_error("jobs: %s: %s", what, err->msg);
    return jobs_refuse(r, 500, "INTERNAL", NULL, "%s", what);
}

/* A file could not be stored (errno e): 507 when the disk is full, else 503 with a retry. */
static int storage_refused(jobs_refusal_t *r, const up_error_t *err, int e) {
    log_error("jobs: cannot store the image: %s", err->msg);
    if (e == ENOSPC || e == EDQUOT)
        return jobs_refuse(r, 507, "INSUFFICIENT_STORAGE", NULL,
                           "the server has no room to store this request now (%s): try again later",
                           strerror(e));
    jobs_refuse(r, 503, "STORAGE_UNAVAILABLE", NULL,
                "the server cannot store this request now (%s): try again later", strerror(e ? e : EIO));
    r->retry_after = 30;
    return -1;
}

static int stopping(jobs_t *jobs, jobs_refusal_t *r) {
    if (!atomic_load(&jobs->stopping))
        return 0;
    return jobs_refuse(r, 503, "UNAVAILABLE", NULL, "the server is shutting down: try again shortly");
}

/* ---- assets ------------------------------------------------------------------------- */

/* Check a new file (header, then every pixel in strips) into *info. 0, or -1 with *r. */
static int verify(jobs_t *jobs, const jobs_input_t *in, image_info_t *info, jobs_refusal_t *r) {
    image_limits_t lim = {.max_pixels = jobs->max_input_pixels, .max_frames = jobs->max_frames};
    up_error_t err;
    /* verified, not loaded: a cut or corrupt file is refused now while the memory stays
     * O(width x strip); the worker decodes the image once */
    int rc = in->path ? image_verify_file(in->path, &lim, info, &err)
                      : image_verify_buffer(in->data, in->size, &lim, info, &err);
    if (rc == UP_ERR_IMAGE || rc == UP_ERR_FORMAT || rc == UP_ERR_UNSUPPORTED)
        return jobs_refuse(r, in->from_url ? 422 : 415, "UNSUPPORTED_IMAGE", NULL,
                           "%s is not a supported image (PNG, JPEG, WebP, TIFF, ...): %s",
                           in->from_url ? "the content at image_url" : "the upload", err.msg);
    if (rc == UP_ERR_TOO_LARGE)
        return jobs_refuse(r, 422, "IMAGE_TOO_LARGE", NULL, "image too large: %s", err.msg);
    if (rc)
        return jobs_refuse(r, rc == UP_ERR_NOMEM ? 503 : 500, "INTERNAL", NULL, "cannot read the image: %s",
                           err.msg);
    return 0;
}

/* Put a new file (in->path moved, or in->data written) at blob key dest. 0, or -1 with *r. */
static int put_file(jobs_t *jobs, const jobs_input_t *in, const char *dest, jobs_refusal_t *r) {
    up_error_t err;
    int rc = in->path ? blob_put_file(jobs->blobs, dest, in->path, &err)
                      : blob_put(jobs->blobs, dest, in->data, in->size, &err);
    return rc ? storage_refused(r, &err, errno) : 0;
}

/* An asset's record from a checked file. */
static void asset_fill(asset_t *a, const jobs_input_t *in, const image_info_t *info, const char *owner) {
    snprintf(a->owner, sizeof a->owner, "%s", owner ? owner : "");
    const char *name = in->name && *in->name ? in->name : "image";
    text_utf8_copy(a->name, sizeof a->name, name, strlen(name));
    snprintf(a->format, sizeof a->format, "%s", info->format);
    a->width = info->width;
    a->height = info->height;
    a->frames = info->n_frames;
    a->bytes = (long long)in->size;
}

int jobs_asset_put(jobs_t *jobs, const jobs_input_t *in, const char *owner, double ttl_s, asset_t *out,
                   image_info_t *checked, jobs_refusal_t *r) {
    memset(out, 0, sizeof *out);
    image_info_t info;
    if (stopping(jobs, r) || verify(jobs, in, &info, r)) {
        if (in->path)
            unlink(in->path); /* taken over: a refused upload is nobody's */
        return -1;
    }
    uuid_v4(out->id);
    asset_fill(out, in, &info, owner);
    snprintf(out->key, sizeof out->key, "uploads/%s.%s", out->id, info.format[0] ? info.format : "bin");
    out->created_at = now_s();
    out->expires_at = out->created_at + ttl_s;
    if (put_file(jobs, in, out->key, r))
        return -1;
    up_error_t err;
    if (store_asset_insert(jobs->store, out, &err)) {
        blob_delete(jobs->blobs, out->key, NULL);
        return internal(r, "cannot record the upload", &err);
    }
    if (checked)
        *checked = info;
    log_info("jobs: asset %s stored (%s %dx%d, %d frames, %lld bytes, owner %s)", out->id, out->format,
             out->width, out->height, out->frames, out->bytes, out->owner[0] ? out->owner : "-");
    return 0;
}

/* The asset a submission reads: the caller's, still held. 0 with *a, or -1 (404, 500) with *r. */
static int asset_for(jobs_t *jobs, const char *id, const char *owner, asset_t *a, jobs_refusal_t *r) {
    up_error_t err;
    int rc = uuid_valid(id) ? store_asset_get(jobs->store, id, a, &err) : UP_ERR_NOT_FOUND;
    if (rc && rc != UP_ERR_NOT_FOUND)
        return internal(r, "cannot read the upload", &err);
    if (rc || strcmp(a->owner, owner)) /* another caller's upload is not found, never forbidden */
        return jobs_refuse(r, 404, "NOT_FOUND", NULL, "no upload with id '%s'", id);
    if (!a->key[0] || a->expires_at <= now_s())
        return jobs_refuse(r, 404, "NOT_FOUND", NULL, "the upload '%s' has expired: upload the file again",
                           id);
    return 0;
}

/* ---- submission --------------------------------------------------------------------- */

/*
 * One job's pipeline checked against its input (info) and the caller's
 * tier t (NULL: none): the steps parse, their models exist, the encode
 * format is settled (the input's own when writable, else png) and written
 * back, so the worker runs exactly what was checked; the output fits the
 * limits. The summary fields (model, scale, format, quality, output size)
 * follow from the steps. 0, or -1 with *r.
 */
static int check_pipeline(jobs_t *jobs, job_t *job, const image_info_t *info, const tier_t *t, double *mpx,
                          jobs_refusal_t *r) {
    steps_t st;
    up_error_t err;
    if (steps_parse_text(job->steps, &st, &err))
        return jobs_refuse(r, 400, "INVALID_REQUEST", NULL, "invalid pipeline: %s", err.msg);
    if (steps_resolve(&st, jobs->registry, &err)) /* the models exist; a native scale is settled */
        return jobs_refuse(r, 400, "INVALID_MODEL", NULL, "%s", err.msg);
    step_t *enc = st.step[st.n - 1].kind == STEP_ENCODE ? &st.step[st.n - 1] : NULL;
    if (!enc) {
        if (st.n == STEPS_MAX)
            return jobs_refuse(r, 400, "INVALID_REQUEST", NULL, "invalid pipeline: more than %d steps",
                               STEPS_MAX);
        enc = &st.step[st.n++];
        memset(enc, 0, sizeof *enc);
        enc->kind = STEP_ENCODE;
    }
    if (!enc->encode.format[0]) {
        snprintf(enc->encode.format, sizeof enc->encode.format, "%s",
                 image_format_default_output(info->format));
    }
    char *text = steps_text(&st);
    if (!text || strlen(text) >= sizeof job->steps) {
        free(text);
        return jobs_refuse(r, 400, "INVALID_REQUEST", NULL, "invalid pipeline: too long");
    }
    memcpy(job->steps, text, strlen(text) + 1);
    free(text);

    const step_t *up = steps_first_upscale(&st);
    if (up && !job->model[0])
        snprintf(job->model, sizeof job->model, "%s", up->upscale.model);
    if (up && !job->scale)
        job->scale = (int)(up->upscale.scale + 0.5);
    snprintf(job->format, sizeof job->format, "%s", enc->encode.format);
    job->quality = enc->encode.quality;

    int ow, oh;
    steps_output_size(&st, info->width, info->height, &ow, &oh);
    /* an animation kept as one (gif, webp) runs every frame it keeps: the worker counts them all */
    int frames = steps_frame_limit(&st);
    if (frames > info->n_frames)
        frames = info->n_frames > 0 ? info->n_frames : 1;
    unsigned long long pixels = (unsigned long long)ow * (unsigned long long)oh * (unsigned long long)frames;
    if (jobs->max_output_pixels && pixels > jobs->max_output_pixels)
        return jobs_refuse(r, 422, "IMAGE_TOO_LARGE", NULL,
                           "output too large: %dx%d becomes %dx%d%s, %llu pixels; the limit is %llu",
                           info->width, info->height, ow, oh, frames > 1 ? " per frame" : "", pixels,
                           jobs->max_output_pixels);
    *mpx = (double)pixels / 1e6;
    if (t && (ow > t->max_width || oh > t->max_height))
        return jobs_refuse(r, 400, "TIER_LIMIT_EXCEEDED", NULL,
                           "Output %dx%d exceeds the %s tier maximum of %dx%d (input %dx%d).", ow, oh,
                           t->name, t->max_width, t->max_height, info->width, info->height);
    return 0;
}

/*
 * The job's priority against the caller's tier t (NULL: no key, whose
 * highest is 0): any caller may lower its own jobs, down to
 * STORE_PRIORITY_MIN; raising them is the tier's (max_priority), or the
 * operator's (operator 1: any). 0, or -1 with *r (400).
 */
static int check_priority(const job_t *job, const tier_t *t, int operator, jobs_refusal_t * r) {
    if (job->priority < STORE_PRIORITY_MIN || job->priority > STORE_PRIORITY_MAX)
        return jobs_refuse(r, 400, "INVALID_REQUEST", NULL,
                           "invalid priority %d: a whole number from %d to %d", job->priority,
                           STORE_PRIORITY_MIN, STORE_PRIORITY_MAX);
    int max = operator? STORE_PRIORITY_MAX : t ? t->max_priority : 0;
    if (job->priority > max)
        return jobs_refuse(r, 400, "PRIORITY_NOT_ALLOWED", json_pack("{s:i}", "max_priority", max),
                           "priority %d is above the highest %s may ask for (%d)", job->priority,
                           t ? t->name : "a request without a key", max);
    return 0;
}

/*
 * The job's fair-queueing cost (store.h "Order"): its output megapixels
 * times the model's measured seconds per megapixel (store_model_rate over
 * its last JOBS_RATE_JOBS jobs; JOBS_DEFAULT_S_PER_MPX until it has one),
 * so that a key's share counts the work its jobs ask for, not their number.
 */
/* The last model a submission looked up (a batch asks once per model, not once per job). */
typedef struct rate_cache {
    char model[128];
    double s_per_mpx;
} rate_cache_t;

static double job_cost(jobs_t *jobs, const job_t *job, double mpx, rate_cache_t *c) {
    if (!c->model[0] || strcmp(c->model, job->model) != 0) {
        double spm = 0;
        int n = 0;
        up_error_t err;
        if (!job->model[0] || store_model_rate(jobs->store, job->model, JOBS_RATE_JOBS, &spm, &n, &err) ||
            n == 0 || !(spm > 0))
            spm = JOBS_DEFAULT_S_PER_MPX;
        snprintf(c->model, sizeof c->model, "%s", job->model);
        c->s_per_mpx = spm;
    }
    double cost = mpx * c->s_per_mpx;
    return cost > 1e-6 ? cost : 1e-6; /* a job is never free: a key's tags always move on */
}

/* The store refused the charge or the insert (rc): the refusal a client can act on. */
static int charge_refused(int rc, const store_charge_t *ch, long long needed, const up_error_t *err,
                          jobs_refusal_t *r) {
    if (rc == UP_ERR_QUOTA)
        return jobs_refuse(
            r, 402, "QUOTA_EXCEEDED",
            json_pack("{s:I,s:I}", "quota", (json_int_t)ch->quota, "used", (json_int_t)ch->used),
            "Quota exceeded: %lld of %lld credits used this period, this request needs %lld.", ch->used,
            ch->quota, needed);
    if (rc == UP_ERR_CREDITS)
        return jobs_refuse(
            r, 402, "INSUFFICIENT_CREDITS",
            json_pack("{s:I,s:I}", "credits", (json_int_t)ch->credits, "credits_needed", (json_int_t)needed),
            "Insufficient credits: %lld left, this request needs %lld.", ch->credits, needed);
    if (rc == UP_ERR_REVOKED || rc == UP_ERR_NOT_FOUND)
        return jobs_refuse(r, 401, "UNAUTHORIZED", NULL, "Invalid or revoked API key.");
    return internal(r, "cannot record the job", err);
}

/*
 * What job j reads: the new file (info, checked once for the submission)
 * or its asset, looked up for the caller. Fills j's input fields and
 * *info. 0, or -1 with *r.
 */
static int job_input(jobs_t *jobs, job_t *j, const jobs_input_t *upload, const image_info_t *checked,
                     const char *owner, image_info_t *info, jobs_refusal_t *r) {
    if (upload) {
        *info = *checked;
        /* the job's own one-shot asset, stored under its id (store.h) */
        j->asset_id[0] = '\0';
        snprintf(j->input_key, sizeof j->input_key, "uploads/%s.%s", j->id,
                 info->format[0] ? info->format : "bin");
        const char *name = upload->name && *upload->name ? upload->name : "image";
        text_utf8_copy(j->input_name, sizeof j->input_name, name, strlen(name));
        j->input_bytes = (long long)upload->size;
    } else {
        asset_t a;
        if (asset_for(jobs, j->asset_id, owner, &a, r))
            return -1;
        memset(info, 0, sizeof *info);
        snprintf(info->format, sizeof info->format, "%s", a.format);
        info->width = a.width;
        info->height = a.height;
        info->n_frames = a.frames;
        snprintf(j->input_key, sizeof j->input_key, "%s", a.key);
        snprintf(j->input_name, sizeof j->input_name, "%s", a.name);
        j->input_bytes = a.bytes;
    }
    snprintf(j->input_format, sizeof j->input_format, "%s", info->format);
    j->input_width = info->width;
    j->input_height = info->height;
    return 0;
}

int jobs_submit(jobs_t *jobs, jobs_submission_t *s, jobs_answer_t *a, jobs_refusal_t *r) {
    memset(a, 0, sizeof *a);
    const jobs_input_t *in = s->input.path || s->input.data ? &s->input : NULL; /* a new file, or assets */
    const char *owner = s->key ? s->key->id : "";
    int staged = in && in->path; /* a staged file still to remove when refused */
    if (stopping(jobs, r))
        goto refused;
    if (s->n < 1 || s->n > JOBS_BATCH_MAX || (in && s->n != 1)) {
        jobs_refuse(r, 400, "INVALID_REQUEST", NULL, "a submission is 1 to %d jobs (a new upload: one job)",
                    JOBS_BATCH_MAX);
        goto refused;
    }
    image_info_t checked = {0}; /* a new file is checked now, an asset was when it was put */
    if (in && verify(jobs, in, &checked, r))
        goto refused;
    const tier_t *t = NULL;
    if (s->key && !(t = tiers_find(&jobs->tiers, s->key->tier))) {
        log_error("jobs: key %s has tier '%s', which the tier table lacks", s->key->prefix, s->key->tier);
        jobs_refuse(r, 400, "INVALID_TIER", NULL, "this key's tier '%s' is not configured on this server",
                    s->key->tier);
        goto refused;
    }
    double now = (double)llround(now_s() * 1000.0) / 1000.0; /* shown to the millisecond: stored so */
    long long credits = 0;
    int frames = 1;
    rate_cache_t rates = {.s_per_mpx = 0};
    for (int i = 0; i < s->n; i++) {
        job_t *j = &s->jobs[i];
        image_info_t info;
        uuid_v4(j->id);
        double mpx = 0;
        if (job_input(jobs, j, in, &checked, owner, &info, r) || check_pipeline(jobs, j, &info, t, &mpx, r) ||
            check_priority(j, t, s->operator_priority, r))
            goto refused;
        j->cost = job_cost(jobs, j, mpx, &rates);
        j->weight = t ? t->weight : 1;
        if (info.n_frames > frames)
            frames = info.n_frames;
        j->status = JOB_STATUS_QUEUED;
        j->created_at = now;
        snprintf(j->owner, sizeof j->owner, "%s", owner);
        snprintf(j->tier, sizeof j->tier, "%s", t ? t->name : "");
        j->credits = t ? t->credits : 0;
        credits += j->credits;
    }
    char note[128] = "";
    if (frames > 1)
        snprintf(note, sizeof note, "the image has %d frames: only the first frame is upscaled", frames);
    staged = 0; /* from here the file is the blob store's (or gone) */
    if (in && put_file(jobs, in, s->jobs[0].input_key, r))
        return -1;

    /* the answer, before anything is stored: a job is stored only if its answer can be sent */
    unsigned status = 201;
    char *text = s->answer(s->answer_ctx, s->jobs, s->n, note[0] ? note : NULL, &status);
    if (!text) {
        log_error("jobs: job %s: its answer could not be encoded; nothing stored", s->jobs[0].id);
        jobs_refuse(r, 500, "INTERNAL", NULL, "cannot encode the answer: nothing was stored");
        goto unput;
    }
    store_idem_t idem = {.status = (int)status, .body = text};
    if (s->idem_key) {
        snprintf(idem.scope, sizeof idem.scope, "%s", owner);
        snprintf(idem.key, sizeof idem.key, "%s", s->idem_key);
        snprintf(idem.job_id, sizeof idem.job_id, "%s", s->jobs[0].id);
        memcpy(idem.hash, s->idem_hash, sizeof idem.hash);
    }
    store_charge_t ch = {0};
    up_error_t err = {0};
    /* a key's quota is per calendar month; a guest session's credits per UTC day, since any refresh */
    double period = !s->key         ? -1
                    : s->key->guest ? fmax(auth_day_start(now), s->key->reset_at)
                                    : auth_month_start(now);
    int rc = store_jobs_submit(jobs->store, s->jobs, s->n, period, s->idem_key ? &idem : NULL, &ch, &err);
    if (rc) {
        free(text);
        if (in)
            blob_delete(jobs->blobs, s->jobs[0].input_key, NULL);
        /* a concurrent request with this Idempotency-Key was stored first: its answer */
        if (rc == UP_ERR_CONFLICT && s->idem_key)
            return jobs_idem_find(jobs, owner, s->idem_key, s->idem_hash, a, r) == 1 ? 0 : -1;
        /* an asset that expired since it was read is the store's other NOT_FOUND */
        image_info_t info;
        for (int i = 0; rc == UP_ERR_NOT_FOUND && !in && i < s->n; i++)
            if (job_input(jobs, &s->jobs[i], NULL, NULL, owner, &info, r))
                return -1;
        return charge_refused(rc, &ch, credits, &err, r);
    }
    if (jobs->queue)
        queue_notify(jobs->queue);
    /* fair queueing: another key's new job may go ahead of jobs queued before it, so positions move */
    events_publish(jobs->events, EVENTS_QUEUE_MOVED);
    for (int i = 0; i < s->n; i++) {
        const job_t *j = &s->jobs[i];
        events_publish(jobs->events, j->id);
        log_info("jobs: job %s queued (%s x%d, %dx%d, key %s, %lld credits)", j->id, j->model, j->scale,
                 j->input_width, j->input_height, s->key ? s->key->prefix : "-", j->credits);
    }
    a->status = status;
    a->body = text;
    return 0;

unput:
    if (in)
        blob_delete(jobs->blobs, s->jobs[0].input_key, NULL);
    return -1;
refused:
    if (staged)
        unlink(in->path); /* taken over: a refused upload is nobody's */
    return -1;
}

int jobs_idem_find(jobs_t *jobs, const char *scope, const char *idem_key, const unsigned char hash[32],
                   jobs_answer_t *a, jobs_refusal_t *r) {
    memset(a, 0, sizeof *a);
    store_idem_t rec;
    up_error_t err;
    int rc = store_idem_get(jobs->store, scope, idem_key, &rec, &err);
    if (rc == UP_ERR_NOT_FOUND)
        return 0;
    if (rc)
        return internal(r, "cannot check the Idempotency-Key", &err);
    if (memcmp(hash, rec.hash, sizeof rec.hash)) {
        free(rec.body);
        return jobs_refuse(
            r, 422, "IDEMPOTENCY_KEY_REUSED", NULL,
            "this Idempotency-Key was used for a different request in the last 24 hours: send a new "
            "key for a new request");
    }
    a->status = (unsigned)rec.status;
    a->body = rec.body;
    a->replayed = 1;
    return 1;
}

/* ---- reading, listing, cancelling --------------------------------------------------- */

int jobs_access(const job_t *job, const api_key_t *caller, int owner_only, jobs_action_t action,
                jobs_refusal_t *r) {
    int mine = caller && job->owner[0] && !strcmp(job->owner, caller->id);
    int keyed = job->owner[0] != 0;
    /* another key's job is not found, never forbidden: ids leak nothing */
    if ((caller && keyed && !mine) || (owner_only && !mine))
        return jobs_refuse(r, 404, "NOT_FOUND", NULL, "Job not found.");
    if (action == JOBS_DESTROY && keyed && !caller)
        return jobs_refuse(
            r, 401, "UNAUTHORIZED", NULL,
            "this job was made with an API key: send that key (Authorization: Bearer upres_...) to "
            "cancel it or to download and delete its result");
    return 0;
}

int jobs_get(jobs_t *jobs, const char *id, const api_key_t *caller, int owner_only, jobs_action_t action,
             job_t *out, jobs_refusal_t *r) {
    up_error_t err;
    int rc = id && uuid_valid(id) ? store_job_get(jobs->store, id, out, &err) : UP_ERR_NOT_FOUND;
    if (rc == UP_ERR_NOT_FOUND)
        return jobs_refuse(r, 404, "NOT_FOUND", NULL, "Job not found.");
    if (rc)
        return internal(r, "cannot read the job", &err);
    return jobs_access(out, caller, owner_only, action, r);
}

int jobs_list(jobs_t *jobs, const store_job_filter_t *f, job_t *out, int max, int *n, jobs_refusal_t *r) {
    up_error_t err;
    if (store_jobs_list(jobs->store, f, out, max, n, &err))
        return internal(r, "cannot list the jobs", &err);
    return 0;
}

int jobs_cancel(jobs_t *jobs, const job_t *job, job_status_t *was, jobs_refusal_t *r) {
    up_error_t err;
    int rc = queue_job_cancel(jobs->queue, job->id, was, &err);
    if (rc == UP_ERR_INVALID)
        return jobs_refuse(r, 409, "JOB_FINISHED", NULL, "the job cannot be cancelled: it is already %s",
                           job_status_name(*was));
    if (rc == UP_ERR_NOT_FOUND)
        return jobs_refuse(r, 404, "NOT_FOUND", NULL, "Job not found.");
    if (rc)
        return internal(r, "cannot cancel the job", &err);
    return 0; /* published by the queue (queued) or the worker that stops it */
}

int jobs_downloaded(jobs_t *jobs, const char *id, jobs_refusal_t *r) {
    up_error_t err;
    if (queue_job_downloaded(jobs->queue, id, &err)) {
        log_warn("jobs: job %s downloaded, but: %s", id, err.msg);
        return jobs_refuse(r, 500, "INTERNAL", NULL, "cannot record the download");
    }
    events_publish(jobs->events, id);
    return 0;
}

int jobs_subscribe(jobs_t *jobs, const char *id, events_fn fn, void *ctx) {
    return jobs->events ? events_subscribe(jobs->events, id, fn, ctx) : -1;
}

void jobs_unsubscribe(jobs_t *jobs, int handle) {
    if (jobs->events)
        events_unsubscribe(jobs->events, handle);
}
