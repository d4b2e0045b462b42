/*
 * serve.c - `upres serve`: the HTTP API and the worker threads in one
 * process, over a SQLite database and files in the data folder (or a
 * --store and a --blobs folder shared with other processes). With worker
 * threads it is a row of the store's workers registry, as an `upres
 * worker` is (src/queue); `--no-workers` makes it an API server only, whose
 * queue still rescues lapsed leases and enforces retention.
 *
 * Every setting is a flag, and an UPRES_* environment variable when the
 * flag is absent (flag > environment > default): one table, serve_items,
 * names, bounds and places each one, and `upres serve -h` and README's
 * table come from it (settings.h).
 * The default listen address is 127.0.0.1 (this machine only): pass
 * --listen 0.0.0.0 to serve the network.
 *
 * DESIGN: SIGINT and SIGTERM are blocked before any thread starts, so every
 * thread inherits the mask and the main thread takes them with sigwait.
 * Shutdown order: submissions answer 503, the listening socket closes,
 * the HTTP threads stop (handlers use the queue, so they go first), then
 * queue_stop stops the running job between two layers of the network and
 * puts it back in the queue, and the store closes. Exit status 0, well
 * within the 10 s a container runtime waits after SIGTERM (the e2e test
 * shutdown_test.py holds it to 2 s with a job mid-tile).
 */
#include <errno.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/stat.h>

#include "api/upscale_service.h"
#include "auth/auth.h"
#include "blob/blob.h"
#include "http/fetch.h"
#include "cli/cli.h"
#include "cli/job_settings.h"
#include "cli/settings.h"
#include "core/cidr.h"
#include "core/clock.h"
#include "core/log.h"
#include "http/http.h"
#include "image/image.h"
#include "queue/events.h"
#include "queue/notify.h"
#include "queue/queue.h"
#include "store/store.h"
#include "upscale/upscale.h"

/* Where serve's settings land: settings_apply's bases. */
enum { SERVE_IN_HTTP, SERVE_IN_QUEUE, SERVE_IN_API, SERVE_IN_LOCAL };

/* The settings that no config struct holds. */
typedef struct serve_locals {
    const char *data_dir;
    const char *store_url;        /* NULL: data_dir/upres.db */
    const char *secret;           /* the link-signing secret in hex; NULL: secret_file's */
    const char *secret_file;      /* NULL: data_dir/secret.key */
    const char *blobs_url;        /* NULL: data_dir */
    int no_workers;               /* an API-only process: no worker threads */
    const char *models;           /* NULL: upscale_models_dir finds them */
    const char *web;              /* NULL: upscale_service_web_dir finds it */
    int per_minute, per_day;      /* rate limits per key, 0 = none */
    unsigned long long fetch_max; /* bytes of an image_url; 0 = --max-upload */
    int log_level;                /* log_level_t */
} serve_locals_t;

static void serve_locals_init(serve_locals_t *l) {
    memset(l, 0, sizeof *l);
    l->data_dir = "./data";
    l->per_minute = 60;
    l->per_day = 1000;
    l->log_level = LOG_INFO;
}

/* Checked here, kept as text; a refusal never echoes the value (own_message). */
static int parse_secret(const char *value, void *dest, up_error_t *err) {
    unsigned char secret[32];
    if (auth_secret_parse(value, strlen(value), secret, err)) {
        up_error_set(
            err, UP_ERR_INVALID, 0,
            "bad secret (its value not shown): 64 hexadecimal digits expected (`openssl rand -hex 32` "
            "makes one)");
        return -1;
    }
    OPENSSL_cleanse(secret, sizeof secret);
    *(const char **)dest = value;
    return 0;
}

/* Read at start too, so that a missing or malformed file is refused before anything is made. */
static int parse_secret_file(const char *value, void *dest, up_error_t *err) {
    unsigned char secret[32];
    if (auth_secret_read(value, secret, err))
        return -1;
    OPENSSL_cleanse(secret, sizeof secret);
    *(const char **)dest = value;
    return 0;
}

static int parse_tiers(const char *value, void *dest, up_error_t *err) {
    return tiers_load(value, dest, err);
}

static int parse_public_url(const char *value, void *dest, up_error_t *err) {
    (void)err;
    if (strncmp(value, "http://", 7) && strncmp(value, "https://", 8))
        return -1;
    *(const char **)dest = value;
    return 0;
}

