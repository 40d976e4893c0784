/* qgemm/avx2.h -- AVX2 without VNNI, exact in every case. Two microkernels; the packed header picks one:
 *
 * 1. vpmaddwd (any int8 weights). vpmaddubsw would saturate here: its pair sums a0*w0 + a1*w1 go to s16, and
 *    255*127*2 > 32767. Instead both sides are used as s16 and vpmaddwd adds the pairs into s32.
 *    A 32-bit lane of a B block holds w0..w3 (4 consecutive K of one column). Read as two s16 lanes it is
 *    (w0 | w1<<8, w2 | w3<<8), so
 *        B_even = (lane << 8) >>s 8  = (sext w0, sext w2)      B_odd = lane >>s 8 = (sext w1, sext w3)
 *    and A is packed once per row block into the matching u16 pairs (a0, a2) and (a1, a3). Then
 *        vpmaddwd(A_even, B_even) + vpmaddwd(A_odd, B_odd) = a0*w0 + a1*w1 + a2*w2 + a3*w3      per column,
 *    every product and pair sum exact in s32. 8 columns per ymm, a 16-column panel is 2 ymm; the microkernel
 *    keeps 3 rows x 16 columns of s32 accumulators (6 ymm) + 4 prepared B vectors + 2 A broadcasts in the 16
 *    registers (4 rows spill accumulators to the stack with GCC 12, and measured no faster). 16 MACs per
 *    multiply instruction.
 *
 * 2. vpmaddubsw, when the header says every K pair of every column has |w0| + |w1| <= 128
 *    (QGEMM_FLAG_PAIRS_FIT_S16, computed by pack_b from the weights themselves; true for any weights in
 *    [-64, 64], which convert_to_int8(reduce_range=True) produces, as oneDNN halves weights on pre-VNNI CPUs).
 *    Then |a0*w0 + a1*w1| <= 255*128 = 32640 < 32767: vpmaddubsw cannot saturate and is exact, and
 *    vpmaddwd(., ones) adds the two pairs of a 4-K group into s32. 32 MACs per 3 instructions (maddubs, madd,
 *    add) instead of 16 per 2; A needs no widening (4 raw bytes broadcast). 4 rows x 16 columns.
 */
#ifndef REFQUANT_QGEMM_AVX2_H
#define REFQUANT_QGEMM_AVX2_H

#include <stdlib.h>
#ifdef QGEMM_SIMD_EMULATION
#include QGEMM_SIMD_EMULATION
#else
#include <immintrin.h>
#endif
#include "common.h"

#define QGEMM_AVX2_MR 3
#define QGEMM_AVX2 QGEMM_TARGET("avx2")

/* Rows of packed A per block: keep the block (rows * Kp * 2 bytes) around 256 KB (L2). */
static inline ptrdiff_t qgemm_avx2_block_rows(ptrdiff_t Kp) {
    ptrdiff_t mb = (256 * 1024) / (2 * Kp);
    mb = mb > 256 ? 256 : mb;
    mb = mb / QGEMM_AVX2_MR * QGEMM_AVX2_MR;         /* a multiple of MR: the padded rows fit the buffer */
    return mb < QGEMM_AVX2_MR ? QGEMM_AVX2_MR : mb;
}

/* ap[(r*G + g)*2 + 0] = a0 | a2 << 16, ap[(r*G + g)*2 + 1] = a1 | a3 << 16 for rows m .. m+rows-1 (rows past m1
 * repeat row m1-1) and groups g < G = Kp/4 (the partial last group zero padded). */
QGEMM_AVX2 static void qgemm_avx2_pack_a(const qgemm_args *p, ptrdiff_t m, ptrdiff_t m1, ptrdiff_t rows,
                                         uint32_t *ap) {
    ptrdiff_t G = p->Kp / QGEMM_KG, Gfull = p->K / QGEMM_KG;
    for (ptrdiff_t r = 0; r < rows; r++) {
        const uint8_t *row = qgemm_row(p, m + r, m1);
        uint32_t *dst = ap + r * G * 2;
        for (ptrdiff_t g = 0; g < Gfull; g++) {
            uint32_t w = qgemm_load_u32(row + 4 * g);
            dst[2 * g] = w & 0x00FF00FFu;
            dst[2 * g + 1] = (w >> 8) & 0x00FF00FFu;
        }
        if (Gfull < G) {
            uint32_t w = qgemm_tail_word(row, p->K);
            dst[2 * Gfull] = w & 0x00FF00FFu;
            dst[2 * Gfull + 1] = (w >> 8) & 0x00FF00FFu;
        }
    }
}

