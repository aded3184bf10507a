/* Direct convolution of channels-last float32 tensors for narrow layers
 * (leanconv.algorithms.narrow; the register-blocked direct convolution of Georganas et al. 2018,
 * "Anatomy of high-performance deep learning convolutions on SIMD architectures", section 3,
 * with the channel block fitted to the layer):
 *
 *     out[n, y, x, k] = act(bias[k] + res[n, y, x, k]
 *                           + sum_{i, j, c} in[n, y s_y - p_y + i d_y, x s_x - p_x + j d_x, c]
 *                                           w[i, j, c, k])
 *
 * Library kernels block output channels by the machine's widest vector (16 floats with
 * AVX-512), so a layer with 8 output channels, or 24, fills half of its last vector: the thin
 * factors of a decomposed layer (ranks 4-24) run there at a third to a half of a dense layer's
 * rate. Here (narrow_width.h) a vector holds VW channels, 8 for layers of at most 8 output
 * channels and 16 for wider ones where the machine has 16-float vectors (narrow_vector), and an
 * inner block keeps P output pixels x NV vectors of channels in registers:
 *
 *     for each tap (i, j) and input channel c:  b[v] = w[i, j, c, k0 + VW v : ...]
 *                                               acc[p][v] += in[pixel p, c] * b[v]
 *
 * one weight load per NV vectors of FMAs and one broadcast per NV FMAs. Layers of at most 4
 * output channels from many input channels vectorise over the input channels instead
 * (narrow_reduce.h). A thread takes output rows (n, y) and reads the input in place: taps above
 * and below the input are skipped for the row, and the pixels whose taps reach past the left or
 * right edge (at most a few per row) are computed one at a time with those taps skipped; zero
 * padding is never materialised.
 * w is packed [kh][kw][C][Kp] with Kp = K rounded up to narrow_vector(K) (zeros), bias Kp values
 * or NULL. res (a residual block's shortcut, NULL: none) has the output's shape and strides: it
 * is added as each output vector is written, before the activation, so that
 * relu(conv + b + shortcut) costs one read of the shortcut instead of two more passes over the
 * output.
 */
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__)
#define ACC 24 /* accumulators in registers: 32 vector registers */
#else
#define ACC 12 /* 16 vector registers */
#endif
#define NVMAX 4
#define PMAX 12

static inline long min_l(long a, long b) { return a < b ? a : b; }
static inline long max_l(long a, long b) { return a > b ? a : b; }
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
    int vw;                  /* vector width of the output-channel path (8 or 16) */
    int kr;                  /* sums of the reduce path (0: not taken) */
    const float *wt;         /* its weights, [kh][kw][kr][C] */
} conv_t;

