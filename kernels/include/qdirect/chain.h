/* qdirect/chain.h -- the float steps between INT8 ops that must give the same bits wherever they run: the
 * round-and-clamp to u8 (qd_q8) and the scalar chain (qd_chain_span). Included by qdirect/common.h and by
 * qgemm/post.h (the GEMM's post-op), and nothing else: plain C, no intrinsics.
 * Compile with -ffp-contract=off: a fused multiply-add would change the float32 products the twin computes. */
#ifndef QDIRECT_CHAIN_H
#define QDIRECT_CHAIN_H

#include <stddef.h>
#include <stdint.h>

#define QD_INLINE static inline __attribute__((always_inline))

/* Round-and-clamp to u8: clamp(rint(f) + zero, lo, hi), computed as rint(clamp(f, lo - zero, hi - zero)) + zero
 * with lo_f = lo - zero, hi_f = hi - zero. The two are equal because rint is monotone and the bounds are
 * integers; clamping first keeps |f| <= 510, where (f + 1.5*2^23) - 1.5*2^23 is rint in the default rounding
 * mode (ties to even). A NaN f fails the first comparison and becomes lo (the twin does the same). */
QD_INLINE uint8_t qd_q8(float f, float lo_f, float hi_f, int32_t zero) {
    f = f > lo_f ? f : lo_f;
    f = f < hi_f ? f : hi_f;
    f = (f + 12582912.0f) - 12582912.0f;
    return (uint8_t)((int32_t)f + zero);
}

/* A chain of scalar float ops as PaddleOCR's graphs spell them, in one pass, each step rounded to float32 as
 * the separate ops do: t = x * pre_mul + pre_add (a "learnable affine block"; identities 1 and -0.0, both exact);
 * hard swish if hs: u = min(max(t + offset, 0), threshold) (NaN -> 0), t = (t * u) / scale; then
 * t = t * post_mul + post_add; y (if not NULL) = t, q (if not NULL) = qd_q8(t * sinv). k = (pre_mul, pre_add,
 * offset, threshold, scale, post_mul, post_add). The one definition for fused_scalar_chain and for the post-op
 * of an INT8 conv / matmul (qgemm/post.h, the depthwise wrapper): fused or not, the same bits. */
#define QD_CHAIN_LOOP(store)                                                                                    \
    for (ptrdiff_t i = 0; i < n; i++) {                                                                         \
        float t = x[i] * pre_mul;                                                                               \
        t = t + pre_add;                                                                                        \
        if (hs) {                                                                                               \
            float u = t + offset;                                                                               \
            u = u > 0.0f ? u : 0.0f;                                                                            \
            u = u < threshold ? u : threshold;                                                                  \
            t = (t * u) / scale;                                                                                \
        }                                                                                                       \
        t = t * post_mul;                                                                                       \
        t = t + post_add;                                                                                       \
        store;                                                                                                  \
    }
QD_INLINE void qd_chain_span(const float *x, ptrdiff_t n, const float *k, int hs, float *y, uint8_t *q, float sinv,
                             float lo_f, float hi_f, int32_t zero) {
    const float pre_mul = k[0], pre_add = k[1], offset = k[2], threshold = k[3], scale = k[4], post_mul = k[5],
                post_add = k[6];
    /* one loop per set of outputs, so each is a plain loop the compiler vectorizes wherever it is inlined */
    if (y && q) {
        QD_CHAIN_LOOP((y[i] = t, q[i] = qd_q8(t * sinv, lo_f, hi_f, zero)))
    } else if (q) {
        QD_CHAIN_LOOP(q[i] = qd_q8(t * sinv, lo_f, hi_f, zero))
    } else if (y) {
        QD_CHAIN_LOOP(y[i] = t)
    }
}
#undef QD_CHAIN_LOOP

#endif