/* The epilogue for one row of one panel: dot (v0: columns n..n+7, v1: n+8..n+15), nc valid columns. */
QGEMM_AVX2 static inline void qgemm_avx2_store16(const qgemm_args *p, ptrdiff_t m, ptrdiff_t n, int nc,
                                                 __m256i v0, __m256i v1) {
    v0 = _mm256_add_epi32(v0, _mm256_loadu_si256((const __m256i *)(p->offset + n)));
    v1 = _mm256_add_epi32(v1, _mm256_loadu_si256((const __m256i *)(p->offset + n + 8)));
    ptrdiff_t at = m * p->ldo + n;
    if (p->out_kind == QGEMM_OUT_S32) {
        int32_t *o = (int32_t *)p->out + at;
        if (nc == 16) {
            _mm256_storeu_si256((__m256i *)o, v0);
            _mm256_storeu_si256((__m256i *)(o + 8), v1);
        } else {
            int32_t t[16];
            _mm256_storeu_si256((__m256i *)t, v0);
            _mm256_storeu_si256((__m256i *)(t + 8), v1);
            memcpy(o, t, 4 * (size_t)nc);
        }
        return;
    }
    __m256 lo = _mm256_set1_ps(p->lo), hi = _mm256_set1_ps(p->hi);
    __m256 f0 = _mm256_mul_ps(_mm256_cvtepi32_ps(v0), _mm256_loadu_ps(p->scale + n));
    __m256 f1 = _mm256_mul_ps(_mm256_cvtepi32_ps(v1), _mm256_loadu_ps(p->scale + n + 8));
    if (p->out_kind == QGEMM_OUT_F32) {
        if (p->fbias) {
            f0 = _mm256_add_ps(f0, _mm256_loadu_ps(p->fbias + n));
            f1 = _mm256_add_ps(f1, _mm256_loadu_ps(p->fbias + n + 8));
        }
        f0 = _mm256_min_ps(_mm256_max_ps(f0, lo), hi);
        f1 = _mm256_min_ps(_mm256_max_ps(f1, lo), hi);
        float *o = (float *)p->out + at;
        if (nc == 16) {
            _mm256_storeu_ps(o, f0);
            _mm256_storeu_ps(o + 8, f1);
        } else if (nc == 8) {       /* a panel of 8 (N = 8, 24, 40, 88, 200, ...): no call into libc per row */
            _mm256_storeu_ps(o, f0);
        } else {
            float t[16];
            _mm256_storeu_ps(t, f0);
            _mm256_storeu_ps(t + 8, f1);
            memcpy(o, t, 4 * (size_t)nc);
        }
        return;
    }
    __m256 z = _mm256_set1_ps(p->out_zero);
    const int rn = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    f0 = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(_mm256_round_ps(f0, rn), z), lo), hi);
    f1 = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(_mm256_round_ps(f1, rn), z), lo), hi);
    /* integral and in range: the conversions and packs below are exact */
    __m256i i16 = _mm256_packs_epi32(_mm256_cvttps_epi32(f0), _mm256_cvttps_epi32(f1));
    i16 = _mm256_permute4x64_epi64(i16, 0xD8);
    __m128i lo16 = _mm256_castsi256_si128(i16), hi16 = _mm256_extracti128_si256(i16, 1);
    __m128i bytes = p->out_kind == QGEMM_OUT_U8 ? _mm_packus_epi16(lo16, hi16) : _mm_packs_epi16(lo16, hi16);
    uint8_t *o = (uint8_t *)p->out + at;
    if (nc == 16) {
        _mm_storeu_si128((__m128i *)o, bytes);
    } else if (nc == 8) {
        _mm_storel_epi64((__m128i *)o, bytes);
    } else {
        uint8_t t[16];
        _mm_storeu_si128((__m128i *)t, bytes);
        memcpy(o, t, (size_t)nc);
    }
}

