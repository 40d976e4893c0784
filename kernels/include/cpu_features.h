/* cpu_features.h -- the one run-time CPU feature detector of the compiled kernels (qgemm, qdirect, floatops).
 *
 * Each kernel family keeps a table of its ISA paths, best first: {name, the RQ_CPU_* features it needs, its
 * functions}. A path runs when rq_cpu_has(its features) is true; the Python side (refquant/_paths.py) picks the
 * best such path once, or the one the environment forces. One build serves every machine: the vector code
 * carries per-function __attribute__((target(...))), never global -m flags.
 *
 * x86-64: __builtin_cpu_supports (it checks the OS-enabled register state too). aarch64: NEON is baseline, dotprod
 * and i8mm come from the kernel's hwcaps. Detected once per extension, then cached.
 */
#ifndef REFQUANT_CPU_FEATURES_H
#define REFQUANT_CPU_FEATURES_H

#define RQ_CPU_AVX2 (1u << 0)
#define RQ_CPU_AVX512F (1u << 1)
#define RQ_CPU_AVX512BW (1u << 2)
#define RQ_CPU_AVX512VNNI (1u << 3)
#define RQ_CPU_AVXVNNI (1u << 4)
#define RQ_CPU_NEON (1u << 8)
#define RQ_CPU_DOTPROD (1u << 9)
#define RQ_CPU_I8MM (1u << 10)

#define RQ_CPU_DETECTED (1u << 31)

#if defined(__aarch64__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#ifndef HWCAP2_I8MM
#define HWCAP2_I8MM (1 << 13)
#endif
#endif

/* The RQ_CPU_* features this CPU (and OS) runs. The cache is written with the same value by whichever thread
 * gets there first. */
__attribute__((unused)) static unsigned rq_cpu_features(void) {
    static volatile unsigned cached = 0;
    if (cached & RQ_CPU_DETECTED) return cached;
    unsigned f = RQ_CPU_DETECTED;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) f |= RQ_CPU_AVX2;
    if (__builtin_cpu_supports("avx512f")) f |= RQ_CPU_AVX512F;
    if (__builtin_cpu_supports("avx512bw")) f |= RQ_CPU_AVX512BW;
    if (__builtin_cpu_supports("avx512vnni")) f |= RQ_CPU_AVX512VNNI;
    if (__builtin_cpu_supports("avxvnni")) f |= RQ_CPU_AVXVNNI;
#elif defined(__aarch64__)
    f = RQ_CPU_NEON;
    if (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) f |= RQ_CPU_DOTPROD;
    if (getauxval(AT_HWCAP2) & HWCAP2_I8MM) f |= RQ_CPU_I8MM;
#endif
    cached = f;
    return f;
}

/* 1 if this CPU runs every feature in `need` (0 needs nothing: the portable paths). */
__attribute__((unused)) static int rq_cpu_has(unsigned need) { return (rq_cpu_features() & need) == need; }

#endif
