/* qdirect/depthwise_avx512.h: the AVX-512 VNNI depthwise microkernel, 64 lanes per zmm, run-time selected
 * through __attribute__((target("avx512f,avx512bw,avx512vnni"))).
 *
 * Arithmetic (exact): four taps of the same lane are interleaved into one int32 slot as 4 bytes
 * (vpunpck{l,h}bw then vpunpck{l,h}wd) and vpdpbusd adds x_t0*w_t0 + ... + x_t3*w_t3 (u8 x s8, no intermediate
 * saturation) into the int32 accumulator: a 3x3 kernel is 3 vpdpbusd per 16 lanes (taps padded to 12 with zero).
 *
 * Lane order: accumulator v (0..3) holds, in 128-bit lane j, the lanes 16j + 4v + (0..3); weights, bias and
 * scale are packed in that order (qd_dw_pack_avx512); the epilogue's packs/packus (u8) or a 4x4 shuffle of
 * 128-bit blocks (f32) restore the natural order. Partial blocks use masked loads and stores (masked-off bytes
 * are never read), so no tail copies are needed. Modes: flat walk (stride 1, interior; period lcm(C, 64) lanes),
 * the strided walk over the same pack (stride > 1: the interior pixels' channels back to back, each block
 * gathered from its runs by masked loads), or pixel by pixel (blocks of 64 channels) when lcm(C, 64) is too long.
 *
 * STATUS: this machine has no AVX-512, so this path was only run on emulated intrinsics (plain-C versions
 * following Intel's pseudocode, in a harness outside the tree); the path is offered only when the CPU reports
 * avx512f, avx512bw and avx512vnni, and tests/test_qdirect.py compares it with the twin wherever it runs.
 */
#ifndef QDIRECT_DEPTHWISE_AVX512_H
#define QDIRECT_DEPTHWISE_AVX512_H

#include "common.h"

/* Pack w (K, C), folded bias and scale into `blocks` blocks of 64 lanes: per block, (K+3)/4 tap groups of
 * 4 vectors x 16 int32 slots x 4 int8, then bias[4][16] and scale[4][16]. flat: lane L -> channel L % C; else
 * lane L -> channel L (zero beyond C). */
static void qd_dw_pack_avx512(const int8_t *w, const int32_t *bias, const float *scale, ptrdiff_t C, ptrdiff_t K,
                              ptrdiff_t blocks, int flat, int8_t *pw, int32_t *pb, float *ps) {
    const ptrdiff_t groups = (K + 3) / 4;
    for (ptrdiff_t b = 0; b < blocks; b++)
        for (int v = 0; v < 4; v++)
            for (int m = 0; m < 16; m++) {
                const ptrdiff_t lane = b * 64 + 16 * (m / 4) + 4 * v + (m % 4);
                const ptrdiff_t ch = flat ? lane % C : (lane < C ? lane : -1);
                pb[b * 64 + v * 16 + m] = ch >= 0 ? bias[ch] : 0;
                ps[b * 64 + v * 16 + m] = ch >= 0 ? scale[ch] : 0.0f;
                for (ptrdiff_t g = 0; g < groups; g++)
                    for (int t = 0; t < 4; t++) {
                        const ptrdiff_t tap = 4 * g + t;
                        pw[((b * groups + g) * 4 + v) * 64 + m * 4 + t] =
                            (int8_t)((ch >= 0 && tap < K) ? w[tap * C + ch] : 0);
                    }
            }
}

#if QD_X86 || defined(QD_SIMD_EMUL)
#ifndef QD_SIMD_EMUL
#include <immintrin.h>
#define QD_AVX512_ATTR __attribute__((target("avx512f,avx512bw,avx512vnni")))
#else
#define QD_AVX512_ATTR
#endif

typedef struct {
    __m512 lo, hi;
    __m512i zero16, lo8, hi8;
    int out_f32, saturate;
} qd_epi_avx512;

QD_AVX512_ATTR QD_INLINE __mmask64 qd_mask64(ptrdiff_t n) {
    return n >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << n) - 1);
}

/* The runs of a block of a strided walk (see qd_dw_seg_avx512): lanes m[s] read tap + off + o[s] + lane. */
typedef struct {
    int n;
    __mmask64 m[65];
    ptrdiff_t o[65];
} qd_seg;

