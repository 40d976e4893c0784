/* floatops/floatops.h: the C side of kernels/floatops.pyx, float32 kernels for inference. Twin and
 * specification: refquant/reference/floatops.py (same formulas, same order of float32 operations).
 *
 * Every kernel is a plain loop over always-inline scalar helpers written with selects instead of branches, so
 * GCC vectorizes it. FO_KERNELS instantiates the loops twice: with the suffix _portable (the build's baseline
 * ISA, SSE2 on x86-64) and, on x86, with _avx2 under target("avx2"); the path table FO_PATHS lists them and
 * fo_path_supported says which the CPU runs.
 * Compile with -ffp-contract=off: every product and sum is a single rounded float32 (or, where written, float64)
 * operation (no fused multiply-add), so both instantiations and the NumPy twin give the same bits.
 */
#ifndef FLOATOPS_FLOATOPS_H
#define FLOATOPS_FLOATOPS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_features.h"
#include "qdirect/chain.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FO_X86 1
#define FO_AVX2_ATTR __attribute__((target("avx2")))
#else
#define FO_X86 0
#define FO_AVX2_ATTR
#endif

#define FO_INLINE static inline __attribute__((always_inline))
#define FO_UNUSED __attribute__((unused))

FO_INLINE uint32_t fo_bits(float f) { uint32_t u; memcpy(&u, &f, sizeof u); return u; }
FO_INLINE float fo_float(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }

/* exp(v) for v <= 0 (or NaN), the Cephes expf scheme: k = rint(v * log2(e)) by adding and subtracting 1.5 * 2^23,
 * r = (v - k * LN2_HI) - k * LN2_LO, exp(r) = 1 + r + r^2 * P(r), times 2^k built in the exponent bits (the low
 * bits of t hold 1.5 * 2^23 + k). Below FO_EXP_MIN = -126 ln 2, where exp(v) < 2^-126, the result is 0. */
#define FO_EXP_MIN (-87.33654f)
#define FO_ROUND 12582912.0f /* 1.5 * 2^23, bits 0x4B400000 */

