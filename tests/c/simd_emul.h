/* simd_emul.h -- plain-C versions of the x86 intrinsics the qgemm x86 paths use, following Intel's pseudocode.
 *
 * The AVX-512 VNNI and AVX-VNNI paths cannot run on a machine (or a QEMU) without those instructions; built with
 * -DQGEMM_SIMD_EMULATION='"simd_emul.h"' the same kernel source runs on these definitions, which checks the
 * kernels' logic (blocking, tails, masks, packing, epilogue order) against the twin. The AVX2 path is built both
 * ways, so the emulation itself is checked against the hardware wherever AVX2 runs. Not for speed.
 */
#ifndef QGEMM_SIMD_EMUL_H
#define QGEMM_SIMD_EMUL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

typedef union { int8_t i8[64]; uint8_t u8[64]; int16_t i16[32]; int32_t i32[16]; int64_t i64[8]; } __m512i;
typedef union { float f[16]; } __m512;
typedef union { int8_t i8[32]; uint8_t u8[32]; int16_t i16[16]; int32_t i32[8]; int64_t i64[4]; } __m256i;
typedef union { float f[8]; } __m256;
typedef union { int8_t i8[16]; uint8_t u8[16]; int16_t i16[8]; int32_t i32[4]; int64_t i64[2]; } __m128i;
typedef uint16_t __mmask16;

#define _MM_FROUND_TO_NEAREST_INT 0x00
#define _MM_FROUND_NO_EXC 0x08

#define EMUL_I(n) for (int i = 0; i < (n); i++)
static inline float emul_maxf(float a, float b) { return a > b ? a : b; }   /* MAXPS: (a > b) ? a : b */
static inline float emul_minf(float a, float b) { return a < b ? a : b; }   /* MINPS: (a < b) ? a : b */
static inline int32_t emul_cvtt(float f) {   /* CVTTPS2DQ: truncate; out of range -> INT32_MIN */
    return (f >= 2147483648.0f || f < -2147483648.0f || f != f) ? INT32_MIN : (int32_t)f;
}
static inline int16_t emul_sat16(int32_t v) { return v > 32767 ? 32767 : v < -32768 ? -32768 : (int16_t)v; }
static inline uint8_t emul_satu8(int16_t v) { return v > 255 ? 255 : v < 0 ? 0 : (uint8_t)v; }
static inline int8_t emul_sat8(int16_t v) { return v > 127 ? 127 : v < -128 ? -128 : (int8_t)v; }
static inline int32_t emul_wrap(int64_t v) { return (int32_t)(uint32_t)(uint64_t)v; }

/* ---- 512-bit ---- */
static inline __m512i _mm512_setzero_si512(void) { __m512i r; memset(&r, 0, sizeof r); return r; }
static inline __m512i _mm512_set1_epi32(int v) {
    __m512i r; EMUL_I(16) r.i32[i] = v;
    return r;
}
static inline __m512 _mm512_set1_ps(float v) {
    __m512 r; EMUL_I(16) r.f[i] = v;
    return r;
}
static inline __m512i _mm512_loadu_si512(const void *p) { __m512i r; memcpy(&r, p, 64); return r; }
static inline __m512 _mm512_loadu_ps(const float *p) { __m512 r; memcpy(&r, p, 64); return r; }
static inline __m512i _mm512_add_epi32(__m512i a, __m512i b) {
    EMUL_I(16) a.i32[i] = emul_wrap((int64_t)a.i32[i] + b.i32[i]);
    return a;
}
/* VPDPBUSD: src + sum of 4 (u8 of a) * (s8 of b) per lane, no saturation (wraps) */
static inline __m512i _mm512_dpbusd_epi32(__m512i src, __m512i a, __m512i b) {
    EMUL_I(16) {
        int64_t s = src.i32[i];
        for (int j = 0; j < 4; j++) s += (int32_t)a.u8[4 * i + j] * (int32_t)b.i8[4 * i + j];
        src.i32[i] = emul_wrap(s);
    }
    return src;
}
static inline __m512 _mm512_cvtepi32_ps(__m512i a) {
    __m512 r; EMUL_I(16) r.f[i] = (float)a.i32[i];
    return r;
}
static inline __m512i _mm512_cvttps_epi32(__m512 a) {
    __m512i r; EMUL_I(16) r.i32[i] = emul_cvtt(a.f[i]);
    return r;
}
static inline __m512 _mm512_mul_ps(__m512 a, __m512 b) {
    EMUL_I(16) a.f[i] = a.f[i] * b.f[i];
    return a;
}
static inline __m512 _mm512_add_ps(__m512 a, __m512 b) {
    EMUL_I(16) a.f[i] = a.f[i] + b.f[i];
    return a;
}
static inline __m512 _mm512_max_ps(__m512 a, __m512 b) {
    EMUL_I(16) a.f[i] = emul_maxf(a.f[i], b.f[i]);
    return a;
}
static inline __m512 _mm512_min_ps(__m512 a, __m512 b) {
    EMUL_I(16) a.f[i] = emul_minf(a.f[i], b.f[i]);
    return a;
}
static inline __m512 _mm512_roundscale_ps(__m512 a, int imm) {
    (void)imm; EMUL_I(16) a.f[i] = nearbyintf(a.f[i]); return a;   /* imm = nearest-even, scale 0 */
}
static inline void _mm512_mask_storeu_epi32(void *p, __mmask16 k, __m512i a) {
    EMUL_I(16) if (k >> i & 1) memcpy((char *)p + 4 * i, &a.i32[i], 4);
}
static inline void _mm512_mask_storeu_ps(void *p, __mmask16 k, __m512 a) {
    EMUL_I(16) if (k >> i & 1) memcpy((char *)p + 4 * i, &a.f[i], 4);
}
static inline void _mm512_mask_cvtepi32_storeu_epi8(void *p, __mmask16 k, __m512i a) {  /* VPMOVDB: truncate */
    EMUL_I(16) if (k >> i & 1) ((uint8_t *)p)[i] = (uint8_t)a.i32[i];
}

