"""Float32 convolution (groups 1, NCHW, inference) as a GEMM on weights packed once, with im2col done inside the
B packing and the bias and activation in the epilogue. Twin and specification: refquant/reference/fconv.py; the
C loops: kernels/include/fconv/fconv.h.

Work is split into tasks of (sample, block of up to FC_NC output pixels; one sample of at least
MIN_PIXELS_PER_THREAD pixels per thread is cut into equal blocks, a multiple of the thread count), and, when those
are fewer than twice the threads otherwise, of blocks of output channels too; each thread packs into its own
scratch. Every output element is summed by one tile in the same order, so the bits do not depend on the thread
count.

``prepare_conv2d`` / ``prepare_depthwise`` check every argument but the input once and return a plan (a graph runs
each conv many times: the checks took ~7 of a small conv's ~12 us per call); ``conv2d`` / ``depthwise_conv2d``
are a plan made and called.

Paths: ``available_paths()`` ("avx2": AVX2 + FMA, "portable"), ``current_path()`` (refquant/_paths.py,
``REFQUANT_PATH_FCONV``), ``path=`` forces one (for tests).
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cython.parallel cimport prange
from libc.stdint cimport uintptr_t

from _openmp cimport omp_get_thread_num, threads_for

import threading

import numpy as np

from refquant._paths import IsaPaths
from refquant.reference import fconv as _spec
from refquant.reference.fconv import pack_weights  # noqa: F401  (numpy: the layout is the twin's)
from refquant.reference.qgemm import aligned_empty as _aligned_empty


cdef extern from "fconv/fconv.h" nogil:
    ctypedef struct fc_geom:
        Py_ssize_t C, H, W, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow
    ctypedef struct fc_epi:
        int act, post
        float a, b, c, ps, pc
    ctypedef void (*fc_tile_fn)(Py_ssize_t kc, const float *a, const float *b, Py_ssize_t ldb, float *y,
                                const float *res, Py_ssize_t ldc, Py_ssize_t mr, Py_ssize_t nr, int add, int last,
                                const float *bias, const fc_epi *e) noexcept nogil
    ctypedef void (*fc_sweep_fn)(Py_ssize_t kc, const float *a, const float *b, Py_ssize_t ldb, Py_ssize_t bstep,
                                 Py_ssize_t nt, float *y, const float *res, Py_ssize_t ldc, int add, int last,
                                 const float *bias, const fc_epi *e) noexcept nogil
    ctypedef struct fc_dwgeom:
        Py_ssize_t H, W, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, hp, wp
    void fc_dw_init(fc_dwgeom *g) noexcept nogil
    ctypedef void (*fc_dw_fn)(const float *x, const fc_dwgeom *g, const float *w, float bias, const fc_epi *e,
                              float *y, float *xp) noexcept nogil
    ctypedef void (*fc_dw8_fn)(const float *x, const fc_dwgeom *g, const float *w, const float *bias,
                               const fc_epi *e, float *y, float *xp) noexcept nogil
    Py_ssize_t fc_dw8_scratch(const fc_dwgeom *g) noexcept nogil
    ctypedef struct fc_path:
        const char *name
        fc_sweep_fn sweep, dir
        fc_tile_fn edge
        const void *tt
        fc_dw_fn dw
        fc_dw8_fn dw8
    const fc_path FC_PATHS[]
    const int FC_NPATHS
    const int FC_MR, FC_KC, FC_NC, FC_TM, FC_T_TOT, FC_TSLOT, FC_T_A
    int fc_path_supported(int i)
    void fc_conv_block(fc_sweep_fn sweep, fc_sweep_fn dir, fc_tile_fn edge, const float *ap, Py_ssize_t M,
                       Py_ssize_t K, const float *x, const fc_geom *g, const float *bias, const fc_epi *e, float *y,
                       const float *res, Py_ssize_t m0, Py_ssize_t m1, Py_ssize_t n0, Py_ssize_t n1,
                       float *bp) noexcept nogil
    void fc_conv_block_t(const void *tt, const float *at, Py_ssize_t K, const float *x, Py_ssize_t N,
                         const float *bias, const fc_epi *e, float *y, const float *res, Py_ssize_t m0, Py_ssize_t m1,
                         Py_ssize_t n0, Py_ssize_t n1, float *tot) noexcept nogil


# Multiply-adds per thread below which a call stays on the calling thread.
cdef Py_ssize_t MIN_MACS_PER_THREAD = 1 << 20
# Pixels per thread from which one sample's GEMM is split by pixels only (smaller outputs by output channels too,
# each task packing its own B block; one round of 768 + 16 pixels with four channel blocks scaled 1.27x on 2 threads).
cdef Py_ssize_t MIN_PIXELS_PER_THREAD = 64
# Depthwise planes of at most this many output pixels, narrower than DW8_MAX_WIDTH, run eight channels per vector
# (their scratch stays in L2; 56 x 56 ran 0.75-0.9x the time of one plane at a time, 112 x 112 1.2x).
cdef Py_ssize_t DW8_MAX_PIXELS = 56 * 56
cdef Py_ssize_t DW8_MAX_WIDTH = 64
# 1x1 stride-1 convs run T tiles (fc_conv_block_t: B read in place, vectors along output channels) when
# K >= T_MIN_K, N <= T_MAX_N, K > M and the weights in one chunk of rows, or N <= T_SMALL_N and K >= T_SMALL_K
# (measured per layer, 1 thread: the projections of 28 x 28, 14 x 14 and 7 x 7 planes 0.8-0.92x the time, 7 x 7
# planes of K >= 320 0.89-0.92x; larger planes and shorter K, where the transposes at the end weigh more, 1.03-1.6x;
# ResNet-50's 512 -> 256 at 28 x 28 and 1024 -> 512 at 14 x 14, x read again for each of 2 and 8 chunks, 1.06x).
cdef Py_ssize_t T_MIN_K = 128
cdef Py_ssize_t T_MAX_N = 28 * 28
cdef Py_ssize_t T_SMALL_N = 64
cdef Py_ssize_t T_SMALL_K = 256

_PATHS = IsaPaths("fconv", [FC_PATHS[i].name.decode() for i in range(FC_NPATHS)],
                  lambda i: fc_path_supported(i), known=("avx2", "portable"))

available_paths = _PATHS.available
current_path = _PATHS.current


_local = threading.local()
_F32 = np.dtype(np.float32)


cdef inline float *_data(a) except? NULL:
    """The data of a C-contiguous float32 array the twin's checks passed (NULL for None): the buffer protocol, without
    a typed memoryview's per-call validation (~1 us an array, and a conv of a small model takes tens)."""
    if a is None:
        return NULL
    cdef Py_buffer b
    PyObject_GetBuffer(a, &b, PyBUF_SIMPLE)
    cdef float *p = <float *>b.buf
    PyBuffer_Release(&b)
    return p


