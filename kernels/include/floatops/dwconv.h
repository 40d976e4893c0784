/* floatops/dwconv.h -- direct float32 depthwise convolution (NCHW in and out, forward only). Twin and
 * specification: depthwise_conv2d in refquant/reference/floatops.py.
 *
 * Output plane (n, o) reads input plane (n, o / M) (M, the channel multiplier) through a padded copy xp (zeros
 * around the input; none is made when the window never leaves the input) and computes, per output pixel, in float32
 * with one rounding per product and per sum (no fused multiply-add), taps in row-major order:
 *     a = k[0, 0] * xp[p*sh, q*sw];  a = a + k[i, j] * xp[p*sh + i*dh, q*sw + j*dw] for the other taps;
 *     y = bias ? a + bias[o] : a.
 * So every path gives the twin's bits, whatever it vectorizes. 3x3 and 5x5 kernels with unit column dilation
 * and column stride 1 or 2 get loops with constant trip counts (the taps unrolled, the columns vectorized, the sum
 * kept in registers; at stride 1 on rows shorter than 32 outputs, one flat loop over the plane); other shapes add
 * tap by tap into the output row (the same operations in the same order).
 * floatops.h includes this file once per path, with FO_SFX and FO_ATTR set. No include guard on purpose. */
#define FO_DW_CAT_(a, b) a##b
#define FO_DW_CAT(a, b) FO_DW_CAT_(a, b)
#define FO_DW(name) FO_DW_CAT(name, FO_SFX)
#ifndef FO_DW_FLAT_OW
#define FO_DW_FLAT_OW 32
#endif

/* Rows of output from rows of xp (row stride ld); KH, KW, SW, DW constant at the call sites. At stride 1, oh = 1,
 * ow = (h - 1) * ld + w: a plane of h x w outputs in one run, (p, q) at p*ld + q (the sums between rows dropped). */
FO_ATTR FO_INLINE void FO_DW(fo_dw_rows_)(const float *xp, ptrdiff_t ld, const float *k, const int KH, const int KW,
                                         ptrdiff_t sh, const int SW, ptrdiff_t dh, const int DW, ptrdiff_t oh,
                                         ptrdiff_t ow, int has_b, float b, float *o) {
    for (ptrdiff_t p = 0; p < oh; p++) {
        const float *r = xp + p * sh * ld;
        float *op = o + p * ow;
        for (ptrdiff_t q = 0; q < ow; q++) {
            float a = k[0] * r[q * SW];
            for (int j = 1; j < KW; j++) a = a + k[j] * r[q * SW + j * DW];
            for (int i = 1; i < KH; i++)
                for (int j = 0; j < KW; j++) a = a + k[i * KW + j] * r[i * dh * ld + q * SW + j * DW];
            op[q] = has_b ? a + b : a;
        }
    }
}

/* Column stride 2 on a deinterleaved padded plane: each row of ld floats holds the even columns of the padded row,
 * then (from ne) its odd ones, so padded column 2q + j is r[(j & 1) * ne + q + j / 2] and every tap reads
 * consecutive floats. KH, KW are constants at the call sites below. */
FO_ATTR FO_INLINE void FO_DW(fo_dw_rows_s2_)(const float *xp, ptrdiff_t ld, ptrdiff_t ne, const float *k,
                                            const int KH, const int KW, ptrdiff_t sh, ptrdiff_t dh, ptrdiff_t oh,
                                            ptrdiff_t ow, int has_b, float b, float *o) {
    for (ptrdiff_t p = 0; p < oh; p++) {
        const float *r = xp + p * sh * ld;
        float *op = o + p * ow;
        for (ptrdiff_t q = 0; q < ow; q++) {
            float a = k[0] * r[q];
            for (int j = 1; j < KW; j++) a = a + k[j] * r[(j & 1) * ne + q + j / 2];
            for (int i = 1; i < KH; i++)
                for (int j = 0; j < KW; j++) a = a + k[i * KW + j] * r[i * dh * ld + (j & 1) * ne + q + j / 2];
            op[q] = has_b ? a + b : a;
        }
    }
}

