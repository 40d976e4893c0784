/* qgemm/common.h -- shared definitions of the INT8 GEMM: u8 (M, K) x s8 (K, N) -> s32 with a fused epilogue.
 *
 * Packed B (one layout for every path, so a path can be switched per call):
 *
 *   bytes [0, 64)            header (qgemm_header): magic "RQGEMMv1", layout version, K, N, Kp, Np, flags
 *                            (bit 0, QGEMM_FLAG_PAIRS_FIT_S16: |w[4g, n]| + |w[4g+1, n]| <= 128 and
 *                            |w[4g+2, n]| + |w[4g+3, n]| <= 128 for every group and column, so a u8 x s8 pair sum
 *                            fits s16 and AVX2's vpmaddubsw is exact; pack_b sets it from the weights, and
 *                            refquant's model loader recomputes it, never trusting a file; 0 = not known)
 *   bytes [64, 64 + Kp*Np)   panels: N in panels of QGEMM_NR = 16 columns, K in groups of 4 (zero padded to
 *                            Kp = ceil(K/4)*4, Np = ceil(N/16)*16). Panel p, group g is one 64-byte block:
 *                              block[4*c + i] = w[4*g + i, 16*p + c]      (c < 16, i < 4)
 *                            i.e. each 32-bit lane holds the 4 consecutive K of one column, which is what
 *                            vpdpbusd / sdot / udot consume. Panels are consecutive: panel p starts at
 *                            64 + p*Kp*16.
 *   bytes [.., + 4*Np)       colsum_b[n] = sum_k w[k, n] (int32, zero for padding columns)
 *
 * The arithmetic every path implements (int32 wraps modulo 2^32, as in the NumPy twin):
 *   dot[m, n] = sum_k a[m, k] * w[k, n]
 *   acc[m, n] = dot[m, n] + offset[n]        (offset = bias - a_zero * col_sum, prepared by the wrapper; a path
 *                                              that computes sum (a-128)*w adds 128*colsum_b to its offset)
 *   s32: out = acc
 *   f32: out = min(max(float(acc) * scale[n] (+ fbias[n]), lo), hi)
 *   u8/s8: out = (int) min(max(rint(float(acc) * scale[n]) + out_zero, lo), hi)      (float32, half to even)
 */
#ifndef REFQUANT_QGEMM_COMMON_H
#define REFQUANT_QGEMM_COMMON_H

#include <math.h>
#include <stdlib.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define QGEMM_NR 16             /* columns per panel */
#define QGEMM_KG 4              /* K per group */
#define QGEMM_HEADER_BYTES 64
#define QGEMM_MAGIC "RQGEMMv1"
#define QGEMM_LAYOUT_VERSION 1
#define QGEMM_ALIGN 64
#define QGEMM_FLAG_PAIRS_FIT_S16 1

/* Per-function instruction sets (no global -m flags). tests/c builds the x86 paths once more with
 * QGEMM_SIMD_EMULATION="simd_emul.h" (plain-C intrinsics) to run paths the test machine lacks. */
#ifdef QGEMM_SIMD_EMULATION
#define QGEMM_TARGET(isa)
#else
#define QGEMM_TARGET(isa) __attribute__((target(isa)))
#endif

enum { QGEMM_OUT_S32 = 0, QGEMM_OUT_F32 = 1, QGEMM_OUT_U8 = 2, QGEMM_OUT_S8 = 3 };

typedef struct {
    char magic[8];
    int32_t version, nr;
    int64_t K, N, Kp, Np;
    int32_t flags, reserved0;
    int64_t reserved1;
} qgemm_header;                 /* 64 bytes */

/* An optional float post-op on the f32 output (qgemm/post.h): the scalar chain of qdirect/chain.h, written to
 * y (float, row stride ldy) and / or q (u8, row stride ldq) instead of the f32 output. */
typedef struct {
    const float *k;             /* the 7 chain constants */
    int hs;
    float *y;                   /* or NULL */
    ptrdiff_t ldy;
    uint8_t *q;                 /* or NULL */
    ptrdiff_t ldq;
    float sinv, lo_f, hi_f;
    int32_t zero;
} qgemm_post;

