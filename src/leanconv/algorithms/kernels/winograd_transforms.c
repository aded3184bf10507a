/* Fused Winograd tile transforms for float32 on the CPU (leanconv.algorithms.native).
 *
 * Input transform, tile p of the zero-padded input x (any strides, NCHW or NHWC):
 *     V[p][i][j][c] = sum_a sum_b BTh[i][a] * x[c][row0 + a][col0 + b] * BTw[j][b]
 * Output transform of the element-wise products M:
 *     Y[i][l][k] = sum_a sum_b ATh[i][a] * M[p][a][b][k] * ATw[l][b]
 * written to out[n][k][row0 + i][col0 + l] (any strides) where it falls inside the output, plus
 * bias[k] when a bias is given, plus res[n][k][row0 + i][col0 + l] when a residual is given (a
 * residual block's shortcut, with out's strides), then max(0, .) when relu is set (the epilogue of
 * the layer).
 *
 * The input transform returns 1 when a transformed value is NaN or infinite: a NaN or infinity in
 * the input reaches at least one of them (B^T is invertible, so every input value has a nonzero
 * coefficient), which replaces a separate pass that checks the input (v * 0 is NaN exactly for
 * such v). It also flags values so large that the transform overflows float32.
 *
 * Work is split into (image, tile row, block of CB = 64 channels) items shared among OpenMP threads.
 * An item first copies the band of input rows its tiles read into a small channels-innermost
 * buffer (padding and the NCHW -> channels-last transposition happen there, in cache), then
 * transforms every tile of the row with CB-wide vector operations; the output side mirrors it.
 * Each tensor is read and written once, instead of the four passes over memory the same
 * transforms cost as separate tensor operations. Zero entries of the matrices are skipped.
 */
#include <stdlib.h>

#define MAX_ALPHA 16
#ifndef CB
#define CB 64
#endif

static inline long min_l(long a, long b) { return a < b ? a : b; }

/* One work item: image img, tile row tr and the channels c0 .. c0 + cb (at most CB) of it. */
typedef struct {
    long img, tr, c0, cb;
} work_item;

static inline work_item split_item(long item, long rows, long blocks, long channels) {
    work_item w;
    w.img = item / (rows * blocks);
    w.tr = (item / blocks) % rows;
    w.c0 = (item % blocks) * CB;
    w.cb = min_l(CB, channels - w.c0);
    return w;
}

/* acc[0:CB] = sum_a coef[a * stride] * src[a * step + 0:CB], skipping zero coefficients. */
static inline void combine(float *restrict acc, const float *restrict coef, int stride, int count,
                           const float *restrict src, long step) {
    for (int c = 0; c < CB; c++) acc[c] = 0.0f;
    for (int a = 0; a < count; a++) {
        const float w = coef[a * stride];
        if (w == 0.0f) continue;
        const float *s = src + a * step;
#pragma omp simd
        for (int c = 0; c < CB; c++) acc[c] += w * s[c];
    }
}

int winograd_input(const float *restrict x, long s_n, long s_c, long s_h, long s_w,
                    long channels, long height, long width, long pad_top, long pad_left,
                    float *restrict v, long n0, long th0, long images, long rows, long nw,
                    int mh, int mw, int ah, int aw, const float *restrict bth,
                    const float *restrict btw, int threads) {
    const long blocks = (channels + CB - 1) / CB;
    const long items = images * rows * blocks;
    const long band_w = nw * mw + aw - mw;
    const long t_stride = channels;           /* between tile elements in V */
    const long p_stride = (long)ah * aw * channels;
    int bad = 0;
#pragma omp parallel num_threads(threads) reduction(| : bad)
    {
        float *band = malloc(sizeof(float) * ah * band_w * CB);
        float probe[CB];
        for (int c = 0; c < CB; c++) probe[c] = 0.0f;
        float tmp[MAX_ALPHA][MAX_ALPHA][CB];
#pragma omp for schedule(static)
        for (long item = 0; item < items; item++) {
            const work_item it = split_item(item, rows, blocks, channels);
            const long img = it.img, tr = it.tr, c0 = it.c0, cb = it.cb;
            const long row0 = (th0 + tr) * mh - pad_top;
            const float *xn = x + (n0 + img) * s_n;
            /* band[a][col][c] = padded x[c0 + c][row0 + a][col - pad_left] */
            for (int a = 0; a < ah; a++) {
                const long h = row0 + a;
                float *dst = band + (long)a * band_w * CB;
                for (long col = 0; col < band_w; col++) {
                    const long w = col - pad_left;
                    float *d = dst + col * CB;
                    if (h < 0 || h >= height || w < 0 || w >= width) {
                        for (int c = 0; c < CB; c++) d[c] = 0.0f;
                        continue;
                    }
                    const float *s = xn + h * s_h + w * s_w + c0 * s_c;
                    for (long c = 0; c < cb; c++) d[c] = s[c * s_c];
                    for (long c = cb; c < CB; c++) d[c] = 0.0f;
                }
            }
            float *vrow = v + ((img * rows + tr) * nw) * p_stride + c0;
            for (long tw = 0; tw < nw; tw++) {
                const float *patch = band + tw * mw * CB;
                for (int i = 0; i < ah; i++)
                    for (int b = 0; b < aw; b++)
                        combine(tmp[i][b], bth + i * ah, 1, ah, patch + b * CB, band_w * CB);
                float *dst = vrow + tw * p_stride;
                for (int i = 0; i < ah; i++)
                    for (int j = 0; j < aw; j++) {
                        float acc[CB];
                        combine(acc, btw + j * aw, 1, aw, tmp[i][0], CB);
                        float *o = dst + ((long)i * aw + j) * t_stride;
                        for (long c = 0; c < cb; c++) o[c] = acc[c];
#pragma omp simd
                        for (int c = 0; c < CB; c++) probe[c] += acc[c] * 0.0f;
                    }
            }
        }
        for (int c = 0; c < CB; c++) bad |= probe[c] != 0.0f; /* NaN != 0 too */
        free(band);
    }
    return bad;
}