QD_AVX512_ATTR QD_INLINE __m512i qd_seg_load(const qd_seg *sg, const uint8_t *p) {
    __m512i v = _mm512_setzero_si512();
    for (int s = 0; s < sg->n; s++) v = _mm512_mask_loadu_epi8(v, sg->m[s], p + sg->o[s]);
    return v;
}

/* One block: lanes [off, off + min(n, 64)) of every tap (sg: gathered from its runs); out points at the block's
 * first output element. */
QD_AVX512_ATTR QD_INLINE void qd_dw_block_avx512(const uint8_t *const *tap, ptrdiff_t K, ptrdiff_t off,
                                                 ptrdiff_t n, const int8_t *pw, const int32_t *pb,
                                                 const float *ps, const qd_epi_avx512 *e, char *out,
                                                 const qd_seg *sg) {
    const __mmask64 m = qd_mask64(n);
#define QD_LD(t) (sg ? qd_seg_load(sg, tap[t] + off) : _mm512_maskz_loadu_epi8(m, tap[t] + off))
    __m512i a0 = _mm512_loadu_si512((const void *)pb), a1 = _mm512_loadu_si512((const void *)(pb + 16));
    __m512i a2 = _mm512_loadu_si512((const void *)(pb + 32)), a3 = _mm512_loadu_si512((const void *)(pb + 48));
    const __m512i z = _mm512_setzero_si512();
    for (ptrdiff_t t = 0; t < K; t += 4, pw += 256) {
        const __m512i x0 = QD_LD(t);
        const __m512i x1 = t + 1 < K ? QD_LD(t + 1) : z;
        const __m512i x2 = t + 2 < K ? QD_LD(t + 2) : z;
        const __m512i x3 = t + 3 < K ? QD_LD(t + 3) : z;
        const __m512i l01 = _mm512_unpacklo_epi8(x0, x1), h01 = _mm512_unpackhi_epi8(x0, x1);
        const __m512i l23 = _mm512_unpacklo_epi8(x2, x3), h23 = _mm512_unpackhi_epi8(x2, x3);
        a0 = _mm512_dpbusd_epi32(a0, _mm512_unpacklo_epi16(l01, l23), _mm512_loadu_si512((const void *)pw));
        a1 = _mm512_dpbusd_epi32(a1, _mm512_unpackhi_epi16(l01, l23), _mm512_loadu_si512((const void *)(pw + 64)));
        a2 = _mm512_dpbusd_epi32(a2, _mm512_unpacklo_epi16(h01, h23), _mm512_loadu_si512((const void *)(pw + 128)));
        a3 = _mm512_dpbusd_epi32(a3, _mm512_unpackhi_epi16(h01, h23), _mm512_loadu_si512((const void *)(pw + 192)));
    }
#undef QD_LD
    __m512 f0 = _mm512_mul_ps(_mm512_cvtepi32_ps(a0), _mm512_loadu_ps(ps));
    __m512 f1 = _mm512_mul_ps(_mm512_cvtepi32_ps(a1), _mm512_loadu_ps(ps + 16));
    __m512 f2 = _mm512_mul_ps(_mm512_cvtepi32_ps(a2), _mm512_loadu_ps(ps + 32));
    __m512 f3 = _mm512_mul_ps(_mm512_cvtepi32_ps(a3), _mm512_loadu_ps(ps + 48));
    if (!e->saturate) {  /* clamp in float first (see depthwise_avx2.h) */
        f0 = _mm512_min_ps(_mm512_max_ps(f0, e->lo), e->hi);
        f1 = _mm512_min_ps(_mm512_max_ps(f1, e->lo), e->hi);
        f2 = _mm512_min_ps(_mm512_max_ps(f2, e->lo), e->hi);
        f3 = _mm512_min_ps(_mm512_max_ps(f3, e->lo), e->hi);
    }
    if (!e->out_f32) {
#define QD_RN (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC) /* an immediate, as the intrinsic needs */
        const __m512i w01 = _mm512_adds_epi16(
            _mm512_packs_epi32(_mm512_cvt_roundps_epi32(f0, QD_RN), _mm512_cvt_roundps_epi32(f1, QD_RN)), e->zero16);
        const __m512i w23 = _mm512_adds_epi16(
            _mm512_packs_epi32(_mm512_cvt_roundps_epi32(f2, QD_RN), _mm512_cvt_roundps_epi32(f3, QD_RN)), e->zero16);
        const __m512i u = _mm512_min_epu8(_mm512_max_epu8(_mm512_packus_epi16(w01, w23), e->lo8), e->hi8);
        _mm512_mask_storeu_epi8(out, m, u);
#undef QD_RN
    } else {
        const __m512 t0 = _mm512_shuffle_f32x4(f0, f1, 0x44), t1 = _mm512_shuffle_f32x4(f2, f3, 0x44);
        const __m512 t2 = _mm512_shuffle_f32x4(f0, f1, 0xEE), t3 = _mm512_shuffle_f32x4(f2, f3, 0xEE);
        float *fo = (float *)out;
        _mm512_mask_storeu_ps(fo, (__mmask16)(m & 0xFFFF), _mm512_shuffle_f32x4(t0, t1, 0x88));
        _mm512_mask_storeu_ps(fo + 16, (__mmask16)((m >> 16) & 0xFFFF), _mm512_shuffle_f32x4(t0, t1, 0xDD));
        _mm512_mask_storeu_ps(fo + 32, (__mmask16)((m >> 32) & 0xFFFF), _mm512_shuffle_f32x4(t2, t3, 0x88));
        _mm512_mask_storeu_ps(fo + 48, (__mmask16)((m >> 48) & 0xFFFF), _mm512_shuffle_f32x4(t2, t3, 0xDD));
    }
}

