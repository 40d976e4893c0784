/* qgemm/avx512vnni.h -- AVX-512 VNNI: vpdpbusd multiplies the 4 u8 of a broadcast activation word with the 4 s8
 * of each column's lane and adds them into that column's s32 lane, without intermediate saturation:
 *     acc[c] += a0*w0[c] + a1*w1[c] + a2*w2[c] + a3*w3[c]
 * One zmm = one 16-column panel group. The microkernel holds 8 rows x 2 panels (32 columns) = 16 zmm
 * accumulators (vpdpbusd has a 4-5 cycle latency at 2 per cycle: >= 10 independent chains keep it busy), reads
 * A rows directly (4-byte broadcasts, no packing; the partial last K group is assembled without reading past the
 * row) and runs the epilogue on the accumulators before they leave the registers.
 */
#ifndef REFQUANT_QGEMM_AVX512VNNI_H
#define REFQUANT_QGEMM_AVX512VNNI_H

#ifdef QGEMM_SIMD_EMULATION
#include QGEMM_SIMD_EMULATION
#else
#include <immintrin.h>
#endif
#include "common.h"

#define QGEMM_AVX512_MR 8

/* acc = vpdpbusd(acc, x (u8), b (s8)). GCC 12 copies the accumulator around the intrinsic (a register move per
 * instruction and spills in an 8x2 kernel); the inline asm ties it to one register ("+v"). */
#ifdef QGEMM_SIMD_EMULATION
#define QGEMM_DPBUSD512(acc, x, b) ((acc) = _mm512_dpbusd_epi32((acc), (x), (b)))
#else
#define QGEMM_DPBUSD512(acc, x, b) __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(x), "v"(b))
#endif
#define QGEMM_AVX512 QGEMM_TARGET("avx512f,avx512vnni")

/* Epilogue of one row of one panel: dot (16 columns from n), nc valid columns. */
QGEMM_AVX512 static inline void qgemm_avx512_store16(const qgemm_args *p, ptrdiff_t m, ptrdiff_t n, int nc,
                                                     __m512i v) {
    __mmask16 k = (__mmask16)(nc >= 16 ? 0xFFFF : (1u << nc) - 1);
    v = _mm512_add_epi32(v, _mm512_loadu_si512((const void *)(p->offset + n)));
    ptrdiff_t at = m * p->ldo + n;
    if (p->out_kind == QGEMM_OUT_S32) {
        _mm512_mask_storeu_epi32((int32_t *)p->out + at, k, v);
        return;
    }
    __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(v), _mm512_loadu_ps(p->scale + n));
    __m512 lo = _mm512_set1_ps(p->lo), hi = _mm512_set1_ps(p->hi);
    if (p->out_kind == QGEMM_OUT_F32) {
        if (p->fbias) f = _mm512_add_ps(f, _mm512_loadu_ps(p->fbias + n));
        _mm512_mask_storeu_ps((float *)p->out + at, k, _mm512_min_ps(_mm512_max_ps(f, lo), hi));
        return;
    }
    f = _mm512_roundscale_ps(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    f = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(f, _mm512_set1_ps(p->out_zero)), lo), hi);
    /* integral and within [lo, hi] (a sub-range of the output type): truncating conversions are exact */
    _mm512_mask_cvtepi32_storeu_epi8((uint8_t *)p->out + at, k, _mm512_cvttps_epi32(f));
}

/* Accumulators of row r: c<r>0 (panel 0) and c<r>1 (panel 1); x: the row's 4 activation bytes, broadcast. Written
 * with named variables (not arrays) so that the compiler keeps all 16 in zmm registers. */
