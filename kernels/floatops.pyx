"""Float32 inference kernels (gelu, softmax, layer norm) and the float glue between INT8 ops (a residual add, a
scalar chain, an SE excitation, a global average pool, each optionally quantizing for the next INT8 op). Twin
and specification: refquant/reference/floatops.py.

Thin typed wrappers: arguments are validated by the twin's own helper (so both reject the same inputs), the
work runs in the C loops of ``kernels/include/floatops/floatops.h`` (and ``glue.h``), in element chunks or row
blocks. gelu, sigmoid, softmax and layer norm take ``max_threads``: their callers keep them on the calling thread
between BLAS calls (FP32 and dynamic-INT8 transformers), where an OpenMP team fights OpenBLAS's spin-waiting
workers (refquant.threads.float_kernel_threads), and let them use every thread between OpenMP kernels. The chunks
are fixed, so any thread count gives the same bits. The float glue between INT8 ops runs under OpenMP, as the INT8
kernels around it do.

Paths: ``available_paths()`` lists what this CPU runs, best first ("avx2", "portable"); ``current_path()`` is
the default (refquant/_paths.py: the best one, or the one ``REFQUANT_PATH_FLOATOPS`` /
``REFQUANT_FORCE_PORTABLE=1`` forces); every function takes ``path=`` to force one (for tests). All paths give the same bits as the twin.
"""
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_New
from cython.parallel cimport prange
from libc.math cimport NAN
from libc.stdint cimport int32_t, int64_t, uint8_t

from _arrays cimport in_f32, out_f32, out_u8
from _openmp cimport threads_for

import sys

import numpy as np

from refquant._paths import IsaPaths
from refquant.reference import floatops as _spec
from refquant.reference import qdirect as _qd_spec


cdef extern from "floatops/floatops.h" nogil:
    ctypedef struct fo_path:
        const char *name
        void (*gelu_erf)(const float *x, Py_ssize_t n, float t, float *y) noexcept nogil
        void (*sigmoid)(const float *x, Py_ssize_t n, float t, float *y) noexcept nogil
        void (*relu)(const float *x, Py_ssize_t n, float t, float *y) noexcept nogil
        void (*softmax_rows)(const float *x, Py_ssize_t rows, Py_ssize_t n, float *y) noexcept nogil
        void (*layer_norm_rows)(const float *x, Py_ssize_t rows, Py_ssize_t n, const float *scale,
                                const float *bias, double eps, float *y) noexcept nogil
        void (*add_f32)(const float *a, const float *b, Py_ssize_t n, int relu, float *y, uint8_t *q, float sinv,
                        float lo_f, float hi_f, int32_t zero) noexcept nogil
        void (*chain_f32)(const float *x, Py_ssize_t n, const float *k, int hs, float *y, uint8_t *q, float sinv,
                          float lo_f, float hi_f, int32_t zero) noexcept nogil
        void (*chmul_f32)(const float *x, const float *s, Py_ssize_t n, Py_ssize_t C, float *y, uint8_t *q,
                          float sinv, float lo_f, float hi_f, int32_t zero) noexcept nogil
        void (*gap_f32)(const float *x, Py_ssize_t HW, Py_ssize_t C, float *out) noexcept nogil
        int (*dwconv_f32)(const float *x, const float *w, const float *bias, float *y, Py_ssize_t p0, Py_ssize_t p1,
                          Py_ssize_t C, Py_ssize_t M, Py_ssize_t H, Py_ssize_t W, int kh, int kw, Py_ssize_t sh,
                          Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t oh,
                          Py_ssize_t ow) noexcept nogil
    const fo_path FO_PATHS[]
    const int FO_NPATHS
    int fo_path_supported(int i)


# Elements (or rows x n) per C call.
cdef Py_ssize_t CHUNK = 1 << 14
# The float glue between INT8 ops: work per thread below which a call stays on the calling thread, elements per
# task of the elementwise kernels, pixels per task of the SE excitation.
cdef Py_ssize_t MIN_GLUE_WORK_PER_THREAD = 1 << 17
cdef Py_ssize_t GLUE_CHUNK = 1 << 14
cdef Py_ssize_t GLUE_PIXELS = 256
# Depthwise convolution: multiply-adds per thread below which a call stays on the calling thread.
cdef Py_ssize_t MIN_DW_MACS_PER_THREAD = 1 << 18

