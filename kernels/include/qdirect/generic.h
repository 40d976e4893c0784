/* qdirect/generic.h: the plain-C kernels, written once and compiled once per path.
 *
 * qdirect.h includes this file twice: with QD_SFX = _portable and no target attribute (the build's baseline
 * ISA, SSE2 on x86-64), and with QD_SFX = _avx2 and QD_ATTR = target("avx2"), where the compiler vectorizes the
 * same loops with 256-bit registers. The C source fixes every operation (float32 products, no contraction under
 * -ffp-contract=off, integer sums), so both instantiations give the same bits.
 *
 * Defines, for the suffix QD_SFX: qd_dw_pixels_, qd_dw_row_, qd_quant_nchw_, qd_dequant_nhwc_, qd_quant_rows_,
 * qd_dequant_rows_, qd_requant_, qd_add_, qd_chain_f32_ (the depthwise conv's post-op), qd_maxpool_row_,
 * qd_avgpool_row_, qd_gap_, qd_im2col_row_. (The float glue between INT8 ops is floatops/glue.h.)
 */
#include "common.h"

#define QD_CAT2(a, b) a##b
#define QD_CAT(a, b) QD_CAT2(a, b)
#define QD_FN(name) QD_CAT(name, QD_SFX)

/* A layout-change tile: QD_TILE_C channels x QD_TILE_P pixels, 8 KB of u8 in L1; each channel row of float32 is a
 * 512-byte run the hardware prefetchers follow (64 x 64 tiles ran 1.3-1.5x slower on large batches) */
#define QD_TILE_C 64
#define QD_TILE_P 128

/* Depthwise output pixels [ow0, ow1) of one row, one pixel at a time in natural channel order (int32 sums,
 * wrapping). rows[i] is the input row of kernel row i (or the zero row). */
QD_ATTR QD_UNUSED static void QD_FN(qd_dw_pixels_)(const qd_dw *d, const uint8_t *const *rows, ptrdiff_t ow0,
                                         ptrdiff_t ow1, char *out_row) {
    const ptrdiff_t C = d->g.c, K = d->g.kh * d->g.kw;
    const uint8_t *tap[QD_MAX_TAPS];
    uint32_t acc[256];
    for (ptrdiff_t ow = ow0; ow < ow1; ow++) {
        qd_pixel_taps(d, rows, ow, tap);
        for (ptrdiff_t c0 = 0; c0 < C; c0 += 256) {
            const ptrdiff_t nc = C - c0 < 256 ? C - c0 : 256;
            for (ptrdiff_t c = 0; c < nc; c++) acc[c] = (uint32_t)d->bias[c0 + c];
            for (ptrdiff_t t = 0; t < K; t++) {
                const uint8_t *p = tap[t] + c0;
                const int8_t *wt = d->w + t * C + c0;
                for (ptrdiff_t c = 0; c < nc; c++) acc[c] += (uint32_t)((int32_t)p[c] * (int32_t)wt[c]);
            }
            const float *s = d->scale + c0;
            if (d->out_f32) {
                float *o = (float *)out_row + ow * C + c0;
                for (ptrdiff_t c = 0; c < nc; c++) {
                    float f = (float)(int32_t)acc[c] * s[c];
                    f = f > d->lo_f ? f : d->lo_f;
                    o[c] = f < d->hi_f ? f : d->hi_f;
                }
            } else {
                uint8_t *o = (uint8_t *)out_row + ow * C + c0;
                for (ptrdiff_t c = 0; c < nc; c++)
                    o[c] = qd_q8((float)(int32_t)acc[c] * s[c], d->lo_f, d->hi_f, d->out_zero);
            }
        }
    }
}

/* One output row oh of image x (H, W, C) into out_row (OW, C). */
QD_ATTR QD_UNUSED static void QD_FN(qd_dw_row_)(const qd_dw *d, const uint8_t *x, ptrdiff_t oh, char *out_row) {
    const uint8_t *rows[QD_MAX_TAPS];
    for (ptrdiff_t i = 0; i < d->g.kh; i++) rows[i] = qd_row(d, x, oh, i);
    QD_FN(qd_dw_pixels_)(d, rows, 0, d->g.ow, out_row);
}

