"""INT8 GEMM: u8 (M, K) x s8 (K, N) -> s32 with a fused epilogue. Twin: refquant/reference/qgemm.py.

    acc[m, n] = sum_k a[m, k] * w[k, n] - a_zero * col_sum[n] + bias[n]           (int32, wrapping)
    "s32": out = acc
    "f32": out = min(max(float32(acc) * scale[n], lo), hi)                          (lo/hi default -inf/+inf)
    "u8" / "s8": out = min(max(rint(float32(acc) * scale[n]) + out_zero, lo), hi)  (float32, half to even;
                                                                                     lo/hi default to the type)

The weights are packed once with ``pack_b`` (layout in kernels/include/qgemm/common.h: panels of 16 columns x
groups of 4 K, a header with K and N, the column sums). The C microkernels live in kernels/include/qgemm/, one
header per path; this file validates through the twin's ``check_plan`` / ``check_call`` (one validation: both
reject the same inputs), prepares the per-column offset (bias - a_zero*col_sum) once per plan and splits the
work over OpenMP threads: chunks of 16-column panels, or of rows when there are too few panels, handed out
dynamically. Every chunk computes whole output elements, so the result does not depend on the thread count.

The path is chosen at run time from the CPU (``available_paths()``, ``current_path()``, refquant/_paths.py):
avx512vnni > avxvnni > avx2 on x86-64, i8mm > dotprod > neon on aarch64, portable everywhere.
``REFQUANT_PATH_QGEMM=<name>`` forces one (an error if the CPU cannot run it), ``REFQUANT_FORCE_PORTABLE=1``
forces portable, and ``gemm_u8s8(..., path=<name>)`` picks one per call (for tests).
"""
from cython.parallel cimport prange
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint32_t

from _openmp cimport threads_for

import math
import weakref

import numpy as np

from refquant._paths import IsaPaths
from refquant.reference import qdirect as _qdirect_spec
from refquant.reference import qgemm as _spec   # one validation for both sides: the twin's checks
from refquant.reference.qgemm import _check_weights

cdef extern from "qgemm/qgemm.h" nogil:
    ctypedef struct qgemm_args:
        Py_ssize_t M, K, N, Kp, Np
        const uint8_t *a
        Py_ssize_t lda
        const int8_t *b
        int b_flags
        const int32_t *offset
        const float *scale
        int out_kind
        float out_zero, lo, hi
        void *out
        Py_ssize_t ldo
        const qgemm_post *post
        const float *fbias
    ctypedef struct qgemm_post:
        const float *k
        int hs
        float *y
        Py_ssize_t ldy
        uint8_t *q
        Py_ssize_t ldq
        float sinv, lo_f, hi_f
        int32_t zero
    ctypedef void (*qgemm_tile_fn)(const qgemm_args *p, Py_ssize_t m0, Py_ssize_t m1, Py_ssize_t n0,
                                   Py_ssize_t n1) noexcept nogil
    void qgemm_post_tile(qgemm_tile_fn tile, const qgemm_args *p, Py_ssize_t m0, Py_ssize_t m1, Py_ssize_t n0,
                         Py_ssize_t n1)
    ctypedef struct qgemm_path:
        const char *name
        qgemm_tile_fn tile
        int shifts_a
    const qgemm_path QGEMM_PATHS[]
    const int QGEMM_NPATHS
    const int QGEMM_NR
    const int QGEMM_HEADER_BYTES
    const int QGEMM_OUT_S32, QGEMM_OUT_F32, QGEMM_OUT_U8, QGEMM_OUT_S8
    int qgemm_path_supported(int i)
    void qgemm_range_f32(const float *x, Py_ssize_t n, int portable, float *lo, float *hi, int *bad)
    int qgemm_batch_item(const qgemm_path *path, const uint8_t *a, Py_ssize_t lda, Py_ssize_t M, Py_ssize_t K,
                         Py_ssize_t N, const int8_t *b, Py_ssize_t sk, Py_ssize_t sn, uint32_t a_zero, float scale,
                         const float *add, Py_ssize_t am, Py_ssize_t an, float *out)
    size_t qgemm_packed_bytes(Py_ssize_t K, Py_ssize_t N)
    void qgemm_pack_b(const int8_t *w, Py_ssize_t K, Py_ssize_t N, Py_ssize_t ldw, int8_t *dst)
    const int32_t *qgemm_colsum_b(const int8_t *packed, Py_ssize_t Kp, Py_ssize_t Np)
    int qgemm_header_flags(const int8_t *packed)

