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
#if defined(__SSE2__) && !defined(QGEMM_SIMD_EMULATION)
#include <emmintrin.h>
#endif

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

/* Pack a batch item's B, element (k, n) at w[k*sk + n*sn], in the layout of qgemm_pack_b but with header flags 0:
 * the pair check is skipped (every path is exact without the flag, which only lets AVX2 pick vpmaddubsw), and the
 * copy runs along the source's contiguous axis (rows of B, or of B^T: attention's K). */
__attribute__((unused)) static void qgemm_pack_b_item(const int8_t *w, ptrdiff_t K, ptrdiff_t N, ptrdiff_t sk,
                                                      ptrdiff_t sn, int8_t *dst) {
    ptrdiff_t Kp = qgemm_round_up(K, QGEMM_KG), Np = qgemm_round_up(N, QGEMM_NR);
    int8_t *panels = dst + QGEMM_HEADER_BYTES;
    int32_t *colsum = (int32_t *)(panels + Kp * Np);
    qgemm_write_header(dst, K, N, 0);
    memset(panels, 0, (size_t)(Kp * Np + 4 * Np));
    if (sn == 1) {                      /* rows of B: n runs along memory */
        ptrdiff_t k = 0;
#if defined(__SSE2__) && !defined(QGEMM_SIMD_EMULATION)
        /* 4 rows x 16 columns at a time: two rounds of byte / word interleaving give the 64-byte group block */
        for (; k + QGEMM_KG <= K; k += QGEMM_KG)
            for (ptrdiff_t p = 0; (p + 1) * QGEMM_NR <= N; p++) {
                const int8_t *r = w + k * sk + p * QGEMM_NR;
                __m128i r0 = _mm_loadu_si128((const __m128i *)r), r1 = _mm_loadu_si128((const __m128i *)(r + sk));
                __m128i r2 = _mm_loadu_si128((const __m128i *)(r + 2 * sk));
                __m128i r3 = _mm_loadu_si128((const __m128i *)(r + 3 * sk));
                __m128i t0 = _mm_unpacklo_epi8(r0, r1), t1 = _mm_unpackhi_epi8(r0, r1);
                __m128i t2 = _mm_unpacklo_epi8(r2, r3), t3 = _mm_unpackhi_epi8(r2, r3);
                __m128i *blk = (__m128i *)(panels + p * Kp * QGEMM_NR + k / QGEMM_KG * 64);
                _mm_storeu_si128(blk, _mm_unpacklo_epi16(t0, t2));
                _mm_storeu_si128(blk + 1, _mm_unpackhi_epi16(t0, t2));
                _mm_storeu_si128(blk + 2, _mm_unpacklo_epi16(t1, t3));
                _mm_storeu_si128(blk + 3, _mm_unpackhi_epi16(t1, t3));
            }
        ptrdiff_t n_done = k ? N / QGEMM_NR * QGEMM_NR : 0;   /* columns already stored for rows < k */
        for (ptrdiff_t kk = 0; kk < k; kk++) {
            const int8_t *row = w + kk * sk;
            int8_t *blk = panels + (kk / QGEMM_KG) * 64 + kk % QGEMM_KG;
            for (ptrdiff_t n = n_done; n < N; n++) blk[n / QGEMM_NR * Kp * QGEMM_NR + 4 * (n % QGEMM_NR)] = row[n];
        }
        for (ptrdiff_t kk = 0; kk < k; kk++)
            for (ptrdiff_t n = 0; n < N; n++) colsum[n] += w[kk * sk + n];
#endif
        for (; k < K; k++) {
            const int8_t *row = w + k * sk;
            int8_t *blk = panels + (k / QGEMM_KG) * 64 + k % QGEMM_KG;
            for (ptrdiff_t p = 0; p * QGEMM_NR < N; p++) {
                ptrdiff_t nc = N - p * QGEMM_NR < QGEMM_NR ? N - p * QGEMM_NR : QGEMM_NR;
                for (ptrdiff_t c = 0; c < nc; c++) {
                    blk[p * Kp * QGEMM_NR + 4 * c] = row[p * QGEMM_NR + c];
                    colsum[p * QGEMM_NR + c] += row[p * QGEMM_NR + c];
                }
            }
        }
        return;
    }
    for (ptrdiff_t n = 0; n < N; n++) {  /* columns of B (rows of B^T when sk = 1) */
        const int8_t *col = w + n * sn;
        int8_t *blk = panels + (n / QGEMM_NR) * Kp * QGEMM_NR + 4 * (n % QGEMM_NR);
        int32_t sum = 0;
        ptrdiff_t k = 0;
        if (sk == 1) {                  /* a contiguous row of B^T: 4 bytes per group */
            for (; k < K; k++) sum += col[k];
            for (k = 0; k + QGEMM_KG <= K; k += QGEMM_KG) memcpy(blk + k / QGEMM_KG * 64, col + k, QGEMM_KG);
        }
        for (; k < K; k++) {
            int8_t v = col[k * sk];
            blk[(k / QGEMM_KG) * 64 + k % QGEMM_KG] = v;
            sum += sk == 1 ? 0 : v;
        }
        colsum[n] = sum;
    }
}

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
    qgemm_pack_b_item(b, K, N, sk, sn, packed);
    const int32_t *colsum = qgemm_colsum_b(packed, Kp, Np);
    uint32_t shift = path->shifts_a ? 128u : 0u;
    for (ptrdiff_t n = 0; n < Np; n++) {
        offset[n] = (int32_t)((shift - a_zero) * (uint32_t)colsum[n]);
        sc[n] = scale;
    }
    qgemm_args p;
    memset(&p, 0, sizeof p);            /* fbias, post: NULL */
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
    for (ptrdiff_t m = 0; add != NULL && m < M; m++) {
        float *o = out + m * N;
        const float *r = add + m * am;
        if (an == 1)
            for (ptrdiff_t n = 0; n < N; n++) o[n] += r[n];
        else
            for (ptrdiff_t n = 0; n < N; n++) o[n] += r[n * an];
    }
    return 0;
}

#endif
