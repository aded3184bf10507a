/* Direct convolution of channels-last float32 tensors, vectorised over output channels in
 * vectors of 8 (leanconv.algorithms.narrow; the register-blocked direct convolution of
 * Georganas et al. 2018, "Anatomy of high-performance deep learning convolutions on SIMD
 * architectures", section 3, with the channel block narrowed to 8):
 *
 *     out[n, y, x, k] = act(bias[k] + res[n, y, x, k]
 *                           + sum_{i, j, c} in[n, y s_y - p_y + i d_y, x s_x - p_x + j d_x, c]
 *                                           w[i, j, c, k])
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
 * res (a residual block's shortcut, NULL: none) has the output's shape and strides: it is added
 * as each output vector is written, before the activation, so that relu(conv + b + shortcut)
 * costs one read of the shortcut instead of two more passes over the output.
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
    long k0, const float *restrict bias, int relu, float *restrict out,
    const float *restrict res, long os, long k, int kh, int kw, int j0, int j1, const int P,
    const int nv) {
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
            const long kk = k0 + v * VW, at = p * os + kk;
            if (kk + VW <= k) {
                if (res) r += vload(res + at);
                if (relu) r = (v8)((v8i)r & (r > 0)); /* max(0, r) */
                vstore(out + at, r);
            } else { /* the last, partial vector of channels */
                float tmp[VW] = {0};
                if (res) {
                    memcpy(tmp, res + at, (size_t)(k - kk) * sizeof(float));
                    r += vload(tmp);
                }
                if (relu) r = (v8)((v8i)r & (r > 0));
                vstore(tmp, r);
                memcpy(out + at, tmp, (size_t)(k - kk) * sizeof(float));
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
        block(rows, xs, xd, c, w, kp, k0, bias, relu, out, res, os, k, kh, kw, j0, j1, P, NV); \
        break;
#define SWITCH_P(NV)                                                                           \
    switch (p_count) {                                                                         \
        CASE_P(1, NV) CASE_P(2, NV) CASE_P(3, NV) CASE_P(4, NV) CASE_P(5, NV) CASE_P(6, NV)    \
        CASE_P(7, NV) CASE_P(8, NV) CASE_P(9, NV) CASE_P(10, NV) CASE_P(11, NV)                \
        CASE_P(12, NV)                                                                         \
    }

/* A block of p_count (<= pixels_for(nv)) pixels: constant P and nv keep it in registers. */
static void block_any(const float *const *rows, long xs, long xd, long c, const float *w,
                      long kp, long k0, const float *bias, int relu, float *out,
                      const float *res, long os, long k, int kh, int kw, int j0, int j1,
                      int p_count, int nv) {
    switch (nv) {
    case 1: SWITCH_P(1) break;
    case 2: SWITCH_P(2) break;
    case 3: SWITCH_P(3) break;
    default: SWITCH_P(4) break;
    }
}

static inline long ceil_div(long a, long b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }
static inline long floor_div(long a, long b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/* Output pixels [xa, xb) of output row y of one image (the general path): img is the image's
 * input, orow the output row. */
static void row_range(const float *img, long sy, long sx, long c, long h, long wd,
                      const float *w, long kp, long k, const float *bias, int relu, float *orow,
                      const float *rrow, long ox, long y, long xa, long xb, int kh, int kw,
                      int stride_y,
                      int stride_x, int pad_y, int pad_x, int dil_y, int dil_x, long x_lo,
                      long x_hi) {
    const long xs = stride_x * sx, xd = (long)dil_x * sx;
    const float *rows[64]; /* input row of tap i at output column 0 (may point before it) */
    for (int i = 0; i < kh; i++) {
        const long iy = y * stride_y - pad_y + (long)i * dil_y;
        rows[i] = (iy < 0 || iy >= h) ? NULL : img + iy * sy - pad_x * sx;
    }
    for (long k0 = 0; k0 < kp; k0 += NVMAX * VW) {
        const int nv = (int)min_l(NVMAX, (kp - k0) / VW);
        const int pb = pixels_for(nv);
        const float *at[64];
        for (long x0 = xa; x0 < xb;) {
            int j0 = 0, j1 = kw, p_count;
            if (x0 >= x_lo && x0 < x_hi) {
                p_count = (int)min_l(pb, min_l(x_hi, xb) - x0);
            } else { /* an edge pixel: only the taps inside the input */
                const long first = x0 * stride_x - pad_x;
                j0 = (int)min_l(kw, max_l(0, ceil_div(-first, dil_x)));
                j1 = (int)max_l(j0, min_l(kw, floor_div(wd - 1 - first, dil_x) + 1));
                p_count = 1;
            }
            for (int i = 0; i < kh; i++) at[i] = rows[i] ? rows[i] + x0 * xs : NULL;
            block_any(at, xs, xd, c, w, kp, k0, bias, relu, orow + x0 * ox,
                      rrow ? rrow + x0 * ox : NULL, ox, k, kh, kw, j0, j1, p_count, nv);
            x0 += p_count;
        }
    }
}

/* Stride 1, no dilation, one vector of channels (K <= 8, the thinnest factors): a block of R
 * output rows x P pixels. Each input value loaded feeds every tap of the block that reads it:
 * input row t, column q serves output (t - i, q - j) through tap (i, j), so one broadcast does up
 * to kh kw FMAs where the general block does one. Against the general block on 2 Zen 4 cores,
 * batch 64, 32x32, interleaved: 1.24x on a 32 -> 8 3x1 factor, 1.38x on an 8 -> 8 3x3 core,
 * 1.24x on a 16 -> 8 1x3 factor; with two vectors of channels it ran 0.67-0.8x of the general
 * block, which is kept there.
 * rows[t]: input row t of the block at its first column's leftmost tap (NULL: outside the input,
 * its taps skipped); the block's pixels all lie in [x_lo, x_hi). */
static inline __attribute__((always_inline)) void block_rows(
    const float *const *rows, long xs, long c_count, const float *restrict w, long kp,
    const float *restrict bias, int relu, float *restrict out, const float *restrict res,
    long oy, long os, long k, const int KH, const int KW, const int R, const int P) {
    v8 acc[4][12];
#pragma GCC unroll 16
    for (int r = 0; r < R; r++)
#pragma GCC unroll 16
        for (int p = 0; p < P; p++) acc[r][p] = bias ? vload(bias) : (v8){0};
    for (long c = 0; c < c_count; c++) {
        v8 b[3][3];
#pragma GCC unroll 16
        for (int i = 0; i < KH; i++)
#pragma GCC unroll 16
            for (int j = 0; j < KW; j++) b[i][j] = vload(w + ((long)(i * KW + j) * c_count + c) * kp);
#pragma GCC unroll 16
        for (int t = 0; t < R + KH - 1; t++) {
            const float *row = rows[t];
            if (!row) continue;
            /* the next block's pixels, a line per step (without it, slower than the general
             * block, which prefetches likewise) */
            if (c * 16 < P * xs) __builtin_prefetch(row + (P + KW - 1) * xs + c * 16);
#pragma GCC unroll 16
            for (int q = 0; q < P + KW - 1; q++) {
                const v8 a = vsplat(row[q * xs + c]);
#pragma GCC unroll 16
                for (int i = 0; i < KH; i++) {
#pragma GCC unroll 16
                    for (int j = 0; j < KW; j++) {
                        const int r = t - i, p = q - j;
                        if (r >= 0 && r < R && p >= 0 && p < P) acc[r][p] += a * b[i][j];
                    }
                }
            }
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; r++) {
#pragma GCC unroll 16
        for (int p = 0; p < P; p++) {
            v8 s = acc[r][p];
            const long at = r * oy + p * os;
            if (k == VW) {
                if (res) s += vload(res + at);
                if (relu) s = (v8)((v8i)s & (s > 0)); /* max(0, s) */
                vstore(out + at, s);
            } else { /* fewer than 8 channels */
                float tmp[VW] = {0};
                if (res) {
                    memcpy(tmp, res + at, (size_t)k * sizeof(float));
                    s += vload(tmp);
                }
                if (relu) s = (v8)((v8i)s & (s > 0));
                vstore(tmp, s);
                memcpy(out + at, tmp, (size_t)k * sizeof(float));
            }
        }
    }
}

/* The row blocks, (kh, kw) -> (R, P): R P accumulators and kh kw weights in the vector
 * registers (32 with AVX-512, 16 otherwise). Other kernels take the general path. */
#if defined(__AVX512F__)
#define ROW_BLOCKS X(3, 1, 3, 8) X(1, 3, 2, 12) X(3, 3, 2, 10)
#else
#define ROW_BLOCKS X(3, 1, 2, 5) X(1, 3, 1, 10) X(3, 3, 1, 5)
#endif

/* The most input rows a row block reads (R + kh - 1), the size of narrow_conv's row arrays. */
#define BLOCK_ROWS_MAX 8

/* The block's rows and pixels for a kh x kw kernel (0: no row block). */
static int row_block(int kh, int kw, int *r, int *p) {
#define X(KH, KW, R, P)                                                                        \
    if (kh == KH && kw == KW && KH <= 3 && KW <= 3 && R <= 4 && P <= 12 &&                    \
        R + KH - 1 <= BLOCK_ROWS_MAX) { /* within block_rows' arrays */                     \
        *r = R;                                                                                \
        *p = P;                                                                                \
        return 1;                                                                              \
    }
    ROW_BLOCKS
#undef X
    return 0;
}

static void block_rows_any(const float *const *rows, long xs, long c, const float *w, long kp,
                           const float *bias, int relu, float *out, const float *res, long oy,
                           long os, long k, int kh, int kw) {
#define X(KH, KW, R, P)                                                                        \
    if (kh == KH && kw == KW) {                                                                \
        block_rows(rows, xs, c, w, kp, bias, relu, out, res, oy, os, k, KH, KW, R, P);         \
        return;                                                                                \
    }
    ROW_BLOCKS
#undef X
}

/* One convolution's geometry and weights (the arguments every row function takes). */
typedef struct {
    long sy, sx, c, h, wd;   /* input: row and pixel strides (floats), channels, height, width */
    const float *w;          /* packed [kh][kw][C][kp] */
    long kp, k;              /* padded and real output channels */
    const float *bias;       /* kp values or NULL */
    int relu, kh, kw, stride_y, stride_x, pad_y, pad_x, dil_y, dil_x;
    long wo, x_lo, x_hi;     /* output width; columns whose every tap lies inside the input */
    int rb, pb;              /* row block (0: none), its pixels */
} conv_t;

static conv_t conv_geometry(long sy, long sx, long c, long h, long wd, const float *w, long kp,
                            long k, const float *bias, int relu, long wo, int kh, int kw,
                            int stride_y, int stride_x, int pad_y, int pad_x, int dil_y,
                            int dil_x) {
    conv_t g = {sy, sx, c, h, wd, w, kp, k, bias, relu, kh, kw, stride_y, stride_x, pad_y,
                pad_x, dil_y, dil_x, wo, 0, 0, 0, 0};
    g.x_lo = min_l(wo, max_l(0, ceil_div(pad_x, stride_x)));
    g.x_hi = max_l(g.x_lo, min_l(wo, floor_div(wd - 1 + pad_x - (long)(kw - 1) * dil_x,
                                               stride_x) + 1));
    const int unit = stride_y == 1 && stride_x == 1 && dil_y == 1 && dil_x == 1;
    if (!unit || kp != VW || !row_block(kh, kw, &g.rb, &g.pb)) g.rb = g.pb = 0;
    return g;
}

/* Output rows [y0, y1) of one image: img its input, orow output row y0, rrow the residual's row
 * y0 (NULL: none), oy and ox the output's (and the residual's) row and pixel strides. Whole row
 * blocks where the geometry has them, else row by row. */
static void rows_out(const conv_t *g, const float *img, float *orow, const float *rrow, long oy,
                     long ox, long y0, long y1) {
    long y = y0;
    if (g->rb) {
        const long full = (g->x_hi - g->x_lo) / g->pb * g->pb; /* interior, whole blocks */
        for (; y + g->rb <= y1; y += g->rb) {
            const float *rows[BLOCK_ROWS_MAX], *at[BLOCK_ROWS_MAX];
            for (int t = 0; t < g->rb + g->kh - 1; t++) {
                const long iy = y - g->pad_y + t;
                rows[t] = (iy < 0 || iy >= g->h) ? NULL : img + iy * g->sy - g->pad_x * g->sx;
            }
            float *o = orow + (y - y0) * oy;
            const float *rr = rrow ? rrow + (y - y0) * oy : NULL;
            for (long x0 = g->x_lo; x0 < g->x_lo + full; x0 += g->pb) {
                for (int t = 0; t < g->rb + g->kh - 1; t++)
                    at[t] = rows[t] ? rows[t] + x0 * g->sx : NULL;
                block_rows_any(at, g->sx, g->c, g->w, g->kp, g->bias, g->relu, o + x0 * ox,
                               rr ? rr + x0 * ox : NULL, oy, ox, g->k, g->kh, g->kw);
            }
            for (long r = y; r < y + g->rb; r++) { /* edge pixels, the interior's remainder */
                float *o_r = orow + (r - y0) * oy;
                const float *r_r = rrow ? rrow + (r - y0) * oy : NULL;
                row_range(img, g->sy, g->sx, g->c, g->h, g->wd, g->w, g->kp, g->k, g->bias,
                          g->relu, o_r, r_r, ox, r, 0, g->x_lo, g->kh, g->kw, 1, 1, g->pad_y,
                          g->pad_x, 1, 1, g->x_lo, g->x_hi);
                row_range(img, g->sy, g->sx, g->c, g->h, g->wd, g->w, g->kp, g->k, g->bias,
                          g->relu, o_r, r_r, ox, r, g->x_lo + full, g->wo, g->kh, g->kw, 1, 1,
                          g->pad_y, g->pad_x, 1, 1, g->x_lo, g->x_hi);
            }
        }
    }
    for (; y < y1; y++) /* the general path, or the last rows, fewer than a block */
        row_range(img, g->sy, g->sx, g->c, g->h, g->wd, g->w, g->kp, g->k, g->bias, g->relu,
                  orow + (y - y0) * oy, rrow ? rrow + (y - y0) * oy : NULL, ox, y, 0, g->wo,
                  g->kh, g->kw, g->stride_y, g->stride_x, g->pad_y, g->pad_x, g->dil_y,
                  g->dil_x, g->x_lo, g->x_hi);
}

/* x (N, C, H, W) with any strides but s_c = 1, out (N, K, Ho, Wo) likewise, res (NULL: none)
 * with out's shape and strides. */
void narrow_conv(const float *x, long sn, long sy, long sx, long c, long h, long wd,
                 const float *w, long kp, long k, const float *bias, int relu, float *out,
                 const float *res, long on, long oy, long ox, long ho, long wo, long n, int kh,
                 int kw, int stride_y, int stride_x, int pad_y, int pad_x, int dil_y, int dil_x,
                 int threads) {
    const conv_t g = conv_geometry(sy, sx, c, h, wd, w, kp, k, bias, relu, wo, kh, kw, stride_y,
                                   stride_x, pad_y, pad_x, dil_y, dil_x);
    const long rows = g.rb ? g.rb : 1, groups = (ho + rows - 1) / rows;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long q = 0; q < n * groups; q++) {
        const long b = q / groups, y0 = q % groups * rows;
        const long o = b * on + y0 * oy;
        rows_out(&g, x + b * sn, out + o, res ? res + o : NULL, oy, ox, y0, min_l(y0 + rows, ho));
    }
}

/* The rows of output a thread makes at a time in narrow_chain (a multiple of 1, 2 and 3). */
#define CHAIN_ROWS 6

/* Two convolutions in one pass, the second 1 x kw (one kernel row, vertical stride 1, no
 * vertical padding): for each band of CHAIN_ROWS output rows the first convolution writes its
 * rows into a buffer of the thread's, which the second reads while they are in cache. The first
 * has K1 <= kp1 output channels, which the second takes as its input (w2 packed with C = k1);
 * res (NULL: none), with out's shape and strides, is added to the second's output.
 * Returns 1 when a thread could not allocate its buffer (nothing is then written). */
int narrow_chain(const float *x, long sn, long sy, long sx, long c, long h, long wd,
                 const float *w1, long kp1, long k1, const float *bias1, int relu1, long ho,
                 long wo1, int kh1, int kw1, int stride_y1, int stride_x1, int pad_y1,
                 int pad_x1, int dil_y1, int dil_x1, const float *w2, long kp2, long k2,
                 const float *bias2, int relu2, int kw2, int stride_x2, int pad_x2, int dil_x2,
                 float *out, const float *res, long on, long oy, long ox, long wo, long n,
                 int threads) {
    const conv_t g1 = conv_geometry(sy, sx, c, h, wd, w1, kp1, kp1, bias1, relu1, wo1, kh1, kw1,
                                    stride_y1, stride_x1, pad_y1, pad_x1, dil_y1, dil_x1);
    const long by = wo1 * kp1; /* the buffer's row stride */
    const conv_t g2 = conv_geometry(by, kp1, k1, CHAIN_ROWS, wo1, w2, kp2, k2, bias2, relu2, wo,
                                    1, kw2, 1, stride_x2, 0, pad_x2, 1, dil_x2);
    const long bands = (ho + CHAIN_ROWS - 1) / CHAIN_ROWS;
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        float *buf = malloc((size_t)(CHAIN_ROWS * by) * sizeof(float));
        if (!buf) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp barrier
        int bad;
#pragma omp atomic read
        bad = failed;
        if (!bad) {
#pragma omp for schedule(static)
            for (long q = 0; q < n * bands; q++) {
                const long b = q / bands, y0 = q % bands * CHAIN_ROWS;
                const long y1 = min_l(y0 + CHAIN_ROWS, ho);
                const long o = b * on + y0 * oy;
                rows_out(&g1, x + b * sn, buf, NULL, by, kp1, y0, y1);
                rows_out(&g2, buf, out + o, res ? res + o : NULL, oy, ox, 0, y1 - y0);
            }
        }
        free(buf);
    }
    return failed;
}
