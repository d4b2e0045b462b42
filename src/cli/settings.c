/*
 * settings.c - see settings.h: a command's settings table turned into its
 * -h, its getopt table, the checked values in its config structs, and
 * README's rows.
 */
#include "cli/settings.h"

#include <assert.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

#define OPT_MARKDOWN 999 /* getopt value of --settings-markdown; items get 1000 + index */
#define HELP_COLUMN 27   /* where -h's text starts */
#define HELP_WIDTH 104   /* and where it wraps */

/* ---- values ---------------------------------------------------------------- */

/* A non-negative count with an optional K/M/G suffix (decimal) and B. 0 on success. */
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

/* A number in [lo, hi]. 0 on success. */
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

/* "a or b", "a, b or c": an ENUM's accepted values. */
static const char *choices_text(const setting_t *s, char *buf, size_t size) {
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; s->choices && s->choices[i].name; i++) {
        const char *sep = i == 0 ? "" : s->choices[i + 1].name ? ", " : " or ";
        int n = snprintf(buf + len, size - len, "%s%s", sep, s->choices[i].name);
        if (n < 0 || (size_t)n >= size - len)
            break;
        len += (size_t)n;
    }
    return buf;
}

static const char *what_text(const setting_t *s, char *buf, size_t size) {
    if (s->type == SETTING_TYPE_ENUM)
        return choices_text(s, buf, size);
    if (s->type == SETTING_TYPE_BOOL)
        return "the flag, or the variable: 0 is off, anything else on";
    return s->what ? s->what : "";
}

/* Store a number at dest as the field's type (whole-number fields truncate, as casts do). */
static void store_number(setting_store_t store, void *dest, double v, unsigned long long u, int is_size) {
    switch (store) {
    case SETTING_STORE_INT: *(int *)dest = is_size ? (int)u : (int)v; break;
    case SETTING_STORE_UINT: *(unsigned *)dest = is_size ? (unsigned)u : (unsigned)v; break;
    case SETTING_STORE_ULONG: *(unsigned long *)dest = is_size ? (unsigned long)u : (unsigned long)v; break;
    case SETTING_STORE_ULL: *(unsigned long long *)dest = is_size ? u : (unsigned long long)v; break;
    case SETTING_STORE_DOUBLE: *(double *)dest = is_size ? (double)u : v; break;
    case SETTING_STORE_STR:
    case SETTING_STORE_OTHER: assert(!"a number setting needs a number field"); break;
    }
}

/*
 * Check value and store it at dest. 0, or -1 with err->msg set by a parse
 * function (else empty: the caller tells what_text).
 */
static int setting_value(const setting_t *s, const char *value, void *dest, up_error_t *err) {
    double v;
    unsigned long long u;
    err->msg[0] = '\0';
    switch (s->type) {
    case SETTING_TYPE_INT:
    case SETTING_TYPE_DOUBLE:
    case SETTING_TYPE_SECONDS:
        if (parse_num(value, s->lo, s->hi, &v))
            return -1;
        store_number(s->store, dest, v, 0, 0);
        return 0;
    case SETTING_TYPE_SIZE:
        if (parse_size(value, &u) || (double)u < s->lo || (double)u > s->hi)
            return -1;
        store_number(s->store, dest, 0, u, 1);
        return 0;
    case SETTING_TYPE_BOOL: store_number(s->store, dest, strcmp(value, "0") != 0, 0, 0); return 0;
    case SETTING_TYPE_ENUM:
        for (int i = 0; s->choices[i].name; i++)
            if (!strcmp(value, s->choices[i].name)) {
                store_number(s->store, dest, s->choices[i].value, 0, 0);
                return 0;
            }
        return -1;
    case SETTING_TYPE_STRING:
        if (s->parse)
            return s->parse(value, dest, err) ? -1 : 0;
        assert(s->store == SETTING_STORE_STR);
        *(const char **)dest = value;
        return 0;
    case SETTING_TYPE_HELP: return 0;
    }
    return -1;
}

static void *dest_of(const setting_t *s, void *const *bases) { return (char *)bases[s->base] + s->offset; }

int settings_apply(const settings_table_t *t, const char *const *values, void *const *bases) {
    for (int i = 0; i < t->n_items; i++) {
        const setting_t *s = &t->items[i];
        if (s->type == SETTING_TYPE_HELP)
            continue;
        const char *value = s->env ? cli_setting(values[i], s->env) : values[i];
        if (!value)
            continue;
        up_error_t err;
        if (setting_value(s, value, dest_of(s, bases), &err)) {
            char buf[256];
            if (s->own_message)
                cli_error("%s", err.msg);
            else
                cli_error("bad %s '%s': %s", s->name, value,
                          err.msg[0] ? err.msg : what_text(s, buf, sizeof buf));
            return 2;
        }
    }
    return 0;
}