#define QGEMM_AVX2_ROW(r)                                                                    \
    do {                                                                                     \
        __m256i ae = _mm256_set1_epi32((int)ap##r[2 * g]);                                   \
        __m256i ao = _mm256_set1_epi32((int)ap##r[2 * g + 1]);                               \
        c##r##0 = _mm256_add_epi32(c##r##0, _mm256_madd_epi16(ae, be0));                     \
        c##r##1 = _mm256_add_epi32(c##r##1, _mm256_madd_epi16(ae, be1));                     \
        c##r##0 = _mm256_add_epi32(c##r##0, _mm256_madd_epi16(ao, bo0));                     \
        c##r##1 = _mm256_add_epi32(c##r##1, _mm256_madd_epi16(ao, bo1));                     \
    } while (0)

/* 3 rows (packed A at ap, row stride 2G words) x one 16-column panel; stores the first mr rows from row m. */
QGEMM_AVX2 static void qgemm_avx2_micro(const qgemm_args *p, const uint32_t *ap, ptrdiff_t G, const int8_t *panel,
                                        ptrdiff_t m, int mr, ptrdiff_t n, int nc) {
    const uint32_t *ap0 = ap, *ap1 = ap + 2 * G, *ap2 = ap + 4 * G;
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    for (ptrdiff_t g = 0; g < G; g++) {
        __m256i b0 = _mm256_loadu_si256((const __m256i *)(panel + 64 * g));
        __m256i b1 = _mm256_loadu_si256((const __m256i *)(panel + 64 * g + 32));
        __m256i be0 = _mm256_srai_epi16(_mm256_slli_epi16(b0, 8), 8), bo0 = _mm256_srai_epi16(b0, 8);
        __m256i be1 = _mm256_srai_epi16(_mm256_slli_epi16(b1, 8), 8), bo1 = _mm256_srai_epi16(b1, 8);
        QGEMM_AVX2_ROW(0);
        QGEMM_AVX2_ROW(1);
        QGEMM_AVX2_ROW(2);
    }
    qgemm_avx2_store16(p, m, n, nc, c00, c01);
    if (mr > 1) qgemm_avx2_store16(p, m + 1, n, nc, c10, c11);
    if (mr > 2) qgemm_avx2_store16(p, m + 2, n, nc, c20, c21);
}

/* 1 row x one panel (GEMV and the row tail). B is sign-extended 16 bytes at a time (4 columns x 4 K as s16) and
 * multiplied with the row's (a0, a1, a2, a3) repeated: lanes (c, k0+k1), (c, k2+k3); a final hadd + permute
 * gives the 16 column sums. 12 vector operations per 64 MACs instead of 14 with the shift split. */
QGEMM_AVX2 static void qgemm_avx2_micro1(const qgemm_args *p, const uint32_t *ap0, ptrdiff_t G,
                                         const int8_t *panel, ptrdiff_t m, ptrdiff_t n, int nc) {
    __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0;
    for (ptrdiff_t g = 0; g < G; g++) {
        /* (a0 | a2<<16, a1 | a3<<16) -> u16 (a0, a1, a2, a3) */
        __m128i t = _mm_shufflelo_epi16(_mm_loadl_epi64((const __m128i *)(ap0 + 2 * g)), _MM_SHUFFLE(3, 1, 2, 0));
        __m256i x = _mm256_broadcastq_epi64(t);
        const int8_t *blk = panel + 64 * g;
#define QGEMM_AVX2_SX16(off) _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + (off))))
        c0 = _mm256_add_epi32(c0, _mm256_madd_epi16(x, QGEMM_AVX2_SX16(0)));
        c1 = _mm256_add_epi32(c1, _mm256_madd_epi16(x, QGEMM_AVX2_SX16(16)));
        c2 = _mm256_add_epi32(c2, _mm256_madd_epi16(x, QGEMM_AVX2_SX16(32)));
        c3 = _mm256_add_epi32(c3, _mm256_madd_epi16(x, QGEMM_AVX2_SX16(48)));
#undef QGEMM_AVX2_SX16
    }
    /* c0 = [col0 (k01), col0 (k23), col1, col1 | col2, col2, col3, col3]; hadd(c0, c1) = [0, 1, 4, 5 | 2, 3, 6, 7] */
    const __m256i order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    __m256i lo = _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(c0, c1), order);
    __m256i hi = _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(c2, c3), order);
    qgemm_avx2_store16(p, m, n, nc, lo, hi);
}