/* ---- 256-bit ---- */
static inline __m256i _mm256_setzero_si256(void) { __m256i r; memset(&r, 0, sizeof r); return r; }
static inline __m256i _mm256_set1_epi32(int v) {
    __m256i r; EMUL_I(8) r.i32[i] = v;
    return r;
}
static inline __m256 _mm256_set1_ps(float v) {
    __m256 r; EMUL_I(8) r.f[i] = v;
    return r;
}
static inline __m256i _mm256_loadu_si256(const __m256i *p) { __m256i r; memcpy(&r, p, 32); return r; }
static inline __m256 _mm256_loadu_ps(const float *p) { __m256 r; memcpy(&r, p, 32); return r; }
static inline void _mm256_storeu_si256(__m256i *p, __m256i a) { memcpy(p, &a, 32); }
static inline void _mm256_storeu_ps(float *p, __m256 a) { memcpy(p, &a, 32); }
static inline void _mm_storeu_si128(__m128i *p, __m128i a) { memcpy(p, &a, 16); }
static inline void _mm_storel_epi64(__m128i *p, __m128i a) { memcpy(p, &a, 8); }
static inline __m256i _mm256_add_epi32(__m256i a, __m256i b) {
    EMUL_I(8) a.i32[i] = emul_wrap((int64_t)a.i32[i] + b.i32[i]);
    return a;
}
static inline __m256i _mm256_dpbusd_avx_epi32(__m256i src, __m256i a, __m256i b) {
    EMUL_I(8) {
        int64_t s = src.i32[i];
        for (int j = 0; j < 4; j++) s += (int32_t)a.u8[4 * i + j] * (int32_t)b.i8[4 * i + j];
        src.i32[i] = emul_wrap(s);
    }
    return src;
}
static inline __m256i _mm256_madd_epi16(__m256i a, __m256i b) {   /* VPMADDWD */
    __m256i r;
    EMUL_I(8) r.i32[i] = emul_wrap((int64_t)a.i16[2 * i] * b.i16[2 * i] +
                                   (int64_t)a.i16[2 * i + 1] * b.i16[2 * i + 1]);
    return r;
}
static inline __m256i _mm256_maddubs_epi16(__m256i a, __m256i b) {   /* VPMADDUBSW: u8 x s8 pairs, saturating */
    __m256i r;
    EMUL_I(16) {
        int32_t s = (int32_t)a.u8[2 * i] * b.i8[2 * i] + (int32_t)a.u8[2 * i + 1] * b.i8[2 * i + 1];
        r.i16[i] = (int16_t)(s > 32767 ? 32767 : s < -32768 ? -32768 : s);
    }
    return r;
}
static inline __m256i _mm256_set1_epi16(short v) {
    __m256i r; EMUL_I(16) r.i16[i] = v;
    return r;
}
static inline __m256i _mm256_slli_epi16(__m256i a, int n) {
    EMUL_I(16) a.i16[i] = (int16_t)((uint16_t)a.i16[i] << n);
    return a;
}
static inline __m256i _mm256_srai_epi16(__m256i a, int n) {
    EMUL_I(16) a.i16[i] = (int16_t)(a.i16[i] >> n);
    return a;
}
static inline __m256 _mm256_cvtepi32_ps(__m256i a) {
    __m256 r; EMUL_I(8) r.f[i] = (float)a.i32[i];
    return r;
}
static inline __m256i _mm256_cvttps_epi32(__m256 a) {
    __m256i r; EMUL_I(8) r.i32[i] = emul_cvtt(a.f[i]);
    return r;
}
static inline __m256 _mm256_mul_ps(__m256 a, __m256 b) {
    EMUL_I(8) a.f[i] = a.f[i] * b.f[i];
    return a;
}
static inline __m256 _mm256_add_ps(__m256 a, __m256 b) {
    EMUL_I(8) a.f[i] = a.f[i] + b.f[i];
    return a;
}
static inline __m256 _mm256_max_ps(__m256 a, __m256 b) {
    EMUL_I(8) a.f[i] = emul_maxf(a.f[i], b.f[i]);
    return a;
}
static inline __m256 _mm256_min_ps(__m256 a, __m256 b) {
    EMUL_I(8) a.f[i] = emul_minf(a.f[i], b.f[i]);
    return a;
}
static inline __m256 _mm256_round_ps(__m256 a, int imm) {
    (void)imm; EMUL_I(8) a.f[i] = nearbyintf(a.f[i]);
    return a;
}
/* VPACKSSDW ymm: per 128-bit lane, 4 of a then 4 of b */
static inline __m256i _mm256_packs_epi32(__m256i a, __m256i b) {
    __m256i r;
    for (int l = 0; l < 2; l++)
        for (int i = 0; i < 4; i++) {
            r.i16[8 * l + i] = emul_sat16(a.i32[4 * l + i]);
            r.i16[8 * l + 4 + i] = emul_sat16(b.i32[4 * l + i]);
        }
    return r;
}
static inline __m256i _mm256_permute4x64_epi64(__m256i a, int imm) {
    __m256i r; EMUL_I(4) r.i64[i] = a.i64[(imm >> (2 * i)) & 3]; return r;
}
static inline __m128i _mm256_castsi256_si128(__m256i a) { __m128i r; memcpy(&r, &a, 16); return r; }
static inline __m128i _mm256_extracti128_si256(__m256i a, int i) { __m128i r; memcpy(&r, a.u8 + 16 * (i & 1), 16); return r; }
static inline __m128i _mm_packus_epi16(__m128i a, __m128i b) {
    __m128i r; EMUL_I(8) { r.u8[i] = emul_satu8(a.i16[i]); r.u8[8 + i] = emul_satu8(b.i16[i]); } return r;
}
static inline __m128i _mm_packs_epi16(__m128i a, __m128i b) {
    __m128i r; EMUL_I(8) { r.i8[i] = emul_sat8(a.i16[i]); r.i8[8 + i] = emul_sat8(b.i16[i]); } return r;
}

