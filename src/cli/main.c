/*
 * main.c - the upres command: dispatch to a subcommand.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

void cli_error(const char *fmt, ...) {
    va_list ap;
    fputs("upres: error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

const char *cli_setting(const char *flag, const char *env) {
    if (flag)
        return flag;
    const char *e = getenv(env);
    return e && *e ? e : NULL;
}

static void usage(FILE *f) {
    fputs("usage: upres COMMAND [options]\n"
          "\n"
          "commands:\n"
          "  upscale   upscale an image or a folder of images (upres upscale -h)\n"
          "  models    list the installed models and their scales\n"
          "  bench     measure the engine's speed on this machine\n"
          "  serve     run the HTTP API server on port 8089 (upres serve -h)\n"
          "  keys      create, list, update and revoke API keys (upres keys -h)\n"
          "  submit    queue image files as jobs for the servers on a data folder (upres submit -h)\n"
          "  worker    run jobs from a store, no HTTP API: scaling out (upres worker -h)\n"
          "  workers   list the processes that run jobs (upres workers list -h)\n"
          "  db        create or migrate a store's schema (upres db migrate -h)\n",
          f);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "upscale"))
        return cmd_upscale(argc - 2, argv + 2);
    if (!strcmp(cmd, "models"))
        return cmd_models(argc - 2, argv + 2);
    if (!strcmp(cmd, "serve"))
        return cmd_serve(argc - 2, argv + 2);
    if (!strcmp(cmd, "keys"))
        return cmd_keys(argc - 2, argv + 2);
    if (!strcmp(cmd, "submit"))
        return cmd_submit(argc - 2, argv + 2);
    if (!strcmp(cmd, "worker"))
        return cmd_worker(argc - 2, argv + 2);
    if (!strcmp(cmd, "workers"))
        return cmd_workers(argc - 2, argv + 2);
    if (!strcmp(cmd, "db"))
        return cmd_db(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench"))
        return cmd_bench(argc - 2, argv + 2);
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    cli_error("unknown command '%s' (try: upres --help)", cmd);
    return 2;
}
