/*
 * plan_cache_test.c - the network's plan cache (src/nn/plan.c), as the
 * upscaler drives it (src/upscale): one plan per tile shape and precision,
 * a hit for a shape seen before, least recently used dropped first for the
 * count and for the byte budget (opts->tile_memory), and outputs
 * bit-identical with and without the cache when shapes come back, with
 * realesr-animevideov3-x2 (small and fast) on the dnnl backend.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "upscale/upscale.h"

static upscale_registry_t *reg;

static upscaler_t *open_model(void) {
    const upscale_variant_t *v = NULL;
    upscaler_t *up = NULL;
    up_error_t err;
    CHECKF(upscale_registry_resolve(reg, "realesr-animevideov3-x2", 0, &v, &err) == 0, "%s", err.msg);
    if (v)
        CHECKF(upscaler_new(reg, v, NN_BACKEND_DNNL, 2, &up, &err) == 0, "%s", err.msg);
    if (up)
        CHECKF(upscaler_set_precision(up, NN_PRECISION_FP32, &err) == 0, "%s", err.msg);
    return up;
}

/* The input shapes (planes of h x w; the plan is for h+20 x w+20), growing so the backend scratch grows. */
static const int shapes[][2] = {{12, 16}, {30, 22}, {18, 18}, {44, 40}};
#define N_SHAPES 4

static float *input(int h, int w) {
    float *in = malloc(sizeof(float) * 3 * (size_t)h * w);
    uint32_t x = (uint32_t)(h * 131 + w);
    for (size_t i = 0; i < (size_t)3 * h * w; i++) {
        x = x * 1664525u + 1013904223u;
        in[i] = (float)(x >> 8) / (float)(1u << 24);
    }
    return in;
}

/* Run shape k through up with opts; returns the new output (caller frees) or NULL. */
static float *run(upscaler_t *up, int k, const upscale_opts_t *opts) {
    int h = shapes[k][0], w = shapes[k][1], s = upscaler_scale(up);
    float *in = input(h, w), *out = malloc(sizeof(float) * 3 * (size_t)h * w * s * s);
    up_error_t err;
    int rc = upscaler_run_planes(up, in, 3, h, w, out, 0, opts, 0, 1, &err);
    CHECKF(rc == 0, "%dx%d: %s", w, h, err.msg);
    free(in);
    if (rc) {
        free(out);
        return NULL;
    }
    return out;
}

static nn_plan_stats_t stats(const upscaler_t *up) {
    nn_plan_stats_t st;
    upscaler_plan_stats(up, &st);
    return st;
}

static void test_hits_and_shapes(void) {
    upscaler_t *up = open_model();
    if (!up)
        return;
    upscale_opts_t opts;
    upscale_opts_init(&opts);
    opts.tile_memory = (size_t)1 << 30;
    free(run(up, 0, &opts));
    nn_plan_stats_t st = stats(up);
    CHECK(st.misses == 1 && st.hits == 0 && st.n_plans == 1 && st.bytes > 0);
    free(run(up, 0, &opts)); /* same shape: the plan is reused */
    st = stats(up);
    CHECK(st.misses == 1 && st.hits == 1 && st.n_plans == 1);
    free(run(up, 1, &opts)); /* another shape is another entry, the first stays */
    st = stats(up);
    CHECK(st.misses == 2 && st.n_plans == 2 && st.evictions == 0);
    free(run(up, 0, &opts));
    free(run(up, 1, &opts));
    st = stats(up);
    CHECKF(st.misses == 2 && st.hits == 3, "misses %llu hits %llu", st.misses, st.hits);

    /* the precision is in the key: bf16 is a new plan, and fp32's is still there after it */
    up_error_t err;
    if (upscaler_set_precision(up, NN_PRECISION_BF16, &err) == 0) {
        free(run(up, 0, &opts));
        st = stats(up);
        CHECKF(st.misses == 3 && st.n_plans == 3, "misses %llu plans %d", st.misses, st.n_plans);
        CHECK(upscaler_set_precision(up, NN_PRECISION_FP32, &err) == 0);
        free(run(up, 0, &opts));
        st = stats(up);
        CHECKF(st.misses == 3 && st.hits == 4, "misses %llu hits %llu", st.misses, st.hits);
    } else {
        printf("bf16 not available here (%s): precision keys not checked\n", err.msg);
    }
    upscaler_free(up);
}

