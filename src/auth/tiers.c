/*
 * tiers.c - the tier table (largest output and credits per job) and the
 * start of a quota month (see auth.h).
 *
 * The file tiers_load reads has the shape GET /api/v1/tiers answers
 * (PicShapes TierConfig), so a saved answer can be edited and loaded back:
 *
 *   field                        type     rule
 *   tiers                        object   1 to TIERS_MAX members, in file order
 *   tiers.<key>                  object   one tier; <key> is its name unless "name" says otherwise
 *   tiers.<key>.name             string   optional; 1 to 31 of [A-Za-z0-9._-], unique
 *   tiers.<key>.description      string   optional (default ""); under 256 bytes
 *   tiers.<key>.max_width        integer  required; 1 to TIER_MAX_SIZE pixels
 *   tiers.<key>.max_height       integer  required; 1 to TIER_MAX_SIZE pixels
 *   tiers.<key>.credits          integer  required; 0 to TIER_MAX_CREDITS per job
 *   tiers.<key>.weight           number   optional (default 1); TIER_MIN_WEIGHT to TIER_MAX_WEIGHT: the
 *                                         tier's share of the workers when keys compete (fair queueing)
 *   tiers.<key>.max_priority     integer  optional (default 0); 0 to STORE_PRIORITY_MAX: the highest job
 *                                         priority its keys may ask for (any key may ask for less than 0)
 *
 * Other members (max_steps, min_vram, ... in PicShapes answers) are ignored.
 */
#include "auth/auth.h"
#include "store/rules.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define TIER_MAX_SIZE 65535      /* pixels per side: w*h stays below 2^32 */
#define TIER_MAX_CREDITS 1000000 /* per job */
#define TIER_MIN_WEIGHT 0.01
#define TIER_MAX_WEIGHT 1000.0

static void tier_set(tier_t *t, const char *name, const char *description, int w, int h, int credits,
                     double weight, int max_priority) {
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->description, sizeof t->description, "%s", description);
    t->max_width = w;
    t->max_height = h;
    t->credits = credits;
    t->weight = weight;
    t->max_priority = max_priority;
}

/* a paying tier's work goes out faster when keys compete, and it may jump its own queue a little */
void tiers_default(tiers_t *t) {
    memset(t, 0, sizeof *t);
    tier_set(&t->tier[0], "basic", "Up to 4096x4096 output", 4096, 4096, 1, 1, 0);
    tier_set(&t->tier[1], "pro", "Up to 8192x8192 output", 8192, 8192, 3, 2, 2);
    tier_set(&t->tier[2], "premium", "Up to 16384x16384 output", 16384, 16384, 5, 4, 5);
    t->n = 3;
}

static int name_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n >= sizeof((tier_t *)0)->name)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '.' ||
              *s == '_' || *s == '-'))
            return 0;
    return 1;
}

/* obj[field] as an integer in [lo, hi] into *out; else a UP_ERR_FORMAT naming the tier and field. */
static int int_field(const char *path, const char *key, json_t *obj, const char *field, long long lo,
                     long long hi, int *out, up_error_t *err) {
    json_t *v = json_object_get(obj, field);
    if (!v)
        return up_error_set(err, UP_ERR_FORMAT, 0, "%s: tier \"%s\": \"%s\" is missing", path, key, field);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return up_error_set(err, UP_ERR_FORMAT, 0,
                            "%s: tier \"%s\": \"%s\" must be an integer from %lld to %lld", path, key, field,
                            lo, hi);
    *out = (int)json_integer_value(v);
    return 0;
}

