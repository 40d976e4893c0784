/* qgemm/avxvnni.h -- AVX-VNNI (256-bit vpdpbusd, VEX encoded: Alder Lake+, Zen 5 client parts). The same
 * arithmetic as avx512vnni.h on ymm: a 16-column panel is 2 ymm, the microkernel holds 6 rows x 1 panel = 12
 * accumulators, reads A rows directly with 4-byte broadcasts, and shares the AVX2 epilogue (qgemm_avx2_store16).
 * UNTESTED ON THE DEVELOPMENT MACHINE (no avx_vnni there): compiled everywhere on x86-64, exercised by review,
 * and only selected when the CPU reports avxvnni.
 */
#ifndef REFQUANT_QGEMM_AVXVNNI_H
#define REFQUANT_QGEMM_AVXVNNI_H

#ifdef QGEMM_SIMD_EMULATION
#include QGEMM_SIMD_EMULATION
#else
#include <immintrin.h>
#endif
#include "common.h"
#include "avx2.h"

#define QGEMM_AVXVNNI_MR 6
#define QGEMM_AVXVNNI QGEMM_TARGET("avx2,avxvnni")

/* acc = vpdpbusd(acc, x (u8), b (s8)), VEX encoded; inline asm for the same reason as QGEMM_DPBUSD512. */
#ifdef QGEMM_SIMD_EMULATION
#define QGEMM_DPBUSD256(acc, x, b) ((acc) = _mm256_dpbusd_avx_epi32((acc), (x), (b)))
#else
#define QGEMM_DPBUSD256(acc, x, b) __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(x), "x"(b))
#endif
#define QGEMM_Y_ROW(r, word)                                                                      \
    do {                                                                                          \
        __m256i x = _mm256_set1_epi32((int)(word));                                               \
        QGEMM_DPBUSD256(c##r##0, x, b0);                                                          \
        QGEMM_DPBUSD256(c##r##1, x, b1);                                                          \
    } while (0)
#define QGEMM_Y_ROWS(W) QGEMM_Y_ROW(0, W(0)); QGEMM_Y_ROW(1, W(1)); QGEMM_Y_ROW(2, W(2)); \
                        QGEMM_Y_ROW(3, W(3)); QGEMM_Y_ROW(4, W(4)); QGEMM_Y_ROW(5, W(5))
#define QGEMM_Y_FULL(r) qgemm_load_u32(a##r + 4 * g)
#define QGEMM_Y_TAIL(r) qgemm_tail_word(a##r, p->K)

/* 6 rows (a[0..5]; rows past the block repeat a valid row) x 1 panel: 12 accumulators; rows [0, mr) stored. */
QGEMM_AVXVNNI static void qgemm_avxvnni_6x1(const qgemm_args *p, const uint8_t *const *a, const int8_t *panel,
                                            ptrdiff_t m, int mr, ptrdiff_t n, int nc) {
    const uint8_t *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5];
    const ptrdiff_t Gfull = p->K / QGEMM_KG;
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
            c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    ptrdiff_t g = 0;
    for (; g < Gfull; g++) {
        __m256i b0 = _mm256_loadu_si256((const __m256i *)(panel + 64 * g));
        __m256i b1 = _mm256_loadu_si256((const __m256i *)(panel + 64 * g + 32));
        QGEMM_Y_ROWS(QGEMM_Y_FULL);
    }
    if (Gfull * QGEMM_KG < p->K) {      /* the zero-padded partial group */
        __m256i b0 = _mm256_loadu_si256((const __m256i *)(panel + 64 * g));
        __m256i b1 = _mm256_loadu_si256((const __m256i *)(panel + 64 * g + 32));
        QGEMM_Y_ROWS(QGEMM_Y_TAIL);
    }
    __m256i acc[6][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    for (int r = 0; r < mr; r++) qgemm_avx2_store16(p, m + r, n, nc, acc[r][0], acc[r][1]);
}

/* One row x 1 panel (blocks of fewer than 6 rows). */
QGEMM_AVXVNNI static void qgemm_avxvnni_1x1(const qgemm_args *p, const uint8_t *const *a, const int8_t *panel,
                                            ptrdiff_t m, ptrdiff_t n, int nc) {
    const uint8_t *a0 = a[0];
    const ptrdiff_t Gfull = p->K / QGEMM_KG;
    __m256i c00 = _mm256_setzero_si256(), c01 = c00;
    ptrdiff_t g = 0;
    for (; g < Gfull; g++) {
        __m256i b0 = _mm256_loadu_si256((const __m256i *)(panel + 64 * g));
        __m256i b1 = _mm256_loadu_si256((const __m256i *)(panel + 64 * g + 32));
        QGEMM_Y_ROW(0, QGEMM_Y_FULL(0));
    }
    if (Gfull * QGEMM_KG < p->K) {
        __m256i b0 = _mm256_loadu_si256((const __m256i *)(panel + 64 * g));
        __m256i b1 = _mm256_loadu_si256((const __m256i *)(panel + 64 * g + 32));
        QGEMM_Y_ROW(0, QGEMM_Y_TAIL(0));
    }
    qgemm_avx2_store16(p, m, n, nc, c00, c01);
}

static void qgemm_avxvnni_tile(const qgemm_args *p, ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t n0, ptrdiff_t n1) {
    ptrdiff_t mb = (128 * 1024) / (p->Kp > 0 ? p->Kp : 1);
    mb = mb < QGEMM_AVXVNNI_MR ? QGEMM_AVXVNNI_MR : mb > 510 ? 510 : mb / QGEMM_AVXVNNI_MR * QGEMM_AVXVNNI_MR;
    for (ptrdiff_t mb0 = m0; mb0 < m1; mb0 += mb) {
        ptrdiff_t mb1 = mb0 + mb < m1 ? mb0 + mb : m1;
        for (ptrdiff_t n = n0; n < n1; n += QGEMM_NR) {
            const int8_t *panel = p->b + (n / QGEMM_NR) * p->Kp * QGEMM_NR;
            int nc = (int)(n1 - n < QGEMM_NR ? n1 - n : QGEMM_NR);
            ptrdiff_t m = mb0;
            for (; m + QGEMM_AVXVNNI_MR <= mb1 || (m < mb1 && mb1 - mb0 >= QGEMM_AVXVNNI_MR); m += QGEMM_AVXVNNI_MR) {
                const uint8_t *a[QGEMM_AVXVNNI_MR];
                for (int r = 0; r < QGEMM_AVXVNNI_MR; r++) a[r] = qgemm_row(p, m + r, mb1);
                int mr = (int)(mb1 - m < QGEMM_AVXVNNI_MR ? mb1 - m : QGEMM_AVXVNNI_MR);
                qgemm_avxvnni_6x1(p, a, panel, m, mr, n, nc);
            }
            for (; m < mb1; m++) {          /* fewer than 6 rows in all: one row at a time */
                const uint8_t *a[1] = {p->a + m * p->lda};
                qgemm_avxvnni_1x1(p, a, panel, m, n, nc);
            }
        }
    }
}

#endif
