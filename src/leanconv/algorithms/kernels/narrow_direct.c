/* Direct convolution of channels-last float32 tensors, vectorised over output channels in
 * vectors of 8 (leanconv.algorithms.narrow; the register-blocked direct convolution of
 * Georganas et al. 2018, "Anatomy of high-performance deep learning convolutions on SIMD
 * architectures", section 3, with the channel block narrowed to 8):
 *
 *     out[n, y, x, k] = act(bias[k] + sum_{i, j, c} in[n, y s_y - p_y + i d_y,
 *                                                      x s_x - p_x + j d_x, c] w[i, j, c, k])
 *
 * Library kernels block output channels by the machine's widest vector (16 floats with
 * AVX-512), so a layer with 8 output channels, or 24, fills half of its last vector: the thin
 * factors of a decomposed layer (ranks 4-24) run there at a third to a half of a dense layer's
 * rate. Here a vector holds 8 channels whatever the machine (where 512-bit vectors execute as
 * two 256-bit halves, as on AMD Zen 4, that costs nothing), and an inner block keeps P output
 * pixels x NV vectors of channels in registers:
 *
 *     for each tap (i, j) and input channel c:  b[v] = w[i, j, c, k0 + 8 v : ...]
 *                                               acc[p][v] += in[pixel p, c] * b[v]
 *
 * one weight load per NV vectors of FMAs and one broadcast per NV FMAs. A thread takes output
 * rows (n, y) and reads the input in place: taps above and below the input are skipped for the
 * row, and the pixels whose taps reach past the left or right edge (at most a few per row) are
 * computed one at a time with those taps skipped; zero padding is never materialised.
 * w is packed [kh][kw][C][Kp] with Kp = K rounded up to 8 (zeros), bias Kp values or NULL.
 */
#include <stdlib.h>
#include <string.h>

#define VW 8
#if defined(__AVX512F__)
#define ACC 24 /* accumulators in registers: 32 vector registers */
#else
#define ACC 12 /* 16 vector registers */
#endif
#define NVMAX 4
#define PMAX 12

typedef float v8 __attribute__((vector_size(VW * 4)));
typedef float v8u __attribute__((vector_size(VW * 4), aligned(4)));
typedef int v8i __attribute__((vector_size(VW * 4)));

static inline v8 vload(const float *p) { return *(const v8u *)p; }
static inline void vstore(float *p, v8 v) { *(v8u *)p = v; }
/* all lanes s (written out: 0 + s would cost an addition, as -0 + 0 is not -0) */
static inline v8 vsplat(float s) { return (v8){s, s, s, s, s, s, s, s}; }
static inline long min_l(long a, long b) { return a < b ? a : b; }
static inline long max_l(long a, long b) { return a > b ? a : b; }

/* P output pixels x nv vectors of channels from k0, taps j in [j0, j1) of each row rows[i]
 * (NULL: outside the input); pixel p, tap j reads rows[i] + p xs + j xd (floats). */
static inline __attribute__((always_inline)) void block(
    const float *const *rows, long xs, long xd, long c_count, const float *restrict w, long kp,
    long k0, const float *restrict bias, int relu, float *restrict out, long os, long k,
    int kh, int kw, int j0, int j1, const int P, const int nv) {
    v8 acc[PMAX][NVMAX];
    for (int p = 0; p < P; p++)
        for (int v = 0; v < nv; v++) acc[p][v] = bias ? vload(bias + k0 + v * VW) : (v8){0};
    for (int i = 0; i < kh; i++) {
        const float *row = rows[i];
        if (!row) continue;
        for (int j = j0; j < j1; j++) {
            const float *in = row + j * xd;
            const float *wt = w + (long)(i * kw + j) * c_count * kp + k0;
            for (long c = 0; c < c_count; c++) {
                /* the next block's pixels, a line per step: wide inputs stream from memory */
                if (c * 16 < P * xs) __builtin_prefetch(in + P * xs + c * 16);
                v8 b[NVMAX];
                for (int v = 0; v < nv; v++) b[v] = vload(wt + c * kp + v * VW);
                for (int p = 0; p < P; p++) {
                    const v8 a = vsplat(in[p * xs + c]);
                    for (int v = 0; v < nv; v++) acc[p][v] += a * b[v];
                }
            }
        }
    }
    for (int p = 0; p < P; p++) {
        for (int v = 0; v < nv; v++) {
            v8 r = acc[p][v];
            if (relu) r = (v8)((v8i)r & (r > 0)); /* max(0, r) */
            const long kk = k0 + v * VW;
            if (kk + VW <= k) {
                vstore(out + p * os + kk, r);
            } else { /* the last, partial vector of channels */
                float tmp[VW];
                vstore(tmp, r);
                memcpy(out + p * os + kk, tmp, (size_t)(k - kk) * sizeof(float));
            }
        }
    }
}

