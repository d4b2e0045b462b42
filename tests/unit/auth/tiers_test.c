/*
 * tiers_test.c - the tier table and quota months (src/auth/tiers.c).
 *
 * The built-in table; a valid file (written to a temporary folder) loads
 * in file order with names, descriptions and ignored extra members; every
 * malformed file is UP_ERR_FORMAT with a message that names the problem
 * (table-driven), a missing file UP_ERR_IO; tiers_find; auth_month_start
 * on month edges and a leap day.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/auth.h"
#include "test.h"

static char dir[256];
static char path[300];

static void write_text(const char *text) {
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        perror(path);
        exit(2);
    }
}

static void test_default(void) {
    tiers_t t;
    memset(&t, 0x55, sizeof t);
    tiers_default(&t);
    CHECK(t.n == 3);
    CHECK(strcmp(t.tier[0].name, "basic") == 0 && t.tier[0].max_width == 4096 &&
          t.tier[0].max_height == 4096 && t.tier[0].credits == 1);
    CHECK(strcmp(t.tier[1].name, "pro") == 0 && t.tier[1].max_width == 8192 && t.tier[1].max_height == 8192 &&
          t.tier[1].credits == 3);
    CHECK(strcmp(t.tier[2].name, "premium") == 0 && t.tier[2].max_width == 16384 &&
          t.tier[2].max_height == 16384 && t.tier[2].credits == 5);
    /* fair-queueing weights and priority caps: basic 1 and 0, pro 2 and 2, premium 4 and 5 */
    CHECK(t.tier[0].weight == 1 && t.tier[0].max_priority == 0);
    CHECK(t.tier[1].weight == 2 && t.tier[1].max_priority == 2);
    CHECK(t.tier[2].weight == 4 && t.tier[2].max_priority == 5);
    CHECK(strcmp(t.tier[0].description, "Up to 4096x4096 output") == 0);
    CHECK(strcmp(t.tier[2].description, "Up to 16384x16384 output") == 0);
    CHECK(tiers_find(&t, "pro") == &t.tier[1]);
    CHECK(tiers_find(&t, "premium") == &t.tier[2]);
    CHECK(tiers_find(&t, "Pro") == NULL);
    CHECK(tiers_find(&t, "") == NULL);
    CHECK(tiers_find(&t, NULL) == NULL);
}

static void test_load(void) {
    tiers_t t;
    up_error_t err;
    write_text("{\n"
               "  \"tiers\": {\n"
               "    \"small\": {\"description\": \"Thumbnails\", \"max_width\": 1024, \"max_height\": 768,\n"
               "              \"credits\": 0, \"max_steps\": 8, \"min_vram\": 4},\n"
               "    \"zeta\": {\"max_width\": 2048, \"max_height\": 2048, \"credits\": 2, \"weight\": 2.5,\n"
               "             \"max_priority\": 7},\n"
               "    \"alpha\": {\"name\": \"huge\", \"description\": \"Posters\", \"max_width\": 65535,\n"
               "              \"max_height\": 1, \"credits\": 1000000}\n"
               "  },\n"
               "  \"other\": true\n"
               "}\n");
    CHECKF(tiers_load(path, &t, &err) == 0, "%s", err.msg);
    CHECK(t.n == 3);
    /* File order, not sorted. */
    CHECK(strcmp(t.tier[0].name, "small") == 0 && strcmp(t.tier[0].description, "Thumbnails") == 0);
    CHECK(t.tier[0].max_width == 1024 && t.tier[0].max_height == 768 && t.tier[0].credits == 0);
    CHECK(strcmp(t.tier[1].name, "zeta") == 0 && strcmp(t.tier[1].description, "") == 0);
    CHECK(t.tier[1].max_width == 2048 && t.tier[1].credits == 2);
    CHECK(t.tier[1].weight == 2.5 && t.tier[1].max_priority == 7);
    CHECK(t.tier[0].weight == 1 && t.tier[0].max_priority == 0); /* the defaults when left out */
    /* out of bounds: refused, naming the field */
    write_text("{\"tiers\": {\"a\": {\"max_width\": 1, \"max_height\": 1, \"credits\": 1, \"weight\": 0}}}");
    CHECK(tiers_load(path, &t, &err) == UP_ERR_FORMAT && strstr(err.msg, "weight") != NULL);
    write_text(
        "{\"tiers\": {\"a\": {\"max_width\": 1, \"max_height\": 1, \"credits\": 1, \"weight\": \"x\"}}}");
    CHECK(tiers_load(path, &t, &err) == UP_ERR_FORMAT);
    write_text(
        "{\"tiers\": {\"a\": {\"max_width\": 1, \"max_height\": 1, \"credits\": 1, \"max_priority\": 11}}}");
    CHECK(tiers_load(path, &t, &err) == UP_ERR_FORMAT && strstr(err.msg, "max_priority") != NULL);
    write_text(
        "{\"tiers\": {\"a\": {\"max_width\": 1, \"max_height\": 1, \"credits\": 1, \"max_priority\": -1}}}");
    CHECK(tiers_load(path, &t, &err) == UP_ERR_FORMAT);
    CHECK(strcmp(t.tier[2].name, "huge") == 0 && strcmp(t.tier[2].description, "Posters") == 0);
    CHECK(t.tier[2].max_width == 65535 && t.tier[2].max_height == 1 && t.tier[2].credits == 1000000);
    CHECK(tiers_find(&t, "huge") == &t.tier[2]);
    CHECK(tiers_find(&t, "alpha") == NULL);
    CHECK(tiers_find(&t, "basic") == NULL);

    /* Exactly TIERS_MAX is fine. */
    char text[4096];
    int n = snprintf(text, sizeof text, "{\"tiers\": {");
    for (int i = 0; i < TIERS_MAX; i++)
        n += snprintf(text + n, sizeof text - (size_t)n,
                      "%s\"t%d\": {\"max_width\": %d, \"max_height\": 10, \"credits\": %d}", i ? ", " : "", i,
                      100 + i, i);
    snprintf(text + n, sizeof text - (size_t)n, "}}");
    write_text(text);
    CHECKF(tiers_load(path, &t, &err) == 0, "%s", err.msg);
    CHECK(t.n == TIERS_MAX);
    CHECK(strcmp(t.tier[TIERS_MAX - 1].name, "t7") == 0 && t.tier[TIERS_MAX - 1].max_width == 107);

    /* A missing file is an I/O error, and the table is left as it was. */
    tiers_default(&t);
    char missing[320];
    snprintf(missing, sizeof missing, "%s/nope.json", dir);
    CHECK(tiers_load(missing, &t, &err) == UP_ERR_IO);
    CHECKF(strstr(err.msg, "nope.json") != NULL, "%s", err.msg);
    CHECK(t.n == 3 && strcmp(t.tier[0].name, "basic") == 0);
}