/* ---- arguments ------------------------------------------------------------- */

int settings_parse(const settings_table_t *t, int argc, char **argv, const char **values, int *markdown) {
    struct option longopts[SETTINGS_MAX_ITEMS + 2];
    char shorts[2 * SETTINGS_MAX_ITEMS + 1];
    size_t n_shorts = 0;
    assert(t->n_items <= SETTINGS_MAX_ITEMS);
    for (int i = 0; i < t->n_items; i++) {
        const setting_t *s = &t->items[i];
        int has_arg = s->arg ? required_argument : no_argument;
        longopts[i] = (struct option){s->name, has_arg, 0, s->short_flag ? s->short_flag : 1000 + i};
        if (s->short_flag) {
            shorts[n_shorts++] = s->short_flag;
            if (s->arg)
                shorts[n_shorts++] = ':';
        }
        values[i] = NULL;
    }
    shorts[n_shorts] = '\0';
    longopts[t->n_items] = (struct option){"settings-markdown", no_argument, 0, OPT_MARKDOWN};
    longopts[t->n_items + 1] = (struct option){0, 0, 0, 0};
    *markdown = 0;

    int c;
    optind = 0;
    /* argv has no program name: getopt skips argv[0], the command's name */
    while ((c = getopt_long(argc + 1, argv - 1, shorts, longopts, NULL)) != -1) {
        int i = -1;
        if (c == OPT_MARKDOWN) {
            *markdown = 1;
            continue;
        }
        if (c >= 1000 && c < 1000 + t->n_items)
            i = c - 1000;
        for (int k = 0; i < 0 && c != '?' && k < t->n_items; k++)
            if (t->items[k].short_flag == c)
                i = k;
        if (i < 0) {
            settings_usage(t, stderr);
            return 2;
        }
        const setting_t *s = &t->items[i];
        if (s->type == SETTING_TYPE_HELP) {
            settings_usage(t, stdout);
            return 0;
        }
        values[i] = s->arg ? optarg : s->flag_value ? s->flag_value : "1";
    }
    if (optind < argc + 1) {
        cli_error("unexpected argument '%s' (try: upres %s -h)", argv[optind - 1], t->command);
        return 2;
    }
    return -1;
}

/* ---- -h --------------------------------------------------------------------- */

/* text from column col (the first word goes there), wrapped at HELP_WIDTH under HELP_COLUMN, `marks`
 * dropped. */
static void print_wrapped(FILE *f, int col, const char *text) {
    int first = 1;
    for (const char *p = text; *p;) {
        if (*p == ' ') {
            p++;
            continue;
        }
        size_t word = strcspn(p, " ");
        int shown = 0;
        for (size_t k = 0; k < word; k++)
            shown += p[k] != '`';
        if (!first && col + 1 + shown > HELP_WIDTH) {
            fprintf(f, "\n%*s", HELP_COLUMN, "");
            col = HELP_COLUMN;
        } else if (!first) {
            fputc(' ', f);
            col++;
        }
        for (size_t k = 0; k < word; k++)
            if (p[k] != '`')
                fputc(p[k], f);
        col += shown;
        p += word;
        first = 0;
    }
    fputc('\n', f);
}

static const char *default_text(const setting_t *s) { return s->def_text ? s->def_text : s->def; }

static void usage_to(const settings_table_t *t, FILE *f) {
    fputs(t->head, f);
    for (int i = 0; i < t->n_items; i++) {
        const setting_t *s = &t->items[i];
        if (s->section)
            fprintf(f, "\n%s\n", s->section);
        char opt[96];
        int col;
        if (s->short_flag)
            col = snprintf(opt, sizeof opt, "  -%c, --%s%s%s", s->short_flag, s->name, s->arg ? " " : "",
                           s->arg ? s->arg : "");
        else
            col =
                snprintf(opt, sizeof opt, "      --%s%s%s", s->name, s->arg ? " " : "", s->arg ? s->arg : "");
        fputs(opt, f);
        if (col < HELP_COLUMN) { /* the text at HELP_COLUMN, a space at least */
            fprintf(f, "%*s", HELP_COLUMN - col, "");
            col = HELP_COLUMN;
        } else { /* a long option: two spaces keep it apart from its text */
            fputs("  ", f);
            col += 2;
        }
        char text[1024];
        const char *def = s->type == SETTING_TYPE_BOOL ? NULL : default_text(s);
        if (s->env && def)
            snprintf(text, sizeof text, "%s (%s, default %s)", s->help, s->env, def);
        else if (s->env)
            snprintf(text, sizeof text, "%s (%s%s)", s->help, s->env,
                     s->type == SETTING_TYPE_BOOL ? "=1" : "");
        else if (def)
            snprintf(text, sizeof text, "%s (default %s)", s->help, def);
        else
            snprintf(text, sizeof text, "%s", s->help);
        print_wrapped(f, col, text);
    }
}