/* Any kernel: the same sums, accumulated tap by tap in the output row. */
FO_ATTR FO_INLINE void FO_DW(fo_dw_rows_any_)(const float *xp, ptrdiff_t ld, const float *k, int kh, int kw,
                                             ptrdiff_t sh, const ptrdiff_t SW, ptrdiff_t dh, ptrdiff_t dw,
                                             ptrdiff_t oh, ptrdiff_t ow, int has_b, float b, float *o) {
    for (ptrdiff_t p = 0; p < oh; p++) {
        const float *r = xp + p * sh * ld;
        float *op = o + p * ow;
        const float k0 = k[0];
        for (ptrdiff_t q = 0; q < ow; q++) op[q] = k0 * r[q * SW];
        for (int t = 1; t < kh * kw; t++) {
            const float *rt = r + (t / kw) * dh * ld + (t % kw) * dw;
            const float kt = k[t];
            for (ptrdiff_t q = 0; q < ow; q++) op[q] = op[q] + kt * rt[q * SW];
        }
        if (has_b)
            for (ptrdiff_t q = 0; q < ow; q++) op[q] = op[q] + b;
    }
}

/* dst[i] = padded[2i + par] for i < cnt, where padded[col] is src[col - pl] inside the input row of W floats and
 * 0 outside: one half (even columns, par 0, or odd ones, par 1) of a deinterleaved padded row, read from x. */
FO_ATTR FO_INLINE void FO_DW(fo_dw_half_row_)(const float *src, ptrdiff_t W, ptrdiff_t pl, int par, ptrdiff_t cnt,
                                             float *dst) {
    ptrdiff_t lo = pl - par > 0 ? (pl - par + 1) / 2 : 0, hi = (W + pl - par + 1) / 2;
    lo = lo < cnt ? lo : cnt;
    hi = hi < lo ? lo : hi > cnt ? cnt : hi;
    const float *s = src + par - pl;
    for (ptrdiff_t i = 0; i < lo; i++) dst[i] = 0.0f;
    for (ptrdiff_t i = lo; i < hi; i++) dst[i] = s[2 * i];
    for (ptrdiff_t i = hi; i < cnt; i++) dst[i] = 0.0f;
}

FO_ATTR static void FO_DW(fo_dw_plane_)(const float *xp, ptrdiff_t ld, const float *k, int kh, int kw, ptrdiff_t sh,
                                        ptrdiff_t sw, ptrdiff_t dh, ptrdiff_t dw, ptrdiff_t oh, ptrdiff_t ow,
                                        int has_b, float b, float *o) {
    if (dw == 1 && kh == 3 && kw == 3 && sw == 1)
        FO_DW(fo_dw_rows_)(xp, ld, k, 3, 3, sh, 1, dh, 1, oh, ow, has_b, b, o);
    else if (dw == 1 && kh == 5 && kw == 5 && sw == 1)
        FO_DW(fo_dw_rows_)(xp, ld, k, 5, 5, sh, 1, dh, 1, oh, ow, has_b, b, o);
    else if (sw == 1)
        FO_DW(fo_dw_rows_any_)(xp, ld, k, kh, kw, sh, 1, dh, dw, oh, ow, has_b, b, o);
    else
        FO_DW(fo_dw_rows_any_)(xp, ld, k, kh, kw, sh, sw, dh, dw, oh, ow, has_b, b, o);
}

/* Output planes [p0, p1) of y (N, C*M, oh, ow) from x (N, C, H, W), w (C*M, 1, kh, kw) and bias (C*M or NULL);
 * padding pt (top) and pl (left), the bottom / right padding implied by oh, ow. Returns 0, or -1 when the padded
 * plane could not be allocated. */
