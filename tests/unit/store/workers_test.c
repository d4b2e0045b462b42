/*
 * workers_test.c - the workers registry and the claims filtered by model
 * (store.h "The workers registry", store_job_claim's models), on SQLite
 * and on PostgreSQL (backends.h).
 *
 * Registry: a row registered reads back field for field, from a second
 * handle too (another process); a second registration of a live name is
 * UP_ERR_CONFLICT and changes nothing; a heartbeat renews the time and
 * records the jobs and the state (NULL state kept); a lapsed row leaves the
 * live list, stays in the full one, and its name can be taken again; rows
 * lapsed a day ago are pruned at the next registration; remove, and the
 * refusals (unknown name, empty name, no slots, no lease).
 *
 * Claims: a claim that names models takes the oldest job of one of them,
 * skipping older jobs of other models; a name matches whole ("b" is not
 * "bb"); no match is UP_ERR_NOT_FOUND; NULL and "" take any model; a list
 * too long is refused.
 *
 * The schema version store_schema_version reports: SQLite 8, PostgreSQL 2.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "store/store.h"
#include "test.h"
#include "unit/store/backends.h"

#define WORKER "test-host:1:0:0000work"

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static void make_worker(store_worker_t *w, const char *name, int pid, const char *models, double lease_s) {
    memset(w, 0, sizeof *w);
    snprintf(w->name, sizeof w->name, "%s", name);
    snprintf(w->host, sizeof w->host, "host-%d", pid);
    w->pid = pid;
    snprintf(w->models, sizeof w->models, "%s", models);
    w->slots = 2;
    w->lease_s = lease_s;
    snprintf(w->state, sizeof w->state, "running");
}

/* The row called name in a list of n, or NULL. */
static const store_worker_t *find(const store_worker_t *v, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(v[i].name, name))
            return &v[i];
    return NULL;
}

static void test_register(void) {
    store_t *a = tb_open("reg"), *b = tb_open("reg");
    up_error_t err;
    store_worker_t w;
    double t0 = now_s();
    make_worker(&w, "w-one", 101, "realesr-animevideov3,realesrgan-x4plus", 30);
    CHECKF(store_worker_register(a, &w, &err) == 0, "%s", err.msg);
    store_worker_t *v = NULL;
    int n = -1;
    CHECK(store_workers_list(b, 0, &v, &n, &err) == 0 && n == 1);
    const store_worker_t *r = find(v, n, "w-one");
    CHECK(r && strcmp(r->host, "host-101") == 0 && r->pid == 101 && r->slots == 2 && r->lease_s == 30);
    CHECK(r && strcmp(r->models, "realesr-animevideov3,realesrgan-x4plus") == 0 && r->jobs[0] == '\0');
    CHECK(r && strcmp(r->state, "running") == 0 && r->started_at >= t0 - 1 &&
          r->heartbeat_at >= r->started_at);
    CHECK(r && store_worker_live(r, now_s()) && !store_worker_live(r, now_s() + 31));
    free(v);

    /* the name is live: a second process cannot take it, and nothing changes */
    store_worker_t w2;
    make_worker(&w2, "w-one", 202, "", 30);
    CHECK(store_worker_register(b, &w2, &err) == UP_ERR_CONFLICT && strstr(err.msg, "w-one"));
    CHECK(store_workers_list(a, 1, &v, &n, &err) == 0 && n == 1 && v[0].pid == 101);
    free(v);

    /* heartbeat: jobs and state recorded, time renewed; a NULL state stays */
    double before = now_s();
    sleep_s(0.02);
    CHECK(store_worker_heartbeat(b, &w, "job-a,job-b", "draining", &err) == 0);
    /* another process of the name (host, pid) is not this row's */
    CHECK(store_worker_heartbeat(b, &w2, "job-x", "running", &err) == UP_ERR_NOT_FOUND);
    CHECK(store_worker_remove(b, &w2, &err) == UP_ERR_NOT_FOUND);
    CHECK(store_workers_list(a, 0, &v, &n, &err) == 0 && n == 1);
    CHECK(n == 1 && strcmp(v[0].jobs, "job-a,job-b") == 0 && strcmp(v[0].state, "draining") == 0 &&
          v[0].heartbeat_at > before);
    free(v);
    /* a worker of 256 slots, each running a job: the whole list, no id cut */
    static char many[STORE_WORKER_JOBS_MAX];
    for (int i = 0, k = 0; i < 256; i++)
        k += snprintf(many + k, sizeof many - (size_t)k, "%s%08x-0000-4000-8000-%012d", i ? "," : "", i, i);
    CHECK(strlen(many) == sizeof many - 1);
    CHECK(store_worker_heartbeat(b, &w, many, NULL, &err) == 0);
    CHECK(store_workers_list(a, 0, &v, &n, &err) == 0 && n == 1 && strcmp(v[0].jobs, many) == 0);
    free(v);
    CHECK(store_worker_heartbeat(a, &w, NULL, NULL, &err) == 0);
    CHECK(store_workers_list(a, 0, &v, &n, &err) == 0 && n == 1 && v[0].jobs[0] == '\0' &&
          strcmp(v[0].state, "draining") == 0);
    free(v);
    store_worker_t nobody;
    make_worker(&nobody, "nobody", 101, "", 30);
    CHECK(store_worker_heartbeat(a, &nobody, "", NULL, &err) == UP_ERR_NOT_FOUND);

    /* remove */
    CHECK(store_worker_remove(b, &w, &err) == 0);
    CHECK(store_workers_list(a, 1, &v, &n, &err) == 0 && n == 0 && v == NULL);
    CHECK(store_worker_remove(b, &w, &err) == UP_ERR_NOT_FOUND);
    CHECK(store_worker_heartbeat(a, &w, "", NULL, &err) == UP_ERR_NOT_FOUND);

    /* refusals, nothing written */
    make_worker(&w, "", 1, "", 30);
    CHECK(store_worker_register(a, &w, &err) == UP_ERR_INVALID);
    make_worker(&w, "w-bad", 1, "", 30);
    w.slots = 0;
    CHECK(store_worker_register(a, &w, &err) == UP_ERR_INVALID);
    make_worker(&w, "w-bad", 1, "", 0);
    CHECK(store_worker_register(a, &w, &err) == UP_ERR_INVALID);
    make_worker(&nobody, "", 1, "", 30);
    CHECK(store_worker_heartbeat(a, &nobody, "", NULL, &err) == UP_ERR_INVALID);
    CHECK(store_workers_list(a, 1, &v, &n, &err) == 0 && n == 0);
    free(v);
    store_close(a);
    store_close(b);
}

