/*
 * submit.c - `upres submit`: queue image files as jobs in a data folder,
 * through the jobs API (src/jobs), with no server in between. Whatever
 * runs on that folder (`upres serve`, any number of them) claims and runs
 * them; their results are read through any of the server's APIs by id.
 * One JSON line per file on stdout: the job, or the refusal.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blob/blob.h"
#include "cli/cli.h"
#include "core/log.h"
#include "image/image.h"
#include "jobs/jobs.h"
#include "steps/steps.h"
#include "store/store.h"
#include "store/rules.h"
#include "upscale/upscale.h"

static void usage(FILE *f) {
    fputs(
        "usage: upres submit [options] FILE...\n"
        "\n"
        "Queue each FILE as a job in a data folder, for the servers running on it\n"
        "(or started later). Prints one JSON line per file: {\"file\", \"job_id\",\n"
        "\"status\"} or {\"file\", \"error\", \"code\"}.\n"
        "\n"
        "  -d, --data DIR       data folder (default $UPRES_DATA, else ./data)\n"
        "      --store URL      job store (default $UPRES_STORE, else the data folder's)\n"
        "      --blobs URL      blob store, as serve's --blobs (default $UPRES_BLOBS, else the data folder)\n"
        "  -m, --model NAME     model (default " UPSCALE_DEFAULT_MODEL ")\n"
        "  -s, --scale N        output scale, 1 to 16 (default the model's native scale)\n"
        "  -f, --format F       png, jpg or webp (default: the input's, else png)\n"
        "  -q, --quality Q      1 to 100 for jpg and webp\n"
        "      --steps JSON     a whole pipeline instead of -m/-s/-f/-q (see docs/architecture.md)\n"
        "      --priority N     -10 to 10 (default 0): a higher one is claimed first, whatever the queue\n"
        "      --models DIR     models folder\n"
        "  -h, --help           this help\n",
        f);
}

/* The whole file (new: free()), *size; NULL with a message in *err. */
static void *read_file(const char *path, size_t *size, up_error_t *err) {
    FILE *f = fopen(path, "rb");
    void *buf = NULL;
    long n = -1;
    if (f && fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)n + 1)) && fread(buf, 1, (size_t)n, f) == (size_t)n) {
        fclose(f);
        *size = (size_t)n;
        return buf;
    }
    up_error_set(err, UP_ERR_IO, 0, "cannot read %s", path);
    free(buf);
    if (f)
        fclose(f);
    return NULL;
}

/* jobs_answer_fn: the line printed for a queued job. */
static char *answer(void *ctx, const job_t *jobs, int n, const char *note, unsigned *status) {
    (void)n;
    *status = 201;
    json_t *o = json_pack("{s:s,s:s,s:s,s:s?}", "file", (const char *)ctx, "job_id", jobs[0].id, "status",
                          "queued", "note", note);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return text;
}

static void print_refusal(const char *file, jobs_refusal_t *r) {
    json_t *o = json_pack("{s:s,s:s,s:s,s:i}", "file", file, "error", r->message, "code", r->code, "status",
                          (int)r->status);
    if (o && r->extra)
        json_object_update(o, r->extra);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    puts(text ? text : "{\"error\":\"out of memory\"}");
    free(text);
    json_decref(o);
    jobs_refusal_fini(r);
}

