/*
 * worker.c - `upres worker`: a process that runs jobs and nothing else (no
 * HTTP API), for scaling out: any number of them, on any number of
 * machines, claim from one store (PostgreSQL, or a SQLite file on one
 * machine) and read and write one blob folder (a shared mount), while
 * `upres serve --no-workers` answers the API.
 *
 * It claims only the jobs of the models it serves (--models, default every
 * installed one), and is a row of the store's workers registry with them
 * (src/queue: the lease keeper renews it), so /api/v1/models on any API
 * server counts it. Settings are a table (settings.h), flags and UPRES_*
 * variables as for serve, with the same names where they mean the same
 * (the entries that shape a job's result, --colour, --strip-metadata and
 * the pixel limits, must be given the same as the API servers': each
 * process reads its own).
 *
 * DESIGN: SIGINT and SIGTERM are blocked before any thread starts, and the
 * main thread waits for them (sigtimedwait, waking each half second to
 * look at queue_failed). On a signal it drains: queue_stop stops the
 * running job between two layers and puts it back in the queue (another
 * worker takes it), then removes the registry row; exit 0 within the 2 s
 * the scale-out test allows. When the store is lost (the keeper's registry
 * heartbeat failed --db-retries times in a row, backing off) it drains the
 * same way and exits 1; a store that cannot be opened at start is retried
 * as often.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "blob/blob.h"
#include "cli/cli.h"
#include "cli/job_settings.h"
#include "cli/settings.h"
#include "core/clock.h"
#include "core/log.h"
#include "image/image.h"
#include "api/api.h"
#include "http/http.h"
#include "queue/events.h"
#include "queue/notify.h"
#include "queue/queue.h"
#include "store/store.h"
#include "upscale/upscale.h"

enum { WORKER_IN_QUEUE, WORKER_IN_LOCAL };

typedef struct worker_locals {
    const char *data_dir;
    const char *store_url;    /* NULL: data_dir/upres.db */
    const char *blobs_url;    /* NULL: data_dir */
    const char *models;       /* NULL: every installed model */
    const char *model_dir;    /* NULL: upscale_models_dir finds them */
    const char *metrics_addr; /* where /metrics listens */
    int metrics_port;         /* 0 = no /metrics */
    int log_level;
} worker_locals_t;

