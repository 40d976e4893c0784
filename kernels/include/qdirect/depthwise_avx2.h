/* qdirect/depthwise_avx2.h: the AVX2 depthwise microkernel (u8 activations x s8 weights -> s32), 32 lanes per
 * 256-bit vector, run-time selected through __attribute__((target("avx2"))).
 *
 * Arithmetic (exact, nothing saturates): two taps t0, t1 of the same lane are interleaved into one int32 slot
 * as two int16 (x_t0, x_t1) (vpunpck*bw against the other tap, then against zero), and vpmaddwd multiplies
 * them by the packed pair (w_t0, w_t1): x*w <= 255*128 = 32640 and a pair sum <= 65280 fit int32 exactly, so a
 * 3x3 kernel takes 5 vpmaddwd + 5 vpaddd per 8 lanes (the 9th tap pairs with zero). vpmaddubsw would be one
 * instruction shorter but saturates at int16 (255*127*2 > 32767), so it is not used.
 *
 * Lane order: the unpacks leave accumulator v (0..3) holding, in 128-bit half j, the lanes 16j + 4v + (0..3).
 * Weights, bias and scale are packed in that order once per call (qd_dw_pack_avx2); the epilogue's
 * packs_epi32 / packus_epi16 (u8) or permute2f128 (f32) restore the natural order.
 *
 * A "lane" is one byte of the input walk: in per-pixel mode, the channels of one pixel (blocks of 32, the last
 * one partial); in flat mode (stride 1, interior pixels) the contiguous bytes of a whole run of output pixels,
 * since with stride 1 output byte f of the run reads input byte f + (tap offset). Flat blocks are packed with
 * period lcm(C, 32) lanes, lane L holding channel L % C.
 */
#ifndef QDIRECT_DEPTHWISE_AVX2_H
#define QDIRECT_DEPTHWISE_AVX2_H

#include "common.h"

/* Pack w (K, C), folded bias and scale into `blocks` blocks of 32 lanes: per block, (K+1)/2 tap pairs of
 * 4 vectors x 8 int32 slots x 2 int16, then bias[4][8] and scale[4][8]. flat: lane L -> channel L % C; else
 * lane L -> channel L (zero beyond C). */
static void qd_dw_pack_avx2(const int8_t *w, const int32_t *bias, const float *scale, ptrdiff_t C, ptrdiff_t K,
                            ptrdiff_t blocks, int flat, int16_t *pw, int32_t *pb, float *ps) {
    const ptrdiff_t pairs = (K + 1) / 2;
    for (ptrdiff_t b = 0; b < blocks; b++)
        for (int v = 0; v < 4; v++)
            for (int m = 0; m < 8; m++) {
                const ptrdiff_t lane = b * 32 + 16 * (m / 4) + 4 * v + (m % 4);
                const ptrdiff_t ch = flat ? lane % C : (lane < C ? lane : -1);
                pb[b * 32 + v * 8 + m] = ch >= 0 ? bias[ch] : 0;
                ps[b * 32 + v * 8 + m] = ch >= 0 ? scale[ch] : 0.0f;
                for (ptrdiff_t g = 0; g < pairs; g++)
                    for (int t = 0; t < 2; t++) {
                        const ptrdiff_t tap = 2 * g + t;
                        pw[((b * pairs + g) * 4 + v) * 16 + m * 2 + t] =
                            (int16_t)((ch >= 0 && tap < K) ? w[tap * C + ch] : 0);
                    }
            }
}

#if QD_X86
#include <immintrin.h>

/* 32 input bytes at p, of which the first n are used. A full 32-byte read is made when it stays inside the
 * input batch (or p is in the zero row, which has 64 bytes of slack); else the n bytes are copied. */
