/* fconv/fconv.h: the C side of kernels/fconv.pyx, a float32 convolution (groups 1, NCHW) as one GEMM per sample
 * on weights packed once, y[o, p] = act(sum_k A[o, k] * B[k, p] + bias[o] (+ res[o, p])). Twin and specification:
 * refquant/reference/fconv.py.
 *
 * A is the weight matrix (M = OC rows, K = C * KH * KW) packed in panels of FC_MR rows (pack_weights in the twin: panel
 * i holds A[6i + r, k] at [i][k][r], zero rows past M). B is never built: fc_pack_b reads its blocks straight from the
 * input (im2col on the fly; a plain copy for 1x1 stride-1 convs) into FC_NR-column panels, or, for 1x1 stride-1 convs
 * of at most FC_DIRECT_M output channels (few panels to share a packed block), the tiles read the rows of x in place;
 * those with a long K on small planes run T tiles instead (fc_conv_block_t: vectors along output channels, x read in
 * place, the same sums). The loops: N blocks of at most FC_NC pixels (fewer for long K: the packed block stays in L2),
 * K blocks of FC_KC, then FC_MR-row panels of A each sweeping the block in FC_MR x FC_NR register tiles (so each output
 * row is written front to back; tiles past M or N are masked). A tile sums its K block in registers from +0 in k order
 * (fused multiply-add on the avx2 path), adds it to the tile's previous K blocks, then, after the last block, adds the
 * bias, then a residual (an input of the output's shape, when given), and applies the activation (fc_act). Every output
 * element gets the same operations whatever the M / N split, so the bits do not depend on the thread count; paths
 * differ from each other and from the twin by rounding (its docstring states the bound). Compiled with
 * -ffp-contract=off: the sums fuse where the intrinsics say so (_mm256_fmadd_ps), the epilogue's products and sums
 * round one by one, as the ops they replace.
 */
#ifndef FCONV_FCONV_H
#define FCONV_FCONV_H

#include <stddef.h>
#include <string.h>

#include "cpu_features.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FC_X86 1
#include <immintrin.h>
#define FC_AVX2_ATTR __attribute__((target("avx2,fma")))
#else
#define FC_X86 0
#endif

#define FC_MR 6
#define FC_NR 16
#define FC_KC 256
#define FC_B_FLOATS (64 * 1024)
#define FC_NC 768
#define FC_DIRECT_M 32 /* output channels (of a task) up to which a 1x1 stride-1 conv reads B in place */
#define FC_UNUSED __attribute__((unused))
#define FC_INLINE static inline __attribute__((always_inline))

typedef struct {
    ptrdiff_t C, H, W, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow;
} fc_geom;

/* act: 0 none, 1 relu, 2 relu6 (clip to [0, a]), 3 hard_sigmoid (clip(v * a + b, 0, 1)), 4 hard_swish
 * (v * clip(v + a, 0, b) / c); NaN stays NaN, as NumPy's maximum / clip. Then, with post, v = v * ps + pc (a scalar
 * multiply and add after the activation, two roundings). */
typedef struct {
    int act, post;
    float a, b, c, ps, pc;
} fc_epi;

