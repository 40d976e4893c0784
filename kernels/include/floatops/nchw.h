/* floatops/nchw.h: copies of NCHW float32 maps for the float graph (no arithmetic: the twin's bits by
 * construction). One ISA: plain loops, the compiler's baseline. */
#ifndef FLOATOPS_NCHW_H
#define FLOATOPS_NCHW_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Nearest resize of planes [p0, p1) of H x W: y[p, i, j] = x[p, iy[i], ix[j]] (OH x OW per plane). An output row
 * whose source row is the previous one's is a copy of that output row. */
static void fo_nearest_f32(const float *x, ptrdiff_t p0, ptrdiff_t p1, ptrdiff_t H, ptrdiff_t W, const int64_t *iy,
                           ptrdiff_t OH, const int64_t *ix, ptrdiff_t OW, float *y) {
    for (ptrdiff_t p = p0; p < p1; p++) {
        const float *xp = x + p * H * W;
        float *yp = y + p * OH * OW;
        for (ptrdiff_t i = 0; i < OH; i++) {
            float *row = yp + i * OW;
            if (i > 0 && iy[i] == iy[i - 1]) {
                memcpy(row, row - OW, (size_t)OW * sizeof(float));
                continue;
            }
            const float *src = xp + iy[i] * W;
            for (ptrdiff_t j = 0; j < OW; j++) row[j] = src[ix[j]];
        }
    }
}

#endif