static void test_lapse(void) {
    store_t *st = tb_open("lapse");
    up_error_t err;
    store_worker_t w;
    make_worker(&w, "w-short", 11, "", 0.2);
    CHECK(store_worker_register(st, &w, &err) == 0);
    make_worker(&w, "w-long", 12, "", 60);
    CHECK(store_worker_register(st, &w, &err) == 0);
    store_worker_t *v = NULL;
    int n = 0;
    CHECK(store_workers_list(st, 0, &v, &n, &err) == 0 && n == 2 && !strcmp(v[0].name, "w-long"));
    free(v);
    sleep_s(0.3);
    /* lapsed: out of the live list, still in the full one */
    CHECK(store_workers_list(st, 0, &v, &n, &err) == 0 && n == 1 && !strcmp(v[0].name, "w-long"));
    free(v);
    CHECK(store_workers_list(st, 1, &v, &n, &err) == 0 && n == 2 && find(v, n, "w-short"));
    free(v);
    /* its name can be taken again (the same worker restarted), as a fresh row */
    make_worker(&w, "w-short", 13, "x", 60);
    CHECK(store_worker_register(st, &w, &err) == 0);
    CHECK(store_workers_list(st, 0, &v, &n, &err) == 0 && n == 2);
    const store_worker_t *r = find(v, n, "w-short");
    CHECK(r && r->pid == 13 && !strcmp(r->models, "x") && r->lease_s == 60);
    free(v);
    /* the first process (pid 11: paused past its lease, say) wakes: its heartbeat is not the new row's */
    make_worker(&w, "w-short", 11, "", 0.2);
    CHECK(store_worker_heartbeat(st, &w, "late-job", NULL, &err) == UP_ERR_NOT_FOUND);
    CHECK(store_worker_register(st, &w, &err) == UP_ERR_CONFLICT);
    CHECK(store_workers_list(st, 0, &v, &n, &err) == 0 && (r = find(v, n, "w-short")) && r->pid == 13 &&
          r->jobs[0] == '\0');
    free(v);
    /* a row that lapsed a day ago goes at the next registration */
    CHECK(tb_exec("lapse", "UPDATE workers SET heartbeat_at = heartbeat_at - 90000 WHERE name = 'w-long'") ==
          0);
    CHECK(store_workers_list(st, 1, &v, &n, &err) == 0 && n == 2);
    free(v);
    make_worker(&w, "w-third", 14, "", 60);
    CHECK(store_worker_register(st, &w, &err) == 0);
    CHECK(store_workers_list(st, 1, &v, &n, &err) == 0 && n == 2 && !find(v, n, "w-long") &&
          find(v, n, "w-third") && find(v, n, "w-short"));
    free(v);
    store_close(st);
}