# Multiply-accumulates per thread below which a call stays on fewer threads (~30 us of work: a GEMV
# like 1x768x3072 stays on one thread; on a busy machine a second thread can cost a scheduler time slice).
cdef Py_ssize_t MIN_MACS_PER_THREAD = 1 << 22
# The same for a GEMM split by rows (M >= N: a conv's pixels x channels), where each chunk packs only its own rows
# of A: such splits pay from less work (MobileNetV2's 28 x 28 and 112 x 112 1x1 convs, 100-200 us each).
cdef Py_ssize_t MIN_MACS_PER_THREAD_ROWS = 1 << 20
# Work chunks per thread (dynamic schedule: the load balances when a thread is delayed).
cdef Py_ssize_t CHUNKS_PER_THREAD = 4

OUT_DTYPES = {"s32": np.int32, "f32": np.float32, "u8": np.uint8, "s8": np.int8}
_OUT_KIND = {"s32": QGEMM_OUT_S32, "f32": QGEMM_OUT_F32, "u8": QGEMM_OUT_U8, "s8": QGEMM_OUT_S8}

_PATHS = IsaPaths("qgemm", [QGEMM_PATHS[i].name.decode() for i in range(QGEMM_NPATHS)],
                  lambda i: qgemm_path_supported(i),
                  known=("avx512vnni", "avxvnni", "avx2", "i8mm", "dotprod", "neon", "portable"))
PATHS = _PATHS.names   # compiled, in order of preference

available_paths = _PATHS.available
current_path = _PATHS.current


def pack_b(w):
    """Pack int8 weights w (K, N) for gemm_u8s8: a 1-D int8 array, 64-byte aligned, holding a header (magic,
    version, K, N), the panels of 16 columns x groups of 4 K (zero padded) and the column sums."""
    _check_weights(w, "pack_b")
    w = np.ascontiguousarray(w)
    cdef const int8_t[:, ::1] wv = w
    cdef Py_ssize_t K = w.shape[0], N = w.shape[1]
    packed = _spec.aligned_empty(qgemm_packed_bytes(K, N), np.int8)
    cdef int8_t[::1] pv = packed
    with nogil:
        qgemm_pack_b(&wv[0, 0], K, N, N, &pv[0])
    return packed


def col_sums(w):
    """int32 (N,): sum_k w[k, n], the a_zero compensation term."""
    _check_weights(w, "col_sums")
    return np.sum(w, axis=0, dtype=np.int32)


cdef class GemmPlan:
    """gemm_u8s8 with every argument but the activation (and ``out``) checked and prepared once: the per-column
    offset (bias - a_zero*col_sum, + 128 * the packed column sums on a path that shifts a), the padded scale and
    fbias, the chain's constants. ``plan(a, out=None)`` checks only what it is given (the twin's check_call)."""
    cdef object g, packed_ref, offset, scale_p, fbias_p, chain_k, qz
    cdef Py_ssize_t Kp, Np
    cdef int ipath, has_chain, want_float
    cdef qgemm_post post

    def __call__(self, a, out=None):
        g = self.g
        _spec.check_call(g, a, out)
        packed = _spec.plan_packed(self.packed_ref)
        cdef Py_ssize_t M = a.shape[0], Nc = g.N
        cdef const int8_t[::1] pv = packed
        cdef const int32_t[::1] ov = self.offset
        cdef const float[::1] spv = self.scale_p
        cdef const float[::1] fbv
        cdef float[:, ::1] yv
        cdef uint8_t[:, ::1] qv
        cdef qgemm_post post = self.post
        y = q = None
        if self.has_chain:
            y = np.empty((M, Nc), dtype=np.float32) if self.want_float else None
            q = np.empty((M, Nc), dtype=np.uint8) if self.qz is not None else None
            post.y = post.q = NULL
            if y is not None:
                yv = y
                post.y = &yv[0, 0]
            if q is not None:
                qv = q
                post.q = &qv[0, 0]
            post.ldy = post.ldq = Nc
            out = np.empty((1, Nc), dtype=np.float32)   # not written: the post-op writes y and q
        elif out is None:
            out = np.empty((M, Nc), dtype=OUT_DTYPES[g.out_dtype])
        cdef uint8_t[:, :] outv = out.view(np.uint8)     # a byte view: only the address and row stride are used
        cdef const uint8_t[:, :] av = a
        cdef qgemm_args args
        args.M = M; args.K = g.K; args.N = Nc; args.Kp = self.Kp; args.Np = self.Np
        args.a = &av[0, 0]
        args.lda = av.strides[0]
        args.b = &pv[0] + QGEMM_HEADER_BYTES
        args.b_flags = qgemm_header_flags(&pv[0])
        args.offset = &ov[0]
        args.scale = &spv[0]
        args.out_kind = _OUT_KIND[g.out_dtype]
        args.out_zero = g.out_zero; args.lo = g.lo; args.hi = g.hi
        args.out = <void *> &outv[0, 0]
        args.ldo = outv.strides[0] // out.itemsize
        args.post = &post if self.has_chain else NULL
        args.fbias = NULL
        if self.fbias_p is not None:
            fbv = self.fbias_p
            args.fbias = &fbv[0]
        _run(&args, QGEMM_PATHS[self.ipath].tile)
        return (y, q) if self.has_chain else out