static void test_malformed(void) {
    static const char desc300[] =
        "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        "xxxxxxxxxxxx\"";
    char long_desc[512];
    snprintf(
        long_desc, sizeof long_desc,
        "{\"tiers\": {\"a\": {\"description\": %s, \"max_width\": 1, \"max_height\": 1, \"credits\": 1}}}",
        desc300);
    char too_many[4096];
    int n = snprintf(too_many, sizeof too_many, "{\"tiers\": {");
    for (int i = 0; i <= TIERS_MAX; i++)
        n += snprintf(too_many + n, sizeof too_many - (size_t)n,
                      "%s\"t%d\": {\"max_width\": 10, \"max_height\": 10, \"credits\": 1}", i ? ", " : "", i);
    snprintf(too_many + n, sizeof too_many - (size_t)n, "}}");

#define OK_REST "\"max_width\": 10, \"max_height\": 10"
    const struct {
        const char *text;
        const char *want; /* in the message */
    } cases[] = {
        {"this is not JSON", ":1:"},
        {"{\"tiers\": {\"a\": {\"max_width\": 1,}}}", ":1:"},
        {"{\n\n\"tiers\": [\n}", ":4:"},
        {"", ":"},
        {"[1, 2]", "\"tiers\""},
        {"{\"tier\": {}}", "\"tiers\""},
        {"{\"tiers\": [{\"max_width\": 1}]}", "\"tiers\""},
        {"{\"tiers\": {}}", "empty"},
        {too_many, "at most 8"},
        {"{\"tiers\": {\"a\": 5}}", "tier \"a\" is not an object"},
        {"{\"tiers\": {\"a\": {\"max_width\": 0, \"max_height\": 10, \"credits\": 1}}}", "\"max_width\""},
        {"{\"tiers\": {\"a\": {\"max_width\": 65536, \"max_height\": 10, \"credits\": 1}}}", "\"max_width\""},
        {"{\"tiers\": {\"a\": {\"max_width\": 10, \"max_height\": -3, \"credits\": 1}}}", "\"max_height\""},
        {"{\"tiers\": {\"a\": {\"max_width\": 10.5, \"max_height\": 10, \"credits\": 1}}}", "\"max_width\""},
        {"{\"tiers\": {\"a\": {\"max_height\": 10, \"credits\": 1}}}", "\"max_width\" is missing"},
        {"{\"tiers\": {\"a\": {" OK_REST "}}}", "\"credits\" is missing"},
        {"{\"tiers\": {\"a\": {" OK_REST ", \"credits\": -1}}}", "\"credits\" must be an integer from 0"},
        {"{\"tiers\": {\"a\": {" OK_REST ", \"credits\": \"3\"}}}", "\"credits\""},
        {"{\"tiers\": {\"a\": {" OK_REST ", \"credits\": null}}}", "\"credits\""},
        {"{\"tiers\": {\"a\": {" OK_REST ", \"credits\": 99999999999}}}", "\"credits\""},
        {"{\"tiers\": {\"a\": {" OK_REST ", \"credits\": 1, \"description\": 7}}}", "\"description\""},
        {long_desc, "\"description\""},
        {"{\"tiers\": {\"a\": {" OK_REST ", \"credits\": 1, \"name\": 7}}}", "\"name\" is not a string"},
        {"{\"tiers\": {\"a\": {" OK_REST ", \"credits\": 1, \"name\": \"\"}}}", "name"},
        {"{\"tiers\": {\"a b\": {" OK_REST ", \"credits\": 1}}}", "name"},
        {"{\"tiers\": {\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\": {" OK_REST ", \"credits\": 1}}}", "1 to 31"},
        {"{\"tiers\": {\"a\": {" OK_REST ", \"credits\": 1}, \"b\": {\"name\": \"a\", " OK_REST
         ", \"credits\": 1}}}",
         "used twice"},
        {"{\"tiers\": {\"a\": {" OK_REST ", \"credits\": 1}, \"a\": {" OK_REST ", \"credits\": 1}}}",
         "duplicate"},
    };
#undef OK_REST
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tiers_t t;
        up_error_t err;
        tiers_default(&t);
        memset(&err, 0, sizeof err);
        write_text(cases[i].text);
        int rc = tiers_load(path, &t, &err);
        CHECKF(rc == UP_ERR_FORMAT, "case %zu: rc %d (%s)", i, rc, err.msg);
        CHECKF(err.code == UP_ERR_FORMAT, "case %zu", i);
        CHECKF(strncmp(err.msg, path, strlen(path)) == 0, "case %zu: message \"%s\" does not name the file",
               i, err.msg);
        CHECKF(strstr(err.msg, cases[i].want) != NULL, "case %zu: message \"%s\" lacks \"%s\"", i, err.msg,
               cases[i].want);
        CHECKF(t.n == 3 && strcmp(t.tier[0].name, "basic") == 0, "case %zu: table changed", i);
    }
}

