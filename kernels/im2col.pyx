"""im2col / col2im for float32 and float64, parallel over the (n, c) planes. Twin: refquant/reference/im2col.py.

Plane (n, c) of ``x`` owns rows ``c*kh*kw ... (c+1)*kh*kw - 1`` of ``cols[n]``, so threads never share an
output element: both directions are race-free and give the same bits with any number of threads. col2im adds
the kernel taps in the twin's order (i, then j) onto zeros, so its sums are bit-exact with the twin too.
"""
cimport cython
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy, memset

from _openmp cimport threads_for

import numpy as np

# Output elements per thread below which a call stays single-threaded (measured crossover: ~20-40k in all).
cdef Py_ssize_t MIN_WORK_PER_THREAD = 1 << 15


cdef struct Geometry:
    Py_ssize_t h, w, kh, kw, sh, sw, top, left, dh, dw, oh, ow


def is_usable_for(arr):
    """True for a float32/float64 ndarray of rank 4 (images, for im2col) or 3 (columns, for col2im)."""
    return isinstance(arr, np.ndarray) and arr.dtype in (np.float32, np.float64) and arr.ndim in (3, 4)


def im2col(x, Py_ssize_t kh, Py_ssize_t kw, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1)):
    """(N, C, H, W) -> (N, C*kh*kw, OH*OW); padding is (top, left, bottom, right)."""
    x = np.ascontiguousarray(x)
    n, c, h, w = x.shape
    cdef Geometry g = _geometry(h, w, kh, kw, stride, padding, dilation)
    cols = np.empty((n, c * kh * kw, g.oh * g.ow), dtype=x.dtype)
    if x.dtype == np.float32:
        _im2col[float](x, cols, &g)
    else:
        _im2col[double](x, cols, &g)
    return cols


def col2im(cols, x_shape, Py_ssize_t kh, Py_ssize_t kw, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1)):
    """(N, C*kh*kw, OH*OW) -> (N, C, H, W), summing the overlaps: the adjoint of :func:`im2col`."""
    n, c, h, w = x_shape
    cdef Geometry g = _geometry(h, w, kh, kw, stride, padding, dilation)
    cols = np.ascontiguousarray(cols).reshape(n, c * kh * kw, g.oh * g.ow)
    x = np.empty((n, c, h, w), dtype=cols.dtype)
    if cols.dtype == np.float32:
        _col2im[float](cols, x, &g)
    else:
        _col2im[double](cols, x, &g)
    return x


@cython.cdivision(False)  # Python's floor division, as in the twin's output-size formula
cdef Geometry _geometry(Py_ssize_t h, Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw, stride, padding,
                        dilation) except *:
    cdef Geometry g
    cdef Py_ssize_t bottom, right
    g.h, g.w, g.kh, g.kw = h, w, kh, kw
    g.sh, g.sw = stride
    g.top, g.left, bottom, right = padding
    g.dh, g.dw = dilation
    if min(kh, kw, g.sh, g.sw, g.dh, g.dw) < 1 or min(g.top, g.left) < 0:
        raise ValueError(f"im2col: need kernel, stride, dilation >= 1 and top/left padding >= 0; got kernel "
                         f"{(kh, kw)}, stride {stride}, padding {padding}, dilation {dilation}")
    g.oh = (h + g.top + bottom - g.dh * (kh - 1) - 1) // g.sh + 1
    g.ow = (w + g.left + right - g.dw * (kw - 1) - 1) // g.sw + 1
    if g.oh < 0 or g.ow < 0:
        raise ValueError(f"im2col: kernel {(kh, kw)} with dilation {dilation} exceeds the padded input {(h, w)}")
    return g