def prepare_gemm(packed, K, N, *, a_zero=0, col_sum=None, bias=None, scale=None, out_dtype="s32", out_zero=0,
                 lo=None, hi=None, chain=None, fbias=None, path=None):
    """A :class:`GemmPlan`: gemm_u8s8's arguments but ``a`` and ``out``, checked (the twin's check_plan) and
    prepared once. The plan keeps its own copies of the vectors and a weak reference to the packed array, which
    must live (a call after it was freed raises) and not change."""
    g = _spec.check_plan(packed, K, N, a_zero=a_zero, col_sum=col_sum, bias=bias, scale=scale, out_dtype=out_dtype,
                         out_zero=out_zero, lo=lo, hi=hi, chain=chain, fbias=fbias)
    cdef GemmPlan plan = GemmPlan.__new__(GemmPlan)
    plan.ipath = _PATHS.index(path)
    cdef Py_ssize_t Kc = g.K, Nc = g.N, Kp = (Kc + 3) // 4 * 4, Np = (Nc + 15) // 16 * 16, n
    cdef const int8_t[::1] pv = packed
    cdef uint32_t az = g.a_zero
    plan.g, plan.packed_ref, plan.Kp, plan.Np = g, weakref.ref(packed), Kp, Np

    # offset[n] = bias[n] - a_zero * col_sum[n] (+ 128 * colsum_b[n] for a path that shifts a), wrapping like
    # int32 arithmetic; padded to Np (the vector epilogues read whole panels)
    offset = np.zeros(Np, dtype=np.int32)
    cdef int32_t[::1] ov = offset
    cdef const int32_t[::1] tv
    cdef const int32_t *colsum_b = qgemm_colsum_b(&pv[0], Kp, Np)
    if QGEMM_PATHS[plan.ipath].shifts_a:
        for n in range(Np):
            ov[n] = <int32_t> (128u * <uint32_t> colsum_b[n])
    if g.col_sum is not None:
        tv = g.col_sum
        for n in range(Nc):
            ov[n] = <int32_t> (<uint32_t> ov[n] - az * <uint32_t> tv[n])
    if g.bias is not None:
        tv = g.bias
        for n in range(Nc):
            ov[n] = <int32_t> (<uint32_t> ov[n] + <uint32_t> tv[n])
    plan.offset = offset
    plan.scale_p = np.zeros(Np, dtype=np.float32)
    if g.scale is not None:
        plan.scale_p[:Nc] = g.scale
    plan.fbias_p = None
    if g.fbias is not None:                          # padded to Np: the vector epilogues read whole panels
        plan.fbias_p = np.zeros(Np, dtype=np.float32)
        plan.fbias_p[:Nc] = g.fbias
    cdef float[::1] chain_k
    plan.has_chain = chain is not None
    plan.qz = None
    if chain is not None:
        chain_k, hs, want_float, qz = g.chain
        plan.chain_k = np.array(chain_k)             # the plan's own copy; post.k points into it
        chain_k = plan.chain_k
        plan.want_float, plan.qz = want_float, qz
        sinv, lo_f, hi_f, zero = _qdirect_spec.q8_params(qz)
        plan.post.hs, plan.post.sinv, plan.post.lo_f, plan.post.hi_f, plan.post.zero = hs, sinv, lo_f, hi_f, zero
        plan.post.k = &chain_k[0]
    return plan