def _scratch(n):
    """n float32 of scratch, kept per calling thread (not allocated and paged in again on every call)."""
    buf = getattr(_local, "buf", None)
    if buf is None or buf.size < n:
        buf = _local.buf = np.empty(max(n, 1 << 16), dtype=np.float32)
    return buf[:n]


def _t_pack(packed, oc):
    """The weights of ``packed`` (pack_weights) as T-tile panels, at[i, k, l] = A[16 i + l, k] (zeros past oc), in a
    64-byte aligned array (each k's 16 values one cache line)."""
    K = packed.shape[1]
    a = np.zeros(((oc + FC_TM - 1) // FC_TM * FC_TM, K), np.float32)
    a[:oc] = packed.transpose(0, 2, 1).reshape(-1, K)[:oc]
    t = a.reshape(-1, FC_TM, K).transpose(0, 2, 1)
    out = _aligned_empty(t.size, np.float32).reshape(t.shape)
    out[...] = t
    out.flags.writeable = False
    return out


def conv2d(x, packed, oc, kernel, bias=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1),
           epi=(0, 0.0, 0.0, 1.0), *, residual=None, max_threads=None, path=None):
    """act((conv2d(x, w) + bias) + residual) from ``packed = pack_weights(w)``: float32 (N, oc, OH, OW) out (the
    twin's formula, its rounding bound; the same bits for any thread count). ``max_threads`` caps the thread
    count."""
    return Conv2dPlan(_spec.check_input("fconv.conv2d", x, None), packed, oc, kernel, bias, stride, padding,
                      dilation, epi, max_threads, path)(x, residual)


def prepare_conv2d(x_shape, packed, oc, kernel, bias=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1),
                   epi=(0, 0.0, 0.0, 1.0), *, max_threads=None, path=None):
    """``plan(x, residual=None)``, equal to ``conv2d(x, packed, ...)`` for inputs of shape ``x_shape``, the other
    arguments checked once (the twin's ``prepare_conv2d``)."""
    return Conv2dPlan(_spec.stand_in(_spec.check_shape("fconv.conv2d", x_shape)), packed, oc, kernel, bias, stride,
                      padding, dilation, epi, max_threads, path)


