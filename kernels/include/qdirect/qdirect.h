/* qdirect/qdirect.h: the C side of kernels/qdirect.pyx. Instantiates the plain kernels for every path and
 * dispatches on the path the caller chose (QD_PORTABLE, or QD_AVX2 when qd_path_supported says the CPU has it).
 *
 *   path      depthwise                                   everything else
 *   portable  generic.h, baseline ISA                      generic.h, baseline ISA
 *   avx2      depthwise_avx2.h intrinsics                  generic.h compiled with target("avx2")
 *   avx512    depthwise_avx512.h intrinsics (VNNI)         the avx2 instantiation
 *
 * All paths compute the same integers and the same float32 operations, so they give the same bits.
 */
#ifndef QDIRECT_QDIRECT_H
#define QDIRECT_QDIRECT_H

#include "common.h"

#define QD_SFX _portable
#define QD_ATTR
#include "generic.h"
#undef QD_SFX
#undef QD_ATTR

#if QD_X86
#define QD_SFX _avx2
#define QD_ATTR QD_AVX2_ATTR
#include "generic.h"
#undef QD_SFX
#undef QD_ATTR
#endif

#include "depthwise_avx2.h"
#include "depthwise_avx512.h"

/* Depthwise set-up, in one workspace: the folded bias (bias - a_zero * sum_t w, wrapping int32), the zero row
 * (W*C + 64 bytes of a_zero) and, for the AVX2 path, the per-pixel and flat packs (flat only if flat_lanes > 0:
 * the stride is 1 and lcm(C, 32) is small enough). d->g, d->w and d->scale must be set. With ws == NULL, only
 * returns the workspace size in bytes; ws must be 64-byte aligned. */
static inline size_t qd_align64(size_t n) { return (n + 63) & ~(size_t)63; }

static size_t qd_dw_prepare(qd_dw *d, int path, ptrdiff_t flat_lanes, const int32_t *bias, int32_t a_zero,
                            char *ws) {
    const ptrdiff_t C = d->g.c, K = d->g.kh * d->g.kw;
    /* block geometry of the vector path: lanes per block, bytes of packed weights per block */
    const ptrdiff_t lanes = path == QD_AVX512 ? 64 : path == QD_AVX2 ? 32 : 0;
    const ptrdiff_t wbytes = path == QD_AVX512 ? (K + 3) / 4 * 256 : (K + 1) / 2 * 128;
    const ptrdiff_t pix_blocks = lanes ? (C + lanes - 1) / lanes : 0;
    const ptrdiff_t flat_blocks = lanes ? flat_lanes / lanes : 0;
    const size_t o_bias = 0, o_zero = o_bias + qd_align64((size_t)C * 4);
    const size_t o_pw = o_zero + qd_align64((size_t)(d->g.w * C + 64));
    const size_t o_pb = o_pw + qd_align64((size_t)(pix_blocks * wbytes));
    const size_t o_ps = o_pb + qd_align64((size_t)(pix_blocks * lanes * 4));
    const size_t o_fw = o_ps + qd_align64((size_t)(pix_blocks * lanes * 4));
    const size_t o_fb = o_fw + qd_align64((size_t)(flat_blocks * wbytes));
    const size_t o_fs = o_fb + qd_align64((size_t)(flat_blocks * lanes * 4));
    const size_t total = o_fs + qd_align64((size_t)(flat_blocks * lanes * 4));
    if (!ws) return total;
    int32_t *folded = (int32_t *)(ws + o_bias);
    for (ptrdiff_t c = 0; c < C; c++) {
        uint32_t sum_w = 0;
        for (ptrdiff_t t = 0; t < K; t++) sum_w += (uint32_t)(int32_t)d->w[t * C + c];
        folded[c] = (int32_t)((uint32_t)(bias ? bias[c] : 0) - (uint32_t)a_zero * sum_w);
    }
    memset(ws + o_zero, (int)a_zero, (size_t)(d->g.w * C + 64));
    d->bias = folded;
    d->zero_row = (const uint8_t *)(ws + o_zero);
    d->pix_blocks = pix_blocks;
    d->flat_blocks = flat_blocks;
    d->pix_w = ws + o_pw;
    d->pix_b = (const int32_t *)(ws + o_pb);
    d->pix_s = (const float *)(ws + o_ps);
    d->flat_w = ws + o_fw;
    d->flat_b = (const int32_t *)(ws + o_fb);
    d->flat_s = (const float *)(ws + o_fs);
    for (int flat = 0; flat < 2; flat++) {
        const ptrdiff_t blocks = flat ? flat_blocks : pix_blocks;
        if (!blocks) continue;
        char *pw = ws + (flat ? o_fw : o_pw);
        int32_t *pb = (int32_t *)(ws + (flat ? o_fb : o_pb));
        float *ps = (float *)(ws + (flat ? o_fs : o_ps));
        if (path == QD_AVX512) qd_dw_pack_avx512(d->w, folded, d->scale, C, K, blocks, flat, (int8_t *)pw, pb, ps);
        else qd_dw_pack_avx2(d->w, folded, d->scale, C, K, blocks, flat, (int16_t *)pw, pb, ps);
    }
    return total;
}

