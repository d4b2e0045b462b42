/*
 * conv_bf16.c - our own bf16 3x3 convolution on AVX512_BF16 (see the header).
 *
 * DESIGN
 *
 * Weights are packed per group of OB blocks of 16 output channels:
 * [group][tap][input pair][block][16 channels][2], so that one aligned
 * 64-byte load gives vdpbf16ps the weights of one tap and one input
 * channel pair for 16 output channels.
 *
 * The kernel computes XB consecutive output pixels of one row for one
 * group: OB x XB float32 accumulators (28 of the 32 zmm registers for
 * OB = 2, XB = 14), and for every tap and input pair OB weight loads and
 * XB broadcasts of an input pair, each feeding OB vdpbf16ps. Rows above or
 * below the image are skipped (their zero padding adds nothing); a block
 * whose window reaches past the left or right edge of the image, or is cut
 * short by the row's end, reads a copy of its window with zeros outside
 * the image, on the thread's stack, so the inner loop never tests an edge.
 *
 * Rows are shared among the threads; each thread walks its rows with every
 * group, so the three input rows a block reads stay in its L2 across the
 * groups.
 */
#include "nn/backend/conv_bf16.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/xmalloc.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CBF16_BUILT 1
#include <immintrin.h>
#include <omp.h>
#else
#define CBF16_BUILT 0
#endif

#define XB 14           /* output pixels per block */
#define MAX_CIN 512     /* the window copy lives on the stack */
#define WIN_PX (XB + 2) /* pixels of a block's window */

struct cbf16_weights {
    int n_in, n_out;
    int ob;       /* blocks of 16 output channels per group: 1 or 2 */
    int n_groups; /* ceil(n_out / (16 * ob)) */
    uint16_t *w;  /* owned, 64-byte aligned: [group][9][n_in / 2][ob][16][2] */
    float *bias;  /* owned: [n_groups * ob * 16], zeros past n_out */
};

int cbf16_cpu_ok(void) {
#if CBF16_BUILT
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw");
#else
    return 0;
#endif
}

/* Where an epilogue sum or a destination can live. */
static int io_ok(const nn_tensor_t *t, const nn_tensor_t *out) {
    if (t->c != out->c || t->h != out->h || t->w != out->w)
        return 0;
    if (t->layout == NN_LAYOUT_NHWC)
        return !nn_tensor_padded(t);
    return t->layout == NN_LAYOUT_BLOCK16 && t->dtype == NN_DTYPE_F32;
}

int cbf16_takes(const nn_conv_param_t *p, const nn_epilogue_t *epi, const nn_tensor_t *in,
                const nn_tensor_t *out) {
    if (p->kernel_w != 3 || p->kernel_h != 3 || p->stride_w != 1 || p->stride_h != 1 || p->dilation_w != 1 ||
        p->dilation_h != 1 || p->pad_left != 1 || p->pad_right != 1 || p->pad_top != 1 ||
        p->pad_bottom != 1 || p->pad_value != 0.f)
        return 0;
    if (p->act != NN_ACT_NONE && p->act != NN_ACT_RELU && p->act != NN_ACT_LEAKY)
        return 0;
    if (in->dtype != NN_DTYPE_BF16 || in->layout != NN_LAYOUT_NHWC || nn_tensor_padded(in) ||
        in->c != p->n_in || in->c % 2 || in->c > MAX_CIN)
        return 0;
    if (out->h != in->h || out->w != in->w || out->c != p->n_out || !io_ok(out, out))
        return 0;
    if (epi && epi->prelu && epi->prelu->n_slope != 1 && epi->prelu->n_slope != out->c)
        return 0;
    return !epi || !epi->sum || io_ok(epi->sum, out);
}

/* fp32 -> bf16, round to nearest even (finite values; as vcvtneps2bf16 rounds). */
static uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