#define QGEMM_Z_ROW2(r, word)                                                                     \
    do {                                                                                          \
        __m512i x = _mm512_set1_epi32((int)(word));                                               \
        QGEMM_DPBUSD512(c##r##0, x, b0);                                                          \
        QGEMM_DPBUSD512(c##r##1, x, b1);                                                          \
    } while (0)
#define QGEMM_Z_ROW1(r, word)                                                                     \
    do {                                                                                          \
        __m512i x = _mm512_set1_epi32((int)(word));                                               \
        QGEMM_DPBUSD512(c##r##0, x, b0);                                                          \
    } while (0)
#define QGEMM_Z_ROWS(ROW, W) ROW(0, W(0)); ROW(1, W(1)); ROW(2, W(2)); ROW(3, W(3)); \
                             ROW(4, W(4)); ROW(5, W(5)); ROW(6, W(6)); ROW(7, W(7))
#define QGEMM_Z_FULL(r) qgemm_load_u32(a##r + 4 * g)
#define QGEMM_Z_TAIL(r) qgemm_tail_word(a##r, p->K)
#define QGEMM_Z_ROWPTRS                                                                           \
    const uint8_t *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5], *a6 = a[6], \
                  *a7 = a[7]

/* 8 rows (a[0..7], rows past the block repeat a valid row) x 2 panels (32 columns); rows [0, mr) are stored. */
QGEMM_AVX512 static void qgemm_avx512_8x2(const qgemm_args *p, const uint8_t *const *a, const int8_t *panel,
                                          ptrdiff_t m, int mr, ptrdiff_t n, int nc) {
    QGEMM_Z_ROWPTRS;
    const int8_t *panel1 = panel + p->Kp * QGEMM_NR;
    const ptrdiff_t Gfull = p->K / QGEMM_KG;
    __m512i c00 = _mm512_setzero_si512(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
            c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    ptrdiff_t g = 0;
    for (; g < Gfull; g++) {
        __m512i b0 = _mm512_loadu_si512((const void *)(panel + 64 * g));
        __m512i b1 = _mm512_loadu_si512((const void *)(panel1 + 64 * g));
        QGEMM_Z_ROWS(QGEMM_Z_ROW2, QGEMM_Z_FULL);
    }
    if (Gfull * QGEMM_KG < p->K) {      /* the zero-padded partial group, read without passing the row end */
        __m512i b0 = _mm512_loadu_si512((const void *)(panel + 64 * g));
        __m512i b1 = _mm512_loadu_si512((const void *)(panel1 + 64 * g));
        QGEMM_Z_ROWS(QGEMM_Z_ROW2, QGEMM_Z_TAIL);
    }
    __m512i acc[8][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31},
                         {c40, c41}, {c50, c51}, {c60, c61}, {c70, c71}};
    for (int r = 0; r < mr; r++) {
        qgemm_avx512_store16(p, m + r, n, 16, acc[r][0]);
        qgemm_avx512_store16(p, m + r, n + 16, nc, acc[r][1]);
    }
}

/* 8 rows x 1 panel (the last, odd panel). */
QGEMM_AVX512 static void qgemm_avx512_8x1(const qgemm_args *p, const uint8_t *const *a, const int8_t *panel,
                                          ptrdiff_t m, int mr, ptrdiff_t n, int nc) {
    QGEMM_Z_ROWPTRS;
    const ptrdiff_t Gfull = p->K / QGEMM_KG;
    __m512i c00 = _mm512_setzero_si512(), c10 = c00, c20 = c00, c30 = c00, c40 = c00, c50 = c00, c60 = c00,
            c70 = c00;
    ptrdiff_t g = 0;
    for (; g < Gfull; g++) {
        __m512i b0 = _mm512_loadu_si512((const void *)(panel + 64 * g));
        QGEMM_Z_ROWS(QGEMM_Z_ROW1, QGEMM_Z_FULL);
    }
    if (Gfull * QGEMM_KG < p->K) {
        __m512i b0 = _mm512_loadu_si512((const void *)(panel + 64 * g));
        QGEMM_Z_ROWS(QGEMM_Z_ROW1, QGEMM_Z_TAIL);
    }
    __m512i acc[8] = {c00, c10, c20, c30, c40, c50, c60, c70};
    for (int r = 0; r < mr; r++) qgemm_avx512_store16(p, m + r, n, nc, acc[r]);
}

/* one row (GEMV, row tails): 4 panels = 4 independent chains */
QGEMM_AVX512 static void qgemm_avx512_1x4(const qgemm_args *p, const uint8_t *row, const int8_t *panel,
                                          ptrdiff_t m, ptrdiff_t n, int nc_last) {
    __m512i acc0 = _mm512_setzero_si512(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    const ptrdiff_t ps = p->Kp * QGEMM_NR, Gfull = p->K / QGEMM_KG;
    for (ptrdiff_t g = 0; g <= Gfull; g++) {
        uint32_t w;
        if (g < Gfull) w = qgemm_load_u32(row + 4 * g);
        else if (Gfull * QGEMM_KG < p->K) w = qgemm_tail_word(row, p->K);
        else break;
        __m512i x = _mm512_set1_epi32((int)w);
        const int8_t *blk = panel + 64 * g;
        __m512i b0 = _mm512_loadu_si512((const void *)blk), b1 = _mm512_loadu_si512((const void *)(blk + ps));
        __m512i b2 = _mm512_loadu_si512((const void *)(blk + 2 * ps));
        __m512i b3 = _mm512_loadu_si512((const void *)(blk + 3 * ps));
        QGEMM_DPBUSD512(acc0, x, b0);
        QGEMM_DPBUSD512(acc1, x, b1);
        QGEMM_DPBUSD512(acc2, x, b2);
        QGEMM_DPBUSD512(acc3, x, b3);
    }
    qgemm_avx512_store16(p, m, n, 16, acc0);
    qgemm_avx512_store16(p, m, n + 16, 16, acc1);
    qgemm_avx512_store16(p, m, n + 32, 16, acc2);
    qgemm_avx512_store16(p, m, n + 48, nc_last, acc3);
}

static void qgemm_avx512vnni_tile(const qgemm_args *p, ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t n0, ptrdiff_t n1) {
    /* rows per block: A block (rows x K bytes) ~ 128 KB, re-read from L2 for every panel pair */
    ptrdiff_t mb = (128 * 1024) / (p->Kp > 0 ? p->Kp : 1);
    mb = mb < QGEMM_AVX512_MR ? QGEMM_AVX512_MR : mb > 512 ? 512 : mb / QGEMM_AVX512_MR * QGEMM_AVX512_MR;
    for (ptrdiff_t mb0 = m0; mb0 < m1; mb0 += mb) {
        ptrdiff_t mb1 = mb0 + mb < m1 ? mb0 + mb : m1;
        ptrdiff_t n = n0;
        if (mb1 - mb0 < 4) {                 /* GEMV-like: one row at a time, 4 panels per step */
            for (; n + 3 * QGEMM_NR < n1; n += 4 * QGEMM_NR) {
                const int8_t *panel = p->b + (n / QGEMM_NR) * p->Kp * QGEMM_NR;
                int nc = (int)(n1 - n - 3 * QGEMM_NR < QGEMM_NR ? n1 - n - 3 * QGEMM_NR : QGEMM_NR);
                for (ptrdiff_t m = mb0; m < mb1; m++) qgemm_avx512_1x4(p, p->a + m * p->lda, panel, m, n, nc);
            }
        }
        for (; n < n1; n += 2 * QGEMM_NR) {
            const int8_t *panel = p->b + (n / QGEMM_NR) * p->Kp * QGEMM_NR;
            int two = n + QGEMM_NR < n1;
            ptrdiff_t last = two ? n + QGEMM_NR : n;
            int nc = (int)(n1 - last < QGEMM_NR ? n1 - last : QGEMM_NR);
            for (ptrdiff_t m = mb0; m < mb1; m += QGEMM_AVX512_MR) {
                const uint8_t *a[QGEMM_AVX512_MR];
                for (int r = 0; r < QGEMM_AVX512_MR; r++) a[r] = qgemm_row(p, m + r, mb1);
                int mr = (int)(mb1 - m < QGEMM_AVX512_MR ? mb1 - m : QGEMM_AVX512_MR);
                if (two) qgemm_avx512_8x2(p, a, panel, m, mr, n, nc);
                else qgemm_avx512_8x1(p, a, panel, m, mr, n, nc);
            }
        }
    }
}

#endif
