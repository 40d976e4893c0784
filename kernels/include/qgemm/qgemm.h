/* qgemm/qgemm.h -- every path of the INT8 GEMM and the table the wrapper picks from at run time.
 * x86 paths are compiled only on x86-64, ARM paths only on aarch64; each path's functions carry their own
 * __attribute__((target(...))), so the extension needs no global -m flags and one build runs everywhere. */
#ifndef REFQUANT_QGEMM_H
#define REFQUANT_QGEMM_H

#include "common.h"
#include "portable.h"
#include "post.h"

#if (defined(__x86_64__) || defined(QGEMM_SIMD_EMULATION)) && !defined(QGEMM_NO_SIMD)
#include "avx2.h"
#include "avx512vnni.h"
#include "avxvnni.h"
#define QGEMM_X86 1
#endif

#if defined(__aarch64__) && !defined(QGEMM_NO_SIMD)
#include "neon.h"
#include "dotprod.h"
#define QGEMM_ARM 1
#endif

typedef struct {
    const char *name;
    qgemm_tile_fn tile;
    int shifts_a;               /* computes sum (a - 128) * w: the wrapper adds 128 * colsum_b to the offset */
} qgemm_path;

/* In order of preference (the first supported one is the default); "portable" is always last. */
static const qgemm_path QGEMM_PATHS[] = {
#ifdef QGEMM_X86
    {"avx512vnni", qgemm_avx512vnni_tile, 0},
    {"avxvnni", qgemm_avxvnni_tile, 0},
    {"avx2", qgemm_avx2_tile, 0},
#endif
#ifdef QGEMM_ARM
    {"i8mm", qgemm_i8mm_tile, 0},
    {"dotprod", qgemm_dotprod_tile, 1},
    {"neon", qgemm_neon_tile, 1},
#endif
    {"portable", qgemm_portable_tile, 0},
};
#define QGEMM_NPATHS ((int)(sizeof QGEMM_PATHS / sizeof QGEMM_PATHS[0]))

#ifdef QGEMM_ARM
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#ifndef HWCAP2_I8MM
#define HWCAP2_I8MM (1 << 13)
#endif
#endif

/* 1 if this CPU (and OS: __builtin_cpu_supports checks the enabled register state) can run path i. */
static int qgemm_path_supported(int i) {
    const char *name = QGEMM_PATHS[i].name;
    (void)name;
#if defined(QGEMM_X86) && defined(QGEMM_SIMD_EMULATION)
    return 1;                   /* plain-C intrinsics run anywhere */
#elif defined(QGEMM_X86)
    __builtin_cpu_init();
    if (!strcmp(name, "avx512vnni"))
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vnni");
    if (!strcmp(name, "avxvnni")) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avxvnni");
    if (!strcmp(name, "avx2")) return __builtin_cpu_supports("avx2");
#endif
#ifdef QGEMM_ARM
    if (!strcmp(name, "i8mm")) return (getauxval(AT_HWCAP2) & HWCAP2_I8MM) != 0;
    if (!strcmp(name, "dotprod")) return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
    if (!strcmp(name, "neon")) return 1;
#endif
    return 1;                   /* portable */
}

#endif
