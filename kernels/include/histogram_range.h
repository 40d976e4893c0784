/* histogram_range.h -- the |x| range pass of kernels/histogram.pyx: the min and max of the |x| bit patterns
 * (x & magnitude) and the count of NaN/Inf (patterns >= nonfinite); the copy of the one-pass hist tail. Compiled
 * twice with GCC on x86-64 Linux, for AVX2 and for the baseline, the loader picking one (target_clones, as
 * search_fill.h). Integer min, max and counts: the same results on either clone; AVX2 has the 32-bit vector min /
 * max the baseline (SSE2) emulates. The float32 tail copy also has an AVX2 loop of its own, taken at run time. */
#ifndef REFQUANT_HISTOGRAM_RANGE_H
#define REFQUANT_HISTOGRAM_RANGE_H
#include <stddef.h>
#include <stdint.h>
#include "cpu_features.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define HR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define HR_CLONES
#endif

/* lo, hi, cnt folded with the |x| patterns of bits[b:e]: their min, their max, and how many are NaN/Inf. */
#define HR_RANGE_LOOP(T, b, e, lo, hi, cnt)                                                                    \
    for (ptrdiff_t k = b; k < e; k++) {                                                                        \
        const T a = bits[k] & magnitude;                                                                       \
        lo = a < lo ? a : lo;                                                                                  \
        hi = a > hi ? a : hi;                                                                                  \
        cnt += a >= nonfinite;                                                                                 \
    }

/* found = (min, max, count) over bits[0:n], the count of the data's width (so that the compares vectorize). */
#define HR_ABS_RANGE(name, T)                                                                                  \
    HR_CLONES static void name(const T *bits, ptrdiff_t n, T magnitude, T nonfinite, T *found) {               \
        T lo = magnitude, hi = 0, bad = 0;                                                                    \
        HR_RANGE_LOOP(T, 0, n, lo, hi, bad)                                                                    \
        found[0] = lo, found[1] = hi, found[2] = bad;                                                          \
    }
HR_ABS_RANGE(hr_abs_range_i32, int32_t)
HR_ABS_RANGE(hr_abs_range_i64, int64_t)
#undef HR_ABS_RANGE

/* The one-pass hist tail's copy, after the range pass has fixed `cut`: the |x| patterns a of bits[0:n] with
 * cut <= a < nonfinite, in order, the first `cap` written to out (which holds cap + 1: out[cap] takes the writes
 * past the cap). Groups of 16 pass a vector test first; a group holding one is copied branch-free. Returns how
 * many, stopping at cap + 1 (then the rest is not read). */
#define HR_KEEP(name, T)                                                                                       \
    HR_CLONES static ptrdiff_t name(const T *bits, ptrdiff_t n, T magnitude, T nonfinite, T cut, T *out,        \
                                    ptrdiff_t cap) {                                                           \
        ptrdiff_t m = 0;                                                                                       \
        for (ptrdiff_t s = 0; s < n && m <= cap; s += 16) {                                                    \
            const ptrdiff_t t = n - s < 16 ? n : s + 16;                                                       \
            int hit = 0;                                                                                       \
            for (ptrdiff_t k = s; k < t; k++) hit |= (bits[k] & magnitude) >= cut;                            \
            if (!hit) continue;                                                                                \
            for (ptrdiff_t k = s; k < t; k++) {                                                                \
                const T a = bits[k] & magnitude;                                                               \
                out[m < cap ? m : cap] = a;                                                                    \
                m += a >= cut && a < nonfinite;                                                                \
            }                                                                                                  \
        }                                                                                                      \
        return m <= cap ? m : cap + 1;                                                                         \
    }
HR_KEEP(hr_keep_i32_portable, int32_t)
HR_KEEP(hr_keep_i64, int64_t)
#undef HR_KEEP
#undef HR_RANGE_LOOP

#if defined(__x86_64__)
#include <immintrin.h>
/* hr_keep for float32 on AVX2: 32 values tested per step, the groups of 8 holding a kept value copied lane by lane
 * (a tail is 1-4% of the values: most steps copy nothing). The same values in the same order as the loop above. */
__attribute__((target("avx2"), unused)) static ptrdiff_t hr_keep_i32_avx2(const int32_t *bits, ptrdiff_t n,
                                                                         int32_t magnitude, int32_t nonfinite,
                                                                         int32_t cut, int32_t *out, ptrdiff_t cap) {
    const __m256i mag = _mm256_set1_epi32(magnitude), below = _mm256_set1_epi32(cut > 0 ? cut - 1 : -1);
    const __m256i top = _mm256_set1_epi32(nonfinite);
    int32_t lane[8];
    ptrdiff_t m = 0, s = 0;
    for (; s + 32 <= n && m <= cap; s += 32) {
        __m256i v[4];   /* the |x| patterns of 32 values; mask bit i: lane i kept */
        int mask[4];
        for (int g = 0; g < 4; g++) {    /* cut <= a < nonfinite (a >= 0; a cut <= 0, -0.0 included, keeps all) */
            v[g] = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(bits + s + 8 * g)), mag);
            __m256i kept = _mm256_and_si256(_mm256_cmpgt_epi32(v[g], below), _mm256_cmpgt_epi32(top, v[g]));
            mask[g] = _mm256_movemask_ps(_mm256_castsi256_ps(kept));
        }
        for (int g = 0; g < 4; g++) {
            if (!mask[g]) continue;
            _mm256_storeu_si256((__m256i *)lane, v[g]);
            for (int b = mask[g]; b; b &= b - 1, m++) out[m < cap ? m : cap] = lane[__builtin_ctz(b)];
        }
    }
    return m > cap ? cap + 1 : m + hr_keep_i32_portable(bits + s, n - s, magnitude, nonfinite, cut, out + m, cap - m);
}
#endif

/* hr_keep for float32: the AVX2 loop where the CPU has it, unless `portable`. */
static ptrdiff_t hr_keep_i32(const int32_t *bits, ptrdiff_t n, int32_t magnitude, int32_t nonfinite, int32_t cut,
                             int32_t *out, ptrdiff_t cap, int portable) {
    (void)portable;
#if defined(__x86_64__)
    if (!portable && rq_cpu_has(RQ_CPU_AVX2)) return hr_keep_i32_avx2(bits, n, magnitude, nonfinite, cut, out, cap);
#endif
    return hr_keep_i32_portable(bits, n, magnitude, nonfinite, cut, out, cap);
}

#endif