int cmd_submit(int argc, char **argv) {
    enum { OPT_STORE = 256, OPT_BLOBS, OPT_STEPS, OPT_MODELS, OPT_PRIORITY };
    static const struct option longopts[] = {
        {"data", required_argument, 0, 'd'},
        {"store", required_argument, 0, OPT_STORE},
        {"blobs", required_argument, 0, OPT_BLOBS},
        {"model", required_argument, 0, 'm'},
        {"scale", required_argument, 0, 's'},
        {"format", required_argument, 0, 'f'},
        {"quality", required_argument, 0, 'q'},
        {"steps", required_argument, 0, OPT_STEPS},
        {"models", required_argument, 0, OPT_MODELS},
        {"priority", required_argument, 0, OPT_PRIORITY},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *data = NULL, *store_url = NULL, *blobs_url = NULL, *model = UPSCALE_DEFAULT_MODEL,
               *format = "", *steps = NULL, *models = NULL;
    double scale = 0;
    int quality = 0, priority = 0, c;
    char *end;
    /* getopt takes argv[0] for the program name: start at the subcommand's name */
    argc++;
    argv--;
    opterr = 0;
    optind = 0;
    while ((c = getopt_long(argc, argv, ":d:m:s:f:q:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'd': data = optarg; break;
        case OPT_STORE: store_url = optarg; break;
        case OPT_BLOBS: blobs_url = optarg; break;
        case 'm': model = optarg; break;
        case 's':
            scale = strtod(optarg, &end);
            if (*end || !(scale >= 1 && scale <= 16)) {
                cli_error("bad scale '%s': 1 to 16", optarg);
                return 2;
            }
            break;
        case 'f':
            format = image_format_canonical(optarg);
            if (!format) {
                cli_error("bad format '%s': png, jpg or webp", optarg);
                return 2;
            }
            break;
        case 'q':
            quality = (int)strtol(optarg, &end, 10);
            if (*end || quality < 1 || quality > 100) {
                cli_error("bad quality '%s': 1 to 100", optarg);
                return 2;
            }
            break;
        case OPT_STEPS: steps = optarg; break;
        case OPT_MODELS: models = optarg; break;
        case OPT_PRIORITY:
            priority = (int)strtol(optarg, &end, 10);
            if (!*optarg || *end || priority < STORE_PRIORITY_MIN || priority > STORE_PRIORITY_MAX) {
                cli_error("bad priority '%s': %d to %d", optarg, STORE_PRIORITY_MIN, STORE_PRIORITY_MAX);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        case ':': cli_error("option %s needs a value", argv[optind - 1]); return 2;
        default: cli_error("unknown option %s (try: upres submit -h)", argv[optind - 1]); return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    log_set_level(LOG_WARN);
    data = cli_setting(data, "UPRES_DATA");
    if (!data)
        data = "./data";
    store_url = cli_setting(store_url, "UPRES_STORE");
    blobs_url = cli_setting(blobs_url, "UPRES_BLOBS");

    /* the one pipeline every file gets, checked before anything is opened */
    steps_t st;
    up_error_t err;
    if (blob_url_check(blobs_url, &err)) {
        cli_error("%s", err.msg);
        return 2;
    }
    if (steps ? steps_parse_text(steps, &st, &err) : 0) {
        cli_error("bad --steps: %s", err.msg);
        return 2;
    }
    if (!steps)
        steps_upscale(&st, model, scale, 0, format, quality);
    char *steps_json = steps_text(&st);
    if (steps_json && strlen(steps_json) >= sizeof((job_t *)0)->steps) {
        cli_error("the pipeline is over %zu bytes", sizeof((job_t *)0)->steps - 1);
        free(steps_json);
        return 2;
    }

    int status = 1;
    char models_buf[1024];
    upscale_registry_t *reg = NULL;
    store_t *store = NULL;
    blob_store_t *blobs = NULL;
    if (!steps_json ||
        upscale_registry_scan(upscale_models_dir(models, models_buf, sizeof models_buf), &reg, &err) ||
        store_open_url(store_url, data, &store, &err) ||
        blob_open_url(blobs_url, data, store_url, &blobs, &err)) {
        cli_error("%s", steps_json ? err.msg : "out of memory");
        goto out;
    }
    jobs_t jobs;
    jobs_init(&jobs);
    jobs.store = store;
    jobs.blobs = blobs;
    jobs.registry = reg;
    jobs.max_input_pixels = upscale_max_input_pixels();
    status = 0;
    for (int i = optind; i < argc; i++) {
        const char *file = argv[i];
        jobs_refusal_t r = {0};
        size_t size = 0;
        void *bytes = read_file(file, &size, &err);
        if (!bytes) {
            snprintf(r.code, sizeof r.code, "FILE_UNREADABLE");
            snprintf(r.message, sizeof r.message, "%s", err.msg);
            print_refusal(file, &r);
            status = 1;
            continue;
        }
        const char *base = strrchr(file, '/');
        job_t job;
        memset(&job, 0, sizeof job);
        snprintf(job.steps, sizeof job.steps, "%s", steps_json);
        job.priority = priority;
        jobs_submission_t s = {.input = {.data = bytes, .size = size, .name = base ? base + 1 : file},
                               .jobs = &job,
                               .n = 1,
                               .answer = answer,
                               .answer_ctx = (void *)file,
                               .operator_priority = 1}; /* the operator's own queue */
        jobs_answer_t a;
        if (jobs_submit(&jobs, &s, &a, &r)) {
            print_refusal(file, &r);
            status = 1;
        } else {
            puts(a.body);
            free(a.body);
        }
        free(bytes);
    }
out:
    free(steps_json);
    blob_close(blobs);
    store_close(store);
    upscale_registry_free(reg);
    return status;
}