FO_ATTR FO_UNUSED static int FO_DW(fo_dwconv_f32_)(const float *x, const float *w, const float *bias, float *y,
                                                   ptrdiff_t p0, ptrdiff_t p1, ptrdiff_t C, ptrdiff_t M, ptrdiff_t H,
                                                   ptrdiff_t W, int kh, int kw, ptrdiff_t sh, ptrdiff_t sw,
                                                   ptrdiff_t dh, ptrdiff_t dw, ptrdiff_t pt, ptrdiff_t pl,
                                                   ptrdiff_t oh, ptrdiff_t ow) {
    const ptrdiff_t hp = (oh - 1) * sh + (kh - 1) * dh + 1, wp = (ow - 1) * sw + (kw - 1) * dw + 1;
    /* 3x3 and 5x5 with column stride 2 read a deinterleaved copy; other windows that stay inside x read x in place */
    const int split = sw == 2 && dw == 1 && (kw == 3 || kw == 5) && (kh == 3 || kh == 5);
    const int direct = !split && pt == 0 && pl == 0 && hp <= H && wp <= W;
    const ptrdiff_t ne = (wp + 1) / 2, ld = direct ? W : wp;
    /* square 3x3 / 5x5 windows at stride 1 on rows under FO_DW_FLAT_OW outputs: one run per plane into t */
    const int flat = sh == 1 && sw == 1 && dw == 1 && kh == kw && (kh == 3 || kh == 5) && ow < FO_DW_FLAT_OW;
    /* the padded copy: zeros once (calloc), then only the input's rows and columns per plane */
    float *buf = direct ? NULL : (float *)calloc((size_t)hp * (size_t)wp, sizeof(float));
    float *t = flat ? (float *)malloc((size_t)oh * (size_t)ld * sizeof(float)) : NULL;
    if ((!direct && !buf) || (flat && !t)) { free(buf); free(t); return -1; }
    /* padded rows [r0, r1) and columns [c0, c1) hold input rows [r0 - pt, r1 - pt) and columns [c0 - pl, c1 - pl) */
    const ptrdiff_t r0 = pt < hp ? pt : hp, r1 = pt + H < hp ? pt + H : hp;
    const ptrdiff_t c0 = pl < wp ? pl : wp, c1 = pl + W < wp ? pl + W : wp;
    const ptrdiff_t OC = C * M;
    for (ptrdiff_t plane = p0; plane < p1; plane++) {
        const ptrdiff_t n = plane / OC, oc = plane % OC;
        const float *src = x + (n * C + oc / M) * H * W;
        const float *xp = direct ? src : buf;
        const float *kk = w + oc * kh * kw;
        const int hb = bias != NULL;
        const float bb = bias ? bias[oc] : 0.0f;
        float *o = y + plane * oh * ow;
        if (split) {
            for (ptrdiff_t r = r0; r < r1; r++) {
                FO_DW(fo_dw_half_row_)(src + (r - pt) * W, W, pl, 0, ne, buf + r * wp);
                FO_DW(fo_dw_half_row_)(src + (r - pt) * W, W, pl, 1, wp - ne, buf + r * wp + ne);
            }
            if (kh == 3 && kw == 3) FO_DW(fo_dw_rows_s2_)(xp, ld, ne, kk, 3, 3, sh, dh, oh, ow, hb, bb, o);
            else if (kh == 3) FO_DW(fo_dw_rows_s2_)(xp, ld, ne, kk, 3, 5, sh, dh, oh, ow, hb, bb, o);
            else if (kw == 3) FO_DW(fo_dw_rows_s2_)(xp, ld, ne, kk, 5, 3, sh, dh, oh, ow, hb, bb, o);
            else FO_DW(fo_dw_rows_s2_)(xp, ld, ne, kk, 5, 5, sh, dh, oh, ow, hb, bb, o);
            continue;
        }
        if (!direct && c1 > c0)
            for (ptrdiff_t r = r0; r < r1; r++)
                memcpy(buf + r * wp + c0, src + (r - pt) * W, (size_t)(c1 - c0) * sizeof(float));
        if (flat) {
            if (kh == 3) FO_DW(fo_dw_rows_)(xp, ld, kk, 3, 3, 1, 1, dh, 1, 1, (oh - 1) * ld + ow, hb, bb, t);
            else FO_DW(fo_dw_rows_)(xp, ld, kk, 5, 5, 1, 1, dh, 1, 1, (oh - 1) * ld + ow, hb, bb, t);
            for (ptrdiff_t p = 0; p < oh; p++) memcpy(o + p * ow, t + p * ld, (size_t)ow * sizeof(float));
            continue;
        }
        FO_DW(fo_dw_plane_)(xp, ld, kk, kh, kw, sh, sw, dh, dw, oh, ow, hb, bb, o);
    }
    free(t);
    free(buf);
    return 0;
}

#undef FO_DW
#undef FO_DW_CAT
#undef FO_DW_CAT_
