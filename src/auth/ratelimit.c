/*
 * ratelimit.c - exact per-key request limits over sliding windows (see
 * auth.h): at most per_minute requests in any 60 s and per_day in any
 * 86400 s.
 *
 * DESIGN: each key has, for each enabled limit of N requests, a ring of the
 * times of its last N allowed requests. A request at `now` is allowed when,
 * for every limit, the ring is not yet full or its oldest time has left the
 * window (now - window, now]; then `now` goes into every ring, replacing the
 * oldest. So a burst gets exactly N, and a refusal can say exactly when the
 * oldest request leaves the window. Refused requests are not recorded.
 * Memory is 8 bytes per allowed request remembered: 8 KB per key for 1000 a
 * day.
 *
 * Keys live in a chained hash table (SipHash-2-4 under a random key, so
 * that clients cannot pick keys that all land in one bucket) under one
 * mutex; each call holds it for a lookup and a few compares. When the table
 * is about to grow, keys whose newest request has left every window are
 * dropped first (they are in the same state as a key never seen), and the
 * table only grows when that did not free enough: memory follows the number
 * of keys active in the last window, not every key ever seen.
 */
#include "auth/auth.h"

#include <assert.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/xmalloc.h"

#define N_LIMITS 2
#define INITIAL_BUCKETS 64
#define MIN_RETRY_S 0.001 /* refusals always say a positive time */

static const int window_of[N_LIMITS] = {60, 86400}; /* seconds */

typedef struct ring {
    double *ts; /* times of the last allowed requests, capacity = the limit */
    int head;   /* index of the oldest */
    int count;  /* times held, <= capacity */
} ring_t;

typedef struct entry {
    struct entry *next;
    uint64_t hash;
    double last;           /* newest allowed request, seconds */
    ring_t ring[N_LIMITS]; /* ring[i].ts is NULL when limit i is off */
    char *key;             /* points into this allocation, after ts_buf */
    double ts_buf[];       /* both rings' storage */
} entry_t;

struct ratelimit {
    pthread_mutex_t lock;
    int limit[N_LIMITS]; /* requests per window; 0 = off */
    int max_window;      /* largest enabled window, seconds; 0 when none */
    uint64_t seed[2];    /* SipHash key */
    entry_t **bucket;
    size_t n_buckets; /* a power of two */
    size_t n_entries;
};

/* ---- SipHash-2-4 (Aumasson and Bernstein, 2012), 64-bit output -------------- */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                             \
    do {                                                                                                     \
        v0 += v1;                                                                                            \
        v1 = ROTL(v1, 13);                                                                                   \
        v1 ^= v0;                                                                                            \
        v0 = ROTL(v0, 32);                                                                                   \
        v2 += v3;                                                                                            \
        v3 = ROTL(v3, 16);                                                                                   \
        v3 ^= v2;                                                                                            \
        v0 += v3;                                                                                            \
        v3 = ROTL(v3, 21);                                                                                   \
        v3 ^= v0;                                                                                            \
        v2 += v1;                                                                                            \
        v1 = ROTL(v1, 17);                                                                                   \
        v1 ^= v2;                                                                                            \
        v2 = ROTL(v2, 32);                                                                                   \
    } while (0)