QD_AVX2_ATTR QD_INLINE __m256i qd_ld_avx2(const uint8_t *p, ptrdiff_t n, const qd_dw *d) {
    if (n >= 32 || (uintptr_t)p + 32 <= (uintptr_t)d->x_end ||
        ((uintptr_t)p >= (uintptr_t)d->zero_row &&
         (uintptr_t)p + 32 <= (uintptr_t)d->zero_row + (uintptr_t)(d->g.w * d->g.c + 64)))
        return _mm256_loadu_si256((const __m256i *)p);
    uint8_t tmp[32] = {0};
    memcpy(tmp, p, (size_t)n);
    return _mm256_loadu_si256((const __m256i *)tmp);
}

/* The epilogue constants, held in registers across a row. */
typedef struct {
    __m256 lo, hi;    /* clamp bounds (u8: lo - zero, hi - zero) */
    __m256i zero16;   /* u8 out zero as int16 */
    __m256i lo8, hi8; /* u8 out: lo, hi as bytes */
    int out_f32;
    int saturate;     /* u8 out and |float(acc) * scale| < 2^30 for every int32 acc (max |scale| < 0.5) */
} qd_epi_avx2;

/* One block: lanes [off, off + min(n, 32)) of every tap; out points at the block's first output element.
 * Called with constant K and n (the 3x3 fast path, full blocks), the compiler unrolls the taps and drops the
 * tail checks. */
QD_AVX2_ATTR QD_INLINE void qd_dw_block_avx2(const qd_dw *d, const uint8_t *const *tap, ptrdiff_t K,
                                             ptrdiff_t off, ptrdiff_t n, const int16_t *pw, const int32_t *pb,
                                             const float *ps, const qd_epi_avx2 *e, char *out) {
    __m256i a0 = _mm256_loadu_si256((const __m256i *)pb), a1 = _mm256_loadu_si256((const __m256i *)(pb + 8));
    __m256i a2 = _mm256_loadu_si256((const __m256i *)(pb + 16)), a3 = _mm256_loadu_si256((const __m256i *)(pb + 24));
    const __m256i z = _mm256_setzero_si256();
    for (ptrdiff_t t = 0; t < K; t += 2, pw += 64) {
        const __m256i x0 = qd_ld_avx2(tap[t] + off, n, d);
        const __m256i x1 = t + 1 < K ? qd_ld_avx2(tap[t + 1] + off, n, d) : z;
        const __m256i l = _mm256_unpacklo_epi8(x0, x1), h = _mm256_unpackhi_epi8(x0, x1);
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_unpacklo_epi8(l, z), _mm256_loadu_si256((const __m256i *)pw)));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_unpackhi_epi8(l, z), _mm256_loadu_si256((const __m256i *)(pw + 16))));
        a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(_mm256_unpacklo_epi8(h, z), _mm256_loadu_si256((const __m256i *)(pw + 32))));
        a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(_mm256_unpackhi_epi8(h, z), _mm256_loadu_si256((const __m256i *)(pw + 48))));
    }
    /* epilogue: f = float(acc) * scale, clamped; u8: rint (cvtps, default rounding = ties to even) + zero.
     * max_ps(f, lo) is f > lo ? f : lo and min_ps(f, hi) is f < hi ? f : hi: the scalar code's comparisons. */
    __m256 f0 = _mm256_mul_ps(_mm256_cvtepi32_ps(a0), _mm256_loadu_ps(ps));
    __m256 f1 = _mm256_mul_ps(_mm256_cvtepi32_ps(a1), _mm256_loadu_ps(ps + 8));
    __m256 f2 = _mm256_mul_ps(_mm256_cvtepi32_ps(a2), _mm256_loadu_ps(ps + 16));
    __m256 f3 = _mm256_mul_ps(_mm256_cvtepi32_ps(a3), _mm256_loadu_ps(ps + 24));
    if (e->saturate) {
        /* f cannot overflow int32, so convert first and clamp with saturating integer steps: packs (to int16),
         * adds (+ zero, int16), packus (to [0, 255]), then max/min with lo/hi. Each step is monotone and exact
         * inside its range, so the result is clamp(rint(f) + zero, lo, hi), as below. */
        const __m256i w01 = _mm256_adds_epi16(_mm256_packs_epi32(_mm256_cvtps_epi32(f0), _mm256_cvtps_epi32(f1)), e->zero16);
        const __m256i w23 = _mm256_adds_epi16(_mm256_packs_epi32(_mm256_cvtps_epi32(f2), _mm256_cvtps_epi32(f3)), e->zero16);
        const __m256i u = _mm256_min_epu8(_mm256_max_epu8(_mm256_packus_epi16(w01, w23), e->lo8), e->hi8);
        if (n >= 32) {
            _mm256_storeu_si256((__m256i *)out, u);
        } else {
            uint8_t tmp[32];
            _mm256_storeu_si256((__m256i *)tmp, u);
            memcpy(out, tmp, (size_t)n);
        }
        return;
    }
    f0 = _mm256_min_ps(_mm256_max_ps(f0, e->lo), e->hi);
    f1 = _mm256_min_ps(_mm256_max_ps(f1, e->lo), e->hi);
    f2 = _mm256_min_ps(_mm256_max_ps(f2, e->lo), e->hi);
    f3 = _mm256_min_ps(_mm256_max_ps(f3, e->lo), e->hi);
    if (!e->out_f32) {
        const __m256i w01 = _mm256_add_epi16(_mm256_packs_epi32(_mm256_cvtps_epi32(f0), _mm256_cvtps_epi32(f1)), e->zero16);
        const __m256i w23 = _mm256_add_epi16(_mm256_packs_epi32(_mm256_cvtps_epi32(f2), _mm256_cvtps_epi32(f3)), e->zero16);
        const __m256i u = _mm256_packus_epi16(w01, w23);
        if (n >= 32) {
            _mm256_storeu_si256((__m256i *)out, u);
        } else {
            uint8_t tmp[32];
            _mm256_storeu_si256((__m256i *)tmp, u);
            memcpy(out, tmp, (size_t)n);
        }
    } else {
        __m256 o[4];
        o[0] = _mm256_permute2f128_ps(f0, f1, 0x20);
        o[1] = _mm256_permute2f128_ps(f2, f3, 0x20);
        o[2] = _mm256_permute2f128_ps(f0, f1, 0x31);
        o[3] = _mm256_permute2f128_ps(f2, f3, 0x31);
        float *fo = (float *)out;
        if (n >= 32) {
            for (int k = 0; k < 4; k++) _mm256_storeu_ps(fo + 8 * k, o[k]);
        } else {
            float tmp[32];
            for (int k = 0; k < 4; k++) _mm256_storeu_ps(tmp + 8 * k, o[k]);
            memcpy(fo, tmp, (size_t)n * sizeof(float));
        }
    }
}

