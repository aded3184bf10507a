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
 * Each input value is read once and each output value written once; the three-stage path of
 * winograd_transforms.c instead writes V and M to memory between stages. U (T x Cp x Kp, zero
 * padded to whole vectors) is shared by every block, so this pays where U fits in cache (few
 * channels); the caller decides.
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

/* The block's GEMMs: M[t] (tb x kp) = V[t] (tb x cp) U[t] (cp x kp), tb a multiple of RB,
 * V[t] and M[t] vs and ms floats apart. */
static void block_gemm(const float *restrict v, const float *restrict u, float *restrict m,
                       long tb, long cp, long kp, long vs, long ms, int t_count) {
    for (int t = 0; t < t_count; t++) {
        const float *vt = v + t * vs, *ut = u + t * cp * kp;
        float *mt = m + t * ms;
        for (long k0 = 0; k0 < kp; k0 += NV * VW) {
            const int nv = (int)min_l(NV, (kp - k0) / VW);
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

/* V[t][p][0:cp] for one tile whose top-left input value is x[row0][col0] (may lie in padding);
 * probe[j] += V * 0 (NaN where V is not finite), aw independent chains. */
static void input_tile(const float *restrict xn, long s_h, long s_w, long channels, long height,
                       long width, long row0, long col0, long cp, int ah, int aw,
                       const sparse_row *bth, const sparse_row *btw, float *restrict v,
                       long t_stride, vf *restrict probe) {
    vf d[MAXA * MAXA], tmp[MAXA * MAXA];
    for (long c0 = 0; c0 < cp; c0 += VW) {
        const long cb = min_l(VW, channels - c0);
        for (int a = 0; a < ah; a++) {
            const long h = row0 + a;
            for (int b = 0; b < aw; b++) {
                const long w = col0 + b;
                vf t = {0};
                if (h >= 0 && h < height && w >= 0 && w < width) {
                    const float *s = xn + h * s_h + w * s_w + c0;
                    if (cb == VW)
                        t = vload(s);
                    else
                        for (long c = 0; c < cb; c++) t[c] = s[c];
                }
                d[a * MAXA + b] = t;
            }
        }
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
        vf bv = {0};
        if (bias) {
            if (kb == VW)
                bv = vload(bias + k0);
            else
                for (long k = 0; k < kb; k++) bv[k] = bias[k0 + k];
        }
        for (int a = 0; a < ah; a++)
            for (int b = 0; b < aw; b++) mm[a * MAXA + b] = vload(m + (a * aw + b) * t_stride + k0);
        for (int i = 0; i < hi; i++)
            for (int b = 0; b < aw; b++) tmp[i * MAXA + b] = combine(&ath[i], mm + b, MAXA);
        for (int i = 0; i < hi; i++)
            for (int l = 0; l < wi; l++) {
                vf y = bv + combine(&atw[l], tmp + i * MAXA, 1);
                const long at = (row0 + i) * o_h + (col0 + l) * o_w + k0;
                if (rn) {
                    if (kb == VW)
                        y += vload(rn + at);
                    else
                        for (long k = 0; k < kb; k++) y[k] += rn[at + k];
                }
                if (relu) /* zero where y < 0; NaN stays NaN */
                    y = (vf)((vi)y & ~(vi)(y < 0.0f));
                float *o = on + at;
                if (kb == VW)
                    vstore(o, y);
                else
                    for (long k = 0; k < kb; k++) o[k] = y[k];
            }
    }
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
                   const float *restrict bias, int relu, int threads) {
    const int t_count = ah * aw;
    const long tiles = images * nh * nw;
    const long blocks = (tiles + tb - 1) / tb;
    const long vs = tb * cp + ROW_PAD, ms = tb * kp + ROW_PAD;
    sparse_row sbth[MAXA], sbtw[MAXA], sath[MAXA], satw[MAXA];
    sparse_rows(bth, ah, ah, sbth);
    sparse_rows(btw, aw, aw, sbtw);
    sparse_rows(ath, mh, ah, sath);
    sparse_rows(atw, mw, aw, satw);
    int bad = 0;
#pragma omp parallel num_threads(threads) reduction(| : bad)
    {
        /* calloc: rows past the last tile of a block stay finite (their results are unused) */
        float *v = calloc((size_t)t_count * vs, sizeof(float));
        float *m = calloc((size_t)t_count * ms, sizeof(float));
        vf probe[MAXA];
        for (int j = 0; j < MAXA; j++) probe[j] = (vf){0};
#pragma omp for schedule(static)
        for (long blk = 0; blk < blocks; blk++) {
            if (!v || !m) { /* out of memory: the caller raises */
                bad |= 2;
                continue;
            }
            const long p0 = blk * tb, count = min_l(tb, tiles - p0);
            for (long q = 0; q < count; q++) {
                const long p = p0 + q, img = p / (nh * nw), th = (p / nw) % nh, tw = p % nw;
                input_tile(x + img * s_n, s_h, s_w, channels, height, width, th * mh - pad_top,
                           tw * mw - pad_left, cp, ah, aw, sbth, sbtw, v + q * cp, vs, probe);
            }
            block_gemm(v, u, m, tb, cp, kp, vs, ms, t_count);
            for (long q = 0; q < count; q++) {
                const long p = p0 + q, img = p / (nh * nw), th = (p / nw) % nh, tw = p % nw;
                const int hi = (int)min_l(mh, out_h - th * mh);
                output_tile(m + q * kp, ms, out_channels, kp, out + img * o_n,
                            res ? res + img * o_n : NULL, o_h, o_w, out_h, out_w, th * mh,
                            tw * mw, mw, ah, aw, hi, sath, satw, bias, relu);
            }
        }
        for (int j = 0; j < aw; j++)
            for (int c = 0; c < VW; c++) bad |= probe[j][c] != 0.0f ? 1 : 0; /* NaN != 0 too */
        free(v);
        free(m);
    }
    return bad;
}