static int load_tier(const char *path, const char *key, json_t *obj, tier_t *t, up_error_t *err) {
    int rc;
    memset(t, 0, sizeof *t);
    if (!json_is_object(obj))
        return up_error_set(err, UP_ERR_FORMAT, 0, "%s: tier \"%s\" is not an object", path, key);

    json_t *name = json_object_get(obj, "name");
    const char *n = key;
    if (name) {
        if (!json_is_string(name))
            return up_error_set(err, UP_ERR_FORMAT, 0, "%s: tier \"%s\": \"name\" is not a string", path,
                                key);
        n = json_string_value(name);
    }
    if (!name_ok(n) || strlen(n) != (name ? json_string_length(name) : strlen(key)))
        return up_error_set(err, UP_ERR_FORMAT, 0,
                            "%s: tier \"%s\": the name must be 1 to %zu characters of A-Z a-z 0-9 . _ -",
                            path, key, sizeof t->name - 1);
    snprintf(t->name, sizeof t->name, "%s", n);

    json_t *desc = json_object_get(obj, "description");
    if (desc) {
        if (!json_is_string(desc))
            return up_error_set(err, UP_ERR_FORMAT, 0, "%s: tier \"%s\": \"description\" is not a string",
                                path, key);
        if (json_string_length(desc) >= sizeof t->description ||
            strlen(json_string_value(desc)) != json_string_length(desc))
            return up_error_set(err, UP_ERR_FORMAT, 0,
                                "%s: tier \"%s\": \"description\" must be under %zu bytes, with no NUL", path,
                                key, sizeof t->description);
        snprintf(t->description, sizeof t->description, "%s", json_string_value(desc));
    }
    if ((rc = int_field(path, key, obj, "max_width", 1, TIER_MAX_SIZE, &t->max_width, err)) ||
        (rc = int_field(path, key, obj, "max_height", 1, TIER_MAX_SIZE, &t->max_height, err)) ||
        (rc = int_field(path, key, obj, "credits", 0, TIER_MAX_CREDITS, &t->credits, err)))
        return rc;
    t->max_priority = 0;
    if (json_object_get(obj, "max_priority") &&
        (rc = int_field(path, key, obj, "max_priority", 0, STORE_PRIORITY_MAX, &t->max_priority, err)))
        return rc;
    t->weight = 1;
    json_t *w = json_object_get(obj, "weight");
    if (w) {
        double v = json_is_number(w) ? json_number_value(w) : -1;
        if (!(v >= TIER_MIN_WEIGHT && v <= TIER_MAX_WEIGHT))
            return up_error_set(err, UP_ERR_FORMAT, 0,
                                "%s: tier \"%s\": \"weight\" must be a number from %g to %g", path, key,
                                TIER_MIN_WEIGHT, TIER_MAX_WEIGHT);
        t->weight = v;
    }
    return 0;
}

int tiers_load(const char *path, tiers_t *t, up_error_t *err) {
    json_error_t jerr;
    tiers_t out;
    int rc = UP_ERR_FORMAT;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (json_error_code(&jerr) == json_error_cannot_open_file)
            return up_error_set(err, UP_ERR_IO, 0, "tier table: %s", jerr.text); /* jansson names the file */
        return up_error_set(err, UP_ERR_FORMAT, jerr.line, "%s:%d: %s", path, jerr.line, jerr.text);
    }
    memset(&out, 0, sizeof out);
    json_t *tiers = json_is_object(root) ? json_object_get(root, "tiers") : NULL;
    if (!json_is_object(tiers)) {
        up_error_set(err, UP_ERR_FORMAT, 0, "%s: expected an object {\"tiers\": {\"NAME\": {...}, ...}}",
                     path);
        goto fail;
    }
    if (json_object_size(tiers) == 0) {
        up_error_set(err, UP_ERR_FORMAT, 0, "%s: \"tiers\" is empty; at least one tier is needed", path);
        goto fail;
    }
    if (json_object_size(tiers) > TIERS_MAX) {
        up_error_set(err, UP_ERR_FORMAT, 0, "%s: %zu tiers, at most %d are allowed", path,
                     json_object_size(tiers), TIERS_MAX);
        goto fail;
    }
    const char *key;
    json_t *v;
    json_object_foreach(tiers, key, v) { /* jansson keeps insertion order */
        tier_t *tier = &out.tier[out.n];
        if (load_tier(path, key, v, tier, err))
            goto fail;
        for (int i = 0; i < out.n; i++) {
            if (strcmp(out.tier[i].name, tier->name) == 0) {
                up_error_set(err, UP_ERR_FORMAT, 0, "%s: tier \"%s\": the name \"%s\" is used twice", path,
                             key, tier->name);
                goto fail;
            }
        }
        out.n++;
    }
    *t = out;
    rc = 0;
fail:
    json_decref(root);
    return rc;
}

const tier_t *tiers_find(const tiers_t *t, const char *name) {
    if (!name)
        return NULL;
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->tier[i].name, name) == 0)
            return &t->tier[i];
    return NULL;
}

double auth_month_start(double t) {
    time_t tt = (time_t)floor(t);
    struct tm tm;
    if (!gmtime_r(&tt, &tm))
        return t;
    tm.tm_mday = 1;
    tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
    tm.tm_isdst = 0;
    return (double)timegm(&tm);
}

double auth_day_start(double t) { return floor(t / 86400.0) * 86400.0; /* Unix time has no leap seconds */ }