cbf16_weights_t *cbf16_pack(const nn_conv_param_t *p) {
    cbf16_weights_t *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->n_in = p->n_in, w->n_out = p->n_out;
    w->ob = p->n_out <= 16 ? 1 : 2;
    int gc = 16 * w->ob, pairs = p->n_in / 2;
    w->n_groups = (p->n_out + gc - 1) / gc;
    size_t per_group = (size_t)9 * pairs * gc * 2;
    w->w = up_aligned_alloc(per_group * w->n_groups * sizeof(uint16_t), 1);
    w->bias = calloc((size_t)w->n_groups * gc, sizeof(float));
    if (!w->w || !w->bias) {
        cbf16_free(w);
        return NULL;
    }
    for (int g = 0; g < w->n_groups; g++)
        for (int t = 0; t < 9; t++)
            for (int k = 0; k < pairs; k++)
                for (int j = 0; j < gc; j++)
                    for (int e = 0; e < 2; e++) {
                        int oc = g * gc + j, ic = 2 * k + e;
                        float v = oc < p->n_out ? p->weight[((size_t)oc * p->n_in + ic) * 9 + t] : 0.f;
                        w->w[(((size_t)g * 9 + t) * pairs + k) * gc * 2 + (size_t)j * 2 + e] = to_bf16(v);
                    }
    for (int oc = 0; oc < p->n_out && p->bias; oc++)
        w->bias[oc] = p->bias[oc];
    return w;
}

size_t cbf16_bytes(const cbf16_weights_t *w) {
    return (size_t)w->n_groups * 9 * (w->n_in / 2) * w->ob * 16 * 2 * sizeof(uint16_t) +
           (size_t)w->n_groups * w->ob * 16 * sizeof(float);
}

void cbf16_free(cbf16_weights_t *w) {
    if (!w)
        return;
    up_aligned_free(w->w);
    free(w->bias);
    free(w);
}

#if CBF16_BUILT

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

/* What the epilogue needs, resolved once per run. */
typedef struct ctx {
    const cbf16_weights_t *w;
    const nn_conv_param_t *p;
    const nn_epilogue_t *epi;
    const nn_tensor_t *in, *out;
    float slope;        /* ReLU's or leaky ReLU's negative slope */
    const float *prelu; /* slopes, or NULL */
    int prelu_shared;   /* one slope for every channel */
} ctx_t;

/* Element offset of (channel oc, pixel y, x) in an NHWC or BLOCK16 tensor. */
static inline size_t at(const nn_tensor_t *t, int oc, int y, int x) {
    if (t->layout == NN_LAYOUT_NHWC)
        return ((size_t)y * t->w + x) * t->c + oc;
    return ((size_t)(oc / 16) * nn_tensor_sh(t) * nn_tensor_sw(t) + (size_t)y * nn_tensor_sw(t) + x) * 16;
}

/* The channels of [oc, oc + 16) that t holds (BLOCK16: its padded lanes too). */
static inline __mmask16 lanes(const nn_tensor_t *t, int oc) {
    int c = t->layout == NN_LAYOUT_BLOCK16 ? nn_layout_channels(t->layout, t->c) : t->c;
    int n = c - oc;
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? 0 : (__mmask16)((1u << n) - 1u);
}

TARGET static inline __m512 load16(const nn_tensor_t *t, size_t off, __mmask16 m) {
    if (t->dtype == NN_DTYPE_BF16) {
        __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)(const void *)t->data + off);
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    return _mm512_maskz_loadu_ps(m, t->data + off);
}

TARGET static inline void store16(const nn_tensor_t *t, size_t off, __mmask16 m, __m512 v) {
    if (t->dtype == NN_DTYPE_BF16) {
        __m256i h = (__m256i)_mm512_cvtneps_pbh(v);
        _mm256_mask_storeu_epi16((uint16_t *)(void *)t->data + off, m, h);
    } else {
        _mm512_mask_storeu_ps(t->data + off, m, v);
    }
}

