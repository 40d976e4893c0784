/* search_fill.h -- the element loop of kernels/search.pyx (one candidate's quant-dequant and the value the
 * pairwise sum adds, for up to 128 elements) and NumPy's pairwise base case over them, compiled three times with
 * GCC on x86-64 Linux, for AVX2, SSE4.1 and the baseline, the loader picking one (target_clones). All run the
 * same IEEE float32 operations per element in the same order (no fused multiply-add: -ffp-contract=off; rint
 * rounding half to even), so the same bits: wider vectors only do more elements at once. */
#ifndef REFQUANT_SEARCH_FILL_H
#define REFQUANT_SEARCH_FILL_H
#include <math.h>
#include <stddef.h>
#include <string.h>

typedef float sf_v8 __attribute__((vector_size(32)));

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define SF_CLONES __attribute__((target_clones("avx2", "sse4.1", "default")))
#else
#define SF_CLONES
#endif

enum { SF_SQ_ERR = 0, SF_QDQ = 1, SF_QDQ_DEV = 2, SF_X = 3, SF_X_DEV = 4, SF_NEG_SQ = 5 };

/* np.rint in float32 (the default rounding mode: nearest, ties to even): one vector instruction where the clone's
 * ISA has it (SSE4.1 roundps, AArch64 frintx), a libm call on a bare SSE2 CPU. */
static inline float sf_rint(float v) { return __builtin_rintf(v); }

/* Paddle's quant-dequant of v: onnx rint((v / c) * bnt) clipped to [low, bnt] (np.clip: max first, then min);
 * else v clipped to [0, c] (negatives to 0) first; then (q / bnt) * c. */
#define SF_QDQ_ONNX(v) ((sf_clip(sf_rint(((v) / c) * bnt), low, bnt) / bnt) * c)
#define SF_QDQ_PLAIN(v) ((sf_rint((sf_clip((v), 0, c) / c) * bnt) / bnt) * c)
static inline float sf_clip(float v, float lo, float hi) { v = v > lo ? v : lo; return v < hi ? v : hi; }

static inline float sf_sq(float d) { return d * d; }

/* res = NumPy's pairwise base case over the n <= 128 values E(k) (below 8 a plain loop, else eight lane-wise
 * accumulators combined as ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7)), then the remainder in order), each group of 8
 * values added to the accumulators as it is computed. */
#define SF_SUM(E)                                                                                              \
    if (n < 8) {                                                                                               \
        for (k = 0; k < n; k++) res = res + E(k);                                                              \
    } else {                                                                                                   \
        for (j = 0; j < 8; j++) e[j] = E(j);                                                                   \
        memcpy(&r, e, sizeof r);                                                                               \
        for (k = 8; k < n - n % 8; k += 8) {                                                                   \
            for (j = 0; j < 8; j++) e[j] = E(k + j);                                                           \
            memcpy(&t, e, sizeof t);                                                                           \
            r = r + t;                                                                                         \
        }                                                                                                      \
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));                               \
        for (; k < n; k++) res = res + E(k);                                                                   \
    }
/* element k of each kind (see search.pyx) */
#define SF_X_K(k) x[k]
#define SF_X_DEV_K(k) sf_sq(x[k] - mean)
#define SF_NEG_SQ_K(k) (x[k] < 0 ? sf_sq(x[k]) : 0.0f)
#define SF_ERR_ONNX_K(k) sf_sq(x[k] - SF_QDQ_ONNX(x[k]))
#define SF_ERR_PLAIN_K(k) sf_sq(x[k] - SF_QDQ_PLAIN(x[k]))
#define SF_QDQ_ONNX_K(k) SF_QDQ_ONNX(x[k])
#define SF_QDQ_PLAIN_K(k) SF_QDQ_PLAIN(x[k])
#define SF_DEV_ONNX_K(k) sf_sq(SF_QDQ_ONNX(x[k]) - mean)
#define SF_DEV_PLAIN_K(k) sf_sq(SF_QDQ_PLAIN(x[k]) - mean)

/* The float32 sum NumPy's pairwise summation makes of the n <= 128 values of the kind (its base case). */
SF_CLONES static float sf_sum(const float *x, int kind, int onnx, float c, float bnt, float mean, ptrdiff_t n) {
    const float low = -bnt - 1;
    float e[8], res = 0;
    sf_v8 r, t;               /* the eight accumulators, one register (two on SSE) */
    ptrdiff_t k, j;
    if (kind == SF_X) {
        SF_SUM(SF_X_K)
    } else if (kind == SF_X_DEV) {
        SF_SUM(SF_X_DEV_K)
    } else if (kind == SF_NEG_SQ) {
        SF_SUM(SF_NEG_SQ_K)
    } else if (kind == SF_SQ_ERR && onnx) {
        SF_SUM(SF_ERR_ONNX_K)
    } else if (kind == SF_SQ_ERR) {
        SF_SUM(SF_ERR_PLAIN_K)
    } else if (kind == SF_QDQ && onnx) {
        SF_SUM(SF_QDQ_ONNX_K)
    } else if (kind == SF_QDQ) {
        SF_SUM(SF_QDQ_PLAIN_K)
    } else if (onnx) {
        SF_SUM(SF_DEV_ONNX_K)
    } else {
        SF_SUM(SF_DEV_PLAIN_K)
    }
    return res;
}
#undef SF_SUM
#undef SF_X_K
#undef SF_X_DEV_K
#undef SF_NEG_SQ_K
#undef SF_ERR_ONNX_K
#undef SF_ERR_PLAIN_K
#undef SF_QDQ_ONNX_K
#undef SF_QDQ_PLAIN_K
#undef SF_DEV_ONNX_K
#undef SF_DEV_PLAIN_K
#undef SF_QDQ_ONNX
#undef SF_QDQ_PLAIN
#endif