QD_AVX512_ATTR QD_INLINE void qd_dw_flat_avx512(const qd_dw *d, const uint8_t *const *tap, ptrdiff_t K,
                                                ptrdiff_t n, const qd_epi_avx512 *e, ptrdiff_t es, char *out) {
    const ptrdiff_t step = ((K + 3) / 4) * 256;
    const int8_t *fw = (const int8_t *)d->flat_w;
    ptrdiff_t b = 0;
    for (ptrdiff_t f = 0; f < n; f += 64) {
        qd_dw_block_avx512(tap, K, f, n - f, fw + b * step, d->flat_b + b * 64, d->flat_s + b * 64, e,
                           out + f * es, NULL);
        if (++b == d->flat_blocks) b = 0;
    }
}

/* The interior of a row with stride > 1 as one walk over the flat pack, without deinterleaving: lane L = p*C + c
 * (output pixel p of the run, channel c) reads byte L + p*(S - C) of each tap, S = sw*C the input bytes between
 * output pixels. A 64-lane block is 1 + 63/C runs of contiguous bytes (C = 32: two pixels; C = 144: one or two),
 * merged by masked loads (masked-off bytes are never read), so no lane is idle: the pixel-by-pixel walk would
 * use 32 of 64 lanes at C = 32 and 144 of 192 at C = 144. */
QD_AVX512_ATTR QD_INLINE void qd_dw_seg_avx512(const qd_dw *d, const uint8_t *const *tap, ptrdiff_t K, ptrdiff_t n,
                                               ptrdiff_t S, const qd_epi_avx512 *e, ptrdiff_t es, char *out) {
    const ptrdiff_t C = d->g.c, step = ((K + 3) / 4) * 256;
    const int8_t *fw = (const int8_t *)d->flat_w;
    qd_seg sg;
    ptrdiff_t b = 0;
    for (ptrdiff_t f = 0; f < n; f += 64) {
        const ptrdiff_t end = n - f < 64 ? n : f + 64;
        sg.n = 0;
        for (ptrdiff_t L = f; L < end; sg.n++) {
            const ptrdiff_t p = L / C, stop = (p + 1) * C < end ? (p + 1) * C : end;
            sg.m[sg.n] = qd_mask64(stop - f) & ~qd_mask64(L - f);
            sg.o[sg.n] = p * (S - C);
            L = stop;
        }
        qd_dw_block_avx512(tap, K, f, end - f, fw + b * step, d->flat_b + b * 64, d->flat_s + b * 64, e,
                           out + f * es, &sg);
        if (++b == d->flat_blocks) b = 0;
    }
}