/* Model names, comma-separated: each letters, digits and . _ + - (checked against the models at start). */
static int parse_models(const char *value, void *dest, up_error_t *err) {
    (void)err;
    size_t n = strlen(value);
    if (n == 0 || n >= STORE_MODELS_MAX ||
        strspn(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-,") != n ||
        value[0] == ',' || value[n - 1] == ',' || strstr(value, ",,"))
        return -1;
    *(const char **)dest = value;
    return 0;
}

#define QUEUE(field) SETTING_AT(WORKER_IN_QUEUE, queue_config_t, field)
#define LOCAL(field) SETTING_AT(WORKER_IN_LOCAL, worker_locals_t, field)
#define NUMBER(t, l, h) .type = SETTING_TYPE_##t, .lo = (l), .hi = (h)
#define NO_MAX 1e30

static const setting_t worker_items[] = {
    {.name = "store",
     .arg = "URL",
     .env = "UPRES_STORE",
     .type = SETTING_TYPE_STRING,
     .def_text = "`DATA/upres.db`",
     .what = "sqlite:///ABSOLUTE/PATH.db, sqlite:RELATIVE/PATH.db or postgresql://[USER@]HOST[:PORT]/DB",
     .help = "the job database the API servers use",
     .parse = cli_parse_store,
     .own_message = 1,
     LOCAL(store_url)},
    {.name = "blobs",
     .arg = "URL",
     .env = "UPRES_BLOBS",
     .type = SETTING_TYPE_STRING,
     .def_text = "`DATA`",
     .what = "a folder's path, file:///ABSOLUTE/DIR, postgresql: (the store's database) or "
             "postgresql://...",
     .help = "the blob store (uploads and results) the API servers use: a shared mount, or PostgreSQL",
     .parse = cli_parse_blobs,
     .own_message = 1,
     LOCAL(blobs_url)},
    {.name = "data",
     .short_flag = 'd',
     .arg = "DIR",
     .env = "UPRES_DATA",
     .type = SETTING_TYPE_STRING,
     .def = "./data",
     .what = "a folder",
     .help = "data folder: the default store and blobs",
     LOCAL(data_dir)},
    {.name = "models",
     .arg = "M,...",
     .env = "UPRES_WORKER_MODELS",
     .type = SETTING_TYPE_STRING,
     .parse = parse_models,
     .def_text = "every installed model",
     .what = "model names (`upres models`), comma-separated",
     .help = "the models this worker serves: it claims only their jobs and loads only them",
     LOCAL(models)},
    {.name = "model-dir",
     .short_flag = 'm',
     .arg = "DIR",
     .env = "UPRES_MODELS",
     .type = SETTING_TYPE_STRING,
     .def_text = "`<exe>/../models`, else the source tree's",
     .what = "a folder of ncnn models",
     .help = "models folder",
     LOCAL(model_dir)},
    {.name = "slots",
     .short_flag = 'w',
     .arg = "N",
     .env = "UPRES_WORKERS",
     NUMBER(INT, 1, 256),
     .def = "1",
     .what = "1 to 256",
     .help = "jobs run at once",
     QUEUE(n_workers)},
    {.name = "threads",
     .short_flag = 'j',
     .arg = "N",
     .env = "UPRES_THREADS",
     NUMBER(INT, 0, 1024),
     .def = "0",
     .what = "0 (all cores) to 1024",
     .help = "threads per job, 0 = all cores / slots",
     QUEUE(threads_per_worker)},
    {.name = "name",
     .arg = "NAME",
     .env = "UPRES_NAME",
     .type = SETTING_TYPE_STRING,
     .parse = cli_parse_registry_name,
     .def_text = "`<host>:<pid>`",
     .what = "1 to 127 letters, digits and . _ - : @",
     .help = "this worker's name in the workers registry (unique among live ones)",
     QUEUE(name)},
    CLI_SETTING_BACKEND(QUEUE),
    CLI_SETTING_PRECISION(QUEUE),
    {.name = "lease",
     .arg = "SEC",
     .env = "UPRES_LEASE",
     NUMBER(SECONDS, 0.5, 86400),
     .def = "30",
     .what = "seconds from 0.5 to 86400",
     .help = "a claim lasts this long unless renewed; the registry row too",
     QUEUE(lease_s)},
    {.name = "heartbeat",
     .arg = "SEC",
     .env = "UPRES_HEARTBEAT",
     NUMBER(SECONDS, 0.1, 86400),
     .def = "10",
     .what = "seconds, 0.1 or more",
     .help = "how often claims and the registry row are renewed, under `--lease`",
     QUEUE(heartbeat_s)},
    {.name = "retention",
     .arg = "SEC",
     .env = "UPRES_RETENTION",
     NUMBER(SECONDS, 0, 1e9),
     .def = "900",
     .what = "seconds",
     .help = "keep results not downloaded this long (as the API servers do)",
     QUEUE(retention_s)},
    /* what shapes a job's result: the same as the API servers' (serve.c's entries of these names) */
    CLI_SETTING_TILE_MEMORY(QUEUE),
    CLI_SETTING_MAX_PIXELS(QUEUE),
    CLI_SETTING_MAX_OUTPUT_PIXELS(QUEUE),
    CLI_SETTING_COLOUR(QUEUE),
    CLI_SETTING_STRIP_METADATA(QUEUE),
    {.name = "db-retries",
     .arg = "N",
     .env = "UPRES_DB_RETRIES",
     NUMBER(INT, 1, 1000),
     .def = "5",
     .what = "1 to 1000",
     .help = "store failures in a row (backing off 0.5 s to 8 s) before the worker exits with status 1",
     QUEUE(db_retries)},
    {.name = "metrics-port",
     .arg = "N",
     .env = "UPRES_METRICS_PORT",
     NUMBER(INT, 0, 65535),
     .def = "0",
     .def_text = "0: none",
     .what = "0 (none) to 65535",
     .help = "serve `GET /metrics` (Prometheus) on this TCP port: the worker has no other HTTP",
     LOCAL(metrics_port)},
    {.name = "metrics-listen",
     .arg = "ADDR",
     .env = "UPRES_METRICS_LISTEN",
     .type = SETTING_TYPE_STRING,
     .def = "127.0.0.1",
     .what = "an IPv4 or IPv6 address",
     .help = "address `--metrics-port` listens on: 0.0.0.0 for every interface",
     LOCAL(metrics_addr)},
    CLI_SETTING_VERBOSE(LOCAL),
    {.name = "help", .short_flag = 'h', .type = SETTING_TYPE_HELP, .help = "this help"},
};

#undef QUEUE
#undef LOCAL
#undef NUMBER
#undef NO_MAX

#define N_WORKER_ITEMS ((int)(sizeof worker_items / sizeof worker_items[0]))

static const settings_table_t worker_settings = {
    .command = "worker",
    .head = "usage: upres worker [options]\n"
            "\n"
            "Run the jobs of a store (no HTTP API): claims the queued jobs of the models it serves,\n"
            "writes the results to the blob folder, and stops on SIGTERM or SIGINT (its running job\n"
            "goes back to the queue). Each option can also be set by the environment variable shown.\n"
            "\n",
    .items = worker_items,
    .n_items = N_WORKER_ITEMS,
};

/* Every name in the comma-separated models is an installed model; else an error line, and -1. */
static int check_models(const upscale_registry_t *reg, const char *models) {
    char name[STORE_MODELS_MAX];
    for (const char *p = models; *p;) {
        size_t len = strcspn(p, ",");
        snprintf(name, sizeof name, "%.*s", (int)len, p);
        if (!upscale_registry_find(reg, name)) {
            char have[1024];
            size_t n = 0;
            have[0] = '\0';
            for (int i = 0; i < reg->n_models && n < sizeof have; i++)
                n += (size_t)snprintf(have + n, sizeof have - n, "%s%s", i ? ", " : "", reg->models[i].name);
            cli_error("bad models '%s': no model %s (installed: %s)", models, name, n ? have : "none");
            return -1;
        }
        p += len;
        if (*p == ',')
            p++;
    }
    return 0;
}

/* Open the store, trying retries times in all, backing off as the registry heartbeat does. */
static int open_store(const char *url, const char *data_dir, int retries, store_t **st, up_error_t *err) {
    double backoff = 0.5;
    for (int k = 1;; k++) {
        int rc = store_open_url(url, data_dir, st, err);
        if (rc == 0 || rc == UP_ERR_INVALID || rc == UP_ERR_UNSUPPORTED || k >= retries)
            return rc;
        log_warn("worker: cannot open the store (attempt %d of %d): retrying in %.1f s", k, retries, backoff);
        struct timespec ts = {(time_t)backoff, (long)((backoff - (double)(time_t)backoff) * 1e9)};
        nanosleep(&ts, NULL);
        if (backoff < 8)
            backoff *= 2;
    }
}

/*
 * GET /metrics on loc's address and port (and nothing else: a 404 for any
 * other path): this process's counters and the database's gauges, as on an
 * API server, open to whoever reaches the port (bind it to a private
 * address). 0, or 1 after an error line.
 */
static int start_metrics(const worker_locals_t *loc, store_t *st, const upscale_registry_t *reg,
                         blob_store_t *blobs, api_t *api, http_server_t **srv) {
    api->jobs.store = st;
    api->jobs.registry = reg;
    api->metrics = API_METRICS_OPEN;
    int n;
    const http_route_t *routes = metrics_routes(&n);
    http_config_t hc;
    http_config_init(&hc);
    hc.listen_addr = loc->metrics_addr;
    hc.port = loc->metrics_port;
    hc.n_threads = 1;
    hc.n_defer_threads = 1;
    hc.n_fetch_threads = 1;
    hc.upload_dir = blob_staging_dir(blobs);
    up_error_t err;
    if (http_server_start(&hc, routes, n, api, srv, &err)) {
        cli_error("metrics: %s", err.msg);
        return 1;
    }
    log_info("worker: metrics on http://%s:%d/metrics", hc.listen_addr, http_server_port(*srv));
    return 0;
}

int cmd_worker(int argc, char **argv) {
    const char *values[N_WORKER_ITEMS];
    int markdown;
    int rc = settings_parse(&worker_settings, argc, argv, values, &markdown);
    if (rc >= 0)
        return rc;
    queue_config_t qc;
    queue_config_init(&qc);
    worker_locals_t loc = {.data_dir = "./data", .metrics_addr = "127.0.0.1", .log_level = LOG_INFO};
    void *const bases[] = {[WORKER_IN_QUEUE] = &qc, [WORKER_IN_LOCAL] = &loc};
    if (markdown)
        return settings_markdown(&worker_settings, bases, stdout);
    if (settings_apply(&worker_settings, values, bases))
        return 2;
    log_set_level((log_level_t)loc.log_level);
    if (qc.heartbeat_s >= qc.lease_s) {
        cli_error("bad heartbeat %g s: it must be under the lease (%g s)", qc.heartbeat_s, qc.lease_s);
        return 2;
    }

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    int status = 1;
    up_error_t err;
    upscale_registry_t *reg = NULL;
    store_t *st = NULL;
    blob_store_t *blobs = NULL;
    queue_t *q = NULL;
    notify_t *nt = NULL;
    events_t *events = events_new();
    http_server_t *srv = NULL;
    api_t api; /* /metrics' context: the store, the models, who may read it */
    api_init(&api);
    char models_buf[1024];

    if (image_init()) {
        cli_error("libvips failed to start");
        goto done;
    }
    const char *models_dir = upscale_models_dir(loc.model_dir, models_buf, sizeof models_buf);
    if (upscale_registry_scan(models_dir, &reg, &err)) {
        cli_error("%s", err.msg);
        goto done;
    }
    if (reg->n_models == 0) {
        cli_error("no models in %s (run scripts/setup.sh)", models_dir);
        goto done;
    }
    if (loc.models && check_models(reg, loc.models)) {
        status = 2;
        goto done;
    }
    if (blob_open_url(loc.blobs_url, loc.data_dir, loc.store_url, &blobs, &err)) {
        cli_error("%s", err.msg);
        goto done;
    }
    if (open_store(loc.store_url, loc.data_dir, qc.db_retries, &st, &err)) {
        cli_error("%s", err.msg);
        goto done;
    }
    qc.blobs = blobs;
    qc.registry = reg;
    qc.models = loc.models;
    qc.events = events; /* relayed to the API servers (notify.h): their streams follow this worker's jobs */
    if (queue_start(st, &qc, &q, &err)) {
        cli_error("%s", err.msg);
        goto done;
    }
    /* PostgreSQL: a submission on any server wakes this worker at once; SQLite: the queue's poll */
    if (notify_start(st, events, q, &nt, &err) && err.code != UP_ERR_UNSUPPORTED)
        log_warn("worker: %s: new jobs are found by polling", err.msg);
    if (loc.metrics_port && start_metrics(&loc, st, reg, blobs, &api, &srv))
        goto done;
    log_info("worker: %s running the jobs of %s (blobs %s%s%s)", queue_name(q),
             loc.models ? loc.models : "every model", blob_backend_name(blobs),
             strcmp(blob_backend_name(blobs), "local") ? ", staged in " : " in ", blob_root(blobs));

    int sig = 0;
    for (;;) {
        struct timespec half = {0, 500000000L};
        sig = sigtimedwait(&sigs, NULL, &half);
        if (sig == SIGINT || sig == SIGTERM)
            break;
        if (queue_failed(q))
            break;
    }
    double t_stop = mono_s();
    if (sig == SIGINT || sig == SIGTERM) {
        log_info("worker: %s: draining (a running job stops now and goes back to the queue)",
                 sig == SIGINT ? "SIGINT" : "SIGTERM");
        status = 0;
    } else {
        log_error("worker: exiting: the store is lost (--db-retries %d)", qc.db_retries);
    }
    http_server_stop(srv);
    srv = NULL;
    notify_stop(nt); /* before queue_stop: it wakes the queue */
    nt = NULL;
    queue_stop(q);
    q = NULL;
    log_info("worker: stopped in %.2f s", mono_s() - t_stop);
done:
    http_server_stop(srv);
    api_fini(&api);
    notify_stop(nt);
    queue_stop(q);
    events_free(events); /* after everything that publishes has stopped */
    store_close(st);
    blob_close(blobs);
    upscale_registry_free(reg);
    return status;
}
