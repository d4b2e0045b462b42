/*
 * xmalloc.h - allocation helpers.
 *
 * x* functions are for small, fixed-size allocations: they abort the process
 * with a message on failure (as redis' zmalloc does), so callers need not
 * check. Any size that comes from a request, an image or a model goes through
 * up_aligned_alloc / plain malloc instead and turns failure into UP_ERR_NOMEM.
 */
#ifndef UPRES_CORE_XMALLOC_H
#define UPRES_CORE_XMALLOC_H

#include <stddef.h>

void *xmalloc(size_t size);           /* new; aborts on failure */
void *xcalloc(size_t n, size_t size); /* new, zeroed; aborts on failure */
void *xrealloc(void *p, size_t size); /* resized; aborts on failure */
char *xstrdup(const char *s);         /* new copy; aborts on failure */

/* 64-byte aligned allocation for tensors; NULL on failure or overflow (n*size). */
void *up_aligned_alloc(size_t n, size_t size);
void up_aligned_free(void *p); /* accepts NULL */

/* a*b into *out; returns 0, or -1 on size_t overflow. */
int up_mul_overflow(size_t a, size_t b, size_t *out);

#endif
