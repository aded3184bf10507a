/* Winograd F(m x m, r x s) in one pass over channels-last float32 tensors
 * (leanconv.algorithms.native.fused; Lavin & Gray 2016, the blocked form of their Algorithm 1).
 *
 * The tiles of the output are cut into blocks of TB tiles. A thread takes a block and, with the
 * block's data staying in its own cache:
 *   1. V[t][p][c] = (B_h^T d_p B_w)[t] for the TB input tiles d_p (zero outside the input),
 *   2. M[t][p][k] = sum_c V[t][p][c] U[t][c][k] for every tile element t (T = a_h a_w small
 *      GEMMs, register-blocked: RB tiles x NV vectors of output channels per inner loop),
 *   3. out[tile p] = A_h^T M[., p, .] A_w + bias (+ res[tile p], a residual block's shortcut with
 *      out's strides, when given), then max(0, .) when relu is set.
 * With few tiles (batch 1 on small maps) a unit of work is a block and one of `slices` ranges of
 * the output channels: steps 2 and 3 for those channels only (a thread whose units share a
 * block transforms its input once), so the threads share U instead of each reading all of it.
 * Each input value is read once and each output value written once; the three-stage path of
 * winograd_transforms.c instead writes V and M to memory between stages. U (T x Cp x Kp, zero
 * padded to whole vectors) is shared by every block, so this pays where U fits in cache (few
 * channels); the caller decides. F(2, 3), F(4, 3) and F(6, 3) with the default points run
 * steps 1 and 3 written out (constant coefficients, common subexpressions, values in registers;
 * below the general path): 1.03-1.65x faster than the general path on 16-256 channels
 * (benchmarks/bench_written_out.py).
 *
 * Vectors are GCC vector extensions: 16 floats where the compiler targets AVX-512, 8 with AVX,
 * else 4; the same source compiles everywhere. Channels are contiguous in x (s_c = 1) and in out.
 * Returns 1 when a transformed input value is NaN or infinite (see winograd_transforms.c), 2 when
 * a thread could not allocate its buffers.
 */
#include <stdlib.h>
#include <string.h>

#define MAXA 16
#if defined(__AVX512F__)
#define VW 16
#define NV 4
#elif defined(__AVX__)
#define VW 8
#define NV 2
#else
#define VW 4
#define NV 2
#endif
#define RB 6
/* Floats added to the distance between V[t] and V[t + 1] (M too): a tile reads its T values from
 * T rows of the block, and rows a multiple of 2 kB apart would all fall in two cache sets. */
#define ROW_PAD 16

typedef float vf __attribute__((vector_size(VW * 4)));
typedef float vfu __attribute__((vector_size(VW * 4), aligned(4)));
typedef int vi __attribute__((vector_size(VW * 4)));

static inline vf vload(const float *p) { return *(const vfu *)p; }
static inline void vstore(float *p, vf v) { *(vfu *)p = v; }
/* all lanes s, written out: (vf){0} + s costs an addition per use (-0 + 0 is not -0), where
 * this compiles to a broadcast load folded into the FMA */
#if VW == 16
#define SPLAT(s) {s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s}
#elif VW == 8
#define SPLAT(s) {s, s, s, s, s, s, s, s}
#else
#define SPLAT(s) {s, s, s, s}
#endif
static inline vf vsplat(float s) { return (vf)SPLAT(s); }
static inline long min_l(long a, long b) { return a < b ? a : b; }

/* m[r][0 : nv VW] = sum_c v[r][c] u[c][0 : nv VW] for RB rows (row strides cp, kp, kp). */
static inline __attribute__((always_inline)) void gemm_rows(const float *restrict v, long cp,
                                                            const float *restrict u, long kp,
                                                            float *restrict m, const int nv) {
    vf acc[RB][NV];
    for (int r = 0; r < RB; r++)
        for (int j = 0; j < NV; j++) acc[r][j] = (vf){0};
    for (long c = 0; c < cp; c++) {
        vf b[NV];
        for (int j = 0; j < nv; j++) b[j] = vload(u + c * kp + j * VW);
        for (int r = 0; r < RB; r++) {
            const vf a = vsplat(v[r * cp + c]);
            for (int j = 0; j < nv; j++) acc[r][j] += a * b[j];
        }
    }
    for (int r = 0; r < RB; r++)
        for (int j = 0; j < nv; j++) vstore(m + r * kp + j * VW, acc[r][j]);
}

