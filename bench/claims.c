/*
 * claims.c - how many jobs a second the store hands out, with no
 * inference: N jobs of 10 owners (fair-queueing tags and all) are
 * submitted in batches of 16, then T threads (1 and 8, over up to 4 store
 * handles, as several worker processes would) each claim, start and
 * complete jobs until none is left. Prints claims per second (claim +
 * start + complete, each its own transaction, as a worker makes them) and
 * the submissions per second, on SQLite (a file in a temporary folder,
 * synchronous=FULL: every commit waits for an fsync, so the figure is the
 * disk's; UPRES_BENCH_DIR=/dev/shm shows the CPU's) and, when
 * UPRES_BENCH_PG names a PostgreSQL database, on PostgreSQL (a schema of
 * its own, dropped at the end).
 *
 * usage: [UPRES_BENCH_PG=postgresql://...] [UPRES_BENCH_DIR=DIR] bench_claims [N]
 */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "store/store.h"

#define MAX_HANDLES 4
#define N_OWNERS 10

typedef struct worker {
    store_t *st;
    int ith;
    atomic_int *done;
    int n, failed;
} worker_t;

static void *claim_loop(void *arg) {
    worker_t *w = arg;
    char id[64];
    snprintf(id, sizeof id, "bench-worker-%d", w->ith);
    for (;;) {
        job_t j;
        up_error_t err;
        int rc = store_job_claim(w->st, id, 60, NULL, &j, &err);
        if (rc == UP_ERR_NOT_FOUND)
            break;
        if (rc) {
            w->failed++;
            break;
        }
        store_fence_t f = {id, j.attempts};
        snprintf(j.result_key, sizeof j.result_key, "results/%s.png", j.id);
        j.output_width = j.output_height = 64;
        if (store_job_start(w->st, j.id, &f, NULL, &err) || store_job_complete(w->st, &j, &f, 3600, &err)) {
            w->failed++;
            continue;
        }
        w->n++;
    }
    return NULL;
}

/* Submit n jobs; returns the seconds it took, or -1. */
static double submit_all(store_t *st, int n, int round) {
    double t0 = mono_s();
    job_t jobs[16];
    for (int done = 0; done < n;) {
        int k = n - done < 16 ? n - done : 16;
        int owner = (done / 16) % N_OWNERS;
        for (int i = 0; i < k; i++) {
            job_t *j = &jobs[i];
            memset(j, 0, sizeof *j);
            snprintf(j->id, sizeof j->id, "r%d-%d", round, done + i);
            snprintf(j->owner, sizeof j->owner, "owner-%d", owner);
            snprintf(j->model, sizeof j->model, "realesr-animevideov3");
            j->scale = 2;
            snprintf(j->input_key, sizeof j->input_key, "uploads/r%d-%d.png", round, done + i);
            snprintf(j->input_format, sizeof j->input_format, "png");
            j->input_width = j->input_height = 32;
            j->cost = 0.004;
            j->weight = 1 + owner % 3;
        }
        up_error_t err;
        if (store_jobs_submit(st, jobs, k, -1, NULL, NULL, &err)) {
            fprintf(stderr, "bench_claims: submit: %s\n", err.msg);
            return -1;
        }
        done += k;
    }
    return mono_s() - t0;
}

static int run(const char *backend, const char *url, int n) {
    static int round;
    for (int nth = 1; nth <= 8; nth *= 8) {
        int n_handles = nth < MAX_HANDLES ? nth : MAX_HANDLES;
        store_t *st[MAX_HANDLES] = {0};
        up_error_t err;
        for (int h = 0; h < n_handles; h++) {
            if (store_open_url(url, NULL, &st[h], &err)) {
                fprintf(stderr, "bench_claims: %s: %s\n", backend, err.msg);
                for (int k = 0; k < h; k++)
                    store_close(st[k]);
                return -1;
            }
        }
        double ts = submit_all(st[0], n, round++);
        if (ts < 0)
            return -1;
        worker_t w[8];
        pthread_t th[8];
        double t0 = mono_s();
        for (int i = 0; i < nth; i++) {
            w[i] = (worker_t){.st = st[i % n_handles], .ith = i};
            pthread_create(&th[i], NULL, claim_loop, &w[i]);
        }
        int total = 0, failed = 0;
        for (int i = 0; i < nth; i++) {
            pthread_join(th[i], NULL);
            total += w[i].n;
            failed += w[i].failed;
        }
        double t = mono_s() - t0;
        printf(
            "%-10s %d claimer%s over %d handle%s: %5d jobs in %6.2f s = %6.0f claims/s (claim+start+complete)"
            "%s; submitted at %.0f jobs/s\n",
            backend, nth, nth > 1 ? "s" : " ", n_handles, n_handles > 1 ? "s" : " ", total, t, total / t,
            failed ? " SOME FAILED" : "", n / ts);
        fflush(stdout);
        for (int h = 0; h < n_handles; h++)
            store_close(st[h]);
        if (total != n || failed)
            return -1;
    }
    return 0;
}

static void quiet(void *arg, const char *message) {
    (void)arg;
    (void)message;
}

static int pg_exec(const char *url, const char *sql) {
    PGconn *c = PQconnectdb(url);
    int ok = PQstatus(c) == CONNECTION_OK;
    if (ok) {
        PQsetNoticeProcessor(c, quiet, NULL);
        PGresult *r = PQexec(c, sql);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            fprintf(stderr, "bench_claims: %s: %s", sql, PQresultErrorMessage(r));
        PQclear(r);
    } else {
        fprintf(stderr, "bench_claims: %s", PQerrorMessage(c));
    }
    PQfinish(c);
    return ok ? 0 : -1;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 2000;
    if (n < 16)
        n = 16;
    log_set_level(LOG_WARN);
    int rc = 0;
    const char *base = getenv("UPRES_BENCH_DIR");
    char dir[400], url[1200], cmd[600];
    snprintf(dir, sizeof dir, "%s/upres-bench-claims-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(dir))
        return 1;
    snprintf(url, sizeof url, "sqlite://%s/upres.db", dir);
    rc |= run("sqlite", url, n);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {
    }
    const char *pg = getenv("UPRES_BENCH_PG");
    if (!pg || !*pg) {
        printf("postgresql: not run (set UPRES_BENCH_PG to a postgresql:// URL; see README, Benchmarks)\n");
        return rc ? 1 : 0;
    }
    char schema[64], sql[200];
    snprintf(schema, sizeof schema, "bench_claims_%d", (int)getpid());
    snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s", schema, schema);
    if (pg_exec(pg, sql))
        return 1;
    snprintf(url, sizeof url, "%s%coptions=-csearch_path%%3D%s", pg, strchr(pg, '?') ? '&' : '?', schema);
    rc |= run("postgresql", url, n);
    snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS %s CASCADE", schema);
    pg_exec(pg, sql);
    return rc ? 1 : 0;
}
