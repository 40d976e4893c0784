/* qgemm/qgemm.h -- every path of the INT8 GEMM and the table the wrapper picks from at run time.
 * x86 paths are compiled only on x86-64, ARM paths only on aarch64; each path's functions carry their own
 * __attribute__((target(...))), so the extension needs no global -m flags and one build runs everywhere. */
#ifndef REFQUANT_QGEMM_H
#define REFQUANT_QGEMM_H

#include "cpu_features.h"
#include "common.h"
#include "portable.h"
#include "post.h"
#include "range.h"

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

/* The C tests' emulated intrinsics (QGEMM_SIMD_EMULATION) run the x86 paths anywhere: they need no feature. */
#ifdef QGEMM_SIMD_EMULATION
#define QGEMM_NEEDS(features) 0u
#else
#define QGEMM_NEEDS(features) (features)
#endif

typedef struct {
    const char *name;
    unsigned needs;             /* the RQ_CPU_* features (cpu_features.h) the path runs on */
    qgemm_tile_fn tile;
    int shifts_a;               /* computes sum (a - 128) * w: the wrapper adds 128 * colsum_b to the offset */
} qgemm_path;

/* In order of preference (the first supported one is the default); "portable" is always last. */
static const qgemm_path QGEMM_PATHS[] = {
#ifdef QGEMM_X86
    {"avx512vnni", QGEMM_NEEDS(RQ_CPU_AVX512F | RQ_CPU_AVX512VNNI), qgemm_avx512vnni_tile, 0},
    {"avxvnni", QGEMM_NEEDS(RQ_CPU_AVX2 | RQ_CPU_AVXVNNI), qgemm_avxvnni_tile, 0},
    {"avx2", QGEMM_NEEDS(RQ_CPU_AVX2), qgemm_avx2_tile, 0},
#endif
#ifdef QGEMM_ARM
    {"i8mm", RQ_CPU_I8MM, qgemm_i8mm_tile, 0},
    {"dotprod", RQ_CPU_DOTPROD, qgemm_dotprod_tile, 1},
    {"neon", RQ_CPU_NEON, qgemm_neon_tile, 1},
#endif
    {"portable", 0u, qgemm_portable_tile, 0},
};
#define QGEMM_NPATHS ((int)(sizeof QGEMM_PATHS / sizeof QGEMM_PATHS[0]))

/* 1 if this CPU can run path i. */
__attribute__((unused)) static int qgemm_path_supported(int i) { return rq_cpu_has(QGEMM_PATHS[i].needs); }

/* One GEMM of a batch whose B is an activation (gemm_u8s8_batch): out (M, N) f32 = float(sum_k (a - a_zero) * b)
 * * scale (+ add[m*am + n*an] when add is not NULL: the attention mask, while the item is in cache), a's row m
 * at a + m*lda, b's element (k, n) at b[k*sk + n*sn]. B is packed here (into a buffer of this call), the offset is
 * -a_zero * colsum_b (+ 128 * colsum_b on a path that shifts a). Single-threaded: the caller spreads the batch
 * items over threads. Returns -1 if memory runs out (nothing written), else 0. */
__attribute__((unused)) static int qgemm_batch_item(const qgemm_path *path, const uint8_t *a, ptrdiff_t lda, ptrdiff_t M,
                                                    ptrdiff_t K, ptrdiff_t N, const int8_t *b, ptrdiff_t sk,
                                                    ptrdiff_t sn, uint32_t a_zero, float scale, const float *add,
                                                    ptrdiff_t am, ptrdiff_t an, float *out) {
    ptrdiff_t Kp = qgemm_round_up(K, QGEMM_KG), Np = qgemm_round_up(N, QGEMM_NR);
    size_t nb = qgemm_round_up((ptrdiff_t)qgemm_packed_bytes(K, N), QGEMM_ALIGN);
    int8_t *packed = (int8_t *)aligned_alloc(QGEMM_ALIGN, nb + (size_t)Np * 8);
    if (packed == NULL) return -1;
    int32_t *offset = (int32_t *)(packed + nb);
    float *sc = (float *)(offset + Np);
    qgemm_pack_b_strided(b, K, N, sk, sn, packed);
    const int32_t *colsum = qgemm_colsum_b(packed, Kp, Np);
    uint32_t shift = path->shifts_a ? 128u : 0u;
    for (ptrdiff_t n = 0; n < Np; n++) {
        offset[n] = (int32_t)((shift - a_zero) * (uint32_t)colsum[n]);
        sc[n] = scale;
    }
    qgemm_args p;
    memset(&p, 0, sizeof p);
    p.M = M; p.K = K; p.N = N; p.Kp = Kp; p.Np = Np;
    p.a = a; p.lda = lda;
    p.b = packed + QGEMM_HEADER_BYTES;
    p.b_flags = qgemm_header_flags(packed);
    p.offset = offset; p.scale = sc;
    p.out_kind = QGEMM_OUT_F32;
    p.lo = -INFINITY; p.hi = INFINITY;
    p.out = out; p.ldo = N;
    path->tile(&p, 0, M, 0, N);
    free(packed);
    if (add != NULL)
        for (ptrdiff_t m = 0; m < M; m++)
            for (ptrdiff_t n = 0; n < N; n++) out[m * N + n] += add[m * am + n * an];
    return 0;
}

#endif
