/* floatops/glue.h -- the float glue between INT8 ops: a residual add, the scalar chain, an SE excitation and a
 * global average pool, each float32 in and float32 and / or the next INT8 op's uint8 out, in one pass. Twin and
 * specification: refquant/reference/floatops.py. floatops.h includes this file once per path, with FO_SFX (the
 * name suffix) and FO_ATTR (the target attribute) set; the round-and-clamp to u8 (qd_q8) and the scalar chain
 * (qd_chain_span) are the shared definitions of qdirect/chain.h. No include guard on purpose. */
#define FO_GLUE_CAT_(a, b) a##b
#define FO_GLUE_CAT(a, b) FO_GLUE_CAT_(a, b)
#define FO_GLUE(name) FO_GLUE_CAT(name, FO_SFX)

/* float residual add: f = a + b, relu: f > 0 ? f : 0 (NaN -> 0); y (if not NULL) = f, q (if not NULL) =
 * qd_q8(f * sinv). */
FO_ATTR FO_UNUSED static void FO_GLUE(fo_add_f32_)(const float *a, const float *b, ptrdiff_t n, int relu, float *y,
                                                   uint8_t *q, float sinv, float lo_f, float hi_f, int32_t zero) {
    for (ptrdiff_t i = 0; i < n; i++) {
        float f = a[i] + b[i];
        if (relu) f = f > 0.0f ? f : 0.0f;
        if (y) y[i] = f;
        if (q) q[i] = qd_q8(f * sinv, lo_f, hi_f, zero);
    }
}

/* The scalar chain (qd_chain_span, qdirect/chain.h) over n elements. */
FO_ATTR FO_UNUSED static void FO_GLUE(fo_chain_f32_)(const float *x, ptrdiff_t n, const float *k, int hs, float *y,
                                                     uint8_t *q, float sinv, float lo_f, float hi_f, int32_t zero) {
    qd_chain_span(x, n, k, hs, y, q, sinv, lo_f, hi_f, zero);
}

/* SE excitation: pixels [0, n) of one NHWC image times its per-channel scale, f = x[p, c] * s[c] (float32, what
 * elementwise_mul with a (N, C, 1, 1) operand gives); y (if not NULL) = f, q (if not NULL) = qd_q8(f * sinv). */
FO_ATTR FO_UNUSED static void FO_GLUE(fo_chmul_f32_)(const float *x, const float *s, ptrdiff_t n, ptrdiff_t C,
                                                     float *y, uint8_t *q, float sinv, float lo_f, float hi_f,
                                                     int32_t zero) {
    for (ptrdiff_t p = 0; p < n; p++) {
        const float *xp = x + p * C;
        for (ptrdiff_t c = 0; c < C; c++) {
            float f = xp[c] * s[c];
            if (y) y[p * C + c] = f;
            if (q) q[p * C + c] = qd_q8(f * sinv, lo_f, hi_f, zero);
        }
    }
}

/* float32 global average pool of one NHWC image: out[c] = (float)(the float64 sum of x[p, c] in pixel order / HW).
 * The sums live on this thread's stack, 512 channels at a time. */
FO_ATTR FO_UNUSED static void FO_GLUE(fo_gap_f32_)(const float *x, ptrdiff_t HW, ptrdiff_t C, float *out) {
    for (ptrdiff_t c0 = 0; c0 < C; c0 += 512) {
        const ptrdiff_t nc = C - c0 < 512 ? C - c0 : 512;
        double acc[512];
        for (ptrdiff_t c = 0; c < nc; c++) acc[c] = 0.0;
        for (ptrdiff_t p = 0; p < HW; p++) {
            const float *src = x + p * C + c0;
            for (ptrdiff_t c = 0; c < nc; c++) acc[c] += (double)src[c];
        }
        for (ptrdiff_t c = 0; c < nc; c++) out[c0 + c] = (float)(acc[c] / (double)HW);
    }
}

#undef FO_GLUE
#undef FO_GLUE_CAT
#undef FO_GLUE_CAT_
