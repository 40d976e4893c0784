"""INT8 GEMM: u8 (M, K) x s8 (K, N) -> s32 with a fused epilogue. Twin: refquant/reference/qgemm.py.

    acc[m, n] = sum_k a[m, k] * w[k, n] - a_zero * col_sum[n] + bias[n]           (int32, wrapping)
    "s32": out = acc
    "f32": out = min(max(float32(acc) * scale[n], lo), hi)                          (lo/hi default -inf/+inf)
    "u8" / "s8": out = min(max(rint(float32(acc) * scale[n]) + out_zero, lo), hi)  (float32, half to even;
                                                                                     lo/hi default to the type)

The weights are packed once with ``pack_b`` (layout in kernels/include/qgemm/common.h: panels of 16 columns x
groups of 4 K, a header with K and N, the column sums). The C microkernels live in kernels/include/qgemm/, one
header per path; this file validates, prepares the per-column offset (bias - a_zero*col_sum) and splits the
work over OpenMP threads: chunks of 16-column panels, or of rows when there are too few panels, handed out
dynamically. Every chunk computes whole output elements, so the result does not depend on the thread count.

The path is chosen at run time from the CPU (``available_paths()``, ``current_path()``):
avx512vnni > avxvnni > avx2 on x86-64, i8mm > dotprod > neon on aarch64, portable everywhere.
``REFQUANT_QGEMM_PATH=<name>`` forces one (an error if the CPU cannot run it), ``REFQUANT_FORCE_PORTABLE=1``
forces portable, and ``gemm_u8s8(..., path=<name>)`` picks one per call (for tests).
"""
from cython.parallel cimport prange
from libc.math cimport isfinite
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint32_t

from _openmp cimport threads_for

import math
import os
import time

import numpy as np

from refquant.reference.qgemm import (_check_weights, _epilogue_scalars, _vector, check_a, check_a_zero,  # one
                                      check_out)  # validation for both sides

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
    size_t qgemm_packed_bytes(Py_ssize_t K, Py_ssize_t N)
    void qgemm_pack_b(const int8_t *w, Py_ssize_t K, Py_ssize_t N, Py_ssize_t ldw, int8_t *dst)
    int qgemm_check_header(const int8_t *packed, size_t nbytes, Py_ssize_t K, Py_ssize_t N)
    const int32_t *qgemm_colsum_b(const int8_t *packed, Py_ssize_t Kp, Py_ssize_t Np)
    int qgemm_header_flags(const int8_t *packed)

cdef extern from *:
    """
    #if defined(__x86_64__)
    #include "qgemm/peak.h"
    #define QGEMM_HAVE_PEAK 1
    #else
    #define QGEMM_HAVE_PEAK 0
    static double qgemm_peak_fma256(long n) { (void)n; return 0; }
    static double qgemm_peak_fma512(long n) { (void)n; return 0; }
    static double qgemm_peak_dpbusd512(long n) { (void)n; return 0; }
    static double qgemm_peak_dpbusd256(long n) { (void)n; return 0; }
    static double qgemm_peak_madd256(long n) { (void)n; return 0; }
    #endif
    """
    const bint QGEMM_HAVE_PEAK
    double qgemm_peak_fma256(long n) noexcept nogil
    double qgemm_peak_fma512(long n) noexcept nogil
    double qgemm_peak_dpbusd512(long n) noexcept nogil
    double qgemm_peak_dpbusd256(long n) noexcept nogil
    double qgemm_peak_madd256(long n) noexcept nogil

# Multiply-accumulates per thread below which a call stays on fewer threads (~30 us of work: a GEMV
# like 1x768x3072 stays on one thread; on a busy machine a second thread can cost a scheduler time slice).
cdef Py_ssize_t MIN_MACS_PER_THREAD = 1 << 22
# Work chunks per thread (dynamic schedule: the load balances when a thread is delayed).
cdef Py_ssize_t CHUNKS_PER_THREAD = 4

OUT_DTYPES = {"s32": np.int32, "f32": np.float32, "u8": np.uint8, "s8": np.int8}
_OUT_KIND = {"s32": QGEMM_OUT_S32, "f32": QGEMM_OUT_F32, "u8": QGEMM_OUT_U8, "s8": QGEMM_OUT_S8}

PATHS = tuple(QGEMM_PATHS[i].name.decode() for i in range(QGEMM_NPATHS))   # compiled, in order of preference
KNOWN_PATHS = ("avx512vnni", "avxvnni", "avx2", "i8mm", "dotprod", "neon", "portable")
_SUPPORTED = tuple(PATHS[i] for i in range(QGEMM_NPATHS) if qgemm_path_supported(i))
_current = None