/* A block of n <= 16 lanes (a channel tail, e.g. the last 16 of 144) in 128-bit registers. The low 128-bit half
 * of each packed vector v holds lanes 4v + (0..3), which is the 128-bit unpack order, so the same pack serves:
 * half the work of a 32-lane block, and packs / packus leave the lanes in natural order. */
QD_AVX2_ATTR QD_INLINE void qd_dw_block16_avx2(const qd_dw *d, const uint8_t *const *tap, ptrdiff_t K, ptrdiff_t off,
                                               ptrdiff_t n, const int16_t *pw, const int32_t *pb, const float *ps,
                                               const qd_epi_avx2 *e, char *out) {
    __m128i a[4];
    for (int v = 0; v < 4; v++) a[v] = _mm_loadu_si128((const __m128i *)(pb + 8 * v));
    const __m128i z = _mm_setzero_si128();
    for (ptrdiff_t t = 0; t < K; t += 2, pw += 64) {
        const __m128i x0 = _mm256_castsi256_si128(qd_ld_avx2(tap[t] + off, n, d));
        const __m128i x1 = t + 1 < K ? _mm256_castsi256_si128(qd_ld_avx2(tap[t + 1] + off, n, d)) : z;
        const __m128i l = _mm_unpacklo_epi8(x0, x1), h = _mm_unpackhi_epi8(x0, x1);
        const __m128i p[4] = {_mm_unpacklo_epi8(l, z), _mm_unpackhi_epi8(l, z), _mm_unpacklo_epi8(h, z),
                              _mm_unpackhi_epi8(h, z)};
        for (int v = 0; v < 4; v++)
            a[v] = _mm_add_epi32(a[v], _mm_madd_epi16(p[v], _mm_loadu_si128((const __m128i *)(pw + 16 * v))));
    }
    __m128 f[4];
    for (int v = 0; v < 4; v++) {  /* the epilogue of qd_dw_block_avx2, 4 lanes per register */
        f[v] = _mm_mul_ps(_mm_cvtepi32_ps(a[v]), _mm_loadu_ps(ps + 8 * v));
        f[v] = _mm_min_ps(_mm_max_ps(f[v], _mm256_castps256_ps128(e->lo)), _mm256_castps256_ps128(e->hi));
    }
    if (e->out_f32) {
        float tmp[16];
        for (int v = 0; v < 4; v++) _mm_storeu_ps(tmp + 4 * v, f[v]);
        memcpy(out, tmp, (size_t)n * sizeof(float));
        return;
    }
    const __m128i zero16 = _mm256_castsi256_si128(e->zero16);
    const __m128i w01 = _mm_add_epi16(_mm_packs_epi32(_mm_cvtps_epi32(f[0]), _mm_cvtps_epi32(f[1])), zero16);
    const __m128i w23 = _mm_add_epi16(_mm_packs_epi32(_mm_cvtps_epi32(f[2]), _mm_cvtps_epi32(f[3])), zero16);
    const __m128i u = _mm_packus_epi16(w01, w23);
    if (n == 16) {
        _mm_storeu_si128((__m128i *)out, u);
    } else {
        uint8_t tmp[16];
        _mm_storeu_si128((__m128i *)tmp, u);
        memcpy(out, tmp, (size_t)n);
    }
}

