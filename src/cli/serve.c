/*
 * serve.c - `upres serve`: the HTTP API and the worker threads in one
 * process, over a SQLite database and files in the data folder.
 *
 * Every setting is a flag, and an UPRES_* environment variable when the
 * flag is absent (flag > environment > default); `upres serve -h` lists them.
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
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "api/upscale_service.h"
#include "auth/auth.h"
#include "http/fetch.h"
#include "cli/cli.h"
#include "core/clock.h"
#include "core/log.h"
#include "http/http.h"
#include "image/image.h"
#include "queue/events.h"
#include "queue/queue.h"
#include "store/store.h"
#include "upscale/upscale.h"

static void usage(FILE *f) {
    fputs(
        "usage: upres serve [options]\n"
        "\n"
        "The Upscale Service API on http://LISTEN:PORT/api/v1 (docs at /api/v1/docs).\n"
        "Each option can also be set by the environment variable shown.\n"
        "\n"
        "  -l, --listen ADDR        address to listen on (UPRES_LISTEN, default 127.0.0.1;\n"
        "                           0.0.0.0 for every interface)\n"
        "  -p, --port N             TCP port (UPRES_PORT, default 8089)\n"
        "  -d, --data DIR           data folder: database, uploads, results (UPRES_DATA, default ./data)\n"
        "  -m, --models DIR         models folder (UPRES_MODELS, default <exe>/../models or the source "
        "tree's)\n"
        "      --web DIR            web folder: openapi.json, Swagger UI (UPRES_WEB)\n"
        "  -w, --workers N          jobs run at once (UPRES_WORKERS, default 1)\n"
        "  -j, --threads N          threads per worker, 0 = all cores / workers (UPRES_THREADS, default 0)\n"
        "  -b, --backend NAME       dnnl or ref (UPRES_BACKEND, default dnnl)\n"
        "      --http-threads N     HTTP thread pool (UPRES_HTTP_THREADS, default 4)\n"
        "      --max-upload BYTES   request body limit, K/M/G suffixes (UPRES_MAX_UPLOAD, default 50M)\n"
        "      --max-pixels N       input pixel limit (UPRES_MAX_PIXELS, default 40000000)\n"
        "      --max-output-pixels N  output pixel limit (UPRES_MAX_OUTPUT_PIXELS, default 400000000)\n"
        "      --retention SEC      keep results not downloaded this long (UPRES_RETENTION, default 900)\n"
        "      --sweep-interval SEC how often expired files are deleted (UPRES_SWEEP_INTERVAL, default 10)\n"
        "      --lease SEC          a worker's claim on a job lasts this long unless renewed: a process\n"
        "                           that dies loses its jobs to the others on the data folder after it\n"
        "                           (UPRES_LEASE, default 30)\n"
        "      --heartbeat SEC      how often running jobs' claims are renewed, under --lease\n"
        "                           (UPRES_HEARTBEAT, default 10)\n"
        "      --conn-timeout SEC   idle HTTP connection timeout (UPRES_CONN_TIMEOUT, default 30)\n"
        "      --header-timeout SEC a request head must arrive within this; a connection that is slower\n"
        "                           is closed (UPRES_HEADER_TIMEOUT, default 10)\n"
        "      --min-body-rate B/S  a body must average this once --header-timeout passed, 0 = no minimum\n"
        "                           (UPRES_MIN_BODY_RATE, default 1024)\n"
        "      --max-conns N        open connections in all (UPRES_MAX_CONNS, default 1024)\n"
        "      --max-conns-per-ip N open connections per client address (UPRES_MAX_CONNS_PER_IP, default "
        "64)\n"
        "      --max-body BYTES     JSON request body limit (UPRES_MAX_BODY, default 1M)\n"
        "      --submit-threads N   uploads checked at once (image decode) on background threads\n"
        "                           (UPRES_SUBMIT_THREADS, default 8)\n"
        "      --submit-queue N     submissions that may wait for a submit (or fetch) thread; more get 503\n"
        "                           (UPRES_SUBMIT_QUEUE, default 256)\n"
        "      --max-frames N       frames of an animated input (only the first is upscaled); more get 422\n"
        "                           (UPRES_MAX_FRAMES, default 100)\n"
        "      --colour MODE        keep: results carry the input's ICC profile (its own values);\n"
        "                           srgb: convert to sRGB (UPRES_COLOUR, default keep)\n"
        "      --strip-metadata     write no ICC profile, EXIF or XMP (colours converted to sRGB)\n"
        "                           (UPRES_STRIP_METADATA=1)\n"
        "\n"
        "Accounts (API keys: upres keys -h):\n"
        "      --require-keys       the Upscale Service endpoints need a key too (UPRES_REQUIRE_KEYS=1)\n"
        "      --rate-per-minute N  requests per key per minute, 0 = no limit (UPRES_RATE_PER_MINUTE, "
        "default 60)\n"
        "      --rate-per-day N     requests per key per day, 0 = no limit (UPRES_RATE_PER_DAY, default "
        "1000)\n"
        "      --tiers FILE         tier table, JSON as GET /api/v1/tiers answers (UPRES_TIERS)\n"
        "      --public-url URL     base of result links (UPRES_PUBLIC_URL, default http://<Host header>)\n"
        "      --result-url-ttl SEC how long a result link is valid (UPRES_RESULT_URL_TTL, default 3600)\n"
        "      --fetch-timeout SEC  image_url fetch time limit (UPRES_FETCH_TIMEOUT, default 10)\n"
        "      --fetch-min-rate B/S an image_url sending less than this for 3 s is cut, 0 = no minimum\n"
        "                           (UPRES_FETCH_MIN_RATE, default 4096)\n"
        "      --fetch-threads N    image_url fetches at once, apart from uploads (UPRES_FETCH_THREADS,\n"
        "                           default 8)\n"
        "      --fetch-per-key N    fetches one key may have under way; more get 429 (UPRES_FETCH_PER_KEY,\n"
        "                           default 2)\n"
        "      --fetch-per-ip N     and one client address, keys or not (UPRES_FETCH_PER_IP, default 8)\n"
        "      --fetch-max-bytes N  image_url size limit (UPRES_FETCH_MAX_BYTES, default: --max-upload)\n"
        "      --fetch-allow CIDRS  ranges image_url may reach although not public, e.g. 10.0.0.0/8\n"
        "                           (UPRES_FETCH_ALLOW, default none)\n"
        "  -v, --verbose            debug log\n"
        "  -h, --help               this help\n",
        f);
}

enum {
    OPT_WEB = 1000,
    OPT_HTTP_THREADS,
    OPT_MAX_UPLOAD,
    OPT_MAX_PIXELS,
    OPT_MAX_OUTPUT_PIXELS,
    OPT_RETENTION,
    OPT_SWEEP,
    OPT_CONN_TIMEOUT,
    OPT_MAX_CONNS,
    OPT_MAX_CONNS_IP,
    OPT_MAX_BODY,
    OPT_REQUIRE_KEYS,
    OPT_RATE_MINUTE,
    OPT_RATE_DAY,
    OPT_TIERS,
    OPT_PUBLIC_URL,
    OPT_RESULT_TTL,
    OPT_FETCH_TIMEOUT,
    OPT_FETCH_MAX,
    OPT_FETCH_ALLOW,
    OPT_SUBMIT_THREADS,
    OPT_SUBMIT_QUEUE,
    OPT_HEADER_TIMEOUT,
    OPT_MIN_BODY_RATE,
    OPT_MAX_FRAMES,
    OPT_COLOUR,
    OPT_STRIP,
    OPT_FETCH_MIN_RATE,
    OPT_FETCH_THREADS,
    OPT_FETCH_PER_KEY,
    OPT_FETCH_PER_IP,
    OPT_LEASE,
    OPT_HEARTBEAT,
};

/* Parse a non-negative size with an optional K/M/G suffix (decimal). 0 on success. */
static int parse_size(const char *s, unsigned long long *out) {
    if (!s || !*s || *s == '-')
        return -1;
    char *end;
    double v = strtod(s, &end);
    unsigned long long mul = 1;
    if (*end == 'k' || *end == 'K')
        mul = 1000ULL, end++;
    else if (*end == 'm' || *end == 'M')
        mul = 1000ULL * 1000, end++;
    else if (*end == 'g' || *end == 'G')
        mul = 1000ULL * 1000 * 1000, end++;
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end || v < 0 || v > 1e18)
        return -1;
    *out = (unsigned long long)(v * (double)mul);
    return 0;
}

