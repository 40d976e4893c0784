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

from refquant.errors import ShapeError
from refquant.reference import im2col as _twin

# Output elements per thread below which a call stays single-threaded (measured crossover: ~20-40k in all).
cdef Py_ssize_t MIN_WORK_PER_THREAD = 1 << 15


# Every field lies in [0, 2**31) (top, left >= 0; the bottom / right paddings only shape oh, ow), as the twin's
# validator guarantees: the index arithmetic below (r*sh - top + i*dh, j*dw - left, ih*w + iw) cannot wrap.
cdef struct Geometry:
    Py_ssize_t h, w, kh, kw, sh, sw, top, left, dh, dw, oh, ow


def is_usable_for(arr):
    """True for a float32/float64 ndarray of rank 4 (images, for im2col) or 3 (columns, for col2im)."""
    return isinstance(arr, np.ndarray) and arr.dtype in (np.float32, np.float64) and arr.ndim in (3, 4)


def im2col(x, kh, kw, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1)):
    """(N, C, H, W) -> (N, C*kh*kw, OH*OW); padding is (top, left, bottom, right)."""
    _check_float("im2col: x", x, 4)
    x = np.ascontiguousarray(x)
    n, c, h, w = x.shape
    cdef Geometry g = _geometry("im2col", x.shape, kh, kw, stride, padding, dilation)
    cols = np.empty((n, c * g.kh * g.kw, g.oh * g.ow), dtype=x.dtype)
    if cols.size == 0:
        return cols
    if x.dtype == np.float32:
        _im2col[float](x, cols, &g)
    else:
        _im2col[double](x, cols, &g)
    return cols


def col2im(cols, x_shape, kh, kw, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1)):
    """(N, C*kh*kw, OH*OW) -> (N, C, H, W), summing the overlaps: the adjoint of :func:`im2col`."""
    _check_float("col2im: cols", cols, None)
    x_shape = _twin.geometry_ints("col2im", "x_shape", x_shape, 4)
    n, c, h, w = x_shape
    cdef Geometry g = _geometry("col2im", x_shape, kh, kw, stride, padding, dilation)
    if cols.size != n * c * g.kh * g.kw * g.oh * g.ow:
        raise ShapeError(f"col2im: columns of shape {cols.shape} do not match {(n, c * g.kh * g.kw, g.oh * g.ow)}")
    cols = np.ascontiguousarray(cols).reshape(n, c * g.kh * g.kw, g.oh * g.ow)
    x = np.empty((n, c, h, w), dtype=cols.dtype)
    if x.size == 0:
        return x
    if cols.size == 0:
        x[...] = 0
        return x
    if cols.dtype == np.float32:
        _col2im[float](cols, x, &g)
    else:
        _col2im[double](cols, x, &g)
    return x


def _check_float(name, a, ndim):
    """A float32 / float64 ndarray (of rank ``ndim``): what this module computes on (the twin takes any dtype;
    the dispatcher sends the rest there, see :func:`is_usable_for`)."""
    if not isinstance(a, np.ndarray) or a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name}: expected a float32 or float64 ndarray, got "
                        f"{getattr(a, 'dtype', type(a).__name__)}")
    if ndim is not None and a.ndim != ndim:
        raise ShapeError(f"{name}: expected {ndim} dimensions, got shape {a.shape}")


cdef Geometry _geometry(what, shape, kh, kw, stride, padding, dilation) except *:
    """The geometry validated by the twin's :func:`refquant.reference.im2col._geometry` (every value and every
    index below 2**31 in magnitude before the products the loops form; sizes overflow-checked)."""
    cdef Geometry g
    oh, ow, kernel, stride, padding, dilation = _twin._geometry(what, shape, kh, kw, stride, padding, dilation)
    g.h, g.w, g.oh, g.ow = shape[2], shape[3], oh, ow
    g.kh, g.kw = kernel
    g.sh, g.sw = stride
    g.top, g.left = padding[0], padding[1]
    g.dh, g.dw = dilation
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
                    row = x + ih * w  # the reads below are row[iw0 + ow*sw], inside [0, w) for ow in [lo, hi)
                    for ow in range(lo):
                        out[ow] = 0
                    if sw == 1:
                        memcpy(out + lo, row + iw0 + lo, (hi - lo) * sizeof(floating))
                    elif sw == 2:  # a constant stride the compiler vectorizes
                        for ow in range(lo, hi):
                            out[ow] = row[iw0 + 2 * ow]
                    else:
                        for ow in range(lo, hi):
                            out[ow] = row[iw0 + ow * sw]
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
