/*
 * xmalloc.c - see xmalloc.h.
 */
#include "core/xmalloc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void oom(size_t size) {
    fprintf(stderr, "upres: out of memory allocating %zu bytes\n", size);
    abort();
}

void *xmalloc(size_t size) {
    void *p = malloc(size ? size : 1);
    if (!p)
        oom(size);
    return p;
}

void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *xrealloc(void *p, size_t size) {
    void *q = realloc(p, size ? size : 1);
    if (!q)
        oom(size);
    return q;
}

char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = xmalloc(n);
    memcpy(p, s, n);
    return p;
}

int up_mul_overflow(size_t a, size_t b, size_t *out) {
    if (a && b > SIZE_MAX / a)
        return -1;
    *out = a * b;
    return 0;
}

void *up_aligned_alloc(size_t n, size_t size) {
    size_t bytes;
    if (up_mul_overflow(n, size, &bytes) || bytes > SIZE_MAX - 64)
        return NULL;
    bytes = (bytes + 63) & ~(size_t)63;
    return aligned_alloc(64, bytes ? bytes : 64);
}

void up_aligned_free(void *p) { free(p); }
