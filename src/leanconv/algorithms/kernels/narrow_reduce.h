/* The channel-reducing path of the narrow direct convolution (included once by narrow_direct.c,
 * after conv_t and the helpers it uses).
 *
 * Channel-reducing layers: at most 4 output channels from C input channels, C a whole number of
 * RW-float vectors and at least reduce_from (the first factor of a low-rank spatial SVD or
 * Tucker-2 chain: 32 -> 4 3x1). Vectorised over output channels, each FMA of such a layer fills
 * K of its 8 lanes and needs one broadcast input value: 4 of 16 lanes used on a 16-float
 * machine. Here the vectors run over the input channels instead, KR accumulators per pixel
 * (KR: K rounded up to 1, 2 or 4):
 *
 *     for each tap (i, j) and vector of channels c:  acc[p][r] += in[pixel p, c : c + RW]
 *                                                               * wt[i, j, r, c : c + RW]
 *
 * every lane useful and one input load per KR FMAs, then each pixel's KR vectors are summed
 * across their lanes by a tree of lane shuffles (fold), log2(RW) steps for all KR sums together.
 * wt is w transposed to [kh][kw][KR][C] (zeros past K), made once per call. */
#if defined(__AVX512F__)
#define RW 16
#define REGS 32
#else
#define RW 8
#define REGS 16
#endif

typedef float vr __attribute__((vector_size(RW * 4)));
typedef float vru __attribute__((vector_size(RW * 4), aligned(4)));
typedef int vri __attribute__((vector_size(RW * 4)));

static inline vr rload(const float *p) { return *(const vru *)p; }

/* The smallest C the reduce path takes (set by narrow_reduce_from; 0: never). */
static long reduce_from = RW;

/* The reduce path from c input channels on (0: never), for tests and benchmarks that compare
 * the two paths; returns the previous value. */
long narrow_reduce_from(long c) {
    const long old = reduce_from;
    reduce_from = c;
    return old;
}

/* Two vectors whose segments of s lanes each hold one sum -> one vector whose segments of s / 2
 * lanes hold them, a's then b's (each segment's two halves added). */
static inline vr fold(vr a, vr b, const int s) {
#if RW == 16
    switch (s) {
    case 16:
        return __builtin_shuffle(a, b,
                                 (vri){0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}) +
               __builtin_shuffle(a, b,
                                 (vri){8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31});
    case 8:
        return __builtin_shuffle(a, b,
                                 (vri){0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27}) +
               __builtin_shuffle(a, b,
                                 (vri){4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31});
    case 4:
        return __builtin_shuffle(a, b,
                                 (vri){0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29}) +
               __builtin_shuffle(a, b,
                                 (vri){2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31});
    default:
        return __builtin_shuffle(a, b,
                                 (vri){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}) +
               __builtin_shuffle(a, b,
                                 (vri){1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31});
    }
#else
    switch (s) {
    case 8:
        return __builtin_shuffle(a, b,
                                 (vri){0, 1, 2, 3, 8, 9, 10, 11}) +
               __builtin_shuffle(a, b,
                                 (vri){4, 5, 6, 7, 12, 13, 14, 15});
    case 4:
        return __builtin_shuffle(a, b,
                                 (vri){0, 1, 4, 5, 8, 9, 12, 13}) +
               __builtin_shuffle(a, b,
                                 (vri){2, 3, 6, 7, 10, 11, 14, 15});
    default:
        return __builtin_shuffle(a, b,
                                 (vri){0, 2, 4, 6, 8, 10, 12, 14}) +
               __builtin_shuffle(a, b,
                                 (vri){1, 3, 5, 7, 9, 11, 13, 15});
    }
#endif
}

/* P output pixels of a channel-reducing layer, taps j in [j0, j1) of each row rows[i] (NULL:
 * outside the input; pixel p, tap j reads rows[i] + p xs + j xd), the first k channels written
 * (bias, residual and ReLU as block does; channels past KR are zero). */
static inline __attribute__((always_inline)) void block_reduce(
    const float *const *rows, long xs, long xd, long c_count, const float *restrict wt, int kh,
    int kw, int j0, int j1, const float *restrict bias, int relu, float *restrict out,
    const float *restrict res, long os, long k, const int P, const int KR) {
    vr acc[PMAX][4];
#pragma GCC unroll 16
    for (int p = 0; p < P; p++)
#pragma GCC unroll 16
        for (int r = 0; r < KR; r++) acc[p][r] = (vr){0};
    for (int i = 0; i < kh; i++) {
        const float *row = rows[i];
        if (!row) continue;
        for (int j = j0; j < j1; j++) {
            const float *in = row + j * xd;
            const float *wr = wt + (long)(i * kw + j) * KR * c_count;
            for (long c = 0; c < c_count; c += RW) {
                vr b[4];
#pragma GCC unroll 16
                for (int r = 0; r < KR; r++) b[r] = rload(wr + r * c_count + c);
#pragma GCC unroll 16
                for (int p = 0; p < P; p++) {
                    const vr a = rload(in + p * xs + c);
#pragma GCC unroll 16
                    for (int r = 0; r < KR; r++) acc[p][r] += a * b[r];
                }
            }
        }
    }
#pragma GCC unroll 16
    for (int p = 0; p < P; p++) {
        vr v[4];
#pragma GCC unroll 16
        for (int r = 0; r < KR; r++) v[r] = acc[p][r];
        /* pairs of vectors, then the last vector with itself: lanes [0, KR) hold the sums */
#pragma GCC unroll 16
        for (int q = 0; q < KR / 2; q++) v[q] = fold(v[2 * q], v[2 * q + 1], RW);
#pragma GCC unroll 16
        for (int q = 0; q < KR / 4; q++) v[q] = fold(v[2 * q], v[2 * q + 1], RW / 2);
#pragma GCC unroll 16
        for (int s = RW / KR; s > 1; s /= 2) v[0] = fold(v[0], v[0], s);
        float sum[RW];
        *(vru *)sum = v[0];
        float *o = out + p * os;
        const float *rr = res ? res + p * os : NULL;
        for (long q = 0; q < k; q++) {
            float t = q < KR ? sum[q] : 0.0f;
            if (bias) t += bias[q];
            if (rr) t += rr[q];
            o[q] = relu && !(t > 0) ? 0.0f : t; /* max(0, t), as block's mask */
        }
    }
}