/* The pixel block for nv vectors: as many pixels as the registers hold, at most PMAX. */
static inline int pixels_for(int nv) {
    const int p = ACC / nv;
    return p < PMAX ? p : PMAX;
}

#define CASE_P(P, NV)                                                                          \
    case P:                                                                                    \
        block(rows, xs, xd, c, w, kp, k0, bias, relu, out, os, k, kh, kw, j0, j1, P, NV);      \
        break;
#define SWITCH_P(NV)                                                                           \
    switch (p_count) {                                                                         \
        CASE_P(1, NV) CASE_P(2, NV) CASE_P(3, NV) CASE_P(4, NV) CASE_P(5, NV) CASE_P(6, NV)    \
        CASE_P(7, NV) CASE_P(8, NV) CASE_P(9, NV) CASE_P(10, NV) CASE_P(11, NV)                \
        CASE_P(12, NV)                                                                         \
    }

/* A block of p_count (<= pixels_for(nv)) pixels: constant P and nv keep it in registers. */
static void block_any(const float *const *rows, long xs, long xd, long c, const float *w,
                      long kp, long k0, const float *bias, int relu, float *out, long os, long k,
                      int kh, int kw, int j0, int j1, int p_count, int nv) {
    switch (nv) {
    case 1: SWITCH_P(1) break;
    case 2: SWITCH_P(2) break;
    case 3: SWITCH_P(3) break;
    default: SWITCH_P(4) break;
    }
}

static inline long ceil_div(long a, long b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }
static inline long floor_div(long a, long b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/* x (N, C, H, W) with any strides but s_c = 1, out (N, K, Ho, Wo) likewise. */
void narrow_conv(const float *x, long sn, long sy, long sx, long c, long h, long wd,
                 const float *w, long kp, long k, const float *bias, int relu, float *out,
                 long on, long oy, long ox, long ho, long wo, long n, int kh, int kw,
                 int stride_y, int stride_x, int pad_y, int pad_x, int dil_y, int dil_x,
                 int threads) {
    /* output columns whose every tap lies inside the input: [x_lo, x_hi) */
    const long x_lo = min_l(wo, max_l(0, ceil_div(pad_x, stride_x)));
    const long x_hi = max_l(x_lo, min_l(wo, floor_div(wd - 1 + pad_x - (long)(kw - 1) * dil_x,
                                                      stride_x) + 1));
    const long xs = stride_x * sx, xd = (long)dil_x * sx;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long r = 0; r < n * ho; r++) {
        const long b = r / ho, y = r % ho;
        const float *rows[64]; /* input row of tap i at output column 0 (may point before it) */
        for (int i = 0; i < kh; i++) {
            const long iy = y * stride_y - pad_y + (long)i * dil_y;
            rows[i] = (iy < 0 || iy >= h) ? NULL : x + b * sn + iy * sy - pad_x * sx;
        }
        float *orow = out + b * on + y * oy;
        for (long k0 = 0; k0 < kp; k0 += NVMAX * VW) {
            const int nv = (int)min_l(NVMAX, (kp - k0) / VW);
            const int pb = pixels_for(nv);
            const float *at[64];
            for (long x0 = 0; x0 < wo;) {
                int j0 = 0, j1 = kw, p_count;
                if (x0 >= x_lo && x0 < x_hi) {
                    p_count = (int)min_l(pb, x_hi - x0);
                } else { /* an edge pixel: only the taps inside the input */
                    const long first = x0 * stride_x - pad_x;
                    j0 = (int)min_l(kw, max_l(0, ceil_div(-first, dil_x)));
                    j1 = (int)max_l(j0, min_l(kw, floor_div(wd - 1 - first, dil_x) + 1));
                    p_count = 1;
                }
                for (int i = 0; i < kh; i++) at[i] = rows[i] ? rows[i] + x0 * xs : NULL;
                block_any(at, xs, xd, c, w, kp, k0, bias, relu, orow + x0 * ox, ox, k, kh, kw,
                          j0, j1, p_count, nv);
                x0 += p_count;
            }
        }
    }
}
