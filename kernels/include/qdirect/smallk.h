/* qdirect/smallk.h: the direct conv for a small K = KH*KW*C (a network's first conv: 3x3 over 3 channels,
 * K = 27), u8 NHWC activations x s8 weights -> NHWC u8 / float32, the same integers as im2col + qgemm.
 *
 * The GEMM rounds K up to its 4-deep groups and packs and tiles for large K; with K = 27 it spends most of its
 * time on im2col copies, packing and edges. Here each output pixel's K inputs are gathered once into int16
 * (QD_SK_PIX pixels at a time), and every output channel is a vector lane:
 *   acc[n] = offset[n] + sum_k x[k] * w[k, n],  offset[n] = bias[n] - a_zero * col_sum[n]   (int32, wrapping)
 * where padded taps read a_zero (as im2col pads them), so the sum equals the GEMM's exactly. The epilogue is the
 * GEMM's and the depthwise conv's: f = float32(acc) * scale[n]; u8: clamp(rint(f) + out_zero, lo, hi), f32:
 * clamp(f, lo, hi).
 *
 * AVX2 (qd_sk_row_avx2): pairs of K (x_k, x_k+1) broadcast as one int32 slot of two int16 against the packed
 * pairs (w[k, n], w[k+1, n]): vpmaddwd is exact (255 * 128 * 2 < 2^31) and never saturates, unlike vpmaddubsw.
 * Blocks of 32 channels (4 vectors), two pixels per step (8 accumulators): per pair 4 weight loads serve 8
 * vpmaddwd. Weights [block][pair][4][8][2] int16, zero beyond K and N.
 * AVX-512 VNNI (qd_sk_row_avx512): the K inputs gathered as bytes (padded to KQ = ceil4(K) with zeros), each 4-byte
 * quad broadcast against the packed quads (w[4g..4g+3, n]) by vpdpbusd (u8 x s8, no intermediate saturation):
 * blocks of 64 channels (4 zmm), two pixels per step; weights [block][quad][64][4] int8, natural channel order.
 * Portable (qd_sk_row_portable): the same sums in plain C, one pixel at a time.
 */
#ifndef QDIRECT_SMALLK_H
#define QDIRECT_SMALLK_H

#include "common.h"
#include "depthwise_avx512.h" /* QD_AVX512_ATTR */

#define QD_SK_MAX_K 64 /* largest K = KH*KW*C of the direct conv (checked by the caller) */
#define QD_SK_PIX 32   /* output pixels gathered at a time */

typedef struct {
    qd_geom g;
    ptrdiff_t K, KP, N;       /* KP = K rounded up to even */
    const int8_t *w;          /* (K, N) */
    const int16_t *pw;        /* AVX2 pack, ceil(N / 32) blocks */
    const int8_t *pq;         /* AVX-512 VNNI pack, ceil(N / 64) blocks */
    const int32_t *offset;    /* (ceil64(N)) bias - a_zero * col_sum, wrapping */
    const float *scale;       /* (ceil64(N)) */
    const uint8_t *pad_row;   /* W*C + 64 bytes of a_zero: the row read by padded kernel rows */
    const uint8_t *x_end;     /* one past the input batch: reads past it are never made */
    uint8_t a_zero;
    int out_f32;
    float lo_f, hi_f;         /* u8: lo - out_zero, hi - out_zero; f32: the clamp */
    int32_t out_zero;
} qd_sk;

/* Set-up in one 64-byte aligned workspace (ws == NULL: only the size): w (K, N) from the GEMM's panels
 * (pack_b: w[k, n] at (n / 16) * Kp * 16 + (k / 4) * 64 + (n % 16) * 4 + k % 4), its AVX2 and AVX-512 packs, the
 * offset and the padded scale, the pad row (a few KB in all). s->g, K, N must be set; col_sum may be NULL (a_zero 0), bias too. */