/* The block's GEMMs for output channels k_lo .. k_hi (multiples of VW): M[t] (tb x kp) =
 * V[t] (tb x cp) U[t] (cp x kp) in those columns, tb a multiple of RB, V[t] and M[t] vs and ms
 * floats apart. */
static void block_gemm(const float *restrict v, const float *restrict u, float *restrict m,
                       long tb, long cp, long kp, long k_lo, long k_hi, long vs, long ms,
                       int t_count) {
    for (int t = 0; t < t_count; t++) {
        const float *vt = v + t * vs, *ut = u + t * cp * kp;
        float *mt = m + t * ms;
        for (long k0 = k_lo; k0 < k_hi; k0 += NV * VW) {
            const int nv = (int)min_l(NV, (k_hi - k0) / VW);
            for (long p0 = 0; p0 < tb; p0 += RB) {
                const float *vr = vt + p0 * cp;
                float *mr = mt + p0 * kp + k0;
                switch (nv) { /* constant nv: the accumulators stay in registers */
                case NV: gemm_rows(vr, cp, ut + k0, kp, mr, NV); break;
#if NV > 3
                case 3: gemm_rows(vr, cp, ut + k0, kp, mr, 3); break;
#endif
#if NV > 2
                case 2: gemm_rows(vr, cp, ut + k0, kp, mr, 2); break;
#endif
                default: gemm_rows(vr, cp, ut + k0, kp, mr, 1); break;
                }
            }
        }
    }
}

/* One row of a transform matrix as its nonzero entries: the transforms skip the zeros
 * without a branch per coefficient. */
typedef struct {
    int n;
    int idx[MAXA];
    float w[MAXA];
} sparse_row;

static void sparse_rows(const float *mat, int rows, int cols, sparse_row *out) {
    for (int i = 0; i < rows; i++) {
        out[i].n = 0;
        for (int j = 0; j < cols; j++)
            if (mat[i * cols + j] != 0.0f) {
                out[i].idx[out[i].n] = j;
                out[i].w[out[i].n++] = mat[i * cols + j];
            }
    }
}

/* sum_q row.w[q] src[row.idx[q] * step] */
static inline vf combine(const sparse_row *row, const vf *src, int step) {
    vf acc = {0};
    for (int q = 0; q < row->n; q++) acc += row->w[q] * src[row->idx[q] * step];
    return acc;
}

/* src[k0 : k0 + kb] as a vector (zero beyond kb, or where src is NULL: no bias) */
static inline vf load_channels(const float *restrict src, long k0, long kb) {
    vf v = {0};
    if (src) {
        if (kb == VW)
            v = vload(src + k0);
        else
            for (long k = 0; k < kb; k++) v[k] = src[k0 + k];
    }
    return v;
}

/* the channels c0 .. c0 + cb of input pixel (h, w), zero in the padding */
static inline vf load_pixel(const float *restrict xn, long s_h, long s_w, long height, long width,
                            long h, long w, long c0, long cb) {
    const int inside = h >= 0 && h < height && w >= 0 && w < width;
    return load_channels(inside ? xn + h * s_h + w * s_w : NULL, c0, cb);
}

/* V[t][p][0:cp] for one tile whose top-left input value is x[row0][col0] (may lie in padding);
 * probe[j] += V * 0 (NaN where V is not finite), aw independent chains. */
