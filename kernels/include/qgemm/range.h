/* qgemm/range.h -- min and max of a float32 array in one pass: the range of a dynamic quantizer (per tensor), read
 * once instead of twice. A NaN or an inf anywhere sets *bad (x - x is then NaN). min and max are exact in any
 * order, so chunks of the array can go to any thread. */
#ifndef REFQUANT_QGEMM_RANGE_H
#define REFQUANT_QGEMM_RANGE_H

#include <math.h>
#include <stddef.h>
#include "cpu_features.h"

__attribute__((unused)) static void qgemm_range_portable(const float *x, ptrdiff_t n, float *lo, float *hi,
                                                         int *bad) {
    float l = x[0], h = x[0], z = 0.0f;
    for (ptrdiff_t i = 0; i < n; i++) {
        l = x[i] < l ? x[i] : l;
        h = x[i] > h ? x[i] : h;
        z += x[i] - x[i];
    }
    *lo = l; *hi = h; *bad = z != z;
}

#if defined(__x86_64__) && !defined(QGEMM_SIMD_EMULATION)
#include <immintrin.h>
__attribute__((target("avx2"), unused)) static void qgemm_range_avx2(const float *x, ptrdiff_t n, float *lo,
                                                                     float *hi, int *bad) {
    __m256 l0 = _mm256_set1_ps(x[0]), l1 = l0, h0 = l0, h1 = l0, z0 = _mm256_setzero_ps(), z1 = z0;
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
        l0 = _mm256_min_ps(l0, a); h0 = _mm256_max_ps(h0, a); z0 = _mm256_add_ps(z0, _mm256_sub_ps(a, a));
        l1 = _mm256_min_ps(l1, b); h1 = _mm256_max_ps(h1, b); z1 = _mm256_add_ps(z1, _mm256_sub_ps(b, b));
    }
    float tl[8], th[8], tz[8];
    _mm256_storeu_ps(tl, _mm256_min_ps(l0, l1));
    _mm256_storeu_ps(th, _mm256_max_ps(h0, h1));
    _mm256_storeu_ps(tz, _mm256_add_ps(z0, z1));
    float l, h;
    int b;
    qgemm_range_portable(x + i - (i == n ? 1 : 0), n - i + (i == n ? 1 : 0), &l, &h, &b);   /* the tail (>= 1) */
    for (int k = 0; k < 8; k++) {
        l = tl[k] < l ? tl[k] : l;
        h = th[k] > h ? th[k] : h;
        b |= tz[k] != tz[k];
    }
    *lo = l; *hi = h; *bad = b;
}
#endif

/* min and max of x[0 .. n) (n >= 1); *bad = 1 if x holds NaN or inf (lo, hi are then meaningless). */
__attribute__((unused)) static void qgemm_range_f32(const float *x, ptrdiff_t n, int portable, float *lo,
                                                    float *hi, int *bad) {
    (void)portable;
#if defined(__x86_64__) && !defined(QGEMM_SIMD_EMULATION)
    if (!portable && rq_cpu_has(RQ_CPU_AVX2)) {
        qgemm_range_avx2(x, n, lo, hi, bad);
        return;
    }
#endif
    qgemm_range_portable(x, n, lo, hi, bad);
}

#endif
