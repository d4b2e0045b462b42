/*
 * workers.c - the operator's store commands: `upres workers list` (the
 * workers registry: who runs jobs, with which models, running what, last
 * seen when) and `upres db migrate` (create or migrate the schema of a
 * store and say its version). Both take --store URL (or UPRES_STORE) and
 * --data DIR (the default store's folder), as every store command does.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/clock.h"
#include "store/store.h"

typedef struct store_opts {
    const char *data;
    const char *store;
    int all;
} store_opts_t;

/* --data, --store and (list) --all; -1 to go on, else the exit status. */
static int parse_opts(int argc, char **argv, const char *usage, int with_all, store_opts_t *o) {
    static const struct option longopts[] = {{"data", required_argument, 0, 'd'},
                                             {"store", required_argument, 0, 's'},
                                             {"all", no_argument, 0, 'a'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    const char *data = NULL, *store = NULL;
    o->all = 0;
    int c;
    optind = 0;
    while ((c = getopt_long(argc + 1, argv - 1, "d:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'd': data = optarg; break;
        case 's': store = optarg; break;
        case 'a':
            if (!with_all) {
                fputs(usage, stderr);
                return 2;
            }
            o->all = 1;
            break;
        case 'h': fputs(usage, stdout); return 0;
        default: fputs(usage, stderr); return 2;
        }
    }
    if (optind < argc + 1) {
        cli_error("unexpected argument '%s'", argv[optind - 1]);
        return 2;
    }
    o->data = cli_setting(data, "UPRES_DATA");
    if (!o->data)
        o->data = "./data";
    o->store = cli_setting(store, "UPRES_STORE");
    up_error_t err;
    if (o->store && store_url_check(o->store, &err)) {
        cli_error("%s", err.msg);
        return 2;
    }
    return -1;
}

static const char list_usage[] =
    "usage: upres workers list [--all] [--store URL] [-d DIR]\n"
    "\n"
    "The processes that run jobs on the store (upres worker, upres serve with\n"
    "workers): name, models, slots, current jobs, last heartbeat, state.\n"
    "\n"
    "      --all           also the rows whose heartbeat lapsed (state 'lapsed')\n"
    "      --store URL     job store (default $UPRES_STORE, else the data folder's)\n"
    "  -d, --data DIR      data folder (default $UPRES_DATA, else ./data)\n"
    "  -h, --help          this help\n";

static int workers_list(int argc, char **argv) {
    store_opts_t o;
    int rc = parse_opts(argc, argv, list_usage, 1, &o);
    if (rc >= 0)
        return rc;
    store_t *st = NULL;
    up_error_t err;
    if (store_open_url(o.store, o.data, &st, &err)) {
        cli_error("%s", err.msg);
        return 1;
    }
    store_worker_t *w = NULL;
    int n = 0;
    if (store_workers_list(st, o.all, &w, &n, &err)) {
        cli_error("%s", err.msg);
        store_close(st);
        return 1;
    }
    double now = now_s();
    printf("%-28s %-9s %-30s %5s %-40s %9s  %s\n", "NAME", "STATE", "MODELS", "SLOTS", "JOBS", "HEARTBEAT",
           "HOST:PID");
    for (int i = 0; i < n; i++) {
        char seen[32], host[96];
        snprintf(seen, sizeof seen, "%.1fs ago", now - w[i].heartbeat_at);
        snprintf(host, sizeof host, "%s:%d", w[i].host, w[i].pid);
        printf("%-28s %-9s %-30s %5d %-40s %9s  %s\n", w[i].name,
               store_worker_live(&w[i], now) ? w[i].state : "lapsed", w[i].models[0] ? w[i].models : "all",
               w[i].slots, w[i].jobs[0] ? w[i].jobs : "-", seen, host);
    }
    free(w);
    store_close(st);
    return 0;
}

static const char migrate_usage[] =
    "usage: upres db migrate [--store URL] [-d DIR]\n"
    "\n"
    "Create the store's schema, or migrate it to this upres's version, and\n"
    "print the version (every command that opens a store does the same first).\n"
    "\n"
    "      --store URL     job store (default $UPRES_STORE, else the data folder's)\n"
    "  -d, --data DIR      data folder (default $UPRES_DATA, else ./data)\n"
    "  -h, --help          this help\n";

static int db_migrate(int argc, char **argv) {
    store_opts_t o;
    int rc = parse_opts(argc, argv, migrate_usage, 0, &o);
    if (rc >= 0)
        return rc;
    store_t *st = NULL;
    up_error_t err;
    if (store_open_url(o.store, o.data, &st, &err)) {
        cli_error("%s", err.msg);
        return 1;
    }
    int version = 0;
    const char *backend = "";
    rc = store_schema_version(st, &version, &backend, &err);
    if (rc)
        cli_error("%s", err.msg);
    else
        printf("%s store: schema version %d\n", backend, version);
    store_close(st);
    return rc ? 1 : 0;
}

int cmd_workers(int argc, char **argv) {
    if (argc >= 1 && !strcmp(argv[0], "list"))
        return workers_list(argc - 1, argv + 1);
    if (argc >= 1 && (!strcmp(argv[0], "-h") || !strcmp(argv[0], "--help"))) {
        fputs(list_usage, stdout);
        return 0;
    }
    fputs(list_usage, stderr);
    return 2;
}

int cmd_db(int argc, char **argv) {
    if (argc >= 1 && !strcmp(argv[0], "migrate"))
        return db_migrate(argc - 1, argv + 1);
    if (argc >= 1 && (!strcmp(argv[0], "-h") || !strcmp(argv[0], "--help"))) {
        fputs(migrate_usage, stdout);
        return 0;
    }
    fputs(migrate_usage, stderr);
    return 2;
}