def gemm_u8s8(a, packed, K, N, *, a_zero=0, col_sum=None, bias=None, scale=None, out_dtype="s32", out_zero=0,
              lo=None, hi=None, out=None, chain=None, fbias=None, path=None):
    """out (M, N) = epilogue(a (M, K) u8 @ w (K, N) s8): see the module docstring for the formulas. ``packed``
    is ``pack_b(w)``; ``out`` (optional) may be a column slice of a wider array; ``path`` forces a path.
    A plan made and called (:func:`prepare_gemm`): both reject the same inputs.

    ``chain`` (out_dtype "f32" only): the keyword arguments of ``floatops.scalar_chain_f32`` (pre, hard_swish,
    post, want_float, quantize), applied to the float output block by block while it is in cache; returns that
    function's ``(t or None, q or None)`` instead of ``out``."""
    return prepare_gemm(packed, K, N, a_zero=a_zero, col_sum=col_sum, bias=bias, scale=scale, out_dtype=out_dtype,
                        out_zero=out_zero, lo=lo, hi=hi, chain=chain, fbias=fbias, path=path)(a, out)


def range_f32(x, *, path=None):
    """``(min, max)`` of a float32 array as Python floats, read in one pass (chunks over the OpenMP threads: min and
    max are exact in any order), or ``(nan, nan)`` if it holds NaN or inf. ``path="portable"`` skips the AVX2 code."""
    _spec.check_range(x)
    cdef const float *px = <const float *> <size_t> x.ctypes.data
    cdef Py_ssize_t n = x.size, chunk = 1 << 16, nc = (n + chunk - 1) // chunk, c
    cdef float[::1] lo = np.empty(nc, np.float32), hi = np.empty(nc, np.float32)
    cdef int[::1] bad = np.empty(nc, np.intc)
    cdef int portable = path == "portable", nt = threads_for(n, 1 << 21)   # memory-bound: threads pay only when huge
    for c in prange(nc, nogil=True, schedule="static", num_threads=nt):
        qgemm_range_f32(px + c * chunk, min(chunk, n - c * chunk), portable, &lo[c], &hi[c], &bad[c])
    if np.any(bad):
        return math.nan, math.nan
    return float(np.min(lo)), float(np.max(hi))


