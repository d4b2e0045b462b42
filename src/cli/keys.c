/*
 * keys.c - `upres keys create | list | revoke | update`: the operator's side
 * of API keys, straight on the store in the data folder (the server need
 * not run).
 *
 * A new key is printed once, alone on the first line of stdout, so that a
 * script can take it with `head -1`; the store keeps only its SHA-256 and
 * its first characters (the prefix), which is all `list` can show. Settings
 * follow `upres serve`: flag > UPRES_* environment > default, so the same
 * UPRES_DATA, UPRES_STORE and UPRES_TIERS reach both. Exit status as cli.h says: 0, 1 for
 * a store failure or a key that cannot be revoked or changed, 2 for a usage
 * error.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "auth/auth.h"
#include "cli/cli.h"
#include "core/clock.h"
#include "core/uuid.h"
#include "core/xmalloc.h"
#include "store/store.h"

static void usage(FILE *f) {
    fputs("usage: upres keys create --name NAME [--tier NAME] [--quota N] [--credits N] [options]\n"
          "       upres keys list [--json] [options]\n"
          "       upres keys revoke ID_OR_PREFIX [options]\n"
          "       upres keys update ID_OR_PREFIX [--tier NAME] [--quota N|none] [--credits N|unlimited]\n"
          "                         [--add-credits [+-]N] [options]\n"
          "\n"
          "API keys for the server, kept in the data folder's database (only their SHA-256).\n"
          "\n"
          "  -n, --name NAME      create: a label for the key (required, 1 to 127 bytes)\n"
          "      --tier NAME      create, update: the key's tier (default basic; see --tiers)\n"
          "      --quota N        create: credits per calendar month (default: no quota);\n"
          "                       update: the new quota, or none\n"
          "      --credits N      create: starting credit balance (default: unlimited);\n"
          "                       update: the new balance, or unlimited\n"
          "      --add-credits N  update: add +N to the balance or take -N off it (never below 0)\n"
          "      --json           list: a JSON array instead of a table\n"
          "  -d, --data DIR       data folder (UPRES_DATA, default ./data)\n"
          "      --store URL      job database, as serve's --store (UPRES_STORE, default DATA/upres.db)\n"
          "      --tiers FILE     tier table, JSON as GET /api/v1/tiers (UPRES_TIERS, default built in)\n"
          "  -h, --help           this help\n",
          f);
}

enum { OPT_TIER = 1000, OPT_QUOTA, OPT_CREDITS, OPT_ADD_CREDITS, OPT_JSON, OPT_TIERS, OPT_STORE };

typedef struct opts {
    const char *name, *tier, *quota, *credits, *add_credits, *data, *store, *tiers;
    int json;
} opts_t;

/*
 * Parse sub's options (argv[0] is the subcommand: getopt takes it for the
 * program name) into *o; *first gets the index of the first operand.
 * Returns -1 to go on, else the exit status (help: 0, error: 2).
 */