static uint64_t load_le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint64_t siphash(const uint64_t k[2], const unsigned char *in, size_t len) {
    uint64_t v0 = 0x736f6d6570736575ULL ^ k[0], v1 = 0x646f72616e646f6dULL ^ k[1];
    uint64_t v2 = 0x6c7967656e657261ULL ^ k[0], v3 = 0x7465646279746573ULL ^ k[1];
    const unsigned char *end = in + (len & ~(size_t)7);
    for (; in != end; in += 8) {
        uint64_t m = load_le64(in);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)len << 56;
    for (size_t i = 0; i < (len & 7); i++)
        b |= (uint64_t)in[i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- the table ------------------------------------------------------------ */

ratelimit_t *ratelimit_new(int per_minute, int per_day) {
    ratelimit_t *rl = xcalloc(1, sizeof *rl);
    pthread_mutex_init(&rl->lock, NULL);
    rl->limit[0] = per_minute > 0 ? per_minute : 0;
    rl->limit[1] = per_day > 0 ? per_day : 0;
    for (int i = 0; i < N_LIMITS; i++)
        if (rl->limit[i] && window_of[i] > rl->max_window)
            rl->max_window = window_of[i];
    if (RAND_bytes((unsigned char *)rl->seed, sizeof rl->seed) != 1) {
        /* Only bucket spread depends on it; any value is correct. */
        rl->seed[0] = (uint64_t)(uintptr_t)rl;
        rl->seed[1] = (uint64_t)(uintptr_t)&rl;
    }
    rl->n_buckets = INITIAL_BUCKETS;
    rl->bucket = xcalloc(rl->n_buckets, sizeof *rl->bucket);
    return rl;
}

void ratelimit_free(ratelimit_t *rl) {
    if (!rl)
        return;
    for (size_t b = 0; b < rl->n_buckets; b++) {
        entry_t *e = rl->bucket[b];
        while (e) {
            entry_t *next = e->next;
            free(e);
            e = next;
        }
    }
    free(rl->bucket);
    pthread_mutex_destroy(&rl->lock);
    free(rl);
}

/* Drop the keys whose newest request has left every window: they limit nothing. */
static void purge(ratelimit_t *rl, double now) {
    for (size_t b = 0; b < rl->n_buckets; b++) {
        entry_t **pe = &rl->bucket[b];
        while (*pe) {
            entry_t *e = *pe;
            if (e->last <= now - rl->max_window) {
                *pe = e->next;
                free(e);
                rl->n_entries--;
            } else {
                pe = &e->next;
            }
        }
    }
}

static void grow(ratelimit_t *rl) {
    size_t n = rl->n_buckets * 2;
    entry_t **nb = xcalloc(n, sizeof *nb);
    for (size_t b = 0; b < rl->n_buckets; b++) {
        entry_t *e = rl->bucket[b];
        while (e) {
            entry_t *next = e->next;
            size_t i = (size_t)e->hash & (n - 1);
            e->next = nb[i];
            nb[i] = e;
            e = next;
        }
    }
    free(rl->bucket);
    rl->bucket = nb;
    rl->n_buckets = n;
}

/* The entry for key, made (with empty rings) when missing. Called with the lock held. */
static entry_t *entry_get(ratelimit_t *rl, const char *key, double now) {
    size_t key_size = strlen(key) + 1;
    uint64_t h = siphash(rl->seed, (const unsigned char *)key, key_size - 1);
    for (entry_t *e = rl->bucket[h & (rl->n_buckets - 1)]; e; e = e->next)
        if (e->hash == h && strcmp(e->key, key) == 0)
            return e;

    if (rl->n_entries + 1 > rl->n_buckets) { /* load factor 1 */
        purge(rl, now);
        if (rl->n_entries + 1 > rl->n_buckets / 2)
            grow(rl);
    }
    size_t n_ts = (size_t)rl->limit[0] + (size_t)rl->limit[1];
    entry_t *e = xmalloc(sizeof *e + n_ts * sizeof(double) + key_size);
    e->hash = h;
    e->last = now;
    double *ts = e->ts_buf;
    for (int i = 0; i < N_LIMITS; i++) {
        e->ring[i].ts = rl->limit[i] ? ts : NULL;
        e->ring[i].head = e->ring[i].count = 0;
        ts += rl->limit[i];
    }
    e->key = (char *)ts;
    memcpy(e->key, key, key_size);
    size_t b = h & (rl->n_buckets - 1);
    e->next = rl->bucket[b];
    rl->bucket[b] = e;
    rl->n_entries++;
    return e;
}

int ratelimit_take(ratelimit_t *rl, const char *key, double now, double *retry_after, int *window_s) {
    assert(rl && key);
    if (!rl->max_window)
        return 1; /* no limit on */

    pthread_mutex_lock(&rl->lock);
    entry_t *e = entry_get(rl, key, now);
    double wait = 0;
    int hit = 0;
    for (int i = 0; i < N_LIMITS; i++) {
        const ring_t *r = &e->ring[i];
        if (!r->ts || r->count < rl->limit[i])
            continue;
        double oldest = r->ts[r->head];
        if (oldest > now - window_of[i]) { /* the full ring is inside (now - window, now] */
            double w = oldest + window_of[i] - now;
            if (!hit || w > wait) {
                wait = w;
                hit = window_of[i];
            }
        }
    }
    if (hit) {
        pthread_mutex_unlock(&rl->lock);
        if (retry_after)
            *retry_after = wait > MIN_RETRY_S ? wait : MIN_RETRY_S;
        if (window_s)
            *window_s = hit;
        return 0;
    }
    for (int i = 0; i < N_LIMITS; i++) {
        ring_t *r = &e->ring[i];
        if (!r->ts)
            continue;
        if (r->count < rl->limit[i]) {
            r->ts[(r->head + r->count) % rl->limit[i]] = now;
            r->count++;
        } else {
            r->ts[r->head] = now;
            r->head = (r->head + 1) % rl->limit[i];
        }
    }
    if (now > e->last)
        e->last = now;
    pthread_mutex_unlock(&rl->lock);
    return 1;
}
