/* qdirect/common.h: shared types and scalar helpers of the direct INT8 kernels (kernels/qdirect.pyx).
 *
 * Every INT8 tensor is a uint8 NHWC array plus (scale, zero). The kernels round with rint (ties to even) on a
 * float32 value and clamp: the one scalar definition of that step, qd_q8, is in chain.h, used by every path.
 * Compile with -ffp-contract=off: a fused multiply-add would change the float32 products the twin computes.
 */
#ifndef QDIRECT_COMMON_H
#define QDIRECT_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "chain.h"
#include "cpu_features.h"

/* Path ids (the depthwise packing each path uses); the paths themselves are the table QD_PATHS of qdirect.h. */
enum { QD_PORTABLE = 0, QD_AVX2 = 1, QD_AVX512 = 2 };

#define QD_MAX_TAPS 256 /* KH*KW of a depthwise / pooling window (checked by the caller) */
#define QD_MAX_RANGES 16 /* partial kernel-row packs of a depthwise conv (2 per padded kernel row at most) */

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define QD_X86 1
#define QD_AVX2_ATTR __attribute__((target("avx2")))
#else
#define QD_X86 0
#endif

#define QD_UNUSED __attribute__((unused)) /* a path may not call every instantiation of generic.h */

/* Convolution / pooling window geometry on an NHWC image (H, W, C); padding is (top, left, bottom, right).
 *
 * Bounds, checked by the caller (refquant.reference.im2col.check_geometry, shared by every wrapper): every field
 * lies in [0, 2^31), the padded extents h + top + bottom and w + left + right too, and the dilated window fits
 * them (oh, ow >= 1); c and the output sizes are bounded by the arrays actually allocated. So a product of two
 * fields plus a few more such terms (oh*sh - top + i*dh, ow*sw - left + j*dw, (kw-1)*dw, ih*w*c) stays far
 * below 2^63: no index arithmetic below can wrap ptrdiff_t. */
typedef struct {
    ptrdiff_t h, w, c;
    ptrdiff_t kh, kw, sh, sw, top, left, dh, dw;
    ptrdiff_t oh, ow;
} qd_geom;

static inline size_t qd_align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* The start of the range [lo, hi) of output indices o in [0, count) whose input index i0 + o*step + reach
 * stays inside [0, size) for every reach in [0, span]: the "interior" where no tap touches the padding.
 * Needs |i0|, step, size, count < 2^31 and span < 2^62 (the qd_geom bounds): no term below can wrap. A span
 * that reaches past the input leaves the interior empty. */
static inline void qd_interior(ptrdiff_t i0, ptrdiff_t step, ptrdiff_t span, ptrdiff_t size, ptrdiff_t count,
                               ptrdiff_t *lo, ptrdiff_t *hi) {
    ptrdiff_t a = i0 >= 0 ? 0 : (-i0 + step - 1) / step;            /* first o with i0 + o*step >= 0 */
    ptrdiff_t b = 0;
    if (span < size) {                                              /* else no o has a window inside */
        const ptrdiff_t last = size - 1 - span - i0;                /* need o*step <= last */
        b = last < 0 ? 0 : last / step + 1;
    }
    if (a > count) a = count;
    if (b > count) b = count;
    if (b < a) b = a;
    *lo = a;
    *hi = b;
}

/* Byte transpose: dst[j * dst_stride + i] = src[i * src_stride + j] for i < rows, j < cols. Full 16 x 16 blocks
 * go through SSE2 unpacks (4 stages of 16, baseline on x86-64), the edges byte by byte; data movement only, so
 * every path gives the same bytes. */