/* A flat walk: lanes [0, n) of every tap through the flat pack, block b = (lane / 32) % flat_blocks. */
QD_AVX2_ATTR QD_INLINE void qd_dw_flat_avx2(const qd_dw *d, const uint8_t *const *tap, ptrdiff_t K, ptrdiff_t n,
                                            const qd_epi_avx2 *e, ptrdiff_t es, char *out) {
    const ptrdiff_t step = ((K + 1) / 2) * 64;
    ptrdiff_t f = 0, b = 0;
    for (; f + 32 <= n; f += 32) {
        qd_dw_block_avx2(d, tap, K, f, 32, (const int16_t *)d->flat_w + b * step, d->flat_b + b * 32, d->flat_s + b * 32, e,
                         out + f * es);
        if (++b == d->flat_blocks) b = 0;
    }
    if (f < n)
        qd_dw_block_avx2(d, tap, K, f, n - f, (const int16_t *)d->flat_w + b * step, d->flat_b + b * 32, d->flat_s + b * 32, e,
                         out + f * es);
}

/* Pixels [0, count) spaced `stride` bytes apart, each in blocks of 32 channels through the per-pixel pack. */
QD_AVX2_ATTR QD_INLINE void qd_dw_pixels_avx2_run(const qd_dw *d, const uint8_t *const *tap, ptrdiff_t K,
                                                  ptrdiff_t count, ptrdiff_t stride, const qd_epi_avx2 *e,
                                                  ptrdiff_t es, char *out) {
    const ptrdiff_t C = d->g.c, step = ((K + 1) / 2) * 64;
    for (ptrdiff_t i = 0; i < count; i++) {
        ptrdiff_t c0 = 0, b = 0;
        for (; c0 + 32 <= C; c0 += 32, b++)
            qd_dw_block_avx2(d, tap, K, i * stride + c0, 32, (const int16_t *)d->pix_w + b * step, d->pix_b + b * 32,
                             d->pix_s + b * 32, e, out + (i * C + c0) * es);
        if (c0 + 16 >= C && c0 < C)
            qd_dw_block16_avx2(d, tap, K, i * stride + c0, C - c0, (const int16_t *)d->pix_w + b * step,
                               d->pix_b + b * 32, d->pix_s + b * 32, e, out + (i * C + c0) * es);
        else if (c0 < C)
            qd_dw_block_avx2(d, tap, K, i * stride + c0, C - c0, (const int16_t *)d->pix_w + b * step, d->pix_b + b * 32,
                             d->pix_s + b * 32, e, out + (i * C + c0) * es);
    }
}