def available_paths():
    """The compiled paths this CPU can run, best first (``portable`` is always there)."""
    return list(_SUPPORTED)


def current_path():
    """The path ``gemm_u8s8`` takes by default: ``REFQUANT_FORCE_PORTABLE=1`` -> portable, else
    ``REFQUANT_QGEMM_PATH`` if set (RuntimeError if this CPU or build cannot run it), else the best available."""
    global _current
    if _current is None:
        if os.environ.get("REFQUANT_FORCE_PORTABLE", "") not in ("", "0"):
            _current = "portable"
        else:
            forced = os.environ.get("REFQUANT_QGEMM_PATH", "")
            if forced:
                if forced not in KNOWN_PATHS:
                    raise ValueError(f"REFQUANT_QGEMM_PATH={forced!r}: unknown path, expected one of {KNOWN_PATHS}")
                if forced not in _SUPPORTED:
                    raise RuntimeError(f"REFQUANT_QGEMM_PATH={forced!r}: this CPU/build cannot run it "
                                       f"(available: {', '.join(_SUPPORTED)})")
                _current = forced
            else:
                _current = _SUPPORTED[0]
    return _current


def _path_index(path):
    if path is None:
        path = _current if _current is not None else current_path()
    if path not in _SUPPORTED:
        raise ValueError(f"gemm_u8s8: path {path!r} is not available here (available: {', '.join(_SUPPORTED)})")
    return PATHS.index(path)


def _aligned_empty(Py_ssize_t nbytes):
    """A 1-D int8 array of nbytes whose data starts on a 64-byte boundary."""
    buf = np.empty(nbytes + 64, dtype=np.int8)
    off = (-buf.ctypes.data) % 64
    return buf[off:off + nbytes]


def pack_b(w):
    """Pack int8 weights w (K, N) for gemm_u8s8: a 1-D int8 array, 64-byte aligned, holding a header (magic,
    version, K, N), the panels of 16 columns x groups of 4 K (zero padded) and the column sums."""
    _check_weights(w, "pack_b")
    w = np.ascontiguousarray(w)
    cdef const int8_t[:, ::1] wv = w
    cdef Py_ssize_t K = w.shape[0], N = w.shape[1]
    packed = _aligned_empty(qgemm_packed_bytes(K, N))
    cdef int8_t[::1] pv = packed
    with nogil:
        qgemm_pack_b(&wv[0, 0], K, N, N, &pv[0])
    return packed


def col_sums(w):
    """int32 (N,): sum_k w[k, n], the a_zero compensation term."""
    _check_weights(w, "col_sums")
    return np.sum(w, axis=0, dtype=np.int32)


def packed_shape(packed):
    """(K, N) recorded in a packed array's header (ValueError if it is not one)."""
    if not isinstance(packed, np.ndarray) or packed.dtype != np.int8 or packed.ndim != 1 \
            or packed.shape[0] < QGEMM_HEADER_BYTES:
        raise ValueError("not a qgemm packed array: use qgemm.pack_b(w)")
    head = np.ascontiguousarray(packed[:QGEMM_HEADER_BYTES])
    if bytes(head[:8].view(np.uint8)) != b"RQGEMMv1":
        raise ValueError("not a qgemm packed array (bad magic): use qgemm.pack_b(w)")
    K, N = head[16:32].view(np.int64)
    return int(K), int(N)


def is_usable_for(a, packed):
    """True for a uint8 2-D ``a`` with a contiguous last axis and an int8 1-D ``packed``."""
    return (isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.ndim == 2 and a.shape[0] >= 1
            and (a.shape[1] <= 1 or a.strides[1] == 1) and isinstance(packed, np.ndarray) and packed.dtype == np.int8)


_PACKED_ERRORS = {
    -1: "packed is not a qgemm packed array (bad magic): use qgemm.pack_b(w)",
    -2: "packed has another layout version: pack the weights again",
    -4: "packed has the wrong size for its header (truncated or altered)",
}