_PATHS = IsaPaths("floatops", [FO_PATHS[i].name.decode() for i in range(FO_NPATHS)],
                  lambda i: fo_path_supported(i), known=("avx2", "portable"))

available_paths = _PATHS.available
current_path = _PATHS.current


cdef const fo_path *_path(path) except NULL:
    return &FO_PATHS[_PATHS.index(path)]


cdef int _threads(Py_ssize_t nbytes, max_threads):
    """Threads for a gelu / sigmoid / softmax / layer norm pass over ``nbytes`` of input: threads_for, capped by
    ``max_threads`` (None: no cap; checked by the twin's helpers)."""
    cdef int t = threads_for(nbytes, MIN_GLUE_WORK_PER_THREAD)
    return t if max_threads is None else min(t, <int> max_threads)


ctypedef void (*fo_unary)(const float *x, Py_ssize_t n, float t, float *y) noexcept nogil


cdef object _unary(what, x, max_threads, fo_unary f, float arg=0.0):
    """y = f(x; arg) element by element for float32 C-contiguous ``x`` of any shape, in fixed chunks over threads."""
    _spec.check_input(what, x, max_threads=max_threads)
    y = np.empty(x.shape, dtype=np.float32)
    cdef const float *xp = in_f32(x)
    cdef float *yp = out_f32(y)
    cdef Py_ssize_t total = x.size, t, e0
    cdef int threads = _threads(total * 4, max_threads)
    with nogil:
        for t in prange((total + CHUNK - 1) // CHUNK, schedule="dynamic", num_threads=threads):
            e0 = t * CHUNK
            f(xp + e0, min(CHUNK, total - e0), arg, yp + e0)
    return y


def gelu_erf(x, *, max_threads=None, path=None):
    """y = 0.5 x (1 + erf(x / sqrt 2)) for float32 C-contiguous ``x`` of any shape; float32 out."""
    return _unary("gelu_erf", x, max_threads, _path(path).gelu_erf)


def sigmoid(x, *, max_threads=None, path=None):
    """y = 1 / (1 + exp(-x)) for float32 C-contiguous ``x`` of any shape; float32 out."""
    return _unary("sigmoid", x, max_threads, _path(path).sigmoid)


def relu_f32(x, threshold=None, *, max_threads=None, path=None):
    """relu of float32 C-contiguous ``x`` (any shape): ``x <= 0 ? 0 : x``; with ``threshold`` t, relu6's clip
    ``min(x < 0 ? 0 : x, t)``. NaN passes; -0 gives +0 without t, -0 with t (NumPy's maximum and clip on x86)."""
    _spec.check_relu_f32(x, threshold, max_threads)
    return _unary("relu_f32", x, max_threads, _path(path).relu, NAN if threshold is None else threshold)


def softmax_lastaxis(x, *, max_threads=None, path=None):
    """Softmax over the last axis of float32 C-contiguous ``x`` (..., n); float32 out."""
    cdef const fo_path *p = _path(path)
    _spec.check_input("softmax_lastaxis", x, min_ndim=1, max_threads=max_threads)
    y = np.empty(x.shape, dtype=np.float32)
    if x.size == 0:
        return y
    cdef const float *xp = in_f32(x)
    cdef float *yp = out_f32(y)
    cdef Py_ssize_t n = x.shape[x.ndim - 1], rows = x.size // n
    cdef Py_ssize_t per = max(1, CHUNK // n), t, r0
    cdef int threads = _threads(x.size * 4, max_threads)
    with nogil:
        for t in prange((rows + per - 1) // per, schedule="dynamic", num_threads=threads):
            r0 = t * per
            p.softmax_rows(xp + r0 * n, min(per, rows - r0), n, yp + r0 * n)
    return y


def layer_norm_lastaxis(x, scale=None, bias=None, epsilon=1e-5, *, max_threads=None, path=None):
    """Layer norm of each row of the last axis of float32 C-contiguous ``x`` (..., n); float32 out.

    Per row, in float64 with the fixed lane order of refquant/reference/floatops.py: ``mean = sum(x) / n``,
    ``var = sum((x - mean)^2) / n``, ``inv = 1 / sqrt(var + epsilon)``, ``xhat = float32((x - mean) * inv)``; then
    in float32 ``y = xhat [* scale] [+ bias]`` (optional float32 C-contiguous arrays of n elements). Max relative
    error against the float64 formula: see the twin's docstring. Same bits as the twin on every path.
    """
    cdef const fo_path *p = _path(path)
    _spec.check_layer_norm_input("layer_norm_lastaxis", x, scale, bias, max_threads)
    cdef double eps = float(epsilon)
    y = np.empty(x.shape, dtype=np.float32)
    if x.size == 0:
        return y
    cdef const float *xp = in_f32(x)
    cdef const float *sp = NULL
    cdef const float *bp = NULL
    if scale is not None:
        sp = in_f32(scale)
    if bias is not None:
        bp = in_f32(bias)
    cdef float *yp = out_f32(y)
    cdef Py_ssize_t n = x.shape[x.ndim - 1], rows = x.size // n
    cdef Py_ssize_t per = max(1, CHUNK // n), t, r0
    cdef int threads = _threads(x.size * 4, max_threads)
    with nogil:
        for t in prange((rows + per - 1) // per, schedule="dynamic", num_threads=threads):
            r0 = t * per
            p.layer_norm_rows(xp + r0 * n, min(per, rows - r0), n, sp, bp, eps, yp + r0 * n)
    return y


# ---- the float glue between INT8 ops: these sit between OpenMP INT8 kernels, not BLAS calls, so they run under
# OpenMP as those do (each output element written by one thread, the same bits for any thread count)

def _glue_outputs(shape, want_float, qz):
    """The float32 and uint8 outputs of a float glue kernel, each None when not asked for."""
    return (np.empty(shape, dtype=np.float32) if want_float else None,
            np.empty(shape, dtype=np.uint8) if qz is not None else None)


def scalar_chain_f32(x, *, pre=(1.0, -0.0), hard_swish=None, post=(1.0, -0.0), want_float=True, quantize=None,
                     path=None):
    """A chain of scalar float ops in one pass (float32 each step): t = x * pre[0] + pre[1]; hard swish if
    ``hard_swish = (offset, threshold, scale)``: t = (t * min(max(t + offset, 0), threshold)) / scale; then
    t = t * post[0] + post[1]; returns (t or None, q or None) like add_f32."""
    cdef const fo_path *p = _path(path)
    _qd_spec.check_array("scalar_chain_f32: x", x, np.float32)
    cdef float[::1] k
    cdef int hs
    k, hs, want_float, qz = _qd_spec.check_chain(pre, hard_swish, post, want_float, quantize)
    cdef float sinv, lo_f, hi_f
    cdef int32_t z
    sinv, lo_f, hi_f, z = _qd_spec.q8_params(qz)
    y, q = _glue_outputs(x.shape, want_float, qz)
    cdef const float *xp = in_f32(x)
    cdef float *yp = out_f32(y)
    cdef uint8_t *qp = out_u8(q)
    cdef Py_ssize_t total = x.size, t, e0
    cdef int threads = threads_for(total * 4, MIN_GLUE_WORK_PER_THREAD)
    with nogil:
        for t in prange((total + GLUE_CHUNK - 1) // GLUE_CHUNK, schedule="dynamic", num_threads=threads):
            e0 = t * GLUE_CHUNK
            p.chain_f32(xp + e0, min(GLUE_CHUNK, total - e0), &k[0], hs, yp + e0 if yp != NULL else NULL,
                         qp + e0 if qp != NULL else NULL, sinv, lo_f, hi_f, z)
    return y, q


def add_f32(a, b, *, relu=False, want_float=True, quantize=None, path=None):
    """A float residual add and what follows it, in one pass: f = a + b, relu f > 0 ? f : 0; returns
    (f or None, q or None), q = clamp(rint(f * scale_inv) + zero, lo, hi) for quantize = (scale_inv, zero, lo, hi)."""
    cdef const fo_path *p = _path(path)
    qz = _spec.check_add_f32(a, b, want_float, quantize)
    cdef float sinv, lo_f, hi_f
    cdef int32_t z
    sinv, lo_f, hi_f, z = _qd_spec.q8_params(qz)
    y, q = _glue_outputs(a.shape, want_float, qz)
    cdef const float *ap = in_f32(a)
    cdef const float *bp = in_f32(b)
    cdef float *yp = out_f32(y)
    cdef uint8_t *qp = out_u8(q)
    cdef int r = relu
    cdef Py_ssize_t total = a.size, t, e0
    cdef int threads = threads_for(total * 4, MIN_GLUE_WORK_PER_THREAD)
    with nogil:
        for t in prange((total + GLUE_CHUNK - 1) // GLUE_CHUNK, schedule="dynamic", num_threads=threads):
            e0 = t * GLUE_CHUNK
            p.add_f32(ap + e0, bp + e0, min(GLUE_CHUNK, total - e0), r, yp + e0 if yp != NULL else NULL,
                       qp + e0 if qp != NULL else NULL, sinv, lo_f, hi_f, z)
    return y, q


def channel_mul_f32(x, s, *, want_float=True, quantize=None, path=None):
    """SE excitation and what follows it, in one pass: f = x[n, h, w, c] * s[n, c] (float32) for NHWC x and
    (N, C) s; returns (f or None, q or None) like add_f32."""
    cdef const fo_path *p = _path(path)
    qz = _spec.check_channel_mul_f32(x, s, want_float, quantize)
    cdef float sinv, lo_f, hi_f
    cdef int32_t z
    sinv, lo_f, hi_f, z = _qd_spec.q8_params(qz)
    y, q = _glue_outputs(x.shape, want_float, qz)
    cdef const float *xp = in_f32(x)
    cdef const float *sp = in_f32(s)
    cdef float *yp = out_f32(y)
    cdef uint8_t *qp = out_u8(q)
    cdef Py_ssize_t n = x.shape[0], c = x.shape[3], hw = x.shape[1] * x.shape[2]
    cdef Py_ssize_t chunks = (hw + GLUE_PIXELS - 1) // GLUE_PIXELS, t, img, p0, e0
    cdef int threads = threads_for(x.size * 4, MIN_GLUE_WORK_PER_THREAD)
    if x.size == 0:
        return y, q
    with nogil:
        for t in prange(n * chunks, schedule="dynamic", num_threads=threads):
            img = t // chunks
            p0 = (t % chunks) * GLUE_PIXELS
            e0 = (img * hw + p0) * c
            p.chmul_f32(xp + e0, sp + img * c, min(GLUE_PIXELS, hw - p0), c, yp + e0 if yp != NULL else NULL,
                         qp + e0 if qp != NULL else NULL, sinv, lo_f, hi_f, z)
    return y, q


def global_avg_pool_f32(x, *, path=None):
    """NHWC float32 (N, H, W, C) -> float32 (N, C): float32(the float64 sum over the pixels, in order, / (H*W))."""
    cdef const fo_path *p = _path(path)
    _spec.check_gap_f32(x)
    cdef Py_ssize_t n = x.shape[0], c = x.shape[3], hw = x.shape[1] * x.shape[2], i
    out = np.empty((n, c), dtype=np.float32)
    if out.size == 0:
        return out
    cdef const float *xp = in_f32(x)
    cdef float *op = out_f32(out)
    cdef int threads = threads_for(n * hw * c * 4, MIN_GLUE_WORK_PER_THREAD)
    with nogil:
        for i in prange(n, schedule="dynamic", num_threads=threads):
            p.gap_f32(xp + i * hw * c, hw, c, op + i * c)
    return out


# ---- direct depthwise convolution: output planes split between OpenMP threads (each plane written by one
# thread, the same bits for any thread count)

def depthwise_conv2d(x, w, bias=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), *, max_threads=None,
                     path=None):
    """Depthwise convolution of float32 NCHW ``x`` (N, C, H, W) with ``w`` (C*M, 1, KH, KW), optional ``bias``
    (C*M): float32 (N, C*M, OH, OW) out; the twin's sums in the twin's order (same bits on every path and thread
    count). ``max_threads`` caps refquant's thread count (1: the calling thread, as between BLAS calls)."""
    cdef const fo_path *p = _path(path)
    (sh, sw), pad, (dh, dw), (oh, ow) = _spec.check_depthwise_conv2d(x, w, bias, stride, padding, dilation,
                                                                     max_threads)
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], oc = w.shape[0], kh = w.shape[2], kw = w.shape[3]
    y = np.empty((n, oc, oh, ow), dtype=np.float32)
    if y.size == 0:
        return y
    cdef const float *xp = in_f32(x)
    cdef const float *wp = in_f32(w)
    cdef const float *bp = in_f32(bias)
    cdef float *yp = out_f32(y)
    cdef Py_ssize_t planes = n * oc, H = x.shape[2], W = x.shape[3], OH = oh, OW = ow
    cdef Py_ssize_t SH = sh, SW = sw, DH = dh, DW = dw, PT = pad[0], PL = pad[1], m = oc // c
    cdef int threads = threads_for(planes * OH * OW * kh * kw, MIN_DW_MACS_PER_THREAD)
    if max_threads is not None:
        threads = min(threads, max_threads)
    cdef Py_ssize_t per = max(1, planes // (4 * threads)), tasks = (planes + per - 1) // per, t, p0
    cdef int[::1] status = np.zeros(tasks, dtype=np.intc)
    with nogil:
        for t in prange(tasks, schedule="dynamic", num_threads=threads):
            p0 = t * per
            status[t] = p.dwconv_f32(xp, wp, bp, yp, p0, min(p0 + per, planes), c, m, H, W, <int>kh, <int>kw,
                                     SH, SW, DH, DW, PT, PL, OH, OW)
    if np.any(np.asarray(status)):
        raise MemoryError(f"depthwise_conv2d: cannot allocate a padded plane of {H} x {W} floats")
    return y


cdef extern from "floatops/nchw.h" nogil:
    void fo_nearest_f32(const float *x, Py_ssize_t p0, Py_ssize_t p1, Py_ssize_t H, Py_ssize_t W, const int64_t *iy,
                        Py_ssize_t OH, const int64_t *ix, Py_ssize_t OW, float *y)
    void fo_maxpool_f32(const float *x, Py_ssize_t planes, Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh,
                        Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t OH,
                        Py_ssize_t OW, float *t, float *y)
    void fo_gap_nchw_f32(const float *x, Py_ssize_t planes, Py_ssize_t HW, float *y)
    void fo_bn_nchw_f32(const float *x, Py_ssize_t p0, Py_ssize_t p1, Py_ssize_t C, Py_ssize_t HW, const float *mean,
                        const float *inv_std, const float *scale, const float *bias, float *y)


def global_avg_pool_nchw_f32(x, *, path=None):
    """float32 NCHW (N, C, H, W) -> float32 (N, C, 1, 1): numpy.mean over H, W, the same bits (its pairwise float32
    sum, then a float64 division by H*W), on the calling thread."""
    _path(path)
    _spec.check_gap_nchw_f32(x)
    y = np.empty((x.shape[0], x.shape[1], 1, 1), dtype=np.float32)
    if y.size == 0:
        return y
    cdef const float *xp = in_f32(x)
    cdef float *yp = out_f32(y)
    cdef Py_ssize_t planes = x.shape[0] * x.shape[1], hw = x.shape[2] * x.shape[3]
    with nogil:
        fo_gap_nchw_f32(xp, planes, hw, yp)
    return y


def batch_norm_nchw_f32(x, mean, inv_std, scale, bias, *, max_threads=None, path=None):
    """Batch norm at inference of float32 (N, C, ...) ``x``: ``((x - mean) * inv_std) * scale + bias`` per channel,
    the twin's float32 steps in one pass, in fixed blocks of planes (any thread count gives the same bits)."""
    _path(path)
    _spec.check_batch_norm_nchw_f32(x, mean, inv_std, scale, bias, max_threads)
    y = np.empty(x.shape, dtype=np.float32)
    if y.size == 0:
        return y
    cdef const float *xp = in_f32(x)
    cdef const float *mp = in_f32(mean)
    cdef const float *sp = in_f32(inv_std)
    cdef const float *gp = in_f32(scale)
    cdef const float *bp = in_f32(bias)
    cdef float *yp = out_f32(y)
    cdef Py_ssize_t C = x.shape[1], planes = x.shape[0] * C, hw = x.size // planes, t
    cdef Py_ssize_t per = max(1, CHUNK // hw)  # planes per task
    cdef int threads = _threads(x.size * 4, max_threads)
    with nogil:
        for t in prange((planes + per - 1) // per, schedule="dynamic", num_threads=threads):
            fo_bn_nchw_f32(xp, t * per, min(planes, (t + 1) * per), C, hw, mp, sp, gp, bp, yp)
    return y


def max_pool_f32(x, ksize, stride, pad, out_hw, *, path=None):
    """Max pool of float32 NCHW ``x``: windows ``ksize`` at ``stride`` from (-top, -left) (``pad``), ``out_hw``
    outputs; each the max of its taps inside the map (-inf if none; the twin's values, but for the sign of a zero
    max and a NaN's payload), on the calling thread."""
    _path(path)
    _spec.check_max_pool_f32(x, ksize, stride, pad, out_hw)
    y = np.empty(x.shape[:2] + tuple(out_hw), dtype=np.float32)
    if y.size == 0:
        return y
    row = np.empty(max(x.shape[3], 1), dtype=np.float32)
    cdef const float *xp = in_f32(x)
    cdef float *yp = out_f32(y)
    cdef float *tp = out_f32(row)
    cdef Py_ssize_t planes = x.shape[0] * x.shape[1], H = x.shape[2], W = x.shape[3], kh = ksize[0], kw = ksize[1]
    cdef Py_ssize_t sh = stride[0], sw = stride[1], pt = pad[0], pl = pad[1], OH = out_hw[0], OW = out_hw[1]
    with nogil:
        fo_maxpool_f32(xp, planes, H, W, kh, kw, sh, sw, pt, pl, OH, OW, tp, yp)
    return y


def nearest_f32(x, iy, ix, *, path=None):
    """Nearest resize of float32 NCHW ``x`` by source indices ``iy`` (OH), ``ix`` (OW) (int64): a C-contiguous
    (N, C, OH, OW) copy, on the calling thread (a memory-bound copy: a second thread saves little and waits for a
    busy core)."""
    _path(path)
    _spec.check_nearest_f32(x, iy, ix)
    cdef Py_ssize_t planes = x.shape[0] * x.shape[1], H = x.shape[2], W = x.shape[3], OH = iy.shape[0]
    cdef Py_ssize_t OW = ix.shape[0]
    y = np.empty((x.shape[0], x.shape[1], OH, OW), dtype=np.float32)
    if y.size == 0:
        return y
    cdef const float *xp = in_f32(x)
    cdef float *yp = out_f32(y)
    cdef const int64_t[::1] vy = iy
    cdef const int64_t[::1] vx = ix
    with nogil:
        fo_nearest_f32(xp, 0, planes, H, W, &vy[0], OH, &vx[0], OW, yp)
    return y


# ---- the array arena: NumPy's data allocator while a graph runs (kernels/include/floatops/arena.h)

cdef extern from "floatops/arena.h":
    ctypedef struct ar_handler:
        pass
    ar_handler AR_HANDLER
    size_t ar_bytes
    int ar_count
    unsigned long long ar_hits, ar_misses
    void ar_release()

ctypedef object (*_set_handler_t)(object)
# PyDataMem_SetHandler: entry 304 of NumPy's C-API table (stable since NumPy 1.22), which import_array reads too
cdef _set_handler_t _set_handler = NULL
_ARENA = None


def arena_enter():
    """Make the arena NumPy's data allocator in this context (a contextvar, as NumPy keeps it); returns the
    previous handler, for :func:`arena_exit`. Arrays remember their allocator: one allocated here goes back to
    the arena when it is freed, later or in another thread."""
    global _set_handler, _ARENA
    if not getattr(sys, "_is_gil_enabled", lambda: True)():
        return None  # the cache relies on the GIL (arena.h): a free-threaded build keeps NumPy's allocator
    if _ARENA is None:
        if tuple(int(v) for v in np.__version__.split(".")[:2]) < (1, 22):
            raise RuntimeError(f"floatops.arena_enter needs NumPy >= 1.22 (PyDataMem_SetHandler), got {np.__version__}")
        import numpy._core._multiarray_umath as mu
        _set_handler = <_set_handler_t>(<void **>PyCapsule_GetPointer(mu._ARRAY_API, NULL))[304]
        _ARENA = PyCapsule_New(&AR_HANDLER, "mem_handler", NULL)
    return _set_handler(_ARENA)


def arena_exit(previous):
    """Restore the handler :func:`arena_enter` returned (None: it installed none)."""
    if previous is not None:
        _set_handler(previous)


def arena_stats():
    """{"hits", "misses": allocations of >= 256 KB served from / not found in the cache, "cached_bytes",
    "cached_blocks"}."""
    return {"hits": ar_hits, "misses": ar_misses, "cached_bytes": ar_bytes, "cached_blocks": ar_count}


def arena_release():
    """Free every cached block (the arena keeps at most 128 MB of them, the oldest freed leaving first)."""
    ar_release()