static inline float fc_clip(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

static inline float fc_act(float v, const fc_epi *e) {
    switch (e->act) {
    case 1: v = v < 0.0f ? 0.0f : v; break;
    case 2: v = fc_clip(v, 0.0f, e->a); break;
    case 3: v = fc_clip(v * e->a + e->b, 0.0f, 1.0f); break;
    case 4: v = fc_clip(v + e->a, 0.0f, e->b) * v / e->c; break;
    default: break;
    }
    if (e->post) v = v * e->ps + e->pc;
    return v;
}

/* 1 for a 1x1 stride-1 conv without padding: B is x itself (K rows of N pixels). */
static int fc_is_plain(const fc_geom *g) {
    return g->kh * g->kw == 1 && g->sh == 1 && g->sw == 1 && g->pt == 0 && g->pl == 0 && g->oh == g->H &&
           g->ow == g->W;
}

/* Row k of B (input channel k / (KH KW), tap (i, j)) for columns [p0, p0 + np) into row, output row by output row
 * (contiguous copies at stride 1, zeros where the window reads padding). */
static void fc_im2col_row(const float *x, const fc_geom *g, ptrdiff_t kk, ptrdiff_t p0, ptrdiff_t np, float *row) {
    const ptrdiff_t khw = g->kh * g->kw, r = kk % khw, i = r / g->kw, j = r % g->kw;
    const float *xc = x + kk / khw * g->H * g->W;
    const ptrdiff_t di = i * g->dh - g->pt, dj = j * g->dw - g->pl, sw = g->sw, W = g->W;
    /* the output columns whose input column ow * sw + dj lies in [0, W): [lo, hi) */
    const ptrdiff_t lo = dj >= 0 ? 0 : (-dj + sw - 1) / sw, hi0 = W - dj <= 0 ? 0 : (W - dj + sw - 1) / sw;
    const ptrdiff_t hi = hi0 < g->ow ? hi0 : g->ow;
    ptrdiff_t oh = p0 / g->ow, ow = p0 % g->ow, t = 0;
    while (t < np) {  /* output row oh, columns [ow, ow + run) */
        const ptrdiff_t run = g->ow - ow < np - t ? g->ow - ow : np - t, ih = oh * g->sh + di;
        float *d = row + t - ow;  /* d[c] is output column c of this row */
        if ((size_t)ih >= (size_t)g->H) {
            memset(d + ow, 0, (size_t)run * sizeof(float));
        } else {
            const float *s = xc + ih * W + dj;
            const ptrdiff_t e = ow + run, a = lo > ow ? lo : ow, b = hi < e ? hi : e;
            for (ptrdiff_t c = ow; c < e && c < a; c++) d[c] = 0.0f;
            if (sw == 1 && b > a)
                memcpy(d + a, s + a, (size_t)(b - a) * sizeof(float));
            else if (sw == 2)  /* a constant stride: vectorized with shuffles */
                for (ptrdiff_t c = a; c < b; c++) d[c] = s[2 * c];
            else
                for (ptrdiff_t c = a; c < b; c++) d[c] = s[c * sw];
            for (ptrdiff_t c = b > ow ? b : ow; c < e; c++) d[c] = 0.0f;
        }
        t += run, oh++, ow = 0;
    }
}

/* Columns [p0, p0 + np) and rows [k0, k0 + kc) of B, the im2col matrix of one sample x (C, H, W), into FC_NR-column
 * panels: bp[t / FC_NR][k][t % FC_NR], zeros past np (np <= FC_NC). Eight rows at a time: gathered into row buffers
 * (or read in place for a 1x1 stride-1 conv), then written panel by panel (512 contiguous bytes each, not 64 bytes
 * a panel apart, which would all fall in one cache set). */
static void fc_pack_b(const float *x, const fc_geom *g, ptrdiff_t k0, ptrdiff_t kc, ptrdiff_t p0, ptrdiff_t np,
                      float *bp) {
    const ptrdiff_t span = (np + FC_NR - 1) / FC_NR * FC_NR;
    const int plain = fc_is_plain(g);
    float rows[8][FC_NC + FC_NR];
    const float *src[8];
    for (ptrdiff_t kb = 0; kb < kc; kb += 8) {
        const ptrdiff_t nb = kc - kb < 8 ? kc - kb : 8;
        for (ptrdiff_t r = 0; r < nb; r++) {
            const ptrdiff_t kk = k0 + kb + r;
            src[r] = rows[r];
            if (plain && np == span)
                src[r] = x + kk * g->H * g->W + p0;
            else if (plain)
                memcpy(rows[r], x + kk * g->H * g->W + p0, (size_t)np * sizeof(float));
            else
                fc_im2col_row(x, g, kk, p0, np, rows[r]);
            if (src[r] == rows[r]) memset(rows[r] + np, 0, (size_t)(span - np) * sizeof(float));
        }
        for (ptrdiff_t t = 0; t < span; t += FC_NR)
            for (ptrdiff_t r = 0; r < nb; r++)
                memcpy(bp + t * kc + (kb + r) * FC_NR, src[r] + t, FC_NR * sizeof(float));
    }
}

/* The first mr x nr values of tile t (FC_MR x FC_NR) into y (row stride ldc): y = t, or y = y + t with add; then
 * with last, y = fc_act((y + bias[r]) + res) (no bias / residual when NULL; res has y's row stride). */
static void fc_tile_done(const float *t, ptrdiff_t mr, ptrdiff_t nr, float *y, const float *res, ptrdiff_t ldc, int add,
                         int last, const float *bias, const fc_epi *e) {
    for (ptrdiff_t r = 0; r < mr; r++) {
        float *yr = y + r * ldc;
        const float *tr = t + r * FC_NR;
        for (ptrdiff_t q = 0; q < nr; q++) {
            float v = add ? yr[q] + tr[q] : tr[q];
            if (last) {
                v = bias ? v + bias[r] : v;
                v = fc_act(res ? v + res[r * ldc + q] : v, e);
            }
            yr[q] = v;
        }
    }
}

/* The portable tile: acc[r][q] = sum over k < kc of a[k][r] * b[k ldb + q], from +0 in k order; its first mr x nr
 * values into y (fc_tile_done). */
static void fc_tile_portable(ptrdiff_t kc, const float *a, const float *b, ptrdiff_t ldb, float *y, const float *res,
                             ptrdiff_t ldc, ptrdiff_t mr, ptrdiff_t nr, int add, int last, const float *bias,
                             const fc_epi *e) {
    float acc[FC_MR][FC_NR] = {{0.0f}};
    for (ptrdiff_t k = 0; k < kc; k++, a += FC_MR, b += ldb)
        for (int r = 0; r < FC_MR; r++)
            for (int q = 0; q < FC_NR; q++) acc[r][q] += a[r] * b[q];
    fc_tile_done(&acc[0][0], mr, nr, y, res, ldc, add, last, bias, e);
}

#if FC_X86
/* The avx2 tile: 12 ymm accumulators (named: GCC spills an array of them), two loads of b and six broadcasts of a
 * per k, fused multiply-adds; then fc_tile_done's steps on its first mr x nr values of y, 8 at a time (masked past
 * nr, through fc_out8; full tiles inline, 5-10% faster on a short K; the same operations as fc_act and the scalar
 * merge: min / max keep NaN where the selects do). */
#define FC_ROW(r)                                                                                              \
    ar = _mm256_broadcast_ss(a + r);                                                                          \
    c##r##0 = _mm256_fmadd_ps(ar, b0, c##r##0);                                                               \
    c##r##1 = _mm256_fmadd_ps(ar, b1, c##r##1);
#define FC_ROW8(r) c##r##0 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + r), b0, c##r##0);
#define FC_OUT(r, h, full)                                                                                     \
    if (full) {                                                                                               \
        float *yp = y + r * ldc + 8 * h;                                                                      \
        __m256 v = add ? _mm256_add_ps(_mm256_loadu_ps(yp), c##r##h) : c##r##h;                               \
        if (last) {                                                                                           \
            v = bias ? _mm256_add_ps(v, _mm256_set1_ps(bias[r])) : v;                                         \
            v = fc_act8(res ? _mm256_add_ps(v, _mm256_loadu_ps(res + r * ldc + 8 * h)) : v, e);               \
        }                                                                                                     \
        _mm256_storeu_ps(yp, v);                                                                              \
    } else if (r < mr && 8 * h < nr)                                                                          \
        fc_out8(c##r##h, y + r * ldc + 8 * h, res ? res + r * ldc + 8 * h : NULL, h ? m1 : m0, full, add, last,  \
                bias ? bias + r : NULL, e);
#define FC_OUTS(full)                                                                                          \
    FC_OUT(0, 0, full) FC_OUT(0, 1, full) FC_OUT(1, 0, full) FC_OUT(1, 1, full) FC_OUT(2, 0, full)             \
    FC_OUT(2, 1, full) FC_OUT(3, 0, full) FC_OUT(3, 1, full) FC_OUT(4, 0, full) FC_OUT(4, 1, full)             \
    FC_OUT(5, 0, full) FC_OUT(5, 1, full)
FC_AVX2_ATTR static inline __m256 fc_act8(__m256 v, const fc_epi *e) {
    const __m256 zero = _mm256_setzero_ps();
    switch (e->act) {
    case 1: v = _mm256_max_ps(zero, v); break;
    case 2: v = _mm256_min_ps(_mm256_set1_ps(e->a), _mm256_max_ps(zero, v)); break;
    case 3: v = _mm256_add_ps(_mm256_mul_ps(v, _mm256_set1_ps(e->a)), _mm256_set1_ps(e->b));
            v = _mm256_min_ps(_mm256_set1_ps(1.0f), _mm256_max_ps(zero, v)); break;
    case 4: v = _mm256_div_ps(_mm256_mul_ps(_mm256_min_ps(_mm256_set1_ps(e->b),
                                            _mm256_max_ps(zero, _mm256_add_ps(v, _mm256_set1_ps(e->a)))), v),
                              _mm256_set1_ps(e->c)); break;
    default: break;
    }
    if (e->post) v = _mm256_add_ps(_mm256_mul_ps(v, _mm256_set1_ps(e->ps)), _mm256_set1_ps(e->pc));
    return v;
}
/* Eight values c of a tile row into yp: y = c, or y + c with add; then with last ((y + *bias) + *rp) and the
 * activation; lanes past mk untouched unless full. */
FC_AVX2_ATTR static inline void fc_out8(__m256 c, float *yp, const float *rp, __m256i mk, int full, int add, int last,
                                        const float *bias, const fc_epi *e) {
    if (add) c = _mm256_add_ps(full ? _mm256_loadu_ps(yp) : _mm256_maskload_ps(yp, mk), c);
    if (last) {
        if (bias) c = _mm256_add_ps(c, _mm256_set1_ps(*bias));
        if (rp) c = _mm256_add_ps(c, full ? _mm256_loadu_ps(rp) : _mm256_maskload_ps(rp, mk));
        c = fc_act8(c, e);
    }
    if (full)
        _mm256_storeu_ps(yp, c);
    else
        _mm256_maskstore_ps(yp, mk, c);
}
/* fc_tile_avx2 on full tiles of a packed B (mr, nr, ldb ignored), fc_tile_avx2_direct on full tiles of any ldb,
 * fc_tile_avx2_edge on the others (copies: the extra code slows the full tiles of a short K by 5-10%); with nr <= 8
 * it sums the first 8 columns only (a 7 x 7 plane's 49th pixel). */
#define FC_TILE_AVX2(name, full, LDB, QUAL)                                                                       \
    FC_AVX2_ATTR QUAL void name(ptrdiff_t kc, const float *a, const float *b, ptrdiff_t ldb, float *y,         \
                                  const float *res, ptrdiff_t ldc, ptrdiff_t mr, ptrdiff_t nr, int add, int last,   \
                                  const float *bias, const fc_epi *e0) {                                        \
        const fc_epi ee = *e0, *e = &ee; /* a local copy: not reloaded after each store */                    \
        __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,      \
               c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, ar;                                      \
        if (!full && nr <= 8) {                                                                                \
            for (ptrdiff_t k = 0; k < kc; k++, a += FC_MR, b += LDB) {                                         \
                const __m256 b0 = _mm256_loadu_ps(b);                                                          \
                FC_ROW8(0) FC_ROW8(1) FC_ROW8(2) FC_ROW8(3) FC_ROW8(4) FC_ROW8(5)                              \
            }                                                                                                  \
        } else {                                                                                               \
            for (ptrdiff_t k = 0; k < kc; k++, a += FC_MR, b += LDB) {                                         \
                const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);                             \
                FC_ROW(0) FC_ROW(1) FC_ROW(2) FC_ROW(3) FC_ROW(4) FC_ROW(5)                                    \
            }                                                                                                  \
        }                                                                                                      \
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);                                        \
        const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)nr), lane);                               \
        const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)nr - 8), lane);                           \
        FC_OUTS(full)                                                                                          \
        (void)ldb;                                                                                             \
    }