/* One call's arguments, shared by every path. */
typedef struct {
    ptrdiff_t M, K, N, Kp, Np;
    const uint8_t *a;           /* a[m*lda + k] */
    ptrdiff_t lda;
    const int8_t *b;            /* the panels (packed + QGEMM_HEADER_BYTES) */
    int b_flags;                /* the header's flags */
    const int32_t *offset;      /* Np entries: bias - a_zero*col_sum (+ 128*colsum_b for shifted paths) */
    const float *scale;         /* Np entries (padding 0), unused for s32 */
    int out_kind;
    float out_zero, lo, hi;
    void *out;                  /* element (m, n) at out + m*ldo + n, in elements of the out type */
    ptrdiff_t ldo;
    const qgemm_post *post;     /* NULL, or a post-op on the f32 output (out is then unused) */
    const float *fbias;         /* NULL, or Np float32 added to the f32 output before the clamp */
} qgemm_args;

static inline ptrdiff_t qgemm_round_up(ptrdiff_t x, ptrdiff_t m) { return (x + m - 1) / m * m; }

static inline size_t qgemm_packed_bytes(ptrdiff_t K, ptrdiff_t N) {
    ptrdiff_t Kp = qgemm_round_up(K, QGEMM_KG), Np = qgemm_round_up(N, QGEMM_NR);
    return (size_t)(QGEMM_HEADER_BYTES + Kp * Np + 4 * Np);
}

/* Write the packed array's header: the layout of (K, N) and its flags. */
__attribute__((unused)) static void qgemm_write_header(int8_t *dst, ptrdiff_t K, ptrdiff_t N, int flags) {
    qgemm_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, QGEMM_MAGIC, 8);
    h.version = QGEMM_LAYOUT_VERSION;
    h.nr = QGEMM_NR;
    h.K = K; h.N = N; h.Kp = qgemm_round_up(K, QGEMM_KG); h.Np = qgemm_round_up(N, QGEMM_NR);
    h.flags = flags;
    memcpy(dst, &h, sizeof h);
}

/* Pack w (K, N) int8 with row stride ldw into dst (qgemm_packed_bytes(K, N) bytes, 64-byte aligned). */
static void qgemm_pack_b(const int8_t *w, ptrdiff_t K, ptrdiff_t N, ptrdiff_t ldw, int8_t *dst) {
    ptrdiff_t Kp = qgemm_round_up(K, QGEMM_KG), Np = qgemm_round_up(N, QGEMM_NR);
    int8_t *panels = dst + QGEMM_HEADER_BYTES;
    int32_t colsum[QGEMM_NR];
    int max_pair = 0;
    for (ptrdiff_t p = 0; p < Np / QGEMM_NR; p++) {
        int8_t *panel = panels + p * Kp * QGEMM_NR;
        for (int c = 0; c < QGEMM_NR; c++) colsum[c] = 0;
        for (ptrdiff_t g = 0; g < Kp / QGEMM_KG; g++)
            for (int c = 0; c < QGEMM_NR; c++)
                for (int i = 0; i < QGEMM_KG; i++) {
                    ptrdiff_t k = g * QGEMM_KG + i, n = p * QGEMM_NR + c;
                    int8_t v = (k < K && n < N) ? w[k * ldw + n] : 0;
                    panel[g * 64 + 4 * c + i] = v;
                    colsum[c] += v;
                    if (i & 1) {
                        int pair = abs(v) + abs(panel[g * 64 + 4 * c + i - 1]);
                        max_pair = pair > max_pair ? pair : max_pair;
                    }
                }
        memcpy(dst + QGEMM_HEADER_BYTES + Kp * Np + 4 * p * QGEMM_NR, colsum, sizeof colsum);
    }
    qgemm_write_header(dst, K, N, max_pair <= 128 ? QGEMM_FLAG_PAIRS_FIT_S16 : 0);
}