/* quantize with C = NC, a small constant (an image's 1-4 channels): every output byte written in order, the
 * channels interleaved by the compiler's vectorizer instead of byte transposes, which need 16 channels. */
#define QD_QUANT_FEW(NC)                                                                                          \
    for (ptrdiff_t p = p0; p < p1; p++)                                                                        \
        for (ptrdiff_t c = 0; c < NC; c++) out[p * NC + c] = qd_q8(x[c * HW + p] * sinv, lo_f, hi_f, zero);

/* quantize: pixels [p0, p1) of one image, x (C, HW) float32 -> out (HW, C) u8, q = qd_q8(x * sinv). The tile
 * is quantized along the contiguous pixels, then transposed into the channel-fastest output. */
QD_ATTR QD_UNUSED static void QD_FN(qd_quant_nchw_)(const float *x, ptrdiff_t C, ptrdiff_t HW, ptrdiff_t p0, ptrdiff_t p1,
                                          float sinv, float lo_f, float hi_f, int32_t zero, uint8_t *out) {
    switch (C) {
        case 1: QD_QUANT_FEW(1) return;
        case 2: QD_QUANT_FEW(2) return;
        case 3: QD_QUANT_FEW(3) return;
        case 4: QD_QUANT_FEW(4) return;
        default: break;
    }
    uint8_t tile[QD_TILE_C * QD_TILE_P]; /* [c][p] */
    for (ptrdiff_t pb = p0; pb < p1; pb += QD_TILE_P) {
        const ptrdiff_t np = p1 - pb < QD_TILE_P ? p1 - pb : QD_TILE_P;
        for (ptrdiff_t cb = 0; cb < C; cb += QD_TILE_C) {
            const ptrdiff_t nc = C - cb < QD_TILE_C ? C - cb : QD_TILE_C;
            for (ptrdiff_t c = 0; c < nc; c++) {
                const float *src = x + (cb + c) * HW + pb;
                uint8_t *t = tile + c * QD_TILE_P;
                for (ptrdiff_t p = 0; p < np; p++) t[p] = qd_q8(src[p] * sinv, lo_f, hi_f, zero);
            }
            qd_transpose_u8(tile, QD_TILE_P, out + pb * C + cb, C, nc, np);
        }
    }
}

/* dequantize: pixels [p0, p1) of one image, q (HW, C) u8 -> out (C, HW) float32 = float(q - zero) * scale. */
QD_ATTR QD_UNUSED static void QD_FN(qd_dequant_nhwc_)(const uint8_t *q, ptrdiff_t C, ptrdiff_t HW, ptrdiff_t p0,
                                            ptrdiff_t p1, int32_t zero, float scale, float *out) {
    uint8_t tile[QD_TILE_C * QD_TILE_P]; /* [c][p] */
    for (ptrdiff_t pb = p0; pb < p1; pb += QD_TILE_P) {
        const ptrdiff_t np = p1 - pb < QD_TILE_P ? p1 - pb : QD_TILE_P;
        for (ptrdiff_t cb = 0; cb < C; cb += QD_TILE_C) {
            const ptrdiff_t nc = C - cb < QD_TILE_C ? C - cb : QD_TILE_C;
            qd_transpose_u8(q + pb * C + cb, C, tile, QD_TILE_P, np, nc);
            for (ptrdiff_t c = 0; c < nc; c++) {
                const uint8_t *t = tile + c * QD_TILE_P;
                float *dst = out + (cb + c) * HW + pb;
                for (ptrdiff_t p = 0; p < np; p++) dst[p] = (float)((int32_t)t[p] - zero) * scale;
            }
        }
    }
}

/* quantize_rows: n contiguous floats -> u8. */
QD_ATTR QD_UNUSED static void QD_FN(qd_quant_rows_)(const float *x, ptrdiff_t n, float sinv, float lo_f, float hi_f,
                                          int32_t zero, uint8_t *out) {
    for (ptrdiff_t i = 0; i < n; i++) out[i] = qd_q8(x[i] * sinv, lo_f, hi_f, zero);
}

