/* peak.h -- single-core throughput micro-benchmarks (kernels/peak.pyx): 12 independent chains of one vector
 * instruction, long enough that the loop overhead vanishes. benchmarks/bench_gemm.py reports the INT8 GEMM as a
 * fraction of these peaks.
 * Each function runs `iters` iterations of 12 instructions and returns a value that depends on all chains (so
 * the compiler cannot drop them); the caller times it. Operations per instruction:
 *   fma512: 16 lanes * 2 = 32 flops   fma256: 16 flops   dpbusd512: 64 MACs = 128 ops   dpbusd256: 64 ops
 *   madd256 (vpmaddwd, the AVX2 path's multiply): 16 MACs = 32 ops */
#ifndef REFQUANT_PEAK_H
#define REFQUANT_PEAK_H

#include <stdint.h>

#define PEAK_CHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

#if defined(__x86_64__)
#include <immintrin.h>
#define PEAK_X86 1

__attribute__((target("avx2,fma"))) static double peak_fma256(long iters) {
#define D(i) __m256 c##i = _mm256_set1_ps(1.0f + i * 1e-3f);
    PEAK_CHAINS(D)
#undef D
    __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
    for (long t = 0; t < iters; t++) {
#define F(i) c##i = _mm256_fmadd_ps(c##i, x, y);
        PEAK_CHAINS(F)
#undef F
    }
    float s[8];
#define S(i) c0 = _mm256_add_ps(c0, c##i);
    PEAK_CHAINS(S)
#undef S
    _mm256_storeu_ps(s, c0);
    return s[0];
}

__attribute__((target("avx512f"))) static double peak_fma512(long iters) {
#define D(i) __m512 c##i = _mm512_set1_ps(1.0f + i * 1e-3f);
    PEAK_CHAINS(D)
#undef D
    __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
    for (long t = 0; t < iters; t++) {
#define F(i) c##i = _mm512_fmadd_ps(c##i, x, y);
        PEAK_CHAINS(F)
#undef F
    }
#define S(i) c0 = _mm512_add_ps(c0, c##i);
    PEAK_CHAINS(S)
#undef S
    return _mm512_reduce_add_ps(c0);
}

__attribute__((target("avx512f,avx512vnni"))) static double peak_dpbusd512(long iters) {
#define D(i) __m512i c##i = _mm512_set1_epi32(i);
    PEAK_CHAINS(D)
#undef D
    __m512i x = _mm512_set1_epi32(0x01010101), y = _mm512_set1_epi32(0x01FF01FF);
    for (long t = 0; t < iters; t++) {
#define F(i) c##i = _mm512_dpbusd_epi32(c##i, x, y);
        PEAK_CHAINS(F)
#undef F
    }
#define S(i) c0 = _mm512_add_epi32(c0, c##i);
    PEAK_CHAINS(S)
#undef S
    return (double)_mm512_reduce_add_epi32(c0);
}

__attribute__((target("avx2,avxvnni"))) static double peak_dpbusd256(long iters) {
#define D(i) __m256i c##i = _mm256_set1_epi32(i);
    PEAK_CHAINS(D)
#undef D
    __m256i x = _mm256_set1_epi32(0x01010101), y = _mm256_set1_epi32(0x01FF01FF);
    for (long t = 0; t < iters; t++) {
#define F(i) c##i = _mm256_dpbusd_avx_epi32(c##i, x, y);
        PEAK_CHAINS(F)
#undef F
    }
    int32_t s[8];
#define S(i) c0 = _mm256_add_epi32(c0, c##i);
    PEAK_CHAINS(S)
#undef S
    _mm256_storeu_si256((__m256i *)s, c0);
    return s[0];
}

__attribute__((target("avx2"))) static double peak_madd256(long iters) {
#define D(i) __m256i c##i = _mm256_set1_epi32(i + 1);
    PEAK_CHAINS(D)
#undef D
    __m256i y = _mm256_set1_epi32(0x00010001);
    for (long t = 0; t < iters; t++) {
#define F(i) c##i = _mm256_madd_epi16(c##i, y);
        PEAK_CHAINS(F)
#undef F
    }
    int32_t s[8];
#define S(i) c0 = _mm256_add_epi32(c0, c##i);
    PEAK_CHAINS(S)
#undef S
    _mm256_storeu_si256((__m256i *)s, c0);
    return s[0];
}
#else
#define PEAK_X86 0
static double peak_fma256(long n) { (void)n; return 0; }
static double peak_fma512(long n) { (void)n; return 0; }
static double peak_dpbusd512(long n) { (void)n; return 0; }
static double peak_dpbusd256(long n) { (void)n; return 0; }
static double peak_madd256(long n) { (void)n; return 0; }
#endif

#endif
