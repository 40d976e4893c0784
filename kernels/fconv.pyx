"""Float32 convolution (groups 1, NCHW, inference) as a GEMM on weights packed once, with im2col done inside the
B packing and the bias and activation in the epilogue. Twin and specification: refquant/reference/fconv.py; the
C loops: kernels/include/fconv/fconv.h.

Work is split into tasks of (sample, block of up to FC_NC output pixels; one sample's blocks are cut into a
multiple of the thread count), and, when those are fewer than twice the threads, of blocks of output channels too; each thread packs into its own scratch. Every output element is summed
by one tile in the same order, so the bits do not depend on the thread count.

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
        fc_dw_fn dw
        fc_dw8_fn dw8
    const fc_path FC_PATHS[]
    const int FC_NPATHS
    const int FC_MR, FC_KC, FC_NC
    int fc_path_supported(int i)
    void fc_conv_block(fc_sweep_fn sweep, fc_sweep_fn dir, fc_tile_fn edge, const float *ap, Py_ssize_t M,
                       Py_ssize_t K, const float *x, const fc_geom *g, const float *bias, const fc_epi *e, float *y,
                       const float *res, Py_ssize_t m0, Py_ssize_t m1, Py_ssize_t n0, Py_ssize_t n1,
                       float *bp) noexcept nogil


# Multiply-adds per thread below which a call stays on the calling thread.
cdef Py_ssize_t MIN_MACS_PER_THREAD = 1 << 20
# Depthwise planes of at most this many output pixels, narrower than DW8_MAX_WIDTH, run eight channels per vector
# (their scratch stays in L2; 56 x 56 ran 0.75-0.9x the time of one plane at a time, 112 x 112 1.2x).
cdef Py_ssize_t DW8_MAX_PIXELS = 56 * 56
cdef Py_ssize_t DW8_MAX_WIDTH = 64

_PATHS = IsaPaths("fconv", [FC_PATHS[i].name.decode() for i in range(FC_NPATHS)],
                  lambda i: fc_path_supported(i), known=("avx2", "portable"))

available_paths = _PATHS.available
current_path = _PATHS.current


_local = threading.local()


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


def conv2d(x, packed, oc, kernel, bias=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1),
           epi=(0, 0.0, 0.0, 1.0), *, residual=None, max_threads=None, path=None):
    """act((conv2d(x, w) + bias) + residual) from ``packed = pack_weights(w)``: float32 (N, oc, OH, OW) out (the
    twin's formula, its rounding bound; the same bits for any thread count). ``max_threads`` caps the thread
    count."""
    cdef const fc_path *fp = &FC_PATHS[_PATHS.index(path)]
    (sh, sw), pad, (dh, dw), (kh, kw), (oh, ow), (code, a, b, c, ps, pc) = _spec.check_conv2d(
        x, packed, oc, kernel, bias, stride, padding, dilation, epi, max_threads, residual)
    cdef Py_ssize_t n = x.shape[0], M = oc, K = packed.shape[1], N = oh * ow
    y = np.empty((n, oc, oh, ow), dtype=np.float32)
    if y.size == 0:
        return y
    cdef fc_geom g
    g.C, g.H, g.W, g.kh, g.kw = x.shape[1], x.shape[2], x.shape[3], kh, kw
    g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, g.oh, g.ow = sh, sw, dh, dw, pad[0], pad[1], oh, ow
    cdef fc_epi e
    e.act, e.a, e.b, e.c, e.ps, e.pc = code, a, b, c, ps, pc
    e.post = ps != 1.0 or pc != 0.0
    cdef int threads = threads_for(n * M * K * N, MIN_MACS_PER_THREAD)
    if max_threads is not None:
        threads = min(threads, max_threads)
    cdef Py_ssize_t nb = (N + FC_NC - 1) // FC_NC, mb = 1, nstep = FC_NC
    if threads > 1 and n == 1 and nb > 1 and nb % threads:  # blocks in whole rounds of threads, 16-pixel multiples
        nstep = ((N + (nb + threads - 1) // threads * threads - 1) // ((nb + threads - 1) // threads * threads)
                 + 15) // 16 * 16
        nb = (N + nstep - 1) // nstep
    if n * nb < 2 * threads:  # few pixel blocks: split the channels too, in whole FC_MR panels
        mb = min((M + FC_MR - 1) // FC_MR, 2 * threads)
    cdef Py_ssize_t mstep = ((M + FC_MR - 1) // FC_MR + mb - 1) // mb * FC_MR, tasks = n * nb * mb, t, s, j, i
    cdef Py_ssize_t block = min(K, FC_KC) * ((min(N, FC_NC) + 15) // 16 * 16)  # the packed B block of a task
    scratch = _scratch(threads * block + 8)
    cdef float *sp = _data(scratch)
    cdef float *bp0 = <float *>((<uintptr_t>sp + 31) & ~(<uintptr_t>31))
    cdef const float *xp = _data(x)
    cdef const float *ap = _data(packed)
    cdef const float *bias_p = _data(bias)
    cdef const float *res_p = _data(residual)
    cdef float *yp = _data(y)
    with nogil:
        for t in prange(tasks, schedule="dynamic", num_threads=threads):
            s = t // (nb * mb)
            j = t // mb % nb
            i = t % mb
            if i * mstep < M:
                fc_conv_block(fp.sweep, fp.dir, fp.edge, ap, M, K, xp + s * g.C * g.H * g.W, &g, bias_p, &e,
                              yp + s * M * N, res_p + s * M * N if res_p != NULL else NULL, i * mstep,
                              min(M, (i + 1) * mstep), j * nstep, min(N, (j + 1) * nstep),
                              bp0 + omp_get_thread_num() * block)
    return y


def depthwise_conv2d(x, w, bias=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), epi=(0, 0.0, 0.0, 1.0),
                     *, max_threads=None, path=None):
    """act(depthwise conv2d(x, w) + bias), float32 NCHW, ``w`` (C*M, 1, KH, KW): the twin's formula and bound;
    output planes split between threads (the same bits for any thread count)."""
    cdef const fc_path *fp = &FC_PATHS[_PATHS.index(path)]
    (sh, sw), pad, (dh, dwi), (oh, ow), (code, a, b, c, ps, pc) = _spec.check_depthwise(
        x, w, bias, stride, padding, dilation, epi, max_threads)
    cdef Py_ssize_t n = x.shape[0], C = x.shape[1], oc = w.shape[0], m = oc // C, taps = w.shape[2] * w.shape[3]
    y = np.empty((n, oc, oh, ow), dtype=np.float32)
    if y.size == 0:
        return y
    cdef fc_dwgeom g
    g.H, g.W, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw = x.shape[2], x.shape[3], w.shape[2], w.shape[3], sh, sw, dh, dwi
    g.pt, g.pl, g.oh, g.ow = pad[0], pad[1], oh, ow
    fc_dw_init(&g)
    cdef fc_epi e
    e.act, e.a, e.b, e.c, e.ps, e.pc = code, a, b, c, ps, pc
    e.post = ps != 1.0 or pc != 0.0
    cdef Py_ssize_t hw = g.H * g.W, ohw = oh * ow, t, o, s, pad_size = g.hp * g.wp
    # small planes, multiplier 1: eight channels per vector (fc_dw8_*); the channels past a multiple of 8 per plane
    cdef Py_ssize_t groups = C // 8 if fp.dw8 != NULL and m == 1 and taps <= 64 and ohw <= DW8_MAX_PIXELS and \
        ow < DW8_MAX_WIDTH else 0
    cdef Py_ssize_t rest = oc - 8 * groups, tasks = n * (groups + rest)
    if groups:
        pad_size = max(pad_size, fc_dw8_scratch(&g))
    cdef int threads = threads_for(n * oc * ohw * taps, MIN_MACS_PER_THREAD)
    if max_threads is not None:
        threads = min(threads, max_threads)
    scratch = _scratch(threads * pad_size + 8)
    cdef float *xp0 = _data(scratch)
    cdef const float *xp = _data(x)
    cdef const float *wp = _data(w)
    cdef const float *bias_p = _data(bias)
    cdef float *yp = _data(y)
    with nogil:
        for t in prange(tasks, schedule="static", num_threads=threads):
            s = t // (groups + rest)
            o = t % (groups + rest)
            if o < groups:
                fp.dw8(xp + (s * C + 8 * o) * hw, &g, wp + 8 * o * taps, bias_p + 8 * o if bias_p != NULL else NULL,
                       &e, yp + (s * oc + 8 * o) * ohw, xp0 + omp_get_thread_num() * pad_size)
            else:
                o = o - groups + 8 * groups
                fp.dw(xp + (s * C + o // m) * hw, &g, wp + o * taps, bias_p[o] if bias_p != NULL else 0.0, &e,
                      yp + (s * oc + o) * ohw, xp0 + omp_get_thread_num() * pad_size)
    return y
