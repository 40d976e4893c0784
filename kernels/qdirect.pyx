"""Direct (non-GEMM) INT8 kernels on NHWC uint8 tensors. Twin and specification: refquant/reference/qdirect.py.

Thin typed wrappers: arguments are validated by the twin's own helpers (so both reject the same inputs), the
work runs in the C kernels of ``kernels/include/qdirect/`` under OpenMP (``prange`` over output rows, pixel
tiles or element chunks; every output element is written by one thread with a fixed order of operations, so
the bits do not depend on the thread count).

Paths: ``available_paths()`` lists what this CPU runs, best first ("avx512", "avx2", "portable"); ``current_path()`` is
the default (refquant/_paths.py: the best one, or the one ``REFQUANT_PATH_QDIRECT`` /
``REFQUANT_FORCE_PORTABLE=1`` forces); every function takes ``path=`` to force one (for tests). All paths give the same bits. See docs/int8_kernels.md, "Direct kernels (qdirect)".
"""
from cython.parallel cimport prange
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t

from _arrays cimport in_f32, in_u8, out_f32, out_u8
from _openmp cimport omp_get_thread_num, threads_for

import math
import numpy as np

from refquant._paths import IsaPaths
from refquant.reference import qdirect as _spec


cdef extern from "qdirect/qdirect.h" nogil:
    enum:
        QD_PORTABLE
        QD_AVX2
        QD_AVX512
    ctypedef struct qd_geom:
        Py_ssize_t h, w, c, kh, kw, sh, sw, top, left, dh, dw, oh, ow
    ctypedef struct qd_dw:
        qd_geom g
        const int8_t *w
        const int32_t *bias
        const float *scale
        const uint8_t *zero_row
        const uint8_t *x_end
        int out_f32
        float lo_f, hi_f
        int32_t out_zero
        int scale_below_half
        const void *pix_w
        const int32_t *pix_b
        const float *pix_s
        Py_ssize_t pix_blocks
        const void *flat_w
        const int32_t *flat_b
        const float *flat_s
        Py_ssize_t flat_blocks
    ctypedef struct qd_sk:
        qd_geom g
        Py_ssize_t K, KP, N
        const uint8_t *x_end
        int out_f32
        float lo_f, hi_f
        int32_t out_zero
    ctypedef struct qd_path:
        const char *name
        int id
        void (*dw_row)(const qd_dw *d, const uint8_t *x, Py_ssize_t oh, char *out) noexcept nogil
        void (*quant_nchw)(const float *x, Py_ssize_t C, Py_ssize_t HW, Py_ssize_t p0, Py_ssize_t p1, float sinv,
                           float lo_f, float hi_f, int32_t zero, uint8_t *out) noexcept nogil
        void (*dequant_nhwc)(const uint8_t *q, Py_ssize_t C, Py_ssize_t HW, Py_ssize_t p0, Py_ssize_t p1,
                             int32_t zero, float scale, float *out) noexcept nogil
        void (*quant_rows)(const float *x, Py_ssize_t n, float sinv, float lo_f, float hi_f, int32_t zero,
                           uint8_t *out) noexcept nogil
        void (*dequant_rows)(const uint8_t *q, Py_ssize_t rows, Py_ssize_t K, int32_t zero, const float *scale,
                             int per_column, float *out) noexcept nogil
        void (*requant)(const uint8_t *q, Py_ssize_t n, int32_t in_zero, float multiplier, float lo_f, float hi_f,
                        int32_t out_zero, uint8_t *out) noexcept nogil
        void (*add)(const uint8_t *a, const uint8_t *b, Py_ssize_t n, int32_t az, float as_, int32_t bz, float bs,
                    float out_sinv, float lo_f, float hi_f, int32_t out_zero, uint8_t *out) noexcept nogil
        void (*chain_f32)(const float *x, Py_ssize_t n, const float *k, int hs, float *y, uint8_t *q, float sinv,
                          float lo_f, float hi_f, int32_t zero) noexcept nogil
        void (*maxpool_row)(const qd_geom *g, const uint8_t *x, Py_ssize_t oh, uint8_t *out) noexcept nogil
        void (*avgpool_row)(const qd_geom *g, const uint8_t *x, Py_ssize_t oh, int exclusive, int32_t zero,
                            int32_t *sum, uint8_t *out) noexcept nogil
        void (*gap)(const uint8_t *x, Py_ssize_t HW, Py_ssize_t C, int32_t zero, double scale, int64_t *sum,
                    float *out) noexcept nogil
        void (*im2col_row)(const qd_geom *g, const uint8_t *x, Py_ssize_t oh, uint8_t pad, uint8_t *out) noexcept nogil
        void (*sk_row)(const qd_sk *s, const uint8_t *x, Py_ssize_t oh, char *out) noexcept nogil
    const qd_path QD_PATHS[]
    const int QD_NPATHS
    int qd_path_supported(int i)
    size_t qd_dw_prepare(qd_dw *d, int path, Py_ssize_t flat_lanes, const int32_t *bias, int32_t a_zero, char *ws)
    size_t qd_sk_prepare(qd_sk *s, const int8_t *panels, const int32_t *bias, const int32_t *col_sum,
                         int32_t a_zero, const float *scale, char *ws)
    void qd_nhwc_to_nchw(const void *x, Py_ssize_t C, Py_ssize_t plane, Py_ssize_t p0, Py_ssize_t p1, int wide,
                         int avx2, void *out)