QD_UNUSED static size_t qd_sk_prepare(qd_sk *s, const int8_t *panels, const int32_t *bias, const int32_t *col_sum,
                                      int32_t a_zero, const float *scale, char *ws) {
    const ptrdiff_t K = s->K, N = s->N, KP = (K + 1) & ~(ptrdiff_t)1, Kp = (K + 3) & ~(ptrdiff_t)3;
    const ptrdiff_t blocks = (N + 31) / 32, row = s->g.w * s->g.c + 64;
    const size_t o_pw = qd_align64((size_t)(K * N)), o_off = o_pw + qd_align64((size_t)(blocks * KP * 32 * 2));
    const ptrdiff_t KQ = (K + 3) & ~(ptrdiff_t)3, qblocks = (N + 63) / 64;
    const size_t o_sc = o_off + (size_t)qblocks * 256, o_pq = o_sc + (size_t)qblocks * 256;
    const size_t o_pad = o_pq + qd_align64((size_t)(qblocks * 64 * KQ));
    if (!ws) return o_pad + qd_align64((size_t)row);
    int8_t *w = (int8_t *)ws;
    int16_t *pw = (int16_t *)(ws + o_pw);
    int32_t *off = (int32_t *)(ws + o_off);
    float *sc = (float *)(ws + o_sc);
    for (ptrdiff_t k = 0; k < K; k++)
        for (ptrdiff_t n = 0; n < N; n++) w[k * N + n] = panels[(n / 16) * Kp * 16 + (k / 4) * 64 + (n % 16) * 4 + k % 4];
    for (ptrdiff_t b = 0; b < blocks; b++)
        for (ptrdiff_t g = 0; g < KP / 2; g++)
            for (int m = 0; m < 32; m++)
                for (int t = 0; t < 2; t++) {
                    const ptrdiff_t n = 32 * b + m, k = 2 * g + t;
                    pw[((b * (KP / 2) + g) * 32 + m) * 2 + t] = (int16_t)(n < N && k < K ? w[k * N + n] : 0);
                }
    int8_t *pq = (int8_t *)(ws + o_pq);
    for (ptrdiff_t b = 0; b < qblocks; b++)
        for (ptrdiff_t g = 0; g < KQ / 4; g++)
            for (int m = 0; m < 64; m++)
                for (int t = 0; t < 4; t++) {
                    const ptrdiff_t n = 64 * b + m, k = 4 * g + t;
                    pq[((b * (KQ / 4) + g) * 64 + m) * 4 + t] = (int8_t)(n < N && k < K ? w[k * N + n] : 0);
                }
    for (ptrdiff_t n = 0; n < qblocks * 64; n++) {
        uint32_t o = n < N && bias ? (uint32_t)bias[n] : 0u;
        if (n < N && col_sum) o -= (uint32_t)a_zero * (uint32_t)col_sum[n];
        off[n] = (int32_t)o;
        sc[n] = n < N ? scale[n] : 0.0f;
    }
    memset(ws + o_pad, a_zero, (size_t)row);
    s->KP = KP;
    s->w = w; s->pw = pw; s->pq = pq; s->offset = off; s->scale = sc;
    s->pad_row = (const uint8_t *)(ws + o_pad);
    s->a_zero = (uint8_t)a_zero;
    return o_pad + qd_align64((size_t)row);
}

/* The input row of kernel row i for output row oh, or the pad row. */
QD_INLINE const uint8_t *qd_sk_row(const qd_sk *s, const uint8_t *x, ptrdiff_t oh, ptrdiff_t i) {
    const qd_geom *g = &s->g;
    const ptrdiff_t ih = oh * g->sh - g->top + i * g->dh;
    return ih >= 0 && ih < g->h ? x + ih * g->w * g->c : s->pad_row;
}

/* Output pixel ow's K inputs (kh, kw, c order, padded taps = a_zero) as int16 into xb[0, K). */
QD_INLINE void qd_sk_gather_px(const qd_sk *s, const uint8_t *const *rows, ptrdiff_t ow, int16_t *xb) {
    const qd_geom *g = &s->g;
    const ptrdiff_t C = g->c;
    for (ptrdiff_t i = 0; i < g->kh; i++)
        for (ptrdiff_t j = 0; j < g->kw; j++) {
            const ptrdiff_t iw = ow * g->sw - g->left + j * g->dw;
            int16_t *d = xb + (i * g->kw + j) * C;
            if (iw >= 0 && iw < g->w)
                for (ptrdiff_t c = 0; c < C; c++) d[c] = rows[i][iw * C + c];
            else
                for (ptrdiff_t c = 0; c < C; c++) d[c] = s->a_zero;
        }
}