/* The input row iy of g's convolution in img (NULL: outside the input). */
static inline const float *input_row(const conv_t *g, const float *img, long iy) {
    return (iy < 0 || iy >= g->h) ? NULL : img + (iy - g->y_first) * g->sy;
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

#include "narrow_reduce.h"

#define VW 8
#define W(name) name##_8
#include "narrow_width.h"
#undef VW
#undef W
#if defined(__AVX512F__)
#define VW 16
#define W(name) name##_16
#include "narrow_width.h"
#undef VW
#undef W
#define WIDE 16
#else
#define WIDE 8
#endif

/* The widest vectors the kernel uses (WIDE, or 8 after narrow_widest(8)). */
static int widest = WIDE;

/* The widest vectors from now on: 8, or WIDE (any other value); returns the previous width. For
 * tests and benchmarks that compare the widths. */
int narrow_widest(int width) {
    const int old = widest;
    widest = width == 8 ? 8 : WIDE;
    return old;
}

/* The vector width for a layer with k output channels: 16 floats where the machine has them and
 * k > 8, else 8 (its weights are packed to a multiple of it). */
int narrow_vector(long k) { return k > 8 ? widest : 8; }

/* The geometry of a convolution with k_real output channels, of which it writes k (the real
 * ones, or all kp of an intermediate). With the reduce path (kr > 0) the caller makes g.wt
 * (reduce_weights), or sets kr to 0 where it cannot. */
static conv_t conv_geometry(long sy, long sx, long c, long h, long wd, const float *w, long kp,
                            long k, long k_real, const float *bias, int relu, long wo, int kh,
                            int kw, int stride_y, int stride_x, int pad_y, int pad_x, int dil_y,
                            int dil_x) {
    conv_t g = {sy, sx, c, h, wd, w, kp, k, bias, relu, kh, kw, stride_y, stride_x, pad_y,
                pad_x, dil_y, dil_x, wo, 0, 0, 0, 0, 0, narrow_vector(k_real), 0, NULL};
    g.x_lo = min_l(wo, max_l(0, ceil_div(pad_x, stride_x)));
    g.x_hi = max_l(g.x_lo, min_l(wo, floor_div(wd - 1 + pad_x - (long)(kw - 1) * dil_x,
                                               stride_x) + 1));
    g.kr = reduce_sums(k_real, c);
    const int unit = stride_y == 1 && stride_x == 1 && dil_y == 1 && dil_x == 1;
    if (g.kr || !unit || kp != g.vw || !row_block(kh, kw, &g.rb, &g.pb)) g.rb = g.pb = 0;
    return g;
}

/* Makes g's reduce-path weights (g->wt, for the caller to free), or leaves the path when memory
 * is short. */
static void with_reduce_weights(conv_t *g, long k_real) {
    if (!g->kr) return;
    g->wt = reduce_weights(g->w, g->kh, g->kw, g->c, g->kp, k_real, g->kr);
    if (!g->wt) g->kr = 0;
}

/* Output rows [y0, y1) of one image: img its input from row g->y_first, orow output row y0,
 * rrow the residual's row y0 (NULL: none), oy and ox the output's (and the residual's) row and
 * pixel strides; by the reduce path, or the output-channel path of g's vector width. */
static void rows_out(const conv_t *g, const float *img, float *orow, const float *rrow, long oy,
                     long ox, long y0, long y1) {
    if (g->kr) {
        for (long y = y0; y < y1; y++)
            reduce_row(g, img, orow + (y - y0) * oy, rrow ? rrow + (y - y0) * oy : NULL, ox, y,
                       0, g->wo);
#if WIDE == 16
    } else if (g->vw == 16) {
        rows_out_16(g, img, orow, rrow, oy, ox, y0, y1);
#endif
    } else {
        rows_out_8(g, img, orow, rrow, oy, ox, y0, y1);
    }
}

/* x (N, C, H, W) with any strides but s_c = 1, out (N, K, Ho, Wo) likewise, res (NULL: none)
 * with out's shape and strides. */
void narrow_conv(const float *x, long sn, long sy, long sx, long c, long h, long wd,
                 const float *w, long kp, long k, const float *bias, int relu, float *out,
                 const float *res, long on, long oy, long ox, long ho, long wo, long n, int kh,
                 int kw, int stride_y, int stride_x, int pad_y, int pad_x, int dil_y, int dil_x,
                 int threads) {
    conv_t g = conv_geometry(sy, sx, c, h, wd, w, kp, k, k, bias, relu, wo, kh, kw, stride_y,
                             stride_x, pad_y, pad_x, dil_y, dil_x);
    with_reduce_weights(&g, k);
    const long rows = g.rb ? g.rb : 1, groups = (ho + rows - 1) / rows;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long q = 0; q < n * groups; q++) {
        const long b = q / groups, y0 = q % groups * rows;
        const long o = b * on + y0 * oy;
        rows_out(&g, x + b * sn, out + o, res ? res + o : NULL, oy, ox, y0, min_l(y0 + rows, ho));
    }
    free((void *)g.wt);
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
                             q[1], bias[i], (int)q[2], wo[i], (int)q[3], (int)q[4], (int)q[5],
                             (int)q[6], (int)q[7], (int)q[8], (int)q[9], (int)q[10]);
        with_reduce_weights(&g[i], q[1]);
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
    for (int i = 0; i < n_convs; i++) free((void *)g[i].wt);
    return failed;
}