# Work per thread (MACs, or bytes touched) below which a call stays on the calling thread.
cdef Py_ssize_t MIN_WORK_PER_THREAD = 1 << 17
cdef Py_ssize_t ELEMENT_CHUNK = 1 << 14   # elements per task of the elementwise kernels
cdef Py_ssize_t PIXEL_CHUNK = 256         # pixels per task of the layout changes
cdef Py_ssize_t FLAT_MAX_LANES = 1 << 13  # largest lcm(C, 32) packed for the stride-1 flat walk

_PATHS = IsaPaths("qdirect", [QD_PATHS[i].name.decode() for i in range(QD_NPATHS)],
                  lambda i: qd_path_supported(i), known=("avx512", "avx2", "portable"))

available_paths = _PATHS.available
current_path = _PATHS.current


cdef const qd_path *_path(path) except NULL:
    return &QD_PATHS[_PATHS.index(path)]


cdef qd_geom _geom(Py_ssize_t h, Py_ssize_t w, Py_ssize_t c, kernel, stride, padding, dilation, Py_ssize_t oh,
                   Py_ssize_t ow):
    cdef qd_geom g
    g.h, g.w, g.c = h, w, c
    g.kh, g.kw = kernel
    g.sh, g.sw = stride
    g.top, g.left = padding[0], padding[1]
    g.dh, g.dw = dilation
    g.oh, g.ow = oh, ow
    return g


# ------------------------------------------------------------------------------------------------ depthwise
def _chain_args(who, chain, out_dtype):
    """``(k, hs, want_float, qz, sinv, lo, hi, zero)``: check_chain's results and q8_params of a kernel's ``chain``
    keyword (None: no chain)."""
    if chain is None:
        return None, 0, True, None, 1.0, 0.0, 0.0, 0
    if out_dtype != "f32":
        raise ValueError(f'{who}: chain needs out_dtype="f32"')
    k, hs, want_float, qz = _spec.check_chain(**chain)
    return (k, hs, want_float, qz) + tuple(_spec.q8_params(qz))


