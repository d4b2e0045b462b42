/*
 * metrics.c - the catalogue of the process's metrics, their series, and the
 * text exposition (see metrics.h).
 *
 * DESIGN: a series is (metric, label value) in one fixed array under one
 * mutex. Events are rare (a few per job, one per HTTP request), so a lock
 * per event costs nothing measurable and keeps the render consistent (a
 * histogram's buckets, sum and count from one moment).
 */
#include "core/metrics.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "core/log.h"

typedef enum { COUNTER, HISTOGRAM } metric_type_t;

typedef struct metric_def {
    const char *name;
    metric_type_t type;
    const char *label; /* the label's name, or NULL */
    const char *help;
} metric_def_t;

static const metric_def_t catalogue[] = {
    {"upres_jobs_claimed_total", COUNTER, "model",
     "Jobs this process claimed (attempts, rescued ones again)"},
    {"upres_jobs_completed_total", COUNTER, "model", "Jobs this process completed"},
    {"upres_jobs_failed_total", COUNTER, "model", "Jobs that failed on this process"},
    {"upres_jobs_cancelled_total", COUNTER, "model", "Running jobs this process stopped on a cancel"},
    {"upres_jobs_requeued_total", COUNTER, "model",
     "Running jobs this process put back in the queue because it was stopping"},
    {"upres_output_megapixels_total", COUNTER, "model", "Megapixels of the results this process completed"},
    {"upres_job_seconds", HISTOGRAM, "model", "From claim to result of the jobs this process completed"},
    {"upres_queue_wait_seconds", HISTOGRAM, "model",
     "From submission to claim of the jobs this process claimed"},
    {"upres_claim_seconds", HISTOGRAM, NULL, "Time one claim takes in the database (found a job or not)"},
    {"upres_lease_rescues_total", COUNTER, NULL,
     "Jobs whose lease ran out (their worker died) that this process queued again or ended"},
    {"upres_http_requests_total", COUNTER, "code", "HTTP requests this process answered, by status code"},
};
enum { N_METRICS = sizeof catalogue / sizeof catalogue[0] };

static const double buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                 1,     2.5,    5,     10,   30,    60,   120, 300,  600};
enum { N_BUCKETS = sizeof buckets / sizeof buckets[0] };

typedef struct series {
    int metric;
    char label[64];
    double value;                         /* a counter's value; a histogram's sum */
    unsigned long long count;             /* a histogram's count */
    unsigned long long bucket[N_BUCKETS]; /* a histogram's observations <= buckets[i] (not cumulative) */
} series_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static series_t table[METRICS_MAX_SERIES];
static int n_series;
static int warned;

static int metric_index(const char *name, metric_type_t type) {
    for (int i = 0; i < N_METRICS; i++)
        if (!strcmp(catalogue[i].name, name)) {
            assert(catalogue[i].type == type);
            return i;
        }
    assert(!"metrics: a name not in the catalogue");
    return -1;
}

/* The series of metric m and label, made when new; NULL when the table is full. Under lock. */
static series_t *series_of(int m, const char *label) {
    for (int i = 0; i < n_series; i++)
        if (table[i].metric == m && !strcmp(table[i].label, label))
            return &table[i];
    if (n_series == METRICS_MAX_SERIES) {
        if (!warned++)
            log_warn("metrics: more than %d series; %s{%s} and later new ones are not counted",
                     METRICS_MAX_SERIES, catalogue[m].name, label);
        return NULL;
    }
    series_t *s = &table[n_series++];
    memset(s, 0, sizeof *s);
    s->metric = m;
    snprintf(s->label, sizeof s->label, "%s", label);
    return s;
}

void metrics_add(const char *name, const char *label, double v) {
    int m = metric_index(name, COUNTER);
    if (m < 0 || !(v >= 0))
        return;
    pthread_mutex_lock(&lock);
    series_t *s = series_of(m, label ? label : "");
    if (s)
        s->value += v;
    pthread_mutex_unlock(&lock);
}

void metrics_observe(const char *name, const char *label, double v) {
    int m = metric_index(name, HISTOGRAM);
    if (m < 0 || isnan(v))
        return;
    pthread_mutex_lock(&lock);
    series_t *s = series_of(m, label ? label : "");
    if (s) {
        s->value += v;
        s->count++;
        for (int b = 0; b < N_BUCKETS; b++)
            if (v <= buckets[b]) {
                s->bucket[b]++;
                break;
            }
    }
    pthread_mutex_unlock(&lock);
}

/* A label value as the format wants it: backslash, double quote and line feed escaped. */
static void put_label(FILE *f, const char *name, const char *value, const char *extra) {
    if (!name && !extra)
        return;
    fputc('{', f);
    if (name) {
        fprintf(f, "%s=\"", name);
        for (const char *p = value; *p; p++) {
            if (*p == '\\' || *p == '"')
                fputc('\\', f);
            if (*p == '\n')
                fputs("\\n", f);
            else
                fputc(*p, f);
        }
        fputc('"', f);
    }
    if (extra)
        fprintf(f, "%s%s", name ? "," : "", extra);
    fputc('}', f);
}

void metrics_gauge(FILE *f, int first, const char *name, const char *help, const char *label_name,
                   const char *label, double v) {
    if (first)
        fprintf(f, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
    fputs(name, f);
    put_label(f, label_name, label ? label : "", NULL);
    fprintf(f, " %.17g\n", v);
}

void metrics_render(FILE *f) {
    pthread_mutex_lock(&lock);
    for (int m = 0; m < N_METRICS; m++) {
        const metric_def_t *d = &catalogue[m];
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", d->name, d->help, d->name,
                d->type == COUNTER ? "counter" : "histogram");
        int seen = 0;
        for (int i = 0; i < n_series; i++) {
            const series_t *s = &table[i];
            if (s->metric != m)
                continue;
            seen = 1;
            if (d->type == COUNTER) {
                fputs(d->name, f);
                put_label(f, d->label, s->label, NULL);
                fprintf(f, " %.17g\n", s->value);
                continue;
            }
            unsigned long long cum = 0;
            char le[48];
            for (int b = 0; b <= N_BUCKETS; b++) {
                cum += b < N_BUCKETS ? s->bucket[b] : 0;
                if (b < N_BUCKETS)
                    snprintf(le, sizeof le, "le=\"%g\"", buckets[b]);
                else
                    snprintf(le, sizeof le, "le=\"+Inf\"");
                fprintf(f, "%s_bucket", d->name);
                put_label(f, d->label, s->label, le);
                fprintf(f, " %llu\n", b < N_BUCKETS ? cum : s->count);
            }
            fprintf(f, "%s_sum", d->name);
            put_label(f, d->label, s->label, NULL);
            fprintf(f, " %.17g\n%s_count", s->value, d->name);
            put_label(f, d->label, s->label, NULL);
            fprintf(f, " %llu\n", s->count);
        }
        if (!seen && !d->label && d->type == COUNTER)
            fprintf(f, "%s 0\n", d->name); /* a counter without labels exists from the start */
    }
    pthread_mutex_unlock(&lock);
}

void metrics_reset(void) {
    pthread_mutex_lock(&lock);
    n_series = 0;
    warned = 0;
    pthread_mutex_unlock(&lock);
}