FC_TILE_AVX2(fc_tile_avx2, 1, FC_NR, FC_INLINE)
FC_TILE_AVX2(fc_tile_avx2_edge, 0, ldb, static)
FC_TILE_AVX2(fc_tile_avx2_direct, 1, ldb, FC_INLINE)
#endif

/* A tile: the FC_MR x FC_NR sums of a K block (row k of B at b + k ldb), fc_tile_done's steps on their first mr x nr
 * values into y. */
typedef void (*fc_tile_fn)(ptrdiff_t kc, const float *a, const float *b, ptrdiff_t ldb, float *y, const float *res,
                           ptrdiff_t ldc, ptrdiff_t mr, ptrdiff_t nr, int add, int last, const float *bias,
                           const fc_epi *e);

/* nt full tiles side by side (a row panel sweeping a block): tile t reads B at b + t bstep, writes y + t FC_NR. */
typedef void (*fc_sweep_fn)(ptrdiff_t kc, const float *a, const float *b, ptrdiff_t ldb, ptrdiff_t bstep, ptrdiff_t nt,
                            float *y, const float *res, ptrdiff_t ldc, int add, int last, const float *bias,
                            const fc_epi *e);
#define FC_SWEEP(name, tile, ATTR)                                                                             \
    ATTR static void name(ptrdiff_t kc, const float *a, const float *b, ptrdiff_t ldb, ptrdiff_t bstep,          \
                          ptrdiff_t nt, float *y, const float *res, ptrdiff_t ldc, int add, int last,            \
                          const float *bias, const fc_epi *e) {                                                \
        for (ptrdiff_t t = 0; t < nt; t++, b += bstep, y += FC_NR, res = res ? res + FC_NR : NULL)              \
            tile(kc, a, b, ldb, y, res, ldc, FC_MR, FC_NR, add, last, bias, e);                                \
    }
FC_SWEEP(fc_sweep_portable, fc_tile_portable, )
#define FC_TM 16
#define FC_TP 6
#define FC_TKC 64 /* values of k a T tile sums before the next tile (the K blocks stay FC_KC) */
#define FC_TSLOT (2 * FC_TM * FC_TP) /* floats of a T tile's carried sums: the K block so far, the blocks before */
#define FC_T_TOT (32 * 1024)         /* floats of carried sums a task keeps */
#define FC_T_A (64 * 1024)           /* floats of weights a chunk of rows keeps in L2 */
/* T tile flags: resume the K block's sums (else from +0); the K block ends here; first / last K block; wide stores */
enum { FC_T_RESUME = 1, FC_T_END = 2, FC_T_FIRST = 4, FC_T_LAST = 8, FC_T_WIDE = 16 };
typedef void (*fc_ttile_fn)(ptrdiff_t kc, const float *at, const float *xk, ptrdiff_t ldx, float *y, const float *res,
                            ptrdiff_t ldc, ptrdiff_t mr, ptrdiff_t np, int flags, const float *bias, const fc_epi *e,
                            float *slot);
#if FC_X86
FC_SWEEP(fc_sweep_avx2, fc_tile_avx2, FC_AVX2_ATTR)
FC_SWEEP(fc_sweep_avx2_direct, fc_tile_avx2_direct, FC_AVX2_ATTR)

/* The 8 x 8 transpose of r[0..7] in place (r[i][j] -> r[j][i]). */
FC_AVX2_ATTR static inline void fc_tr8(__m256 *r) {
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2)
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]), t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44), u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44), u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}

/* ---- 1x1 stride-1 convs with the roles swapped ("T" tiles): vectors along output channels. The weights are packed
 * again as panels of FC_TM rows, at[i][k][l] = A[16i + l, k] (zeros past M; fc_conv_block_t), and x is read in place:
 * a tile of FC_TP pixels broadcasts x[k, p + j] (row k of x, N floats apart), so B is never packed and the last
 * pixels of a row cost what they compute (a 7 x 7 plane's 49th pixel took an 8-wide tile). Each output is summed
 * as in the other tiles (from +0 in k order per FC_KC block, fused multiply-adds, the blocks added in order, then
 * bias, residual, activation): the same bits. The tile is transposed (fc_tr8) into rows of y at the end. */
#define FC_T_K(j)                                                                                              \
    if (FC_NP_ > j) {                                                                                          \
        bx = _mm256_broadcast_ss(xk + j), c##j##0 = _mm256_fmadd_ps(a0, bx, c##j##0);                          \
        if (FC_NH_ > 1) c##j##1 = _mm256_fmadd_ps(a1, bx, c##j##1);                                           \
    }
#define FC_T_LOAD(j, h) if (FC_NP_ > j && FC_NH_ > h) c##j##h = _mm256_load_ps(slot + (2 * j + h) * 8);
#define FC_T_PART(j, h) if (FC_NP_ > j && FC_NH_ > h) _mm256_store_ps(slot + (2 * j + h) * 8, c##j##h);
#define FC_T_ADD(j, h)                                                                                         \
    if (FC_NP_ > j && FC_NH_ > h) c##j##h = _mm256_add_ps(_mm256_load_ps(slot + 96 + (2 * j + h) * 8), c##j##h);
