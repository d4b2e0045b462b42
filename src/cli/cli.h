/*
 * cli.h - the upres subcommands (one file each) and what they share.
 *
 * Each command takes argc/argv without the program name and returns the
 * process exit status: 0 success, 1 failure (after printing one line
 * "upres: error: ..." to stderr), 2 usage error.
 */
#ifndef UPRES_CLI_CLI_H
#define UPRES_CLI_CLI_H

int cmd_upscale(int argc, char **argv);
int cmd_models(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_keys(int argc, char **argv);
int cmd_submit(int argc, char **argv);
int cmd_worker(int argc, char **argv);
int cmd_workers(int argc, char **argv);
int cmd_db(int argc, char **argv);

/* The flag's value when given, else the environment variable's when set and not empty, else NULL. */
const char *cli_setting(const char *flag, const char *env);

/* Print "upres: error: <message>" on one line. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
