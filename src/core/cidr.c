/*
 * cidr.c - address range lists (see cidr.h).
 *
 * Lists are parsed as they are walked, entry by entry, on every match: they
 * are a few entries long and matched once per request or connection, so a
 * parsed form would save nothing worth its lifetime rules.
 */
#include "core/cidr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#define ENTRY_MAX 64 /* longest "address/prefix" text of an entry */

typedef struct cidr {
    int family;      /* AF_INET or AF_INET6 */
    uint8_t net[16]; /* network bytes; 4 used for AF_INET */
    int prefix;
} cidr_t;

int cidr_prefix_match(const uint8_t *a, const uint8_t *b, int bits) {
    int whole = bits / 8, rest = bits % 8;
    if (memcmp(a, b, (size_t)whole) != 0)
        return 0;
    if (rest == 0)
        return 1;
    uint8_t mask = (uint8_t)(0xffu << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

/* Parse one "addr[/prefix]" entry of n bytes. Returns 0 or -1. */
static int cidr_parse(const char *s, size_t n, cidr_t *c) {
    char buf[ENTRY_MAX];
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *slash = strchr(buf, '/');
    long prefix = -1;
    if (slash) {
        *slash = '\0';
        const char *p = slash + 1;
        if (*p == '\0' || strlen(p) > 3)
            return -1;
        prefix = 0;
        for (; *p; p++) {
            if (*p < '0' || *p > '9')
                return -1;
            prefix = prefix * 10 + (*p - '0');
        }
    }
    memset(c, 0, sizeof *c);
    if (inet_pton(AF_INET, buf, c->net) == 1) {
        c->family = AF_INET;
        c->prefix = prefix < 0 ? 32 : (int)prefix;
        return prefix > 32 ? -1 : 0;
    }
    if (inet_pton(AF_INET6, buf, c->net) == 1) {
        c->family = AF_INET6;
        c->prefix = prefix < 0 ? 128 : (int)prefix;
        return prefix > 128 ? -1 : 0;
    }
    return -1;
}

/*
 * Walk list; for each entry call back with (entry, its length, the parsed
 * range or NULL when malformed). Stops when the callback returns non-zero
 * and returns that value.
 */
typedef int (*entry_fn)(const char *s, size_t n, const cidr_t *c, void *ud);

static int walk(const char *list, entry_fn fn, void *ud) {
    if (!list)
        return 0;
    const char *p = list;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *s = p;
        while (n > 0 && (*s == ' ' || *s == '\t')) {
            s++;
            n--;
        }
        while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
            n--;
        if (n > 0) {
            cidr_t c;
            int r = fn(s, n, cidr_parse(s, n, &c) == 0 ? &c : NULL, ud);
            if (r)
                return r;
        }
        if (!end)
            return 0;
        p = end + 1;
    }
}

static int check_entry(const char *s, size_t n, const cidr_t *c, void *ud) {
    if (c)
        return 0;
    up_error_set(ud, UP_ERR_INVALID, 0, "\"%.*s\" is not an address or CIDR range", (int)(n > 80 ? 80 : n),
                 s);
    return UP_ERR_INVALID;
}

int cidr_list_check(const char *list, up_error_t *err) { return walk(list, check_entry, err); }

typedef struct match_ctx {
    int family;
    const uint8_t *addr;
} match_ctx_t;

static int match_entry(const char *s, size_t n, const cidr_t *c, void *ud) {
    (void)s;
    (void)n;
    const match_ctx_t *m = ud;
    return c && c->family == m->family && cidr_prefix_match(c->net, m->addr, c->prefix);
}

int cidr_list_match(const char *list, int family, const uint8_t *addr) {
    static const uint8_t mapped[12] = {[10] = 0xff, [11] = 0xff}; /* ::ffff:0:0/96 */
    match_ctx_t m = {family, addr};
    if (walk(list, match_entry, &m))
        return 1;
    if (family == AF_INET6 && !memcmp(addr, mapped, sizeof mapped)) {
        match_ctx_t v4 = {AF_INET, addr + 12};
        return walk(list, match_entry, &v4);
    }
    return 0;
}

int cidr_list_match_text(const char *list, const char *addr) {
    uint8_t b[16];
    if (inet_pton(AF_INET, addr, b) == 1)
        return cidr_list_match(list, AF_INET, b);
    if (inet_pton(AF_INET6, addr, b) == 1)
        return cidr_list_match(list, AF_INET6, b);
    return 0;
}