/* o[e * o_step] = s[e * s_step] + b[e * b_step] (+ r[e * o_step]), then max(0, .) when relu is
 * set (NaN stays NaN), for e < count: one run of the output layer's epilogue. */
static inline __attribute__((always_inline)) void store_run(
    const float *restrict s, long s_step, const float *restrict b, long b_step,
    const float *restrict r, float *restrict o, long o_step, long count, int relu) {
    for (long e = 0; e < count; e++) {
        float y = s[e * s_step] + b[e * b_step];
        if (r) y += r[e * o_step];
        o[e * o_step] = relu && y < 0.0f ? 0.0f : y;
    }
}

static const float zeros[CB];

void winograd_output(const float *restrict m, long channels, float *restrict out,
                     const float *restrict res, long s_n, long s_k, long s_h, long s_w,
                     long height, long width, long n0, long th0,
                     long images, long rows, long nw, int mh, int mw, int ah, int aw,
                     const float *restrict ath, const float *restrict atw,
                     const float *restrict bias, int relu, int threads) {
    const long blocks = (channels + CB - 1) / CB;
    const long items = images * rows * blocks;
    const long band_w = nw * mw;
    const long p_stride = (long)ah * aw * channels;
#pragma omp parallel num_threads(threads)
    {
        float *band = malloc(sizeof(float) * mh * band_w * CB);
        float tmp[MAX_ALPHA][MAX_ALPHA][CB];
        float local[MAX_ALPHA * MAX_ALPHA][CB];
#pragma omp for schedule(static)
        for (long item = 0; item < items; item++) {
            const work_item it = split_item(item, rows, blocks, channels);
            const long img = it.img, tr = it.tr, k0 = it.c0, kb = it.cb;
            const long row0 = (th0 + tr) * mh;
            const int hi = (int)min_l(mh, height - row0);
            const float *mrow = m + ((img * rows + tr) * nw) * p_stride + k0;
            for (long tw = 0; tw < nw; tw++) {
                /* this tile's products for the block, channels innermost (zero beyond kb) */
                const float *tile = mrow + tw * p_stride;
                for (int t = 0; t < ah * aw; t++) {
                    for (long k = 0; k < kb; k++) local[t][k] = tile[t * channels + k];
                    for (long k = kb; k < CB; k++) local[t][k] = 0.0f;
                }
                for (int i = 0; i < hi; i++) {
                    for (int b = 0; b < aw; b++)
                        combine(tmp[i][b], ath + i * ah, 1, ah, local[b], (long)aw * CB);
                    for (int l = 0; l < mw; l++)
                        combine(band + ((long)i * band_w + tw * mw + l) * CB, atw + l * aw, 1,
                                aw, tmp[i][0], CB);
                }
            }
            /* out[n][k0 + k][row0 + i][col] = band[i][col][k], in the order of out's memory */
            const float *bk = bias ? bias + k0 : zeros;
            for (int i = 0; i < hi; i++) {
                const long at = (n0 + img) * s_n + (row0 + i) * s_h + k0 * s_k;
                const float *s = band + (long)i * band_w * CB;
                if (s_k == 1) /* channels innermost (channels-last) */
                    for (long col = 0; col < width; col++) {
                        const long o = at + col * s_w;
                        store_run(s + col * CB, 1, bk, 1, res ? res + o : NULL, out + o, 1, kb,
                                  relu);
                    }
                else
                    for (long k = 0; k < kb; k++) {
                        const long o = at + k * s_k;
                        store_run(s + k, CB, bk + k, 0, res ? res + o : NULL, out + o, s_w, width,
                                  relu);
                    }
            }
        }
        free(band);
    }
}
