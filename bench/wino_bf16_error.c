/*
 * wino_bf16_error.c - why bf16 has no Winograd: the error of bf16 products
 * in the Winograd domain.
 *
 * One 3x3 convolution of 64 input channels onto a 4x4 output tile, with
 * random inputs (uniform in [-1, 1], or its absolute value as after a
 * ReLU) and weights, computed four ways against the exact result (double
 * precision on the float32 operands), and printed as signal-to-noise in dB:
 *
 *   direct bf16      inputs and weights rounded to bf16, products summed
 *                    exactly (what vdpbf16ps with float32 accumulation does)
 *   F(2x2,3x3) bf16  Winograd with the transformed inputs and weights
 *                    rounded to bf16 (the products vdpbf16ps would take)
 *   F(4x4,3x3) bf16  the same for oneDNN's Winograd tile
 *   F(4x4,3x3) V     only the transformed inputs rounded (weights exact)
 *
 * The bf16 precision's bar is 50 dB against the fp32 references for whole
 * models; direct bf16 keeps a single conv near 53 dB, F(4x4,3x3) in bf16
 * drops it to 32-38 dB and F(2x2,3x3) to 48-51. So on a CPU without AMX,
 * where the vdpbf16ps peak is twice the fp32 FMA peak and fp32 Winograd
 * F(4x4,3x3) does a quarter of the multiplications, a bf16 convolution
 * that keeps the bar (a direct one) cannot beat fp32 Winograd
 * (docs/benchmarks.md). Run: build/bench_wino_bf16_error [TRIALS]
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CIN 64

static float bf(double x) {
    float f = (float)x;
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}

static unsigned rng = 1u;
static double rnd(void) {
    rng = rng * 1664525u + 1013904223u;
    return (double)(rng >> 8) / (double)(1u << 23) - 1.0;
}

/* A Winograd F(m x m, 3x3) tile: n = m + 2 points. */
typedef struct {
    int m, n;
    double bt[6][6], g[6][3], at[4][6];
} wino_t;

static const wino_t F2 = {2,
                          4,
                          {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}},
                          {{1, 0, 0}, {.5, .5, .5}, {.5, -.5, .5}, {0, 0, 1}},
                          {{1, 1, 1, 0}, {0, 1, -1, -1}}};
static const wino_t F4 = {
    4,
    6,
    {{4, 0, -5, 0, 1, 0},
     {0, -4, -4, 1, 1, 0},
     {0, 4, -4, -1, 1, 0},
     {0, -2, -1, 2, 1, 0},
     {0, 2, -1, -2, 1, 0},
     {0, 4, 0, -5, 0, 1}},
    {{1. / 4, 0, 0},
     {-1. / 6, -1. / 6, -1. / 6},
     {-1. / 6, 1. / 6, -1. / 6},
     {1. / 24, 1. / 12, 1. / 6},
     {1. / 24, -1. / 12, 1. / 6},
     {0, 0, 1}},
    {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}}};

/*
 * out[m][m] at (oy, ox) of the 4x4 tile by Winograd; round_u / round_v: the
 * transformed weights / inputs rounded to bf16.
 */
static void wino(const wino_t *f, double d[CIN][6][6], double g[CIN][3][3], int oy, int ox, int round_u,
                 int round_v, double out[4][4]) {
    double acc[6][6] = {{0}};
    int n = f->n, m = f->m;
    for (int c = 0; c < CIN; c++) {
        double t[6][6], v[6][6], u1[6][3], u[6][6];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                double s = 0;
                for (int k = 0; k < n; k++)
                    s += f->bt[i][k] * d[c][oy + k][ox + j];
                t[i][j] = s;
            }
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                double s = 0;
                for (int k = 0; k < n; k++)
                    s += t[i][k] * f->bt[j][k];
                v[i][j] = round_v ? bf(s) : (float)s;
            }
        for (int i = 0; i < n; i++)
            for (int j = 0; j < 3; j++) {
                double s = 0;
                for (int k = 0; k < 3; k++)
                    s += f->g[i][k] * g[c][k][j];
                u1[i][j] = s;
            }
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                double s = 0;
                for (int k = 0; k < 3; k++)
                    s += u1[i][k] * f->g[j][k];
                u[i][j] = round_u ? bf(s) : (float)s;
            }
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                acc[i][j] += u[i][j] * v[i][j];
    }
    double t[4][6];
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int k = 0; k < n; k++)
                s += f->at[i][k] * acc[k][j];
            t[i][j] = s;
        }
    for (int i = 0; i < m; i++)
        for (int j = 0; j < m; j++) {
            double s = 0;
            for (int k = 0; k < n; k++)
                s += t[i][k] * f->at[j][k];
            out[oy + i][ox + j] = s;
        }
}

int main(int argc, char **argv) {
    int trials = argc > 1 ? atoi(argv[1]) : 2000;
    static double d[CIN][6][6], g[CIN][3][3];
    printf("one 3x3 conv, %d input channels, %d 4x4 tiles: SNR in dB against exact\n", CIN, trials);
    printf("%-10s %12s %16s %16s %16s\n", "inputs", "direct bf16", "F(2x2,3x3) bf16", "F(4x4,3x3) bf16",
           "F(4x4,3x3) V");
    for (int positive = 0; positive < 2; positive++) {
        double sig = 0, err[4] = {0};
        for (int t = 0; t < trials; t++) {
            for (int c = 0; c < CIN; c++) {
                for (int i = 0; i < 6; i++)
                    for (int j = 0; j < 6; j++)
                        d[c][i][j] = (float)(positive ? fabs(rnd()) : rnd());
                for (int i = 0; i < 3; i++)
                    for (int j = 0; j < 3; j++)
                        g[c][i][j] = (float)(rnd() * 0.1);
            }
            double exact[4][4] = {{0}}, direct[4][4] = {{0}}, w2[4][4], w4[4][4], w4v[4][4];
            for (int y = 0; y < 4; y++)
                for (int x = 0; x < 4; x++)
                    for (int c = 0; c < CIN; c++)
                        for (int i = 0; i < 3; i++)
                            for (int j = 0; j < 3; j++) {
                                exact[y][x] += d[c][y + i][x + j] * g[c][i][j];
                                direct[y][x] += (double)bf(d[c][y + i][x + j]) * (double)bf(g[c][i][j]);
                            }
            for (int ty = 0; ty < 4; ty += 2)
                for (int tx = 0; tx < 4; tx += 2)
                    wino(&F2, d, g, ty, tx, 1, 1, w2);
            wino(&F4, d, g, 0, 0, 1, 1, w4);
            wino(&F4, d, g, 0, 0, 0, 1, w4v);
            for (int y = 0; y < 4; y++)
                for (int x = 0; x < 4; x++) {
                    sig += exact[y][x] * exact[y][x];
                    err[0] += pow(direct[y][x] - exact[y][x], 2);
                    err[1] += pow(w2[y][x] - exact[y][x], 2);
                    err[2] += pow(w4[y][x] - exact[y][x], 2);
                    err[3] += pow(w4v[y][x] - exact[y][x], 2);
                }
        }
        printf("%-10s %12.1f %16.1f %16.1f %16.1f\n", positive ? "|uniform|" : "uniform",
               10 * log10(sig / err[0]), 10 * log10(sig / err[1]), 10 * log10(sig / err[2]),
               10 * log10(sig / err[3]));
    }
    return 0;
}