/* Bias, activation, PReLU, scale and sum on 16 channels of one pixel, then the store. */
TARGET static inline void finish(const ctx_t *c, int oc, int y, int x, __m512 v) {
    const nn_tensor_t *out = c->out;
    __mmask16 m = lanes(out, oc);
    if (!m)
        return;
    const __m512 zero = _mm512_setzero_ps();
    v = _mm512_add_ps(v, _mm512_loadu_ps(c->w->bias + oc));
    if (c->p->act != NN_ACT_NONE) {
        /* ReLU with ncnn's slope (0: max(v, 0)) or leaky ReLU: the same formula */
        __mmask16 neg = _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ);
        v = _mm512_mask_mul_ps(v, neg, v, _mm512_set1_ps(c->slope));
    }
    if (c->prelu) {
        int n = out->c - oc; /* the slopes of the real channels, zero for the padded lanes */
        __mmask16 pm = n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1u);
        __m512 s = c->prelu_shared ? _mm512_set1_ps(c->prelu[0]) : _mm512_maskz_loadu_ps(pm, c->prelu + oc);
        __mmask16 neg = _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ);
        v = _mm512_mask_mul_ps(v, neg, v, s);
    }
    if (c->epi) {
        if (c->epi->scale != 1.f)
            v = _mm512_mul_ps(v, _mm512_set1_ps(c->epi->scale));
        if (c->epi->sum)
            v = _mm512_add_ps(v, load16(c->epi->sum, at(c->epi->sum, oc, y, x), lanes(c->epi->sum, oc)));
    }
    store16(out, at(out, oc, y, x), m, v);
}

/*
 * One block: n (<= XB) output pixels from x0 in row y, output channels of
 * group g. rows[ky] holds the input pixel x0 - 1 of the row read by tap
 * row ky (NULL: outside the image), pixels ps 32-bit pairs apart.
 */
#define BLOCK_KERNEL(NAME, OB)                                                                               \
    TARGET static void NAME(const ctx_t *c, int g, int y, int x0, int n, const uint32_t *const rows[3],      \
                            size_t ps) {                                                                     \
        const int pairs = c->w->n_in / 2;                                                                    \
        const __m512i *wg = (const __m512i *)(const void *)c->w->w + (size_t)g * 9 * pairs * (OB);           \
        __m512 acc[OB][XB];                                                                                  \
        _Pragma("GCC unroll 2") for (int b = 0; b < (OB); b++)                                               \
            _Pragma("GCC unroll 14") for (int i = 0; i < XB; i++) acc[b][i] = _mm512_setzero_ps();           \
        for (int ky = 0; ky < 3; ky++) {                                                                     \
            if (!rows[ky])                                                                                   \
                continue;                                                                                    \
            for (int kx = 0; kx < 3; kx++) {                                                                 \
                const uint32_t *ip = rows[ky] + (size_t)kx * ps;                                             \
                const __m512i *wp = wg + (size_t)(ky * 3 + kx) * pairs * (OB);                               \
                for (int k = 0; k < pairs; k++, ip++, wp += (OB)) {                                          \
                    __m512bh wv[OB];                                                                         \
                    _Pragma("GCC unroll 2") for (int b = 0; b < (OB); b++) wv[b] =                           \
                        (__m512bh)_mm512_load_si512(wp + b);                                                 \
                    _Pragma("GCC unroll 14") for (int i = 0; i < XB; i++) {                                  \
                        __m512bh xv = (__m512bh)_mm512_set1_epi32((int)ip[(size_t)i * ps]);                  \
                        _Pragma("GCC unroll 2") for (int b = 0; b < (OB); b++) acc[b][i] =                   \
                            _mm512_dpbf16_ps(acc[b][i], xv, wv[b]);                                          \
                    }                                                                                        \
                }                                                                                            \
            }                                                                                                \
        }                                                                                                    \
        for (int i = 0; i < n; i++)                                                                          \
            for (int b = 0; b < (OB); b++)                                                                   \
                finish(c, (g * (OB) + b) * 16, y, x0 + i, acc[b][i]);                                        \
    }