cdef void _im2col(const floating[:, :, :, ::1] x, floating[:, :, ::1] cols, const Geometry *g) noexcept:
    # One thread: the BLAS GEMM that reads ``cols`` runs on OpenBLAS's own threads next, and libgomp workers left
    # spinning after a parallel im2col take their cores (measured: MobileNetV1 FP32 at 2 threads 4x slower than
    # at 1). The copy is memory-bound and a small part of a conv.
    cdef Py_ssize_t p, c = x.shape[1], taps = g.kh * g.kw
    cdef int n_threads = 1
    for p in prange(x.shape[0] * c, nogil=True, schedule="static", num_threads=n_threads):
        _im2col_plane(&x[p // c, p % c, 0, 0], &cols[p // c, (p % c) * taps, 0], g)


cdef void _col2im(const floating[:, :, ::1] cols, floating[:, :, :, ::1] x, const Geometry *g) noexcept:
    cdef Py_ssize_t p, c = x.shape[1], taps = g.kh * g.kw
    cdef int n_threads = threads_for(cols.shape[0] * cols.shape[1] * cols.shape[2], MIN_WORK_PER_THREAD)
    for p in prange(x.shape[0] * c, nogil=True, schedule="static", num_threads=n_threads):
        _col2im_plane(&cols[p // c, (p % c) * taps, 0], &x[p // c, p % c, 0, 0], g)


cdef void _im2col_plane(const floating *x, floating *cols, const Geometry *g) noexcept nogil:
    """One plane: ``x`` is (h, w), ``cols`` is (kh*kw, oh*ow); padding positions get 0."""
    cdef Py_ssize_t i, j, r, ow, ih, iw0, lo, hi
    cdef Py_ssize_t w = g.w, sw = g.sw, n_out = g.ow
    cdef const floating *row
    cdef floating *out = cols
    for i in range(g.kh):
        for j in range(g.kw):
            iw0 = j * g.dw - g.left  # input column read by output column 0
            lo, hi = _inside(iw0, sw, w, n_out)
            for r in range(g.oh):
                ih = r * g.sh - g.top + i * g.dh
                if ih < 0 or ih >= g.h:
                    memset(out, 0, n_out * sizeof(floating))
                else:
                    row = x + ih * w + iw0
                    for ow in range(lo):
                        out[ow] = 0
                    if sw == 1:
                        memcpy(out + lo, row + lo, (hi - lo) * sizeof(floating))
                    elif sw == 2:  # a constant stride the compiler vectorizes
                        for ow in range(lo, hi):
                            out[ow] = row[2 * ow]
                    else:
                        for ow in range(lo, hi):
                            out[ow] = row[ow * sw]
                    for ow in range(hi, n_out):
                        out[ow] = 0
                out += n_out


cdef void _col2im_plane(const floating *cols, floating *x, const Geometry *g) noexcept nogil:
    """One plane: zero ``x`` (h, w), then add each tap's columns onto it; padding positions are dropped."""
    cdef Py_ssize_t i, j, r, ow, ih, iw0, lo, hi
    cdef const floating *src
    cdef floating *row
    memset(x, 0, g.h * g.w * sizeof(floating))
    for i in range(g.kh):
        for j in range(g.kw):
            iw0 = j * g.dw - g.left
            lo, hi = _inside(iw0, g.sw, g.w, g.ow)
            for r in range(g.oh):
                ih = r * g.sh - g.top + i * g.dh
                if ih < 0 or ih >= g.h:
                    continue
                src = cols + ((i * g.kw + j) * g.oh + r) * g.ow
                row = x + ih * g.w
                for ow in range(lo, hi):
                    row[iw0 + ow * g.sw] += src[ow]


cdef inline (Py_ssize_t, Py_ssize_t) _inside(Py_ssize_t i0, Py_ssize_t step, Py_ssize_t size,
                                             Py_ssize_t count) noexcept nogil:
    """The range [lo, hi) of k in [0, count) whose index i0 + k*step lies inside [0, size)."""
    cdef Py_ssize_t lo = 0 if i0 >= 0 else (step - 1 - i0) // step
    cdef Py_ssize_t hi = 0 if size <= i0 else (size - i0 + step - 1) // step
    lo = min(lo, count)
    return lo, min(max(hi, lo), count)