static void input_tile(const float *restrict xn, long s_h, long s_w, long channels, long height,
                       long width, long row0, long col0, long cp, int ah, int aw,
                       const sparse_row *bth, const sparse_row *btw, float *restrict v,
                       long t_stride, vf *restrict probe) {
    vf d[MAXA * MAXA], tmp[MAXA * MAXA];
    for (long c0 = 0; c0 < cp; c0 += VW) {
        const long cb = min_l(VW, channels - c0);
        for (int a = 0; a < ah; a++)
            for (int b = 0; b < aw; b++)
                d[a * MAXA + b] = load_pixel(xn, s_h, s_w, height, width, row0 + a, col0 + b, c0,
                                             cb);
        for (int i = 0; i < ah; i++)
            for (int b = 0; b < aw; b++) tmp[i * MAXA + b] = combine(&bth[i], d + b, MAXA);
        for (int i = 0; i < ah; i++)
            for (int j = 0; j < aw; j++) {
                const vf acc = combine(&btw[j], tmp + i * MAXA, 1);
                vstore(v + (i * aw + j) * t_stride + c0, acc);
                probe[j] += acc * 0.0f;
            }
    }
}

/* on[at : at + kb] = act(y + rn[at : at + kb]) (the residual when rn is given; ReLU when relu:
 * zero where y < 0, NaN stays NaN): the epilogue of an output vector */
static inline void store_output(vf y, float *restrict on, const float *restrict rn, long at,
                                long kb, int relu) {
    if (rn) {
        if (kb == VW)
            y += vload(rn + at);
        else
            for (long k = 0; k < kb; k++) y[k] += rn[at + k];
    }
    if (relu) y = (vf)((vi)y & ~(vi)(y < 0.0f));
    float *o = on + at;
    if (kb == VW)
        vstore(o, y);
    else
        for (long k = 0; k < kb; k++) o[k] = y[k];
}

/* out[row0 + i][col0 + l][k] for one tile from M[t][p][k] (rows t_stride apart), + bias,
 * + the residual rn (same offsets as on; NULL: none), ReLU. */
static void output_tile(const float *restrict m, long t_stride, long out_channels, long kp,
                        float *restrict on, const float *restrict rn, long o_h, long o_w,
                        long out_h, long out_w,
                        long row0, long col0, int mw, int ah, int aw, int hi,
                        const sparse_row *ath, const sparse_row *atw,
                        const float *restrict bias, int relu) {
    vf mm[MAXA * MAXA], tmp[MAXA * MAXA];
    const int wi = (int)min_l(mw, out_w - col0);
    (void)out_h;
    for (long k0 = 0; k0 < kp && k0 < out_channels; k0 += VW) {
        const long kb = min_l(VW, out_channels - k0);
        const vf bv = load_channels(bias, k0, kb);
        for (int a = 0; a < ah; a++)
            for (int b = 0; b < aw; b++) mm[a * MAXA + b] = vload(m + (a * aw + b) * t_stride + k0);
        for (int i = 0; i < hi; i++)
            for (int b = 0; b < aw; b++) tmp[i * MAXA + b] = combine(&ath[i], mm + b, MAXA);
        for (int i = 0; i < hi; i++)
            for (int l = 0; l < wi; l++)
                store_output(bv + combine(&atw[l], tmp + i * MAXA, 1), on, rn,
                             (row0 + i) * o_h + (col0 + l) * o_w + k0, kb, relu);
    }
}

/* ---- F(2, 3), F(4, 3) and F(6, 3) written out.
 * With the points of leanconv.algorithms.toomcook.default_points (0, -1, 1, 1/2, -2, -1/2, 2
 * and infinity), the 1-D transforms below are B^T and A^T of those rules with their common
 * subexpressions taken out (even and odd parts of symmetric point pairs, as in Lavin & Gray
 * 2016), the tile's values in registers and the coefficients constants. The general path above
 * reads each coefficient and each value from memory through a sparse row, about four
 * instructions a term where these cost one: at 16-64 channels the transforms cost as much as
 * the products. The kernel takes a written-out rule only where the matrices it is given equal
 * the rule's (written_out), so any other points run the general path, exactly as before. The
 * coefficients are small integers: only the order of the sums differs from the general path. */

/* o[i os] = (B^T d)[i] for d[j ds], i, j < 4 */
static inline __attribute__((always_inline)) void bt23(const vf *d, int ds, vf *o, int os) {
    const vf d0 = d[0], d1 = d[ds], d2 = d[2 * ds], d3 = d[3 * ds];
    o[0] = d0 - d2;
    o[os] = d2 - d1;
    o[2 * os] = d1 + d2;
    o[3 * os] = d3 - d1;
}