#if defined(__SSE2__)
#include <emmintrin.h>
static inline void qd_transpose16_sse2(const uint8_t *src, ptrdiff_t ss, uint8_t *dst, ptrdiff_t ds) {
    __m128i r[16], t[16], u[16];
    for (int i = 0; i < 16; i++) r[i] = _mm_loadu_si128((const __m128i *)(src + i * ss));
    for (int i = 0; i < 8; i++) {  /* t[i]: rows 2i, 2i+1 interleaved, columns 0-7; t[i+8]: columns 8-15 */
        t[i] = _mm_unpacklo_epi8(r[2 * i], r[2 * i + 1]);
        t[i + 8] = _mm_unpackhi_epi8(r[2 * i], r[2 * i + 1]);
    }
    for (int j = 0; j < 4; j++) {  /* u[4g + j]: columns 4g..4g+3 of rows 4j..4j+3 */
        u[j] = _mm_unpacklo_epi16(t[2 * j], t[2 * j + 1]);
        u[4 + j] = _mm_unpackhi_epi16(t[2 * j], t[2 * j + 1]);
        u[8 + j] = _mm_unpacklo_epi16(t[8 + 2 * j], t[8 + 2 * j + 1]);
        u[12 + j] = _mm_unpackhi_epi16(t[8 + 2 * j], t[8 + 2 * j + 1]);
    }
    for (int g = 0; g < 4; g++) {  /* then 8 rows of two columns, then 16 rows of one column */
        const __m128i v0 = _mm_unpacklo_epi32(u[4 * g], u[4 * g + 1]), v1 = _mm_unpackhi_epi32(u[4 * g], u[4 * g + 1]);
        const __m128i v2 = _mm_unpacklo_epi32(u[4 * g + 2], u[4 * g + 3]), v3 = _mm_unpackhi_epi32(u[4 * g + 2], u[4 * g + 3]);
        _mm_storeu_si128((__m128i *)(dst + (4 * g + 0) * ds), _mm_unpacklo_epi64(v0, v2));
        _mm_storeu_si128((__m128i *)(dst + (4 * g + 1) * ds), _mm_unpackhi_epi64(v0, v2));
        _mm_storeu_si128((__m128i *)(dst + (4 * g + 2) * ds), _mm_unpacklo_epi64(v1, v3));
        _mm_storeu_si128((__m128i *)(dst + (4 * g + 3) * ds), _mm_unpackhi_epi64(v1, v3));
    }
}
#endif

static inline void qd_transpose_u8(const uint8_t *src, ptrdiff_t ss, uint8_t *dst, ptrdiff_t ds, ptrdiff_t rows,
                                   ptrdiff_t cols) {
    ptrdiff_t i0 = 0;
#if defined(__SSE2__)
    for (; i0 + 16 <= rows; i0 += 16) {
        ptrdiff_t j0 = 0;
        for (; j0 + 16 <= cols; j0 += 16) qd_transpose16_sse2(src + i0 * ss + j0, ss, dst + j0 * ds + i0, ds);
        for (ptrdiff_t j = j0; j < cols; j++)
            for (ptrdiff_t i = i0; i < i0 + 16; i++) dst[j * ds + i] = src[i * ss + j];
    }
#endif
    for (ptrdiff_t j = 0; j < cols; j++)
        for (ptrdiff_t i = i0; i < rows; i++) dst[j * ds + i] = src[i * ss + j];
}

/* The same for 4-byte words (float32 moved as bits): 4 x 4 blocks through SSE2 unpacks, the edges one by one. */
static inline void qd_transpose_u32(const uint32_t *src, ptrdiff_t ss, uint32_t *dst, ptrdiff_t ds, ptrdiff_t rows,
                                    ptrdiff_t cols) {
    ptrdiff_t i0 = 0;
#if defined(__SSE2__)
    for (; i0 + 4 <= rows; i0 += 4) {
        ptrdiff_t j0 = 0;
        for (; j0 + 4 <= cols; j0 += 4) {
            const uint32_t *s = src + i0 * ss + j0;
            uint32_t *d = dst + j0 * ds + i0;
            const __m128i r0 = _mm_loadu_si128((const __m128i *)s), r1 = _mm_loadu_si128((const __m128i *)(s + ss));
            const __m128i r2 = _mm_loadu_si128((const __m128i *)(s + 2 * ss));
            const __m128i r3 = _mm_loadu_si128((const __m128i *)(s + 3 * ss));
            const __m128i t0 = _mm_unpacklo_epi32(r0, r1), t1 = _mm_unpacklo_epi32(r2, r3);  /* columns 0, 1 */
            const __m128i t2 = _mm_unpackhi_epi32(r0, r1), t3 = _mm_unpackhi_epi32(r2, r3);  /* columns 2, 3 */
            _mm_storeu_si128((__m128i *)d, _mm_unpacklo_epi64(t0, t1));
            _mm_storeu_si128((__m128i *)(d + ds), _mm_unpackhi_epi64(t0, t1));
            _mm_storeu_si128((__m128i *)(d + 2 * ds), _mm_unpacklo_epi64(t2, t3));
            _mm_storeu_si128((__m128i *)(d + 3 * ds), _mm_unpackhi_epi64(t2, t3));
        }
        for (ptrdiff_t j = j0; j < cols; j++)
            for (ptrdiff_t i = i0; i < i0 + 4; i++) dst[j * ds + i] = src[i * ss + j];
    }
#endif
    for (ptrdiff_t j = 0; j < cols; j++)
        for (ptrdiff_t i = i0; i < rows; i++) dst[j * ds + i] = src[i * ss + j];
}

