/* qdirect/qdirect.h: the C side of kernels/qdirect.pyx. Instantiates the plain kernels for every path and
 * lists them in one path table, QD_PATHS, that the wrapper calls through (an entry the CPU runs: qd_path_supported).
 *
 *   path      depthwise                                   everything else
 *   portable  generic.h, baseline ISA                      generic.h, baseline ISA
 *   avx2      depthwise_avx2.h intrinsics                  generic.h compiled with target("avx2")
 *   avx512    depthwise_avx512.h intrinsics (VNNI)         the avx2 instantiation
 * The small-K conv (smallk.h): its own plain-C row (portable), AVX2 row (avx2) and AVX-512 VNNI row (avx512).
 *
 * All paths compute the same integers and the same float32 operations, so they give the same bits.
 */
#ifndef QDIRECT_QDIRECT_H
#define QDIRECT_QDIRECT_H

#include <stdlib.h>

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
#include "smallk.h"

/* Depthwise set-up, in one workspace: the folded bias (bias - a_zero * sum_t w, wrapping int32), the zero row
 * (W*C + 64 bytes of a_zero) and, for the vector paths, the per-pixel and flat packs (flat only if flat_lanes > 0:
 * the stride is 1 and lcm(C, 32) is small enough); for AVX2 also the packs of the partial kernel-row ranges
 * that edge output rows read (a 5x5 kernel on a 2-3 pixel high map skips 40-60% of its taps), on small maps. d->g, d->w and
 * d->scale must be set. With ws == NULL, only returns the workspace size in bytes; ws must be 64-byte aligned. */
