/*
 * settings.h - a command's settings as one table: each entry names a flag,
 * its environment variable, its type and range, its default, its help, and
 * where its value lands (an offset into one of the command's config
 * structs). The command's -h, its getopt table, the parsing of flags and
 * environment (flag > environment > default), the refusal of bad values
 * and README's rows (an undocumented --settings-markdown) all come from it,
 * so that a setting is named and bounded in one place.
 *
 * Defaults stay where the config structs are initialised (http_config_init,
 * queue_config_init, api_init, ...): an entry's def is what -h and README
 * show, and --settings-markdown refuses to print a default that differs from
 * the initialised struct's value (tests/e2e/settings_test.py runs it).
 *
 * Values are borrowed from argv and the environment: a string setting's
 * pointer stays valid for the life of the process.
 */
#ifndef UPRES_CLI_SETTINGS_H
#define UPRES_CLI_SETTINGS_H

#include <stddef.h>
#include <stdio.h>

#include "core/err.h"

typedef enum setting_type {
    SETTING_TYPE_INT,     /* a number in [lo, hi], stored as a whole number (truncated) */
    SETTING_TYPE_DOUBLE,  /* a number in [lo, hi] */
    SETTING_TYPE_SECONDS, /* a number of seconds in [lo, hi] */
    SETTING_TYPE_SIZE,    /* a count in [lo, hi] with an optional K, M or G suffix (decimal), and B */
    SETTING_TYPE_BOOL,    /* a flag without a value; the variable: anything but "0" is on */
    SETTING_TYPE_STRING,  /* any text, or what parse accepts */
    SETTING_TYPE_ENUM,    /* one of choices */
    SETTING_TYPE_HELP,    /* -h: prints the usage; lands nowhere */
} setting_type_t;

/* How the destination is typed; SETTING_STORE_OF picks it from the field itself. */
typedef enum setting_store {
    SETTING_STORE_INT,   /* int */
    SETTING_STORE_UINT,  /* unsigned (and enums without negative values, as GCC and Clang lay them out) */
    SETTING_STORE_ULONG, /* unsigned long: size_t */
    SETTING_STORE_ULL,   /* unsigned long long */
    SETTING_STORE_DOUBLE,
    SETTING_STORE_STR,   /* const char *, borrowed */
    SETTING_STORE_OTHER, /* only parse writes it */
} setting_store_t;

#define SETTING_STORE_OF(lvalue)                                                                             \
    _Generic((lvalue),                                                                                       \
        int: SETTING_STORE_INT,                                                                              \
        unsigned: SETTING_STORE_UINT,                                                                        \
        unsigned long: SETTING_STORE_ULONG,                                                                  \
        unsigned long long: SETTING_STORE_ULL,                                                               \
        double: SETTING_STORE_DOUBLE,                                                                        \
        const char *: SETTING_STORE_STR,                                                                     \
        default: SETTING_STORE_OTHER)

/* Where an entry lands: field of the struct type that bases[base] points to. */
#define SETTING_AT(base_index, type, field)                                                                  \
    .base = (base_index), .offset = offsetof(type, field), .store = SETTING_STORE_OF(((type *)0)->field)

typedef struct setting_choice {
    const char *name;
    int value;
} setting_choice_t;

typedef struct setting {
    const char *name;       /* the long flag without "--", and the name in "bad NAME 'VALUE': ..." */
    char short_flag;        /* 0 = none */
    const char *arg;        /* the value's name in -h ("N", "SEC"); NULL = a flag without a value */
    const char *flag_value; /* what a flag without a value means; NULL = "1" */
    const char *env;        /* the environment variable; NULL = none */
    setting_type_t type;
    double lo, hi;                   /* range of INT, DOUBLE, SECONDS and SIZE */
    const setting_choice_t *choices; /* ENUM: ends with {NULL, 0} */
    const char *def;      /* the default in the setting's own syntax, checked against the initialised
                             config; NULL = none or computed (def_text says) */
    const char *def_text; /* the default in words, shown instead of def; NULL = def */
    const char *what;     /* the accepted values, as a bad value is told them (ENUM: generated) */
    const char *help;     /* one sentence or so for -h and README (`code` marks are dropped in -h) */
    const char *doc;      /* more for README's row only (markdown, after "; "), or NULL */
    const char *section;  /* -h prints this heading before the entry, or NULL */
    /* STRING: check value and store it (or what it loads) at dest; 0, or -1 with err->msg set (or
       empty: what is told). NULL = store the string itself. */
    int (*parse)(const char *value, void *dest, up_error_t *err);
    int own_message; /* a parse error is err->msg alone (it names the value itself) */
    int base;        /* index into the bases given to settings_apply */
    size_t offset;   /* of the destination in *bases[base] */
    setting_store_t store;
} setting_t;

#define SETTINGS_MAX_ITEMS 64 /* settings of one command (a table checks it with _Static_assert) */

typedef struct settings_table {
    const char *command;    /* "serve", in messages: "(try: upres serve -h)" */
    const char *head;       /* -h text before the options */
    const setting_t *items; /* borrowed, static */
    int n_items;
} settings_table_t;

/* Print the usage: head, then one entry per setting, wrapped. */
void settings_usage(const settings_table_t *t, FILE *f);

/*
 * Read argv (the command's arguments, without the program name) into
 * values[i], one per item (n_items pointers, NULL = not given; borrowed
 * from argv). Returns -1 to go on, or the exit status when the command is
 * done: 0 after printing the usage for -h, 2 after a usage error (getopt's
 * message and the usage on stderr, or one error line for a stray
 * argument). *markdown is set when --settings-markdown was given.
 */
int settings_parse(const settings_table_t *t, int argc, char **argv, const char **values, int *markdown);

/*
 * For each item in table order: the flag's value, else the environment
 * variable's (cli_setting), is checked and stored at bases[base] + offset;
 * an item given neither keeps what is there. Returns 0, or 2 after one
 * error line ("bad NAME 'VALUE': WHAT") for the first bad value.
 */
int settings_apply(const settings_table_t *t, const char *const *values, void *const *bases);

/*
 * Print README's settings table (header and one row per setting). Each
 * def is checked against the value at its destination, which must hold
 * the default (call it on freshly initialised configs, with no UPRES_*
 * variable set): returns 0, or 1 after an error line for each that differs.
 */
int settings_markdown(const settings_table_t *t, void *const *bases, FILE *f);

#endif