#define FC_T_KEEP(j, h) if (FC_NP_ > j && FC_NH_ > h) _mm256_store_ps(slot + 96 + (2 * j + h) * 8, c##j##h);
#define FC_T_ALL(F) F(0, 0) F(0, 1) F(1, 0) F(1, 1) F(2, 0) F(2, 1) F(3, 0) F(3, 1) F(4, 0) F(4, 1) F(5, 0) F(5, 1)
/* A T tile of NP pixels and NH * 8 output channels over kc values of k (row k of at at + 16 k, of x at xk + k ldx),
 * its sums carried in slot (FC_TSLOT floats, 32-byte aligned): [0, 96) the K block's so far (a tile may stop and
 * resume within a K block: the same chain of fused multiply-adds), [96, 192) the blocks before. After the last K
 * block, mr rows of np values into y (row stride ldc) through fc_out8 (8 values with FC_T_WIDE: the ones past np
 * are overwritten by the next tile). */
#define FC_TTILE(NP, NH)                                                                                        \
    FC_AVX2_ATTR static void fc_ttile_##NP##_##NH(ptrdiff_t kc, const float *at, const float *xk, ptrdiff_t ldx, \
                                                  float *y, const float *res, ptrdiff_t ldc, ptrdiff_t mr,       \
                                                  ptrdiff_t np, int flags, const float *bias, const fc_epi *e0,   \
                                                  float *slot) {                                                \
        enum { FC_NP_ = NP, FC_NH_ = NH };                                                                     \
        __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,      \
               c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, bx, a0, a1;                              \
        if (flags & FC_T_RESUME) { FC_T_ALL(FC_T_LOAD) }                                                       \
        for (ptrdiff_t k = 0; k < kc; k++, at += FC_TM, xk += ldx) {                                           \
            a0 = _mm256_loadu_ps(at);                                                                          \
            if (FC_NH_ > 1) a1 = _mm256_loadu_ps(at + 8);                                                      \
            FC_T_K(0) FC_T_K(1) FC_T_K(2) FC_T_K(3) FC_T_K(4) FC_T_K(5)                                        \
        }                                                                                                      \
        if (!(flags & FC_T_END)) { FC_T_ALL(FC_T_PART) return; }                                               \
        if (!(flags & FC_T_FIRST)) { FC_T_ALL(FC_T_ADD) }                                                      \
        if (!(flags & FC_T_LAST)) { FC_T_ALL(FC_T_KEEP) return; }                                               \
        const fc_epi ee = *e0, *e = &ee;                                                                       \
        const __m256i mk = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)np),                                      \
                                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));                     \
        const __m256 z = _mm256_setzero_ps();                                                                  \
        (void)a1, (void)c01, (void)c11, (void)c21, (void)c31, (void)c41, (void)c51;                            \
        for (int h = 0; h < NH; h++) {                                                                         \
            __m256 r[8] = {h ? c01 : c00, NP > 1 ? (h ? c11 : c10) : z, NP > 2 ? (h ? c21 : c20) : z,            \
                           NP > 3 ? (h ? c31 : c30) : z, NP > 4 ? (h ? c41 : c40) : z,                            \
                           NP > 5 ? (h ? c51 : c50) : z, z, z};                                                 \
            fc_tr8(r);                                                                                         \
            for (ptrdiff_t o = 0; o < 8 && 8 * h + o < mr; o++)                                                \
                fc_out8(r[o], y + (8 * h + o) * ldc, res ? res + (8 * h + o) * ldc : NULL, mk,                  \
                        (flags & FC_T_WIDE) != 0, 0, 1, bias ? bias + 8 * h + o : NULL, e);                    \
        }                                                                                                      \
    }
FC_TTILE(1, 1) FC_TTILE(2, 1) FC_TTILE(3, 1) FC_TTILE(4, 1) FC_TTILE(5, 1) FC_TTILE(6, 1)
FC_TTILE(1, 2) FC_TTILE(2, 2) FC_TTILE(3, 2) FC_TTILE(4, 2) FC_TTILE(5, 2) FC_TTILE(6, 2)
#undef FC_T_K
#undef FC_T_LOAD
#undef FC_T_PART
#undef FC_T_ADD
#undef FC_T_KEEP
#undef FC_T_ALL
#undef FC_TTILE
/* [(NH - 1) * FC_TP + NP - 1] */
static const fc_ttile_fn FC_TTILES_AVX2[2 * FC_TP] = {
    fc_ttile_1_1, fc_ttile_2_1, fc_ttile_3_1, fc_ttile_4_1, fc_ttile_5_1, fc_ttile_6_1,
    fc_ttile_1_2, fc_ttile_2_2, fc_ttile_3_2, fc_ttile_4_2, fc_ttile_5_2, fc_ttile_6_2};
#endif

/* Rows [m0, m1) (m0 a multiple of FC_MR) and columns [n0, n1) of one sample's output y (M x N, N = OH * OW):
 * y = act((A B + bias) + res) (bias, res may be NULL; res is laid out as y). bp: FC_KC * FC_NC floats of scratch,
 * 32-byte aligned. */
static void fc_conv_block(fc_sweep_fn sweep, fc_sweep_fn dir, fc_tile_fn edge, const float *ap, ptrdiff_t M,
                          ptrdiff_t K, const float *x, const fc_geom *g, const float *bias, const fc_epi *e, float *y,
                          const float *res, ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t n0, ptrdiff_t n1, float *bp) {
    const ptrdiff_t N = g->oh * g->ow, kmax = K < FC_KC ? K : FC_KC;
    /* pixel blocks of at most FC_B_FLOATS / kmax columns: the packed block stays in L2 while the row panels sweep it */
    ptrdiff_t step = FC_B_FLOATS / kmax / FC_NR * FC_NR;
    step = step < FC_NR ? FC_NR : step > FC_NC ? FC_NC : step;
    /* 1x1 stride 1 with few row panels to share a packed block: whole tiles read B in place (row k of x, N floats
     * apart), the pixels past a multiple of FC_NR packed */
    const int direct = fc_is_plain(g) && m1 - m0 <= FC_DIRECT_M;
    for (ptrdiff_t jc = n0; jc < n1; jc += step) {
        ptrdiff_t nc = n1 - jc < step ? n1 - jc : step;
        const int inplace = direct && nc >= FC_NR;
        nc = inplace ? nc / FC_NR * FC_NR : nc;
        for (ptrdiff_t pc = 0; pc < K; pc += FC_KC) {
            const ptrdiff_t kc = K - pc < FC_KC ? K - pc : FC_KC, ldb = inplace ? N : FC_NR;
            const int first = pc == 0, last = pc + kc == K;
            if (!inplace) fc_pack_b(x, g, pc, kc, jc, nc, bp);
            /* a row panel (6 x kc of A, in L1) sweeps the block: each output row is written front to back */
            for (ptrdiff_t ir = m0; ir < m1; ir += FC_MR) {
                const ptrdiff_t mr = m1 - ir < FC_MR ? m1 - ir : FC_MR;
                const float *bb = bias ? bias + ir : NULL, *a = ap + ir * K + pc * FC_MR;
                ptrdiff_t jr = 0;
                if (mr == FC_MR) {  /* the full tiles in one call */
                    const ptrdiff_t nt = nc / FC_NR;
                    (inplace ? dir : sweep)(kc, a, inplace ? x + pc * N + jc : bp, ldb, inplace ? FC_NR : FC_NR * kc,
                                            nt, y + ir * N + jc, res ? res + ir * N + jc : NULL, N, !first, last, bb,
                                            e);
                    jr = nt * FC_NR;
                }
                for (; jr < nc; jr += FC_NR) {
                    const ptrdiff_t nr = nc - jr < FC_NR ? nc - jr : FC_NR;
                    const float *b = inplace ? x + pc * N + jc + jr : bp + jr * kc;
                    float *yt = y + ir * N + jc + jr;
                    const float *rt = res ? res + ir * N + jc + jr : NULL;
                    edge(kc, a, b, ldb, yt, rt, N, mr, nr, !first, last, bb, e);
                }
            }
        }
        jc += nc - step;  /* the next block starts where this one stopped */
    }
    (void)M;
}