static void make_job(job_t *j, const char *id, const char *model, double created_at) {
    memset(j, 0, sizeof *j);
    snprintf(j->id, sizeof j->id, "%s", id);
    snprintf(j->model, sizeof j->model, "%s", model);
    j->scale = 2;
    snprintf(j->input_key, sizeof j->input_key, "uploads/%s.png", id);
    snprintf(j->input_format, sizeof j->input_format, "png");
    j->input_width = 8;
    j->input_height = 8;
    j->created_at = created_at;
}

static void test_claim_models(void) {
    store_t *st = tb_open("claims");
    up_error_t err;
    job_t j;
    double t = now_s() - 100;
    const char *const jobs[][2] = {{"c-a1", "a"}, {"c-bb", "bb"}, {"c-b1", "b"}, {"c-c1", "c"},
                                   {"c-a2", "a"}, {"c-b2", "b"},  {"c-d1", "d"}};
    for (int i = 0; i < 7; i++) {
        make_job(&j, jobs[i][0], jobs[i][1], t + i);
        CHECKF(store_job_insert(st, &j, &err) == 0, "%s", err.msg);
    }
    job_t got;
    /* the oldest job of a model served, older jobs of other models skipped */
    CHECK(store_job_claim(st, WORKER, 60, "b,c", &got, &err) == 0 && !strcmp(got.id, "c-b1"));
    CHECK(store_job_claim(st, WORKER, 60, "c,b", &got, &err) == 0 && !strcmp(got.id, "c-c1"));
    /* whole names: "b" is not "bb" */
    CHECK(store_job_claim(st, WORKER, 60, "b", &got, &err) == 0 && !strcmp(got.id, "c-b2"));
    CHECK(store_job_claim(st, WORKER, 60, "b", &got, &err) == UP_ERR_NOT_FOUND);
    CHECK(store_job_claim(st, WORKER, 60, "zz,b,", &got, &err) == UP_ERR_NOT_FOUND);
    CHECK(store_job_claim(st, WORKER, 60, "bb", &got, &err) == 0 && !strcmp(got.id, "c-bb"));
    CHECK(store_job_claim(st, WORKER, 60, "d", &got, &err) == 0 && !strcmp(got.id, "c-d1"));
    /* any model */
    CHECK(store_job_claim(st, WORKER, 60, "", &got, &err) == 0 && !strcmp(got.id, "c-a1"));
    CHECK(store_job_claim(st, WORKER, 60, NULL, &got, &err) == 0 && !strcmp(got.id, "c-a2"));
    CHECK(store_job_claim(st, WORKER, 60, NULL, &got, &err) == UP_ERR_NOT_FOUND);
    /* a list too long */
    char big[STORE_MODELS_MAX + 8];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    CHECK(store_job_claim(st, WORKER, 60, big, &got, &err) == UP_ERR_INVALID);
    store_close(st);
}

static void test_version(void) {
    store_t *st = tb_open("version");
    up_error_t err;
    int v = -1;
    const char *backend = NULL;
    CHECK(store_schema_version(st, &v, &backend, &err) == 0);
    if (tb_pg)
        CHECKF(v == 4 && backend && !strcmp(backend, "postgresql"), "%d %s", v, backend ? backend : "-");
    else
        CHECKF(v == 9 && backend && !strcmp(backend, "sqlite"), "%d %s", v, backend ? backend : "-");
    store_close(st);
}

static void test_models_has(void) {
    CHECK(store_models_has(NULL, "a") && store_models_has("", "a"));
    CHECK(store_models_has("a", "a") && store_models_has("x,a", "a") && store_models_has("a,x", "a"));
    CHECK(!store_models_has("aa", "a") && !store_models_has("x,aa,y", "a") && !store_models_has("b", "a"));
    CHECK(!store_models_has("a", "aa") && store_models_has("x,,a", "a"));
}

static void run_all(void) {
    test_register();
    test_lapse();
    test_claim_models();
    test_version();
}

int main(void) {
    test_models_has();
    char dir[256];
    snprintf(dir, sizeof dir, "/tmp/upres-workers-test-%d", (int)getpid());
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {
    }
    tb_run(dir, run_all);
    if (system(cmd)) {
    }
    return test_summary();
}
