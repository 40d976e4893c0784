/* floatops/nchw.h: NCHW float32 maps for the float graph: copies, pools and the batch-norm affine map (the twin's
 * bits by construction: the same float32 operations in the same order). One ISA: plain loops, the compiler's
 * baseline. */
#ifndef FLOATOPS_NCHW_H
#define FLOATOPS_NCHW_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Nearest resize of planes [p0, p1) of H x W: y[p, i, j] = x[p, iy[i], ix[j]] (OH x OW per plane). An output row
 * whose source row is the previous one's is a copy of that output row. */
static void fo_nearest_f32(const float *x, ptrdiff_t p0, ptrdiff_t p1, ptrdiff_t H, ptrdiff_t W, const int64_t *iy,
                           ptrdiff_t OH, const int64_t *ix, ptrdiff_t OW, float *y) {
    for (ptrdiff_t p = p0; p < p1; p++) {
        const float *xp = x + p * H * W;
        float *yp = y + p * OH * OW;
        for (ptrdiff_t i = 0; i < OH; i++) {
            float *row = yp + i * OW;
            if (i > 0 && iy[i] == iy[i - 1]) {
                memcpy(row, row - OW, (size_t)OW * sizeof(float));
                continue;
            }
            const float *src = xp + iy[i] * W;
            for (ptrdiff_t j = 0; j < OW; j++) row[j] = src[ix[j]];
        }
    }
}

/* Max pool of planes [0, planes) of H x W, windows kh x kw at stride (sh, sw) from (-pt, -pl): each output is the
 * max of the window's taps inside the map (-inf if none); a NaN stays (numpy.maximum's rule). Per output row, the
 * max down the window's rows into t (W floats, vector selects), then across each window's columns. */
/* max(m, v) keeping a NaN of either, without branches (maxss / maxps, then an unordered-compare select) */
static inline float fo_max_nan(float m, float v) {
    const float r = m > v ? m : v;
    return m != m ? m : r;
}
#define FO_MAX fo_max_nan
static void fo_maxpool_f32(const float *x, ptrdiff_t planes, ptrdiff_t H, ptrdiff_t W, ptrdiff_t kh, ptrdiff_t kw,
                           ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t pt, ptrdiff_t pl, ptrdiff_t OH, ptrdiff_t OW,
                           float *t, float *y) {
    for (ptrdiff_t p = 0; p < planes; p++) {
        const float *xp = x + p * H * W;
        for (ptrdiff_t i = 0; i < OH; i++) {
            const ptrdiff_t r0 = i * sh - pt, ra = r0 < 0 ? 0 : r0, rb = r0 + kh < H ? r0 + kh : H;
            float *row = y + (p * OH + i) * OW;
            if (ra >= rb) {
                for (ptrdiff_t j = 0; j < OW; j++) row[j] = -INFINITY;
                continue;
            }
            memcpy(t, xp + ra * W, (size_t)W * sizeof(float));
            for (ptrdiff_t r = ra + 1; r < rb; r++) {
                const float *xr = xp + r * W;
                for (ptrdiff_t c = 0; c < W; c++) t[c] = FO_MAX(t[c], xr[c]);
            }
            for (ptrdiff_t j = 0; j < OW; j++) {
                const ptrdiff_t c0 = j * sw - pl, ca = c0 < 0 ? 0 : c0, cb = c0 + kw < W ? c0 + kw : W;
                float m = -INFINITY;
                for (ptrdiff_t c = ca; c < cb; c++) m = FO_MAX(m, t[c]);
                row[j] = m;
            }
        }
    }
}
#undef FO_MAX

/* NumPy's float32 sum of n contiguous values (its pairwise_sum: below 8 values in order; up to 128, eight running
 * sums combined as ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)) and the tail added in order; above, the two
 * halves split at a multiple of 8), so numpy.mean's bits come out. */
static float fo_pairwise_sum(const float *a, ptrdiff_t n) {
    if (n < 8) {
        float r = -0.0f;
        for (ptrdiff_t i = 0; i < n; i++) r += a[i];
        return r;
    }
    if (n <= 128) {
        float r[8];
        ptrdiff_t i;
        for (int j = 0; j < 8; j++) r[j] = a[j];
        for (i = 8; i < n - n % 8; i += 8)
            for (int j = 0; j < 8; j++) r[j] += a[i + j];
        float res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) res += a[i];
        return res;
    }
    ptrdiff_t n2 = n / 2;
    n2 -= n2 % 8;
    return fo_pairwise_sum(a, n2) + fo_pairwise_sum(a + n2, n - n2);
}

/* Global average of each of `planes` planes of HW values: numpy.mean's float32 sum (from +0), divided in float64. */
static void fo_gap_nchw_f32(const float *x, ptrdiff_t planes, ptrdiff_t HW, float *y) {
    for (ptrdiff_t p = 0; p < planes; p++)
        y[p] = (float)((double)(0.0f + fo_pairwise_sum(x + p * HW, HW)) / (double)HW);
}

/* Batch norm at inference on planes [p0, p1) of HW values (plane p holds channel p % C):
 * y = ((x - mean) * inv_std) * scale + bias, each step one float32 operation in that order (the NumPy op's in-place
 * steps), in one pass instead of four. */
static void fo_bn_nchw_f32(const float *x, ptrdiff_t p0, ptrdiff_t p1, ptrdiff_t C, ptrdiff_t HW, const float *mean,
                           const float *inv_std, const float *scale, const float *bias, float *y) {
    for (ptrdiff_t p = p0; p < p1; p++) {
        const ptrdiff_t c = p % C;
        const float m = mean[c], s = inv_std[c], g = scale[c], b = bias[c];
        const float *xp = x + p * HW;
        float *yp = y + p * HW;
        for (ptrdiff_t i = 0; i < HW; i++) yp[i] = ((xp[i] - m) * s) * g + b;
    }
}

#endif