void settings_usage(const settings_table_t *t, FILE *f) {
    char *text = NULL;
    size_t size = 0;
    FILE *m = open_memstream(&text, &size);
    if (!m) {
        usage_to(t, f);
        return;
    }
    usage_to(t, m);
    fclose(m);
    fputs(text, f); /* in one piece: stderr is unbuffered */
    free(text);
}

/* ---- README ----------------------------------------------------------------- */

/* A markdown table cell: '|' escaped, newlines as spaces. */
static void md_cell(FILE *f, const char *text) {
    fputs(" ", f);
    for (const char *p = text; *p; p++) {
        if (*p == '|')
            fputs("\\|", f);
        else
            fputc(*p == '\n' ? ' ' : *p, f);
    }
    fputs(" |", f);
}

/* 0 when the destination holds def (parsed as a value would be), else -1. */
static int check_default(const setting_t *s, void *const *bases) {
    if (!s->def || s->type == SETTING_TYPE_HELP || s->store == SETTING_STORE_OTHER)
        return 0;
    union {
        int i;
        unsigned u;
        unsigned long ul;
        unsigned long long ull;
        double d;
        const char *s;
    } want;
    memset(&want, 0, sizeof want);
    up_error_t err;
    if (setting_value(s, s->def, &want, &err))
        return -1;
    const void *have = dest_of(s, bases);
    switch (s->store) {
    case SETTING_STORE_INT: return *(const int *)have == want.i ? 0 : -1;
    case SETTING_STORE_UINT: return *(const unsigned *)have == want.u ? 0 : -1;
    case SETTING_STORE_ULONG: return *(const unsigned long *)have == want.ul ? 0 : -1;
    case SETTING_STORE_ULL: return *(const unsigned long long *)have == want.ull ? 0 : -1;
    case SETTING_STORE_DOUBLE: return *(const double *)have == want.d ? 0 : -1;
    case SETTING_STORE_STR: {
        const char *h = *(const char *const *)have;
        return h && !strcmp(h, want.s) ? 0 : -1;
    }
    case SETTING_STORE_OTHER: return 0;
    }
    return -1;
}

int settings_markdown(const settings_table_t *t, void *const *bases, FILE *f) {
    int status = 0;
    fputs("| flag | environment | default | values | meaning |\n| --- | --- | --- | --- | --- |\n", f);
    for (int i = 0; i < t->n_items; i++) {
        const setting_t *s = &t->items[i];
        if (s->type == SETTING_TYPE_HELP)
            continue;
        if (check_default(s, bases)) {
            cli_error("setting %s: the table's default '%s' is not the configuration's", s->name, s->def);
            status = 1;
        }
        char buf[512];
        fputs("|", f);
        if (s->short_flag)
            snprintf(buf, sizeof buf, "`-%c, --%s`", s->short_flag, s->name);
        else
            snprintf(buf, sizeof buf, "`--%s`", s->name);
        md_cell(f, buf);
        if (s->env)
            snprintf(buf, sizeof buf, "`%s%s`", s->env, s->type == SETTING_TYPE_BOOL ? "=1" : "");
        else
            buf[0] = '\0';
        md_cell(f, buf);
        if (s->def_text)
            snprintf(buf, sizeof buf, "%s", s->def_text);
        else if (!s->def)
            snprintf(buf, sizeof buf, "none");
        else if (s->type == SETTING_TYPE_BOOL)
            snprintf(buf, sizeof buf, "%s", strcmp(s->def, "0") ? "on" : "off");
        else if (s->type == SETTING_TYPE_SECONDS)
            snprintf(buf, sizeof buf, "%s s", s->def);
        else if (s->type == SETTING_TYPE_STRING || s->type == SETTING_TYPE_ENUM)
            snprintf(buf, sizeof buf, "`%s`", s->def);
        else
            snprintf(buf, sizeof buf, "%s", s->def);
        md_cell(f, buf);
        char what[256];
        md_cell(f, what_text(s, what, sizeof what));
        snprintf(buf, sizeof buf, "%s%s%s", s->help, s->doc ? "; " : "", s->doc ? s->doc : "");
        md_cell(f, buf);
        fputc('\n', f);
    }
    return status;
}