static size_t qd_dw_prepare(qd_dw *d, int path, ptrdiff_t flat_lanes, const int32_t *bias, int32_t a_zero,
                            char *ws) {
    const ptrdiff_t C = d->g.c, kw = d->g.kw;
    /* block geometry of the vector path: lanes per block, bytes of packed weights per block */
    const ptrdiff_t lanes = path == QD_AVX512 ? 64 : path == QD_AVX2 ? 32 : 0;
    const ptrdiff_t pix_blocks = lanes ? (C + lanes - 1) / lanes : 0;
    const ptrdiff_t flat_blocks = lanes ? flat_lanes / lanes : 0;
    /* the kernel-row ranges to pack: [0, KH), then (AVX2) each partial range an edge output row reads */
    int r0[QD_MAX_RANGES + 1] = {0}, r1[QD_MAX_RANGES + 1] = {(int)d->g.kh}, nr = 1;
    /* only where edge rows are >= 1/8 of the rows: on a large map the padded taps they skip are ~1% of the
     * work, less than packing the ranges costs (3x3 on 56 rows: 2 edge rows, a third of their taps) */
    ptrdiff_t edge = 0;
    for (ptrdiff_t oh = 0; path == QD_AVX2 && oh < d->g.oh; oh++) {
        int a, b;
        qd_dw_valid_rows(&d->g, oh, &a, &b);
        edge += a > 0 || b < d->g.kh;
    }
    for (ptrdiff_t oh = 0; path == QD_AVX2 && 8 * edge >= d->g.oh && oh < d->g.oh; oh++) {
        int a, b, seen = 0;
        qd_dw_valid_rows(&d->g, oh, &a, &b);
        for (int r = 0; r < nr; r++) seen |= r0[r] == a && r1[r] == b;
        if (!seen && b > a && nr <= QD_MAX_RANGES) {
            r0[nr] = a;
            r1[nr++] = b;
        }
    }
    size_t off = qd_align64((size_t)C * 4) + qd_align64((size_t)(d->g.w * C + 64));  /* folded bias, zero row */
    size_t o_pack[QD_MAX_RANGES + 1][6];  /* per range: pix w, b, s, flat w, b, s */
    for (int r = 0; r < nr; r++) {
        const ptrdiff_t k = (r1[r] - r0[r]) * kw;
        const ptrdiff_t wbytes = path == QD_AVX512 ? (k + 3) / 4 * 256 : (k + 1) / 2 * 128;
        const size_t sizes[6] = {(size_t)(pix_blocks * wbytes), (size_t)(pix_blocks * lanes * 4),
                                 (size_t)(pix_blocks * lanes * 4), (size_t)(flat_blocks * wbytes),
                                 (size_t)(flat_blocks * lanes * 4), (size_t)(flat_blocks * lanes * 4)};
        for (int j = 0; j < 6; j++) {
            o_pack[r][j] = off;
            off += qd_align64(sizes[j]);
        }
    }
    if (!ws) return off;
    int32_t *folded = (int32_t *)ws;
    int32_t *range_bias = (int32_t *)malloc((size_t)(C > 0 ? C : 1) * 4);
    if (!range_bias) nr = 1;  /* no partial packs: every row reads its padded taps (same numbers) */
    const size_t o_zero = qd_align64((size_t)C * 4);
    memset(ws + o_zero, (int)a_zero, (size_t)(d->g.w * C + 64));
    d->zero_row = (const uint8_t *)(ws + o_zero);
    d->pix_blocks = pix_blocks;
    d->flat_blocks = flat_blocks;
    d->nranges = nr - 1;
    for (int r = 0; r < nr; r++) {
        /* folded bias of the taps in rows [i0, i1): bias - a_zero * sum of their weights (wrapping int32), so
         * acc = folded + sum over those taps of x * w; padded taps (left / right, or rows of the full range)
         * read a_zero and add a_zero * w back */
        const ptrdiff_t t0 = r0[r] * kw, t1 = r1[r] * kw;
        int32_t *fb = r == 0 ? folded : range_bias;
        for (ptrdiff_t c = 0; c < C; c++) {
            uint32_t sum_w = 0;
            for (ptrdiff_t t = t0; t < t1; t++) sum_w += (uint32_t)(int32_t)d->w[t * C + c];
            fb[c] = (int32_t)((uint32_t)(bias ? bias[c] : 0) - (uint32_t)a_zero * sum_w);
        }
        const void *pw[2] = {ws + o_pack[r][0], ws + o_pack[r][3]};
        const int32_t *pb[2] = {(const int32_t *)(ws + o_pack[r][1]), (const int32_t *)(ws + o_pack[r][4])};
        const float *ps[2] = {(const float *)(ws + o_pack[r][2]), (const float *)(ws + o_pack[r][5])};
        for (int flat = 0; flat < 2; flat++) {
            const ptrdiff_t blocks = flat ? flat_blocks : pix_blocks;
            if (!blocks) continue;
            if (path == QD_AVX512)
                qd_dw_pack_avx512(d->w + t0 * C, fb, d->scale, C, t1 - t0, blocks, flat, (int8_t *)pw[flat],
                                  (int32_t *)pb[flat], (float *)ps[flat]);
            else
                qd_dw_pack_avx2(d->w + t0 * C, fb, d->scale, C, t1 - t0, blocks, flat, (int16_t *)pw[flat],
                                (int32_t *)pb[flat], (float *)ps[flat]);
        }
        if (r == 0) {
            d->bias = folded;
            d->pix_w = pw[0]; d->pix_b = pb[0]; d->pix_s = ps[0];
            d->flat_w = pw[1]; d->flat_b = pb[1]; d->flat_s = ps[1];
        } else {
            d->ranges[r - 1].i0 = r0[r]; d->ranges[r - 1].i1 = r1[r];
            d->ranges[r - 1].pix_w = pw[0]; d->ranges[r - 1].pix_b = pb[0]; d->ranges[r - 1].pix_s = ps[0];
            d->ranges[r - 1].flat_w = pw[1]; d->ranges[r - 1].flat_b = pb[1]; d->ranges[r - 1].flat_s = ps[1];
        }
    }
    free(range_bias);
    return off;
}

/* The paths, best first ("portable" last): {name, the RQ_CPU_* features it runs on, its id (the depthwise
 * packing of qd_dw_prepare), its functions}. The wrapper picks an entry once per call (refquant/_paths.py
 * chooses which) and calls through it. */