BLOCK_KERNEL(block1, 1)
BLOCK_KERNEL(block2, 2)

/* Every group of output row y. */
TARGET static void conv_row(const ctx_t *c, int y) {
    const nn_tensor_t *in = c->in;
    const int W = in->w, H = in->h, cin = in->c;
    const size_t ps = (size_t)cin / 2;
    const uint32_t *src = (const uint32_t *)(const void *)in->data;
    _Alignas(64) uint16_t win[3 * WIN_PX * MAX_CIN];
    for (int x0 = 0; x0 < W; x0 += XB) {
        int n = W - x0 < XB ? W - x0 : XB;
        const uint32_t *rows[3];
        int edge = x0 == 0 || x0 + XB + 1 > W;
        for (int ky = 0; ky < 3; ky++) {
            int yy = y + ky - 1;
            if (yy < 0 || yy >= H) {
                rows[ky] = NULL;
                continue;
            }
            const uint32_t *row = src + (size_t)yy * W * ps;
            if (!edge) {
                rows[ky] = row + (size_t)(x0 - 1) * ps;
                continue;
            }
            /* the window x0 - 1 .. x0 + XB, zeros outside the image */
            uint32_t *wr = (uint32_t *)(void *)win + (size_t)ky * WIN_PX * ps;
            for (int i = 0; i < WIN_PX; i++) {
                int xx = x0 - 1 + i;
                if (xx >= 0 && xx < W)
                    memcpy(wr + i * ps, row + (size_t)xx * ps, ps * sizeof(uint32_t));
                else
                    memset(wr + i * ps, 0, ps * sizeof(uint32_t));
            }
            rows[ky] = wr;
        }
        for (int g = 0; g < c->w->n_groups; g++) {
            if (c->w->ob == 2)
                block2(c, g, y, x0, n, rows, ps);
            else
                block1(c, g, y, x0, n, rows, ps);
        }
    }
}

void cbf16_run(const cbf16_weights_t *w, const nn_conv_param_t *p, const nn_epilogue_t *epi,
               const nn_tensor_t *in, const nn_tensor_t *out, int n_threads) {
    ctx_t c = {w, p, epi, in, out, p->act_params[0], NULL, 0};
    if (epi && epi->prelu) {
        c.prelu = epi->prelu->slope;
        c.prelu_shared = epi->prelu->n_slope == 1;
    }
    int nt = n_threads > 0 ? n_threads : omp_get_max_threads();
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int y = 0; y < in->h; y++)
        conv_row(&c, y);
}

TARGET void cbf16_round(uint16_t *dst, const float *src, size_t n, int n_threads) {
    const size_t chunk = 4096; /* elements per task */
    long n_chunks = (long)((n + chunk - 1) / chunk);
    int nt = n_threads > 0 ? n_threads : omp_get_max_threads();
#pragma omp parallel for schedule(static) num_threads(nt)
    for (long k = 0; k < n_chunks; k++) {
        size_t i = (size_t)k * chunk, end = i + chunk < n ? i + chunk : n;
        for (; i + 16 <= end; i += 16)
            _mm256_storeu_si256((__m256i *)(void *)(dst + i),
                                (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + i)));
        for (; i < end; i++)
            dst[i] = to_bf16(src[i]);
    }
}

#else

void cbf16_round(uint16_t *dst, const float *src, size_t n, int n_threads) {
    (void)n_threads;
    for (size_t i = 0; i < n; i++)
        dst[i] = to_bf16(src[i]);
}

void cbf16_run(const cbf16_weights_t *w, const nn_conv_param_t *p, const nn_epilogue_t *epi,
               const nn_tensor_t *in, const nn_tensor_t *out, int n_threads) {
    (void)w, (void)p, (void)epi, (void)in, (void)out, (void)n_threads;
    abort(); /* cbf16_cpu_ok said no */
}

#endif