/* Rows [m0, m1) (m0 a multiple of FC_TM) and columns [n0, n1) of one sample's output y (M x N) of a 1x1 stride-1
 * conv (x: K rows of N pixels), y = act((A x + bias) + res) with T tiles (tt[(mr > 8) * FC_TP + np - 1]) on the
 * weights at packed for them. The columns are cut into groups of 5 or 6 pixels as evenly as possible (no short
 * tile: one of 1 or 2 pixels waits on the latency of its 2 or 4 chains), in blocks of groups whose carried sums fit
 * in FC_T_TOT floats; for each block, K in steps of FC_TKC (within the FC_KC blocks), every group in turn, every
 * FC_TM-row panel of at in turn: the group's rows of x stay in L1, the step of at in L2. slot: FC_T_TOT +
 * FC_TSLOT floats of scratch, 32-byte aligned. */
static void fc_conv_block_t(const fc_ttile_fn *tt, const float *at, ptrdiff_t K, const float *x, ptrdiff_t N,
                            const float *bias, const fc_epi *e, float *y, const float *res, ptrdiff_t m0, ptrdiff_t m1,
                            ptrdiff_t n0, ptrdiff_t n1, float *slot) {
    /* chunks of rows whose weights (FC_T_A floats) stay in L2 while the groups of pixels pass */
    const ptrdiff_t mc = FC_T_A / K / FC_TM * FC_TM > FC_TM ? FC_T_A / K / FC_TM * FC_TM : FC_TM;
    for (ptrdiff_t c0 = m0, c1; c0 < m1; c0 = c1) {
        c1 = c0 + mc < m1 ? c0 + mc : m1;
        const ptrdiff_t panels = (c1 - c0 + FC_TM - 1) / FC_TM, n = n1 - n0, ng = (n + FC_TP - 1) / FC_TP;
        const ptrdiff_t gb = FC_T_TOT / (panels * FC_TSLOT) > 1 ? FC_T_TOT / (panels * FC_TSLOT) : 1; /* a block */
        for (ptrdiff_t g0 = 0; g0 < ng; g0 += gb) {
            const ptrdiff_t g1 = g0 + gb < ng ? g0 + gb : ng;
            for (ptrdiff_t pc = 0; pc < K; pc += FC_KC) {
                const ptrdiff_t kc = K - pc < FC_KC ? K - pc : FC_KC;
                for (ptrdiff_t ks = pc; ks < pc + kc; ks += FC_TKC) {
                    const ptrdiff_t sub = pc + kc - ks < FC_TKC ? pc + kc - ks : FC_TKC;
                    const int flags = (ks > pc ? FC_T_RESUME : 0) | (ks + sub == pc + kc ? FC_T_END : 0) |
                                      (pc == 0 ? FC_T_FIRST : 0) | (pc + kc == K ? FC_T_LAST : 0);
                    for (ptrdiff_t gi = g0; gi < g1; gi++) {
                        const ptrdiff_t p = n0 + gi * n / ng, np = n0 + (gi + 1) * n / ng - p;
                        const int f = flags | (p + 8 <= n1 ? FC_T_WIDE : 0);
                        float *sp = slot + (gi - g0) * panels * FC_TSLOT;
                        for (ptrdiff_t ir = c0; ir < c1; ir += FC_TM, sp += FC_TSLOT) {
                            const ptrdiff_t mr = c1 - ir < FC_TM ? c1 - ir : FC_TM;
                            tt[(mr > 8) * FC_TP + np - 1](sub, at + ir * K + ks * FC_TM, x + ks * N + p, N,
                                                          y + ir * N + p, res ? res + ir * N + p : NULL, N, mr, np, f,
                                                          bias ? bias + ir : NULL, e, sp);
                        }
                    }
                }
            }
        }
    }
}

/* ---- depthwise: one output plane from one input plane (the channel multiplier is the caller's), bias and
 * activation fused. The plane is first copied into a zero-padded scratch xp (fc_dw_pad; rows ih + pt, columns
 * iw + pl, wide enough for whole vectors of 8 outputs; stride 2 splits each row in even and odd columns, fc_dw_pad2),
 * then y[p, q] = act(sum over taps (i, j) in row-major order of
 * w[i, j] * xp[p sh + i dh, q sw + j dw] + bias), the sum from +0 (fused multiply-adds on avx2), skipping the kernel
 * rows that fall in the top / bottom padding (they add 0: the sum never holds -0). */
typedef struct {
    ptrdiff_t H, W, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, hp, wp;
    ptrdiff_t off[64];  /* tap t = (i, j), t < 64, reads xp at i dh rows and j dw columns on: off[t] floats */
} fc_dwgeom;

/* The taps [*t0, *t1) of output row p whose input rows lie inside the plane: the others read padding and add 0. */
static inline void fc_dw_rows(const fc_dwgeom *g, ptrdiff_t p, ptrdiff_t *t0, ptrdiff_t *t1) {
    ptrdiff_t i0 = 0, i1 = g->kh;
    while (i0 < i1 && p * g->sh - g->pt + i0 * g->dh < 0) i0++;
    while (i1 > i0 && p * g->sh - g->pt + (i1 - 1) * g->dh >= g->H) i1--;
    *t0 = i0 * g->kw, *t1 = i1 * g->kw;
}

/* Sets the padded plane's size (hp rows, wp columns: whole vectors of 8 outputs at stride sw, 8 floats of slack) and
 * the tap offsets. */
static void fc_dw_init(fc_dwgeom *g) {
    g->hp = (g->oh - 1) * g->sh + (g->kh - 1) * g->dh + 1;
    g->wp = (g->ow + 7) / 8 * 8 * g->sw + (g->kw - 1) * g->dw + 8;
    g->wp += g->wp & 1;  /* even: stride 2 splits the rows in halves (fc_dw_pad2) */
    for (ptrdiff_t t = 0; t < g->kh * g->kw && t < 64; t++)
        g->off[t] = (t / g->kw) * g->dh * g->wp + (t % g->kw) * g->dw;
}