def gemm_u8s8(a, packed, K, N, *, a_zero=0, col_sum=None, bias=None, scale=None, out_dtype="s32", out_zero=0,
              lo=None, hi=None, out=None, chain=None, path=None):
    """out (M, N) = epilogue(a (M, K) u8 @ w (K, N) s8): see the module docstring for the formulas. ``packed``
    is ``pack_b(w)``; ``out`` (optional) may be a column slice of a wider array; ``path`` forces a path.

    ``chain`` (out_dtype "f32" only): the keyword arguments of ``qdirect.scalar_chain_f32`` (pre, hard_swish,
    post, want_float, quantize), applied to the float output block by block while it is in cache; returns that
    function's ``(t or None, q or None)`` instead of ``out``."""
    cdef Py_ssize_t Kc = K, Nc = N, M, Kp, Np, n
    if Kc < 1 or Nc < 1:
        raise ValueError(f"gemm_u8s8: need K >= 1 and N >= 1, got K={K}, N={N}")
    check_a(a, Kc)
    if not isinstance(packed, np.ndarray) or packed.dtype != np.int8 or packed.ndim != 1 \
            or not packed.flags.c_contiguous or packed.shape[0] == 0:
        raise ValueError("gemm_u8s8: packed must be the 1-D int8 array returned by qgemm.pack_b(w)")
    cdef const int8_t[::1] pv = packed
    cdef int code = qgemm_check_header(&pv[0], <size_t> pv.shape[0], Kc, Nc)
    if code == -3:
        pk, pn = packed_shape(packed)
        raise ValueError(f"gemm_u8s8: packed holds weights of K={pk}, N={pn}, called with K={K}, N={N}")
    if code:
        raise ValueError("gemm_u8s8: " + _PACKED_ERRORS[code])
    cdef int kind
    try:
        kind = _OUT_KIND[out_dtype]
    except (KeyError, TypeError):
        raise ValueError(f"gemm_u8s8: out_dtype must be one of {list(OUT_DTYPES)}, got {out_dtype!r}") from None
    cdef int ipath = _path_index(path)
    cdef uint32_t az = check_a_zero(a_zero, col_sum)
    out_zero_f, lo_f, hi_f = _epilogue_scalars(out_dtype, out_zero, lo, hi, scale is not None)
    M = a.shape[0]
    Kp = (Kc + 3) // 4 * 4
    Np = (Nc + 15) // 16 * 16

    # offset[n] = bias[n] - a_zero * col_sum[n] (+ 128 * colsum_b[n] for a path that shifts a), wrapping like
    # int32 arithmetic; padded to Np (the vector epilogues read whole panels)
    offset = np.zeros(Np, dtype=np.int32)
    cdef int32_t[::1] ov = offset
    cdef const int32_t[::1] tv
    cdef const int32_t *colsum_b = qgemm_colsum_b(&pv[0], Kp, Np)
    if QGEMM_PATHS[ipath].shifts_a:
        for n in range(Np):
            ov[n] = <int32_t> (128u * <uint32_t> colsum_b[n])
    if az:
        tv = _vector(col_sum, Nc, np.int32, "col_sum")
        for n in range(Nc):
            ov[n] = <int32_t> (<uint32_t> ov[n] - az * <uint32_t> tv[n])
    if bias is not None:
        tv = _vector(bias, Nc, np.int32, "bias")
        for n in range(Nc):
            ov[n] = <int32_t> (<uint32_t> ov[n] + <uint32_t> tv[n])
    scale_p = np.zeros(Np, dtype=np.float32)
    cdef float[::1] spv = scale_p
    cdef const float[::1] sv
    if scale is not None:
        sv = _vector(scale, Nc, np.float32, "scale")
        for n in range(Nc):
            if not isfinite(sv[n]):
                raise ValueError("gemm_u8s8: scale must be finite")
            spv[n] = sv[n]

    cdef qgemm_post post
    cdef float[::1] chain_k
    if chain is not None:
        if out_dtype != "f32" or out is not None:
            raise ValueError('gemm_u8s8: chain needs out_dtype="f32" and no out')
        chain_k, post.hs, post.sinv, post.lo_f, post.hi_f, post.zero, y, q = _chain_outputs(chain, M, Nc)
        post.k = &chain_k[0]
        post.y = <float *> (<Py_ssize_t> y.ctypes.data) if y is not None else NULL
        post.q = <uint8_t *> (<Py_ssize_t> q.ctypes.data) if q is not None else NULL
        post.ldy = post.ldq = Nc
        out = np.empty((1, Nc), dtype=np.float32)   # not written: the post-op writes y and q
    elif out is None:
        out = np.empty((M, Nc), dtype=OUT_DTYPES[out_dtype])
    else:
        check_out(out, M, Nc, out_dtype, a)
    cdef uint8_t[:, :] outv = out.view(np.uint8)     # a byte view: only the address and row stride are used
    cdef const uint8_t[:, :] av = a
    cdef qgemm_args args
    args.M = M; args.K = Kc; args.N = Nc; args.Kp = Kp; args.Np = Np
    args.a = &av[0, 0]
    args.lda = av.strides[0]
    args.b = &pv[0] + QGEMM_HEADER_BYTES
    args.b_flags = qgemm_header_flags(&pv[0])
    args.offset = &ov[0]
    args.scale = &spv[0]
    args.out_kind = kind
    args.out_zero = out_zero_f; args.lo = lo_f; args.hi = hi_f
    args.out = <void *> &outv[0, 0]
    args.ldo = outv.strides[0] // out.itemsize
    args.post = &post if chain is not None else NULL
    _run(&args, QGEMM_PATHS[ipath].tile)
    return (y, q) if chain is not None else out