/* dequantize_rows: rows of K, scale per column (scale[k]) or one (scale_step 0). */
QD_ATTR QD_UNUSED static void QD_FN(qd_dequant_rows_)(const uint8_t *q, ptrdiff_t rows, ptrdiff_t K, int32_t zero,
                                            const float *scale, int per_column, float *out) {
    for (ptrdiff_t r = 0; r < rows; r++) {
        const uint8_t *src = q + r * K;
        float *dst = out + r * K;
        if (per_column)
            for (ptrdiff_t k = 0; k < K; k++) dst[k] = (float)((int32_t)src[k] - zero) * scale[k];
        else {
            const float s = scale[0];
            for (ptrdiff_t k = 0; k < K; k++) dst[k] = (float)((int32_t)src[k] - zero) * s;
        }
    }
}

/* requantize: out = qd_q8(float(q - in_zero) * multiplier). */
QD_ATTR QD_UNUSED static void QD_FN(qd_requant_)(const uint8_t *q, ptrdiff_t n, int32_t in_zero, float multiplier,
                                       float lo_f, float hi_f, int32_t out_zero, uint8_t *out) {
    for (ptrdiff_t i = 0; i < n; i++)
        out[i] = qd_q8((float)((int32_t)q[i] - in_zero) * multiplier, lo_f, hi_f, out_zero);
}

/* add: f = float(a - az) * as + float(b - bz) * bs (two products, one add, no fma); out = qd_q8(f * out_sinv). */
QD_ATTR QD_UNUSED static void QD_FN(qd_add_)(const uint8_t *a, const uint8_t *b, ptrdiff_t n, int32_t az, float as,
                                   int32_t bz, float bs, float out_sinv, float lo_f, float hi_f, int32_t out_zero,
                                   uint8_t *out) {
    for (ptrdiff_t i = 0; i < n; i++) {
        const float fa = (float)((int32_t)a[i] - az) * as;
        const float fb = (float)((int32_t)b[i] - bz) * bs;
        const float f = fa + fb;
        out[i] = qd_q8(f * out_sinv, lo_f, hi_f, out_zero);
    }
}

/* The scalar chain (qd_chain_span, chain.h) over n elements. */
QD_ATTR QD_UNUSED static void QD_FN(qd_chain_f32_)(const float *x, ptrdiff_t n, const float *k, int hs, float *y,
                                         uint8_t *q, float sinv, float lo_f, float hi_f, int32_t zero) {
    qd_chain_span(x, n, k, hs, y, q, sinv, lo_f, hi_f, zero);
}

/* max pool, one output row: the max over the window's valid taps (padding ignored; every window has one). */
QD_ATTR QD_UNUSED static void QD_FN(qd_maxpool_row_)(const qd_geom *g, const uint8_t *x, ptrdiff_t oh, uint8_t *out) {
    const ptrdiff_t C = g->c;
    for (ptrdiff_t ow = 0; ow < g->ow; ow++) {
        uint8_t *__restrict o = out + ow * C;
        memset(o, 0, (size_t)C);
        for (ptrdiff_t i = 0; i < g->kh; i++) {
            const ptrdiff_t ih = oh * g->sh - g->top + i * g->dh;
            if (ih < 0 || ih >= g->h) continue;
            for (ptrdiff_t j = 0; j < g->kw; j++) {
                const ptrdiff_t iw = ow * g->sw - g->left + j * g->dw;
                if (iw < 0 || iw >= g->w) continue;
                const uint8_t *__restrict p = x + (ih * g->w + iw) * C;
                for (ptrdiff_t c = 0; c < C; c++) o[c] = p[c] > o[c] ? p[c] : o[c];
            }
        }
    }
}

/* average pool, one output row: s = sum over valid taps of (x - zero) (int32), count = valid taps (exclusive) or
 * KH*KW; out = qd_q8(float(s) / float(count)) clamped to [0, 255]. sum is a scratch of C int32. */