/* 0 if dst holds a valid header for (K, N), else a negative code (see the wrapper's messages). */
static inline int qgemm_check_header(const int8_t *packed, size_t nbytes, ptrdiff_t K, ptrdiff_t N) {
    qgemm_header h;
    if (nbytes < QGEMM_HEADER_BYTES) return -1;
    memcpy(&h, packed, sizeof h);
    if (memcmp(h.magic, QGEMM_MAGIC, 8) != 0) return -1;
    if (h.version != QGEMM_LAYOUT_VERSION || h.nr != QGEMM_NR) return -2;
    if (h.K != K || h.N != N) return -3;
    /* K, N < 2^31 (also the twin's bound), so Kp * Np < 2^63 and the size formula below cannot wrap: a header
     * claiming a huge K or N (a crafted file) cannot make the expected size wrap to what a small buffer holds */
    if (K < 1 || N < 1 || K >= ((ptrdiff_t)1 << 31) || N >= ((ptrdiff_t)1 << 31)) return -4;
    if (nbytes != qgemm_packed_bytes(K, N)) return -4;
    return 0;
}

static inline int qgemm_header_flags(const int8_t *packed) {
    qgemm_header h;
    memcpy(&h, packed, sizeof h);
    return h.flags;
}

static inline const int32_t *qgemm_colsum_b(const int8_t *packed, ptrdiff_t Kp, ptrdiff_t Np) {
    return (const int32_t *)(packed + QGEMM_HEADER_BYTES + Kp * Np);
}

/* ---- the scalar epilogue: the definition every vector epilogue reproduces ---- */

static inline float qgemm_clampf(float x, float lo, float hi) {
    x = x < lo ? lo : x;        /* no NaN can occur: the wrapper requires a finite scale */
    return x > hi ? hi : x;
}

static inline void qgemm_store1(const qgemm_args *p, ptrdiff_t m, ptrdiff_t n, int32_t dot) {
    int32_t acc = (int32_t)((uint32_t)dot + (uint32_t)p->offset[n]);
    ptrdiff_t at = m * p->ldo + n;
    if (p->out_kind == QGEMM_OUT_S32) {
        ((int32_t *)p->out)[at] = acc;
        return;
    }
    float f = (float)acc * p->scale[n];
    if (p->out_kind == QGEMM_OUT_F32) {
        if (p->fbias) f = f + p->fbias[n];
        ((float *)p->out)[at] = qgemm_clampf(f, p->lo, p->hi);
        return;
    }
    float r = qgemm_clampf(rintf(f) + p->out_zero, p->lo, p->hi);
    if (p->out_kind == QGEMM_OUT_U8)
        ((uint8_t *)p->out)[at] = (uint8_t)(int32_t)r;
    else
        ((int8_t *)p->out)[at] = (int8_t)(int32_t)r;
}

/* Store a row of up to 16 dot products (columns n0 .. n0+nc-1). */
static inline void qgemm_store_row(const qgemm_args *p, ptrdiff_t m, ptrdiff_t n0, int nc, const int32_t *dot) {
    for (int c = 0; c < nc; c++) qgemm_store1(p, m, n0 + c, dot[c]);
}

/* Row pointer for row m of a block whose valid rows end at m1: rows past the end reuse the last valid row, so a
 * fixed-height microkernel never reads outside `a` (their results are computed but not stored). */
static inline const uint8_t *qgemm_row(const qgemm_args *p, ptrdiff_t m, ptrdiff_t m1) {
    return p->a + (m < m1 ? m : m1 - 1) * p->lda;
}

/* The last, partial K group of a row (K % 4 != 0) as a 32-bit word, zero padded, read without overrun. */
static inline uint32_t qgemm_tail_word(const uint8_t *row, ptrdiff_t K) {
    ptrdiff_t k0 = K / QGEMM_KG * QGEMM_KG;
    uint32_t v = 0;
    for (ptrdiff_t k = k0; k < K; k++) v |= (uint32_t)row[k] << (8 * (k - k0));
    return v;
}

static inline uint32_t qgemm_load_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Tile function of a path: out[m0:m1, n0:n1] with n0 a multiple of QGEMM_NR. */
typedef void (*qgemm_tile_fn)(const qgemm_args *p, ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t n0, ptrdiff_t n1);

#endif