static void qgemm_avx2_madd_tile(const qgemm_args *p, ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t n0, ptrdiff_t n1) {
    ptrdiff_t G = p->Kp / QGEMM_KG, mb = qgemm_avx2_block_rows(p->Kp);
    ptrdiff_t cap = (m1 - m0 < mb ? qgemm_round_up(m1 - m0, QGEMM_AVX2_MR) : mb);
    uint32_t *ap = (uint32_t *)malloc((size_t)(cap * G * 2) * sizeof(uint32_t));
    if (ap == NULL) { qgemm_portable_tile(p, m0, m1, n0, n1); return; }
    for (ptrdiff_t mb0 = m0; mb0 < m1; mb0 += mb) {
        ptrdiff_t rows = m1 - mb0 < mb ? m1 - mb0 : mb;
        ptrdiff_t padded = rows >= QGEMM_AVX2_MR ? qgemm_round_up(rows, QGEMM_AVX2_MR) : rows;
        qgemm_avx2_pack_a(p, mb0, m1, padded, ap);
        for (ptrdiff_t n = n0; n < n1; n += QGEMM_NR) {
            const int8_t *panel = p->b + (n / QGEMM_NR) * p->Kp * QGEMM_NR;
            int nc = (int)(n1 - n < QGEMM_NR ? n1 - n : QGEMM_NR);
            ptrdiff_t r = 0;
            for (; r + QGEMM_AVX2_MR <= padded; r += QGEMM_AVX2_MR) {
                int mr = (int)(rows - r < QGEMM_AVX2_MR ? rows - r : QGEMM_AVX2_MR);
                qgemm_avx2_micro(p, ap + r * G * 2, G, panel, mb0 + r, mr, n, nc);
            }
            for (; r < rows; r++) qgemm_avx2_micro1(p, ap + r * G * 2, G, panel, mb0 + r, n, nc);
        }
    }
    free(ap);
}

/* ---- 2. vpmaddubsw for weights whose K pairs fit s16 ---- */

#define QGEMM_AVX2B_MR 4

/* Rows m .. m+rows-1 of A (rows past m1 repeat row m1-1) copied to ap, Kp bytes each, zero padded: only needed
 * when K % 4 != 0 (the microkernels read whole 4-byte groups); otherwise they read A in place. */
static void qgemm_avx2b_pack_a(const qgemm_args *p, ptrdiff_t m, ptrdiff_t m1, ptrdiff_t rows, uint8_t *ap) {
    for (ptrdiff_t r = 0; r < rows; r++) {
        memcpy(ap + r * p->Kp, qgemm_row(p, m + r, m1), (size_t)p->K);
        memset(ap + r * p->Kp + p->K, 0, (size_t)(p->Kp - p->K));
    }
}

/* sum over the 4 K of a group of a (4 bytes broadcast) x b (8 columns' 4 K), exact in s32 */
#define QGEMM_AVX2B_DOT4(a, b) _mm256_madd_epi16(_mm256_maddubs_epi16((a), (b)), ones)
/* c0 += DOT4(a, b0); c1 += DOT4(a, b1) for one row. GCC 12 interleaves the rows of the intrinsic version and
 * runs out of the 16 ymm registers (a spill and 8 register copies per group), so the x86 build writes the six
 * instructions for one row as inline asm: 14 live registers, no copies. (AT&T order: vpmaddubsw signed,
 * unsigned, dst.) */
#ifdef QGEMM_SIMD_EMULATION
#define QGEMM_AVX2B_ROW2(c0, c1, a, b0, b1)                                                  \
    do {                                                                                     \
        c0 = _mm256_add_epi32(c0, QGEMM_AVX2B_DOT4(a, b0));                                  \
        c1 = _mm256_add_epi32(c1, QGEMM_AVX2B_DOT4(a, b1));                                  \
    } while (0)