/* o[i os] = (A^T m)[i] for m[j ms], i < 2, j < 4 */
static inline __attribute__((always_inline)) void at23(const vf *m, int ms, vf *o, int os) {
    const vf m0 = m[0], m1 = m[ms], m2 = m[2 * ms], m3 = m[3 * ms];
    o[0] = m0 + m1 + m2;
    o[os] = m2 - m1 + m3;
}

/* B^T of F(4, 3): 18 operations where its rows hold 26 terms */
static inline __attribute__((always_inline)) void bt43(const vf *d, int ds, vf *o, int os) {
    const vf d0 = d[0], d1 = d[ds], d2 = d[2 * ds], d3 = d[3 * ds], d4 = d[4 * ds], d5 = d[5 * ds];
    const vf e = d1 - d3, f = d2 - d4, g = d1 + d4, h = d1 - d4;
    o[0] = 2.0f * (d0 + d4) - 3.0f * e - 4.0f * d2;
    o[os] = 5.0f * d2 - d3 - 2.0f * g;
    o[2 * os] = 5.0f * d3 + d2 - 2.0f * h;
    o[3 * os] = 2.0f * e + f;
    o[4 * os] = e - 2.0f * f;
    o[5 * os] = 2.0f * (d1 + d5) - 3.0f * f - 4.0f * d3;
}

/* A^T of F(4, 3): 12 operations for 17 terms */
static inline __attribute__((always_inline)) void at43(const vf *m, int ms, vf *o, int os) {
    const vf m0 = m[0], m1 = m[ms], m2 = m[2 * ms], m3 = m[3 * ms], m4 = m[4 * ms], m5 = m[5 * ms];
    const vf a = m1 + m2, b = m2 - m1;
    o[0] = (m0 + m4) + a + 8.0f * m3;
    o[os] = b + 4.0f * m3 - 2.0f * m4;
    o[2 * os] = a + 2.0f * m3 + 4.0f * m4;
    o[3 * os] = (b + m3 + m5) - 8.0f * m4;
}

/* B^T of F(6, 3): rows 1-2, 3-5 and 4-6 are the sum and difference of an even and an odd part */
static inline __attribute__((always_inline)) void bt63(const vf *d, int ds, vf *o, int os) {
    const vf d0 = d[0], d1 = d[ds], d2 = d[2 * ds], d3 = d[3 * ds], d4 = d[4 * ds],
             d5 = d[5 * ds], d6 = d[6 * ds], d7 = d[7 * ds];
    const vf e1 = 17.0f * d4 - 4.0f * (d2 + d6), o1 = 4.0f * (d1 + d5) - 17.0f * d3;
    const vf e3 = 8.0f * d2 - 10.0f * d4 + 2.0f * d6, o3 = 4.0f * d1 - 5.0f * d3 + d5;
    const vf e4 = d2 - 5.0f * d4 + 4.0f * d6, o4 = 10.0f * d3 - 2.0f * d1 - 8.0f * d5;
    o[0] = 4.0f * (d0 - d6) + 21.0f * (d4 - d2);
    o[os] = e1 + o1;
    o[2 * os] = e1 - o1;
    o[3 * os] = e3 + o3;
    o[4 * os] = e4 + o4;
    o[5 * os] = e3 - o3;
    o[6 * os] = e4 - o4;
    o[7 * os] = 4.0f * (d7 - d1) + 21.0f * (d3 - d5);
}

/* A^T of F(6, 3) */
static inline __attribute__((always_inline)) void at63(const vf *m, int ms, vf *o, int os) {
    const vf m0 = m[0], m1 = m[ms], m2 = m[2 * ms], m3 = m[3 * ms], m4 = m[4 * ms],
             m5 = m[5 * ms], m6 = m[6 * ms], m7 = m[7 * ms];
    const vf s1 = m2 + m1, t1 = m2 - m1, s3 = m3 + m5, t3 = m3 - m5, s4 = m4 + m6, t4 = m6 - m4;
    o[0] = m0 + s1 + 32.0f * s3 + s4;
    o[os] = t1 + 16.0f * t3 + 2.0f * t4;
    o[2 * os] = s1 + 8.0f * s3 + 4.0f * s4;
    o[3 * os] = t1 + 4.0f * t3 + 8.0f * t4;
    o[4 * os] = s1 + 2.0f * s3 + 16.0f * s4;
    o[5 * os] = (t1 + t3 + m7) + 32.0f * t4;
}