/* One output row. Pixels whose window touches the left/right padding run one at a time, with the zero row for
 * their padded taps; the interior runs the vector blocks: one flat walk when
 * the stride is 1 and a flat pack exists, else pixel by pixel in blocks of 32 channels. 3x3 kernels get
 * their own instantiation (constant K: unrolled taps). */
QD_AVX2_ATTR static void qd_dw_row_avx2_kernel(const qd_dw *d, const uint8_t *x, ptrdiff_t oh, char *out) {
    const uint8_t *rows[QD_MAX_TAPS], *tap[QD_MAX_TAPS];
    for (ptrdiff_t i = 0; i < d->g.kh; i++) rows[i] = qd_row(d, x, oh, i);
    int i0, i1;
    qd_dw_valid_rows(&d->g, oh, &i0, &i1);
    qd_dw part;
    for (int r = 0; r < d->nranges; r++)
        if (d->ranges[r].i0 == i0 && d->ranges[r].i1 == i1) {  /* only kernel rows [i0, i1) read the image */
            part = *d;
            part.g.kh = i1 - i0;
            part.pix_w = d->ranges[r].pix_w; part.pix_b = d->ranges[r].pix_b; part.pix_s = d->ranges[r].pix_s;
            part.flat_w = d->ranges[r].flat_w; part.flat_b = d->ranges[r].flat_b; part.flat_s = d->ranges[r].flat_s;
            for (int i = i0; i < i1; i++) rows[i - i0] = rows[i];
            d = &part;
            break;
        }
    const qd_geom *g = &d->g;
    const ptrdiff_t C = g->c, K = g->kh * g->kw, es = d->out_f32 ? 4 : 1;
    ptrdiff_t lo, hi;
    qd_interior(-g->left, g->sw, (g->kw - 1) * g->dw, g->w, g->ow, &lo, &hi);
    qd_epi_avx2 e;
    e.lo = _mm256_set1_ps(d->lo_f);
    e.hi = _mm256_set1_ps(d->hi_f);
    e.zero16 = _mm256_set1_epi16((int16_t)d->out_zero);
    e.lo8 = _mm256_set1_epi8((char)(uint8_t)(d->lo_f + (float)d->out_zero));
    e.hi8 = _mm256_set1_epi8((char)(uint8_t)(d->hi_f + (float)d->out_zero));
    e.out_f32 = d->out_f32;
    e.saturate = !d->out_f32 && d->scale_below_half;
    for (ptrdiff_t ow = 0; ow < g->ow; ow++) {  /* border pixels: taps in the padding read the zero row */
        if (ow == lo) ow = hi > lo ? hi : lo;
        if (ow >= g->ow) break;
        qd_pixel_taps(d, rows, ow, tap);
        qd_dw_pixels_avx2_run(d, tap, K, 1, 0, &e, es, out + ow * C * es);
    }
    if (hi <= lo) return;
    const ptrdiff_t iw0 = lo * g->sw - g->left;
    for (ptrdiff_t i = 0; i < g->kh; i++)
        for (ptrdiff_t j = 0; j < g->kw; j++) tap[i * g->kw + j] = rows[i] + (iw0 + j * g->dw) * C;
    char *o = out + lo * C * es;
    if (g->sw == 1 && d->flat_blocks > 0) {
        if (K == 9) qd_dw_flat_avx2(d, tap, 9, (hi - lo) * C, &e, es, o);
        else qd_dw_flat_avx2(d, tap, K, (hi - lo) * C, &e, es, o);
    } else {
        if (K == 9) qd_dw_pixels_avx2_run(d, tap, 9, hi - lo, g->sw * C, &e, es, o);
        else qd_dw_pixels_avx2_run(d, tap, K, hi - lo, g->sw * C, &e, es, o);
    }
}
#endif /* QD_X86 */

#endif
