/* A fully connected layer at a small batch: y = x W^T + b for a few rows of x
 * (leanconv.algorithms.gemv):
 *
 *     y[n, o] = b[o] + sum_k W[o, k] x[n, k],      n < N (a few), W (O, K) row-major
 *
 * At batch 1 to 8 such a layer reads its whole weight once per call and does N multiply-adds
 * per weight read: it is bound by memory bandwidth, not arithmetic (VGG-16's first classifier
 * layer reads 411 MB per image). The library's matrix-vector product streams it with one core;
 * here every thread streams its own block of output rows, so the read runs at the bandwidth
 * of all the cores together. Each step takes R = 4 rows of W and all N rows of x (N <= 4 per
 * pass; x, a few hundred KB, stays in cache) and keeps R x N vector accumulators:
 *
 *     for k in steps of one vector:  w_r = W[o + r, k : k + V]       (R loads from memory)
 *                                    acc[r][n] += w_r * x[n, k : k + V]
 *
 * then sums each accumulator's lanes. Rows of K not a multiple of the vector width end in a
 * scalar loop; O not a multiple of R ends in single rows. The sums run in another order than
 * the library's, so results differ from it by float32 rounding only.
 */

#if defined(__AVX512F__)
#define VW 16
#else
#define VW 8
#endif
#define R 4
#define NMAX 4

typedef float vf __attribute__((vector_size(VW * 4)));
typedef float vfu __attribute__((vector_size(VW * 4), aligned(4)));

static inline vf vload(const float *p) { return *(const vfu *)p; }

static inline float hsum(vf v) {
    float s = 0.0f;
    for (int i = 0; i < VW; i++) s += v[i];
    return s;
}

/* rows [o0, o0 + rows) of W against the nb rows of x from x0; y rows from y0 */
static inline __attribute__((always_inline)) void block(
    const float *restrict w, long k_count, const float *restrict x, long xs, int nb,
    const float *restrict bias, float *restrict y, long ys, long o0, const int rows) {
    vf acc[R][NMAX];
    for (int r = 0; r < rows; r++)
        for (int n = 0; n < nb; n++) acc[r][n] = (vf){0};
    const long kv = k_count - k_count % VW;
    const float *wr[R];
    for (int r = 0; r < rows; r++) wr[r] = w + (o0 + r) * k_count;
    for (long k = 0; k < kv; k += VW) {
        for (int r = 0; r < rows; r++) {
            const vf a = vload(wr[r] + k);
            for (int n = 0; n < nb; n++) acc[r][n] += a * vload(x + n * xs + k);
        }
    }
    for (int r = 0; r < rows; r++) {
        for (int n = 0; n < nb; n++) {
            float s = hsum(acc[r][n]);
            for (long k = kv; k < k_count; k++) s += wr[r][k] * x[n * xs + k];
            y[n * ys + o0 + r] = (bias ? bias[o0 + r] : 0.0f) + s;
        }
    }
}

static void block_any(const float *w, long k_count, const float *x, long xs, int nb,
                      const float *bias, float *y, long ys, long o0, int rows) {
    switch (nb) { /* constant trip counts: the accumulators stay in registers */
    case 1: rows == R ? block(w, k_count, x, xs, 1, bias, y, ys, o0, R)
                      : block(w, k_count, x, xs, 1, bias, y, ys, o0, 1); break;
    case 2: rows == R ? block(w, k_count, x, xs, 2, bias, y, ys, o0, R)
                      : block(w, k_count, x, xs, 2, bias, y, ys, o0, 1); break;
    case 3: rows == R ? block(w, k_count, x, xs, 3, bias, y, ys, o0, R)
                      : block(w, k_count, x, xs, 3, bias, y, ys, o0, 1); break;
    default: rows == R ? block(w, k_count, x, xs, NMAX, bias, y, ys, o0, R)
                       : block(w, k_count, x, xs, NMAX, bias, y, ys, o0, 1); break;
    }
}

/* x (N, K) with row stride xs, w (O, K) contiguous, bias O values or NULL, y (N, O) with row
 * stride ys. Rows of x are taken NMAX at a time (W is read once per group). */
void gemv_linear(const float *x, long xs, long n_rows, const float *w, long k_count, long o_count,
                 const float *bias, float *y, long ys, int threads) {
    const long blocks = (o_count + R - 1) / R;
    for (long n0 = 0; n0 < n_rows; n0 += NMAX) {
        const int nb = (int)(n_rows - n0 < NMAX ? n_rows - n0 : NMAX);
#pragma omp parallel for num_threads(threads) schedule(static)
        for (long b = 0; b < blocks; b++) {
            const long o0 = b * R;
            if (o0 + R <= o_count) {
                block_any(w, k_count, x + n0 * xs, xs, nb, bias, y + n0 * ys, ys, o0, R);
            } else {
                for (long o = o0; o < o_count; o++)
                    block_any(w, k_count, x + n0 * xs, xs, nb, bias, y + n0 * ys, ys, o, 1);
            }
        }
    }
}