typedef void (*transform_1d)(const vf *, int, vf *, int);

/* input_tile with the written-out B^T of an A x A tile: loads without bounds checks where the
 * tile lies inside the image. A and bt are constants where it is inlined. */
static inline __attribute__((always_inline)) void
input_tile_written(const float *restrict xn, long s_h, long s_w, long channels, long height,
                   long width, long row0, long col0, long cp, float *restrict v, long t_stride,
                   vf *restrict probe, const int A, const transform_1d bt) {
    const int inside = row0 >= 0 && row0 + A <= height && col0 >= 0 && col0 + A <= width;
    for (long c0 = 0; c0 < cp; c0 += VW) {
        const long cb = min_l(VW, channels - c0);
        vf d[A * A], t[A * A], o[A];
        if (inside && cb == VW) {
            const float *s = xn + row0 * s_h + col0 * s_w + c0;
            for (int a = 0; a < A; a++)
                for (int b = 0; b < A; b++) d[a * A + b] = vload(s + a * s_h + b * s_w);
        } else {
            for (int a = 0; a < A; a++)
                for (int b = 0; b < A; b++)
                    d[a * A + b] = load_pixel(xn, s_h, s_w, height, width, row0 + a, col0 + b,
                                              c0, cb);
        }
        for (int b = 0; b < A; b++) bt(d + b, A, t + b, A);
        for (int i = 0; i < A; i++) {
            bt(t + i * A, 1, o, 1);
            for (int j = 0; j < A; j++) {
                vstore(v + (i * A + j) * t_stride + c0, o[j]);
                probe[j] += o[j] * 0.0f;
            }
        }
    }
}

/* output_tile with the written-out A^T of an A x A tile and an m x m output. */
static inline __attribute__((always_inline)) void
output_tile_written(const float *restrict m, long t_stride, long out_channels, long kp,
                    float *restrict on, const float *restrict rn, long o_h, long o_w, long out_w,
                    long row0, long col0, int hi, const float *restrict bias, int relu,
                    const int A, const int M, const transform_1d at) {
    const int wi = (int)min_l(M, out_w - col0);
    for (long k0 = 0; k0 < kp && k0 < out_channels; k0 += VW) {
        const long kb = min_l(VW, out_channels - k0);
        const vf bv = load_channels(bias, k0, kb);
        vf mm[A * A], t[M * A], y[M];
        for (int a = 0; a < A * A; a++) mm[a] = vload(m + a * t_stride + k0);
        for (int b = 0; b < A; b++) at(mm + b, A, t + b, A);
        for (int i = 0; i < hi; i++) {
            at(t + i * A, 1, y, 1);
            for (int l = 0; l < wi; l++)
                store_output(y[l] + bv, on, rn, (row0 + i) * o_h + (col0 + l) * o_w + k0, kb,
                             relu);
        }
    }
}

#define WRITTEN_OUT(name, A, M, bt, at)                                                            \
    static void input_tile_##name(const float *restrict xn, long s_h, long s_w, long channels,   \
                                  long height, long width, long row0, long col0, long cp,        \
                                  float *restrict v, long t_stride, vf *restrict probe) {        \
        input_tile_written(xn, s_h, s_w, channels, height, width, row0, col0, cp, v, t_stride,   \
                           probe, A, bt);                                                        \
    }                                                                                            \
    static void output_tile_##name(const float *restrict m, long t_stride, long out_channels,    \
                                   long kp, float *restrict on, const float *restrict rn,        \
                                   long o_h, long o_w, long out_w, long row0, long col0, int hi, \
                                   const float *restrict bias, int relu) {                       \
        output_tile_written(m, t_stride, out_channels, kp, on, rn, o_h, o_w, out_w, row0, col0,  \
                            hi, bias, relu, A, M, at);                                           \
    }
