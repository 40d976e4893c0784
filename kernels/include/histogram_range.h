/* histogram_range.h -- the |x| range pass of kernels/histogram.pyx: the min and max of the |x| bit patterns
 * (x & magnitude) and the count of NaN/Inf (patterns >= nonfinite), alone or with the one-pass hist tail. Compiled
 * twice with GCC on x86-64 Linux, for AVX2 and for the baseline, the loader picking one (target_clones, as
 * search_fill.h). Integer min, max and counts: the same results on either clone; AVX2 has the 32-bit vector min /
 * max the baseline (SSE2) emulates. */
#ifndef REFQUANT_HISTOGRAM_RANGE_H
#define REFQUANT_HISTOGRAM_RANGE_H
#include <stddef.h>
#include <stdint.h>

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

/* The one-pass hist tail: found = the range of bits[0:n] as above, block by block (128 values); each block whose
 * max reaches the running cut (the running max less `half`, one exponent step) is scanned for the values at or
 * above it, 16 at a time (a vector test, then a branch-free look at the groups with one), the first `cap` written
 * to out in order (out holds cap + 1 values: the last is scratch). Returns how many were at or above their cut
 * (more than cap: the caller counts again). */
#define HR_RANGE_KEEP(name, T)                                                                                 \
    HR_CLONES static ptrdiff_t name(const T *bits, ptrdiff_t n, T magnitude, T nonfinite, T half, T *out,       \
                                    ptrdiff_t cap, T *found) {                                                 \
        T lo = magnitude, hi = 0, bad = 0, cut = 0;                                                            \
        ptrdiff_t m = 0;                                                                                       \
        for (ptrdiff_t b = 0; b < n; b += 128) {                                                               \
            const ptrdiff_t e = n - b < 128 ? n : b + 128;                                                     \
            T blo = magnitude, bhi = 0, cnt = 0;                                                               \
            HR_RANGE_LOOP(T, b, e, blo, bhi, cnt)                                                              \
            lo = blo < lo ? blo : lo;                                                                          \
            hi = bhi > hi ? bhi : hi;                                                                          \
            bad += cnt;                                                                                        \
            cut = hi > half ? hi - half : 0;                                                                   \
            if (bhi < cut || m > cap) continue; /* past the cap only the range is still needed */              \
            for (ptrdiff_t s = b; s < e; s += 16) {                                                            \
                const ptrdiff_t t = e - s < 16 ? e : s + 16;                                                   \
                int hit = 0;                                                                                   \
                for (ptrdiff_t k = s; k < t; k++) hit |= (bits[k] & magnitude) >= cut;                        \
                if (!hit) continue;                                                                            \
                for (ptrdiff_t k = s; k < t; k++) { /* branch-free: out[cap] takes the writes past the cap */   \
                    const T a = bits[k] & magnitude;                                                           \
                    out[m < cap ? m : cap] = a;                                                                \
                    m += a >= cut && a < nonfinite;                                                            \
                }                                                                                              \
            }                                                                                                  \
        }                                                                                                      \
        found[0] = lo, found[1] = hi, found[2] = bad;                                                          \
        return m;                                                                                              \
    }
HR_RANGE_KEEP(hr_range_keep_i32, int32_t)
HR_RANGE_KEEP(hr_range_keep_i64, int64_t)
#undef HR_RANGE_KEEP
#undef HR_RANGE_LOOP

#endif
