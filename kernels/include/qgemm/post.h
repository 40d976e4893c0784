/* qgemm/post.h -- an INT8 GEMM whose float output feeds a scalar chain (a conv followed by its hard swish):
 * oneDNN's post-ops, done blockwise. Each block of rows x columns goes through the path's own tile function
 * into a float buffer on this thread's stack (32 KB, so it stays in L1/L2), then through the chain of
 * qdirect/chain.h into the real outputs. The float tensor never goes to memory, and the numbers are exactly
 * those of the two ops run one after the other. */
#ifndef REFQUANT_QGEMM_POST_H
#define REFQUANT_QGEMM_POST_H

#include "common.h"
#include "cpu_features.h"
#include "qdirect/chain.h"

#define QGEMM_POST_FLOATS 8192  /* a multiple of QGEMM_NR; 32 KB of stack */
#define QGEMM_POST_ROW_STEP 12  /* block heights are multiples of the microkernels' 3 and 4 rows */

/* The chain over rows [r0, r0 + rows) x columns [c0, c0 + w) of the output, from buf (rows x w floats). Compiled
 * twice on x86-64, the AVX2 copy vectorized 8 wide (the baseline one runs 4 wide): same operations, same bits. */
#define QGEMM_CHAIN_ROWS_BODY                                                                                     \
    if ((!post->y || post->ldy == w) && (!post->q || post->ldq == w)) { /* whole rows (c0 = 0): one span */      \
        qd_chain_span(buf, rows * w, post->k, post->hs, post->y ? post->y + r0 * w : NULL,                        \
                      post->q ? post->q + r0 * w : NULL, post->sinv, post->lo_f, post->hi_f, post->zero);         \
        return;                                                                                                   \
    }                                                                                                             \
    for (ptrdiff_t r = 0; r < rows; r++)                                                                          \
        qd_chain_span(buf + r * w, w, post->k, post->hs, post->y ? post->y + (r0 + r) * post->ldy + c0 : NULL,    \
                      post->q ? post->q + (r0 + r) * post->ldq + c0 : NULL, post->sinv, post->lo_f, post->hi_f,   \
                      post->zero);

__attribute__((unused)) static void qgemm_chain_rows(const qgemm_post *post, const float *buf, ptrdiff_t rows, ptrdiff_t w, ptrdiff_t r0,
                             ptrdiff_t c0) {
    QGEMM_CHAIN_ROWS_BODY
}

#if defined(__x86_64__)
__attribute__((target("avx2"), unused)) static void qgemm_chain_rows_avx2(const qgemm_post *post, const float *buf,
                                                                  ptrdiff_t rows, ptrdiff_t w, ptrdiff_t r0,
                                                                  ptrdiff_t c0) {
    QGEMM_CHAIN_ROWS_BODY
}
#endif

__attribute__((unused)) static void qgemm_post_tile(qgemm_tile_fn tile, const qgemm_args *p, ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t n0,
                            ptrdiff_t n1) {
    float buf[QGEMM_POST_FLOATS];
    const qgemm_post *post = p->post;
#if defined(__x86_64__)
    const int avx2 = rq_cpu_has(RQ_CPU_AVX2);
#endif
    for (ptrdiff_t c0 = n0; c0 < n1; c0 += QGEMM_POST_FLOATS) {
        const ptrdiff_t w = n1 - c0 < QGEMM_POST_FLOATS ? n1 - c0 : QGEMM_POST_FLOATS;
        const ptrdiff_t fit = QGEMM_POST_FLOATS / w;
        const ptrdiff_t rb = fit >= QGEMM_POST_ROW_STEP ? fit / QGEMM_POST_ROW_STEP * QGEMM_POST_ROW_STEP : fit;
        /* columns [c0, c0 + w) as a GEMM of their own: panels, offsets and scales from c0 (a panel boundary) */
        qgemm_args q = *p;
        q.N = w;
        q.Np = qgemm_round_up(w, QGEMM_NR);
        q.b = p->b + (c0 / QGEMM_NR) * p->Kp * QGEMM_NR;
        q.offset = p->offset + c0;
        q.scale = p->scale + c0;
        q.fbias = p->fbias ? p->fbias + c0 : NULL;
        q.out_kind = QGEMM_OUT_F32;
        q.out = buf;
        q.ldo = w;
        q.post = NULL;
        for (ptrdiff_t r0 = m0; r0 < m1; r0 += rb) {
            const ptrdiff_t rows = m1 - r0 < rb ? m1 - r0 : rb;
            q.a = p->a + r0 * p->lda;
            q.M = rows;
            tile(&q, 0, rows, 0, w);
#if defined(__x86_64__)
            if (avx2) {
                qgemm_chain_rows_avx2(post, buf, rows, w, r0, c0);
                continue;
            }
#endif
            qgemm_chain_rows(post, buf, rows, w, r0, c0);
        }
    }
}

#endif