WRITTEN_OUT(23, 4, 2, bt23, at23)
WRITTEN_OUT(43, 6, 4, bt43, at43)
WRITTEN_OUT(63, 8, 6, bt63, at63)

typedef void (*input_fn)(const float *restrict, long, long, long, long, long, long, long, long,
                         float *restrict, long, vf *restrict);
typedef void (*output_fn)(const float *restrict, long, long, long, float *restrict,
                          const float *restrict, long, long, long, long, long, int,
                          const float *restrict, int);

/* The rules written out, with the matrices they compute (row-major B^T: A x A, A^T: M x A). */
typedef struct {
    int m, a;
    const float *bt, *at;
    input_fn input;
    output_fn output;
} written_rule;

static const float BT23[16] = {1, 0, -1, 0, 0, -1, 1, 0, 0, 1, 1, 0, 0, -1, 0, 1};
static const float AT23[8] = {1, 1, 1, 0, 0, -1, 1, 1};
static const float BT43[36] = {2, -3, -4, 3,  2,  0, 0, -2, 5,  -1, -2, 0, 0, -2, 1, 5,  2, 0,
                               0, 2,  1,  -2, -1, 0, 0, 1,  -2, -1, 2,  0, 0, 2,  -3, -4, 3, 2};
static const float AT43[24] = {1, 1, 1, 8, 1, 0, 0, -1, 1, 4, -2, 0,
                               0, 1, 1, 2, 4, 0, 0, -1, 1, 1, -8, 1};
static const float BT63[64] = {
    4, 0,  -21, 0,   21,  0,  -4, 0, 0, 4,  -4, -17, 17,  4,   -4, 0, 0, -4, -4, 17,  17, -4,
    -4, 0, 0,   4,   8,   -5, -10, 1, 2, 0, 0,  -2,  1,   10,  -5, -8, 4, 0, 0,  -4, 8,   5,
    -10, -1, 2, 0,   0,   2,  1,   -10, -5, 8, 4, 0, 0,   -4,  0,   21, 0, -21, 0, 4};
static const float AT63[48] = {1, 1,  1, 32, 1,   32,  1,  0, 0, -1, 1, 16, -2, -16, 2,  0,
                               0, 1,  1, 8,  4,   8,   4,  0, 0, -1, 1, 4,  -8, -4,  8,  0,
                               0, 1,  1, 2,  16,  2,   16, 0, 0, -1, 1, 1,  -32, -1, 32, 1};
static const written_rule WRITTEN[3] = {
    {2, 4, BT23, AT23, input_tile_23, output_tile_23},
    {4, 6, BT43, AT43, input_tile_43, output_tile_43},
    {6, 8, BT63, AT63, input_tile_63, output_tile_63},
};