cdef class DepthwisePlan:
    """depthwise_conv_u8s8 for inputs of one shape, checked and prepared once (the weights packed for the path,
    the bias folded with a_zero, the zero row): ``plan(x)`` checks only x (the twin's check_depthwise_input)."""
    cdef const qd_path *p
    cdef qd_dw d
    cdef object shape, w, scale, ws, chain_k, qz
    cdef int nchw, f32, has_chain, want_float, hs
    cdef float c_sinv, c_lo, c_hi
    cdef int32_t c_zero

    def __call__(self, x):
        _spec.check_depthwise_input(x, self.shape)
        cdef Py_ssize_t n = x.shape[0], h = x.shape[1], wd = x.shape[2], c = x.shape[3]
        cdef Py_ssize_t k = self.d.g.kh * self.d.g.kw, oh = self.d.g.oh, ow = self.d.g.ow
        y = q = None
        if self.has_chain:
            y, q = _glue_outputs((n, oh, ow, c), self.want_float, self.qz)
            if n * oh * ow * c == 0:
                return y, q
        cdef int threads = threads_for(n * oh * ow * c * k, MIN_WORK_PER_THREAD)
        # the output, or with a chain one float row per thread
        if not self.has_chain:
            out = np.empty((n, c, oh, ow) if self.nchw else (n, oh, ow, c), dtype=np.float32 if self.f32 else np.uint8)
        else:
            out = np.empty((threads, ow, c), dtype=np.float32)
        if out.size == 0:
            return out
        cdef const uint8_t[:, :, :, ::1] xv = x
        cdef qd_dw d = self.d
        cdef const qd_path *p = self.p
        d.x_end = &xv[0, 0, 0, 0] + n * h * wd * c
        cdef const uint8_t *xp = &xv[0, 0, 0, 0]
        cdef uint8_t[::1] ov = out.reshape(-1).view(np.uint8)
        cdef char *op = <char *> &ov[0]
        cdef Py_ssize_t rows = n * oh, r, img = h * wd * c, row_bytes = ow * c * (4 if self.f32 else 1), row = ow * c
        cdef float *yp = out_f32(y)
        cdef uint8_t *qp = out_u8(q)
        cdef char *buf
        cdef uint8_t[::1] bufv
        cdef int wide = self.f32
        cdef const float *ck
        if not self.has_chain and not self.nchw:
            with nogil:
                for r in prange(rows, schedule="dynamic", num_threads=threads):
                    p.dw_row(&d, xp + (r // oh) * img, r % oh, op + r * row_bytes)
            return out
        if not self.has_chain:  # each output row into this thread's row buffer, then transposed into the C planes
            bufv = np.empty(threads * row_bytes, dtype=np.uint8)
            with nogil:
                for r in prange(rows, schedule="dynamic", num_threads=threads):
                    buf = <char *> &bufv[0] + omp_get_thread_num() * row_bytes
                    p.dw_row(&d, xp + (r // oh) * img, r % oh, buf)
                    qd_nhwc_to_nchw(buf, c, oh * ow, 0, ow, wide, p.id != QD_PORTABLE,
                                    op + ((r // oh) * c * oh + r % oh) * ow * (4 if wide else 1))
            return out
        cdef float[::1] chain_k = self.chain_k
        ck = &chain_k[0]
        cdef int hs = self.hs
        cdef float c_sinv = self.c_sinv, c_lo = self.c_lo, c_hi = self.c_hi
        cdef int32_t c_zero = self.c_zero
        with nogil:  # each output row into this thread's float row (out), then through the chain
            for r in prange(rows, schedule="dynamic", num_threads=threads):
                buf = op + omp_get_thread_num() * row_bytes
                p.dw_row(&d, xp + (r // oh) * img, r % oh, buf)
                p.chain_f32(<float *> buf, row, ck, hs, yp + r * row if yp != NULL else NULL,
                             qp + r * row if qp != NULL else NULL, c_sinv, c_lo, c_hi, c_zero)
        return y, q


def prepare_depthwise(x_shape, w, *, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), a_zero=0, bias=None,
                      scale, out_dtype="u8", out_zero=0, lo=None, hi=None, chain=None, out_layout="NHWC",
                      path=None):
    """A :class:`DepthwisePlan`: depthwise_conv_u8s8's arguments for inputs of ``x_shape`` (N, H, W, C), checked
    (the twin's check_depthwise_plan) and prepared once. The plan keeps its own copies of the arrays."""
    cdef DepthwisePlan plan = DepthwisePlan.__new__(DepthwisePlan)
    plan.p = _path(path)
    cdef const qd_path *p = plan.p
    shape = _spec.check_shape4("depthwise_conv_u8s8", x_shape)
    a = _spec.check_depthwise_plan(shape, w, stride, padding, dilation, a_zero, bias, scale, out_dtype, out_zero,
                                   lo, hi)
    plan.nchw = _spec.check_out_layout("depthwise_conv_u8s8", out_layout, chain) == "NCHW"
    chain_k, plan.hs, plan.want_float, plan.qz, plan.c_sinv, plan.c_lo, plan.c_hi, plan.c_zero = _chain_args(
        "depthwise_conv_u8s8", chain, a["out_dtype"])
    plan.has_chain = chain is not None
    plan.chain_k = None if chain_k is None else np.array(chain_k)
    plan.shape, plan.w, plan.scale = shape, np.array(w), np.array(a["scale"])
    cdef Py_ssize_t h = shape[1], wd = shape[2], c = shape[3], kh = w.shape[0], kw = w.shape[1]
    plan.f32 = a["out_dtype"] == "f32"
    cdef qd_dw d
    d.g = _geom(h, wd, c, (kh, kw), a["stride"], a["padding"], a["dilation"], a["oh"], a["ow"])
    cdef const int8_t[:, :, ::1] wv = plan.w
    cdef const float[::1] sv = plan.scale
    cdef const int32_t[::1] bv = a["bias"]
    d.w, d.scale = &wv[0, 0, 0], &sv[0]
    d.x_end = NULL
    d.out_f32 = plan.f32
    if plan.f32:
        d.lo_f, d.hi_f, d.out_zero = a["lo"], a["hi"], 0
    else:
        d.lo_f, d.hi_f, d.out_zero = a["lo"] - a["out_zero"], a["hi"] - a["out_zero"], a["out_zero"]
    d.scale_below_half = a["scale_below_half"]
    # the flat walks (stride 1; AVX-512 also strided) pack lcm(C, lanes per vector) lanes
    cdef Py_ssize_t lanes = 64 if p.id == QD_AVX512 else 32
    cdef Py_ssize_t period = c * lanes // math.gcd(c, lanes)
    cdef Py_ssize_t flat_lanes = period if (a["stride"][1] == 1 or p.id == QD_AVX512) and period <= FLAT_MAX_LANES \
        else 0
    cdef size_t size = qd_dw_prepare(&d, p.id, flat_lanes, NULL, a["a_zero"], NULL)
    cdef uint8_t[::1] wsv = np.empty(size + 64, dtype=np.uint8)
    plan.ws = wsv.base
    cdef char *ws = <char *> &wsv[0]
    ws += (64 - (<size_t> ws) % 64) % 64
    qd_dw_prepare(&d, p.id, flat_lanes, &bv[0], a["a_zero"], ws)
    plan.d = d
    return plan


def depthwise_conv_u8s8(x, w, *, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), a_zero=0, bias=None,
                        scale, out_dtype="u8", out_zero=0, lo=None, hi=None, chain=None, out_layout="NHWC",
                        path=None):
    """Depthwise conv: x uint8 NHWC (N, H, W, C), w int8 (KH, KW, C), padding (top, left, bottom, right).

    acc = bias[c] + sum over valid taps of (x - a_zero) * w (int32); out = clamp(rint(float32(acc) * scale[c])
    + out_zero, lo, hi) as uint8 (out_dtype "u8") or float32(acc) * scale[c], optionally clamped (out_dtype
    "f32"). Returns NHWC (N, OH, OW, C), or NCHW (N, C, OH, OW) with ``out_layout="NCHW"`` (each output row
    transposed while it is in cache). ``chain`` (f32 only, NHWC): scalar_chain_f32's keyword arguments, applied
    to each output row while it is in cache; returns its ``(t or None, q or None)``. A plan made and called
    (:func:`prepare_depthwise`): both reject the same inputs.
    """
    _spec.check_array("depthwise_conv_u8s8: x", x, np.uint8, 4)
    return prepare_depthwise(x.shape, w, stride=stride, padding=padding, dilation=dilation, a_zero=a_zero,
                             bias=bias, scale=scale, out_dtype=out_dtype, out_zero=out_zero, lo=lo, hi=hi,
                             chain=chain, out_layout=out_layout, path=path)(x)


# ---------------------------------------------------------------------------------------------- small-K conv
def conv_small_k_u8s8(x, packed, K, N, *, kernel, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), a_zero=0,
                      col_sum=None, bias=None, scale, out_dtype="u8", out_zero=0, lo=None, hi=None, chain=None,
                      path=None):
    """Conv with K = KH*KW*C <= 64 on NHWC u8 x and qgemm's packed weights, without an im2col matrix: the numbers
    of ``gemm_u8s8(im2col_u8(x, ..., pad_value=a_zero), packed, ...)`` (see the twin)."""
    cdef const qd_path *p = _path(path)
    a = _spec.check_conv_small_k(x, packed, K, N, kernel, stride, padding, dilation, a_zero, col_sum, bias, scale,
                                 out_dtype, out_zero, lo, hi)
    cdef float[::1] chain_k
    cdef int hs
    cdef float c_sinv, c_lo, c_hi
    cdef int32_t c_zero
    chain_k, hs, want_float, qz, c_sinv, c_lo, c_hi, c_zero = _chain_args("conv_small_k_u8s8", chain,
                                                                          a["out_dtype"])
    cdef Py_ssize_t n = x.shape[0], oh = a["oh"], ow = a["ow"], nc = N, row = ow * nc
    f32 = a["out_dtype"] == "f32"
    y = q = None
    if chain is not None:
        y, q = _glue_outputs((n, oh, ow, nc), want_float, qz)
        if n == 0:
            return y, q
    cdef int threads = threads_for(n * oh * row * K, MIN_WORK_PER_THREAD)
    shape = (x.shape[0], a["oh"], a["ow"], N) if chain is None else (threads, a["ow"], N)  # Python tuples
    out = np.empty(shape, np.float32 if f32 else np.uint8)
    if out.size == 0:
        return out
    cdef qd_sk s
    s.g = _geom(x.shape[1], x.shape[2], x.shape[3], a["kernel"], a["stride"], a["padding"], a["dilation"], oh, ow)
    s.K, s.N = K, N
    s.out_f32 = f32
    if f32:
        s.lo_f, s.hi_f, s.out_zero = a["lo"], a["hi"], 0
    else:
        s.lo_f, s.hi_f, s.out_zero = a["lo"] - a["out_zero"], a["hi"] - a["out_zero"], a["out_zero"]
    cdef const int8_t[::1] pv = packed
    cdef const int32_t[::1] bv = a["bias"]
    cdef const int32_t[::1] cv = a["col_sum"] if a["a_zero"] else a["bias"]  # col_sum unused when a_zero is 0
    cdef const float[::1] sv = a["scale"]
    cdef const uint8_t[:, :, :, ::1] xv = x
    s.x_end = &xv[0, 0, 0, 0] + n * s.g.h * s.g.w * s.g.c
    cdef size_t size = qd_sk_prepare(&s, NULL, NULL, NULL, 0, NULL, NULL)
    cdef uint8_t[::1] wsv = np.empty(size + 64, dtype=np.uint8)
    cdef char *ws = <char *> &wsv[0]
    ws += (64 - (<size_t> ws) % 64) % 64
    qd_sk_prepare(&s, &pv[64], &bv[0], &cv[0] if a["a_zero"] else NULL, a["a_zero"], &sv[0], ws)
    cdef const uint8_t *xp = &xv[0, 0, 0, 0]
    cdef uint8_t[::1] ov = out.reshape(-1).view(np.uint8)
    cdef char *op = <char *> &ov[0]
    cdef Py_ssize_t r, img = s.g.h * s.g.w * s.g.c, row_bytes = row * (4 if f32 else 1)
    cdef float *yp = out_f32(y)
    cdef uint8_t *qp = out_u8(q)
    cdef char *buf
    if chain is None:
        with nogil:
            for r in prange(n * oh, schedule="dynamic", num_threads=threads):
                p.sk_row(&s, xp + (r // oh) * img, r % oh, op + r * row_bytes)
        return out
    with nogil:  # each output row into this thread's float row (out), then through the chain
        for r in prange(n * oh, schedule="dynamic", num_threads=threads):
            buf = op + omp_get_thread_num() * row_bytes
            p.sk_row(&s, xp + (r // oh) * img, r % oh, buf)
            p.chain_f32(<float *> buf, row, &chain_k[0], hs, yp + r * row if yp != NULL else NULL,
                         qp + r * row if qp != NULL else NULL, c_sinv, c_lo, c_hi, c_zero)
    return y, q


# ------------------------------------------------------------------------------------- quantize / dequantize
def quantize_nchw(x, scale_inv, *, zero=0, lo=0, hi=255, path=None):
    """float32 NCHW (N, C, H, W) -> uint8 NHWC: clamp(rint(x * scale_inv) + zero, lo, hi) (NaN -> lo)."""
    cdef const qd_path *p = _path(path)
    _spec.check_array("quantize_nchw: x", x, np.float32, 4)
    cdef float s = _spec.check_float("scale_inv", scale_inv, positive=True)
    cdef int32_t z = _spec.check_int("zero", zero, 0, 255)
    lo, hi = _spec.check_lo_hi(lo, hi)
    cdef float lo_f = lo - z, hi_f = hi - z
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], hw = x.shape[2] * x.shape[3]
    out = np.empty((n, x.shape[2], x.shape[3], c), dtype=np.uint8)
    if out.size == 0:
        return out
    cdef const float *xp = in_f32(x)
    cdef uint8_t *op = out_u8(out)
    cdef Py_ssize_t chunks = (hw + PIXEL_CHUNK - 1) // PIXEL_CHUNK, t, i, p0
    cdef int threads = threads_for(n * c * hw * 4, MIN_WORK_PER_THREAD)
    with nogil:
        for t in prange(n * chunks, schedule="dynamic", num_threads=threads):
            i = t // chunks
            p0 = (t % chunks) * PIXEL_CHUNK
            p.quant_nchw(xp + i * c * hw, c, hw, p0, min(p0 + PIXEL_CHUNK, hw), s, lo_f, hi_f, z,
                          op + i * c * hw)
    return out


def dequantize_nhwc(q, scale, *, zero=0, path=None):
    """uint8 NHWC (N, H, W, C) -> float32 NCHW: float32(q - zero) * scale."""
    cdef const qd_path *p = _path(path)
    _spec.check_array("dequantize_nhwc: q", q, np.uint8, 4)
    cdef float s = _spec.check_float("scale", scale)
    cdef int32_t z = _spec.check_int("zero", zero, 0, 255)
    cdef Py_ssize_t n = q.shape[0], c = q.shape[3], hw = q.shape[1] * q.shape[2]
    out = np.empty((n, c, q.shape[1], q.shape[2]), dtype=np.float32)
    if out.size == 0:
        return out
    cdef const uint8_t *qp = in_u8(q)
    cdef float *op = out_f32(out)
    cdef Py_ssize_t chunks = (hw + PIXEL_CHUNK - 1) // PIXEL_CHUNK, t, i, p0
    cdef int threads = threads_for(n * c * hw * 4, MIN_WORK_PER_THREAD)
    with nogil:
        for t in prange(n * chunks, schedule="dynamic", num_threads=threads):
            i = t // chunks
            p0 = (t % chunks) * PIXEL_CHUNK
            p.dequant_nhwc(qp + i * c * hw, c, hw, p0, min(p0 + PIXEL_CHUNK, hw), z, s, op + i * c * hw)
    return out


def nhwc_to_nchw(x, *, path=None):
    """NHWC (N, H, W, C) -> NCHW (N, C, H, W) of 1- or 4-byte items (uint8, float32, ...): the same bits moved,
    in cache tiles on OpenMP threads (what numpy's transposed copy does element by element); 4-byte items in 8 x 8
    AVX2 blocks on the avx2 / avx512 paths, 4 x 4 SSE2 blocks on the portable one."""
    cdef const qd_path *p = _path(path)
    _spec.check_layout_change("nhwc_to_nchw", x)
    cdef Py_ssize_t n = x.shape[0], c = x.shape[3], hw = x.shape[1] * x.shape[2], size = x.itemsize
    out = np.empty((n, c, x.shape[1], x.shape[2]), dtype=x.dtype)
    if out.size == 0:
        return out
    cdef const uint8_t *xp = in_u8(x.reshape(-1).view(np.uint8))
    cdef uint8_t *op = out_u8(out.reshape(-1).view(np.uint8))
    cdef Py_ssize_t chunks = (hw + PIXEL_CHUNK - 1) // PIXEL_CHUNK, t, i, p0
    cdef int wide = size == 4, threads = threads_for(2 * n * c * hw * size, MIN_WORK_PER_THREAD)
    with nogil:
        for t in prange(n * chunks, schedule="dynamic", num_threads=threads):
            i = t // chunks
            p0 = (t % chunks) * PIXEL_CHUNK
            qd_nhwc_to_nchw(xp + i * c * hw * size, c, hw, p0, min(p0 + PIXEL_CHUNK, hw), wide, p.id != QD_PORTABLE,
                            op + i * c * hw * size)
    return out


def quantize_rows(x, scale_inv, zero=0, lo=0, hi=255, *, path=None):
    """float32 (M, K) -> uint8 (M, K): clamp(rint(x * scale_inv) + zero, lo, hi) (NaN -> lo)."""
    cdef const qd_path *p = _path(path)
    _spec.check_array("quantize_rows: x", x, np.float32, 2)
    cdef float s = _spec.check_float("scale_inv", scale_inv, positive=True)
    cdef int32_t z = _spec.check_int("zero", zero, 0, 255)
    lo, hi = _spec.check_lo_hi(lo, hi)
    cdef float lo_f = lo - z, hi_f = hi - z
    out = np.empty(x.shape, dtype=np.uint8)
    cdef const float *xp = in_f32(x)
    cdef uint8_t *op = out_u8(out)
    cdef Py_ssize_t total = x.size, t, e0
    cdef int threads = threads_for(total * 4, MIN_WORK_PER_THREAD)
    with nogil:
        for t in prange((total + ELEMENT_CHUNK - 1) // ELEMENT_CHUNK, schedule="dynamic", num_threads=threads):
            e0 = t * ELEMENT_CHUNK
            p.quant_rows(xp + e0, min(ELEMENT_CHUNK, total - e0), s, lo_f, hi_f, z, op + e0)
    return out


def dequantize_rows(q, scale, zero=0, *, path=None):
    """uint8 (M, K) -> float32 (M, K): float32(q - zero) * scale, scale a scalar or a (K,) per-column array."""
    cdef const qd_path *p = _path(path)
    _spec.check_array("dequantize_rows: q", q, np.uint8, 2)
    s, per_column = _spec.check_row_scale(scale, q.shape[1])
    cdef int32_t z = _spec.check_int("zero", zero, 0, 255)
    scale_arr = np.ascontiguousarray(np.atleast_1d(s), dtype=np.float32)
    cdef const float[::1] sv = scale_arr
    cdef int per_col = bool(per_column)
    cdef Py_ssize_t m = q.shape[0], k = q.shape[1], t, r0
    out = np.empty((m, k), dtype=np.float32)
    if out.size == 0:
        return out
    cdef const uint8_t *qp = in_u8(q)
    cdef float *op = out_f32(out)
    cdef Py_ssize_t rows_per = max(1, ELEMENT_CHUNK // k)
    cdef int threads = threads_for(m * k * 4, MIN_WORK_PER_THREAD)
    with nogil:
        for t in prange((m + rows_per - 1) // rows_per, schedule="dynamic", num_threads=threads):
            r0 = t * rows_per
            p.dequant_rows(qp + r0 * k, min(rows_per, m - r0), k, z, &sv[0], per_col, op + r0 * k)
    return out


# ------------------------------------------------------------------------------------------------- im2col
def im2col_u8(x, kh, kw, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), pad_value=0, *, out=None,
              path=None):
    """NHWC uint8 -> (N*OH*OW, KH*KW*C) uint8 rows for the GEMM: row (n, oh, ow), columns (kh, kw, c), padded
    taps = pad_value (the zero point). ``out``: a reusable C-contiguous uint8 buffer of that shape."""
    cdef const qd_path *p = _path(path)
    oh_, ow_, kh, kw, stride, padding, dilation, pad_value = _spec.check_im2col(
        x, kh, kw, stride, padding, dilation, pad_value, out)
    cdef Py_ssize_t n = x.shape[0], oh = oh_, ow = ow_
    cdef qd_geom g = _geom(x.shape[1], x.shape[2], x.shape[3], (kh, kw), stride, padding, dilation, oh, ow)
    if out is None:
        out = np.empty((n * oh * ow, kh * kw * g.c), dtype=np.uint8)
    if out.size == 0:
        return out
    cdef const uint8_t *xp = in_u8(x)
    cdef uint8_t *op = out_u8(out)
    cdef uint8_t pad = pad_value
    cdef Py_ssize_t r, img = g.h * g.w * g.c, row = ow * kh * kw * g.c
    cdef int threads = threads_for(n * oh * row, MIN_WORK_PER_THREAD)
    with nogil:
        for r in prange(n * oh, schedule="dynamic", num_threads=threads):
            p.im2col_row(&g, xp + (r // oh) * img, r % oh, pad, op + r * row)
    return out


# ------------------------------------------------------------------------------------ requantize / add / pools
def requantize(q, multiplier, *, in_zero, out_zero, lo=0, hi=255, path=None):
    """uint8 (any shape) -> uint8: clamp(rint(float32(q - in_zero) * multiplier) + out_zero, lo, hi)."""
    cdef const qd_path *p = _path(path)
    _spec.check_array("requantize: q", q, np.uint8)
    cdef float m = _spec.check_float("multiplier", multiplier, positive=True)
    cdef int32_t iz = _spec.check_int("in_zero", in_zero, 0, 255), oz = _spec.check_int("out_zero", out_zero, 0, 255)
    lo, hi = _spec.check_lo_hi(lo, hi)
    cdef float lo_f = lo - oz, hi_f = hi - oz
    out = np.empty(q.shape, dtype=np.uint8)
    cdef const uint8_t *qp = in_u8(q)
    cdef uint8_t *op = out_u8(out)
    cdef Py_ssize_t total = q.size, t, e0
    cdef int threads = threads_for(total, MIN_WORK_PER_THREAD)
    with nogil:
        for t in prange((total + ELEMENT_CHUNK - 1) // ELEMENT_CHUNK, schedule="dynamic", num_threads=threads):
            e0 = t * ELEMENT_CHUNK
            p.requant(qp + e0, min(ELEMENT_CHUNK, total - e0), iz, m, lo_f, hi_f, oz, op + e0)
    return out


def add_u8(a, a_scale, a_zero, b, b_scale, b_zero, out_scale_inv, out_zero, lo=0, hi=255, *, path=None):
    """Elementwise residual add of two INT8 tensors of one shape: f = float32(a - a_zero) * a_scale +
    float32(b - b_zero) * b_scale (no fma), q = clamp(rint(f * out_scale_inv) + out_zero, lo, hi)."""
    cdef const qd_path *p = _path(path)
    as_, az_, bs_, bz_, osi_, oz_, lo_, hi_ = _spec.check_add(a, a_scale, a_zero, b, b_scale, b_zero,
                                                             out_scale_inv, out_zero, lo, hi)
    cdef float fas = as_, fbs = bs_, osi = osi_, lo_f = lo_ - oz_, hi_f = hi_ - oz_
    cdef int32_t az = az_, bz = bz_, oz = oz_
    out = np.empty(a.shape, dtype=np.uint8)
    cdef const uint8_t *ap = in_u8(a)
    cdef const uint8_t *bp = in_u8(b)
    cdef uint8_t *op = out_u8(out)
    cdef Py_ssize_t total = a.size, t, e0
    cdef int threads = threads_for(total * 2, MIN_WORK_PER_THREAD)
    with nogil:
        for t in prange((total + ELEMENT_CHUNK - 1) // ELEMENT_CHUNK, schedule="dynamic", num_threads=threads):
            e0 = t * ELEMENT_CHUNK
            p.add(ap + e0, bp + e0, min(ELEMENT_CHUNK, total - e0), az, fas, bz, fbs, osi, lo_f, hi_f, oz,
                   op + e0)
    return out


def _glue_outputs(shape, want_float, qz):
    """The float32 and uint8 outputs of a float glue kernel, each None when not asked for."""
    return (np.empty(shape, dtype=np.float32) if want_float else None,
            np.empty(shape, dtype=np.uint8) if qz is not None else None)


def max_pool_u8(x, kernel, stride=(1, 1), padding=(0, 0, 0, 0), *, path=None):
    """NHWC uint8 max pool (padded taps ignored; padding must be smaller than the kernel)."""
    cdef const qd_path *p = _path(path)
    kernel, stride, padding, oh_, ow_ = _spec.check_pool("max_pool_u8", x, kernel, stride, padding)
    cdef Py_ssize_t n = x.shape[0], oh = oh_, ow = ow_
    cdef qd_geom g = _geom(x.shape[1], x.shape[2], x.shape[3], kernel, stride, padding, (1, 1), oh, ow)
    out = np.empty((n, oh, ow, g.c), dtype=np.uint8)
    if out.size == 0:
        return out
    cdef const uint8_t *xp = in_u8(x)
    cdef uint8_t *op = out_u8(out)
    cdef Py_ssize_t r, img = g.h * g.w * g.c, row = ow * g.c
    cdef int threads = threads_for(n * oh * row * g.kh * g.kw, MIN_WORK_PER_THREAD)
    with nogil:
        for r in prange(n * oh, schedule="dynamic", num_threads=threads):
            p.maxpool_row(&g, xp + (r // oh) * img, r % oh, op + r * row)
    return out


def avg_pool_u8(x, kernel, stride=(1, 1), padding=(0, 0, 0, 0), exclusive=True, zero=0, *, path=None):
    """NHWC uint8 average pool: clamp(rint(float32(sum(x - zero)) / float32(count)) + zero, 0, 255), count =
    valid taps (exclusive=True) or KH*KW (padded taps count as the zero point)."""
    cdef const qd_path *p = _path(path)
    kernel, stride, padding, oh_, ow_ = _spec.check_pool("avg_pool_u8", x, kernel, stride, padding)
    cdef int32_t z = _spec.check_int("zero", zero, 0, 255)
    cdef int excl = bool(exclusive)
    cdef Py_ssize_t n = x.shape[0], oh = oh_, ow = ow_
    cdef qd_geom g = _geom(x.shape[1], x.shape[2], x.shape[3], kernel, stride, padding, (1, 1), oh, ow)
    out = np.empty((n, oh, ow, g.c), dtype=np.uint8)
    if out.size == 0:
        return out
    cdef const uint8_t *xp = in_u8(x)
    cdef uint8_t *op = out_u8(out)
    cdef Py_ssize_t r, img = g.h * g.w * g.c, row = ow * g.c
    cdef int threads = threads_for(n * oh * row * g.kh * g.kw, MIN_WORK_PER_THREAD)
    cdef int32_t[:, ::1] scratch = np.empty((threads, max(g.c, 1)), dtype=np.int32)
    with nogil:
        for r in prange(n * oh, schedule="dynamic", num_threads=threads):
            p.avgpool_row(&g, xp + (r // oh) * img, r % oh, excl, z, &scratch[omp_get_thread_num(), 0],
                           op + r * row)
    return out


def global_avg_pool_u8(x, scale=1.0, zero=0, *, path=None):
    """NHWC uint8 (N, H, W, C) -> float32 (N, C): float32(float64(sum(x - zero)) / (H*W) * float64(scale))."""
    cdef const qd_path *p = _path(path)
    scale_, zero_ = _spec.check_gap(x, scale, zero)
    cdef double s = scale_
    cdef int32_t z = zero_
    cdef Py_ssize_t n = x.shape[0], c = x.shape[3], hw = x.shape[1] * x.shape[2], i
    out = np.empty((n, c), dtype=np.float32)
    if out.size == 0:
        return out
    cdef int64_t[:, ::1] sums = np.empty((n, c), dtype=np.int64)
    cdef const uint8_t *xp = in_u8(x)
    cdef float *op = out_f32(out)
    cdef int threads = threads_for(n * hw * c, MIN_WORK_PER_THREAD)
    with nogil:
        for i in prange(n, schedule="dynamic", num_threads=threads):
            p.gap(xp + i * hw * c, hw, c, z, s, &sums[i, 0], op + i * c)
    return out