#else
#define QGEMM_AVX2B_ROW2(c0, c1, a, b0, b1)                                                  \
    do {                                                                                     \
        __m256i t0_, t1_;                                                                    \
        __asm__("vpmaddubsw %[w0], %[x], %[t0]\n\t"                                          \
                "vpmaddubsw %[w1], %[x], %[t1]\n\t"                                          \
                "vpmaddwd %[one], %[t0], %[t0]\n\t"                                          \
                "vpmaddwd %[one], %[t1], %[t1]\n\t"                                          \
                "vpaddd %[t0], %[s0], %[s0]\n\t"                                             \
                "vpaddd %[t1], %[s1], %[s1]"                                                 \
                : [s0] "+x"(c0), [s1] "+x"(c1), [t0] "=&x"(t0_), [t1] "=&x"(t1_)               \
                : [x] "x"(a), [w0] "x"(b0), [w1] "x"(b1), [one] "x"(ones));                  \
    } while (0)
#endif
#define QGEMM_AVX2B_A(r) _mm256_set1_epi32((int)qgemm_load_u32(a##r + 4 * g))

/* 4 rows (at a, row stride lda bytes) x one 16-column panel (or its first 8 columns when nc <= 8: the second
 * half of each 64-byte group block is then zero padding, not worth multiplying); stores the first mr rows. */
QGEMM_AVX2 static void qgemm_avx2b_micro(const qgemm_args *p, const uint8_t *a, ptrdiff_t lda, ptrdiff_t G,
                                         const int8_t *panel, ptrdiff_t m, int mr, ptrdiff_t n, int nc) {
    const uint8_t *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda;
    const __m256i ones = _mm256_set1_epi16(1), z = _mm256_setzero_si256();
    __m256i c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z;
    if (nc <= 8) {
        for (ptrdiff_t g = 0; g < G; g++) {
            __m256i b0 = _mm256_loadu_si256((const __m256i *)(panel + 64 * g));
            c00 = _mm256_add_epi32(c00, QGEMM_AVX2B_DOT4(QGEMM_AVX2B_A(0), b0));
            c10 = _mm256_add_epi32(c10, QGEMM_AVX2B_DOT4(QGEMM_AVX2B_A(1), b0));
            c20 = _mm256_add_epi32(c20, QGEMM_AVX2B_DOT4(QGEMM_AVX2B_A(2), b0));
            c30 = _mm256_add_epi32(c30, QGEMM_AVX2B_DOT4(QGEMM_AVX2B_A(3), b0));
        }
    } else {
        for (ptrdiff_t g = 0; g < G; g++) {
            __m256i b0 = _mm256_loadu_si256((const __m256i *)(panel + 64 * g));
            __m256i b1 = _mm256_loadu_si256((const __m256i *)(panel + 64 * g + 32));
            QGEMM_AVX2B_ROW2(c00, c01, QGEMM_AVX2B_A(0), b0, b1);
            QGEMM_AVX2B_ROW2(c10, c11, QGEMM_AVX2B_A(1), b0, b1);
            QGEMM_AVX2B_ROW2(c20, c21, QGEMM_AVX2B_A(2), b0, b1);
            QGEMM_AVX2B_ROW2(c30, c31, QGEMM_AVX2B_A(3), b0, b1);
        }
    }
    qgemm_avx2_store16(p, m, n, nc, c00, c01);
    if (mr > 1) qgemm_avx2_store16(p, m + 1, n, nc, c10, c11);
    if (mr > 2) qgemm_avx2_store16(p, m + 2, n, nc, c20, c21);
    if (mr > 3) qgemm_avx2_store16(p, m + 3, n, nc, c30, c31);
}

