/*
 * api_test.c - the pure helpers the API dialects share (src/api/api.c):
 * RFC 3339 formatting and parsing (the times in every reply and the
 * before/after filters of GET /v1/jobs), integer parsing, and the paging
 * cursor's round trip and refusals. The handlers
 * themselves are driven over HTTP by tests/e2e/accounts_test.py.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "test.h"

static void test_time_format(void) {
    char buf[40];
    CHECK(!strcmp(api_time(0, buf, sizeof buf), "1970-01-01T00:00:00.000Z"));
    CHECK(!strcmp(api_time(1795334042.5, buf, sizeof buf), "2026-11-22T07:54:02.500Z"));
    CHECK(!strcmp(api_time(951782400.999, buf, sizeof buf), "2000-02-29T00:00:00.999Z"));
    /* round trip at millisecond precision */
    double t;
    CHECK(api_time_parse(api_time(1795334042.123, buf, sizeof buf), &t) == 0 &&
          fabs(t - 1795334042.123) < 1e-3);
    /* a stored time (rounded to the millisecond) read back from its text is the same double: the
       before/after filters compare them exactly */
    for (int i = 0; i < 5000; i++) {
        double stored = api_time_ms(1795334042.0 + i * 0.0137);
        CHECKF(api_time_parse(api_time(stored, buf, sizeof buf), &t) == 0 && t == stored, "%s", buf);
    }
}

static void test_time_parse(void) {
    static const struct {
        const char *s;
        double t; /* expected; -1 = refused */
    } cases[] = {
        {"2026-11-22T07:54:02Z", 1795334042},
        {"2026-11-22t07:54:02z", 1795334042},
        {"2026-11-22 07:54:02Z", 1795334042},
        {"2026-11-22T07:54:02.250Z", 1795334042.25},
        {"2026-11-22T08:54:02+01:00", 1795334042},
        {"2026-11-22T02:24:02-05:30", 1795334042},
        {"2026-11-22", 1795305600},
        {"2000-02-29T00:00:00Z", 951782400},
        {"", -1},
        {"yesterday", -1},
        {"2026-11-22T07:54Z", -1},
        {"2026-11-22T07:54:02", -1}, /* a time needs its offset */
        {"2026-13-01T00:00:00Z", -1},
        {"2026-02-30T00:00:00Z", -1},
        {"2026-11-22T24:00:00Z", -1},
        {"2026-11-22T07:54:02.Z", -1},
        {"2026-11-22T07:54:02+0100", -1},
        {"2026-11-22T07:54:02Zjunk", -1},
        {"1795334042", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double t = 0;
        int rc = api_time_parse(cases[i].s, &t);
        if (cases[i].t < 0)
            CHECKF(rc != 0, "'%s' refused (got %d, %.3f)", cases[i].s, rc, t);
        else
            CHECKF(rc == 0 && fabs(t - cases[i].t) < 1e-6, "'%s' = %.3f (got %d, %.3f)", cases[i].s,
                   cases[i].t, rc, t);
    }
    double t;
    CHECK(api_time_parse(NULL, &t) != 0);
}

static void test_parse_int(void) {
    long v = 0;
    CHECK(api_parse_int("42", &v) == 0 && v == 42);
    CHECK(api_parse_int(" 7 ", &v) == 0 && v == 7);
    CHECK(api_parse_int("-3", &v) == 0 && v == -3);
    CHECK(api_parse_int("", &v) != 0);
    CHECK(api_parse_int("4x", &v) != 0);
    CHECK(api_parse_int("2.5", &v) != 0);
    CHECK(api_parse_int("99999999999999999999999", &v) != 0);
    CHECK(api_parse_int(NULL, &v) != 0);
}

static void test_cursor(void) {
    char c[64];
    long long seq = 0;
    static const long long seqs[] = {1, 9, 10, 4095, 123456789, 999999999999999999LL};
    for (size_t i = 0; i < sizeof seqs / sizeof seqs[0]; i++) {
        api_cursor_make(seqs[i], c, sizeof c);
        CHECKF(!strncmp(c, "c1.", 3) && api_cursor_parse(c, &seq) == 0 && seq == seqs[i],
               "%lld -> '%s' -> %lld", seqs[i], c, seq);
    }
    static const char *bad[] = {"",
                                "1",
                                "c1.",
                                "c2.c2VxOjE",                          /* another version */
                                "c1.c2VxOjE=",                         /* padding */
                                "c1.c2VxOg",                           /* "seq:" without digits */
                                "c1.c2VxOjA",                          /* "seq:0" */
                                "c1.c2VxOi0x",                         /* "seq:-1" */
                                "c1.c2VxOjF4",                         /* "seq:1x" */
                                "c1.c2VxOiAx",                         /* "seq: 1" */
                                "c1.b2ZmOjE",                          /* "off:1" */
                                "c1.c2VxOjEyMzQ1Njc4OTAxMjM0NTY3ODkw", /* 20 digits */
                                "c1.!!!!"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECKF(api_cursor_parse(bad[i], &seq) != 0, "cursor '%s' refused", bad[i]);
}

int main(void) {
    test_time_format();
    test_time_parse();
    test_parse_int();
    test_cursor();
    return test_summary();
}