def gemm_u8s8_batch(a, b, *, a_zero=0, scale=1.0, trans_b=False, add=None, path=None):
    """float32 (..., M, N) = float32((a - a_zero) @ b) * scale (+ ``add``, float32 broadcast to the output, added
    while each item is in cache) per batch item (``b^T`` with ``trans_b``): GEMMs
    whose B is an activation (attention's Q K^T, P V), each B packed per call, read through the arrays' strides
    (transposed or broadcast views cost no copy). The items are spread over the OpenMP threads, each computed
    whole by one thread: the result does not depend on the thread count."""
    M, K, N, az, sc, add = _spec.check_gemm_batch(a, b, a_zero=a_zero, scale=scale, trans_b=trans_b, add=add)
    nd = a.ndim
    batch = a.shape[:nd - 2]
    # byte offset of every batch item in a, b and add
    oa, ob, oc = np.zeros(batch, np.int64), np.zeros(batch, np.int64), np.zeros(batch, np.int64)
    cs = add.strides if add is not None else (0,) * nd
    for d, (size, sa, sb, sc_) in enumerate(zip(batch, a.strides, b.strides, cs)):
        at = (slice(None),) + (None,) * (len(batch) - d - 1)
        oa += (np.arange(size, dtype=np.int64) * sa)[at]
        ob += (np.arange(size, dtype=np.int64) * sb)[at]
        oc += (np.arange(size, dtype=np.int64) * sc_)[at]
    cdef const int64_t[::1] oav = oa.reshape(-1), obv = ob.reshape(-1), ocv = oc.reshape(-1)
    cdef const char *pc = <const char *> <size_t> (add.ctypes.data if add is not None else 0)
    cdef Py_ssize_t am = cs[nd - 2] // 4, an = cs[nd - 1] // 4
    cdef const qgemm_path *pp = &QGEMM_PATHS[_PATHS.index(path)]
    cdef Py_ssize_t bt = oa.size, i, m = M, k = K, n = N, lda = a.strides[nd - 2]
    cdef Py_ssize_t sk = b.strides[nd - 1] if trans_b else b.strides[nd - 2]
    cdef Py_ssize_t sn = b.strides[nd - 2] if trans_b else b.strides[nd - 1]
    cdef const uint8_t *pa = <const uint8_t *> <size_t> a.ctypes.data
    cdef const int8_t *pb = <const int8_t *> <size_t> b.ctypes.data
    out = np.empty(batch + (M, N), dtype=np.float32)
    if bt == 0:
        return out
    cdef float *po = <float *> <size_t> out.ctypes.data
    cdef uint32_t z = az
    cdef float s = sc
    cdef int nt = threads_for(bt * m * k * n, MIN_MACS_PER_THREAD), failed = 0
    nt = <int> min(<Py_ssize_t> nt, bt)
    for i in prange(bt, nogil=True, schedule="dynamic", chunksize=1, num_threads=nt):
        failed += qgemm_batch_item(pp, pa + oav[i], lda, m, k, n, pb + obv[i], sk, sn, z, s,
                                   <const float *> (pc + ocv[i]) if pc != NULL else NULL, am, an, po + i * m * n) != 0
    if failed:
        raise MemoryError("gemm_u8s8_batch: out of memory packing a batch item")
    return out


cdef void _run(const qgemm_args *p, qgemm_tile_fn tile) noexcept:
    """Split out[M, N] into chunks: blocks of rows when M >= N (a conv's pixels x channels; each chunk then packs
    only its own rows of A, where a panel split would pack all of A once per chunk) or when the panels are too few
    to go around, else blocks of whole 16-column panels. Up to CHUNKS_PER_THREAD chunks per thread, handed out dynamically, so a
    thread that the OS delays (a busy machine) does not hold up the call: the others take its chunks. Each
    output element is computed by exactly one chunk, the same way whatever the thread count."""
    cdef Py_ssize_t panels = p.Np // QGEMM_NR, M = p.M, N = p.N, c, chunks, m0, m1, n0, n1
    cdef int nt = threads_for(M * p.Kp * p.Np, MIN_MACS_PER_THREAD)
    cdef int nt_rows = threads_for(M * p.Kp * p.Np, MIN_MACS_PER_THREAD_ROWS)
    if nt < nt_rows and M >= N and M >= 16 * nt_rows:
        nt = nt_rows
    if nt <= 1:
        with nogil:
            _tile(tile, p, 0, M, 0, N)
        return
    # chunks of >= 16 rows, or of >= 2 panels (32 columns)
    cdef bint by_rows = M >= 16 * nt and (M >= N or panels < 2 * nt)
    chunks = min(M // 16 if by_rows else max(panels // 2, 1), nt * CHUNKS_PER_THREAD)
    nt = <int> min(<Py_ssize_t> nt, chunks)
    if nt <= 1:
        with nogil:
            _tile(tile, p, 0, M, 0, N)
        return
    for c in prange(chunks, nogil=True, schedule="dynamic", chunksize=1, num_threads=nt):
        if by_rows:
            m0 = M * c // chunks
            m1 = M * (c + 1) // chunks
            n0 = 0
            n1 = N
        else:
            m0 = 0
            m1 = M
            n0 = panels * c // chunks * QGEMM_NR
            n1 = min(panels * (c + 1) // chunks * QGEMM_NR, N)
        if m0 < m1 and n0 < n1:
            _tile(tile, p, m0, m1, n0, n1)


cdef inline void _tile(qgemm_tile_fn tile, const qgemm_args *p, Py_ssize_t m0, Py_ssize_t m1, Py_ssize_t n0,
                       Py_ssize_t n1) noexcept nogil:
    if p.post != NULL:
        qgemm_post_tile(tile, p, m0, m1, n0, n1)
    else:
        tile(p, m0, m1, n0, n1)