FO_INLINE float fo_exp_neg(float v) {
    const float vc = v < FO_EXP_MIN ? FO_EXP_MIN : v;
    const float t = vc * 1.44269504f + FO_ROUND;
    const float k = t - FO_ROUND;
    const float r = (vc - k * 0.693359375f) - k * -2.12194440e-4f;
    const float p = (((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r
                       + 4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f) * (r * r) + r + 1.0f;
    const float scale = fo_float((fo_bits(t) + (127u - 0x4B400000u)) << 23);
    return v < FO_EXP_MIN ? 0.0f : p * scale;
}

/* erf: |z| < FO_ERF_SPLIT: z * A(z^2); else erfc(|z|) = exp(-z^2) * t * B(t), t = 1 / (1 + |z|/2).
 * A and B are least-squares fits (relative error) on Chebyshev points, rounded to float32. */
#define FO_ERF_SPLIT 0.875f

FO_INLINE float fo_erf_small(float z) {
    const float u = z * z;
    return z * (((((-6.199347e-4f * u + 5.0314264e-3f) * u - 2.679095e-2f) * u + 1.1282441e-1f) * u
                 - 3.7612548e-1f) * u + 1.1283791f);
}

FO_INLINE float fo_erfc_large(float a) {
    const float t = 1.0f / (1.0f + 0.5f * a);
    const float b = (((((((1.3840308e-2f * t + 5.3250827e-2f) * t - 1.7971966e-1f) * t + 5.58312e-2f) * t
                        + 6.819264e-2f) * t + 1.7844845e-1f) * t + 2.4669032e-1f) * t + 2.8209835e-1f) * t
                    + 2.8209478e-1f;
    return fo_exp_neg(-(a * a)) * (t * b);
}

/* gelu(x) = x * (0.5 * h), h = 1 + erf(x / sqrt 2): 1 + z A(z^2) for |z| < split, else erfc(|z|) (z < 0) or
 * 2 - erfc(|z|). x below -20 counts as -20 (gelu(-20) rounds to -0 in float32), so gelu(-inf) = -0. */
#define FO_GELU_MIN (-20.0f)

FO_INLINE float fo_gelu(float x) {
    const float xc = x < FO_GELU_MIN ? FO_GELU_MIN : x;
    const float z = xc * 0.70710678f;
    const float a = fabsf(z);
    const float small = 1.0f + fo_erf_small(z);
    const float c = fo_erfc_large(a);
    const float large = z < 0.0f ? c : 2.0f - c;
    return xc * (0.5f * (a < FO_ERF_SPLIT ? small : large));
}

/* sigmoid(x) = 1 / (1 + exp(-x)) from e = exp(-|x|) <= 1, which cannot overflow: 1 / (1 + e) for x >= 0,
 * e / (1 + e) below (so sigmoid(-inf) = 0, sigmoid(+inf) = 1, NaN -> NaN; 0 below -87.34, where the true value
 * is under 2^-126). */
FO_INLINE float fo_sigmoid(float x) {
    const float e = fo_exp_neg(-fabsf(x));
    const float d = 1.0f + e;
    return x >= 0.0f ? 1.0f / d : e / d;
}

/* Softmax of one row of n > 0 floats: m = max (FO_LANES running maxima; a NaN never wins, but makes its e NaN),
 * e_i = exp(x_i - m) stored in y, s = the float64 sum of the e_i (lane j adds elements i = j mod FO_LANES in
 * order, then s = lane 0 + lane 1 + ... in order), y_i = e_i / float32(s). */
#define FO_LANES 8

FO_INLINE void fo_softmax_row(const float *x, ptrdiff_t n, float *y) {
    float mx[FO_LANES];
    double acc[FO_LANES];
    const ptrdiff_t body = n - n % FO_LANES;
    for (int j = 0; j < FO_LANES; j++) { mx[j] = -INFINITY; acc[j] = 0.0; }
    for (ptrdiff_t i = 0; i < body; i += FO_LANES)
        for (int j = 0; j < FO_LANES; j++) mx[j] = x[i + j] > mx[j] ? x[i + j] : mx[j];
    for (ptrdiff_t i = body; i < n; i++) mx[i - body] = x[i] > mx[i - body] ? x[i] : mx[i - body];
    float m = mx[0];
    for (int j = 1; j < FO_LANES; j++) m = mx[j] > m ? mx[j] : m;
    for (ptrdiff_t i = 0; i < n; i++) y[i] = fo_exp_neg(x[i] - m);
    for (ptrdiff_t i = 0; i < body; i += FO_LANES)
        for (int j = 0; j < FO_LANES; j++) acc[j] += (double)y[i + j];
    for (ptrdiff_t i = body; i < n; i++) acc[i - body] += (double)y[i];
    double s = acc[0];
    for (int j = 1; j < FO_LANES; j++) s += acc[j];
    const float sf = (float)s;
    for (ptrdiff_t i = 0; i < n; i++) y[i] = y[i] / sf;
}

/* Float64 sum of v(x[0]), ..., v(x[n-1]) in the fixed lane order of the softmax sum: lane j of FO_LANES adds the
 * terms i = j mod FO_LANES in order (lanes start at +0), then s = lane 0 + lane 1 + ... in order. */
#define FO_LANE_SUM(RESULT, N, TERM)                                                                            \
    do {                                                                                                        \
        double acc_[FO_LANES];                                                                                  \
        const ptrdiff_t body_ = (N) - (N) % FO_LANES;                                                           \
        for (int j_ = 0; j_ < FO_LANES; j_++) acc_[j_] = 0.0;                                                   \
        for (ptrdiff_t b_ = 0; b_ < body_; b_ += FO_LANES)                                                      \
            for (int j_ = 0; j_ < FO_LANES; j_++) { const ptrdiff_t i = b_ + j_; acc_[j_] += (TERM); }          \
        for (ptrdiff_t i = body_; i < (N); i++) acc_[i - body_] += (TERM);                                      \
        double s_ = acc_[0];                                                                                    \
        for (int j_ = 1; j_ < FO_LANES; j_++) s_ += acc_[j_];                                                   \
        (RESULT) = s_;                                                                                          \
    } while (0)

/* Layer norm of one row of n > 0 floats, in float64 up to xhat: mean = lane_sum(x_i) / n,
 * var = lane_sum(d_i * d_i) / n with d_i = x_i - mean, inv = 1 / sqrt(var + eps),
 * xhat_i = float32((x_i - mean) * inv); then in float32 y_i = xhat_i [* scale_i] [+ bias_i] (scale / bias may be
 * NULL). A row holding NaN or +-inf gives a row of NaN; a constant row gives xhat = 0. */
FO_INLINE void fo_layer_norm_row(const float *x, ptrdiff_t n, const float *scale, const float *bias, double eps,
                                 float *y) {
    double s, q;
    FO_LANE_SUM(s, n, (double)x[i]);
    const double mean = s / (double)n;
    FO_LANE_SUM(q, n, ((double)x[i] - mean) * ((double)x[i] - mean));
    const double inv = 1.0 / sqrt(q / (double)n + eps);
    if (scale && bias)
        for (ptrdiff_t i = 0; i < n; i++) y[i] = (float)(((double)x[i] - mean) * inv) * scale[i] + bias[i];
    else if (scale)
        for (ptrdiff_t i = 0; i < n; i++) y[i] = (float)(((double)x[i] - mean) * inv) * scale[i];
    else if (bias)
        for (ptrdiff_t i = 0; i < n; i++) y[i] = (float)(((double)x[i] - mean) * inv) + bias[i];
    else
        for (ptrdiff_t i = 0; i < n; i++) y[i] = (float)(((double)x[i] - mean) * inv);
}

/* The loops, per path: fo_gelu_erf_<sfx>(x, n, t, y), fo_sigmoid_<sfx>(x, n, t, y), fo_relu_<sfx>(x, n, t, y)
 * (t NaN: x <= 0 ? 0 : x, so -0 -> +0; else a = x < 0 ? 0 : x, then a > t ? t : a, so -0 stays; NaN passes both),
 * fo_softmax_rows_<sfx>(x, rows, n, y) and fo_layer_norm_rows_<sfx>(x, rows, n, scale, bias, eps, y). */
#define FO_KERNELS(SFX, ATTR)                                                                                   \
    ATTR FO_UNUSED static void fo_gelu_erf_##SFX(const float *x, ptrdiff_t n, float t, float *y) {             \
        for (ptrdiff_t i = 0; i < n; i++) y[i] = fo_gelu(x[i]);                                                 \
    }                                                                                                           \
    ATTR FO_UNUSED static void fo_sigmoid_##SFX(const float *x, ptrdiff_t n, float t, float *y) {              \
        for (ptrdiff_t i = 0; i < n; i++) y[i] = fo_sigmoid(x[i]);                                              \
    }                                                                                                           \
    ATTR FO_UNUSED static void fo_relu_##SFX(const float *x, ptrdiff_t n, float t, float *y) {                 \
        if (t != t)                                                                                             \
            for (ptrdiff_t i = 0; i < n; i++) y[i] = x[i] <= 0.0f ? 0.0f : x[i];                                \
        else /* a = x < 0 ? 0 : x, then a > t ? t : a */                                                        \
            for (ptrdiff_t i = 0; i < n; i++) y[i] = x[i] < 0.0f ? (0.0f > t ? t : 0.0f) : x[i] > t ? t : x[i]; \
    }                                                                                                           \
    ATTR FO_UNUSED static void fo_softmax_rows_##SFX(const float *x, ptrdiff_t rows, ptrdiff_t n, float *y) {  \
        for (ptrdiff_t r = 0; r < rows; r++) fo_softmax_row(x + r * n, n, y + r * n);                           \
    }                                                                                                           \
    ATTR FO_UNUSED static void fo_layer_norm_rows_##SFX(const float *x, ptrdiff_t rows, ptrdiff_t n,           \
                                                         const float *scale, const float *bias, double eps,    \
                                                         float *y) {                                            \
        for (ptrdiff_t r = 0; r < rows; r++) fo_layer_norm_row(x + r * n, n, scale, bias, eps, y + r * n);      \
    }