/* The portable row: each pixel gathered, then acc[n] for blocks of 64 channels, in natural order. */
QD_UNUSED static void qd_sk_row_portable(const qd_sk *s, const uint8_t *x, ptrdiff_t oh, char *out) {
    const uint8_t *rows[QD_SK_MAX_K];
    for (ptrdiff_t i = 0; i < s->g.kh; i++) rows[i] = qd_sk_row(s, x, oh, i);
    const ptrdiff_t K = s->K, N = s->N;
    int16_t xb[QD_SK_MAX_K];
    uint32_t acc[64];
    for (ptrdiff_t ow = 0; ow < s->g.ow; ow++) {
        qd_sk_gather_px(s, rows, ow, xb);
        for (ptrdiff_t n0 = 0; n0 < N; n0 += 64) {
            const ptrdiff_t nn = N - n0 < 64 ? N - n0 : 64;
            for (ptrdiff_t n = 0; n < nn; n++) acc[n] = (uint32_t)s->offset[n0 + n];
            for (ptrdiff_t k = 0; k < K; k++) {
                const int8_t *wk = s->w + k * N + n0;
                for (ptrdiff_t n = 0; n < nn; n++) acc[n] += (uint32_t)((int32_t)xb[k] * (int32_t)wk[n]);
            }
            for (ptrdiff_t n = 0; n < nn; n++) {
                const float f = (float)(int32_t)acc[n] * s->scale[n0 + n];
                if (s->out_f32) {
                    const float v = f > s->lo_f ? f : s->lo_f;
                    ((float *)out)[ow * N + n0 + n] = v < s->hi_f ? v : s->hi_f;
                } else {
                    ((uint8_t *)out)[ow * N + n0 + n] = qd_q8(f, s->lo_f, s->hi_f, s->out_zero);
                }
            }
        }
    }
}

#if QD_X86 && !defined(QD_SIMD_EMUL)
#include <immintrin.h>

/* Pixels [ow0, ow0 + np) into xb (stride KP int16). A pixel whose window lies inside the row (dilation 1,
 * KW*C <= 16) takes one 16-byte load + vpmovzxbw per kernel row, stored in increasing row order so each store's
 * surplus is overwritten by the next (the last one's lands in the next pixel's slot or the slack of xb, and in
 * columns K..KP-1, whose weights are 0); a load that could pass x_end, and the border pixels, go tap by tap. */
QD_AVX2_ATTR static void qd_sk_gather_avx2(const qd_sk *s, const uint8_t *const *rows, ptrdiff_t ow0, ptrdiff_t np,
                                           int16_t *xb) {
    const qd_geom *g = &s->g;
    const ptrdiff_t C = g->c, KC = g->kw * C, KP = s->KP;
    const int fast = g->dw == 1 && KC <= 16;
    for (ptrdiff_t p = 0; p < np; p++) {
        const ptrdiff_t ow = ow0 + p, iw0 = ow * g->sw - g->left;
        int16_t *d = xb + p * KP;
        int ok = fast && iw0 >= 0 && iw0 + g->kw <= g->w;
        for (ptrdiff_t i = 0; ok && i < g->kh; i++)
            ok = rows[i] == s->pad_row || rows[i] + iw0 * C + 16 <= s->x_end;
        if (!ok) {
            qd_sk_gather_px(s, rows, ow, d);
        } else {
            for (ptrdiff_t i = 0; i < g->kh; i++) {
                const uint8_t *src = rows[i] == s->pad_row ? s->pad_row : rows[i] + iw0 * C;
                _mm256_storeu_si256((__m256i *)(d + i * KC), _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)src)));
            }
        }
        if (KP > s->K) d[s->K] = 0;
    }
}