def _chain_outputs(chain, M, N):
    """The validated chain of ``gemm_u8s8(chain=...)``: (constants, hs, scale_inv, lo - zero, hi - zero, zero, the
    float output or None, the u8 output or None)."""
    from refquant.reference import qdirect
    k, hs, want_float, qz = qdirect.check_chain(**chain)
    y = np.empty((M, N), dtype=np.float32) if want_float else None
    q = np.empty((M, N), dtype=np.uint8) if qz is not None else None
    return (k, hs, *qdirect.q8_params(qz), y, q)


cdef void _run(const qgemm_args *p, qgemm_tile_fn tile) noexcept:
    """Split out[M, N] into chunks: blocks of rows when M >= N (a conv's pixels x channels; each chunk then packs
    only its own rows of A, where a panel split would pack all of A once per chunk) or when the panels are too few
    to go around, else blocks of whole 16-column panels. Up to CHUNKS_PER_THREAD chunks per thread, handed out dynamically, so a
    thread that the OS delays (a busy machine) does not hold up the call: the others take its chunks. Each
    output element is computed by exactly one chunk, the same way whatever the thread count."""
    cdef Py_ssize_t panels = p.Np // QGEMM_NR, M = p.M, N = p.N, c, chunks, m0, m1, n0, n1
    cdef int nt = threads_for(M * p.Kp * p.Np, MIN_MACS_PER_THREAD)
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


# ---- single-core peaks (the GEMM is reported as a fraction of them) ----

def _peak(fn, double ops_per_iter, double seconds):
    """Best of 3 timed runs of fn(iters), sized to ~seconds/3 each: ops per second / 1e9."""
    cdef long iters = 1 << 14
    while True:
        t = time.perf_counter()
        fn(iters)
        dt = time.perf_counter() - t
        if dt > 0.02 or iters > (1 << 40):
            break
        iters *= 4
    iters = max(1, <long> (iters * (seconds / 3) / dt))
    best = math.inf
    for _ in range(3):
        t = time.perf_counter()
        fn(iters)
        best = min(best, time.perf_counter() - t)
    return ops_per_iter * iters / best / 1e9


def _x86_has(name):
    return QGEMM_HAVE_PEAK and name in _SUPPORTED


def _fma256(long n):
    cdef double r
    with nogil:
        r = qgemm_peak_fma256(n)
    return r


def _fma512(long n):
    cdef double r
    with nogil:
        r = qgemm_peak_fma512(n)
    return r


def _dpbusd512(long n):
    cdef double r
    with nogil:
        r = qgemm_peak_dpbusd512(n)
    return r


def _dpbusd256(long n):
    cdef double r
    with nogil:
        r = qgemm_peak_dpbusd256(n)
    return r


def _madd256(long n):
    cdef double r
    with nogil:
        r = qgemm_peak_madd256(n)
    return r


def _cpu_has_avx512f():
    from refquant._cpu import cpu_features
    return bool(cpu_features().get("avx512f"))


def fma_peak_gflops(seconds=0.3, width=None):
    """Single-core FP32 FMA peak (GFLOPS) from 12 independent FMA chains of ``width`` bits (512 if the CPU runs
    AVX-512, else 256). None where not measurable (non-x86)."""
    if not QGEMM_HAVE_PEAK:
        return None
    width = width or (512 if "avx512vnni" in _SUPPORTED or _cpu_has_avx512f() else 256)
    return _peak(_fma512, 12 * 32, seconds) if width == 512 else _peak(_fma256, 12 * 16, seconds)


def vpdpbusd_peak_gops(seconds=0.3, width=None):
    """Single-core INT8 peak (GOPS = 2 x MAC/s) from 12 independent vpdpbusd chains: 512-bit with AVX-512 VNNI,
    256-bit with AVX-VNNI; None if the CPU has neither."""
    if width in (None, 512) and _x86_has("avx512vnni"):
        return _peak(_dpbusd512, 12 * 128, seconds)
    if width in (None, 256) and _x86_has("avxvnni"):
        return _peak(_dpbusd256, 12 * 64, seconds)
    return None


def vpmaddwd_peak_gops(seconds=0.3):
    """Single-core peak of 256-bit vpmaddwd (16 s16 MACs = 32 ops), the multiply of the AVX2 path."""
    return _peak(_madd256, 12 * 32, seconds) if _x86_has("avx2") else None
