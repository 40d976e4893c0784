/* qgemm/dotprod.h -- aarch64 4-way int8 dot products into s32 lanes.
 *
 * "i8mm":    usdot (vusdotq_s32, FEAT_I8MM) multiplies u8 activations with s8 weights directly.
 * "dotprod": sdot (vdotq_s32, FEAT_DotProd) is s8 x s8 only, so the activation is shifted (a - 128 = a ^ 0x80) and
 *            the wrapper adds 128 * colsum_b back (shifts_a = 1): sum (a - 128) * w + 128 * sum w = sum a * w,
 *            exact in int32.
 * Both read the same packed B: one 16-byte vector = 4 columns x 4 K, so lane c of the dot product is column c.
 * Microkernel: 4 rows x 16 columns = 16 accumulators, the 4 activation bytes of a group broadcast per row.
 * The epilogue is the scalar qgemm_store_row (bit-identical by construction).
 */
#ifndef REFQUANT_QGEMM_DOTPROD_H
#define REFQUANT_QGEMM_DOTPROD_H

#include <arm_neon.h>
#include "common.h"

#define QGEMM_DOT_MR 4
#define QGEMM_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
#define QGEMM_I8MM __attribute__((target("arch=armv8.2-a+i8mm")))

static inline uint32_t qgemm_dot_word(const uint8_t *row, ptrdiff_t g, ptrdiff_t K) {
    return 4 * (g + 1) <= K ? qgemm_load_u32(row + 4 * g) : qgemm_tail_word(row, K);
}

static inline void qgemm_dot_store(const qgemm_args *p, int32x4_t acc[QGEMM_DOT_MR][4], ptrdiff_t m, ptrdiff_t m1,
                                   ptrdiff_t n, int nc) {
    for (int r = 0; r < QGEMM_DOT_MR && m + r < m1; r++) {
        int32_t dot[QGEMM_NR];
        for (int q = 0; q < 4; q++) vst1q_s32(dot + 4 * q, acc[r][q]);
        qgemm_store_row(p, m + r, n, nc, dot);
    }
}

QGEMM_DOTPROD static void qgemm_dotprod_tile(const qgemm_args *p, ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t n0,
                                             ptrdiff_t n1) {
    const ptrdiff_t G = p->Kp / QGEMM_KG;
    for (ptrdiff_t n = n0; n < n1; n += QGEMM_NR) {
        const int8_t *panel = p->b + (n / QGEMM_NR) * p->Kp * QGEMM_NR;
        int nc = (int)(n1 - n < QGEMM_NR ? n1 - n : QGEMM_NR);
        for (ptrdiff_t m = m0; m < m1; m += QGEMM_DOT_MR) {
            const uint8_t *rows[QGEMM_DOT_MR];
            int32x4_t acc[QGEMM_DOT_MR][4];
            for (int r = 0; r < QGEMM_DOT_MR; r++) {
                rows[r] = qgemm_row(p, m + r, m1);
                for (int q = 0; q < 4; q++) acc[r][q] = vdupq_n_s32(0);
            }
            for (ptrdiff_t g = 0; g < G; g++) {
                int8x16_t b0 = vld1q_s8(panel + 64 * g), b1 = vld1q_s8(panel + 64 * g + 16);
                int8x16_t b2 = vld1q_s8(panel + 64 * g + 32), b3 = vld1q_s8(panel + 64 * g + 48);
                for (int r = 0; r < QGEMM_DOT_MR; r++) {
                    int8x16_t x = vreinterpretq_s8_u32(vdupq_n_u32(qgemm_dot_word(rows[r], g, p->K) ^ 0x80808080u));
                    acc[r][0] = vdotq_s32(acc[r][0], b0, x);
                    acc[r][1] = vdotq_s32(acc[r][1], b1, x);
                    acc[r][2] = vdotq_s32(acc[r][2], b2, x);
                    acc[r][3] = vdotq_s32(acc[r][3], b3, x);
                }
            }
            qgemm_dot_store(p, acc, m, m1, n, nc);
        }
    }
}

QGEMM_I8MM static void qgemm_i8mm_tile(const qgemm_args *p, ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t n0,
                                       ptrdiff_t n1) {
    const ptrdiff_t G = p->Kp / QGEMM_KG;
    for (ptrdiff_t n = n0; n < n1; n += QGEMM_NR) {
        const int8_t *panel = p->b + (n / QGEMM_NR) * p->Kp * QGEMM_NR;
        int nc = (int)(n1 - n < QGEMM_NR ? n1 - n : QGEMM_NR);
        for (ptrdiff_t m = m0; m < m1; m += QGEMM_DOT_MR) {
            const uint8_t *rows[QGEMM_DOT_MR];
            int32x4_t acc[QGEMM_DOT_MR][4];
            for (int r = 0; r < QGEMM_DOT_MR; r++) {
                rows[r] = qgemm_row(p, m + r, m1);
                for (int q = 0; q < 4; q++) acc[r][q] = vdupq_n_s32(0);
            }
            for (ptrdiff_t g = 0; g < G; g++) {
                int8x16_t b0 = vld1q_s8(panel + 64 * g), b1 = vld1q_s8(panel + 64 * g + 16);
                int8x16_t b2 = vld1q_s8(panel + 64 * g + 32), b3 = vld1q_s8(panel + 64 * g + 48);
                for (int r = 0; r < QGEMM_DOT_MR; r++) {
                    uint8x16_t x = vreinterpretq_u8_u32(vdupq_n_u32(qgemm_dot_word(rows[r], g, p->K)));
                    acc[r][0] = vusdotq_s32(acc[r][0], x, b0);
                    acc[r][1] = vusdotq_s32(acc[r][1], x, b1);
                    acc[r][2] = vusdotq_s32(acc[r][2], x, b2);
                    acc[r][3] = vusdotq_s32(acc[r][3], x, b3);
                }
            }
            qgemm_dot_store(p, acc, m, m1, n, nc);
        }
    }
}

#endif