/* 1 row x one panel (GEMV and the row tail): even and odd groups in separate accumulators for more ILP. */
QGEMM_AVX2 static void qgemm_avx2b_micro1(const qgemm_args *p, const uint8_t *a0, ptrdiff_t G,
                                          const int8_t *panel, ptrdiff_t m, ptrdiff_t n, int nc) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0;
    ptrdiff_t g = 0;
    for (; g + 1 < G; g += 2) {
        const int8_t *blk = panel + 64 * g;
        __m256i x = QGEMM_AVX2B_A(0);
        __m256i x1 = _mm256_set1_epi32((int)qgemm_load_u32(a0 + 4 * g + 4));
        c0 = _mm256_add_epi32(c0, QGEMM_AVX2B_DOT4(x, _mm256_loadu_si256((const __m256i *)blk)));
        c1 = _mm256_add_epi32(c1, QGEMM_AVX2B_DOT4(x, _mm256_loadu_si256((const __m256i *)(blk + 32))));
        c2 = _mm256_add_epi32(c2, QGEMM_AVX2B_DOT4(x1, _mm256_loadu_si256((const __m256i *)(blk + 64))));
        c3 = _mm256_add_epi32(c3, QGEMM_AVX2B_DOT4(x1, _mm256_loadu_si256((const __m256i *)(blk + 96))));
    }
    if (g < G) {
        const int8_t *blk = panel + 64 * g;
        __m256i x = QGEMM_AVX2B_A(0);
        c0 = _mm256_add_epi32(c0, QGEMM_AVX2B_DOT4(x, _mm256_loadu_si256((const __m256i *)blk)));
        c1 = _mm256_add_epi32(c1, QGEMM_AVX2B_DOT4(x, _mm256_loadu_si256((const __m256i *)(blk + 32))));
    }
    qgemm_avx2_store16(p, m, n, nc, _mm256_add_epi32(c0, c2), _mm256_add_epi32(c1, c3));
}

/* Rows [m0, m1) x panels [n0, n1): A in blocks of up to mb rows (about L2), each block used for every panel.
 * With K % 4 == 0 the microkernels read A where it is; otherwise each block is first copied, zero padded. */
static void qgemm_avx2b_tile(const qgemm_args *p, ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t n0, ptrdiff_t n1) {
    ptrdiff_t G = p->Kp / QGEMM_KG;
    ptrdiff_t mb = (256 * 1024) / p->Kp;
    mb = mb > 256 ? 256 : mb;
    mb = mb / QGEMM_AVX2B_MR * QGEMM_AVX2B_MR;
    mb = mb < QGEMM_AVX2B_MR ? QGEMM_AVX2B_MR : mb;
    int copy = p->K != p->Kp;
    uint8_t *buf = NULL;
    if (copy) {
        ptrdiff_t cap = (m1 - m0 < mb ? qgemm_round_up(m1 - m0, QGEMM_AVX2B_MR) : mb);
        buf = (uint8_t *)malloc((size_t)(cap * p->Kp));
        if (buf == NULL) { qgemm_portable_tile(p, m0, m1, n0, n1); return; }
    }
    for (ptrdiff_t mb0 = m0; mb0 < m1; mb0 += mb) {
        ptrdiff_t rows = m1 - mb0 < mb ? m1 - mb0 : mb;
        const uint8_t *a = copy ? buf : p->a + mb0 * p->lda;
        ptrdiff_t lda = copy ? p->Kp : p->lda;
        if (copy) qgemm_avx2b_pack_a(p, mb0, m1, rows, buf);
        for (ptrdiff_t n = n0; n < n1; n += QGEMM_NR) {
            const int8_t *panel = p->b + (n / QGEMM_NR) * p->Kp * QGEMM_NR;
            int nc = (int)(n1 - n < QGEMM_NR ? n1 - n : QGEMM_NR);
            ptrdiff_t r = 0;
            for (; r + QGEMM_AVX2B_MR <= rows; r += QGEMM_AVX2B_MR)
                qgemm_avx2b_micro(p, a + r * lda, lda, G, panel, mb0 + r, QGEMM_AVX2B_MR, n, nc);
            for (; r < rows; r++) qgemm_avx2b_micro1(p, a + r * lda, G, panel, mb0 + r, n, nc);
        }
    }
    free(buf);
}

static void qgemm_avx2_tile(const qgemm_args *p, ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t n0, ptrdiff_t n1) {
    if (p->b_flags & QGEMM_FLAG_PAIRS_FIT_S16)
        qgemm_avx2b_tile(p, m0, m1, n0, n1);
    else
        qgemm_avx2_madd_tile(p, m0, m1, n0, n1);
}

#endif