#if QD_X86
#define QD_PICK(path, name, ...) \
    do { if ((path) >= QD_AVX2) name##_avx2(__VA_ARGS__); else name##_portable(__VA_ARGS__); } while (0)
#else
#define QD_PICK(path, name, ...) name##_portable(__VA_ARGS__)
#endif

static void qd_dw_row(int path, const qd_dw *d, const uint8_t *x, ptrdiff_t oh, char *out) {
#if QD_X86
    if (path == QD_AVX512) { qd_dw_row_avx512_kernel(d, x, oh, out); return; }
    if (path == QD_AVX2) { qd_dw_row_avx2_kernel(d, x, oh, out); return; }
#endif
    (void)path;
    qd_dw_row__portable(d, x, oh, out);
}

static void qd_quant_nchw(int path, const float *x, ptrdiff_t C, ptrdiff_t HW, ptrdiff_t p0, ptrdiff_t p1,
                          float sinv, float lo_f, float hi_f, int32_t zero, uint8_t *out) {
    QD_PICK(path, qd_quant_nchw_, x, C, HW, p0, p1, sinv, lo_f, hi_f, zero, out);
}

static void qd_dequant_nhwc(int path, const uint8_t *q, ptrdiff_t C, ptrdiff_t HW, ptrdiff_t p0, ptrdiff_t p1,
                            int32_t zero, float scale, float *out) {
    QD_PICK(path, qd_dequant_nhwc_, q, C, HW, p0, p1, zero, scale, out);
}

static void qd_quant_rows(int path, const float *x, ptrdiff_t n, float sinv, float lo_f, float hi_f,
                          int32_t zero, uint8_t *out) {
    QD_PICK(path, qd_quant_rows_, x, n, sinv, lo_f, hi_f, zero, out);
}

static void qd_dequant_rows(int path, const uint8_t *q, ptrdiff_t rows, ptrdiff_t K, int32_t zero,
                            const float *scale, int per_column, float *out) {
    QD_PICK(path, qd_dequant_rows_, q, rows, K, zero, scale, per_column, out);
}

static void qd_requant(int path, const uint8_t *q, ptrdiff_t n, int32_t in_zero, float multiplier, float lo_f,
                       float hi_f, int32_t out_zero, uint8_t *out) {
    QD_PICK(path, qd_requant_, q, n, in_zero, multiplier, lo_f, hi_f, out_zero, out);
}

static void qd_add(int path, const uint8_t *a, const uint8_t *b, ptrdiff_t n, int32_t az, float as, int32_t bz,
                   float bs, float out_sinv, float lo_f, float hi_f, int32_t out_zero, uint8_t *out) {
    QD_PICK(path, qd_add_, a, b, n, az, as, bz, bs, out_sinv, lo_f, hi_f, out_zero, out);
}

static void qd_add_f32(int path, const float *a, const float *b, ptrdiff_t n, int relu, float *y, uint8_t *q,
                       float sinv, float lo_f, float hi_f, int32_t zero) {
    QD_PICK(path, qd_add_f32_, a, b, n, relu, y, q, sinv, lo_f, hi_f, zero);
}

static void qd_chain_f32(int path, const float *x, ptrdiff_t n, const float *k, int hs, float *y, uint8_t *q,
                         float sinv, float lo_f, float hi_f, int32_t zero) {
    QD_PICK(path, qd_chain_f32_, x, n, k, hs, y, q, sinv, lo_f, hi_f, zero);
}

static void qd_chmul_f32(int path, const float *x, const float *s, ptrdiff_t n, ptrdiff_t C, float *y, uint8_t *q,
                         float sinv, float lo_f, float hi_f, int32_t zero) {
    QD_PICK(path, qd_chmul_f32_, x, s, n, C, y, q, sinv, lo_f, hi_f, zero);
}

static void qd_maxpool_row(int path, const qd_geom *g, const uint8_t *x, ptrdiff_t oh, uint8_t *out) {
    QD_PICK(path, qd_maxpool_row_, g, x, oh, out);
}

static void qd_avgpool_row(int path, const qd_geom *g, const uint8_t *x, ptrdiff_t oh, int exclusive,
                           int32_t zero, int32_t *sum, uint8_t *out) {
    QD_PICK(path, qd_avgpool_row_, g, x, oh, exclusive, zero, sum, out);
}

static void qd_gap(int path, const uint8_t *x, ptrdiff_t HW, ptrdiff_t C, int32_t zero, double scale,
                   int64_t *sum, float *out) {
    QD_PICK(path, qd_gap_, x, HW, C, zero, scale, sum, out);
}

static void qd_gap_f32(int path, const float *x, ptrdiff_t HW, ptrdiff_t C, float *out) {
    QD_PICK(path, qd_gap_f32_, x, HW, C, out);
}

static void qd_im2col_row(int path, const qd_geom *g, const uint8_t *x, ptrdiff_t oh, uint8_t pad,
                          uint8_t *out) {
    QD_PICK(path, qd_im2col_row_, g, x, oh, pad, out);
}

#endif
