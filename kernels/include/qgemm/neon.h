/* qgemm/neon.h -- aarch64 Advanced SIMD without the dot-product extension.
 *
 * vmull_s8 is s8 x s8, so the activation is shifted into s8 (a - 128 = a ^ 0x80) and the path computes
 *     sum_k (a - 128) * w  =  dot - 128 * colsum_b        (the wrapper adds 128 * colsum_b back: shifts_a = 1)
 * Every product fits in s16 (|(a-128) * w| <= 128 * 128 = 16384); vpadalq_s16 adds adjacent pairs into s32.
 * A 16-byte B vector holds 4 columns x 4 K; its products with the 4 activation bytes (repeated 4 times) give
 * after vpadalq [c0 (k0+k1), c0 (k2+k3), c1 .., c1 ..] (low half) and c2, c3 (high half); vpaddq folds them at
 * the end. 2 rows x 16 columns = 16 accumulators. The epilogue is the scalar qgemm_store_row.
 */
#ifndef REFQUANT_QGEMM_NEON_H
#define REFQUANT_QGEMM_NEON_H

#include <arm_neon.h>
#include "common.h"

#define QGEMM_NEON_MR 2

static inline int8x16_t qgemm_neon_a4(const uint8_t *row, ptrdiff_t g, ptrdiff_t K) {
    uint32_t w = 4 * (g + 1) <= K ? qgemm_load_u32(row + 4 * g) : qgemm_tail_word(row, K);
    /* padding bytes must stay 0 after the shift: they multiply zero weights, so any value is fine */
    return vreinterpretq_s8_u32(vdupq_n_u32(w ^ 0x80808080u));
}

static void qgemm_neon_tile(const qgemm_args *p, ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t n0, ptrdiff_t n1) {
    const ptrdiff_t G = p->Kp / QGEMM_KG;
    for (ptrdiff_t n = n0; n < n1; n += QGEMM_NR) {
        const int8_t *panel = p->b + (n / QGEMM_NR) * p->Kp * QGEMM_NR;
        int nc = (int)(n1 - n < QGEMM_NR ? n1 - n : QGEMM_NR);
        for (ptrdiff_t m = m0; m < m1; m += QGEMM_NEON_MR) {
            const uint8_t *r0 = qgemm_row(p, m, m1), *r1 = qgemm_row(p, m + 1, m1);
            int32x4_t acc[QGEMM_NEON_MR][8];
            for (int r = 0; r < QGEMM_NEON_MR; r++)
                for (int j = 0; j < 8; j++) acc[r][j] = vdupq_n_s32(0);
            for (ptrdiff_t g = 0; g < G; g++) {
                int8x16_t x0 = qgemm_neon_a4(r0, g, p->K), x1 = qgemm_neon_a4(r1, g, p->K);
                for (int q = 0; q < 4; q++) {
                    int8x16_t b = vld1q_s8(panel + 64 * g + 16 * q);
                    acc[0][2 * q] = vpadalq_s16(acc[0][2 * q], vmull_s8(vget_low_s8(b), vget_low_s8(x0)));
                    acc[0][2 * q + 1] = vpadalq_s16(acc[0][2 * q + 1], vmull_high_s8(b, x0));
                    acc[1][2 * q] = vpadalq_s16(acc[1][2 * q], vmull_s8(vget_low_s8(b), vget_low_s8(x1)));
                    acc[1][2 * q + 1] = vpadalq_s16(acc[1][2 * q + 1], vmull_high_s8(b, x1));
                }
            }
            for (int r = 0; r < QGEMM_NEON_MR && m + r < m1; r++) {
                int32_t dot[QGEMM_NR];
                for (int q = 0; q < 4; q++)
                    vst1q_s32(dot + 4 * q, vpaddq_s32(acc[r][2 * q], acc[r][2 * q + 1]));
                qgemm_store_row(p, m + r, n, nc, dot);
            }
        }
    }
}

#endif
