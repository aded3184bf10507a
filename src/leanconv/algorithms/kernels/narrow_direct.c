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

/* One convolution's geometry and weights (the arguments every row function takes). */
typedef struct {
    long sy, sx, c, h, wd;   /* input: row and pixel strides (floats), channels, height, width */
    const float *w;          /* packed [kh][kw][C][kp] */
    long kp, k;              /* padded and real output channels */
    const float *bias;       /* kp values or NULL */
    int relu, kh, kw, stride_y, stride_x, pad_y, pad_x, dil_y, dil_x;
    long wo, x_lo, x_hi;     /* output width; columns whose every tap lies inside the input */
    int rb, pb;              /* row block (0: none), its pixels */
    long y_first;            /* the input row that img's first row holds (a band of rows) */
} conv_t;

/* The input row iy of g's convolution in img (NULL: outside the input). */
static inline const float *input_row(const conv_t *g, const float *img, long iy) {
    return (iy < 0 || iy >= g->h) ? NULL : img + (iy - g->y_first) * g->sy;
}

/* Output pixels [xa, xb) of output row y of one image (the general path): img holds the
 * image's input from row g->y_first, orow is the output row. */
static void row_range(const conv_t *g, const float *img, float *orow, const float *rrow,
                      long ox, long y, long xa, long xb) {
    const long xs = g->stride_x * g->sx, xd = (long)g->dil_x * g->sx;
    const int kh = g->kh, kw = g->kw;
    const float *rows[64]; /* input row of tap i at output column 0 (may point before it) */
    for (int i = 0; i < kh; i++) {
        const float *row = input_row(g, img, y * g->stride_y - g->pad_y + (long)i * g->dil_y);
        rows[i] = row ? row - g->pad_x * g->sx : NULL;
    }
    for (long k0 = 0; k0 < g->kp; k0 += NVMAX * VW) {
        const int nv = (int)min_l(NVMAX, (g->kp - k0) / VW);
        const int pb = pixels_for(nv);
        const float *at[64];
        for (long x0 = xa; x0 < xb;) {
            int j0 = 0, j1 = kw, p_count;
            if (x0 >= g->x_lo && x0 < g->x_hi) {
                p_count = (int)min_l(pb, min_l(g->x_hi, xb) - x0);
            } else { /* an edge pixel: only the taps inside the input */
                const long first = x0 * g->stride_x - g->pad_x;
                j0 = (int)min_l(kw, max_l(0, ceil_div(-first, g->dil_x)));
                j1 = (int)max_l(j0, min_l(kw, floor_div(g->wd - 1 - first, g->dil_x) + 1));
                p_count = 1;
            }
            for (int i = 0; i < kh; i++) at[i] = rows[i] ? rows[i] + x0 * xs : NULL;
            block_any(at, xs, xd, g->c, g->w, g->kp, k0, g->bias, g->relu, orow + x0 * ox,
                      rrow ? rrow + x0 * ox : NULL, ox, g->k, kh, kw, j0, j1, p_count, nv);
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

static conv_t conv_geometry(long sy, long sx, long c, long h, long wd, const float *w, long kp,
                            long k, const float *bias, int relu, long wo, int kh, int kw,
                            int stride_y, int stride_x, int pad_y, int pad_x, int dil_y,
                            int dil_x) {
    conv_t g = {sy, sx, c, h, wd, w, kp, k, bias, relu, kh, kw, stride_y, stride_x, pad_y,
                pad_x, dil_y, dil_x, wo, 0, 0, 0, 0, 0};
    g.x_lo = min_l(wo, max_l(0, ceil_div(pad_x, stride_x)));
    g.x_hi = max_l(g.x_lo, min_l(wo, floor_div(wd - 1 + pad_x - (long)(kw - 1) * dil_x,
                                               stride_x) + 1));
    const int unit = stride_y == 1 && stride_x == 1 && dil_y == 1 && dil_x == 1;
    if (!unit || kp != VW || !row_block(kh, kw, &g.rb, &g.pb)) g.rb = g.pb = 0;
    return g;
}

/* Output rows [y0, y1) of one image: img its input from row g->y_first, orow output row y0,
 * rrow the residual's row y0 (NULL: none), oy and ox the output's (and the residual's) row and
 * pixel strides. Whole row blocks where the geometry has them, else row by row. */
static void rows_out(const conv_t *g, const float *img, float *orow, const float *rrow, long oy,
                     long ox, long y0, long y1) {
    long y = y0;
    if (g->rb) {
        const long full = (g->x_hi - g->x_lo) / g->pb * g->pb; /* interior, whole blocks */
        for (; y + g->rb <= y1; y += g->rb) {
            const float *rows[BLOCK_ROWS_MAX], *at[BLOCK_ROWS_MAX];
            for (int t = 0; t < g->rb + g->kh - 1; t++) {
                const float *row = input_row(g, img, y - g->pad_y + t);
                rows[t] = row ? row - g->pad_x * g->sx : NULL;
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
                row_range(g, img, o_r, r_r, ox, r, 0, g->x_lo);
                row_range(g, img, o_r, r_r, ox, r, g->x_lo + full, g->wo);
            }
        }
    }
    for (; y < y1; y++) /* the general path, or the last rows, fewer than a block */
        row_range(g, img, orow + (y - y0) * oy, rrow ? rrow + (y - y0) * oy : NULL, ox, y, 0,
                  g->wo);
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

/* The most convolutions narrow_chain runs in one pass, and the numbers that describe each. */
#define CHAIN_MAX 4
#define CHAIN_SPEC 13
/* The bytes of the intermediate rows a thread keeps for one band (about half of a core's L2). */
#define CHAIN_BYTES (384 * 1024)

/* The rows [lo[i], hi[i]) of each convolution's output that output rows [y0, y1) of the last
 * one need: convolution i + 1 reads its input rows y s - p + t d, t < kh, clipped to the
 * input. */
static void band_rows(const conv_t *g, int n_convs, const long *ho, long y0, long y1, long *lo,
                      long *hi) {
    lo[n_convs - 1] = y0, hi[n_convs - 1] = y1;
    for (int i = n_convs - 1; i > 0; i--) {
        const conv_t *c = &g[i];
        lo[i - 1] = max_l(0, lo[i] * c->stride_y - c->pad_y);
        hi[i - 1] = min_l(ho[i - 1], (hi[i] - 1) * c->stride_y - c->pad_y +
                                         (long)(c->kh - 1) * c->dil_y + 1);
        if (hi[i - 1] < lo[i - 1]) hi[i - 1] = lo[i - 1];
    }
}

/* A chain of n_convs (2..CHAIN_MAX) convolutions in one pass: out = conv_n(...conv_1(x)). For
 * each band of output rows of the last convolution, each earlier one computes the rows of its
 * output that the band needs (band_rows; a few rows at the band's edges are computed by both
 * neighbouring bands) into a buffer of the thread's, which the next reads while they are in
 * cache: the thin intermediates never go to memory and one parallel loop replaces n. spec holds
 * CHAIN_SPEC numbers per convolution, in order: kp, k, relu, kh, kw, stride_y, stride_x, pad_y,
 * pad_x, dil_y, dil_x, output height, output width; w and bias its packed weight and its bias
 * (NULL: none). Convolution i + 1 reads convolution i's k channels; res (NULL: none), with out's
 * shape and strides, is added to the last one's output. Returns 1 when a thread could not
 * allocate its buffers (nothing is then written). */
int narrow_chain(const float *x, long sn, long sy, long sx, long c, long h, long wd,
                 int n_convs, const long *spec, const float *const *w,
                 const float *const *bias, float *out, const float *res, long on, long oy,
                 long ox, long n, int threads) {
    if (n_convs < 2 || n_convs > CHAIN_MAX) return 1;
    conv_t g[CHAIN_MAX];
    long ho[CHAIN_MAX], wo[CHAIN_MAX], rows_max[CHAIN_MAX], size[CHAIN_MAX];
    long in_c = c, in_h = h, in_w = wd, in_sy = sy, in_sx = sx;
    for (int i = 0; i < n_convs; i++) {
        const long *q = spec + i * CHAIN_SPEC;
        const int last = i == n_convs - 1;
        ho[i] = q[11], wo[i] = q[12];
        /* an intermediate output is written in whole vectors (its extra channels are zeros
         * and the next convolution reads only the k real ones) */
        g[i] = conv_geometry(in_sy, in_sx, in_c, in_h, in_w, w[i], q[0], last ? q[1] : q[0],
                             bias[i], (int)q[2], wo[i], (int)q[3], (int)q[4], (int)q[5],
                             (int)q[6], (int)q[7], (int)q[8], (int)q[9], (int)q[10]);
        in_c = q[1], in_h = ho[i], in_w = wo[i], in_sy = wo[i] * q[0], in_sx = q[0];
    }
    /* the band: as many output rows as keep the buffers within CHAIN_BYTES, a multiple of the
     * row blocks' 1, 2 and 3 rows where it can, and enough bands for every thread */
    long band = 48;
    for (;; band = band > 6 ? band / 2 / 6 * 6 : band - 1) {
        long lo[CHAIN_MAX], hi[CHAIN_MAX], bytes = 0;
        band_rows(g, n_convs, ho, 0, min_l(band, ho[n_convs - 1]), lo, hi);
        for (int i = 0; i + 1 < n_convs; i++) bytes += (hi[i] - lo[i]) * wo[i] * g[i].kp * 4;
        const long bands = (ho[n_convs - 1] + band - 1) / band;
        if (band == 1 || (bytes <= CHAIN_BYTES && n * bands >= 2L * threads)) break;
    }
    /* each buffer's rows: the most any band needs (the first band's, or an inner one's) */
    for (int i = 0; i + 1 < n_convs; i++) rows_max[i] = 0;
    for (long y0 = 0; y0 < ho[n_convs - 1]; y0 += band) {
        long lo[CHAIN_MAX], hi[CHAIN_MAX];
        band_rows(g, n_convs, ho, y0, min_l(y0 + band, ho[n_convs - 1]), lo, hi);
        for (int i = 0; i + 1 < n_convs; i++) rows_max[i] = max_l(rows_max[i], hi[i] - lo[i]);
    }
    long total = 0;
    for (int i = 0; i + 1 < n_convs; i++) size[i] = rows_max[i] * wo[i] * g[i].kp, total += size[i];
    const long bands = (ho[n_convs - 1] + band - 1) / band;
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        float *buf = malloc((size_t)max_l(total, 1) * sizeof(float));
        if (!buf) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp barrier
        int bad;
#pragma omp atomic read
        bad = failed;
        if (!bad) {
            conv_t mine[CHAIN_MAX];
            float *part[CHAIN_MAX];
            long off = 0;
            for (int i = 0; i < n_convs; i++) {
                mine[i] = g[i];
                if (i + 1 < n_convs) part[i] = buf + off, off += size[i];
            }
#pragma omp for schedule(static)
            for (long q = 0; q < n * bands; q++) {
                const long b = q / bands, y0 = q % bands * band;
                const long y1 = min_l(y0 + band, ho[n_convs - 1]);
                long lo[CHAIN_MAX], hi[CHAIN_MAX];
                band_rows(g, n_convs, ho, y0, y1, lo, hi);
                const float *in = x + b * sn;
                for (int i = 0; i < n_convs; i++) {
                    if (i > 0) in = part[i - 1], mine[i].y_first = lo[i - 1];
                    if (i + 1 < n_convs) {
                        rows_out(&mine[i], in, part[i], NULL, wo[i] * g[i].kp, g[i].kp, lo[i],
                                 hi[i]);
                    } else {
                        const long o = b * on + y0 * oy;
                        rows_out(&mine[i], in, out + o, res ? res + o : NULL, oy, ox, y0, y1);
                    }
                }
            }
        }
        free(buf);
    }
    return failed;
}