static int parse_num(const char *s, double lo, double hi, double *out) {
    if (!s || !*s)
        return -1;
    char *end;
    double v = strtod(s, &end);
    if (*end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int cmd_serve(int argc, char **argv) {
    static const struct option longopts[] = {
        {"listen", required_argument, 0, 'l'},
        {"port", required_argument, 0, 'p'},
        {"data", required_argument, 0, 'd'},
        {"models", required_argument, 0, 'm'},
        {"web", required_argument, 0, OPT_WEB},
        {"workers", required_argument, 0, 'w'},
        {"threads", required_argument, 0, 'j'},
        {"backend", required_argument, 0, 'b'},
        {"http-threads", required_argument, 0, OPT_HTTP_THREADS},
        {"max-upload", required_argument, 0, OPT_MAX_UPLOAD},
        {"max-pixels", required_argument, 0, OPT_MAX_PIXELS},
        {"max-output-pixels", required_argument, 0, OPT_MAX_OUTPUT_PIXELS},
        {"retention", required_argument, 0, OPT_RETENTION},
        {"sweep-interval", required_argument, 0, OPT_SWEEP},
        {"conn-timeout", required_argument, 0, OPT_CONN_TIMEOUT},
        {"max-conns", required_argument, 0, OPT_MAX_CONNS},
        {"max-conns-per-ip", required_argument, 0, OPT_MAX_CONNS_IP},
        {"max-body", required_argument, 0, OPT_MAX_BODY},
        {"require-keys", no_argument, 0, OPT_REQUIRE_KEYS},
        {"rate-per-minute", required_argument, 0, OPT_RATE_MINUTE},
        {"rate-per-day", required_argument, 0, OPT_RATE_DAY},
        {"tiers", required_argument, 0, OPT_TIERS},
        {"public-url", required_argument, 0, OPT_PUBLIC_URL},
        {"result-url-ttl", required_argument, 0, OPT_RESULT_TTL},
        {"fetch-timeout", required_argument, 0, OPT_FETCH_TIMEOUT},
        {"fetch-max-bytes", required_argument, 0, OPT_FETCH_MAX},
        {"fetch-allow", required_argument, 0, OPT_FETCH_ALLOW},
        {"submit-threads", required_argument, 0, OPT_SUBMIT_THREADS},
        {"submit-queue", required_argument, 0, OPT_SUBMIT_QUEUE},
        {"header-timeout", required_argument, 0, OPT_HEADER_TIMEOUT},
        {"min-body-rate", required_argument, 0, OPT_MIN_BODY_RATE},
        {"max-frames", required_argument, 0, OPT_MAX_FRAMES},
        {"colour", required_argument, 0, OPT_COLOUR},
        {"strip-metadata", no_argument, 0, OPT_STRIP},
        {"fetch-min-rate", required_argument, 0, OPT_FETCH_MIN_RATE},
        {"fetch-threads", required_argument, 0, OPT_FETCH_THREADS},
        {"fetch-per-key", required_argument, 0, OPT_FETCH_PER_KEY},
        {"fetch-per-ip", required_argument, 0, OPT_FETCH_PER_IP},
        {"lease", required_argument, 0, OPT_LEASE},
        {"heartbeat", required_argument, 0, OPT_HEARTBEAT},
        {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *o_listen = NULL, *o_port = NULL, *o_data = NULL, *o_models = NULL, *o_web = NULL,
               *o_workers = NULL, *o_threads = NULL, *o_backend = NULL, *o_http_threads = NULL,
               *o_max_upload = NULL, *o_max_pixels = NULL, *o_max_out = NULL, *o_retention = NULL,
               *o_sweep = NULL, *o_timeout = NULL, *o_max_conns = NULL, *o_max_conns_ip = NULL,
               *o_max_body = NULL, *o_require_keys = NULL, *o_rate_minute = NULL, *o_rate_day = NULL,
               *o_tiers = NULL, *o_public_url = NULL, *o_result_ttl = NULL, *o_fetch_timeout = NULL,
               *o_fetch_max = NULL, *o_fetch_allow = NULL, *o_submit_threads = NULL,
               *o_submit_queue = NULL, *o_header_timeout = NULL, *o_min_body_rate = NULL,
               *o_max_frames = NULL, *o_colour = NULL, *o_strip = NULL, *o_fetch_min_rate = NULL,
               *o_fetch_threads = NULL, *o_fetch_per_key = NULL, *o_fetch_per_ip = NULL;
    const char *o_lease = NULL, *o_heartbeat = NULL;
    /* a server logs each request: info by default, UPRES_LOG_LEVEL or -v to change */
    const char *lvl = getenv("UPRES_LOG_LEVEL");
    log_set_level(!lvl                    ? LOG_INFO
                  : !strcmp(lvl, "error") ? LOG_ERROR
                  : !strcmp(lvl, "warn")  ? LOG_WARN
                  : !strcmp(lvl, "debug") ? LOG_DEBUG
                                          : LOG_INFO);
    int c;
    optind = 0;
    while ((c = getopt_long(argc + 1, argv - 1, "l:p:d:m:w:j:b:vh", longopts, NULL)) != -1) {
        switch (c) {
        case 'l': o_listen = optarg; break;
        case 'p': o_port = optarg; break;
        case 'd': o_data = optarg; break;
        case 'm': o_models = optarg; break;
        case OPT_WEB: o_web = optarg; break;
        case 'w': o_workers = optarg; break;
        case 'j': o_threads = optarg; break;
        case 'b': o_backend = optarg; break;
        case OPT_HTTP_THREADS: o_http_threads = optarg; break;
        case OPT_MAX_UPLOAD: o_max_upload = optarg; break;
        case OPT_MAX_PIXELS: o_max_pixels = optarg; break;
        case OPT_MAX_OUTPUT_PIXELS: o_max_out = optarg; break;
        case OPT_RETENTION: o_retention = optarg; break;
        case OPT_SWEEP: o_sweep = optarg; break;
        case OPT_CONN_TIMEOUT: o_timeout = optarg; break;
        case OPT_MAX_CONNS: o_max_conns = optarg; break;
        case OPT_MAX_CONNS_IP: o_max_conns_ip = optarg; break;
        case OPT_MAX_BODY: o_max_body = optarg; break;
        case OPT_REQUIRE_KEYS: o_require_keys = "1"; break;
        case OPT_RATE_MINUTE: o_rate_minute = optarg; break;
        case OPT_RATE_DAY: o_rate_day = optarg; break;
        case OPT_TIERS: o_tiers = optarg; break;
        case OPT_PUBLIC_URL: o_public_url = optarg; break;
        case OPT_RESULT_TTL: o_result_ttl = optarg; break;
        case OPT_FETCH_TIMEOUT: o_fetch_timeout = optarg; break;
        case OPT_FETCH_MAX: o_fetch_max = optarg; break;
        case OPT_FETCH_ALLOW: o_fetch_allow = optarg; break;
        case OPT_SUBMIT_THREADS: o_submit_threads = optarg; break;
        case OPT_SUBMIT_QUEUE: o_submit_queue = optarg; break;
        case OPT_HEADER_TIMEOUT: o_header_timeout = optarg; break;
        case OPT_MIN_BODY_RATE: o_min_body_rate = optarg; break;
        case OPT_MAX_FRAMES: o_max_frames = optarg; break;
        case OPT_COLOUR: o_colour = optarg; break;
        case OPT_STRIP: o_strip = "1"; break;
        case OPT_FETCH_MIN_RATE: o_fetch_min_rate = optarg; break;
        case OPT_FETCH_THREADS: o_fetch_threads = optarg; break;
        case OPT_FETCH_PER_KEY: o_fetch_per_key = optarg; break;
        case OPT_FETCH_PER_IP: o_fetch_per_ip = optarg; break;
        case OPT_LEASE: o_lease = optarg; break;
        case OPT_HEARTBEAT: o_heartbeat = optarg; break;
        case 'v': log_set_level(LOG_DEBUG); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc + 1) {
        cli_error("unexpected argument '%s' (try: upres serve -h)", argv[optind - 1]);
        return 2;
    }

    http_config_t hc;
    http_config_init(&hc);
    queue_config_t qc;
    queue_config_init(&qc);
    double v;
    up_error_t err;
    const char *s;

#define BAD(name, val, what)                                                                                 \
    do {                                                                                                     \
        cli_error("bad %s '%s': %s", name, val, what);                                                       \
        return 2;                                                                                            \
    } while (0)

    if ((s = cli_setting(o_listen, "UPRES_LISTEN")))
        hc.listen_addr = s;
    if ((s = cli_setting(o_port, "UPRES_PORT"))) {
        if (parse_num(s, 0, 65535, &v))
            BAD("port", s, "0 to 65535");
        hc.port = (int)v;
    }
    const char *data_dir = cli_setting(o_data, "UPRES_DATA");
    if (!data_dir)
        data_dir = "./data";
    if ((s = cli_setting(o_workers, "UPRES_WORKERS"))) {
        if (parse_num(s, 1, 256, &v))
            BAD("workers", s, "1 to 256");
        qc.n_workers = (int)v;
    }
    if ((s = cli_setting(o_threads, "UPRES_THREADS"))) {
        if (parse_num(s, 0, 1024, &v))
            BAD("threads", s, "0 (all cores) to 1024");
        qc.threads_per_worker = (int)v;
    }
    if ((s = cli_setting(o_backend, "UPRES_BACKEND")) && nn_backend_parse(s, &qc.backend))
        BAD("backend", s, "dnnl or ref");
    if ((s = cli_setting(o_http_threads, "UPRES_HTTP_THREADS"))) {
        if (parse_num(s, 1, 256, &v))
            BAD("http-threads", s, "1 to 256");
        hc.n_threads = (int)v;
    }
    if ((s = cli_setting(o_max_upload, "UPRES_MAX_UPLOAD")) &&
        (parse_size(s, &hc.max_upload) || !hc.max_upload))
        BAD("max-upload", s, "bytes, with an optional K, M or G suffix");
    if ((s = cli_setting(o_max_pixels, "UPRES_MAX_PIXELS")) && parse_size(s, &qc.max_input_pixels))
        BAD("max-pixels", s, "a pixel count (0 = no limit)");
    if ((s = cli_setting(o_max_out, "UPRES_MAX_OUTPUT_PIXELS")) && parse_size(s, &qc.max_output_pixels))
        BAD("max-output-pixels", s, "a pixel count (0 = no limit)");
    if ((s = cli_setting(o_retention, "UPRES_RETENTION"))) {
        if (parse_num(s, 0, 1e9, &v))
            BAD("retention", s, "seconds");
        qc.retention_s = v;
    }
    if ((s = cli_setting(o_sweep, "UPRES_SWEEP_INTERVAL"))) {
        if (parse_num(s, 0.05, 86400, &v))
            BAD("sweep-interval", s, "seconds, 0.05 or more");
        qc.sweep_interval_s = v;
    }
    if ((s = cli_setting(o_lease, "UPRES_LEASE"))) {
        if (parse_num(s, 0.5, 86400, &v))
            BAD("lease", s, "seconds from 0.5 to 86400");
        qc.lease_s = v;
    }
    if ((s = cli_setting(o_heartbeat, "UPRES_HEARTBEAT"))) {
        if (parse_num(s, 0.1, 86400, &v))
            BAD("heartbeat", s, "seconds, 0.1 or more");
        qc.heartbeat_s = v;
    }
    if (qc.heartbeat_s >= qc.lease_s) {
        cli_error("bad heartbeat %g s: it must be under the lease (%g s), so that a live worker's claim "
                  "never runs out",
                  qc.heartbeat_s, qc.lease_s);
        return 2;
    }
    if ((s = cli_setting(o_timeout, "UPRES_CONN_TIMEOUT"))) {
        if (parse_num(s, 1, 86400, &v))
            BAD("conn-timeout", s, "seconds, 1 or more");
        hc.conn_timeout_s = (unsigned)v;
    }
    if ((s = cli_setting(o_header_timeout, "UPRES_HEADER_TIMEOUT"))) {
        if (parse_num(s, 1, 3600, &v))
            BAD("header-timeout", s, "seconds from 1 to 3600");
        hc.head_timeout_s = (unsigned)v;
    }
    if ((s = cli_setting(o_min_body_rate, "UPRES_MIN_BODY_RATE"))) {
        if (parse_num(s, 0, 1e9, &v))
            BAD("min-body-rate", s, "bytes per second, 0 (no minimum) or more");
        hc.min_body_rate = (unsigned)v;
    }
    if ((s = cli_setting(o_fetch_threads, "UPRES_FETCH_THREADS"))) {
        if (parse_num(s, 1, 256, &v))
            BAD("fetch-threads", s, "1 to 256");
        hc.n_fetch_threads = (int)v;
    }
    if ((s = cli_setting(o_colour, "UPRES_COLOUR"))) {
        if (strcmp(s, "keep") && strcmp(s, "srgb"))
            BAD("colour", s, "keep or srgb");
        qc.colour_srgb = !strcmp(s, "srgb");
    }
    if ((s = cli_setting(o_strip, "UPRES_STRIP_METADATA")))
        qc.strip_metadata = strcmp(s, "0") != 0;
    if ((s = cli_setting(o_max_conns, "UPRES_MAX_CONNS"))) {
        if (parse_num(s, 1, 1e6, &v))
            BAD("max-conns", s, "1 or more");
        hc.max_conns = (unsigned)v;
    }
    if ((s = cli_setting(o_max_conns_ip, "UPRES_MAX_CONNS_PER_IP"))) {
        if (parse_num(s, 1, 1e6, &v))
            BAD("max-conns-per-ip", s, "1 or more");
        hc.max_conns_per_ip = (unsigned)v;
    }
    if ((s = cli_setting(o_max_body, "UPRES_MAX_BODY"))) {
        unsigned long long b;
        if (parse_size(s, &b) || b < 1024 || b > (1ULL << 30))
            BAD("max-body", s, "bytes from 1K to 1G");
        hc.max_body = (size_t)b;
    }

    /* accounts: handlers may run until http_server_stop returns, so api outlives them */
    static api_t api;
    api_init(&api);
    if ((s = cli_setting(o_require_keys, "UPRES_REQUIRE_KEYS")))
        api.require_keys = strcmp(s, "0") != 0;
    int per_minute = 60, per_day = 1000;
    if ((s = cli_setting(o_rate_minute, "UPRES_RATE_PER_MINUTE"))) {
        if (parse_num(s, 0, 1e9, &v))
            BAD("rate-per-minute", s, "0 (no limit) or more");
        per_minute = (int)v;
    }
    if ((s = cli_setting(o_rate_day, "UPRES_RATE_PER_DAY"))) {
        if (parse_num(s, 0, 1e9, &v))
            BAD("rate-per-day", s, "0 (no limit) or more");
        per_day = (int)v;
    }
    if ((s = cli_setting(o_tiers, "UPRES_TIERS")) && tiers_load(s, &api.tiers, &err)) {
        cli_error("%s", err.msg);
        return 2;
    }
    api.public_url = cli_setting(o_public_url, "UPRES_PUBLIC_URL");
    if (api.public_url && strncmp(api.public_url, "http://", 7) && strncmp(api.public_url, "https://", 8))
        BAD("public-url", api.public_url, "an http:// or https:// URL");
    if ((s = cli_setting(o_result_ttl, "UPRES_RESULT_URL_TTL"))) {
        if (parse_num(s, 1, 1e8, &v))
            BAD("result-url-ttl", s, "seconds, 1 or more");
        api.result_url_ttl = v;
    }
    if ((s = cli_setting(o_fetch_timeout, "UPRES_FETCH_TIMEOUT"))) {
        if (parse_num(s, 0.1, 3600, &v))
            BAD("fetch-timeout", s, "seconds from 0.1 to 3600");
        api.fetch.timeout_s = v;
    }
    api.fetch.max_bytes = (size_t)hc.max_upload;
    if ((s = cli_setting(o_fetch_max, "UPRES_FETCH_MAX_BYTES"))) {
        unsigned long long b;
        if (parse_size(s, &b) || !b)
            BAD("fetch-max-bytes", s, "bytes, with an optional K, M or G suffix");
        api.fetch.max_bytes = (size_t)b;
    }
    if ((s = cli_setting(o_submit_threads, "UPRES_SUBMIT_THREADS"))) {
        if (parse_num(s, 1, 256, &v))
            BAD("submit-threads", s, "1 to 256");
        hc.n_defer_threads = (int)v;
    }
    if ((s = cli_setting(o_submit_queue, "UPRES_SUBMIT_QUEUE"))) {
        if (parse_num(s, 1, 65536, &v))
            BAD("submit-queue", s, "1 to 65536");
        hc.defer_queue = (int)v;
    }
    hc.fetch_queue = hc.defer_queue; /* one waiting room size for both pools */
    if ((s = cli_setting(o_fetch_allow, "UPRES_FETCH_ALLOW"))) {
        if (fetch_allow_validate(s, &err))
            BAD("fetch-allow", s, err.msg);
        api.fetch.allow = s;
    }
    if ((s = cli_setting(o_fetch_min_rate, "UPRES_FETCH_MIN_RATE"))) {
        if (parse_num(s, 0, 1e9, &v))
            BAD("fetch-min-rate", s, "bytes per second, 0 (no minimum) or more");
        api.fetch.min_rate = v;
    }
    if ((s = cli_setting(o_fetch_per_key, "UPRES_FETCH_PER_KEY"))) {
        if (parse_num(s, 1, 65536, &v))
            BAD("fetch-per-key", s, "1 to 65536");
        api.fetch_per_key = (int)v;
    }
    if ((s = cli_setting(o_fetch_per_ip, "UPRES_FETCH_PER_IP"))) {
        if (parse_num(s, 1, 65536, &v))
            BAD("fetch-per-ip", s, "1 to 65536");
        api.fetch_per_ip = (int)v;
    }
    if ((s = cli_setting(o_max_frames, "UPRES_MAX_FRAMES"))) {
        if (parse_num(s, 1, 1e6, &v))
            BAD("max-frames", s, "1 or more");
        api.max_frames = (int)v;
    }
#undef BAD

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
    queue_t *q = NULL;
    events_t *events = events_new(); /* job changes: the queue publishes, event streams listen */
    http_server_t *srv = NULL;
    char models_buf[1024], web_buf[1024];
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
    if (store_open(data_dir, &st, &err)) {
        cli_error("%s", err.msg);
        goto done;
    }
    qc.data_dir = data_dir;
    qc.registry = reg;
    qc.events = events;
    if (queue_start(st, &qc, &q, &err)) {
        cli_error("%s", err.msg);
        goto done;
    }
    if (auth_secret_load(data_dir, api.secret, &err)) {
        cli_error("%s", err.msg);
        goto done;
    }
    api.store = st;
    api.queue = q;
    api.events = events;
    api.registry = reg;
    api.web_dir = upscale_service_web_dir(o_web, web_buf, sizeof web_buf);
    api.max_input_pixels = qc.max_input_pixels; /* the API checks at submit what the workers enforce */
    api.max_output_pixels = qc.max_output_pixels;
    api.n_workers = qc.n_workers;
    api.rate = ratelimit_new(per_minute, per_day);
    api.rate_per_minute = per_minute;
    api.rate_per_day = per_day;

    hc.upload_dir = queue_uploads_dir(q);
    int n_routes;
    routes = api_routes(&n_routes);
    if (http_server_start(&hc, routes, n_routes, &api, &srv, &err)) {
        cli_error("%s", err.msg);
        goto done;
    }
    log_info("serve: listening on http://%s:%d/api/v1 (docs: /api/v1/docs), data %s, models %s, %d model(s)",
             hc.listen_addr, http_server_port(srv), data_dir, models_dir, reg->n_models);
    if (!api.public_url)
        log_info("serve: result links follow each request's Host header (a plain host[:port]; others get "
                 "400): set --public-url when a proxy or clients may send another host");

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0) {
    }
    double t_stop = mono_s();
    log_info("serve: %s: stopping (running jobs stop now and are requeued)",
             sig == SIGINT ? "SIGINT" : "SIGTERM");
    atomic_store(&api.stopping, 1);
    http_server_quiesce(srv);
    http_server_stop(srv); /* before queue_stop: handlers use the queue */
    srv = NULL;
    queue_stop(q);
    q = NULL;
    status = 0;
    log_info("serve: stopped in %.2f s", mono_s() - t_stop);
done:
    http_server_stop(srv);
    free(routes);
    ratelimit_free(api.rate);
    api_fini(&api);
    queue_stop(q);
    store_close(st);
    events_free(events); /* after everything that publishes or listens has stopped */
    upscale_registry_free(reg);
    return status;
}