/* The epilogue of one pixel's NV vectors (channels [0, nc) of a block, nc <= 8 * NV) into out. */
QD_AVX2_ATTR QD_INLINE void qd_sk_store_avx2(const qd_sk *s, const __m256i *acc, int NV, ptrdiff_t nc, const float *sc,
                                             char *out) {
    __m256 f[4];
    for (int j = 0; j < 4; j++)
        f[j] = j < NV ? _mm256_mul_ps(_mm256_cvtepi32_ps(acc[j]), _mm256_loadu_ps(sc + 8 * j)) : _mm256_setzero_ps();
    const __m256 lo = _mm256_set1_ps(s->lo_f), hi = _mm256_set1_ps(s->hi_f);
    for (int j = 0; j < NV; j++) f[j] = _mm256_min_ps(_mm256_max_ps(f[j], lo), hi);
    if (s->out_f32) {
        float *o = (float *)out;
        if (nc == 8 * NV) {
            for (int j = 0; j < NV; j++) _mm256_storeu_ps(o + 8 * j, f[j]);
        } else {
            float tmp[32];
            for (int j = 0; j < NV; j++) _mm256_storeu_ps(tmp + 8 * j, f[j]);
            memcpy(o, tmp, (size_t)nc * sizeof(float));
        }
        return;
    }
    /* cvtps rounds ties to even (the default mode); |f| <= 510 after the clamp, so the packs are exact */
    const __m256i z = _mm256_set1_epi16((int16_t)s->out_zero);
    const __m256i w01 = _mm256_add_epi16(_mm256_packs_epi32(_mm256_cvtps_epi32(f[0]), _mm256_cvtps_epi32(f[1])), z);
    const __m256i w23 = _mm256_add_epi16(_mm256_packs_epi32(_mm256_cvtps_epi32(f[2]), _mm256_cvtps_epi32(f[3])), z);
    /* packs / packus work per 128-bit half: the bytes come out as 4-channel groups (0 4 1 5 2 6 3 7) */
    const __m256i u = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(w01, w23), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    if (nc == 32) {
        _mm256_storeu_si256((__m256i *)out, u);
    } else {
        uint8_t tmp[32];
        _mm256_storeu_si256((__m256i *)tmp, u);
        memcpy(out, tmp, (size_t)nc);
    }
}

/* NPX (1 or 2) pixels of xb (stride KP) x one block of NV vectors: accumulate, then the epilogue. */
QD_AVX2_ATTR QD_INLINE void qd_sk_tile_avx2(const qd_sk *s, const int16_t *xb, int NPX, int NV, const int16_t *pw,
                                            const int32_t *off, const float *sc, ptrdiff_t nc, char *out,
                                            ptrdiff_t out_step) {
    __m256i a0[4], a1[4];
    for (int j = 0; j < NV; j++) a0[j] = a1[j] = _mm256_loadu_si256((const __m256i *)(off + 8 * j));
    const ptrdiff_t KP = s->KP;
    for (ptrdiff_t k = 0; k < KP; k += 2, pw += 64) {
        int32_t v0, v1 = 0;  /* the pair (x_k, x_k+1) of each pixel */
        memcpy(&v0, xb + k, 4);
        if (NPX > 1) memcpy(&v1, xb + KP + k, 4);
        const __m256i x0 = _mm256_set1_epi32(v0), x1 = _mm256_set1_epi32(v1);
        for (int j = 0; j < NV; j++) {
            const __m256i wv = _mm256_loadu_si256((const __m256i *)(pw + 16 * j));
            a0[j] = _mm256_add_epi32(a0[j], _mm256_madd_epi16(x0, wv));
            if (NPX > 1) a1[j] = _mm256_add_epi32(a1[j], _mm256_madd_epi16(x1, wv));
        }
    }
    qd_sk_store_avx2(s, a0, NV, nc, sc, out);
    if (NPX > 1) qd_sk_store_avx2(s, a1, NV, nc, sc, out + out_step);
}

/* One output row: chunks of QD_SK_PIX pixels gathered, then every 32-channel block over them, two pixels at a
 * time (NV constant in each instantiation: the compiler keeps the accumulators in registers). */