QD_ATTR QD_UNUSED static void QD_FN(qd_avgpool_row_)(const qd_geom *g, const uint8_t *x, ptrdiff_t oh, int exclusive,
                                           int32_t zero, int32_t *__restrict sum, uint8_t *out) {
    const ptrdiff_t C = g->c;
    for (ptrdiff_t ow = 0; ow < g->ow; ow++) {
        int32_t count = 0;
        for (ptrdiff_t c = 0; c < C; c++) sum[c] = 0;
        for (ptrdiff_t i = 0; i < g->kh; i++) {
            const ptrdiff_t ih = oh * g->sh - g->top + i * g->dh;
            if (ih < 0 || ih >= g->h) continue;
            for (ptrdiff_t j = 0; j < g->kw; j++) {
                const ptrdiff_t iw = ow * g->sw - g->left + j * g->dw;
                if (iw < 0 || iw >= g->w) continue;
                const uint8_t *p = x + (ih * g->w + iw) * C;
                for (ptrdiff_t c = 0; c < C; c++) sum[c] += (int32_t)p[c];
                count++;
            }
        }
        const int32_t offset = count * zero;
        const float div = (float)(exclusive ? count : (int32_t)(g->kh * g->kw));
        uint8_t *o = out + ow * C;
        for (ptrdiff_t c = 0; c < C; c++)
            o[c] = qd_q8((float)(sum[c] - offset) / div, (float)-zero, (float)(255 - zero), zero);
    }
}

/* global average pool of one image (HW, C): out[c] = float32(double(sum(x - zero)) / HW * scale), the sum
 * exact in int64. sum is a scratch of C int64. */
QD_ATTR QD_UNUSED static void QD_FN(qd_gap_)(const uint8_t *x, ptrdiff_t HW, ptrdiff_t C, int32_t zero, double scale,
                                   int64_t *__restrict sum, float *out) {
    for (ptrdiff_t c = 0; c < C; c++) sum[c] = 0;
    for (ptrdiff_t p = 0; p < HW; p++) {
        const uint8_t *src = x + p * C;
        for (ptrdiff_t c = 0; c < C; c++) sum[c] += src[c];
    }
    for (ptrdiff_t c = 0; c < C; c++)
        out[c] = (float)((double)(sum[c] - (int64_t)zero * HW) / (double)HW * scale);
}

/* im2col of output row oh: out (OW, KH*KW*C) rows, column order (kh, kw, c), padded taps = pad. A kernel row
 * whose taps are all inside (dilation 1) is one copy of KW*C bytes. The fast-path test compares iw0 with
 * w - kw (both in (-2^31, 2^31) under the qd_geom bounds) rather than forming iw0 + (kw-1)*dw. */
QD_ATTR QD_UNUSED static void QD_FN(qd_im2col_row_)(const qd_geom *g, const uint8_t *x, ptrdiff_t oh, uint8_t pad,
                                          uint8_t *out) {
    const ptrdiff_t C = g->c, KC = g->kw * C;
    for (ptrdiff_t ow = 0; ow < g->ow; ow++) {
        uint8_t *dst = out + ow * g->kh * KC;
        const ptrdiff_t iw0 = ow * g->sw - g->left;
        const int row_inside = g->dw == 1 && iw0 >= 0 && iw0 <= g->w - g->kw;  /* taps iw0 .. iw0 + kw - 1 */
        for (ptrdiff_t i = 0; i < g->kh; i++, dst += KC) {
            const ptrdiff_t ih = oh * g->sh - g->top + i * g->dh;
            if (ih < 0 || ih >= g->h) {
                memset(dst, pad, (size_t)KC);
                continue;
            }
            const uint8_t *row = x + ih * g->w * C;
            if (row_inside) {
                memcpy(dst, row + iw0 * C, (size_t)KC);
                continue;
            }
            for (ptrdiff_t j = 0; j < g->kw; j++) {
                const ptrdiff_t iw = iw0 + j * g->dw;
                if (iw >= 0 && iw < g->w) memcpy(dst + j * C, row + iw * C, (size_t)C);
                else memset(dst + j * C, pad, (size_t)C);
            }
        }
    }
}

#undef QD_FN