static int parse(const char *sub, int argc, char **argv, opts_t *o, int *first) {
    static const struct option longopts[] = {
        {"name", required_argument, 0, 'n'},
        {"tier", required_argument, 0, OPT_TIER},
        {"quota", required_argument, 0, OPT_QUOTA},
        {"credits", required_argument, 0, OPT_CREDITS},
        {"add-credits", required_argument, 0, OPT_ADD_CREDITS},
        {"json", no_argument, 0, OPT_JSON},
        {"data", required_argument, 0, 'd'},
        {"store", required_argument, 0, OPT_STORE},
        {"tiers", required_argument, 0, OPT_TIERS},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c;
    optind = 0;
    opterr = 0; /* one "upres: error:" line instead of getopt's own */
    while ((c = getopt_long(argc, argv, ":n:d:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'n': o->name = optarg; break;
        case OPT_TIER: o->tier = optarg; break;
        case OPT_QUOTA: o->quota = optarg; break;
        case OPT_CREDITS: o->credits = optarg; break;
        case OPT_ADD_CREDITS: o->add_credits = optarg; break;
        case OPT_JSON: o->json = 1; break;
        case 'd': o->data = optarg; break;
        case OPT_STORE: o->store = optarg; break;
        case OPT_TIERS: o->tiers = optarg; break;
        case 'h': usage(stdout); return 0;
        case ':': cli_error("option '%s' needs a value (try: upres keys -h)", argv[optind - 1]); return 2;
        default:
            if (optopt)
                cli_error("unknown option '-%c' for keys %s (try: upres keys -h)", optopt, sub);
            else
                cli_error("unknown option '%s' for keys %s (try: upres keys -h)", argv[optind - 1], sub);
            return 2;
        }
    }
    *first = optind;
    return -1;
}

/* A credit count: decimal digits only, 0 to 10^15. 0 on success. */
static int parse_count(const char *s, long long *out) {
    if (!s || !*s || strlen(s) > 16 || strspn(s, "0123456789") != strlen(s))
        return -1;
    *out = strtoll(s, NULL, 10);
    return *out <= 1000000000000000LL ? 0 : -1;
}

/* A quota or balance: a count (parse_count), or word ("none", "unlimited") for -1. 0 on success. */
static int parse_limit(const char *s, const char *word, long long *out) {
    if (!strcmp(s, word)) {
        *out = -1;
        return 0;
    }
    return parse_count(s, out);
}

/* A change to a balance: an optional sign and a count, not 0. 0 on success. */
static int parse_delta(const char *s, long long *out) {
    int neg = *s == '-';
    if (*s == '+' || *s == '-')
        s++;
    if (parse_count(s, out) || *out == 0)
        return -1;
    if (neg)
        *out = -*out;
    return 0;
}

/* t (Unix seconds) as UTC in strftime format fmt; "" for 0. */
static const char *utc(double t, const char *fmt, char *buf, size_t size) {
    time_t s = (time_t)t;
    struct tm tm;
    buf[0] = 0;
    if (t > 0 && gmtime_r(&s, &tm))
        strftime(buf, size, fmt, &tm);
    return buf;
}

static int open_store(const opts_t *o, int must_exist, store_t **st) {
    const char *dir = cli_setting(o->data, "UPRES_DATA");
    const char *url = cli_setting(o->store, "UPRES_STORE");
    if (!dir)
        dir = "./data";
    up_error_t err;
    if (store_url_check(url, &err)) { /* a usage error, as serve's */
        cli_error("%s", err.msg);
        return 2;
    }
    struct stat sb;
    if (must_exist && !url && stat(dir, &sb) != 0) {
        cli_error("no data folder %s (pass -d DIR or set UPRES_DATA)", dir);
        return 1;
    }
    if (store_open_url(url, dir, st, &err)) {
        cli_error("%s", err.msg);
        return 1;
    }
    return 0;
}

/* 1 when s is 1 to size - 1 bytes of UTF-8 without control characters, else 0. */
static int name_ok(const char *s, size_t size) {
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    json_t *j = json_string(s); /* NULL unless valid UTF-8 */
    int utf8 = j != NULL;
    json_decref(j);
    return n > 0 && n < size && utf8;
}

/* 0 when tier is in the tier table (--tiers, UPRES_TIERS or the built-in one), else the exit status. */
static int check_tier(const opts_t *o, const char *tier) {
    tiers_t tiers;
    up_error_t err;
    const char *tiers_path = cli_setting(o->tiers, "UPRES_TIERS");
    if (!tiers_path)
        tiers_default(&tiers);
    else if (tiers_load(tiers_path, &tiers, &err)) {
        cli_error("%s", err.msg);
        return 1;
    }
    if (!tiers_find(&tiers, tier)) {
        char list[TIERS_MAX * 34] = "";
        for (int i = 0; i < tiers.n; i++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
                     tiers.tier[i].name);
        cli_error("unknown tier '%s' (tiers: %s)", tier, list);
        return 2;
    }
    _Static_assert(sizeof((api_key_t *)0)->tier >= sizeof tiers.tier[0].name, "a key holds any tier's name");
    return 0;
}

/* A key's settings as "field: value" lines (never the key itself: the store does not have it). */
static void print_key(const api_key_t *k) {
    printf("id:       %s\nname:     %s\ntier:     %s\n", k->id, k->name, k->tier);
    if (k->quota < 0)
        printf("quota:    none\n");
    else
        printf("quota:    %lld credits a month\n", k->quota);
    if (k->credits < 0)
        printf("credits:  unlimited\n");
    else
        printf("credits:  %lld\n", k->credits);
}

static int keys_create(const opts_t *o) {
    api_key_t k = {.quota = -1, .credits = -1};
    if (!o->name) {
        cli_error("keys create needs --name NAME (a label for the key)");
        return 2;
    }
    if (!name_ok(o->name, sizeof k.name)) {
        cli_error("bad name: 1 to %zu bytes of printable UTF-8", sizeof k.name - 1);
        return 2;
    }
    if (o->quota && parse_count(o->quota, &k.quota)) {
        cli_error("bad quota '%s': credits per month, 0 or more", o->quota);
        return 2;
    }
    if (o->credits && parse_count(o->credits, &k.credits)) {
        cli_error("bad credits '%s': a starting balance, 0 or more", o->credits);
        return 2;
    }
    const char *tier = o->tier ? o->tier : "basic";
    int status = check_tier(o, tier);
    if (status)
        return status;

    up_error_t err;
    char key[AUTH_KEY_LEN + 1];
    if (auth_key_generate(key, k.hash, k.prefix)) {
        cli_error("the random generator failed: no key made");
        return 1;
    }
    uuid_v4(k.id);
    snprintf(k.name, sizeof k.name, "%s", o->name);
    snprintf(k.tier, sizeof k.tier, "%s", tier);
    k.created_at = now_s();
    store_t *st = NULL;
    status = open_store(o, 0, &st);
    if (!status && store_key_insert(st, &k, &err)) {
        cli_error("%s", err.msg);
        status = 1;
    }
    store_close(st);
    if (!status) {
        printf("%s\n\n", key);
        print_key(&k);
        printf("\nStore this key now: it is shown only once (upres keeps only its SHA-256).\n");
        if (fflush(stdout) != 0) {
            cli_error("could not print the new key: revoke it (upres keys revoke %s)", k.id);
            status = 1;
        }
    }
    explicit_bzero(key, sizeof key);
    return status;
}

/* Display width of UTF-8 text: its characters, not its bytes. */
static int width(const char *s) {
    int w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xc0) != 0x80;
    return w;
}

/* RFC 3339 UTC time, or null for 0 (never). New reference. */
static json_t *json_time(double t) {
    char buf[32];
    return t > 0 ? json_string(utc(t, "%Y-%m-%dT%H:%M:%SZ", buf, sizeof buf)) : json_null();
}

/* The count, or null for -1 (none). New reference. */
static json_t *json_count(long long v) { return v < 0 ? json_null() : json_integer(v); }

enum { N_COLS = 10 };

/* keys[n] with this month's usage used[n] as a table with aligned columns. */
static void print_table(const api_key_t *keys, const long long *used, int n) {
    char(*rows)[N_COLS][128] = xcalloc((size_t)n + 1, sizeof *rows);
    static const char *const head[N_COLS] = {"ID",   "PREFIX",  "NAME",    "TIER",      "QUOTA",
                                             "USED", "CREDITS", "CREATED", "LAST USED", "STATUS"};
    for (int c = 0; c < N_COLS; c++)
        snprintf(rows[0][c], sizeof rows[0][c], "%s", head[c]);
    for (int i = 0; i < n; i++) {
        const api_key_t *k = &keys[i];
        char(*r)[128] = rows[i + 1];
        snprintf(r[0], sizeof r[0], "%s", k->id);
        snprintf(r[1], sizeof r[1], "%s", k->prefix);
        snprintf(r[2], sizeof r[2], "%s", k->name);
        snprintf(r[3], sizeof r[3], "%s", k->tier);
        if (k->quota < 0)
            snprintf(r[4], sizeof r[4], "-");
        else
            snprintf(r[4], sizeof r[4], "%lld", k->quota);
        snprintf(r[5], sizeof r[5], "%lld", used[i]);
        if (k->credits < 0)
            snprintf(r[6], sizeof r[6], "unlimited");
        else
            snprintf(r[6], sizeof r[6], "%lld", k->credits);
        utc(k->created_at, "%Y-%m-%d %H:%M", r[7], sizeof r[7]);
        if (!*utc(k->last_used_at, "%Y-%m-%d %H:%M", r[8], sizeof r[8]))
            snprintf(r[8], sizeof r[8], "never");
        snprintf(r[9], sizeof r[9], "%s", k->revoked_at > 0 ? "revoked" : "active");
    }
    int w[N_COLS] = {0};
    for (int i = 0; i <= n; i++)
        for (int c = 0; c < N_COLS; c++)
            if (width(rows[i][c]) > w[c])
                w[c] = width(rows[i][c]);
    for (int i = 0; i <= n; i++) {
        for (int c = 0; c < N_COLS - 1; c++)
            printf("%s%*s", rows[i][c], w[c] - width(rows[i][c]) + 2, "");
        printf("%s\n", rows[i][N_COLS - 1]);
    }
    free(rows);
}

/* keys[n] with this month's usage used[n] as a JSON array. 0, or 1 when out of memory. */
static int print_json(const api_key_t *keys, const long long *used, int n) {
    json_t *arr = json_array();
    for (int i = 0; i < n; i++) {
        const api_key_t *k = &keys[i];
        json_array_append_new(arr, json_pack("{s:s, s:o?, s:s, s:s, s:o, s:I, s:o, s:o, s:o, s:b, s:o}", "id",
                                             k->id, "name", json_string(k->name), "prefix", k->prefix, "tier",
                                             k->tier, "quota", json_count(k->quota), "used",
                                             (json_int_t)used[i], "credits", json_count(k->credits),
                                             "created_at", json_time(k->created_at), "last_used_at",
                                             json_time(k->last_used_at), "revoked", k->revoked_at > 0,
                                             "revoked_at", json_time(k->revoked_at)));
    }
    char *s = json_dumps(arr, JSON_INDENT(2));
    json_decref(arr);
    if (!s) {
        cli_error("out of memory writing JSON");
        return 1;
    }
    puts(s);
    free(s);
    return 0;
}

static int keys_list(const opts_t *o, store_t *st) {
    api_key_t *keys = NULL;
    int n = 0, status = 0;
    up_error_t err;
    if (store_key_list(st, &keys, &n, &err)) {
        cli_error("%s", err.msg);
        return 1;
    }
    double month = auth_month_start(now_s());
    long long *used = xcalloc((size_t)n + 1, sizeof *used);
    for (int i = 0; i < n && !status; i++) {
        if (store_key_usage(st, keys[i].id, month, &used[i], &err)) {
            cli_error("%s", err.msg);
            status = 1;
        }
    }
    if (!status && o->json)
        status = print_json(keys, used, n);
    else if (!status && n == 0)
        printf("no API keys (create one: upres keys create --name NAME)\n");
    else if (!status)
        print_table(keys, used, n);
    free(used);
    free(keys);
    return status;
}

/* The key ref names: the whole key (by its hash), an id or a prefix. 0, or 1 after an error line. */
static int find_key(store_t *st, const char *ref, api_key_t *k) {
    up_error_t err;
    int rc;
    if (auth_key_wellformed(ref)) { /* the whole key, e.g. one found leaked */
        unsigned char hash[32];
        auth_key_hash(ref, hash);
        rc = store_key_by_hash(st, hash, k, &err);
    } else {
        rc = store_key_find(st, ref, k, &err);
    }
    if (rc == UP_ERR_NOT_FOUND) {
        cli_error("no API key matches '%s'", ref);
        return 1;
    }
    if (rc) {
        cli_error("%s", err.msg);
        return 1;
    }
    return 0;
}

static int keys_revoke(const char *ref, store_t *st) {
    api_key_t k;
    up_error_t err;
    int rc;
    if (find_key(st, ref, &k))
        return 1;
    if (k.revoked_at > 0 || (rc = store_key_revoke(st, k.id, &err)) == UP_ERR_INVALID) {
        cli_error("API key %s (%s…, %s) is already revoked", k.id, k.prefix, k.name);
        return 1;
    }
    if (rc) {
        cli_error("%s", err.msg);
        return 1;
    }
    printf("revoked %s (%s…, %s)\n", k.id, k.prefix, k.name);
    return 0;
}

/*
 * The change o asks of keys update into *ch (its tier still to be checked).
 * 0, or the exit status after an error line.
 */
static int parse_change(const opts_t *o, store_key_change_t *ch) {
    *ch = (store_key_change_t){.tier = o->tier};
    if (!o->tier && !o->quota && !o->credits && !o->add_credits) {
        cli_error("keys update needs a change: --tier, --quota, --credits or --add-credits");
        return 2;
    }
    if (o->credits && o->add_credits) {
        cli_error("--credits sets the balance and --add-credits changes it: give one of them");
        return 2;
    }
    if (o->quota && parse_limit(o->quota, "none", &ch->quota)) {
        cli_error("bad quota '%s': credits per month, 0 or more, or none", o->quota);
        return 2;
    }
    if (o->credits && parse_limit(o->credits, "unlimited", &ch->credits)) {
        cli_error("bad credits '%s': a balance, 0 or more, or unlimited", o->credits);
        return 2;
    }
    if (o->add_credits && parse_delta(o->add_credits, &ch->add_credits)) {
        cli_error("bad add-credits '%s': credits to add (+N) or take off (-N), not 0", o->add_credits);
        return 2;
    }
    ch->set_quota = o->quota != NULL;
    ch->set_credits = o->credits != NULL;
    return o->tier ? check_tier(o, o->tier) : 0;
}

static int keys_update(const char *ref, const store_key_change_t *ch, store_t *st) {
    api_key_t k;
    up_error_t err;
    if (find_key(st, ref, &k))
        return 1;
    if (store_key_update(st, k.id, ch, &k, &err)) {
        cli_error("%s", err.msg);
        return 1;
    }
    print_key(&k);
    return 0;
}

int cmd_keys(int argc, char **argv) {
    if (argc < 1) {
        usage(stderr);
        return 2;
    }
    const char *sub = argv[0];
    if (!strcmp(sub, "-h") || !strcmp(sub, "--help") || !strcmp(sub, "help")) {
        usage(stdout);
        return 0;
    }
    int is_create = !strcmp(sub, "create"), is_list = !strcmp(sub, "list"),
        is_revoke = !strcmp(sub, "revoke"), is_update = !strcmp(sub, "update");
    if (!is_create && !is_list && !is_revoke && !is_update) {
        cli_error("unknown keys command '%s': create, list, revoke or update (try: upres keys -h)", sub);
        return 2;
    }
    opts_t o = {0};
    int first, rc = parse(sub, argc, argv, &o, &first);
    if (rc >= 0)
        return rc;
    int n_args = argc - first, want = is_revoke || is_update ? 1 : 0;
    if (n_args > want) {
        cli_error("unexpected argument '%s' (try: upres keys -h)", argv[first + want]);
        return 2;
    }
    if (n_args < want) {
        cli_error("keys %s needs a key's id or prefix (see: upres keys list)", sub);
        return 2;
    }
    if (o.name && !is_create) {
        cli_error("--name is for keys create");
        return 2;
    }
    if ((o.tier || o.quota || o.credits || o.tiers) && !is_create && !is_update) {
        cli_error("--tier, --quota, --credits and --tiers are for keys create and update");
        return 2;
    }
    if (o.add_credits && !is_update) {
        cli_error("--add-credits is for keys update");
        return 2;
    }
    if (o.json && !is_list) {
        cli_error("--json is for keys list");
        return 2;
    }
    if (is_create)
        return keys_create(&o);
    store_key_change_t ch = {0};
    if (is_update && (rc = parse_change(&o, &ch)))
        return rc;
    const char *ref = want ? argv[first] : NULL;
    if (ref && strlen(ref) <= strlen(AUTH_KEY_PREFIX) && !strncmp(ref, AUTH_KEY_PREFIX, strlen(ref))) {
        /* "" or "upres_" starts every prefix: with one key it would name that key */
        cli_error("'%s' would match any key: give a key's id or prefix (see: upres keys list)", ref);
        return 2;
    }
    store_t *st = NULL;
    if ((rc = open_store(&o, 1, &st)))
        return rc;
    if (is_list)
        rc = keys_list(&o, st);
    else if (is_revoke)
        rc = keys_revoke(ref, st);
    else
        rc = keys_update(ref, &ch, st);
    store_close(st);
    return rc;
}