QD_AVX2_ATTR static void qd_sk_row_avx2(const qd_sk *s, const uint8_t *x, ptrdiff_t oh, char *out) {
    const uint8_t *rows[QD_SK_MAX_K];
    for (ptrdiff_t i = 0; i < s->g.kh; i++) rows[i] = qd_sk_row(s, x, oh, i);
    const ptrdiff_t N = s->N, KP = s->KP, es = s->out_f32 ? 4 : 1, blocks = (N + 31) / 32;
    int16_t xb[QD_SK_PIX * QD_SK_MAX_K + 16];
    for (ptrdiff_t ow0 = 0; ow0 < s->g.ow; ow0 += QD_SK_PIX) {
        const ptrdiff_t np = s->g.ow - ow0 < QD_SK_PIX ? s->g.ow - ow0 : QD_SK_PIX;
        qd_sk_gather_avx2(s, rows, ow0, np, xb);
        for (ptrdiff_t b = 0; b < blocks; b++) {
            const ptrdiff_t nc = N - 32 * b < 32 ? N - 32 * b : 32;
            const int nv = (int)((nc + 7) / 8);
            const int16_t *pw = s->pw + b * (KP / 2) * 64;
            const int32_t *off = s->offset + 32 * b;
            const float *sc = s->scale + 32 * b;
            char *o = out + ((ow0 * N) + 32 * b) * es;
            ptrdiff_t p = 0;
#define QD_SK_PIXELS(NV)                                                                                         \
    for (; p + 2 <= np; p += 2) qd_sk_tile_avx2(s, xb + p * KP, 2, NV, pw, off, sc, nc, o + p * N * es, N * es); \
    if (p < np) qd_sk_tile_avx2(s, xb + p * KP, 1, NV, pw, off, sc, nc, o + p * N * es, 0);
            switch (nv) {
                case 4: QD_SK_PIXELS(4) break;
                case 3: QD_SK_PIXELS(3) break;
                case 2: QD_SK_PIXELS(2) break;
                default: QD_SK_PIXELS(1) break;
            }
#undef QD_SK_PIXELS
        }
    }
}
#endif /* QD_X86 */

#if QD_X86 || defined(QD_SIMD_EMUL)
/* Pixels [ow0, ow0 + np) as bytes into xb (stride KQ), bytes K..KQ-1 zero: one 16-byte copy per kernel row where
 * the window lies inside the row (as qd_sk_gather_avx2), else tap by tap. */
QD_AVX512_ATTR static void qd_sk_gather_u8(const qd_sk *s, const uint8_t *const *rows, ptrdiff_t ow0, ptrdiff_t np,
                                           uint8_t *xb) {
    const qd_geom *g = &s->g;
    const ptrdiff_t C = g->c, KC = g->kw * C, K = s->K, KQ = (K + 3) & ~(ptrdiff_t)3;
    const int fast = g->dw == 1 && KC <= 16;
    for (ptrdiff_t p = 0; p < np; p++) {
        const ptrdiff_t ow = ow0 + p, iw0 = ow * g->sw - g->left;
        uint8_t *d = xb + p * KQ;
        int ok = fast && iw0 >= 0 && iw0 + g->kw <= g->w;
        for (ptrdiff_t i = 0; ok && i < g->kh; i++)
            ok = rows[i] == s->pad_row || rows[i] + iw0 * C + 16 <= s->x_end;
        if (ok) {
            for (ptrdiff_t i = 0; i < g->kh; i++)
                memcpy(d + i * KC, rows[i] == s->pad_row ? s->pad_row : rows[i] + iw0 * C, 16);
        } else {
            int16_t t[QD_SK_MAX_K];
            qd_sk_gather_px(s, rows, ow, t);
            for (ptrdiff_t k = 0; k < K; k++) d[k] = (uint8_t)t[k];
        }
        for (ptrdiff_t k = K; k < KQ; k++) d[k] = 0;
    }
}

/* NPX (1 or 2) pixels x one block of NV (1..4) vectors of 16 channels: vpdpbusd over the quads, then the epilogue
 * (nc channels of the block, natural order). */