cdef class Conv2dPlan:
    """A checked fconv.conv2d call for one input shape; calling it checks only the input and residual."""
    cdef fc_geom g
    cdef fc_epi e
    cdef Py_ssize_t n, M, K, N
    cdef object packed, tpacked, bias, x_shape, y_shape, max_threads, path

    def __init__(self, x, packed, oc, kernel, bias, stride, padding, dilation, epi, max_threads, path):
        """x: an array of the inputs' shape (its data is not read)."""
        (sh, sw), pad, (dh, dw), (kh, kw), (oh, ow), (code, a, b, c, ps, pc) = _spec.check_conv2d(
            x, packed, oc, kernel, bias, stride, padding, dilation, epi, max_threads)
        _PATHS.index(path)
        x_shape = x.shape
        self.packed, self.bias, self.max_threads, self.path = packed, bias, max_threads, path
        self.x_shape, self.y_shape = x_shape, (x_shape[0], oc, oh, ow)
        self.n, self.M, self.K, self.N = x_shape[0], oc, packed.shape[1], oh * ow
        self.g.C, self.g.H, self.g.W, self.g.kh, self.g.kw = x_shape[1], x_shape[2], x_shape[3], kh, kw
        self.g.sh, self.g.sw, self.g.dh, self.g.dw, self.g.pt, self.g.pl = sh, sw, dh, dw, pad[0], pad[1]
        self.g.oh, self.g.ow = oh, ow
        self.e.act, self.e.a, self.e.b, self.e.c, self.e.ps, self.e.pc = code, a, b, c, ps, pc
        self.e.post = ps != 1.0 or pc != 0.0
        self.tpacked = None
        small = self.N <= T_SMALL_N  # else all rows in one chunk (fc_conv_block_t): x is read once per chunk
        one_chunk = self.M <= max(FC_TM, FC_T_A // self.K // FC_TM * FC_TM)
        if FC_PATHS[_PATHS.index(path)].tt != NULL and kh == kw == sh == sw == 1 and not any(pad) and \
                (self.K >= T_MIN_K and self.N <= T_MAX_N and self.K > self.M and (small or one_chunk) or
                 small and self.K >= T_SMALL_K):
            self.tpacked = _t_pack(packed, oc)

    def __call__(self, x, residual=None):
        if type(x) is not np.ndarray or x.dtype != _F32 or not x.flags.c_contiguous or x.shape != self.x_shape:
            _spec.check_input("fconv.conv2d", x, self.x_shape)
        if residual is not None and (type(residual) is not np.ndarray or residual.dtype != _F32 or
                                     not residual.flags.c_contiguous or residual.shape != self.y_shape):
            _spec.check_residual("fconv.conv2d", residual, self.y_shape)
        cdef const fc_path *fp = &FC_PATHS[_PATHS.index(self.path)]
        cdef Py_ssize_t n = self.n, M = self.M, K = self.K, N = self.N
        y = np.empty(self.y_shape, dtype=np.float32)
        if y.size == 0:
            return y
        cdef int threads = threads_for(n * M * K * N, MIN_MACS_PER_THREAD)
        if self.max_threads is not None:
            threads = min(threads, self.max_threads)
        cdef const void *tt = fp.tt if self.tpacked is not None else NULL  # T tiles (their packing) or not
        cdef Py_ssize_t unit = FC_MR if tt == NULL else FC_TM  # rows of a panel
        cdef Py_ssize_t nb = (N + FC_NC - 1) // FC_NC, mb = 1, nstep = FC_NC, rounds
        if threads > 1 and n == 1 and N >= MIN_PIXELS_PER_THREAD * threads:
            # one sample: equal pixel blocks in whole rounds of threads (multiples of 8), each B block packed once
            rounds = (nb + threads - 1) // threads * threads
            nstep = ((N + rounds - 1) // rounds + 7) // 8 * 8
            nb = (N + nstep - 1) // nstep
        elif n * nb < 2 * threads:  # few pixels: split the channels too, in whole panels
            mb = min((M + unit - 1) // unit, 2 * threads)
        cdef Py_ssize_t mstep = ((M + unit - 1) // unit + mb - 1) // mb * unit, tasks = n * nb * mb, t, s, j, i
        cdef Py_ssize_t block = min(K, FC_KC) * ((min(N, FC_NC) + 15) // 16 * 16)  # the packed B block of a task
        if tt != NULL:
            block = FC_T_TOT + FC_TSLOT  # the tiles' carried sums
        scratch = _scratch(threads * block + 8)
        cdef float *sp = _data(scratch)
        cdef float *bp0 = <float *>((<uintptr_t>sp + 31) & ~(<uintptr_t>31))
        cdef const float *xp = _data(x)
        cdef const float *ap = _data(self.packed if tt == NULL else self.tpacked)
        cdef const float *bias_p = _data(self.bias)
        cdef const float *res_p = _data(residual)
        cdef float *yp = _data(y)
        cdef const fc_geom *g = &self.g
        cdef const fc_epi *e = &self.e
        with nogil:
            for t in prange(tasks, schedule="dynamic", num_threads=threads):
                s = t // (nb * mb)
                j = t // mb % nb
                i = t % mb
                if i * mstep < M and tt != NULL:
                    fc_conv_block_t(tt, ap, K, xp + s * g.C * g.H * g.W, N, bias_p, e, yp + s * M * N,
                                    res_p + s * M * N if res_p != NULL else NULL, i * mstep, min(M, (i + 1) * mstep),
                                    j * nstep, min(N, (j + 1) * nstep), bp0 + omp_get_thread_num() * block)
                elif i * mstep < M:
                    fc_conv_block(fp.sweep, fp.dir, fp.edge, ap, M, K, xp + s * g.C * g.H * g.W, g, bias_p, e,
                                  yp + s * M * N, res_p + s * M * N if res_p != NULL else NULL, i * mstep,
                                  min(M, (i + 1) * mstep), j * nstep, min(N, (j + 1) * nstep),
                                  bp0 + omp_get_thread_num() * block)
        return y


def depthwise_conv2d(x, w, bias=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), epi=(0, 0.0, 0.0, 1.0),
                     *, max_threads=None, path=None):
    """act(depthwise conv2d(x, w) + bias), float32 NCHW, ``w`` (C*M, 1, KH, KW): the twin's formula and bound;
    output planes split between threads (the same bits for any thread count)."""
    return DepthwisePlan(_spec.check_input("depthwise_conv2d", x, None), w, bias, stride, padding, dilation, epi,
                         max_threads, path)(x)


def prepare_depthwise(x_shape, w, bias=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1),
                      epi=(0, 0.0, 0.0, 1.0), *, max_threads=None, path=None):
    """``plan(x)``, equal to ``depthwise_conv2d(x, w, ...)`` for inputs of shape ``x_shape``, the other arguments
    checked once (the twin's ``prepare_depthwise``)."""
    return DepthwisePlan(_spec.stand_in(_spec.check_shape("depthwise_conv2d", x_shape)), w, bias, stride, padding,
                         dilation, epi, max_threads, path)


cdef class DepthwisePlan:
    """A checked fconv.depthwise_conv2d call for one input shape; calling it checks only the input."""
    cdef fc_dwgeom g
    cdef fc_epi e
    cdef Py_ssize_t n, C, oc, taps
    cdef object w, bias, x_shape, y_shape, max_threads, path

    def __init__(self, x, w, bias, stride, padding, dilation, epi, max_threads, path):
        """x: an array of the inputs' shape (its data is not read)."""
        (sh, sw), pad, (dh, dwi), (oh, ow), (code, a, b, c, ps, pc) = _spec.check_depthwise(
            x, w, bias, stride, padding, dilation, epi, max_threads)
        _PATHS.index(path)
        x_shape = x.shape
        self.w, self.bias, self.max_threads, self.path = w, bias, max_threads, path
        self.x_shape, self.y_shape = x_shape, (x_shape[0], w.shape[0], oh, ow)
        self.n, self.C, self.oc, self.taps = x_shape[0], x_shape[1], w.shape[0], w.shape[2] * w.shape[3]
        self.g.H, self.g.W, self.g.kh, self.g.kw = x_shape[2], x_shape[3], w.shape[2], w.shape[3]
        self.g.sh, self.g.sw, self.g.dh, self.g.dw, self.g.pt, self.g.pl, self.g.oh, self.g.ow = \
            sh, sw, dh, dwi, pad[0], pad[1], oh, ow
        fc_dw_init(&self.g)
        self.e.act, self.e.a, self.e.b, self.e.c, self.e.ps, self.e.pc = code, a, b, c, ps, pc
        self.e.post = ps != 1.0 or pc != 0.0

    def __call__(self, x):
        if type(x) is not np.ndarray or x.dtype != _F32 or not x.flags.c_contiguous or x.shape != self.x_shape:
            _spec.check_input("depthwise_conv2d", x, self.x_shape)
        cdef const fc_path *fp = &FC_PATHS[_PATHS.index(self.path)]
        cdef const fc_dwgeom *g = &self.g
        cdef const fc_epi *e = &self.e
        cdef Py_ssize_t n = self.n, C = self.C, oc = self.oc, m = oc // C, taps = self.taps
        y = np.empty(self.y_shape, dtype=np.float32)
        if y.size == 0:
            return y
        cdef Py_ssize_t hw = g.H * g.W, ohw = g.oh * g.ow, t, o, s, pad_size = g.hp * g.wp
        # small planes, multiplier 1: eight channels per vector (fc_dw8_*); the channels past a multiple of 8 per plane
        cdef Py_ssize_t groups = C // 8 if fp.dw8 != NULL and m == 1 and taps <= 64 and ohw <= DW8_MAX_PIXELS and \
            g.ow < DW8_MAX_WIDTH else 0
        cdef Py_ssize_t rest = oc - 8 * groups, tasks = n * (groups + rest)
        if groups:
            pad_size = max(pad_size, fc_dw8_scratch(g))
        cdef int threads = threads_for(n * oc * ohw * taps, MIN_MACS_PER_THREAD)
        if self.max_threads is not None:
            threads = min(threads, self.max_threads)
        pad_size = (pad_size + 7) // 8 * 8  # each thread's scratch 32-byte aligned: whole vectors never split a line
        scratch = _scratch(threads * pad_size + 8)
        cdef float *xp0 = <float *>((<uintptr_t>_data(scratch) + 31) & ~(<uintptr_t>31))
        cdef const float *xp = _data(x)
        cdef const float *wp = _data(self.w)
        cdef const float *bias_p = _data(self.bias)
        cdef float *yp = _data(y)
        with nogil:
            for t in prange(tasks, schedule="static", num_threads=threads):
                s = t // (groups + rest)
                o = t % (groups + rest)
                if o < groups:
                    fp.dw8(xp + (s * C + 8 * o) * hw, g, wp + 8 * o * taps,
                           bias_p + 8 * o if bias_p != NULL else NULL, e, yp + (s * oc + 8 * o) * ohw,
                           xp0 + omp_get_thread_num() * pad_size)
                else:
                    o = o - groups + 8 * groups
                    fp.dw(xp + (s * C + o // m) * hw, g, wp + o * taps, bias_p[o] if bias_p != NULL else 0.0, e,
                          yp + (s * oc + o) * ohw, xp0 + omp_get_thread_num() * pad_size)
        return y