static int same(const float *a, const float *b, int n) {
    for (int i = 0; i < n; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

/* The written-out rule computing these matrices in both directions, or NULL. */
static const written_rule *written_out(int mh, int mw, int ah, int aw, const float *bth,
                                       const float *btw, const float *ath, const float *atw) {
    for (int i = 0; i < 3; i++) {
        const written_rule *r = &WRITTEN[i];
        if (mh == r->m && mw == r->m && ah == r->a && aw == r->a &&
            same(bth, r->bt, r->a * r->a) && same(btw, r->bt, r->a * r->a) &&
            same(ath, r->at, r->m * r->a) && same(atw, r->at, r->m * r->a))
            return r;
    }
    return NULL;
}

/* 1 where winograd_fused runs these matrices by a written-out rule (for the tests). */
int winograd_fused_written_out(int mh, int mw, int ah, int aw, const float *bth, const float *btw,
                               const float *ath, const float *atw) {
    return written_out(mh, mw, ah, aw, bth, btw, ath, atw) != NULL;
}

int winograd_fused_vector(void) { return VW; }

int winograd_fused(const float *restrict x, long s_n, long s_h, long s_w, long channels,
                   long height, long width, long pad_top, long pad_left,
                   const float *restrict u, long cp, long kp, long out_channels,
                   float *restrict out, const float *restrict res, long o_n, long o_h,
                   long o_w, long out_h, long out_w,
                   long images, long nh, long nw, long tb, int mh, int mw, int ah, int aw,
                   const float *restrict bth, const float *restrict btw,
                   const float *restrict ath, const float *restrict atw,
                   const float *restrict bias, int relu, int general, int slices,
                   int threads) {
    const int t_count = ah * aw;
    const long tiles = images * nh * nw;
    const long blocks = (tiles + tb - 1) / tb;
    const long vs = tb * cp + ROW_PAD, ms = tb * kp + ROW_PAD;
    /* output channels per slice: whole vectors, the slices covering kp */
    const long k_step = ((kp / VW + slices - 1) / slices) * VW;
    sparse_row sbth[MAXA], sbtw[MAXA], sath[MAXA], satw[MAXA];
    sparse_rows(bth, ah, ah, sbth);
    sparse_rows(btw, aw, aw, sbtw);
    sparse_rows(ath, mh, ah, sath);
    sparse_rows(atw, mw, aw, satw);
    const written_rule *rule = general ? NULL : written_out(mh, mw, ah, aw, bth, btw, ath, atw);
    int bad = 0;
#pragma omp parallel num_threads(threads) reduction(| : bad)
    {
        /* calloc: rows past the last tile of a block stay finite (their results are unused) */
        float *v = calloc((size_t)t_count * vs, sizeof(float));
        float *m = calloc((size_t)t_count * ms, sizeof(float));
        vf probe[MAXA];
        for (int j = 0; j < MAXA; j++) probe[j] = (vf){0};
        long held = -1; /* the block whose transformed input v holds */
#pragma omp for schedule(static)
        for (long unit = 0; unit < blocks * slices; unit++) {
            if (!v || !m) { /* out of memory: the caller raises */
                bad |= 2;
                continue;
            }
            const long blk = unit / slices, k_lo = (unit % slices) * k_step;
            const long k_hi = min_l(kp, k_lo + k_step);
            if (k_lo >= k_hi) continue;
            const long p0 = blk * tb, count = min_l(tb, tiles - p0);
            for (long q = 0; q < count && blk != held; q++) {
                const long p = p0 + q, img = p / (nh * nw), th = (p / nw) % nh, tw = p % nw;
                if (rule)
                    rule->input(x + img * s_n, s_h, s_w, channels, height, width,
                                th * mh - pad_top, tw * mw - pad_left, cp, v + q * cp, vs, probe);
                else
                    input_tile(x + img * s_n, s_h, s_w, channels, height, width,
                               th * mh - pad_top, tw * mw - pad_left, cp, ah, aw, sbth, sbtw,
                               v + q * cp, vs, probe);
            }
            held = blk;
            block_gemm(v, u, m, tb, cp, kp, k_lo, k_hi, vs, ms, t_count);
            /* the output transforms see the slice's channels as channels 0 .. k_hi - k_lo */
            const long k_out = out_channels - k_lo;
            const float *bias_s = bias ? bias + k_lo : NULL;
            for (long q = 0; q < count && k_out > 0; q++) {
                const long p = p0 + q, img = p / (nh * nw), th = (p / nw) % nh, tw = p % nw;
                const int hi = (int)min_l(mh, out_h - th * mh);
                float *on = out + img * o_n + k_lo;
                const float *rn = res ? res + img * o_n + k_lo : NULL;
                if (rule)
                    rule->output(m + q * kp + k_lo, ms, k_out, k_hi - k_lo, on, rn, o_h, o_w,
                                 out_w, th * mh, tw * mw, hi, bias_s, relu);
                else
                    output_tile(m + q * kp + k_lo, ms, k_out, k_hi - k_lo, on, rn, o_h, o_w,
                                out_h, out_w, th * mh, tw * mw, mw, ah, aw, hi, sath, satw,
                                bias_s, relu);
            }
        }
        for (int j = 0; j < aw; j++)
            for (int c = 0; c < VW; c++) bad |= probe[j][c] != 0.0f ? 1 : 0; /* NaN != 0 too */
        free(v);
        free(m);
    }
    return bad;
}