QD_AVX512_ATTR QD_INLINE void qd_sk_tile_avx512(const qd_sk *s, const uint8_t *xb, ptrdiff_t KQ, int NPX, int NV,
                                                const int8_t *pq, const int32_t *off, const float *sc, ptrdiff_t nc,
                                                char *out, ptrdiff_t out_step) {
    __m512i a[2][4];
    for (int j = 0; j < NV; j++) a[0][j] = a[1][j] = _mm512_loadu_si512((const void *)(off + 16 * j));
    for (ptrdiff_t k = 0; k < KQ; k += 4, pq += 256) {
        int32_t v0, v1 = 0;
        memcpy(&v0, xb + k, 4);
        if (NPX > 1) memcpy(&v1, xb + KQ + k, 4);
        const __m512i x0 = _mm512_set1_epi32(v0), x1 = _mm512_set1_epi32(v1);
        for (int j = 0; j < NV; j++) {
            const __m512i wv = _mm512_loadu_si512((const void *)(pq + 64 * j));
            a[0][j] = _mm512_dpbusd_epi32(a[0][j], x0, wv);
            if (NPX > 1) a[1][j] = _mm512_dpbusd_epi32(a[1][j], x1, wv);
        }
    }
    const __m512 lo = _mm512_set1_ps(s->lo_f), hi = _mm512_set1_ps(s->hi_f);
    const __m512i z = _mm512_set1_epi32(s->out_zero);
    for (int p = 0; p < NPX; p++)
        for (int j = 0; j < NV && 16 * j < nc; j++) {
            const ptrdiff_t n = nc - 16 * j < 16 ? nc - 16 * j : 16;
            __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(a[p][j]), _mm512_loadu_ps(sc + 16 * j));
            f = _mm512_min_ps(_mm512_max_ps(f, lo), hi);
            if (s->out_f32) {
                _mm512_mask_storeu_ps((float *)(out + p * out_step) + 16 * j, (__mmask16)((1u << n) - 1), f);
            } else {  /* |f| <= 510 after the clamp: rint + zero lies in [0, 255], so the truncating vpmovdb is exact */
                const __m512i q = _mm512_add_epi32(
                    _mm512_cvt_roundps_epi32(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), z);
                _mm512_mask_cvtepi32_storeu_epi8(out + p * out_step + 16 * j, (__mmask16)((1u << n) - 1), q);
            }
        }
}

/* One output row, as qd_sk_row_avx2 with byte gathers and 64-channel blocks. */
QD_AVX512_ATTR static void qd_sk_row_avx512(const qd_sk *s, const uint8_t *x, ptrdiff_t oh, char *out) {
    const uint8_t *rows[QD_SK_MAX_K];
    for (ptrdiff_t i = 0; i < s->g.kh; i++) rows[i] = qd_sk_row(s, x, oh, i);
    const ptrdiff_t N = s->N, KQ = (s->K + 3) & ~(ptrdiff_t)3, es = s->out_f32 ? 4 : 1, blocks = (N + 63) / 64;
    uint8_t xb[QD_SK_PIX * QD_SK_MAX_K + 16];
    for (ptrdiff_t ow0 = 0; ow0 < s->g.ow; ow0 += QD_SK_PIX) {
        const ptrdiff_t np = s->g.ow - ow0 < QD_SK_PIX ? s->g.ow - ow0 : QD_SK_PIX;
        qd_sk_gather_u8(s, rows, ow0, np, xb);
        for (ptrdiff_t b = 0; b < blocks; b++) {
            const ptrdiff_t nc = N - 64 * b < 64 ? N - 64 * b : 64;
            const int8_t *pq = s->pq + b * KQ * 64;
            const int32_t *off = s->offset + 64 * b;
            const float *sc = s->scale + 64 * b;
            char *o = out + ((ow0 * N) + 64 * b) * es;
            ptrdiff_t p = 0;
#define QD_SK_PIXELS(NV)                                                                                          \
    for (; p + 2 <= np; p += 2) qd_sk_tile_avx512(s, xb + p * KQ, KQ, 2, NV, pq, off, sc, nc, o + p * N * es, N * es); \
    if (p < np) qd_sk_tile_avx512(s, xb + p * KQ, KQ, 1, NV, pq, off, sc, nc, o + p * N * es, 0);
            switch ((nc + 15) / 16) {
                case 4: QD_SK_PIXELS(4) break;
                case 3: QD_SK_PIXELS(3) break;
                case 2: QD_SK_PIXELS(2) break;
                default: QD_SK_PIXELS(1) break;
            }
#undef QD_SK_PIXELS
        }
    }
}
#endif

#endif