QD_AVX512_ATTR QD_INLINE void qd_dw_pixels_avx512_run(const qd_dw *d, const uint8_t *const *tap, ptrdiff_t K,
                                                      ptrdiff_t count, ptrdiff_t stride, const qd_epi_avx512 *e,
                                                      ptrdiff_t es, char *out) {
    const ptrdiff_t C = d->g.c, step = ((K + 3) / 4) * 256;
    const int8_t *pw = (const int8_t *)d->pix_w;
    for (ptrdiff_t i = 0; i < count; i++)
        for (ptrdiff_t c0 = 0, b = 0; c0 < C; c0 += 64, b++)
            qd_dw_block_avx512(tap, K, i * stride + c0, C - c0, pw + b * step, d->pix_b + b * 64,
                               d->pix_s + b * 64, e, out + (i * C + c0) * es, NULL);
}

/* One output row: border pixels one at a time (padded taps read the zero row), the interior as a flat walk
 * (stride 1), a strided walk over the flat pack (qd_dw_seg_avx512) or pixel by pixel when there is no flat
 * pack; 3x3 gets its own instantiation. */
QD_AVX512_ATTR static void qd_dw_row_avx512_kernel(const qd_dw *d, const uint8_t *x, ptrdiff_t oh, char *out) {
    const qd_geom *g = &d->g;
    const ptrdiff_t C = g->c, K = g->kh * g->kw, es = d->out_f32 ? 4 : 1;
    const uint8_t *rows[QD_MAX_TAPS], *tap[QD_MAX_TAPS];
    for (ptrdiff_t i = 0; i < g->kh; i++) rows[i] = qd_row(d, x, oh, i);
    ptrdiff_t lo, hi;
    qd_interior(-g->left, g->sw, (g->kw - 1) * g->dw, g->w, g->ow, &lo, &hi);
    qd_epi_avx512 e;
    e.lo = _mm512_set1_ps(d->lo_f);
    e.hi = _mm512_set1_ps(d->hi_f);
    e.zero16 = _mm512_set1_epi16((short)d->out_zero);
    e.lo8 = _mm512_set1_epi8((char)(uint8_t)(d->lo_f + (float)d->out_zero));
    e.hi8 = _mm512_set1_epi8((char)(uint8_t)(d->hi_f + (float)d->out_zero));
    e.out_f32 = d->out_f32;
    e.saturate = !d->out_f32 && d->scale_below_half;
    for (ptrdiff_t ow = 0; ow < g->ow; ow++) {
        if (ow == lo) ow = hi > lo ? hi : lo;
        if (ow >= g->ow) break;
        qd_pixel_taps(d, rows, ow, tap);
        qd_dw_pixels_avx512_run(d, tap, K, 1, 0, &e, es, out + ow * C * es);
    }
    if (hi <= lo) return;
    const ptrdiff_t iw0 = lo * g->sw - g->left;
    for (ptrdiff_t i = 0; i < g->kh; i++)
        for (ptrdiff_t j = 0; j < g->kw; j++) tap[i * g->kw + j] = rows[i] + (iw0 + j * g->dw) * C;
    char *o = out + lo * C * es;
    if (g->sw == 1 && d->flat_blocks > 0) {
        if (K == 9) qd_dw_flat_avx512(d, tap, 9, (hi - lo) * C, &e, es, o);
        else qd_dw_flat_avx512(d, tap, K, (hi - lo) * C, &e, es, o);
    } else if (d->flat_blocks > 0) {
        if (K == 9) qd_dw_seg_avx512(d, tap, 9, (hi - lo) * C, g->sw * C, &e, es, o);
        else qd_dw_seg_avx512(d, tap, K, (hi - lo) * C, g->sw * C, &e, es, o);
    } else {
        if (K == 9) qd_dw_pixels_avx512_run(d, tap, 9, hi - lo, g->sw * C, &e, es, o);
        else qd_dw_pixels_avx512_run(d, tap, K, hi - lo, g->sw * C, &e, es, o);
    }
}
#endif /* QD_X86 || QD_SIMD_EMUL */

#endif