static void test_lru_by_count(void) {
    upscaler_t *up = open_model();
    if (!up)
        return;
    upscale_opts_t opts;
    upscale_opts_init(&opts);
    opts.tile_memory = (size_t)1 << 30;
    opts.max_plans = 2;
    free(run(up, 0, &opts)); /* kept: 0 */
    free(run(up, 1, &opts)); /* 1 0 */
    free(run(up, 2, &opts)); /* 2 1: 0 dropped */
    nn_plan_stats_t st = stats(up);
    CHECK(st.n_plans == 2 && st.evictions == 1 && st.misses == 3);
    free(run(up, 1, &opts)); /* hit: 1 2 */
    st = stats(up);
    CHECK(st.hits == 1 && st.misses == 3);
    free(run(up, 0, &opts)); /* miss: drops 2, the least recently used, not 1: 0 1 */
    free(run(up, 1, &opts)); /* so this is a hit */
    st = stats(up);
    CHECKF(st.hits == 2 && st.misses == 4 && st.evictions == 2, "hits %llu misses %llu evictions %llu",
           st.hits, st.misses, st.evictions);
    /* plans=1 keeps only the plan in use: every change of shape plans again */
    opts.max_plans = 1;
    free(run(up, 2, &opts));
    free(run(up, 1, &opts));
    st = stats(up);
    CHECK(st.n_plans == 1 && st.misses == 6 && st.hits == 2);
    upscaler_free(up);
}

static void test_budget(void) {
    upscaler_t *up = open_model();
    if (!up)
        return;
    upscale_opts_t opts;
    upscale_opts_init(&opts);
    opts.tile_memory = (size_t)1 << 30;
    free(run(up, 0, &opts));
    size_t a = stats(up).bytes;
    free(run(up, 1, &opts));
    size_t ab = stats(up).bytes;
    CHECK(ab > a);
    free(run(up, 2, &opts)); /* kept: 2 1 0 */
    nn_plan_stats_t st = stats(up);
    CHECK(st.n_plans == 3 && st.evictions == 0);
    size_t abc = st.bytes;

    /* a budget that holds the two most recent plans but not the third: the oldest (0) goes */
    opts.tile_memory = abc - 1;
    free(run(up, 2, &opts)); /* a hit, and the new limits apply at once */
    st = stats(up);
    CHECKF(st.n_plans == 2 && st.evictions == 1 && st.bytes <= opts.tile_memory, "plans %d bytes %zu of %zu",
           st.n_plans, st.bytes, opts.tile_memory);
    free(run(up, 1, &opts));
    CHECK(stats(up).hits == 2);

    /* a budget below any one plan keeps just the plan in use */
    opts.tile_memory = a / 2;
    free(run(up, 3, &opts));
    st = stats(up);
    CHECKF(st.n_plans == 1 && st.misses == 4, "plans %d misses %llu", st.n_plans, st.misses);
    free(run(up, 3, &opts));
    CHECK(stats(up).hits == 3);
    upscaler_free(up);
}

/* The same outputs, bit for bit, from a cached plan, a fresh plan and a fresh net. */
static void test_identical(void) {
    static const int seq[] = {0, 1, 0, 2, 3, 1, 0, 3};
    const int n = (int)(sizeof seq / sizeof *seq);
    upscaler_t *cached = open_model(), *single = open_model();
    float *first[N_SHAPES] = {0};
    if (!cached || !single)
        goto done;
    upscale_opts_t on, off;
    upscale_opts_init(&on);
    on.tile_memory = (size_t)1 << 30;
    off = on;
    off.max_plans = 1;
    int s = upscaler_scale(cached);
    for (int i = 0; i < n; i++) {
        int k = seq[i];
        size_t size = sizeof(float) * 3 * (size_t)shapes[k][0] * shapes[k][1] * s * s;
        float *a = run(cached, k, &on), *b = run(single, k, &off);
        if (a && b) {
            CHECKF(memcmp(a, b, size) == 0, "shape %d (step %d): the cached plan's output differs", k, i);
            if (!first[k]) {
                first[k] = a;
                a = NULL;
            } else {
                CHECKF(memcmp(first[k], b, size) == 0, "shape %d (step %d): differs from its first run", k,
                       i);
            }
        }
        free(a);
        free(b);
    }
    /* and from a net that never planned anything else */
    for (int k = 0; k < N_SHAPES; k++) {
        upscaler_t *fresh = open_model();
        float *c = fresh && first[k] ? run(fresh, k, &off) : NULL;
        if (c)
            CHECKF(memcmp(first[k], c, sizeof(float) * 3 * (size_t)shapes[k][0] * shapes[k][1] * s * s) == 0,
                   "shape %d: a fresh net's output differs", k);
        free(c);
        upscaler_free(fresh);
    }
    nn_plan_stats_t st = stats(cached);
    CHECKF(st.misses == N_SHAPES && st.hits == (unsigned long long)(n - N_SHAPES), "misses %llu hits %llu",
           st.misses, st.hits);
done:
    for (int k = 0; k < N_SHAPES; k++)
        free(first[k]);
    upscaler_free(cached);
    upscaler_free(single);
}

int main(void) {
    up_error_t err;
    CHECKF(upscale_registry_scan(test_env("UPRES_TEST_MODELS"), &reg, &err) == 0, "%s", err.msg);
    if (reg) {
        test_hits_and_shapes();
        test_lru_by_count();
        test_budget();
        test_identical();
    }
    upscale_registry_free(reg);
    return test_summary();
}