FO_KERNELS(portable, )
#define FO_SFX _portable
#define FO_ATTR
#include "glue.h"
#include "dwconv.h"
#undef FO_SFX
#undef FO_ATTR
#if FO_X86
FO_KERNELS(avx2, FO_AVX2_ATTR)
#define FO_SFX _avx2
#define FO_ATTR FO_AVX2_ATTR
#include "glue.h"
#include "dwconv.h"
#undef FO_SFX
#undef FO_ATTR
#endif

/* The paths, best first ("portable" last): {name, the RQ_CPU_* features it runs on, its loops}. The wrapper
 * calls through the entry refquant/_paths.py chose. */
typedef struct {
    const char *name;
    unsigned needs;
    void (*gelu_erf)(const float *x, ptrdiff_t n, float t, float *y); /* t unused */
    void (*sigmoid)(const float *x, ptrdiff_t n, float t, float *y);  /* t unused */
    void (*relu)(const float *x, ptrdiff_t n, float t, float *y);     /* t NaN: no cap */
    void (*softmax_rows)(const float *x, ptrdiff_t rows, ptrdiff_t n, float *y);
    void (*layer_norm_rows)(const float *x, ptrdiff_t rows, ptrdiff_t n, const float *scale, const float *bias,
                            double eps, float *y);
    /* the float glue between INT8 ops (glue.h) */
    void (*add_f32)(const float *a, const float *b, ptrdiff_t n, int relu, float *y, uint8_t *q, float sinv,
                    float lo_f, float hi_f, int32_t zero);
    void (*chain_f32)(const float *x, ptrdiff_t n, const float *k, int hs, float *y, uint8_t *q, float sinv,
                      float lo_f, float hi_f, int32_t zero);
    void (*chmul_f32)(const float *x, const float *s, ptrdiff_t n, ptrdiff_t C, float *y, uint8_t *q, float sinv,
                      float lo_f, float hi_f, int32_t zero);
    void (*gap_f32)(const float *x, ptrdiff_t HW, ptrdiff_t C, float *out);
    /* direct depthwise convolution (dwconv.h) */
    int (*dwconv_f32)(const float *x, const float *w, const float *bias, float *y, ptrdiff_t p0, ptrdiff_t p1,
                      ptrdiff_t C, ptrdiff_t M, ptrdiff_t H, ptrdiff_t W, int kh, int kw, ptrdiff_t sh, ptrdiff_t sw,
                      ptrdiff_t dh, ptrdiff_t dw, ptrdiff_t pt, ptrdiff_t pl, ptrdiff_t oh, ptrdiff_t ow);
} fo_path;

static const fo_path FO_PATHS[] = {
#if FO_X86
    {"avx2", RQ_CPU_AVX2, fo_gelu_erf_avx2, fo_sigmoid_avx2, fo_relu_avx2, fo_softmax_rows_avx2,
     fo_layer_norm_rows_avx2, fo_add_f32__avx2, fo_chain_f32__avx2, fo_chmul_f32__avx2, fo_gap_f32__avx2,
     fo_dwconv_f32__avx2},
#endif
    {"portable", 0u, fo_gelu_erf_portable, fo_sigmoid_portable, fo_relu_portable, fo_softmax_rows_portable,
     fo_layer_norm_rows_portable, fo_add_f32__portable, fo_chain_f32__portable, fo_chmul_f32__portable,
     fo_gap_f32__portable, fo_dwconv_f32__portable},
};
#define FO_NPATHS ((int)(sizeof FO_PATHS / sizeof FO_PATHS[0]))

/* 1 if this CPU can run path i. */
FO_UNUSED static int fo_path_supported(int i) { return rq_cpu_has(FO_PATHS[i].needs); }

#endif