static void fc_dw_pad(const float *x, const fc_dwgeom *g, float *xp) {
    const ptrdiff_t cols = g->W < g->wp - g->pl ? g->W : g->wp - g->pl;  /* the input columns xp holds */
    const ptrdiff_t l = g->pl < g->wp ? g->pl : g->wp, r = cols > 0 ? g->wp - l - cols : g->wp - l;
    for (ptrdiff_t row = 0; row < g->hp; row++) {
        float *d = xp + row * g->wp;
        const ptrdiff_t ih = row - g->pt;
        if (ih < 0 || ih >= g->H || cols <= 0) {
            memset(d, 0, (size_t)g->wp * sizeof(float));
            continue;
        }
        for (ptrdiff_t c = 0; c < l; c++) d[c] = 0.0f;
        memcpy(d + l, x + ih * g->W, (size_t)cols * sizeof(float));
        for (ptrdiff_t c = 0; c < r; c++) d[l + cols + c] = 0.0f;
    }
}

static void fc_dw_portable(const float *x, const fc_dwgeom *g, const float *w, float bias, const fc_epi *e, float *y,
                           float *xp) {
    fc_dw_pad(x, g, xp);
    for (ptrdiff_t p = 0; p < g->oh; p++)
        for (ptrdiff_t q = 0; q < g->ow; q++) {
            float acc = 0.0f;
            ptrdiff_t t0, t1;
            fc_dw_rows(g, p, &t0, &t1);
            for (ptrdiff_t i = t0 / g->kw; i < t1 / g->kw; i++)
                for (ptrdiff_t j = 0; j < g->kw; j++)
                    acc += w[i * g->kw + j] * xp[(p * g->sh + i * g->dh) * g->wp + q * g->sw + j * g->dw];
            y[p * g->ow + q] = fc_act(acc + bias, e);
        }
}

/* Output rows per strip of fc_dw8_avx2: its interleaved input rows about FC_DW8_STRIP floats (in L1 / L2). */
#define FC_DW8_STRIP (16 * 1024)
static ptrdiff_t fc_dw8_rows(const fc_dwgeom *g) {
    const ptrdiff_t wq = (g->ow - 1) * g->sw + (g->kw - 1) * g->dw + 1;
    const ptrdiff_t r = (FC_DW8_STRIP / (wq * 8) - (g->kh - 1) * g->dh - 1) / g->sh + 1;
    return r < 1 ? 1 : r > g->oh ? g->oh : r;
}

FC_UNUSED static ptrdiff_t fc_dw8_scratch(const fc_dwgeom *g) {
    return ((fc_dw8_rows(g) - 1) * g->sh + (g->kh - 1) * g->dh + 1) *
           ((g->ow - 1) * g->sw + (g->kw - 1) * g->dw + 1) * 8 + 64 + (g->oh * g->ow + 8) * 8;
}

#if FC_X86
/* The padded plane for stride 2, each row split in halves: padded column 2c at [c], 2c + 1 at [wp / 2 + c] (wp even),
 * so the taps of 8 adjacent outputs are 8 adjacent floats. */
FC_AVX2_ATTR static void fc_dw_pad2(const float *x, const fc_dwgeom *g, float *xp) {
    const ptrdiff_t half = g->wp / 2, n = g->W < g->wp - g->pl ? g->W : g->wp - g->pl;  /* the input columns kept */
    for (ptrdiff_t row = 0; row < g->hp; row++) {
        float *d = xp + row * g->wp;
        const ptrdiff_t ih = row - g->pt;
        memset(d, 0, (size_t)g->wp * sizeof(float));
        if (ih < 0 || ih >= g->H) continue;
        const float *s = x + ih * g->W;  /* input column c is padded column c + pl */
        float *ev = d + (g->pl & 1) * half + g->pl / 2, *od = d + (1 - (g->pl & 1)) * half + (g->pl + 1) / 2;
        ptrdiff_t c = 0;
        for (; c + 16 <= n; c += 16) {
            const __m256 lo = _mm256_loadu_ps(s + c), hi = _mm256_loadu_ps(s + c + 8);
            _mm256_storeu_ps(ev + c / 2, _mm256_castpd_ps(_mm256_permute4x64_pd(
                _mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0x88)), 0xD8)));
            _mm256_storeu_ps(od + c / 2, _mm256_castpd_ps(_mm256_permute4x64_pd(
                _mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0xDD)), 0xD8)));
        }
        for (; c < n; c++) (c & 1 ? od : ev)[c / 2] = s[c];
    }
}

/* Output row yr of a 3 x 3 kernel whose nine taps all read the plane: tap (i, j) of output q at r0 + i rs + cj + q
 * (c0 = 0), the taps unrolled, weights hoisted, four vectors of 8 outputs in flight (each a chain of nine dependent
 * fused multiply-adds, interleaved tap by tap); the same operations in the same order as the general loop. Returns
 * the first column it did not compute. */
FC_AVX2_ATTR static inline __attribute__((always_inline)) ptrdiff_t
fc_dw3_row(const float *r0, ptrdiff_t rs, ptrdiff_t c1, ptrdiff_t c2, const float *w, __m256 b, const fc_epi *e,
           float *yr, ptrdiff_t ow) {
    const __m256 w0 = _mm256_broadcast_ss(w), w1 = _mm256_broadcast_ss(w + 1), w2 = _mm256_broadcast_ss(w + 2),
                 w3 = _mm256_broadcast_ss(w + 3), w4 = _mm256_broadcast_ss(w + 4), w5 = _mm256_broadcast_ss(w + 5),
                 w6 = _mm256_broadcast_ss(w + 6), w7 = _mm256_broadcast_ss(w + 7), w8 = _mm256_broadcast_ss(w + 8);
    const float *a0 = r0, *a1 = r0 + rs, *a2 = r0 + 2 * rs;
    /* tap (i, j) of the vectors at q + u: v_u = fma(w, x, v_u), the n vectors interleaved tap by tap */
#define FC_DW3_T(wt, src, u) v##u = _mm256_fmadd_ps(wt, _mm256_loadu_ps(src + q + 8 * u), v##u);
#define FC_DW3_TAPS(T)                                                                                         \
    T(w0, a0) T(w1, a0 + c1) T(w2, a0 + c2) T(w3, a1) T(w4, a1 + c1) T(w5, a1 + c2) T(w6, a2) T(w7, a2 + c1)  \
    T(w8, a2 + c2)
#define FC_DW3_4(wt, src) FC_DW3_T(wt, src, 0) FC_DW3_T(wt, src, 1) FC_DW3_T(wt, src, 2) FC_DW3_T(wt, src, 3)
#define FC_DW3_1(wt, src) FC_DW3_T(wt, src, 0)
#define FC_DW3_OUT(u) _mm256_storeu_ps(yr + q + 8 * u, fc_act8(_mm256_add_ps(v##u, b), e));
    ptrdiff_t q = 0;
    for (; q + 32 <= ow; q += 32) {
        __m256 v0 = _mm256_setzero_ps(), v1 = v0, v2 = v0, v3 = v0;
        FC_DW3_TAPS(FC_DW3_4)
        FC_DW3_OUT(0) FC_DW3_OUT(1) FC_DW3_OUT(2) FC_DW3_OUT(3)
    }
    for (; q + 8 <= ow; q += 8) {
        __m256 v0 = _mm256_setzero_ps();
        FC_DW3_TAPS(FC_DW3_1)
        FC_DW3_OUT(0)
    }
#undef FC_DW3_T
#undef FC_DW3_TAPS
#undef FC_DW3_4
#undef FC_DW3_1
#undef FC_DW3_OUT
    return q;
}

