/* qgemm/portable.h -- plain C loops, no intrinsics: the reference every vector path is tested against.
 * dot[m, n] = sum_k a[m, k] * w[k, n], accumulated in uint32 (wraps modulo 2^32 like the vector paths). */
#ifndef REFQUANT_QGEMM_PORTABLE_H
#define REFQUANT_QGEMM_PORTABLE_H

#include "common.h"

static void qgemm_portable_tile(const qgemm_args *p, ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t n0, ptrdiff_t n1) {
    for (ptrdiff_t n = n0; n < n1; n += QGEMM_NR) {
        const int8_t *panel = p->b + (n / QGEMM_NR) * p->Kp * QGEMM_NR;
        int nc = (int)(n1 - n < QGEMM_NR ? n1 - n : QGEMM_NR);
        for (ptrdiff_t m = m0; m < m1; m++) {
            const uint8_t *row = p->a + m * p->lda;
            uint32_t acc[QGEMM_NR] = {0};
            for (ptrdiff_t k = 0; k < p->K; k++) {
                const int8_t *blk = panel + (k / QGEMM_KG) * 64 + k % QGEMM_KG;
                uint32_t x = row[k];
                for (int c = 0; c < QGEMM_NR; c++) acc[c] += x * (uint32_t)(int32_t)blk[4 * c];
            }
            int32_t dot[QGEMM_NR];
            for (int c = 0; c < QGEMM_NR; c++) dot[c] = (int32_t)acc[c];
            qgemm_store_row(p, m, n, nc, dot);
        }
    }
}

#endif