#if QD_X86 && !defined(QD_SIMD_EMUL) /* (the emulated-intrinsics tests bring their own types) */
#define QD_TRANSPOSE_AVX2 1
#include <immintrin.h>
/* The 4-byte transpose on AVX2 CPUs: 8 x 8 blocks (unpack, shuffle, then swap 128-bit halves), the rest as above. */
QD_AVX2_ATTR QD_UNUSED static void qd_transpose_u32_avx2(const uint32_t *src, ptrdiff_t ss, uint32_t *dst, ptrdiff_t ds,
                                               ptrdiff_t rows, ptrdiff_t cols) {
    ptrdiff_t i0 = 0, j0 = 0;
    for (; i0 + 8 <= rows; i0 += 8)
        for (j0 = 0; j0 + 8 <= cols; j0 += 8) {
            __m256 r[8], t[8];
            for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps((const float *)(src + (i0 + i) * ss + j0));
            for (int i = 0; i < 4; i++) {  /* rows 2i, 2i+1 interleaved */
                t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
                t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
            }
            for (int h = 0; h < 2; h++)      /* columns {0, 1, 2, 3} + 4 * lane of rows 4h..4h+3 */
                for (int k = 0; k < 2; k++) {
                    r[4 * h + 2 * k] = _mm256_shuffle_ps(t[4 * h + k], t[4 * h + k + 2], 0x44);
                    r[4 * h + 2 * k + 1] = _mm256_shuffle_ps(t[4 * h + k], t[4 * h + k + 2], 0xEE);
                }
            for (int j = 0; j < 4; j++) {
                uint32_t *d = dst + (j0 + j) * ds + i0;
                _mm256_storeu_ps((float *)d, _mm256_permute2f128_ps(r[j], r[4 + j], 0x20));
                _mm256_storeu_ps((float *)(d + 4 * ds), _mm256_permute2f128_ps(r[j], r[4 + j], 0x31));
            }
        }
    if (i0) qd_transpose_u32(src + j0, ss, dst + j0 * ds, ds, i0, cols - j0);  /* the columns right of the blocks */
    qd_transpose_u32(src + i0 * ss, ss, dst + i0, ds, rows - i0, cols);      /* the rows below them */
}
#endif

/* NHWC -> NCHW of pixels [p0, p1): out[c * plane + p] = x[p * C + c], items of 1 or 4 (wide) bytes (plane: an
 * image's H*W, or its OH*OW for one output row), in tiles of 64 pixels x 64 channels (both fit L1); avx2: the CPU
 * has AVX2 (the 8 x 8 word transpose). */
static inline void qd_nhwc_to_nchw(const void *x, ptrdiff_t C, ptrdiff_t plane, ptrdiff_t p0, ptrdiff_t p1, int wide,
                                   int avx2, void *out) {
    for (ptrdiff_t pb = p0; pb < p1; pb += 64) {
        const ptrdiff_t np = p1 - pb < 64 ? p1 - pb : 64;
        for (ptrdiff_t cb = 0; cb < C; cb += 64) {
            const ptrdiff_t nc = C - cb < 64 ? C - cb : 64;
#ifdef QD_TRANSPOSE_AVX2
            if (wide && avx2)
                qd_transpose_u32_avx2((const uint32_t *)x + pb * C + cb, C, (uint32_t *)out + cb * plane + pb, plane,
                                      np, nc);
            else
#endif
            if (wide)
                qd_transpose_u32((const uint32_t *)x + pb * C + cb, C, (uint32_t *)out + cb * plane + pb, plane, np,
                                 nc);
            else
                qd_transpose_u8((const uint8_t *)x + pb * C + cb, C, (uint8_t *)out + cb * plane + pb, plane, np, nc);
        }
    }
}