typedef struct {
    const char *name;
    unsigned needs;
    int id;
    void (*dw_row)(const qd_dw *d, const uint8_t *x, ptrdiff_t oh, char *out);
    void (*quant_nchw)(const float *x, ptrdiff_t C, ptrdiff_t HW, ptrdiff_t p0, ptrdiff_t p1, float sinv, float lo_f,
                       float hi_f, int32_t zero, uint8_t *out);
    void (*dequant_nhwc)(const uint8_t *q, ptrdiff_t C, ptrdiff_t HW, ptrdiff_t p0, ptrdiff_t p1, int32_t zero,
                         float scale, float *out);
    void (*quant_rows)(const float *x, ptrdiff_t n, float sinv, float lo_f, float hi_f, int32_t zero, uint8_t *out);
    void (*dequant_rows)(const uint8_t *q, ptrdiff_t rows, ptrdiff_t K, int32_t zero, const float *scale,
                         int per_column, float *out);
    void (*requant)(const uint8_t *q, ptrdiff_t n, int32_t in_zero, float multiplier, float lo_f, float hi_f,
                    int32_t out_zero, uint8_t *out);
    void (*add)(const uint8_t *a, const uint8_t *b, ptrdiff_t n, int32_t az, float as, int32_t bz, float bs,
                float out_sinv, float lo_f, float hi_f, int32_t out_zero, uint8_t *out);
    void (*chain_f32)(const float *x, ptrdiff_t n, const float *k, int hs, float *y, uint8_t *q, float sinv,
                      float lo_f, float hi_f, int32_t zero);
    void (*maxpool_row)(const qd_geom *g, const uint8_t *x, ptrdiff_t oh, uint8_t *out);
    void (*avgpool_row)(const qd_geom *g, const uint8_t *x, ptrdiff_t oh, int exclusive, int32_t zero, int32_t *sum,
                        uint8_t *out);
    void (*gap)(const uint8_t *x, ptrdiff_t HW, ptrdiff_t C, int32_t zero, double scale, int64_t *sum, float *out);
    void (*im2col_row)(const qd_geom *g, const uint8_t *x, ptrdiff_t oh, uint8_t pad, uint8_t *out);
    void (*sk_row)(const qd_sk *s, const uint8_t *x, ptrdiff_t oh, char *out); /* smallk.h */
} qd_path;

/* The plain kernels of generic.h instantiated with suffix SFX, in the order of qd_path's fields after dw_row. */
#define QD_GENERIC(SFX)                                                                                         \
    qd_quant_nchw_##SFX, qd_dequant_nhwc_##SFX, qd_quant_rows_##SFX, qd_dequant_rows_##SFX, qd_requant_##SFX,   \
        qd_add_##SFX, qd_chain_f32_##SFX, qd_maxpool_row_##SFX, qd_avgpool_row_##SFX, qd_gap_##SFX,              \
        qd_im2col_row_##SFX

static const qd_path QD_PATHS[] = {
#if QD_X86
    {"avx512", RQ_CPU_AVX512F | RQ_CPU_AVX512BW | RQ_CPU_AVX512VNNI, QD_AVX512, qd_dw_row_avx512_kernel,
     QD_GENERIC(_avx2), qd_sk_row_avx512},
    {"avx2", RQ_CPU_AVX2, QD_AVX2, qd_dw_row_avx2_kernel, QD_GENERIC(_avx2), qd_sk_row_avx2},
#endif
    {"portable", 0u, QD_PORTABLE, qd_dw_row__portable, QD_GENERIC(_portable), qd_sk_row_portable},
};
#define QD_NPATHS ((int)(sizeof QD_PATHS / sizeof QD_PATHS[0]))

/* 1 if this CPU can run path i. */
QD_UNUSED static int qd_path_supported(int i) { return rq_cpu_has(QD_PATHS[i].needs); }

#endif