/* One plane from a zero-padded copy (stride 2: split in halves, fc_dw_pad2), so that output column q of row p reads
 * tap t at xp + p sh wp + off[t] + q: 3 x 3 rows inside the plane unrolled (fc_dw3_row), the others four vectors
 * at a time, a masked store for the last columns. */
FC_AVX2_ATTR static void fc_dw_avx2(const float *x, const fc_dwgeom *g, const float *w, float bias, const fc_epi *e0,
                                    float *y, float *xp) {
    const fc_epi ee = *e0, *e = &ee;  /* a local copy: the stores to y do not make the compiler reload it */
    const ptrdiff_t taps = g->kh * g->kw, sw = g->sw, half = g->wp / 2;
    if (sw > 2 || taps > 64) {
        fc_dw_portable(x, g, w, bias, e, y, xp);
        return;
    }
    ptrdiff_t off[64];
    for (ptrdiff_t t = 0; t < taps; t++)
        off[t] = sw == 1 ? g->off[t] : g->off[t] - (t % g->kw) * g->dw + ((t % g->kw) * g->dw & 1) * half +
                                       (t % g->kw) * g->dw / 2;
    if (sw == 1)
        fc_dw_pad(x, g, xp);
    else
        fc_dw_pad2(x, g, xp);
    const __m256 b = _mm256_set1_ps(bias);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (ptrdiff_t p = 0; p < g->oh; p++) {
        const float *r0 = xp + p * g->sh * g->wp;
        ptrdiff_t t0, t1;
        fc_dw_rows(g, p, &t0, &t1);
        float *yr = y + p * g->ow;
        ptrdiff_t q = 0;
        if (taps == 9 && t0 == 0 && t1 == 9)
            q = g->dw == 1 && sw == 1 ? fc_dw3_row(r0, off[3], 1, 2, w, b, e, yr, g->ow)
                                      : fc_dw3_row(r0, off[3], off[1], off[2], w, b, e, yr, g->ow);
        for (; q + 32 <= g->ow; q += 32) {
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (ptrdiff_t t = t0; t < t1; t++) {
                const __m256 wt = _mm256_broadcast_ss(w + t);
                const float *s = r0 + off[t] + q;
                a0 = _mm256_fmadd_ps(wt, _mm256_loadu_ps(s), a0);
                a1 = _mm256_fmadd_ps(wt, _mm256_loadu_ps(s + 8), a1);
                a2 = _mm256_fmadd_ps(wt, _mm256_loadu_ps(s + 16), a2);
                a3 = _mm256_fmadd_ps(wt, _mm256_loadu_ps(s + 24), a3);
            }
            _mm256_storeu_ps(yr + q, fc_act8(_mm256_add_ps(a0, b), e));
            _mm256_storeu_ps(yr + q + 8, fc_act8(_mm256_add_ps(a1, b), e));
            _mm256_storeu_ps(yr + q + 16, fc_act8(_mm256_add_ps(a2, b), e));
            _mm256_storeu_ps(yr + q + 24, fc_act8(_mm256_add_ps(a3, b), e));
        }
        for (; q < g->ow; q += 8) {
            __m256 a0 = _mm256_setzero_ps();
            for (ptrdiff_t t = t0; t < t1; t++)
                a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(w + t), _mm256_loadu_ps(r0 + off[t] + q), a0);
            a0 = fc_act8(_mm256_add_ps(a0, b), e);
            if (q + 8 <= g->ow)
                _mm256_storeu_ps(yr + q, a0);
            else
                _mm256_maskstore_ps(yr + q, _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(g->ow - q)), lane), a0);
        }
    }
}

/* n adjacent output pixels of eight interleaved planes (pixel k's taps at s + k ST + off[t], t in [t0, t1)), each a
 * chain of fused multiply-adds from +0, the n chains in flight together; then the bias, into o (the activation
 * follows on the way back into planes). ST is the stride in floats, a constant for strides 1 and 2: the n loads of
 * a tap then take fixed displacements instead of a chain of n address additions, which bound the loop. */
#define FC_DW8_PX(name, n, ST)                                                                                 \
    FC_AVX2_ATTR static inline void name(const float *s, ptrdiff_t st, const __m256 *wv, const ptrdiff_t *off,  \
                                         ptrdiff_t t0, ptrdiff_t t1, __m256 b, float *o) {                     \
        __m256 a[n];                                                                                           \
        (void)st;                                                                                              \
        for (int k = 0; k < n; k++) a[k] = _mm256_setzero_ps();                                                \
        for (ptrdiff_t t = t0; t < t1; t++) {                                                                  \
            const __m256 wt = wv[t];                                                                           \
            const float *u = s + off[t];                                                                       \
            for (int k = 0; k < n; k++) a[k] = _mm256_fmadd_ps(wt, _mm256_loadu_ps(u + k * (ST)), a[k]);      \
        }                                                                                                      \
        for (int k = 0; k < n; k++) _mm256_storeu_ps(o + 8 * k, _mm256_add_ps(a[k], b));                      \
    }
FC_DW8_PX(fc_dw8_px8, 8, st)
FC_DW8_PX(fc_dw8_px8_s1, 8, 8)
FC_DW8_PX(fc_dw8_px8_s2, 8, 16)
FC_DW8_PX(fc_dw8_px7, 7, st)
FC_DW8_PX(fc_dw8_px7_s1, 7, 8)
FC_DW8_PX(fc_dw8_px7_s2, 7, 16)
FC_DW8_PX(fc_dw8_px4, 4, st)
FC_DW8_PX(fc_dw8_px4_s1, 4, 8)
FC_DW8_PX(fc_dw8_px4_s2, 4, 16)
FC_DW8_PX(fc_dw8_px1, 1, st)
#undef FC_DW8_PX

/* Eight planes at once (channel multiplier 1, small planes): x holds planes c .. c + 7 (hw floats apart), w their
 * taps, bias their biases (or NULL); they are interleaved into xp (padded rows, 8 channels per pixel: 8 x 8
 * transposes), the taps summed per pixel for the 8 channels in one vector in the per-plane kernel's order, and the
 * sums (bias added; the activation on the way out) transposed back through xp's tail. xp: fc_dw8_scratch(g) floats.
 * Same bits as fc_dw_avx2 per plane. */