static void test_month_start(void) {
    static const struct {
        double t, want;
    } cases[] = {
        {0.0, 0.0},                     /* 1970-01-01 00:00:00 */
        {1700000000.0, 1698796800.0},   /* 2023-11-14 22:13:20 -> 2023-11-01 */
        {1698796800.0, 1698796800.0},   /* the first second of a month is its own start */
        {1698796799.0, 1696118400.0},   /* 2023-10-31 23:59:59 -> 2023-10-01 */
        {1698796799.999, 1696118400.0}, /* and its last fraction */
        {1709164800.0, 1706745600.0},   /* 2024-02-29 00:00:00 (leap day) -> 2024-02-01 */
        {1709251199.5, 1706745600.0},   /* 2024-02-29 23:59:59.5 */
        {1709251200.0, 1709251200.0},   /* 2024-03-01 00:00:00 */
        {1704067199.0, 1701388800.0},   /* 2023-12-31 23:59:59 -> 2023-12-01 */
        {1704067200.0, 1704067200.0},   /* 2024-01-01 */
        {951782400.0, 949363200.0},     /* 2000-02-29 (leap, century) -> 2000-02-01 */
        {4107542399.0, 4105123200.0},   /* 2100-02-28 23:59:59 (not leap) -> 2100-02-01 */
        {4107542400.0, 4107542400.0},   /* 2100-03-01 */
        {-1.0, -2678400.0},             /* 1969-12-31 23:59:59 -> 1969-12-01 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double got = auth_month_start(cases[i].t);
        CHECKF(got == cases[i].want, "case %zu: %.3f -> %.0f, want %.0f", i, cases[i].t, got, cases[i].want);
    }
}

int main(void) {
    snprintf(dir, sizeof dir, "%s/upres-tiers-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 2;
    }
    snprintf(path, sizeof path, "%s/tiers.json", dir);
    test_default();
    test_load();
    test_malformed();
    test_month_start();
    unlink(path);
    rmdir(dir);
    return test_summary();
}
