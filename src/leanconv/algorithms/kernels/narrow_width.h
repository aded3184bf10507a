/* The output-channel-vectorised direct convolution for one vector width VW (see
 * narrow_direct.c, which includes this file once per width: VW 8, and VW 16 where the machine
 * has 16-float vectors). W(name) names this width's copy of each function and type. */

#define vec W(vec)
#define vecu W(vecu)
#define veci W(veci)
#define vload W(vload)
#define vstore W(vstore)
#define vsplat W(vsplat)
#define block W(block)
#define pixels_for W(pixels_for)
#define block_any W(block_any)
#define row_range W(row_range)
#define block_rows W(block_rows)
#define block_rows_any W(block_rows_any)
#define rows_out_w W(rows_out)

typedef float vec __attribute__((vector_size(VW * 4)));
typedef float vecu __attribute__((vector_size(VW * 4), aligned(4)));
typedef int veci __attribute__((vector_size(VW * 4)));

static inline vec vload(const float *p) { return *(const vecu *)p; }
static inline void vstore(float *p, vec v) { *(vecu *)p = v; }
/* all lanes s (written out: 0 + s would cost an addition, as -0 + 0 is not -0) */
static inline vec vsplat(float s) {
#if VW == 16
    return (vec){s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s};
#else
    return (vec){s, s, s, s, s, s, s, s};
#endif
}

/* P output pixels x nv vectors of channels from k0, taps j in [j0, j1) of each row rows[i]
 * (NULL: outside the input); pixel p, tap j reads rows[i] + p xs + j xd (floats). */
static inline __attribute__((always_inline)) void block(
    const float *const *rows, long xs, long xd, long c_count, const float *restrict w, long kp,
    long k0, const float *restrict bias, int relu, float *restrict out,
    const float *restrict res, long os, long k, int kh, int kw, int j0, int j1, const int P,
    const int nv) {
    vec acc[PMAX][NVMAX];
    for (int p = 0; p < P; p++)
        for (int v = 0; v < nv; v++) acc[p][v] = bias ? vload(bias + k0 + v * VW) : (vec){0};
    for (int i = 0; i < kh; i++) {
        const float *row = rows[i];
        if (!row) continue;
        for (int j = j0; j < j1; j++) {
            const float *in = row + j * xd;
            const float *wt = w + (long)(i * kw + j) * c_count * kp + k0;
            for (long c = 0; c < c_count; c++) {
                /* the next block's pixels, a line per step: wide inputs stream from memory */
                if (c * 16 < P * xs) __builtin_prefetch(in + P * xs + c * 16);
                vec b[NVMAX];
                for (int v = 0; v < nv; v++) b[v] = vload(wt + c * kp + v * VW);
                for (int p = 0; p < P; p++) {
                    const vec a = vsplat(in[p * xs + c]);
                    for (int v = 0; v < nv; v++) acc[p][v] += a * b[v];
                }
            }
        }
    }
    for (int p = 0; p < P; p++) {
        for (int v = 0; v < nv; v++) {
            vec r = acc[p][v];
            const long kk = k0 + v * VW, at = p * os + kk;
            if (kk + VW <= k) {
                if (res) r += vload(res + at);
                if (relu) r = (vec)((veci)r & (r > 0)); /* max(0, r) */
                vstore(out + at, r);
            } else { /* the last, partial vector of channels */
                float tmp[VW] = {0};
                if (res) {
                    memcpy(tmp, res + at, (size_t)(k - kk) * sizeof(float));
                    r += vload(tmp);
                }
                if (relu) r = (vec)((veci)r & (r > 0));
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

/* Stride 1, no dilation, one vector of channels (K <= VW, the thinnest factors): a block of R
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
    vec acc[4][12];
#pragma GCC unroll 16
    for (int r = 0; r < R; r++)
#pragma GCC unroll 16
        for (int p = 0; p < P; p++) acc[r][p] = bias ? vload(bias) : (vec){0};
    for (long c = 0; c < c_count; c++) {
        vec b[3][3];
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
                const vec a = vsplat(row[q * xs + c]);
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
            vec s = acc[r][p];
            const long at = r * oy + p * os;
            if (k == VW) {
                if (res) s += vload(res + at);
                if (relu) s = (vec)((veci)s & (s > 0)); /* max(0, s) */
                vstore(out + at, s);
            } else { /* fewer than VW channels */
                float tmp[VW] = {0};
                if (res) {
                    memcpy(tmp, res + at, (size_t)k * sizeof(float));
                    s += vload(tmp);
                }
                if (relu) s = (vec)((veci)s & (s > 0));
                vstore(tmp, s);
                memcpy(out + at, tmp, (size_t)k * sizeof(float));
            }
        }
    }
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

/* Output rows [y0, y1) of one image: img its input from row g->y_first, orow output row y0,
 * rrow the residual's row y0 (NULL: none), oy and ox the output's (and the residual's) row and
 * pixel strides. Whole row blocks where the geometry has them, else row by row. */
static void rows_out_w(const conv_t *g, const float *img, float *orow, const float *rrow, long oy,
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

#undef CASE_P
#undef SWITCH_P
#undef vec
#undef vecu
#undef veci
#undef vload
#undef vstore
#undef vsplat
#undef block
#undef pixels_for
#undef block_any
#undef row_range
#undef block_rows
#undef block_rows_any
#undef rows_out_w
