"""im2col / col2im, the NumPy twins of ``kernels/im2col.pyx``.

For an input ``x`` of shape (N, C, H, W), a kernel (kh, kw), ``stride`` (sh, sw), ``padding``
(top, left, bottom, right) and ``dilation`` (dh, dw), the output grid is

    OH = (H + top + bottom - dh*(kh-1) - 1) // sh + 1,   OW likewise,

and ``cols[n, (c*kh + i)*kw + j, oh*OW + ow] = x[n, c, oh*sh - top + i*dh, ow*sw - left + j*dw]``
(zero where that falls in the padding). A convolution is then ``W.reshape(OC, C*kh*kw) @ cols``.
``col2im`` is the adjoint: it scatters-adds the columns back, which is the input gradient of im2col.
"""
from __future__ import annotations

import numpy as np


def conv_out_size(size: int, k: int, stride: int, pad_lo: int, pad_hi: int, dilation: int) -> int:
    return (size + pad_lo + pad_hi - dilation * (k - 1) - 1) // stride + 1


def im2col(x: np.ndarray, kh: int, kw: int, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1)) -> np.ndarray:
    n, c, h, w = x.shape
    sh, sw = stride
    top, left, bottom, right = padding
    dh, dw = dilation
    oh = conv_out_size(h, kh, sh, top, bottom, dh)
    ow = conv_out_size(w, kw, sw, left, right, dw)
    xp = np.pad(x, ((0, 0), (0, 0), (top, max(bottom, 0)), (left, max(right, 0))))
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            cols[:, :, i, j] = xp[:, :, r0:r0 + sh * (oh - 1) + 1:sh, c0:c0 + sw * (ow - 1) + 1:sw]
    return cols.reshape(n, c * kh * kw, oh * ow)


def col2im(cols: np.ndarray, x_shape, kh: int, kw: int, stride=(1, 1), padding=(0, 0, 0, 0),
           dilation=(1, 1)) -> np.ndarray:
    n, c, h, w = x_shape
    sh, sw = stride
    top, left, bottom, right = padding
    dh, dw = dilation
    oh = conv_out_size(h, kh, sh, top, bottom, dh)
    ow = conv_out_size(w, kw, sw, left, right, dw)
    xp = np.zeros((n, c, h + top + max(bottom, 0), w + left + max(right, 0)), dtype=cols.dtype)
    cols = cols.reshape(n, c, kh, kw, oh, ow)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            xp[:, :, r0:r0 + sh * (oh - 1) + 1:sh, c0:c0 + sw * (ow - 1) + 1:sw] += cols[:, :, i, j]
    return xp[:, :, top:top + h, left:left + w]