/* A model name as the registry names files: letters, digits and . _ + -, 1 to 127 bytes. */
static int parse_model_name(const char *value, void *dest, up_error_t *err) {
    (void)err;
    size_t n = strlen(value);
    if (n == 0 || n > 127 ||
        strspn(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-") != n)
        return -1;
    *(const char **)dest = value;
    return 0;
}

/* An operator's secret: 16 to 256 printable ASCII characters, no spaces (a guessable one is refused). */
static int parse_admin_token(const char *value, void *dest, up_error_t *err) {
    (void)err;
    size_t n = strlen(value);
    int ok = n >= 16 && n <= 256;
    for (size_t i = 0; ok && i < n; i++)
        ok = value[i] > 0x20 && value[i] < 0x7f;
    if (!ok)
        return -1;
    *(const char **)dest = value;
    return 0;
}

static int parse_fetch_allow(const char *value, void *dest, up_error_t *err) {
    if (fetch_allow_validate(value, err))
        return -1;
    *(const char **)dest = value;
    return 0;
}

static int parse_cidrs(const char *value, void *dest, up_error_t *err) {
    if (cidr_list_check(value, err))
        return -1;
    *(const char **)dest = value;
    return 0;
}

static int parse_cors_origins(const char *value, void *dest, up_error_t *err) {
    if (http_cors_origins_check(value, err))
        return -1;
    *(const char **)dest = value;
    return 0;
}

static const setting_choice_t metrics_choices[] = {
    {"open", API_METRICS_OPEN}, {"admin", API_METRICS_ADMIN}, {"off", API_METRICS_OFF}, {NULL, 0}};

#define HTTP(field) SETTING_AT(SERVE_IN_HTTP, http_config_t, field)
#define QUEUE(field) SETTING_AT(SERVE_IN_QUEUE, queue_config_t, field)
#define API(field) SETTING_AT(SERVE_IN_API, api_t, field)
#define LOCAL(field) SETTING_AT(SERVE_IN_LOCAL, serve_locals_t, field)
#define NUMBER(t, l, h) .type = SETTING_TYPE_##t, .lo = (l), .hi = (h)
#define NO_MAX 1e30 /* parse_size refuses more than 1e18 before its suffix */

/*
 * Every `upres serve` setting, in the order of -h and README's table (and of
 * the checks: the first bad value is the one told). README.md's rows are
 * `upres serve --settings-markdown`; tests/e2e/settings_test.py compares.
 */
static const setting_t serve_items[] = {
    {.name = "listen",
     .short_flag = 'l',
     .arg = "ADDR",
     .env = "UPRES_LISTEN",
     .type = SETTING_TYPE_STRING,
     .def = "127.0.0.1",
     .what = "an IPv4 or IPv6 address",
     .help = "address to listen on: 0.0.0.0 for every interface",
     HTTP(listen_addr)},
    {.name = "port",
     .short_flag = 'p',
     .arg = "N",
     .env = "UPRES_PORT",
     NUMBER(INT, 0, 65535),
     .def = "8089",
     .what = "0 to 65535",
     .help = "TCP port, 0 = any free one",
     HTTP(port)},
    {.name = "data",
     .short_flag = 'd',
     .arg = "DIR",
     .env = "UPRES_DATA",
     .type = SETTING_TYPE_STRING,
     .def = "./data",
     .what = "a folder, made when missing",
     .help = "data folder: database, uploads, results",
     LOCAL(data_dir)},
    {.name = "store",
     .arg = "URL",
     .env = "UPRES_STORE",
     .type = SETTING_TYPE_STRING,
     .def_text = "`DATA/upres.db`",
     .what = "sqlite:///ABSOLUTE/PATH.db, sqlite:RELATIVE/PATH.db or postgresql://[USER@]HOST[:PORT]/DB "
             "(any libpq URI)",
     .help = "the job database, by URL, instead of the data folder's (which keeps the uploads and results)",
     .doc = "a relative path is the working directory's at start; see \"PostgreSQL\"",
     .parse = cli_parse_store,
     .own_message = 1, /* store_url_check's, which hides a password */
     LOCAL(store_url)},
    {.name = "secret-file",
     .arg = "PATH",
     .env = "UPRES_SECRET_FILE",
     .type = SETTING_TYPE_STRING,
     .def_text = "`DATA/secret.key` (made on first start)",
     .what = "a file of 32 raw bytes or 64 hexadecimal digits",
     .help = "the secret that signs result links, shared by every server behind one address",
     .doc = "give all servers of one database the same secret (a copy of one `secret.key` will do): a link "
            "signed by one is then valid on all",
     .parse = parse_secret_file,
     LOCAL(secret_file)},
    {.name = "secret",
     .arg = "HEX",
     .env = "UPRES_SECRET",
     .type = SETTING_TYPE_STRING,
     .def_text = "none: `--secret-file`'s",
     .what = "64 hexadecimal digits",
     .help = "the link-signing secret itself, which wins over `--secret-file`",
     .doc = "prefer the variable: a flag's value is visible to every user of the machine in `ps`",
     .parse = parse_secret,
     .own_message = 1, /* never echo a secret */
     LOCAL(secret)},
    {.name = "blobs",
     .arg = "URL",
     .env = "UPRES_BLOBS",
     .type = SETTING_TYPE_STRING,
     .def_text = "`DATA`",
     .what = "a folder's path, file:///ABSOLUTE/DIR, postgresql: (the store's database) or "
             "postgresql://...",
     .help = "where uploads and results are kept instead of the data folder: a shared mount, or PostgreSQL "
             "(1 MiB chunks), when workers run on other machines",
     .doc = "see \"Scaling out\"",
     .parse = cli_parse_blobs,
     .own_message = 1,
     LOCAL(blobs_url)},
    {.name = "models",
     .short_flag = 'm',
     .arg = "DIR",
     .env = "UPRES_MODELS",
     .type = SETTING_TYPE_STRING,
     .def_text = "`<exe>/../models`, else the source tree's",
     .what = "a folder of ncnn models",
     .help = "models folder",
     .doc = "see \"Models\"",
     LOCAL(models)},
    {.name = "web",
     .arg = "DIR",
     .env = "UPRES_WEB",
     .type = SETTING_TYPE_STRING,
     .def_text = "`<exe>/../web`, else the source tree's",
     .what = "a folder",
     .help = "web folder: openapi.json, Swagger UI",
     LOCAL(web)},
    {.name = "workers",
     .short_flag = 'w',
     .arg = "N",
     .env = "UPRES_WORKERS",
     NUMBER(INT, 1, 256),
     .def = "1",
     .what = "1 to 256",
     .help = "jobs run at once",
     QUEUE(n_workers)},
    {.name = "no-workers",
     .env = "UPRES_NO_WORKERS",
     .type = SETTING_TYPE_BOOL,
     .def = "0",
     .help = "answer the API only: jobs run in `upres worker` processes on the same store",
     .doc = "it still deletes expired files and requeues the jobs of workers that died",
     LOCAL(no_workers)},
    {.name = "name",
     .arg = "NAME",
     .env = "UPRES_NAME",
     .type = SETTING_TYPE_STRING,
     .parse = cli_parse_registry_name,
     .def_text = "`<host>:<pid>`",
     .what = "1 to 127 letters, digits and . _ - : @",
     .help = "this server's name in the workers registry (`upres workers list`)",
     QUEUE(name)},
    CLI_SETTING_TILE_MEMORY(QUEUE),
    {.name = "threads",
     .short_flag = 'j',
     .arg = "N",
     .env = "UPRES_THREADS",
     NUMBER(INT, 0, 1024),
     .def = "0",
     .what = "0 (all cores) to 1024",
     .help = "threads per worker, 0 = all cores / workers",
     QUEUE(threads_per_worker)},
    CLI_SETTING_BACKEND(QUEUE),
    CLI_SETTING_PRECISION(QUEUE),
    {.name = "http-threads",
     .arg = "N",
     .env = "UPRES_HTTP_THREADS",
     NUMBER(INT, 1, 256),
     .def = "4",
     .what = "1 to 256",
     .help = "HTTP thread pool",
     HTTP(n_threads)},
    {.name = "max-upload",
     .arg = "BYTES",
     .env = "UPRES_MAX_UPLOAD",
     NUMBER(SIZE, 1, NO_MAX),
     .def = "50M",
     .what = "bytes, with an optional K, M or G suffix",
     .help = "request body limit: an upload",
     HTTP(max_upload)},
    CLI_SETTING_MAX_PIXELS(QUEUE),
    CLI_SETTING_MAX_OUTPUT_PIXELS(QUEUE),
    {.name = "retention",
     .arg = "SEC",
     .env = "UPRES_RETENTION",
     NUMBER(SECONDS, 0, 1e9),
     .def = "900",
     .what = "seconds",
     .help = "keep results not downloaded this long",
     QUEUE(retention_s)},
    {.name = "sweep-interval",
     .arg = "SEC",
     .env = "UPRES_SWEEP_INTERVAL",
     NUMBER(SECONDS, 0.05, 86400),
     .def = "10",
     .what = "seconds, 0.05 or more",
     .help = "how often expired files are deleted",
     QUEUE(sweep_interval_s)},
    {.name = "lease",
     .arg = "SEC",
     .env = "UPRES_LEASE",
     NUMBER(SECONDS, 0.5, 86400),
     .def = "30",
     .what = "seconds from 0.5 to 86400",
     .help = "a worker's claim on a job lasts this long unless renewed: a process that dies loses its jobs "
             "to the others on the data folder (or to its restart) after it",
     QUEUE(lease_s)},
    {.name = "heartbeat",
     .arg = "SEC",
     .env = "UPRES_HEARTBEAT",
     NUMBER(SECONDS, 0.1, 86400),
     .def = "10",
     .what = "seconds, 0.1 or more",
     .help = "how often running jobs' claims are renewed, under `--lease`",
     QUEUE(heartbeat_s)},
    {.name = "conn-timeout",
     .arg = "SEC",
     .env = "UPRES_CONN_TIMEOUT",
     NUMBER(SECONDS, 1, 86400),
     .def = "30",
     .what = "seconds, 1 or more",
     .help = "idle HTTP connection timeout",
     HTTP(conn_timeout_s)},
    {.name = "header-timeout",
     .arg = "SEC",
     .env = "UPRES_HEADER_TIMEOUT",
     NUMBER(SECONDS, 1, 3600),
     .def = "10",
     .what = "seconds from 1 to 3600",
     .help = "a request head must arrive within this of the connection opening (or of the last reply); a "
             "connection that is slower is closed",
     HTTP(head_timeout_s)},
    {.name = "min-body-rate",
     .arg = "B/S",
     .env = "UPRES_MIN_BODY_RATE",
     NUMBER(INT, 0, 1e9),
     .def = "1024",
     .what = "bytes per second, 0 (no minimum) or more",
     .help = "a body must average this once `--header-timeout` passed, 0 = no minimum",
     HTTP(min_body_rate)},
    {.name = "max-conns",
     .arg = "N",
     .env = "UPRES_MAX_CONNS",
     NUMBER(INT, 1, 1e6),
     .def = "1024",
     .what = "1 or more",
     .help = "open connections in all",
     HTTP(max_conns)},
    {.name = "max-conns-per-ip",
     .arg = "N",
     .env = "UPRES_MAX_CONNS_PER_IP",
     NUMBER(INT, 1, 1e6),
     .def = "64",
     .what = "1 or more",
     .help = "open connections per client address",
     HTTP(max_conns_per_ip)},
    {.name = "max-body",
     .arg = "BYTES",
     .env = "UPRES_MAX_BODY",
     NUMBER(SIZE, 1024, 1 << 30),
     .def = "1M",
     .what = "bytes from 1K to 1G",
     .help = "JSON request body limit",
     HTTP(max_body)},
    {.name = "cors-origins",
     .arg = "LIST",
     .env = "UPRES_CORS_ORIGINS",
     .type = SETTING_TYPE_STRING,
     .parse = parse_cors_origins,
     .def = "*",
     .what = "* (any), none, or comma-separated origins scheme://host[:port]",
     .help = "web pages that may call the API from a browser: `*` any; a list: only those (their Origin is "
             "echoed, with `Vary: Origin`); `none`: no CORS headers",
     .doc =
         "every reply carries `Access-Control-Allow-Origin`, and the server answers preflights (`OPTIONS`) "
         "itself",
     HTTP(cors_origins)},
    {.name = "submit-threads",
     .arg = "N",
     .env = "UPRES_SUBMIT_THREADS",
     NUMBER(INT, 1, 256),
     .def = "8",
     .what = "1 to 256",
     .help = "uploads checked at once (image decode), on background threads, off the HTTP ones",
     HTTP(n_defer_threads)},
    {.name = "submit-queue",
     .arg = "N",
     .env = "UPRES_SUBMIT_QUEUE",
     NUMBER(INT, 1, 65536),
     .def = "256",
     .what = "1 to 65536",
     .help = "submissions that may wait for a submit (or fetch) thread; more get 503",
     .doc =
         "that 503 has `Retry-After: 1`; each waiting one holds a connection and its upload, already on disk",
     HTTP(defer_queue)},
    {.name = "max-frames",
     .arg = "N",
     .env = "UPRES_MAX_FRAMES",
     NUMBER(INT, 1, 1e6),
     .def = "100",
     .what = "1 or more",
     .help = "frames of an animated input (only the first is upscaled); more get 422",
     API(jobs.max_frames)},
    CLI_SETTING_COLOUR(QUEUE),
    CLI_SETTING_STRIP_METADATA(QUEUE),

    {.section = "Accounts (API keys: upres keys -h):",
     .name = "require-keys",
     .env = "UPRES_REQUIRE_KEYS",
     .type = SETTING_TYPE_BOOL,
     .def = "0",
     .help = "the Upscale Service endpoints need a key too",
     .doc = "off: they are open",
     API(require_keys)},
    {.name = "rate-per-minute",
     .arg = "N",
     .env = "UPRES_RATE_PER_MINUTE",
     NUMBER(INT, 0, 1e9),
     .def = "60",
     .what = "0 (no limit) or more",
     .help = "requests per key per minute, 0 = no limit",
     LOCAL(per_minute)},
    {.name = "rate-per-day",
     .arg = "N",
     .env = "UPRES_RATE_PER_DAY",
     NUMBER(INT, 0, 1e9),
     .def = "1000",
     .what = "0 (no limit) or more",
     .help = "requests per key per day, 0 = no limit",
     LOCAL(per_day)},
    {.name = "tiers",
     .arg = "FILE",
     .env = "UPRES_TIERS",
     .type = SETTING_TYPE_STRING,
     .parse = parse_tiers,
     .own_message = 1,
     .def_text = "the built-in table",
     .what = "a JSON file",
     .help = "tier table, JSON as GET /api/v1/tiers answers",
     .doc = "see \"Tiers\"",
     API(jobs.tiers)},
    {.name = "public-url",
     .arg = "URL",
     .env = "UPRES_PUBLIC_URL",
     .type = SETTING_TYPE_STRING,
     .parse = parse_public_url,
     .def_text = "`http://<Host header>`",
     .what = "an http:// or https:// URL",
     .help = "base of result links",
     .doc = "set it when a proxy or clients may send another host (without it, a Host that is not a plain "
            "host[:port] gets 400)",
     API(public_url)},
    {.name = "result-url-ttl",
     .arg = "SEC",
     .env = "UPRES_RESULT_URL_TTL",
     NUMBER(SECONDS, 1, 1e8),
     .def = "3600",
     .what = "seconds, 1 or more",
     .help = "how long a result link is valid",
     API(result_url_ttl)},
    {.name = "fetch-timeout",
     .arg = "SEC",
     .env = "UPRES_FETCH_TIMEOUT",
     NUMBER(SECONDS, 0.1, 3600),
     .def = "10",
     .what = "seconds from 0.1 to 3600",
     .help = "`image_url` fetch time limit",
     API(fetch.timeout_s)},
    {.name = "fetch-min-rate",
     .arg = "B/S",
     .env = "UPRES_FETCH_MIN_RATE",
     NUMBER(DOUBLE, 0, 1e9),
     .def = "4096",
     .what = "bytes per second, 0 (no minimum) or more",
     .help = "an `image_url` sending less than this for 3 s is cut, 0 = no minimum",
     API(fetch.min_rate)},
    {.name = "fetch-threads",
     .arg = "N",
     .env = "UPRES_FETCH_THREADS",
     NUMBER(INT, 1, 256),
     .def = "8",
     .what = "1 to 256",
     .help = "`image_url` fetches at once, on their own threads: uploads never wait behind them",
     HTTP(n_fetch_threads)},
    {.name = "fetch-per-key",
     .arg = "N",
     .env = "UPRES_FETCH_PER_KEY",
     NUMBER(INT, 1, 65536),
     .def = "2",
     .what = "1 to 65536",
     .help = "fetches one key may have under way; more get 429",
     .doc = "that 429 is `TOO_MANY_FETCHES`",
     API(fetch_per_key)},
    {.name = "fetch-per-ip",
     .arg = "N",
     .env = "UPRES_FETCH_PER_IP",
     NUMBER(INT, 1, 65536),
     .def = "8",
     .what = "1 to 65536",
     .help = "fetches one client address may have under way, keys or not; more get 429",
     .doc = "that 429 is `TOO_MANY_FETCHES`",
     API(fetch_per_ip)},
    {.name = "fetch-max-bytes",
     .arg = "BYTES",
     .env = "UPRES_FETCH_MAX_BYTES",
     NUMBER(SIZE, 1, NO_MAX),
     .def_text = "`--max-upload`",
     .what = "bytes, with an optional K, M or G suffix",
     .help = "`image_url` size limit",
     LOCAL(fetch_max)},
    {.name = "guest-daily-credits",
     .arg = "N",
     .env = "UPRES_GUEST_DAILY_CREDITS",
     NUMBER(INT, 0, 1000000000),
     .def = "20",
     .what = "0 or more",
     .help = "credits a Tinify guest session gets per UTC day",
     API(guest_daily_credits)},
    {.name = "guest-sessions-per-ip",
     .arg = "N",
     .env = "UPRES_GUEST_SESSIONS_PER_IP",
     NUMBER(INT, 0, 1000000000),
     .def = "50",
     .what = "0 (no cap) or more",
     .help = "Tinify uploads without a credential (each opens a guest session) one client address may make "
             "in any 24 hours; more get 429",
     .doc = "dropping a token and uploading again would otherwise give anyone fresh credits",
     API(guest_sessions_per_ip)},
    {.name = "tinify-model",
     .arg = "NAME",
     .env = "UPRES_TINIFY_MODEL",
     .type = SETTING_TYPE_STRING,
     .parse = parse_model_name,
     .def = UPSCALE_DEFAULT_MODEL,
     .what = "a model name (`upres models`): letters, digits and . _ + -",
     .help = "the model a Tinify upscale runs",
     API(tinify_model)},
    {.name = "temp-ttl",
     .arg = "SEC",
     .env = "UPRES_TEMP_TTL",
     NUMBER(SECONDS, 1, 1e8),
     .def = "3600",
     .what = "seconds, 1 or more",
     .help = "how long a Tinify upload can feed jobs",
     API(temp_ttl_s)},
    {.name = "signed-url-ttl",
     .arg = "SEC",
     .env = "UPRES_SIGNED_URL_TTL",
     NUMBER(SECONDS, 1, 1e8),
     .def = "900",
     .what = "seconds, 1 or more",
     .help = "how long a Tinify `/download/{id}/url` link is valid",
     API(signed_url_ttl)},
    {.name = "max-batch",
     .arg = "N",
     .env = "UPRES_MAX_BATCH",
     NUMBER(INT, 1, JOBS_BATCH_MAX),
     .def = "20",
     .what = "1 to 32",
     .help = "temp files in one Tinify request",
     API(max_batch)},
    {.name = "admin-token",
     .arg = "TOKEN",
     .env = "UPRES_ADMIN_TOKEN",
     .type = SETTING_TYPE_STRING,
     .parse = parse_admin_token,
     .def_text = "none: operator endpoints refused",
     .what = "16 to 256 printable characters",
     .help = "Bearer token of the Tinify operator endpoints (`/internal/*`)",
     API(admin_token)},
    {.name = "metrics",
     .arg = "WHO",
     .env = "UPRES_METRICS",
     .type = SETTING_TYPE_ENUM,
     .choices = metrics_choices,
     .def = "open",
     .help = "who may read `/metrics` (Prometheus): anyone, the `--admin-token` only, or nobody",
     API(metrics)},
    {.name = "trusted-proxies",
     .arg = "CIDRS",
     .env = "UPRES_TRUSTED_PROXIES",
     .type = SETTING_TYPE_STRING,
     .parse = parse_cidrs,
     .def_text = "none: the peer is the client",
     .what = "comma-separated CIDR ranges",
     .help = "load balancers or proxies whose `X-Forwarded-For` names the client, read from the right",
     .doc = "per-address limits (`--fetch-per-ip`, `--guest-sessions-per-ip`) then count the client; "
            "`--max-conns-per-ip` still counts connections from the proxy",
     HTTP(trusted_proxies)},
    {.name = "fetch-allow",
     .arg = "CIDRS",
     .env = "UPRES_FETCH_ALLOW",
     .type = SETTING_TYPE_STRING,
     .parse = parse_fetch_allow,
     .def_text = "none",
     .what = "comma-separated CIDR ranges",
     .help = "ranges `image_url` may reach although not public, e.g. 10.0.0.0/8",
     API(fetch.allow)},
    CLI_SETTING_VERBOSE(LOCAL),
    {.name = "help", .short_flag = 'h', .type = SETTING_TYPE_HELP, .help = "this help"},
};

#undef HTTP
#undef QUEUE
#undef API
#undef LOCAL
#undef NUMBER
#undef NO_MAX

#define N_SERVE_ITEMS ((int)(sizeof serve_items / sizeof serve_items[0]))
_Static_assert(N_SERVE_ITEMS <= SETTINGS_MAX_ITEMS, "raise SETTINGS_MAX_ITEMS");

static const settings_table_t serve_settings = {
    .command = "serve",
    .head = "usage: upres serve [options]\n"
            "\n"
            "The Upscale Service API on http://LISTEN:PORT/api/v1 (docs at /api/v1/docs).\n"
            "Each option can also be set by the environment variable shown.\n"
            "\n",
    .items = serve_items,
    .n_items = N_SERVE_ITEMS,
};

int cmd_serve(int argc, char **argv) {
    const char *values[N_SERVE_ITEMS];
    int markdown;
    int rc = settings_parse(&serve_settings, argc, argv, values, &markdown);
    if (rc >= 0)
        return rc;

    http_config_t hc;
    http_config_init(&hc);
    queue_config_t qc;
    queue_config_init(&qc);
    up_error_t err;
    /* accounts: handlers may run until http_server_stop returns, so api outlives them */
    static api_t api;
    api_init(&api);
    serve_locals_t loc;
    serve_locals_init(&loc);
    void *const bases[] = {
        [SERVE_IN_HTTP] = &hc, [SERVE_IN_QUEUE] = &qc, [SERVE_IN_API] = &api, [SERVE_IN_LOCAL] = &loc};
    if (markdown) { /* README's table, from the defaults just set: run with no UPRES_* variable */
        rc = settings_markdown(&serve_settings, bases, stdout);
        api_fini(&api);
        return rc;
    }
    if (settings_apply(&serve_settings, values, bases)) {
        api_fini(&api);
        return 2;
    }
    log_set_level((log_level_t)loc.log_level);
    /* rules between settings */
    if (qc.heartbeat_s >= qc.lease_s) {
        cli_error("bad heartbeat %g s: it must be under the lease (%g s), so that a live worker's claim "
                  "never runs out",
                  qc.heartbeat_s, qc.lease_s);
        api_fini(&api);
        return 2;
    }
    hc.fetch_queue = hc.defer_queue; /* one waiting room size for both pools */
    api.fetch.max_bytes = (size_t)(loc.fetch_max ? loc.fetch_max : hc.max_upload);
    /* what the setup below reads */
    const char *data_dir = loc.data_dir, *o_models = loc.models, *o_web = loc.web;
    int per_minute = loc.per_minute, per_day = loc.per_day;

    /* signals first, so that every thread started below inherits the mask */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    int status = 1;
    upscale_registry_t *reg = NULL;
    store_t *st = NULL;
    blob_store_t *blobs = NULL;
    queue_t *q = NULL;
    notify_t *nt = NULL;             /* cross-process notices (PostgreSQL) */
    events_t *events = events_new(); /* job changes: the queue publishes, event streams listen */
    http_server_t *srv = NULL;
    char models_buf[1024], web_buf[1024], data_abs[PATH_MAX];
    http_route_t *routes = NULL;

    if (mkdir(data_dir, 0755) && errno != EEXIST) {
        cli_error("cannot create the data folder %s: %s", data_dir, strerror(errno));
        goto done;
    }
    if (image_init()) {
        cli_error("libvips failed to start");
        goto done;
    }
    const char *models_dir = upscale_models_dir(o_models, models_buf, sizeof models_buf);
    if (upscale_registry_scan(models_dir, &reg, &err)) {
        cli_error("%s", err.msg);
        goto done;
    }
    if (reg->n_models == 0)
        log_warn("serve: no models in %s (run scripts/setup.sh)", models_dir);
    if (!loc.blobs_url) { /* the data folder: absolute from here on, nothing depends on the working directory
                           */
        if (blob_open_url(NULL, data_dir, NULL, &blobs, &err)) {
            cli_error("%s", err.msg);
            goto done;
        }
        data_dir = blob_root(blobs);
    } else if (!realpath(data_dir, data_abs)) {
        cli_error("cannot resolve the data folder %s: %s", data_dir, strerror(errno));
        goto done;
    } else if (blob_open_url(loc.blobs_url, data_abs, loc.store_url, &blobs, &err)) {
        cli_error("%s", err.msg);
        goto done;
    } else {
        data_dir = data_abs;
    }
    if (store_open_url(loc.store_url, data_dir, &st, &err)) {
        cli_error("%s", err.msg);
        goto done;
    }
    qc.blobs = blobs;
    qc.registry = reg;
    qc.events = events;
    if (loc.no_workers)
        qc.n_workers = 0;
    if (queue_start(st, &qc, &q, &err)) {
        cli_error("%s", err.msg);
        goto done;
    }
    /* PostgreSQL: other processes' jobs wake our workers, and events reach every server (queue/notify.h) */
    if (notify_start(st, events, q, &nt, &err) && err.code != UP_ERR_UNSUPPORTED)
        log_warn("serve: %s: other processes' jobs are found by polling", err.msg);
    if (loc.secret        ? auth_secret_parse(loc.secret, strlen(loc.secret), api.secret, &err)
        : loc.secret_file ? auth_secret_read(loc.secret_file, api.secret, &err)
                          : auth_secret_load(data_dir, api.secret, &err)) {
        cli_error("%s", err.msg);
        goto done;
    }
    if (!loc.secret && !loc.secret_file && loc.store_url && !strncmp(loc.store_url, "postgres", 8))
        log_warn("serve: result links are signed with %s/secret.key: other servers of this database refuse "
                 "them unless they share it (--secret-file or UPRES_SECRET)",
                 data_dir);
    api.jobs.store = st;
    api.jobs.blobs = blobs;
    api.jobs.queue = q;
    api.jobs.events = events;
    api.jobs.registry = reg;
    api.web_dir = upscale_service_web_dir(o_web, web_buf, sizeof web_buf);
    api.backend = qc.backend;
    api.jobs.max_input_pixels = qc.max_input_pixels; /* the API checks at submit what the workers enforce */
    api.jobs.max_output_pixels = qc.max_output_pixels;
    api.retention_s = qc.retention_s;     /* Tinify's expires_at */
    api.max_upload_bytes = hc.max_upload; /* for /config */
    api.n_workers = qc.n_workers;
    api.rate = ratelimit_new(per_minute, per_day);
    api.shared_limits = store_rate_shared(st); /* PostgreSQL: every server of the database counts together */
    api.session_rate = api.guest_sessions_per_ip ? ratelimit_new(0, api.guest_sessions_per_ip) : NULL;
    api.rate_per_minute = per_minute;
    api.rate_per_day = per_day;

    hc.upload_dir = blob_staging_dir(blobs);
    int n_routes;
    routes = api_routes(&n_routes);
    if (http_server_start(&hc, routes, n_routes, &api, &srv, &err)) {
        cli_error("%s", err.msg);
        goto done;
    }
    log_info(
        "serve: listening on http://%s:%d/api/v1 (docs: /api/v1/docs), data %s, blobs %s%s%s, models %s, "
        "%d model(s)",
        hc.listen_addr, http_server_port(srv), data_dir, blob_backend_name(blobs),
        strcmp(blob_backend_name(blobs), "local") ? "" : " in ",
        strcmp(blob_backend_name(blobs), "local") ? "" : blob_root(blobs), models_dir, reg->n_models);
    if (!api.public_url)
        log_info("serve: result links follow each request's Host header (a plain host[:port]; others get "
                 "400): set --public-url when a proxy or clients may send another host");

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0) {
    }
    double t_stop = mono_s();
    log_info("serve: %s: stopping (running jobs stop now and are requeued)",
             sig == SIGINT ? "SIGINT" : "SIGTERM");
    atomic_store(&api.jobs.stopping, 1);
    http_server_quiesce(srv);
    http_server_stop(srv); /* before queue_stop: handlers use the queue */
    srv = NULL;
    notify_stop(nt); /* before queue_stop: it wakes the queue */
    nt = NULL;
    queue_stop(q);
    q = NULL;
    status = 0;
    log_info("serve: stopped in %.2f s", mono_s() - t_stop);
done:
    http_server_stop(srv);
    free(routes);
    ratelimit_free(api.rate);
    ratelimit_free(api.session_rate);
    api_fini(&api);
    notify_stop(nt);
    queue_stop(q);
    store_close(st);
    blob_close(blobs);
    events_free(events); /* after everything that publishes or listens has stopped */
    upscale_registry_free(reg);
    return status;
}