FC_AVX2_ATTR static void fc_dw8_avx2(const float *x, const fc_dwgeom *g, const float *w, const float *bias,
                                     const fc_epi *e0, float *y, float *xp) {
    const fc_epi ee = *e0, *e = &ee;
    const ptrdiff_t sr = fc_dw8_rows(g);
    const ptrdiff_t wq = (g->ow - 1) * g->sw + (g->kw - 1) * g->dw + 1;
    const ptrdiff_t HW = g->H * g->W, taps = g->kh * g->kw, ohw = g->oh * g->ow;
    float *ob = xp + ((sr - 1) * g->sh + (g->kh - 1) * g->dh + 1) * wq * 8 + 64;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256 wv[64];
    for (ptrdiff_t t = 0; t < taps; t++)
        wv[t] = _mm256_setr_ps(w[t], w[taps + t], w[2 * taps + t], w[3 * taps + t], w[4 * taps + t], w[5 * taps + t],
                               w[6 * taps + t], w[7 * taps + t]);
    ptrdiff_t off[64];
    for (ptrdiff_t t = 0; t < taps; t++) off[t] = ((t / g->kw) * g->dh * wq + (t % g->kw) * g->dw) * 8;
    const __m256 b = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
    for (ptrdiff_t p0 = 0; p0 < g->oh; p0 += sr) {  /* strips of sr output rows: their padded rows [r0, r1) into xp */
        const ptrdiff_t p1 = p0 + sr < g->oh ? p0 + sr : g->oh, r0 = p0 * g->sh;
        const ptrdiff_t r1 = (p1 - 1) * g->sh + (g->kh - 1) * g->dh + 1;  /* <= hp */
        for (ptrdiff_t r = r0; r < r1; r++) {
            const ptrdiff_t ih = r - g->pt;
            float *d = xp + (r - r0) * wq * 8;
            ptrdiff_t cc = 0;
            if ((size_t)ih < (size_t)g->H) {
                for (; cc < wq && cc < g->pl; cc++) _mm256_storeu_ps(d + cc * 8, _mm256_setzero_ps());
                for (; cc + 8 <= wq && cc - g->pl + 8 <= g->W; cc += 8) {
                    __m256 v[8];
                    for (int c = 0; c < 8; c++) v[c] = _mm256_loadu_ps(x + c * HW + ih * g->W + cc - g->pl);
                    fc_tr8(v);
                    for (int c = 0; c < 8; c++) _mm256_storeu_ps(d + (cc + c) * 8, v[c]);
                }
                if (cc < wq && cc - g->pl < g->W) {  /* the last columns: lanes past the input load zeros */
                    const ptrdiff_t n = g->W - (cc - g->pl), m = wq - cc < 8 ? wq - cc : 8;
                    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n < 8 ? (int)n : 8), lane);
                    __m256 v[8];
                    for (int c = 0; c < 8; c++) v[c] = _mm256_maskload_ps(x + c * HW + ih * g->W + cc - g->pl, mask);
                    fc_tr8(v);
                    /* all eight: past wq, into the next row (written after) or 64 floats of slack */
                    for (int c = 0; c < 8; c++) _mm256_storeu_ps(d + (cc + c) * 8, v[c]);
                    cc += m;
                }
            }
            for (; cc < wq; cc++) _mm256_storeu_ps(d + cc * 8, _mm256_setzero_ps());
        }
        for (ptrdiff_t p = p0; p < p1; p++) {
            ptrdiff_t t0, t1;
            fc_dw_rows(g, p, &t0, &t1);
            /* rows of 7, 14, 28 pixels in groups of 7: no group overlapping the one before */
            const ptrdiff_t st = g->sw * 8, gp = g->ow % 7 == 0 && g->ow % 8 ? 7 : g->ow >= 8 ? 8 : g->ow >= 4 ? 4 : 1;
            for (ptrdiff_t q = 0; q < g->ow; q += gp) {
                const ptrdiff_t q0 = q + gp <= g->ow ? q : g->ow - gp;  /* the last group overlaps the one before */
                const float *s = xp + ((p * g->sh - r0) * wq + q0 * g->sw) * 8;
                float *o = ob + (p * g->ow + q0) * 8;
                if (gp == 8 && st == 8) fc_dw8_px8_s1(s, st, wv, off, t0, t1, b, o);
                else if (gp == 8 && st == 16) fc_dw8_px8_s2(s, st, wv, off, t0, t1, b, o);
                else if (gp == 8) fc_dw8_px8(s, st, wv, off, t0, t1, b, o);
                else if (gp == 7 && st == 8) fc_dw8_px7_s1(s, st, wv, off, t0, t1, b, o);
                else if (gp == 7 && st == 16) fc_dw8_px7_s2(s, st, wv, off, t0, t1, b, o);
                else if (gp == 7) fc_dw8_px7(s, st, wv, off, t0, t1, b, o);
                else if (gp == 4 && st == 8) fc_dw8_px4_s1(s, st, wv, off, t0, t1, b, o);
                else if (gp == 4 && st == 16) fc_dw8_px4_s2(s, st, wv, off, t0, t1, b, o);
                else if (gp == 4) fc_dw8_px4(s, st, wv, off, t0, t1, b, o);
                else fc_dw8_px1(s, st, wv, off, t0, t1, b, o);
            }
        }
    }
    ptrdiff_t i = 0;  /* the activation here, out of the pixel loops (there its branches spilled the sums) */
    for (; i + 8 <= ohw; i += 8) {
        __m256 v[8];
        for (int c = 0; c < 8; c++) v[c] = fc_act8(_mm256_loadu_ps(ob + (i + c) * 8), e);
        fc_tr8(v);
        for (int c = 0; c < 8; c++) _mm256_storeu_ps(y + c * ohw + i, v[c]);
    }
    for (; i < ohw; i++) {
        float v[8];
        _mm256_storeu_ps(v, fc_act8(_mm256_loadu_ps(ob + i * 8), e));
        for (int c = 0; c < 8; c++) y[c * ohw + i] = v[c];
    }
}
#endif

typedef void (*fc_dw_fn)(const float *x, const fc_dwgeom *g, const float *w, float bias, const fc_epi *e, float *y,
                         float *xp);
typedef void (*fc_dw8_fn)(const float *x, const fc_dwgeom *g, const float *w, const float *bias, const fc_epi *e,
                          float *y, float *xp);

/* The paths, best first ("portable" last). */
typedef struct {
    const char *name;
    unsigned needs;
    fc_sweep_fn sweep, dir; /* full tiles of a packed B, of B in place */
    fc_tile_fn edge;        /* the others */
    const fc_ttile_fn *tt;  /* T tiles (fc_conv_block_t), or NULL */
    fc_dw_fn dw;
    fc_dw8_fn dw8; /* eight planes at once, or NULL */
} fc_path;

static const fc_path FC_PATHS[] = {
#if FC_X86
    {"avx2", RQ_CPU_AVX2, fc_sweep_avx2, fc_sweep_avx2_direct, fc_tile_avx2_edge, FC_TTILES_AVX2, fc_dw_avx2,
     fc_dw8_avx2},
#endif
    {"portable", 0u, fc_sweep_portable, fc_sweep_portable, fc_tile_portable, NULL, fc_dw_portable, NULL},
};
#define FC_NPATHS ((int)(sizeof FC_PATHS / sizeof FC_PATHS[0]))

/* 1 if this CPU can run path i (avx2 needs FMA too). */
FC_UNUSED static int fc_path_supported(int i) {
#if FC_X86
    if (FC_PATHS[i].needs & RQ_CPU_AVX2) return rq_cpu_has(RQ_CPU_AVX2) && __builtin_cpu_supports("fma");
#endif
    return rq_cpu_has(FC_PATHS[i].needs);
}

#endif