/* ---------------------------------------------------------------------------------------------------------
 * Depthwise convolution parameters.
 *
 * acc[c] = bias[c] + sum_t x_t[c] * w[t, c] (int32, wrapping), where padded taps read a_zero: with the bias
 * already folded to bias[c] - a_zero * sum_t w[t, c], this equals the contract's
 * bias[c] + sum over valid taps (x - a_zero) * w. The whole sum is exact modulo 2^32 in any order.
 * ------------------------------------------------------------------------------------------------------- */
typedef struct {
    qd_geom g;
    const int8_t *w;          /* (KH*KW, C) */
    const int32_t *bias;      /* (C), folded as above */
    const float *scale;       /* (C) */
    const uint8_t *zero_row;  /* >= W*C + 64 bytes of a_zero: the row read by padded taps */
    const uint8_t *x_end;     /* one past the input batch: reads past it are never made */
    int out_f32;              /* 0: u8 out, 1: float32 out */
    float lo_f, hi_f;         /* u8: lo - out_zero, hi - out_zero; f32: the clamp (+-inf for none) */
    int32_t out_zero;
    int scale_below_half;     /* every |scale[c]| < 0.5: float(acc) * scale cannot reach 2^30 */
    /* vector packs (depthwise_avx2.h: 32-lane blocks, int16 weight pairs; depthwise_avx512.h: 64-lane blocks,
     * int8 weight quads): per-pixel blocks and flat (stride 1) blocks */
    const void *pix_w; const int32_t *pix_b; const float *pix_s; ptrdiff_t pix_blocks;
    const void *flat_w; const int32_t *flat_b; const float *flat_s; ptrdiff_t flat_blocks;
    /* AVX2: packs of the kernel rows [i0, i1) that output rows at the top / bottom edge actually read (the rest
     * lie in the padding), with their own folded bias: those rows skip the padded taps */
    int nranges;
    struct { int i0, i1; const void *pix_w; const int32_t *pix_b; const float *pix_s; const void *flat_w;
             const int32_t *flat_b; const float *flat_s; } ranges[QD_MAX_RANGES];
} qd_dw;

/* The kernel rows [*i0, *i1) of output row oh whose input rows lie inside the image. */
static inline void qd_dw_valid_rows(const qd_geom *g, ptrdiff_t oh, int *i0, int *i1) {
    int a = 0, b = (int)g->kh;
    while (a < b && oh * g->sh - g->top + a * g->dh < 0) a++;
    while (b > a && oh * g->sh - g->top + (b - 1) * g->dh >= g->h) b--;
    *i0 = a;
    *i1 = b;
}

/* The input row pointer of kernel row i for output row oh (the zero row when it lies in the padding). */
QD_INLINE const uint8_t *qd_row(const qd_dw *d, const uint8_t *x, ptrdiff_t oh, ptrdiff_t i) {
    const qd_geom *g = &d->g;
    ptrdiff_t ih = oh * g->sh - g->top + i * g->dh;
    return (ih >= 0 && ih < g->h) ? x + ih * g->w * g->c : d->zero_row;
}

/* Tap pointers of output pixel ow: rows[i] + iw*C, or the zero row where iw lies in the padding. */
QD_INLINE void qd_pixel_taps(const qd_dw *d, const uint8_t *const *rows, ptrdiff_t ow, const uint8_t **tap) {
    const qd_geom *g = &d->g;
    for (ptrdiff_t i = 0; i < g->kh; i++)
        for (ptrdiff_t j = 0; j < g->kw; j++) {
            ptrdiff_t iw = ow * g->sw - g->left + j * g->dw;
            tap[i * g->kw + j] = (iw >= 0 && iw < g->w) ? rows[i] + iw * g->c : d->zero_row;
        }
}

#endif