/* used by the AVX2 one-row kernel */
#define _MM_SHUFFLE(a, b, c, d) (((a) << 6) | ((b) << 4) | ((c) << 2) | (d))
static inline __m128i _mm_loadl_epi64(const __m128i *p) { __m128i r; memset(&r, 0, 16); memcpy(&r, p, 8); return r; }
static inline __m128i _mm_loadu_si128(const __m128i *p) { __m128i r; memcpy(&r, p, 16); return r; }
static inline __m128i _mm_shufflelo_epi16(__m128i a, int imm) {   /* PSHUFLW */
    __m128i r = a;
    EMUL_I(4) r.i16[i] = a.i16[(imm >> (2 * i)) & 3];
    return r;
}
static inline __m256i _mm256_broadcastq_epi64(__m128i a) { __m256i r; EMUL_I(4) r.i64[i] = a.i64[0]; return r; }
static inline __m256i _mm256_cvtepi8_epi16(__m128i a) { __m256i r; EMUL_I(16) r.i16[i] = a.i8[i]; return r; }
static inline __m256i _mm256_setr_epi32(int a, int b, int c, int d, int e, int f, int g, int h) {
    __m256i r;
    int v[8] = {a, b, c, d, e, f, g, h};
    EMUL_I(8) r.i32[i] = v[i];
    return r;
}
/* VPHADDD ymm: per 128-bit lane, adjacent pairs of a then of b */
static inline __m256i _mm256_hadd_epi32(__m256i a, __m256i b) {
    __m256i r;
    for (int l = 0; l < 2; l++) {
        r.i32[4 * l + 0] = emul_wrap((int64_t)a.i32[4 * l + 0] + a.i32[4 * l + 1]);
        r.i32[4 * l + 1] = emul_wrap((int64_t)a.i32[4 * l + 2] + a.i32[4 * l + 3]);
        r.i32[4 * l + 2] = emul_wrap((int64_t)b.i32[4 * l + 0] + b.i32[4 * l + 1]);
        r.i32[4 * l + 3] = emul_wrap((int64_t)b.i32[4 * l + 2] + b.i32[4 * l + 3]);
    }
    return r;
}
static inline __m256i _mm256_permutevar8x32_epi32(__m256i a, __m256i idx) {   /* VPERMD */
    __m256i r;
    EMUL_I(8) r.i32[i] = a.i32[idx.i32[i] & 7];
    return r;
}

#endif