/* The pixel block of the reduce path for KR sums: as many as the registers hold (P KR
 * accumulators, KR weights and an input vector), at most PMAX. */
#define REDUCE_P(KR) ((REGS - 1 - (KR)) / (KR) > PMAX ? PMAX : (REGS - 1 - (KR)) / (KR))

/* p_count pixels: whole blocks of REDUCE_P(kr), the rest one at a time. */
static void block_reduce_any(const float *const *rows, long xs, long xd, long c, const float *wt,
                             int kh, int kw, int j0, int j1, const float *bias, int relu,
                             float *out, const float *res, long os, long k, long p_count, int kr) {
    const float *at[64];
#define REDUCE_CASE(KR)                                                                        \
    case KR: {                                                                                 \
        long p = 0;                                                                            \
        for (; p + REDUCE_P(KR) <= p_count; p += REDUCE_P(KR)) {                               \
            for (int i = 0; i < kh; i++) at[i] = rows[i] ? rows[i] + p * xs : NULL;            \
            block_reduce(at, xs, xd, c, wt, kh, kw, j0, j1, bias, relu, out + p * os,          \
                         res ? res + p * os : NULL, os, k, REDUCE_P(KR), KR);                  \
        }                                                                                      \
        for (; p < p_count; p++) {                                                             \
            for (int i = 0; i < kh; i++) at[i] = rows[i] ? rows[i] + p * xs : NULL;            \
            block_reduce(at, xs, xd, c, wt, kh, kw, j0, j1, bias, relu, out + p * os,          \
                         res ? res + p * os : NULL, os, k, 1, KR);                             \
        }                                                                                      \
        break;                                                                                 \
    }
    switch (kr) {
        REDUCE_CASE(1)
        REDUCE_CASE(2)
        REDUCE_CASE(4)
    }
#undef REDUCE_CASE
}

/* KR for k real output channels from c input channels (0: the layer does not take the reduce
 * path). */
static int reduce_sums(long k, long c) {
    if (reduce_from <= 0 || k > 4 || c % RW || c < reduce_from) return 0;
    return k <= 1 ? 1 : k <= 2 ? 2 : 4;
}

/* wt for the reduce path: w ([kh][kw][C][kp]) as [kh][kw][kr][C], zeros past k (malloc'ed;
 * NULL when out of memory). */
static float *reduce_weights(const float *w, int kh, int kw, long c, long kp, long k, int kr) {
    float *wt = malloc((size_t)kh * kw * kr * c * sizeof(float));
    if (!wt) return NULL;
    for (long t = 0; t < (long)kh * kw; t++)
        for (long r = 0; r < kr; r++)
            for (long cc = 0; cc < c; cc++)
                wt[(t * kr + r) * c + cc] = r < k ? w[(t * c + cc) * kp + r] : 0.0f;
    return wt;
}

/* Output pixels [xa, xb) of output row y of one image by the reduce path (row_range's
 * arguments): the interior in blocks, the edge pixels one at a time with their taps clipped. */
static void reduce_row(const conv_t *g, const float *img, float *orow, const float *rrow,
                       long ox, long y, long xa, long xb) {
    const long xs = g->stride_x * g->sx, xd = (long)g->dil_x * g->sx;
    const int kh = g->kh, kw = g->kw;
    const float *rows[64], *at[64];
    for (int i = 0; i < kh; i++) {
        const float *row = input_row(g, img, y * g->stride_y - g->pad_y + (long)i * g->dil_y);
        rows[i] = row ? row - g->pad_x * g->sx : NULL;
    }
    for (long x0 = xa; x0 < xb;) {
        int j0 = 0, j1 = kw;
        long p_count = 1;
        if (x0 >= g->x_lo && x0 < g->x_hi) {
            p_count = min_l(g->x_hi, xb) - x0;
        } else {
            const long first = x0 * g->stride_x - g->pad_x;
            j0 = (int)min_l(kw, max_l(0, ceil_div(-first, g->dil_x)));
            j1 = (int)max_l(j0, min_l(kw, floor_div(g->wd - 1 - first, g->dil_x) + 1));
        }
        for (int i = 0; i < kh; i++) at[i] = rows[i] ? rows[i] + x0 * xs : NULL;
        block_reduce_any(at, xs, xd, g->c, g->wt, kh, kw, j0, j1, g->bias, g->relu,
                         orow + x0 * ox, rrow ? rrow + x0 * ox : NULL, ox, g->k, p_count, g->kr);
        x0 += p_count;
    }
}
